"""XEP-0421 occupant ids (xmppd/services/muc/features/occupant_id.py): one
stable opaque id per account and room on presence and groupchat, the same
across nicks and sessions, different between accounts and between rooms,
and a forged <occupant-id/> from a client is replaced."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from muc_harness_helpers import (  # noqa: E402
    create, join, make_harness, messages, presences, room_jid, say)

from xmppd import ns  # noqa: E402


def oid(stanza):
    ids = [c["id"] for c in stanza.elements(ns.OCCUPANT_ID, "occupant-id")]
    assert len(ids) == 1, stanza.toXml()
    return ids[0]


def setup():
    h = make_harness()
    alice, bob = h.login("alice@localhost/r"), h.login("bob@localhost/r")
    create(alice, "ids", "Alice")
    join(bob, "ids", "Bob")
    alice.take()
    return h, alice, bob


def test_presence_and_messages_carry_one_id_per_account():
    h, alice, bob = setup()
    laptop = h.login("bob@localhost/laptop")
    join(laptop, "ids", "Bob")
    alice.take()
    say(bob, "ids", "hi")
    (m1,) = messages(alice.take())
    say(laptop, "ids", "again")
    (m2,) = messages(alice.take())
    alice.feed(f"<presence type='probe' to='{room_jid('ids')}/Bob'/>")
    (p,) = presences(alice.take())
    assert oid(m1) == oid(m2) == oid(p)
    bob.take()
    say(alice, "ids", "me")
    (mine,) = messages(bob.take())
    assert oid(mine) != oid(m1)


def test_the_id_survives_a_nick_change_and_differs_between_rooms():
    h, alice, bob = setup()
    say(bob, "ids", "x")
    before = oid(messages(alice.take())[0])
    bob.feed(f"<presence to='{room_jid('ids')}/Robert'/>")
    alice.take()
    say(bob, "ids", "y")
    assert oid(messages(alice.take())[0]) == before
    create(alice, "other", "Alice")
    join(bob, "other", "Bob")
    alice.take()
    bob.feed(f"<message type='groupchat' to='{room_jid('other')}'><body>z</body></message>")
    assert oid(messages(alice.take())[0]) != before


def test_the_id_reveals_nothing_of_the_real_jid():
    h, alice, bob = setup()
    say(bob, "ids", "x")
    value = oid(messages(alice.take())[0])
    assert "bob" not in value and "localhost" not in value


def test_a_forged_occupant_id_is_replaced():
    h, alice, bob = setup()
    say(bob, "ids", "x")
    real = oid(messages(alice.take())[0])
    bob.feed(f"<message type='groupchat' to='{room_jid('ids')}'><body>f</body>"
             f"<occupant-id xmlns='{ns.OCCUPANT_ID}' id='forged'/></message>")
    (m,) = messages(alice.take())
    assert oid(m) == real


def test_the_room_advertises_occupant_id():
    h, alice, bob = setup()
    alice.feed(f"<iq type='get' id='d' to='{room_jid('ids')}'><query xmlns='{ns.DISCO_INFO}'/></iq>")
    (reply,) = alice.take()
    features = {f["var"] for f in reply.firstChildElement().elements(ns.DISCO_INFO, "feature")}
    assert ns.OCCUPANT_ID in features
