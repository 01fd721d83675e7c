"""Converse.js at ``/conversejs``: a web client preconfigured for this server.

Three things under the mount point (``[http] endpoints`` has ``conversejs``):

``/conversejs``
    the page: Converse.js's stylesheet and script from ``dist/``, and the
    configuration script. 503 with the command to run when Converse.js is not
    installed (``xmppd webclient install``, see :mod:`xmppd.webclient`), or
    when neither WebSocket nor BOSH is served.
``/conversejs/config.js``
    ``converse.initialize({...})`` with this server's settings. A script of
    its own rather than inline in the page, so that a Content-Security-Policy
    of ``script-src 'self'`` (an operator's proxy may add one) does not stop
    it. Converse.js 14 is an ES module (it reads ``import.meta``), so both are
    ``type="module"`` scripts, which run in document order once the page is
    parsed: ``converse`` exists when the settings script calls it.
``/conversejs/dist/<file>``
    the installed release's files: regular files only, no dotfiles, no
    directory listing, nothing outside the release even through symlinks, a
    content type from the extension and ``nosniff``; an ETag and
    Last-Modified for revalidation, and a year's caching for the URLs the page
    marks with the version (``?v=14.0.0``).

The settings, as Prosody's mod_conversejs chooses them: the WebSocket and
BOSH URLs of the routes that are mounted (``discover_connection_methods``
off, since they are given), ``default_domain`` and ``domain_placeholder`` so
a user logs in with a bare name, registration only where ``[component:register]
allow_registration`` is on, ``assets_path`` at our ``dist/``, the fullscreen
view, and no automatic login. Also ``muc_domain`` from the hosted chat service,
so "join a groupchat" takes a bare room name. ``?transport=websocket`` or
``?transport=bosh`` on the page's URL hands Converse.js only that one (it
prefers WebSocket when given both), for networks where WebSocket is blocked.

The page is rendered per request, from what is installed and mounted at that
moment: an install or an endpoint added later needs no restart. The URLs
match how the page was reached: a page loaded over plain HTTP gets ``ws:`` and
``http:`` URLs (a browser would refuse the self-signed certificate a fresh
server has on its TLS port), one loaded over HTTPS gets ``wss:``/``https:``;
``[http] public_url`` still wins for a server behind a proxy.

This is mounted by the server core beside the other HTTP endpoints, not as a
component: ``[http] endpoints`` already switches it on and off, it serves no
XMPP domain and handles no stanzas, and a component would have been a second
switch (``[server] components``) for the same thing.
"""

from __future__ import annotations

import html
import json
import os
import stat
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlsplit

from twisted.web import http, resource, static

from xmppd import webclient

if TYPE_CHECKING:
    from xmppd.server import XMPPServer

#: where the page is mounted
PATH = "/conversejs"
WEBSOCKET_PATH = "/xmpp-websocket"
BOSH_PATH = "/http-bind"

#: content types of what a Converse.js release holds; anything else is
#: application/octet-stream (with nosniff, never run as script or shown as HTML)
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".wasm": "application/wasm",
    ".html": "text/html; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".ico": "image/x-icon",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".otf": "font/otf",
    ".eot": "application/vnd.ms-fontobject",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".wav": "audio/wav",
    ".m4a": "audio/mp4",
}
DEFAULT_TYPE = "application/octet-stream"

#: Cache-Control of files whose URL names the release (the page's own links)
IMMUTABLE = b"public, max-age=31536000, immutable"
#: Cache-Control of everything else: kept, but asked again (ETag) each time,
#: since a chunk's URL stays the same across releases
REVALIDATE = b"no-cache"

TRANSPORTS = ("websocket", "bosh")


def _text_page(request: Any, code: int, title: str, body: str) -> bytes:
    """A small HTML page (the text is escaped here)."""
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/html; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"x-content-type-options", b"nosniff")
    page = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title></head>\n"
            f"<body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")
    return page.encode("utf-8")


def _not_found(request: Any) -> bytes:
    return _text_page(request, http.NOT_FOUND, "Not found", "<p>No such file.</p>")


class _NotFound(resource.Resource):
    isLeaf = True

    def render(self, request: Any) -> bytes:
        return _not_found(request)


