"""wokkel protocol handlers in the server's own process, without a socket.

An application that embeds xmppd (``xmppd.service.makeService``) often wants
a bot beside it: something that answers messages, keeps a roster, watches
presence. wokkel has the client-side protocol handlers for that —
``XMPPHandler`` subclasses such as ``xmppim.MessageProtocol``,
``PresenceClientProtocol``, ``RosterClientProtocol`` — and the
``StreamManager`` that runs them over an XML stream. This module hands them a
stream that is not a socket, so the bot costs no port, no TLS, no password
and no reconnection logic::

    bot = attach(server, "bot@localhost/echo", EchoBot())   # an account
    svc = attach_component(server, "bot.localhost", Echo())  # a domain

Each is a wokkel ``StreamManager`` (more handlers join with
``handler.setHandlerParent(bot)``) and a Twisted service, a child of the
server: it attaches when the server starts (at once if it runs already) and
detaches when the server stops, on :meth:`~EmbeddedClient.detach`, or when
the server ends its session.

A local account (:class:`EmbeddedClient`)
    is a client session like any other: the very
    :class:`~xmppd.streams.negotiation.ClientSession` TCP, WebSocket and BOSH
    clients get, carried by an in-memory *framing* instead of a wire (the
    framing contract is that module's docstring). So the bot's bind obeys
    ``[c2s] max_resources`` and replaces an older session of the same
    resource (which gets ``conflict``), every stanza it sends is checked and
    stamped with its full JID before the router sees it (it cannot speak as
    anyone else), ``resource-bind`` / ``resource-unbind`` fire, presence,
    rosters, carbons, offline storage and the rest treat it as one more
    client, and detaching unbinds it (contacts see it go unavailable).
    Authentication is the one step skipped: the code that attaches runs
    inside the server and names the account, so there is no password to
    prove. The account must exist (``xmppd adduser``, or
    ``server.accounts.create``): for one that does not, nothing binds,
    :meth:`~EmbeddedClient.when_ready` fails with :class:`EmbedError` and
    the handlers never see a stream (wokkel's ``initializationFailed`` is
    called instead).
A component domain (:class:`EmbeddedComponent`)
    is an exact-domain route in the router's route table
    (:attr:`xmppd.router.Router.routes`), as an XEP-0114 external component
    has, so every stanza to the domain or a JID under it reaches the
    handlers, and the server lists the domain in its disco#items. What the
    handlers send is addressed as Prosody's ``mod_component`` does it: no
    ``from`` is the domain, a ``from`` outside the domain is refused, a
    stanza without ``to`` is answered ``bad-request``.

What the handlers see is what they would read from a socket: each stanza is
a fresh element parsed from the server's serialisation, in ``jabber:client``
(components' stanzas too: inside xmppd every stanza is), delivered on the
next turn of the server's clock — never inside the router's own call, so a
handler that answers or detaches does so after the router has finished, and
two bots talking to each other take turns instead of recursing. wokkel's
stream events fire as over TCP: ``makeConnection``/``connectionMade`` and
``connectionInitialized`` once bound (after ``resource-bind``, so an
initial presence sent from ``connectionInitialized`` is routed like a
client's), ``connectionLost`` when the session ends, with a
``StreamError`` for the condition the server ended it with (``conflict``,
``not-authorized`` when the account is deleted, ``system-shutdown``).

What a real stream would answer with a *stream* error — a stanza from
another JID, something that is not a stanza, an oversized or unparsable
element — raises :class:`ValueError` at the handler's ``send`` instead: the
bug shows as a traceback where it is, and the bot stays attached. What a
real stream answers with a *stanza* error (an iq without an id, say) is
answered the same way here. An iq get/set no handler answered gets
``service-unavailable`` from wokkel's own ``generic.FallbackHandler``, added
by default (``fallback=False`` to leave it out), as RFC 6120 §8.2.3 wants
an answer.
"""

from __future__ import annotations

import collections
import itertools
from typing import TYPE_CHECKING, Any, Callable, Hashable

from twisted.application import service
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.words.protocols.jabber import error as jabber_error
from twisted.words.protocols.jabber import xmlstream as jabber_xmlstream
from twisted.words.xish import domish, utility
from twisted.words.xish.xmlstream import BootstrapMixin
from wokkel import generic
from wokkel.subprotocols import StreamManager, XMPPHandler

