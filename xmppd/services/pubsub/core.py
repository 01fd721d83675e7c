"""The pure publish-subscribe core (XEP-0060), shared by the pubsub service and PEP.

No XML, no Twisted, no storage here: one :class:`PubSub` holds one service's
nodes (a pubsub domain, or one account's PEP service) and decides every rule —
who may do what (affiliations, access and publish models), what a node's
configuration may be, which items a node keeps, and who is notified of what.
Everything it refuses is a :class:`PubSubError` naming the XEP-0060 error, so
the protocol layer only translates.

Side effects leave through three objects handed in:

- a :class:`NodeStore` (``store.py`` over the storage API; a dict in tests),
  called write-through on every change; whatever it returns (a Deferred) is
  collected in :attr:`PubSub.writes` so the protocol layer can wait for
  durability before it replies (``take_writes``);
- a :class:`Broadcaster`, told which subscribers get which notification;
- an :class:`Access`, asked about presence subscriptions and roster groups
  for the ``presence`` and ``roster`` access models.

Behaviour is modelled on Prosody's ``util/pubsub.lua`` and
``mod_pubsub/pubsub.lib.lua`` (read, not copied):

- Rights are capabilities of an *effective affiliation*: the JID's explicit
  node affiliation, else the service-wide one (``admins``: the PEP account
  itself, or ``[server] admins`` on the pubsub service, are owners of every
  node), else the access model's default: ``open`` → member, ``whitelist`` →
  outcast, ``presence``/``roster`` → member when the relation allows it,
  else outcast.
- Refusals caused by the access model carry XEP-0060's own conditions (§6.1.3,
  §6.5.9): ``not-authorized`` + ``presence-subscription-required`` or
  ``not-in-roster-group``, ``not-allowed`` + ``closed-node``; an explicit
  outcast gets ``forbidden``.
- Re-publishing an item id replaces the item and makes it the newest; a
  publish beyond ``max_items`` drops the oldest items silently (as Prosody's
  item cache does). ``max_items = "max"`` means :attr:`Limits.max_items`.
- ``persist_items = false`` keeps items in memory only (still capped by
  ``max_items``): they are retrievable until the service is reloaded.
- A retraction is notified when the request asks for it (``notify``) and the
  node's ``notify_retract`` is on (default on: exactly Prosody's behaviour,
  which notifies only on request); deletion is notified when ``notify_delete``
  is on (default on); a purge is always notified (Prosody).
- Subscribing an already subscribed JID succeeds again; the last published
  item is then sent to that JID when ``send_last_published_item`` is not
  ``never`` (Prosody sends it on every successful subscribe).
- Items are listed oldest first; ``max_items`` on retrieval keeps the newest.
- Publisher JIDs recorded in items are bare (Prosody normalises them).

JIDs given to the core are already validated and normalised (stringprep) by
the protocol layer; the core only splits off resources.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

AFFILIATIONS = ("owner", "publisher", "publish-only", "member", "none", "outcast")
#: ``authorize`` is a known model that this server refuses as not supported.
ACCESS_MODELS = ("open", "presence", "roster", "whitelist", "authorize")
SUPPORTED_ACCESS_MODELS = ("open", "presence", "roster", "whitelist")
PUBLISH_MODELS = ("publishers", "subscribers", "open")
SEND_LAST_PUBLISHED_ITEM = ("never", "on_sub", "on_sub_and_presence")
#: Prosody offers ``none`` (its default: no publisher JID on items) beside
#: XEP-0060's ``owner`` and ``publisher``.
ITEMREPLY = ("owner", "publisher", "none")
NOTIFICATION_TYPES = ("normal", "headline")

#: Defaults of every configuration field (Prosody's ``default_node_config``
#: and its node_config form defaults); a service's ``defaults`` override these.
DEFAULT_CONFIG: dict[str, Any] = {
    "title": "",
    "description": "",
    "type": "",
    "access_model": "open",
    "publish_model": "publishers",
    "max_items": 20,
    "persist_items": True,
    "notify_retract": True,
    "notify_delete": True,
    "notify_config": False,
    "send_last_published_item": "never",
    "itemreply": "none",
    "deliver_payloads": True,
    "deliver_notifications": True,
    "roster_groups_allowed": [],
    "notification_type": "headline",
}

#: Field → kind of value, for validation (and for forms.py to know the types).
CONFIG_SCHEMA: dict[str, Any] = {
    "title": str,
    "description": str,
    "type": str,
    "access_model": ACCESS_MODELS,
    "publish_model": PUBLISH_MODELS,
    "max_items": "integer-or-max",
    "persist_items": bool,
    "notify_retract": bool,
    "notify_delete": bool,
    "notify_config": bool,
    "send_last_published_item": SEND_LAST_PUBLISHED_ITEM,
    "itemreply": ITEMREPLY,
    "deliver_payloads": bool,
    "deliver_notifications": bool,
    "roster_groups_allowed": list,
    "notification_type": NOTIFICATION_TYPES,
}
CONFIG_KEYS = frozenset(CONFIG_SCHEMA)

#: RFC 6120 error type of each condition, as Prosody's pubsub error table
#: gives them (``not-subscribed`` is ``modify`` there).
ERROR_TYPES = {
    "bad-request": "modify",
    "conflict": "cancel",
    "feature-not-implemented": "cancel",
    "forbidden": "auth",
    "internal-server-error": "wait",
    "item-not-found": "cancel",
    "not-acceptable": "modify",
    "not-allowed": "cancel",
    "not-authorized": "auth",
    "policy-violation": "modify",
    "resource-constraint": "wait",
    "unexpected-request": "modify",
}

# capability sets per effective affiliation (Prosody's table, plus publish-only)
_CAPS: dict[str, frozenset[str]] = {
    "outcast": frozenset(),
    "none": frozenset({"subscribe"}),
    "member": frozenset({"subscribe", "get_items"}),
    "publish-only": frozenset({"publish", "retract_own"}),
    "publisher": frozenset({"subscribe", "get_items", "publish", "retract",
                            "retract_own", "purge", "get_configuration"}),
    "owner": frozenset({"subscribe", "get_items", "publish", "retract",
                        "retract_own", "purge", "get_configuration", "configure",
                        "delete", "manage"}),
}


class PubSubError(Exception):
    """A refusal, as XEP-0060 names it.

    ``condition`` is the RFC 6120 stanza condition, ``pubsub_condition`` the
    XEP-0060 application condition (``http://jabber.org/protocol/pubsub#errors``)
    or None, ``feature`` the feature an ``unsupported`` condition names,
    ``text`` optional human text, ``type`` the RFC 6120 error type.
    """

    def __init__(self, condition: str, pubsub_condition: str | None = None, *,
                 feature: str | None = None, text: str | None = None,
                 type: str | None = None):
        self.condition = condition
        self.pubsub_condition = pubsub_condition
        self.feature = feature
        self.text = text
        self.type = type or ERROR_TYPES.get(condition, "cancel")
        super().__init__(condition, pubsub_condition, feature, text)

    def __repr__(self) -> str:
        return (f"PubSubError({self.condition!r}, {self.pubsub_condition!r}, "
                f"feature={self.feature!r}, text={self.text!r})")


@dataclass
class Item:
    """One published item. ``payload`` is opaque to the core (the protocol
    layer's serialised XML text); ``publisher`` a JID text; ``when`` the
    publication time (the injected clock)."""

    id: str
    payload: Any
    publisher: str
    when: float


@dataclass
class Node:
    """A leaf node. ``config`` holds every field (defaults filled in) without
    the ``pubsub#`` prefix; ``affiliations`` maps bare JIDs to an affiliation
    other than ``none``; ``subscriptions`` maps subscribed JIDs (bare or full)
    to ``'subscribed'``; ``items`` is ordered oldest first."""

    name: str
    config: dict
    affiliations: dict = field(default_factory=dict)
    subscriptions: dict = field(default_factory=dict)
    items: "OrderedDict[str, Item]" = field(default_factory=OrderedDict)

    def owners(self) -> list[str]:
        """Bare JIDs affiliated as owner."""
        return [j for j, a in self.affiliations.items() if a == "owner"]


@dataclass
class Limits:
    """Bounds from the INI file.

    ``max_items``: the ceiling of a node's ``max_items`` (what ``max`` means);
    ``max_payload``: bytes of one item's payload; ``max_nodes``: nodes per
    service (per PEP account); ``max_subscriptions``: subscriptions per node;
    ``max_affiliations``: affiliations per node (each is stored with the node);
    ``max_bytes``: bytes of all the service's item payloads together (None:
    no bound), since ``max_nodes`` × ``max_items`` × ``max_payload`` alone
    would let one PEP account hold gigabytes.
    """

    max_items: int = 256
    max_payload: int = 65536
    max_nodes: int = 1000
    max_subscriptions: int = 1000
    max_affiliations: int = 1000
    max_bytes: int | None = None
    #: nodes one account may own on a shared service (None: only max_nodes)
    max_nodes_per_owner: int | None = None


class Access(Protocol):
    """How the core learns presence and roster relations (PEP: the account's
    roster; the pubsub service: usually nobody has any)."""

    def relation(self, owner: str, jid: str) -> dict:
        """``{'presence': bool, 'roster_groups': set[str]}``: whether bare
        ``jid`` is subscribed to ``owner``'s presence, and the groups
        ``owner``'s roster puts it in."""


class Broadcaster(Protocol):
    """Turns core notifications into stanzas (the protocol layer).

    Called synchronously, after the state changed and the store writes were
    issued; a broadcaster that must reply first / wait for durability buffers
    until :meth:`PubSub.take_writes`' Deferreds fire.

    ``kind`` and ``data``: ``'items'`` (``items=[Item]``, ``last=bool``: the
    last published item sent on subscription), ``'retract'`` (``ids=[str]``),
    ``'purge'``, ``'delete'`` (``redirect=str|None``), ``'configuration'``,
    ``'subscription'`` (``jid=str``, ``state='subscribed'|'none'``).

    ``recipients`` is never empty unless the service was made with
    ``notify_without_subscribers`` (then the broadcaster finds its own).
    """

    def notify(self, service: "PubSub", node: Node, kind: str,
               recipients: list[str], **data: Any) -> None: ...


class NodeStore(Protocol):
    """Write-through persistence of one service; each method may return a
    Deferred firing when the write is durable (or None)."""

    def save_node(self, node: Node) -> Any:
        """Store config + affiliations + subscriptions."""

    def delete_node(self, name: str) -> Any:
        """Forget the node and its items."""

    def save_item(self, node: Node, item: Item) -> Any:
        """Store (or replace) one item."""

    def delete_items(self, node: Node, ids: list[str] | None) -> Any:
        """Delete the given items; None: all of the node's items."""


class NullStore:
    """A :class:`NodeStore` that keeps nothing (a service with no storage)."""

    def save_node(self, node: Node) -> None:
        return None

    def delete_node(self, name: str) -> None:
        return None

    def save_item(self, node: Node, item: Item) -> None:
        return None

    def delete_items(self, node: Node, ids: list[str] | None) -> None:
        return None


def bare(jid: str) -> str:
    """The bare part of a JID text (no stringprep: the caller did that)."""
    return jid.split("/", 1)[0]


def payload_size(payload: Any) -> int:
    """Bytes a payload takes (UTF-8 of its text form)."""
    if payload is None:
        return 0
    if isinstance(payload, bytes):
        return len(payload)
    return len(str(payload).encode("utf-8"))


def _uuid_hex() -> str:
    return uuid.uuid4().hex


class PubSub:
    """One publish-subscribe service: its nodes, rules and notifications.

    ``admins``: bare JIDs that are owners of every node (PEP: the account;
    the pubsub service: ``[server] admins``). ``create_policy(actor)`` says
    whether ``actor`` may create nodes. ``autocreate``: a publish to a missing
    node creates it (XEP-0163 §3: PEP does), with the publish-options as its
    configuration. ``defaults`` override :data:`DEFAULT_CONFIG` for new nodes.

    ``notify_without_subscribers``: hand every notification to the
    broadcaster even when the core found no recipient for it (the list is
    then empty). Off, a change no explicit subscriber hears is not
    broadcast at all (the pubsub service). PEP turns it on: most of its
    recipients are implicit (XEP-0163 §4, caps ``+notify``), known only to
    the broadcaster, which adds them to the list it is given.
    """

    def __init__(self, jid: str, *, store: NodeStore | None = None,
                 broadcaster: Broadcaster | None = None,
                 access: Access | None = None, limits: Limits | None = None,
                 defaults: dict | None = None,
                 admins: frozenset[str] = frozenset(),
                 create_policy: Callable[[str], bool] = lambda actor: True,
                 new_id: Callable[[], str] = _uuid_hex,
                 clock: Callable[[], float] | None = None,
                 autocreate: bool = False,
                 notify_without_subscribers: bool = False,
                 nodes: dict[str, Node] | None = None):
        self.jid = jid
        self.store = store if store is not None else NullStore()
        self.broadcaster = broadcaster
        self.access = access
        self.limits = limits or Limits()
        self.admins = frozenset(bare(a) for a in admins)
        self.create_policy = create_policy
        self.new_id = new_id
        self.clock = clock or (lambda: 0.0)
        self.autocreate = autocreate
        self.notify_without_subscribers = notify_without_subscribers
        base = dict(DEFAULT_CONFIG)
        base.update(defaults or {})
        if isinstance(base["max_items"], int) and base["max_items"] > self.limits.max_items:
            base["max_items"] = self.limits.max_items  # the default cannot exceed the ceiling
        self.defaults = self._validate(base)
        self.nodes: dict[str, Node] = {}
        self.writes: list = []
        #: bytes of every item payload held (what ``Limits.max_bytes`` bounds)
        self.used_bytes = 0
        for node in (nodes or {}).values():
            self.nodes[node.name] = node
            node.config = {**self.defaults, **node.config}
            self.used_bytes += self._bytes(node.items.values())
            # A crash between an item's write and its eviction's can leave
            # one too many: max_items holds from the load on (the deletion
            # goes through the store like any other, see take_writes).
            self._trim(node)

    # ------------------------------------------------------------ plumbing

    def take_writes(self) -> list:
        """The store results (Deferreds) of the writes since the last call."""
        writes, self.writes = self.writes, []
        return writes

    def _write(self, result: Any) -> None:
        if result is not None:
            self.writes.append(result)

    def _notify(self, node: Node, kind: str, recipients: list[str], **data: Any) -> None:
        if self.broadcaster is not None and (recipients or self.notify_without_subscribers):
            self.broadcaster.notify(self, node, kind, recipients, **data)

    @staticmethod
    def _bytes(items: Any) -> int:
        return sum(payload_size(item.payload) for item in items)

    def _check_quota(self, node: Node | None, item_id: str | None, size: int) -> None:
        """Refuse a publish of ``size`` bytes that would take the service past
        ``Limits.max_bytes`` (``policy-violation``, stating the quota), counting
        what it replaces and what ``max_items`` would then evict. Items held
        before the bound was lowered are kept; only growth is refused."""
        limit = self.limits.max_bytes
        if limit is None:
            return
        freed = 0
        if node is not None:
            keep = self.max_items(node)
            others = [i for i in node.items.values() if i.id != item_id]
            if item_id is not None and item_id in node.items:
                freed += payload_size(node.items[item_id].payload)
            if len(others) + 1 > keep:
                freed += self._bytes(others[:len(others) + 1 - keep])
        if size > freed and self.used_bytes - freed + size > limit:
            raise PubSubError("policy-violation",
                              text=f"the service holds at most {limit} bytes of items")

    def _node(self, name: str | None) -> Node:
        if name is None or name == "":
            raise PubSubError("bad-request", "nodeid-required")
        node = self.nodes.get(name)
        if node is None:
            raise PubSubError("item-not-found")
        return node

    def max_items(self, node: Node) -> int:
        """The number of items ``node`` keeps (``max`` resolved)."""
        value = node.config.get("max_items", self.defaults["max_items"])
        if value == "max":
            return self.limits.max_items
        return min(int(value), self.limits.max_items)

    # ------------------------------------------------------------ rights

    def affiliation(self, jid: str, node: Node) -> str:
        """The explicit affiliation of ``jid`` (service owners: owner)."""
        b = bare(jid)
        aff = node.affiliations.get(b)
        if aff is not None:
            return aff
        if b in self.admins:
            return "owner"
        return "none"

    def _model_denial(self, jid: str, node: Node) -> PubSubError | None:
        """Why the access model keeps an unaffiliated ``jid`` out, or None."""
        model = node.config.get("access_model", "open")
        if model == "open":
            return None
        if model == "whitelist" or model == "authorize":
            return PubSubError("not-allowed", "closed-node")
        b = bare(jid)
        owners = node.owners() or sorted(self.admins)
        if model == "presence":
            for owner in owners:
                if owner == b or self._relation(owner, b).get("presence"):
                    return None
            return PubSubError("not-authorized", "presence-subscription-required")
        if model == "roster":
            allowed = set(node.config.get("roster_groups_allowed") or ())
            for owner in owners:
                if owner == b:
                    return None
                groups = set(self._relation(owner, b).get("roster_groups") or ())
                if groups & allowed:
                    return None
            return PubSubError("not-authorized", "not-in-roster-group")
        return PubSubError("not-allowed", "closed-node")

    def _relation(self, owner: str, jid: str) -> dict:
        if self.access is None:
            return {}
        return self.access.relation(owner, jid) or {}

    def _effective(self, jid: str, node: Node) -> tuple[str, PubSubError | None]:
        """Effective affiliation, and the error explaining an outcast."""
        aff = self.affiliation(jid, node)
        if aff == "outcast":
            return "outcast", PubSubError("forbidden")
        if aff != "none":
            return aff, None
        denial = self._model_denial(jid, node)
        if denial is not None:
            return "outcast", denial
        return "member", None

    def _can(self, jid: str, node: Node, capability: str) -> bool:
        return capability in _CAPS[self._effective(jid, node)[0]]

    def _require(self, jid: str, node: Node, capability: str) -> None:
        aff, denial = self._effective(jid, node)
        if capability in _CAPS[aff]:
            return
        if denial is not None and capability in ("subscribe", "get_items"):
            raise denial
        raise PubSubError("forbidden")

    def may_see(self, jid: str, node: Node) -> bool:
        """Whether ``jid`` may receive ``node``'s items (retrieval and
        notifications): the access model check, honouring affiliations."""
        return self._can(jid, node, "get_items")

    def _may_publish(self, jid: str, node: Node) -> bool:
        if self._can(jid, node, "publish"):
            return True
        if self.affiliation(jid, node) == "outcast":
            return False
        model = node.config.get("publish_model", "publishers")
        if model == "open":
            return True
        if model == "subscribers":
            return jid in node.subscriptions or bare(jid) in node.subscriptions
        return False

    def _recipients(self, node: Node) -> list[str]:
        return [j for j in node.subscriptions if self.may_see(j, node)]

    # ------------------------------------------------------------ config

    def _validate(self, changes: dict) -> dict:
        """Checked copy of ``changes``; raises ``not-acceptable`` (with
        ``unsupported`` for the authorize model) for a bad field or value."""
        out: dict[str, Any] = {}
        for key, value in changes.items():
            kind = CONFIG_SCHEMA.get(key)
            if kind is None:
                raise PubSubError("not-acceptable", text=f"Unknown field: {key}")
            if kind is bool:
                if not isinstance(value, bool):
                    raise PubSubError("not-acceptable", text=f"{key}: not a boolean")
            elif kind is str:
                if not isinstance(value, str):
                    raise PubSubError("not-acceptable", text=f"{key}: not text")
            elif kind is list:
                if not isinstance(value, (list, tuple, set, frozenset)) or not all(
                        isinstance(v, str) for v in value):
                    raise PubSubError("not-acceptable", text=f"{key}: not a list of text")
                value = sorted(set(value))
            elif kind == "integer-or-max":
                if value != "max":
                    if isinstance(value, bool) or not isinstance(value, int):
                        raise PubSubError("not-acceptable", text=f"{key}: not an integer or 'max'")
                    if value < 1 or value > self.limits.max_items:
                        raise PubSubError(
                            "not-acceptable",
                            text=f"{key}: must be between 1 and {self.limits.max_items}")
            else:
                if value not in kind:
                    raise PubSubError("not-acceptable", text=f"{key}: invalid value")
                if key == "access_model" and value not in SUPPORTED_ACCESS_MODELS:
                    raise PubSubError("not-acceptable", "unsupported",
                                      feature=f"access-{value}")
            out[key] = value
        return out

    def _check_preconditions(self, node: Node, options: dict) -> None:
        for key, wanted in options.items():
            have = node.config.get(key)
            if isinstance(have, list):
                same = sorted(set(have)) == sorted(set(wanted or ()))
            else:
                same = have == wanted
            if not same:
                raise PubSubError("conflict", "precondition-not-met",
                                  text=f"Field does not match: {key}")

    # ------------------------------------------------------------ owner operations

    def create(self, actor: str, name: str | None, config: dict | None = None) -> Node:
        """Create a node owned by ``actor`` (``name`` None: an instant node
        with a generated name). ``config`` is checked like :meth:`configure`."""
        if not (bare(actor) in self.admins or self.create_policy(actor)):
            raise PubSubError("forbidden")
        if name is not None and name in self.nodes:
            raise PubSubError("conflict")
        if name == "":
            raise PubSubError("bad-request", "nodeid-required")
        checked = self._validate(config or {})
        if len(self.nodes) >= self.limits.max_nodes:
            raise PubSubError("policy-violation", "max-nodes-exceeded")
        per_owner = self.limits.max_nodes_per_owner
        if per_owner is not None:
            owner = bare(actor)
            if sum(1 for n in self.nodes.values()
                   if n.affiliations.get(owner) == "owner") >= per_owner:
                # one account's flood must not take every node of a shared service
                raise PubSubError("policy-violation", "max-nodes-exceeded",
                                  text=f"at most {per_owner} nodes per account")
        if name is None:
            name = self.new_id()
            while name in self.nodes:
                name = self.new_id()
        node = Node(name=name, config={**self.defaults, **checked},
                    affiliations={bare(actor): "owner"})
        self.nodes[name] = node
        self._write(self.store.save_node(node))
        return node

    def configure(self, actor: str, name: str, changes: dict) -> Node:
        """Change some configuration fields (owner only). Narrowing the
        access model drops subscriptions it no longer allows (Prosody);
        lowering ``max_items`` drops the oldest items; turning
        ``persist_items`` off deletes the stored items but keeps them in memory."""
        node = self._node(name)
        self._require(actor, node, "configure")
        checked = self._validate(changes)
        old = node.config
        node.config = {**old, **checked}
        self._write(self.store.save_node(node))
        if old.get("persist_items") != node.config.get("persist_items"):
            if node.config.get("persist_items"):
                for item in node.items.values():
                    self._write(self.store.save_item(node, item))
            else:
                self._write(self.store.delete_items(node, None))
        self._trim(node)
        if old.get("access_model") != node.config.get("access_model") or \
                old.get("roster_groups_allowed") != node.config.get("roster_groups_allowed"):
            dropped = [j for j in node.subscriptions if not self._can(j, node, "subscribe")]
            if dropped:
                for j in dropped:
                    del node.subscriptions[j]
                self._write(self.store.save_node(node))
        if node.config.get("notify_config"):
            self._notify(node, "configuration", self._recipients(node))
        return node

    def get_config(self, actor: str, name: str) -> dict:
        """The node's whole configuration (owner, or publisher as in Prosody)."""
        node = self._node(name)
        self._require(actor, node, "get_configuration")
        return dict(node.config)

    def delete(self, actor: str, name: str, redirect: str | None = None) -> None:
        """Delete a node (owner only); subscribers are told when
        ``notify_delete`` is on."""
        node = self._node(name)
        self._require(actor, node, "delete")
        recipients = self._recipients(node) if node.config.get("notify_delete", True) else []
        del self.nodes[name]
        self.used_bytes -= self._bytes(node.items.values())
        self._write(self.store.delete_node(name))
        self._notify(node, "delete", recipients, redirect=redirect)

    def purge(self, actor: str, name: str) -> None:
        """Delete every item (owner or publisher, as Prosody); always notified."""
        node = self._node(name)
        self._require(actor, node, "purge")
        self.used_bytes -= self._bytes(node.items.values())
        node.items.clear()
        if node.config.get("persist_items"):
            self._write(self.store.delete_items(node, None))
        self._notify(node, "purge", self._recipients(node))

    # ------------------------------------------------------------ items

    def publish(self, actor: str, name: str, item_id: str | None, payload: Any,
                options: dict | None = None, publisher: str | None = None) -> Item:
        """Publish (or replace) an item; ``item_id`` None: generated.

        ``options`` are publish-options: preconditions every one of which the
        node's configuration must meet (``conflict`` + ``precondition-not-met``),
        or, when the publish creates the node, its configuration.
        """
        checked = self._validate(options) if options else {}
        node = self.nodes.get(name) if name else None
        if not name:
            raise PubSubError("bad-request", "nodeid-required")
        if node is None:
            if not self.autocreate:
                raise PubSubError("item-not-found")
            if payload_size(payload) > self.limits.max_payload:
                raise PubSubError("not-acceptable", "payload-too-big")
            self._check_quota(None, None, payload_size(payload))
            node = self.create(actor, name, checked)
        else:
            if not self._may_publish(actor, node):
                raise PubSubError("forbidden")
            if checked:
                self._check_preconditions(node, checked)
            if payload_size(payload) > self.limits.max_payload:
                raise PubSubError("not-acceptable", "payload-too-big")
            self._check_quota(node, item_id or None, payload_size(payload))
        if item_id is None or item_id == "":
            item_id = self.new_id()
            while item_id in node.items:
                item_id = self.new_id()
        item = Item(id=item_id, payload=payload,
                    publisher=bare(publisher if publisher is not None else actor),
                    when=float(self.clock()))
        replaced = node.items.pop(item_id, None)
        if replaced is not None:
            self.used_bytes -= payload_size(replaced.payload)
        node.items[item_id] = item
        self.used_bytes += payload_size(payload)
        if node.config.get("persist_items"):
            self._write(self.store.save_item(node, item))
        self._trim(node)
        if node.config.get("deliver_notifications", True):
            self._notify(node, "items", self._recipients(node), items=[item], last=False)
        return item

    def _trim(self, node: Node) -> None:
        limit = self.max_items(node)
        evicted: list[str] = []
        while len(node.items) > limit:
            old_id, old = node.items.popitem(last=False)
            self.used_bytes -= payload_size(old.payload)
            evicted.append(old_id)
        if evicted and node.config.get("persist_items"):
            self._write(self.store.delete_items(node, evicted))

    def retract(self, actor: str, name: str, ids: list[str], notify: bool = False) -> None:
        """Delete items (all or none): owner and publishers any item,
        publish-only its own. Notified when ``notify`` (the request's
        ``notify`` attribute) and the node's ``notify_retract`` are both on."""
        node = self._node(name)
        if not self._can(actor, node, "retract_own"):
            raise PubSubError("forbidden")
        ids = list(dict.fromkeys(ids))
        if not ids:
            raise PubSubError("item-not-found")
        for item_id in ids:
            item = node.items.get(item_id)
            if item is None:
                raise PubSubError("item-not-found")
            if not self._can(actor, node, "retract") and item.publisher != bare(actor):
                raise PubSubError("forbidden")
        for item_id in ids:
            self.used_bytes -= payload_size(node.items.pop(item_id).payload)
        if node.config.get("persist_items"):
            self._write(self.store.delete_items(node, ids))
        if notify and node.config.get("notify_retract", True):
            self._notify(node, "retract", self._recipients(node), ids=ids)

    def items(self, actor: str, name: str, ids: list[str] | None = None,
              max_items: int | None = None) -> list[Item]:
        """Items ``actor`` may retrieve, oldest first: the requested ``ids``
        that exist (in request order), else all, else the newest ``max_items``."""
        node = self._node(name)
        self._require(actor, node, "get_items")
        if ids:
            found = [node.items[i] for i in dict.fromkeys(ids) if i in node.items]
            return found[:max_items] if max_items is not None else found
        found = list(node.items.values())
        if max_items is not None:
            found = found[-max_items:] if max_items > 0 else []
        return found

    def last_item(self, name: str) -> Item | None:
        """The newest item of a node (no rights check: callers filter)."""
        node = self.nodes.get(name)
        if node is None or not node.items:
            return None
        return next(reversed(node.items.values()))

    def item_publisher(self, node: Node, item: Item) -> str | None:
        """The JID to show as an item's publisher per ``itemreply``."""
        mode = node.config.get("itemreply", "none")
        if mode == "publisher":
            return item.publisher
        if mode == "owner":
            owners = node.owners()
            return owners[0] if owners else None
        return None

    # ------------------------------------------------------------ subscriptions

    def subscribe(self, actor: str, name: str, jid: str) -> str:
        """Subscribe ``jid`` (``actor``'s own bare or full JID; owners any
        JID); sends the last item when ``send_last_published_item`` says so."""
        node = self._node(name)
        if bare(jid) != bare(actor) and not self._can(actor, node, "manage"):
            raise PubSubError("bad-request", "invalid-jid")
        self._require(jid, node, "subscribe")
        if jid not in node.subscriptions:
            if len(node.subscriptions) >= self.limits.max_subscriptions:
                raise PubSubError("policy-violation", "too-many-subscriptions")
            node.subscriptions[jid] = "subscribed"
            self._write(self.store.save_node(node))
        if node.config.get("send_last_published_item", "never") != "never" and node.items \
                and self.may_see(jid, node):
            self._notify(node, "items", [jid], items=[self.last_item(name)], last=True)
        return "subscribed"

    def unsubscribe(self, actor: str, name: str, jid: str) -> None:
        """End ``jid``'s subscription (its own bare JID, or an owner)."""
        node = self._node(name)
        if bare(jid) != bare(actor) and not self._can(actor, node, "manage"):
            raise PubSubError("forbidden")
        if jid not in node.subscriptions:
            raise PubSubError("unexpected-request", "not-subscribed")
        del node.subscriptions[jid]
        self._write(self.store.save_node(node))

    def subscriptions(self, actor: str, name: str | None = None,
                      owner: bool = False) -> list[tuple[str, str, str]]:
        """``(node, jid, state)`` triples. Entity view (default): ``actor``'s
        own (any of its bare JID's resources), on ``name`` or every node.
        Owner view (``owner=True``, XEP-0060 §8.8.1): every subscription of
        ``name``, owners only."""
        if owner:
            node = self._node(name)
            self._require(actor, node, "manage")
            return [(node.name, j, s) for j, s in node.subscriptions.items()]
        b = bare(actor)
        nodes = [self._node(name)] if name is not None else list(self.nodes.values())
        return [(n.name, j, s) for n in nodes for j, s in n.subscriptions.items()
                if bare(j) == b]

    def affiliations(self, actor: str, name: str | None = None,
                     owner: bool = False) -> list[tuple[str, str]]:
        """Entity view: ``(node, affiliation)`` of ``actor``'s bare JID.
        Owner view (``owner=True``): ``(jid, affiliation)`` of node ``name``."""
        if owner:
            node = self._node(name)
            self._require(actor, node, "manage")
            return list(node.affiliations.items())
        b = bare(actor)
        nodes = [self._node(name)] if name is not None else list(self.nodes.values())
        return [(n.name, n.affiliations[b]) for n in nodes if b in n.affiliations]

    def set_affiliations(self, actor: str, name: str, changes: dict[str, str]) -> None:
        """Owner only; all or nothing. ``none`` removes an affiliation;
        an outcast loses its subscriptions; the node must keep an owner."""
        node = self._node(name)
        self._require(actor, node, "manage")
        new = dict(node.affiliations)
        for jid, aff in changes.items():
            if aff not in AFFILIATIONS or not jid or "/" in jid:
                raise PubSubError("bad-request", text=f"Invalid affiliation for {jid}")
            if aff == "none":
                new.pop(jid, None)
            else:
                new[jid] = aff
        if not any(a == "owner" for a in new.values()):
            raise PubSubError("not-acceptable", text="A node must keep an owner")
        if len(new) > len(node.affiliations) and len(new) > self.limits.max_affiliations:
            raise PubSubError("policy-violation",
                              text=f"at most {self.limits.max_affiliations} affiliations per node")
        node.affiliations = new
        dropped = [j for j in node.subscriptions if not self._can(j, node, "subscribe")]
        for j in dropped:
            del node.subscriptions[j]
        self._write(self.store.save_node(node))

    def set_subscriptions(self, actor: str, name: str, changes: dict[str, str]) -> None:
        """Owner only; all or nothing: ``'subscribed'`` or ``'none'`` per JID.
        Each changed JID is told its new state (XEP-0060 §8.8.4)."""
        node = self._node(name)
        self._require(actor, node, "manage")
        for jid, state in changes.items():
            if state not in ("subscribed", "none") or not jid:
                raise PubSubError("bad-request", text=f"Invalid subscription for {jid}")
            if state == "subscribed":
                self._require(jid, node, "subscribe")
        adding = [j for j, s in changes.items() if s == "subscribed" and j not in node.subscriptions]
        if len(node.subscriptions) + len(adding) > self.limits.max_subscriptions:
            raise PubSubError("policy-violation", "too-many-subscriptions")
        changed: list[tuple[str, str]] = []
        for jid, state in changes.items():
            if state == "subscribed" and jid not in node.subscriptions:
                node.subscriptions[jid] = "subscribed"
                changed.append((jid, state))
            elif state == "none" and jid in node.subscriptions:
                del node.subscriptions[jid]
                changed.append((jid, state))
        if changed:
            self._write(self.store.save_node(node))
        for jid, state in changed:
            self._notify(node, "subscription", [jid], jid=jid, state=state)

    # ------------------------------------------------------------ accounts

    def forget_jid(self, jid: str) -> None:
        """An account was deleted: drop its subscriptions (any resource) and
        affiliations on every node. A node it alone owned is deleted (no one
        could manage it any more), without notification."""
        b = bare(jid)
        for node in list(self.nodes.values()):
            subs = [j for j in node.subscriptions if bare(j) == b]
            if not subs and b not in node.affiliations:
                continue
            for j in subs:
                del node.subscriptions[j]
            node.affiliations.pop(b, None)
            if not node.owners():
                del self.nodes[node.name]
                self.used_bytes -= self._bytes(node.items.values())
                self._write(self.store.delete_node(node.name))
            else:
                self._write(self.store.save_node(node))
