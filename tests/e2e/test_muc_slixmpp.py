"""XEP-0045 multi-user chat end to end, driven by slixmpp's ``xep_0045``.

Several users on real sockets create, configure, join, talk in, moderate and
destroy rooms on ``conference.localhost``. Every test runs against xmppd and,
with ``XMPPD_MUC_AGAINST=prosody``, against a real Prosody 0.12 with mod_muc:
passing on both shows a test pins the protocol, not xmppd's reading of it.
Where Prosody departs from the XEP the test asserts the XEP and marks the
Prosody run ``xfail`` at that point (after everything before it was checked),
saying why. Section numbers are XEP-0045's (version 1.35).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time

import pytest

pytest.importorskip("slixmpp")

from slixmpp import JID  # noqa: E402
from slixmpp.exceptions import IqError  # noqa: E402

from muc_target import make_muc_target, muc_target, require_xmppd  # noqa: E402,F401
from mucslix import ADMIN as MUC_ADMIN  # noqa: E402
from mucslix import (CLIENT, DELAY, DISCO_INFO, MUC_NS, REGISTER, USER,  # noqa: E402
                     MUCClient, bare, close_all, connect_all, dump, error_of,
                     form_of, form_values, groupchat, item, message_from, muc_presence,
                     new_room, occupant, presence_error, run, status_message, subject_message,
                     submit_form)

ALICE, BOB, CAROL, DAVE, EVE, ADMIN = (f"{u}@localhost" for u in
                                       ("alice", "bob", "carol", "dave", "eve", "admin"))
pytestmark = pytest.mark.all_transports  # tcp, websocket, bosh (conftest)
PING = "<ping xmlns='urn:xmpp:ping'/>"


@pytest.fixture(scope="module")
def target(muc_target):
    return muc_target


def iq_error(failure: IqError) -> tuple[str | None, str | None]:
    return error_of(failure.iq.xml)


def bodies(messages) -> list[str | None]:
    return [m.findtext(CLIENT + "body") for m in messages]


def delayed_by(message, room: str) -> bool:
    delay = message.find(DELAY + "delay")
    return delay is not None and delay.get("from") == room and bool(delay.get("stamp"))


def count(client: MUCClient, match) -> int:
    """How many stanzas matching ``match`` the client received in all."""
    return sum(1 for e in client.log if match(e))


# -- creating rooms (§10.1) --------------------------------------------------------------

def test_instant_room_is_created_with_201_and_locked_until_accepted(target):
    """§10.1.2: the creator gets 201 with owner/moderator; nobody else gets in
    (§7.2.12: item-not-found) until the owner accepts the default
    configuration with an empty submitted form."""
    room = new_room(target, "instant")

    async def scenario():
        alice, bob = await connect_all(target, ALICE + "/pc", BOB + "/pc")
        try:
            joined = await alice.join(room, "Alice")
            assert {110, 201} <= joined.codes
            assert joined.presence.get("from") == occupant(room, "Alice")
            assert (joined.item["affiliation"], joined.item["role"]) == ("owner", "moderator")

            assert await bob.join_error(room, "Bob") == ("cancel", "item-not-found")

            await alice.accept_instant(room)
            entered = await bob.join(room, "Bob")
            assert 110 in entered.codes and 201 not in entered.codes
            assert (entered.item["affiliation"], entered.item["role"]) == ("none", "participant")
            await alice.expect(muc_presence(occupant(room, "Bob")))
        finally:
            await close_all(alice, bob)
    run(scenario(), target)


def test_reserved_room_is_configured_with_the_owner_form_and_unlocked_by_the_submit(target):
    """§10.1.3: the owner fetches the muc#roomconfig form of the locked room,
    submits it, and only then can others enter; the values are read back."""
    room = new_room(target, "reserved")

    async def scenario():
        alice, bob = await connect_all(target, ALICE + "/pc", BOB + "/pc")
        try:
            assert 201 in (await alice.join(room, "Alice")).codes
            form = await alice.muc.get_room_config(JID(room), timeout=10)
            values = form_values(form.xml)
            assert values["FORM_TYPE"] == [MUC_NS + "#roomconfig"]
            for var in ("roomname", "roomdesc", "persistentroom", "publicroom", "membersonly",
                        "moderatedroom", "whois", "roomsecret", "changesubject",
                        "historylength"):
                assert "muc#roomconfig_" + var in values, f"{var} missing from {dump(form.xml)}"

            # still locked while the owner is filling in the form
            assert await bob.join_error(room, "Bob") == ("cancel", "item-not-found")

            await alice.muc.set_room_config(JID(room), submit_form(
                MUC_NS + "#roomconfig", {"roomname": "Tea room", "roomdesc": "Leaves and cups",
                                         "changesubject": True}), timeout=10)
            again = form_values((await alice.muc.get_room_config(JID(room), timeout=10)).xml)
            assert again["muc#roomconfig_roomname"] == ["Tea room"]
            assert again["muc#roomconfig_roomdesc"] == ["Leaves and cups"]
            assert again["muc#roomconfig_changesubject"] in (["1"], ["true"])

            entered = await bob.join(room, "Bob")
            assert 110 in entered.codes
            with pytest.raises(IqError) as not_owner:
                await bob.muc.get_room_config(JID(room), timeout=10)
            assert iq_error(not_owner.value) == ("auth", "forbidden")
        finally:
            await close_all(alice, bob)
    run(scenario(), target)


# -- entering (§7.2) ---------------------------------------------------------------------

def test_password_protected_room_refuses_a_missing_or_wrong_password(target):
    """§7.2.5: without the password, or with a wrong one, not-authorized; with it, in."""
    room = new_room(target, "secret")

    async def scenario():
        alice, bob = await connect_all(target, ALICE + "/pc", BOB + "/pc")
        try:
            await alice.create(room, "Alice", {"passwordprotectedroom": True,
                                               "roomsecret": "s3cret"})
            assert await bob.join_error(room, "Bob") == ("auth", "not-authorized")
            assert await bob.join_error(room, "Bob", password="guess") == ("auth",
                                                                            "not-authorized")
            entered = await bob.join(room, "Bob", password="s3cret")
            assert 110 in entered.codes
            await alice.expect(muc_presence(occupant(room, "Bob")))
        finally:
            await close_all(alice, bob)
    run(scenario(), target)


def test_self_presence_carries_110_and_100_only_where_the_room_is_non_anonymous(target):
    """§7.2.3/§7.2.4: making the room non-anonymous is announced with 172
    (§10.2.1); an occupant then gets 110 and 100 and sees real JIDs. In a
    semi-anonymous room there is no 100 and a participant sees no JIDs."""
    open_room, semi_room = new_room(target, "nonanon"), new_room(target, "semianon")

    async def scenario():
        alice, bob = await connect_all(target, ALICE + "/pc", BOB + "/pc")
        try:
            await alice.create(open_room, "Alice", {"whois": "anyone"})
            await alice.expect(status_message(open_room, 172))

            entered = await bob.join(open_room, "Bob")
            assert {110, 100} <= entered.codes
            assert entered.item["jid"] == BOB + "/pc"
            seen = [p for p in entered.occupants if p.get("from") == occupant(open_room, "Alice")]
            assert [item(p)["jid"] for p in seen] == [ALICE + "/pc"]

            await alice.create(semi_room, "Alice")
            entered = await bob.join(semi_room, "Bob")
            assert 110 in entered.codes and 100 not in entered.codes
            seen = [p for p in entered.occupants if p.get("from") == occupant(semi_room, "Alice")]
            assert len(seen) == 1 and item(seen[0]).get("jid") is None, dump(seen[0])
        finally:
            await close_all(alice, bob)
    run(scenario(), target)


# -- talking (§7.4, §7.5, §8.1) ----------------------------------------------------------

def test_groupchat_message_reaches_every_occupant_once_with_the_senders_id(target):
    """§7.4: every occupant, the sender included, gets each message once, from
    the sender's occupant JID; the reflection keeps the sender's id."""
    room = new_room(target, "fanout")
    nicks = {"Alice": ALICE, "Bob": BOB, "Carol": CAROL, "Dave": DAVE}

    async def scenario():
        clients = await connect_all(target, *(jid + "/pc" for jid in nicks.values()))
        try:
            await clients[0].create(room, "Alice")
            for client, nick in zip(clients[1:], list(nicks)[1:]):
                await client.join(room, nick)
            sent = {}
            for client, nick in zip(clients, nicks):
                for n in range(2):
                    body = f"{nick} says {n}"
                    sent[body] = (nick, client.say(room, body))
            for client, own in zip(clients, nicks):
                for body, (nick, id) in sent.items():
                    got = await client.expect(groupchat(occupant(room, nick), body))
                    assert got.get("to") == client.boundjid.full
                    if nick == own:
                        assert got.get("id") == id, dump(got)
            for client in clients:
                await client.settle()
                for body, (nick, _) in sent.items():
                    assert count(client, groupchat(occupant(room, nick), body)) == 1
            # in order, per sender
            for client in clients:
                got = [b for b in bodies(e for e in client.log
                                         if groupchat(occupant(room, "Bob"))(e)) if b]
                assert got == ["Bob says 0", "Bob says 1"]
        finally:
            await close_all(*clients)
    run(scenario(), target)


def test_subject_change_is_broadcast_and_a_message_with_subject_and_body_is_not_one(target):
    """§8.1 / §7.2.15: a message with only <subject/> changes the subject; one
    with <subject/> and <body/> is an ordinary groupchat message, and the
    subject a later joiner gets is still the real one."""
    room = new_room(target, "subject")

    async def scenario():
        alice, bob, carol = await connect_all(target, ALICE + "/pc", BOB + "/pc", CAROL + "/pc")
        try:
            await alice.create(room, "Alice")
            await bob.join(room, "Bob")
            alice.muc.set_subject(JID(room), "Agenda")
            for client in (alice, bob):
                change = await client.expect(subject_message(room))
                assert change.findtext(CLIENT + "subject") == "Agenda"

            bob.say(room, "hello there", subject="Hijack")
            for client in (alice, bob):
                got = await client.expect(groupchat(occupant(room, "Bob"), "hello there"))
                assert got.findtext(CLIENT + "subject") == "Hijack"
            await bob.settle()
            assert not bob.received(message_from(room, "error")), "the message was refused"
            assert not alice.received(subject_message(room))

            joined = await carol.join(room, "Carol")
            assert joined.subject.findtext(CLIENT + "subject") == "Agenda"
        finally:
            await close_all(alice, bob, carol)
    run(scenario(), target)


def test_subject_is_sent_on_join_after_the_history(target):
    """§7.2.15: self-presence, then the history (stamped by the room,
    §7.2.13), then the subject — the subject stamped with its time too."""
    room = new_room(target, "order")

    async def scenario():
        alice, bob = await connect_all(target, ALICE + "/pc", BOB + "/pc")
        try:
            await alice.create(room, "Alice")
            alice.muc.set_subject(JID(room), "Topic")
            await alice.expect(subject_message(room))
            await alice.say_and_wait(room, "Alice", "one")
            await alice.say_and_wait(room, "Alice", "two")

            joined = await bob.join(room, "Bob")
            assert bodies(joined.history) == ["one", "two"]
            assert all(delayed_by(m, room) for m in joined.history)
            assert all(m.get("from") == occupant(room, "Alice") for m in joined.history)
            assert joined.subject.findtext(CLIENT + "subject") == "Topic"
            assert delayed_by(joined.subject, room), dump(joined.subject)
            order = [bob.arrival(joined.presence), *map(bob.arrival, joined.history),
                     bob.arrival(joined.subject)]
            assert order == sorted(order), order
        finally:
            await close_all(alice, bob)
    run(scenario(), target)


def test_private_message_between_occupants_goes_through_occupant_jids(target):
    """§7.5: a chat message to an occupant JID arrives from the sender's
    occupant JID; to an absent nick: item-not-found; from a non-occupant:
    not-acceptable."""
    room = new_room(target, "private")

    async def scenario():
        alice, bob, carol = await connect_all(target, ALICE + "/pc", BOB + "/pc", CAROL + "/pc")
        try:
            await alice.create(room, "Alice")
            await bob.join(room, "Bob")
            alice.send_message(mto=occupant(room, "Bob"), mbody="psst", mtype="chat")
            got = await bob.expect(message_from(occupant(room, "Alice"), "chat", "psst"))
            assert got.get("to") == BOB + "/pc"
            bob.send_message(mto=occupant(room, "Alice"), mbody="what?", mtype="chat")
            await alice.expect(message_from(occupant(room, "Bob"), "chat", "what?"))

            alice.send_message(mto=occupant(room, "Nobody"), mbody="hello?", mtype="chat")
            refused = await alice.expect(message_from(occupant(room, "Nobody"), "error"))
            assert error_of(refused) == ("cancel", "item-not-found")

            carol.send_message(mto=occupant(room, "Bob"), mbody="let me in", mtype="chat")
            refused = await carol.expect(message_from(occupant(room, "Bob"), "error"))
            assert error_of(refused) == ("cancel", "not-acceptable")
            await bob.settle()
            assert not bob.received(message_from(occupant(room, "Carol")))
            assert not [m for m in bob.log if m.findtext(CLIENT + "body") == "let me in"]
        finally:
            await close_all(alice, bob, carol)
    run(scenario(), target)


# -- nick change, leaving (§7.6, §7.14) ---------------------------------------------------

def test_nick_change_is_303_unavailable_then_the_new_presence_and_a_taken_nick_conflicts(target):
    """§7.6: the old occupant JID goes unavailable with 303 and the new nick,
    then the new one becomes available (110 for the changer); a nick in use
    is refused with conflict (§7.2.9), on change as on entry."""
    room = new_room(target, "nick")

    async def scenario():
        alice, bob, carol = await connect_all(target, ALICE + "/pc", BOB + "/pc", CAROL + "/pc")
        try:
            await alice.create(room, "Alice")
            await bob.join(room, "Bob")
            assert await bob.muc.set_self_nick(JID(room), "Robert", timeout=10) == "Robert"

            gone = await alice.expect(muc_presence(occupant(room, "Bob"), "unavailable", [303]))
            assert item(gone)["nick"] == "Robert"
            back = await alice.expect(muc_presence(occupant(room, "Robert")))
            assert alice.arrival(gone) < alice.arrival(back)
            own = await bob.expect(muc_presence(occupant(room, "Bob"), "unavailable", [303, 110]))
            assert item(own)["nick"] == "Robert"
            await bob.expect(muc_presence(occupant(room, "Robert"), None, [110]))

            bob.send_presence(pto=occupant(room, "Alice"))
            refused = await bob.expect(presence_error(occupant(room, "Alice")))
            assert error_of(refused) == ("cancel", "conflict")
            assert await carol.join_error(room, "Robert") == ("cancel", "conflict")
            await alice.settle()
            assert not alice.received(muc_presence(occupant(room, "Robert"), "unavailable"))
            assert sorted(alice.muc.get_roster(JID(room))) == ["Alice", "Robert"]
        finally:
            await close_all(alice, bob, carol)
    run(scenario(), target)


def test_leaving_sends_unavailable_with_110_to_the_leaver_and_without_to_the_rest(target):
    """§7.14: the leaver gets its own unavailable presence with 110, the others
    the same presence without it."""
    room = new_room(target, "leave")

    async def scenario():
        alice, bob = await connect_all(target, ALICE + "/pc", BOB + "/pc")
        try:
            await alice.create(room, "Alice")
            await bob.join(room, "Bob")
            bob.muc.leave_muc(JID(room), "Bob", "bye")
            own = await bob.expect(muc_presence(occupant(room, "Bob"), "unavailable", [110]))
            assert item(own)["role"] == "none"
            other = await alice.expect(muc_presence(occupant(room, "Bob"), "unavailable",
                                                    without_codes=[110]))
            assert item(other)["role"] == "none"
            assert other.findtext(CLIENT + "status") == "bye"
        finally:
            await close_all(alice, bob)
    run(scenario(), target)


# -- moderation: kick, ban, roles and affiliations (§8, §9) -------------------------------

def test_kick_removes_the_occupant_with_307_and_the_reason(target):
    """§8.2: role none → the kicked occupant gets unavailable with 307, 110 and
    the reason; the others get 307; a kick is not a ban."""
    room = new_room(target, "kick")

    async def scenario():
        alice, bob, carol = await connect_all(target, ALICE + "/pc", BOB + "/pc", CAROL + "/pc")
        try:
            await alice.create(room, "Alice")
            await bob.join(room, "Bob")
            await carol.join(room, "Carol")
            await alice.muc.set_role(JID(room), "Bob", "none", reason="Behave", timeout=10)
            own = await bob.expect(muc_presence(occupant(room, "Bob"), "unavailable", [307, 110]))
            assert (item(own)["role"], item(own)["reason"]) == ("none", "Behave")
            for client in (alice, carol):
                seen = await client.expect(muc_presence(occupant(room, "Bob"), "unavailable",
                                                        [307], [110]))
                assert item(seen)["role"] == "none"
            assert 110 in (await bob.join(room, "Bob")).codes
        finally:
            await close_all(alice, bob, carol)
    run(scenario(), target)


def test_ban_removes_with_301_refuses_rejoin_and_keeps_the_reason_in_the_outcast_list(target):
    """§9.1/§9.2: outcast → unavailable with 301 and the reason; a rejoin is
    forbidden (§7.2.8); the ban list holds the bare JID with its reason."""
    room = new_room(target, "ban")

    async def scenario():
        alice, bob, carol = await connect_all(target, ALICE + "/pc", BOB + "/pc", CAROL + "/pc")
        try:
            await alice.create(room, "Alice")
            await bob.join(room, "Bob")
            await carol.join(room, "Carol")
            await alice.muc.set_affiliation(JID(room), "outcast", jid=BOB, reason="Spam",
                                            timeout=10)
            own = await bob.expect(muc_presence(occupant(room, "Bob"), "unavailable", [301, 110]))
            assert (item(own)["affiliation"], item(own)["role"], item(own)["reason"]) == (
                "outcast", "none", "Spam")
            for client in (alice, carol):
                await client.expect(muc_presence(occupant(room, "Bob"), "unavailable", [301]))
            assert await bob.join_error(room, "Bob") == ("auth", "forbidden")
            assert await alice.muc.get_affiliation_list(JID(room), "outcast", timeout=10) \
                == [JID(BOB)]
            [banned] = await alice.admin_list(room, affiliation="outcast")
            assert (banned.get("jid"), banned.get("affiliation")) == (BOB, "outcast")
            if target.name == "prosody":
                pytest.xfail("Prosody 0.12 does not keep the ban reason for the outcast list "
                             "(§9.2 example 120 shows it)")
            assert banned.findtext(MUC_ADMIN + "reason") == "Spam"
        finally:
            await close_all(alice, bob, carol)
    run(scenario(), target)


def test_membership_moderator_and_voice_are_granted_and_revoked_through_the_admin_iq(target):
    """§9.3–§9.8 and §8.3–§8.5: each change is a muc#admin set, shows in the
    occupant's presence to the room and in the lists the admin fetches."""
    room = new_room(target, "roles")

    async def scenario():
        alice, bob, carol = await connect_all(target, ALICE + "/pc", BOB + "/pc", CAROL + "/pc")
        muc, r = alice.muc, JID(room)
        try:
            await alice.create(room, "Alice")
            await bob.join(room, "Bob")
            await carol.join(room, "Carol")

            bob_jid, carol_jid = occupant(room, "Bob"), occupant(room, "Carol")

            await muc.set_affiliation(r, "member", jid=BOB, timeout=10)
            for client in (alice, bob, carol):
                await client.expect(muc_presence(bob_jid, affiliation="member",
                                                 role="participant"))
            assert await muc.get_affiliation_list(r, "member", timeout=10) == [JID(BOB)]

            await muc.set_role(r, "Carol", "moderator", timeout=10)
            for client in (alice, bob, carol):
                await client.expect(muc_presence(carol_jid, role="moderator"))
            assert sorted(await muc.get_roles_list(r, "moderator", timeout=10)) == [
                "Alice", "Carol"]

            await muc.set_role(r, "Bob", "visitor", reason="Quiet", timeout=10)
            for client in (alice, bob, carol):
                await client.expect(muc_presence(bob_jid, role="visitor"))
            assert await muc.get_roles_list(r, "visitor", timeout=10) == ["Bob"]
            bob.say(room, "can I speak?")
            refused = await bob.expect(message_from(room, "error"))
            assert error_of(refused) == ("auth", "forbidden")

            await muc.set_role(r, "Bob", "participant", timeout=10)
            for client in (alice, bob, carol):
                await client.expect(muc_presence(bob_jid, role="participant"))
            assert sorted(await muc.get_roles_list(r, "participant", timeout=10)) == ["Bob"]
            await bob.say_and_wait(room, "Bob", "I can speak")

            await muc.set_role(r, "Carol", "participant", timeout=10)
            for client in (alice, bob, carol):
                await client.expect(muc_presence(carol_jid, role="participant"))
            assert await muc.get_roles_list(r, "moderator", timeout=10) == ["Alice"]

            await muc.set_affiliation(r, "none", jid=BOB, timeout=10)
            for client in (alice, bob, carol):
                await client.expect(muc_presence(bob_jid, affiliation="none",
                                                 role="participant"))
            assert await muc.get_affiliation_list(r, "member", timeout=10) == []
        finally:
            await close_all(alice, bob, carol)
    run(scenario(), target)


