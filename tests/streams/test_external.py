"""XEP-0114 external components: a real :class:`ExternalComponentStream` over
a ``StringTransport``, the server in memory, time on a ``task.Clock``; the
behaviour pinned is Prosody 0.12's ``mod_component`` (see the module's
docstring for each choice)."""

from __future__ import annotations

import hashlib
import re

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.logger import capturedLogs, formatEvent

from xmppd import ns
from xmppd.streams import external
from xmppd.streams.external import ExternalComponents, ExternalComponentStream
from xmppd.testing import Harness, error_condition, only

DOMAIN = "comp.localhost"
SECRET = "s3cret"
PING = "urn:xmpp:ping"


def header(to: str | None = DOMAIN) -> bytes:
    attr = f" to='{to}'" if to is not None else ""
    return (f"<stream:stream xmlns='{ns.COMPONENT_ACCEPT}' xmlns:stream='{ns.STREAMS}'{attr}>"
            ).encode()


def harness(**c2s) -> tuple[Harness, ExternalComponents, Clock]:
    clock = Clock()
    h = Harness(["disco", "ping", "presence", "messaging"], clock=clock,
                options={"c2s": {k: str(v) for k, v in c2s.items()},
                         f"external:{DOMAIN}": {"secret": SECRET},
                         "external:other.localhost": {"secret": "other"}})
    components = ExternalComponents(h.server)
    components.setServiceParent(h.server)
    return h, components, clock


def connect(components: ExternalComponents) -> tuple[ExternalComponentStream, StringTransport]:
    stream = ExternalComponentStream(components)
    transport = StringTransport()
    stream.makeConnection(transport)
    return stream, transport


def stream_id(transport: StringTransport) -> str:
    found = re.search(rb"<stream:stream [^>]*id='([^']+)'", transport.value())
    assert found is not None, transport.value()
    return found.group(1).decode()


def authenticated(components: ExternalComponents, domain: str = DOMAIN,
                  secret: str = SECRET) -> tuple[ExternalComponentStream, StringTransport]:
    stream, transport = connect(components)
    stream.dataReceived(header(domain))
    digest = hashlib.sha1((stream_id(transport) + secret).encode()).hexdigest()
    stream.dataReceived(f"<handshake>{digest}</handshake>".encode())
    assert transport.value().endswith(b"<handshake/>"), transport.value()
    transport.clear()
    return stream, transport


def stream_error(transport: StringTransport) -> str | None:
    found = re.search(rb"<stream:error><([a-z-]+) xmlns='urn:ietf:params:xml:ns:xmpp-streams'",
                      transport.value())
    return found.group(1).decode() if found else None


# -- the stream header -----------------------------------------------------------------

def test_the_server_answers_the_header_from_the_domain_with_an_id_and_no_version():
    h, components, _ = harness()
    stream, transport = connect(components)
    stream.dataReceived(header())
    sent = transport.value().decode()
    assert f"xmlns='{ns.COMPONENT_ACCEPT}'" in sent
    assert f"from='{DOMAIN}'" in sent
    assert " version=" not in sent.partition("?>")[2]  # (the XML declaration has one)
    assert len(stream_id(transport)) >= 16  # unpredictable: the handshake hashes it
    assert not transport.disconnecting


def test_a_header_without_to_is_improper_addressing():
    h, components, _ = harness()
    stream, transport = connect(components)
    stream.dataReceived(header(None))
    assert stream_error(transport) == "improper-addressing"
    assert transport.disconnecting


@pytest.mark.parametrize("to", ["unknown.localhost", "localhost", "user@comp.localhost"])
def test_a_header_to_a_domain_that_is_no_external_component_is_host_unknown(to):
    h, components, _ = harness()
    stream, transport = connect(components)
    stream.dataReceived(header(to))
    assert stream_error(transport) == "host-unknown"
    assert transport.disconnecting


def test_a_client_namespace_is_invalid_namespace():
    h, components, _ = harness()
    stream, transport = connect(components)
    stream.dataReceived(f"<stream:stream xmlns='jabber:client' xmlns:stream='{ns.STREAMS}' "
                        f"to='{DOMAIN}'>".encode())
    assert stream_error(transport) == "invalid-namespace"


# -- the handshake ---------------------------------------------------------------------

