"""RFC 6121 §2 (the roster) and XEP-0237 (roster versioning), through the
in-memory harness with the roster, presence and messaging components.

What is pinned here is what a client sees: results, errors, roster pushes to
*interested* resources (those that asked for the roster, §2.2), and what
the contact's side sees when an item is removed (§2.5.2). After every refused
request the stored roster must be exactly what it was before.
"""

import pytest
from twisted.words.xish import domish

from xmppd import ns
from xmppd.components.roster import entry_size
from xmppd.config import ConfigError
from xmppd.testing import Harness, error_condition, only, parse, result_of

ALICE = "alice@localhost"
BOB = "bob@localhost"
CAROL = "carol@localhost"


# -- helpers ------------------------------------------------------------------------


def harness(max_items=None, cache_size=None, max_size=None):
    section = {}
    if max_items is not None:
        section["max_items"] = str(max_items)
    if cache_size is not None:
        section["cache_size"] = str(cache_size)
    if max_size is not None:
        section["max_size"] = str(max_size)
    options = {"component:roster": section} if section else {}
    return Harness(["roster", "presence", "messaging"], options=options)


def stored(h, user=ALICE):
    """The roster as the store holds it (the meta entry included)."""
    return result_of(h.component("roster").store["roster"].items(user))


def listed(h, user=ALICE):
    """The contacts a roster get would list, with their attributes."""
    roster = result_of(h.component("roster").load(user))
    return {item.jid: item for item in roster.listed()}


def ask_roster(session, iq_id="get", ver=None):
    """Roster get; returns everything the session received in answer."""
    ver_attr = "" if ver is None else f" ver='{ver}'"
    session.feed(f"<iq type='get' id='{iq_id}'><query xmlns='{ns.ROSTER}'{ver_attr}/></iq>")
    return session.take()


def interested(h, full_jid):
    """A connected resource that requested the roster but sent no presence."""
    session = h.login(full_jid, available=False)
    (result,) = ask_roster(session)
    assert result["type"] == "result"
    return session


def set_item(session, item_xml, iq_id="set"):
    session.feed(f"<iq type='set' id='{iq_id}'><query xmlns='{ns.ROSTER}'>{item_xml}</query></iq>")


def is_result(stanza, iq_id):
    return (stanza.name == "iq" and stanza.getAttribute("type") == "result"
            and stanza.getAttribute("id") == iq_id)


def push_item(stanza, user=ALICE):
    """The single <item/> of a roster push, after checking it is a well-formed push."""
    assert stanza.name == "iq" and stanza.getAttribute("type") == "set", stanza.toXml()
    # §2.1.6: a push comes from the user's bare JID (clients ignore any other).
    assert stanza.getAttribute("from") in (None, user), stanza.toXml()
    assert stanza.getAttribute("id")
    (query,) = [c for c in stanza.elements() if isinstance(c, domish.Element)]
    assert (query.uri, query.name) == (ns.ROSTER, "query")
    items = list(query.elements(ns.ROSTER, "item"))
    assert len(items) == 1, stanza.toXml()
    return items[0]


def pushes(stanzas, user=ALICE):
    return [push_item(s, user) for s in stanzas
            if s.name == "iq" and s.getAttribute("type") == "set"]


def describe(item):
    """An <item/> as a comparable dict (absent attributes left out)."""
    out = {k: item[k] for k in ("jid", "name", "subscription", "ask", "approved")
           if item.hasAttribute(k)}
    groups = sorted(str(g) for g in item.elements(ns.ROSTER, "group"))
    if groups:
        out["groups"] = groups
    return out


def items_of(result):
    (query,) = [c for c in result.elements() if isinstance(c, domish.Element)]
    assert (query.uri, query.name) == (ns.ROSTER, "query")
    return {i["jid"]: describe(i) for i in query.elements(ns.ROSTER, "item")}


def assert_refused(h, session, item_xml, condition, user=ALICE, iq_id="bad"):
    """A roster set is answered with ``condition``, no push, nothing stored."""
    before = stored(h, user)
    set_item(session, item_xml, iq_id)
    reply = only(session)
    assert reply.getAttribute("id") == iq_id
    assert error_condition(reply) == condition
    assert stored(h, user) == before


def subscribe_both(h, a, b):
    """Make the users of sessions ``a`` and ``b`` subscribed both ways (§3.1)."""
    a.feed(f"<presence type='subscribe' to='{b.bare}'/>")
    b.feed(f"<presence type='subscribed' to='{a.bare}'/>")
    b.feed(f"<presence type='subscribe' to='{a.bare}'/>")
    a.feed(f"<presence type='subscribed' to='{b.bare}'/>")
    assert listed(h, a.bare)[b.bare].subscription == "both"
    assert listed(h, b.bare)[a.bare].subscription == "both"


# -- §2.2 roster get --------------------------------------------------------------------


def test_roster_get_on_an_empty_roster_returns_an_empty_query():
    h = harness()
    alice = h.login(f"{ALICE}/phone", available=False)
    (result,) = ask_roster(alice, "r1")
    assert is_result(result, "r1")
    assert result["to"] == f"{ALICE}/phone"
    assert items_of(result) == {}


def test_roster_get_without_ver_carries_the_version():
    # As Prosody's mod_roster: every full roster result says its version, so
    # a client that did not ask learns it and can sync from it next time.
    h = harness()
    alice = h.login(f"{ALICE}/phone", available=False)
    (result,) = ask_roster(alice)
    ver = result.firstChildElement().getAttribute("ver")
    assert ver == result_of(h.component("roster").load(ALICE)).ver
    set_item(alice, f"<item jid='{BOB}'/>")
    alice.take()
    (result,) = ask_roster(alice)
    newer = result.firstChildElement().getAttribute("ver")
    assert newer and newer != ver
    (result,) = ask_roster(alice, ver=newer)
    assert is_result(result, "get") and list(result.elements()) == []


