"""An outgoing s2s stream: we send a remote server stanzas (RFC 6120).

It belongs to one :class:`~xmppd.streams.s2s.links.Link` (a local domain →
a remote domain) and goes through, in order:

1. the header to the remote domain; its features;
2. STARTTLS when offered (refused links: with ``[s2s] require_encryption``
   a peer without TLS is not used); the peer's certificate is then judged
   for the remote domain — with ``[s2s] secure_auth`` one that does not
   verify ends the attempt;
3. authentication: SASL EXTERNAL when offered (the peer trusts our
   certificate), else dialback: ``<db:result/>`` with our key, which the
   peer checks with our authoritative side (our incoming stream answers its
   ``<db:verify/>``);
4. ready: the link writes its queue and further stanzas.

Dialback verification requests we make for incoming streams
(``<db:verify/>``) go out as soon as the stream is past TLS, before our own
authentication completes: the peer answers them on any stream (XEP-0220
§2.4), and waiting for authentication could wait on the very verification
the peer is making of us.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from twisted.internet import protocol
from twisted.python.failure import Failure
from twisted.words.xish import domish

from xmppd import ns
from xmppd.streams.s2s import dialback
from xmppd.streams.s2s.stream import S2SStream

if TYPE_CHECKING:
    from xmppd.streams.s2s.links import Link


class LinkFailed(Exception):
    """Why a link could not be set up (for the log, and the bounce text)."""

    def __init__(self, text: str, condition: str = "remote-server-not-found"):
        super().__init__(text)
        self.condition = condition


class OutboundStream(S2SStream):
    """One outgoing s2s connection of a link."""

    direction = "out"

    def __init__(self, link: Link, direct_tls: bool = False):
        super().__init__(link.s2s)
        self.link = link
        self.local, self.remote = link.local, link.remote
        self.secure = direct_tls
        self.direct_tls = direct_tls
        #: the id the peer gave its stream (the dialback key covers it)
        self.remote_id: str | None = None
        self.ready = False
        #: usable for db:verify (TLS done where it will be, features read)
        self.usable = False
        self._sasl_tried = False
        #: our <auth/> is out, unanswered
        self._sasl_pending = False
        self._starttls_sent = False
        self._dialback_sent = False
        #: ids of the <db:verify/> requests sent on this stream, unanswered
        self.verifies_sent: set[str] = set()
        self._dialback_offered = False
        self._dialback_ok = False
        self._sasl_succeeded = False
        #: whether the peer's certificate proved the remote domain
        self.trusted = False
        #: further local domains authenticated (or authenticating) over this
        #: stream by dialback (XEP-0220 §2.6 piggybacking): domain → link
        self.piggybacked: dict[str, Link] = {}

    def connectionMade(self) -> None:
        super().connectionMade()
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        self.log.info("s2sout {peer}: connected for {local} -> {remote}{tls}", peer=self.peer,
                      local=self.local, remote=self.remote,
                      tls=" (direct TLS)" if self.direct_tls else "")
        self.link.connected(self)
        self.write_header(self.local, self.remote, id_=False)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        super().connectionLost(reason)
        self.link.lost(self, reason)
        riders, self.piggybacked = self.piggybacked, {}
        for link in riders.values():
            link.lost(self, reason)

    # -- piggybacking (XEP-0220 §2.6) ---------------------------------------------

    @property
    def can_piggyback(self) -> bool:
        """May another local domain authenticate over this stream? When it
        is set up, and the peer does dialback (it then accepts a further
        ``<db:result/>`` for another pair, as Prosody and ejabberd do)."""
        return self.ready and not self.closed and self._dialback_ok and self.s2s.config["dialback"]

    def piggyback(self, link: Link) -> None:
        """Authenticate ``link.local`` to our remote domain over this stream
        (only ever asked of a ready stream: see :attr:`can_piggyback`)."""
        self.piggybacked[link.local] = link
        key = self.s2s.keys.make(self.remote, link.local, self.remote_id or "")
        self.send(dialback.element("result", link.local, self.remote, key=key))

    def undelivered(self, kind: str, stanza: Any) -> None:
        self.link.undelivered(kind, stanza)

    def fail(self, why: str, condition: str = "remote-server-not-found",
             stream_condition: str | None = None) -> None:
        """This attempt failed: tell the link (which bounces or tries the
        next target) and close."""
        self.link.attempt_failed(self, LinkFailed(why, condition))
        if stream_condition is not None:
            self.stream_error(stream_condition, why)
        else:
            self.close()

    # -- the peer's stream -----------------------------------------------------------

    def streamStarted(self, root: domish.Element) -> None:
        self.remote_id = root.getAttribute("id")
        self._dialback_offered = ns.DIALBACK in root.localPrefixes.values()
        if root.getAttribute("version") != "1.0":
            # No features will come: dialback straight away, if allowed.
            if self.s2s.config["require_encryption"] and not self.secure:
                self.fail(f"{self.remote} offers no TLS (an old server)")
                return
            self._usable()
            self._authenticate(mechanisms=(), dialback_ok=self._dialback_offered)

    def stanzaReceived(self, element: domish.Element) -> None:
        uri, name = element.uri, element.name
        if self.peer_error(element):
            if not self.ready:
                self.link.attempt_failed(self, LinkFailed(
                    f"{self.remote} ended the stream: {self.peer_condition}"))
            return
        if uri == ns.STREAMS and name == "features":
            self._features(element)
        elif uri == ns.TLS and name == "proceed":
            if not self._starttls_sent or self.secure:
                self._unsolicited("<proceed/>")
                return
            self.transport.startTLS(self.s2s.tls.client_creator(self.remote))
            self.secure = True
            self.reset()
            self.write_header(self.local, self.remote, id_=False)
        elif uri == ns.TLS and name == "failure":
            self.fail(f"{self.remote} could not start TLS")
        elif uri == ns.SASL and name == "success":
            if not self._sasl_pending:
                self._unsolicited("SASL <success/>")
                return
            self._sasl_pending = False
            # RFC 6120 §6.4.6: a new stream; ready once its features came.
            self._sasl_succeeded = True
            self.reset()
            self.write_header(self.local, self.remote, id_=False)
        elif uri == ns.SASL and name == "failure":
            if not self._sasl_pending:
                self._unsolicited("SASL <failure/>")
                return
            self._sasl_pending = False
            why = next((c.name for c in element.elements()), "failure")
            self.log.info("s2sout {peer}: SASL EXTERNAL to {remote} refused ({why})",
                          peer=self.peer, remote=self.remote, why=why)
            if self._dialback_allowed():
                self._send_dialback()
            else:
                self.fail(f"{self.remote} refused our certificate ({why})")
        elif uri == ns.DIALBACK and name == "result":
            self._db_result(element)
        elif uri == ns.DIALBACK and name == "verify":
            self._db_verify_answer(element)
        elif self.is_stanza(element):
            # RFC 6120 §8: streams between servers are one-way; XEP-0288 is
            # not offered, so the peer has no business sending here.
            self.log.debug("s2sout {peer}: a stanza on an outgoing stream, dropped",
                           peer=self.peer)
        else:
            self.stream_error("unsupported-stanza-type",
                              f"{{{uri}}}{name} is not expected here")

    def _features(self, features: domish.Element) -> None:
        config = self.s2s.config
        if self.ready:
            return
        if self._sasl_succeeded:
            self._become_ready("SASL EXTERNAL")
            return
        starttls = next(features.elements(ns.TLS, "starttls"), None)
        if not self.secure:
            if starttls is not None:
                self._starttls_sent = True
                self.send(f"<starttls xmlns='{ns.TLS}'/>")
                return
            if config["require_encryption"]:
                self.fail(f"{self.remote} offers no TLS ([s2s] require_encryption)",
                          stream_condition="policy-violation")
                return
        else:
            verdict = self.s2s.tls.verify(self.transport, self.remote)
            self.trusted = verdict.trusted
            if not verdict.trusted:
                if config["secure_auth"]:
                    self.s2s.server.counters["s2s auth failed"] += 1
                    self.log.warn("s2sout {peer}: the certificate of {remote} is not trusted: "
                                  "{why} ([s2s] secure_auth)", peer=self.peer,
                                  remote=self.remote, why=verdict.reason)
                    self.fail(f"the certificate of {self.remote} is not trusted",
                              stream_condition="policy-violation")
                    return
                self.log.info("s2sout {peer}: the certificate of {remote} is not trusted "
                              "({why}): dialback only", peer=self.peer, remote=self.remote,
                              why=verdict.reason)
        mechanisms = [str(m).strip() for e in features.elements(ns.SASL, "mechanisms")
                      for m in e.elements(ns.SASL, "mechanism")]
        offered = self._dialback_offered or any(
            True for _ in features.elements(ns.DIALBACK_FEATURE, "dialback"))
        self._usable()
        self._authenticate(mechanisms, offered)

    def _usable(self) -> None:
        if not self.usable:
            self.usable = True
            self.link.usable(self)

    def _dialback_allowed(self) -> bool:
        config = self.s2s.config
        return config["dialback"] and self._dialback_ok \
            and (getattr(self, "trusted", False) or not config["secure_auth"])

    def _authenticate(self, mechanisms: Any, dialback_ok: bool) -> None:
        self._dialback_ok = dialback_ok
        if "EXTERNAL" in mechanisms and not self._sasl_tried and self.secure:
            self._sasl_tried = self._sasl_pending = True
            authzid = base64.b64encode(self.local.encode("utf-8")).decode("ascii")
            self.send(f"<auth xmlns='{ns.SASL}' mechanism='EXTERNAL'>{authzid}</auth>")
            return
        if self._dialback_allowed():
            self._send_dialback()
            return
        self.fail(f"no way to authenticate to {self.remote} (no SASL EXTERNAL"
                  f"{'' if dialback_ok else ', no dialback'})")

    def _send_dialback(self) -> None:
        if self._dialback_sent:
            return
        self._dialback_sent = True
        key = self.s2s.keys.make(self.remote, self.local, self.remote_id or "")
        self.send(dialback.element("result", self.local, self.remote, key=key))

    def _unsolicited(self, what: str) -> None:
        """The peer answered what we never asked: it is not following the
        protocol (or is trying to skip TLS or authentication)."""
        self.s2s.server.counters["s2s protocol violation"] += 1
        self.log.warn("s2sout {peer}: unsolicited {what} from {remote}", peer=self.peer,
                      what=what, remote=self.remote)
        self.fail(f"{self.remote} sent an unsolicited {what}",
                  stream_condition="undefined-condition")

    def send_verify(self, local: str, stream_id: str, key: str) -> None:
        """Ask the peer (authoritative for our remote domain) about ``key``."""
        self.verifies_sent.add(stream_id)
        self.send(dialback.element("verify", local, self.remote, id_=stream_id, key=key))

    def _db_verify_answer(self, answer: domish.Element) -> None:
        """An answer to one of our <db:verify/>: only to one asked on this
        stream, from the domain asked, to the domain that asked."""
        stream_id = answer.getAttribute("id") or ""
        asker = self.piggybacked.get(answer.getAttribute("to") or "", self.link)
        if stream_id not in self.verifies_sent or answer.getAttribute("from") != self.remote \
                or answer.getAttribute("to") != asker.local:
            self._unsolicited("<db:verify/> answer")
            return
        self.verifies_sent.discard(stream_id)
        asker.verified(answer)

    def _db_result(self, result: domish.Element) -> None:
        kind = result.getAttribute("type")
        to = result.getAttribute("to") or ""
        rider = self.piggybacked.get(to)
        if result.getAttribute("from") != self.remote or kind is None \
                or (rider is None and (to != self.local or not self._dialback_sent)):
            self._unsolicited("<db:result/>")
            return
        if rider is not None and rider.local != self.local:
            if kind == "valid" and self.ready:
                rider.ready(self)
            else:
                del self.piggybacked[rider.local]
                rider.attempt_failed(self, LinkFailed(
                    f"{self.remote} refused {rider.local} over a shared stream ({kind})",
                    "remote-server-not-found"))
            return
        if kind == "valid":
            self._become_ready("dialback")
            return
        why = next((c.name for e in result.elements() for c in e.elements()), kind or "?")
        self.s2s.server.counters["s2s auth failed"] += 1
        self.log.warn("s2sout {peer}: {remote} did not accept our dialback ({why})",
                      peer=self.peer, remote=self.remote, why=why)
        self.fail(f"{self.remote} refused our dialback ({why})")

    def _become_ready(self, how: str) -> None:
        if self.ready:
            return
        config = self.s2s.config
        # Whatever path led here, never a link the options forbid (as
        # Prosody's make_authenticated checks again).
        if config["require_encryption"] and not self.secure:
            self.fail("no TLS ([s2s] require_encryption)", stream_condition="policy-violation")
            return
        if config["secure_auth"] and not self.trusted:
            self.fail(f"the certificate of {self.remote} is not trusted ([s2s] secure_auth)",
                      stream_condition="policy-violation")
            return
        self.ready = True
        self.log.info("s2sout {peer}: {local} authenticated to {remote} ({how}{tls})",
                      peer=self.peer, local=self.local, remote=self.remote, how=how,
                      tls=", TLS" if self.secure else ", no TLS")
        self.link.ready(self)

    def output_overflow(self) -> None:
        self.s2s.server.counters["s2s output overflow"] += 1
        super().output_overflow()


class OutboundFactory(protocol.ClientFactory):
    noisy = False

    def __init__(self, link: Link, direct_tls: bool):
        self.link = link
        self.direct_tls = direct_tls

    def buildProtocol(self, addr: Any) -> OutboundStream:
        return OutboundStream(self.link, self.direct_tls)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.link.attempt_failed(None, LinkFailed(
            f"cannot connect to {connector.getDestination().host}:"
            f"{connector.getDestination().port}: {reason.getErrorMessage()}"))