def test_moderated_room_refuses_a_visitors_message_with_forbidden(target):
    """§7.4 / §5.1.1: in a moderated room an unaffiliated user enters as a
    visitor, and its groupchat message is refused with forbidden, not relayed."""
    room = new_room(target, "moderated")

    async def scenario():
        alice, bob = await connect_all(target, ALICE + "/pc", BOB + "/pc")
        try:
            await alice.create(room, "Alice", {"moderatedroom": True})
            assert (await bob.join(room, "Bob")).item["role"] == "visitor"
            bob.say(room, "hear me")
            refused = await bob.expect(message_from(room, "error"))
            assert error_of(refused) == ("auth", "forbidden")
            await alice.settle()
            assert not alice.received(groupchat(occupant(room, "Bob"), "hear me"))
        finally:
            await close_all(alice, bob)
    run(scenario(), target)


def test_voice_request_reaches_moderators_and_its_approval_gives_voice(target):
    """§7.13 / §8.6: a visitor's muc#request form goes to the moderators with
    its JID and nick; a moderator submitting it with muc#request_allow makes
    the visitor a participant."""
    room = new_room(target, "voice")
    request_type = MUC_NS + "#request"

    async def scenario():
        alice, bob = await connect_all(target, ALICE + "/pc", BOB + "/pc")
        try:
            await alice.create(room, "Alice", {"moderatedroom": True})
            assert (await bob.join(room, "Bob")).item["role"] == "visitor"
            bob.muc.request_voice(JID(room), "participant")

            def voice_request(e):
                return (e.tag == CLIENT + "message" and e.get("from") == room
                        and form_of(e, request_type) is not None)
            voice_request.__doc__ = "a muc#request form from the room"
            request = await alice.expect(voice_request)
            values = form_values(form_of(request, request_type))
            assert values["muc#roomnick"] == ["Bob"]
            assert values["muc#role"] == ["participant"]
            assert bare(values["muc#jid"][0]) == BOB

            approval = alice.make_message(mto=room)
            approval.append(submit_form(request_type, {
                "muc#role": "participant", "muc#jid": values["muc#jid"][0],
                "muc#roomnick": "Bob", "muc#request_allow": True}))
            approval.send()
            await bob.expect(muc_presence(occupant(room, "Bob"), None, [110], role="participant"))
            await alice.expect(muc_presence(occupant(room, "Bob"), role="participant"))
            await bob.say_and_wait(room, "Bob", "thank you")
        finally:
            await close_all(alice, bob)
    run(scenario(), target)


