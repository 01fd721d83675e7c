"""RFC 6121 §4: a session's own broadcast presence sets its availability and priority."""

import pytest
from twisted.internet import defer, task
from twisted.words.xish import domish

from xmppd import ns
from xmppd.config import ConfigError
from xmppd.testing import Harness, error_condition, only, parse, result_of



def fresh():
    h = Harness(["presence"])
    alice = h.login("alice@localhost/phone", available=False)
    return h, alice


def test_session_starts_unavailable_before_initial_presence():
    _, alice = fresh()
    assert alice.available is False


def test_initial_presence_marks_session_available():
    _, alice = fresh()
    alice.feed("<presence/>")
    assert alice.available is True
    assert alice.priority == 0
    assert alice.presence is not None and alice.presence.name == "presence"
    # RFC 6121 §4.2.2: the broadcast includes the resource that sent it.
    echo = only(alice)
    assert echo.name == "presence" and echo.getAttribute("from") == "alice@localhost/phone"
    assert echo.getAttribute("to") == "alice@localhost/phone"
def test_initial_presence_sets_priority():
    _, alice = fresh()
    alice.feed("<presence><priority>5</priority></presence>")
    assert alice.available is True
    assert alice.priority == 5
def test_negative_priority_is_kept():
    _, alice = fresh()
    alice.feed("<presence><priority>-3</priority></presence>")
    assert alice.priority == -3
def test_harness_login_priority_reaches_the_session():
    h = Harness(["presence"])
    alice = h.login("alice@localhost/phone", priority=7)
    assert alice.available and alice.priority == 7
@pytest.mark.parametrize("given, expected", [("1000", 127), ("-1000", -128), ("127", 127), ("-128", -128)])
def test_priority_is_clamped_to_a_signed_byte(given, expected):
    _, alice = fresh()
    alice.feed(f"<presence><priority>{given}</priority></presence>")
    assert alice.priority == expected


def test_non_numeric_priority_counts_as_zero():
    _, alice = fresh()
    alice.feed("<presence><priority>high</priority></presence>")
    assert alice.available is True
    assert alice.priority == 0


def test_unavailable_presence_clears_availability():
    _, alice = fresh()
    alice.feed("<presence/>")
    alice.feed("<presence type='unavailable'/>")
    assert alice.available is False
    assert alice.presence is None


def test_directed_presence_does_not_change_own_availability():
    h, alice = fresh()
    alice.feed("<presence to='alice@localhost'/>")
    assert alice.available is False


def test_logout_marks_session_unavailable():
    h = Harness(["presence"])
    alice = h.login("alice@localhost/phone")
    assert alice.available is True
    alice.logout()
    assert alice.available is False
    assert h.router.resources("alice@localhost") == {}


# ===================================================================================
# RFC 6121 §3 (subscriptions) and §4 (presence) with the roster component: what
# each resource of each user sees, and what the rosters record, step by step.
# ===================================================================================

ALICE = "alice@localhost"
BOB = "bob@localhost"
CAROL = "carol@localhost"
REMOTE = "carol@remote.example"


def world(**presence_options):
    options = {}
    if presence_options:
        options["component:presence"] = {k: str(v) for k, v in presence_options.items()}
    return Harness(["roster", "presence", "messaging"], options=options)


def connect(h, full_jid, interested=True, available=True, show=None):
    """A resource that asked for the roster (interested) and/or sent initial
    presence (available); what it received while doing so is discarded."""
    session = h.login(full_jid, available=False)
    if interested:
        session.feed(f"<iq type='get' id='roster'><query xmlns='{ns.ROSTER}'/></iq>")
    if available:
        body = f"<show>{show}</show>" if show else ""
        session.feed(f"<presence>{body}</presence>")
    for other in h.router.resources(session.bare).values():
        other.take()
    return session


def clear(*sessions):
    for session in sessions:
        session.take()


def state(h, user, contact):
    """(subscription, ask, approved, pending_in) of ``contact`` in ``user``'s roster;
    None if there is no entry at all."""
    roster = result_of(h.component("roster").load(user))
    item = roster.items.get(contact)
    if item is None:
        return None
    return (item.subscription if item.listed else "unlisted", item.ask, item.approved,
            item.pending_in is not None)


def stored(h, user):
    """The stored roster entries and version (the version's epoch, which may be
    persisted on first use, left out)."""
    data = result_of(h.component("roster").store["roster"].items(user))
    meta = data.pop("", None) or {}
    data["version"] = meta.get("version", 0)
    return data


def pushed(stanzas, user):
    """The items of the roster pushes among ``stanzas`` as dicts."""
    out = []
    for s in stanzas:
        if s.name != "iq" or s.getAttribute("type") != "set":
            continue
        assert s.getAttribute("from") in (None, user), s.toXml()
        query = s.firstChildElement()
        assert (query.uri, query.name) == (ns.ROSTER, "query")
        (item,) = list(query.elements(ns.ROSTER, "item"))
        entry = {k: item[k] for k in ("jid", "subscription", "ask", "approved")
                 if item.hasAttribute(k)}
        out.append(entry)
    return out


def presences(stanzas):
    """(from, type) of the presence stanzas among ``stanzas``, in order."""
    return [(s.getAttribute("from"), s.getAttribute("type")) for s in stanzas
            if s.name == "presence"]


def listed_jids(h, user):
    roster = result_of(h.component("roster").load(user))
    return sorted(i.jid for i in roster.listed())


def spy(h):
    """Every stanza routed to a local user (fired before delivery), recorded."""
    seen = []

    def record(event):
        seen.append(event.stanza)
        return False
    h.router.hook("inbound/bare", record, priority=1000)
    h.router.hook("inbound/full", record, priority=1000)
    return seen


def remote(h):
    """Stanzas the server sends to other domains (the s2s seam), recorded."""
    sent = []

    def capture(stanza, to):
        sent.append(stanza)
        return True
    h.router.remote = capture
    return sent


def families(h):
    """alice and bob with three resources each: one interested and available,
    one only available, one only interested (RFC 6121 §2.2 terminology)."""
    return {
        "alice/phone": connect(h, f"{ALICE}/phone"),
        "alice/laptop": connect(h, f"{ALICE}/laptop", interested=False),
        "alice/tablet": connect(h, f"{ALICE}/tablet", available=False),
        "bob/pc": connect(h, f"{BOB}/pc"),
        "bob/mobile": connect(h, f"{BOB}/mobile", interested=False, show="away"),
        "bob/web": connect(h, f"{BOB}/web", available=False),
    }


def take_all(s):
    return {name: session.take() for name, session in s.items()}


# -- §3.1 the subscription handshake, step by step ------------------------------------


def step_alice_subscribes(h, s):
    s["alice/phone"].feed(f"<presence type='subscribe' to='{BOB}'/>")


def step_bob_approves(h, s):
    s["bob/pc"].feed(f"<presence type='subscribed' to='{ALICE}'/>")


def step_bob_subscribes(h, s):
    s["bob/mobile"].feed(f"<presence type='subscribe' to='{ALICE}'/>")


def step_alice_approves(h, s):
    s["alice/laptop"].feed(f"<presence type='subscribed' to='{BOB}'/>")


def test_subscribe_pushes_ask_to_users_interested_resources_and_reaches_contacts_available_ones():
    h = world()
    s = families(h)
    step_alice_subscribes(h, s)
    got = take_all(s)
    ask = [{"jid": BOB, "subscription": "none", "ask": "subscribe"}]
    assert pushed(got["alice/phone"], ALICE) == ask
    assert pushed(got["alice/tablet"], ALICE) == ask
    assert pushed(got["alice/laptop"], ALICE) == []
    for name in ("bob/pc", "bob/mobile"):
        (request,) = got[name]
        assert request.name == "presence" and request["type"] == "subscribe"
        assert request["from"] == ALICE  # §3.1.2: stamped with the bare JID
        assert request["to"] == BOB
    # §3.1.3: not on bob's roster yet, so no push to bob's interested resource
    assert got["bob/web"] == []
    assert state(h, ALICE, BOB) == ("none", True, False, False)
    assert state(h, BOB, ALICE) == ("unlisted", False, False, True)


