"""XEP-0160: offline messages are stored, counted against a quota, and delivered
once, with an XEP-0203 delay, to the next resource sending initial presence.

Recipients log in unavailable and the test fires ``presence/initial`` itself
(after setting what the presence component would set), so these tests pin
the offline component and not the presence component's internals.
"""

import calendar
import time

from twisted.internet import defer

from xmppd import ns
from xmppd.testing import Harness, error_condition, only, result_of

BOB = "bob@localhost"
HINTS = "urn:xmpp:hints"
CHATSTATES = "http://jabber.org/protocol/chatstates"
DELAY = "urn:xmpp:delay"


def harness(**options):
    opts = {"component:offline": options} if options else None
    return Harness(["presence", "messaging", "offline"], options=opts)


def sender(h):
    alice = h.login("alice@localhost/phone", available=False)
    alice.available = True
    return alice


def come_online(h, full_jid, priority=0):
    """A session that sends initial presence, as the presence component would report it."""
    session = h.login(full_jid, available=False)
    session.available, session.priority = True, priority
    h.router.fire("presence/initial", session)
    return session


def restart_offline(h):
    """Stop and start the component: it reads who has messages waiting again."""
    offline = h.component("offline")
    offline.stopService()
    offline.startService()


def send(alice, to=BOB, mid="m1", mtype="chat", body="hello", extra=""):
    type_attr = f" type='{mtype}'" if mtype is not None else ""
    body_xml = f"<body>{body}</body>" if body is not None else ""
    alice.feed(f"<message to='{to}' id='{mid}'{type_attr}>{body_xml}{extra}</message>")


def stored(h, user=BOB):
    """What the store holds for ``user`` (read past any Gate the test put in)."""
    return result_of(h.server.storage.archive("offline").query(user))


def delay_of(stanza):
    delays = [c for c in stanza.elements() if c.uri == DELAY and c.name == "delay"]
    assert len(delays) == 1, stanza.toXml()
    return delays[0]


class Gate:
    """Wraps a store so that the named calls wait until the test releases them:
    a slow disk, to look at what happens while a write or read is in flight."""

    def __init__(self, store, *held):
        self.store, self.held, self.waiting = store, set(held), []

    def __getattr__(self, name):
        method = getattr(self.store, name)
        if name not in self.held:
            return method

        def held(*args, **kwargs):
            d = defer.Deferred()
            self.waiting.append((d, method, args, kwargs))
            return d
        return held

    def release(self):
        """Let everything waiting run (and whatever that starts), in order."""
        while self.waiting:
            d, method, args, kwargs = self.waiting.pop(0)
            method(*args, **kwargs).chainDeferred(d)


def gate(h, *held):
    component = h.component("offline")
    g = Gate(component.store["offline"], *held)
    component.store["offline"] = g
    return g


# -- storing ---------------------------------------------------------------------

def test_chat_to_offline_user_is_stored_not_bounced():
    h = harness()
    alice = sender(h)
    h.add_user(BOB)
    send(alice, mid="s1", body="are you there?")
    assert alice.take() == []
    (item,) = stored(h)
    assert item.with_ == "alice@localhost"
    assert "are you there?" in item.value and "id='s1'" in item.value


def test_normal_message_without_type_is_stored():
    h = harness()
    alice = sender(h)
    h.add_user(BOB)
    send(alice, mtype=None)
    send(alice, mid="m2", mtype="normal")
    assert alice.take() == []
    assert len(stored(h)) == 2


def test_message_to_online_user_is_delivered_not_stored():
    h = harness()
    alice = sender(h)
    bob = come_online(h, "bob@localhost/pc")
    send(alice)
    assert len(bob.take()) == 1
    assert stored(h) == []