def test_the_handshake_is_the_sha1_of_id_and_secret_in_any_case():
    h, components, _ = harness()
    stream, transport = connect(components)
    stream.dataReceived(header())
    digest = hashlib.sha1((stream_id(transport) + SECRET).encode()).hexdigest().upper()
    stream.dataReceived(f"<handshake>{digest}</handshake>".encode())
    assert transport.value().endswith(b"<handshake/>")
    assert stream.authenticated and components.connected[DOMAIN] is stream


def test_a_wrong_secret_is_not_authorized_and_logged_with_the_peer():
    h, components, _ = harness()
    stream, transport = connect(components)
    stream.dataReceived(header())
    digest = hashlib.sha1((stream_id(transport) + "wrong").encode()).hexdigest()
    with capturedLogs() as events:
        stream.dataReceived(f"<handshake>{digest}</handshake>".encode())
    assert stream_error(transport) == "not-authorized"
    assert b"Given token does not match calculated token" in transport.value()
    assert transport.value().endswith(b"</stream:stream>") and transport.disconnecting
    assert DOMAIN not in components.connected
    lines = [formatEvent(e) for e in events]
    assert any("failed to authenticate as comp.localhost" in line and stream.peer in line
               for line in lines), lines
    assert h.server.counters["external failed handshakes"] == 1


def test_the_secret_of_another_domain_is_not_authorized():
    h, components, _ = harness()
    stream, transport = connect(components)
    stream.dataReceived(header())
    digest = hashlib.sha1((stream_id(transport) + "other").encode()).hexdigest()
    stream.dataReceived(f"<handshake>{digest}</handshake>".encode())
    assert stream_error(transport) == "not-authorized"


def test_a_handshake_with_child_elements_is_not_authorized():
    h, components, _ = harness()
    stream, transport = connect(components)
    stream.dataReceived(header())
    digest = hashlib.sha1((stream_id(transport) + SECRET).encode()).hexdigest()
    stream.dataReceived(f"<handshake>{digest}<x xmlns='urn:example'/></handshake>".encode())
    assert stream_error(transport) == "not-authorized"


def test_non_ascii_in_the_handshake_is_refused_not_an_exception():
    h, components, _ = harness()
    stream, transport = connect(components)
    stream.dataReceived(header())
    stream.dataReceived("<handshake>é</handshake>".encode())
    assert stream_error(transport) == "not-authorized"


def test_a_stanza_before_the_handshake_is_not_authorized_and_not_routed():
    h, components, _ = harness()
    alice = h.login("alice@localhost/r")
    stream, transport = connect(components)
    stream.dataReceived(header())
    stream.dataReceived(f"<message from='{DOMAIN}' to='alice@localhost/r'><body>x</body>"
                        "</message>".encode())
    assert stream_error(transport) == "not-authorized"
    assert alice.take() == []


def test_no_handshake_within_auth_timeout_is_connection_timeout():
    h, components, clock = harness(auth_timeout=10)
    stream, transport = connect(components)
    stream.dataReceived(header())
    clock.advance(9.9)
    assert not transport.disconnecting
    clock.advance(0.1)
    assert stream_error(transport) == "connection-timeout"
    assert h.server.counters["external timed out before handshake"] == 1


def test_an_authenticated_stream_has_no_auth_timeout():
    h, components, clock = harness(auth_timeout=10)
    stream, transport = authenticated(components)
    clock.advance(60)
    assert not transport.disconnecting and components.connected[DOMAIN] is stream


def test_a_second_handshake_is_unsupported_stanza_type():
    h, components, _ = harness()
    stream, transport = authenticated(components)
    stream.dataReceived(b"<handshake>00</handshake>")
    assert stream_error(transport) == "unsupported-stanza-type"
    assert DOMAIN not in components.connected


# -- routing both ways -------------------------------------------------------------------

def test_stanzas_to_the_domain_and_jids_under_it_reach_the_component():
    h, components, _ = harness()
    stream, transport = authenticated(components)
    alice = h.login("alice@localhost/r")
    alice.feed(f"<message to='bot@{DOMAIN}/x' id='m1' type='chat'><body>hello</body></message>")
    alice.feed(f"<iq to='{DOMAIN}' id='q1' type='get'><query xmlns='{ns.DISCO_INFO}'/></iq>")
    sent = transport.value().decode()
    # In the stream's own default namespace: no xmlns='jabber:client' on the wire.
    assert "jabber:client" not in sent
    assert (f"<message to='bot@{DOMAIN}/x' id='m1' type='chat' from='alice@localhost/r'>"
            "<body>hello</body></message>") in sent
    assert f"<iq to='{DOMAIN}' id='q1' type='get' from='alice@localhost/r'>" in sent
    assert alice.take() == []  # the component answers, not the server


