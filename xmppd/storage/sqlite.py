"""SQLite storage backend: one file, three tables, values as JSON text.

One worker thread owns the connection, so all statements run one after
another off the reactor thread: writes are serialised without any locking of
our own. Work queued while the worker is busy is run as one batch in a single
transaction (each operation in its own savepoint, so one failure does not undo
the others), and a Deferred fires only after its batch has committed: under
load, a thousand writes cost one commit and one wake-up of the reactor
instead of a thousand. The database is in
WAL mode, where a committed transaction survives a ``kill -9`` even with
``synchronous=normal`` (``full`` also survives power loss); WAL also lets the
admin command read and write the same file from another process while the
server runs, each waiting up to ``busy_timeout`` for the other's write lock.

Invalid arguments (a value that is not JSON-serialisable, a malformed archive
id) raise immediately in the caller, before anything is written: values are
serialised in the reactor thread so a caller mutating a value after the call
can't race the worker thread.
"""

from __future__ import annotations

import json
import os
import queue
import sqlite3
import threading
import time
from typing import Any, Callable, Iterable

from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import implementer

from xmppd.storage.interfaces import (
    ArchiveItem,
    IArchiveStore,
    IKeyValueStore,
    IMapStore,
    IStorage,
    encode_value,
)
from xmppd.storage.memory import _archive_id, _fitting

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS kv ("
    " store TEXT NOT NULL, user TEXT NOT NULL, value TEXT NOT NULL,"
    " PRIMARY KEY (store, user))",
    "CREATE TABLE IF NOT EXISTS map ("
    " store TEXT NOT NULL, user TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,"
    " PRIMARY KEY (store, user, key))",
    "CREATE TABLE IF NOT EXISTS archive ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, store TEXT NOT NULL, user TEXT NOT NULL,"
    " ts REAL NOT NULL, with_ TEXT, value TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS archive_user ON archive (store, user, id)",
    "CREATE INDEX IF NOT EXISTS archive_with ON archive (store, user, with_, id)",
    # Time-bounded queries (MAM start/end) and retention find their rows here
    # instead of scanning a user's whole archive: see SQLiteArchiveStore.query.
    "CREATE INDEX IF NOT EXISTS archive_when ON archive (store, user, ts)",
]

_SYNCHRONOUS = ("normal", "full")


_dumps = encode_value


def _loads(rows: list[tuple]) -> Any:
    """The JSON value in the first column of the first row, or None if no row."""
    return json.loads(rows[0][0]) if rows else None


