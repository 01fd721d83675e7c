"""XEP-0280 Message Carbons: enabling, which messages are copied, and to whom.

Session priorities are set on the session object directly after login, as in
test_messaging.py: the delivery rule is what matters here.
"""

import pytest
from hypothesis import given, settings, strategies as st

from xmppd.components.carbons import eligible
from xmppd.testing import Harness, error_condition, only, parse

CARBONS = "urn:xmpp:carbons:2"
FORWARD = "urn:xmpp:forward:0"
CLIENT = "jabber:client"
INFO = "http://jabber.org/protocol/disco#info"


def harness(*extra):
    return Harness(["presence", "messaging", "carbons", *extra])


def online(h, full_jid, priority=0, available=True, carbons=False):
    session = h.login(full_jid, available=available, priority=priority)
    session.priority = priority
    if carbons:
        enable(session)
    return session


def enable(session, verb="enable", iq_id="c1"):
    session.feed(f"<iq type='set' id='{iq_id}'><{verb} xmlns='{CARBONS}'/></iq>")
    reply = only(session)
    assert reply.name == "iq" and reply["type"] == "result", reply.toXml()
    assert reply["id"] == iq_id
    assert reply["to"] == session.jid.full()
    assert [c for c in reply.children if hasattr(c, "name")] == []


def disable(session, iq_id="d1"):
    enable(session, "disable", iq_id)


def send(sender, to, mtype="chat", mid="m1", body="hello", extra=""):
    type_attr = f" type='{mtype}'" if mtype is not None else ""
    body_xml = f"<body>{body}</body>" if body is not None else ""
    sender.feed(f"<message to='{to}' id='{mid}'{type_attr}>{body_xml}{extra}</message>")


def unwrap(carbon, direction, owner):
    """The forwarded message inside a carbon, after checking the wrapper (§7, §8)."""
    assert carbon.name == "message" and carbon.uri == CLIENT
    assert carbon["from"] == owner.bare
    assert carbon["to"] == owner.jid.full()
    (wrapper,) = [c for c in carbon.elements() if c.uri == CARBONS]
    assert wrapper.name == direction
    (forwarded,) = list(wrapper.elements())
    assert (forwarded.uri, forwarded.name) == (FORWARD, "forwarded")
    (inner,) = list(forwarded.elements())
    assert (inner.uri, inner.name) == (CLIENT, "message")
    return inner


def assert_message(stanza, from_, to, mtype="chat", mid="m1", body="hello"):
    assert stanza["from"] == from_
    assert stanza["to"] == to
    assert stanza["id"] == mid
    assert stanza.getAttribute("type") == mtype
    assert [str(c) for c in stanza.elements() if c.name == "body"] == [body]


def assert_carbon(session, direction, from_, to, mtype="chat", mid="m1", body="hello"):
    carbon = only(session)
    assert carbon.getAttribute("type") == mtype
    inner = unwrap(carbon, direction, session)
    assert_message(inner, from_, to, mtype, mid, body)
    return inner


# -- enabling and disabling (§4, §5) --------------------------------------------

def test_enable_and_disable_answer_an_empty_result():
    h = harness()
    alice = online(h, "alice@localhost/phone")
    enable(alice, iq_id="on")
    assert h.component("carbons").is_enabled(alice)
    disable(alice, iq_id="off")
    assert not h.component("carbons").is_enabled(alice)


def test_enabling_or_disabling_twice_is_not_an_error():
    h = harness()
    alice = online(h, "alice@localhost/phone")
    enable(alice, iq_id="1")
    enable(alice, iq_id="2")
    disable(alice, iq_id="3")
    disable(alice, iq_id="4")
    assert not h.component("carbons").is_enabled(alice)


def test_disco_announces_carbons():
    h = harness("disco")
    alice = online(h, "alice@localhost/phone")
    alice.feed(f"<iq type='get' id='i1' to='localhost'><query xmlns='{INFO}'/></iq>")
    query = next(only(alice).elements(INFO, "query"))
    assert CARBONS in [f["var"] for f in query.elements(INFO, "feature")]


def test_carbons_get_is_not_served():
    h = harness()
    alice = online(h, "alice@localhost/phone")
    alice.feed(f"<iq type='get' id='g'><enable xmlns='{CARBONS}'/></iq>")
    assert error_condition(only(alice)) == "service-unavailable"


