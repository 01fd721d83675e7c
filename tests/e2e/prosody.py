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

Federation tests (:mod:`federation`) run it as a remote server instead:
another domain on a loopback address of its own, s2s on ``<ip>:5269`` with
the test's certificates and trust, a MUC component, inside the private
mount namespace of a :class:`testdns.NameWorld` (as root: the namespace,
then ``setpriv`` to the prosody user). A small plugin of ours logs how each
s2s link authenticated (:meth:`ProsodyProcess.s2s_authentications`).
"""

from __future__ import annotations

import glob
import os
import pwd
import re
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


#: A plugin of ours, loaded with ``s2s``: one info line per s2s link that
#: authenticated (Prosody logs how only at debug level, and not alike for
#: each mechanism and direction); parsed by :meth:`ProsodyProcess.s2s_authentications`.
S2S_LOG_MODULE = "xmppd_s2s_log"
S2S_LOG_PLUGIN = """\
-- xmppd test fixture: one line per s2s link once it is established, with
-- the mechanism it authenticated with (remembered per remote domain: an
-- incoming link may authenticate several with dialback).
module:hook("s2s-authenticated", function (event)
	local session = event.session;
	session.xmppd_mechanisms = session.xmppd_mechanisms or {};
	session.xmppd_mechanisms[event.host or ""] = event.mechanism;
end, 1000);

local function established(direction, remote_of)
	return function (event)
		local session = event.session;
		local remote = remote_of(session);
		local mechanisms = session.xmppd_mechanisms or {};
		module:log("info", "xmppd-s2s-authenticated direction=%s local=%s remote=%s mechanism=%s",
			direction, module.host, tostring(remote), tostring(mechanisms[remote]));
	end;
end
module:hook("s2sout-established", established("outgoing", function (s) return s.to_host end));
module:hook("s2sin-established", established("incoming", function (s) return s.from_host end));
"""
S2S_LOG_LINE = re.compile(r"xmppd-s2s-authenticated direction=(\S+) local=(\S+) remote=(\S+) "
                          r"mechanism=(\S+)")


class ProsodyUnavailable(RuntimeError):
    """Debian's prosody is not installed and cannot be installed here."""


def ensure_installed() -> str:
    """The path of ``prosody``; install the Debian package if it is missing."""
    return install_debian_package("prosody", PROSODY, ProsodyUnavailable)


def ensure_lua_unbound() -> bool:
    """Whether Prosody can resolve with libunbound (Debian's lua-unbound,
    a Recommends of prosody), installing it if need be.

    Without it Prosody 0.12 falls back to its own ``net.dns``, which works
    but takes a second or more per new s2s domain here; federation tests
    open many links, so they ask for it, and carry on without it if it
    cannot be installed."""
    if glob.glob("/usr/lib/*/lua/5.4/lunbound.so"):
        return True
    try:
        install_debian_package("lua-unbound", "/usr/share/doc/lua-unbound", ProsodyUnavailable)
    except ProsodyUnavailable:
        return False
    return bool(glob.glob("/usr/lib/*/lua/5.4/lunbound.so"))


