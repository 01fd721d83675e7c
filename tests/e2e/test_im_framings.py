"""IM over the web framings against a real ``twistd xmppd``: WebSocket (RFC
7395, :mod:`wsclient`) and BOSH (XEP-0124/0206, :mod:`boshclient`), each a
raw client of our own (SCRAM, restart, bind) beside a TCP slixmpp client on
the same server. Every scenario runs over both framings (the ``framing``
fixture): the IM basics between the web client and the TCP one (roster,
subscription and presence both ways, messages both ways and a burst in
order, pings both ways, a clean end), a secure session over HTTPS, and a TCP
login of the same resource replacing the web session (``conflict``). What
only one framing has follows: the WebSocket's ``<open/>`` and keep-alive
pings, BOSH's session creation response and its host-meta link.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from typing import Any

import pytest

pytest.importorskip("slixmpp")
pytest.importorskip("wsproto")

import boshclient  # noqa: E402
import wsclient  # noqa: E402
from boshclient import NS_HTTPBIND, BoshClient  # noqa: E402
from conftest import PASSWORD  # noqa: E402
from slixclient import IMClient, close_all, message, presence  # noqa: E402
from wsclient import NS_FRAMING, WSClient  # noqa: E402

COMPONENTS = "disco ping roster presence messaging offline"
CLIENT = "{jabber:client}"
ROSTER = "{jabber:iq:roster}"
SASL_MECHANISM = "{urn:ietf:params:xml:ns:xmpp-sasl}mechanism"
STREAM_ERROR = "{http://etherx.jabber.org/streams}error"
CONFLICT = "{urn:ietf:params:xml:ns:xmpp-streams}conflict"


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


# -- the two framings behind one face ------------------------------------------------------


class WebSocketFraming:
    """How a test opens, restarts, ends and loses a WebSocket session."""

    name = "WebSocket"  # as the server's login line names the channel

    @staticmethod
    def open(server, tls: bool = False) -> tuple[WSClient, ET.Element]:
        client = WSClient.connect(server.host, server.https_port if tls else server.http_port,
                                  tls=tls)
        return client, client.open_stream()

    @staticmethod
    def login(server, jid: str, resource: str) -> WSClient:
        return wsclient.login(server.host, server.http_port, jid, PASSWORD, resource)

    @staticmethod
    def restart(client: WSClient) -> None:
        client.open_stream()

    @staticmethod
    def leave(client: WSClient) -> None:
        """``<close/>``: answered with ``<close/>`` and the WebSocket's close."""
        client.close_stream()

    @staticmethod
    def expect_conflict(client: WSClient) -> None:
        client.expect_stream_error("conflict")


class BoshFraming:
    """How a test opens, restarts, ends and loses a BOSH session."""

    name = "BOSH"

    @staticmethod
    def open(server, tls: bool = False) -> tuple[BoshClient, ET.Element]:
        client = BoshClient(server.host, server.https_port if tls else server.http_port, tls=tls)
        return client, client.create()

    @staticmethod
    def login(server, jid: str, resource: str) -> BoshClient:
        return boshclient.login(server.host, server.http_port, jid, PASSWORD, resource)

    @staticmethod
    def restart(client: BoshClient) -> None:
        client.restart()

    @staticmethod
    def leave(client: BoshClient) -> None:
        """A terminate body carrying an unavailable presence: answered with a
        terminate body without a condition."""
        end = client.terminate("<presence xmlns='jabber:client' type='unavailable'/>")
        assert end.get("type") == "terminate" and end.get("condition") is None

    @staticmethod
    def expect_conflict(client: BoshClient) -> None:
        end = client.wait_terminated()
        assert end.get("condition") == "remote-stream-error"
        assert end.find(f"{STREAM_ERROR}/{CONFLICT}") is not None


@pytest.fixture(params=[WebSocketFraming, BoshFraming], ids=["websocket", "bosh"])
def framing(request) -> Any:
    """The web framing a test runs over (each test runs over both)."""
    return request.param


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


# -- every framing -----------------------------------------------------------------------------