def test_message_to_unknown_user_gets_service_unavailable():
    h = harness()
    alice = sender(h)
    send(alice, to="ghost@localhost", mid="g1")
    bounce = only(alice)
    assert bounce["id"] == "g1" and bounce["from"] == "ghost@localhost"
    assert error_condition(bounce) == "service-unavailable"
    assert stored(h, "ghost@localhost") == []


def test_headline_groupchat_and_error_are_not_stored():
    h = harness()
    alice = sender(h)
    h.add_user(BOB)
    send(alice, mtype="headline", mid="h")
    send(alice, mtype="error", mid="e")
    assert alice.take() == []
    send(alice, mtype="groupchat", mid="gc")
    assert error_condition(only(alice)) == "service-unavailable"
    assert stored(h) == []


def test_no_store_hint_is_honoured_silently():
    h = harness()
    alice = sender(h)
    h.add_user(BOB)
    send(alice, extra=f"<no-store xmlns='{HINTS}'/>")
    assert stored(h) == []
    assert alice.take() == []  # no error: it would reveal that bob is offline


def test_no_permanent_store_hint_still_allows_offline_storage():
    # XEP-0334 §3: such a sender "may be happy for it to be stored temporarily
    # as a normal part of delivery (e.g. if the recipient is offline)".
    h = harness()
    alice = sender(h)
    h.add_user(BOB)
    send(alice, extra=f"<no-permanent-store xmlns='{HINTS}'/>")
    assert alice.take() == []
    assert len(stored(h)) == 1


def test_chat_state_only_message_is_not_stored():
    h = harness()
    alice = sender(h)
    h.add_user(BOB)
    send(alice, body=None, extra=f"<composing xmlns='{CHATSTATES}'/><thread>t1</thread>")
    assert alice.take() == []
    assert stored(h) == []


def test_chat_state_with_a_body_is_stored():
    h = harness()
    alice = sender(h)
    h.add_user(BOB)
    send(alice, extra=f"<active xmlns='{CHATSTATES}'/>")
    assert len(stored(h)) == 1


def test_store_hint_keeps_a_chat_state_only_message():
    h = harness()
    alice = sender(h)
    h.add_user(BOB)
    send(alice, body=None, extra=f"<gone xmlns='{CHATSTATES}'/><store xmlns='{HINTS}'/>")
    assert len(stored(h)) == 1


def test_message_to_gone_full_jid_lands_offline():
    h = harness()
    alice = sender(h)
    h.add_user(BOB)
    send(alice, to="bob@localhost/gone", mid="fb")
    assert alice.take() == []
    (item,) = stored(h)
    assert "to='bob@localhost/gone'" in item.value


def test_message_to_user_with_only_negative_priority_is_stored():
    h = harness()
    alice = sender(h)
    shy = come_online(h, "bob@localhost/shy", priority=-1)
    send(alice)
    assert shy.take() == []
    assert alice.take() == []
    assert len(stored(h)) == 1


# -- quota -------------------------------------------------------------------------

def test_full_storage_answers_service_unavailable_and_stores_nothing():
    h = harness(max_messages="2")
    alice = sender(h)
    h.add_user(BOB)
    send(alice, mid="1")
    send(alice, mid="2")
    assert alice.take() == []
    send(alice, mid="3", body="one too many")
    bounce = only(alice)
    assert bounce["id"] == "3" and bounce["from"] == BOB
    assert error_condition(bounce) == "service-unavailable"
    error = next(bounce.elements(ns.CLIENT, "error"))
    text = next(error.elements(ns.STANZA_ERRORS, "text"))
    assert "full" in str(text)
    assert [("id='1'" in i.value, "id='2'" in i.value) for i in stored(h)] == \
        [(True, False), (False, True)]


def test_quota_is_per_user():
    h = harness(max_messages="1")
    alice = sender(h)
    h.add_user(BOB)
    h.add_user("carol@localhost")
    send(alice, to=BOB)
    send(alice, to="carol@localhost")
    assert alice.take() == []
    assert len(stored(h)) == 1 and len(stored(h, "carol@localhost")) == 1


