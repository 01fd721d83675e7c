"""Room registration and reserved nicks (xmppd/services/muc/features/register.py):
XEP-0045 §7.10 (the muc#register form, conflict, bad-request), §7.12
(disco node x-roomuser-item) and reserved nicks refused to others (§7.2.9,
§7.6), with Prosody 0.12's register.lib.lua rules (who may register)."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from muc_harness_helpers import (  # noqa: E402
    admin_set, codes, create, join, make_harness, presences, room_jid, the_error, the_room)

from xmppd import ns  # noqa: E402
from xmppd.testing import error_condition  # noqa: E402

RJ = room_jid("reg")


def reg_iq(session, inner, kind="set", iq_id="r1"):
    session.feed(f"<iq type='{kind}' id='{iq_id}' to='{RJ}'>"
                 f"<query xmlns='{ns.REGISTER}'>{inner}</query></iq>")
    got = [s for s in session.take() if s.name == "iq"]
    assert len(got) == 1, [s.toXml() for s in got]
    return got[0]


def nick_form(nick, form_type=ns.MUC_REGISTER):
    return (f"<x xmlns='{ns.DATA_FORMS}' type='submit'>"
            f"<field var='FORM_TYPE'><value>{form_type}</value></field>"
            f"<field var='muc#register_roomnick'><value>{nick}</value></field></x>")


def room(members=("bob@localhost",)):
    h = make_harness()
    alice = h.login("alice@localhost/r")
    create(alice, "reg", "Alice")
    for m in members:
        admin_set(alice, "reg", f"<item affiliation='member' jid='{m}'/>")
    return h, alice


def test_a_member_gets_the_registration_form():
    h, alice = room()
    bob = h.login("bob@localhost/r")
    reply = reg_iq(bob, "", kind="get")
    assert reply["type"] == "result"
    x = next(reply.firstChildElement().elements(ns.DATA_FORMS, "x"))
    fields = {f["var"]: f for f in x.elements(ns.DATA_FORMS, "field")}
    assert [str(v) for v in fields["FORM_TYPE"].elements(ns.DATA_FORMS, "value")] == [
        ns.MUC_REGISTER]
    assert next(fields["muc#register_roomnick"].elements(ns.DATA_FORMS, "required"), None) \
        is not None


def test_registering_reserves_the_nick_and_disco_and_the_form_tell_it():
    h, alice = room()
    bob = h.login("bob@localhost/r")
    assert reg_iq(bob, nick_form("Bobby"))["type"] == "result"
    reply = reg_iq(bob, "", kind="get", iq_id="r2")
    query = reply.firstChildElement()
    assert next(query.elements(ns.REGISTER, "registered"), None) is not None
    assert [str(u) for u in query.elements(ns.REGISTER, "username")] == ["Bobby"]
    bob.feed(f"<iq type='get' id='n' to='{RJ}'><query xmlns='{ns.DISCO_INFO}' "
             f"node='x-roomuser-item'/></iq>")
    (info,) = bob.take()
    (identity,) = list(info.firstChildElement().elements(ns.DISCO_INFO, "identity"))
    assert (identity["category"], identity["type"], identity["name"]) == (
        "conference", "text", "Bobby")


def test_a_reserved_nick_is_conflict_to_anyone_else_joining_or_changing_to_it():
    h, alice = room()
    bob = h.login("bob@localhost/r")
    reg_iq(bob, nick_form("Bobby"))
    carol = h.login("carol@localhost/r")
    assert the_error(join(carol, "reg", "Bobby"), "presence") == "conflict"
    join(carol, "reg", "Carol")
    carol.feed(f"<presence to='{RJ}/Bobby'/>")
    assert the_error(carol.take(), "presence") == "conflict"
    assert "110" in codes(presences(join(bob, "reg", "Bobby"))[-1])


def test_a_nick_reserved_by_another_is_conflict():
    h, alice = room(members=("bob@localhost", "carol@localhost"))
    bob, carol = h.login("bob@localhost/r"), h.login("carol@localhost/r")
    reg_iq(bob, nick_form("Bobby"))
    assert error_condition(reg_iq(carol, nick_form("Bobby"))) == "conflict"


def test_a_nick_in_use_by_another_occupant_is_conflict():
    h, alice = room()
    bob = h.login("bob@localhost/r")
    assert error_condition(reg_iq(bob, nick_form("Alice"))) == "conflict"


def test_a_registration_without_a_form_or_of_another_form_type_is_bad_request():
    h, alice = room()
    bob = h.login("bob@localhost/r")
    assert error_condition(reg_iq(bob, "")) == "bad-request"
    assert error_condition(reg_iq(bob, nick_form("B", form_type="urn:other"))) == "bad-request"
    assert the_room(h, "reg").affiliation_data.get("bob@localhost", {}).get("nick") is None


def test_an_outcast_may_not_register():
    h, alice = room()
    admin_set(alice, "reg", "<item affiliation='outcast' jid='eve@localhost'/>")
    eve = h.login("eve@localhost/r")
    assert error_condition(reg_iq(eve, "", kind="get")) == "forbidden"
    assert error_condition(reg_iq(eve, nick_form("Eve"))) == "forbidden"


def test_an_unaffiliated_account_may_not_register_as_in_prosody():
    """Prosody 0.12: allow_unaffiliated_register defaults to false, so
    registration-required, even in an open room."""
    h, alice = room(members=())
    dave = h.login("dave@localhost/r")
    assert error_condition(reg_iq(dave, "", kind="get")) == "registration-required"
    assert error_condition(reg_iq(dave, nick_form("Dave"))) == "registration-required"
    assert "dave@localhost" not in the_room(h, "reg").affiliations


def test_removing_the_registration_drops_membership_and_the_reserved_nick():
    h, alice = room()
    bob = h.login("bob@localhost/r")
    reg_iq(bob, nick_form("Bobby"))
    assert reg_iq(bob, "<remove/>", iq_id="r3")["type"] == "result"
    r = the_room(h, "reg")
    assert "bob@localhost" not in r.affiliations
    assert r.affiliation_data.get("bob@localhost", {}).get("nick") is None


def test_the_room_advertises_registration():
    h, alice = room()
    alice.feed(f"<iq type='get' id='d' to='{RJ}'><query xmlns='{ns.DISCO_INFO}'/></iq>")
    (reply,) = alice.take()
    assert ns.REGISTER in {f["var"] for f in
                           reply.firstChildElement().elements(ns.DISCO_INFO, "feature")}
