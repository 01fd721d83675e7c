"""XMPP over WebSocket (RFC 7395) without a socket: the endpoint under a plain
Twisted Web ``Site`` on a ``StringTransport``, a wsproto client making the
frames, the server in memory on an injected clock."""

from __future__ import annotations

import base64

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web import resource, server as webserver
from wsproto import ConnectionType, WSConnection
from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection, Ping, Pong,
                            RejectConnection, RejectData, Request, TextMessage)
from zope.interface import alsoProvides

from xmppd import ns
from xmppd.http.websocket import WebSocketResource
from xmppd.testing import Harness, parse

OPEN = f"<open xmlns='{ns.FRAMING}' to='localhost' version='1.0'/>"
CLOSE = f"<close xmlns='{ns.FRAMING}'/>"
BIND = (f"<iq xmlns='jabber:client' type='set' id='bind'><bind xmlns='{ns.BIND}'>"
        "<resource>web</resource></bind></iq>")
PING = "<iq xmlns='jabber:client' type='get' id='{}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"


def plain_auth(user: str = "alice") -> str:
    token = base64.b64encode(f"\0{user}\0secret".encode()).decode()
    return f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>{token}</auth>"


class Client:
    """One HTTP connection to the site, upgraded by a wsproto client."""

    def __init__(self, site: webserver.Site, host: str = "127.0.0.1", tls: bool = False,
                 protocols: list[str] | None = None, headers: list | None = None):
        address = IPv4Address("TCP", host, 40000)
        self.transport = StringTransport(peerAddress=address)
        if tls:
            alsoProvides(self.transport, ISSLTransport)  # (a TCP transport, too)
            self.transport.setTcpNoDelay = lambda enabled: None
        self.proto = site.buildProtocol(address)
        self.proto.makeConnection(self.transport)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.proto.dataReceived(self.ws.send(Request(
            host="localhost", target="/xmpp-websocket", extra_headers=headers or [],
            subprotocols=["xmpp"] if protocols is None else protocols)))
        self.events = self._events()
        self.accepted = next((e for e in self.events if isinstance(e, AcceptConnection)), None)

    def _events(self) -> list:
        out = self.transport.value()
        self.transport.clear()
        if not out:
            return []
        self.ws.receive_data(out)
        return list(self.ws.events())

    def send(self, text: str) -> list:
        """One text message; what came back (wsproto events)."""
        return self.raw(self.ws.send(TextMessage(text)))

    def raw(self, data: bytes) -> list:
        self.proto.dataReceived(data)
        return self._events()

    def received(self, events: list | None = None) -> list:
        """The parsed elements of the text messages among ``events`` (or of
        whatever is waiting)."""
        events = self._events() if events is None else events
        return [parse_message(e.data) for e in events if isinstance(e, TextMessage)]

    def login(self, user: str = "alice") -> None:
        self.send(OPEN)
        assert self.received(self.send(plain_auth(user)))[-1].name == "success"
        self.send(OPEN)
        [result] = self.received(self.send(BIND))
        assert result.getAttribute("type") == "result", result.toXml()


def parse_message(text: str):
    """A message parsed on its own, as a browser would: no namespace inherited."""
    from xml.etree import ElementTree as ET
    ET.fromstring(text)  # a complete document by itself
    return parse(text)


def close_of(events: list) -> int | None:
    return next((e.code for e in events if isinstance(e, CloseConnection)), None)


@pytest.fixture
def h():
    clock = Clock()
    harness = Harness(["ping", "roster", "presence", "messaging"], clock=clock,
                      options={"server": {"max_stanza_size": "4096"},
                               "c2s": {"auth_timeout": "10", "close_timeout": "3",
                                       "idle_timeout": "30"}})
    harness.clock = clock
    for user in ("alice@localhost", "bob@localhost"):
        harness.add_user(user, "secret")
    root = resource.Resource()
    root.putChild(b"xmpp-websocket", WebSocketResource(harness.server))
    # (the HTTP channels' own timers on the test clock, not the reactor)
    harness.site = webserver.Site(root, reactor=clock)
    yield harness
    harness.stop()


# -- the handshake -------------------------------------------------------------------


def test_the_handshake_answers_the_xmpp_subprotocol(h):
    c = Client(h.site, protocols=["chat", "xmpp"])
    assert c.accepted is not None and c.accepted.subprotocol == "xmpp"


