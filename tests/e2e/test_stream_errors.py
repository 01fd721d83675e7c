"""End to end: bad bytes in, the exact RFC 6120 stream error out, server still up.

Every test talks to a real ``twistd -n xmppd`` process over a raw socket
(:mod:`rawxmpp`), provokes one error, and checks

* the exact ``<stream:error><CONDITION xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>``
  (or SASL failure / stanza error where the RFC prescribes one instead),
* that ``</stream:stream>`` follows and the server closes the connection,
* that the server keeps serving: a fresh connection still gets a stream
  header and features (:func:`assert_serving`), and, in
  :func:`test_other_sessions_unaffected_by_provocations`, that a session
  logged in all along still receives messages.
"""

from __future__ import annotations

import socket
import struct
import time
import uuid

import pytest

from rawxmpp import (NS_BIND, NS_CLIENT, NS_SASL, NS_STREAMS, NS_TLS, RawClient,
                     client_tls_context, dump, header, login, q, stanza_error_condition)

PASSWORD = "secret123"
SMALL_STANZA_LIMIT = 10000


# -- fixtures and helpers ----------------------------------------------------------------

@pytest.fixture(scope="module")
def server(xmppd_module_server):
    """The default server, shared by the tests of this module."""
    return xmppd_module_server


@pytest.fixture(scope="module")
def small_server(make_xmppd_module):
    """A server with [server] max_stanza_size = 10000."""
    return make_xmppd_module({"server": {"max_stanza_size": SMALL_STANZA_LIMIT}})


@pytest.fixture(autouse=True)
def _no_tracebacks(request):
    """After each test, no server used by it may have logged a traceback."""
    yield
    for name in ("server", "small_server", "impatient_server"):
        if name in request.fixturenames:
            srv = request.getfixturevalue(name)
            log = srv.log_text()
            assert "Traceback" not in log and "Unhandled Error" not in log, srv.log_tail(60)


def connect(srv, direct_tls: bool = False) -> RawClient:
    return RawClient.connect(srv.host, srv.tls_port if direct_tls else srv.port,
                             direct_tls=direct_tls)


def login_as(srv, user: str, resource: str | None = None, port: int | None = None) -> RawClient:
    return login(srv.host, port or srv.port, f"{user}@localhost", PASSWORD, resource)


def unique(prefix: str = "r") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def assert_serving(srv) -> None:
    """The server process runs and a fresh connection gets a header and features."""
    assert srv.running, f"xmppd died:\n{srv.log_tail()}"
    with connect(srv) as c:
        features = c.open_stream()
        assert c.root.get("from") == "localhost"
        assert c.root.get("version") == "1.0"
        assert c.root.get("id")
        starttls = features.find(q(NS_TLS, "starttls"))
        assert starttls is not None, dump(features)


def make_available(client: RawClient) -> None:
    """Initial presence, then a ping round trip so the server has processed it."""
    client.send("<presence/>")
    answer = client.iq("<ping xmlns='urn:xmpp:ping'/>", to="localhost")
    assert answer.get("type") == "result", dump(answer)


def message_with(body: str):
    return lambda s: s.tag == q(NS_CLIENT, "message") and s.findtext(q(NS_CLIENT, "body")) == body


def assert_delivery(sender: RawClient, receiver: RawClient, to: str | None = None) -> None:
    """``sender`` sends a message; ``receiver`` gets it, stamped with the sender's JID."""
    body = unique("hello")
    sender.send(f"<message to='{to or receiver.jid}' type='chat'><body>{body}</body></message>")
    got = receiver.next_stanza(match=message_with(body), what=f"message {body}")
    assert got.get("from") == sender.jid, dump(got)


def provoke(srv, payload: bytes, condition: str, send_header: bool = True) -> RawClient:
    """A fresh connection: (header,) payload → the stream error ``condition``."""
    with connect(srv) as c:
        if send_header:
            c.open_stream()
        c.send(payload)
        c.expect_stream_error(condition)
    assert_serving(srv)
    return c


# -- stream header ---------------------------------------------------------------------

@pytest.mark.parametrize("data", [
    pytest.param(header(stream_ns="http://wrong"), id="stream-ns-wrong"),
    pytest.param(header(stream_ns="jabber:client"), id="stream-ns-is-content-ns"),
    pytest.param(header(content_ns="jabber:server"), id="content-ns-jabber-server"),
    pytest.param(header(content_ns="urn:example:wrong"), id="content-ns-wrong"),
    pytest.param(b"<?xml version='1.0'?><stream xmlns='jabber:client' to='localhost' "
                 b"version='1.0'>", id="root-without-stream-ns"),
])
def test_invalid_namespace(server, data):
    c = provoke(server, data, "invalid-namespace", send_header=False)
    # The server's own header is correct even when the client's is not.
    assert c.root.tag == q(NS_STREAMS, "stream")


