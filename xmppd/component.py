"""The component API: how a feature plugs into xmppd.

A component declares everything it needs in one place — its name, the disco
features and identities it adds, its config options, the events it handles
and the stores it opens — and the server wires it up::

    class PingComponent(Component):
        \"\"\"XEP-0199: answer pings sent to the server.\"\"\"

        name = "ping"
        features = [ns.PING]

        @handles("iq-get/host/urn:xmpp:ping:ping")
        def pong(self, event):
            return event.reply()

Handlers receive a :class:`xmppd.router.StanzaEvent` and return a falsy value
(not mine, pass it on), ``True`` (handled), an element (handled; send this
reply) or a Deferred firing with one. Components are Twisted services: stores
are open and hooks registered between ``startService`` and ``stopService``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, ClassVar

from twisted.application import service
from twisted.logger import Logger
from twisted.words.xish import domish

from xmppd import ns
from xmppd.config import Option, single_domain
from xmppd.router.events import disco_info

if TYPE_CHECKING:
    from xmppd.server import XMPPServer

__all__ = ["Component", "Option", "Service", "handles", "stream_element"]


def handles(event: str, priority: int = 0, ordered: bool = True) -> Callable:
    """Mark a method as the handler of ``event`` (stackable for several events).

    ``ordered=False``: the sender's next stanza need not wait for the Deferred
    this handler returns (see :meth:`xmppd.router.Router.hook`).
    """
    def mark(method: Callable) -> Callable:
        method.__dict__.setdefault("_xmppd_events", []).append((event, priority, ordered))
        return method
    return mark


def stream_element(uri: str, name: str) -> Callable:
    """Mark a method as the handler of a stream-level element ``{uri}name``
    a client may send once authenticated, outside ``jabber:client`` (XEP-0352's
    ``<active/>``, say): called as ``method(session, element)``, bound or not
    (it checks ``session.jid``). An element nobody registered still closes
    the stream (``unsupported-stanza-type``). One handler per element."""
    def mark(method: Callable) -> Callable:
        method.__dict__.setdefault("_xmppd_stream_elements", []).append((uri, name))
        return method
    return mark


class Component(service.Service):
    """Base class of every component, built-in or third-party."""

    #: The name used in ``[server] components`` and ``[component:<name>]``.
    name: ClassVar[str] = ""
    #: XEP-0030 features this component adds to the server's disco#info.
    features: ClassVar[list[str]] = []
    #: XEP-0030 identities, as (category, type, name) tuples.
    identities: ClassVar[list[tuple[str, str, str]]] = []
    #: XEP-0030 features an *account* offers through this component (disco#info
    #: of a user's bare JID, answered by the server on the user's behalf).
    account_features: ClassVar[list[str]] = []
    #: Options read from ``[component:<name>]``, validated at start-up.
    options: ClassVar[list[Option]] = []
    #: Stores to open: store name → kind ("keyvalue", "map" or "archive").
    stores: ClassVar[dict[str, str]] = {}

    log = Logger()

    def __init__(self, server: XMPPServer, config: dict[str, Any]):
        self.server = server
        self.router = server.router
        self.config = config
        #: every timer and rate window of the component runs on this clock
        #: (the reactor; a ``task.Clock`` in tests): ``clock.seconds()`` for
        #: "now", ``clock.callLater`` for timers
        self.clock = server.clock
        self.store: dict[str, Any] = {}
        self._unhooks: list[Callable[[], None]] = []
        self.setName(self.name)

    @classmethod
    def declared_options(cls) -> list[Option]:
        """Every option of ``[component:<name>]`` (the base classes' too)."""
        return list(cls.options)

    def startService(self) -> None:
        super().startService()
        self._open_stores()
        self._hook_handlers()

    def _open_stores(self) -> None:
        for store_name, kind in self.stores.items():
            self.store[store_name] = getattr(self.server.storage, kind)(store_name)

    def _hook_handlers(self, domain: str | None = None) -> None:
        for attr in dir(type(self)):
            method = getattr(type(self), attr, None)
            for event, priority, ordered in getattr(method, "_xmppd_events", ()):
                self._unhooks.append(self.router.hook(event, getattr(self, attr), priority,
                                                      ordered, domain=domain))
            for key in getattr(method, "_xmppd_stream_elements", ()):
                self._unhooks.append(self.server.add_stream_element(key, getattr(self, attr)))

    def stopService(self) -> None:
        for unhook in self._unhooks:
            unhook()
        self._unhooks.clear()
        return super().stopService()

    def stream_features(self, session: Any) -> list[domish.Element]:
        """Stream features to offer ``session`` (e.g. XEP-0077's register).

        They may depend on the configuration and on whether the session is
        secure (``session.secure``) and authenticated (``session.user``), and
        on nothing else: the session serialises each variant once and reuses it.
        """
        return []


class Service(Component):
    """A component that serves a hosted domain of its own (a *service*:
    multi-user chat on ``conference.localhost``, publish-subscribe …).

    Its ``@handles`` stanza events fire only for stanzas addressed to its
    domain and the JIDs under it (``room@conference.localhost/nick`` is
    ``full``, the domain itself ``host``), with the same names as for users;
    life-cycle events (``account-deleted``) are server-wide as for any
    component. Its ``identities`` and ``features`` describe its domain, not
    the server: disco#info of the domain is answered from them (override
    :meth:`disco_info` / :meth:`disco_items` for nodes or items), and the
    server's disco#items lists the service with its ``title``.

    The domain is ``[component:<name>] domain``, by default
    ``<subdomain>.<first user domain>``.
    """

    is_service: ClassVar[bool] = True
    #: the first label of the default domain (the component's name if empty)
    subdomain: ClassVar[str] = ""
    #: the service's name in the server's disco#items
    title: ClassVar[str] = ""

    @classmethod
    def declared_options(cls) -> list[Option]:
        return [Option("domain", single_domain, "",
                       "the domain this service serves (default: "
                       f"{cls.subdomain or cls.name}.<first domain of [server] domains>)"),
                *cls.options]

    def __init__(self, server: XMPPServer, config: dict[str, Any]):
        super().__init__(server, config)
        #: the hosted domain (its default was filled in by the configuration)
        self.domain: str = config["domain"]

    def startService(self) -> None:
        service.Service.startService(self)
        self._open_stores()
        self.router.add_service(self.domain, self)
        self._unhooks.append(lambda: self.router.remove_service(self.domain))
        self._unhooks.append(self.router.hook(f"iq-get/host/{ns.DISCO_INFO}:query",
                                              self.disco_info, -100, domain=self.domain))
        self._unhooks.append(self.router.hook(f"iq-get/host/{ns.DISCO_ITEMS}:query",
                                              self.disco_items, -100, domain=self.domain))
        self._hook_handlers(self.domain)

    def disco_info(self, event: Any) -> Any:
        """XEP-0030 disco#info of the service's domain: its identities and
        features (a ``node`` this base class does not know: item-not-found)."""
        if event.payload.getAttribute("node"):
            return event.error("item-not-found")
        return event.reply(disco_info(self.identities,
                                      sorted({ns.DISCO_INFO, ns.DISCO_ITEMS, *self.features})))

    def disco_items(self, event: Any) -> Any:
        """XEP-0030 disco#items of the domain: none here (a chat service lists
        its rooms by overriding this)."""
        if event.payload.getAttribute("node"):
            return event.error("item-not-found")
        return event.reply(domish.Element((ns.DISCO_ITEMS, "query")))
