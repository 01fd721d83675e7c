"""The HTTP service: one Twisted Web site in the xmppd process (``server.http``).

The server creates an :class:`HTTPService` when ``[http] port`` or
``tls_port`` is on, and it listens on ``[http] interfaces`` (plain HTTP on
``port``, HTTPS with the server's certificate on ``tls_port``). It serves
nothing of its own but XEP-0156 host-meta; components mount their resources
on it::

    unmount = server.http.add_route("/http-bind", resource, endpoint="bosh",
                                    link_rel=ns.ALT_CONNECTIONS_XBOSH)

A route is served only if its endpoint is listed in ``[http] endpoints``, so
the operator turns any of them off in one place, host-meta included (the
endpoint ``host-meta``). :meth:`HTTPService.url` gives the absolute URL a
client should use for a path (``[http] public_url`` when the server sits
behind a proxy).

What every response gets, whoever renders it, as Prosody's ``mod_http``
does it:

- CORS headers (``Access-Control-Allow-Origin`` — the request's ``Origin``,
  or ``*`` without one — ``-Methods``, ``-Headers``, ``-Max-Age: 7200``), for
  the origins of ``[http] cors_origins``; an origin not listed gets none, and
  the browser keeps its page from reading the response. ``OPTIONS`` (the preflight) is
  answered ``200`` with an empty body, unless the route's resource answers
  ``OPTIONS`` itself. The methods announced are ``GET``, ``OPTIONS`` and
  those the route's resource renders (``render_POST`` → ``POST``).
  Unlike Prosody, an echoed origin comes with ``Vary: Origin``, which the
  Fetch standard asks for, so that no cache hands one origin's answer to
  another.
- A body larger than ``[http] max_body_size`` is refused ``413`` as soon as
  its ``Content-Length`` (or, chunked, its size so far) says so, and the
  connection is closed: nothing of it is kept. (Prosody closes the
  connection without an answer.)
- A route's resource may refuse a request from its request line and headers
  alone, before its body is read: if it has ``check_headers(request)``, that
  is called once the headers are in (``request.method``, ``path``,
  ``postpath``, ``route`` and the request headers set as the resource will
  see them), and returns an HTTP status to answer at once, the connection
  then closed with the body unread (response headers it set, such as
  ``WWW-Authenticate``, are sent), or None to read the body;
  ``request.limit_body(n)`` lowers the body bound of that one request (a
  chunked body beyond it is then ``413`` as soon as it grows past it). The
  upload service refuses a PUT without its slot's secret this way.
- An unknown path is ``404``; nothing lists a directory. (Twisted Web
  bounds the request line and headers: 16 KiB, 500 headers.)
- One access-log line per request, at debug level.
- At most ``[http] max_connections`` connections at once (more are closed
  as they arrive, counted in ``server.counters["http-connections-refused"]``);
  a connection waiting longer than ``[http] idle_timeout`` for its next
  request is closed. A request being answered (a BOSH long poll) or a
  WebSocket is never idle in that sense.

XEP-0156 host-meta is what Prosody's ``mod_http_altconnect`` serves:
``/.well-known/host-meta`` is an XRD document
(``application/xrd+xml``), or the JSON form when the ``Accept`` header names
JSON before XML; ``/.well-known/host-meta.json`` is always JSON
(``{"links": [{"rel": ..., "href": ...}]}``). Each lists the routes mounted
with a ``link_rel``, BOSH before WebSocket as Prosody does, at the URLs
:meth:`HTTPService.url` gives (WebSocket ones as ``ws:``/``wss:``).
"""

from __future__ import annotations

import collections
import io
import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable
from urllib.parse import unquote_to_bytes

from twisted.application import service
from twisted.internet import defer, error
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols import policies
from twisted.python import failure
from twisted.web import http, resource, server
from twisted.web.resource import IResource
from twisted.words.xish import domish

from xmppd import ns

HOST_META = "/.well-known/host-meta"
HOST_META_JSON = "/.well-known/host-meta.json"

#: Prosody's defaults (``access_control_max_age``, ``…_allow_headers``, ``…_allow_methods``)
CORS_MAX_AGE = 2 * 60 * 60
CORS_HEADERS = ("Content-Type",)
CORS_METHODS = ("GET", "OPTIONS")

