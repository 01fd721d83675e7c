"""XEP-0198 stream management on a :class:`ClientSession` over the recording
fake framing, on the in-memory server and an injected clock: acks both ways,
hibernation when the connection drops, resumption with every unacknowledged
stanza re-sent once, and where unacknowledged stanzas go when the session
does not come back."""

from __future__ import annotations

from twisted.internet.task import Clock

from xmppd import ns
from xmppd.testing import Harness
from tests.streams.test_negotiation import FakeFraming, plain

SM = ns.SM3


class LosableFraming(FakeFraming):
    """A fake framing whose connection can drop (no close, no stream error)."""

    def lose(self) -> None:
        self.session.closing(lost=True)
        self.closed = True
        self.session.ended()


def harness(**c2s) -> tuple[Harness, Clock]:
    clock = Clock()
    h = Harness(["ping", "roster", "presence", "messaging", "offline", "carbons"], clock=clock,
                options={"c2s": {k: str(v) for k, v in c2s.items()}})
    for user in ("alice", "bob"):
        h.add_user(f"{user}@localhost", "secret")
    return h, clock


def login(h: Harness, user: str = "alice", resource: str = "r") -> LosableFraming:
    framing = LosableFraming(h)
    framing.session.connected()
    framing.session.stream_opened("localhost", "1.0")
    framing.say(plain(user))
    framing.session.stream_opened("localhost", "1.0")
    framing.take()
    return framing


def bind(framing: LosableFraming, resource: str = "r") -> None:
    framing.say(f"<iq type='set' id='bind'><bind xmlns='{ns.BIND}'><resource>{resource}"
                "</resource></bind></iq>")
    assert framing.session.jid is not None, framing.sent
    framing.take()


def enabled(h: Harness, clock: Clock, user: str = "alice", resume: bool = True,
            **attrs) -> tuple[LosableFraming, str | None]:
    framing = login(h, user)
    bind(framing)
    extra = "".join(f" {k}='{v}'" for k, v in attrs.items())
    framing.say(f"<enable xmlns='{SM}'" + (" resume='true'" if resume else "") + extra + "/>")
    [answer] = framing.take()
    assert answer.name == "enabled", answer.toXml()
    return framing, answer.getAttribute("id")


def chat(h: Harness, clock: Clock, sender: LosableFraming, to: str, body: str) -> None:
    sender.say(f"<message to='{to}' type='chat' id='{body}'><body>{body}</body></message>")
    clock.advance(0)
    clock.advance(0)


def bodies(elements) -> list[str]:
    return [str(e.body) for e in elements if e.name == "message" and e.body is not None]


def test_stream_management_is_offered_once_authenticated_in_both_namespaces():
    h, _ = harness()
    framing = LosableFraming(h)
    framing.session.stream_opened("localhost", "1.0")
    [before] = framing.take()
    assert not [c for c in before.elements() if c.name == "sm"]
    framing.say(plain())
    framing.session.stream_opened("localhost", "1.0")
    after = framing.take()[-1]
    offered = {(c.uri, c.name) for c in after.elements() if c.name == "sm"}
    assert offered == {(ns.SM2, "sm"), (ns.SM3, "sm")}


def test_enable_before_bind_fails_with_unexpected_request():
    h, _ = harness()
    framing = login(h)
    framing.say(f"<enable xmlns='{SM}'/>")
    [failed] = framing.take()
    assert failed.name == "failed" and failed.firstChildElement().name == "unexpected-request"
    assert framing.session.sm is None and not framing.closed


def test_enable_twice_fails_the_second_time():
    h, clock = harness()
    framing, _ = enabled(h, clock)
    framing.say(f"<enable xmlns='{SM}'/>")
    [failed] = framing.take()
    assert failed.name == "failed" and failed.firstChildElement().name == "unexpected-request"


def test_enabled_with_resumption_has_an_id_and_the_servers_max():
    h, clock = harness(resume_timeout=300)
    framing = login(h)
    bind(framing)
    framing.say(f"<enable xmlns='{SM}' resume='true'/>")
    [answer] = framing.take()
    assert answer.getAttribute("id") and answer.getAttribute("resume") == "true"
    assert answer.getAttribute("max") == "300"


