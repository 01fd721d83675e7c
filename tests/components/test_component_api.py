"""The Component API: @handles, priorities, handler return conventions, life cycle.

The components are defined at module level: the harness loads a component
class through its dotted ``module:qualname`` path, so a class defined inside a
test function (``<locals>`` in its qualname) cannot be used.
"""

from twisted.internet import defer
from twisted.words.xish import domish

from xmppd.component import Component, handles
from xmppd.testing import Harness
from xmppd.testing import only, error_condition

STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
ECHO = "urn:example:echo"
CALLS: list[str] = []


class EchoComponent(Component):
    """Handles two events with one method, and keeps Deferreds for the test to fire."""

    name = "echo"
    features = [ECHO]
    pending: list = []

    @handles(f"iq-get/host/{ECHO}:echo")
    @handles(f"iq-set/host/{ECHO}:echo")
    def echo(self, event):
        CALLS.append(f"echo:{event.name}")
        answer = domish.Element((ECHO, "echo"))
        answer["type"] = event.type
        answer.addContent(str(event.payload))
        return event.reply(answer)

    @handles(f"iq-get/host/{ECHO}:later")
    def later(self, event):
        d = defer.Deferred()
        d.addCallback(lambda text: event.reply(domish.Element((ECHO, text))))
        type(self).pending.append(d)
        return d

    @handles(f"iq-get/host/{ECHO}:later-fail")
    def later_fail(self, event):
        d = defer.Deferred()
        type(self).pending.append(d)
        return d

    @handles(f"iq-get/host/{ECHO}:boom")
    @handles("message/host")
    def boom(self, event):
        raise RuntimeError("handler bug, on purpose")


class FirstComponent(Component):
    """Two handlers on one event, at different priorities; the first may pass."""

    name = "first"
    passes = False

    @handles(f"iq-get/host/{ECHO}:order", priority=10)
    def high(self, event):
        CALLS.append("high")
        if type(self).passes:
            return False
        return event.reply(domish.Element((ECHO, "high")))

    @handles(f"iq-get/host/{ECHO}:order", priority=-10)
    def low(self, event):
        CALLS.append("low")
        return event.reply(domish.Element((ECHO, "low")))

    @handles(f"iq-get/host/{ECHO}:handled-true")
    def says_true(self, event):
        CALLS.append("true")
        event.origin.send(event.reply(domish.Element((ECHO, "by-hand"))))
        return True


class SecondComponent(Component):
    """A handler between FirstComponent's two, in another component."""

    name = "second"

    @handles(f"iq-get/host/{ECHO}:order", priority=0)
    def middle(self, event):
        CALLS.append("middle")
        return None


def setup_function(_):
    CALLS.clear()
    EchoComponent.pending = []
    FirstComponent.passes = False


def iq(session, child, iq_id="q1", itype="get", content=""):
    session.feed(f"<iq type='{itype}' id='{iq_id}' to='localhost'>"
                 f"<{child} xmlns='{ECHO}'>{content}</{child}></iq>")


def test_one_method_handles_two_events():
    h = Harness([EchoComponent])
    alice = h.login("alice@localhost/phone")
    iq(alice, "echo", "g", "get", "hi")
    iq(alice, "echo", "s", "set", "there")
    replies = alice.take()
    assert [(r["type"], r["id"]) for r in replies] == [("result", "g"), ("result", "s")]
    payloads = [next(r.elements(ECHO, "echo")) for r in replies]
    assert [(p["type"], str(p)) for p in payloads] == [("get", "hi"), ("set", "there")]
    assert CALLS == [f"echo:iq-get/host/{ECHO}:echo", f"echo:iq-set/host/{ECHO}:echo"]


def test_component_features_are_contributed_to_disco():
    h = Harness(["disco", EchoComponent])
    assert ECHO in h.server.disco_features()


def test_higher_priority_handler_runs_first_and_stops_the_chain():
    h = Harness([FirstComponent, SecondComponent])
    alice = h.login("alice@localhost/phone")
    iq(alice, "order")
    reply = only(alice)
    assert reply["type"] == "result"
    assert next(reply.elements(ECHO, "high"), None) is not None
    assert CALLS == ["high"]


