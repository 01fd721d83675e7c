"""Issue 10's findings, each reproduced over raw sockets against a real server.

Connections that never end, output that grows without bound, messages lost
while a stream closes, stanzas handled out of order, a stream version refused:
each test here failed on the code before the fix.
"""

from __future__ import annotations

import resource
import socket
import threading
import time
import uuid
import xml.etree.ElementTree as ET

import pytest

from rawxmpp import (NS_CLIENT, NS_SASL, NS_STREAMS, RawClient, header, login, q,
                     stanza_error_condition)

PASSWORD = "secret123"
IM = "disco ping roster presence messaging offline carbons blocking private"
NS_PRIVATE = "jabber:iq:private"
NS_BLOCKING = "urn:xmpp:blocking"
NS_LIMITS = "urn:xmpp:stream-limits:0"


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


class RSSSampler(threading.Thread):
    """The server's resident memory, sampled every 100 ms: the baseline and the peak."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.base = rss_kib(pid)
        self.peak = self.base
        self.samples: list[int] = []
        self.running = True

    def run(self) -> None:
        while self.running:
            try:
                self.samples.append(rss_kib(self.pid))
                self.peak = max(self.peak, self.samples[-1])
            except OSError:
                return
            time.sleep(0.1)

    def stop(self) -> int:
        """Growth of the peak over the baseline, in KiB."""
        self.running = False
        self.join(2)
        return self.peak - self.base


def closed_within(sock: socket.socket, seconds: float) -> float:
    """Read until the server closes (FIN or RST); return how long it took."""
    t0 = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - t0 < seconds:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            return time.monotonic() - t0
        if not data:
            return time.monotonic() - t0
    raise AssertionError(f"the server kept the connection open for {seconds} s")


def plain_login(srv, user: str, resource: str = "r") -> RawClient:
    """Log in without TLS (``require_encryption = false``): SCRAM, bind."""
    client = RawClient.connect(srv.host, srv.port, timeout=30)
    client.open_stream()
    client.sasl_scram(user, PASSWORD)
    client.open_stream()
    client.bind(resource)
    return client


# -- every connection has a deadline ---------------------------------------------------


def test_a_silent_direct_tls_socket_is_closed_after_the_auth_timeout(make_xmppd):
    srv = make_xmppd(c2s={"auth_timeout": 2, "close_timeout": 1})
    with socket.create_connection((srv.host, srv.tls_port)) as s:
        closed_within(s, 10)
    # Closed by the deadline (not for some other reason), in the handshake,
    # and aborted since the TLS layer could not close cleanly.
    log = srv.log_text()
    assert "not bound within 2 s (TLS handshake, or no stream header)" in log, log
    assert "no clean close within 1 s: aborted" in log, log


def test_a_starttls_that_never_starts_its_handshake_is_closed(make_xmppd):
    srv = make_xmppd(c2s={"auth_timeout": 2, "close_timeout": 1})
    with RawClient.connect(srv.host, srv.port) as c:
        c.open_stream()
        c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        assert c.next_stanza().tag.endswith("proceed")
        took = closed_within(c.sock, 10)
    assert took <= 6, took
    assert "aborted" in srv.log_text()


def test_a_thousand_stalled_sockets_leave_a_bystander_able_to_log_in(make_xmppd):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2500:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    srv = make_xmppd(c2s={"auth_timeout": 4, "close_timeout": 1})
    stalled = []
    try:
        for i in range(1000):
            # Half never send a ClientHello, half stop after <proceed/>.
            s = socket.create_connection((srv.host, srv.tls_port if i % 2 else srv.port))
            if i % 2 == 0:
                s.sendall(header() + b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            stalled.append(s)
        t0 = time.monotonic()
        bystander = login(srv.host, srv.port, "alice", PASSWORD, timeout=10)
        assert time.monotonic() - t0 < 5
        assert bystander.iq("<ping xmlns='urn:xmpp:ping'/>").get("type") == "result"
        # And every stalled socket is closed: after the auth time-out, plus the
        # close time-out for those whose TLS layer cannot close cleanly.
        deadline = time.monotonic() + 20
        open_ = list(stalled)
        while open_ and time.monotonic() < deadline:
            still = []
            for s in open_:
                s.setblocking(False)
                try:
                    if s.recv(65536):
                        still.append(s)
                except BlockingIOError:
                    still.append(s)
                except OSError:
                    pass
            open_ = still
            time.sleep(0.2)
        assert not open_, f"{len(open_)} stalled sockets still open"
        # The bystander, bound before its deadline, is still there.
        assert bystander.iq("<ping xmlns='urn:xmpp:ping'/>").get("type") == "result"
        bystander.close()
    finally:
        for s in stalled:
            s.close()


# -- bounded output, backpressure, nothing lost ----------------------------------------


class _Trimmed(RawClient):
    """Keeps only the tail of what it received (for failure messages): a
    client reading 80 MB must not copy everything it has read on each read."""

    def _feed(self, data: bytes) -> None:
        super()._feed(data)
        if len(self.received) > 1 << 16:
            self.received = self.received[-(1 << 16):]


class Reader(threading.Thread):
    """Reads one client's stream in the background: message ids, and the ids
    of messages bounced back with an error."""

    def __init__(self, client: RawClient):
        super().__init__(daemon=True)
        client.__class__ = _Trimmed
        self.client = client
        self.messages: list[str] = []
        self.errors: dict[str, str | None] = {}
        self.running = True

    def run(self) -> None:
        c = self.client
        while self.running and not c.eof:
            c._recv(time.monotonic() + 0.2)
            while c.stanzas:
                stanza = c.stanzas.pop(0)
                if stanza.tag != q(NS_CLIENT, "message"):
                    continue
                if stanza.get("type") == "error":
                    self.errors[stanza.get("id")] = stanza_error_condition(stanza)[1]
                else:
                    self.messages.append(stanza.get("id"))


def test_a_receiver_that_stops_reading_slows_its_sender_and_loses_nothing(make_xmppd):
    """80 MB of messages to a client that reads nothing: the server's memory
    stays flat (the sender is no longer read from), the receiver is cut off
    after the send time-out, and every message is delivered, stored offline
    or bounced to the sender — each exactly once."""
    srv = make_xmppd({"server": {"components": IM},
                      "c2s": {"require_encryption": "false", "send_timeout": 4,
                              "close_timeout": 20},
                      "component:offline": {"max_messages": 400}})
    alice = plain_login(srv, "alice", "sender")
    bob = plain_login(srv, "bob", "phone")
    bob.send("<presence/>")
    bob.next_stanza(lambda s: s.tag == q(NS_CLIENT, "presence"))
    sender = Reader(alice)
    sender.start()
    time.sleep(0.5)
    sampler = RSSSampler(srv.process.pid)
    sampler.start()

    body = "x" * 16000
    total = 5000  # 80 MB
    ids = [f"m{i}" for i in range(total)]

    # Its own socket object on the same connection: the reader thread sets
    # short time-outs on the other, and a slowed-down sender waits long.
    out = alice.sock.dup()
    out.settimeout(120)

    written = [0]

    def flood() -> None:
        for ident in ids:
            out.sendall(f"<message to='bob@localhost' type='chat' id='{ident}'>"
                        f"<body>{body}</body></message>".encode())
            written[0] += 1
    flooding = threading.Thread(target=flood, daemon=True)
    t0 = time.monotonic()
    flooding.start()
    # While Bob reads nothing, the server stops reading from Alice: after a
    # few MB (socket buffers, a backlog of a quarter of max_output) she is stuck.
    time.sleep(3)
    assert flooding.is_alive() and written[0] < total // 4, \
        f"the sender was never slowed down ({written[0]} messages written)"
    # Bob reads again only after the send time-out, and gets what reached him
    # before the server gave up on him.
    time.sleep(3)
    received = []
    bob.sock.settimeout(30)
    bob.wait_for(lambda: bob.eof, 30, "the server to close the stalled stream")
    for stanza in bob.stanzas:
        if stanza.tag == q(NS_CLIENT, "message"):
            received.append(stanza.get("id"))
    stream_errors = [s for s in bob.stanzas if s.tag == q(NS_STREAMS, "error")]
    assert stream_errors, bob.describe()
    flooding.join(120)
    assert not flooding.is_alive(), "the sender was never read from again"
    growth = sampler.stop()
    assert growth < 32 * 1024, f"RSS grew by {growth} KiB"
    # And once it is over, what the flood took is given back.
    time.sleep(2)
    after = rss_kib(srv.process.pid) - sampler.base
    assert after < 16 * 1024, f"RSS stayed {after} KiB above where it was"

    # Bob comes back: what was stored offline arrives.
    again = plain_login(srv, "bob", "laptop")
    stored = Reader(again)
    stored.start()
    again.send("<presence/>")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        accounted = len(received) + len(stored.messages) + len(sender.errors)
        if accounted >= total:
            break
        time.sleep(0.2)
    time.sleep(0.5)
    stored.running = sender.running = False
    everything = received + stored.messages + list(sender.errors)
    assert len(everything) == len(set(everything)), "a message arrived twice"
    assert set(everything) == set(ids), (
        f"{total - len(set(everything) & set(ids))} messages unaccounted for "
        f"(received {len(received)}, offline {len(stored.messages)}, bounced {len(sender.errors)})")
    assert stored.messages, "nothing was stored offline"
    assert set(sender.errors.values()) <= {"service-unavailable"}
    print(f"80 MB flood: RSS +{growth} KiB (+{after} KiB after), received {len(received)}, offline "
          f"{len(stored.messages)}, bounced {len(sender.errors)}, {time.monotonic() - t0:.1f} s")


def test_a_client_that_does_not_read_its_answers_cannot_amplify_memory(make_xmppd):
    """1 000 requests for a 250 KB private element, sent at once and never
    read: the server answers one at a time as the client reads, so its memory
    stays flat, and other users are not held up."""
    srv = make_xmppd({"server": {"components": IM}, "c2s": {"send_timeout": 5}})
    alice = login(srv.host, srv.port, "alice", PASSWORD)
    big = "A" * 250_000
    answer = alice.iq(f"<query xmlns='{NS_PRIVATE}'><data xmlns='x:big'>{big}</data></query>",
                      type="set", timeout=20)
    assert answer.get("type") == "result"
    bystander = login(srv.host, srv.port, "bob", PASSWORD)
    time.sleep(0.5)
    sampler = RSSSampler(srv.process.pid)
    sampler.start()
    alice.send("".join(f"<iq type='get' id='g{i}'><query xmlns='{NS_PRIVATE}'>"
                       f"<data xmlns='x:big'/></query></iq>" for i in range(1000)))
    slowest = 0.0
    for _ in range(20):
        t0 = time.monotonic()
        assert bystander.iq("<ping xmlns='urn:xmpp:ping'/>").get("type") == "result"
        slowest = max(slowest, time.monotonic() - t0)
        time.sleep(0.2)
    growth = sampler.stop()
    assert growth < 32 * 1024, f"RSS grew by {growth} KiB"
    assert slowest < 1.0, f"a bystander's ping took {slowest:.2f} s"
    # The reader that never reads is disconnected after the send time-out
    # (and aborted after the close time-out, since it reads nothing more).
    time.sleep(5 + 5 + 2)
    closed_within(alice.sock, 10)
    alice.close()
    assert "the client stopped reading" in srv.log_text()


# -- a closing stream loses nothing ----------------------------------------------------


def test_messages_to_a_session_that_sent_its_closing_tag_are_stored_offline(make_xmppd):
    srv = make_xmppd({"server": {"components": IM}})
    bob = login(srv.host, srv.port, "bob", PASSWORD, resource="phone")
    bob.send("<presence/>")
    bob.next_stanza(lambda s: s.tag == q(NS_CLIENT, "presence"))
    bob.send("</stream:stream>")  # ... but keeps its TCP and TLS connection open
    bob.wait_for(lambda: bob.ended, 5, "the server's closing tag")
    alice = login(srv.host, srv.port, "alice", PASSWORD)
    for i, to in enumerate(["bob@localhost", "bob@localhost/phone", "bob@localhost"]):
        alice.send(f"<message to='{to}' type='chat' id='c{i}'><body>while closing {i}</body>"
                   "</message>")
    # Nothing bounced, nothing lost.
    assert alice.iq("<ping xmlns='urn:xmpp:ping'/>").get("type") == "result"
    assert not [s for s in alice.stanzas if s.get("type") == "error"]
    bob.close()
    again = login(srv.host, srv.port, "bob", PASSWORD, resource="laptop")
    again.send("<presence/>")
    got = set()
    while len(got) < 3:
        stanza = again.next_stanza(lambda s: s.tag == q(NS_CLIENT, "message"))
        got.add(stanza.get("id"))
        assert stanza.find("{urn:xmpp:delay}delay") is not None
    assert got == {"c0", "c1", "c2"}


# -- in-order processing (RFC 6120 §10.1) ---------------------------------------------


def test_a_private_get_after_a_set_in_the_same_write_sees_the_new_value(make_xmppd):
    srv = make_xmppd({"server": {"components": IM}})
    alice = login(srv.host, srv.port, "alice", PASSWORD)
    alice.iq(f"<query xmlns='{NS_PRIVATE}'><note xmlns='x:n'>old</note></query>", type="set")
    alice.send(f"<iq type='set' id='set'><query xmlns='{NS_PRIVATE}'><note xmlns='x:n'>new"
               f"</note></query></iq><iq type='get' id='get'><query xmlns='{NS_PRIVATE}'>"
               "<note xmlns='x:n'/></query></iq>")
    first = alice.next_stanza(lambda s: s.tag == q(NS_CLIENT, "iq"))
    second = alice.next_stanza(lambda s: s.tag == q(NS_CLIENT, "iq"))
    assert (first.get("id"), second.get("id")) == ("set", "get")
    assert second.findtext(f"{{{NS_PRIVATE}}}query/{{x:n}}note") == "new"


def test_a_blocklist_request_after_a_block_in_the_same_write_lists_the_new_jid(make_xmppd):
    srv = make_xmppd({"server": {"components": IM}})
    alice = login(srv.host, srv.port, "alice", PASSWORD)
    alice.send(f"<iq type='set' id='block'><block xmlns='{NS_BLOCKING}'>"
               "<item jid='spam@example.org'/></block></iq>"
               f"<iq type='get' id='list'><blocklist xmlns='{NS_BLOCKING}'/></iq>")
    answers = [alice.next_stanza(lambda s: s.tag == q(NS_CLIENT, "iq")) for _ in range(2)]
    assert [a.get("id") for a in answers] == ["block", "list"]
    items = answers[1].findall(f"{{{NS_BLOCKING}}}blocklist/{{{NS_BLOCKING}}}item")
    assert [i.get("jid") for i in items] == ["spam@example.org"]


# -- limits ----------------------------------------------------------------------------


def test_stream_limits_are_announced_with_xep_0478(make_xmppd):
    srv = make_xmppd({"server": {"max_stanza_size": 70000}, "c2s": {"idle_timeout": 600}})
    with RawClient.connect(srv.host, srv.tls_port, direct_tls=True) as c:
        features = c.open_stream()
        limits = features.find(q(NS_LIMITS, "limits"))
        assert limits is not None, ET.tostring(features)
        assert limits.findtext(q(NS_LIMITS, "max-bytes")) == "70000"
        assert limits.findtext(q(NS_LIMITS, "idle-seconds")) == "600"


def _ping_of_size(size: int) -> str:
    """A ping iq exactly ``size`` bytes long, end tag included."""
    ident = uuid.uuid4().hex[:8]
    bare = f"<iq type='get' id='{ident}' pad=''><ping xmlns='urn:xmpp:ping'/></iq>"
    return bare.replace("pad=''", f"pad='{'p' * (size - len(bare))}'")


def test_the_stanza_size_limit_counts_the_whole_stanza(make_xmppd):
    srv = make_xmppd({"server": {"max_stanza_size": 4096}})
    alice = login(srv.host, srv.port, "alice", PASSWORD)
    exact = _ping_of_size(4096)
    assert len(exact.encode()) == 4096
    alice.send(exact)
    assert alice.next_stanza().get("type") == "result"
    alice.send(_ping_of_size(4097))
    alice.expect_stream_error("policy-violation")


def test_sessions_per_account_are_limited(make_xmppd):
    srv = make_xmppd(c2s={"max_resources": 2})
    first = login(srv.host, srv.port, "alice", PASSWORD, resource="one")
    second = login(srv.host, srv.port, "alice", PASSWORD, resource="two")
    third = RawClient.connect(srv.host, srv.port)
    third.open_stream()
    third.starttls()
    third.open_stream()
    third.sasl_scram("alice", PASSWORD)
    third.open_stream()
    third.send(f"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
               "<resource>three</resource></bind></iq>")
    answer = third.next_stanza()
    assert answer.get("type") == "error"
    assert stanza_error_condition(answer) == ("wait", "resource-constraint")
    # Replacing one of the two resources is not a third session.
    replacement = login(srv.host, srv.port, "alice", PASSWORD, resource="two")
    assert replacement.jid == "alice@localhost/two"
    second.expect_stream_error("conflict")
    for c in (first, third, replacement):
        c.close()


def test_an_endless_sasl_exchange_is_cut_short(make_xmppd):
    srv = make_xmppd(c2s={"max_sasl_steps": 4})
    c = RawClient.connect(srv.host, srv.port)
    c.open_stream()
    c.starttls()
    c.open_stream()
    c.send(f"<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-256'/>")
    for _ in range(50):
        if not c.try_send(f"<response xmlns='{NS_SASL}'/>"):
            break
    c.wait_closed(10)
    challenges = [s for s in c.stanzas if s.tag == q(NS_SASL, "challenge")]
    failures = [s for s in c.stanzas if s.tag == q(NS_SASL, "failure")]
    assert len(challenges) <= 4
    assert failures and failures[0].find(q(NS_SASL, "malformed-request")) is not None, c.describe()
