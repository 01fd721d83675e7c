"""A client session over TCP (RFC 6120): the framing of a client stream.

What this module does is what TCP alone needs: STARTTLS and direct TLS
(XEP-0368), TCP_NODELAY, whitespace keep-alives, its log lines and counters;
the XML stream parsed from bytes, its bounded output and the parked parser of
an idle stream are :class:`~xmppd.streams.framing.SessionStream`'s (shared
with the WebSocket framing). Everything
else a client session does — stream features, SASL, binding, stanza checks,
in-order processing, backpressure — is :class:`~xmppd.streams.negotiation.
ClientSession`'s, which WebSocket and BOSH sessions share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet import protocol
from twisted.python.failure import Failure

from xmppd import ns
from xmppd.streams.framing import SessionStream
# Names that lived here before the negotiation moved to xmppd.streams.
from xmppd.streams.framing import PARK_AFTER  # noqa: F401
from xmppd.streams.negotiation import LOGIN_WEIGHT, MAX_AUTH_FAILURES, MAX_INBOX  # noqa: F401

if TYPE_CHECKING:
    from xmppd.server import XMPPServer

#: Fixed replies of the negotiation, written as text.
_PROCEED = f"<proceed xmlns='{ns.TLS}'/>"


class C2SSession(SessionStream):
    """One client connection over TCP, from the first byte to the last."""

    def __init__(self, server: XMPPServer, direct_tls: bool = False):
        super().__init__(server, secure=direct_tls)
        self.router = server.router
        self.direct_tls = direct_tls

    @property
    def starttls(self) -> bool:  # type: ignore[override]
        return not self.secure

    @property
    def channel(self) -> str:  # type: ignore[override]
        if not self.secure:
            return "no TLS"
        return "direct TLS" if self.direct_tls else "STARTTLS"

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
        self.session.connected()

    def waiting_for(self) -> str:
        if self.direct_tls and not self._last_read:
            return "TLS handshake, or no stream header"
        if self.secure and not self.direct_tls:
            return "STARTTLS handshake, or no stream header after it"
        return "no stream header"

    def start_tls(self) -> bool:
        if self.secure:
            return False
        self.send(_PROCEED)
        self.transport.startTLS(self.server.tls_context)
        self.secure = True
        self.reset()
        return True

    def keepalive(self) -> None:
        self.transport.write(b" ")

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if not self.closed:
            who = self.jid.full() if self.jid is not None else self.user or "unauthenticated"
            self.log.info("c2s {peer} disconnected ({who}): {reason}", peer=self.peer,
                          who=who, reason=reason.getErrorMessage() if reason else "")
        super().connectionLost(reason)

    def close(self) -> None:
        """Unbind at once (RFC 6120 §4.4: no stanza is delivered to a closing
        stream; the user's other resources or offline storage get them), then
        close the stream."""
        if self.closed:
            return
        if self.jid is not None:
            self.log.info("c2s {peer} closing ({who})", peer=self.peer, who=self.jid.full())
        super().close()

    def aborted(self) -> None:
        self.server.counters["c2s aborted after close"] += 1

    def output_overflow(self) -> None:
        self.server.counters["c2s output overflow"] += 1
        super().output_overflow()

    def output_stalled(self) -> None:
        self.server.counters["c2s output stalled"] += 1
        super().output_stalled()


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
