"""XEP-0352 client state indication on a real :class:`ClientSession` (over the
recording fake framing of tests/streams), with contacts as harness sessions
and an injected clock: what an inactive client is sent at once, what is held
and how it is released, presence collapsed, and how held stanzas meet XEP-0198
stream management and the session's end."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from twisted.words.xish import domish

from xmppd import ns
from xmppd.components.csi import is_important, payload_names
from xmppd.config import ConfigError
from xmppd.router.fanout import Fanout
from xmppd.testing import Harness, parse
from tests.streams.test_sm import LosableFraming, bind, login

SM = ns.SM3
CHATSTATES = ns.CHATSTATES
ALICE = "alice@localhost/r"


def harness(csi: dict | None = None, **c2s) -> tuple[Harness, Clock]:
    clock = Clock()
    h = Harness(["ping", "roster", "presence", "messaging", "offline", "carbons", "csi"],
                clock=clock, options={"c2s": {k: str(v) for k, v in c2s.items()},
                                      "component:csi": {k: str(v) for k, v in (csi or {}).items()}})
    h.add_user("alice@localhost", "secret")
    return h, clock


def inactive(h: Harness, resource: str = "r", sm: bool = False) -> LosableFraming:
    alice = login(h)
    bind(alice, resource)
    if sm:
        alice.say(f"<enable xmlns='{SM}' resume='true'/>")
        assert alice.take()[0].name == "enabled"
    alice.say(f"<iq type='get' id='roster'><query xmlns='{ns.ROSTER}'/></iq>")
    alice.say("<presence/>")  # interested and available, as a real client
    h.server.clock.advance(0)
    alice.take()
    alice.say(f"<inactive xmlns='{ns.CSI}'/>")
    assert alice.take() == [] and not alice.closed
    return alice


def status(who, show: str, to: str = ALICE) -> None:
    who.feed(f"<presence to='{to}'><show>{show}</show></presence>")


def composing(who, to: str = ALICE) -> None:
    who.feed(f"<message to='{to}' type='chat'><composing xmlns='{CHATSTATES}'/></message>")


def chat(who, body: str, to: str = ALICE) -> None:
    who.feed(f"<message to='{to}' type='chat'><body>{body}</body></message>")


def summary(elements) -> list[tuple[str, str, str]]:
    """(kind, sender's resource, show / body / payload) of each stanza."""
    out = []
    for e in elements:
        child = next((c for c in e.elements() if c.name in ("show", "body", "composing")), None)
        what = "" if child is None else (str(child) if child.name != "composing" else "composing")
        out.append((e.name, (e.getAttribute("from") or "").partition("@")[0], what))
    return out


def delays(element: domish.Element) -> list[domish.Element]:
    return [c for c in element.elements() if c.uri == ns.DELAY and c.name == "delay"]


# -- the protocol -------------------------------------------------------------------------

def test_csi_is_offered_once_authenticated_and_not_before():
    h, _ = harness()
    alice = LosableFraming(h)
    alice.session.stream_opened("localhost", "1.0")
    [before] = alice.take()
    assert not [c for c in before.elements() if c.uri == ns.CSI]
    alice = login(h)  # authenticated, not bound
    alice.session.stream_opened("localhost", "1.0")
    [after] = alice.take()
    assert [(c.uri, c.name) for c in after.elements() if c.uri == ns.CSI] == [(ns.CSI, "csi")]


def test_inactive_is_accepted_before_bind_and_holds_after_it():
    h, clock = harness()
    bob = h.login("bob@localhost/pc")
    alice = login(h)
    alice.say(f"<inactive xmlns='{ns.CSI}'/>")
    assert alice.take() == [] and not alice.closed
    bind(alice)  # the bind result, an iq, is important: it passed
    clock.advance(10)  # the flushing moment after the bind result is over
    status(bob, "away")
    assert alice.take() == []
    assert h.component("csi").state(alice.session) == "inactive"


def test_an_unknown_csi_element_closes_the_stream():
    h, _ = harness()
    alice = login(h)
    bind(alice)
    alice.say(f"<sleepy xmlns='{ns.CSI}'/>")
    assert alice.errors == ["unsupported-stanza-type"]


# -- holding and releasing -----------------------------------------------------------------

def test_an_inactive_client_gets_presence_and_chat_states_only_with_the_next_message():
    h, clock = harness()
    bob = h.login("bob@localhost/pc")
    alice = inactive(h)
    status(bob, "away")
    composing(bob)
    bob.feed(f"<message to='{ALICE}' type='chat'><received xmlns='{ns.RECEIPTS}' id='x'/>"
             "</message>")
    assert alice.take() == []
    clock.advance(1)
    chat(bob, "hello")
    got = alice.take()
    assert summary(got) == [("presence", "bob", "away"), ("message", "bob", "composing"),
                            ("message", "bob", ""), ("message", "bob", "hello")]
    # what was held says since when, from the user's account; the message does not
    for held in got[:3]:
        [delay] = delays(held)
        assert delay.getAttribute("from") == "alice@localhost"
        assert delay.getAttribute("stamp") == "1970-01-01T00:00:00Z"
    assert delays(got[3]) == []


def test_presence_is_collapsed_to_the_newest_per_contact_resource_in_its_place():
    h, _ = harness()
    bob = h.login("bob@localhost/pc")
    carol = h.login("carol@localhost/pc")
    alice = inactive(h)
    status(bob, "away")
    status(carol, "dnd")
    composing(bob)
    status(bob, "xa")
    status(bob, "chat")
    assert alice.take() == []
    alice.say(f"<active xmlns='{ns.CSI}'/>")
    assert summary(alice.take()) == [("presence", "carol", "dnd"),
                                     ("message", "bob", "composing"),
                                     ("presence", "bob", "chat")]


def test_active_releases_everything_in_order_and_stops_holding():
    h, _ = harness()
    bob = h.login("bob@localhost/pc")
    alice = inactive(h)
    composing(bob)
    status(bob, "away")
    alice.say(f"<active xmlns='{ns.CSI}'/>")
    assert summary(alice.take()) == [("message", "bob", "composing"),
                                     ("presence", "bob", "away")]
    status(bob, "xa")
    assert summary(alice.take()) == [("presence", "bob", "xa")]
    assert h.component("csi").state(alice.session) == "active"


@pytest.mark.parametrize("important", [
    "<iq type='get' id='v1' to='{to}'><query xmlns='jabber:iq:version'/></iq>",
    "<presence type='subscribe' to='{bare}'/>",
    "<message to='{to}' type='normal'><subject>topic</subject></message>",
    f"<message to='{{to}}'><x xmlns='{ns.CONFERENCE}' jid='room@conference.localhost'/></message>",
])
def test_an_important_stanza_comes_after_what_was_held(important):
    h, _ = harness()
    bob = h.login("bob@localhost/pc")
    alice = inactive(h)
    status(bob, "away")
    bob.feed(important.format(to=ALICE, bare="alice@localhost"))
    got = alice.take()
    assert [e.name for e in got][0] == "presence" and len(got) == 2
    assert delays(got[1]) == []


def test_after_a_flush_stanzas_pass_for_a_moment_then_are_held_again():
    h, clock = harness({"resume_inactive_delay": 5})
    bob = h.login("bob@localhost/pc")
    alice = inactive(h)
    status(bob, "away")
    chat(bob, "wake up")
    assert len(alice.take()) == 2
    status(bob, "xa")
    assert summary(alice.take()) == [("presence", "bob", "xa")]  # flushing: passes
    assert h.component("csi").state(alice.session) == "flushing"
    clock.advance(5)
    status(bob, "dnd")
    assert alice.take() == []
    assert h.component("csi").state(alice.session) == "inactive"


def test_a_new_inactive_while_flushing_holds_at_once():
    h, _ = harness()
    bob = h.login("bob@localhost/pc")
    alice = inactive(h)
    chat(bob, "wake up")
    alice.take()
    alice.say(f"<inactive xmlns='{ns.CSI}'/>")
    status(bob, "away")
    assert alice.take() == []


def test_the_queue_size_bounds_what_is_held_the_next_stanza_flushes():
    h, _ = harness({"queue_size": 3})
    bob = h.login("bob@localhost/pc")
    alice = inactive(h)
    for _ in range(3):
        composing(bob)
    assert alice.take() == []
    status(bob, "away")
    got = alice.take()
    assert [e.name for e in got] == ["message"] * 3 + ["presence"]
    assert [len(delays(e)) for e in got] == [1, 1, 1, 0]


def test_a_stanza_from_the_client_releases_what_is_held():
    h, clock = harness()
    bob = h.login("bob@localhost/pc")
    alice = inactive(h)
    status(bob, "away")
    alice.say("<presence><show>away</show></presence>")
    clock.advance(0)
    got = alice.take()
    assert summary(got)[0] == ("presence", "bob", "away")


def test_ready_made_text_is_classified_and_held_or_passed():
    """A fanout's text: presence held and collapsed by its sender, a
    groupchat message with a body looked into and passed after the rest."""
    h, _ = harness()
    alice = inactive(h)
    session = alice.session
    for show in ("away", "xa"):
        fan = Fanout(parse(f"<presence from='room@conference.localhost/bob'>"
                           f"<show>{show}</show></presence>"))
        fan.send(session, ALICE)
    fan = Fanout(parse(f"<message from='room@conference.localhost/bob' type='groupchat'>"
                       f"<active xmlns='{CHATSTATES}'/></message>"))
    fan.send(session, ALICE)
    assert alice.take() == []
    Fanout(parse("<message from='room@conference.localhost/bob' type='groupchat'>"
                 "<body>hi all</body></message>")).send(session, ALICE)
    got = alice.take()
    assert [(e.name, str(e.show or e.body or "")) for e in got] == [
        ("presence", "xa"), ("message", ""), ("message", "hi all")]
    assert [len(delays(e)) for e in got] == [1, 1, 0]
    assert got[0].getAttribute("to") == ALICE


def test_a_held_element_is_not_changed_for_its_other_recipients():
    h, _ = harness()
    alice = inactive(h)
    element = parse("<presence from='bob@localhost/pc'><show>away</show></presence>")
    alice.session.send(element)
    assert delays(element) == []


# -- what is important ---------------------------------------------------------------------

WHAT = [
    ("<presence/>", False),
    ("<presence type='unavailable'/>", False),
    ("<presence type='error'/>", False),
    ("<presence type='subscribe'/>", True),
    ("<presence type='unsubscribed'/>", True),
    ("<iq type='result' id='1'/>", True),
    ("<message type='headline'><body>news</body></message>", False),
    ("<message type='error'/>", True),
    ("<message><body>hi</body></message>", True),
    ("<message type='groupchat'><body>hi</body></message>", True),
    ("<message type='groupchat'><subject/></message>", True),
    (f"<message><composing xmlns='{ns.CHATSTATES}'/></message>", False),
    (f"<message><received xmlns='{ns.RECEIPTS}' id='1'/></message>", False),
    (f"<message><displayed xmlns='{ns.CHAT_MARKERS}' id='1'/></message>", False),
    (f"<message><encryption xmlns='{ns.EME}' namespace='eu.siacs.conversations.axolotl'/>"
     "</message>", True),
    (f"<message><x xmlns='{ns.CONFERENCE}' jid='r@c'/></message>", True),
    (f"<message><x xmlns='{ns.MUC_USER}'><invite from='a@b'/></x></message>", True),
    (f"<message><x xmlns='{ns.MUC_USER}'><status code='104'/></x></message>", False),
    (f"<message><propose xmlns='{ns.JINGLE_MESSAGE_0}' id='c'/></message>", True),
    (f"<message><sent xmlns='{ns.CARBONS}'><forwarded xmlns='{ns.FORWARD}'>"
     f"<message xmlns='{ns.CLIENT}'><composing xmlns='{ns.CHATSTATES}'/></message>"
     "</forwarded></sent></message>", True),
    (f"<message><received xmlns='{ns.CARBONS}'><forwarded xmlns='{ns.FORWARD}'>"
     f"<message xmlns='{ns.CLIENT}'><body>hi</body></message></forwarded></received>"
     "</message>", True),
    (f"<message><received xmlns='{ns.CARBONS}'><forwarded xmlns='{ns.FORWARD}'>"
     f"<message xmlns='{ns.CLIENT}'><composing xmlns='{ns.CHATSTATES}'/></message>"
     "</forwarded></received></message>", False),
]


@pytest.mark.parametrize("xml,important", WHAT)
def test_importance_follows_mod_csi_simple_for_elements_and_text(xml, important):
    assert is_important(parse(xml)) is important
    text = parse(xml).toXml(defaultUri=ns.CLIENT)
    assert is_important(text) is important


def test_important_payloads_make_a_message_important():
    names = payload_names("{urn:example:alert}alert")
    xml = "<message><alert xmlns='urn:example:alert'/></message>"
    assert not is_important(parse(xml)) and is_important(parse(xml), names)
    with pytest.raises(ValueError):
        payload_names("alert")


def test_a_malformed_important_payloads_option_is_a_config_error():
    with pytest.raises(ConfigError):
        harness({"important_payloads": "urn:example:alert"})


# -- stream management and the session's end ---------------------------------------------

def test_held_stanzas_are_not_counted_by_stream_management_until_written():
    h, clock = harness()
    bob = h.login("bob@localhost/pc")
    alice = inactive(h, sm=True)
    sent = alice.session.sm.sent
    status(bob, "away")
    composing(bob)
    clock.advance(0)
    assert alice.session.sm.sent == sent and alice.take() == []  # not even an <r/>
    alice.say(f"<active xmlns='{ns.CSI}'/>")
    clock.advance(0)
    assert alice.session.sm.sent == sent + 2
    assert [e.name for e in alice.take() if e.uri == ns.CLIENT] == ["presence", "message"]


def test_hibernation_releases_what_is_held_into_the_queue_and_resumption_is_active():
    h, clock = harness()
    bob = h.login("bob@localhost/pc")
    alice = inactive(h, sm=True)
    [enabled_id] = [s for s, v in h.server.sm.resumable.items() if v is alice.session]
    composing(bob)
    status(bob, "away")
    session = alice.session
    session.sm.queue.clear()
    session.sm.sent = 0
    alice.lose()
    assert [k for _, k, _ in session.sm.queue] == ["message", "presence"]
    again = login(h)
    again.say(f"<resume xmlns='{SM}' previd='{enabled_id}' h='0'/>")
    got = again.take()
    assert [e.name for e in got][:3] == ["resumed", "message", "presence"]
    assert h.component("csi").state(session) == "active"
    status(bob, "xa")
    assert summary(again.take())[0] == ("presence", "bob", "xa")


def test_a_closing_session_loses_no_held_message_it_goes_to_another_resource():
    h, clock = harness()
    bob = h.login("bob@localhost/pc")
    other = login(h)
    bind(other, "laptop")
    other.say("<presence/>")
    clock.advance(0)
    alice = inactive(h)
    composing(bob)
    other.take()
    alice.session.close()
    clock.advance(0)
    assert summary(e for e in other.take() if e.name == "message") == [
        ("message", "bob", "composing")]
    assert alice.take() == []  # nothing written to the closing stream


def other_resource(h: Harness, clock: Clock) -> LosableFraming:
    """alice/laptop, available: where a message for a closed alice/r goes."""
    other = login(h)
    bind(other, "laptop")
    other.say("<presence/>")
    clock.advance(0)
    other.take()
    return other


def messages(framing: LosableFraming) -> list[tuple[str, str, str]]:
    return summary(e for e in framing.take() if e.name == "message")


def test_a_closing_stream_management_session_hands_held_and_unacknowledged_on_once():
    h, clock = harness()
    bob = h.login("bob@localhost/pc")
    other = other_resource(h, clock)
    alice = inactive(h, sm=True)
    chat(bob, "unacked")  # written, not acknowledged
    clock.advance(10)
    composing(bob)  # held
    alice.take()
    alice.session.framing.stream_error("policy-violation")
    clock.advance(0)
    assert sorted(messages(other)) == [("message", "bob", "composing"),
                                       ("message", "bob", "unacked")]
    assert alice.take() == []  # nothing written to the closing stream


def test_a_clean_close_with_stream_management_writes_nothing_after_the_last_ack():
    # The held <composing/> was written after the final <a h='…'/> and also
    # re-routed (stream management re-routes what it queued): a duplicate.
    h, clock = harness()
    bob = h.login("bob@localhost/pc")
    other = other_resource(h, clock)
    alice = inactive(h, sm=True)
    composing(bob)  # held
    alice.session.close()
    clock.advance(0)
    written = alice.take()
    assert [e.name for e in written] == ["a"]
    assert messages(other) == [("message", "bob", "composing")]


def test_hibernation_then_resumption_delivers_held_once_on_the_new_connection():
    h, clock = harness()
    bob = h.login("bob@localhost/pc")
    other = other_resource(h, clock)
    alice = inactive(h, sm=True)
    session = alice.session
    composing(bob)
    alice.lose()
    again = login(h)
    again.say(f"<resume xmlns='{SM}' previd='{session.sm.id}' h='{session.sm.acked}'/>")
    clock.advance(0)
    assert messages(again) == [("message", "bob", "composing")]
    assert messages(other) == []


def test_hibernation_then_expiry_hands_held_on_once():
    h, clock = harness(resume_timeout=60)
    bob = h.login("bob@localhost/pc")
    other = other_resource(h, clock)
    alice = inactive(h, sm=True)
    composing(bob)
    alice.lose()
    assert messages(other) == []
    clock.advance(61)
    assert h.router.resources("alice@localhost").keys() == {"laptop"}
    assert messages(other) == [("message", "bob", "composing")]


def test_a_session_ending_while_hibernating_with_stanzas_held_hands_them_on_once():
    # (hibernated unannounced: nothing released them at the hibernation)
    h, clock = harness(resume_timeout=60)
    bob = h.login("bob@localhost/pc")
    other = other_resource(h, clock)
    alice = inactive(h, sm=True)
    session = alice.session
    composing(bob)
    h.server.sm.hibernate(session, announce=False)
    assert h.component("csi").state(session) == "inactive"
    clock.advance(61)
    assert messages(other) == [("message", "bob", "composing")]
    assert alice.take() == []


def test_a_resumption_while_the_old_connection_is_up_releases_held_after_the_resent():
    h, clock = harness()
    bob = h.login("bob@localhost/pc")
    other = other_resource(h, clock)
    alice = inactive(h, sm=True)
    session = alice.session
    chat(bob, "unacked")
    clock.advance(10)
    composing(bob)  # held
    alice.take()
    again = login(h)
    again.say(f"<resume xmlns='{SM}' previd='{session.sm.id}' h='{session.sm.acked}'/>")
    clock.advance(0)
    got = again.take()
    assert got[0].name == "resumed"
    assert summary(e for e in got if e.name == "message") == [
        ("message", "bob", "unacked"), ("message", "bob", "composing")]
    assert h.component("csi").state(session) == "active"  # XEP-0352 §5.2
    composing(bob)
    assert messages(again) == [("message", "bob", "composing")]  # not held
    assert messages(other) == [] and alice.take() == []


def test_an_account_deletion_forgets_its_sessions_state():
    h, _ = harness()
    alice = inactive(h)
    csi = h.component("csi")
    h.server.router.notify("account-deleted", "alice@localhost")
    assert csi.state(alice.session) == "active"