def test_roster_get_with_an_empty_ver_gets_the_full_roster_with_its_version():
    h = harness()
    alice = h.login(f"{ALICE}/phone", available=False)
    set_item(alice, f"<item jid='{BOB}'/>")
    alice.take()
    (result,) = ask_roster(alice, ver="")
    assert result.firstChildElement().getAttribute("ver")
    assert list(items_of(result)) == [BOB]


def test_roster_get_lists_items_with_names_and_groups():
    h = harness()
    alice = h.login(f"{ALICE}/phone", available=False)
    set_item(alice, f"<item jid='{BOB}' name='Bob'><group>Friends</group><group>Work</group></item>")
    set_item(alice, f"<item jid='{CAROL}'/>")
    set_item(alice, "<item jid='dave@example.org' name='Dave'/>")
    alice.take()
    (result,) = ask_roster(alice)
    assert items_of(result) == {
        BOB: {"jid": BOB, "name": "Bob", "subscription": "none", "groups": ["Friends", "Work"]},
        CAROL: {"jid": CAROL, "subscription": "none"},
        "dave@example.org": {"jid": "dave@example.org", "name": "Dave", "subscription": "none"},
    }


def test_roster_get_addressed_to_own_bare_jid_is_served():
    h = harness()
    alice = h.login(f"{ALICE}/phone", available=False)
    set_item(alice, f"<item jid='{BOB}'/>")
    alice.take()
    alice.feed(f"<iq type='get' id='own' to='{ALICE}'><query xmlns='{ns.ROSTER}'/></iq>")
    result = only(alice)
    assert is_result(result, "own")
    assert list(items_of(result)) == [BOB]


def test_roster_get_does_not_list_a_subscription_request_awaiting_an_answer():
    # §3.1.3: the contact's server does not add the requester to the roster
    # before the contact approves.
    h = harness()
    bob = h.login(f"{BOB}/pc")
    alice = h.login(f"{ALICE}/phone", available=False)
    bob.feed(f"<presence type='subscribe' to='{ALICE}'/>")
    (result,) = ask_roster(alice)
    assert items_of(result) == {}


# -- §2.3 roster set: add and update ---------------------------------------------------------


def test_roster_add_answers_empty_result_then_pushes_to_every_interested_resource():
    # Prosody's order (RFC 6121 §2.3.2 leaves it open): the result, then the push.
    h = harness()
    phone = interested(h, f"{ALICE}/phone")
    laptop = interested(h, f"{ALICE}/laptop")
    set_item(phone, f"<item jid='{BOB}' name='Bob'><group>Friends</group></item>", "add1")
    got = phone.take()
    assert len(got) == 2, [e.toXml() for e in got]
    result, push = got
    assert describe(push_item(push)) == {
        "jid": BOB, "name": "Bob", "subscription": "none", "groups": ["Friends"]}
    assert push["to"] == f"{ALICE}/phone"
    assert is_result(result, "add1")
    assert list(result.elements()) == []
    (other,) = laptop.take()
    assert describe(push_item(other)) == describe(push_item(push))
    assert other["to"] == f"{ALICE}/laptop"


def test_roster_push_does_not_reach_resources_that_never_asked_for_the_roster():
    h = harness()
    phone = interested(h, f"{ALICE}/phone")
    quiet = h.login(f"{ALICE}/quiet", available=False)      # connected, no roster get
    chatty = h.login(f"{ALICE}/chatty")                      # available, no roster get
    set_item(phone, f"<item jid='{BOB}'/>")
    assert len(pushes(phone.take())) == 1
    assert quiet.take() == []
    assert chatty.take() == []


def test_roster_push_does_not_reach_other_users():
    h = harness()
    phone = interested(h, f"{ALICE}/phone")
    bob = interested(h, f"{BOB}/pc")
    set_item(phone, f"<item jid='{BOB}' name='Bob'/>")
    assert bob.take() == []


def test_roster_add_is_stored():
    h = harness()
    alice = interested(h, f"{ALICE}/phone")
    set_item(alice, f"<item jid='{BOB}' name='Bob'><group>Friends</group></item>")
    entry = stored(h)[BOB]
    assert entry["name"] == "Bob" and entry["groups"] == ["Friends"]
    assert entry["subscription"] == "none"


def test_roster_update_replaces_name_and_groups_and_pushes_the_new_item():
    h = harness()
    phone = interested(h, f"{ALICE}/phone")
    laptop = interested(h, f"{ALICE}/laptop")
    set_item(phone, f"<item jid='{BOB}' name='Bob'><group>Friends</group></item>")
    phone.take(), laptop.take()
    set_item(phone, f"<item jid='{BOB}' name='Robert'><group>Work</group><group>Chess</group></item>",
             "upd")
    result, push = phone.take()
    assert is_result(result, "upd")
    expected = {"jid": BOB, "name": "Robert", "subscription": "none", "groups": ["Chess", "Work"]}
    assert describe(push_item(push)) == expected
    (other,) = laptop.take()
    assert describe(push_item(other)) == expected
    (result,) = ask_roster(phone)
    assert items_of(result) == {BOB: expected}


def test_roster_update_without_name_or_groups_clears_them():
    h = harness()
    alice = interested(h, f"{ALICE}/phone")
    set_item(alice, f"<item jid='{BOB}' name='Bob'><group>Friends</group></item>")
    alice.take()
    set_item(alice, f"<item jid='{BOB}'/>")
    (push,) = pushes(alice.take())
    assert describe(push) == {"jid": BOB, "subscription": "none"}


def test_roster_update_keeps_the_subscription_state():
    h = harness()
    alice = interested(h, f"{ALICE}/phone")
    bob = h.login(f"{BOB}/pc")
    alice.feed(f"<presence type='subscribe' to='{BOB}'/>")
    bob.feed(f"<presence type='subscribed' to='{ALICE}'/>")
    alice.take()
    set_item(alice, f"<item jid='{BOB}' name='Bob'><group>Friends</group></item>")
    (push,) = pushes(alice.take())
    assert describe(push) == {"jid": BOB, "name": "Bob", "subscription": "to",
                              "groups": ["Friends"]}


