"""Fakes for testing the pure pubsub core: a dict store, a recording
broadcaster and a roster-like Access (shared by the unit and property tests)."""

from __future__ import annotations

import copy
import itertools
from collections import OrderedDict

from xmppd.services.pubsub.core import Item, Limits, Node, PubSub


class DictStore:
    """A NodeStore keeping what the core wrote, to compare with its state."""

    def __init__(self):
        self.nodes: dict[str, dict] = {}
        self.items: dict[str, "OrderedDict[str, Item]"] = {}
        self.calls: list[tuple] = []

    def save_node(self, node: Node):
        self.calls.append(("save_node", node.name))
        self.nodes[node.name] = copy.deepcopy({
            "config": node.config, "affiliations": node.affiliations,
            "subscriptions": node.subscriptions})
        self.items.setdefault(node.name, OrderedDict())
        return ("write", len(self.calls))

    def delete_node(self, name: str):
        self.calls.append(("delete_node", name))
        self.nodes.pop(name, None)
        self.items.pop(name, None)
        return ("write", len(self.calls))

    def save_item(self, node: Node, item: Item):
        self.calls.append(("save_item", node.name, item.id))
        items = self.items.setdefault(node.name, OrderedDict())
        items.pop(item.id, None)
        items[item.id] = copy.deepcopy(item)
        return ("write", len(self.calls))

    def delete_items(self, node: Node, ids):
        self.calls.append(("delete_items", node.name, None if ids is None else list(ids)))
        items = self.items.setdefault(node.name, OrderedDict())
        if ids is None:
            items.clear()
        else:
            for i in ids:
                items.pop(i, None)
        return ("write", len(self.calls))


class Recorder:
    """A Broadcaster remembering every notification."""

    def __init__(self):
        self.sent: list[dict] = []

    def notify(self, service, node, kind, recipients, **data):
        self.sent.append({"node": node.name, "kind": kind,
                          "recipients": list(recipients), **data})

    def take(self) -> list[dict]:
        sent, self.sent = self.sent, []
        return sent


class Roster:
    """An Access: per owner, who is subscribed to its presence and in which groups."""

    def __init__(self):
        self.presence: set[tuple[str, str]] = set()
        self.groups: dict[tuple[str, str], set[str]] = {}

    def relation(self, owner: str, jid: str) -> dict:
        return {"presence": (owner, jid) in self.presence,
                "roster_groups": set(self.groups.get((owner, jid), ()))}


def make_service(**kw) -> tuple[PubSub, DictStore, Recorder, Roster]:
    store, rec, roster = DictStore(), Recorder(), Roster()
    counter = itertools.count(1)
    kw.setdefault("limits", Limits(max_items=10, max_payload=100, max_nodes=5,
                                   max_subscriptions=4))
    service = PubSub("pubsub.example.org", store=store, broadcaster=rec, access=roster,
                     new_id=lambda: f"id{next(counter)}", clock=lambda: 1000.0, **kw)
    return service, store, rec, roster