#: Seconds the connections still open at shutdown get to close before they are aborted.
CLOSE_TIMEOUT = 5

#: host-meta lists these relations first, in this order (Prosody's); others follow
#: in the order they were mounted.
_LINK_ORDER = (ns.ALT_CONNECTIONS_XBOSH, ns.ALT_CONNECTIONS_WEBSOCKET)
_WEBSOCKET_RELS = frozenset((ns.ALT_CONNECTIONS_WEBSOCKET,))


def _noop() -> None:
    pass


def error_page(request: server.Request, code: int, message: str = "") -> bytes:
    """Set ``code`` on ``request`` and return a small HTML page saying what
    it means: what every error of the site looks like (resources may use it
    too)."""
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
    return _page(code, message)


def _page(code: int, message: str = "") -> bytes:
    title = f"{code} {http.RESPONSES.get(code, b'Error').decode('ascii')}"
    text = message.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>"
            f"</head><body><h1>{title}</h1>{f'<p>{text}</p>' if text else ''}</body></html>\n"
            ).encode("utf-8")


@dataclass(eq=False)
class Route:
    """A resource mounted at a path, and what its responses' CORS headers say."""

    path: str
    segments: tuple[bytes, ...]
    resource: IResource
    endpoint: str
    link_rel: str | None
    cors_methods: bytes
    cors_headers: bytes
    cors_credentials: bool
    #: the largest request body it takes (None: ``[http] max_body_size``)
    max_body: int | None = None


class _NotFound(resource.Resource):
    isLeaf = True

    def render(self, request: server.Request) -> bytes:
        return error_page(request, http.NOT_FOUND)


class _Preflight(resource.Resource):
    """A CORS preflight of a route whose resource does not answer OPTIONS:
    ``200``, the CORS headers, nothing else (Prosody's answer)."""

    isLeaf = True

    def render(self, request: server.Request) -> bytes:
        request.defaultContentType = None
        return b""


#: headers an early answer writes itself (a resource's own are not repeated)
_OWN_HEADERS = frozenset((b"date", b"content-type", b"content-length", b"connection"))

_NOT_FOUND = _NotFound()
_INHERITED_HEAD = resource.Resource.render_HEAD
_PREFLIGHT = _Preflight()


class _Root(resource.Resource):
    """Finds the route of a request: the longest mounted path that is a
    prefix of its path, segment by segment (``/upload`` serves
    ``/upload/<id>/<name>``; ``/uploads`` is not under it). The route's
    resource gets the rest as ``request.postpath``, as Twisted resources
    expect."""

    def __init__(self, http_service: HTTPService):
        super().__init__()
        self._http = http_service

    def getChildWithDefault(self, name: bytes, request: server.Request) -> IResource:
        route, consumed = self._http._match(name, request.postpath)
        if route is None:
            return _NOT_FOUND
        if consumed:
            request.prepath.extend(request.postpath[:consumed])
            del request.postpath[:consumed]
        request.route = route
        if request.method == b"OPTIONS" and not hasattr(route.resource, "render_OPTIONS"):
            return _PREFLIGHT
        return route.resource

    def render(self, request: server.Request) -> bytes:
        return error_page(request, http.NOT_FOUND)