from xmppd import jid as jidlib
from xmppd import ns
from xmppd.router.events import stanza_error
from xmppd.streams.negotiation import ClientSession
from xmppd.xml.stream import StreamProblem, parse_element

if TYPE_CHECKING:
    from xmppd.server import XMPPServer

__all__ = ["attach", "attach_component", "EmbeddedClient", "EmbeddedComponent", "EmbedError"]

#: What the in-process framing writes in the login log line ("c2s in-process
#: bound bot@localhost/echo (no SASL, in-process)").
CHANNEL = "in-process"

#: The serialisation our client framing shares with the TCP framing (same
#: ``shape``, same text: a fanout serialises once for both).
_PREFIXES = {ns.STREAMS: "stream"}

#: Marker in a link's inbox: the stream is initialised (wokkel's
#: STREAM_CONNECTED and STREAM_AUTHD events fire here, in order with stanzas).
_INITIALIZED = object()

_bind_ids = itertools.count(1)


class EmbedError(Exception):
    """Attaching failed: no such account, the bind was refused, the session
    ended before it was ready."""


# -- the stream the handlers see ----------------------------------------------------


class HandlerStream(utility.EventDispatcher):
    """The ``xmlstream`` a wokkel ``StreamManager`` and its handlers hold.

    What a handler uses of Twisted's ``XmlStream``: observers (it is an
    ``EventDispatcher``: ``addObserver('/message', …)`` works as on a
    socket's stream), ``send``, and the two ends' JIDs. One per attachment,
    as an ``XmlStream`` is one per connection."""

    def __init__(self, link: _Link, this: jidlib.JID, other: jidlib.JID):
        super().__init__()
        self._link = link
        #: our JID and the server's (``XmlStream.thisEntity`` / ``otherEntity``)
        self.thisEntity, self.otherEntity = this, other
        self.namespace = ns.CLIENT
        #: wokkel's ``StreamManager.logTraffic`` sets these; nothing is raw here
        self.rawDataInFn = self.rawDataOutFn = None

    def send(self, obj: domish.Element | str) -> None:
        """Send a stanza (an element, or its XML text) to the server.

        :raises ValueError: for what a server stream would end with a stream
            error: not one stanza, a ``from`` that is not ours, bad XML.
        """
        self._link.from_handlers(obj)


class _Link:
    """What both attachments share: the handler stream and its inbox.

    Stanzas for the handlers wait in the inbox until the clock's next turn,
    then are dispatched in order (see the module docstring)."""

    log = Logger()

    def __init__(self, manager: _Embedded, this: jidlib.JID, other: jidlib.JID):
        self.manager = manager
        self.server = manager.server
        self.clock = manager.server.clock
        self.closed = False
        self.stream = HandlerStream(self, this, other)
        manager.factory.installBootstraps(self.stream)
        self._inbox: collections.deque[Any] = collections.deque()
        self._call = None
        self._drain_waiters: list[defer.Deferred] = []

    # -- to the handlers -----------------------------------------------------------

    def queue(self, item: Any) -> None:
        self._inbox.append(item)
        if self._call is None:
            self._call = self.clock.callLater(0, self._flush)

    def as_parsed(self, stanza: domish.Element | str) -> domish.Element:
        """``stanza`` as a handler on a socket would read it: parsed afresh
        from the server's text, ``jabber:client`` throughout (and a copy: the
        router may hand one element to many sessions)."""
        text = stanza if isinstance(stanza, str) else \
            stanza.toXml(prefixes=_PREFIXES, defaultUri=ns.CLIENT, prefixesInScope=["stream"])
        return parse_element(text, max_size=4 * len(text) + 1024)

    def _flush(self) -> None:
        self._call = None
        inbox, stream = self._inbox, self.stream
        # Only what was there when the turn began: what handlers cause now
        # waits for the next turn (a bot talking to itself does not spin).
        for _ in range(len(inbox)):
            if self.closed:
                break
            item = inbox.popleft()
            try:
                if item is _INITIALIZED:
                    stream.dispatch(stream, jabber_xmlstream.STREAM_CONNECTED_EVENT)
                    stream.dispatch(stream, jabber_xmlstream.STREAM_AUTHD_EVENT)
                else:
                    stream.dispatch(item)
            except Exception:
                # A socket's stream would drop the connection; a bot keeps going.
                self.log.failure("{jid}: a handler failed on {what}",
                                 jid=stream.thisEntity.full(),
                                 what="initialisation" if item is _INITIALIZED else item.name)
            if item is _INITIALIZED:
                self.manager._ready(self)
        waiters, self._drain_waiters = self._drain_waiters, []
        for d in waiters:
            d.callback(None)

    def drained(self) -> defer.Deferred:
        if not self._inbox:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._drain_waiters.append(d)
        return d

    def take_inbox(self) -> list[domish.Element]:
        """Stanzas never dispatched (the link is closing), in order."""
        waiting = [e for e in self._inbox if e is not _INITIALIZED]
        self._inbox.clear()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        waiters, self._drain_waiters = self._drain_waiters, []
        for d in waiters:
            d.callback(None)
        return waiting

    def ended(self, reason: Failure, connected: bool) -> None:
        """Tell the handlers the stream is over (``connectionLost``); or, if
        it never got as far as them, that it failed (``initializationFailed``)."""
        stream = self.stream
        if not connected:
            stream.dispatch(reason, jabber_xmlstream.INIT_FAILED_EVENT)
            return
        if reason.check(jabber_error.StreamError):
            stream.dispatch(reason, jabber_xmlstream.STREAM_ERROR_EVENT)
        stream.dispatch(reason, jabber_xmlstream.STREAM_END_EVENT)

    # -- from the handlers ---------------------------------------------------------

    def parse_outgoing(self, obj: domish.Element | str, default_uri: str | None) -> domish.Element:
        """What the handler sent, as the server would parse it off a stream."""
        if isinstance(obj, domish.Element):
            text = obj.toXml(defaultUri=default_uri) if default_uri else obj.toXml()
        elif isinstance(obj, (str, bytes)):
            text = obj.decode("utf-8") if isinstance(obj, bytes) else obj
        else:
            raise ValueError(f"cannot send {obj!r}: not an element or XML text")
        try:
            element = parse_element(text, max_size=self.server.config.server["max_stanza_size"])
        except (ValueError, StreamProblem) as e:
            raise ValueError(f"not one well-formed stanza of acceptable size: {e}") from None
        if element.uri != ns.CLIENT or element.name not in ns.STANZA_KINDS:
            raise ValueError(f"<{element.name} xmlns='{element.uri}'/> is not a stanza")
        return element

    def from_handlers(self, obj: domish.Element | str) -> None:
        raise NotImplementedError


