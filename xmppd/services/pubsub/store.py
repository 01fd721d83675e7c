"""Persistence of publish-subscribe services in the storage API.

Three map stores, shared by every service of a component (the pubsub domain,
or every account's PEP service), each keyed by the *service JID* as the
storage ``user`` (PEP: the account's bare JID, so ``storage.purge_user`` of a
deleted account removes its whole PEP service):

- ``pubsub_nodes``: key = node name, value = ``{"config", "affiliations",
  "subscriptions"}``;
- ``pubsub_items``: key = ``json([node, item id])``, value = ``{"node", "id",
  "payload", "publisher", "when", "seq"}``; ``seq`` orders a node's items
  (re-publishing an id gives it a new, higher ``seq``);
- ``pubsub_refs``: a reverse index, storage user ``"refs:" + member bare JID``,
  key = ``json([service, node])``: where an account holds an affiliation or a
  subscription, so account deletion finds them without scanning every service.
  Its user is prefixed so that ``purge_user`` of the member (which runs before
  the ``account-deleted`` handlers) does not erase the index :meth:`forget`
  needs; :meth:`forget` clears it itself. Entries may go stale (a node deleted
  since): readers skip what no longer exists.

A service loads with two queries (:meth:`PubSubStorage.load`). Writes are
write-through: every :class:`ServiceStore` method returns the Deferred of its
write(s), firing once durable, which the core collects for the protocol layer
to wait on before replying. The SQLite backend runs writes in submission
order on one connection, so the last write of a key wins as issued.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable

from twisted.internet import defer

from xmppd.services.pubsub.core import Item, Node, bare

NODES_STORE = "pubsub_nodes"
ITEMS_STORE = "pubsub_items"
REFS_STORE = "pubsub_refs"
#: what a component declares in ``stores`` to use this module
STORES = {NODES_STORE: "map", ITEMS_STORE: "map", REFS_STORE: "map"}
REFS_PREFIX = "refs:"


def item_key(node: str, item_id: str) -> str:
    """The items-store key of one item (unambiguous whatever the names hold)."""
    return json.dumps([node, item_id], separators=(",", ":"))


def _members(node: Node) -> set[str]:
    return set(node.affiliations) | {bare(j) for j in node.subscriptions}


def _gather(ds: Iterable[Any]) -> defer.Deferred:
    ds = [d for d in ds if d is not None]
    if len(ds) == 1:
        return ds[0]
    return defer.gatherResults(ds, consumeErrors=True)


class ServiceStore:
    """The :class:`~xmppd.services.pubsub.core.NodeStore` of one service.

    Remembers which item keys and which member JIDs each stored node has, so
    a purge or deletion knows what to delete and the reverse index is updated
    by difference. Hence a service already in storage must be loaded through
    the :class:`PubSubStorage` whose :meth:`PubSubStorage.service` then
    writes it (``nodes = yield stores.load(jid)``; ``PubSub(jid,
    store=stores.service(jid), nodes=nodes, ...)``).
    """

    def __init__(self, storage: "PubSubStorage", service: str):
        self.storage = storage
        self.service = service
        self._item_ids: dict[str, set[str]] = {}
        self._members: dict[str, set[str]] = {}
        self._seq = 0

    def _ref_writes(self, name: str, before: set[str], after: set[str]) -> list:
        refs = self.storage.refs
        if refs is None:
            return []
        key = json.dumps([self.service, name], separators=(",", ":"))
        # the service's own account (a PEP owner) needs no reference: its
        # service goes as a whole
        before, after = before - {self.service}, after - {self.service}
        writes = [refs.set(REFS_PREFIX + m, key, True) for m in sorted(after - before)]
        writes += [refs.set(REFS_PREFIX + m, key, None) for m in sorted(before - after)]
        return writes

    def save_node(self, node: Node) -> defer.Deferred:
        value = {
            "config": dict(node.config),
            "affiliations": dict(node.affiliations),
            "subscriptions": dict(node.subscriptions),
        }
        # The reverse index first (the storage runs writes in order): after a
        # crash between the two, a stale reference is harmless, a missing one
        # would hide a member from account deletion.
        members = _members(node)
        writes = self._ref_writes(node.name, self._members.get(node.name, set()), members)
        writes.append(self.storage.nodes.set(self.service, node.name, value))
        self._members[node.name] = members
        self._item_ids.setdefault(node.name, set())
        return _gather(writes)

    def delete_node(self, name: str) -> defer.Deferred:
        # Items before the node row (writes run in order): a crash between
        # the two must not leave items a new node of the same name would
        # inherit.
        writes = []
        ids = self._item_ids.pop(name, set())
        if ids:
            writes.append(self.storage.items.set_many(
                self.service, {item_key(name, i): None for i in ids}))
        writes.append(self.storage.nodes.delete(self.service, name))
        writes += self._ref_writes(name, self._members.pop(name, set()), set())
        return _gather(writes)

    def save_item(self, node: Node, item: Item) -> defer.Deferred:
        self._seq += 1
        self._item_ids.setdefault(node.name, set()).add(item.id)
        return self.storage.items.set(self.service, item_key(node.name, item.id), {
            "node": node.name, "id": item.id, "payload": item.payload,
            "publisher": item.publisher, "when": item.when, "seq": self._seq,
        })

    def delete_items(self, node: Node, ids: list[str] | None) -> defer.Deferred | None:
        known = self._item_ids.setdefault(node.name, set())
        if ids is None:
            ids = list(known)
        doomed = [i for i in ids if i in known]
        if not doomed:
            return None
        known.difference_update(doomed)
        return self.storage.items.set_many(
            self.service, {item_key(node.name, i): None for i in doomed})

    def _loaded(self, nodes: dict[str, Node], seq: int) -> None:
        self._seq = max(self._seq, seq)
        for node in nodes.values():
            self._item_ids[node.name] = set(node.items)
            self._members[node.name] = _members(node)


class PubSubStorage:
    """The stores of every pubsub service of one component.

    ``nodes``, ``items`` and ``refs`` are :class:`~xmppd.storage.interfaces.IMapStore`
    (a component gets them from ``stores = STORES``); ``refs`` may be None
    (no reverse index: :meth:`forget` then only removes the account's own
    service).
    """

    def __init__(self, nodes: Any, items: Any, refs: Any = None):
        self.nodes = nodes
        self.items = items
        self.refs = refs
        self._services: dict[str, ServiceStore] = {}

    @classmethod
    def from_storage(cls, storage: Any) -> "PubSubStorage":
        """Open the three stores of an :class:`~xmppd.storage.interfaces.IStorage`."""
        return cls(storage.map(NODES_STORE), storage.map(ITEMS_STORE), storage.map(REFS_STORE))

    def service(self, service_jid: str) -> ServiceStore:
        """The :class:`ServiceStore` of one service (one per JID)."""
        store = self._services.get(service_jid)
        if store is None:
            store = self._services[service_jid] = ServiceStore(self, service_jid)
        return store

    def drop(self, service_jid: str) -> None:
        """Forget the bookkeeping of an unloaded service (a bounded PEP cache
        evicting it); it is rebuilt by the next :meth:`load`."""
        self._services.pop(service_jid, None)

    @defer.inlineCallbacks
    def load(self, service_jid: str):
        """Deferred firing with ``{name: Node}`` of a service: two queries.

        Items come back oldest first; items of a node that no longer exists
        (a crash between the two deletions) are deleted. Configs hold only what
        was stored: the core fills in its defaults.
        """
        rows = yield self.nodes.items(service_jid)
        item_rows = yield self.items.items(service_jid)
        nodes: dict[str, Node] = {}
        for name, value in rows.items():
            if not isinstance(value, dict):
                continue
            nodes[name] = Node(
                name=name,
                config=dict(value.get("config") or {}),
                affiliations=dict(value.get("affiliations") or {}),
                subscriptions=dict(value.get("subscriptions") or {}),
            )
        seq = 0
        orphans = [key for key, v in item_rows.items()
                   if not isinstance(v, dict) or v.get("node") not in nodes]
        if orphans:
            # items of a node deleted before a crash: gone now, so that a new
            # node of the same name never inherits them
            yield self.items.set_many(service_jid, {key: None for key in orphans})
        ordered = sorted((v for v in item_rows.values() if isinstance(v, dict)),
                         key=lambda v: v.get("seq", 0))
        for value in ordered:
            seq = max(seq, int(value.get("seq", 0)))
            node = nodes.get(value.get("node"))
            if node is None:
                continue
            item = Item(id=value["id"], payload=value.get("payload"),
                        publisher=value.get("publisher", ""), when=float(value.get("when", 0.0)))
            node.items.pop(item.id, None)
            node.items[item.id] = item
        self.service(service_jid)._loaded(nodes, seq)
        return nodes

    @defer.inlineCallbacks
    def forget(self, account: str, edits: Callable[[str], bool] | None = None):
        """Account deletion: remove the account's own service entirely, and
        its affiliations and subscriptions (any resource) in other services;
        a node left without an owner is deleted with its items.

        Fires with the sorted JIDs of the *other* services concerned, for the
        caller to apply :meth:`PubSub.forget_jid` to those it holds in memory.
        Those are not edited here, only reported: their core's write-through
        is the one truth, and a read-modify-write here could overwrite a newer
        write of theirs. Of the others, only the services ``edits`` accepts are
        edited in storage; by default the account services (JIDs with a
        localpart: PEP), since a pubsub domain keeps its whole state in memory
        and forgets through its own core.
        """
        account = bare(account)
        if edits is None:
            edits = lambda service: "@" in service  # noqa: E731
        yield self.nodes.clear(account)
        yield self.items.clear(account)
        self.drop(account)
        if self.refs is None:
            return []
        refs = yield self.refs.items(REFS_PREFIX + account)
        by_service: dict[str, list[str]] = {}
        for key in refs:
            try:
                service, name = json.loads(key)
            except (ValueError, TypeError):
                continue
            if service != account:
                by_service.setdefault(service, []).append(name)
        changed: set[str] = set()
        for service, names in sorted(by_service.items()):
            if service in self._services:
                changed.add(service)  # live: its core forgets and writes through
                continue
            if not edits(service):
                continue
            doomed: list[str] = []
            updates: dict[str, Any] = {}
            for name in names:
                value = yield self.nodes.get(service, name)
                if not isinstance(value, dict):
                    continue  # a stale reference
                affs = {j: a for j, a in (value.get("affiliations") or {}).items() if j != account}
                subs = {j: s for j, s in (value.get("subscriptions") or {}).items()
                        if bare(j) != account}
                if "owner" not in affs.values():
                    doomed.append(name)
                    updates[name] = None
                else:
                    updates[name] = {**value, "affiliations": affs, "subscriptions": subs}
            if not updates:
                continue
            changed.add(service)
            yield self.nodes.set_many(service, updates)
            if doomed:
                item_rows = yield self.items.items(service)
                gone = {k: None for k, v in item_rows.items()
                        if isinstance(v, dict) and v.get("node") in doomed}
                if gone:
                    yield self.items.set_many(service, gone)
        yield self.refs.clear(REFS_PREFIX + account)
        return sorted(changed)
