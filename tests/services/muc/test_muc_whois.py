"""Non-anonymous and semi-anonymous rooms (xmppd/services/muc/features/whois.py):
XEP-0045 §7.2.3-4 — who sees real JIDs, status 100 on joining a
non-anonymous room, 172/173 when it changes (§10.2.1)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from muc_harness_helpers import (  # noqa: E402
    codes, configure, create, item, join, make_harness, messages, presences, room_jid)


def test_in_a_non_anonymous_room_everyone_sees_real_jids_and_joiners_get_100():
    h = make_harness(default_whois="anyone")
    alice, bob = h.login("alice@localhost/r"), h.login("bob@localhost/r")
    got = join(alice, "open", "Alice")
    assert codes(presences(got)[-1]) == {"100", "110", "201"}
    configure(alice, "open", {})
    got = join(bob, "open", "Bob")
    (alice_seen,) = [p for p in presences(got) if p["from"] == f"{room_jid('open')}/Alice"]
    assert item(alice_seen)["jid"] == "alice@localhost/r"
    assert codes(presences(got)[-1]) == {"100", "110"}


def test_making_the_room_semi_anonymous_says_173():
    h = make_harness(default_whois="anyone")
    alice, bob = h.login("alice@localhost/r"), h.login("bob@localhost/r")
    create(alice, "open", "Alice")
    join(bob, "open", "Bob")
    configure(alice, "open", {"muc#roomconfig_whois": "moderators"})
    (note,) = messages(bob.take())
    assert "173" in codes(note)
    carol = h.login("carol@localhost/r")
    got = join(carol, "open", "Carol")
    others = [p for p in presences(got) if p["from"] != f"{room_jid('open')}/Carol"]
    assert all(item(p).getAttribute("jid") is None for p in others)
