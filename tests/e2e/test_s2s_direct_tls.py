"""XEP-0368 between two xmppd servers: b.test listens for servers with TLS
from the first byte ([s2s] direct_tls_port, no STARTTLS port), a.test reaches
it there ([s2s:routes] ``host:port tls``); messages cross both ways and the
certificates authenticate (SASL EXTERNAL) as over STARTTLS."""

from __future__ import annotations

import asyncio

from conftest import free_port
from slixclient import IMClient, close_all, message
from testca import TestCA

A, B = "a.test", "b.test"


def test_a_link_over_direct_tls_carries_messages_both_ways(make_xmppd, tmp_path):
    ca = TestCA(tmp_path / "ca")
    a_port, b_tls_port = free_port(), free_port()
    common = {"interfaces": "127.0.0.1", "ca_file": str(ca.ca_file)}
    a = make_xmppd({
        "server": {"domains": A, "certificate": str(ca.issue(A).combined),
                   "components": "disco ping presence messaging"},
        "s2s": {**common, "port": a_port},
        "s2s:routes": {B: f"127.0.0.1:{b_tls_port} tls"},
    }, users=[f"alice@{A}"])
    b = make_xmppd({
        "server": {"domains": B, "certificate": str(ca.issue(B).combined),
                   "components": "disco ping presence messaging"},
        "s2s": {**common, "port": 0, "direct_tls_port": b_tls_port},
        "s2s:routes": {A: f"127.0.0.1:{a_port}"},
    }, users=[f"bob@{B}"])

    async def main():
        alice = await IMClient.login(a, f"alice@{A}/pc")
        bob = await IMClient.login(b, f"bob@{B}/pc")
        try:
            alice.send_message(mto=f"bob@{B}/pc", mbody="direct", mtype="chat")
            got = await bob.expect(message(f"alice@{A}/pc"))
            assert got.find("{jabber:client}body").text == "direct"
            bob.send_message(mto=f"alice@{A}/pc", mbody="starttls back", mtype="chat")
            await alice.expect(message(f"bob@{B}/pc"))
        finally:
            await close_all(alice, bob)

    asyncio.run(asyncio.wait_for(main(), 60))
    assert "connected for a.test -> b.test (direct TLS)" in a.log_text()
    assert "s2sin" in b.log_text() and "connected (direct TLS)" in b.log_text()
    assert f"{A} authenticated to {B} (SASL EXTERNAL" in a.log_text()
