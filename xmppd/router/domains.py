"""Domains: who serves which domain, and where stanzas for other domains go.

Three kinds of destination, as in Prosody (where each is a "host"):

*user domains* (``[server] domains``)
    accounts and their sessions; every component that is not a service serves
    all of them, from one shared handler table.
*hosted service domains* (``[component:muc] domain = conference.localhost``)
    one service each, with a handler table of its own: a service's handlers
    see only stanzas addressed to its domain and the JIDs under it, with the
    same event names as for users (``iq-get/host/<ns>:<name>``,
    ``presence/full`` …), so a service is written like any component.
*everything else*
    the :class:`RouteTable`: exact-domain routes first (an external component,
    later a cluster peer), then the default route (s2s, later).

Life-cycle events (``resource-bind``, ``account-deleted`` …) are server-wide:
:func:`is_stanza_event` tells them from stanza events, and a service's hooks
on them go to the shared table.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from twisted.words.xish import domish

#: ``route(stanza, to_jid) -> bool``: True when it took the stanza.
Route = Callable[[domish.Element, Any], bool]

#: The first segment of every event that is about a stanza to a destination.
_STANZA_EVENT_KINDS = frozenset(("message", "presence", "iq", "iq-get", "iq-set",
                                 "iq-result", "iq-error", "inbound"))


def is_stanza_event(name: str) -> bool:
    """True for events fired per destination domain (``message/bare``,
    ``iq-get/host/…``), False for server-wide ones (``resource-unbind``,
    ``pre-message``, ``presence/initial``, ``account-deleted``)."""
    kind, slash, dest = name.partition("/")
    if not slash or kind not in _STANZA_EVENT_KINDS:
        return False
    return dest.split("/", 1)[0] in ("host", "bare", "full", "self")


class Domain:
    """One domain this process serves: its name, kind and handler table."""

    __slots__ = ("name", "service", "handlers")

    def __init__(self, name: str, handlers: dict[str, list], service: Any = None):
        self.name = name
        #: the service component serving it; None for a user domain
        self.service = service
        #: event name → handlers in priority order (shared by all user domains)
        self.handlers = handlers

    @property
    def users(self) -> bool:
        """Does this domain have accounts (and so sessions, rosters …)?"""
        return self.service is None

    def __repr__(self) -> str:
        return f"<Domain {self.name} {'users' if self.users else self.service.name}>"


class RouteTable:
    """Where stanzas for domains outside this process go.

    An exact-domain route wins over the default route; with neither, the
    domain is unreachable (``remote-server-not-found``)."""

    def __init__(self) -> None:
        self._exact: dict[str, Route] = {}
        #: the route for every domain without its own (s2s)
        self.default: Route | None = None

    def add(self, domain: str, route: Route) -> Callable[[], None]:
        """Route stanzas for ``domain`` to ``route``; returns its removal."""
        self._exact[domain] = route

        def remove() -> None:
            if self._exact.get(domain) is route:
                del self._exact[domain]
        return remove

    def lookup(self, domain: str) -> Route | None:
        return self._exact.get(domain, self.default)

    def domains(self) -> Iterable[str]:
        """The domains with a route of their own."""
        return self._exact.keys()
