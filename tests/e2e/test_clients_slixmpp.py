"""End to end with slixmpp, a real client library, against the real server process.

Most tests share one server (module scope, in-band registration on with a high
rate limit); each test uses its own resources or accounts so they don't disturb
each other. Tests that need another configuration start their own server.
"""

from __future__ import annotations

import asyncio
import datetime
import re
import ssl
import uuid

import pytest

slixmpp = pytest.importorskip("slixmpp")
from slixmpp.exceptions import IqError  # noqa: E402

from conftest import PASSWORD  # noqa: E402

pytestmark = pytest.mark.all_transports  # tcp, websocket, bosh (conftest)
#: why a test runs over TCP only
TCP_LOG = ("asserts the c2s log line of the client's own TCP connection (its "
           "address, STARTTLS or direct TLS)")
TIMEOUT = 10


@pytest.fixture(scope="module")
def server(make_xmppd_module):
    return make_xmppd_module({"component:register": {"allow_registration": "true",
                                                      "rate_limit": "1000"}})


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


class Client(slixmpp.ClientXMPP):
    """A slixmpp client that records what happens to it, for assertions."""

    def __init__(self, jid: str, password: str, *, mech: str | None = None):
        super().__init__(jid, password, sasl_mech=mech)
        # The server's certificate is self-signed.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        self.ssl_context = context
        for plugin in ("xep_0030", "xep_0077", "xep_0092", "xep_0199", "xep_0202"):
            self.register_plugin(plugin)
        loop = asyncio.get_running_loop()
        self.started = loop.create_future()
        self.auth_failed = loop.create_future()
        self.closed = loop.create_future()
        self.stream_errors: list = []
        self.messages: asyncio.Queue = asyncio.Queue()
        self.message_errors: asyncio.Queue = asyncio.Queue()
        self.seen_features: list = []
        self.add_event_handler("session_start", self._on_session_start)
        self.add_event_handler("failed_auth", lambda s: _settle(self.auth_failed, s))
        self.add_event_handler("disconnected", lambda r: _settle(self.closed, r))
        self.add_event_handler("stream_error", self.stream_errors.append)
        self.add_event_handler("message", self._on_message)
        # errors come back without the message's body (as from Prosody), so
        # slixmpp reports them as message_error, not as message
        self.add_event_handler("message_error", self.message_errors.put_nowait)
        self.add_filter("in", self._record_features)

    def _record_features(self, stanza):
        if stanza.name == "features":
            self.seen_features.append(stanza)
        return stanza

    async def _on_session_start(self, _event):
        self.send_presence()
        # A round trip after the presence: once it returns, the server has
        # processed the presence, so messages to the bare JID reach us.
        await self.ping_server()
        _settle(self.started, True)

    def _on_message(self, msg):
        if msg["type"] != "error":
            self.messages.put_nowait(msg)

    async def ping_server(self):
        iq = self.Iq()
        iq["type"], iq["to"] = "get", self.boundjid.domain
        iq.enable("ping")
        return await iq.send(timeout=TIMEOUT)

    def start(self, server, *, direct_tls: bool = False):
        self.enable_direct_tls = direct_tls
        self.enable_starttls = not direct_tls
        self.enable_plaintext = False
        self.connect(server.client_host,
                     server.client_tls_port if direct_tls else server.client_port)
        return self

    @property
    def sockname(self) -> str:
        host, port = self.transport.get_extra_info("sockname")[:2]
        return f"{host}:{port}"

    async def close(self):
        if not self.closed.done():
            try:
                await asyncio.wait_for(self.disconnect(wait=1), 3)
            except Exception:  # noqa: BLE001 - already gone is fine
                self.abort()


def _settle(future, value):
    if not future.done():
        future.set_result(value)


async def first(*futures, timeout=TIMEOUT):
    await asyncio.wait(futures, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)


async def login(server, jid, password=PASSWORD, *, direct_tls=False, mech=None) -> Client:
    client = Client(jid, password, mech=mech).start(server, direct_tls=direct_tls)
    await first(client.started, client.auth_failed, client.closed)
    if not client.started.done():
        why = ("auth failed: " + client.auth_failed.result()["condition"]
               if client.auth_failed.done() else f"stream errors {client.stream_errors}")
        client.abort()
        raise AssertionError(f"{jid} could not log in ({why}); server log:\n{server.log_tail()}")
    return client


