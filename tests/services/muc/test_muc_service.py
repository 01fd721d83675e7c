"""The service (xmppd/services/muc/service.py): who may create rooms and
how many (create, max_rooms, max_rooms_per_user: XEP-0045 §10.1.1
not-allowed, policy-violation), service admins own every room, an
account's deletion drops its affiliations, and disco#items lists the
public rooms only (§6.3)."""

from __future__ import annotations

import os
import sys

from twisted.internet import defer

sys.path.insert(0, os.path.dirname(__file__))

from muc_harness_helpers import (  # noqa: E402
    MUC_DOMAIN, admin_set, codes, configure, create, item, join, make_harness, presences,
    room_jid, service, the_error, the_room)

from xmppd import ns  # noqa: E402


def listed(session):
    session.feed(f"<iq type='get' id='i' to='{MUC_DOMAIN}'><query xmlns='{ns.DISCO_ITEMS}'/></iq>")
    (reply,) = session.take()
    assert reply["type"] == "result", reply.toXml()
    return {i["jid"]: i.getAttribute("name")
            for i in reply.firstChildElement().elements(ns.DISCO_ITEMS, "item")}


def test_with_create_admins_only_a_server_admin_creates_rooms():
    h = make_harness(create="admins", server={"admins": "root@localhost"})
    bob = h.login("bob@localhost/r")
    got = join(bob, "mine", "Bob")
    assert the_error(got, "presence") == "not-allowed"
    assert the_room(h, "mine") is None
    root = h.login("root@localhost/r")
    assert "201" in codes(presences(join(root, "mine", "Root"))[-1])


def test_with_create_local_a_remote_account_may_not_create():
    h = make_harness(create="local")
    local = h.login("bob@localhost/r")
    assert "201" in codes(presences(join(local, "here", "Bob"))[-1])
    assert service(h).may_create("bob@remote.example") is False
    assert service(h).may_create("bob@localhost") is True


def test_max_rooms_per_user_is_a_policy_violation_beyond_and_freed_when_a_room_goes():
    h = make_harness(max_rooms_per_user=2)
    bob = h.login("bob@localhost/r")
    create(bob, "one", "Bob")
    create(bob, "two", "Bob")
    got = join(bob, "three", "Bob")
    assert the_error(got, "presence") == "policy-violation"
    assert the_room(h, "three") is None
    bob.feed(f"<presence type='unavailable' to='{room_jid('one')}/Bob'/>")   # temporary: gone
    bob.take()
    assert "201" in codes(presences(join(bob, "three", "Bob"))[-1])


def test_max_rooms_is_a_policy_violation_beyond():
    h = make_harness(max_rooms=1)
    alice, bob = h.login("alice@localhost/r"), h.login("bob@localhost/r")
    create(alice, "one", "Alice")
    assert the_error(join(bob, "two", "Bob"), "presence") == "policy-violation"


def test_a_server_admin_owns_every_room():
    h = make_harness(server={"admins": "root@localhost"})
    alice = h.login("alice@localhost/r")
    create(alice, "ruled", "Alice")
    root = h.login("root@localhost/r")
    own = presences(join(root, "ruled", "Root"))[-1]
    assert (item(own)["affiliation"], item(own)["role"]) == ("owner", "moderator")
    assert configure(root, "ruled", {"muc#roomconfig_roomname": "Admin's"})["type"] == "result"


def test_a_deleted_account_loses_its_affiliations():
    h = make_harness()
    alice = h.login("alice@localhost/r")
    create(alice, "aff", "Alice")
    admin_set(alice, "aff", "<item affiliation='member' jid='bob@localhost' nick='Bobby'/>")
    admin_set(alice, "aff", "<item affiliation='outcast' jid='eve@localhost'/>", iq_id="a2")
    svc = service(h)
    for user in ("bob@localhost", "eve@localhost"):
        result = svc.forget(user)
        if isinstance(result, defer.Deferred):
            results = []
            result.addBoth(results.append)
            assert results, "account-deleted handler did not finish"
    r = the_room(h, "aff")
    assert "bob@localhost" not in r.affiliations and "eve@localhost" not in r.affiliations
    assert "bob@localhost" not in r.affiliation_data
    carol = h.login("carol@localhost/r")
    assert not [s for s in join(carol, "aff", "Bobby") if s.getAttribute("type") == "error"]


def test_disco_items_lists_public_rooms_with_their_names_only():
    h = make_harness()
    alice = h.login("alice@localhost/r")
    create(alice, "open", "Alice", {"muc#roomconfig_roomname": "Open Room"})
    create(alice, "secret", "Alice", {"muc#roomconfig_publicroom": False})
    join(alice, "fresh", "Alice")                      # locked: not listed either
    bob = h.login("bob@localhost/r")
    items = listed(bob)
    assert items == {room_jid("open"): "Open Room"}


def test_the_service_identity_is_conference_text():
    h = make_harness(name="Rooms")
    bob = h.login("bob@localhost/r")
    bob.feed(f"<iq type='get' id='i' to='{MUC_DOMAIN}'><query xmlns='{ns.DISCO_INFO}'/></iq>")
    (reply,) = bob.take()
    query = reply.firstChildElement()
    identities = [(i["category"], i["type"], i.getAttribute("name"))
                  for i in query.elements(ns.DISCO_INFO, "identity")]
    assert identities == [("conference", "text", "Rooms")]
    assert ns.MUC in {f["var"] for f in query.elements(ns.DISCO_INFO, "feature")}


def test_stanzas_to_a_room_that_does_not_exist_are_item_not_found():
    h = make_harness()
    bob = h.login("bob@localhost/r")
    bob.feed(f"<message type='groupchat' to='{room_jid('none')}'><body>x</body></message>")
    assert the_error(bob.take(), "message") == "item-not-found"
    bob.feed(f"<iq type='get' id='q' to='{room_jid('none')}'><query xmlns='{ns.DISCO_INFO}'/></iq>")
    assert the_error(bob.take(), "iq") == "item-not-found"