def test_a_shorter_max_asked_by_the_client_is_honoured():
    h, clock = harness(resume_timeout=300)
    framing = login(h)
    bind(framing)
    framing.say(f"<enable xmlns='{SM}' resume='true' max='60'/>")
    [answer] = framing.take()
    assert answer.getAttribute("max") == "60"


def test_enable_without_resume_has_no_id():
    h, clock = harness()
    framing, sm_id = enabled(h, clock, resume=False)
    assert sm_id is None


def test_the_server_counts_handled_stanzas_and_answers_r_with_h():
    h, clock = harness()
    framing, _ = enabled(h, clock)
    for i in range(3):
        framing.say(f"<iq type='get' id='p{i}' to='localhost'><ping xmlns='{ns.PING}'/></iq>")
    clock.advance(0)
    clock.advance(0)
    framing.take()
    framing.say(f"<r xmlns='{SM}'/>")
    answers = [e for e in framing.take() if e.name == "a"]
    assert answers and answers[0].getAttribute("h") == "3"


def test_the_server_requests_an_ack_after_a_burst_and_only_one_until_answered():
    h, clock = harness()
    alice, _ = enabled(h, clock)
    bob = login(h, "bob")
    bind(bob)
    for i in range(3):
        chat(h, clock, bob, "alice@localhost/r", f"m{i}")
    sent = alice.take()
    assert bodies(sent) == ["m0", "m1", "m2"]
    assert [e.name for e in sent].count("r") == 1
    alice.say(f"<a xmlns='{SM}' h='3'/>")
    assert alice.session.sm.queue == collections_empty()


def collections_empty():
    import collections
    return collections.deque()


def test_an_ack_for_more_than_was_sent_ends_the_stream_with_undefined_condition():
    h, clock = harness()
    alice, _ = enabled(h, clock)
    alice.say(f"<a xmlns='{SM}' h='5'/>")
    assert alice.errors == ["undefined-condition"]


def test_an_ack_without_a_number_is_invalid_xml():
    h, clock = harness()
    alice, _ = enabled(h, clock)
    alice.say(f"<a xmlns='{SM}' h='x'/>")
    assert alice.errors == ["invalid-xml"]


def test_r_before_enable_ends_the_stream_as_prosody_does():
    h, clock = harness()
    framing = login(h)
    bind(framing)
    framing.say(f"<r xmlns='{SM}'/>")
    assert framing.errors == ["unsupported-stanza-type"]


def test_an_unknown_stream_level_namespace_still_closes_the_stream():
    h, clock = harness()
    framing = login(h)
    bind(framing)
    framing.say("<foo xmlns='urn:example:nothing'/>")
    assert framing.errors == ["unsupported-stanza-type"]


def test_h_wraps_modulo_two_to_the_32():
    h, clock = harness()
    alice, _ = enabled(h, clock)
    acks = alice.session.sm
    acks.sent = (1 << 32) - 1  # as if that many had been sent and acknowledged
    bob = login(h, "bob")
    bind(bob)
    chat(h, clock, bob, "alice@localhost/r", "w1")
    chat(h, clock, bob, "alice@localhost/r", "w2")
    assert acks.sent == 1 and len(acks.queue) == 2
    alice.say(f"<a xmlns='{SM}' h='0'/>")  # 2³² - 1 + 1, wrapped
    assert len(acks.queue) == 1 and not alice.closed
    alice.say(f"<a xmlns='{SM}' h='1'/>")
    assert len(acks.queue) == 0


