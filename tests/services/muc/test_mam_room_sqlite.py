"""Room archives on SQLite (xmppd/services/muc/features/mam.py with
xmppd/services/muc/gate.py): the archive write that gives a message its
stanza-id answers later, from the storage thread, and the room's output
must still go out in the order a blocking store would give (Prosody's);
after a restart an archived room's history is its archive.

Trial test cases that let the reactor run, as test_muc_persistence.py."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

sys.path.insert(0, os.path.dirname(__file__))

from muc_harness_helpers import COMPONENTS, bodies, config_form, room_jid, service  # noqa: E402

from xmppd import ns  # noqa: E402
from xmppd.testing import Harness  # noqa: E402

RJ = room_jid("sq")


def sid(stanza):
    found = next(stanza.elements(ns.SID, "stanza-id"), None)
    return None if found is None else found["id"]


class ArchiveOnSQLiteTests(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="xmppd-muc-mam-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.db = os.path.join(self.dir, "xmppd.sqlite3")
        self.harness = None

    async def start(self, **muc: str) -> Harness:
        h = Harness(COMPONENTS, clock=task.Clock(), options={
            "server": {"storage": f"sqlite:///{self.db}", "data_dir": self.dir},
            "component:muc": {"message_burst": "1000", **muc}})
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

    async def wait(self, session, predicate, what="stanza"):
        got = []
        for _ in range(500):
            got.extend(session.take())
            if predicate(got):
                return got
            await task.deferLater(reactor, 0.01, lambda: None)
        self.fail(f"no {what}: {[s.toXml() for s in got]}")

    async def join(self, session, nick, history=""):
        session.feed(f"<presence to='{RJ}/{nick}'><x xmlns='{ns.MUC}'>{history}</x></presence>")
        return await self.wait(session, lambda g: any(
            s.name == "message" and any(c.name == "subject" for c in s.elements())
            for s in g), f"join as {nick}")

    async def room(self, h, persistent=False):
        alice = h.login("alice@localhost/r")
        await self.join(alice, "Alice")
        fields = {"muc#roomconfig_persistentroom": True} if persistent else {}
        alice.feed(f"<iq type='set' id='c' to='{RJ}'><query xmlns='{ns.MUC_OWNER}'>"
                   f"{config_form(fields) if fields else config_form()}</query></iq>")
        await self.wait(alice, lambda g: any(s.getAttribute("id") == "c" for s in g))
        return alice

    def say(self, session, body):
        session.feed(f"<message type='groupchat' to='{RJ}'><body>{body}</body></message>")

    async def test_messages_and_what_follows_them_leave_in_order_each_with_its_stanza_id(self):
        h = await self.start()
        alice = await self.room(h)
        bob = h.login("bob@localhost/r")
        await self.join(bob, "Bob")
        for i in range(10):
            self.say(alice, f"m{i}")
        # not archived, so it waits on nothing itself: it must not overtake
        alice.feed(f"<message type='groupchat' to='{RJ}'>"
                   "<active xmlns='http://jabber.org/protocol/chatstates'/></message>")
        alice.feed(f"<presence to='{RJ}/Alice'><show>away</show></presence>")
        got = await self.wait(bob, lambda g: any(s.name == "presence" for s in g))
        assert [s.name for s in got] == ["message"] * 11 + ["presence"]
        assert bodies(got) == [f"m{i}" for i in range(10)]
        ids = [sid(m) for m in got[:10]]
        assert None not in ids and ids == sorted(ids, key=int) and sid(got[10]) is None

    async def test_who_joins_while_writes_are_pending_gets_them_as_history_once(self):
        h = await self.start()
        alice = await self.room(h)
        for i in range(5):
            self.say(alice, f"m{i}")
        carol = h.login("carol@localhost/r")
        got = await self.join(carol, "Carol")
        await task.deferLater(reactor, 0.2, lambda: None)
        got += carol.take()
        assert bodies(got) == [f"m{i}" for i in range(5)]
        history = [m for m in got if bodies([m])]
        assert all(sid(m) and next(m.elements(ns.DELAY, "delay"), None) is not None
                   for m in history)
        self_presence = max(i for i, s in enumerate(got) if s.name == "presence")
        assert got.index(history[0]) > self_presence

    async def test_after_a_restart_the_history_and_the_archive_are_there(self):
        h = await self.start()
        alice = await self.room(h, persistent=True)
        for i in range(4):
            self.say(alice, f"m{i}")
        seen = await self.wait(alice, lambda g: len(bodies(g)) == 4)
        ids = [sid(m) for m in seen if bodies([m])]
        await self.stop()
        h = await self.start()
        bob = h.login("bob@localhost/r")
        got = await self.join(bob, "Bob")
        history = [m for m in got if bodies([m])]
        assert bodies(history) == ["m0", "m1", "m2", "m3"]
        assert [sid(m) for m in history] == ids
        bob.feed(f"<iq type='set' id='q' to='{RJ}'><query xmlns='{ns.MAM}'/></iq>")
        got = await self.wait(bob, lambda g: any(s.getAttribute("id") == "q" for s in g))
        results = [next(m.elements(ns.MAM, "result"))["id"] for m in got if m.name == "message"]
        assert results == ids

    async def test_history_stored_before_the_archive_cannot_shadow_it_later(self):
        h = await self.start(archive="false")
        alice = await self.room(h, persistent=True)
        for i in range(3):
            self.say(alice, f"old{i}")
        await self.wait(alice, lambda g: len(bodies(g)) == 3)
        await self.stop()
        # the archive on: the stored history is in memory this once (and
        # serves a joiner it holds enough for, Prosody's rule)
        h = await self.start()
        bob = h.login("bob@localhost/r")
        got = await self.join(bob, "Bob", "<history maxstanzas='2'/>")
        assert bodies(got) == ["old1", "old2"]
        alice = h.login("alice@localhost/r")
        await self.join(alice, "Alice")
        self.say(alice, "new")
        await self.wait(alice, lambda g: "new" in bodies(g))
        await self.stop()
        # and then the archive is the history: the old rows are gone
        h = await self.start()
        carol = h.login("carol@localhost/r")
        got = await self.join(carol, "Carol")
        assert bodies(got) == ["new"]
