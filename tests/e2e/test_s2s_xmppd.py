"""Two xmppd servers federate (RFC 6120 s2s): once authenticating with SASL
EXTERNAL (certificates from a CA both trust), once with dialback
(self-signed certificates, ``secure_auth = false``). Real slixmpp clients on
each side subscribe, exchange presence and messages, and query the other
server; the servers' logs say how each link authenticated."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import pytest

from conftest import free_port
from slixclient import IMClient, close_all, message, presence, roster_push
from testca import TestCA, self_signed

A, B = "a.test", "b.test"


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


@pytest.fixture(scope="module", params=["external", "dialback"])
def pair(request, make_xmppd_module, tmp_path_factory):
    mode = request.param
    base = tmp_path_factory.mktemp(f"s2s-{mode}")
    ports = {A: free_port(), B: free_port()}
    if mode == "external":
        ca = TestCA(base / "ca")
        certs = {d: ca.issue(d) for d in (A, B)}
        ca_file = str(ca.ca_file)
    else:
        certs = {d: self_signed(base / d, d) for d in (A, B)}
        ca_file = ""
    servers = {}
    for domain, other in ((A, B), (B, A)):
        servers[domain] = make_xmppd_module({
            "server": {"domains": domain, "certificate": str(certs[domain].combined),
                       "components": "disco ping version time roster presence messaging "
                                     "offline vcard muc caps pep"},
            "s2s": {"interfaces": "127.0.0.1", "port": ports[domain], "ca_file": ca_file,
                    "secure_auth": "true" if mode == "external" else "false"},
            "s2s:routes": {other: f"127.0.0.1:{ports[other]}",
                           f"conference.{other}": f"127.0.0.1:{ports[other]}"},
        }, users=[f"{name}@{domain}" for name in ("alice", "bob", "carol", "dave")])
    return mode, servers


def test_subscription_presence_and_messages_cross_both_ways(pair):
    mode, servers = pair

    async def main():
        alice = await IMClient.login(servers[A], f"alice@{A}/pc")
        bob = await IMClient.login(servers[B], f"bob@{B}/pc")
        try:
            await alice.fetch_roster()
            await bob.fetch_roster()
            await alice.online()
            await bob.online()
            alice.send_presence(pto=f"bob@{B}", ptype="subscribe")
            await bob.expect(presence(f"alice@{A}", "subscribe"))
            bob.send_presence(pto=f"alice@{A}", ptype="subscribed")
            await alice.expect(presence(f"bob@{B}/pc"))
            alice.send_message(mto=f"bob@{B}", mbody="hello over s2s", mtype="chat")
            got = await bob.expect(message(f"alice@{A}/pc"))
            assert got.find("{jabber:client}body").text == "hello over s2s"
            bob.send_message(mto=f"alice@{A}/pc", mbody="and back", mtype="chat")
            got = await alice.expect(message(f"bob@{B}/pc"))
            assert got.find("{jabber:client}body").text == "and back"
            version = await alice.iq("get", "<query xmlns='jabber:iq:version'/>", to=B)
            assert version.find("{jabber:iq:version}query/{jabber:iq:version}name").text
        finally:
            await close_all(alice, bob)

    _run(main())
    how = "SASL EXTERNAL" if mode == "external" else "dialback"
    for domain, other in ((A, B), (B, A)):
        log = servers[domain].log_text()
        assert f"{domain} authenticated to {other} ({how}" in log, log[-3000:]
        assert f"{other} authenticated to {domain} ({how}" in log, log[-3000:]


def test_a_hosted_service_rides_on_the_user_domains_link(pair):
    """XEP-0220 piggybacking: once a.test has a link to b.test, its MUC
    service (conference.a.test) authenticates over the same stream, and a
    remote user joins a room."""
    mode, servers = pair

    async def main():
        alice = await IMClient.login(servers[A], f"alice@{A}/pc")
        bob = await IMClient.login(servers[B], f"bob@{B}/pc")
        try:
            alice.send_message(mto=f"bob@{B}/pc", mbody="first", mtype="chat")
            await bob.expect(message(f"alice@{A}/pc"))
            join = bob.make_presence(pto=f"room@conference.{A}/bob")
            join.xml.append(ET.Element("{http://jabber.org/protocol/muc}x"))
            join.send()
            self_presence = await bob.expect(presence(f"room@conference.{A}/bob"))
            codes = {s.get("code") for s in self_presence.iter(
                "{http://jabber.org/protocol/muc#user}status")}
            assert "110" in codes
        finally:
            await close_all(alice, bob)

    _run(main())
    assert f"s2s conference.{A} -> {B}: over the stream of {A}" in servers[A].log_text()
    assert f"conference.{A} authenticated to {B}" in servers[B].log_text()



def test_offline_storage_bounces_and_vcards_cross(pair):
    """A message to a remote user who is offline waits in their server's
    storage; one to a remote account that does not exist comes back as an
    error; a vCard is fetched across."""
    mode, servers = pair

    async def main():
        alice = await IMClient.login(servers[A], f"alice@{A}/off")
        try:
            alice.send_message(mto=f"bob@{B}", mbody="while you were out", mtype="chat")
            alice.send_message(mto=f"nobody@{B}", mbody="anyone?", mtype="chat")
            bounce = await alice.expect(lambda e: e.get("type") == "error"
                                        and e.get("from") == f"nobody@{B}")
            assert bounce.find("{jabber:client}error/"
                               "{urn:ietf:params:xml:ns:xmpp-stanzas}service-unavailable") \
                is not None
            await alice.iq("set", "<vCard xmlns='vcard-temp'><FN>Alice of A</FN></vCard>")
            bob = await IMClient.login(servers[B], f"bob@{B}/off")
            try:
                card = await bob.iq("get", "<vCard xmlns='vcard-temp'/>", to=f"alice@{A}")
                assert card.find("{vcard-temp}vCard/{vcard-temp}FN").text == "Alice of A"
                await bob.online()  # offline messages come after initial presence
                stored = await bob.expect(message(f"alice@{A}/off"))
                assert stored.find("{jabber:client}body").text == "while you were out"
            finally:
                await close_all(bob)
        finally:
            await close_all(alice)

    _run(main())


def test_pep_notifications_reach_remote_contacts_whose_caps_ask(pair):
    """A PEP avatar notification reaches the remote contact whose caps
    (queried by the publisher's server across the link) ask for it."""
    mode, servers = pair
    EVENT = "{http://jabber.org/protocol/pubsub#event}"
    plugins = ("xep_0060", "xep_0115", "xep_0163", "xep_0084")

    async def main():
        carol = await IMClient.login(servers[A], f"carol@{A}/pep", plugins=plugins)
        # one plugin more: caps a.test has not seen, so it asks dave across the link
        dave = await IMClient.login(servers[B], f"dave@{B}/pep", plugins=plugins + ("xep_0107",))
        try:
            for client in (carol, dave):
                await client.plugin["xep_0115"].update_caps(broadcast=False)
                await client.fetch_roster()
                await client.online()
            for asker, contact in ((carol, dave), (dave, carol)):
                x, y = asker.boundjid.bare, contact.boundjid.bare
                asker.send_presence(pto=y, ptype="subscribe")
                await contact.expect(presence(x, "subscribe"))
                contact.send_presence(pto=x, ptype="subscribed")
                await asker.expect(roster_push(y, ask=None))
            await carol.plugin["xep_0084"].publish_avatar_metadata([
                {"id": "abc123", "type": "image/png", "bytes": 10}])

            def avatar(e):
                items = e.find(f"{EVENT}event/{EVENT}items")
                return e.get("from") == f"carol@{A}" and items is not None \
                    and items.get("node") == "urn:xmpp:avatar:metadata"
            note = await dave.expect(avatar, timeout=15)
            assert note.get("to") == f"dave@{B}/pep"
            asked = dave.received(lambda e: e.get("from") == f"carol@{A}" and e.find(
                "{http://jabber.org/protocol/disco#info}query") is not None)
            assert asked, "a.test did not ask dave's caps across the link"
        finally:
            await close_all(carol, dave)

    _run(main())