@pytest.mark.parametrize("protocols", [[], ["chat"], ["XMPP"]])
def test_a_handshake_without_the_xmpp_subprotocol_is_501_as_prosody_answers(h, protocols):
    c = Client(h.site, protocols=protocols)
    rejected = [e for e in c.events if isinstance(e, RejectConnection)]
    assert c.accepted is None and rejected[0].status_code == 501
    assert b"xmpp" in b"".join(bytes(e.data) for e in c.events if isinstance(e, RejectData))


def test_a_plain_get_is_told_what_the_endpoint_is(h):
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 1))
    proto = h.site.buildProtocol(None)
    proto.makeConnection(transport)
    proto.dataReceived(b"GET /xmpp-websocket HTTP/1.1\r\nHost: localhost\r\n\r\n")
    out = transport.value()
    assert out.startswith(b"HTTP/1.1 200") and b"WebSocket" in out


def test_a_broken_handshake_is_400(h):
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 1))
    proto = h.site.buildProtocol(None)
    proto.makeConnection(transport)
    proto.dataReceived(b"GET /xmpp-websocket HTTP/1.1\r\nHost: localhost\r\n"
                       b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: x\r\n"
                       b"Sec-WebSocket-Version: 7\r\nSec-WebSocket-Protocol: xmpp\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 400")
    assert not h.router.sessions


# -- the framed stream -----------------------------------------------------------------


def test_open_is_answered_with_open_and_features_each_declaring_its_namespaces(h):
    c = Client(h.site)
    events = c.send(OPEN)
    texts = [e.data for e in events if isinstance(e, TextMessage)]
    opened, features = (parse_message(t) for t in texts)
    assert (opened.uri, opened.name) == (ns.FRAMING, "open")
    assert opened.getAttribute("from") == "localhost" and opened.getAttribute("version") == "1.0"
    assert opened.getAttribute("id")
    assert texts[1].startswith(f"<stream:features xmlns:stream='{ns.STREAMS}'>")


def test_login_restart_bind_and_stanzas_over_websocket(h):
    c = Client(h.site)
    c.login()
    assert [s.bare for s in h.router.resources("alice@localhost").values()] == ["alice@localhost"]
    [pong] = c.received(c.send(PING.format("p1")))
    assert pong.getAttribute("type") == "result" and pong.getAttribute("id") == "p1"
    bob = h.login("bob@localhost/tcp")
    bob.feed("<message to='alice@localhost/web' id='m1' type='chat'><body>hi</body></message>")
    [text] = [e.data for e in c._events() if isinstance(e, TextMessage)]
    assert text.startswith("<message xmlns='jabber:client'") and "id='m1'" in text
    c.send("<message xmlns='jabber:client' to='bob@localhost/tcp' id='m2' type='chat'>"
           "<body>back</body></message>")
    [back] = bob.take()
    assert back.getAttribute("from") == "alice@localhost/web" and str(back.body) == "back"


def test_close_is_answered_with_close_and_a_websocket_close(h):
    c = Client(h.site)
    c.login()
    events = c.send(CLOSE)
    assert [e.name for e in c.received(events)] == ["close"]
    assert close_of(events) == 1000 and c.transport.disconnecting
    assert not h.router.resources("alice@localhost")


def test_a_fragmented_message_is_one_message(h):
    c = Client(h.site)
    c.login()
    stanza = PING.format("frag")
    c.raw(c.ws.send(TextMessage(stanza[:20], message_finished=False)))
    [pong] = c.received(c.raw(c.ws.send(TextMessage(stanza[20:], message_finished=True))))
    assert pong.getAttribute("id") == "frag"


def test_a_ping_is_answered_and_an_idle_bound_client_is_pinged(h):
    c = Client(h.site)
    pongs = [e for e in c.raw(c.ws.send(Ping(b"hello"))) if isinstance(e, Pong)]
    assert [bytes(p.payload) for p in pongs] == [b"hello"]
    c.login()
    h.clock.advance(29)
    assert not [e for e in c._events() if isinstance(e, Ping)]
    h.clock.advance(1)
    assert [e for e in c._events() if isinstance(e, Ping)]
    assert not c.transport.disconnecting


def test_an_unbound_websocket_is_closed_after_the_auth_timeout_and_aborted(h):
    c = Client(h.site)
    c.send(OPEN)
    h.clock.advance(10)
    events = c._events()
    [error, close] = c.received(events)
    assert error.name == "error" and error.firstChildElement().name == "connection-timeout"
    assert close.name == "close" and close_of(events) == 1000
    h.clock.advance(3)
    assert c.transport.disconnected  # the client never finished the close
    assert h.server.counters["websocket aborted after close"] == 1


