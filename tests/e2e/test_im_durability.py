"""What RFC 6121 state the server stored survives ``kill -9`` and restart:
rosters, subscription states, pending subscription requests, offline messages
and blocklists.

Each write is acknowledged to the client only after it is durable (a roster
push follows the store's commit), so the server is killed without a grace
period once the last acknowledgement arrives — or, for what no client sees
acknowledged (a request stored for an offline contact, an offline message),
a moment after the stanza was sent.
"""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("slixmpp")

from slixclient import IMClient, ROSTER, close_all, message, presence, roster_push  # noqa: E402

pytestmark = pytest.mark.all_transports  # tcp, websocket, bosh (conftest)
COMPONENTS = "disco ping roster presence messaging offline"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


def items(roster_result):
    return {i.get("jid"): i for i in roster_result.iterfind(f"{ROSTER}query/{ROSTER}item")}


def test_rosters_subscriptions_and_pending_requests_survive_kill_9(make_xmppd):
    server = make_xmppd({"server": {"components": COMPONENTS}},
                        users=("alice@localhost", "bob@localhost", "carol@localhost"))

    async def before_crash():
        alice = await IMClient.login(server, "alice@localhost/phone")
        bob = await IMClient.login(server, "bob@localhost/pc")
        for client in (alice, bob):
            await client.fetch_roster()
            await client.online()
        await alice.iq("set", "<query xmlns='jabber:iq:roster'><item jid='dave@elsewhere.example' "
                              "name='Dave'><group>Work</group></item></query>")
        alice.send_presence(pto="bob@localhost", ptype="subscribe")
        await bob.expect(presence("alice@localhost", "subscribe"))
        bob.send_presence(pto="alice@localhost", ptype="subscribed")
        await alice.expect(roster_push("bob@localhost", subscription="to"))
        await close_all(alice)  # alice goes offline; carol asks her while she is away
        carol = await IMClient.login(server, "carol@localhost/home")
        await carol.fetch_roster()
        carol.send_presence(pto="alice@localhost", ptype="subscribe")
        await carol.expect(roster_push("alice@localhost", ask="subscribe"))
        # carol's push acknowledges carol's side; alice's side (the request kept
        # for her) is stored as the stanza arrives there, which no client can
        # observe — as with a contact on another server. Give it a moment.
        await asyncio.sleep(1)
        server.kill()  # SIGKILL, no grace
        await close_all(bob, carol)

    async def after_restart():
        alice = await IMClient.login(server, "alice@localhost/laptop")
        try:
            roster = items(await alice.fetch_roster())
            assert roster["bob@localhost"].get("subscription") == "to"
            assert roster["dave@elsewhere.example"].get("name") == "Dave"
            assert roster["dave@elsewhere.example"].findtext(f"{ROSTER}group") == "Work"
            assert "carol@localhost" not in roster  # a request is not a roster item
            alice.send_presence()
            await alice.expect(presence("carol@localhost", "subscribe"))
            # bob's side also remembers: he still has alice as a subscriber ('from').
            bob = await IMClient.login(server, "bob@localhost/pc")
            bob_roster = items(await bob.fetch_roster())
            assert bob_roster["alice@localhost"].get("subscription") == "from"
            bob.send_presence()
            await alice.expect(presence("bob@localhost/pc"))
            await bob.close()
        finally:
            await alice.close()

    run(before_crash())
    server.start()
    run(after_restart())


@pytest.mark.parametrize("how", ["restart", "kill -9"])
def test_offline_messages_survive_a_restart_between_send_and_login(make_xmppd, how):
    server = make_xmppd({"server": {"components": COMPONENTS}},
                        users=("alice@localhost", "bob@localhost"))

    async def send():
        alice = await IMClient.login(server, "alice@localhost/phone")
        await alice.online()
        for n in range(3):
            alice.send_message(mto="bob@localhost", mbody=f"note {n}", mtype="chat")
            alice.send_message(mto="bob@localhost", mbody=f"plain {n}")
        sent = [m for m in (await alice.settle(), alice.inbox)[1]]
        assert not [e for e in sent if e.get("type") == "error"]
        # The store commits within milliseconds of the stanza; there is no
        # acknowledgement to wait for in plain XMPP, so give it a second.
        await asyncio.sleep(1)
        if how == "restart":
            server.stop()
        else:
            server.kill()
        await alice.close()

    async def login():
        bob = await IMClient.login(server, "bob@localhost/pc")
        try:
            bob.send_presence()
            got = [await bob.expect(message("alice@localhost/phone")) for _ in range(6)]
            assert [m.findtext("{jabber:client}body") for m in got] == \
                [f"{kind} {n}" for n in range(3) for kind in ("note", "plain")]
            assert [m.get("type") for m in got] == ["chat", None] * 3
            assert all(m.find("{urn:xmpp:delay}delay") is not None for m in got)
            await bob.settle()
            assert bob.received(message("alice@localhost/phone")) == []  # no duplicates
        finally:
            await bob.close()
        # Delivered means gone: a second login gets nothing.
        again = await IMClient.login(server, "bob@localhost/tablet")
        try:
            again.send_presence()
            await again.settle()
            assert again.received(message("alice@localhost/phone")) == []
        finally:
            await again.close()

    run(send())
    server.start()
    run(login())


def test_a_blocklist_survives_kill_9(make_xmppd):
    server = make_xmppd({"server": {"components": COMPONENTS + " blocking"}},
                        users=("alice@localhost", "mallory@localhost"))

    async def block():
        alice = await IMClient.login(server, "alice@localhost/phone", plugins=("xep_0191",))
        await alice.plugin["xep_0191"].block(["mallory@localhost", "spam.example"])
        server.kill()  # the result came after the write was durable
        await alice.close()

    async def after_restart():
        alice = await IMClient.login(server, "alice@localhost/phone", plugins=("xep_0191",))
        mallory = await IMClient.login(server, "mallory@localhost/x")
        try:
            await alice.online()
            blocked = await alice.plugin["xep_0191"].get_blocked()
            assert {i.get("jid") for i in blocked.xml.iter("{urn:xmpp:blocking}item")} == {
                "mallory@localhost", "spam.example"}
            mallory.send_message(mto="alice@localhost", mbody="hello?", mtype="chat")
            await mallory.expect(message("alice@localhost", type="error"))
            await alice.settle()
            assert alice.received(message("mallory@localhost/x")) == []
        finally:
            await close_all(alice, mallory)

    run(block())
    server.start()
    run(after_restart())
