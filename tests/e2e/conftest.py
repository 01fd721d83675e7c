"""End-to-end fixtures: the real ``twistd -n xmppd`` server as a subprocess.

``xmppd_server``
    function-scoped: a fresh server (default config) with the accounts
    alice, bob and carol @localhost, password ``secret123``.
``xmppd_module_server``
    the same, shared by all tests of one module (use when tests don't disturb
    each other's state).
``make_xmppd``
    function-scoped factory: ``make_xmppd({"c2s": {"auth_timeout": 2}})`` or
    ``make_xmppd(c2s={"auth_timeout": 2})`` → a started :class:`XmppdProcess`.
    ``users=`` lists the accounts to create (default: alice, bob, carol;
    ``users=()`` for none), ``start=False`` returns it unstarted.
``make_xmppd_module``
    the same factory, module-scoped.

Every server is stopped at teardown (SIGTERM, then SIGKILL after a few seconds).
Each listens on loopback ports picked free for it: ``process.port`` and
``process.tls_port`` (c2s), ``process.http_port`` and ``process.https_port``
(the HTTP service; 0 when the test turned one off).

Transports: a client library (slixmpp, aioxmpp) connects to
``process.client_host``, ``process.client_port`` (STARTTLS) or
``process.client_tls_port`` (direct TLS), never to ``port`` itself. Over
``tcp`` (the ``transport`` fixture) those are the c2s ports; over
``websocket`` and ``bosh`` they are the ports of a :mod:`bridge` to the
server (made at the first use, kept across restarts until teardown) that
carries the client's TCP stream over the server's WebSocket or BOSH endpoint.
A test module opts in with ``pytestmark = pytest.mark.all_transports``: each
of its tests then runs once per transport, test ids ending in ``tcp``,
``websocket`` or ``bosh``. The module's tests run transport by transport,
and its module-scoped servers serve all three (a server is as shared as
before, only over more ways in; that saves two server starts per module); a
module fixture that also takes ``transport`` makes a server per transport
(for tests that count what a fixed account has).
``@pytest.mark.tcp_only("why")`` skips one test over the other two (it
checks TCP itself: the c2s log line of a connection, the server's own TLS).
``XMPPD_E2E_TRANSPORTS="tcp websocket"`` in the environment runs fewer.
Modules that do not opt in (raw-socket tests of TCP framing, differential and
load tests) run over TCP only.
"""

from __future__ import annotations

import atexit
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "localhost"
PASSWORD = "secret123"
DEFAULT_USERS = ("alice@localhost", "bob@localhost", "carol@localhost")
STARTUP_TIMEOUT = 20.0
TRANSPORTS = tuple(os.environ.get("XMPPD_E2E_TRANSPORTS", "tcp websocket bosh").split())


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "all_transports: run this module's tests over TCP, "
                                       "WebSocket and BOSH (tests/e2e/conftest.py)")
    config.addinivalue_line("markers", "tcp_only(reason): in an all_transports module, "
                                       "run this test over TCP only, saying why")


def pytest_generate_tests(metafunc) -> None:
    """The ``transport`` parameter of the tests of modules that opted in."""
    if "transport" not in metafunc.fixturenames \
            or metafunc.definition.get_closest_marker("all_transports") is None:
        return
    tcp_only = metafunc.definition.get_closest_marker("tcp_only")
    params = [pytest.param(t, marks=pytest.mark.skip(reason=f"TCP only: {tcp_only.args[0]}"))
              if tcp_only is not None and t != "tcp" else t for t in TRANSPORTS]
    metafunc.parametrize("transport", params, indirect=True, scope="module")


@pytest.fixture(scope="module")
def transport(request) -> str:
    """How client libraries reach the servers of this test (``tcp`` unless
    the module opted in to all transports)."""
    return getattr(request, "param", "tcp")


@pytest.fixture(autouse=True)
def _clients_over(transport):
    """Every server's ``client_port`` is over this test's transport."""
    XmppdProcess.client_transport = transport
    yield
    XmppdProcess.client_transport = "tcp"


