"""The client negotiation apart from any framing: a :class:`ClientSession` over
a recording fake framing that implements exactly the documented
:class:`~xmppd.streams.negotiation.Framing` contract (what a BOSH transport
will implement), on the in-memory server and an injected clock."""

from __future__ import annotations

import base64

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.words.xish import domish

from xmppd import ns
from xmppd.streams.negotiation import ClientSession
from xmppd.testing import Harness, parse


class FakeFraming:
    """A framing that writes nothing: it records what the session asks of it,
    and calls the session back the way the contract says a framing must."""

    def __init__(self, h: Harness, secure: bool = True, starttls: bool = False,
                 shape: object = "fake"):
        self.address, self.peer = "192.0.2.7", "192.0.2.7:4000"
        self.secure, self.starttls, self.shape = secure, starttls, shape
        self.channel = "fake"
        self.closed = False
        self.domain: str | None = None
        self.sent: list[str] = []  # every element, serialised
        self.calls: list[str] = []
        self.errors: list[str] = []
        self.reading = True
        self.session = ClientSession(h.server, self)

    # the contract
    def open_stream(self) -> None:
        self.calls.append(f"open {self.domain}")

    def send(self, element) -> None:
        if self.closed:
            if not isinstance(element, str):
                self.session.undelivered(element.name, element)
            return
        self.sent.append(element if isinstance(element, str) else self.serialize(element))

    def serialize(self, element: domish.Element) -> str:
        return element.toXml(prefixes={ns.STREAMS: "stream"})

    def restart(self) -> None:
        self.calls.append("restart")

    def start_tls(self) -> bool:
        self.calls.append("start_tls")
        return False

    def stream_error(self, condition: str, text: str | None = None) -> None:
        if self.closed:
            return
        self.session.closing()
        self.errors.append(condition)
        self.closed = True
        self.session.ended()

    def close(self) -> None:
        if self.closed:
            return
        self.session.closing()
        self.calls.append("close")
        self.closed = True
        self.session.ended()

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def drained(self) -> defer.Deferred:
        return defer.succeed(None)

    def bound(self) -> None:
        self.calls.append("bound")

    def waiting_for(self) -> str:
        return "no fake header"

    # for the tests
    def take(self) -> list[domish.Element]:
        sent, self.sent = self.sent, []
        return [parse(text) for text in sent]

    def say(self, xml: str) -> None:
        self.session.element_received(parse(xml))


def harness(**c2s) -> tuple[Harness, Clock]:
    clock = Clock()
    h = Harness(["ping", "roster", "presence", "messaging"], clock=clock,
                options={"c2s": {k: str(v) for k, v in c2s.items()}})
    h.add_user("alice@localhost", "secret")
    return h, clock


def plain(user: str = "alice", password: str = "secret") -> str:
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    return f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>{token}</auth>"


def bound(h: Harness, resource: str = "r", **kwargs) -> FakeFraming:
    framing = FakeFraming(h, **kwargs)
    framing.session.connected()
    framing.session.stream_opened("localhost", "1.0")
    framing.say(plain())
    framing.session.stream_opened("localhost", "1.0")
    framing.say(f"<iq type='set' id='bind'><bind xmlns='{ns.BIND}'><resource>{resource}"
                "</resource></bind></iq>")
    assert framing.session.jid is not None, framing.sent
    framing.take()
    return framing


def mechanisms(features: domish.Element) -> list[str]:
    return [str(m) for c in features.elements(ns.SASL, "mechanisms") for m in c.elements()]


def test_an_opened_stream_gets_its_header_and_the_features_for_its_security():
    h, _ = harness()
    framing = FakeFraming(h, secure=True)
    framing.session.stream_opened("LocalHost.", "1.0")
    assert framing.domain == "localhost" and framing.calls == ["open localhost"]
    [features] = framing.take()
    assert features.name == "features"
    assert mechanisms(features) == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]


def test_a_stream_to_a_domain_not_served_is_host_unknown_before_any_header():
    h, _ = harness()
    framing = FakeFraming(h)
    framing.session.stream_opened("elsewhere.example", "1.0")
    assert framing.errors == ["host-unknown"] and framing.calls == []
    assert framing.domain is None


def test_a_stream_without_version_one_is_unsupported_version():
    h, _ = harness()
    framing = FakeFraming(h)
    framing.session.stream_opened("localhost", None)
    assert framing.errors == ["unsupported-version"]
    assert framing.domain == "localhost"  # for the header before the error


def test_an_insecure_framing_without_starttls_offers_nothing_to_authenticate_with():
    h, _ = harness()  # require_encryption = true
    framing = FakeFraming(h, secure=False, starttls=False)
    framing.session.stream_opened("localhost", "1.0")
    [features] = framing.take()
    assert list(features.elements()) == []
    framing.say(plain())
    [failure] = framing.take()
    assert failure.uri == ns.SASL and failure.firstChildElement().name == "encryption-required"
    assert framing.session.user is None


