"""XEP-0402 bookmarks, kept in step with XEP-0048 both ways (XEP-0411).

XEP-0048 keeps every bookmark of an account in one element,
``<storage xmlns='storage:bookmarks'>`` with a ``<conference jid=…>`` per room
(and ``<url/>`` bookmarks), stored in private XML (XEP-0049) or as the one
item ``current`` of the PEP node ``storage:bookmarks``. XEP-0402 keeps one
PEP item per room in the node ``urn:xmpp:bookmarks:1``: the item id is the
room's JID, the payload ``<conference xmlns='urn:xmpp:bookmarks:1'>``.

As Prosody's mod_bookmarks does (read for behaviour), the XEP-0402 node is
the one place the rooms live, and the XEP-0048 views are made from it:

- *Private XML* (``iq`` get/set of ``<storage xmlns='storage:bookmarks'/>``
  in ``jabber:iq:private``, taken before the private component sees it): a
  get answers the list built from the XEP-0402 items; a set publishes each
  new or changed room to the XEP-0402 node and retracts the rooms it no
  longer lists (unchanged ones are left alone and not notified, XEP-0402
  §5.3), then answers an empty result.
- *XEP-0048 over PEP* (the node ``storage:bookmarks``): a get of its items
  answers the list as the item ``current``; a publish there is converted as
  a private XML set (item id and publish-options ignored) and answered with
  an empty result, as Prosody answers it. A publish to the old
  ``urn:xmpp:bookmarks:0`` is ``not-allowed`` with Prosody's text.
- *Notifications* (XEP-0411 §3): every change of the XEP-0402 node (by any
  client, or by a conversion) sends the whole list as the item ``current``
  of ``storage:bookmarks`` to the account's resources whose caps ask for
  ``storage:bookmarks+notify`` — only the account's own: the node is
  whitelist. A set that changes many rooms sends it once, at the end. A
  resource coming online with those caps gets it too (Prosody sends it to
  every such resource of the account each time one comes online).
- *Migration at login* (Prosody's ``upgrade_legacy_bookmarks``): rooms left
  in the private XML entry, or in a legacy PEP node from before, are added
  to the XEP-0402 node (never removing what XEP-0402 clients added); the
  legacy PEP node is then deleted (its items would otherwise reach
  contacts) and the private entry keeps only what XEP-0402 cannot hold.
  Bookmark requests of the account wait for the migration.
- *Discovery*: the account announces ``urn:xmpp:bookmarks:1#compat``,
  ``#compat-pep`` and ``urn:xmpp:bookmarks-conversion:0``, as Prosody's.

Where this differs from Prosody, so nothing a client stored is lost:

- Children of a XEP-0048 conference other than ``nick`` and ``password``
  travel in XEP-0402's ``<extensions/>`` and come back, and ``<url/>``
  bookmarks (which XEP-0402 dropped) stay in the private XML entry and are
  part of every XEP-0048 answer. Prosody drops both.
- Rooms removed by a legacy set are retracted (XEP-0402 §3 defines removal
  as retraction; Prosody purges the node when the list becomes empty).
- Room JIDs are normalised (stringprep) before they become item ids.

The XEP-0402 node gets XEP-0402's publish-options (``whitelist``,
``max_items = max``, persistent, ``send_last_published_item = never``); an
existing node a client configured otherwise is set back to them when a
legacy list is written, as Prosody does.

Bad input stores nothing: a conference without a valid ``jid``, a list
longer than PEP's ``[component:pep] max_items``, or a bookmark bigger than
its ``max_payload_size`` is refused before anything is written
(``bad-request``, ``policy-violation``, ``not-acceptable``); a private XML
set meets private storage's own rules (its ``max_size``) first. A PEP
refusal met while writing answers its own condition.

Without the ``pep`` component nothing is converted (private XML keeps
bookmarks itself); without ``private``, only the XEP-0048-over-PEP half runs.
The component keeps nothing per account beyond requests in progress.

This module's first half is the pure conversions between the two formats
(no I/O, unit-tested); the second half is the component.
"""

from __future__ import annotations