def free_port() -> int:
    """A loopback port that was free a moment ago (bind to 0, release)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _twistd_command() -> list[str]:
    twistd = Path(sys.executable).with_name("twistd")
    if twistd.exists():
        return [str(twistd)]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.pop("XMPPD_CONFIG", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def default_config(base: Path, port: int, tls_port: int) -> dict[str, dict[str, Any]]:
    return {
        "server": {
            "domains": DOMAIN,
            "data_dir": str(base / "data"),
            "components": "disco ping version time presence messaging register",
        },
        "c2s": {
            "interfaces": "127.0.0.1",
            "port": port,
            "direct_tls_port": tls_port,
            "auth_timeout": 60,
        },
        "http": {
            "interfaces": "127.0.0.1",
            "port": 0,
            "tls_port": 0,
        },
        # Federation tests turn it on with ports of their own: the default
        # 5269 would be one port for every server of the run.
        "s2s": {"port": 0},
        "external": {"port": 0},
    }


def merge(config: dict[str, dict[str, Any]], overrides: Mapping[str, Mapping[str, Any]] | None):
    for section, values in (overrides or {}).items():
        config.setdefault(section, {}).update(values)
    return config


def write_ini(path: Path, config: Mapping[str, Mapping[str, Any]]) -> None:
    lines = []
    for section, values in config.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, (list, tuple)):
                value = " ".join(str(v) for v in value)
            lines.append(f"{key} = {value}")
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")


class _PortTaken(Exception):
    pass


#: (section, option) of every port a test server listens on, picked free
#: unless the test set it
_PORT_OPTIONS = (("c2s", "port"), ("c2s", "direct_tls_port"), ("http", "port"),
                 ("http", "tls_port"))


class XmppdProcess:
    """One xmppd server process, restartable with the same config and data."""

    #: how the running test's clients connect (see the ``transport`` fixture)
    client_transport = "tcp"

    def __init__(self, base: Path, overrides: Mapping[str, Mapping[str, Any]] | None = None):
        self.base = Path(base)
        self.bridges: dict[str, Any] = {}  # transport → bridge.Bridge to the HTTP port
        self.base.mkdir(parents=True, exist_ok=True)
        # Ports picked here may be taken by someone else by the time twistd
        # binds them (other test runs in parallel); those can be re-picked.
        self._auto_ports = [(section, key) for section, key in _PORT_OPTIONS
                            if key not in (overrides or {}).get(section, {})]
        self.config = merge(default_config(self.base, 0, 0), overrides)
        self._pick_ports()
        self.data_dir = Path(self.config["server"]["data_dir"])
        self.config_path = self.base / "xmppd.ini"
        write_ini(self.config_path, self.config)
        self.log_path = self.base / "xmppd.log"
        self.host = "127.0.0.1"
        self.domain = DOMAIN
        self.process: subprocess.Popen | None = None
        self._log_file = None
        self.starts = 0

    # -- lifecycle -------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _pick_ports(self) -> None:
        """Free ports for the port options the overrides did not set."""
        taken = {self.config[section][key] for section, key in _PORT_OPTIONS
                 if (section, key) not in self._auto_ports}
        for section, key in self._auto_ports:
            port = free_port()
            while port in taken:
                port = free_port()
            taken.add(port)
            self.config[section][key] = port
        self.port = int(self.config["c2s"]["port"])
        self.tls_port = int(self.config["c2s"]["direct_tls_port"])
        self.http_port = int(self.config["http"]["port"])
        self.https_port = int(self.config["http"]["tls_port"])

    def start(self, timeout: float = STARTUP_TIMEOUT) -> "XmppdProcess":
        """Start (or restart) the server; return once it listens on both ports."""
        for attempt in range(5):
            try:
                return self._start(timeout)
            except _PortTaken:
                # Only the first start may move: a restart must keep its ports.
                if not self._auto_ports or self.starts > 1 or attempt == 4:
                    raise RuntimeError(f"xmppd could not bind its ports; log tail:\n{self.log_tail()}")
                self.starts = 0
                self._pick_ports()
                write_ini(self.config_path, self.config)
        raise AssertionError("unreachable")

    # -- where clients connect -----------------------------------------------------

    @property
    def client_host(self) -> str:
        return self.host

    @property
    def client_port(self) -> int:
        """Where a client library connects (STARTTLS), over this test's transport."""
        bridge = self._bridge()
        return self.port if bridge is None else bridge.port

    @property
    def client_tls_port(self) -> int:
        """Where a client library connects with direct TLS, over this test's transport."""
        bridge = self._bridge()
        return self.tls_port if bridge is None else bridge.tls_port

    def _bridge(self):
        """The bridge to this server for the test's transport (None over
        tcp), started at the first use (the server has made its certificate)."""
        transport = self.client_transport
        if transport == "tcp":
            return None
        if transport not in self.bridges:
            from bridge import Bridge
            if not self.http_port:
                raise RuntimeError(f"{transport} needs the HTTP service, which this test "
                                   "turned off ([http] port = 0)")
            certificate = self.config["server"].get("certificate") \
                or self.data_dir / "certs" / "xmppd.pem"
            self.bridges[transport] = Bridge(transport, self.http_port, str(certificate)).start()
        return self.bridges[transport]

    def stop_bridges(self) -> None:
        for bridge in self.bridges.values():
            bridge.stop()
        self.bridges.clear()

    def _start(self, timeout: float) -> "XmppdProcess":
        if self.running:
            raise RuntimeError("xmppd is already running")
        self.starts += 1
        marker = f"==== start #{self.starts} at {time.time():.6f} ===="
        self._log_file = open(self.log_path, "ab")
        self._log_file.write(f"\n{marker}\n".encode())
        self._log_file.flush()
        # cwd = base: nothing (a pid file, say) lands in the repository.
        self.process = subprocess.Popen(
            _twistd_command() + ["-n", "--pidfile", str(self.base / "twistd.pid"),
                                 "xmppd", "-c", str(self.config_path)],
            cwd=str(self.base), env=_env(), stdin=subprocess.DEVNULL,
            stdout=self._log_file, stderr=subprocess.STDOUT)
        # Ready when *this* process logged that it listens on each port (a
        # connection alone could reach someone else's listener on a port we
        # failed to bind) and the ports accept connections.
        waiting = [p for p in (self.port, self.tls_port, self.http_port, self.https_port) if p]
        deadline = time.monotonic() + timeout
        while waiting:
            log = self.log_text().rpartition(marker)[2]
            if "cannot listen on" in log and "Address already in use" in log:
                self.kill()
                raise _PortTaken()
            if self.process.poll() is not None:
                self._close_log()
                raise RuntimeError(f"xmppd exited with status {self.process.returncode} "
                                   f"during startup; log tail:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"xmppd did not listen on {waiting} within {timeout}s; "
                                   f"log tail:\n{self.log_tail()}")
            port = waiting[0]
            if re.search(rf"(?:c2s|http) listening on \S+ port {port}\b", log):
                try:
                    with socket.create_connection((self.host, port), timeout=0.5):
                        pass
                except OSError:
                    pass
                else:
                    waiting.pop(0)
                    continue
            time.sleep(0.05)
        return self

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, wait, SIGKILL if it does not exit; return the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self._close_log()
        return self.process.returncode

    def kill(self) -> int | None:
        """SIGKILL: a crash, no chance to clean up."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._close_log()
        return self.process.returncode

    def restart(self) -> "XmppdProcess":
        self.stop()
        return self.start()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    # -- inspection --------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- accounts ------------------------------------------------------------------

    def admin(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``python -m xmppd -c CONFIG ARGS...``."""
        result = subprocess.run(
            [sys.executable, "-m", "xmppd", "-c", str(self.config_path), *args],
            input=input, capture_output=True, text=True, env=_env(), cwd=str(self.base), timeout=60)
        if check and result.returncode != 0:
            raise RuntimeError(f"xmppd {' '.join(args)} failed ({result.returncode}): "
                               f"{result.stderr.strip() or result.stdout.strip()}")
        return result

    def adduser(self, jid: str, password: str = PASSWORD) -> None:
        self.addusers([jid], password)

    def addusers(self, jids: Iterable[str], password: str = PASSWORD) -> None:
        """Accounts, made as ``xmppd adduser`` makes them (the server may be
        running or not) by one helper process for the whole session:
        :mod:`accountd` (the admin command starts too slowly to make hundreds)."""
        jids = list(jids)
        answers = _accountd([(self.config_path, jid, password) for jid in jids])
        errors = [f"{jid}: {answer}" for jid, answer in zip(jids, answers) if answer != "ok"]
        if errors:
            raise RuntimeError(f"xmppd adduser failed: {'; '.join(errors)}")

    def __repr__(self) -> str:
        return (f"<XmppdProcess port={self.port} tls_port={self.tls_port} "
                f"http_port={self.http_port} https_port={self.https_port} base={self.base}>")


