"""Names for the real servers of a federation test, without touching the machine.

Prosody and ejabberd find a remote server the way they would on the
Internet: an SRV lookup of ``_xmpp-server._tcp.<domain>`` (and
``_xmpps-server``), then, when that fails, the A/AAAA records of the domain
itself on port 5269. Neither has an option that maps a domain to an address,
so a test gives them a world of their own instead:

* :class:`StubDNS`, a tiny DNS server on ``<ip>:53`` of the test's own
  loopback addresses, that knows the A records of the test's domains and
  answers every other question NXDOMAIN at once (SRV included: the A-record
  fallback is what the servers use). Debian's Prosody 0.12 without
  lua-unbound resolves with its own ``net.dns``, which reads only
  ``/etc/resolv.conf`` — never ``/etc/hosts`` — so a DNS server is needed,
  not just a hosts file. Erlang's ``inet_res`` (ejabberd's SRV lookups) asks
  it too.
* a private mount namespace per server process (``unshare -m
  --propagation private``) in which ``/etc/hosts`` (the machine's own plus
  the test's domains: what glibc's getaddrinfo, libunbound and ejabberd's A
  lookups read) and ``/etc/resolv.conf`` (only the stub) are bind-mounted
  from the test's directory. Nothing outside that process sees them.

:class:`NameWorld` holds both for one test session; :meth:`NameWorld.wrap`
turns a command line into one that runs in such a namespace.
"""

from __future__ import annotations

import os
import selectors
import shutil
import socket
import struct
import subprocess
import threading
from pathlib import Path
from typing import Mapping, Sequence

DNS_PORT = 53
TYPE_A = 1
TYPE_ANY = 255
CLASS_IN = 1
RCODE_FORMERR = 1
RCODE_NXDOMAIN = 3
RCODE_NOTIMP = 4


def can_bind(ip: str, port: int, kind: int = socket.SOCK_STREAM) -> bool:
    """Is ``ip:port`` free (for picking a test's addresses: a server on
    ``*:port`` takes it on every address)?"""
    with socket.socket(socket.AF_INET, kind) as s:
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
        except OSError:
            return False
    return True


class NamesUnavailable(RuntimeError):
    """A private mount namespace (or the stub's port 53) cannot be had here."""


def _parse_question(query: bytes) -> tuple[str, int, int, int] | None:
    """(name, qtype, qclass, end offset) of the single question of ``query``."""
    offset, labels = 12, []
    while True:
        if offset >= len(query):
            return None
        length = query[offset]
        offset += 1
        if length == 0:
            break
        if length > 63 or offset + length > len(query):
            return None  # compression pointers do not belong in a question
        labels.append(query[offset:offset + length].decode("ascii", "replace"))
        offset += length
    if offset + 4 > len(query):
        return None
    qtype, qclass = struct.unpack("!HH", query[offset:offset + 4])
    return ".".join(labels).lower(), qtype, qclass, offset + 4


def answer(query: bytes, records: Mapping[str, str], ttl: int = 60) -> bytes | None:
    """The reply to a DNS ``query``: A records from ``records`` (name →
    IPv4 address), NOERROR without data for other types of a known name, and
    NXDOMAIN for anything else. None for what is not a query at all."""
    if len(query) < 12:
        return None
    ident, flags, qdcount = struct.unpack("!HHH", query[:6])
    if flags & 0x8000:
        return None  # a response, not a query
    reply_flags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080  # QR, AA, RD echoed, RA
    question = _parse_question(query) if qdcount == 1 else None
    if (flags >> 11) & 0xF != 0:
        return struct.pack("!6H", ident, reply_flags | RCODE_NOTIMP, 0, 0, 0, 0)
    if question is None:
        return struct.pack("!6H", ident, reply_flags | RCODE_FORMERR, 0, 0, 0, 0)
    name, qtype, qclass, end = question
    answers = b""
    count = 0
    if name not in records:
        reply_flags |= RCODE_NXDOMAIN
    elif qtype in (TYPE_A, TYPE_ANY) and qclass == CLASS_IN:
        # the name as a pointer to the question (offset 12)
        answers = struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, ttl, 4) \
            + socket.inet_aton(records[name])
        count = 1
    return struct.pack("!6H", ident, reply_flags, 1, count, 0, 0) + query[12:end] + answers