# -- sent copies (§8) -------------------------------------------------------------

def test_sent_message_is_copied_to_other_enabled_resources_only():
    h = harness()
    phone = online(h, "alice@localhost/phone", carbons=True)
    desk = online(h, "alice@localhost/desk", carbons=True)
    tablet = online(h, "alice@localhost/tablet")
    bob = online(h, "bob@localhost/pc")
    send(phone, "bob@localhost", mid="s1", body="hi bob")
    assert_message(only(bob), "alice@localhost/phone", "bob@localhost", mid="s1", body="hi bob")
    assert_carbon(desk, "sent", "alice@localhost/phone", "bob@localhost", mid="s1", body="hi bob")
    assert tablet.take() == []
    assert phone.take() == []


def test_sent_copies_do_not_depend_on_the_sender_enabling_carbons():
    h = harness()
    phone = online(h, "alice@localhost/phone")
    desk = online(h, "alice@localhost/desk", carbons=True)
    online(h, "bob@localhost/pc")
    send(phone, "bob@localhost/pc")
    assert_carbon(desk, "sent", "alice@localhost/phone", "bob@localhost/pc")
    assert phone.take() == []


def test_sent_copy_reaches_an_enabled_resource_that_sent_no_presence():
    h = harness()
    phone = online(h, "alice@localhost/phone")
    quiet = online(h, "alice@localhost/quiet", available=False, carbons=True)
    online(h, "bob@localhost/pc")
    send(phone, "bob@localhost")
    assert_carbon(quiet, "sent", "alice@localhost/phone", "bob@localhost")


def test_message_to_remote_domain_is_still_copied_to_other_resources():
    h = harness()
    phone = online(h, "alice@localhost/phone")
    desk = online(h, "alice@localhost/desk", carbons=True)
    send(phone, "juliet@capulet.example/balcony", mid="far")
    assert_carbon(desk, "sent", "alice@localhost/phone", "juliet@capulet.example/balcony",
                  mid="far")
    # the harness has no s2s: the sender alone learns that, not the copies
    assert error_condition(only(phone)) == "remote-server-not-found"


def test_message_to_unknown_local_user_is_still_copied_to_other_resources():
    h = harness()
    phone = online(h, "alice@localhost/phone")
    desk = online(h, "alice@localhost/desk", carbons=True)
    send(phone, "ghost@localhost", mid="g")
    assert_carbon(desk, "sent", "alice@localhost/phone", "ghost@localhost", mid="g")
    assert error_condition(only(phone)) == "service-unavailable"


def test_forwarded_message_keeps_every_child_and_attribute():
    h = harness()
    phone = online(h, "alice@localhost/phone")
    desk = online(h, "alice@localhost/desk", carbons=True)
    online(h, "bob@localhost/pc")
    phone.feed("<message to='bob@localhost' id='x1' type='chat' xml:lang='en'>"
               "<body>one</body><thread>t-9</thread>"
               "<active xmlns='http://jabber.org/protocol/chatstates'/>"
               "<request xmlns='urn:xmpp:receipts'/></message>")
    inner = unwrap(only(desk), "sent", desk)
    assert_message(inner, "alice@localhost/phone", "bob@localhost", mid="x1", body="one")
    assert inner.getAttribute(("http://www.w3.org/XML/1998/namespace", "lang")) == "en"
    assert [(c.uri, c.name) for c in inner.elements()] == [
        (CLIENT, "body"), (CLIENT, "thread"),
        ("http://jabber.org/protocol/chatstates", "active"), ("urn:xmpp:receipts", "request")]


def test_carbon_serialises_with_the_inner_message_in_jabber_client():
    h = harness()
    phone = online(h, "alice@localhost/phone")
    desk = online(h, "alice@localhost/desk", carbons=True)
    online(h, "bob@localhost/pc")
    send(phone, "bob@localhost", body="wire")
    reparsed = parse(only(desk).toXml())
    inner = unwrap(reparsed, "sent", desk)
    assert_message(inner, "alice@localhost/phone", "bob@localhost", body="wire")


def test_typeless_message_gets_a_typeless_carbon():
    h = harness()
    phone = online(h, "alice@localhost/phone")
    desk = online(h, "alice@localhost/desk", carbons=True)
    online(h, "bob@localhost/pc")
    send(phone, "bob@localhost", mtype=None, mid="n1")
    assert_carbon(desk, "sent", "alice@localhost/phone", "bob@localhost", mtype=None, mid="n1")


