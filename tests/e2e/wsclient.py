"""An XMPP client over WebSocket (RFC 7395) for end-to-end tests.

Neither slixmpp nor aioxmpp speaks WebSocket, so this is a small client of
our own: a blocking socket, ``wsproto`` for the handshake and the frames,
ElementTree for the messages. Like :mod:`tests.e2e.rawxmpp` it sends exactly
what it is given (so tests can send garbage: bad frames, binary messages, two
stanzas in one message) and every wait has a deadline whose failure says
what the server did.

    c = WSClient.connect(server.host, server.http_port)
    features = c.open_stream()
    c.sasl_scram("alice", "secret")
    c.open_stream()
    c.bind("web")

:func:`login` does all of that (SCRAM-SHA-256) and returns a bound client.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Callable

from wsproto import ConnectionType, WSConnection
from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection, Ping, Pong,
                            RejectConnection, RejectData, Request, TextMessage)

from tests.e2e.rawxmpp import (Negotiation, NS_CLIENT, NS_STREAMS, client_tls_context, dump,
                               q, stream_error_condition)

NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
PATH = "/xmpp-websocket"
DEFAULT_TIMEOUT = 10.0


@dataclass
class Rejected(Exception):
    """The server answered the handshake with an HTTP response, not 101."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class WSClient(Negotiation):
    """One WebSocket connection and the server's framed XMPP stream on it."""

    NS_ATTR = f" xmlns='{NS_CLIENT}'"  # each message is a document of its own

    def __init__(self, sock: socket.socket, ws: WSConnection, subprotocol: str | None,
                 timeout: float = DEFAULT_TIMEOUT):
        self.sock = sock
        self.ws = ws
        self.subprotocol = subprotocol
        self.timeout = timeout
        self.messages: list[str] = []  # every text message received, in order
        self.elements: list[ET.Element] = []  # parsed messages not yet taken
        self.binary: list[bytes] = []
        self.pongs: list[bytes] = []
        self.pings: list[bytes] = []  # the server's pings (answered at once)
        self.close_code: int | None = None  # the server's WebSocket close code
        self.close_reason = ""
        self.eof = False
        self.jid: str | None = None
        self._text = ""

    # -- connecting ------------------------------------------------------------------

    @classmethod
    def connect(cls, host: str, port: int, path: str = PATH, protocols: list[str] | None = None,
                tls: bool = False, timeout: float = DEFAULT_TIMEOUT,
                headers: list[tuple[bytes, bytes]] | None = None) -> "WSClient":
        """Open the WebSocket (``protocols`` defaults to ``["xmpp"]``); raise
        :class:`Rejected` if the server answers with anything but 101."""
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            sock = client_tls_context().wrap_socket(sock, server_hostname="localhost")
        ws = WSConnection(ConnectionType.CLIENT)
        sock.sendall(ws.send(Request(host=f"localhost:{port}", target=path,
                                     subprotocols=["xmpp"] if protocols is None else protocols,
                                     extra_headers=headers or [])))
        deadline = time.monotonic() + timeout
        rejected: Rejected | None = None
        while True:
            data = _recv(sock, deadline)
            if data is None:
                raise AssertionError("no answer to the WebSocket handshake")
            ws.receive_data(data or None)
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    client = cls(sock, ws, event.subprotocol, timeout)
                    return client
                if isinstance(event, RejectConnection):
                    rejected = Rejected(event.status_code,
                                        {k.decode().lower(): v.decode() for k, v in event.headers})
                    if not event.has_body:
                        sock.close()
                        raise rejected
                elif isinstance(event, RejectData) and rejected is not None:
                    rejected.body += event.data
                    if event.body_finished:
                        sock.close()
                        raise rejected
            if not data:
                sock.close()
                if rejected is not None:
                    raise rejected
                raise AssertionError("the server closed the connection during the handshake")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "WSClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- receiving ---------------------------------------------------------------------

    def _receive(self, deadline: float) -> None:
        if self.eof:
            return
        data = _recv(self.sock, deadline)
        if data is None:
            return
        if not data:
            self.eof = True
            try:
                self.ws.receive_data(None)
            except Exception:
                pass
            return
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, TextMessage):
                self._text += event.data
                if event.message_finished:
                    text, self._text = self._text, ""
                    self.messages.append(text)
                    self.elements.append(ET.fromstring(text))
            elif isinstance(event, BytesMessage):
                self.binary.append(bytes(event.data))
            elif isinstance(event, Ping):
                self.pings.append(bytes(event.payload))
                self._write(self.ws.send(event.response()))
            elif isinstance(event, Pong):
                self.pongs.append(bytes(event.payload))
            elif isinstance(event, CloseConnection):
                self.close_code, self.close_reason = event.code, event.reason or ""
                try:
                    self._write(self.ws.send(event.response()))
                except Exception:
                    pass

    def describe(self) -> str:
        return (f"eof={self.eof} close={self.close_code} {self.close_reason!r} "
                f"messages (last 8): {self.messages[-8:]!r}")

    def wait_for(self, predicate: Callable[[], bool], timeout: float | None = None,
                 what: str = "condition") -> None:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not predicate():
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out waiting for {what}; {self.describe()}")
            if self.eof:
                raise AssertionError(f"connection closed while waiting for {what}; "
                                     f"{self.describe()}")
            self._receive(deadline)

    def next_element(self, match: Callable[[ET.Element], bool] | None = None,
                     timeout: float | None = None, what: str | None = None) -> ET.Element:
        """The next message's element (the first that ``match`` accepts, skipping others)."""
        def found() -> bool:
            return any(match is None or match(e) for e in self.elements)
        self.wait_for(found, timeout, what or "a message")
        for i, element in enumerate(self.elements):
            if match is None or match(element):
                del self.elements[: i + 1]
                return element
        raise AssertionError("unreachable")


    #: what :class:`Negotiation` waits with
    next_stanza = next_element

    def wait_closed(self, timeout: float | None = None) -> None:
        """Wait until the server closed the TCP connection."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.eof:
            if time.monotonic() >= deadline:
                raise AssertionError(f"the server did not close the connection; {self.describe()}")
            self._receive(deadline)

    def expect_stream_error(self, condition: str, timeout: float | None = None) -> ET.Element:
        """The next thing the server says is ``<stream:error><condition/>``, then
        ``<close/>``, then the WebSocket closes."""
        element = self.next_element(lambda e: e.tag == q(NS_STREAMS, "error"), timeout,
                                    f"<stream:error><{condition}/>")
        got = stream_error_condition(element)
        assert got == condition, f"expected stream error {condition}, got {got}: {dump(element)}"
        self.next_element(lambda e: e.tag == q(NS_FRAMING, "close"), timeout, "<close/>")
        self.wait_closed(timeout)
        return element

    def expect_websocket_close(self, code: int, timeout: float | None = None) -> None:
        """The server closes the WebSocket with ``code`` (no XMPP-level error)."""
        self.wait_closed(timeout)
        assert self.close_code == code, self.describe()

    # -- sending -----------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, text: str) -> None:
        """One text message."""
        self._write(self.ws.send(TextMessage(text)))

    def send_bytes(self, data: bytes) -> None:
        """One binary message."""
        self._write(self.ws.send(BytesMessage(data)))

    def send_raw(self, data: bytes) -> None:
        """Bytes on the socket as they are (hand-made frames)."""
        self._write(data)

    def ping(self, payload: bytes = b"") -> None:
        self._write(self.ws.send(Ping(payload)))

    # -- negotiation -------------------------------------------------------------------

    def open_stream(self, to: str = "localhost", timeout: float | None = None) -> ET.Element:
        """Send ``<open/>``; check the server's ``<open/>``; return its features."""
        self.send(f"<open xmlns='{NS_FRAMING}' to='{to}' version='1.0'/>")
        opened = self.next_element(timeout=timeout, what="<open/>")
        assert opened.tag == q(NS_FRAMING, "open"), dump(opened)
        assert opened.get("version") == "1.0" and opened.get("id"), dump(opened)
        features = self.next_element(timeout=timeout, what="<stream:features/>")
        assert features.tag == q(NS_STREAMS, "features"), dump(features)
        return features

    def close_stream(self, timeout: float | None = None) -> None:
        """``<close/>``: the server answers ``<close/>`` and closes the WebSocket."""
        self.send(f"<close xmlns='{NS_FRAMING}'/>")
        self.next_element(lambda e: e.tag == q(NS_FRAMING, "close"), timeout, "<close/>")
        self.wait_closed(timeout)


def _recv(sock: socket.socket, deadline: float) -> bytes | None:
    """One read: bytes, b"" at the end, None if nothing came before the deadline."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return None
    if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
        if not poller.poll(remaining * 1000):
            return None
    try:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        return sock.recv(65536)
    except (socket.timeout, ssl.SSLWantReadError):
        return None
    except OSError:
        return b""


def login(host: str, port: int, user: str, password: str, resource: str | None = None,
          domain: str = "localhost", tls: bool = False,
          timeout: float = DEFAULT_TIMEOUT) -> WSClient:
    """Open the WebSocket, SCRAM-SHA-256, bind: a client with :attr:`WSClient.jid` set."""
    client = WSClient.connect(host, port, tls=tls, timeout=timeout)
    try:
        client.open_stream(domain)
        client.sasl_scram(user, password)
        client.open_stream(domain)
        client.bind(resource)
    except BaseException:
        client.close()
        raise
    return client
