"""The room core (xmppd/services/muc/room.py): joining, leaving, nick
changes, multi-session nicks, presence probes, private messages, occupants
whose session vanished (333) and the fanout that serialises a message once
for the whole room — XEP-0045 §7 and Prosody 0.12's muc.lib.lua."""

from __future__ import annotations

import os
import sys

import pytest
from twisted.internet import task

sys.path.insert(0, os.path.dirname(__file__))

from muc_harness_helpers import (  # noqa: E402
    bodies, codes, create, item, join, leave, make_harness, messages, muc_x, presences,
    room_jid, say, the_error, the_room)

from xmppd import ns  # noqa: E402
from xmppd.testing import FakeSession, Harness, result_of  # noqa: E402

ROOM = room_jid("lobby")


def two_in_room(**options):
    clock = task.Clock()
    h = make_harness(clock, **options)
    alice = h.login("alice@localhost/phone")
    bob = h.login("bob@localhost/pc")
    create(alice, "lobby", "Alice")
    join(bob, "lobby", "Bob")
    alice.take()
    return h, clock, alice, bob


# -- joining -------------------------------------------------------------------

def test_the_creator_gets_a_self_presence_with_110_and_201_as_owner_and_moderator():
    h = make_harness()
    alice = h.login("alice@localhost/phone")
    got = join(alice, "lobby", "Alice")
    (self_presence,) = presences(got)
    assert self_presence["from"] == f"{ROOM}/Alice"
    assert codes(self_presence) == {"110", "201"}
    it = item(self_presence)
    assert (it["affiliation"], it["role"], it["jid"]) == ("owner", "moderator",
                                                            "alice@localhost/phone")


def test_a_joiner_gets_the_occupants_then_its_own_presence_then_the_subject():
    h, clock, alice, bob = two_in_room()
    carol = h.login("carol@localhost/x")
    got = join(carol, "lobby", "Carol")
    kinds = [(s.name, s.getAttribute("from")) for s in got]
    assert kinds[-1] == ("message", ROOM)          # the (empty) subject comes last
    subject = got[-1]
    assert subject["type"] == "groupchat"
    assert [str(c) for c in subject.elements() if c.name == "subject"] == [""]
    pres = presences(got)
    assert [p["from"] for p in pres] [-1] == f"{ROOM}/Carol"
    assert {p["from"] for p in pres[:-1]} == {f"{ROOM}/Alice", f"{ROOM}/Bob"}
    # semi-anonymous room: a participant sees no real JIDs of others, only its own
    for other in pres[:-1]:
        assert item(other).getAttribute("jid") is None
        assert "110" not in codes(other)
    own = pres[-1]
    assert codes(own) == {"110"}
    assert (item(own)["role"], item(own)["jid"]) == ("participant", "carol@localhost/x")


def test_moderators_see_the_joiners_real_jid_and_participants_do_not():
    h, clock, alice, bob = two_in_room()
    carol = h.login("carol@localhost/x")
    join(carol, "lobby", "Carol")
    (to_alice,) = presences(alice.take())
    (to_bob,) = presences(bob.take())
    assert item(to_alice)["jid"] == "carol@localhost/x"
    assert item(to_bob).getAttribute("jid") is None
    assert codes(to_alice) == codes(to_bob) == set()


def test_a_join_without_a_nickname_is_jid_malformed():
    h = make_harness()
    alice = h.login("alice@localhost/phone")
    alice.feed(f"<presence to='{ROOM}'><x xmlns='{ns.MUC}'/></presence>")
    assert the_error(alice.take(), "presence") == "jid-malformed"
    assert the_room(h, "lobby") is None


def test_a_nickname_in_use_by_another_account_is_conflict_and_the_room_is_unchanged():
    h, clock, alice, bob = two_in_room()
    carol = h.login("carol@localhost/x")
    got = join(carol, "lobby", "Bob")
    assert the_error(got, "presence") == "conflict"
    assert alice.take() == [] and bob.take() == []
    assert set(the_room(h, "lobby").occupants) == {"Alice", "Bob"}


