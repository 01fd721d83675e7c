"""End to end: an upload PUT the server will refuse is answered from its
headers, before any of its body is sent, against a real ``twistd xmppd``.

A client that announces a 50 MB body without the slot's secret gets its
answer (Prosody's ``401``) while it has sent nothing but the request line and
headers, and the connection is closed: the server neither reads nor buffers
the body, and nothing appears under ``<data_dir>/upload/``. A chunked PUT is
bounded by its slot's size as it arrives. An upload under way on another
connection meanwhile completes untouched.

Slots are asked for over XMPP by a raw client (:mod:`rawxmpp`); the PUTs are
raw HTTP/1.1 over a socket, so the test controls exactly which bytes the
server has when it answers.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from urllib.parse import urlsplit

import pytest

from conftest import PASSWORD
from rawxmpp import login, q

NS_UPLOAD = "urn:xmpp:http:upload:0"
BIG = 50_000_000
#: how long a refusal may take to come back (it needs no body at all)
ANSWER_WITHIN = 5.0


@pytest.fixture(scope="module")
def server(make_xmppd_module):
    return make_xmppd_module(
        {"server": {"components": "disco ping upload"},
         "http": {"max_body_size": str(100_000_000)},
         "component:upload": {"max_file_size": str(60_000_000),
                              "daily_quota": str(1_000_000_000)}},
        users=("alice@localhost",))


@pytest.fixture(scope="module")
def alice(server):
    client = login(server.host, server.port, "alice@localhost", PASSWORD, "up")
    yield client
    client.close()


def slot(client, size: int, filename: str = "big.bin") -> tuple[str, str]:
    """(PUT path, token) of a fresh slot for ``size`` bytes."""
    answer = client.iq(f"<request xmlns='{NS_UPLOAD}' filename='{filename}' size='{size}' "
                       "content-type='application/octet-stream'/>", to="upload.localhost")
    assert answer.get("type") == "result", answer
    put = answer.find(f"{q(NS_UPLOAD, 'slot')}/{q(NS_UPLOAD, 'put')}")
    header = put.find(q(NS_UPLOAD, "header"))
    return urlsplit(put.get("url")).path, header.text.removeprefix("Bearer ")


def connect(server) -> socket.socket:
    sock = socket.create_connection((server.host, server.http_port), timeout=ANSWER_WITHIN)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def head(path: str, token: str | None, extra: str = "") -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token is not None else ""
    return f"PUT {path} HTTP/1.1\r\nHost: localhost\r\n{auth}{extra}\r\n".encode()


def answer_and_close(sock: socket.socket) -> tuple[int, dict[str, str], float]:
    """Read until the server closes: (status, headers, seconds it took)."""
    started, data = time.monotonic(), b""
    while True:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            raise AssertionError(f"no answer and no close within {ANSWER_WITHIN} s "
                                 f"(the server waits for the body?); got {data!r}") from None
        if not chunk:
            break
        data += chunk
    took = time.monotonic() - started
    lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = {n.strip().lower(): v.strip()
               for n, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, took


def uploaded(server) -> list[str]:
    directory = server.data_dir / "upload"
    return sorted(n for n in os.listdir(directory) if n != "secret.key")


def get(server, path: str) -> bytes:
    with connect(server) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                     .encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head_, _, body = data.partition(b"\r\n\r\n")
    assert head_.startswith(b"HTTP/1.1 200"), head_
    return body


def test_a_put_with_a_wrong_secret_is_refused_before_its_50_mb_body_is_sent(server, alice):
    before = uploaded(server)
    path, token = slot(alice, BIG)
    # Another upload under way on its own connection: half its body sent.
    small_path, small_token = slot(alice, 300_000, "small.bin")
    data = os.urandom(300_000)
    ongoing = connect(server)
    ongoing.sendall(head(small_path, small_token, f"Content-Length: {len(data)}\r\n"
                                                  "Connection: close\r\n") + data[:150_000])
    for wrong, extra in ((token[:-2] + "xx", ""), (None, ""),
                         (token, "Expect: 100-continue\r\n")):
        length = BIG if extra == "" else BIG - 1  # (the last: not the slot's size)
        with connect(server) as sock:
            sock.sendall(head(path, wrong, extra + f"Content-Length: {length}\r\n"))
            code, headers, took = answer_and_close(sock)
        assert code == (413 if extra else 401), (wrong, extra, code)
        assert headers["connection"] == "close"
        if wrong is None:
            assert headers["www-authenticate"] == "Bearer"
        assert took < ANSWER_WITHIN
    assert uploaded(server) == before  # nothing written, not even a part
    ongoing.sendall(data[150_000:])
    code, _, _ = answer_and_close(ongoing)
    ongoing.close()
    assert code == 201
    assert hashlib.sha256(get(server, small_path)).digest() == hashlib.sha256(data).digest()
    assert "Traceback" not in server.log_text()


def test_a_chunked_put_is_refused_as_soon_as_it_outgrows_its_slot(server, alice):
    before = uploaded(server)
    path, token = slot(alice, 100_000, "chunked.bin")
    with connect(server) as sock:
        sock.sendall(head(path, token, "Transfer-Encoding: chunked\r\n"))
        chunk = os.urandom(100_000)  # the whole slot: taken
        sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        # one byte more, and no end of the body: only a server that bounds
        # it by the slot answers (and it has read all that was sent, so its
        # close is no reset that could swallow the answer)
        sock.sendall(b"1\r\nx\r\n")
        code, headers, _ = answer_and_close(sock)
    assert (code, headers["connection"]) == (413, "close")
    assert uploaded(server) == before
