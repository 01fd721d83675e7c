"""vcard-temp (XEP-0054) and vCard-based avatars (XEP-0153) end to end with
slixmpp's xep_0054 and xep_0153 plugins against a real ``twistd xmppd``:
a photo published by one user is read back byte for byte by another, its
hash reaches subscribed contacts in presence, it survives ``kill -9``, and
``xmppd deluser`` leaves no trace of it in the SQLite file.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import uuid
import xml.etree.ElementTree as ET

import pytest

pytest.importorskip("slixmpp")

from slixmpp.exceptions import IqError  # noqa: E402

from slixclient import IMClient, close_all, presence, roster_push  # noqa: E402

pytestmark = pytest.mark.all_transports  # tcp, websocket, bosh (conftest)
COMPONENTS = "disco ping roster presence messaging vcard vcard_update"
UPDATE = "{vcard-temp:x:update}"


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
    """Fresh accounts for one test: name → bare JID."""
    tag = uuid.uuid4().hex[:6]
    jids = {name: f"{name}{tag}@localhost" for name in names}
    server.addusers(jids.values())
    return jids


async def login(server, jid, plugins=("xep_0054",)):
    client = await IMClient.login(server, jid, plugins=plugins)
    await client.fetch_roster()
    return client


async def publish_photo(client, image: bytes, name: str = "Alice") -> None:
    vcard = client.plugin["xep_0054"].make_vcard()
    vcard["FN"] = name
    vcard["PHOTO"]["TYPE"] = "image/png"
    vcard["PHOTO"]["BINVAL"] = image
    await client.plugin["xep_0054"].publish_vcard(vcard, timeout=10)


async def fetch(client, jid: str):
    """The vCard of ``jid`` as slixmpp parses it, asked of the server."""
    reply = await client.plugin["xep_0054"].get_vcard(jid, cached=False, timeout=10)
    return reply["vcard_temp"]


async def subscribe(asker, contact) -> None:
    """``asker`` gets ``contact``'s presence (a complete RFC 6121 handshake)."""
    a, c = asker.boundjid.bare, contact.boundjid.bare
    asker.send_presence(pto=c, ptype="subscribe")
    await contact.expect(presence(a, "subscribe"))
    contact.send_presence(pto=a, ptype="subscribed")
    await asker.expect(roster_push(c, ask=None))
    await asker.expect(presence(c, "subscribed"))


def photo_of(stanza: ET.Element) -> str | None:
    """The XEP-0153 photo of a presence (None when it has none)."""
    x = stanza.find(f"{UPDATE}x")
    photo = None if x is None else x.find(f"{UPDATE}photo")
    return None if photo is None else (photo.text or "")


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def test_a_photo_published_with_xep_0054_is_read_back_byte_exact_by_another_user(server):
    who = people(server, "alice", "bob")

    async def main():
        alice = await login(server, who["alice"] + "/phone")
        bob = await login(server, who["bob"] + "/pc")
        try:
            empty = await fetch(bob, who["alice"])  # no vCard yet: an empty one
            assert list(empty.xml) == []
            image = os.urandom(30_000)
            await publish_photo(alice, image)
            vcard = await fetch(bob, who["alice"])
            assert vcard["FN"] == "Alice"
            assert vcard["PHOTO"]["TYPE"] == "image/png"
            assert vcard["PHOTO"]["BINVAL"] == image
            own = await fetch(alice, who["alice"])
            assert own["PHOTO"]["BINVAL"] == image
        finally:
            await close_all(alice, bob)
    run(main(), server)


def test_the_server_puts_the_photo_hash_into_presence_for_a_subscribed_contact(server):
    """alice's client knows nothing of XEP-0153 (xep_0054 only): the hash bob's
    xep_0153 plugin sees is the server's."""
    who = people(server, "alice", "bob")

    async def main():
        alice = await login(server, who["alice"] + "/phone")
        bob = await login(server, who["bob"] + "/pc", plugins=("xep_0054", "xep_0153"))
        updates = asyncio.Queue()
        bob.add_event_handler("vcard_avatar_update",
                              lambda pres: updates.put_nowait(pres["vcard_temp_update"]["photo"]))
        try:
            await bob.online()
            await alice.online()
            await subscribe(bob, alice)
            first = await bob.expect(presence(alice.boundjid.full))
            assert photo_of(first) == ""  # no vCard: "no avatar"
            image = os.urandom(20_000)
            await publish_photo(alice, image)
            alice.send_presence(pstatus="new face")
            got = await bob.expect(presence(alice.boundjid.full))
            assert got.findtext("{jabber:client}status") == "new face"
            assert photo_of(got) == sha1(image)
            seen = []
            while sha1(image) not in seen:  # what the plugin told the application
                seen.append(await asyncio.wait_for(updates.get(), 10))
            # and what the hash names is what bob fetches
            vcard = await fetch(bob, who["alice"])
            assert sha1(vcard["PHOTO"]["BINVAL"]) == sha1(image)
        finally:
            await close_all(alice, bob)
    run(main(), server)


