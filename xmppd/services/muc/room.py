"""One room: occupants, roles, affiliations, and the routing of presence
and messages between them (XEP-0045).

The core knows no room feature by name. Where a feature may step in, the
room fires an event on the service's :class:`~xmppd.services.muc.hooks.Hooks`
(their list is in :mod:`.hooks`); passwords, members-only, moderation,
history, the subject, locking and the rest are modules in
:mod:`xmppd.services.muc.features`.

What leaves the room goes through :meth:`MUCService.deliver
<xmppd.services.muc.service.MUCService.deliver>`: one serialisation per
stanza and output shape (:class:`~xmppd.router.fanout.Fanout`), each copy
addressed to one real session — except what goes to one occupant alone (a
private message, a decline): that is routed (:meth:`Room.route_to_occupant`),
so the recipient's own server handles it as any message.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any, Iterable

from twisted.words.xish import domish

from xmppd import jid as jidlib
from xmppd import ns
from xmppd.router.events import readdressed, stanza_error
from xmppd.router.fanout import Fanout
from xmppd.services.muc.hooks import MUCError
from xmppd.services.muc.occupant import AFFILIATION_RANK, ROLE_RANK, Occupant

if TYPE_CHECKING:
    from xmppd.services.muc.service import MUCService

#: The conditions of an error bounced by an occupant's client or server that
#: mean the session is gone: the occupant is removed (status 333), as
#: Prosody's handle_kickable does.
KICKABLE_CONDITIONS = frozenset((
    "gone", "internal-server-error", "item-not-found", "jid-malformed",
    "recipient-unavailable", "redirect", "remote-server-not-found",
    "remote-server-timeout", "service-unavailable", "malformed error"))

_MUC_X = ((ns.MUC, "x"), (ns.MUC_USER, "x"))

#: who did it, in presence: (nick in the room or None, real bare JID)
Actor = tuple[str | None, str | None] | None


def _error_condition(stanza: domish.Element) -> tuple[str | None, str | None]:
    for error in stanza.elements(ns.CLIENT, "error"):
        for child in error.elements():
            if child.uri == ns.STANZA_ERRORS and child.name != "text":
                return error.getAttribute("type"), child.name
        return error.getAttribute("type"), "malformed error"
    for error in stanza.elements():
        if error.name == "error":
            for child in error.elements():
                if child.uri == ns.STANZA_ERRORS and child.name != "text":
                    return error.getAttribute("type"), child.name
    return None, "malformed error"


class Room:
    """A room of a :class:`~xmppd.services.muc.service.MUCService`."""

    def __init__(self, service: MUCService, jid: str, config: dict[str, Any],
                 affiliations: dict[str, str] | None = None,
                 affiliation_data: dict[str, dict[str, Any]] | None = None,
                 data: dict[str, Any] | None = None):
        self.service = service
        self.hooks = service.hooks
        #: the room's bare JID
        self.jid = jid
        self.name = jidlib.parse(jid).user or ""
        #: configuration: key → value (keys are the features' ConfigField keys)
        self.config = config
        #: real bare JID → owner, admin, member or outcast (none is not kept)
        self.affiliations: dict[str, str] = dict(affiliations or {})
        #: real bare JID → {"reason": …, "nick": …} kept with the affiliation
        self.affiliation_data: dict[str, dict[str, Any]] = dict(affiliation_data or {})
        #: per-feature persistent state (subject, lock, occupant-id salt …)
        self.data: dict[str, Any] = dict(data or {})
        #: per-feature state that is not stored (history buffer, timers)
        self.state: dict[str, Any] = {}
        self.occupants: dict[str, Occupant] = {}
        #: real full JID → its occupant
        self.by_real: dict[str, Occupant] = {}
        self.destroyed = False

    # -- queries ---------------------------------------------------------------

    def affiliation(self, bare: str) -> str:
        if self.service.is_admin(bare):
            return "owner"
        found = self.affiliations.get(bare)
        if found is None:
            # a banned domain bans all its accounts (as Prosody)
            host = bare.rpartition("@")[2]
            return "outcast" if self.affiliations.get(host) == "outcast" else "none"
        return found

    def owners(self) -> list[str]:
        return [j for j, a in self.affiliations.items() if a == "owner"]

    def occupant_of(self, real: str) -> Occupant | None:
        return self.by_real.get(real)

    def sessions(self) -> Iterable[tuple[str, Occupant]]:
        return self.by_real.items()

    def is_moderator(self, occupant: Occupant | None) -> bool:
        return occupant is not None and occupant.role == "moderator"

    def can_see_jids(self, recipient: Occupant | None) -> bool:
        """Whether ``recipient`` sees real JIDs (non-anonymous rooms, or a moderator)."""
        return self.config.get("whois") == "anyone" or self.is_moderator(recipient)

    def default_role(self, affiliation: str) -> str:
        role = self.hooks.fire("default-role", room=self, affiliation=affiliation)
        if role:
            return role
        if affiliation in ("owner", "admin"):
            return "moderator"
        if affiliation == "outcast":
            return "none"
        return "participant"

    def full(self, nick: str) -> str:
        return f"{self.jid}/{nick}"

    # -- stanzas to the room ---------------------------------------------------

    def handle_presence(self, stanza: domish.Element, real: str, nick: str) -> None:
        """A presence from the real session ``real`` to ``room/nick``."""
        ptype = stanza.getAttribute("type")
        occupant = self.by_real.get(real)
        if ptype == "error":
            self.kick_bounced(stanza, real, always=True)
            return
        if ptype == "probe":
            self._answer_probe(stanza, real, nick)
            return
        if ptype == "unavailable":
            if occupant is not None:
                self.leave(occupant, real, stanza)
            return
        if ptype is not None:
            if ptype not in ("visible", "invisible", "result"):
                raise MUCError("bad-request", "modify")
            return
        x = next(stanza.elements(ns.MUC, "x"), None)
        if occupant is None:
            if x is None:
                # a presence update from someone the room does not know (a
                # client that missed its own leaving): it must join again
                raise MUCError("item-not-found", "cancel",
                               "You are not currently connected to this chat")
            self.join(stanza, real, nick)
        elif occupant.nick != nick:
            self.change_nick(occupant, real, nick, stanza)
        else:
            self.hooks.fire("pre-presence-update", room=self, occupant=occupant,
                            stanza=stanza, real=real)
            occupant.set_session(real, stanza)
            if x is not None:
                # the session joins again (it lost track): what a joining
                # session gets, without a new occupant for the others
                self._send_occupant_list(occupant, real)
                self.broadcast_presence(occupant)
                self.hooks.fire("joined", room=self, occupant=occupant, real=real,
                                stanza=stanza, x=x, created=False)
            else:
                self.broadcast_presence(occupant)

    def _answer_probe(self, stanza: domish.Element, real: str, nick: str) -> None:
        asker = self.by_real.get(real)
        target = self.occupants.get(nick)
        if asker is None:
            self.service.send_error(stanza, MUCError("not-acceptable", "cancel",
                                                     "You are not currently connected to this chat"))
            return
        if target is None:
            # an occupant who left: its unavailable presence (as Prosody)
            presence = domish.Element((ns.CLIENT, "presence"))
            presence["from"], presence["to"], presence["type"] = self.full(nick), real, \
                "unavailable"
            self.service.deliver(Fanout(presence), real)
            return
        self.service.deliver(self._presence_fanout(target, self.can_see_jids(asker)), real)

    def join(self, stanza: domish.Element, real: str, nick: str, created: bool = False) -> None:
        """A session enters under ``nick`` (a new occupant, or a second session
        of the same account's occupant)."""
        bare = jidlib.parse(real).userhost()
        _check_nick(nick)
        existing = self.occupants.get(nick)
        if existing is not None and existing.bare != bare:
            raise MUCError("conflict", "cancel",
                           "That nickname is already in use by another occupant")
        affiliation = self.affiliation(bare)
        x = next(stanza.elements(ns.MUC, "x"), None)
        self.hooks.fire("pre-join", room=self, stanza=stanza, nick=nick, real=real, bare=bare,
                        affiliation=affiliation, x=x, occupant=existing, created=created)
        if existing is not None and real not in existing.sessions and \
                len(existing.sessions) >= self.service.config["max_sessions_per_nick"]:
            raise MUCError("resource-constraint", "wait",
                           "Too many sessions joined under this nickname")
        if existing is None:
            role = self.default_role(affiliation)
            if role == "none":
                raise MUCError("forbidden", "auth")
            occupant = Occupant(self.jid, nick, bare, role)
            self.occupants[nick] = occupant
        else:
            occupant = existing
        occupant.set_session(real, stanza)
        self.by_real[real] = occupant
        self._send_occupant_list(occupant, real)
        if self.by_real.get(real) is not occupant:
            return  # the session went while it was being told (see remove)
        if existing is None:
            self.broadcast_presence(occupant, joined=True, created=created)
        else:
            # one more session of the nick: everyone sees the occupant's
            # presence again (and moderators its new real JID), as Prosody
            self._send_self_presence(occupant, [real], joined=True)
            self.broadcast_presence(occupant, skip=real)
        if self.by_real.get(real) is occupant:
            self.hooks.fire("joined", room=self, occupant=occupant, real=real,
                            stanza=stanza, x=x, created=created)

    def _send_occupant_list(self, occupant: Occupant, real: str,
                            skip: str | None = None) -> None:
        """The occupants already here, to one session of ``occupant`` (real
        JIDs as that occupant may see them)."""
        with_jid = self.can_see_jids(occupant)
        for other in list(self.occupants.values()):
            if other is not occupant and other.bare != skip and not self.hooks.fire(
                    "presence-hidden", room=self, occupant=other, role=other.role):
                self.service.deliver(self._presence_fanout(other, with_jid), real)

    def leave(self, occupant: Occupant, real: str, stanza: domish.Element | None = None,
              codes: Iterable[str] = (), status: str | None = None) -> None:
        """Session ``real`` leaves; with it the last, the occupant leaves."""
        if len(occupant.sessions) > 1:
            occupant.drop_session(real)
            self.by_real.pop(real, None)
            presence = self._unavailable(occupant, stanza, status)
            x = presence.addElement((ns.MUC_USER, "x"))
            item = x.addElement("item")
            item["affiliation"], item["role"] = self.affiliation(occupant.bare), "none"
            item["jid"] = real
            for code in ("110", *codes):
                x.addElement("status")["code"] = code
            self.service.deliver(Fanout(presence), real)
            if self.occupants.get(occupant.nick) is occupant:
                self.broadcast_presence(occupant)
            return
        self.remove(occupant, codes=codes, presence=stanza, status=status)

    def remove(self, occupant: Occupant, codes: Iterable[str] = (), reason: str | None = None,
               actor: Actor = None, presence: domish.Element | None = None,
               status: str | None = None, destroy: domish.Element | None = None,
               affiliation: str | None = None) -> None:
        """Take ``occupant`` (every session) out of the room and tell everyone."""
        if self.occupants.get(occupant.nick) is not occupant:
            return
        # Out of the room first, then tell everyone: a delivery that closes a
        # session (or bounces at once) re-enters the room, which must then
        # find it gone already.
        previous_role, occupant.role = occupant.role, "none"
        del self.occupants[occupant.nick]
        for real in list(occupant.sessions):
            self.by_real.pop(real, None)
        stanza = self._unavailable(occupant, presence, status)
        self._broadcast_state(occupant, stanza, list(codes), reason=reason, actor=actor,
                              destroy=destroy, affiliation=affiliation,
                              previous_role=previous_role)
        self.hooks.fire("left", room=self, occupant=occupant)
        if not self.occupants and not self.destroyed:
            if not self.hooks.fire("room-empty", room=self):
                self.service.discard(self)

    def _unavailable(self, occupant: Occupant, presence: domish.Element | None,
                     status: str | None) -> domish.Element:
        stanza = domish.Element((ns.CLIENT, "presence"))
        stanza["from"] = occupant.jid
        stanza["type"] = "unavailable"
        if presence is not None:
            for child in presence.elements():
                if child.name == "status" and child.uri in (ns.CLIENT, None, ""):
                    stanza.children.append(child)
        if status:
            stanza.addElement("status", content=status)
        self.hooks.fire("build-presence", room=self, occupant=occupant, presence=stanza)
        return stanza

    def change_nick(self, occupant: Occupant, real: str, nick: str,
                    stanza: domish.Element) -> None:
        """XEP-0045 §7.6: 303 from the old nick, then the new nick available.
        One session of a multi-session nick moves alone (as Prosody): it sees
        its own 303, the others see a new occupant."""
        _check_nick(nick)
        if nick in self.occupants:
            raise MUCError("conflict", "cancel",
                           "That nickname is already in use by another occupant")
        self.hooks.fire("pre-nick-change", room=self, occupant=occupant, nick=nick, real=real,
                        stanza=stanza)
        if len(occupant.sessions) > 1:
            self._split_nick(occupant, real, nick, stanza)
            return
        old_jid = occupant.jid
        unavailable = domish.Element((ns.CLIENT, "presence"))
        unavailable["from"], unavailable["type"] = old_jid, "unavailable"
        own = _clone(unavailable)  # as Prosody: the session's own copy is bare
        self.hooks.fire("build-presence", room=self, occupant=occupant, presence=unavailable)
        # renamed first (see remove), announced after
        del self.occupants[occupant.nick]
        occupant.rename(nick)
        self.occupants[nick] = occupant
        occupant.set_session(real, stanza)
        self._broadcast_state(occupant, unavailable, ["303"], new_nick=nick, own=own)
        if self.occupants.get(nick) is occupant:
            self.broadcast_presence(occupant)

    def _split_nick(self, occupant: Occupant, real: str, nick: str,
                    stanza: domish.Element) -> None:
        occupant.drop_session(real)
        self.by_real.pop(real, None)
        moved = Occupant(self.jid, nick, occupant.bare, occupant.role)
        moved.set_session(real, stanza)
        self.occupants[nick] = moved
        self.by_real[real] = moved
        gone = domish.Element((ns.CLIENT, "presence"))
        gone["from"], gone["type"] = occupant.jid, "unavailable"
        x = gone.addElement((ns.MUC_USER, "x"))
        item = x.addElement("item")
        item["affiliation"], item["role"] = self.affiliation(occupant.bare), occupant.role
        item["jid"], item["nick"] = real, nick
        for code in ("303", "110"):
            x.addElement("status")["code"] = code
        self.service.deliver(Fanout(gone), real)
        if self.occupants.get(occupant.nick) is occupant:
            self.broadcast_presence(occupant)
        if self.occupants.get(nick) is moved:
            self.broadcast_presence(moved)

    # -- presence out ----------------------------------------------------------

    def _presence_stanza(self, occupant: Occupant) -> domish.Element:
        """The occupant's current presence as the room shows it (no muc#user x yet)."""
        presence = domish.Element((ns.CLIENT, "presence"))
        presence["from"] = occupant.jid
        source = occupant.presence
        if source is not None:
            presence.children = [
                child for child in source.children
                if not (isinstance(child, domish.Element) and (child.uri, child.name) in _MUC_X)]
        self.hooks.fire("build-presence", room=self, occupant=occupant, presence=presence)
        return presence

    def _x(self, occupant: Occupant, with_jid: bool, codes: Iterable[str] = (),
           reason: str | None = None, actor: Actor = None,
           new_nick: str | None = None, real: str | None = None,
           affiliation: str | None = None) -> domish.Element:
        """The muc#user ``<x/>`` of an occupant's presence: one item per
        session where real JIDs are shown (as Prosody's build_item_list),
        the actor's nick (and real JID where JIDs are shown)."""
        x = domish.Element((ns.MUC_USER, "x"))
        reals = ([real] if real else list(occupant.sessions) or [occupant.bare]) \
            if with_jid else [None]
        for jid in reals:
            item = x.addElement("item")
            item["affiliation"] = affiliation or self.affiliation(occupant.bare)
            item["role"] = occupant.role
            if jid is not None:
                item["jid"] = jid
            if new_nick is not None:
                item["nick"] = new_nick
            if actor is not None and (actor[0] or with_jid and actor[1]):
                a = item.addElement("actor")
                if actor[0]:
                    a["nick"] = actor[0]
                if with_jid and actor[1] and real is None:
                    a["jid"] = actor[1]
            if reason:
                item.addElement("reason", content=reason)
        self.hooks.fire("presence-x", room=self, occupant=occupant, x=x, with_jid=with_jid)
        for code in codes:
            x.addElement("status")["code"] = code
        return x

    def actor(self, real: str | None) -> Actor:
        """How an actor (a real full or bare JID) is named in presence: its
        nick if it is here, and its JID."""
        if real is None:
            return None
        occupant = self.by_real.get(real)
        if occupant is None:
            bare = jidlib.parse(real).userhost()
            occupant = next((o for o in self.occupants.values() if o.bare == bare), None)
        return (occupant.nick if occupant is not None else None, real)

    def _presence_fanout(self, occupant: Occupant, with_jid: bool) -> Fanout:
        presence = self._presence_stanza(occupant)
        presence.addChild(self._x(occupant, with_jid))
        return Fanout(presence)

    def broadcast_presence(self, occupant: Occupant, joined: bool = False, created: bool = False,
                           skip: str | None = None, codes: Iterable[str] = (),
                           reason: str | None = None, actor: Actor = None) -> None:
        """The occupant's current presence to everyone in the room (XEP-0045
        §7.2.3): real JIDs only to those who may see them; its own sessions
        get the self-presence (110 and the codes features add)."""
        codes = list(codes)
        presence = self._presence_stanza(occupant)
        self._broadcast_state(occupant, presence, codes, reason=reason, actor=actor,
                              joined=joined, created=created, skip=skip)

    def _broadcast_state(self, occupant: Occupant, presence: domish.Element, codes: list[str],
                         reason: str | None = None, actor: Actor = None,
                         joined: bool = False, created: bool = False,
                         new_nick: str | None = None, destroy: domish.Element | None = None,
                         affiliation: str | None = None,
                         previous_role: str | None = None,
                         own: domish.Element | None = None, skip: str | None = None) -> None:
        variants: dict[bool, Fanout] = {}

        def variant(with_jid: bool) -> Fanout:
            fan = variants.get(with_jid)
            if fan is None:
                stanza = _clone(presence)
                x = self._x(occupant, with_jid, codes, reason, actor, new_nick,
                            affiliation=affiliation)
                if destroy is not None:
                    x.addChild(destroy)
                stanza.addChild(x)
                fan = variants[with_jid] = Fanout(stanza)
            return fan

        if not self.hooks.fire("presence-hidden", room=self, occupant=occupant,
                               role=occupant.role if occupant.role != "none"
                               else previous_role):
            for real, other in list(self.by_real.items()):
                if other is occupant:
                    continue
                self.service.deliver(variant(self.can_see_jids(other)), real)
        self._send_self_presence(occupant, [r for r in occupant.sessions if r != skip],
                                 presence=own if own is not None else presence, codes=codes, reason=reason, actor=actor, joined=joined,
                                 created=created, new_nick=new_nick, destroy=destroy,
                                 affiliation=affiliation)

    def _send_self_presence(self, occupant: Occupant, reals: list[str],
                            presence: domish.Element | None = None, codes: Iterable[str] = (),
                            reason: str | None = None, actor: Actor = None,
                            joined: bool = False, created: bool = False,
                            new_nick: str | None = None, destroy: domish.Element | None = None,
                            affiliation: str | None = None) -> None:
        own = set(codes)
        own.add("110")
        if created:
            own.add("201")
        self.hooks.fire("self-codes", room=self, occupant=occupant, codes=own, joined=joined)
        ordered = sorted(own)
        base = _clone(presence) if presence is not None else self._presence_stanza(occupant)
        for real in reals:
            stanza = _clone(base)
            x = self._x(occupant, True, ordered, reason,
                        (actor[0], None) if actor else None, new_nick,
                        affiliation=affiliation)
            if destroy is not None:
                x.addChild(destroy)
            stanza.addChild(x)
            self.service.deliver(Fanout(stanza), real)

    # -- messages --------------------------------------------------------------

    def handle_groupchat(self, stanza: domish.Element, real: str) -> None:
        occupant = self.by_real.get(real)
        if occupant is None:
            raise MUCError("not-acceptable", "cancel",
                           "You are not currently connected to this chat")
        if occupant.role == "visitor":
            raise MUCError("forbidden", "auth",
                           "You do not currently have permission to speak in this chat")
        if self.hooks.fire("pre-groupchat", room=self, occupant=occupant, stanza=stanza,
                           real=real):
            return
        if not stanza.getAttribute("id"):
            # XEP-0045 muc#stable_id: every message keeps one id for all
            stanza["id"] = secrets.token_hex(9)
        self.broadcast_message(occupant, stanza)

    def message_from(self, occupant: Occupant | None, stanza: domish.Element) -> domish.Element:
        """A copy of ``stanza`` as the room sends it: from the occupant's room
        JID (the room's own when None), without 'to' and without what only the
        room may put in (occupant-id elements are the occupant_id feature's)."""
        message = domish.Element((ns.CLIENT, "message"))
        for key, value in stanza.attributes.items():
            if key not in ("to", "from"):
                message[key] = value
        message["from"] = occupant.jid if occupant is not None else self.jid
        message.children = [child for child in stanza.children if not self.forged(child)]
        return message

    def forged(self, child: Any) -> bool:
        """Whether ``child``, in a message a client asks the room to pass on,
        claims what only this server may say: a delay from the room (only
        the room's history adds those), or an XEP-0359 ``<stanza-id/>`` by
        the room or by any JID of this server's hosts or of this service.

        The room strips its own stanza-ids as Prosody's mod_muc_mam does. It
        strips the local accounts' too because it delivers to local
        occupants directly: their account's archive, which takes out a
        stanza-id by its owner from every message it receives (Prosody's
        mod_mam, at the recipient's server), never sees a groupchat
        message — and one recipient's claim must go from the one copy
        serialised for all. Stanza-ids by anyone else pass, as XEP-0359 §5
        asks of routing entities."""
        if not isinstance(child, domish.Element):
            return False
        name, uri = child.name, child.uri
        if name == "stanza-id" and uri == ns.SID:
            by = jidlib.parse_or_none(child.getAttribute("by"))
            return by is not None and (by.host == self.service.domain
                                       or by.host in self.service.router.hosts)
        if name == "delay" and uri == ns.DELAY or name == "x" and uri == "jabber:x:delay":
            return child.getAttribute("from") == self.jid
        return False

    def broadcast_message(self, occupant: Occupant | None, stanza: domish.Element,
                          event: bool = True) -> domish.Element:
        """Send a groupchat message to every session of every occupant."""
        message = self.message_from(occupant, stanza)
        if event:
            self.hooks.fire("groupchat", room=self, occupant=occupant, message=message)
        self.broadcast(message)
        return message

    def broadcast(self, stanza: domish.Element, only: Iterable[str] | None = None) -> None:
        """``stanza`` to every session in the room (or those in ``only``), one
        serialisation for all."""
        fan = Fanout(stanza)
        deliver = self.service.deliver
        for real in list(only if only is not None else self.by_real):
            deliver(fan, real)

    def handle_private(self, stanza: domish.Element, real: str, nick: str) -> None:
        """XEP-0045 §7.5: a private message to the occupant ``nick``."""
        if stanza.getAttribute("type") == "error":
            self.kick_bounced(stanza, real)
            return
        sender = self.by_real.get(real)
        if sender is None:
            raise MUCError("not-acceptable", "cancel",
                           "You are not currently connected to this chat")
        if stanza.getAttribute("type") == "groupchat":
            raise MUCError("bad-request", "modify",
                           "Private messages may not be of type groupchat")
        target = self.occupants.get(nick)
        if target is None:
            raise MUCError("item-not-found", "cancel", "Recipient not in room")
        message = self.message_from(sender, stanza)
        message.children = [child for child in message.children
                             if not (isinstance(child, domish.Element)
                                     and child.uri in (ns.MUC, ns.MUC_USER))]
        if self.hooks.fire("private-message", room=self, occupant=sender, target=target,
                           message=message):
            return
        message.addElement((ns.MUC_USER, "x"))
        self.route_to_occupant(target, message)

    def route_to_occupant(self, occupant: Occupant, message: domish.Element) -> None:
        """``message`` to every session of ``occupant`` through the router,
        as Prosody's route_to_occupant: what the room passes on to one
        person (a private message, a decline) reaches a local user as any
        message from elsewhere does — past the recipient's blocklist and
        archive (which keeps it ``with`` the room and stamps the
        recipient's stanza-id, as Prosody's mod_mam at the recipient's
        server), and routed again rather than lost if the session closes
        before writing it. In the room's output order (:mod:`.gate`)."""
        copies = [readdressed(message, real) for real in occupant.sessions]
        route = self.service.router.route

        def send(_: Any) -> None:
            for copy in copies:
                route(copy)
        self.service.gates.then(self.jid, send)

    def kick_bounced(self, stanza: domish.Element, real: str, always: bool = False) -> None:
        """An error from an occupant's session (its client or server bounced
        what the room sent): the session is gone, as Prosody judges it (any
        presence error; a message error with one of
        :data:`KICKABLE_CONDITIONS`). Its occupant leaves with status 333
        when it was the last session."""
        occupant = self.by_real.get(real)
        if occupant is None:
            return
        _, condition = _error_condition(stanza)
        if not always and condition not in KICKABLE_CONDITIONS:
            return
        status = "Kicked: " + (condition or "presence error").replace("-", " ")
        self.leave(occupant, real, codes=("333",), status=status)

    # -- roles and affiliations -----------------------------------------------

    def may_set_role(self, actor: str, target: Occupant, role: str) -> None:
        """XEP-0045 §8-9: the actor must be a moderator here (``forbidden``;
        Prosody says not-allowed); nobody takes moderation or voice from an
        admin or owner (§8.4, §9.7) nor kicks a higher affiliation (§8.2),
        and only admins and owners give or take moderator (``not-allowed``)."""
        mine = self.by_real.get(actor)
        if mine is None or mine.role != "moderator":
            raise MUCError("forbidden", "auth")
        actor_aff = self.affiliation(jidlib.parse(actor).userhost())
        target_aff = self.affiliation(target.bare)
        if target_aff in ("owner", "admin") and role in ("visitor", "participant"):
            raise MUCError("not-allowed", "cancel")
        if AFFILIATION_RANK[actor_aff] < AFFILIATION_RANK[target_aff]:
            raise MUCError("not-allowed", "cancel")
        if (target.role == "moderator" or role == "moderator") and \
                actor_aff not in ("owner", "admin"):
            raise MUCError("not-allowed", "cancel")

    def may_set_affiliation(self, actor: str, bare: str, affiliation: str) -> None:
        """XEP-0045 §9-10: owners may do anything but ban themselves or leave
        the room without an owner (``conflict``); admins move others between
        none, member and outcast — banning an admin or owner is
        ``not-allowed``, anything else about admins and owners ``forbidden``
        (owners' business); nobody else may (``forbidden``). Prosody answers
        not-allowed where the XEP says forbidden."""
        actor_bare = jidlib.parse(actor).userhost()
        actor_aff = self.affiliation(actor_bare)
        old = self.affiliations.get(bare, "none")
        if actor_aff not in ("owner", "admin"):
            raise MUCError("forbidden", "auth")
        if actor_bare == bare and affiliation == "outcast":
            raise MUCError("conflict", "cancel")
        if actor_aff == "owner":
            if actor_bare == bare and AFFILIATION_RANK[old] > AFFILIATION_RANK[affiliation] \
                    and not [j for j in self.owners() if j != bare]:
                raise MUCError("conflict", "cancel")
            return
        if affiliation in ("owner", "admin"):
            raise MUCError("forbidden", "auth")
        if old in ("owner", "admin"):
            raise MUCError("not-allowed" if affiliation == "outcast" else "forbidden",
                           "cancel" if affiliation == "outcast" else "auth")

    def set_role(self, actor: str | None, nick: str, role: str,
                 reason: str | None = None) -> None:
        """Kick (role none), grant or revoke voice and moderation. ``actor``
        is the real JID of who asks (None: the service itself)."""
        target = self.occupants.get(nick)
        if target is None:
            raise MUCError("item-not-found", "modify")
        if role not in ROLE_RANK:
            raise MUCError("not-acceptable", "modify")
        if actor is not None:
            self.may_set_role(actor, target, role)
        who = self.actor(actor)
        if role == "none":
            self.remove(target, codes=["307"], reason=reason, actor=who)
            return
        before = target.role
        target.role = role
        self.broadcast_presence(target, reason=reason, actor=who)
        self._moderator_changed(target, before)

    def _moderator_changed(self, occupant: Occupant, before: str) -> None:
        """Gaining or losing moderator changes which real JIDs an occupant
        sees in a semi-anonymous room: it gets everyone's presence again."""
        if self.config.get("whois") == "anyone" or \
                (before == "moderator") == (occupant.role == "moderator"):
            return
        for real in list(occupant.sessions):
            self._send_occupant_list(occupant, real)

    def set_affiliation(self, actor: str | None, bare: str, affiliation: str,
                        reason: str | None = None, nick: str | None = None) -> None:
        """Ban, grant or revoke membership, admin or ownership (§9, §10), as
        :meth:`may_set_affiliation` allows.

        ``actor`` is the real JID of who asks (None: the service itself)."""
        if affiliation not in AFFILIATION_RANK:
            raise MUCError("not-acceptable", "modify")
        old = self.affiliations.get(bare, "none")
        downgrade = AFFILIATION_RANK[old] > AFFILIATION_RANK[affiliation]
        if actor is not None:
            self.may_set_affiliation(actor, bare, affiliation)
        if affiliation == "none":
            self.affiliations.pop(bare, None)
            self.affiliation_data.pop(bare, None)
        else:
            if old == "none" and \
                    len(self.affiliations) >= self.service.config["max_affiliations"]:
                raise MUCError("policy-violation", "cancel",
                               "Too many affiliations in this room")
            self.affiliations[bare] = affiliation
            data = self.affiliation_data.get(bare, {})
            if affiliation != old:
                data.pop("reason", None)
            if affiliation == "outcast":
                data.pop("nick", None)  # §9.1: a banned account keeps no nick
            if reason and affiliation == "outcast":
                data["reason"] = reason  # the ban's reason, shown in the outcast list
            if nick is not None:
                data["nick"] = nick
            if data:
                self.affiliation_data[bare] = data
            else:
                self.affiliation_data.pop(bare, None)
        self.hooks.fire("affiliation-changed", room=self, jid=bare, old=old, new=affiliation,
                        actor=actor, reason=reason)
        self.service.save(self)
        role = self.default_role(self.affiliation(bare))
        codes = ([] if role != "none" else ["301"] if affiliation == "outcast" else ["321"])
        who = self.actor(actor)
        host_only = "@" not in bare
        present = [o for o in self.occupants.values()
                   if o.bare == bare or host_only and affiliation == "outcast"
                   and o.bare.rpartition("@")[2] == bare]
        for occupant in present:
            if self.occupants.get(occupant.nick) is not occupant:
                continue  # gone meanwhile (a delivery closed its session)
            before = occupant.role
            if occupant.role != role and (
                    downgrade or ROLE_RANK[occupant.role] < ROLE_RANK[role]):
                occupant.role = role
            if occupant.role == "none":
                occupant.role = before
                self.remove(occupant, codes=codes, reason=reason, actor=who)
                continue
            self.broadcast_presence(occupant, reason=reason, actor=who)
            self._moderator_changed(occupant, before)
        if not present:
            # XEP-0045 example 195: those who may see real JIDs learn of it
            message = domish.Element((ns.CLIENT, "message"))
            message["from"] = self.jid
            x = message.addElement((ns.MUC_USER, "x"))
            item = x.addElement("item")
            item["affiliation"], item["jid"] = affiliation, bare
            if reason:
                item.addElement("reason", content=reason)
            for code in codes:
                x.addElement("status")["code"] = code
            if self.config.get("whois") == "anyone":
                self.broadcast(message)
            else:
                self.broadcast(message, only=[r for r, o in self.by_real.items()
                                              if o.role == "moderator"])

    # -- destruction -----------------------------------------------------------

    def destroy(self, reason: str | None = None, alternate: str | None = None,
                password: str | None = None) -> None:
        """XEP-0045 §10.9: everyone out with the reason and alternate venue,
        then the room is gone (from storage too)."""
        self.destroyed = True
        destroy = domish.Element((ns.MUC_USER, "destroy"))
        if alternate:
            destroy["jid"] = alternate
        if reason:
            destroy.addElement("reason", content=reason)
        if password:
            destroy.addElement("password", content=password)
        # everyone out at once: each hears only of itself (§10.9, as Prosody)
        leaving = list(self.occupants.values())
        self.occupants.clear()
        self.by_real.clear()
        for occupant in leaving:
            occupant.role = "none"
            self._send_self_presence(occupant, list(occupant.sessions),
                                     presence=self._unavailable(occupant, None, None),
                                     destroy=destroy)
            self.hooks.fire("left", room=self, occupant=occupant)
        self.hooks.fire("room-destroyed", room=self, reason=reason, alternate=alternate)
        self.service.discard(self, delete=True)

    # -- status messages ------------------------------------------------------

    def status_message(self, codes: Iterable[str]) -> None:
        """A message from the room with status codes (104 after a configuration change)."""
        message = domish.Element((ns.CLIENT, "message"))
        message["type"] = "groupchat"
        message["from"] = self.jid
        x = message.addElement((ns.MUC_USER, "x"))
        for code in codes:
            x.addElement("status")["code"] = code
        self.broadcast(message)

    def error_reply(self, stanza: domish.Element, error: MUCError) -> domish.Element:
        reply = stanza_error(stanza, error.condition, error.type, error.text)
        if error.extra is not None:
            for child in reply.elements():
                if child.name == "error":
                    child.addChild(error.extra)
        return reply

    def __repr__(self) -> str:
        return f"<Room {self.jid} {len(self.occupants)} occupant(s)>"


def refuse_outcasts(ev: Any) -> None:
    """The pre-join check of bans, hooked by the service at Prosody's place
    (after members-only, before the password)."""
    if ev.affiliation == "outcast":
        raise MUCError("forbidden", "auth")


def _check_nick(nick: str) -> None:
    """Prosody's nick rules beyond resourceprep (which the router applied)."""
    if not nick.strip():
        raise MUCError("not-allowed", "modify", "Invisible Nicknames are forbidden")


def _clone(element: domish.Element) -> domish.Element:
    """A shallow copy: its own attributes and child list (children shared)."""
    copy = domish.Element((element.uri, element.name), element.defaultUri)
    copy.attributes = dict(element.attributes)
    copy.localPrefixes = dict(element.localPrefixes)
    copy.children = list(element.children)
    return copy
