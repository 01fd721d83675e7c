"""Room size (xmppd/services/muc/features/max_users.py): XEP-0045 §7.2.10 —
a join beyond muc#roomconfig_maxusers (at most max_occupants) is
service-unavailable; the ceiling holds in the form too."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from muc_harness_helpers import (  # noqa: E402
    codes, configure, create, join, make_harness, presences, the_error, the_room)


def test_a_join_beyond_maxusers_is_service_unavailable():
    h = make_harness()
    alice = h.login("alice@localhost/r")
    create(alice, "small", "Alice", {"muc#roomconfig_maxusers": 2})
    bob, carol = h.login("bob@localhost/r"), h.login("carol@localhost/r")
    assert "110" in codes(presences(join(bob, "small", "Bob"))[-1])
    alice.take()
    assert the_error(join(carol, "small", "Carol"), "presence") == "service-unavailable"
    assert alice.take() == []
    assert set(the_room(h, "small").occupants) == {"Alice", "Bob"}


def test_max_occupants_holds_for_a_new_room():
    h = make_harness(max_occupants=2)
    alice = h.login("alice@localhost/r")
    create(alice, "small", "Alice")
    join(h.login("bob@localhost/r"), "small", "Bob")
    got = join(h.login("carol@localhost/r"), "small", "Carol")
    assert the_error(got, "presence") == "service-unavailable"


def test_maxusers_above_max_occupants_is_refused_and_changes_nothing():
    h = make_harness(max_occupants=5)
    alice = h.login("alice@localhost/r")
    create(alice, "small", "Alice")
    reply = configure(alice, "small", {"muc#roomconfig_maxusers": 50})
    assert reply["type"] == "error"
    assert the_room(h, "small").config["max_users"] == 5
