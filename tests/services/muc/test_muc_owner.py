"""The owners' protocol (xmppd/services/muc/features/owner.py): XEP-0045
§10.1-10.2 (the configuration form, instant rooms, cancelling, status 104
and 172 after a change), §10.9 (destroying a room with a reason and an
alternate venue); non-owners get forbidden; a form with a value of the
wrong type is refused and changes nothing."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from muc_harness_helpers import (  # noqa: E402
    codes, config_form, configure, create, error_type, instant, item, join, make_harness,
    messages, muc_x, owner_set, presences, room_jid, the_room)

from xmppd import ns  # noqa: E402
from xmppd.testing import error_condition  # noqa: E402

RJ = room_jid("cfg")


def room():
    h = make_harness()
    alice, bob = h.login("alice@localhost/r"), h.login("bob@localhost/r")
    create(alice, "cfg", "Alice")
    join(bob, "cfg", "Bob")
    alice.take()
    return h, alice, bob


def get_form(session):
    session.feed(f"<iq type='get' id='g' to='{RJ}'><query xmlns='{ns.MUC_OWNER}'/></iq>")
    (reply,) = session.take()
    return reply


def form_values(reply):
    x = next(reply.firstChildElement().elements(ns.DATA_FORMS, "x"))
    return x, {f["var"]: [str(v) for v in f.elements(ns.DATA_FORMS, "value")]
               for f in x.elements(ns.DATA_FORMS, "field") if f.getAttribute("var")}


def test_the_owner_gets_the_configuration_form_with_the_current_values():
    h, alice, bob = room()
    configure(alice, "cfg", {"muc#roomconfig_roomname": "Config Room"})
    alice.take()
    reply = get_form(alice)
    assert reply["type"] == "result"
    x, values = form_values(reply)
    assert x["type"] == "form"
    assert values["FORM_TYPE"] == [ns.MUC_ROOMCONFIG]
    assert values["muc#roomconfig_roomname"] == ["Config Room"]
    for var in ("muc#roomconfig_persistentroom", "muc#roomconfig_publicroom",
                "muc#roomconfig_membersonly", "muc#roomconfig_moderatedroom",
                "muc#roomconfig_whois", "muc#roomconfig_roomsecret",
                "muc#roomconfig_maxusers", "muc#roomconfig_historylength",
                "muc#roomconfig_changesubject"):
        assert var in values, var
    assert values["muc#roomconfig_whois"] == ["moderators"]


def test_a_non_owner_may_neither_get_nor_submit_the_form_forbidden():
    h, alice, bob = room()
    reply = get_form(bob)
    assert error_condition(reply) == "forbidden" and error_type(reply) == "auth"
    reply = configure(bob, "cfg", {"muc#roomconfig_roomname": "Mine"})
    assert error_condition(reply) == "forbidden"
    assert the_room(h, "cfg").config["name"] != "Mine"


@pytest.mark.parametrize("var,value", [
    ("muc#roomconfig_persistentroom", "maybe"),
    ("muc#roomconfig_maxusers", "many"),
    ("muc#roomconfig_historylength", "ten"),
    ("muc#roomconfig_whois", "everyone"),
])
def test_a_value_of_the_wrong_type_is_refused_and_changes_nothing(var, value):
    h, alice, bob = room()
    before = dict(the_room(h, "cfg").config)
    reply = configure(alice, "cfg", {"muc#roomconfig_roomname": "Renamed", var: value})
    assert reply["type"] == "error"
    assert error_condition(reply) in ("bad-request", "not-acceptable")
    assert the_room(h, "cfg").config == before
    assert messages(bob.take()) == []


def test_a_form_of_another_type_is_bad_request():
    h, alice, bob = room()
    form = (f"<x xmlns='{ns.DATA_FORMS}' type='submit'><field var='FORM_TYPE'>"
            f"<value>urn:other</value></field>"
            f"<field var='muc#roomconfig_roomname'><value>X</value></field></x>")
    assert error_condition(owner_set(alice, "cfg", form)) == "bad-request"
    assert the_room(h, "cfg").config["name"] != "X"


def test_a_form_that_is_not_submitted_is_bad_request():
    h, alice, bob = room()
    form = f"<x xmlns='{ns.DATA_FORMS}' type='form'/>"
    assert error_condition(owner_set(alice, "cfg", form)) == "bad-request"


def test_a_change_tells_the_occupants_with_status_104():
    h, alice, bob = room()
    reply = configure(alice, "cfg", {"muc#roomconfig_roomname": "New name"})
    assert reply["type"] == "result"
    (note,) = messages(bob.take())
    assert (note["from"], note["type"]) == (RJ, "groupchat")
    assert "104" in codes(note)


def test_making_the_room_non_anonymous_says_172_and_shows_real_jids():
    h, alice, bob = room()
    configure(alice, "cfg", {"muc#roomconfig_whois": "anyone"})
    (note,) = messages(bob.take())
    assert "172" in codes(note)
    carol = h.login("carol@localhost/r")
    got = join(carol, "cfg", "Carol")
    others = [p for p in presences(got) if p["from"] != f"{RJ}/Carol"]
    assert {item(p)["jid"] for p in others} == {"alice@localhost/r", "bob@localhost/r"}
    assert "100" in codes(presences(got)[-1])


def test_the_instant_room_takes_the_default_configuration():
    h = make_harness(default_public=False, default_persistent=True)
    alice = h.login("alice@localhost/r")
    join(alice, "inst", "Alice")
    assert instant(alice, "inst")["type"] == "result"
    config = the_room(h, "inst").config
    assert (config["public"], config["persistent"]) == (False, True)


def test_cancelling_the_configuration_of_an_unlocked_room_changes_nothing():
    h, alice, bob = room()
    reply = owner_set(alice, "cfg", f"<x xmlns='{ns.DATA_FORMS}' type='cancel'/>")
    assert reply["type"] == "result"
    assert the_room(h, "cfg") is not None and bob.take() == []


def test_destroying_a_room_sends_each_occupant_its_own_unavailable_with_reason_and_venue():
    h, alice, bob = room()
    reply = owner_set(alice, "cfg", f"<destroy jid='elsewhere@{RJ.split('@')[1]}'>"
                                    f"<reason>Moved</reason></destroy>")
    assert reply["type"] == "result"
    got = presences(bob.take())
    # §10.9 and Prosody's room:clear(): everyone is out at once, so each
    # occupant hears only of itself (its own unavailable, with the destroy)
    assert [p["from"] for p in got] == [f"{RJ}/Bob"]
    for gone in got:
        assert gone["type"] == "unavailable"
        x = muc_x(gone)
        destroy = next(x.elements(ns.MUC_USER, "destroy"))
        assert destroy["jid"] == f"elsewhere@{RJ.split('@')[1]}"
        assert [str(r) for r in destroy.elements(ns.MUC_USER, "reason")] == ["Moved"]
        assert item(gone)["role"] == "none"
    assert the_room(h, "cfg") is None
    # the name is free again: a join creates a new room
    got = join(bob, "cfg", "Bob")
    assert "201" in codes(presences(got)[-1])


def test_destroying_tells_the_owner_too():
    h, alice, bob = room()
    alice.feed(f"<iq type='set' id='d' to='{RJ}'><query xmlns='{ns.MUC_OWNER}'>"
               f"<destroy><reason>Bye</reason></destroy></query></iq>")
    got = alice.take()
    (own,) = presences(got)
    assert own["type"] == "unavailable" and "110" in codes(own)
    assert next(muc_x(own).elements(ns.MUC_USER, "destroy"), None) is not None


def test_a_non_owner_may_not_destroy_the_room():
    h, alice, bob = room()
    reply = owner_set(bob, "cfg", "<destroy><reason>mine now</reason></destroy>")
    assert error_condition(reply) == "forbidden"
    assert the_room(h, "cfg") is not None


def test_an_owner_query_without_form_or_destroy_is_bad_request():
    h, alice, bob = room()
    assert error_condition(owner_set(alice, "cfg", "")) == "bad-request"


def test_config_form_submission_with_only_the_form_type_changes_nothing():
    h, alice, bob = room()
    before = dict(the_room(h, "cfg").config)
    reply = owner_set(alice, "cfg", config_form({}))
    assert reply["type"] == "result"
    assert the_room(h, "cfg").config == before
    assert messages(bob.take()) == []
