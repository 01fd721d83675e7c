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
from slixclient import IMClient, close_all, message, presence
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
                                     "offline vcard muc"},
            "s2s": {"interfaces": "127.0.0.1", "port": ports[domain], "ca_file": ca_file,
                    "secure_auth": "true" if mode == "external" else "false"},
            "s2s:routes": {other: f"127.0.0.1:{ports[other]}",
                           f"conference.{other}": f"127.0.0.1:{ports[other]}"},
        }, users=[f"alice@{domain}", f"bob@{domain}"])
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
