"""The room subject (xmppd/services/muc/features/subject.py): XEP-0045 §8.1
— a groupchat message with a <subject/> and no body changes it (with a body
or a thread it is an ordinary message, as Prosody's subject.lib), moderators
may always, participants when muc#roomconfig_changesubject allows; every
joiner gets the subject last (empty when none)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from muc_harness_helpers import (  # noqa: E402
    bodies, configure, create, error_type, join, make_harness, messages, room_jid, the_error)

from xmppd import ns  # noqa: E402

RJ = room_jid("topic")


def subject_of(message):
    found = [str(c) for c in message.elements() if c.name == "subject"]
    return found[0] if found else None


def room():
    h = make_harness()
    alice, bob = h.login("alice@localhost/r"), h.login("bob@localhost/r")
    create(alice, "topic", "Alice")
    join(bob, "topic", "Bob")
    alice.take()
    return h, alice, bob


def set_subject(session, text, extra=""):
    session.feed(f"<message type='groupchat' to='{RJ}'><subject>{text}</subject>{extra}</message>")


def test_a_moderator_changes_the_subject_and_everyone_sees_it_from_the_moderator():
    h, alice, bob = room()
    set_subject(alice, "Plans")
    for session in (alice, bob):
        (m,) = messages(session.take())
        assert (m["from"], m["type"], subject_of(m)) == (f"{RJ}/Alice", "groupchat", "Plans")
        assert bodies([m]) == []


def test_a_joiner_gets_the_current_subject_last():
    h, alice, bob = room()
    set_subject(alice, "Plans")
    carol = h.login("carol@localhost/r")
    got = join(carol, "topic", "Carol")
    assert got[-1].name == "message" and subject_of(got[-1]) == "Plans"
    assert got[-1]["from"] == f"{RJ}/Alice"


def test_a_participant_may_not_change_the_subject_by_default_forbidden():
    h, alice, bob = room()
    set_subject(bob, "Mine")
    got = bob.take()
    assert the_error(got, "message") == "forbidden"
    assert error_type([s for s in got if s.getAttribute("type") == "error"][0]) == "auth"
    assert alice.take() == []


def test_a_participant_may_change_it_when_the_room_allows():
    h, alice, bob = room()
    configure(alice, "topic", {"muc#roomconfig_changesubject": True})
    bob.take()
    set_subject(bob, "Ours")
    (m,) = messages(alice.take())
    assert subject_of(m) == "Ours"


def test_a_message_with_subject_and_body_is_an_ordinary_message():
    h, alice, bob = room()
    set_subject(bob, "Not a topic", "<body>hello</body>")
    (m,) = messages(alice.take())
    assert bodies([m]) == ["hello"]
    carol = h.login("carol@localhost/r")
    got = join(carol, "topic", "Carol")
    assert subject_of(got[-1]) == ""


def test_a_message_with_subject_and_thread_is_not_a_subject_change():
    """As Prosody's subject.lib (XEP-0045 §8.1 note)."""
    h, alice, bob = room()
    set_subject(alice, "Threaded", "<thread>t1</thread>")
    alice.take()
    carol = h.login("carol@localhost/r")
    assert subject_of(join(carol, "topic", "Carol")[-1]) == ""


def test_an_empty_subject_clears_it():
    h, alice, bob = room()
    set_subject(alice, "Plans")
    alice.feed(f"<message type='groupchat' to='{RJ}'><subject/></message>")
    carol = h.login("carol@localhost/r")
    assert subject_of(join(carol, "topic", "Carol")[-1]) == ""


def test_the_subject_is_not_in_the_room_info_form():
    """As Prosody 0.12: the subject is for occupants (a hidden or members-only
    room's subject would reach anyone through disco#info)."""
    h, alice, bob = room()
    set_subject(alice, "Plans")
    alice.take()
    alice.feed(f"<iq type='get' id='d' to='{RJ}'><query xmlns='{ns.DISCO_INFO}'/></iq>")
    (reply,) = alice.take()
    x = next(reply.firstChildElement().elements(ns.DATA_FORMS, "x"))
    values = {f["var"]: [str(v) for v in f.elements(ns.DATA_FORMS, "value")]
              for f in x.elements(ns.DATA_FORMS, "field")}
    assert "muc#roominfo_subject" not in values
