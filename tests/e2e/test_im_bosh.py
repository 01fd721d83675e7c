"""IM over BOSH (XEP-0124, XEP-0206) against a real ``twistd xmppd``: a BOSH
client (:mod:`boshclient`: SCRAM, restart, bind, long polling) and a TCP
slixmpp client use the same server, and the IM basics work between them:
roster, subscription and presence both ways, messages both ways, pings, a
clean terminate; over HTTPS too; a TCP login of the same resource replaces
the BOSH session (``conflict``).
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
import xml.etree.ElementTree as ET

import pytest

pytest.importorskip("slixmpp")

from boshclient import NS_HTTPBIND, BoshClient, login  # noqa: E402
from conftest import PASSWORD  # noqa: E402
from slixclient import IMClient, close_all, message, presence  # noqa: E402

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
    srv = make_xmppd_module({"server": {"components": COMPONENTS}}, users=())
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


def test_a_bosh_client_and_a_tcp_client_do_the_im_basics(server):
    who = people(server, "alice", "bob")

    async def main():
        web = await asyncio.to_thread(login, server.host, server.http_port, who["alice"],
                                      PASSWORD, "web")
        bob = await IMClient.login(server, who["bob"] + "/pc")
        wait = lambda *a, **k: asyncio.to_thread(web.next_element, *a, **k)  # noqa: E731
        try:
            assert web.jid == who["alice"] + "/web"
            roster = await asyncio.to_thread(web.iq, "<query xmlns='jabber:iq:roster'/>")
            assert roster.get("type") == "result" and roster.find(ROSTER + "query") is not None
            await asyncio.to_thread(web.send, "<presence xmlns='jabber:client'/>")
            await wait(stanza("presence", from_=web.jid, to=web.jid))
            await bob.fetch_roster()
            await bob.online()
            # alice (BOSH) subscribes to bob (TCP), bob approves and subscribes back
            await asyncio.to_thread(web.send, f"<presence xmlns='jabber:client' "
                                              f"to='{who['bob']}' type='subscribe'/>")
            await bob.expect(presence(who["alice"], "subscribe"))
            bob.send_presence(pto=who["alice"], ptype="subscribed")
            await wait(stanza("presence", from_=who["bob"], type="subscribed"))
            await wait(stanza("presence", from_=bob.boundjid.full))
            bob.send_presence(pto=who["alice"], ptype="subscribe")
            await wait(stanza("presence", from_=who["bob"], type="subscribe"))
            await asyncio.to_thread(web.send, f"<presence xmlns='jabber:client' "
                                              f"to='{who['bob']}' type='subscribed'/>")
            await bob.expect(presence(web.jid))
            roster = await asyncio.to_thread(web.iq, "<query xmlns='jabber:iq:roster'/>")
            item = roster.find(f"{ROSTER}query/{ROSTER}item")
            assert item.get("jid") == who["bob"] and item.get("subscription") == "both"
            # messages both ways, a burst from bob arriving complete and in order
            await asyncio.to_thread(
                web.send, f"<message xmlns='jabber:client' to='{who['bob']}' type='chat' "
                          "id='b1'><body>from the browser</body></message>")
            got = await bob.expect(message(web.jid, id="b1"))
            assert got.findtext(CLIENT + "body") == "from the browser"
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
            await asyncio.to_thread(web.send, f"<iq xmlns='jabber:client' type='result' "
                                              f"id='{ping.get('id')}' to='{bob.boundjid.full}'/>")
            assert (await pending)["type"] == "result"
            # leaving: terminate with an unavailable presence; bob sees alice go
            end = await asyncio.to_thread(
                web.terminate, "<presence xmlns='jabber:client' type='unavailable'/>")
            assert end.get("type") == "terminate" and end.get("condition") is None
            await bob.expect(presence(web.jid, "unavailable"))
        finally:
            web.close()
            await close_all(bob)
    run(main())
    assert f"bound {who['alice']}/web (SCRAM-SHA-256, BOSH, loopback)" in server.log_text()


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
    mechanisms = [m.text for m in body.iter("{urn:ietf:params:xml:ns:xmpp-sasl}mechanism")]
    assert mechanisms[0] == "SCRAM-SHA-256"


def test_bosh_over_https_is_secure(server):
    who = people(server, "alice")
    c = BoshClient(server.host, server.https_port, tls=True)
    features = c.create()
    assert "PLAIN" in [m.text for m in features.iter("{urn:ietf:params:xml:ns:xmpp-sasl}mechanism")]
    c.sasl_scram(who["alice"], PASSWORD)
    c.restart()
    c.bind("secure")
    c.terminate()
    assert f"bound {who['alice']}/secure (SCRAM-SHA-256, BOSH, TLS)" in server.log_text()


def test_a_bosh_session_replaced_by_a_tcp_login_gets_conflict(server):
    who = people(server, "alice")

    async def main():
        web = await asyncio.to_thread(login, server.host, server.http_port, who["alice"],
                                      PASSWORD, "same")
        try:
            tcp = await IMClient.login(server, who["alice"] + "/same")
            end = await asyncio.to_thread(web.wait_terminated)
            assert end.get("condition") == "remote-stream-error"
            assert end.find("{http://etherx.jabber.org/streams}error/"
                            "{urn:ietf:params:xml:ns:xmpp-streams}conflict") is not None
            await close_all(tcp)
        finally:
            web.close()
    run(main())


def test_host_meta_names_the_bosh_endpoint(server):
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/.well-known/host-meta.json",
                                timeout=10) as f:
        links = {link["rel"]: link["href"] for link in __import__("json").load(f)["links"]}
    assert links["urn:xmpp:alt-connections:xbosh"].endswith("/http-bind")
