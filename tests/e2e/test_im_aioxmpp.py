"""RFC 6121 end to end with aioxmpp 0.13: rosters, subscriptions, presence,
and the IM extensions (offline storage, blocking, carbons, private storage,
last activity), seen through aioxmpp's own services.

The point is a second, independent client library's view of the same
features test_im_slixmpp.py covers: aioxmpp's RosterClient, PresenceClient,
BlockingClient and IMDispatcher hold client-side state built from what the
server pushes, so a push with the wrong shape (a missing ``ask``, a wrong
``from``) shows up as state that never changes, not just as an odd stanza.
Raw IQs are used only where aioxmpp has no service (XEP-0012, and a roster
set carrying a JID aioxmpp itself would refuse to build).

Every test makes its own accounts, so tests never see each other's presence.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import re
import time
import uuid
from typing import Any, Callable

import pytest

aioxmpp = pytest.importorskip("aioxmpp")
import aioxmpp.blocking  # noqa: E402
import aioxmpp.bookmarks  # noqa: E402
import aioxmpp.carbons  # noqa: E402
import aioxmpp.connector  # noqa: E402
import aioxmpp.dispatcher  # noqa: E402
import aioxmpp.im.dispatcher  # noqa: E402
import aioxmpp.misc  # noqa: E402
import aioxmpp.ping  # noqa: E402
import aioxmpp.private_xml  # noqa: E402
import aioxmpp.roster.xso  # noqa: E402
import aioxmpp.xso as xso  # noqa: E402

from conftest import PASSWORD  # noqa: E402

pytestmark = pytest.mark.all_transports  # tcp, websocket, bosh (conftest)
COMPONENTS = "disco ping roster presence messaging offline carbons blocking private last"
TIMEOUT = 10
SERVER = aioxmpp.JID.fromstr("localhost")
#: RFC 6121 §3.1.5/§3.1.6: what approving a request adds on each side.
GAINS_TO = {"none": "to", "from": "both"}
GAINS_FROM = {"none": "from", "to": "both"}


# -- XSOs aioxmpp lacks ---------------------------------------------------------------

@aioxmpp.IQ.as_payload_class
class LastActivity(xso.XSO):
    """XEP-0012 ``<query xmlns='jabber:iq:last' seconds='…'>status</query>``."""

    TAG = ("jabber:iq:last", "query")
    seconds = xso.Attr("seconds", type_=xso.Integer(), default=None)
    text = xso.Text(default=None)


@aioxmpp.stanza.Error.as_application_condition
class Blocked(xso.XSO):
    """XEP-0191 §3.3: the application condition of a message to a JID one blocks."""

    TAG = ("urn:xmpp:blocking:errors", "blocked")


@aioxmpp.private_xml.Query.as_payload_class
class Notes(xso.XSO):
    """Some application's private data (XEP-0049), in a namespace of its own."""

    TAG = ("urn:xmppd:test:aioxmpp-notes", "notes")
    topic = xso.Attr("topic", default=None)
    text = xso.Text(default=None)


# -- plumbing -------------------------------------------------------------------------------

def run(coro, server=None):
    """Run a test's coroutine; on failure, show what the server logged."""
    try:
        return asyncio.run(asyncio.wait_for(coro, 60))
    except BaseException as failure:
        if server is not None:
            failure.add_note(f"--- xmppd log tail ---\n{server.log_tail(60)}")
        raise


@pytest.fixture(scope="module")
def server(make_xmppd_module):
    return make_xmppd_module({"server": {"components": COMPONENTS}}, users=())


def people(server, *names: str) -> dict[str, str]:
    """Fresh accounts for one test: name → bare JID."""
    tag = uuid.uuid4().hex[:6]
    jids = {name: f"{name}{tag}@localhost" for name in names}
    server.addusers(jids.values())
    return jids


