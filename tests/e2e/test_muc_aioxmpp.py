"""XEP-0045 multi-user chat end to end, seen through aioxmpp 0.13's MUC client.

aioxmpp's :class:`aioxmpp.MUCClient` and :class:`aioxmpp.muc.Room` keep a
client-side model of a room built only from what the service sends: who is
in it (``members``), their roles, affiliations and nicks, why someone left
(``LeaveMode`` from the status codes), the subject. A presence with a missing
status code or a wrong ``<item/>`` shows up here as a model that is wrong (an
``on_exit`` with ``LeaveMode.NORMAL`` after a kick, an occupant that never
changes nick), not just as an odd stanza. It is the second client library
beside slixmpp's ``xep_0045`` (tests/e2e/test_muc_slixmpp.py).

Every test runs against :mod:`muc_target` (xmppd, or Prosody 0.12 with
``XMPPD_MUC_AGAINST=prosody``) and uses rooms of its own; the last test
restarts xmppd with ``kill -9`` and is xmppd-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import uuid
from typing import Any, Callable

import pytest

aioxmpp = pytest.importorskip("aioxmpp")
import aioxmpp.connector  # noqa: E402
import aioxmpp.disco  # noqa: E402
import aioxmpp.errors  # noqa: E402
import aioxmpp.forms  # noqa: E402
import aioxmpp.im  # noqa: E402
import aioxmpp.muc  # noqa: E402
import aioxmpp.muc.xso as muc_xso  # noqa: E402
import aioxmpp.node  # noqa: E402

from conftest import PASSWORD  # noqa: E402
from muc_target import muc_target, make_muc_target, require_xmppd  # noqa: E402,F401

pytestmark = pytest.mark.all_transports  # tcp, websocket, bosh (conftest)
TIMEOUT = 10
LeaveMode = aioxmpp.muc.LeaveMode
StatusCode = muc_xso.StatusCode


# -- plumbing -------------------------------------------------------------------------------

def run(coro, target) -> Any:
    """Run a test's coroutine (bounded); on failure, show what the server logged."""
    try:
        return asyncio.run(asyncio.wait_for(coro, 60))
    except BaseException as failure:
        tail = target.process.log_tail(60) if hasattr(target.process, "log_tail") else ""
        failure.add_note(f"--- {target.name} log tail ---\n{tail}")
        raise


def room_name(prefix: str) -> str:
    """A room of the test's own: servers are shared by the whole module."""
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def condition(exc: BaseException) -> str:
    """The RFC 6120 defined condition of an aioxmpp XMPPError ('forbidden' …)."""
    assert isinstance(exc, aioxmpp.errors.XMPPError), repr(exc)
    return exc.condition.value[1]


class Events:
    """Everything one signal source delivered, as tuples, with a way to wait.

    aioxmpp disconnects a handler that returns a true value, so the handlers
    here return None.
    """

    def __init__(self, name: str):
        self.name = name
        self.items: list[tuple] = []
        self.seen: list[tuple] = []  # everything, never taken
        self._changed = asyncio.Event()

    def add(self, *item: Any) -> None:
        self.items.append(item)
        self.seen.append(item)
        self._changed.set()

    def handler(self, kind: str, convert: Callable[..., tuple]) -> Callable[..., None]:
        def handle(*args, **kwargs) -> None:
            self.add(kind, *convert(*args, **kwargs))
        return handle

    async def expect(self, kind: str, predicate: Callable[..., bool] = lambda *a: True,
                     what: str | None = None) -> tuple:
        """Take (remove and return the fields of) the first ``kind`` event
        whose fields satisfy ``predicate``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while True:
            for index, item in enumerate(self.items):
                if item[0] == kind and predicate(*item[1:]):
                    del self.items[index]
                    return item[1:]
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"{self.name}: no {what or kind} within {TIMEOUT}s; "
                                     f"have {self.items!r}")
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def of(self, kind: str) -> list[tuple]:
        return [item[1:] for item in self.items if item[0] == kind]


class RoomView:
    """A joined (or joining) :class:`aioxmpp.muc.Room` and every signal it emitted."""

    def __init__(self, room: "aioxmpp.muc.Room", label: str):
        self.room = room
        self.events = Events(f"{label} in {room.jid}")
        e = self.events
        room.on_muc_enter.connect(e.handler(
            "enter", lambda presence, occupant, *, muc_status_codes=frozenset(), **kw:
            (occupant, set(muc_status_codes))))
        room.on_join.connect(e.handler("join", lambda member, **kw: (member,)))
        room.on_leave.connect(e.handler(
            "leave", lambda member, *, muc_leave_mode=None, muc_actor=None, muc_reason=None,
            muc_status_codes=frozenset(), **kw:
            (member, muc_leave_mode, muc_actor, muc_reason, set(muc_status_codes))))
        room.on_exit.connect(e.handler(
            "exit", lambda *, muc_leave_mode=None, muc_actor=None, muc_reason=None,
            muc_status_codes=frozenset(), **kw:
            (muc_leave_mode, muc_actor, muc_reason, set(muc_status_codes))))
        room.on_message.connect(e.handler(
            "message", lambda msg, member, source, **kw: (msg, member)))
        room.on_topic_changed.connect(e.handler(
            "topic", lambda member, new_topic, *, muc_nick=None, **kw:
            (member, new_topic.any() if new_topic else None, muc_nick)))
        room.on_nick_changed.connect(e.handler(
            "nick", lambda member, old_nick, new_nick, **kw: (member, old_nick, new_nick)))
        room.on_muc_role_changed.connect(e.handler(
            "role", lambda presence, member, *, actor=None, reason=None, **kw:
            (member, member.role, reason)))
        room.on_muc_affiliation_changed.connect(e.handler(
            "affiliation", lambda presence, member, *, actor=None, reason=None, **kw:
            (member, member.affiliation, reason)))
        room.on_muc_resume.connect(e.handler("resume", lambda **kw: ()))

    @property
    def jid(self):
        return self.room.jid

    def member(self, nick: str):
        """The occupant ``nick`` as this client's room model has it."""
        found = [m for m in self.room.members if m.nick == nick]
        assert len(found) == 1, (nick, self.room.members)
        return found[0]

    def nicks(self) -> set[str]:
        return {m.nick for m in self.room.members}

    def say(self, body: str) -> None:
        msg = aioxmpp.Message(type_=aioxmpp.MessageType.GROUPCHAT)
        msg.body[None] = body
        self.room.send_message(msg)

    async def heard(self, body: str, nick: str | None = None) -> tuple:
        """Wait for the groupchat message ``body`` (from ``nick``); (msg, member)."""
        return await self.events.expect(
            "message", lambda msg, member: msg.body.any() == body
            and (nick is None or msg.from_.resource == nick), f"message {body!r}")