def test_xep_0153_set_avatar_reaches_the_contact_with_its_hash(server):
    """slixmpp's own XEP-0153 support: it publishes the vCard and sends presence
    (first with an ``x`` without photo, which the server completes, then with
    its own hash, which the server leaves alone)."""
    who = people(server, "alice", "bob")

    async def main():
        alice = await login(server, who["alice"] + "/phone", plugins=("xep_0054", "xep_0153"))
        bob = await login(server, who["bob"] + "/pc")
        try:
            await bob.online()
            await alice.online()
            await subscribe(bob, alice)
            await bob.expect(presence(alice.boundjid.full))
            image = os.urandom(5_000)
            await alice.plugin["xep_0153"].set_avatar(avatar=image, mtype="image/png", timeout=10)

            def with_hash(e):
                return presence(alice.boundjid.full)(e) and photo_of(e) == sha1(image)
            with_hash.__doc__ = "alice's presence with the new photo's hash"
            await bob.expect(with_hash)
            assert all(photo_of(e) in ("", sha1(image))
                       for e in bob.received(presence(alice.boundjid.full)))
        finally:
            await close_all(alice, bob)
    run(main(), server)


def test_a_vcard_survives_kill_9_and_restart(make_xmppd):
    server = make_xmppd({"server": {"components": COMPONENTS}},
                        users=("alice@localhost", "bob@localhost"))
    image = os.urandom(10_000)

    async def before():
        alice = await login(server, "alice@localhost/phone")
        try:
            await publish_photo(alice, image)  # acknowledged: the write is durable
            server.kill()
        finally:
            alice.abort()
    run(before(), server)
    assert server.process.returncode == -9
    server.start()

    async def after():
        bob = await login(server, "bob@localhost/pc")
        try:
            vcard = await fetch(bob, "alice@localhost")
            assert vcard["PHOTO"]["BINVAL"] == image
        finally:
            await close_all(bob)
    run(after(), server)


def rows_mentioning(path, text: str) -> list[tuple]:
    """Every row of every table of the SQLite file with ``text`` in any column."""
    db = sqlite3.connect(path)
    try:
        found = []
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'"):
            for row in db.execute(f"SELECT * FROM {table}"):
                if any(text in (v if isinstance(v, str) else
                                v.decode("utf-8", "replace") if isinstance(v, bytes) else "")
                       for v in row):
                    found.append((table, *row))
        return found
    finally:
        db.close()


def test_deluser_leaves_no_row_of_an_account_with_a_vcard(make_xmppd):
    server = make_xmppd({"server": {"components": COMPONENTS}},
                        users=("alice@localhost", "bob@localhost"))
    database = server.data_dir / "xmppd.sqlite3"

    async def publish():
        alice = await login(server, "alice@localhost/phone")
        try:
            await publish_photo(alice, os.urandom(1000))
        finally:
            await close_all(alice)
    run(publish(), server)
    assert [r[0] for r in rows_mentioning(database, "alice@localhost")] != []
    assert any("vcard" in map(str, row) for row in rows_mentioning(database, "alice@localhost"))
    result = server.admin("deluser", "alice@localhost")
    assert "deleted alice@localhost" in result.stdout
    assert rows_mentioning(database, "alice@localhost") == []

    async def after():
        bob = await login(server, "bob@localhost/pc")
        try:
            with pytest.raises(IqError) as refused:  # the account is gone
                await fetch(bob, "alice@localhost")
            assert refused.value.condition == "service-unavailable"
        finally:
            await close_all(bob)
    run(after(), server)
