"""The upload service's HTTP resource behind the server's own HTTP service
(:mod:`xmppd.http.site`) on loopback: PUT, GET and HEAD as Prosody's
mod_http_file_share answers them, the secret (none, wrong, another slot's),
sizes that do not match the slot, CORS for web clients, and path tricks —
none of which writes or reads anything outside ``<data_dir>/upload/``.

The service runs in the harness on a ``task.Clock`` (slot deadlines and
expiry are moved by hand); the HTTP side and the file writes (in a thread)
run on the real reactor under trial."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
from urllib.parse import urlsplit

from twisted.internet import defer, protocol, reactor, task
from twisted.trial import unittest
from twisted.web import client
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH

from upload_helpers import make_harness, request, service, slot_of


class _Collect(protocol.Protocol):
    def __init__(self):
        self.data = b""
        self.done: defer.Deferred = defer.Deferred()

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason=None):
        self.done.callback(self.data)


class _Chunked:
    """A body of unknown length: Agent sends it chunked, without Content-Length."""

    length = UNKNOWN_LENGTH

    def __init__(self, data: bytes):
        self.data = data

    def startProducing(self, consumer):
        consumer.write(self.data)
        return defer.succeed(None)

    def stopProducing(self):
        pass

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass


class Response:
    def __init__(self, code: int, headers: dict[str, str], body: bytes):
        self.code, self.headers, self.body = code, headers, body


def parse_raw(data: bytes) -> Response:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Response(int(lines[0].split()[1]), headers, body)


class UploadHTTPTests(unittest.TestCase):

    def setUp(self):
        # Not trial's mktemp(): under pytest it would litter the working directory.
        self.base = tempfile.mkdtemp(prefix="xmppd-upload-")
        self.addCleanup(shutil.rmtree, self.base, True)
        self.clock = task.Clock()
        self.clock.advance(1_000_000)
        self.h = make_harness(self.base, self.clock, max_file_size=1_000_000,
                              daily_quota=10_000_000, expire_after=3600, slot_timeout=300)
        self.service = service(self.h)
        # the real thread for file writes, as in the server
        from xmppd.services.upload.files import FileStore
        self.service.files.run_blocking = FileStore.run_blocking
        self.alice = self.h.login("alice@localhost/phone")
        # the server's own HTTP service (xmppd.http.site), on a free loopback port
        self.port = self.h.server.http.listen_on(0, "127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.pool = client.HTTPConnectionPool(reactor, persistent=False)
        self.agent = client.Agent(reactor, pool=self.pool)
        self.addCleanup(self.pool.closeCachedConnections)
        self.directory = os.path.join(self.base, "upload")

    # -- helpers -------------------------------------------------------------------------

    def local(self, url: str) -> bytes:
        """The slot URL, pointed at this test's Site."""
        parts = urlsplit(url)
        return f"http://127.0.0.1:{self.port.getHost().port}{parts.path}".encode()

    def slot(self, size: int = 5, filename: str = "hello.txt", content_type="text/plain"):
        return slot_of(request(self.alice, filename=filename, size=size,
                               content_type=content_type))

    @defer.inlineCallbacks
    def http(self, method: bytes, url: bytes, body: bytes | None = None,
             headers: dict[str, str] | None = None, chunked: bool = False):
        h = Headers({k.encode(): [v.encode()] for k, v in (headers or {}).items()})
        producer = None
        if body is not None:
            producer = _Chunked(body) if chunked else client.FileBodyProducer(io.BytesIO(body))
        response = yield self.agent.request(method, url, h, producer)
        data = yield client.readBody(response)
        flat = {k.decode().lower(): v[0].decode() for k, v in response.headers.getAllRawHeaders()}
        if response.length is not UNKNOWN_LENGTH:  # Agent keeps it out of the headers
            flat["content-length"] = str(response.length)
        return Response(response.code, flat, data)

    def put(self, slot, body: bytes, token: str | None = None, **kw):
        headers = {"Authorization": f"Bearer {slot.token if token is None else token}"}
        return self.http(b"PUT", self.local(slot.put), body, headers, **kw)

    def raw(self, data: bytes) -> defer.Deferred:
        """Send ``data`` as it is (no client library to tidy it) and parse the answer."""
        collector = _Collect()
        d = protocol.ClientCreator(reactor, lambda: collector).connectTCP(
            "127.0.0.1", self.port.getHost().port)
        d.addCallback(lambda p: p.transport.write(data))
        return collector.done.addCallback(parse_raw)

    def files(self) -> list[str]:
        """Every file under the test's data directory, relative to it."""
        found = []
        for top, _, names in os.walk(self.base):
            found += [os.path.relpath(os.path.join(top, n), self.base) for n in names]
        return sorted(found)

    # -- PUT then GET ------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_put_then_get_returns_the_same_bytes_with_prosodys_headers(self):
        slot = self.slot(filename="hé llo.txt")
        response = yield self.put(slot, b"hello")
        self.assertEqual(response.code, 201)
        self.assertEqual(response.body, b"")
        response = yield self.http(b"GET", self.local(slot.get))
        self.assertEqual((response.code, response.body), (200, b"hello"))
        self.assertEqual(response.headers["content-type"], "text/plain")
        self.assertEqual(response.headers["content-length"], "5")
        self.assertEqual(response.headers["content-disposition"],
                         "inline; filename*=UTF-8''h%C3%A9%20llo.txt")
        self.assertEqual(response.headers["x-content-type-options"], "nosniff")
        self.assertEqual(response.headers["content-security-policy"],
                         "default-src 'none'; frame-ancestors 'none';")
        self.assertEqual(response.headers["x-frame-options"], "DENY")
        self.assertEqual(response.headers["cache-control"], "max-age=31556952, immutable")
        self.assertEqual(response.headers["accept-ranges"], "bytes")
        self.assertIn("last-modified", response.headers)
        self.assertEqual(self.files(), sorted(["upload/secret.key", f"upload/{slot.slot_id}"]))

    @defer.inlineCallbacks
    def test_a_type_not_safe_to_show_is_served_as_an_attachment(self):
        slot = self.slot(size=8, filename="page.html", content_type="text/html")
        self.assertEqual((yield self.put(slot, b"<b>!</b>")).code, 201)
        response = yield self.http(b"GET", self.local(slot.get))
        self.assertEqual(response.headers["content-type"], "text/html")
        self.assertEqual(response.headers["content-disposition"],
                         "attachment; filename*=UTF-8''page.html")

    @defer.inlineCallbacks
    def test_head_gives_the_headers_without_the_body(self):
        slot = self.slot()
        yield self.put(slot, b"hello")
        response = yield self.raw(b"HEAD " + urlsplit(slot.get).path.encode()
                                  + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertEqual((response.code, response.body), (200, b""))
        self.assertEqual(response.headers["content-length"], "5")
        self.assertEqual(response.headers["content-type"], "text/plain")
        self.assertEqual(response.headers["x-content-type-options"], "nosniff")

    @defer.inlineCallbacks
    def test_if_modified_since_and_ranges(self):
        slot = self.slot()
        yield self.put(slot, b"hello")
        first = yield self.http(b"GET", self.local(slot.get))
        again = yield self.http(b"GET", self.local(slot.get),
                                headers={"If-Modified-Since": first.headers["last-modified"]})
        self.assertEqual((again.code, again.body), (304, b""))
        part = yield self.http(b"GET", self.local(slot.get), headers={"Range": "bytes=2-"})
        self.assertEqual((part.code, part.body), (206, b"llo"))
        self.assertEqual(part.headers["content-range"], "bytes 2-4/5")

    @defer.inlineCallbacks
    def test_the_filename_in_the_url_is_cosmetic(self):
        slot = self.slot()
        yield self.put(slot, b"hello")
        url = self.local(slot.get).rsplit(b"/", 1)[0] + b"/another%20name.bin"
        response = yield self.http(b"GET", url)
        self.assertEqual((response.code, response.body), (200, b"hello"))

    @defer.inlineCallbacks
    def test_a_large_body_round_trips(self):
        data = os.urandom(700_000)  # Twisted holds it in a temporary file, not in memory
        slot = self.slot(size=len(data), filename="noise.bin",
                         content_type="application/octet-stream")
        self.assertEqual((yield self.put(slot, data)).code, 201)
        response = yield self.http(b"GET", self.local(slot.get))
        self.assertEqual(hashlib.sha256(response.body).hexdigest(),
                         hashlib.sha256(data).hexdigest())

    @defer.inlineCallbacks
    def test_a_chunked_body_of_the_right_size_is_taken(self):
        slot = self.slot()
        self.assertEqual((yield self.put(slot, b"hello", chunked=True)).code, 201)

    # -- the secret ----------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_a_put_without_the_secret_is_401_with_www_authenticate(self):
        slot = self.slot()
        response = yield self.http(b"PUT", self.local(slot.put), b"hello")
        self.assertEqual(response.code, 401)
        self.assertEqual(response.headers["www-authenticate"], "Bearer")
        response = yield self.http(b"PUT", self.local(slot.put), b"hello",
                                   {"Authorization": f"Basic {slot.token}"})
        self.assertEqual(response.code, 401)
        self.assertEqual(self.files(), ["upload/secret.key"])

    @defer.inlineCallbacks
    def test_a_put_with_a_wrong_secret_is_401(self):
        slot, other = self.slot(), self.slot()
        for token in ("x" * len(slot.token), other.token, slot.token[:-1], "é"):
            response = yield self.put(slot, b"hello", token=token)
            self.assertEqual(response.code, 401, token)
        self.assertEqual(self.files(), ["upload/secret.key"])
        self.assertEqual((yield self.http(b"GET", self.local(slot.get))).code, 410)

    @defer.inlineCallbacks
    def test_a_put_to_an_unknown_slot_is_404(self):
        slot = self.slot()
        url = self.local(slot.put).replace(slot.slot_id.encode(), b"0" * 32)
        response = yield self.http(b"PUT", url, b"hello",
                                   {"Authorization": f"Bearer {slot.token}"})
        self.assertEqual(response.code, 404)

    # -- sizes and repeats -----------------------------------------------------------------

    @defer.inlineCallbacks
    def test_a_body_of_another_size_is_413_and_stores_nothing(self):
        slot = self.slot()
        for body, chunked in ((b"hell", False), (b"hello!", False),
                              (b"hell", True), (b"hello!", True)):
            response = yield self.put(slot, body, chunked=chunked)
            self.assertEqual(response.code, 413, (body, chunked))
        self.assertEqual(self.files(), ["upload/secret.key"])
        # the slot can still be used
        self.assertEqual((yield self.put(slot, b"hello")).code, 201)

    @defer.inlineCallbacks
    def test_a_content_length_header_that_lies_is_413(self):
        slot = self.slot()
        path = urlsplit(slot.put).path.encode()
        response = yield self.raw(
            b"PUT " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Authorization: Bearer " + slot.token.encode() + b"\r\n"
            b"Content-Length: 4\r\n\r\nhell")
        self.assertEqual(response.code, 413)

    @defer.inlineCallbacks
    def test_a_second_put_is_409(self):
        slot = self.slot()
        self.assertEqual((yield self.put(slot, b"hello")).code, 201)
        self.assertEqual((yield self.put(slot, b"HELLO")).code, 409)
        self.assertEqual((yield self.http(b"GET", self.local(slot.get))).body, b"hello")

    @defer.inlineCallbacks
    def test_a_put_while_another_is_being_written_is_409(self):
        slot = self.slot()
        self.service.writing.add(slot.slot_id)
        self.assertEqual((yield self.put(slot, b"hello")).code, 409)
        self.service.writing.discard(slot.slot_id)
        self.assertEqual((yield self.put(slot, b"hello")).code, 201)

    @defer.inlineCallbacks
    def test_a_put_after_the_slot_timeout_is_410(self):
        slot = self.slot()
        self.clock.advance(301)
        self.assertEqual((yield self.put(slot, b"hello")).code, 410)
        self.assertEqual(self.files(), ["upload/secret.key"])
        self.clock.advance(300)  # then the slot is forgotten
        self.assertEqual((yield self.put(slot, b"hello")).code, 404)

    # -- refused from the headers, the body never read ---------------------------------

    def headers_only(self, slot, token: str | None = None, length: int | None = None,
                     path: bytes | None = None, extra: bytes = b"") -> defer.Deferred:
        """A PUT's request line and headers, and not a byte of its body: the
        answer comes only if the server refuses from the headers."""
        path = urlsplit(slot.put).path.encode() if path is None else path
        auth = b"" if token == "" else (
            b"Authorization: Bearer " + (slot.token if token is None else token).encode() + b"\r\n")
        size = self.service.uploads[slot.slot_id].size if length is None else length
        return self.raw(b"PUT " + path + b" HTTP/1.1\r\nHost: x\r\n" + auth + extra
                        + b"Content-Length: %d\r\n\r\n" % size)

    @defer.inlineCallbacks
    def test_a_put_refused_from_its_headers_is_answered_before_its_body(self):
        """Prosody's statuses, in its order, each before the client sent any
        of the body (a server that read it first would never answer here)."""
        slot, done = self.slot(size=900_000), self.slot()
        self.assertEqual((yield self.put(done, b"hello")).code, 201)
        sid = slot.slot_id.encode()
        cases = [
            ({"token": ""}, 401),  # no Authorization
            ({"extra": b"Authorization: Basic abc\r\n", "token": ""}, 401),
            ({"token": "x" * len(slot.token)}, 401),  # not the slot's secret
            ({"token": done.token}, 401),  # another slot's
            ({"path": urlsplit(slot.put).path.encode().replace(sid, b"0" * 32)}, 404),
            ({"path": b"/upload/" + sid + b"/..%2F..%2Fx"}, 400),
            ({"length": 899_999}, 413),  # not the slot's size
            ({"length": 50_000_000}, 413),  # beyond [http] max_body_size, too
        ]
        for kw, code in cases:
            response = yield self.headers_only(slot, **kw)
            self.assertEqual(response.code, code, kw)
            self.assertEqual(response.headers["connection"], "close", kw)
        response = yield self.headers_only(slot, token="")
        self.assertEqual(response.headers["www-authenticate"], "Bearer")
        response = yield self.headers_only(done)
        self.assertEqual(response.code, 409)  # the file is there already
        self.clock.advance(301)
        self.assertEqual((yield self.headers_only(slot)).code, 410)
        self.assertEqual(self.files(), sorted(["upload/secret.key", f"upload/{done.slot_id}"]))
        self.assertEqual((yield self.http(b"GET", self.local(done.get))).body, b"hello")

    test_a_put_refused_from_its_headers_is_answered_before_its_body.timeout = 20  # type: ignore

    @defer.inlineCallbacks
    def test_a_chunked_put_growing_beyond_its_slot_is_413_before_the_rest_is_sent(self):
        slot = self.slot(size=5)
        path = urlsplit(slot.put).path.encode()
        # six bytes in one chunk, and the body never ends: only a server that
        # bounds it by the slot's size answers
        response = yield self.raw(
            b"PUT " + path + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + slot.token.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello!\r\n")
        self.assertEqual(response.code, 413)
        self.assertEqual(self.files(), ["upload/secret.key"])
        self.assertEqual((yield self.put(slot, b"hello", chunked=True)).code, 201)

    test_a_chunked_put_growing_beyond_its_slot_is_413_before_the_rest_is_sent.timeout = 20  # type: ignore

    # -- GET of what is not there ---------------------------------------------------------

    @defer.inlineCallbacks
    def test_get_before_the_put_is_410_and_of_an_unknown_slot_404(self):
        slot = self.slot()
        self.assertEqual((yield self.http(b"GET", self.local(slot.get))).code, 410)
        url = self.local(slot.get).replace(slot.slot_id.encode(), b"f" * 32)
        self.assertEqual((yield self.http(b"GET", url)).code, 404)

    @defer.inlineCallbacks
    def test_an_expired_file_is_404_and_gone_from_disk(self):
        slot = self.slot()
        yield self.put(slot, b"hello")
        self.clock.advance(3600)
        self.assertEqual((yield self.http(b"GET", self.local(slot.get))).code, 404)
        self.assertEqual(self.files(), ["upload/secret.key"])

    @defer.inlineCallbacks
    def test_other_methods_are_refused(self):
        slot = self.slot()
        yield self.put(slot, b"hello")
        self.assertEqual((yield self.http(b"POST", self.local(slot.get), b"x")).code, 405)
        self.assertEqual((yield self.http(b"DELETE", self.local(slot.get))).code, 501)
        self.assertEqual((yield self.http(b"GET", self.local(slot.get))).body, b"hello")

    # -- web clients -----------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_a_page_of_another_origin_may_put_with_the_authorization_header(self):
        """The CORS preflight allows PUT with Authorization, with credentials
        (Prosody's route options); the PUT and GET carry the origin."""
        slot = self.slot()
        preflight = yield self.http(b"OPTIONS", self.local(slot.put), headers={
            "Origin": "https://chat.example", "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "authorization,content-type"})
        self.assertEqual(preflight.code, 200)
        self.assertEqual(preflight.headers["access-control-allow-origin"], "https://chat.example")
        self.assertEqual(preflight.headers["access-control-allow-methods"], "GET, OPTIONS, PUT")
        self.assertEqual(preflight.headers["access-control-allow-headers"],
                         "Content-Type, Authorization")
        self.assertEqual(preflight.headers["access-control-allow-credentials"], "true")
        response = yield self.http(b"PUT", self.local(slot.put), b"hello", {
            "Authorization": f"Bearer {slot.token}", "Origin": "https://chat.example"})
        self.assertEqual(response.code, 201)
        self.assertEqual(response.headers["access-control-allow-origin"], "https://chat.example")

    # -- path tricks ---------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_path_tricks_are_refused_and_touch_nothing(self):
        slot = self.slot()
        sid = slot.slot_id.encode()
        with open(os.path.join(self.base, "outside.txt"), "wb") as f:
            f.write(b"private")
        before = self.files()
        tricks = {
            b"/upload/" + sid + b"/..": 400,
            b"/upload/" + sid + b"/.": 400,
            b"/upload/../outside.txt": 400,
            b"/upload/%2e%2e/outside.txt": 400,
            b"/upload/" + sid + b"/..%2F..%2Foutside.txt": 400,
            b"/upload/" + sid + b"%2F..%2F..%2Foutside.txt/x": 400,
            b"/upload/" + sid + b"/a%2Fb": 400,
            b"/upload/" + sid + b"/a%5Cb": 400,
            b"/upload/" + sid + b"/a%00b": 400,
            b"/upload/" + sid + b"/%ff": 400,
            b"/upload/secret.key/x": 404,
            b"/upload/" + sid: 404,
            b"/upload/" + sid + b"/": 404,
            b"/upload/" + sid + b"/x/y": 404,
            b"/upload/" + sid.upper() + b"/x": 404,
            b"/upload/": 404,
            b"/upload": 404,
        }
        headers = (b"Authorization: Bearer " + slot.token.encode() + b"\r\n"
                   b"Content-Length: 5\r\n")
        for path, code in tricks.items():
            for method in (b"PUT", b"GET"):
                response = yield self.raw(
                    method + b" " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                    + (headers if method == b"PUT" else b"") + b"\r\n"
                    + (b"hello" if method == b"PUT" else b""))
                self.assertEqual(response.code, code, (method, path))
                self.assertNotIn(b"private", response.body)
                self.assertNotIn(self.service.secret, response.body)
        self.assertEqual(self.files(), before)
        self.assertFalse(self.service.uploads[slot.slot_id].done)