def test_delivery_frees_the_quota():
    h = harness(max_messages="1")
    alice = sender(h)
    h.add_user(BOB)
    send(alice, mid="1")
    come_online(h, "bob@localhost/pc").logout()
    send(alice, mid="2")
    assert alice.take() == []
    assert len(stored(h)) == 1


def test_quota_holds_when_two_messages_race_for_the_last_place():
    h = harness(max_messages="1")
    slow = gate(h, "count", "append")
    alice = sender(h)
    h.add_user(BOB)
    send(alice, mid="a")
    send(alice, mid="b")
    slow.release()
    (bounce,) = alice.take()
    assert bounce["id"] == "b" and error_condition(bounce) == "service-unavailable"
    (item,) = stored(h)
    assert "id='a'" in item.value


# -- quota in bytes ------------------------------------------------------------------

def big(alice, mid, size=250_000, to=BOB):
    send(alice, to=to, mid=mid, body="x" * size)


def stored_bytes(h, user=BOB):
    return result_of(h.server.storage.archive("offline").size(user))


def test_byte_quota_is_on_by_default_and_bounces_what_would_pass_10_mib():
    """The report: 400 messages of 250 KB each were stored. By default an
    account's offline storage holds 10 MiB: the next message is refused with
    service-unavailable (XEP-0160 §2), as the count quota refuses."""
    h = harness()
    alice = sender(h)
    h.add_user(BOB)
    big(alice, "m0")
    each = stored_bytes(h)
    assert each > 250_000
    fit = (10 << 20) // each
    for n in range(1, fit):
        big(alice, f"m{n}")
    assert alice.take() == []
    big(alice, "over")
    bounce = only(alice)
    assert bounce["id"] == "over" and error_condition(bounce) == "service-unavailable"
    error = next(bounce.elements(ns.CLIENT, "error"))
    assert "full" in str(next(error.elements(ns.STANZA_ERRORS, "text")))
    assert len(stored(h)) == fit and stored_bytes(h) <= 10 << 20


def test_byte_quota_boundary_exactly_full_is_stored_one_byte_more_is_not():
    h = harness()
    offline = h.component("offline")
    alice = sender(h)
    h.add_user(BOB)
    send(alice, mid="a", body="x" * 1000)
    each = stored_bytes(h)  # same length, same size
    offline.config["max_size"] = 2 * each
    send(alice, mid="b", body="y" * 1001)  # one byte too many
    assert error_condition(only(alice)) == "service-unavailable"
    send(alice, mid="c", body="z" * 1000)  # exactly fills it
    assert alice.take() == []
    assert stored_bytes(h) == 2 * each
    send(alice, mid="d", body="")
    assert error_condition(only(alice)) == "service-unavailable"
    assert [("id='a'" in i.value, "id='c'" in i.value) for i in stored(h)] == \
        [(True, False), (False, True)]


def test_one_message_larger_than_the_byte_quota_is_refused_alone():
    h = harness(max_size="5000")
    alice = sender(h)
    h.add_user(BOB)
    send(alice, mid="huge", body="x" * 6000)
    assert error_condition(only(alice)) == "service-unavailable"
    send(alice, mid="small")
    assert alice.take() == []
    assert len(stored(h)) == 1


def test_byte_quota_counts_what_was_stored_before_a_restart():
    """The stored bytes are read from storage (the archive's size query) with
    the message count, not assumed to start at zero."""
    h = harness(max_size="3000")
    h.add_user(BOB)
    h.server.storage.archive("offline").append(BOB, "<message xmlns='jabber:client' "
                                                     "id='old'><body>" + "o" * 2500
                                                     + "</body></message>")
    restart_offline(h)
    alice = sender(h)
    send(alice, mid="new", body="n" * 600)
    assert error_condition(only(alice)) == "service-unavailable"
    send(alice, mid="fits", body="f" * 100)
    assert alice.take() == []
    assert len(stored(h)) == 2


