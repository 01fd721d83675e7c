"""An XML stream that turns bytes into stanzas, and refuses what XMPP forbids.

We use Twisted Words' expat element stream (:mod:`twisted.words.xish.domish`)
for parsing, but not ``XmlStream``'s event dispatcher: per-stream XPath
observers cost time on every stanza and memory on every connection, and the
server routes by dictionary instead. :class:`XMPPStream` hands every stanza to
one method, :meth:`XMPPStream.stanzaReceived`, which the session overrides.

RFC 6120 §11 restricts XML: no DTD, comments, processing instructions or entity
declarations. Expat accepts all of them (and expands inline entities), so the
parser gets handlers that raise, which becomes a ``restricted-xml`` stream error.
Stanza size and nesting depth are bounded as well.
"""

from __future__ import annotations

import collections
import re
import uuid
from typing import Callable
from xml.sax.saxutils import quoteattr

from twisted.internet import defer, protocol, reactor
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.words.xish import domish
from zope.interface import implementer

from xmppd import ns

#: Whitespace up to the end of a read (matched in place, stopping at the first
#: other byte: a read of many stanzas with newlines between them stays linear).
_WHITESPACE_TO_END = re.compile(rb"[ \t\r\n]*\Z")

#: Nesting deeper than this is refused: serialising deeper trees recurses too far.
MAX_DEPTH = 64


class StreamProblem(Exception):
    """Raised inside the parser; carries the stream error condition to send."""

    def __init__(self, condition: str, text: str | None = None):
        super().__init__(condition, text)
        self.condition = condition
        self.text = text


def _restricted(*_args):
    raise StreamProblem("restricted-xml", "DTDs, comments, processing instructions "
                        "and entity declarations are not allowed")


class HardenedElementStream(domish.ExpatElementStream):
    """Twisted's expat element stream with XMPP's restrictions and our limits.

    A stanza's size is measured from the byte where its start tag began, over
    however many reads it arrives in; bytes between stanzas (whitespace
    keep-alives) are not counted against anyone.
    """

    def __init__(self, max_stanza_size: int, max_depth: int = MAX_DEPTH):
        super().__init__()
        p = self.parser
        for handler in ("StartDoctypeDeclHandler", "EntityDeclHandler", "CommentHandler",
                        "ProcessingInstructionHandler", "SkippedEntityHandler",
                        "UnparsedEntityDeclHandler", "NotationDeclHandler",
                        "ExternalEntityRefHandler"):
            setattr(p, handler, _restricted)
        self.max_size = max_stanza_size
        self.max_depth = max_depth
        self.depth = 0
        self.fed = 0  # bytes given to this parser so far
        self.buffer = b""  # the read being parsed, which starts at byte buffer_start
        #: where the last stanza or whitespace between stanzas ended: when it is
        #: where the input ends, the parser holds nothing half-read
        self.settled = 0
        self.tail = b""  # the last two bytes of the read before
        self.childless = True  # the open stanza has no child or text (so far)
        self.head = b""  # a first read of one byte, kept until the encoding can be told
        self.buffer_start = 0
        self.mark = 0  # where the open stanza (or the current gap between stanzas) began

    def parse(self, buffer: bytes) -> None:
        if not self.fed:
            # expat would switch to UTF-16 on a BOM, and reads UTF-16 without
            # one when the second byte is a NUL; XMPP is UTF-8 only (RFC 6120
            # §11.6). The first two bytes decide, however the reads split them.
            head = self.head + buffer
            if len(head) < 2:
                self.head = head
                return
            self.head = b""
            if b"\0" in head[:2] or head[:2] in (b"\xfe\xff", b"\xff\xfe"):
                raise StreamProblem("unsupported-encoding", "XMPP streams are UTF-8")
            buffer = head
        self.tail = self.buffer[-2:]
        self.buffer_start = self.fed
        self.buffer = buffer
        self.fed += len(buffer)
        try:
            self.parser.Parse(buffer)
        except self.error as e:
            raise StreamProblem("not-well-formed", str(e)) from None
        # An unfinished stanza, or an unfinished token between stanzas, that is
        # already too large: refuse it now rather than buffer it to the end.
        if self.fed - self.mark > self.max_size:
            raise StreamProblem("policy-violation", "stanza too large")

    def _onStartElement(self, name, attrs):
        depth = self.depth = self.depth + 1
        if depth == 2:
            self.mark = self.parser.CurrentByteIndex
            self.childless = True
        elif depth > 2:
            self.childless = False
        if depth > self.max_depth:
            raise StreamProblem("policy-violation", "stanza nested too deeply")
        elif depth == 1:
            self.mark = self.fed
        super()._onStartElement(name, attrs)

    def _onEndElement(self, name):
        if self.depth == 2:
            # The stanza is complete: its length runs to the '>' of its end
            # tag. Expat points at the tag's '<' (which may lie in an earlier
            # read); the '>' is in this read, since expat reports an end tag
            # only once it has seen all of it. For an empty-element tag
            # (<presence/>) expat already points past its '/>'.
            index = self.parser.CurrentByteIndex
            at = index - self.buffer_start
            end = index
            if at < 0 or (self.buffer[at:at + 2] == b"</"
                          and not (self.childless and self._before(at) == b"/>")):
                close = self.buffer.find(b">", max(at, 0))
                if close >= 0:
                    end = self.buffer_start + close + 1
            if end - self.mark > self.max_size:
                raise StreamProblem("policy-violation", "stanza too large")
            self.mark = self.settled = end
        self.depth -= 1
        super()._onEndElement(name)

    def _onCdata(self, data):
        if self.depth < 2:
            self.mark = index = self.parser.CurrentByteIndex  # whitespace between stanzas
            at = index - self.buffer_start
            if at >= 0 and _WHITESPACE_TO_END.match(self.buffer, at):
                self.settled = self.fed  # nothing but whitespace to the end of the read
        else:
            self.childless = False
            super()._onCdata(data)

    def _before(self, at: int) -> bytes:
        """The two bytes before offset ``at`` of this read (from the last read
        when ``at`` is at its start)."""
        if at >= 2:
            return self.buffer[at - 2:at]
        return (self.tail + self.buffer[:at])[-2:]

    def at_rest(self) -> bool:
        """Between stanzas with nothing half-read: the parser could be dropped
        and a new one started on the same stream (see XMPPStream.park)."""
        return self.depth == 1 and self.settled == self.fed and not self.head

    def detach(self) -> None:
        """Stop delivering events: the stream was restarted (STARTTLS, SASL) and
        whatever else this parser still holds from the old layer is discarded."""
        self.DocumentStartEvent = self.ElementEvent = self.DocumentEndEvent = _discard
        self.depth = -(1 << 30)  # nothing it still parses can start a stanza


