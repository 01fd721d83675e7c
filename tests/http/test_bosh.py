"""XMPP over BOSH (XEP-0124, XEP-0206) without a socket: the endpoint under a
plain Twisted Web ``Site``, each request on a ``StringTransport`` of its own
(as a browser's connections), the server in memory on a ``task.Clock`` (so
``wait``, ``inactivity`` and the auth deadline are the clock's)."""

from __future__ import annotations

import base64
import re

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web import resource, server as webserver

from xmppd import ns
from xmppd.http.bosh import MAX_PAUSE, BoshResource
from xmppd.testing import Harness, parse

BIND = (f"<iq xmlns='jabber:client' type='set' id='bind'><bind xmlns='{ns.BIND}'>"
        "<resource>web</resource></bind></iq>")
PING = "<iq xmlns='jabber:client' type='get' id='{}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
XBOSH = f"xmlns:xmpp='{ns.XBOSH}'"


def plain_auth(user: str = "alice") -> str:
    token = base64.b64encode(f"\0{user}\0secret".encode()).decode()
    return f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>{token}</auth>"


class Exchange:
    """One POST on a connection of its own, and its response when it comes."""

    def __init__(self, site: webserver.Site, data: bytes, host: str = "127.0.0.1"):
        address = IPv4Address("TCP", host, 40000)
        self.transport = StringTransport(peerAddress=address)
        self.proto = site.buildProtocol(address)
        self.proto.makeConnection(self.transport)
        self.proto.dataReceived(b"POST /http-bind HTTP/1.1\r\nHost: localhost\r\n"
                                b"Content-Type: text/xml; charset=utf-8\r\n"
                                b"Content-Length: %d\r\n\r\n" % len(data) + data)

    @property
    def answered(self) -> bool:
        return b"\r\n\r\n" in self.transport.value()

    def raw(self) -> tuple[int, dict[str, str], bytes]:
        head, _, body = self.transport.value().partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        return int(lines[0].split()[1]), headers, body

    def body(self):
        assert self.answered, "no response yet"
        code, headers, data = self.raw()
        assert code == 200 and headers["content-type"] == "text/xml; charset=utf-8"
        assert int(headers["content-length"]) == len(data)
        return parse(data.decode("utf-8"))

    def drop(self) -> None:
        self.proto.connectionLost(Failure(ConnectionDone()))


def payloads(body) -> list:
    return [c for c in body.elements()]


class Client:
    """A BOSH client: rids in order, one connection per request."""

    def __init__(self, h: Harness, host: str = "127.0.0.1", wait: int = 60, hold: int = 1,
                 to: str = "localhost"):
        self.h = h
        self.host = host
        self.rid = 1000
        self.created = self.post_raw(
            f"<body xmlns='{ns.HTTPBIND}' rid='{self.rid}' to='{to}' wait='{wait}' "
            f"hold='{hold}' ver='1.6' xmpp:version='1.0' {XBOSH}/>")
        self.sid = self.created.body().getAttribute("sid") if self.created.answered else None

    def post_raw(self, text: str) -> Exchange:
        return Exchange(self.h.site, text.encode("utf-8"), self.host)

    def post(self, *stanzas: str, rid: int | None = None, attrs: str = "") -> Exchange:
        if rid is None:
            self.rid += 1
            rid = self.rid
        return self.post_raw(f"<body xmlns='{ns.HTTPBIND}' sid='{self.sid}' rid='{rid}'"
                             f"{' ' + attrs if attrs else ''}>{''.join(stanzas)}</body>")

    def login(self, user: str = "alice") -> None:
        [success] = payloads(self.post(plain_auth(user)).body())
        assert success.name == "success"
        [features] = payloads(self.post(attrs=f"xmpp:restart='true' {XBOSH}").body())
        assert features.name == "features"
        [result] = payloads(self.post(BIND).body())
        assert result.getAttribute("type") == "result", result.toXml()


