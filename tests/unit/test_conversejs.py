"""The Converse.js page, its settings script and the installed files, over HTTP.

Requests go through Twisted's real HTTP parser (an ``HTTPChannel`` of a
``Site`` on a ``StringTransport``), so percent-decoding, HEAD and conditional
requests are what a browser gets. The server around the resource is a stand-in
with the few attributes it reads; the HTTP service stand-in answers ``url()``
as ``[http]`` describes it (https/wss when a TLS port is on, unless told
``secure=False``).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from unittest import mock

from twisted.internet import _producer_helpers, task
from twisted.internet.testing import StringTransport
from twisted.web import resource, server as webserver

from xmppd import webclient
from xmppd.http import conversejs


class FakeHTTP:
    def __init__(self, routes=("/xmpp-websocket",), public_url="", tls=True):
        self.routes = set(routes)
        self.public_url = public_url
        self.tls = tls

    def has_route(self, path: str) -> bool:
        return path in self.routes

    def url(self, path: str, secure=None, websocket: bool = False) -> str:
        if self.public_url:
            base = self.public_url
        else:
            secure = self.tls if secure is None else secure
            base = f"{'https' if secure else 'http'}://localhost:{5281 if secure else 5280}"
        url = base.rstrip("/") + path
        return re.sub(r"^http", "ws", url) if websocket else url


def fake_server(data_dir: Path, http: FakeHTTP | None = None, registration: bool | None = None,
                muc: str | None = "conference.localhost", domains=("localhost", "example.org")):
    components = {}
    if registration is not None:
        components["register"] = SimpleNamespace(config={"allow_registration": registration})
    hosted = {muc: SimpleNamespace(name="muc", domain=muc)} if muc else {}
    return SimpleNamespace(config=SimpleNamespace(server={"data_dir": str(data_dir)},
                                                  domains=list(domains)),
                           components=components, hosted=hosted, http=http or FakeHTTP())


def install_fake(data_dir: Path, version: str = "14.0.0") -> Path:
    """What ``xmppd webclient install`` leaves, without npm."""
    base = data_dir / "webclient"
    release = base / f"converse.js-{version}-test"
    (release / "chunkjs").mkdir(parents=True)
    (release / "converse.min.js").write_text("window.converse = {initialize() {}};")
    (release / "converse.min.css").write_text("body {}")
    (release / "chunkjs" / "emoji.js").write_text("// chunk")
    (release / "curve25519_compiled.wasm").write_bytes(b"\0asm")
    (release / "sound.xyz").write_bytes(b"??")
    (release / webclient.RECORD).write_text(json.dumps({"version": version, "files": 5}))
    link = base / webclient.LINK
    if link.is_symlink():
        link.unlink()
    link.symlink_to(release.name)
    return release


class Response:
    def __init__(self, raw: bytes):
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.code = int(lines[0].split()[1])
        self.headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def fetch(root: resource.Resource | webserver.Site, path: str, method: str = "GET",
          **headers: str) -> Response:
    # A file is sent by a pull producer that Twisted drives with the global
    # cooperator (the reactor); here a cooperator of our own, run by hand.
    scheduled: list = []
    cooperator = task.Cooperator(scheduler=scheduled.append)
    site = root if isinstance(root, webserver.Site) else webserver.Site(root)
    channel = site.buildProtocol(None)
    transport = StringTransport()
    with mock.patch.object(_producer_helpers, "cooperate", cooperator.cooperate):
        channel.makeConnection(transport)
        lines = [f"{method} {path} HTTP/1.1", f"Host: {headers.pop('host', 'localhost:5280')}",
                 "Connection: close"]
        lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
        channel.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode())
        for _ in range(10_000):
            if not scheduled:
                break
            scheduled.pop(0)()
    channel.connectionLost(None)
    return Response(transport.value())


def site_for(server) -> resource.Resource:
    root = resource.Resource()
    root.putChild(b"conversejs", conversejs.ConverseJS(server))
    return root


def settings_of(root, path="/conversejs/config.js", **headers) -> dict:
    response = fetch(root, path, **headers)
    assert response.code == 200, response.text
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    match = re.search(r"converse\.initialize\((\{.*\})\);", response.text, re.S)
    assert match, response.text
    return json.loads(match.group(1))


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


# -- the page ----------------------------------------------------------------------

def test_the_page_says_what_to_run_while_converse_is_not_installed(data_dir):
    response = fetch(site_for(fake_server(data_dir)), "/conversejs")
    assert response.code == 503
    assert "xmppd webclient install" in response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"


def test_the_page_loads_the_installed_release_and_the_settings_script(data_dir):
    install_fake(data_dir)
    response = fetch(site_for(fake_server(data_dir)), "/conversejs")
    assert response.code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    page = response.text
    assert '<link rel="stylesheet" href="/conversejs/dist/converse.min.css?v=14.0.0">' in page
    assert '<script type="module" src="/conversejs/dist/converse.min.js?v=14.0.0"></script>' in page
    assert '<script type="module" src="/conversejs/config.js"></script>' in page
    # No inline script: a CSP of script-src 'self' leaves the page working.
    assert re.findall(r"<script[^>]*>([^<]+)</script>", page) == []


def test_the_page_with_a_trailing_slash_is_the_same_page(data_dir):
    install_fake(data_dir)
    root = site_for(fake_server(data_dir))
    assert fetch(root, "/conversejs/").body == fetch(root, "/conversejs").body


def test_an_install_is_seen_without_a_restart(data_dir):
    root = site_for(fake_server(data_dir))
    assert fetch(root, "/conversejs").code == 503
    install_fake(data_dir)
    assert fetch(root, "/conversejs").code == 200
    install_fake(data_dir, "14.0.1")
    assert "converse.min.js?v=14.0.1" in fetch(root, "/conversejs").text


def test_the_page_refuses_when_no_transport_is_served(data_dir):
    install_fake(data_dir)
    response = fetch(site_for(fake_server(data_dir, FakeHTTP(routes=()))), "/conversejs")
    assert response.code == 503 and "[http] endpoints" in response.text


def test_asking_for_a_transport_that_is_not_served_says_so(data_dir):
    install_fake(data_dir)
    response = fetch(site_for(fake_server(data_dir)), "/conversejs?transport=bosh")
    assert response.code == 503 and "does not serve BOSH" in response.text


def test_other_paths_under_the_page_are_not_found(data_dir):
    install_fake(data_dir)
    assert fetch(site_for(fake_server(data_dir)), "/conversejs/nothing").code == 404


# -- the settings ------------------------------------------------------------------

def test_the_settings_point_converse_at_this_server(data_dir):
    server = fake_server(data_dir, FakeHTTP(routes=("/xmpp-websocket", "/http-bind")))
    settings = settings_of(site_for(server))
    assert settings == {
        "allow_registration": False,
        "assets_path": "/conversejs/dist/",
        "authentication": "login",
        "auto_login": False,
        "bosh_service_url": "http://localhost:5280/http-bind",
        "default_domain": "localhost",
        "discover_connection_methods": False,
        "domain_placeholder": "localhost",
        "muc_domain": "conference.localhost",
        "view_mode": "fullscreen",
        "websocket_url": "ws://localhost:5280/xmpp-websocket",
    }


def test_only_mounted_transports_are_offered(data_dir):
    settings = settings_of(site_for(fake_server(data_dir, FakeHTTP(routes=("/xmpp-websocket",)))))
    assert "websocket_url" in settings and "bosh_service_url" not in settings
    settings = settings_of(site_for(fake_server(data_dir, FakeHTTP(routes=("/http-bind",)))))
    assert "websocket_url" not in settings and "bosh_service_url" in settings


def test_a_transport_can_be_chosen_on_the_page_url(data_dir):
    install_fake(data_dir)
    root = site_for(fake_server(data_dir, FakeHTTP(routes=("/xmpp-websocket", "/http-bind"))))
    page = fetch(root, "/conversejs?transport=bosh").text
    assert '<script type="module" src="/conversejs/config.js?transport=bosh"></script>' in page
    settings = settings_of(root, "/conversejs/config.js?transport=bosh")
    assert "websocket_url" not in settings and settings["bosh_service_url"].endswith("/http-bind")
    settings = settings_of(root, "/conversejs/config.js?transport=websocket")
    assert "bosh_service_url" not in settings and "websocket_url" in settings


def test_the_domain_follows_the_host_the_page_was_opened_on(data_dir):
    root = site_for(fake_server(data_dir))
    assert settings_of(root, host="example.org:5280")["default_domain"] == "example.org"
    assert settings_of(root, host="EXAMPLE.org")["domain_placeholder"] == "example.org"
    assert settings_of(root, host="127.0.0.1:5280")["default_domain"] == "localhost"


def test_registration_is_offered_only_where_the_register_component_allows_it(data_dir):
    settings = settings_of(site_for(fake_server(data_dir, registration=True)), host="example.org")
    assert settings["allow_registration"] is True
    assert settings["registration_domain"] == "example.org"
    settings = settings_of(site_for(fake_server(data_dir, registration=False)))
    assert settings["allow_registration"] is False and "registration_domain" not in settings


def test_without_a_chat_service_no_muc_domain_is_set(data_dir):
    assert "muc_domain" not in settings_of(site_for(fake_server(data_dir, muc=None)))


def test_a_public_url_behind_a_proxy_is_used_for_every_url(data_dir):
    install_fake(data_dir)
    server = fake_server(data_dir, FakeHTTP(public_url="https://chat.example.org/xmpp"))
    root = site_for(server)
    settings = settings_of(root)
    assert settings["websocket_url"] == "wss://chat.example.org/xmpp/xmpp-websocket"
    assert settings["assets_path"] == "/xmpp/conversejs/dist/"
    page = fetch(root, "/conversejs").text
    assert 'src="/xmpp/conversejs/dist/converse.min.js?v=14.0.0"' in page
    assert 'src="/xmpp/conversejs/config.js"' in page


def test_no_setting_can_end_the_script(data_dir):
    root = site_for(fake_server(data_dir, muc="</script><b>"))
    response = fetch(root, "/conversejs/config.js")
    assert "</script>" not in response.text
    assert settings_of(root)["muc_domain"] == "</script><b>"


# -- the installed files -----------------------------------------------------------

@pytest.mark.parametrize("name, content_type", [
    ("converse.min.js", "text/javascript; charset=utf-8"),
    ("converse.min.css", "text/css; charset=utf-8"),
    ("curve25519_compiled.wasm", "application/wasm"),
    ("chunkjs/emoji.js", "text/javascript; charset=utf-8"),
    ("sound.xyz", "application/octet-stream"),
])
def test_installed_files_are_served_with_their_content_type(data_dir, name, content_type):
    release = install_fake(data_dir)
    response = fetch(site_for(fake_server(data_dir)), f"/conversejs/dist/{name}")
    assert response.code == 200
    assert response.body == (release / name).read_bytes()
    assert response.headers["content-type"] == content_type
    assert response.headers["x-content-type-options"] == "nosniff"


def test_the_versioned_urls_are_cached_for_long_the_others_revalidated(data_dir):
    install_fake(data_dir)
    root = site_for(fake_server(data_dir))
    pinned = fetch(root, "/conversejs/dist/converse.min.js?v=14.0.0")
    assert pinned.headers["cache-control"] == "public, max-age=31536000, immutable"
    other = fetch(root, "/conversejs/dist/converse.min.js?v=13.0.0")
    assert other.headers["cache-control"] == "no-cache"
    plain = fetch(root, "/conversejs/dist/chunkjs/emoji.js")
    assert plain.headers["cache-control"] == "no-cache" and plain.headers["etag"]
    assert plain.headers["last-modified"]


def test_an_unchanged_file_is_not_sent_again(data_dir):
    install_fake(data_dir)
    root = site_for(fake_server(data_dir))
    etag = fetch(root, "/conversejs/dist/converse.min.js").headers["etag"]
    again = fetch(root, "/conversejs/dist/converse.min.js", if_none_match=etag)
    assert again.code == 304 and again.body == b""
    install_fake(data_dir, "14.0.1")  # another release: another file
    assert fetch(root, "/conversejs/dist/converse.min.js", if_none_match=etag).code == 200


def test_head_sends_the_headers_only(data_dir):
    install_fake(data_dir)
    response = fetch(site_for(fake_server(data_dir)), "/conversejs/dist/converse.min.css",
                     method="HEAD")
    assert response.code == 200 and response.body == b""
    assert response.headers["content-length"] == str(len("body {}"))


@pytest.mark.parametrize("method, code", [("POST", 405), ("PUT", 501), ("DELETE", 501)])
def test_files_cannot_be_written(data_dir, method, code):
    release = install_fake(data_dir)
    response = fetch(site_for(fake_server(data_dir)), "/conversejs/dist/converse.min.js",
                     method=method, content_length="0")
    assert response.code == code
    assert (release / "converse.min.js").read_text() == "window.converse = {initialize() {}};"


@pytest.mark.parametrize("path", [
    "/conversejs/dist/",                        # a directory: no listing
    "/conversejs/dist/chunkjs",
    "/conversejs/dist/chunkjs/",
    "/conversejs/dist/.xmppd-install.json",     # dotfiles
    "/conversejs/dist/%2exmppd-install.json",
    "/conversejs/dist/../xmppd.ini",
    "/conversejs/dist/..%2f..%2fsecret",
    "/conversejs/dist/chunkjs%2f..%2f..%2fsecret",
    "/conversejs/dist/%2e%2e/%2e%2e/secret",
    "/conversejs/dist/chunkjs/..%5c..%5csecret",
    "/conversejs/dist/%00",
    "/conversejs/dist/%ff",
    "/conversejs/dist/missing.js",
    "/conversejs/dist/outside",                 # a symlink out of the release
])
def test_nothing_but_the_release_s_files_is_served(data_dir, path):
    release = install_fake(data_dir)
    (data_dir / "webclient" / "secret").write_text("secret")
    (data_dir / "secret").write_text("secret")
    os.symlink(data_dir / "secret", release / "outside")
    response = fetch(site_for(fake_server(data_dir)), path)
    assert response.code == 404, (path, response.code)
    assert b"secret" not in response.body


def test_files_are_unavailable_while_nothing_is_installed(data_dir):
    response = fetch(site_for(fake_server(data_dir)), "/conversejs/dist/converse.min.js")
    assert response.code == 503


# -- on the real HTTP service ------------------------------------------------------

def http_service(endpoints: str = "websocket bosh host-meta conversejs", **http):
    from xmppd import config as configlib
    from xmppd.http.site import HTTPService

    options = configlib.from_dict({
        "server": {"domains": "localhost", "components": ""},
        "http": {"endpoints": endpoints, "tls_port": 0, **http}}).http
    service = HTTPService(options, ["localhost"])
    service.add_route("/xmpp-websocket", resource.Resource(), endpoint="websocket")
    return service


def test_registered_on_the_http_service_everything_is_served_with_cors(data_dir):
    install_fake(data_dir)
    service = http_service()
    server = fake_server(data_dir, service)
    conversejs.register(server)
    page = fetch(service.site, "/conversejs", origin="http://elsewhere.example")
    assert page.code == 200 and "converse.min.js?v=14.0.0" in page.text
    assert page.headers["access-control-allow-origin"] == "http://elsewhere.example"
    settings = settings_of(service.site)
    assert settings["websocket_url"] == "ws://localhost:5280/xmpp-websocket"
    assert "bosh_service_url" not in settings  # nothing mounted at /http-bind
    assert fetch(service.site, "/conversejs/dist/chunkjs/emoji.js").text == "// chunk"
    assert fetch(service.site, "/conversejs/dist/..%2f..%2fxmppd.ini").code == 404


def test_over_https_the_urls_are_secure(data_dir):
    service = http_service(port=5280, tls_port=5281)
    conversejs.register(fake_server(data_dir, service))
    page = conversejs.ConverseJS(fake_server(data_dir, service))
    plain = mock.Mock(**{"isSecure.return_value": False})
    secure = mock.Mock(**{"isSecure.return_value": True})
    assert page._url(plain, "/xmpp-websocket", websocket=True) == "ws://localhost:5280/xmpp-websocket"
    assert page._url(secure, "/xmpp-websocket", websocket=True) == "wss://localhost:5281/xmpp-websocket"


def test_with_the_endpoint_off_nothing_is_mounted(data_dir):
    install_fake(data_dir)
    service = http_service(endpoints="websocket")
    conversejs.register(fake_server(data_dir, service))
    assert not service.has_route("/conversejs")
    assert fetch(service.site, "/conversejs").code == 404
