"""Property-based tests of the pubsub core (issue 12).

After any sequence of publish, retract, purge, subscribe, unsubscribe,
configure (access model, max_items, roster groups, persistence, last item),
affiliation changes, presence changes of a contact, delete and re-create, by
any mix of actors (owner, publisher, publish-only, member, outcast, stranger,
roster contact), checked after every step against an independent oracle of
XEP-0060's access rules:

* no one is notified of anything (items, retractions, purge, deletion, the
  last item on subscription) unless they are a subscriber the access model
  allows at that moment, and everyone such is notified of a publish;
* retrieving items succeeds exactly for whom the oracle allows it, with
  exactly the refusal the model names otherwise;
* no subscription is held by an outcast or by an unaffiliated JID on a
  whitelist node;
* every node holds at most its ``max_items`` (``max``: the limit);
* the store (a dict fake, written through) equals the in-memory state:
  nodes, configuration, affiliations, subscriptions, and the items of nodes
  that persist them (none of the others).

The examples are derandomised so that CI always runs the same ones; set
``XMPPD_HYPOTHESIS_EXPLORE=1`` to explore new ones (and more of them).
"""

from __future__ import annotations

import os
import sys

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(__file__))

from pubsub_core_fakes import make_service  # noqa: E402

from xmppd.services.pubsub.core import Limits, PubSubError, bare  # noqa: E402

EXPLORE = bool(os.environ.get("XMPPD_HYPOTHESIS_EXPLORE"))
LIMIT = 4

OWNER = "owner@example.org"
ACTORS = {
    "owner": OWNER,
    "publisher": "pub@example.org",
    "publish-only": "ponly@example.org",
    "member": "member@example.org",
    "outcast": "outcast@example.org",
    "stranger": "stranger@example.org",
    "contact": "contact@example.org",
}
INITIAL_AFFS = {"pub@example.org": "publisher", "ponly@example.org": "publish-only",
                "member@example.org": "member", "outcast@example.org": "outcast"}
NODES = ("a", "b")


def examples(n: int) -> settings:
    return settings(max_examples=n * 10 if EXPLORE else n, deadline=None,
                    derandomize=not EXPLORE, database=None, print_blob=False,
                    suppress_health_check=[HealthCheck.too_slow])


# the owner acts more often than the others, so that configuration changes
# (which only it may make) happen between the other steps
actor = st.sampled_from(["owner"] * 4 + sorted(ACTORS))
jid_form = st.sampled_from(["bare", "full", "other-full"])
node = st.sampled_from(NODES)
item_id = st.sampled_from(["i1", "i2", "i3", "i4", "i5", None])
ops = st.one_of(
    st.tuples(st.just("publish"), actor, node, item_id),
    st.tuples(st.just("retract"), actor, node, st.lists(item_id.filter(bool), max_size=2),
              st.booleans()),
    st.tuples(st.just("purge"), actor, node),
    st.tuples(st.just("subscribe"), actor, node, jid_form),
    st.tuples(st.just("unsubscribe"), actor, node, jid_form),
    st.tuples(st.just("configure"), actor, node, st.fixed_dictionaries({
        "access_model": st.sampled_from(["open", "presence", "roster", "whitelist"])})),
    st.tuples(st.just("configure"), actor, node, st.fixed_dictionaries({
        "publish_model": st.sampled_from(["publishers", "subscribers", "open"])})),
    st.tuples(st.just("configure"), actor, node, st.fixed_dictionaries({}, optional={
        "publish_model": st.sampled_from(["publishers", "subscribers", "open"]),
        "access_model": st.sampled_from(["open", "presence", "roster", "whitelist"]),
        "max_items": st.sampled_from([1, 2, 3, LIMIT, "max"]),
        "roster_groups_allowed": st.sampled_from([[], ["friends"], ["work"]]),
        "persist_items": st.booleans(),
        "send_last_published_item": st.sampled_from(["never", "on_sub"]),
        "notify_delete": st.booleans(),
    })),
    st.tuples(st.just("affiliate"), actor, node, actor,
              st.sampled_from(["owner", "publisher", "publish-only", "member", "none",
                               "outcast"])),
    st.tuples(st.just("presence"), st.booleans()),
    st.tuples(st.just("delete"), actor, node),
    st.tuples(st.just("create"), actor, node),
    st.tuples(st.just("items"), actor, node),
)