def test_subscribed_pushes_both_sides_and_lets_presence_flow():
    h = world()
    s = families(h)
    step_alice_subscribes(h, s)
    take_all(s)
    step_bob_approves(h, s)
    got = take_all(s)
    from_ = [{"jid": ALICE, "subscription": "from"}]
    assert pushed(got["bob/pc"], BOB) == from_
    assert pushed(got["bob/web"], BOB) == from_
    assert got["bob/mobile"] == []
    to = [{"jid": BOB, "subscription": "to"}]
    assert pushed(got["alice/phone"], ALICE) == to
    assert pushed(got["alice/tablet"], ALICE) == to
    # §3.1.6: the approval goes to the interested resources, before its push
    # (as Prosody); the presence that follows to the available ones (§3.1.5).
    phone = got["alice/phone"]
    assert [(s.name, s.getAttribute("type"), s.getAttribute("from")) for s in phone] == [
        ("presence", "subscribed", BOB), ("iq", "set", ALICE),
        ("presence", None, f"{BOB}/pc"), ("presence", None, f"{BOB}/mobile")]
    assert presences(got["alice/tablet"]) == [(BOB, "subscribed")]  # interested only
    assert presences(got["alice/laptop"]) == [(f"{BOB}/pc", None), (f"{BOB}/mobile", None)]
    assert state(h, ALICE, BOB) == ("to", False, False, False)
    assert state(h, BOB, ALICE) == ("from", False, False, False)


def test_presence_after_an_approval_waits_until_the_contacts_server_took_it_in():
    """The approval reaches alice's side first (subscribed, then the push),
    and only then bob's presence, as Prosody sends them — also when alice's
    side waits on storage for it (here: the account lookup, held back)."""
    h = world()
    alice = connect(h, f"{ALICE}/phone")
    bob = connect(h, f"{BOB}/pc")
    alice.feed(f"<presence type='subscribe' to='{BOB}'/>")
    clear(alice, bob)
    held = []
    exists = h.server.accounts.exists

    def slow_exists(user):
        if user != ALICE:
            return exists(user)
        d = defer.Deferred()
        held.append((d, user))
        return d
    h.server.accounts.exists = slow_exists
    bob.feed(f"<presence type='subscribed' to='{ALICE}'/>")
    assert len(held) == 1 and alice.take() == []  # nothing overtakes the approval
    h.server.accounts.exists = exists
    d, user = held.pop()
    exists(user).chainDeferred(d)
    assert [(s.name, s.getAttribute("type"), s.getAttribute("from")) for s in alice.take()] == [
        ("presence", "subscribed", BOB), ("iq", "set", ALICE), ("presence", None, f"{BOB}/pc")]


def test_presence_sent_to_a_new_subscriber_carries_its_delay():
    """As Prosody: the presence a new subscriber gets is the stored one,
    stamped with when the server received it (XEP-0203, from the domain)."""
    clock = task.Clock()
    clock.advance(1_000_000_000)
    h = Harness(["roster", "presence", "messaging"], clock=clock)
    alice = connect(h, f"{ALICE}/phone")
    bob = connect(h, f"{BOB}/pc", show="away")
    clock.advance(90)
    alice.feed(f"<presence type='subscribe' to='{BOB}'/>")
    bob.feed(f"<presence type='subscribed' to='{ALICE}'/>")
    (current,) = [p for p in alice.take() if p.name == "presence" and p.getAttribute("type") is None]
    assert current["from"] == f"{BOB}/pc" and current["to"] == ALICE
    delay = next(current.elements(ns.DELAY, "delay"))
    assert delay["from"] == "localhost"
    assert delay["stamp"] == "2001-09-09T01:46:40Z"  # when bob sent it, not now
    assert str(next(current.elements(ns.CLIENT, "show"))) == "away"


def test_after_one_way_subscription_only_the_subscriber_gets_presence():
    h = world()
    s = families(h)
    step_alice_subscribes(h, s)
    step_bob_approves(h, s)
    take_all(s)
    s["bob/mobile"].feed("<presence><show>dnd</show></presence>")
    got = take_all(s)
    for name in ("alice/phone", "alice/laptop"):
        (update,) = got[name]
        assert update["from"] == f"{BOB}/mobile"
        assert str(next(update.elements(ns.CLIENT, "show"))) == "dnd"
    assert got["alice/tablet"] == []
    s["alice/phone"].feed("<presence><show>chat</show></presence>")
    got = take_all(s)
    for name in ("bob/pc", "bob/mobile", "bob/web"):
        assert got[name] == []


def test_subscribe_back_is_delivered_and_marks_ask_on_the_requesters_roster():
    h = world()
    s = families(h)
    step_alice_subscribes(h, s)
    step_bob_approves(h, s)
    take_all(s)
    step_bob_subscribes(h, s)
    got = take_all(s)
    ask = [{"jid": ALICE, "subscription": "from", "ask": "subscribe"}]
    assert pushed(got["bob/pc"], BOB) == ask
    assert pushed(got["bob/web"], BOB) == ask
    for name in ("alice/phone", "alice/laptop"):
        assert presences(got[name]) == [(BOB, "subscribe")]
    # pending in is no roster change: nothing pushed to alice
    assert pushed(got["alice/phone"], ALICE) == []
    assert got["alice/tablet"] == []
    assert state(h, ALICE, BOB) == ("to", False, False, True)
    assert state(h, BOB, ALICE) == ("from", True, False, False)


def test_mutual_subscription_pushes_both_and_presence_flows_both_ways():
    h = world()
    s = families(h)
    for step in (step_alice_subscribes, step_bob_approves, step_bob_subscribes):
        step(h, s)
    take_all(s)
    step_alice_approves(h, s)
    got = take_all(s)
    assert pushed(got["alice/phone"], ALICE) == [{"jid": BOB, "subscription": "both"}]
    assert pushed(got["alice/tablet"], ALICE) == [{"jid": BOB, "subscription": "both"}]
    assert pushed(got["bob/pc"], BOB) == [{"jid": ALICE, "subscription": "both"}]
    assert pushed(got["bob/web"], BOB) == [{"jid": ALICE, "subscription": "both"}]
    for name in ("bob/pc", "bob/mobile"):
        seen = presences(got[name])
        assert ((ALICE, "subscribed") in seen) == (name == "bob/pc")  # interested only
        assert (f"{ALICE}/phone", None) in seen and (f"{ALICE}/laptop", None) in seen
    assert presences(got["bob/web"]) == [(ALICE, "subscribed")]
    # As Prosody: approving someone alice is subscribed to probes them, so
    # bob's presence comes again to alice's available resources.
    for name in ("alice/phone", "alice/laptop"):
        assert presences(got[name]) == [(f"{BOB}/pc", None), (f"{BOB}/mobile", None)]
    assert presences(got["alice/tablet"]) == []
    assert state(h, ALICE, BOB) == ("both", False, False, False)
    assert state(h, BOB, ALICE) == ("both", False, False, False)
    # and now each side's updates reach the other's available resources
    s["alice/laptop"].feed("<presence><show>xa</show></presence>")
    got = take_all(s)
    assert presences(got["bob/pc"]) == [(f"{ALICE}/laptop", None)]
    assert presences(got["bob/mobile"]) == [(f"{ALICE}/laptop", None)]
    s["bob/pc"].feed("<presence><show>away</show></presence>")
    got = take_all(s)
    assert presences(got["alice/phone"]) == [(f"{BOB}/pc", None)]
    assert presences(got["alice/laptop"]) == [(f"{BOB}/pc", None)]