class Recorder:
    """What one signal delivered, with a way to wait for a matching item.

    aioxmpp disconnects a signal handler that returns a true value, so
    :meth:`__call__` returns None.
    """

    def __init__(self, name: str, convert: Callable[..., Any] | None = None):
        self.name = name
        self.items: list[Any] = []
        self.seen: list[Any] = []  # everything, in order, never taken
        self._convert = convert
        self._changed = asyncio.Event()

    def __call__(self, *args: Any) -> None:
        item = self._convert(*args) if self._convert else args[0]
        self.items.append(item)
        self.seen.append(item)
        self._changed.set()

    async def expect(self, predicate: Callable[[Any], bool], what: str = "item") -> Any:
        """Take (remove and return) the first item matching ``predicate``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while True:
            for index, item in enumerate(self.items):
                if predicate(item):
                    del self.items[index]
                    return item
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"{self.name}: no {what} within {TIMEOUT}s; "
                                     f"have {self.items!r}")
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def matching(self, predicate: Callable[[Any], bool]) -> list[Any]:
        return [item for item in self.items if predicate(item)]


class Session:
    """One aioxmpp client (one resource) and what its services saw."""

    def __init__(self, server, jid: str, *, available: bool = True, services=()):
        self.jid = aioxmpp.JID.fromstr(jid)
        self.bare = self.jid.bare()
        self.client = aioxmpp.Client(
            self.jid, aioxmpp.make_security_layer(PASSWORD, no_verify=True),
            override_peer=[(server.client_host, server.client_port, aioxmpp.connector.STARTTLSConnector())],
            max_initial_attempts=1)
        # Summoned first so its initial roster get runs before the PresenceServer's
        # initial presence in before_stream_established (RFC 6121 §2.2's order).
        self.roster = self.client.summon(aioxmpp.RosterClient)
        self.presence = self.client.summon(aioxmpp.PresenceClient)
        self.presence_server = self.client.summon(aioxmpp.PresenceServer)

        self.roster_changes = Recorder(f"{jid} roster", self._snapshot)
        for kind in ("added", "subscription_state_changed", "removed", "name_changed"):
            getattr(self.roster, f"on_entry_{kind}").connect(
                functools.partial(self.roster_changes, kind))
        self.roster.on_initial_roster_received.connect(
            functools.partial(self.roster_changes, "initial", None))
        self.requests = Recorder(f"{jid} subscription presence")
        for kind in ("subscribe", "subscribed", "unsubscribe", "unsubscribed"):
            getattr(self.roster, f"on_{kind}").connect(self.requests)
        self.presences = Recorder(f"{jid} presence", lambda kind, peer, stanza: (kind, peer, stanza))
        for kind in ("available", "changed", "unavailable"):
            getattr(self.presence, f"on_{kind}").connect(functools.partial(self.presences, kind))
        self.messages = Recorder(f"{jid} messages")
        self.client.summon(aioxmpp.dispatcher.SimpleMessageDispatcher).register_callback(
            None, None, self.messages)
        self._im: Recorder | None = None
        for service in services:  # before login, so their before_stream_established runs
            self.client.summon(service)
        if available:
            self.presence_server.set_presence(aioxmpp.PresenceState(True))

    @staticmethod
    def _snapshot(kind: str, item) -> tuple:
        # The Item object is updated in place later; keep what it was now.
        if item is None:  # on_initial_roster_received
            return (kind, None, None, None, None)
        return (kind, item.jid, item.subscription, item.ask, item.name)

    def __repr__(self) -> str:
        return f"<Session {self.jid}>"

    def im(self) -> Recorder:
        """Messages as the IMDispatcher sees them (carbons unwrapped), as
        (message, peer, sent, source). Summoned after login on purpose: summoned
        before, IMDispatcher enables carbons by itself."""
        if self._im is None:
            self._im = Recorder(f"{self.jid} im", lambda message, peer, sent, source:
                                (message, peer, sent, source))
            dispatcher = self.client.summon(aioxmpp.im.dispatcher.IMDispatcher)
            dispatcher.message_filter.register(self._im, 0)
        return self._im

    async def ping(self) -> None:
        """A round trip: everything the server sent before the reply has arrived."""
        await aioxmpp.ping.ping(self.client, SERVER)

    async def iq(self, type_, payload, to=None):
        return await self.client.send(aioxmpp.IQ(type_=type_, payload=payload, to=to),
                                      timeout=TIMEOUT)

    def no_reconnect(self) -> None:
        """aioxmpp reconnects at once after a stream error (system-shutdown
        included) and, when the configured peer refuses, tries the default
        port too; a test restarting the server wants the session just gone."""
        self.client.on_stream_destroyed.connect(lambda *_: self.client.stop())

    def drop(self) -> None:
        """Lose the TCP connection: no </stream>, no unavailable presence.
        aioxmpp has no public handle on the transport, hence the private path."""
        self.client.stream._xmlstream.transport.abort()
        self.client.stop()  # no reconnect attempt


async def login(stack: contextlib.AsyncExitStack, server, *jids: str,
                available: bool = True, services=(), resume: bool = True) -> list[Session]:
    """Connected clients. ``resume=False``: no XEP-0198 resumption (aioxmpp
    asks for it whenever it is offered; a dropped connection then
    hibernates instead of ending)."""
    sessions = [Session(server, jid, available=available, services=services) for jid in jids]
    if not resume:
        for session in sessions:
            session.client.resumption_timeout = 0
    await asyncio.gather(*(stack.enter_async_context(s.client.connected()) for s in sessions))
    return sessions


def chat(to, body: str, id_: str, type_=aioxmpp.MessageType.CHAT):
    msg = aioxmpp.Message(to=to, type_=type_)
    msg.body[None] = body
    msg.id_ = id_
    return msg


def roster_item(jid, subscription: str, ask: str | None = None):
    return lambda c: (c[0] in ("added", "subscription_state_changed") and c[1] == jid
                      and c[2] == subscription and c[3] == ask)


def presence_of(kind: str, jid):
    return lambda e: e[0] == kind and e[1] == jid


def message_with(id_: str, type_=None):
    return lambda m: m.id_ == id_ and (type_ is None or m.type_ == type_)


def subscription_state(session: Session, contact) -> str:
    item = session.roster.items.get(contact)
    return item.subscription if item is not None else "none"


async def subscribe(askers: list[Session], contacts: list[Session]) -> None:
    """A complete one-way handshake (RFC 6121 §3.1): ``askers[0]`` asks,
    ``contacts[0]`` approves; every resource of both users sees each step."""
    asker, contact = askers[0], contacts[0]
    before_asker = subscription_state(asker, contact.bare)
    before_contact = subscription_state(contact, asker.bare)
    asker.roster.subscribe(contact.bare)
    for s in askers:  # §3.1.2: a roster push with ask='subscribe'
        await s.roster_changes.expect(roster_item(contact.bare, before_asker, "subscribe"),
                                      f"push of {contact.bare} with ask=subscribe")
    for s in contacts:  # §3.1.3: the request reaches every available resource
        got = await s.requests.expect(lambda r: r.type_ == aioxmpp.PresenceType.SUBSCRIBE
                                      and r.from_ == asker.bare, "subscribe request")
        assert got.to == contact.bare
    contact.roster.approve(asker.bare)
    for s in contacts:  # §3.1.5: the contact's side gains 'from'
        await s.roster_changes.expect(
            roster_item(asker.bare, GAINS_FROM[before_contact]),
            f"push of {asker.bare} as {GAINS_FROM[before_contact]}")
    for s in askers:  # §3.1.6: the asker's side gains 'to', and hears 'subscribed'
        await s.roster_changes.expect(
            roster_item(contact.bare, GAINS_TO[before_asker]),
            f"push of {contact.bare} as {GAINS_TO[before_asker]}")
        await s.requests.expect(lambda r: r.type_ == aioxmpp.PresenceType.SUBSCRIBED
                                and r.from_ == contact.bare, "subscribed")


# -- RFC 6121 §3: subscriptions and presence -------------------------------------------

def test_subscription_handshake_pushes_to_every_resource_and_presence_flows(server):
    who = people(server, "alice", "bob", "carol")

    async def main():
        async with contextlib.AsyncExitStack() as stack:
            phone, laptop, pc, tablet, carol = await login(
                stack, server, who["alice"] + "/phone", who["alice"] + "/laptop",
                who["bob"] + "/pc", who["bob"] + "/tablet", who["carol"] + "/home")
            alice, bob = phone.bare, pc.bare

            await subscribe([phone, laptop], [pc, tablet])
            for s in (phone, laptop):
                assert s.roster.items[bob].subscription == "to"
                assert s.roster.items[bob].ask is None
                # §3.1.5: the contact's server sends each of bob's resources' presence.
                for resource in (pc, tablet):
                    await s.presences.expect(presence_of("available", resource.jid),
                                             f"presence of {resource.jid}")
            for s in (pc, tablet):
                assert s.roster.items[alice].subscription == "from"

            await subscribe([pc, tablet], [phone, laptop])
            for s in (phone, laptop):
                assert s.roster.items[bob].subscription == "both"
            for s in (pc, tablet):
                assert s.roster.items[alice].subscription == "both"
                assert s.roster.items[alice].ask is None
                for resource in (phone, laptop):
                    await s.presences.expect(presence_of("available", resource.jid),
                                             f"presence of {resource.jid}")

            # A status change reaches every resource of the contact.
            phone.presence_server.set_presence(
                aioxmpp.PresenceState(True, aioxmpp.PresenceShow.DND), "in a meeting")
            for s in (pc, tablet):
                _, _, stanza = await s.presences.expect(presence_of("changed", phone.jid),
                                                        "status change")
                assert stanza.show == aioxmpp.PresenceShow.DND
                assert stanza.status.any() == "in a meeting"

            # A resource logging in later gets the roster as it is now, and the
            # contacts' presence through the server's probes (§4.3).
            late, = await login(stack, server, who["alice"] + "/late")
            assert late.roster.items[bob].subscription == "both"
            for resource in (pc, tablet):
                await late.presences.expect(presence_of("available", resource.jid),
                                            f"probed presence of {resource.jid}")

            # carol saw none of it.
            await carol.ping()
            assert carol.roster.items == {}
            assert carol.requests.items == []
            assert carol.presences.matching(lambda e: e[1].bare() in (alice, bob)) == []
    run(main(), server)


def test_removing_a_contact_cancels_both_subscriptions(server):
    """RFC 6121 §2.5.2: removing a 'both' item sends unsubscribe and
    unsubscribed; with them each side stops seeing the other's presence."""
    who = people(server, "alice", "bob")

    async def main():
        async with contextlib.AsyncExitStack() as stack:
            phone, laptop, pc, tablet = await login(
                stack, server, who["alice"] + "/phone", who["alice"] + "/laptop",
                who["bob"] + "/pc", who["bob"] + "/tablet")
            alice, bob = phone.bare, pc.bare
            await subscribe([phone, laptop], [pc, tablet])
            await subscribe([pc, tablet], [phone, laptop])
            for s in (pc, tablet):
                for resource in (phone, laptop):
                    await s.presences.expect(presence_of("available", resource.jid))

            await phone.roster.remove_entry(bob, timeout=TIMEOUT)
            for s in (phone, laptop):
                await s.roster_changes.expect(lambda c: c[0] == "removed" and c[1] == bob,
                                              "removal push")
                assert bob not in s.roster.items
            for s in (pc, tablet):
                for ptype in (aioxmpp.PresenceType.UNSUBSCRIBE, aioxmpp.PresenceType.UNSUBSCRIBED):
                    await s.requests.expect(lambda r: r.type_ == ptype and r.from_ == alice,
                                            str(ptype))
                await s.roster_changes.expect(roster_item(alice, "none"), "push as none")
                assert s.roster.items[alice].subscription == "none"
            # §3.3.3: alice stops hearing bob...
            for s in (phone, laptop):
                for resource in (pc, tablet):
                    await s.presences.expect(presence_of("unavailable", resource.jid),
                                             f"unavailable from {resource.jid}")
            # ...and §3.2.2: bob hears alice go unavailable, or his client would
            # show her online for ever.
            for s in (pc, tablet):
                for resource in (phone, laptop):
                    await s.presences.expect(presence_of("unavailable", resource.jid),
                                             f"unavailable from {resource.jid}")

            # Presence no longer flows to bob.
            phone.presence_server.set_presence(
                aioxmpp.PresenceState(True, aioxmpp.PresenceShow.AWAY), "after the breakup")
            await laptop.presences.expect(presence_of("changed", phone.jid))  # her own resource
            for s in (pc, tablet):
                await s.ping()
                assert s.presences.matching(lambda e: e[1].bare() == alice) == []
    run(main(), server)


