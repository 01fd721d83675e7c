"""BOSH backpressure (XEP-0124 over :mod:`xmppd.http.bosh`): a client that
fetches slowly, or one that sends to such a client, is slowed down the way a
TCP client is, never cut off and never losing a stanza; one that stops
fetching altogether times out and its stanzas go where undelivered stanzas
go. Memory stays bounded throughout: the slow reader's output by ``[c2s]
max_output_buffer``, the sender's waiting input by ``[http]
bosh_max_input_buffer`` (and the request window).

Same harness as ``test_bosh.py``: the endpoint under a Twisted Web ``Site``
on ``StringTransport``\\ s, the server in memory on a ``task.Clock``."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from twisted.web import resource, server as webserver

from tests.http.test_bosh import Client, condition_of, payloads, still_works
from xmppd.http.bosh import BoshResource
from xmppd.testing import Harness

MAX_OUTPUT = 16384  # the smallest [c2s] max_output_buffer: congested past 4 KiB
MAX_INPUT = 8192  # [http] bosh_max_input_buffer
MAX_STANZA = 4096
MAX_BODY = MAX_STANZA + 16384  # what BOSH's route accepts per request


@pytest.fixture
def h():
    clock = Clock()
    harness = Harness(["ping", "roster", "presence", "messaging", "offline"], clock=clock,
                      options={"server": {"max_stanza_size": str(MAX_STANZA)},
                               "c2s": {"auth_timeout": "100",
                                       "max_output_buffer": str(MAX_OUTPUT)},
                               "http": {"bosh_max_input_buffer": str(MAX_INPUT)}})
    harness.clock = clock
    for user in ("alice@localhost", "bob@localhost", "carol@localhost"):
        harness.add_user(user, "secret")
    root = resource.Resource()
    harness.bosh = BoshResource(harness.server)
    root.putChild(b"http-bind", harness.bosh)
    harness.site = webserver.Site(root, reactor=clock)
    yield harness
    harness.stop()


def chat(to: str, ident: str) -> str:
    return (f"<message xmlns='jabber:client' to='{to}' type='chat' id='{ident}'>"
            f"<body>message {ident}</body></message>")


def ids(exchange) -> list[str]:
    return [m.getAttribute("id") for m in payloads(exchange.body()) if m.name == "message"]


class Reader:
    """A BOSH client that fetches only when told to (one request at a time,
    answered as soon as anything waits for it), keeping what it got in order."""

    def __init__(self, client: Client):
        self.client = client
        self.open: list = []
        self.got: list[str] = []

    def fetch(self) -> None:
        self.open.append(self.client.post())
        self.collect()

    def collect(self) -> None:
        while self.open and self.open[0].answered:
            body = self.open[0].body()
            assert condition_of(body) == (None, None), body.toXml()
            self.got += ids(self.open.pop(0))


def framing(h, client: Client):
    return h.bosh.sessions[client.sid]


def offline_ids(h, full_jid: str) -> list[str]:
    """The messages a new session of the user gets from offline storage."""
    session = h.login(full_jid, available=False)
    session.feed("<presence/>")
    return [m.getAttribute("id") for m in session.take() if m.name == "message"]


def test_a_slow_reader_gets_every_message_in_order_and_its_bosh_sender_is_slowed_not_cut_off(h):
    """Bob fetches once for every three chances Alice has to send; Alice
    sends 40 messages per request as fast as her request window lets her.
    Bob's full buffer throttles Alice; her requests beyond the input bound
    wait unread (so she waits too) until Bob fetches. Before, Alice was cut
    off after 256 stanzas waiting, and a fetch that woke Alice up lost the
    batch it was carrying."""
    alice, bob = Client(h), Client(h)
    alice.login("alice")
    bob.login("bob")
    reader = Reader(bob)
    total, batch = 1200, 40
    sent = 0
    alice_open: list = []
    a, b = framing(h, alice), framing(h, bob)
    peak = {"input": 0, "output": 0, "unread": 0}
    for turn in range(2000):
        alice_open = [e for e in alice_open if not e.answered]
        while len(alice_open) < 2 and sent < total:  # requests='2'
            alice_open.append(alice.post(*(chat("bob@localhost/web", f"m{sent + i}")
                                           for i in range(batch))))
            sent += batch
            alice_open = [e for e in alice_open if not e.answered]
        peak["input"] = max(peak["input"], a._input_bytes)
        peak["output"] = max(peak["output"], b._buffer_bytes)
        peak["unread"] = max(peak["unread"], len(a._pending))
        if turn % 3 == 0:
            reader.fetch()
        reader.collect()
        if len(reader.got) == total:
            break
    assert reader.got == [f"m{i}" for i in range(total)]
    for e in alice_open:  # Alice's last requests end normally (no terminate)
        if e.answered:
            assert condition_of(e.body()) == (None, None)
    assert h.router.resources("alice@localhost") and h.router.resources("bob@localhost")
    # she was slowed: some of her requests waited unread
    assert h.server.counters["bosh request unread"] > 0 and peak["unread"] >= 1
    # and memory stayed bounded
    assert peak["input"] <= MAX_INPUT + MAX_BODY
    assert peak["output"] <= MAX_OUTPUT
    assert h.server.counters["bosh output overflow"] == 0
    still_works(h)


def test_a_fetch_that_lets_a_producer_go_on_loses_nothing_of_what_it_carries(h):
    """What a drain waiter (offline delivery's next batch, a throttled sender)
    sends when a response takes the buffer goes on a later response: it used
    to answer the same request again, and the batch that request was
    carrying was lost."""
    bob = Client(h)
    bob.login("bob")
    alice = h.login("alice@localhost/tcp")
    alice.feed("<message to='bob@localhost/web' id='w1' type='chat'><body>1</body></message>")
    alice.feed("<message to='bob@localhost/web' id='w2' type='chat'><body>2</body></message>")
    framing(h, bob).drained().addCallback(lambda _: alice.feed(
        "<message to='bob@localhost/web' id='w3' type='chat'><body>3</body></message>"))
    assert ids(bob.post()) == ["w1", "w2"]
    assert ids(bob.post()) == ["w3"]


def test_a_client_that_fetches_its_own_answers_slowly_gets_them_all(h):
    """Pings in batches whose answers pass a quarter of the output buffer
    within one request: the session stops taking the rest of the batch, the
    response carries what is there, the next request takes more. Every pong
    arrives, in order, and the session lives on."""
    c = Client(h)
    c.login("alice")
    ping = ("<iq xmlns='jabber:client' type='get' id='p{}' to='localhost'>"
            "<ping xmlns='urn:xmpp:ping'/></iq>")
    got: list[str] = []
    total, batch, sent = 300, 60, 0
    open_: list = []
    for _ in range(50):
        stanzas = [ping.format(sent + i) for i in range(batch)] if sent < total else []
        sent += len(stanzas)
        open_ += [c.post(*stanzas), c.post()]  # a batch, then a poll (it answers the batch)
        while open_ and open_[0].answered:
            body = open_.pop(0).body()
            assert condition_of(body) == (None, None), body.toXml()
            got += [p.getAttribute("id") for p in payloads(body)]
        if len(got) >= total:
            break
    assert got == [f"p{i}" for i in range(total)]
    assert h.server.counters["bosh output overflow"] == 0
    assert framing(h, c)._input_bytes <= MAX_INPUT + MAX_BODY


def test_a_reader_that_never_fetches_times_out_and_its_messages_go_offline(h):
    """Bob stops fetching: the messages for him wait (under the output
    bound), his session ends after inactivity, and they are in his offline
    storage, in order, for his next login."""
    bob = Client(h)
    bob.login("bob")
    assert payloads(bob.post("<presence xmlns='jabber:client'/>").body())  # and its echo
    alice = h.login("alice@localhost/tcp")
    for i in range(40):
        alice.feed(f"<message to='bob@localhost' id='o{i}' type='chat'><body>{i}</body></message>")
    assert framing(h, bob)._buffer_bytes <= MAX_OUTPUT
    h.clock.advance(59)
    assert bob.sid in h.bosh.sessions
    h.clock.advance(1)
    assert bob.sid not in h.bosh.sessions and not h.router.resources("bob@localhost")
    assert h.server.counters["bosh timed out"] == 1
    assert offline_ids(h, "bob@localhost/later") == [f"o{i}" for i in range(40)]


def test_a_sender_slowed_by_a_dead_reader_goes_on_when_the_reader_times_out(h):
    """Alice (BOSH) floods Bob, who never fetches: Alice is slowed (her
    requests wait unread) instead of being cut off; when Bob's session times
    out, Alice goes on, and every message is in Bob's offline storage in
    order. A third session is not slowed meanwhile."""
    bob = Client(h)
    bob.login("bob")
    # available (and its echo taken), then Bob fetches nothing more
    assert payloads(bob.post("<presence xmlns='jabber:client'/>").body())
    alice = Client(h)
    alice.login("alice")
    carol = Client(h)
    carol.login("carol")
    total, batch, sent = 400, 40, 0
    alice_open: list = []

    def send_more() -> None:
        nonlocal sent, alice_open
        alice_open = [e for e in alice_open if not e.answered]
        while len(alice_open) < 2 and sent < total:
            alice_open.append(alice.post(*(chat("bob@localhost", f"d{sent + i}")
                                           for i in range(batch))))
            sent += batch
            alice_open = [e for e in alice_open if not e.answered]

    send_more()
    assert sent < total  # held back: Bob's buffer is full and he is not fetching
    assert h.server.counters["bosh request unread"] > 0
    assert framing(h, alice)._input_bytes <= MAX_INPUT + MAX_BODY
    # Carol is untouched: her ping is answered at once
    [pong] = payloads(carol.post("<iq xmlns='jabber:client' type='get' id='c' to='localhost'>"
                                 "<ping xmlns='urn:xmpp:ping'/></iq>").body())
    assert pong.getAttribute("type") == "result"
    for _ in range(6):  # Bob's inactivity (60 s) passes; Alice's polls end by wait (60 s)
        h.clock.advance(20)
        send_more()
    assert bob.sid not in h.bosh.sessions
    while sent < total:
        h.clock.advance(30)
        send_more()
    assert alice.sid in h.bosh.sessions and h.router.resources("alice@localhost")
    assert all(condition_of(e.body()) == (None, None) for e in alice_open if e.answered)
    assert framing(h, alice)._input_bytes == 0
    assert offline_ids(h, "bob@localhost/later") == [f"d{i}" for i in range(total)]


def test_messages_waiting_to_be_taken_when_the_session_ends_still_go_where_they_were_sent(h):
    """A session ends (a stream error) with payloads it had not taken yet:
    the messages among them are delivered, as a TCP session's unprocessed
    ones are."""
    bob = Client(h)
    bob.login("bob")
    carol = h.login("carol@localhost/tcp")
    alice = Client(h)
    alice.login("alice")
    # Bob's buffer fills (he does not fetch) and throttles Alice mid-request
    alice.post(*(chat("bob@localhost/web", f"x{i}") for i in range(60)),
               *(chat("carol@localhost/tcp", f"c{i}") for i in range(3)))
    a = framing(h, alice)
    assert a._input, "Alice was not slowed"
    a.stream_error("policy-violation")
    assert [m.getAttribute("id") for m in carol.take() if m.name == "message"] == \
        ["c0", "c1", "c2"]


def test_a_client_whose_own_output_needs_its_unread_requests_is_read_up_to_twice_the_bound(h):
    """Alice is slowed (Bob does not fetch), and Carol fills Alice's own
    buffer while no request of hers is held: the request left unread is read
    after all, to carry it (else neither would ever move). Past twice the
    input bound that is over the limit: the session ends (policy-violation),
    and what waited for Alice goes to her offline storage (the messages she
    had sent in requests read go on to Bob, as in the test above)."""
    bob = Client(h)
    bob.login("bob")
    assert payloads(bob.post("<presence xmlns='jabber:client'/>").body())
    alice = Client(h)
    alice.login("alice")
    assert payloads(alice.post("<presence xmlns='jabber:client'/>").body())
    carol = h.login("carol@localhost/tcp")
    a = framing(h, alice)
    exchanges: list = []
    sent = carol_sent = 0
    for _ in range(40):
        if a.closed:
            break
        if sum(not e.answered for e in exchanges) < 2:
            exchanges.append(alice.post(*(chat("bob@localhost", f"a{sent + i}")
                                          for i in range(40))))
            sent += 40
        assert a._input_bytes <= 2 * MAX_INPUT + MAX_BODY
        for _ in range(10):
            carol.feed(f"<message to='alice@localhost/web' id='c{carol_sent}' type='chat'>"
                       f"<body>{'x' * 100}</body></message>")
            carol_sent += 1
    assert a.closed, "never over the limit"
    bodies = [e.body() for e in exchanges if e.answered]
    end = bodies[-1]
    assert condition_of(end) == ("terminate", "remote-stream-error")
    assert end.firstChildElement().firstChildElement().name == "policy-violation"
    assert h.server.counters["bosh input overflow"] == 1
    # Carol's messages: those Alice fetched, then the rest from offline storage
    got = [m.getAttribute("id") for b in bodies for m in payloads(b) if m.name == "message"]
    assert got + offline_ids(h, "alice@localhost/later") == [f"c{i}" for i in range(carol_sent)]
