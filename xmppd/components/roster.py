"""RFC 6121 §2: the roster — get, set, remove, pushes — with XEP-0237 versioning.

The roster component owns every user's contact list and is the one place that
reads or writes it: the presence component asks it for subscription states
and hands it the new ones (:meth:`RosterComponent.load`,
:meth:`RosterComponent.apply`), last activity and blocking ask who may see a
user's presence. A change is durable before anyone hears of it: the store
write fires first, then the iq result, then the roster push — the order
Prosody's mod_roster sends them in (RFC 6121 §2.3.2 leaves it open).

Roster results always carry the roster's version (XEP-0237), also when the
client sent no ``ver``: Prosody does the same, and a client that learns the
version from its first get can sync incrementally from then on. A get whose
``ver`` is the current one is answered with an empty result; an older
version this roster can still account for is answered with an empty result
and one push per entry changed since (XEP-0237 §3's second way; Prosody,
which keeps no per-item versions, sends the whole roster instead).

Storage is one map store ``roster``: per user, one entry per contact (bare
JID) and the key ``""`` for the roster's version. An entry that is not
*listed* is not on the roster the user sees: it is a subscription request
still waiting for an answer (RFC 6121 §3.1.3 keeps those off the roster), or
the memory of a removed item, kept so that a client syncing from an older
version learns of the removal (XEP-0237 incremental pushes).

Quotas: a roster holds at most ``max_items`` entries (contacts and waiting
requests) and ``max_size`` bytes of them, as :func:`entry_size` counts an
entry: about the size of its ``<item/>`` in a roster result, plus a waiting
request's kept text. The count of names and groups alone let one account keep
hundreds of megabytes (groups of 1 000 bytes, hundreds per item), which every
login then reads and every roster get sends. Each roster keeps its running
total (:attr:`Roster.bytes`), adjusted per changed entry when it is saved, so
checking a set costs the size of that one item, not the roster's.

Beyond either cap:

- a roster set adding or growing an item is answered ``not-allowed``
  (cancel), the condition the count cap already gave, so a client sees one
  condition for "full" whichever way the roster is full. RFC 6121 names none
  for a roster at its limit; the refusal is final, which ``not-allowed``
  says and ``resource-constraint`` does not (its type *wait* tells the client
  to try the same set again later, which cannot help). XEP-0049's byte cap
  answers ``policy-violation``, equally final; the roster keeps the condition
  its clients already get. Shrinking or removing an item is always allowed,
  also over a cap the operator lowered since;
- a subscription request the user sends to a new contact: ``not-allowed``
  likewise (the user's own action);
- a subscription request *to* the user from a new contact (or one whose kept
  request would pass the bytes): ``resource-constraint`` back to the sender,
  who cannot make room in someone else's roster.
"""

from __future__ import annotations

import collections
import secrets
from typing import Any, Iterable

from twisted.internet import defer
from twisted.words.xish import domish

from xmppd import jid as jidlib
from xmppd import ns
from xmppd.component import Component, Option, handles
from xmppd.config import integer
from xmppd.router.events import presence
from xmppd.subscription import State

#: Longest item name or group name accepted (bytes of UTF-8), as for JID parts.
MAX_TEXT = 1023
#: Removed items remembered for incremental sync before the oldest are dropped.
MAX_TOMBSTONES = 500
_META = ""

#: Bytes an entry counts for besides its text: the markup, subscription
#: state and flags of ``<item jid='' name='' subscription='both'
#: ask='subscribe' approved='true'></item>``, or of its stored form.
ITEM_OVERHEAD = 80
#: Bytes each group counts for besides its name: ``<group></group>``. Without
#: it, thousands of one-letter groups would cost far more than they count.
GROUP_OVERHEAD = 15


def entry_size(jid: str, name: str | None = None, groups: Iterable[str] = (),
               pending: str | None = None) -> int:
    """Bytes a roster entry counts for against ``max_size``: the UTF-8 text it
    holds (contact JID, name, groups, a waiting request's kept stanza) plus
    the markup around it — about what its ``<item/>`` takes in a roster result.

    Counted from the text rather than by serialising the entry: the same
    whatever the storage backend's format, cheap, and predictable for a user
    who wants to know how much room is left.
    """
    size = ITEM_OVERHEAD + len(jid.encode("utf-8"))
    if name:
        size += len(name.encode("utf-8"))
    for group in groups:
        size += GROUP_OVERHEAD + len(group.encode("utf-8"))
    if pending:
        size += len(pending.encode("utf-8"))
    return size


