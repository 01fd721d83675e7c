"""The publish-subscribe service through aioxmpp 0.13's PubSubClient: create
(named and instant), publish with and without publish-options, the
notification signals (published, retracted, deleted), items by id and the
newest, node configuration, subscriptions and affiliations, service
discovery of the service and its nodes."""

from __future__ import annotations

import asyncio

import pytest

aioxmpp = pytest.importorskip("aioxmpp")
import aioxmpp.connector  # noqa: E402
import aioxmpp.disco  # noqa: E402
import aioxmpp.forms  # noqa: E402
import aioxmpp.pubsub  # noqa: E402
import aioxmpp.pubsub.xso  # noqa: E402
import aioxmpp.xso  # noqa: E402

from conftest import PASSWORD  # noqa: E402

pytestmark = pytest.mark.all_transports  # tcp, websocket, bosh (conftest)
COMPONENTS = "disco ping roster presence messaging pubsub"
TIMEOUT = 10


@aioxmpp.pubsub.xso.as_payload_class
class Entry(aioxmpp.xso.XSO):
    """A payload: ``<entry xmlns='urn:example:news'>text</entry>``."""

    TAG = ("urn:example:news", "entry")
    text = aioxmpp.xso.Text(default=None)

    def __init__(self, text: str | None = None):
        super().__init__()
        self.text = text


@pytest.fixture(scope="module")
def server(make_xmppd_module):
    return make_xmppd_module({"server": {"components": COMPONENTS}},
                             users=("alice@localhost", "bob@localhost"))


def run(coro, server):
    try:
        return asyncio.run(asyncio.wait_for(coro, 60))
    except BaseException as failure:
        failure.add_note(f"--- xmppd log tail ---\n{server.log_tail(60)}")
        raise


def client_for(server, jid: str) -> aioxmpp.Client:
    return aioxmpp.Client(
        aioxmpp.JID.fromstr(jid), aioxmpp.make_security_layer(PASSWORD, no_verify=True),
        override_peer=[(server.client_host, server.client_port, aioxmpp.connector.STARTTLSConnector())],
        max_initial_attempts=1)


SERVICE = aioxmpp.JID.fromstr("pubsub.localhost")


def test_publish_subscribe_and_notifications_with_aioxmpp(server):
    async def scenario():
        alice = client_for(server, "alice@localhost/aio")
        bob = client_for(server, "bob@localhost/aio")
        async with alice.connected(), bob.connected():
            # Notifications to a bare JID go to available resources: bob is online.
            bob.summon(aioxmpp.PresenceServer).set_presence(aioxmpp.PresenceState(True))
            owner = alice.summon(aioxmpp.PubSubClient)
            reader = bob.summon(aioxmpp.PubSubClient)
            published: asyncio.Queue = asyncio.Queue()
            retracted: asyncio.Queue = asyncio.Queue()
            deleted: asyncio.Queue = asyncio.Queue()
            reader.on_item_published.connect(
                lambda jid, node, item, **kw: published.put_nowait((str(jid), node, item)))
            reader.on_item_retracted.connect(
                lambda jid, node, id_, **kw: retracted.put_nowait((node, id_)))
            reader.on_node_deleted.connect(
                lambda jid, node, **kw: deleted.put_nowait(node))

            assert await owner.create(SERVICE, "aio-news") == "aio-news"
            instant = await owner.create(SERVICE)
            assert instant and instant != "aio-news"

            await reader.subscribe(SERVICE, "aio-news")
            item_id = await owner.publish(SERVICE, "aio-news", Entry("first"), id_="one")
            assert item_id == "one"
            jid, node, item = await asyncio.wait_for(published.get(), TIMEOUT)
            assert (jid, node, item.id_) == ("pubsub.localhost", "aio-news", "one")
            assert isinstance(item.registered_payload, Entry)
            assert item.registered_payload.text == "first"

            options = aioxmpp.forms.Data(aioxmpp.forms.DataType.SUBMIT)
            options.fields.append(aioxmpp.forms.Field(
                var="FORM_TYPE", type_=aioxmpp.forms.FieldType.HIDDEN,
                values=["http://jabber.org/protocol/pubsub#publish-options"]))
            options.fields.append(aioxmpp.forms.Field(var="pubsub#access_model",
                                                      values=["open"]))
            await owner.publish(SERVICE, "aio-news", Entry("second"), id_="two",
                                publish_options=options)
            await asyncio.wait_for(published.get(), TIMEOUT)

            newest = await reader.get_items(SERVICE, "aio-news", max_items=1)
            assert [i.id_ for i in newest.payload.items] == ["two"]
            by_id = await reader.get_items_by_id(SERVICE, "aio-news", ["one"])
            assert [(i.id_, i.registered_payload.text) for i in by_id.payload.items] == [
                ("one", "first")]

            config = await owner.get_node_config(SERVICE, "aio-news")
            fields = {f.var: f.values for f in config.fields}
            assert fields["pubsub#access_model"] == ["open"]

            subs = await reader.get_subscriptions(SERVICE)
            assert [(s.node, str(s.jid), s.subscription) for s in subs.subscriptions] \
                == [("aio-news", "bob@localhost", "subscribed")]
            affs = await owner.get_node_affiliations(SERVICE, "aio-news")
            assert [(str(a.jid), a.affiliation) for a in affs.payload.affiliations] == [
                ("alice@localhost", "owner")]

            disco = bob.summon(aioxmpp.DiscoClient)
            info = await disco.query_info(SERVICE, node="aio-news")
            assert [(i.category, i.type_) for i in info.identities] == [("pubsub", "leaf")]
            nodes = await disco.query_items(SERVICE)
            assert "aio-news" in {i.node for i in nodes.items}

            await owner.retract(SERVICE, "aio-news", "one", notify=True)
            assert await asyncio.wait_for(retracted.get(), TIMEOUT) == ("aio-news", "one")

            with pytest.raises(aioxmpp.errors.XMPPAuthError) as refused:
                await reader.publish(SERVICE, "aio-news", Entry("not mine"))
            assert refused.value.condition == aioxmpp.ErrorCondition.FORBIDDEN

            await owner.delete(SERVICE, "aio-news")
            assert await asyncio.wait_for(deleted.get(), TIMEOUT) == "aio-news"
            await owner.delete(SERVICE, instant)
    run(scenario(), server)