class ConverseJS(resource.Resource):
    """The page at :data:`PATH`, with ``config.js`` and ``dist/`` under it."""

    def __init__(self, server: XMPPServer, path: str = PATH):
        super().__init__()
        #: the XMPPServer (not ``self.server``: twisted.web's putChild sets that)
        self.xmpp = server
        self.path = "/" + path.strip("/")
        self.data_dir: str = server.config.server["data_dir"]
        self.putChild(b"dist", InstalledFiles(self.installed))
        self.putChild(b"config.js", ConfigScript(self))

    def installed(self) -> webclient.Installed | None:
        return webclient.installed(self.data_dir)

    def getChild(self, name: bytes, request: Any) -> resource.IResource:
        if name == b"" and not request.postpath:
            return self  # /conversejs/ is the page too
        return _NotFound()

    # -- what the page offers --------------------------------------------------------

    def _mounted(self, path: str) -> bool:
        """Whether the HTTP service serves ``path`` right now."""
        return self.xmpp.http.has_route(path)

    def _url(self, request: Any, path: str, websocket: bool = False) -> str:
        # Over plain HTTP, plain URLs: the browser has already accepted this
        # origin, and a fresh server's TLS certificate is self-signed.
        return self.xmpp.http.url(path, secure=True if request.isSecure() else False,
                                    websocket=websocket)

    def domain(self, request: Any) -> str:
        """The XMPP domain the page is for: the one in the Host header if this
        server hosts it, else the first configured domain."""
        host = (request.getRequestHostname() or b"").decode("ascii", "replace").lower().rstrip(".")
        domains = self.xmpp.config.domains
        return host if host in domains else domains[0]

    def transports(self, request: Any) -> dict[str, str]:
        """Mounted transport → its URL, limited to ``?transport=`` when given."""
        urls: dict[str, str] = {}
        if self._mounted(WEBSOCKET_PATH):
            urls["websocket"] = self._url(request, WEBSOCKET_PATH, websocket=True)
        if self._mounted(BOSH_PATH):
            urls["bosh"] = self._url(request, BOSH_PATH)
        wanted = _arg(request, b"transport")
        if wanted in TRANSPORTS:
            urls = {wanted: urls[wanted]} if wanted in urls else {}
        return urls

    def settings(self, request: Any) -> dict[str, Any]:
        """The argument of ``converse.initialize`` for this request."""
        domain = self.domain(request)
        register = self.xmpp.components.get("register")
        registration = bool(register is not None and register.config.get("allow_registration"))
        settings: dict[str, Any] = {
            "authentication": "login",
            "auto_login": False,
            "discover_connection_methods": False,
            "default_domain": domain,
            "domain_placeholder": domain,
            "allow_registration": registration,
            "view_mode": "fullscreen",
            "assets_path": self.dist_path(),
        }
        if registration:
            settings["registration_domain"] = domain
        urls = self.transports(request)
        if "websocket" in urls:
            settings["websocket_url"] = urls["websocket"]
        if "bosh" in urls:
            settings["bosh_service_url"] = urls["bosh"]
        muc = next((s for s in self.xmpp.hosted.values() if s.name == "muc"), None)
        if muc is not None:
            settings["muc_domain"] = muc.domain
        return settings

    def dist_path(self) -> str:
        """The path of ``dist/`` as the browser should ask for it: from
        ``[http] public_url`` (a proxy may serve us under a prefix), on the
        origin the page came from."""
        return urlsplit(self.xmpp.http.url(self.path + "/dist/")).path or self.path + "/dist/"

    # -- the page ----------------------------------------------------------------------

    def render_GET(self, request: Any) -> bytes:
        current = self.installed()
        if current is None:
            return _text_page(
                request, http.SERVICE_UNAVAILABLE, "Converse.js is not installed",
                "<p>This server serves the Converse.js web client here, but Converse.js "
                "has not been installed yet. On the server, run:</p>\n"
                "<pre>xmppd webclient install</pre>\n"
                "<p>(with the same <code>-c</code> configuration file as the server), then "
                "reload this page. No restart is needed.</p>")
        transport = _arg(request, b"transport")
        if not self.transports(request):
            if transport in TRANSPORTS:
                name = {"websocket": "WebSocket", "bosh": "BOSH"}[transport]
                text = (f"<p>This server does not serve {name}: add <code>{transport}</code> to "
                        "<code>[http] endpoints</code>, or open this page without "
                        "<code>?transport</code>.</p>")
            else:
                text = ("<p>This server serves neither WebSocket nor BOSH: add "
                        "<code>websocket</code> or <code>bosh</code> to "
                        "<code>[http] endpoints</code>.</p>")
            return _text_page(request, http.SERVICE_UNAVAILABLE,
                              "No way for the web client to connect", text)
        dist = self.dist_path()
        version = html.escape(current.version, quote=True)
        query = f"?transport={transport}" if transport in TRANSPORTS else ""
        config = urlsplit(self.xmpp.http.url(self.path + "/config.js")).path or self.path + "/config.js"
        title = html.escape(f"{self.domain(request)} · Converse.js")
        page = (
            "<!DOCTYPE html>\n"
            "<html lang=\"en\">\n<head>\n"
            "<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{title}</title>\n"
            f"<link rel=\"icon\" href=\"{html.escape(dist)}images/favicon.ico\">\n"
            f"<link rel=\"stylesheet\" href=\"{html.escape(dist)}converse.min.css?v={version}\">\n"
            f"<script type=\"module\" src=\"{html.escape(dist)}converse.min.js?v={version}\"></script>\n"
            f"<script type=\"module\" src=\"{html.escape(config + query)}\"></script>\n"
            "</head>\n<body class=\"converse-fullscreen\">\n"
            "<noscript>Converse.js, the web client served here, needs JavaScript.</noscript>\n"
            "</body>\n</html>\n")
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"no-referrer")
        return page.encode("utf-8")


