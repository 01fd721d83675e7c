"""The archive (XEP-0313) rows of the benchmark, both servers with the
``mam`` extra (xmppd's ``mam`` component, Prosody's mod_mam on its SQL
storage with SQLite):

``mam-messages``
    the ``messages-plain`` load (100 pairs, 10 chat messages in flight
    each) with every message archived twice, for its sender and for its
    recipient, before it is delivered.
``mam-page-day``
    one user with a million archived messages over a year, written straight
    into each server's database before it starts (not sent): the user pages
    back through whole days of it — ``start``/``end`` the day, ``<before/>``
    pages of 50 from its end until ``<fin complete='true'/>`` — five days
    spread over the year, one after the other. Figures: the time to page
    back one day (median of the five), the 99th percentile of one page, and
    every day's messages checked against what was seeded (``lost``).

The seeded databases are built once per run of the runner (about 15 s each)
and copied for every repeat.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import re
import shutil
import sqlite3
import sys
import time
import uuid
from pathlib import Path

import scenarios
from scenarios import _MESSAGE_METRICS, Context, Metric, Scenario, _messages, percentile
from servers import DOMAIN, ROOT, user_name

SEEDED = 1_000_000
SEEDED_QUICK = 100_000
DAYS = 365
CONTACTS = 50
#: days back from the end of the seeded year that are paged through
PAGED_DAYS = (20, 90, 170, 250, 330)
PAGE = 50
CACHE = Path(os.environ.get("TMPDIR", "/tmp")) / "xmppd-bench-mam-cache"
MAM = "urn:xmpp:mam:2"



def _seeded(quick: bool) -> int:
    return SEEDED_QUICK if quick else SEEDED


def _rows(n: int, end: int):
    """(number, when, contact index) of the seeded messages: ``n`` over the
    ``DAYS`` days before ``end``, oldest first, whole seconds."""
    span = DAYS * 86400
    for i in range(n):
        yield i, end - span + (i * span) // n, 1 + i % CONTACTS


def _message(i: int, contact: int) -> str:
    return (f"<message xmlns='jabber:client' from='{user_name(contact)}@{DOMAIN}/bench' "
            f"to='{user_name(0)}@{DOMAIN}' type='chat' id='seed-{i}'>"
            f"<body>seeded message {i}</body></message>")


def _seed_xmppd(path: Path, n: int, end: int) -> None:
    """Rows in xmppd's archive table (its own schema, from the tree under test)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from xmppd.storage.interfaces import encode_value
    from xmppd.storage.sqlite import _SCHEMA
    db = sqlite3.connect(path)
    for statement in _SCHEMA:
        db.execute(statement)
    user = f"{user_name(0)}@{DOMAIN}"
    db.executemany("INSERT INTO archive (store, user, ts, with_, value) VALUES ('mam', ?, ?, ?, ?)",
                   ((user, float(when), f"{user_name(c)}@{DOMAIN}", encode_value(_message(i, c)))
                    for i, when, c in _rows(n, end)))
    db.commit()
    db.close()


#: Prosody 0.12's tables as mod_storage_sql creates them on SQLite (util/sql.lua
#: writes CREATE ... IF NOT EXISTS, so Prosody keeps these at start).
_PROSODY_SCHEMA = [
    'CREATE TABLE IF NOT EXISTS "prosody" ("host" TEXT NOT NULL, "user" TEXT NOT NULL, '
    '"store" TEXT NOT NULL, "key" TEXT NOT NULL, "type" TEXT NOT NULL, "value" TEXT NOT NULL);',
    'CREATE INDEX IF NOT EXISTS "prosody_index" ON "prosody" ("host", "user", "store", "key");',
    'CREATE TABLE IF NOT EXISTS "prosodyarchive" ("sort_id" INTEGER PRIMARY KEY AUTOINCREMENT, '
    '"host" TEXT NOT NULL, "user" TEXT NOT NULL, "store" TEXT NOT NULL, "key" TEXT NOT NULL, '
    '"when" INTEGER NOT NULL, "with" TEXT NOT NULL, "type" TEXT NOT NULL, "value" TEXT NOT NULL);',
    'CREATE UNIQUE INDEX IF NOT EXISTS "prosodyarchive_index" ON "prosodyarchive" '
    '("host", "user", "store", "key");',
    'CREATE INDEX IF NOT EXISTS "prosodyarchive_with_when" ON "prosodyarchive" '
    '("host", "user", "store", "with", "when");',
    'CREATE INDEX IF NOT EXISTS "prosodyarchive_when" ON "prosodyarchive" '
    '("host", "user", "store", "when");',
    'CREATE INDEX IF NOT EXISTS "prosodyarchive_sort" ON "prosodyarchive" '
    '("host", "user", "store", "sort_id");',
]