def jid_of(name: str, form: str = "full") -> str:
    b = ACTORS[name]
    return {"bare": b, "full": f"{b}/res", "other-full": f"{b}/other"}[form]


class Oracle:
    """XEP-0060's access rules, written independently of the core."""

    def __init__(self, service, roster):
        self.service = service
        self.roster = roster

    def affiliation(self, jid: str, node) -> str:
        return node.affiliations.get(bare(jid), "none")

    def model_allows(self, jid: str, node) -> bool:
        model = node.config["access_model"]
        b = bare(jid)
        owners = [j for j, a in node.affiliations.items() if a == "owner"]
        if model == "open":
            return True
        if model == "whitelist":
            return False
        if model == "presence":
            return any(o == b or (o, b) in self.roster.presence for o in owners)
        if model == "roster":
            allowed = set(node.config["roster_groups_allowed"])
            return any(o == b or self.roster.groups.get((o, b), set()) & allowed
                       for o in owners)
        raise AssertionError(model)

    def may_see(self, jid: str, node) -> bool:
        aff = self.affiliation(jid, node)
        if aff in ("owner", "publisher", "member"):
            return True
        if aff in ("outcast", "publish-only"):
            return False
        return self.model_allows(jid, node)

    def may_publish(self, jid: str, node) -> bool:
        aff = self.affiliation(jid, node)
        if aff in ("owner", "publisher", "publish-only"):
            return True
        if aff == "outcast":
            return False
        model = node.config["publish_model"]
        return model == "open" or (model == "subscribers" and (
            jid in node.subscriptions or bare(jid) in node.subscriptions))

    def may_subscribe(self, jid: str, node) -> bool:
        aff = self.affiliation(jid, node)
        if aff in ("owner", "publisher", "member"):
            return True
        return aff == "none" and self.model_allows(jid, node)

    def refusal(self, jid: str, node) -> tuple | None:
        if self.may_see(jid, node):
            return None
        if self.affiliation(jid, node) in ("outcast", "publish-only"):
            return ("forbidden", None)
        return {"whitelist": ("not-allowed", "closed-node"),
                "presence": ("not-authorized", "presence-subscription-required"),
                "roster": ("not-authorized", "not-in-roster-group")}[node.config["access_model"]]


def check_invariants(service, store, oracle, sent, published):
    limits = service.limits
    # notifications reach only allowed subscribers (nodes are looked up in a
    # snapshot taken before the step: a deleted node's notice is judged on it)
    for note_, node_obj in sent:
        for jid in note_["recipients"]:
            assert jid in node_obj.subscriptions, note_
            assert oracle.may_see(jid, node_obj), (jid, note_)
    for name, item, node_obj in published:
        if not node_obj.config["deliver_notifications"]:
            continue
        expected = sorted(j for j in node_obj.subscriptions if oracle.may_see(j, node_obj))
        got = [n for n, _ in sent if n["kind"] == "items" and not n["last"]]
        assert len(got) == (1 if expected else 0), got
        if expected:
            assert sorted(got[0]["recipients"]) == expected
            assert got[0]["items"] == [item]
    for name, node_obj in service.nodes.items():
        limit = limits.max_items if node_obj.config["max_items"] == "max" \
            else node_obj.config["max_items"]
        assert len(node_obj.items) <= limit
        for jid in node_obj.subscriptions:
            aff = oracle.affiliation(jid, node_obj)
            assert aff not in ("outcast", "publish-only"), (name, jid)
            if node_obj.config["access_model"] == "whitelist":
                assert aff != "none", (name, jid)
    # the store equals the in-memory state
    assert set(store.nodes) == set(service.nodes)
    for name, node_obj in service.nodes.items():
        assert store.nodes[name] == {"config": node_obj.config,
                                     "affiliations": node_obj.affiliations,
                                     "subscriptions": node_obj.subscriptions}, name
        stored = store.items.get(name, {})
        if node_obj.config["persist_items"]:
            assert list(stored.items()) == list(node_obj.items.items()), name
        else:
            assert not stored, name
    assert set(store.items) <= set(service.nodes)