def test_subscription_state_is_stored_durably():
    h = world()
    s = families(h)
    for step in (step_alice_subscribes, step_bob_approves, step_bob_subscribes,
                 step_alice_approves):
        step(h, s)
    assert stored(h, ALICE)[BOB]["subscription"] == "both"
    assert stored(h, BOB)[ALICE]["subscription"] == "both"
    assert not stored(h, ALICE)[BOB]["ask"] and stored(h, ALICE)[BOB]["pending_in"] is None


# -- §3.1.3 requests to a contact who is not available ------------------------------------


def test_pending_request_is_delivered_on_the_contacts_next_initial_presence():
    h = world()
    alice = connect(h, f"{ALICE}/phone")
    h.add_user(BOB)
    alice.feed(f"<presence type='subscribe' to='{BOB}'/>")
    bob = connect(h, f"{BOB}/pc", available=False)
    assert bob.take() == []
    bob.feed("<presence/>")
    requests = [p for p in bob.take() if p.getAttribute("type") == "subscribe"]
    assert len(requests) == 1
    assert requests[0]["from"] == ALICE and requests[0]["to"] == BOB


def test_pending_request_waits_for_a_connected_but_unavailable_resource():
    h = world()
    alice = connect(h, f"{ALICE}/phone")
    bob = connect(h, f"{BOB}/pc", available=False)
    alice.feed(f"<presence type='subscribe' to='{BOB}'/>")
    assert bob.take() == []  # §2.2: subscription requests go to available resources
    bob.feed("<presence/>")
    assert [p["from"] for p in bob.take() if p.getAttribute("type") == "subscribe"] == [ALICE]


def test_unanswered_request_is_redelivered_on_each_initial_presence_until_answered():
    h = world()
    alice = connect(h, f"{ALICE}/phone")
    bob = connect(h, f"{BOB}/pc")
    alice.feed(f"<presence type='subscribe' to='{BOB}'/>")
    assert len(bob.take()) == 1
    bob.logout()
    again = connect(h, f"{BOB}/pc", available=False)
    again.feed("<presence/>")
    assert [p["from"] for p in again.take() if p.getAttribute("type") == "subscribe"] == [ALICE]
    again.feed(f"<presence type='subscribed' to='{ALICE}'/>")
    later = connect(h, f"{BOB}/mobile", available=False)
    later.feed("<presence/>")
    assert [p for p in later.take() if p.getAttribute("type") == "subscribe"] == []


def test_subscribe_to_a_nonexistent_local_user_comes_back_unsubscribed():
    h = world()
    alice = connect(h, f"{ALICE}/phone")
    alice.feed("<presence type='subscribe' to='ghost@localhost'/>")
    got = alice.take()
    assert ("ghost@localhost", "unsubscribed") in presences(got)
    assert pushed(got, ALICE) == [
        {"jid": "ghost@localhost", "subscription": "none", "ask": "subscribe"},
        {"jid": "ghost@localhost", "subscription": "none"},
    ]
    assert state(h, ALICE, "ghost@localhost") == ("none", False, False, False)


def test_repeated_subscribe_when_already_subscribed_is_answered_with_the_current_presence():
    """§3.1.3: already approved, answered by the server, not shown to bob. As
    Prosody: the item is pushed again, and bob's current presence follows
    the answer (unavailable from bob's bare JID when he has none)."""
    h = world()
    alice = connect(h, f"{ALICE}/phone")
    bob = connect(h, f"{BOB}/pc")
    alice.feed(f"<presence type='subscribe' to='{BOB}'/>")
    bob.feed(f"<presence type='subscribed' to='{ALICE}'/>")
    clear(alice, bob)
    before_a, before_b = stored(h, ALICE), stored(h, BOB)
    alice.feed(f"<presence type='subscribe' to='{BOB}'/>")
    assert bob.take() == []
    got = alice.take()
    assert pushed(got, ALICE) == [{"jid": BOB, "subscription": "to"}]
    assert presences(got) == [(f"{BOB}/pc", None)]
    assert next(got[1].elements(ns.DELAY, "delay"))["from"] == "localhost"
    assert stored(h, ALICE) == before_a and stored(h, BOB) == before_b
    bob.feed("<presence type='unavailable'/>")
    alice.take()
    alice.feed(f"<presence type='subscribe' to='{BOB}'/>")
    assert presences(alice.take()) == [(BOB, "unavailable")]


def test_subscribe_from_someone_who_cannot_see_the_presence_is_acknowledged_unavailable():
    """As Prosody's mod_presence: a request from someone not subscribed to
    the user's presence (and not pre-approved) is acknowledged at once with
    unavailable from the user's bare JID, before it is delivered — and again
    for a request repeated while the first still waits."""
    h = world()
    alice = connect(h, f"{ALICE}/phone", interested=False)
    bob = connect(h, f"{BOB}/pc")
    seen = spy(h)
    alice.feed(f"<presence type='subscribe' to='{BOB}' id='s1'/>")
    assert [(s.getAttribute("from"), s.getAttribute("to"), s.getAttribute("type"))
            for s in seen] == [(ALICE, BOB, "subscribe"), (BOB, ALICE, "unavailable")]
    (ack,) = alice.take()
    assert ack.attributes == {"from": BOB, "to": ALICE, "type": "unavailable"}
    assert ack.children == []
    assert presences(bob.take()) == [(ALICE, "subscribe")]
    alice.feed(f"<presence type='subscribe' to='{BOB}' id='s2'/>")
    assert presences(alice.take()) == [(BOB, "unavailable")]
    assert bob.take() == []  # already waiting: not shown twice


def test_subscribe_that_is_pre_approved_or_from_a_subscriber_gets_no_unavailable():
    h = world()
    alice = connect(h, f"{ALICE}/phone", interested=False)
    bob = connect(h, f"{BOB}/pc", interested=False)
    bob.feed(f"<presence type='subscribed' to='{ALICE}'/>")  # a pre-approval
    clear(alice, bob)
    alice.feed(f"<presence type='subscribe' to='{BOB}'/>")
    assert (BOB, "unavailable") not in presences(alice.take())
    alice.feed(f"<presence type='subscribe' to='{BOB}'/>")  # subscribed now
    assert (BOB, "unavailable") not in presences(alice.take())


def test_subscription_to_oneself_changes_nothing():
    h = world()
    alice = connect(h, f"{ALICE}/phone")
    before = stored(h, ALICE)
    alice.feed(f"<presence type='subscribe' to='{ALICE}'/>")
    assert alice.take() == []
    assert stored(h, ALICE) == before


# -- §3.4 pre-approval -------------------------------------------------------------------


def test_subscribed_without_request_is_a_pre_approval_kept_back_from_the_contact():
    h = world()
    alice = connect(h, f"{ALICE}/phone")
    bob = connect(h, f"{BOB}/pc")
    seen = spy(h)
    before = stored(h, ALICE)
    bob.feed(f"<presence type='subscribed' to='{ALICE}'/>")
    assert pushed(bob.take(), BOB) == [{"jid": ALICE, "subscription": "none", "approved": "true"}]
    assert alice.take() == []
    assert [s for s in seen if s.getAttribute("to", "").startswith(ALICE)] == []
    assert stored(h, ALICE) == before
    assert state(h, BOB, ALICE) == ("none", False, True, False)


