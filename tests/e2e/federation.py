"""Federation fixtures: a real Prosody and a real ejabberd beside xmppd.

One :class:`Federation` is three XMPP domains on loopback addresses of
their own, picked at random per test session so that two runs on one
machine never share ``<ip>:5269``::

    xmppd.test     (+ conference.xmppd.test)     127.R.S.2  the xmppd under test
    prosody.test   (+ conference.prosody.test)   127.R.S.3  Debian's Prosody 0.12
    ejabberd.test  (+ conference.ejabberd.test)  127.R.S.4  Debian's ejabberd 23.01
    (the stub DNS server of :mod:`testdns`)      127.R.S.1

Prosody and ejabberd find each other and xmppd the way they would on the
Internet (SRV, then A records), in private mount namespaces whose DNS and
hosts file know these names (:mod:`testdns`); xmppd finds them through its
own per-domain overrides, ``[s2s:routes]`` (:meth:`Federation.xmppd_overrides`).
Each serves the accounts alice and bob (password ``secret123``) and a MUC
service at ``conference.<domain>``.

Two modes, as the interop tests run each exchange:

``external``
    certificates from one test CA (:mod:`testca`) that every server trusts;
    dialback is off everywhere and Prosody has ``s2s_secure_auth``, so every
    link must authenticate with SASL EXTERNAL (XEP-0178) or fail.
``dialback``
    self-signed certificates that no server trusts: STARTTLS still
    encrypts, and XEP-0220 dialback is what authenticates.

``federation`` is the module-scoped pytest fixture (mode "external" unless
parametrized: ``@pytest.mark.parametrize("federation", ["external",
"dialback"], indirect=True)``); import it into the test module. It starts
Prosody and ejabberd; the test starts its xmppd with
``make_xmppd_module(federation.xmppd_overrides())`` (adding its components).
Where the servers cannot run here (no root for the namespaces, packages
that cannot be installed, port 5269 taken on every address tried), the
fixture skips, saying why.
"""

from __future__ import annotations

import random
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import pytest

from conftest import PASSWORD
from ejabberd import EjabberdProcess, EjabberdUnavailable
from prosody import ProsodyProcess, ProsodyUnavailable
from testca import ServerCertificate, TestCA, self_signed
from testdns import NamesUnavailable, NameWorld, can_bind

XMPPD = "xmppd.test"
PROSODY = "prosody.test"
EJABBERD = "ejabberd.test"
DOMAINS = (XMPPD, PROSODY, EJABBERD)
#: last byte of each domain's address, and of the stub DNS server's
HOST_BYTE = {XMPPD: 2, PROSODY: 3, EJABBERD: 4}
DNS_BYTE = 1
S2S_PORT = 5269
USERS = ("alice", "bob")
MODES = ("external", "dialback")
#: names each domain has besides its own (the servers' MUC services)
SUBDOMAINS = ("conference",)


