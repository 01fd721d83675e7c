"""The federation row of the benchmark, ``s2s-messages``: chat messages
between two servers of the same kind, xmppd → xmppd beside Prosody →
Prosody, in the same run.

Each pair is two processes, each serving a domain of its own
(``a.bench.test`` and ``b.bench.test``) on a loopback address of its own
(``127.R.S.2`` and ``.3``, ``R.S`` random per run, s2s on port 5269 of
each). Senders log in to A, receivers to B; every message crosses one s2s
link, A → B. Like for like in both pairs:

- certificates from one test CA (``tests/e2e/testca.py``) that both
  servers trust, and SASL EXTERNAL (XEP-0178) as the only authentication:
  no dialback in either (xmppd ``secure_auth``, ``dialback = false``;
  Prosody ``s2s_secure_auth`` without mod_dialback). EXTERNAL rather than
  dialback because it is what two servers with real certificates do today,
  and dialback would add a verification round trip to the link's set-up
  only, not to its messages. The run checks both ends' logs and fails if
  a link authenticated any other way.
- TLS required on the link (both servers' default); the clients' own
  streams are plain on loopback, as in ``messages-plain``, so the row
  measures the federation rather than c2s TLS.
- the peer found without the machine's DNS: xmppd by ``[s2s:routes]``;
  Prosody 0.12 has no such option, so it runs in a private mount namespace
  whose ``/etc/hosts`` and ``/etc/resolv.conf`` know the two names
  (``tests/e2e/testdns.py``: a stub DNS server on ``127.R.S.1``; Prosody
  resolves with lua-unbound reading the hosts file, as the federation
  fixtures run it). The lookup happens once, when the link is made.

The Prosody pair needs root (the namespaces) and lua-unbound (installed
when missing, as the federation fixtures do); the xmppd pair needs neither.
"""

from __future__ import annotations

import asyncio
import random
import re
import socket
import sys
import time
from pathlib import Path

import loadgen
from scenarios import Context, Metric, Scenario, SCENARIOS, percentile
from servers import ROOT, S2S, S2S_PORT, SERVERS, Server, user_name

# The federation fixtures' own modules (imported, not copied): the test CA,
# the stub DNS and private namespaces, Prosody's s2s log plugin.
_E2E = str(ROOT / "tests" / "e2e")
if _E2E not in sys.path:
    sys.path.append(_E2E)

import prosody as prosody_fixture  # noqa: E402
import testca  # noqa: E402
import testdns  # noqa: E402

A_DOMAIN = "a.bench.test"
B_DOMAIN = "b.bench.test"
#: last byte of each server's address, and of the stub DNS server's
HOST_BYTE = {A_DOMAIN: 2, B_DOMAIN: 3}
DNS_BYTE = 1
#: chat messages each sender keeps in flight (as ``messages-plain``)
WINDOW = 10

_XMPPD_AUTH = re.compile(r"(\S+) authenticated to (\S+) \(([^,)]+)")


def _size(quick: bool) -> tuple[int, int, int]:
    """(pairs, warm-up messages per sender, measured messages per sender)."""
    return (20, 20, 100) if quick else (100, 100, 1000)


def pick_prefix(tries: int = 20) -> str:
    """``127.R.S`` (random) where .1:53/udp (the stub DNS) and port 5269 of
    both servers' addresses are free: two runs on one machine, or a
    federation test beside this one, do not meet."""
    rng = random.SystemRandom()
    for _ in range(tries):
        prefix = f"127.{rng.randint(1, 254)}.{rng.randint(1, 254)}"
        if testdns.can_bind(f"{prefix}.{DNS_BYTE}", testdns.DNS_PORT, socket.SOCK_DGRAM) and all(
                testdns.can_bind(f"{prefix}.{b}", S2S_PORT, socket.SOCK_STREAM)
                for b in HOST_BYTE.values()):
            return prefix
    raise RuntimeError(f"port {S2S_PORT} (or 53) is taken on every loopback address tried")


