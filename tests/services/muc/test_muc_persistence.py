"""Persistent rooms in SQLite storage (xmppd/services/muc/store.py and
features/persistent.py): a persistent room's configuration, affiliations
(with ban reasons), reserved nicks and history come back after the service
restarts on the same database; a temporary room is never stored; a room
made temporary again is deleted from storage (XEP-0045 §10.1, issue 13).

SQLite answers from its worker thread through the reactor, so these are
trial test cases that let the reactor run."""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
import tempfile

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

sys.path.insert(0, os.path.dirname(__file__))

from muc_harness_helpers import (  # noqa: E402
    COMPONENTS, codes, config_form, item, presences, room_jid, service)

from xmppd import ns  # noqa: E402
from xmppd.testing import Harness, error_condition  # noqa: E402

PERSISTENT = "muc#roomconfig_persistentroom"


class PersistenceTests(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="xmppd-muc-persist-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.db = os.path.join(self.dir, "xmppd.sqlite3")
        self.harness = None

    async def start(self) -> Harness:
        h = Harness(COMPONENTS, clock=task.Clock(), options={
            "server": {"storage": f"sqlite:///{self.db}", "data_dir": self.dir},
            "component:muc": {}})
        self.harness = h
        svc = service(h)
        await svc._ready if svc._ready is not None else None
        return h

    async def restart(self) -> Harness:
        await self.stop()
        return await self.start()

    async def stop(self):
        if self.harness is not None:
            h, self.harness = self.harness, None
            await defer.maybeDeferred(h.server.stopService)

    async def tearDown(self):
        await self.stop()

    async def wait(self, session, predicate, what="stanza"):
        """What ``session`` got until ``predicate(received)`` holds (5 s at most)."""
        got = []
        for _ in range(500):
            got.extend(session.take())
            if predicate(got):
                return got
            await task.deferLater(reactor, 0.01, lambda: None)
        self.fail(f"no {what}: {[s.toXml() for s in got]}")

    async def iq(self, session, xml, iq_id):
        session.feed(xml)
        got = await self.wait(session, lambda g: any(
            s.name == "iq" and s.getAttribute("id") == iq_id for s in g), f"iq {iq_id}")
        return next(s for s in got if s.name == "iq" and s.getAttribute("id") == iq_id)

    async def configure(self, session, room, fields, iq_id="c1"):
        return await self.iq(session, f"<iq type='set' id='{iq_id}' to='{room_jid(room)}'>"
                                      f"<query xmlns='{ns.MUC_OWNER}'>{config_form(fields)}"
                                      f"</query></iq>", iq_id)

    async def admin(self, session, room, items, iq_id="a1"):
        return await self.iq(session, f"<iq type='set' id='{iq_id}' to='{room_jid(room)}'>"
                                      f"<query xmlns='{ns.MUC_ADMIN}'>{items}</query></iq>",
                             iq_id)

    async def join(self, session, room, nick, history=""):
        session.feed(f"<presence to='{room_jid(room)}/{nick}'>"
                     f"<x xmlns='{ns.MUC}'>{history}</x></presence>")
        return await self.wait(session, lambda g: any(
            s.name == "presence" and s.getAttribute("from") == f"{room_jid(room)}/{nick}"
            for s in g) and any(
            s.name == "message" and any(c.name == "subject" for c in s.elements()) for s in g)
            or any(s.getAttribute("type") == "error" for s in g), f"join {room}")

    async def settle(self, h):
        svc = service(h)
        for jid in list(svc._writes):
            await svc.written(svc.rooms.get(jid) or type("R", (), {"jid": jid})())

    def stored_rooms(self):
        with sqlite3.connect(self.db) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            rows = []
            for table in tables:
                cols = [c[1] for c in db.execute(f"PRAGMA table_info({table})")]
                if "store" in cols:
                    rows += [r for r in db.execute(f"SELECT * FROM {table} WHERE store=?",
                                                   ("muc_rooms",))]
            return rows

    # -- the tests --------------------------------------------------------------

    async def test_a_persistent_room_comes_back_with_its_config_affiliations_nicks_and_history(self):
        h = await self.start()
        alice = h.login("alice@localhost/r")
        await self.join(alice, "keep", "Alice")
        reply = await self.configure(alice, "keep", {PERSISTENT: True,
                                                     "muc#roomconfig_roomname": "Kept",
                                                     "muc#roomconfig_membersonly": True})
        assert reply["type"] == "result", reply.toXml()
        reply = await self.admin(alice, "keep",
                                 "<item affiliation='member' jid='bob@localhost' nick='Bobby'/>"
                                 "<item affiliation='outcast' jid='eve@localhost'>"
                                 "<reason>Spam</reason></item>"
                                 "<item affiliation='admin' jid='carol@localhost'/>")
        assert reply["type"] == "result", reply.toXml()
        for i in range(3):
            alice.feed(f"<message type='groupchat' to='{room_jid('keep')}'>"
                       f"<body>said {i}</body></message>")
        await self.wait(alice, lambda g: len([s for s in g if s.name == "message"]) >= 3)
        await self.settle(h)

        h = await self.restart()
        svc = service(h)
        room = svc.rooms.get(room_jid("keep"))
        assert room is not None
        assert room.config["name"] == "Kept" and room.config["members_only"] is True
        assert room.affiliations == {"alice@localhost": "owner", "bob@localhost": "member",
                                     "eve@localhost": "outcast", "carol@localhost": "admin"}
        assert room.affiliation_data["bob@localhost"]["nick"] == "Bobby"
        assert not room.data.get("locked")
        bob = h.login("bob@localhost/r")
        got = await self.join(bob, "keep", "Bobby")
        own = [p for p in presences(got) if p["from"] == f"{room_jid('keep')}/Bobby"][-1]
        assert "110" in codes(own) and item(own)["affiliation"] == "member"
        bodies = [str(next(c for c in m.elements() if c.name == "body"))
                  for m in got if m.name == "message"
                  and any(c.name == "body" for c in m.elements())]
        assert bodies == ["said 0", "said 1", "said 2"]
        # the ban and its reason survived too
        eve = h.login("eve@localhost/r")
        got = await self.join(eve, "keep", "Eve")
        assert error_condition(got[0]) == "forbidden"
        dave = h.login("dave@localhost/r")
        got = await self.join(dave, "keep", "Bobby")
        assert error_condition(got[0]) in ("conflict", "registration-required")
        listing = await self.iq(alice := h.login("alice@localhost/r"),
                                f"<iq type='get' id='l' to='{room_jid('keep')}'>"
                                f"<query xmlns='{ns.MUC_ADMIN}'><item affiliation='outcast'/>"
                                f"</query></iq>", "l")
        (entry,) = list(listing.firstChildElement().elements(ns.MUC_ADMIN, "item"))
        assert [str(r) for r in entry.elements(ns.MUC_ADMIN, "reason")] == ["Spam"]

    async def test_an_empty_persistent_room_stays_and_comes_back(self):
        h = await self.start()
        alice = h.login("alice@localhost/r")
        await self.join(alice, "empty", "Alice")
        await self.configure(alice, "empty", {PERSISTENT: True})
        alice.feed(f"<presence type='unavailable' to='{room_jid('empty')}/Alice'/>")
        await self.settle(h)
        assert room_jid("empty") in service(h).rooms
        h = await self.restart()
        assert room_jid("empty") in service(h).rooms

    async def test_a_temporary_room_is_not_stored(self):
        h = await self.start()
        alice = h.login("alice@localhost/r")
        await self.join(alice, "temp", "Alice")
        reply = await self.configure(alice, "temp", {"muc#roomconfig_roomname": "Temp"})
        assert reply["type"] == "result"
        await self.admin(alice, "temp", "<item affiliation='member' jid='bob@localhost'/>")
        await self.settle(h)
        assert self.stored_rooms() == []
        h = await self.restart()
        assert room_jid("temp") not in service(h).rooms

    async def test_a_room_made_temporary_again_is_deleted_from_storage(self):
        h = await self.start()
        alice = h.login("alice@localhost/r")
        await self.join(alice, "flip", "Alice")
        await self.configure(alice, "flip", {PERSISTENT: True}, iq_id="c1")
        await self.settle(h)
        assert len(self.stored_rooms()) == 1
        reply = await self.configure(alice, "flip", {PERSISTENT: False}, iq_id="c2")
        assert reply["type"] == "result"
        await self.settle(h)
        assert self.stored_rooms() == []
        h = await self.restart()
        assert room_jid("flip") not in service(h).rooms

    async def test_a_destroyed_persistent_room_does_not_come_back(self):
        h = await self.start()
        alice = h.login("alice@localhost/r")
        await self.join(alice, "doomed", "Alice")
        await self.configure(alice, "doomed", {PERSISTENT: True})
        reply = await self.iq(alice, f"<iq type='set' id='d' to='{room_jid('doomed')}'>"
                                     f"<query xmlns='{ns.MUC_OWNER}'><destroy/></query></iq>",
                              "d")
        assert reply["type"] == "result"
        await self.settle(h)
        h = await self.restart()
        assert room_jid("doomed") not in service(h).rooms
