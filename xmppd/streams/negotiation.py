"""A client session (RFC 6120) apart from its framing: stream features, SASL,
resource binding, stanza checks, in-order processing and backpressure.

A :class:`ClientSession` is what the router and components see of a client
(the :class:`~xmppd.router.sessions.Session` contract). It knows nothing of
bytes, sockets, WebSocket frames or HTTP requests: a *framing* carries it —
TCP (:class:`xmppd.c2s.session.C2SSession`: STARTTLS, direct TLS, the XML
stream parser, keep-alives), WebSocket (:mod:`xmppd.http.websocket`, RFC 7395)
and BOSH (XEP-0124/0206). Each framing builds one ``ClientSession(server,
framing)`` per client and then only turns its wire into the calls below and
the session's calls back into its wire, so everything a TCP client can do
works the same over every framing.

What a framing provides (:class:`Framing`; the session calls these)
---------------------------------------------------------------------

Attributes, read whenever the session needs them:

``address``, ``peer``
    the client's IP (for rate limits; a proxied client's own, not the
    proxy's) and ``"ip:port"`` for logs.
``secure``
    whether the stream is encrypted (TLS, HTTPS) or needs no encryption (a
    loopback connection): SASL PLAIN, and SASL at all under ``[c2s]
    require_encryption``, depend on it.
``starttls``
    whether ``<starttls/>`` may be offered now (only a TCP stream not yet
    encrypted; False for WebSocket and BOSH, whose TLS is the HTTP layer's).
``shape``
    what ``send`` writes stanzas as: two framings of one shape write one
    stanza as the same text (the router's Fanout serialises once per shape).
``channel``
    how the client is connected, for the login log line ("STARTTLS",
    "direct TLS", "WebSocket, TLS" …).
``closed``
    True once the framing has begun to close: it writes nothing more (a
    stanza ``send`` gets then goes to :meth:`ClientSession.undelivered`).
``domain``
    set by the session when the client names a domain this server serves;
    the framing puts it in its stream header (also the header written just
    before an early stream error).

Methods:

``open_stream()``
    write the stream header (TCP ``<stream:stream>``, WebSocket ``<open/>``,
    BOSH the session creation or restart response) for ``domain``; the
    session sends ``<stream:features/>`` next.
``send(element_or_text)``, ``serialize(element) -> str``
    write one top-level element, given as a domish element or as text that
    ``serialize`` made for this ``shape`` (fixed replies of the negotiation
    are ready-made text that declares its namespace).
``restart()``
    SASL succeeded (``<success/>`` was just sent): the client opens a new
    stream next (RFC 6120 §6.4.6); nothing it sent on the old one after its
    last element may be used.
``start_tls() -> bool``
    the client asked for STARTTLS: write ``<proceed/>``, start TLS and expect
    a new stream, returning True; or return False when this framing cannot
    (already encrypted, or not TCP) — the session then sends the TLS
    ``<failure/>`` and closes, as RFC 6120 §5.4.2.2 says.
``stream_error(condition, text=None)``
    write an RFC 6120 §4.9 stream error and close.
``close()``
    close the stream (``</stream:stream>``, ``<close/>``, BOSH terminate) and
    the connection, for certain (a close that hangs is aborted).
``pause_reading()``, ``resume_reading()``
    stop and restart reading from the client (the session counts who asked).
``drained() -> Deferred``
    fires once everything sent so far has left the framing's own buffer.
``bound()``
    the session bound a resource: its pre-bind deadline is over; keep-alives
    (whitespace, WebSocket pings) may start.
``waiting_for() -> str``
    what the framing still waits for before a stream is open, for the log
    line of a time-out ("TLS handshake, or no stream header" …).

What a framing calls (the session's side)
-----------------------------------------

``connected()``
    the client is there (TCP accepted, WebSocket upgraded, BOSH session
    created): the ``[c2s] auth_timeout`` deadline starts, covering
    everything up to a bound resource.
``stream_opened(to, version)``
    the client opened (or restarted) its stream with these header
    attributes. The session checks them, sets ``framing.domain``, calls
    ``open_stream()`` and sends the features (or a stream error).
``element_received(element)``
    one top-level element of the client's stream (a stanza, a SASL or TLS
    element …), parsed and namespaced (``jabber:client`` for stanzas).
``stream_closed()``
    the client closed its stream (``</stream:stream>``, ``<close/>``, BOSH
    ``type='terminate'``): the session finishes what waits and closes.
``closing()``
    the framing is about to close, for any reason (its own errors, its
    time-outs, a close asked by the session), *before* it discards any
    waiting output: the session unbinds, so what was waiting for it is routed
    to the user's other resources or offline storage, not back to it.
``ended()``
    the framing has closed (``closed`` is True) or lost its connection:
    senders this session throttled are let go, and messages the client sent
    that were not processed yet still go where they were sent.
``congested()``, ``decongested()``
    the framing's output buffer is filling (past a quarter of ``[c2s]
    max_output_buffer``) / has drained: the session stops reading from its
    own client and from whoever fills that buffer, and reads again.
``undelivered(kind, stanza)``
    a stanza the framing will never write (it closed first): the router finds
    it another way (other resources, offline storage, a bounce).

The session calls the framing and the framing calls the session, never
anything else: neither reaches into the other's state. The session is what
the router holds (``router.resources()``, ``event.origin``); the framing
ends it only through its own ``stream_error``/``close`` (which call
``closing``/``ended``), never through the router.

A framing in a few lines (the shape BOSH takes)::

    session = ClientSession(server, framing)   # one per client
    session.connected()                          # session created: deadline on
    session.stream_opened(to, version)           # creation / restart request
    for element in children:                     # each request's payload
        session.element_received(element)        # (jabber:client where unqualified)
    session.stream_closed()                      # type='terminate'

and its ``serialize`` makes each element a document of its own (declaring
``jabber:client`` on stanzas and the ``stream`` prefix), as the WebSocket
framing does, with a ``shape`` of its own.
"""