def _prosody_database(path: Path) -> sqlite3.Connection:
    """Prosody's archive database, made before it starts so that it is in
    WAL mode (a property of the file, which Prosody 0.12 never sets itself:
    in its default rollback-journal mode each message's commit costs three
    or four fsyncs instead of one)."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    for statement in _PROSODY_SCHEMA:
        db.execute(statement)
    db.commit()
    return db


def _seed_prosody(path: Path, n: int, end: int) -> None:
    """Rows in Prosody's prosodyarchive table, as mod_mam appends them (store
    ``archive``, the user's node, a UUID key, the stanza as type ``xml``)."""
    db = _prosody_database(path)
    db.executemany('INSERT INTO "prosodyarchive" ("host", "user", "store", "key", "when", "with", '
                   '"type", "value") VALUES (?, ?, \'archive\', ?, ?, ?, \'xml\', ?)',
                   ((DOMAIN, user_name(0), str(uuid.UUID(int=i + 1)), when,
                     f"{user_name(c)}@{DOMAIN}", _message(i, c)) for i, when, c in _rows(n, end)))
    db.commit()
    db.close()


def _database(server) -> Path:
    if server.name == "xmppd":
        return server.dir / "data" / "xmppd.sqlite3"
    return server.dir / "data" / "archive.sqlite"


def _like_for_like(server) -> None:
    """The same durability in both: Prosody's SQLite connection runs with
    SQLite's default synchronous=FULL (0.12 has no setting for it), so
    xmppd's runs with ``sqlite_synchronous = full`` too (its default,
    normal, skips the fsync of each commit); and Prosody's database is in
    WAL mode as xmppd's is."""
    if server.name == "xmppd":
        ini = server.dir / "xmppd.ini"
        ini.write_text(ini.read_text().replace("[server]\n", "[server]\nsqlite_synchronous = full\n", 1))
        return
    target = _database(server)
    if not target.exists():
        _prosody_database(target).close()
    if os.geteuid() == 0:
        user = pwd.getpwnam("prosody")
        os.chown(target, user.pw_uid, user.pw_gid)


def _seed(server, quick: bool) -> None:
    """Put the seeded archive into ``server``'s fresh directory: built once
    (with the accounts ``prepare`` wrote, which are the same every run) and
    copied after that."""
    n = _seeded(quick)
    target = _database(server)
    cached = CACHE / f"{server.name}-{n}-{server.users}.sqlite"
    meta = CACHE / f"seeded-{n}.json"
    CACHE.mkdir(parents=True, exist_ok=True)
    if not meta.exists():
        meta.write_text(json.dumps({"end": int(time.time()) - 3600}))
    end = json.loads(meta.read_text())["end"]
    if not cached.exists():
        (_seed_xmppd if server.name == "xmppd" else _seed_prosody)(target, n, end)
        shutil.copyfile(target, cached.with_suffix(".part"))
        os.replace(cached.with_suffix(".part"), cached)
    else:
        shutil.copyfile(cached, target)
    if server.name == "prosody" and os.geteuid() == 0:
        user = pwd.getpwnam("prosody")
        os.chown(target, user.pw_uid, user.pw_gid)
    server.seeded_end = end


class ArchiveScenario(Scenario):
    """A scenario of the ``mam`` extra: between writing their configuration
    and starting, both servers get the same durability (:func:`_like_for_like`)
    and, with ``seeded``, the seeded archive."""

    seeded = False

    def start(self, server, quick: bool) -> None:
        prepare = server.prepare

        def prepare_and_seed(users: int) -> None:
            prepare(users)
            server.users = users
            if self.seeded:
                _seed(server, quick)
            _like_for_like(server)
        server.prepare = prepare_and_seed
        try:
            super().start(server, quick)
        finally:
            del server.prepare