def test_dropped_connection_is_seen_as_unavailable(server):
    who = people(server, "alice", "bob")

    async def main():
        async with contextlib.AsyncExitStack() as stack:
            # without resumption: a drop ends the session at once (with it, the
            # session would hibernate, still available: tests/e2e/test_sm_*)
            alice, bob, other = await login(stack, server, who["alice"] + "/phone",
                                            who["bob"] + "/pc", who["bob"] + "/tablet",
                                            resume=False)
            await subscribe([alice], [bob, other])
            for resource in (bob, other):
                await alice.presences.expect(presence_of("available", resource.jid))
            bob.drop()
            # RFC 6121 §4.5.2: the server acts as if bob had sent
            # unavailable presence, to his contacts and his other resource.
            _, _, stanza = await alice.presences.expect(presence_of("unavailable", bob.jid),
                                                        "unavailable after the drop")
            assert stanza.type_ == aioxmpp.PresenceType.UNAVAILABLE
            await other.presences.expect(presence_of("unavailable", bob.jid))
            assert alice.presence.get_peer_resources(bob.bare).keys() == {"tablet"}
    run(main(), server)


# -- XEP-0160 offline storage ---------------------------------------------------------------

def test_offline_message_survives_a_restart_and_arrives_with_a_delay(server):
    who = people(server, "alice", "bob")

    async def main():
        bob = aioxmpp.JID.fromstr(who["bob"])
        async with contextlib.AsyncExitStack() as stack:
            alice, = await login(stack, server, who["alice"] + "/phone")
            before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
            await alice.client.send(chat(bob, "while you were out", "offline-1"))
            await alice.client.send(chat(bob, "and a normal one", "offline-2",
                                         aioxmpp.MessageType.NORMAL))
            await alice.ping()
            after = datetime.datetime.now(datetime.timezone.utc)
            assert alice.messages.items == []  # stored, not bounced

        await asyncio.to_thread(server.restart)

        async with contextlib.AsyncExitStack() as stack:
            pc, = await login(stack, server, who["bob"] + "/pc")
            first = await pc.messages.expect(message_with("offline-1"), "offline-1")
            second = await pc.messages.expect(message_with("offline-2"), "offline-2")
            await pc.ping()
            assert [m.id_ for m in pc.messages.seen] == ["offline-1", "offline-2"]  # once, in order
        for got, type_, body in ((first, aioxmpp.MessageType.CHAT, "while you were out"),
                                 (second, aioxmpp.MessageType.NORMAL, "and a normal one")):
            assert got.type_ == type_
            assert got.from_ == alice.jid
            assert got.to.bare() == bob
            assert list(got.body.values()) == [body]
            delay, = got.xep0203_delay
            assert delay.from_ == SERVER
            assert before <= delay.stamp <= after, (before, delay.stamp, after)

        # Delivered once: the next login finds nothing.
        async with contextlib.AsyncExitStack() as stack:
            again, = await login(stack, server, who["bob"] + "/pc")
            await again.ping()
            assert again.messages.items == []
    run(main(), server)


