"""XEP-0363 HTTP File Upload against a real ``twistd xmppd``, with slixmpp.

alice's slixmpp ``xep_0363`` plugin finds the upload service through disco,
reads its ``max-file-size``, asks for a slot and PUTs the file over HTTPS;
she sends the GET URL to bob (XEP-0066 out-of-band data, as Conversations
does), and bob's client fetches the same bytes over HTTPS. The server's
self-signed certificate is pinned by its fingerprint, so TLS is checked, not
switched off. Then: the XEP's errors for an oversized file and an exhausted
quota, files expiring after ``expire_after``, files surviving a restart and
going with their account, and bad HTTP input refused without anything
written outside ``data_dir/upload``.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import re
import ssl
from pathlib import Path

import pytest

pytest.importorskip("slixmpp")
aiohttp = pytest.importorskip("aiohttp")

from slixmpp.exceptions import IqError  # noqa: E402
from slixmpp.plugins.xep_0363 import http_upload  # noqa: E402

from slixclient import IMClient, close_all, message  # noqa: E402

pytestmark = pytest.mark.all_transports  # tcp, websocket, bosh (conftest)
SERVICE = "upload.localhost"
COMPONENTS = "disco ping roster presence messaging upload"
UPLOAD = "{urn:xmpp:http:upload:0}"
STANZAS = "{urn:ietf:params:xml:ns:xmpp-stanzas}"
OOB = "jabber:x:oob"
PLUGINS = ("xep_0066", "xep_0363")


def run(coro, server=None):
    try:
        return asyncio.run(asyncio.wait_for(coro, 90))
    except BaseException as failure:
        if server is not None:
            failure.add_note(f"--- xmppd log tail ---\n{server.log_tail(60)}")
        raise


def start(make_xmppd, **upload_options):
    """A server with the upload service; the fixture gives it the HTTP
    service on loopback (``server.http_port``, ``server.https_port``)."""
    return make_xmppd(
        {"server": {"components": COMPONENTS},
         "component:upload": {k: str(v) for k, v in upload_options.items()}},
        users=("alice@localhost", "bob@localhost"))


def pinned(server) -> aiohttp.Fingerprint:
    """The server's own certificate, pinned: HTTPS verified without a CA."""
    text = (server.data_dir / "certs" / "xmppd.pem").read_text(encoding="ascii")
    first = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", text, re.S)
    der = ssl.PEM_cert_to_DER_cert(first.group(0) + "\n")
    return aiohttp.Fingerprint(hashlib.sha256(der).digest())


@pytest.fixture
def trust(monkeypatch):
    """Make slixmpp's upload plugin (its own aiohttp session) trust ``server``."""
    def trust_server(server):
        fingerprint = pinned(server)

        def session(*args, **kw):
            # a connector belongs to its event loop: a fresh one per session
            return aiohttp.ClientSession(*args, connector=aiohttp.TCPConnector(ssl=fingerprint),
                                         **kw)
        monkeypatch.setattr(http_upload, "ClientSession", session)
        return fingerprint
    return trust_server


async def fetch(url: str, fingerprint, method: str = "GET", **kw) -> tuple[int, dict, bytes]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=fingerprint)) as s:
        async with s.request(method, url, **kw) as response:
            return response.status, dict(response.headers), await response.read()


async def upload(client: IMClient, data: bytes, name: str = "photo.jpg",
                 content_type: str = "image/jpeg") -> str:
    return await client.plugin["xep_0363"].upload_file(
        name, size=len(data), content_type=content_type, input_file=io.BytesIO(data), timeout=10)


def uploaded_files(server) -> list[str]:
    directory = server.data_dir / "upload"
    return sorted(p.name for p in directory.iterdir() if p.name != "secret.key")


# -- a file from alice to bob ------------------------------------------------------------

def test_slixmpp_uploads_and_another_client_downloads_the_same_bytes(make_xmppd, trust):
    server = start(make_xmppd, max_file_size=2_000_000)
    fingerprint = trust(server)
    data = os.urandom(1_500_000)

    async def scenario():
        alice = await IMClient.login(server, "alice@localhost/phone", plugins=PLUGINS)
        bob = await IMClient.login(server, "bob@localhost/laptop", plugins=PLUGINS)
        try:
            await bob.online()
            url = await upload(alice, data)
            assert url.startswith(f"https://localhost:{server.https_port}/upload/"), url
            assert url.endswith("/photo.jpg")
            # slixmpp read the limit from the service's disco form
            assert alice.plugin["xep_0363"].max_file_size == 2_000_000
            assert str(alice.plugin["xep_0363"].upload_service) == SERVICE
            msg = alice.make_message(mto="bob@localhost", mbody=url, mtype="chat")
            msg["oob"]["url"] = url
            msg.send()
            got = await bob.expect(message(from_="alice@localhost"))
            shared = got.find(f"{{{OOB}}}x/{{{OOB}}}url").text
            status, headers, body = await fetch(shared, fingerprint)
            assert status == 200 and hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
            assert headers["Content-Type"] == "image/jpeg"
            assert headers["Content-Disposition"] == "inline; filename*=UTF-8''photo.jpg"
            assert headers["X-Content-Type-Options"] == "nosniff"
            # HEAD, and the plain HTTP port serves it too
            status, headers, body = await fetch(shared, fingerprint, "HEAD")
            assert (status, headers["Content-Length"], body) == (200, str(len(data)), b"")
        finally:
            await close_all(alice, bob)
    run(scenario(), server)
    assert len(uploaded_files(server)) == 1


