"""SQLite storage backend: one file, three tables, values as JSON text.

The pool holds a single connection, so all statements run one after another
on one thread: writes are serialised without any locking of our own, and a
Deferred fires only after its transaction has committed. The database is in
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
import sqlite3
import time
from typing import Any, Callable, Iterable

from twisted.enterprise import adbapi
from twisted.internet import defer
from zope.interface import implementer

from xmppd.storage.interfaces import (
    ArchiveItem,
    IArchiveStore,
    IKeyValueStore,
    IMapStore,
    IStorage,
)
from xmppd.storage.memory import _archive_id

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
]

_SYNCHRONOUS = ("normal", "full")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _loads(rows: list[tuple]) -> Any:
    """The JSON value in the first column of the first row, or None if no row."""
    return json.loads(rows[0][0]) if rows else None


class _Store:
    """SQL helpers shared by the three store kinds."""

    def __init__(self, storage: SQLiteStorage, name: str) -> None:
        self._storage = storage
        self.name = name

    def _select(self, sql: str, *params: Any) -> defer.Deferred[list[tuple]]:
        return self._storage._connected().runQuery(sql, (self.name, *params))

    def _execute(self, sql: str, *params: Any) -> defer.Deferred[None]:
        return self._storage._connected().runOperation(sql, (self.name, *params))

    def _interact(self, interaction: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        return self._storage._connected().runInteraction(interaction, *args)


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

        def write(txn: adbapi.Transaction) -> None:
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


@implementer(IArchiveStore)
class SQLiteArchiveStore(_Store):
    def append(self, user: str, value: Any, with_: str | None = None,
               when: float | None = None) -> defer.Deferred[str]:
        params = (self.name, user, time.time() if when is None else float(when), with_, _dumps(value))

        def insert(txn: adbapi.Transaction) -> str:
            txn.execute("INSERT INTO archive (store, user, ts, with_, value) VALUES (?, ?, ?, ?, ?)", params)
            return str(txn.lastrowid)

        return self._interact(insert)

    def query(self, user: str, with_: str | None = None, start: float | None = None,
              end: float | None = None, after: str | None = None, before: str | None = None,
              limit: int | None = None, reverse: bool = False) -> defer.Deferred[list[ArchiveItem]]:
        sql = "SELECT id, ts, with_, value FROM archive WHERE store=? AND user=?"
        params: list[Any] = [user]
        for condition, param in (("with_=?", with_), ("ts>=?", start), ("ts<=?", end),
                                 ("id>?", None if after is None else _archive_id(after)),
                                 ("id<?", None if before is None else _archive_id(before))):
            if param is not None:
                sql += " AND " + condition
                params.append(param)
        # Reverse paging selects the newest rows first, then flips them back.
        sql += " ORDER BY id DESC" if reverse else " ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)

        def items(rows: list[tuple]) -> list[ArchiveItem]:
            if reverse:
                rows.reverse()
            return [ArchiveItem(str(i), ts, w, json.loads(text)) for i, ts, w, text in rows]

        return self._select(sql, *params).addCallback(items)

    def count(self, user: str, with_: str | None = None) -> defer.Deferred[int]:
        if with_ is None:
            d = self._select("SELECT COUNT(*) FROM archive WHERE store=? AND user=?", user)
        else:
            d = self._select("SELECT COUNT(*) FROM archive WHERE store=? AND user=? AND with_=?", user, with_)
        return d.addCallback(lambda rows: rows[0][0])

    def delete(self, user: str, ids: Iterable[str] | None = None) -> defer.Deferred[int]:
        if ids is None:
            statements = [("DELETE FROM archive WHERE store=? AND user=?", (self.name, user))]
        else:
            statements = [("DELETE FROM archive WHERE store=? AND user=? AND id=?", (self.name, user, i))
                          for i in {_archive_id(i) for i in ids}]

        def delete(txn: adbapi.Transaction) -> int:
            deleted = 0
            for sql, params in statements:
                txn.execute(sql, params)
                deleted += txn.rowcount
            return deleted

        return self._interact(delete)


@implementer(IStorage)
class SQLiteStorage:
    """Storage in one SQLite file at ``path`` (created, with its directory, by start())."""

    def __init__(self, path: str, synchronous: str = "normal") -> None:
        if synchronous not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}, not {synchronous!r}")
        self.path = path
        self.synchronous = synchronous
        self._pool: adbapi.ConnectionPool | None = None
        self._stores: dict[tuple[type, str], _Store] = {}

    def _configure(self, connection: sqlite3.Connection) -> None:
        # busy_timeout first: switching to WAL needs a lock another process may hold.
        connection.execute("PRAGMA busy_timeout=5000")
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={self.synchronous}")

    def start(self) -> defer.Deferred[None]:
        """Open the pool and create the schema.

        Works whether or not the reactor is running yet: ConnectionPool starts
        its thread pool via ``callWhenRunning`` (immediately if the reactor
        runs, else at startup), and work queued before then waits for it, so
        the returned Deferred fires once the reactor is up and the schema exists.
        """
        if self._pool is not None:
            raise RuntimeError(f"{self.path}: storage already started")
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        self._pool = adbapi.ConnectionPool(
            "sqlite3", self.path, check_same_thread=False,
            # Deferred BEGIN would take the write lock only at the first write
            # and, if another process got there first, fail at once with
            # "database is locked" instead of waiting for busy_timeout.
            isolation_level="IMMEDIATE",
            cp_min=1, cp_max=1, cp_openfun=self._configure)

        def create(txn: adbapi.Transaction) -> None:
            for statement in _SCHEMA:
                txn.execute(statement)

        return self._pool.runInteraction(create)

    def stop(self) -> defer.Deferred[None]:
        """Wait for queued work, then close the connection.

        With a single worker thread, work runs in submission order: once a no-op
        interaction has run, every earlier write has committed.
        """
        pool, self._pool = self._pool, None
        if pool is None:
            return defer.succeed(None)
        if not pool.running:  # nothing can have run: the reactor never started
            pool.close()
            return defer.succeed(None)

        def close(result: object) -> object:
            pool.close()
            return result

        return pool.runInteraction(lambda txn: None).addBoth(close)

    def _connected(self) -> adbapi.ConnectionPool:
        if self._pool is None:
            raise RuntimeError(f"{self.path}: storage not started")
        return self._pool

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

        def purge(txn: adbapi.Transaction) -> None:
            for table in ("kv", "map", "archive"):
                txn.execute(f"DELETE FROM {table} WHERE user=?", (user,))

        return self._connected().runInteraction(purge)
