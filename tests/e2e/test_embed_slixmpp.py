"""wokkel bots in the server's process, reached over real sockets: a Twisted
application (``embed_app.py``, run with ``twistd -ny``) embeds xmppd with a
real c2s listener and attaches an echo bot to ``bot@localhost/echo`` and to
the domain ``echo-bot.localhost``; a slixmpp client logs in over TCP,
messages both and gets their answers, sees the bot's presence once
subscribed, and finds the bot's domain in the server's disco#items."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("slixmpp")
pytest.importorskip("wokkel")

from conftest import XmppdProcess, _env, _twistd_command  # noqa: E402
from slixclient import IMClient, close_all, message, presence  # noqa: E402

APP = Path(__file__).with_name("embed_app.py")
DISCO_ITEMS = "{http://jabber.org/protocol/disco#items}"
STARTUP_TIMEOUT = 20.0


def _start_app(proc: XmppdProcess) -> None:
    """``twistd -ny embed_app.py`` with ``proc``'s configuration and data,
    in ``proc``'s place (its ``stop`` and ``log_tail`` then work on it);
    returns once c2s listens and both bots said they are ready."""
    log = open(proc.log_path, "ab")
    env = _env()
    env["EMBED_APP_INI"] = str(proc.config_path)
    proc.process = subprocess.Popen(
        _twistd_command() + ["-n", "--pidfile", str(proc.base / "twistd.pid"), "-y", str(APP)],
        cwd=str(proc.base), env=env, stdin=subprocess.DEVNULL, stdout=log,
        stderr=subprocess.STDOUT)
    proc._log_file = log
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        text = proc.log_text()
        if proc.process.poll() is not None or "embedded bot failed" in text \
                or time.monotonic() > deadline:
            proc.stop()
            raise RuntimeError(f"the embedding application did not start; log:\n{proc.log_tail()}")
        if re.search(rf"c2s listening on \S+ port {proc.port}\b", text) \
                and "embedded bot ready: bot@localhost/echo" in text \
                and "embedded component ready: echo-bot.localhost" in text:
            try:
                socket.create_connection((proc.host, proc.port), timeout=0.5).close()
                return
            except OSError:
                pass
        time.sleep(0.05)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    proc = XmppdProcess(tmp_path_factory.mktemp("embed-app"), {
        "server": {"components": "disco presence roster messaging offline"}})
    proc.addusers(["alice@localhost", "bot@localhost"])
    _start_app(proc)
    yield proc
    proc.stop()


def run(coro, server):
    try:
        return asyncio.run(asyncio.wait_for(coro, 60))
    except BaseException as failure:
        failure.add_note(f"--- application log tail ---\n{server.log_tail(60)}")
        raise


def body(element) -> str | None:
    found = element.find("{jabber:client}body")
    return None if found is None else found.text


def test_slixmpp_client_gets_the_embedded_bots_answer(app):
    async def scenario():
        alice = await IMClient.login(app, "alice@localhost/pc")
        try:
            await alice.online()
            alice.send_message(mto="bot@localhost", mbody="hello bot", mtype="chat")
            reply = await alice.expect(message(from_="bot@localhost/echo", type="chat"))
            assert body(reply) == "echo: hello bot"
        finally:
            await close_all(alice)

    run(scenario(), app)


def test_slixmpp_client_sees_the_bot_online_once_subscribed(app):
    async def scenario():
        alice = await IMClient.login(app, "alice@localhost/pc2")
        bot_owner = await IMClient.login(app, "bot@localhost/owner")
        try:
            await alice.online()
            alice.send_presence(pto="bot@localhost", ptype="subscribe")
            await bot_owner.online()
            bot_owner.send_presence(pto="alice@localhost", ptype="subscribed")
            # The server sends the available resources of the account alice
            # subscribed to: the embedded bot among them.
            await alice.expect(presence("bot@localhost/echo"))
        finally:
            await close_all(alice, bot_owner)

    run(scenario(), app)


def test_slixmpp_client_messages_the_bots_domain_and_finds_it_in_disco(app):
    async def scenario():
        alice = await IMClient.login(app, "alice@localhost/pc3")
        try:
            await alice.online()
            for to in ("echo-bot.localhost", "room@echo-bot.localhost"):
                alice.send_message(mto=to, mbody=f"hi {to}", mtype="chat")
                reply = await alice.expect(message(from_=to, type="chat"))
                assert body(reply) == f"echo: hi {to}"
            items = await alice.iq("get", f"<query xmlns='{DISCO_ITEMS[1:-1]}'/>", to="localhost")
            jids = [i.get("jid") for i in items.iter(DISCO_ITEMS + "item")]
            assert "echo-bot.localhost" in jids
        finally:
            await close_all(alice)

    run(scenario(), app)