# -- members-only (§7.2.6, §9.4, §10.2) ---------------------------------------------------

def test_members_only_room_refuses_a_non_member_with_registration_required(target):
    """§7.2.6: not on the member list → registration-required; a member gets in."""
    room = new_room(target, "members")

    async def scenario():
        alice, bob, carol = await connect_all(target, ALICE + "/pc", BOB + "/pc", CAROL + "/pc")
        try:
            await alice.create(room, "Alice", {"membersonly": True})
            await alice.muc.set_affiliation(JID(room), "member", jid=BOB, timeout=10)
            assert await carol.join_error(room, "Carol") == ("auth", "registration-required")
            entered = await bob.join(room, "Bob")
            assert (entered.item["affiliation"], entered.item["role"]) == ("member",
                                                                           "participant")
        finally:
            await close_all(alice, bob, carol)
    run(scenario(), target)


def test_member_whose_membership_is_revoked_while_present_is_removed_with_321(target):
    """§9.4: in a members-only room, revoking a present member's membership
    removes it with 321 (110 to itself)."""
    room = new_room(target, "revoke")

    async def scenario():
        alice, bob = await connect_all(target, ALICE + "/pc", BOB + "/pc")
        try:
            await alice.create(room, "Alice", {"membersonly": True})
            await alice.muc.set_affiliation(JID(room), "member", jid=BOB, timeout=10)
            await bob.join(room, "Bob")
            await alice.muc.set_affiliation(JID(room), "none", jid=BOB, timeout=10)
            own = await bob.expect(muc_presence(occupant(room, "Bob"), "unavailable", [321, 110]))
            assert (item(own)["affiliation"], item(own)["role"]) == ("none", "none")
            await alice.expect(muc_presence(occupant(room, "Bob"), "unavailable", [321], [110]))
            assert await bob.join_error(room, "Bob") == ("auth", "registration-required")
        finally:
            await close_all(alice, bob)
    run(scenario(), target)


