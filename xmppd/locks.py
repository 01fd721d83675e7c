"""One operation at a time per key (a user), for read-check-write sequences.

A component that reads a user's data, checks it (a quota, a size) and writes
it back must not let a second request for the same user interleave with the
first, or the check sees stale data. Locks exist only while someone holds or
waits for them, so idle users cost nothing.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import defer


class KeyedLock:
    """A :class:`~twisted.internet.defer.DeferredLock` per key, made on demand."""

    def __init__(self) -> None:
        self._locks: dict[str, defer.DeferredLock] = {}

    def run(self, key: str, function: Callable[..., Any], *args: Any) -> defer.Deferred:
        """Run ``function(*args)`` once earlier operations on ``key`` have finished;
        the Deferred fires with its result."""
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = defer.DeferredLock()

        def forget(result: Any) -> Any:
            if not lock.locked and not lock.waiting and self._locks.get(key) is lock:
                del self._locks[key]
            return result
        return lock.run(function, *args).addBoth(forget)

    def __len__(self) -> int:
        """Keys with an operation running or waiting."""
        return len(self._locks)