def test_a_join_to_an_existing_room_without_a_nickname_is_jid_malformed():
    h, clock, alice, bob = two_in_room()
    carol = h.login("carol@localhost/x")
    carol.feed(f"<presence to='{ROOM}'><x xmlns='{ns.MUC}'/></presence>")
    assert the_error(carol.take(), "presence") == "jid-malformed"
    assert set(the_room(h, "lobby").occupants) == {"Alice", "Bob"}


def test_a_blank_nickname_is_refused_as_prosody_does_and_nobody_hears_of_it():
    """Prosody: modify/not-allowed "Invisible Nicknames are forbidden"."""
    h, clock, alice, bob = two_in_room()
    carol = h.login("carol@localhost/x")
    got = join(carol, "lobby", " ")
    assert the_error(got, "presence") == "not-allowed"
    assert alice.take() == []


def test_a_nickname_longer_than_max_nick_length_is_not_acceptable():
    h = make_harness(max_nick_length=5)
    alice = h.login("alice@localhost/phone")
    got = join(alice, "lobby", "Alexandra")
    assert the_error(got, "presence") == "not-acceptable"
    assert the_room(h, "lobby") is None


def test_a_presence_without_the_muc_x_does_not_create_a_room():
    """As Prosody's mod_muc: only a join with the MUC <x/> creates a room."""
    h = make_harness()
    alice = h.login("alice@localhost/phone")
    got = join(alice, "lobby", "Alice", muc_x=False)
    assert the_error(got, "presence") == "item-not-found"
    assert the_room(h, "lobby") is None


# -- leaving -------------------------------------------------------------------

def test_leaving_sends_unavailable_with_110_to_the_leaver_and_unavailable_to_the_others():
    h, clock, alice, bob = two_in_room()
    got = leave(bob, "lobby", "Bob", status="bye")
    (own,) = presences(got)
    assert (own["type"], own["from"]) == ("unavailable", f"{ROOM}/Bob")
    assert "110" in codes(own)
    assert item(own)["role"] == "none"
    (seen,) = presences(alice.take())
    assert (seen["type"], seen["from"]) == ("unavailable", f"{ROOM}/Bob")
    assert [str(c) for c in seen.elements() if c.name == "status"] == ["bye"]
    assert "110" not in codes(seen)
    assert set(the_room(h, "lobby").occupants) == {"Alice"}


def test_a_temporary_room_vanishes_with_its_last_occupant():
    h, clock, alice, bob = two_in_room()
    leave(bob, "lobby", "Bob")
    leave(alice, "lobby", "Alice")
    assert the_room(h, "lobby") is None


# -- nick change ---------------------------------------------------------------

def test_a_nick_change_is_an_unavailable_with_303_and_the_new_nick_then_the_new_presence():
    h, clock, alice, bob = two_in_room()
    bob.feed(f"<presence to='{ROOM}/Robert'/>")
    to_bob, to_alice = presences(bob.take()), presences(alice.take())
    for got, own in ((to_bob, True), (to_alice, False)):
        assert [(p.getAttribute("type"), p["from"]) for p in got] == [
            ("unavailable", f"{ROOM}/Bob"), (None, f"{ROOM}/Robert")]
        assert "303" in codes(got[0])
        assert item(got[0])["nick"] == "Robert"
        assert ("110" in codes(got[0])) is own
        assert ("110" in codes(got[1])) is own
    assert set(the_room(h, "lobby").occupants) == {"Alice", "Robert"}


def test_a_nick_change_to_a_taken_nick_is_conflict_and_changes_nothing():
    h, clock, alice, bob = two_in_room()
    bob.feed(f"<presence to='{ROOM}/Alice'/>")
    assert the_error(bob.take(), "presence") == "conflict"
    assert alice.take() == []
    assert set(the_room(h, "lobby").occupants) == {"Alice", "Bob"}


# -- multi-session nicks -------------------------------------------------------