def test_disabling_stops_sent_copies():
    h = harness()
    phone = online(h, "alice@localhost/phone")
    desk = online(h, "alice@localhost/desk", carbons=True)
    online(h, "bob@localhost/pc")
    disable(desk)
    send(phone, "bob@localhost")
    assert desk.take() == []


# -- received copies (§7) ---------------------------------------------------------

def test_message_to_full_jid_is_copied_to_the_other_enabled_resources():
    h = harness()
    alice = online(h, "alice@localhost/phone")
    pc = online(h, "bob@localhost/pc", carbons=True)
    laptop = online(h, "bob@localhost/laptop", priority=5, carbons=True)
    plain = online(h, "bob@localhost/plain", priority=5)
    send(alice, "bob@localhost/pc", mid="f1")
    assert_message(only(pc), "alice@localhost/phone", "bob@localhost/pc", mid="f1")
    assert_carbon(laptop, "received", "alice@localhost/phone", "bob@localhost/pc", mid="f1")
    assert plain.take() == []
    assert alice.take() == []


def test_message_to_gone_full_jid_gives_each_resource_one_copy():
    h = harness()
    alice = online(h, "alice@localhost/phone")
    desk = online(h, "bob@localhost/desk", priority=5, carbons=True)
    phone = online(h, "bob@localhost/phone", priority=0, carbons=True)
    send(alice, "bob@localhost/gone", mid="fb")
    assert_message(only(desk), "alice@localhost/phone", "bob@localhost/gone", mid="fb")
    assert_carbon(phone, "received", "alice@localhost/phone", "bob@localhost/gone", mid="fb")


def test_message_to_bare_jid_copies_only_to_resources_routing_skips():
    h = harness()
    alice = online(h, "alice@localhost/phone")
    desk = online(h, "bob@localhost/desk", priority=10, carbons=True)
    phone = online(h, "bob@localhost/phone", priority=1, carbons=True)
    tablet = online(h, "bob@localhost/tablet", priority=1)
    shy = online(h, "bob@localhost/shy", priority=-1, carbons=True)
    send(alice, "bob@localhost", mid="b1")
    assert_message(only(desk), "alice@localhost/phone", "bob@localhost", mid="b1")
    assert_carbon(phone, "received", "alice@localhost/phone", "bob@localhost", mid="b1")
    assert_carbon(shy, "received", "alice@localhost/phone", "bob@localhost", mid="b1")
    assert tablet.take() == []


def test_message_to_bare_jid_with_tied_top_resources_makes_no_carbons():
    h = harness()
    alice = online(h, "alice@localhost/phone")
    a = online(h, "bob@localhost/a", priority=3, carbons=True)
    b = online(h, "bob@localhost/b", priority=3, carbons=True)
    send(alice, "bob@localhost")
    for session in (a, b):
        assert_message(only(session), "alice@localhost/phone", "bob@localhost")


def test_message_from_remote_server_is_copied():
    h = harness()
    pc = online(h, "bob@localhost/pc", priority=5)
    phone = online(h, "bob@localhost/phone", carbons=True)
    h.router.route(parse("<message xmlns='jabber:server' from='juliet@capulet.example/balcony'"
                         " to='bob@localhost' id='r1' type='chat'><body>hello</body></message>"))
    assert_message(only(pc), "juliet@capulet.example/balcony", "bob@localhost", mid="r1")
    assert_carbon(phone, "received", "juliet@capulet.example/balcony", "bob@localhost", mid="r1")


def test_copy_of_s2s_message_is_in_jabber_client_namespace():
    h = harness()
    online(h, "bob@localhost/pc", priority=5)
    phone = online(h, "bob@localhost/phone", carbons=True)
    h.router.route(parse("<message xmlns='jabber:server' from='juliet@capulet.example/balcony'"
                         " to='bob@localhost' type='chat'><body>hi</body></message>"))
    inner = unwrap(only(phone), "received", phone)
    assert {(c.uri, c.name) for c in inner.elements()} == {(CLIENT, "body")}


def test_bounce_from_bare_jid_is_copied_to_the_other_resources():
    h = harness()
    phone = online(h, "alice@localhost/phone")
    desk = online(h, "alice@localhost/desk", carbons=True)
    h.router.route(parse("<message from='juliet@capulet.example' to='alice@localhost/phone'"
                         " id='m1' type='error'><body>hello</body><error type='cancel'>"
                         "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
                         "</error></message>"))
    assert only(phone)["type"] == "error"
    assert_carbon(desk, "received", "juliet@capulet.example", "alice@localhost/phone",
                  mtype="error")