def test_every_offline_message_accepted_before_a_graceful_restart_is_kept(server):
    """A burst of messages to an offline user, then a clean shutdown: each one
    the server read before it was told to stop must be stored and delivered
    (XEP-0160 §2). The server answered a ping sent after them, so it had them."""
    who = people(server, "alice", "bob")
    count = 50

    async def main():
        bob = aioxmpp.JID.fromstr(who["bob"])
        async with contextlib.AsyncExitStack() as stack:
            alice, = await login(stack, server, who["alice"] + "/phone")
            for n in range(count):
                await alice.client.send(chat(bob, f"message {n}", f"burst-{n}"))
            await alice.ping()

        await asyncio.to_thread(server.restart)

        async with contextlib.AsyncExitStack() as stack:
            pc, = await login(stack, server, who["bob"] + "/pc")
            await pc.messages.expect(message_with(f"burst-{count - 1}"), "the last message")
            await pc.ping()
            got = [m.id_ for m in pc.messages.seen]
            assert got == [f"burst-{n}" for n in range(count)]
    run(main(), server)


# -- XEP-0191 blocking -------------------------------------------------------------------

def test_blocking_stops_messages_and_presence_until_unblocked(server):
    who = people(server, "alice", "bob")

    async def main():
        async with contextlib.AsyncExitStack() as stack:
            # BlockingClient fetches the blocklist at login (which also asks the
            # server for pushes, XEP-0191 §3.2), so it is summoned before.
            phone, laptop = await login(stack, server, who["alice"] + "/phone",
                                        who["alice"] + "/laptop",
                                        services=[aioxmpp.BlockingClient])
            pc, = await login(stack, server, who["bob"] + "/pc")
            for s in (phone, laptop):
                s.blocking = s.client.summon(aioxmpp.BlockingClient)
                assert s.blocking.blocklist == frozenset()
                s.blocked = Recorder(f"{s.jid} blocked")
                s.blocking.on_jids_blocked.connect(s.blocked)
                s.unblocked = Recorder(f"{s.jid} unblocked")
                s.blocking.on_jids_unblocked.connect(s.unblocked)
            alice, bob = phone.bare, pc.bare
            await subscribe([pc], [phone, laptop])  # bob sees alice's presence
            for s in (phone, laptop):
                await pc.presences.expect(presence_of("available", s.jid))

            await phone.blocking.block_jids([bob])
            assert await laptop.blocked.expect(lambda jids: jids == {bob}, "block push")
            assert laptop.blocking.blocklist == {bob}
            # A resource logging in now gets the list as it stands (§3.2).
            late, = await login(stack, server, who["alice"] + "/late",
                                services=[aioxmpp.BlockingClient])
            assert late.client.summon(aioxmpp.BlockingClient).blocklist == {bob}
            # §3.3: bob is told alice went unavailable...
            for s in (phone, laptop):
                await pc.presences.expect(presence_of("unavailable", s.jid))
            # ...his message bounces as if she were offline, and she never sees it.
            await pc.client.send(chat(alice, "are you there?", "blocked-1"))
            bounce = await pc.messages.expect(message_with("blocked-1"), "bounce")
            assert bounce.type_ == aioxmpp.MessageType.ERROR
            assert bounce.error.condition == aioxmpp.ErrorCondition.SERVICE_UNAVAILABLE
            # ...and alice cannot write to him either.
            await phone.client.send(chat(bob, "hello?", "blocked-2"))
            refused = await phone.messages.expect(message_with("blocked-2"), "refusal")
            assert refused.type_ == aioxmpp.MessageType.ERROR
            assert refused.error.condition == aioxmpp.ErrorCondition.NOT_ACCEPTABLE
            assert isinstance(refused.error.application_condition, Blocked)
            assert pc.messages.matching(message_with("blocked-2")) == []
            for s in (phone, laptop, late):
                await s.ping()
                assert s.messages.matching(lambda m: m.from_.bare() == bob) == []
            # The resource that came online during the block was never shown to bob.
            await pc.ping()
            assert pc.presences.matching(lambda e: e[1] == late.jid) == []

            await phone.blocking.unblock_jids([bob])
            assert await laptop.unblocked.expect(lambda jids: jids == {bob}, "unblock push")
            assert laptop.blocking.blocklist == frozenset()
            # §3.4: bob gets alice's presence again, and his messages arrive.
            for s in (phone, laptop, late):
                await pc.presences.expect(presence_of("available", s.jid))
            await pc.client.send(chat(alice, "there you are", "unblocked-1"))
            for s in (phone, laptop, late):  # all share the top priority (RFC 6121 §8.5.2.1.1)
                got = await s.messages.expect(message_with("unblocked-1"), "message after unblock")
                assert got.type_ == aioxmpp.MessageType.CHAT
                assert list(got.body.values()) == ["there you are"]
            assert pc.messages.matching(message_with("unblocked-1")) == []
    run(main(), server)


