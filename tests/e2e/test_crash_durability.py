"""Crash durability: what the server acknowledged survives SIGKILL.

An account is created through in-band registration with a real client (slixmpp),
the path where the server accepts a write and then acknowledges it. The server
is killed with SIGKILL the moment the acknowledgement arrives, restarted on the
same data, and the account must be able to log in.
"""

from __future__ import annotations

import asyncio
import ssl
import uuid

import pytest

slixmpp = pytest.importorskip("slixmpp")
from slixmpp.exceptions import IqError  # noqa: E402

pytestmark = pytest.mark.all_transports  # tcp, websocket, bosh (conftest)
TIMEOUT = 10



class Client(slixmpp.ClientXMPP):
    def __init__(self, jid: str, password: str):
        super().__init__(jid, password)
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # self-signed server certificate
        self.ssl_context = context
        self.enable_direct_tls = False
        self.enable_plaintext = False
        self.register_plugin("xep_0077")
        loop = asyncio.get_running_loop()
        self.ready = loop.create_future()
        self.auth_failed = loop.create_future()
        self.closed = loop.create_future()
        self.add_event_handler("session_start", lambda _: _settle(self.ready, self.boundjid.full))
        self.add_event_handler("failed_auth", lambda s: _settle(self.auth_failed, s["condition"]))
        self.add_event_handler("disconnected", lambda r: _settle(self.closed, r))


def _settle(future, value):
    if not future.done():
        future.set_result(value)


async def register_then_kill(server, username, password):
    """Register in-band; SIGKILL the server as soon as the result arrives."""
    client = Client(f"{username}@localhost/reg", password)
    answer = asyncio.get_running_loop().create_future()

    async def on_register(_form):
        iq = client.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = username
        iq["register"]["password"] = password
        try:
            reply = await iq.send(timeout=TIMEOUT)
        except IqError as e:
            reply = e.iq
        if reply["type"] == "result":
            server.kill()  # acknowledged: crash right now
        _settle(answer, reply)

    client.add_event_handler("register", on_register)
    client.connect(server.client_host, server.client_port)
    try:
        return await asyncio.wait_for(answer, TIMEOUT)
    finally:
        client.abort()


async def login(server, jid, password):
    client = Client(jid, password)
    client.connect(server.client_host, server.client_port)
    try:
        await asyncio.wait([client.ready, client.auth_failed, client.closed],
                           timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        if client.ready.done():
            return client.ready.result()
        raise AssertionError(f"{jid} could not log in after the restart: "
                             f"{client.auth_failed.result() if client.auth_failed.done() else 'no answer'}"
                             f"; server log:\n{server.log_tail()}")
    finally:
        client.abort()
@pytest.mark.parametrize("synchronous", ["normal", "full"])
def test_registered_account_survives_sigkill(make_xmppd, synchronous):
    server = make_xmppd({"server": {"sqlite_synchronous": synchronous},
                         "component:register": {"allow_registration": "true"}}, users=())
    username = f"durable{uuid.uuid4().hex[:8]}"

    async def before():
        reply = await register_then_kill(server, username, "durable-password")
        assert reply["type"] == "result", f"registration refused: {reply}"

    asyncio.run(before())
    assert not server.running
    assert server.process.returncode == -9  # it really was SIGKILL, no clean shutdown

    server.start()

    async def after():
        assert await login(server, f"{username}@localhost/back", "durable-password") \
            == f"{username}@localhost/back"

    asyncio.run(after())
