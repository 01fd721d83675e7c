"""XEP-0313 user archives end to end with slixmpp's xep_0313 and xep_0441:
thousands of messages archived and paged back whole in both directions,
preferences, stanza ids on delivery and carbons, and a SIGKILL in the
middle of a conversation.

Paging is slixmpp's own (``iterate``, its XEP-0059 iterator): it asks for
the next page after the last id it got, or before the first, until a page
comes back empty; so a wrong <first/>, <last/> or a page boundary that
skips or repeats an item shows up as a gap or a duplicate.
"""

from __future__ import annotations

import asyncio
import uuid
import xml.etree.ElementTree as ET

import pytest

pytest.importorskip("slixmpp")
from slixmpp.exceptions import IqError  # noqa: E402

from slixclient import IMClient, close_all  # noqa: E402

pytestmark = pytest.mark.all_transports

COMPONENTS = "disco ping roster presence messaging offline carbons mam"
SID = "{urn:xmpp:sid:0}"
MAM = "urn:xmpp:mam:2"
PLUGINS = ("xep_0313", "xep_0441", "xep_0280", "xep_0359")
MANY = 2000


@pytest.fixture(scope="module")
def server(make_xmppd_module):
    return make_xmppd_module({"server": {"components": COMPONENTS}}, users=())


def run(coro, timeout=240):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def people(server, *names):
    tag = uuid.uuid4().hex[:6]
    jids = {name: f"{name}{tag}@localhost" for name in names}
    server.addusers(jids.values())
    return jids


async def connect(server, *full_jids):
    clients = [await IMClient.login(server, jid, plugins=PLUGINS) for jid in full_jids]
    for client in clients:
        await client.online()
    return clients


def chats(client):
    return [e for e in client.inbox
            if e.tag == "{jabber:client}message" and e.find("{jabber:client}body") is not None]


async def converse(sender, recipient, n, prefix="m", batch=200):
    """``n`` chat messages, sent in batches; returns once the recipient has
    them all (each was archived before it was delivered)."""
    start = len(chats(recipient))
    for first in range(0, n, batch):
        for i in range(first, min(n, first + batch)):
            sender.send_message(mto=recipient.boundjid.bare, mbody=f"{prefix}{i}", mtype="chat")
        for _ in range(600):
            if len(chats(recipient)) - start >= min(n, first + batch):
                break
            await asyncio.sleep(0.05)
    got = chats(recipient)[start:]
    assert [e.find("{jabber:client}body").text for e in got] == [f"{prefix}{i}" for i in range(n)]
    return got


async def page_all(client, reverse=False, max_=50, **query):
    """Every archived message as (archive id, body), paged by slixmpp."""
    got = []
    async for result in client["xep_0313"].iterate(reverse=reverse, rsm={"max": max_}, **query):
        forwarded = result["mam_result"]["forwarded"]["stanza"]
        got.append((result["mam_result"]["id"], forwarded["body"]))
    return got


def test_thousands_of_messages_page_back_whole_both_ways(server):
    jids = people(server, "alice", "bob")

    async def scenario():
        alice, bob = await connect(server, f"{jids['alice']}/phone", f"{jids['bob']}/pc")
        try:
            delivered = await converse(alice, bob, MANY)
            stamped = [e.find(f"{SID}stanza-id") for e in delivered]
            assert all(s is not None and s.get("by") == jids["bob"] for s in stamped)
            forwards = await page_all(bob)
            backwards = await page_all(bob, reverse=True)
            small_pages = await page_all(alice, max_=7)
        finally:
            await close_all(alice, bob)
        ids = [i for i, _ in forwards]
        assert len(ids) == MANY and len(set(ids)) == MANY, "a gap or a duplicate"
        assert [b for _, b in forwards] == [f"m{i}" for i in range(MANY)]
        assert ids == [s.get("id") for s in stamped]  # delivered with the archive's ids
        assert backwards == forwards[::-1]
        assert [b for _, b in small_pages] == [f"m{i}" for i in range(MANY)]
    run(scenario())


def test_a_page_fetched_by_time_and_partner(server):
    jids = people(server, "alice", "bob", "carol")

    async def scenario():
        alice, bob, carol = await connect(server, f"{jids['alice']}/a", f"{jids['bob']}/b",
                                          f"{jids['carol']}/c")
        try:
            await converse(alice, bob, 30, prefix="a")
            await converse(carol, bob, 20, prefix="c")
            from_carol = await page_all(bob, with_jid=jids["carol"], max_=8)
            fields = await bob["xep_0313"].get_fields()
        finally:
            await close_all(alice, bob, carol)
        assert [b for _, b in from_carol] == [f"c{i}" for i in range(20)]
        assert {"with", "start", "end", "before-id", "after-id", "ids"} <= set(fields.get_fields())
    run(scenario())


