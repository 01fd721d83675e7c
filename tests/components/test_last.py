"""XEP-0012: last activity — the server's uptime and when a user logged out."""

import time

from xmppd.components.last import LastActivityComponent
from xmppd.subscription import State
from xmppd.testing import Harness, error_condition, only, result_of

LAST = "jabber:iq:last"


def harness(components=("presence", "roster", "last"), **options):
    return Harness(list(components), options=options or None)


def allow(h, user, contact, state="from"):
    """Give ``contact`` a subscription to ``user``'s presence in ``user``'s roster."""
    rc = h.component("roster")
    roster = result_of(rc.load(user))
    result_of(rc.apply(roster, contact, State(state)))


def ask(session, to=None, iq_id="l1"):
    """Send a last activity query; return the one reply (other traffic dropped)."""
    session.take()
    to_attr = f" to='{to}'" if to is not None else ""
    session.feed(f"<iq type='get' id='{iq_id}'{to_attr}><query xmlns='{LAST}'/></iq>")
    replies = [e for e in session.take() if e.name == "iq"]
    assert len(replies) == 1, [e.toXml() for e in replies]
    return replies[0]


def answer(reply):
    """(seconds, text) of a result."""
    assert reply["type"] == "result", reply.toXml()
    (query,) = list(reply.elements())
    assert (query.uri, query.name) == (LAST, "query")
    return int(query["seconds"]), str(query)


def record(h, user):
    return result_of(h.component("last").store["lastactivity"].get(user))


def error_type(reply):
    return next(c for c in reply.elements() if c.name == "error")["type"]


# -- server uptime (§5) ------------------------------------------------------------

def test_query_to_the_server_answers_its_uptime_without_text():
    h = harness()
    h.server.started_at = time.time() - 123456
    alice = h.login("alice@localhost/phone")
    reply = ask(alice, "localhost")
    assert (reply["id"], reply["from"], reply["to"]) == ("l1", "localhost", "alice@localhost/phone")
    seconds, text = answer(reply)
    assert 123456 <= seconds <= 123458
    assert text == ""


def test_a_set_to_the_server_is_not_served():
    h = harness()
    alice = h.login("alice@localhost/phone")
    alice.feed(f"<iq type='set' id='l2' to='localhost'><query xmlns='{LAST}'/></iq>")
    assert error_condition(only(alice)) == "service-unavailable"


# -- an offline user's last logout (§3) ----------------------------------------------

def test_logout_records_the_time_and_the_unavailable_status_text():
    h = harness()
    bob = h.login("bob@localhost/pc")
    bob.feed("<presence type='unavailable'><status>Heading Home</status></presence>")
    before = time.time()
    bob.logout()
    stored = record(h, "bob@localhost")
    assert stored["status"] == "Heading Home"
    assert before - 1 <= stored["when"] <= time.time()


def test_a_contact_allowed_to_see_presence_learns_seconds_since_logout_and_status():
    h = harness()
    allow(h, "bob@localhost", "alice@localhost")
    bob = h.login("bob@localhost/pc")
    bob.feed("<presence type='unavailable'><status>Heading Home</status></presence>")
    bob.logout()
    alice = h.login("alice@localhost/phone")
    reply = ask(alice, "bob@localhost")
    assert (reply["id"], reply["from"], reply["to"]) == ("l1", "bob@localhost", "alice@localhost/phone")
    seconds, text = answer(reply)
    assert seconds <= 1
    assert text == "Heading Home"


def test_seconds_count_from_the_recorded_logout():
    h = harness()
    allow(h, "bob@localhost", "alice@localhost", "both")
    store = h.component("last").store["lastactivity"]
    result_of(store.set("bob@localhost", {"when": time.time() - 903, "status": None}))
    alice = h.login("alice@localhost/phone")
    seconds, text = answer(ask(alice, "bob@localhost"))
    assert 903 <= seconds <= 905
    assert text == ""


def test_a_dropped_connection_counts_as_logout_without_status():
    h = harness()
    allow(h, "bob@localhost", "alice@localhost")
    bob = h.login("bob@localhost/pc")
    bob.logout()  # no unavailable presence first: the connection just went
    assert record(h, "bob@localhost")["status"] is None
    alice = h.login("alice@localhost/phone")
    seconds, text = answer(ask(alice, "bob@localhost"))
    assert seconds <= 1 and text == ""


def test_last_activity_is_recorded_when_the_last_available_resource_goes():
    h = harness()
    allow(h, "bob@localhost", "alice@localhost")
    pc = h.login("bob@localhost/pc")
    phone = h.login("bob@localhost/phone")
    pc.feed("<presence type='unavailable'><status>Popping out</status></presence>")
    assert record(h, "bob@localhost") is None  # the phone is still available
    alice = h.login("alice@localhost/phone")
    assert answer(ask(alice, "bob@localhost")) == (0, "")
    phone.feed("<presence type='unavailable'><status>Heading Home</status></presence>")
    assert record(h, "bob@localhost")["status"] == "Heading Home"
    phone.logout()
    pc.logout()
    # logging out after saying unavailable keeps the moment and status of that
    assert record(h, "bob@localhost")["status"] == "Heading Home"


