"""An incoming s2s stream: a remote server sends us stanzas (RFC 6120).

The remote server opens the stream to one of our domains, upgrades it with
STARTTLS (or came with direct TLS, XEP-0368), then authenticates the domain it
sends from, by one of:

- **SASL EXTERNAL** (RFC 6120 §6, XEP-0178): offered only when its
  certificate verifies for the domain its header names;
- **dialback** (XEP-0220): ``<db:result/>`` with a key, which the
  authoritative server of that domain must confirm over a connection of our
  own (:meth:`S2S.verify <xmppd.streams.s2s.links.S2S.verify>`) — unless its
  certificate already proves the domain (XEP-0344 §2.4). With ``[s2s]
  secure_auth`` (the default) only such a certificate is accepted at all.

Further domain pairs may be authenticated over the same stream by more
``<db:result/>`` (piggybacking, XEP-0220 §2.6). A stanza is accepted only
from a pair that authenticated; any other ``from`` ends the stream with
``invalid-from`` (RFC 6120 §4.9.3.9). Stanzas are mapped to
``jabber:client`` and routed with an origin (:class:`RemoteOrigin`) whose
replies go back by routing, never on this one-way stream.

We also answer ``<db:verify/>`` here: a server asking whether a key one of
our outgoing streams gave it is ours.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, protocol
from twisted.python.failure import Failure
from twisted.words.xish import domish

from xmppd import jid as jidlib
from xmppd import ns
from xmppd.streams.s2s import dialback
from xmppd.streams.ordering import OrderedInput
from xmppd.streams.s2s.stream import S2SStream

if TYPE_CHECKING:
    from xmppd.streams.s2s.links import S2S

#: Dialback attempts that failed before the stream is closed.
MAX_DIALBACK_FAILURES = 3
#: Dialback requests of one stream waiting for their verification at once
#: (each may make a link to another server): more is a policy violation.
MAX_PENDING_DIALBACK = 10


class RemoteOrigin:
    """The origin of stanzas from a remote server, as the router sees it.

    It is no account's session (``user``/``bare``/``jid`` are None, so no
    ``pre-`` event fires for it); a reply the router hands it is routed like
    any stanza, to the remote server's domain, over our outgoing link."""

    user = jid = bare = resource = None
    available = False
    priority = 0
    presence = None
    presence_received = 0.0
    shape = ns.SERVER

    def __init__(self, stream: "InboundStream"):
        self.stream = stream

    @property
    def address(self) -> str:
        return self.stream.address

    @property
    def secure(self) -> bool:
        return self.stream.secure

    @property
    def domain(self) -> str | None:
        return self.stream.local

    def send(self, stanza: domish.Element | str) -> None:
        if isinstance(stanza, domish.Element):
            self.stream.s2s.server.router.route(stanza)

    def serialize(self, stanza: domish.Element) -> str:
        return self.stream.serialize(stanza)

    def stream_error(self, condition: str, text: str | None = None) -> None:
        self.stream.stream_error(condition, text)

    def hold(self, work: defer.Deferred) -> None:
        self.stream.hold(work)

    def drained(self) -> defer.Deferred:
        return defer.succeed(None)

    def pause_reading(self, by: Any) -> None:
        self.stream.pause_reading(by)

    def resume_reading(self, by: Any) -> None:
        self.stream.resume_reading(by)


