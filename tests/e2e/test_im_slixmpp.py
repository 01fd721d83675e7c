"""RFC 6121 end to end with slixmpp: rosters, subscriptions, presence, and the
IM extensions (offline, blocking, carbons, private storage, last activity).

Three users with several resources each talk to one real server process over
real sockets. Each test uses its own accounts, so tests do not see each
other's presence.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

pytest.importorskip("slixmpp")
from slixmpp.exceptions import IqError  # noqa: E402

from slixclient import (IMClient, close_all, message, presence,  # noqa: E402
                        roster_push, ROSTER)

pytestmark = pytest.mark.all_transports  # tcp, websocket, bosh (conftest)

COMPONENTS = "disco ping roster presence messaging offline carbons blocking private last"
RATE_LIMIT = 5
MAX_ROSTER = 12


@pytest.fixture(scope="module")
def server(make_xmppd_module):
    return make_xmppd_module({
        "server": {"components": COMPONENTS},
        "component:presence": {"subscription_rate_limit": RATE_LIMIT},
        "component:roster": {"max_items": MAX_ROSTER},
    }, users=())


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


def people(server, *names):
    """Fresh accounts for one test: name → bare JID."""
    tag = uuid.uuid4().hex[:6]
    jids = {name: f"{name}{tag}@localhost" for name in names}
    server.addusers(jids.values())
    return jids


async def connect(server, *full_jids, plugins=()):
    """Log in every resource, fetch its roster, send initial presence."""
    clients = [await IMClient.login(server, jid, plugins=plugins) for jid in full_jids]
    for client in clients:
        await client.fetch_roster()
        await client.online()
    return clients


async def subscribe(asker, asker_others, contact, contact_others):
    """A complete one-way handshake: ``asker`` gets ``contact``'s presence."""
    a, c = asker.boundjid.bare, contact.boundjid.bare
    asker.send_presence(pto=c, ptype="subscribe")
    for client in (asker, *asker_others):
        await client.expect(roster_push(c, ask="subscribe"))
    for client in (contact, *contact_others):
        await client.expect(presence(a, "subscribe"))
    contact.send_presence(pto=a, ptype="subscribed")
    for client in (contact, *contact_others):
        await client.expect(roster_push(a, ask=None))
    for client in (asker, *asker_others):
        await client.expect(roster_push(c, ask=None))
        await client.expect(presence(c, "subscribed"))


def test_subscription_handshake_with_several_resources_each(server):
    """Pushes reach every interested resource of both users, presence flows
    once subscribed, and the third user sees none of it."""
    who = people(server, "alice", "bob", "carol")

    async def main():
        phone, laptop, pc, tablet, carol = await connect(
            server, who["alice"] + "/phone", who["alice"] + "/laptop",
            who["bob"] + "/pc", who["bob"] + "/tablet", who["carol"] + "/home")
        try:
            await subscribe(phone, [laptop], pc, [tablet])
            # alice now receives bob's presence: each of bob's resources, at each of hers.
            for client in (phone, laptop):
                await client.expect(presence(pc.boundjid.full))
                await client.expect(presence(tablet.boundjid.full))
            roster = await laptop.fetch_roster()
            item = roster.find(f"{ROSTER}query/{ROSTER}item")
            assert item.get("jid") == who["bob"] and item.get("subscription") == "to"
            # and the other way round: mutual.
            await subscribe(pc, [tablet], phone, [laptop])
            for client in (pc, tablet):
                await client.expect(presence(phone.boundjid.full))
            roster = await tablet.fetch_roster()
            item = roster.find(f"{ROSTER}query/{ROSTER}item")
            assert item.get("subscription") == "both" and item.get("ask") is None
            # A status change reaches bob's resources; carol saw nothing at all.
            phone.send_presence(pstatus="in a meeting", pshow="dnd")
            for client in (pc, tablet):
                got = await client.expect(presence(phone.boundjid.full))
                assert got.findtext("{jabber:client}status") == "in a meeting"
            await carol.settle()
            assert carol.received(presence(who["alice"])) == []
            assert carol.received(presence(who["bob"])) == []
        finally:
            await close_all(phone, laptop, pc, tablet, carol)
    run(main())


def test_dropped_connection_broadcasts_unavailable(server):
    who = people(server, "alice", "bob")

    async def main():
        alice, bob = await connect(server, who["alice"] + "/phone", who["bob"] + "/pc")
        try:
            await subscribe(alice, [], bob, [])
            await alice.expect(presence(bob.boundjid.full))
            bob.transport.abort()  # the TCP connection just drops: no </stream>, no presence
            await alice.expect(presence(bob.boundjid.full, "unavailable"))
        finally:
            await close_all(alice, bob)
    run(main())


