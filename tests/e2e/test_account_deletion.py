"""Account deletion end to end: ``xmppd deluser`` against a running server and
XEP-0077 removal both leave no row of the account in the SQLite file, end
its sessions, and leave no state in memory that would come back."""

from __future__ import annotations

import sqlite3
import time

import pytest

from rawxmpp import NS_CLIENT, login, q

pytestmark = pytest.mark.all_transports  # tcp, websocket, bosh (conftest)
PASSWORD = "secret123"
COMPONENTS = "disco ping roster presence messaging offline blocking private last register"


@pytest.fixture
def server(make_xmppd):
    return make_xmppd({"server": {"components": COMPONENTS}},
                      users=("alice@localhost", "bob@localhost"))


def rows_of(server, user: str) -> list[tuple]:
    """Every row whose owner is ``user``, in every table of the SQLite file."""
    db = sqlite3.connect(server.data_dir / "xmppd.sqlite3")
    try:
        found = []
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'"):
            columns = [c[1] for c in db.execute(f"PRAGMA table_info({table})")]
            if "user" in columns:
                found += [(table, *r) for r in
                          db.execute(f"SELECT * FROM {table} WHERE user = ?", (user,))]
        return found
    finally:
        db.close()


def give_alice_data(server):
    """Alice stores something in every component that keeps per-user data."""
    alice = login(server.client_host, server.client_port, "alice", PASSWORD, "pc")
    bob = login(server.client_host, server.client_port, "bob", PASSWORD, "pc")
    for payload, type_ in (
            ("<query xmlns='jabber:iq:roster'><item jid='bob@localhost' name='Bob'/></query>", "set"),
            ("<query xmlns='jabber:iq:private'><note xmlns='urn:example:n'>x</note></query>", "set"),
            ("<block xmlns='urn:xmpp:blocking'><item jid='mallory@localhost'/></block>", "set")):
        assert alice.iq(payload, type=type_).get("type") == "result"
    # Alice stays online: her logout (at deletion) writes her last activity.
    alice.send("<presence><status>here</status></presence>")
    alice.iq("<ping xmlns='urn:xmpp:ping'/>", to="localhost")
    bob.send("<message to='alice@localhost' type='chat' id='o1'><body>hi</body></message>")
    bob.iq("<ping xmlns='urn:xmpp:ping'/>", to="localhost")
    assert rows_of(server, "alice@localhost"), "the test stored nothing to delete"
    return alice, bob


def test_deluser_on_a_running_server_ends_the_sessions_and_leaves_no_row(server):
    alice, bob = give_alice_data(server)
    try:
        result = server.admin("deluser", "alice@localhost")
        assert "deleted alice@localhost" in result.stdout
        alice.expect_stream_error("not-authorized")
        assert rows_of(server, "alice@localhost") == []
        # bob's session is untouched
        assert bob.iq("<ping xmlns='urn:xmpp:ping'/>", to="localhost").get("type") == "result"
        # nothing came back from memory: a new account of the same name starts empty
        server.adduser("alice@localhost")
        again = login(server.client_host, server.client_port, "alice", PASSWORD, "pc")
        roster = again.iq("<query xmlns='jabber:iq:roster'/>")
        assert list(roster.iter(q("jabber:iq:roster", "item"))) == []
        blocked = again.iq("<blocklist xmlns='urn:xmpp:blocking'/>")
        assert list(blocked.iter(q("urn:xmpp:blocking", "item"))) == []
        again.send("<presence/>")
        again.iq("<ping xmlns='urn:xmpp:ping'/>", to="localhost")
        assert not [s for s in again.stanzas if s.tag == q(NS_CLIENT, "message")], \
            "an offline message of the deleted account was delivered to the new one"
        again.close()
    finally:
        alice.close()
        bob.close()


def test_deluser_with_the_server_stopped_leaves_no_row(server):
    alice, bob = give_alice_data(server)
    alice.close()
    bob.close()
    server.stop()
    result = server.admin("deluser", "alice@localhost")
    assert "deleted alice@localhost" in result.stdout
    assert rows_of(server, "alice@localhost") == []


def purged(server, bare: str, timeout: float = 10.0) -> list:
    """The account's rows once the purge that follows the answer is done
    (what is left after ``timeout``, if it never is)."""
    deadline = time.monotonic() + timeout
    rows = rows_of(server, bare)
    while rows and time.monotonic() < deadline:
        time.sleep(0.05)
        rows = rows_of(server, bare)
    return rows


def test_xep_0077_removal_leaves_no_row(server):
    alice, bob = give_alice_data(server)
    try:
        reply = alice.iq("<query xmlns='jabber:iq:register'><remove/></query>", type="set")
        assert reply.get("type") == "result"
        alice.expect_stream_error("not-authorized")
        # XEP-0077 §3.2: the answer and the end of the session come first,
        # the purge right after them
        assert purged(server, "alice@localhost") == []
    finally:
        alice.close()
        bob.close()


def test_deluser_of_an_unknown_account_fails_through_the_running_server(server):
    result = server.admin("deluser", "nobody@localhost", check=False)
    assert result.returncode == 1 and "does not exist" in result.stderr