class RosterItem:
    """One contact in a user's roster (listed or not)."""

    __slots__ = ("jid", "name", "groups", "subscription", "ask", "pending_in",
                 "approved", "listed", "ver", "counted")

    def __init__(self, jid: str, name: str | None = None, groups: Iterable[str] = (),
                 subscription: str = "none", ask: bool = False, pending_in: str | None = None,
                 approved: bool = False, listed: bool = True, ver: int = 0):
        self.jid = jid
        self.name = name
        self.groups = list(groups)
        self.subscription = subscription
        self.ask = ask  #: pending out: the user asked for the contact's presence
        #: pending in: the contact's subscribe stanza (serialised), waiting for an answer
        self.pending_in = pending_in
        self.approved = approved  #: pre-approved (RFC 6121 §3.4)
        self.listed = listed
        self.ver = ver
        #: the bytes this entry adds to :attr:`Roster.bytes` (as last saved)
        self.counted = 0

    @property
    def counts(self) -> bool:
        """Does the entry count against the caps (a listed item or a waiting
        request, not the memory of a removal)?"""
        return self.listed or self.pending_in is not None

    def weight(self) -> int:
        """The bytes the entry counts for now (:func:`entry_size`)."""
        return entry_size(self.jid, self.name, self.groups, self.pending_in)

    @property
    def state(self) -> State:
        return State(self.subscription, self.ask, self.pending_in is not None)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "groups": self.groups, "subscription": self.subscription,
                "ask": self.ask, "pending_in": self.pending_in, "approved": self.approved,
                "listed": self.listed, "ver": self.ver}

    @classmethod
    def from_dict(cls, jid: str, data: dict[str, Any]) -> RosterItem:
        return cls(jid, data.get("name"), data.get("groups") or (),
                   data.get("subscription", "none"), bool(data.get("ask")),
                   data.get("pending_in"), bool(data.get("approved")),
                   bool(data.get("listed", True)), int(data.get("ver", 0)))

    def to_element(self, removed: bool = False) -> domish.Element:
        """The ``<item/>`` a client sees (RFC 6121 §2.1.2)."""
        item = domish.Element((ns.ROSTER, "item"))
        item["jid"] = self.jid
        if removed:
            item["subscription"] = "remove"
            return item
        if self.name:
            item["name"] = self.name
        item["subscription"] = self.subscription
        if self.ask:
            item["ask"] = "subscribe"
        if self.approved:
            item["approved"] = "true"
        for group in self.groups:
            item.addElement("group", content=group)
        return item


class Roster:
    """A user's roster in memory: entries by contact, and its version."""

    def __init__(self, user: str, items: dict[str, RosterItem], version: int = 0,
                 epoch: str | None = None, oldest: int = 0):
        self.user = user
        self.items = items
        self.version = version
        self.epoch = epoch or secrets.token_hex(4)
        #: the oldest version an incremental sync can start from
        self.oldest = oldest
        #: bytes of the entries that count against the caps, kept up to date
        #: by :meth:`recount` as entries change
        self.bytes = 0
        for item in items.values():
            self.recount(item)

    def recount(self, item: RosterItem) -> None:
        """Bring :attr:`bytes` up to date with ``item``'s current content."""
        size = item.weight() if item.counts else 0
        self.bytes += size - item.counted
        item.counted = size

    def drop(self, item: RosterItem) -> None:
        """Forget ``item`` altogether (its bytes with it)."""
        del self.items[item.jid]
        self.bytes -= item.counted
        item.counted = 0

    @property
    def ver(self) -> str:
        """The opaque version string clients cache (XEP-0237)."""
        return f"{self.epoch}-{self.version}"

    def get(self, contact: str) -> RosterItem | None:
        """The contact's listed item, or None."""
        item = self.items.get(contact)
        return item if item is not None and item.listed else None

    def listed(self) -> list[RosterItem]:
        return [item for item in self.items.values() if item.listed]

    def state(self, contact: str) -> State:
        item = self.items.get(contact)
        return item.state if item is not None else State()

    def subscribers(self) -> list[str]:
        """Contacts that receive the user's presence (subscription from or both)."""
        return [j for j, i in self.items.items() if i.subscription in ("from", "both")]

    def subscriptions(self) -> list[str]:
        """Contacts whose presence the user receives (to or both): probe targets."""
        return [j for j, i in self.items.items() if i.subscription in ("to", "both")]

    def pending_requests(self) -> list[RosterItem]:
        """Entries whose subscription request waits for the user's answer."""
        return [i for i in self.items.values() if i.pending_in is not None]

    def is_subscribed_from(self, contact: str) -> bool:
        """May ``contact`` see the user's presence?"""
        item = self.items.get(contact)
        return item is not None and item.subscription in ("from", "both")

    def size(self) -> int:
        """Entries that count against the cap: listed items and waiting requests."""
        return sum(1 for i in self.items.values() if i.counts)