class HTTPRequest(server.Request):
    """A request of the xmppd site: a bounded body, CORS headers, no
    ``Server`` header naming Twisted's version."""

    #: the route that serves it (None: none does)
    route: Route | None = None
    _refused = False
    _received = 0

    # -- the body, bounded ----------------------------------------------------------

    _limit: int | None = None

    def _body_limit(self) -> int:
        """The largest body the request's route takes, known from the request
        line before any of the body is read (no route: none at all)."""
        if self._limit is None:
            path = getattr(self.channel, "_path", b"") or b""
            self._limit = self.channel.site.http.body_limit(path)
        return self._limit

    def limit_body(self, size: int) -> None:
        """Take at most ``size`` bytes of body for this request (for a
        resource's ``check_headers``: a chunked body beyond it is refused
        ``413`` as it grows past it)."""
        self._limit = min(self._body_limit(), size)

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self._body_limit():
            self._refuse_body()
            return
        if self._refused_by_route():
            return
        super().gotLength(length)

    def _refused_by_route(self) -> bool:
        """Whether the route's resource refused the request from its headers
        (``check_headers``); then the answer is written and the connection
        is closing, with the body unread."""
        channel = self.channel
        raw = getattr(channel, "_path", None)
        if raw is None:
            return False
        route, prepath, postpath = channel.site.http.route_for(raw)
        check = getattr(route.resource, "check_headers", None) if route is not None else None
        if check is None:
            return False
        # What the resource will see once routed (requestReceived, process and
        # the root set all of this again then).
        self.method, self.uri, self.clientproto = channel._command, raw, channel._version
        self.path = raw.split(b"?", 1)[0]
        self.route, self.prepath, self.postpath = route, prepath, postpath
        try:
            code = check(self)
        except Exception:
            channel.site.http.log.failure("http: the header check of {path} failed",
                                          path=route.path)
            return False
        if code is None:
            return False
        self._refused = True
        self.requestHeaders.removeHeader(b"Expect")  # no "100 Continue" after the refusal
        self.code = code
        self._answer_and_close(code, route, list(self.responseHeaders.getAllRawHeaders()))
        channel.site.http.access(self)
        return True

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._received += len(data)
        if self._received > self._body_limit():
            self._refuse_body()
            return
        super().handleContentChunk(data)

    def _refuse_body(self) -> None:
        """``413`` before the body has been read, and close: the rest of the
        body is never read, and nothing of it is kept. Written on the
        transport directly, since Twisted's response machinery only starts
        once the whole request is in."""
        self._refused = True
        # no "100 Continue" after the refusal
        self.requestHeaders.removeHeader(b"Expect")
        if getattr(self, "content", None) is not None:
            self.content.close()
        self.content = io.BytesIO()
        self.channel.site.http.body_refused(self, self._body_limit())
        self._answer_and_close(http.REQUEST_ENTITY_TOO_LARGE, None)

    def _answer_and_close(self, code: int, route: Route | None,
                          headers: Iterable[tuple[bytes, list[bytes]]] = ()) -> None:
        """Answer ``code`` (the site's page for it) before the request is
        complete, and close. Written on the transport directly, since
        Twisted's response machinery only starts once the whole request is
        in."""
        site = self.channel.site
        body = _page(code)
        lines = [b"HTTP/1.1 %d " % code + http.RESPONSES.get(code, b"Error"),
                 b"Date: " + http.datetimeToString(),
                 b"Content-Type: text/html; charset=utf-8",
                 b"Content-Length: %d" % len(body),
                 b"Connection: close"]
        for name, values in headers:
            if name.lower() not in _OWN_HEADERS:
                lines.extend(name + b": " + value for value in values)
        for name, value in site.http.cors_headers(self.getHeader(b"origin"), route):
            lines.append(name + b": " + value)
        self.sentLength = len(body)
        transport = self.channel.transport
        if transport is not None:
            transport.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
            transport.loseConnection()

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            return  # answered already; the connection is closing
        super().requestReceived(command, path, version)

    # -- routing and rendering --------------------------------------------------------

    def process(self) -> None:
        """Twisted's ``Request.process``, with the CORS headers and without
        ``Server``."""
        self.site = self.channel.site
        self.setHeader(b"Date", http.datetimeToString())
        self.prepath = []
        self.postpath = list(map(unquote_to_bytes, self.path[1:].split(b"/")))
        try:
            if self.path == b"*":  # "OPTIONS *": the server as a whole
                resrc = _PREFLIGHT if self.method == b"OPTIONS" else _NOT_FOUND
            else:
                resrc = self.site.getResourceFor(self)
            for name, value in self.site.http.cors_headers(self.getHeader(b"origin"), self.route):
                if name == b"Vary":
                    self.responseHeaders.addRawHeader(name, value)
                else:
                    self.setHeader(name, value)
            encoding = getattr(resource, "_IEncodingResource", None)
            if encoding is not None and encoding.providedBy(resrc):
                encoder = resrc.getEncoder(self)
                if encoder is not None:
                    self._encoder = encoder
            self.render(resrc)
        except BaseException:
            self.processingFailed(failure.Failure())