@pytest.fixture
def h():
    clock = Clock()
    harness = Harness(["ping", "roster", "presence", "messaging"], clock=clock,
                      options={"server": {"max_stanza_size": "4096"},
                               "c2s": {"auth_timeout": "100"},
                               "http": {"bosh_max_sessions": "3"}})
    harness.clock = clock
    for user in ("alice@localhost", "bob@localhost"):
        harness.add_user(user, "secret")
    root = resource.Resource()
    harness.bosh = BoshResource(harness.server)
    root.putChild(b"http-bind", harness.bosh)
    harness.site = webserver.Site(root, reactor=clock)
    yield harness
    harness.stop()


def still_works(h: Harness) -> None:
    bob = h.login("bob@localhost/check", available=False)
    bob.feed("<iq type='get' id='alive' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    [pong] = bob.take()
    assert pong.getAttribute("type") == "result"
    bob.logout()


def condition_of(body) -> tuple[str | None, str | None]:
    return body.getAttribute("type"), body.getAttribute("condition")


# -- creation -----------------------------------------------------------------------------------


def test_the_creation_response_has_prosodys_attributes_and_the_stream_features(h):
    c = Client(h, wait=300)
    body = c.created.body()
    assert (body.uri, body.name) == (ns.HTTPBIND, "body")
    attrs = {k if isinstance(k, str) else f"{{{k[0]}}}{k[1]}": v
             for k, v in body.attributes.items()}
    assert attrs["sid"] == attrs["authid"] and len(attrs["sid"]) == 36
    assert {k: attrs[k] for k in ("wait", "inactivity", "polling", "requests", "hold", "ver",
                                  "from", "secure", "maxpause")} == {
        "wait": "120", "inactivity": "60", "polling": "5", "requests": "2", "hold": "1",
        "ver": "1.6", "from": "localhost", "secure": "true", "maxpause": str(MAX_PAUSE)}
    assert attrs[f"{{{ns.XBOSH}}}version"] == "1.0"
    assert attrs[f"{{{ns.XBOSH}}}restartlogic"] == "true"
    [features] = payloads(body)
    assert (features.uri, features.name) == (ns.STREAMS, "features")
    mechanisms = [str(m) for m in features.mechanisms.elements()]
    assert mechanisms == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]  # loopback: secure
    assert c.created.transport.value().count(f"xmlns:stream='{ns.STREAMS}'".encode()) >= 1


def test_a_client_asking_for_no_hold_gets_a_polling_session(h):
    body = Client(h, hold=0, wait=10).created.body()
    assert (body.getAttribute("hold"), body.getAttribute("requests"),
            body.getAttribute("wait")) == ("0", "1", "10")


def test_login_restart_bind_and_stanzas_over_bosh(h):
    c = Client(h)
    c.login()
    assert [s.bare for s in h.router.resources("alice@localhost").values()] == ["alice@localhost"]
    [pong] = payloads(c.post(PING.format("p1")).body())
    assert pong.getAttribute("type") == "result" and pong.getAttribute("id") == "p1"
    # a held request carries a message from a TCP client as it arrives
    held = c.post()
    assert not held.answered
    bob = h.login("bob@localhost/tcp")
    bob.feed("<message to='alice@localhost/web' id='m1' type='chat'><body>hi</body></message>")
    assert held.answered
    assert b"<message xmlns='jabber:client'" in held.raw()[2]
    [message] = payloads(held.body())
    assert message.getAttribute("id") == "m1" and str(message.body) == "hi"
    c.post("<message xmlns='jabber:client' to='bob@localhost/tcp' id='m2' type='chat'>"
           "<body>back</body></message>")
    [back] = bob.take()
    assert back.getAttribute("from") == "alice@localhost/web" and str(back.body) == "back"
    # unqualified stanzas inside <body/> are jabber:client (XEP-0206 §3)
    c.post("<message to='bob@localhost/tcp' id='m3' type='chat'><body>plain</body></message>")
    [plain] = bob.take()
    assert str(plain.body) == "plain"