# -- a local account ----------------------------------------------------------------


class _ClientFraming(_Link):
    """An in-memory framing of a :class:`ClientSession` (the contract is in
    :mod:`xmppd.streams.negotiation`): the session's output goes to the
    handlers, the handlers' output to the session, as bytes would."""

    address = "127.0.0.1"  # for the session contract: the host itself
    peer = CHANNEL
    channel = CHANNEL
    #: nothing crosses a wire
    secure = True
    starttls = False
    shape: Hashable = ns.CLIENT

    def __init__(self, manager: EmbeddedClient):
        requested = manager.requested
        super().__init__(manager, requested, jidlib.parse(requested.host))
        self.domain: str | None = None
        self.session: ClientSession | None = None
        #: the bound full JID, once bound
        self.jid: jidlib.JID | None = None
        self._bind_id = f"embed-bind-{next(_bind_ids)}"
        #: handler output held while the session asked us to stop reading
        self._paused = False
        self._held: collections.deque[domish.Element] = collections.deque()

    # -- opening ---------------------------------------------------------------------

    def open(self) -> None:
        """Open the stream, authenticate in-process and bind the resource."""
        requested = self.manager.requested
        session = self.session = ClientSession(self.server, self)
        session.stream_opened(requested.host, "1.0")
        if self.closed:
            return
        # What SASL would establish. The code attaching runs in the server's
        # process and names the account; the account exists (checked).
        session.user = requested.userhost()
        session.authenticated_at = self.clock.seconds()
        session.mechanism = "no SASL"
        bind = domish.Element((ns.CLIENT, "iq"))
        bind["type"], bind["id"] = "set", self._bind_id
        request = bind.addElement((ns.BIND, "bind"))
        if requested.resource:
            request.addElement("resource", content=requested.resource)
        session.element_received(bind)

    def _negotiation(self, stanza: domish.Element | str) -> None:
        """Output before bind: the stream features (not needed) and the
        answer to our bind."""
        if isinstance(stanza, str) or stanza.name != "iq" \
                or stanza.getAttribute("id") != self._bind_id:
            return
        if stanza.getAttribute("type") == "result":
            bound = next(stanza.elements(ns.BIND, "bind"))
            self.jid = jidlib.parse(str(next(bound.elements(ns.BIND, "jid"))))
            self.stream.thisEntity = self.jid
            self.manager._bound(self)
            # Dispatched on the next turn: after resource-bind, which the
            # session fires once this answer is written.
            self.queue(_INITIALIZED)
            return
        error = next((c for c in stanza.elements() if c.name == "error"), None)
        details = list(error.elements()) if error is not None else []
        condition = next((c.name for c in details
                          if c.uri == ns.STANZA_ERRORS and c.name != "text"), "undefined")
        text = next((str(c) for c in details if c.name == "text"), "")
        self.manager._failed(self, Failure(EmbedError(
            f"binding {self.manager.requested.full()} was refused: {condition}"
            + (f" ({text})" if text else ""))))
        self.close()

    # -- the framing contract: the session's requests ----------------------------------

    def open_stream(self) -> None:
        """Nothing to write: there is no stream header in memory."""

    def send(self, stanza: domish.Element | str) -> None:
        if self.closed:
            if self.session is not None:
                if isinstance(stanza, str):
                    try:
                        stanza = self.as_parsed(stanza)
                    except (ValueError, StreamProblem):
                        return
                self.session.undelivered(stanza.name, stanza)
            return
        if self.jid is None:
            self._negotiation(stanza)
            return
        self.queue(self.as_parsed(stanza))

    def serialize(self, element: domish.Element) -> str:
        return element.toXml(prefixes=_PREFIXES, defaultUri=ns.CLIENT, prefixesInScope=["stream"])

    def restart(self) -> None:
        """No SASL runs here, so no stream restarts."""

    def start_tls(self) -> bool:
        return False

    def bound(self) -> None:
        """The session bound: no deadline, no keep-alives to start."""

    def waiting_for(self) -> str:
        return "the in-process bind"

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        self._paused = False
        while self._held and not self._paused and not self.closed:
            self.session.element_received(self._held.popleft())

    def stream_error(self, condition: str, text: str | None = None) -> None:
        self._close(Failure(jabber_error.StreamError(condition, text)))

    def close(self) -> None:
        self._close(Failure(ConnectionDone("detached")), detached=True)

    def _close(self, reason: Failure, detached: bool = False) -> None:
        if self.closed:
            return
        session = self.session
        if session is not None:
            session.closing()  # unbound first: what waits for it is routed elsewhere
        self.closed = True
        if session is not None:
            for element in self.take_inbox():
                session.undelivered(element.name, element)
            # What the handlers sent while the session was not reading: the
            # messages among it still go, as from a closing socket's last
            # read (ClientSession does the same with its own inbox).
            for element in self._held:
                if element.name == "message":
                    session.element_received(element)
            self._held.clear()
            session.ended()
        else:
            self.take_inbox()
        self.manager._ended(self, reason, detached)

    # -- from the handlers -----------------------------------------------------------

    def from_handlers(self, obj: domish.Element | str) -> None:
        if self.closed or self.jid is None:
            # As a write to a closed socket: gone. (StreamManager.send itself
            # queues until the stream is initialised.)
            self.log.info("{jid}: not attached, a stanza from a handler is dropped",
                          jid=self.manager.requested.full())
            return
        element = self.parse_outgoing(obj, None)
        sender = element.getAttribute("from")
        if sender is not None:
            parsed = jidlib.parse_or_none(sender)
            if parsed is None or parsed.full() not in (self.jid.full(), self.jid.userhost()):
                raise ValueError(f"a stanza from {sender}: this session is {self.jid.full()}")
        if self._paused:
            self._held.append(element)
            return
        self.session.element_received(element)

    def detach(self) -> None:
        if self.session is not None and not self.closed:
            self.session.close()
        else:
            self.close()