def test_roster_set_may_repeat_the_current_subscription():
    h = harness()
    alice = interested(h, f"{ALICE}/phone")
    set_item(alice, f"<item jid='{BOB}' subscription='none' name='Bob'/>", "same")
    result, push = alice.take()
    assert is_result(result, "same")
    assert describe(push_item(push))["name"] == "Bob"


def test_roster_set_jid_is_normalised():
    h = harness()
    alice = interested(h, f"{ALICE}/phone")
    set_item(alice, "<item jid='Bob@LocalHost'/>")
    (push,) = pushes(alice.take())
    assert push["jid"] == BOB
    assert BOB in stored(h)


def test_roster_set_does_not_subscribe():
    # §2.1.5: adding an item is not a subscription request.
    h = harness()
    alice = interested(h, f"{ALICE}/phone")
    bob = h.login(f"{BOB}/pc")
    set_item(alice, f"<item jid='{BOB}'/>")
    assert bob.take() == []
    assert listed(h, BOB) == {}


def test_roster_name_survives_subscription_changes():
    h = harness()
    alice = interested(h, f"{ALICE}/phone")
    bob = h.login(f"{BOB}/pc")
    set_item(alice, f"<item jid='{BOB}' name='Bob'><group>Friends</group></item>")
    alice.take()
    alice.feed(f"<presence type='subscribe' to='{BOB}'/>")
    (push,) = pushes(alice.take())
    assert describe(push) == {"jid": BOB, "name": "Bob", "subscription": "none",
                              "ask": "subscribe", "groups": ["Friends"]}
    bob.feed(f"<presence type='subscribed' to='{ALICE}'/>")
    (push,) = pushes(alice.take())
    assert describe(push) == {"jid": BOB, "name": "Bob", "subscription": "to",
                              "groups": ["Friends"]}


# -- §2.5 roster set: remove -----------------------------------------------------------------


def test_roster_remove_answers_result_then_pushes_subscription_remove():
    h = harness()
    phone = interested(h, f"{ALICE}/phone")
    laptop = interested(h, f"{ALICE}/laptop")
    set_item(phone, f"<item jid='{BOB}' name='Bob'><group>Friends</group></item>")
    phone.take(), laptop.take()
    set_item(phone, f"<item jid='{BOB}' subscription='remove'/>", "rm")
    result, push = phone.take()
    assert describe(push_item(push)) == {"jid": BOB, "subscription": "remove"}
    assert is_result(result, "rm")
    (other,) = laptop.take()
    assert describe(push_item(other)) == {"jid": BOB, "subscription": "remove"}
    (result,) = ask_roster(phone)
    assert items_of(result) == {}
    assert listed(h) == {}


def test_roster_remove_of_unknown_item_is_item_not_found_of_type_modify():
    # RFC 6121 §2.5.3's example and Prosody: type modify.
    h = harness()
    alice = interested(h, f"{ALICE}/phone")
    set_item(alice, f"<item jid='{CAROL}'/>")
    alice.take()
    assert_refused(h, alice, f"<item jid='{BOB}' subscription='remove'/>", "item-not-found")
    set_item(alice, f"<item jid='{BOB}' subscription='remove'/>", "again")
    (error,) = alice.take()
    assert next(error.elements(ns.CLIENT, "error"))["type"] == "modify"


def test_roster_remove_twice_is_item_not_found_the_second_time():
    h = harness()
    alice = interested(h, f"{ALICE}/phone")
    set_item(alice, f"<item jid='{BOB}'/>")
    set_item(alice, f"<item jid='{BOB}' subscription='remove'/>")
    alice.take()
    assert_refused(h, alice, f"<item jid='{BOB}' subscription='remove'/>", "item-not-found")


def test_roster_remove_of_a_mutual_contact_unsubscribes_both_ways():
    # §2.5.2: subscription both → the contact receives unsubscribe and unsubscribed.
    h = harness()
    alice = interested(h, f"{ALICE}/phone")
    alice.feed("<presence/>")
    bob = interested(h, f"{BOB}/pc")
    bob.feed("<presence/>")
    subscribe_both(h, alice, bob)
    alice.take(), bob.take()
    set_item(alice, f"<item jid='{BOB}' subscription='remove'/>", "rm")
    got = bob.take()
    types = [s.getAttribute("type") for s in got if s.name == "presence"]
    assert "unsubscribe" in types and "unsubscribed" in types
    for s in got:
        if s.name == "presence" and s.getAttribute("type") in ("unsubscribe", "unsubscribed"):
            assert s["from"] == ALICE  # bare JID, as for every subscription stanza
    # bob's roster keeps alice, with no subscription either way, and he was told
    assert describe(pushes(got, BOB)[-1]) == {"jid": ALICE, "subscription": "none"}
    assert listed(h, BOB)[ALICE].subscription == "none"
    assert listed(h) == {}


def test_roster_remove_of_a_mutual_contact_tells_the_contact_the_user_went_away():
    # §2.5.2 sends unsubscribed, which §3.2.2 accompanies with unavailable presence
    # from each of the user's available resources, sent *before* the unsubscribed.
    h = harness()
    alice = interested(h, f"{ALICE}/phone")
    alice.feed("<presence/>")
    bob = interested(h, f"{BOB}/pc")
    bob.feed("<presence/>")
    subscribe_both(h, alice, bob)
    alice.take(), bob.take()
    set_item(alice, f"<item jid='{BOB}' subscription='remove'/>")
    got = [s for s in bob.take() if s.name == "presence"]
    kinds = [(s.getAttribute("from"), s.getAttribute("type")) for s in got]
    assert (f"{ALICE}/phone", "unavailable") in kinds, kinds
    assert kinds.index((f"{ALICE}/phone", "unavailable")) < kinds.index((ALICE, "unsubscribed"))


