"""A client session (RFC 6120): stream header, STARTTLS, SASL, binding, then stanzas.

The session knows its JID, its state and what it negotiated, and nothing about
extensions: once bound, every stanza is checked (kind, ``from``), stamped with
the session's full JID, and handed to the router. Before authentication only
what RFC 6120 allows passes (STARTTLS, SASL, and iqs a component serves to
unauthenticated streams, such as XEP-0077 registration, as ``preauth`` events).
"""

from __future__ import annotations

import base64
import uuid
from typing import TYPE_CHECKING

from twisted.internet import protocol, reactor
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

#: Fixed replies of the negotiation, written as text (base64 is XML-safe).
_PROCEED = f"<proceed xmlns='{ns.TLS}'/>"


class C2SSession(XMPPStream):
    """One client connection, from the first byte to the last."""

    def __init__(self, server: XMPPServer, direct_tls: bool = False):
        super().__init__(server.config.server["max_stanza_size"])
        self.server = server
        self.router = server.router
        self.secure = direct_tls
        self.direct_tls = direct_tls
        self.mechanism = ""
        self.user: str | None = None  # authenticated bare JID
        self.jid = None  # full JID once bound
        self.bare: str | None = None
        self.resource: str | None = None
        self.priority = 0
        self.available = False
        self.presence: domish.Element | None = None
        self.sasl = None
        self.sasl_failures = 0
        self._timeout = None

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
        self._timeout = reactor.callLater(self.server.config.c2s["auth_timeout"], self._timed_out)

    def _timed_out(self) -> None:
        self._timeout = None
        if self.jid is None:
            self.stream_error("connection-timeout", "authenticate and bind sooner")

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None
        super().connectionLost(reason)
        self.log.info("c2s {peer} disconnected ({who}): {reason}", peer=self.peer,
                      who=self.jid.full() if self.jid else self.user or "unauthenticated",
                      reason=reason.getErrorMessage() if reason else "")
        if self.jid is not None and self.router.unbind(self):
            self.server.session_closed(self)

    # -- stream ------------------------------------------------------------------

    def streamStarted(self, root: domish.Element) -> None:
        to = root.getAttribute("to")
        if self.local_domain is None:
            if to is None:
                self.stream_error("host-unknown", "the stream header needs a 'to'")
                return
            domain = to.lower().rstrip(".")
            if domain not in self.router.hosts:
                self.stream_error("host-unknown", f"this server does not serve {to}")
                return
            self.local_domain = domain
        elif to is not None and to.lower().rstrip(".") != self.local_domain:
            self.stream_error("host-unknown", "the domain cannot change on restart")
            return
        version = root.getAttribute("version", "")
        if not version.startswith("1."):
            self.stream_error("unsupported-version", "XMPP 1.0 streams only")
            return
        self.send_header(self.local_domain)
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
        for element in self.server.stream_features(self):
            features.addChild(element)
        return features

    def _mechanisms(self) -> list[str]:
        names = ["SCRAM-SHA-256", "SCRAM-SHA-1"]
        if self.secure and self.server.config.c2s["allow_plain"]:
            names.append("PLAIN")
        return names

    def stanzaReceived(self, element: domish.Element) -> None:
        if self.jid is not None:
            self._bound(element)
        elif self.user is not None:
            self._authenticated(element)
        else:
            self._unauthenticated(element)

    # -- before authentication ---------------------------------------------------

    def _unauthenticated(self, element: domish.Element) -> None:
        uri, name = element.uri, element.name
        if uri == ns.TLS and name == "starttls":
            self._starttls()
        elif uri == ns.SASL:
            if not self.secure and self.server.config.c2s["require_encryption"]:
                self._sasl_failure("encryption-required")
            elif name == "auth":
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
            self.sasl = sasl.PlainMechanism(accounts, self.local_domain)
        else:
            self.sasl = sasl.ScramMechanism(mechanism, accounts, self.local_domain)
        text = str(element).strip()
        self._sasl_step(base64_payload(element) if text else None)

    def _sasl_step(self, data: bytes | None | bool) -> None:
        if data is False:
            self.sasl = None
            self._sasl_failure("incorrect-encoding")
            return
        mechanism = self.sasl
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
        self._timeout = None
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
