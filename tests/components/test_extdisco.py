"""XEP-0215: STUN/TURN servers from the INI file, with time-limited TURN
credentials (the TURN REST API scheme coturn checks), for local users only."""

import base64
import calendar
import hashlib
import hmac
import time

import pytest
from twisted.internet import task

from xmppd import config as configlib
from xmppd.testing import Harness, error_condition, only, parse

EXTDISCO = "urn:xmpp:extdisco:2"
EXTDISCO_1 = "urn:xmpp:extdisco:1"
INFO = "http://jabber.org/protocol/disco#info"
NOW = 1_700_000_000
SECRET = "s3cr3t shared with coturn"
SERVICES = ("stun:turn.example.org turn:turn.example.org?transport=udp "
            "turn:turn.example.org:3479?transport=tcp turns:[2001:db8::1] "
            "stun:stun.example.net:19302")


def harness(clock=None, **options):
    clock = clock or task.Clock()
    if not clock.seconds():
        clock.advance(NOW)
    return Harness(["disco", "extdisco"], clock=clock,
                   options={"component:extdisco": options} if options else None)


def ask(session, payload, to="localhost", iq_id="x1"):
    session.take()
    session.feed(f"<iq type='get' id='{iq_id}' to='{to}'>{payload}</iq>")
    return only(session)


def services_of(reply, name="services", namespace=EXTDISCO):
    assert reply["type"] == "result", reply.toXml()
    (answer,) = list(reply.elements())
    assert (answer.uri, answer.name) == (namespace, name)
    return [dict(s.attributes) for s in answer.elements(namespace, "service")]


def hmac_password(secret, username):
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def test_disco_announces_both_extdisco_versions():
    h = harness()
    alice = h.login("alice@localhost/phone")
    reply = ask(alice, f"<query xmlns='{INFO}'/>")
    features = {f["var"] for f in next(reply.elements(INFO, "query")).elements(INFO, "feature")}
    assert {EXTDISCO, EXTDISCO_1} <= features


def test_no_services_configured_answers_an_empty_list():
    alice = harness().login("alice@localhost/phone")
    assert services_of(ask(alice, f"<services xmlns='{EXTDISCO}'/>")) == []


def test_services_from_the_ini_file_in_order_with_defaults_filled_in():
    alice = harness(services=SERVICES).login("alice@localhost/phone")
    assert services_of(ask(alice, f"<services xmlns='{EXTDISCO}'/>")) == [
        {"type": "stun", "host": "turn.example.org", "port": "3478", "transport": "udp"},
        {"type": "turn", "host": "turn.example.org", "port": "3478", "transport": "udp"},
        {"type": "turn", "host": "turn.example.org", "port": "3479", "transport": "tcp"},
        {"type": "turns", "host": "2001:db8::1", "port": "5349", "transport": "tcp"},
        {"type": "stun", "host": "stun.example.net", "port": "19302", "transport": "udp"},
    ]


def test_turn_services_carry_credentials_valid_for_ttl_that_verify_with_the_secret():
    h = harness(services=SERVICES, turn_secret=SECRET, turn_ttl="3600")
    alice = h.login("alice@localhost/phone")
    listed = services_of(ask(alice, f"<services xmlns='{EXTDISCO}'/>"))
    expires = NOW + 3600
    for service in listed:
        if service["type"] == "stun":
            assert not {"username", "password", "expires", "restricted"} & set(service)
            continue
        assert service["username"] == str(expires)
        assert service["password"] == hmac_password(SECRET, str(expires))
        assert service["restricted"] == "1"
        assert calendar.timegm(time.strptime(service["expires"], "%Y-%m-%dT%H:%M:%SZ")) == expires
    assert sum(1 for s in listed if "password" in s) == 3


def test_credentials_expire_from_the_time_of_each_request():
    clock = task.Clock()
    h = harness(clock, services="turn:turn.example.org", turn_secret=SECRET)
    alice = h.login("alice@localhost/phone")
    (first,) = services_of(ask(alice, f"<services xmlns='{EXTDISCO}'/>"))
    clock.advance(600)
    (later,) = services_of(ask(alice, f"<services xmlns='{EXTDISCO}'/>"))
    assert int(later["username"]) - int(first["username"]) == 600
    assert first["username"] == str(NOW + 86400)  # a day by default, as Prosody


def test_turn_user_is_appended_to_the_username_and_signed_with_it():
    alice = harness(services="turn:turn.example.org", turn_secret=SECRET,
                    turn_user="xmppd").login("alice@localhost/phone")
    (service,) = services_of(ask(alice, f"<services xmlns='{EXTDISCO}'/>"))
    assert service["username"] == f"{NOW + 86400}:xmppd"
    assert service["password"] == hmac_password(SECRET, service["username"])