from __future__ import annotations

import base64
import collections
import uuid
from typing import TYPE_CHECKING, Any, Hashable, Protocol

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.words.xish import domish

from xmppd import jid as jidlib
from xmppd import ns
from xmppd.router.events import iq_result, stanza_error
from xmppd.streams import sasl
# In-order processing is OrderedInput's (MAX_INBOX stays importable from here).
from xmppd.streams.ordering import END as _END
from xmppd.streams.ordering import MAX_INBOX, OrderedInput  # noqa: F401

if TYPE_CHECKING:
    from xmppd.server import XMPPServer

__all__ = ["ClientSession", "Framing", "MAX_AUTH_FAILURES", "MAX_INBOX", "LOGIN_WEIGHT"]

#: SASL failures allowed on one stream before it is closed.
MAX_AUTH_FAILURES = 5

#: What a login counts for in the server's Reclaimer, beyond its bytes: a TLS
#: handshake, SCRAM and binding leave tens of KiB of short-lived cycles for a
#: few KiB on the wire. Counted, a burst of logins has its garbage collected
#: every hundred or so logins instead of piling up (measured: 10 MiB left over
#: after 1 000 logins, a quarter of the idle connections' memory).
LOGIN_WEIGHT = 64 * 1024



class Framing(Protocol):
    """What carries a :class:`ClientSession` (see the module docstring)."""

    address: str
    peer: str
    secure: bool
    starttls: bool
    shape: Hashable
    channel: str
    closed: bool
    domain: str | None

    def open_stream(self) -> None: ...

    def send(self, element: domish.Element | str) -> None: ...

    def serialize(self, element: domish.Element) -> str: ...

    def restart(self) -> None: ...

    def start_tls(self) -> bool: ...

    def stream_error(self, condition: str, text: str | None = None) -> None: ...

    def close(self) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def drained(self) -> defer.Deferred: ...

    def bound(self) -> None: ...

    def waiting_for(self) -> str: ...


