"""Profiles kept in PEP, end to end with slixmpp against a real ``twistd
xmppd``: bookmarks published with XEP-0402 are read by an XEP-0048 client
(private XML, XEP-0049; and XEP-0048 over PEP) after ``kill -9`` and a
restart, and the other way round; a vcard-temp photo set by an old client
(``xep_0054``) reaches a contact as a XEP-0084 avatar (``xep_0084``), and a
XEP-0084 avatar is the vCard photo old clients read."""

from __future__ import annotations

import asyncio
import hashlib
import struct
import uuid
import xml.etree.ElementTree as ET
import zlib

import pytest

pytest.importorskip("slixmpp")
from slixmpp.plugins.xep_0004 import Form  # noqa: E402
from slixmpp.plugins.xep_0048 import Bookmarks  # noqa: E402
from slixmpp.plugins.xep_0402.stanza import Conference  # noqa: E402

from slixclient import IMClient, close_all, presence, roster_push  # noqa: E402

pytestmark = pytest.mark.all_transports  # tcp, websocket, bosh (conftest)
COMPONENTS = ("disco ping roster presence messaging private vcard vcard_update "
              "caps pep bookmarks vcard4")
BOOKMARKS2 = "urn:xmpp:bookmarks:1"
AVATAR_METADATA = "urn:xmpp:avatar:metadata"
EVENT = "{http://jabber.org/protocol/pubsub#event}"
PEP_PLUGINS = ("xep_0060", "xep_0115", "xep_0163")


def run(coro, server=None):
    try:
        return asyncio.run(asyncio.wait_for(coro, 90))
    except BaseException as failure:
        if server is not None:
            failure.add_note(f"--- xmppd log tail ---\n{server.log_tail(60)}")
        raise


@pytest.fixture(scope="module")
def server(make_xmppd_module):
    return make_xmppd_module({"server": {"components": COMPONENTS}}, users=())


def people(server, *names):
    tag = uuid.uuid4().hex[:6]
    jids = {name: f"{name}{tag}@localhost" for name in names}
    server.addusers(jids.values())
    return jids


async def connect(server, jid, plugins=(), notify=()):
    """Log in, say in caps which nodes to be notified of, send presence."""
    client = await IMClient.login(server, jid, plugins=PEP_PLUGINS + tuple(plugins))
    for node in notify:
        client.plugin["xep_0163"].add_interest(node)
    await client.plugin["xep_0115"].update_caps(broadcast=False)
    await client.fetch_roster()
    await client.online()
    return client


async def befriend(a, b):
    """Mutual presence subscription between two accounts."""
    for asker, contact in ((a, b), (b, a)):
        x, y = asker.boundjid.bare, contact.boundjid.bare
        asker.send_presence(pto=y, ptype="subscribe")
        await contact.expect(presence(x, "subscribe"))
        contact.send_presence(pto=x, ptype="subscribed")
        await asker.expect(roster_push(y, ask=None))


def event_of(owner: str, node: str):
    def match(e: ET.Element) -> bool:
        if e.tag != "{jabber:client}message" or e.get("from") != owner:
            return False
        items = e.find(f"{EVENT}event/{EVENT}items")
        return items is not None and items.get("node") == node
    match.__doc__ = f"a PEP event of {owner} node {node}"
    return match


def bookmarks2_options() -> Form:
    """XEP-0402 §3's publish-options."""
    form = Form()
    form["type"] = "submit"
    form.add_field(var="FORM_TYPE", ftype="hidden",
                   value="http://jabber.org/protocol/pubsub#publish-options")
    form.add_field(var="pubsub#persist_items", value="true")
    form.add_field(var="pubsub#max_items", value="max")
    form.add_field(var="pubsub#send_last_published_item", value="never")
    form.add_field(var="pubsub#access_model", value="whitelist")
    return form


async def publish_bookmark(client, room: str, name: str, nick: str, autojoin: bool = True):
    conference = Conference()
    conference["name"], conference["nick"], conference["autojoin"] = name, nick, autojoin
    await client.plugin["xep_0060"].publish(None, BOOKMARKS2, id=room, payload=conference,
                                            options=bookmarks2_options(), timeout=10)


