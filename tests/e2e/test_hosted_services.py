"""Hosted services over real sockets: the README's example service runs in a
real ``twistd xmppd`` beside two user domains and is used by slixmpp and
aioxmpp clients — its domain's messages reach it, its tracked ping is
answered by the real client, its disco is its own, the server lists it,
and a client stream to its domain is refused with host-unknown."""

from __future__ import annotations

import asyncio
import re
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("slixmpp")

from rawxmpp import RawClient, header  # noqa: E402
from slixclient import IMClient, close_all  # noqa: E402

README = Path(__file__).resolve().parents[2] / "README.rst"
DISCO_INFO = "{http://jabber.org/protocol/disco#info}"
DISCO_ITEMS = "{http://jabber.org/protocol/disco#items}"


def readme_block(start: str) -> str:
    for match in re.finditer(r"::\n\n((?:(?:    .*)?\n)+)", README.read_text(encoding="utf-8")):
        block = textwrap.dedent(match.group(1)).strip() + "\n"
        if block.startswith(start):
            return block
    raise AssertionError(f"no README block starting {start!r}")


@pytest.fixture(scope="module")
def server(make_xmppd_module, tmp_path_factory):
    """The README's EchoService installed as a third-party package would be."""
    packages = tmp_path_factory.mktemp("packages")
    (packages / "mypackage").mkdir()
    (packages / "mypackage" / "__init__.py").write_text("")
    (packages / "mypackage" / "echo.py").write_text(readme_block("# mypackage/echo.py"))
    mp = pytest.MonkeyPatch()
    mp.setenv("PYTHONPATH", str(packages))
    try:
        return make_xmppd_module({
            "server": {"domains": "localhost example.test",
                       "components": "disco ping presence messaging roster echo"},
            "component:echo": {"class": "mypackage.echo:EchoService"},
        }, users=("alice@localhost", "bob@example.test"))
    finally:
        mp.undo()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_a_message_to_the_service_is_echoed_after_the_clients_ping_answer(server):
    async def scenario():
        alice = await IMClient.login(server, "alice@localhost/pc")
        bob = await IMClient.login(server, "bob@example.test/pc")
        try:
            for client, to in ((alice, "echo.localhost"), (bob, "room@echo.localhost")):
                client.send_message(mto=to, mbody="hello", mtype="chat")
                echo = await client.expect(
                    lambda s: s.tag == "{jabber:client}message" and s.get("from") == to)
                # slixmpp's xep_0199 answered the service's tracked ping
                assert echo.findtext("{jabber:client}body") == "hello (ping: result)"
        finally:
            await close_all(alice, bob)
    run(scenario())


def test_disco_of_the_service_is_its_own_and_the_server_lists_it(server):
    async def scenario():
        bob = await IMClient.login(server, "bob@example.test/pc")
        try:
            info = await bob.iq("get", "<query xmlns='http://jabber.org/protocol/disco#info'/>",
                                to="echo.localhost")
            identities = [(i.get("category"), i.get("type"), i.get("name"))
                          for i in info.iter(DISCO_INFO + "identity")]
            assert identities == [("component", "generic", "Echo")]
            items = await bob.iq("get", "<query xmlns='http://jabber.org/protocol/disco#items'/>",
                                 to="localhost")
            listed = {(i.get("jid"), i.get("name")) for i in items.iter(DISCO_ITEMS + "item")}
            assert ("echo.localhost", "Echo") in listed
            server_info = await bob.iq(
                "get", "<query xmlns='http://jabber.org/protocol/disco#info'/>", to="example.test")
            assert ("component", "generic") not in {
                (i.get("category"), i.get("type")) for i in server_info.iter(DISCO_INFO + "identity")}
        finally:
            await close_all(bob)
    run(scenario())


def test_disco_of_an_unknown_service_domain_is_refused_and_the_server_serves_on(server):
    from slixmpp.exceptions import IqError

    async def scenario():
        alice = await IMClient.login(server, "alice@localhost/pc")
        try:
            with pytest.raises(IqError) as refused:
                await alice.iq("get", "<query xmlns='http://jabber.org/protocol/disco#info'/>",
                               to="nothere.localhost")
            assert refused.value.condition == "remote-server-not-found"
            info = await alice.iq("get", "<query xmlns='http://jabber.org/protocol/disco#info'/>",
                                  to="echo.localhost")
            assert info.get("type") == "result"
        finally:
            await close_all(alice)
    run(scenario())


def test_disco_of_the_service_with_aioxmpp(server):
    aioxmpp = pytest.importorskip("aioxmpp")
    import aioxmpp.connector
    import aioxmpp.disco

    async def scenario():
        client = aioxmpp.Client(
            aioxmpp.JID.fromstr("alice@localhost/aio"),
            aioxmpp.make_security_layer("secret123", no_verify=True),
            override_peer=[(server.host, server.port, aioxmpp.connector.STARTTLSConnector())],
            max_initial_attempts=1)
        async with client.connected():
            disco = client.summon(aioxmpp.DiscoClient)
            info = await disco.query_info(aioxmpp.JID.fromstr("echo.localhost"))
            assert [(i.category, i.type_) for i in info.identities] == [("component", "generic")]
            items = await disco.query_items(aioxmpp.JID.fromstr("localhost"))
            assert "echo.localhost" in {str(item.jid) for item in items.items}
    run(scenario())


def test_a_client_stream_to_a_service_domain_is_host_unknown(server):
    with RawClient.connect(server.host, server.port) as c:
        c.send(header(to="echo.localhost"))
        c.expect_stream_error("host-unknown")
    # both user domains are served
    for domain in ("localhost", "example.test"):
        with RawClient.connect(server.host, server.port) as c:
            features = c.open_stream(domain)
            assert features is not None
