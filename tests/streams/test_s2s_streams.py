"""s2s streams on an injected clock: a real :class:`InboundStream` over a
``StringTransport`` and :class:`Link` queues, the server in memory. What
crosses real sockets (TLS, SASL EXTERNAL, dialback between two processes, and
with Prosody and ejabberd) is in tests/e2e; here: the refusals and bounds."""

from __future__ import annotations

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from xmppd import tls
from xmppd.streams.s2s.certs import S2STLS
from xmppd.streams.s2s.inbound import InboundStream
from xmppd.streams.s2s.links import S2S, Link
from xmppd.testing import Harness, error_condition
from xmppd.testing import parse as parse_xml

REMOTE = "remote.example"


def header(to: str = "localhost", from_: str = REMOTE) -> bytes:
    return (f"<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/"
            f"streams' xmlns:db='jabber:server:dialback' to='{to}' from='{from_}' "
            f"version='1.0'>").encode()


class NeverResolves:
    """A resolver that never answers (a link stays in set-up)."""

    def __init__(self):
        self.asked = []
        self.routes = {}

    def targets(self, domain):
        self.asked.append(domain)
        return defer.Deferred()


@pytest.fixture
def setup(tmp_path):
    def make(**s2s):
        clock = Clock()
        h = Harness(["ping", "presence", "messaging"], clock=clock,
                    options={"s2s": {k: str(v) for k, v in s2s.items()}})
        h.add_user("alice@localhost", "secret")
        cert = str(tmp_path / "cert.pem")
        tls.generate_self_signed(["localhost"], cert)
        service = S2S(h.server, reactor=clock)
        service.tls = S2STLS(cert, "", "")
        service.resolver = NeverResolves()
        h.server.router.routes.default = service.route
        return h, clock, service
    return make


def connect(service: S2S) -> tuple[InboundStream, StringTransport]:
    stream = InboundStream(service, direct_tls=True)
    transport = StringTransport()
    stream.makeConnection(transport)
    return stream, transport


def authenticated(service: S2S) -> tuple[InboundStream, StringTransport]:
    """A stream on which remote.example authenticated by dialback (its
    authoritative server said the key is valid)."""
    service.verify = lambda local, remote, stream_id, key: defer.succeed(True)
    stream, transport = connect(service)
    stream.dataReceived(header())
    stream.dataReceived(f"<db:result from='{REMOTE}' to='localhost'>k</db:result>".encode())
    assert b"type='valid'" in transport.value(), transport.value()
    transport.clear()
    return stream, transport


def test_a_stream_to_a_domain_not_served_here_is_host_unknown(setup):
    h, clock, service = setup()
    stream, transport = connect(service)
    stream.dataReceived(header(to="elsewhere.example"))
    assert b"<host-unknown" in transport.value()
    assert stream.closed


def test_a_certificate_that_is_not_trusted_is_refused_at_the_header_under_secure_auth(setup):
    """As Prosody: nothing such a server could do would be accepted
    (dialback without a trusted certificate is not), so it is told at once."""
    h, clock, service = setup()  # secure_auth = true by default
    service.verify = lambda *a: pytest.fail("must not even ask the authoritative server")
    stream, transport = connect(service)
    stream.dataReceived(header())
    out = transport.value()
    assert b"<not-authorized" in out and b"not trusted by localhost" in out, out
    assert stream.closed and not stream.authenticated
    assert h.server.counters["s2s auth failed"] == 1


def test_dialback_key_the_authoritative_server_denies_is_invalid_and_stanzas_stay_out(setup):
    h, clock, service = setup(secure_auth="false")
    asked = []

    def verify(local, remote, stream_id, key):
        asked.append((local, remote, stream_id, key))
        return defer.succeed(False)
    service.verify = verify
    alice = h.login("alice@localhost/pc")
    stream, transport = connect(service)
    stream.dataReceived(header())
    stream.dataReceived(f"<db:result from='{REMOTE}' to='localhost'>wrong</db:result>".encode())
    assert asked == [("localhost", REMOTE, stream.stream_id, "wrong")]
    assert b"type='invalid'" in transport.value()
    stream.dataReceived(f"<message from='eve@{REMOTE}' to='alice@localhost/pc'><body>x</body>"
                        f"</message>".encode())
    assert b"<not-authorized" in transport.value()  # nothing authenticated on this stream
    assert stream.closed
    assert alice.take() == []


