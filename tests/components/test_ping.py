"""XEP-0199: the server answers pings to itself and to an account's bare JID."""

from xmppd.testing import Harness
from xmppd.testing import only, error_condition

PING = "urn:xmpp:ping"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


def test_ping_to_server_gets_empty_result():
    h = Harness(["ping"])
    alice = h.login("alice@localhost/phone")
    alice.feed(f"<iq type='get' id='p1' to='localhost'><ping xmlns='{PING}'/></iq>")
    reply = only(alice)
    assert reply.name == "iq"
    assert reply["type"] == "result"
    assert reply["id"] == "p1"
    assert reply["to"] == "alice@localhost/phone"
    assert reply["from"] == "localhost"
    assert list(reply.elements()) == []


def test_ping_to_own_bare_jid_is_answered_by_the_server():
    h = Harness(["ping"])
    alice = h.login("alice@localhost/phone")
    alice.feed(f"<iq type='get' id='p2' to='alice@localhost'><ping xmlns='{PING}'/></iq>")
    reply = only(alice)
    assert (reply["type"], reply["id"], reply["to"]) == ("result", "p2", "alice@localhost/phone")
    assert reply["from"] == "alice@localhost"


def test_ping_to_another_users_bare_jid_is_answered_on_their_behalf():
    h = Harness(["ping"])
    alice = h.login("alice@localhost/phone")
    bob = h.login("bob@localhost/pc")
    alice.feed(f"<iq type='get' id='p3' to='bob@localhost'><ping xmlns='{PING}'/></iq>")
    reply = only(alice)
    assert (reply["type"], reply["id"], reply["from"]) == ("result", "p3", "bob@localhost")
    assert bob.take() == []


def test_ping_set_is_not_a_ping_and_gets_service_unavailable():
    h = Harness(["ping"])
    alice = h.login("alice@localhost/phone")
    alice.feed(f"<iq type='set' id='p4' to='localhost'><ping xmlns='{PING}'/></iq>")
    reply = only(alice)
    assert reply["id"] == "p4"
    assert error_condition(reply) == "service-unavailable"


def test_ping_without_the_component_gets_service_unavailable():
    h = Harness(["disco"])
    alice = h.login("alice@localhost/phone")
    alice.feed(f"<iq type='get' id='p5' to='localhost'><ping xmlns='{PING}'/></iq>")
    reply = only(alice)
    assert (reply["id"], reply["to"], reply["from"]) == ("p5", "alice@localhost/phone", "localhost")
    assert error_condition(reply) == "service-unavailable"
    # the payload is not echoed (RFC 6120 §8.3.1 leaves it open; Prosody does not)
    assert next(reply.elements(PING, "ping"), None) is None