def test_a_second_session_of_the_same_account_joins_under_the_same_nick():
    h, clock, alice, bob = two_in_room()
    laptop = h.login("alice@localhost/laptop")
    got = join(laptop, "lobby", "Alice")
    pres = presences(got)
    assert pres[-1]["from"] == f"{ROOM}/Alice" and "110" in codes(pres[-1])
    # one item per session, as Prosody's build_item_list
    assert {i["jid"] for i in muc_x(pres[-1]).elements(ns.MUC_USER, "item")} == {
        "alice@localhost/phone", "alice@localhost/laptop"}
    assert f"{ROOM}/Bob" in [p["from"] for p in pres[:-1]]
    # Bob sees no new occupant and nobody leaving
    assert all(p.getAttribute("type") != "unavailable" for p in presences(bob.take()))
    assert set(the_room(h, "lobby").occupants) == {"Alice", "Bob"}
    alice.take()
    say(bob, "lobby", "to both")
    assert bodies(alice.take()) == ["to both"]
    assert bodies(laptop.take()) == ["to both"]


def test_one_session_of_a_multi_session_nick_leaving_leaves_the_occupant_in_the_room():
    h, clock, alice, bob = two_in_room()
    laptop = h.login("alice@localhost/laptop")
    join(laptop, "lobby", "Alice")
    bob.take()
    alice.take()
    got = leave(laptop, "lobby", "Alice")
    (own,) = presences(got)
    assert own["type"] == "unavailable" and "110" in codes(own)
    # the others see the occupant stay (its presence again, as Prosody
    # publicises every session change), never leave
    seen = presences(bob.take())
    assert seen and all(p.getAttribute("type") is None for p in seen)
    assert [p.getAttribute("type") for p in presences(alice.take())] == [None]
    say(bob, "lobby", "still here?")
    assert bodies(alice.take()) == ["still here?"]
    assert laptop.take() == []


# -- presence probes -----------------------------------------------------------

def test_a_probe_from_an_occupant_gets_the_probed_occupants_current_presence():
    h, clock, alice, bob = two_in_room()
    alice.feed(f"<presence to='{ROOM}/Alice'><show>away</show><x xmlns='{ns.MUC}'/></presence>")
    bob.take()
    alice.take()
    bob.feed(f"<presence type='probe' to='{ROOM}/Alice'/>")
    (answer,) = bob.take()
    assert (answer.name, answer["from"], answer.getAttribute("type")) == (
        "presence", f"{ROOM}/Alice", None)
    assert [str(c) for c in answer.elements() if c.name == "show"] == ["away"]
    assert item(answer)["role"] == "moderator"


def test_a_probe_for_a_nick_not_in_the_room_gets_unavailable():
    h, clock, alice, bob = two_in_room()
    bob.feed(f"<presence type='probe' to='{ROOM}/Nobody'/>")
    (answer,) = bob.take()
    assert (answer["from"], answer["type"]) == (f"{ROOM}/Nobody", "unavailable")


def test_a_probe_from_a_non_occupant_is_not_acceptable():
    h, clock, alice, bob = two_in_room()
    carol = h.login("carol@localhost/x")
    carol.feed(f"<presence type='probe' to='{ROOM}/Alice'/>")
    assert the_error(carol.take(), "presence") == "not-acceptable"


# -- private messages ----------------------------------------------------------

def test_a_private_message_reaches_the_occupant_from_the_senders_room_jid():
    h, clock, alice, bob = two_in_room()
    bob.feed(f"<message type='chat' to='{ROOM}/Alice' id='pm1'><body>psst</body></message>")
    assert bob.take() == []
    (pm,) = alice.take()
    assert (pm["from"], pm["to"], pm["type"], pm["id"]) == (
        f"{ROOM}/Bob", "alice@localhost/phone", "chat", "pm1")
    assert bodies([pm]) == ["psst"]
    assert muc_x(pm) is not None


def test_a_private_message_to_a_nick_not_in_the_room_is_item_not_found():
    h, clock, alice, bob = two_in_room()
    bob.feed(f"<message type='chat' to='{ROOM}/Nobody'><body>x</body></message>")
    assert the_error(bob.take(), "message") == "item-not-found"


