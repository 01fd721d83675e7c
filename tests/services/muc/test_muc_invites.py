"""Mediated invitations (xmppd/services/muc/features/invites.py): XEP-0045
§7.8.2-7.8.3 and what Prosody 0.12 adds (the room password, a body, the
XEP-0249 <x xmlns='jabber:x:conference'/>, membership for invitees of a
members-only room, forbidden for those who may not invite there)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from muc_harness_helpers import (  # noqa: E402
    create, join, make_harness, muc_x, room_jid, the_error, the_room)

from xmppd import ns  # noqa: E402

RJ = room_jid("party")
#: Prosody 0.12's field for "members may invite" in a members-only room
ALLOW_MEMBER_INVITES = "{http://prosody.im/protocol/muc}roomconfig_allowmemberinvites"


def invite(session, to, reason=None, extra=""):
    inner = f"<reason>{reason}</reason>" if reason else ""
    session.feed(f"<message to='{RJ}'><x xmlns='{ns.MUC_USER}'>"
                 f"<invite to='{to}'>{inner}</invite></x>{extra}</message>")


def party(fields=None, whois=None):
    h = make_harness()
    alice = h.login("alice@localhost/r")
    f = dict(fields or {})
    if whois:
        f["muc#roomconfig_whois"] = whois
    create(alice, "party", "Alice", f or None)
    return h, alice


def the_invite(session):
    got = session.take()
    assert len(got) == 1, [s.toXml() for s in got]
    message = got[0]
    assert message["from"] == RJ
    return message, next(muc_x(message).elements(ns.MUC_USER, "invite"))


def test_the_invitee_gets_the_invitation_from_the_room_with_reason_body_and_conference_x():
    h, alice = party(whois="anyone")
    bob = h.login("bob@localhost/r")
    invite(alice, "bob@localhost", reason="Join us")
    assert alice.take() == []
    message, inv = the_invite(bob)
    assert inv["from"] == "alice@localhost/r"          # the inviter's real JID (as Prosody)
    assert [str(r) for r in inv.elements(ns.MUC_USER, "reason")] == ["Join us"]
    assert any(c.name == "body" for c in message.elements())
    conference = next(message.elements(ns.CONFERENCE, "x"))
    assert conference["jid"] == RJ


def test_in_a_semi_anonymous_room_the_inviter_is_named_by_its_room_jid():
    """Prosody's whois.lib masks the inviter for invitees who will not be moderators."""
    h, alice = party()
    bob = h.login("bob@localhost/r")
    invite(alice, "bob@localhost")
    message, inv = the_invite(bob)
    assert inv["from"] == f"{RJ}/Alice"


def test_the_invitation_carries_the_room_password():
    h, alice = party(fields={"muc#roomconfig_roomsecret": "pw",
                             "muc#roomconfig_passwordprotectedroom": True})
    bob = h.login("bob@localhost/r")
    invite(alice, "bob@localhost")
    message, inv = the_invite(bob)
    assert [str(p) for p in muc_x(message).elements(ns.MUC_USER, "password")] == ["pw"]


def test_an_invitation_to_a_members_only_room_by_an_owner_makes_the_invitee_a_member():
    h, alice = party(fields={"muc#roomconfig_membersonly": True})
    bob = h.login("bob@localhost/r")
    invite(alice, "bob@localhost")
    bob.take()
    assert the_room(h, "party").affiliations.get("bob@localhost") == "member"
    got = join(bob, "party", "Bob")
    assert not [s for s in got if s.getAttribute("type") == "error"]


def test_a_mere_member_may_not_invite_to_a_members_only_room_forbidden():
    h, alice = party(fields={"muc#roomconfig_membersonly": True})
    bob = h.login("bob@localhost/r")
    invite(alice, "bob@localhost")
    bob.take()
    join(bob, "party", "Bob")
    bob.take()
    carol = h.login("carol@localhost/r")
    invite(bob, "carol@localhost")
    assert the_error(bob.take(), "message") == "forbidden"
    assert carol.take() == []
    assert "carol@localhost" not in the_room(h, "party").affiliations


