"""In-memory storage backend, for unit tests and throwaway servers.

Every method returns an already-fired Deferred, so code under test runs to
completion synchronously without a reactor. Values are kept as the JSON text
SQLite stores too (:func:`~xmppd.storage.interfaces.encode_value`): callers
can't mutate stored state through a value they passed in or got back, a value
that SQLite could not store fails here too, and sizes in bytes are the same.
"""

from __future__ import annotations

import bisect
import itertools
import json
import time
from typing import Any, Callable, Iterable

from twisted.internet import defer
from zope.interface import implementer

from xmppd.storage.interfaces import (
    ArchiveItem,
    IArchiveStore,
    IKeyValueStore,
    IMapStore,
    IStorage,
    encode_value,
)


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _archive_id(item_id: Any) -> int:
    """Archive ids are decimal integers, as in SQLite; anything else is a caller bug."""
    try:
        return int(item_id)
    except (TypeError, ValueError):
        raise ValueError(f"invalid archive id {item_id!r}") from None


def _fitting(rows: Iterable[Any], max_bytes: int, size: Callable[[Any], int]) -> list[Any]:
    """The first ``rows``, up to the one whose size takes the total to
    ``max_bytes`` or beyond: the rule of ``IArchiveStore.query(max_bytes=)``."""
    taken: list[Any] = []
    total = 0
    for row in rows:
        taken.append(row)
        total += size(row)
        if total >= max_bytes:
            break
    return taken


def _item(row: tuple[int, float, str | None, str]) -> ArchiveItem:
    item_id, when, with_, text = row
    return ArchiveItem(str(item_id), when, with_, json.loads(text), len(text))


@implementer(IKeyValueStore)
class MemoryKeyValueStore:
    def __init__(self, name: str) -> None:
        self.name = name
        self._data: dict[str, str] = {}

    def get(self, user: str) -> defer.Deferred[Any]:
        return defer.succeed(_load(self._data.get(user)))

    def set(self, user: str, value: Any) -> defer.Deferred[None]:
        if value is None:
            return self.delete(user)
        self._data[user] = encode_value(value)
        return defer.succeed(None)

    def delete(self, user: str) -> defer.Deferred[None]:
        self._data.pop(user, None)
        return defer.succeed(None)

    def users(self) -> defer.Deferred[list[str]]:
        return defer.succeed(sorted(self._data))

    def _purge(self, user: str) -> None:
        self._data.pop(user, None)


@implementer(IMapStore)
class MemoryMapStore:
    def __init__(self, name: str) -> None:
        self.name = name
        self._data: dict[str, dict[str, str]] = {}

    def get(self, user: str, key: str) -> defer.Deferred[Any]:
        return defer.succeed(_load(self._data.get(user, {}).get(key)))

    def set(self, user: str, key: str, value: Any) -> defer.Deferred[None]:
        return self.set_many(user, {key: value})

    def set_many(self, user: str, items: dict[str, Any]) -> defer.Deferred[None]:
        # Serialise everything first so a bad value changes nothing, as a
        # rolled-back transaction would.
        encoded = {key: None if value is None else encode_value(value) for key, value in items.items()}
        mapping = self._data.setdefault(user, {})
        for key, text in encoded.items():
            if text is None:
                mapping.pop(key, None)
            else:
                mapping[key] = text
        if not mapping:
            del self._data[user]
        return defer.succeed(None)

    def delete(self, user: str, key: str) -> defer.Deferred[None]:
        return self.set_many(user, {key: None})

    def items(self, user: str) -> defer.Deferred[dict[str, Any]]:
        return defer.succeed({key: _load(text) for key, text in self._data.get(user, {}).items()})

    def clear(self, user: str) -> defer.Deferred[None]:
        self._data.pop(user, None)
        return defer.succeed(None)

    _purge = clear