def test_three_failed_dialbacks_close_the_stream(setup):
    h, clock, service = setup(secure_auth="false")
    service.verify = lambda *a: defer.succeed(False)
    stream, transport = connect(service)
    stream.dataReceived(header())
    for i in range(3):
        stream.dataReceived(f"<db:result from='r{i}.example' to='localhost'>k</db:result>".encode())
    assert b"<not-authorized" in transport.value()
    assert stream.closed


def test_stanzas_from_an_authenticated_domain_reach_local_users_as_jabber_client(setup):
    h, clock, service = setup(secure_auth="false")
    alice = h.login("alice@localhost/pc")
    stream, transport = authenticated(service)
    stream.dataReceived(f"<message from='bob@{REMOTE}/x' to='alice@localhost/pc' type='chat'>"
                        f"<body>hi</body></message>".encode())
    [got] = alice.take()
    assert got.uri == "jabber:client" and str(got.body) == "hi"
    assert got["from"] == f"bob@{REMOTE}/x"


def test_a_stanza_from_another_domain_than_the_authenticated_one_is_invalid_from(setup):
    h, clock, service = setup(secure_auth="false")
    alice = h.login("alice@localhost/pc")
    stream, transport = authenticated(service)
    stream.dataReceived(b"<message from='mallory@forged.example' to='alice@localhost/pc'>"
                        b"<body>x</body></message>")
    assert b"<invalid-from" in transport.value()
    assert stream.closed
    assert alice.take() == []
    assert h.server.counters["s2s invalid-from"] == 1


def test_an_iq_from_a_remote_server_is_answered_by_routing_not_on_the_incoming_stream(setup):
    h, clock, service = setup(secure_auth="false")
    stream, transport = authenticated(service)
    stream.dataReceived(f"<iq from='bob@{REMOTE}/x' to='localhost' type='get' id='p1'>"
                        f"<ping xmlns='urn:xmpp:ping'/></iq>".encode())
    assert transport.value() == b""  # streams between servers are one-way
    link = service.links[("localhost", REMOTE)]
    [reply] = link.queue  # waits for our outgoing link to remote.example
    assert reply["type"] == "result" and reply["to"] == f"bob@{REMOTE}/x"


def test_db_verify_answers_valid_only_for_our_own_key(setup):
    h, clock, service = setup(secure_auth="false")
    stream, transport = connect(service)
    stream.dataReceived(header())
    good = service.keys.make(REMOTE, "localhost", "sid1")
    stream.dataReceived(f"<db:verify from='{REMOTE}' to='localhost' id='sid1'>{good}"
                        f"</db:verify>".encode())
    assert b"type='valid'" in transport.value()
    transport.clear()
    stream.dataReceived(f"<db:verify from='{REMOTE}' to='localhost' id='sid2'>{good}"
                        f"</db:verify>".encode())
    assert b"type='invalid'" in transport.value()


def test_a_stream_that_never_authenticates_is_closed_after_auth_timeout(setup):
    h, clock, service = setup(auth_timeout=5, secure_auth="false")
    stream, transport = connect(service)
    stream.dataReceived(header())
    clock.advance(4)
    assert not stream.closed
    clock.advance(2)
    assert b"<connection-timeout" in transport.value()
    assert h.server.counters["s2s auth timeout"] == 1


def test_stanzas_wait_for_a_link_up_to_max_queue_then_bounce(setup):
    h, clock, service = setup(max_queue=3)
    alice = h.login("alice@localhost/pc")
    for i in range(5):
        alice.feed(f"<message to='bob@{REMOTE}' id='m{i}' type='chat'><body>{i}</body></message>")
    link = service.links[("localhost", REMOTE)]
    assert len(link.queue) == 3
    bounced = alice.take()
    assert [b["id"] for b in bounced] == ["m3", "m4"]
    assert {error_condition(b) for b in bounced} == {"resource-constraint"}