def _x_password(stanza) -> str | None:
    """The password of a mediated invitation: XEP-0045 §7.8.2 (example 58) puts
    it in <x xmlns='…muc#user'> beside <invite/>, where aioxmpp 0.13 does not
    look (it reads <invite><password/>)."""
    user = getattr(stanza, "xep0045_muc_user", None)
    return user.password if user is not None else None


class Person:
    """One aioxmpp client (one resource) with the MUC client summoned."""

    def __init__(self, target, user: str, resource: str = "aio"):
        self.target = target
        self.jid = aioxmpp.JID.fromstr(f"{user}@{target.domain}/{resource}")
        self.bare = self.jid.bare()
        self.client = aioxmpp.Client(
            self.jid, aioxmpp.make_security_layer(PASSWORD, no_verify=True),
            override_peer=[(target.host, target.client_port, aioxmpp.connector.STARTTLSConnector())],
            max_initial_attempts=1)
        # available: messages to the bare JID (mediated invitations) reach
        # only available resources (RFC 6121 §8.5.2.1)
        self.client.summon(aioxmpp.PresenceServer).set_presence(aioxmpp.PresenceState(True))
        self.muc = self.client.summon(aioxmpp.MUCClient)
        self.disco = self.client.summon(aioxmpp.DiscoClient)
        self.invitations = Events(f"{user} invitations")
        self.muc.on_muc_invitation.connect(self.invitations.handler(
            "invitation", lambda stanza, muc_address, inviter_address, mode, *,
            password=None, reason=None, **kw:
            (muc_address, inviter_address, mode, password or _x_password(stanza), reason)))

    def room_jid(self, name: str):
        return aioxmpp.JID(name, self.target.muc, None)

    def start_join(self, name: str, nick: str, **kwargs) -> tuple[RoomView, asyncio.Future]:
        """Send the join; the view listens before anything can arrive."""
        room, future = self.muc.join(self.room_jid(name), nick, **kwargs)
        return RoomView(room, f"{self.bare}/{nick}"), future

    async def join(self, name: str, nick: str, **kwargs) -> RoomView:
        view, future = self.start_join(name, nick, **kwargs)
        await asyncio.wait_for(future, TIMEOUT)
        return view

    async def join_refused(self, name: str, nick: str, **kwargs) -> BaseException:
        """Join, expect an error presence; return the error aioxmpp raised."""
        view, future = self.start_join(name, nick, **kwargs)
        with pytest.raises(aioxmpp.errors.XMPPError) as refused:
            await asyncio.wait_for(future, TIMEOUT)
        assert not view.room.muc_joined
        return refused.value

    async def create(self, name: str, nick: str,
                     configure: Callable[[aioxmpp.muc.ConfigurationForm], None] | None = None
                     ) -> RoomView:
        """Create a room: join (status 201, the room is new), then either accept
        the default configuration (an instant room, XEP-0045 §10.1.2: an empty
        submit form) or change it through the owner form (§10.1.3)."""
        view = await self.join(name, nick)
        _, codes = await view.events.expect("enter")
        assert StatusCode.CREATED in codes, f"no 201 on creating {name}: {codes}"
        if configure is None:
            await self.muc.set_room_config(
                view.jid, aioxmpp.forms.Data(aioxmpp.forms.DataType.SUBMIT))
        else:
            form = aioxmpp.muc.ConfigurationForm.from_xso(
                await self.muc.get_room_config(view.jid))
            configure(form)
            await self.muc.set_room_config(view.jid, form.render_reply())
        return view

    async def info(self, name: str):
        return await self.disco.query_info(self.room_jid(name), require_fresh=True,
                                           timeout=TIMEOUT)


