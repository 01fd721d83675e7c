"""Tracked outgoing iqs: answered, timed out on an injected clock, forged."""

import pytest
from twisted.internet import task

from xmppd.router import IQTimeout
from xmppd.testing import Harness, parse


def request(h, to="alice@localhost/pc", from_="localhost", id_=None, timeout=30):
    iq = parse(f"<iq type='get' to='{to}' from='{from_}'"
               + (f" id='{id_}'" if id_ else "") + "><ping xmlns='urn:xmpp:ping'/></iq>")
    outcome = []
    d = h.router.iq.request(iq, timeout=timeout)
    d.addBoth(outcome.append)
    return iq, outcome


@pytest.fixture
def h():
    return Harness([], clock=task.Clock())


def test_the_answer_fires_the_deferred_and_goes_nowhere_else(h):
    alice = h.login("alice@localhost/pc")
    iq, outcome = request(h)
    sent = alice.take()
    assert [s["id"] for s in sent] == [iq["id"]] and iq["id"]  # an id was made
    alice.feed(f"<iq type='result' id='{iq['id']}' to='localhost'/>")
    assert outcome and outcome[0]["type"] == "result"
    assert len(h.router.iq) == 0


def test_an_error_answer_fires_the_deferred_with_the_error(h):
    alice = h.login("alice@localhost/pc")
    iq, outcome = request(h)
    alice.feed(f"<iq type='error' id='{iq['id']}' to='localhost'><error type='cancel'>"
               "<feature-not-implemented xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
               "</error></iq>")
    assert outcome[0]["type"] == "error"


def test_no_answer_times_out_on_the_clock(h):
    h.login("alice@localhost/pc")
    _, outcome = request(h, timeout=10)
    h.server.clock.advance(9.9)
    assert outcome == []
    h.server.clock.advance(0.2)
    assert outcome[0].check(IQTimeout)
    assert len(h.router.iq) == 0


def test_a_result_from_another_jid_with_the_same_id_is_ignored(h):
    alice = h.login("alice@localhost/pc")
    mallory = h.login("mallory@localhost/pc")
    iq, outcome = request(h)
    mallory.feed(f"<iq type='result' id='{iq['id']}' to='localhost'/>")
    assert outcome == []
    alice.feed(f"<iq type='result' id='{iq['id']}' to='localhost'/>")
    assert outcome[0]["from"] == "alice@localhost/pc"


def test_a_request_to_a_resource_that_is_gone_fails_with_its_bounce(h):
    _, outcome = request(h, to="nobody@localhost/pc")
    assert outcome[0]["type"] == "error"
    assert outcome[0]["from"] == "nobody@localhost/pc"


def test_a_late_answer_after_the_timeout_is_not_taken(h):
    alice = h.login("alice@localhost/pc")
    iq, outcome = request(h, timeout=5)
    h.server.clock.advance(6)
    alice.feed(f"<iq type='result' id='{iq['id']}' to='localhost'/>")
    assert len(outcome) == 1 and outcome[0].check(IQTimeout)


def test_cancelling_forgets_the_request(h):
    alice = h.login("alice@localhost/pc")
    iq = parse("<iq type='get' to='alice@localhost/pc' from='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    d = h.router.iq.request(iq)
    d.addErrback(lambda f: None)
    d.cancel()
    assert len(h.router.iq) == 0
    assert h.server.clock.getDelayedCalls() == []
    alice.take()


def test_pending_requests_are_bounded(h):
    h.router.iq.max_pending = 2
    h.login("alice@localhost/pc")
    request(h)
    request(h)
    _, outcome = request(h)
    assert outcome[0].check(IQTimeout)
    assert len(h.router.iq) == 2


def test_a_service_domain_can_track_its_own_requests():
    from tests.router.test_services import RoomsService

    h = Harness([RoomsService], clock=task.Clock())
    alice = h.login("alice@localhost/pc")
    iq, outcome = request(h, from_="room@conference.localhost/nick")
    alice.feed(f"<iq type='result' id='{iq['id']}' to='room@conference.localhost/nick'/>")
    assert outcome[0]["type"] == "result"


def test_a_request_to_a_malformed_jid_fails_at_once(h):
    iq = parse("<iq type='get' to='a@b@c' from='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    with pytest.raises(ValueError, match="not a valid JID"):
        h.router.iq.request(iq)
    assert len(h.router.iq) == 0 and h.server.clock.getDelayedCalls() == []