def test_a_dropped_connection_hibernates_and_a_resume_resends_the_unacked_once():
    h, clock = harness()
    alice, sm_id = enabled(h, clock)
    bob = login(h, "bob")
    bind(bob)
    chat(h, clock, bob, "alice@localhost/r", "seen")
    alice.say(f"<a xmlns='{SM}' h='1'/>")
    chat(h, clock, bob, "alice@localhost/r", "lost-in-flight")
    alice.take()
    session = alice.session
    alice.lose()
    assert h.server.router.resources("alice@localhost").get("r") is session  # still bound
    chat(h, clock, bob, "alice@localhost/r", "while-away")
    clock.advance(30)
    again = login(h)
    again.say(f"<resume xmlns='{SM}' previd='{sm_id}' h='1'/>")
    sent = again.take()
    assert sent[0].name == "resumed" and sent[0].getAttribute("previd") == sm_id
    assert bodies(sent) == ["lost-in-flight", "while-away"]
    for message in [e for e in sent if e.name == "message"]:
        [delay] = [c for c in message.elements() if c.name == "delay"]
        assert delay.uri == ns.DELAY and delay.getAttribute("from") == "alice@localhost"
    assert again.session is session and session.framing is again
    # the resumed session carries on: new stanzas come over the new connection
    chat(h, clock, bob, "alice@localhost/r", "after")
    assert bodies(again.take()) == ["after"]
    # and the client's own stanzas are the old session's
    again.say("<message to='bob@localhost/r' type='chat'><body>back</body></message>")
    clock.advance(0)
    assert bodies(bob.take())[-1] == "back"


def test_the_resumed_h_tells_the_client_what_the_server_handled():
    h, clock = harness()
    alice, sm_id = enabled(h, clock)
    alice.say(f"<iq type='get' id='p1' to='localhost'><ping xmlns='{ns.PING}'/></iq>")
    clock.advance(0)
    alice.lose()
    again = login(h)
    again.say(f"<resume xmlns='{SM}' previd='{sm_id}' h='1'/>")  # it got the pong
    resumed = again.take()[0]
    assert resumed.getAttribute("h") == "1"
    assert len(again.session.sm.queue) == 0


def test_a_resume_with_an_h_below_what_was_acknowledged_fails():
    h, clock = harness()
    alice, sm_id = enabled(h, clock)
    bob = login(h, "bob")
    bind(bob)
    chat(h, clock, bob, "alice@localhost/r", "one")
    alice.say(f"<a xmlns='{SM}' h='1'/>")
    alice.lose()
    again = login(h)
    again.say(f"<resume xmlns='{SM}' previd='{sm_id}' h='0'/>")
    [failed] = again.take()
    assert failed.name == "failed"


def test_a_resume_with_an_h_above_what_was_sent_fails_and_ends_the_old_session():
    h, clock = harness()
    alice, sm_id = enabled(h, clock)
    alice.lose()
    again = login(h)
    again.say(f"<resume xmlns='{SM}' previd='{sm_id}' h='7'/>")
    [failed] = again.take()
    assert failed.name == "failed"
    assert "r" not in h.server.router.resources("alice@localhost")


def test_resuming_someone_elses_session_is_item_not_found():
    h, clock = harness()
    alice, sm_id = enabled(h, clock)
    session = alice.session
    alice.lose()
    mallory = login(h, "bob")
    mallory.say(f"<resume xmlns='{SM}' previd='{sm_id}' h='0'/>")
    [failed] = mallory.take()
    assert failed.name == "failed" and failed.firstChildElement().name == "item-not-found"
    assert h.server.router.resources("alice@localhost")["r"] is session


def test_an_unknown_previd_is_item_not_found():
    h, clock = harness()
    framing = login(h)
    framing.say(f"<resume xmlns='{SM}' previd='nope' h='0'/>")
    [failed] = framing.take()
    assert failed.firstChildElement().name == "item-not-found" and not failed.getAttribute("h")


def test_resume_after_bind_is_unexpected_request():
    h, clock = harness()
    alice, sm_id = enabled(h, clock)
    alice.lose()
    other = login(h)
    bind(other, "elsewhere")
    other.say(f"<resume xmlns='{SM}' previd='{sm_id}' h='0'/>")
    [failed] = other.take()
    assert failed.firstChildElement().name == "unexpected-request"