def test_delivery_gives_the_bytes_back():
    h = harness(max_size="3000")
    alice = sender(h)
    h.add_user(BOB)
    send(alice, mid="1", body="x" * 2000)
    send(alice, mid="2", body="x" * 2000)
    assert error_condition(only(alice)) == "service-unavailable"
    come_online(h, "bob@localhost/pc").logout()
    send(alice, mid="3", body="x" * 2000)
    assert alice.take() == []
    assert len(stored(h)) == 1


def test_a_failed_write_gives_its_bytes_back():
    h = harness(max_size="3000")
    alice = sender(h)
    h.add_user(BOB)
    store = h.server.storage.archive("offline")
    original = store.append
    store.append = lambda *a, **k: defer.fail(OSError("disk full"))
    send(alice, mid="1", body="x" * 2000)
    assert [error_condition(e) for e in alice.take()] == ["internal-server-error"]
    store.append = original
    send(alice, mid="2", body="x" * 2000)
    assert alice.take() == []
    assert len(stored(h)) == 1


def test_byte_quota_zero_means_only_the_count_limits():
    h = harness(max_size="0", max_messages="3")
    alice = sender(h)
    h.add_user(BOB)
    for n in range(3):
        big(alice, f"m{n}", size=600_000)
    assert alice.take() == []
    big(alice, "m3", size=10)
    assert error_condition(only(alice)) == "service-unavailable"
    assert stored_bytes(h) > 1_800_000


def test_byte_quota_must_be_a_whole_number_of_bytes():
    from xmppd.config import ConfigError
    for value in ("-1", "10MB"):
        try:
            harness(max_size=value)
        except ConfigError as e:
            assert "max_size" in str(e) and ("must be" in str(e) or "expected" in str(e))
        else:
            raise AssertionError(f"max_size={value} accepted")


# -- delivery holds a bounded amount -------------------------------------------------

class Spy:
    """Records each query the offline component makes: its byte bound and what
    it returned."""

    def __init__(self, h):
        component = h.component("offline")
        self.store, self.batches = component.store["offline"], []
        component.store["offline"] = self

    def __getattr__(self, name):
        return getattr(self.store, name)

    def query(self, *args, **kwargs):
        def seen(items):
            self.batches.append((kwargs.get("max_bytes"), [i.size for i in items]))
            return items
        return self.store.query(*args, **kwargs).addCallback(seen)


def test_delivery_reads_batches_bounded_by_bytes_and_delivers_everything_in_order():
    """The report: 400 messages of 250 KB were read 500 at a time at login
    (480 MiB at once). A batch now ends with the message that reaches
    batch_bytes (as well as at most batch messages), and a batch short of
    both bounds is known to be the last: no query for an empty one."""
    h = harness(max_size="0")
    offline = h.component("offline")
    offline.batch_bytes = 5000
    alice = sender(h)
    h.add_user(BOB)
    for n in range(12):
        send(alice, mid=f"m{n}", body="x" * (1500 if n != 5 else 9000))
    spy = Spy(h)
    bob = come_online(h, "bob@localhost/pc")
    assert [m["id"] for m in bob.take()] == [f"m{n}" for n in range(12)]
    assert stored(h) == []
    assert spy.batches and all(bound == 5000 for bound, _ in spy.batches)
    assert all(sum(sizes[:-1]) < 5000 for _, sizes in spy.batches)
    assert [len(sizes) for _, sizes in spy.batches] == [4, 2, 4, 2]


def test_default_delivery_batches_are_far_below_the_old_500_messages():
    h = harness(max_size="0")
    alice = sender(h)
    h.add_user(BOB)
    for n in range(6):
        big(alice, f"m{n}")
    spy = Spy(h)
    bob = come_online(h, "bob@localhost/pc")
    assert [m["id"] for m in bob.take()] == [f"m{n}" for n in range(6)]
    limit = h.component("offline").batch_bytes
    assert limit <= 1 << 20
    assert all(sum(sizes[:-1]) < limit for _, sizes in spy.batches)
    assert [len(sizes) for _, sizes in spy.batches] == [2, 2, 2, 0]


