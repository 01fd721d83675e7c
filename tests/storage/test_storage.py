"""The storage contract, run against every backend, plus SQLite's durability.

Components are tested against MemoryStorage and deployed on SQLiteStorage, so
both must behave identically: the same suite runs on each.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading

from twisted.internet import defer
from twisted.trial import unittest

from xmppd.storage import IStorage, open_storage, storage_url_problem, value_size
from xmppd.storage.memory import MemoryStorage
from xmppd.storage.sqlite import SQLiteStorage

ALICE = "alice@example.org"
BOB = "bob@example.org"


def temp_dir(case: unittest.TestCase) -> str:
    # Not trial's mktemp(): under pytest it would litter the working directory.
    path = tempfile.mkdtemp(prefix="xmppd-storage-")
    case.addCleanup(shutil.rmtree, path, True)
    return path


class StorageContract:
    """Behaviour every IStorage must have; mixed into one TestCase per backend."""

    storage: IStorage

    def make_storage(self) -> IStorage:
        raise NotImplementedError

    def setUp(self):
        self.storage = self.make_storage()
        self.addCleanup(self.storage.stop)
        return self.storage.start()

    def test_provides(self):
        self.assertTrue(IStorage.providedBy(self.storage))
        self.assertIs(self.storage.keyvalue("a"), self.storage.keyvalue("a"))
        self.assertIs(self.storage.map("a"), self.storage.map("a"))
        self.assertIs(self.storage.archive("a"), self.storage.archive("a"))
        self.assertEqual(self.storage.archive("a").name, "a")

    # key-value

    async def test_keyvalue(self):
        kv = self.storage.keyvalue("vcard")
        self.assertIsNone(await kv.get(ALICE))
        await kv.set(ALICE, {"fn": "Alice"})
        await kv.set(BOB, [1, 2.5, True, None, "x"])
        await kv.set("", "host data")
        self.assertEqual(await kv.get(ALICE), {"fn": "Alice"})
        self.assertEqual(await kv.get(BOB), [1, 2.5, True, None, "x"])
        self.assertEqual(await kv.users(), ["", ALICE, BOB])
        await kv.set(ALICE, {"fn": "Alice A."})
        self.assertEqual(await kv.get(ALICE), {"fn": "Alice A."})
        await kv.delete(BOB)
        await kv.delete(BOB)  # deleting nothing is fine
        self.assertIsNone(await kv.get(BOB))
        await kv.set(ALICE, None)
        self.assertIsNone(await kv.get(ALICE))
        self.assertEqual(await kv.users(), [""])

    async def test_keyvalue_scalars(self):
        kv = self.storage.keyvalue("scalars")
        for value in (0, "", False, [], {}, 1.5, "null"):
            await kv.set(ALICE, value)
            self.assertEqual(await kv.get(ALICE), value)

    async def test_stores_are_separate(self):
        await self.storage.keyvalue("a").set(ALICE, 1)
        await self.storage.map("a").set(ALICE, "k", 2)
        await self.storage.archive("a").append(ALICE, 3)
        self.assertIsNone(await self.storage.keyvalue("b").get(ALICE))
        self.assertEqual(await self.storage.keyvalue("b").users(), [])
        self.assertEqual(await self.storage.map("b").items(ALICE), {})
        self.assertEqual(await self.storage.archive("b").count(ALICE), 0)
        self.assertEqual(await self.storage.keyvalue("a").get(ALICE), 1)

    # map

    async def test_map(self):
        roster = self.storage.map("roster")
        self.assertIsNone(await roster.get(ALICE, BOB))
        self.assertEqual(await roster.items(ALICE), {})
        await roster.set(ALICE, BOB, {"subscription": "both"})
        await roster.set(BOB, ALICE, {"subscription": "both"})
        self.assertEqual(await roster.get(ALICE, BOB), {"subscription": "both"})
        await roster.set_many(ALICE, {"c@x": 1, "d@x": 2, BOB: None})
        self.assertEqual(await roster.items(ALICE), {"c@x": 1, "d@x": 2})
        await roster.set(ALICE, "c@x", None)
        await roster.delete(ALICE, "d@x")
        await roster.delete(ALICE, "nobody@x")
        self.assertEqual(await roster.items(ALICE), {})
        await roster.set_many(ALICE, {"e@x": "e", "f@x": "f"})
        await roster.set(ALICE, "e@x", "E")
        self.assertEqual(await roster.get(ALICE, "e@x"), "E")
        await roster.clear(ALICE)
        self.assertEqual(await roster.items(ALICE), {})
        self.assertEqual(await roster.items(BOB), {ALICE: {"subscription": "both"}})

    async def test_map_set_many_is_atomic(self):
        roster = self.storage.map("roster")
        await roster.set(ALICE, "a", 1)
        with self.assertRaises(TypeError):
            await roster.set_many(ALICE, {"a": None, "b": 2, "c": object()})
        self.assertEqual(await roster.items(ALICE), {"a": 1})

    # archive

    async def fill_archive(self):
        archive = self.storage.archive("mam")
        ids = []
        for i in range(10):
            ids.append(await archive.append(ALICE, {"n": i}, with_=BOB if i % 2 else "carol@x", when=1000.0 + i))
        await archive.append(BOB, {"n": "bob's"}, when=1000.0)
        return archive, ids

    async def test_archive_append(self):
        archive, ids = await self.fill_archive()
        self.assertTrue(all(isinstance(i, str) for i in ids))
        self.assertEqual(len(set(ids)), 10)
        self.assertEqual(ids, sorted(ids, key=int))
        items = await archive.query(ALICE)
        self.assertEqual([item.id for item in items], ids)
        self.assertEqual([item.value for item in items], [{"n": i} for i in range(10)])
        self.assertEqual(items[1].when, 1001.0)
        self.assertEqual(items[1].with_, BOB)

    async def test_archive_users(self):
        archive = self.storage.archive("offline")
        self.assertEqual(await archive.users(), [])
        await archive.append(BOB, "b")
        await archive.append(ALICE, "a1")
        await archive.append(ALICE, "a2")
        await self.storage.archive("other").append("carol@example.org", "c")
        self.assertEqual(await archive.users(), [ALICE, BOB])
        await archive.delete(BOB)
        self.assertEqual(await archive.users(), [ALICE])

    async def test_archive_default_time(self):
        import time

        archive = self.storage.archive("offline")
        before = time.time()
        await archive.append(ALICE, "hi")
        (item,) = await archive.query(ALICE)
        self.assertTrue(before - 1 <= item.when <= time.time() + 1)
        self.assertIsNone(item.with_)

    async def test_archive_query_filters(self):
        archive, ids = await self.fill_archive()

        async def numbers(**kw):
            return [item.value["n"] for item in await archive.query(ALICE, **kw)]

        self.assertEqual(await numbers(with_=BOB), [1, 3, 5, 7, 9])
        self.assertEqual(await numbers(with_="nobody@x"), [])
        self.assertEqual(await numbers(start=1003.0, end=1005.0), [3, 4, 5])
        self.assertEqual(await numbers(start=1008.0), [8, 9])
        self.assertEqual(await numbers(end=1001.0), [0, 1])
        self.assertEqual(await numbers(after=ids[6]), [7, 8, 9])
        self.assertEqual(await numbers(before=ids[2]), [0, 1])
        self.assertEqual(await numbers(after=ids[2], before=ids[5]), [3, 4])
        self.assertEqual(await numbers(limit=3), [0, 1, 2])
        self.assertEqual(await numbers(limit=0), [])
        self.assertEqual(await numbers(limit=100), list(range(10)))
        self.assertEqual(await numbers(with_=BOB, start=1002.0, limit=2), [3, 5])

    async def test_archive_reverse(self):
        archive, ids = await self.fill_archive()

        async def numbers(**kw):
            return [item.value["n"] for item in await archive.query(ALICE, reverse=True, **kw)]

        self.assertEqual(await numbers(), list(range(10)))
        self.assertEqual(await numbers(limit=3), [7, 8, 9])
        self.assertEqual(await numbers(limit=0), [])
        self.assertEqual(await numbers(limit=100), list(range(10)))
        # Paging backwards, as MAM does with <before/>.
        self.assertEqual(await numbers(limit=3, before=ids[7]), [4, 5, 6])
        self.assertEqual(await numbers(limit=3, before=ids[2]), [0, 1])
        self.assertEqual(await numbers(limit=2, with_=BOB, end=1006.0), [3, 5])

    async def test_archive_count(self):
        archive, ids = await self.fill_archive()
        self.assertEqual(await archive.count(ALICE), 10)
        self.assertEqual(await archive.count(ALICE, with_=BOB), 5)
        self.assertEqual(await archive.count(BOB), 1)
        self.assertEqual(await archive.count("nobody@x"), 0)

    async def test_archive_count_with_filters_is_a_result_sets_total(self):
        """What a MAM page reports as the count of its whole result set: the
        items matching with/start/end/ids, whatever page is asked for."""
        archive, ids = await self.fill_archive()  # when 1000..1009, odd ones with bob
        self.assertEqual(await archive.count(ALICE, start=1003.0, end=1006.0), 4)
        self.assertEqual(await archive.count(ALICE, with_=BOB, start=1003.0), 4)  # 3 5 7 9
        self.assertEqual(await archive.count(ALICE, end=1000.5), 1)
        self.assertEqual(await archive.count(ALICE, start=2000.0), 0)
        self.assertEqual(await archive.count(ALICE, start=1005.0, end=1004.0), 0)
        self.assertEqual(await archive.count(ALICE, ids=[ids[0], ids[9], "999999"]), 2)
        self.assertEqual(await archive.count(ALICE, ids=ids, with_=BOB, end=1004.0), 2)
        self.assertEqual(await archive.count(ALICE, ids=[]), 0)
        self.assertEqual(await archive.count(BOB, start=1000.0, end=1000.0), 1)
        with self.assertRaises(ValueError):
            await archive.count(ALICE, ids=["x"])

    async def test_archive_size(self):
        """size() is the bytes the values take as stored, the same on every
        backend: what a quota in bytes compares against."""
        archive = self.storage.archive("offline")
        self.assertEqual(await archive.size(ALICE), 0)
        values = ["<message id='1'/>", {"body": "héllo ✓"}, "x" * 100_000, 7]
        ids = [await archive.append(ALICE, v, with_=BOB if i % 2 else None)
               for i, v in enumerate(values)]
        await archive.append(BOB, "not alice's")
        self.assertEqual(await archive.size(ALICE), sum(value_size(v) for v in values))
        self.assertEqual(await archive.size(ALICE, with_=BOB), value_size(values[1]) + value_size(7))
        self.assertEqual(await archive.size("nobody@x"), 0)
        await archive.delete(ALICE, [ids[2]])
        self.assertEqual(await archive.size(ALICE),
                         sum(value_size(v) for v in values) - value_size(values[2]))
        await archive.delete(ALICE)
        self.assertEqual(await archive.size(ALICE), 0)
        self.assertEqual(await archive.size(BOB), value_size("not alice's"))

    def test_value_size_is_the_bytes_of_the_stored_text(self):
        # Compact JSON, ASCII only: characters are bytes, escapes count.
        self.assertEqual(value_size("abc"), 5)  # "abc"
        self.assertEqual(value_size("é"), len('"\\u00e9"'))
        self.assertEqual(value_size({"a": [1, 2]}), len('{"a":[1,2]}'))
        self.assertEqual(value_size("<m a='1'/>"), len("<m a='1'/>") + 2)

    async def test_archive_items_know_their_size(self):
        archive = self.storage.archive("offline")
        for value in ("short", "é" * 1000, {"k": "v" * 50}):
            await archive.append(ALICE, value)
        items = await archive.query(ALICE)
        self.assertEqual([i.size for i in items],
                         [value_size("short"), value_size("é" * 1000), value_size({"k": "v" * 50})])
        self.assertEqual(sum(i.size for i in items), await archive.size(ALICE))

    async def test_archive_query_max_bytes(self):
        """A query bounded by bytes ends with the item that takes the total to
        max_bytes or beyond: a reader of large values holds less than
        max_bytes plus one item at a time, always makes progress, and knows
        it has seen everything when a list is short of both bounds."""
        archive = self.storage.archive("offline")
        sizes = [100, 300, 50, 1000, 20]
        ids = [await archive.append(ALICE, "x" * (n - 2)) for n in sizes]  # value_size = n

        async def got(**kw):
            return [i.size for i in await archive.query(ALICE, **kw)]

        self.assertEqual(await got(max_bytes=100), [100])  # reached: ends here
        self.assertEqual(await got(max_bytes=101), [100, 300])
        self.assertEqual(await got(max_bytes=400), [100, 300])
        self.assertEqual(await got(max_bytes=401), [100, 300, 50])
        self.assertEqual(await got(max_bytes=1), [100])
        self.assertEqual(await got(max_bytes=0), [100])
        self.assertEqual(await got(max_bytes=10**9), sizes)
        self.assertEqual(await got(max_bytes=None), sizes)
        self.assertEqual(await got(max_bytes=10**9, limit=2), [100, 300])
        self.assertEqual(await got(max_bytes=400, after=ids[1]), [50, 1000])
        self.assertEqual(await got(max_bytes=400, after=ids[3]), [20])
        self.assertEqual(await got(max_bytes=400, after=ids[4]), [])
        # Backwards, as MAM pages: the newest items, listed oldest first.
        self.assertEqual(await got(max_bytes=1020, reverse=True), [1000, 20])
        self.assertEqual(await got(max_bytes=1021, reverse=True), [50, 1000, 20])
        self.assertEqual(await got(max_bytes=20, reverse=True), [20])
        self.assertEqual(await got(max_bytes=0, limit=0), [])

    async def test_archive_delete(self):
        archive, ids = await self.fill_archive()
        (bobs,) = await archive.query(BOB)
        # Ids of another user's items are not touched; unknown ids are ignored.
        self.assertEqual(await archive.delete(ALICE, [ids[0], ids[3], ids[3], bobs.id, "999999"]), 2)
        self.assertEqual([item.value["n"] for item in await archive.query(ALICE)], [1, 2, 4, 5, 6, 7, 8, 9])
        self.assertEqual(await archive.delete(ALICE, []), 0)
        self.assertEqual(await archive.delete(ALICE), 8)
        self.assertEqual(await archive.query(ALICE), [])
        self.assertEqual(await archive.count(BOB), 1)
        self.assertEqual(await archive.delete(ALICE), 0)
        # Ids keep increasing after deletions.
        new_id = await archive.append(ALICE, "again")
        self.assertGreater(int(new_id), int(ids[-1]))

    async def test_archive_bad_id(self):
        archive, ids = await self.fill_archive()
        with self.assertRaises(ValueError):
            await archive.query(ALICE, after="not-an-id")
        with self.assertRaises(ValueError):
            await archive.delete(ALICE, ["x"])
        self.assertEqual(await archive.count(ALICE), 10)

    async def test_archive_query_ids_keeps_only_those_in_insertion_order(self):
        """XEP-0313's ids filter: the named items, oldest first whatever order
        they were asked in, other filters still applying, unknown ids and
        other users' ids ignored."""
        archive, ids = await self.fill_archive()
        (bobs,) = await archive.query(BOB)

        async def numbers(**kw):
            return [item.value["n"] for item in await archive.query(ALICE, **kw)]

        self.assertEqual(await numbers(ids=[ids[7], ids[2], ids[5]]), [2, 5, 7])
        self.assertEqual(await numbers(ids=[ids[3], ids[3], "999999", bobs.id]), [3])
        self.assertEqual(await numbers(ids=[]), [])
        self.assertEqual(await numbers(ids=iter([ids[1], ids[2]])), [1, 2])
        self.assertEqual(await numbers(ids=ids[:6], with_=BOB), [1, 3, 5])
        self.assertEqual(await numbers(ids=ids, start=1004.0, end=1006.0), [4, 5, 6])
        self.assertEqual(await numbers(ids=ids, after=ids[7]), [8, 9])
        self.assertEqual(await numbers(ids=ids, limit=2, reverse=True), [8, 9])
        with self.assertRaises(ValueError):
            await archive.query(ALICE, ids=[ids[0], "nope"])

    async def test_archive_get_finds_one_item_of_its_user(self):
        archive, ids = await self.fill_archive()
        (bobs,) = await archive.query(BOB)
        item = await archive.get(ALICE, ids[3])
        self.assertEqual((item.id, item.when, item.with_, item.value), (ids[3], 1003.0, BOB, {"n": 3}))
        self.assertEqual(item.size, value_size({"n": 3}))
        self.assertIsNone(await archive.get(ALICE, bobs.id))  # another user's
        self.assertIsNone(await archive.get(ALICE, "999999"))
        self.assertIsNone(await archive.get("nobody@x", ids[3]))
        with self.assertRaises(ValueError):
            await archive.get(ALICE, "x")

    async def test_archive_replace_keeps_id_time_and_partner(self):
        """A tombstone (XEP-0425) stays where the message was in every query."""
        archive, ids = await self.fill_archive()
        (bobs,) = await archive.query(BOB)
        self.assertTrue(await archive.replace(ALICE, ids[5], {"n": "tombstone"}))
        item = await archive.get(ALICE, ids[5])
        self.assertEqual((item.id, item.when, item.with_, item.value),
                         (ids[5], 1005.0, BOB, {"n": "tombstone"}))
        self.assertEqual(item.size, value_size({"n": "tombstone"}))
        self.assertEqual([i.value["n"] for i in await archive.query(ALICE, with_=BOB, start=1004.0)],
                         ["tombstone", 7, 9])
        self.assertFalse(await archive.replace(ALICE, bobs.id, "stolen"))
        self.assertFalse(await archive.replace(ALICE, "999999", "nothing"))
        self.assertEqual((await archive.get(BOB, bobs.id)).value, {"n": "bob's"})
        self.assertEqual(await archive.count(ALICE), 10)
        with self.assertRaises(TypeError):
            await archive.replace(ALICE, ids[0], object())
        with self.assertRaises(ValueError):
            await archive.replace(ALICE, "x", 1)
        self.assertEqual((await archive.get(ALICE, ids[0])).value, {"n": 0})

    async def test_archive_expire_deletes_what_is_older_than_the_cutoff(self):
        archive, ids = await self.fill_archive()  # alice 1000..1009, bob 1000
        await archive.append("carol@x", "c", when=1001.5)
        other = self.storage.archive("offline")
        await other.append(ALICE, "not mam", when=1.0)
        self.assertEqual(await archive.expire(1003.0, user=ALICE), 3)  # 1000, 1001, 1002
        self.assertEqual(await archive.count(BOB), 1)
        self.assertEqual(await archive.expire(1003.0, user=ALICE), 0)
        self.assertEqual(await archive.expire(1005.0), 2 + 1 + 1)  # alice 1003-4, bob, carol
        self.assertEqual([i.value["n"] for i in await archive.query(ALICE)], [5, 6, 7, 8, 9])
        self.assertEqual(await archive.users(), [ALICE])
        self.assertEqual(await other.count(ALICE), 1)  # other stores untouched
        self.assertEqual(await archive.expire(2000.0), 5)
        self.assertEqual(await archive.users(), [])

    async def test_archive_times_never_go_back_within_a_user(self):
        """An item appended with an earlier time than the user's newest gets
        the newest's time: insertion order is time order, which MAM results
        need and the time index relies on."""
        archive = self.storage.archive("mam")
        await archive.append(ALICE, "a", when=1000.0)
        await archive.append(ALICE, "b", when=900.0)  # clock stepped back
        await archive.append(BOB, "other user", when=500.0)  # not held back by alice's
        await archive.append(ALICE, "c", when=1001.0)
        self.assertEqual([(i.value, i.when) for i in await archive.query(ALICE)],
                         [("a", 1000.0), ("b", 1000.0), ("c", 1001.0)])
        self.assertEqual([i.value for i in await archive.query(ALICE, start=1000.0, end=1000.0)], ["a", "b"])
        self.assertEqual((await archive.query(BOB))[0].when, 500.0)

    async def test_archive_time_ranges_match_exactly_at_their_edges(self):
        archive = self.storage.archive("mam")
        for n, when in enumerate([10.0, 20.0, 20.0, 20.0, 30.0, 40.0]):
            await archive.append(ALICE, n, with_=BOB if n % 2 else None, when=when)

        async def values(**kw):
            return [i.value for i in await archive.query(ALICE, **kw)]

        self.assertEqual(await values(start=20.0, end=20.0), [1, 2, 3])
        self.assertEqual(await values(start=20.0, end=20.0, limit=2, reverse=True), [2, 3])
        self.assertEqual(await values(start=15.0, end=35.0, with_=BOB), [1, 3])
        self.assertEqual(await values(start=20.0001), [4, 5])
        self.assertEqual(await values(end=19.9), [0])
        self.assertEqual(await values(start=41.0), [])
        self.assertEqual(await values(end=9.0), [])
        self.assertEqual(await values(start=30.0, end=20.0), [])  # reversed range
        self.assertEqual(await values(start=25.0, end=26.0), [])  # a gap

    # whole storage

    async def test_purge_user(self):
        for user in (ALICE, BOB):
            await self.storage.keyvalue("vcard").set(user, {"fn": user})
            await self.storage.keyvalue("accounts").set(user, {"pw": "x"})
            await self.storage.map("roster").set(user, "c@x", {"s": "both"})
            await self.storage.archive("offline").append(user, "<message/>")
            await self.storage.archive("mam").append(user, "<message/>", with_="c@x")
        await self.storage.purge_user(ALICE)
        self.assertIsNone(await self.storage.keyvalue("vcard").get(ALICE))
        self.assertIsNone(await self.storage.keyvalue("accounts").get(ALICE))
        self.assertEqual(await self.storage.map("roster").items(ALICE), {})
        self.assertEqual(await self.storage.archive("offline").count(ALICE), 0)
        self.assertEqual(await self.storage.archive("mam").query(ALICE), [])
        self.assertEqual(await self.storage.keyvalue("vcard").get(BOB), {"fn": BOB})
        self.assertEqual(await self.storage.keyvalue("accounts").users(), [BOB])
        self.assertEqual(await self.storage.map("roster").items(BOB), {"c@x": {"s": "both"}})
        self.assertEqual(await self.storage.archive("offline").count(BOB), 1)
        self.assertEqual(await self.storage.archive("mam").count(BOB, with_="c@x"), 1)

    async def test_values_are_copies(self):
        kv = self.storage.keyvalue("kv")
        value = {"list": [1, 2], "nested": {"a": 1}}
        await kv.set(ALICE, value)
        value["list"].append(3)  # mutating what was stored...
        got = await kv.get(ALICE)
        self.assertEqual(got, {"list": [1, 2], "nested": {"a": 1}})
        got["nested"]["a"] = 2  # ...or what was returned changes nothing
        self.assertEqual(await kv.get(ALICE), {"list": [1, 2], "nested": {"a": 1}})

        roster = self.storage.map("roster")
        await roster.set(ALICE, BOB, {"groups": ["Friends"]})
        (await roster.items(ALICE))[BOB]["groups"].append("Work")
        (await roster.get(ALICE, BOB))["groups"].append("Work")
        self.assertEqual(await roster.get(ALICE, BOB), {"groups": ["Friends"]})

        archive = self.storage.archive("mam")
        await archive.append(ALICE, {"body": "hi"})
        (await archive.query(ALICE))[0].value["body"] = "changed"
        self.assertEqual((await archive.query(ALICE))[0].value, {"body": "hi"})

    async def test_unicode_and_large_values(self):
        text = "héllo wörld ✓ 日本語 🎉 \u0000 \"quotes\" \\ <xml a='1'/>"
        user = "jülia@exämple.org"
        large = {"blob": "x" * 2_000_000, "items": list(range(10_000))}
        kv = self.storage.keyvalue("kv")
        await kv.set(user, text)
        self.assertEqual(await kv.get(user), text)
        self.assertEqual(await kv.users(), [user])
        await kv.set(ALICE, large)
        self.assertEqual(await kv.get(ALICE), large)
        await self.storage.map("m").set(user, "ключ", text)
        self.assertEqual(await self.storage.map("m").items(user), {"ключ": text})
        await self.storage.archive("a").append(user, large, with_="ß@x")
        (item,) = await self.storage.archive("a").query(user, with_="ß@x")
        self.assertEqual(item.value, large)

    async def test_unserialisable_value(self):
        kv = self.storage.keyvalue("kv")
        with self.assertRaises(TypeError):
            await kv.set(ALICE, {"x": object()})
        self.assertIsNone(await kv.get(ALICE))


