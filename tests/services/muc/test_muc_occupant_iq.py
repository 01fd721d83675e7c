"""Iqs to occupants (xmppd/services/muc/features/occupant_iq.py): XEP-0410
self-ping answered by the room, not-acceptable for a session that is not
joined; other iqs are relayed between occupants from their room JIDs."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from muc_harness_helpers import (  # noqa: E402
    create, join, make_harness, room_jid, the_error)

from xmppd import ns  # noqa: E402

RJ = room_jid("ping")


def room():
    h = make_harness()
    alice, bob = h.login("alice@localhost/r"), h.login("bob@localhost/r")
    create(alice, "ping", "Alice")
    join(bob, "ping", "Bob")
    alice.take()
    return h, alice, bob


def test_a_self_ping_is_answered_by_the_room():
    h, alice, bob = room()
    bob.feed(f"<iq type='get' id='sp' to='{RJ}/Bob'><ping xmlns='{ns.PING}'/></iq>")
    (reply,) = bob.take()
    assert (reply["type"], reply["id"], reply["from"]) == ("result", "sp", f"{RJ}/Bob")
    assert alice.take() == []


def test_a_self_ping_from_a_session_not_joined_is_not_acceptable():
    """XEP-0410 §3: the client must rejoin."""
    h, alice, bob = room()
    carol = h.login("carol@localhost/r")
    carol.feed(f"<iq type='get' id='sp' to='{RJ}/Bob'><ping xmlns='{ns.PING}'/></iq>")
    assert the_error(carol.take(), "iq") == "not-acceptable"


def test_an_iq_to_another_occupant_is_relayed_from_the_senders_room_jid():
    h, alice, bob = room()
    bob.feed(f"<iq type='get' id='v1' to='{RJ}/Alice'><query xmlns='jabber:iq:version'/></iq>")
    (relayed,) = alice.take()
    assert relayed["from"] == f"{RJ}/Bob" and relayed["to"] == "alice@localhost/r"
    alice.feed(f"<iq type='result' id='{relayed['id']}' to='{RJ}/Bob'>"
               f"<query xmlns='jabber:iq:version'><name>x</name></query></iq>")
    (answer,) = bob.take()
    assert (answer["type"], answer["id"], answer["from"]) == ("result", "v1", f"{RJ}/Alice")


def test_the_room_advertises_self_ping_optimisation():
    h, alice, bob = room()
    bob.feed(f"<iq type='get' id='d' to='{RJ}'><query xmlns='{ns.DISCO_INFO}'/></iq>")
    (reply,) = bob.take()
    assert ns.MUC_SELF_PING in {f["var"] for f in
                                reply.firstChildElement().elements(ns.DISCO_INFO, "feature")}
