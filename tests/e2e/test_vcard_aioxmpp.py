"""vcard-temp (XEP-0054) and the XEP-0153 avatar hash end to end, seen
through aioxmpp 0.13's VCardService and its vcard-temp:x:update payload, and
across libraries (a vCard aioxmpp stores is the one slixmpp reads)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid

import pytest

aioxmpp = pytest.importorskip("aioxmpp")
import aioxmpp.avatar.xso  # noqa: E402,F401 - parses <x xmlns='vcard-temp:x:update'/> in presence
import aioxmpp.connector  # noqa: E402
import aioxmpp.vcard  # noqa: E402
import aioxmpp.vcard.xso  # noqa: E402

from conftest import PASSWORD  # noqa: E402
from slixclient import IMClient, close_all  # noqa: E402

pytestmark = pytest.mark.all_transports  # tcp, websocket, bosh (conftest)
COMPONENTS = "disco ping roster presence messaging vcard vcard_update"
TIMEOUT = 10


def run(coro, server=None):
    try:
        return asyncio.run(asyncio.wait_for(coro, 60))
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


class Session:
    """One aioxmpp client with its roster, presence and vCard services."""

    def __init__(self, server, jid: str):
        self.jid = aioxmpp.JID.fromstr(jid)
        self.bare = self.jid.bare()
        self.client = aioxmpp.Client(
            self.jid, aioxmpp.make_security_layer(PASSWORD, no_verify=True),
            override_peer=[(server.client_host, server.client_port, aioxmpp.connector.STARTTLSConnector())],
            max_initial_attempts=1)
        self.roster = self.client.summon(aioxmpp.RosterClient)
        self.presence = self.client.summon(aioxmpp.PresenceClient)
        self.presence_server = self.client.summon(aioxmpp.PresenceServer)
        self.vcards = self.client.summon(aioxmpp.vcard.VCardService)
        self.presences: asyncio.Queue = asyncio.Queue()
        for signal in (self.presence.on_available, self.presence.on_changed):
            signal.connect(lambda peer, stanza: self.presences.put_nowait((peer, stanza)))
        self.requests: asyncio.Queue = asyncio.Queue()
        self.roster.on_subscribe.connect(lambda stanza: self.requests.put_nowait(stanza))
        self.presence_server.set_presence(aioxmpp.PresenceState(True))

    async def presence_from(self, peer, photo: str) -> aioxmpp.Presence:
        """The next presence from ``peer`` whose XEP-0153 photo is ``photo``."""
        async def wait():
            while True:
                who, stanza = await self.presences.get()
                x = stanza.xep0153_x
                if who == peer and x is not None and (x.photo or "") == photo:
                    return stanza
        try:
            return await asyncio.wait_for(wait(), TIMEOUT)
        except asyncio.TimeoutError:
            raise AssertionError(f"{self.jid}: no presence from {peer} with photo {photo!r}") from None


async def login(stack, server, *jids):
    sessions = [Session(server, jid) for jid in jids]
    await asyncio.gather(*(stack.enter_async_context(s.client.connected()) for s in sessions))
    return sessions


def photo_vcard(image: bytes):
    vcard = aioxmpp.vcard.xso.VCard()
    vcard.set_photo_data("image/jpeg", image)
    return vcard


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def test_a_photo_stored_with_aioxmpp_is_read_back_byte_exact_by_another_user(server):
    who = people(server, "alice", "bob")

    async def main():
        async with contextlib.AsyncExitStack() as stack:
            alice, bob = await login(stack, server, who["alice"] + "/phone", who["bob"] + "/pc")
            assert (await bob.vcards.get_vcard(alice.bare)).get_photo_data() is None
            image = os.urandom(40_000)
            await alice.vcards.set_vcard(photo_vcard(image))
            got = await bob.vcards.get_vcard(alice.bare)
            assert got.get_photo_data() == image
            assert got.get_photo_mime_type() == "image/jpeg"
            assert (await alice.vcards.get_vcard()).get_photo_data() == image
    run(main(), server)


def test_a_vcard_aioxmpp_stores_is_the_one_slixmpp_reads(server):
    who = people(server, "alice", "bob")

    async def main():
        async with contextlib.AsyncExitStack() as stack:
            (alice,) = await login(stack, server, who["alice"] + "/phone")
            image = os.urandom(12_345)
            await alice.vcards.set_vcard(photo_vcard(image))
            bob = await IMClient.login(server, who["bob"] + "/pc", plugins=("xep_0054",))
            try:
                reply = await bob.plugin["xep_0054"].get_vcard(who["alice"], cached=False,
                                                                timeout=TIMEOUT)
                assert reply["vcard_temp"]["PHOTO"]["BINVAL"] == image
            finally:
                await close_all(bob)
    run(main(), server)


def test_the_photo_hash_reaches_a_subscribed_aioxmpp_contact(server):
    who = people(server, "alice", "bob")

    async def main():
        async with contextlib.AsyncExitStack() as stack:
            alice, bob = await login(stack, server, who["alice"] + "/phone", who["bob"] + "/pc")
            bob.roster.subscribe(alice.bare)
            await asyncio.wait_for(alice.requests.get(), TIMEOUT)
            alice.roster.approve(bob.bare)
            await bob.presence_from(alice.jid, "")  # no vCard yet: "no avatar"
            image = os.urandom(8_000)
            await alice.vcards.set_vcard(photo_vcard(image))
            alice.presence_server.set_presence(aioxmpp.PresenceState(True, aioxmpp.PresenceShow.AWAY))
            stanza = await bob.presence_from(alice.jid, sha1(image))
            assert stanza.show == aioxmpp.PresenceShow.AWAY
    run(main(), server)
