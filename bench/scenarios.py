"""The benchmark scenarios, each one async function registered with :func:`scenario`.

A scenario gets a :class:`Context` (the running server and helpers to log
clients in) and returns its figures as a dict. Adding one is a function and a
decorator naming its metrics; the runner, the interleaving and the table
come for free::

    @scenario("muc-fanout", users=200, tls=False,
              metrics=[Metric("delivered/s", "higher", 1.0)])
    async def muc_fanout(ctx: Context) -> dict[str, float]:
        ...
        return {"delivered/s": n / wall, "lost": lost}

Every scenario also reports ``lost`` and ``dup`` (stanzas that never arrived,
or arrived twice) and the CPU shares of the server and of the generator over
its measured stretch, so a table shows when the generator was the bottleneck.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import hashlib
import os
import random
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

import boshgen
import loadgen
from servers import DOMAIN, MUC_DOMAIN, PASSWORD, SERVERS, Server, user_name


@dataclass
class Metric:
    """One row of the table. ``target`` is the xmppd/Prosody ratio to reach:
    at least ``target`` when higher is better, at most when lower is. With
    ``absolute`` the target applies to xmppd's own figure instead (a bound that
    does not depend on the other server, such as "memory levels off"); with no
    target the row is reported and not judged."""
    key: str
    better: str  # "higher" or "lower"
    target: float | None
    absolute: bool = False


@dataclass
class Scenario:
    name: str
    users: int
    tls: bool
    metrics: list[Metric]
    run: Callable[["Context"], Awaitable[dict[str, float]]]
    about: str = ""
    #: given ``quick``, each user's contacts, written into both servers'
    #: storage before they start as mutual subscriptions (see ``servers.py``)
    rosters: Callable[[bool], dict[int, list[int]]] | None = None
    #: features of ``servers.EXTRAS`` enabled in both servers for this scenario
    extras: tuple[str, ...] = ()

    def start(self, server: Server, quick: bool) -> None:
        """Start ``server`` with this scenario's accounts, rosters and extras."""
        server.start(self.users, self.rosters(quick) if self.rosters else None, self.extras)

    def make_server(self, name: str, workdir: Path, cert: tuple[Path, Path]) -> Server:
        """The server ``name`` ("xmppd" or "prosody") this scenario drives: one
        process, or for a scenario of its own kind anything with
        :class:`Server`'s life cycle and measurements (the s2s row: a pair)."""
        return SERVERS[name](workdir, cert, self.tls)

    def close(self) -> None:
        """Called once after the runner's last run of this scenario."""


SCENARIOS: dict[str, Scenario] = {}


def scenario(name: str, users: int, tls: bool, metrics: list[Metric],
             rosters: Callable[[bool], dict[int, list[int]]] | None = None,
             extras: tuple[str, ...] = ()):
    def register(fn):
        SCENARIOS[name] = Scenario(name, users, tls, metrics, fn, (fn.__doc__ or "").strip(),
                                   rosters, extras)
        return fn
    return register


@dataclass
class Context:
    server: Server
    quick: bool = False
    tls: bool = True
    measured: dict[str, float] = field(default_factory=dict)
    #: seconds to wait for what is still owed after the measured stretch
    #: (scenarios that use it; None: their own default)
    drain: float | None = None

    async def login(self, i: int, presence: bool = True, resource: str = "bench",
                    websocket: bool = False, bosh: bool = False):
        """Log user ``i`` in over TCP, or with ``websocket`` over XMPP-over-
        WebSocket at the server's HTTP port (the ``websocket`` extra), or with
        ``bosh`` over BOSH there (the ``bosh`` extra)."""
        if bosh:
            if not self.server.http_port:
                raise RuntimeError("a BOSH login needs the 'bosh' extra (an HTTP port)")
            return await boshgen.login_bosh("127.0.0.1", self.server.http_port,
                                            self.server.domain, user_name(i), PASSWORD, resource,
                                            presence)
        if websocket:
            if not self.server.http_port:
                raise RuntimeError("a WebSocket login needs the 'websocket' extra (an HTTP port)")
            return await loadgen.login_websocket("127.0.0.1", self.server.http_port,
                                                 self.server.domain, user_name(i), PASSWORD,
                                                 resource, presence)
        return await loadgen.login(self.server.ip, self.server.port, self.server.domain,
                                   user_name(i), PASSWORD, resource, starttls=self.tls,
                                   presence=presence)

    async def login_many(self, indexes, concurrency: int = 50, presence: bool = True,
                         websocket: bool = False, bosh: bool = False):
        """Log in the given users, ``concurrency`` logins at a time; returns the
        connections and each login's seconds."""
        semaphore = asyncio.Semaphore(concurrency)
        latencies: list[float] = []

        async def one(i):
            async with semaphore:
                t0 = time.perf_counter()
                conn = await self.login(i, presence, websocket=websocket, bosh=bosh)
                latencies.append(time.perf_counter() - t0)
                return conn
        conns = await asyncio.gather(*(one(i) for i in indexes))
        return conns, latencies

    def measure(self):
        """A stretch of measured time: CPU shares of server and generator."""
        return _Stretch(self)


