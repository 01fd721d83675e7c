"""XMPP over WebSocket (RFC 7395) at ``/xmpp-websocket``, the path Prosody uses.

Why wsproto under our own resource, not ``twisted.web.websocket`` nor autobahn:
Twisted 26's ``WebSocketResource`` (itself on wsproto) cannot answer a
subprotocol, which RFC 7395 requires (``xmpp``), joins a message's chunks
without any bound and has no ping or close timers; autobahn has all of that
but brings WAMP's serialisers (cbor2, msgpack, ujson, txaio) and a second HTTP
handshake parser beside Twisted Web's. So wsproto does the handshake and the
frames, the connection is taken over from Twisted Web's channel as Twisted's
own WebSocket support does it, and the limits and timers are ours.

A WebSocket session is an ordinary client session: the same
:class:`~xmppd.streams.negotiation.ClientSession` (features, SASL, bind,
stanza checks) as a TCP client, the same parser, bounds and time-outs
(``[c2s] auth_timeout``, ``close_timeout``, ``send_timeout``,
``max_output_buffer``; the TCP transport under the WebSocket applies the
backpressure). What differs is only the framing, and here it is as Prosody
0.12's mod_websocket does it, message for message:

* the handshake must offer the ``xmpp`` subprotocol, else ``501``; a GET
  that is no WebSocket handshake gets a short page saying what this is;
* each message is one element (RFC 7395 §3.3.3): ``<open/>`` and
  ``<close/>`` in ``urn:ietf:params:xml:ns:xmpp-framing`` instead of the
  stream header and closing tag, one stanza per message, a stream restart
  after SASL is a new ``<open/>``; every element we send declares its
  namespaces; an element before ``<open/>`` is ``invalid-namespace``;
* every element the client sends declares its namespace too: nothing is
  inherited from ``<open/>`` or from an earlier message, so a ``<message>``
  without ``xmlns='jabber:client'`` is in no namespace, and (authenticated or
  not, bound or not) it is the stream error ``unsupported-stanza-type``, no
  text, then ``<close/>`` and a WebSocket close 1000 "Stream closed";
* a message over ``[server] max_stanza_size`` is the stream error
  ``policy-violation`` ("stanza too large"); a binary message closes the
  WebSocket with 1003, a text message not starting with ``<`` with 1007,
  malformed frames with wsproto's 1002/1007; malformed XML is
  ``not-well-formed``;
* pings are answered; after ``[c2s] idle_timeout`` seconds of silence from a
  bound client we ping it (XEP-0478 idle-seconds, Prosody's keepalive);
* ``<close/>`` is answered with ``<close/>`` and a WebSocket close (1000).

Where we are stricter than Prosody: a message holding two elements, or a part
of one, is ``not-well-formed`` (Prosody feeds messages into one XML stream and
accepts both, though RFC 7395 §3.3.3 says each message MUST hold exactly
one element); WebSocket fragmentation (continuation frames) is accepted,
since RFC 6455 lets intermediaries re-fragment (Prosody refuses it).

Encryption: no STARTTLS inside a WebSocket (RFC 7395 §3.9; ``<starttls/>``
gets the TLS failure, as Prosody answers it). A session counts as secure
over HTTPS, from loopback (a local client, or a local proxy saying
``X-Forwarded-Proto: https``, as Prosody's trusted_proxies default), and not
otherwise: then ``[c2s] require_encryption`` offers no SASL at all and PLAIN
is never offered, as over plain TCP.
"""

from __future__ import annotations

import ipaddress
import struct
import uuid
from typing import TYPE_CHECKING, Callable

from twisted.internet import protocol
from twisted.python.failure import Failure
from twisted.web import resource, server as webserver
from twisted.words.xish import domish
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection, Ping, Request,
                            TextMessage)
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError

from xmppd import ns
from xmppd.streams.framing import SessionStream

if TYPE_CHECKING:
    from xmppd.server import XMPPServer

PATH = "/xmpp-websocket"
SUBPROTOCOL = "xmpp"

#: RFC 6455 close codes we send
NORMAL = 1000
UNSUPPORTED_DATA = 1003
INVALID_PAYLOAD = 1007

_PAGE = (b"<!DOCTYPE html><html><head><meta charset='utf-8'><title>XMPP over WebSocket"
         b"</title></head><body><p>This is xmppd's XMPP over WebSocket endpoint (RFC 7395): "
         b"point an XMPP client's WebSocket URL here.</p></body></html>")


def register(server: XMPPServer) -> Callable[[], None]:
    """Mount the endpoint on the server's HTTP service (when ``websocket`` is
    among ``[http] endpoints``); returns the unmount function."""
    return server.http.add_route(PATH, WebSocketResource(server), endpoint="websocket",
                                 link_rel=ns.ALT_CONNECTIONS_WEBSOCKET, max_body=0)


