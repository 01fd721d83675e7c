"""A transport bridge: TCP-only client libraries, over WebSocket or BOSH.

Why: slixmpp and aioxmpp speak XMPP over TCP only, yet everything they test
must work the same for a web client over WebSocket (RFC 7395) and BOSH
(XEP-0124/0206). So the end-to-end suites run a second and a third time with
the client library connected to this bridge instead of xmppd's c2s port: per
client connection, it speaks RFC 6120 TCP framing to the client and opens its
own WebSocket (``ws://…/xmpp-websocket``, subprotocol ``xmpp``) or BOSH session
(``http://…/http-bind``) to xmppd, and translates:

* client → server: the client's XML stream is parsed as it arrives; each
  top-level element is re-serialised with its namespaces declared
  (``jabber:client`` included) as one WebSocket message, or batched into the
  next BOSH request; a stream header is ``<open/>`` (BOSH: the session
  creation, later ``xmpp:restart``); ``</stream:stream>`` is ``<close/>``
  (BOSH: ``type='terminate'``); a client that just drops its connection
  drops the WebSocket's (BOSH: terminates the session, as a web page that
  unloads does: a BOSH client has no connection to lose, and one that stops
  polling is only noticed after the session's inactivity period);
* server → client: ``<open/>`` becomes a ``<stream:stream>`` header,
  ``<close/>`` ``</stream:stream>``, anything else passes as it is (BOSH: the
  children of each response body, in rid order; a terminate body becomes the
  stream error it carries, or one of its condition, then the end of the
  stream); the upstream ending (a server crash, a closed WebSocket) closes
  the client's TCP connection.

TLS stays the client's business as with a real server: on the STARTTLS port
the bridge answers the first stream header itself (STARTTLS required),
proceeds and does TLS with the server's certificate before it opens the
upstream; the direct-TLS port does TLS first. Upstream is plain HTTP on
loopback, which xmppd counts as secure. BOSH keeps one long poll in flight,
at most ``requests`` requests, each with the next rid.

What it does not do: it is no test of TCP framing (xmppd's c2s port is not
used at all), nor of the server's TLS; whitespace keep-alives and XML
declarations the client sends go nowhere; each client connection is served
until it or its upstream ends, without bounds or time-outs of its own.

    bridge = Bridge("websocket", server.http_port, certificate).start()
    client.connect("127.0.0.1", bridge.port)    # or bridge.tls_port: direct TLS
    bridge.stop()
"""

from __future__ import annotations

import asyncio
import functools
import random
import ssl
import threading
import uuid
from xml.sax.saxutils import quoteattr

import aiohttp
from twisted.words.xish import domish

from tests.e2e.boshclient import NS_HTTPBIND, NS_XBOSH, PATH as BOSH_PATH
from tests.e2e.rawxmpp import NS_SASL, NS_STREAM_ERRORS, NS_STREAMS, NS_TLS
from tests.e2e.wsclient import NS_FRAMING, PATH as WS_PATH

BRIDGED = ("websocket", "bosh")
#: seconds the server may hold a BOSH long poll
BOSH_WAIT = 60
#: BOSH terminal conditions that are no stream error condition
_BOSH_ONLY = {"bad-request", "item-not-found", "other-request", "see-other-uri"}


def parse(data: bytes | str) -> tuple[domish.Element, list[domish.Element]]:
    """A document's root (childless) and its children."""
    found: list[domish.Element] = []
    stream = domish.elementStream()
    stream.DocumentStartEvent = stream.ElementEvent = found.append
    stream.DocumentEndEvent = lambda: None
    stream.parse(data.encode("utf-8") if isinstance(data, str) else data)
    return found[0], found[1:]


def stream_header(domain: str | None, stream_id: str, version: str | None = "1.0",
                  lang: str | None = "en") -> str:
    """A server's ``<stream:stream>`` header."""
    attrs = {"from": domain, "id": stream_id, "version": version, "xml:lang": lang}
    return (f"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
            f"xmlns:stream='{NS_STREAMS}'"
            + "".join(f" {k}={quoteattr(v)}" for k, v in attrs.items() if v) + ">")


def _xml(element: domish.Element) -> str:
    return element.toXml(prefixes={NS_STREAMS: "stream"})