import collections
from collections import OrderedDict
from typing import Any, Iterable

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.words.xish import domish

from xmppd import jid as jidlib
from xmppd import ns
from xmppd.component import Component, handles
from xmppd.components.caps import CAPS_KNOWN
from xmppd.components.pep import CHANGED as PEP_CHANGED
from xmppd.locks import KeyedLock
from xmppd.router.events import StanzaEvent
from xmppd.services.pubsub.core import Item, Node, PubSubError
from xmppd.xml.stream import parse_element

#: the children of a conference both formats know; everything else of a
#: XEP-0048 conference travels in XEP-0402's ``<extensions/>``
_KNOWN_CHILDREN = ("nick", "password")


def copy_element(element: domish.Element) -> domish.Element:
    """A deep copy of ``element`` (its own children, no parent), made by
    serialising and parsing again, so namespaces come out as they went in."""
    text = element.toXml()
    return parse_element(text, max_size=max(len(text.encode("utf-8")) + 1024, 1 << 20))


def _child_text(element: domish.Element, uri: str, name: str) -> str | None:
    child = next(element.elements(uri, name), None)
    return None if child is None else str(child)


def room_jid(text: str | None) -> str | None:
    """The normalised JID a bookmark's item id is made of, or None when
    ``text`` is no JID (a conference without a usable ``jid``)."""
    parsed = jidlib.parse_or_none(text)
    return None if parsed is None else parsed.full()


def conference_from_legacy(legacy: domish.Element) -> domish.Element:
    """The XEP-0402 payload for one XEP-0048 ``<conference/>``: name and
    autojoin as they were (both formats' autojoin is an xs:boolean), nick and
    password, and every other child element inside ``<extensions/>`` (where
    XEP-0402 §3 keeps what a client added, e.g. Gajim's ``<minimize/>``)."""
    conference = domish.Element((ns.BOOKMARKS2, "conference"))
    for attribute in ("name", "autojoin"):
        value = legacy.getAttribute(attribute)
        if value is not None:
            conference[attribute] = value
    for name in _KNOWN_CHILDREN:
        text = _child_text(legacy, ns.BOOKMARKS, name)
        if text is not None:
            conference.addElement(name, content=text)
    extensions = None
    for child in legacy.elements():
        if child.uri == ns.BOOKMARKS and child.name in _KNOWN_CHILDREN:
            continue
        if extensions is None:
            extensions = conference.addElement("extensions")
        extensions.addChild(copy_element(child))
    return conference


def conference_to_legacy(item_id: str, conference: domish.Element | None) -> domish.Element:
    """The XEP-0048 ``<conference/>`` for the XEP-0402 item ``item_id``: the
    item id becomes ``jid``, ``<extensions/>`` children become children of
    the conference again. A payload that is not a XEP-0402 conference (a
    client published something else) still gives the room's JID, as
    Prosody's mod_bookmarks does."""
    legacy = domish.Element((ns.BOOKMARKS, "conference"))
    legacy["jid"] = item_id
    if conference is None or (conference.uri, conference.name) != (ns.BOOKMARKS2, "conference"):
        return legacy
    for attribute in ("name", "autojoin"):
        value = conference.getAttribute(attribute)
        if value is not None:
            legacy[attribute] = value
    for name in _KNOWN_CHILDREN:
        text = _child_text(conference, ns.BOOKMARKS2, name)
        if text is not None:
            legacy.addElement(name, content=text)
    for extensions in conference.elements(ns.BOOKMARKS2, "extensions"):
        for child in extensions.elements():
            legacy.addChild(copy_element(child))
    return legacy


class InvalidBookmark(ValueError):
    """A XEP-0048 conference that cannot become a XEP-0402 item (no JID)."""


