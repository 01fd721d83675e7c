"""The MUC service under stress and abuse (regressions of a review of
xmppd/services/muc/): a delivery that closes the session it is written to
re-enters the room (a client whose output overflows is disconnected
synchronously, and its directed unavailable reaches the room in the middle of
a broadcast) and must find the room consistent; bans of a whole domain;
persistent rooms on SQLite across a restart; malformed and flooding input
bounded by the service's options (``message_rate``, ``max_history_bytes``,
``max_sessions_per_nick``, ``max_affiliations``, the iqs forwarded to
occupants); multi-session nicks as Prosody handles them; nothing of a room
given away to those it refuses (subject in disco#info, a locked room)."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from typing import Iterator

from twisted.internet import defer, reactor, task
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

sys.path.insert(0, os.path.dirname(__file__))

from muc_harness_helpers import (  # noqa: E402
    COMPONENTS, admin_set, bodies, codes, config_form, create, error_type, item, join, leave,
    make_harness, messages, presences, room_jid, say, service, the_error, the_room)

from xmppd import ns  # noqa: E402
from xmppd.testing import FakeSession, Harness, error_condition, parse  # noqa: E402

ROOM = room_jid("r")


# -- helpers --------------------------------------------------------------------

@contextlib.contextmanager
def no_logged_failures() -> Iterator[list]:
    """Collect the failures logged meanwhile (a handler that raised: the router
    logs it and answers internal-server-error); the test asserts there are none."""
    failures: list = []

    def observer(event):
        if "log_failure" in event:
            failures.append(event["log_failure"])
    globalLogPublisher.addObserver(observer)
    try:
        yield failures
    finally:
        globalLogPublisher.removeObserver(observer)


def overflow_on_next(session: FakeSession) -> None:
    """The next stanza written to ``session`` overflows its output: it is
    delivered, then the stream is closed at once, as XMPPStream.send does past
    ``max_output`` (stream error, unbind, session_closed → unavailable to the
    rooms it is in, all before send returns)."""
    original = session.send

    def send(stanza):
        session.send = original
        original(stanza)
        session.stream_error("policy-violation")
    session.send = send


def seen(stanzas, sender: str, ptype: str | None = None) -> list:
    """The presences from ``sender`` of type ``ptype`` (None: available)."""
    return [s for s in presences(stanzas, sender) if s.getAttribute("type") == ptype]


def room_with_alice(**options) -> tuple[Harness, FakeSession]:
    h = make_harness(**options)
    alice = h.login("alice@localhost/a")
    create(alice, "r", "alice")
    return h, alice


# -- re-entrancy: a delivery that closes a session --------------------------------

def test_a_kick_whose_delivery_closes_the_session_answers_result_and_leaves_no_occupant():
    h, alice = room_with_alice()
    carol = h.login("carol@localhost/c")
    join(carol, "r", "carol")
    dave = h.login("dave@localhost/d")
    join(dave, "r", "dave")
    alice.take(), carol.take()
    overflow_on_next(dave)  # its own kick presence closes it
    with no_logged_failures() as failures:
        reply = admin_set(alice, "r", "<item nick='dave' role='none'/>", keep=True)
    assert failures == []
    assert reply.getAttribute("type") == "result", reply.toXml()
    room = the_room(h, "r")
    assert sorted(room.occupants) == ["alice", "carol"]
    assert "dave@localhost/d" not in room.by_real
    told = seen(carol.take(), f"{ROOM}/dave", "unavailable")
    assert len(told) == 1 and "307" in codes(told[0])


def test_a_ban_whose_delivery_closes_one_session_removes_every_nick_of_the_account():
    h, alice = room_with_alice()
    b1, b2 = h.login("bob@localhost/1"), h.login("bob@localhost/2")
    join(b1, "r", "bob")
    join(b2, "r", "bobby")
    alice.take(), b1.take(), b2.take()
    overflow_on_next(b1)
    with no_logged_failures() as failures:
        reply = admin_set(alice, "r", "<item jid='bob@localhost' affiliation='outcast'/>")
    assert failures == []
    assert reply.getAttribute("type") == "result", reply.toXml()
    room = the_room(h, "r")
    assert room.affiliations.get("bob@localhost") == "outcast"
    assert list(room.occupants) == ["alice"]
    assert list(room.by_real) == ["alice@localhost/a"]
    b2.take()
    say(b2, "r", "still here after the ban")
    assert bodies(alice.take()) == []
    assert the_error(b2.take(), "message") == "not-acceptable"


def test_a_nick_change_whose_303_closes_the_session_leaves_neither_nick_in_the_room():
    h, alice = room_with_alice()
    carol = h.login("carol@localhost/c")
    join(carol, "r", "carol")
    alice.take()
    overflow_on_next(carol)
    with no_logged_failures() as failures:
        carol.feed(f"<presence to='{ROOM}/caroline'/>")
    assert failures == []
    room = the_room(h, "r")
    assert list(room.occupants) == ["alice"]
    assert list(room.by_real) == ["alice@localhost/a"]
    got = alice.take()
    # the rename was announced, and the new nick was never shown available
    assert [codes(s) for s in seen(got, f"{ROOM}/carol", "unavailable")] == [{"303"}]
    assert seen(got, f"{ROOM}/caroline") == []


def test_a_members_only_switch_whose_322_closes_the_session_answers_result_and_removes_it():
    h, alice = room_with_alice()
    carol = h.login("carol@localhost/c")
    join(carol, "r", "carol")
    alice.take()
    overflow_on_next(carol)
    with no_logged_failures() as failures:
        alice.feed(f"<iq type='set' id='mo' to='{ROOM}'><query xmlns='{ns.MUC_OWNER}'>"
                   f"{config_form({'muc#roomconfig_membersonly': True})}</query></iq>")
    assert failures == []
    got = alice.take()
    answers = [s for s in got if s.name == "iq" and s.getAttribute("id") == "mo"]
    assert [a.getAttribute("type") for a in answers] == ["result"], [s.toXml() for s in got]
    room = the_room(h, "r")
    assert room.config["members_only"] is True
    assert list(room.occupants) == ["alice"]
    assert "carol@localhost/c" not in room.by_real
    assert carol.stream_errors == ["policy-violation"]


def test_a_join_bounced_at_once_by_the_joiners_server_leaves_no_occupant():
    """A remote joiner whose server cannot be reached: the room's first
    presence to it bounces synchronously (kick_bounced) inside join()."""
    h, alice = room_with_alice()
    with no_logged_failures() as failures:
        h.router.route(parse(f"<presence from='eve@evil.example/r1' to='{ROOM}/eve'>"
                             f"<x xmlns='{ns.MUC}'/></presence>"))
    assert failures == []
    room = the_room(h, "r")
    assert list(room.occupants) == ["alice"]
    assert list(room.by_real) == ["alice@localhost/a"]
    assert seen(alice.take(), f"{ROOM}/eve") == []


# -- bans -----------------------------------------------------------------------

def test_a_domain_ban_removes_and_refuses_every_account_of_the_domain():
    """Prosody: an outcast host bans every JID of it (get_affiliation falls
    back to the host) and set_affiliation removes its occupants with 301 —
    the owner of that domain too, so the room is persistent here."""
    h, alice = room_with_alice()
    alice_cfg = config_form({"muc#roomconfig_persistentroom": True})
    alice.feed(f"<iq type='set' id='p' to='{ROOM}'><query xmlns='{ns.MUC_OWNER}'>"
               f"{alice_cfg}</query></iq>")
    carol = h.login("carol@localhost/c")
    join(carol, "r", "carol")
    alice.take()
    admin_set(alice, "r", "<item jid='localhost' affiliation='outcast'/>")
    gone = seen(carol.take(), f"{ROOM}/carol", "unavailable")
    assert len(gone) == 1 and {"110", "301"} <= codes(gone[0])
    assert item(gone[0])["affiliation"] == "outcast"
    mallory = h.login("mallory@localhost/m")
    assert the_error(join(mallory, "r", "mallory"), "presence") == "forbidden"
    assert "mallory" not in the_room(h, "r").occupants


def test_a_locked_room_answers_item_not_found_even_to_a_banned_user():
    """The lock is checked first: forbidden would tell a banned user the room exists."""
    h = make_harness()
    alice = h.login("alice@localhost/a")
    join(alice, "r", "alice")  # created, still locked
    reply = admin_set(alice, "r", "<item jid='bob@localhost' affiliation='outcast'/>")
    assert reply.getAttribute("type") == "result", reply.toXml()
    bob = h.login("bob@localhost/b")
    assert the_error(join(bob, "r", "bob"), "presence") == "item-not-found"


# -- malformed input ---------------------------------------------------------------

def test_a_malformed_since_offset_is_ignored_and_the_joiner_still_gets_history_and_subject():
    h, alice = room_with_alice()
    say(alice, "r", "hello")
    alice.take()
    bob = h.login("bob@localhost/b")
    with no_logged_failures() as failures:
        got = join(bob, "r", "bob", history="<history since='2020-01-01T00:00:00+ab:cd'/>")
    assert failures == []
    assert "bob" in the_room(h, "r").occupants
    assert bodies(got) == ["hello"]
    assert any(c.name == "subject" for m in messages(got) for c in m.elements())


# -- floods --------------------------------------------------------------------------

def test_presence_updates_beyond_the_burst_are_refused_and_reach_nobody():
    clock = task.Clock()
    h = make_harness(clock=clock, message_rate=1, message_burst=3)
    alice = h.login("alice@localhost/a")
    create(alice, "r", "alice")
    mallory = h.login("mallory@localhost/m")
    join(mallory, "r", "mallory")
    alice.take()
    for i in range(10):
        mallory.feed(f"<presence to='{ROOM}/mallory'><status>{i}</status></presence>")
    got = mallory.take()
    refused = [s for s in got if s.getAttribute("type") == "error"]
    assert len(refused) == 7
    assert {error_condition(s) for s in refused} == {"policy-violation"}
    assert len(seen(alice.take(), f"{ROOM}/mallory")) == 3
    clock.advance(1)
    mallory.feed(f"<presence to='{ROOM}/mallory'><status>later</status></presence>")
    assert [s.getAttribute("type") for s in mallory.take()] == [None]
    assert len(seen(alice.take(), f"{ROOM}/mallory")) == 1


def test_nick_changes_beyond_the_burst_are_refused_and_reach_nobody():
    clock = task.Clock()
    h = make_harness(clock=clock, message_rate=1, message_burst=3)
    alice = h.login("alice@localhost/a")
    create(alice, "r", "alice")
    mallory = h.login("mallory@localhost/m")
    join(mallory, "r", "m0")
    alice.take()
    for i in range(1, 11):
        mallory.feed(f"<presence to='{ROOM}/m{i % 2}'/>")
    refused = [s for s in mallory.take() if s.getAttribute("type") == "error"]
    assert len(refused) == 7
    assert {error_condition(s) for s in refused} == {"policy-violation"}
    got = alice.take()
    # three renames: each an unavailable (303) and an available presence
    assert len(presences(got)) == 6
    assert sum("303" in codes(s) for s in got) == 3


# -- multi-session nicks ----------------------------------------------------------------

def test_a_second_session_joining_a_nick_is_announced_with_the_first_sessions_presence():
    h, alice = room_with_alice()
    b1, b2 = h.login("bob@localhost/1"), h.login("bob@localhost/2")
    join(b1, "r", "bob")
    alice.take(), b1.take()
    join(b2, "r", "bob", extra="<show>away</show>")
    shown = seen(alice.take(), f"{ROOM}/bob")
    assert len(shown) == 1
    # the first session's presence (no show), both real JIDs to a moderator
    assert not any(c.name == "show" for c in shown[0].elements())
    x = next(shown[0].elements(ns.MUC_USER, "x"))
    assert sorted(i["jid"] for i in x.elements(ns.MUC_USER, "item")) == \
        ["bob@localhost/1", "bob@localhost/2"]
    mine = seen(b1.take(), f"{ROOM}/bob")
    assert len(mine) == 1 and "110" in codes(mine[0])
    # the second session leaving is announced too, the occupant staying
    leave(b2, "r", "bob")
    after = seen(alice.take(), f"{ROOM}/bob")
    assert len(after) == 1
    x = next(after[0].elements(ns.MUC_USER, "x"))
    assert [i["jid"] for i in x.elements(ns.MUC_USER, "item")] == ["bob@localhost/1"]


def test_one_session_renaming_moves_alone_and_the_other_stays_under_the_old_nick():
    h, alice = room_with_alice()
    b1, b2 = h.login("bob@localhost/1"), h.login("bob@localhost/2")
    join(b1, "r", "bob")
    join(b2, "r", "bob")
    alice.take(), b1.take(), b2.take()
    b1.feed(f"<presence to='{ROOM}/robert'/>")
    room = the_room(h, "r")
    assert list(room.occupants["bob"].sessions) == ["bob@localhost/2"]
    assert list(room.occupants["robert"].sessions) == ["bob@localhost/1"]
    got = b1.take()
    moved = seen(got, f"{ROOM}/bob", "unavailable")
    assert len(moved) == 1 and codes(moved[0]) == {"110", "303"}
    assert item(moved[0])["nick"] == "robert"
    assert [codes(s) for s in seen(got, f"{ROOM}/robert")] == [{"110"}]
    # the others: bob is still there (one session fewer), robert is new
    others = alice.take()
    assert seen(others, f"{ROOM}/bob", "unavailable") == []
    assert len(seen(others, f"{ROOM}/bob")) == 1
    assert len(seen(others, f"{ROOM}/robert")) == 1
    assert [codes(s) for s in seen(b2.take(), f"{ROOM}/bob")] == [{"110"}]


# -- bounds --------------------------------------------------------------------------------

def test_iqs_forwarded_to_occupants_beyond_ten_pending_from_one_occupant_are_refused():
    h, alice = room_with_alice()
    mallory = h.login("mallory@localhost/m")
    join(mallory, "r", "mallory")
    alice.take()
    for i in range(11):
        mallory.feed(f"<iq type='get' id='f{i}' to='{ROOM}/alice'>"
                     f"<query xmlns='jabber:iq:version'/></iq>")
    got = mallory.take()
    assert [(s.getAttribute("id"), s.getAttribute("type"), error_condition(s))
            for s in got if s.name == "iq"] == [("f10", "error", "resource-constraint")]
    forwarded = [s for s in alice.take() if s.name == "iq"]
    assert len(forwarded) == 10
    # someone else's forward still goes through and its answer comes back
    bob = h.login("bob@localhost/b")
    join(bob, "r", "bob")
    alice.take()
    bob.feed(f"<iq type='get' id='v' to='{ROOM}/alice'><query xmlns='jabber:iq:version'/></iq>")
    assert [s.name for s in bob.take()] == []
    asked = [s for s in alice.take() if s.name == "iq"]
    assert len(asked) == 1 and asked[0].getAttribute("from") == f"{ROOM}/bob"
    alice.feed(f"<iq type='result' id='{asked[0]['id']}' to='{ROOM}/bob'>"
               f"<query xmlns='jabber:iq:version'><name>x</name></query></iq>")
    answers = [s for s in bob.take() if s.name == "iq"]
    assert [(s.getAttribute("id"), s.getAttribute("type")) for s in answers] == [("v", "result")]
    # an answer frees mallory's place
    alice.feed(f"<iq type='result' id='{forwarded[0]['id']}' to='{ROOM}/mallory'/>")
    mallory.take()
    mallory.feed(f"<iq type='get' id='again' to='{ROOM}/alice'>"
                 f"<query xmlns='jabber:iq:version'/></iq>")
    assert [s for s in mallory.take() if s.getAttribute("type") == "error"] == []
    assert len([s for s in alice.take() if s.name == "iq"]) == 1


def test_history_beyond_max_history_bytes_drops_the_oldest_entries():
    # the in-memory history alone (an archived room's joiners get theirs
    # from the archive, whatever the memory holds)
    h, alice = room_with_alice(max_history_bytes=2000, log_by_default=False)
    sent = [f"m{i}-" + "x" * 500 for i in range(6)]
    for body in sent:
        say(alice, "r", body)
    alice.take()
    room = the_room(h, "r")
    assert 0 < room.state["history_bytes"] <= 2000
    bob = h.login("bob@localhost/b")
    kept = bodies(join(bob, "r", "bob"))
    assert 0 < len(kept) < len(sent)
    assert kept == sent[-len(kept):]  # the newest, in order


def test_more_sessions_than_max_sessions_per_nick_are_refused_with_resource_constraint():
    h, alice = room_with_alice(max_sessions_per_nick=2)
    for i in (1, 2):
        join(h.login(f"bob@localhost/{i}"), "r", "bob")
    third = h.login("bob@localhost/3")
    got = join(third, "r", "bob")
    assert the_error(got, "presence") == "resource-constraint"
    assert error_type(got[0]) == "wait"
    assert len(the_room(h, "r").occupants["bob"].sessions) == 2


def test_more_affiliations_than_max_affiliations_are_refused_with_policy_violation():
    h, alice = room_with_alice(max_affiliations=3)  # alice, the owner, is one
    for name in ("m1", "m2"):
        ok = admin_set(alice, "r", f"<item jid='{name}@localhost' affiliation='member'/>")
        assert ok.getAttribute("type") == "result", ok.toXml()
    refused = admin_set(alice, "r", "<item jid='m3@localhost' affiliation='member'/>")
    assert refused.getAttribute("type") == "error"
    assert error_condition(refused) == "policy-violation"
    room = the_room(h, "r")
    assert "m3@localhost" not in room.affiliations
    # changing an existing one is no new entry
    ok = admin_set(alice, "r", "<item jid='m1@localhost' affiliation='admin'/>")
    assert ok.getAttribute("type") == "result", ok.toXml()


# -- nothing given away ----------------------------------------------------------------------

def test_the_subject_of_a_room_is_not_in_its_disco_info():
    h, alice = room_with_alice()
    alice.feed(f"<iq type='set' id='mo' to='{ROOM}'><query xmlns='{ns.MUC_OWNER}'>"
               f"{config_form({'muc#roomconfig_membersonly': True, 'muc#roomconfig_publicroom': False})}"
               f"</query></iq>")
    alice.feed(f"<message type='groupchat' to='{ROOM}'><subject>merger on friday</subject></message>")
    alice.take()
    eve = h.login("eve@localhost/e")
    assert the_error(join(eve, "r", "eve"), "presence") == "registration-required"
    eve.feed(f"<iq type='get' id='i' to='{ROOM}'><query xmlns='{ns.DISCO_INFO}'/></iq>")
    answer = [s for s in eve.take() if s.name == "iq"]
    assert len(answer) == 1 and answer[0].getAttribute("type") == "result"
    xml = answer[0].toXml()
    assert "merger on friday" not in xml
    assert "muc#roominfo_subject" not in xml


# -- persistence on SQLite ---------------------------------------------------------------------

class RestartTests(unittest.TestCase):
    """A restart of the service on the same SQLite database (the reactor runs:
    SQLite answers from its worker thread)."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="xmppd-muc-robust-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.db = os.path.join(self.dir, "xmppd.sqlite3")
        self.harness = None

    async def start(self, **muc) -> Harness:
        h = Harness(COMPONENTS, clock=task.Clock(), options={
            "server": {"storage": f"sqlite:///{self.db}", "data_dir": self.dir},
            "component:muc": {k: str(v).lower() if isinstance(v, bool) else str(v)
                              for k, v in muc.items()}})
        self.harness = h
        svc = service(h)
        if svc._ready is not None:
            await svc._ready
        return h

    async def stop(self):
        if self.harness is not None:
            h, self.harness = self.harness, None
            await defer.maybeDeferred(h.server.stopService)

    async def tearDown(self):
        await self.stop()

    async def settle(self, h):
        svc = service(h)
        for jid in list(svc._writes):
            await svc.written(svc.rooms.get(jid) or type("R", (), {"jid": jid})())
        await task.deferLater(reactor, 0.01, lambda: None)

    async def rejoin(self, session, room):
        """Join and wait for the subject (the end of the join)."""
        session.feed(f"<presence to='{room_jid(room)}/alice'><x xmlns='{ns.MUC}'/></presence>")
        got = []
        for _ in range(500):
            got.extend(session.take())
            if any(any(c.name == "subject" for c in s.elements()) for s in messages(got)) or \
                    any(s.getAttribute("type") == "error" for s in got):
                return got
            await task.deferLater(reactor, 0.01, lambda: None)
        self.fail(f"no end of join: {[s.toXml() for s in got]}")

    async def test_a_room_persistent_from_birth_comes_back_after_a_restart_with_its_history(self):
        h = await self.start(default_persistent=True, locking=False)
        alice = h.login("alice@localhost/a")
        alice.feed(f"<presence to='{room_jid('born')}/alice'><x xmlns='{ns.MUC}'/></presence>")
        say(alice, "born", "m1")
        say(alice, "born", "m2")
        await self.settle(h)
        await self.stop()
        h = await self.start(default_persistent=True, locking=False)
        self.assertIn(room_jid("born"), service(h).rooms)
        got = await self.rejoin(h.login("alice@localhost/a"), "born")
        self.assertEqual(bodies(got), ["m1", "m2"])

    async def test_a_room_first_stored_does_not_inherit_stale_history_rows_of_its_name(self):
        """History rows left in storage for a name no room is stored under (an
        earlier server's, or a failed write) are cleared when a room of that
        name is first stored."""
        h = await self.start()
        svc = service(h)
        jid = room_jid("again")
        for n in (1, 2, 3):
            await svc.roomstore.add_history(
                jid, f"{n:012d}",
                {"xml": f"<message xmlns='jabber:client' type='groupchat' from='{jid}/old'>"
                        f"<body>stale{n}</body></message>", "when": 0}, [])
        alice = h.login("alice@localhost/a")
        alice.feed(f"<presence to='{jid}/alice'><x xmlns='{ns.MUC}'/></presence>")
        alice.feed(f"<iq type='set' id='c' to='{jid}'><query xmlns='{ns.MUC_OWNER}'>"
                   f"{config_form({'muc#roomconfig_persistentroom': True})}</query></iq>")
        await self.settle(h)
        say(alice, "again", "fresh")
        await self.settle(h)
        await self.stop()
        h = await self.start()
        got = await self.rejoin(h.login("alice@localhost/a"), "again")
        self.assertEqual(bodies(got), ["fresh"])