@contextlib.asynccontextmanager
async def online(target, *users: str):
    """Connected :class:`Person` objects for ``users`` ("alice", …), stopped at exit."""
    people = [Person(target, user) for user in users]
    async with contextlib.AsyncExitStack() as stack:
        await asyncio.gather(*(stack.enter_async_context(p.client.connected())
                               for p in people))
        yield people


def roominfo(info) -> dict[str, list[str]]:
    """The fields of the ``muc#roominfo`` form of a disco#info result."""
    for form in info.exts:
        if form.get_form_type() == "http://jabber.org/protocol/muc#roominfo":
            return {f.var: list(f.values) for f in form.fields if f.var}
    return {}


# -- joining and leaving --------------------------------------------------------------------

def test_join_and_leave_are_seen_through_on_enter_on_join_and_on_leave(muc_target):
    """XEP-0045 §7.2: the joiner gets the occupants then its own presence
    (110); the others get the new occupant; §7.14: a normal leave is an
    unavailable presence without a removal code (LeaveMode.NORMAL)."""
    async def scenario():
        name = room_name("aio-join")
        async with online(muc_target, "alice", "bob") as (alice, bob):
            alice_view = await alice.create(name, "alice")
            bob_view = await bob.join(name, "bob")

            me, codes = await bob_view.events.expect("enter")
            assert StatusCode.SELF in codes
            assert StatusCode.CREATED not in codes  # the room existed already
            assert (me.nick, me.role, me.affiliation) == ("bob", "participant", "none")
            assert bob_view.room.me is me
            assert bob_view.nicks() == {"alice", "bob"}
            owner = bob_view.member("alice")
            assert (owner.role, owner.affiliation) == ("moderator", "owner")
            # semi-anonymous by default (muc#roomconfig_whois = moderators):
            # a participant does not see real JIDs
            assert owner.direct_jid is None

            (joined,) = await alice_view.events.expect("join", lambda m: m.nick == "bob")
            assert (joined.role, joined.affiliation) == ("participant", "none")
            assert joined.direct_jid == bob.bare  # the moderator sees it
            assert alice_view.nicks() == {"alice", "bob"}

            await asyncio.wait_for(bob_view.room.leave(), TIMEOUT)
            mode, _, _, codes = await bob_view.events.expect("exit")
            assert mode == LeaveMode.NORMAL and StatusCode.SELF in codes
            assert not bob_view.room.muc_joined

            left, mode, _, _, codes = await alice_view.events.expect("leave")
            assert left is joined and mode == LeaveMode.NORMAL, (left, mode, codes)
            assert not codes & {301, 307, 321, 322, 332, 333}
            assert alice_view.nicks() == {"alice"}
    run(scenario(), muc_target)


def test_instant_room_is_locked_until_the_owner_accepts_the_default_configuration(muc_target):
    """XEP-0045 §10.1.1/§10.1.2: a new room answers its creator with 201 and
    stays locked (others get item-not-found) until the owner submits the empty
    form of an instant room; then anyone may enter and disco shows the room."""
    async def scenario():
        name = room_name("aio-instant")
        async with online(muc_target, "alice", "bob") as (alice, bob):
            alice_view = await alice.join(name, "alice")
            me, codes = await alice_view.events.expect("enter")
            assert {StatusCode.CREATED, StatusCode.SELF} <= codes
            assert (me.role, me.affiliation) == ("moderator", "owner")

            refused = await bob.join_refused(name, "bob")
            assert condition(refused) == "item-not-found", refused

            await alice.muc.set_room_config(
                alice_view.jid, aioxmpp.forms.Data(aioxmpp.forms.DataType.SUBMIT))
            bob_view = await bob.join(name, "bob")
            assert bob_view.nicks() == {"alice", "bob"}
            await alice_view.events.expect("join", lambda m: m.nick == "bob")

            info = await bob.info(name)
            assert "http://jabber.org/protocol/muc" in info.features
            assert any(i.category == "conference" and i.type_ == "text"
                       for i in info.identities), info.identities
            # defaults: open, temporary, semi-anonymous, unmoderated, no password
            # (public or hidden is a service default: xmppd's default_public is
            # true, Prosody's muc_room_default_public false)
            features = set(info.features)
            assert {"muc_open", "muc_temporary", "muc_semianonymous",
                    "muc_unmoderated", "muc_unsecured"} <= features, features
            assert len(features & {"muc_public", "muc_hidden"}) == 1, features
            assert roominfo(info).get("muc#roominfo_occupants") == ["2"]
    run(scenario(), muc_target)


