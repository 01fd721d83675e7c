"""The publish-subscribe service (XEP-0060) on a domain of its own.

``[component:pubsub]`` serves ``pubsub.<first domain>`` by default: one
:class:`~xmppd.services.pubsub.core.PubSub` core holding every node, persisted
write-through by :mod:`~xmppd.services.pubsub.store` (nodes and items survive
``kill -9``: a request is answered only once its writes are durable), and
:mod:`~xmppd.services.pubsub.protocol` for the XML.

What it offers follows Prosody 0.12's ``mod_pubsub`` as a component (its
disco identity ``pubsub/service``, its features, its node defaults: open
access, 20 items, persistent, ``send_last_published_item = never``), with
the choices left to a deployment as options:

- ``create``: who may create nodes — ``local``: any account of this server's
  domains (ejabberd's default); ``admins``: only ``[server] admins`` (Prosody's
  default). Refused: ``forbidden``. ``[server] admins`` own every node, as in
  Prosody (``default_admin_affiliation = owner``).
- Access models: ``open`` and ``whitelist`` (Prosody's mod_pubsub refuses the
  others with ``not-acceptable``; ``presence`` and ``roster`` need a roster,
  which a node on a service does not have).
- Limits, each with XEP-0060's error: ``max_items`` (the ceiling of a node's
  ``pubsub#max_items``, and what ``max`` means: Prosody's ``pubsub_max_items``,
  256), ``max_payload_size`` (``not-acceptable`` + ``payload-too-big``),
  ``max_nodes`` (``policy-violation`` + ``max-nodes-exceeded``: a flood of
  creations stops there while publishing goes on), ``max_subscriptions`` per
  node (``policy-violation`` + ``too-many-subscriptions``).

An account deleted (``account-deleted``) loses its subscriptions (any
resource) and affiliations on every node; a node it alone owned is deleted.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.words.xish import domish

from xmppd import jid as jidlib
from xmppd import ns
from xmppd.component import Option, Service, handles
from xmppd.config import boolean, choice, integer, string
from xmppd.router.events import StanzaEvent, disco_info
from xmppd.services.pubsub import store as storelib
from xmppd.services.pubsub.core import (PUBLISH_MODELS, SEND_LAST_PUBLISHED_ITEM, Limits,
                                        PubSub)
from xmppd.services.pubsub.protocol import PubSubProtocol, features

#: The access models nodes of this service may have (as Prosody's mod_pubsub).
ACCESS_MODELS = ("open", "whitelist")


class PubSubService(Service):
    """XEP-0060 publish-subscribe on ``[component:pubsub] domain``."""

    name = "pubsub"
    subdomain = "pubsub"
    title = "Publish-Subscribe"
    identities = [("pubsub", "service", "Publish-Subscribe")]
    options = [
        Option("name", string, "Publish-Subscribe",
               "the service's name in service discovery (its identity, and the server's "
               "list of services)"),
        Option("create", choice("local", "admins"), "local",
               "who may create nodes: local (any account of this server) or admins "
               "(only [server] admins); others get forbidden"),
        Option("max_items", integer(1), "256",
               "most items a node keeps: the highest pubsub#max_items a node may be "
               "configured with, and what 'max' means"),
        Option("max_payload_size", integer(1), "65536",
               "most bytes of one item's payload (serialised XML); a bigger one is refused "
               "with not-acceptable + payload-too-big"),
        Option("max_nodes", integer(1), "1000",
               "most nodes on the service; creating more is refused with policy-violation "
               "+ max-nodes-exceeded"),
        Option("max_subscriptions", integer(1), "1000",
               "most subscriptions of one node; more are refused with policy-violation "
               "+ too-many-subscriptions"),
        Option("max_bytes", integer(1), "104857600",
               "most bytes of item payloads the service holds, all nodes together; a "
               "publish that would pass it is refused with policy-violation"),
        Option("max_nodes_per_user", integer(1), "100",
               "most nodes one account may own on the service (so one account's flood of "
               "creations does not take every node); more: policy-violation + "
               "max-nodes-exceeded"),
        Option("default_access_model", choice(*ACCESS_MODELS), "open",
               "pubsub#access_model of a new node: open or whitelist"),
        Option("default_publish_model", choice(*PUBLISH_MODELS), "publishers",
               "pubsub#publish_model of a new node: publishers, subscribers or open"),
        Option("default_max_items", integer(1), "20",
               "pubsub#max_items of a new node (at most max_items)"),
        Option("default_persist_items", boolean, "true",
               "pubsub#persist_items of a new node (false: items live in memory only)"),
        Option("default_send_last_published_item", choice(*SEND_LAST_PUBLISHED_ITEM), "never",
               "pubsub#send_last_published_item of a new node: never, on_sub or "
               "on_sub_and_presence"),
    ]
    stores = dict(storelib.STORES)

    def __init__(self, server: Any, config: dict[str, Any]):
        super().__init__(server, config)
        self.title = config["name"]
        self.identities = [("pubsub", "service", config["name"])]
        self.protocol = PubSubProtocol(self.router, access_models=ACCESS_MODELS)
        self.core: PubSub | None = None
        self._waiting: list[defer.Deferred] = []

    def startService(self) -> None:
        super().startService()
        self.storage = storelib.PubSubStorage(self.store[storelib.NODES_STORE],
                                              self.store[storelib.ITEMS_STORE],
                                              self.store[storelib.REFS_STORE])
        d = self.storage.load(self.domain)
        d.addCallback(self._loaded)
        d.addErrback(self._load_failed)

    def _loaded(self, nodes: dict) -> None:
        config = self.config
        self.core = PubSub(
            self.domain,
            store=self.storage.service(self.domain),
            broadcaster=self.protocol,
            limits=Limits(max_items=config["max_items"],
                          max_payload=config["max_payload_size"],
                          max_nodes=config["max_nodes"],
                          max_subscriptions=config["max_subscriptions"],
                          max_bytes=config["max_bytes"],
                          max_nodes_per_owner=config["max_nodes_per_user"]),
            defaults={
                "access_model": config["default_access_model"],
                "publish_model": config["default_publish_model"],
                "max_items": min(config["default_max_items"], config["max_items"]),
                "persist_items": config["default_persist_items"],
                "send_last_published_item": config["default_send_last_published_item"],
            },
            admins=frozenset(self.server.admins),
            create_policy=self.may_create,
            clock=self.clock.seconds,
            nodes=nodes,
        )
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(self.core)

    def _load_failed(self, failure: Any) -> None:
        self.log.failure("pubsub: loading the nodes of {domain} failed", failure,
                         domain=self.domain)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.errback(failure)

    def service(self) -> PubSub | defer.Deferred:
        """The core, or a Deferred of it while the nodes are still loading."""
        if self.core is not None:
            return self.core
        d: defer.Deferred = defer.Deferred()
        self._waiting.append(d)
        return d

    def may_create(self, actor: str) -> bool:
        """The ``create`` option: any account of a local domain, or admins only."""
        parsed = jidlib.parse_or_none(actor)
        if parsed is None or parsed.user is None:
            return False
        if self.config["create"] == "admins":
            return self.server.is_admin(parsed)
        return parsed.host in self.router.hosts

    # -- XEP-0060 ------------------------------------------------------------------

    @handles(f"iq-get/host/{ns.PUBSUB}:pubsub")
    @handles(f"iq-set/host/{ns.PUBSUB}:pubsub")
    @handles(f"iq-get/host/{ns.PUBSUB_OWNER}:pubsub")
    @handles(f"iq-set/host/{ns.PUBSUB_OWNER}:pubsub")
    def pubsub(self, event: StanzaEvent) -> Any:
        return self.protocol.handle(event, self.service())

    # -- XEP-0030 ------------------------------------------------------------------

    def _with_core(self, answer) -> Any:
        core = self.service()
        if isinstance(core, defer.Deferred):
            return core.addCallback(answer)
        return answer(core)

    def disco_info(self, event: StanzaEvent) -> Any:
        """The service: identity pubsub/service and the features Prosody's
        mod_pubsub lists; a node: see :meth:`PubSubProtocol.disco_info_node`."""
        node = event.payload.getAttribute("node")

        def answer(core: PubSub) -> domish.Element:
            if node:
                return self.protocol.disco_info_node(event, core, node)
            return event.reply(disco_info(
                self.identities, [ns.DISCO_INFO, ns.DISCO_ITEMS] + features(core, ACCESS_MODELS)))
        return self._with_core(answer)

    def disco_items(self, event: StanzaEvent) -> Any:
        """The nodes the requester may see, or a node's items."""
        node = event.payload.getAttribute("node")

        def answer(core: PubSub) -> domish.Element:
            if node:
                return self.protocol.disco_items_node(event, core, node)
            return self.protocol.disco_items(event, core)
        return self._with_core(answer)

    # -- accounts ------------------------------------------------------------------

    @handles("account-deleted")
    @defer.inlineCallbacks
    def forget(self, user: str):
        """The account's subscriptions and affiliations go, on every node;
        fires once the store holds that."""
        core = yield self.service()
        core.forget_jid(user)
        writes = core.take_writes()
        if writes:
            yield defer.gatherResults(writes, consumeErrors=True)
