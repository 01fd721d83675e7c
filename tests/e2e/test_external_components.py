"""XEP-0114 external components over real sockets: components written with
slixmpp's ``ComponentXMPP`` and with wokkel's ``Component`` (in a process of
its own: Twisted's reactor runs once per process) connect to a real ``twistd
xmppd``, receive a slixmpp user's message and answer it. The server lists
their domains in its disco#items; a wrong secret is refused with
``not-authorized`` and logged, the connected component unaffected; a
component that reconnects replaces its old connection (``conflict``); a
component sending from a foreign domain gets ``invalid-from``, as from
Prosody's mod_component; a domain whose component is away bounces
``remote-server-timeout``.

One server for the module; each test connects the components it needs and
disconnects them at its end.

Run as a script, this file is the wokkel component:
``python test_external_components.py wokkel <port> <domain> <secret>``.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time

import pytest

pytest.importorskip("slixmpp")
import slixmpp  # noqa: E402

from conftest import free_port  # noqa: E402
from slixclient import IMClient, _settle, message  # noqa: E402

SECRETS = {"slix.localhost": "slix secret", "wokkel.localhost": "wokkel secret",
           "rogue.localhost": "rogue secret", "away.localhost": "away secret"}
STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
TIMEOUT = 10


@pytest.fixture(scope="module")
def server(make_xmppd_module):
    config = {"server": {"components": "disco ping presence messaging roster"},
              # (s2s stays on, as by default: the exact routes must win over it)
              "external": {"interfaces": "127.0.0.1", "port": free_port()}}
    for domain, secret in SECRETS.items():
        config[f"external:{domain}"] = {"secret": secret}
    server = make_xmppd_module(config, users=("alice@localhost",))
    server.external_port = config["external"]["port"]
    return server


def run(coro, server):
    try:
        return asyncio.run(asyncio.wait_for(coro, 60))
    except BaseException as failure:
        failure.add_note(f"--- xmppd log tail ---\n{server.log_tail(60)}")
        raise


async def logged(server, pattern: str, timeout: float = 5) -> str:
    """The first server log line matching ``pattern`` (waited for)."""
    deadline = time.monotonic() + timeout
    while True:
        for line in server.log_text().splitlines():
            if re.search(pattern, line):
                return line
        if time.monotonic() > deadline:
            raise AssertionError(f"the server never logged {pattern!r}")
        await asyncio.sleep(0.05)


class SlixComponent(slixmpp.ComponentXMPP):
    """A slixmpp external component that answers every chat message with
    ``<name>: <body>``, and records the stream errors it gets."""

    def __init__(self, server, domain: str, name: str, secret: str | None = None):
        super().__init__(domain, SECRETS[domain] if secret is None else secret,
                         "127.0.0.1", server.external_port)
        self.name = name
        loop = asyncio.get_running_loop()
        self.started = loop.create_future()
        self.closed = loop.create_future()
        self.stream_errors: list[str] = []
        self.received: list[str] = []
        self.address: tuple | None = None
        self.add_event_handler("session_start", lambda _: _settle(self.started, True))
        self.add_event_handler("disconnected", lambda _: _settle(self.closed, True))
        self.add_event_handler("stream_error",
                               lambda error: self.stream_errors.append(error["condition"]))
        self.add_event_handler("message", self._answer)

    def connection_made(self, transport) -> None:
        self.address = transport.get_extra_info("sockname")  # the server logs it as the peer
        super().connection_made(transport)

    def _answer(self, msg) -> None:
        if msg["type"] in ("chat", "normal"):
            self.received.append(msg["body"])
            msg.reply(f"{self.name}: {msg['body']}").send()

    async def start(self) -> "SlixComponent":
        self.connect()
        await asyncio.wait_for(asyncio.shield(self.started), TIMEOUT)
        return self

    async def ended(self) -> None:
        await asyncio.wait_for(asyncio.shield(self.closed), TIMEOUT)

    async def close(self) -> None:
        if not self.closed.done():
            try:
                await asyncio.wait_for(self.disconnect(wait=1), 3)
            except Exception:  # noqa: BLE001 - already gone is fine
                self.abort()


async def ask(alice: IMClient, to: str, body: str) -> str:
    """Send a chat message; the body of the answer from ``to``."""
    alice.send_message(mto=to, mbody=body, mtype="chat")
    reply = await alice.expect(message(from_=to, type="chat"))
    return reply.findtext("{jabber:client}body")


# -- components that connect, receive and answer -------------------------------------------

def test_a_slixmpp_component_receives_a_user_s_message_and_answers(server):
    async def main():
        component = await SlixComponent(server, "slix.localhost", "slix").start()
        alice = await IMClient.login(server, "alice@localhost/slix")
        try:
            assert await ask(alice, "echo@slix.localhost", "hello") == "slix: hello"
            assert component.received == ["hello"]
            await logged(server, r"external \S+ authenticated as slix\.localhost")
        finally:
            await asyncio.gather(component.close(), alice.close())
    run(main(), server)


def test_a_wokkel_component_receives_a_user_s_message_and_answers(server):
    async def main():
        process = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "wokkel", str(server.external_port), "wokkel.localhost",
            SECRETS["wokkel.localhost"], stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        alice = None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), 20)
            assert line.strip() == b"authenticated", (line, await _stderr(process))
            alice = await IMClient.login(server, "alice@localhost/wokkel")
            assert await ask(alice, "echo@wokkel.localhost", "hello") == "wokkel: hello"
        finally:
            if alice is not None:
                await alice.close()
            if process.returncode is None:
                process.terminate()
            await process.wait()
    run(main(), server)


async def _stderr(process) -> str:
    try:
        return (await asyncio.wait_for(process.stderr.read(4096), 2)).decode(errors="replace")
    except asyncio.TimeoutError:
        return ""


def test_the_server_lists_the_component_domains_and_bounces_for_an_absent_one(server):
    async def main():
        alice = await IMClient.login(server, "alice@localhost/disco")
        try:
            reply = await alice["xep_0030"].get_items(jid="localhost", timeout=TIMEOUT)
            listed = {jid for jid, _node, _name in reply["disco_items"]["items"]}
            assert set(SECRETS) <= listed
            # Nobody connected for away.localhost: Prosody's answer.
            alice.send_message(mto="bot@away.localhost", mbody="anyone?", mtype="chat")
            error = await alice.expect(message(from_="bot@away.localhost", type="error"))
            condition = error.find("{jabber:client}error")
            assert condition.get("type") == "wait"
            assert condition.find("{urn:ietf:params:xml:ns:xmpp-stanzas}remote-server-timeout") \
                is not None
        finally:
            await alice.close()
    run(main(), server)


# -- refusals ----------------------------------------------------------------------------

def test_a_wrong_secret_is_refused_and_logged_and_the_connected_component_keeps_working(server):
    async def main():
        good = await SlixComponent(server, "slix.localhost", "good").start()
        bad = SlixComponent(server, "slix.localhost", "bad", secret="not the secret")
        alice = await IMClient.login(server, "alice@localhost/secret")
        try:
            bad.connect()
            await bad.ended()
            assert not bad.started.done()  # never accepted
            assert bad.stream_errors == ["not-authorized"]
            host, port = bad.address[:2]
            await logged(server, rf"external {re.escape(host)}:{port} failed to authenticate "
                                 r"as slix\.localhost: not-authorized")
            assert not good.closed.done()
            assert await ask(alice, "echo@slix.localhost", "still there?") == "good: still there?"
        finally:
            await asyncio.gather(good.close(), bad.close(), alice.close())
    run(main(), server)


def test_a_component_sending_from_a_foreign_domain_gets_invalid_from(server):
    async def main():
        rogue = await SlixComponent(server, "rogue.localhost", "rogue").start()
        alice = await IMClient.login(server, "alice@localhost/rogue")
        try:
            rogue.send_message(mto="alice@localhost/rogue", mfrom="admin@localhost",
                               mbody="trust me", mtype="chat")
            await rogue.ended()
            assert rogue.stream_errors == ["invalid-from"]
            await alice.settle()
            assert alice.received(message(from_="admin@localhost")) == []
        finally:
            await asyncio.gather(rogue.close(), alice.close())
    run(main(), server)


def test_a_component_that_reconnects_replaces_the_old_connection(server):
    async def main():
        old = await SlixComponent(server, "slix.localhost", "old").start()
        alice = await IMClient.login(server, "alice@localhost/replace")
        try:
            assert await ask(alice, "echo@slix.localhost", "one") == "old: one"
            new = await SlixComponent(server, "slix.localhost", "new").start()
            try:
                await old.ended()
                assert old.stream_errors == ["conflict"]
                assert await ask(alice, "echo@slix.localhost", "two") == "new: two"
                assert old.received == ["one"]
            finally:
                await new.close()
        finally:
            await asyncio.gather(old.close(), alice.close())
    run(main(), server)


# -- the wokkel component, run as a script -------------------------------------------------

def wokkel_component(port: int, domain: str, secret: str) -> None:
    """A wokkel external component that answers chat messages with
    ``wokkel: <body>``; prints ``authenticated`` once the server accepted it."""
    from twisted.internet import reactor
    from twisted.words.xish import domish
    from wokkel.component import Component
    from wokkel.subprotocols import XMPPHandler

    class Echo(XMPPHandler):
        def connectionInitialized(self):
            self.xmlstream.addObserver("/message", self.answer)
            print("authenticated", flush=True)

        def answer(self, stanza):
            if stanza.getAttribute("type", "normal") not in ("chat", "normal"):
                return
            reply = domish.Element((None, "message"))
            reply["to"], reply["from"] = stanza["from"], stanza["to"]
            reply["type"] = stanza.getAttribute("type", "normal")
            reply.addElement("body", content=f"wokkel: {stanza.body}")
            self.send(reply)

    component = Component("127.0.0.1", port, domain, secret)
    Echo().setHandlerParent(component)
    component.startService()
    reactor.run()


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] != "wokkel":
        sys.exit(f"usage: {sys.argv[0]} wokkel PORT DOMAIN SECRET")
    wokkel_component(int(sys.argv[2]), sys.argv[3], sys.argv[4])