# -- messages, subject, nick ----------------------------------------------------------------

def test_groupchat_messages_flow_both_ways_with_the_sending_occupant(muc_target):
    """XEP-0045 §7.4: a groupchat message goes to every occupant (the sender
    included) from the sender's occupant JID; aioxmpp hands it over with the
    occupant object of its room model."""
    async def scenario():
        name = room_name("aio-chat")
        async with online(muc_target, "alice", "bob", "carol") as (alice, bob, carol):
            alice_view = await alice.create(name, "alice")
            bob_view = await bob.join(name, "bob")
            carol_view = await carol.join(name, "carol")
            await alice_view.events.expect("join", lambda m: m.nick == "carol")
            await bob_view.events.expect("join", lambda m: m.nick == "carol")

            alice_view.say("hello from alice")
            for view in (bob_view, carol_view):
                msg, member = await view.heard("hello from alice", "alice")
                assert member is view.member("alice"), (member, view.room.members)
                assert (member.role, member.affiliation) == ("moderator", "owner")
                assert msg.type_ == aioxmpp.MessageType.GROUPCHAT
                assert msg.from_ == alice_view.jid.replace(resource="alice")
            _, member = await alice_view.heard("hello from alice", "alice")
            assert member is alice_view.room.me  # the reflection to the sender

            bob_view.say("hello from bob")
            for view in (alice_view, carol_view):
                msg, member = await view.heard("hello from bob", "bob")
                assert member is view.member("bob")
                assert (member.role, member.affiliation) == ("participant", "none")
            _, member = await bob_view.heard("hello from bob", "bob")
            assert member is bob_view.room.me
            # the owner (a moderator) sees the sender's real JID, carol does not
            assert alice_view.member("bob").direct_jid == bob.bare
            assert carol_view.member("bob").direct_jid is None

            # every message exactly once per occupant: a copy would have come
            # before this last one (one room, one order)
            carol_view.say("the end")
            for view in (alice_view, bob_view, carol_view):
                await view.heard("the end", "carol")
                bodies = [m.body.any() for m, _ in view.events.of("message")]
                assert bodies == [], bodies  # all taken above, nothing doubled
    run(scenario(), muc_target)


def test_subject_change_is_seen_by_every_occupant_and_by_later_joiners(muc_target):
    """XEP-0045 §8.1: a moderator's subject reaches all occupants from the
    setter's occupant JID; §7.2.15: a joiner gets the current subject last."""
    async def scenario():
        name = room_name("aio-subject")
        async with online(muc_target, "alice", "bob", "carol") as (alice, bob, carol):
            alice_view = await alice.create(name, "alice")
            bob_view = await bob.join(name, "bob")
            await alice_view.events.expect("join", lambda m: m.nick == "bob")

            await alice_view.room.set_topic({None: "Cauldron repairs"})
            for view in (alice_view, bob_view):
                member, topic, nick = await view.events.expect(
                    "topic", lambda m, t, n: t == "Cauldron repairs")
                assert nick == "alice"
                assert member is view.member("alice")
                assert view.room.muc_subject.any() == "Cauldron repairs"
                assert view.room.muc_subject_setter == "alice"

            carol_view = await carol.join(name, "carol")
            member, topic, nick = await carol_view.events.expect("topic")
            assert (topic, nick) == ("Cauldron repairs", "alice")
            assert carol_view.room.muc_subject_setter == "alice"
    run(scenario(), muc_target)


def test_nick_change_is_seen_by_others_as_on_nick_changed(muc_target):
    """XEP-0045 §7.6: unavailable with 303 and the new nick, then available
    under the new nick; aioxmpp keeps the same occupant object and renames it."""
    async def scenario():
        name = room_name("aio-nick")
        async with online(muc_target, "alice", "bob") as (alice, bob):
            alice_view = await alice.create(name, "alice")
            bob_view = await bob.join(name, "bob")
            (bob_there,) = await alice_view.events.expect("join", lambda m: m.nick == "bob")

            await bob_view.room.set_nick("robert")
            member, old, new = await alice_view.events.expect("nick")
            assert (member, old, new) == (bob_there, "bob", "robert")
            assert member.nick == "robert"
            assert alice_view.nicks() == {"alice", "robert"}
            assert alice_view.events.of("leave") == []  # a rename, not a leave and join
            assert alice_view.events.of("join") == []

            member, old, new = await bob_view.events.expect("nick")
            assert member is bob_view.room.me and (old, new) == ("bob", "robert")

            bob_view.say("new name, same me")
            _, sender = await alice_view.heard("new name, same me", "robert")
            assert sender is bob_there
    run(scenario(), muc_target)


# -- moderation -----------------------------------------------------------------------------