class SlowReader:
    """A session whose output drains only when the test says so."""

    def __init__(self, session):
        self.session, self.waiting = session, []
        session.drained = self.drained
        self.original_send = session.send
        self.pending = False
        session.send = self.send

    def send(self, stanza):
        self.pending = True  # written, not yet read by the client
        self.original_send(stanza)

    def drained(self):
        if not self.pending:
            return defer.succeed(None)
        d = defer.Deferred()
        self.waiting.append(d)
        return d

    def read(self):
        """The client reads everything written so far."""
        self.pending = False
        waiting, self.waiting = self.waiting, []
        for d in waiting:
            d.callback(None)


def test_delivery_hands_over_the_next_message_only_once_the_output_drained():
    h = harness()
    alice = sender(h)
    h.add_user(BOB)
    for n in range(4):
        send(alice, mid=f"m{n}")
    bob = h.login("bob@localhost/pc", available=False)
    bob.available, bob.priority = True, 0
    reader = SlowReader(bob)
    h.router.fire("presence/initial", bob)
    assert [m["id"] for m in bob.take()] == ["m0"]
    reader.read()
    assert [m["id"] for m in bob.take()] == ["m1"]
    reader.read()
    reader.read()
    reader.read()
    assert [m["id"] for m in bob.take()] == ["m2", "m3"]
    assert stored(h) == []


def test_a_session_gone_while_its_output_drains_leaves_the_rest_stored():
    """The real session fires drained() when its connection is lost; the
    messages not yet handed over stay stored, the ones handed over are gone."""
    h = harness()
    alice = sender(h)
    h.add_user(BOB)
    for n in range(3):
        send(alice, mid=f"m{n}")
    bob = h.login("bob@localhost/pc", available=False)
    bob.available, bob.priority = True, 0
    reader = SlowReader(bob)
    h.router.fire("presence/initial", bob)
    assert [m["id"] for m in bob.take()] == ["m0"]
    bob.logout()
    bob.available = False
    reader.read()
    assert bob.take() == []
    assert ["id='m1'" in i.value for i in stored(h)] == [True, False]
    again = come_online(h, "bob@localhost/pc2")
    assert [m["id"] for m in again.take()] == ["m1", "m2"]
    assert stored(h) == []


# -- delivery ------------------------------------------------------------------------

def test_initial_presence_delivers_stored_messages_in_order_with_delay():
    h = harness()
    alice = sender(h)
    h.add_user(BOB)
    before = int(time.time())
    send(alice, mid="first", body="one")
    send(alice, to="bob@localhost/old", mid="second", mtype=None, body="two")
    after = int(time.time()) + 1
    bob = come_online(h, "bob@localhost/pc")
    first, second = bob.take()

    assert first["id"] == "first" and first["type"] == "chat"
    assert first["from"] == "alice@localhost/phone" and first["to"] == BOB
    assert [str(b) for b in first.elements(ns.CLIENT, "body")] == ["one"]
    assert second["id"] == "second" and second.getAttribute("type") is None
    assert second["to"] == "bob@localhost/old"
    assert [str(b) for b in second.elements(ns.CLIENT, "body")] == ["two"]

    for stanza in (first, second):
        delay = delay_of(stanza)
        assert delay["from"] == "localhost"
        assert str(delay) == "Offline Storage"
        stamp = delay["stamp"]
        assert stamp.endswith("Z")
        when = calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))
        assert before <= when <= after


