"""The load generator: many XMPP client connections in one asyncio process.

It speaks just enough XMPP to log in the way real clients do (stream header,
STARTTLS, SCRAM-SHA-1, resource binding, initial presence) and then sends and
counts stanzas as raw bytes: it never builds an XML tree. That keeps it cheap
enough that the server, not the generator, is what a benchmark measures; every
run prints the generator's own CPU share beside the server's to show it.

Over TCP (:class:`Connection`) or over WebSocket (RFC 7395,
:class:`WebSocketConnection`: wsproto for the handshake and the frames, the
same login and stanza handling on the messages inside).

Both servers under test get exactly the same bytes from it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import re
import ssl
import time

from wsproto import ConnectionType, WSConnection
from wsproto.events import (AcceptConnection, CloseConnection, Ping, RejectConnection,
                            Request, TextMessage)

#: SCRAM-SHA-1 is the mechanism both servers verify (Prosody 0.12 stores only
#: SHA-1 keys). The salted password depends only on password, salt and
#: iteration count, and a real client caches it too, so it is derived once.
_salted_cache: dict[tuple[bytes, bytes, int], bytes] = {}

_FEATURES_END = re.compile(rb"</stream:features>|<stream:features\s*/>")
_CHALLENGE = re.compile(rb"<challenge[^>]*>([^<]*)</challenge>")
_SUCCESS = re.compile(rb"<success[^>]*(?:/>|>([^<]*)</success>)")
_FAILURE = re.compile(rb"<failure[^>]*>.*?</failure>|<failure[^>]*/>", re.S)
_BIND_JID = re.compile(rb"<jid>([^<]+)</jid>")
_ID = re.compile(rb"""\sid=(?:'([^']*)'|"([^"]*)")""")
_STREAM_ERROR = re.compile(rb"<stream:error>.*?</stream:error>", re.S)


class LoginFailed(Exception):
    pass


def _salted(password: bytes, salt: bytes, iterations: int) -> bytes:
    key = (password, salt, iterations)
    if key not in _salted_cache:
        _salted_cache[key] = hashlib.pbkdf2_hmac("sha1", password, salt, iterations)
    return _salted_cache[key]