class WebSocketResource(resource.Resource):
    """The HTTP side: the handshake, then the connection is the session's."""

    isLeaf = True

    def __init__(self, server: XMPPServer):
        super().__init__()
        self.xmpp = server  # (Resource.server is Twisted Web's)

    def render_GET(self, request: webserver.Request) -> bytes | int:
        if not request.requestHeaders.hasHeader(b"sec-websocket-key"):
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            return _PAGE
        offered = [token.strip()
                   for value in request.requestHeaders.getRawHeaders(b"sec-websocket-protocol", [])
                   for token in value.decode("latin-1").split(",")]
        if SUBPROTOCOL not in offered:
            # As Prosody: a client that does not speak the xmpp subprotocol
            # gets 501 (RFC 7395 §3.1: no XMPP session without it).
            return _refuse(request, 501, "the 'xmpp' WebSocket subprotocol is required "
                                         "(RFC 7395 3.1)")
        upgrade = getattr(request.channel, "_protocolUpgradeForWebsockets", None)
        if upgrade is None or request.channel.transport is None:  # HTTP/2, or gone
            return _refuse(request, 400, "WebSocket needs an HTTP/1.1 connection")
        handshake = H11Handshake(ConnectionType.SERVER)
        headers = [(name, value) for name, values in request.requestHeaders.getAllRawHeaders()
                   for value in values]
        try:
            handshake.initiate_upgrade_connection(headers, request.path)
            event = next((e for e in handshake.events() if isinstance(e, Request)), None)
            if event is None:
                raise RemoteProtocolError("no WebSocket request", event_hint=None)
            response = handshake.send(AcceptConnection(subprotocol=SUBPROTOCOL))
        except RemoteProtocolError as e:
            return _refuse(request, 400, f"not a valid WebSocket handshake: {e}")
        connection = handshake.connection
        assert connection is not None
        address, port, secure, channel = client_origin(request)
        wire = WebSocketWire(self.xmpp, connection, response, address, port, secure, channel)
        upgrade(wire)
        return webserver.NOT_DONE_YET


def _refuse(request: webserver.Request, code: int, text: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return text.encode("utf-8") + b"\n"


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def client_origin(request: webserver.Request) -> tuple[str, int | str, bool, str]:
    """(address, port, secure, how) of the client behind ``request``.

    Over HTTPS the connection is secure. A connection from loopback that no
    proxy speaks for (no ``X-Forwarded-For`` / ``-Proto``) is a client on this
    machine, whose traffic crosses no network: secure, unless ``[http]
    loopback_is_secure`` is off (a proxy that sends no headers). A loopback proxy is
    trusted to name the client (the last address it appended to
    ``X-Forwarded-For``) and whether it used HTTPS (``X-Forwarded-Proto``),
    as Prosody trusts 127.0.0.1 and ::1 by default. Anyone else: as seen.
    """
    peer = request.getClientAddress()
    host, port = str(getattr(peer, "host", "?")), getattr(peer, "port", "?")
    https = request.isSecure()
    if not _loopback(host):
        return host, port, https, "WebSocket, TLS" if https else "WebSocket, no TLS"
    forwarded = request.getHeader(b"x-forwarded-for")
    proto = request.getHeader(b"x-forwarded-proto")
    if forwarded is None and proto is None:
        http = getattr(getattr(getattr(request, "channel", None), "site", None), "http", None)
        trusted = https or getattr(http, "loopback_is_secure", True)
        return host, port, trusted, "WebSocket, TLS" if https else "WebSocket, loopback"
    if forwarded:
        for candidate in reversed([a.strip() for a in forwarded.decode("latin-1").split(",")]):
            if candidate and not _loopback(candidate):
                host, port = candidate, "?"
                break
    secure = https or (proto is not None and proto.strip().lower() == b"https")
    return host, port, secure, "WebSocket, TLS at a proxy" if secure else "WebSocket, no TLS"


def _text_frame(data: bytes) -> bytes:
    """An unfragmented, unmasked RFC 6455 text frame header for ``data`` (a
    server's frames are never masked; no extension is negotiated)."""
    size = len(data)
    if size < 126:
        return bytes((0x81, size))
    if size < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, size)
    return struct.pack("!BBQ", 0x81, 127, size)