def test_handler_returning_false_or_none_passes_to_the_next_in_priority_order():
    FirstComponent.passes = True
    h = Harness([FirstComponent, SecondComponent])
    alice = h.login("alice@localhost/phone")
    iq(alice, "order")
    reply = only(alice)
    assert next(reply.elements(ECHO, "low"), None) is not None
    assert CALLS == ["high", "middle", "low"]


def test_handler_returning_true_means_handled_and_nothing_more_is_sent():
    h = Harness([FirstComponent])
    alice = h.login("alice@localhost/phone")
    iq(alice, "handled-true")
    reply = only(alice)
    assert next(reply.elements(ECHO, "by-hand"), None) is not None
    assert CALLS == ["true"]


def test_handler_returning_element_sends_it_as_reply():
    h = Harness([EchoComponent])
    alice = h.login("alice@localhost/phone")
    iq(alice, "echo", "e1", content="x")
    reply = only(alice)
    assert (reply["type"], reply["id"], reply["to"], reply["from"]) == (
        "result", "e1", "alice@localhost/phone", "localhost")


def test_handler_returning_deferred_sends_reply_when_it_fires():
    h = Harness([EchoComponent])
    alice = h.login("alice@localhost/phone")
    iq(alice, "later", "slow")
    assert alice.take() == []
    (d,) = EchoComponent.pending
    d.callback("done")
    reply = only(alice)
    assert (reply["type"], reply["id"], reply["to"]) == ("result", "slow", "alice@localhost/phone")
    assert next(reply.elements(ECHO, "done"), None) is not None


def test_handler_deferred_failing_gets_internal_server_error():
    h = Harness([EchoComponent])
    alice = h.login("alice@localhost/phone")
    iq(alice, "later-fail", "lf")
    assert alice.take() == []
    (d,) = EchoComponent.pending
    d.errback(RuntimeError("backend down, on purpose"))
    reply = only(alice)
    assert reply["id"] == "lf"
    assert error_condition(reply) == "internal-server-error"


def test_handler_raising_gets_internal_server_error_and_routing_continues():
    h = Harness([EchoComponent])
    alice = h.login("alice@localhost/phone")
    iq(alice, "boom", "b1")
    reply = only(alice)
    assert (reply["id"], reply["to"], reply["from"]) == ("b1", "alice@localhost/phone", "localhost")
    assert error_condition(reply) == "internal-server-error"
    # the server keeps routing
    iq(alice, "echo", "after", content="still here")
    reply = only(alice)
    assert (reply["type"], reply["id"]) == ("result", "after")


def test_handler_raising_on_a_message_sends_nothing_back():
    h = Harness([EchoComponent])
    alice = h.login("alice@localhost/phone")
    alice.feed("<message to='localhost' id='m1'><body>hi</body></message>")
    assert alice.take() == []
    iq(alice, "echo", "after")
    assert only(alice)["type"] == "result"


def test_stop_service_unhooks_every_handler():
    h = Harness([EchoComponent])
    alice = h.login("alice@localhost/phone")
    name = f"iq-get/host/{ECHO}:echo"
    assert h.router.has_handlers(name)
    h.component("echo").stopService()
    assert not h.router.has_handlers(name)
    assert not h.router.has_handlers(f"iq-set/host/{ECHO}:echo")
    assert not h.router.has_handlers("message/host")
    iq(alice, "echo", "gone")
    reply = only(alice)
    assert reply["id"] == "gone"
    assert error_condition(reply) == "service-unavailable"
    assert CALLS == []


def test_stopping_one_component_leaves_the_others_hooked():
    FirstComponent.passes = True
    h = Harness([FirstComponent, SecondComponent])
    alice = h.login("alice@localhost/phone")
    h.component("second").stopService()
    iq(alice, "order")
    assert next(only(alice).elements(ECHO, "low"), None) is not None
    assert CALLS == ["high", "low"]


def test_restarting_a_component_hooks_it_once():
    h = Harness([EchoComponent])
    alice = h.login("alice@localhost/phone")
    component = h.component("echo")
    component.stopService()
    component.startService()
    iq(alice, "echo", "again")
    assert only(alice)["type"] == "result"
    assert len(CALLS) == 1