def test_stanzas_sent_before_the_restart_in_the_same_request_are_discarded(h):
    c = Client(h)
    [success, *rest] = payloads(c.post(plain_auth(), PING.format("smuggled")).body())
    assert success.name == "success" and rest == []
    [features] = payloads(c.post(attrs=f"xmpp:restart='true' {XBOSH}").body())
    assert features.bind is not None


def test_stanzas_in_the_restart_request_are_ignored(h):
    """XEP-0206 §5: the restart request should be empty, and a stanza in it
    ignored (Prosody processes it)."""
    c = Client(h)
    [success] = payloads(c.post(plain_auth()).body())
    [features] = payloads(c.post(PING.format("inside"), attrs=f"xmpp:restart='true' {XBOSH}")
                          .body())
    assert features.name == "features"
    held = c.post()
    assert not held.answered  # no pong: the ping was not processed
    assert h.server.counters["bosh stanzas in a restart ignored"] == 1


def test_any_request_after_sasl_success_restarts_the_stream_as_prosody_does(h):
    """XEP-0206 §5 has the client send xmpp:restart='true'; a request
    without it (an empty poll) restarts the stream all the same, and a
    restart request after that is an ordinary request."""
    c = Client(h)
    [success] = payloads(c.post(plain_auth()).body())
    [features] = payloads(c.post().body())
    assert features.name == "features" and features.bind is not None
    held = c.post(attrs=f"xmpp:restart='true' {XBOSH}")
    assert not held.answered  # no second <stream:features/>: held like any request
    c.post(BIND)
    [result] = payloads(held.body())  # (the bind request is held in its turn)
    assert result.getAttribute("type") == "result"


# -- hold and wait ----------------------------------------------------------------------------------


def test_a_held_request_is_answered_empty_after_wait_seconds(h):
    c = Client(h, wait=30)
    c.login()
    held = c.post()
    h.clock.advance(29)
    assert not held.answered
    h.clock.advance(1)
    assert held.answered and payloads(held.body()) == []
    assert held.body().getAttribute("sid") == c.sid


def test_a_new_request_answers_the_one_held_before_it(h):
    c = Client(h)
    c.login()
    first = c.post()
    second = c.post(PING.format("p"))
    # hold=1: the ping's answer goes out on the older request; the newer waits
    assert [p.getAttribute("id") for p in payloads(first.body())] == ["p"]
    assert not second.answered


def test_output_waits_for_the_next_request_when_none_is_held(h):
    c = Client(h)
    c.login()
    bob = h.login("bob@localhost/tcp")
    bob.feed("<message to='alice@localhost/web' id='w1' type='chat'><body>1</body></message>")
    bob.feed("<message to='alice@localhost/web' id='w2' type='chat'><body>2</body></message>")
    got = c.post()
    assert [m.getAttribute("id") for m in payloads(got.body())] == ["w1", "w2"]


# -- rid ----------------------------------------------------------------------------------------------


def test_requests_out_of_order_are_processed_in_rid_order(h):
    c = Client(h)
    c.login()
    later = c.post(PING.format("second"), rid=c.rid + 2)
    assert not later.answered  # waits for the missing one, unprocessed
    earlier = c.post(PING.format("first"), rid=c.rid + 1)
    c.rid += 2
    # processed in order, each answered in rid order
    assert [p.getAttribute("id") for p in payloads(earlier.body())] == ["first"]
    assert [p.getAttribute("id") for p in payloads(later.body())] == ["second"]


def test_a_replayed_rid_gets_its_cached_response(h):
    c = Client(h)
    c.login()
    first = c.post(PING.format("once"))
    again = c.post(PING.format("ignored"), rid=c.rid)
    assert again.raw()[2] == first.raw()[2]
    # nothing was processed twice: the next request is not answered by a pong
    held = c.post()
    assert not held.answered


