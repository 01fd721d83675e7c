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

from xmppd.config import Option

if TYPE_CHECKING:
    from twisted.words.xish import domish

    from xmppd.server import XMPPServer

__all__ = ["Component", "Option", "handles"]


def handles(event: str, priority: int = 0, ordered: bool = True) -> Callable:
    """Mark a method as the handler of ``event`` (stackable for several events).

    ``ordered=False``: the sender's next stanza need not wait for the Deferred
    this handler returns (see :meth:`xmppd.router.Router.hook`).
    """
    def mark(method: Callable) -> Callable:
        method.__dict__.setdefault("_xmppd_events", []).append((event, priority, ordered))
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

    def startService(self) -> None:
        super().startService()
        for store_name, kind in self.stores.items():
            self.store[store_name] = getattr(self.server.storage, kind)(store_name)
        for attr in dir(type(self)):
            method = getattr(type(self), attr, None)
            for event, priority, ordered in getattr(method, "_xmppd_events", ()):
                self._unhooks.append(self.router.hook(event, getattr(self, attr), priority,
                                                      ordered))

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