def test_a_member_may_invite_when_member_invites_are_allowed():
    h, alice = party(fields={"muc#roomconfig_membersonly": True,
                             ALLOW_MEMBER_INVITES: True})
    bob = h.login("bob@localhost/r")
    invite(alice, "bob@localhost")
    bob.take()
    join(bob, "party", "Bob")
    bob.take()
    carol = h.login("carol@localhost/r")
    invite(bob, "carol@localhost")
    assert bob.take() == []
    the_invite(carol)
    assert the_room(h, "party").affiliations.get("carol@localhost") == "member"


def test_an_invitation_to_a_malformed_jid_is_jid_malformed():
    h, alice = party()
    invite(alice, "@@bad")
    assert the_error(alice.take(), "message") == "jid-malformed"


def test_a_decline_goes_to_the_inviter_from_the_room():
    h, alice = party()
    bob = h.login("bob@localhost/r")
    bob.feed(f"<message to='{RJ}'><x xmlns='{ns.MUC_USER}'>"
             f"<decline to='alice@localhost/r'><reason>Busy</reason></decline></x></message>")
    (message,) = alice.take()
    assert message["from"] == RJ
    decline = next(muc_x(message).elements(ns.MUC_USER, "decline"))
    assert decline["from"].startswith("bob@localhost")
    assert [str(r) for r in decline.elements(ns.MUC_USER, "reason")] == ["Busy"]


def forged_ids(*by):
    return "".join(f"<stanza-id xmlns='{ns.SID}' by='{b}' id='forged{i}'/>"
                   for i, b in enumerate(by))


def stanza_ids(stanza):
    return [s["by"] for s in stanza.elements(ns.SID, "stanza-id")]


def test_an_invitation_loses_stanza_ids_claiming_a_local_account_or_the_room():
    """The room copies the inviter's other children into the invitation (as
    Prosody), but not a stanza-id the invitee would take for its archive's."""
    h, alice = party(whois="anyone")
    bob = h.login("bob@localhost/r")
    invite(alice, "bob@localhost", extra=forged_ids("bob@localhost", RJ, "x@example.org")
           + "<thread>t1</thread>")
    message, inv = the_invite(bob)
    assert stanza_ids(message) == ["x@example.org"]
    assert [str(t) for t in message.elements(ns.CLIENT, "thread")] == ["t1"]


def test_a_decline_loses_stanza_ids_claiming_the_inviter():
    h, alice = party()
    bob = h.login("bob@localhost/r")
    bob.feed(f"<message to='{RJ}'><x xmlns='{ns.MUC_USER}'>"
             f"<decline to='alice@localhost/r'/></x>"
             f"{forged_ids('alice@localhost', RJ)}</message>")
    (message,) = alice.take()
    assert next(muc_x(message).elements(ns.MUC_USER, "decline")) is not None
    assert stanza_ids(message) == []


def test_a_decline_to_an_occupants_room_jid_reaches_its_sessions_without_forged_ids():
    """Prosody routes it to each of the occupant's sessions, from the room."""
    h, alice = party()
    bob = h.login("bob@localhost/r")
    bob.feed(f"<message to='{RJ}'><x xmlns='{ns.MUC_USER}'>"
             f"<decline to='{RJ}/Alice'><reason>No</reason></decline></x>"
             f"{forged_ids('alice@localhost')}</message>")
    (message,) = alice.take()
    assert (message["from"], message["to"]) == (RJ, "alice@localhost/r")
    decline = next(muc_x(message).elements(ns.MUC_USER, "decline"))
    assert [str(r) for r in decline.elements(ns.MUC_USER, "reason")] == ["No"]
    assert stanza_ids(message) == []
