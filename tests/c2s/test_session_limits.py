"""The client session's deadlines, output bounds, backpressure and ordering, on
an injected clock: a real :class:`C2SSession` over a ``StringTransport``, the
server in memory (no sockets, no sleeping)."""

from __future__ import annotations

import base64

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from xmppd.c2s.session import C2SSession
from xmppd.component import Component, handles
from xmppd.testing import Harness, error_condition

HEADER = (b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
          b"to='localhost' version='1.0'>")
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND = "urn:ietf:params:xml:ns:xmpp-bind"
IM = ["ping", "roster", "presence", "messaging", "offline"]


def harness(components=IM, **c2s) -> tuple[Harness, Clock]:
    clock = Clock()
    h = Harness(components, clock=clock,
                options={"c2s": {k: str(v) for k, v in c2s.items()},
                         "server": {"max_stanza_size": "8192"}})
    for user in ("alice@localhost", "bob@localhost", "carol@localhost"):
        h.add_user(user, "secret")
    return h, clock


def connect(h: Harness) -> tuple[C2SSession, StringTransport]:
    session = C2SSession(h.server, direct_tls=True)
    transport = StringTransport()
    session.makeConnection(transport)
    return session, transport


def login(h: Harness, user: str, resource: str = "r",
          header: bytes = HEADER) -> tuple[C2SSession, StringTransport]:
    """A session bound as ``user@localhost/resource`` (SASL PLAIN over 'direct TLS'),
    its stream opened with ``header``."""
    session, transport = connect(h)
    session.dataReceived(header)
    token = base64.b64encode(f"\0{user}\0secret".encode()).decode()
    session.dataReceived(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>".encode())
    session.dataReceived(header)
    session.dataReceived(f"<iq type='set' id='bind'><bind xmlns='{BIND}'><resource>{resource}"
                         f"</resource></bind></iq>".encode())
    assert session.jid is not None, transport.value()
    transport.clear()
    return session, transport


def message(to: str, ident: str, body: str = "hi") -> bytes:
    return f"<message to='{to}' type='chat' id='{ident}'><body>{body}</body></message>".encode()


# -- deadlines ---------------------------------------------------------------------


def test_a_connection_not_bound_in_time_is_closed_and_aborted_when_the_close_hangs():
    h, clock = harness(auth_timeout=10, close_timeout=3)
    session, transport = connect(h)
    session.dataReceived(HEADER)
    clock.advance(9.9)
    assert not transport.disconnecting
    clock.advance(0.1)
    assert b"<connection-timeout" in transport.value()
    assert transport.value().endswith(b"</stream:stream>")
    assert transport.disconnecting and not transport.disconnected
    # The peer never lets the close finish (a TLS layer waiting for a
    # handshake, a client that does not read): aborted.
    clock.advance(3)
    assert transport.disconnected
    assert h.server.counters["c2s timed out before bind"] == 1
    assert h.server.counters["c2s aborted after close"] == 1


def test_a_bound_session_outlives_the_auth_timeout_and_gets_whitespace_when_idle():
    h, clock = harness(auth_timeout=10, idle_timeout=100)
    session, transport = login(h, "alice")
    clock.advance(99)
    assert transport.value() == b"" and not transport.disconnecting
    session.dataReceived(b" ")  # the client said something: the idle time starts over
    clock.advance(99)
    assert transport.value() == b""
    clock.advance(1)
    assert transport.value() == b" "
    assert not transport.disconnecting


# -- output bounds and backpressure ------------------------------------------------


def test_output_waits_in_the_backlog_while_the_transport_is_full_and_leaves_in_order():
    h, clock = harness()
    bob, bob_t = login(h, "bob")
    bob.pauseProducing()  # the transport's own buffer is full
    bob.send("<a/>")
    bob.send("<b/>")
    assert bob_t.value() == b"" and bob.output_pending == 8
    drained = bob.drained()
    assert not drained.called
    bob.resumeProducing()
    assert bob_t.value() == b"<a/><b/>"
    assert drained.called and bob.output_pending == 0


def test_a_congested_receiver_stops_reading_from_its_sender_until_it_drains():
    h, clock = harness(max_output_buffer=16384)
    alice, alice_t = login(h, "alice")
    bob, bob_t = login(h, "bob")
    bob.dataReceived(b"<presence/>")
    bob.pauseProducing()
    for i in range(3):
        alice.dataReceived(message("bob@localhost", f"m{i}", "x" * 1500))
    assert alice_t.producerState == "paused"  # Alice is read from no more
    assert bob_t.producerState == "paused"  # nor Bob, who does not read his answers
    bob.resumeProducing()
    assert bob_t.value().count(b"<message") == 3
    assert alice_t.producerState == "producing"
    assert bob_t.producerState == "producing"


def test_a_receiver_over_its_bound_is_disconnected_and_its_messages_stored_offline():
    h, clock = harness(max_output_buffer=16384)
    bob, bob_t = login(h, "bob")
    bob.dataReceived(b"<presence/>")
    alice = h.login("alice@localhost/a")
    bob.pauseProducing()
    for i in range(12):
        alice.feed(message("bob@localhost", f"m{i}", "x" * 1500).decode())
    assert b"<policy-violation" in bob_t.value()
    assert not h.router.resources("bob@localhost")
    assert not [s for s in alice.take() if s.getAttribute("type") == "error"]
    again = h.login("bob@localhost/again", available=False)
    again.feed("<presence/>")
    ids = [s.getAttribute("id") for s in again.take() if s.name == "message"]
    assert ids == [f"m{i}" for i in range(12)]


def test_a_receiver_that_reads_nothing_for_the_send_timeout_is_disconnected():
    h, clock = harness(send_timeout=30)
    bob, bob_t = login(h, "bob")
    bob.dataReceived(b"<presence/>")
    alice = h.login("alice@localhost/a")
    bob.pauseProducing()
    alice.feed(message("bob@localhost/r", "full").decode())
    alice.feed(message("bob@localhost", "bare").decode())
    clock.advance(29)
    assert not bob_t.disconnecting
    clock.advance(1)
    assert b"<connection-timeout" in bob_t.value()
    assert h.server.counters["c2s output stalled"] == 1
    again = h.login("bob@localhost/again", available=False)
    again.feed("<presence/>")
    assert [s.getAttribute("id") for s in again.take() if s.name == "message"] == ["full", "bare"]


def test_progress_restarts_the_send_timeout():
    h, clock = harness(send_timeout=30)
    bob, bob_t = login(h, "bob")
    bob.pauseProducing()
    bob.send("<a/>")
    clock.advance(20)
    bob.resumeProducing()  # the client read: everything went out
    bob.pauseProducing()
    bob.send("<b/>")
    clock.advance(20)
    assert not bob_t.disconnecting


# -- closing -----------------------------------------------------------------------


def test_a_closing_tag_unbinds_at_once_and_later_messages_go_offline():
    h, clock = harness(close_timeout=5)
    bob, bob_t = login(h, "bob")
    bob.dataReceived(b"<presence/>")
    bob_t.clear()
    bob.dataReceived(b"</stream:stream>")
    assert bob_t.value().endswith(b"</stream:stream>")
    assert not h.router.resources("bob@localhost")
    alice = h.login("alice@localhost/a")
    alice.feed(message("bob@localhost", "later").decode())
    assert not alice.take()  # stored, not bounced
    clock.advance(5)
    assert bob_t.disconnected  # the client never closed its side: aborted
    again = h.login("bob@localhost/again", available=False)
    again.feed("<presence/>")
    assert [s.getAttribute("id") for s in again.take() if s.name == "message"] == ["later"]


def test_an_iq_a_closed_session_never_got_is_answered_service_unavailable():
    h, clock = harness()
    bob, bob_t = login(h, "bob")
    alice = h.login("alice@localhost/a")
    bob.pauseProducing()
    alice.feed("<iq type='get' id='v' to='bob@localhost/r'><query xmlns='jabber:iq:version'/></iq>")
    bob.dataReceived(b"</stream:stream>")
    [error] = alice.take()
    assert error.getAttribute("id") == "v" and error_condition(error) == "service-unavailable"


# -- in-order processing -------------------------------------------------------------


class Slow(Component):
    """Answers urn:test:slow only when the test says so."""

    name = "slow"
    waiting: list[tuple[defer.Deferred, object]] = []

    @handles("iq-get/host/urn:test:slow:q")
    def slow(self, event):
        d: defer.Deferred = defer.Deferred()
        self.waiting.append((d, event))
        return d


def test_a_stanza_waits_for_the_handler_work_of_the_one_before_it():
    Slow.waiting = []
    h, clock = harness(IM + [Slow])
    alice, alice_t = login(h, "alice")
    alice.dataReceived(b"<iq type='get' id='one' to='localhost'><q xmlns='urn:test:slow'/></iq>"
                       b"<iq type='get' id='two' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert alice_t.value() == b""  # the ping waits for the slow answer
    d, event = Slow.waiting.pop()
    d.callback(event.reply())
    out = alice_t.value()
    assert out.index(b"id='one'") < out.index(b"id='two'")


def test_many_waiting_stanzas_stop_the_reading():
    Slow.waiting = []
    h, clock = harness(IM + [Slow])
    alice, alice_t = login(h, "alice")
    alice.dataReceived(b"<iq type='get' id='slow' to='localhost'><q xmlns='urn:test:slow'/></iq>"
                       + b"".join(b"<iq type='get' id='p%d' to='localhost'><ping xmlns='urn:xmpp:ping'/>"
                                  b"</iq>" % i for i in range(100)))
    assert alice_t.producerState == "paused"
    d, event = Slow.waiting.pop()
    d.callback(event.reply())
    assert alice_t.value().count(b"type='result'") == 101
    assert alice_t.producerState == "producing"


# -- an idle stream's parser is parked ---------------------------------------------------


def test_a_quiet_session_parks_its_parser_and_the_next_read_wakes_it():
    h, clock = harness()
    # A header that declares a prefix of its own, used later inside a stanza.
    header = (b"<s:stream xmlns='jabber:client' xmlns:s='http://etherx.jabber.org/streams' "
              b"xmlns:x='urn:test:x' to='localhost' version='1.0'>")
    alice, alice_t = login(h, "alice", header=header)
    alice.dataReceived(b"<presence/>  ")
    clock.advance(1)
    assert alice.parser is None  # parked
    alice.dataReceived(f"<message to='{alice.jid.full()}' id='back'><x:thing/><body>still "
                       "here</body></message>".encode())
    out = alice_t.value()
    assert b"id='back'" in out and b"urn:test:x" in out and b"still here" in out
    assert alice.parser is not None
    clock.advance(1)
    assert alice.parser is None  # parked again after the next quiet second


def test_a_half_read_stanza_is_never_parked():
    h, clock = harness()
    alice, alice_t = login(h, "alice")
    alice.dataReceived(f"<message to='{alice.jid.full()}' id='half'><body>one ".encode())
    clock.advance(5)
    assert alice.parser is not None
    alice.dataReceived(b"two</body></message>")
    assert b"one two" in alice_t.value()


def test_the_size_limit_holds_after_a_wake():
    h, clock = harness()
    alice, alice_t = login(h, "alice")
    clock.advance(1)
    assert alice.parser is None
    limit = h.config.server["max_stanza_size"]
    alice.dataReceived(b"<message><body>" + b"x" * limit + b"</body></message>")
    assert b"<policy-violation" in alice_t.value()


def test_every_sender_filling_a_congested_backlog_is_slowed():
    h, clock = harness(max_output_buffer=16384)
    alice, alice_t = login(h, "alice")
    carol, carol_t = login(h, "carol")
    bob, bob_t = login(h, "bob")
    bob.dataReceived(b"<presence/>")
    bob.pauseProducing()
    for i in range(3):
        alice.dataReceived(message("bob@localhost", f"a{i}", "x" * 1500))
    assert alice_t.producerState == "paused"
    carol.dataReceived(message("bob@localhost", "c0", "x" * 1500))
    assert carol_t.producerState == "paused"  # not only whoever crossed the mark
    bob.resumeProducing()
    assert alice_t.producerState == carol_t.producerState == "producing"


def test_a_session_quiet_after_crlf_keepalives_is_parked():
    h, clock = harness()
    alice, alice_t = login(h, "alice")
    alice.dataReceived(b"<presence/>\r\n\r\n")
    clock.advance(1)
    assert alice.parser is None


def test_an_empty_stanza_before_the_closing_tag_is_measured_to_its_own_end():
    h, clock = harness()
    alice, alice_t = login(h, "alice")
    alice.dataReceived(b"<presence/></stream:stream>")
    assert b"policy-violation" not in alice_t.value()
    assert alice_t.value().endswith(b"</stream:stream>")


# -- account deletion ----------------------------------------------------------------


def test_a_stream_authenticated_before_its_account_was_deleted_cannot_bind():
    h, clock = harness()
    session, transport = connect(h)
    session.dataReceived(HEADER)
    token = base64.b64encode(b"\0alice\0secret").decode()
    session.dataReceived(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>".encode())
    assert session.user == "alice@localhost"
    clock.advance(1)
    bound, bound_transport = login(h, "alice", "phone")
    h.server.delete_account("alice@localhost")
    assert b"not-authorized" in bound_transport.value()  # the bound session ended
    session.dataReceived(HEADER)
    session.dataReceived(f"<iq type='set' id='bind'><bind xmlns='{BIND}'/></iq>".encode())
    assert session.jid is None and b"not-authorized" in transport.value()
    # and nobody authenticates as it any more
    late, late_transport = connect(h)
    late.dataReceived(HEADER)
    late.dataReceived(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>".encode())
    assert late.user is None and b"not-authorized" in late_transport.value()


def test_an_account_made_again_after_deletion_can_log_in():
    h, clock = harness()
    h.server.delete_account("alice@localhost")
    clock.advance(1)
    h.add_user("alice@localhost", "secret")
    session, _ = login(h, "alice", "again")
    assert session.jid.full() == "alice@localhost/again"
