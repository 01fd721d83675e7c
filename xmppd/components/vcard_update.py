"""XEP-0153: vCard-based avatars — the photo's hash in every available presence.

Contacts learn that a user's avatar changed from a hash in the user's
presence, ``<x xmlns='vcard-temp:x:update'><photo>SHA-1 hex</photo></x>``,
and fetch the vCard (:mod:`xmppd.components.vcard`) only when it is new to
them. Clients that never heard of XEP-0153 would leave contacts without
avatars, so the server adds it, as Prosody's mod_vcard_legacy does (Prosody
0.12's default configuration), stanza for stanza:

- Into every *available* presence (no 'type') a local client sends: its
  broadcast, and directed presence too (to a chat room, to a full JID).
  Unavailable, probes, subscriptions and errors are left alone.
- No ``x`` element: ``<x xmlns='vcard-temp:x:update'><photo>HASH</photo></x>``
  is appended, where HASH is the SHA-1 of the stored photo's decoded bytes —
  empty (``<photo/>``) when the vCard has no photo or the user has no vCard.
- An ``x`` with a ``photo`` (empty or not): the client's own word, left as
  it is.
- An ``x`` without a ``photo``: a ``photo`` with the hash is added to it (to
  the first ``x``, if there are several).
- Setting a new vCard does *not* re-broadcast presence: Prosody does not; a
  client that publishes a new photo sends presence again itself (slixmpp's
  XEP-0153 plugin does), and that presence carries the new hash.

The hash of each user is kept in memory, at most ``cache_size`` users (the
least recently used go first), computed from storage the first time it is
needed and replaced when the ``vcard-changed`` event says the vCard changed.
On a miss the presence waits for the storage read: the handler takes the
stanza and routes it on once the hash is known (the router holds the
sender's next stanza until then, so order is kept); if the session ended
meanwhile, the presence goes with it. Should the read fail, the presence
goes on without the element rather than with a false "no avatar".
Copies the server makes of a presence (a broadcast's, a probe's answer)
share its children, so the element added once is in all of them.
``account-deleted`` drops the user's entry.
"""

from __future__ import annotations

import collections
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.words.xish import domish

from xmppd import ns
from xmppd.component import Component, Option, handles
from xmppd.components.vcard import CHANGED, VCardChanged, photo_hash
from xmppd.config import integer
from xmppd.router.events import StanzaEvent

#: After the blocklist (100), before the presence component (0); Prosody uses 1 too.
PRIORITY = 1


class VCardUpdateComponent(Component):
    """The XEP-0153 avatar hash in users' available presence."""

    name = "vcard_update"
    options = [
        Option("cache_size", integer(1), "10000",
               "users whose avatar hash is kept in memory (about 200 bytes each); "
               "beyond that the least recently used is read from storage again"),
    ]

    def __init__(self, server, config: dict[str, Any]):
        super().__init__(server, config)
        #: bare JID → SHA-1 hex of the photo ("" for none), least recently used first
        self._hashes: collections.OrderedDict[str, str] = collections.OrderedDict()
        #: bumped by every change: a read that began before one is not cached
        self._generation = 0
        #: ids of the stanzas this component is routing on (its handler lets them pass)
        self._resuming: set[int] = set()

    def startService(self) -> None:
        super().startService()
        if self.server.components.get("vcard") is None:
            self.log.warn("vcard_update is enabled without the vcard component: "
                          "presence is left without avatar hashes")

    # -- the hash of a user's photo ------------------------------------------------------

    def photo_hash(self, user: str) -> defer.Deferred:
        """Deferred firing with the SHA-1 hex of ``user``'s vCard photo ("" for none)."""
        known = self._hashes.get(user)
        if known is not None:
            self._hashes.move_to_end(user)
            return defer.succeed(known)
        vcards = self.server.components.get("vcard")
        if vcards is None:
            return defer.succeed("")
        generation = self._generation
        d = vcards.load(user)
        d.addCallback(photo_hash)
        d.addCallback(self._remember, user, generation)
        return d

    def _remember(self, value: str, user: str, generation: int) -> str:
        if generation == self._generation:
            self._put(user, value)
        return value

    def _put(self, user: str, value: str) -> None:
        self._hashes[user] = value
        self._hashes.move_to_end(user)
        while len(self._hashes) > self.config["cache_size"]:
            self._hashes.popitem(last=False)

    @handles(CHANGED)
    def vcard_changed(self, change: VCardChanged) -> None:
        self._generation += 1
        self._put(change.user, photo_hash(change.vcard))

    @handles("account-deleted")
    def forget(self, user: str) -> None:
        self._generation += 1
        self._hashes.pop(user, None)

    # -- the user's presence on its way out ---------------------------------------------

    @handles("pre-presence", priority=PRIORITY)
    def outgoing(self, event: StanzaEvent):
        stanza = event.stanza
        if event.type is not None or id(stanza) in self._resuming:
            return False
        if getattr(stanza, "fanout", None) is not None:
            return False  # a broadcast's copy: the presence it copies came through here
        session = event.origin
        user = getattr(session, "bare", None)
        if not user or self.server.components.get("vcard") is None:
            return False
        update = next(stanza.elements(ns.VCARD_UPDATE, "x"), None)
        if update is not None and next(update.elements(ns.VCARD_UPDATE, "photo"), None) is not None:
            return False  # the client's own hash (or its "not ready"), left alone
        outcome: list = []
        d = self.photo_hash(user)
        d.addBoth(outcome.append)
        if outcome:  # known (or read at once): on its way now
            self._add_photo(stanza, update, outcome[0], user)
            return False
        # Taken, and routed on from _resume once the hash is known; the router
        # holds the session's next stanza until then.
        return d.addCallback(lambda _: self._resume(outcome[0], stanza, update, user, session))

    def _resume(self, value: Any, stanza: domish.Element, update: domish.Element | None,
                user: str, session: Any) -> bool:
        self._add_photo(stanza, update, value, user)
        if self.router.resources(user).get(getattr(session, "resource", None)) is not session:
            return True  # the session ended meanwhile: what it sent goes with it
        self._resuming.add(id(stanza))
        try:
            self.router.route(stanza, session)
        finally:
            self._resuming.discard(id(stanza))
        return True

    def _add_photo(self, stanza: domish.Element, update: domish.Element | None,
                   value: Any, user: str) -> None:
        if isinstance(value, Failure):
            self.log.failure("reading the vCard of {user}; presence sent without a hash",
                             value, user=user)
            return
        if update is None:
            update = stanza.addElement((ns.VCARD_UPDATE, "x"))
        photo = update.addElement((ns.VCARD_UPDATE, "photo"))
        if value:
            photo.addContent(value)