def test_an_insecure_framing_may_use_scram_but_never_plain_when_encryption_is_optional():
    h, _ = harness(require_encryption="false")
    framing = FakeFraming(h, secure=False, starttls=False)
    framing.session.stream_opened("localhost", "1.0")
    [features] = framing.take()
    assert mechanisms(features) == ["SCRAM-SHA-256", "SCRAM-SHA-1"]
    assert not list(features.elements(ns.TLS, "starttls"))
    framing.say(plain())
    [failure] = framing.take()
    assert failure.firstChildElement().name == "invalid-mechanism"


def test_a_framing_that_can_starttls_offers_it_required_and_nothing_else():
    h, _ = harness()
    framing = FakeFraming(h, secure=False, starttls=True)
    framing.session.stream_opened("localhost", "1.0")
    [features] = framing.take()
    [starttls] = features.elements()
    assert starttls.uri == ns.TLS and starttls.firstChildElement().name == "required"


def test_starttls_a_framing_cannot_do_is_a_tls_failure_and_a_close():
    h, _ = harness()
    framing = FakeFraming(h, secure=True)
    framing.session.stream_opened("localhost", "1.0")
    framing.take()
    framing.say(f"<starttls xmlns='{ns.TLS}'/>")
    [failure] = framing.take()
    assert (failure.uri, failure.name) == (ns.TLS, "failure")
    assert framing.calls[-2:] == ["start_tls", "close"]


def test_sasl_success_restarts_the_stream_and_binding_tells_the_framing():
    h, _ = harness()
    framing = FakeFraming(h)
    session = framing.session
    session.connected()
    session.stream_opened("localhost", "1.0")
    framing.say(plain())
    assert framing.take()[-1].name == "success"
    assert framing.calls[-1] == "restart" and session.user == "alice@localhost"
    assert session.stage() == "authenticated, not bound"
    session.stream_opened("localhost", "1.0")
    [features] = framing.take()
    assert list(features.elements(ns.BIND, "bind"))
    framing.say(f"<iq type='set' id='b'><bind xmlns='{ns.BIND}'><resource>web</resource>"
                "</bind></iq>")
    [result] = framing.take()
    assert str(result.bind.jid) == "alice@localhost/web"
    assert framing.calls[-1] == "bound"
    assert h.router.resources("alice@localhost") == {"web": session}


def test_the_features_are_serialised_once_per_shape():
    h, _ = harness()
    one, two, other = FakeFraming(h), FakeFraming(h), FakeFraming(h, shape="other")
    for framing in (one, two, other):
        framing.session.stream_opened("localhost", "1.0")
    keys = [k for k in h.server.features_cache if k[0] in ("fake", "other")]
    assert sorted(k[0] for k in keys) == ["fake", "other"]


def test_a_session_not_bound_by_the_auth_timeout_is_ended_naming_the_framings_stage():
    h, clock = harness(auth_timeout=10)
    framing = FakeFraming(h)
    framing.session.connected()
    assert framing.session.stage() == "no fake header"
    clock.advance(10)
    assert framing.errors == ["connection-timeout"]
    assert h.server.counters["c2s timed out before bind"] == 1


def test_binding_cancels_the_auth_timeout():
    h, clock = harness(auth_timeout=10)
    framing = bound(h)
    clock.advance(60)
    assert framing.errors == []


def test_a_bound_stanza_is_stamped_and_routed():
    h, _ = harness()
    framing = bound(h)
    framing.say("<message to='alice@localhost/r' id='m'><body>hi</body></message>")
    [echo] = framing.take()
    assert echo.getAttribute("from") == "alice@localhost/r" and echo.getAttribute("id") == "m"


def test_a_forged_from_is_invalid_from_and_unbinds():
    h, _ = harness()
    framing = bound(h)
    framing.say("<message from='bob@localhost/x' to='alice@localhost'><body>x</body></message>")
    assert framing.errors == ["invalid-from"]
    assert h.router.resources("alice@localhost") == {}


def test_closing_unbinds_and_what_is_sent_to_it_afterwards_goes_elsewhere():
    h, _ = harness()
    framing = bound(h)
    other = h.login("alice@localhost/other", available=False)
    framing.close()
    assert list(h.router.resources("alice@localhost")) == ["other"]
    other.feed("<message to='alice@localhost/r' id='late' type='chat'><body>x</body></message>")
    assert framing.sent == []


def test_congestion_pauses_reading_from_the_client_and_from_the_sender_filling_it():
    h, _ = harness()
    receiver, sender = bound(h, "a"), bound(h, "b")
    h.router.current = sender.session
    receiver.session.congested()
    h.router.current = None
    assert not receiver.reading and not sender.reading
    receiver.session.decongested()
    assert receiver.reading and sender.reading


def test_stanzas_wait_for_held_work_and_a_close_waits_behind_them():
    h, _ = harness()
    framing = bound(h)
    work: defer.Deferred = defer.Deferred()
    framing.session.hold(work)
    framing.say("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    framing.session.stream_closed()
    assert framing.sent == [] and not framing.closed
    work.callback(None)
    [pong] = framing.take()
    assert pong.getAttribute("id") == "p" and framing.closed