def test_roster_remove_of_a_mutual_contact_stops_presence_both_ways():
    h = harness()
    alice = interested(h, f"{ALICE}/phone")
    alice.feed("<presence/>")
    bob = interested(h, f"{BOB}/pc")
    bob.feed("<presence/>")
    subscribe_both(h, alice, bob)
    set_item(alice, f"<item jid='{BOB}' subscription='remove'/>")
    alice.take(), bob.take()
    alice.feed("<presence><show>away</show></presence>")
    bob.feed("<presence><show>dnd</show></presence>")
    assert [s for s in bob.take() if s.getAttribute("from", "").startswith(ALICE)] == []
    assert [s for s in alice.take() if s.getAttribute("from", "").startswith(BOB)] == []


def test_roster_remove_with_only_a_subscription_to_the_contact_sends_unsubscribe_only():
    h = harness()
    alice = interested(h, f"{ALICE}/phone")
    bob = interested(h, f"{BOB}/pc")
    bob.feed("<presence/>")
    alice.feed(f"<presence type='subscribe' to='{BOB}'/>")
    bob.feed(f"<presence type='subscribed' to='{ALICE}'/>")
    alice.take(), bob.take()
    set_item(alice, f"<item jid='{BOB}' subscription='remove'/>")
    got = bob.take()
    types = [s.getAttribute("type") for s in got if s.name == "presence"]
    assert types == ["unsubscribe"]
    assert [describe(p) for p in pushes(got, BOB)] == [{"jid": ALICE, "subscription": "none"}]


def test_roster_remove_with_only_the_contact_subscribed_sends_unsubscribed_only():
    h = harness()
    alice = interested(h, f"{ALICE}/phone")
    alice.feed("<presence/>")
    bob = interested(h, f"{BOB}/pc")
    bob.feed("<presence/>")
    bob.feed(f"<presence type='subscribe' to='{ALICE}'/>")
    alice.feed(f"<presence type='subscribed' to='{BOB}'/>")
    alice.take(), bob.take()
    set_item(alice, f"<item jid='{BOB}' subscription='remove'/>")
    got = bob.take()
    types = [s.getAttribute("type") for s in got
             if s.name == "presence" and s.getAttribute("from") == ALICE]
    assert types == ["unsubscribed"]
    assert [describe(p) for p in pushes(got, BOB)] == [{"jid": ALICE, "subscription": "none"}]


def test_roster_remove_cancels_a_pending_outbound_request():
    h = harness()
    alice = interested(h, f"{ALICE}/phone")
    alice.feed(f"<presence type='subscribe' to='{BOB}'/>")  # bob is offline
    set_item(alice, f"<item jid='{BOB}' subscription='remove'/>")
    alice.take()
    # bob comes online: the cancelled request is not redelivered (§3.1.3 keeps
    # only requests still pending), and nothing about alice is on his roster.
    bob = h.login(f"{BOB}/pc", available=False)
    (result,) = ask_roster(bob)
    assert items_of(result) == {}
    bob.feed("<presence/>")
    assert [s for s in bob.take() if s.getAttribute("type") == "subscribe"] == []


def test_roster_remove_of_a_contact_without_subscription_sends_nothing_to_it():
    h = harness()
    alice = interested(h, f"{ALICE}/phone")
    bob = h.login(f"{BOB}/pc")
    set_item(alice, f"<item jid='{BOB}'/>")
    set_item(alice, f"<item jid='{BOB}' subscription='remove'/>")
    assert bob.take() == []


def test_roster_remove_then_add_again_gives_a_fresh_item():
    h = harness()
    alice = interested(h, f"{ALICE}/phone")
    set_item(alice, f"<item jid='{BOB}' name='Bob'><group>G</group></item>")
    set_item(alice, f"<item jid='{BOB}' subscription='remove'/>")
    set_item(alice, f"<item jid='{BOB}'/>")
    alice.take()
    (result,) = ask_roster(alice)
    assert items_of(result) == {BOB: {"jid": BOB, "subscription": "none"}}


# -- §2.3.3 / §2.5.3 errors ---------------------------------------------------------------------


def refusal_setup(max_items=None):
    h = harness(max_items)
    alice = interested(h, f"{ALICE}/phone")
    set_item(alice, f"<item jid='{CAROL}' name='Carol'><group>Friends</group></item>")
    alice.take()
    return h, alice


def test_roster_set_with_two_items_is_bad_request():
    h, alice = refusal_setup()
    assert_refused(h, alice, f"<item jid='{BOB}'/><item jid='dave@localhost'/>", "bad-request")


def test_roster_set_with_no_item_is_bad_request():
    h, alice = refusal_setup()
    assert_refused(h, alice, "", "bad-request")


def test_roster_set_with_an_invalid_jid_is_jid_malformed():
    h, alice = refusal_setup()
    assert_refused(h, alice, "<item jid='@localhost'/>", "jid-malformed")


def test_roster_set_without_jid_is_jid_malformed():
    h, alice = refusal_setup()
    assert_refused(h, alice, "<item name='nobody'/>", "jid-malformed")


def test_roster_set_with_a_full_jid_is_bad_request():
    h, alice = refusal_setup()
    assert_refused(h, alice, f"<item jid='{BOB}/pc'/>", "bad-request")


def test_roster_remove_with_a_full_jid_is_bad_request():
    h, alice = refusal_setup()
    assert_refused(h, alice, f"<item jid='{CAROL}/pc' subscription='remove'/>", "bad-request")


def test_roster_set_of_own_jid_is_not_allowed():
    h, alice = refusal_setup()
    assert_refused(h, alice, f"<item jid='{ALICE}'/>", "not-allowed")


def test_roster_set_with_a_subscription_other_than_remove_or_current_is_not_allowed():
    h, alice = refusal_setup()
    assert_refused(h, alice, f"<item jid='{BOB}' subscription='both'/>", "not-allowed")
    assert_refused(h, alice, f"<item jid='{CAROL}' subscription='to'/>", "not-allowed")
    assert_refused(h, alice, f"<item jid='{CAROL}' subscription='bogus'/>", "not-allowed")