class RosterComponent(Component):
    """The roster: iq get/set, pushes, versioning, and the API presence uses."""

    name = "roster"
    options = [
        Option("max_items", integer(1), "2000",
               "most contacts (and waiting subscription requests) one roster may hold"),
        Option("max_size", integer(0), "1048576",
               "most bytes one roster may take, all its contacts and waiting requests "
               "together (0: no limit beyond max_items)"),
        Option("cache_size", integer(0), "1000",
               "rosters of offline users kept in memory (online users' are always kept)"),
    ]

    def __init__(self, server, config):
        super().__init__(server, config)
        #: rosters of users with a bound session: always in memory
        self._online: dict[str, Roster] = {}
        #: rosters of offline users, least recently used first (cache_size of them)
        self._cache: collections.OrderedDict[str, Roster] = collections.OrderedDict()
        self._loading: dict[str, list[defer.Deferred]] = {}
        #: bare JID → resources that asked for the roster (RFC 6121 §2.1.6 "interested")
        self._interested: dict[str, set[str]] = {}

    def startService(self) -> None:
        self.store["roster"] = self.server.storage.map("roster")
        super().startService()

    # -- the API other components use --------------------------------------------

    def load(self, user: str) -> defer.Deferred:
        """Deferred firing with ``user``'s :class:`Roster` (cached while in use).

        Concurrent loads of one roster share one read and one object, so
        changes made while a load is in flight are never lost.
        """
        roster = self._online.get(user)
        if roster is None:
            roster = self._cache.get(user)
            if roster is not None:
                self._cache.move_to_end(user)
        if roster is not None:
            return defer.succeed(roster)
        waiter: defer.Deferred = defer.Deferred()
        waiters = self._loading.get(user)
        if waiters is not None:
            waiters.append(waiter)
            return waiter
        # Register before reading: a store that answers at once (memory) runs
        # _loaded inside this call, and a waiter added after it never fires.
        self._loading[user] = [waiter]
        self.store["roster"].items(user).addBoth(self._loaded, user)
        return waiter

    def cached(self, user: str) -> Roster | None:
        """``user``'s roster if it is in memory (always, while the user is online)."""
        return self._online.get(user) or self._cache.get(user)

    def forget(self, user: str) -> None:
        """Drop an offline user's roster from memory (the next load reads the store)."""
        self._cache.pop(user, None)

    @handles("account-deleted")
    def account_deleted(self, user: str) -> None:
        """The account is gone (its rows purged already): nothing of its roster
        may stay in memory, or an account made again under the name would
        find the old contacts."""
        self._online.pop(user, None)
        self._cache.pop(user, None)
        self._interested.pop(user, None)

    def refusal(self, roster: Roster, contact: str, size: int) -> str | None:
        """Why ``contact``'s entry may not become an entry of ``size`` bytes
        (:func:`entry_size`) in ``roster``, or None if it may.

        A new entry must find a place under ``max_items``; an entry that grows
        must fit under ``max_size``. An entry that stays or shrinks is always
        allowed, so a user over a lowered cap can still tidy up.
        """
        item = roster.items.get(contact)
        counted = item is not None and item.counts
        limit = self.config["max_items"]
        if not counted and roster.size() >= limit:
            return f"the roster is full ({limit} contacts)"
        before = item.counted if counted else 0
        limit = self.config["max_size"]
        if limit and size > before and roster.bytes - before + size > limit:
            return f"the roster is full ({limit} bytes)"
        return None

    def _loaded(self, result: Any, user: str) -> None:
        waiters = self._loading.pop(user)
        if isinstance(result, dict):
            meta = result.pop(_META, None) or {}
            items = {jid: RosterItem.from_dict(jid, data) for jid, data in result.items()}
            result = Roster(user, items, int(meta.get("version", 0)), meta.get("epoch"),
                            int(meta.get("oldest", 0)))
            if self.router.resources(user):
                self._online[user] = result
            else:
                self._cache[user] = result
                self._trim()
        for waiter in waiters:
            waiter.callback(result)  # a Failure goes down each waiter's errbacks

    def _trim(self) -> None:
        while len(self._cache) > self.config["cache_size"]:
            self._cache.popitem(last=False)

    def apply(self, roster: Roster, contact: str, state: State, *,
              pending_stanza: str | None = None, approved: bool | None = None,
              push: bool = True) -> defer.Deferred:
        """Record ``contact``'s new subscription ``state`` in ``roster``, store it
        and push it to the user's interested resources if the user can see the
        change. Fires once it is durable, with whether the user can see the
        change (a push is due: with ``push=False`` the caller sends it, after
        what it must deliver first).

        ``pending_stanza`` is the subscribe request to keep while the state is
        pending in (a request already waiting is kept unless a new one is
        given). An entry joins the roster the user sees as soon as there is
        a subscription either way, a request of the user's, or a pre-approval.
        """
        item = roster.items.get(contact)
        if item is None:
            item = roster.items[contact] = RosterItem(contact, listed=False)
        before = (item.subscription, item.ask, item.approved, item.listed)
        item.subscription, item.ask = state.subscription, state.pending_out
        if state.pending_in:
            if item.pending_in is None or pending_stanza is not None:
                item.pending_in = pending_stanza or ""
        else:
            item.pending_in = None
        if approved is not None:
            item.approved = approved
        if state.from_:
            item.approved = False  # a pre-approval is used up once granted
        if state.subscription != "none" or state.pending_out or item.approved:
            item.listed = True
        visible = (item.subscription, item.ask, item.approved, item.listed) != before
        d = self._save(roster, [item], bump=visible)
        due = visible and item.listed
        if push and due:
            d.addCallback(lambda _: self.push(roster, [item]))
        return d.addCallback(lambda _: due)

    def push(self, roster: Roster, items: Iterable[RosterItem]) -> None:
        """Send a roster push per item to every interested resource (§2.1.6)."""
        sessions = self.interested(roster.user)
        for item in items:
            for session in sessions:
                session.send(self._push_stanza(roster, item, session))

    def interested(self, user: str) -> list[Any]:
        """The sessions of ``user`` that asked for the roster (RFC 6121 §2.2's
        *interested resources*): they get roster pushes, and the subscription
        answers and cancellations that go with them (§3.1.6, §3.2.3, §3.3.3)."""
        interested = self._interested.get(user)
        if not interested:
            return []
        sessions = self.router.resources(user)
        found = []
        for resource in list(interested):
            session = sessions.get(resource)
            if session is None:
                interested.discard(resource)
            else:
                found.append(session)
        return found

    def _push_stanza(self, roster: Roster, item: RosterItem, session: Any) -> domish.Element:
        iq = domish.Element((ns.CLIENT, "iq"))
        iq["type"] = "set"
        iq["id"] = "push-" + secrets.token_hex(6)
        iq["from"] = roster.user
        iq["to"] = session.jid.full()
        query = iq.addElement((ns.ROSTER, "query"))
        # RFC 6121 §2.6.3: each push carries the version of its own change, so
        # interim pushes count up to the current version in order.
        query["ver"] = f"{roster.epoch}-{item.ver}"
        query.addChild(item.to_element(removed=not item.listed))
        return iq

    def _save(self, roster: Roster, items: list[RosterItem], bump: bool = True) -> defer.Deferred:
        if bump:
            roster.version += 1
            for item in items:
                item.ver = roster.version
        changes: dict[str, Any] = {}
        for item in items:
            roster.recount(item)
            keep = item.counts or item.ver > roster.oldest
            changes[item.jid] = item.to_dict() if keep else None
            if not keep and roster.items.get(item.jid) is item:
                roster.drop(item)
        self._forget_old_removals(roster, changes)
        changes[_META] = {"version": roster.version, "epoch": roster.epoch,
                          "oldest": roster.oldest}
        return self.store["roster"].set_many(roster.user, changes)

    def _forget_old_removals(self, roster: Roster, changes: dict[str, Any]) -> None:
        removed = sorted((i for i in roster.items.values()
                          if not i.listed and i.pending_in is None), key=lambda i: i.ver)
        for item in removed[:max(0, len(removed) - MAX_TOMBSTONES)]:
            roster.oldest = max(roster.oldest, item.ver)
            roster.drop(item)
            changes[item.jid] = None

    # -- session life ---------------------------------------------------------------

    @handles("resource-bind")
    def bound(self, session):
        user = session.bare
        roster = self._cache.pop(user, None)
        if roster is not None:
            self._online[user] = roster  # kept while the user is online
        self.load(user).addErrback(
            lambda f: self.log.failure("loading the roster of {user}", f, user=session.bare))
        return False

    @handles("resource-unbind")
    def unbound(self, session):
        interested = self._interested.get(session.bare)
        if interested is not None:
            interested.discard(session.resource)
            if not interested:
                del self._interested[session.bare]
        if not self.router.resources(session.bare):
            roster = self._online.pop(session.bare, None)
            if roster is not None:
                self._cache[session.bare] = roster
                self._trim()
        return False

    # -- RFC 6121 §2: iq get/set ----------------------------------------------------

    @handles(f"iq-get/self/{ns.ROSTER}:query")
    @defer.inlineCallbacks
    def get(self, event):
        user, resource = event.from_.userhost(), event.from_.resource
        roster = yield self.load(user)
        if resource is not None and resource in self.router.resources(user):
            self._interested.setdefault(user, set()).add(resource)
        asked = event.payload.getAttribute("ver")
        since = self._sync_point(roster, asked)
        if since is not None:
            # XEP-0237: an empty result, then a push per entry changed since.
            self.router.reply(event, event.reply())
            changed = sorted((i for i in roster.items.values() if i.ver > since),
                             key=lambda i: i.ver)
            self.push_to(event.origin, roster, changed)
            return True
        query = domish.Element((ns.ROSTER, "query"))
        query["ver"] = roster.ver  # also unasked, as Prosody (see the module docstring)
        for item in roster.listed():
            query.addChild(item.to_element())
        return event.reply(query)

    def push_to(self, session: Any, roster: Roster, items: Iterable[RosterItem]) -> None:
        for item in items:
            session.send(self._push_stanza(roster, item, session))

    @staticmethod
    def _sync_point(roster: Roster, asked: str | None) -> int | None:
        """The version to push changes since, or None for the full roster."""
        if not asked:
            return None
        epoch, _, number = asked.rpartition("-")
        if epoch != roster.epoch or not (number.isascii() and number.isdigit()):
            return None
        since = int(number)
        if since < roster.oldest or since > roster.version:
            return None
        return since

    @handles(f"iq-set/self/{ns.ROSTER}:query")
    @defer.inlineCallbacks
    def set(self, event):
        user = event.from_.userhost()
        items = [c for c in event.payload.elements() if c.name == "item"]
        if len(items) != 1 or len(list(event.payload.elements())) != 1:
            return event.error("bad-request", text="a roster set carries exactly one <item/>")
        element = items[0]
        try:
            contact = jidlib.parse(element.getAttribute("jid", ""))
        except jidlib.InvalidJID:
            return event.error("jid-malformed", text="the item's jid is not a valid JID")
        if contact.resource is not None:
            return event.error("bad-request", text="roster items are bare JIDs")
        contact_jid = contact.userhost()
        if contact_jid == user:
            return event.error("not-allowed", text="you cannot add yourself to your roster")
        roster = yield self.load(user)
        if element.getAttribute("subscription") == "remove":
            return (yield self._remove(event, roster, contact_jid))
        problem = self._invalid(element, roster.items.get(contact_jid))
        if problem is not None:
            return event.error(*problem)
        item = roster.items.get(contact_jid)
        name = element.getAttribute("name") or None
        groups = [str(g) for g in element.elements(ns.ROSTER, "group")]
        refusal = self.refusal(roster, contact_jid, entry_size(
            contact_jid, name, groups, item.pending_in if item is not None else None))
        if refusal is not None:
            return event.error("not-allowed", text=refusal)
        if item is None:
            item = roster.items[contact_jid] = RosterItem(contact_jid)
        item.name = name
        item.groups = groups
        item.listed = True
        yield self._save(roster, [item])
        self.router.reply(event, event.reply())
        self.push(roster, [item])
        return True

    @staticmethod
    def _invalid(element: domish.Element, item: RosterItem | None) -> tuple[str, ...] | None:
        """Why a roster set's item is refused (RFC 6121 §2.3.3), or None."""
        subscription = element.getAttribute("subscription")
        if subscription is not None and subscription != (item.subscription if item else "none"):
            return ("not-allowed", None, "subscriptions change through presence, not roster sets")
        name = element.getAttribute("name")
        if name is not None and len(name.encode()) > MAX_TEXT:
            return ("not-acceptable", None, "the item name is too long")
        groups = [str(g) for g in element.elements(ns.ROSTER, "group")]
        if any(not g.strip() for g in groups):
            return ("not-acceptable", None, "a group name cannot be empty")
        if any(len(g.encode()) > MAX_TEXT for g in groups):
            return ("not-acceptable", None, "a group name is too long")
        if len(set(groups)) != len(groups):
            return ("bad-request", None, "the same group is listed twice")
        return None

    @defer.inlineCallbacks
    def _remove(self, event, roster: Roster, contact: str):
        item = roster.items.get(contact)
        if item is None or not item.counts:
            # RFC 6121 §2.5.3's example, and Prosody, say modify.
            return event.error("item-not-found", "modify")
        # RFC 6121 §2.5.2: cancel every subscription either way, then forget;
        # in Prosody's order: unsubscribed, then unsubscribe.
        user = roster.user
        if item.subscription in ("from", "both"):
            # §3.2.2: the contact hears each available resource go away while
            # still subscribed, i.e. before the unsubscribed.
            for session in list(self.router.resources(user).values()):
                if session.available:
                    self.router.route(presence(session.jid.full(), contact, "unavailable"),
                                      session)
        if item.subscription in ("from", "both") or item.pending_in is not None:
            self._send_presence(user, contact, "unsubscribed")
        if item.subscription in ("to", "both") or item.ask:
            self._send_presence(user, contact, "unsubscribe")
        was_listed = item.listed
        item.subscription, item.ask, item.pending_in, item.approved = "none", False, None, False
        item.name, item.groups, item.listed = None, [], False
        yield self._save(roster, [item])
        self.router.reply(event, event.reply())
        if was_listed:
            self.push(roster, [item])
        return True

    def _send_presence(self, user: str, contact: str, stype: str) -> None:
        self.router.route(presence(user, contact, stype))

    # -- another user's roster ---------------------------------------------------------

    @handles(f"iq-get/bare/{ns.ROSTER}:query")
    @handles(f"iq-set/bare/{ns.ROSTER}:query")
    @handles(f"iq-get/full/{ns.ROSTER}:query")
    @handles(f"iq-set/full/{ns.ROSTER}:query")
    def not_yours(self, event):
        if event.from_ is not None and event.to.userhost() != event.from_.userhost():
            # Also stops forged roster pushes aimed at another user's client.
            return event.error("forbidden", text="you can only see your own roster")
        return False

    def stream_features(self, session):
        if session.user is None:
            return []
        return [domish.Element((ns.ROSTER_VERSIONING, "ver")),
                domish.Element((ns.PRE_APPROVAL, "sub"))]
