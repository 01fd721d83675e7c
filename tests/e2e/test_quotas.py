"""Quotas in bytes, end to end over real sockets against ``twistd xmppd``
(issue 10): what a roster, an offline store and a session's directed
presence may hold is bounded in bytes or entries, each refusal is a clear
stanza error, and offline delivery at login holds little whatever is stored.

The caps are small so the tests stay fast; the component tests pin the
defaults and the exact boundaries.
"""

from __future__ import annotations

import time

import pytest
from rawxmpp import (
    NS_CLIENT,
    RawClient,
    dump,
    login,
    q,
    stanza_error_condition,
)

COMPONENTS = "disco ping roster presence messaging offline"
PASSWORD = "secret123"
USERS = ("alice@localhost", "bob@localhost", "carol@localhost", "dave@localhost")

ROSTER_MAX_SIZE = 500_000  # two items of 200 KB, not three
OFFLINE_MAX_SIZE = 600_000  # two messages of 250 KB and a little more
MAX_DIRECTED = 3
NS_ROSTER = "jabber:iq:roster"
NS_DELAY = "urn:xmpp:delay"


@pytest.fixture(scope="module")
def server(make_xmppd_module):
    return make_xmppd_module({
        "server": {"components": COMPONENTS},
        "component:roster": {"max_size": ROSTER_MAX_SIZE},
        "component:offline": {"max_size": OFFLINE_MAX_SIZE},
        "component:presence": {"max_directed": MAX_DIRECTED},
    }, users=USERS)


def connect(server, user: str, resource: str | None = None) -> RawClient:
    return login(server.host, server.port, user, PASSWORD, resource=resource)


def big_item(jid: str) -> str:
    """A roster item of about 200 KB: 200 distinct groups of 1 000 bytes."""
    groups = "".join(f"<group>{n:04d}{'g' * 996}</group>" for n in range(200))
    return f"<item jid='{jid}'>{groups}</item>"


def messages(client: RawClient) -> list:
    return [s for s in client.stanzas if s.tag == q(NS_CLIENT, "message")]


def take_messages(client: RawClient, count: int, timeout: float = 30) -> list:
    """Wait until ``count`` messages arrived; return them, in order."""
    client.wait_for(lambda: len(messages(client)) >= count, timeout,
                    f"{count} messages")
    got = messages(client)
    for stanza in got:
        client.stanzas.remove(stanza)
    return got


def send_message(client: RawClient, to: str, mid: str, size: int) -> None:
    client.send(f"<message to='{to}' id='{mid}' type='chat'><body>{'x' * size}</body></message>")


def error_reply(client: RawClient, name: str, stanza_id: str, timeout: float = 10):
    return client.next_stanza(lambda s: s.tag == q(NS_CLIENT, name) and s.get("id") == stanza_id
                              and s.get("type") == "error", timeout,
                              f"<{name} type='error' id='{stanza_id}'/>")


def test_roster_items_of_200_kb_are_refused_once_the_byte_cap_is_hit(server):
    """The report: 300 items of 200 KB each were accepted. Past max_size the
    set is refused with not-allowed and the roster keeps what it had."""
    with connect(server, "alice@localhost", "roster") as alice:
        for n in range(2):
            result = alice.iq(f"<query xmlns='{NS_ROSTER}'>{big_item(f'c{n}@localhost')}</query>",
                              type="set", timeout=20)
            assert result.get("type") == "result", dump(result)
        refused = alice.iq(f"<query xmlns='{NS_ROSTER}'>{big_item('c2@localhost')}</query>",
                           type="set", timeout=20)
        assert stanza_error_condition(refused) == ("cancel", "not-allowed")
        text = refused.findtext(f"{q(NS_CLIENT, 'error')}/"
                                f"{{urn:ietf:params:xml:ns:xmpp-stanzas}}text")
        assert text and "bytes" in text
        roster = alice.iq(f"<query xmlns='{NS_ROSTER}'/>", timeout=20)
        jids = [i.get("jid") for i in roster.iter(q(NS_ROSTER, "item"))]
        assert sorted(jids) == ["c0@localhost", "c1@localhost"]
        # A small item still fits beside them: the cap is in bytes, not items.
        small = alice.iq(f"<query xmlns='{NS_ROSTER}'><item jid='d@localhost'/></query>",
                         type="set")
        assert small.get("type") == "result", dump(small)


