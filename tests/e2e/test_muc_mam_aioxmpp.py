"""Room archives seen through aioxmpp 0.13: its MUC client in the room, its
XEP-0359 stanza-id XSO on the messages, its XEP-0059 result set helpers
(``last_page``, ``previous_page``, ``next_page``) paging an XEP-0313 query
to the room JID. aioxmpp has no MAM client, so the three MAM payloads are
declared here as XSOs (the query, the ``<fin/>``, a ``<result/>`` with its
XEP-0297 forwarded message); a wrong element or attribute fails to parse
into them, not just to compare.

The second client library beside slixmpp's (test_muc_mam_slixmpp.py):
messages said in a room are paged back completely backwards and forwards,
and the ids are the stanza-ids the occupants saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest

aioxmpp = pytest.importorskip("aioxmpp")
import aioxmpp.connector  # noqa: E402
import aioxmpp.misc  # noqa: E402
import aioxmpp.muc  # noqa: E402
from aioxmpp.rsm.xso import ResultSetMetadata  # noqa: E402

from conftest import PASSWORD  # noqa: E402
from mamxso import MAM, Fin, Query, Result  # noqa: E402,F401
from muc_target import make_muc_target, require_xmppd  # noqa: E402,F401

TIMEOUT = 10


@pytest.fixture(scope="module")
def target(make_muc_target):
    require_xmppd("the archive of xmppd's rooms (Prosody's: the differential test)")
    return make_muc_target(users=("alice@localhost", "bob@localhost"),
                           muc={"message_rate": "10000", "message_burst": "10000"})


class Person:
    """An aioxmpp client with its MUC client, that keeps the MAM results it gets."""

    def __init__(self, target, user: str):
        self.jid = aioxmpp.JID.fromstr(f"{user}@{target.domain}/aio")
        self.client = aioxmpp.Client(
            self.jid, aioxmpp.make_security_layer(PASSWORD, no_verify=True),
            override_peer=[(target.host, target.client_port,
                            aioxmpp.connector.STARTTLSConnector())],
            max_initial_attempts=1)
        self.client.summon(aioxmpp.PresenceServer).set_presence(aioxmpp.PresenceState(True))
        self.muc = self.client.summon(aioxmpp.MUCClient)
        self.results: dict[str, list[Result]] = {}
        self.client.stream.app_inbound_message_filter.register(self._keep, 0)

    def _keep(self, message):
        result = message.xep0313_result
        if result is None:
            return message
        self.results.setdefault(result.queryid, []).append(result)
        return None

    async def page(self, room, rsm: ResultSetMetadata) -> tuple[list[Result], Fin]:
        """One page of the room's archive: its results, then the fin."""
        qid = uuid.uuid4().hex[:8]
        iq = aioxmpp.IQ(type_=aioxmpp.IQType.SET, to=room, payload=Query())
        iq.payload.queryid, iq.payload.rsm = qid, rsm
        fin = await asyncio.wait_for(self.client.send(iq), TIMEOUT)
        return self.results.pop(qid, []), fin


def body_of(result: Result) -> str:
    return result.forwarded.stanza.body.any()


def test_an_archive_is_paged_back_completely_both_ways_with_aioxmpp(target):
    count, size = 45, 10

    async def scenario():
        name = f"aio-mam-{uuid.uuid4().hex[:6]}"
        alice, bob = Person(target, "alice"), Person(target, "bob")
        async with contextlib.AsyncExitStack() as stack:
            for person in (alice, bob):
                await stack.enter_async_context(person.client.connected())
            room_jid = aioxmpp.JID(name, target.muc, None)
            alice_room, joined = alice.muc.join(room_jid, "alice")
            await asyncio.wait_for(joined, TIMEOUT)
            await alice.muc.set_room_config(
                room_jid, aioxmpp.forms.Data(aioxmpp.forms.DataType.SUBMIT))
            bob_room, joined = bob.muc.join(room_jid, "bob")
            heard: list = []
            done = asyncio.get_running_loop().create_future()

            def on_message(message, member, source, **kwargs):
                if message.body.any():
                    heard.append(message)
                    if len(heard) == count and not done.done():
                        done.set_result(None)
            bob_room.on_message.connect(on_message)
            await asyncio.wait_for(joined, TIMEOUT)

            sent = [f"said {i}" for i in range(count)]
            for body in sent:
                message = aioxmpp.Message(type_=aioxmpp.MessageType.GROUPCHAT)
                message.body[None] = body
                alice_room.send_message(message)
            await asyncio.wait_for(done, 30)
            assert [m.body.any() for m in heard] == sent
            ids = []
            for m in heard:
                (stamp,) = [s for s in m.xep0359_stanza_ids if s.by == room_jid]
                ids.append(stamp.id_)

            backwards, rsm, pages = [], ResultSetMetadata.last_page(size), 0
            while True:
                results, fin = await bob.page(room_jid, rsm)
                pages += 1
                backwards[:0] = [(r.id_, body_of(r)) for r in results]
                if fin.complete:
                    break
                rsm = fin.rsm.previous_page(size)
            assert backwards == list(zip(ids, sent)) and pages == 5

            forwards, rsm = [], ResultSetMetadata.limit(size)
            while True:
                results, fin = await bob.page(room_jid, rsm)
                forwards += [(r.id_, body_of(r)) for r in results]
                if fin.complete:
                    assert fin.rsm.count == count
                    break
                rsm = fin.rsm.next_page(size)
            assert forwards == list(zip(ids, sent))
    asyncio.run(asyncio.wait_for(scenario(), 90))
