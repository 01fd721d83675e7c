"""s2s against a peer that does not play by the rules (a review's proofs,
turned round): an outgoing link is ready only after what we asked for, over
TLS when required, with a certificate when required; dialback answers count
only as answers to what we asked; one stream cannot make us open links
without bound; shutdown revives nothing."""

from __future__ import annotations

from twisted.internet import defer, error
from twisted.internet.testing import StringTransport
from twisted.names import dns as tdns
from twisted.names.error import DomainError
from twisted.python.failure import Failure

from test_s2s_streams import REMOTE, connect, header, setup  # noqa: F401 (a fixture)
from xmppd import jid
from xmppd.streams.s2s.inbound import MAX_PENDING_DIALBACK
from xmppd.streams.s2s.outbound import OutboundStream
from xmppd.streams.s2s.resolve import Resolver, Target
from xmppd.testing import error_condition, parse, result_of


def peer_header(id_: str = "peer1") -> bytes:
    return (f"<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/"
            f"streams' xmlns:db='jabber:server:dialback' from='{REMOTE}' to='localhost' "
            f"id='{id_}' version='1.0'>").encode()


def outgoing(h, service, body: str = "SECRET"):
    """A link with one queued message and its stream, connected (no TLS)."""
    alice = h.login("alice@localhost/pc")
    alice.feed(f"<message to='bob@{REMOTE}' id='m1' type='chat'><body>{body}</body></message>")
    link = service.links[("localhost", REMOTE)]
    stream = OutboundStream(link)
    transport = StringTransport()
    stream.makeConnection(transport)
    return alice, link, stream, transport


def test_an_unsolicited_dialback_valid_does_not_make_a_plaintext_link_ready(setup):
    h, clock, service = setup()  # require_encryption, secure_auth: the defaults
    alice, link, stream, transport = outgoing(h, service)
    stream.dataReceived(peer_header())
    stream.dataReceived(f"<db:result from='{REMOTE}' to='localhost' type='valid'/>".encode())
    assert not link.is_ready and stream.closed
    assert b"SECRET" not in transport.value()
    assert h.server.counters["s2s protocol violation"] == 1


def test_an_unsolicited_sasl_success_does_not_make_a_link_ready(setup):
    h, clock, service = setup()
    alice, link, stream, transport = outgoing(h, service)
    stream.dataReceived(peer_header())
    stream.dataReceived(b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
    assert not link.is_ready and stream.closed and b"SECRET" not in transport.value()


def test_an_unsolicited_proceed_is_no_tls(setup):
    h, clock, service = setup()
    alice, link, stream, transport = outgoing(h, service)
    stream.dataReceived(peer_header())
    stream.dataReceived(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    assert stream.closed and not stream.secure


def test_even_solicited_dialback_without_tls_is_refused_when_encryption_is_required(setup):
    h, clock, service = setup(secure_auth="false")
    alice, link, stream, transport = outgoing(h, service)
    stream.dataReceived(peer_header() + b"<stream:features/>")  # no STARTTLS offered
    assert stream.closed and not link.is_ready
    assert b"<policy-violation" in transport.value()


def test_a_verify_answer_counts_only_for_a_request_sent_on_the_stream_from_the_domain_asked(setup):
    h, clock, service = setup(secure_auth="false")
    d = service.verify("localhost", REMOTE, "SID", "key")
    link = service.links[("localhost", REMOTE)]
    stream = OutboundStream(link)
    transport = StringTransport()
    stream.makeConnection(transport)
    stream.dataReceived(peer_header())
    assert b"db:verify" not in transport.value()  # not sent: no TLS yet
    stream.dataReceived(f"<db:verify from='evil.example' to='localhost' id='SID' "
                        f"type='valid'/>".encode())
    got = []
    d.addBoth(got.append)
    assert stream.closed
    assert len(got) == 1 and isinstance(got[0], Failure)  # never "valid"


def test_one_stream_cannot_make_links_without_bound(setup):
    h, clock, service = setup(secure_auth="false", require_encryption="false")
    stream, transport = connect(service)
    stream.dataReceived(header())
    for i in range(MAX_PENDING_DIALBACK + 5):
        stream.dataReceived(f"<db:result from='r{i}.example' to='localhost'>k</db:result>".encode())
    assert stream.closed and b"<policy-violation" in transport.value()
    assert len(service.links) == MAX_PENDING_DIALBACK


def test_dialback_as_one_of_our_own_domains_is_refused(setup):
    h, clock, service = setup(secure_auth="false", require_encryption="false")
    stream, transport = connect(service)
    stream.dataReceived(header())
    stream.dataReceived(b"<db:result from='localhost' to='localhost'>k</db:result>")
    assert b"<undefined-condition" in transport.value() and stream.closed
    assert ("localhost", "localhost") not in service.links


def test_shutdown_bounces_what_a_link_in_setup_queued_and_tries_no_other_address(setup):
    h, clock, service = setup()
    alice, link, stream, transport = outgoing(h, service)
    link._targets = [Target("second.example", 5269)]
    stream.dataReceived(peer_header())
    service.stop()
    stream.connectionLost(Failure(error.ConnectionDone()))
    [bounce] = alice.take()
    assert bounce["id"] == "m1" and error_condition(bounce) == "remote-server-timeout"
    assert link._targets == [Target("second.example", 5269)]  # not tried
    assert not service.links and not [c for c in clock.getDelayedCalls()
                                      if c.func == link._timed_out]
    alice.feed(f"<message to='bob@{REMOTE}' id='m2' type='chat'><body>x</body></message>")
    assert error_condition(alice.take()[0]) == "remote-server-not-found"


def test_a_ready_link_whose_stream_is_closing_hands_new_stanzas_to_a_new_link(setup):
    h, clock, service = setup(secure_auth="false", require_encryption="false")
    alice, link, stream, transport = outgoing(h, service)
    stream.dataReceived(peer_header() + b"<stream:features><dialback xmlns="
                        b"'urn:xmpp:features:dialback'/></stream:features>")
    stream.dataReceived(f"<db:result from='{REMOTE}' to='localhost' type='valid'/>".encode())
    assert link.is_ready
    stream.dataReceived(b"<stream:error><system-shutdown xmlns='urn:ietf:params:xml:ns:"
                        b"xmpp-streams'/></stream:error>")
    alice.take()
    alice.feed(f"<message to='bob@{REMOTE}' id='m2' type='chat'><body>2</body></message>")
    assert alice.take() == []
    fresh = service.links[("localhost", REMOTE)]
    assert fresh is not link and [s["id"] for s in fresh.queue] == ["m2"]


def test_an_address_is_no_domain_to_federate_with(setup):
    h, clock, service = setup()
    stanza = parse("<message from='alice@localhost' to='x@127.0.0.1'><body>x</body></message>")
    assert service.route(stanza, jid.parse("x@127.0.0.1")) is False
    assert not service.links


def test_no_direct_tls_is_no_reason_to_skip_the_a_record_fallback():
    class FakeDNS:
        def lookupService(self, name, timeout=None):
            if name.startswith("_xmpps-server"):
                rr = tdns.RRHeader(name=name, type=tdns.SRV,
                                   payload=tdns.Record_SRV(0, 0, 0, b""))
                return defer.succeed(([rr], [], []))
            return defer.fail(DomainError(name))
    assert result_of(Resolver({}, FakeDNS()).targets("example.org")) == [
        Target("example.org", 5269)]
