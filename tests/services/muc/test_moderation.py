"""XEP-0425 moderated retraction (xmppd/services/muc/features/moderation.py),
as Prosody's mod_muc_moderation: a moderator names an archived message by
its stanza-id; the archive keeps a tombstone in its place, the room gets
the notice (both protocol versions), others are refused."""

from __future__ import annotations

import os
import sys

from twisted.internet import task

sys.path.insert(0, os.path.dirname(__file__))

from muc_harness_helpers import (  # noqa: E402
    admin_set, bodies, create, iq_reply, join, make_harness, messages, room_jid, say,
    the_error)

from xmppd import ns  # noqa: E402
from xmppd.xml.stream import parse_element  # noqa: E402

RJ = room_jid("mod")


def setup():
    clock = task.Clock()
    clock.advance(1_700_000_000)
    h = make_harness(clock)
    alice = h.login("alice@localhost/r")       # owner: moderator
    create(alice, "mod", "Alice")
    bob = h.login("bob@localhost/r")
    join(bob, "mod", "Bob")
    alice.take()
    say(bob, "mod", "buy potions", msg_id="spam")
    (seen,) = messages(alice.take())
    bob.take()
    stanza_id = next(seen.elements(ns.SID, "stanza-id"))["id"]
    return h, clock, alice, bob, stanza_id


def moderate(session, stanza_id, reason="spam", iq_id="m1"):
    sid = f" id='{stanza_id}'" if stanza_id is not None else ""
    session.feed(f"<iq type='set' id='{iq_id}' to='{RJ}'><moderate xmlns='{ns.MODERATE}'{sid}>"
                 f"<retract xmlns='{ns.RETRACT}'/><reason>{reason}</reason></moderate></iq>")


def moderate_v0(session, stanza_id, iq_id="m0"):
    session.feed(f"<iq type='set' id='{iq_id}' to='{RJ}'><apply-to xmlns='{ns.FASTEN}' "
                 f"id='{stanza_id}'><moderate xmlns='{ns.MODERATE_0}'>"
                 f"<retract xmlns='{ns.RETRACT_0}'/><reason>old style</reason></moderate>"
                 f"</apply-to></iq>")


def archived(h):
    return [parse_element(__import__("json").loads(row[3]))
            for row in h.component("muc").store["muc_archive"]._data[RJ]]


def test_a_moderator_retracts_a_message_everyone_gets_the_notice_then_the_answer():
    h, clock, alice, bob, stanza_id = setup()
    moderate(alice, stanza_id)
    got = alice.take()
    assert [s.name for s in got] == ["message", "iq"] and got[1]["type"] == "result"
    for notice in (got[0], *messages(bob.take())):
        assert (notice["from"], notice["type"]) == (RJ, "groupchat")
        apply_to = next(notice.elements(ns.FASTEN, "apply-to"))
        assert apply_to["id"] == stanza_id
        moderated = next(apply_to.elements(ns.MODERATE_0, "moderated"))
        assert moderated["by"] == f"{RJ}/Alice"
        assert next(moderated.elements(ns.RETRACT_0, "retract"), None) is not None
        assert str(next(moderated.elements(ns.MODERATE_0, "reason"))) == "spam"
        retract = next(notice.elements(ns.RETRACT, "retract"))
        assert retract["id"] == stanza_id
        moderated1 = next(retract.elements(ns.MODERATE, "moderated"))
        assert moderated1["by"] == f"{RJ}/Alice"
        assert next(moderated1.elements(ns.OCCUPANT_ID, "occupant-id"))["id"]
        assert str(next(retract.elements(ns.RETRACT, "reason"))) == "spam"


def test_the_archived_message_becomes_a_tombstone_in_its_place():
    h, clock, alice, bob, stanza_id = setup()
    before = archived(h)[0]
    moderate(alice, stanza_id)
    alice.take()
    tombstone = archived(h)[0]
    assert bodies([tombstone]) == []
    assert (tombstone["from"], tombstone["id"]) == (before["from"], before["id"]) == \
        (f"{RJ}/Bob", "spam")
    moderated = next(tombstone.elements(ns.MODERATE_0, "moderated"))
    assert next(moderated.elements(ns.RETRACT_0, "retracted"))["stamp"] == \
        "2023-11-14T22:13:20Z"
    retracted = next(tombstone.elements(ns.RETRACT, "retracted"))
    assert next(retracted.elements(ns.MODERATE, "moderated"))["by"] == f"{RJ}/Alice"
    # the author's occupant-id stays, so clients can tell whose message it was
    assert next(tombstone.elements(ns.OCCUPANT_ID, "occupant-id"))["id"] == \
        next(before.elements(ns.OCCUPANT_ID, "occupant-id"))["id"]
    # a query pages over the tombstone, under the same id
    alice.feed(f"<iq type='set' id='q' to='{RJ}'><query xmlns='{ns.MAM}'/></iq>")
    results = [m for m in alice.take() if m.name == "message"]
    first = next(results[0].elements(ns.MAM, "result"))
    assert first["id"] == stanza_id
    inner = next(next(first.elements(ns.FORWARD, "forwarded")).elements(ns.CLIENT, "message"))
    assert bodies([inner]) == []


def test_the_notice_is_archived_and_kept_as_history():
    h, clock, alice, bob, stanza_id = setup()
    moderate(alice, stanza_id)
    (notice, _) = alice.take()
    assert next(notice.elements(ns.SID, "stanza-id"))["by"] == RJ
    assert len(archived(h)) == 2
    carol = h.login("carol@localhost/r")
    got = join(carol, "mod", "Carol")
    assert any(next(m.elements(ns.FASTEN, "apply-to"), None) is not None
               for m in messages(got))


def test_the_older_apply_to_form_works_too():
    h, clock, alice, bob, stanza_id = setup()
    moderate_v0(alice, stanza_id)
    assert iq_reply(alice, "m0")["type"] == "result"
    assert bodies([archived(h)[0]]) == []


def test_a_non_moderator_is_forbidden_and_nothing_changes():
    h, clock, alice, bob, stanza_id = setup()
    moderate(bob, stanza_id)
    got = bob.take()
    assert the_error(got) == "forbidden"
    error = next(got[0].elements(ns.CLIENT, "error"))
    assert error["type"] == "auth"
    assert bodies([archived(h)[0]]) == ["buy potions"]
    assert messages(alice.take()) == []


def test_an_admin_not_in_the_room_may_moderate_by_affiliation():
    h, clock, alice, bob, stanza_id = setup()
    admin_set(alice, "mod", "<item jid='dave@localhost' affiliation='admin'/>")
    dave = h.login("dave@localhost/r")
    moderate(dave, stanza_id, iq_id="d")
    assert iq_reply(dave, "d")["type"] == "result"


def test_an_unknown_or_missing_id_is_item_not_found():
    h, clock, alice, bob, stanza_id = setup()
    for bad in ("424242", "not-an-id", None):
        moderate(alice, bad)
        got = alice.take()
        assert the_error(got) == "item-not-found", bad
        assert next(got[0].elements(ns.CLIENT, "error"))["type"] == "modify"
    assert bodies([archived(h)[0]]) == ["buy potions"]


def test_a_moderate_without_retract_is_not_understood():
    h, clock, alice, bob, stanza_id = setup()
    alice.feed(f"<iq type='set' id='x' to='{RJ}'><moderate xmlns='{ns.MODERATE}' "
               f"id='{stanza_id}'/></iq>")
    assert the_error(alice.take()) == "service-unavailable"