def test_kick_is_seen_via_on_exit_as_kicked_with_the_reason(muc_target):
    """XEP-0045 §8.2: the kicked occupant gets unavailable with 307 and the
    reason; the others see the same removal; a kick is not a ban (rejoin works)."""
    async def scenario():
        name = room_name("aio-kick")
        async with online(muc_target, "alice", "bob", "carol") as (alice, bob, carol):
            alice_view = await alice.create(name, "alice")
            bob_view = await bob.join(name, "bob")
            carol_view = await carol.join(name, "carol")
            await carol_view.events.expect("enter")
            kicked = carol_view.member("bob")

            await alice_view.room.kick(alice_view.member("bob"), "spamming the cauldron")
            mode, actor, reason, codes = await bob_view.events.expect("exit")
            assert mode == LeaveMode.KICKED, (mode, codes)
            assert StatusCode.REMOVED_KICKED in codes and StatusCode.SELF in codes
            assert reason == "spamming the cauldron"
            assert actor is None or actor.nick in (None, "alice"), actor
            assert not bob_view.room.muc_joined

            member, mode, _, reason, codes = await carol_view.events.expect("leave")
            assert member is kicked and mode == LeaveMode.KICKED
            assert reason == "spamming the cauldron"
            assert carol_view.nicks() == {"alice", "carol"}

            again = await bob.join(name, "bob")
            assert again.nicks() == {"alice", "bob", "carol"}
    run(scenario(), muc_target)


def test_ban_is_seen_via_on_exit_as_banned_and_keeps_the_user_out(muc_target):
    """XEP-0045 §9.1: the banned occupant gets unavailable with 301 and the
    reason, the others see it too; the user is on the outcast list and a
    rejoin is refused with forbidden (§7.2.7)."""
    async def scenario():
        name = room_name("aio-ban")
        async with online(muc_target, "alice", "bob", "carol") as (alice, bob, carol):
            alice_view = await alice.create(name, "alice")
            bob_view = await bob.join(name, "bob")
            carol_view = await carol.join(name, "carol")
            await carol_view.events.expect("enter")
            banned = carol_view.member("bob")

            await alice_view.room.ban(alice_view.member("bob"), "cursed the brew")
            mode, _, reason, codes = await bob_view.events.expect("exit")
            assert mode == LeaveMode.BANNED, (mode, codes)
            assert StatusCode.REMOVED_BANNED in codes
            assert reason == "cursed the brew"

            member, mode, _, reason, _ = await carol_view.events.expect("leave")
            assert member is banned and mode == LeaveMode.BANNED
            assert reason == "cursed the brew"

            outcasts = await alice.muc.get_affiliated(alice_view.jid, "outcast")
            assert [j.bare() for j in outcasts] == [bob.bare]

            refused = await bob.join_refused(name, "bob")
            assert condition(refused) == "forbidden", refused
            assert isinstance(refused, aioxmpp.errors.XMPPAuthError)
            assert carol_view.nicks() == {"alice", "carol"}
    run(scenario(), muc_target)


def test_affiliation_and_role_changes_reach_occupants_as_signals(muc_target):
    """XEP-0045 §9.3 (grant membership), §8.5/§9.6 (voice, moderator): each
    change is a presence of the affected occupant with the new <item/>, which
    aioxmpp turns into on_muc_affiliation_changed / on_muc_role_changed."""
    async def scenario():
        name = room_name("aio-roles")
        async with online(muc_target, "alice", "bob", "carol") as (alice, bob, carol):
            alice_view = await alice.create(name, "alice")
            bob_view = await bob.join(name, "bob")
            carol_view = await carol.join(name, "carol")
            await carol_view.events.expect("enter")
            await bob_view.events.expect("join", lambda m: m.nick == "carol")

            await alice_view.room.muc_set_affiliation(bob.bare, "member", reason="welcome")
            for view in (carol_view, bob_view):
                member, affiliation, reason = await view.events.expect("affiliation")
                assert member is view.member("bob") and affiliation == "member"
                assert member.role == "participant"
                assert reason == "welcome"
            assert bob_view.room.me.affiliation == "member"
            members = await alice.muc.get_affiliated(alice_view.jid, "member")
            assert [j.bare() for j in members] == [bob.bare]

            await alice_view.room.muc_set_role("bob", "moderator", reason="trusted")
            for view in (carol_view, bob_view, alice_view):
                member, role, reason = await view.events.expect("role")
                assert member is view.member("bob") and role == "moderator"
                assert reason == "trusted"

            await alice_view.room.muc_set_role("carol", "visitor")
            for view in (carol_view, bob_view, alice_view):
                member, role, _ = await view.events.expect(
                    "role", lambda m, r, why: m.nick == "carol")
                assert member is view.member("carol") and role == "visitor"
            assert carol_view.room.me.role == "visitor"
            # nobody left: role and affiliation changes are not departures
            for view in (alice_view, bob_view, carol_view):
                assert view.events.of("leave") == [] and view.nicks() == {"alice", "bob", "carol"}
    run(scenario(), muc_target)