def test_switching_a_room_to_members_only_removes_non_members_with_322(target):
    """§10.2: configuring members-only removes every present non-member with
    322; members stay."""
    room = new_room(target, "switch")

    async def scenario():
        alice, bob, carol = await connect_all(target, ALICE + "/pc", BOB + "/pc", CAROL + "/pc")
        try:
            await alice.create(room, "Alice")
            await bob.join(room, "Bob")
            await carol.join(room, "Carol")
            await alice.muc.set_affiliation(JID(room), "member", jid=CAROL, timeout=10)
            await alice.configure(room, {"membersonly": True})
            await bob.expect(muc_presence(occupant(room, "Bob"), "unavailable", [322, 110]))
            if target.name == "prosody":
                pytest.xfail("Prosody 0.12 sends the 322 unavailable only to the removed "
                             "occupant, not to the remaining ones (§10.2 says both)")
            for client in (alice, carol):
                await client.expect(muc_presence(occupant(room, "Bob"), "unavailable", [322]))
            await alice.settle()
            assert not alice.received(muc_presence(occupant(room, "Carol"), "unavailable"))
            assert not alice.received(muc_presence(occupant(room, "Alice"), "unavailable"))
            await carol.say_and_wait(room, "Carol", "still here")
        finally:
            await close_all(alice, bob, carol)
    run(scenario(), target)


