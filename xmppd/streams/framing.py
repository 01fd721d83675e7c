"""A framing built on :class:`~xmppd.xml.stream.XMPPStream`: what the TCP and
WebSocket framings share.

Both parse the client's XML with the same hardened parser and write through
the same bounded output (backlog, congestion, send and close time-outs); they
differ in what a stream header, a closing tag and a stanza look like on the
wire, and in what carries the bytes. This class is the glue between such a
stream and its :class:`~xmppd.streams.negotiation.ClientSession`: parser
events become the session's ``stream_opened`` / ``element_received`` /
``stream_closed``, closing and output events its ``closing`` / ``ended`` /
``congested`` / ``undelivered``, and the session's requests the stream's own
methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet import protocol
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure
from twisted.words.xish import domish

from xmppd.streams.negotiation import ClientSession
from xmppd.xml.stream import XMPPStream

if TYPE_CHECKING:
    from xmppd.server import XMPPServer

#: Seconds of silence after which a bound session's parser is parked.
PARK_AFTER = 1.0


class SessionStream(XMPPStream):
    """An XML stream that carries one :class:`ClientSession` (``self.session``).

    Subclasses provide what differs per wire: ``secure``, ``starttls``,
    ``shape``, ``channel``, :meth:`keepalive`, :meth:`start_tls`,
    :meth:`waiting_for` (and, for a wire that is not a stream of bytes, the
    header, closing tag and serialisation).

    Once the session is bound, one timer parks the parser of a quiet stream
    and sends keep-alives (see :meth:`_idle_check`).
    """

    #: whether <starttls/> may be offered now (TCP before TLS only)
    starttls = False
    #: how the client is connected, for the login log line
    channel = "?"

    def __init__(self, server: XMPPServer, secure: bool = False):
        c2s = server.config.c2s
        super().__init__(server.config.server["max_stanza_size"], clock=server.clock,
                         max_output=c2s["max_output_buffer"], send_timeout=c2s["send_timeout"],
                         close_timeout=c2s["close_timeout"], traffic=server.reclaimer.account)
        self.server = server
        self.secure = secure
        self.session = ClientSession(server, self)
        #: the idle check after bind
        self._timeout: IDelayedCall | None = None
        self._last_read = 0.0
        self._pinged = 0.0  # when the last keep-alive went out
        self._park_pending = False  # the parser was busy when it was to be parked

    # What tests and logs read of a client stream: its session's identity.

    @property
    def jid(self):
        return self.session.jid

    @property
    def user(self) -> str | None:
        return self.session.user

    # -- parser events → the session ---------------------------------------------

    def streamStarted(self, root: domish.Element) -> None:
        self.session.stream_opened(root.getAttribute("to"), root.getAttribute("version"))

    def stanzaReceived(self, element: domish.Element) -> None:
        self.session.element_received(element)

    def streamEnded(self) -> None:
        self.session.stream_closed()

    # -- an idle stream: parked parser, keep-alives ----------------------------------

    def bound(self) -> None:
        self._timeout = self.clock.callLater(PARK_AFTER, self._idle_check)

    def keepalive(self) -> None:
        """Tell a silent client we are here (a dead connection then fails)."""

    def _idle_check(self) -> None:
        """After bind, one timer does two things.

        - A second after the client last sent anything, the stream's parser is
          parked (:meth:`XMPPStream.park`: an idle connection then costs 11 KiB
          less; the next read wakes it).
        - XEP-0478 idle-seconds, as Prosody does it: after that long without a
          byte from the client, a keep-alive (:meth:`keepalive`); a dead
          connection then fails at the TCP level (and the send timeout ends a
          stuck one).
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
            self.keepalive()
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

    # -- closing -------------------------------------------------------------------

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None
        # Unbound before anything can be sent to it as closed: a stanza for
        # this session from now on finds the user's other resources, or
        # storage. A connection that dropped without either side closing the
        # stream may leave a session to resume (XEP-0198).
        self.session.closing(lost=not self.closed)
        super().connectionLost(reason)
        self.session.ended()

    def close(self) -> None:
        if self.closed:
            return
        self.session.closing()
        super().close()
        self.session.ended()

    def stream_error(self, condition: str, text: str | None = None) -> None:
        if not self.closed:
            self.session.closing()  # before the backlog is re-routed
        super().stream_error(condition, text)

    def output_stalled(self) -> None:
        """A client that reads nothing for ``send_timeout``: its connection is
        as good as dropped. Under XEP-0198 with resumption it is cut, and the
        session hibernates for the client to resume; else a stream error."""
        sm = self.server.sm
        if sm is not None and sm.may_hibernate(self.session):
            self.log.info("{peer}: nothing could be written for {timeout} s: connection cut",
                          peer=self.peer, timeout=self.send_timeout)
            self.transport.abortConnection()
            return
        super().output_stalled()

    # -- output events → the session -----------------------------------------------

    def congested(self) -> None:
        self.session.congested()

    def decongested(self) -> None:
        self.session.decongested()

    def undelivered(self, kind: str, stanza: domish.Element | bytes) -> None:
        self.session.undelivered(kind, stanza)

    # -- the session's requests ----------------------------------------------------

    def open_stream(self) -> None:
        self.send_header(self.domain)

    def restart(self) -> None:
        self.reset()

    def start_tls(self) -> bool:
        return False

    def pause_reading(self) -> None:
        self.transport.pauseProducing()

    def resume_reading(self) -> None:
        self.transport.resumeProducing()

    def waiting_for(self) -> str:
        return "no stream header"
