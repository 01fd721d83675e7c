"""The router: destination classes, fallbacks, and the RFC's treatment of what nobody handles."""

import pytest

from xmppd.router import Router
from xmppd.testing import Harness, parse
from xmppd.testing import only, error_condition

STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
PING = "urn:xmpp:ping"


def recorder(h, *names):
    """Hook every event in ``names``; return the list of (event name, stanza id) seen."""
    seen = []
    for name in names:
        h.router.hook(name, lambda event: seen.append((event.name, event.stanza.getAttribute("id"))) or True)
    return seen


ALL_MESSAGE_EVENTS = ("message/host", "message/bare", "message/full", "message/self")


# -- destination classes ------------------------------------------------------------

@pytest.mark.parametrize("to, expected", [
    ("localhost", "message/host"),
    ("localhost/some-resource", "message/host"),
    ("bob@localhost", "message/bare"),
    ("bob@localhost/pc", "message/full"),
    ("alice@localhost", "message/self"),
    (None, "message/self"),
])
def test_destination_class_of_a_message(to, expected):
    h = Harness([])
    alice = h.login("alice@localhost/phone")
    seen = recorder(h, *ALL_MESSAGE_EVENTS)
    to_attr = f" to='{to}'" if to else ""
    alice.feed(f"<message id='m'{to_attr}><body>x</body></message>")
    assert seen == [(expected, "m")]
    assert alice.take() == []


def test_message_to_own_full_jid_is_full_not_self():
    h = Harness([])
    alice = h.login("alice@localhost/phone")
    seen = recorder(h, *ALL_MESSAGE_EVENTS)
    alice.feed("<message id='m' to='alice@localhost/laptop'/>")
    assert seen == [("message/full", "m")]


def test_iq_get_event_name_includes_payload_namespace_and_name():
    h = Harness([])
    alice = h.login("alice@localhost/phone")
    seen = recorder(h, "iq-get/host/urn:example:q:query", "iq-set/bare/urn:example:q:query",
                    "iq-get/full/urn:example:q:query")
    alice.feed("<iq type='get' id='a' to='localhost'><query xmlns='urn:example:q'/></iq>")
    alice.feed("<iq type='set' id='b' to='bob@localhost'><query xmlns='urn:example:q'/></iq>")
    alice.feed("<iq type='get' id='c' to='bob@localhost/pc'><query xmlns='urn:example:q'/></iq>")
    assert seen == [("iq-get/host/urn:example:q:query", "a"),
                    ("iq-set/bare/urn:example:q:query", "b"),
                    ("iq-get/full/urn:example:q:query", "c")]


def test_iq_falls_back_to_kind_event_when_no_payload_handler():
    h = Harness([])
    alice = h.login("alice@localhost/phone")
    seen = recorder(h, "iq/host")
    alice.feed("<iq type='get' id='a' to='localhost'><query xmlns='urn:example:q'/></iq>")
    assert seen == [("iq/host", "a")]
    assert alice.take() == []


def test_self_falls_back_to_bare_handlers():
    h = Harness([])
    alice = h.login("alice@localhost/phone")
    seen = recorder(h, "message/bare")
    alice.feed("<message id='no-to'/>")
    alice.feed("<message id='own-bare' to='alice@localhost'/>")
    assert seen == [("message/bare", "no-to"), ("message/bare", "own-bare")]


def test_self_handler_takes_precedence_over_bare():
    h = Harness([])
    alice = h.login("alice@localhost/phone")
    seen = recorder(h, "message/self", "message/bare")
    alice.feed("<message id='m'/>")
    assert seen == [("message/self", "m")]


def test_iq_without_to_falls_back_to_bare_payload_handler():
    h = Harness(["ping"])  # ping hooks iq-get/bare/urn:xmpp:ping:ping
    alice = h.login("alice@localhost/phone")
    alice.feed(f"<iq type='get' id='p'><ping xmlns='{PING}'/></iq>")
    reply = only(alice)
    assert (reply["type"], reply["id"], reply["to"]) == ("result", "p", "alice@localhost/phone")