def test_pre_approved_subscribe_is_answered_at_once():
    h = world()
    alice = connect(h, f"{ALICE}/phone")
    bob = connect(h, f"{BOB}/pc", show="away")
    bob.feed(f"<presence type='subscribed' to='{ALICE}'/>")
    clear(alice, bob)
    alice.feed(f"<presence type='subscribe' to='{BOB}'/>")
    got = alice.take()
    assert pushed(got, ALICE) == [{"jid": BOB, "subscription": "none", "ask": "subscribe"},
                                  {"jid": BOB, "subscription": "to"}]
    seen = presences(got)
    assert (BOB, "subscribed") in seen and (f"{BOB}/pc", None) in seen
    bob_got = bob.take()
    assert presences(bob_got) == []  # the request is not shown to bob
    assert pushed(bob_got, BOB) == [{"jid": ALICE, "subscription": "from"}]  # approval used up
    assert state(h, BOB, ALICE) == ("from", False, False, False)


def test_unsubscribed_cancels_a_pre_approval_without_telling_the_contact():
    h = world()
    alice = connect(h, f"{ALICE}/phone")
    bob = connect(h, f"{BOB}/pc")
    bob.feed(f"<presence type='subscribed' to='{ALICE}'/>")
    clear(alice, bob)
    seen = spy(h)
    bob.feed(f"<presence type='unsubscribed' to='{ALICE}'/>")
    assert pushed(bob.take(), BOB) == [{"jid": ALICE, "subscription": "none"}]
    assert state(h, BOB, ALICE)[2] is False
    # §3.2.2 case 2: MUST NOT route the unsubscribed to the user
    assert [s for s in seen if s.getAttribute("to", "").startswith(ALICE)] == []
    assert alice.take() == []
    # and a later request waits for bob's answer again
    alice.feed(f"<presence type='subscribe' to='{BOB}'/>")
    assert presences(bob.take()) == [(ALICE, "subscribe")]


def test_pre_approval_of_a_remote_contact_is_not_routed():
    h = world()
    sent = remote(h)
    bob = connect(h, f"{BOB}/pc")
    bob.feed(f"<presence type='subscribed' to='{REMOTE}'/>")
    bob.feed(f"<presence type='unsubscribed' to='{REMOTE}'/>")
    assert sent == []


# -- §3.2 / §3.3 cancelling and unsubscribing ------------------------------------------------


def mutual(h):
    s = families(h)
    for step in (step_alice_subscribes, step_bob_approves, step_bob_subscribes,
                 step_alice_approves):
        step(h, s)
    take_all(s)
    return s


def test_unsubscribe_pushes_both_sides_and_the_contact_goes_unavailable_for_the_user():
    h = world()
    s = mutual(h)
    s["alice/phone"].feed(f"<presence type='unsubscribe' to='{BOB}'/>")
    got = take_all(s)
    assert pushed(got["alice/phone"], ALICE) == [{"jid": BOB, "subscription": "from"}]
    assert pushed(got["alice/tablet"], ALICE) == [{"jid": BOB, "subscription": "from"}]
    assert pushed(got["bob/pc"], BOB) == [{"jid": ALICE, "subscription": "to"}]
    assert pushed(got["bob/web"], BOB) == [{"jid": ALICE, "subscription": "to"}]
    # §3.3.3: the unsubscribe to bob's interested resources, before the push
    assert [(s.name, s.getAttribute("type")) for s in got["bob/pc"]] == [
        ("presence", "unsubscribe"), ("iq", "set")]
    assert presences(got["bob/web"]) == [(ALICE, "unsubscribe")]
    assert got["bob/mobile"] == []  # available, not interested
    # §3.3.3: unavailable from each of bob's available resources to alice
    for name in ("alice/phone", "alice/laptop"):
        seen = presences(got[name])
        assert (f"{BOB}/pc", "unavailable") in seen and (f"{BOB}/mobile", "unavailable") in seen
    assert state(h, ALICE, BOB) == ("from", False, False, False)
    assert state(h, BOB, ALICE) == ("to", False, False, False)
    # bob's presence no longer reaches alice; alice's still reaches bob
    s["bob/pc"].feed("<presence><show>away</show></presence>")
    got = take_all(s)
    assert presences(got["alice/phone"]) == [] and presences(got["alice/laptop"]) == []
    s["alice/phone"].feed("<presence><show>away</show></presence>")
    got = take_all(s)
    assert presences(got["bob/pc"]) == [(f"{ALICE}/phone", None)]


def test_unsubscribed_pushes_both_sides_and_unavailable_precedes_it():
    h = world()
    s = mutual(h)
    s["bob/pc"].feed(f"<presence type='unsubscribed' to='{ALICE}'/>")
    got = take_all(s)
    assert pushed(got["bob/pc"], BOB) == [{"jid": ALICE, "subscription": "to"}]
    assert pushed(got["alice/phone"], ALICE) == [{"jid": BOB, "subscription": "from"}]
    # §3.2.2: unavailable from all of bob's online resources, sent while alice
    # is still subscribed, i.e. before the unsubscribed; §3.2.3: the
    # unsubscribed to alice's interested resources, then the push.
    assert [(s.name, s.getAttribute("type"), s.getAttribute("from"))
            for s in got["alice/phone"]] == [
        ("presence", "unavailable", f"{BOB}/pc"), ("presence", "unavailable", f"{BOB}/mobile"),
        ("presence", "unsubscribed", BOB), ("iq", "set", ALICE)]
    assert presences(got["alice/laptop"]) == [(f"{BOB}/pc", "unavailable"),
                                              (f"{BOB}/mobile", "unavailable")]
    assert presences(got["alice/tablet"]) == [(BOB, "unsubscribed")]
    assert state(h, ALICE, BOB) == ("from", False, False, False)
    assert state(h, BOB, ALICE) == ("to", False, False, False)
    s["bob/mobile"].feed("<presence><show>chat</show></presence>")
    got = take_all(s)
    assert presences(got["alice/phone"]) == [] and presences(got["alice/laptop"]) == []


def test_unsubscribed_denies_a_pending_request():
    h = world()
    alice = connect(h, f"{ALICE}/phone")
    bob = connect(h, f"{BOB}/pc")
    alice.feed(f"<presence type='subscribe' to='{BOB}'/>")
    clear(alice, bob)
    bob.feed(f"<presence type='unsubscribed' to='{ALICE}'/>")
    got = alice.take()
    assert (BOB, "unsubscribed") in presences(got)
    assert (f"{BOB}/pc", None) not in presences(got)
    assert pushed(got, ALICE) == [{"jid": BOB, "subscription": "none"}]
    assert state(h, ALICE, BOB) == ("none", False, False, False)
    assert state(h, BOB, ALICE) is None or state(h, BOB, ALICE)[3] is False
    # the denied request is not redelivered
    later = connect(h, f"{BOB}/mobile", available=False)
    later.feed("<presence/>")
    assert [p for p in later.take() if p.getAttribute("type") == "subscribe"] == []


def test_unsubscribe_without_a_subscription_is_not_delivered():
    h = world()
    alice = connect(h, f"{ALICE}/phone")
    bob = connect(h, f"{BOB}/pc")
    before = stored(h, BOB)
    alice.feed(f"<presence type='unsubscribe' to='{BOB}'/>")
    assert bob.take() == []
    assert stored(h, BOB) == before


def test_inbound_subscribed_without_a_request_changes_nothing():
    # What a remote server (or a forgery through it) could send: the user never
    # asked, so there is no state change and nothing is delivered (§3.1.6).
    h = world()
    alice = connect(h, f"{ALICE}/phone")
    before = stored(h, ALICE)
    h.router.route(parse(f"<presence type='subscribed' from='{BOB}' to='{ALICE}'/>"))
    h.router.route(parse(f"<presence type='subscribed' from='{REMOTE}' to='{ALICE}'/>"))
    assert alice.take() == []
    assert stored(h, ALICE) == before
    assert listed_jids(h, ALICE) == []