def test_a_session_not_resumed_in_time_ends_and_its_unacked_messages_go_offline():
    h, clock = harness(resume_timeout=60)
    alice, sm_id = enabled(h, clock)
    bob = login(h, "bob")
    bind(bob)
    chat(h, clock, bob, "alice@localhost/r", "one")
    chat(h, clock, bob, "alice@localhost/r", "two")
    alice.lose()
    chat(h, clock, bob, "alice@localhost/r", "three")
    clock.advance(61)
    clock.advance(0)
    assert "alice@localhost" not in h.server.router.sessions
    # a late resumption learns what the server had handled
    late = login(h)
    late.say(f"<resume xmlns='{SM}' previd='{sm_id}' h='0'/>")
    [failed] = late.take()
    assert failed.firstChildElement().name == "item-not-found" and failed.getAttribute("h") == "0"
    # the next login gets all three from offline storage, once each
    bind(late)
    late.say("<presence/>")
    clock.advance(0)
    clock.advance(0)
    clock.advance(0)
    assert sorted(bodies(late.take())) == ["one", "three", "two"]


def test_a_clean_close_is_not_hibernation_and_sends_a_last_ack():
    h, clock = harness()
    alice, sm_id = enabled(h, clock)
    alice.say(f"<iq type='get' id='p1' to='localhost'><ping xmlns='{ns.PING}'/></iq>")
    clock.advance(0)
    alice.take()
    alice.session.stream_closed()
    assert [e.getAttribute("h") for e in alice.take() if e.name == "a"] == ["1"]
    assert "alice@localhost" not in h.server.router.sessions
    again = login(h)
    again.say(f"<resume xmlns='{SM}' previd='{sm_id}' h='0'/>")
    assert again.take()[0].name == "failed"


def test_a_full_queue_ends_the_session_and_loses_nothing():
    h, clock = harness(max_unacked=3)
    alice, _ = enabled(h, clock)
    bob = login(h, "bob")
    bind(bob)
    for i in range(5):
        chat(h, clock, bob, "alice@localhost/r", f"q{i}")
    assert alice.errors == ["resource-constraint"]
    clock.advance(0)
    fresh = login(h)
    bind(fresh)
    fresh.say("<presence/>")
    clock.advance(0)
    clock.advance(0)
    clock.advance(0)
    assert sorted(bodies(fresh.take())) == [f"q{i}" for i in range(5)]


def test_a_message_to_a_hibernating_session_joins_its_queue_not_offline():
    h, clock = harness()
    alice, _ = enabled(h, clock)
    alice.say("<presence/>")
    clock.advance(0)
    session = alice.session
    session.sm.queue.clear()  # (whatever the presence brought)
    alice.lose()
    bob = login(h, "bob")
    bind(bob)
    chat(h, clock, bob, "alice@localhost", "to-bare")
    assert bodies(bob.take()) == []  # no error back
    assert [k for _, k, _ in session.sm.queue] == ["message"]


def test_hibernation_and_resumption_are_events_components_can_hook():
    h, clock = harness()
    seen = []
    h.server.router.hook("resource-hibernated", lambda s: seen.append(("h", s.resource)))
    h.server.router.hook("resource-resumed", lambda s: seen.append(("r", s.resource)))
    alice, sm_id = enabled(h, clock)
    alice.lose()
    again = login(h)
    again.say(f"<resume xmlns='{SM}' previd='{sm_id}' h='0'/>")
    assert seen == [("h", "r"), ("r", "r")]


def test_resuming_a_session_whose_old_connection_is_still_up_closes_that_connection():
    h, clock = harness()
    alice, sm_id = enabled(h, clock)
    again = login(h)
    again.say(f"<resume xmlns='{SM}' previd='{sm_id}' h='0'/>")
    assert again.take()[0].name == "resumed"
    assert alice.closed and again.session.framing is again
    assert h.server.router.resources("alice@localhost")["r"] is again.session


def test_a_new_login_with_the_same_resource_replaces_a_hibernating_session():
    h, clock = harness()
    alice, sm_id = enabled(h, clock)
    bob = login(h, "bob")
    bind(bob)
    chat(h, clock, bob, "alice@localhost/r", "unacked")
    old = alice.session
    alice.lose()
    fresh = login(h)
    fresh.say(f"<iq type='set' id='bind'><bind xmlns='{ns.BIND}'><resource>r"
              "</resource></bind></iq>")  # same resource: the hibernating one is replaced
    clock.advance(0)
    assert h.server.router.resources("alice@localhost")["r"] is fresh.session
    assert old.sm is None  # ended for good: no resumption any more
    # what it held was routed again: to the same full JID, the new session
    assert bodies(fresh.take()) == ["unacked"]
    retry = login(h)
    retry.say(f"<resume xmlns='{SM}' previd='{sm_id}' h='0'/>")
    assert retry.take()[0].name == "failed"


