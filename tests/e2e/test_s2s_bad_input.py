"""Federation's bad input, against a real xmppd federating with another one:
a remote stream that never authenticates, dialback with a wrong key, a
remote server sending from a domain it did not authenticate, a flood of
stanzas to a domain nobody serves. Each is refused and logged, and the link
between the two good servers keeps working."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time

import pytest

from conftest import free_port
from rawxmpp import RawClient, q, stream_error_condition
from slixclient import IMClient, close_all, message
from testca import TestCA

A, B = "a.test", "b.test"
NS_SERVER, NS_DB = "jabber:server", "jabber:server:dialback"
NS_TLS, NS_SASL = "urn:ietf:params:xml:ns:xmpp-tls", "urn:ietf:params:xml:ns:xmpp-sasl"


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


@pytest.fixture(scope="module")
def world(make_xmppd_module, tmp_path_factory):
    base = tmp_path_factory.mktemp("s2s-bad")
    ca = TestCA(base / "ca")
    certs = {d: ca.issue(d) for d in (A, B, "raw.test")}
    ports = {A: free_port(), B: free_port()}
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    servers = {}
    for domain, other in ((A, B), (B, A)):
        servers[domain] = make_xmppd_module({
            "server": {"domains": domain, "certificate": str(certs[domain].combined),
                       "components": "disco ping version presence messaging"},
            "s2s": {"interfaces": "127.0.0.1", "port": ports[domain], "ca_file": str(ca.ca_file),
                    "secure_auth": "false", "auth_timeout": 3},
            "s2s:routes": {other: f"127.0.0.1:{ports[other]}",
                           "unreachable.test": f"127.0.0.1:{dead}"},
        }, users=[f"alice@{domain}", f"bob@{domain}"])
    return {"servers": servers, "ports": ports, "certs": certs, "ca": ca}


def s2s_header(from_: str, to: str) -> bytes:
    return (f"<?xml version='1.0'?><stream:stream xmlns='{NS_SERVER}' xmlns:db='{NS_DB}' "
            f"xmlns:stream='http://etherx.jabber.org/streams' from='{from_}' to='{to}' "
            f"version='1.0'>").encode()


def tls_stream(world, from_: str, cert=None) -> RawClient:
    """A raw s2s stream to a.test past STARTTLS (presenting ``cert``, if any)."""
    raw = RawClient.connect("127.0.0.1", world["ports"][A])
    raw.send(s2s_header(from_, A))
    features = raw.next_stanza(what="features")
    assert features.find(q(NS_TLS, "starttls")) is not None
    raw.send(f"<starttls xmlns='{NS_TLS}'/>")
    assert raw.next_stanza(what="proceed").tag == q(NS_TLS, "proceed")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(str(world["ca"].ca_file))
    if cert is not None:
        context.load_cert_chain(str(cert.chain), str(cert.key))
    raw.sock = context.wrap_socket(raw.sock, server_hostname=A)
    raw._new_parser()
    raw.send(s2s_header(from_, A))
    return raw


def good_link_works(world) -> None:
    servers = world["servers"]

    async def main():
        alice = await IMClient.login(servers[A], f"alice@{A}/pc")
        bob = await IMClient.login(servers[B], f"bob@{B}/pc")
        try:
            alice.send_message(mto=f"bob@{B}/pc", mbody="still here", mtype="chat")
            got = await bob.expect(message(f"alice@{A}/pc"))
            assert got.find("{jabber:client}body").text == "still here"
        finally:
            await close_all(alice, bob)
    _run(main())


def test_a_remote_stream_that_never_authenticates_is_closed_and_logged(world):
    raw = RawClient.connect("127.0.0.1", world["ports"][A])
    raw.send(s2s_header("slow.test", A))
    raw.next_stanza(what="features")
    error = raw.expect_stream_error("connection-timeout", timeout=8)
    assert stream_error_condition(error) == "connection-timeout"
    assert "not authenticated within 3 s" in world["servers"][A].log_text()
    good_link_works(world)


def test_dialback_with_a_wrong_key_is_invalid_and_logged(world):
    raw = tls_stream(world, B)  # no certificate: dialback, which a.test checks with b.test
    raw.next_stanza(what="features")
    raw.send(f"<db:result from='{B}' to='{A}'>0123456789abcdef</db:result>")
    result = raw.next_stanza(what="db:result")
    assert result.tag == q(NS_DB, "result") and result.get("type") == "invalid"
    raw.send(f"<message from='eve@{B}' to='alice@{A}'><body>x</body></message>")
    # nothing authenticated on this stream: RFC 6120 §4.9.3.12
    assert stream_error_condition(raw.expect_stream_error("not-authorized")) == "not-authorized"
    log = world["servers"][A].log_text()
    assert f"dialback for {B} failed" in log
    assert "127.0.0.1" in log.split(f"dialback for {B} failed")[0].rsplit("\n", 1)[-1]
    good_link_works(world)


def test_a_stanza_from_a_domain_the_stream_did_not_authenticate_is_invalid_from(world):
    raw = tls_stream(world, "raw.test", cert=world["certs"]["raw.test"])
    features = raw.next_stanza(what="features")
    mechanisms = [m.text for m in features.iter(q(NS_SASL, "mechanism"))]
    assert mechanisms == ["EXTERNAL"]  # the certificate proves raw.test
    raw.send(f"<auth xmlns='{NS_SASL}' mechanism='EXTERNAL'>=</auth>")
    assert raw.next_stanza(what="success").tag == q(NS_SASL, "success")
    raw._new_parser()
    raw.send(s2s_header("raw.test", A))
    raw.next_stanza(what="features")
    raw.send(f"<message from='mallory@{B}' to='alice@{A}'><body>forged</body></message>")
    assert stream_error_condition(raw.expect_stream_error("invalid-from")) == "invalid-from"
    assert f"stanza from {B}, which did not authenticate" in world["servers"][A].log_text()
    good_link_works(world)


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_a_flood_to_an_unreachable_domain_bounces_every_stanza_and_stays_bounded(world):
    server = world["servers"][A]
    count = 2000

    async def main():
        alice = await IMClient.login(server, f"alice@{A}/pc")
        try:
            before = _rss_kib(server.process.pid)
            for i in range(count):
                stanza = alice.make_message(mto=f"x{i}@unreachable.test", mbody="lost",
                                            mtype="chat")
                stanza["id"] = f"f{i}"
                stanza.send()
            errors = set()
            deadline = time.monotonic() + 30
            while len(errors) < count and time.monotonic() < deadline:
                got = await alice.expect(lambda e: e.get("type") == "error"
                                         and e.get("id", "").startswith("f"))
                condition = next(iter(got.find("{jabber:client}error"))).tag.split("}")[1]
                assert condition in ("remote-server-not-found", "resource-constraint"), condition
                errors.add(got.get("id"))
            assert len(errors) == count
            grown = _rss_kib(server.process.pid) - before
            assert grown < 64 * 1024, f"RSS grew by {grown} KiB"
        finally:
            await close_all(alice)
    _run(main())
    assert "s2s a.test -> unreachable.test failed" in server.log_text()
    good_link_works(world)
