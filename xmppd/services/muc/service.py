"""The multi-user chat service (XEP-0045) on a domain of its own.

``[component:muc]`` serves ``conference.<first domain>`` by default. Rooms
live in memory, keyed by their bare JID; persistent ones are written
through to storage (:mod:`.store`) and come back at start-up. The service
routes each stanza for a room to it (:mod:`.room`); everything a room
feature does is in :mod:`.features`, hooked on the service's
:class:`~.hooks.Hooks`.

Who may create rooms (``create``), how many (``max_rooms``,
``max_rooms_per_user``), how big (``max_occupants``) and how chatty
(``message_rate``) are options, each refused with the error a client
expects. ``[server] admins`` own every room, as in Prosody.

Delivery: a stanza for an occupant's local session is written to that
session directly, serialised once for the whole room
(:class:`~xmppd.router.fanout.Fanout`); a local session that is gone is
treated as the bounce it would have produced (the occupant leaves with
status 333); other domains go through the router.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.words.xish import domish

from xmppd import jid as jidlib
from xmppd import ns
from xmppd.component import Option, Service, handles
from xmppd.config import boolean, choice, integer, string
from xmppd.router.events import StanzaEvent, stanza_error
from xmppd.router.fanout import Fanout
from xmppd.services.muc import store as storelib
from xmppd.services.muc.features import FEATURES
from xmppd.services.muc.features.mam import OPTIONS as ARCHIVE_OPTIONS
from xmppd.services.muc.gate import Gates
from xmppd.services.muc.hooks import Feature, Hooks, MUCError
from xmppd.services.muc.room import Room, refuse_outcasts


#: how many real JIDs :meth:`MUCService.deliver` remembers parsed
_WHERE_BOUND = 100_000
_NONE: dict = {}


def _answered(reply: Any) -> Any:
    """An iq nobody in the room answered is ``service-unavailable``."""
    if reply is None:
        raise MUCError("service-unavailable", "cancel")
    return reply


class MUCService(Service):
    """XEP-0045 multi-user chat on ``[component:muc] domain``."""

    name = "muc"
    subdomain = "conference"
    title = "Chatrooms"
    features = [ns.MUC]
    options = [
        Option("name", string, "Chatrooms",
               "the service's name in service discovery"),
        Option("create", choice("anyone", "local", "admins"), "anyone",
               "who may create rooms: anyone, local (accounts of this server) or admins "
               "([server] admins); others get not-allowed"),
        Option("max_rooms", integer(1), "10000",
               "most rooms on the service; a creation beyond: policy-violation"),
        Option("max_rooms_per_user", integer(1), "100",
               "most rooms one account may have created (and still exist); beyond: "
               "policy-violation"),
        Option("max_occupants", integer(1), "1000",
               "most occupants of one room (the ceiling of muc#roomconfig_maxusers); a "
               "join beyond: service-unavailable"),
        Option("history_length", integer(0), "20",
               "a new room's muc#roomconfig_historylength (messages replayed on join)"),
        Option("max_history", integer(0), "20",
               "the most history a room may keep (Prosody's max_history_messages)"),
        Option("message_rate", integer(1), "10",
               "stanzas per second one occupant may have the room send (groupchat, presence "
               "updates, nick changes, private messages; beyond the burst: wait + "
               "policy-violation)"),
        Option("message_burst", integer(1), "20",
               "stanzas one occupant may send at once before message_rate holds"),
        Option("max_history_bytes", integer(0), "1048576",
               "most bytes of history one room keeps (the oldest go first)"),
        Option("max_affiliations", integer(1), "10000",
               "most affiliated JIDs (owners, admins, members, outcasts) of one room; more: "
               "policy-violation"),
        Option("max_sessions_per_nick", integer(1), "10",
               "most sessions of one account joined under one nick; more: "
               "resource-constraint"),
        Option("max_nick_length", integer(1), "128",
               "longest nickname, in characters; longer: not-acceptable"),
        Option("allow_unaffiliated_register", boolean, "false",
               "whether an account without an affiliation may register a nickname with "
               "a room (and so become a member); Prosody's default is no "
               "(registration-required)"),
        Option("default_persistent", boolean, "false",
               "a new room's muc#roomconfig_persistentroom"),
        Option("default_public", boolean, "false",
               "a new room's muc#roomconfig_publicroom (listed in the service's disco#items; "
               "no, as Prosody's muc_room_default_public)"),
        Option("default_members_only", boolean, "false",
               "a new room's muc#roomconfig_membersonly"),
        Option("default_moderated", boolean, "false",
               "a new room's muc#roomconfig_moderatedroom"),
        Option("default_whois", choice("moderators", "anyone"), "moderators",
               "a new room's muc#roomconfig_whois: who sees occupants' real JIDs"),
        Option("locking", boolean, "true",
               "a new room is locked (others get item-not-found) until its owner "
               "configures it or accepts the default configuration (an instant room)"),
        Option("lock_timeout", integer(1), "300",
               "seconds after which a locked room nobody configured opens anyway (as "
               "Prosody's muc_room_lock_timeout)"),
        *ARCHIVE_OPTIONS,
    ]
    stores = dict(storelib.STORES)

    def __init__(self, server: Any, config: dict[str, Any]):
        super().__init__(server, config)
        self.title = config["name"]
        self.identities = [("conference", "text", config["name"])]
        self.hooks = Hooks()
        self.features_on: list[Feature] = []
        self.rooms: dict[str, Room] = {}
        #: creator's bare JID → how many existing rooms it created
        self.created_by: dict[str, int] = {}
        self.roomstore: storelib.RoomStore | None = None
        self._ready: defer.Deferred | None = None
        self.loaded = False
        #: the last write of each room, so an answer can wait until it is durable
        self._writes: dict[str, defer.Deferred] = {}
        #: real JID → (bare, resource, is it ours): parsed once for deliveries
        self._where: dict[str, tuple[str, str, bool]] = {}
        #: rooms whose output waits on storage (an archive write, a history read)
        self.gates = Gates(self.deliver)

    # -- life cycle ------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.features_on = [feature(self) for feature in FEATURES]
        # bans before members-only (forbidden says more than
        # registration-required; Prosody checks members-only first)
        self._unhooks.append(self.hooks.hook("pre-join", refuse_outcasts, 10))
        self.roomstore = storelib.RoomStore(self.store[storelib.ROOMS],
                                            self.store[storelib.HISTORY])
        self._ready = self.roomstore.load()
        self._ready.addCallback(self._loaded)
        self._ready.addErrback(lambda f: self.log.failure(
            "muc: loading the rooms of {domain} failed", f, domain=self.domain))

    def _loaded(self, found: dict) -> None:
        for jid, (record, history, keys) in found.items():
            room = Room(self, jid, self.room_config(record.get("config", {})),
                        record.get("affiliations"), record.get("affiliation_data"),
                        record.get("data"))
            room.state["stored_history"] = (history, keys)
            self.rooms[jid] = room
            creator = room.data.get("creator")
            if creator:
                self.created_by[creator] = self.created_by.get(creator, 0) + 1
            self.hooks.fire("room-loaded", room=room)
        self.loaded = True
        self.log.info("muc: {count} persistent room(s) on {domain}", count=len(found),
                      domain=self.domain)

    def stopService(self) -> Any:
        # XEP-0045 status 332: everyone is told the service is going away
        for room in list(self.rooms.values()):
            for occupant in list(room.occupants.values()):
                room.remove(occupant, codes=["332"])
        for feature in self.features_on:
            feature.close()
        self.features_on = []
        return super().stopService()

    def ready(self, then: Any) -> Any:
        """Call ``then()`` now, or once the stored rooms are loaded."""
        if self.loaded or self._ready is None:
            return then()
        d: defer.Deferred = defer.Deferred()
        self._ready.addCallback(lambda _: d.callback(None))
        return d.addCallback(lambda _: then())

    # -- configuration ---------------------------------------------------------

    def room_config(self, stored: dict[str, Any] | None = None) -> dict[str, Any]:
        """A room's configuration: every feature's field at its default, then
        what ``stored`` has."""
        config: dict[str, Any] = {}
        for feature in self.features_on:
            for spec in feature.fields:
                config[spec.key] = spec.default(self.config)
        if stored:
            config.update(stored)
        return config

    def config_fields(self) -> list:
        return [spec for feature in self.features_on for spec in feature.fields]

    def is_admin(self, bare: str) -> bool:
        parsed = jidlib.parse_or_none(bare)
        return parsed is not None and self.server.is_admin(parsed)

    def may_create(self, bare: str) -> bool:
        rule = self.config["create"]
        if rule == "anyone" or self.is_admin(bare):
            return True
        if rule == "admins":
            return False
        parsed = jidlib.parse_or_none(bare)
        return parsed is not None and parsed.host in self.router.hosts

    # -- rooms -----------------------------------------------------------------

    def create(self, jid: str, creator: str, stanza: domish.Element | None = None) -> Room:
        """A new room, owned by ``creator`` (not yet joined by anyone)."""
        if not self.may_create(creator):
            raise MUCError("not-allowed", "cancel", "Room creation is restricted")
        if len(self.rooms) >= self.config["max_rooms"]:
            raise MUCError("policy-violation", "wait", "Too many rooms on this service")
        if not self.is_admin(creator) and \
                self.created_by.get(creator, 0) >= self.config["max_rooms_per_user"]:
            raise MUCError("policy-violation", "wait",
                           "You have created too many rooms already")
        room = Room(self, jid, self.room_config())
        room.affiliations[creator] = "owner"
        room.data["creator"] = creator
        room.data["created"] = self.clock.seconds()
        self.rooms[jid] = room
        self.created_by[creator] = self.created_by.get(creator, 0) + 1
        self.hooks.fire("room-created", room=room, creator=creator, stanza=stanza)
        return room

    def discard(self, room: Room, delete: bool = False) -> None:
        """Forget ``room`` (empty and temporary, or destroyed)."""
        if self.rooms.get(room.jid) is not room:
            return
        del self.rooms[room.jid]
        room.destroyed = True
        creator = room.data.get("creator")
        if creator and self.created_by.get(creator):
            self.created_by[creator] -= 1
            if not self.created_by[creator]:
                del self.created_by[creator]
        self.hooks.fire("room-discarded", room=room)
        if delete or room.state.get("stored"):
            self._write(room, self.roomstore.delete(room.jid))
            room.state["stored"] = False

    def save(self, room: Room) -> defer.Deferred:
        """Write a persistent room (a temporary one that was stored is deleted).
        Returns its write, durable when it fires."""
        if room.destroyed:
            return defer.succeed(None)
        if room.config.get("persistent"):
            if not room.state.get("stored"):
                # first time in storage: no history rows of an earlier room
                # of the same name may come back with it
                self._write(room, self.roomstore.history.clear(room.jid))
            room.state["stored"] = True
            return self._write(room, self.roomstore.save(room))
        if room.state.get("stored"):
            room.state["stored"] = False
            return self._write(room, self.roomstore.delete(room.jid))
        return self.written(room)

    def _write(self, room: Room, d: defer.Deferred) -> defer.Deferred:
        d.addErrback(lambda f: self.log.failure("muc: writing {room} failed", f, room=room.jid))
        self._writes[room.jid] = d

        def done(result: Any) -> Any:
            if self._writes.get(room.jid) is d:
                del self._writes[room.jid]
            return result
        d.addBoth(done)
        return d

    def written(self, room: Room) -> defer.Deferred:
        """Fires once every write of ``room`` issued so far is durable."""
        pending = self._writes.get(room.jid)
        if pending is None:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        pending.addBoth(lambda result: (d.callback(None), result)[1])
        return d

    def after_writes(self, room: Room, reply: Any) -> Any:
        """``reply`` once the room's writes are durable (an answer the client may
        take as "stored")."""
        pending = self._writes.get(room.jid)
        if pending is None:
            return reply
        return self.written(room).addCallback(lambda _: reply)

    def reply_then(self, room: Room, reply: domish.Element, then: Any) -> Any:
        """Send ``reply`` once the room's writes are durable, and only then
        call ``then()`` (a notice to the occupants that must follow the
        answer, as Prosody orders them)."""
        def send(_: Any) -> bool:
            self.router.route(reply)
            then()
            return True
        return self.written(room).addCallback(send)

    # -- delivery --------------------------------------------------------------

    def deliver(self, fan: Fanout, real: str) -> None:
        """One copy of ``fan`` to the real session ``real`` (the hot path of
        every room broadcast: the JID is parsed once and remembered). While
        the room's output waits (:mod:`.gate`), the copy waits in line."""
        if self.gates and self.gates.hold_delivery(fan, real):
            return
        where = self._where.get(real)
        if where is None:
            parsed = jidlib.parse_or_none(real)
            if parsed is None:
                return
            if len(self._where) >= _WHERE_BOUND:
                self._where.clear()
            where = self._where[real] = (parsed.userhost(), parsed.resource or "",
                                         parsed.host in self.router.hosts)
        bare, resource, local = where
        if local:
            session = self.router.sessions.get(bare, _NONE).get(resource)
            if session is not None:
                fan.send(session, real)
            else:
                self.clock.callLater(0, self._session_gone, fan.stanza, real)
            return
        self.router.route(fan.copy(real))

    def _session_gone(self, stanza: domish.Element, real: str) -> None:
        """What the recipient's server would have bounced: the session left
        without telling the room."""
        sender = jidlib.parse_or_none(stanza.getAttribute("from"))
        if sender is None:
            return
        room = self.rooms.get(sender.userhost())
        if room is None:
            return
        occupant = room.by_real.get(real)
        if occupant is not None:
            room.leave(occupant, real, codes=("333",), status="Kicked: service unavailable")

    def send_error(self, stanza: domish.Element, error: MUCError) -> None:
        """The error reply to ``stanza``, with the ``by`` Prosody puts in:
        the room, or the service for a room that does not exist (left out
        where it is the reply's own ``from``)."""
        if stanza.getAttribute("type") in ("error", "result"):
            return
        reply = stanza_error(stanza, error.condition, error.type, error.text)
        to = jidlib.parse_or_none(stanza.getAttribute("to"))
        by = error.by
        if by is None and to is not None:
            by = to.userhost() if to.userhost() in self.rooms else self.domain
        for child in reply.elements():
            if child.name == "error":
                if by and by != stanza.getAttribute("to"):
                    child["by"] = by
                if error.extra is not None:
                    child.addChild(error.extra)
        self.router.route(reply)

    # -- stanzas ---------------------------------------------------------------

    def _room_of(self, event: StanzaEvent) -> Room | None:
        return self.rooms.get(event.to.userhost())

    def _guard(self, event: StanzaEvent, work) -> Any:
        """Run ``work`` once the rooms are loaded; a :class:`MUCError` it
        raises becomes the error reply."""
        def run() -> Any:
            try:
                result = work()
            except MUCError as error:
                self.send_error(event.stanza, error)
                return True
            if isinstance(result, defer.Deferred):
                result.addErrback(self._deferred_error, event)
            return True if result is None else result
        return self.ready(run)

    def _deferred_error(self, failure: Any, event: StanzaEvent) -> Any:
        if failure.check(MUCError):
            self.send_error(event.stanza, failure.value)
            return True
        return failure

    def _real(self, event: StanzaEvent) -> str | None:
        return event.from_.full() if event.from_ is not None else None

    @handles("presence/full")
    def presence_to_occupant(self, event: StanzaEvent) -> Any:
        def work() -> None:
            real = self._real(event)
            if real is None:
                return
            nick = event.to.resource
            room = self._room_of(event)
            ptype = event.type
            if len(nick) > self.config["max_nick_length"]:
                raise MUCError("not-acceptable", "modify", "That nickname is too long")
            if room is None:
                if ptype is None and next(event.stanza.elements(ns.MUC, "x"), None) is not None:
                    room = self.create(event.to.userhost(), event.from_.userhost(),
                                       event.stanza)
                    try:
                        room.join(event.stanza, real, nick, created=True)
                    except MUCError as error:
                        error.by = error.by or room.jid
                        self.discard(room)
                        raise
                    return
                if ptype != "error":
                    raise MUCError("item-not-found", "cancel")
                return
            room.handle_presence(event.stanza, real, nick)
        return self._guard(event, work)

    @handles("presence/bare")
    def presence_to_room(self, event: StanzaEvent) -> Any:
        """A presence to the room itself: from an occupant it goes to its
        nick (clients send presence updates and leaves there, as Prosody
        takes them); a join without a nick is ``jid-malformed`` (XEP-0045
        §7.2.1)."""
        def work() -> None:
            real = self._real(event)
            room = self._room_of(event)
            if real is None:
                return
            occupant = room.by_real.get(real) if room is not None else None
            if occupant is not None:
                room.handle_presence(event.stanza, real, occupant.nick)
            elif event.type is None:
                raise MUCError("jid-malformed", "modify")
            elif room is None and event.type != "error":
                raise MUCError("item-not-found", "cancel")
        return self._guard(event, work)

    def _to_room(self, event: StanzaEvent, work) -> Any:
        """:meth:`_guard` for a stanza that needs its room: ``work(room,
        real)``; a room that does not exist is ``item-not-found`` (never
        sent for an error or a result, see :meth:`send_error`)."""
        def run() -> Any:
            real = self._real(event)
            if real is None:
                return None
            room = self._room_of(event)
            if room is None:
                raise MUCError("item-not-found", "cancel")
            return work(room, real)
        return self._guard(event, run)

    @handles("message/bare")
    def message_to_room(self, event: StanzaEvent) -> Any:
        def work(room: Room, real: str) -> None:
            if event.type == "error":
                room.kick_bounced(event.stanza, real)
            elif event.type == "groupchat":
                room.handle_groupchat(event.stanza, real)
            elif not room.hooks.fire("message-to-room", room=room, stanza=event.stanza,
                                     real=real, occupant=room.by_real.get(real)):
                raise MUCError("bad-request", "cancel")
        return self._to_room(event, work)

    @handles("message/full")
    def message_to_occupant(self, event: StanzaEvent) -> Any:
        return self._to_room(event, lambda room, real: room.handle_private(
            event.stanza, real, event.to.resource))

    @handles("iq/bare")
    def iq_to_room(self, event: StanzaEvent) -> Any:
        def work(room: Room, real: str) -> Any:
            if event.type not in ("get", "set"):
                return True
            payload = event.payload
            return room.hooks.fire(f"iq/{event.type}/{payload.uri}:{payload.name}", room=room,
                                   event=event, real=real, occupant=room.by_real.get(real))
        return self._to_room(event, lambda room, real: _answered(work(room, real)))

    @handles("iq/full")
    def iq_to_occupant(self, event: StanzaEvent) -> Any:
        def work(room: Room, real: str) -> Any:
            if event.type not in ("get", "set"):
                return True
            return room.hooks.fire("iq-to-occupant", room=room, event=event, real=real,
                                   occupant=room.by_real.get(real), nick=event.to.resource)
        return self._to_room(event, lambda room, real: _answered(work(room, real)))

    # -- service disco ---------------------------------------------------------

    def disco_items(self, event: StanzaEvent) -> Any:
        """The public rooms (XEP-0045 §6.3), each with its name."""
        if event.payload.getAttribute("node"):
            return event.error("item-not-found")

        def answer() -> domish.Element:
            query = domish.Element((ns.DISCO_ITEMS, "query"))
            requester = event.from_.userhost() if event.from_ is not None else ""
            for jid in sorted(self.rooms):
                room = self.rooms[jid]
                if room.hooks.fire("room-listed", room=room, requester=requester) is False:
                    continue
                item = query.addElement("item")
                item["jid"] = jid
                item["name"] = room.config.get("name") or room.name
            return event.reply(query)
        return self.ready(answer)

    # -- accounts --------------------------------------------------------------

    @handles("account-deleted")
    def forget(self, user: str) -> Any:
        """The account loses its affiliations everywhere (a room it alone
        owned keeps its other members; the server admins still own it)."""
        writes = []
        for room in list(self.rooms.values()):
            if user in room.affiliations or user in room.affiliation_data:
                room.affiliations.pop(user, None)
                room.affiliation_data.pop(user, None)
                writes.append(self.save(room))
        self.created_by.pop(user, None)
        if writes:
            return defer.gatherResults(writes, consumeErrors=True)
        return None