#: the session's accountd processes, by PYTHONPATH (a test may add the package
#: of a component its configuration names)
_ACCOUNTD: dict[str, subprocess.Popen] = {}
_ACCOUNTD_LOCK = threading.Lock()


def _accountd(requests: list[tuple[Any, str, str]]) -> list[str]:
    """Send account requests to the session's :mod:`accountd`; its answers."""
    env = _env()
    with _ACCOUNTD_LOCK:
        helper = _ACCOUNTD.get(env["PYTHONPATH"])
        if helper is None or helper.poll() is not None:
            helper = _ACCOUNTD[env["PYTHONPATH"]] = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("accountd.py"))],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=str(REPO_ROOT),
                text=True, encoding="utf-8")
        helper.stdin.write("".join("\t".join(map(str, r)) + "\n" for r in requests))
        helper.stdin.flush()
        answers = [helper.stdout.readline().strip() for _ in requests]
    if any(not a for a in answers):
        raise RuntimeError(f"accountd exited with status {helper.poll()}")
    return answers


@atexit.register
def _stop_accountd() -> None:
    for helper in _ACCOUNTD.values():
        helper.stdin.close()  # it exits at the end of its input
        helper.wait(10)


class _Factory:
    def __init__(self, tmp_path_factory: pytest.TempPathFactory, name: str):
        self._tmp = tmp_path_factory
        self._name = name
        self.servers: list[XmppdProcess] = []

    def __call__(self, overrides: Mapping[str, Mapping[str, Any]] | None = None, /, *,
                 users: Iterable[str] = DEFAULT_USERS, password: str = PASSWORD,
                 start: bool = True, **sections: Mapping[str, Any]) -> XmppdProcess:
        combined: dict[str, dict[str, Any]] = {}
        merge(combined, overrides)
        merge(combined, sections)
        server = XmppdProcess(self._tmp.mktemp(self._name), combined)
        self.servers.append(server)
        if start:
            server.start()
            server.addusers(users, password)
        elif users:
            # Accounts can be created offline too; the storage is the same file.
            server.addusers(users, password)
        return server

    def close(self) -> None:
        for server in self.servers:
            try:
                server.stop()
            except Exception:  # noqa: BLE001 - teardown must reach every server
                server.kill()
            server.stop_bridges()


@pytest.fixture
def make_xmppd(tmp_path_factory):
    factory = _Factory(tmp_path_factory, "xmppd")
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def make_xmppd_module(tmp_path_factory):
    factory = _Factory(tmp_path_factory, "xmppd-mod")
    yield factory
    factory.close()


@pytest.fixture
def xmppd_server(make_xmppd) -> XmppdProcess:
    return make_xmppd()


@pytest.fixture(scope="module")
def xmppd_module_server(make_xmppd_module) -> XmppdProcess:
    return make_xmppd_module()