class ClientSession(OrderedInput):
    """One client, from its first stream header to its last stanza, over any
    framing. Before authentication only what RFC 6120 allows passes (SASL,
    STARTTLS where the framing has it, and iqs a component serves to
    unauthenticated streams, such as XEP-0077 registration, as ``preauth``
    events); once bound, every stanza is checked (kind, ``from``), stamped
    with the session's full JID and handed to the router."""

    log = Logger()

    def __init__(self, server: XMPPServer, framing: Framing):
        self.server = server
        self.router = server.router
        self.clock = server.clock
        self.framing = framing
        #: the local domain the client opened its stream to
        self.domain: str | None = None
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
        #: the current stream's header was answered (False again after a restart)
        self.opened = False
        #: the connection deadline before bind
        self._deadline = None
        #: stanzas waiting for an earlier one's handler work (in-order processing)
        self._inbox: collections.deque | None = None
        self._holds = 0
        self._running = False
        #: who asked us to stop reading from the client (see pause_reading);
        #: made when first needed, as an idle connection should cost little
        self._pausers: set[Any] | None = None
        #: sessions we stopped reading from because they fill our backlog
        self._throttled: set[Any] | None = None
        #: the framing's output is congested (between congested and decongested)
        self._congested = False
        #: XEP-0198 counters and unacknowledged stanzas, once the client
        #: enabled stream management (see :mod:`xmppd.streams.sm`)
        self.sm = None
        #: stream management was enabled on this session at some point: the
        #: framing's unwritten output is then in its queue, not to re-route
        self._sm_used = False
        #: filters every stanza passes on its way to the client (XEP-0352
        #: client state indication holds some), see :meth:`add_send_filter`
        self._send_filters: list[Any] | None = None

    # -- the session contract, through the framing -------------------------------

    @property
    def address(self) -> str:
        return self.framing.address

    @property
    def peer(self) -> str:
        return self.framing.peer

    @property
    def secure(self) -> bool:
        return self.framing.secure

    @property
    def shape(self) -> Hashable:
        return self.framing.shape

    @property
    def closed(self) -> bool:
        return self.framing.closed

    def send(self, stanza: domish.Element | str) -> None:
        """Write a stanza to the client: past the send filters (a filter may
        take it, to write it later with :meth:`write_now`), then counted and
        kept until acknowledged when stream management is on."""
        filters = self._send_filters
        if filters:
            for keep in filters:
                if keep(stanza):
                    return
        self.write_now(stanza)

    def write_now(self, stanza: domish.Element | str) -> None:
        """Write a stanza past the send filters (what a filter held, released)."""
        if self.sm is not None:
            self.server.sm.write(self, stanza)
        else:
            self.framing.send(stanza)

    def add_send_filter(self, keep: Any, first: bool = False) -> None:
        """Call ``keep(stanza)`` for every stanza about to be written to the
        client (an element, or a fanout's ready-made text); when it returns
        True it has taken the stanza, and writes it later itself, in order,
        with :meth:`write_now`. Stream-level elements (SASL, XEP-0198 acks)
        do not pass the filters. ``first``: before the filters there are (an
        observer that must see every stanza, even one another filter holds)."""
        if self._send_filters is None:
            self._send_filters = []
        if first:
            self._send_filters.insert(0, keep)
        else:
            self._send_filters.append(keep)

    def remove_send_filter(self, keep: Any) -> None:
        if self._send_filters and keep in self._send_filters:
            self._send_filters.remove(keep)

    def serialize(self, stanza: domish.Element) -> str:
        return self.framing.serialize(stanza)

    def drained(self) -> defer.Deferred:
        return self.framing.drained()

    def stream_error(self, condition: str, text: str | None = None) -> None:
        """End the session with a stream error; the framing unbinds it first
        (through :meth:`closing`). A stream management client learns first
        what of its own was handled, as on any close (Prosody does the same)."""
        if self.sm is not None:
            self.server.sm.final_ack(self)
        self.framing.stream_error(condition, text)

    def close(self) -> None:
        """Close the stream; unbound at once (RFC 6120 §4.4: no stanza is
        delivered to a closing stream; the user's other resources or offline
        storage get them). A stream management client learns first what of
        its own was handled (XEP-0198 §4)."""
        if self.sm is not None:
            self.server.sm.final_ack(self)
        self.framing.close()

    # -- stream management (XEP-0198, :mod:`xmppd.streams.sm`) ----------------------

    def adopt(self, framing: Any) -> None:
        """Carry on over ``framing``, the connection the client resumed this
        (hibernating) session from: the framing calls this session from now on."""
        framing.session = self
        self.framing = framing
        self._pausers = None
        self._congested = False
        framing.bound()

    def pending_stanzas(self) -> int:
        """Stanzas received and waiting to be handled (behind a handler's
        storage work): XEP-0198 counts them as handled on resumption."""
        return sum(1 for e in self._inbox or () if e is not _END and e.uri == ns.CLIENT
                   and e.name in ns.STANZA_KINDS)

    def adopted_by(self, session: ClientSession) -> None:
        """This stream resumed ``session``: its framing is the other's now,
        and this session is over (it never bound)."""
        from xmppd.streams.sm import DETACHED
        self._cancel_deadline()
        self.framing = DETACHED

    # -- life, as the framing reports it -------------------------------------------

    def connected(self) -> None:
        # One deadline covers every stage before bind: a TLS handshake, the
        # stream header, SASL and binding (a silent socket, a stalled
        # handshake and an endless SASL exchange all end here).
        self._deadline = self.clock.callLater(self.server.config.c2s["auth_timeout"],
                                              self._timed_out)

    def _timed_out(self) -> None:
        self._deadline = None
        if self.jid is None and not self.closed:
            self.server.counters["c2s timed out before bind"] += 1
            self.log.info("c2s {peer}: not bound within {timeout} s ({stage}): closing",
                          peer=self.peer, timeout=self.server.config.c2s["auth_timeout"],
                          stage=self.stage())
            self.stream_error("connection-timeout", "authenticate and bind sooner")

    def stage(self) -> str:
        """Where the negotiation stands (for logs)."""
        if self.user is not None:
            return "authenticated, not bound"
        if self.sasl is not None:
            return "in SASL"
        if self.opened:
            return "stream open"
        return self.framing.waiting_for()

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def closing(self, lost: bool = False) -> None:
        """The framing is closing (see the module docstring); ``lost``: its
        connection dropped or stalled, the session did not decide to end
        (XEP-0198 then lets it hibernate, waiting to be resumed)."""
        self._cancel_deadline()
        manager = self.server.sm
        if lost and self.sm is not None and manager.may_hibernate(self):
            manager.hibernate(self)
            self._release_throttled()
            self._pausers = None
            self._congested = False
            return
        self._unbind()
        if self.sm is not None:
            manager.ended(self)

    def ended(self) -> None:
        self._cancel_deadline()
        self._release_throttled()
        self._drop_inbox()

    def _unbind(self) -> None:
        if self.jid is not None and self.router.unbind(self):
            self.server.session_closed(self)

    def undelivered(self, kind: str, stanza: domish.Element | bytes) -> None:
        """A stanza for this session that it will never get: the router finds
        it another way (the user's other resources, offline storage, a bounce).
        Only ever called on the way out, so the session unbinds first (else
        routing would find it again). Under stream management the framing's
        unwritten output is in the unacknowledged queue, which goes the same
        way once (:meth:`xmppd.streams.sm.StreamManagement.ended`)."""
        if self._sm_used:
            return
        self._unbind()
        self.router.undelivered(kind, stanza, self)

    # -- in-order processing (RFC 6120 §10.1): OrderedInput, around this ----------

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

    def _stop_reading(self) -> None:
        self.framing.pause_reading()

    def _start_reading(self) -> None:
        self.framing.resume_reading()

    def congested(self) -> None:
        """Our client reads slower than stanzas arrive for it: stop reading
        from it (it is not reading its answers) and from the session whose
        stanza is being handled now (it is the one filling our buffer), until
        the backlog is written."""
        self._congested = True
        self.pause_reading(self)
        origin = self.router.current
        if origin is not None and origin is not self and hasattr(origin, "pause_reading"):
            origin.pause_reading(self)
            if self._throttled is None:
                self._throttled = set()
            self._throttled.add(origin)

    def decongested(self) -> None:
        self._congested = False
        self.resume_reading(self)
        self._release_throttled()
        if self._inbox is not None and not self._running:
            self._run_inbox()

    def _release_throttled(self) -> None:
        throttled, self._throttled = self._throttled, None
        for origin in throttled or ():
            origin.resume_reading(self)

    # -- stream --------------------------------------------------------------------

    def stream_opened(self, to: str | None, version: str | None) -> None:
        framing = self.framing
        if self.domain is None:
            if to is None:
                self.stream_error("host-unknown", "the stream header needs a 'to'")
                return
            domain = to.lower().rstrip(".")
            if domain not in self.router.hosts:
                self.stream_error("host-unknown", f"this server does not serve {to}")
                return
            self.domain = framing.domain = domain
        elif to is not None and to.lower().rstrip(".") != self.domain:
            self.stream_error("host-unknown", "the domain cannot change on restart")
            return
        if not _supported_version(version):
            self.stream_error("unsupported-version", "XMPP 1.0 streams only")
            return
        framing.open_stream()
        self.opened = True
        # What is offered depends only on the configuration, on the framing's
        # shape and on whether the stream is secure and authenticated (the
        # contract of Component.stream_features), so each of the few variants
        # is serialised once per server, not once per login.
        key = (framing.shape, framing.starttls, framing.secure, self.user is not None)
        cache = self.server.features_cache
        text = cache.get(key)
        if text is None:
            text = cache[key] = framing.serialize(self._features())
        framing.send(text)

    def _features(self) -> domish.Element:
        features = domish.Element((ns.STREAMS, "features"))
        c2s = self.server.config.c2s
        if self.user is None:
            if not self.secure:
                if self.framing.starttls:
                    starttls = features.addElement((ns.TLS, "starttls"))
                    if c2s["require_encryption"]:
                        starttls.addElement("required")
                        return features
                elif c2s["require_encryption"]:
                    # No TLS to offer on this framing (plain HTTP from afar):
                    # nothing to authenticate with, as Prosody does it.
                    return features
            mechanisms = features.addElement((ns.SASL, "mechanisms"))
            for name in self._mechanisms():
                mechanisms.addElement("mechanism", content=name)
        else:
            features.addElement((ns.BIND, "bind"))
            features.addElement((ns.SESSION, "session")).addElement("optional")
            if self.server.sm is not None:
                for element in self.server.sm.features():
                    features.addChild(element)
        # XEP-0478, as Prosody 13 announces it: the stanza size we accept and
        # how long we let a stream stay silent before checking on it.
        limits = features.addElement((ns.STREAM_LIMITS, "limits"))
        limits.addElement("max-bytes", content=str(self.server.config.server["max_stanza_size"]))
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
        if not self.framing.start_tls():
            self.send(domish.Element((ns.TLS, "failure")))
            self.close()
            return
        self.opened = False

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
            self.send(f"<success xmlns='{ns.SASL}'>{payload}</success>")
            self.opened = False
            self.framing.restart()
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

    def _stream_element(self, element: domish.Element) -> bool:
        """An element outside ``jabber:client`` on an authenticated stream:
        XEP-0198's, or one a component registered (``@stream_element``).
        False when nobody serves it."""
        uri = element.uri
        if uri in ns.SM_NAMESPACES and self.server.sm is not None:
            self.server.sm.element(self, element)
            if self.sm is not None:
                self._sm_used = True
            return True
        handler = self.server.stream_elements.get((uri, element.name))
        if handler is None:
            return False
        handler(self, element)
        return True

    def _authenticated(self, element: domish.Element) -> None:
        if element.uri != ns.CLIENT and self._stream_element(element):
            return
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
        self._cancel_deadline()
        self.framing.bound()
        self.server.reclaimer.account(LOGIN_WEIGHT)
        # One line per login, as Prosody writes: who, how, over what.
        self.log.info("c2s {peer} bound {jid} ({mechanism}, {tls})", peer=self.peer, jid=full.full(),
                      mechanism=self.mechanism, tls=self.framing.channel)
        result = iq_result(iq)
        result.attributes.pop("to", None)
        result.addElement((ns.BIND, "bind")).addElement("jid", content=full.full())
        self.send(result)
        self.server.session_bound(self)

    # -- bound: stanzas ------------------------------------------------------------

    def _bound(self, element: domish.Element) -> None:
        if element.uri != ns.CLIENT or element.name not in ns.STANZA_KINDS:
            if element.uri != ns.CLIENT and self._stream_element(element):
                return
            self.stream_error("unsupported-stanza-type", f"<{element.name}/> is not a stanza")
            return
        if self.sm is not None:
            self.server.sm.handled(self)
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
    return major.isascii() and minor.isascii() and major.isdigit() and minor.isdigit() \
        and int(major) >= 1


def base64_payload(element: domish.Element) -> bytes | None | bool:
    """The decoded SASL payload of ``element``: None if empty, False if not base64."""
    text = str(element).strip()
    if not text:
        return None
    data = sasl.b64decode(text)
    return False if data is None else data
