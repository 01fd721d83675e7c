"""Moderated rooms (xmppd/services/muc/features/moderated.py): XEP-0045
§7.4, §8.3 — newcomers without affiliation enter as visitors and may not
speak (forbidden); members keep their voice."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from muc_harness_helpers import (  # noqa: E402
    admin_set, bodies, create, item, join, make_harness, presences, say, the_error)

MOD = "muc#roomconfig_moderatedroom"


def test_a_newcomer_is_a_visitor_and_may_not_speak():
    h = make_harness()
    alice, bob = h.login("alice@localhost/r"), h.login("bob@localhost/r")
    create(alice, "mod", "Alice", {MOD: True})
    own = presences(join(bob, "mod", "Bob"))[-1]
    assert item(own)["role"] == "visitor"
    alice.take()
    say(bob, "mod", "hear me")
    assert the_error(bob.take(), "message") == "forbidden"
    assert alice.take() == []


def test_a_member_enters_with_voice():
    h = make_harness()
    alice, bob = h.login("alice@localhost/r"), h.login("bob@localhost/r")
    create(alice, "mod", "Alice", {MOD: True})
    admin_set(alice, "mod", "<item affiliation='member' jid='bob@localhost'/>")
    own = presences(join(bob, "mod", "Bob"))[-1]
    assert item(own)["role"] == "participant"
    alice.take()
    say(bob, "mod", "members speak")
    assert bodies(alice.take()) == ["members speak"]


def test_default_moderated_makes_new_rooms_moderated():
    h = make_harness(default_moderated=True)
    alice, bob = h.login("alice@localhost/r"), h.login("bob@localhost/r")
    create(alice, "mod", "Alice")
    assert item(presences(join(bob, "mod", "Bob"))[-1])["role"] == "visitor"