def test_blocked_sender_to_an_offline_user_is_bounced_not_stored(server):
    """XEP-0191 §3.3 applies before offline storage (XEP-0160): the blocked
    sender is told the user is unavailable, and nothing waits for her."""
    who = people(server, "alice", "bob")

    async def main():
        bob = aioxmpp.JID.fromstr(who["bob"])
        async with contextlib.AsyncExitStack() as stack:
            phone, = await login(stack, server, who["alice"] + "/phone",
                                 services=[aioxmpp.BlockingClient])
            await phone.client.summon(aioxmpp.BlockingClient).block_jids([bob])
        async with contextlib.AsyncExitStack() as stack:
            pc, = await login(stack, server, who["bob"] + "/pc")
            await pc.client.send(chat(phone.bare, "let me in", "blocked-offline"))
            bounce = await pc.messages.expect(message_with("blocked-offline"), "bounce")
            assert bounce.type_ == aioxmpp.MessageType.ERROR
            assert bounce.error.condition == aioxmpp.ErrorCondition.SERVICE_UNAVAILABLE
        async with contextlib.AsyncExitStack() as stack:
            again, = await login(stack, server, who["alice"] + "/phone")
            await again.ping()
            assert again.messages.items == []
    run(main(), server)


# -- XEP-0280 carbons ------------------------------------------------------------------------

