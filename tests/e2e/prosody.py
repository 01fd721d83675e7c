"""A private Prosody 0.12 (Debian's ``/usr/bin/prosody``) for differential tests.

The anchor server the IM behaviour is checked against: started on loopback
with its own config, data directory and port (nothing of the machine's own
Prosody is touched), serving the same domain ``localhost``, the same accounts
and password as the xmppd fixtures, over STARTTLS with a certificate made for
the run, so :func:`tests.e2e.rawxmpp.login` logs in to either server alike.

How it is run follows ``../shared/anchors.md`` and ``bench/servers.py``:
accounts are written straight into the data directory (``internal_plain``,
which offers SCRAM-SHA-256 like xmppd), and as root the process runs as the
``prosody`` user (Prosody refuses root), so its directory is made with
:func:`tempfile.mkdtemp` and handed to that user — pytest's temporary
directories are private to root.

:func:`ensure_installed` installs the Debian package if it is missing; only
where that cannot be done does :func:`start_prosody` raise
:class:`ProsodyUnavailable` (the test then skips, saying why).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterable

PROSODY = "/usr/bin/prosody"
DOMAIN = "localhost"
STARTUP_TIMEOUT = 20.0

#: Modules as in the differential test: what xmppd's roster, presence,
#: messaging, offline, blocking and ping components do. mod_presence,
#: mod_message, mod_iq, mod_offline and mod_c2s are loaded by Prosody itself.
MODULES = ("roster", "saslauth", "tls", "disco", "blocklist", "ping")


class ProsodyUnavailable(RuntimeError):
    """Debian's prosody is not installed and cannot be installed here."""


