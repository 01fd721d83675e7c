"""XEP-0163 PEP end to end with slixmpp: avatars (XEP-0084), nicknames
(XEP-0172) and OMEMO device lists and bundles published by one client reach
or are fetched by contacts, with notifications filtered by the XEP-0115 caps
each client advertises (slixmpp's xep_0115 answers the server's verification
query itself)."""

from __future__ import annotations

import asyncio
import uuid
import xml.etree.ElementTree as ET

import pytest

pytest.importorskip("slixmpp")
from slixmpp.exceptions import IqError  # noqa: E402
from slixmpp.plugins.xep_0004 import Form  # noqa: E402
from slixmpp.xmlstream import ElementBase  # noqa: E402

from slixclient import IMClient, close_all, presence, roster_push  # noqa: E402

pytestmark = pytest.mark.all_transports  # tcp, websocket, bosh (conftest)
COMPONENTS = "disco ping roster presence messaging caps pep"
EVENT = "{http://jabber.org/protocol/pubsub#event}"
PUBSUB = "{http://jabber.org/protocol/pubsub}"
AVATAR_METADATA = "urn:xmpp:avatar:metadata"
NICK = "http://jabber.org/protocol/nick"
OMEMO = "eu.siacs.conversations.axolotl"
DEVICES = f"{OMEMO}.devicelist"
PEP_PLUGINS = ("xep_0060", "xep_0115", "xep_0163")


@pytest.fixture(scope="module")
def server(make_xmppd_module):
    return make_xmppd_module({"server": {"components": COMPONENTS}}, users=())


def run(coro, server=None):
    try:
        return asyncio.run(asyncio.wait_for(coro, 90))
    except BaseException as failure:
        if server is not None:
            failure.add_note(f"--- xmppd log tail ---\n{server.log_tail(60)}")
        raise


def people(server, *names):
    tag = uuid.uuid4().hex[:6]
    jids = {name: f"{name}{tag}@localhost" for name in names}
    server.addusers(jids.values())
    return jids


async def connect(server, jid, plugins=()):
    """Log in with the PEP plugins (and ``plugins``), let slixmpp compute its
    caps, then send initial presence (which carries them)."""
    client = await IMClient.login(server, jid, plugins=PEP_PLUGINS + tuple(plugins))
    await client.plugin["xep_0115"].update_caps(broadcast=False)
    await client.fetch_roster()
    await client.online()
    return client


async def befriend(a, a_others, b, b_others):
    """Mutual presence subscription between two accounts."""
    for asker, asker_others, contact, contact_others in ((a, a_others, b, b_others),
                                                         (b, b_others, a, a_others)):
        x, y = asker.boundjid.bare, contact.boundjid.bare
        asker.send_presence(pto=y, ptype="subscribe")
        await contact.expect(presence(x, "subscribe"))
        contact.send_presence(pto=x, ptype="subscribed")
        for client in (asker, *asker_others):
            await client.expect(roster_push(y, ask=None))


def event_of(owner: str, node: str):
    def match(e: ET.Element) -> bool:
        if e.tag != "{jabber:client}message" or e.get("from") != owner:
            return False
        items = e.find(f"{EVENT}event/{EVENT}items")
        return items is not None and items.get("node") == node
    match.__doc__ = f"a PEP event of {owner} node {node}"
    return match


def caps_query(e: ET.Element) -> bool:
    """a disco#info query from the server about the client's caps"""
    query = e.find("{http://jabber.org/protocol/disco#info}query")
    return (e.tag == "{jabber:client}iq" and e.get("type") == "get" and query is not None
            and "#" in (query.get("node") or ""))