def test_delay_stamp_is_the_time_the_message_was_stored():
    h = harness()
    h.add_user(BOB)
    h.component("offline").store["offline"].append(
        BOB, "<message from='alice@localhost/phone' to='bob@localhost' id='old'/>",
        with_="alice@localhost", when=1031699305.0)
    restart_offline(h)  # written behind its back: as if stored before a restart
    bob = come_online(h, "bob@localhost/pc")
    assert delay_of(only(bob))["stamp"] == "2002-09-10T23:08:25Z"


def test_attributes_and_payload_survive_storage_exactly():
    h = harness()
    alice = sender(h)
    h.add_user(BOB)
    alice.feed("<message to='bob@localhost' id='x&amp;y&lt;1' type='chat' xml:lang='fr'>"
               "<body>a &lt;b&gt; &amp; c</body><thread>t-42</thread>"
               "<x xmlns='urn:example:extra' k='v'><y/></x></message>")
    bob = come_online(h, "bob@localhost/pc")
    got = only(bob)
    assert got["id"] == "x&y<1"
    assert got.getAttribute((ns.XML, "lang")) == "fr"
    assert [str(b) for b in got.elements(ns.CLIENT, "body")] == ["a <b> & c"]
    assert [str(t) for t in got.elements(ns.CLIENT, "thread")] == ["t-42"]
    (extra,) = list(got.elements("urn:example:extra", "x"))
    assert extra["k"] == "v" and [c.name for c in extra.elements()] == ["y"]


def test_negative_priority_initial_presence_gets_nothing():
    h = harness()
    alice = sender(h)
    h.add_user(BOB)
    send(alice)
    shy = come_online(h, "bob@localhost/shy", priority=-5)
    assert shy.take() == []
    assert len(stored(h)) == 1


def test_delivered_messages_are_deleted_so_the_next_login_gets_nothing():
    h = harness()
    alice = sender(h)
    h.add_user(BOB)
    send(alice)
    first = come_online(h, "bob@localhost/pc")
    assert len(first.take()) == 1
    assert stored(h) == []
    first.logout()
    second = come_online(h, "bob@localhost/pc")
    assert second.take() == []


def test_messages_are_deleted_only_after_they_were_handed_over():
    h = harness()
    alice = sender(h)
    h.add_user(BOB)
    send(alice)
    bob = h.login("bob@localhost/pc", available=False)
    bob.available, bob.priority = True, 0
    seen = []
    bob.send = lambda stanza: seen.append(len(stored(h)))
    h.router.fire("presence/initial", bob)
    assert seen == [1]  # still stored while being sent: a crash now loses nothing
    assert stored(h) == []


def test_same_session_firing_initial_presence_twice_gets_each_message_once():
    h = harness()
    slow = gate(h, "query")
    alice = sender(h)
    h.add_user(BOB)
    send(alice)
    bob = h.login("bob@localhost/pc", available=False)
    bob.available, bob.priority = True, 0
    h.router.fire("presence/initial", bob)
    h.router.fire("presence/initial", bob)
    slow.release()
    h.router.fire("presence/initial", bob)
    slow.release()
    assert len(bob.take()) == 1
    assert stored(h) == []


def test_message_arriving_during_delivery_is_neither_lost_nor_duplicated():
    h = harness()
    slow = gate(h, "query")
    alice = sender(h)
    h.add_user(BOB)
    send(alice, mid="old")
    bob = h.login("bob@localhost/pc", available=False)
    bob.available, bob.priority = True, 0
    h.router.fire("presence/initial", bob)  # reading the store...
    send(alice, mid="new")  # ...bob is available: this one goes straight to him
    assert [m["id"] for m in bob.take()] == ["new"]
    slow.release()
    assert [m["id"] for m in bob.take()] == ["old"]
    assert stored(h) == []
    assert alice.take() == []


def test_message_being_stored_when_delivery_starts_is_part_of_it():
    h = harness()
    # A slow disk that, like the real storage, runs work in submission order.
    slow = gate(h, "append", "query", "delete")
    alice = sender(h)
    h.add_user(BOB)
    send(alice, mid="in-flight")  # the write has not finished...
    assert alice.take() == []
    bob = come_online(h, "bob@localhost/pc")  # ...when bob comes online
    assert bob.take() == []
    slow.release()
    assert [m["id"] for m in bob.take()] == ["in-flight"]
    assert stored(h) == []


