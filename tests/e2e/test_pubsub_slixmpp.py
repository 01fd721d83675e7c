"""The publish-subscribe service (XEP-0060) on pubsub.localhost over real
sockets: slixmpp's xep_0060 and aioxmpp's PubSubClient drive create,
configure, publish, subscribe, notifications, retract, purge, delete, items
and affiliations against a real ``twistd xmppd``; nodes and items survive
``kill -9``; bad input gets XEP-0060's errors while the service serves on."""

from __future__ import annotations

import asyncio
import uuid
import xml.etree.ElementTree as ET

import pytest

pytest.importorskip("slixmpp")

from slixmpp.exceptions import IqError  # noqa: E402
from slixmpp.plugins.xep_0004 import Form  # noqa: E402

from conftest import PASSWORD  # noqa: E402
from rawxmpp import login as raw_login, stanza_error_condition  # noqa: E402
from slixclient import IMClient, close_all  # noqa: E402

pytestmark = pytest.mark.all_transports  # tcp, websocket, bosh (conftest)
SERVICE = "pubsub.localhost"
COMPONENTS = "disco ping roster presence messaging pubsub"
EVENT = "{http://jabber.org/protocol/pubsub#event}"
PUBSUB = "{http://jabber.org/protocol/pubsub}"
OWNER = "{http://jabber.org/protocol/pubsub#owner}"
ERRORS = "{http://jabber.org/protocol/pubsub#errors}"
CLIENT = "{jabber:client}"
PLUGINS = ("xep_0004", "xep_0060")


def run(coro, server=None):
    try:
        return asyncio.run(asyncio.wait_for(coro, 90))
    except BaseException as failure:
        if server is not None:
            failure.add_note(f"--- xmppd log tail ---\n{server.log_tail(60)}")
        raise


@pytest.fixture(scope="module")
def server(make_xmppd_module, transport):
    # a server per transport: tests count what carol@localhost is affiliated with
    return make_xmppd_module(
        {"server": {"components": COMPONENTS},
         "component:pubsub": {"max_payload_size": 4096, "max_nodes": 30}},
        users=("alice@localhost", "bob@localhost", "carol@localhost"))


def node_name() -> str:
    return "node-" + uuid.uuid4().hex[:8]


def entry(text: str) -> ET.Element:
    element = ET.Element("{urn:example:news}entry")
    element.text = text
    return element


def event_of(node: str, child: str):
    """A pubsub#event message about ``node`` whose event holds ``child``."""
    def match(e: ET.Element) -> bool:
        if e.tag != CLIENT + "message" or e.get("from") != SERVICE:
            return False
        found = e.find(f"{EVENT}event/{EVENT}{child}")
        return found is not None and found.get("node") == node
    match.__doc__ = f"a pubsub event <{child} node='{node}'/>"
    return match


def config_form(**fields) -> Form:
    form = Form()
    form["type"] = "submit"
    form.add_field(var="FORM_TYPE", ftype="hidden",
                   value="http://jabber.org/protocol/pubsub#node_config")
    for var, value in fields.items():
        form.add_field(var=f"pubsub#{var}", value=value)
    return form


def condition(error: IqError) -> tuple[str, str | None]:
    element = error.iq.xml.find(CLIENT + "error")
    pubsub = next((c.tag[len(ERRORS):] for c in element if c.tag.startswith(ERRORS)), None)
    return error.condition, pubsub


async def login(server, jid, online=True) -> IMClient:
    client = await IMClient.login(server, jid, plugins=PLUGINS)
    if online:
        await client.online()
    return client


