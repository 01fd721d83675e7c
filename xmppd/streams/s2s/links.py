"""Federation: the links to other servers, and the route table's default route.

:class:`S2S` is the server's s2s service. Stanzas for a domain no route of
the route table claims come to :meth:`S2S.route`, which hands them to the
:class:`Link` for the pair (local domain of the sender, remote domain of the
recipient) — one outgoing stream per pair, reused while it lives, as
Prosody's ``s2sout`` sessions are. Incoming streams
(:mod:`.inbound`) are the other direction, set up by the remote server.

A link being set up queues stanzas (``[s2s] max_queue``; more bounce with
``resource-constraint``); when it cannot be set up — no address, nothing
listening, TLS or authentication refused, ``[s2s] connect_timeout`` passed —
what it queued bounces with ``remote-server-not-found`` (or
``remote-server-timeout``) and the link is forgotten, so the next stanza
tries again. A link quiet for ``[s2s] idle_timeout`` closes.
"""

from __future__ import annotations

import collections
import ipaddress
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, endpoints, error, task
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.words.xish import domish

from xmppd import jid as jidlib
from xmppd.tls import certificate_domains as tls_names
from xmppd.streams.s2s import dialback
from xmppd.streams.s2s.certs import S2STLS
from xmppd.streams.s2s.inbound import InboundFactory, InboundStream
from xmppd.streams.s2s.outbound import LinkFailed, OutboundFactory, OutboundStream
from xmppd.streams.s2s.resolve import Resolver, Target
from xmppd.xml.stream import as_element

if TYPE_CHECKING:
    from xmppd.server import XMPPServer

#: Seconds a connection attempt to one address may take.
CONNECT_ATTEMPT_TIMEOUT = 10
#: Dialback verifications waiting at once on one link.
MAX_VERIFIES = 100
#: Links being set up at once (resolving, connecting, authenticating): past
#: it, stanzas for yet another domain bounce (resource-constraint).
MAX_LINKS_IN_SETUP = 1000


