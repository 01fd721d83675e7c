"""Service discovery end to end with aioxmpp 0.13's DiscoClient: the server's
disco#info and its XEP-0157 form, its XEP-0115 caps checked with aioxmpp's
own hash implementation (which is independent of slixmpp's and of xmppd's),
accounts, and a hosted service — a second client library's reading of what
test_disco_slixmpp.py checks.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

aioxmpp = pytest.importorskip("aioxmpp")
import aioxmpp.connector  # noqa: E402
import aioxmpp.disco  # noqa: E402
import aioxmpp.entitycaps.caps115 as caps115  # noqa: E402
import aioxmpp.errors  # noqa: E402
import aioxmpp.nonza  # noqa: E402
import aioxmpp.xso as xso  # noqa: E402

from conftest import PASSWORD  # noqa: E402

pytestmark = pytest.mark.all_transports  # tcp, websocket, bosh (conftest)
CAPS_NODE = "https://github.com/xmppd/xmppd"
SERVER = aioxmpp.JID.fromstr("localhost")
ECHO = aioxmpp.JID.fromstr("echo.localhost")
CONFIG = {
    "server": {"components": "disco ping roster presence messaging extdisco echo",
               "admins": "boss@localhost"},
    "component:disco": {"abuse_addresses": "mailto:abuse@localhost",
                        "security_addresses": "mailto:security@localhost xmpp:security@localhost"},
    "component:echo": {"class": "tests.e2e.echo_service:EchoService", "domain": "echo.localhost"},
}


@aioxmpp.nonza.StreamFeatures.as_feature_class
class CapsFeature(xso.XSO):
    """XEP-0115 §6.3: the server's ``<c/>`` among the stream features
    (aioxmpp reads caps from presence only)."""

    TAG = ("http://jabber.org/protocol/caps", "c")
    hash = xso.Attr("hash")
    node = xso.Attr("node")
    ver = xso.Attr("ver")


@pytest.fixture(scope="module")
def server(make_xmppd_module):
    return make_xmppd_module(CONFIG, users=())


def run(coro, server=None):
    try:
        return asyncio.run(asyncio.wait_for(coro, 60))
    except BaseException as failure:
        if server is not None:
            failure.add_note(f"--- xmppd log tail ---\n{server.log_tail(60)}")
        raise


def people(server, *names):
    tag = uuid.uuid4().hex[:6]
    jids = {name: f"{name}{tag}@localhost" for name in names}
    server.addusers(jids.values())
    return jids


def client_for(server, jid: str) -> aioxmpp.Client:
    return aioxmpp.Client(
        aioxmpp.JID.fromstr(jid), aioxmpp.make_security_layer(PASSWORD, no_verify=True),
        override_peer=[(server.client_host, server.client_port, aioxmpp.connector.STARTTLSConnector())],
        max_initial_attempts=1)


def own_lang_only(info):
    """``info`` with each identity's language as the element itself says.

    aioxmpp hands an identity the stream's ``xml:lang`` ('en') by inheritance
    and hashes that; XEP-0115 hashes the identity's own attribute, as Prosody
    and slixmpp do (Prosody's caps would fail aioxmpp's check the same way).
    The server sends no ``xml:lang`` on its identities."""
    for identity in info.identities:
        identity.lang = None
    return info


def form_fields(info):
    (form,) = info.exts
    return {field.var: list(field.values) for field in form.fields}


def test_server_info_form_and_caps_by_aioxmpp(server):
    who = people(server, "alice")

    async def main():
        client = client_for(server, who["alice"] + "/phone")
        disco = client.summon(aioxmpp.DiscoClient)
        async with client.connected():
            caps = client.stream_features[CapsFeature]
            assert (caps.hash, caps.node) == ("sha-1", CAPS_NODE)
            info = await disco.query_info(SERVER)
            assert {(i.category, i.type_, i.name) for i in info.identities} == {
                ("server", "im", "xmppd")}
            assert {"urn:xmpp:ping", "urn:xmpp:extdisco:2",
                    "http://jabber.org/protocol/disco#info"} <= set(info.features)
            assert form_fields(info) == {
                "FORM_TYPE": ["http://jabber.org/network/serverinfo"],
                "abuse-addresses": ["mailto:abuse@localhost"],
                "admin-addresses": ["xmpp:boss@localhost"],
                "security-addresses": ["mailto:security@localhost", "xmpp:security@localhost"],
            }
            assert caps115.hash_query(own_lang_only(info), "sha1") == caps.ver
            # XEP-0115 §6.2: what a client asks to verify a ver it has not seen
            node = f"{caps.node}#{caps.ver}"
            by_node = await disco.query_info(SERVER, node=node, require_fresh=True)
            assert by_node.node == node
            assert caps115.Key("sha-1", node).verify(own_lang_only(by_node))
            with pytest.raises(aioxmpp.errors.XMPPCancelError) as raised:
                await disco.query_info(SERVER, node=f"{caps.node}#stale", require_fresh=True)
            assert raised.value.condition == aioxmpp.ErrorCondition.ITEM_NOT_FOUND
    run(main(), server)


def test_accounts_by_aioxmpp(server):
    who = people(server, "alice", "eve")

    async def main():
        alice, eve = client_for(server, who["alice"] + "/a"), client_for(server, who["eve"] + "/e")
        alice_disco, eve_disco = alice.summon(aioxmpp.DiscoClient), eve.summon(aioxmpp.DiscoClient)
        async with alice.connected(), eve.connected():
            own = await alice_disco.query_info(aioxmpp.JID.fromstr(who["alice"]))
            assert [(i.category, i.type_) for i in own.identities] == [("account", "registered")]
            assert "http://jabber.org/protocol/disco#items" in own.features
            items = await alice_disco.query_items(aioxmpp.JID.fromstr(who["alice"]))
            assert list(items.items) == []
            with pytest.raises(aioxmpp.errors.XMPPCancelError) as raised:
                await eve_disco.query_info(aioxmpp.JID.fromstr(who["alice"]))
            assert raised.value.condition == aioxmpp.ErrorCondition.SERVICE_UNAVAILABLE
    run(main(), server)


def test_hosted_service_by_aioxmpp(server):
    who = people(server, "alice")

    async def main():
        client = client_for(server, who["alice"] + "/phone")
        disco = client.summon(aioxmpp.DiscoClient)
        async with client.connected():
            items = await disco.query_items(SERVER)
            assert [(i.jid, i.name) for i in items.items] == [(ECHO, "Echo")]
            info = await disco.query_info(ECHO)
            assert [(i.category, i.type_, i.name) for i in info.identities] == [
                ("component", "generic", "Echo service")]
            assert "urn:xmppd:test:echo" in info.features
            assert "urn:xmpp:ping" not in info.features  # the server's, not the service's
    run(main(), server)