def test_affiliation_change_by_a_non_owner_is_refused_as_forbidden(muc_target):
    """XEP-0045 §9 (admin use cases): a request from someone who is not an
    admin MUST get forbidden; §10.3/§10.5: only owners may grant owner or
    admin, a mere admin gets forbidden. Nothing changes either way."""
    async def scenario():
        name = room_name("aio-noperm")
        async with online(muc_target, "alice", "bob", "carol") as (alice, bob, carol):
            alice_view = await alice.create(name, "alice")
            await bob.join(name, "bob")
            await carol.join(name, "carol")
            await alice_view.room.muc_set_affiliation(carol.bare, "admin")

            errors = {}
            with pytest.raises(aioxmpp.errors.XMPPError) as refused:
                await bob.muc.set_affiliation(alice_view.jid, carol.bare.replace(
                    localpart="dave"), "member")
            errors["participant grants member"] = refused.value
            with pytest.raises(aioxmpp.errors.XMPPError) as refused:
                await bob.muc.set_affiliation(alice_view.jid, bob.bare, "owner")
            errors["participant makes itself owner"] = refused.value
            with pytest.raises(aioxmpp.errors.XMPPError) as refused:
                await carol.muc.set_affiliation(alice_view.jid, bob.bare, "owner")
            errors["admin grants owner"] = refused.value
            with pytest.raises(aioxmpp.errors.XMPPError) as refused:
                await carol.muc.set_affiliation(alice_view.jid, bob.bare, "admin")
            errors["admin grants admin"] = refused.value

            # nothing was stored
            for affiliation, expected in (("owner", {alice.bare}), ("admin", {carol.bare}),
                                          ("member", set())):
                listed = await alice.muc.get_affiliated(alice_view.jid, affiliation)
                assert {j.bare() for j in listed} == expected, (affiliation, listed)
            assert alice_view.member("bob").affiliation == "none"

            got = {case: condition(exc) for case, exc in errors.items()}
            if muc_target.name == "prosody" and set(got.values()) == {"not-allowed"}:
                pytest.xfail("Prosody 0.12 answers cancel/not-allowed (muc.lib.lua "
                             "set_affiliation) where XEP-0045 §9/§10.3 say forbidden")
            assert got == dict.fromkeys(errors, "forbidden"), got
            assert all(isinstance(e, aioxmpp.errors.XMPPAuthError) for e in errors.values())
    run(scenario(), muc_target)


# -- configuration ------------------------------------------------------------------------

def test_room_configuration_through_get_and_set_room_config_shows_in_disco(muc_target):
    """XEP-0045 §10.2: the owner gets the muc#roomconfig form and submits a
    changed one; §6.4: disco#info of the room then shows the new name (the
    identity) and the muc_membersonly / muc_persistent features. A non-owner
    may not even read the form (forbidden)."""
    async def scenario():
        name = room_name("aio-config")
        async with online(muc_target, "alice", "bob") as (alice, bob):
            alice_view = await alice.create(name, "alice")
            jid = alice_view.jid
            form = aioxmpp.muc.ConfigurationForm.from_xso(await alice.muc.get_room_config(jid))
            assert form.membersonly.value is False and form.persistentroom.value is False

            before = await bob.info(name)
            assert {"muc_open", "muc_temporary"} <= set(before.features)

            form.roomname.value = "The Coven"
            form.membersonly.value = True
            form.persistentroom.value = True
            await alice.muc.set_room_config(jid, form.render_reply())

            again = aioxmpp.muc.ConfigurationForm.from_xso(await alice.muc.get_room_config(jid))
            assert again.roomname.value == "The Coven"
            assert again.membersonly.value is True and again.persistentroom.value is True

            info = await bob.info(name)
            features = set(info.features)
            assert {"muc_membersonly", "muc_persistent"} <= features, features
            assert not {"muc_open", "muc_temporary"} & features, features
            names = [i.name for i in info.identities if i.category == "conference"]
            assert names == ["The Coven"], info.identities

            with pytest.raises(aioxmpp.errors.XMPPError) as refused:
                await bob.muc.get_room_config(jid)
            assert condition(refused.value) == "forbidden"
            with pytest.raises(aioxmpp.errors.XMPPError) as refused:
                await bob.muc.set_room_config(jid, aioxmpp.forms.Data(
                    aioxmpp.forms.DataType.SUBMIT))
            assert condition(refused.value) == "forbidden"
            assert "muc_membersonly" in (await bob.info(name)).features
    run(scenario(), muc_target)