def test_a_web_client_and_a_tcp_client_do_the_im_basics(server, framing):
    who = people(server, "alice", "bob")

    async def main():
        web = await asyncio.to_thread(framing.login, server, who["alice"], "web")
        bob = await IMClient.login(server, who["bob"] + "/pc")
        wait = lambda *a, **k: asyncio.to_thread(web.next_element, *a, **k)  # noqa: E731
        send = lambda text: asyncio.to_thread(web.send, text)  # noqa: E731
        try:
            assert web.jid == who["alice"] + "/web"
            # roster get: empty, with a version
            roster = await asyncio.to_thread(web.iq, "<query xmlns='jabber:iq:roster'/>")
            assert roster.get("type") == "result" and roster.find(ROSTER + "query") is not None
            await send("<presence xmlns='jabber:client'/>")
            await wait(stanza("presence", from_=web.jid, to=web.jid))
            await bob.fetch_roster()
            await bob.online()
            # alice (web) subscribes to bob (TCP), bob approves and subscribes back
            await send(f"<presence xmlns='jabber:client' to='{who['bob']}' type='subscribe'/>")
            await bob.expect(presence(who["alice"], "subscribe"))
            bob.send_presence(pto=who["alice"], ptype="subscribed")
            await wait(stanza("presence", from_=who["bob"], type="subscribed"))
            await wait(stanza("presence", from_=bob.boundjid.full))  # bob's presence reaches her
            bob.send_presence(pto=who["alice"], ptype="subscribe")
            await wait(stanza("presence", from_=who["bob"], type="subscribe"))
            await send(f"<presence xmlns='jabber:client' to='{who['bob']}' type='subscribed'/>")
            await bob.expect(presence(web.jid))  # and hers reaches him
            roster = await asyncio.to_thread(web.iq, "<query xmlns='jabber:iq:roster'/>")
            item = roster.find(f"{ROSTER}query/{ROSTER}item")
            assert item.get("jid") == who["bob"] and item.get("subscription") == "both"
            # messages both ways, then a burst from bob arriving complete and in order
            await send(f"<message xmlns='jabber:client' to='{who['bob']}' type='chat' id='w1'>"
                       "<body>from the browser</body></message>")
            got = await bob.expect(message(web.jid, id="w1"))
            assert got.findtext(CLIENT + "body") == "from the browser"
            bob.send_message(mto=web.jid, mbody="from the desktop", mtype="chat")
            got = await wait(stanza("message", from_=bob.boundjid.full))
            assert got.findtext(CLIENT + "body") == "from the desktop"
            for i in range(20):
                bob.send_message(mto=web.jid, mbody=f"n{i}", mtype="chat")
            bodies = []
            for _ in range(20):
                got = await wait(stanza("message", from_=bob.boundjid.full))
                bodies.append(got.findtext(CLIENT + "body"))
            assert bodies == [f"n{i}" for i in range(20)]
            # ping the server, and be pinged by bob (an iq to the full JID)
            pong = await asyncio.to_thread(web.iq, "<ping xmlns='urn:xmpp:ping'/>", "get",
                                           "localhost")
            assert pong.get("type") == "result"
            iq = bob.Iq()
            iq["type"], iq["to"] = "get", web.jid
            iq.enable("ping")
            pending = asyncio.ensure_future(iq.send(timeout=10))
            ping = await wait(stanza("iq", type="get", from_=bob.boundjid.full))
            await send(f"<iq xmlns='jabber:client' type='result' id='{ping.get('id')}' "
                       f"to='{bob.boundjid.full}'/>")
            assert (await pending)["type"] == "result"
            # leaving cleanly: bob sees alice go
            await asyncio.to_thread(framing.leave, web)
            await bob.expect(presence(web.jid, "unavailable"))
        finally:
            web.close()
            await close_all(bob)
    run(main())
    assert (f"bound {who['alice']}/web (SCRAM-SHA-256, {framing.name}, loopback)"
            in server.log_text())


def test_a_web_session_over_https_is_secure(server, framing):
    who = people(server, "alice")
    client, features = framing.open(server, tls=True)
    try:
        assert "PLAIN" in [m.text for m in features.iter(SASL_MECHANISM)]
        client.sasl_scram(who["alice"], PASSWORD)
        framing.restart(client)
        client.bind("secure")
        framing.leave(client)
    finally:
        client.close()
    assert (f"bound {who['alice']}/secure (SCRAM-SHA-256, {framing.name}, TLS)"
            in server.log_text())


def test_a_web_session_replaced_by_a_tcp_login_gets_conflict(server, framing):
    who = people(server, "alice")

    async def main():
        web = await asyncio.to_thread(framing.login, server, who["alice"], "same")
        try:
            tcp = await IMClient.login(server, who["alice"] + "/same")
            await asyncio.to_thread(framing.expect_conflict, web)
            await close_all(tcp)
        finally:
            web.close()
    run(main())


# -- WebSocket only --------------------------------------------------------------------------


def test_an_idle_websocket_client_is_pinged_and_stays(server):
    who = people(server, "alice")
    with wsclient.login(server.host, server.http_port, who["alice"], PASSWORD, "idle") as ws:
        ws.wait_for(lambda: bool(ws.pings), timeout=10, what="a ping from the server")
        pong = ws.iq("<ping xmlns='urn:xmpp:ping'/>", "get", "localhost")
        assert pong.get("type") == "result"


def test_the_framing_namespace_is_answered_on_open(server):
    with WSClient.connect(server.host, server.http_port) as ws:
        ws.send(f"<open xmlns='{NS_FRAMING}' to='localhost' version='1.0'/>")
        opened = ws.next_element()
        assert opened.tag == f"{{{NS_FRAMING}}}open" and opened.get("from") == "localhost"
        assert ws.subprotocol == "xmpp"


# -- BOSH only ---------------------------------------------------------------------------------


def test_the_creation_response_says_what_the_session_is(server):
    c = BoshClient(server.host, server.http_port)
    response = c.post_raw(f"<body xmlns='{NS_HTTPBIND}' rid='42' to='localhost' wait='600' "
                          "hold='1' ver='1.6' xmpp:version='1.0' xmlns:xmpp='urn:xmpp:xbosh'/>",
                          headers={"Origin": "https://web.example"})
    assert response.status == 200
    assert response.headers["content-type"] == "text/xml; charset=utf-8"
    assert response.headers["access-control-allow-origin"] == "https://web.example"
    body = response.body
    assert (body.get("wait"), body.get("requests"), body.get("hold"), body.get("inactivity"),
            body.get("polling"), body.get("ver"), body.get("from")) == \
        ("120", "2", "1", "60", "5", "1.6", "localhost")
    assert body.get("{urn:xmpp:xbosh}version") == "1.0"
    assert body.get("{urn:xmpp:xbosh}restartlogic") == "true"
    mechanisms = [m.text for m in body.iter(SASL_MECHANISM)]
    assert mechanisms[0] == "SCRAM-SHA-256"


def test_host_meta_names_the_bosh_endpoint(server):
    with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/.well-known/host-meta.json",
                                timeout=10) as f:
        links = {link["rel"]: link["href"] for link in json.load(f)["links"]}
    assert links["urn:xmpp:alt-connections:xbosh"].endswith("/http-bind")