@pytest.mark.parametrize("to", ["example.org", "localhost.example", "alice@localhost", None])
def test_host_unknown(server, to):
    c = provoke(server, header(to=to), "host-unknown", send_header=False)
    assert c.root.tag == q(NS_STREAMS, "stream")


@pytest.mark.parametrize("version", ["0.9", None, "garbage", "1", "-1.0"])
def test_unsupported_version(server, version):
    provoke(server, header(version=version), "unsupported-version", send_header=False)


@pytest.mark.parametrize("version", ["2.0", "1.1", "10.3"])
def test_a_higher_version_is_answered_with_1_0_and_the_stream_goes_on(server, version):
    """RFC 6120 §4.7.5: the receiving entity answers with the highest version
    both support (ours, 1.0) rather than an error."""
    with connect(server) as c:
        c.send(header(version=version))
        features = c.next_stanza()
        assert c.root.get("version") == "1.0"
        assert features.tag == q(NS_STREAMS, "features")
        c.starttls()
        c.open_stream()




@pytest.mark.parametrize("data", [
    pytest.param(header(xml_decl=False).decode().encode("utf-16-be"), id="utf16-be"),
    pytest.param(b"\xfe\xff" + header(xml_decl=False).decode().encode("utf-16-be"),
                 id="utf16-be-bom"),
    pytest.param(b"\xff\xfe" + header(xml_decl=False).decode().encode("utf-16-le"),
                 id="utf16-le-bom"),
])
def test_utf16_stream_is_unsupported_encoding(server, data):
    with connect(server) as c:
        c.send(data)
        c.expect_stream_error("unsupported-encoding", timeout=2)
    assert_serving(server)


def test_header_case_and_trailing_dot_accepted(server):
    with connect(server) as c:
        features = c.open_stream(to="LocalHost.")
        assert features.find(q(NS_TLS, "starttls")) is not None
        assert c.root.get("from") == "localhost"


# -- not-well-formed ---------------------------------------------------------------------