def test_the_component_s_stanzas_are_routed_to_users_and_the_server():
    h, components, _ = harness()
    stream, transport = authenticated(components)
    alice = h.login("alice@localhost/r")
    stream.dataReceived(f"<message from='bot@{DOMAIN}/x' to='alice@localhost/r' type='chat'>"
                        "<body>hi alice</body></message>".encode())
    got = only(alice)
    assert got.uri == ns.CLIENT and got["from"] == f"bot@{DOMAIN}/x"
    assert str(got.body) == "hi alice" and got.body.uri == ns.CLIENT
    # An iq to the server is answered back to the component.
    stream.dataReceived(f"<iq from='{DOMAIN}' to='localhost' id='p1' type='get'>"
                        f"<ping xmlns='{PING}'/></iq>".encode())
    assert f"<iq type='result' id='p1' to='{DOMAIN}' from='localhost'/>" \
        in transport.value().decode()


def test_a_stanza_without_from_is_stamped_with_the_domain():
    h, components, _ = harness()
    stream, _ = authenticated(components)
    alice = h.login("alice@localhost/r")
    stream.dataReceived(b"<message to='alice@localhost/r'><body>x</body></message>")
    assert only(alice)["from"] == DOMAIN


@pytest.mark.parametrize("sender", ["mallory@localhost", "localhost", "bot@other.localhost",
                                    f"bot@sub.{DOMAIN}", "@@bad"])
def test_a_stanza_from_outside_the_domain_is_invalid_from(sender):
    h, components, _ = harness()
    stream, transport = authenticated(components)
    alice = h.login("alice@localhost/r")
    stream.dataReceived(f"<message from='{sender}' to='alice@localhost/r'><body>x</body>"
                        "</message>".encode())
    assert stream_error(transport) == "invalid-from"
    assert alice.take() == []
    assert DOMAIN not in components.connected


def test_a_stanza_without_to_is_bad_request_to_the_component():
    h, components, _ = harness()
    stream, transport = authenticated(components)
    stream.dataReceived(f"<iq from='bot@{DOMAIN}' id='n1' type='get'><ping xmlns='{PING}'/>"
                        "</iq>".encode())
    sent = transport.value().decode()
    assert f"<iq to='bot@{DOMAIN}' id='n1' type='error'><error type='modify'><bad-request" in sent
    assert not transport.disconnecting
    transport.clear()
    stream.dataReceived(f"<iq from='bot@{DOMAIN}' id='n2' type='result'/>".encode())
    assert transport.value() == b""  # never an error about an error or a result


def test_an_element_that_is_no_stanza_is_unsupported_stanza_type():
    h, components, _ = harness()
    stream, transport = authenticated(components)
    stream.dataReceived(b"<db:result xmlns:db='jabber:server:dialback'/>")
    assert stream_error(transport) == "unsupported-stanza-type"


def test_stanzas_to_a_component_that_is_not_connected_bounce_remote_server_timeout():
    h, components, _ = harness()
    alice = h.login("alice@localhost/r")
    alice.feed(f"<message to='bot@{DOMAIN}' id='m1'><body>x</body></message>")
    bounce = only(alice)
    assert bounce["type"] == "error" and bounce["from"] == f"bot@{DOMAIN}"
    assert error_condition(bounce) == "remote-server-timeout"
    assert bounce.error["type"] == "wait"
    # Presence is not bounced.
    alice.feed(f"<presence to='bot@{DOMAIN}' type='subscribe'/>")
    assert alice.take() == []


def test_the_domain_bounces_again_once_its_component_is_gone():
    h, components, _ = harness()
    stream, transport = authenticated(components)
    stream.connectionLost()
    alice = h.login("alice@localhost/r")
    alice.feed(f"<iq to='{DOMAIN}' id='q1' type='get'><ping xmlns='{PING}'/></iq>")
    assert error_condition(only(alice)) == "remote-server-timeout"


def test_what_a_closing_stream_could_not_write_is_routed_again():
    """The component stopped reading (the transport's buffer is full); the
    stream ends: the message waiting for it goes back to the router, which
    bounces it to its sender, never to the closing stream."""
    h, components, _ = harness()
    stream, transport = authenticated(components)
    alice = h.login("alice@localhost/r")
    stream.pauseProducing()
    alice.feed(f"<message to='bot@{DOMAIN}' id='m1'><body>x</body></message>")
    assert b"m1" not in transport.value()
    stream.stream_error("system-shutdown")
    assert b"m1" not in transport.value()
    assert error_condition(only(alice)) == "remote-server-timeout"


