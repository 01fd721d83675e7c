"""Discussion history (xmppd/services/muc/features/history.py): XEP-0045
§7.2.13-14 — the last messages replayed on join with their XEP-0203 delay,
as many as muc#roomconfig_historylength (at most max_history) and as few as
the joiner's maxstanzas / maxchars / seconds / since ask; what Prosody 0.12's
history.lib.lua keeps (messages with a body, not those hinted no-store)."""

from __future__ import annotations

import os
import sys

from twisted.internet import task

sys.path.insert(0, os.path.dirname(__file__))

from muc_harness_helpers import (  # noqa: E402
    bodies, configure, create, join, make_harness, messages, room_jid, say)

from xmppd import ns  # noqa: E402

RJ = room_jid("log")
HL = "muc#roomconfig_historylength"


def room_with(count, clock=None, fields=None, step=0, **options):
    clock = clock or task.Clock()
    clock.advance(1_700_000_000)
    h = make_harness(clock, **options)
    alice = h.login("alice@localhost/r")
    create(alice, "log", "Alice", fields)
    for i in range(count):
        say(alice, "log", f"m{i}")
        clock.advance(step)
    alice.take()
    return h, clock, alice


def replay(h, history=None, who="bob"):
    session = h.login(f"{who}@localhost/r")
    got = join(session, "log", who.title(), history=history)
    return [m for m in messages(got) if any(c.name == "body" for c in m.elements())], got


def test_a_joiner_gets_the_history_in_order_with_delay_before_the_subject():
    h, clock, alice = room_with(3)
    history, got = replay(h)
    assert bodies(history) == ["m0", "m1", "m2"]
    for m in history:
        assert (m["from"], m["type"]) == (f"{RJ}/Alice", "groupchat")
        delay = next(m.elements(ns.DELAY, "delay"))
        assert delay["from"] == RJ and delay["stamp"].endswith("Z")
    subject_at = next(i for i, s in enumerate(got)
                      if any(c.name == "subject" for c in s.elements()))
    assert got.index(history[-1]) < subject_at


def test_the_room_keeps_only_historylength_messages():
    h, clock, alice = room_with(5, fields={HL: 2})
    history, _ = replay(h)
    assert bodies(history) == ["m3", "m4"]


def test_history_is_never_longer_than_max_history():
    h, clock, alice = room_with(0, max_history=3)
    configure(alice, "log", {HL: 50})
    for i in range(6):
        say(alice, "log", f"m{i}")
    history, _ = replay(h)
    assert bodies(history) == ["m3", "m4", "m5"]


def test_historylength_zero_keeps_nothing():
    h, clock, alice = room_with(3, fields={HL: 0})
    history, _ = replay(h)
    assert history == []


def test_maxstanzas_limits_the_replay_and_zero_means_none():
    h, clock, alice = room_with(4)
    history, _ = replay(h, "<history maxstanzas='2'/>")
    assert bodies(history) == ["m2", "m3"]
    history, _ = replay(h, "<history maxstanzas='0'/>", who="carol")
    assert history == []


def test_maxchars_zero_means_none_and_a_large_maxchars_all():
    h, clock, alice = room_with(3)
    history, _ = replay(h, "<history maxchars='0'/>")
    assert history == []
    history, _ = replay(h, "<history maxchars='100000'/>", who="carol")
    assert bodies(history) == ["m0", "m1", "m2"]


def test_maxchars_counts_whole_stanzas_from_the_newest():
    h, clock, alice = room_with(3)
    one, _ = replay(h, "<history maxstanzas='1'/>")
    size = len(one[0].toXml())
    # room for the newest two stanzas but not three
    history, _ = replay(h, f"<history maxchars='{size * 2 + size // 2}'/>", who="carol")
    assert bodies(history) == ["m1", "m2"]


def test_seconds_replays_only_what_was_said_in_the_last_seconds():
    h, clock, alice = room_with(4, step=60)      # one message a minute
    history, _ = replay(h, "<history seconds='150'/>")
    assert bodies(history) == ["m2", "m3"]


def test_since_replays_only_what_was_said_after_the_stamp():
    h, clock, alice = room_with(4, step=60)
    first, _ = replay(h, "<history maxstanzas='2'/>")
    stamp = next(first[0].elements(ns.DELAY, "delay"))["stamp"]      # m2's
    history, _ = replay(h, f"<history since='{stamp}'/>", who="carol")
    assert bodies(history) == ["m2", "m3"]


def test_messages_without_a_body_are_not_kept():
    h, clock, alice = room_with(0)
    alice.feed(f"<message type='groupchat' to='{RJ}'>"
               f"<composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
    say(alice, "log", "said")
    history, got = replay(h)
    assert bodies(history) == ["said"]
    assert not [m for m in messages(got) if any(c.name == "composing" for c in m.elements())]


def test_a_subject_change_is_not_history():
    h, clock, alice = room_with(1)
    alice.feed(f"<message type='groupchat' to='{RJ}'><subject>Topic</subject></message>")
    history, got = replay(h)
    assert bodies(history) == ["m0"]
    subjects = [m for m in messages(got) if any(c.name == "subject" for c in m.elements())]
    assert len(subjects) == 1


def test_a_message_hinted_no_store_is_not_kept():
    """As Prosody's muc-message-is-historic (XEP-0334 hints)."""
    h, clock, alice = room_with(0)
    alice.feed(f"<message type='groupchat' to='{RJ}'><body>secret</body>"
               f"<no-store xmlns='urn:xmpp:hints'/></message>")
    say(alice, "log", "public")
    history, _ = replay(h)
    assert bodies(history) == ["public"]