def test_a_private_message_from_a_non_occupant_is_not_acceptable():
    h, clock, alice, bob = two_in_room()
    carol = h.login("carol@localhost/x")
    carol.feed(f"<message type='chat' to='{ROOM}/Alice'><body>x</body></message>")
    assert the_error(carol.take(), "message") == "not-acceptable"
    assert alice.take() == []


def test_a_private_message_of_type_groupchat_is_bad_request():
    h, clock, alice, bob = two_in_room()
    bob.feed(f"<message type='groupchat' to='{ROOM}/Alice'><body>x</body></message>")
    assert the_error(bob.take(), "message") == "bad-request"
    assert alice.take() == []


def forged_ids(*by: str) -> str:
    return "".join(f"<stanza-id xmlns='{ns.SID}' by='{b}' id='forged{i}'/>"
                   for i, b in enumerate(by))


def stanza_ids(stanza) -> list[str]:
    return [s["by"] for s in stanza.elements(ns.SID, "stanza-id")]


def test_a_private_message_loses_stanza_ids_claiming_the_recipient_or_the_room():
    """A recipient trusts a stanza-id by its own account (and one by the
    room): an occupant must not be able to plant one. Others pass (XEP-0359
    §5: routing entities leave them)."""
    h, clock, alice, bob = two_in_room()
    bob.feed(f"<message type='chat' to='{ROOM}/Alice' id='pm1'><body>psst</body>"
             f"{forged_ids('alice@localhost', ROOM, 'Alice@LOCALHOST', 'someone@example.org')}"
             f"</message>")
    (pm,) = alice.take()
    assert bodies([pm]) == ["psst"]
    assert stanza_ids(pm) == ["someone@example.org"]


def test_a_groupchat_message_loses_stanza_ids_claiming_a_local_account():
    """Local occupants get the room's messages straight from the room, not
    through their account's archive, which would take out one by itself."""
    h, clock, alice, bob = two_in_room()
    bob.feed(f"<message type='groupchat' to='{ROOM}' id='g1'><body>hi</body>"
             f"{forged_ids('alice@localhost', 'bob@localhost', 'localhost', 'x@example.org')}"
             f"</message>")
    for session in (alice, bob):
        (message,) = session.take()
        # the room's own (it archives by default), and the foreign one
        assert sorted(stanza_ids(message)) == sorted([ROOM, "x@example.org"])
        assert not [s for s in message.elements(ns.SID, "stanza-id")
                    if s["by"] != "x@example.org" and s["id"].startswith("forged")]


def pm_harness(clock=None):
    """The room beside the user archive: alice and bob in the lobby, both
    with an account (the archive only keeps messages of accounts)."""
    clock = clock or task.Clock()
    clock.advance(1_700_000_000)
    h = Harness(["presence", "messaging", "disco", "offline", "carbons", "mam", "muc"],
                clock=clock)
    alice = h.login("alice@localhost/phone")
    bob = h.login("bob@localhost/pc")
    create(alice, "lobby", "Alice")
    join(bob, "lobby", "Bob")
    alice.take()
    return h, alice, bob


def user_archive(h, user):
    return result_of(h.server.storage.archive("mam").query(user))


def test_a_private_message_is_archived_for_its_recipient_with_the_room_as_partner():
    """As Prosody, where the room routes a PM to the occupant's server and
    its mod_mam archives it there (message/full): ``with`` the room's bare
    JID, and the copy delivered carries the recipient's stanza-id."""
    h, alice, bob = pm_harness()
    bob.feed(f"<message type='chat' to='{ROOM}/Alice' id='pm1'><body>psst</body></message>")
    (pm,) = alice.take()
    (item,) = user_archive(h, "alice@localhost")
    assert item.with_ == ROOM and "psst" in item.value
    assert [(s["by"], s["id"]) for s in pm.elements(ns.SID, "stanza-id")] == [
        ("alice@localhost", item.id)]
    # and the sender's own archive has it once, with the room too
    (sent,) = user_archive(h, "bob@localhost")
    assert sent.with_ == ROOM


