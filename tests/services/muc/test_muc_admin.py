"""The moderators' and admins' protocol (xmppd/services/muc/features/admin.py
and the permission rules of Room.set_role / Room.set_affiliation):
XEP-0045 §8 (kick, voice), §9 (ban, members, moderators) and §10.3-10.8
(owners, admins), who may do what to whom, and the last owner.

Where XEP-0045 says MUST and Prosody 0.12 (muc.lib.lua may_set_role,
set_affiliation) answers otherwise, these tests pin the XEP (Prosody answers
not-allowed to an actor without the privilege, lets anyone of equal or
higher rank take an admin's voice or moderation, and bans an owner who bans
himself)."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from muc_harness_helpers import (  # noqa: E402
    admin_get, admin_set, codes, create, error_type, item, join, make_harness, messages, muc_x,
    presences, room_jid, the_room)

from xmppd import ns  # noqa: E402
from xmppd.testing import error_condition  # noqa: E402

ROOM = "court"
RJ = room_jid(ROOM)
JIDS = {"Alice": "alice@localhost", "Olga": "olga@localhost", "Adam": "adam@localhost",
        "Anna": "anna@localhost", "Mary": "mary@localhost", "Nora": "nora@localhost",
        "Vic": "vic@localhost"}


class Court:
    """A room with two owners (Alice, Olga), two admins (Adam, Anna), a member
    (Mary) and two occupants without affiliation (Nora, Vic), all joined."""

    def __init__(self, **options):
        self.h = make_harness(**options)
        self.s = {}
        self.s["Alice"] = self.h.login("alice@localhost/r")
        create(self.s["Alice"], ROOM, "Alice")
        reply = admin_set(self.s["Alice"], ROOM,
                          "<item affiliation='owner' jid='olga@localhost'/>"
                          "<item affiliation='admin' jid='adam@localhost'/>"
                          "<item affiliation='admin' jid='anna@localhost'/>"
                          "<item affiliation='member' jid='mary@localhost'/>")
        assert reply["type"] == "result", reply.toXml()
        for nick in ("Olga", "Adam", "Anna", "Mary", "Nora", "Vic"):
            self.s[nick] = self.h.login(f"{JIDS[nick]}/r")
            join(self.s[nick], ROOM, nick)
        self.drain()

    def drain(self):
        for session in self.s.values():
            session.take()

    @property
    def room(self):
        return the_room(self.h, ROOM)

    def role(self, nick):
        occupant = self.room.occupants.get(nick)
        return occupant.role if occupant is not None else "none"

    def affiliation(self, nick):
        return self.room.affiliations.get(JIDS[nick], "none")

    def set(self, actor, items, iq_id="a1"):
        return admin_set(self.s[actor], ROOM, items, iq_id=iq_id, keep=True)

    def set_role(self, actor, target, role, reason=None):
        inner = f"<reason>{reason}</reason>" if reason else ""
        return self.set(actor, f"<item nick='{target}' role='{role}'>{inner}</item>")

    def set_affiliation(self, actor, target, affiliation, reason=None):
        inner = f"<reason>{reason}</reason>" if reason else ""
        return self.set(actor, f"<item jid='{JIDS[target]}' affiliation='{affiliation}'>"
                               f"{inner}</item>")


def outcome(reply):
    return "ok" if reply["type"] == "result" else error_condition(reply)


# -- kicking (§8.2) ------------------------------------------------------------

@pytest.mark.parametrize("actor,target,expected", [
    ("Alice", "Nora", "ok"),
    ("Alice", "Mary", "ok"),
    ("Alice", "Adam", "ok"),          # an owner outranks an admin (§8.2; Prosody too)
    ("Adam", "Nora", "ok"),
    ("Adam", "Mary", "ok"),
    ("Adam", "Alice", "not-allowed"),  # §8.2: admin kicking an owner
    ("Nora", "Vic", "forbidden"),      # §8 introduction: not a moderator
    ("Mary", "Nora", "forbidden"),
])
def test_who_may_kick_whom(actor, target, expected):
    court = Court()
    reply = court.set_role(actor, target, "none", reason="out")
    assert outcome(reply) == expected
    if expected == "ok":
        assert target not in court.room.occupants
    else:
        assert target in court.room.occupants
        court.s[actor].take()
        assert all(s.take() == [] for n, s in court.s.items() if n != actor)


def test_a_moderator_without_affiliation_may_not_kick_a_member():
    """§8.2: not by a moderator with a lower affiliation (not-allowed)."""
    court = Court()
    assert outcome(court.set_role("Alice", "Nora", "moderator")) == "ok"
    court.drain()
    assert outcome(court.set_role("Nora", "Mary", "none")) == "not-allowed"
    assert court.role("Mary") == "participant"


def test_a_kick_tells_the_kicked_110_307_actor_and_reason_and_the_others_307():
    court = Court()
    reply = court.set_role("Adam", "Nora", "none", reason="Avaunt")
    assert reply["type"] == "result"
    (own,) = presences(court.s["Nora"].take())
    assert (own["type"], own["from"]) == ("unavailable", f"{RJ}/Nora")
    assert codes(own) == {"110", "307"}
    it = item(own)
    assert (it["affiliation"], it["role"]) == ("none", "none")
    assert next(it.elements(ns.MUC_USER, "actor"))["nick"] == "Adam"
    assert [str(r) for r in it.elements(ns.MUC_USER, "reason")] == ["Avaunt"]
    (seen,) = presences(court.s["Vic"].take())
    assert (seen["type"], seen["from"]) == ("unavailable", f"{RJ}/Nora")
    assert codes(seen) == {"307"}
    assert item(seen).getAttribute("jid") is None           # Vic is no moderator
    (seen_by_mod,) = presences(court.s["Alice"].take())
    assert item(seen_by_mod)["jid"] == "nora@localhost/r"


def test_kicking_a_nick_not_in_the_room_is_item_not_found():
    court = Court()
    assert outcome(court.set_role("Alice", "Ghost", "none")) == "item-not-found"


# -- voice (§8.3-8.4) ----------------------------------------------------------

def test_a_moderator_revokes_and_grants_voice_and_everyone_sees_the_role():
    court = Court()
    assert outcome(court.set_role("Adam", "Nora", "visitor")) == "ok"
    assert court.role("Nora") == "visitor"
    (seen,) = presences(court.s["Vic"].take())
    assert (seen["from"], item(seen)["role"]) == (f"{RJ}/Nora", "visitor")
    (own,) = presences(court.s["Nora"].take())
    assert "110" in codes(own) and item(own)["role"] == "visitor"
    assert outcome(court.set_role("Adam", "Nora", "participant")) == "ok"
    assert court.role("Nora") == "participant"


def test_an_admin_may_not_revoke_voice_from_an_owner():
    court = Court()
    assert outcome(court.set_role("Adam", "Alice", "visitor")) == "not-allowed"
    assert court.role("Alice") == "moderator"


def test_an_admin_may_not_revoke_voice_from_another_admin():
    court = Court()
    assert outcome(court.set_role("Adam", "Anna", "visitor")) == "not-allowed"
    assert court.role("Anna") == "moderator"


def test_not_even_an_owner_may_revoke_voice_from_an_admin():
    court = Court()
    assert outcome(court.set_role("Alice", "Adam", "visitor")) == "not-allowed"
    assert court.role("Adam") == "moderator"


# -- moderator status (§9.6-9.7) -----------------------------------------------

def test_an_admin_grants_and_revokes_moderator_status():
    court = Court()
    assert outcome(court.set_role("Adam", "Mary", "moderator")) == "ok"
    assert court.role("Mary") == "moderator"
    assert outcome(court.set_role("Adam", "Mary", "participant")) == "ok"
    assert court.role("Mary") == "participant"


def test_a_moderator_who_is_not_an_admin_may_not_grant_moderator_status():
    court = Court()
    court.set_role("Alice", "Nora", "moderator")
    court.drain()
    assert outcome(court.set_role("Nora", "Vic", "moderator")) in ("forbidden", "not-allowed")
    assert court.role("Vic") == "participant"


def test_an_admin_may_not_revoke_moderator_status_from_another_admin():
    court = Court()
    assert outcome(court.set_role("Adam", "Anna", "participant")) == "not-allowed"
    assert court.role("Anna") == "moderator"


def test_gaining_moderator_status_in_a_semi_anonymous_room_resends_the_real_jids():
    court = Court()
    court.set_role("Adam", "Mary", "moderator")
    got = presences(court.s["Mary"].take())
    # her own new role, then everyone's presence again, now with real JIDs
    others = [p for p in got if p["from"] != f"{RJ}/Mary"]
    assert {p["from"] for p in others} >= {f"{RJ}/Alice", f"{RJ}/Nora"}
    assert all(item(p).getAttribute("jid") for p in others)


# -- affiliations (§9.1-9.5, §10.3-10.8) ---------------------------------------

@pytest.mark.parametrize("actor,target,affiliation,expected", [
    ("Alice", "Adam", "outcast", "ok"),
    ("Alice", "Mary", "outcast", "ok"),
    ("Alice", "Nora", "admin", "ok"),
    ("Alice", "Nora", "owner", "ok"),
    ("Alice", "Olga", "member", "ok"),      # one owner demotes another (§10.4)
    ("Adam", "Mary", "outcast", "ok"),
    ("Adam", "Nora", "outcast", "ok"),
    ("Adam", "Nora", "member", "ok"),       # §9.3 admins keep the member list
    ("Adam", "Mary", "none", "ok"),         # §9.4
    ("Adam", "Alice", "outcast", "not-allowed"),   # §9.1: admin banning an owner
    ("Adam", "Anna", "outcast", "not-allowed"),    # equal affiliation (Prosody)
    ("Adam", "Nora", "admin", "forbidden"),   # §10.6: only owners grant admin status
    ("Adam", "Nora", "owner", "forbidden"),   # §10.3: only owners modify the owner list
    ("Adam", "Anna", "member", "forbidden"),
    ("Mary", "Nora", "member", "forbidden"),  # §9 introduction: not an admin
    ("Nora", "Vic", "outcast", "forbidden"),
])
def test_who_may_change_whose_affiliation(actor, target, affiliation, expected):
    court = Court()
    before = court.affiliation(target)
    reply = court.set_affiliation(actor, target, affiliation)
    assert outcome(reply) == expected
    assert court.affiliation(target) == (affiliation if expected == "ok" else before)


def test_a_refused_request_is_not_answered_with_a_refusal_that_changes_anything():
    """Whatever the condition, a refused affiliation change changes nothing and
    tells nobody (the refusals above, checked for silence)."""
    court = Court()
    reply = court.set_affiliation("Nora", "Vic", "outcast")
    assert reply["type"] == "error"
    assert court.affiliation("Vic") == "none" and "Vic" in court.room.occupants
    court.s["Nora"].take()
    assert all(s.take() == [] for n, s in court.s.items() if n != "Nora")


def test_the_last_owner_may_not_give_up_ownership():
    court = Court()
    assert outcome(court.set_affiliation("Alice", "Olga", "none")) == "ok"
    reply = court.set_affiliation("Alice", "Alice", "admin")
    assert outcome(reply) == "conflict"
    assert error_type(reply) == "cancel"
    assert court.affiliation("Alice") == "owner"


def test_an_owner_may_give_up_ownership_when_another_owner_remains():
    court = Court()
    assert outcome(court.set_affiliation("Alice", "Alice", "admin")) == "ok"
    assert court.affiliation("Alice") == "admin"
    assert court.role("Alice") == "moderator"


def test_an_admin_banning_himself_is_conflict():
    court = Court()
    assert outcome(court.set_affiliation("Adam", "Adam", "outcast")) == "conflict"
    assert court.affiliation("Adam") == "admin"


def test_an_owner_banning_himself_is_conflict():
    court = Court()
    assert outcome(court.set_affiliation("Alice", "Alice", "outcast")) == "conflict"
    assert court.affiliation("Alice") == "owner"


def test_a_ban_removes_the_occupant_with_301_reason_and_actor_and_keeps_the_reason():
    court = Court()
    reply = court.set_affiliation("Adam", "Nora", "outcast", reason="Treason")
    assert reply["type"] == "result"
    (own,) = presences(court.s["Nora"].take())
    assert (own["type"], own["from"]) == ("unavailable", f"{RJ}/Nora")
    assert codes(own) == {"110", "301"}
    it = item(own)
    assert (it["affiliation"], it["role"]) == ("outcast", "none")
    assert [str(r) for r in it.elements(ns.MUC_USER, "reason")] == ["Treason"]
    assert next(it.elements(ns.MUC_USER, "actor"))["nick"] == "Adam"   # as Prosody
    (seen,) = presences(court.s["Vic"].take())
    assert codes(seen) == {"301"} and item(seen)["affiliation"] == "outcast"
    listing = admin_get(court.s["Adam"], ROOM, "<item affiliation='outcast'/>")
    (entry,) = list(listing.firstChildElement().elements(ns.MUC_ADMIN, "item"))
    assert entry["jid"] == "nora@localhost"
    assert [str(r) for r in entry.elements(ns.MUC_ADMIN, "reason")] == ["Treason"]
    # and the banned account cannot come back
    got = join(court.s["Nora"], ROOM, "Nora")
    assert error_condition(got[0]) == "forbidden"


def test_a_ban_drops_the_banned_accounts_reserved_nick():
    """§9.1: the service MUST remove the outcast's nickname from the list of
    registered nicknames."""
    court = Court()
    reply = court.set(
        "Alice", "<item affiliation='member' jid='vic@localhost' nick='Victor'/>")
    assert reply["type"] == "result"
    assert court.room.affiliation_data.get("vic@localhost", {}).get("nick") == "Victor"
    court.set_affiliation("Alice", "Vic", "outcast")
    assert court.room.affiliation_data.get("vic@localhost", {}).get("nick") is None
    court.drain()
    got = join(court.s["Nora"], ROOM, "Victor")       # Nora may now change to it
    assert not [s for s in got if s.getAttribute("type") == "error"]


def test_an_affiliation_change_of_someone_present_is_broadcast_with_the_new_affiliation():
    court = Court()
    court.set_affiliation("Adam", "Nora", "member")
    (seen,) = presences(court.s["Vic"].take())
    assert (seen["from"], item(seen)["affiliation"], item(seen)["role"]) == (
        f"{RJ}/Nora", "member", "participant")
    (own,) = presences(court.s["Nora"].take())
    assert "110" in codes(own) and item(own)["affiliation"] == "member"


def test_an_affiliation_change_of_someone_absent_is_announced_to_moderators():
    """As Prosody's set_affiliation (XEP-0045 Example 195): a message from the
    room, to moderators only in a semi-anonymous room."""
    court = Court()
    court.set(actor="Alice", items="<item affiliation='member' jid='zed@localhost'/>")
    (note,) = messages(court.s["Adam"].take())
    assert note["from"] == RJ
    it = item(note)
    assert (it["affiliation"], it["jid"]) == ("member", "zed@localhost")
    assert messages(court.s["Vic"].take()) == []


def test_a_request_with_one_refused_item_applies_none_of_them():
    """§9.2: 'the service SHOULD NOT apply any of the requested changes'."""
    court = Court()
    reply = court.set("Adam", "<item affiliation='outcast' jid='nora@localhost'/>"
                              "<item affiliation='outcast' jid='alice@localhost'/>")
    assert reply["type"] == "error"
    assert court.affiliation("Nora") == "none" and "Nora" in court.room.occupants


def test_an_item_with_both_role_and_affiliation_is_bad_request():
    court = Court()
    reply = court.set("Alice", "<item nick='Nora' jid='nora@localhost' role='visitor' "
                               "affiliation='member'/>")
    assert outcome(reply) == "bad-request"
    assert court.role("Nora") == "participant" and court.affiliation("Nora") == "none"


def test_a_full_jid_in_an_affiliation_item_is_jid_malformed():
    """As Prosody: 'Bare JID expected, got full JID'."""
    court = Court()
    reply = court.set("Alice", "<item affiliation='member' jid='nora@localhost/r'/>")
    assert outcome(reply) == "jid-malformed"


# -- the lists (§9.2, §9.5, §9.8, §10.5, §10.8) ----------------------------------

def test_an_admin_gets_the_member_list_with_reserved_nicks():
    court = Court()
    court.set("Alice", "<item affiliation='member' jid='vic@localhost' nick='Victor'/>")
    reply = admin_get(court.s["Adam"], ROOM, "<item affiliation='member'/>")
    items = {i["jid"]: i.getAttribute("nick")
             for i in reply.firstChildElement().elements(ns.MUC_ADMIN, "item")}
    assert items == {"mary@localhost": None, "vic@localhost": "Victor"}


def test_a_member_or_participant_may_not_get_the_member_list():
    court = Court()
    for nick in ("Mary", "Nora"):
        reply = admin_get(court.s[nick], ROOM, "<item affiliation='member'/>")
        assert error_condition(reply) == "forbidden"


def test_an_admin_may_not_get_the_owner_list_of_a_semi_anonymous_room():
    """XEP-0045 §10.5; Prosody: an admin lists affiliations up to his own."""
    court = Court()
    reply = admin_get(court.s["Adam"], ROOM, "<item affiliation='owner'/>")
    assert error_condition(reply) == "forbidden"


def test_a_moderator_gets_the_moderator_list_and_a_participant_may_not():
    court = Court()
    reply = admin_get(court.s["Adam"], ROOM, "<item role='moderator'/>")
    nicks = {i["nick"] for i in reply.firstChildElement().elements(ns.MUC_ADMIN, "item")}
    assert nicks == {"Alice", "Olga", "Adam", "Anna"}
    reply = admin_get(court.s["Nora"], ROOM, "<item role='moderator'/>")
    assert error_condition(reply) == "forbidden"


def test_the_owner_list_and_admin_list_answer_owners():
    court = Court()
    reply = admin_get(court.s["Alice"], ROOM, "<item affiliation='admin'/>")
    assert {i["jid"] for i in reply.firstChildElement().elements(ns.MUC_ADMIN, "item")} == {
        "adam@localhost", "anna@localhost"}
    assert muc_x(reply) is None
