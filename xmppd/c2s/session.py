"""A client session (RFC 6120): stream header, STARTTLS, SASL, binding, then stanzas.

The session knows its JID, its state and what it negotiated, and nothing about
extensions: once bound, every stanza is checked (kind, ``from``), stamped with
the session's full JID, and handed to the router. Before authentication only
what RFC 6120 allows passes (STARTTLS, SASL, and iqs a component serves to
unauthenticated streams, such as XEP-0077 registration, as ``preauth`` events).
"""

from __future__ import annotations

import base64
import collections
import uuid
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, protocol
from twisted.python.failure import Failure
from twisted.words.xish import domish

from xmppd import jid as jidlib
from xmppd import ns
from xmppd.c2s import sasl
from xmppd.router.events import iq_result, stanza_error
from xmppd.xml.stream import XMPPStream

if TYPE_CHECKING:
    from xmppd.server import XMPPServer

#: SASL failures allowed on one stream before it is closed.
MAX_AUTH_FAILURES = 5

#: What a login counts for in the server's Reclaimer, beyond its bytes: a TLS
#: handshake, SCRAM and binding leave tens of KiB of short-lived cycles for a
#: few KiB on the wire. Counted, a burst of logins has its garbage collected
#: every hundred or so logins instead of piling up (measured: 10 MiB left over
#: after 1 000 logins, a quarter of the idle connections' memory).
LOGIN_WEIGHT = 64 * 1024

#: Seconds of silence after which a bound session's parser is parked.
PARK_AFTER = 1.0

#: Stanzas read but not yet processed (waiting behind a handler's storage
#: work) beyond which the session stops reading from the client.
MAX_INBOX = 64

#: Fixed replies of the negotiation, written as text (base64 is XML-safe).
_PROCEED = f"<proceed xmlns='{ns.TLS}'/>"

#: Markers in the inbox for what is not a stanza: the peer's closing tag.
_END = object()


