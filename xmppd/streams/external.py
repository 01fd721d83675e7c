"""XEP-0114 external components: a process of its own serves a domain.

An operator names the domain and its shared secret (``[external:<domain>]
secret = …``); the component connects to ``[external] port`` (loopback by
default: the secret travels without TLS, and the handshake only proves it
knows the secret), opens a ``jabber:component:accept`` stream *to* its domain
and proves the secret. From then on the server routes every stanza for the
domain (and any JID under it) to that stream, and routes what the component
sends like any other stanza.

The pieces:

:class:`ExternalComponents`
    a service of the server: one exact-domain route per configured domain in
    the router's route table (``router.routes``), for as long as the server
    runs, and the stream currently connected for each.
:class:`ExternalComponentStream`
    one connection: stream header, handshake, stanzas both ways.
:func:`listen`
    what the server calls: the service and its listening ports.

Behaviour matched to Prosody 0.12 (``plugins/mod_component.lua``):

- *Stream header*: without ``to``, ``improper-addressing``; a ``to`` that
  is not a configured external domain, ``host-unknown``. Our header answers
  with ``from`` = the domain and a fresh random ``id``, without ``version``
  (XEP-0114 predates XMPP 1.0; no stream features follow).
- *Handshake*: the hex SHA-1 of stream id + secret, compared without regard
  to case (as Prosody) and in constant time (:func:`hmac.compare_digest`: a
  byte-by-byte compare would tell an attacker how much of a guess was
  right). A wrong one, or a handshake with child elements, is the stream
  error ``not-authorized`` ("Given token does not match calculated token"),
  logged with the peer's address. Success is an empty ``<handshake/>``.
- *Before the handshake*: any other element is ``not-authorized`` (RFC 6120
  §4.9.3.12). Prosody answers an unauthenticated component's stanza with
  a ``service-unavailable`` stanza error instead; the RFC's stream error
  tells a misbehaving component sooner, and nothing is routed either way.
- *A second connection for a connected domain* that authenticates *replaces*
  the first, which gets the stream error ``conflict`` ("Replaced by a new
  connection") — Prosody's ``component_conflict_resolve = "kick_old"``
  (its default, ``kick_new``, refuses the newcomer; a component that
  restarts after a crash would then be locked out until the server notices
  the old connection is dead).
- *From the component*: a ``from`` outside the component's domain — another
  domain, a subdomain of it, or no JID at all — is the stream error
  ``invalid-from``, as Prosody's ``validate_from_addresses`` (its default)
  does: Prosody compares the domain part exactly, so subdomains are foreign
  too. A stanza without ``from`` is stamped with the domain (Prosody's
  "COMPAT"). A stanza without ``to`` is answered ``bad-request`` (modify,
  "Components MUST specify a 'to' address on stanzas") and dropped.
- *To a component that is not connected*: an error ``remote-server-timeout``
  (wait, "Component unavailable"), as Prosody's — Prosody also adds its own
  ``<not-connected xmlns='xmpp:prosody.im/protocol/component'/>``, which we
  leave out. The domain stays routed (and listed in the server's
  disco#items) while the component is away, so stanzas for it neither go to
  s2s nor become ``remote-server-not-found``.
- *After the handshake*: only ``message``, ``presence`` and ``iq`` (in the
  stream's namespace or ``jabber:client``); anything else, a second
  ``<handshake/>`` included, is ``unsupported-stanza-type``.

Limits: the server's ``max_stanza_size``; ``[c2s] auth_timeout`` for the
handshake (``connection-timeout``); output as for an s2s link (``[s2s]
max_output_buffer``), with ``[c2s]`` send and close time-outs. A
component is trusted once authenticated: no stanza rate limit (Prosody has
none either). Stanzas the stream took but could not write when it closed
are routed again: to a connection that replaced it, or bounced as above.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING, Any

from twisted.application import service
from twisted.internet import error, protocol
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.words.xish import domish

from xmppd import jid as jidlib
from xmppd import ns
from xmppd.router.domains import Route
from xmppd.router.events import stanza_error
from xmppd.streams import edge
from xmppd.xml.stream import XMPPStream, as_element

if TYPE_CHECKING:
    from xmppd.server import XMPPServer

_STANZAS = frozenset(("message", "presence", "iq"))
_STANZA_NAMESPACES = frozenset((ns.COMPONENT_ACCEPT, ns.CLIENT))
_NO_REPLY = frozenset(("error", "result"))


def handshake_digest(stream_id: str, secret: str) -> str:
    """XEP-0114 §3: the handshake the component must send (lower-case hex)."""
    return hashlib.sha1((stream_id + secret).encode("utf-8")).hexdigest()


class ExternalComponentStream(XMPPStream):
    """One connection of an external component, from the first byte to the last."""

    log = Logger()
    namespace = ns.COMPONENT_ACCEPT

    def __init__(self, components: ExternalComponents):
        server = components.server
        config = server.config
        c2s = config.c2s
        super().__init__(config.server["max_stanza_size"], clock=server.clock,
                         max_output=config.s2s["max_output_buffer"],
                         send_timeout=c2s["send_timeout"], close_timeout=c2s["close_timeout"],
                         traffic=server.reclaimer.account)
        self.components = components
        self.server = server
        #: the handshake succeeded: this stream serves ``self.domain``
        self.authenticated = False
        self._auth_call: IDelayedCall | None = None

    # -- connection ----------------------------------------------------------------

    def connectionMade(self) -> None:
        super().connectionMade()
        for option in ("setTcpNoDelay", "setTcpKeepAlive"):
            set_option = getattr(self.transport, option, None)
            if set_option is not None:
                set_option(True)
        self.log.info("external {peer} connected", peer=self.peer)
        timeout = self.server.config.c2s["auth_timeout"]
        self._auth_call = self.clock.callLater(timeout, self._auth_timed_out, timeout)

    def _auth_timed_out(self, timeout: float) -> None:
        self._auth_call = None
        if self.closed or self.authenticated:
            return
        self.log.info("external {peer}: no handshake within {timeout} s: closing",
                      peer=self.peer, timeout=timeout)
        self.server.counters["external timed out before handshake"] += 1
        self.stream_error("connection-timeout", f"no handshake within {timeout} s")

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if not self.closed:
            self.log.info("external {peer} disconnected ({domain}): {reason}", peer=self.peer,
                          domain=self._who(), reason=reason.getErrorMessage() if reason else "")
        self._ending()
        super().connectionLost(reason)

    def _who(self) -> str:
        if self.authenticated:
            return self.domain or "?"
        return f"{self.domain}, unauthenticated" if self.domain else "unauthenticated"

    def _ending(self) -> None:
        """The stream stops serving its domain *before* anything it still
        holds is routed again (which must not come back here)."""
        if self._auth_call is not None and self._auth_call.active():
            self._auth_call.cancel()
        self._auth_call = None
        self.components.detach(self)

    def close(self) -> None:
        if self.closed:
            return
        if self.authenticated:
            self.log.info("external {peer} closing ({domain})", peer=self.peer, domain=self.domain)
        self._ending()
        super().close()

    def stream_error(self, condition: str, text: str | None = None) -> None:
        if not self.closed:
            self._ending()
        super().stream_error(condition, text)

    # -- the stream ----------------------------------------------------------------

    def send_header(self, domain: str | None, version: bool = False) -> None:
        """XEP-0114 streams carry no version (they predate XMPP 1.0)."""
        super().send_header(domain, version=False)

    def serialize(self, element: domish.Element) -> str:
        return edge.serialize(element)

    def streamStarted(self, root: domish.Element) -> None:
        to = root.getAttribute("to")
        if not to:
            self.stream_error("improper-addressing",
                              "A 'to' attribute is required on stream headers")
            return
        parsed = jidlib.parse_or_none(to)
        domain = parsed.host if parsed is not None and parsed.user is None \
            and parsed.resource is None else None
        if domain is None or domain not in self.components.secrets:
            self.log.info("external {peer}: {to} is not an external component here",
                          peer=self.peer, to=to)
            self.stream_error("host-unknown",
                              f"{to} does not match any configured external components")
            return
        self.domain = domain
        self.send_header(domain)

    def stanzaReceived(self, element: domish.Element) -> None:
        if element.uri == ns.STREAMS and element.name == "error":
            condition = next((c.name for c in element.elements()
                              if c.uri == ns.STREAM_ERRORS and c.name != "text"),
                             "undefined-condition")
            self.log.info("external {peer} ({domain}) sent the stream error {condition}",
                          peer=self.peer, domain=self._who(), condition=condition)
            self.close()
        elif not self.authenticated:
            if element.uri == ns.COMPONENT_ACCEPT and element.name == "handshake":
                self._handshake(element)
            else:
                self.stream_error("not-authorized", "send the handshake first")
        elif element.uri in _STANZA_NAMESPACES and element.name in _STANZAS:
            self._from_component(edge.to_client(element, ns.COMPONENT_ACCEPT))
        else:
            self.stream_error("unsupported-stanza-type",
                              f"{element.name} is not a stanza in {self.namespace}")

    def _handshake(self, element: domish.Element) -> None:
        domain = self.domain
        secret = self.components.secrets[domain]
        given = "".join(c for c in element.children if isinstance(c, str)).strip().lower()
        expected = handshake_digest(self.stream_id, secret)
        if any(True for _ in element.elements()) \
                or not hmac.compare_digest(given.encode("utf-8"), expected.encode("ascii")):
            self.log.info("external {peer} failed to authenticate as {domain}: not-authorized",
                          peer=self.peer, domain=domain)
            self.server.counters["external failed handshakes"] += 1
            self.stream_error("not-authorized", "Given token does not match calculated token")
            return
        if self._auth_call is not None and self._auth_call.active():
            self._auth_call.cancel()
        self._auth_call = None
        self.authenticated = True
        old = self.components.attach(self)
        if old is not None:
            self.log.info("external {domain}: {peer} replaces the connection from {old}",
                          domain=domain, peer=self.peer, old=old.peer)
            old.stream_error("conflict", "Replaced by a new connection")
        self.log.info("external {peer} authenticated as {domain}", peer=self.peer, domain=domain)
        self.send("<handshake/>")

    def _from_component(self, stanza: domish.Element) -> None:
        """Check the addresses as Prosody does, then route it."""
        domain = self.domain
        from_text = stanza.getAttribute("from")
        if from_text is None:
            stanza["from"] = domain
        else:
            sender = jidlib.parse_or_none(from_text)
            if sender is None or sender.host != domain:
                self.log.info("external {peer} ({domain}) sent from {sender}: closing",
                              peer=self.peer, domain=domain, sender=from_text)
                self.stream_error("invalid-from", f"Component tried to send from address "
                                  f"<{from_text}> which is not in domain <{domain}>")
                return
            stanza["from"] = sender.full()
        if stanza.getAttribute("to") is None:
            if stanza.getAttribute("type") not in _NO_REPLY:
                self.send(stanza_error(stanza, "bad-request", text="Components MUST specify "
                                       "a 'to' address on stanzas"))
            return
        self.server.router.route(stanza)

    # -- output ends -------------------------------------------------------------------

    def undelivered(self, kind: str, stanza: domish.Element | bytes) -> None:
        """Taken, never written: routed again (the stream no longer serves
        its domain, so it goes to a replacement or is bounced)."""
        if kind not in _STANZAS:
            return
        stanza = as_element(stanza)
        if stanza is None or kind == "presence" or stanza.getAttribute("type") in _NO_REPLY:
            return
        self.server.router.route(stanza)

    def output_overflow(self) -> None:
        self.server.counters["external output overflow"] += 1
        self.stream_error("policy-violation", "too much output waiting: the component does "
                          "not read")

    def output_stalled(self) -> None:
        self.server.counters["external output stalled"] += 1
        self.stream_error("connection-timeout", "the component stopped reading")

    def aborted(self) -> None:
        self.server.counters["external aborted after close"] += 1


class ExternalComponentFactory(protocol.Factory):
    """Builds an :class:`ExternalComponentStream` per connection."""

    noisy = False  # the stream logs its own connection events

    def __init__(self, components: ExternalComponents):
        self.components = components

    def buildProtocol(self, addr) -> ExternalComponentStream:
        stream = ExternalComponentStream(self.components)
        stream.factory = self
        return stream


class ExternalComponents(service.Service):
    """The configured external components: a route per domain for as long as
    the service runs, and the stream that serves each domain now."""

    log = Logger()

    def __init__(self, server: XMPPServer):
        self.server = server
        #: domain → shared secret (``[external:<domain>]``)
        self.secrets: dict[str, str] = {domain: values["secret"]
                                        for domain, values in server.config.externals.items()}
        #: domain → the authenticated stream serving it
        self.connected: dict[str, ExternalComponentStream] = {}
        self._unroute: list[Any] = []

    def startService(self) -> None:
        super().startService()
        routes = self.server.router.routes
        for domain in sorted(self.secrets):
            self._unroute.append(routes.add(domain, self._route_for(domain)))

    def stopService(self) -> None:
        super().stopService()
        for stream in list(self.connected.values()):
            stream.stream_error("system-shutdown", "the server is stopping")
        for remove in self._unroute:
            remove()
        self._unroute.clear()

    def _route_for(self, domain: str) -> Route:
        """The route of ``domain``: to its stream, or bounced while none is connected."""
        router = self.server.router

        def route(stanza: domish.Element, to: Any) -> bool:
            stream = self.connected.get(domain)
            if stream is not None:
                stream.send(stanza)
            else:
                self.log.debug("external {domain} not connected: bouncing a {kind}",
                               domain=domain, kind=stanza.name)
                router.bounce(stanza, "remote-server-timeout", text="Component unavailable")
            return True
        return route

    def attach(self, stream: ExternalComponentStream) -> ExternalComponentStream | None:
        """``stream`` authenticated for its domain: it serves it from now on.
        Returns the stream it replaces, if any (which the caller closes)."""
        old = self.connected.get(stream.domain)
        self.connected[stream.domain] = stream
        return old if old is not stream else None

    def detach(self, stream: ExternalComponentStream) -> None:
        if stream.domain is not None and self.connected.get(stream.domain) is stream:
            del self.connected[stream.domain]


def listen(server: XMPPServer, reactor: Any = None) -> list[IListeningPort]:
    """Serve the ``[external:<domain>]`` components on ``[external] port``.

    Nothing listens when none is configured or the port is 0. A configured
    domain that a hosted service of this server serves already is a
    configuration error (the service would get its stanzas, never the
    component). Returns the listening ports (the server stops them).
    """
    settings = server.config.sections["external"]
    externals = server.config.externals
    if not externals or not settings["port"]:
        return []
    for domain in externals:
        if domain in server.router.domains:
            raise SystemExit(f"xmppd: [external:{domain}]: {domain} is served by this "
                             "server already (a hosted service)")
    if reactor is None:
        from twisted.internet import reactor
    components = ExternalComponents(server)
    components.setServiceParent(server)
    factory = ExternalComponentFactory(components)
    ports = []
    for interface in settings["interfaces"]:
        try:
            listening = reactor.listenTCP(settings["port"], factory, interface=interface)
        except error.CannotListenError as e:
            raise SystemExit(f"xmppd: cannot listen on {interface} port {settings['port']}: "
                             f"{e.socketError}") from None
        ports.append(listening)
        ExternalComponents.log.info("external components listening on {interface} port {port} "
                        "({domains})", interface=interface, port=listening.getHost().port,
                        domains=" ".join(sorted(externals)))
    return ports