def test_a_held_request_sent_again_takes_over(h):
    c = Client(h)
    c.login()
    lost = c.post()
    retry = c.post(rid=c.rid)
    assert lost.answered and payloads(lost.body()) == []
    assert not retry.answered
    bob = h.login("bob@localhost/tcp")
    bob.feed("<message to='alice@localhost/web' id='r' type='chat'><body>x</body></message>")
    assert [m.getAttribute("id") for m in payloads(retry.body())] == ["r"]


def test_a_request_whose_connection_dropped_can_be_sent_again(h):
    c = Client(h)
    c.login()
    lost = c.post()
    lost.drop()
    bob = h.login("bob@localhost/tcp")
    bob.feed("<message to='alice@localhost/web' id='kept' type='chat'><body>x</body></message>")
    again = c.post(rid=c.rid)  # the lost one's response (empty): the message still waits
    assert payloads(again.body()) == []
    assert [m.getAttribute("id") for m in payloads(c.post().body())] == ["kept"]


@pytest.mark.parametrize("offset", [3, 100, -5])
def test_an_rid_outside_the_window_ends_the_session_with_item_not_found(h, offset):
    c = Client(h)
    c.login()
    held = c.post()
    bad = c.post(PING.format("x"), rid=c.rid + offset if offset > 0 else c.rid - 10)
    assert condition_of(bad.body()) == ("terminate", "item-not-found")
    assert condition_of(held.body()) == ("terminate", "item-not-found")
    assert not h.router.resources("alice@localhost") and c.sid not in h.bosh.sessions
    assert condition_of(c.post().body()) == ("terminate", "item-not-found")  # no session now
    still_works(h)


def test_more_requests_at_once_than_allowed_is_policy_violation(h):
    c = Client(h)
    c.login()
    held = c.post()
    ahead = c.post(rid=c.rid + 2)  # two open, the one between still missing
    third = c.post(rid=c.rid + 3)
    assert condition_of(third.body()) == ("terminate", "policy-violation")
    assert condition_of(held.body()) == ("terminate", "policy-violation")
    assert condition_of(ahead.body()) == ("terminate", "policy-violation")
    assert not h.router.resources("alice@localhost")
    still_works(h)


def test_polling_faster_than_allowed_is_policy_violation(h):
    c = Client(h, hold=0, wait=0)
    assert payloads(c.post().body()) == []  # answered at once, empty
    h.clock.advance(1)
    assert condition_of(c.post().body()) == ("terminate", "policy-violation")
    c = Client(h, hold=0, wait=0)
    c.post().body()
    h.clock.advance(5)
    assert condition_of(c.post().body()) == (None, None)


# -- the end of a session ------------------------------------------------------------------------------


def test_terminate_is_answered_with_terminate_and_ends_the_session(h):
    c = Client(h)
    c.login()
    bye = c.post("<presence xmlns='jabber:client' type='unavailable'/>", attrs="type='terminate'")
    assert condition_of(bye.body()) == ("terminate", None)
    assert not h.router.resources("alice@localhost") and c.sid not in h.bosh.sessions


def test_terminate_acknowledged_on_the_oldest_request_and_the_others_get_empty_bodies(h):
    """XEP-0124 §13: the oldest open request gets type='terminate' (with what
    was waiting for the client, as Prosody sends it), the terminate request
    itself an empty body (Prosody: a second terminate body)."""
    c = Client(h)
    c.login()
    held = c.post()
    bob = h.login("bob@localhost/tcp")
    bye = c.post("<message xmlns='jabber:client' to='bob@localhost/tcp' id='last'>"
                 "<body>bye</body></message>", attrs="type='terminate'")
    end = held.body()
    assert condition_of(end) == ("terminate", None)
    assert condition_of(bye.body()) == (None, None) and payloads(bye.body()) == []
    assert bye.body().getAttribute("sid") == c.sid
    assert [m.getAttribute("id") for m in bob.take()] == ["last"]
    assert not h.router.resources("alice@localhost") and c.sid not in h.bosh.sessions