def test_a_later_unavailable_status_replaces_an_earlier_one():
    h = harness()
    pc = h.login("bob@localhost/pc")
    phone = h.login("bob@localhost/phone")
    pc.feed("<presence type='unavailable'><status>first</status></presence>")
    phone.feed("<presence type='unavailable'><status>second</status></presence>")
    pc.logout()
    phone.logout()
    assert record(h, "bob@localhost")["status"] == "second"


def test_directed_unavailable_presence_is_not_the_logout_status():
    h = harness()
    bob = h.login("bob@localhost/pc")
    bob.feed("<presence type='unavailable' to='carol@localhost'><status>secret</status></presence>")
    bob.logout()
    assert record(h, "bob@localhost")["status"] is None


def test_a_new_logout_replaces_the_old_record():
    h = harness()
    bob = h.login("bob@localhost/pc")
    bob.feed("<presence type='unavailable'><status>old</status></presence>")
    bob.logout()
    first = record(h, "bob@localhost")
    bob = h.login("bob@localhost/pc")
    bob.logout()
    second = record(h, "bob@localhost")
    assert second["status"] is None
    assert second["when"] >= first["when"]


def test_the_unavailable_presence_is_still_broadcast_by_the_presence_component():
    h = harness()
    allow(h, "bob@localhost", "alice@localhost")
    alice = h.login("alice@localhost/phone")
    bob = h.login("bob@localhost/pc")
    alice.take()
    bob.feed("<presence type='unavailable'><status>Heading Home</status></presence>")
    presences = [e for e in alice.take() if e.name == "presence"]
    assert [(p["from"], p.getAttribute("type")) for p in presences] == \
        [("bob@localhost/pc", "unavailable")]


def test_the_record_survives_a_restart():
    h = harness()
    allow(h, "bob@localhost", "alice@localhost")
    bob = h.login("bob@localhost/pc")
    bob.feed("<presence type='unavailable'><status>Heading Home</status></presence>")
    bob.logout()
    # a new component on the same storage, as after a restart: nothing in memory
    h.component("last").disownServiceParent()
    fresh = LastActivityComponent(h.server, h.config.component("last"))
    fresh.setServiceParent(h.server)
    alice = h.login("alice@localhost/phone")
    seconds, text = answer(ask(alice, "bob@localhost"))
    assert seconds <= 1 and text == "Heading Home"


# -- an online user (§3: seconds='0') -------------------------------------------------

def test_a_connected_but_unavailable_user_is_not_given_away_as_online():
    """XEP-0012 §3: '0' means available; an invisible client stays invisible."""
    h = harness()
    allow(h, "bob@localhost", "alice@localhost")
    store = h.component("last").store["lastactivity"]
    result_of(store.set("bob@localhost", {"when": time.time() - 903, "status": "old"}))
    h.login("bob@localhost/pc", available=False)  # connected, not available
    alice = h.login("alice@localhost/phone")
    seconds, status = answer(ask(alice, "bob@localhost"))
    assert seconds >= 903 and status == "old"


def test_a_user_asking_about_themselves_is_allowed_and_online():
    h = harness()
    alice = h.login("alice@localhost/phone")
    assert answer(ask(alice, "alice@localhost")) == (0, "")
    assert answer(ask(alice)) == (0, "")  # no 'to': the account itself


# -- who may ask (§3, §8) ------------------------------------------------------------

def test_a_requester_without_a_subscription_is_forbidden():
    h = harness()
    bob = h.login("bob@localhost/pc")
    bob.feed("<presence type='unavailable'><status>Heading Home</status></presence>")
    bob.logout()
    before = record(h, "bob@localhost")
    eve = h.login("eve@localhost/laptop")
    reply = ask(eve, "bob@localhost")
    assert (reply["id"], reply["from"], reply["to"]) == ("l1", "bob@localhost", "eve@localhost/laptop")
    assert error_condition(reply) == "forbidden"
    assert error_type(reply) == "auth"
    assert record(h, "bob@localhost") == before


def test_subscription_to_or_a_pending_request_does_not_allow_asking():
    h = harness()
    allow(h, "bob@localhost", "alice@localhost", "to")  # bob sees alice, not the reverse
    rc = h.component("roster")
    result_of(rc.apply(result_of(rc.load("bob@localhost")), "carol@localhost",
                       State("none", pending_in=True)))
    bob = h.login("bob@localhost/pc")
    bob.logout()
    for name in ("alice", "carol"):
        requester = h.login(f"{name}@localhost/x")
        assert error_condition(ask(requester, "bob@localhost")) == "forbidden", name


def test_an_unknown_account_is_forbidden_like_a_known_one():
    h = harness()
    eve = h.login("eve@localhost/laptop")
    assert error_condition(ask(eve, "nobody@localhost")) == "forbidden"


