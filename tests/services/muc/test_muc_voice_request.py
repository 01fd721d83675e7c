"""Voice requests (xmppd/services/muc/features/voice_request.py): XEP-0045
§7.13 and §8.6 as Prosody 0.12's request.lib.lua does them — a visitor's
request goes to every moderator as a muc#request form (type normal, from
the room, muc#jid the visitor's real JID), and a moderator's approval makes
the visitor a participant."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from muc_harness_helpers import (  # noqa: E402
    create, item, join, make_harness, messages, presences, room_jid, the_room)

from xmppd import ns  # noqa: E402

RJ = room_jid("stage")


def request_form(role="participant"):
    return (f"<message to='{RJ}'><x xmlns='{ns.DATA_FORMS}' type='submit'>"
            f"<field var='FORM_TYPE'><value>{ns.MUC_REQUEST}</value></field>"
            f"<field var='muc#role' type='list-single'><value>{role}</value></field>"
            f"</x></message>")


def stage():
    h = make_harness()
    alice = h.login("alice@localhost/r")
    create(alice, "stage", "Alice", {"muc#roomconfig_moderatedroom": True})
    bob, carol = h.login("bob@localhost/r"), h.login("carol@localhost/r")
    join(bob, "stage", "Bob")
    join(carol, "stage", "Carol")
    alice.take()
    bob.take()
    return h, alice, bob, carol


def fields_of(message):
    x = next(message.elements(ns.DATA_FORMS, "x"))
    return {f["var"]: [str(v) for v in f.elements(ns.DATA_FORMS, "value")]
            for f in x.elements(ns.DATA_FORMS, "field")}


def test_a_visitor_in_a_moderated_room_may_not_speak():
    from muc_harness_helpers import say, the_error
    h, alice, bob, carol = stage()
    assert the_room(h, "stage").occupants["Bob"].role == "visitor"
    say(bob, "stage", "hello?")
    assert the_error(bob.take(), "message") == "forbidden"
    assert alice.take() == []


def test_a_visitors_request_reaches_the_moderators_only_as_a_form():
    h, alice, bob, carol = stage()
    bob.feed(request_form())
    assert bob.take() == []
    assert carol.take() == []
    (message,) = messages(alice.take())
    assert (message["from"], message.getAttribute("type")) == (RJ, "normal")
    fields = fields_of(message)
    assert fields["FORM_TYPE"] == [ns.MUC_REQUEST]
    assert fields["muc#jid"] == ["bob@localhost/r"]
    assert fields["muc#roomnick"] == ["Bob"]
    assert fields["muc#role"] == ["participant"]
    assert fields["muc#request_allow"] in (["0"], ["false"])


def test_an_approval_gives_the_visitor_voice():
    h, alice, bob, carol = stage()
    bob.feed(request_form())
    (request,) = messages(alice.take())
    alice.feed(f"<message to='{RJ}'><x xmlns='{ns.DATA_FORMS}' type='submit'>"
               f"<field var='FORM_TYPE'><value>{ns.MUC_REQUEST}</value></field>"
               f"<field var='muc#role'><value>participant</value></field>"
               f"<field var='muc#jid'><value>bob@localhost/r</value></field>"
               f"<field var='muc#roomnick'><value>Bob</value></field>"
               f"<field var='muc#request_allow'><value>true</value></field></x></message>")
    assert the_room(h, "stage").occupants["Bob"].role == "participant"
    (own,) = presences(bob.take())
    assert item(own)["role"] == "participant"


def test_a_denial_changes_nothing():
    h, alice, bob, carol = stage()
    bob.feed(request_form())
    alice.take()
    alice.feed(f"<message to='{RJ}'><x xmlns='{ns.DATA_FORMS}' type='submit'>"
               f"<field var='FORM_TYPE'><value>{ns.MUC_REQUEST}</value></field>"
               f"<field var='muc#jid'><value>bob@localhost/r</value></field>"
               f"<field var='muc#request_allow'><value>false</value></field></x></message>")
    assert the_room(h, "stage").occupants["Bob"].role == "visitor"
    assert bob.take() == []


def test_a_visitor_cannot_approve_its_own_request():
    h, alice, bob, carol = stage()
    bob.feed(f"<message to='{RJ}'><x xmlns='{ns.DATA_FORMS}' type='submit'>"
             f"<field var='FORM_TYPE'><value>{ns.MUC_REQUEST}</value></field>"
             f"<field var='muc#jid'><value>bob@localhost/r</value></field>"
             f"<field var='muc#request_allow'><value>true</value></field></x></message>")
    assert the_room(h, "stage").occupants["Bob"].role == "visitor"


def test_the_room_advertises_voice_requests():
    h, alice, bob, carol = stage()
    alice.feed(f"<iq type='get' id='d' to='{RJ}'><query xmlns='{ns.DISCO_INFO}'/></iq>")
    (reply,) = alice.take()
    assert ns.MUC_REQUEST in {f["var"] for f in
                              reply.firstChildElement().elements(ns.DISCO_INFO, "feature")}