class Bridge:
    """Two loopback listeners (STARTTLS, direct TLS) in a thread of their own."""

    def __init__(self, transport: str, http_port: int, certificate: str,
                 host: str = "127.0.0.1"):
        assert transport in BRIDGED, transport
        self.transport = transport
        path = WS_PATH if transport == "websocket" else BOSH_PATH
        self.url = f"{'ws' if transport == 'websocket' else 'http'}://{host}:{http_port}{path}"
        self.host = host
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(certificate)
        self.tls.set_alpn_protocols(["xmpp-client"])
        self.port = self.tls_port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name=f"bridge-{transport}")
        self._links: set[asyncio.Task] = set()

    def start(self) -> "Bridge":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    async def _listen(self) -> None:
        self._servers = [
            await asyncio.start_server(functools.partial(self._serve, direct_tls=False),
                                       self.host, 0),
            await asyncio.start_server(functools.partial(self._serve, direct_tls=True),
                                       self.host, 0, ssl=self.tls)]
        self.port, self.tls_port = (s.sockets[0].getsockname()[1] for s in self._servers)

    async def _close(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._links):
            task.cancel()
        await asyncio.gather(*self._links, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     direct_tls: bool) -> None:
        task = asyncio.current_task()
        self._links.add(task)
        try:
            await Link(self, reader, writer).run(direct_tls)
        except (OSError, aiohttp.ClientError, asyncio.TimeoutError, domish.ParserError):
            pass  # the client or the upstream went away: the link is over
        finally:
            self._links.discard(task)
            writer.close()


class Link:
    """One client connection and its upstream."""

    def __init__(self, bridge: Bridge, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter):
        self.bridge = bridge
        self.reader, self.writer = reader, writer
        self.events: list[tuple[str, domish.Element | None]] = []
        self.reset()

    def reset(self) -> None:
        """A new parser: the client's next bytes start a new stream (after
        STARTTLS, and after SASL success)."""
        self.parser = domish.elementStream()
        self.parser.DocumentStartEvent = lambda root: self.events.append(("open", root))
        self.parser.ElementEvent = lambda element: self.events.append(("element", element))
        self.parser.DocumentEndEvent = lambda: self.events.append(("close", None))

    async def next_event(self) -> tuple[str, domish.Element | None] | None:
        """The client's next stream header, top-level element or stream end;
        None when the client closed the connection."""
        while not self.events:
            data = await self.reader.read(65536)
            if not data:
                return None
            self.parser.parse(data)
        return self.events.pop(0)

    def write(self, text: str) -> None:
        if not self.writer.is_closing():
            self.writer.write(text.encode("utf-8"))

    def end(self) -> None:
        """The upstream is over: so is the client's connection."""
        self.writer.close()

    async def run(self, direct_tls: bool) -> None:
        if not direct_tls and not await self.starttls():
            return
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=BOSH_WAIT + 30)) \
                as http:
            upstream = (WebSocketUpstream if self.bridge.transport == "websocket"
                        else BoshUpstream)(self, http)
            try:
                while (event := await self.next_event()) is not None:
                    kind, element = event
                    if kind == "open":
                        await upstream.open(element.getAttribute("to") or "localhost")
                    elif kind == "element":
                        await upstream.send(element.toXml())
                    else:
                        await upstream.close()
            finally:
                await upstream.abort()

    async def starttls(self) -> bool:
        """Negotiate TLS as a server requiring it does; False if the client did not."""
        event = await self.next_event()
        if event is None or event[0] != "open":
            return False
        self.write(stream_header(event[1].getAttribute("to"), uuid.uuid4().hex)
                   + f"<stream:features><starttls xmlns='{NS_TLS}'><required/></starttls>"
                   "</stream:features>")
        event = await self.next_event()
        element = event and event[1]
        if element is None or (element.uri, element.name) != (NS_TLS, "starttls"):
            return False
        self.write(f"<proceed xmlns='{NS_TLS}'/>")
        await self.writer.start_tls(self.bridge.tls)
        self.reset()
        return True

    def from_server(self, element: domish.Element, text: str) -> None:
        """One element the server sent (``text``: as serialised upstream)."""
        if (element.uri, element.name) == (NS_SASL, "success"):
            self.reset()  # the client restarts its stream once it reads this
        self.write(text)


class WebSocketUpstream:
    """RFC 7395: one element per message."""

    def __init__(self, link: Link, http: aiohttp.ClientSession):
        self.link, self.http = link, http
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.receiving: asyncio.Task | None = None
        self.closing = False  # the client ended its stream

    async def open(self, to: str) -> None:
        if self.ws is None:
            self.ws = await self.http.ws_connect(self.link.bridge.url, protocols=("xmpp",),
                                                 max_msg_size=0)
            self.receiving = asyncio.create_task(self.receive())
        await self.ws.send_str(f"<open xmlns='{NS_FRAMING}' to={quoteattr(to)} version='1.0'/>")

    async def send(self, xml: str) -> None:
        await self.ws.send_str(xml)

    async def close(self) -> None:
        self.closing = True
        await self.ws.send_str(f"<close xmlns='{NS_FRAMING}'/>")

    async def receive(self) -> None:
        try:
            async for message in self.ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                element, _ = parse(message.data)
                if (element.uri, element.name) == (NS_FRAMING, "open"):
                    self.link.write(stream_header(
                        element.getAttribute("from"), element.getAttribute("id"),
                        element.getAttribute("version"),
                        element.getAttribute(("http://www.w3.org/XML/1998/namespace", "lang"))))
                elif (element.uri, element.name) == (NS_FRAMING, "close"):
                    self.link.write("</stream:stream>")
                else:
                    self.link.from_server(element, message.data)
        finally:
            self.link.end()

    async def abort(self) -> None:
        """The link is over. After the client's ``</stream:stream>`` the
        WebSocket closes as it should; a client that just dropped its TCP
        connection drops the WebSocket's with it, without a close frame:
        what a crashed browser does."""
        if self.receiving is not None:
            self.receiving.cancel()
        if self.closing:
            await self.ws.close()
        elif self.ws is not None:
            self.ws._response.close()  # the TCP connection (as aiohttp drops a dead peer)