def legacy_to_items(storage: domish.Element, strict: bool = True,
                    ) -> tuple[OrderedDict[str, domish.Element], list[domish.Element]]:
    """Split a XEP-0048 ``<storage/>`` into XEP-0402 items and the rest.

    Returns (room JID → ``<conference xmlns='urn:xmpp:bookmarks:1'>``, in
    document order; the same room twice: the last wins) and the children
    XEP-0402 has no place for (``<url/>`` bookmarks, unknown elements), which
    the caller keeps so nothing a legacy client stored is lost.

    A conference without a valid ``jid`` raises :class:`InvalidBookmark`
    when ``strict`` (a client's request: refused, nothing stored); otherwise
    (migrating what was stored long ago) it is kept with the rest.
    """
    items: OrderedDict[str, domish.Element] = OrderedDict()
    rest: list[domish.Element] = []
    for child in storage.elements():
        if (child.uri, child.name) != (ns.BOOKMARKS, "conference"):
            rest.append(copy_element(child))
            continue
        room = room_jid(child.getAttribute("jid"))
        if room is None:
            if strict:
                raise InvalidBookmark("a conference needs a valid jid, "
                                      f"not {child.getAttribute('jid')!r}")
            rest.append(copy_element(child))
            continue
        items.pop(room, None)
        items[room] = conference_from_legacy(child)
    return items, rest


def items_to_legacy(items: Iterable[tuple[str, domish.Element | None]],
                    rest: Iterable[domish.Element] = ()) -> domish.Element:
    """The XEP-0048 ``<storage/>`` for XEP-0402 items (item id, payload), in
    their order, followed by the kept children (``rest``) of a legacy set."""
    storage = domish.Element((ns.BOOKMARKS, "storage"))
    for item_id, conference in items:
        storage.addChild(conference_to_legacy(item_id, conference))
    for child in rest:
        storage.addChild(copy_element(child))
    return storage


def bookmark_key(conference: domish.Element | None) -> tuple | None:
    """What a bookmark says, for "unchanged?" (XEP-0402 §5.3: a legacy set
    notifies only the items it changed). Attributes and texts compared as
    text, extensions as their serialisation; None for a payload that is no
    conference (always "changed")."""
    if conference is None or (conference.uri, conference.name) != (ns.BOOKMARKS2, "conference"):
        return None
    extensions = tuple(child.toXml() for e in conference.elements(ns.BOOKMARKS2, "extensions")
                       for child in e.elements())
    return (conference.getAttribute("name"), conference.getAttribute("autojoin"),
            _child_text(conference, ns.BOOKMARKS2, "nick"),
            _child_text(conference, ns.BOOKMARKS2, "password"), extensions)


def plan_sync(current: "OrderedDict[str, domish.Element | None]",
              wanted: "OrderedDict[str, domish.Element]", replace: bool,
              ) -> tuple[list[tuple[str, domish.Element]], list[str]]:
    """What turns the XEP-0402 node's items ``current`` into ``wanted``:
    (items to publish, ids to retract). Unchanged items are left alone.
    ``replace``: the legacy list replaces the node (a client's set: rooms it
    no longer lists are retracted); otherwise it only adds and updates (a
    migration of old data never removes what XEP-0402 clients added)."""
    publish = [(room, conference) for room, conference in wanted.items()
               if room not in current or bookmark_key(current[room]) is None
               or bookmark_key(current[room]) != bookmark_key(conference)]
    retract = [room for room in current if room not in wanted] if replace else []
    return publish, retract


# =====================================================================================
# PART 2: the component
# =====================================================================================

#: The configuration of the XEP-0402 node: the publish-options XEP-0402 §3
#: tells clients to use, which Prosody's mod_bookmarks also imposes on a node
#: it writes to (a node a client made with other options is set back to them).
NODE_CONFIG: dict[str, Any] = {
    "persist_items": True,
    "max_items": "max",
    "send_last_published_item": "never",
    "access_model": "whitelist",
}
#: The legacy PEP node, as its notifications are made (it keeps no items:
#: XEP-0402 does): only the account may see it.
LEGACY_NODE_CONFIG: dict[str, Any] = {"access_model": "whitelist", "max_items": 1,
                                      "persist_items": False, "notification_type": "headline"}
#: The private XML entry of XEP-0048 bookmarks (see :mod:`xmppd.components.private`).
PRIVATE_KEY = f"{{{ns.BOOKMARKS}}}storage"
#: Before private XML and PEP (both 0), which serve what this component leaves.
PRIORITY = 10