def test_turn_without_a_secret_is_announced_without_credentials():
    alice = harness(services="turn:turn.example.org").login("alice@localhost/phone")
    (service,) = services_of(ask(alice, f"<services xmlns='{EXTDISCO}'/>"))
    assert "password" not in service and "restricted" not in service


def test_type_filters_the_services_query():
    alice = harness(services=SERVICES).login("alice@localhost/phone")
    listed = services_of(ask(alice, f"<services xmlns='{EXTDISCO}' type='stun'/>"))
    assert [(s["type"], s["host"]) for s in listed] == [
        ("stun", "turn.example.org"), ("stun", "stun.example.net")]
    assert services_of(ask(alice, f"<services xmlns='{EXTDISCO}' type='ftp'/>")) == []


def test_credentials_query_answers_the_matching_turn_services():
    alice = harness(services=SERVICES, turn_secret=SECRET).login("alice@localhost/phone")
    # No port: every port of that type and host; a port: that one only.
    listed = services_of(ask(alice, f"<credentials xmlns='{EXTDISCO}'>"
                                    "<service type='turn' host='turn.example.org'/></credentials>"),
                         "credentials")
    assert [s["port"] for s in listed] == ["3478", "3479"]
    assert all(s["password"] == hmac_password(SECRET, s["username"]) for s in listed)
    listed = services_of(ask(alice, f"<credentials xmlns='{EXTDISCO}'>"
                                    "<service type='turn' host='turn.example.org' port='3479'/>"
                                    "</credentials>"), "credentials")
    assert [s["port"] for s in listed] == ["3479"]


def test_credentials_query_for_stun_or_unknown_services_answers_none():
    alice = harness(services=SERVICES, turn_secret=SECRET).login("alice@localhost/phone")
    listed = services_of(ask(alice, f"<credentials xmlns='{EXTDISCO}'>"
                                    "<service type='stun' host='turn.example.org'/>"
                                    "<service type='turn' host='elsewhere.example'/>"
                                    "</credentials>"),
                         "credentials")
    assert listed == []


@pytest.mark.parametrize("service", ["<service host='turn.example.org'/>", "<service type='turn'/>",
                                     "<service type='turn' host='turn.example.org' port='x'/>"])
def test_credentials_query_without_type_host_or_a_numeric_port_is_bad_request(service):
    alice = harness(services=SERVICES, turn_secret=SECRET).login("alice@localhost/phone")
    reply = ask(alice, f"<credentials xmlns='{EXTDISCO}'>{service}</credentials>")
    assert error_condition(reply) == "bad-request"
    assert next(c for c in reply.elements() if c.name == "error")["type"] == "modify"


def test_version_1_is_answered_in_its_own_namespace():
    alice = harness(services="turn:turn.example.org", turn_secret=SECRET).login("alice@localhost/p")
    (service,) = services_of(ask(alice, f"<services xmlns='{EXTDISCO_1}'/>"), namespace=EXTDISCO_1)
    assert service["password"] == hmac_password(SECRET, service["username"])
    listed = services_of(ask(alice, f"<credentials xmlns='{EXTDISCO_1}'>"
                                    "<service type='turn' host='turn.example.org'/></credentials>"),
                         "credentials", EXTDISCO_1)
    assert len(listed) == 1


def test_a_stanza_not_from_a_logged_in_local_user_is_forbidden():
    """What a remote server's user would send (no local session behind it)."""
    h = harness(services="turn:turn.example.org", turn_secret=SECRET)
    sent = []
    h.router.remote = lambda stanza, to: sent.append(stanza) or True
    for payload in (f"<services xmlns='{EXTDISCO}'/>",
                    f"<credentials xmlns='{EXTDISCO}'>"
                    "<service type='turn' host='turn.example.org'/></credentials>"):
        h.router.route(parse(f"<iq type='get' id='r1' from='mallory@evil.example/x' to='localhost'>"
                             f"{payload}</iq>"))
        (reply,) = sent
        sent.clear()
        assert error_condition(reply) == "forbidden"
        assert next(c for c in reply.elements() if c.name == "error")["type"] == "auth"
        assert "password" not in reply.toXml()


@pytest.mark.parametrize("value", ["turn.example.org", "http://turn.example.org",
                                   "turn:turn.example.org?transport=sctp", "stun:host:99999"])
def test_a_service_that_is_not_a_stun_or_turn_uri_is_refused_at_start_up(value):
    with pytest.raises(configlib.ConfigError) as raised:
        harness(services=value)
    assert "[component:extdisco] services" in str(raised.value)