async def bookmarks2_of(client) -> list[tuple[str, str, bool, str]]:
    """(room, name, autojoin, nick) of each XEP-0402 item, as slixmpp reads them."""
    reply = await client.plugin["xep_0060"].get_items(None, BOOKMARKS2, timeout=10)
    return [(item["id"], item["conference"]["name"], item["conference"]["autojoin"],
             item["conference"]["nick"]) for item in reply["pubsub"]["items"]]


def conferences(bookmarks) -> list[tuple[str, str, bool, str]]:
    return [(str(c["jid"]), c["name"], c["autojoin"], c["nick"]) for c in bookmarks["conferences"]]


def png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    rows = b"".join(b"\x00" + bytes(range(width)) for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


# -- bookmarks -----------------------------------------------------------------------

def test_xep_0402_bookmarks_are_read_with_xep_0048_after_kill_9_and_restart(make_xmppd):
    server = make_xmppd({"server": {"components": COMPONENTS}}, users=("alice@localhost",))

    async def before():
        modern = await IMClient.login(server, "alice@localhost/modern",
                                      plugins=("xep_0060", "xep_0402"))
        try:
            await publish_bookmark(modern, "council@conference.localhost", "Council", "Puck")
            await publish_bookmark(modern, "orchard@conference.localhost", "Orchard", "Puck",
                                   autojoin=False)
            server.kill()  # both publishes were acknowledged: durable
        finally:
            modern.abort()
    run(before(), server)
    assert server.process.returncode == -9
    server.start()

    async def after():
        old = await IMClient.login(server, "alice@localhost/old", plugins=("xep_0048",))
        try:
            private = await old.plugin["xep_0048"].get_bookmarks(method="xep_0049", timeout=10)
            assert conferences(private["private"]["bookmarks"]) == [
                ("council@conference.localhost", "Council", True, "Puck"),
                ("orchard@conference.localhost", "Orchard", False, "Puck")]
            pep = await old.plugin["xep_0048"].get_bookmarks(method="xep_0223", timeout=10)
            item = pep["pubsub"]["items"]["item"]
            assert item["id"] == "current"
            assert conferences(item["bookmarks"]) == conferences(private["private"]["bookmarks"])
        finally:
            await close_all(old)
    run(after(), server)


def test_xep_0048_bookmarks_in_private_xml_are_read_with_xep_0402_after_kill_9_and_restart(make_xmppd):
    server = make_xmppd({"server": {"components": COMPONENTS}}, users=("alice@localhost",))

    async def before():
        old = await IMClient.login(server, "alice@localhost/old", plugins=("xep_0048",))
        try:
            bookmarks = Bookmarks()
            bookmarks.add_conference("council@conference.localhost", "Puck", name="Council",
                                     autojoin=True)
            bookmarks.add_conference("orchard@conference.localhost", "Robin", name="Orchard")
            bookmarks.add_url("https://example.org/", name="Home")
            await old.plugin["xep_0048"].set_bookmarks(bookmarks, method="xep_0049", timeout=10)
            server.kill()
        finally:
            old.abort()
    run(before(), server)
    server.start()

    async def after():
        modern = await IMClient.login(server, "alice@localhost/modern",
                                      plugins=("xep_0060", "xep_0402", "xep_0048"))
        try:
            assert await bookmarks2_of(modern) == [
                ("council@conference.localhost", "Council", True, "Puck"),
                ("orchard@conference.localhost", "Orchard", False, "Robin")]
            # the url bookmark, which XEP-0402 cannot hold, is still there for old clients
            private = await modern.plugin["xep_0048"].get_bookmarks(method="xep_0049", timeout=10)
            assert [u["url"] for u in private["private"]["bookmarks"]["urls"]] == ["https://example.org/"]
        finally:
            await close_all(modern)
    run(after(), server)


def test_a_xep_0048_pep_client_and_a_xep_0402_client_see_each_others_changes(server):
    who = people(server, "alice")

    async def main():
        modern = await connect(server, who["alice"] + "/modern", ("xep_0402",), notify=[BOOKMARKS2])
        legacy = await connect(server, who["alice"] + "/legacy", ("xep_0048",),
                               notify=["storage:bookmarks"])
        try:
            bookmarks = Bookmarks()
            bookmarks.add_conference("room@conference.localhost", "Puck", name="Room", autojoin=True)
            await legacy.plugin["xep_0048"].set_bookmarks(bookmarks, method="xep_0223", timeout=10)
            note = await modern.expect(event_of(who["alice"], BOOKMARKS2))
            item = note.find(f"{EVENT}event/{EVENT}items/{EVENT}item")
            assert item.get("id") == "room@conference.localhost"
            assert item.find(f"{{{BOOKMARKS2}}}conference").get("name") == "Room"

            await publish_bookmark(modern, "other@conference.localhost", "Other", "Robin")
            note = await legacy.expect(lambda e: event_of(who["alice"], "storage:bookmarks")(e) and
                                       len(e.findall(".//{storage:bookmarks}conference")) == 2)
            rooms = [c.get("jid") for c in note.iter("{storage:bookmarks}conference")]
            assert rooms == ["room@conference.localhost", "other@conference.localhost"]
        finally:
            await close_all(modern, legacy)
    run(main(), server)


# -- avatars -----------------------------------------------------------------------

def test_a_vcard_photo_set_by_an_old_client_reaches_a_contact_as_a_xep_0084_avatar(server):
    who = people(server, "alice", "bob")

    async def main():
        alice = await connect(server, who["alice"] + "/old", ("xep_0054",))
        bob = await connect(server, who["bob"] + "/modern", ("xep_0084",))
        await befriend(alice, bob)
        try:
            image = png(24, 16)
            vcard = alice.plugin["xep_0054"].make_vcard()
            vcard["FN"] = "Alice"
            vcard["PHOTO"]["TYPE"] = "image/png"
            vcard["PHOTO"]["BINVAL"] = image
            await alice.plugin["xep_0054"].publish_vcard(vcard, timeout=10)

            note = await bob.expect(event_of(who["alice"], AVATAR_METADATA))
            info = note.find(f"{EVENT}event/{EVENT}items/{EVENT}item/"
                             f"{{{AVATAR_METADATA}}}metadata/{{{AVATAR_METADATA}}}info")
            assert info.attrib == {"id": hashlib.sha1(image).hexdigest(), "bytes": str(len(image)),
                                   "type": "image/png", "width": "24", "height": "16"}
            data = await bob.plugin["xep_0084"].retrieve_avatar(who["alice"], info.get("id"), timeout=10)
            assert data["pubsub"]["items"]["item"]["avatar_data"]["value"] == image
        finally:
            await close_all(alice, bob)
    run(main(), server)


def test_a_xep_0084_avatar_is_the_vcard_photo_and_presence_hash_old_clients_see(server):
    who = people(server, "alice", "bob")

    async def main():
        alice = await connect(server, who["alice"] + "/modern", ("xep_0084",))
        bob = await connect(server, who["bob"] + "/old", ("xep_0054",))
        await befriend(alice, bob)
        try:
            image = png(8, 8)
            avatar_id = alice.plugin["xep_0084"].generate_id(image)
            await alice.plugin["xep_0084"].publish_avatar(image, timeout=10)
            await alice.plugin["xep_0084"].publish_avatar_metadata(
                [{"id": avatar_id, "type": "image/png", "bytes": len(image)}], timeout=10)
            reply = await bob.plugin["xep_0054"].get_vcard(who["alice"], cached=False, timeout=10)
            assert reply["vcard_temp"]["PHOTO"]["BINVAL"] == image
            assert reply["vcard_temp"]["PHOTO"]["TYPE"] == "image/png"
            alice.send_presence(pstatus="new face")

            def with_hash(e):
                x = e.find("{vcard-temp:x:update}x/{vcard-temp:x:update}photo")
                return presence(alice.boundjid.full)(e) and x is not None and x.text == avatar_id
            with_hash.__doc__ = "alice's presence with the avatar's hash"
            await bob.expect(with_hash)
        finally:
            await close_all(alice, bob)
    run(main(), server)