# -- a component domain ---------------------------------------------------------------


class _ComponentLink(_Link):
    """The route of an embedded component's domain, and its stream."""

    def __init__(self, manager: EmbeddedComponent):
        domain = jidlib.parse(manager.domain)
        super().__init__(manager, domain, domain)
        self.domain = manager.domain
        self._unroute: Callable[[], None] | None = None

    def open(self) -> None:
        self._unroute = self.server.router.routes.add(self.domain, self.route)
        self.queue(_INITIALIZED)

    def route(self, stanza: domish.Element, to: Any) -> bool:
        """The route table's call: a stanza for our domain."""
        if self.closed:
            return False
        self.queue(self.as_parsed(stanza))
        return True

    def from_handlers(self, obj: domish.Element | str) -> None:
        if self.closed:
            self.log.info("{domain}: not attached, a stanza from a handler is dropped",
                          domain=self.domain)
            return
        # Stanzas built in jabber:component:accept, wokkel's component
        # namespace, are as good as jabber:client ones.
        element = self.parse_outgoing(obj, ns.COMPONENT_ACCEPT)
        sender = element.getAttribute("from")
        if sender is None:
            element["from"] = self.domain  # as Prosody (its "COMPAT")
        else:
            parsed = jidlib.parse_or_none(sender)
            if parsed is None or parsed.host != self.domain:
                raise ValueError(f"a stanza from {sender}: this component serves {self.domain}")
            element["from"] = parsed.full()
        if element.getAttribute("to") is None:
            if element.getAttribute("type") not in ("error", "result"):
                self.queue(self.as_parsed(stanza_error(
                    element, "bad-request",
                    text="Components MUST specify a 'to' address on stanzas")))
            return
        self.server.router.route(element)

    def detach(self) -> None:
        if self.closed:
            return
        if self._unroute is not None:
            self._unroute()
        self.closed = True
        router = self.server.router
        for element in self.take_inbox():
            if element.name != "presence":
                router.bounce(element, "remote-server-timeout", text="Component unavailable")
        self.manager._ended(self, Failure(ConnectionDone("detached")), True)