def test_what_waits_for_the_client_goes_out_with_the_terminate(h):
    """The answer to a stanza of the terminate request is in the terminate
    body (the oldest open request's), as Prosody sends the unavailable
    presence's echo there; nothing is left to be re-routed."""
    c = Client(h)
    c.login()
    held = c.post()
    bye = c.post(PING.format("last"), attrs="type='terminate'")
    end = held.body()
    assert condition_of(end) == ("terminate", None) and end.getAttribute("sid") == c.sid
    assert [p.getAttribute("id") for p in payloads(end)] == ["last"]
    assert payloads(bye.body()) == []
    c = Client(h)  # alone, the terminate request is the oldest: it gets them
    c.login()
    bye = c.post(PING.format("alone"), attrs="type='terminate'")
    assert condition_of(bye.body()) == ("terminate", None)
    assert [p.getAttribute("id") for p in payloads(bye.body())] == ["alone"]


@pytest.mark.parametrize("data", [b"", b"hello", b"<body xmlns='http://jabber.org/protocol/httpbind'",
                                  b"<foo xmlns='http://jabber.org/protocol/httpbind'/>",
                                  b"<body xmlns='jabber:client' rid='1' to='localhost' wait='60'/>",
                                  b"<!DOCTYPE x><body/>"])
def test_a_request_that_is_not_a_bosh_body_is_bad_request(h, data):
    c = Client(h)
    c.login()
    body = Exchange(h.site, data).body()
    assert condition_of(body) == ("terminate", "bad-request")
    assert h.router.resources("alice@localhost")
    still_works(h)


def test_an_unknown_sid_is_item_not_found_as_prosody_answers(h):
    body = Exchange(h.site, f"<body xmlns='{ns.HTTPBIND}' sid='nope' rid='5'/>".encode())
    assert condition_of(body.body()) == ("terminate", "item-not-found")
    assert b"xmlns:stream" not in body.raw()[2]


@pytest.mark.parametrize("attrs, condition", [
    ("rid='1' wait='60'", "improper-addressing"),
    ("rid='1' wait='60' to='elsewhere.example'", "host-unknown"),
    ("rid='x' wait='60' to='localhost'", "bad-request"),
    ("rid='1' to='localhost'", "bad-request"),
    ("rid='1' wait='-1' to='localhost'", "bad-request"),
])
def test_a_bad_creation_request_is_refused(h, attrs, condition):
    body = Exchange(h.site, f"<body xmlns='{ns.HTTPBIND}' ver='1.6' {attrs}/>".encode()).body()
    assert condition_of(body) == ("terminate", condition)
    assert not h.bosh.sessions


def test_a_legacy_client_gets_http_errors_for_the_conditions_they_stand_for(h):
    """XEP-0124 §17.1-17.2: a client without 'ver' in its creation request
    is a legacy one; bad-request, policy-violation and item-not-found reach
    it as HTTP 400, 403 and 404 (Prosody answers 200 and the condition)."""
    bad = Exchange(h.site, f"<body xmlns='{ns.HTTPBIND}' rid='1' to='localhost'/>".encode())
    assert bad.raw()[0] == 400 and bad.raw()[2] == b""
    created = Exchange(h.site, f"<body xmlns='{ns.HTTPBIND}' rid='10' to='localhost' "
                               "wait='60' hold='1'/>".encode())
    sid = created.body().getAttribute("sid")
    assert created.body().getAttribute("ver") == "1.6"
    held = Exchange(h.site, f"<body xmlns='{ns.HTTPBIND}' sid='{sid}' rid='11'/>".encode())
    far = Exchange(h.site, f"<body xmlns='{ns.HTTPBIND}' sid='{sid}' rid='99'/>".encode())
    assert far.raw()[0] == 404 and held.raw()[0] == 404
    assert sid not in h.bosh.sessions
    # improper-addressing has no HTTP equivalent: a terminal condition still
    bare = Exchange(h.site, f"<body xmlns='{ns.HTTPBIND}' rid='1' wait='60'/>".encode())
    assert condition_of(bare.body()) == ("terminate", "improper-addressing")


