"""End to end with aioxmpp 0.13, a second real client library, against the real server."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import uuid

import pytest

aioxmpp = pytest.importorskip("aioxmpp")
import aiosasl  # noqa: E402
import OpenSSL.SSL  # noqa: E402
import aioxmpp.connector  # noqa: E402
import aioxmpp.disco  # noqa: E402
import aioxmpp.dispatcher  # noqa: E402
import aioxmpp.ibr  # noqa: E402
import aioxmpp.node  # noqa: E402
import aioxmpp.nonza  # noqa: E402
import aioxmpp.ping  # noqa: E402
import aioxmpp.protocol  # noqa: E402
import aioxmpp.version  # noqa: E402
import aioxmpp.xso  # noqa: E402

from conftest import PASSWORD  # noqa: E402

pytestmark = pytest.mark.all_transports  # tcp, websocket, bosh (conftest)
#: why a test runs over TCP only
TCP_LOG = ("asserts the c2s log line of the client's own TCP connection (its "
           "address, STARTTLS or direct TLS)")
TIMEOUT = 10
SERVER = aioxmpp.JID.fromstr("localhost")



@aioxmpp.nonza.StreamFeatures.as_feature_class
class RegisterFeature(aioxmpp.xso.XSO):
    """<register xmlns='http://jabber.org/features/iq-register'/>, unknown to aioxmpp."""

    TAG = ("http://jabber.org/features/iq-register", "register")


@pytest.fixture(scope="module")
def server(make_xmppd_module):
    return make_xmppd_module({"component:register": {"allow_registration": "true",
                                                      "rate_limit": "1000"}})


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def peer(server, direct_tls=False):
    if direct_tls:
        return [(server.client_host, server.client_tls_port,
                 aioxmpp.connector.XMPPOverTLSConnector())]
    return [(server.client_host, server.client_port, aioxmpp.connector.STARTTLSConnector())]


def make_client(server, jid, password=PASSWORD, *, direct_tls=False):
    security = aioxmpp.make_security_layer(password, no_verify=True)
    return aioxmpp.Client(
        aioxmpp.JID.fromstr(jid), security, override_peer=peer(server, direct_tls),
        max_initial_attempts=1)


class Inbox:
    """Messages a client receives, via the (non-deprecated) message dispatcher."""

    def __init__(self, client):
        self.queue: asyncio.Queue = asyncio.Queue()
        dispatcher = client.summon(aioxmpp.dispatcher.SimpleMessageDispatcher)
        for mtype in (aioxmpp.MessageType.CHAT, aioxmpp.MessageType.NORMAL,
                      aioxmpp.MessageType.ERROR):
            dispatcher.register_callback(mtype, None, self.queue.put_nowait)

    async def get(self):
        return await asyncio.wait_for(self.queue.get(), TIMEOUT)


def chat(to, body, id_=None):
    msg = aioxmpp.Message(to=to, type_=aioxmpp.MessageType.CHAT)
    msg.body[None] = body
    msg.id_ = id_ or uuid.uuid4().hex
    return msg


# -- login and messages --------------------------------------------------------------

def test_starttls_login_and_message_exchange(server):
    async def main():
        alice = make_client(server, "alice@localhost/aio")
        bob = make_client(server, "bob@localhost/aio")
        alice_inbox, bob_inbox = Inbox(alice), Inbox(bob)
        async with alice.connected(), bob.connected():
            assert str(alice.local_jid) == "alice@localhost/aio"
            assert str(bob.local_jid) == "bob@localhost/aio"
            # bob becomes available (messages to a bare JID need that); once his
            # ping returns, the server has processed the presence before it
            await bob.send(aioxmpp.Presence(type_=aioxmpp.PresenceType.AVAILABLE))
            await aioxmpp.ping.ping(bob, SERVER)

            sent = chat(aioxmpp.JID.fromstr("bob@localhost"), "hello from aioxmpp", "aio-1")
            await alice.send(sent)
            got = await bob_inbox.get()
            assert got.type_ == aioxmpp.MessageType.CHAT
            assert got.id_ == "aio-1"
            assert str(got.from_) == "alice@localhost/aio"
            assert list(got.body.values()) == ["hello from aioxmpp"]

            await bob.send(chat(got.from_, "and back", "aio-2"))
            back = await alice_inbox.get()
            assert back.id_ == "aio-2"
            assert str(back.from_) == "bob@localhost/aio"
            assert list(back.body.values()) == ["and back"]
    run(main())
def test_direct_tls_login(server):
    async def main():
        alice = make_client(server, "alice@localhost/aio-direct", direct_tls=True)
        async with alice.connected():
            assert str(alice.local_jid) == "alice@localhost/aio-direct"
            await aioxmpp.ping.ping(alice, SERVER)
    run(main())


@pytest.mark.tcp_only("xmppd's own TLS (ALPN) on its c2s ports, with a raw socket")
@pytest.mark.parametrize("direct_tls", [True, False], ids=["direct-tls", "starttls"])
def test_tls_handshake_offering_alpn(server, direct_tls):
    """The bare reproduction of the ALPN bug, with Python's ssl module."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["xmpp-client"])
    sock = socket.create_connection((server.host, server.tls_port if direct_tls else server.port), 5)
    try:
        if not direct_tls:
            sock.sendall(b"<?xml version='1.0'?><stream:stream to='localhost' version='1.0' "
                         b"xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
            data = b""
            while b"</stream:features>" not in data:
                data += sock.recv(4096)
            sock.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            data = b""
            while b"<proceed" not in data:
                data += sock.recv(4096)
        tls = context.wrap_socket(sock, server_hostname="localhost")
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        assert tls.selected_alpn_protocol() in (None, "xmpp-client")
        tls.close()
    finally:
        sock.close()


class _NoALPNContext(OpenSSL.SSL.Context):
    """XMPPOverTLSConnector offers ALPN through set_alpn_protos; refusing it
    (as an OpenSSL without ALPN would) makes aioxmpp connect without ALPN."""

    def set_alpn_protos(self, protos):
        raise NotImplementedError


def _no_alpn_context():
    context = _NoALPNContext(OpenSSL.SSL.TLS_CLIENT_METHOD)
    context.set_verify(OpenSSL.SSL.VERIFY_PEER, aioxmpp.security_layer.default_verify_callback)
    return context


@pytest.mark.tcp_only(TCP_LOG)
def test_direct_tls_login_without_alpn(server):
    """XEP-0368 direct TLS with aioxmpp, working around the ALPN bug on the client side."""
    async def main():
        security = aioxmpp.make_security_layer(PASSWORD, no_verify=True,
                                               ssl_context_factory=_no_alpn_context)
        client = aioxmpp.Client(
            aioxmpp.JID.fromstr("alice@localhost/aio-noalpn"), security,
            override_peer=peer(server, direct_tls=True), max_initial_attempts=1)
        mark = len(server.log_text())
        async with client.connected():
            assert str(client.local_jid) == "alice@localhost/aio-noalpn"
            await aioxmpp.ping.ping(client, SERVER)
        log = server.log_text()[mark:]
        connected = re.search(r"c2s (\S+) connected \(direct TLS\)", log)
        assert connected, log
        assert re.search(rf"c2s {re.escape(connected.group(1))} bound alice@localhost/aio-noalpn "
                         r"\(SCRAM-SHA-\d+, direct TLS\)\n", log), log
    run(main())


# -- server services ----------------------------------------------------------------

def test_ping_disco_version(server):
    async def main():
        alice = make_client(server, "alice@localhost/aio-services")
        async with alice.connected():
            # ping: ping() raises on an error reply
            await aioxmpp.ping.ping(alice, SERVER)

            disco = alice.summon(aioxmpp.DiscoClient)
            info = await disco.query_info(SERVER, require_fresh=True, timeout=TIMEOUT)
            assert {"http://jabber.org/protocol/disco#info", "urn:xmpp:ping",
                    "jabber:iq:version", "urn:xmpp:time"} <= set(info.features)
            assert ("server", "im") in {(i.category, i.type_) for i in info.identities}

            version = await aioxmpp.version.query_version(alice, SERVER)
            assert version.name == "xmppd"
            assert version.version
            assert version.os is None
    run(main())


def test_ping_to_unknown_domain_is_an_error(server):
    async def main():
        alice = make_client(server, "alice@localhost/aio-ping")
        async with alice.connected():
            with pytest.raises(aioxmpp.errors.XMPPError):
                await aioxmpp.ping.ping(alice, aioxmpp.JID.fromstr("elsewhere.invalid"))
    run(main())


# -- authentication -------------------------------------------------------------------

def test_wrong_password_is_not_authorized(server):
    async def main():
        attempts = []

        async def always_wrong(jid, attempt):
            attempts.append(attempt)
            return "not-the-password"

        client = aioxmpp.Client(
            aioxmpp.JID.fromstr("alice@localhost/aio-wrong"),
            aioxmpp.make_security_layer(always_wrong, no_verify=True),
            override_peer=peer(server), max_initial_attempts=1)
        with pytest.raises(aiosasl.AuthenticationFailure) as info:
            async with client.connected():
                pass
        assert info.value.opaque_error == "not-authorized"
        assert attempts == [0, 1, 2]  # aioxmpp retried on the same stream, refused each time
    run(main())


@pytest.mark.tcp_only("counts the c2s 'connected' log lines to show one TCP connection")
def test_wrong_password_then_right_one_on_the_same_connection(server):
    async def main():
        attempts = []

        async def wrong_then_right(jid, attempt):
            attempts.append(attempt)
            return "not-the-password" if attempt == 0 else PASSWORD

        client = aioxmpp.Client(
            aioxmpp.JID.fromstr("carol@localhost/aio-retry"),
            aioxmpp.make_security_layer(wrong_then_right, no_verify=True),
            override_peer=peer(server), max_initial_attempts=1)
        mark = len(server.log_text())
        async with client.connected():
            assert str(client.local_jid) == "carol@localhost/aio-retry"
            await aioxmpp.ping.ping(client, SERVER)
        assert attempts == [0, 1]
        log = server.log_text()[mark:]
        failed = re.search(r"c2s (\S+) failed to authenticate as carol@localhost: not-authorized", log)
        assert failed, log
        connection = failed.group(1)
        # the same TCP connection then authenticated and bound
        assert f"c2s {connection} bound carol@localhost/aio-retry (SCRAM-SHA-" in log
        assert log.count(" connected\n") == 1
    run(main())


# -- XEP-0077 before authentication ---------------------------------------------------

async def preauth_stream(server):
    """A stream after STARTTLS, before SASL: (xmlstream, stream features)."""
    transport, xmlstream, features = await aioxmpp.node.connect_xmlstream(
        SERVER, aioxmpp.make_security_layer(None, no_verify=True),
        override_peer=peer(server), negotiation_timeout=TIMEOUT)
    return xmlstream, features


async def send_iq(xmlstream, iq):
    iq.autoset_id()
    return await aioxmpp.protocol.send_and_wait_for(xmlstream, [iq], [aioxmpp.IQ], timeout=TIMEOUT)


def test_registration_refused_by_default(make_xmppd):
    quiet = make_xmppd(users=())  # allow_registration defaults to false

    async def main():
        xmlstream, features = await preauth_stream(quiet)
        try:
            assert features.get_feature(aioxmpp.security_layer.SASLMechanisms) is not None
            assert features.get_feature(RegisterFeature) is None
            for iq in (aioxmpp.IQ(to=SERVER, type_=aioxmpp.IQType.GET, payload=aioxmpp.ibr.Query()),
                       aioxmpp.IQ(to=SERVER, type_=aioxmpp.IQType.SET,
                                  payload=aioxmpp.ibr.Query("mallory", "password123"))):
                reply = await send_iq(xmlstream, iq)
                assert reply.type_ == aioxmpp.IQType.ERROR
                assert reply.error.condition == aioxmpp.ErrorCondition.SERVICE_UNAVAILABLE
        finally:
            xmlstream.close()
        client = make_client(quiet, "mallory@localhost/x", "password123")
        with pytest.raises(aiosasl.AuthenticationFailure):
            async with client.connected():
                pass
    run(main())


def test_registration_form_offered_when_allowed(server):
    async def main():
        xmlstream, features = await preauth_stream(server)
        try:
            assert features.get_feature(RegisterFeature) is not None
            form = await aioxmpp.ibr.get_registration_fields(xmlstream, timeout=TIMEOUT)
            assert {"username", "password"} <= {name for _, name in aioxmpp.ibr.get_used_fields(form)}
        finally:
            xmlstream.close()
    run(main())
def test_registration_then_login(server):
    username = f"aio{uuid.uuid4().hex[:8]}"

    async def main():
        xmlstream, features = await preauth_stream(server)
        try:
            reply = await send_iq(xmlstream, aioxmpp.IQ(
                to=SERVER, type_=aioxmpp.IQType.SET,
                payload=aioxmpp.ibr.Query(username, "aio-password")))
            assert reply.type_ == aioxmpp.IQType.RESULT, reply.error
        finally:
            xmlstream.close()
        client = make_client(server, f"{username}@localhost/new", "aio-password")
        async with client.connected():
            assert str(client.local_jid) == f"{username}@localhost/new"
    run(main())