def test_an_avatar_reaches_the_contacts_resource_that_asked_for_it_and_not_the_other(server):
    who = people(server, "alice", "bob")

    async def main():
        alice = await connect(server, who["alice"] + "/pc", ("xep_0084",))
        bob_notify = await connect(server, who["bob"] + "/phone", ("xep_0084",))
        bob_plain = await connect(server, who["bob"] + "/laptop")  # caps without +notify
        await befriend(alice, [], bob_notify, [bob_plain])
        try:
            image = b"\x89PNG fake avatar bytes"
            avatar_id = alice.plugin["xep_0084"].generate_id(image)
            await alice.plugin["xep_0084"].publish_avatar(image)
            await alice.plugin["xep_0084"].publish_avatar_metadata([
                {"id": avatar_id, "type": "image/png", "bytes": len(image)}])
            note = await bob_notify.expect(event_of(who["alice"], AVATAR_METADATA))
            assert note.get("to") == bob_notify.boundjid.full
            info = note.find(f"{EVENT}event/{EVENT}items/{EVENT}item/"
                             "{urn:xmpp:avatar:metadata}metadata/{urn:xmpp:avatar:metadata}info")
            assert info is not None and info.get("id") == avatar_id
            # the owner's own resource asked too
            await alice.expect(event_of(who["alice"], AVATAR_METADATA))
            await bob_plain.settle()
            assert bob_plain.received(event_of(who["alice"], AVATAR_METADATA)) == []
            # the data itself is fetched, not pushed
            data = await bob_notify.plugin["xep_0084"].retrieve_avatar(who["alice"], avatar_id)
            stored = data["pubsub"]["items"]["item"]["avatar_data"]["value"]
            assert stored == image
        finally:
            await close_all(alice, bob_notify, bob_plain)
    run(main(), server)


def test_a_resource_coming_online_later_gets_the_last_avatar(server):
    who = people(server, "alice", "bob")

    async def main():
        alice = await connect(server, who["alice"] + "/pc", ("xep_0084",))
        bob = await connect(server, who["bob"] + "/phone", ("xep_0084",))
        await befriend(alice, [], bob, [])
        await alice.plugin["xep_0084"].publish_avatar_metadata([
            {"id": "abc", "type": "image/png", "bytes": 10}])
        await bob.expect(event_of(who["alice"], AVATAR_METADATA))
        late = await connect(server, who["bob"] + "/tablet", ("xep_0084",))
        try:
            note = await late.expect(event_of(who["alice"], AVATAR_METADATA))
            assert note.get("to") == late.boundjid.full
            # its caps hash was verified before (the same client software):
            # the server did not ask this login what it means
            # three logins of the same client software: its caps hash was
            # asked about once at most (not at all if an earlier test's
            # client verified it already), never once per login
            asked = [q for c in (alice, bob, late) for q in c.received(caps_query)]
            assert late.received(caps_query) == [] and len(asked) <= 1
        finally:
            await close_all(alice, bob, late)
    run(main(), server)


def test_a_nickname_reaches_a_contact(server):
    who = people(server, "alice", "bob")

    async def main():
        alice = await connect(server, who["alice"] + "/pc", ("xep_0172",))
        bob = await connect(server, who["bob"] + "/pc", ("xep_0172",))
        await befriend(alice, [], bob, [])
        nicks = asyncio.get_running_loop().create_future()
        bob.add_event_handler("user_nick_publish", lambda msg: nicks.done() or nicks.set_result(
            msg["pubsub_event"]["items"]["item"]["nick"]["nick"]))
        try:
            await alice.plugin["xep_0172"].publish_nick("Alice in PEP")
            assert await asyncio.wait_for(nicks, 10) == "Alice in PEP"
        finally:
            await close_all(alice, bob)
    run(main(), server)