# -- invitations (§7.8.2) -----------------------------------------------------------------

def test_mediated_invitation_comes_from_the_room_and_a_decline_goes_back_to_the_inviter(target):
    """§7.8.2: the invitee gets the invitation from the room JID with the
    inviter's JID and reason; its decline reaches the inviter from the room."""
    room = new_room(target, "invite")

    async def scenario():
        alice, bob = await connect_all(target, ALICE + "/pc", BOB + "/pc")
        try:
            await alice.create(room, "Alice", {"whois": "anyone"})
            alice.muc.invite(JID(room), BOB, reason="Join us")

            def invitation(e):
                return (e.tag == CLIENT + "message" and e.get("from") == room
                        and e.find(f"{USER}x/{USER}invite") is not None)
            invitation.__doc__ = "a mediated invitation from the room"
            got = await bob.expect(invitation)
            invite = got.find(f"{USER}x/{USER}invite")
            assert bare(invite.get("from")) == ALICE, dump(got)
            assert invite.findtext(USER + "reason") == "Join us"
            assert got.get("to") in (BOB, BOB + "/pc")

            bob.muc.decline(JID(room), invite.get("from"), reason="Busy")

            def declined(e):
                return (e.tag == CLIENT + "message" and e.get("from") == room
                        and e.find(f"{USER}x/{USER}decline") is not None)
            declined.__doc__ = "a decline from the room"
            answer = await alice.expect(declined)
            decline = answer.find(f"{USER}x/{USER}decline")
            assert bare(decline.get("from")) == BOB, dump(answer)
            assert decline.findtext(USER + "reason") == "Busy"
        finally:
            await close_all(alice, bob)
    run(scenario(), target)


