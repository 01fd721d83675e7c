"""IM over WebSocket (RFC 7395) against a real ``twistd xmppd``: a WebSocket
client (:mod:`wsclient`, SCRAM, bind) and a TCP slixmpp client use the same
server, and everything of the IM basics works between them: roster,
subscription and presence both ways, messages both ways, ping, a clean close.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
import xml.etree.ElementTree as ET

import pytest

pytest.importorskip("slixmpp")
pytest.importorskip("wsproto")

from conftest import PASSWORD  # noqa: E402
from slixclient import IMClient, close_all, message, presence  # noqa: E402
from wsclient import NS_FRAMING, WSClient, login  # noqa: E402

COMPONENTS = "disco ping roster presence messaging offline"
CLIENT = "{jabber:client}"
ROSTER = "{jabber:iq:roster}"


def wait_listening(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture(scope="module")
def server(make_xmppd_module):
    srv = make_xmppd_module({"server": {"components": COMPONENTS},
                             "c2s": {"idle_timeout": 2}}, users=())
    assert srv.http_port and srv.https_port  # picked free by the fixture
    wait_listening(srv.http_port)
    wait_listening(srv.https_port)
    return srv


def people(server, *names):
    tag = uuid.uuid4().hex[:6]
    jids = {name: f"{name}{tag}@localhost" for name in names}
    server.addusers(jids.values())
    return jids


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


def stanza(tag: str, **attrs):
    def match(e: ET.Element) -> bool:
        return e.tag == CLIENT + tag and all(e.get(k.rstrip("_")) == v for k, v in attrs.items())
    return match


def test_a_websocket_client_and_a_tcp_client_do_the_im_basics(server):
    who = people(server, "alice", "bob")

    async def main():
        ws = await asyncio.to_thread(login, server.host, server.http_port, who["alice"],
                                     PASSWORD, "web")
        bob = await IMClient.login(server, who["bob"] + "/pc")
        wait = lambda *a, **k: asyncio.to_thread(ws.next_element, *a, **k)  # noqa: E731
        try:
            assert ws.jid == who["alice"] + "/web"
            # roster get: empty, with a version
            roster = await asyncio.to_thread(ws.iq, "<query xmlns='jabber:iq:roster'/>")
            assert roster.get("type") == "result" and roster.find(ROSTER + "query") is not None
            ws.send("<presence xmlns='jabber:client'/>")
            await wait(stanza("presence", from_=ws.jid, to=ws.jid))
            await bob.fetch_roster()
            await bob.online()
            # alice (WebSocket) subscribes to bob (TCP), bob approves and subscribes back
            ws.send(f"<presence xmlns='jabber:client' to='{who['bob']}' type='subscribe'/>")
            await bob.expect(presence(who["alice"], "subscribe"))
            bob.send_presence(pto=who["alice"], ptype="subscribed")
            await wait(stanza("presence", from_=who["bob"], type="subscribed"))
            await wait(stanza("presence", from_=bob.boundjid.full))  # bob's presence reaches her
            bob.send_presence(pto=who["alice"], ptype="subscribe")
            await wait(stanza("presence", from_=who["bob"], type="subscribe"))
            ws.send(f"<presence xmlns='jabber:client' to='{who['bob']}' type='subscribed'/>")
            await bob.expect(presence(ws.jid))  # and hers reaches him
            roster = await asyncio.to_thread(ws.iq, "<query xmlns='jabber:iq:roster'/>")
            item = roster.find(f"{ROSTER}query/{ROSTER}item")
            assert item.get("jid") == who["bob"] and item.get("subscription") == "both"
            # messages both ways
            ws.send(f"<message xmlns='jabber:client' to='{who['bob']}' type='chat' id='w1'>"
                    "<body>from the browser</body></message>")
            got = await bob.expect(message(ws.jid, id="w1"))
            assert got.findtext(CLIENT + "body") == "from the browser"
            bob.send_message(mto=ws.jid, mbody="from the desktop", mtype="chat")
            got = await wait(stanza("message", from_=bob.boundjid.full))
            assert got.findtext(CLIENT + "body") == "from the desktop"
            # ping the server, and be pinged by bob (an iq to the full JID)
            pong = await asyncio.to_thread(ws.iq, "<ping xmlns='urn:xmpp:ping'/>", "get",
                                           "localhost")
            assert pong.get("type") == "result"
            iq = bob.Iq()
            iq["type"], iq["to"] = "get", ws.jid
            iq.enable("ping")
            pending = asyncio.ensure_future(iq.send(timeout=10))
            ping = await wait(stanza("iq", type="get", from_=bob.boundjid.full))
            ws.send(f"<iq xmlns='jabber:client' type='result' id='{ping.get('id')}' "
                    f"to='{bob.boundjid.full}'/>")
            assert (await pending)["type"] == "result"
            # leaving: bob sees alice go
            await asyncio.to_thread(ws.close_stream)
            await bob.expect(presence(ws.jid, "unavailable"))
        finally:
            ws.close()
            await close_all(bob)
    run(main())
    assert f"bound {who['alice']}/web (SCRAM-SHA-256, WebSocket, loopback)" in server.log_text()


def test_wss_on_the_https_port_is_secure(server):
    who = people(server, "alice")
    with WSClient.connect(server.host, server.https_port, tls=True) as ws:
        features = ws.open_stream()
        mechanisms = [m.text for m in features.iter("{urn:ietf:params:xml:ns:xmpp-sasl}mechanism")]
        assert "PLAIN" in mechanisms
        ws.sasl_scram(who["alice"], PASSWORD)
        ws.open_stream()
        ws.bind("secure")
        ws.close_stream()
    assert f"bound {who['alice']}/secure (SCRAM-SHA-256, WebSocket, TLS)" in server.log_text()


def test_an_idle_websocket_client_is_pinged_and_stays(server):
    who = people(server, "alice")
    with login(server.host, server.http_port, who["alice"], PASSWORD, "idle") as ws:
        ws.wait_for(lambda: bool(ws.pings), timeout=10, what="a ping from the server")
        pong = ws.iq("<ping xmlns='urn:xmpp:ping'/>", "get", "localhost")
        assert pong.get("type") == "result"


def test_a_websocket_session_replaced_by_a_tcp_login_gets_conflict(server):
    who = people(server, "alice")

    async def main():
        ws = await asyncio.to_thread(login, server.host, server.http_port, who["alice"],
                                     PASSWORD, "same")
        try:
            tcp = await IMClient.login(server, who["alice"] + "/same")
            await asyncio.to_thread(ws.expect_stream_error, "conflict")
            await close_all(tcp)
        finally:
            ws.close()
    run(main())


def test_the_framing_namespace_is_answered_on_open(server):
    with WSClient.connect(server.host, server.http_port) as ws:
        ws.send(f"<open xmlns='{NS_FRAMING}' to='localhost' version='1.0'/>")
        opened = ws.next_element()
        assert opened.tag == f"{{{NS_FRAMING}}}open" and opened.get("from") == "localhost"
        assert ws.subprotocol == "xmpp"
