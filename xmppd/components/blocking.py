"""XEP-0191 (1.3): the blocking command — a user's list of JIDs they never hear from.

The protocol (§3.2–§3.5) is three iqs a client sends to its own account:
``<blocklist/>`` (get) returns the list and marks that resource as wanting
pushes; ``<block/>`` and ``<unblock/>`` (set) change it, answered with a
result and pushed, as an iq set carrying the same element, to every resource
that asked for the list. An empty ``<unblock/>`` clears the whole list (§3.5);
an empty ``<block/>`` is a bad-request (§3.3). One malformed JID fails the
whole command with jid-malformed and changes nothing.

Enforcement, in both directions, with the JID matching of §6 (the XEP-0016
order): an item ``user@domain/resource`` or ``domain/resource`` matches that
exact address, ``user@domain`` matches it with any resource, and ``domain``
matches the domain and every address at it, but not its subdomains.

* Inbound (``inbound/bare``, ``inbound/full``), §3.3: presence of every kind
  is dropped without answer; iq get/set gets service-unavailable, other iqs
  are dropped; chat and normal messages get service-unavailable, so the user
  looks offline to the blocked JID. Two exceptions follow Prosody: groupchat
  and headline messages are dropped (ejabberd does the same: an error there
  can get the user kicked from a room), and so is a message to a full JID
  whose session is online (Prosody #690: that is how MUC private messages
  arrive, and the room would see the error).
* Outbound (``pre-message``, ``pre-iq``, ``pre-presence``), §3.3: a message or
  an iq get/set to a blocked JID is not routed; the client gets
  ``<not-acceptable/>`` with ``<blocked xmlns='urn:xmpp:blocking:errors'/>``.
  Errors and iq results are dropped without an answer (never answer an error,
  RFC 6120 §8.3.1). Presence is dropped silently: most of it is the presence
  component's broadcast on the session's behalf, and an error per broadcast
  per blocked subscriber would be noise. ``unsubscribe`` and ``unsubscribed``
  are let through, as Prosody's presence handling does: they only end what
  the blocked JID gets, and stopping them would leave the user no way to
  revoke a blocked contact's subscription short of unblocking it.
* Never blocked: the user's own account (the §5 note: one resource is never
  blocked from another) and the bare address of one of our own domains, which
  is the server itself — blocking it would break the session, not a contact.

Presence on change (§3.3, §3.4): when a block makes a JID match that did not
before, and the roster says it may see the user's presence (subscription
``from`` or ``both``), each available session sends it unavailable presence;
when an unblock makes it stop matching, each available session sends it its
current presence again, with the XEP-0203 delay of when it was sent, as
Prosody does (its unblock probes on the contact's behalf, and a probe's
answer is stamped). The server sends both (origin None), so they skip the
``pre-presence`` check that would stop them. A contact the user only sent
directed presence to is not told: the presence component owns that state.
Without a roster component nobody is told (nobody subscribes either).

Waiting requests (as Prosody): blocking a JID whose subscription request
waits for the user's answer drops the request, silently — it would never be
shown while blocked, and an unblock should not bring back a request the user
had ruled out. Only a JID named exactly (the request's bare JID) does this.

Storage and the hot path: the router asks "is this blocked?" for every
stanza to or from a local user and needs the answer synchronously, so every
blocklist lives in memory (a dict of frozensets; users without one cost a
dict miss). All lists are read once, when storage is open; a change is
written through — durable first, then applied in memory, then answered and
pushed — so a block is in force from the moment the client hears it is.
The trade-offs: memory grows with the total number of blocked JIDs (each list
is capped by ``max_items``), start-up reads every list (one ``get`` per user
that has one), and a block takes effect when acknowledged, not when sent.
Until the lists are loaded, stanzas to and from local users are held and
routed again afterwards, rather than let through unchecked (clients cannot
log in before storage is open, so the window is the loading time); if the
lists cannot be read the server stops, as it does when storage cannot open.
Edits of one user's list are serialised, so two concurrent commands never
lose each other.
"""

