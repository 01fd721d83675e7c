"""XEP-0060 on the wire: ``<pubsub/>`` iqs in, core calls, replies and
``<event/>`` notifications out — shared by the pubsub service and PEP.

The API (for :mod:`xmppd.services.pubsub.service` and
:mod:`xmppd.components.pep`)::

    protocol = PubSubProtocol(router, access_models=("open", "whitelist"))
    core = PubSub(jid, broadcaster=protocol, ...)      # the protocol IS the broadcaster

    # a handler of iq-get/iq-set ``{PUBSUB}:pubsub`` and ``{PUBSUB_OWNER}:pubsub``:
    return protocol.handle(event, core)                # core: a PubSub, or a Deferred of one

    # XEP-0030 of a service / of a node (each returns the reply or error element):
    protocol.disco_info_node(event, core, node)        # identity pubsub/leaf + meta-data form
    protocol.disco_items(event, core)                  # the nodes the requester may see
    protocol.disco_items_node(event, core, node)       # the node's items (jid, name=item id)

    # notifications outside a request (PEP: last item to a resource coming online):
    stanza = protocol.event_stanza(core, node, "items", items=[item])   # built once, no 'to'
    protocol.send_event(stanza, ["bob@localhost/phone"])                 # one Fanout, routed

    features(core, access_models)          # the pubsub#… disco features of a service
    error_reply(stanza, PubSubError(...))  # a refusal as XEP-0060 writes it

``handle`` returns what a handler returns: an error element for a refusal,
else True or a Deferred firing True once the reply has been sent; the core's
store writes of the request are durable before the reply leaves
(``take_writes``), and the notifications the request caused are sent after
them, in the order Prosody sends them (publish, retract, purge, delete:
notifications, then the reply; subscribe: the reply, then the last item).

Requests are answered as Prosody 0.12's mod_pubsub answers them, stanza for
stanza (``tests/e2e/test_pubsub_differential.py`` plays one conversation
against both), except where XEP-0060 names another answer:

- ``<subscribe/>`` for another JID by a non-owner: ``bad-request`` +
  ``invalid-jid`` (§6.1.3.1; Prosody: ``forbidden``);
- ``<publish/>`` without an item: ``item-required`` (§7.1.3.6), an item
  without payload ``payload-required``, with two payloads, of another
  namespace than the node's ``pubsub#type``, or two items in one publish:
  ``invalid-payload`` (§7.1.3.5; Prosody: ``bad-request`` "invalid item",
  or it publishes the first of several items);
- ``<retract/>`` without an item id: ``item-required`` (§7.2.3.3; Prosody:
  ``item-not-found``);
- an item whose ``publisher`` attribute is not the sender's own JID:
  ``forbidden`` — one may not publish in someone else's name (Prosody
  overwrites it);
- subscription options (``<options/>``, ``<default/>``, subscribe with
  options) are not supported: ``feature-not-implemented`` + ``unsupported
  feature='subscription-options'`` (§6.3.4.2);
- an entity's affiliations (§5.7) are answered (Prosody 0.12:
  ``service-unavailable``); owners' lists carry ``node`` on the list
  (§8.8.1), not on each entry;
- an empty ``<configure/>`` beside ``<create/>`` (XEP-0060 before 1.13)
  means the default configuration (Prosody: ``bad-request``);
- discovery shows a node only to those who may see its items: disco#items
  of the service leaves the others out and disco#info / disco#items of such
  a node is ``item-not-found`` (Prosody 0.12 lists every node to anyone).

Who is notified is the core's decision (``recipients``); a subclass may widen
it by overriding :meth:`PubSubProtocol.recipients` (PEP adds the full JIDs
whose XEP-0115 caps say ``+notify``, checked with ``core.may_see``).

Event stanzas (as Prosody 0.12 sends them, checked against a private one):
``<message from='<service jid>' type='headline' id='…'><event
xmlns='…pubsub#event'><items node='n'><item id='i'>payload</item></items>
</event></message>`` — the same id for every recipient of one notification,
``to`` the subscribed JID (bare or full) as subscribed; ``type`` is the node's
``notification_type``. Retraction: ``<items node='n'><retract id='i'/></items>``;
purge: ``<purge node='n'/>``; deletion: ``<delete node='n'>`` with XEP-0060's
``<redirect uri='…'/>`` when the owner gave one (Prosody drops it);
configuration (``notify_config``; Prosody 0.12 never sends it):
``<configuration node='n'/>``, with the node_config form when
``deliver_payloads``; a subscription changed by an owner (§8.8.4):
``<subscription node='n' jid='j' subscription='none|subscribed'/>``. With
``deliver_payloads`` off, items carry no payload. An item carries
``publisher='<bare JID>'`` when the node's ``itemreply`` is ``publisher``
(Prosody 13) or when the protocol was built with ``expose_publisher=True``.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable, Iterable, Sequence

from twisted.internet import defer
from twisted.logger import Logger
from twisted.words.xish import domish

from xmppd import jid as jidlib
from xmppd import ns
from xmppd.router.events import StanzaEvent, disco_info, stanza_error
from xmppd.router.fanout import Fanout
from xmppd.services.pubsub import forms
from xmppd.services.pubsub.core import (AFFILIATIONS, SUPPORTED_ACCESS_MODELS, Item, Node,
                                        PubSub, PubSubError)
from xmppd.xml.stream import parse_element

__all__ = ["PubSubProtocol", "error_reply", "features"]

#: The service's own affiliations that XEP-0060 names as features.
_AFFILIATION_FEATURES = ("member", "outcast", "publisher", "publish-only")
#: Features of every service built on this module (Prosody's mod_pubsub list,
#: without ``subscription-options``, with the operations it lacks added).
_FEATURES = (
    "create-nodes", "instant-nodes", "item-ids", "create-and-configure",
    "delete-nodes", "retrieve-items", "retrieve-subscriptions", "retrieve-affiliations",
    "retrieve-default", "publish", "publish-options", "purge-nodes",
    "delete-items", "retract-items", "config-node", "config-node-max", "meta-data",
    "modify-affiliations", "manage-subscriptions", "subscribe", "persistent-items",
)


def features(service: PubSub, access_models: Sequence[str] = SUPPORTED_ACCESS_MODELS) -> list[str]:
    """The ``http://jabber.org/protocol/pubsub#…`` features of ``service``
    (XEP-0060 §10), as Prosody derives them from its service: the operations,
    the affiliations, ``access-<model>`` per offered model, ``last-published``
    when new nodes send it, ``auto-create`` when publishing creates nodes."""
    found = [ns.PUBSUB] + [f"{ns.PUBSUB}#{name}" for name in _FEATURES]
    found += [f"{ns.PUBSUB}#{aff}-affiliation" for aff in _AFFILIATION_FEATURES]
    found += [f"{ns.PUBSUB}#access-{model}" for model in access_models]
    if service.defaults.get("send_last_published_item", "never") != "never":
        found.append(f"{ns.PUBSUB}#last-published")
    if service.autocreate:
        found.append(f"{ns.PUBSUB}#auto-create")
    return found


#: Error types XEP-0060's examples give where they differ from the core's
#: (RFC 6120) defaults: §6.1.3.8 too many subscriptions is "wait".
_XEP_ERROR_TYPES = {("policy-violation", "too-many-subscriptions"): "wait"}


def error_reply(stanza: domish.Element, error: PubSubError) -> domish.Element:
    """The iq error of a refusal: the RFC 6120 condition (and text), then the
    ``pubsub#errors`` condition, in the order Prosody writes them."""
    type_ = _XEP_ERROR_TYPES.get((error.condition, error.pubsub_condition), error.type)
    reply = stanza_error(stanza, error.condition, type_, error.text)
    if error.pubsub_condition:
        error_element = next(c for c in _children(reply) if c.name == "error")
        extra = error_element.addElement((ns.PUBSUB_ERRORS, error.pubsub_condition))
        if error.feature:
            extra["feature"] = error.feature
    return reply


