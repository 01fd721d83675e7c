"""The transport matrix is real: a client library on ``server.client_port``
reaches xmppd over the test's transport (:mod:`bridge` for WebSocket and
BOSH), and a server crash reaches the client as over TCP.

Without these, a bridge that quietly fell back to the c2s port, or kept a
client talking to a dead server, would leave every test of the
``all_transports`` modules passing while testing nothing new.
"""

from __future__ import annotations

import asyncio
import re

import pytest

pytest.importorskip("slixmpp")

from slixclient import TIMEOUT, IMClient  # noqa: E402

pytestmark = pytest.mark.all_transports  # tcp, websocket, bosh (conftest)

#: how the server logs the binding of a session, by transport
BOUND_OVER = {"tcp": "STARTTLS", "websocket": "WebSocket, loopback", "bosh": "BOSH, loopback"}


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_a_client_library_is_bound_over_its_transport_with_tls_on_its_side(
        make_xmppd, transport):
    server = make_xmppd(users=("alice@localhost",))

    async def main():
        alice = await IMClient.login(server, "alice@localhost/matrix")
        try:
            assert alice.transport.get_extra_info("ssl_object") is not None
            assert await alice.ping_server()
            log = server.log_text()
            assert re.search(r"bound alice@localhost/matrix \(SCRAM-SHA-\d+, "
                             rf"{re.escape(BOUND_OVER[transport])}\)\n", log), log
            if transport != "tcp":
                assert not re.search(r" bound .*(STARTTLS|direct TLS)\)", log)  # no TCP client
        finally:
            await alice.close()
    run(main())


def test_a_server_crash_closes_the_client_connection(make_xmppd):
    server = make_xmppd(users=("alice@localhost",))

    async def main():
        alice = await IMClient.login(server, "alice@localhost/crash")
        try:
            server.kill()
            await asyncio.wait_for(alice.closed, TIMEOUT)
        finally:
            alice.abort()
        server.start()  # and a new connection finds the server again
        again = await IMClient.login(server, "alice@localhost/again")
        await again.close()
    run(main())
