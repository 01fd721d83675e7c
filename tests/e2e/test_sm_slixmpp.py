"""XEP-0198 stream management end to end: slixmpp's ``xep_0198`` against a
real ``twistd xmppd``, its TCP connection cut by the test (a relay that aborts
both sides: no closing tag, as a phone losing its network) in the middle of
a conversation. It reconnects and resumes, and every message sent to it in
between arrives exactly once; a session that does not come back leaves its
unacknowledged messages in offline storage for the next login."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import pytest

from cutproxy import CutProxy
from slixclient import CLIENT, IMClient, TIMEOUT, close_all

COMPONENTS = "disco ping version time roster presence messaging offline carbons"


def bodies(client: IMClient) -> list[str]:
    out = []
    for e in client.inbox:
        body = e.find(CLIENT + "body")
        if e.tag == CLIENT + "message" and body is not None:
            out.append(body.text)
    return out


async def until(predicate, timeout: float = TIMEOUT, what: str = "") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.05)


async def sm_login(server, proxy: CutProxy, jid: str) -> IMClient:
    client = IMClient(jid, plugins=("xep_0198",))
    enabled = asyncio.get_running_loop().create_future()
    client.add_event_handler("sm_enabled", lambda _: enabled.done() or enabled.set_result(True))
    client.connect(proxy.host, proxy.port)
    await asyncio.wait_for(client.started, TIMEOUT)
    await asyncio.wait_for(enabled, TIMEOUT)
    return client


async def direct_login(server, jid: str) -> IMClient:
    return await IMClient.login(server, jid)


def send_chat(sender: IMClient, to: str, body: str) -> None:
    sender.send_message(mto=to, mbody=body, mtype="chat")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


@pytest.fixture
def sm_server(make_xmppd):
    return make_xmppd(server={"components": COMPONENTS}, c2s={"resume_timeout": 30})


def test_a_cut_connection_resumes_and_every_message_in_between_arrives_once(sm_server):
    run(_test_a_cut_connection_resumes_and_every_message_in_between_arrives_once(sm_server))


async def _test_a_cut_connection_resumes_and_every_message_in_between_arrives_once(sm_server):
    proxy = await CutProxy.start(sm_server.host, sm_server.port)
    alice = await sm_login(sm_server, proxy, "alice@localhost/phone")
    bob = await direct_login(sm_server, "bob@localhost/pc")
    try:
        await alice.online()
        for i in range(5):
            send_chat(bob, "alice@localhost/phone", f"before-{i}")
        await until(lambda: len(bodies(alice)) == 5, what="the first five")
        lost = asyncio.get_running_loop().create_future()
        alice.add_event_handler("disconnected", lambda _: lost.done() or lost.set_result(True))
        # mid-conversation: more on the wire as the link goes down
        for i in range(5):
            send_chat(bob, "alice@localhost/phone", f"cut-{i}")
        proxy.cut()
        await asyncio.wait_for(lost, TIMEOUT)
        for i in range(10):
            send_chat(bob, "alice@localhost/phone", f"away-{i}")
        await bob.settle()  # the server has them (no bounce came back)
        assert not [e for e in bob.inbox if e.get("type") == "error"]
        resumed = asyncio.get_running_loop().create_future()
        alice.add_event_handler("session_resumed",
                                lambda _: resumed.done() or resumed.set_result(True))
        alice.connect(proxy.host, proxy.port)
        await asyncio.wait_for(resumed, TIMEOUT)
        expected = ([f"before-{i}" for i in range(5)] + [f"cut-{i}" for i in range(5)]
                    + [f"away-{i}" for i in range(10)])
        await until(lambda: len(bodies(alice)) >= len(expected), what="every message")
        await alice.settle()
        assert bodies(alice) == expected  # each exactly once, in order
        assert "resumed from" in sm_server.log_text()
        # the resumed session is the same resource, still bound and reachable
        send_chat(bob, "alice@localhost/phone", "after")
        await until(lambda: bodies(alice)[-1:] == ["after"], what="after resumption")
    finally:
        await close_all(alice, bob)
        await proxy.close()


def test_a_session_that_does_not_come_back_leaves_its_messages_offline(make_xmppd):
    run(_test_a_session_that_does_not_come_back_leaves_its_messages_offline(make_xmppd))


async def _test_a_session_that_does_not_come_back_leaves_its_messages_offline(make_xmppd):
    server = make_xmppd(server={"components": COMPONENTS}, c2s={"resume_timeout": 2})
    proxy = await CutProxy.start(server.host, server.port)
    alice = await sm_login(server, proxy, "alice@localhost/phone")
    bob = await direct_login(server, "bob@localhost/pc")
    try:
        await alice.online()
        # no acks from here on: what alice gets stays unacknowledged
        alice.plugin["xep_0198"].send_ack = lambda: None
        alice.remove_handler("Stream Management Request Ack")
        for i in range(3):
            send_chat(bob, "alice@localhost/phone", f"unacked-{i}")
        await until(lambda: len(bodies(alice)) == 3, what="three messages")
        proxy.cut()
        for i in range(2):
            send_chat(bob, "alice@localhost/phone", f"later-{i}")
        await bob.settle()
        alice.abort()
        # the hibernation ends (2 s); the five go to offline storage
        await until(lambda: "not resumed in time" in server.log_text(), timeout=15,
                    what="the hibernation to end")
        again = await direct_login(server, "alice@localhost/phone")
        try:
            await again.online()
            await until(lambda: len(bodies(again)) >= 5, what="offline delivery")
            await again.settle()
            got = bodies(again)
            assert sorted(got) == sorted([f"unacked-{i}" for i in range(3)]
                                         + [f"later-{i}" for i in range(2)])
        finally:
            await again.close()
    finally:
        await close_all(alice, bob)
        await proxy.close()


def test_stream_management_acks_count_what_the_client_sent(sm_server):
    run(_test_stream_management_acks_count_what_the_client_sent(sm_server))


async def _test_stream_management_acks_count_what_the_client_sent(sm_server):
    proxy = await CutProxy.start(sm_server.host, sm_server.port)
    alice = await sm_login(sm_server, proxy, "alice@localhost/phone")
    try:
        for _ in range(3):
            await alice.ping_server()
        acked = asyncio.get_running_loop().create_future()
        alice.add_event_handler("stanza_acked", lambda s: None)
        plugin = alice.plugin["xep_0198"]
        plugin.request_ack()
        await until(lambda: plugin.last_ack >= plugin.seq and not plugin.unacked_queue,
                    what="the server's ack of every stanza sent")
        assert plugin.last_ack == plugin.seq
        acked.cancel()
    finally:
        await close_all(alice)
        await proxy.close()
