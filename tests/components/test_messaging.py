"""RFC 6121 §8.5: where a message to a local account goes.

Session priorities are set on the session object directly after login: the
messaging rule is what is under test here, and the presence component's
<priority/> parsing is broken (pinned in test_presence.py).
"""

from hypothesis import given, settings, strategies as st

from xmppd.testing import Harness
from xmppd.testing import error_condition

STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


def harness():
    return Harness(["presence", "messaging"])


def online(h, full_jid, priority=0, available=True):
    session = h.login(full_jid, available=available, priority=priority)
    session.priority = priority  # see the module docstring
    return session


def send(sender, to, mtype="chat", mid="m1", body="hello"):
    type_attr = f" type='{mtype}'" if mtype is not None else ""
    sender.feed(f"<message to='{to}' id='{mid}'{type_attr}><body>{body}</body></message>")


def assert_delivered(stanza, sender, to, mtype="chat", mid="m1", body="hello"):
    assert stanza.name == "message"
    assert stanza["from"] == sender.jid.full()
    assert stanza["to"] == to
    assert stanza["id"] == mid
    assert stanza.getAttribute("type") == mtype
    bodies = [str(c) for c in stanza.elements() if c.name == "body"]
    assert bodies == [body]


def assert_bounced(sender, condition="service-unavailable", mid="m1", from_=None):
    received = sender.take()
    assert len(received) == 1, [e.toXml() for e in received]
    bounce = received[0]
    assert bounce.name == "message"
    assert bounce["id"] == mid
    assert bounce["to"] == sender.jid.full()
    if from_ is not None:
        assert bounce["from"] == from_
    assert error_condition(bounce) == condition
    return bounce


# -- chat / normal to a bare JID -------------------------------------------------

def test_chat_to_bare_goes_to_highest_priority_resource_only():
    h = harness()
    alice = online(h, "alice@localhost/phone")
    high = online(h, "bob@localhost/desk", priority=10)
    low = online(h, "bob@localhost/phone", priority=1)
    send(alice, "bob@localhost")
    (got,) = high.take()
    assert_delivered(got, alice, "bob@localhost")
    assert low.take() == []
    assert alice.take() == []


def test_chat_to_bare_with_tied_priorities_goes_to_all_of_them():
    h = harness()
    alice = online(h, "alice@localhost/phone")
    a = online(h, "bob@localhost/a", priority=5)
    b = online(h, "bob@localhost/b", priority=5)
    c = online(h, "bob@localhost/c", priority=2)
    send(alice, "bob@localhost")
    assert len(a.take()) == 1 and len(b.take()) == 1
    assert c.take() == []


def test_normal_message_without_type_follows_the_chat_rule():
    h = harness()
    alice = online(h, "alice@localhost/phone")
    high = online(h, "bob@localhost/desk", priority=3)
    low = online(h, "bob@localhost/phone", priority=0)
    send(alice, "bob@localhost", mtype=None)
    (got,) = high.take()
    assert got.getAttribute("type") is None
    assert low.take() == []


def test_negative_priority_resource_gets_no_chat_to_bare():
    h = harness()
    alice = online(h, "alice@localhost/phone")
    shy = online(h, "bob@localhost/shy", priority=-1)
    normal = online(h, "bob@localhost/pc", priority=0)
    send(alice, "bob@localhost")
    assert shy.take() == []
    assert len(normal.take()) == 1


def test_only_negative_priority_resources_means_chat_bounces():
    h = harness()
    alice = online(h, "alice@localhost/phone")
    shy = online(h, "bob@localhost/shy", priority=-5)
    send(alice, "bob@localhost")
    assert shy.take() == []
    assert_bounced(alice, from_="bob@localhost")


def test_unavailable_resource_gets_no_chat_to_bare():
    h = harness()
    alice = online(h, "alice@localhost/phone")
    hidden = online(h, "bob@localhost/hidden", priority=50, available=False)
    shown = online(h, "bob@localhost/pc", priority=0)
    send(alice, "bob@localhost")
    assert hidden.take() == []
    assert len(shown.take()) == 1


def test_chat_to_bare_with_no_available_resource_bounces_service_unavailable():
    h = harness()
    alice = online(h, "alice@localhost/phone")
    h.add_user("bob@localhost")
    send(alice, "bob@localhost", mid="nobody-home")
    bounce = assert_bounced(alice, mid="nobody-home", from_="bob@localhost")
    # as Prosody, the error does not carry the message back (only its id)
    assert [c.name for c in bounce.elements()] == ["error"]