# -- registration (§7.10, §7.12) ----------------------------------------------------------

def test_room_registration_reserves_a_nick_that_others_then_get_conflict_for(target):
    """§7.10: a member fetches the muc#register form and submits a nick; the
    nick is then reserved — another user entering with it gets conflict —
    and §7.12 disco shows it to its owner."""
    room = new_room(target, "register")
    register_type = MUC_NS + "#register"

    async def scenario():
        alice, bob, carol = await connect_all(target, ALICE + "/pc", BOB + "/pc", CAROL + "/pc")
        try:
            await alice.create(room, "Alice")
            # Prosody lets only affiliated users register (XEP: MAY restrict)
            await alice.muc.set_affiliation(JID(room), "member", jid=BOB, timeout=10)
            reply = await bob.iq("get", "<query xmlns='jabber:iq:register'/>", to=room)
            form = form_of(reply, register_type)
            assert form is not None, dump(reply)
            assert "muc#register_roomnick" in form_values(form)

            submit = submit_form(register_type, {"muc#register_roomnick": "Bobby"})
            await bob.iq("set", "<query xmlns='jabber:iq:register'>"
                                f"{dump(submit.xml)}</query>", to=room)
            again = await bob.iq("get", "<query xmlns='jabber:iq:register'/>", to=room)
            assert again.find(f"{REGISTER}query/{REGISTER}registered") is not None, dump(again)

            assert await carol.join_error(room, "Bobby") == ("cancel", "conflict")
            info = await bob.disco_info(room, node="x-roomuser-item")
            assert [i.get("name") for i in info.findall(DISCO_INFO + "identity")] == ["Bobby"]
            entered = await bob.join(room, "Bobby")
            assert entered.item["affiliation"] == "member"
        finally:
            await close_all(alice, bob, carol)
    run(scenario(), target)


# -- destruction (§10.9) ------------------------------------------------------------------

def test_destroying_a_room_sends_each_occupant_unavailable_with_the_venue_and_reason(target):
    """§10.9: each occupant gets one unavailable presence holding
    <destroy jid=venue><reason/></destroy>, and nobody else's; the room is gone
    (entering it creates a new one)."""
    room, venue = new_room(target, "doomed"), new_room(target, "venue")

    async def scenario():
        alice, bob, carol = await connect_all(target, ALICE + "/pc", BOB + "/pc", CAROL + "/pc")
        try:
            await alice.create(room, "Alice")
            await bob.join(room, "Bob")
            await carol.join(room, "Carol")
            with pytest.raises(IqError) as not_owner:
                await bob.muc.destroy(JID(room), reason="Mine now", timeout=10)
            assert iq_error(not_owner.value) == ("auth", "forbidden")

            await alice.muc.destroy(JID(room), reason="Moving", altroom=venue, timeout=10)
            for client, nick in ((alice, "Alice"), (bob, "Bob"), (carol, "Carol")):
                gone = await client.expect(muc_presence(occupant(room, nick), "unavailable"))
                destroy = gone.find(f"{USER}x/{USER}destroy")
                assert destroy is not None, dump(gone)
                assert destroy.get("jid") == venue
                assert destroy.findtext(USER + "reason") == "Moving"
            await bob.settle()
            others = [e for e in bob.log if e.tag == CLIENT + "presence"
                      and e.get("type") == "unavailable"
                      and e.get("from") in (occupant(room, "Alice"), occupant(room, "Carol"))]
            assert others == [], [dump(e) for e in others]
            assert 201 in (await bob.join(room, "Bob")).codes
        finally:
            await close_all(alice, bob, carol)
    run(scenario(), target)


def test_server_admin_can_destroy_a_room_it_does_not_own(target):
    """[server] admins are owners of every room (as Prosody's
    component_admins_as_room_owners): admin@localhost destroys alice's room."""
    room = new_room(target, "adminkill")

    async def scenario():
        alice, bob, admin = await connect_all(target, ALICE + "/pc", BOB + "/pc", ADMIN + "/pc")
        try:
            await alice.create(room, "Alice")
            await bob.join(room, "Bob")
            await admin.muc.destroy(JID(room), reason="Cleanup", timeout=10)
            for client, nick in ((alice, "Alice"), (bob, "Bob")):
                gone = await client.expect(muc_presence(occupant(room, nick), "unavailable"))
                destroy = gone.find(f"{USER}x/{USER}destroy")
                assert destroy is not None and destroy.findtext(USER + "reason") == "Cleanup"
        finally:
            await close_all(alice, bob, admin)
    run(scenario(), target)


# -- discussion history on join (§7.2.13, §7.2.14) -----------------------------------------

def test_history_on_join_is_limited_by_maxstanzas(target):
    """maxstanzas=2 → the last two messages, oldest first; 0 → none."""
    room = new_room(target, "maxstanzas")

    async def scenario():
        alice, bob, carol = await connect_all(target, ALICE + "/pc", BOB + "/pc", CAROL + "/pc")
        try:
            await alice.create(room, "Alice")
            for n in range(1, 5):
                await alice.say_and_wait(room, "Alice", f"m{n}")
            joined = await bob.join(room, "Bob", maxstanzas=2)
            assert bodies(joined.history) == ["m3", "m4"]
            assert all(delayed_by(m, room) for m in joined.history)
            assert (await carol.join(room, "Carol", maxstanzas=0)).history == []
        finally:
            await close_all(alice, bob, carol)
    run(scenario(), target)


def test_history_on_join_is_limited_by_maxchars(target):
    """maxchars counts whole stanzas: room for one ~1 kB message gets only the
    newest; maxchars=0 gets none."""
    room = new_room(target, "maxchars")

    async def scenario():
        alice, bob, carol = await connect_all(target, ALICE + "/pc", BOB + "/pc", CAROL + "/pc")
        try:
            await alice.create(room, "Alice")
            for letter in "abc":
                await alice.say_and_wait(room, "Alice", letter * 1000)
            joined = await bob.join(room, "Bob", maxchars=1600)
            assert bodies(joined.history) == ["c" * 1000]
            assert (await carol.join(room, "Carol", maxchars=0)).history == []
        finally:
            await close_all(alice, bob, carol)
    run(scenario(), target)


