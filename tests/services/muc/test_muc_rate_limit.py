"""The per-occupant message rate (xmppd/services/muc/features/rate_limit.py):
message_rate per second with a burst of message_burst, on the injected
clock; beyond it the sender gets <error type='wait'><policy-violation/>
and the message reaches nobody, the room keeps working."""

from __future__ import annotations

import os
import sys

from twisted.internet import task

sys.path.insert(0, os.path.dirname(__file__))

from muc_harness_helpers import (  # noqa: E402
    bodies, create, error_type, join, make_harness, say)

from xmppd.testing import error_condition  # noqa: E402


def chatty(rate=2, burst=3):
    clock = task.Clock()
    h = make_harness(clock, message_rate=rate, message_burst=burst)
    alice, bob = h.login("alice@localhost/r"), h.login("bob@localhost/r")
    create(alice, "talk", "Alice")
    join(bob, "talk", "Bob")
    alice.take()
    return h, clock, alice, bob


def test_a_burst_passes_and_the_next_message_is_a_wait_policy_violation():
    h, clock, alice, bob = chatty(rate=2, burst=3)
    for i in range(4):
        say(bob, "talk", f"m{i}")
    got = bob.take()
    errors = [s for s in got if s.getAttribute("type") == "error"]
    assert len(errors) == 1
    assert error_condition(errors[0]) == "policy-violation"
    assert error_type(errors[0]) == "wait"
    assert bodies(alice.take()) == ["m0", "m1", "m2"]


def test_the_rate_refills_with_time():
    h, clock, alice, bob = chatty(rate=2, burst=3)
    for i in range(3):
        say(bob, "talk", f"m{i}")
    bob.take()
    alice.take()
    clock.advance(0.5)                      # one token at 2 per second
    say(bob, "talk", "again")
    say(bob, "talk", "too soon")
    assert bodies(alice.take()) == ["again"]
    clock.advance(10)
    for i in range(3):
        say(bob, "talk", f"n{i}")
    assert bodies(alice.take()) == ["n0", "n1", "n2"]      # never more than the burst back


def test_one_occupants_flood_does_not_limit_another():
    h, clock, alice, bob = chatty(rate=1, burst=1)
    say(bob, "talk", "b1")
    say(bob, "talk", "b2")
    say(alice, "talk", "a1")
    assert bodies(alice.take()) == ["b1", "a1"]