class WebSocketWire(protocol.Protocol):
    """RFC 6455 on the upgraded connection, below a :class:`WebSocketStream`.

    To the TCP connection it is the protocol (frames in); to the stream above
    it is the transport: each ``write`` is one text message, and reading,
    producers, closing and aborting go to the TCP connection.
    """

    def __init__(self, server: XMPPServer, connection: Connection, response: bytes,
                 address: str, port: int | str, secure: bool, channel: str):
        self.server = server
        self.connection = connection
        self.response = response
        self.max_message = server.config.server["max_stanza_size"]
        self.stream = WebSocketStream(server, self, address, port, secure, channel)
        self._parts: list[bytes] = []
        self._size = 0

    # -- the TCP side --------------------------------------------------------------

    def makeConnection(self, transport) -> None:
        self.transport = transport
        self.connected = 1
        transport.write(self.response)
        self.response = b""
        self.stream.makeConnection(self)

    def dataReceived(self, data: bytes) -> None:
        connection = self.connection
        if connection.state is ConnectionState.CLOSED:
            return
        connection.receive_data(data)
        for event in connection.events():
            if isinstance(event, TextMessage):
                self._text(event)
            elif isinstance(event, Ping):
                # Answered at once, unless our writes already wait for the
                # client: a client that pings and never reads must not grow
                # the transport's buffer with pongs (RFC 6455 §5.5.3 lets us
                # answer only the most recent one).
                if not self.stream.output_blocked and connection.state is ConnectionState.OPEN:
                    self.transport.write(connection.send(event.response()))
            elif isinstance(event, BytesMessage):
                self.fail(UNSUPPORTED_DATA, "only text messages carry XMPP (RFC 7395 3.2)")
            elif isinstance(event, CloseConnection):
                # The client closes the WebSocket, or sent frames wsproto
                # could not parse (reported as a close with its code).
                if connection.state is ConnectionState.REMOTE_CLOSING:
                    self.transport.write(connection.send(event.response()))
                else:
                    self.fail(event.code, event.reason or "")
                self.stream.close()
            if self.stream.closed:
                break

    def _text(self, event: TextMessage) -> None:
        if self.stream.closed:
            return
        chunk = event.data.encode("utf-8")
        self._size += len(chunk)
        if self._size > self.max_message:
            self._parts, self._size = [], 0
            self.stream.stream_error("policy-violation", "stanza too large")
            return
        self._parts.append(chunk)
        if event.message_finished:
            message = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
            self._parts, self._size = [], 0
            self.stream.message_received(message)

    def fail(self, code: int, reason: str) -> None:
        """Close the WebSocket with ``code``; the XMPP stream ends without a
        word more (as Prosody closes on frames it refuses)."""
        if self.connection.state is ConnectionState.OPEN:
            self.transport.write(self.connection.send(CloseConnection(code, reason[:120])))
        self.stream.close()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.connected = 0
        self.stream.connectionLost(reason)

    # -- the stream's transport ------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.connection.state is ConnectionState.OPEN:
            self.transport.writeSequence([_text_frame(data), data])

    def writeSequence(self, data: list[bytes]) -> None:
        self.write(b"".join(data))

    def ping(self) -> None:
        if self.connection.state is ConnectionState.OPEN:
            self.transport.write(self.connection.send(Ping(b"")))

    def loseConnection(self) -> None:
        if self.connection.state is ConnectionState.OPEN:
            self.transport.write(self.connection.send(CloseConnection(NORMAL, "Stream closed")))
        self.transport.loseConnection()

    def abortConnection(self) -> None:
        self.transport.abortConnection()

    def getPeer(self):
        return self.transport.getPeer()

    def getHost(self):
        return self.transport.getHost()

    def registerProducer(self, producer, streaming: bool) -> None:
        # Twisted Web's channel was the connection's producer; from now on the
        # stream is (it is told when the client reads too slowly).
        self.transport.unregisterProducer()
        self.transport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.transport.unregisterProducer()

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        self.transport.stopProducing()