def terminate(process: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if the server lingers past ``timeout`` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


def install_debian_package(package: str, path: str,
                           unavailable: type[Exception] = ProsodyUnavailable) -> str:
    """``path`` (a program of Debian's ``package``), installed with apt-get
    if it is missing; ``unavailable`` is raised, saying why, where that
    cannot be done."""
    if os.path.exists(path):
        return path
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise unavailable(f"{package} is not installed and apt-get cannot run here "
                          "(not root, or not a Debian system)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # The package would start the machine's own server (on every interface,
    # on the ports the tests use): a policy-rc.d that refuses service starts
    # keeps it stopped, as Docker images do; it is removed again afterwards.
    policy = "/usr/sbin/policy-rc.d"
    own_policy = not os.path.exists(policy)
    if own_policy:
        with open(policy, "w") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(policy, 0o755)
    try:
        for command in (["apt-get", "update", "-q"],
                        ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]):
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                raise unavailable(f"{' '.join(command)} failed: "
                                  f"{(done.stderr or done.stdout).strip()[-500:]}")
    finally:
        if own_policy:
            os.unlink(policy)
    if not os.path.exists(path):
        raise unavailable(f"apt-get installed {package} but {path} is missing")
    return path


def _free_port(ip: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def _store_name(text: str) -> str:
    """A name as Prosody's datamanager encodes it in a path (``%2e`` for a dot)."""
    return re.sub(r"[^A-Za-z0-9]", lambda m: "".join(f"%{b:02x}" for b in m.group().encode()),
                  text)


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ProsodyProcess:
    """One private Prosody: :meth:`start`, the users' accounts, :meth:`stop`.

    By default it serves ``localhost`` on 127.0.0.1 without s2s. For
    federation tests: ``domain``, ``ip`` (c2s on a free port there, s2s on
    ``<ip>:5269`` with ``s2s=True``), ``certificate``/``private_key`` (PEM
    files, copied into its directory) and ``ca_file`` (the CAs it trusts),
    ``s2s_secure_auth`` and ``s2s_require_encryption`` (Prosody's options;
    None: its defaults, false and true), ``dialback`` (mod_dialback),
    ``muc`` (a MUC component ``conference.<domain>``), ``names`` (a
    :class:`testdns.NameWorld` it runs in, to find the other servers) and
    ``log_level`` (of ``prosody.log``).
    """

    def __init__(self, users: Iterable[str], password: str,
                 modules: Iterable[str] = MODULES, *,
                 components: dict[str, str] | None = None,
                 component_options: dict[str, str] | None = None,
                 admins: Iterable[str] = (), http: bool = False, global_options: str = "",
                 domain: str = DOMAIN, ip: str = "127.0.0.1", s2s: bool = False,
                 certificate: str | os.PathLike | None = None,
                 private_key: str | os.PathLike | None = None,
                 ca_file: str | os.PathLike | None = None,
                 s2s_secure_auth: bool | None = None,
                 s2s_require_encryption: bool | None = None,
                 dialback: bool = True, muc: bool = False,
                 names=None, log_level: str = "info"):
        self.domain = domain
        #: where it listens (c2s, and s2s on port 5269 with ``s2s``)
        self.host = ip
        self.s2s = s2s
        self.s2s_port = 5269 if s2s else 0
        self.certificate = certificate
        self.private_key = private_key if private_key is not None else certificate
        self.ca_file = ca_file
        self.s2s_secure_auth = s2s_secure_auth
        self.s2s_require_encryption = s2s_require_encryption
        self.dialback = dialback
        self.names = names
        self.log_level = log_level
        self.users = list(users)
        self.password = password
        self.modules = list(modules)
        #: hosted components, domain → Prosody plugin ("conference.localhost": "muc")
        self.components = dict(components or {})
        #: the MUC service's domain ("" without ``muc``)
        self.muc_domain = f"conference.{domain}" if muc else ""
        if muc:
            self.components.setdefault(self.muc_domain, "muc")
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

    @property
    def client_host(self) -> str:
        """Where a client library connects (as :class:`conftest.XmppdProcess`)."""
        return self.host

    @property
    def client_port(self) -> int:
        return self.port

    def start(self) -> "ProsodyProcess":
        binary = ensure_installed()
        if self.s2s:
            ensure_lua_unbound()  # fast lookups; Prosody works without, slowly
        self.dir = Path(tempfile.mkdtemp(prefix="xmppd-difftest-prosody-"))
        self.port = _free_port(self.host)
        self.http_port = _free_port() if self.http else 0
        self._prepare()
        command = [binary, "--config", str(self.dir / "prosody.cfg.lua")]
        as_user = {}
        if self.names is not None:
            # The namespace is made as root; then the process becomes prosody.
            # SIGTERM when the test process dies (set after the uid changes,
            # which clears it); so no Prosody outlives a test process killed outright.
            command = self.names.wrap(["setpriv", "--reuid=prosody", "--regid=prosody",
                                       "--init-groups", "--pdeathsig", "TERM", "--", *command])
        elif os.geteuid() == 0:
            user = pwd.getpwnam("prosody")
            as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        self._output = open(self.dir / "stdout.log", "wb")
        self.process = subprocess.Popen(
            command, cwd=self.dir,
            stdin=subprocess.DEVNULL, stdout=self._output, stderr=subprocess.STDOUT, **as_user)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"prosody exited at start ({self.process.returncode}):\n"
                                   f"{self.log_tail()}")
            try:
                for host, port in ((self.host, self.port), ("127.0.0.1", self.http_port),
                                   (self.host, self.s2s_port)):
                    if port:
                        with socket.create_connection((host, port), timeout=0.5):
                            pass
                return self
            except OSError:
                if time.monotonic() > deadline:
                    tail = self.log_tail()
                    self.stop()
                    raise RuntimeError(f"prosody did not listen on {self.host}:{self.port}"
                                       f"{f' and :{self.s2s_port}' if self.s2s else ''}:\n"
                                       f"{tail}")
                time.sleep(0.05)

    def _prepare(self) -> None:
        assert self.dir is not None
        data = self.dir / "data"
        accounts = data / _store_name(self.domain) / "accounts"
        accounts.mkdir(parents=True)
        for jid in self.users:
            (accounts / f"{_store_name(jid.split('@', 1)[0])}.dat").write_text(
                f"return {{ [\"password\"] = {_lua_string(self.password)}; }};\n")
        (self.dir / "certs").mkdir()
        if self.certificate is not None:
            # Copies: the originals may be where the prosody user cannot read.
            shutil.copyfile(self.certificate, self.dir / "cert.pem")
            shutil.copyfile(self.private_key, self.dir / "key.pem")
        else:
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj",
                            f"/CN={self.domain}", "-addext", f"subjectAltName=DNS:{self.domain}",
                            "-keyout", str(self.dir / "key.pem"),
                            "-out", str(self.dir / "cert.pem")],
                           check=True, capture_output=True)
        cafile = ""
        if self.ca_file is not None:
            shutil.copyfile(self.ca_file, self.dir / "ca.pem")
            cafile = f' cafile = "{self.dir}/ca.pem";'
        enabled = [m for m in self.modules if m != "dialback" or self.dialback]
        if self.s2s:
            if self.dialback and "dialback" not in enabled:
                enabled.append("dialback")
            enabled.append(S2S_LOG_MODULE)
        modules = "; ".join(_lua_string(m) for m in enabled)
        s2s_lines = ""
        if self.s2s:
            # With lua-unbound, Prosody resolves with libunbound, which
            # answers NXDOMAIN itself for the special-use TLD .test unless the
            # names are in its local data: the hosts file (ignored without).
            s2s_lines = (f's2s_interfaces = {{ "{self.host}" }}\n'
                         "unbound = { hoststxt = true; resolvconf = true; }\n")
            for option, value in (("s2s_secure_auth", self.s2s_secure_auth),
                                  ("s2s_require_encryption", self.s2s_require_encryption)):
                if value is not None:
                    s2s_lines += f"{option} = {'true' if value else 'false'}\n"
        http_ports = f"{{ {self.http_port} }}" if self.http_port else "{}"
        admins = ("{ " + "; ".join(_lua_string(a) for a in self.admins) + " }"
                  if self.admins else "{}")
        plugin_paths = ""
        component_lines = ""
        if self.s2s:
            (self.dir / "plugins").mkdir()
            (self.dir / "plugins" / f"mod_{S2S_LOG_MODULE}.lua").write_text(S2S_LOG_PLUGIN)
            plugin_paths = f' "{self.dir}/plugins" '
            # components inherit only some modules (tls, saslauth, dialback...)
            component_lines = f"    modules_enabled = {{ {_lua_string(S2S_LOG_MODULE)} }}\n"
        components = "".join(
            f'Component {_lua_string(domain)} {_lua_string(plugin)}\n' + component_lines
            + "".join(f"    {line}\n" for line in
                      self.component_options.get(domain, "").splitlines() if line.strip())
            for domain, plugin in self.components.items())
        (self.dir / "prosody.cfg.lua").write_text(f"""\
daemonize = false
pidfile = "{self.dir}/prosody.pid"
data_path = "{data}"
certificates = "{self.dir}/certs"
plugin_paths = {{{plugin_paths}}}
interfaces = {{ "{self.host}" }}
local_interfaces = {{ "{self.host}" }}
c2s_ports = {{ {self.port} }}
legacy_ssl_ports = {{}}
c2s_direct_tls_ports = {{}}
s2s_ports = {{{f" {self.s2s_port} " if self.s2s else ""}}}
{s2s_lines}http_ports = {http_ports}
https_ports = {{}}
http_interfaces = {{ "127.0.0.1" }}
network_settings = {{ nagle = false }}
log = {{ {self.log_level} = "{self.dir}/prosody.log" }}
admins = {admins}
authentication = "internal_plain"
storage = "internal"
c2s_require_encryption = true
allow_registration = false
modules_enabled = {{ {modules} }}
modules_disabled = {{{"" if self.s2s else ' "s2s" '}}}
ssl = {{ certificate = "{self.dir}/cert.pem"; key = "{self.dir}/key.pem";{cafile} }}
{self.global_options}
VirtualHost "{self.domain}"
{components}""")
        if os.geteuid() == 0:
            user = pwd.getpwnam("prosody")
            for path in [self.dir, *self.dir.rglob("*")]:
                os.chown(path, user.pw_uid, user.pw_gid)

    def stop(self) -> None:
        """SIGTERM (SIGKILL if it lingers), then remove its directory."""
        if self.process is not None:
            terminate(self.process)
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

    def log_text(self) -> str:
        """Its whole log (what it logged at ``log_level`` and above)."""
        if self.dir is None or not (self.dir / "prosody.log").exists():
            return ""
        return (self.dir / "prosody.log").read_text(errors="replace")

    def s2s_authentications(self) -> list[tuple[str, str, str, str]]:
        """Every s2s link that authenticated so far, in order, as
        ``(direction, local domain, remote domain, mechanism)``: direction
        "incoming" or "outgoing", mechanism "EXTERNAL" or "dialback"."""
        return [m.groups() for m in S2S_LOG_LINE.finditer(self.log_text())]

    def __repr__(self) -> str:
        return f"<ProsodyProcess {self.domain} {self.host}:{self.port} dir={self.dir}>"


def start_prosody(users: Iterable[str], password: str, **options) -> ProsodyProcess:
    """A started private Prosody with ``users`` (bare JIDs at ``localhost``);
    ``options`` as :class:`ProsodyProcess` takes them (``components=``,
    ``component_options=``, ``admins=``)."""
    return ProsodyProcess(users, password, **options).start()
