"""Room archives end to end, driven by slixmpp: ``xep_0045`` in the rooms,
``xep_0313`` querying the room's JID (its RSM iterator pages the whole
archive, forwards and backwards), ``xep_0425`` moderating.

Against a real ``twistd xmppd`` on SQLite: hundreds of groupchat messages
archived and paged back completely both ways with no gap or duplicate, the
ids of the results being the stanza-ids every occupant saw; a ``kill -9``
in the middle (what was reflected survives, and the history of a joiner
comes from the archive); a room with archiving off; a moderated message
(the notice to the room, the tombstone in the archive, a participant
refused); a private message in the recipient's own archive, and a forged
stanza-id in one that never arrives (beside xmppd's mam component, or
Prosody's mod_mam with ``XMPPD_MUC_AGAINST=prosody``). Prosody's side of the same queries is
tests/e2e/test_muc_mam_differential.py.
"""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("slixmpp")

from slixmpp import JID  # noqa: E402
from slixmpp.exceptions import IqError  # noqa: E402

from conftest import PASSWORD  # noqa: E402
from muc_target import (AGAINST, MUC_DOMAIN, XMPPD_COMPONENTS, _ProsodyTarget,  # noqa: E402
                        make_muc_target, require_xmppd)  # noqa: F401
from prosody import MODULES as PROSODY_MODULES  # noqa: E402
from prosody import ProsodyProcess, ProsodyUnavailable  # noqa: E402
from mucslix import (CLIENT, DISCO_INFO, PLUGINS, TIMEOUT, MUCClient,  # noqa: E402
                     close_all, codes, error_of, new_room, occupant, run)

ALICE, BOB, CAROL = (f"{u}@localhost" for u in ("alice", "bob", "carol"))
SID = "{urn:xmpp:sid:0}"
MAM_PLUGINS = (*PLUGINS, "xep_0059", "xep_0297", "xep_0313", "xep_0425")
RETRACT = "{urn:xmpp:message-retract:1}"
MODERATE = "{urn:xmpp:message-moderate:1}"


@pytest.fixture(scope="module")
def target(make_muc_target):
    require_xmppd("the archive of xmppd's rooms (Prosody's: the differential test)")
    # a burst of hundreds of messages is the point here, not the rate limit
    return make_muc_target(users=(ALICE, BOB, CAROL),
                           muc={"message_rate": "10000", "message_burst": "10000"})


async def connect(target, jid: str) -> MUCClient:
    client = MUCClient(jid, PASSWORD, MAM_PLUGINS)
    client.connect(target.host, target.client_port)
    done, _ = await asyncio.wait([client.started], timeout=TIMEOUT)
    if not done or not client.started.result():
        client.abort()
        raise AssertionError(f"{jid} could not log in to {target.name}")
    await client.online()
    return client


def stanza_id(message, room: str) -> str | None:
    for sid in message.findall(SID + "stanza-id"):
        if sid.get("by") == room:
            return sid.get("id")
    return None


async def reflected(client: MUCClient, room: str, nick: str, count: int) -> list:
    """The next ``count`` groupchat messages with a body from ``nick``, in order."""
    sender = occupant(room, nick)
    out = []
    for _ in range(count):
        out.append(await client.expect(
            lambda e: e.tag == CLIENT + "message" and e.get("from") == sender
            and e.findtext(CLIENT + "body") is not None, timeout=30))
    return out


async def archive(client: MUCClient, room: str, reverse: bool = False, page: int = 50):
    """Every archived message, through slixmpp's RSM iterator: (id, body) pairs
    in the order the iterator yields them."""
    out = []
    async for message in client.plugin["xep_0313"].iterate(
            jid=JID(room), reverse=reverse, rsm={"max": page}):
        forwarded = message["mam_result"]["forwarded"]["stanza"]
        out.append((message["mam_result"]["id"], forwarded["body"] or None))
    return out


def test_hundreds_of_messages_are_archived_and_paged_back_completely_both_ways(target):
    room = new_room(target, "mam-many")
    count = 300

    async def scenario():
        alice, bob = await asyncio.gather(connect(target, ALICE), connect(target, BOB))
        try:
            await alice.create(room, "Alice")
            await bob.join(room, "Bob")
            sent = [f"message {i}" for i in range(count)]
            for body in sent:
                alice.say(room, body)
            seen = await reflected(bob, room, "Alice", count)
            assert [m.findtext(CLIENT + "body") for m in seen] == sent
            ids = [stanza_id(m, room) for m in seen]
            assert None not in ids and len(set(ids)) == count
            # what alice saw of her own messages carries the same ids
            mine = await reflected(alice, room, "Alice", count)
            assert [stanza_id(m, room) for m in mine] == ids

            for page in (50, 7):
                forwards = await archive(bob, room, page=page)
                assert forwards == list(zip(ids, sent)), f"forwards, pages of {page}"
                backwards = await archive(bob, room, reverse=True, page=page)
                assert backwards == list(zip(ids, sent))[::-1], f"backwards, pages of {page}"
        finally:
            await close_all(alice, bob)
    run(scenario(), target)


