"""XEP-0191: the blocklist, its pushes and its enforcement, through the harness."""

from twisted.internet import defer, task

from xmppd import ns
from xmppd.subscription import State
from xmppd.testing import Harness, error_condition, only, parse, result_of

COMPONENTS = ["presence", "messaging", "roster", "blocking", "disco"]


def harness(**options):
    h = Harness(COMPONENTS, options={"component:blocking": options} if options else None)
    h.remote_sent = []
    # Anything for another domain is captured instead of going to s2s.
    h.router.remote = lambda stanza, to: h.remote_sent.append(stanza) or True
    return h


def items_xml(jids):
    return "".join(f"<item jid='{j}'/>" for j in jids)


def block(session, *jids, iq_id="b1"):
    session.feed(f"<iq type='set' id='{iq_id}'>"
                 f"<block xmlns='{ns.BLOCKING}'>{items_xml(jids)}</block></iq>")


def unblock(session, *jids, iq_id="u1"):
    session.feed(f"<iq type='set' id='{iq_id}'>"
                 f"<unblock xmlns='{ns.BLOCKING}'>{items_xml(jids)}</unblock></iq>")


def request_blocklist(session, iq_id="g1"):
    """Ask for the list (which also subscribes the resource to pushes); its items."""
    session.feed(f"<iq type='get' id='{iq_id}'><blocklist xmlns='{ns.BLOCKING}'/></iq>")
    reply = only(session)
    assert reply["type"] == "result" and reply["id"] == iq_id
    (blocklist,) = list(reply.elements(ns.BLOCKING, "blocklist"))
    return [item["jid"] for item in blocklist.elements(ns.BLOCKING, "item")]


def stored(h, user):
    return result_of(h.component("blocking").store["blocklist"].get(user))


def assert_result(stanza, iq_id):
    assert stanza.name == "iq" and stanza["type"] == "result" and stanza["id"] == iq_id, \
        stanza.toXml()


def push_items(stanza, command):
    """The JIDs of a block/unblock push; fails if ``stanza`` is not one."""
    assert stanza.name == "iq" and stanza["type"] == "set", stanza.toXml()
    (element,) = list(stanza.elements())
    assert (element.uri, element.name) == (ns.BLOCKING, command), stanza.toXml()
    return [item["jid"] for item in element.elements(ns.BLOCKING, "item")]


def assert_blocked_error(stanza, iq_id=None):
    assert error_condition(stanza) == "not-acceptable"
    error = next(stanza.elements(ns.CLIENT, "error"))
    assert error["type"] == "cancel"
    assert [c.name for c in error.elements() if c.uri == ns.BLOCKING_ERRORS] == ["blocked"]
    if iq_id is not None:
        assert stanza["id"] == iq_id


def subscribe_from(h, user, contact):
    """Record in ``user``'s roster that ``contact`` may see their presence."""
    rosters = h.component("roster")
    roster = result_of(rosters.load(user))
    result_of(rosters.apply(roster, contact, State("from"), push=False))


def presences(session):
    return [s for s in session.take() if s.name == "presence"]


# -- §3.1, §3.2: discovery and the list ---------------------------------------------------