def test_subscribed_from_contact_without_request_gives_nobody_presence():
    h = world()
    alice = connect(h, f"{ALICE}/phone")
    bob = connect(h, f"{BOB}/pc")
    before = stored(h, ALICE)
    bob.feed(f"<presence type='subscribed' to='{ALICE}'/>")
    assert alice.take() == []
    assert stored(h, ALICE) == before
    bob.take()
    # neither side receives the other's presence afterwards
    bob.feed("<presence><show>away</show></presence>")
    alice.feed("<presence><show>away</show></presence>")
    assert [p for p in alice.take() if p.getAttribute("from", "").startswith(BOB)] == []
    assert [p for p in bob.take() if p.getAttribute("from", "").startswith(ALICE)] == []


# -- rate limit ------------------------------------------------------------------------------


def test_subscription_requests_beyond_the_rate_limit_get_resource_constraint():
    h = world(subscription_rate_limit=2)
    alice = connect(h, f"{ALICE}/phone")
    dave = connect(h, "dave@localhost/pc")
    alice.feed(f"<presence type='subscribe' to='{BOB}'/>")
    alice.feed(f"<presence type='subscribe' to='{CAROL}'/>")
    alice.take()
    before = stored(h, ALICE)
    alice.feed("<presence type='subscribe' to='dave@localhost' id='third'/>")
    reply = only(alice)
    assert reply.name == "presence" and reply.getAttribute("id") == "third"
    assert error_condition(reply) == "resource-constraint"
    assert stored(h, ALICE) == before
    assert state(h, ALICE, "dave@localhost") is None
    assert dave.take() == []
    assert state(h, "dave@localhost", ALICE) is None


def test_rate_limit_does_not_stop_answering_requests():
    h = world(subscription_rate_limit=1)
    alice = connect(h, f"{ALICE}/phone")
    bob = connect(h, f"{BOB}/pc")
    alice.feed(f"<presence type='subscribe' to='{CAROL}'/>")
    bob.feed(f"<presence type='subscribe' to='{ALICE}'/>")
    clear(alice, bob)
    alice.feed(f"<presence type='subscribed' to='{BOB}'/>")
    assert (ALICE, "subscribed") in presences(bob.take())
    assert state(h, ALICE, BOB)[0] == "from"


# -- §4.2 initial presence, probes, broadcast ------------------------------------------------


def test_initial_presence_gets_contacts_presence_at_the_new_full_jid():
    h = world()
    s = mutual(h)
    desk = h.login(f"{ALICE}/desk", available=False)
    desk.feed("<presence/>")
    got = desk.take()
    by_from = {p["from"]: p for p in got if p.name == "presence"}
    for resource in ("pc", "mobile"):
        p = by_from[f"{BOB}/{resource}"]
        assert p["to"] == f"{ALICE}/desk"
        assert p.getAttribute("type") is None
    mobile = by_from[f"{BOB}/mobile"]
    assert str(next(mobile.elements(ns.CLIENT, "show"))) == "away"
    # and the user's own other available resources
    assert f"{ALICE}/phone" in by_from and f"{ALICE}/laptop" in by_from
    assert f"{ALICE}/tablet" not in by_from  # not available
    assert f"{BOB}/web" not in by_from
    assert presences(s["bob/pc"].take()) == [(f"{ALICE}/desk", None)]


def test_initial_presence_probe_of_an_offline_contact_reveals_nothing_available():
    h = world()
    alice = connect(h, f"{ALICE}/phone")
    bob = connect(h, f"{BOB}/pc")
    alice.feed(f"<presence type='subscribe' to='{BOB}'/>")
    bob.feed(f"<presence type='subscribed' to='{ALICE}'/>")
    bob.logout()
    again = h.login(f"{ALICE}/desk", available=False)
    again.feed("<presence/>")
    assert [p for p in again.take() if p.getAttribute("from", "").startswith(BOB)
            and p.getAttribute("type") is None] == []


def test_initial_presence_is_broadcast_to_subscribers_and_own_resources_only():
    h = world()
    alice = connect(h, f"{ALICE}/phone")
    other = connect(h, f"{ALICE}/laptop", interested=False)
    idle = connect(h, f"{ALICE}/tablet", available=False)
    bob = connect(h, f"{BOB}/pc")          # subscribed to alice (from)
    carol = connect(h, f"{CAROL}/pc")      # no relation
    dave = connect(h, "dave@localhost/pc")  # alice subscribed to dave, not the reverse
    bob.feed(f"<presence type='subscribe' to='{ALICE}'/>")
    alice.feed(f"<presence type='subscribed' to='{BOB}'/>")
    alice.feed("<presence type='subscribe' to='dave@localhost'/>")
    dave.feed(f"<presence type='subscribed' to='{ALICE}'/>")
    clear(alice, other, idle, bob, carol, dave)
    fresh_one = h.login(f"{ALICE}/desk", available=False)
    fresh_one.feed("<presence><status>hi</status></presence>")
    assert presences(bob.take()) == [(f"{ALICE}/desk", None)]
    assert presences(other.take()) == [(f"{ALICE}/desk", None)]
    assert presences(alice.take()) == [(f"{ALICE}/desk", None)]
    assert (f"{ALICE}/desk", None) in presences(fresh_one.take())  # §4.2.2: itself too
    assert idle.take() == []
    assert carol.take() == []
    assert dave.take() == []


def test_broadcast_keeps_the_presence_payload():
    h = world()
    s = mutual(h)
    s["alice/phone"].feed("<presence><show>away</show><status>lunch</status>"
                          "<priority>3</priority></presence>")
    (p,) = s["bob/pc"].take()
    assert p["from"] == f"{ALICE}/phone"
    assert str(next(p.elements(ns.CLIENT, "show"))) == "away"
    assert str(next(p.elements(ns.CLIENT, "status"))) == "lunch"
    assert str(next(p.elements(ns.CLIENT, "priority"))) == "3"


def test_presence_update_is_broadcast_without_probing_again():
    h = world()
    s = mutual(h)
    s["alice/phone"].feed("<presence><show>away</show></presence>")
    got = take_all(s)
    assert presences(got["bob/pc"]) == [(f"{ALICE}/phone", None)]
    assert presences(got["bob/mobile"]) == [(f"{ALICE}/phone", None)]
    assert presences(got["bob/web"]) == []
    assert presences(got["alice/laptop"]) == [(f"{ALICE}/phone", None)]
    # itself, and nothing from bob (no new probe on an update)
    assert presences(got["alice/phone"]) == [(f"{ALICE}/phone", None)]
    assert got["alice/tablet"] == []


def test_presence_update_does_not_redeliver_pending_requests():
    h = world()
    alice = connect(h, f"{ALICE}/phone")
    bob = connect(h, f"{BOB}/pc")
    alice.feed(f"<presence type='subscribe' to='{BOB}'/>")
    bob.take()
    bob.feed("<presence><show>away</show></presence>")
    assert [p for p in bob.take() if p.getAttribute("type") == "subscribe"] == []


# -- §4.5 unavailable presence -------------------------------------------------------------


def test_explicit_unavailable_reaches_subscribers_and_own_other_resources():
    h = world()
    s = mutual(h)
    carol = connect(h, f"{CAROL}/pc")
    s["alice/laptop"].feed("<presence type='unavailable'><status>bye</status></presence>")
    got = take_all(s)
    for name in ("bob/pc", "bob/mobile", "alice/phone"):
        (p,) = [x for x in got[name] if x.name == "presence"]
        assert (p["from"], p["type"]) == (f"{ALICE}/laptop", "unavailable")
        assert str(next(p.elements(ns.CLIENT, "status"))) == "bye"
    assert got["bob/web"] == [] and got["alice/tablet"] == []
    assert carol.take() == []


def test_dropped_session_broadcasts_unavailable_for_it():
    h = world()
    s = mutual(h)
    carol = connect(h, f"{CAROL}/pc")
    s["alice/laptop"].logout()
    got = take_all(s)
    for name in ("bob/pc", "bob/mobile", "alice/phone"):
        assert presences(got[name]) == [(f"{ALICE}/laptop", "unavailable")], name
    assert got["bob/web"] == [] and got["alice/tablet"] == []
    assert carol.take() == []


