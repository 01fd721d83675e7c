"""Room discovery (xmppd/services/muc/features/info.py, with name.py):
XEP-0045 §6.4 — disco#info with the conference identity named after the
room, the muc features every feature module adds, the muc#roominfo form
(description, occupants); §6.5 disco#items of occupants to those allowed."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from muc_harness_helpers import (  # noqa: E402
    create, join, make_harness, room_jid)

from xmppd import ns  # noqa: E402

RJ = room_jid("about")


def info(session, node=None):
    node_attr = f" node='{node}'" if node else ""
    session.feed(f"<iq type='get' id='d' to='{RJ}'><query xmlns='{ns.DISCO_INFO}'{node_attr}/></iq>")
    (reply,) = session.take()
    return reply


def room(fields=None):
    h = make_harness()
    alice, bob = h.login("alice@localhost/r"), h.login("bob@localhost/r")
    create(alice, "about", "Alice", fields)
    join(bob, "about", "Bob")
    alice.take()
    return h, alice, bob


def test_disco_info_has_the_identity_features_and_room_info_form():
    h, alice, bob = room({"muc#roomconfig_roomname": "About Us",
                          "muc#roomconfig_roomdesc": "What we do"})
    reply = info(bob)
    assert reply["type"] == "result"
    query = reply.firstChildElement()
    identities = [(i["category"], i["type"], i.getAttribute("name"))
                  for i in query.elements(ns.DISCO_INFO, "identity")]
    assert identities == [("conference", "text", "About Us")]
    features = {f["var"] for f in query.elements(ns.DISCO_INFO, "feature")}
    assert {ns.MUC, "muc_public", "muc_open", "muc_unmoderated", "muc_semianonymous",
            "muc_unsecured", "muc_temporary"} <= features
    x = next(query.elements(ns.DATA_FORMS, "x"))
    assert x["type"] == "result"
    values = {f["var"]: [str(v) for v in f.elements(ns.DATA_FORMS, "value")]
              for f in x.elements(ns.DATA_FORMS, "field")}
    assert values["FORM_TYPE"] == [ns.MUC_ROOMINFO]
    assert values["muc#roominfo_description"] == ["What we do"]
    assert values["muc#roominfo_occupants"] == ["2"]


def test_a_room_without_a_name_is_named_after_its_localpart():
    h, alice, bob = room()
    (identity,) = list(info(bob).firstChildElement().elements(ns.DISCO_INFO, "identity"))
    assert identity["name"] == "about"


def test_the_features_follow_the_configuration():
    h, alice, bob = room({"muc#roomconfig_moderatedroom": True,
                          "muc#roomconfig_whois": "anyone",
                          "muc#roomconfig_publicroom": False,
                          "muc#roomconfig_persistentroom": True})
    features = {f["var"] for f in info(bob).firstChildElement().elements(ns.DISCO_INFO,
                                                                          "feature")}
    assert {"muc_moderated", "muc_nonanonymous", "muc_hidden", "muc_persistent"} <= features
    assert not features & {"muc_unmoderated", "muc_semianonymous", "muc_public",
                           "muc_temporary"}


def test_an_unknown_node_is_item_not_found():
    from xmppd.testing import error_condition
    h, alice, bob = room()
    assert error_condition(info(bob, node="no-such-node")) == "item-not-found"


def items(session):
    session.feed(f"<iq type='get' id='i' to='{RJ}'><query xmlns='{ns.DISCO_ITEMS}'/></iq>")
    (reply,) = session.take()
    return sorted(i["jid"] for i in reply.firstChildElement().elements(ns.DISCO_ITEMS, "item"))


def test_disco_items_lists_the_occupants_to_an_occupant():
    h, alice, bob = room()
    assert items(bob) == [f"{RJ}/Alice", f"{RJ}/Bob"]


def test_disco_items_of_a_semi_anonymous_room_is_empty_to_a_stranger():
    h, alice, bob = room({"muc#roomconfig_publicroom": True})
    carol = h.login("carol@localhost/r")
    assert items(carol) == []


def test_disco_items_of_a_public_non_anonymous_room_lists_occupants_to_anyone():
    h, alice, bob = room({"muc#roomconfig_publicroom": True, "muc#roomconfig_whois": "anyone"})
    carol = h.login("carol@localhost/r")
    assert items(carol) == [f"{RJ}/Alice", f"{RJ}/Bob"]
