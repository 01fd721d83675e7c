"""The HTTP side of XEP-0363: PUT and GET (and HEAD) at ``/upload/<slot id>/<filename>``.

Mounted on the server's HTTP service by :class:`~xmppd.services.upload.service.UploadService`
(``server.http.add_route("/upload", resource, endpoint="upload")``). The
status codes are Prosody 0.12's ``mod_http_file_share``'s, checked against
a running Prosody:

PUT
    ``401`` (with ``WWW-Authenticate: Bearer``) without an
    ``Authorization: Bearer <token>`` header or with a token that is not the
    slot's; ``410`` after the slot's deadline (``slot_timeout``); ``413`` when
    ``Content-Length`` or the body received differ from the slot's size (too
    short or too long alike); ``409`` once the file is there (a failed upload
    may be retried until then); ``201`` once the file is on disk.

    All but the body's own size are known from the request line and headers,
    and are answered then, as Prosody 0.12 answers them (its HTTP server
    hands a PUT to mod_http_file_share before the body): the site calls
    :meth:`UploadResource.check_headers` once the headers are in, and a
    refused PUT is answered at once and its connection closed, the body never
    read nor buffered. An accepted chunked PUT (no ``Content-Length``) is
    bounded by its slot's size: ``413`` as soon as it grows past it. The
    ``Content-Type`` of the PUT is not checked (Prosody does not; XEP-0363
    leaves it open): the file is served with the type of its slot request.
GET, HEAD
    ``404`` for no such slot (or a file past ``expire_after``); ``410`` for a
    slot whose PUT has not happened; else the file with the slot's content
    type and Prosody's headers: ``Content-Disposition`` (``inline`` for
    ``safe_content_types``, else ``attachment``, with the RFC 5987 filename),
    ``Content-Security-Policy: default-src 'none'; frame-ancestors 'none';``,
    ``X-Content-Type-Options: nosniff``, ``X-Frame-Options``,
    ``Cache-Control`` (immutable), ``Last-Modified`` (``If-Modified-Since``
    answers 304) and byte ranges (206).

Both
    The URL's first segment is the slot id (32 hex digits) and the only thing
    that names the file on disk; the second is the filename, cosmetic (any
    name serves the file, as in Prosody). A segment that is ``.`` or ``..``,
    holds an (encoded) ``/`` or ``\\``, a NUL or is not UTF-8 is ``400``;
    any other shape (no filename, more segments, an id that is not one) is
    ``404``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import quote

from twisted.logger import Logger
from twisted.web import resource, server, static

from xmppd.http.site import error_page
from xmppd.services.upload.files import is_slot_id

if TYPE_CHECKING:
    from xmppd.services.upload.service import Upload, UploadService

#: What Prosody sends with every file it serves.
SECURITY_HEADERS = {
    b"Cache-Control": b"max-age=31556952, immutable",
    b"Content-Security-Policy": b"default-src 'none'; frame-ancestors 'none';",
    b"Strict-Transport-Security": b"max-age=31556952",
    b"X-Content-Type-Options": b"nosniff",
    b"X-Frame-Options": b"DENY",
    b"X-XSS-Protection": b"1; mode=block",
}
_FORBIDDEN_SEGMENTS = (b".", b"..")


def parse_path(postpath: list[bytes]) -> tuple[int, str]:
    """``(0, slot id)`` for ``[<slot id>, <filename>]``, else ``(status, "")``:
    400 for a path trick in any segment, 404 for any other shape."""
    for segment in postpath:
        if segment in _FORBIDDEN_SEGMENTS or any(c in segment for c in (b"/", b"\\", b"\0")):
            return 400, ""
        try:
            segment.decode("utf-8")
        except UnicodeDecodeError:
            return 400, ""
    if len(postpath) != 2 or not postpath[1]:
        return 404, ""
    slot_id = postpath[0].decode("ascii", "replace")
    if not is_slot_id(slot_id):
        return 404, ""
    return 0, slot_id


def bearer(request: server.Request) -> str | None:
    """The token of ``Authorization: Bearer <token>``, if that is what was sent."""
    raw = request.getHeader(b"authorization")
    if raw is None:
        return None
    value = raw.decode("utf-8", "replace")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def content_disposition(upload: Upload, inline: bool) -> str:
    """RFC 6266 with the RFC 5987 UTF-8 filename, as Prosody writes it."""
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename*=UTF-8''{quote(upload.filename, safe='')}"


class UploadResource(resource.Resource):
    """``/upload``: every path below it is handled here (a leaf)."""

    isLeaf = True
    log = Logger()

    def __init__(self, service: UploadService):
        super().__init__()
        self.service = service

    # -- plumbing -------------------------------------------------------------------

    @staticmethod
    def status(request: server.Request, code: int) -> bytes:
        """A refusal: the status and the site's small page for it (Prosody,
        too, answers with a page)."""
        return error_page(request, code)

    def _later(self, request: server.Request, handler: Callable[..., Any], *args: Any) -> Any:
        """Run ``handler`` once the stored slots are loaded; it returns a
        status code, bytes, NOT_DONE_YET or a Deferred of one of them."""
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def respond(result: Any) -> None:
            if gone or result is server.NOT_DONE_YET:
                return
            if result == 201:  # created: nothing to say (as Prosody)
                request.setResponseCode(201)
                result = b""
            elif isinstance(result, int):
                result = self.status(request, result)
            request.write(result)
            request.finish()

        def failed(failure: Any) -> None:
            self.log.failure("upload: {method} {uri} failed", failure,
                             method=request.method, uri=request.uri)
            if not gone and not request.startedWriting:
                respond(500)

        d = self.service.ready()
        d.addCallback(lambda _: handler(request, *args))
        d.addCallbacks(respond, failed)
        return server.NOT_DONE_YET

    # -- PUT ---------------------------------------------------------------------------

    def check_headers(self, request: server.Request) -> int | None:
        """The refusal of a PUT known from its request line and headers (see
        :class:`~xmppd.http.site.HTTPRequest`): its status, answered before
        any of the body is read, or None to read the body (then bounded by
        the slot's size). Until the stored slots are loaded, only what needs
        no slot is checked; the rest is checked again once the body is in."""
        if request.method != b"PUT":
            return None
        code, slot_id, token = self._put_request(request)
        if code or not self.service.loaded:
            return code or None
        code = self._put_refusal(request, slot_id, token)
        if code:
            self.log.debug("upload: PUT {path} refused before its body: {code}",
                           path=request.path, code=code)
            return code
        upload = self.service.lookup(slot_id)
        if upload is not None:
            request.limit_body(upload.size)
        return None

    def render_PUT(self, request: server.Request) -> Any:
        code, slot_id, token = self._put_request(request)
        if code:
            return self.status(request, code)
        return self._later(request, self._put, slot_id, token)

    @staticmethod
    def _put_request(request: server.Request) -> tuple[int, str, str]:
        """(0, slot id, token) of a PUT, or (status, "", "") for a path that
        names no slot, or no ``Authorization: Bearer`` (401, with
        ``WWW-Authenticate``)."""
        code, slot_id = parse_path(request.postpath)
        if code:
            return code, "", ""
        token = bearer(request)
        if token is None:
            request.setHeader(b"WWW-Authenticate", b"Bearer")
            return 401, "", ""
        return 0, slot_id, token

    def _put_refusal(self, request: server.Request, slot_id: str, token: str) -> int | None:
        """What refuses a PUT before its body counts: no such slot, not its
        secret, too late, a ``Content-Length`` that is not the slot's size,
        a file already there or being written; in Prosody's order."""
        service = self.service
        upload = service.lookup(slot_id)
        if upload is None:
            return 404
        if not service.token_valid(upload, token):
            return 401
        if service.clock.seconds() > upload.deadline:
            return 410
        length = request.getHeader(b"content-length")
        if length is not None and length.strip() != str(upload.size).encode("ascii"):
            return 413
        if upload.done or slot_id in service.writing:
            return 409
        return None

    def _put(self, request: server.Request, slot_id: str, token: str) -> Any:
        service = self.service
        refusal = self._put_refusal(request, slot_id, token)
        if refusal:
            return refusal
        upload = service.lookup(slot_id)
        body = request.content
        body.seek(0, 2)
        if body.tell() != upload.size:
            return 413
        d = service.store_file(upload, body)
        d.addCallback(lambda stored: 201 if stored else
                      (413 if service.lookup(slot_id) is upload else 410))
        return d

    # -- GET, HEAD -------------------------------------------------------------------

    def render_GET(self, request: server.Request) -> Any:
        code, slot_id = parse_path(request.postpath)
        if code:
            return self.status(request, code)
        return self._later(request, self._get, slot_id)

    # HEAD: Resource's own, which renders GET (Twisted then sends no body);
    # not announced in CORS preflights, as Prosody does not.

    def _get(self, request: server.Request, slot_id: str) -> Any:
        upload = self.service.lookup(slot_id)
        if upload is None:
            return 404
        if not upload.done:
            return 410
        for name, value in SECURITY_HEADERS.items():
            request.setHeader(name, value)
        request.setHeader(b"Content-Disposition",
                          content_disposition(upload, self.service.served_inline(upload)))
        # Twisted's File does the rest: Content-Type/-Length, Last-Modified
        # and If-Modified-Since, ranges, HEAD, and a producer for the body.
        file = static.File(self.service.file_path(upload), defaultType=upload.type)
        file.type, file.encoding = upload.type, None
        return file.render(request)
