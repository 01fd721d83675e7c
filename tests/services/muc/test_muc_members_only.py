"""Members-only rooms (xmppd/services/muc/features/members_only.py):
XEP-0045 §7.2.7 (registration-required), §9.4 (321 when membership is
revoked) and §10.2 (322 for non-members when the room becomes
members-only); muc_membersonly / muc_open in disco."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from muc_harness_helpers import (  # noqa: E402
    admin_set, codes, configure, create, error_type, item, join, make_harness, presences,
    room_jid, the_error, the_room)

MO = "muc#roomconfig_membersonly"
RJ = room_jid("club")


def club():
    h = make_harness()
    alice = h.login("alice@localhost/r")
    create(alice, "club", "Alice", {MO: True})
    return h, alice


def test_a_non_member_may_not_enter_registration_required():
    h, alice = club()
    bob = h.login("bob@localhost/r")
    got = join(bob, "club", "Bob")
    assert the_error(got, "presence") == "registration-required"
    assert error_type(got[0]) == "auth"
    assert alice.take() == []


def test_a_member_enters():
    h, alice = club()
    admin_set(alice, "club", "<item affiliation='member' jid='bob@localhost'/>")
    bob = h.login("bob@localhost/r")
    own = presences(join(bob, "club", "Bob"))[-1]
    assert "110" in codes(own) and item(own)["affiliation"] == "member"


def test_an_occupant_who_loses_membership_is_removed_with_321():
    h, alice = club()
    admin_set(alice, "club", "<item affiliation='member' jid='bob@localhost'/>")
    bob = h.login("bob@localhost/r")
    join(bob, "club", "Bob")
    alice.take()
    reply = admin_set(alice, "club", "<item affiliation='none' jid='bob@localhost'/>",
                      keep=True)
    assert reply["type"] == "result"
    (own,) = presences(bob.take())
    assert own["type"] == "unavailable" and codes(own) == {"110", "321"}
    assert (item(own)["affiliation"], item(own)["role"]) == ("none", "none")
    (seen,) = presences(alice.take())
    assert (seen["from"], seen["type"]) == (f"{RJ}/Bob", "unavailable")
    assert codes(seen) == {"321"}
    assert "Bob" not in the_room(h, "club").occupants


def test_making_a_room_members_only_removes_the_non_members_with_322():
    h = make_harness()
    alice = h.login("alice@localhost/r")
    create(alice, "club", "Alice")
    bob, carol = h.login("bob@localhost/r"), h.login("carol@localhost/r")
    admin_set(alice, "club", "<item affiliation='member' jid='carol@localhost'/>")
    join(bob, "club", "Bob")
    join(carol, "club", "Carol")
    carol.take()
    bob.take()
    configure(alice, "club", {MO: True})
    (own,) = presences(bob.take())
    assert own["type"] == "unavailable" and codes(own) == {"110", "322"}
    assert [p for p in presences(carol.take()) if p.getAttribute("type") == "unavailable"
            and codes(p) == {"322"}]
    assert set(the_room(h, "club").occupants) == {"Alice", "Carol"}


def test_the_room_is_muc_membersonly_in_disco():
    from xmppd import ns
    h, alice = club()
    alice.feed(f"<iq type='get' id='d' to='{RJ}'><query xmlns='{ns.DISCO_INFO}'/></iq>")
    (reply,) = alice.take()
    features = {f["var"] for f in reply.firstChildElement().elements(ns.DISCO_INFO, "feature")}
    assert "muc_membersonly" in features and "muc_open" not in features