def _is_address(host: str) -> bool:
    """Is ``host`` an IP literal rather than a domain name?"""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class Link:
    """Our stanzas from ``local`` to ``remote``: one outgoing stream, and the
    stanzas that wait for it."""

    log = Logger()

    def __init__(self, s2s: S2S, local: str, remote: str):
        self.s2s = s2s
        self.local, self.remote = local, remote
        self.queue: collections.deque[domish.Element] = collections.deque()
        self.stream: OutboundStream | None = None
        self.is_ready = False
        self.failed = False
        self.last_active = s2s.server.clock.seconds()
        #: stream id → (Deferred, key) of <db:verify/> we asked the peer
        self._verifies: dict[str, tuple[defer.Deferred, str]] = {}
        self._targets: list[Target] = []
        self._timer = s2s.server.clock.callLater(s2s.config["connect_timeout"], self._timed_out)
        self._attempt: defer.Deferred | None = None
        self._last_error: LinkFailed | None = None
        #: riding on another link's stream (XEP-0220 piggybacking)
        self._piggybacking = False

    def __repr__(self) -> str:
        return f"<Link {self.local} -> {self.remote}>"

    # -- setting up ------------------------------------------------------------------

    def start(self) -> None:
        # A stream to the same remote domain from another of our domains
        # carries this pair too, when the peer allows it (one connection
        # for a user domain and its hosted services).
        for other in self.s2s.links.values():
            stream = other.stream
            if other is not self and other.remote == self.remote and stream is not None \
                    and stream.link is other and stream.can_piggyback:
                self.log.info("s2s {local} -> {remote}: over the stream of {other}",
                              local=self.local, remote=self.remote, other=other.local)
                self.stream = stream
                self._piggybacking = True
                stream.piggyback(self)
                return
        d = self.s2s.resolver.targets(self.remote)
        d.addCallbacks(self._resolved, self._resolve_failed)

    def _resolved(self, targets: list[Target]) -> None:
        if self.failed:
            return
        if not targets:
            self._fail(LinkFailed(f"{self.remote} has no XMPP service (DNS)"))
            return
        self._targets = list(targets)
        self._next_target()

    def _resolve_failed(self, failure: Failure) -> None:
        self._fail(LinkFailed(f"cannot resolve {self.remote}: {failure.getErrorMessage()}"))

    def _next_target(self) -> None:
        if self.failed or self.is_ready:
            return
        if not self._targets:
            self._fail(self._last_error or LinkFailed(f"cannot connect to {self.remote}"))
            return
        target = self._targets.pop(0)
        self.stream = None
        reactor = self.s2s.reactor
        endpoint = endpoints.HostnameEndpoint(reactor, target.host, target.port,
                                              timeout=CONNECT_ATTEMPT_TIMEOUT)
        if target.direct_tls:
            endpoint = endpoints.wrapClientTLS(self.s2s.tls.client_creator(self.remote), endpoint)
        factory = OutboundFactory(self, target.direct_tls)
        self.log.debug("s2s {local} -> {remote}: trying {host}:{port}", local=self.local,
                       remote=self.remote, host=target.host, port=target.port)
        self._attempt = endpoint.connect(factory)
        self._attempt.addErrback(self._connect_failed, target)

    def _connect_failed(self, failure: Failure, target: Target) -> None:
        self._attempt = None
        self.attempt_failed(None, LinkFailed(
            f"cannot connect to {target.host}:{target.port}: {failure.getErrorMessage()}"))

    def connected(self, stream: OutboundStream) -> None:
        self._attempt = None
        self.stream = stream

    def usable(self, stream: OutboundStream) -> None:
        """Past TLS: the verifications we were asked for can go now."""
        for stream_id, (_, key) in self._verifies.items():
            stream.send_verify(self.local, stream_id, key)

    def ready(self, stream: OutboundStream) -> None:
        if stream is not self.stream or self.failed:
            return
        self.is_ready = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.last_active = self.s2s.server.clock.seconds()
        queue, self.queue = self.queue, collections.deque()
        for stanza in queue:
            stream.send(stanza)

    def attempt_failed(self, stream: OutboundStream | None, problem: LinkFailed) -> None:
        if stream is not None and stream is not self.stream:
            return
        if self.failed or self.is_ready:
            return
        self.log.info("s2s {local} -> {remote}: {why}", local=self.local, remote=self.remote,
                      why=problem)
        self._last_error = problem
        self.stream = None
        if self._piggybacking:
            # The shared stream would not take this domain: a stream of its own.
            self._piggybacking = False
            d = self.s2s.resolver.targets(self.remote)
            d.addCallbacks(self._resolved, self._resolve_failed)
            return
        if stream is not None and problem.condition != "remote-server-not-found":
            self._fail(problem)
        else:
            self._next_target()

    def _timed_out(self) -> None:
        self._timer = None
        self._fail(LinkFailed(f"{self.remote} not reached within "
                              f"{self.s2s.config['connect_timeout']} s", "remote-server-timeout"))

    def _fail(self, problem: LinkFailed) -> None:
        if self.failed:
            return
        self.failed = True
        self._last_error = problem
        self.s2s.server.counters["s2s link failed"] += 1
        self.log.warn("s2s {local} -> {remote} failed: {why}; {n} stanza(s) bounced",
                      local=self.local, remote=self.remote, why=problem, n=len(self.queue))
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._attempt is not None:
            attempt, self._attempt = self._attempt, None
            attempt.cancel()
        self.s2s.forget(self)
        queue, self.queue = self.queue, collections.deque()
        router = self.s2s.server.router
        for stanza in queue:
            router.bounce(stanza, problem.condition, text=str(problem))
        verifies, self._verifies = self._verifies, {}
        for d, _ in verifies.values():
            d.errback(problem)
        stream, self.stream = self.stream, None
        if stream is not None and not stream.closed and not self._piggybacking:
            stream.close()

    # -- using it --------------------------------------------------------------------

    def send(self, stanza: domish.Element) -> None:
        self.last_active = self.s2s.server.clock.seconds()
        if self._piggybacking and self.stream is not None:
            self.stream.link.last_active = self.last_active  # the stream is in use
        if self.failed:  # failed at once (no address): nothing will take it
            problem = self._last_error or LinkFailed(f"cannot reach {self.remote}")
            self.s2s.server.router.bounce(stanza, problem.condition, text=str(problem))
            return
        if self.is_ready and self.stream is not None:
            if self.stream.closed:
                # closing (its peer's error, our overflow): a new link, not a
                # bounce while the old connection winds down
                self.s2s.forget(self)
                self.s2s.link(self.local, self.remote).send(stanza)
                return
            self.stream.send(stanza)
            return
        if len(self.queue) >= self.s2s.config["max_queue"]:
            self.s2s.server.counters["s2s queue full"] += 1
            self.s2s.server.router.bounce(stanza, "resource-constraint",
                                          text=f"too many stanzas wait for {self.remote}")
            return
        self.queue.append(stanza)

    def verify(self, stream_id: str, key: str) -> defer.Deferred:
        """Ask ``remote``'s server whether ``key`` is its key for our incoming
        stream ``stream_id`` (XEP-0220 §2.1.3); fires True or False."""
        if stream_id in self._verifies:
            return self._verifies[stream_id][0]
        if len(self._verifies) >= MAX_VERIFIES:
            return defer.fail(LinkFailed("too many verifications at once"))
        d: defer.Deferred = defer.Deferred()
        self._verifies[stream_id] = (d, key)
        timer = self.s2s.server.clock.callLater(self.s2s.config["connect_timeout"],
                                                self._verify_timeout, stream_id)
        d.addBoth(lambda r: (timer.active() and timer.cancel(), r)[1])
        if self.stream is not None and self.stream.usable and not self.stream.closed:
            self.stream.send_verify(self.local, stream_id, key)
        return d

    @property
    def verifying(self) -> bool:
        """Are dialback verifications waiting on this link?"""
        return bool(self._verifies)

    def _verify_timeout(self, stream_id: str) -> None:
        entry = self._verifies.pop(stream_id, None)
        if entry is not None:
            entry[0].errback(LinkFailed(f"{self.remote} did not answer db:verify",
                                        "remote-server-timeout"))

    def verified(self, element: domish.Element) -> None:
        entry = self._verifies.pop(element.getAttribute("id") or "", None)
        if entry is None:
            return
        kind = element.getAttribute("type")
        if kind in ("valid", "invalid"):
            entry[0].callback(kind == "valid")
        else:
            entry[0].errback(LinkFailed(f"{self.remote} could not verify ({kind})"))

    def undelivered(self, kind: str, stanza: domish.Element | bytes) -> None:
        """Written to a stream that closed before it left: tell the sender."""
        if kind not in ("message", "iq", "presence"):
            return
        stanza = as_element(stanza)
        if stanza is None:
            return
        self.s2s.server.router.bounce(stanza, "remote-server-timeout",
                                      text=f"the link to {self.remote} closed")

    def lost(self, stream: OutboundStream, reason: Failure) -> None:
        if stream is not self.stream:
            return
        if self.is_ready:
            self.log.info("s2s {local} -> {remote}: link closed ({why})", local=self.local,
                          remote=self.remote, why=reason.getErrorMessage())
            self.stream = None
            self.s2s.forget(self)
            verifies, self._verifies = self._verifies, {}
            for d, _ in verifies.values():
                d.errback(LinkFailed("the link closed"))
            return
        self.attempt_failed(stream, LinkFailed(
            f"connection closed during set-up: {reason.getErrorMessage()}"))

    def shutdown(self) -> None:
        """The server stops: a link still being set up fails for good (its
        queue bounces, no next address is tried); a ready one ends its
        stream with ``system-shutdown``."""
        if self.is_ready:
            self.failed = True  # nothing may revive it
            self.s2s.forget(self)
            self.close("system-shutdown", "the server is stopping")
        else:
            self._fail(LinkFailed("the server is stopping", "remote-server-timeout"))

    def close(self, condition: str | None = None, text: str | None = None) -> None:
        stream = self.stream
        if stream is not None and not stream.closed and stream.link is self:
            if condition:
                stream.stream_error(condition, text)
            else:
                stream.close()