def test_roster_set_with_an_empty_group_is_not_acceptable():
    h, alice = refusal_setup()
    assert_refused(h, alice, f"<item jid='{BOB}'><group></group></item>", "not-acceptable")
    assert_refused(h, alice, f"<item jid='{CAROL}'><group>Friends</group><group/></item>",
                   "not-acceptable")


def test_roster_set_with_duplicate_groups_is_bad_request():
    h, alice = refusal_setup()
    assert_refused(h, alice, f"<item jid='{BOB}'><group>A</group><group>A</group></item>",
                   "bad-request")


def test_roster_set_with_an_overlong_name_is_not_acceptable():
    h, alice = refusal_setup()
    assert_refused(h, alice, f"<item jid='{BOB}' name='{'n' * 2000}'/>", "not-acceptable")
    assert_refused(h, alice, f"<item jid='{CAROL}' name='{'n' * 2000}'/>", "not-acceptable")


def test_roster_set_with_an_overlong_group_is_not_acceptable():
    h, alice = refusal_setup()
    assert_refused(h, alice, f"<item jid='{BOB}'><group>{'g' * 2000}</group></item>",
                   "not-acceptable")


def test_roster_cap_refuses_a_new_item_with_not_allowed():
    h = harness(max_items=3)
    alice = interested(h, f"{ALICE}/phone")
    for name in ("b", "c", "d"):
        set_item(alice, f"<item jid='{name}@localhost'/>")
    alice.take()
    assert_refused(h, alice, "<item jid='e@localhost'/>", "not-allowed")
    assert set(listed(h)) == {"b@localhost", "c@localhost", "d@localhost"}


def test_roster_cap_still_allows_updating_and_removing_existing_items():
    h = harness(max_items=3)
    alice = interested(h, f"{ALICE}/phone")
    for name in ("b", "c", "d"):
        set_item(alice, f"<item jid='{name}@localhost'/>")
    alice.take()
    set_item(alice, "<item jid='b@localhost' name='B'/>", "upd")
    assert is_result(alice.take()[0], "upd")
    set_item(alice, "<item jid='c@localhost' subscription='remove'/>", "rm")
    assert is_result(alice.take()[0], "rm")
    set_item(alice, "<item jid='e@localhost'/>", "add")
    assert is_result(alice.take()[0], "add")
    assert set(listed(h)) == {"b@localhost", "d@localhost", "e@localhost"}


def test_roster_cap_also_limits_subscription_requests_sent():
    h = harness(max_items=3)
    alice = interested(h, f"{ALICE}/phone")
    for name in ("b", "c", "d"):
        set_item(alice, f"<item jid='{name}@localhost'/>")
    alice.take()
    before = stored(h)
    alice.feed("<presence type='subscribe' to='e@localhost' id='s1'/>")
    reply = only(alice)
    assert reply.name == "presence" and error_condition(reply) == "not-allowed"
    assert stored(h) == before


REMOTE = "mallory@remote.example"


def from_remote(h):
    """Stanzas the server sends to other domains (the s2s seam), recorded."""
    sent = []
    h.router.remote = lambda stanza, to: sent.append(stanza) or True
    return sent


def remote_subscribe(h, to=ALICE, stanza_id="s1"):
    """A subscription request arriving over federation (its outbound half done
    by the remote server): only the inbound half runs here."""
    h.router.route(parse(f"<presence type='subscribe' from='{REMOTE}' to='{to}' "
                         f"id='{stanza_id}'/>"))


def test_roster_cap_refuses_a_subscription_request_from_a_new_contact():
    """A request from someone not yet on the roster would take a place: like a
    roster set beyond the cap it is refused, resource-constraint back to the
    sender, and the roster is unchanged."""
    h = harness(max_items=1)
    alice = interested(h, f"{ALICE}/phone")
    set_item(alice, f"<item jid='{CAROL}'/>")
    alice.take()
    before = stored(h)
    sent = from_remote(h)
    remote_subscribe(h)
    (reply,) = sent
    assert reply.name == "presence" and reply.getAttribute("id") == "s1"
    assert reply["to"] == REMOTE and reply["from"] == ALICE
    assert error_condition(reply) == "resource-constraint"
    assert stored(h) == before
    assert alice.take() == []


# -- quota in bytes ---------------------------------------------------------------------

#: Distinct groups of 1 000 bytes each: a roster item of any size up to what
#: a stanza may carry (a set refuses the same group twice).
def big_groups(count, start=0):
    return [f"{i:04d}" + "g" * 996 for i in range(start, start + count)]


def item_xml(jid, groups=(), name=None):
    name_attr = f" name='{name}'" if name is not None else ""
    return f"<item jid='{jid}'{name_attr}>" + "".join(f"<group>{g}</group>" for g in groups) \
        + "</item>"


def roster_bytes(h, user=ALICE):
    return result_of(h.component("roster").load(user)).bytes


def test_roster_byte_cap_is_on_by_default_and_refuses_items_of_200_kb_past_1_mib():
    """The report: 300 items of 200 KB each were accepted. By default a
    roster may take 1 MiB: the sixth such item is refused, not-allowed as for
    the item count, and nothing of it is stored."""
    h = harness()
    alice = interested(h, f"{ALICE}/phone")
    for n in range(5):
        set_item(alice, item_xml(f"c{n}@localhost", big_groups(200)), f"ok{n}")
        assert is_result(alice.take()[0], f"ok{n}")
    assert 5 * 200_000 < roster_bytes(h) <= 1 << 20
    before = stored(h)
    set_item(alice, item_xml("c5@localhost", big_groups(200)), "over")
    reply = only(alice)
    assert reply["id"] == "over" and error_condition(reply) == "not-allowed"
    error = next(reply.elements(ns.CLIENT, "error"))
    assert "bytes" in str(next(error.elements(ns.STANZA_ERRORS, "text")))
    assert stored(h) == before
    assert set(listed(h)) == {f"c{n}@localhost" for n in range(5)}