# -- the managers ---------------------------------------------------------------------


class _Embedded(StreamManager, service.Service):
    """A wokkel ``StreamManager`` that is also a service of the server, as
    wokkel's own ``XMPPClient`` is a ``StreamManager`` and a service."""

    log = Logger()

    def __init__(self, server: XMPPServer, fallback: bool):
        self.server = server
        # The "factory" wokkel hooks its stream events to: one for every
        # attachment, as a client factory serves every reconnection.
        StreamManager.__init__(self, BootstrapMixin(), reactor=server.clock)
        self._link: Any = None
        self._waiters: list[defer.Deferred] = []
        self._outcome: Any = None
        if fallback:
            generic.FallbackHandler().setHandlerParent(self)

    # -- life ------------------------------------------------------------------------

    def startService(self) -> None:
        service.Service.startService(self)
        self._outcome = None
        self._connect()

    def stopService(self) -> None:
        service.Service.stopService(self)
        if self._link is not None:
            self._link.detach()

    def detach(self) -> defer.Deferred:
        """Detach now (the handlers' ``connectionLost`` runs) and leave the
        server's services."""
        if self.parent is not None:
            return defer.maybeDeferred(self.disownServiceParent)
        if self.running:
            self.stopService()
        return defer.succeed(None)

    def when_ready(self) -> defer.Deferred:
        """A Deferred that fires with our JID once the handlers are
        initialised, or fails with :class:`EmbedError` if attaching failed;
        once the attachment has ended, it fires on the next attachment."""
        if isinstance(self._outcome, Failure):
            return defer.fail(self._outcome)
        if self._outcome is not None and self._link is not None and not self._link.closed:
            return defer.succeed(self._outcome)
        d: defer.Deferred = defer.Deferred()
        self._waiters.append(d)
        return d

    # -- what the link reports -----------------------------------------------------------

    def _connect(self) -> None:
        raise NotImplementedError

    def _ready(self, link: _Link) -> None:
        if link is not self._link:
            return
        self._outcome = link.stream.thisEntity
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(self._outcome)

    def _failed(self, link: _Link, failure: Failure, quiet: bool = False) -> None:
        if link is not self._link or self._outcome is not None:
            return
        if not quiet:
            self.log.error("{what}: cannot attach: {reason}", what=self._what(),
                           reason=failure.getErrorMessage())
        self._outcome = failure
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.errback(failure)

    def _ended(self, link: _Link, reason: Failure, detached: bool) -> None:
        if link is not self._link:
            return
        connected = self.xmlstream is not None
        if not connected:
            # Never got as far as the handlers: they learn why it failed.
            self._failed(link, Failure(EmbedError(
                f"{self._what()}: the session ended before it was ready: "
                f"{reason.getErrorMessage()}")), quiet=detached)
            reason = self._outcome
        elif not detached:
            self.log.info("{what}: the server ended the session: {reason}",
                          what=self._what(), reason=reason.getErrorMessage())
        if isinstance(self._outcome, jidlib.JID):
            self._outcome = None
        link.ended(reason, connected)

    def _what(self) -> str:
        raise NotImplementedError