def test_offline_messages_beyond_the_byte_cap_bounce_and_the_stored_ones_arrive(server):
    """Messages to an offline user are stored up to max_size; the one that
    would pass it is bounced with service-unavailable (XEP-0160), and every
    message stored is delivered, in order, at the next login."""
    with connect(server, "carol@localhost", "phone") as carol:
        send_message(carol, "bob@localhost", "big0", 250_000)
        send_message(carol, "bob@localhost", "big1", 250_000)
        send_message(carol, "bob@localhost", "big2", 250_000)  # past 600 000 bytes
        bounce = error_reply(carol, "message", "big2", timeout=20)
        assert stanza_error_condition(bounce) == ("cancel", "service-unavailable")
        assert bounce.get("from") == "bob@localhost"
        send_message(carol, "bob@localhost", "small", 1000)  # still fits
        carol.send("<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>")
        carol.next_stanza(lambda s: s.get("id") == "sync", what="ping result")
        assert [s for s in carol.stanzas if s.get("type") == "error"] == []

    with connect(server, "bob@localhost", "pc") as bob:
        bob.send("<presence/>")
        got = take_messages(bob, 3)
        assert [m.get("id") for m in got] == ["big0", "big1", "small"]
        assert [len(m.findtext(q(NS_CLIENT, "body"))) for m in got] == [250_000, 250_000, 1000]
        assert all(m.find(q(NS_DELAY, "delay")) is not None for m in got)
        bob.send("<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>")
        bob.next_stanza(lambda s: s.get("id") == "sync", what="ping result")
        assert messages(bob) == []

    with connect(server, "bob@localhost", "again") as bob:  # delivered once: gone
        bob.send("<presence/>")
        bob.send("<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>")
        bob.next_stanza(lambda s: s.get("id") == "sync", what="ping result")
        time.sleep(0.5)
        bob.poll()
        assert messages(bob) == []


def test_directed_presence_beyond_the_cap_gets_resource_constraint(server):
    """The report: 100 000 directed-presence targets per session. Past
    max_directed a new target gets a presence error resource-constraint
    (wait) and hears nothing; a known target still does."""
    with connect(server, "dave@localhost", "watch") as watcher, \
            connect(server, "alice@localhost", "rooms") as alice:
        alice.send("<presence/>")
        for n in range(MAX_DIRECTED):
            alice.send(f"<presence to='room{n}@localhost/alice' id='d{n}'/>")
        alice.send(f"<presence to='{watcher.jid}' id='over'/>")
        reply = error_reply(alice, "presence", "over")
        assert stanza_error_condition(reply) == ("wait", "resource-constraint")
        assert reply.get("from") == watcher.jid
        # Ending one directed presence frees its place.
        alice.send("<presence to='room0@localhost/alice' type='unavailable'/>")
        alice.send(f"<presence to='{watcher.jid}' id='now'><status>hello</status></presence>")
        got = watcher.next_stanza(lambda s: s.tag == q(NS_CLIENT, "presence")
                                  and s.get("from") == alice.jid, what="alice's presence")
        assert got.findtext(q(NS_CLIENT, "status")) == "hello", dump(got)
        assert [s for s in alice.stanzas if s.get("type") == "error"] == []


def test_offline_delivery_waits_for_a_client_that_does_not_read(make_xmppd):
    """The report: 400 stored messages of 250 KB each took 480 MiB at login,
    read 500 at a time and all written to the client at once. Delivery now
    reads small batches and hands over each message once the client has
    read the one before. A client that reads nothing for a while is waited
    for — before, its output buffer passed its bound and it was disconnected
    (policy-violation) — and then gets every message, in order, once."""
    count, size = 30, 250_000
    server = make_xmppd({"server": {"components": COMPONENTS},
                         "component:offline": {"max_size": 10 << 20}},
                        users=("alice@localhost", "bob@localhost"))
    with connect(server, "alice@localhost", "phone") as alice:
        for n in range(count):
            send_message(alice, "bob@localhost", f"m{n}", size)
        alice.send("<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>")
        alice.next_stanza(lambda s: s.get("id") == "sync", timeout=60, what="ping result")
        assert [s for s in alice.stanzas if s.get("type") == "error"] == []

    with connect(server, "bob@localhost", "slow") as bob:
        bob.send("<presence/>")
        time.sleep(3)  # reads nothing: the server must wait, not buffer 7.5 MB
        got = take_messages(bob, count, timeout=60)
        assert [m.get("id") for m in got] == [f"m{n}" for n in range(count)]
        assert all(len(m.findtext(q(NS_CLIENT, "body"))) == size for m in got)
        assert not bob.eof

    with connect(server, "bob@localhost", "again") as again:  # delivered once: gone
        again.send("<presence/>")
        again.send("<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>")
        again.next_stanza(lambda s: s.get("id") == "sync", what="ping result")
        time.sleep(0.5)
        again.poll()
        assert messages(again) == []