@pytest.mark.parametrize("asked, answered", [("1.6", "1.6"), ("1.5", "1.5"), ("1.10", "1.6"),
                                             ("2.0", "1.6"), ("0.9", "0.9"), ("x", "1.6")])
def test_ver_is_ours_or_the_clients_whichever_is_lower(h, asked, answered):
    """XEP-0124 §7.2 (Prosody always answers 1.6)."""
    created = Exchange(h.site, f"<body xmlns='{ns.HTTPBIND}' rid='1' to='localhost' wait='60' "
                               f"ver='{asked}'/>".encode())
    assert created.body().getAttribute("ver") == answered


def test_another_method_than_get_and_post_is_405(h):
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 1))
    proto = h.site.buildProtocol(None)
    proto.makeConnection(transport)
    proto.dataReceived(b"PUT /http-bind HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\n\r\nx")
    out = transport.value()
    assert out.startswith(b"HTTP/1.1 405") and b"Allow: GET, HEAD, POST, OPTIONS" in out


def test_sessions_beyond_the_limit_are_refused(h):
    clients = [Client(h) for _ in range(3)]
    assert all(c.sid for c in clients)
    refused = Client(h)
    assert condition_of(refused.created.body()) == ("terminate", "remote-connection-failed")
    assert len(h.bosh.sessions) == 3


def test_malformed_xml_in_a_session_is_the_terminal_bad_request(h):
    """XEP-0124 §17.2: a syntax error of the binding element is bad-request,
    as Prosody answers it; a terminal condition, so the session ends (Prosody
    keeps it)."""
    c = Client(h)
    c.login()
    held = c.post()
    c.rid += 1
    bad = c.post_raw(f"<body xmlns='{ns.HTTPBIND}' sid='{c.sid}' rid='{c.rid}'>"
                     "<message><body>x</message></body>")
    assert condition_of(bad.body()) == ("terminate", "bad-request")
    assert condition_of(held.body()) == ("terminate", "bad-request")
    assert not h.router.resources("alice@localhost") and c.sid not in h.bosh.sessions
    still_works(h)


def test_a_stanza_over_the_size_limit_is_policy_violation(h):
    c = Client(h)
    c.login()
    body = c.post("<message xmlns='jabber:client' to='bob@localhost'><body>"
                  + "x" * 5000 + "</body></message>").body()
    assert condition_of(body) == ("terminate", "remote-stream-error")
    assert body.firstChildElement().firstChildElement().name == "policy-violation"
    assert re.search(r"stanza too large", body.toXml())
    still_works(h)


def test_a_get_is_told_what_the_endpoint_is(h):
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 1))
    proto = h.site.buildProtocol(None)
    proto.makeConnection(transport)
    proto.dataReceived(b"GET /http-bind HTTP/1.1\r\nHost: localhost\r\n\r\n")
    out = transport.value()
    assert out.startswith(b"HTTP/1.1 200") and b"BOSH" in out


def test_a_session_whose_client_left_with_a_request_ahead_of_a_missing_rid_ends(h):
    """A request that came early (its predecessor never did) and whose
    connection is gone keeps nothing open: after ``inactivity`` the session
    ends and the resource is unbound (it used to live for ever)."""
    c = Client(h)
    c.login()
    held = c.post()                 # the long poll
    ahead = c.post(rid=c.rid + 2)   # one rid skipped: waits unprocessed
    ahead.drop()
    held.drop()                     # the browser is gone
    for _ in range(3):
        h.clock.advance(60)
    assert c.sid not in h.bosh.sessions
    assert "web" not in h.server.router.resources("alice@localhost")