async def login_fails(server, jid, password, **kw) -> str:
    """Log in expecting failure: the SASL failure condition."""
    client = Client(jid, password, **kw).start(server)
    await first(client.started, client.auth_failed)
    try:
        assert not client.started.done(), f"{jid} logged in with password {password!r}"
        assert client.auth_failed.done(), "neither logged in nor refused"
        return client.auth_failed.result()["condition"]
    finally:
        await client.close()


async def close(*clients):
    await asyncio.gather(*(c.close() for c in clients))


def server_log_since(server, mark: int) -> str:
    return server.log_text()[mark:]


# -- connecting and authenticating ------------------------------------------------

@pytest.mark.tcp_only(TCP_LOG)
def test_starttls_login(server):
    async def main():
        mark = len(server.log_text())
        client = await login(server, "alice@localhost/starttls")
        try:
            assert str(client.boundjid) == "alice@localhost/starttls"
            assert client.transport.get_extra_info("ssl_object") is not None
            peer = client.sockname
            log = server_log_since(server, mark)
            assert f"c2s {peer} connected\n" in log
            assert re.search(rf"c2s {re.escape(peer)} bound alice@localhost/starttls "
                             rf"\(SCRAM-SHA-\d+, STARTTLS\)\n", log), log
        finally:
            await close(client)
    run(main())


@pytest.mark.tcp_only(TCP_LOG)
def test_direct_tls_login(server):
    async def main():
        mark = len(server.log_text())
        client = await login(server, "alice@localhost/direct", direct_tls=True)
        try:
            assert str(client.boundjid) == "alice@localhost/direct"
            ssl_object = client.transport.get_extra_info("ssl_object")
            assert ssl_object is not None and ssl_object.version() in ("TLSv1.2", "TLSv1.3")
            peer = client.sockname
            log = server_log_since(server, mark)
            assert f"c2s {peer} connected (direct TLS)" in log
            # TLS from the first byte, no STARTTLS
            assert re.search(rf"c2s {re.escape(peer)} bound alice@localhost/direct "
                             rf"\(SCRAM-SHA-\d+, direct TLS\)\n", log), log
        finally:
            await close(client)
    run(main())