def test_logout_after_explicit_unavailable_sends_no_second_unavailable():
    h = world()
    s = mutual(h)
    s["alice/laptop"].feed("<presence type='unavailable'/>")
    take_all(s)
    s["alice/laptop"].logout()
    got = take_all(s)
    assert presences(got["bob/pc"]) == [] and presences(got["alice/phone"]) == []


def test_logout_of_a_never_available_session_sends_nothing():
    h = world()
    s = mutual(h)
    s["alice/tablet"].logout()
    got = take_all(s)
    assert all(presences(v) == [] for v in got.values())


def test_replaced_session_is_announced_unavailable():
    # RFC 6120 §7.7.2.2 terminates the older session on a resource conflict;
    # RFC 6121 §4.5.2 then has its unavailable presence broadcast.
    h = world()
    s = mutual(h)
    replacement = h.login(f"{ALICE}/laptop", available=False)
    got = take_all(s)
    assert (f"{ALICE}/laptop", "unavailable") in presences(got["bob/pc"])
    assert replacement.available is False


def test_contacts_presence_stops_after_user_logs_out_and_back_without_initial_presence():
    h = world()
    s = mutual(h)
    s["alice/phone"].logout()
    back = h.login(f"{ALICE}/phone", available=False)
    s["bob/pc"].feed("<presence><show>away</show></presence>")
    assert back.take() == []  # not available: no presence broadcasts to it


# -- §4.6 directed presence -----------------------------------------------------------------


def test_directed_presence_reaches_a_non_subscriber_and_logout_tells_it_unavailable():
    h = world()
    s = mutual(h)
    carol = connect(h, f"{CAROL}/pc")
    s["alice/phone"].feed(f"<presence to='{CAROL}'><show>chat</show></presence>")
    (p,) = carol.take()
    assert (p["from"], p.getAttribute("type")) == (f"{ALICE}/phone", None)
    assert presences(s["bob/pc"].take()) == []  # directed, not broadcast
    s["alice/phone"].logout()
    assert presences(carol.take()) == [(f"{ALICE}/phone", "unavailable")]


def test_directed_presence_recipient_hears_the_broadcast_unavailable():
    h = world()
    alice = connect(h, f"{ALICE}/phone")
    carol = connect(h, f"{CAROL}/pc")
    alice.feed(f"<presence to='{CAROL}'/>")
    carol.take()
    alice.feed("<presence type='unavailable'/>")
    assert presences(carol.take()) == [(f"{ALICE}/phone", "unavailable")]
    alice.logout()
    assert carol.take() == []  # only once


def test_directed_unavailable_ends_the_directed_presence():
    h = world()
    alice = connect(h, f"{ALICE}/phone")
    carol = connect(h, f"{CAROL}/pc")
    alice.feed(f"<presence to='{CAROL}'/>")
    alice.feed(f"<presence to='{CAROL}' type='unavailable'/>")
    assert presences(carol.take()) == [(f"{ALICE}/phone", None), (f"{ALICE}/phone", "unavailable")]
    alice.logout()
    assert carol.take() == []


def test_directed_presence_to_a_full_jid_and_its_unavailable_go_to_that_resource_only():
    h = world()
    alice = connect(h, f"{ALICE}/phone")
    pc = connect(h, f"{CAROL}/pc")
    mobile = connect(h, f"{CAROL}/mobile")
    alice.feed(f"<presence to='{CAROL}/pc'/>")
    assert presences(pc.take()) == [(f"{ALICE}/phone", None)]
    assert mobile.take() == []
    alice.logout()
    assert presences(pc.take()) == [(f"{ALICE}/phone", "unavailable")]
    assert mobile.take() == []


def test_directed_presence_to_a_remote_entity_is_followed_by_unavailable_at_logout():
    h = world()
    sent = remote(h)
    alice = connect(h, f"{ALICE}/phone")
    alice.feed(f"<presence to='{REMOTE}/res'/>")
    alice.logout()
    got = [(p["to"], p.getAttribute("type")) for p in sent if p.name == "presence"]
    assert got == [(f"{REMOTE}/res", None), (f"{REMOTE}/res", "unavailable")]
    assert all(p["from"] == f"{ALICE}/phone" for p in sent)


# -- bounds: directed presence targets, the subscription rate window --------------------------


def directed_to_remote(session, count, start=0):
    for n in range(start, start + count):
        session.feed(f"<presence to='{REMOTE}/{n}' id='d{n}'/>")


def test_directed_presence_to_a_new_target_beyond_max_directed_gets_resource_constraint():
    """The report: 100 000 targets per session, then an 800 ms stall at
    logout. Past max_directed a new target is refused with a presence error
    (resource-constraint, wait) to the sender and is not routed."""
    h = world(max_directed=3)
    sent = remote(h)
    alice = connect(h, f"{ALICE}/phone")
    directed_to_remote(alice, 3)
    assert alice.take() == []
    directed_to_remote(alice, 1, start=3)
    reply = only(alice)
    assert reply.name == "presence" and reply["id"] == "d3"
    assert reply["to"] == f"{ALICE}/phone" and reply["from"] == f"{REMOTE}/3"
    assert error_condition(reply) == "resource-constraint"
    assert next(reply.elements(ns.CLIENT, "error"))["type"] == "wait"
    assert [p["to"] for p in sent] == [f"{REMOTE}/{n}" for n in range(3)]
    # Only the targets that got presence hear it end.
    del sent[:]
    alice.logout()
    assert sorted((p["to"], p.getAttribute("type")) for p in sent) == [
        (f"{REMOTE}/{n}", "unavailable") for n in range(3)]


def test_directed_presence_cap_boundary_and_what_still_passes():
    h = world(max_directed=2)
    sent = remote(h)
    s = mutual(h)  # alice and bob subscribed both ways
    alice = s["alice/phone"]
    directed_to_remote(alice, 2)
    # Again to a known target (a status change to a room): not a new target.
    alice.feed(f"<presence to='{REMOTE}/1' id='again'><show>away</show></presence>")
    # To a subscriber, who hears the broadcasts anyway, and to one's own
    # resources: nothing to remember, nothing to refuse.
    alice.feed(f"<presence to='{BOB}/pc' id='sub'/>")
    alice.feed(f"<presence to='{ALICE}/laptop' id='own'/>")
    assert [p for p in alice.take() if p.getAttribute("type") == "error"] == []
    # An unavailable ends a directed presence and frees its place.
    alice.feed(f"<presence to='{REMOTE}/0' type='unavailable'/>")
    directed_to_remote(alice, 1, start=2)
    assert [p for p in alice.take() if p.getAttribute("type") == "error"] == []
    directed_to_remote(alice, 1, start=3)
    assert error_condition(only(alice)) == "resource-constraint"
    assert [p["to"] for p in sent if p.getAttribute("type") is None] == [
        f"{REMOTE}/0", f"{REMOTE}/1", f"{REMOTE}/1", f"{REMOTE}/2"]
    # The bound is per session: another resource has its own.
    s["alice/laptop"].feed(f"<presence to='{REMOTE}/9'/>")
    assert [p for p in s["alice/laptop"].take() if p.getAttribute("type") == "error"] == []


def test_directed_presence_cap_defaults_to_1000_per_session():
    h = world()
    sent = remote(h)
    alice = connect(h, f"{ALICE}/phone")
    directed_to_remote(alice, 1000)
    assert alice.take() == [] and len(sent) == 1000
    directed_to_remote(alice, 1, start=1000)
    assert error_condition(only(alice)) == "resource-constraint"
    assert len(sent) == 1000


@pytest.mark.parametrize("value", ["0", "-5", "many"])
def test_max_directed_must_be_a_positive_number(value):
    with pytest.raises(ConfigError, match="max_directed: (must be|expected)"):
        world(max_directed=value)