def test_history_on_join_is_limited_by_seconds(target):
    """seconds=2 → only what was said in the last two seconds."""
    room = new_room(target, "seconds")

    async def scenario():
        alice, bob = await connect_all(target, ALICE + "/pc", BOB + "/pc")
        try:
            await alice.create(room, "Alice")
            await alice.say_and_wait(room, "Alice", "old")
            await asyncio.sleep(3.1)
            await alice.say_and_wait(room, "Alice", "new")
            joined = await bob.join(room, "Bob", seconds=2)
            assert bodies(joined.history) == ["new"]
        finally:
            await close_all(alice, bob)
    run(scenario(), target)


def test_history_on_join_is_limited_by_since(target):
    """since=T → only what was said at or after T."""
    room = new_room(target, "since")

    async def scenario():
        alice, bob = await connect_all(target, ALICE + "/pc", BOB + "/pc")
        try:
            await alice.create(room, "Alice")
            await alice.say_and_wait(room, "Alice", "before")
            since = math.floor(time.time()) + 1  # a whole second after "before"
            await asyncio.sleep(since + 1.1 - time.time())
            await alice.say_and_wait(room, "Alice", "after")
            joined = await bob.join(room, "Bob", since=dt.datetime.fromtimestamp(
                since, dt.timezone.utc))
            assert bodies(joined.history) == ["after"]
        finally:
            await close_all(alice, bob)
    run(scenario(), target)


# -- presence probes, disco, self-ping --------------------------------------------------------

def test_presence_probe_to_an_occupant_is_answered_with_its_current_presence(target):
    """§17.3 (MAY handle probes), as Prosody: an occupant probing an occupant
    JID gets that occupant's current presence; a non-occupant gets
    not-acceptable."""
    room = new_room(target, "probe")

    async def scenario():
        alice, bob, carol = await connect_all(target, ALICE + "/pc", BOB + "/pc", CAROL + "/pc")
        try:
            await alice.create(room, "Alice")
            await bob.join(room, "Bob")
            alice.send_presence(pto=occupant(room, "Alice"), pshow="dnd", pstatus="Reading")
            await bob.expect(muc_presence(occupant(room, "Alice")))

            bob.send_presence(pto=occupant(room, "Alice"), ptype="probe")
            answer = await bob.expect(muc_presence(occupant(room, "Alice")))
            assert answer.findtext(CLIENT + "show") == "dnd"
            assert answer.findtext(CLIENT + "status") == "Reading"
            assert (item(answer)["affiliation"], item(answer)["role"]) == ("owner", "moderator")

            carol.send_presence(pto=occupant(room, "Alice"), ptype="probe")
            refused = await carol.expect(presence_error(occupant(room, "Alice")))
            assert error_of(refused) == ("cancel", "not-acceptable")
        finally:
            await close_all(alice, bob, carol)
    run(scenario(), target)


def test_room_disco_info_lists_muc_features_and_the_roominfo_form(target):
    """§6.4: the room's identity, its muc_ features, and the muc#roominfo form
    with the number of occupants."""
    room = new_room(target, "info")

    async def scenario():
        alice, bob, carol = await connect_all(target, ALICE + "/pc", BOB + "/pc", CAROL + "/pc")
        try:
            await alice.create(room, "Alice", {"roomname": "Info room", "publicroom": True})
            await bob.join(room, "Bob")
            info = await carol.disco_info(room)
            identities = [(i.get("category"), i.get("type"))
                          for i in info.findall(DISCO_INFO + "identity")]
            assert identities == [("conference", "text")]
            features = {f.get("var") for f in info.findall(DISCO_INFO + "feature")}
            assert {MUC_NS, "muc_public", "muc_temporary", "muc_open", "muc_unmoderated",
                    "muc_semianonymous", "muc_unsecured"} <= features, features
            assert not features & {"muc_hidden", "muc_persistent", "muc_membersonly",
                                   "muc_moderated", "muc_nonanonymous",
                                   "muc_passwordprotected"}
            form = form_of(info, MUC_NS + "#roominfo")
            assert form is not None and form.get("type") == "result", dump(info)
            assert form_values(form)["muc#roominfo_occupants"] == ["2"]
        finally:
            await close_all(alice, bob, carol)
    run(scenario(), target)


def test_service_disco_items_lists_public_rooms_and_not_hidden_ones(target):
    """§6.3: disco#items of the service lists public rooms only; the hidden
    room says muc_hidden in its own disco#info."""
    public, hidden = new_room(target, "listed"), new_room(target, "hidden")

    async def scenario():
        alice, carol = await connect_all(target, ALICE + "/pc", CAROL + "/pc")
        try:
            await alice.create(public, "Alice", {"publicroom": True})
            await alice.create(hidden, "Alice", {"publicroom": False})
            rooms = await carol.disco_items(target.muc)
            assert public in rooms
            assert hidden not in rooms
            features = {f.get("var") for f in
                        (await carol.disco_info(hidden)).findall(DISCO_INFO + "feature")}
            assert "muc_hidden" in features and "muc_public" not in features
        finally:
            await close_all(alice, carol)
    run(scenario(), target)