def test_a_link_that_is_not_set_up_in_time_bounces_its_queue_as_remote_server_timeout(setup):
    h, clock, service = setup(connect_timeout=30)
    alice = h.login("alice@localhost/pc")
    alice.feed(f"<message to='bob@{REMOTE}' id='m1' type='chat'><body>1</body></message>")
    alice.feed(f"<iq to='{REMOTE}' id='q1' type='get'><ping xmlns='urn:xmpp:ping'/></iq>")
    clock.advance(31)
    bounced = alice.take()
    assert sorted(b["id"] for b in bounced) == ["m1", "q1"]
    assert {error_condition(b) for b in bounced} == {"remote-server-timeout"}
    assert ("localhost", REMOTE) not in service.links  # the next stanza tries again
    alice.feed(f"<message to='bob@{REMOTE}' id='m2' type='chat'><body>2</body></message>")
    assert isinstance(service.links[("localhost", REMOTE)], Link)
    assert service.resolver.asked == [REMOTE, REMOTE]


def test_the_peers_stream_error_is_logged_and_answered_only_by_closing(setup):
    h, clock, service = setup(secure_auth="false")
    stream, transport = connect(service)
    stream.dataReceived(header())
    transport.clear()
    stream.dataReceived(b"<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:"
                        b"xmpp-streams'/></stream:error>")
    assert stream.closed and stream.peer_condition == "policy-violation"
    assert transport.value() == b"</stream:stream>"


def test_an_incoming_link_past_its_stanza_rate_is_read_more_slowly(setup):
    h, clock, service = setup(secure_auth="false", max_stanza_rate=10)
    h.login("alice@localhost/pc")
    stream, transport = authenticated(service)
    burst = service.burst  # 4 s worth of stanzas at once
    for i in range(burst + 1):
        stream.dataReceived(f"<message from='bob@{REMOTE}/x' to='alice@localhost/pc'>"
                            f"<body>{i}</body></message>".encode())
    assert transport.producerState == "paused"
    clock.advance(0.2)  # one stanza's worth of tokens (0.1 s) and more
    assert transport.producerState == "producing"


def test_a_quiet_incoming_link_is_closed_after_idle_timeout(setup):
    h, clock, service = setup(secure_auth="false", idle_timeout=40)
    service.watch_idle()
    stream, transport = authenticated(service)
    clock.advance(30)
    assert not stream.closed
    for _ in range(4):
        clock.advance(10)
    assert stream.closed


def test_start_warns_of_served_domains_the_certificate_does_not_name(setup, tmp_path):
    from twisted.logger import globalLogPublisher

    h, clock, service = setup()
    service.reactor = type("NoListen", (), {})()  # port 0 below: nothing listens
    service.config = dict(service.config, port=0, direct_tls_port=0, idle_timeout=0)
    h.server.router.domains["conference.localhost"] = h.server.router.domains["localhost"]
    cert = str(tmp_path / "only-localhost.pem")
    tls.generate_self_signed(["localhost"], cert)
    seen = []
    globalLogPublisher.addObserver(seen.append)
    try:
        service.start(cert, "")
    finally:
        globalLogPublisher.removeObserver(seen.append)
    warned = [e for e in seen if "does not name" in e.get("log_format", "")]
    assert [e["domain"] for e in warned] == ["conference.localhost"]
    assert h.server.router.routes.default == service.route


def test_a_component_domain_federates_through_us_both_ways(setup):
    """An external (or in-process) component's domain is ours to federate
    for: its stanzas to remote domains take a link of their own, and a
    remote server may open a stream to it (as Prosody's components)."""
    h, clock, service = setup(secure_auth="false")
    received = []
    h.server.router.routes.add("gw.localhost", lambda stanza, to: received.append(stanza) or True)
    h.server.router.route(parse_xml(f"<message from='gw.localhost' to='bob@{REMOTE}'>"
                                    f"<body>from a gateway</body></message>"))
    assert [s["from"] for s in service.links[("gw.localhost", REMOTE)].queue] == ["gw.localhost"]
    service.verify = lambda local, remote, stream_id, key: defer.succeed(True)
    stream, transport = connect(service)
    stream.dataReceived(header(to="gw.localhost"))
    stream.dataReceived(f"<db:result from='{REMOTE}' to='gw.localhost'>k</db:result>".encode())
    stream.dataReceived(f"<message from='bob@{REMOTE}/x' to='user@gw.localhost'>"
                        f"<body>to a gateway</body></message>".encode())
    assert [str(s.body) for s in received] == ["to a gateway"]
