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

import uuid

from twisted.internet import protocol
from twisted.logger import Logger
from twisted.words.xish import domish

from xmppd import ns

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
        self.mark = 0  # where the open stanza (or the current gap between stanzas) began

    def parse(self, buffer: bytes) -> None:
        if not self.fed and (buffer[:1] == b"\0" or buffer[:2] in (b"\xfe\xff", b"\xff\xfe")):
            # expat would switch to UTF-16 on a BOM or a NUL; XMPP is UTF-8 only.
            raise StreamProblem("unsupported-encoding", "XMPP streams are UTF-8")
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
        elif depth > self.max_depth:
            raise StreamProblem("policy-violation", "stanza nested too deeply")
        elif depth == 1:
            self.mark = self.fed
        super()._onStartElement(name, attrs)

    def _onEndElement(self, name):
        if self.depth == 2:
            # A stanza complete within one read: check its own byte length.
            index = self.parser.CurrentByteIndex
            if index - self.mark > self.max_size:
                raise StreamProblem("policy-violation", "stanza too large")
            self.mark = index
        self.depth -= 1
        super()._onEndElement(name)

    def _onCdata(self, data):
        if self.depth < 2:
            self.mark = self.parser.CurrentByteIndex  # whitespace between stanzas
        else:
            super()._onCdata(data)

    def detach(self) -> None:
        """Stop delivering events: the stream was restarted (STARTTLS, SASL) and
        whatever else this parser still holds from the old layer is discarded."""
        self.DocumentStartEvent = self.ElementEvent = self.DocumentEndEvent = _discard
        self.depth = -(1 << 30)  # nothing it still parses can start a stanza


def _discard(*_args) -> None:
    pass


class XMPPStream(protocol.Protocol):
    """One XML stream over one transport: parsing, stream header, stream errors.

    Subclasses implement :meth:`streamStarted` (the peer's header arrived) and
    :meth:`stanzaReceived` (one top-level element arrived).
    """

    log = Logger()
    #: The content namespace of the stream (``jabber:client`` for c2s).
    namespace = ns.CLIENT
    _prefixes = {ns.STREAMS: "stream"}

    def __init__(self, max_stanza_size: int):
        self.max_stanza_size = max_stanza_size
        self.parser: HardenedElementStream | None = None
        self.header_sent = False
        self.closed = False
        self.stream_id = ""
        self.local_domain: str | None = None
        self.peer = "?"

    # -- transport events --------------------------------------------------------

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self.peer = f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"
        self.reset()

    def reset(self) -> None:
        """A fresh parser: at the start, and at each stream restart (TLS, SASL).

        RFC 6120 §5.4.3.3 and §6.4.6: nothing the peer sent on the old stream
        after the restart point may be used — plaintext smuggled behind
        ``<starttls/>`` in the same read would otherwise count as encrypted.
        """
        if self.parser is not None:
            self.parser.detach()
        self.parser = HardenedElementStream(self.max_stanza_size)
        self.parser.DocumentStartEvent = self._documentStarted
        self.parser.ElementEvent = self._elementReceived
        self.parser.DocumentEndEvent = self._documentEnded
        self.header_sent = False

    def dataReceived(self, data: bytes) -> None:
        if self.closed:
            return
        parser = self.parser
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

    # -- parser events -----------------------------------------------------------

    def _documentStarted(self, root: domish.Element) -> None:
        if self.closed:
            return
        if root.uri != ns.STREAMS or root.name != "stream":
            self.stream_error("invalid-namespace", "the root must be <stream:stream/>")
        elif root.defaultUri != self.namespace:
            self.stream_error("invalid-namespace", f"the content namespace must be {self.namespace}")
        else:
            self.streamStarted(root)

    def _elementReceived(self, element: domish.Element) -> None:
        if not self.closed:
            self.stanzaReceived(element)

    def _documentEnded(self) -> None:
        if not self.closed:
            self.close()  # the disconnect is logged by the session

    def streamStarted(self, root: domish.Element) -> None:
        raise NotImplementedError

    def stanzaReceived(self, element: domish.Element) -> None:
        raise NotImplementedError

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

    def serialize(self, element: domish.Element) -> str:
        """The element as this stream writes it (content namespace as default)."""
        return element.toXml(prefixes=self._prefixes, defaultUri=self.namespace,
                             prefixesInScope=["stream"])

    def send(self, element: domish.Element | str) -> None:
        """Serialise and write one element (or a ready-made string)."""
        if self.closed:
            return
        if not isinstance(element, str):
            element = self.serialize(element)
        self.transport.write(element.encode("utf-8"))

    def stream_error(self, condition: str, text: str | None = None) -> None:
        """Send ``<stream:error/>`` and close, as RFC 6120 §4.9 prescribes."""
        if self.closed:
            return
        self.log.info("{peer}: stream error {condition}: {text}", peer=self.peer,
                      condition=condition, text=text or "")
        if not self.header_sent:
            self.send_header(self.local_domain)
        error = domish.Element((ns.STREAMS, "error"))
        error.addElement((ns.STREAM_ERRORS, condition))
        if text:
            error.addElement((ns.STREAM_ERRORS, "text"), content=text)
        self.send(error)
        self.close()

    def close(self) -> None:
        """Close our side of the stream and the connection."""
        if self.closed:
            return
        if not self.header_sent:
            self.send_header(self.local_domain)
        self.transport.write(b"</stream:stream>")
        self.closed = True
        self.transport.loseConnection()


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