@pytest.mark.tcp_only(TCP_LOG)
@pytest.mark.parametrize("mech", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_scram_mechanism_chosen_by_client(server, mech):
    async def main():
        mark = len(server.log_text())
        client = await login(server, f"bob@localhost/{mech}", mech=mech)
        try:
            assert client.plugin["feature_mechanisms"].mech.name == mech
            assert f"c2s {client.sockname} bound bob@localhost/{mech} ({mech}, STARTTLS)" \
                in server_log_since(server, mark)
        finally:
            await close(client)
    run(main())


def test_server_offers_scram_mechanisms_after_tls(server):
    async def main():
        client = await login(server, "alice@localhost/mechs")
        try:
            offered = [f for f in client.seen_features if "mechanisms" in f["features"]]
            assert offered, "no stream features with SASL mechanisms seen"
            sasl = "{urn:ietf:params:xml:ns:xmpp-sasl}"
            mechanisms = {m.text for m in offered[0].xml.iter(sasl + "mechanism")}
            assert {"SCRAM-SHA-1", "SCRAM-SHA-256"} <= mechanisms
        finally:
            await close(client)
    run(main())


def test_wrong_password_is_not_authorized(server):
    async def main():
        assert await login_fails(server, "carol@localhost/x", "wrong-password") == "not-authorized"
        # and the right one still works
        client = await login(server, "carol@localhost/x")
        await close(client)
    run(main())


def test_unknown_user_is_not_authorized(server):
    async def main():
        assert await login_fails(server, "nobody@localhost/x", PASSWORD) == "not-authorized"
    run(main())


# -- resource binding ----------------------------------------------------------------

def test_bind_client_chosen_resource(server):
    async def main():
        client = await login(server, "alice@localhost/my-laptop")
        try:
            assert client.boundjid.full == "alice@localhost/my-laptop"
        finally:
            await close(client)
    run(main())


def test_bind_server_generated_resource(server):
    async def main():
        one = await login(server, "alice@localhost")
        two = await login(server, "alice@localhost")
        try:
            for client in (one, two):
                assert client.boundjid.bare == "alice@localhost"
                assert client.boundjid.resource, "the server generated no resource"
            assert one.boundjid.resource != two.boundjid.resource
            # both sessions are live: each can be reached at its full JID
            one.send_message(mto=two.boundjid.full, mbody="hello twin", mtype="chat")
            msg = await asyncio.wait_for(two.messages.get(), TIMEOUT)
            assert msg["body"] == "hello twin" and msg["from"] == one.boundjid.full
        finally:
            await close(one, two)
    run(main())


def test_same_resource_replaces_older_session(server):
    async def main():
        first_client = await login(server, "bob@localhost/phone")
        second = await login(server, "bob@localhost/phone")
        alice = await login(server, "alice@localhost/kicker")
        try:
            await asyncio.wait_for(first_client.closed, TIMEOUT)
            conditions = [e["condition"] for e in first_client.stream_errors]
            assert conditions == ["conflict"]
            assert second.boundjid.full == "bob@localhost/phone"
            # the full JID now routes to the new session
            alice.send_message(mto="bob@localhost/phone", mbody="who has it", mtype="chat")
            msg = await asyncio.wait_for(second.messages.get(), TIMEOUT)
            assert msg["body"] == "who has it"
            assert first_client.messages.empty()
        finally:
            await close(first_client, second, alice)
    run(main())


# -- messages ------------------------------------------------------------------------

@pytest.mark.parametrize("to_full", [False, True], ids=["bare", "full"])
def test_chat_message_alice_to_bob(server, to_full):
    async def main():
        alice = await login(server, "alice@localhost/desk")
        bob = await login(server, "bob@localhost/desk")
        try:
            msg = alice.make_message(mto=bob.boundjid.full if to_full else "bob@localhost",
                                     mbody="hi bob <&> ü", mtype="chat")
            msg["id"] = "m-" + uuid.uuid4().hex
            msg.send()
            got = await asyncio.wait_for(bob.messages.get(), TIMEOUT)
            assert got["body"] == "hi bob <&> ü"
            assert got["id"] == msg["id"]
            assert got["type"] == "chat"
            assert got["from"].full == "alice@localhost/desk"
            assert got["to"].full == (bob.boundjid.full if to_full else "bob@localhost")
        finally:
            await close(alice, bob)
    run(main())


def test_message_to_nonexistent_user_is_service_unavailable(server):
    async def main():
        alice = await login(server, "alice@localhost/lonely")
        try:
            msg = alice.make_message(mto="nobody@localhost", mbody="anyone?", mtype="chat")
            msg["id"] = "lost-1"
            msg.send()
            error = await asyncio.wait_for(alice.message_errors.get(), TIMEOUT)
            assert error["id"] == "lost-1"
            assert error["from"].bare == "nobody@localhost"
            assert error["error"]["condition"] == "service-unavailable"
            assert error["error"]["type"] == "cancel"
        finally:
            await close(alice)
    run(main())


# -- server services: ping, version, disco, time --------------------------------------

def test_ping_server(server):
    async def main():
        alice = await login(server, "alice@localhost/ping")
        try:
            reply = await alice.ping_server()
            assert reply["type"] == "result"
            assert reply["from"].full == "localhost"
            rtt = await alice.plugin["xep_0199"].ping("localhost", timeout=TIMEOUT)
            assert rtt is not None and rtt >= 0
        finally:
            await close(alice)
    run(main())


def test_software_version(server):
    async def main():
        alice = await login(server, "alice@localhost/version")
        try:
            reply = await alice.plugin["xep_0092"].get_version("localhost", timeout=TIMEOUT)
            assert reply["type"] == "result"
            assert reply["software_version"]["name"] == "xmppd"
            assert reply["software_version"]["version"]
            assert not reply["software_version"]["os"]  # show_os is off by default
        finally:
            await close(alice)
    run(main())


def test_disco_info_on_server(server):
    async def main():
        alice = await login(server, "alice@localhost/disco")
        try:
            reply = await alice.plugin["xep_0030"].get_info(jid="localhost", local=False, timeout=TIMEOUT)
            info = reply["disco_info"]
            features = set(info["features"])
            assert {"http://jabber.org/protocol/disco#info", "urn:xmpp:ping",
                    "jabber:iq:version", "urn:xmpp:time"} <= features
            identities = {(category, type_) for category, type_, *_ in info["identities"]}
            assert ("server", "im") in identities
        finally:
            await close(alice)
    run(main())


def test_entity_time(server):
    async def main():
        alice = await login(server, "alice@localhost/time")
        try:
            reply = await alice.plugin["xep_0202"].get_entity_time("localhost", timeout=TIMEOUT)
            assert reply["type"] == "result"
            # Read the XML rather than reply["entity_time"]["time"]: slixmpp 1.17
            # appends its own "Z" to <utc/>, so it cannot parse a conforming
            # XEP-0202 answer like <utc>2006-12-19T17:58:35Z</utc> (a slixmpp bug).
            ns = "{urn:xmpp:time}"
            utc = reply.xml.find(f"{ns}time/{ns}utc").text
            tzo = reply.xml.find(f"{ns}time/{ns}tzo").text
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", utc), utc
            assert re.fullmatch(r"Z|[+-]\d\d:\d\d", tzo), tzo
            when = datetime.datetime.fromisoformat(utc.replace("Z", "+00:00"))
            now = datetime.datetime.now(datetime.timezone.utc)
            assert abs((when - now).total_seconds()) < 60
        finally:
            await close(alice)
    run(main())


# -- XEP-0077: registration, password change, removal ------------------------------------

async def register(server, username, password, *, kill_after=None):
    """In-band registration with slixmpp's register feature, then login on the same stream."""
    client = Client(f"{username}@localhost/reg", password)
    outcome = asyncio.get_running_loop().create_future()

    async def on_register(_form):
        iq = client.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = username
        iq["register"]["password"] = password
        try:
            _settle(outcome, await iq.send(timeout=TIMEOUT))
        except IqError as e:
            _settle(outcome, e.iq)
            client.disconnect()

    client.add_event_handler("register", on_register)
    client.start(server)
    result = await asyncio.wait_for(outcome, TIMEOUT)
    return client, result
def test_inband_registration_then_login(server):
    async def main():
        username = unique("newbie")
        client, result = await register(server, username, "n3w-password")
        try:
            assert result["type"] == "result", result
            offered = [f for f in client.seen_features if "register" in f["features"]]
            assert offered, "the register stream feature was not offered"
            # slixmpp goes on to log in with the new account on the same stream
            await first(client.started, client.auth_failed, client.closed)
            assert client.started.done()
            assert client.boundjid.full == f"{username}@localhost/reg"
        finally:
            await close(client)
        # and a fresh connection can log in too
        again = await login(server, f"{username}@localhost/again", "n3w-password")
        await close(again)
        # registering the same name again is a conflict
        other, result = await register(server, username, "another-password")
        await close(other)
        assert result["type"] == "error"
        assert result["error"]["condition"] == "conflict"
    run(main())


def test_inband_registration_not_offered_by_default(make_xmppd):
    """allow_registration defaults to false: no register feature, so slixmpp never
    tries, and the account does not exist. (The service-unavailable answer to a
    registration request sent anyway is in test_clients_aioxmpp.)"""
    quiet = make_xmppd(users=())

    async def main():
        client = Client("someone@localhost/reg", "whatever123")
        asked = []
        client.add_event_handler("register", asked.append)
        client.start(quiet)
        try:
            await first(client.started, client.auth_failed)
            assert client.auth_failed.done()
            assert client.auth_failed.result()["condition"] == "not-authorized"
            assert client.seen_features, "no stream features seen"
            assert not [f for f in client.seen_features if "register" in f["features"]]
            assert asked == []
        finally:
            await client.close()
    run(main())
def test_password_change_then_login_with_new_password(server):
    user = unique("pw") + "@localhost"
    server.adduser(user, "old-password")

    async def main():
        client = await login(server, f"{user}/a", "old-password")
        try:
            reply = await client.plugin["xep_0077"].change_password("new-password", timeout=TIMEOUT)
            assert reply["type"] == "result"
        finally:
            await close(client)
        assert await login_fails(server, f"{user}/b", "old-password") == "not-authorized"
        again = await login(server, f"{user}/c", "new-password")
        await close(again)
    run(main())


def test_password_change_too_short_is_refused(server):
    user = unique("pw") + "@localhost"
    server.adduser(user, "old-password")

    async def main():
        client = await login(server, f"{user}/a", "old-password")
        try:
            with pytest.raises(IqError) as info:
                await client.plugin["xep_0077"].change_password("abc", timeout=TIMEOUT)
            assert info.value.iq["error"]["condition"] == "not-acceptable"
        finally:
            await close(client)
        again = await login(server, f"{user}/b", "old-password")
        await close(again)
    run(main())
def test_account_removal(server):
    user = unique("gone") + "@localhost"
    server.adduser(user, "bye-password")

    async def main():
        client = await login(server, f"{user}/a", "bye-password")
        other = await login(server, f"{user}/b", "bye-password")
        try:
            reply = await client.plugin["xep_0077"].cancel_registration(timeout=TIMEOUT)
            assert reply["type"] == "result"
            # every session of the removed account is closed
            await asyncio.wait_for(asyncio.gather(client.closed, other.closed), TIMEOUT)
            assert [e["condition"] for e in other.stream_errors] == ["not-authorized"]
        finally:
            await close(client, other)
        assert await login_fails(server, f"{user}/c", "bye-password") == "not-authorized"
    run(main())
