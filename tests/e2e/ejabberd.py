"""A private ejabberd 23.01 (Debian's package) for federation tests.

The second real server xmppd federates with. It runs as its own Erlang node
straight from ``erl`` — not through ``ejabberdctl``, which would use the
machine's ``/etc/ejabberd`` and the shared epmd — with, all in a directory
of its own: the YAML config, the Mnesia spool, the logs and ``HOME`` (where
Erlang writes its cookie). The node is named per run
(``xmppd-ejabberd-<random>@localhost``) but neither listens for Erlang
distribution nor registers with epmd (``-start_epmd false -dist_listen
false``): no epmd is started, none is needed, and no port but its XMPP ones
is held. Accounts are made by the node itself right after ejabberd has
started (``-eval`` with ``ejabberd_auth:try_register``), which also marks
it ready; SIGTERM stops it (Erlang's init:stop), SIGKILL if it lingers.

It listens on c2s (STARTTLS required, a free port on its ``ip``) and s2s on
``<ip>:5269``. The s2s options the interop tests vary:

``certificate``/``private_key``, ``ca_file``
    its certificate (PEM) and the CAs it trusts for SASL EXTERNAL;
``starttls``
    ``s2s_use_starttls``: "required", "optional" or "false";
``dialback``
    load mod_s2s_dialback (XEP-0220); without it only certificates count;
``secure_auth``
    with dialback: still verify the certificates of the servers it connects
    to (ejabberd skips that for servers that dialback may serve, and only
    then tries SASL EXTERNAL before dialback).

MUC (``conference.<domain>``), vCard, version, ping, disco, roster and
offline messages are on. :func:`ensure_installed` installs the package when
it is missing; where it cannot, :class:`EjabberdUnavailable` (tests skip).
"""

from __future__ import annotations

import ctypes
import glob
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterable

from prosody import install_debian_package, terminate

ERL = "/usr/bin/erl"
EJABBERDCTL = "/usr/sbin/ejabberdctl"
STARTUP_TIMEOUT = 30.0
#: printed by the node once ejabberd runs and the accounts exist
READY = "xmppd-fixture-ready"

#: ejabberd's info line for each s2s link that authenticated: direction,
#: mechanism ("EXTERNAL", "dialback"), then sender -> receiver
AUTH_LINE = re.compile(r"Accepted (inbound|outbound) s2s (\S+) authentication (\S+) -> (\S+)")

#: modules besides the s2s ones (mod_muc is added with ``muc``)
MODULES = ("mod_disco", "mod_ping", "mod_roster", "mod_version", "mod_vcard", "mod_offline",
           "mod_time")


class EjabberdUnavailable(RuntimeError):
    """Debian's ejabberd is not installed and cannot be installed here."""


def ensure_installed() -> str:
    """The path of ``erl`` with ejabberd's code; install ejabberd if it is missing."""
    install_debian_package("ejabberd", EJABBERDCTL, EjabberdUnavailable)
    if not os.path.exists(ERL) or not _erl_libs():
        raise EjabberdUnavailable("ejabberd is installed but erl or its ejabberd-*/ebin is missing")
    return ERL


def _erl_libs() -> str:
    """The directory holding ``ejabberd-<version>/`` (Debian: /usr/lib/<arch>)."""
    for app in sorted(glob.glob("/usr/lib/*/ejabberd-*/ebin/ejabberd.app")):
        return str(Path(app).parents[2])
    return ""


def _die_with_parent() -> None:
    """In the child: SIGTERM when the parent (thread) dies (PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


def _free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def _yaml(value: str | os.PathLike) -> str:
    """A YAML double-quoted string."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _erl_binary(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'unicode:characters_to_binary("{escaped}")'