class S2S:
    """Server-to-server federation: listeners, links, dialback, the default route."""

    log = Logger()

    def __init__(self, server: XMPPServer, reactor: Any = None, dns: Any = None):
        self.server = server
        self.config = server.config.s2s
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.resolver = Resolver(server.config.s2s_routes, dns)
        self.keys = dialback.Keys()
        self.tls: S2STLS | None = None
        self.links: dict[tuple[str, str], Link] = {}
        self.inbound: set[InboundStream] = set()
        #: a stanza burst one incoming link may send at once (the rate limit's bucket)
        self.burst = max(1, self.config["max_stanza_rate"] * 4)
        self.ports: list[Any] = []
        self._idle = None
        #: set by :meth:`stop`: no new link from then on
        self.stopping = False

    # -- life cycle ----------------------------------------------------------------

    def start(self, certificate: str, private_key: str) -> None:
        """Start federating: TLS contexts, the default route, the listeners."""
        self.tls = S2STLS(certificate, private_key, self.config["ca_file"])
        self._check_names(certificate)
        self.server.router.routes.default = self.route
        self.watch_idle()
        for port, direct in ((self.config["port"], False),
                             (self.config["direct_tls_port"], True)):
            if not port:
                continue
            for interface in self.config["interfaces"]:
                factory = InboundFactory(self, direct)
                try:
                    if direct:
                        listening = self.reactor.listenSSL(port, factory, self.tls.server_options,
                                                           interface=interface)
                    else:
                        listening = self.reactor.listenTCP(port, factory, interface=interface)
                except error.CannotListenError as e:
                    raise SystemExit(f"xmppd: cannot listen on {interface} port {port} (s2s): "
                                     f"{e.socketError}") from None
                self.ports.append(listening)
                self.log.info("s2s listening on {interface} port {port}{tls}",
                              interface=interface, port=listening.getHost().port,
                              tls=" (direct TLS)" if direct else " (STARTTLS)")

    def _check_names(self, certificate: str) -> None:
        """Other servers check that our certificate names the domain a stream
        is from: say at start which served domain it does not cover (a
        hosted service's, typically), as Prosody does."""
        names = [n.lower() for n in tls_names(certificate)]

        def covered(domain: str) -> bool:
            return domain in names or any(
                n.startswith("*.") and domain.partition(".")[2] == n[2:] for n in names)
        for domain in sorted(self.local_domains()):
            if not covered(domain):
                self.log.warn("s2s: the certificate {file} does not name {domain}: other "
                              "servers will accept {domain} by dialback at best",
                              file=certificate, domain=domain)

    @defer.inlineCallbacks
    def stop(self):
        if self._idle is not None and self._idle.running:
            self._idle.stop()
        for port in self.ports:
            yield port.stopListening()
        self.ports.clear()
        if self.server.router.routes.default == self.route:
            self.server.router.routes.default = None
        self.stopping = True
        for link in list(self.links.values()):
            link.shutdown()
        for stream in list(self.inbound):
            stream.stream_error("system-shutdown", "the server is stopping")

    # -- the default route ----------------------------------------------------------

    def route(self, stanza: domish.Element, to: Any) -> bool:
        """Send ``stanza`` to the remote domain of ``to``; False (the router
        bounces ``remote-server-not-found``) when it is not ours to send."""
        from_ = jidlib.parse_or_none(stanza.getAttribute("from"))
        if from_ is None or self.stopping:
            return False
        link = self.links.get((from_.host, to.host))
        if link is None:  # the checks once per link, not per stanza
            if not self.is_local(from_.host) or self.is_local(to.host):
                return False
            if _is_address(to.host) and to.host not in self.resolver.routes:
                # an IP literal is no XMPP domain of the federation: our users
                # must not make us connect to any address they like
                return False
            link = self.link(from_.host, to.host)
            if link is None:
                self.server.counters["s2s links full"] += 1
                self.server.router.bounce(stanza, "resource-constraint",
                                          text="too many links to other servers are being "
                                               "set up")
                return True
        link.send(stanza)
        return True

    def is_local(self, domain: str | None) -> bool:
        """Is ``domain`` ours to federate for: a domain served here (users,
        hosted services) or one with a route of its own (an external or
        in-process component, which talks to other servers through us, as
        Prosody's components do)."""
        router = self.server.router
        return domain is not None and (domain in router.domains
                                       or domain in router.routes.domains())

    def local_domains(self) -> set[str]:
        router = self.server.router
        return set(router.domains) | set(router.routes.domains())

    def link(self, local: str, remote: str) -> Link | None:
        """The link for the pair, made (and started) when there is none;
        None when :data:`MAX_LINKS_IN_SETUP` are being set up already."""
        key = (local, remote)
        link = self.links.get(key)
        if link is None:
            if sum(1 for l in self.links.values() if not l.is_ready) >= MAX_LINKS_IN_SETUP:
                return None
            link = self.links[key] = Link(self, local, remote)
            link.start()
        return link

    def forget(self, link: Link) -> None:
        if self.links.get((link.local, link.remote)) is link:
            del self.links[(link.local, link.remote)]

    def verify(self, local: str, remote: str, stream_id: str, key: str) -> defer.Deferred:
        """Dialback: ask ``remote``'s authoritative server about ``key``."""
        if _is_address(remote) and remote not in self.resolver.routes:
            return defer.fail(LinkFailed(f"{remote} is an address, not a domain"))
        link = None if self.stopping else self.link(local, remote)
        if link is None:
            return defer.fail(LinkFailed("no link can be set up now", "remote-server-timeout"))
        return link.verify(stream_id, key)

    # -- idle links -------------------------------------------------------------------

    def watch_idle(self) -> None:
        """Close links quiet for ``[s2s] idle_timeout``, looking four times
        per period (on the server's clock)."""
        idle = self.config["idle_timeout"]
        if idle and self._idle is None:
            self._idle = task.LoopingCall(self._close_idle)
            self._idle.clock = self.server.clock
            self._idle.start(max(1.0, idle / 4), now=False)

    def _close_idle(self) -> None:
        now = self.server.clock.seconds()
        idle = self.config["idle_timeout"]
        for link in list(self.links.values()):
            if link.is_ready and now - link.last_active >= idle and not link.verifying:
                link.log.info("s2s {local} -> {remote}: idle for {idle} s, closed",
                              local=link.local, remote=link.remote, idle=idle)
                self.forget(link)
                link.close()
        for stream in list(self.inbound):
            if stream.authenticated and now - stream.last_active >= idle:
                stream.close()