class EmbeddedClient(_Embedded):
    """wokkel handlers on a client session of a local account (see the module
    docstring). ``jid`` is the account's JID with the resource to bind (none:
    the server picks one, as for a client)."""

    def __init__(self, server: XMPPServer, jid: str, fallback: bool = True):
        try:
            requested = jidlib.parse(jid)
        except jidlib.InvalidJID as e:
            raise ValueError(f"{jid!r} is not a JID: {e}") from None
        if requested.user is None or requested.host not in server.router.hosts:
            raise ValueError(f"{jid} is not an account of this server's domains "
                             f"({', '.join(sorted(server.router.hosts))})")
        #: the JID asked for; :attr:`jid` is the bound one once attached
        self.requested = requested
        #: the bound full JID (wokkel's handlers read ``parent.jid``)
        self.jid = requested
        super().__init__(server, fallback)

    def _what(self) -> str:
        return self.requested.full()

    def _connect(self) -> None:
        link = self._link = _ClientFraming(self)
        d = self.server.accounts.exists(self.requested.userhost())
        d.addCallback(self._account_checked, link)
        d.addErrback(self._attach_failed, link)

    def _account_checked(self, exists: bool, link: _ClientFraming) -> None:
        if link is not self._link or link.closed:
            return  # detached meanwhile
        if not exists:
            raise EmbedError(f"{self.requested.userhost()} has no account: create it "
                             "first (xmppd adduser, or server.accounts.create)")
        link.open()

    def _attach_failed(self, failure: Failure, link: _ClientFraming) -> None:
        self._failed(link, failure)
        link.close()

    def _bound(self, link: _ClientFraming) -> None:
        """The resource is bound: ``jid`` is the bound JID from now on (wokkel
        handlers read ``parent.jid``, already in ``connectionInitialized``)."""
        if link is self._link:
            self.jid = link.jid

    @property
    def session(self) -> ClientSession | None:
        """The session the router holds for us (None when not attached)."""
        link = self._link
        return link.session if link is not None and not link.closed else None


class EmbeddedComponent(_Embedded):
    """wokkel handlers serving a domain of their own (see the module docstring)."""

    def __init__(self, server: XMPPServer, domain: str, fallback: bool = True):
        try:
            parsed = jidlib.parse(domain)
        except jidlib.InvalidJID as e:
            raise ValueError(f"{domain!r} is not a domain: {e}") from None
        if parsed.user is not None or parsed.resource is not None:
            raise ValueError(f"{domain} is not a bare domain")
        #: the domain served
        self.domain = parsed.host
        self.jid = parsed
        super().__init__(server, fallback)
        self._check_free()

    def _what(self) -> str:
        return self.domain

    def _check_free(self) -> None:
        router = self.server.router
        if self.domain in router.domains:
            raise ValueError(f"{self.domain} is served by this server already")
        if self.domain in router.routes.domains():
            raise ValueError(f"{self.domain} has a route already (an external component?)")
        if self.domain in getattr(self.server.config, "externals", ()):
            raise ValueError(f"{self.domain} is configured as an external component")

    def _connect(self) -> None:
        self._check_free()
        self._link = _ComponentLink(self)
        self._link.open()


# -- the functions ----------------------------------------------------------------------


def attach(server: XMPPServer, jid: str, *handlers: XMPPHandler,
           fallback: bool = True) -> EmbeddedClient:
    """Run ``handlers`` (wokkel ``XMPPHandler``\\ s) on a session of the local
    account ``jid`` (``user@domain/resource``; without a resource the server
    picks one). Attaches now if the server runs, else when it starts.

    :raises ValueError: ``jid`` is not a JID of one of the server's domains.
    """
    client = EmbeddedClient(server, jid, fallback=fallback)
    for handler in handlers:
        handler.setHandlerParent(client)
    client.setServiceParent(server)
    return client


def attach_component(server: XMPPServer, domain: str, *handlers: XMPPHandler,
                     fallback: bool = True) -> EmbeddedComponent:
    """Serve ``domain`` with ``handlers``: every stanza to it, or to a JID
    under it, reaches them. Attaches now if the server runs, else when it
    starts.

    :raises ValueError: ``domain`` is served or routed already (a user
        domain, a hosted service, an external component).
    """
    component = EmbeddedComponent(server, domain, fallback=fallback)
    for handler in handlers:
        handler.setHandlerParent(component)
    component.setServiceParent(server)
    return component