# -- one connection per domain ----------------------------------------------------------

def test_a_component_that_reconnects_replaces_the_old_connection():
    h, components, _ = harness()
    old, old_transport = authenticated(components)
    new, new_transport = authenticated(components)
    assert stream_error(old_transport) == "conflict"
    assert b"Replaced by a new connection" in old_transport.value()
    assert components.connected[DOMAIN] is new and not new_transport.disconnecting
    alice = h.login("alice@localhost/r")
    alice.feed(f"<message to='bot@{DOMAIN}' id='m2'><body>x</body></message>")
    assert b"id='m2'" in new_transport.value()
    assert b"id='m2'" not in old_transport.value()
    # The old connection's end does not take the route from the new one.
    old.connectionLost()
    assert components.connected[DOMAIN] is new


def test_a_failed_handshake_does_not_disturb_the_connected_component():
    h, components, _ = harness()
    good, good_transport = authenticated(components)
    bad, bad_transport = connect(components)
    bad.dataReceived(header())
    bad.dataReceived(b"<handshake>0000</handshake>")
    assert stream_error(bad_transport) == "not-authorized"
    bad.connectionLost()
    assert components.connected[DOMAIN] is good and not good_transport.disconnecting


def test_two_domains_are_served_side_by_side():
    h, components, _ = harness()
    one, one_transport = authenticated(components)
    two, two_transport = authenticated(components, "other.localhost", "other")
    one.dataReceived(b"<message from='comp.localhost' to='bot@other.localhost'>"
                     b"<body>across</body></message>")
    assert b"<body>across</body>" in two_transport.value()


# -- the server around it ---------------------------------------------------------------

def test_the_server_s_disco_items_list_the_external_domains():
    h, components, _ = harness()
    alice = h.login("alice@localhost/r")
    alice.feed(f"<iq to='localhost' id='d1' type='get'><query xmlns='{ns.DISCO_ITEMS}'/></iq>")
    items = [item["jid"] for item in only(alice).query.elements(ns.DISCO_ITEMS, "item")]
    assert items == ["comp.localhost", "other.localhost"]


def test_stopping_ends_the_streams_and_the_routes():
    h, components, _ = harness()
    stream, transport = authenticated(components)
    components.disownServiceParent()
    assert stream_error(transport) == "system-shutdown"
    assert list(h.router.routes.domains()) == []
    alice = h.login("alice@localhost/r")
    alice.feed(f"<message to='bot@{DOMAIN}' id='m1'><body>x</body></message>")
    assert error_condition(only(alice)) == "remote-server-not-found"


def _listening(options: dict) -> tuple[list, MemoryReactor, Harness]:
    h = Harness(["disco"], options=options)
    reactor = MemoryReactor()
    return external.listen(h.server, reactor), reactor, h


def test_listen_opens_the_port_on_each_interface_when_a_component_is_configured():
    ports, reactor, h = _listening({"external": {"port": "5347",
                                                 "interfaces": "127.0.0.1 ::1"},
                                    f"external:{DOMAIN}": {"secret": SECRET}})
    assert [(p, i) for p, _, _, i in reactor.tcpServers] == [(5347, "127.0.0.1"), (5347, "::1")]
    assert len(ports) == 2
    assert list(h.router.routes.domains()) == [DOMAIN]


@pytest.mark.parametrize("options", [
    {"external": {"port": "5347"}},  # no [external:<domain>]
    {"external": {"port": "0"}, f"external:{DOMAIN}": {"secret": SECRET}},
])
def test_listen_opens_nothing_without_a_component_or_with_port_0(options):
    ports, reactor, h = _listening(options)
    assert ports == [] and reactor.tcpServers == []
    assert list(h.router.routes.domains()) == []


def test_an_external_domain_that_a_hosted_service_serves_is_refused():
    class Echo:  # a stand-in: only the domain table matters
        name = "echo"
    h = Harness(["disco"], options={f"external:{DOMAIN}": {"secret": SECRET}})
    h.router.add_service(DOMAIN, Echo())
    with pytest.raises(SystemExit, match="served by this server already"):
        external.listen(h.server, MemoryReactor())