class S2SWorld:
    """One runner's addresses, test CA and certificates for the two domains
    (made once, used by every pair), and the names Prosody resolves (a
    :class:`testdns.NameWorld`, started when a Prosody pair first needs it)."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.prefix = pick_prefix()
        self.ip = {domain: f"{self.prefix}.{b}" for domain, b in HOST_BYTE.items()}
        self.ca = testca.TestCA(self.dir / "ca", "xmppd bench CA")
        self.certificates = {domain: self.ca.issue(domain) for domain in HOST_BYTE}
        self.names: testdns.NameWorld | None = None

    def name_world(self) -> testdns.NameWorld:
        if self.names is None:
            if not prosody_fixture.ensure_lua_unbound():
                raise RuntimeError("the Prosody pair needs lua-unbound "
                                   "(apt-get install lua-unbound)")
            self.names = testdns.NameWorld(self.dir / "names", self.ip,
                                           f"{self.prefix}.{DNS_BYTE}").start()
        return self.names

    def close(self) -> None:
        if self.names is not None:
            self.names.stop()
            self.names = None


class ServerPair:
    """Two servers of one kind federating, ``a`` (the senders') and ``b``
    (the receivers'), with :class:`servers.Server`'s life cycle and
    measurements: CPU and memory are the two processes' sums."""

    def __init__(self, name: str, workdir: Path, world: S2SWorld, tls: bool):
        self.name = name
        kind = SERVERS[name]
        names = world.name_world() if name == "prosody" else None
        plugins = ({prosody_fixture.S2S_LOG_MODULE: prosody_fixture.S2S_LOG_PLUGIN}
                   if name == "prosody" else {})
        self.a, self.b = (
            kind(workdir, (world.certificates[domain].chain, world.certificates[domain].key), tls,
                 domain=domain, ip=world.ip[domain], label=f"{name}-{domain.split('.')[0]}",
                 s2s=S2S(world.ca.ca_file, {peer: world.ip[peer]}, names, plugins))
            for domain, peer in ((A_DOMAIN, B_DOMAIN), (B_DOMAIN, A_DOMAIN)))

    @property
    def servers(self) -> tuple[Server, Server]:
        return self.a, self.b

    def start(self, users: int, rosters=None, extras: tuple[str, ...] = ()) -> None:
        try:
            for server in self.servers:
                server.start(users, rosters, extras)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def alive(self) -> bool:
        return all(server.alive() for server in self.servers)

    @property
    def pid(self) -> int:
        return self.a.pid

    def pids(self) -> dict[str, int]:
        return {"-a": self.a.pid, "-b": self.b.pid}

    def cpu_seconds(self) -> float:
        return sum(server.cpu_seconds() for server in self.servers)

    def rss_kib(self) -> int:
        return sum(server.rss_kib() for server in self.servers)

    def log_tail(self) -> str:
        return "\n".join(f"--- {s.domain}:\n{s.log_tail()}" for s in self.servers)

    def log_text(self, server: Server) -> str:
        path = server.dir / ("xmppd.log" if self.name == "xmppd" else "prosody.log")
        return path.read_text(errors="replace") if path.exists() else ""

    def authentications(self) -> list[tuple[str, str, str, str]]:
        """Each link's authentication as both ends logged it: (the end's
        domain, from, to, mechanism), mechanism "SASL EXTERNAL" or
        "dialback" (xmppd's words; Prosody's "EXTERNAL" is given as xmppd's)."""
        found = []
        for server in self.servers:
            text = self.log_text(server)
            if self.name == "xmppd":
                found += [(server.domain, *m.groups()) for m in _XMPPD_AUTH.finditer(text)]
                continue
            for direction, local, remote, mechanism in (
                    m.groups() for m in prosody_fixture.S2S_LOG_LINE.finditer(text)):
                origin, target = (local, remote) if direction == "outgoing" else (remote, local)
                found.append((server.domain, origin, target,
                              "SASL EXTERNAL" if mechanism == "EXTERNAL" else mechanism))
        return found


class S2SScenario(Scenario):
    """A scenario whose server is a :class:`ServerPair` (one
    :class:`S2SWorld` per runner, made at the first pair)."""

    world: S2SWorld | None = None

    def make_server(self, name: str, workdir: Path, cert) -> ServerPair:
        if self.world is None:
            self.world = S2SWorld(workdir / "s2s")
        return ServerPair(name, workdir, self.world, self.tls)

    def close(self) -> None:
        if self.world is not None:
            self.world.close()
            self.world = None


async def s2s_messages(ctx: Context) -> dict[str, float]:
    """100 senders on server A, each sending 1 000 chat messages to its own
    receiver on server B (``u<i>@a`` → ``u<i>@b``, bare JID, no roster), 10
    in flight per pair (1 000 in all), over the one s2s link A → B. First
    each sender sends one message (the link is made: TCP, STARTTLS, SASL
    EXTERNAL; "first message ms" is the first one's trip), then 100 each as
    warm-up, then the measured 1 000 each: delivered per second from the
    first send to the last delivery, p50 and p99 latency. Every message
    must reach its receiver exactly once ("lost", "dup", "misrouted"); an
    error bounced to a sender counts as lost."""
    pair: ServerPair = ctx.server
    pairs, warm, measured = _size(ctx.quick)
    stall = ctx.drain or (5.0 if ctx.quick else 15.0)
    a, b = Context(pair.a, ctx.quick, ctx.tls), Context(pair.b, ctx.quick, ctx.tls)
    receivers, _ = await b.login_many(range(pairs))
    senders, _ = await a.login_many(range(pairs))
    targets = [f"{user_name(i)}@{pair.b.domain}" for i in range(pairs)]
    in_flight: dict[bytes, tuple[float, int]] = {}
    seen: set[bytes] = set()
    latencies: list[float] = []
    counters = {"delivered": 0, "dup": 0, "misrouted": 0, "bounced": 0, "sent": 0}
    remaining = [0] * pairs
    seq = [0] * pairs
    state = {"counting": False, "last": 0.0, "first": 0.0}
    now = time.perf_counter

    def send(s: int) -> None:
        remaining[s] -= 1
        seq[s] += 1
        ident = f"{s}-{seq[s]}"
        in_flight[ident.encode()] = (now(), s)
        counters["sent"] += 1
        senders[s].transport.write(
            f"<message to='{targets[s]}' type='chat' id='{ident}'><body>federated message "
            f"{ident}</body></message>".encode())

    def receiver(r: int):
        def got(stanza: bytes) -> None:
            if not stanza.startswith(b"<message"):
                return
            ident = loadgen.stanza_id(stanza)
            entry = in_flight.pop(ident, None)
            if entry is None:
                if ident in seen:
                    counters["dup"] += 1
                return
            seen.add(ident)
            t = now()
            state["last"] = t
            if not state["first"]:
                state["first"] = t - entry[0]
            if entry[1] != r:
                counters["misrouted"] += 1
            if state["counting"]:
                counters["delivered"] += 1
                latencies.append(t - entry[0])
            if remaining[entry[1]] > 0:
                send(entry[1])
        return got

    def bounced(stanza: bytes) -> None:
        # an error for a message (remote-server-timeout, service-unavailable...)
        if stanza.startswith(b"<message") and re.search(rb"""\stype=['"]error['"]""",
                                                        stanza[:stanza.find(b">")]):
            counters["bounced"] += 1

    for r, conn in enumerate(receivers):
        conn.stanzas(receiver(r))
    for conn in senders:
        conn.stanzas(bounced)

    async def phase(per_sender: int, window: int) -> None:
        """Each sender sends ``per_sender`` messages, ``window`` in flight;
        returns when all arrived, or when none arrived for ``stall`` s."""
        for s in range(pairs):
            remaining[s] = per_sender
        for s in range(pairs):
            for _ in range(min(window, per_sender)):
                send(s)
        progress, since = len(seen), time.monotonic()
        while in_flight or any(remaining):
            await asyncio.sleep(0.002)
            if len(seen) != progress:
                progress, since = len(seen), time.monotonic()
            elif time.monotonic() - since > stall:
                return

    # the link: one message per sender (the first waits for the link)
    await phase(1, 1)
    first_ms = state["first"] * 1e3
    await phase(warm, WINDOW)
    state["counting"] = True
    cpu0 = pair.a.cpu_seconds(), pair.b.cpu_seconds()
    with ctx.measure() as m:
        t0 = now()
        await phase(measured, WINDOW)
        wall = state["last"] - t0
    # each side's share: which of the two set the pace
    cpu = [(server.cpu_seconds() - c) / m.wall for server, c in zip(pair.servers, cpu0)]
    state["counting"] = False
    await asyncio.sleep(0.2)  # a late duplicate still shows
    for conn in senders + receivers:
        conn.close()
    links = pair.authentications()
    if any(mechanism != "SASL EXTERNAL" for *_, mechanism in links):
        # like for like, or no figure at all
        raise RuntimeError(f"{pair.name}: an s2s link authenticated otherwise than with "
                           f"SASL EXTERNAL: {links}")
    return {"delivered/s": counters["delivered"] / wall if wall > 0 else 0.0,
            "msg p50 ms": percentile(latencies, 50) * 1e3,
            "msg p99 ms": percentile(latencies, 99) * 1e3,
            "first message ms": first_ms, "A CPU": cpu[0], "B CPU": cpu[1],
            "CPU µs/message": (ctx.measured["server CPU"] * m.wall / counters["delivered"] * 1e6
                               if counters["delivered"] else float("nan")),
            "lost": len(in_flight), "dup": counters["dup"], "misrouted": counters["misrouted"],
            "bounced": counters["bounced"], "sent": counters["sent"],
            "expected": pairs * (1 + warm + measured),
            "links": len({(origin, target) for _, origin, target, _ in links})}


s2s_messages.__doc__ = (s2s_messages.__doc__ or "").strip()
SCENARIOS["s2s-messages"] = S2SScenario(
    "s2s-messages", users=_size(False)[0], tls=False,
    metrics=[Metric("delivered/s", "higher", 1.0), Metric("msg p50 ms", "lower", 1.5),
             Metric("msg p99 ms", "lower", 1.5), Metric("first message ms", "lower", None),
             Metric("CPU µs/message", "lower", None)],
    run=s2s_messages, about=s2s_messages.__doc__)