class _Store:
    """SQL helpers shared by the three store kinds."""

    def __init__(self, storage: SQLiteStorage, name: str) -> None:
        self._storage = storage
        self.name = name

    def _select(self, sql: str, *params: Any) -> defer.Deferred[list[tuple]]:
        return self._storage._connected().submit(_fetchall, sql, (self.name, *params))

    def _execute(self, sql: str, *params: Any) -> defer.Deferred[None]:
        return self._storage._connected().submit(_execute, sql, (self.name, *params))

    def _interact(self, interaction: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        return self._storage._connected().submit(interaction, *args)


def _fetchall(cursor: sqlite3.Cursor, sql: str, params: tuple) -> list[tuple]:
    return cursor.execute(sql, params).fetchall()


def _execute(cursor: sqlite3.Cursor, sql: str, params: tuple) -> None:
    cursor.execute(sql, params)


def single_statement(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark worker work that runs one SQL statement (or fails before it):
    in a batch it needs no savepoint of its own (see _Worker._transaction)."""
    fn.single_statement = True  # type: ignore[attr-defined]
    return fn


single_statement(_fetchall)
single_statement(_execute)


#: Most operations one transaction takes from the queue.
MAX_BATCH = 500


class _Worker:
    """The thread that owns the SQLite connection, and its queue of work.

    ``submit(fn, *args)`` queues ``fn(cursor, *args)`` and returns a Deferred
    that fires in the reactor thread after the transaction holding it has
    committed. Results of one batch reach the reactor in one call.
    """

    def __init__(self, path: str, configure: Callable[[sqlite3.Connection], None]) -> None:
        from twisted.internet import reactor
        self._reactor = reactor
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, args=(path, configure),
                                        name=f"sqlite {os.path.basename(path)}", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self._queue.put((fn, args, d))
        return d

    def close(self) -> defer.Deferred[None]:
        """Run what is queued, then close the connection and end the thread."""
        d: defer.Deferred[None] = defer.Deferred()
        self._queue.put((None, (), d))
        return d

    def _run(self, path: str, configure: Callable[[sqlite3.Connection], None]) -> None:
        try:
            # Transactions are ours to begin and end (isolation_level=None).
            # BEGIN IMMEDIATE takes the write lock at once: a deferred BEGIN
            # would take it only at the first write and, if another process
            # got there first, fail at once with "database is locked" instead
            # of waiting for busy_timeout.
            connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            configure(connection)
        except Exception:
            failure = Failure()
            while True:  # fail everything ever submitted
                fn, _args, d = self._queue.get()
                self._reactor.callFromThread(d.errback, failure)
                if fn is None:
                    return
        cursor = connection.cursor()
        get = self._queue.get
        get_nowait = self._queue.get_nowait
        while True:
            batch = [get()]
            while len(batch) < MAX_BATCH and batch[-1][0] is not None:
                try:
                    batch.append(get_nowait())
                except queue.Empty:
                    break
            closing = batch[-1][0] is None
            work = batch[:-1] if closing else batch
            results: list[tuple[defer.Deferred, bool, Any]] = []
            if work:
                results = self._transaction(cursor, work)
            if closing:
                connection.close()
                results.append((batch[-1][2], True, None))
            self._reactor.callFromThread(_deliver, results)
            if closing:
                return

    @staticmethod
    def _transaction(cursor: sqlite3.Cursor, work: list) -> list[tuple[defer.Deferred, bool, Any]]:
        """Run ``work`` in one transaction. Alone, an operation that fails rolls
        the transaction back; in a batch, it rolls back to its own savepoint and
        the others commit. If the transaction itself fails (BEGIN, COMMIT, a
        savepoint: the disk, a lock), every operation in it fails."""
        results = []
        try:
            cursor.execute("BEGIN IMMEDIATE")
            if len(work) == 1:
                fn, args, d = work[0]
                try:
                    results.append((d, True, fn(cursor, *args)))
                except Exception:
                    failure = Failure()
                    _rollback(cursor)
                    return [(d, False, failure)]
            else:
                for fn, args, d in work:
                    # One statement needs no savepoint: SQLite undoes a
                    # failed statement by itself and the transaction goes on.
                    # Three statements per write instead of one is what a
                    # busy reactor's hold on the GIL makes expensive.
                    single = getattr(fn, "single_statement", False)
                    if not single:
                        cursor.execute("SAVEPOINT op")
                    try:
                        results.append((d, True, fn(cursor, *args)))
                    except Exception:
                        failure = Failure()
                        results.append((d, False, failure))
                        try:
                            if not single:
                                cursor.execute("ROLLBACK TO op")
                            elif not cursor.connection.in_transaction:
                                raise sqlite3.OperationalError("the transaction ended")
                        except sqlite3.Error:
                            # SQLite ended the whole transaction (disk full, I/O
                            # error): nothing in it stands; the op's error says why.
                            _rollback(cursor)
                            return [(d2, False, failure) for _fn, _args, d2 in work]
                        continue
                    if not single:
                        cursor.execute("RELEASE op")
            cursor.execute("COMMIT")
        except Exception:
            failure = Failure()
            _rollback(cursor)
            return [(d, False, failure) for _fn, _args, d in work]
        return results


def _rollback(cursor: sqlite3.Cursor) -> None:
    try:
        cursor.execute("ROLLBACK")
    except sqlite3.Error:
        pass  # no transaction left to roll back


def _deliver(results: list[tuple[defer.Deferred, bool, Any]]) -> None:
    for d, ok, value in results:
        if ok:
            d.callback(value)
        else:
            d.errback(value)


@implementer(IKeyValueStore)
class SQLiteKeyValueStore(_Store):
    def get(self, user: str) -> defer.Deferred[Any]:
        return self._select("SELECT value FROM kv WHERE store=? AND user=?", user).addCallback(_loads)

    def set(self, user: str, value: Any) -> defer.Deferred[None]:
        if value is None:
            return self.delete(user)
        return self._execute("INSERT OR REPLACE INTO kv (store, user, value) VALUES (?, ?, ?)",
                             user, _dumps(value))

    def delete(self, user: str) -> defer.Deferred[None]:
        return self._execute("DELETE FROM kv WHERE store=? AND user=?", user)

    def users(self) -> defer.Deferred[list[str]]:
        d = self._select("SELECT user FROM kv WHERE store=?")
        return d.addCallback(lambda rows: sorted(row[0] for row in rows))


@implementer(IMapStore)
class SQLiteMapStore(_Store):
    def get(self, user: str, key: str) -> defer.Deferred[Any]:
        d = self._select("SELECT value FROM map WHERE store=? AND user=? AND key=?", user, key)
        return d.addCallback(_loads)

    def set(self, user: str, key: str, value: Any) -> defer.Deferred[None]:
        return self.set_many(user, {key: value})

    def set_many(self, user: str, items: dict[str, Any]) -> defer.Deferred[None]:
        rows = [(self.name, user, key, None if value is None else _dumps(value))
                for key, value in items.items()]

        def write(txn: sqlite3.Cursor) -> None:
            for store, user_, key, text in rows:
                if text is None:
                    txn.execute("DELETE FROM map WHERE store=? AND user=? AND key=?", (store, user_, key))
                else:
                    txn.execute("INSERT OR REPLACE INTO map (store, user, key, value) VALUES (?, ?, ?, ?)",
                                (store, user_, key, text))

        return self._interact(write)

    def delete(self, user: str, key: str) -> defer.Deferred[None]:
        return self._execute("DELETE FROM map WHERE store=? AND user=? AND key=?", user, key)

    def items(self, user: str) -> defer.Deferred[dict[str, Any]]:
        d = self._select("SELECT key, value FROM map WHERE store=? AND user=?", user)
        return d.addCallback(lambda rows: {key: json.loads(text) for key, text in rows})

    def clear(self, user: str) -> defer.Deferred[None]:
        return self._execute("DELETE FROM map WHERE store=? AND user=?", user)


#: Larger than any archive id (SQLite's rowids are signed 64-bit).
_MAX_ID = 2**63 - 1


def _edge(cursor: sqlite3.Cursor, key: tuple[str, str], condition: str, when: float) -> int | None:
    """The id of the first item of ``key`` (store, user) in ``condition``'s
    order on archive_when, or None."""
    row = cursor.execute(f"SELECT id FROM archive WHERE store=? AND user=? AND {condition} LIMIT 1",
                         (*key, when)).fetchone()
    return None if row is None else row[0]


@implementer(IArchiveStore)
class SQLiteArchiveStore(_Store):
    def append(self, user: str, value: Any, with_: str | None = None,
               when: float | None = None) -> defer.Deferred[str]:
        stamp = time.time() if when is None else float(when)
        params = (self.name, user, stamp, self.name, user, stamp, with_, _dumps(value))

        @single_statement
        def insert(txn: sqlite3.Cursor) -> str:
            # Never back in time within a user's items (IArchiveStore.append):
            # MAX(ts) is one probe of archive_when.
            txn.execute("INSERT INTO archive (store, user, ts, with_, value)"
                        " VALUES (?, ?, MAX(?, COALESCE((SELECT MAX(ts) FROM archive"
                        " WHERE store=? AND user=?), ?)), ?, ?)", params)
            return str(txn.lastrowid)

        return self._interact(insert)

    def _where(self, user: str, with_: str | None, start: float | None, end: float | None,
               after: str | None, before: str | None, ids: Iterable[str] | None,
               ) -> tuple[str, list[Any], Callable[[sqlite3.Cursor], list[Any] | None]]:
        """The WHERE clause of a query or count, its parameters, and the
        function that, in the worker, adds the parameters of the time bounds
        (None: nothing is in the time range).

        The time bounds are written "+ts" so that SQLite never walks
        archive_when for them: rows come from an id index, in id order,
        between the id bounds found first. Times never go back within a
        user's items (append), so the items in [start, end] are exactly
        those between the first item at or after start and the last at or
        before end: two probes of archive_when. Without them a page of one
        day of a big archive would scan every item newer (or older) than it.
        """
        sql = "store=? AND user=?"
        params: list[Any] = [self.name, user]
        wanted = None if ids is None else json.dumps(sorted({_archive_id(i) for i in ids}))
        for condition, param in (("id IN (SELECT value FROM json_each(?))", wanted),
                                 ("with_=?", with_), ("+ts>=?", start), ("+ts<=?", end),
                                 ("id>?", None if after is None else _archive_id(after)),
                                 ("id<?", None if before is None else _archive_id(before))):
            if param is not None:
                sql += " AND " + condition
                params.append(param)
        key = (self.name, user)

        def bounds(cursor: sqlite3.Cursor) -> list[Any] | None:
            if start is None and end is None:
                return []
            first = 0 if start is None else _edge(cursor, key, "ts>=? ORDER BY ts, id", start)
            last = _MAX_ID if end is None else _edge(cursor, key, "ts<=? ORDER BY ts DESC, id DESC", end)
            if first is None or last is None:
                return None
            return [first, last]

        if start is not None or end is not None:
            sql += " AND id>=? AND id<=?"
        return sql, params, bounds

    def query(self, user: str, with_: str | None = None, start: float | None = None,
              end: float | None = None, after: str | None = None, before: str | None = None,
              limit: int | None = None, reverse: bool = False,
              max_bytes: int | None = None,
              ids: Iterable[str] | None = None) -> defer.Deferred[list[ArchiveItem]]:
        where, params, bounds = self._where(user, with_, start, end, after, before, ids)
        # Reverse paging selects the newest rows first, then flips them back.
        sql = (f"SELECT id, ts, with_, value FROM archive WHERE {where}"
               f" ORDER BY id{' DESC' if reverse else ''}{' LIMIT ?' if limit is not None else ''}")

        def fetch(cursor: sqlite3.Cursor) -> list[tuple]:
            edges = bounds(cursor)
            if edges is None:
                return []  # nothing in the time range
            args = params + edges + ([limit] if limit is not None else [])
            rows = cursor.execute(sql, args)
            if max_bytes is None:
                return rows.fetchall()
            # Row by row, so what is past the bound is never read into memory.
            # Stored text is ASCII (encode_value): its length is its bytes.
            return _fitting(rows, max_bytes, lambda row: len(row[3]))

        def items(rows: list[tuple]) -> list[ArchiveItem]:
            if reverse:
                rows.reverse()
            return [ArchiveItem(str(i), ts, w, json.loads(text), len(text))
                    for i, ts, w, text in rows]

        return self._interact(fetch).addCallback(items)

    def count(self, user: str, with_: str | None = None, start: float | None = None,
              end: float | None = None, ids: Iterable[str] | None = None) -> defer.Deferred[int]:
        where, params, bounds = self._where(user, with_, start, end, None, None, ids)
        sql = f"SELECT COUNT(*) FROM archive WHERE {where}"

        def count(cursor: sqlite3.Cursor) -> int:
            edges = bounds(cursor)
            return 0 if edges is None else cursor.execute(sql, params + edges).fetchone()[0]

        return self._interact(count)

    def size(self, user: str, with_: str | None = None) -> defer.Deferred[int]:
        # Bytes, not characters (the same while stored text is ASCII).
        sql = "SELECT TOTAL(LENGTH(CAST(value AS BLOB))) FROM archive WHERE store=? AND user=?"
        if with_ is None:
            d = self._select(sql, user)
        else:
            d = self._select(sql + " AND with_=?", user, with_)
        return d.addCallback(lambda rows: int(rows[0][0]))

    def delete(self, user: str, ids: Iterable[str] | None = None) -> defer.Deferred[int]:
        if ids is None:
            statements = [("DELETE FROM archive WHERE store=? AND user=?", (self.name, user))]
        else:
            statements = [("DELETE FROM archive WHERE store=? AND user=? AND id=?", (self.name, user, i))
                          for i in {_archive_id(i) for i in ids}]

        def delete(txn: sqlite3.Cursor) -> int:
            deleted = 0
            for sql, params in statements:
                txn.execute(sql, params)
                deleted += txn.rowcount
            return deleted

        return self._interact(delete)

    def get(self, user: str, item_id: str) -> defer.Deferred[ArchiveItem | None]:
        d = self._select("SELECT id, ts, with_, value FROM archive WHERE store=? AND user=? AND id=?",
                         user, _archive_id(item_id))
        return d.addCallback(lambda rows: ArchiveItem(str(rows[0][0]), rows[0][1], rows[0][2],
                                                      json.loads(rows[0][3]), len(rows[0][3]))
                             if rows else None)

    def replace(self, user: str, item_id: str, value: Any) -> defer.Deferred[bool]:
        params = (_dumps(value), self.name, user, _archive_id(item_id))

        def update(txn: sqlite3.Cursor) -> bool:
            txn.execute("UPDATE archive SET value=? WHERE store=? AND user=? AND id=?", params)
            return txn.rowcount > 0

        return self._interact(update)

    def expire(self, before: float, user: str | None = None) -> defer.Deferred[int]:
        if user is None:
            sql, params = "DELETE FROM archive WHERE store=? AND ts<?", (self.name, float(before))
        else:
            sql, params = ("DELETE FROM archive WHERE store=? AND user=? AND ts<?",
                           (self.name, user, float(before)))

        def delete(txn: sqlite3.Cursor) -> int:
            txn.execute(sql, params)
            return txn.rowcount

        return self._interact(delete)

    def users(self) -> defer.Deferred[list[str]]:
        d = self._select("SELECT DISTINCT user FROM archive WHERE store=?")
        return d.addCallback(lambda rows: sorted(row[0] for row in rows))


@implementer(IStorage)
class SQLiteStorage:
    """Storage in one SQLite file at ``path`` (created, with its directory, by start())."""

    def __init__(self, path: str, synchronous: str = "normal") -> None:
        if synchronous not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}, not {synchronous!r}")
        self.path = path
        self.synchronous = synchronous
        self._worker: _Worker | None = None
        self._stores: dict[tuple[type, str], _Store] = {}

    def _configure(self, connection: sqlite3.Connection) -> None:
        # busy_timeout first: switching to WAL needs a lock another process may hold.
        connection.execute("PRAGMA busy_timeout=5000")
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={self.synchronous}")

    def start(self) -> defer.Deferred[None]:
        """Start the worker and create the schema.

        Works whether or not the reactor is running yet: the worker's results
        reach the reactor through ``callFromThread``, which waits for the
        reactor to run, so the returned Deferred fires once it is up and the
        schema exists.
        """
        if self._worker is not None:
            raise RuntimeError(f"{self.path}: storage already started")
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        self._worker = _Worker(self.path, self._configure)

        def create(cursor: sqlite3.Cursor) -> None:
            for statement in _SCHEMA:
                cursor.execute(statement)

        return self._worker.submit(create)

    def stop(self) -> defer.Deferred[None]:
        """Wait for queued work, then close the connection.

        The worker runs work in submission order, so when the close runs every
        earlier write has committed.
        """
        worker, self._worker = self._worker, None
        if worker is None:
            return defer.succeed(None)
        return worker.close()

    def _connected(self) -> _Worker:
        if self._worker is None:
            raise RuntimeError(f"{self.path}: storage not started")
        return self._worker

    def _store(self, cls: type, name: str) -> Any:
        store = self._stores.get((cls, name))
        if store is None:
            store = self._stores[cls, name] = cls(self, name)
        return store

    def keyvalue(self, name: str) -> SQLiteKeyValueStore:
        return self._store(SQLiteKeyValueStore, name)

    def map(self, name: str) -> SQLiteMapStore:
        return self._store(SQLiteMapStore, name)

    def archive(self, name: str) -> SQLiteArchiveStore:
        return self._store(SQLiteArchiveStore, name)

    def purge_user(self, user: str) -> defer.Deferred[None]:
        """Delete the user's rows from every table, whichever process created the stores."""

        def purge(txn: sqlite3.Cursor) -> None:
            for table in ("kv", "map", "archive"):
                txn.execute(f"DELETE FROM {table} WHERE user=?", (user,))

        return self._connected().submit(purge)