from __future__ import annotations

import secrets
from typing import Any, Iterable

from twisted.internet import defer, reactor
from twisted.words.xish import domish

from xmppd import jid as jidlib
from xmppd import ns
from xmppd.component import Component, Option, handles
from xmppd.components.presence import stamped_presence
from xmppd.config import integer
from xmppd.locks import KeyedLock
from xmppd.router.events import presence
from xmppd.subscription import State

#: Outbound presence types that only end a subscription; never blocked (see above).
_ENDING = frozenset(("unsubscribe", "unsubscribed"))
#: Before the router's usual handlers, as Prosody's mod_blocklist (priority 100).
PRIORITY = 100


def matches(blocked: frozenset[str] | set[str], jid: Any) -> bool:
    """Does a blocklist match ``jid`` (a parsed JID)? XEP-0191 §6: the full
    JID, the bare JID, then the domain; ``domain/resource`` is a full JID."""
    if jid.host in blocked:
        return True
    if jid.user is not None and jid.userhost() in blocked:
        return True
    return jid.resource is not None and jid.full() in blocked


class BlockingComponent(Component):
    """XEP-0191 blocking command: the list, its pushes, and its enforcement."""

    name = "blocking"
    features = [ns.BLOCKING]
    stores = {"blocklist": "keyvalue"}
    options = [
        Option("max_items", integer(1), "1000", "most JIDs one user's blocklist may hold"),
    ]

    def __init__(self, server, config):
        super().__init__(server, config)
        #: bare JID → the prepared JID strings it blocks (absent: blocks nothing)
        self._lists: dict[str, frozenset[str]] = {}
        #: bare JID → resource → the session that asked for the blocklist (§3.2)
        self._interested: dict[str, dict[str, Any]] = {}
        #: stanzas waiting for the lists to load, as (stanza, origin); None once loaded
        self._held: list[tuple[domish.Element, Any]] | None = []
        self._locks = KeyedLock()

    # -- start-up: every list into memory ----------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._lists.clear()
        self._held = []
        ready = getattr(self.server, "storage_ready", None) or defer.succeed(None)
        ready.addCallback(self._storage_ready)

    def _storage_ready(self, result: Any) -> Any:
        # Not chained into storage_ready: other components wait on it too.
        self._load_all().addErrback(self._load_failed)
        return result

    @defer.inlineCallbacks
    def _load_all(self):
        store = self.store["blocklist"]
        users = yield store.users()
        values = yield defer.gatherResults([store.get(user) for user in users],
                                           consumeErrors=True)
        for user, value in zip(users, values):
            if value:
                self._lists[user] = frozenset(value)
        self.log.info("loaded {count} blocklists", count=len(self._lists))
        self._release_held()

    def _load_failed(self, failure) -> None:
        # Fail closed, as the server does when storage cannot open: running
        # without the lists would deliver what users blocked.
        self.log.failure("cannot load the blocklists; stopping", failure)
        if reactor.running:
            reactor.stop()

    def _release_held(self) -> None:
        held, self._held = self._held or [], None
        for stanza, origin in held:
            self.router.route(stanza, origin)

    def _hold(self, event) -> bool:
        self._held.append((event.stanza, event.origin))
        return True

    def stopService(self):
        self._interested.clear()
        return super().stopService()

    @handles("account-deleted")
    def account_deleted(self, user: str) -> None:
        """The account is gone (its stored list purged already): its list and
        interest in pushes go from memory too, so a new account of the same
        name blocks nobody."""
        self._lists.pop(user, None)
        self._interested.pop(user, None)

    # -- the API other components may use ----------------------------------------------

    def blocklist(self, user: str) -> frozenset[str]:
        """The JIDs ``user`` blocks (prepared strings); empty if none."""
        return self._lists.get(user, frozenset())

    def is_blocked(self, user: str, jid: Any) -> bool:
        """Does ``user`` (a bare JID string) block ``jid`` (a parsed JID)?"""
        blocked = self._lists.get(user)
        return bool(blocked) and not self._exempt(user, jid) and matches(blocked, jid)

    def _exempt(self, user: str, jid: Any) -> bool:
        """The user's own account and our own server are never blocked."""
        if jid.user is None:
            return jid.resource is None and jid.host in self.router.hosts
        return jid.userhost() == user

    # -- §3.2: retrieving the list ----------------------------------------------------------

    @handles(f"iq-get/self/{ns.BLOCKING}:blocklist")
    def get(self, event):
        user, resource = event.from_.userhost(), event.from_.resource
        if resource is not None and event.origin is not None:
            self._interested.setdefault(user, {})[resource] = event.origin
        payload = domish.Element((ns.BLOCKING, "blocklist"))
        for jid in sorted(self.blocklist(user)):
            payload.addElement("item")["jid"] = jid
        return event.reply(payload)

    @handles("resource-unbind")
    def unbound(self, session):
        interested = self._interested.get(session.bare)
        if interested is not None and interested.get(session.resource) is session:
            del interested[session.resource]
            if not interested:
                del self._interested[session.bare]
        return False

    # -- §3.3–§3.5: block and unblock -------------------------------------------------------

    @handles(f"iq-set/self/{ns.BLOCKING}:block")
    def block(self, event):
        return self._command(event, blocking=True)

    @handles(f"iq-set/self/{ns.BLOCKING}:unblock")
    def unblock(self, event):
        return self._command(event, blocking=False)

    def _command(self, event, blocking: bool):
        jids = []
        for item in event.payload.elements(ns.BLOCKING, "item"):
            try:
                jid = jidlib.parse(item.getAttribute("jid") or "")
            except jidlib.InvalidJID:
                return event.error("jid-malformed", "modify",
                                   f"not a valid JID: {item.getAttribute('jid') or ''!r}"[:200])
            if jid.full() not in jids:
                jids.append(jid.full())
        if blocking and not jids:
            return event.error("bad-request", "modify", "a block command needs at least one item")
        user = event.from_.userhost()
        return self._locks.run(user, self._apply, event, user, jids, blocking)

    @defer.inlineCallbacks
    def _apply(self, event, user: str, jids: list[str], blocking: bool):
        before = self.blocklist(user)
        if blocking:
            after = before.union(jids)
        elif jids:
            after = before.difference(jids)
        else:
            after = frozenset()  # §3.5: unblock everything
        if blocking and len(after) > self.config["max_items"]:
            return event.error("not-allowed", text=f"the blocklist is full "
                                                   f"({self.config['max_items']} JIDs)")
        if after != before:
            store = self.store["blocklist"]
            if after:
                yield store.set(user, sorted(after))
                self._lists[user] = after
            else:
                yield store.delete(user)
                self._lists.pop(user, None)
        self.router.reply(event, event.reply())
        self._push(user, blocking, jids)
        if after != before:
            try:
                yield self._tell_contacts(user, before, after)
                if blocking:
                    yield self._drop_requests(user, after.difference(before))
            except Exception:  # the command succeeded and was answered already
                self.log.failure("telling {user}'s contacts of a blocklist change", user=user)
        return True

    @defer.inlineCallbacks
    def _drop_requests(self, user: str, blocked: Iterable[str]):
        """Forget the waiting subscription requests of JIDs just blocked."""
        rosters = self.server.components.get("roster")
        if rosters is None:
            return
        roster = yield rosters.load(user)
        for jid in blocked:
            item = roster.items.get(jid)
            if item is not None and item.pending_in is not None:
                state = item.state
                yield rosters.apply(roster, jid, State(state.subscription, state.pending_out,
                                                       False))

    def _push(self, user: str, blocking: bool, jids: Iterable[str]) -> None:
        """§3.3/§3.4/§3.5: the change, to each resource that asked for the list."""
        interested = self._interested.get(user)
        if not interested:
            return
        sessions = self.router.resources(user)
        jids = list(jids)
        for resource, session in list(interested.items()):
            if sessions.get(resource) is not session:
                del interested[resource]  # gone, or replaced by a session that did not ask
                continue
            iq = domish.Element((ns.CLIENT, "iq"))
            iq["type"], iq["id"] = "set", "block-push-" + secrets.token_hex(6)
            iq["from"], iq["to"] = user, session.jid.full()
            command = iq.addElement((ns.BLOCKING, "block" if blocking else "unblock"))
            for jid in jids:
                command.addElement("item")["jid"] = jid
            session.send(iq)
        if not interested:
            del self._interested[user]

    @defer.inlineCallbacks
    def _tell_contacts(self, user: str, before: frozenset[str], after: frozenset[str]):
        """§3.3: unavailable to who may see the user's presence and is now blocked;
        §3.4: the current presence to who may see it and no longer is."""
        rosters = self.server.components.get("roster")
        sessions = [s for s in self.router.resources(user).values() if s.available]
        if rosters is None or not sessions:
            return
        roster = yield rosters.load(user)
        subscribers = set(roster.subscribers())
        for target in _changed_targets(subscribers, before, after):
            now_blocked = matches(after, jidlib.parse(target))
            for session in sessions:
                if not session.available:
                    continue
                full = session.jid.full()
                if now_blocked:
                    self.router.route(presence(full, target, "unavailable"))
                elif session.presence is not None:
                    self.router.route(stamped_presence(session, target))

    # -- enforcement -------------------------------------------------------------------------

    @handles("inbound/bare", priority=PRIORITY)
    @handles("inbound/full", priority=PRIORITY)
    def inbound(self, event):
        """§3.3: a stanza from a JID the recipient blocks."""
        if self._held is not None:
            return self._hold(event)
        to, sender = event.to, event.from_
        if sender is None or not self.is_blocked(to.userhost(), sender):
            return False
        kind, stype = event.kind, event.type
        if kind == "iq":
            return event.error("service-unavailable") if stype in ("get", "set") else True
        if kind == "message" and stype in (None, "normal", "chat"):
            if to.resource is not None and to.resource in self.router.resources(to.userhost()):
                return True  # Prosody #690: MUC private messages
            return event.error("service-unavailable")
        return True  # presence of any kind, errors, groupchat, headline: silence

    @handles("pre-message", priority=PRIORITY)
    @handles("pre-iq", priority=PRIORITY)
    @handles("pre-presence", priority=PRIORITY)
    def outbound(self, event):
        """§3.3: a stanza a local client sends to a JID its user blocks."""
        if self._held is not None:
            return self._hold(event)
        origin = event.origin
        user = getattr(origin, "bare", None)
        if event.to is None or not user or not self.is_blocked(user, event.to):
            return False
        kind, stype = event.kind, event.type
        if kind == "presence":
            return stype not in _ENDING
        if stype == "error" or (kind == "iq" and stype == "result"):
            return True
        error = event.error("not-acceptable", "cancel", "you have blocked this JID")
        next(error.elements(ns.CLIENT, "error")).addElement((ns.BLOCKING_ERRORS, "blocked"))
        return error


def _changed_targets(subscribers: set[str], before: frozenset[str],
                     after: frozenset[str]) -> list[str]:
    """Addresses whose blocked state changed and who may see the user's presence:
    subscribers (bare JIDs) and the full-JID items, of a subscriber, that changed."""
    candidates = set(subscribers)
    for item in before.symmetric_difference(after):
        if "/" in item and item.split("/", 1)[0] in subscribers:
            candidates.add(item)
    changed = {address for address in candidates
               if matches(before, jidlib.parse(address)) != matches(after, jidlib.parse(address))}
    # A full JID whose bare JID is told already needs no second stanza.
    return sorted(a for a in changed if "/" not in a or a.split("/", 1)[0] not in changed)