def test_session_gone_before_delivery_keeps_the_messages():
    h = harness()
    slow = gate(h, "query")
    alice = sender(h)
    h.add_user(BOB)
    send(alice)
    bob = h.login("bob@localhost/pc", available=False)
    bob.available, bob.priority = True, 0
    h.router.fire("presence/initial", bob)
    bob.logout()
    bob.available = False
    slow.release()
    assert bob.take() == []
    assert len(stored(h)) == 1
    again = come_online(h, "bob@localhost/pc")
    slow.release()
    assert len(again.take()) == 1


def test_large_queue_is_delivered_in_batches_completely():
    h = harness()
    h.component("offline").batch = 3
    alice = sender(h)
    h.add_user(BOB)
    for i in range(8):
        send(alice, mid=f"m{i}")
    bob = come_online(h, "bob@localhost/pc")
    assert [m["id"] for m in bob.take()] == [f"m{i}" for i in range(8)]
    assert stored(h) == []


def test_stored_message_is_not_acknowledged_before_the_write_fires():
    h = harness(max_messages="1")
    slow = gate(h, "append")
    alice = sender(h)
    h.add_user(BOB)
    send(alice, mid="1")
    assert stored(h) == []  # not yet durable...
    send(alice, mid="2")  # ...and the quota already counts it: refused at once
    assert [error_condition(e) for e in alice.take()] == ["service-unavailable"]
    assert stored(h) == []
    slow.release()
    assert len(stored(h)) == 1
    assert alice.take() == []


def test_a_failed_write_gives_its_place_in_the_quota_back():
    h = harness(max_messages="1")
    alice = sender(h)
    h.add_user(BOB)
    store = h.server.storage.archive("offline")
    original = store.append
    store.append = lambda *a, **k: defer.fail(OSError("disk full"))
    send(alice, mid="1")
    assert [error_condition(e) for e in alice.take()] == ["internal-server-error"]
    store.append = original
    send(alice, mid="2")  # the quota is free again
    assert alice.take() == []
    assert len(stored(h)) == 1


def test_offline_feature_is_announced():
    h = Harness(["disco", "presence", "messaging", "offline"])
    alice = sender(h)
    alice.feed(f"<iq type='get' id='d1' to='localhost'><query xmlns='{ns.DISCO_INFO}'/></iq>")
    reply = only(alice)
    query = next(reply.elements(ns.DISCO_INFO, "query"))
    assert "msgoffline" in [f["var"] for f in query.elements(ns.DISCO_INFO, "feature")]


def test_initial_presence_sent_by_the_client_brings_the_stored_messages():
    # End to end through the presence component, which fires presence/initial.
    h = harness()
    alice = sender(h)
    h.add_user(BOB)
    send(alice, mid="waiting")
    bob = h.login("bob@localhost/pc", available=False)
    bob.feed("<presence><priority>1</priority></presence>")
    messages = [s for s in bob.take() if s.name == "message"]
    assert [m["id"] for m in messages] == ["waiting"]
    assert delay_of(messages[0])["from"] == "localhost"
    assert stored(h) == []


def test_messages_from_a_sender_blocked_since_are_dropped_not_delivered():
    """XEP-0191 §3.3: once blocked, nothing from that JID reaches the user, not
    even what waited in offline storage from before the block."""
    h = Harness(["presence", "messaging", "offline", "blocking"])
    alice = sender(h)
    h.add_user(BOB)
    send(alice, mid="before")
    assert len(stored(h)) == 1
    bob = h.login(BOB + "/pc", available=False)
    bob.feed("<iq type='set' id='b'><block xmlns='urn:xmpp:blocking'>"
             "<item jid='alice@localhost'/></block></iq>")
    bob.take()
    bob.feed("<presence/>")
    assert [s for s in bob.take() if s.name == "message"] == []
    assert stored(h) == []