def test_an_allowed_contact_of_a_user_who_never_logged_out_gets_service_unavailable():
    h = harness()
    allow(h, "bob@localhost", "alice@localhost")
    h.add_user("bob@localhost")
    alice = h.login("alice@localhost/phone")
    assert error_condition(ask(alice, "bob@localhost")) == "service-unavailable"


def test_without_a_roster_component_only_the_user_may_ask():
    h = harness(components=("last",))
    bob = h.login("bob@localhost/pc")
    bob.logout()
    alice = h.login("alice@localhost/phone")
    assert error_condition(ask(alice, "bob@localhost")) == "forbidden"
    assert answer(ask(alice, "alice@localhost")) == (0, "")


# -- a full JID (§4): the client's idle time ------------------------------------------

def test_a_full_jid_query_from_an_allowed_contact_reaches_the_client():
    h = harness()
    allow(h, "bob@localhost", "alice@localhost")
    bob = h.login("bob@localhost/pc")
    alice = h.login("alice@localhost/phone")
    bob.take()
    alice.take()
    alice.feed(f"<iq type='get' id='f1' to='bob@localhost/pc'><query xmlns='{LAST}'/></iq>")
    (delivered,) = [e for e in bob.take() if e.name == "iq"]
    assert (delivered["id"], delivered["from"], delivered["type"]) == (
        "f1", "alice@localhost/phone", "get")
    assert alice.take() == []
    # the client's own answer goes back to the requester
    bob.feed(f"<iq type='result' id='f1' to='alice@localhost/phone'>"
             f"<query xmlns='{LAST}' seconds='123'/></iq>")
    reply = only(alice)
    assert (reply["id"], reply["from"]) == ("f1", "bob@localhost/pc")
    assert answer(reply) == (123, "")


def test_a_full_jid_query_from_an_unauthorised_entity_is_forbidden_and_not_delivered():
    h = harness()
    bob = h.login("bob@localhost/pc")
    eve = h.login("eve@localhost/laptop")
    bob.take()
    reply = ask(eve, "bob@localhost/pc")
    assert (reply["id"], reply["from"]) == ("l1", "bob@localhost/pc")
    assert error_condition(reply) == "forbidden"
    assert [e for e in bob.take() if e.name == "iq"] == []


def test_a_full_jid_query_to_ones_own_other_resource_reaches_it():
    h = harness()
    pc = h.login("bob@localhost/pc")
    phone = h.login("bob@localhost/phone")
    pc.take()
    phone.feed(f"<iq type='get' id='f2' to='bob@localhost/pc'><query xmlns='{LAST}'/></iq>")
    (delivered,) = [e for e in pc.take() if e.name == "iq"]
    assert (delivered["id"], delivered["from"]) == ("f2", "bob@localhost/phone")


def test_a_full_jid_that_is_gone_is_service_unavailable_only_for_the_allowed():
    h = harness(**{"component:roster": {"cache_size": "0"}})
    allow(h, "bob@localhost", "alice@localhost")
    bob = h.login("bob@localhost/pc")
    bob.logout()
    alice = h.login("alice@localhost/phone")
    eve = h.login("eve@localhost/laptop")
    assert error_condition(ask(alice, "bob@localhost/pc")) == "service-unavailable"
    assert error_condition(ask(eve, "bob@localhost/pc")) == "forbidden"
    # the same when the roster is still in memory
    h2 = harness()
    allow(h2, "bob@localhost", "alice@localhost")
    h2.login("bob@localhost/pc").logout()
    assert h2.component("roster").cached("bob@localhost") is not None
    assert error_condition(ask(h2.login("alice@localhost/phone"), "bob@localhost/pc")) == \
        "service-unavailable"
    assert error_condition(ask(h2.login("eve@localhost/laptop"), "bob@localhost/pc")) == "forbidden"


def test_a_full_jid_query_is_delivered_when_the_roster_must_be_read_from_storage():
    h = harness()
    allow(h, "bob@localhost", "alice@localhost")
    bob = h.login("bob@localhost/pc")
    h.component("roster").forget("bob@localhost")  # force the storage path
    alice = h.login("alice@localhost/phone")
    bob.take()
    alice.feed(f"<iq type='get' id='f3' to='bob@localhost/pc'><query xmlns='{LAST}'/></iq>")
    (delivered,) = [e for e in bob.take() if e.name == "iq"]
    assert (delivered["id"], delivered["from"]) == ("f3", "alice@localhost/phone")
    assert [e for e in alice.take() if e.name == "iq"] == []


def test_disco_announces_last_activity():
    h = Harness(["disco", "last"])
    alice = h.login("alice@localhost/phone")
    alice.feed("<iq type='get' id='d1' to='localhost'>"
               "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    query = next(only(alice).elements())
    assert LAST in [f["var"] for f in query.elements() if f.name == "feature"]