def test_password_protected_room_admits_the_right_password_only(muc_target):
    """XEP-0045 §7.2.5: no or a wrong password → not-authorized (auth); the
    right one enters. The room shows muc_passwordprotected."""
    def protect(form):
        form.passwordprotectedroom.value = True
        form.roomsecret.value = "cauldronburn"

    async def scenario():
        name = room_name("aio-secret")
        async with online(muc_target, "alice", "bob") as (alice, bob):
            alice_view = await alice.create(name, "alice", protect)
            assert "muc_passwordprotected" in (await bob.info(name)).features

            for password in (None, "wrong"):
                refused = await bob.join_refused(name, "bob", password=password)
                assert condition(refused) == "not-authorized", (password, refused)
                assert isinstance(refused, aioxmpp.errors.XMPPAuthError)
            assert alice_view.events.of("join") == []

            bob_view = await bob.join(name, "bob", password="cauldronburn")
            assert bob_view.nicks() == {"alice", "bob"}
            await alice_view.events.expect("join", lambda m: m.nick == "bob")
    run(scenario(), muc_target)


def test_members_only_room_refuses_non_members_with_registration_required(muc_target):
    """XEP-0045 §7.2.6: a non-member entering a members-only room gets
    registration-required (auth); once the owner grants membership, it enters."""
    def members_only(form):
        form.membersonly.value = True

    async def scenario():
        name = room_name("aio-members")
        async with online(muc_target, "alice", "bob") as (alice, bob):
            alice_view = await alice.create(name, "alice", members_only)

            refused = await bob.join_refused(name, "bob")
            assert condition(refused) == "registration-required", refused
            assert isinstance(refused, aioxmpp.errors.XMPPAuthError)

            await alice.muc.set_affiliation(alice_view.jid, bob.bare, "member")
            bob_view = await bob.join(name, "bob")
            assert bob_view.room.me.affiliation == "member"
            assert bob_view.nicks() == {"alice", "bob"}
    run(scenario(), muc_target)


# -- history, invitations -----------------------------------------------------------------

def test_history_on_join_honours_maxstanzas(muc_target):
    """XEP-0045 §7.2.14/§7.2.15: a joiner asking <history maxstanzas='3'/>
    gets the last three messages, oldest first, with a delay stamp and the
    sender's nick, before the subject; maxstanzas='0' gets none."""
    async def scenario():
        name = room_name("aio-history")
        async with online(muc_target, "alice", "bob", "carol") as (alice, bob, carol):
            alice_view = await alice.create(name, "alice")
            await alice_view.room.set_topic({None: "Old news"})
            await alice_view.events.expect("topic")
            for i in range(1, 6):
                alice_view.say(f"line {i}")
            await alice_view.heard("line 5")  # all five are in the room's history

            bob_view = await bob.join(name, "bob", history=muc_xso.History(maxstanzas=3))
            await bob_view.events.expect("topic")  # the subject closes the history
            history = bob_view.events.of("message")
            assert [m.body.any() for m, _ in history] == ["line 3", "line 4", "line 5"]
            for msg, member in history:
                assert msg.from_.resource == "alice" and member.nick == "alice"
                assert msg.xep0203_delay, f"history without a delay stamp: {msg}"
                assert msg.xep0203_delay[0].from_ == bob_view.jid

            carol_view = await carol.join(name, "carol", history=muc_xso.History(maxstanzas=0))
            await carol_view.events.expect("topic")
            assert carol_view.events.of("message") == []

            alice_view.say("line 6")  # live messages carry no delay
            msg, _ = await bob_view.heard("line 6")
            assert not msg.xep0203_delay
    run(scenario(), muc_target)


def test_mediated_invitation_arrives_as_on_muc_invitation(muc_target):
    """XEP-0045 §7.8.2: an occupant's <invite to=…/> is sent on by the room
    from the room's JID, naming the inviter; aioxmpp reports it as a mediated
    invitation with the reason, and the invitee can enter with it. The
    password of a protected room comes along (§7.8.2: SHOULD)."""
    def protect(form):
        form.passwordprotectedroom.value = True
        form.roomsecret.value = "toil"

    async def scenario():
        name = room_name("aio-invite")
        async with online(muc_target, "alice", "bob") as (alice, bob):
            alice_view = await alice.create(name, "alice", protect)
            await alice_view.room.invite(bob.bare, "come brew with us",
                                   mode=aioxmpp.im.InviteMode.MEDIATED)
            room, inviter, mode, password, reason = await bob.invitations.expect("invitation")
            assert mode == aioxmpp.im.InviteMode.MEDIATED
            assert room == alice_view.jid
            assert reason == "come brew with us"
            assert inviter is not None and (
                inviter.bare() == alice.bare or inviter == room.replace(resource="alice")), inviter
            assert password == "toil"

            bob_view = await bob.join(room.localpart, "bob", password=password)
            assert bob_view.nicks() == {"alice", "bob"}
    run(scenario(), muc_target)


