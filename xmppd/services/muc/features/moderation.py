"""XEP-0425 moderated message retraction, as Prosody's community module
mod_muc_moderation does it (both protocol versions it speaks).

A moderator (an occupant with role moderator, or someone whose affiliation
would make them one) sends the room an iq naming an archived message by
its stanza-id: v0.3 ``<moderate id='…' xmlns='urn:xmpp:message-moderate:1'>
<retract xmlns='urn:xmpp:message-retract:1'/><reason/></moderate>``, or
v0.2 ``<apply-to id='…' xmlns='urn:xmpp:fasten:0'><moderate
xmlns='urn:xmpp:message-moderate:0'><retract
xmlns='urn:xmpp:message-retract:0'/><reason/></moderate></apply-to>``.
Anyone else gets ``forbidden`` (auth, "You need a role of at least
'moderator'"); an id the room's archive does not have, ``item-not-found``
(modify).

The archived message becomes a tombstone (:meth:`replace`: same id, time
and place in every query): the original's ``from``, ``id`` and
occupant-id, with Prosody's v0.2 ``<moderated by='room/nick'
xmlns='…moderate:0'><retracted stamp xmlns='…retract:0'/><reason/>
<occupant-id/></moderated>`` and, as XEP-0425 v0.3 §4 describes it,
``<retracted stamp xmlns='…retract:1'><moderated by
xmlns='…moderate:1'><occupant-id/></moderated><reason/></retracted>``
(Prosody's module keeps only the v0.2 tombstone).

Everyone in the room then gets the notice, from the room, as a groupchat
message that is itself archived and kept as history (so a client that
pages the archive later learns of it too): Prosody's announcement with
both versions, ``<apply-to id xmlns='…fasten:0'><moderated by
xmlns='…moderate:0'><occupant-id/><retract xmlns='…retract:0'/>
<reason/></moderated></apply-to>`` with the moderated author's
occupant-id beside it, and ``<retract id xmlns='…retract:1'><moderated by
xmlns='…moderate:1'><occupant-id/></moderated><reason/></retract>``
(``by`` is the moderator's room JID — or reserved nick — as XEP-0425's
example has it; Prosody's module leaves it out of the v0.3 element). The
moderator's iq is answered after the notice.
"""

from __future__ import annotations

import secrets
from typing import Any

from twisted.internet import defer
from twisted.words.xish import domish

from xmppd import jid as jidlib
from xmppd import ns
from xmppd.components.offline import delay_stamp
from xmppd.services.muc.hooks import Feature, MUCError, on
from xmppd.services.muc.occupant import ROLE_RANK, Occupant
from xmppd.services.muc.store import ARCHIVE
from xmppd.xml.stream import parse_element


def _first(parent: domish.Element, uri: str, name: str) -> domish.Element | None:
    return next(parent.elements(uri, name), None)


def _reason(parent: domish.Element) -> str | None:
    """The text of ``<reason/>`` (in the parent's namespace, as Prosody reads it)."""
    found = _first(parent, parent.uri, "reason")
    return None if found is None else str(found)