class EjabberdProcess:
    """One private ejabberd serving ``domain``: :meth:`start`, :meth:`stop`."""

    def __init__(self, domain: str, users: Iterable[str] = (), password: str = "secret123", *,
                 ip: str = "127.0.0.1", s2s: bool = True,
                 certificate: str | os.PathLike | None = None,
                 private_key: str | os.PathLike | None = None,
                 ca_file: str | os.PathLike | None = None, starttls: str = "required",
                 dialback: bool = True, secure_auth: bool = False, muc: bool = True,
                 modules: Iterable[str] = MODULES, names=None, log_level: str = "info",
                 extra_config: str = "", directory: str | os.PathLike | None = None):
        if starttls not in ("required", "optional", "false"):
            raise ValueError(f"starttls: required, optional or false, not {starttls!r}")
        self.domain = domain
        self.users = list(users)
        self.password = password
        #: where it listens: c2s on ``port``, s2s on ``s2s_port`` (5269)
        self.host = ip
        self.s2s_port = 5269 if s2s else 0
        self.certificate = certificate
        self.private_key = private_key
        self.ca_file = ca_file
        self.starttls = starttls
        self.dialback = dialback
        self.secure_auth = secure_auth
        self.muc_domain = f"conference.{domain}" if muc else ""
        self.modules = list(modules)
        #: a :class:`testdns.NameWorld` to run in (how it finds the other servers)
        self.names = names
        self.log_level = log_level
        #: YAML appended to the config (top-level options)
        self.extra_config = extra_config
        self._given_dir = Path(directory) if directory is not None else None
        self.node = f"xmppd-ejabberd-{secrets.token_hex(4)}@localhost"
        self.port = 0
        self.dir: Path | None = None
        self.process: subprocess.Popen | None = None
        self._output = None
        #: seconds the last :meth:`start` took until ready
        self.startup_time = 0.0
        self._began = 0.0

    # -- where clients connect -------------------------------------------------

    @property
    def client_host(self) -> str:
        return self.host

    @property
    def client_port(self) -> int:
        return self.port

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> "EjabberdProcess":
        """Start it and return once it is ready (accounts made, ports open)."""
        return self.spawn().wait_ready()

    def spawn(self) -> "EjabberdProcess":
        """Start the node, not waiting for it (:meth:`wait_ready` does), so a
        caller can start other servers meanwhile — from the same thread: the
        node gets SIGTERM when the thread that started it ends (so that a
        test process killed outright leaves no node behind)."""
        erl = ensure_installed()
        self._began = time.monotonic()
        if self._given_dir is not None:
            self.dir = self._given_dir
            self.dir.mkdir(parents=True, exist_ok=True)
        else:
            self.dir = Path(tempfile.mkdtemp(prefix="xmppd-ejabberd-"))
        self.port = _free_port(self.host)
        self._prepare()
        command = [erl, "-sname", self.node, "-start_epmd", "false", "-dist_listen", "false",
                   "-noinput",
                   # no scheduler busy-waiting: the test machine's cores are shared
                   "+sbwt", "none", "+sbwtdcpu", "none", "+sbwtdio", "none",
                   "-mnesia", "dir", f'"{self.dir / "spool"}"',
                   "-s", "ejabberd", "-eval", self._ready_script()]
        if self.names is not None:
            command = self.names.wrap(command)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ERL_", "EJABBERD"))}
        env.update(HOME=str(self.dir), ERL_LIBS=_erl_libs(),
                   EJABBERD_CONFIG_PATH=str(self.dir / "ejabberd.yml"),
                   EJABBERD_LOG_PATH=str(self.dir / "logs" / "ejabberd.log"),
                   ERL_CRASH_DUMP=str(self.dir / "logs" / "erl_crash.dump"))
        self._output = open(self.dir / "stdout.log", "wb")
        self.process = subprocess.Popen(command, cwd=self.dir, env=env, stdin=subprocess.DEVNULL,
                                        stdout=self._output, stderr=subprocess.STDOUT,
                                        preexec_fn=_die_with_parent)
        return self

    def wait_ready(self) -> "EjabberdProcess":
        assert self.process is not None, "spawn() first"
        deadline = self._began + STARTUP_TIMEOUT
        while True:
            output = self.stdout_text()
            if self.process.poll() is not None:
                raise RuntimeError(f"ejabberd exited at start ({self.process.returncode}):\n"
                                   f"{self.log_tail()}")
            if READY in output:
                line = output[output.index(READY):].splitlines()[0]
                if "error" in line:
                    tail = self.log_tail()
                    self.stop()
                    raise RuntimeError(f"ejabberd could not create the accounts: {line}\n{tail}")
                if self._listening():
                    self.startup_time = time.monotonic() - self._began
                    return self
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(f"ejabberd was not ready within {STARTUP_TIMEOUT}s:\n{tail}")
            time.sleep(0.05)

    def _listening(self) -> bool:
        try:
            for port in (self.port, self.s2s_port):
                if port:
                    with socket.create_connection((self.host, port), timeout=0.5):
                        pass
        except OSError:
            return False
        return True

    def _ready_script(self) -> str:
        accounts = ", ".join(
            f"{{{_erl_binary(jid.split('@', 1)[0])}, {_erl_binary(self.domain)}, "
            f"{_erl_binary(self.password)}}}" for jid in self.users)
        # an account that exists (a restart on the same spool) is fine
        return (f"R = [case ejabberd_auth:try_register(U, H, P) of {{error, exists}} -> ok; "
                f"Other -> Other end || {{U, H, P}} <- [{accounts}]], "
                f'io:format("{READY} ~p~n", [R]).')

    def _prepare(self) -> None:
        assert self.dir is not None
        (self.dir / "logs").mkdir(exist_ok=True)
        (self.dir / "spool").mkdir(exist_ok=True)
        if self.certificate is None:
            from testca import self_signed
            made = self_signed(self.dir / "certs", self.domain)
            certificate, key = made.cert, made.key
        else:
            certificate = self.certificate
            key = self.private_key if self.private_key is not None else certificate
        certfiles = [certificate] if key == certificate else [certificate, key]
        modules = [f"  {m}: {{}}" for m in self.modules]
        if self.muc_domain:
            modules.append(f"  mod_muc:\n    hosts: [{_yaml(self.muc_domain)}]\n"
                           "    access_create: local")
        if self.dialback:
            modules.append("  mod_s2s_dialback:\n    access: "
                           + ("none" if self.secure_auth else "all"))
        lines = [
            f"hosts: [{_yaml(self.domain)}]",
            f"loglevel: {self.log_level}",
            "log_rotate_count: 0",
            "hide_sensitive_log_data: false",
            "certfiles:",
            *(f"  - {_yaml(f)}" for f in certfiles),
        ]
        if self.ca_file is not None:
            lines.append(f"ca_file: {_yaml(self.ca_file)}")
        lines += [
            f"s2s_use_starttls: {self.starttls}",
            # A failed link bounces stanzas for up to this long (default 300 s).
            "s2s_max_retry_delay: 2",
            "s2s_dns_timeout: 2",
            "s2s_dns_retries: 1",
            "outgoing_s2s_families: [ipv4]",
            "outgoing_s2s_timeout: 10",
            "negotiation_timeout: 10",
            "auth_method: internal",
            "auth_password_format: plain",
            "acl:",
            "  local:",
            '    user_regexp: ""',
            "access_rules:",
            "  c2s:",
            "    allow: all",
            "  local:",
            "    allow: local",
            "shaper_rules:",
            "  max_user_sessions: 10",
            "listen:",
            "  - port: %d" % self.port,
            f"    ip: {_yaml(self.host)}",
            "    module: ejabberd_c2s",
            "    starttls_required: true",
        ]
        if self.s2s_port:
            lines += [f"  - port: {self.s2s_port}",
                      f"    ip: {_yaml(self.host)}",
                      "    module: ejabberd_s2s_in"]
        lines += ["modules:", *modules, self.extra_config, ""]
        (self.dir / "ejabberd.yml").write_text("\n".join(lines))

    def stop(self) -> None:
        """SIGTERM (init:stop), SIGKILL if it lingers; a directory it made
        itself is removed (one it was given is left for the test's tmp)."""
        if self.process is not None:
            terminate(self.process)
            self.process = None
        if self._output is not None:
            self._output.close()
            self._output = None
        if self.dir is not None and self._given_dir is None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def kill(self) -> None:
        """SIGKILL, for a teardown that must not wait."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.stop()

    # -- inspection ---------------------------------------------------------------

    def stdout_text(self) -> str:
        if self.dir is None or not (self.dir / "stdout.log").exists():
            return ""
        return (self.dir / "stdout.log").read_text(errors="replace")

    def log_text(self) -> str:
        """ejabberd's log (``log_level`` and above)."""
        if self.dir is None:
            return ""
        path = self.dir / "logs" / "ejabberd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        text = self.stdout_text() + self.log_text()
        return "\n".join(text.splitlines()[-lines:])

    def s2s_authentications(self) -> list[tuple[str, str, str, str]]:
        """Every s2s link that authenticated so far, in order, as
        ``(direction, local domain, remote domain, mechanism)`` — the same
        shape as :meth:`prosody.ProsodyProcess.s2s_authentications`."""
        result = []
        for direction, mechanism, sender, receiver in AUTH_LINE.findall(self.log_text()):
            if direction == "inbound":
                result.append(("incoming", receiver, sender, mechanism))
            else:
                result.append(("outgoing", sender, receiver, mechanism))
        return result

    def __repr__(self) -> str:
        return f"<EjabberdProcess {self.domain} {self.host}:{self.port} node={self.node} dir={self.dir}>"