def test_direct_invitation_arrives_as_on_muc_invitation(muc_target):
    """XEP-0249: a direct invitation goes client to client (the room is not
    involved); aioxmpp reports the room JID, the inviter's JID and the reason."""
    async def scenario():
        name = room_name("aio-direct")
        async with online(muc_target, "alice", "bob") as (alice, bob):
            alice_view = await alice.create(name, "alice")
            await alice_view.room.invite(bob.bare, "over here", mode=aioxmpp.im.InviteMode.DIRECT)
            room, inviter, mode, _, reason = await bob.invitations.expect("invitation")
            assert (room, mode, reason) == (alice_view.jid, aioxmpp.im.InviteMode.DIRECT,
                                            "over here")
            assert inviter.bare() == alice.bare
            bob_view = await bob.join(room.localpart, "bob")
            assert "alice" in bob_view.nicks()
    run(scenario(), muc_target)


# -- restart (xmppd only; keep this test last: it restarts the module's server) -----------

def test_persistent_room_survives_kill_9_and_a_temporary_room_does_not(muc_target, monkeypatch):
    """Issue 13: a persistent room's configuration, affiliations and history
    survive ``kill -9`` and restart; the clients (aioxmpp reconnects by itself
    and rejoins with ``autorejoin``) carry on the conversation; a temporary
    room that had occupants at the crash is gone (disco#info: item-not-found)."""
    require_xmppd("restart with kill -9")

    async def nowhere_else(*args, **kwargs):
        return []

    # While the server is down, aioxmpp falls back from override_peer to DNS
    # discovery for "localhost" (SRV, then port 5222): slow without a
    # resolver, and fatal if some other server listens there (SASL fails, the
    # client gives up). Reconnect to the test server only.
    monkeypatch.setattr(aioxmpp.node, "discover_connectors", nowhere_else)

    def persistent(form):
        form.roomname.value = "Survivors"
        form.persistentroom.value = True
        form.membersonly.value = True

    async def scenario():
        name, temporary = room_name("aio-persist"), room_name("aio-temp")
        async with online(muc_target, "alice", "bob", "carol", "eve") as (alice, bob, carol, eve):
            for person in (alice, bob, carol, eve):
                person.client.backoff_start = datetime.timedelta(seconds=0.2)
            alice_view = await alice.create(name, "alice", persistent)
            await alice.muc.set_affiliation(alice_view.jid, bob.bare, "member")
            await alice.muc.set_affiliation(alice_view.jid, carol.bare, "member")
            await alice.muc.set_affiliation(alice_view.jid, eve.bare, "outcast",
                                            reason="troll")
            bob_view = await bob.join(name, "bob")
            await bob_view.events.expect("enter")
            temp_view = await bob.create(temporary, "bob")  # temporary by default
            # the temporary room must not be recreated by the rejoin after restart
            temp_view.room.muc_autorejoin = False
            assert "muc_temporary" in (await carol.info(temporary)).features

            alice_view.say("before the crash 1")
            bob_view.say("before the crash 2")
            for view in (alice_view, bob_view):
                await view.heard("before the crash 2")

            reconnected = [p.client.on_stream_established.future()
                           for p in (alice, bob, carol, eve)]
            await asyncio.get_running_loop().run_in_executor(None, muc_target.restart, True)

            # aioxmpp reconnects and rejoins on its own (autorejoin)
            await asyncio.wait_for(asyncio.gather(*reconnected), TIMEOUT)
            for view in (alice_view, bob_view):
                await view.events.expect("resume")
                me, codes = await view.events.expect("enter")
                assert StatusCode.CREATED not in codes  # loaded, not created anew
            assert alice_view.room.me.affiliation == "owner"
            assert bob_view.room.me.affiliation == "member"
            bob_view.say("after the restart")
            await alice_view.heard("after the restart", "bob")

            config = aioxmpp.muc.ConfigurationForm.from_xso(
                await alice.muc.get_room_config(alice_view.jid))
            assert config.roomname.value == "Survivors"
            assert config.persistentroom.value is True and config.membersonly.value is True
            for affiliation, expected in (("owner", {alice.bare}),
                                          ("member", {bob.bare, carol.bare}),
                                          ("outcast", {eve.bare})):
                listed = await alice.muc.get_affiliated(alice_view.jid, affiliation)
                assert {j.bare() for j in listed} == expected, (affiliation, listed)

            # history kept across the crash, for a member joining now
            carol_view = await carol.join(name, "carol",
                                          history=muc_xso.History(maxstanzas=10))
            await carol_view.events.expect("message", lambda m, who: m.body.any() ==
                                           "after the restart")
            bodies = [item[1].body.any() for item in carol_view.events.seen
                      if item[0] == "message"]
            assert bodies == ["before the crash 1", "before the crash 2",
                              "after the restart"], bodies

            refused = await eve.join_refused(name, "eve")
            assert condition(refused) == "forbidden"

            info = await carol.info(name)
            assert {"muc_persistent", "muc_membersonly"} <= set(info.features)
            assert [i.name for i in info.identities if i.category == "conference"] == [
                "Survivors"]

            with pytest.raises(aioxmpp.errors.XMPPError) as gone:
                await carol.info(temporary)
            assert condition(gone.value) == "item-not-found"
    run(scenario(), muc_target)