class BoshUpstream:
    """XEP-0124/0206 as a browser client does it: one request held by the
    server while idle, stanzas sent in the next request (one more in flight),
    responses taken in rid order."""

    def __init__(self, link: Link, http: aiohttp.ClientSession):
        self.link, self.http = link, http
        self.rid = random.randrange(1 << 32, 1 << 40)
        self.sid: str | None = None
        self.stream_id = ""
        self.domain: str | None = None
        self.requests = 1
        self.outbox: list[str] = []
        self.attrs: dict[str, str] = {}  # for the next request: restart, terminate
        self.responses: dict[int, bytes] = {}
        self.next_rid = 0  # the next response to take
        self.tasks: set[asyncio.Task] = set()
        self.ended = False

    async def post(self, body: str) -> bytes:
        async with self.http.post(self.link.bridge.url, data=body.encode("utf-8"),
                                  headers={"Content-Type": "text/xml; charset=utf-8"}) as r:
            if r.status != 200:
                raise aiohttp.ClientResponseError(r.request_info, (), status=r.status)
            return await r.read()

    async def open(self, to: str) -> None:
        if self.sid is not None:  # a restart, after SASL
            self.link.write(stream_header(self.domain, self.stream_id))
            self.attrs = {"xmpp:restart": "true", "to": to}
            self.pump()
            return
        self.rid += 1
        self.next_rid = self.rid
        self.took(self.rid, await self.post(
            f"<body xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}' rid='{self.rid}' "
            f"to={quoteattr(to)} wait='{BOSH_WAIT}' hold='1' ver='1.6' xml:lang='en' "
            "xmpp:version='1.0'/>"))
        self.pump()  # the long poll

    async def send(self, xml: str) -> None:
        self.outbox.append(xml)
        self.pump()

    async def close(self) -> None:
        self.attrs = {"type": "terminate"}
        self.pump()

    def pump(self) -> None:
        """Send what waits, and keep one request in flight."""
        while (self.sid is not None and not self.ended
               and (not self.tasks or (self.outbox or self.attrs)
                    and len(self.tasks) < self.requests)):
            self.rid += 1
            attrs = "".join(f" {k}={quoteattr(v)}" for k, v in self.attrs.items())
            body = (f"<body xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}' sid='{self.sid}' "
                    f"rid='{self.rid}'{attrs}>{''.join(self.outbox)}</body>")
            self.outbox, self.attrs = [], {}
            task = asyncio.create_task(self.request(self.rid, body))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def request(self, rid: int, body: str) -> None:
        try:
            data = await self.post(body)
        except (OSError, aiohttp.ClientError, asyncio.TimeoutError):
            self.ended = True  # the server is gone
            self.link.end()
            return
        self.tasks.discard(asyncio.current_task())
        self.took(rid, data)
        self.pump()

    def took(self, rid: int, data: bytes) -> None:
        """A response: its stanzas go to the client once those before it did."""
        self.responses[rid] = data
        while self.next_rid in self.responses and not self.ended:
            root, children = parse(self.responses.pop(self.next_rid))
            self.next_rid += 1
            if self.sid is None:
                self.sid = root.getAttribute("sid")
                self.requests = int(root.getAttribute("requests") or 1)
                self.stream_id = root.getAttribute("authid") or uuid.uuid4().hex
                self.domain = root.getAttribute("from")
                self.link.write(stream_header(self.domain, self.stream_id))
            for child in children:
                self.link.from_server(child, _xml(child))
            if root.getAttribute("type") == "terminate":
                self.ended = True
                condition = root.getAttribute("condition")
                if condition and condition != "remote-stream-error":
                    condition = "undefined-condition" if condition in _BOSH_ONLY else condition
                    self.link.write(f"<stream:error><{condition} xmlns='{NS_STREAM_ERRORS}'/>"
                                    "</stream:error>")
                self.link.write("</stream:stream>")
                self.link.end()

    async def abort(self) -> None:
        """The link is over: a session still open is terminated (a client that
        drops its TCP connection is gone at once, not after ``inactivity``)."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.sid is not None and not self.ended:
            self.ended = True
            self.rid += 1
            try:
                await asyncio.wait_for(self.post(
                    f"<body xmlns='{NS_HTTPBIND}' sid='{self.sid}' rid='{self.rid}' "
                    "type='terminate'/>"), 5)
            except (OSError, aiohttp.ClientError, asyncio.TimeoutError):
                pass