def run(sequence, log=note):
    import copy

    service, store, rec, roster = make_service(
        limits=Limits(max_items=LIMIT, max_payload=1000, max_nodes=10, max_subscriptions=100))
    roster.groups[(OWNER, ACTORS["contact"])] = {"friends"}
    oracle = Oracle(service, roster)
    for name in NODES:
        service.create(OWNER, name)
        service.set_affiliations(OWNER, name, dict(INITIAL_AFFS))
    rec.take()
    for step in sequence:
        log(repr(step))
        before = copy.deepcopy(service.nodes)
        published = []
        kind = step[0]
        try:
            if kind == "publish":
                _, who, name, iid = step
                allowed = name in before and oracle.may_publish(jid_of(who), before[name])
                try:
                    item = service.publish(jid_of(who), name, iid, f"<p by='{who}'/>")
                except PubSubError:
                    assert not allowed, step
                    raise
                assert allowed, step
                published.append((name, item, service.nodes[name]))
            elif kind == "retract":
                _, who, name, ids, notify = step
                service.retract(jid_of(who), name, ids, notify=notify)
            elif kind == "purge":
                service.purge(jid_of(step[1]), step[2])
            elif kind == "subscribe":
                _, who, name, form = step
                allowed = name in before and oracle.may_subscribe(jid_of(who), before[name])
                try:
                    service.subscribe(jid_of(who), name, jid_of(who, form))
                except PubSubError:
                    assert not allowed, step
                    raise
                assert allowed, step
            elif kind == "unsubscribe":
                _, who, name, form = step
                service.unsubscribe(jid_of(who), name, jid_of(who, form))
            elif kind == "configure":
                service.configure(jid_of(step[1]), step[2], step[3])
            elif kind == "affiliate":
                _, who, name, target, aff = step
                service.set_affiliations(jid_of(who), name, {ACTORS[target]: aff})
            elif kind == "presence":
                if step[1]:
                    roster.presence.add((OWNER, ACTORS["contact"]))
                else:
                    roster.presence.discard((OWNER, ACTORS["contact"]))
            elif kind == "delete":
                service.delete(jid_of(step[1]), step[2])
            elif kind == "create":
                service.create(jid_of(step[1]), step[2])
            elif kind == "items":
                _, who, name = step
                node_obj = service.nodes.get(name)
                try:
                    got = service.items(jid_of(who), name)
                except PubSubError as e:
                    assert node_obj is not None or e.condition == "item-not-found"
                    if node_obj is not None:
                        assert oracle.refusal(jid_of(who), node_obj) == (
                            e.condition, e.pubsub_condition)
                else:
                    assert oracle.may_see(jid_of(who), node_obj)
                    assert got == list(node_obj.items.values())
        except PubSubError as e:
            # a refusal changes nothing at all
            assert service.nodes == before, (step, e)
        sent = []
        for n in rec.take():
            node_obj = service.nodes.get(n["node"]) or before.get(n["node"])
            if n["kind"] == "delete":
                node_obj = before[n["node"]]
            sent.append((n, node_obj))
        check_invariants(service, store, oracle, sent, published)


@examples(300)
@given(st.lists(ops, min_size=20, max_size=60))
def test_any_sequence_keeps_access_limits_and_store_consistent(sequence):
    run(sequence)


def test_a_known_sequence_runs():
    """The property runner itself works on a sequence exercising every step."""
    run(log=lambda _: None, sequence=[
        ("subscribe", "contact", "a", "full"),
        ("configure", "owner", "a", {"access_model": "presence", "max_items": 2}),
        ("presence", True),
        ("subscribe", "contact", "a", "full"),
        ("publish", "publisher", "a", "i1"),
        ("publish", "owner", "a", None),
        ("publish", "owner", "a", "i2"),
        ("presence", False),
        ("publish", "owner", "a", "i3"),
        ("items", "contact", "a"),
        ("retract", "owner", "a", ["i3"], True),
        ("affiliate", "owner", "a", "contact", "outcast"),
        ("configure", "owner", "a", {"persist_items": False}),
        ("publish", "owner", "a", "i4"),
        ("purge", "publisher", "a"),
        ("delete", "owner", "a"),
        ("create", "stranger", "a"),
        ("items", "outcast", "a"),
    ])