def ensure_installed() -> str:
    """The path of ``prosody``; install the Debian package if it is missing."""
    if os.path.exists(PROSODY):
        return PROSODY
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ProsodyUnavailable("prosody is not installed and apt-get cannot run here "
                                 "(not root, or not a Debian system)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # The package would start the machine's own Prosody (on every interface):
    # a policy-rc.d that refuses service starts keeps it stopped, as Docker
    # images do; it is removed again afterwards.
    policy = "/usr/sbin/policy-rc.d"
    own_policy = not os.path.exists(policy)
    if own_policy:
        with open(policy, "w") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(policy, 0o755)
    try:
        for command in (["apt-get", "update", "-q"],
                        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "prosody"]):
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                raise ProsodyUnavailable(f"{' '.join(command)} failed: "
                                         f"{(done.stderr or done.stdout).strip()[-500:]}")
    finally:
        if own_policy:
            os.unlink(policy)
    if not os.path.exists(PROSODY):
        raise ProsodyUnavailable("apt-get installed prosody but /usr/bin/prosody is missing")
    return PROSODY


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ProsodyProcess:
    """One private Prosody: :meth:`start`, the users' accounts, :meth:`stop`."""

    host = "127.0.0.1"
    domain = DOMAIN

    def __init__(self, users: Iterable[str], password: str,
                 modules: Iterable[str] = MODULES, *,
                 components: dict[str, str] | None = None,
                 component_options: dict[str, str] | None = None,
                 admins: Iterable[str] = (), http: bool = False, global_options: str = ""):
        self.users = list(users)
        self.password = password
        self.modules = list(modules)
        #: hosted components, domain → Prosody plugin ("conference.localhost": "muc")
        self.components = dict(components or {})
        #: Lua option lines per component domain (``'max_history_messages = 50'``)
        self.component_options = dict(component_options or {})
        self.admins = list(admins)
        #: serve HTTP (mod_http's modules, such as mod_bosh) on ``http_port``
        self.http = http
        #: Lua lines for the global section (``'consider_bosh_secure = true'``)
        self.global_options = global_options
        self.port = 0
        self.http_port = 0
        self.dir: Path | None = None
        self.process: subprocess.Popen | None = None
        self._output = None

    def start(self) -> "ProsodyProcess":
        binary = ensure_installed()
        self.dir = Path(tempfile.mkdtemp(prefix="xmppd-difftest-prosody-"))
        self.port = _free_port()
        self.http_port = _free_port() if self.http else 0
        self._prepare()
        as_user = {}
        if os.geteuid() == 0:
            user = pwd.getpwnam("prosody")
            as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        self._output = open(self.dir / "stdout.log", "wb")
        self.process = subprocess.Popen(
            [binary, "--config", str(self.dir / "prosody.cfg.lua")], cwd=self.dir,
            stdin=subprocess.DEVNULL, stdout=self._output, stderr=subprocess.STDOUT, **as_user)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"prosody exited at start ({self.process.returncode}):\n"
                                   f"{self.log_tail()}")
            try:
                for port in (self.port, self.http_port):
                    if port:
                        with socket.create_connection((self.host, port), timeout=0.5):
                            pass
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"prosody did not listen on {self.port}:\n"
                                       f"{self.log_tail()}")
                time.sleep(0.05)

    def _prepare(self) -> None:
        assert self.dir is not None
        data = self.dir / "data"
        accounts = data / DOMAIN.replace(".", "%2e") / "accounts"
        accounts.mkdir(parents=True)
        for jid in self.users:
            (accounts / f"{jid.split('@', 1)[0]}.dat").write_text(
                f"return {{ [\"password\"] = {_lua_string(self.password)}; }};\n")
        (self.dir / "certs").mkdir()
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj",
                        f"/CN={DOMAIN}", "-addext", f"subjectAltName=DNS:{DOMAIN}",
                        "-keyout", str(self.dir / "key.pem"), "-out", str(self.dir / "cert.pem")],
                       check=True, capture_output=True)
        modules = "; ".join(_lua_string(m) for m in self.modules)
        http_ports = f"{{ {self.http_port} }}" if self.http_port else "{}"
        admins = ("{ " + "; ".join(_lua_string(a) for a in self.admins) + " }"
                  if self.admins else "{}")
        components = "".join(
            f'Component {_lua_string(domain)} {_lua_string(plugin)}\n'
            + "".join(f"    {line}\n" for line in
                      self.component_options.get(domain, "").splitlines() if line.strip())
            for domain, plugin in self.components.items())
        (self.dir / "prosody.cfg.lua").write_text(f"""\
daemonize = false
pidfile = "{self.dir}/prosody.pid"
data_path = "{data}"
certificates = "{self.dir}/certs"
plugin_paths = {{}}
interfaces = {{ "127.0.0.1" }}
local_interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {self.port} }}
legacy_ssl_ports = {{}}
c2s_direct_tls_ports = {{}}
s2s_ports = {{}}
http_ports = {http_ports}
https_ports = {{}}
http_interfaces = {{ "127.0.0.1" }}
network_settings = {{ nagle = false }}
log = {{ info = "{self.dir}/prosody.log" }}
admins = {admins}
authentication = "internal_plain"
storage = "internal"
c2s_require_encryption = true
allow_registration = false
modules_enabled = {{ {modules} }}
modules_disabled = {{ "s2s" }}
ssl = {{ certificate = "{self.dir}/cert.pem"; key = "{self.dir}/key.pem"; }}
{self.global_options}
VirtualHost "{DOMAIN}"
{components}""")
        if os.geteuid() == 0:
            user = pwd.getpwnam("prosody")
            for path in [self.dir, *self.dir.rglob("*")]:
                os.chown(path, user.pw_uid, user.pw_gid)

    def stop(self) -> None:
        """SIGTERM (SIGKILL if it lingers), then remove its directory."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(10)
            self.process = None
        if self._output is not None:
            self._output.close()
            self._output = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def log_tail(self, lines: int = 40) -> str:
        if self.dir is None:
            return ""
        text = ""
        for name in ("stdout.log", "prosody.log"):
            path = self.dir / name
            if path.exists():
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def __repr__(self) -> str:
        return f"<ProsodyProcess port={self.port} dir={self.dir}>"


def start_prosody(users: Iterable[str], password: str, **options) -> ProsodyProcess:
    """A started private Prosody with ``users`` (bare JIDs at ``localhost``);
    ``options`` as :class:`ProsodyProcess` takes them (``components=``,
    ``component_options=``, ``admins=``)."""
    return ProsodyProcess(users, password, **options).start()