def test_carbons_copy_sent_and_received_messages_to_enabled_resources(server):
    who = people(server, "alice", "bob")

    async def main():
        async with contextlib.AsyncExitStack() as stack:
            phone, laptop, tablet, pc = await login(
                stack, server, who["alice"] + "/phone", who["alice"] + "/laptop",
                who["alice"] + "/tablet", who["bob"] + "/pc")
            for s in (phone, laptop, tablet, pc):
                s.im()
            for s in (phone, laptop):  # tablet keeps carbons off
                await s.client.summon(aioxmpp.CarbonsClient).enable()

            # Received: bob writes to alice's phone; her laptop gets a copy.
            await pc.client.send(chat(phone.jid, "to your phone", "carbon-in"))
            msg, peer, sent, source = await phone.im().expect(
                lambda e: e[0].id_ == "carbon-in", "the message itself")
            assert (peer, sent, source) == (pc.jid, False, aioxmpp.im.dispatcher.MessageSource.STREAM)
            msg, peer, sent, source = await laptop.im().expect(
                lambda e: e[0].id_ == "carbon-in", "the received carbon")
            assert (peer, sent, source) == (pc.jid, False, aioxmpp.im.dispatcher.MessageSource.CARBONS)
            assert msg.to == phone.jid
            assert list(msg.body.values()) == ["to your phone"]
            wrapper = await laptop.messages.expect(lambda m: m.xep0280_received is not None)
            assert wrapper.from_ == phone.bare and wrapper.to == laptop.jid

            # Sent: the phone answers; the laptop gets a copy of what it sent.
            await phone.client.send(chat(pc.jid, "from my phone", "carbon-out"))
            await pc.im().expect(lambda e: e[0].id_ == "carbon-out", "the reply")
            msg, peer, sent, source = await laptop.im().expect(
                lambda e: e[0].id_ == "carbon-out", "the sent carbon")
            assert (peer, sent, source) == (pc.jid, True, aioxmpp.im.dispatcher.MessageSource.CARBONS)
            assert msg.from_ == phone.jid
            assert list(msg.body.values()) == ["from my phone"]
            wrapper = await laptop.messages.expect(lambda m: m.xep0280_sent is not None)
            assert wrapper.from_ == phone.bare and wrapper.to == laptop.jid

            # No copies for the sender itself, nor for a resource without carbons.
            for s in (phone, tablet):
                await s.ping()
            assert phone.im().matching(lambda e: e[0].id_ == "carbon-out") == []
            assert tablet.im().items == []
            assert tablet.messages.items == []

            # To the bare JID every resource (same priority) gets the message
            # itself, so no carbon copy on top (XEP-0280 §5.1 vs §6).
            await pc.client.send(chat(phone.bare, "to all of you", "carbon-bare"))
            for s in (phone, laptop, tablet):
                msg, peer, sent, source = await s.im().expect(
                    lambda e: e[0].id_ == "carbon-bare", "the bare-JID message")
                assert source == aioxmpp.im.dispatcher.MessageSource.STREAM
            for s in (phone, laptop, tablet):
                await s.ping()
                assert s.im().matching(lambda e: e[0].id_ == "carbon-bare") == []
                assert s.messages.matching(lambda m: m.xep0280_received is not None) == []
                s.messages.items.clear()

            # Disabled again: no more copies for the laptop.
            await laptop.client.summon(aioxmpp.CarbonsClient).disable()
            await pc.client.send(chat(phone.jid, "just the phone", "carbon-off"))
            await phone.im().expect(lambda e: e[0].id_ == "carbon-off", "the message itself")
            await phone.client.send(chat(pc.jid, "ok", "carbon-off-reply"))
            await pc.im().expect(lambda e: e[0].id_ == "carbon-off-reply", "the reply")
            await laptop.ping()
            assert laptop.im().items == []
            assert laptop.messages.items == []
    run(main(), server)