_RESULT = re.compile(rb"<result[^>]*>")
_BODY = re.compile(rb"seeded message (\d+)")
_FIRST = re.compile(rb"<first[^>]*>([^<]*)</first>")
_COMPLETE = re.compile(rb"""<fin[^>]*complete=['"]true['"]""")


def _stamp(when: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


async def page_day(ctx: Context) -> dict[str, float]:
    end = ctx.server.seeded_end
    n = _seeded(ctx.quick)
    conn = await ctx.login(0)
    answers: dict[bytes, asyncio.Future] = {}
    current: list[bytes] = []

    def received(stanza: bytes) -> None:
        if stanza.startswith(b"<message") and _RESULT.search(stanza):
            current.append(stanza)
        elif stanza.startswith(b"<iq"):
            future = answers.pop(re.search(rb"""id=['"]([^'"]+)""", stanza).group(1), None)
            if future is not None:
                future.set_result((stanza, current[:]))
                current.clear()

    conn.stanzas(received)
    page_times: list[float] = []
    day_times: list[float] = []
    lost = dup = 0
    seq = 0
    with ctx.measure():
        for back in PAGED_DAYS:
            day_start = end - back * 86400
            day_end = day_start + 86399
            day = [i for i, _, _ in _day_rows(n, end, day_start, day_end)]
            got: list[int] = []
            before = ""
            t_day = time.perf_counter()
            while True:
                seq += 1
                ident = f"page{seq}".encode()
                answers[ident] = asyncio.get_running_loop().create_future()
                rsm_before = "<before/>" if not before else f"<before>{before}</before>"
                t0 = time.perf_counter()
                conn.transport.write(
                    f"<iq type='set' id='page{seq}'><query xmlns='{MAM}'>"
                    f"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
                    f"<value>{MAM}</value></field><field var='start'><value>{_stamp(day_start)}"
                    f"</value></field><field var='end'><value>{_stamp(day_end)}</value></field></x>"
                    f"<set xmlns='http://jabber.org/protocol/rsm'><max>{PAGE}</max>{rsm_before}"
                    f"</set></query></iq>".encode())
                answer, results = await asyncio.wait_for(answers[ident], 60)
                page_times.append(time.perf_counter() - t0)
                got = [int(_BODY.search(r).group(1)) for r in results] + got
                if _COMPLETE.search(answer) or not results:
                    break
                before = _FIRST.search(answer).group(1).decode()
            day_times.append(time.perf_counter() - t_day)
            # every message of the day, each once, oldest first, nothing else
            dup += len(got) - len(set(got))
            if got != day:
                lost += max(1, len(set(day) ^ set(got)))
    conn.close()
    return {"day ms": percentile(day_times, 50) * 1e3, "page p50 ms": percentile(page_times, 50) * 1e3,
            "page p99 ms": percentile(page_times, 99) * 1e3, "lost": lost, "dup": dup,
            "sent": len(page_times)}


def _day_rows(n: int, end: int, day_start: int, day_end: int):
    """The seeded rows within one day, found by arithmetic rather than by
    walking a million (the rows' times increase with their number)."""
    span = DAYS * 86400
    # when(i) = end - span + i*span//n is non-decreasing in i
    lo = max(0, ((day_start - (end - span)) * n) // span - 2)
    hi = min(n, ((day_end - (end - span)) * n) // span + 3)
    return [(i, end - span + (i * span) // n, 0) for i in range(lo, hi)
            if day_start <= end - span + (i * span) // n <= day_end]


class SeededScenario(ArchiveScenario):
    seeded = True


_messages_run = _messages(False)
scenarios.SCENARIOS["mam-messages"] = ArchiveScenario(
    "mam-messages", users=200, tls=False, metrics=_MESSAGE_METRICS, run=_messages_run,
    about=(_messages_run.__doc__ or "").strip(), extras=("mam",))
page_day.__doc__ = __doc__.split("``mam-page-day``")[1].split("The seeded")[0].strip()
scenarios.SCENARIOS["mam-page-day"] = SeededScenario(
    "mam-page-day", users=CONTACTS + 1, tls=False,
    metrics=[Metric("day ms", "lower", 1.0), Metric("page p50 ms", "lower", 1.0),
             Metric("page p99 ms", "lower", 1.0)],
    run=page_day, about=page_day.__doc__, extras=("mam",))