class Moderation(Feature):
    name = "moderation"

    def __init__(self, service: Any):
        super().__init__(service)
        self.on = service.config["archive"]
        if not self.on:
            self.close()

    def disco_features(self, room: Any) -> list[str]:
        return [ns.MODERATE_0, ns.MODERATE] if self.on else []

    @on(f"iq/set/{ns.FASTEN}:apply-to")
    def apply_to(self, ev: Any) -> Any:
        """v0.2: ``<apply-to/>`` fastening a ``<moderate/>`` (another
        fastening is not ours: service-unavailable)."""
        apply_to = ev.event.payload
        moderate = _first(apply_to, ns.MODERATE_0, "moderate")
        if moderate is None:
            return None
        retract = _first(moderate, ns.RETRACT_0, "retract") is not None
        return self._moderate(ev, apply_to.getAttribute("id"), retract, _reason(moderate))

    @on(f"iq/set/{ns.MODERATE}:moderate")
    def moderate(self, ev: Any) -> Any:
        """v0.3: ``<moderate id/>`` with a ``<retract/>`` (no other kind of
        moderation is defined: service-unavailable)."""
        moderate = ev.event.payload
        if _first(moderate, ns.RETRACT, "retract") is None:
            return None
        return self._moderate(ev, moderate.getAttribute("id"), True, _reason(moderate))

    def _actor(self, room: Any, real: str) -> tuple[Any, str | None, str]:
        """The moderator's occupant (None when not in the room), room JID
        (by its reserved nick when not in the room) and bare JID; refused
        unless its role (or the role its affiliation gives) is moderator."""
        bare = jidlib.parse(real).userhost()
        occupant = room.by_real.get(real)
        nick = occupant.jid if occupant is not None else None
        if nick is None:
            reserved = room.affiliation_data.get(bare, {}).get("nick")
            if reserved:
                nick = room.full(reserved)
        role = occupant.role if occupant is not None else \
            room.default_role(room.affiliation(bare))
        if ROLE_RANK.get(role or "none", 0) < ROLE_RANK["moderator"]:
            raise MUCError("forbidden", "auth", "You need a role of at least 'moderator'")
        return occupant, nick, bare

    def _moderate(self, ev: Any, stanza_id: str | None, retract: bool,
                  reason: str | None) -> defer.Deferred:
        room, event = ev.room, ev.event
        occupant, actor_nick, actor_bare = self._actor(room, ev.real)
        archive = self.service.store[ARCHIVE]

        @defer.inlineCallbacks
        def run():
            original = None
            if stanza_id:
                try:
                    original = yield archive.get(room.jid, stanza_id)
                except ValueError:
                    original = None  # not an id of this archive
            if original is None:
                raise MUCError("item-not-found", "modify")
            try:
                message = parse_element(original.value)
            except Exception:  # noqa: BLE001 - a damaged item cannot be moderated
                raise MUCError("internal-server-error", "wait") from None
            actor_id = self._occupant_id(room, actor_bare, occupant)
            author_id = _first(message, ns.OCCUPANT_ID, "occupant-id")
            if retract:
                tombstone = self._tombstone(message, actor_nick, actor_id, author_id, reason)
                replaced = yield archive.replace(room.jid, stanza_id, tombstone.toXml())
                if not replaced:
                    raise MUCError("internal-server-error", "wait")
            notice = self._notice(room, stanza_id, actor_nick, actor_id, author_id, retract,
                                  reason)
            room.broadcast_message(None, notice)
            self.service.log.info(
                "muc: message {id} in {room} moderated by {actor}, reason: {reason}",
                id=stanza_id, room=room.jid, actor=ev.real, reason=reason)
            return event.reply()
        return run()

    def _occupant_id(self, room: Any, bare: str, occupant: Any) -> str | None:
        """The moderator's XEP-0421 occupant-id (an empty presence stamped by
        the room's build-presence hooks tells it), None without that feature."""
        probe = domish.Element((ns.CLIENT, "presence"))
        target = occupant if occupant is not None else Occupant(room.jid, "", bare, "none")
        self.service.hooks.fire("build-presence", room=room, occupant=target, presence=probe)
        found = _first(probe, ns.OCCUPANT_ID, "occupant-id")
        return None if found is None else found.getAttribute("id")

    @staticmethod
    def _occupant_element(value: str) -> domish.Element:
        element = domish.Element((ns.OCCUPANT_ID, "occupant-id"))
        element["id"] = value
        return element

    def _tombstone(self, message: domish.Element, actor_nick: str | None,
                   actor_id: str | None, author_id: domish.Element | None,
                   reason: str | None) -> domish.Element:
        tombstone = domish.Element((ns.CLIENT, "message"))
        for key in ("from", "type", "id"):
            value = "groupchat" if key == "type" else message.getAttribute(key)
            if value is not None:
                tombstone[key] = value
        stamp = delay_stamp(self.service.clock.seconds())
        # Prosody's (XEP-0425 v0.2)
        moderated = tombstone.addElement((ns.MODERATE_0, "moderated"))
        if actor_nick:
            moderated["by"] = actor_nick
        moderated.addElement((ns.RETRACT_0, "retracted"))["stamp"] = stamp
        if reason is not None:
            moderated.addElement("reason", content=reason)
        if actor_id is not None:
            moderated.addChild(self._occupant_element(actor_id))
        if author_id is not None:
            tombstone.addChild(self._occupant_element(author_id.getAttribute("id") or ""))
        # XEP-0425 v0.3 §4
        retracted = tombstone.addElement((ns.RETRACT, "retracted"))
        retracted["stamp"] = stamp
        moderated1 = retracted.addElement((ns.MODERATE, "moderated"))
        if actor_nick:
            moderated1["by"] = actor_nick
        if actor_id is not None:
            moderated1.addChild(self._occupant_element(actor_id))
        if reason is not None:
            retracted.addElement("reason", content=reason)
        return tombstone

    def _notice(self, room: Any, stanza_id: str, actor_nick: str | None,
                actor_id: str | None, author_id: domish.Element | None, retract: bool,
                reason: str | None) -> domish.Element:
        notice = domish.Element((ns.CLIENT, "message"))
        notice["type"], notice["id"] = "groupchat", secrets.token_hex(8)
        apply_to = notice.addElement((ns.FASTEN, "apply-to"))
        apply_to["id"] = stanza_id
        moderated = apply_to.addElement((ns.MODERATE_0, "moderated"))
        if actor_nick:
            moderated["by"] = actor_nick
        if actor_id is not None:
            moderated.addChild(self._occupant_element(actor_id))
        if retract:
            moderated.addElement((ns.RETRACT_0, "retract"))
        if reason is not None:
            moderated.addElement("reason", content=reason)
        if author_id is not None:
            notice.addChild(self._occupant_element(author_id.getAttribute("id") or ""))
        if retract:
            retract1 = notice.addElement((ns.RETRACT, "retract"))
            retract1["id"] = stanza_id
            moderated1 = retract1.addElement((ns.MODERATE, "moderated"))
            if actor_nick:
                moderated1["by"] = actor_nick
            if actor_id is not None:
                moderated1.addChild(self._occupant_element(actor_id))
            if reason is not None:
                retract1.addElement("reason", content=reason)
        return notice