def test_a_forged_stanza_id_naming_an_archived_item_is_replaced_in_a_private_message():
    """The id of something already in the recipient's archive does not make
    a forged stanza-id pass for the archive's own."""
    h, alice, bob = pm_harness()
    bob.feed(f"<message type='chat' to='{ROOM}/Alice' id='pm1'><body>first</body></message>")
    alice.take()
    (first,) = user_archive(h, "alice@localhost")
    bob.feed(f"<message type='chat' to='{ROOM}/Alice' id='pm2'><body>second</body>"
             f"<stanza-id xmlns='{ns.SID}' by='alice@localhost' id='{first.id}'/></message>")
    (pm,) = alice.take()
    items = user_archive(h, "alice@localhost")
    assert len(items) == 2
    assert [(s["by"], s["id"]) for s in pm.elements(ns.SID, "stanza-id")] == [
        ("alice@localhost", items[1].id)]


# -- groupchat -----------------------------------------------------------------

def test_a_groupchat_message_goes_to_everyone_including_the_sender_from_its_room_jid():
    h, clock, alice, bob = two_in_room()
    say(bob, "lobby", "hello", msg_id="m1")
    for session in (alice, bob):
        (message,) = session.take()
        assert (message["from"], message["type"], message["id"]) == (
            f"{ROOM}/Bob", "groupchat", "m1")
        assert bodies([message]) == ["hello"]


def test_a_groupchat_message_from_a_non_occupant_is_not_acceptable_and_goes_nowhere():
    h, clock, alice, bob = two_in_room()
    carol = h.login("carol@localhost/x")
    say(carol, "lobby", "intruding")
    assert the_error(carol.take(), "message") == "not-acceptable"
    assert alice.take() == [] and bob.take() == []


# -- a session gone without unavailable (333) ---------------------------------

def test_an_occupant_whose_local_session_is_gone_is_removed_with_333():
    h, clock, alice, bob = two_in_room()
    h.router.unbind(bob)                     # the stream died, no unavailable to the room
    say(alice, "lobby", "anyone there?")
    alice.take()
    clock.advance(0)
    (gone,) = presences(alice.take())
    assert (gone["from"], gone["type"]) == (f"{ROOM}/Bob", "unavailable")
    assert "333" in codes(gone)
    assert set(the_room(h, "lobby").occupants) == {"Alice"}


def test_an_occupant_whose_client_bounces_a_groupchat_message_is_removed_with_333():
    h, clock, alice, bob = two_in_room()
    bob.feed(f"<message type='error' to='{ROOM}'><error type='cancel'>"
             f"<service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
             f"</message>")
    (gone,) = presences(alice.take())
    assert (gone["from"], gone["type"]) == (f"{ROOM}/Bob", "unavailable")
    assert "333" in codes(gone)


def test_a_bounce_with_a_condition_that_says_nothing_about_the_session_keeps_the_occupant():
    h, clock, alice, bob = two_in_room()
    bob.feed(f"<message type='error' to='{ROOM}'><error type='modify'>"
             f"<bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>")
    assert alice.take() == []
    assert set(the_room(h, "lobby").occupants) == {"Alice", "Bob"}


# -- fanout ------------------------------------------------------------------

def test_a_message_to_100_occupants_is_serialised_once_and_reaches_each_once(monkeypatch):
    h = make_harness()
    owner = h.login("owner@localhost/r")
    create(owner, "big", "owner")
    sessions = [owner]
    for i in range(99):
        s = h.login(f"user{i}@localhost/r")
        join(s, "big", f"user{i}")
        sessions.append(s)
    for s in sessions:
        s.take()
    calls = []
    original = FakeSession.serialize

    def counting(self, stanza):
        calls.append(stanza)
        return original(self, stanza)
    monkeypatch.setattr(FakeSession, "serialize", counting)
    before = [s.received_text for s in sessions]
    say(sessions[50], "big", "to all", msg_id="fan")
    assert len(calls) == 1
    for s, count in zip(sessions, before):
        got = s.take()
        assert bodies(got) == ["to all"]
        assert s.received_text == count + 1
        assert got[0]["to"] == s.jid.full()
    assert len(messages(got)) == 1