def test_files_survive_a_restart_and_go_with_their_account(make_xmppd, trust):
    server = start(make_xmppd)
    fingerprint = trust(server)

    async def put():
        alice = await IMClient.login(server, "alice@localhost/phone", plugins=PLUGINS)
        try:
            return await upload(alice, b"kept across restarts", "note.txt", "text/plain")
        finally:
            await close_all(alice)
    url = run(put(), server)
    server.restart()
    assert run(fetch(url, fingerprint), server)[::2] == (200, b"kept across restarts")
    server.admin("deluser", "alice@localhost")
    assert run(fetch(url, fingerprint), server)[0] == 404
    assert uploaded_files(server) == []


# -- the XEP's errors --------------------------------------------------------------------

def test_an_oversized_file_gets_file_too_large_and_quota_resource_constraint(make_xmppd, trust):
    server = start(make_xmppd, max_file_size=1000, daily_quota=1500)
    trust(server)

    async def scenario():
        alice = await IMClient.login(server, "alice@localhost/phone", plugins=PLUGINS)
        try:
            # slixmpp refuses by itself, from the limit the service announced
            with pytest.raises(http_upload.FileTooBig):
                await upload(alice, b"x" * 1001)
            # asked anyway, the service says so with the limit
            with pytest.raises(IqError) as failure:
                await alice.plugin["xep_0363"].request_slot(SERVICE, "big.bin", 1001, timeout=10)
            error = failure.value.iq.xml.find("{jabber:client}error")
            assert error.get("type") == "modify"
            assert error.find(STANZAS + "not-acceptable") is not None
            assert error.find(STANZAS + "text").text == "File too large"
            assert error.find(f"{UPLOAD}file-too-large/{UPLOAD}max-file-size").text == "1000"
            # the daily quota: 1000 + 500 fit, one more byte does not
            await upload(alice, b"x" * 1000)
            await upload(alice, b"y" * 500)
            with pytest.raises(IqError) as failure:
                await upload(alice, b"z")
            error = failure.value.iq.xml.find("{jabber:client}error")
            assert error.get("type") == "wait"
            assert error.find(STANZAS + "resource-constraint") is not None
            assert error.find(STANZAS + "text").text == "Daily quota reached"
            # bob's quota is his own
            bob = await IMClient.login(server, "bob@localhost/b", plugins=PLUGINS)
            await upload(bob, b"b" * 1000)
            await close_all(bob)
        finally:
            await close_all(alice)
    run(scenario(), server)


def test_a_file_expires_after_expire_after(make_xmppd, trust):
    server = start(make_xmppd, expire_after=2)
    fingerprint = trust(server)

    async def scenario():
        alice = await IMClient.login(server, "alice@localhost/phone", plugins=PLUGINS)
        try:
            url = await upload(alice, b"short-lived", "x.txt", "text/plain")
        finally:
            await close_all(alice)
        assert (await fetch(url, fingerprint))[::2] == (200, b"short-lived")
        await asyncio.sleep(2.5)
        assert (await fetch(url, fingerprint))[0] == 404
    run(scenario(), server)
    assert uploaded_files(server) == []


# -- bad HTTP input ----------------------------------------------------------------------

def test_puts_without_the_secret_and_path_tricks_are_refused(make_xmppd, trust):
    server = start(make_xmppd)
    fingerprint = trust(server)

    def tree() -> list[str]:
        return sorted(str(p.relative_to(server.data_dir)) for p in Path(server.data_dir).rglob("*")
                      if p.is_file() and not p.name.startswith("xmppd.sqlite3"))

    async def scenario():
        alice = await IMClient.login(server, "alice@localhost/phone", plugins=PLUGINS)
        try:
            reply = await alice.iq("get", "<request xmlns='urn:xmpp:http:upload:0' "
                                          "filename='a.txt' size='5' content-type='text/plain'/>",
                                   to=SERVICE)
        finally:
            await close_all(alice)
        slot = reply.find(UPLOAD + "slot")
        put = slot.find(UPLOAD + "put")
        url = put.get("url")
        token = put.find(UPLOAD + "header").text
        before = tree()
        assert (await fetch(url, fingerprint, "PUT", data=b"hello"))[0] == 401
        assert (await fetch(url, fingerprint, "PUT", data=b"hello",
                            headers={"Authorization": token[:-2] + "xx"}))[0] == 401
        assert (await fetch(url, fingerprint, "PUT", data=b"hell",
                            headers={"Authorization": token}))[0] == 413
        base = url.rsplit("/", 2)[0]
        slot_id = url.rsplit("/", 2)[1]
        for path in (f"{slot_id}/..%2F..%2Fxmppd.sqlite3", f"{slot_id}%2F..%2Fsecret.key/x",
                     f"{slot_id}/a%00b", "..%2Fcerts%2Fxmppd.pem/x"):
            for method in ("PUT", "GET"):
                status = (await fetch(f"{base}/{path}", fingerprint, method, data=b"hello",
                                      headers={"Authorization": token}))[0]
                assert status in (400, 404), (method, path, status)
        assert tree() == before
        # the real PUT still works, and only then is there a file
        assert (await fetch(url, fingerprint, "PUT", data=b"hello",
                            headers={"Authorization": token}))[0] == 201
        assert (await fetch(url, fingerprint))[::2] == (200, b"hello")
    run(scenario(), server)