class MemoryStorageTests(StorageContract, unittest.TestCase):
    def make_storage(self):
        return MemoryStorage()

    def test_synchronous(self):
        """Memory Deferreds have fired already: component tests need no reactor."""
        kv = self.storage.keyvalue("kv")
        kv.set(ALICE, 1)
        self.assertEqual(self.successResultOf(kv.get(ALICE)), 1)


class SQLiteStorageTests(StorageContract, unittest.TestCase):
    def make_storage(self):
        # A directory that does not exist yet: start() creates it.
        self.path = os.path.join(temp_dir(self), "sub", "dir", "xmppd.sqlite3")
        return SQLiteStorage(self.path)

    def open_other(self, path=None) -> SQLiteStorage:
        """Another storage on the same file, as the admin command would open it."""
        other = SQLiteStorage(path or self.path, synchronous="full")
        self.addCleanup(other.stop)
        return other

    async def test_pragmas(self):
        def pragma(name):
            return self.storage._worker.submit(
                lambda cursor: cursor.execute(f"PRAGMA {name}").fetchone()[0])
        self.assertEqual(await pragma("journal_mode"), "wal")
        self.assertEqual(await pragma("synchronous"), 1)  # NORMAL
        self.assertEqual(await pragma("busy_timeout"), 5000)

    async def test_reopen(self):
        await self.storage.keyvalue("kv").set(ALICE, {"a": 1})
        await self.storage.archive("mam").append(ALICE, "m", with_=BOB)
        await self.storage.stop()
        await self.storage.stop()  # idempotent
        reopened = self.open_other()
        await reopened.start()
        self.assertEqual(await reopened.keyvalue("kv").get(ALICE), {"a": 1})
        self.assertEqual(await reopened.archive("mam").count(ALICE, with_=BOB), 1)

    async def test_two_processes_share_the_file(self):
        other = self.open_other()
        await other.start()
        await self.storage.keyvalue("accounts").set(ALICE, {"pw": "1"})
        self.assertEqual(await other.keyvalue("accounts").get(ALICE), {"pw": "1"})
        await other.keyvalue("accounts").set(BOB, {"pw": "2"})
        self.assertEqual(await self.storage.keyvalue("accounts").users(), [ALICE, BOB])
        first = await self.storage.archive("offline").append(ALICE, "one")
        second = await other.archive("offline").append(ALICE, "two")
        self.assertGreater(int(second), int(first))
        self.assertEqual([i.value for i in await self.storage.archive("offline").query(ALICE)], ["one", "two"])
        await other.map("roster").set(ALICE, BOB, "both")
        await other.purge_user(ALICE)  # even stores this instance never opened
        self.assertIsNone(await self.storage.keyvalue("accounts").get(ALICE))
        self.assertEqual(await self.storage.archive("offline").count(ALICE), 0)
        self.assertEqual(await self.storage.map("roster").items(ALICE), {})
        self.assertEqual(await self.storage.keyvalue("accounts").get(BOB), {"pw": "2"})

    async def test_survives_sigkill(self):
        """A write whose Deferred has fired is on disk, even if the process dies at once.

        The child also calls start() before the reactor runs, as a script would.
        """
        path = os.path.join(temp_dir(self), "killed.sqlite3")
        script = textwrap.dedent(f"""
            import signal, sys
            from twisted.internet import reactor
            from twisted.internet.defer import ensureDeferred
            from xmppd.storage.sqlite import SQLiteStorage

            storage = SQLiteStorage({path!r})
            d = storage.start()  # the reactor is not running yet

            signal.alarm(60)  # if anything hangs, die: the test's readline() then ends

            async def write():
                await storage.keyvalue("accounts").set("alice@example.org", {{"pw": "secret"}})
                await storage.map("roster").set_many("alice@example.org", {{"bob@x": "both"}})
                for i in range(50):
                    await storage.archive("offline").append("alice@example.org", i)
                print("done", flush=True)

            d.addCallback(lambda _: ensureDeferred(write()))
            d.addErrback(lambda f: (f.printTraceback(), sys.stdout.write("failed\\n"), sys.stdout.flush()))
            reactor.run()  # no stop(): the only way out is SIGKILL
        """)
        child = subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        try:
            line = child.stdout.readline()
            if line == b"done\n":
                os.kill(child.pid, signal.SIGKILL)
        finally:
            if child.poll() is None:
                child.kill()
            _, err = child.communicate()
        self.assertEqual(line, b"done\n", err.decode(errors="replace"))
        self.assertEqual(child.returncode, -signal.SIGKILL)

        reopened = self.open_other(path)
        await reopened.start()
        self.assertEqual(await reopened.keyvalue("accounts").get(ALICE), {"pw": "secret"})
        self.assertEqual(await reopened.map("roster").items(ALICE), {"bob@x": "both"})
        self.assertEqual([i.value for i in await reopened.archive("offline").query(ALICE)], list(range(50)))

    async def test_a_days_page_of_a_big_archive_reads_only_that_page(self):
        """Time-bounded pages are found through the time index, not by
        scanning the user's archive up to them: the work a page costs
        (SQLite's virtual machine steps) does not grow with the archive."""
        archive = self.storage.archive("mam")
        day = 86400.0

        def seed(cursor, n, first):
            cursor.executemany(
                "INSERT INTO archive (store, user, ts, with_, value) VALUES ('mam', ?, ?, ?, '1')",
                ((ALICE, first + i * 60.0, BOB if i % 2 else "carol@x") for i in range(n)))

        async def steps(**query):
            counted = []
            worker = self.storage._worker

            def count(cursor):
                cursor.connection.set_progress_handler(lambda: counted.append(1), 100)

            def stop(cursor):
                cursor.connection.set_progress_handler(None, 0)

            await worker.submit(count)
            items = await archive.query(ALICE, limit=50, **query)
            await worker.submit(stop)
            return len(counted), items

        def queries(newest):
            return {"first of the last day": dict(start=newest - day),
                    "from early on, forwards": dict(start=day / 4),
                    "up to a day ago, backwards": dict(end=newest - day, reverse=True),
                    "last of an early day": dict(end=day, reverse=True),
                    "one early day with bob": dict(start=day / 2, end=day, with_=BOB)}

        await self.storage._worker.submit(seed, 3000, 0.0)
        small = {}
        for name, query in queries(2999 * 60.0).items():
            small[name], items = await steps(**query)
            self.assertEqual(len(items), 50, name)
        await self.storage._worker.submit(seed, 100_000, 3000 * 60.0)
        # The same pages in an archive 30 times bigger (newer items added):
        for name, query in queries(102_999 * 60.0).items():
            big, items = await steps(**query)
            self.assertEqual(len(items), 50, name)
            self.assertLess(big, small[name] * 2 + 20, name)
        (last,) = await archive.query(ALICE, limit=1, reverse=True)
        self.assertEqual(last.when, 102_999 * 60.0)

    def test_bad_synchronous(self):
        with self.assertRaises(ValueError):
            SQLiteStorage(self.path, synchronous="off")

    def test_not_started(self):
        with self.assertRaises(RuntimeError):
            SQLiteStorage(self.path).keyvalue("kv").get(ALICE)