def test_the_subscription_rate_window_forgets_users_whose_window_has_passed():
    """One entry per user who sent a request within the window, no more: the
    record of who asked when does not grow with everyone who ever asked."""
    h = world(subscription_rate_limit=2, subscription_rate_period=60)
    component = h.component("presence")
    component.clock = task.Clock()  # the rate window runs on the component's clock
    component.clock.advance(1000)
    users = [connect(h, f"u{n}@localhost/pc") for n in range(5)]
    for user in users:
        user.feed(f"<presence type='subscribe' to='{ALICE}'/>")
    assert len(component._requests) == 5
    component.clock.advance(61)
    users[0].feed(f"<presence type='subscribe' to='{BOB}'/>")
    assert list(component._requests) == ["u0@localhost"]
    # The limit itself still holds within a window, and lifts after it.
    users[0].feed(f"<presence type='subscribe' to='{CAROL}'/>")
    users[0].take()
    users[0].feed("<presence type='subscribe' to='dave@localhost' id='third'/>")
    assert error_condition(only(users[0])) == "resource-constraint"
    component.clock.advance(61)
    users[0].feed("<presence type='subscribe' to='dave@localhost' id='later'/>")
    assert [p for p in users[0].take() if p.getAttribute("type") == "error"] == []


# -- §4.3 probes ---------------------------------------------------------------------------


def test_probe_from_a_non_subscriber_is_answered_unsubscribed():
    h = world()
    sent = remote(h)
    connect(h, f"{ALICE}/phone")
    h.router.route(parse(f"<presence type='probe' from='{REMOTE}/x' to='{ALICE}'/>"))
    assert [(p["from"], p["to"], p.getAttribute("type")) for p in sent] == [
        (ALICE, REMOTE, "unsubscribed")]


def test_probe_from_a_local_non_subscriber_reveals_no_presence():
    h = world()
    connect(h, f"{ALICE}/phone")
    carol = connect(h, f"{CAROL}/pc")
    seen = spy(h)
    carol.feed(f"<presence type='probe' to='{ALICE}'/>")
    assert [p for p in carol.take() if p.getAttribute("from", "").startswith(ALICE)
            and p.getAttribute("type") in (None, "unavailable")] == []
    answers = [(p["from"], p["to"], p.getAttribute("type")) for p in seen
               if p.getAttribute("to", "").startswith(CAROL)]
    assert answers == [(ALICE, CAROL, "unsubscribed")]


def test_probe_from_a_remote_subscriber_gets_each_available_resource():
    h = world()
    sent = remote(h)
    alice = connect(h, f"{ALICE}/phone")
    connect(h, f"{ALICE}/laptop", show="dnd")
    connect(h, f"{ALICE}/tablet", available=False)
    h.router.route(parse(f"<presence type='subscribe' from='{REMOTE}' to='{ALICE}'/>"))
    alice.feed(f"<presence type='subscribed' to='{REMOTE}'/>")
    sent.clear()
    h.router.route(parse(f"<presence type='probe' from='{REMOTE}/x' to='{ALICE}'/>"))
    got = sorted((p["from"], p["to"], p.getAttribute("type")) for p in sent)
    assert got == [(f"{ALICE}/laptop", f"{REMOTE}/x", None), (f"{ALICE}/phone", f"{REMOTE}/x", None)]


def test_remote_subscription_flow_routes_stamped_stanzas_and_presence():
    h = world()
    sent = remote(h)
    alice = connect(h, f"{ALICE}/phone")
    alice.feed(f"<presence type='subscribe' to='{REMOTE}'/>")
    (request,) = sent
    assert (request["from"], request["to"], request["type"]) == (ALICE, REMOTE, "subscribe")
    alice.take()
    h.router.route(parse(f"<presence type='subscribed' from='{REMOTE}' to='{ALICE}'/>"))
    assert pushed(alice.take(), ALICE) == [{"jid": REMOTE, "subscription": "to"}]
    h.router.route(parse(f"<presence from='{REMOTE}/x' to='{ALICE}'/>"))
    assert presences(alice.take()) == [(f"{REMOTE}/x", None)]


def test_presence_broadcast_reaches_remote_subscribers():
    h = world()
    sent = remote(h)
    alice = connect(h, f"{ALICE}/phone")
    h.router.route(parse(f"<presence type='subscribe' from='{REMOTE}' to='{ALICE}'/>"))
    alice.feed(f"<presence type='subscribed' to='{REMOTE}'/>")
    sent.clear()
    alice.feed("<presence><show>away</show></presence>")
    assert [(p["from"], p["to"], p.getAttribute("type")) for p in sent] == [
        (f"{ALICE}/phone", REMOTE, None)]
    sent.clear()
    alice.logout()
    assert [(p["from"], p["to"], p.getAttribute("type")) for p in sent] == [
        (f"{ALICE}/phone", REMOTE, "unavailable")]


# -- priority -------------------------------------------------------------------------------


def chat(sender, to, mid="m1"):
    sender.feed(f"<message type='chat' to='{to}' id='{mid}'><body>hi</body></message>")


def test_presence_update_priority_decides_which_resource_gets_bare_jid_chat():
    h = world()
    carol = connect(h, f"{CAROL}/pc")
    phone = connect(h, f"{ALICE}/phone")
    laptop = connect(h, f"{ALICE}/laptop")
    phone.feed("<presence><priority>5</priority></presence>")
    laptop.feed("<presence><priority>1</priority></presence>")
    clear(phone, laptop)
    chat(carol, ALICE)
    assert [m.name for m in phone.take()] == ["message"] and laptop.take() == []
    laptop.feed("<presence><priority>10</priority></presence>")
    clear(phone, laptop)
    chat(carol, ALICE, "m2")
    assert [m.name for m in laptop.take()] == ["message"] and phone.take() == []


def test_presence_update_without_priority_resets_it_to_zero():
    h = world()
    phone = connect(h, f"{ALICE}/phone")
    phone.feed("<presence><priority>9</priority></presence>")
    phone.feed("<presence><show>away</show></presence>")
    assert phone.priority == 0


def test_negative_priority_update_stops_bare_jid_chat_but_not_presence():
    h = world()
    s = mutual(h)
    carol = connect(h, f"{CAROL}/pc")
    s["alice/phone"].feed("<presence><priority>-1</priority></presence>")
    s["alice/laptop"].feed("<presence><priority>-1</priority></presence>")
    assert presences(s["bob/pc"].take()) == [(f"{ALICE}/phone", None), (f"{ALICE}/laptop", None)]
    take_all(s)
    chat(carol, ALICE)
    assert s["alice/phone"].take() == [] and s["alice/laptop"].take() == []
    # still available: bob's presence reaches it
    s["bob/pc"].feed("<presence><show>away</show></presence>")
    assert presences(s["alice/phone"].take()) == [(f"{BOB}/pc", None)]


# -- presence errors ----------------------------------------------------------------------------


def test_presence_error_to_a_full_jid_is_delivered_to_that_resource():
    h = world()
    phone = connect(h, f"{ALICE}/phone")
    laptop = connect(h, f"{ALICE}/laptop")
    bob = connect(h, f"{BOB}/pc")
    bob.feed(f"<presence type='error' to='{ALICE}/phone'><error type='cancel'>"
             f"<remote-server-not-found xmlns='{ns.STANZA_ERRORS}'/></error></presence>")
    (p,) = phone.take()
    assert p["type"] == "error" and p["from"] == f"{BOB}/pc"
    assert error_condition(p) == "remote-server-not-found"
    assert laptop.take() == []