# -- errors the router itself sends --------------------------------------------------

def test_unhandled_iq_get_gets_service_unavailable():
    h = Harness([])
    alice = h.login("alice@localhost/phone")
    alice.feed("<iq type='get' id='u1' to='localhost'><query xmlns='urn:example:nobody'/></iq>")
    reply = only(alice)
    assert (reply.name, reply["id"], reply["to"], reply["from"]) == (
        "iq", "u1", "alice@localhost/phone", "localhost")
    assert error_condition(reply) == "service-unavailable"
    assert [c.name for c in reply.elements()] == ["error"]  # no payload echoed, as Prosody


def test_unhandled_iq_set_to_a_bare_jid_gets_service_unavailable():
    h = Harness([])
    alice = h.login("alice@localhost/phone")
    h.login("bob@localhost/pc")
    alice.feed("<iq type='set' id='u2' to='bob@localhost'><query xmlns='urn:example:nobody'/></iq>")
    reply = only(alice)
    assert reply["from"] == "bob@localhost"
    assert error_condition(reply) == "service-unavailable"


def test_unhandled_iq_to_an_offline_full_jid_gets_service_unavailable():
    h = Harness([])
    alice = h.login("alice@localhost/phone")
    alice.feed("<iq type='get' id='u3' to='bob@localhost/gone'><query xmlns='urn:example:q'/></iq>")
    reply = only(alice)
    assert reply["from"] == "bob@localhost/gone"
    assert error_condition(reply) == "service-unavailable"


@pytest.mark.parametrize("to", ["a b@localhost", "alice@localhost/", "@localhost", "x@-bad"])
def test_malformed_to_gets_jid_malformed(to):
    h = Harness([])
    alice = h.login("alice@localhost/phone")
    alice.feed(f"<message id='bad' to='{to}' type='chat'><body>x</body></message>")
    reply = only(alice)
    assert reply["id"] == "bad"
    assert reply["to"] == "alice@localhost/phone"
    assert error_condition(reply) == "jid-malformed"


@pytest.mark.parametrize("to", ["bob@local..host", ".", "bob@.localhost"])
def test_to_with_empty_domain_label_gets_jid_malformed(to):
    # Twisted's nameprep raises IndexError on an empty label; it must not escape route()
    h = Harness([])
    alice = h.login("alice@localhost/phone")
    alice.feed(f"<iq type='get' id='bad' to='{to}'><ping xmlns='{PING}'/></iq>")
    assert error_condition(only(alice)) == "jid-malformed"


def test_remote_domain_without_s2s_gets_remote_server_not_found():
    h = Harness([])
    alice = h.login("alice@localhost/phone")
    alice.feed("<message id='r' to='bob@example.net' type='chat'><body>x</body></message>")
    reply = only(alice)
    assert (reply["id"], reply["to"], reply["from"]) == ("r", "alice@localhost/phone", "bob@example.net")
    assert error_condition(reply) == "remote-server-not-found"


def test_remote_domain_goes_to_the_remote_seam_when_set():
    h = Harness([])
    alice = h.login("alice@localhost/phone")
    sent = []
    h.router.remote = lambda stanza, to: sent.append((stanza["id"], to.full())) or True
    alice.feed("<message id='r' to='bob@example.net/x'/>")
    assert sent == [("r", "bob@example.net/x")]
    assert alice.take() == []


