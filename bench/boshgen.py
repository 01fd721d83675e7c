"""The load generator's BOSH client (XEP-0124, XEP-0206): one XMPP session
over HTTP requests, used by a scenario exactly like a TCP connection.

:class:`BoshConnection` is a :class:`loadgen.Connection` whose bytes travel
in ``<body/>`` wrappers: what a scenario writes (``conn.transport.write``) is
queued and goes out in the next request, and the payloads of each response
(taken in ``rid`` order) reach the same login patterns and stanza cutter as
a TCP stream's bytes. It behaves as a browser's BOSH library does
(Strophe.js, Converse's): ``hold='1'``, so at most ``requests='2'`` requests
open at once, each on an HTTP/1.1 keep-alive connection of its own (two per
session); one empty request is always held by the server for it to push
with, and whatever was written since the last request goes out as soon as a
slot is free, all of it in one body. Session creation, SASL, the restart
(``xmpp:restart='true'``), bind and initial presence are the TCP login's,
the stream header being the creation or restart request.

Both servers get the same requests from it. It never builds an XML tree:
bodies are cut at their start tag and closing tag.
"""

from __future__ import annotations

import asyncio
import random
import re

import loadgen

NS_HTTPBIND = "http://jabber.org/protocol/httpbind"
NS_XBOSH = "urn:xmpp:xbosh"
PATH = "/http-bind"
#: what the client asks for: Prosody's maximum, and xmppd's
WAIT = 60
_SID = re.compile(rb"""\ssid=(?:'([^']*)'|"([^"]*)")""")
_TERMINATE = re.compile(rb"""\stype=(?:'terminate'|"terminate")""")
_REQUESTS = re.compile(rb"""\srequests=(?:'(\d+)'|"(\d+)")""")


class _HttpChannel(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: one request at a time, its
    response's body handed to a future (Content-Length or chunked)."""

    def __init__(self, host: str, port: int):
        self.head = (f"POST {PATH} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                     f"Content-Type: text/xml; charset=utf-8\r\nContent-Length: ").encode()
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.waiter: asyncio.Future | None = None
        self.lost = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def request(self, body: bytes) -> asyncio.Future:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(self.head + b"%d\r\n\r\n" % len(body) + body)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._check()

    def _check(self) -> None:
        end = self.buffer.find(b"\r\n\r\n")
        if end == -1 or self.waiter is None:
            return
        head = self.buffer[:end].decode("latin-1").lower()
        status = head[9:12]
        start = end + 4
        match = re.search(r"\r\ncontent-length:\s*(\d+)", head)
        if match:
            size = int(match.group(1))
            if len(self.buffer) < start + size:
                return
            body, self.buffer = self.buffer[start:start + size], self.buffer[start + size:]
        elif "transfer-encoding: chunked" in head:
            chunks, pos = [], start
            while True:
                line = self.buffer.find(b"\r\n", pos)
                if line == -1:
                    return
                size = int(self.buffer[pos:line].split(b";")[0], 16)
                if len(self.buffer) < line + 2 + size + 2:
                    return
                chunks.append(self.buffer[line + 2:line + 2 + size])
                pos = line + 2 + size + 2
                if size == 0:
                    break
            body, self.buffer = b"".join(chunks), self.buffer[pos:]
        else:
            return
        waiter, self.waiter = self.waiter, None
        if waiter.done():  # (cancelled: the run is over)
            return
        if status != "200":
            waiter.set_exception(loadgen.LoginFailed(f"HTTP {status}: {body[:300]!r}"))
        else:
            waiter.set_result(body)

    def connection_lost(self, exc) -> None:
        self.lost = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"HTTP connection lost: {exc!r}"))


class _BoshTransport:
    """What a scenario writes to: each write is queued for the next request.
    Stanzas get ``xmlns='jabber:client'`` as over WebSocket (XEP-0206 wants
    the payloads qualified; the scenarios' are not)."""

    __slots__ = ("conn",)

    def __init__(self, conn: "BoshConnection"):
        self.conn = conn

    def write(self, data: bytes) -> None:
        if data.startswith(loadgen._STANZA_STARTS):
            head = data.find(b">")
            if data.find(b" xmlns=", 0, head) == -1:
                name = 3 if data[1] == 105 else 9 if data[1] == 112 else 8  # iq, presence, message
                data = data[:name] + b" xmlns='jabber:client'" + data[name:]
        self.conn.outbox.append(data)
        self.conn.pump()

    def is_closing(self) -> bool:
        return self.conn.ended

    def close(self) -> None:
        self.conn.terminate()

    def abort(self) -> None:
        self.conn.abort()