class StubDNS:
    """A DNS server on ``address``:53 (UDP) in a daemon thread of the test process."""

    def __init__(self, address: str, records: Mapping[str, str], port: int = DNS_PORT):
        self.address = address
        self.port = port
        self.records = {name.lower().rstrip("."): ip for name, ip in records.items()}
        #: (name, qtype) of every question answered, for tests that check lookups
        self.questions: list[tuple[str, int]] = []
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> "StubDNS":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.address, self.port))
        except OSError as e:
            sock.close()
            raise NamesUnavailable(f"cannot serve DNS on {self.address}:{self.port}: {e}") from None
        sock.setblocking(False)
        self._socket = sock
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name=f"stub-dns-{self.address}",
                                        daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        assert self._socket is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._socket, selectors.EVENT_READ)
            while not self._stop.is_set():
                if not selector.select(timeout=0.2):
                    continue
                try:
                    query, peer = self._socket.recvfrom(4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    return
                reply = answer(query, self.records)
                if reply is None:
                    continue
                question = _parse_question(query)
                if question is not None:
                    self.questions.append(question[:2])
                try:
                    self._socket.sendto(reply, peer)
                except OSError:
                    pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def check_namespaces() -> None:
    """Raise :class:`NamesUnavailable` unless this process can run a command
    in a private mount namespace with a file bind-mounted over /etc/hosts."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        raise NamesUnavailable("federation fixtures need root and util-linux's unshare "
                               "(a private mount namespace for each real server)")
    for path in ("/etc/hosts", "/etc/resolv.conf"):
        if not os.path.isfile(path):
            raise NamesUnavailable(f"{path} does not exist to bind-mount over")
    done = subprocess.run([unshare, "-m", "--propagation", "private", "--", "sh", "-c",
                           "mount --bind /etc/hosts /etc/hosts"],
                          capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        raise NamesUnavailable(f"no private mount namespace here: {done.stderr.strip()}")


#: run in the new namespace: bind the two files, then exec the command
_BIND_SCRIPT = ('mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/resolv.conf '
                '&& shift 2 && exec "$@"')


class NameWorld:
    """One test session's names: ``addresses`` (domain → loopback IPv4
    address) served by a :class:`StubDNS` on ``dns_address`` and written to a
    private hosts file, for the processes :meth:`wrap` starts."""

    def __init__(self, directory: Path, addresses: Mapping[str, str], dns_address: str):
        self.directory = Path(directory)
        self.addresses = dict(addresses)
        self.dns_address = dns_address
        self.hosts_file = self.directory / "hosts"
        self.resolv_file = self.directory / "resolv.conf"
        self.dns = StubDNS(dns_address, self.addresses)

    def start(self) -> "NameWorld":
        check_namespaces()
        self.directory.mkdir(parents=True, exist_ok=True)
        machine = Path("/etc/hosts").read_text(errors="replace")
        ours = "".join(f"{ip}\t{domain}\n" for domain, ip in self.addresses.items())
        self.hosts_file.write_text(f"{machine.rstrip()}\n# xmppd federation test\n{ours}")
        # One fast nameserver; no search list (a bare name is not tried
        # under another domain); a timeout that fails fast if the stub died.
        self.resolv_file.write_text(f"nameserver {self.dns_address}\n"
                                    "options timeout:1 attempts:1\n")
        for path in (self.hosts_file, self.resolv_file):
            path.chmod(0o644)
        self.dns.start()
        return self

    def stop(self) -> None:
        self.dns.stop()

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run in a private mount namespace with this world's
        /etc/hosts and /etc/resolv.conf (the process keeps its pid: unshare
        and sh exec the command)."""
        return ["unshare", "-m", "--propagation", "private", "--", "sh", "-c", _BIND_SCRIPT,
                "xmppd-names", str(self.hosts_file), str(self.resolv_file), *argv]