def test_server_announces_the_blocking_feature():
    h = harness()
    alice = h.login("alice@localhost/phone")
    alice.feed("<iq type='get' id='d1' to='localhost'>"
               "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    query = next(only(alice).elements(ns.DISCO_INFO, "query"))
    features = [f["var"] for f in query.elements(ns.DISCO_INFO, "feature")]
    assert ns.BLOCKING in features


def test_blocklist_is_empty_before_anything_is_blocked():
    h = harness()
    alice = h.login("alice@localhost/phone")
    assert request_blocklist(alice) == []


def test_blocked_jid_is_listed_in_its_prepared_form():
    h = harness()
    alice = h.login("alice@localhost/phone")
    block(alice, "Romeo@Montague.NET", "iago@shakespeare.lit/Phone")
    assert_result(alice.take()[0], "b1")
    assert request_blocklist(alice) == ["iago@shakespeare.lit/Phone", "romeo@montague.net"]


def test_block_is_written_to_the_store_before_the_result():
    h = harness()
    alice = h.login("alice@localhost/phone")
    store = h.component("blocking").store["blocklist"]
    pending = defer.Deferred()
    real_set = store.set
    store.set = lambda user, value: pending.addCallback(lambda _: real_set(user, value))
    block(alice, "romeo@montague.net")
    assert alice.take() == []  # not durable yet: no answer
    pending.callback(None)
    assert_result(only(alice), "b1")
    assert stored(h, "alice@localhost") == ["romeo@montague.net"]


# -- pushes (§3.3, §3.4, §3.5) --------------------------------------------------------------

def test_block_is_pushed_only_to_resources_that_requested_the_blocklist():
    h = harness()
    phone = h.login("alice@localhost/phone")
    desk = h.login("alice@localhost/desk")
    tablet = h.login("alice@localhost/tablet")
    request_blocklist(phone)
    request_blocklist(tablet)
    desk.take()
    block(desk, "romeo@montague.net")
    assert_result(only(desk), "b1")  # the requester did not ask: no push for it
    for session in (phone, tablet):
        push = only(session)
        assert push_items(push, "block") == ["romeo@montague.net"]
        assert push["to"] == session.jid.full()
        assert push.getAttribute("from") in (None, "alice@localhost")


def test_requester_that_asked_for_the_list_gets_the_result_then_a_push():
    h = harness()
    alice = h.login("alice@localhost/phone")
    request_blocklist(alice)
    block(alice, "romeo@montague.net")
    result, push = alice.take()
    assert_result(result, "b1")
    assert push_items(push, "block") == ["romeo@montague.net"]


def test_no_push_after_the_interested_resource_reconnects_without_asking():
    h = harness()
    alice = h.login("alice@localhost/phone")
    request_blocklist(alice)
    alice.logout()
    again = h.login("alice@localhost/phone")
    desk = h.login("alice@localhost/desk")
    block(desk, "romeo@montague.net")
    assert [s for s in again.take() if s.name == "iq"] == []
    assert_result(only(desk), "b1")


def test_no_push_to_a_session_that_replaced_the_interested_one():
    h = harness()
    old = h.login("alice@localhost/phone")
    request_blocklist(old)
    new = h.login("alice@localhost/phone")  # same resource: the old one gets conflict
    assert old.stream_errors == ["conflict"]
    block(new, "romeo@montague.net")
    assert [s.name for s in new.take() if s.name == "iq"] == ["iq"]  # the result only
    assert [s for s in old.take() if s.name == "iq"] == []


def test_unblock_removes_only_the_named_jids_and_pushes_them():
    h = harness()
    alice = h.login("alice@localhost/phone")
    block(alice, "romeo@montague.net", "iago@shakespeare.lit")
    alice.take()
    request_blocklist(alice)
    unblock(alice, "romeo@montague.net")
    result, push = alice.take()
    assert_result(result, "u1")
    assert push_items(push, "unblock") == ["romeo@montague.net"]
    assert request_blocklist(alice) == ["iago@shakespeare.lit"]
    assert stored(h, "alice@localhost") == ["iago@shakespeare.lit"]


def test_empty_unblock_clears_the_list_and_pushes_an_empty_unblock():
    h = harness()
    alice = h.login("alice@localhost/phone")
    block(alice, "romeo@montague.net", "iago@shakespeare.lit")
    alice.take()
    request_blocklist(alice)
    unblock(alice)
    result, push = alice.take()
    assert_result(result, "u1")
    assert push_items(push, "unblock") == []
    assert request_blocklist(alice) == []
    assert stored(h, "alice@localhost") is None


def test_unblocked_contact_gets_through_again():
    h = harness()
    alice = h.login("alice@localhost/phone")
    bob = h.login("bob@localhost/desk")
    block(alice, "bob@localhost")
    unblock(alice, "bob@localhost")
    alice.take()
    bob.feed("<message to='alice@localhost' id='m1' type='chat'><body>hi</body></message>")
    assert [str(b) for b in only(alice).elements(ns.CLIENT, "body")] == ["hi"]
    assert bob.take() == []


# -- validation -------------------------------------------------------------------------------

def test_empty_block_is_a_bad_request_and_changes_nothing():
    h = harness()
    alice = h.login("alice@localhost/phone")
    block(alice, "romeo@montague.net")
    alice.take()
    request_blocklist(alice)
    block(alice, iq_id="b2")
    reply = only(alice)
    assert reply["id"] == "b2" and error_condition(reply) == "bad-request"
    assert request_blocklist(alice) == ["romeo@montague.net"]


def test_one_malformed_jid_rejects_the_whole_command_and_stores_nothing():
    h = harness()
    alice = h.login("alice@localhost/phone")
    request_blocklist(alice)
    for bad in ("@montague.net", "romeo@", "romeo@montague.net/", "", "a b@c d"):
        block(alice, "iago@shakespeare.lit", bad)
        reply = only(alice)  # no push either
        assert error_condition(reply) == "jid-malformed", bad
    assert stored(h, "alice@localhost") is None
    assert request_blocklist(alice) == []


def test_item_without_jid_attribute_is_malformed():
    h = harness()
    alice = h.login("alice@localhost/phone")
    alice.feed(f"<iq type='set' id='b1'><block xmlns='{ns.BLOCKING}'><item/></block></iq>")
    assert error_condition(only(alice)) == "jid-malformed"


def test_malformed_unblock_leaves_the_list_alone():
    h = harness()
    alice = h.login("alice@localhost/phone")
    block(alice, "romeo@montague.net")
    alice.take()
    unblock(alice, "romeo@montague.net", "@bad")
    assert error_condition(only(alice)) == "jid-malformed"
    assert stored(h, "alice@localhost") == ["romeo@montague.net"]


def test_blocklist_beyond_max_items_is_refused_whole():
    h = harness(max_items="2")
    alice = h.login("alice@localhost/phone")
    block(alice, "a@example.org", "b@example.org")
    alice.take()
    block(alice, "b@example.org", "c@example.org", iq_id="b2")
    assert error_condition(only(alice)) == "not-allowed"
    assert stored(h, "alice@localhost") == ["a@example.org", "b@example.org"]


def test_another_users_blocklist_cannot_be_read():
    h = harness()
    alice = h.login("alice@localhost/phone")
    block(alice, "romeo@montague.net")
    mallory = h.login("mallory@localhost/x")
    mallory.feed(f"<iq type='get' id='g' to='alice@localhost'>"
                 f"<blocklist xmlns='{ns.BLOCKING}'/></iq>")
    assert error_condition(only(mallory)) == "service-unavailable"


# -- storage ------------------------------------------------------------------------------------

def test_blocklists_in_the_store_are_loaded_and_enforced_at_start():
    h = harness()
    component = h.component("blocking")
    result_of(component.store["blocklist"].set("alice@localhost", ["bob@localhost"]))
    component.stopService()
    component.startService()
    alice = h.login("alice@localhost/phone")
    bob = h.login("bob@localhost/desk")
    assert request_blocklist(alice) == ["bob@localhost"]
    bob.feed("<message to='alice@localhost' id='m1' type='chat'><body>hi</body></message>")
    assert error_condition(only(bob)) == "service-unavailable"
    assert alice.take() == []


def test_stanzas_wait_until_the_blocklists_are_loaded():
    h = harness()
    component = h.component("blocking")
    result_of(component.store["blocklist"].set("alice@localhost", ["bob@localhost"]))
    alice = h.login("alice@localhost/phone")
    bob = h.login("bob@localhost/desk")
    component.stopService()
    h.server.storage_ready = ready = defer.Deferred()
    component.startService()
    bob.feed("<message to='alice@localhost' id='m1' type='chat'><body>hi</body></message>")
    assert alice.take() == [] and bob.take() == []  # held, not let through
    ready.callback(None)
    assert error_condition(only(bob)) == "service-unavailable"
    assert alice.take() == []


def test_concurrent_commands_of_one_user_do_not_lose_each_other():
    h = harness()
    alice = h.login("alice@localhost/phone")
    store = h.component("blocking").store["blocklist"]
    real_set, writes = store.set, []

    def slow_set(user, value):
        d = defer.Deferred()
        writes.append((d, user, value))
        return d.addCallback(lambda _: real_set(user, value))
    store.set = slow_set
    block(alice, "romeo@montague.net", iq_id="b1")
    block(alice, "iago@shakespeare.lit", iq_id="b2")
    while writes:
        d, _, _ = writes.pop(0)
        d.callback(None)
    assert [r["id"] for r in alice.take()] == ["b1", "b2"]
    assert stored(h, "alice@localhost") == ["iago@shakespeare.lit", "romeo@montague.net"]


# -- inbound enforcement (§3.3) ------------------------------------------------------------------

def blocked_pair(h, blocked="bob@localhost"):
    alice = h.login("alice@localhost/phone")
    bob = h.login("bob@localhost/desk")
    block(alice, blocked)
    alice.take()
    bob.take()
    return alice, bob


def test_message_from_blocked_contact_gets_service_unavailable_and_is_not_delivered():
    h = harness()
    alice, bob = blocked_pair(h)
    bob.feed("<message to='alice@localhost' id='m1' type='chat'><body>hi</body></message>")
    bounce = only(bob)
    assert error_condition(bounce) == "service-unavailable"
    assert bounce["id"] == "m1" and bounce["from"] == "alice@localhost"
    assert alice.take() == []


def test_message_from_blocked_contact_to_an_offline_user_is_refused_too():
    h = harness()
    alice, bob = blocked_pair(h)
    alice.logout()
    bob.feed("<message to='alice@localhost' id='m1'><body>hi</body></message>")
    assert error_condition(only(bob)) == "service-unavailable"


def test_message_from_blocked_jid_to_an_online_full_jid_is_dropped_silently():
    # Prosody #690: MUC private messages come this way; an error would reach the room.
    h = harness()
    alice, bob = blocked_pair(h)
    bob.feed("<message to='alice@localhost/phone' id='m1' type='chat'><body>hi</body></message>")
    assert bob.take() == [] and alice.take() == []


def test_groupchat_and_headline_from_blocked_jid_are_dropped_silently():
    h = harness()
    alice, bob = blocked_pair(h)
    for mtype in ("groupchat", "headline", "error"):
        bob.feed(f"<message to='alice@localhost/phone' type='{mtype}'><body>x</body></message>")
        bob.feed(f"<message to='alice@localhost' type='{mtype}'><body>x</body></message>")
    assert bob.take() == [] and alice.take() == []


def test_presence_from_blocked_contact_is_dropped_without_error():
    h = harness()
    alice, bob = blocked_pair(h)
    for stanza in ("<presence to='alice@localhost'/>",
                   "<presence to='alice@localhost/phone'/>",
                   "<presence to='alice@localhost' type='subscribe'/>",
                   "<presence to='alice@localhost' type='probe'/>"):
        bob.feed(stanza)
    assert alice.take() == []
    assert bob.take() == []
    roster = result_of(h.component("roster").load("alice@localhost"))
    assert roster.items.get("bob@localhost") is None  # the request never reached her


def test_iq_get_from_blocked_contact_gets_service_unavailable():
    h = harness()
    alice, bob = blocked_pair(h)
    bob.feed("<iq type='get' id='q1' to='alice@localhost/phone'>"
             "<query xmlns='jabber:iq:version'/></iq>")
    reply = only(bob)
    assert reply["id"] == "q1" and error_condition(reply) == "service-unavailable"
    assert alice.take() == []


def test_iq_result_from_blocked_contact_is_dropped():
    h = harness()
    alice, bob = blocked_pair(h)
    bob.feed("<iq type='result' id='q1' to='alice@localhost/phone'/>")
    assert alice.take() == [] and bob.take() == []


def test_only_the_blocked_full_jid_is_blocked():
    h = harness()
    alice = h.login("alice@localhost/phone")
    desk = h.login("bob@localhost/desk")
    phone = h.login("bob@localhost/phone")
    block(alice, "bob@localhost/desk")
    alice.take()
    desk.take(), phone.take()
    desk.feed("<message to='alice@localhost' id='m1'><body>a</body></message>")
    phone.feed("<message to='alice@localhost' id='m2'><body>b</body></message>")
    assert error_condition(only(desk)) == "service-unavailable"
    assert only(alice)["id"] == "m2"


def test_blocking_a_domain_blocks_every_address_at_it_but_not_subdomains():
    h = harness()
    alice = h.login("alice@localhost/phone")
    block(alice, "evil.example")
    alice.take()
    for sender in ("mallory@evil.example/x", "evil.example", "evil.example/bot"):
        h.router.route(parse(f"<message from='{sender}' to='alice@localhost' id='m'>"
                             f"<body>spam</body></message>"))
    assert alice.take() == []
    assert [error_condition(s) for s in h.remote_sent] == ["service-unavailable"] * 3
    h.remote_sent.clear()
    h.router.route(parse("<message from='eve@sub.evil.example/x' to='alice@localhost' id='m'>"
                         "<body>hi</body></message>"))
    assert only(alice)["from"] == "eve@sub.evil.example/x"


def test_blocked_contact_does_not_affect_other_users():
    h = harness()
    alice, bob = blocked_pair(h)
    carol = h.login("carol@localhost/x")
    carol.take()
    bob.feed("<message to='carol@localhost' id='m1'><body>hi</body></message>")
    assert only(carol)["id"] == "m1"
    assert bob.take() == []


# -- outbound enforcement (§3.3) -----------------------------------------------------------------

def test_message_to_blocked_contact_gets_not_acceptable_with_blocked_condition():
    h = harness()
    alice, bob = blocked_pair(h)
    alice.feed("<message to='bob@localhost' id='m1' type='chat'><body>hi</body></message>")
    reply = only(alice)
    assert_blocked_error(reply)
    assert reply["from"] == "bob@localhost" and reply["to"] == "alice@localhost/phone"
    assert bob.take() == []


def test_iq_to_blocked_contact_gets_not_acceptable_with_blocked_condition():
    h = harness()
    alice, bob = blocked_pair(h)
    alice.feed("<iq type='get' id='q1' to='bob@localhost/desk'>"
               "<query xmlns='jabber:iq:version'/></iq>")
    assert_blocked_error(only(alice), "q1")
    assert bob.take() == []


def test_message_to_blocked_remote_domain_never_leaves_the_server():
    h = harness()
    alice = h.login("alice@localhost/phone")
    block(alice, "evil.example")
    alice.take()
    alice.feed("<message to='anyone@evil.example' id='m1'><body>hi</body></message>")
    assert_blocked_error(only(alice))
    assert h.remote_sent == []


def test_error_and_result_to_blocked_contact_are_dropped_without_answer():
    h = harness()
    alice, bob = blocked_pair(h)
    alice.feed("<message to='bob@localhost' type='error' id='e'/>")
    alice.feed("<iq to='bob@localhost/desk' type='result' id='r'/>")
    assert alice.take() == [] and bob.take() == []


def test_directed_presence_to_blocked_contact_is_dropped_silently():
    h = harness()
    alice, bob = blocked_pair(h)
    alice.feed("<presence to='bob@localhost'/>")
    alice.feed("<presence to='bob@localhost' type='subscribe'/>")
    assert alice.take() == [] and bob.take() == []


def test_presence_broadcast_skips_a_blocked_subscriber():
    h = harness()
    alice = h.login("alice@localhost/phone")
    bob = h.login("bob@localhost/desk")
    carol = h.login("carol@localhost/x")
    subscribe_from(h, "alice@localhost", "bob@localhost")
    subscribe_from(h, "alice@localhost", "carol@localhost")
    block(alice, "bob@localhost")
    alice.take(), bob.take(), carol.take()
    alice.feed("<presence><show>away</show></presence>")
    assert bob.take() == []
    assert [p["from"] for p in presences(carol)] == ["alice@localhost/phone"]


def test_unsubscribed_to_a_blocked_contact_still_revokes_the_subscription():
    h = harness()
    alice = h.login("alice@localhost/phone")
    subscribe_from(h, "alice@localhost", "bob@localhost")
    block(alice, "bob@localhost")
    alice.take()
    alice.feed("<presence to='bob@localhost' type='unsubscribed'/>")
    roster = result_of(h.component("roster").load("alice@localhost"))
    assert not roster.is_subscribed_from("bob@localhost")


def test_own_resources_and_own_server_are_never_blocked():
    h = harness()
    phone = h.login("alice@localhost/phone")
    desk = h.login("alice@localhost/desk")
    bob = h.login("bob@localhost/x")
    block(phone, "localhost", "alice@localhost")
    phone.take(), desk.take(), bob.take()
    phone.feed("<message to='alice@localhost/desk' id='m1'><body>note</body></message>")
    assert only(desk)["id"] == "m1"
    phone.feed("<iq type='get' id='d1' to='localhost'>"
               "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    assert only(phone)["type"] == "result"
    phone.feed("<message to='bob@localhost' id='m2'><body>hi</body></message>")
    assert_blocked_error(only(phone))  # the domain rule still covers other users


# -- presence on block and unblock (§3.3, §3.4) ----------------------------------------------

def test_blocking_a_subscriber_sends_it_unavailable_from_each_available_resource():
    h = harness()
    phone = h.login("alice@localhost/phone")
    desk = h.login("alice@localhost/desk")
    h.login("alice@localhost/hidden", available=False)
    bob = h.login("bob@localhost/x")
    subscribe_from(h, "alice@localhost", "bob@localhost")
    phone.take(), desk.take(), bob.take()
    block(phone, "bob@localhost")
    got = presences(bob)
    assert sorted(p["from"] for p in got) == ["alice@localhost/desk", "alice@localhost/phone"]
    assert all(p["type"] == "unavailable" for p in got)


def test_blocking_a_non_subscriber_sends_no_presence():
    h = harness()
    alice = h.login("alice@localhost/phone")
    bob = h.login("bob@localhost/x")
    bob.take()
    block(alice, "bob@localhost")
    assert presences(bob) == []


def test_blocking_a_remote_domain_tells_its_subscribers_only():
    h = harness()
    alice = h.login("alice@localhost/phone")
    subscribe_from(h, "alice@localhost", "romeo@evil.example")
    subscribe_from(h, "alice@localhost", "juliet@capulet.example")
    h.remote_sent.clear()
    block(alice, "evil.example")
    assert [(p["to"], p["type"]) for p in h.remote_sent] == [("romeo@evil.example", "unavailable")]


def test_blocking_again_sends_no_second_unavailable():
    h = harness()
    alice = h.login("alice@localhost/phone")
    bob = h.login("bob@localhost/x")
    subscribe_from(h, "alice@localhost", "bob@localhost")
    block(alice, "bob@localhost")
    bob.take()
    block(alice, "bob@localhost", iq_id="b2")
    assert presences(bob) == []


def test_unblocking_a_subscriber_resends_current_presence():
    h = harness()
    alice = h.login("alice@localhost/phone")
    bob = h.login("bob@localhost/x")
    subscribe_from(h, "alice@localhost", "bob@localhost")
    block(alice, "bob@localhost")
    alice.feed("<presence><status>busy</status></presence>")
    bob.take()
    unblock(alice, "bob@localhost")
    (got,) = presences(bob)
    assert got["from"] == "alice@localhost/phone" and got.getAttribute("type") is None
    assert [str(s) for s in got.elements(ns.CLIENT, "status")] == ["busy"]


def test_unblocked_subscriber_gets_the_presence_with_the_delay_of_when_it_was_sent():
    """As Prosody (its unblock probes on the contact's behalf): the presence
    sent again carries the XEP-0203 delay of when the server received it."""
    clock = task.Clock()
    clock.advance(1_000_000_000)
    h = Harness(COMPONENTS, clock=clock)
    alice = h.login("alice@localhost/phone")
    bob = h.login("bob@localhost/x")
    subscribe_from(h, "alice@localhost", "bob@localhost")
    block(alice, "bob@localhost")
    alice.feed("<presence><status>busy</status></presence>")
    bob.take()
    clock.advance(600)
    unblock(alice, "bob@localhost")
    (got,) = presences(bob)
    (delay,) = list(got.elements(ns.DELAY, "delay"))
    assert delay.attributes == {"from": "localhost", "stamp": "2001-09-09T01:46:40Z"}


def test_blocking_drops_the_blocked_jids_waiting_subscription_request():
    """As Prosody: a request waiting for the user's answer is forgotten when
    its sender is blocked — silently, and it does not come back on unblock."""
    h = harness()
    alice = h.login("alice@localhost/phone", available=False)
    bob = h.login("bob@localhost/x")
    carol = h.login("carol@localhost/x")
    bob.feed("<presence type='subscribe' to='alice@localhost'/>")
    carol.feed("<presence type='subscribe' to='alice@localhost'/>")
    bob.take(), carol.take()
    roster = result_of(h.component("roster").load("alice@localhost"))
    assert {i.jid for i in roster.pending_requests()} == {"bob@localhost", "carol@localhost"}
    block(alice, "bob@localhost")
    alice.take()
    assert [i.jid for i in roster.pending_requests()] == ["carol@localhost"]
    stored_roster = result_of(h.component("roster").store["roster"].items("alice@localhost"))
    assert "bob@localhost" not in stored_roster
    assert bob.take() == []  # no unsubscribed: the request is dropped, not refused
    unblock(alice, "bob@localhost")
    alice.take()
    alice.feed("<presence/>")
    requests = [p["from"] for p in alice.take() if p.getAttribute("type") == "subscribe"]
    assert requests == ["carol@localhost"]


def test_unblocking_all_resends_presence_to_previously_blocked_subscribers():
    h = harness()
    alice = h.login("alice@localhost/phone")
    bob = h.login("bob@localhost/x")
    carol = h.login("carol@localhost/x")
    subscribe_from(h, "alice@localhost", "bob@localhost")
    subscribe_from(h, "alice@localhost", "carol@localhost")
    block(alice, "bob@localhost")
    bob.take(), carol.take()
    unblock(alice)
    assert [p["from"] for p in presences(bob)] == ["alice@localhost/phone"]
    assert presences(carol) == []  # never blocked: nothing to restore


def test_message_from_blocked_contact_is_not_stored_for_an_offline_user():
    h = Harness(COMPONENTS + ["offline"])
    alice = h.login("alice@localhost/phone")
    bob = h.login("bob@localhost/desk")
    block(alice, "bob@localhost")
    alice.logout()
    bob.take()
    bob.feed("<message to='alice@localhost' id='m1' type='chat'><body>hi</body></message>")
    assert error_condition(only(bob)) == "service-unavailable"
    again = h.login("alice@localhost/phone", available=False)
    again.feed("<presence/>")  # initial presence is when stored messages arrive
    assert [s for s in again.take() if s.name == "message"] == []


def test_message_to_blocked_contact_is_not_carbon_copied():
    h = Harness(COMPONENTS + ["carbons"])
    phone = h.login("alice@localhost/phone")
    desk = h.login("alice@localhost/desk")
    h.login("bob@localhost/x")
    desk.feed(f"<iq type='set' id='c1'><enable xmlns='{ns.CARBONS}'/></iq>")
    block(phone, "bob@localhost")
    phone.take(), desk.take()
    phone.feed("<message to='bob@localhost' id='m1' type='chat'><body>hi</body></message>")
    assert_blocked_error(only(phone))
    assert desk.take() == []


def test_deleted_account_leaves_no_blocklist_in_memory():
    h = harness()
    alice = h.login("alice@localhost/phone")
    request_blocklist(alice)
    block(alice, "mallory@localhost")
    alice.take()
    result_of(h.server.delete_account("alice@localhost"))
    assert h.component("blocking").blocklist("alice@localhost") == frozenset()
    again = h.login("alice@localhost/phone")
    assert request_blocklist(again) == []