def test_create_configure_publish_subscribe_notify_retract_purge_delete(server):
    async def scenario():
        node = node_name()
        alice = await login(server, "alice@localhost/pc")
        bob = await login(server, "bob@localhost/phone")
        try:
            pubsub = alice.plugin["xep_0060"]
            await pubsub.create_node(SERVICE, node, config=config_form(title="News", max_items="5"))
            config = await pubsub.get_node_config(SERVICE, node)
            form = config["pubsub_owner"]["configure"]["form"]
            assert form.get_values()["pubsub#title"] == "News"
            assert form.get_values()["pubsub#max_items"] == "5"

            await bob.plugin["xep_0060"].subscribe(SERVICE, node)
            published = await pubsub.publish(SERVICE, node, id="first", payload=entry("hello"))
            assert published["pubsub"]["publish"]["item"]["id"] == "first"
            note = await bob.expect(event_of(node, "items"))
            item = note.find(f"{EVENT}event/{EVENT}items/{EVENT}item")
            assert item.get("id") == "first"
            assert item.find("{urn:example:news}entry").text == "hello"
            assert note.get("type") == "headline" and note.get("to") == "bob@localhost"

            # an id made by the service, and items retrieval (all, by id, newest)
            second = await pubsub.publish(SERVICE, node, payload=entry("again"))
            made_id = second["pubsub"]["publish"]["item"]["id"]
            assert made_id and made_id != "first"
            await bob.expect(event_of(node, "items"))
            items = await bob.plugin["xep_0060"].get_items(SERVICE, node)
            assert [i["id"] for i in items["pubsub"]["items"]] == ["first", made_id]
            newest = await bob.plugin["xep_0060"].get_items(SERVICE, node, max_items=1)
            assert [i["id"] for i in newest["pubsub"]["items"]] == [made_id]
            one = await bob.plugin["xep_0060"].get_item(SERVICE, node, "first")
            assert [i["id"] for i in one["pubsub"]["items"]] == ["first"]

            # configure: the change is read back
            await pubsub.set_node_config(SERVICE, node, config_form(title="Daily news"))
            config = await pubsub.get_node_config(SERVICE, node)
            assert config["pubsub_owner"]["configure"]["form"].get_values()["pubsub#title"] \
                == "Daily news"

            await pubsub.retract(SERVICE, node, "first", notify=True)
            note = await bob.expect(event_of(node, "items"))
            assert note.find(f"{EVENT}event/{EVENT}items/{EVENT}retract").get("id") == "first"

            await pubsub.purge(SERVICE, node)
            await bob.expect(event_of(node, "purge"))
            items = await bob.plugin["xep_0060"].get_items(SERVICE, node)
            assert list(items["pubsub"]["items"]) == []

            subs = await bob.plugin["xep_0060"].get_subscriptions(SERVICE)
            assert [(s["node"], s["jid"].full) for s in subs["pubsub"]["subscriptions"]] \
                == [(node, "bob@localhost")]

            await pubsub.delete_node(SERVICE, node)
            await bob.expect(event_of(node, "delete"))
            with pytest.raises(IqError) as gone:
                await bob.plugin["xep_0060"].get_items(SERVICE, node)
            assert condition(gone.value) == ("item-not-found", None)
        finally:
            await close_all(alice, bob)
    run(scenario(), server)


def test_affiliations_let_a_publisher_publish_and_an_outcast_not_subscribe(server):
    async def scenario():
        node = node_name()
        alice = await login(server, "alice@localhost/pc")
        carol = await login(server, "carol@localhost/pc")
        bob = await login(server, "bob@localhost/pc")
        try:
            owner = alice.plugin["xep_0060"]
            await owner.create_node(SERVICE, node)
            with pytest.raises(IqError) as refused:
                await carol.plugin["xep_0060"].publish(SERVICE, node, payload=entry("no"))
            assert condition(refused.value) == ("forbidden", None)
            await owner.modify_affiliations(SERVICE, node, [("carol@localhost", "publisher"),
                                                            ("bob@localhost", "outcast")])
            affs = await owner.get_node_affiliations(SERVICE, node)
            assert {(a["jid"].full, a["affiliation"])
                    for a in affs["pubsub_owner"]["affiliations"]} == {
                ("alice@localhost", "owner"), ("carol@localhost", "publisher"),
                ("bob@localhost", "outcast")}
            await carol.plugin["xep_0060"].publish(SERVICE, node, id="c1", payload=entry("yes"))
            mine = await carol.plugin["xep_0060"].get_affiliations(SERVICE)
            assert [(a["node"], a["affiliation"]) for a in mine["pubsub"]["affiliations"]] \
                == [(node, "publisher")]
            with pytest.raises(IqError) as outcast:
                await bob.plugin["xep_0060"].subscribe(SERVICE, node)
            assert condition(outcast.value) == ("forbidden", None)
            # whitelist: not on it is not-allowed + closed-node
            await owner.set_node_config(SERVICE, node, config_form(access_model="whitelist"))
            await owner.modify_affiliations(SERVICE, node, [("bob@localhost", "none")])
            with pytest.raises(IqError) as closed:
                await bob.plugin["xep_0060"].subscribe(SERVICE, node)
            assert condition(closed.value) == ("not-allowed", "closed-node")
        finally:
            await close_all(alice, carol, bob)
    run(scenario(), server)