def test_roster_byte_cap_boundary_exactly_full_is_accepted_one_byte_more_is_not():
    first = entry_size(BOB, groups=big_groups(5))
    cap = first + entry_size(CAROL, name="n" * 500)
    h = harness(max_size=cap)
    alice = interested(h, f"{ALICE}/phone")
    set_item(alice, item_xml(BOB, big_groups(5)))
    alice.take()
    assert roster_bytes(h) == first
    assert_refused(h, alice, item_xml(CAROL, name="n" * 501), "not-allowed")
    set_item(alice, item_xml(CAROL, name="n" * 500), "exact")
    assert is_result(alice.take()[0], "exact")
    assert roster_bytes(h) == cap
    assert_refused(h, alice, item_xml("d@localhost"), "not-allowed")


def test_roster_byte_cap_lets_an_item_shrink_or_go_and_then_has_room_again():
    cap = entry_size(BOB, groups=big_groups(5)) + entry_size(CAROL)
    h = harness(max_size=cap)
    alice = interested(h, f"{ALICE}/phone")
    set_item(alice, item_xml(BOB, big_groups(5)))
    set_item(alice, item_xml(CAROL))
    alice.take()
    # Growing an existing item past the cap is refused like a new one...
    assert_refused(h, alice, item_xml(BOB, big_groups(6)), "not-allowed")
    assert_refused(h, alice, item_xml(CAROL, name="Carol"), "not-allowed")
    # ...shrinking one is always allowed (also over a cap lowered since)...
    h.component("roster").config["max_size"] = 1000
    set_item(alice, item_xml(BOB, big_groups(4)), "shrink")
    assert is_result(alice.take()[0], "shrink")
    h.component("roster").config["max_size"] = cap
    # ...and what it or a removal freed is room for more.
    set_item(alice, item_xml(CAROL, big_groups(1, start=10)), "grow")
    assert is_result(alice.take()[0], "grow")
    set_item(alice, f"<item jid='{BOB}' subscription='remove'/>", "rm")
    assert is_result(alice.take()[0], "rm")
    assert roster_bytes(h) == entry_size(CAROL, groups=big_groups(1, start=10))
    set_item(alice, item_xml("d@localhost", big_groups(3)), "more")
    assert is_result(alice.take()[0], "more")


def test_roster_bytes_are_counted_incrementally_and_agree_with_a_fresh_load():
    """The running count after sets, updates, removals and subscriptions is
    what counting the stored roster from scratch gives."""
    h = harness()
    alice = interested(h, f"{ALICE}/phone")
    bob = h.login(f"{BOB}/pc")
    set_item(alice, item_xml(CAROL, big_groups(3), name="Carol"))
    set_item(alice, item_xml("d@localhost", big_groups(2)))
    set_item(alice, item_xml(CAROL, big_groups(1), name="C"))
    set_item(alice, "<item jid='d@localhost' subscription='remove'/>")
    bob.feed(f"<presence type='subscribe' to='{ALICE}'><status>hi</status></presence>")
    alice.feed(f"<presence type='subscribe' to='{'e' * 300}@localhost'/>")
    roster = result_of(h.component("roster").load(ALICE))
    expected = sum(item.weight() for item in roster.items.values()
                   if item.listed or item.pending_in is not None)
    assert roster.bytes == expected
    assert expected > entry_size(CAROL, "C", big_groups(1))  # the request counts too
    h.component("roster").forget(ALICE)
    h.component("roster")._online.pop(ALICE)
    assert result_of(h.component("roster").load(ALICE)).bytes == expected


def test_roster_byte_cap_refuses_a_subscription_request_that_would_pass_it():
    """A waiting request is kept (whole) until answered, so it counts: one
    that would take the roster past its bytes is refused like one past its
    item count, resource-constraint to the sender, nothing stored (and no
    acknowledgement: the request was not taken in)."""
    cap = entry_size(CAROL, groups=big_groups(2)) + entry_size(REMOTE)
    h = harness(max_size=cap)
    alice = interested(h, f"{ALICE}/phone")
    set_item(alice, item_xml(CAROL, big_groups(2)))
    alice.take()
    before = stored(h)
    sent = from_remote(h)
    remote_subscribe(h)
    (reply,) = sent
    assert reply["to"] == REMOTE and error_condition(reply) == "resource-constraint"
    assert stored(h) == before
    assert alice.take() == []
    # With room for it, the same request waits for alice as usual.
    h.component("roster").config["max_size"] = cap + 1000
    remote_subscribe(h, stanza_id="s2")
    assert [s.getAttribute("type") for s in sent] == ["error", "unavailable"]
    assert stored(h)[REMOTE]["pending_in"]


def test_roster_byte_cap_also_limits_subscription_requests_sent():
    cap = entry_size(CAROL, groups=big_groups(2)) + 50
    h = harness(max_size=cap)
    alice = interested(h, f"{ALICE}/phone")
    set_item(alice, item_xml(CAROL, big_groups(2)))
    alice.take()
    before = stored(h)
    alice.feed("<presence type='subscribe' to='e@localhost' id='s1'/>")
    reply = only(alice)
    assert reply.name == "presence" and error_condition(reply) == "not-allowed"
    assert stored(h) == before


def test_roster_byte_cap_zero_means_no_limit():
    h = harness(max_size=0)
    alice = interested(h, f"{ALICE}/phone")
    for n in range(7):
        set_item(alice, item_xml(f"c{n}@localhost", big_groups(200)), f"ok{n}")
        assert is_result(alice.take()[0], f"ok{n}")
    assert roster_bytes(h) > 7 * 200_000


@pytest.mark.parametrize("value", ["-1", "lots", "1.5"])
def test_roster_byte_cap_must_be_a_whole_number_of_bytes(value):
    with pytest.raises(ConfigError, match="max_size: (must be|expected)"):
        harness(max_size=value)