@implementer(IArchiveStore)
class MemoryArchiveStore:
    def __init__(self, name: str) -> None:
        self.name = name
        self._ids = itertools.count(1)
        #: user → [(id, when, with_, JSON text)], in insertion order
        self._data: dict[str, list[tuple[int, float, str | None, str]]] = {}

    def append(self, user: str, value: Any, with_: str | None = None,
               when: float | None = None) -> defer.Deferred[str]:
        text = encode_value(value)
        item_id = next(self._ids)
        rows = self._data.setdefault(user, [])
        stamp = time.time() if when is None else float(when)
        if rows and rows[-1][1] > stamp:
            stamp = rows[-1][1]  # never back in time (IArchiveStore.append)
        rows.append((item_id, stamp, with_, text))
        return defer.succeed(str(item_id))

    def query(self, user: str, with_: str | None = None, start: float | None = None,
              end: float | None = None, after: str | None = None, before: str | None = None,
              limit: int | None = None, reverse: bool = False,
              max_bytes: int | None = None,
              ids: Iterable[str] | None = None) -> defer.Deferred[list[ArchiveItem]]:
        after_id = None if after is None else _archive_id(after)
        before_id = None if before is None else _archive_id(before)
        wanted = None if ids is None else {_archive_id(i) for i in ids}
        rows = [
            row for row in self._data.get(user, [])
            if (wanted is None or row[0] in wanted)
            and (with_ is None or row[2] == with_)
            and (start is None or row[1] >= start)
            and (end is None or row[1] <= end)
            and (after_id is None or row[0] > after_id)
            and (before_id is None or row[0] < before_id)
        ]
        if limit is not None:
            rows = rows[max(0, len(rows) - limit):] if reverse else rows[:limit]
        if max_bytes is not None:
            rows = _fitting(rows[::-1] if reverse else rows, max_bytes, lambda row: len(row[3]))
            if reverse:
                rows.reverse()
        return defer.succeed([_item(row) for row in rows])

    def _find(self, user: str, item_id: str) -> int | None:
        """Index of item ``item_id`` in the user's list (kept in id order), or None."""
        wanted = _archive_id(item_id)
        rows = self._data.get(user, [])
        at = bisect.bisect_left(rows, wanted, key=lambda row: row[0])
        return at if at < len(rows) and rows[at][0] == wanted else None

    def get(self, user: str, item_id: str) -> defer.Deferred[ArchiveItem | None]:
        at = self._find(user, item_id)
        return defer.succeed(None if at is None else _item(self._data[user][at]))

    def replace(self, user: str, item_id: str, value: Any) -> defer.Deferred[bool]:
        text = encode_value(value)
        at = self._find(user, item_id)
        if at is None:
            return defer.succeed(False)
        row = self._data[user][at]
        self._data[user][at] = (row[0], row[1], row[2], text)
        return defer.succeed(True)

    def expire(self, before: float, user: str | None = None) -> defer.Deferred[int]:
        deleted = 0
        for owner in [user] if user is not None else list(self._data):
            rows = self._data.get(owner, [])
            kept = [row for row in rows if row[1] >= before]
            deleted += len(rows) - len(kept)
            if kept:
                self._data[owner] = kept
            else:
                self._data.pop(owner, None)
        return defer.succeed(deleted)

    def count(self, user: str, with_: str | None = None, start: float | None = None,
              end: float | None = None, ids: Iterable[str] | None = None) -> defer.Deferred[int]:
        if start is None and end is None and ids is None:
            rows = self._data.get(user, [])
            return defer.succeed(sum(1 for row in rows if with_ is None or row[2] == with_))
        return self.query(user, with_=with_, start=start, end=end, ids=ids).addCallback(len)

    def size(self, user: str, with_: str | None = None) -> defer.Deferred[int]:
        rows = self._data.get(user, [])
        return defer.succeed(sum(len(row[3]) for row in rows if with_ is None or row[2] == with_))

    def delete(self, user: str, ids: Iterable[str] | None = None) -> defer.Deferred[int]:
        rows = self._data.get(user, [])
        if ids is None:
            kept = []
        else:
            doomed = {_archive_id(i) for i in ids}
            kept = [row for row in rows if row[0] not in doomed]
        deleted = len(rows) - len(kept)
        if kept:
            self._data[user] = kept
        else:
            self._data.pop(user, None)
        return defer.succeed(deleted)

    def users(self) -> defer.Deferred[list[str]]:
        return defer.succeed(sorted(self._data))

    def _purge(self, user: str) -> None:
        self._data.pop(user, None)


@implementer(IStorage)
class MemoryStorage:
    """Dict-based storage; everything is lost when the process exits."""

    def __init__(self) -> None:
        self._stores: dict[tuple[str, str], Any] = {}

    def start(self) -> defer.Deferred[None]:
        return defer.succeed(None)

    def stop(self) -> defer.Deferred[None]:
        return defer.succeed(None)

    def _store(self, kind: str, factory: type, name: str) -> Any:
        store = self._stores.get((kind, name))
        if store is None:
            store = self._stores[kind, name] = factory(name)
        return store

    def keyvalue(self, name: str) -> MemoryKeyValueStore:
        return self._store("kv", MemoryKeyValueStore, name)

    def map(self, name: str) -> MemoryMapStore:
        return self._store("map", MemoryMapStore, name)

    def archive(self, name: str) -> MemoryArchiveStore:
        return self._store("archive", MemoryArchiveStore, name)

    def purge_user(self, user: str) -> defer.Deferred[None]:
        for store in self._stores.values():
            store._purge(user)
        return defer.succeed(None)