class OpenStorageTests(unittest.TestCase):
    def test_memory(self):
        self.assertIsInstance(open_storage("memory:"), MemoryStorage)

    def test_sqlite_paths(self):
        absolute = open_storage("sqlite:///var/lib/xmppd/db.sqlite3")
        self.assertIsInstance(absolute, SQLiteStorage)
        self.assertEqual(absolute.path, "/var/lib/xmppd/db.sqlite3")
        self.assertEqual(open_storage("sqlite:/srv/x.sqlite3", base_dir="/data").path, "/srv/x.sqlite3")
        relative = open_storage("sqlite:xmppd.sqlite3", base_dir="/data", synchronous="full")
        self.assertEqual(relative.path, "/data/xmppd.sqlite3")
        self.assertEqual(relative.synchronous, "full")
        self.assertEqual(open_storage("sqlite:db/x.sqlite3", base_dir="/data").path, "/data/db/x.sqlite3")
        self.assertEqual(open_storage("sqlite:x.sqlite3").path, os.path.abspath("x.sqlite3"))

    def test_problems(self):
        for good in ("memory:", "sqlite:x.sqlite3", "sqlite:///abs/x.sqlite3", "sqlite:a/b.db"):
            self.assertIsNone(storage_url_problem(good), good)
        for bad, words in [("postgres://db/x", "unknown scheme"), ("xmppd.sqlite3", "no scheme"),
                           ("sqlite:", "no file name"), ("sqlite:///", "no file name"),
                           ("sqlite://host/x", "host"), ("memory:x", "no path"), ("", "no scheme")]:
            problem = storage_url_problem(bad)
            self.assertIsNotNone(problem, bad)
            self.assertIn(words, problem)
            self.assertNotIn("\n", problem)
            with self.assertRaises(ValueError) as e:
                open_storage(bad)
            self.assertEqual(str(e.exception), problem)