def test_roster_get_of_another_users_roster_is_forbidden():
    h = harness()
    bob = interested(h, f"{BOB}/pc")
    set_item(bob, f"<item jid='{CAROL}'/>")
    bob.take()
    alice = h.login(f"{ALICE}/phone", available=False)
    alice.feed(f"<iq type='get' id='peek' to='{BOB}'><query xmlns='{ns.ROSTER}'/></iq>")
    reply = only(alice)
    assert reply.getAttribute("id") == "peek"
    assert error_condition(reply) == "forbidden"
    assert not [c for c in reply.elements() if c.name == "query" and list(c.elements())]
    assert bob.take() == []


def test_roster_set_on_another_users_roster_is_forbidden_and_changes_nothing():
    h = harness()
    bob = interested(h, f"{BOB}/pc")
    alice = h.login(f"{ALICE}/phone", available=False)
    before = stored(h, BOB)
    alice.feed(f"<iq type='set' id='meddle' to='{BOB}'>"
               f"<query xmlns='{ns.ROSTER}'><item jid='mallory@localhost'/></query></iq>")
    assert error_condition(only(alice)) == "forbidden"
    assert stored(h, BOB) == before
    assert bob.take() == []


def test_forged_roster_push_to_another_users_full_jid_never_reaches_them():
    h = harness()
    bob = interested(h, f"{BOB}/pc")
    alice = h.login(f"{ALICE}/phone", available=False)
    alice.feed(f"<iq type='set' id='forged' to='{BOB}/pc'>"
               f"<query xmlns='{ns.ROSTER}'><item jid='mallory@evil.example' "
               f"subscription='both'/></query></iq>")
    assert error_condition(only(alice)) == "forbidden"
    assert bob.take() == []
    assert listed(h, BOB) == {}


def test_forged_roster_get_to_another_users_full_jid_is_forbidden():
    h = harness()
    bob = interested(h, f"{BOB}/pc")
    alice = h.login(f"{ALICE}/phone", available=False)
    alice.feed(f"<iq type='get' id='peek' to='{BOB}/pc'><query xmlns='{ns.ROSTER}'/></iq>")
    assert error_condition(only(alice)) == "forbidden"
    assert bob.take() == []


# -- XEP-0237 / RFC 6121 §2.6 versioning -----------------------------------------------------------


def ver_of(stanza):
    query = stanza.firstChildElement()
    return query.getAttribute("ver") if query is not None else None


def test_roster_get_with_ver_returns_the_version():
    h = harness()
    alice = h.login(f"{ALICE}/phone", available=False)
    (result,) = ask_roster(alice, ver="")
    assert is_result(result, "get")
    assert ver_of(result)
    set_item(alice, f"<item jid='{BOB}'/>")
    alice.take()
    (again,) = ask_roster(alice, ver="")
    assert ver_of(again) and ver_of(again) != ver_of(result)
    assert list(items_of(again)) == [BOB]


def test_roster_push_carries_the_new_version():
    h = harness()
    alice = h.login(f"{ALICE}/phone", available=False)
    (first,) = ask_roster(alice, ver="")
    set_item(alice, f"<item jid='{BOB}'/>")
    _, push = alice.take()
    pushed_ver = push.firstChildElement()["ver"]
    assert pushed_ver != ver_of(first)
    (result,) = ask_roster(alice, ver="")
    assert ver_of(result) == pushed_ver


def test_roster_get_with_the_current_ver_gets_an_empty_result_and_no_pushes():
    h = harness()
    alice = h.login(f"{ALICE}/phone", available=False)
    set_item(alice, f"<item jid='{BOB}'/>")
    set_item(alice, f"<item jid='{CAROL}'/>")
    alice.take()
    (full,) = ask_roster(alice, ver="")
    got = ask_roster(alice, "again", ver=ver_of(full))
    assert len(got) == 1, [e.toXml() for e in got]
    assert is_result(got[0], "again")
    assert list(got[0].elements()) == []


def test_roster_get_with_an_older_ver_gets_pushes_for_exactly_the_changes_since():
    h = harness()
    phone = h.login(f"{ALICE}/phone", available=False)
    set_item(phone, f"<item jid='{BOB}'/>")
    set_item(phone, f"<item jid='{CAROL}'/>")
    set_item(phone, "<item jid='dave@localhost'/>")
    phone.take()
    (cached,) = ask_roster(phone, ver="")
    old = ver_of(cached)
    phone.logout()
    # while offline: one update, one removal, one addition
    laptop = h.login(f"{ALICE}/laptop", available=False)
    set_item(laptop, f"<item jid='{CAROL}' name='Carol'/>")
    set_item(laptop, "<item jid='dave@localhost' subscription='remove'/>")
    set_item(laptop, "<item jid='erin@localhost'/>")
    phone = h.login(f"{ALICE}/phone", available=False)
    got = ask_roster(phone, "sync", ver=old)
    result, rest = got[0], got[1:]
    assert is_result(result, "sync")
    # either an empty IQ result or an empty <query/> with the latest ver
    assert not [c for c in result.elements() if isinstance(c, domish.Element)
                and list(c.elements())]
    assert [describe(push_item(p)) for p in rest] == [
        {"jid": CAROL, "name": "Carol", "subscription": "none"},
        {"jid": "dave@localhost", "subscription": "remove"},
        {"jid": "erin@localhost", "subscription": "none"},
    ]
    for push in rest:
        assert push["to"] == f"{ALICE}/phone"