# -- XEP-0049 private storage, XEP-0012 last activity -------------------------------------

def test_private_xml_round_trip_between_resources(server):
    who = people(server, "alice", "bob")

    async def main():
        async with contextlib.AsyncExitStack() as stack:
            phone, laptop, pc = await login(stack, server, who["alice"] + "/phone",
                                            who["alice"] + "/laptop", who["bob"] + "/pc")
            store = phone.client.summon(aioxmpp.private_xml.PrivateXMLService)
            empty = await store.get_private_xml(Notes())
            assert isinstance(empty.registered_payload, Notes)
            assert empty.registered_payload.text is None

            notes = Notes()
            notes.topic, notes.text = "shopping", "milk & <eggs>"
            await store.set_private_xml(notes)
            got = await laptop.client.summon(aioxmpp.private_xml.PrivateXMLService).get_private_xml(Notes())
            assert (got.registered_payload.topic, got.registered_payload.text) == \
                ("shopping", "milk & <eggs>")

            # XEP-0048 bookmarks, which aioxmpp keeps in private storage.
            room = aioxmpp.bookmarks.Conference(
                "The Room", aioxmpp.JID.fromstr("room@conference.localhost"),
                autojoin=True, nick="alice")
            await phone.client.summon(aioxmpp.BookmarkClient).set_bookmarks([room])
            marks = await laptop.client.summon(aioxmpp.BookmarkClient).get_bookmarks()
            assert marks == [room]

            # Nobody else's business (XEP-0049 §2.3): bob asking for alice's notes.
            with pytest.raises(aioxmpp.errors.XMPPError) as refused:
                await pc.iq(aioxmpp.IQType.GET, aioxmpp.private_xml.Query(Notes()), phone.bare)
            assert refused.value.condition == aioxmpp.ErrorCondition.FORBIDDEN
            mine = await pc.client.summon(aioxmpp.private_xml.PrivateXMLService) \
                .get_private_xml(Notes())
            assert mine.registered_payload.text is None
    run(main(), server)


def test_last_activity_of_an_offline_contact_and_of_the_server(server):
    who = people(server, "alice", "bob", "carol")

    async def main():
        async with contextlib.AsyncExitStack() as stack:
            alice, carol = await login(stack, server, who["alice"] + "/phone",
                                       who["carol"] + "/home")
            async with contextlib.AsyncExitStack() as bob_stack:
                bob, = await login(bob_stack, server, who["bob"] + "/pc")
                await subscribe([alice], [bob])
                online = await alice.iq(aioxmpp.IQType.GET, LastActivity(), bob.bare)
                assert online.seconds == 0  # XEP-0012 §3: online now
                bob.presence_server.set_presence(aioxmpp.PresenceState(False), "gone fishing")
                await alice.presences.expect(presence_of("unavailable", bob.jid))
            # XEP-0012 §3: the time since bob logged out, and his last status.
            await asyncio.sleep(1.1)
            last = await alice.iq(aioxmpp.IQType.GET, LastActivity(), bob.bare)
            # Not a speed target: the answer must count from bob's logout (1.1 s
            # ago), not from the server's start or the epoch; 5 leaves room for
            # a slow machine.
            assert 1 <= last.seconds <= 5, last.seconds
            assert last.text == "gone fishing"
            # Not subscribed: forbidden (XEP-0012 §4).
            with pytest.raises(aioxmpp.errors.XMPPError) as refused:
                await carol.iq(aioxmpp.IQType.GET, LastActivity(), bob.bare)
            assert refused.value.condition == aioxmpp.ErrorCondition.FORBIDDEN

            # XEP-0012 §5: the server's uptime, counting up.
            started = float(re.findall(r"==== start #\d+ at ([\d.]+) ====", server.log_text())[-1])
            first = await alice.iq(aioxmpp.IQType.GET, LastActivity(), SERVER)
            upper = time.time() - started
            assert 0 <= first.seconds <= upper + 1, (first.seconds, upper)
            await asyncio.sleep(1.1)
            second = await alice.iq(aioxmpp.IQType.GET, LastActivity(), SERVER)
            assert second.seconds > first.seconds
    run(main(), server)