def test_an_omemo_device_list_and_bundle_on_open_nodes_are_fetched_by_a_contact(server):
    who = people(server, "alice", "bob", "carol")

    async def main():
        alice = await connect(server, who["alice"] + "/pc")
        bob = await connect(server, who["bob"] + "/pc")
        carol = await connect(server, who["carol"] + "/pc")  # no subscription at all
        await befriend(alice, [], bob, [])
        try:
            open_access = Form()
            open_access["type"] = "submit"
            open_access.add_field("FORM_TYPE", ftype="hidden",
                                  value="http://jabber.org/protocol/pubsub#publish-options")
            open_access.add_field("pubsub#access_model", value="open")
            devices = ET.fromstring(f"<list xmlns='{OMEMO}'><device id='1234'/></list>")
            await alice.plugin["xep_0060"].publish(None, DEVICES, id="current",
                                                   payload=devices, options=open_access)
            bundle = ET.fromstring(
                f"<bundle xmlns='{OMEMO}'><signedPreKeyPublic signedPreKeyId='1'>AAAA"
                "</signedPreKeyPublic><signedPreKeySignature>BBBB</signedPreKeySignature>"
                "<identityKey>CCCC</identityKey><prekeys><preKeyPublic preKeyId='1'>DDDD"
                "</preKeyPublic></prekeys></bundle>")
            await alice.plugin["xep_0060"].publish(None, f"{OMEMO}.bundles:1234", id="current",
                                                   payload=bundle, options=open_access)
            for reader in (bob, carol):  # open: the contact, and anyone
                got = await reader.plugin["xep_0060"].get_items(who["alice"], DEVICES)
                listed = got.xml.find(f"{PUBSUB}pubsub/{PUBSUB}items/{PUBSUB}item/{{{OMEMO}}}list")
                assert [d.get("id") for d in listed] == ["1234"]
                got = await reader.plugin["xep_0060"].get_items(who["alice"],
                                                                f"{OMEMO}.bundles:1234")
                key = got.xml.find(f"{PUBSUB}pubsub/{PUBSUB}items/{PUBSUB}item/"
                                   f"{{{OMEMO}}}bundle/{{{OMEMO}}}identityKey")
                assert key is not None and key.text == "CCCC"
            # a node left at the default (presence) access is not the stranger's to read
            await alice.plugin["xep_0060"].publish(
                None, "urn:example:private-ish", id="current",
                payload=ET.fromstring("<x xmlns='urn:example:private-ish'/>"))
            with pytest.raises(IqError) as refused:
                await carol.plugin["xep_0060"].get_items(who["alice"], "urn:example:private-ish")
            assert refused.value.iq["error"]["condition"] == "not-authorized"
        finally:
            await close_all(alice, bob, carol)
    run(main(), server)


class Notes(ElementBase):
    """Some client's private settings, stored with XEP-0223."""

    name = "notes"
    namespace = "urn:example:private-notes"
    plugin_attrib = "notes"
    interfaces = {"text"}
    sub_interfaces = {"text"}


def test_private_data_stored_with_xep_0223_is_the_owners_alone(server):
    who = people(server, "alice", "bob")

    async def main():
        alice = await connect(server, who["alice"] + "/pc", ("xep_0223",))
        laptop = await connect(server, who["alice"] + "/laptop", ("xep_0223",))
        bob = await connect(server, who["bob"] + "/pc")
        await befriend(alice, [laptop], bob, [])
        try:
            notes = Notes()
            notes["text"] = "only mine"
            await alice.plugin["xep_0223"].store(notes, node=Notes.namespace, id="current")
            got = await laptop.plugin["xep_0223"].retrieve(Notes.namespace)
            text = got.xml.find(f"{PUBSUB}pubsub/{PUBSUB}items/{PUBSUB}item/"
                                "{urn:example:private-notes}notes/{urn:example:private-notes}text")
            assert text is not None and text.text == "only mine"
            with pytest.raises(IqError) as refused:
                await bob.plugin["xep_0060"].get_items(who["alice"], Notes.namespace)
            assert refused.value.iq["error"]["condition"] == "not-allowed"
        finally:
            await close_all(alice, laptop, bob)
    run(main(), server)


def test_publishing_to_a_contacts_pep_node_is_forbidden(server):
    who = people(server, "alice", "bob")

    async def main():
        alice = await connect(server, who["alice"] + "/pc")
        bob = await connect(server, who["bob"] + "/pc")
        await befriend(alice, [], bob, [])
        try:
            with pytest.raises(IqError) as refused:
                await bob.plugin["xep_0060"].publish(
                    who["alice"], NICK, id="current",
                    payload=ET.fromstring(f"<nick xmlns='{NICK}'>Mallory</nick>"))
            assert refused.value.iq["error"]["condition"] == "forbidden"
        finally:
            await close_all(alice, bob)
    run(main(), server)