def test_starttls_inside_a_websocket_is_a_tls_failure(h):
    c = Client(h.site)
    c.send(OPEN)
    events = c.send(f"<starttls xmlns='{ns.TLS}'/>")
    assert [(e.uri, e.name) for e in c.received(events)] == [(ns.TLS, "failure"),
                                                             (ns.FRAMING, "close")]


def test_a_slow_reader_holds_output_in_the_backlog(h):
    c = Client(h.site)
    c.login()
    stream = c.transport.producer
    assert stream is not None and hasattr(stream, "session")  # the stream, not the channel
    stream.pauseProducing()
    c.send(PING.format("held"))
    assert not c.received() and stream.output_pending > 0
    stream.resumeProducing()
    [pong] = c.received()
    assert pong.getAttribute("id") == "held"


# -- what counts as secure ---------------------------------------------------------------


def mechanisms(c: Client) -> list[str]:
    features = c.received(c.send(OPEN))[-1]
    return [str(m) for e in features.elements(ns.SASL, "mechanisms") for m in e.elements()]


def test_loopback_and_https_are_secure(h):
    assert "PLAIN" in mechanisms(Client(h.site, host="127.0.0.1"))
    assert "PLAIN" in mechanisms(Client(h.site, host="192.0.2.1", tls=True))


def test_plain_http_from_afar_offers_no_authentication_when_encryption_is_required(h):
    c = Client(h.site, host="192.0.2.1")
    assert mechanisms(c) == []
    [failure] = c.received(c.send(plain_auth()))
    assert failure.firstChildElement().name == "encryption-required"


def test_a_loopback_proxy_says_whether_the_client_used_https_and_who_it_is(h):
    forwarded = [(b"X-Forwarded-For", b"198.51.100.9, 127.0.0.1")]
    plain = Client(h.site, headers=forwarded + [(b"X-Forwarded-Proto", b"http")])
    assert mechanisms(plain) == []
    assert plain.transport.producer.address == "198.51.100.9"
    secure = Client(h.site, headers=forwarded + [(b"X-Forwarded-Proto", b"https")])
    assert "PLAIN" in mechanisms(secure)
    assert secure.transport.producer.session.address == "198.51.100.9"
    assert mechanisms(Client(h.site, headers=forwarded)) == []


# -- bad input: each refused, another session untouched -------------------------------------