class BoshConnection(loadgen.Connection):
    """One client session over BOSH (see the module docstring)."""

    def __init__(self, host: str, port: int):
        super().__init__()
        self.host, self.port = host, port
        self.transport = _BoshTransport(self)
        self.sid: str | None = None
        self.rid = random.randrange(1 << 20, 1 << 40)
        self.requests = 2
        self.outbox: list[bytes] = []
        self.inflight = 0
        self.idle: list[_HttpChannel] = []
        self.channels: list[_HttpChannel] = []
        self.responses: dict[int, bytes] = {}
        self.next_rid = 0
        self.ended = False
        self.terminating = False
        self.restart = False  # the next request restarts the stream
        self.domain = "localhost"

    # -- requests --------------------------------------------------------------------

    async def _channel(self) -> _HttpChannel:
        while self.idle:
            channel = self.idle.pop()
            if not channel.lost:
                return channel
        _, channel = await asyncio.get_running_loop().create_connection(
            lambda: _HttpChannel(self.host, self.port), self.host, self.port)
        self.channels.append(channel)
        return channel

    def _send(self, body: bytes, rid: int) -> None:
        self.inflight += 1
        asyncio.get_running_loop().create_task(self._exchange(body, rid))

    async def _exchange(self, body: bytes, rid: int) -> None:
        try:
            channel = await self._channel()
            data = await channel.request(body)
            self.idle.append(channel)
        except Exception as e:
            data = None
            self._fail(f"rid {rid}: {e!r}")
        self.inflight -= 1
        self.responses[rid] = data or b""
        while self.next_rid in self.responses:
            self._response(self.responses.pop(self.next_rid))
            self.next_rid += 1
        self.pump()

    def _response(self, data: bytes) -> None:
        if not data:
            return
        start = data.find(b">")
        if _TERMINATE.search(data, 0, start):
            inner = data[start + 1:data.rfind(b"</body>")] if data[start - 1] != 47 else b""
            if inner:
                self.data_received(inner)
            self._ended(data)
            return
        if data[start - 1] == 47:  # <body .../>
            return
        self.data_received(data[start + 1:data.rfind(b"</body>")])

    def _fail(self, why: str) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(loadgen.LoginFailed(why))
        self._ended(why.encode())

    def _ended(self, why: bytes) -> None:
        if self.ended:
            return
        self.ended = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(loadgen.LoginFailed(why[-300:].decode(errors="replace")))
        if not self.server_closed.done():
            self.server_closed.set_result(None)
        if not self.closed.done():
            self.closed.set_result(None)
        for channel in self.channels:
            if channel.transport is not None:
                channel.transport.close()

    def _body(self, payload: bytes = b"", extra: str = "") -> tuple[bytes, int]:
        self.rid += 1
        return (f"<body xmlns='{NS_HTTPBIND}' sid='{self.sid}' rid='{self.rid}'{extra}>".encode()
                + payload + b"</body>"), self.rid

    def pump(self) -> None:
        """Send what waits when a request slot is free; keep one request held."""
        if self.sid is None or self.ended or self.terminating:
            return
        if self.restart and self.inflight < self.requests:
            self.restart = False
            self._send(*self._body(extra=f" to='{self.domain}' xmpp:restart='true' "
                                          f"xmlns:xmpp='{NS_XBOSH}'"))
        while self.outbox and self.inflight < self.requests:
            payload, self.outbox = b"".join(self.outbox), []
            self._send(*self._body(payload))
        if self.inflight == 0:
            self._send(*self._body())

    # -- the login's stream header: creation, then restart ----------------------------

    def _header(self, domain: str) -> None:
        self.domain = domain
        if self.sid is None:
            asyncio.get_running_loop().create_task(self._create(domain))
        else:
            self.restart = True
            self.pump()

    async def _create(self, domain: str) -> None:
        self.rid += 1
        body = (f"<body xmlns='{NS_HTTPBIND}' rid='{self.rid}' to='{domain}' wait='{WAIT}' "
                f"hold='1' ver='1.6' xml:lang='en' xmpp:version='1.0' "
                f"xmlns:xmpp='{NS_XBOSH}'/>").encode()
        try:
            channel = await self._channel()
            data = await channel.request(body)
            self.idle.append(channel)
        except Exception as e:
            self._fail(f"session creation: {e!r}")
            return
        start = data.find(b">")
        sid = _SID.search(data, 0, start)
        if sid is None or _TERMINATE.search(data, 0, start):
            self._fail(f"session creation refused: {data[:300]!r}")
            return
        self.sid = (sid.group(1) or sid.group(2)).decode()
        requests = _REQUESTS.search(data, 0, start)
        if requests:
            self.requests = int(requests.group(1) or requests.group(2))
        self.next_rid = self.rid + 1
        self._response(data)
        self.pump()

    async def login(self, domain: str, user: str, password: str, resource: str,
                    starttls: bool, presence: bool = True) -> None:
        if starttls:
            raise ValueError("no STARTTLS inside BOSH (XEP-0206 §4)")
        await super().login(domain, user, password, resource, False, presence)

    # -- the end ---------------------------------------------------------------------

    def terminate(self) -> None:
        """``type='terminate'`` with what is still queued (sent at once: the
        terminate request may exceed the window by one, XEP-0124 §13)."""
        if self.sid is None or self.ended or self.terminating:
            self._ended(b"closed")
            return
        self.terminating = True
        payload, self.outbox = b"".join(self.outbox), []
        self._send(*self._body(payload, " type='terminate'"))

    def close(self) -> None:
        self.terminate()

    async def close_gracefully(self, timeout: float = 10.0) -> bool:
        self.terminate()
        done, _ = await asyncio.wait({self.server_closed, self.closed}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        self._ended(b"closed")
        return bool(done)

    def abort(self) -> None:
        self._ended(b"aborted")


async def login_bosh(host: str, port: int, domain: str, user: str, password: str,
                     resource: str = "bench", presence: bool = True) -> BoshConnection:
    """Log in over BOSH at ``http://host:port/http-bind`` (XEP-0206)."""
    conn = BoshConnection(host, port)
    try:
        await conn.login(domain, user, password, resource, False, presence)
    except BaseException:
        conn.abort()
        raise
    return conn