def test_a_resume_that_overflows_the_new_connection_loses_nothing():
    """The re-sent queue is written stanza by stanza; a connection that
    cannot take it all ends the session, and what it did not write still
    goes to offline storage (all of it, not only what was written)."""
    h, clock = harness()
    alice, sm_id = enabled(h, clock)
    bob = login(h, "bob")
    bind(bob)
    alice.lose()
    for i in range(6):
        chat(h, clock, bob, "alice@localhost/r", f"held-{i}")

    class Small(LosableFraming):
        def send(self, element) -> None:
            if not self.closed and len(self.sent) >= 3:
                self.stream_error("policy-violation")
                return
            super().send(element)

    again = Small(h)
    again.session.connected()
    again.session.stream_opened("localhost", "1.0")
    again.say(plain())
    again.session.stream_opened("localhost", "1.0")
    again.take()
    again.say(f"<resume xmlns='{SM}' previd='{sm_id}' h='0'/>")
    assert again.errors == ["policy-violation"]
    fresh = login(h)
    bind(fresh, "other")
    fresh.say("<presence/>")
    clock.advance(0)
    got = bodies(fresh.take())
    assert sorted(got) == [f"held-{i}" for i in range(6)]


def test_a_session_ended_by_a_full_queue_cannot_be_resumed_and_is_not_kept():
    h, clock = harness(max_unacked=2)
    alice, sm_id = enabled(h, clock)
    bob = login(h, "bob")
    bind(bob)
    for i in range(3):
        chat(h, clock, bob, "alice@localhost/r", f"q{i}")
    assert alice.errors == ["resource-constraint"]
    assert sm_id not in h.server.sm.resumable
    again = login(h)
    again.say(f"<resume xmlns='{SM}' previd='{sm_id}' h='0'/>")
    assert again.take()[0].firstChildElement().name == "item-not-found"


def test_numbers_that_are_not_ascii_digits_are_refused_not_crashed_on():
    h, clock = harness()
    framing = login(h)
    bind(framing)
    framing.say(f"<enable xmlns='{SM}' resume='true' max='\u00b2'/>")
    [answer] = framing.take()
    assert answer.name == "enabled" and answer.getAttribute("max") == "600"
    framing.say(f"<a xmlns='{SM}' h='\u00b2'/>")
    assert framing.errors == ["invalid-xml"]


def test_resuming_over_a_live_connection_does_not_announce_a_hibernation():
    h, clock = harness()
    seen = []
    h.server.router.hook("resource-hibernated", lambda s: seen.append("hibernated"))
    h.server.router.hook("resource-resumed", lambda s: seen.append("resumed"))
    alice, sm_id = enabled(h, clock)
    again = login(h)
    again.say(f"<resume xmlns='{SM}' previd='{sm_id}' h='0'/>")
    assert seen == ["resumed"]


def test_stanzas_waiting_behind_storage_count_as_handled_on_resumption():
    """A stanza the old connection delivered but that waits behind an
    earlier one's storage work will be handled: the client must not send
    it again."""
    from twisted.internet import defer
    h, clock = harness()
    slow = defer.Deferred()
    h.server.router.hook("message/full", lambda event: slow if event.stanza.getAttribute(
        "id") == "slow" else None, priority=100)
    alice, sm_id = enabled(h, clock)
    session = alice.session
    alice.say("<message to='bob@localhost/r' id='slow' type='chat'><body>1</body></message>")
    alice.say("<message to='bob@localhost/r' id='next' type='chat'><body>2</body></message>")
    alice.lose()
    again = login(h)
    again.say(f"<resume xmlns='{SM}' previd='{sm_id}' h='0'/>")
    [resumed] = [e for e in again.take() if e.name == "resumed"]
    assert resumed.getAttribute("h") == "2"
    slow.callback(True)
    clock.advance(0)
    assert session.sm.handled == 2