class WebSocketStream(SessionStream):
    """The XMPP framing of RFC 7395: one element per message.

    The messages are parsed by one hardened parser per connection, as if they
    were one XML stream under a header of our own (so the limits, the
    restricted XML and the parked parser of an idle session are TCP's); each
    message must then have given exactly one complete element. That header
    declares no default namespace: a TCP stream's header makes
    ``jabber:client`` the default for every stanza, but a WebSocket message
    is a document of its own (RFC 7395 §3.3.3), so what it does not declare
    must stay in no namespace, for :meth:`message_received` to refuse.
    """

    closing_tag = f"<close xmlns='{ns.FRAMING}'/>".encode()
    shape = (ns.CLIENT, "websocket")
    starttls = False
    _ROOT = f"<stream:stream xmlns:stream='{ns.STREAMS}'>".encode()

    def __init__(self, server: XMPPServer, wire: WebSocketWire, address: str, port: int | str,
                 secure: bool, channel: str):
        super().__init__(server, secure)
        self.wire = wire
        self.channel = channel
        self._origin = (address, port)
        #: waiting for <open/> (at the start and after a restart)
        self._opening = True
        #: elements of the message being parsed
        self._message: list[domish.Element] | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        address, port = self._origin
        self.address, self.peer = address, f"{address}:{port}"
        self.log.info("websocket {peer} connected ({channel})", peer=self.peer,
                      channel=self.channel)
        self.session.connected()

    def reset(self) -> None:
        """A parser, under the header of our own (only at the start: a stream
        restart is a new ``<open/>`` message, and no message can smuggle
        anything behind the one element it holds)."""
        super().reset()
        # Our own header has no content namespace, so it skips the check a
        # client's stream header gets; it is remembered all the same, for a
        # parked parser to be woken under it.
        self.parser.DocumentStartEvent = self._remember_header
        self.parser.parse(self._ROOT)

    def streamStarted(self, root: domish.Element) -> None:
        """Never a client's: the stream starts with ``<open/>`` (see :meth:`reset`)."""

    def streamEnded(self) -> None:
        self.stream_error("not-well-formed", "a message closed the stream; send <close/>")

    def restart(self) -> None:
        self.header_sent = False
        self._opening = True

    def waiting_for(self) -> str:
        return "no <open/>"

    def keepalive(self) -> None:
        self.wire.ping()

    # -- messages --------------------------------------------------------------------

    def message_received(self, data: bytes) -> None:
        """One complete text message from the client (UTF-8)."""
        if self.closed:
            return
        if data[:1] != b"<":
            self.wire.fail(INVALID_PAYLOAD, "a message must start with '<' (RFC 7395 3.3.3)")
            return
        self._message = []
        try:
            self.dataReceived(data)
        finally:
            elements, self._message = self._message, None
        if self.closed:
            return
        if len(elements) != 1 or self.parser is None or not self.parser.at_rest():
            self.stream_error("not-well-formed", "one XML element per WebSocket message "
                                                 "(RFC 7395 3.3.3)")
            return
        element = elements[0]
        if element.uri == ns.FRAMING and element.name == "open" and self._opening:
            self._opening = False
            self.session.stream_opened(element.getAttribute("to"), element.getAttribute("version"))
        elif element.uri == ns.FRAMING and element.name == "close":
            self.session.stream_closed()
        elif self._opening:
            self.stream_error("invalid-namespace", "the stream starts with <open/> (RFC 7395 3.4)")
        elif not element.uri:
            # As Prosody 0.12: an element in no namespace is no stanza (nor
            # SASL, nor <close/>) whatever the session's stage; its stream
            # error has no text.
            self.log.info("websocket {peer}: <{name}/> declares no namespace (RFC 7395 3.3.3)",
                          peer=self.peer, name=element.name)
            self.stream_error("unsupported-stanza-type")
        else:
            self.session.element_received(element)

    def stanzaReceived(self, element: domish.Element) -> None:
        if self._message is not None:
            self._message.append(element)

    # -- output ----------------------------------------------------------------------

    def send_header(self, domain: str | None, version: bool = True) -> None:
        if not self.stream_id:
            self.stream_id = uuid.uuid4().hex
        frm = f" from='{domain}'" if domain else ""
        self.transport.write(f"<open xmlns='{ns.FRAMING}'{frm} id='{self.stream_id}' "
                             f"version='1.0' xml:lang='en'/>".encode("utf-8"))
        self.header_sent = True

    def serialize(self, element: domish.Element) -> str:
        """Each message is a document of its own: its element declares its
        namespace (``jabber:client`` for stanzas) and the ``stream`` prefix."""
        return element.toXml(prefixes=self._prefixes)

    # -- life --------------------------------------------------------------------------

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if not self.closed:
            who = self.jid.full() if self.jid is not None else self.user or "unauthenticated"
            self.log.info("websocket {peer} disconnected ({who}): {reason}", peer=self.peer,
                          who=who, reason=reason.getErrorMessage() if reason else "")
        super().connectionLost(reason)

    def close(self) -> None:
        if self.closed:
            return
        if self.jid is not None:
            self.log.info("websocket {peer} closing ({who})", peer=self.peer, who=self.jid.full())
        super().close()

    def aborted(self) -> None:
        self.server.counters["websocket aborted after close"] += 1

    def output_overflow(self) -> None:
        self.server.counters["websocket output overflow"] += 1
        super().output_overflow()

    def output_stalled(self) -> None:
        self.server.counters["websocket output stalled"] += 1
        super().output_stalled()