def _error(condition: str, pubsub_condition: str | None = None, **kw: Any) -> PubSubError:
    return PubSubError(condition, pubsub_condition, **kw)


def _jid(text: str | None, *, bare: bool = False) -> str:
    """A JID from a request attribute, prepared; ``invalid-jid`` otherwise."""
    if not text:
        raise _error("bad-request", "invalid-jid")
    try:
        parsed = jidlib.parse(text)
    except jidlib.InvalidJID:
        raise _error("bad-request", "invalid-jid") from None
    return parsed.userhost() if bare else parsed.full()


def _children(element: domish.Element) -> list[domish.Element]:
    return [c for c in element.children if isinstance(c, domish.Element)]


class _Outcome:
    """What one request produced: the reply, and whether it leaves before
    the notifications the request caused."""

    __slots__ = ("reply", "reply_first")

    def __init__(self, reply: domish.Element, reply_first: bool = False):
        self.reply = reply
        self.reply_first = reply_first


class PubSubProtocol:
    """XEP-0060 requests and notifications over :class:`PubSub` cores (see
    the module docstring for the API).

    ``access_models``: the access models nodes may be configured with
    (Prosody's pubsub service: ``open`` and ``whitelist``; PEP: all four).
    ``expose_publisher``: True puts the publisher's bare JID on every item
    (PEP, as Prosody 13); False never; None (default) per the node's
    ``itemreply``. ``new_id``: ids of notification messages.
    """

    log = Logger()

    def __init__(self, router: Any, *, access_models: Sequence[str] = SUPPORTED_ACCESS_MODELS,
                 expose_publisher: bool | None = None,
                 new_id: Callable[[], str] | None = None):
        self.router = router
        self.access_models = tuple(access_models)
        self.expose_publisher = expose_publisher
        self.new_id = new_id or (lambda: uuid.uuid4().hex[:16])
        #: notifications of the request being handled, sent after its reply
        self._collecting: list[tuple[domish.Element, list[str]]] | None = None
        self._handlers: dict[tuple[str, str, str], Callable] = {
            ("set", ns.PUBSUB, "create"): self._create,
            ("set", ns.PUBSUB, "publish"): self._publish,
            ("set", ns.PUBSUB, "retract"): self._retract,
            ("set", ns.PUBSUB, "subscribe"): self._subscribe,
            ("set", ns.PUBSUB, "unsubscribe"): self._unsubscribe,
            ("get", ns.PUBSUB, "items"): self._items,
            ("get", ns.PUBSUB, "subscriptions"): self._subscriptions,
            ("get", ns.PUBSUB, "affiliations"): self._affiliations,
            ("get", ns.PUBSUB, "options"): self._options,
            ("set", ns.PUBSUB, "options"): self._options,
            ("get", ns.PUBSUB, "default"): self._options,
            ("get", ns.PUBSUB_OWNER, "configure"): self._get_configure,
            ("set", ns.PUBSUB_OWNER, "configure"): self._set_configure,
            ("get", ns.PUBSUB_OWNER, "default"): self._default,
            ("set", ns.PUBSUB_OWNER, "delete"): self._delete,
            ("set", ns.PUBSUB_OWNER, "purge"): self._purge,
            ("get", ns.PUBSUB_OWNER, "subscriptions"): self._owner_subscriptions,
            ("set", ns.PUBSUB_OWNER, "subscriptions"): self._set_subscriptions,
            ("get", ns.PUBSUB_OWNER, "affiliations"): self._owner_affiliations,
            ("set", ns.PUBSUB_OWNER, "affiliations"): self._set_affiliations,
        }

    # -- requests ------------------------------------------------------------------

    def handle(self, event: StanzaEvent, service: PubSub | defer.Deferred) -> Any:
        """Answer one ``<pubsub/>`` or ``<pubsub#owner/>`` iq get/set on
        ``service`` (or on the service a Deferred fires with). Returns what a
        handler returns: an error element, or a Deferred firing True once
        the reply (and the request's notifications) are sent."""
        if isinstance(service, defer.Deferred):
            return service.addCallback(lambda core: self._handle(event, core))
        return self._handle(event, service)

    def _action(self, event: StanzaEvent) -> domish.Element | None:
        children = _children(event.payload)
        if event.payload.uri == ns.PUBSUB:
            # create + configure, publish + publish-options, subscribe + options
            for name in ("create", "publish", "subscribe"):
                for child in children:
                    if child.name == name and child.uri == ns.PUBSUB:
                        return child
        return children[0] if children else None

    def _handle(self, event: StanzaEvent, service: PubSub) -> Any:
        action = self._action(event)
        if action is None:
            return event.error("bad-request", "cancel")  # Prosody: an empty <pubsub/>
        handler = self._handlers.get((event.type, action.uri, action.name))
        if handler is None:
            # Prosody leaves what it does not know unhandled.
            return event.error("service-unavailable")
        if event.from_ is None:
            return event.error("bad-request")
        actor = event.from_.full()
        self._collecting = collected = []
        try:
            outcome = handler(event, service, actor, action)
        except PubSubError as e:
            service.take_writes()  # nothing changed that the reply must wait for
            return error_reply(event.stanza, e)
        finally:
            self._collecting = None
        writes = service.take_writes()
        if not writes:
            return self._finish(None, event, outcome, collected)
        d = defer.gatherResults(writes, consumeErrors=True)
        return d.addCallback(self._finish, event, outcome, collected)

    def _finish(self, _: Any, event: StanzaEvent, outcome: _Outcome,
                collected: list[tuple[domish.Element, list[str]]]) -> bool:
        if outcome.reply_first:
            self.router.reply(event, outcome.reply)
        for stanza, recipients in collected:
            self.send_event(stanza, recipients)
        if not outcome.reply_first:
            self.router.reply(event, outcome.reply)
        return True

    @staticmethod
    def _node_attr(element: domish.Element) -> str:
        name = element.getAttribute("node")
        if not name:
            raise _error("bad-request", "nodeid-required")
        return name

    @staticmethod
    def _pubsub(uri: str = ns.PUBSUB) -> domish.Element:
        return domish.Element((uri, "pubsub"))

    def _config_form_of(self, configure: domish.Element, service: PubSub) -> dict:
        x = next(configure.elements(ns.DATA_FORMS, "x"), None)
        return forms.parse_config(x, max_items=service.limits.max_items,
                                  access_models=self.access_models)

    # §8.1 create
    def _create(self, event, service: PubSub, actor: str, create: domish.Element) -> _Outcome:
        name = create.getAttribute("node")
        configure = next(event.payload.elements(ns.PUBSUB, "configure"), None)
        config = None
        if configure is not None and _children(configure):
            # An empty <configure/> (XEP-0060 before 1.13) asks for the defaults.
            config = self._config_form_of(configure, service)
        node = service.create(actor, name or None, config)
        if name:
            return _Outcome(event.reply())
        reply = self._pubsub()
        reply.addElement("create")["node"] = node.name
        return _Outcome(event.reply(reply))

    # §7.1 publish
    def _publish(self, event, service: PubSub, actor: str, publish: domish.Element) -> _Outcome:
        name = self._node_attr(publish)
        items = list(publish.elements(ns.PUBSUB, "item"))
        if not items:
            raise _error("bad-request", "item-required")
        if len(items) > 1:
            raise _error("bad-request", "invalid-payload",
                         text="Publish one item per request")
        item = items[0]
        payloads = _children(item)
        if not payloads:
            raise _error("bad-request", "payload-required")
        if len(payloads) > 1:
            raise _error("bad-request", "invalid-payload",
                         text="An item holds exactly one payload element")
        payload = payloads[0]
        claimed = item.getAttribute("publisher")
        if claimed is not None and claimed not in (event.from_.userhost(), event.from_.full()):
            raise _error("forbidden", text="An item's publisher is who publishes it")
        node = service.nodes.get(name)
        wanted_type = node.config.get("type") if node is not None else None
        if wanted_type and payload.uri != wanted_type:
            raise _error("bad-request", "invalid-payload",
                         text=f"This node takes payloads of {wanted_type}")
        options = None
        publish_options = next(event.payload.elements(ns.PUBSUB, "publish-options"), None)
        if publish_options is not None:
            x = next(publish_options.elements(ns.DATA_FORMS, "x"), None)
            if x is not None or _children(publish_options):
                options = forms.parse_config(x, max_items=service.limits.max_items,
                                             access_models=self.access_models,
                                             publish_options=True)
        published = service.publish(actor, name, item.getAttribute("id") or None,
                                    payload.toXml(), options)
        reply = self._pubsub()
        done = reply.addElement("publish")
        done["node"] = name
        done.addElement("item")["id"] = published.id
        return _Outcome(event.reply(reply))

    # §7.2 retract
    def _retract(self, event, service: PubSub, actor: str, retract: domish.Element) -> _Outcome:
        name = self._node_attr(retract)
        ids = [i.getAttribute("id") for i in retract.elements(ns.PUBSUB, "item")]
        if not ids or not all(ids):
            raise _error("bad-request", "item-required")
        notify = retract.getAttribute("notify") in ("1", "true")
        service.retract(actor, name, ids, notify)
        return _Outcome(event.reply())

    # §6.1 subscribe
    def _subscribe(self, event, service: PubSub, actor: str, subscribe: domish.Element) -> _Outcome:
        if next(event.payload.elements(ns.PUBSUB, "options"), None) is not None:
            raise forms.SUBSCRIPTION_OPTIONS_UNSUPPORTED
        jid = _jid(subscribe.getAttribute("jid"))
        name = self._node_attr(subscribe)
        state = service.subscribe(actor, name, jid)
        reply = self._pubsub()
        sub = reply.addElement("subscription")
        sub["node"], sub["jid"], sub["subscription"] = name, jid, state
        return _Outcome(event.reply(reply), reply_first=True)

    # §6.2 unsubscribe
    def _unsubscribe(self, event, service: PubSub, actor: str, unsub: domish.Element) -> _Outcome:
        jid = _jid(unsub.getAttribute("jid"))
        name = self._node_attr(unsub)
        service.unsubscribe(actor, name, jid)
        reply = self._pubsub()
        sub = reply.addElement("subscription")
        sub["node"], sub["jid"], sub["subscription"] = name, jid, "none"
        return _Outcome(event.reply(reply))

    # §6.3, §6.4: subscription options are not supported
    def _options(self, event, service: PubSub, actor: str, options: domish.Element) -> _Outcome:
        raise forms.SUBSCRIPTION_OPTIONS_UNSUPPORTED

    # §6.5 items
    def _items(self, event, service: PubSub, actor: str, items: domish.Element) -> _Outcome:
        name = self._node_attr(items)
        ids = [i.getAttribute("id") for i in items.elements(ns.PUBSUB, "item")
               if i.getAttribute("id")]
        limit = items.getAttribute("max_items")
        max_items = None
        if limit is not None:
            try:
                max_items = int(limit)
            except ValueError:
                raise _error("bad-request", text="max_items: not a number") from None
            if max_items < 0:
                raise _error("bad-request", text="max_items: not a number")
        found = service.items(actor, name, ids or None, max_items)
        node = service.nodes[name]
        reply = self._pubsub()
        listing = reply.addElement("items")
        listing["node"] = name
        for item in found:
            listing.addChild(self.item_element(service, node, item, ns.PUBSUB))
        return _Outcome(event.reply(reply))

    # §5.6 an entity's subscriptions
    def _subscriptions(self, event, service: PubSub, actor: str, subs: domish.Element) -> _Outcome:
        name = subs.getAttribute("node") or None
        reply = self._pubsub()
        listing = reply.addElement("subscriptions")
        if name:
            listing["node"] = name
        for node_name, jid, state in service.subscriptions(actor, name):
            sub = listing.addElement("subscription")
            sub["node"], sub["jid"], sub["subscription"] = node_name, jid, state
        return _Outcome(event.reply(reply))

    # §5.7 an entity's affiliations
    def _affiliations(self, event, service: PubSub, actor: str, affs: domish.Element) -> _Outcome:
        name = affs.getAttribute("node") or None
        reply = self._pubsub()
        listing = reply.addElement("affiliations")
        if name:
            listing["node"] = name
        for node_name, affiliation in service.affiliations(actor, name):
            aff = listing.addElement("affiliation")
            aff["node"], aff["affiliation"] = node_name, affiliation
        return _Outcome(event.reply(reply))

    # §8.2 configure
    def _get_configure(self, event, service: PubSub, actor: str, configure) -> _Outcome:
        name = self._node_attr(configure)
        config = service.get_config(actor, name)
        reply = self._pubsub(ns.PUBSUB_OWNER)
        element = reply.addElement("configure")
        element["node"] = name
        element.addChild(forms.config_form(config, max_items=service.limits.max_items,
                                           access_models=self.access_models))
        return _Outcome(event.reply(reply))

    def _set_configure(self, event, service: PubSub, actor: str, configure) -> _Outcome:
        name = self._node_attr(configure)
        changes = self._config_form_of(configure, service)
        service.configure(actor, name, changes)
        return _Outcome(event.reply())

    # §8.3 default configuration
    def _default(self, event, service: PubSub, actor: str, default) -> _Outcome:
        reply = self._pubsub(ns.PUBSUB_OWNER)
        element = reply.addElement("default")
        element.addChild(forms.config_form(service.defaults, max_items=service.limits.max_items,
                                           access_models=self.access_models))
        return _Outcome(event.reply(reply))

    # §8.4 delete
    def _delete(self, event, service: PubSub, actor: str, delete) -> _Outcome:
        name = self._node_attr(delete)
        redirect = next(delete.elements(ns.PUBSUB_OWNER, "redirect"), None)
        uri = redirect.getAttribute("uri") if redirect is not None else None
        service.delete(actor, name, uri or None)
        return _Outcome(event.reply())

    # §8.5 purge
    def _purge(self, event, service: PubSub, actor: str, purge) -> _Outcome:
        service.purge(actor, self._node_attr(purge))
        return _Outcome(event.reply())

    # §8.8 subscriptions of a node
    def _owner_subscriptions(self, event, service: PubSub, actor: str, subs) -> _Outcome:
        name = self._node_attr(subs)
        reply = self._pubsub(ns.PUBSUB_OWNER)
        listing = reply.addElement("subscriptions")
        listing["node"] = name
        for _, jid, state in service.subscriptions(actor, name, owner=True):
            sub = listing.addElement("subscription")
            sub["jid"], sub["subscription"] = jid, state
        return _Outcome(event.reply(reply))

    def _set_subscriptions(self, event, service: PubSub, actor: str, subs) -> _Outcome:
        name = self._node_attr(subs)
        changes: dict[str, str] = {}
        for sub in subs.elements(ns.PUBSUB_OWNER, "subscription"):
            state = sub.getAttribute("subscription")
            if state is None:
                continue  # §8.8.2: without 'subscription', nothing changes
            changes[_jid(sub.getAttribute("jid"))] = state
        service.set_subscriptions(actor, name, changes)
        return _Outcome(event.reply())

    # §8.9 affiliations of a node
    def _owner_affiliations(self, event, service: PubSub, actor: str, affs) -> _Outcome:
        name = self._node_attr(affs)
        reply = self._pubsub(ns.PUBSUB_OWNER)
        listing = reply.addElement("affiliations")
        listing["node"] = name
        for jid, affiliation in service.affiliations(actor, name, owner=True):
            aff = listing.addElement("affiliation")
            aff["jid"], aff["affiliation"] = jid, affiliation
        return _Outcome(event.reply(reply))

    def _set_affiliations(self, event, service: PubSub, actor: str, affs) -> _Outcome:
        name = self._node_attr(affs)
        changes: dict[str, str] = {}
        for aff in affs.elements(ns.PUBSUB_OWNER, "affiliation"):
            affiliation = aff.getAttribute("affiliation")
            if affiliation not in AFFILIATIONS:
                raise _error("bad-request", text=f"Unknown affiliation {affiliation!r}")
            changes[_jid(aff.getAttribute("jid"), bare=True)] = affiliation
        service.set_affiliations(actor, name, changes)
        return _Outcome(event.reply())

    # -- service discovery -----------------------------------------------------------

    def disco_info_node(self, event: StanzaEvent, service: PubSub, name: str) -> domish.Element:
        """XEP-0060 §5.3/§5.4: a node's identity (pubsub/leaf) and its
        meta-data form; ``item-not-found`` for a node that does not exist or
        that the requester may not see (nothing is told about it)."""
        node = service.nodes.get(name)
        requester = event.from_.full() if event.from_ is not None else ""
        if node is None or not service.may_see(requester, node):
            return event.error("item-not-found")
        return event.reply(disco_info([("pubsub", "leaf", "")],
                                      (ns.DISCO_INFO, ns.DISCO_ITEMS, ns.PUBSUB), name,
                                      [forms.metadata_form(node.config)]))

    def disco_items(self, event: StanzaEvent, service: PubSub,
                    jid: str | None = None) -> domish.Element:
        """XEP-0060 §5.2: the nodes the requester may see, each with its
        title as ``name`` (``jid`` of the items: the service's JID)."""
        requester = event.from_.full() if event.from_ is not None else ""
        query = domish.Element((ns.DISCO_ITEMS, "query"))
        for name in sorted(service.nodes):
            node = service.nodes[name]
            if not service.may_see(requester, node):
                continue
            item = query.addElement("item")
            item["jid"], item["node"] = jid or service.jid, name
            if node.config.get("title"):
                item["name"] = node.config["title"]
        return event.reply(query)

    def disco_items_node(self, event: StanzaEvent, service: PubSub, name: str,
                         jid: str | None = None) -> domish.Element:
        """XEP-0060 §5.5: a node's items as disco items (``name`` = item
        id), newest first as Prosody lists them. A node the requester may not
        see is ``item-not-found``, as for its disco#info: discovery does not
        tell whether it exists."""
        requester = event.from_.full() if event.from_ is not None else ""
        node = service.nodes.get(name)
        if node is None or not service.may_see(requester, node):
            return event.error("item-not-found")
        try:
            found = service.items(requester, name)
        except PubSubError as e:
            return error_reply(event.stanza, e)
        query = domish.Element((ns.DISCO_ITEMS, "query"))
        query["node"] = name
        for item in reversed(found):
            element = query.addElement("item")
            element["jid"], element["name"] = jid or service.jid, item.id
        return event.reply(query)

    # -- notifications ---------------------------------------------------------------

    def recipients(self, service: PubSub, node: Node, kind: str, recipients: list[str],
                   data: dict) -> list[str]:
        """Who gets a notification: the core's subscribers. PEP overrides this
        to add the resources whose caps ask for the node (``+notify``).

        Called from :meth:`notify`, that is only when the core notifies: the
        core skips a notification that has no subscriber at all."""
        return recipients

    def notify(self, service: PubSub, node: Node, kind: str, recipients: list[str],
               **data: Any) -> None:
        """The core's :class:`~xmppd.services.pubsub.core.Broadcaster`: build
        the event once; send it now, or after the reply of the request being
        handled."""
        recipients = self.recipients(service, node, kind, list(recipients), data)
        if not recipients:
            return
        stanza = self.event_stanza(service, node, kind, **data)
        if self._collecting is not None:
            self._collecting.append((stanza, recipients))
        else:
            self.send_event(stanza, recipients)

    def send_event(self, stanza: domish.Element, recipients: Iterable[str]) -> None:
        """Route ``stanza`` to each recipient: one :class:`Fanout`, so the
        copies share one element and are serialised once per stream shape
        by whoever delivers them (blocklists and s2s still apply)."""
        fan = Fanout(stanza)
        for jid in recipients:
            self.router.route(fan.copy(jid))

    def publisher_of(self, service: PubSub, node: Node, item: Item) -> str | None:
        """The ``publisher`` attribute an item shows, if any."""
        if self.expose_publisher is False:
            return None
        if self.expose_publisher:
            return item.publisher or None
        return service.item_publisher(node, item)

    def payload_of(self, item: Item) -> domish.Element | None:
        """The item's payload element, parsed again from its stored text
        (None when it has none or the stored text is damaged)."""
        if not item.payload:
            return None
        text = item.payload
        try:
            return parse_element(text, max_size=max(len(text.encode("utf-8")) + 1024, 1 << 20))
        except ValueError:
            self.log.warn("pubsub item {id} has a payload that does not parse", id=item.id)
            return None

    def item_element(self, service: PubSub, node: Node, item: Item, uri: str,
                     payload: bool = True) -> domish.Element:
        """``<item id=… [publisher=…]>payload</item>`` in namespace ``uri``."""
        element = domish.Element((uri, "item"))
        element["id"] = item.id
        publisher = self.publisher_of(service, node, item)
        if publisher:
            element["publisher"] = publisher
        if payload:
            parsed = self.payload_of(item)
            if parsed is not None:
                element.addChild(parsed)
        return element

    def event_stanza(self, service: PubSub, node: Node, kind: str, **data: Any) -> domish.Element:
        """The notification message of ``kind`` (see the core's Broadcaster),
        without 'to': ``items`` (``items=[Item]``), ``retract`` (``ids``),
        ``purge``, ``delete`` (``redirect``), ``configuration``,
        ``subscription`` (``jid``, ``state``)."""
        message = domish.Element((ns.CLIENT, "message"))
        message["from"] = service.jid
        message["type"] = node.config.get("notification_type") or "headline"
        message["id"] = self.new_id()
        event = message.addElement((ns.PUBSUB_EVENT, "event"))
        if kind == "items":
            items = event.addElement("items")
            items["node"] = node.name
            with_payload = node.config.get("deliver_payloads", True)
            for item in data.get("items") or ():
                items.addChild(self.item_element(service, node, item, ns.PUBSUB_EVENT,
                                                 with_payload))
        elif kind == "retract":
            items = event.addElement("items")
            items["node"] = node.name
            for item_id in data.get("ids") or ():
                items.addElement("retract")["id"] = item_id
        elif kind in ("purge", "delete", "configuration"):
            element = event.addElement(kind)
            element["node"] = node.name
            if kind == "delete" and data.get("redirect"):
                element.addElement("redirect")["uri"] = data["redirect"]
            if kind == "configuration" and node.config.get("deliver_payloads", True):
                element.addChild(forms.config_form(node.config, form_type="result",
                                                   max_items=service.limits.max_items,
                                                   access_models=self.access_models))
        elif kind == "subscription":
            element = event.addElement("subscription")
            element["node"], element["jid"] = node.name, data.get("jid", "")
            element["subscription"] = data.get("state", "none")
        else:
            raise ValueError(f"unknown notification kind {kind!r}")
        return message