def client_tls_context() -> ssl.SSLContext:
    """Certificates are not checked: both servers use the same self-signed one."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


_TLS = None


class Connection(asyncio.Protocol):
    """One client connection. Login is a coroutine; after it, received stanzas
    are cut out of the byte stream at their end tags and passed to ``on_stanza``."""

    def __init__(self):
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.waiter: asyncio.Future | None = None
        self.pattern: re.Pattern | None = None
        self.closed = asyncio.get_running_loop().create_future()
        #: the server's own closing tag arrived (see close_gracefully)
        self.server_closed = asyncio.get_running_loop().create_future()
        self.on_stanza = None  # callable(bytes) once logged in
        self.jid = ""

    # -- asyncio protocol ----------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.on_stanza is not None:
            self._stanzas(data)
            return
        self.buffer += data
        self._check()

    def connection_lost(self, exc):
        if not self.closed.done():
            self.closed.set_result(exc)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(LoginFailed(f"connection lost: {exc!r}; got {self.buffer[-300:]!r}"))

    # -- login ---------------------------------------------------------------------

    def _check(self) -> None:
        if self.waiter is None or self.waiter.done():
            return
        error = _STREAM_ERROR.search(self.buffer)
        if error:
            self.waiter.set_exception(LoginFailed(error.group(0).decode(errors="replace")))
            return
        match = self.pattern.search(self.buffer)
        if match:
            self.buffer = self.buffer[match.end():]
            self.waiter.set_result(match)

    async def expect(self, pattern: re.Pattern, timeout: float = 60.0) -> re.Match:
        self.pattern = pattern
        self.waiter = asyncio.get_running_loop().create_future()
        self._check()
        return await asyncio.wait_for(self.waiter, timeout)

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def _header(self, domain: str) -> None:
        self.write(f"<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' "
                   f"xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>".encode())

    async def login(self, domain: str, user: str, password: str, resource: str,
                    starttls: bool, presence: bool = True) -> None:
        """Log in as ``user@domain/resource``; with ``presence`` send initial
        presence and wait for the server's echo of it (RFC 6121 §4.2.2)."""
        global _TLS
        self._header(domain)
        features = await self.expect(_FEATURES_END)
        if starttls:
            self.write(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            await self.expect(re.compile(rb"<proceed[^>]*>"))
            if _TLS is None:
                _TLS = client_tls_context()
            loop = asyncio.get_running_loop()
            self.buffer = b""
            self.transport = await loop.start_tls(self.transport, self, _TLS, server_hostname=domain)
            self._header(domain)
            features = await self.expect(_FEATURES_END)
        del features
        # SCRAM-SHA-1 (RFC 5802), no channel binding.
        nonce = base64.b64encode(os.urandom(18)).decode()
        first_bare = f"n={user},r={nonce}"
        self.write(("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>"
                    + base64.b64encode(f"n,,{first_bare}".encode()).decode() + "</auth>").encode())
        challenge = base64.b64decode((await self.expect(_CHALLENGE)).group(1))
        fields = dict(item.split(b"=", 1) for item in challenge.split(b","))
        salted = _salted(password.encode(), base64.b64decode(fields[b"s"]), int(fields[b"i"]))
        final_bare = f"c=biws,r={fields[b'r'].decode()}"
        auth_message = f"{first_bare},{challenge.decode()},{final_bare}".encode()
        client_key = hmac.digest(salted, b"Client Key", "sha1")
        signature = hmac.digest(hashlib.sha1(client_key).digest(), auth_message, "sha1")
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        self.write(("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" + base64.b64encode(
            f"{final_bare},p={base64.b64encode(proof).decode()}".encode()).decode()
            + "</response>").encode())
        match = await self.expect(re.compile(_SUCCESS.pattern + rb"|" + _FAILURE.pattern, re.S))
        if not match.group(0).startswith(b"<success"):
            raise LoginFailed(f"{user}: {match.group(0).decode(errors='replace')}")
        self._header(domain)
        await self.expect(_FEATURES_END)
        self.write(f"<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                   f"<resource>{resource}</resource></bind></iq>".encode())
        self.jid = (await self.expect(_BIND_JID)).group(1).decode()
        await self.expect(re.compile(rb"</iq>"))
        if presence:
            self.write(b"<presence/>")
            await self.expect(re.compile(rb"<presence[^>]*(?:/>|>.*?</presence>)", re.S))

    # -- after login -----------------------------------------------------------------

    def stanzas(self, on_stanza) -> None:
        """From now on, hand every complete top-level element to ``on_stanza``."""
        self.on_stanza = on_stanza
        rest, self.buffer = self.buffer, b""
        if rest:
            self._stanzas(rest)

    def _stanzas(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        start = 0
        # Stanzas the generator receives are flat enough that the end tag of
        # the outer element is the first one of its kind after it starts.
        while True:
            if buffer.startswith(b"<message", start):
                end = buffer.find(b"</message>", start)
                size = 10
            elif buffer.startswith(b"<presence", start) or buffer.startswith(b"<iq", start):
                tag = b"</presence>" if buffer[start + 1] == 112 else b"</iq>"
                close = buffer.find(b">", start)
                if close == -1:
                    break
                if buffer[close - 1] == 47:  # self-closing
                    self.on_stanza(buffer[start:close + 1])
                    start = close + 1
                    continue
                end = buffer.find(tag, start)
                size = len(tag)
            elif start < len(buffer):
                nxt = buffer.find(b"<", start)
                if nxt == -1:
                    start = len(buffer)
                    break
                if nxt == start:
                    # something else (stream end, error): deliver up to the next '>'
                    close = buffer.find(b">", start)
                    if close == -1:
                        break
                    if buffer.startswith(b"</stream:stream", start) and not self.server_closed.done():
                        self.server_closed.set_result(None)
                    self.on_stanza(buffer[start:close + 1])
                    start = close + 1
                else:
                    start = nxt
                continue
            else:
                break
            if end == -1:
                break
            self.on_stanza(buffer[start:end + size])
            start = end + size
        self.buffer = buffer[start:]

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"</stream:stream>")
            self.transport.close()

    async def close_gracefully(self, timeout: float = 10.0) -> bool:
        """Close the stream as RFC 6120 §4.4 describes: send the closing tag, go
        on reading (stanzas still reach ``on_stanza``) until the server sends its
        own closing tag or ends the connection, then close TCP. Whatever the
        server routed to this session before it closed the stream is received;
        whatever comes later is the server's to store or bounce. False when the
        server did neither within ``timeout``."""
        if self.transport is None or self.transport.is_closing():
            return True
        self.transport.write(b"</stream:stream>")
        done, _ = await asyncio.wait({self.server_closed, self.closed}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        self.transport.close()
        return bool(done)


#: RFC 7395's framing namespace: ``<open/>`` and ``<close/>`` in place of the
#: stream header and closing tag.
NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
WEBSOCKET_PATH = "/xmpp-websocket"
_STANZA_STARTS = (b"<message", b"<presence", b"<iq")


class _WebSocketTransport:
    """What a scenario writes to (``conn.transport.write(stanza)``), for a
    WebSocket connection: each write is one text message, as RFC 7395 §3.3.3
    wants one element per message. Scenarios write one stanza per call, so
    every scenario runs over WebSocket unchanged.

    RFC 7395 §3.3.3 also wants every element to declare its namespace (there
    is no stream header to inherit ``jabber:client`` from); the scenarios'
    stanzas do not, so ``xmlns='jabber:client'`` is added to a stanza's top
    tag that has none (Prosody 0.12 answers a stanza without it with the
    stream error ``unsupported-stanza-type``)."""

    __slots__ = ("raw", "ws")

    def __init__(self, raw: asyncio.Transport, ws: WSConnection):
        self.raw = raw
        self.ws = ws

    def write(self, data: bytes) -> None:
        if data.startswith(_STANZA_STARTS):
            head = data.find(b">")
            if data.find(b" xmlns=", 0, head) == -1:
                name = 3 if data[1] == 105 else 9 if data[1] == 112 else 8  # iq, presence, message
                data = data[:name] + b" xmlns='jabber:client'" + data[name:]
        self.raw.write(self.ws.send(TextMessage(data=data.decode())))

    def is_closing(self) -> bool:
        return self.raw.is_closing()

    def close(self) -> None:
        self.raw.close()

    def abort(self) -> None:
        self.raw.abort()


class WebSocketConnection(Connection):
    """One client over XMPP-over-WebSocket (RFC 7395): the HTTP upgrade
    offering the ``xmpp`` subprotocol, then the same login as over TCP
    (SCRAM-SHA-1, bind, presence) with ``<open/>`` for each stream header and
    ``<close/>`` for the closing tag, never STARTTLS (RFC 7395 §3.9). Each
    message the server sends is one element: before login the messages are
    joined into the buffer the login patterns search; after it, each goes to
    ``on_stanza`` as it is (only a leftover from login is cut at end tags)."""

    def __init__(self, host: str, port: int, path: str = WEBSOCKET_PATH):
        super().__init__()
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.raw: asyncio.Transport | None = None
        self.accepted = asyncio.get_running_loop().create_future()
        self.request = self.ws.send(Request(host=f"{host}:{port}", target=path,
                                            subprotocols=["xmpp"]))
        self._text: list[str] = []

    def connection_made(self, transport):
        self.raw = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, TextMessage):
                if not event.message_finished:
                    self._text.append(event.data)
                    continue
                text = "".join(self._text) + event.data if self._text else event.data
                self._text.clear()
                self._message(text.encode())
            elif isinstance(event, AcceptConnection):
                self.transport = _WebSocketTransport(self.raw, self.ws)
                self.accepted.set_result(event.subprotocol)
            elif isinstance(event, RejectConnection):
                if not self.accepted.done():
                    self.accepted.set_exception(LoginFailed(
                        f"WebSocket handshake refused: HTTP {event.status_code}"))
                self.raw.close()
            elif isinstance(event, Ping):
                self.raw.write(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                if not self.server_closed.done():
                    self.server_closed.set_result(None)
                if not self.raw.is_closing():
                    try:
                        self.raw.write(self.ws.send(event.response()))
                    except Exception:
                        pass
                    self.raw.close()

    def connection_lost(self, exc):
        if not self.accepted.done():
            self.accepted.set_exception(LoginFailed(f"connection lost in the handshake: {exc!r}"))
        super().connection_lost(exc)

    def _message(self, data: bytes) -> None:
        if data.startswith(b"<close") and not self.server_closed.done():
            self.server_closed.set_result(None)
        if self.on_stanza is not None:
            self.on_stanza(data)
        else:
            self.buffer += data
            self._check()

    def _header(self, domain: str) -> None:
        self.write(f"<open xmlns='{NS_FRAMING}' to='{domain}' version='1.0'/>".encode())

    async def login(self, domain: str, user: str, password: str, resource: str,
                    starttls: bool, presence: bool = True) -> None:
        if starttls:
            raise ValueError("no STARTTLS inside a WebSocket (RFC 7395 §3.9)")
        subprotocol = await asyncio.wait_for(self.accepted, 60)
        if subprotocol != "xmpp":
            raise LoginFailed(f"the server chose subprotocol {subprotocol!r}, not 'xmpp'")
        await super().login(domain, user, password, resource, False, presence)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(f"<close xmlns='{NS_FRAMING}'/>".encode())
            self.transport.close()
        elif self.raw is not None and not self.raw.is_closing():
            self.raw.close()

    async def close_gracefully(self, timeout: float = 10.0) -> bool:
        """RFC 7395 §3.6: send ``<close/>``, read on until the server's own
        ``<close/>`` (or WebSocket close, or end of the connection)."""
        if self.transport is None or self.transport.is_closing():
            return True
        self.transport.write(f"<close xmlns='{NS_FRAMING}'/>".encode())
        done, _ = await asyncio.wait({self.server_closed, self.closed}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        self.transport.close()
        return bool(done)


def stanza_id(stanza: bytes) -> bytes | None:
    match = _ID.search(stanza, 0, stanza.find(b">"))
    if match is None:
        return None
    return match.group(1) if match.group(1) is not None else match.group(2)


async def connect(host: str, port: int) -> Connection:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(Connection, host, port)
    return protocol


async def login(host: str, port: int, domain: str, user: str, password: str,
                resource: str = "bench", starttls: bool = True,
                presence: bool = True) -> Connection:
    conn = await connect(host, port)
    try:
        await conn.login(domain, user, password, resource, starttls, presence)
    except BaseException:
        conn.transport.abort()
        raise
    return conn


async def login_websocket(host: str, port: int, domain: str, user: str, password: str,
                          resource: str = "bench", presence: bool = True,
                          path: str = WEBSOCKET_PATH) -> WebSocketConnection:
    """Log in over XMPP-over-WebSocket at ``ws://host:port/path`` (RFC 7395)."""
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: WebSocketConnection(host, port, path), host, port)
    try:
        await conn.login(domain, user, password, resource, False, presence)
    except BaseException:
        conn.raw.abort()
        raise
    return conn


class CPUMeter:
    """This process's CPU seconds over a stretch of wall time."""

    def __init__(self):
        self.wall = time.monotonic()
        t = os.times()
        self.cpu = t.user + t.system

    def share(self) -> float:
        t = os.times()
        wall = time.monotonic() - self.wall
        return (t.user + t.system - self.cpu) / wall if wall > 0 else 0.0


def install_fast_loop() -> str:
    """uvloop when installed (``pip install '.[bench]'``), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"