def test_chat_to_nonexistent_user_bounces_service_unavailable():
    h = harness()
    alice = online(h, "alice@localhost/phone")
    send(alice, "ghost@localhost", mid="g1")
    assert_bounced(alice, mid="g1", from_="ghost@localhost")


def test_chat_to_own_bare_jid_reaches_own_other_resource():
    h = harness()
    phone = online(h, "alice@localhost/phone", priority=0)
    desk = online(h, "alice@localhost/desk", priority=9)
    send(phone, "alice@localhost")
    (got,) = desk.take()
    assert_delivered(got, phone, "alice@localhost")
    assert phone.take() == []


# -- headline, groupchat, error ---------------------------------------------------

def test_headline_to_bare_goes_to_all_non_negative_resources():
    h = harness()
    alice = online(h, "alice@localhost/phone")
    a = online(h, "bob@localhost/a", priority=10)
    b = online(h, "bob@localhost/b", priority=0)
    c = online(h, "bob@localhost/c", priority=-1)
    send(alice, "bob@localhost", mtype="headline", mid="news")
    for session in (a, b):
        (got,) = session.take()
        assert_delivered(got, alice, "bob@localhost", mtype="headline", mid="news")
    assert c.take() == []
    assert alice.take() == []


def test_headline_to_bare_with_nobody_available_is_dropped_silently():
    h = harness()
    alice = online(h, "alice@localhost/phone")
    h.add_user("bob@localhost")
    send(alice, "bob@localhost", mtype="headline")
    assert alice.take() == []


def test_groupchat_to_bare_gets_service_unavailable():
    h = harness()
    alice = online(h, "alice@localhost/phone")
    bob = online(h, "bob@localhost/pc")
    send(alice, "bob@localhost", mtype="groupchat", mid="gc")
    assert bob.take() == []
    bounce = assert_bounced(alice, mid="gc", from_="bob@localhost")
    assert bounce["type"] == "error"


def test_error_message_to_bare_is_dropped_without_bounce():
    h = harness()
    alice = online(h, "alice@localhost/phone")
    bob = online(h, "bob@localhost/pc")
    send(alice, "bob@localhost", mtype="error", mid="e1")
    assert bob.take() == []
    assert alice.take() == []


def test_error_message_to_nonexistent_user_is_not_bounced():
    h = harness()
    alice = online(h, "alice@localhost/phone")
    send(alice, "ghost@localhost", mtype="error")
    assert alice.take() == []


# -- full JIDs --------------------------------------------------------------------

def test_message_to_full_jid_goes_exactly_there():
    h = harness()
    alice = online(h, "alice@localhost/phone")
    high = online(h, "bob@localhost/desk", priority=10)
    low = online(h, "bob@localhost/phone", priority=1)
    send(alice, "bob@localhost/phone", mid="direct", body="just you")
    (got,) = low.take()
    assert_delivered(got, alice, "bob@localhost/phone", mid="direct", body="just you")
    assert high.take() == []
    assert alice.take() == []


def test_message_to_full_jid_reaches_even_a_negative_priority_resource():
    h = harness()
    alice = online(h, "alice@localhost/phone")
    shy = online(h, "bob@localhost/shy", priority=-10)
    send(alice, "bob@localhost/shy")
    assert len(shy.take()) == 1


def test_message_to_gone_full_jid_falls_back_to_bare_rules():
    h = harness()
    alice = online(h, "alice@localhost/phone")
    high = online(h, "bob@localhost/desk", priority=10)
    low = online(h, "bob@localhost/phone", priority=1)
    send(alice, "bob@localhost/gone", mid="fb")
    (got,) = high.take()
    assert_delivered(got, alice, "bob@localhost/gone", mid="fb")
    assert low.take() == []
    assert alice.take() == []


def test_message_to_logged_out_full_jid_falls_back_to_bare_rules():
    h = harness()
    alice = online(h, "alice@localhost/phone")
    left = online(h, "bob@localhost/old", priority=50)
    stays = online(h, "bob@localhost/pc", priority=0)
    left.logout()
    assert [p.getAttribute("type") for p in stays.take()] == ["unavailable"]
    send(alice, "bob@localhost/old")
    assert left.take() == []
    assert len(stays.take()) == 1


