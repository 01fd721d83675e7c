"""Nodes, their configuration, affiliations, subscriptions and items survive
``kill -9`` of a real ``twistd xmppd``: what the service acknowledged is on
disk, and after the restart the subscriber is notified again."""

from __future__ import annotations

import pytest

pytest.importorskip("slixmpp")

from slixmpp.exceptions import IqError  # noqa: E402

from slixclient import close_all  # noqa: E402
from test_pubsub_slixmpp import (COMPONENTS, EVENT, SERVICE, config_form, entry,  # noqa: E402
                                 event_of, login, run)


def test_nodes_items_and_subscriptions_survive_kill_9(make_xmppd):
    server = make_xmppd({"server": {"components": COMPONENTS}},
                        users=("alice@localhost", "bob@localhost"))

    async def before():
        alice = await login(server, "alice@localhost/pc", online=False)
        bob = await login(server, "bob@localhost/pc", online=False)
        try:
            pubsub = alice.plugin["xep_0060"]
            await pubsub.create_node(SERVICE, "journal",
                                     config=config_form(title="Journal", max_items="3"))
            await pubsub.modify_affiliations(SERVICE, "journal", [("bob@localhost", "member")])
            await bob.plugin["xep_0060"].subscribe(SERVICE, "journal")
            for i in range(5):
                await pubsub.publish(SERVICE, "journal", id=f"day{i}", payload=entry(f"day {i}"))
            await pubsub.retract(SERVICE, "journal", "day4")
        finally:
            await close_all(alice, bob)
    run(before(), server)

    server.kill()
    server.start()

    async def after():
        alice = await login(server, "alice@localhost/pc", online=False)
        bob = await login(server, "bob@localhost/pc")
        try:
            items = await bob.plugin["xep_0060"].get_items(SERVICE, "journal")
            got = [(i["id"], i.xml.find("{urn:example:news}entry").text)
                   for i in items["pubsub"]["items"]]
            assert got == [("day2", "day 2"), ("day3", "day 3")]
            config = await alice.plugin["xep_0060"].get_node_config(SERVICE, "journal")
            values = config["pubsub_owner"]["configure"]["form"].get_values()
            assert (values["pubsub#title"], values["pubsub#max_items"]) == ("Journal", "3")
            affs = await alice.plugin["xep_0060"].get_node_affiliations(SERVICE, "journal")
            assert {(a["jid"].full, a["affiliation"])
                    for a in affs["pubsub_owner"]["affiliations"]} == {
                ("alice@localhost", "owner"), ("bob@localhost", "member")}
            await alice.plugin["xep_0060"].publish(SERVICE, "journal", id="day5",
                                                   payload=entry("day 5"))
            note = await bob.expect(event_of("journal", "items"))
            assert note.find(f"{EVENT}event/{EVENT}items/{EVENT}item").get("id") == "day5"
            items = await bob.plugin["xep_0060"].get_items(SERVICE, "journal")
            assert [i["id"] for i in items["pubsub"]["items"]] == ["day2", "day3", "day5"]
        finally:
            await close_all(alice, bob)
    run(after(), server)


def test_deluser_forgets_the_accounts_subscriptions_and_affiliations(make_xmppd):
    server = make_xmppd({"server": {"components": COMPONENTS}},
                        users=("alice@localhost", "bob@localhost"))

    async def setup():
        alice = await login(server, "alice@localhost/pc", online=False)
        bob = await login(server, "bob@localhost/pc", online=False)
        try:
            await alice.plugin["xep_0060"].create_node(SERVICE, "alices")
            await bob.plugin["xep_0060"].create_node(SERVICE, "bobs")
            await alice.plugin["xep_0060"].subscribe(SERVICE, "bobs")
            await bob.plugin["xep_0060"].modify_affiliations(
                SERVICE, "bobs", [("alice@localhost", "publisher")])
        finally:
            await close_all(alice, bob)
    run(setup(), server)

    server.admin("deluser", "alice@localhost")
    server.adduser("alice@localhost")  # a new account of the same name inherits nothing

    async def check():
        bob = await login(server, "bob@localhost/pc", online=False)
        alice = await login(server, "alice@localhost/pc", online=False)
        try:
            subs = await bob.plugin["xep_0060"].get_node_subscriptions(SERVICE, "bobs")
            assert list(subs["pubsub_owner"]["subscriptions"]) == []
            affs = await bob.plugin["xep_0060"].get_node_affiliations(SERVICE, "bobs")
            assert [(a["jid"].full, a["affiliation"])
                    for a in affs["pubsub_owner"]["affiliations"]] == [("bob@localhost", "owner")]
            with pytest.raises(IqError) as gone:  # alice alone owned it: deleted
                await bob.plugin["xep_0060"].get_items(SERVICE, "alices")
            assert gone.value.condition == "item-not-found"
            mine = await alice.plugin["xep_0060"].get_affiliations(SERVICE)
            assert list(mine["pubsub"]["affiliations"]) == []
        finally:
            await close_all(alice, bob)
    run(check(), server)

    server.kill()  # and after a crash and restart, the store agrees
    server.start()
    run(check(), server)