def test_a_login_with_nothing_stored_asks_the_storage_nothing():
    h = harness()
    h.add_user(BOB)
    store = h.server.storage.archive("offline")
    queries = []
    original = store.query
    store.query = lambda *a, **k: (queries.append(a), original(*a, **k))[1]
    bob = come_online(h, "bob@localhost/pc")
    assert bob.take() == [] and queries == []
    bob.logout()
    alice = sender(h)
    send(alice, mid="1")
    again = come_online(h, "bob@localhost/pc2")
    assert [m["id"] for m in again.take()] == ["1"] and len(queries) == 1
    again.logout()
    come_online(h, "bob@localhost/pc3")  # all delivered: no query again
    assert len(queries) == 1


def test_messages_stored_before_a_restart_are_found_at_login():
    h = harness()
    h.add_user(BOB)
    h.server.storage.archive("offline").append(BOB, "<message xmlns='jabber:client' "
                                                     "from='alice@localhost/pc' to='bob@localhost' "
                                                     "id='old'><body>hi</body></message>")
    restart_offline(h)  # reads who has messages waiting again
    bob = come_online(h, "bob@localhost/pc")
    assert [m["id"] for m in bob.take()] == ["old"]


def test_messages_keep_their_order_while_the_first_one_reads_storage():
    """The first message to a user reads the quota from storage; messages that
    arrive meanwhile, and while its append is in flight, are stored after it."""
    h = harness()
    alice = sender(h)
    h.add_user(BOB)
    slow = gate(h, "count", "append")
    send(alice, mid="m0")
    send(alice, mid="m1")
    slow.release()  # m0's count answered, its append submitted and held
    send(alice, mid="m2")
    send(alice, mid="m3")
    slow.release()
    slow.release()
    bob = come_online(h, "bob@localhost/pc")
    assert [m["id"] for m in bob.take()] == ["m0", "m1", "m2", "m3"]


def test_a_login_while_a_message_is_being_stored_still_gets_it():
    h = harness()
    alice = sender(h)
    h.add_user(BOB)
    slow = gate(h, "count")
    send(alice, mid="late")  # waits for the quota read
    bob = come_online(h, "bob@localhost/pc")
    slow.release()
    assert [m["id"] for m in bob.take()] == ["late"]


def test_a_deleted_account_is_forgotten():
    h = harness()
    alice = sender(h)
    h.add_user(BOB)
    send(alice, mid="1")
    assert len(stored(h)) == 1
    result_of(h.server.accounts.delete(BOB))
    send(alice, mid="2")
    assert [error_condition(e) for e in alice.take()] == ["service-unavailable"]
    assert stored(h) == []


def test_messages_to_made_up_users_leave_nothing_behind():
    h = harness()
    alice = sender(h)
    for i in range(20):
        send(alice, to=f"nobody{i}@localhost", mid=str(i))
    assert [error_condition(e) for e in alice.take()] == ["service-unavailable"] * 20
    offline = h.component("offline")
    assert offline._waiting == {} and offline._queues == {}


def test_thousands_of_messages_waiting_for_the_first_read_are_all_stored_in_order():
    """A burst arriving while the user's record is read waits in a list, not
    behind a lock per message (thousands of those recursed too deep and
    left the user's queue stuck for good)."""
    h = harness(max_messages="5000")
    alice = sender(h)
    h.add_user(BOB)
    slow = gate(h, "count")
    for i in range(3000):
        send(alice, mid=f"b{i}")
    slow.release()
    assert alice.take() == []
    bob = come_online(h, "bob@localhost/pc")
    assert [m["id"] for m in bob.take()] == [f"b{i}" for i in range(3000)]
    assert stored(h) == []