class BookmarksComponent(Component):
    """XEP-0402 bookmarks kept in step with XEP-0048 in private XML and PEP."""

    name = "bookmarks"
    account_features = [ns.BOOKMARKS2_COMPAT, ns.BOOKMARKS2_COMPAT_PEP, ns.BOOKMARKS_CONVERSION]

    def __init__(self, server, config: dict[str, Any]):
        super().__init__(server, config)
        #: per account: one conversion at a time (sets, gets, the migration)
        self._locks = KeyedLock()
        #: accounts whose migration at login is under way (count of logins)
        self._migrating: collections.Counter[str] = collections.Counter()
        #: accounts being synchronised from a legacy list → "did XEP-0402
        #: change?": their legacy notification is sent once, at the end
        self._quiet: dict[str, bool] = {}

    def startService(self) -> None:
        super().startService()
        if self.pep is None:
            self.log.warn("bookmarks is enabled without the pep component: "
                          "XEP-0048 bookmarks are left to private XML storage")
        elif self.private is None:
            self.log.warn("bookmarks is enabled without the private component: "
                          "clients using XEP-0048 in private XML see no bookmarks")

    @property
    def pep(self) -> Any:
        return self.server.components.get("pep")

    @property
    def private(self) -> Any:
        return self.server.components.get("private")

    # -- reading and writing the XEP-0402 node ------------------------------------------

    def _bookmarks(self, user: str) -> defer.Deferred:
        """Deferred[list of (room JID, payload) | None]: the XEP-0402 items as
        the account sees them, oldest first; None when there is no node."""
        def got(items: list[Item]) -> list[tuple[str, domish.Element | None]]:
            return [(item.id, self.pep.payload(item)) for item in items]

        def missing(failure: Failure) -> None:
            failure.trap(PubSubError)
            if failure.value.condition != "item-not-found":
                return failure
            return None
        return self.pep.items(user, ns.BOOKMARKS2).addCallbacks(got, missing)

    @defer.inlineCallbacks
    def _rest(self, user: str):
        """What private XML keeps of the legacy list: the children XEP-0402
        has no place for (``<url/>`` bookmarks …)."""
        private = self.private
        if private is None:
            return []
        text = yield private.store["private"].get(user, PRIVATE_KEY)
        if not text:
            return []
        _, rest = legacy_to_items(_parse(text), strict=False)
        return rest

    @defer.inlineCallbacks
    def _legacy_storage(self, user: str):
        """Deferred[(storage, whether there is a XEP-0402 node)]."""
        current = yield self._bookmarks(user)
        rest = yield self._rest(user)
        return items_to_legacy(current or [], rest), current is not None

    @defer.inlineCallbacks
    def _ensure_config(self, user: str):
        """Give an existing XEP-0402 node :data:`NODE_CONFIG` (as Prosody does
        before it writes converted bookmarks), so publishing with those
        publish-options meets their preconditions."""
        service = yield self.pep.get_service(user)
        node = service.nodes.get(ns.BOOKMARKS2) if service is not None else None
        if node is None:
            return
        changes = {k: v for k, v in NODE_CONFIG.items() if node.config.get(k) != v}
        if not changes:
            return
        self.log.info("setting the bookmarks node of {user} back to {changes}",
                      user=user, changes=changes)
        service.configure(user, ns.BOOKMARKS2, changes)
        writes = service.take_writes()
        if writes:
            yield defer.gatherResults(writes, consumeErrors=True)

    @defer.inlineCallbacks
    def _sync(self, user: str, wanted: OrderedDict, replace: bool):
        """Make the XEP-0402 node say what the legacy list ``wanted`` says:
        changed and new rooms published (one item each, notified), rooms no
        longer listed retracted when ``replace`` (notified: XEP-0402 §3 says
        removals are retractions; Prosody purges the node when the legacy list
        is empty, which XEP-0402 clients need not understand). Unchanged items
        are left alone, as XEP-0402 §5.3 asks."""
        current = yield self._bookmarks(user)
        publish, retract = plan_sync(OrderedDict(current or []), wanted, replace)
        if not publish and not retract:
            return
        self._quiet[user] = False
        try:
            if current is not None:
                yield self._ensure_config(user)
            for room, conference in publish:
                yield self.pep.publish(user, ns.BOOKMARKS2, room, conference, dict(NODE_CONFIG))
            if retract:
                yield self.pep.retract(user, ns.BOOKMARKS2, retract, notify=True)
        finally:
            changed = self._quiet.pop(user, False)
        if changed:
            self._notify_legacy(user)

    def _refusal(self, event: StanzaEvent, wanted: OrderedDict) -> domish.Element | None:
        """The error for a legacy list PEP could not hold whole, checked before
        anything is written (the core would drop the oldest items silently)."""
        limits = getattr(self.pep, "limits", None)
        if limits is None:
            return None
        if len(wanted) > limits.max_items:
            return event.error("policy-violation", "modify",
                               f"at most {limits.max_items} bookmarks")
        for room, conference in wanted.items():
            if len(conference.toXml().encode("utf-8")) > limits.max_payload:
                return event.error("not-acceptable", "modify", f"the bookmark of {room} is too big")
        return None

    # -- XEP-0049: storage:bookmarks in private XML is the XEP-0402 node -------------------

    @handles(f"iq-get/self/{ns.PRIVATE}:query", priority=PRIORITY)
    def private_get(self, event: StanzaEvent) -> Any:
        if self.pep is None or self.private is None:
            return False
        children = list(event.payload.elements())
        if len(children) != 1 or (children[0].uri, children[0].name) != (ns.BOOKMARKS, "storage"):
            return False  # not (only) bookmarks: private storage answers
        user = event.from_.userhost()
        return self._locks.run(user, self._private_get, event, user)

    @defer.inlineCallbacks
    def _private_get(self, event: StanzaEvent, user: str):
        storage, _ = yield self._legacy_storage(user)
        query = domish.Element((ns.PRIVATE, "query"))
        query.addChild(storage)
        return event.reply(query)

    @handles(f"iq-set/self/{ns.PRIVATE}:query", priority=PRIORITY)
    def private_set(self, event: StanzaEvent) -> Any:
        """A legacy client stores its whole list: the rooms go to the XEP-0402
        node, what XEP-0402 has no place for (and any other element of the
        request) to private storage, whose rules (size quota, reserved
        namespaces) apply first."""
        if self.pep is None or self.private is None:
            return False
        found = [i for i, c in enumerate(event.payload.children)
                 if isinstance(c, domish.Element) and (c.uri, c.name) == (ns.BOOKMARKS, "storage")]
        if len(found) != 1:
            return False  # none; or twice, which private storage refuses
        storage = event.payload.children[found[0]]
        try:
            wanted, rest = legacy_to_items(storage)
        except InvalidBookmark as e:
            return event.error("bad-request", "modify", str(e))
        refused = self._refusal(event, wanted)
        if refused is not None:
            return refused
        # private storage keeps the rest (an empty element: nothing, deleted)
        residual = items_to_legacy([], rest)
        residual.parent = event.payload
        event.payload.children[found[0]] = residual
        user = event.from_.userhost()
        return self._locks.run(user, self._private_set, event, user, wanted)

    @defer.inlineCallbacks
    def _private_set(self, event: StanzaEvent, user: str, wanted: OrderedDict):
        reply = yield defer.maybeDeferred(self.private.set, event)
        if not isinstance(reply, domish.Element) or reply.getAttribute("type") != "result":
            return reply
        try:
            yield self._sync(user, wanted, replace=True)
        except PubSubError as e:
            self.log.warn("storing the bookmarks of {user} to PEP: {error!r}", user=user, error=e)
            return event.error(e.condition, e.type, e.text or "Failed to store bookmarks to PEP")
        return reply

    # -- XEP-0048 over PEP: the node storage:bookmarks is the XEP-0402 node too ------------

    @staticmethod
    def _action(event: StanzaEvent) -> domish.Element | None:
        for name in ("publish", "items"):
            for child in event.payload.elements(ns.PUBSUB, name):
                return child
        return None

    @handles(f"iq-get/self/{ns.PUBSUB}:pubsub", priority=PRIORITY)
    def legacy_pep_get(self, event: StanzaEvent) -> Any:
        pep = self.pep
        action = self._action(event) if pep is not None else None
        if action is None or action.name != "items":
            return False
        user = event.from_.userhost()
        node = action.getAttribute("node")
        if node == ns.BOOKMARKS:
            return self._locks.run(user, self._legacy_get, event, user)
        if node == ns.BOOKMARKS2 and self._migrating[user]:
            # Logged in a moment ago: the answer waits for the migration.
            return self._locks.run(user, pep.pubsub, event)
        return False

    @defer.inlineCallbacks
    def _legacy_get(self, event: StanzaEvent, user: str):
        storage, exists = yield self._legacy_storage(user)
        if not exists and not list(storage.elements()):
            # as Prosody: the XEP-0402 node's own answer, item-not-found
            return event.error("item-not-found", "cancel", "Failed to retrieve bookmarks from PEP")
        pubsub = domish.Element((ns.PUBSUB, "pubsub"))
        items = pubsub.addElement("items")
        items["node"] = ns.BOOKMARKS
        item = items.addElement("item")
        item["id"] = "current"
        item.addChild(storage)
        return event.reply(pubsub)

    @handles(f"iq-set/self/{ns.PUBSUB}:pubsub", priority=PRIORITY)
    def legacy_pep_set(self, event: StanzaEvent) -> Any:
        """A legacy client publishes its whole list as the item ``current``
        (its id and publish-options ignored, as Prosody does): converted, as
        a private XML set is. Answered with an empty result (Prosody)."""
        action = self._action(event) if self.pep is not None else None
        if action is None or action.name != "publish":
            return False
        node = action.getAttribute("node")
        if node == ns.BOOKMARKS2_OLD:
            return event.error("not-allowed", "modify",
                               "Your client does XEP-0402 version 0.3.0 but 0.4.0+ is required")
        if node != ns.BOOKMARKS:
            return False
        item = next(action.elements(ns.PUBSUB, "item"), None)
        storage = None if item is None else next(item.elements(ns.BOOKMARKS, "storage"), None)
        if storage is None:
            return event.error("bad-request", "modify",
                               "the item needs a <storage xmlns='storage:bookmarks'/>")
        try:
            wanted, rest = legacy_to_items(storage)
        except InvalidBookmark as e:
            return event.error("bad-request", "modify", str(e))
        refused = self._refusal(event, wanted)
        if refused is not None:
            return refused
        user = event.from_.userhost()
        return self._locks.run(user, self._legacy_set, event, user, wanted, rest)

    @defer.inlineCallbacks
    def _legacy_set(self, event: StanzaEvent, user: str, wanted: OrderedDict,
                    rest: list[domish.Element]):
        try:
            yield self._sync(user, wanted, replace=True)
        except PubSubError as e:
            self.log.warn("storing the bookmarks of {user} to PEP: {error!r}", user=user, error=e)
            return event.error(e.condition, e.type, e.text or "Failed to store bookmarks to PEP")
        if self.private is not None:
            yield self.private.store["private"].set(
                user, PRIVATE_KEY, items_to_legacy([], rest).toXml() if rest else None)
        return event.reply()

    # -- XEP-0411: legacy PEP clients are told of every change ----------------------------

    @handles(PEP_CHANGED)
    def pep_changed(self, change: Any) -> None:
        if change.node != ns.BOOKMARKS2 \
                or change.kind not in ("items", "retract", "purge", "delete"):
            return
        if change.owner in self._quiet:
            self._quiet[change.owner] = True  # one notification when the sync ends
            return
        self._notify_legacy(change.owner)

    @handles("presence/initial")
    def online(self, session: Any) -> bool:
        """A resource comes online: if its caps ask for ``storage:bookmarks``
        notifications, it gets the list (Prosody sends it to every such
        resource of the account; the others have it already)."""
        if self.pep is not None and getattr(session, "jid", None) is not None:
            self._notify_legacy(session.bare, only=session.jid.full())
        return False

    @handles(CAPS_KNOWN, priority=-10)
    def caps_known(self, session: Any) -> None:
        """Caps learned after the initial presence (after PEP noted them)."""
        if self.pep is not None and getattr(session, "available", False) \
                and getattr(session, "jid", None) is not None:
            self._notify_legacy(session.bare, only=session.jid.full())

    def _notify_legacy(self, user: str, only: str | None = None) -> None:
        d = self._legacy_notification(user, only)
        d.addErrback(lambda f: self.log.failure("legacy bookmarks notification to {user}", f,
                                                user=user))

    @defer.inlineCallbacks
    def _legacy_notification(self, user: str, only: str | None):
        """XEP-0411 §3: the whole list as the item ``current`` of
        ``storage:bookmarks``, to the account's resources whose caps ask
        for it (``storage:bookmarks+notify``): nobody else may see it."""
        pep = self.pep
        service = yield pep.get_service(user)
        if service is None:
            return
        legacy = Node(ns.BOOKMARKS, {**service.defaults, **LEGACY_NODE_CONFIG},
                      affiliations={user: "owner"})
        recipients = [jid for jid in pep.audience(service, legacy, [])
                      if only is None or jid == only]
        if not recipients:
            return
        storage, _ = yield self._legacy_storage(user)
        item = Item("current", storage.toXml(), user, float(self.clock.seconds()))
        stanza = pep.protocol.event_stanza(service, legacy, "items", items=[item])
        pep.protocol.send_event(stanza, recipients)

    # -- migration at login (Prosody's upgrade_legacy_bookmarks) ---------------------------

    @handles("resource-bind")
    def bound(self, session: Any) -> bool:
        """Move what XEP-0048 kept before (the private XML entry, the legacy
        PEP node's item) into XEP-0402 once, at the account's next login;
        requests for bookmarks wait for it."""
        if self.pep is None:
            return False
        user = session.bare
        self._migrating[user] += 1

        def done(result: Any) -> None:
            self._migrating[user] -= 1
            if self._migrating[user] <= 0:
                del self._migrating[user]
            if isinstance(result, Failure):
                self.log.failure("migrating the bookmarks of {user}", result, user=user)
        self._locks.run(user, self._migrate, user).addBoth(done)
        return False

    @defer.inlineCallbacks
    def _migrate(self, user: str):
        pep = self.pep
        service = yield pep.get_service(user)
        if service is None:
            return
        rest: list[domish.Element] = []
        legacy = service.nodes.get(ns.BOOKMARKS)
        if legacy is not None:
            # a legacy client published there before this component ran
            for item in list(legacy.items.values()):
                storage = pep.payload(item)
                if storage is not None and (storage.uri, storage.name) == (ns.BOOKMARKS, "storage"):
                    wanted, extra = legacy_to_items(storage, strict=False)
                    yield self._sync(user, wanted, replace=False)
                    rest += extra
            # its items are in XEP-0402 now; left, they would reach contacts
            yield pep.delete_node(user, ns.BOOKMARKS)
        private = self.private
        if private is None:
            return
        text = yield private.store["private"].get(user, PRIVATE_KEY)
        wanted: OrderedDict = OrderedDict()
        if text:
            wanted, kept = legacy_to_items(_parse(text), strict=False)
            rest = kept + [e for e in rest if e.toXml() not in {k.toXml() for k in kept}]
        if not wanted and not (rest and legacy is not None):
            return
        yield self._sync(user, wanted, replace=False)
        yield private.store["private"].set(
            user, PRIVATE_KEY, items_to_legacy([], rest).toXml() if rest else None)

    @handles("account-deleted")
    def forget(self, user: str) -> None:
        self._migrating.pop(user, None)
        self._quiet.pop(user, None)


def _parse(text: str) -> domish.Element:
    return parse_element(text, max_size=max(len(text.encode("utf-8")) + 1024, 1 << 20))