def _machine_jiffies() -> tuple[int, int]:
    """(all, idle + iowait) CPU time of the machine so far, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return sum(fields), fields[3] + fields[4]


class _Stretch:
    """Measured time: the server's and the generator's CPU shares, and
    "others CPU", the cores the rest of the machine kept busy meanwhile (on
    a shared machine, what took time from the server while it ran)."""

    def __init__(self, ctx: Context):
        self.ctx = ctx

    def __enter__(self):
        self.gen = loadgen.CPUMeter()
        self.server_cpu = self.ctx.server.cpu_seconds()
        self.machine = _machine_jiffies()
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc):
        wall = time.monotonic() - self.t0
        self.wall = wall
        server = (self.ctx.server.cpu_seconds() - self.server_cpu) / wall
        generator = self.gen.share()
        self.ctx.measured["server CPU"] = server
        self.ctx.measured["generator CPU"] = generator
        total, idle = (b - a for a, b in zip(self.machine, _machine_jiffies()))
        if total > 0:
            busy = (1 - idle / total) * (os.cpu_count() or 1)
            self.ctx.measured["others CPU"] = max(0.0, busy - server - generator)
        return False


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


class Collector:
    """Keeps what a connection receives, and the ids of the iqs among it."""

    def __init__(self):
        self.stanzas: list[bytes] = []
        self.iq_ids: set[bytes] = set()

    def __call__(self, stanza: bytes) -> None:
        self.stanzas.append(stanza)
        if stanza.startswith(b"<iq"):
            self.iq_ids.add(loadgen.stanza_id(stanza))

    async def iq(self, ident: bytes, timeout: float = 60.0) -> bytes:
        """Wait for the answer to the iq with id ``ident`` and return it."""
        deadline = time.monotonic() + timeout
        while ident not in self.iq_ids:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer to iq {ident!r}")
            await asyncio.sleep(0.002)
        return next(s for s in reversed(self.stanzas)
                    if s.startswith(b"<iq") and loadgen.stanza_id(s) == ident)


# -- login storm ------------------------------------------------------------------------


def _login_storm(tls: bool):
    async def run(ctx: Context) -> dict[str, float]:
        """Users log in at once, 50 at a time: TCP, stream, (STARTTLS), SCRAM-SHA-1,
        bind, initial presence and its echo; each closes its stream when done."""
        n = 200 if ctx.quick else 1000
        semaphore = asyncio.Semaphore(50)
        latencies: list[float] = []
        failed = 0

        async def one(i):
            nonlocal failed
            async with semaphore:
                t0 = time.perf_counter()
                try:
                    conn = await ctx.login(i)
                except Exception:
                    failed += 1
                    return
                latencies.append(time.perf_counter() - t0)
                conn.close()
        with ctx.measure() as m:
            await asyncio.gather(*(one(i) for i in range(n)))
        return {"logins/s": len(latencies) / m.wall, "login p99 ms": percentile(latencies, 99) * 1e3,
                "lost": failed}
    return run


scenario("login-tls", users=1000, tls=True, metrics=[
    Metric("logins/s", "higher", 1.0), Metric("login p99 ms", "lower", 1.5)])(_login_storm(True))
scenario("login-plain", users=1000, tls=False, metrics=[
    Metric("logins/s", "higher", 1.0), Metric("login p99 ms", "lower", 1.5)])(_login_storm(False))


# -- 1:1 message throughput ---------------------------------------------------------------


def _messages(tls: bool, websocket: bool = False, bosh: bool = False):
    async def run(ctx: Context) -> dict[str, float]:
        """100 sender→receiver pairs, each keeping 10 chat messages in flight to
        the receiver's bare JID; figures over 10 s after 2 s of warm-up. With
        ``websocket`` every client is logged in over RFC 7395 instead of TCP,
        with ``bosh`` over XEP-0206."""
        pairs, window = 50 if ctx.quick else 100, 10
        duration, warmup = (2.0, 0.5) if ctx.quick else (10.0, 2.0)
        conns, _ = await ctx.login_many(range(2 * pairs), websocket=websocket, bosh=bosh)
        senders, receivers = conns[:pairs], conns[pairs:]
        targets = [f"{user_name(pairs + i)}@{DOMAIN}" for i in range(pairs)]
        in_flight: dict[bytes, tuple[float, int]] = {}
        seen: set[bytes] = set()
        latencies: list[float] = []
        counters = {"delivered": 0, "dup": 0, "sent": 0, "other": 0}
        state = {"running": True, "counting": False}
        seq = [0] * pairs
        now = time.perf_counter

        def send(s: int) -> None:
            seq[s] += 1
            ident = f"{s}-{seq[s]}"
            in_flight[ident.encode()] = (now(), s)
            counters["sent"] += 1
            senders[s].transport.write(
                f"<message to='{targets[s]}' type='chat' id='{ident}'><body>benchmark message "
                f"{ident}</body></message>".encode())

        def received(stanza: bytes) -> None:
            if not stanza.startswith(b"<message"):
                counters["other"] += 1
                return
            ident = loadgen.stanza_id(stanza)
            entry = in_flight.pop(ident, None)
            if entry is None:
                counters["dup"] += 1
                return
            seen.add(ident)
            if state["counting"]:
                counters["delivered"] += 1
                latencies.append(now() - entry[0])
            if state["running"]:
                send(entry[1])

        for conn in receivers:
            conn.stanzas(received)
        for conn in senders:
            conn.stanzas(lambda stanza: None)
        for s in range(pairs):
            for _ in range(window):
                send(s)
        await asyncio.sleep(warmup)
        state["counting"] = True
        with ctx.measure() as m:
            await asyncio.sleep(duration)
            state["counting"] = False
            delivered = counters["delivered"]
        state["running"] = False
        deadline = time.monotonic() + 15
        while in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in conns:
            conn.close()
        return {"delivered/s": delivered / m.wall,
                "msg p50 ms": percentile(latencies, 50) * 1e3,
                "msg p99 ms": percentile(latencies, 99) * 1e3,
                "lost": len(in_flight), "dup": counters["dup"], "sent": counters["sent"]}
    return run


_MESSAGE_METRICS = [Metric("delivered/s", "higher", 1.0), Metric("msg p50 ms", "lower", 1.5),
                    Metric("msg p99 ms", "lower", 1.5)]
scenario("messages-plain", users=200, tls=False, metrics=_MESSAGE_METRICS)(_messages(False))
scenario("messages-tls", users=200, tls=True, metrics=_MESSAGE_METRICS)(_messages(True))
# The same over XMPP-over-WebSocket (RFC 7395, plain ws:// on loopback, which
# both servers count as secure): one text message per stanza each way.
scenario("ws-messages", users=200, tls=False, metrics=_MESSAGE_METRICS,
         extras=("websocket",))(_messages(False, websocket=True))
# And over BOSH (XEP-0124/0206, plain http:// on loopback, secure to both):
# each client one held request and one to send with, as a browser's library.
scenario("bosh-messages", users=200, tls=False, metrics=_MESSAGE_METRICS,
         extras=("bosh",))(_messages(False, bosh=True))


# -- idle connections ---------------------------------------------------------------------


@scenario("idle", users=5000, tls=True, metrics=[
    Metric("KiB/conn @1000", "lower", 1.0), Metric("KiB/conn @5000", "lower", 1.0),
    Metric("start RSS MiB", "lower", None)])
async def idle(ctx: Context) -> dict[str, float]:
    """Logged-in users (TLS, bound, available) that then say nothing: the growth of
    the server's resident memory from before the first to after the last login,
    per connection, at 1 000 and at 5 000 connections. Also the server's
    resident memory right after it started, before any client connected."""
    small, large = (200, 1000) if ctx.quick else (1000, 5000)
    await asyncio.sleep(1.0)  # the server listens; let it finish starting
    start = ctx.server.rss_kib()
    warm, _ = await ctx.login_many(range(5))
    for conn in warm:
        conn.close()
    await asyncio.sleep(1.0)
    base = ctx.server.rss_kib()
    with ctx.measure():
        first, _ = await ctx.login_many(range(small), concurrency=100)
        await asyncio.sleep(2.0)
        at_small = ctx.server.rss_kib()
        rest, _ = await ctx.login_many(range(small, large), concurrency=100)
        await asyncio.sleep(2.0)
        at_large = ctx.server.rss_kib()
    conns = first + rest
    lost = sum(1 for c in conns if c.closed.done())  # dropped while idle
    for conn in conns:
        conn.close()
    gc.collect()
    return {"KiB/conn @1000": (at_small - base) / small, "KiB/conn @5000": (at_large - base) / large,
            "start RSS MiB": start / 1024, "lost": lost}


# -- roster of 1000 items ---------------------------------------------------------------------


@scenario("roster-1000", users=2, tls=True, metrics=[
    Metric("roster fetch ms", "lower", 1.5), Metric("login+roster/s", "higher", 1.0)])
async def roster_1000(ctx: Context) -> dict[str, float]:
    """A user with 1 000 roster items logs in 20 times (no presence) and
    fetches the roster: the time from the request to the complete result."""
    items, logins = (200, 5) if ctx.quick else (1000, 20)
    conn = await ctx.login(0, presence=False)
    received = Collector()
    conn.stanzas(received)
    for start in range(0, items, 100):
        for i in range(start, min(items, start + 100)):
            conn.write(f"<iq type='set' id='s{i}'><query xmlns='jabber:iq:roster'>"
                       f"<item jid='contact{i}@example.org' name='Contact {i}'><group>Bench</group>"
                       f"</item></query></iq>".encode())
        await received.iq(f"s{min(items, start + 100) - 1}".encode())
    conn.close()
    fetches: list[float] = []
    lost = 0
    with ctx.measure() as m:
        for _ in range(logins):
            c = await ctx.login(0, presence=False, resource="fetch")
            got = Collector()
            c.stanzas(got)
            t0 = time.perf_counter()
            c.write(b"<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>")
            result = await got.iq(b"roster")
            fetches.append(time.perf_counter() - t0)
            lost += max(0, items - result.count(b"<item "))
            c.close()
            await c.closed
    return {"roster fetch ms": statistics.median(fetches) * 1e3, "login+roster/s": logins / m.wall,
            "lost": lost}


# -- offline storage ------------------------------------------------------------------------------


@scenario("offline-10000", users=2, tls=True, metrics=[
    Metric("offline accepted/s", "higher", 1.0), Metric("offline delivered/s", "higher", 1.0)])
async def offline_10000(ctx: Context) -> dict[str, float]:
    """10 000 messages to a user who is offline, sent 100 at a time, each batch
    followed by a ping ("accepted/s": the server answered the ping after the
    batch). The moment the last ping is answered the user logs in; "delivered/s"
    counts from its initial presence to the last message arriving, so a
    server still writing its backlog pays for it there."""
    total = 1000 if ctx.quick else 10000
    sender = await ctx.login(0)
    received = Collector()
    sender.stanzas(received)
    to = f"{user_name(1)}@{DOMAIN}"
    t0 = time.perf_counter()
    for start in range(0, total, 100):
        sender.write(b"".join(
            f"<message to='{to}' type='chat' id='o{i}'><body>offline message {i}</body></message>"
            .encode() for i in range(start, start + 100)))
        sender.write(f"<iq type='get' id='p{start}'><ping xmlns='urn:xmpp:ping'/></iq>".encode())
        await received.iq(f"p{start}".encode())
    stored_rate = total / (time.perf_counter() - t0)
    bounced = sum(1 for s in received.stanzas if s.startswith(b"<message"))
    sender.close()
    receiver = await ctx.login(1, presence=False)
    ids: set[bytes] = set()
    dup = 0
    done = asyncio.get_running_loop().create_future()

    def got(stanza: bytes) -> None:
        nonlocal dup
        if stanza.startswith(b"<message"):
            ident = loadgen.stanza_id(stanza)
            if ident in ids:
                dup += 1
            ids.add(ident)
            if len(ids) == total and not done.done():
                done.set_result(time.perf_counter())
    receiver.stanzas(got)
    with ctx.measure():
        t0 = time.perf_counter()
        receiver.write(b"<presence/>")
        try:
            t1 = await asyncio.wait_for(done, 120)
        except asyncio.TimeoutError:
            t1 = time.perf_counter()
    receiver.close()
    return {"offline accepted/s": stored_rate, "offline delivered/s": len(ids) / (t1 - t0),
            "lost": total - len(ids) + bounced, "dup": dup}


# -- soak: logins, logouts and messages for minutes -------------------------------------------


#: how long the full soak runs (a longer one: set this before calling the scenario)
SOAK_SECONDS = 180.0


@scenario("soak", users=200, tls=True, metrics=[
    Metric("RSS growth 2nd half %", "lower", 5.0, absolute=True),
    Metric("peak RSS MiB", "lower", None),
    Metric("logins/s", "higher", 1.0), Metric("delivered/s", "higher", 1.0)])
async def soak(ctx: Context) -> dict[str, float]:
    """200 clients log in and out and send each other messages for three minutes;
    the server's resident memory is sampled every 10 s. Each client loops: log in
    (TLS, SCRAM-SHA-1, bind), initial presence, ten chat messages 0.1 s apart to
    the bare JIDs of clients online at that moment, then a graceful close (its
    closing tag, then reading until the server's). A message whose recipient has
    gone by the time it arrives waits in offline storage for that user's next
    login; after the three minutes every user with messages still owed logs in
    once more to collect them, so every message is accounted for. "RSS growth 2nd
    half" compares the last three samples with the three around half-time: near
    zero when memory has levelled off."""
    clients, duration, every = (100, 30.0, 5.0) if ctx.quick else (200, SOAK_SECONDS, 10.0)
    per_cycle, pace = 10, 0.1
    rng = random.Random(10)
    online: list[int] = []
    owed: dict[bytes, int] = {}  # message id -> recipient, until it arrives
    counters = {"logins": 0, "delivered": 0, "dup": 0, "misrouted": 0, "failed logins": 0,
                "close timeouts": 0, "sent": 0, "via offline": 0}
    seen: set[bytes] = set()
    state = {"counting": True}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + duration

    def receiver(user: int):
        def got(stanza: bytes) -> None:
            if not stanza.startswith(b"<message"):
                return
            ident = loadgen.stanza_id(stanza)
            if ident in seen:
                counters["dup"] += 1
                return
            if owed.get(ident) != user:
                counters["misrouted"] += 1
                return
            del owed[ident]
            seen.add(ident)
            if b"urn:xmpp:delay" in stanza:  # stored while its recipient was away
                counters["via offline"] += 1
            if state["counting"]:
                counters["delivered"] += 1
        return got

    async def session(user: int, cycle: int, chat: bool) -> None:
        try:
            conn = await ctx.login(user, presence=False, resource="soak")
        except Exception:
            counters["failed logins"] += 1
            await asyncio.sleep(0.5)
            return
        conn.stanzas(receiver(user))
        conn.write(b"<presence/>")
        if chat:
            counters["logins"] += 1
            online.append(user)
            try:
                for k in range(per_cycle):
                    await asyncio.sleep(pace)
                    peers = [u for u in rng.sample(online, min(2, len(online))) if u != user]
                    if not peers:
                        continue
                    ident = f"{user}-{cycle}-{k}"
                    owed[ident.encode()] = peers[0]
                    counters["sent"] += 1
                    conn.write(f"<message to='{user_name(peers[0])}@{DOMAIN}' type='chat' id='{ident}'>"
                               f"<body>soak message {ident}</body></message>".encode())
            finally:
                online.remove(user)
        else:  # collecting what offline storage kept: wait until nothing is owed to us
            end = loop.time() + 30.0
            while any(r == user for r in owed.values()) and loop.time() < end:
                await asyncio.sleep(0.1)
        if not await conn.close_gracefully():
            counters["close timeouts"] += 1

    async def client(user: int) -> None:
        await asyncio.sleep(user * duration / 20 / clients)  # stagger the first logins over 5 % of the run
        cycle = 0
        while loop.time() < deadline:
            await session(user, cycle, chat=True)
            cycle += 1

    samples: list[float] = []

    async def sampler() -> None:
        t0 = loop.time()
        for i in range(int(duration / every) + 1):
            await asyncio.sleep(max(0.0, t0 + i * every - loop.time()))
            samples.append(ctx.server.rss_kib() / 1024)

    with ctx.measure():
        sampling = asyncio.ensure_future(sampler())
        await asyncio.gather(*(client(u) for u in range(clients)))
        wall = loop.time() - (deadline - duration)
        state["counting"] = False
        await sampling
    # Whatever is still owed went to offline storage: its recipients log in once more.
    for _ in range(2):
        users = sorted(set(owed.values()))
        await asyncio.gather(*(session(u, -1, chat=False) for u in users))
    half = len(samples) // 2
    middle = statistics.mean(samples[half - 1:half + 2])
    end = statistics.mean(samples[-3:])
    return {"RSS growth 2nd half %": (end - middle) / middle * 100, "peak RSS MiB": max(samples),
            "logins/s": counters["logins"] / wall, "delivered/s": counters["delivered"] / wall,
            "lost": len(owed) + counters["failed logins"], "dup": counters["dup"],
            "sent": counters["sent"], "misrouted": counters["misrouted"],
            "close timeouts": counters["close timeouts"], "via offline": counters["via offline"],
            "RSS MiB every %gs" % every: samples}


# -- helpers for scenarios that set up data over XMPP first ---------------------------------


def _cpu_per(ctx: Context, stretch: _Stretch, done: int) -> float:
    """The server's CPU microseconds per unit of work over a measured stretch:
    steadier than a rate on a shared machine, where another process can take
    the server's core for a while (the rate drops, this does not)."""
    return ctx.measured["server CPU"] * stretch.wall / done * 1e6 if done else float("nan")


async def settle(count: Callable[[], int], quiet: float = 1.0, limit: float = 60.0) -> None:
    """Wait until ``count()`` (stanzas received so far) has not moved for
    ``quiet`` seconds: what set-up caused (broadcasts, probes' answers) has
    arrived before the measured stretch starts."""
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    last, since = count(), loop.time()
    while loop.time() < end:
        await asyncio.sleep(0.1)
        now_count = count()
        if now_count != last:
            last, since = now_count, loop.time()
        elif loop.time() - since >= quiet:
            return


#: The vCards' photo: 6 KiB of image, 8 KiB once base64-encoded in BINVAL.
PHOTO_BYTES = 6144


def photo(i: int) -> bytes:
    """User ``i``'s photo: random bytes seeded by ``i``, so every photo and
    its hash differ."""
    return random.Random(i).randbytes(PHOTO_BYTES)


def photo_hash(i: int) -> bytes:
    """The XEP-0153 hash of user ``i``'s photo (SHA-1 of its bytes, hex)."""
    return hashlib.sha1(photo(i)).hexdigest().encode()


def vcard(i: int) -> str:
    """User ``i``'s vCard-temp (XEP-0054): name, nickname, e-mail and its photo."""
    photo_text = base64.b64encode(photo(i)).decode()
    return (f"<vCard xmlns='vcard-temp'><FN>Bench User {i}</FN><N><FAMILY>User</FAMILY>"
            f"<GIVEN>Bench {i}</GIVEN></N><NICKNAME>{user_name(i)}</NICKNAME>"
            f"<EMAIL><INTERNET/><PREF/><USERID>{user_name(i)}@{DOMAIN}</USERID></EMAIL>"
            f"<PHOTO><TYPE>image/jpeg</TYPE><BINVAL>{photo_text}</BINVAL></PHOTO></vCard>")


async def publish_vcards(conns, first: int = 0) -> int:
    """Each connection sets its user's vCard (``first`` is the first user's
    index); returns how many sets the server refused."""
    collectors = []
    for k, conn in enumerate(conns):
        got = Collector()
        conn.stanzas(got)
        collectors.append(got)
        conn.write(f"<iq type='set' id='vcard-set'>{vcard(first + k)}</iq>".encode())
    refused = 0
    for got in collectors:
        answer = await got.iq(b"vcard-set")
        if b"type='result'" not in answer and b'type="result"' not in answer:
            refused += 1
    return refused


# -- presence fanout -----------------------------------------------------------------------------


def _ring(users: int, contacts: int) -> dict[int, list[int]]:
    """Mutual contacts: each user knows the ``contacts`` users nearest to it on
    a ring (half on each side), so every roster has the same size and every
    subscription is both ways."""
    half = contacts // 2
    return {i: [(i + d) % users for d in range(-half, half + 1) if d] for i in range(users)}


def _fanout_size(quick: bool) -> tuple[int, int]:
    return (30, 10) if quick else (100, 50)


_FANOUT_STATUS = re.compile(rb"<status>fanout (\d+) (\d+)</status>")
_SHOWS = ("away", "chat", "dnd", "xa")


@scenario("presence-fanout", users=100, tls=False, metrics=[
    Metric("deliveries/s", "higher", 1.0), Metric("presence p50 ms", "lower", 1.5),
    Metric("presence p99 ms", "lower", 1.5), Metric("CPU µs/delivery", "lower", None)],
    rosters=lambda quick: _ring(*_fanout_size(quick)), extras=("vcard+avatar-hash",))
async def presence_fanout(ctx: Context) -> dict[str, float]:
    """100 users, each with 50 mutual contacts (rosters written into storage
    before the server starts) and a vCard with an 8 KiB photo, all online;
    then each user changes its presence (show and status) over and over,
    the next change as soon as all its contacts received the previous one.
    Deliveries to contacts per second and the latency from send to receipt,
    over 10 s after 2 s of warm-up. Every presence must reach each contact
    once. The server adds the XEP-0153 avatar hash to each: a delivery
    without the sender's photo hash counts as "without hash"."""
    users, contacts = _fanout_size(ctx.quick)
    duration, warmup = (2.0, 0.5) if ctx.quick else (10.0, 2.0)
    roster = _ring(users, contacts)
    watchers = [frozenset(roster[i]) for i in range(users)]
    conns, _ = await ctx.login_many(range(users), presence=False)
    # run without its extras (run.py --extras ''), there is no vCard to set
    refused = await publish_vcards(conns) if ctx.server.extras else 0
    outstanding: dict[tuple[int, int], list] = {}  # (sender, seq) -> [sent at, contacts owed]
    latencies: list[float] = []
    counters = {"stanzas": 0, "delivered": 0, "changes": 0, "dup": 0, "misrouted": 0,
                "without hash": 0, "sent": 0}
    state = {"running": False, "counting": False}
    seq = [0] * users
    now = time.perf_counter
    # with the avatar hash on, each delivery must carry the sender's photo hash
    hashes = [b"<photo>%s</photo>" % photo_hash(i) for i in range(users)] \
        if "vcard+avatar-hash" in ctx.server.extras else None

    def send(s: int) -> None:
        seq[s] += 1
        outstanding[(s, seq[s])] = [now(), set(watchers[s])]
        counters["sent"] += 1
        conns[s].transport.write(
            f"<presence id='f{s}-{seq[s]}'><show>{_SHOWS[seq[s] % 4]}</show>"
            f"<status>fanout {s} {seq[s]}</status></presence>".encode())

    def receiver(r: int):
        def got(stanza: bytes) -> None:
            counters["stanzas"] += 1
            if not stanza.startswith(b"<presence"):
                return
            match = _FANOUT_STATUS.search(stanza)
            if match is None:
                return  # set-up: initial presence, answers to probes
            s, k = int(match.group(1)), int(match.group(2))
            if s == r:
                return  # the echo to the sender's own resource (RFC 6121 §4.2.2)
            entry = outstanding.get((s, k))
            if entry is None or r not in entry[1]:
                counters["dup" if r in watchers[s] else "misrouted"] += 1
                return
            entry[1].discard(r)
            if hashes and (hashes[s] not in stanza or b"vcard-temp:x:update" not in stanza):
                counters["without hash"] += 1
            if state["counting"]:
                counters["delivered"] += 1
                latencies.append(now() - entry[0])
            if not entry[1]:
                del outstanding[(s, k)]
                if state["counting"]:
                    counters["changes"] += 1
                if state["running"]:
                    send(s)
        return got

    for r, conn in enumerate(conns):
        conn.stanzas(receiver(r))
    for conn in conns:  # initial presence: broadcasts and probes, then quiet
        conn.write(b"<presence/>")
    await settle(lambda: counters["stanzas"])
    state["running"] = True
    for s in range(users):
        send(s)
    await asyncio.sleep(warmup)
    state["counting"] = True
    with ctx.measure() as m:
        await asyncio.sleep(duration)
        state["counting"] = False
    state["running"] = False
    deadline = time.monotonic() + (ctx.drain or (5 if ctx.quick else 15))
    while outstanding and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for conn in conns:
        conn.close()
    return {"deliveries/s": counters["delivered"] / m.wall,
            "CPU µs/delivery": _cpu_per(ctx, m, counters["delivered"]),
            "presence p50 ms": percentile(latencies, 50) * 1e3,
            "presence p99 ms": percentile(latencies, 99) * 1e3,
            "changes/s": counters["changes"] / m.wall,
            "lost": sum(len(owed) for _, owed in outstanding.values()) + refused,
            "dup": counters["dup"], "misrouted": counters["misrouted"],
            "without hash": counters["without hash"], "sent": counters["sent"]}


# -- vCard get -------------------------------------------------------------------------------------


@scenario("vcard-get", users=100, tls=False, metrics=[
    Metric("vcard gets/s", "higher", 1.0), Metric("vcard p50 ms", "lower", 1.5),
    Metric("vcard p99 ms", "lower", 1.5), Metric("CPU µs/get", "lower", None)],
    extras=("vcard+avatar-hash",))
async def vcard_get(ctx: Context) -> dict[str, float]:
    """100 users online, each with a vCard holding an 8 KiB photo (set over
    XMPP first), fetch each other's vCards (XEP-0054 get to a random other
    user's bare JID), each keeping one request in flight; requests answered
    per second and the latency of one, over 10 s after 2 s of warm-up. Every
    answer must be a result carrying the asked user's vCard and photo."""
    users, window = (20, 1) if ctx.quick else (100, 1)
    duration, warmup = (2.0, 0.5) if ctx.quick else (10.0, 2.0)
    conns, _ = await ctx.login_many(range(users))
    refused = await publish_vcards(conns)
    markers = [f"<FN>Bench User {i}</FN>".encode() for i in range(users)]
    rng = random.Random(54)
    in_flight: dict[bytes, tuple[float, int]] = {}
    latencies: list[float] = []
    counters = {"answered": 0, "wrong": 0, "dup": 0, "sent": 0}
    state = {"running": True, "counting": False}
    seq = [0] * users
    now = time.perf_counter

    def send(c: int) -> None:
        target = rng.randrange(users - 1)
        target += target >= c
        seq[c] += 1
        ident = f"v{c}-{seq[c]}"
        in_flight[ident.encode()] = (now(), target)
        counters["sent"] += 1
        conns[c].transport.write(f"<iq type='get' id='{ident}' to='{user_name(target)}@{DOMAIN}'>"
                                 f"<vCard xmlns='vcard-temp'/></iq>".encode())

    def receiver(c: int):
        def got(stanza: bytes) -> None:
            if not stanza.startswith(b"<iq"):
                return
            entry = in_flight.pop(loadgen.stanza_id(stanza), None)
            if entry is None:
                counters["dup"] += 1
                return
            head = stanza[:stanza.find(b">")]
            if (b"type='result'" not in head and b'type="result"' not in head) \
                    or markers[entry[1]] not in stanza or len(stanza) < PHOTO_BYTES * 4 // 3:
                counters["wrong"] += 1
            elif state["counting"]:
                counters["answered"] += 1
                latencies.append(now() - entry[0])
            if state["running"]:
                send(c)
        return got

    for c, conn in enumerate(conns):
        conn.stanzas(receiver(c))
    for c in range(users):
        for _ in range(window):
            send(c)
    await asyncio.sleep(warmup)
    state["counting"] = True
    with ctx.measure() as m:
        await asyncio.sleep(duration)
        state["counting"] = False
    state["running"] = False
    deadline = time.monotonic() + (ctx.drain or (5 if ctx.quick else 15))
    while in_flight and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for conn in conns:
        conn.close()
    return {"vcard gets/s": counters["answered"] / m.wall,
            "CPU µs/get": _cpu_per(ctx, m, counters["answered"]),
            "vcard p50 ms": percentile(latencies, 50) * 1e3,
            "vcard p99 ms": percentile(latencies, 99) * 1e3,
            "lost": len(in_flight) + counters["wrong"] + refused, "dup": counters["dup"],
            "wrong": counters["wrong"], "sent": counters["sent"]}


# -- PEP fanout ------------------------------------------------------------------------------------

#: The node the publishers publish to, and the feature that asks for its events.
PEP_NODE = "http://jabber.org/protocol/geoloc"
#: What the generator's clients say they can do (XEP-0115): one identity and
#: these features, ``PEP_NODE+notify`` among them.
CAPS_IDENTITY = ("client", "bot", "", "xmppd bench")
CAPS_FEATURES = ("http://jabber.org/protocol/caps", "http://jabber.org/protocol/disco#info",
                 f"{PEP_NODE}+notify", "urn:xmpp:ping")
CAPS_NODE = "https://github.com/xmppd/bench"


def caps_ver() -> str:
    """The XEP-0115 §5.1 ``ver`` (SHA-1, base64) of the generator's disco#info:
    what both servers check the answer against (xmppd verifies it, Prosody
    believes it)."""
    category, kind, lang, name = CAPS_IDENTITY
    text = f"{category}/{kind}/{lang}/{name}<" + "".join(f"{f}<" for f in sorted(CAPS_FEATURES))
    return base64.b64encode(hashlib.sha1(text.encode()).digest()).decode()


def _disco_info_answer(query: bytes) -> bytes | None:
    """The result a client owes for a disco#info get (``query``, raw bytes):
    its identity and features, echoing the id and the asked node. None for
    any other stanza."""
    if not query.startswith(b"<iq") or b"disco#info" not in query:
        return None
    head = query[:query.find(b">")]
    attrs = {m.group(1): m.group(2) or m.group(3) for m in _ATTR.finditer(head)}
    if attrs.get(b"type") != b"get":
        return None
    node = _NODE.search(query)
    category, kind, _, name = CAPS_IDENTITY
    to = b" to='%s'" % attrs[b"from"] if b"from" in attrs else b""
    node_attr = b" node='%s'" % node.group(1) if node else b""
    return (b"<iq type='result' id='%s'%s><query xmlns='http://jabber.org/protocol/disco#info'%s>"
            % (attrs.get(b"id", b""), to, node_attr)
            + f"<identity category='{category}' type='{kind}' name='{name}'/>".encode()
            + b"".join(f"<feature var='{f}'/>".encode() for f in CAPS_FEATURES)
            + b"</query></iq>")


_ATTR = re.compile(rb"""\s(from|id|type)=(?:'([^']*)'|"([^"]*)")""")
_NODE = re.compile(rb"""<query[^>]*\snode=(?:'([^']*)'|"([^"]*)")""")
_PEP_TEXT = re.compile(rb"<text>pep (\d+) (\d+)</text>")


def _pep_size(quick: bool) -> tuple[int, int]:
    """(publishers, contacts): every publisher has every contact. One more
    user (the last) only brings the caps hash to the server first."""
    return (2, 30) if quick else (4, 200)


def _pep_rosters(quick: bool) -> dict[int, list[int]]:
    """Users 0..P-1 publish; each has all the contacts P..P+C-1 as mutual
    contacts, and each contact has all the publishers (contacts do not know
    each other)."""
    publishers, contacts = _pep_size(quick)
    everyone = list(range(publishers, publishers + contacts))
    rosters = {p: everyone for p in range(publishers)}
    rosters.update({c: list(range(publishers)) for c in everyone})
    return rosters


@scenario("pep-fanout", users=205, tls=False, metrics=[
    Metric("notifications/s", "higher", 1.0), Metric("pep p50 ms", "lower", 1.5),
    Metric("pep p99 ms", "lower", 1.5), Metric("CPU µs/notification", "lower", None)],
    rosters=_pep_rosters, extras=("pep",))
async def pep_fanout(ctx: Context) -> dict[str, float]:
    """4 users, each with the same 200 mutual contacts, all online; the
    contacts advertise XEP-0115 caps whose features include
    ``geoloc+notify`` and answer the servers' disco#info queries about them.
    Each publisher publishes a geoloc item (XEP-0163) over and over, the
    next as soon as all 200 contacts got the previous one's notification
    (800 in flight). Notifications per second and the latency from publish
    to receipt, over 10 s after 2 s of warm-up. Each item must reach each
    contact exactly once and nobody else; every publish must be a result."""
    publishers, contacts = _pep_size(ctx.quick)
    duration, warmup = (2.0, 0.5) if ctx.quick else (10.0, 2.0)
    audience = frozenset(range(publishers, publishers + contacts))
    outstanding: dict[tuple[int, int], list] = {}  # (publisher, seq) -> [sent at, contacts owed]
    latencies: list[float] = []
    counters = {"stanzas": 0, "delivered": 0, "items": 0, "dup": 0, "misrouted": 0,
                "refused": 0, "caps queries": 0, "sent": 0}
    state = {"running": False, "counting": False}
    seq = [0] * publishers
    now = time.perf_counter
    conns: list = [None] * (publishers + contacts)

    def publish(s: int) -> None:
        seq[s] += 1
        k = seq[s]
        outstanding[(s, k)] = [now(), set(audience)]
        counters["sent"] += 1
        conns[s].transport.write(
            f"<iq type='set' id='pub{s}-{k}'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
            f"<publish node='{PEP_NODE}'><item id='i{k}'><geoloc xmlns='{PEP_NODE}'>"
            f"<lat>{45 + k % 90 / 100:.2f}</lat><lon>{5 + s / 100:.2f}</lon>"
            f"<text>pep {s} {k}</text></geoloc></item></publish></pubsub></iq>".encode())

    def receiver(r: int):
        def got(stanza: bytes) -> None:
            counters["stanzas"] += 1
            answer = _disco_info_answer(stanza)
            if answer is not None:
                counters["caps queries"] += 1
                conns[r].transport.write(answer)
                return
            if stanza.startswith(b"<iq"):
                head = stanza[:stanza.find(b">")]
                if r < publishers and b"'result'" not in head and b'"result"' not in head:
                    counters["refused"] += 1
                return
            if not stanza.startswith(b"<message"):
                return
            match = _PEP_TEXT.search(stanza)
            if match is None:
                return
            s, k = int(match.group(1)), int(match.group(2))
            if r == s:  # the publisher's own resource advertised no caps: none is due
                counters["misrouted"] += 1
                return
            entry = outstanding.get((s, k))
            if entry is None or r not in entry[1]:
                counters["dup" if r in audience else "misrouted"] += 1
                return
            entry[1].discard(r)
            if state["counting"]:
                counters["delivered"] += 1
                latencies.append(now() - entry[0])
            if not entry[1]:
                del outstanding[(s, k)]
                if state["counting"]:
                    counters["items"] += 1
                if state["running"]:
                    publish(s)
        return got

    caps = (f"<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='{CAPS_NODE}' "
            f"ver='{caps_ver()}'/>").encode()
    # First a user outside every roster comes online with the caps: its
    # server asks it what the hash stands for (xmppd verifies the answer,
    # Prosody believes it) and keeps the answer for everyone. Doing this
    # with a contact instead makes Prosody 0.12 notify every contact twice:
    # when a client answers its own account's query, mod_pep also adds the
    # client's bare JID as a recipient on the PEP service of each of its
    # contacts (its "fiddle with other local users" shortcut), beside the
    # full JID, and a headline to the bare JID reaches every resource.
    scout = await ctx.login(publishers + contacts, presence=False)
    scouted = {"queries": 0}

    def scout_got(stanza: bytes) -> None:
        counters["stanzas"] += 1
        answer = _disco_info_answer(stanza)
        if answer is not None:
            scouted["queries"] += 1
            scout.transport.write(answer)
    scout.stanzas(scout_got)
    scout.write(b"<presence>" + caps + b"</presence>")
    await settle(lambda: counters["stanzas"], quiet=0.5)
    # The publishers (their presence probes find nobody yet), then the
    # contacts, whose available presence with the caps reaches each
    # publisher's PEP service: the hash is known, so each contact becomes a
    # recipient of the node at once. A contact asked anyway answers.
    first, _ = await ctx.login_many(range(publishers), presence=False)
    rest, _ = await ctx.login_many(range(publishers, publishers + contacts), presence=False)
    conns[:] = first + rest
    for r, conn in enumerate(conns):
        conn.stanzas(receiver(r))
    for conn in first:
        conn.write(b"<presence/>")
    await settle(lambda: counters["stanzas"], quiet=0.5)
    for conn in rest:
        conn.write(b"<presence>" + caps + b"</presence>")
    await settle(lambda: counters["stanzas"])
    state["running"] = True
    for s in range(publishers):
        publish(s)
    await asyncio.sleep(warmup)
    state["counting"] = True
    with ctx.measure() as m:
        await asyncio.sleep(duration)
        state["counting"] = False
    state["running"] = False
    deadline = time.monotonic() + (ctx.drain or (5 if ctx.quick else 15))
    while outstanding and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # a late duplicate still shows
    for conn in conns + [scout]:
        conn.close()
    return {"notifications/s": counters["delivered"] / m.wall,
            "CPU µs/notification": _cpu_per(ctx, m, counters["delivered"]),
            "pep p50 ms": percentile(latencies, 50) * 1e3,
            "pep p99 ms": percentile(latencies, 99) * 1e3,
            "items/s": counters["items"] / m.wall,
            "lost": sum(len(owed) for _, owed in outstanding.values()) + counters["refused"],
            "dup": counters["dup"], "misrouted": counters["misrouted"],
            "refused": counters["refused"], "scout queries": scouted["queries"],
            "caps queries": counters["caps queries"],
            "sent": counters["sent"]}


# -- MUC fanout ------------------------------------------------------------------------------------

#: The room every occupant joins (on the ``muc`` extra's service).
MUC_ROOM = f"bench@{MUC_DOMAIN}"
NS_MUC = "http://jabber.org/protocol/muc"
_MUC_BODY = re.compile(rb"<body>muc (\d+)</body>")
#: a presence from the room that is the occupant's own (XEP-0045 §7.2.2: status 110)
_MUC_SELF = re.compile(rb"""<status\s+code=['"]110['"]""")
_MUC_ERROR = re.compile(rb"""\stype=['"]error['"]""")


def _muc_size(quick: bool) -> tuple[int, int]:
    """(occupants, messages in flight): the sender is one of the occupants."""
    return (30, 2) if quick else (200, 4)


@scenario("muc-fanout", users=200, tls=False, metrics=[
    Metric("deliveries/s", "higher", 1.5), Metric("muc p50 ms", "lower", 1.5),
    Metric("muc p99 ms", "lower", 1.5), Metric("CPU µs/delivery", "lower", None)],
    extras=("muc",))
async def muc_fanout(ctx: Context) -> dict[str, float]:
    """One room, 200 occupants (each its own connection, nick ``u<i>``), one
    of them sending groupchat messages with 4 in flight: the next as soon as
    all 200 occupants (the sender's own reflection included, XEP-0045 §7.4)
    got one. The sender creates the room and accepts the instant
    configuration (both servers lock a new room until then); the others
    join asking for no history. Deliveries per second and the latency from
    send to receipt, over 10 s after 2 s of warm-up. Every message must
    reach every occupant exactly once ("lost", "dup"), in the order sent
    ("reordered"); an error from the room (such as a rate limit) counts as
    lost ("refused")."""
    occupants, window = _muc_size(ctx.quick)
    duration, warmup = (2.0, 0.5) if ctx.quick else (10.0, 2.0)
    everyone = frozenset(range(occupants))
    outstanding: dict[int, list] = {}  # message number -> [sent at, occupants owed]
    latencies: list[float] = []
    counters = {"stanzas": 0, "delivered": 0, "messages": 0, "dup": 0, "reordered": 0,
                "refused": 0, "not joined": 0, "sent": 0}
    state = {"running": False, "counting": False, "next": 0}
    last = [0] * occupants  # the last message number each occupant got
    joined = [asyncio.get_running_loop().create_future() for _ in range(occupants)]
    answers: dict[bytes, asyncio.Future] = {}
    now = time.perf_counter
    conns, _ = await ctx.login_many(range(occupants))
    sender = conns[0]

    def send() -> None:
        state["next"] += 1
        k = state["next"]
        outstanding[k] = [now(), set(everyone)]
        counters["sent"] += 1
        sender.transport.write(f"<message to='{MUC_ROOM}' type='groupchat' id='muc{k}'>"
                               f"<body>muc {k}</body></message>".encode())

    def receiver(r: int):
        def got(stanza: bytes) -> None:
            counters["stanzas"] += 1
            head = stanza[:stanza.find(b">")]
            error = _MUC_ERROR.search(head) is not None
            if stanza.startswith(b"<presence"):
                # the own presence (a join refused: a presence error instead)
                if not joined[r].done() and (error or _MUC_SELF.search(stanza)):
                    joined[r].set_result(not error)
                return
            if stanza.startswith(b"<iq"):
                waiter = answers.pop(loadgen.stanza_id(stanza), None)
                if waiter is not None:
                    waiter.set_result(stanza)
                return
            if not stanza.startswith(b"<message"):
                return
            if error:
                counters["refused"] += 1
                return
            match = _MUC_BODY.search(stanza)
            if match is None:
                return  # the room's subject on join
            k = int(match.group(1))
            entry = outstanding.get(k)
            if entry is None or r not in entry[1]:
                counters["dup"] += 1
                return
            entry[1].discard(r)
            if k < last[r]:
                counters["reordered"] += 1
            last[r] = max(last[r], k)
            if state["counting"]:
                counters["delivered"] += 1
                latencies.append(now() - entry[0])
            if not entry[1]:
                del outstanding[k]
                if state["counting"]:
                    counters["messages"] += 1
                if state["running"]:
                    send()
        return got

    for r, conn in enumerate(conns):
        conn.stanzas(receiver(r))

    def join(r: int) -> None:
        conns[r].write(f"<presence to='{MUC_ROOM}/{user_name(r)}'><x xmlns='{NS_MUC}'>"
                       f"<history maxstanzas='0'/></x></presence>".encode())

    # The sender creates the room and accepts the instant configuration
    # (XEP-0045 §10.1.2); until then both servers keep a new room locked.
    join(0)
    ok = await asyncio.wait_for(joined[0], 30)
    answers[b"muc-create"] = asyncio.get_running_loop().create_future()
    sender.write(f"<iq type='set' id='muc-create' to='{MUC_ROOM}'><query xmlns='{NS_MUC}#owner'>"
                 f"<x xmlns='jabber:x:data' type='submit'/></query></iq>".encode())
    created = await asyncio.wait_for(answers[b"muc-create"], 30)
    if not ok or _MUC_ERROR.search(created[:created.find(b">")]):
        raise RuntimeError(f"the room was not created: {created!r}")
    # The others join, 20 at a time (each join is broadcast to everyone inside).
    for start in range(1, occupants, 20):
        batch = range(start, min(occupants, start + 20))
        for r in batch:
            join(r)
        done = await asyncio.wait_for(asyncio.gather(*(joined[r] for r in batch)), 60)
        counters["not joined"] += done.count(False)
    await settle(lambda: counters["stanzas"], quiet=0.5)
    state["running"] = True
    for _ in range(window):
        send()
    await asyncio.sleep(warmup)
    state["counting"] = True
    with ctx.measure() as m:
        await asyncio.sleep(duration)
        state["counting"] = False
    state["running"] = False
    deadline = time.monotonic() + (ctx.drain or (5 if ctx.quick else 15))
    while outstanding and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # a late duplicate still shows
    for conn in conns:
        conn.close()
    return {"deliveries/s": counters["delivered"] / m.wall,
            "CPU µs/delivery": _cpu_per(ctx, m, counters["delivered"]),
            "muc p50 ms": percentile(latencies, 50) * 1e3,
            "muc p99 ms": percentile(latencies, 99) * 1e3,
            "messages/s": counters["messages"] / m.wall,
            "lost": sum(len(owed) for _, owed in outstanding.values())
                    + counters["refused"] + counters["not joined"],
            "dup": counters["dup"], "reordered": counters["reordered"],
            "refused": counters["refused"], "not joined": counters["not joined"],
            "sent": counters["sent"]}