def test_preferences_decide_what_is_archived(server):
    jids = people(server, "alice", "bob", "carol")

    async def scenario():
        alice, bob, carol = await connect(server, f"{jids['alice']}/a", f"{jids['bob']}/b",
                                          f"{jids['carol']}/c")
        try:
            await bob["xep_0441"].set_preferences(default="always", never=[jids["carol"]])
            default, always, never = await bob["xep_0441"].get_preferences()
            await converse(alice, bob, 3, prefix="a")
            delivered = await converse(carol, bob, 3, prefix="c")
            archived = await page_all(bob)
        finally:
            await close_all(alice, bob, carol)
        assert (default, {str(j) for j in never}, set(always)) == ("always", {jids["carol"]}, set())
        assert [b for _, b in archived] == ["a0", "a1", "a2"]
        assert all(e.find(f"{SID}stanza-id") is None for e in delivered)
    run(scenario())


def test_carbons_and_a_second_resource_see_one_archive_item(server):
    jids = people(server, "alice", "bob")

    async def scenario():
        alice, alice2, bob = await connect(server, f"{jids['alice']}/phone",
                                           f"{jids['alice']}/laptop", f"{jids['bob']}/pc")
        try:
            await alice2["xep_0280"].enable()
            await converse(bob, alice, 1, prefix="to-alice")
            carbon_seen = [e for e in alice2.inbox if e.tag == "{jabber:client}message"]
            await alice.settle()
            alice.send_message(mto=jids["bob"], mbody="from-phone", mtype="chat")
            await bob.expect(lambda e: e.findtext("{jabber:client}body") == "from-phone")
            await alice2.settle()
            sent = [e for e in alice2.inbox if e.find("{urn:xmpp:carbons:2}sent") is not None]
            archived = await page_all(alice)
        finally:
            await close_all(alice, alice2, bob)
        assert [b for _, b in archived] == ["to-alice0", "from-phone"]
        assert carbon_seen  # the laptop got the message (a copy or the original)
        [copy] = sent
        inner = copy.find("{urn:xmpp:carbons:2}sent/{urn:xmpp:forward:0}forwarded/"
                          "{jabber:client}message")
        assert inner.find(f"{SID}stanza-id").get("id") == archived[1][0]
    run(scenario())


def test_an_unknown_id_and_a_malformed_form_are_refused(server):
    jids = people(server, "bob")

    async def scenario():
        [bob] = await connect(server, f"{jids['bob']}/pc")
        try:
            with pytest.raises(IqError) as unknown:
                await bob["xep_0313"].retrieve(rsm={"after": "999999999"})
            iq = bob.Iq()
            iq["type"] = "set"
            query = ET.SubElement(iq.xml, f"{{{MAM}}}query")
            query.append(ET.fromstring(
                "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>"
                f"<value>{MAM}</value></field><field var='start'><value>soon</value></field></x>"))
            with pytest.raises(IqError) as malformed:
                await iq.send(timeout=10)
            answer = await bob["xep_0313"].retrieve(rsm={"max": "100000"})
        finally:
            await close_all(bob)
        assert unknown.value.iq["error"]["condition"] == "item-not-found"
        assert malformed.value.iq["error"]["condition"] == "bad-request"
        assert malformed.value.iq["error"]["text"] == "invalid timestamp"
        assert answer["mam_fin"]["complete"] in (True, "true")
    run(scenario())


@pytest.mark.tcp_only("one restart per module is enough; it kills the server under all clients")
def test_a_sigkill_in_the_middle_loses_no_archived_message(make_xmppd):
    server = make_xmppd({"server": {"components": COMPONENTS}}, users=())
    jids = people(server, "alice", "bob")

    async def before():
        alice, bob = await connect(server, f"{jids['alice']}/a", f"{jids['bob']}/b")
        try:
            delivered = await converse(alice, bob, 500, prefix="before")
        finally:
            alice.abort()
            bob.abort()
        return [e.find(f"{SID}stanza-id").get("id") for e in delivered]

    async def after():
        alice, bob = await connect(server, f"{jids['alice']}/a", f"{jids['bob']}/b")
        try:
            await converse(alice, bob, 500, prefix="after")
            forwards = await page_all(bob, max_=50)
            backwards = await page_all(bob, reverse=True, max_=33)
            sender_side = await page_all(alice)
        finally:
            await close_all(alice, bob)
        return forwards, backwards, sender_side

    first_ids = run(before())
    server.kill()  # every one of them was delivered, so archived first
    assert server.process.returncode == -9
    server.start()
    forwards, backwards, sender_side = run(after())
    expected = [f"before{i}" for i in range(500)] + [f"after{i}" for i in range(500)]
    assert [b for _, b in forwards] == expected
    assert [i for i, _ in forwards][:500] == first_ids
    assert len({i for i, _ in forwards}) == 1000
    assert backwards == forwards[::-1]
    assert [b for _, b in sender_side] == expected