def still_works(h: Harness) -> None:
    bob = h.login("bob@localhost/check", available=False)
    bob.feed("<iq type='get' id='alive' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    [pong] = bob.take()
    assert pong.getAttribute("type") == "result"
    bob.logout()


def test_an_element_before_open_is_invalid_namespace_as_prosody_answers(h):
    c = Client(h.site)
    events = c.send("<message xmlns='jabber:client' to='bob@localhost'><body>x</body></message>")
    opened, error, close = c.received(events)
    assert opened.name == "open" and error.firstChildElement().name == "invalid-namespace"
    assert close_of(events) == 1000
    still_works(h)


NO_NAMESPACE = {
    "message": "<message to='bob@localhost/tcp' id='nons' type='chat'><body>x</body></message>",
    "iq": "<iq type='get' id='nons' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
    "presence": "<presence id='nons'/>",
    "empty-xmlns": "<message xmlns='' to='bob@localhost/tcp' id='nons'><body>x</body></message>",
    "bind": f"<iq type='set' id='nons'><bind xmlns='{ns.BIND}'/></iq>",
    "auth": "<auth mechanism='PLAIN'>" + plain_auth().split(">", 1)[1],
    "close": "<close/>",
}


def no_namespace_refused(c: Client, events: list) -> None:
    """Prosody 0.12's answer, checked against a real one: the stream error
    unsupported-stanza-type with no text, <close/>, WebSocket close 1000."""
    received = c.received(events)
    assert [(e.uri, e.name) for e in received] == [(ns.STREAMS, "error"), (ns.FRAMING, "close")]
    assert [(e.uri, e.name) for e in received[0].elements()] == [
        (ns.STREAM_ERRORS, "unsupported-stanza-type")]  # and no <text/>
    close = next(e for e in events if isinstance(e, CloseConnection))
    assert (close.code, close.reason) == (1000, "Stream closed")
    assert c.transport.disconnecting


@pytest.mark.parametrize("stage", ["opened", "authenticated", "bound"])
@pytest.mark.parametrize("kind", list(NO_NAMESPACE))
def test_an_element_without_a_namespace_is_unsupported_stanza_type_at_every_stage(h, stage, kind):
    bob = h.login("bob@localhost/tcp")
    c = Client(h.site)
    c.send(OPEN)
    if stage != "opened":
        assert c.received(c.send(plain_auth()))[-1].name == "success"
        c.send(OPEN)
    if stage == "bound":
        assert c.received(c.send(BIND))[0].getAttribute("type") == "result"
    no_namespace_refused(c, c.send(NO_NAMESPACE[kind]))
    assert not h.router.resources("alice@localhost")
    assert [s for s in bob.take() if s.getAttribute("id") == "nons"] == []
    still_works(h)


def test_the_namespace_of_one_message_is_not_inherited_by_the_next(h):
    c = Client(h.site)
    c.login()
    [pong] = c.received(c.send(PING.format("declared")))
    assert pong.getAttribute("id") == "declared"
    no_namespace_refused(c, c.send(NO_NAMESPACE["iq"]))


def test_a_parked_parser_still_refuses_an_element_without_a_namespace(h):
    c = Client(h.site)
    c.login()
    [session] = h.router.resources("alice@localhost").values()
    h.clock.advance(2)
    assert session.framing.parser is None  # the idle session's parser is parked
    [pong] = c.received(c.send(PING.format("woken")))  # woken under our own header
    assert pong.getAttribute("id") == "woken"
    h.clock.advance(2)
    assert session.framing.parser is None
    no_namespace_refused(c, c.send(NO_NAMESPACE["message"]))


def test_a_binary_message_closes_the_websocket_with_1003(h):
    c = Client(h.site)
    c.login()
    events = c.raw(c.ws.send(BytesMessage(PING.format("bin").encode())))
    assert c.received(events) == [] and close_of(events) == 1003
    assert not h.router.resources("alice@localhost")
    still_works(h)


def test_text_that_is_not_xml_closes_the_websocket_with_1007(h):
    c = Client(h.site)
    c.login()
    events = c.send("hello")
    assert c.received(events) == [] and close_of(events) == 1007
    still_works(h)


@pytest.mark.parametrize("message", [
    PING.format("a") + PING.format("b"),  # two stanzas in one message
    "<iq xmlns='jabber:client' type='get' id='half' to='localhost'>",  # part of one
    PING.format("c") + "trailing text",
    "<message xmlns='jabber:client'><body>x</message>",  # not well-formed
    "</stream:stream>",
])
def test_a_message_that_is_not_exactly_one_element_is_not_well_formed(h, message):
    c = Client(h.site)
    c.login()
    events = c.send(message)
    received = c.received(events)
    assert [e.name for e in received] == ["error", "close"]  # no pong: nothing was processed
    assert received[0].firstChildElement().name == "not-well-formed"
    assert close_of(events) == 1000 and not h.router.resources("alice@localhost")
    still_works(h)


def test_a_message_over_the_stanza_size_is_policy_violation_as_prosody_answers(h):
    c = Client(h.site)
    c.login()
    events = c.send("<message xmlns='jabber:client' to='bob@localhost'><body>"
                    + "x" * 5000 + "</body></message>")
    error, close = c.received(events)
    assert error.firstChildElement().name == "policy-violation"
    assert "stanza too large" in error.toXml()
    still_works(h)


def test_a_malformed_frame_closes_the_websocket_with_a_protocol_error(h):
    c = Client(h.site)
    c.login()
    events = c.raw(b"\x81\x05hello")  # a client frame without a mask
    assert close_of(events) == 1002 and c.transport.disconnecting
    assert not h.router.resources("alice@localhost")
    still_works(h)


def test_a_websocket_closed_by_the_client_ends_the_session(h):
    c = Client(h.site)
    c.login()
    events = c.raw(c.ws.send(CloseConnection(1000, "bye")))
    assert close_of(events) == 1000 and c.received(events) == []
    assert not h.router.resources("alice@localhost")
    c.proto.connectionLost(None)
    still_works(h)


def test_a_loopback_client_without_proxy_headers_is_secure_unless_the_operator_says_not():
    """``[http] loopback_is_secure``: on (the default), a browser on the
    server itself logs in over plain HTTP; off (a reverse proxy that sends no
    X-Forwarded headers), such a connection is as insecure as it looks."""
    from types import SimpleNamespace

    from xmppd.http.websocket import client_origin

    class Request:
        def __init__(self, trusted):
            self.channel = SimpleNamespace(site=SimpleNamespace(
                http=SimpleNamespace(loopback_is_secure=trusted)))

        def getClientAddress(self):
            return SimpleNamespace(host="127.0.0.1", port=4711)

        def isSecure(self):
            return False

        def getHeader(self, name):
            return None

    assert client_origin(Request(True))[2] is True
    assert client_origin(Request(False))[2] is False