def _discard(*_args) -> None:
    pass


#: Stream headers for woken parsers, shared between streams (see XMPPStream.park).
_HEADERS: dict[bytes, bytes] = {}


@implementer(IPushProducer)
class XMPPStream(protocol.Protocol):
    """One XML stream over one transport: parsing, stream header, stream errors,
    and the output side's bounds.

    Subclasses implement :meth:`streamStarted` (the peer's header arrived) and
    :meth:`stanzaReceived` (one top-level element arrived).

    Output is bounded. The stream registers itself as the transport's
    streaming producer, so the transport says when its own buffer is full
    (``pauseProducing``: the peer is not reading as fast as we write). From
    then on, output waits here, in a *backlog* of serialised stanzas, until
    the transport has written everything (``resumeProducing``). The backlog
    over a quarter of ``max_output`` calls :meth:`congested` for each stanza
    added (the session stops reading from whoever is filling it), its emptying calls
    :meth:`decongested`. A backlog beyond ``max_output``, or no progress at
    all for ``send_timeout`` seconds, ends the stream; whatever was still in
    the backlog goes to :meth:`undelivered` (the session stores or bounces
    it), never silently away.

    Closing never waits for ever: the closing tag is written, the transport
    asked to close, and after ``close_timeout`` seconds it is aborted (a peer
    that never reads, a TLS peer that never completes its handshake or never
    answers our close_notify).
    """

    log = Logger()
    #: The content namespace of the stream (``jabber:client`` for c2s).
    namespace = ns.CLIENT
    _prefixes = {ns.STREAMS: "stream"}
    #: What ends our side of the stream (a framing of messages has its own).
    closing_tag = b"</stream:stream>"

    def __init__(self, max_stanza_size: int, *, clock: IReactorTime | None = None,
                 max_output: int = 1 << 20, send_timeout: float = 60, close_timeout: float = 5,
                 traffic: Callable[[int], None] = lambda size: None):
        self.max_stanza_size = max_stanza_size
        #: told the size of every read and write (the server's Reclaimer counts them)
        self.traffic = traffic
        self.clock: IReactorTime = clock if clock is not None else reactor
        self.max_output = max_output
        self.send_timeout = send_timeout
        self.close_timeout = close_timeout
        self.parser: HardenedElementStream | None = None
        self.header_sent = False
        self.closed = False
        self.stream_id = ""
        #: the local domain the peer opened the stream to
        self.domain: str | None = None
        #: the peer's address (IP) and "address:port" (for logs)
        self.address = "?"
        self.peer = "?"
        #: the stream header as a parser woken from park() is fed it
        self._resume_header: bytes | None = None
        #: Output the transport could not take yet: (bytes, stanza kind or None).
        self._backlog: collections.deque[tuple[bytes, str | None]] | None = None
        self._backlog_bytes = 0
        self._congested = False
        self._stall_call: IDelayedCall | None = None
        self._abort_call: IDelayedCall | None = None
        self._drain_waiters: list[defer.Deferred] | None = None

    # -- transport events --------------------------------------------------------

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self.address = str(getattr(peer, "host", "?"))
        self.peer = f"{self.address}:{getattr(peer, 'port', '?')}"
        self.transport.registerProducer(self, True)
        self.reset()

    def reset(self) -> None:
        """A fresh parser: at the start, and at each stream restart (TLS, SASL).

        RFC 6120 §5.4.3.3 and §6.4.6: nothing the peer sent on the old stream
        after the restart point may be used — plaintext smuggled behind
        ``<starttls/>`` in the same read would otherwise count as encrypted.
        """
        if self.parser is not None:
            self.parser.detach()
        self.parser = self._new_parser()
        self.header_sent = False
        self._resume_header = None

    def _new_parser(self) -> HardenedElementStream:
        parser = HardenedElementStream(self.max_stanza_size)
        parser.DocumentStartEvent = self._documentStarted
        parser.ElementEvent = self._elementReceived
        parser.DocumentEndEvent = self._documentEnded
        return parser

    # -- an idle stream's parser sleeps ------------------------------------------

    def park(self) -> bool:
        """Drop the parser of a stream that is between stanzas.

        An expat parser that has read a stream header holds 11–12 KiB (hash
        tables, string pools, its input buffer), a quarter of what an idle TLS
        connection costs. The next read builds a new one and feeds it the
        stream header again (its namespace declarations, silently) before the
        read itself; nothing half-read is ever dropped (see ``at_rest``).
        Returns whether the parser was dropped.
        """
        parser = self.parser
        if parser is None or self.closed or self._resume_header is None \
                or not parser.at_rest():
            return False
        self.parser = None
        return True

    def _wake(self) -> HardenedElementStream:
        parser = self._new_parser()
        parser.DocumentStartEvent = _discard
        parser.parse(self._resume_header)
        parser.DocumentStartEvent = self._documentStarted
        parser.mark = parser.settled = parser.fed
        self.parser = parser
        return parser

    def _remember_header(self, root: domish.Element) -> None:
        """What a new parser needs to read this stream's stanzas as the old
        one did: the default namespace and the prefixes the header declared."""
        prefixes = dict(root.localPrefixes)
        tag = next((p for p, uri in prefixes.items() if uri == ns.STREAMS), None)
        if tag is None:
            tag = "stream" if "stream" not in prefixes else "xmppd-stream"
            prefixes[tag] = ns.STREAMS
        declared = "".join(f" xmlns:{p}={quoteattr(uri)}" for p, uri in sorted(prefixes.items()))
        header = f"<{tag}:stream xmlns={quoteattr(root.defaultUri)}{declared}>".encode("utf-8")
        # Nearly every client sends the same header: share one bytes object.
        self._resume_header = _HEADERS.setdefault(header, header) \
            if len(_HEADERS) < 64 else header

    def dataReceived(self, data: bytes) -> None:
        if self.closed:
            return
        self.traffic(len(data))
        parser = self.parser
        if parser is None:
            parser = self._wake()
        try:
            parser.parse(data)
        except StreamProblem as e:
            if parser is self.parser:  # not a detached parser's leftovers
                self.stream_error(e.condition, e.text)
        except domish.ParserError as e:  # Twisted's own element-count limit
            if parser is self.parser:
                self.stream_error("policy-violation", str(e))

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        self.closed = True
        self.parser = None
        for call in (self._stall_call, self._abort_call):
            if call is not None and call.active():
                call.cancel()
        self._stall_call = self._abort_call = None
        self._lose_backlog()
        self._wake_drain_waiters()

    # -- parser events -----------------------------------------------------------

    def _documentStarted(self, root: domish.Element) -> None:
        if self.closed:
            return
        if root.uri != ns.STREAMS or root.name != "stream":
            self.stream_error("invalid-namespace", "the root must be <stream:stream/>")
        elif root.defaultUri != self.namespace:
            self.stream_error("invalid-namespace", f"the content namespace must be {self.namespace}")
        else:
            self._remember_header(root)
            self.streamStarted(root)

    def _elementReceived(self, element: domish.Element) -> None:
        if not self.closed:
            self.stanzaReceived(element)

    def _documentEnded(self) -> None:
        if not self.closed:
            self.streamEnded()

    def streamStarted(self, root: domish.Element) -> None:
        raise NotImplementedError

    def stanzaReceived(self, element: domish.Element) -> None:
        raise NotImplementedError

    def streamEnded(self) -> None:
        """The peer sent its closing tag: answer with ours and close."""
        self.close()

    # -- output ------------------------------------------------------------------

    def send_header(self, domain: str | None, version: bool = True) -> None:
        if not self.stream_id:
            self.stream_id = uuid.uuid4().hex
        frm = f" from='{domain}'" if domain else ""
        ver = " version='1.0'" if version else ""
        self.transport.write(
            (f"<?xml version='1.0'?><stream:stream xmlns='{self.namespace}' "
             f"xmlns:stream='{ns.STREAMS}'{frm} id='{self.stream_id}'{ver} xml:lang='en'>"
             ).encode("utf-8"))
        self.header_sent = True

    @property
    def shape(self) -> str:
        """What this stream writes stanzas as: its content namespace (see
        :class:`xmppd.router.fanout.Fanout`)."""
        return self.namespace

    def serialize(self, element: domish.Element) -> str:
        """The element as this stream writes it (content namespace as default)."""
        return element.toXml(prefixes=self._prefixes, defaultUri=self.namespace,
                             prefixesInScope=["stream"])

    def send(self, element: domish.Element | str) -> None:
        """Serialise and write one element (or a ready-made string).

        On a closed stream a stanza is handed to :meth:`undelivered`.
        """
        if self.closed:
            if not isinstance(element, str):
                self.undelivered(element.name, element)
            return
        if isinstance(element, str):
            data, kind = element.encode("utf-8"), None
        else:
            data, kind = self.serialize(element).encode("utf-8"), element.name
        self.traffic(len(data))
        backlog = self._backlog
        if backlog is None:
            self.transport.write(data)
            return
        backlog.append((data, kind))
        self._backlog_bytes += len(data)
        if self._backlog_bytes > self.max_output:
            self.log.info("{peer}: output buffer over {limit} bytes", peer=self.peer,
                          limit=self.max_output)
            self.output_overflow()
        elif self._backlog_bytes > self.max_output // 4:
            # Every time, not only at the crossing: each stanza may come from
            # another sender, and each of them is to be slowed.
            self._congested = True
            self.congested()

    @property
    def output_blocked(self) -> bool:
        """The transport's buffer is full: output waits in our backlog."""
        return self._backlog is not None

    @property
    def output_pending(self) -> int:
        """Bytes of output waiting for the transport (0 when it keeps up)."""
        return self._backlog_bytes

    def drained(self) -> defer.Deferred:
        """A Deferred that fires once everything sent so far has been handed to
        the transport (at once when nothing waits): a producer of much output
        (offline delivery, a history) waits for it between batches."""
        if self._backlog is None or self.closed:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        if self._drain_waiters is None:
            self._drain_waiters = []
        self._drain_waiters.append(d)
        return d

    # IPushProducer, as seen by our transport: it tells us to stop and go on.

    def pauseProducing(self) -> None:
        """The transport's buffer is full: keep output here from now on."""
        if self._backlog is None and not self.closed:
            self._backlog = collections.deque()
            self._backlog_bytes = 0
            self._restart_stall_timer()

    def resumeProducing(self) -> None:
        """The transport wrote everything it had: hand it the backlog."""
        pending = self._backlog
        if pending is None:
            return
        self._backlog = None
        self._backlog_bytes = 0
        if self.closed:
            return
        write = self.transport.write
        while pending:
            if self._backlog is not None:  # full again: the rest waits, in order
                self._backlog.extendleft(reversed(pending))
                self._backlog_bytes = sum(len(data) for data, _ in self._backlog)
                self._restart_stall_timer()
                return
            write(pending.popleft()[0])
        if self._backlog is None:
            if self._stall_call is not None and self._stall_call.active():
                self._stall_call.cancel()
            self._stall_call = None
            if self._congested:
                self._congested = False
                self.decongested()
            self._wake_drain_waiters()

    def stopProducing(self) -> None:
        """The transport is gone (connectionLost follows)."""

    def _restart_stall_timer(self) -> None:
        if self._stall_call is not None and self._stall_call.active():
            self._stall_call.cancel()
        self._stall_call = self.clock.callLater(self.send_timeout, self._stalled)

    def _stalled(self) -> None:
        self._stall_call = None
        if self._backlog is not None and not self.closed:
            self.log.info("{peer}: nothing could be written for {timeout} s ({pending} bytes "
                          "waiting)", peer=self.peer, timeout=self.send_timeout,
                          pending=self._backlog_bytes)
            self.output_stalled()

    def _lose_backlog(self) -> None:
        """What never reached the transport is undelivered. (The stream is
        ending: :meth:`decongested` is not called, since it would let the
        session process more input; the closing session releases what it
        throttled itself.)"""
        pending, self._backlog, self._backlog_bytes = self._backlog, None, 0
        self._congested = False
        for data, kind in pending or ():
            if kind is not None:
                self.undelivered(kind, data)

    def _wake_drain_waiters(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, None
        for d in waiters or ():
            d.callback(None)

    # -- what subclasses decide --------------------------------------------------

    def congested(self) -> None:
        """The backlog passed a quarter of ``max_output``: slow its sources."""

    def decongested(self) -> None:
        """The backlog is written (or gone): let its sources go on."""

    def output_overflow(self) -> None:
        """The backlog passed ``max_output``."""
        self.stream_error("policy-violation", "too much output waiting: the client does not read")

    def output_stalled(self) -> None:
        """Nothing could be written for ``send_timeout`` seconds."""
        self.stream_error("connection-timeout", "the client stopped reading")

    def undelivered(self, kind: str, stanza: domish.Element | bytes) -> None:
        """A stanza that will never be written (the stream closed first)."""

    # -- closing -----------------------------------------------------------------

    def stream_error(self, condition: str, text: str | None = None) -> None:
        """Send ``<stream:error/>`` and close, as RFC 6120 §4.9 prescribes."""
        if self.closed:
            return
        self.log.info("{peer}: stream error {condition}: {text}", peer=self.peer,
                      condition=condition, text=text or "")
        self._lose_backlog()  # the error comes next, not after queued stanzas
        if not self.header_sent:
            self.send_header(self.domain)
        error = domish.Element((ns.STREAMS, "error"))
        error.addElement((ns.STREAM_ERRORS, condition))
        if text:
            error.addElement((ns.STREAM_ERRORS, "text"), content=text)
        self.transport.write(self.serialize(error).encode("utf-8"))
        self.close()

    def close(self) -> None:
        """Close our side of the stream and the connection, for certain: what
        waits in the backlog is undelivered, and a transport that cannot close
        gracefully within ``close_timeout`` is aborted."""
        if self.closed:
            return
        self._lose_backlog()
        if not self.header_sent:
            self.send_header(self.domain)
        self.transport.write(self.closing_tag)
        self.closed = True
        # A registered producer would keep the transport open (Twisted waits
        # for it to finish); we have nothing more to produce.
        self.transport.unregisterProducer()
        self.transport.loseConnection()
        self._abort_call = self.clock.callLater(self.close_timeout, self._abort)

    def _abort(self) -> None:
        self._abort_call = None
        self.log.info("{peer}: no clean close within {timeout} s: aborted", peer=self.peer,
                      timeout=self.close_timeout)
        self.aborted()
        self.transport.abortConnection()

    def aborted(self) -> None:
        """The transport is being aborted after a close that did not complete."""


def as_element(stanza: domish.Element | bytes) -> domish.Element | None:
    """A stanza a stream gave up on (see :meth:`XMPPStream.undelivered`): an
    element as it was, or its serialised bytes parsed again (None when they
    cannot be)."""
    if not isinstance(stanza, bytes):
        return stanza
    try:
        return parse_element(stanza, max_size=len(stanza) + 1024)
    except (ValueError, StreamProblem):
        return None


def parse_element(xml: str | bytes, max_size: int = 1 << 20) -> domish.Element:
    """Parse one stanza stored as text (default namespace ``jabber:client``).

    For XML the server wrote itself (offline messages, private storage): it goes
    through the same restricted parser as the wire, so a damaged store cannot
    smuggle in what a client could not.
    """
    result: list[domish.Element] = []
    stream = HardenedElementStream(max_size)
    stream.DocumentStartEvent = lambda root: None
    stream.ElementEvent = result.append
    stream.DocumentEndEvent = lambda: None
    stream.parse(f"<stream:stream xmlns='{ns.CLIENT}' xmlns:stream='{ns.STREAMS}'>".encode())
    stream.parse(xml.encode("utf-8") if isinstance(xml, str) else xml)
    if len(result) != 1:
        raise ValueError(f"expected one element, got {len(result)}")
    return result[0]
