"""XEP-0313 user archives end to end with aioxmpp 0.13, a second client
library: aioxmpp has no MAM service, so the query, result and fin elements
are XSOs declared here, and paging uses aioxmpp's own XEP-0059 helpers
(``ResultSetMetadata.limit``, ``next_page``, ``last_page``,
``previous_page``) on the ``<set/>`` the server answers with; stanza ids
are read with aioxmpp's XEP-0359 XSOs.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest

aioxmpp = pytest.importorskip("aioxmpp")
import aioxmpp.connector  # noqa: E402
import aioxmpp.dispatcher  # noqa: E402
import aioxmpp.forms  # noqa: E402
import aioxmpp.misc  # noqa: E402
import aioxmpp.rsm.xso as rsm_xso  # noqa: E402

from conftest import PASSWORD  # noqa: E402
from mamxso import MAM, FlipPage, Fin, Query, Result  # noqa: E402,F401

pytestmark = pytest.mark.all_transports
COMPONENTS = "disco ping roster presence messaging offline carbons mam"
TIMEOUT = 20
MANY = 1500




def run(coro, server=None):
    try:
        return asyncio.run(asyncio.wait_for(coro, 240))
    except BaseException as failure:
        if server is not None:
            failure.add_note(f"--- xmppd log tail ---\n{server.log_tail(60)}")
        raise


@pytest.fixture(scope="module")
def server(make_xmppd_module):
    return make_xmppd_module({"server": {"components": COMPONENTS}}, users=())


def people(server, *names):
    tag = uuid.uuid4().hex[:6]
    jids = {name: f"{name}{tag}@localhost" for name in names}
    server.addusers(jids.values())
    return jids


class Session:
    """One aioxmpp client, the chat messages and MAM results it received."""

    def __init__(self, server, jid: str):
        self.jid = aioxmpp.JID.fromstr(jid)
        self.client = aioxmpp.Client(
            self.jid, aioxmpp.make_security_layer(PASSWORD, no_verify=True),
            override_peer=[(server.client_host, server.client_port,
                            aioxmpp.connector.STARTTLSConnector())],
            max_initial_attempts=1)
        self.client.summon(aioxmpp.PresenceServer).set_presence(aioxmpp.PresenceState(True))
        self.chats: list[aioxmpp.Message] = []
        self.results: dict[str, list[Result]] = {}
        dispatcher = self.client.summon(aioxmpp.dispatcher.SimpleMessageDispatcher)
        dispatcher.register_callback(aioxmpp.MessageType.CHAT, None, self.chats.append)
        dispatcher.register_callback(aioxmpp.MessageType.NORMAL, None, self._result)

    def _result(self, message: aioxmpp.Message) -> None:
        result = message.xep0313_result
        if result is not None:
            self.results.setdefault(result.queryid, []).append(result)

    async def query(self, rsm=None, form_fields=(), flip=False):
        """One query: (its results, its fin)."""
        query = Query()
        query.queryid = uuid.uuid4().hex
        if form_fields:
            form = aioxmpp.forms.Data(aioxmpp.forms.DataType.SUBMIT)
            form.fields.append(aioxmpp.forms.Field(
                var="FORM_TYPE", type_=aioxmpp.forms.FieldType.HIDDEN, values=[MAM]))
            for var, values in form_fields:
                type_ = aioxmpp.forms.FieldType.LIST_MULTI if var == "ids" else \
                    aioxmpp.forms.FieldType.TEXT_SINGLE
                form.fields.append(aioxmpp.forms.Field(var=var, type_=type_, values=values))
            query.form = form
        query.rsm = rsm
        if flip:
            query.flip = FlipPage()
        fin = await self.client.send(aioxmpp.IQ(type_=aioxmpp.IQType.SET, payload=query),
                                     timeout=TIMEOUT)
        return self.results.pop(query.queryid, []), fin


def entry(result: Result) -> tuple[str, str]:
    [body] = result.forwarded.stanza.body.values()  # whatever its xml:lang
    return result.id_, body


async def wait_for(predicate, what):
    for _ in range(int(TIMEOUT / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


async def converse(sender: Session, recipient: Session, n: int, prefix: str):
    start = len(recipient.chats)
    for i in range(n):
        msg = aioxmpp.Message(to=recipient.jid.bare(), type_=aioxmpp.MessageType.CHAT)
        msg.body[None] = f"{prefix}{i}"
        sender.client.enqueue(msg)
        if i % 200 == 199:
            await wait_for(lambda: len(recipient.chats) - start >= i + 1, f"{i + 1} delivered")
    await wait_for(lambda: len(recipient.chats) - start >= n, f"{n} delivered")
    return recipient.chats[start:]


def test_a_long_conversation_pages_back_whole_both_ways(server):
    jids = people(server, "alice", "bob")

    async def scenario():
        async with contextlib.AsyncExitStack() as stack:
            alice, bob = Session(server, f"{jids['alice']}/a"), Session(server, f"{jids['bob']}/b")
            for s in (alice, bob):
                await stack.enter_async_context(s.client.connected())
            delivered = await converse(alice, bob, MANY, "m")
            stanza_ids = [[(str(s.by), s.id_) for s in m.xep0359_stanza_ids] for m in delivered]

            forwards, rsm = [], rsm_xso.ResultSetMetadata.limit(40)
            while True:
                results, fin = await bob.query(rsm)
                forwards += [entry(r) for r in results]
                if fin.complete:
                    break
                rsm = fin.rsm.next_page(40)
            assert fin.rsm.count == MANY

            backwards, rsm = [], rsm_xso.ResultSetMetadata.last_page(64)
            while True:
                results, fin = await bob.query(rsm, flip=True)  # each page newest first
                backwards += [entry(r) for r in results]
                if fin.complete:
                    break
                rsm = fin.rsm.previous_page(64)
        return stanza_ids, forwards, backwards

    stanza_ids, forwards, backwards = run(scenario(), server)
    ids = [i for i, _ in forwards]
    assert [b for _, b in forwards] == [f"m{i}" for i in range(MANY)]
    assert len(set(ids)) == MANY
    assert stanza_ids == [[(jids["bob"], i)] for i in ids]
    assert backwards == forwards[::-1]


def test_filters_and_bad_input_as_aioxmpp_sees_them(server):
    jids = people(server, "alice", "bob", "carol")

    async def scenario():
        async with contextlib.AsyncExitStack() as stack:
            alice, bob, carol = (Session(server, f"{jids[n]}/x") for n in ("alice", "bob", "carol"))
            for s in (alice, bob, carol):
                await stack.enter_async_context(s.client.connected())
            await converse(alice, bob, 5, "a")
            await converse(carol, bob, 5, "c")
            carols, fin = await bob.query(form_fields=[("with", [jids["carol"]])])
            assert [entry(r)[1] for r in carols] == [f"c{i}" for i in range(5)]
            assert fin.complete and fin.rsm.count == 5
            some, _ = await bob.query(form_fields=[("ids", [carols[1].id_, carols[3].id_])])
            assert [entry(r)[1] for r in some] == ["c1", "c3"]
            errors = []
            for fields, rsm in ([("ids", ["123456789"])], None), ([("start", ["nope"])], None), \
                    ([("x-unknown", ["1"])], None), ((), rsm_xso.ResultSetMetadata.limit(-1)):
                with pytest.raises(aioxmpp.errors.XMPPError) as error:
                    await bob.query(rsm, form_fields=fields)
                errors.append(error.value.condition.value[1])
            return errors

    assert run(scenario(), server) == ["item-not-found", "bad-request",
                                       "feature-not-implemented", "bad-request"]