class ConfigScript(resource.Resource):
    """``config.js``: ``converse.initialize`` with :meth:`ConverseJS.settings`."""

    isLeaf = True

    def __init__(self, page: ConverseJS):
        super().__init__()
        self.page = page

    def render_GET(self, request: Any) -> bytes:
        if request.postpath not in ([], [b""]):
            return _not_found(request)
        # json.dumps is a JavaScript literal; "</" cannot end a script that is
        # not inline, but escaping it costs nothing should one inline it.
        settings = json.dumps(self.page.settings(request), indent=1, sort_keys=True)
        settings = settings.replace("</", "<\\/")
        body = ("\"use strict\";\n"
                "// Converse.js settings for this server, made by xmppd on each request.\n"
                f"converse.initialize({settings});\n")
        request.setHeader(b"content-type", b"text/javascript; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-content-type-options", b"nosniff")
        return body.encode("utf-8")


class InstalledFiles(resource.Resource):
    """The current release's files, read-only and path-safe."""

    isLeaf = True

    def __init__(self, installed: Callable[[], webclient.Installed | None]):
        super().__init__()
        self.installed = installed

    def render_GET(self, request: Any) -> Any:
        current = self.installed()
        if current is None:
            return _text_page(request, http.SERVICE_UNAVAILABLE, "Converse.js is not installed",
                              "<p>Run <code>xmppd webclient install</code> on the server.</p>")
        filename = self.resolve(current.directory, request.postpath)
        if filename is None:
            return _not_found(request)
        try:
            info = os.stat(filename)
        except OSError:
            return _not_found(request)
        if not stat.S_ISREG(info.st_mode):
            return _not_found(request)
        request.setHeader(b"x-content-type-options", b"nosniff")
        pinned = _arg(request, b"v") == current.version
        request.setHeader(b"cache-control", IMMUTABLE if pinned else REVALIDATE)
        etag = f'"{info.st_ino:x}-{info.st_size:x}-{info.st_mtime_ns:x}"'.encode()
        if request.setETag(etag) is http.CACHED:
            return b""
        leaf = static.File(filename, defaultType=DEFAULT_TYPE)
        leaf.contentTypes = CONTENT_TYPES
        leaf.contentEncodings = {}
        return leaf.render_GET(request)

    @staticmethod
    def resolve(root: os.PathLike | str, segments: list[bytes]) -> str | None:
        """The file ``segments`` names under ``root``, or None if it names
        none that may be served.

        Twisted has split the path on ``/`` and then percent-decoded each
        segment, so an encoded slash or backslash arrives inside a segment and
        is refused here, as are empty segments (a directory: no listing),
        ``.``/``..`` and every dotfile (the install record). The resolved
        path must still be under the resolved root, so a symlink cannot lead
        out either.
        """
        if not segments:
            return None
        parts = []
        for raw in segments:
            try:
                part = raw.decode("utf-8")
            except UnicodeDecodeError:
                return None
            if (not part or part.startswith(".") or "/" in part or "\\" in part
                    or "\x00" in part):
                return None
            parts.append(part)
        base = os.path.realpath(root)
        real = os.path.realpath(os.path.join(base, *parts))
        if not real.startswith(base + os.sep):
            return None
        return real


def _arg(request: Any, name: bytes) -> str | None:
    values = (request.args or {}).get(name)
    if not values:
        return None
    return values[0].decode("utf-8", "replace")


def register(server: XMPPServer, path: str = PATH) -> Callable[[], None]:
    """Mount the page on the server's HTTP service (when ``conversejs`` is
    among ``[http] endpoints``); returns the unmount function."""
    return server.http.add_route(path, ConverseJS(server, path), endpoint="conversejs",
                                 max_body=0)
