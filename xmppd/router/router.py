"""The router: where does a stanza go, and who handles it there.

The router knows nothing about any extension. For each stanza it classifies
the destination — ``self`` (the sender's own account), ``bare``, ``full``,
``host`` (one of our domains), or remote — and fires an event named after the
stanza kind and that class, as Prosody does::

    message/bare   presence/full   iq-get/host/urn:xmpp:ping:ping   iq/full

Handlers are kept per event name in priority order, so dispatch is one dict
lookup. A handler returns a falsy value to pass, ``True`` when it dealt with
the stanza, an element to send as the reply, or a Deferred firing with one.
What nobody handles gets the RFC's treatment here: an iq get/set is answered
``service-unavailable``, a message is bounced or delivered to the full JID's
session, everything else is dropped.

Two more events frame the destination event, for features that act on every
stanza whatever its payload:

``pre-message``, ``pre-presence``, ``pre-iq``
    fired first for a stanza a local client sent, wherever it goes (local or
    remote): outbound subscription handling, carbons of sent messages, the
    sender's blocklist. A handler that returns True stops the stanza.
``inbound/bare``, ``inbound/full``
    fired for a stanza addressed to a local user, before the destination
    event: the recipient's blocklist. True stops the stanza.

And one after it: ``message/undelivered``, ``iq/undelivered`` for a stanza a
session took but closed before writing (see :meth:`Router.undelivered`).

Where: every domain served here has a handler table (:mod:`.domains`): the
user domains share one, each hosted service has its own, so a service sees
only stanzas to its domain. Other domains go by the route table
(:attr:`Router.routes`). Answers to iqs the server sent go to their
Deferreds (:attr:`Router.iq`) before anything else.
"""

from __future__ import annotations

import bisect
import itertools
from typing import Any, Callable, Iterable

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.words.xish import domish

from xmppd import jid as jidlib
from xmppd.router.domains import Domain, Route, RouteTable, is_stanza_event
from xmppd.router.events import StanzaEvent, stanza_error
from xmppd.router.iq import IQTracker
from xmppd.router.sessions import Session
from xmppd.xml.stream import as_element

Handler = Callable[[StanzaEvent], Any]

#: Stanza types whose failure must never produce another error (RFC 6120 §8.3.1).
_NO_BOUNCE = frozenset(("error", "result"))
#: Event names built once, not per stanza.
_PRE = {"message": "pre-message", "presence": "pre-presence", "iq": "pre-iq"}
_INBOUND = {"bare": "inbound/bare", "full": "inbound/full"}


