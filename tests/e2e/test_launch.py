"""The three ways to run xmppd: twistd in the foreground, twistd daemonized,
and embedded in another Twisted application; and a bad config stopping all."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import slixmpp

from conftest import PASSWORD, _env, _twistd_command, free_port, write_ini


def _wait_for(predicate, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _config(tmp_path: Path) -> tuple[Path, int, int]:
    port, tls_port = free_port(), free_port()
    path = tmp_path / "xmppd.ini"
    write_ini(path, {
        "server": {"domains": "localhost", "data_dir": str(tmp_path / "data")},
        "c2s": {"interfaces": "127.0.0.1", "port": port, "direct_tls_port": tls_port},
        "http": {"port": 0, "tls_port": 0},  # not 5280/5281, which a parallel run may hold
        "s2s": {"port": 0},  # nor 5269
    })
    return path, port, tls_port


def _admin(config: Path, *args: str, input: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xmppd", "-c", str(config), *args],
                          input=input, capture_output=True, text=True, env=_env(), timeout=60)


class _Receiver(slixmpp.ClientXMPP):
    """A real client that waits for one message."""

    def __init__(self, jid: str, password: str):
        super().__init__(jid, password)
        self.ssl_context = ssl.create_default_context()
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.online = asyncio.get_running_loop().create_future()
        self.message = asyncio.get_running_loop().create_future()
        self.add_event_handler("session_start", self._started)
        self.add_event_handler("message", lambda m: self.message.done() or self.message.set_result(m))

    async def _started(self, _event):
        self.send_presence()
        await asyncio.sleep(0.2)
        if not self.online.done():
            self.online.set_result(True)


def test_twistd_daemonizes_with_pid_and_log_files(tmp_path):
    config, port, _ = _config(tmp_path)
    pidfile, logfile = tmp_path / "xmppd.pid", tmp_path / "xmppd.log"
    result = subprocess.run(
        _twistd_command() + ["--pidfile", str(pidfile), "--logfile", str(logfile),
                             "xmppd", "-c", str(config)],
        env=_env(), cwd=str(tmp_path), capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    _wait_for(pidfile.exists, what="the pid file")
    pid = int(pidfile.read_text())
    try:
        _wait_for(lambda: logfile.exists() and f"port {port}" in logfile.read_text(),
                  what="the listening line in the log")
        os.kill(pid, 0)  # the daemon is alive
    finally:
        os.kill(pid, signal.SIGTERM)
    _wait_for(lambda: not pidfile.exists(), what="the pid file to go at shutdown")
    assert "Server Shut Down" in logfile.read_text()


def test_bad_config_is_one_line_and_nonzero_exit(tmp_path):
    config, _, _ = _config(tmp_path)
    config.write_text(config.read_text().replace("[c2s]", "[c2s]\nprot = 5222"))
    result = subprocess.run(_twistd_command() + ["-n", "xmppd", "-c", str(config)],
                            env=_env(), capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(config) in lines[0] and "[c2s] prot" in lines[0] and "unknown option" in lines[0]


def test_unwritable_data_dir_and_missing_certificate_stop_startup(tmp_path):
    config, _, _ = _config(tmp_path)
    original = config.read_text()
    for broken, expected in (
        (original.replace(f"data_dir = {tmp_path / 'data'}", "data_dir = /dev/null/data"),
         "[server] data_dir"),
        (original.replace("[server]", f"[server]\ncertificate = {tmp_path / 'missing.pem'}"),
         "[server] certificate"),
    ):
        config.write_text(broken)
        result = subprocess.run(_twistd_command() + ["-n", "xmppd", "-c", str(config)],
                                env=_env(), capture_output=True, text=True, timeout=30)
        assert result.returncode != 0
        assert "Traceback" not in result.stderr
        assert expected in result.stderr and str(config) in result.stderr


TAC = '''
from twisted.application import internet, service
from twisted.web import resource, server
from twisted.words.xish import domish
from xmppd.service import makeService

application = service.Application("embedding test")
xmpp = makeService({config!r})
xmpp.setServiceParent(application)


class Hook(resource.Resource):
    """A web hook in the host application that sends through xmppd's router."""
    isLeaf = True

    def render_POST(self, request):
        message = domish.Element(("jabber:client", "message"))
        message["from"], message["to"], message["type"] = "localhost", "bob@localhost", "chat"
        message.addElement("body", content=request.content.read().decode())
        xmpp.router.route(message)
        return b"sent"


internet.TCPServer({web_port}, server.Site(Hook()), interface="127.0.0.1").setServiceParent(application)
'''


def test_embedded_in_a_twisted_application_and_reachable_from_its_code(tmp_path):
    config, port, _ = _config(tmp_path)
    web_port = free_port()
    tac = tmp_path / "app.tac"
    tac.write_text(TAC.format(config=str(config), web_port=web_port))
    assert _admin(config, "adduser", "bob@localhost", input=PASSWORD + "\n").returncode == 0
    log = open(tmp_path / "app.log", "w")
    process = subprocess.Popen(_twistd_command() + ["-ny", str(tac)], env=_env(),
                               cwd=str(tmp_path), stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: f"port {port}" in (tmp_path / "app.log").read_text(),
                  what="xmppd listening inside the application")

        async def scenario():
            bob = _Receiver("bob@localhost/desk", PASSWORD)
            bob.connect(host="127.0.0.1", port=port)
            await asyncio.wait_for(bob.online, 15)
            request = urllib.request.Request(f"http://127.0.0.1:{web_port}/", data=b"build passed")
            body = await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=10).read())
            assert body == b"sent"
            message = await asyncio.wait_for(bob.message, 10)
            bob.disconnect()
            return message

        message = asyncio.run(scenario())
        assert message["body"] == "build passed"
        assert str(message["from"]) == "localhost"
        assert message["type"] == "chat"
    finally:
        process.terminate()
        process.wait(10)
        log.close()