def test_initial_presence_probes_contacts(server):
    who = people(server, "alice", "bob")

    async def main():
        alice, bob = await connect(server, who["alice"] + "/phone", who["bob"] + "/pc")
        try:
            await subscribe(alice, [], bob, [])
            bob.send_presence(pstatus="here")
            await alice.expect(presence(bob.boundjid.full))
            late = await IMClient.login(server, who["alice"] + "/late")
            late.send_presence()
            probed = await late.expect(presence(bob.boundjid.full, to=late.boundjid.full))
            assert probed.findtext("{jabber:client}status") == "here"
            # The new resource also hears alice's other resource.
            await late.expect(presence(alice.boundjid.full, to=late.boundjid.full))
            await late.close()
        finally:
            await close_all(alice, bob)
    run(main())


def test_subscription_request_waits_for_an_offline_contact(server):
    who = people(server, "alice", "bob")

    async def main():
        alice, = await connect(server, who["alice"] + "/phone")
        try:
            alice.send_presence(pto=who["bob"], ptype="subscribe")
            await alice.expect(roster_push(who["bob"], ask="subscribe"))
            bob = await IMClient.login(server, who["bob"] + "/pc")
            bob.send_presence()
            await bob.expect(presence(who["alice"], "subscribe"))
            bob.send_presence(pto=who["alice"], ptype="subscribed")
            await alice.expect(roster_push(who["bob"], subscription="to", ask=None))
            await alice.expect(presence(bob.boundjid.full))
            await bob.close()
        finally:
            await close_all(alice)
    run(main())


def test_roster_set_and_remove_push_to_every_interested_resource(server):
    who = people(server, "alice", "bob")

    async def main():
        phone, laptop = await connect(server, who["alice"] + "/phone", who["alice"] + "/laptop")
        try:
            await phone.iq("set", f"<query xmlns='jabber:iq:roster'><item jid='{who['bob']}' "
                                  "name='Bob'><group>Friends</group></item></query>")
            for client in (phone, laptop):
                push = await client.expect(roster_push(who["bob"], subscription="none"))
                item = push.find(f"{ROSTER}query/{ROSTER}item")
                assert item.get("name") == "Bob"
                assert item.findtext(f"{ROSTER}group") == "Friends"
            ver = push.find(f"{ROSTER}query").get("ver")
            await phone.iq("set", f"<query xmlns='jabber:iq:roster'><item jid='{who['bob']}' "
                                  "subscription='remove'/></query>")
            for client in (phone, laptop):
                await client.expect(roster_push(who["bob"], subscription="remove"))
            # XEP-0237: from the older version, an empty result and the removal as a push.
            result = await laptop.fetch_roster(ver=ver)
            assert result.find(f"{ROSTER}query") is None
            await laptop.expect(roster_push(who["bob"], subscription="remove"))
        finally:
            await close_all(phone, laptop)
    run(main())


def test_invalid_roster_set_is_refused_and_changes_nothing(server):
    who = people(server, "alice")

    async def main():
        alice, = await connect(server, who["alice"] + "/phone")
        try:
            with pytest.raises(IqError) as refused:
                await alice.iq("set", "<query xmlns='jabber:iq:roster'>"
                                      "<item jid='not a jid@@localhost'/></query>")
            assert refused.value.condition == "jid-malformed"
            with pytest.raises(IqError) as refused:
                await alice.iq("set", "<query xmlns='jabber:iq:roster'>"
                                      "<item jid='x@localhost' subscription='both'/></query>")
            assert refused.value.condition == "not-allowed"
            roster = await alice.fetch_roster()
            assert roster.find(f"{ROSTER}query/{ROSTER}item") is None
        finally:
            await close_all(alice)
    run(main())


def test_message_between_subscribed_users_keeps_id_and_type(server):
    who = people(server, "alice", "bob")

    async def main():
        alice, bob = await connect(server, who["alice"] + "/phone", who["bob"] + "/pc")
        try:
            alice.send_message(mto=who["bob"], mbody="hi", mtype="chat")
            got = await bob.expect(message(alice.boundjid.full, type="chat"))
            assert got.findtext("{jabber:client}body") == "hi"
        finally:
            await close_all(alice, bob)
    run(main())


