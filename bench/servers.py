"""The servers under test: xmppd and Prosody, each a private instance.

Each gets a fresh directory, loopback ports only, the same certificate, the
same accounts (same salt and SCRAM iteration count, written straight into its
storage so thousands of accounts take a second), and the same feature set:
rosters, presence, offline storage, carbons, blocking, private storage, last
activity, disco, ping, version, time. Neither archives messages (MAM): xmppd
has no archive yet, and Prosody's file-backed archive alone changes its
message rate about tenfold. Both log at info level to a file.

A scenario may also have rosters written into both servers' storage before
they start (mutual subscriptions, as the accounts are written), and may
enable extra features in both (:data:`EXTRAS`, such as vCards and XEP-0153
avatar hashes); without them, neither server has those features.

Federation (s2s) is off in both unless a server is given :class:`S2S`
settings (the ``s2s-messages`` row, ``s2s_scenarios.py``): then it serves a
domain of its own on a loopback address of its own, with s2s on
``<address>:5269``, a certificate from the row's test CA, SASL EXTERNAL as
the only way to authenticate, and a way to find its peer (xmppd's
``[s2s:routes]``; Prosody's own DNS lookups, answered inside a private
mount namespace).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import pwd
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = "localhost"
PASSWORD = "benchpassword"
ITERATIONS = 10000
#: One salt for every bench account (a real server picks one per account; the
#: work a login costs is the same), so the keys are derived once.
SALT = "bench-salt-0b5e6a43-3c1f-4d55-9a2f"
FEATURES = "offline+carbons on, archive (MAM) off"

#: Features a scenario may add to both servers (``Scenario.extras``): the
#: xmppd components and the Prosody modules that give the same behaviour.
#: Without the extra, neither server has them (xmppd's default components
#: are trimmed to match).
EXTRAS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # vCard-temp (XEP-0054) kept as the client sent it: Prosody's mod_vcard
    # stores the element and reads it back for each get, as xmppd's does.
    "vcard": (("vcard",), ("vcard",)),
    # vCard-temp plus the XEP-0153 avatar hash injected into every available
    # presence. Prosody does that in mod_vcard_legacy, which keeps the vCard
    # in PEP (vcard4 and avatar nodes; it loads mod_pep) and answers
    # vcard-temp gets by converting back. Prosody's own default config.
    "vcard+avatar-hash": (("vcard", "vcard_update"), ("vcard_legacy",)),
    # XEP-0163 PEP with XEP-0115 caps-based implicit subscriptions
    # (``<node>+notify``): xmppd's ``caps`` (learns each hash's features with
    # one disco#info query) and ``pep``; Prosody's mod_pep, which does both.
    "pep": (("caps", "pep"), ("pep",)),
    # XEP-0045 multi-user chat on MUC_DOMAIN: xmppd's ``muc`` service,
    # Prosody's ``muc`` plugin as a Component (PROSODY_COMPONENTS), not a
    # module of the VirtualHost.
    "muc": (("muc",), ("muc",)),
    # XMPP over WebSocket (RFC 7395) at /xmpp-websocket on a loopback HTTP
    # port (``Server.http_port``): xmppd's ``[http]`` service with only its
    # ``websocket`` endpoint (no component), Prosody's mod_websocket (which
    # loads mod_http) with ``http_ports``. Both count a loopback WebSocket as
    # secure (xmppd by itself, Prosody with ``consider_websocket_secure``).
    "websocket": ((), ("websocket",)),
    # XMPP over BOSH (XEP-0124, XEP-0206) at /http-bind on the same kind of
    # port: xmppd's ``[http]`` service with only its ``bosh`` endpoint,
    # Prosody's mod_bosh (which loads mod_http), both counting loopback
    # BOSH as secure (Prosody with ``consider_bosh_secure``).
    "bosh": ((), ("bosh",)),
    # XEP-0313 message archives (every chat message archived for its sender
    # and its recipient): xmppd's ``mam`` on its SQLite storage, Prosody's
    # mod_mam on mod_storage_sql with SQLite (Debian's lua-dbi-sqlite3; its
    # default file storage is about ten times slower). Both keep the archive
    # for ever and count each query's total (XMPPD_MAM, PROSODY_MAM).
    "mam": (("mam",), ("mam",)),
}

#: xmppd's ``[component:mam]`` in the bench: no expiry (the seeded archive
#: spans a year) and no quota below the million seeded messages.
XMPPD_MAM = {"archive_expires_after": "never", "max_archive_items": "10000000"}
#: Prosody's archive options with the ``mam`` extra: its SQL storage for the
#: archive (everything else stays in its files), the same expiry, and the
#: totals counted (Prosody stops counting by default when nothing expires).
PROSODY_MAM = ('default_storage = "internal"\nstorage = {{ archive = "sql" }}\n'
               'sql = {{ driver = "SQLite3", database = "{data}/archive.sqlite" }}\n'
               'archive_expires_after = "never"\nmam_include_total = true\n')

#: Extras served on the HTTP port (``Server.http_port``), by endpoint name.
HTTP_EXTRAS = ("websocket", "bosh")

#: The chat service's domain in both servers (the ``muc`` extra).
MUC_DOMAIN = f"conference.{DOMAIN}"

#: Prosody plugins an extra names that are components of their own domain
#: (``Component "conference.localhost" "muc"``) rather than modules of the
#: VirtualHost.
PROSODY_COMPONENTS = {"muc": MUC_DOMAIN}

#: xmppd's ``[component:muc]`` in the bench. Prosody 0.12's mod_muc limits no
#: one's message rate (that is the community module mod_muc_limits), so
#: xmppd's per-occupant limit (10/s, burst 20, by default) is lifted far
#: above what one sender reaches; everything else stays at its default, as
#: Prosody's does (history 20 messages, occupant id on, rooms locked until
#: the creator configures them or accepts the instant room).
XMPPD_MUC = {"domain": MUC_DOMAIN, "message_rate": "1000000", "message_burst": "1000000",
             # Prosody's MUC here has no mod_muc_mam: no room archive either
             "archive": "false"}

#: xmppd components on by default that no scenario's Prosody has a module
#: for: left out of every run (the pubsub service, bookmarks and vCard4 are
#: built on PEP and would only add hooks to the other scenarios' paths; client
#: state indication and push, which Prosody has as modules its bench config
#: does not load).
XMPPD_ONLY = ("pubsub", "bookmarks", "vcard4", "csi", "push")


def roster_item_name(i: int) -> str:
    return f"Contact {user_name(i)}"


def tls_libraries() -> str:
    """Which OpenSSL each server links: xmppd the one in the ``cryptography``
    wheel (through pyOpenSSL), Prosody the system's (through LuaSec)."""
    try:
        from OpenSSL import SSL
        ours = SSL.SSLeay_version(SSL.SSLEAY_VERSION).decode()
    except ImportError:
        ours = "?"
    try:
        system = subprocess.run(["openssl", "version"], capture_output=True,
                                text=True).stdout.split(" (Library")[0].strip()
    except OSError:
        system = "?"
    return f"xmppd {ours}, Prosody {system or '?'} (system)"


