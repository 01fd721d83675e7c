"""The federation fixtures work: Prosody and ejabberd federate with each other.

Before xmppd's s2s is tested against them, the fixtures themselves are: a
slixmpp user on Prosody and one on ejabberd exchange a message in each
direction over real s2s links, once per mode, and both servers' own
accounts of those links show the mechanism the mode is about (SASL
EXTERNAL with the test CA's certificates, or dialback with untrusted
ones). One federation per mode, shared by the module's tests.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

pytest.importorskip("slixmpp")
import federation as fixtures  # noqa: E402
from federation import EJABBERD, MODES, PROSODY, Federation, wait_for  # noqa: E402
from slixclient import IMClient, close_all, message, presence  # noqa: E402
from testdns import answer  # noqa: E402

federation = fixtures.federation  # the module-scoped fixture, by its name here
pytestmark = pytest.mark.parametrize("federation", MODES, indirect=True)

#: the SASL mechanism (or dialback) each mode's links must use
MECHANISM = {"external": "EXTERNAL", "dialback": "dialback"}


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def exchange(fed: Federation) -> None:
    """alice@prosody.test and alice@ejabberd.test send each other a message."""
    on_prosody = await IMClient.login(fed.prosody, f"alice@{PROSODY}/fixture")
    on_ejabberd = await IMClient.login(fed.ejabberd, f"alice@{EJABBERD}/fixture")
    try:
        for client in (on_prosody, on_ejabberd):
            # available, and processed (Prosody echoes it without a 'to')
            client.send_presence()
            await client.expect(presence(client.boundjid.full))
        for sender, receiver in ((on_prosody, on_ejabberd), (on_ejabberd, on_prosody)):
            body = f"over s2s {uuid.uuid4().hex}"
            sender.send_message(mto=receiver.boundjid.full, mbody=body, mtype="chat")
            got = await receiver.expect(message(from_=sender.boundjid.full, type="chat"),
                                        timeout=20)
            assert got.findtext("{jabber:client}body") == body
    finally:
        await close_all(on_prosody, on_ejabberd)


def links(server, peer: str) -> set[tuple[str, str]]:
    """(direction, mechanism) of the server's authenticated links with ``peer``."""
    return {(direction, mechanism) for direction, _, remote, mechanism
            in server.s2s_authentications() if remote == peer}


def test_prosody_and_ejabberd_exchange_messages(federation):
    try:
        run(exchange(federation))
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- prosody:\n{federation.prosody.log_tail()}\n"
                             f"--- ejabberd:\n{federation.ejabberd.log_tail()}") from None
    expected = MECHANISM[federation.mode]
    both = {("outgoing", expected), ("incoming", expected)}
    # Both links (one each way: neither server uses bidirectional streams
    # here), as each server saw them, authenticated the mode's way only.
    assert wait_for(lambda: links(federation.prosody, EJABBERD) == both), \
        federation.prosody.s2s_authentications()
    assert wait_for(lambda: links(federation.ejabberd, PROSODY) == both), \
        federation.ejabberd.s2s_authentications()
    # ejabberd looked Prosody up in the stub DNS (SRV, NXDOMAIN, then the A
    # record from the private hosts file). Prosody asks the stub too with
    # its own resolver, but with libunbound it answers .test names from
    # the hosts file and its built-in NXDOMAIN zone.
    assert (f"_xmpp-server._tcp.{PROSODY}", 33) in federation.names.dns.questions


def test_names_and_trust(federation):
    """Each domain has an address of its own in this run's 127.R.S.0/24,
    the stub DNS answers for it, and the xmppd overrides route to the other
    servers with the mode's trust."""
    ip = federation.ip
    assert len({ip[PROSODY], ip[EJABBERD], federation.xmppd_ip}) == 3
    assert ip[f"conference.{PROSODY}"] == ip[PROSODY]
    reply = answer(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
                   b"\x08ejabberd\x04test\x00\x00\x01\x00\x01", federation.names.dns.records)
    assert reply[-4:] == bytes(int(b) for b in ip[EJABBERD].split("."))
    overrides = federation.xmppd_overrides()
    assert overrides["s2s:routes"][PROSODY] == f"{ip[PROSODY]}:5269"
    assert overrides["s2s:routes"][f"conference.{EJABBERD}"] == f"{ip[EJABBERD]}:5269"
    assert overrides["s2s"]["interfaces"] == federation.xmppd_ip
    if federation.mode == "external":
        assert overrides["s2s"]["ca_file"] == str(federation.ca_file)
        assert overrides["s2s"]["secure_auth"] == "true"
    else:
        assert overrides["s2s"]["ca_file"] == ""
        assert overrides["s2s"]["secure_auth"] == "false"