class SQLiteBatchTests(unittest.TestCase):
    """Work queued together runs in one transaction, each operation in its own
    savepoint: one failing operation must not undo or fail its neighbours."""

    def setUp(self):
        self.storage = SQLiteStorage(os.path.join(temp_dir(self), "batch.sqlite3"))
        self.addCleanup(self.storage.stop)
        return self.storage.start()

    async def test_a_failure_in_a_batch_spares_the_others(self):
        kv = self.storage.keyvalue("kv")

        def broken(cursor):
            cursor.execute("INSERT INTO kv (store, user, value) VALUES ('kv', 'x', 'half')")
            cursor.execute("INSERT INTO no_such_table VALUES (1)")

        # Hold the worker so that the next three are queued together: one batch.
        release = threading.Event()
        held = self.storage._worker.submit(lambda cursor: release.wait(10))
        first = kv.set(ALICE, 1)
        bad = self.storage._worker.submit(broken)
        last = kv.set(BOB, 2)
        release.set()
        await held
        await first
        with self.assertRaises(Exception):
            await bad
        await last
        self.assertEqual(await kv.get(ALICE), 1)
        self.assertEqual(await kv.get(BOB), 2)
        self.assertIsNone(await kv.get("x"))  # the failed operation left nothing

    async def test_a_failed_single_statement_in_a_batch_spares_the_others(self):
        """Single statements (appends, key-value writes) run without a
        savepoint of their own: SQLite undoes a failed one by itself, and the
        rest of the batch still commits."""
        from xmppd.storage.sqlite import _execute

        kv = self.storage.keyvalue("kv")
        await kv.set("x", 1)
        release = threading.Event()
        held = self.storage._worker.submit(lambda cursor: release.wait(10))
        first = kv.set(ALICE, 1)
        duplicate = self.storage._worker.submit(
            _execute, "INSERT INTO kv (store, user, value) VALUES (?, 'x', '2')", ("kv",))
        appended = self.storage.archive("a").append(ALICE, "after the failure")
        release.set()
        await held
        await first
        with self.assertRaises(sqlite3.IntegrityError):
            await duplicate
        await appended
        self.assertEqual(await kv.get("x"), 1)
        self.assertEqual(await kv.get(ALICE), 1)
        self.assertEqual([i.value for i in await self.storage.archive("a").query(ALICE)],
                         ["after the failure"])

    async def test_many_writes_queued_at_once_all_commit(self):
        archive = self.storage.archive("offline")
        ids = await defer.gatherResults([archive.append(ALICE, i) for i in range(1200)])
        self.assertEqual(len(set(ids)), 1200)
        self.assertEqual([i.value for i in await archive.query(ALICE)], list(range(1200)))
        await self.storage.stop()
        reopened = SQLiteStorage(self.storage.path)
        await reopened.start()
        self.addCleanup(reopened.stop)
        self.assertEqual(await reopened.archive("offline").count(ALICE), 1200)

    async def test_a_failed_operation_alone_leaves_nothing(self):
        kv = self.storage.keyvalue("kv")
        await kv.set(ALICE, 1)  # the worker is idle now: the next one runs alone

        def broken(cursor):
            cursor.execute("INSERT INTO kv (store, user, value) VALUES ('kv', 'x', 'half')")
            cursor.execute("INSERT INTO no_such_table VALUES (1)")

        with self.assertRaises(Exception):
            await self.storage._worker.submit(broken)
        self.assertIsNone(await kv.get("x"))
        await kv.set(BOB, 2)  # and the connection is usable afterwards
        self.assertEqual(await kv.get(BOB), 2)