def test_reconnecting_client_gets_roster_changes_as_versioned_pushes(server):
    """XEP-0237 with aioxmpp's own roster versioning: a Client reconnecting
    asks with the version it has and learns what changed meanwhile."""
    who = people(server, "alice", "bob", "carol")

    async def main():
        bob, carol = aioxmpp.JID.fromstr(who["bob"]), aioxmpp.JID.fromstr(who["carol"])
        phone = Session(server, who["alice"] + "/phone")
        async with phone.client.connected():
            await phone.roster.set_entry(bob, name="Bob")
            await phone.roster_changes.expect(lambda c: c[0] == "added" and c[1] == bob)
            assert phone.roster.version is not None
        async with contextlib.AsyncExitStack() as stack:
            laptop, = await login(stack, server, who["alice"] + "/laptop")
            await laptop.roster.set_entry(carol, name="Carol")
            await laptop.roster.set_entry(bob, name="Robert")
            await laptop.roster_changes.expect(lambda c: c[0] == "name_changed" and c[4] == "Robert")
        phone.roster_changes.seen.clear()
        async with phone.client.connected():  # the same Client: it keeps its roster
            await phone.roster_changes.expect(
                lambda c: c[0] == "added" and c[1] == carol and c[4] == "Carol", "carol added")
            await phone.roster_changes.expect(
                lambda c: c[0] == "name_changed" and c[1] == bob and c[4] == "Robert", "bob renamed")
            assert {jid: item.name for jid, item in phone.roster.items.items()} == \
                {bob: "Robert", carol: "Carol"}
            # Incremental, not a full roster: aioxmpp reports the (empty) roster
            # result first and applies the pushes after it; a full roster would
            # have changed the entries before reporting it received.
            assert [c[0] for c in phone.roster_changes.seen] == ["initial", "added", "name_changed"]
    run(main(), server)


def test_last_activity_records_a_logout_caused_by_a_server_restart(server):
    """XEP-0012 §3 counts from the last logout; a graceful shutdown logs
    everyone out, so afterwards the time since then is known."""
    who = people(server, "alice", "bob")

    async def main():
        async with contextlib.AsyncExitStack() as stack:
            alice, bob = await login(stack, server, who["alice"] + "/phone",
                                     who["bob"] + "/pc")
            await subscribe([alice], [bob])
            for s in (alice, bob):
                s.no_reconnect()
            stopped = time.time()
            await asyncio.to_thread(server.restart)
        async with contextlib.AsyncExitStack() as stack:
            alice, = await login(stack, server, who["alice"] + "/phone")
            last = await alice.iq(aioxmpp.IQType.GET, LastActivity(), bob.bare)
            assert 0 <= last.seconds <= time.time() - stopped + 1, last.seconds
            # ...and not because bob is back: he did not log in again.
            since_restart = server.log_text().rpartition("==== start #")[2]
            assert f"bound {bob.jid}" not in since_restart
    run(main(), server)


# -- bad input -----------------------------------------------------------------------------

def test_roster_set_with_an_invalid_jid_is_refused_and_changes_nothing(server):
    who = people(server, "alice", "bob")

    async def main():
        async with contextlib.AsyncExitStack() as stack:
            phone, laptop = await login(stack, server, who["alice"] + "/phone",
                                        who["alice"] + "/laptop")
            bob = aioxmpp.JID.fromstr(who["bob"])
            await phone.roster.set_entry(bob, name="Bob", add_to_groups={"Friends"})
            for s in (phone, laptop):
                await s.roster_changes.expect(lambda c: c[0] == "added" and c[1] == bob)

            # A domain with a space: aioxmpp's lenient (non-strict) JID parsing
            # lets it through, the server must not (RFC 7622 §3.2).
            bad = aioxmpp.JID.fromstr("mallory@not a domain", strict=False)
            with pytest.raises(aioxmpp.errors.XMPPError) as refused:
                await phone.iq(aioxmpp.IQType.SET, aioxmpp.roster.xso.Query(
                    items=[aioxmpp.roster.xso.Item(jid=bad, name="Mallory")]))
            assert refused.value.condition == aioxmpp.ErrorCondition.JID_MALFORMED

            # A localpart with spaces and a second '@': aioxmpp cannot even build
            # that JID (nodeprep), so the tuple is made directly. The server's
            # error reply does not echo the query (as Prosody's), so aioxmpp,
            # which could not parse that JID back, reads the error cleanly.
            worse = tuple.__new__(aioxmpp.JID, ("not a jid@", "localhost", None))
            with pytest.raises(aioxmpp.errors.XMPPError) as refused:
                await phone.iq(aioxmpp.IQType.SET, aioxmpp.roster.xso.Query(
                    items=[aioxmpp.roster.xso.Item(jid=worse, name="Mallory")]))
            assert refused.value.condition == aioxmpp.ErrorCondition.JID_MALFORMED

            # The subscription state changes through presence, not roster sets.
            forged = aioxmpp.roster.xso.Item(jid=aioxmpp.JID.fromstr("x@localhost"))
            forged.subscription = "both"
            with pytest.raises(aioxmpp.errors.XMPPError) as refused:
                await phone.iq(aioxmpp.IQType.SET, aioxmpp.roster.xso.Query(items=[forged]))
            assert refused.value.condition == aioxmpp.ErrorCondition.NOT_ALLOWED

            result = await laptop.iq(aioxmpp.IQType.GET, aioxmpp.roster.xso.Query())
            assert [(i.jid, i.name, i.subscription, [g.name for g in i.groups])
                    for i in result.items] == [(bob, "Bob", "none", ["Friends"])]
            for s in (phone, laptop):
                await s.ping()
                # no push for either refused set
                assert [c for c in s.roster_changes.items if c[0] != "initial"] == []
                assert set(s.roster.items) == {bob}
    run(main(), server)
