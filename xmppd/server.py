"""The server: storage, router, components and listeners, as one Twisted service."""

from __future__ import annotations

import collections
import os
from typing import Any, Callable, Iterable

from twisted.application import service
from twisted.internet import defer, error, reactor
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.words.xish import domish

from xmppd import control, tls
from xmppd import jid as jidlib
from xmppd.accounts import AccountError, Accounts
from xmppd.component import Component, Service
from xmppd.config import Config
from xmppd.http import bosh, conversejs, websocket
from xmppd.http.site import HTTPService
from xmppd.reclaim import Reclaimer
from xmppd.router import Router
from xmppd.storage import open_storage
from xmppd.streams.s2s.links import S2S
from xmppd.streams.sm import StreamManagement


#: Seconds a graceful stop waits for handlers' unfinished work (store writes).
DRAIN_TIMEOUT = 10


class XMPPServer(service.MultiService):
    """An xmppd server: a :class:`MultiService` of its components.

    ``listen=False`` builds everything but the network listeners, for the
    in-memory test harness and for applications that attach their own.
    """

    log = Logger()

    def __init__(self, config: Config, listen: bool = True, clock: IReactorTime | None = None):
        super().__init__()
        self.config = config
        self.listen = listen
        #: every timer of the server and its sessions runs on this clock (a
        #: ``task.Clock`` in tests)
        self.clock: IReactorTime = clock if clock is not None else reactor
        self.started_at = self.clock.seconds()
        #: things an operator wants counted: timeouts, aborted connections, …
        self.counters: collections.Counter[str] = collections.Counter()
        #: memory back after bursts of traffic (sessions report their bytes)
        self.reclaimer = Reclaimer(self.clock)
        self.router = Router(config.domains, clock=self.clock)
        server = config.server
        self.storage = open_storage(server["storage"], base_dir=server["data_dir"],
                                    synchronous=server["sqlite_synchronous"])
        self.accounts = Accounts(self.storage, server["scram_iterations"], clock=self.clock)
        self.accounts.on_delete.append(self._account_deleted)
        #: bare JIDs with administrator rights (``[server] admins``)
        self.admins: frozenset[str] = frozenset(server["admins"])
        self.components: dict[str, Component] = {}
        #: hosted service domain → the service serving it
        self.hosted: dict[str, Service] = {}
        #: the HTTP service (``[http]``) components mount their routes on;
        #: None when both its ports are 0, or nothing listens (``listen=False``).
        #: The first child: it starts before the components and stops after them.
        self.http: HTTPService | None = None
        http = config.http
        if listen and (http["port"] or http["tls_port"]):
            self.http = HTTPService(http, config.domains, clock=self.clock, counters=self.counters)
            self.http.setServiceParent(self)
            # The web client's page: not a component ([http] endpoints is its switch).
            conversejs.register(self)
            # XMPP over WebSocket (RFC 7395): client sessions like TCP's.
            websocket.register(self)
            bosh.register(self)  # XMPP over BOSH (XEP-0124, XEP-0206), the same sessions
        for name, cls in config.components.items():
            component = cls(self, config.component(name))
            component.setServiceParent(self)
            self.components[name] = component
            if isinstance(component, Service):
                self.hosted[component.domain] = component
        self.tls_context = None
        self.ports: list[Any] = []
        #: (shape, STARTTLS offered, secure, authenticated) → the serialised
        #: <stream:features/> (see xmppd.streams.negotiation)
        self.features_cache: dict[tuple, str] = {}
        #: XEP-0198 for client sessions ([c2s] stream_management), else None
        self.sm = StreamManagement(self) if config.c2s["stream_management"] else None
        #: (namespace, name) → the handler of a stream-level element a
        #: component serves (see xmppd.component.stream_element)
        self.stream_elements: dict[tuple[str, str], Callable[..., Any]] = {}
        #: federation ([s2s]): the route table's default route, once started;
        #: None without listeners (the in-memory harness, embedding without
        #: network) or with ``[s2s] enabled = false``
        self.s2s: S2S | None = S2S(self) if listen and config.s2s["enabled"] else None

    # -- life cycle ----------------------------------------------------------------

    def startService(self) -> None:
        self.storage_ready = self.storage.start()
        self.storage_ready.addErrback(self._storage_failed)
        super().startService()
        if self.listen:
            self._raise_file_limit()
            self.tls_context = tls.context_factory(*self._certificate())
            self._listen()
            if self.s2s is not None:
                self.s2s.start(*self._certificate())
            control_port = control.listen(self, reactor)
            if control_port is not None:
                self.ports.append(control_port)

    def _raise_file_limit(self) -> None:
        """Every connection is a file descriptor, and a soft limit of 1024 (a
        common default) would lock clients out long before anything else runs
        short: take the hard limit, as Prosody and ejabberd do."""
        try:
            import resource
        except ImportError:  # not on this platform
            return
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and soft < hard:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
                soft = hard
            except (ValueError, OSError):
                pass
        self.log.info("up to {limit} open files (connections and storage)", limit=soft)

    def _storage_failed(self, failure) -> None:
        self.log.failure("cannot open storage {url}", failure=failure,
                         url=self.config.server["storage"])
        if reactor.running:
            reactor.stop()

    def _certificate(self) -> tuple[str, str]:
        server = self.config.server
        if server["certificate"]:
            return server["certificate"], server["private_key"]
        filename = tls.default_certificate_path(server["data_dir"])
        if not os.path.exists(filename):
            # every domain other servers may see a stream from: users,
            # hosted services, external components
            names = list(dict.fromkeys([*self.config.domains, *sorted(self.hosted),
                                        *sorted(self.config.externals)]))
            tls.generate_self_signed(names, filename)
            self.log.warn("generated a self-signed certificate for {domains} in {file}; "
                          "clients will ask their users to accept it",
                          domains=" ".join(names), file=filename)
        return filename, ""

    def _listen(self) -> None:
        from xmppd.c2s.session import C2SFactory

        c2s = self.config.c2s
        for port, direct in ((c2s["port"], False), (c2s["direct_tls_port"], True)):
            if not port:
                continue
            factory = C2SFactory(self, direct_tls=direct)
            for interface in c2s["interfaces"]:
                try:
                    if direct:
                        listening = reactor.listenSSL(port, factory, self.tls_context,
                                                      backlog=c2s["backlog"], interface=interface)
                    else:
                        listening = reactor.listenTCP(port, factory, backlog=c2s["backlog"],
                                                      interface=interface)
                except error.CannotListenError as e:
                    raise SystemExit(f"xmppd: cannot listen on {interface} port {port}: "
                                     f"{e.socketError}") from None
                self.ports.append(listening)
                self.log.info("c2s listening on {interface} port {port}{tls}",
                              interface=interface, port=listening.getHost().port,
                              tls=" (direct TLS)" if direct else " (STARTTLS)")
        from xmppd.streams import external  # XEP-0114 ([external:<domain>])
        self.ports.extend(external.listen(self))
        if self.http is not None:
            self.http.listen(self.tls_context)

    @defer.inlineCallbacks
    def stopService(self):
        #: no session hibernates from now on (XEP-0198): they all end
        self.stopping = True
        for port in self.ports:
            yield port.stopListening()
        self.ports.clear()
        if self.http is not None:
            yield self.http.stop_listening()
        # Sessions end while the components still run, so each one's logout is
        # handled as usual (unavailable presence, last activity), and the work
        # handlers started is finished before the storage closes.
        for resources in list(self.router.sessions.values()):
            for session in list(resources.values()):
                if self.router.unbind(session):
                    self.session_closed(session)
                session.stream_error("system-shutdown", "the server is stopping")
        yield self._drain(DRAIN_TIMEOUT)
        if self.s2s is not None:
            # After the sessions' logout (their unavailable presence to remote
            # contacts still had links to go by).
            yield self.s2s.stop()
        self.reclaimer.stop()
        yield super().stopService()
        yield self.storage.stop()

    @defer.inlineCallbacks
    def _drain(self, timeout: float, work: set[defer.Deferred] | None = None):
        """Wait for the handlers' unfinished work (all of it, or ``work``),
        but not for ever: a stuck handler must not keep the process from
        stopping."""
        drained = self.router.drain() if work is None else \
            defer.DeferredList(list(work), consumeErrors=True)
        timer: defer.Deferred = defer.Deferred()
        call = self.clock.callLater(timeout, timer.callback, None)
        yield defer.DeferredList([drained, timer], fireOnOneCallback=True, consumeErrors=True)
        if call.active():
            call.cancel()
        else:
            self.log.warn("stopping with handler work unfinished after {timeout} s",
                          timeout=timeout)

    # -- what components contribute ------------------------------------------------

    def stream_features(self, session: Any) -> Iterable[domish.Element]:
        for component in self.components.values():
            yield from component.stream_features(session)

    def add_stream_element(self, key: tuple[str, str],
                           handler: Callable[..., Any]) -> Callable[[], None]:
        """Serve the stream-level element ``key`` (namespace, name) with
        ``handler(session, element)``; returns the function that stops it."""
        if key in self.stream_elements:
            raise ValueError(f"{{{key[0]}}}{key[1]} is served already")
        self.stream_elements[key] = handler

        def remove() -> None:
            if self.stream_elements.get(key) is handler:
                del self.stream_elements[key]
        return remove

    def disco_features(self) -> list[str]:
        """The server's XEP-0030 features: every component's but the hosted
        services' (those describe their own domains)."""
        return sorted({f for c in self.components.values() if not isinstance(c, Service)
                       for f in c.features})

    def disco_identities(self) -> list[tuple[str, str, str]]:
        return [i for c in self.components.values() if not isinstance(c, Service)
                for i in c.identities]

    def account_features(self) -> list[str]:
        """What an account offers (disco#info of a user's bare JID)."""
        return sorted({f for c in self.components.values() for f in c.account_features})

    def is_admin(self, jid: Any) -> bool:
        """Has ``jid`` (a JID or its text, any resource) administrator rights?
        Every component that offers something to admins only asks this."""
        if jid is None:
            return False
        parsed = jid if hasattr(jid, "userhost") else jidlib.parse_or_none(str(jid))
        return parsed is not None and parsed.userhost() in self.admins

    # -- session life, announced to components ---------------------------------------

    @defer.inlineCallbacks
    def delete_account(self, bare: str, reason: str = "the account was deleted"):
        """Delete an account the way every path must (XEP-0077 removal, the
        admin command), in Prosody's order:

        1. its credentials go: no new login, and a stream that authenticated
           before and has not bound yet is refused at bind;
        2. its sessions end (``not-authorized``); their logout handlers
           (unavailable broadcasts, last activity) submit their writes now;
        3. the handler work pending at that moment is let finish (not work
           started later, which may be waiting for this deletion itself);
        4. its rows are purged — after the logout writes, since the storage
           runs writes in the order they were submitted — and
           ``account-deleted`` tells every component to forget it.
        """
        # Taken before the first wait: the handler that called this (an
        # XEP-0077 removal) joins the pending work once it waits, and must
        # not be waited for.
        earlier = set(self.router.pending)
        if not (yield self.accounts.exists(bare)):
            raise AccountError(f"{bare} does not exist")
        yield self.accounts.revoke(bare)
        for session in list(self.router.resources(bare).values()):
            session.stream_error("not-authorized", reason)
        yield self._drain(DRAIN_TIMEOUT, earlier)
        yield self.accounts.purge(bare)

    def _account_deleted(self, bare: str) -> defer.Deferred:
        """An account is gone (XEP-0077 removal, ``xmppd deluser``, an admin):
        every component forgets what it kept of it, stored or in memory
        (``account-deleted``, its handlers get the bare JID)."""
        self.log.info("account {user} deleted", user=bare)
        return self.router.notify("account-deleted", bare)

    def session_bound(self, session: Any) -> None:
        self.router.fire("resource-bind", session)

    def session_closed(self, session: Any) -> None:
        self.router.fire("resource-unbind", session)