def test_message_to_gone_full_jid_with_nobody_online_bounces():
    h = harness()
    alice = online(h, "alice@localhost/phone")
    h.add_user("bob@localhost")
    send(alice, "bob@localhost/gone", mid="x")
    assert_bounced(alice, mid="x", from_="bob@localhost/gone")


# -- property: the bare-JID rule against a simple model ----------------------------

resources = st.lists(
    st.tuples(st.booleans(), st.integers(min_value=-3, max_value=3)), min_size=0, max_size=5)


@settings(max_examples=60, deadline=None)
@given(resources=resources, mtype=st.sampled_from([None, "normal", "chat", "headline",
                                                    "groupchat", "error"]))
def test_bare_jid_delivery_matches_the_rfc_model(resources, mtype):
    h = harness()
    alice = online(h, "alice@localhost/phone")
    h.add_user("bob@localhost")
    sessions = [online(h, f"bob@localhost/r{i}", priority=p, available=avail)
                for i, (avail, p) in enumerate(resources)]

    # the model (RFC 6121 §8.5.2.1)
    eligible = [i for i, (avail, p) in enumerate(resources) if avail and p >= 0]
    if mtype in ("error", "groupchat"):
        expected = set()
    elif mtype == "headline":
        expected = set(eligible)
    elif eligible:
        top = max(resources[i][1] for i in eligible)
        expected = {i for i in eligible if resources[i][1] == top}
    else:
        expected = set()
    bounce = mtype == "groupchat" or (mtype in (None, "normal", "chat") and not expected)

    send(alice, "bob@localhost", mtype=mtype)
    got = {i for i, s in enumerate(sessions) if s.take()}
    assert got == expected
    back = alice.take()
    if bounce:
        assert len(back) == 1 and error_condition(back[0]) == "service-unavailable"
    else:
        assert back == []


# -- messages a closing session never wrote (Router.undelivered) ----------------------


def _undelivered(h, session, stanza_xml):
    """What a closing session does with a stanza it could not write: unbind,
    then hand it to the router."""
    from xmppd.testing import parse

    session.logout()
    h.router.undelivered("message", parse(stanza_xml), session)


def test_an_undelivered_message_to_a_full_jid_goes_to_the_other_resource():
    h = harness()
    alice = online(h, "alice@localhost/a")
    phone = online(h, "bob@localhost/phone")
    laptop = online(h, "bob@localhost/laptop")
    _undelivered(h, phone, "<message from='alice@localhost/a' to='bob@localhost/phone' "
                           "type='chat' id='u1'><body>hello</body></message>")
    [got] = [s for s in laptop.take() if s.name == "message"]
    assert got["id"] == "u1"
    assert not alice.take()


def test_an_undelivered_message_to_the_bare_jid_reaches_a_resource_that_did_not_have_it():
    """The closing resource had the highest priority, so it alone got the
    message: the lower one gets it now (who had it is not guessed from who is
    there when the session closes)."""
    h = harness()
    online(h, "alice@localhost/a")
    desk = online(h, "bob@localhost/desk", priority=10)
    phone = online(h, "bob@localhost/phone", priority=1)
    _undelivered(h, desk, "<message from='alice@localhost/a' to='bob@localhost' "
                          "type='chat' id='u2'><body>hello</body></message>")
    [got] = [s for s in phone.take() if s.name == "message"]
    assert got["id"] == "u2"


def test_an_undelivered_message_with_nobody_left_is_bounced_without_offline_storage():
    h = harness()
    alice = online(h, "alice@localhost/a")
    phone = online(h, "bob@localhost/phone")
    _undelivered(h, phone, "<message from='alice@localhost/a' to='bob@localhost' "
                           "type='chat' id='u3'><body>hello</body></message>")
    [error] = alice.take()
    assert error["id"] == "u3" and error_condition(error) == "service-unavailable"


def test_an_undelivered_headline_or_groupchat_is_dropped():
    h = harness()
    alice = online(h, "alice@localhost/a")
    for mtype in ("headline", "groupchat"):
        phone = online(h, "bob@localhost/phone")
        _undelivered(h, phone, f"<message from='alice@localhost/a' to='bob@localhost/phone' "
                               f"type='{mtype}' id='u4'><body>hello</body></message>")
    assert not alice.take()
