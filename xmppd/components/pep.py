"""XEP-0163 Personal Eventing Protocol: a publish-subscribe service on every
account's bare JID.

Each account has one :class:`~xmppd.services.pubsub.core.PubSub` core (its
*PEP service*), loaded from storage the first time it is needed, kept in
memory while the account has a session, and among the ``cache_size`` most
recently used otherwise. The XML is :mod:`xmppd.services.pubsub.protocol`'s,
shared with the pubsub service; this module adds what makes it PEP:

- *Who may do what.* The account is owner of every node; a publish to a node
  that does not exist creates it (``auto-create``), with the publish-options
  as its configuration. New nodes have Prosody's PEP defaults: ``presence``
  access, one item, persistent, ``send_last_published_item =
  on_sub_and_presence``. Publish-options may choose another access model:
  ``open`` (OMEMO device lists and bundles), ``roster`` (groups), or
  ``whitelist`` (XEP-0223 private storage). The ``presence`` and ``roster``
  models read the account's roster (the roster component).
- *Implicit subscriptions* (XEP-0163 §4, ``auto-subscribe`` and
  ``filtered-notifications``). Like Prosody's mod_pep, each service keeps the
  resources whose available presence reached the account from an account
  subscribed to its presence — the contacts' broadcasts, probe answers and
  directed presence — and the account's own resources (presence of anyone
  else, a stranger's directed presence included, is not tracked: Prosody's
  rule), and for each the nodes its XEP-0115 caps ask for
  (``<node>+notify``, from the caps component). A notification of a node goes
  to each of those resources that may see the node (its access model, asked
  at that moment, so a subscription or group change counts at once), plus
  the explicit subscribers (a bare-JID subscriber whose resources are known is
  sent to those resources that asked for the node, §4.3.2). Nothing goes to
  a JID the account blocks (XEP-0191, §4.3.3's exception).
- *The last item on coming online* (§4.3.4): when a resource becomes one of
  those (its first available presence to the account) or its caps come to ask
  for more nodes, it gets the last item of each such node it may see whose
  ``send_last_published_item`` is ``on_sub_and_presence``. When its caps are
  not known yet this waits for the ``caps-known`` event.
- *Who published.* Event items carry ``publisher`` (the publisher's bare
  JID), as Prosody 0.12's PEP notifications do; items retrieval shows it only
  when the node's ``pubsub#itemreply`` is ``publisher`` (as Prosody 13, whose
  events also show it only then).
- *Discovery.* disco#info of an account lists identity ``pubsub/pep`` and the
  PEP features; disco#items lists the nodes the requester may see (through
  the disco component's access check: the account and its presence
  subscribers).

*Remote contacts* (federation) are implicit recipients too, as in Prosody's
mod_pep: available presence from a resource of another server to an account
with a session here, from a contact subscribed to the account's presence (the
rule for local contacts), carrying XEP-0115 caps, makes that resource a
:class:`~xmppd.components.caps.RemoteResource` of the account. The caps
component learns its features (the verified-hash cache shared with local
sessions; an unknown ``ver`` is asked of the remote full JID from the
account's bare JID, over s2s), and from then on it is treated like a local
resource: notifications of the nodes its caps ask for, the last items when
it comes online or its caps come to ask for more. Presence without caps keeps
the caps a tracked resource had (§8.4) and tracks nothing new (without caps
nothing would be sent to it). Unavailable or error presence from it forgets
it (from the contact's bare JID, or an ``unsubscribe``: all its resources);
so does its next presence once the contact is no longer subscribed. The
account's last session leaving forgets its remote resources: its next
initial presence probes its contacts, whose answers bring them back, and
none is kept for an account nobody uses (stale ones of a broken link go too).

Limits (``[component:pep]``): ``max_nodes`` per account (``policy-violation``
+ ``max-nodes-exceeded``: a flood of creations stops there while publishing
to existing nodes goes on), ``max_items`` per node (the ceiling of
``pubsub#max_items`` and what ``max`` means, Prosody's ``pep_max_items``),
``max_payload_size`` per item (``not-acceptable`` + ``payload-too-big``),
``max_subscriptions`` per node, ``max_bytes`` of item payloads per account
(``policy-violation``: without it ``max_nodes`` × ``max_items`` ×
``max_payload_size`` would be 1.6 GB), ``cache_size`` services of accounts
without a session. The implicit recipients are bounded by the sessions on this server
times what each session's presence may reach (its roster's ``max_items`` and
the presence component's ``max_directed``): a session's entries go when it
does. Remote resources: per account at most :data:`REMOTE_PER_ROSTER_ITEM`
times the roster component's ``max_items`` (6 000 by default: a contact has
one to a few resources online), and :data:`REMOTE_PER_CONTACT` of one remote
account; past either bound the least recently heard from goes first (most
likely one whose unavailable presence was lost with its link). They exist
only for accounts with a session here.

The API other components use (bookmarks, vCard4, avatars)::

    pep = server.components["pep"]
    d = pep.get_service("alice@localhost")            # Deferred[PubSub | None]
    d = pep.publish("alice@localhost", node, item_id, payload_element,
                    options={"access_model": "whitelist"})   # Deferred[Item]
    d = pep.retract(owner, node, ["id"]) ; d = pep.delete_node(owner, node)
    d = pep.items(owner, node)                         # Deferred[list[Item]] (owner's view)
    pep.payload(item)                                  # the item's payload element

Each acts as the account itself, sends the notifications the change causes
and fires once the change is durable; a refusal fails the Deferred with the
core's :class:`~xmppd.services.pubsub.core.PubSubError`. Every change of a
PEP node, by a client or through this API, fires the server-wide event
``pep-changed`` (``@handles("pep-changed")``; all handlers run) with a
:class:`PEPChange`.

``account-deleted``: the account's service and its implicit recipients leave
memory (its rows are purged already), and its explicit subscriptions and
affiliations on other accounts' nodes go, in storage and in memory.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.words.xish import domish

from xmppd import jid as jidlib
from xmppd import ns
from xmppd.component import Component, Option, handles
from xmppd.components.caps import CAPS_KNOWN, RemoteResource
from xmppd.config import integer
from xmppd.router.events import StanzaEvent
from xmppd.services.pubsub import store as storelib
from xmppd.services.pubsub.core import Item, Limits, Node, PubSub, PubSubError, bare
from xmppd.services.pubsub.protocol import PubSubProtocol, error_reply, features

#: The event fired (``router.notify``) for every change of a PEP node.
CHANGED = "pep-changed"
#: Access models a PEP node may have (XEP-0163 §8: all four).
ACCESS_MODELS = ("open", "presence", "roster", "whitelist")
#: New nodes' configuration: Prosody's mod_pep node defaults (XEP-0163 §5).
DEFAULTS = {
    "access_model": "presence",
    "max_items": 1,
    "persist_items": True,
    "send_last_published_item": "on_sub_and_presence",
}
#: Features Prosody's mod_pep lists beside the XEP-0060 ones of its service.
PEP_FEATURES = ("auto-subscribe", "filtered-notifications", "last-published",
                "presence-notifications", "presence-subscribe")
#: After the caps component (20), before the presence component (0): as
#: Prosody's mod_pep, which acts on presence before mod_presence does.
PRIORITY = 10
NOTIFY = "+notify"
#: Remote resources one account tracks: this many per roster item (times the
#: roster component's ``max_items``).
REMOTE_PER_ROSTER_ITEM = 3
#: Remote resources of one remote account one account tracks (our own
#: ``[c2s] max_resources`` default: what we let one account have).
REMOTE_PER_CONTACT = 10

#: Storage: PEP's own three stores (the pubsub service has its own).
NODES_STORE, ITEMS_STORE, REFS_STORE = "pep_nodes", "pep_items", "pep_refs"


def _account_features() -> list[str]:
    sample = PubSub("", defaults=DEFAULTS, autocreate=True)
    found = features(sample, ACCESS_MODELS)
    found += [f"{ns.PUBSUB}#{name}" for name in PEP_FEATURES]
    return sorted(set(found))


@dataclass
class PEPChange:
    """What ``pep-changed`` handlers get: a change of ``owner``'s node.

    ``kind``: ``items`` (``items`` published), ``retract`` (``ids``),
    ``purge``, ``delete``. ``actor``: the JID that asked (a client's full
    JID, or the owner's bare JID for a change made through the API).
    """

    owner: str
    node: str
    kind: str
    actor: str
    items: list[Item] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    #: the configuration the node has now (None when deleted)
    config: dict | None = None


class PEPService(PubSub):
    """One account's PEP core.

    It records every change (:meth:`take_changes`; the component fires
    ``pep-changed`` for them once the request is answered), and hands every
    notification to the broadcaster even when the node has no explicit
    subscriber (the core's ``notify_without_subscribers``): in PEP most
    recipients are implicit (caps ``+notify``), and the protocol adds them
    (:meth:`PEPProtocol.recipients`)."""

    def __init__(self, jid: str, **kw: Any):
        kw.setdefault("notify_without_subscribers", True)
        super().__init__(jid, **kw)
        self.changes: list[PEPChange] = []

    def take_changes(self) -> list[PEPChange]:
        changes, self.changes = self.changes, []
        return changes

    def publish(self, actor, name, item_id, payload, options=None, publisher=None) -> Item:
        item = super().publish(actor, name, item_id, payload, options, publisher)
        self.changes.append(PEPChange(self.jid, name, "items", actor, items=[item],
                                      config=dict(self.nodes[name].config)))
        return item

    def retract(self, actor, name, ids, notify=False) -> None:
        super().retract(actor, name, ids, notify)
        self.changes.append(PEPChange(self.jid, name, "retract", actor, ids=list(ids),
                                      config=dict(self.nodes[name].config)))

    def purge(self, actor, name) -> None:
        super().purge(actor, name)
        self.changes.append(PEPChange(self.jid, name, "purge", actor,
                                      config=dict(self.nodes[name].config)))

    def delete(self, actor, name, redirect=None) -> None:
        super().delete(actor, name, redirect)
        self.changes.append(PEPChange(self.jid, name, "delete", actor))


class PEPProtocol(PubSubProtocol):
    """XEP-0060 for PEP: notifications also reach the implicit recipients."""

    def __init__(self, router: Any, component: "PEPComponent"):
        super().__init__(router, access_models=ACCESS_MODELS)
        self.component = component

    def recipients(self, service: PubSub, node: Node, kind: str, recipients: list[str],
                   data: dict) -> list[str]:
        if kind == "subscription" or data.get("last"):
            return recipients  # to one JID, about its own subscription
        if kind == "delete" and not node.config.get("notify_delete", True):
            return recipients  # (none: the core asked no one)
        return self.component.audience(service, node, recipients)

    def event_stanza(self, service: PubSub, node: Node, kind: str, **data: Any) -> domish.Element:
        """As the protocol's, but every event item names its publisher (as
        Prosody 0.12's PEP notifications do; items retrieval shows it only
        when the node's ``itemreply`` is ``publisher``)."""
        stanza = super().event_stanza(service, node, kind, **data)
        if kind == "items":
            event = next(stanza.elements(ns.PUBSUB_EVENT, "event"))
            listing = next(event.elements(ns.PUBSUB_EVENT, "items"))
            for element, item in zip(listing.elements(ns.PUBSUB_EVENT, "item"),
                                     data.get("items") or ()):
                if item.publisher and not element.hasAttribute("publisher"):
                    element["publisher"] = item.publisher
        return stanza


@dataclass
class _Recipient:
    """A resource whose available presence reached an account: a session
    here or a :class:`RemoteResource`."""

    session: Any
    #: the nodes its caps ask for (None: its caps are not known)
    nodes: frozenset | None


class _RemoteResources:
    """One account's remote resources, least recently heard from first, kept
    within its bounds by :meth:`add`."""

    def __init__(self) -> None:
        self.resources: collections.OrderedDict[str, RemoteResource] = collections.OrderedDict()
        #: remote bare JID → how many of its resources are here
        self._contacts: collections.Counter[str] = collections.Counter()

    def __len__(self) -> int:
        return len(self.resources)

    def get(self, full: str) -> RemoteResource | None:
        return self.resources.get(full)

    def touch(self, full: str) -> None:
        self.resources.move_to_end(full)

    def add(self, resource: RemoteResource, limit: int, per_contact: int) -> list[RemoteResource]:
        """Add ``resource`` (heard from last); the resources evicted to stay
        within ``per_contact`` of its account and ``limit`` in all."""
        self.resources[resource.full] = resource
        self._contacts[resource.bare] += 1
        evicted = []
        if self._contacts[resource.bare] > per_contact:
            oldest = next(r for r in self.resources.values() if r.bare == resource.bare)
            evicted.append(self.remove(oldest.full))
        while len(self.resources) > limit:
            evicted.append(self.remove(next(iter(self.resources))))
        return evicted

    def remove(self, full: str) -> RemoteResource | None:
        resource = self.resources.pop(full, None)
        if resource is not None:
            self._contacts[resource.bare] -= 1
            if not self._contacts[resource.bare]:
                del self._contacts[resource.bare]
        return resource

    def of_contact(self, bare: str) -> list[RemoteResource]:
        if bare not in self._contacts:
            return []
        return [r for r in self.resources.values() if r.bare == bare]


class PEPComponent(Component):
    """PEP on every account (XEP-0163)."""

    name = "pep"
    account_identities = [("pubsub", "pep", "")]
    account_features = _account_features()
    options = [
        Option("max_nodes", integer(1), "100",
               "most PEP nodes one account may have; more are refused with "
               "policy-violation + max-nodes-exceeded"),
        Option("max_items", integer(1), "256",
               "most items a PEP node keeps: the highest pubsub#max_items a node may "
               "be configured with, and what 'max' means"),
        Option("max_payload_size", integer(1), "65536",
               "most bytes of one item's payload (serialised XML); a bigger one is "
               "refused with not-acceptable + payload-too-big"),
        Option("max_subscriptions", integer(1), "1000",
               "most explicit subscriptions of one PEP node; more are refused with "
               "policy-violation + too-many-subscriptions"),
        Option("max_bytes", integer(1), "10485760",
               "most bytes of item payloads one account's PEP holds, all nodes together; "
               "a publish that would pass it is refused with policy-violation"),
        Option("cache_size", integer(0), "1000",
               "PEP services of accounts without a session kept in memory (those "
               "of accounts with one always are); the least recently used beyond "
               "that are read from storage again when next needed"),
    ]
    stores = {NODES_STORE: "map", ITEMS_STORE: "map", REFS_STORE: "map"}

    def __init__(self, server, config: dict[str, Any]):
        super().__init__(server, config)
        self.protocol = PEPProtocol(self.router, self)
        self.limits = Limits(max_items=config["max_items"],
                             max_payload=config["max_payload_size"],
                             max_nodes=config["max_nodes"],
                             max_subscriptions=config["max_subscriptions"],
                             max_bytes=config["max_bytes"])
        #: services of accounts with a session
        self._online: dict[str, PEPService] = {}
        #: services of accounts without one, least recently used first
        self._cache: collections.OrderedDict[str, PEPService] = collections.OrderedDict()
        #: accounts whose service is being read: the Deferreds waiting for it
        self._loading: dict[str, list[defer.Deferred]] = {}
        #: bumped per account when it is deleted: a read begun before is dropped
        self._generation: collections.Counter[str] = collections.Counter()
        #: account → full JID → a resource whose presence reached the account
        self._recipients: dict[str, dict[str, _Recipient]] = {}
        #: full JID of a session here → accounts it is a recipient of (the reverse index)
        self._reaches: dict[str, set[str]] = {}
        #: account → its remote resources (also in its _recipients)
        self._remote: dict[str, _RemoteResources] = {}

    def startService(self) -> None:
        super().startService()
        self.storage = storelib.PubSubStorage(self.store[NODES_STORE], self.store[ITEMS_STORE],
                                              self.store[REFS_STORE])
        for needed, without in (("caps", "only explicit subscribers are notified"),
                                ("roster", "presence and roster nodes are the owner's "
                                 "alone, and only its own resources are notified implicitly")):
            if self.server.components.get(needed) is None:
                self.log.warn("pep is enabled without the {needed} component: {without}",
                              needed=needed, without=without)

    @property
    def _rosters(self) -> Any:
        return self.server.components.get("roster")

    @property
    def _caps(self) -> Any:
        return self.server.components.get("caps")

    # -- services ----------------------------------------------------------------------

    def get_service(self, owner: str) -> defer.Deferred:
        """Deferred firing with ``owner``'s PEP service (None when there is no
        such account), with the account's roster in memory too (the access
        models read it)."""
        service = self._online.get(owner)
        if service is None:
            service = self._cache.get(owner)
            if service is not None:
                self._cache.move_to_end(owner)
        if service is not None:
            return self._with_roster(owner, service)
        waiter: defer.Deferred = defer.Deferred()
        waiting = self._loading.get(owner)
        if waiting is not None:
            waiting.append(waiter)
            return waiter
        self._loading[owner] = [waiter]
        d = self._read(owner, self._generation[owner])
        d.addBoth(self._loaded, owner)
        return waiter

    def _with_roster(self, owner: str, service: Any) -> defer.Deferred:
        rosters = self._rosters
        if rosters is None or rosters.cached(owner) is not None:
            return defer.succeed(service)
        return rosters.load(owner).addCallback(lambda _: service)

    @defer.inlineCallbacks
    def _read(self, owner: str, generation: int):
        exists = yield self.server.accounts.exists(owner)
        if not exists:
            return None
        nodes = yield self.storage.load(owner)
        if self._generation[owner] != generation:
            return None  # deleted meanwhile
        service = self._online.get(owner) or self._cache.get(owner)
        if service is None:
            service = self._new_service(owner, nodes)
            if self.router.resources(owner):
                self._online[owner] = service
            else:
                self._cache[owner] = service
                self._trim()
        rosters = self._rosters
        if rosters is not None:
            yield rosters.load(owner)
        return service

    def _loaded(self, result: Any, owner: str) -> None:
        for waiter in self._loading.pop(owner, []):
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    def _new_service(self, owner: str, nodes: dict[str, Node]) -> PEPService:
        return PEPService(
            owner,
            store=self.storage.service(owner),
            broadcaster=self.protocol,
            access=self,
            limits=self.limits,
            defaults=dict(DEFAULTS),
            admins=frozenset((owner,)),
            create_policy=lambda actor: bare(actor) == owner,
            clock=self.clock.seconds,
            autocreate=True,
            nodes=nodes,
        )

    def _trim(self) -> None:
        while len(self._cache) > self.config["cache_size"]:
            owner, _ = self._cache.popitem(last=False)
            self.storage.drop(owner)

    @handles("resource-bind")
    def bound(self, session: Any) -> bool:
        service = self._cache.pop(session.bare, None)
        if service is not None:
            self._online[session.bare] = service
        return False

    @handles("resource-unbind")
    def unbound(self, session: Any) -> bool:
        jid = getattr(session, "jid", None)
        if jid is not None:
            self._lose(jid.full(), session)
        if not self.router.resources(session.bare):
            self._drop_all_remote(session.bare)
            service = self._online.pop(session.bare, None)
            if service is not None:
                self._cache[session.bare] = service
                self._trim()
        return False

    # -- the access models' view of the roster (core.Access) -----------------------------

    def relation(self, owner: str, jid: str) -> dict:
        """Whether bare ``jid`` may see ``owner``'s presence, and the groups
        ``owner``'s roster puts it in (from the roster in memory:
        :meth:`get_service` loaded it)."""
        rosters = self._rosters
        roster = rosters.cached(owner) if rosters is not None else None
        if roster is None:
            return {}
        contact = bare(jid)
        item = roster.get(contact)
        return {"presence": roster.is_subscribed_from(contact),
                "roster_groups": set(item.groups) if item is not None else set()}

    # -- XEP-0060 requests -----------------------------------------------------------

    @handles(f"iq-get/self/{ns.PUBSUB}:pubsub")
    @handles(f"iq-set/self/{ns.PUBSUB}:pubsub")
    @handles(f"iq-get/self/{ns.PUBSUB_OWNER}:pubsub")
    @handles(f"iq-set/self/{ns.PUBSUB_OWNER}:pubsub")
    @handles(f"iq-get/bare/{ns.PUBSUB}:pubsub")
    @handles(f"iq-set/bare/{ns.PUBSUB}:pubsub")
    @handles(f"iq-get/bare/{ns.PUBSUB_OWNER}:pubsub")
    @handles(f"iq-set/bare/{ns.PUBSUB_OWNER}:pubsub")
    def pubsub(self, event: StanzaEvent) -> Any:
        """A ``<pubsub/>`` request to an account's bare JID (its own, or
        another's: items, subscriptions; publishing there is forbidden by
        the core, as only the owner publishes)."""
        owner = event.to.userhost() if event.to is not None else None
        if owner is None:
            return event.error("bad-request")

        def ready(service: PEPService | None):
            if service is None:
                # No such account: forbidden, as Prosody's stand-in service
                # for a missing account answers everything.
                return error_reply(event.stanza, PubSubError("forbidden"))
            return self._then_report(service, self.protocol.handle(event, service))
        return self.get_service(owner).addCallback(ready)

    def _then_report(self, service: PEPService, result: Any) -> Any:
        """Fire ``pep-changed`` for what a request changed once it is answered
        (a handler may then change PEP nodes itself without interleaving)."""
        changes = service.take_changes()
        if not changes:
            return result

        def report(outcome: Any) -> Any:
            for change in changes:
                self.router.notify(CHANGED, change)
            return outcome
        if isinstance(result, defer.Deferred):
            return result.addCallback(report)
        return report(result)

    # -- XEP-0030 (through the disco component's hook) -------------------------------

    def account_disco_items(self, requester: str, owner: str) -> defer.Deferred:
        """disco#items of ``owner``'s bare JID: the nodes ``requester`` may see."""
        def listed(service: PEPService | None) -> list[domish.Element]:
            found = []
            if service is None:
                return found
            for name in sorted(service.nodes):
                node = service.nodes[name]
                if not service.may_see(requester, node):
                    continue
                item = domish.Element((ns.DISCO_ITEMS, "item"))
                item["jid"], item["node"] = owner, name
                if node.config.get("title"):
                    item["name"] = node.config["title"]
                found.append(item)
            return found
        return self.get_service(owner).addCallback(listed)

    def account_disco_node(self, event: StanzaEvent, owner: str) -> defer.Deferred:
        """disco#info of one of ``owner``'s nodes (identity ``pubsub/leaf``
        and its meta-data form) or disco#items (its items); None when there
        is no such node (the disco component answers item-not-found)."""
        name = event.payload.getAttribute("node")

        def answer(service: PEPService | None) -> domish.Element | None:
            if service is None or name not in service.nodes:
                return None
            if event.payload.uri == ns.DISCO_INFO:
                reply = self.protocol.disco_info_node(event, service, name)
            else:
                reply = self.protocol.disco_items_node(event, service, name, jid=owner)
            reply["from"] = owner  # also when the client left 'to' out
            return reply
        return self.get_service(owner).addCallback(answer)

    # -- implicit recipients ----------------------------------------------------------

    def _interest(self, session: Any) -> frozenset | None:
        """The nodes ``session``'s caps ask notifications of (None: unknown)."""
        caps = self._caps
        known = caps.features_of(session) if caps is not None else None
        if known is None:
            return None
        return frozenset(f[:-len(NOTIFY)] for f in known if f.endswith(NOTIFY))

    @handles("presence/self", priority=PRIORITY)
    def own_presence(self, event: StanzaEvent) -> bool:
        """The account's own resources are recipients of its own PEP (§4.3.4:
        including the account owner)."""
        session = event.origin
        if session is None or getattr(session, "jid", None) is None \
                or event.stanza.getAttribute("to") is not None:
            return False
        if event.type is None:
            self._reached(session.bare, session)
        elif event.type == "unavailable":
            self._lose(session.jid.full(), session, only=session.bare)
        return False

    @handles("presence/bare", priority=PRIORITY)
    @handles("presence/full", priority=PRIORITY)
    def inbound_presence(self, event: StanzaEvent) -> bool:
        """A resource's presence reached an account: note it (or forget
        it, when unavailable). Never consumes the presence."""
        if event.from_ is None or event.to is None:
            return False
        if event.from_.host not in self.router.domains:
            self._remote_presence(event)
            return False
        if event.type not in (None, "unavailable") or event.from_.resource is None:
            return False
        sender = self.router.resources(event.from_.userhost()).get(event.from_.resource)
        if sender is None:
            return False  # not a session of this server
        owner = event.to.userhost()
        if event.type is None:
            if sender.bare == owner:
                self._reached(owner, sender)
            else:
                self._contact_reached(owner, sender)
        else:
            self._lose(sender.jid.full(), sender, only=owner)
        return False

    def _contact_reached(self, owner: str, sender: Any) -> None:
        """Available presence of another account's resource: it becomes an
        implicit recipient only if that account is subscribed to ``owner``'s
        presence (as Prosody's mod_pep: presence from anyone else, directed
        presence of a stranger included, is not tracked; XEP-0163 §4.1 makes
        the presence subscription the implicit subscription). The roster is
        read from memory, loaded first when it is not there."""
        def check(_: Any) -> None:
            # the session may have gone while the roster loaded: a recipient
            # added now would never be removed
            if self.router.resources(sender.bare).get(sender.resource) is not sender:
                return
            if self.relation(owner, sender.bare).get("presence"):
                self._reached(owner, sender)
        d = self._with_roster(owner, None)
        d.addCallback(check)
        d.addErrback(lambda f: self.log.failure("PEP presence of {jid} to {owner}", f,
                                                jid=sender.jid.full(), owner=owner))

    @handles(CAPS_KNOWN)
    def caps_known(self, session: Any) -> None:
        """A resource's caps are known (or changed): the accounts it reaches
        may owe it last items."""
        if isinstance(session, RemoteResource):
            tracked = self._remote.get(session.account)
            if tracked is not None and tracked.get(session.full) is session:
                self._reached(session.account, session)
            return
        full = session.jid.full()
        for owner in list(self._reaches.get(full, ())):
            self._reached(owner, session)

    # -- remote resources (federation) ----------------------------------------------

    def _remote_presence(self, event: StanzaEvent) -> None:
        """Presence of another server's resource to an account with a session
        here. Each is handled once the account's roster is in memory (at once
        while it has a session), in the order they came."""
        owner, sender, stype = event.to.userhost(), event.from_, event.type
        if stype not in (None, "unavailable", "error", "unsubscribe") \
                or not self.router.resources(owner):
            return
        if stype is None:
            if sender.resource is None or self._caps is None:
                return
            c = next(event.stanza.elements(ns.CAPS, "c"), None)
            step, args = self._remote_available, (owner, sender, c)
        else:
            whole = stype == "unsubscribe" or sender.resource is None
            step, args = self._remote_gone, (owner, sender, whole)
        d = self._with_roster(owner, None)
        d.addCallback(lambda _: step(*args))
        d.addErrback(lambda f: self.log.failure("PEP presence of {jid} to {owner}", f,
                                                jid=sender.full(), owner=owner))

    def _remote_available(self, owner: str, sender: Any, c: domish.Element | None) -> None:
        if not self.router.resources(owner):
            return  # its last session went while the roster loaded
        full = sender.full()
        tracked = self._remote.get(owner)
        resource = tracked.get(full) if tracked is not None else None
        if not self.relation(owner, sender.userhost()).get("presence"):
            if resource is not None:  # no longer subscribed
                self._drop_remote(owner, resource)
            return
        if resource is None:
            if c is None:
                return  # no caps, none before: nothing would ever be sent to it
            if tracked is None:
                tracked = self._remote[owner] = _RemoteResources()
            resource = RemoteResource(sender, owner, self.router)
            limit = REMOTE_PER_ROSTER_ITEM * self._rosters.config["max_items"]
            for evicted in tracked.add(resource, limit, REMOTE_PER_CONTACT):
                self._untrack(owner, evicted)
        else:
            tracked.touch(full)
        self._reached(owner, resource)
        if c is not None:
            # caps-known follows, at once for a known ver (then _reached again)
            self._caps.claim(resource, c)

    def _remote_gone(self, owner: str, sender: Any, whole: bool) -> None:
        """Unavailable or error presence of ``sender`` (all resources of its
        account with ``whole``: from its bare JID, or an unsubscribe)."""
        tracked = self._remote.get(owner)
        if tracked is None:
            return
        if whole:
            gone = tracked.of_contact(sender.userhost())
        else:
            resource = tracked.get(sender.full())
            gone = [resource] if resource is not None else []
        for resource in gone:
            self._drop_remote(owner, resource)

    def _drop_remote(self, owner: str, resource: RemoteResource) -> None:
        tracked = self._remote.get(owner)
        if tracked is not None and tracked.get(resource.full) is resource:
            tracked.remove(resource.full)
            if not tracked:
                del self._remote[owner]
        self._untrack(owner, resource)

    def _drop_all_remote(self, owner: str) -> None:
        tracked = self._remote.pop(owner, None)
        if tracked is not None:
            for resource in list(tracked.resources.values()):
                self._untrack(owner, resource)

    def _untrack(self, owner: str, resource: RemoteResource) -> None:
        """``resource`` is no recipient of ``owner``'s any more, and its caps
        are forgotten."""
        known = self._recipients.get(owner)
        entry = known.get(resource.full) if known is not None else None
        if entry is not None and entry.session is resource:
            del known[resource.full]
            if not known:
                del self._recipients[owner]
        caps = self._caps
        if caps is not None:
            caps.forget(resource)

    def _reached(self, owner: str, session: Any) -> None:
        full = session.jid.full()
        nodes = self._interest(session)
        known = self._recipients.setdefault(owner, {})
        before = known.get(full)
        if before is not None and before.session is not session:
            before = None  # another session with that JID before: start afresh
        if nodes is None and before is not None:
            nodes = before.nodes  # new caps not verified yet: the old interest holds
        known[full] = _Recipient(session, nodes)
        if not isinstance(session, RemoteResource):  # a remote one belongs to its account
            self._reaches.setdefault(full, set()).add(owner)
        had = before.nodes if before is not None and before.nodes else frozenset()
        new = (nodes or frozenset()) - had
        if new:
            d = self.get_service(owner)
            d.addCallback(self._send_last, full, session, new)
            d.addErrback(lambda f: self.log.failure("PEP last items of {owner} to {jid}", f,
                                                    owner=owner, jid=full))

    def _lose(self, full: str, session: Any, only: str | None = None) -> None:
        owners = self._reaches.get(full)
        if not owners:
            return
        for owner in ([only] if only is not None else list(owners)):
            known = self._recipients.get(owner)
            entry = known.get(full) if known is not None else None
            if entry is None or entry.session is not session:
                continue
            del known[full]
            if not known:
                del self._recipients[owner]
            owners.discard(owner)
        if not owners:
            del self._reaches[full]

    def _send_last(self, service: PEPService | None, full: str, session: Any,
                   names: frozenset) -> None:
        """§4.3.4: the last item of each of ``names`` to a newly interested resource."""
        if service is None:
            return
        entry = self._recipients.get(service.jid, {}).get(full)
        if entry is None or entry.session is not session:
            return  # gone meanwhile
        for name in sorted(names):
            node = service.nodes.get(name)
            if node is None or not node.items \
                    or node.config.get("send_last_published_item") != "on_sub_and_presence" \
                    or not service.may_see(full, node) or self._blocked(service.jid, full):
                continue
            last = service.last_item(name)
            stanza = self.protocol.event_stanza(service, node, "items", items=[last])
            self.protocol.send_event(stanza, [full])

    def _blocked(self, owner: str, jid: str) -> bool:
        blocking = self.server.components.get("blocking")
        if blocking is None:
            return False
        parsed = jidlib.parse_or_none(jid)
        return parsed is not None and blocking.is_blocked(owner, parsed)

    def audience(self, service: PubSub, node: Node, subscribers: list[str]) -> list[str]:
        """Who gets a notification of ``node``: the resources that reached the
        account and asked for the node, and may see it; the explicit
        subscribers (the core checked those), a bare one replaced by its
        interested resources when its resources are known (§4.3.2); never a
        JID the account blocks."""
        owner = service.jid
        known = self._recipients.get(owner, {})
        out: dict[str, None] = {}
        for full, entry in known.items():
            if entry.nodes and node.name in entry.nodes and service.may_see(full, node):
                out[full] = None
        for jid in subscribers:
            if "/" not in jid and any(entry.nodes is not None and full.split("/", 1)[0] == jid
                                      for full, entry in known.items()):
                continue  # its caps are known: its interested resources have it
            out[jid] = None
        return [jid for jid in out if not self._blocked(owner, jid)]

    # -- the API of other components ------------------------------------------------

    def payload(self, item: Item) -> domish.Element | None:
        """The payload element of an item (parsed from its stored text)."""
        return self.protocol.payload_of(item)

    def _as_owner(self, owner: str, operation) -> defer.Deferred:
        """Run ``operation(service)`` on ``owner``'s service; fire with its
        result once its writes are durable. Its notifications leave at once
        (as Prosody's), its ``pep-changed`` events once durable."""
        def run(service: PEPService | None):
            if service is None:
                raise PubSubError("item-not-found", text=f"no account {owner}")
            try:
                result = operation(service)
            except Exception:
                service.take_writes()
                raise
            writes = service.take_writes()
            done = defer.gatherResults(writes, consumeErrors=True) if writes \
                else defer.succeed(None)
            return self._then_report(service, done.addCallback(lambda _: result))
        return self.get_service(owner).addCallback(run)

    def publish(self, owner: str, node: str, item_id: str | None, payload: domish.Element,
                options: dict | None = None) -> defer.Deferred:
        """Publish ``payload`` to ``owner``'s ``node`` as the account itself
        (created with ``options`` as configuration if missing; otherwise they
        are preconditions). Deferred[Item]."""
        return self._as_owner(owner, lambda s: s.publish(owner, node, item_id,
                                                         payload.toXml(), options))

    def retract(self, owner: str, node: str, ids: list[str], notify: bool = True) -> defer.Deferred:
        return self._as_owner(owner, lambda s: s.retract(owner, node, ids, notify))

    def delete_node(self, owner: str, node: str) -> defer.Deferred:
        return self._as_owner(owner, lambda s: s.delete(owner, node))

    def items(self, owner: str, node: str) -> defer.Deferred:
        """Deferred[list[Item]] of ``owner``'s ``node``, oldest first
        (``PubSubError`` item-not-found when there is no such node)."""
        return self.get_service(owner).addCallback(
            lambda s: s.items(owner, node) if s is not None else [])

    # -- accounts ----------------------------------------------------------------------

    @handles("account-deleted")
    @defer.inlineCallbacks
    def forget(self, user: str):
        """The account is gone: its service leaves memory, and its explicit
        subscriptions and affiliations on others' nodes go (storage and memory)."""
        self._generation[user] += 1
        self._online.pop(user, None)
        self._cache.pop(user, None)
        self._drop_all_remote(user)
        for full in list(self._recipients.pop(user, {})):
            owners = self._reaches.get(full)
            if owners is not None:
                owners.discard(user)
                if not owners:
                    del self._reaches[full]
        changed = yield self.storage.forget(user)
        writes = []
        for owner in changed:
            service = self._online.get(owner) or self._cache.get(owner)
            if service is not None:
                service.forget_jid(user)
                writes += service.take_writes()
        if writes:
            yield defer.gatherResults(writes, consumeErrors=True)
