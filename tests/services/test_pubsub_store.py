"""The pubsub NodeStore over the storage API (xmppd/services/pubsub/store.py):
a core's state written through to a real SQLite file comes back identical when
loaded, also after the writing process is killed with SIGKILL, and account
deletion removes an account's service and its traces in other services."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap

from twisted.internet import defer
from twisted.trial import unittest

from xmppd.services.pubsub.core import Limits, PubSub
from xmppd.services.pubsub.store import ITEMS_STORE, NODES_STORE, REFS_STORE, PubSubStorage
from xmppd.storage import open_storage

SERVICE = "pubsub.example.org"
ALICE = "alice@example.org"
BOB = "bob@example.org"
CAROL = "carol@example.org"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def snapshot(service: PubSub) -> dict:
    """Everything of a service's state that must survive a restart."""
    out = {}
    for name, node in service.nodes.items():
        items = [(i.id, i.payload, i.publisher, i.when) for i in node.items.values()]
        if not node.config["persist_items"]:
            items = []
        out[name] = (node.config, node.affiliations, node.subscriptions, items)
    return out


class PubSubStoreTests(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="xmppd-pubsub-store-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.path = os.path.join(self.dir, "pubsub.sqlite3")
        self.storage = open_storage(f"sqlite:{self.path}")
        self.addCleanup(self.storage.stop)
        return self.storage.start()

    def service(self, storage, jid=SERVICE, nodes=None, stores=None, **kw) -> PubSub:
        stores = stores or PubSubStorage.from_storage(storage)
        kw.setdefault("limits", Limits(max_items=5))
        return PubSub(jid, store=stores.service(jid), nodes=nodes, clock=lambda: 1234.5, **kw)

    async def settle(self, service: PubSub):
        for result in await defer.DeferredList(service.take_writes(), consumeErrors=True):
            self.assertTrue(result[0], result[1])

    async def reopen_load(self, jid=SERVICE, **kw):
        """Open the same file through a second connection (the first is never
        closed: as after a crash) and load the service from it."""
        other = open_storage(f"sqlite:{self.path}")
        await other.start()
        self.addCleanup(other.stop)
        stores = PubSubStorage.from_storage(other)
        nodes = await stores.load(jid)  # the ServiceStore that loaded is the one to write with
        return self.service(other, jid, nodes=nodes, stores=stores, **kw), other

    async def test_round_trip_of_nodes_items_affiliations_subscriptions(self):
        ps = self.service(self.storage)
        ps.create(f"{ALICE}/r", "news", {"title": "News", "max_items": 3,
                                         "roster_groups_allowed": ["b", "a"]})
        ps.create(f"{ALICE}/r", "volatile", {"persist_items": False})
        ps.set_affiliations(f"{ALICE}/r", "news", {BOB: "publisher", CAROL: "outcast"})
        ps.subscribe(f"{BOB}/phone", "news", f"{BOB}/phone")
        ps.subscribe(ALICE, "news", ALICE)
        for i in range(5):
            ps.publish(f"{BOB}/phone", "news", f"i{i}", f"<entry n='{i}'>é</entry>")
        ps.publish(f"{ALICE}/r", "news", "i3", "<entry>again</entry>")  # newest now
        ps.publish(f"{ALICE}/r", "volatile", "v", "<v/>")
        ps.retract(f"{ALICE}/r", "news", ["i2"])
        await self.settle(ps)

        loaded, _ = await self.reopen_load()
        self.assertEqual(snapshot(loaded), snapshot(ps))
        self.assertEqual(list(loaded.nodes["news"].items), ["i4", "i3"])
        self.assertEqual(loaded.nodes["volatile"].items, {})  # memory only: gone

    async def test_instant_nodes_purge_delete_and_config_changes_persist(self):
        ps = self.service(self.storage)
        instant = ps.create(ALICE, None).name
        ps.create(ALICE, "gone")
        ps.publish(ALICE, "gone", "x", "<x/>")
        ps.publish(ALICE, instant, "a", "<a/>")
        ps.publish(ALICE, instant, "b", "<b/>")
        await self.settle(ps)
        ps.delete(ALICE, "gone")
        ps.purge(ALICE, instant)
        ps.publish(ALICE, instant, "c", "<c/>")
        ps.configure(ALICE, instant, {"access_model": "whitelist", "max_items": "max"})
        await self.settle(ps)

        loaded, other = await self.reopen_load()
        self.assertEqual(snapshot(loaded), snapshot(ps))
        self.assertEqual(sorted(loaded.nodes), [instant])
        self.assertEqual(await other.map(ITEMS_STORE).items(SERVICE).addCallback(len), 1)

    async def test_persist_items_toggle(self):
        ps = self.service(self.storage)
        ps.create(ALICE, "n")
        ps.publish(ALICE, "n", "a", "<a/>")
        ps.configure(ALICE, "n", {"persist_items": False})
        ps.publish(ALICE, "n", "b", "<b/>")
        await self.settle(ps)
        loaded, _ = await self.reopen_load()
        self.assertEqual(loaded.nodes["n"].items, {})
        ps.configure(ALICE, "n", {"persist_items": True})
        await self.settle(ps)
        loaded, _ = await self.reopen_load()
        self.assertEqual(list(loaded.nodes["n"].items), ["a", "b"])

    async def test_loaded_service_keeps_writing_in_order(self):
        """Sequence numbers continue after a load: a new item stays newest."""
        ps = self.service(self.storage)
        ps.create(ALICE, "n")
        for i in range(3):
            ps.publish(ALICE, "n", f"i{i}", "<x/>")
        await self.settle(ps)
        again, _ = await self.reopen_load()
        again.publish(ALICE, "n", "i0", "<x/>")
        await self.settle(again)
        third, _ = await self.reopen_load()
        self.assertEqual(list(third.nodes["n"].items), ["i1", "i2", "i0"])

    async def test_services_are_separate(self):
        a = self.service(self.storage, "a@example.org", autocreate=True)
        b = self.service(self.storage, "b@example.org", autocreate=True)
        a.publish("a@example.org", "urn:xmpp:avatar:data", "1", "<data/>")
        b.publish("b@example.org", "urn:xmpp:avatar:data", "2", "<data/>")
        await self.settle(a)
        await self.settle(b)
        loaded, _ = await self.reopen_load("a@example.org")
        self.assertEqual(list(loaded.nodes["urn:xmpp:avatar:data"].items), ["1"])

    async def test_forget_removes_own_service_and_traces_in_other_accounts(self):
        writer = PubSubStorage.from_storage(self.storage)
        pep_bob = PubSub(BOB, store=writer.service(BOB), autocreate=True)
        pep_bob.publish(BOB, "mood", "m", "<mood/>")
        pep_alice = PubSub(ALICE, store=writer.service(ALICE), autocreate=True)
        pep_alice.publish(ALICE, "shared", "s", "<s/>")
        pep_alice.set_affiliations(ALICE, "shared", {BOB: "publisher", CAROL: "member"})
        pep_alice.subscribe(f"{BOB}/r", "shared", f"{BOB}/r")
        pep_carol = PubSub(CAROL, store=writer.service(CAROL))
        pep_carol.create(BOB, "bobs")  # owned by bob alone
        pep_carol.publish(BOB, "bobs", "x", "<x/>")
        for ps in (pep_bob, pep_alice, pep_carol):
            await self.settle(ps)

        stores = PubSubStorage.from_storage(self.storage)  # nothing of it live
        self.assertEqual(await stores.forget(f"{BOB}/anything"), [ALICE, CAROL])
        self.assertEqual(await self.storage.map(NODES_STORE).items(BOB), {})
        self.assertEqual(await self.storage.map(ITEMS_STORE).items(BOB), {})
        self.assertEqual(await self.storage.map(REFS_STORE).items("refs:" + BOB), {})
        alice = await stores.load(ALICE)
        self.assertEqual(alice["shared"].affiliations, {ALICE: "owner", CAROL: "member"})
        self.assertEqual(alice["shared"].subscriptions, {})
        self.assertEqual(list(alice["shared"].items), ["s"])
        self.assertEqual(await stores.load(CAROL), {})  # bob's node there had no other owner
        self.assertEqual(await self.storage.map(ITEMS_STORE).items(CAROL), {})

        # a live core, told the same, converges on the same state
        pep_alice.forget_jid(BOB)
        await self.settle(pep_alice)
        self.assertEqual(snapshot(PubSub(ALICE, nodes=await stores.load(ALICE))),
                         snapshot(pep_alice))

    async def test_forget_leaves_live_and_domain_services_to_their_cores(self):
        stores = PubSubStorage.from_storage(self.storage)
        hub = PubSub(SERVICE, store=stores.service(SERVICE))
        hub.create(ALICE, "news")
        hub.subscribe(BOB, "news", BOB)
        pep_alice = PubSub(ALICE, store=stores.service(ALICE), autocreate=True)
        pep_alice.publish(ALICE, "mood", "m", "<m/>")
        pep_alice.subscribe(BOB, "mood", BOB)
        for ps in (hub, pep_alice):
            await self.settle(ps)
        # live here: reported, not edited (their cores write through)
        self.assertEqual(await stores.forget(BOB), [ALICE, SERVICE])
        self.assertEqual((await stores.load(ALICE))["mood"].subscriptions, {BOB: "subscribed"})
        # not live in another component's storage object: a domain is left alone
        hub.unsubscribe(BOB, "news", BOB)
        hub.subscribe(BOB, "news", BOB)  # the reference is written again
        await self.settle(hub)
        self.assertEqual(len(await self.storage.map(REFS_STORE).items("refs:" + BOB)), 1)
        other = PubSubStorage.from_storage(self.storage)
        self.assertEqual(await other.forget(BOB), [])
        self.assertEqual((await other.load(SERVICE))["news"].subscriptions, {BOB: "subscribed"})
        hub.forget_jid(BOB)
        await self.settle(hub)
        self.assertEqual((await other.load(SERVICE))["news"].subscriptions, {})

    async def test_write_is_durable_when_its_deferred_fires_despite_sigkill(self):
        script = textwrap.dedent(f"""
            import signal, sys
            from twisted.internet import reactor, defer
            from twisted.internet.defer import ensureDeferred
            from xmppd.storage import open_storage
            from xmppd.services.pubsub.core import PubSub
            from xmppd.services.pubsub.store import PubSubStorage

            storage = open_storage({"sqlite:" + self.path!r})
            d = storage.start()
            signal.alarm(60)

            async def work():
                stores = PubSubStorage.from_storage(storage)
                ps = PubSub("killed@example.org", store=stores.service("killed@example.org"),
                            autocreate=True, clock=lambda: 5.0)
                for i in range(20):
                    ps.publish("killed@example.org/r", "urn:xmpp:microblog:0", f"i{{i}}",
                               f"<entry n='{{i}}'/>", {{"max_items": 10}} if i == 0 else None)
                ps.subscribe("friend@example.org", "urn:xmpp:microblog:0", "friend@example.org")
                await defer.DeferredList(ps.take_writes(), fireOnOneErrback=True)
                print("done", flush=True)

            d.addCallback(lambda _: ensureDeferred(work()))
            d.addErrback(lambda f: (f.printTraceback(), sys.stdout.write("failed\\n"), sys.stdout.flush()))
            reactor.run()
        """)
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, cwd=ROOT)
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

        loaded, _ = await self.reopen_load("killed@example.org", limits=Limits(max_items=10))
        node = loaded.nodes["urn:xmpp:microblog:0"]
        self.assertEqual(list(node.items), [f"i{i}" for i in range(10, 20)])
        self.assertEqual(node.subscriptions, {"friend@example.org": "subscribed"})
        self.assertEqual(node.affiliations, {"killed@example.org": "owner"})


def test_items_left_by_a_crash_during_a_node_deletion_never_reach_a_new_node():
    """Items are deleted before the node row, and a load deletes items whose
    node is gone: a new node of the same name starts empty."""
    from xmppd.storage.memory import MemoryStorage

    def load(stores, jid):
        out = []
        stores.load(jid).addCallback(out.append)
        return out[0]

    storage = MemoryStorage()
    stores = PubSubStorage.from_storage(storage)
    core = PubSub("pubsub.localhost", store=stores.service("pubsub.localhost"))
    core.create("alice@localhost", "n", {"access_model": "open"})
    core.publish("alice@localhost", "n", "secret", "<x xmlns='s'>secret</x>")
    real = stores.items.set_many
    stores.items.set_many = lambda *a, **k: None  # the item deletion never happened
    core.delete("alice@localhost", "n")
    stores.items.set_many = real
    again = PubSubStorage.from_storage(storage)
    core = PubSub("pubsub.localhost", store=again.service("pubsub.localhost"),
                  nodes=load(again, "pubsub.localhost"))
    core.create("mallory@localhost", "n", {"access_model": "open"})
    assert list(load(PubSubStorage.from_storage(storage), "pubsub.localhost")["n"].items) == []
