"""The HTTP service (``server.http``) behind a real listening port on
loopback, driven by Twisted's ``Agent`` and, where the exact bytes matter, a
raw TCP client: routes and endpoints, XEP-0156 host-meta, CORS and
preflight, the body bound (413), 404s, the access log, the connection bound
and idle time-out, shutdown, URLs, and the ``[http]`` section.

Idle time-outs run on a ``task.Clock`` the service is given; the sockets on
the real reactor under trial."""

from __future__ import annotations

import collections
import io
import json
import shutil
import tempfile
from xml.etree import ElementTree

import pytest
from twisted.internet import defer, error, protocol, reactor, task
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest
from twisted.web import client, resource
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH

from xmppd import config as configlib
from xmppd import ns
from xmppd.http.site import HOST_META, HOST_META_JSON, HTTPService
from xmppd.server import XMPPServer

XRD = "{http://docs.oasis-open.org/ns/xri/xrd-1.0}"


def http_options(base: str, **options) -> dict:
    """The ``[http]`` section as the config loader validates it."""
    sections = {"server": {"data_dir": base, "components": "", "storage": "memory:"},
                "http": {k: str(v) for k, v in options.items()}}
    return configlib.from_dict(sections).http


class Echo(resource.Resource):
    """A route's resource: says what it was asked (method, rest of the path, body)."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[bytes, list[bytes], bytes]] = []

    def render_GET(self, request):
        self.seen.append((request.method, list(request.postpath), b""))
        request.setHeader(b"Content-Type", b"text/plain")
        return b"/".join(request.postpath) or b"echo"

    def render_POST(self, request):
        body = request.content.read()
        self.seen.append((request.method, list(request.postpath), body))
        return b"got %d" % len(body)


class OwnOptions(Echo):
    def render_OPTIONS(self, request):
        request.setResponseCode(204)
        request.setHeader(b"X-Own", b"yes")
        return b""


class _Collect(protocol.Protocol):
    """A raw client: sends bytes, keeps everything received until the close."""

    def __init__(self):
        self.data = b""
        self.made: defer.Deferred = defer.Deferred()
        self.done: defer.Deferred = defer.Deferred()

    def connectionMade(self):
        self.made.callback(self)

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason=None):
        self.done.callback(self.data)


def parse(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


class Base(unittest.TestCase):
    options: dict = {}

    def setUp(self):
        self.base = tempfile.mkdtemp(prefix="xmppd-http-")
        self.addCleanup(shutil.rmtree, self.base, True)
        self.clock = task.Clock()
        self.counters: collections.Counter[str] = collections.Counter()
        self.http = HTTPService(http_options(self.base, **self.options), ["localhost"],
                                clock=self.clock, counters=self.counters)
        self.http.startService()
        self.port = self.http.listen_on(0, "127.0.0.1")
        self.pool = client.HTTPConnectionPool(reactor, persistent=True)
        self.agent = client.Agent(reactor, pool=self.pool)
        self.addCleanup(self._stop)

    @defer.inlineCallbacks
    def _stop(self):
        yield self.pool.closeCachedConnections()
        if self.http.running:
            yield self.http.stopService()
        yield self.http.when_idle()

    def url(self, path: str) -> bytes:
        return f"http://127.0.0.1:{self.port.getHost().port}{path}".encode()

    @defer.inlineCallbacks
    def get(self, path: str, method: bytes = b"GET", headers: dict[str, str] | None = None,
            body: bytes | None = None):
        h = Headers({k.encode(): [v.encode()] for k, v in (headers or {}).items()})
        producer = client.FileBodyProducer(io.BytesIO(body)) if body is not None else None
        response = yield self.agent.request(method, self.url(path), h, producer)
        data = yield client.readBody(response)
        flat = {k.decode().lower(): b", ".join(v).decode()
                for k, v in response.headers.getAllRawHeaders()}
        if response.length is not UNKNOWN_LENGTH:
            flat["content-length"] = str(response.length)
        return response.code, flat, data

    def connect(self) -> _Collect:
        collector = _Collect()
        protocol.ClientCreator(reactor, lambda: collector).connectTCP(
            "127.0.0.1", self.port.getHost().port)
        return collector

    @defer.inlineCallbacks
    def raw(self, data: bytes):
        """Send ``data`` as it is; the answer, parsed, once the server closes."""
        collector = self.connect()
        yield collector.made
        collector.transport.write(data)
        received = yield collector.done
        return parse(received)


class RouteTests(Base):
    options = {"port": 5280, "tls_port": 5281}

    @defer.inlineCallbacks
    def test_a_route_serves_its_path_and_below_it_with_the_rest_as_postpath(self):
        echo = Echo()
        self.http.add_route("/upload", echo, endpoint="upload")
        code, _, body = yield self.get("/upload/abc/file.txt")
        self.assertEqual((code, body), (200, b"abc/file.txt"))
        code, _, body = yield self.get("/upload")
        self.assertEqual((code, body), (200, b"echo"))
        self.assertEqual([seen[1] for seen in echo.seen], [[b"abc", b"file.txt"], []])

    @defer.inlineCallbacks
    def test_a_path_that_only_starts_like_a_route_is_not_found(self):
        self.http.add_route("/upload", Echo(), endpoint="upload")
        code, headers, body = yield self.get("/uploads/x")
        self.assertEqual(code, 404)
        self.assertEqual(headers["content-type"], "text/html; charset=utf-8")
        self.assertIn(b"404 Not Found", body)

    @defer.inlineCallbacks
    def test_the_longest_mounted_prefix_wins(self):
        outer, inner = Echo(), Echo()
        self.http.add_route("/a", outer, endpoint="upload")
        self.http.add_route("/a/b", inner, endpoint="bosh")
        yield self.get("/a/b/c")
        yield self.get("/a/x")
        self.assertEqual([s[1] for s in inner.seen], [[b"c"]])
        self.assertEqual([s[1] for s in outer.seen], [[b"x"]])

    @defer.inlineCallbacks
    def test_unknown_paths_the_root_and_directories_are_404_without_a_listing(self):
        self.http.add_route("/upload", Echo(), endpoint="upload")
        for path in ("/", "/nothing", "/.well-known/", "/.well-known", "//upload",
                     "/.well-known/host-meta/extra"):
            code, _, body = yield self.get(path)
            self.assertEqual(code, 404, path)
            self.assertNotIn(b"host-meta", body, path)

    @defer.inlineCallbacks
    def test_an_endpoint_not_listed_is_not_served_and_its_unmount_is_a_no_op(self):
        http = HTTPService(http_options(self.base, endpoints="websocket"), ["localhost"],
                           clock=self.clock)
        unmount = http.add_route("/upload", Echo(), endpoint="upload")
        self.assertFalse(http.has_route("/upload"))
        unmount()
        port = http.listen_on(0, "127.0.0.1")
        self.addCleanup(port.stopListening)
        response = yield self.agent.request(
            b"GET", f"http://127.0.0.1:{port.getHost().port}/upload".encode())
        yield client.readBody(response)
        self.assertEqual(response.code, 404)

    @defer.inlineCallbacks
    def test_unmounting_stops_serving_the_path(self):
        unmount = self.http.add_route("/upload", Echo(), endpoint="upload")
        self.assertTrue(self.http.has_route("/upload"))
        unmount()
        unmount()  # twice is harmless
        self.assertFalse(self.http.has_route("/upload"))
        code, _, _ = yield self.get("/upload/x")
        self.assertEqual(code, 404)
        # and the path can be mounted again
        self.http.add_route("/upload", Echo(), endpoint="upload")
        code, _, _ = yield self.get("/upload/x")
        self.assertEqual(code, 200)

    def test_a_path_mounted_twice_or_malformed_is_refused(self):
        self.http.add_route("/upload", Echo(), endpoint="upload")
        with self.assertRaises(ValueError):
            self.http.add_route("/upload", Echo(), endpoint="upload")
        for bad in ("upload", "/", "/a/", "/a//b", "/a/../b", ""):
            with self.assertRaises(ValueError, msg=bad):
                self.http.add_route(bad, Echo(), endpoint="upload")

    @defer.inlineCallbacks
    def test_head_is_answered_from_get_without_a_body(self):
        self.http.add_route("/upload", Echo(), endpoint="upload")
        code, headers, body = yield self.raw(b"HEAD /upload/abc HTTP/1.1\r\nHost: x\r\n"
                                             b"Connection: close\r\n\r\n")
        self.assertEqual((code, body), (200, b""))
        self.assertEqual(headers["content-length"], "3")

    @defer.inlineCallbacks
    def test_the_server_header_does_not_name_twisted(self):
        _, headers, _ = yield self.get("/nothing")
        self.assertNotIn("server", headers)
        self.assertIn("date", headers)


class HostMetaTests(Base):
    options = {"port": 5280, "tls_port": 5281}

    def mount_both(self):
        # mounted WebSocket first: host-meta still lists BOSH first, as Prosody does
        self.http.add_route("/xmpp-websocket", Echo(), endpoint="websocket",
                            link_rel=ns.ALT_CONNECTIONS_WEBSOCKET)
        self.http.add_route("/http-bind", Echo(), endpoint="bosh",
                            link_rel=ns.ALT_CONNECTIONS_XBOSH)
        self.http.add_route("/upload", Echo(), endpoint="upload")

    @defer.inlineCallbacks
    def test_host_meta_is_an_xrd_document_listing_the_routes_with_a_link_rel(self):
        self.mount_both()
        code, headers, body = yield self.get(HOST_META)
        self.assertEqual(code, 200)
        self.assertEqual(headers["content-type"], "application/xrd+xml")
        self.assertTrue(body.startswith(b'<?xml version="1.0" encoding="UTF-8"?><XRD '))
        xrd = ElementTree.fromstring(body)
        self.assertEqual(xrd.tag, XRD + "XRD")
        self.assertEqual([(link.tag, link.get("rel"), link.get("href")) for link in xrd], [
            (XRD + "Link", ns.ALT_CONNECTIONS_XBOSH, "https://localhost:5281/http-bind"),
            (XRD + "Link", ns.ALT_CONNECTIONS_WEBSOCKET, "wss://localhost:5281/xmpp-websocket"),
        ])

    @defer.inlineCallbacks
    def test_host_meta_json_is_the_same_links_as_json(self):
        self.mount_both()
        code, headers, body = yield self.get(HOST_META_JSON)
        self.assertEqual((code, headers["content-type"]), (200, "application/json"))
        self.assertEqual(json.loads(body), {"links": [
            {"rel": ns.ALT_CONNECTIONS_XBOSH, "href": "https://localhost:5281/http-bind"},
            {"rel": ns.ALT_CONNECTIONS_WEBSOCKET,
             "href": "wss://localhost:5281/xmpp-websocket"},
        ]})

    @defer.inlineCallbacks
    def test_host_meta_answers_json_when_accept_names_json_before_xml(self):
        self.mount_both()
        _, headers, body = yield self.get(HOST_META, headers={"Accept": "application/json"})
        self.assertEqual(headers["content-type"], "application/json")
        self.assertEqual(len(json.loads(body)["links"]), 2)
        _, headers, _ = yield self.get(
            HOST_META, headers={"Accept": "application/xrd+xml, application/json"})
        self.assertEqual(headers["content-type"], "application/xrd+xml")
        _, headers, _ = yield self.get(HOST_META, headers={"Accept": "*/*"})
        self.assertEqual(headers["content-type"], "application/xrd+xml")

    @defer.inlineCallbacks
    def test_an_unmounted_route_leaves_host_meta(self):
        unmount = self.http.add_route("/http-bind", Echo(), endpoint="bosh",
                                      link_rel=ns.ALT_CONNECTIONS_XBOSH)
        unmount()
        _, _, body = yield self.get(HOST_META_JSON)
        self.assertEqual(json.loads(body), {"links": []})

    @defer.inlineCallbacks
    def test_host_meta_can_be_turned_off_as_an_endpoint(self):
        http = HTTPService(http_options(self.base, endpoints="websocket bosh"), ["localhost"],
                           clock=self.clock)
        self.assertFalse(http.has_route(HOST_META))
        self.assertFalse(http.has_route(HOST_META_JSON))
        port = http.listen_on(0, "127.0.0.1")
        self.addCleanup(port.stopListening)
        for path in (HOST_META, HOST_META_JSON):
            response = yield self.agent.request(
                b"GET", f"http://127.0.0.1:{port.getHost().port}{path}".encode())
            yield client.readBody(response)
            self.assertEqual(response.code, 404)


class CORSTests(Base):
    options = {"port": 5280, "tls_port": 0}

    @defer.inlineCallbacks
    def test_every_response_carries_cors_headers_echoing_the_origin(self):
        self.http.add_route("/http-bind", Echo(), endpoint="bosh")
        for path, expected in (("/http-bind", 200), ("/nothing", 404), (HOST_META, 200)):
            code, headers, _ = yield self.get(path, headers={"Origin": "https://web.example"})
            self.assertEqual(code, expected)
            self.assertEqual(headers["access-control-allow-origin"], "https://web.example")
            self.assertEqual(headers["access-control-allow-headers"], "Content-Type")
            self.assertEqual(headers["access-control-max-age"], "7200")
            self.assertEqual(headers["vary"], "Origin")
            self.assertIn("GET", headers["access-control-allow-methods"])
            self.assertIn("OPTIONS", headers["access-control-allow-methods"])

    @defer.inlineCallbacks
    def test_without_an_origin_any_origin_is_allowed(self):
        _, headers, _ = yield self.get(HOST_META)
        self.assertEqual(headers["access-control-allow-origin"], "*")
        self.assertNotIn("vary", headers)

    @defer.inlineCallbacks
    def test_preflight_is_200_with_the_methods_the_route_renders(self):
        self.http.add_route("/http-bind", Echo(), endpoint="bosh")
        code, headers, body = yield self.get(
            "/http-bind", method=b"OPTIONS",
            headers={"Origin": "https://web.example", "Access-Control-Request-Method": "POST"})
        self.assertEqual((code, body), (200, b""))
        self.assertEqual(headers["content-length"], "0")
        # GET and OPTIONS always, and what the resource renders (Prosody's set)
        self.assertEqual(headers["access-control-allow-methods"], "GET, OPTIONS, POST")
        self.assertEqual(headers["access-control-allow-origin"], "https://web.example")
        _, headers, _ = yield self.get(HOST_META, method=b"OPTIONS")
        self.assertEqual(headers["access-control-allow-methods"], "GET, OPTIONS")

    @defer.inlineCallbacks
    def test_preflight_does_not_reach_the_resource(self):
        echo = Echo()
        self.http.add_route("/http-bind", echo, endpoint="bosh")
        yield self.get("/http-bind", method=b"OPTIONS")
        self.assertEqual(echo.seen, [])

    @defer.inlineCallbacks
    def test_a_resource_that_answers_options_itself_does_so_with_the_cors_headers(self):
        self.http.add_route("/own", OwnOptions(), endpoint="bosh")
        code, headers, _ = yield self.get("/own", method=b"OPTIONS")
        self.assertEqual(code, 204)
        self.assertEqual(headers["x-own"], "yes")
        self.assertEqual(headers["access-control-allow-origin"], "*")

    @defer.inlineCallbacks
    def test_a_route_may_allow_more_headers_and_credentials(self):
        self.http.add_route("/upload", Echo(), endpoint="upload",
                            cors_headers=("Authorization",), cors_credentials=True)
        _, headers, _ = yield self.get("/upload/x", method=b"OPTIONS",
                                       headers={"Origin": "https://web.example"})
        self.assertEqual(headers["access-control-allow-headers"], "Content-Type, Authorization")
        self.assertEqual(headers["access-control-allow-credentials"], "true")
        _, headers, _ = yield self.get(HOST_META, headers={"Origin": "https://web.example"})
        self.assertNotIn("access-control-allow-credentials", headers)

    @defer.inlineCallbacks
    def test_preflight_of_an_unknown_path_is_404_with_cors_headers(self):
        code, headers, _ = yield self.get("/nothing", method=b"OPTIONS")
        self.assertEqual(code, 404)
        self.assertEqual(headers["access-control-allow-origin"], "*")


class RestrictedOriginTests(Base):
    options = {"port": 5280, "tls_port": 0,
               "cors_origins": "https://web.example http://localhost:8080"}

    @defer.inlineCallbacks
    def test_a_listed_origin_is_allowed(self):
        _, headers, _ = yield self.get(HOST_META, headers={"Origin": "http://localhost:8080"})
        self.assertEqual(headers["access-control-allow-origin"], "http://localhost:8080")

    @defer.inlineCallbacks
    def test_another_origin_and_no_origin_get_no_cors_headers(self):
        for extra in ({"Origin": "https://evil.example"}, {}):
            code, headers, _ = yield self.get(HOST_META, headers=extra)
            self.assertEqual(code, 200)  # the answer is the same: the browser enforces
            self.assertFalse([h for h in headers if h.startswith("access-control-")], headers)


class BodyLimitTests(Base):
    options = {"port": 5280, "tls_port": 0, "max_body_size": 1000}

    def setUp(self):
        super().setUp()
        self.echo = Echo()
        self.http.add_route("/http-bind", self.echo, endpoint="bosh")

    @defer.inlineCallbacks
    def test_a_body_within_the_limit_reaches_the_resource(self):
        code, _, body = yield self.get("/http-bind", method=b"POST", body=b"x" * 1000)
        self.assertEqual((code, body), (200, b"got 1000"))

    @defer.inlineCallbacks
    def test_a_content_length_beyond_the_limit_is_413_before_the_body_and_closes(self):
        code, headers, body = yield self.raw(
            b"POST /http-bind HTTP/1.1\r\nHost: x\r\nOrigin: https://web.example\r\n"
            b"Content-Length: 1001\r\n\r\n" + b"x" * 10)
        self.assertEqual(code, 413)
        self.assertEqual(headers["connection"], "close")
        self.assertEqual(headers["access-control-allow-origin"], "https://web.example")
        self.assertEqual(int(headers["content-length"]), len(body))
        self.assertEqual(self.echo.seen, [])
        self.assertEqual(self.counters["http-body-too-large"], 1)

    @defer.inlineCallbacks
    def test_expect_100_continue_beyond_the_limit_gets_413_and_no_continue(self):
        received = yield self._raw_bytes(
            b"POST /http-bind HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: 5000\r\n\r\n")
        self.assertTrue(received.startswith(b"HTTP/1.1 413 "), received)
        self.assertNotIn(b"100 Continue", received)

    @defer.inlineCallbacks
    def test_a_route_with_a_smaller_body_limit_refuses_beyond_it_before_reading(self):
        small = Echo()
        self.http.add_route("/small", small, endpoint="upload", max_body=10)
        code, _, _ = yield self.raw(
            b"POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n" + b"x" * 11)
        self.assertEqual(code, 413)
        self.assertEqual(small.seen, [])
        code, _, body = yield self.get("/small", method=b"POST", body=b"x" * 10)
        self.assertEqual((code, body), (200, b"got 10"))

    @defer.inlineCallbacks
    def test_a_body_to_a_path_no_route_serves_is_refused_unread(self):
        code, _, _ = yield self.raw(
            b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nxxxxx")
        self.assertEqual(code, 413)

    @defer.inlineCallbacks
    def test_a_chunked_body_growing_beyond_the_limit_is_413(self):
        chunk = b"x" * 600
        code, _, _ = yield self.raw(
            b"POST /http-bind HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n" % len(chunk) + chunk + b"\r\n"
            + b"%x\r\n" % len(chunk) + chunk + b"\r\n0\r\n\r\n")
        self.assertEqual(code, 413)
        self.assertEqual(self.echo.seen, [])

    @defer.inlineCallbacks
    def _raw_bytes(self, data: bytes):
        collector = self.connect()
        yield collector.made
        collector.transport.write(data)
        received = yield collector.done
        return received


class Guarded(Echo):
    """A route's resource that refuses from the headers: 403 (with a header
    of its own) unless ``X-Key: ok``; ``X-Limit`` bounds the body."""

    def __init__(self, fail: bool = False):
        super().__init__()
        self.fail = fail
        self.checked: list[tuple] = []

    def check_headers(self, request):
        self.checked.append((request.method, request.path, list(request.prepath),
                             list(request.postpath), request.route.path))
        if self.fail:
            raise RuntimeError("a bug in a check")
        limit = request.getHeader(b"x-limit")
        if limit is not None:
            request.limit_body(int(limit))
        if request.getHeader(b"x-key") == b"ok":
            return None
        request.setHeader(b"WWW-Authenticate", b"Key")
        return 403

    def render_PUT(self, request):
        return self.render_POST(request)


class HeaderCheckTests(Base):
    """A route's ``check_headers`` answers before the body is read."""

    options = {"port": 5280, "tls_port": 0, "max_body_size": 100_000_000}
    timeout = 20  # (a server waiting for the body would hang the raw client)

    def setUp(self):
        super().setUp()
        self.guarded = Guarded()
        self.http.add_route("/files", self.guarded, endpoint="upload")

    @defer.inlineCallbacks
    def test_a_refusal_is_answered_before_any_of_the_body_is_sent_and_closes(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        # 50 MB announced, not a byte of it sent: the answer must come anyway
        received = yield self._headers_only(
            b"PUT /files/a%20b/c?x=1 HTTP/1.1\r\nHost: x\r\nOrigin: https://web.example\r\n"
            b"Expect: 100-continue\r\nContent-Length: 50000000\r\n\r\n")
        self.assertNotIn(b"100 Continue", received)
        code, headers, body = parse(received)
        self.assertEqual(code, 403)
        self.assertEqual(headers["www-authenticate"], "Key")
        self.assertEqual(headers["connection"], "close")
        self.assertEqual(headers["access-control-allow-origin"], "https://web.example")
        self.assertIn("PUT", headers["access-control-allow-methods"])
        self.assertEqual(int(headers["content-length"]), len(body))
        self.assertIn(b"403 Forbidden", body)
        self.assertEqual(self.guarded.checked,
                         [(b"PUT", b"/files/a%20b/c", [b"files"], [b"a b", b"c"], "/files")])
        self.assertEqual(self.guarded.seen, [])  # never rendered
        lines = [formatEvent(e) for e in events
                 if e.get("log_format", "").startswith("http: {client}")]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn('"PUT /files/a%20b/c?x=1 HTTP/1.1" 403', lines[0])

    @defer.inlineCallbacks
    def test_an_accepted_request_is_read_and_rendered_as_routed(self):
        code, _, body = yield self.get("/files/x", method=b"PUT", body=b"hello",
                                       headers={"X-Key": "ok"})
        self.assertEqual((code, body), (200, b"got 5"))
        self.assertEqual(self.guarded.seen, [(b"PUT", [b"x"], b"hello")])
        self.assertEqual(len(self.guarded.checked), 1)

    @defer.inlineCallbacks
    def test_a_chunked_body_beyond_the_limit_the_check_set_is_413(self):
        chunk = b"x" * 6
        code, _, _ = yield self.raw(
            b"PUT /files/x HTTP/1.1\r\nHost: x\r\nX-Key: ok\r\nX-Limit: 10\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            + (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 2 + b"0\r\n\r\n")
        self.assertEqual(code, 413)
        self.assertEqual(self.guarded.seen, [])
        code, _, body = yield self.raw(
            b"PUT /files/x HTTP/1.1\r\nHost: x\r\nX-Key: ok\r\nX-Limit: 12\r\n"
            b"Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
            + (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 2 + b"0\r\n\r\n")
        self.assertEqual((code, body), (200, b"got 12"))

    @defer.inlineCallbacks
    def test_a_check_that_fails_is_logged_and_the_request_served_as_without_it(self):
        failing = Guarded(fail=True)
        self.http.add_route("/broken", failing, endpoint="upload")
        code, _, body = yield self.get("/broken", method=b"PUT", body=b"abc")
        self.assertEqual((code, body), (200, b"got 3"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    @defer.inlineCallbacks
    def test_requests_to_other_routes_are_not_checked(self):
        self.http.add_route("/plain", Echo(), endpoint="bosh")
        code, _, _ = yield self.get("/plain", method=b"POST", body=b"abc")
        self.assertEqual(code, 200)
        self.assertEqual(self.guarded.checked, [])

    @defer.inlineCallbacks
    def _headers_only(self, head: bytes):
        collector = self.connect()
        yield collector.made
        collector.transport.write(head)
        received = yield collector.done
        return received


class AccessLogTests(Base):
    options = {"port": 5280, "tls_port": 0}

    @defer.inlineCallbacks
    def test_each_request_is_one_access_line_at_debug_level(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        yield self.get("/nothing", headers={"User-Agent": "probe/1"})
        yield self.get(HOST_META)
        lines = [e for e in events if e.get("log_format", "").startswith("http: {client}")]
        self.assertEqual(len(lines), 2, [formatEvent(e) for e in lines])
        self.assertEqual({e["log_level"].name for e in lines}, {"debug"})
        first = formatEvent(lines[0])
        self.assertIn('127.0.0.1 "GET /nothing HTTP/1.1" 404', first)
        self.assertIn('"probe/1"', first)
        self.assertIn(f'"GET {HOST_META} HTTP/1.1" 200', formatEvent(lines[1]))


class ConnectionTests(Base):
    options = {"port": 5280, "tls_port": 0, "max_connections": 2, "idle_timeout": 30}

    @defer.inlineCallbacks
    def test_connections_beyond_max_connections_are_closed_at_once(self):
        first, second = self.connect(), self.connect()
        yield first.made
        yield second.made
        # the server has both once a request on each is answered
        for c in (first, second):
            c.transport.write(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        yield task.deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(self.http.connections, 2)
        third = self.connect()
        data = yield third.done
        self.assertEqual(data, b"")
        self.assertEqual(self.counters["http-connections-refused"], 1)
        # one ends: there is room again
        first.transport.loseConnection()
        yield first.done
        code, _, _ = yield self.raw(b"GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertEqual(code, 404)
        second.transport.loseConnection()
        yield second.done

    @defer.inlineCallbacks
    def test_a_websocket_upgrade_stays_counted_until_it_ends_and_is_never_idle(self):
        from twisted.web.websocket import WebSocketResource
        from wsproto import ConnectionType, WSConnection
        from wsproto.events import Request

        class Quiet:
            def negotiationStarted(self, transport):
                pass

            def negotiationFinished(self):
                pass

            def connectionLost(self, reason):
                pass

        class Factory:
            def buildProtocol(self, request):
                return Quiet()

        self.http.add_route("/xmpp-websocket", WebSocketResource(Factory()),
                            endpoint="websocket")
        ws = WSConnection(ConnectionType.CLIENT)
        upgraded = self.connect()
        yield upgraded.made
        upgraded.transport.write(ws.send(Request(host="x", target="/xmpp-websocket")))
        yield task.deferLater(reactor, 0.2, lambda: None)
        self.assertTrue(upgraded.data.startswith(b"HTTP/1.1 101 "), upgraded.data)
        self.assertEqual(self.http.connections, 1)
        self.clock.advance(3600)  # idle_timeout is for HTTP requests, not WebSockets
        yield task.deferLater(reactor, 0.05, lambda: None)
        self.assertFalse(upgraded.done.called)
        upgraded.transport.loseConnection()
        yield upgraded.done
        yield self.http.when_idle()
        self.assertEqual(self.http.connections, 0)

    @defer.inlineCallbacks
    def test_a_connection_idle_beyond_idle_timeout_is_closed(self):
        idle = self.connect()
        yield idle.made
        idle.transport.write(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        yield task.deferLater(reactor, 0.2, lambda: None)
        self.assertFalse(idle.done.called)
        self.clock.advance(29)
        yield task.deferLater(reactor, 0.05, lambda: None)
        self.assertFalse(idle.done.called)
        self.clock.advance(2)
        data = yield idle.done
        self.assertTrue(data.startswith(b"HTTP/1.1 404 "))

    @defer.inlineCallbacks
    def test_stopping_the_service_closes_the_port_and_open_connections(self):
        number = self.port.getHost().port
        open_ = self.connect()
        yield open_.made
        open_.transport.write(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        yield task.deferLater(reactor, 0.2, lambda: None)
        yield self.http.stopService()
        yield open_.done
        self.assertEqual(self.http.connections, 0)
        self.assertEqual(self.http.ports, [])
        refused = protocol.ClientCreator(reactor, protocol.Protocol).connectTCP(
            "127.0.0.1", number)
        yield self.assertFailure(refused, error.ConnectionRefusedError)


class ListenTests(Base):
    options = {"port": 5280, "tls_port": 0}

    def test_a_port_that_cannot_be_bound_ends_the_process_with_one_line(self):
        taken = self.port.getHost().port
        with self.assertRaises(SystemExit) as caught:
            self.http.listen_on(taken, "127.0.0.1")
        self.assertIn(f"xmppd: cannot listen on 127.0.0.1 port {taken}: ", str(caught.exception))

    def test_listening_logs_one_line_per_listener(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        port = self.http.listen_on(0, "127.0.0.1")
        lines = [formatEvent(e) for e in events if "listening" in e.get("log_format", "")]
        self.assertEqual(lines, [f"http listening on 127.0.0.1 port {port.getHost().port} (HTTP)"])

    def test_tls_port_without_a_tls_context_is_refused(self):
        http = HTTPService(http_options(self.base, port=0, tls_port=5281), ["localhost"],
                           clock=self.clock)
        with self.assertRaises(ValueError):
            http.listen()


# -- URLs, configuration and wiring (no sockets) -------------------------------------

def service(tmp_path, **options) -> HTTPService:
    return HTTPService(http_options(str(tmp_path), **options), ["example.org", "other.org"],
                       clock=task.Clock())


def test_url_is_https_on_the_tls_port_when_it_is_on(tmp_path):
    http = service(tmp_path)
    assert http.url("/http-bind") == "https://example.org:5281/http-bind"
    assert http.url("/xmpp-websocket", websocket=True) == "wss://example.org:5281/xmpp-websocket"


def test_url_secure_false_gives_the_plain_port(tmp_path):
    http = service(tmp_path)
    assert http.url("/http-bind", secure=False) == "http://example.org:5280/http-bind"
    assert http.url("/xmpp-websocket", secure=False, websocket=True) == \
        "ws://example.org:5280/xmpp-websocket"


def test_url_uses_what_is_on(tmp_path):
    assert service(tmp_path, tls_port=0).url("/a", secure=True) == "http://example.org:5280/a"
    assert service(tmp_path, port=0).url("/a", secure=False) == "https://example.org:5281/a"


def test_url_leaves_default_ports_out(tmp_path):
    assert service(tmp_path, port=80, tls_port=443).url("/a") == "https://example.org/a"
    assert service(tmp_path, port=80, tls_port=0).url("/a") == "http://example.org/a"


def test_url_with_public_url_is_its_base_plus_the_path(tmp_path):
    http = service(tmp_path, public_url="https://chat.example.org/xmpp/")
    assert http.url("/http-bind") == "https://chat.example.org/xmpp/http-bind"
    assert http.url("/http-bind", secure=False) == "https://chat.example.org/xmpp/http-bind"
    assert http.url("/xmpp-websocket", websocket=True) == \
        "wss://chat.example.org/xmpp/xmpp-websocket"
    with pytest.raises(ValueError):
        http.url("http-bind")


def test_host_meta_links_use_public_url(tmp_path):
    http = service(tmp_path, public_url="https://chat.example.org/xmpp/")
    http.add_route("/xmpp-websocket", resource.Resource(), endpoint="websocket",
                   link_rel=ns.ALT_CONNECTIONS_WEBSOCKET)
    assert http.links() == [(ns.ALT_CONNECTIONS_WEBSOCKET,
                             "wss://chat.example.org/xmpp/xmpp-websocket")]


def test_http_section_defaults(tmp_path):
    options = http_options(str(tmp_path))
    assert options == {
        "port": 5280, "tls_port": 5281, "interfaces": ["127.0.0.1"],
        "endpoints": ["websocket", "bosh", "host-meta", "conversejs", "upload"],
        "cors_origins": ["*"], "max_body_size": 10485760, "loopback_is_secure": True, "public_url": "",
        "max_connections": 4096, "idle_timeout": 120,
        "bosh_max_inactivity": 60, "bosh_max_wait": 120, "bosh_max_polling": 5,
        "bosh_max_sessions": 10000, "bosh_max_input_buffer": 262144,
    }


@pytest.mark.parametrize("option, value, message", [
    ("port", "http", "[http] port: expected an integer"),
    ("public_url", "ftp://example.org", "[http] public_url: expected an http:// or https:// URL"),
    ("public_url", "https://example.org/?a=b", "[http] public_url: "),
    ("cors_origins", "https://example.org/path", "[http] cors_origins: "),
    ("cors_origins", "example.org", "[http] cors_origins: "),
    ("max_connections", "0", "[http] max_connections: must be at least 1"),
    ("tls_port", "5280", "[http] tls_port: 5280 is [http] port already"),
])
def test_http_section_mistakes_are_one_line(tmp_path, option, value, message):
    with pytest.raises(configlib.ConfigError) as caught:
        http_options(str(tmp_path), **{option: value})
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def _server(tmp_path, listen=True, **http):
    config = configlib.from_dict({"server": {"data_dir": str(tmp_path), "components": "disco",
                                             "storage": "memory:"},
                                  "http": {k: str(v) for k, v in http.items()}})
    return XMPPServer(config, listen=listen, clock=task.Clock())


def test_the_server_has_an_http_service_when_a_port_is_on(tmp_path):
    server = _server(tmp_path)
    assert isinstance(server.http, HTTPService)
    assert server.http.parent is server
    # the first child: started before the components, stopped after them
    assert list(server)[0] is server.http
    assert server.http.counters is server.counters
    assert isinstance(_server(tmp_path, port=0).http, HTTPService)


def test_the_server_has_no_http_service_with_both_ports_off_or_without_listeners(tmp_path):
    assert _server(tmp_path, port=0, tls_port=0).http is None
    assert _server(tmp_path, listen=False).http is None