class C2SSession(XMPPStream):
    """One client connection, from the first byte to the last."""

    def __init__(self, server: XMPPServer, direct_tls: bool = False):
        c2s = server.config.c2s
        super().__init__(server.config.server["max_stanza_size"], clock=server.clock,
                         max_output=c2s["max_output_buffer"], send_timeout=c2s["send_timeout"],
                         close_timeout=c2s["close_timeout"], traffic=server.reclaimer.account)
        self.server = server
        self.router = server.router
        self.secure = direct_tls
        self.direct_tls = direct_tls
        self.mechanism = ""
        self.user: str | None = None  # authenticated bare JID
        self.authenticated_at = 0.0
        self.jid = None  # full JID once bound
        self.bare: str | None = None
        self.resource: str | None = None
        self.priority = 0
        self.available = False
        self.presence: domish.Element | None = None
        self.presence_received = 0.0
        self.sasl = None
        self.sasl_failures = 0
        self.sasl_steps = 0
        #: the connection deadline before bind, the idle check after
        self._timeout = None
        self._last_read = 0.0
        self._pinged = 0.0  # when the last whitespace keep-alive went out
        self._park_pending = False  # the parser was busy when it was to be parked
        #: stanzas waiting for an earlier one's handler work (in-order processing)
        self._inbox: collections.deque | None = None
        self._holds = 0
        self._running = False
        #: who asked us to stop reading from the client (see pause_reading);
        #: made when first needed, as an idle connection should cost little
        self._pausers: set[Any] | None = None
        #: sessions we stopped reading from because they fill our backlog
        self._throttled: set[Any] | None = None

    # -- connection ----------------------------------------------------------------

    def connectionMade(self) -> None:
        super().connectionMade()
        # Stanzas are small and each is written whole: Nagle's algorithm would
        # only hold a reply back until the client's delayed ACK (up to 40 ms).
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        self.log.info("c2s {peer} connected{tls}", peer=self.peer,
                      tls=" (direct TLS)" if self.secure else "")
        # One deadline covers every stage before bind: the TLS handshake, the
        # stream header, SASL and binding (a silent socket, a stalled
        # handshake and an endless SASL exchange all end here).
        self._timeout = self.clock.callLater(self.server.config.c2s["auth_timeout"],
                                             self._timed_out)

    def _timed_out(self) -> None:
        self._timeout = None
        if self.jid is None and not self.closed:
            self.server.counters["c2s timed out before bind"] += 1
            self.log.info("c2s {peer}: not bound within {timeout} s ({stage}): closing",
                          peer=self.peer, timeout=self.server.config.c2s["auth_timeout"],
                          stage=self._stage())
            self.stream_error("connection-timeout", "authenticate and bind sooner")

    def _stage(self) -> str:
        if self.user is not None:
            return "authenticated, not bound"
        if self.sasl is not None:
            return "in SASL"
        if self.header_sent:
            return "stream open"
        if self.direct_tls and not self._last_read:
            return "TLS handshake, or no stream header"
        if self.secure and not self.direct_tls:
            return "STARTTLS handshake, or no stream header after it"
        return "no stream header"

    def _idle_check(self) -> None:
        """After bind, one timer does two things.

        - A second after the client last sent anything, the stream's parser is
          parked (:meth:`XMPPStream.park`: an idle connection then costs 11 KiB
          less; the next read wakes it).
        - XEP-0478 idle-seconds, as Prosody does it: after that long without a
          byte from the client, a whitespace keep-alive; a dead connection then
          fails at the TCP level (and the send timeout ends a stuck one).
        """
        self._timeout = None
        if self.closed:
            return
        now = self.clock.seconds()
        idle = self.server.config.c2s["idle_timeout"]
        if self.parser is not None and now - self._last_read >= PARK_AFTER:
            # Parked now, or not at rest (a stanza half-read): then not tried
            # again each second, but after the client's next read.
            self._park_pending = not self.park()
        if now - max(self._last_read, self._pinged) >= idle:
            self.transport.write(b" ")
            self._pinged = now
        due = max(self._last_read, self._pinged) + idle
        if self.parser is not None and not self._park_pending:  # busy: look again soon
            due = min(due, max(self._last_read, now) + PARK_AFTER)
        self._timeout = self.clock.callLater(max(0.0, due - now), self._idle_check)

    def dataReceived(self, data: bytes) -> None:
        self._last_read = self.clock.seconds()
        if (self.parser is None or self._park_pending) and self._timeout is not None \
                and self._timeout.active():
            # Parked (this read wakes the parser), or it could not be parked:
            # try again after the next quiet second, not at the idle deadline.
            self._park_pending = False
            self._timeout.reset(PARK_AFTER)
        super().dataReceived(data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None
        if self.jid is not None and not self.closed:
            self.log.info("c2s {peer} disconnected ({who}): {reason}", peer=self.peer,
                          who=self.jid.full(), reason=reason.getErrorMessage() if reason else "")
        elif not self.closed:
            self.log.info("c2s {peer} disconnected ({who}): {reason}", peer=self.peer,
                          who=self.user or "unauthenticated",
                          reason=reason.getErrorMessage() if reason else "")
        # Unbound before anything can be sent to it as closed: a stanza for
        # this session from now on finds the user's other resources, or storage.
        self._unbind()
        super().connectionLost(reason)
        self._release_throttled()
        self._drop_inbox()

    def close(self) -> None:
        """Unbind at once (RFC 6120 §4.4: no stanza is delivered to a closing
        stream; the user's other resources or offline storage get them), then
        close the stream."""
        if self.closed:
            return
        if self.jid is not None:
            self.log.info("c2s {peer} closing ({who})", peer=self.peer, who=self.jid.full())
        self._unbind()
        super().close()
        self._release_throttled()
        self._drop_inbox()

    def _unbind(self) -> None:
        if self.jid is not None and self.router.unbind(self):
            self.server.session_closed(self)

    def aborted(self) -> None:
        self.server.counters["c2s aborted after close"] += 1

    # -- in-order processing (RFC 6120 §10.1) --------------------------------------

    def hold(self, work: defer.Deferred) -> None:
        """Process this session's next stanza only once ``work`` (the storage
        work of a handler of an earlier one) has finished, so a later stanza
        never sees older state than an earlier one wrote. The router calls
        this for every handler result that has not fired yet."""
        self._holds += 1
        if self._inbox is None:
            self._inbox = collections.deque()
        work.addBoth(self._released)

    def _released(self, result: Any) -> Any:
        self._holds -= 1
        if not self._holds:
            self._run_inbox()
        return result

    def stanzaReceived(self, element: domish.Element) -> None:
        if self._inbox is not None:
            self._inbox.append(element)
            if len(self._inbox) >= MAX_INBOX:
                self.pause_reading("inbox")
            return
        self._process(element)

    def streamEnded(self) -> None:
        if self._inbox is not None:
            self._inbox.append(_END)
        else:
            self.close()

    def _process(self, element: domish.Element) -> None:
        router = self.router
        previous, router.current = router.current, self  # (nested: a drain ran our inbox)
        try:
            if self.jid is not None:
                self._bound(element)
            elif self.user is not None:
                self._authenticated(element)
            else:
                self._unauthenticated(element)
        finally:
            router.current = previous

    def _run_inbox(self) -> None:
        """Process waiting stanzas in order until one holds the session again
        (or our own output is congested: a client that does not read its
        answers gets no more of them until it does)."""
        if self._running or self._inbox is None:
            return
        self._running = True
        try:
            inbox = self._inbox
            while inbox and not self._holds and not self._congested and not self.closed:
                element = inbox.popleft()
                if element is _END:
                    self.close()
                    break
                self._process(element)
            if not self._holds and not self.closed and not inbox:
                self._inbox = None
                self.resume_reading("inbox")
        finally:
            self._running = False

    def _drop_inbox(self) -> None:
        """The stream is over: stanzas it sent that wait unprocessed are the
        client's; messages among them still go where they were sent."""
        inbox, self._inbox = self._inbox, None
        for element in inbox or ():
            if element is not _END and self.jid is not None and element.name == "message" \
                    and element.uri == ns.CLIENT:
                element["from"] = self.jid.full()
                self.router.route(element, self)

    # -- backpressure ------------------------------------------------------------

    def pause_reading(self, by: Any) -> None:
        """Stop reading from the client until every ``by`` that asked resumes."""
        if self.closed:
            return
        if not self._pausers:
            self.transport.pauseProducing()
            self._pausers = set()
        self._pausers.add(by)

    def resume_reading(self, by: Any) -> None:
        if not self._pausers or by not in self._pausers:
            return
        self._pausers.discard(by)
        if not self._pausers and not self.closed:
            self.transport.resumeProducing()

    def congested(self) -> None:
        """Our client reads slower than stanzas arrive for it: stop reading
        from it (it is not reading its answers) and from the session whose
        stanza is being handled now (it is the one filling our buffer), until
        the backlog is written."""
        self.pause_reading(self)
        origin = self.router.current
        if origin is not None and origin is not self and hasattr(origin, "pause_reading"):
            origin.pause_reading(self)
            if self._throttled is None:
                self._throttled = set()
            self._throttled.add(origin)

    def decongested(self) -> None:
        self.resume_reading(self)
        self._release_throttled()
        if self._inbox is not None and not self._running:
            self._run_inbox()

    def _release_throttled(self) -> None:
        throttled, self._throttled = self._throttled, None
        for origin in throttled or ():
            origin.resume_reading(self)

    def output_overflow(self) -> None:
        self.server.counters["c2s output overflow"] += 1
        super().output_overflow()

    def output_stalled(self) -> None:
        self.server.counters["c2s output stalled"] += 1
        super().output_stalled()

    def undelivered(self, kind: str, stanza: domish.Element | bytes) -> None:
        """A stanza for this session that it will never get: the router finds
        it another way (the user's other resources, offline storage, a bounce).
        Only ever called on the way out, so the session unbinds first (else
        routing would find it again)."""
        self._unbind()
        self.router.undelivered(kind, stanza, self)

    def stream_error(self, condition: str, text: str | None = None) -> None:
        if not self.closed:
            self._unbind()  # before the backlog is re-routed
        super().stream_error(condition, text)

    # -- stream ------------------------------------------------------------------

    def streamStarted(self, root: domish.Element) -> None:
        to = root.getAttribute("to")
        if self.domain is None:
            if to is None:
                self.stream_error("host-unknown", "the stream header needs a 'to'")
                return
            domain = to.lower().rstrip(".")
            if domain not in self.router.hosts:
                self.stream_error("host-unknown", f"this server does not serve {to}")
                return
            self.domain = domain
        elif to is not None and to.lower().rstrip(".") != self.domain:
            self.stream_error("host-unknown", "the domain cannot change on restart")
            return
        if not _supported_version(root.getAttribute("version")):
            self.stream_error("unsupported-version", "XMPP 1.0 streams only")
            return
        self.send_header(self.domain)
        # What is offered depends only on the configuration and on whether the
        # stream is secure and authenticated (the contract of
        # Component.stream_features), so each of the few variants is
        # serialised once per server, not once per login.
        key = (self.secure, self.user is not None)
        cache = self.server.features_cache
        text = cache.get(key)
        if text is None:
            text = cache[key] = self.serialize(self._features())
        self.send(text)

    def _features(self) -> domish.Element:
        features = domish.Element((ns.STREAMS, "features"))
        c2s = self.server.config.c2s
        if self.user is None:
            if not self.secure:
                starttls = features.addElement((ns.TLS, "starttls"))
                if c2s["require_encryption"]:
                    starttls.addElement("required")
                    return features
            mechanisms = features.addElement((ns.SASL, "mechanisms"))
            for name in self._mechanisms():
                mechanisms.addElement("mechanism", content=name)
        else:
            features.addElement((ns.BIND, "bind"))
            features.addElement((ns.SESSION, "session")).addElement("optional")
        # XEP-0478, as Prosody 13 announces it: the stanza size we accept and
        # how long we let a stream stay silent before checking on it.
        limits = features.addElement((ns.STREAM_LIMITS, "limits"))
        limits.addElement("max-bytes", content=str(self.max_stanza_size))
        limits.addElement("idle-seconds", content=str(c2s["idle_timeout"]))
        for element in self.server.stream_features(self):
            features.addChild(element)
        return features

    def _mechanisms(self) -> list[str]:
        names = ["SCRAM-SHA-256", "SCRAM-SHA-1"]
        if self.secure and self.server.config.c2s["allow_plain"]:
            names.append("PLAIN")
        return names

    # -- before authentication ---------------------------------------------------

    def _unauthenticated(self, element: domish.Element) -> None:
        uri, name = element.uri, element.name
        if uri == ns.TLS and name == "starttls":
            self._starttls()
        elif uri == ns.SASL:
            if not self.secure and self.server.config.c2s["require_encryption"]:
                self._sasl_failure("encryption-required")
            elif name == "auth":
                self.sasl_steps = 0
                self._sasl_start(element)
            elif name == "response" and self.sasl is not None:
                self._sasl_step(base64_payload(element))
            elif name == "abort":
                self.sasl = None
                self._sasl_failure("aborted")
            else:
                self.stream_error("unsupported-stanza-type", f"unexpected SASL element <{name}/>")
        elif uri == ns.CLIENT and name == "iq":
            self._preauth_iq(element)
        elif uri == ns.CLIENT and name in ("message", "presence"):
            self.stream_error("not-authorized", "authenticate first")
        else:
            self.stream_error("unsupported-stanza-type", f"unexpected <{name}/> in {uri}")

    def _starttls(self) -> None:
        if self.secure:
            self.send(domish.Element((ns.TLS, "failure")))
            self.close()
            return
        self.send(_PROCEED)
        self.transport.startTLS(self.server.tls_context)
        self.secure = True
        self.reset()

    def _preauth_iq(self, element: domish.Element) -> None:
        element.attributes.pop("from", None)
        if not self.router.route_preauth(element, self):
            self.stream_error("not-authorized", "authenticate first")

    def _sasl_start(self, element: domish.Element) -> None:
        mechanism = element.getAttribute("mechanism", "")
        if mechanism not in self._mechanisms():
            self._sasl_failure("invalid-mechanism")
            return
        accounts = self.server.accounts
        if mechanism == "PLAIN":
            self.sasl = sasl.PlainMechanism(accounts, self.domain)
        else:
            self.sasl = sasl.ScramMechanism(mechanism, accounts, self.domain)
        text = str(element).strip()
        self._sasl_step(base64_payload(element) if text else None)

    def _sasl_step(self, data: bytes | None | bool) -> None:
        if data is False:
            self.sasl = None
            self._sasl_failure("incorrect-encoding")
            return
        mechanism = self.sasl
        self.sasl_steps += 1
        if self.sasl_steps > self.server.config.c2s["max_sasl_steps"]:
            # SCRAM needs two steps, PLAIN one: an exchange that goes on is
            # either broken or someone keeping the server busy.
            self.sasl = None
            self._sasl_failure("malformed-request", "too many SASL steps")
            return
        d = mechanism.step(data)
        d.addCallback(self._sasl_answer, mechanism)
        d.addErrback(self._sasl_error)

    def _sasl_answer(self, step: sasl.Step, mechanism) -> None:
        if self.closed or self.sasl is not mechanism:
            return
        if step.kind == "challenge":
            payload = base64.b64encode(step.data).decode() if step.data else "="
            self.send(f"<challenge xmlns='{ns.SASL}'>{payload}</challenge>")
        elif step.kind == "success":
            self.sasl = None
            self.user = step.user
            self.authenticated_at = self.clock.seconds()
            self.mechanism = getattr(mechanism, "name", "PLAIN")
            payload = base64.b64encode(step.data).decode() if step.data else ""
            success = f"<success xmlns='{ns.SASL}'>{payload}</success>"
            self.send(success)
            self.reset()
        else:
            self.sasl = None
            self.log.info("c2s {peer} failed to authenticate as {user}: {condition}",
                          peer=self.peer, user=getattr(mechanism, "user", None) or "?",
                          condition=step.condition)
            self._sasl_failure(step.condition, step.text)

    def _sasl_error(self, failure: Failure) -> None:
        self.log.failure("SASL failed on {peer}", failure=failure, peer=self.peer)
        self.sasl = None
        self._sasl_failure("temporary-auth-failure")

    def _sasl_failure(self, condition: str, text: str | None = None) -> None:
        element = domish.Element((ns.SASL, "failure"))
        element.addElement(condition)
        if text:
            element.addElement("text", content=text)
        self.send(element)
        self.sasl_failures += 1
        if self.sasl_failures >= MAX_AUTH_FAILURES:
            self.stream_error("policy-violation", "too many failed authentication attempts")

    # -- authenticated, not bound ------------------------------------------------

    def _authenticated(self, element: domish.Element) -> None:
        if element.uri != ns.CLIENT or element.name != "iq":
            self.stream_error("not-authorized", "bind a resource first")
            return
        payload = next(element.elements(), None)
        if element.getAttribute("type") == "set" and payload is not None \
                and payload.uri == ns.BIND and payload.name == "bind":
            self._bind(element, payload)
        elif payload is not None and payload.uri == ns.SESSION:
            self.send(iq_result(element))
        else:
            self.send(stanza_error(element, "not-authorized"))

    def _bind(self, iq: domish.Element, bind: domish.Element) -> None:
        requested = next((str(c).strip() for c in bind.elements(ns.BIND, "resource")), "")
        resource = requested or uuid.uuid4().hex[:12]
        try:
            full = jidlib.parse(f"{self.user}/{resource}")
        except jidlib.InvalidJID:
            self.send(stanza_error(iq, "bad-request", text="invalid resource"))
            return
        if self.server.accounts.revoked_since(self.user, self.authenticated_at):
            self.stream_error("not-authorized", "the account was deleted")
            return
        limit = self.server.config.c2s["max_resources"]
        resources = self.router.resources(full.userhost())
        if limit and full.resource not in resources and len(resources) >= limit:
            # RFC 6120 §7.6.2.1: the account has reached its limit of
            # simultaneously connected resources.
            self.log.info("c2s {peer}: {user} already has {count} sessions: bind refused",
                          peer=self.peer, user=self.user, count=len(resources))
            self.send(stanza_error(iq, "resource-constraint", type="wait",
                                   text=f"at most {limit} sessions per account"))
            return
        self.jid, self.bare, self.resource = full, full.userhost(), full.resource
        old = self.router.bind(self)
        if old is not None:
            self.log.info("c2s {jid}: replacing the older session from {peer}",
                          jid=full.full(), peer=getattr(old, "peer", "?"))
            # RFC 6120 §7.7.2.2 ends the old session: its unavailable presence
            # (RFC 6121 §4.5.2) and the rest of its clean-up happen now, since
            # its later unbind finds the new session in its place.
            self.server.session_closed(old)
            old.stream_error("conflict", "replaced by a new connection")
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = self.clock.callLater(PARK_AFTER, self._idle_check)
        self.traffic(LOGIN_WEIGHT)
        # One line per login, as Prosody writes: who, how, over what.
        self.log.info("c2s {peer} bound {jid} ({mechanism}, {tls})", peer=self.peer, jid=full.full(),
                      mechanism=self.mechanism, tls=self._tls_kind())
        result = iq_result(iq)
        result.attributes.pop("to", None)
        result.addElement((ns.BIND, "bind")).addElement("jid", content=full.full())
        self.send(result)
        self.server.session_bound(self)

    def _tls_kind(self) -> str:
        if not self.secure:
            return "no TLS"
        return "direct TLS" if self.direct_tls else "STARTTLS"

    # -- bound: stanzas ------------------------------------------------------------

    def _bound(self, element: domish.Element) -> None:
        if element.uri != ns.CLIENT or element.name not in ns.STANZA_KINDS:
            self.stream_error("unsupported-stanza-type", f"<{element.name}/> is not a stanza")
            return
        sender = element.getAttribute("from")
        full = self.jid.full()
        if sender is not None and sender != full and sender != self.bare:
            parsed = jidlib.parse_or_none(sender)
            if parsed is None or (parsed.full() != full and parsed.full() != self.bare):
                self.stream_error("invalid-from", f"you are {full}")
                return
        element["from"] = full
        if element.name == "iq":
            stype = element.getAttribute("type")
            if stype not in ("get", "set", "result", "error") or not element.getAttribute("id"):
                if stype != "error":
                    self.send(stanza_error(element, "bad-request",
                                           text="an iq needs an id and a valid type"))
                return
            if stype == "set" and element.getAttribute("to") is None:
                payload = next(element.elements(), None)
                if payload is not None and payload.uri == ns.SESSION:
                    self.send(iq_result(element))  # RFC 3921 session: a no-op now
                    return
        self.router.route(element, self)


def _supported_version(version: str | None) -> bool:
    """RFC 6120 §4.7.5: a stream of major version 1 or higher is answered with
    our own 1.0 (the highest both sides support); no version means pre-XMPP
    0.9, which we do not speak."""
    if not version:
        return False
    major, _, minor = version.partition(".")
    return major.isdigit() and minor.isdigit() and int(major) >= 1


def base64_payload(element: domish.Element) -> bytes | None | bool:
    """The decoded SASL payload of ``element``: None if empty, False if not base64."""
    text = str(element).strip()
    if not text:
        return None
    data = sasl.b64decode(text)
    return False if data is None else data


class C2SFactory(protocol.Factory):
    """Builds a :class:`C2SSession` per client connection."""

    noisy = False  # the session logs its own connection events

    def __init__(self, server: XMPPServer, direct_tls: bool = False):
        self.server = server
        self.direct_tls = direct_tls

    def buildProtocol(self, addr) -> C2SSession:
        session = C2SSession(self.server, self.direct_tls)
        session.factory = self
        return session
