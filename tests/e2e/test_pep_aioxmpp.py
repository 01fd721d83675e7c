"""XEP-0163 PEP end to end with aioxmpp 0.13: its AvatarService publishes an
XEP-0084 avatar and another account's AvatarService (which claims the
metadata node with +notify through aioxmpp's EntityCapsService) hears of it,
while a resource whose caps ask for nothing hears nothing; an OMEMO device
list published with aioxmpp's PEPClient on an open node is fetched by a
contact with PubSubClient — a second client library's view of what
test_pep_slixmpp.py checks."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest

aioxmpp = pytest.importorskip("aioxmpp")
import aioxmpp.avatar  # noqa: E402
import aioxmpp.connector  # noqa: E402
import aioxmpp.entitycaps  # noqa: E402
import aioxmpp.errors  # noqa: E402
import aioxmpp.pep  # noqa: E402
import aioxmpp.ping  # noqa: E402
import aioxmpp.pubsub  # noqa: E402
import aioxmpp.pubsub.xso  # noqa: E402
import aioxmpp.xso as xso  # noqa: E402

from conftest import PASSWORD  # noqa: E402

pytestmark = pytest.mark.all_transports  # tcp, websocket, bosh (conftest)
COMPONENTS = "disco ping roster presence messaging caps pep"
TIMEOUT = 10
OMEMO = "eu.siacs.conversations.axolotl"
DEVICES = f"{OMEMO}.devicelist"
AVATAR_METADATA = "urn:xmpp:avatar:metadata"
# a 1x1 PNG
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
                    "0000000d49444154789c6360000002000100e221bc330000000049454e44ae426082")


class Device(xso.XSO):
    TAG = (OMEMO, "device")
    id_ = xso.Attr("id")


@aioxmpp.pubsub.xso.as_payload_class
class DeviceList(xso.XSO):
    """An OMEMO (XEP-0384, siacs namespace) device list."""

    TAG = (OMEMO, "list")
    devices = xso.ChildList([Device])


@pytest.fixture(scope="module")
def server(make_xmppd_module):
    return make_xmppd_module({"server": {"components": COMPONENTS}}, users=())


def run(coro, server=None):
    try:
        return asyncio.run(asyncio.wait_for(coro, 60))
    except BaseException as failure:
        if server is not None:
            failure.add_note(f"--- xmppd log tail ---\n{server.log_tail(60)}")
        raise


def people(server, *names: str) -> dict[str, str]:
    tag = uuid.uuid4().hex[:6]
    jids = {name: f"{name}{tag}@localhost" for name in names}
    server.addusers(jids.values())
    return jids


class Session:
    """One aioxmpp client with the services a PEP client uses."""

    def __init__(self, server, jid: str, avatars: bool):
        self.jid = aioxmpp.JID.fromstr(jid)
        self.client = aioxmpp.Client(
            self.jid, aioxmpp.make_security_layer(PASSWORD, no_verify=True),
            override_peer=[(server.client_host, server.client_port, aioxmpp.connector.STARTTLSConnector())],
            max_initial_attempts=1)
        self.roster = self.client.summon(aioxmpp.RosterClient)
        self.presence = self.client.summon(aioxmpp.PresenceServer)
        self.client.summon(aioxmpp.EntityCapsService)
        self.pep = self.client.summon(aioxmpp.PEPClient)
        self.pubsub = self.client.summon(aioxmpp.PubSubClient)
        self.avatar = self.client.summon(aioxmpp.AvatarService) if avatars else None
        self.events: list[tuple] = []
        self._got = asyncio.Event()
        self.pubsub.on_item_published.connect(self._event)
        self.metadata: list[tuple] = []
        if self.avatar is not None:
            self.avatar.on_metadata_changed.connect(self._metadata)
        self.presence.set_presence(aioxmpp.PresenceState(True))

    def _event(self, jid, node, item, *, message=None) -> None:
        self.events.append((jid, node, item))
        self._got.set()

    def _metadata(self, jid, metadata) -> None:
        self.metadata.append((jid, metadata))
        self._got.set()

    async def wait(self, predicate, what: str):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"{self.jid}: no {what} within {TIMEOUT}s")
            self._got.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._got.wait(), min(remaining, 0.2))


async def befriend(a: Session, b: Session) -> None:
    """Mutual presence subscription, waited for on both rosters."""
    for asker, contact in ((a, b), (b, a)):
        contact.roster.on_subscribe.connect(
            lambda stanza, contact=contact: contact.roster.approve(stanza.from_.bare()))
        asker.roster.subscribe(contact.jid.bare())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT

    def state(s: Session, other: Session) -> str:
        item = s.roster.items.get(other.jid.bare())
        return item.subscription if item is not None else "none"
    while state(a, b) != "both" or state(b, a) != "both":
        assert loop.time() < deadline, (state(a, b), state(b, a))
        await asyncio.sleep(0.05)


def test_an_avatar_reaches_the_resource_that_claimed_the_node_and_not_the_other(server):
    who = people(server, "alice", "bob")

    async def main():
        async with contextlib.AsyncExitStack() as stack:
            alice = Session(server, who["alice"] + "/pc", avatars=True)
            bob = Session(server, who["bob"] + "/phone", avatars=True)
            plain = Session(server, who["bob"] + "/laptop", avatars=False)
            for s in (alice, bob, plain):
                await stack.enter_async_context(s.client.connected())
            await befriend(alice, bob)
            avatar_set = aioxmpp.avatar.AvatarSet()
            avatar_set.add_avatar_image("image/png", image_bytes=PNG)
            await alice.avatar.publish_avatar_set(avatar_set)
            alice_bare = alice.jid.bare()
            await bob.wait(lambda: any(j == alice_bare and m for j, m in bob.metadata),
                           "avatar metadata of alice")
            [descriptor] = [m for j, m in bob.metadata if j == alice_bare][-1]
            assert descriptor.normalized_id == avatar_set.png_id
            assert await descriptor.get_image_bytes() == PNG
            # the other resource of bob advertised no +notify: nothing came
            await aioxmpp.ping.ping(plain.client, aioxmpp.JID.fromstr("localhost"))
            await asyncio.sleep(0.3)
            assert [e for e in plain.events if e[0] == alice_bare] == []
    run(main(), server)


def test_an_omemo_device_list_on_an_open_node_is_fetched_by_a_contact(server):
    who = people(server, "alice", "bob")

    async def main():
        async with contextlib.AsyncExitStack() as stack:
            alice = Session(server, who["alice"] + "/pc", avatars=False)
            bob = Session(server, who["bob"] + "/pc", avatars=False)
            for s in (alice, bob):
                await stack.enter_async_context(s.client.connected())
            await befriend(alice, bob)
            devices = DeviceList()
            for number in ("11", "22"):
                device = Device()
                device.id_ = number
                devices.devices.append(device)
            await alice.pep.publish(DEVICES, devices, id_="current", access_model="open")
            got = await bob.pubsub.get_items(alice.jid.bare(), DEVICES)
            [item] = got.payload.items
            assert item.id_ == "current"
            assert [d.id_ for d in item.registered_payload.devices] == ["11", "22"]
            # the precondition holds on the next publish too (the node is open)
            await alice.pep.publish(DEVICES, devices, id_="current", access_model="open")
            # and asking for another model is a precondition that is not met
            with pytest.raises(aioxmpp.errors.XMPPCancelError) as refused:
                await alice.pep.publish(DEVICES, devices, id_="current",
                                        access_model="whitelist")
            assert refused.value.condition == aioxmpp.ErrorCondition.CONFLICT
    run(main(), server)
