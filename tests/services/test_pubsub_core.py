"""Unit tests of the pure pubsub core (xmppd/services/pubsub/core.py): every
rule and every refusal, with the XEP-0060 error it carries."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from pubsub_core_fakes import make_service  # noqa: E402

from xmppd.services.pubsub.core import (  # noqa: E402
    DEFAULT_CONFIG,
    Limits,
    PubSub,
    PubSubError,
)

OWNER = "owner@example.org/desk"
PUB = "pub@example.org/r"
PONLY = "ponly@example.org/r"
MEMBER = "member@example.org/r"
OUTCAST = "outcast@example.org/r"
STRANGER = "stranger@example.org/r"
ADMIN = "admin@example.org/r"


def err(excinfo) -> tuple:
    e = excinfo.value
    return (e.type, e.condition, e.pubsub_condition)


@pytest.fixture
def env():
    service, store, rec, roster = make_service(admins=frozenset({"admin@example.org"}))
    service.create(OWNER, "news")
    service.set_affiliations(OWNER, "news", {
        "pub@example.org": "publisher", "ponly@example.org": "publish-only",
        "member@example.org": "member", "outcast@example.org": "outcast"})
    service.take_writes()
    return service, store, rec, roster


# -- creation -------------------------------------------------------------------

def test_create_makes_actor_owner_with_defaults_and_writes_through():
    service, store, _, _ = make_service()
    node = service.create(OWNER, "n", {"title": "T"})
    assert node.affiliations == {"owner@example.org": "owner"}
    assert node.config == {**DEFAULT_CONFIG, "max_items": 10, "title": "T"}  # capped default
    assert store.nodes["n"]["affiliations"] == {"owner@example.org": "owner"}
    assert len(service.take_writes()) == 1
    assert service.take_writes() == []


def test_create_existing_node_is_conflict():
    service, *_ = make_service()
    service.create(OWNER, "n")
    with pytest.raises(PubSubError) as e:
        service.create(STRANGER, "n")
    assert err(e) == ("cancel", "conflict", None)


def test_instant_node_gets_generated_name():
    service, *_ = make_service()
    node = service.create(OWNER, None)
    assert node.name == "id1" and "id1" in service.nodes


def test_create_refused_by_policy_is_forbidden_but_admins_may():
    service, store, *_ = make_service(create_policy=lambda actor: False,
                                      admins=frozenset({"admin@example.org"}))
    with pytest.raises(PubSubError) as e:
        service.create(STRANGER, "n")
    assert err(e) == ("auth", "forbidden", None)
    assert store.nodes == {}
    service.create(ADMIN, "n")


def test_create_beyond_max_nodes_is_policy_violation():
    service, *_ = make_service()
    for i in range(5):
        service.create(OWNER, f"n{i}")
    with pytest.raises(PubSubError) as e:
        service.create(OWNER, "n5")
    assert err(e) == ("modify", "policy-violation", "max-nodes-exceeded")


def test_create_with_bad_config_is_not_acceptable_and_stores_nothing():
    service, store, *_ = make_service()
    for bad in ({"max_items": 0}, {"max_items": 11}, {"max_items": "7"},
                {"persist_items": "yes"}, {"access_model": "secret"},
                {"bogus": 1}, {"roster_groups_allowed": "friends"},
                {"max_items": True}, {"itemreply": "everyone"}):
        with pytest.raises(PubSubError) as e:
            service.create(OWNER, "n", bad)
        assert e.value.condition == "not-acceptable", bad
    assert service.nodes == {} and store.nodes == {}


def test_authorize_access_model_is_refused_as_unsupported():
    service, *_ = make_service()
    with pytest.raises(PubSubError) as e:
        service.create(OWNER, "n", {"access_model": "authorize"})
    assert err(e) == ("modify", "not-acceptable", "unsupported")
    assert e.value.feature == "access-authorize"


def test_empty_node_name_is_nodeid_required():
    service, *_ = make_service()
    with pytest.raises(PubSubError) as e:
        service.create(OWNER, "")
    assert err(e) == ("modify", "bad-request", "nodeid-required")
    with pytest.raises(PubSubError) as e:
        service.publish(OWNER, "", None, "x")
    assert err(e) == ("modify", "bad-request", "nodeid-required")


def test_service_defaults_override_and_max_default_capped_by_limit():
    service, *_ = make_service(defaults={"access_model": "presence", "max_items": 1000})
    node = service.create(OWNER, "n")
    assert node.config["access_model"] == "presence"
    assert node.config["max_items"] == 10


# -- publishing -------------------------------------------------------------------

def test_owner_publisher_and_publish_only_may_publish(env):
    service, store, *_ = env
    for actor in (OWNER, PUB, PONLY):
        item = service.publish(actor, "news", None, f"<p>{actor}</p>")
        assert store.items["news"][item.id].payload == f"<p>{actor}</p>"


@pytest.mark.parametrize("actor", [MEMBER, OUTCAST, STRANGER])
def test_others_may_not_publish_to_publishers_node(env, actor):
    service, store, *_ = env
    with pytest.raises(PubSubError) as e:
        service.publish(actor, "news", "x", "<p/>")
    assert err(e) == ("auth", "forbidden", None)
    assert "x" not in service.nodes["news"].items and not store.items["news"]


def test_open_publish_model_lets_anyone_but_outcasts_publish(env):
    service, *_ = env
    service.configure(OWNER, "news", {"publish_model": "open"})
    service.publish(STRANGER, "news", "s", "<p/>")
    with pytest.raises(PubSubError):
        service.publish(OUTCAST, "news", "o", "<p/>")


def test_subscribers_publish_model(env):
    service, *_ = env
    service.configure(OWNER, "news", {"publish_model": "subscribers"})
    with pytest.raises(PubSubError):
        service.publish(STRANGER, "news", "s", "<p/>")
    service.subscribe(STRANGER, "news", "stranger@example.org")
    service.publish(STRANGER, "news", "s", "<p/>")  # a bare subscription covers every resource


def test_publish_records_bare_publisher_time_and_generates_id(env):
    service, *_ = env
    item = service.publish(PUB, "news", None, "<p/>")
    assert item.publisher == "pub@example.org" and item.when == 1000.0
    assert item.id.startswith("id")
    item = service.publish(OWNER, "news", "x", "<p/>", publisher="someone@example.org/a")
    assert item.publisher == "someone@example.org"


def test_publish_to_missing_node_is_item_not_found_without_autocreate():
    service, *_ = make_service()
    with pytest.raises(PubSubError) as e:
        service.publish(OWNER, "nope", None, "<p/>")
    assert err(e) == ("cancel", "item-not-found", None)


def test_autocreate_uses_publish_options_as_configuration():
    service, store, *_ = make_service(autocreate=True)
    item = service.publish(OWNER, "auto", "current", "<p/>", {"access_model": "whitelist"})
    node = service.nodes["auto"]
    assert node.config["access_model"] == "whitelist"
    assert node.affiliations == {"owner@example.org": "owner"}
    assert list(store.items["auto"]) == [item.id]


def test_payload_too_big(env):
    service, store, *_ = env
    with pytest.raises(PubSubError) as e:
        service.publish(OWNER, "news", "x", "é" * 51)  # 102 bytes > 100
    assert err(e) == ("modify", "not-acceptable", "payload-too-big")
    assert not store.items["news"]
    service.publish(OWNER, "news", "x", "a" * 100)


def _recount(service) -> int:
    return sum(len(i.payload) for n in service.nodes.values() for i in n.items.values())


def test_publish_past_max_bytes_is_policy_violation_and_stores_nothing():
    service, store, rec, _ = make_service(limits=Limits(max_items=10, max_payload=100,
                                                        max_nodes=5, max_bytes=25))
    service.create(OWNER, "n")
    service.publish(OWNER, "n", "a", "x" * 20)
    service.take_writes()
    rec.take()
    with pytest.raises(PubSubError) as e:
        service.publish(OWNER, "n", "b", "y" * 6)
    assert err(e) == ("modify", "policy-violation", None)
    assert list(service.nodes["n"].items) == ["a"] and list(store.items["n"]) == ["a"]
    assert service.take_writes() == [] and rec.take() == []
    assert service.used_bytes == 20


def test_max_bytes_refuses_an_autocreating_publish_without_creating_the_node():
    service, store, _, _ = make_service(autocreate=True, limits=Limits(
        max_items=10, max_payload=100, max_nodes=5, max_bytes=25))
    service.publish(OWNER, "n", "a", "x" * 20)
    with pytest.raises(PubSubError) as e:
        service.publish(OWNER, "m", "a", "x" * 10)
    assert e.value.condition == "policy-violation"
    assert "m" not in service.nodes and "m" not in store.nodes


def test_max_bytes_counts_out_what_the_publish_replaces_or_evicts():
    service, *_ = make_service(limits=Limits(max_items=10, max_payload=100, max_nodes=5,
                                             max_bytes=25))
    service.create(OWNER, "one", {"max_items": 1})
    service.publish(OWNER, "one", "a", "x" * 20)
    service.publish(OWNER, "one", "b", "y" * 24)   # evicts a
    service.publish(OWNER, "one", "b", "z" * 25)   # replaces b
    assert service.used_bytes == 25 == _recount(service)


def test_used_bytes_follow_retract_purge_delete_trim_and_load(env):
    service, *_ = env
    service.publish(OWNER, "news", "a", "x" * 10)
    service.publish(OWNER, "news", "b", "y" * 20)
    service.publish(OWNER, "news", "c", "z" * 30)
    assert service.used_bytes == 60 == _recount(service)
    service.retract(OWNER, "news", ["a"])
    assert service.used_bytes == 50 == _recount(service)
    service.configure(OWNER, "news", {"max_items": 1})
    assert service.used_bytes == 30 == _recount(service)
    reloaded = PubSub("x", nodes=service.nodes)
    assert reloaded.used_bytes == 30
    service.purge(OWNER, "news")
    assert service.used_bytes == 0
    service.publish(OWNER, "news", "d", "d" * 5)
    service.delete(OWNER, "news")
    assert service.used_bytes == 0


def test_publish_options_precondition_not_met(env):
    service, store, *_ = env
    with pytest.raises(PubSubError) as e:
        service.publish(OWNER, "news", "x", "<p/>", {"access_model": "whitelist"})
    assert err(e) == ("cancel", "conflict", "precondition-not-met")
    assert "access_model" in e.value.text
    assert not service.nodes["news"].items and not store.items["news"]
    service.publish(OWNER, "news", "x", "<p/>", {"access_model": "open", "max_items": 10})


def test_publish_options_with_invalid_value_is_not_acceptable(env):
    service, *_ = env
    with pytest.raises(PubSubError) as e:
        service.publish(OWNER, "news", "x", "<p/>", {"max_items": -1})
    assert e.value.condition == "not-acceptable"


def test_republishing_an_id_replaces_and_makes_it_newest(env):
    service, store, *_ = env
    service.publish(OWNER, "news", "a", "1")
    service.publish(OWNER, "news", "b", "2")
    service.publish(OWNER, "news", "a", "3")
    assert [(i.id, i.payload) for i in service.items(OWNER, "news")] == [("b", "2"), ("a", "3")]
    assert list(store.items["news"]) == ["b", "a"]


def test_max_items_drops_oldest_in_memory_and_store(env):
    service, store, *_ = env
    service.configure(OWNER, "news", {"max_items": 2})
    for i in range(4):
        service.publish(OWNER, "news", f"i{i}", "x")
    assert list(service.nodes["news"].items) == ["i2", "i3"]
    assert list(store.items["news"]) == ["i2", "i3"]


def test_max_items_max_means_the_limit(env):
    service, *_ = env
    service.configure(OWNER, "news", {"max_items": "max"})
    for i in range(15):
        service.publish(OWNER, "news", f"i{i}", "x")
    assert len(service.nodes["news"].items) == 10


def test_lowering_max_items_trims_existing_items(env):
    service, store, *_ = env
    for i in range(5):
        service.publish(OWNER, "news", f"i{i}", "x")
    service.configure(OWNER, "news", {"max_items": 1})
    assert list(service.nodes["news"].items) == ["i4"] == list(store.items["news"])


def test_persist_items_false_keeps_items_in_memory_only_still_capped(env):
    service, store, *_ = env
    service.publish(OWNER, "news", "old", "x")
    service.configure(OWNER, "news", {"persist_items": False, "max_items": 2})
    assert not store.items["news"]
    for i in range(3):
        service.publish(OWNER, "news", f"i{i}", "x")
    assert [i.id for i in service.items(MEMBER, "news")] == ["i1", "i2"]
    assert not store.items["news"]
    service.configure(OWNER, "news", {"persist_items": True})
    assert list(store.items["news"]) == ["i1", "i2"]


def test_publish_notifies_subscribers_the_access_model_allows(env):
    service, _, rec, roster = env
    service.subscribe(MEMBER, "news", MEMBER)
    service.subscribe(STRANGER, "news", "stranger@example.org")
    rec.take()
    item = service.publish(OWNER, "news", "a", "<p/>")
    assert rec.take() == [{"node": "news", "kind": "items", "last": False, "items": [item],
                           "recipients": [MEMBER, "stranger@example.org"]}]


def test_change_without_subscribers_is_not_broadcast_by_default(env):
    service, _, rec, _ = env
    service.publish(OWNER, "news", "a", "<p/>")
    service.retract(OWNER, "news", ["a"], notify=True)
    assert rec.take() == []


def test_notify_without_subscribers_hands_every_notification_to_the_broadcaster():
    # PEP: the broadcaster adds the implicit (caps +notify) recipients itself
    service, _, rec, _ = make_service(notify_without_subscribers=True)
    service.create(OWNER, "n")
    rec.take()
    item = service.publish(OWNER, "n", "a", "<p/>")
    service.retract(OWNER, "n", ["a"], notify=True)
    service.delete(OWNER, "n")
    assert rec.take() == [
        {"node": "n", "kind": "items", "last": False, "items": [item], "recipients": []},
        {"node": "n", "kind": "retract", "ids": ["a"], "recipients": []},
        {"node": "n", "kind": "delete", "redirect": None, "recipients": []},
    ]


def test_notify_without_subscribers_still_honours_deliver_notifications():
    service, _, rec, _ = make_service(notify_without_subscribers=True)
    service.create(OWNER, "n", {"deliver_notifications": False})
    rec.take()
    service.publish(OWNER, "n", "a", "<p/>")
    assert rec.take() == []


def test_deliver_notifications_false_sends_nothing(env):
    service, _, rec, _ = env
    service.subscribe(MEMBER, "news", MEMBER)
    service.configure(OWNER, "news", {"deliver_notifications": False})
    rec.take()
    service.publish(OWNER, "news", "a", "<p/>")
    assert rec.take() == []


# -- retraction and purge ---------------------------------------------------------

def test_retract_by_owner_and_publisher(env):
    service, store, *_ = env
    service.publish(PONLY, "news", "a", "x")
    service.publish(OWNER, "news", "b", "x")
    service.retract(PUB, "news", ["a"])
    service.retract(OWNER, "news", ["b"])
    assert not service.nodes["news"].items and not store.items["news"]


def test_publish_only_retracts_only_own_items(env):
    service, *_ = env
    service.publish(PONLY, "news", "mine", "x")
    service.publish(OWNER, "news", "theirs", "x")
    with pytest.raises(PubSubError) as e:
        service.retract(PONLY, "news", ["mine", "theirs"])
    assert err(e) == ("auth", "forbidden", None)
    assert list(service.nodes["news"].items) == ["mine", "theirs"]  # all or nothing
    service.retract(PONLY, "news", ["mine"])


@pytest.mark.parametrize("actor", [MEMBER, OUTCAST, STRANGER])
def test_others_may_not_retract(env, actor):
    service, *_ = env
    service.publish(OWNER, "news", "a", "x")
    with pytest.raises(PubSubError) as e:
        service.retract(actor, "news", ["a"])
    assert err(e) == ("auth", "forbidden", None)


def test_retract_missing_item_is_item_not_found_and_changes_nothing(env):
    service, *_ = env
    service.publish(OWNER, "news", "a", "x")
    with pytest.raises(PubSubError) as e:
        service.retract(OWNER, "news", ["a", "nope"])
    assert err(e) == ("cancel", "item-not-found", None)
    assert "a" in service.nodes["news"].items
    with pytest.raises(PubSubError):
        service.retract(OWNER, "news", [])


def test_retract_notifies_only_on_request_and_if_notify_retract(env):
    service, _, rec, _ = env
    service.subscribe(MEMBER, "news", MEMBER)
    for i in "abc":
        service.publish(OWNER, "news", i, "x")
    rec.take()
    service.retract(OWNER, "news", ["a"])
    assert rec.take() == []
    service.retract(OWNER, "news", ["b"], notify=True)
    assert rec.take() == [{"node": "news", "kind": "retract", "ids": ["b"],
                           "recipients": [MEMBER]}]
    service.configure(OWNER, "news", {"notify_retract": False})
    service.retract(OWNER, "news", ["c"], notify=True)
    assert rec.take() == []


def test_purge_by_owner_or_publisher_notifies(env):
    service, store, rec, _ = env
    service.subscribe(MEMBER, "news", MEMBER)
    service.publish(OWNER, "news", "a", "x")
    rec.take()
    for actor in (MEMBER, PONLY, STRANGER, OUTCAST):
        with pytest.raises(PubSubError) as e:
            service.purge(actor, "news")
        assert err(e) == ("auth", "forbidden", None)
    service.purge(PUB, "news")
    assert not service.nodes["news"].items and not store.items["news"]
    assert rec.take() == [{"node": "news", "kind": "purge", "recipients": [MEMBER]}]


# -- retrieval and access models ---------------------------------------------------

def test_items_oldest_first_ids_and_max(env):
    service, *_ = env
    for i in "abcd":
        service.publish(OWNER, "news", i, i)
    ids = lambda items: [i.id for i in items]  # noqa: E731
    assert ids(service.items(STRANGER, "news")) == list("abcd")
    assert ids(service.items(STRANGER, "news", max_items=2)) == ["c", "d"]
    assert ids(service.items(STRANGER, "news", ids=["d", "zz", "a"])) == ["d", "a"]


def test_items_of_missing_node_is_item_not_found(env):
    service, *_ = env
    with pytest.raises(PubSubError) as e:
        service.items(OWNER, "nope")
    assert err(e) == ("cancel", "item-not-found", None)


def test_outcast_and_publish_only_may_not_retrieve(env):
    service, *_ = env
    for actor in (OUTCAST, PONLY):
        with pytest.raises(PubSubError) as e:
            service.items(actor, "news")
        assert err(e) == ("auth", "forbidden", None)


def test_whitelist_node_closed_to_unaffiliated(env):
    service, *_ = env
    service.configure(OWNER, "news", {"access_model": "whitelist"})
    with pytest.raises(PubSubError) as e:
        service.subscribe(STRANGER, "news", STRANGER)
    assert err(e) == ("cancel", "not-allowed", "closed-node")
    with pytest.raises(PubSubError) as e:
        service.items(STRANGER, "news")
    assert err(e) == ("cancel", "not-allowed", "closed-node")
    service.subscribe(MEMBER, "news", MEMBER)
    service.items(PUB, "news")


def test_presence_node_requires_presence_subscription_to_an_owner(env):
    service, _, _, roster = env
    service.configure(OWNER, "news", {"access_model": "presence"})
    with pytest.raises(PubSubError) as e:
        service.subscribe(STRANGER, "news", STRANGER)
    assert err(e) == ("auth", "not-authorized", "presence-subscription-required")
    with pytest.raises(PubSubError) as e:
        service.items(STRANGER, "news")
    assert err(e) == ("auth", "not-authorized", "presence-subscription-required")
    roster.presence.add(("owner@example.org", "stranger@example.org"))
    service.subscribe(STRANGER, "news", STRANGER)
    service.items(STRANGER, "news")


def test_roster_node_requires_an_allowed_group(env):
    service, _, _, roster = env
    service.configure(OWNER, "news", {"access_model": "roster",
                                      "roster_groups_allowed": ["friends"]})
    roster.groups[("owner@example.org", "stranger@example.org")] = {"work"}
    with pytest.raises(PubSubError) as e:
        service.subscribe(STRANGER, "news", STRANGER)
    assert err(e) == ("auth", "not-authorized", "not-in-roster-group")
    roster.groups[("owner@example.org", "stranger@example.org")] = {"work", "friends"}
    service.subscribe(STRANGER, "news", STRANGER)


def test_service_admins_own_every_node(env):
    service, *_ = env
    service.configure(ADMIN, "news", {"title": "by admin"})
    service.delete(ADMIN, "news")


def test_may_see_follows_access_model_and_affiliations(env):
    service, _, _, roster = env
    node = service.nodes["news"]
    assert service.may_see(STRANGER, node) and not service.may_see(OUTCAST, node)
    service.configure(OWNER, "news", {"access_model": "presence"})
    assert not service.may_see(STRANGER, node)
    assert service.may_see(MEMBER, node) and service.may_see(OWNER, node)
    roster.presence.add(("owner@example.org", "stranger@example.org"))
    assert service.may_see(STRANGER, node)


def test_notifications_skip_subscribers_who_lost_access(env):
    service, _, rec, roster = env
    service.configure(OWNER, "news", {"access_model": "presence"})
    roster.presence.add(("owner@example.org", "stranger@example.org"))
    service.subscribe(STRANGER, "news", STRANGER)
    roster.presence.clear()
    rec.take()
    service.publish(OWNER, "news", "a", "x")
    assert rec.take() == []


# -- subscriptions ----------------------------------------------------------------

def test_subscribe_and_unsubscribe_write_through(env):
    service, store, *_ = env
    assert service.subscribe(STRANGER, "news", "stranger@example.org") == "subscribed"
    assert store.nodes["news"]["subscriptions"] == {"stranger@example.org": "subscribed"}
    assert service.subscribe(STRANGER, "news", "stranger@example.org") == "subscribed"
    service.unsubscribe(STRANGER, "news", "stranger@example.org")
    assert store.nodes["news"]["subscriptions"] == {}


def test_subscribing_another_jid_is_invalid_jid_unless_owner(env):
    service, *_ = env
    with pytest.raises(PubSubError) as e:
        service.subscribe(STRANGER, "news", MEMBER)
    assert err(e) == ("modify", "bad-request", "invalid-jid")
    service.subscribe(OWNER, "news", MEMBER)


def test_outcast_may_not_subscribe(env):
    service, *_ = env
    with pytest.raises(PubSubError) as e:
        service.subscribe(OUTCAST, "news", OUTCAST)
    assert err(e) == ("auth", "forbidden", None)


def test_subscribe_to_missing_node_is_item_not_found(env):
    service, *_ = env
    with pytest.raises(PubSubError) as e:
        service.subscribe(STRANGER, "nope", STRANGER)
    assert err(e) == ("cancel", "item-not-found", None)


def test_too_many_subscriptions(env):
    service, *_ = env
    for i in range(4):
        service.subscribe(f"u{i}@example.org", "news", f"u{i}@example.org")
    with pytest.raises(PubSubError) as e:
        service.subscribe(STRANGER, "news", STRANGER)
    assert err(e) == ("modify", "policy-violation", "too-many-subscriptions")


def test_unsubscribe_not_subscribed_and_other_jid(env):
    service, *_ = env
    with pytest.raises(PubSubError) as e:
        service.unsubscribe(STRANGER, "news", STRANGER)
    assert err(e) == ("modify", "unexpected-request", "not-subscribed")
    service.subscribe(MEMBER, "news", MEMBER)
    with pytest.raises(PubSubError) as e:
        service.unsubscribe(STRANGER, "news", MEMBER)
    assert err(e) == ("auth", "forbidden", None)
    service.unsubscribe(OWNER, "news", MEMBER)


def test_last_published_item_sent_on_subscribe_when_configured(env):
    service, _, rec, _ = env
    service.publish(OWNER, "news", "a", "1")
    service.publish(OWNER, "news", "b", "2")
    rec.take()
    service.subscribe(MEMBER, "news", MEMBER)
    assert rec.take() == []  # default: never
    service.configure(OWNER, "news", {"send_last_published_item": "on_sub"})
    service.subscribe(STRANGER, "news", STRANGER)
    sent = rec.take()
    assert [(s["kind"], s["recipients"], [i.id for i in s["items"]], s["last"]) for s in sent] \
        == [("items", [STRANGER], ["b"], True)]


def test_subscriptions_entity_and_owner_views(env):
    service, *_ = env
    service.create(OWNER, "other")
    service.subscribe(MEMBER, "news", MEMBER)
    service.subscribe(MEMBER, "other", "member@example.org")
    service.subscribe(STRANGER, "news", STRANGER)
    assert sorted(service.subscriptions(MEMBER)) == [
        ("news", MEMBER, "subscribed"), ("other", "member@example.org", "subscribed")]
    assert service.subscriptions(MEMBER, "other") == [("other", "member@example.org", "subscribed")]
    assert sorted(service.subscriptions(OWNER, "news", owner=True)) == [
        ("news", MEMBER, "subscribed"), ("news", STRANGER, "subscribed")]
    with pytest.raises(PubSubError) as e:
        service.subscriptions(PUB, "news", owner=True)
    assert err(e) == ("auth", "forbidden", None)


def test_set_subscriptions_owner_only_notifies_changed_jids(env):
    service, store, rec, _ = env
    with pytest.raises(PubSubError) as e:
        service.set_subscriptions(PUB, "news", {STRANGER: "subscribed"})
    assert err(e) == ("auth", "forbidden", None)
    rec.take()
    service.set_subscriptions(OWNER, "news", {STRANGER: "subscribed"})
    assert store.nodes["news"]["subscriptions"] == {STRANGER: "subscribed"}
    assert rec.take() == [{"node": "news", "kind": "subscription", "jid": STRANGER,
                           "state": "subscribed", "recipients": [STRANGER]}]
    with pytest.raises(PubSubError):
        service.set_subscriptions(OWNER, "news", {MEMBER: "subscribed", OUTCAST: "subscribed"})
    assert MEMBER not in service.nodes["news"].subscriptions  # all or nothing
    with pytest.raises(PubSubError) as e:
        service.set_subscriptions(OWNER, "news", {MEMBER: "pending"})
    assert err(e) == ("modify", "bad-request", None)
    service.set_subscriptions(OWNER, "news", {STRANGER: "none"})
    assert store.nodes["news"]["subscriptions"] == {}


# -- affiliations -----------------------------------------------------------------

def test_affiliations_entity_and_owner_views(env):
    service, *_ = env
    assert service.affiliations(PUB) == [("news", "publisher")]
    assert service.affiliations(STRANGER) == []
    assert dict(service.affiliations(OWNER, "news", owner=True))["pub@example.org"] == "publisher"
    with pytest.raises(PubSubError) as e:
        service.affiliations(MEMBER, "news", owner=True)
    assert err(e) == ("auth", "forbidden", None)


def test_set_affiliations_owner_only_all_or_nothing(env):
    service, store, *_ = env
    with pytest.raises(PubSubError) as e:
        service.set_affiliations(PUB, "news", {"x@example.org": "publisher"})
    assert err(e) == ("auth", "forbidden", None)
    with pytest.raises(PubSubError) as e:
        service.set_affiliations(OWNER, "news", {"x@example.org": "publisher",
                                                 "y@example.org": "king"})
    assert err(e) == ("modify", "bad-request", None)
    assert "x@example.org" not in service.nodes["news"].affiliations
    service.set_affiliations(OWNER, "news", {"pub@example.org": "none"})
    assert "pub@example.org" not in store.nodes["news"]["affiliations"]


def test_node_must_keep_an_owner(env):
    service, *_ = env
    with pytest.raises(PubSubError) as e:
        service.set_affiliations(OWNER, "news", {"owner@example.org": "member"})
    assert err(e) == ("modify", "not-acceptable", None)
    service.set_affiliations(OWNER, "news", {"owner@example.org": "member",
                                             "pub@example.org": "owner"})
    with pytest.raises(PubSubError):
        service.configure(OWNER, "news", {"title": "x"})


def test_making_a_subscriber_outcast_drops_its_subscriptions(env):
    service, store, *_ = env
    service.subscribe(STRANGER, "news", STRANGER)
    service.subscribe(STRANGER, "news", "stranger@example.org")
    service.set_affiliations(OWNER, "news", {"stranger@example.org": "outcast"})
    assert service.nodes["news"].subscriptions == {}
    assert store.nodes["news"]["subscriptions"] == {}


# -- configuration and deletion ---------------------------------------------------

def test_configure_and_get_config_rights(env):
    service, store, *_ = env
    for actor in (PUB, MEMBER, STRANGER, OUTCAST):
        with pytest.raises(PubSubError) as e:
            service.configure(actor, "news", {"title": "x"})
        assert err(e) == ("auth", "forbidden", None)
    service.configure(OWNER, "news", {"title": "x"})
    assert store.nodes["news"]["config"]["title"] == "x"
    assert service.get_config(PUB, "news")["title"] == "x"  # Prosody: publishers may read it
    with pytest.raises(PubSubError) as e:
        service.get_config(MEMBER, "news")
    assert err(e) == ("auth", "forbidden", None)
    with pytest.raises(PubSubError) as e:
        service.get_config(OWNER, "nope")
    assert err(e) == ("cancel", "item-not-found", None)


def test_bad_configuration_changes_nothing(env):
    service, store, *_ = env
    before = dict(service.nodes["news"].config)
    with pytest.raises(PubSubError) as e:
        service.configure(OWNER, "news", {"title": "ok", "max_items": 11})
    assert e.value.condition == "not-acceptable"
    assert service.nodes["news"].config == before == store.nodes["news"]["config"]


def test_narrowing_access_model_drops_subscriptions_it_denies(env):
    service, store, *_ = env
    service.subscribe(STRANGER, "news", STRANGER)
    service.subscribe(MEMBER, "news", MEMBER)
    service.configure(OWNER, "news", {"access_model": "whitelist"})
    assert service.nodes["news"].subscriptions == {MEMBER: "subscribed"}
    assert store.nodes["news"]["subscriptions"] == {MEMBER: "subscribed"}


def test_notify_config(env):
    service, _, rec, _ = env
    service.subscribe(MEMBER, "news", MEMBER)
    rec.take()
    service.configure(OWNER, "news", {"title": "quiet"})
    assert rec.take() == []
    service.configure(OWNER, "news", {"notify_config": True})
    assert rec.take() == [{"node": "news", "kind": "configuration", "recipients": [MEMBER]}]


def test_delete_owner_only_notifies_with_redirect(env):
    service, store, rec, _ = env
    service.subscribe(MEMBER, "news", MEMBER)
    service.publish(OWNER, "news", "a", "x")
    rec.take()
    for actor in (PUB, MEMBER, STRANGER):
        with pytest.raises(PubSubError) as e:
            service.delete(actor, "news")
        assert err(e) == ("auth", "forbidden", None)
    service.delete(OWNER, "news", redirect="xmpp:pubsub.example.org?;node=new")
    assert "news" not in service.nodes and "news" not in store.nodes and "news" not in store.items
    assert rec.take() == [{"node": "news", "kind": "delete", "recipients": [MEMBER],
                           "redirect": "xmpp:pubsub.example.org?;node=new"}]
    with pytest.raises(PubSubError) as e:
        service.delete(OWNER, "news")
    assert err(e) == ("cancel", "item-not-found", None)


def test_notify_delete_false_deletes_silently(env):
    service, _, rec, _ = env
    service.subscribe(MEMBER, "news", MEMBER)
    service.configure(OWNER, "news", {"notify_delete": False})
    rec.take()
    service.delete(OWNER, "news")
    assert rec.take() == []


def test_itemreply_decides_the_publisher_shown(env):
    service, *_ = env
    node = service.nodes["news"]
    item = service.publish(PUB, "news", "a", "x")
    assert service.item_publisher(node, item) is None  # Prosody's default: none
    service.configure(OWNER, "news", {"itemreply": "publisher"})
    assert service.item_publisher(node, item) == "pub@example.org"
    service.configure(OWNER, "news", {"itemreply": "owner"})
    assert service.item_publisher(node, item) == "owner@example.org"


# -- account deletion and loading -------------------------------------------------

def test_forget_jid_drops_subscriptions_affiliations_and_orphaned_nodes(env):
    service, store, *_ = env
    service.subscribe(MEMBER, "news", MEMBER)
    service.subscribe(MEMBER, "news", "member@example.org")
    service.create(MEMBER, "mine")
    service.forget_jid("member@example.org")
    assert service.nodes["news"].subscriptions == {}
    assert "member@example.org" not in store.nodes["news"]["affiliations"]
    assert "mine" not in service.nodes and "mine" not in store.nodes


def test_loaded_nodes_get_defaults_filled_in():
    from xmppd.services.pubsub.core import Node
    service = PubSub("s", nodes={"n": Node("n", {"title": "T"}, {"o@x": "owner"})},
                     limits=Limits())
    assert service.nodes["n"].config == {**DEFAULT_CONFIG, "title": "T"}


# -- bounds and crash recovery found by review ------------------------------------------


def test_one_owner_cannot_take_every_node_of_a_shared_service():
    from xmppd.services.pubsub.core import Limits, PubSub, PubSubError

    service = PubSub("pubsub.localhost", limits=Limits(max_nodes=10, max_nodes_per_owner=3))
    for n in range(3):
        service.create("mallory@localhost/x", f"m{n}")
    with pytest.raises(PubSubError) as refused:
        service.create("mallory@localhost/y", "m3")
    assert (refused.value.condition, refused.value.pubsub_condition) == (
        "policy-violation", "max-nodes-exceeded")
    service.create("alice@localhost/pc", "a0")  # others still can


def test_affiliations_of_a_node_are_bounded():
    from xmppd.services.pubsub.core import Limits, PubSub, PubSubError

    service = PubSub("pubsub.localhost", limits=Limits(max_affiliations=5))
    service.create("alice@localhost/pc", "n")
    service.set_affiliations("alice@localhost/pc", "n",
                             {f"u{i}@localhost": "member" for i in range(4)})
    with pytest.raises(PubSubError) as refused:
        service.set_affiliations("alice@localhost/pc", "n",
                                 {f"v{i}@localhost": "member" for i in range(2)})
    assert refused.value.condition == "policy-violation"
    assert len(service.nodes["n"].affiliations) == 5


def test_max_items_holds_from_the_load_after_a_crash_between_publish_and_trim():
    from collections import OrderedDict

    from xmppd.services.pubsub.core import Item, Node, PubSub

    node = Node(name="n", config={"max_items": 1},
                affiliations={"alice@localhost": "owner"}, subscriptions={},
                items=OrderedDict((i, Item(i, f"<p>{i}</p>", "alice@localhost", 0.0))
                                  for i in ("old", "new")))
    service = PubSub("alice@localhost", nodes={"n": node})
    assert list(service.nodes["n"].items) == ["new"]