def test_self_ping_is_answered_for_an_occupant_and_not_acceptable_otherwise(target):
    """XEP-0410: a ping to one's own occupant JID is answered by the room; from
    someone not (or no longer) joined it is not-acceptable."""
    room = new_room(target, "selfping")

    async def scenario():
        alice, bob, carol = await connect_all(target, ALICE + "/pc", BOB + "/pc", CAROL + "/pc")
        try:
            await alice.create(room, "Alice")
            await bob.join(room, "Bob")
            pong = await bob.iq("get", PING, to=occupant(room, "Bob"))
            assert (pong.get("type"), pong.get("from")) == ("result", occupant(room, "Bob"))

            with pytest.raises(IqError) as stranger:
                await carol.iq("get", PING, to=occupant(room, "Carol"))
            assert iq_error(stranger.value) == ("cancel", "not-acceptable")

            bob.muc.leave_muc(JID(room), "Bob")
            await bob.expect(muc_presence(occupant(room, "Bob"), "unavailable", [110]))
            with pytest.raises(IqError) as left:
                await bob.iq("get", PING, to=occupant(room, "Bob"))
            assert iq_error(left.value) == ("cancel", "not-acceptable")
        finally:
            await close_all(alice, bob, carol)
    run(scenario(), target)


# -- multi-session nicks ------------------------------------------------------------------

def test_multi_session_nick_delivers_to_both_sessions_and_shows_one_occupant(target):
    """One bare JID joined from two resources under one nick is one occupant
    to the others; both sessions get the room's messages; one session leaving
    does not make the occupant leave."""
    room = new_room(target, "multi")

    async def scenario():
        alice, bob, pc, phone = await connect_all(target, ALICE + "/pc", BOB + "/pc",
                                                  CAROL + "/pc", CAROL + "/phone")
        carol_jid = occupant(room, "Carol")
        try:
            await alice.create(room, "Alice")
            await bob.join(room, "Bob")
            await pc.join(room, "Carol")
            assert 110 in (await phone.join(room, "Carol")).codes
            await bob.settle()
            assert sorted(bob.muc.get_roster(JID(room))) == ["Alice", "Bob", "Carol"]
            assert not bob.received(muc_presence(carol_jid, "unavailable"))
            info = await bob.disco_info(room)
            assert form_values(form_of(info, MUC_NS + "#roominfo"))[
                "muc#roominfo_occupants"] == ["3"]

            await alice.say_and_wait(room, "Alice", "hello both")
            for session in (pc, phone):
                await session.expect(groupchat(occupant(room, "Alice"), "hello both"))
            phone.say(room, "from the phone")
            for client in (alice, bob, pc, phone):
                await client.expect(groupchat(carol_jid, "from the phone"))

            phone.muc.leave_muc(JID(room), "Carol")
            await phone.expect(muc_presence(carol_jid, "unavailable", [110]))
            await alice.say_and_wait(room, "Alice", "still there?")
            await pc.expect(groupchat(occupant(room, "Alice"), "still there?"))
            for client in (alice, bob, pc):
                await client.settle()
                assert count(client, groupchat(carol_jid, "from the phone")) == 1
            assert not bob.received(muc_presence(carol_jid, "unavailable"))
            assert not pc.received(muc_presence(carol_jid, "unavailable"))
        finally:
            await close_all(alice, bob, pc, phone)
    run(scenario(), target)


# -- persistence (xmppd only: kill -9 and restart) -----------------------------------------

def test_persistent_room_survives_kill_and_restart(make_muc_target):
    """A persistent room's configuration, affiliations (a ban with its reason, a
    member), registered nick and history are all there after ``kill -9``."""
    require_xmppd("restarts the server with kill -9")
    target = make_muc_target()
    room = new_room(target, "durable")

    async def before():
        alice, bob = await connect_all(target, ALICE + "/pc", BOB + "/pc")
        try:
            await alice.create(room, "Alice", {"persistentroom": True, "roomname": "Durable",
                                               "roomdesc": "Survives", "whois": "anyone"})
            await alice.muc.set_affiliation(JID(room), "member", jid=BOB, timeout=10)
            await alice.muc.set_affiliation(JID(room), "outcast", jid=DAVE, reason="Spam",
                                            timeout=10)
            submit = submit_form(MUC_NS + "#register", {"muc#register_roomnick": "Bobby"})
            await bob.iq("set", f"<query xmlns='jabber:iq:register'>{dump(submit.xml)}</query>",
                         to=room)
            for n in range(1, 4):
                await alice.say_and_wait(room, "Alice", f"kept {n}")
        finally:
            await close_all(alice, bob)

    async def after():
        alice, bob, carol, dave = await connect_all(target, ALICE + "/pc", BOB + "/pc",
                                                    CAROL + "/pc", DAVE + "/pc")
        try:
            joined = await alice.join(room, "Alice")
            assert 201 not in joined.codes
            assert joined.item["affiliation"] == "owner"
            assert bodies(joined.history) == ["kept 1", "kept 2", "kept 3"]
            config = form_values((await alice.muc.get_room_config(JID(room), timeout=10)).xml)
            assert config["muc#roomconfig_roomname"] == ["Durable"]
            assert config["muc#roomconfig_roomdesc"] == ["Survives"]
            assert config["muc#roomconfig_persistentroom"] in (["1"], ["true"])
            assert config["muc#roomconfig_whois"] == ["anyone"]
            assert await alice.muc.get_affiliation_list(JID(room), "member", timeout=10) \
                == [JID(BOB)]
            [banned] = await alice.admin_list(room, affiliation="outcast")
            assert banned.get("jid") == DAVE
            assert banned.findtext(MUC_ADMIN + "reason") == "Spam"
            assert await dave.join_error(room, "Dave") == ("auth", "forbidden")
            assert await carol.join_error(room, "Bobby") == ("cancel", "conflict")
            registered = await bob.iq("get", "<query xmlns='jabber:iq:register'/>", to=room)
            assert registered.find(f"{REGISTER}query/{REGISTER}registered") is not None
            assert (await bob.join(room, "Bobby")).item["affiliation"] == "member"
        finally:
            await close_all(alice, bob, carol, dave)

    run(before(), target)
    target.restart(kill=True)
    run(after(), target)