def test_carbons_copy_sent_and_received_messages_to_the_other_resource(server):
    who = people(server, "alice", "bob")

    async def main():
        phone, laptop, bob = await connect(server, who["alice"] + "/phone",
                                           who["alice"] + "/laptop", who["bob"] + "/pc",
                                           plugins=("xep_0280",))
        try:
            for client in (phone, laptop):
                await client.plugin["xep_0280"].enable()
            phone.send_message(mto=who["bob"], mbody="sent from the phone", mtype="chat")
            await bob.expect(message(phone.boundjid.full, type="chat"))
            sent = await laptop.expect(message(who["alice"], type="chat"))
            inner = sent.find("{urn:xmpp:carbons:2}sent/{urn:xmpp:forward:0}forwarded/"
                              "{jabber:client}message")
            assert inner is not None and inner.findtext("{jabber:client}body") == "sent from the phone"
            assert inner.get("to") == who["bob"]
            bob.send_message(mto=phone.boundjid.full, mbody="to the phone", mtype="chat")
            await phone.expect(message(bob.boundjid.full, type="chat"))
            received = await laptop.expect(message(who["alice"], type="chat"))
            inner = received.find("{urn:xmpp:carbons:2}received/{urn:xmpp:forward:0}forwarded/"
                                  "{jabber:client}message")
            assert inner is not None and inner.findtext("{jabber:client}body") == "to the phone"
            assert inner.get("from") == bob.boundjid.full
        finally:
            await close_all(phone, laptop, bob)
    run(main())


def test_message_to_an_offline_user_is_delivered_at_login_with_delay(server):
    who = people(server, "alice", "bob")

    async def main():
        alice, = await connect(server, who["alice"] + "/phone")
        try:
            alice.send_message(mto=who["bob"], mbody="while you were out", mtype="chat")
            await alice.settle()
            bob = await IMClient.login(server, who["bob"] + "/pc")
            bob.send_presence()
            got = await bob.expect(message(alice.boundjid.full, type="chat"))
            assert got.findtext("{jabber:client}body") == "while you were out"
            delay = got.find("{urn:xmpp:delay}delay")
            assert delay is not None and delay.get("from") == "localhost"
            assert delay.get("stamp", "").endswith("Z")
            await bob.close()
            assert alice.received(message(type="error")) == []
        finally:
            await close_all(alice)
    run(main())


def error_of(stanza):
    """(condition, application condition namespace) of an error stanza."""
    error = stanza.find("{jabber:client}error")
    assert error is not None, stanza
    children = [c.tag for c in error]
    condition = next(t.split("}")[1] for t in children
                     if t.startswith("{urn:ietf:params:xml:ns:xmpp-stanzas}") and not t.endswith("}text"))
    return condition, [t for t in children if not t.startswith("{urn:ietf:params:xml:ns:xmpp-stanzas}")]


def test_blocking_stops_messages_both_ways_until_unblocked(server):
    who = people(server, "alice", "carol")

    async def main():
        phone, laptop, carol = await connect(server, who["alice"] + "/phone",
                                             who["alice"] + "/laptop", who["carol"] + "/home",
                                             plugins=("xep_0191",))
        try:
            blocked = await laptop.plugin["xep_0191"].get_blocked()  # laptop now gets pushes
            assert not blocked["blocklist"]["items"]
            await phone.plugin["xep_0191"].block([who["carol"]])
            push = await laptop.expect(lambda e: e.find("{urn:xmpp:blocking}block") is not None)
            assert push.find("{urn:xmpp:blocking}block/{urn:xmpp:blocking}item").get("jid") == who["carol"]
            carol.send_message(mto=who["alice"], mbody="let me in", mtype="chat")
            refused = await carol.expect(message(who["alice"], type="error"))
            assert error_of(refused)[0] == "service-unavailable"
            phone.send_message(mto=who["carol"], mbody="no", mtype="chat")
            refused = await phone.expect(message(who["carol"], type="error"))
            assert error_of(refused) == ("not-acceptable", ["{urn:xmpp:blocking:errors}blocked"])
            await phone.plugin["xep_0191"].unblock([who["carol"]])
            carol.send_message(mto=who["alice"], mbody="better now?", mtype="chat")
            for client in (phone, laptop):  # to the bare JID: both resources, priority 0
                got = await client.expect(message(carol.boundjid.full, type="chat"))
                assert got.findtext("{jabber:client}body") == "better now?"
            await laptop.settle()
            for client in (phone, laptop):  # and "let me in" never came
                assert client.received(message(carol.boundjid.full)) == []
        finally:
            await close_all(phone, laptop, carol)
    run(main())