def test_a_kill_9_in_the_middle_loses_nothing_that_was_reflected(target):
    room = new_room(target, "mam-kill")

    async def scenario():
        alice, bob = await asyncio.gather(connect(target, ALICE), connect(target, BOB))
        try:
            await alice.create(room, "Alice", {"persistentroom": True})
            await bob.join(room, "Bob")
            before = [f"before {i}" for i in range(100)]
            for body in before:
                alice.say(room, body)
            ids = [stanza_id(m, room) for m in await reflected(bob, room, "Alice", 100)]
        finally:
            await close_all(alice, bob)
        target.restart(kill=True)
        alice, bob = await asyncio.gather(connect(target, ALICE), connect(target, BOB))
        try:
            await alice.join(room, "Alice")
            # the joiner's history comes from the archive after the restart
            joined = await bob.join(room, "Bob")
            history = [m for m in joined.history if m.findtext(CLIENT + "body")]
            assert [m.findtext(CLIENT + "body") for m in history] == before[-20:]
            assert [stanza_id(m, room) for m in history] == ids[-20:]
            after = [f"after {i}" for i in range(100)]
            for body in after:
                alice.say(room, body)
            ids += [stanza_id(m, room) for m in await reflected(bob, room, "Alice", 100)]
            assert await archive(bob, room) == list(zip(ids, before + after))
            assert await archive(bob, room, reverse=True) == \
                list(zip(ids, before + after))[::-1]
        finally:
            await close_all(alice, bob)
    run(scenario(), target)


def test_a_room_with_archiving_off_stamps_and_keeps_nothing(target):
    room = new_room(target, "mam-off")

    async def scenario():
        alice, bob = await asyncio.gather(connect(target, ALICE), connect(target, BOB))
        try:
            await alice.create(room, "Alice", {"enablearchiving": False})
            await bob.join(room, "Bob")
            features = {f.get("var") for f in (await bob.disco_info(room)).findall(
                DISCO_INFO + "feature")}
            assert "urn:xmpp:mam:2" not in features and "urn:xmpp:sid:0" in features
            alice.say(room, "not kept")
            (message,) = await reflected(bob, room, "Alice", 1)
            assert stanza_id(message, room) is None
            assert await archive(bob, room) == []
            # on again: occupants are told (170), and what follows is kept
            await alice.configure(room, {"enablearchiving": True})
            notice = await bob.expect(lambda e: e.tag == CLIENT + "message"
                                      and e.get("from") == room and 170 in codes(e))
            assert 171 not in codes(notice)
            alice.say(room, "kept")
            (message,) = await reflected(bob, room, "Alice", 1)
            assert await archive(bob, room) == [(stanza_id(message, room), "kept")]
        finally:
            await close_all(alice, bob)
    run(scenario(), target)


def test_a_moderator_retracts_a_message_and_a_participant_may_not(target):
    room = new_room(target, "mam-mod")

    async def scenario():
        alice, bob, carol = await asyncio.gather(
            connect(target, ALICE), connect(target, BOB), connect(target, CAROL))
        try:
            await alice.create(room, "Alice")
            await bob.join(room, "Bob")
            await carol.join(room, "Carol")
            bob.say(room, "buy my potions")
            (spam,) = await reflected(carol, room, "Bob", 1)
            target_id = stanza_id(spam, room)

            with pytest.raises(IqError) as refused:
                await carol.plugin["xep_0425"].moderate(JID(room), target_id, "mine",
                                                        timeout=TIMEOUT)
            assert error_of(refused.value.iq.xml) == ("auth", "forbidden")

            await alice.plugin["xep_0425"].moderate(JID(room), target_id, "spam",
                                                    timeout=TIMEOUT)
            notice = await carol.expect(lambda e: e.tag == CLIENT + "message"
                                        and e.find(RETRACT + "retract") is not None)
            retract = notice.find(RETRACT + "retract")
            assert notice.get("from") == room and retract.get("id") == target_id
            assert retract.find(MODERATE + "moderated").get("by") == occupant(room, "Alice")
            assert retract.findtext(RETRACT + "reason") == "spam"
            kept = await archive(carol, room)
            assert kept[0] == (target_id, None)       # the tombstone, in its place
            assert kept[1][0] == stanza_id(notice, room)   # and the notice itself
        finally:
            await close_all(alice, bob, carol)
    run(scenario(), target)