def test_publish_options_are_preconditions(server):
    async def scenario():
        node = node_name()
        alice = await login(server, "alice@localhost/pc", online=False)
        try:
            pubsub = alice.plugin["xep_0060"]
            await pubsub.create_node(SERVICE, node)
            options = Form()
            options["type"] = "submit"
            options.add_field(var="FORM_TYPE", ftype="hidden",
                              value="http://jabber.org/protocol/pubsub#publish-options")
            options.add_field(var="pubsub#access_model", value="whitelist")
            with pytest.raises(IqError) as unmet:
                await pubsub.publish(SERVICE, node, id="x", payload=entry("x"), options=options)
            assert condition(unmet.value) == ("conflict", "precondition-not-met")
            options.field["pubsub#access_model"]["value"] = "open"
            await pubsub.publish(SERVICE, node, id="x", payload=entry("x"), options=options)
        finally:
            await close_all(alice)
    run(scenario(), server)


def create_until_refused(server, prefix: str, limit: int = 60):
    """Create nodes over a raw connection until refused: the refusal's
    (condition, pubsub condition); every node made is deleted again."""
    client = raw_login(server.client_host, server.client_port, "carol@localhost", PASSWORD, "flood")
    made, answer = [], None
    try:
        for i in range(limit):
            reply = client.iq(f"<pubsub xmlns='{PUBSUB[1:-1]}'>"
                              f"<create node='{prefix}-{i}'/></pubsub>", type="set", to=SERVICE)
            if reply.get("type") == "error":
                error = reply.find(CLIENT + "error")
                answer = (stanza_error_condition(reply)[1],
                          next((c.tag[len(ERRORS):] for c in error if c.tag.startswith(ERRORS)),
                               None))
                break
            made.append(f"{prefix}-{i}")
        for name in made:
            client.iq(f"<pubsub xmlns='{OWNER[1:-1]}'><delete node='{name}'/></pubsub>",
                      type="set", to=SERVICE)
    finally:
        client.close()
    return answer


def test_bad_input_is_refused_and_the_service_serves_on(server):
    async def scenario():
        node = node_name()
        alice = await login(server, "alice@localhost/pc", online=False)
        try:
            pubsub = alice.plugin["xep_0060"]
            with pytest.raises(IqError) as unknown:
                await pubsub.create_node(SERVICE, node, config=config_form(bogus_option="1"))
            assert condition(unknown.value) == ("not-acceptable", None)
            with pytest.raises(IqError) as wrong_type:
                await pubsub.create_node(SERVICE, node, config=config_form(persist_items="maybe"))
            assert condition(wrong_type.value) == ("bad-request", None)
            with pytest.raises(IqError) as not_number:
                await pubsub.create_node(SERVICE, node, config=config_form(max_items="lots"))
            assert condition(not_number.value) == ("bad-request", None)
            await pubsub.create_node(SERVICE, node)
            with pytest.raises(IqError) as big:
                await pubsub.publish(SERVICE, node, payload=entry("x" * 5000))
            assert condition(big.value) == ("not-acceptable", "payload-too-big")
            # A flood of creations stops at max_nodes, and publishing goes on.
            # (A raw client: slixmpp 1.8 cannot parse RFC 6120's policy-violation
            # and never completes the iq.)
            flood = await asyncio.to_thread(create_until_refused, server, node)
            assert flood == ("policy-violation", "max-nodes-exceeded")
            await pubsub.publish(SERVICE, node, id="still", payload=entry("working"))
            items = await pubsub.get_items(SERVICE, node)
            assert [i["id"] for i in items["pubsub"]["items"]] == ["still"]
        finally:
            await close_all(alice)
    run(scenario(), server)