def test_presence_error_changes_no_subscription_state():
    h = world()
    s = mutual(h)
    before = (stored(h, ALICE), stored(h, BOB))
    s["bob/pc"].feed(f"<presence type='error' to='{ALICE}/phone'><error type='cancel'>"
                     f"<service-unavailable xmlns='{ns.STANZA_ERRORS}'/></error></presence>")
    assert (stored(h, ALICE), stored(h, BOB)) == before
    (delivered,) = s["alice/phone"].take()
    assert isinstance(delivered, domish.Element)
    assert error_condition(delivered) == "service-unavailable"
    # presence keeps flowing both ways
    s["bob/pc"].feed("<presence><show>away</show></presence>")
    assert presences(s["alice/phone"].take()) == [(f"{BOB}/pc", None)]


# -- found in review ------------------------------------------------------------------------


def test_directed_presence_of_a_never_available_session_ends_when_it_leaves():
    """§4.6.3: a session that only ever sent directed presence (joined a room,
    say) still tells that entity it is gone."""
    h = world()
    alice = connect(h, ALICE + "/phone", available=False)
    carol = connect(h, CAROL + "/home")
    alice.feed(f"<presence to='{CAROL}/home'/>")
    assert presences(carol.take()) == [(ALICE + "/phone", None)]
    alice.logout()
    assert presences(carol.take()) == [(ALICE + "/phone", "unavailable")]


def test_directed_presence_ends_on_explicit_unavailable_without_a_broadcast():
    h = world()
    alice = connect(h, ALICE + "/phone", available=False)
    carol = connect(h, CAROL + "/home")
    alice.feed(f"<presence to='{CAROL}/home'/>")
    carol.take()
    alice.feed("<presence type='unavailable'/>")
    assert presences(carol.take()) == [(ALICE + "/phone", "unavailable")]


def test_a_kept_subscription_request_is_kept_whole_and_delivered_as_it_came():
    """As Prosody: a request waiting for an offline contact is stored whole —
    its id and every child a client put in it (a status, an XEP-0172 nick, an
    XEP-0379 pre-authentication token, anything else) — and delivered at the
    contact's next initial presence exactly as it came, from the bare JID."""
    h = world()
    h.add_user(BOB)
    alice = connect(h, ALICE + "/phone")
    alice.feed(f"<presence type='subscribe' to='{BOB}' id='req1'><status>{'s' * 5000}</status>"
               f"<nick xmlns='{ns.NICK}'>Al</nick>"
               f"<preauth xmlns='urn:xmpp:pars:0' token='f00b4r'/>"
               f"<junk xmlns='urn:example:junk' a='1'>{'j' * 5000}<deep/></junk></presence>")
    bob = h.login(BOB + "/pc", available=False)
    bob.feed("<presence/>")
    (request,) = [p for p in bob.take() if p.getAttribute("type") == "subscribe"]
    assert request.attributes == {"from": ALICE, "to": BOB, "type": "subscribe", "id": "req1"}
    assert [(c.uri, c.name) for c in request.elements()] == [
        (ns.CLIENT, "status"), (ns.NICK, "nick"), ("urn:xmpp:pars:0", "preauth"),
        ("urn:example:junk", "junk")]
    assert str(next(request.elements(ns.CLIENT, "status"))) == "s" * 5000
    assert next(request.elements("urn:xmpp:pars:0", "preauth"))["token"] == "f00b4r"
    junk = next(request.elements("urn:example:junk", "junk"))
    assert junk["a"] == "1" and str(junk) == "j" * 5000
    assert [c.name for c in junk.elements()] == ["deep"]


def test_a_kept_subscription_request_counts_whole_against_the_roster_bytes():
    """Kept whole, a request counts whole (entry_size over its stanza): one
    too big for the room left in the contact's roster is refused with
    resource-constraint, and nothing is stored or acknowledged."""
    from xmppd.components.roster import entry_size
    h = Harness(["roster", "presence", "messaging"],
                options={"component:roster": {"max_size": "6000"}})
    h.add_user(BOB)
    alice = connect(h, ALICE + "/phone")
    seen = spy(h)
    alice.feed(f"<presence type='subscribe' to='{BOB}' id='big'>"
               f"<x xmlns='urn:example:x'>{'x' * 6000}</x></presence>")
    answers = [p for p in seen if p.getAttribute("to") == ALICE]
    assert [(p.getAttribute("type"), p.getAttribute("id")) for p in answers] == [("error", "big")]
    assert error_condition(answers[0]) == "resource-constraint"
    assert ALICE not in stored(h, BOB)
    alice.feed(f"<presence type='subscribe' to='{BOB}' id='small'>"
               f"<x xmlns='urn:example:x'>{'x' * 4000}</x></presence>")
    kept = stored(h, BOB)[ALICE]["pending_in"]
    assert "x" * 4000 in kept and "small" in kept
    assert result_of(h.component("roster").load(BOB)).bytes == entry_size(ALICE, pending=kept)


def test_a_repeated_request_keeps_the_first_one_waiting():
    """As Prosody: while a request waits, a repeated one is acknowledged but
    neither delivered nor stored over it."""
    h = world()
    h.add_user(BOB)
    alice = connect(h, ALICE + "/phone")
    alice.feed(f"<presence type='subscribe' to='{BOB}' id='first'/>")
    alice.feed(f"<presence type='subscribe' to='{BOB}' id='second'/>")
    bob = h.login(BOB + "/pc", available=False)
    bob.feed("<presence/>")
    (request,) = [p for p in bob.take() if p.getAttribute("type") == "subscribe"]
    assert request["id"] == "first"


def test_probe_answer_carries_a_delay_stamped_when_the_presence_was_received():
    """As Prosody: each available resource's presence answers a probe with an
    XEP-0203 delay from the user's domain, stamped when the server received
    that presence (not when it answers)."""
    clock = task.Clock()
    clock.advance(1_700_000_000)
    h = Harness(["roster", "presence", "messaging"], clock=clock)
    sent = remote(h)
    alice = connect(h, f"{ALICE}/phone", show="away")
    h.router.route(parse(f"<presence type='subscribe' from='{REMOTE}' to='{ALICE}'/>"))
    alice.feed(f"<presence type='subscribed' to='{REMOTE}'/>")
    clock.advance(3600)
    sent.clear()
    h.router.route(parse(f"<presence type='probe' from='{REMOTE}/x' to='{ALICE}'/>"))
    (answer,) = sent
    assert (answer["from"], answer["to"], answer.getAttribute("type")) == (
        f"{ALICE}/phone", f"{REMOTE}/x", None)
    assert str(next(answer.elements(ns.CLIENT, "show"))) == "away"
    (delay,) = list(answer.elements(ns.DELAY, "delay"))
    assert delay.attributes == {"from": "localhost", "stamp": "2023-11-14T22:13:20Z"}
    # the session's own stanza is not changed by the stamp
    assert list(alice.presence.elements(ns.DELAY, "delay")) == []
    alice.feed("<presence><show>dnd</show></presence>")
    sent.clear()
    h.router.route(parse(f"<presence type='probe' from='{REMOTE}/x' to='{ALICE}'/>"))
    (answer,) = sent
    assert next(answer.elements(ns.DELAY, "delay"))["stamp"] == "2023-11-14T23:13:20Z"


def test_a_pending_request_from_a_blocked_jid_is_not_redelivered():
    """XEP-0191 §3.3: nothing from a blocked JID reaches the user, including a
    subscription request that waited for them."""
    h = Harness(["roster", "presence", "messaging", "blocking"])
    alice = connect(h, ALICE + "/phone")
    alice.feed(f"<presence type='subscribe' to='{BOB}'/>")  # bob is offline
    bob = h.login(BOB + "/pc", available=False)
    bob.feed(f"<iq type='set' id='b'><block xmlns='urn:xmpp:blocking'><item jid='{ALICE}'/>"
             "</block></iq>")
    bob.take()
    bob.feed("<presence/>")
    assert [p for p in bob.take() if p.getAttribute("type") == "subscribe"] == []