def test_interim_roster_pushes_carry_increasing_versions_ending_at_the_current_one():
    # RFC 6121 §2.6.3 / XEP-0237: each interim push carries the version of its
    # change, strictly increasing, so a client that caches after each push and
    # loses the connection half-way resumes where it stopped.
    h = harness()
    alice = h.login(f"{ALICE}/phone", available=False)
    (cached,) = ask_roster(alice, ver="")
    for name in ("b", "c", "d"):
        set_item(alice, f"<item jid='{name}@localhost'/>")
    alice.take()
    (current,) = ask_roster(alice, ver="")
    rest = ask_roster(alice, "sync", ver=ver_of(cached))[1:]
    vers = [p.firstChildElement()["ver"] for p in rest]
    assert len(vers) == 3 and len(set(vers)) == 3, vers
    assert vers[-1] == ver_of(current)
    # resuming from the first interim push yields only the later changes
    resumed = ask_roster(alice, "resume", ver=vers[0])[1:]
    assert [push_item(p)["jid"] for p in resumed] == ["c@localhost", "d@localhost"]


def test_roster_get_with_an_older_ver_reports_subscription_changes():
    h = harness()
    alice = h.login(f"{ALICE}/phone", available=False)
    (cached,) = ask_roster(alice, ver="")
    bob = h.login(f"{BOB}/pc")
    alice.feed(f"<presence type='subscribe' to='{BOB}'/>")
    bob.feed(f"<presence type='subscribed' to='{ALICE}'/>")
    alice.take()
    rest = ask_roster(alice, "sync", ver=ver_of(cached))[1:]
    assert [describe(push_item(p)) for p in rest] == [{"jid": BOB, "subscription": "to"}]


def test_roster_get_with_an_unknown_ver_returns_the_full_roster():
    h = harness()
    alice = h.login(f"{ALICE}/phone", available=False)
    set_item(alice, f"<item jid='{BOB}' name='Bob'/>")
    alice.take()
    for garbage in ("garbage", "0", "-1", "x-99999", "deadbeef-", "ver11"):
        got = ask_roster(alice, "g", ver=garbage)
        assert len(got) == 1, (garbage, [e.toXml() for e in got])
        assert ver_of(got[0])
        assert items_of(got[0]) == {BOB: {"jid": BOB, "name": "Bob", "subscription": "none"}}


def test_roster_version_from_the_future_returns_the_full_roster():
    h = harness()
    alice = h.login(f"{ALICE}/phone", available=False)
    set_item(alice, f"<item jid='{BOB}'/>")
    alice.take()
    (full,) = ask_roster(alice, ver="")
    epoch, _, number = ver_of(full).rpartition("-")
    got = ask_roster(alice, "future", ver=f"{epoch}-{int(number) + 5}")
    assert len(got) == 1 and list(items_of(got[0])) == [BOB]


def test_refused_roster_set_does_not_change_the_version():
    h = harness()
    alice = interested(h, f"{ALICE}/phone")
    set_item(alice, f"<item jid='{BOB}'/>")
    alice.take()
    (before,) = ask_roster(alice, ver="")
    set_item(alice, f"<item jid='{ALICE}'/>")
    set_item(alice, "<item jid='nobody@localhost' subscription='remove'/>")
    alice.take()
    got = ask_roster(alice, "same", ver=ver_of(before))
    assert len(got) == 1 and list(got[0].elements()) == []


def test_roster_versioning_stream_feature_is_offered_after_authentication():
    h = harness()
    roster = h.component("roster")
    anonymous = h.connect()
    assert roster.stream_features(anonymous) == []
    session = h.login(f"{ALICE}/phone", available=False)
    features = {(e.uri, e.name) for e in roster.stream_features(session)}
    assert (ns.ROSTER_VERSIONING, "ver") in features
    # RFC 6121 §3.4: pre-approval support is advertised too
    assert (ns.PRE_APPROVAL, "sub") in features
    server_features = {(e.uri, e.name) for e in h.server.stream_features(session)}
    assert (ns.ROSTER_VERSIONING, "ver") in server_features


# -- loading and interest ------------------------------------------------------------------


def test_roster_of_a_user_who_never_logged_in_loads():
    # The memory store answers synchronously: the first load must still fire.
    h = harness()
    h.add_user(BOB)
    roster = result_of(h.component("roster").load(BOB))
    assert roster.listed() == [] and roster.user == BOB


def test_roster_of_an_offline_user_loads_again_after_leaving_the_cache():
    h = harness(cache_size=0)
    bob = interested(h, f"{BOB}/pc")
    set_item(bob, f"<item jid='{CAROL}' name='Carol'/>")
    bob.logout()
    assert h.component("roster").cached(BOB) is None
    roster = result_of(h.component("roster").load(BOB))
    assert [i.jid for i in roster.listed()] == [CAROL]


def test_subscription_request_to_an_offline_user_is_kept_for_them():
    h = harness(cache_size=0)
    bob = h.login(f"{BOB}/pc")
    bob.logout()
    alice = h.login(f"{ALICE}/phone")
    alice.feed(f"<presence type='subscribe' to='{BOB}'/>")
    entry = stored(h, BOB).get(ALICE)
    assert entry is not None and entry["pending_in"] is not None


def test_a_session_replacing_a_conflicting_one_is_not_interested_until_it_asks():
    # §2.2: interest belongs to the resource that asked; a new session bound to
    # the same resource (RFC 6120 §7.7.2.2 conflict) has not asked yet.
    h = harness()
    interested(h, f"{ALICE}/phone")
    replacement = h.login(f"{ALICE}/phone", available=False)
    other = interested(h, f"{ALICE}/laptop")
    set_item(other, f"<item jid='{BOB}'/>")
    assert replacement.take() == []


def test_deleted_account_leaves_no_roster_in_memory():
    """account-deleted: the rows are purged by storage, the cached roster and
    the interested resources by the component, so an account made again
    under the name starts with an empty roster."""
    h = harness()
    alice = interested(h, f"{ALICE}/phone")
    set_item(alice, f"<item jid='{BOB}' name='Bob'/>")
    assert h.component("roster").cached(ALICE) is not None
    result_of(h.server.delete_account(ALICE))
    assert h.component("roster").cached(ALICE) is None
    assert ALICE not in h.component("roster")._interested
    again = h.login(f"{ALICE}/phone", available=False)
    (result,) = ask_roster(again)
    assert items_of(result) == {}
