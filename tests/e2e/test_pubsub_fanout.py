"""A node on pubsub.localhost with 200 subscribers, over real sockets: every
item published reaches every subscriber exactly once (20 accounts with 10
resources each, every resource subscribed with its full JID, raw clients in
threads so 200 sessions stay cheap)."""

from __future__ import annotations

import time
import uuid
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import PASSWORD
from rawxmpp import dump, login

SERVICE = "pubsub.localhost"
PUBSUB = "http://jabber.org/protocol/pubsub"
EVENT = "{http://jabber.org/protocol/pubsub#event}"
ACCOUNTS, RESOURCES, ITEMS = 20, 10, 5


@pytest.fixture(scope="module")
def server(make_xmppd_module):
    users = [f"fan{i}@localhost" for i in range(ACCOUNTS)] + ["publisher@localhost"]
    return make_xmppd_module({"server": {"components": "disco ping presence messaging pubsub"}},
                             users=users)


def events_of(client, node: str) -> list[ET.Element]:
    """The item notifications about ``node`` the client has received so far."""
    return [s for s in client.stanzas
            if s.get("from") == SERVICE
            and s.find(f"{EVENT}event/{EVENT}items[@node='{node}']") is not None]


def test_every_item_reaches_each_of_200_subscribers_exactly_once(server):
    node = "fanout-" + uuid.uuid4().hex[:6]
    started = time.monotonic()
    with ThreadPoolExecutor(32) as pool:
        logins = [pool.submit(login, server.host, server.port, f"fan{a}@localhost", PASSWORD,
                              f"r{r}", timeout=30)
                  for a in range(ACCOUNTS) for r in range(RESOURCES)]
        subscribers = [f.result() for f in logins]
    publisher = login(server.host, server.port, "publisher@localhost", PASSWORD, "pc")
    try:
        created = publisher.iq(f"<pubsub xmlns='{PUBSUB}'><create node='{node}'/></pubsub>",
                               type="set", to=SERVICE)
        assert created.get("type") == "result", dump(created)

        def subscribe(client):
            reply = client.iq(f"<pubsub xmlns='{PUBSUB}'><subscribe node='{node}' "
                              f"jid='{client.jid}'/></pubsub>", type="set", to=SERVICE)
            assert reply.get("type") == "result", dump(reply)

        with ThreadPoolExecutor(32) as pool:
            list(pool.map(subscribe, subscribers))
        owner_view = publisher.iq(f"<pubsub xmlns='{PUBSUB}#owner'><subscriptions node='{node}'/>"
                                  "</pubsub>", to=SERVICE)
        assert len(owner_view.findall(f".//{{{PUBSUB}#owner}}subscription")) == 200

        for i in range(ITEMS):
            reply = publisher.iq(
                f"<pubsub xmlns='{PUBSUB}'><publish node='{node}'><item id='item{i}'>"
                f"<entry xmlns='urn:example:news'>number {i}</entry></item></publish></pubsub>",
                type="set", to=SERVICE)
            assert reply.get("type") == "result", dump(reply)

        def delivered(client) -> list[str]:
            client.wait_for(lambda: len(events_of(client, node)) >= ITEMS, timeout=20,
                            what=f"{ITEMS} notifications")
            return [s.get("to") + " " + s.find(f".//{EVENT}item").get("id")
                    for s in events_of(client, node)]

        with ThreadPoolExecutor(32) as pool:
            got = list(pool.map(delivered, subscribers))
        time.sleep(0.5)  # anything extra has arrived by now
        for client, ids in zip(subscribers, got):
            client.poll()
            final = [s.get("to") + " " + s.find(f".//{EVENT}item").get("id")
                     for s in events_of(client, node)]
            assert final == [f"{client.jid} item{i}" for i in range(ITEMS)], (client.jid, final)
        assert time.monotonic() - started < 60
    finally:
        publisher.close()
        for client in subscribers:
            client.close()
