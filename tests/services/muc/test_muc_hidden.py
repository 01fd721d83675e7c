"""Public and hidden rooms (xmppd/services/muc/features/hidden.py): XEP-0045
§6.3 — only public rooms are listed in the service's disco#items, and the
room says muc_public or muc_hidden."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from muc_harness_helpers import (  # noqa: E402
    MUC_DOMAIN, configure, create, make_harness, room_jid)

from xmppd import ns  # noqa: E402


def listed(session):
    session.feed(f"<iq type='get' id='i' to='{MUC_DOMAIN}'><query xmlns='{ns.DISCO_ITEMS}'/></iq>")
    (reply,) = session.take()
    return {i["jid"] for i in reply.firstChildElement().elements(ns.DISCO_ITEMS, "item")}


def test_hiding_a_room_takes_it_off_the_list_and_publishing_puts_it_back():
    h = make_harness()
    alice = h.login("alice@localhost/r")
    create(alice, "shy", "Alice")
    bob = h.login("bob@localhost/r")
    assert room_jid("shy") in listed(bob)
    configure(alice, "shy", {"muc#roomconfig_publicroom": False})
    assert room_jid("shy") not in listed(bob)
    configure(alice, "shy", {"muc#roomconfig_publicroom": True}, iq_id="c2")
    assert room_jid("shy") in listed(bob)


def test_default_public_false_makes_new_rooms_hidden():
    h = make_harness(default_public=False)
    alice = h.login("alice@localhost/r")
    create(alice, "shy", "Alice")
    assert room_jid("shy") not in listed(h.login("bob@localhost/r"))