NOT_WELL_FORMED_BEFORE_HEADER = [
    pytest.param(b"hello world\r\n", id="text"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", id="http"),
    pytest.param(b"<<<>>>", id="angle-brackets"),
    pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", id="tls-client-hello"),
    pytest.param(b"<stream:stream xmlns='jabber:client' to='localhost' version='1.0'>",
                 id="unbound-stream-prefix"),
]

NOT_WELL_FORMED_AFTER_HEADER = [
    pytest.param(b"<message><body>hi</message>", id="mismatched-tag"),
    pytest.param(b"<message to='bob@localhost'><body>hi</body></presence>", id="mismatched-close"),
    pytest.param(b"<message><body>unclosed</stream:stream>", id="unclosed-tags-then-close"),
    pytest.param(b"<message <body/>", id="broken-start-tag"),
    pytest.param(b"<message to='bob@localhost></message>", id="unterminated-attribute"),
    pytest.param(b"<message to='a' to='b'/>", id="duplicate-attribute"),
    pytest.param(b"<foo:bar/>", id="unbound-prefix"),
    pytest.param(b"<message><body>&undefined;</body></message>", id="undefined-entity"),
    pytest.param(b"<message><body>\x01</body></message>", id="control-character"),
    pytest.param(b"<message><body>\xff\xfe\xfd</body></message>", id="invalid-utf8"),
    pytest.param(b"<?xml version='1.0'?>", id="second-xml-declaration"),
    pytest.param(b"<!DOCTYPE foo>", id="doctype-after-root"),
    pytest.param(b"text between stanzas <a></b>", id="text-then-junk"),
]


@pytest.mark.parametrize("data", NOT_WELL_FORMED_BEFORE_HEADER)
def test_not_well_formed_before_header(server, data):
    provoke(server, data, "not-well-formed", send_header=False)


@pytest.mark.parametrize("data", NOT_WELL_FORMED_AFTER_HEADER)
def test_not_well_formed_after_header(server, data):
    provoke(server, data, "not-well-formed")


def test_clean_close_is_answered_with_close(server):
    """The control case: </stream:stream> gets a close back, no error; junk after it
    is never looked at."""
    with connect(server) as c:
        c.open_stream()
        c.send(b"</stream:stream><junk></stream:stream>")
        c.wait_for(lambda: c.ended, what="</stream:stream>")
        c.wait_closed()
        assert not [s for s in c.stanzas if s.tag == q(NS_STREAMS, "error")], c.describe()
    assert_serving(server)


def test_not_well_formed_after_login(server):
    c = login_as(server, "carol", unique())
    with c:
        c.send(b"<message to='bob@localhost'><body>x</body></mess")
        c.send(b"age><iq></message>")
        c.expect_stream_error("not-well-formed")
    assert_serving(server)


def test_not_well_formed_over_direct_tls(server):
    with connect(server, direct_tls=True) as c:
        features = c.open_stream()
        mechanisms = [m.text for m in features.iter(q(NS_SASL, "mechanism"))]
        assert "PLAIN" in mechanisms and features.find(q(NS_TLS, "starttls")) is None
        c.send(b"<a><b></a>")
        c.expect_stream_error("not-well-formed")
    assert_serving(server)


# -- restricted XML -----------------------------------------------------------------------

SECRET = "ENTITYEXPANDED"

BILLION_LAUGHS = (
    b"<?xml version='1.0'?>"
    b"<!DOCTYPE stream:stream ["
    b"<!ENTITY lol 'lollollollollollollollollollol'>"
    + b"".join(
        f"<!ENTITY lol{i} '{('&lol' + (str(i - 1) if i > 1 else '') + ';') * 10}'>".encode()
        for i in range(1, 10))
    + b"]>"
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
    b"to='localhost' version='1.0'>"
    b"<message to='bob@localhost'><body>&lol9;</body></message>"
)


@pytest.mark.parametrize("data", [
    pytest.param(b"<?xml version='1.0'?><!DOCTYPE stream:stream [<!ENTITY x '" + SECRET.encode()
                 + b"'>]>" + header(xml_decl=False)
                 + b"<message to='bob@localhost'><body>&x;</body></message>",
                 id="doctype-with-entity"),
    pytest.param(b"<!DOCTYPE stream:stream SYSTEM 'file:///etc/passwd'>" + header(xml_decl=False),
                 id="doctype-external"),
    pytest.param(b"<!DOCTYPE stream:stream>" + header(xml_decl=False), id="bare-doctype"),
    pytest.param(b"<?xml version='1.0'?><!-- a comment -->" + header(xml_decl=False),
                 id="comment-before-header"),
    pytest.param(b"<?xml version='1.0'?><?xml-stylesheet href='x.xsl'?>" + header(xml_decl=False),
                 id="pi-before-header"),
])
def test_restricted_xml_before_header(server, data):
    c = provoke(server, data, "restricted-xml", send_header=False)
    assert SECRET.encode() not in c.received and b"/etc/passwd" not in c.received


@pytest.mark.parametrize("data", [
    pytest.param(b"<!-- a comment -->", id="comment"),
    pytest.param(b"<message to='bob@localhost'><!-- inside --><body>x</body></message>",
                 id="comment-in-stanza"),
    pytest.param(b"<?foo bar?>", id="processing-instruction"),
    pytest.param(b"<message to='bob@localhost'><body>x<?php echo 1; ?></body></message>",
                 id="pi-in-stanza"),
])
def test_restricted_xml_after_header(server, data):
    provoke(server, data, "restricted-xml")


def test_restricted_xml_after_login(server):
    with login_as(server, "carol", unique()) as c:
        c.send(b"<message to='bob@localhost'><body>hi</body><!-- sneaky --></message>")
        c.expect_stream_error("restricted-xml")
    assert_serving(server)


def test_billion_laughs_is_refused_quickly(server):
    started = time.monotonic()
    c = provoke(server, BILLION_LAUGHS, "restricted-xml", send_header=False)
    assert time.monotonic() - started < 5
    assert b"lollol" not in c.received


# -- size and depth limits ----------------------------------------------------------------

def big_message(to: str, size: int, body_id: str = "") -> bytes:
    head = f"<message to='{to}' type='chat'><body>{body_id}".encode()
    tail = b"</body></message>"
    return head + b"x" * (size - len(head) - len(tail)) + tail


def test_stanza_below_limit_is_delivered_repeatedly(small_server):
    """Stanzas just below the limit pass, and the limit is per stanza, not per stream."""
    with login_as(small_server, "bob", unique()) as bob, \
            login_as(small_server, "alice", unique()) as alice:
        make_available(bob)
        total = 0
        for i in range(5):
            data = big_message(bob.jid, SMALL_STANZA_LIMIT - 500, f"big{i}-")
            alice.send(data)
            total += len(data)
            got = bob.next_stanza(match=lambda s: (s.findtext(q(NS_CLIENT, "body")) or "")
                                  .startswith(f"big{i}-"), what=f"big message {i}")
            assert got.get("from") == alice.jid
            assert len(got.findtext(q(NS_CLIENT, "body"))) > SMALL_STANZA_LIMIT - 700
        assert total > 4 * SMALL_STANZA_LIMIT
        # Many small stanzas in one write, more than the limit together.
        bodies = [unique("many") for _ in range(200)]
        alice.send("".join(f"<message to='{bob.jid}'><body>{b}</body></message>" for b in bodies))
        for b in bodies:
            bob.next_stanza(match=message_with(b), what=b)
        assert_delivery(alice, bob)


def test_oversize_stanza_in_one_write(small_server):
    with login_as(small_server, "bob", unique()) as bob:
        make_available(bob)
        with login_as(small_server, "alice", unique()) as alice:
            alice.try_send(big_message(bob.jid, 2 * SMALL_STANZA_LIMIT, "toolarge"))
            alice.expect_stream_error("policy-violation")
        # The oversize message was not delivered; bob is still served.
        with login_as(small_server, "carol", unique()) as carol:
            assert_delivery(carol, bob)
        assert not [s for s in bob.stanzas if "toolarge" in (s.findtext(q(NS_CLIENT, "body")) or "")]
    assert_serving(small_server)


def test_oversize_stanza_just_over_limit(small_server):
    with login_as(small_server, "alice", unique()) as alice:
        alice.try_send(big_message("bob@localhost", SMALL_STANZA_LIMIT + 200))
        alice.expect_stream_error("policy-violation")
    assert_serving(small_server)


@pytest.mark.parametrize("chunk", [1000, 97])
def test_oversize_stanza_trickled_is_cut_off_early(small_server, chunk):
    """An endless stanza sent in small pieces is refused once it passes the limit,
    without waiting for its end tag (which never comes)."""
    with login_as(small_server, "alice", unique()) as alice:
        alice.send(b"<message to='bob@localhost'><body>")
        sent = 0
        while sent < 5 * SMALL_STANZA_LIMIT and not alice.eof and not alice.stanzas:
            if not alice.try_send(b"y" * chunk):
                break
            sent += chunk
            time.sleep(0.002)
            alice.poll()
        alice.expect_stream_error("policy-violation")
        assert sent <= SMALL_STANZA_LIMIT + 4 * chunk + 2000, f"refused only after {sent} bytes"
    assert_serving(small_server)




def test_oversize_after_complete_stanza_in_same_write(small_server):
    """A complete stanza, then the start of an endless one, in one write; then more."""
    chunk = 500
    with login_as(small_server, "alice", unique()) as alice:
        head = b"<message to='bob@localhost'><body>"
        # Directed presence to the server: complete, and answered by nothing.
        alice.send(b"<presence to='localhost'/>" + head + b"y" * (SMALL_STANZA_LIMIT - 1000))
        sent = SMALL_STANZA_LIMIT - 1000 + len(head)
        while sent < 4 * SMALL_STANZA_LIMIT and not alice.eof and not alice.stanzas:
            if not alice.try_send(b"y" * chunk):
                break
            sent += chunk
            time.sleep(0.005)
            alice.poll()
        alice.expect_stream_error("policy-violation")
        assert sent <= SMALL_STANZA_LIMIT + 4 * chunk, (
            f"the open stanza reached {sent} bytes before it was refused")
    assert_serving(small_server)


def test_oversize_before_authentication(small_server):
    with connect(small_server) as c:
        c.open_stream()
        c.try_send(b"<iq type='get' id='x'><query xmlns='jabber:iq:register'>"
                   + b"z" * (2 * SMALL_STANZA_LIMIT))
        c.expect_stream_error("policy-violation")
    assert_serving(small_server)


def nested(depth: int, to: str, body: str = "") -> bytes:
    return (f"<message to='{to}' type='chat'><body>{body}</body>".encode()
            + b"<x xmlns='urn:example:nest'>" + b"<x>" * (depth - 1)
            + b"</x>" * depth + b"</message>")


@pytest.mark.parametrize("depth", [1000, 100])
def test_deep_nesting_is_policy_violation(server, depth):
    with login_as(server, "alice", unique()) as alice:
        alice.try_send(nested(depth, "bob@localhost"))
        alice.expect_stream_error("policy-violation")
    assert_serving(server)


def test_deep_nesting_before_header_content(server):
    # Nesting without ever completing a stanza, before authentication.
    provoke(server, b"<a>" * 1000, "policy-violation")


def test_moderate_nesting_is_delivered(server):
    with login_as(server, "bob", unique()) as bob, login_as(server, "alice", unique()) as alice:
        body = unique("nested")
        alice.send(nested(40, bob.jid, body))
        got = bob.next_stanza(match=message_with(body), what="nested message")
        assert got.get("from") == alice.jid
        depth, element = 0, got.find("{urn:example:nest}x")
        while element is not None:
            depth += 1
            element = element.find("{urn:example:nest}x")
        assert depth == 40


# -- stanza kinds, from checks, from stamping ------------------------------------------------

@pytest.mark.parametrize("data", [
    pytest.param(b"<foo/>", id="foo-jabber-client"),
    pytest.param(b"<foo xmlns='jabber:client'/>", id="foo-explicit-ns"),
    pytest.param(b"<message xmlns='urn:other' to='bob@localhost'><body>x</body></message>",
                 id="message-other-ns"),
    pytest.param(b"<iq xmlns='jabber:server' type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>",
                 id="iq-jabber-server"),
    pytest.param(b"<stream:features/>", id="stream-features"),
    pytest.param(f"<starttls xmlns='{NS_TLS}'/>".encode(), id="starttls-after-login"),
])
def test_unsupported_stanza_type_after_login(server, data):
    with login_as(server, "alice", unique()) as alice:
        alice.send(data)
        alice.expect_stream_error("unsupported-stanza-type")
    assert_serving(server)


@pytest.mark.parametrize("data", [
    b"<foo xmlns='urn:example:foo'/>", b"<foo/>", b"<stream:features/>",
])
def test_unsupported_stanza_type_before_auth(server, data):
    provoke(server, data, "unsupported-stanza-type")


@pytest.mark.parametrize("name", ["challenge", "success", "foo"])
def test_unexpected_sasl_element_after_tls(server, name):
    with connect(server) as c:
        c.open_stream()
        c.starttls()
        c.open_stream()
        c.send(f"<{name} xmlns='{NS_SASL}'/>")
        c.expect_stream_error("unsupported-stanza-type")
    assert_serving(server)


@pytest.mark.parametrize("forged", [
    "bob@localhost/x", "bob@localhost", "alice@localhost/someone-else", "localhost",
    "alice@example.org", "not a jid@@",
])
def test_forged_from_is_invalid_from(server, forged):
    with login_as(server, "bob", unique()) as bob:
        make_available(bob)
        with login_as(server, "alice", unique()) as alice:
            alice.send(f"<message from='{forged}' to='{bob.jid}'><body>forged</body></message>")
            alice.expect_stream_error("invalid-from")
        # Nothing was delivered under the forged address.
        with login_as(server, "carol", unique()) as carol:
            assert_delivery(carol, bob)
        assert not [s for s in bob.stanzas if s.findtext(q(NS_CLIENT, "body")) == "forged"]
    assert_serving(server)


@pytest.mark.parametrize("own", ["full", "bare", "full-other-case"])
def test_own_from_is_accepted_and_stamped(server, own):
    with login_as(server, "bob", unique()) as bob, login_as(server, "alice", "Home") as alice:
        sender = {"full": alice.jid, "bare": "alice@localhost",
                  "full-other-case": "ALICE@LocalHost/Home"}[own]
        body = unique("own")
        alice.send(f"<message from='{sender}' to='{bob.jid}' type='chat'><body>{body}</body></message>")
        got = bob.next_stanza(match=message_with(body), what="message with own from")
        assert got.get("from") == alice.jid == "alice@localhost/Home"
        # alice's stream is still open and working.
        assert alice.iq("<ping xmlns='urn:xmpp:ping'/>", to="localhost").get("type") == "result"


def test_from_is_stamped_on_messages_without_from(server):
    with login_as(server, "bob", unique("bob")) as bob, \
            login_as(server, "alice", unique("alice")) as alice:
        make_available(bob)
        # To the full JID and to the bare JID.
        for to in (bob.jid, "bob@localhost"):
            body = unique("stamp")
            alice.send(f"<message to='{to}' type='chat'><body>{body}</body></message>")
            got = bob.next_stanza(match=message_with(body), what=f"message to {to}")
            assert got.get("from") == alice.jid
            assert got.get("from").startswith("alice@localhost/alice-")
            assert got.get("to") == to


# -- timeouts -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def impatient_server(make_xmppd_module):
    return make_xmppd_module({"c2s": {"auth_timeout": 2}})


@pytest.mark.parametrize("stage", ["no-header", "after-header", "after-starttls",
                                   "after-sasl", "half-stanza"])
def test_idle_unauthenticated_connection_times_out(impatient_server, stage):
    srv = impatient_server
    started = time.monotonic()
    with connect(srv) as c:
        if stage != "no-header":
            c.open_stream()
        if stage in ("after-starttls", "after-sasl"):
            c.starttls()
            c.open_stream()
        if stage == "after-sasl":
            c.sasl_scram("alice@localhost", PASSWORD)
            c.open_stream()  # authenticated, never binds
        if stage == "half-stanza":
            c.send(b"<iq type='get' id='1'><query xmlns='jabber:iq:regis")
        c.expect_stream_error("connection-timeout", timeout=8)
    elapsed = time.monotonic() - started
    # auth_timeout is 2 s: the error must come from that timer, not sooner, not never
    assert 1.5 <= elapsed < 6, elapsed
    assert_serving(srv)


def test_bound_session_outlives_auth_timeout(impatient_server):
    with login_as(impatient_server, "alice", unique()) as alice:
        time.sleep(3)
        assert alice.iq("<ping xmlns='urn:xmpp:ping'/>", to="localhost").get("type") == "result"
        alice.poll()
        assert not alice.eof and not alice.stanzas


# -- before authentication ------------------------------------------------------------------

@pytest.mark.parametrize("data", [
    b"<message to='bob@localhost'><body>hi</body></message>",
    b"<presence/>",
    b"<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
])
@pytest.mark.parametrize("tls", [False, True])
def test_stanzas_before_authentication_are_not_authorized(server, data, tls):
    with connect(server) as c:
        c.open_stream()
        if tls:
            c.starttls()
            c.open_stream()
        c.send(data)
        c.expect_stream_error("not-authorized")
    assert_serving(server)


def test_message_after_sasl_before_bind_is_not_authorized(server):
    with connect(server) as c:
        c.open_stream()
        c.starttls()
        c.open_stream()
        c.sasl_scram("alice@localhost", PASSWORD)
        features = c.open_stream()
        assert features.find(q(NS_BIND, "bind")) is not None
        assert features.find(q(NS_SASL, "mechanisms")) is None
        c.send(b"<message to='bob@localhost'><body>hi</body></message>")
        c.expect_stream_error("not-authorized")
    assert_serving(server)


def test_features_and_encryption_required(server):
    with connect(server) as c:
        features = c.open_stream()
        children = [child.tag for child in features]
        assert children == [q(NS_TLS, "starttls")], dump(features)
        assert features.find(f"{q(NS_TLS, 'starttls')}/{q(NS_TLS, 'required')}") is not None
        # SASL before STARTTLS: a SASL failure, not a stream error; the stream stays open.
        c.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>AGFsaWNlAHNlY3JldDEyMw==</auth>")
        failure = c.next_stanza(what="SASL failure")
        assert failure.tag == q(NS_SASL, "failure"), dump(failure)
        assert [child.tag for child in failure] == [q(NS_SASL, "encryption-required")]
        c.send(f"<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-256'>biwsbj1hbGljZSxyPTEyMzQ=</auth>")
        failure = c.next_stanza(what="second SASL failure")
        assert [child.tag for child in failure] == [q(NS_SASL, "encryption-required")]
        # Not authenticated by either attempt; STARTTLS still works on this stream.
        c.starttls()
        features = c.open_stream()
        assert features.find(q(NS_TLS, "starttls")) is None
        mechanisms = [m.text for m in features.iter(q(NS_SASL, "mechanism"))]
        assert {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-1"} <= set(mechanisms), mechanisms
        c.sasl_scram("alice@localhost", PASSWORD)
        c.open_stream()
        assert c.bind(unique()).startswith("alice@localhost/")


@pytest.mark.parametrize("direct_tls", [False, True])
def test_starttls_twice_fails(server, direct_tls):
    with connect(server, direct_tls=direct_tls) as c:
        c.open_stream()
        if not direct_tls:
            c.starttls()
            c.open_stream()
        c.send(f"<starttls xmlns='{NS_TLS}'/>")
        failure = c.next_stanza(what="<failure/>")
        assert failure.tag == q(NS_TLS, "failure"), dump(failure)
        c.wait_for(lambda: c.ended, what="</stream:stream>")
        c.wait_closed()
    assert_serving(server)




@pytest.mark.parametrize("injected", ["plain-auth", "stanza"])
def test_plaintext_after_starttls_is_discarded(server, injected):
    """Bytes sent in plaintext right behind <starttls/> must not count as encrypted."""
    plain = "AGFsaWNlAHNlY3JldDEyMw=="  # \0alice\0secret123
    extra = (f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{plain}</auth>"
             if injected == "plain-auth" else "<foo xmlns='urn:example:injected'/>")
    with connect(server) as c:
        c.open_stream()
        c.send(f"<starttls xmlns='{NS_TLS}'/>{extra}")
        proceed = c.next_stanza(what="<proceed/>")
        assert proceed.tag == q(NS_TLS, "proceed"), dump(proceed)
        c.sock = client_tls_context().wrap_socket(c.sock, server_hostname="localhost")
        time.sleep(0.5)  # SASL answers asynchronously: give an injected <auth/> time to land
        mark = len(c.received)
        c._new_parser()
        c.send(header())
        c.wait_for(lambda: b"</stream:features>" in c.received[mark:] or c.eof,
                   what="features over TLS")
        time.sleep(0.3)
        c.poll()
        after_tls = c.received[mark:]
        assert b"<success" not in after_tls and b"stream:error" not in after_tls, after_tls
        # Not authenticated: SASL is offered, resource binding is refused.
        assert b"<mechanisms" in after_tls and b"urn:ietf:params:xml:ns:xmpp-bind" not in after_tls
        c.send(f"<iq type='set' id='b1'><bind xmlns='{NS_BIND}'/></iq>")
        c.expect_stream_error("not-authorized")
    assert_serving(server)


def test_stream_restart_to_other_domain_is_host_unknown(server):
    with connect(server) as c:
        c.open_stream()
        c.starttls()
        c._new_parser()
        c.send(header(to="example.org"))
        c.expect_stream_error("host-unknown")
    assert_serving(server)


def test_bad_addresses_are_stanza_errors(server):
    with login_as(server, "alice", unique()) as alice:
        for to, condition in (("@@", "jid-malformed"), ("a@b@c/", "jid-malformed"),
                              ("bob@example.org", "remote-server-not-found")):
            msg_id = unique("addr")
            alice.send(f"<message to='{to}' id='{msg_id}'><body>x</body></message>")
            answer = alice.next_stanza(match=lambda s: s.get("id") == msg_id, what=condition)
            assert answer.get("type") == "error" and answer.get("to") == alice.jid, dump(answer)
            assert stanza_error_condition(answer)[1] == condition, dump(answer)
        assert alice.iq("<ping xmlns='urn:xmpp:ping'/>", to="localhost").get("type") == "result"


def test_too_many_sasl_failures_is_policy_violation(server):
    with connect(server) as c:
        c.open_stream()
        c.starttls()
        c.open_stream()
        for i in range(4):
            c.send(f"<auth xmlns='{NS_SASL}' mechanism='X-UNKNOWN'/>")
            failure = c.next_stanza(what=f"SASL failure {i}")
            assert [child.tag for child in failure] == [q(NS_SASL, "invalid-mechanism")]
        c.send(f"<auth xmlns='{NS_SASL}' mechanism='X-UNKNOWN'/>")
        failure = c.next_stanza(what="last SASL failure")
        assert failure.tag == q(NS_SASL, "failure")
        c.expect_stream_error("policy-violation")
    assert_serving(server)


# -- stanza errors for iqs ---------------------------------------------------------------------

def test_iq_unknown_namespace_is_service_unavailable(server):
    with login_as(server, "alice", unique()) as alice:
        for to in ("localhost", "alice@localhost", None):
            iq_id = unique("unknown")
            answer = alice.iq("<query xmlns='urn:example:unknown'/>", to=to, iq_id=iq_id)
            assert answer.get("type") == "error", dump(answer)
            assert answer.get("id") == iq_id
            assert answer.get("to") == alice.jid, dump(answer)
            if to is not None:
                assert answer.get("from") == to, dump(answer)
            assert stanza_error_condition(answer) == ("cancel", "service-unavailable"), dump(answer)
        # The stream survives stanza errors.
        assert alice.iq("<ping xmlns='urn:xmpp:ping'/>", to="localhost").get("type") == "result"


def test_iq_with_two_children_is_bad_request(server):
    with login_as(server, "alice", unique()) as alice:
        for to in ("localhost", None):
            iq_id = unique("two")
            answer = alice.iq("<ping xmlns='urn:xmpp:ping'/><query xmlns='urn:xmpp:time'/>",
                              to=to, iq_id=iq_id)
            assert answer.get("type") == "error", dump(answer)
            assert answer.get("id") == iq_id
            assert stanza_error_condition(answer) == ("modify", "bad-request"), dump(answer)
        iq_id = unique("none")
        answer = alice.iq("", to="localhost", iq_id=iq_id)
        assert answer.get("id") == iq_id
        assert stanza_error_condition(answer) == ("modify", "bad-request"), dump(answer)
        assert alice.iq("<ping xmlns='urn:xmpp:ping'/>", to="localhost").get("type") == "result"


def test_iq_without_id_or_type_is_bad_request(server):
    with login_as(server, "alice", unique()) as alice:
        alice.send("<iq type='get' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        answer = alice.next_stanza(match=lambda s: s.tag == q(NS_CLIENT, "iq"), what="error")
        assert stanza_error_condition(answer) == ("modify", "bad-request"), dump(answer)
        alice.send("<iq type='bogus' id='b1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        answer = alice.next_stanza(match=lambda s: s.get("id") == "b1", what="error")
        assert stanza_error_condition(answer) == ("modify", "bad-request"), dump(answer)
        assert alice.iq("<ping xmlns='urn:xmpp:ping'/>", to="localhost").get("type") == "result"


# -- clients that vanish, conflicts, other sessions --------------------------------------------

def abort(client: RawClient) -> None:
    """Close with RST (SO_LINGER 0): the rudest way to vanish."""
    raw = client.sock
    try:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    client.close()


@pytest.mark.parametrize("how", ["close", "reset"])
def test_client_vanishing_mid_stanza(server, how):
    with login_as(server, "bob", unique()) as bob:
        make_available(bob)
        for logged_in in (False, True):
            c = login_as(server, "alice", unique()) if logged_in else connect(server)
            if not logged_in:
                c.open_stream()
            c.send(b"<message to='bob@localhost' type='chat'><body>half a sta")
            (abort if how == "reset" else RawClient.close)(c)
        time.sleep(0.3)
        with login_as(server, "alice", unique()) as alice:
            assert_delivery(alice, bob)
        assert not [s for s in bob.stanzas if "half" in (s.findtext(q(NS_CLIENT, "body")) or "")]
    assert_serving(server)


def test_same_resource_login_conflicts_first_stream(server):
    resource = unique("dup")
    with login_as(server, "bob", unique()) as bob:
        make_available(bob)
        first = login_as(server, "alice", resource)
        with first:
            make_available(first)
            with login_as(server, "alice", resource) as second:
                assert second.jid == first.jid == f"alice@localhost/{resource}"
                first.expect_stream_error("conflict")
                # The new session owns the JID: it sends and receives.
                assert_delivery(second, bob)
                assert_delivery(bob, second, to=second.jid)
                assert second.iq("<ping xmlns='urn:xmpp:ping'/>",
                                 to="localhost").get("type") == "result"
    assert_serving(server)


def test_other_sessions_unaffected_by_provocations(server):
    """bob stays logged in while alice's streams die in every way; he still gets mail."""
    provocations = [
        (b"<message><body>x</presence>", "not-well-formed"),
        (b"<!-- hi -->", "restricted-xml"),
        (nested(200, "bob@localhost"), "policy-violation"),
        (b"<foo/>", "unsupported-stanza-type"),
        (b"<message from='bob@localhost/x' to='bob@localhost'><body>x</body></message>",
         "invalid-from"),
    ]
    with login_as(server, "bob", unique()) as bob, login_as(server, "carol", unique()) as carol:
        make_available(bob)
        for data, condition in provocations:
            with login_as(server, "alice", unique()) as alice:
                assert_delivery(alice, bob, to="bob@localhost")
                alice.try_send(data)
                alice.expect_stream_error(condition)
            provoke(server, b"garbage\r\n", "not-well-formed", send_header=False)
            assert_delivery(carol, bob, to="bob@localhost")
            assert_delivery(bob, carol)
        bob.poll()
        assert not bob.eof and not [s for s in bob.stanzas if s.tag == q(NS_STREAMS, "error")]