class InboundStream(S2SStream, OrderedInput):
    """One incoming s2s connection."""

    direction = "in"

    def __init__(self, s2s: S2S, direct_tls: bool = False):
        super().__init__(s2s)
        self.secure = direct_tls
        self.direct_tls = direct_tls
        self.origin = RemoteOrigin(self)
        #: (remote domain, local domain) pairs that authenticated
        self.authenticated: set[tuple[str, str]] = set()
        #: remote domains that authenticated by SASL EXTERNAL on this stream
        self._sasl_done = False
        self._dialback_failures = 0
        self._pending_results: set[tuple[str, str]] = set()
        self._auth_timer = None
        self._rate_tokens = float(s2s.burst)
        self._rate_at = 0.0
        self._rate_call = None
        #: when it last carried a stanza (its idle time-out)
        self.last_active = 0.0

    # -- connection ----------------------------------------------------------------

    def connectionMade(self) -> None:
        super().connectionMade()
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        self._rate_at = self.last_active = self.clock.seconds()
        self._auth_timer = self.clock.callLater(self.s2s.config["auth_timeout"], self._auth_timeout)
        self.s2s.inbound.add(self)
        self.log.info("s2sin {peer} connected{tls}", peer=self.peer,
                      tls=" (direct TLS)" if self.direct_tls else "")

    def _auth_timeout(self) -> None:
        self._auth_timer = None
        if not self.authenticated and not self.closed:
            self.s2s.server.counters["s2s auth timeout"] += 1
            self.log.warn("s2sin {peer}: not authenticated within {t} s ({what})", peer=self.peer,
                          t=self.s2s.config["auth_timeout"], what=self._waiting_for())
            self.stream_error("connection-timeout", "authentication took too long")

    def _waiting_for(self) -> str:
        if self.parser is None or not self.header_sent:
            return "no stream header"
        if not self.secure:
            return "no TLS"
        return "no authentication"

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self._auth_timer is not None and self._auth_timer.active():
            self._auth_timer.cancel()
        if self._rate_call is not None and self._rate_call.active():
            self._rate_call.cancel()
        self._inbox = None
        self.s2s.inbound.discard(self)
        self.log.info("s2sin {peer} disconnected ({pairs}): {reason}", peer=self.peer,
                      pairs=", ".join(f"{r}->{l}" for r, l in sorted(self.authenticated))
                      or "unauthenticated", reason=reason.getErrorMessage() if reason else "")
        super().connectionLost(reason)

    # -- the stream header ---------------------------------------------------------

    def streamStarted(self, root: domish.Element) -> None:
        to, from_ = root.getAttribute("to"), root.getAttribute("from")
        self.remote = _domain_or_none(from_)
        local = _domain_or_none(to)
        if local is None or not self.s2s.is_local(local):
            self.local = None
            # RFC 6120 §4.7.1: our header has a 'from'; the name asked (as Prosody)
            self.write_header(local or sorted(self.s2s.server.router.hosts)[0],
                              from_ and self.remote, id_=True)
            self.log.info("s2sin {peer}: stream to {to}, a domain not served here",
                          peer=self.peer, to=to)
            self.stream_error("host-unknown", f"{to} is not served here")
            return
        self.local = local
        self.domain = local
        self.write_header(local, self.remote, id_=True)
        config = self.s2s.config
        if self.secure and config["secure_auth"]:
            verdict = self.s2s.tls.verify(self.transport, self.remote)
            if not verdict.trusted:
                # Nothing it could do here would be accepted: say so now, as
                # Prosody does (the peer's own log then names the reason).
                self.s2s.server.counters["s2s auth failed"] += 1
                self.log.warn("s2sin {peer}: the certificate of {remote} is not trusted: "
                              "{why} ([s2s] secure_auth)", peer=self.peer,
                              remote=self.remote or "?", why=verdict.reason)
                self.stream_error("not-authorized", "Your server's certificate is invalid, "
                                  f"expired, or not trusted by {local}")
                return
        if root.getAttribute("version") != "1.0":
            # A pre-RFC 3920 server: no features, no TLS, dialback only.
            if self.s2s.config["require_encryption"] and not self.secure:
                self.stream_error("policy-violation", "encryption is required")
            return
        self._send_features()

    def _send_features(self) -> None:
        config = self.s2s.config
        features = domish.Element((ns.STREAMS, "features"))
        if not self.secure:
            tls = features.addElement((ns.TLS, "starttls"))
            if config["require_encryption"]:
                tls.addElement("required")
        if self.secure or not config["require_encryption"]:
            if not self._sasl_done and self.remote is not None \
                    and self.s2s.tls.verify(self.transport, self.remote).trusted:
                mechanisms = features.addElement((ns.SASL, "mechanisms"))
                mechanisms.addElement("mechanism", content="EXTERNAL")
            if config["dialback"]:
                features.addElement((ns.DIALBACK_FEATURE, "dialback")).addElement("errors")
        self.send(features)

    # -- elements ------------------------------------------------------------------

    def stanzaReceived(self, element: domish.Element) -> None:
        self.element_received(element)

    def streamEnded(self) -> None:
        self.stream_closed()

    def _process(self, element: domish.Element) -> None:
        uri = element.uri
        if self.is_stanza(element):
            self._stanza(element)
        elif self.peer_error(element):
            pass
        elif uri == ns.DIALBACK and element.name in ("result", "verify"):
            if element.name == "result":
                self._db_result(element)
            else:
                self._db_verify(element)
        elif uri == ns.TLS and element.name == "starttls":
            self._starttls()
        elif uri == ns.SASL and element.name == "auth":
            self._sasl(element)
        else:
            self.stream_error("unsupported-stanza-type",
                              f"{{{uri}}}{element.name} is not expected here")

    def _starttls(self) -> None:
        if self.secure or self.local is None:
            self.transport.write(f"<failure xmlns='{ns.TLS}'/>".encode())
            self.close()
            return
        self.transport.write(f"<proceed xmlns='{ns.TLS}'/>".encode())
        self.transport.startTLS(self.s2s.tls.server_options)
        self.secure = True
        self.reset()

    # -- SASL EXTERNAL ---------------------------------------------------------------

    def _sasl(self, auth: domish.Element) -> None:
        def failure(condition: str, why: str) -> None:
            self.s2s.server.counters["s2s auth failed"] += 1
            self.log.warn("s2sin {peer}: SASL EXTERNAL for {remote} refused: {why}",
                          peer=self.peer, remote=self.remote, why=why)
            self.transport.write(f"<failure xmlns='{ns.SASL}'><{condition}/></failure>".encode())

        if not self.secure:
            failure("encryption-required", "SASL before TLS")
            return
        if auth.getAttribute("mechanism") != "EXTERNAL" or self._sasl_done:
            failure("invalid-mechanism", "not offered")
            return
        text = str(auth).strip()
        if not text:
            # RFC 6120 §6.4.2: an empty initial response is "="; none at all
            # would need a challenge round EXTERNAL does not have (Prosody too)
            failure("malformed-request", "no initial response")
            return
        authzid = self.remote
        if text and text != "=":
            try:
                authzid = base64.b64decode(text, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                failure("incorrect-encoding", "bad base64")
                return
        if authzid is None or authzid != self.remote:
            failure("invalid-authzid", f"authzid {authzid!r} is not the stream's {self.remote!r}")
            return
        if self.s2s.is_local(authzid):
            failure("not-authorized", f"{authzid} is a domain served here")
            return
        verdict = self.s2s.tls.verify(self.transport, authzid)
        if not verdict.trusted:
            failure("not-authorized", verdict.reason)
            return
        self.transport.write(f"<success xmlns='{ns.SASL}'/>".encode())
        self._sasl_done = True
        self._authenticated(authzid, self.local, "SASL EXTERNAL")
        self.reset()  # RFC 6120 §6.4.6: a new stream follows

    # -- dialback --------------------------------------------------------------------

    def _db_result(self, result: domish.Element) -> None:
        config = self.s2s.config
        remote = _domain_or_none(result.getAttribute("from"))
        local = _domain_or_none(result.getAttribute("to"))
        key = str(result).strip()
        if remote is None or local is None:
            self.stream_error("improper-addressing", "db:result needs from and to")
            return
        if not config["dialback"]:
            self.send(dialback.element("result", local, remote, type_="error",
                                       error="not-acceptable"))
            return
        if config["require_encryption"] and not self.secure:
            self.stream_error("policy-violation", "encryption is required before dialback")
            return
        if not self.s2s.is_local(local):
            self.send(dialback.element("result", local, remote, type_="error",
                                       error="item-not-found"))
            return
        if self.s2s.is_local(remote):
            self.log.warn("s2sin {peer}: dialback as {remote}, a domain served here",
                          peer=self.peer, remote=remote)
            self.stream_error("undefined-condition",
                              "Attempt to authenticate as a host we serve")
            return
        if (remote, local) in self.authenticated:
            self.send(dialback.element("result", local, remote, type_="valid"))
            return
        if (remote, local) in self._pending_results:
            return
        if len(self._pending_results) >= MAX_PENDING_DIALBACK:
            self.log.warn("s2sin {peer}: more than {n} dialback requests at once",
                          peer=self.peer, n=MAX_PENDING_DIALBACK)
            self.stream_error("policy-violation", "too many dialback requests at once")
            return
        verdict = self.s2s.tls.verify(self.transport, remote)
        if verdict.trusted:
            # XEP-0344 §2.4: the certificate already proves the domain.
            self._dialback_done(True, remote, local, "dialback, certificate")
            return
        if config["secure_auth"]:
            self.s2s.server.counters["s2s auth failed"] += 1
            self.log.warn("s2sin {peer}: dialback for {remote} refused: {why} "
                          "([s2s] secure_auth)", peer=self.peer, remote=remote,
                          why=verdict.reason)
            self.send(dialback.element("result", local, remote, type_="error",
                                       error="not-authorized"))
            self._failed_attempt()
            return
        self._pending_results.add((remote, local))
        d = self.s2s.verify(local, remote, self.stream_id, key)
        d.addCallbacks(lambda valid: self._dialback_done(valid, remote, local, "dialback"),
                       lambda f: self._dialback_error(f, remote, local))

    def _dialback_done(self, valid: bool, remote: str, local: str, how: str) -> None:
        self._pending_results.discard((remote, local))
        if self.closed:
            return
        self.send(dialback.element("result", local, remote, type_="valid" if valid else "invalid"))
        if valid:
            self._authenticated(remote, local, how)
        else:
            self.s2s.server.counters["s2s auth failed"] += 1
            self.log.warn("s2sin {peer}: dialback for {remote} failed: the key is not "
                          "{remote}'s", peer=self.peer, remote=remote)
            self._failed_attempt()

    def _dialback_error(self, failure: Failure, remote: str, local: str) -> None:
        self._pending_results.discard((remote, local))
        self.log.warn("s2sin {peer}: cannot verify dialback for {remote}: {why}",
                      peer=self.peer, remote=remote, why=failure.getErrorMessage())
        if not self.closed:
            condition = getattr(failure.value, "condition", "remote-server-not-found")
            self.send(dialback.element("result", local, remote, type_="error",
                                       error=condition))
            self._failed_attempt()

    def _failed_attempt(self) -> None:
        self._dialback_failures += 1
        if self._dialback_failures >= MAX_DIALBACK_FAILURES:
            self.stream_error("not-authorized", "dialback failed")

    def _db_verify(self, verify: domish.Element) -> None:
        """We are the authoritative server: is the key ours?"""
        if verify.getAttribute("type") is not None:
            return  # an answer, on a stream that asked nothing: ignored (as Prosody)
        asker = _domain_or_none(verify.getAttribute("from"))
        ours = _domain_or_none(verify.getAttribute("to"))
        stream_id = verify.getAttribute("id")
        if not asker or not stream_id or ours is None:
            self.stream_error("improper-addressing", "db:verify needs from, to and id")
            return
        if not self.s2s.is_local(ours):
            self.send(dialback.element("verify", ours, asker, id_=stream_id, type_="error",
                                       error="item-not-found"))
            return
        valid = self.s2s.keys.check(str(verify), asker, ours, stream_id)
        if not valid:
            self.log.warn("s2sin {peer}: db:verify from {asker} of a key that is not ours "
                          "(for {ours})", peer=self.peer, asker=asker, ours=ours)
        self.send(dialback.element("verify", ours, asker, id_=stream_id,
                                   type_="valid" if valid else "invalid"))

    def _authenticated(self, remote: str, local: str, how: str) -> None:
        self.authenticated.add((remote, local))
        if self._auth_timer is not None and self._auth_timer.active():
            self._auth_timer.cancel()
        self._auth_timer = None
        self.log.info("s2sin {peer}: {remote} authenticated to {local} ({how}{tls})",
                      peer=self.peer, remote=remote, local=local, how=how,
                      tls=", TLS" if self.secure else ", no TLS")

    # -- stanzas -----------------------------------------------------------------------

    def _stanza(self, stanza: domish.Element) -> None:
        from_ = jidlib.parse_or_none(stanza.getAttribute("from"))
        to = jidlib.parse_or_none(stanza.getAttribute("to"))
        if from_ is None or to is None:
            self.stream_error("improper-addressing", "a stanza between servers needs "
                              "valid from and to addresses")
            return
        if not self.authenticated:
            # RFC 6120 §4.9.3.12: nothing may be sent before authentication
            self.stream_error("not-authorized", "the stream has not authenticated")
            return
        if (from_.host, to.host) not in self.authenticated:
            if not any(r == from_.host for r, _ in self.authenticated):
                self.s2s.server.counters["s2s invalid-from"] += 1
                self.log.warn("s2sin {peer}: stanza from {host}, which did not authenticate "
                              "on this stream", peer=self.peer, host=from_.host)
                self.stream_error("invalid-from", f"{from_.host} did not authenticate")
            else:
                self.stream_error("host-unknown", f"{to.host} was not authenticated to")
            return
        if not self._rate_ok():
            return
        router = self.s2s.server.router
        previous, router.current = router.current, self.origin
        try:
            router.route(self.inside(stanza), self.origin)
        finally:
            router.current = previous
        self.last_active = self.clock.seconds()

    def _rate_ok(self) -> bool:
        """Per-link stanza rate (``[s2s] max_stanza_rate``): a token bucket;
        when it is empty, reading pauses until it refills."""
        rate = self.s2s.config["max_stanza_rate"]
        if not rate:
            return True
        now = self.clock.seconds()
        self._rate_tokens = min(float(self.s2s.burst),
                                self._rate_tokens + (now - self._rate_at) * rate)
        self._rate_at = now
        self._rate_tokens -= 1
        if self._rate_tokens < 0 and self._rate_call is None:
            self.pause_reading("rate")
            self._rate_call = self.clock.callLater(-self._rate_tokens / rate, self._rate_refilled)
        return True

    def _rate_refilled(self) -> None:
        self._rate_call = None
        self.resume_reading("rate")

    # -- in-order processing, backpressure: OrderedInput's ----------------------------

    def _stop_reading(self) -> None:
        self.transport.pauseProducing()

    def _start_reading(self) -> None:
        self.transport.resumeProducing()


def _domain_or_none(text: str | None) -> str | None:
    """A domain as stream headers and dialback name it (no user, no resource)."""
    parsed = jidlib.parse_or_none(text) if text else None
    if parsed is None or parsed.user is not None or parsed.resource is not None:
        return None
    return parsed.host


class InboundFactory(protocol.Factory):
    noisy = False

    def __init__(self, s2s: S2S, direct_tls: bool = False):
        self.s2s = s2s
        self.direct_tls = direct_tls

    def buildProtocol(self, addr: Any) -> InboundStream:
        return InboundStream(self.s2s, self.direct_tls)