def test_error_from_full_jid_is_not_copied():
    h = harness()
    phone = online(h, "alice@localhost/phone")
    desk = online(h, "alice@localhost/desk", carbons=True)
    h.router.route(parse("<message from='juliet@capulet.example/balcony'"
                         " to='alice@localhost/phone' type='error'><error type='cancel'>"
                         "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
                         "</error></message>"))
    assert len(phone.take()) == 1
    assert desk.take() == []


def test_disabling_stops_received_copies():
    h = harness()
    alice = online(h, "alice@localhost/phone")
    online(h, "bob@localhost/pc", priority=5)
    phone = online(h, "bob@localhost/phone", carbons=True)
    disable(phone)
    send(alice, "bob@localhost")
    assert phone.take() == []


# -- messages between one user's own resources ------------------------------------

def test_message_to_own_bare_jid_reaches_each_resource_once():
    h = harness()
    phone = online(h, "alice@localhost/phone", priority=0, carbons=True)
    desk = online(h, "alice@localhost/desk", priority=9, carbons=True)
    tablet = online(h, "alice@localhost/tablet", priority=1, carbons=True)
    send(phone, "alice@localhost", mid="note")
    assert_message(only(desk), "alice@localhost/phone", "alice@localhost", mid="note")
    assert_carbon(tablet, "sent", "alice@localhost/phone", "alice@localhost", mid="note")
    assert phone.take() == []


def test_message_to_own_other_resource_reaches_each_resource_once():
    h = harness()
    phone = online(h, "alice@localhost/phone", carbons=True)
    desk = online(h, "alice@localhost/desk", carbons=True)
    tablet = online(h, "alice@localhost/tablet", carbons=True)
    send(phone, "alice@localhost/desk", mid="hand-off")
    assert_message(only(desk), "alice@localhost/phone", "alice@localhost/desk", mid="hand-off")
    assert_carbon(tablet, "sent", "alice@localhost/phone", "alice@localhost/desk",
                  mid="hand-off")
    assert phone.take() == []


# -- what is not copied (§6.1, §9) ------------------------------------------------

@pytest.mark.parametrize("marker", [
    f"<private xmlns='{CARBONS}'/>",
    "<no-copy xmlns='urn:xmpp:hints'/>",
    f"<private xmlns='{CARBONS}'/><no-copy xmlns='urn:xmpp:hints'/>",
])
def test_private_or_no_copy_message_is_not_copied_either_way(marker):
    h = harness()
    alice = online(h, "alice@localhost/phone")
    alice_desk = online(h, "alice@localhost/desk", carbons=True)
    bob = online(h, "bob@localhost/pc", priority=5)
    bob_phone = online(h, "bob@localhost/phone", carbons=True)
    send(alice, "bob@localhost", extra=marker)
    delivered = only(bob)
    assert alice_desk.take() == []
    assert bob_phone.take() == []
    # XEP-0280 1.0 §9: the <private/> element is no longer stripped
    assert [c.toXml() for c in delivered.elements() if c.name != "body"] == \
        [c.toXml() for c in parse(f"<x>{marker}</x>").elements()]


@pytest.mark.parametrize("mtype", ["headline", "groupchat"])
def test_headline_and_groupchat_are_not_copied(mtype):
    h = harness()
    alice = online(h, "alice@localhost/phone")
    alice_desk = online(h, "alice@localhost/desk", carbons=True)
    bob = online(h, "bob@localhost/pc")
    bob_laptop = online(h, "bob@localhost/laptop", carbons=True)
    send(alice, "bob@localhost/pc", mtype=mtype)
    assert len(bob.take()) == 1
    assert bob_laptop.take() == []
    assert alice_desk.take() == []