T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float = 5.0) -> T:
    """The first true value of ``condition()``, polled every 50 ms; its last
    value after ``timeout``. For what the servers log: ejabberd's logger
    writes to its file a moment (up to ~2 s) after the event."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


class FederationUnavailable(RuntimeError):
    """The real servers cannot run here; the message says why."""


def pick_addresses(tries: int = 20) -> str:
    """``127.R.S`` (random) such that .1:53/udp and .2-.4:5269 are free."""
    rng = random.SystemRandom()
    for _ in range(tries):
        prefix = f"127.{rng.randint(1, 254)}.{rng.randint(1, 254)}"
        if can_bind(f"{prefix}.{DNS_BYTE}", 53, socket.SOCK_DGRAM) and all(
                can_bind(f"{prefix}.{b}", S2S_PORT, socket.SOCK_STREAM)
                for b in HOST_BYTE.values()):
            return prefix
    raise FederationUnavailable(
        f"port {S2S_PORT} (or 53) is taken on every loopback address tried: a server "
        f"listening on *:{S2S_PORT} (a system ejabberd or Prosody?) or no permission")


class Federation:
    """Prosody and ejabberd beside the test's xmppd (see the module's doc)."""

    def __init__(self, directory: Path, mode: str = "external",
                 subdomains: Iterable[str] = SUBDOMAINS):
        """``subdomains``: the services each domain has a name for (the
        certificates cover any, ``*.<domain>``)."""
        if mode not in MODES:
            raise ValueError(f"mode: one of {MODES}, not {mode!r}")
        self.mode = mode
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.prefix = pick_addresses()
        #: every domain (and <subdomain>.<domain>) → its loopback address
        self.ip: dict[str, str] = {}
        for domain, last in HOST_BYTE.items():
            for name in (domain, *(f"{sub}.{domain}" for sub in subdomains)):
                self.ip[name] = f"{self.prefix}.{last}"
        self.dns_ip = f"{self.prefix}.{DNS_BYTE}"
        self.names = NameWorld(self.dir / "names", self.ip, self.dns_ip)
        self.ca: TestCA | None = None
        #: each domain's certificate (covering conference.<domain> and *.<domain>)
        self.certificates: dict[str, ServerCertificate] = {}
        self.prosody: ProsodyProcess | None = None
        self.ejabberd: EjabberdProcess | None = None

    # -- what the tests use -------------------------------------------------------

    @property
    def secure(self) -> bool:
        """Certificates are trusted (mode "external")."""
        return self.mode == "external"

    @property
    def ca_file(self) -> Path | None:
        """The test CA every server trusts (None in mode "dialback")."""
        return self.ca.ca_file if self.ca is not None else None

    @property
    def xmppd_ip(self) -> str:
        return self.ip[XMPPD]

    def users(self, domain: str) -> list[str]:
        """The bare JIDs of the accounts at ``domain``."""
        return [f"{user}@{domain}" for user in USERS]

    def xmppd_overrides(self) -> dict[str, dict[str, Any]]:
        """The configuration for ``make_xmppd``/``make_xmppd_module``:
        xmppd.test on the federation's address with its certificate, s2s
        trust as the mode says, and routes to the other servers (the caller
        adds ``server.components`` and its [component:...] sections)."""
        certificate = self.certificates[XMPPD]
        routes = {name: f"{ip}:{S2S_PORT}" for name, ip in self.ip.items()
                  if name.endswith((PROSODY, EJABBERD))}
        return {
            "server": {"domains": XMPPD, "certificate": str(certificate.chain),
                       "private_key": str(certificate.key)},
            "s2s": {"interfaces": self.xmppd_ip, "port": S2S_PORT,
                    "ca_file": str(self.ca_file) if self.ca_file else "",
                    "secure_auth": "true" if self.secure else "false",
                    # external: nothing to fall back on, so EXTERNAL is what is tested
                    "dialback": "false" if self.secure else "true"},
            "s2s:routes": routes,
        }

    # -- lifecycle --------------------------------------------------------------------

    def start(self, prosody: bool = True, ejabberd: bool = True) -> "Federation":
        """Certificates, names, and the servers asked for (started side by
        side); raise :class:`FederationUnavailable` where they cannot run."""
        try:
            self._certificates()
            self.names.start()
            if prosody:
                self.prosody = self._prosody()
            if ejabberd:
                self.ejabberd = self._ejabberd()
            # ejabberd takes longest: Prosody starts while its node boots
            # (both from this thread: they die with the thread that started them).
            if self.ejabberd is not None:
                self.ejabberd.spawn()
            if self.prosody is not None:
                self.prosody.start()
            if self.ejabberd is not None:
                self.ejabberd.wait_ready()
        except (NamesUnavailable, ProsodyUnavailable, EjabberdUnavailable) as e:
            self.stop()
            raise FederationUnavailable(str(e)) from None
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the servers (side by side: each takes about a second) and the DNS stub."""
        def stop(server) -> None:
            try:
                if isinstance(server, ProsodyProcess) and server.dir is not None:
                    # its directory goes with it: keep the log for a post-mortem
                    (self.dir / "prosody.log").write_text(server.log_text())
                server.stop()
            except Exception:  # noqa: BLE001 - teardown must reach every server
                if server.process is not None:
                    server.process.kill()
        servers = [s for s in (self.prosody, self.ejabberd) if s is not None]
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(stop, servers))
        self.names.stop()

    def _certificates(self) -> None:
        if self.secure:
            self.ca = TestCA(self.dir / "ca")
            for domain in DOMAINS:
                self.certificates[domain] = self.ca.issue(domain)
        else:
            for domain in DOMAINS:
                self.certificates[domain] = self_signed(self.dir / "untrusted", domain)

    def _prosody(self) -> ProsodyProcess:
        certificate = self.certificates[PROSODY]
        return ProsodyProcess(
            self.users(PROSODY), PASSWORD,
            ("roster", "saslauth", "tls", "disco", "ping", "version", "vcard"),
            domain=PROSODY, ip=self.ip[PROSODY], s2s=True, muc=True,
            certificate=certificate.chain, private_key=certificate.key, ca_file=self.ca_file,
            s2s_secure_auth=self.secure, s2s_require_encryption=True,
            dialback=not self.secure, names=self.names)

    def _ejabberd(self) -> EjabberdProcess:
        certificate = self.certificates[EJABBERD]
        return EjabberdProcess(
            EJABBERD, self.users(EJABBERD), PASSWORD, ip=self.ip[EJABBERD],
            certificate=certificate.cert, private_key=certificate.key, ca_file=self.ca_file,
            starttls="required", dialback=not self.secure, secure_auth=self.secure, muc=True,
            names=self.names, directory=self.dir / "ejabberd")

    def __repr__(self) -> str:
        return f"<Federation {self.mode} {self.prefix}.x {self.prosody} {self.ejabberd}>"


@pytest.fixture(scope="module")
def federation(request, tmp_path_factory):
    """A started :class:`Federation` (Prosody and ejabberd) shared by the
    module's tests, per mode (``request.param``; "external" by default)."""
    mode = getattr(request, "param", "external")
    try:
        fed = Federation(tmp_path_factory.mktemp(f"federation-{mode}"), mode).start()
    except FederationUnavailable as e:
        pytest.skip(f"federation fixtures unavailable: {e}")
    yield fed
    fed.stop()