class _Refuse(Protocol):
    """What a connection beyond ``max_connections`` gets: closed at once."""

    def connectionMade(self) -> None:
        self.transport.abortConnection()


class HTTPSite(server.Site):
    """The site: the route table at its root, the access log."""

    requestFactory = HTTPRequest
    noisy = False
    displayTracebacks = False

    def __init__(self, http_service: HTTPService, idle_timeout: int, clock: IReactorTime):
        super().__init__(_Root(http_service), timeout=idle_timeout, reactor=clock)
        self.http = http_service

    @property
    def max_body_size(self) -> int:
        return self.http.max_body_size

    def log(self, request: server.Request) -> None:
        self.http.access(request)


class _Connections(policies.WrappingFactory):
    """What the ports listen with: the site, its connections counted and
    bounded. A wrapper rather than hooks on Twisted Web's channel, whose
    methods a WebSocket upgrade replaces."""

    noisy = False

    def __init__(self, site: HTTPSite, http_service: HTTPService, max_connections: int):
        super().__init__(site)
        self.http = http_service
        self.max_connections = max_connections
        self._idle: list[defer.Deferred] = []

    def buildProtocol(self, addr: Any) -> Any:
        if len(self.protocols) >= self.max_connections:
            self.http.connection_refused(addr)
            return _Refuse()
        return super().buildProtocol(addr)

    def unregisterProtocol(self, p: Any) -> None:
        super().unregisterProtocol(p)
        if not self.protocols:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    def when_idle(self) -> defer.Deferred:
        if not self.protocols:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._idle.append(d)
        return d


class HostMeta(resource.Resource):
    """XEP-0156 host-meta (RFC 6415): the XRD document, or its JSON form."""

    isLeaf = True

    def __init__(self, http_service: HTTPService, json_only: bool = False):
        super().__init__()
        self._http = http_service
        self.json_only = json_only

    def render_GET(self, request: server.Request) -> bytes:
        if request.postpath:
            return error_page(request, http.NOT_FOUND)
        links = self._http.links()
        if self.json_only or _prefers_json(request.getHeader(b"accept")):
            request.setHeader(b"Content-Type", b"application/json")
            return json.dumps({"links": [{"rel": rel, "href": href} for rel, href in links]},
                              separators=(",", ":")).encode("utf-8")
        xrd = domish.Element((ns.XRD, "XRD"))
        for rel, href in links:
            link = xrd.addElement("Link")
            link["rel"] = rel
            link["href"] = href
        request.setHeader(b"Content-Type", b"application/xrd+xml")
        return b'<?xml version="1.0" encoding="UTF-8"?>' + xrd.toXml().encode("utf-8")


def _prefers_json(accept: bytes | None) -> bool:
    """Prosody's choice for ``/.well-known/host-meta``: XML unless the
    ``Accept`` header names JSON before it names XML (no header: XML)."""
    text = (accept or b"").lower()
    xml = text.find(b"xml")
    json_at = text.find(b"json")
    if json_at < 0:
        return False
    return xml < 0 or json_at < xml