def test_normal_message_needs_a_body_or_im_payload():
    h = harness()
    alice = online(h, "alice@localhost/phone")
    desk = online(h, "alice@localhost/desk", carbons=True)
    online(h, "bob@localhost/pc")
    send(alice, "bob@localhost/pc", mtype="normal", body=None, mid="empty",
         extra="<x xmlns='urn:example:gadget'/>")
    assert desk.take() == []
    send(alice, "bob@localhost/pc", mtype="normal", body=None, mid="receipt",
         extra="<received xmlns='urn:xmpp:receipts' id='m0'/>")
    carbon = only(desk)
    assert unwrap(carbon, "sent", desk)["id"] == "receipt"
    send(alice, "bob@localhost/pc", mtype="normal", mid="said")
    assert_carbon(desk, "sent", "alice@localhost/phone", "bob@localhost/pc", mtype="normal",
                  mid="said")


def test_incoming_muc_private_message_is_not_copied():
    h = harness()
    pc = online(h, "bob@localhost/pc")
    phone = online(h, "bob@localhost/phone", carbons=True)
    h.router.route(parse("<message from='room@conference.example/nurse' to='bob@localhost/pc'"
                         " type='chat'><body>psst</body>"
                         "<x xmlns='http://jabber.org/protocol/muc#user'/></message>"))
    assert len(pc.take()) == 1
    assert phone.take() == []


def test_outgoing_muc_private_message_is_copied():
    h = harness()
    alice = online(h, "alice@localhost/phone")
    desk = online(h, "alice@localhost/desk", carbons=True)
    send(alice, "room@conference.example/nurse", mid="pm",
         extra="<x xmlns='http://jabber.org/protocol/muc#user'/>")
    assert_carbon(desk, "sent", "alice@localhost/phone", "room@conference.example/nurse",
                  mid="pm")


def test_mediated_muc_invitation_is_copied():
    h = harness()
    online(h, "bob@localhost/pc", priority=5)
    phone = online(h, "bob@localhost/phone", carbons=True)
    h.router.route(parse("<message from='room@conference.example' to='bob@localhost' id='inv'>"
                         "<x xmlns='http://jabber.org/protocol/muc#user'>"
                         "<invite from='crone@example.org'/></x></message>"))
    assert unwrap(only(phone), "received", phone)["id"] == "inv"


def test_client_made_carbon_wrapper_is_not_copied_again():
    h = harness()
    tybalt = online(h, "tybalt@localhost/home")
    online(h, "bob@localhost/pc", priority=5)
    phone = online(h, "bob@localhost/phone", carbons=True)
    send(tybalt, "bob@localhost", extra=f"<received xmlns='{CARBONS}'><forwarded "
         f"xmlns='{FORWARD}'><message from='x@localhost/y' to='bob@localhost'>"
         "<body>forged</body></message></forwarded></received>")
    assert phone.take() == []


@pytest.mark.parametrize("xml, inbound, expected", [
    ("<message type='chat'/>", False, True),
    ("<message><body>x</body></message>", True, True),
    ("<message type='normal'/>", True, False),
    ("<message><x xmlns='jabber:x:conference' jid='room@conference.example'/></message>",
     True, True),
    ("<message type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/>"
     "</message>", True, True),
    ("<message><displayed xmlns='urn:xmpp:chat-markers:0' id='1'/></message>", False, True),
    ("<message type='headline'><body>x</body></message>", True, False),
    ("<message type='groupchat'><body>x</body></message>", False, False),
    ("<message type='error' from='a@b'/>", True, True),
    ("<message type='error' from='a@b'/>", False, False),
    ("<message type='error' from='a@b/c'/>", True, False),
    ("<message type='chat'><x xmlns='http://jabber.org/protocol/muc#user'/></message>",
     True, False),
    ("<message type='chat'><x xmlns='http://jabber.org/protocol/muc#user'/></message>",
     False, True),
    ("<message type='bogus'><body>x</body></message>", True, False),
])
def test_eligibility_rules(xml, inbound, expected):
    assert eligible(parse(xml), inbound) is expected


# -- the flag's lifetime -----------------------------------------------------------

def test_logout_forgets_the_flag():
    h = harness()
    alice = online(h, "alice@localhost/phone")
    desk = online(h, "alice@localhost/desk", carbons=True)
    online(h, "bob@localhost/pc")
    desk.logout()
    assert not h.component("carbons").is_enabled(desk)
    again = online(h, "alice@localhost/desk")
    send(alice, "bob@localhost")
    assert again.take() == []
    assert desk.take() == []


def test_replacing_session_does_not_inherit_the_flag():
    h = harness()
    alice = online(h, "alice@localhost/phone")
    old = online(h, "alice@localhost/desk", carbons=True)
    new = online(h, "alice@localhost/desk")
    assert old.stream_errors == ["conflict"]
    online(h, "bob@localhost/pc")
    send(alice, "bob@localhost")
    assert new.take() == []
    assert old.take() == []