def test_private_xml_storage_round_trip_between_resources(server):
    who = people(server, "alice")

    async def main():
        phone, laptop = await connect(server, who["alice"] + "/phone", who["alice"] + "/laptop")
        try:
            await phone.iq("set", "<query xmlns='jabber:iq:private'><prefs xmlns='urn:example:prefs'>"
                                  "<color>blue</color></prefs></query>")
            reply = await laptop.iq("get", "<query xmlns='jabber:iq:private'>"
                                           "<prefs xmlns='urn:example:prefs'/></query>")
            assert reply.findtext("{jabber:iq:private}query/{urn:example:prefs}prefs/"
                                  "{urn:example:prefs}color") == "blue"
        finally:
            await close_all(phone, laptop)
    run(main())


def test_last_activity_of_an_offline_contact_and_of_the_server(server):
    who = people(server, "alice", "bob", "carol")

    async def main():
        alice, bob, carol = await connect(server, who["alice"] + "/phone", who["bob"] + "/pc",
                                          who["carol"] + "/home", plugins=("xep_0012",))
        try:
            await subscribe(bob, [], alice, [])  # bob may see alice's presence
            alice.send_presence(ptype="unavailable", pstatus="gone fishing")
            await bob.expect(presence(alice.boundjid.full, "unavailable"))
            await alice.close()
            await asyncio.sleep(1.1)
            last = await bob.iq("get", "<query xmlns='jabber:iq:last'/>", to=who["alice"])
            query = last.find("{jabber:iq:last}query")
            assert int(query.get("seconds")) >= 1
            assert query.text == "gone fishing"
            with pytest.raises(IqError) as refused:
                await carol.iq("get", "<query xmlns='jabber:iq:last'/>", to=who["alice"])
            assert refused.value.condition == "forbidden"
            uptime = await carol.iq("get", "<query xmlns='jabber:iq:last'/>", to="localhost")
            assert int(uptime.find("{jabber:iq:last}query").get("seconds")) >= 0
        finally:
            await close_all(alice, bob, carol)
    run(main())


def test_a_flood_of_subscription_requests_is_rate_limited(server):
    who = people(server, "alice")

    async def main():
        alice, = await connect(server, who["alice"] + "/phone")
        try:
            for n in range(RATE_LIMIT + 3):
                alice.send_presence(pto=f"contact{n}@elsewhere.example", ptype="subscribe")
            errors = [await alice.expect(presence(f"contact{n}@elsewhere.example", "error"))
                      for n in range(RATE_LIMIT, RATE_LIMIT + 3)]
            assert {error_of(e)[0] for e in errors} == {"resource-constraint"}
            roster = await alice.fetch_roster()
            asked = {i.get("jid") for i in roster.iterfind(f"{ROSTER}query/{ROSTER}item")}
            assert asked == {f"contact{n}@elsewhere.example" for n in range(RATE_LIMIT)}
        finally:
            await close_all(alice)
    run(main())


def test_a_roster_beyond_the_cap_is_refused(server):
    who = people(server, "alice")

    async def main():
        alice, = await connect(server, who["alice"] + "/phone")
        try:
            for n in range(MAX_ROSTER):
                await alice.iq("set", f"<query xmlns='jabber:iq:roster'>"
                                      f"<item jid='friend{n}@localhost'/></query>")
            with pytest.raises(IqError) as refused:
                await alice.iq("set", "<query xmlns='jabber:iq:roster'>"
                                      "<item jid='one-too-many@localhost'/></query>")
            assert refused.value.condition == "not-allowed"
            roster = await alice.fetch_roster()
            assert len(roster.findall(f"{ROSTER}query/{ROSTER}item")) == MAX_ROSTER
        finally:
            await close_all(alice)
    run(main())


def test_a_forged_from_on_a_subscription_approval_closes_the_stream_and_changes_nothing(server):
    who = people(server, "mallory", "bob", "carol")

    async def main():
        mallory, bob = await connect(server, who["mallory"] + "/x", who["bob"] + "/pc")
        try:
            # bob asked carol; mallory pretends to be carol approving it.
            bob.send_presence(pto=who["carol"], ptype="subscribe")
            await bob.expect(roster_push(who["carol"], ask="subscribe"))
            mark = len(server.log_text())
            mallory.send_raw(f"<presence type='subscribed' to='{who['bob']}' from='{who['carol']}'/>")
            await asyncio.wait_for(mallory.closed, 10)
            assert "invalid-from" in server.log_text()[mark:]
            await bob.settle()
            assert bob.received(presence(who["carol"], "subscribed")) == []
            roster = await bob.fetch_roster()
            item = roster.find(f"{ROSTER}query/{ROSTER}item")
            assert item.get("subscription") == "none" and item.get("ask") == "subscribe"
        finally:
            await close_all(mallory, bob)
    run(main())