class HTTPService(service.Service):
    """The ``[http]`` service: listeners, the route table, host-meta.

    ``options`` is the validated ``[http]`` section; ``domains`` the
    server's (the first names the server in URLs when ``public_url`` is
    empty). ``counters`` is where refusals are counted (the server's).
    """

    log = Logger()

    def __init__(self, options: dict[str, Any], domains: list[str],
                 clock: IReactorTime | None = None,
                 counters: collections.Counter[str] | None = None):
        super().__init__()
        if clock is None:
            from twisted.internet import reactor as clock
        self.options = dict(options)
        self.domain = domains[0]
        self.clock = clock
        self.counters: collections.Counter[str] = \
            counters if counters is not None else collections.Counter()
        #: the endpoints served (``[http] endpoints``)
        self.endpoints: frozenset[str] = frozenset(options["endpoints"])
        self.max_body_size: int = options["max_body_size"]
        #: [http] loopback_is_secure (see xmppd.http.websocket.client_of)
        self.loopback_is_secure: bool = options.get("loopback_is_secure", True)
        origins = options["cors_origins"]
        self._any_origin = "*" in origins
        self._origins = frozenset(o.encode("latin-1") for o in origins)
        self._routes: dict[str, Route] = {}
        self._by_segments: dict[tuple[bytes, ...], Route] = {}
        self._depth = 0
        self._full_warned: float | None = None
        self.site = HTTPSite(self, options["idle_timeout"], clock)
        self._connections = _Connections(self.site, self, options["max_connections"])
        self.ports: list[IListeningPort] = []
        self.add_route(HOST_META, HostMeta(self), endpoint="host-meta", max_body=0)
        self.add_route(HOST_META_JSON, HostMeta(self, json_only=True), endpoint="host-meta",
                       max_body=0)

    # -- routes -----------------------------------------------------------------------

    def add_route(self, path: str, resource: IResource, endpoint: str,
                  link_rel: str | None = None, *, cors_headers: Iterable[str] = (),
                  cors_credentials: bool = False,
                  max_body: int | None = None) -> Callable[[], None]:
        """Serve ``resource`` at ``path`` (and below it) if ``endpoint`` is
        listed in ``[http] endpoints``; else do nothing. Returns the function
        that unmounts it (a no-op when nothing was mounted).

        ``link_rel`` lists the route in XEP-0156 host-meta under that
        relation. ``cors_headers`` are request headers a page of another
        origin may send besides ``Content-Type`` (upload's
        ``Authorization``), ``cors_credentials`` lets it send cookies and
        credentials (``Access-Control-Allow-Credentials``), as Prosody's
        route options ``cors.headers`` and ``cors.credentials``.
        ``max_body``: the largest request body the route takes (at most
        ``[http] max_body_size``); a bigger one is refused 413 before it is
        read. 0 for routes that take no body.

        :raises ValueError: for a path that is not ``/segment[/segment…]``
            or is mounted already.
        """
        segments = self._segments(path)
        if endpoint not in self.endpoints:
            self.log.debug("http: {endpoint} is off ([http] endpoints), {path} not served",
                           endpoint=endpoint, path=path)
            return _noop
        if path in self._routes:
            raise ValueError(f"{path} is mounted already (endpoint "
                             f"{self._routes[path].endpoint!r})")
        methods = set(CORS_METHODS)
        methods.update(name[7:] for name in dir(resource)
                       if name.startswith("render_") and name[7:].isupper()
                       # every Resource has render_HEAD (GET's answer); Prosody
                       # names HEAD only where a route declares it
                       and getattr(type(resource), name, None) is not _INHERITED_HEAD)
        route = Route(path=path, segments=segments, resource=resource, endpoint=endpoint,
                      link_rel=link_rel,
                      cors_methods=", ".join(sorted(methods)).encode("ascii"),
                      cors_headers=", ".join(dict.fromkeys((*CORS_HEADERS, *cors_headers)))
                      .encode("latin-1"),
                      cors_credentials=cors_credentials, max_body=max_body)
        self._routes[path] = route
        self._by_segments[segments] = route
        self._depth = max(self._depth, len(segments))
        self.log.info("http: serving {endpoint} at {url}", endpoint=endpoint, url=self.url(path))

        def unmount() -> None:
            if self._routes.get(path) is route:
                del self._routes[path]
                del self._by_segments[segments]
                self._depth = max((len(s) for s in self._by_segments), default=0)
        return unmount

    def body_limit(self, raw_path: bytes) -> int:
        """The largest body a request for ``raw_path`` may carry: its route's
        (the longest mounted prefix), capped by ``[http] max_body_size``;
        none for a path no route serves."""
        best, _, _ = self.route_for(raw_path)
        if best is None:
            return 0
        if best.max_body is None:
            return self.max_body_size
        return min(best.max_body, self.max_body_size)

    def route_for(self, raw_uri: bytes) -> tuple[Route | None, list[bytes], list[bytes]]:
        """The route that serves ``raw_uri`` (as the request line gives it),
        with the ``prepath`` and ``postpath`` its resource will see: what
        the site's root finds once the request is complete, known as soon
        as its request line is."""
        segments = list(map(unquote_to_bytes, raw_uri.split(b"?", 1)[0][1:].split(b"/")))
        route, consumed = self._match(segments[0], segments[1:])
        if route is None:
            return None, [], segments
        return route, segments[:consumed + 1], segments[consumed + 1:]

    def has_route(self, path: str) -> bool:
        """Whether something is mounted at ``path`` now."""
        return path in self._routes

    @staticmethod
    def _segments(path: str) -> tuple[bytes, ...]:
        parts = path.split("/")
        if not path.startswith("/") or len(parts) < 2 \
                or any(p in ("", ".", "..") for p in parts[1:]):
            raise ValueError(f"a route's path is /segment[/segment...], not {path!r}")
        return tuple(p.encode("utf-8") for p in parts[1:])

    def _match(self, first: bytes, rest: list[bytes]) -> tuple[Route | None, int]:
        """The route of the longest mounted prefix of ``[first, *rest]``, and
        how many of ``rest`` it takes."""
        segments = (first, *rest[:self._depth - 1]) if self._depth > 1 else (first,)
        for length in range(len(segments), 0, -1):
            route = self._by_segments.get(segments[:length])
            if route is not None:
                return route, length - 1
        return None, 0

    # -- URLs -------------------------------------------------------------------------

    def url(self, path: str, secure: bool | None = None, websocket: bool = False) -> str:
        """The absolute URL of ``path`` for clients: ``[http] public_url`` +
        ``path`` if set, else ``https://<first domain>:<tls_port>`` when the
        TLS port is on (unless ``secure=False`` and the plain port is on),
        else ``http://<first domain>:<port>``; a default port (80, 443) is
        left out. ``websocket`` gives the ``ws:``/``wss:`` form."""
        if not path.startswith("/"):
            raise ValueError(f"a path starts with /, not {path!r}")
        base = self.options["public_url"]
        if not base:
            plain, tls = self.options["port"], self.options["tls_port"]
            use_tls = bool(tls) and (secure is not False or not plain)
            scheme, port = ("https", tls) if use_tls else ("http", plain)
            default = 443 if use_tls else 80
            base = f"{scheme}://{self.domain}" + ("" if port == default else f":{port}")
        if websocket:
            base = "ws" + base[4:]
        return base + path

    def links(self) -> list[tuple[str, str]]:
        """(relation, URL) of every route mounted with a ``link_rel``, as
        host-meta lists them."""
        routes = [r for r in self._routes.values() if r.link_rel]
        order = {rel: i for i, rel in enumerate(_LINK_ORDER)}
        routes.sort(key=lambda r: order.get(r.link_rel, len(order)))
        return [(r.link_rel, self.url(r.path, websocket=r.link_rel in _WEBSOCKET_RELS))
                for r in routes]

    # -- CORS -------------------------------------------------------------------------

    def cors_headers(self, origin: bytes | None, route: Route | None) -> list[tuple[bytes, bytes]]:
        """The CORS headers of a response to a request from ``origin`` (its
        ``Origin`` header), served by ``route`` (None: by none)."""
        if self._any_origin:
            allow = origin or b"*"
        elif origin is not None and origin in self._origins:
            allow = origin
        else:
            return []
        headers = [
            (b"Access-Control-Allow-Methods",
             route.cors_methods if route else ", ".join(CORS_METHODS).encode("ascii")),
            (b"Access-Control-Allow-Headers",
             route.cors_headers if route else ", ".join(CORS_HEADERS).encode("ascii")),
            (b"Access-Control-Max-Age", b"%d" % CORS_MAX_AGE),
            (b"Access-Control-Allow-Origin", allow),
        ]
        if route is not None and route.cors_credentials:
            headers.append((b"Access-Control-Allow-Credentials", b"true"))
        if origin:
            headers.append((b"Vary", b"Origin"))
        return headers

    # -- what the site reports --------------------------------------------------------

    def access(self, request: server.Request) -> None:
        """One access-log line per request answered (debug level)."""
        self.log.debug(
            'http: {client} "{method} {uri} {proto}" {code} {length} "{agent}"',
            client=_client(request), method=_text(request.method), uri=_text(request.uri),
            proto=_text(request.clientproto), code=request.code, length=request.sentLength,
            agent=_text(request.getHeader(b"user-agent") or b"-"))

    def body_refused(self, request: server.Request, limit: int | None = None) -> None:
        self.counters["http-body-too-large"] += 1
        self.log.debug("http: {client} sent a body beyond what {path} takes ({limit} bytes): "
                       "413", client=_client(request),
                       path=_text(getattr(request.channel, "_path", None)),
                       limit=self.max_body_size if limit is None else limit)

    def connection_refused(self, addr: Any) -> None:
        self.counters["http-connections-refused"] += 1
        now = self.clock.seconds()
        if self._full_warned is None or now - self._full_warned >= 60:
            self._full_warned = now  # once a minute at most
            self.log.warn("http: {count} connections open ([http] max_connections); "
                          "closing new ones until some end", count=self.connections)

    # -- life cycle -------------------------------------------------------------------

    def listen(self, tls_context: Any = None, reactor: Any = None) -> list[IListeningPort]:
        """Listen on ``[http] interfaces``: ``port`` (plain HTTP) and
        ``tls_port`` (HTTPS with ``tls_context``, the server's). A port that
        cannot be bound ends the process, as the client ports do."""
        listening = []
        for port, secure in ((self.options["port"], False), (self.options["tls_port"], True)):
            if not port:
                continue
            if secure and tls_context is None:
                raise ValueError("[http] tls_port needs the server's TLS context")
            for interface in self.options["interfaces"]:
                listening.append(self.listen_on(port, interface,
                                                tls_context if secure else None, reactor))
        return listening

    def listen_on(self, port: int, interface: str = "127.0.0.1", tls_context: Any = None,
                  reactor: Any = None) -> IListeningPort:
        """Listen on one address (HTTPS with ``tls_context``); ``port`` 0
        picks a free one."""
        if reactor is None:
            from twisted.internet import reactor
        try:
            if tls_context is not None:
                listening = reactor.listenSSL(port, self._connections, tls_context,
                                              interface=interface)
            else:
                listening = reactor.listenTCP(port, self._connections, interface=interface)
        except error.CannotListenError as e:
            raise SystemExit(f"xmppd: cannot listen on {interface} port {port}: "
                             f"{e.socketError}") from None
        self.ports.append(listening)
        self.log.info("http listening on {interface} port {port}{tls}", interface=interface,
                      port=listening.getHost().port,
                      tls=" (HTTPS)" if tls_context is not None else " (HTTP)")
        return listening

    def stop_listening(self) -> defer.Deferred:
        """Accept no more connections (those open stay)."""
        ports, self.ports = self.ports, []
        return defer.DeferredList([defer.maybeDeferred(p.stopListening) for p in ports],
                                  consumeErrors=True)

    @defer.inlineCallbacks
    def stopService(self):
        """Stop listening, then close every connection still open (a
        response being written is cut short), aborting those that have not
        closed after :data:`CLOSE_TIMEOUT` seconds."""
        yield super().stopService()
        yield self.stop_listening()
        if not self.connections:
            return
        for wrapper in list(self._connections.protocols):
            wrapper.transport.loseConnection()
        idle = self.when_idle()
        timer: defer.Deferred = defer.Deferred()
        call = self.clock.callLater(CLOSE_TIMEOUT, timer.callback, None)
        yield defer.DeferredList([idle, timer], fireOnOneCallback=True, consumeErrors=True)
        if call.active():
            call.cancel()
        for wrapper in list(self._connections.protocols):
            wrapper.transport.abortConnection()

    @property
    def connections(self) -> int:
        """How many connections are open."""
        return len(self._connections.protocols)

    def when_idle(self) -> defer.Deferred:
        """A Deferred that fires once no connection is open."""
        return self._connections.when_idle()


def _text(value: bytes | None) -> str:
    return (value or b"").decode("latin-1").replace('"', '\\"')


def _client(request: server.Request) -> str:
    address = request.getClientAddress()
    return getattr(address, "host", None) or str(address)
