"""XEP-0352 client state indication end to end: slixmpp's ``xep_0352`` (it
sees the stream feature and sends ``<inactive/>`` / ``<active/>``) against a
real ``twistd xmppd``. While inactive, a client is sent nothing but important
stanzas; what was held — presence collapsed to the newest per contact
resource — arrives in order with the next important stanza, or on
``<active/>``."""

from __future__ import annotations

import asyncio
import uuid
import xml.etree.ElementTree as ET

import pytest

pytest.importorskip("slixmpp")

from slixclient import CLIENT, IMClient, close_all, message, presence  # noqa: E402

pytestmark = pytest.mark.all_transports

COMPONENTS = "disco ping roster presence messaging offline carbons csi"
DELAY = "{urn:xmpp:delay}delay"
CHATSTATES = "http://jabber.org/protocol/chatstates"


@pytest.fixture(scope="module")
def server(make_xmppd_module):
    return make_xmppd_module(server={"components": COMPONENTS}, users=())


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


async def people(server):
    tag = uuid.uuid4().hex[:6]
    jids = {name: f"{name}{tag}@localhost" for name in ("alice", "bob", "carol")}
    server.addusers(jids.values())
    alice = await IMClient.login(server, jids["alice"] + "/phone", plugins=("xep_0352",))
    bob = await IMClient.login(server, jids["bob"] + "/pc")
    carol = await IMClient.login(server, jids["carol"] + "/pc")
    for client in (alice, bob, carol):
        await client.fetch_roster()
        await client.online()
    for contact in (bob, carol):  # alice sees bob's and carol's presence
        alice.send_presence(pto=contact.boundjid.bare, ptype="subscribe")
        await contact.expect(presence(alice.boundjid.bare, "subscribe"))
        contact.send_presence(pto=alice.boundjid.bare, ptype="subscribed")
        await alice.expect(presence(contact.boundjid.bare, "subscribed"))
        await alice.expect(presence(contact.boundjid.full))
    return alice, bob, carol


async def go_inactive(alice: IMClient, bob: IMClient) -> None:
    """``<inactive/>``, then a message to bob: once bob has it, the server has
    processed the ``<inactive/>`` before it (and alice gets no answer)."""
    alice.plugin["xep_0352"].send_inactive()
    token = uuid.uuid4().hex
    alice.send_message(mto=bob.boundjid.full, mbody=token, mtype="chat")
    await bob.expect(lambda e: e.findtext(CLIENT + "body") == token)


async def settled(*senders: IMClient) -> None:
    """Everything the senders sent so far was handled by the server."""
    for sender in senders:
        await sender.settle()


async def show(who: IMClient, value: str | None) -> None:
    """A presence update, handled by the server when this returns (so that
    updates from several contacts reach alice in the order of the test)."""
    who.send_presence(pshow=value) if value else who.send_presence()
    await who.ping_server()


async def composing(who: IMClient, to: IMClient) -> None:
    stanza = who.make_message(mto=to.boundjid.full, mtype="chat")
    ET.SubElement(stanza.xml, f"{{{CHATSTATES}}}composing")
    stanza.send()
    await who.ping_server()


def what(e: ET.Element) -> tuple[str, str, str]:
    sender = (e.get("from") or "").partition("@")[0][:-6]  # without the test's tag
    if e.tag == CLIENT + "presence":
        return ("presence", sender, e.findtext(CLIENT + "show") or "available")
    if e.find(f"{{{CHATSTATES}}}composing") is not None:
        return ("message", sender, "composing")
    return ("message", sender, e.findtext(CLIENT + "body") or "")


async def arrivals(client: IMClient, count: int, start: int) -> list[ET.Element]:
    for _ in range(200):
        if len(client.inbox) - start >= count:
            break
        await asyncio.sleep(0.05)
    return client.inbox[start:]


def test_the_stream_feature_is_seen_by_slixmpp(server):
    async def main():
        alice, bob, carol = await people(server)
        try:
            assert alice.plugin["xep_0352"].enabled
        finally:
            await close_all(alice, bob, carol)
    run(main())


def test_an_inactive_client_gets_held_stanzas_with_the_next_message_presence_collapsed(server):
    async def main():
        alice, bob, carol = await people(server)
        try:
            await go_inactive(alice, bob)
            start = len(alice.inbox)
            await show(bob, "away")
            await show(carol, "dnd")
            await composing(bob, alice)
            await show(bob, "xa")
            await show(bob, "chat")
            await settled(bob, carol)
            await asyncio.sleep(0.3)
            assert alice.inbox[start:] == [], "an inactive client was sent unimportant stanzas"
            bob.send_message(mto=alice.boundjid.full, mbody="wake up", mtype="chat")
            got = await arrivals(alice, 4, start)
            assert [what(e) for e in got] == [
                ("presence", "carol", "dnd"), ("message", "bob", "composing"),
                ("presence", "bob", "chat"), ("message", "bob", "wake up")]
            assert [e.find(DELAY) is not None for e in got] == [True, True, True, False]
            assert got[0].find(DELAY).get("from") == alice.boundjid.bare
        finally:
            await close_all(alice, bob, carol)
    run(main())


def test_active_releases_what_was_held_in_order_presence_collapsed(server):
    async def main():
        alice, bob, carol = await people(server)
        try:
            await go_inactive(alice, bob)
            start = len(alice.inbox)
            await show(bob, "away")
            await show(carol, "away")
            await composing(carol, alice)
            await show(bob, None)
            await settled(bob, carol)
            await asyncio.sleep(0.3)
            assert alice.inbox[start:] == []
            alice.plugin["xep_0352"].send_active()
            got = await arrivals(alice, 3, start)
            assert [what(e) for e in got] == [
                ("presence", "carol", "away"), ("message", "carol", "composing"),
                ("presence", "bob", "available")]
            # active again: the next update comes at once
            await show(carol, "chat")
            await alice.expect(lambda e: e.tag == CLIENT + "presence"
                               and e.findtext(CLIENT + "show") == "chat")
        finally:
            await close_all(alice, bob, carol)
    run(main())


def test_important_stanzas_reach_an_inactive_client_at_once(server):
    async def main():
        alice, bob, carol = await people(server)
        try:
            await go_inactive(alice, bob)
            await asyncio.sleep(0.1)
            # a subscription request and a message with a body go through at once
            carol.send_presence(pto=alice.boundjid.bare, ptype="subscribe")
            await alice.expect(presence(carol.boundjid.bare, "subscribe"))
            bob.send_message(mto=alice.boundjid.full, mbody="now", mtype="chat")
            await alice.expect(message(bob.boundjid.full))
        finally:
            await close_all(alice, bob, carol)
    run(main())