# -- property: every resource gets a message once at most --------------------------

resources = st.lists(st.tuples(st.booleans(), st.integers(min_value=-2, max_value=2),
                               st.booleans()), min_size=1, max_size=5)


@settings(max_examples=60, deadline=None)
@given(resources=resources, mtype=st.sampled_from([None, "normal", "chat"]),
       direct=st.booleans())
def test_enabled_resources_get_exactly_one_copy_of_a_chat(resources, mtype, direct):
    """§7: whether routing hands a resource the message or not (lower or
    negative priority, unavailable), an enabled one ends up with exactly one
    copy — unless routing hands it to nobody: then it is kept for offline
    delivery (XEP-0160), and a carbon now would make that a second copy."""
    h = harness()
    alice = online(h, "alice@localhost/phone")
    sessions = [online(h, f"bob@localhost/r{i}", priority=p, available=avail, carbons=on)
                for i, (avail, p, on) in enumerate(resources)]
    to = "bob@localhost/r0" if direct else "bob@localhost"
    send(alice, to, mtype=mtype)
    routed = direct or any(avail and p >= 0 for avail, p, _ in resources)
    for session, (avail, p, on) in zip(sessions, resources):
        got = session.take()
        if not routed:
            assert got == []  # nobody has it yet: offline storage will deliver it once
        elif on:
            assert len(got) == 1  # the original or a carbon, never both
        else:
            assert len(got) <= 1
        if got and any(c.uri == CARBONS for c in got[0].elements()):
            assert on
            assert_message(unwrap(got[0], "received", session), "alice@localhost/phone", to,
                           mtype=mtype)


def test_an_undelivered_carbon_copy_goes_nowhere_else():
    h = harness("offline")
    phone = online(h, "bob@localhost/phone", carbons=True)
    laptop = online(h, "bob@localhost/laptop", carbons=True)
    phone.logout()
    h.router.undelivered("message", parse(
        "<message from='bob@localhost' to='bob@localhost/phone' type='chat'>"
        "<received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>"
        "<message xmlns='jabber:client' from='alice@localhost/a' to='bob@localhost/laptop' "
        "type='chat'><body>hi</body></message></forwarded></received></message>"), phone)
    assert not [s for s in laptop.take() if s.name == "message"]


def test_an_archived_undelivered_message_is_not_routed_again_to_resources_that_had_their_copy():
    """A session that ends with a message unwritten (or unacknowledged under
    XEP-0198): the user's carbons-enabled resources got it already, directly
    or as a carbon, and the archive has it: no second copy."""
    h = harness("offline")
    phone = online(h, "bob@localhost/phone", carbons=True)
    laptop = online(h, "bob@localhost/laptop", carbons=True)
    phone.logout()
    h.router.undelivered("message", parse(
        "<message from='alice@localhost/a' to='bob@localhost/phone' type='chat' id='m1'>"
        "<body>hi</body><stanza-id xmlns='urn:xmpp:sid:0' by='bob@localhost' id='x1'/>"
        "</message>"), phone)
    assert not [s for s in laptop.take() if s.name == "message"]


def test_an_undelivered_message_not_in_the_archive_is_routed_again_even_to_carbons_resources():
    h = harness("offline")
    phone = online(h, "bob@localhost/phone", carbons=True)
    laptop = online(h, "bob@localhost/laptop", carbons=True)
    phone.logout()
    h.router.undelivered("message", parse(
        "<message from='alice@localhost/a' to='bob@localhost/phone' type='chat' id='m1'>"
        "<body>hi</body></message>"), phone)
    assert [str(s.body) for s in laptop.take() if s.name == "message"] == ["hi"]


def test_an_undelivered_message_still_reaches_a_resource_without_carbons():
    h = harness("offline")
    phone = online(h, "bob@localhost/phone", carbons=True)
    laptop = online(h, "bob@localhost/laptop", carbons=False)
    phone.logout()
    h.router.undelivered("message", parse(
        "<message from='alice@localhost/a' to='bob@localhost/phone' type='chat' id='m1'>"
        "<body>hi</body></message>"), phone)
    assert [str(s.body) for s in laptop.take() if s.name == "message"] == ["hi"]
