"""The HTTP service of a real ``twistd xmppd`` over real sockets, with
``urllib``: XEP-0156 host-meta over HTTP and over HTTPS (the server's
self-signed certificate, not verified), its CORS headers and preflight,
404s, the listeners' log lines, and host-meta turned off as an endpoint."""

from __future__ import annotations

import json
import signal
import ssl
import time
import urllib.error
import urllib.request
from xml.etree import ElementTree

import pytest

XRD = "{http://docs.oasis-open.org/ns/xri/xrd-1.0}"
ORIGIN = "https://web.example"


def fetch(url: str, method: str = "GET", headers: dict[str, str] | None = None):
    """(status, headers with lower-case names, body); an HTTP error is an answer too."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, \
                response.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


@pytest.fixture(scope="module")
def server(make_xmppd_module):
    return make_xmppd_module(users=())


def bases(server) -> list[str]:
    return [f"http://127.0.0.1:{server.http_port}", f"https://127.0.0.1:{server.https_port}"]


def test_the_fixture_gives_each_server_its_own_http_ports(server):
    assert server.http_port and server.https_port
    assert len({server.port, server.tls_port, server.http_port, server.https_port}) == 4
    log = server.log_text()
    assert f"http listening on 127.0.0.1 port {server.http_port} (HTTP)" in log
    assert f"http listening on 127.0.0.1 port {server.https_port} (HTTPS)" in log


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_host_meta_is_an_xrd_document_and_its_json_form_the_same_links(server, scheme):
    base = bases(server)[scheme == "https"]
    status, headers, body = fetch(base + "/.well-known/host-meta")
    assert status == 200, server.log_tail()
    assert headers["content-type"] == "application/xrd+xml"
    xrd = ElementTree.fromstring(body)
    assert xrd.tag == XRD + "XRD"
    links = [(link.get("rel"), link.get("href")) for link in xrd.iter(XRD + "Link")]
    status, headers, body = fetch(base + "/.well-known/host-meta.json")
    assert (status, headers["content-type"]) == (200, "application/json")
    assert [(link["rel"], link["href"]) for link in json.loads(body)["links"]] == links
    # Every URL handed out is the TLS port's (it is on), by the server's name.
    for rel, href in links:
        assert rel.startswith("urn:xmpp:alt-connections:")
        assert href.startswith((f"https://localhost:{server.https_port}/",
                                f"wss://localhost:{server.https_port}/")), href


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_responses_carry_cors_headers_and_preflight_is_answered(server, scheme):
    base = bases(server)[scheme == "https"]
    status, headers, _ = fetch(base + "/.well-known/host-meta.json", headers={"Origin": ORIGIN})
    assert status == 200
    assert headers["access-control-allow-origin"] == ORIGIN
    assert headers["access-control-max-age"] == "7200"
    status, headers, body = fetch(base + "/.well-known/host-meta", method="OPTIONS",
                                  headers={"Origin": ORIGIN,
                                           "Access-Control-Request-Method": "GET"})
    assert (status, body) == (200, b"")
    assert headers["access-control-allow-origin"] == ORIGIN
    assert headers["access-control-allow-headers"] == "Content-Type"
    assert {"GET", "OPTIONS"} <= {m.strip() for m in
                                  headers["access-control-allow-methods"].split(",")}


def test_an_unknown_path_is_404_with_cors_headers(server):
    for base in bases(server):
        status, headers, body = fetch(base + "/no/such/thing", headers={"Origin": ORIGIN})
        assert status == 404
        assert headers["access-control-allow-origin"] == ORIGIN
        assert b"404 Not Found" in body


def test_host_meta_turned_off_is_not_served(make_xmppd):
    server = make_xmppd({"http": {"endpoints": "websocket bosh", "tls_port": 0}}, users=())
    assert server.https_port == 0
    status, _, _ = fetch(f"http://127.0.0.1:{server.http_port}/.well-known/host-meta")
    assert status == 404
    assert "port 0" not in server.log_text()


def test_a_stop_closes_open_http_connections_and_exits_cleanly(make_xmppd):
    import socket

    server = make_xmppd(users=())
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as conn:
        conn.sendall(b"GET /.well-known/host-meta HTTP/1.1\r\nHost: localhost\r\n\r\n")
        answer = b""
        while b"</XRD>" not in answer and b"/>" not in answer.partition(b"\r\n\r\n")[2]:
            chunk = conn.recv(4096)
            assert chunk, answer
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 ")
        # the connection is kept alive, idle, when the server is told to stop;
        # twistd ends by the signal it was stopped with, after a clean shutdown
        started = time.monotonic()
        assert server.stop() in (0, -signal.SIGTERM)
        assert time.monotonic() - started < 4  # not the close time-out, nor a SIGKILL
        assert conn.recv(4096) == b""
    log = server.log_text()
    assert "Server Shut Down." in log
    assert "Traceback" not in log