def test_remote_seam_refusing_gets_remote_server_not_found():
    h = Harness([])
    alice = h.login("alice@localhost/phone")
    h.router.remote = lambda stanza, to: False
    alice.feed("<iq type='get' id='r' to='example.net'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert error_condition(only(alice)) == "remote-server-not-found"


def test_iq_with_two_children_gets_bad_request():
    h = Harness(["ping"])
    alice = h.login("alice@localhost/phone")
    alice.feed(f"<iq type='get' id='two' to='localhost'><ping xmlns='{PING}'/>"
               f"<ping xmlns='{PING}'/></iq>")
    reply = only(alice)
    assert reply["id"] == "two"
    assert error_condition(reply) == "bad-request"


def test_iq_get_without_child_gets_bad_request():
    h = Harness(["ping"])
    alice = h.login("alice@localhost/phone")
    alice.feed("<iq type='get' id='none' to='localhost'/>")
    assert error_condition(only(alice)) == "bad-request"


@pytest.mark.parametrize("stype", ["result", "error"])
@pytest.mark.parametrize("to", ["localhost", "bob@localhost/gone", "bob@example.net", "a b@localhost"])
def test_iq_results_and_errors_are_never_bounced(stype, to):
    h = Harness([])
    alice = h.login("alice@localhost/phone")
    alice.feed(f"<iq type='{stype}' id='nb' to='{to}'/>")
    assert alice.take() == []


@pytest.mark.parametrize("to", ["ghost@localhost", "ghost@localhost/x", "bob@example.net"])
def test_message_errors_are_never_bounced(to):
    h = Harness([])
    alice = h.login("alice@localhost/phone")
    alice.feed(f"<message type='error' id='nb' to='{to}'/>")
    assert alice.take() == []


def test_iq_result_to_a_full_jid_is_delivered():
    h = Harness([])
    alice = h.login("alice@localhost/phone")
    bob = h.login("bob@localhost/pc")
    other = h.login("bob@localhost/other")
    alice.feed("<iq type='result' id='res' to='bob@localhost/pc'><x xmlns='urn:example:x'/></iq>")
    got = only(bob)
    assert (got.name, got["type"], got["id"], got["from"], got["to"]) == (
        "iq", "result", "res", "alice@localhost/phone", "bob@localhost/pc")
    assert next(got.elements("urn:example:x", "x"), None) is not None
    assert other.take() == [] and alice.take() == []


def test_iq_get_to_a_connected_full_jid_is_delivered():
    h = Harness([])
    alice = h.login("alice@localhost/phone")
    bob = h.login("bob@localhost/pc")
    alice.feed("<iq type='get' id='q' to='bob@localhost/pc'><query xmlns='jabber:iq:version'/></iq>")
    got = only(bob)
    assert (got["type"], got["id"], got["from"]) == ("get", "q", "alice@localhost/phone")
    assert alice.take() == []


@pytest.mark.parametrize("to", ["bob@localhost", "localhost", "ghost@localhost"])
@pytest.mark.parametrize("ptype", [None, "subscribe", "probe", "unavailable"])
def test_unhandled_presence_is_dropped_silently(to, ptype):
    h = Harness([])
    alice = h.login("alice@localhost/phone")
    bob = h.login("bob@localhost/pc")
    type_attr = f" type='{ptype}'" if ptype else ""
    alice.feed(f"<presence id='p' to='{to}'{type_attr}/>")
    assert alice.take() == [] and bob.take() == []


def test_unhandled_message_to_bare_bounces_service_unavailable():
    h = Harness([])  # no messaging component
    alice = h.login("alice@localhost/phone")
    alice.feed("<message id='m' to='bob@localhost' type='chat'/>")
    assert error_condition(only(alice)) == "service-unavailable"


@pytest.mark.parametrize("mtype", ["groupchat", "headline", "error"])
def test_unhandled_message_of_types_without_bounce_is_dropped(mtype):
    h = Harness([])
    alice = h.login("alice@localhost/phone")
    alice.feed(f"<message id='m' to='bob@localhost' type='{mtype}'/>")
    assert alice.take() == []


def test_route_without_origin_delivers_server_generated_stanza():
    h = Harness([])
    bob = h.login("bob@localhost/pc")
    h.router.route(parse("<message from='localhost' to='bob@localhost/pc' id='srv'>"
                         "<body>hi</body></message>"))
    got = only(bob)
    assert (got["from"], got["id"]) == ("localhost", "srv")


# -- sessions: bind and unbind ------------------------------------------------------

class Stub:
    def __init__(self, bare, resource):
        self.bare, self.resource = bare, resource
        self.priority, self.available = 0, True
        self.sent = []

    def send(self, stanza):
        self.sent.append(stanza)

    def stream_error(self, condition, text=None):
        pass


def test_bind_registers_a_session_and_returns_none():
    router = Router(["localhost"])
    s = Stub("alice@localhost", "phone")
    assert router.bind(s) is None
    assert router.resources("alice@localhost") == {"phone": s}


def test_bind_replacing_a_resource_returns_the_old_session():
    router = Router(["localhost"])
    old, new = Stub("alice@localhost", "phone"), Stub("alice@localhost", "phone")
    router.bind(old)
    assert router.bind(new) is old
    assert router.resources("alice@localhost") == {"phone": new}
    # the replaced session unbinding must not remove its replacement
    assert router.unbind(old) is False
    assert router.resources("alice@localhost") == {"phone": new}


def test_unbind_forgets_session_and_empty_bare_entry():
    router = Router(["localhost"])
    phone, laptop = Stub("alice@localhost", "phone"), Stub("alice@localhost", "laptop")
    router.bind(phone)
    router.bind(laptop)
    assert router.unbind(phone) is True
    assert router.resources("alice@localhost") == {"laptop": laptop}
    assert router.unbind(phone) is False
    assert router.unbind(laptop) is True
    assert "alice@localhost" not in router.sessions
    assert router.resources("alice@localhost") == {}


def test_unbind_of_never_bound_session_is_false():
    router = Router(["localhost"])
    assert router.unbind(Stub("nobody@localhost", "x")) is False


def test_harness_login_with_same_full_jid_kicks_the_old_session_with_conflict():
    h = Harness([])
    old = h.login("alice@localhost/phone")
    new = h.login("alice@localhost/phone")
    assert old.stream_errors == ["conflict"]
    assert new.stream_errors == []
    assert h.router.resources("alice@localhost") == {"phone": new}
    h.login("bob@localhost/pc").feed("<iq type='result' id='x' to='alice@localhost/phone'/>")
    assert old.take() == [] and len(new.take()) == 1


def test_hook_returns_an_unhook_function():
    router = Router(["localhost"])
    unhook = router.hook("message/host", lambda e: True)
    assert router.has_handlers("message/host")
    unhook()
    assert not router.has_handlers("message/host")
    unhook()  # idempotent


def test_hooks_with_equal_priority_run_in_registration_order():
    router = Router(["localhost"])
    calls = []
    router.hook("custom", lambda e: calls.append("a"))
    router.hook("custom", lambda e: calls.append("b"))
    router.hook("custom", lambda e: calls.append("first") and False, priority=5)
    assert router.fire("custom", object()) is False
    assert calls == ["first", "a", "b"]


def test_drain_waits_for_work_handlers_left_unfinished():
    """A graceful stop waits for handlers' Deferreds (store writes) before the
    storage closes; drain fires once they, and what they started, are done."""
    from twisted.internet import defer
    h = Harness([])
    alice = h.login("alice@localhost/phone")
    gate, second = defer.Deferred(), defer.Deferred()
    # the first handler's work goes on to route another stanza before it ends
    first = gate.addCallback(lambda _: alice.feed("<presence to='localhost'/>"))
    h.router.hook("message/host", lambda event: first)
    h.router.hook("presence/host", lambda event: second)
    alice.feed("<message to='localhost' id='m'/>")
    drained = h.router.drain()
    assert not drained.called
    gate.callback(None)
    assert not drained.called  # the work the first started is still running
    second.callback(True)
    assert drained.called