@pytest.fixture(scope="module")
def with_user_archives(make_muc_target):
    """Rooms beside the users' own archives: xmppd's mam component, or
    (``XMPPD_MUC_AGAINST=prosody``) Prosody's mod_mam on the user host."""
    if AGAINST != "prosody":
        yield make_muc_target(users=(ALICE, BOB),
                              server={"components": XMPPD_COMPONENTS + " mam"})
        return
    process = ProsodyProcess((ALICE, BOB), PASSWORD, (*PROSODY_MODULES, "mam"),
                             components={MUC_DOMAIN: "muc"})
    try:
        process.start()
    except ProsodyUnavailable as e:
        pytest.skip(f"Debian's prosody cannot be installed here: {e}")
    yield _ProsodyTarget(process)
    process.stop()


def _sids(message) -> list[tuple[str | None, str | None]]:
    return [(s.get("by"), s.get("id")) for s in message.findall(SID + "stanza-id")]


def _pm_from(room: str, nick: str, body: str):
    return lambda e: e.tag == CLIENT + "message" and e.get("type") == "chat" \
        and e.get("from") == occupant(room, nick) and e.findtext(CLIENT + "body") == body


async def _own_archive(client: MUCClient, partner: str) -> list[tuple[str, str]]:
    kept = []
    async for message in client.plugin["xep_0313"].iterate(with_jid=JID(partner)):
        forwarded = message["mam_result"]["forwarded"]["stanza"]
        kept.append((message["mam_result"]["id"], forwarded["body"]))
    return kept


def test_a_private_message_is_archived_for_its_recipient_with_the_room_as_partner(
        with_user_archives):
    """Prosody's room routes a PM to the occupant's server, whose mod_mam
    archives it ``with`` the room's bare JID and stamps the copy delivered
    with the recipient's stanza-id; xmppd's room does the same."""
    target = with_user_archives
    room = new_room(target, "mam-pm")

    async def scenario():
        alice, bob = await asyncio.gather(connect(target, ALICE), connect(target, BOB))
        try:
            await alice.create(room, "Alice")
            await bob.join(room, "Bob")
            bob.send_message(mto=occupant(room, "Alice"), mbody="psst", mtype="chat")
            pm = await alice.expect(_pm_from(room, "Bob", "psst"))
            [(by, pm_id)] = _sids(pm)
            assert by == ALICE
            assert await _own_archive(alice, room) == [(pm_id, "psst")]
        finally:
            await close_all(alice, bob)
    run(scenario(), target)


def test_a_forged_stanza_id_in_a_private_message_never_arrives(with_user_archives):
    """A stanza-id the sender wrote claiming the recipient's archive — even
    naming an id that archive holds — or the room is gone from the PM; it
    is archived anew with a stanza-id of its own (XEP-0359 §5: MUST delete)."""
    require_xmppd("Prosody 0.12.3's mod_mam delivers the forged stanza-id beside its own "
                  "(it stamps a clone of the message taken before the strip)")
    target = with_user_archives
    room = new_room(target, "mam-forged")

    async def scenario():
        alice, bob = await asyncio.gather(connect(target, ALICE), connect(target, BOB))
        try:
            await alice.create(room, "Alice")
            await bob.join(room, "Bob")
            bob.send_message(mto=occupant(room, "Alice"), mbody="first", mtype="chat")
            [(_, first_id)] = _sids(await alice.expect(_pm_from(room, "Bob", "first")))
            bob.send_raw(f"<message type='chat' to='{occupant(room, 'Alice')}' id='pm2'>"
                         f"<body>second</body>"
                         f"<stanza-id xmlns='urn:xmpp:sid:0' by='{ALICE}' id='{first_id}'/>"
                         f"<stanza-id xmlns='urn:xmpp:sid:0' by='{room}' id='forged'/>"
                         f"</message>")
            second = await alice.expect(_pm_from(room, "Bob", "second"))
            [(by, second_id)] = _sids(second)
            assert by == ALICE and second_id != first_id
            assert await _own_archive(alice, room) == [(first_id, "first"),
                                                       (second_id, "second")]
        finally:
            await close_all(alice, bob)
    run(scenario(), target)
