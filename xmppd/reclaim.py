"""Give memory back after a burst of traffic.

Two things keep memory after a flood has passed, both measured on the
80 MB flood of ``tests/e2e/test_hardening.py`` (RSS +44 MiB that stayed):

- *Cycles.* Every domish element points at its parent and the parent at its
  children, so a stanza is freed by the cycle collector, not by reference
  counting. ``twistd xmppd`` runs the collector rarely (see
  :data:`xmppd.service.GC_THRESHOLD`: the default cost a tenth of the message
  throughput), so stanzas that lived a little while (waiting behind storage
  work, in a slow reader's backlog) reach the older generations and their
  bodies stay there, garbage, until a full collection.
- *The allocator.* glibc keeps freed memory in its heap for reuse; the pages
  go back to the system only when the top of the heap is free, or when
  ``malloc_trim`` is called.

So the server counts the stanza bytes it reads and writes (and logins, which
leave more garbage than their bytes), collects the young generations after
every ``every_bytes`` of them, and runs a full collection and trims the heap at
most once per ``min_interval`` seconds (longer when a full collection takes
more than a twentieth of that). Ordinary traffic of small stanzas triggers it
every few seconds at most (a full collection with gc.freeze()'d start-up
objects costs milliseconds); a flood of large stanzas, every few MiB.
"""

from __future__ import annotations

import ctypes
import gc
import time
from typing import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger


def _malloc_trim() -> Callable[[], object] | None:
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to trim with
        return None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0)


class Reclaimer:
    """Counts traffic; reclaims garbage and heap pages after enough of it."""

    log = Logger()

    def __init__(self, clock: IReactorTime, every_bytes: int = 8 << 20,
                 min_interval: float = 1.0):
        self.clock = clock
        self.every_bytes = every_bytes
        self.min_interval = self.base_interval = min_interval
        self.pending = 0
        self.last = -min_interval
        self.runs = 0
        self._trim = _malloc_trim()
        self._later: IDelayedCall | None = None

    def _run_later(self) -> None:
        self._later = None
        self.reclaim(force=True)

    def stop(self) -> None:
        if self._later is not None and self._later.active():
            self._later.cancel()
        self._later = None

    def account(self, size: int) -> None:
        """``size`` bytes of stanzas went through (called per read and write)."""
        self.pending += size
        if self.pending >= self.every_bytes:
            self.reclaim()

    def reclaim(self, force: bool = False) -> None:
        """Collect the young generations now (cheap: what the last
        ``every_bytes`` of traffic left behind is there); the full collection
        and the heap trim at most once per ``min_interval``, and once more
        after the traffic stops, so the end of a flood is given back too."""
        self.pending = 0
        gc.collect(1)
        now = self.clock.seconds()
        if not force and now - self.last < self.min_interval:
            if self._later is None:
                self._later = self.clock.callLater(self.last + self.min_interval - now,
                                                   self._run_later)
            return
        if self._later is not None and self._later.active():
            self._later.cancel()
        self._later = None
        self.last = now
        self.runs += 1
        started = time.perf_counter()
        gc.collect()
        if self._trim is not None:
            self._trim()
        # A big heap makes a full collection slow: keep it to a twentieth of
        # the time, however large the server grows.
        self.min_interval = max(self.base_interval, 20 * (time.perf_counter() - started))