def user_name(i: int) -> str:
    return f"u{i}"


def free_port(ip: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


#: the server-to-server port (RFC 6120), on each s2s server's own address
S2S_PORT = 5269


@dataclass
class S2S:
    """What one server of an s2s pair needs to federate with its peer:
    ``ca_file`` is the test CA both servers trust (SASL EXTERNAL, XEP-0178,
    is then the only authentication: no dialback in either), ``peers`` maps
    the other domain to its address (xmppd routes there with
    ``[s2s:routes]``; Prosody finds it through DNS in ``names``, a
    ``testdns.NameWorld`` whose private namespace it runs in), and
    ``prosody_plugins`` are Lua modules (name → source) Prosody loads
    beside its own, such as the federation fixtures' log of how each link
    authenticated."""
    ca_file: Path
    peers: dict[str, str]
    names: Any = None
    prosody_plugins: dict[str, str] = field(default_factory=dict)


def _scram_sha1_keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha1", password.encode(), salt, iterations)
    stored = hashlib.sha1(hmac.digest(salted, b"Client Key", "sha1")).digest()
    server = hmac.digest(salted, b"Server Key", "sha1")
    return stored, server


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """One self-signed P-256 certificate for ``localhost``, shared by both servers."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    if not cert.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-days", "30", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key),
                        "-out", str(cert)], check=True, capture_output=True)
    return cert, key


class Server:
    """A server process under test: start, stop, and read its memory and CPU."""

    name = "?"

    def __init__(self, workdir: Path, cert: tuple[Path, Path], starttls_required: bool, *,
                 domain: str = DOMAIN, ip: str = "127.0.0.1", s2s: S2S | None = None,
                 label: str = ""):
        """``cert``: (certificate chain, key) PEM files. ``domain`` it
        serves, ``ip`` it listens on, ``s2s`` to federate (off without);
        ``label`` names its directory beside the other server of a pair."""
        self.dir = workdir / (label or self.name)
        self.cert = cert
        self.tls = starttls_required
        self.domain = domain
        self.ip = ip
        self.s2s = s2s
        self.port = 0
        #: the HTTP port of the ``websocket`` and ``bosh`` extras (0 without them)
        self.http_port = 0
        self.process: subprocess.Popen | None = None

    # -- life cycle ------------------------------------------------------------------

    def start(self, users: int, rosters: dict[int, list[int]] | None = None,
              extras: tuple[str, ...] = ()) -> None:
        """Start on a fresh directory with ``users`` accounts; ``rosters`` maps a
        user to its contacts, written straight into storage as mutual
        subscriptions (``both``), each in the group "Bench"; ``extras`` names
        features of :data:`EXTRAS` to enable."""
        unknown = [e for e in extras if e not in EXTRAS]
        if unknown:
            raise ValueError(f"unknown extras {unknown}")
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        self.port = free_port(self.ip)
        self.http_port = free_port() if set(extras) & set(HTTP_EXTRAS) else 0
        self.rosters = rosters or {}
        self.extras = tuple(extras)
        self.prepare(users)
        self.process = self.spawn()
        deadline = time.monotonic() + 30
        waiting = [(ip, p) for ip, p in ((self.ip, self.port), ("127.0.0.1", self.http_port),
                                          (self.ip, S2S_PORT if self.s2s else 0)) if p]
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log_tail()}")
            try:
                with socket.create_connection(waiting[0], timeout=1):
                    waiting.pop(0)
                    if not waiting:
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen on {waiting}:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def prepare(self, users: int) -> None:
        raise NotImplementedError

    def spawn(self) -> subprocess.Popen:
        raise NotImplementedError

    def log_tail(self) -> str:
        return ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def pids(self) -> dict[str, int]:
        """The processes to profile, by a suffix for their file name."""
        return {"": self.pid}

    # -- measurements ----------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Xmppd(Server):
    name = "xmppd"

    def prepare(self, users: int) -> None:
        cert, key = self.cert
        data = self.dir / "data"
        data.mkdir()
        (self.dir / "xmppd.ini").write_text(f"""\
[server]
domains = {self.domain}
data_dir = {data}
storage = sqlite:xmppd.sqlite3
certificate = {cert}
private_key = {key}
scram_iterations = {ITERATIONS}
{self._components()}{self._component_sections()}
[c2s]
interfaces = {self.ip}
port = {self.port}
direct_tls_port = 0
require_encryption = {"true" if self.tls else "false"}

[component:offline]
max_messages = 20000

{self._http()}
{self._s2s()}""")
        stored, server = _scram_sha1_keys(PASSWORD, SALT.encode(), ITERATIONS)
        entry = [base64.b64encode(x).decode() for x in (SALT.encode(), stored, server)] + [ITERATIONS]
        record = json.dumps({"SCRAM-SHA-1": entry}, separators=(",", ":"))
        db = sqlite3.connect(data / "xmppd.sqlite3")
        # The schema is xmppd's own (xmppd/storage/sqlite.py); it creates the
        # rest itself at start.
        db.execute("CREATE TABLE IF NOT EXISTS kv (store TEXT NOT NULL, user TEXT NOT NULL,"
                   " value TEXT NOT NULL, PRIMARY KEY (store, user))")
        db.executemany("INSERT INTO kv VALUES ('accounts', ?, ?)",
                       ((f"{user_name(i)}@{self.domain}", record) for i in range(users)))
        if self.rosters:
            # The roster component's map store (xmppd/components/roster.py):
            # one row per contact, and the key "" for the roster's version.
            db.execute("CREATE TABLE IF NOT EXISTS map (store TEXT NOT NULL, user TEXT NOT NULL,"
                       " key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (store, user, key))")
            rows = []
            for i, contacts in self.rosters.items():
                user = f"{user_name(i)}@{self.domain}"
                rows.append((user, "", json.dumps({"version": 1, "epoch": "bench", "oldest": 0})))
                for j in contacts:
                    rows.append((user, f"{user_name(j)}@{self.domain}", json.dumps(
                        {"name": roster_item_name(j), "groups": ["Bench"], "subscription": "both",
                         "ask": False, "pending_in": None, "approved": False, "listed": True,
                         "ver": 1}, separators=(",", ":"))))
            db.executemany("INSERT INTO map VALUES ('roster', ?, ?, ?)", rows)
        db.commit()
        db.close()

    def _components(self) -> str:
        """The ``components`` line: xmppd's default list (read from the tree
        under test) without the components of extras this scenario does not
        enable (xmppd enables ``vcard``, ``caps`` and ``pep`` by default,
        Prosody's bench config has no vCard or PEP module) and without
        :data:`XMPPD_ONLY`, plus those of the extras it enables."""
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        from xmppd.components import BUILTIN
        from xmppd.config import CORE_OPTIONS
        wanted = [c for extra in self.extras for c in EXTRAS[extra][0]]
        missing = [c for c in wanted if c not in BUILTIN]
        if missing:
            raise RuntimeError(f"xmppd has no component {', '.join(missing)} (xmppd/components/"
                               f"__init__.py BUILTIN); the scenario needs it")
        optional = {c for ours, _ in EXTRAS.values() for c in ours} | set(XMPPD_ONLY)
        default = next(o.default for o in CORE_OPTIONS["server"] if o.name == "components").split()
        names = [c for c in default if c not in optional or c in wanted]
        names += [c for c in dict.fromkeys(wanted) if c not in names]
        return "components = " + " ".join(names) + "\n"

    def _component_sections(self) -> str:
        """``[component:…]`` sections the enabled extras need (the MUC's
        domain and rate limit, :data:`XMPPD_MUC`; the archive's, :data:`XMPPD_MAM`)."""
        sections = ""
        if "muc" in self.extras:
            sections += "\n[component:muc]\n" + "".join(f"{k} = {v}\n" for k, v in XMPPD_MUC.items())
        if "mam" in self.extras:
            sections += "\n[component:mam]\n" + "".join(f"{k} = {v}\n" for k, v in XMPPD_MAM.items())
        return sections

    def _http(self) -> str:
        """``[http]``: off, or with the ``websocket`` or ``bosh`` extra a
        loopback port serving that endpoint alone (as Prosody's mod_websocket
        or mod_bosh is its only HTTP module here)."""
        if not self.http_port:
            return "[http]\nport = 0\ntls_port = 0\n"
        endpoints = " ".join(e for e in HTTP_EXTRAS if e in self.extras)
        return (f"[http]\ninterfaces = 127.0.0.1\nport = {self.http_port}\ntls_port = 0\n"
                f"endpoints = {endpoints}\n")

    def _s2s(self) -> str:
        """``[s2s]``: off, as Prosody's ``modules_disabled = { "s2s" }`` (and
        nothing listening on port 5269 of every address); or, with
        :class:`S2S`, on this server's address, the test CA trusted, SASL
        EXTERNAL alone (``secure_auth``, no dialback, as Prosody's
        ``s2s_secure_auth`` without mod_dialback), the peer found through
        ``[s2s:routes]``. ``max_stanza_rate`` (1 000 stanzas a second per
        incoming link by default, then xmppd reads the link more slowly) is
        lifted: Prosody 0.12 limits no s2s rate unless mod_limits is loaded,
        which neither its default configuration nor the bench's does."""
        if self.s2s is None:
            return "[s2s]\nenabled = false\n"
        routes = "".join(f"{domain} = {ip}:{S2S_PORT}\n" for domain, ip in self.s2s.peers.items())
        return (f"[s2s]\ninterfaces = {self.ip}\nport = {S2S_PORT}\ndirect_tls_port = 0\n"
                f"ca_file = {self.s2s.ca_file}\nsecure_auth = true\nrequire_encryption = true\n"
                f"dialback = false\nmax_stanza_rate = 0\n\n[s2s:routes]\n{routes}")

    def spawn(self) -> subprocess.Popen:
        twistd = Path(sys.executable).with_name("twistd")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        return subprocess.Popen(
            [str(twistd), "-n", "--pidfile=", "--logfile", str(self.dir / "xmppd.log"),
             "xmppd", "-c", str(self.dir / "xmppd.ini")],
            cwd=self.dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def log_tail(self) -> str:
        path = self.dir / "xmppd.log"
        return path.read_text()[-3000:] if path.exists() else ""


class Prosody(Server):
    name = "prosody"

    def prepare(self, users: int) -> None:
        cert, key = self.cert
        data = self.dir / "data"
        host = data / self.domain.replace(".", "%2e")
        (host / "accounts").mkdir(parents=True)
        (self.dir / "certs").mkdir()  # where Prosody looks for more certificates
        stored, server = _scram_sha1_keys(PASSWORD, SALT.encode(), ITERATIONS)
        account = (f'return {{ ["iteration_count"] = {ITERATIONS}; ["salt"] = "{SALT}"; '
                   f'["stored_key"] = "{stored.hex()}"; ["server_key"] = "{server.hex()}"; }};\n')
        for i in range(users):
            (host / "accounts" / f"{user_name(i)}.dat").write_text(account)
        if self.rosters:
            # Prosody's roster store (core/rostermanager.lua): a keyval entry per
            # user, contacts by bare JID, metadata under the key false.
            (host / "roster").mkdir()
            for i, contacts in self.rosters.items():
                items = "".join(
                    f'\t["{user_name(j)}@{self.domain}"] = {{ ["subscription"] = "both"; '
                    f'["name"] = "{roster_item_name(j)}"; ["groups"] = {{ ["Bench"] = true; }}; }};\n'
                    for j in contacts)
                (host / "roster" / f"{user_name(i)}.dat").write_text(
                    f'return {{\n\t[false] = {{ ["version"] = 1; ["pending"] = {{}}; }};\n{items}}};\n')
        plugins = [m for extra in self.extras for m in EXTRAS[extra][1]]
        modules = "".join(f' "{m}";' for m in plugins if m not in PROSODY_COMPONENTS)
        components = "".join(f'Component "{PROSODY_COMPONENTS[m]}" "{m}"\n'
                             for m in dict.fromkeys(plugins) if m in PROSODY_COMPONENTS)
        for name in ("cert.pem", "key.pem"):
            shutil.copy(cert if name == "cert.pem" else key, self.dir / name)
        tls = "true" if self.tls else "false"
        http_ports = f"{{ {self.http_port} }}" if self.http_port else "{}"
        # a loopback WebSocket counts as secure, as xmppd counts it
        websocket = "consider_websocket_secure = true\n" if "websocket" in self.extras else ""
        websocket += "consider_bosh_secure = true\n" if "bosh" in self.extras else ""
        own_plugins = cafile = ""
        if self.s2s is not None:
            shutil.copy(self.s2s.ca_file, self.dir / "ca.pem")
            cafile = f' cafile = "{self.dir}/ca.pem";'
            if self.s2s.prosody_plugins:
                (self.dir / "plugins").mkdir()
                for name, source in self.s2s.prosody_plugins.items():
                    (self.dir / "plugins" / f"mod_{name}.lua").write_text(source)
                own_plugins = "".join(f' "{name}";' for name in self.s2s.prosody_plugins)
        (self.dir / "prosody.cfg.lua").write_text(f"""\
daemonize = false
data_path = "{data}"
certificates = "{self.dir}/certs"
plugin_paths = {{{f' "{self.dir}/plugins" ' if own_plugins else ""}}}
interfaces = {{ "{self.ip}" }}
local_interfaces = {{ "{self.ip}" }}
c2s_ports = {{ {self.port} }}
legacy_ssl_ports = {{}}
c2s_direct_tls_ports = {{}}
{self._s2s()}http_ports = {http_ports}
https_ports = {{}}
http_interfaces = {{ "127.0.0.1" }}
{websocket}network_backend = "epoll"
-- Nagle's algorithm off: Prosody writes a large result in pieces, and with
-- Nagle on, the last piece waits for the client's delayed ACK (40 ms here).
network_settings = {{ nagle = false }}
log = {{ info = "{self.dir}/prosody.log" }}
admin = {{}}
authentication = "internal_hashed"
default_iteration_count = {ITERATIONS}
{PROSODY_MAM.format(data=data) if "mam" in self.extras else 'storage = "internal"'}
c2s_require_encryption = {tls}
allow_unencrypted_plain_auth = false
allow_registration = false
modules_enabled = {{
    "roster"; "saslauth"; "tls"; "disco"; "carbons"; "private"; "blocklist";
    "lastactivity"; "version"; "uptime"; "time"; "ping";{modules}{own_plugins}
}}
modules_disabled = {{{"" if self.s2s else ' "s2s" '}}}
ssl = {{ certificate = "{self.dir}/cert.pem"; key = "{self.dir}/key.pem";{cafile} }}
VirtualHost "{self.domain}"
{components}""")
        if os.geteuid() == 0:  # Prosody refuses to run as root: it runs as its own user
            user = pwd.getpwnam("prosody")
            for path in [self.dir, *self.dir.rglob("*")]:
                os.chown(path, user.pw_uid, user.pw_gid)

    def _s2s(self) -> str:
        """The s2s lines: no port without :class:`S2S` (and mod_s2s
        disabled); with it, ``<ip>:5269``, the remote certificate required
        to verify (``s2s_secure_auth``: SASL EXTERNAL; mod_dialback is not
        loaded) and TLS required, the peer found by DNS with libunbound
        (lua-unbound) reading the namespace's hosts file, as the federation
        fixtures run it (``tests/e2e/prosody.py``)."""
        if self.s2s is None:
            return "s2s_ports = {}\n"
        return (f's2s_ports = {{ {S2S_PORT} }}\ns2s_interfaces = {{ "{self.ip}" }}\n'
                "s2s_secure_auth = true\ns2s_require_encryption = true\n"
                "unbound = { hoststxt = true; resolvconf = true; }\n")

    def spawn(self) -> subprocess.Popen:
        prosody = shutil.which("prosody")
        if prosody is None:
            raise RuntimeError("prosody is not installed (apt-get install prosody)")
        if self.s2s is not None and self.s2s.names is not None:
            # The namespace with the names is made as root, then the process
            # becomes prosody (it refuses root); unshare and sh exec, so the
            # pid is Prosody's. SIGTERM if the runner dies first.
            return subprocess.Popen(
                self.s2s.names.wrap(["setpriv", "--reuid=prosody", "--regid=prosody",
                                     "--init-groups", "--pdeathsig", "TERM", "--", prosody,
                                     "--config", str(self.dir / "prosody.cfg.lua")]),
                cwd=self.dir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT)
        as_user = {}
        if os.geteuid() == 0:
            user = pwd.getpwnam("prosody")
            as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        return subprocess.Popen([prosody, "--config", str(self.dir / "prosody.cfg.lua")],
                                cwd=self.dir, stdout=subprocess.DEVNULL,
                                stderr=subprocess.STDOUT, **as_user)

    def log_tail(self) -> str:
        path = self.dir / "prosody.log"
        return path.read_text()[-3000:] if path.exists() else ""


SERVERS = {"xmppd": Xmppd, "prosody": Prosody}
