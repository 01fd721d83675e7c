"""Bad input over WebSocket against a real ``twistd xmppd``: each is refused
cleanly (the answer Prosody 0.12's mod_websocket gives, or a stream error
where we are stricter) while a bound TCP client and a bound WebSocket client
on the same server go on unharmed."""

from __future__ import annotations

import os
import socket
import struct
import time

import pytest

pytest.importorskip("wsproto")

from conftest import PASSWORD  # noqa: E402
from rawxmpp import login as tcp_login  # noqa: E402
from wsclient import Rejected, WSClient, login  # noqa: E402

MAX_STANZA = 10000
PING = ("<iq xmlns='jabber:client' type='get' id='{}' to='localhost'>"
        "<ping xmlns='urn:xmpp:ping'/></iq>")


def wait_listening(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture(scope="module")
def server(make_xmppd_module):
    srv = make_xmppd_module({"server": {"components": "disco ping presence messaging",
                                        "max_stanza_size": MAX_STANZA}})
    wait_listening(srv.http_port)
    return srv


@pytest.fixture(scope="module")
def bystanders(server):
    """A TCP client and a WebSocket client, bound for the whole module."""
    tcp = tcp_login(server.host, server.port, "carol@localhost", PASSWORD, "tcp")
    ws = login(server.host, server.http_port, "carol@localhost", PASSWORD, "ws")
    yield tcp, ws
    tcp.close()
    ws.close()


def untouched(bystanders, tag: str) -> None:
    """Both bystanders still answer, and still reach each other."""
    tcp, ws = bystanders
    assert tcp.iq("<ping xmlns='urn:xmpp:ping'/>", to="localhost").get("type") == "result"
    assert ws.iq("<ping xmlns='urn:xmpp:ping'/>", to="localhost").get("type") == "result"
    ws.send(f"<message xmlns='jabber:client' to='{tcp.jid}' id='{tag}'><body>ok</body></message>")
    got = tcp.next_stanza(lambda s: s.get("id") == tag)
    assert got.get("from") == ws.jid


def bound(server) -> WSClient:
    return login(server.host, server.http_port, "alice@localhost", PASSWORD, "victim")


def test_a_handshake_without_the_xmpp_subprotocol_is_refused_with_501(server, bystanders):
    for protocols in ([], ["chat"]):
        with pytest.raises(Rejected) as refused:
            WSClient.connect(server.host, server.http_port, protocols=protocols)
        assert refused.value.status == 501
    untouched(bystanders, "no-subprotocol")


def test_a_handshake_of_a_wrong_websocket_version_is_refused(server, bystanders):
    with socket.create_connection((server.host, server.http_port), timeout=5) as s:
        s.sendall(b"GET /xmpp-websocket HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n"
                  b"Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  b"Sec-WebSocket-Version: 8\r\nSec-WebSocket-Protocol: xmpp\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 400")
    untouched(bystanders, "bad-version")


def masked(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0) -> bytes:
    """A client frame made by hand (so it can be wrong)."""
    key = os.urandom(4)
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    size = len(payload)
    if size < 126:
        head += bytes([0x80 | size])
    else:
        head += struct.pack("!BH", 0x80 | 126, size)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


@pytest.mark.parametrize("frame, code", [
    (b"\x81\x05hello", 1002),  # not masked
    (masked(0x1, b"<presence/>", rsv=0x40), 1002),  # a reserved bit set
    (masked(0x3, b"<presence/>"), 1002),  # a reserved opcode
    (masked(0x9, b"x" * 200), 1002),  # a control frame over 125 bytes
    (masked(0x1, b"<message>\xff\xfe</message>"), 1007),  # not UTF-8
], ids=["unmasked", "reserved-bit", "reserved-opcode", "long-control", "not-utf8"])
def test_malformed_frames_close_the_websocket(server, bystanders, frame, code):
    victim = bound(server)
    victim.send_raw(frame)
    victim.expect_websocket_close(code)
    untouched(bystanders, f"frame-{code}-{frame[:2].hex()}")


def test_a_binary_message_closes_the_websocket_with_1003(server, bystanders):
    victim = bound(server)
    victim.send_bytes(PING.format("binary").encode())
    victim.expect_websocket_close(1003)
    assert not [e for e in victim.elements if e.get("id") == "binary"]
    untouched(bystanders, "binary")


def test_text_that_is_not_xml_closes_the_websocket_with_1007(server, bystanders):
    victim = bound(server)
    victim.send("hello, server")
    victim.expect_websocket_close(1007)
    untouched(bystanders, "not-xml")


def test_an_oversized_message_is_policy_violation(server, bystanders):
    victim = bound(server)
    victim.send("<message xmlns='jabber:client' to='carol@localhost'><body>"
                + "x" * (MAX_STANZA + 1) + "</body></message>")
    error = victim.expect_stream_error("policy-violation")
    assert "stanza too large" in "".join(error.itertext())
    untouched(bystanders, "oversized")


@pytest.mark.parametrize("text", [
    PING.format("one") + PING.format("two"),  # two stanzas in one message
    "<iq xmlns='jabber:client' type='get' id='part' to='localhost'>",  # a part of one
    "<message xmlns='jabber:client'><body>broken</message>",  # not well-formed
], ids=["two-stanzas", "part-of-one", "not-well-formed"])
def test_a_message_that_is_not_one_element_is_not_well_formed(server, bystanders, text):
    victim = bound(server)
    victim.send(text)
    victim.expect_stream_error("not-well-formed")
    assert not [e for e in victim.elements if e.get("id") in ("one", "two", "part")]
    untouched(bystanders, "one-element")


def test_a_stanza_before_open_is_invalid_namespace(server, bystanders):
    with WSClient.connect(server.host, server.http_port) as c:
        c.send(PING.format("early"))
        c.expect_stream_error("invalid-namespace")
    untouched(bystanders, "before-open")


@pytest.mark.parametrize("stage", ["opened", "bound"])
def test_a_stanza_without_a_namespace_is_unsupported_stanza_type_as_prosody_answers(
        server, bystanders, stage):
    """RFC 7395 §3.3.3: each message declares its namespace; nothing is
    inherited from <open/>. Prosody 0.12 (run with mod_websocket) answers a
    namespace-less <message/> at any stage with <unsupported-stanza-type/>,
    no text, <close/>, and WebSocket close 1000 "Stream closed"."""
    if stage == "bound":
        victim = bound(server)
    else:
        victim = WSClient.connect(server.host, server.http_port)
        victim.open_stream()
    tcp, _ = bystanders
    with victim:
        victim.send(f"<message to='{tcp.jid}' id='no-ns-{stage}' type='chat'>"
                    "<body>no namespace</body></message>")
        error = victim.expect_stream_error("unsupported-stanza-type")
        assert [child.tag for child in error] == [
            "{urn:ietf:params:xml:ns:xmpp-streams}unsupported-stanza-type"]  # no <text/>
        assert (victim.close_code, victim.close_reason) == (1000, "Stream closed")
    untouched(bystanders, f"no-namespace-{stage}")  # (after anything routed before it)
    assert f"no-ns-{stage}".encode() not in tcp.received


def test_a_stanza_before_authentication_is_not_authorized(server, bystanders):
    with WSClient.connect(server.host, server.http_port) as c:
        c.open_stream()
        c.send("<message xmlns='jabber:client' to='carol@localhost'><body>x</body></message>")
        c.expect_stream_error("not-authorized")
    untouched(bystanders, "before-auth")


def test_a_silent_websocket_is_closed_after_the_auth_timeout(make_xmppd):
    srv = make_xmppd({"c2s": {"auth_timeout": 2}}, users=())
    wait_listening(srv.http_port)
    with WSClient.connect(srv.host, srv.http_port) as c:
        c.expect_stream_error("connection-timeout", timeout=10)
    assert "not bound within 2 s (no <open/>)" in srv.log_text()
