"""BOSH backpressure against a real ``twistd xmppd``: a BOSH client that
floods a slow BOSH reader is slowed (its requests wait unread) instead of
being cut off, and the reader gets every message in order; a reader that
stops fetching times out, the sender goes on, and what the reader missed is
in its offline storage, in order; a bystander is not slowed meanwhile.

The buffers are small (``[c2s] max_output_buffer`` 16 KiB, ``[http]
bosh_max_input_buffer`` 8 KiB) so a few hundred messages exercise them;
``tests/http/test_bosh_backpressure.py`` checks the same in memory, with the
byte bounds themselves."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from boshclient import BoshClient, login  # noqa: E402
from conftest import PASSWORD  # noqa: E402
from rawxmpp import NS_CLIENT, q  # noqa: E402

INACTIVITY = 3
MESSAGE = q(NS_CLIENT, "message")


@pytest.fixture(scope="module")
def server(make_xmppd_module):
    srv = make_xmppd_module({"server": {"components": "disco ping roster presence messaging "
                                                      "offline",
                                        "max_stanza_size": 8192},
                             "c2s": {"max_output_buffer": 16384},
                             "http": {"bosh_max_input_buffer": 8192,
                                      "bosh_max_inactivity": INACTIVITY}}, users=())
    deadline = time.monotonic() + 10
    while True:
        try:
            BoshClient(srv.host, srv.http_port).post_raw(b"", method="GET")
            return srv
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def people(server, *names: str) -> dict[str, str]:
    tag = uuid.uuid4().hex[:6]
    jids = {name: f"{name}{tag}@localhost" for name in names}
    server.addusers(jids.values())
    return jids


def chat(to: str, ident: str) -> str:
    return (f"<message xmlns='jabber:client' to='{to}' type='chat' id='{ident}'>"
            f"<body>message {ident} {'x' * 40}</body></message>")


def take_messages(client: BoshClient) -> list[str]:
    """The ids of the messages the client received since the last call."""
    with client._cond:
        ids = [e.get("id") for e in client.elements if e.tag == MESSAGE]
        client.elements[:] = [e for e in client.elements if e.tag != MESSAGE]
    return ids


def available(client: BoshClient) -> None:
    client.send("<presence xmlns='jabber:client'/>")
    client.next_element(lambda e: e.tag == q(NS_CLIENT, "presence"), what="own presence")


def flood(sender: BoshClient, to: str, total: int, batch: int, prefix: str) -> threading.Thread:
    """Send ``total`` messages in requests of ``batch``, as fast as the
    request window allows, from a thread (a request slot may take a while)."""
    def run():
        for start in range(0, total, batch):
            sender.send(*(chat(to, f"{prefix}{i}") for i in range(start, start + batch)))
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_slow_bosh_reader_gets_every_message_in_order_and_its_sender_is_slowed(server):
    who = people(server, "alice", "bob", "carol")
    alice = login(server.host, server.http_port, who["alice"], PASSWORD, "web", timeout=60)
    bob = login(server.host, server.http_port, who["bob"], PASSWORD, "web")
    carol = login(server.host, server.http_port, who["carol"], PASSWORD, "web")
    try:
        available(bob)
        bob.stop_polling()
        time.sleep(0.3)
        total = 480
        sender = flood(alice, who["bob"] + "/web", total, 40, "m")
        got: list[str] = []
        pings: list[float] = []
        deadline = time.monotonic() + 120
        while len(got) < total and time.monotonic() < deadline:
            with bob._cond:
                idle = bob._inflight == 0
            if idle:
                bob.send()  # one fetch at a time, a few per second: a slow reader
            time.sleep(0.15)
            got += take_messages(bob)
            if len(pings) < 5 and len(got) > total // 4:
                t0 = time.monotonic()
                pong = carol.iq("<ping xmlns='urn:xmpp:ping'/>", "get", "localhost")
                assert pong.get("type") == "result"
                pings.append(time.monotonic() - t0)
        sender.join(30)
        assert got == [f"m{i}" for i in range(total)], (len(got), bob.describe())
        assert not sender.is_alive()
        # neither was cut off, and both still work
        assert alice.terminated is None and not alice.errors, alice.describe()
        assert bob.terminated is None, bob.describe()
        assert alice.iq("<ping xmlns='urn:xmpp:ping'/>", "get", "localhost").get("type") == \
            "result"
        # the bystander was not slowed
        assert pings and max(pings) < 2.0, pings
        assert "stream error" not in server.log_text()
    finally:
        for c in (alice, bob, carol):
            c.close()


def test_a_reader_that_stops_fetching_times_out_and_the_sender_goes_on(server):
    who = people(server, "alice", "bob", "carol")
    alice = login(server.host, server.http_port, who["alice"], PASSWORD, "web", timeout=60)
    bob = login(server.host, server.http_port, who["bob"], PASSWORD, "web")
    carol = login(server.host, server.http_port, who["carol"], PASSWORD, "web")
    try:
        available(bob)
        bob.stop_polling()  # its last poll takes the first messages; then nothing more
        total = 240
        t0 = time.monotonic()
        sender = flood(alice, who["bob"], total, 40, "d")
        time.sleep(1)
        assert carol.iq("<ping xmlns='urn:xmpp:ping'/>", "get", "localhost").get("type") == \
            "result"
        sender.join(60)
        assert not sender.is_alive(), alice.describe()
        # alice was held back until bob's session ended, not cut off
        assert time.monotonic() - t0 >= INACTIVITY - 1
        assert alice.terminated is None and not alice.errors, alice.describe()
        assert "no request for 3 s (" + who["bob"] + "/web): session ended" in server.log_text()
        fetched = take_messages(bob)
        # what bob did not fetch is in his offline storage, in order
        again = login(server.host, server.http_port, who["bob"], PASSWORD, "later")
        try:
            again.send("<presence xmlns='jabber:client'/>")
            offline: list[str] = []
            deadline = time.monotonic() + 30
            while len(fetched) + len(offline) < total and time.monotonic() < deadline:
                time.sleep(0.1)
                offline += take_messages(again)
        finally:
            again.close()
        assert fetched + offline == [f"d{i}" for i in range(total)]
    finally:
        for c in (alice, bob, carol):
            c.close()
