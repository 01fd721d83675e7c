"""Room locking (xmppd/services/muc/features/locking.py): XEP-0045 §10.1 —
a new room is locked (others get item-not-found, it is not listed) until
its owner configures it or accepts the instant configuration; as Prosody's
lock.lib.lua, the lock lapses after lock_timeout (on the injected clock)."""

from __future__ import annotations

import os
import sys

from twisted.internet import task

sys.path.insert(0, os.path.dirname(__file__))

from muc_harness_helpers import (  # noqa: E402
    MUC_DOMAIN, codes, configure, error_type, instant, join, make_harness, presences,
    room_jid, the_error, the_room)

from xmppd import ns  # noqa: E402

RJ = room_jid("new")


def new_room(**options):
    clock = task.Clock()
    h = make_harness(clock, **options)
    alice = h.login("alice@localhost/r")
    got = join(alice, "new", "Alice")
    assert codes(presences(got)[-1]) == {"110", "201"}
    return h, clock, alice


def listed(session):
    session.feed(f"<iq type='get' id='i' to='{MUC_DOMAIN}'><query xmlns='{ns.DISCO_ITEMS}'/></iq>")
    (reply,) = session.take()
    return {i["jid"] for i in reply.firstChildElement().elements(ns.DISCO_ITEMS, "item")}


def test_others_get_item_not_found_while_the_room_is_locked():
    h, clock, alice = new_room()
    bob = h.login("bob@localhost/r")
    got = join(bob, "new", "Bob")
    assert the_error(got, "presence") == "item-not-found"
    assert error_type(got[0]) == "cancel"
    assert alice.take() == []


def test_a_locked_room_is_not_listed_and_its_disco_info_is_item_not_found_to_others():
    h, clock, alice = new_room()
    bob = h.login("bob@localhost/r")
    assert RJ not in listed(bob)
    bob.feed(f"<iq type='get' id='d' to='{RJ}'><query xmlns='{ns.DISCO_INFO}'/></iq>")
    assert the_error(bob.take(), "iq") == "item-not-found"


def test_accepting_the_instant_room_unlocks_it():
    h, clock, alice = new_room()
    assert instant(alice, "new")["type"] == "result"
    bob = h.login("bob@localhost/r")
    assert "110" in codes(presences(join(bob, "new", "Bob"))[-1])
    assert RJ in listed(bob)


def test_submitting_a_configuration_unlocks_it():
    h, clock, alice = new_room()
    configure(alice, "new", {"muc#roomconfig_roomname": "New"})
    bob = h.login("bob@localhost/r")
    assert "110" in codes(presences(join(bob, "new", "Bob"))[-1])


def test_the_lock_lapses_after_lock_timeout_as_in_prosody():
    h, clock, alice = new_room(lock_timeout=60)
    bob = h.login("bob@localhost/r")
    clock.advance(59)
    assert the_error(join(bob, "new", "Bob"), "presence") == "item-not-found"
    clock.advance(2)
    assert "110" in codes(presences(join(bob, "new", "Bob"))[-1])


def test_with_locking_off_a_new_room_is_open_at_once():
    h, clock, alice = new_room(locking=False)
    bob = h.login("bob@localhost/r")
    assert "110" in codes(presences(join(bob, "new", "Bob"))[-1])


def test_cancelling_the_configuration_of_a_locked_room_destroys_it():
    """XEP-0045 §10.1.3 (Prosody only answers; xmppd destroys, as the XEP says)."""
    h, clock, alice = new_room()
    alice.feed(f"<iq type='set' id='c' to='{RJ}'><query xmlns='{ns.MUC_OWNER}'>"
               f"<x xmlns='{ns.DATA_FORMS}' type='cancel'/></query></iq>")
    got = alice.take()
    assert [s["type"] for s in got if s.name == "iq"] == ["result"]
    assert [p["type"] for p in presences(got)] == ["unavailable"]
    assert the_room(h, "new") is None