class Router:
    """Routes stanzas between sessions and the handlers components register."""

    log = Logger()

    def __init__(self, hosts: Iterable[str], clock: Any = None):
        #: the user domains (accounts and sessions)
        self.hosts: set[str] = set(hosts)
        #: bare JID string → resource → session
        self.sessions: dict[str, dict[str, Session]] = {}
        #: the handler table of the user domains and of server-wide events
        self._handlers: dict[str, list[tuple[int, int, Handler, bool]]] = {}
        #: every domain served here, user domains and hosted services
        self.domains: dict[str, Domain] = {h: Domain(h, self._handlers) for h in self.hosts}
        self._order = itertools.count()
        #: where stanzas for every other domain go (external components, s2s)
        self.routes = RouteTable()
        if clock is None:
            from twisted.internet import reactor as clock
        #: iqs the server sent, waiting for their answers
        self.iq = IQTracker(self, clock)
        #: Deferreds handlers returned that have not fired yet (see :meth:`drain`).
        self.pending: set[defer.Deferred] = set()
        #: The session whose stanza is being handled right now, if any: a
        #: session whose output backs up stops reading from it (backpressure).
        self.current: Session | None = None

    @property
    def remote(self) -> Route | None:
        """The default route (s2s): ``remote(stanza, to_jid) -> bool``."""
        return self.routes.default

    @remote.setter
    def remote(self, route: Route | None) -> None:
        self.routes.default = route

    # -- domains -------------------------------------------------------------------

    def add_service(self, domain: str, service: Any) -> Domain:
        """Serve ``domain`` with ``service``: a handler table of its own."""
        if domain in self.domains:
            raise ValueError(f"{domain} is served already ({self.domains[domain]!r})")
        served = self.domains[domain] = Domain(domain, {}, service)
        return served

    def remove_service(self, domain: str) -> None:
        served = self.domains.get(domain)
        if served is not None and not served.users:
            del self.domains[domain]

    # -- handlers ----------------------------------------------------------------

    def hook(self, name: str, handler: Handler, priority: int = 0,
             ordered: bool = True, domain: str | None = None) -> Callable[[], None]:
        """Call ``handler`` for event ``name``; higher priority runs first.

        When the handler returns a Deferred that has not fired, the session the
        stanza came from handles its next stanza only after it fires (RFC 6120
        §10.1 in-order processing). ``ordered=False`` is for a handler that keeps
        order itself (its writes are queued in arrival order before it returns)
        or that waits on the client itself (an iq the server sent it): holding
        the session would cost throughput, or never end.

        ``domain``: a hosted service's domain, for a stanza event of that
        service (a server-wide event, say ``account-deleted``, is hooked in
        the shared table whatever the domain).

        Returns a function that removes the hook again.
        """
        entry = (-priority, next(self._order), handler, ordered)
        table = self._handlers
        if domain is not None and is_stanza_event(name):
            if name.startswith("inbound/") or name.split("/")[1] == "self":
                # never fired for a service: a hook on them would silently do nothing
                raise ValueError(f"{name} is an event of user domains, not of {domain}")
            table = self.domains[domain].handlers
        handlers = table.setdefault(name, [])
        bisect.insort(handlers, entry)

        def unhook() -> None:
            if entry in handlers:
                handlers.remove(entry)
        return unhook

    def has_handlers(self, name: str) -> bool:
        return bool(self._handlers.get(name))

    def fire(self, name: str, event: Any, table: dict | None = None) -> bool:
        """Run the handlers of ``name`` in order until one handles the event
        (in ``table``, a domain's handler table; the shared one by default)."""
        handlers = (self._handlers if table is None else table).get(name)
        if not handlers:
            return False
        if isinstance(event, StanzaEvent):
            event.name = name
        for _, _, handler, ordered in handlers:
            try:
                result = handler(event)
            except Exception:
                self.log.failure("handler {handler!r} failed on {event}", handler=handler, event=name)
                self._internal_error(event)
                return True
            if not result:
                continue
            if result is not True:
                if isinstance(result, defer.Deferred):
                    self.pending.add(result)
                    result.addCallbacks(self._deferred_reply, self._deferred_failure,
                                        callbackArgs=(event,), errbackArgs=(event, handler))
                    result.addBoth(self._settled, result)
                    # Still pending once the callbacks above ran (``called`` is no
                    # test: a Deferred waiting on another one has been called).
                    hold = getattr(getattr(event, "origin", None), "hold", None)
                    if ordered and result in self.pending and hold is not None:
                        hold(result)  # after the reply callbacks: the answer leaves first
                else:
                    self.reply(event, result)
            return True
        return False

    def notify(self, name: str, subject: Any) -> defer.Deferred:
        """Run *every* handler of ``name`` (a life-cycle event such as
        ``account-deleted``, which each component with state must see, unlike
        a stanza, which the first taker consumes). Fires once the Deferreds
        the handlers returned have fired; a handler's failure is logged and
        does not keep the others from running."""
        waits = []
        for _, _, handler, _ in list(self._handlers.get(name, ())):
            try:
                result = handler(subject)
            except Exception:
                self.log.failure("handler {handler!r} failed on {event}",
                                 handler=handler, event=name)
                continue
            if isinstance(result, defer.Deferred):
                result.addErrback(lambda f, h=handler: self.log.failure(
                    "handler {handler!r} failed on {event}", f, handler=h, event=name))
                waits.append(result)
        if not waits:
            return defer.succeed(None)
        return defer.DeferredList(waits).addCallback(lambda _: None)

    def _settled(self, _: Any, d: defer.Deferred) -> None:
        self.pending.discard(d)

    @defer.inlineCallbacks
    def drain(self):
        """Fire once every handler's unfinished work (a store write, a chain of
        them) has finished, including work that work started: a graceful
        shutdown waits for this before it closes the storage."""
        while self.pending:
            yield defer.DeferredList(list(self.pending), consumeErrors=True)

    def _deferred_reply(self, result: Any, event: StanzaEvent) -> None:
        if result is not None and result is not True and result is not False:
            self.reply(event, result)

    def _deferred_failure(self, failure: Failure, event: Any, handler: Handler) -> None:
        self.log.failure("handler {handler!r} failed on {event}", failure=failure,
                         handler=handler, event=getattr(event, "name", "?"))
        self._internal_error(event)

    def _internal_error(self, event: Any) -> None:
        if isinstance(event, StanzaEvent) and event.kind == "iq" and event.type in ("get", "set"):
            self.reply(event, event.error("internal-server-error"))

    def reply(self, event: StanzaEvent, stanza: domish.Element) -> None:
        """Send a handler's reply: straight back to the origin session when it is
        addressed there (or the origin has no address yet), else by routing."""
        origin = event.origin
        if origin is not None:
            jid = getattr(origin, "jid", None)
            to = stanza.getAttribute("to")
            if jid is None or to is None or to == jid.full():
                origin.send(stanza)
                return
        self.route(stanza)

    # -- sessions ----------------------------------------------------------------

    def bind(self, session: Session) -> Session | None:
        """Register a bound session; returns the session it replaces, if any."""
        resources = self.sessions.setdefault(session.bare, {})
        old = resources.get(session.resource)
        resources[session.resource] = session
        return old

    def unbind(self, session: Session) -> bool:
        """Forget a session; True if it was the registered one for its JID."""
        resources = self.sessions.get(session.bare)
        if not resources or resources.get(session.resource) is not session:
            return False
        del resources[session.resource]
        if not resources:
            del self.sessions[session.bare]
        return True

    def resources(self, bare: str) -> dict[str, Session]:
        return self.sessions.get(bare, {})

    # -- routing -----------------------------------------------------------------

    def route(self, stanza: domish.Element, origin: Session | None = None) -> None:
        """Find where ``stanza`` goes and fire its events (the one hot path).

        ``origin`` is the local session the stanza came from; stanzas the server
        itself makes (replies, broadcasts, re-routed subscriptions) have none and
        skip the ``pre-`` events.
        """
        kind = stanza.name
        to_text = stanza.getAttribute("to")
        from_ = jidlib.parse_or_none(stanza.getAttribute("from"))
        stype = stanza.getAttribute("type")
        if kind == "iq" and stype in _NO_BOUNCE and self.iq.match(stanza, from_):
            return  # the answer to an iq the server sent
        served = None
        if to_text is None:
            if origin is not None and getattr(origin, "bare", None):
                # RFC 6120 §10.3: no 'to' means the sender's own account.
                to, dest = jidlib.parse(origin.bare), "self"
            else:
                to, dest = None, "host"
        else:
            try:
                to = jidlib.parse(to_text)
            except jidlib.InvalidJID:
                self.bounce(stanza, "jid-malformed", origin)
                return
            served = self.domains.get(to.host)
            if served is None:
                dest = "remote"
            elif to.user is None:
                dest = "host"
            elif to.resource is not None:
                dest = "full"
            elif origin is not None and from_ is not None and to.user == from_.user \
                    and to.host == from_.host:
                dest = "self"
            else:
                dest = "bare"

        payload = None
        if kind == "iq" and stype in ("get", "set"):
            payload = _single_child(stanza)
            if payload is None:
                self.bounce(stanza, "bad-request", origin)
                return
        event = StanzaEvent(stanza, origin, self, to, from_, payload)
        if origin is not None and getattr(origin, "bare", None) \
                and self.fire(_PRE[kind], event):
            return
        if dest == "remote":
            route = self.routes.lookup(to.host)
            if route is None or not route(stanza, to):
                self.bounce(stanza, "remote-server-not-found", origin)
            return
        table = served.handlers if served is not None else self._handlers
        if served is not None and not served.users:
            # A hosted service: its own handlers, and nobody's sessions.
            if not self._dispatch(kind, stype, dest, payload, event, table):
                self._unhandled(event, "host" if dest == "full" else dest)
            return
        if dest in _INBOUND and self.fire(_INBOUND[dest], event):
            return
        if self._dispatch(kind, stype, dest, payload, event, table):
            return
        if dest == "self" and self._dispatch(kind, stype, "bare", payload, event, table):
            return
        self._unhandled(event, dest)

    def route_preauth(self, stanza: domish.Element, origin: Any) -> bool:
        """Offer an iq from a stream that has not authenticated yet (XEP-0077
        registration) to ``iq-<type>/preauth/<ns>:<name>``; False if nobody serves it."""
        stype = stanza.getAttribute("type")
        payload = _single_child(stanza) if stype in ("get", "set") else None
        if payload is None:
            return False
        name = f"iq-{stype}/preauth/{payload.uri}:{payload.name}"
        if not self.has_handlers(name):
            return False
        return self.fire(name, StanzaEvent(stanza, origin, self, None, None, payload))

    def _dispatch(self, kind: str, stype: str | None, dest: str,
                  payload: domish.Element | None, event: StanzaEvent, table: dict) -> bool:
        if payload is not None:
            if self.fire(f"iq-{stype}/{dest}/{payload.uri}:{payload.name}", event, table):
                return True
        return self.fire(f"{kind}/{dest}", event, table)

    def _unhandled(self, event: StanzaEvent, dest: str) -> None:
        stanza = event.stanza
        if dest == "full":
            session = self.resources(event.to.userhost()).get(event.to.resource)
            if session is not None:
                session.send(stanza)
                return
            # RFC 6121 §8.5.3.2.1: the resource is gone. normal and chat are
            # handled as if sent to the bare JID; a headline is dropped.
            if stanza.name == "message" and event.type in (None, "normal", "chat"):
                if self.fire("message/bare", event):
                    return
            elif stanza.name == "message" and event.type == "headline":
                return
        if stanza.name == "iq":
            if event.type in ("get", "set"):
                self.bounce(stanza, "service-unavailable", event.origin)
        elif stanza.name == "message" and event.type not in ("error", "groupchat", "headline"):
            # RFC 6121 §8.5.2: nobody here takes the message: tell the sender.
            self.bounce(stanza, "service-unavailable", event.origin)
        # Presence nobody handles is dropped (RFC 6121 §4.3, §8.5).

    def bounce(self, stanza: domish.Element, condition: str, origin: Session | None = None,
               text: str | None = None) -> None:
        """Answer ``stanza`` with an error, unless it is itself an error or result."""
        if stanza.getAttribute("type") in _NO_BOUNCE:
            return
        error = stanza_error(stanza, condition, text=text)
        if origin is not None and getattr(origin, "jid", None) is not None \
                and error.getAttribute("to") == origin.jid.full():
            origin.send(error)
        elif error.getAttribute("to"):
            self.route(error)

    def undelivered(self, kind: str, stanza: domish.Element | bytes, session: Session) -> None:
        """``stanza`` was for ``session``, which closed before writing it.

        Fires ``<kind>/undelivered`` (the messaging component re-routes a
        message so the user's other resources or offline storage get it); an
        iq request nobody takes is answered ``service-unavailable`` as if the
        resource had been gone already (RFC 6121 §8.5.3.2.2); everything else
        (presence, results, errors) is dropped, as for an unavailable resource.
        """
        if kind not in ("message", "iq"):
            return
        stanza = as_element(stanza)  # bytes: as the session had serialised it
        if stanza is None or stanza.getAttribute("type") in _NO_BOUNCE:
            return
        from_ = jidlib.parse_or_none(stanza.getAttribute("from"))
        to = jidlib.parse_or_none(stanza.getAttribute("to"))
        event = StanzaEvent(stanza, None, self, to, from_)
        if self.fire(f"{kind}/undelivered", event):
            return
        if kind == "iq" and event.type in ("get", "set"):
            self.bounce(stanza, "service-unavailable")

    def deliver(self, stanza: domish.Element, session: Session) -> None:
        """Send ``stanza`` to one local session."""
        session.send(stanza)


def _single_child(stanza: domish.Element) -> domish.Element | None:
    """The one payload element of an iq get/set (RFC 6120 §8.2.3), else None."""
    found = None
    for child in stanza.children:
        if isinstance(child, domish.Element):
            if found is not None:
                return None
            found = child
    return found
