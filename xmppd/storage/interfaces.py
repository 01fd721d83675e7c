"""The storage API components use: named key-value, map and archive stores.

Components never write SQL: they open a named store through
:meth:`IStorage.keyvalue`, :meth:`IStorage.map` or :meth:`IStorage.archive` and
call its asynchronous methods. Every method returns a Deferred and never blocks
the reactor. A write's Deferred fires only once the write is durable (committed),
so a component that acknowledges a stanza after the Deferred fires loses nothing
to a ``kill -9``.

``user`` is a bare JID string (``"alice@example.org"``), or ``""`` for data that
belongs to a host. Values are JSON-serialisable Python objects (dict, list, str,
int, float, bool, None); XML payloads are stored as serialised strings.
Every backend stores a value as the same text, :func:`encode_value`, so a
value's size in bytes (:func:`value_size`) is the same whichever backend holds
it: quotas in bytes mean the same on each.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from zope.interface import Attribute, Interface


def encode_value(value: Any) -> str:
    """The text every backend stores ``value`` as: compact JSON, ASCII only
    (characters beyond ASCII are escaped), so its length is its size in bytes."""
    return json.dumps(value, separators=(",", ":"))


def value_size(value: Any) -> int:
    """Bytes ``value`` takes in storage: what :meth:`IArchiveStore.size` adds
    up and :attr:`ArchiveItem.size` says, computed without asking the store."""
    return len(encode_value(value))


@dataclass(frozen=True)
class ArchiveItem:
    """One entry of an archive store, as returned by :meth:`IArchiveStore.query`."""

    id: str  #: opaque, unique within the store, increasing with insertion order
    when: float  #: POSIX timestamp (seconds, UTC)
    with_: str | None  #: the conversation partner, for filtering (may be None)
    value: Any
    #: bytes the value takes in storage (:func:`value_size`), known to the
    #: backend without serialising it again
    size: int = field(default=0, compare=False)


class IKeyValueStore(Interface):
    """One value per user (a vCard, an account's credentials, a blocklist)."""

    name = Attribute("The store's name")

    def get(user):
        """Deferred firing with the stored value, or None."""

    def set(user, value):
        """Store ``value`` (replacing any); ``None`` deletes. Deferred fires when durable."""

    def delete(user):
        """Delete the user's value; Deferred fires when durable."""

    def users():
        """Deferred firing with the sorted list of users that have a value."""


class IMapStore(Interface):
    """Many keyed values per user (roster items keyed by contact JID)."""

    name = Attribute("The store's name")

    def get(user, key):
        """Deferred firing with the value under ``key``, or None."""

    def set(user, key, value):
        """Store ``value`` under ``key`` (``None`` deletes); fires when durable."""

    def set_many(user, items):
        """Store a dict of key → value (``None`` deletes) in one transaction."""

    def delete(user, key):
        """Delete one key; fires when durable."""

    def items(user):
        """Deferred firing with a dict of every key → value of the user."""

    def clear(user):
        """Delete every key of the user; fires when durable."""


class IArchiveStore(Interface):
    """Time-ordered values per user (offline messages, MAM, MUC history)."""

    name = Attribute("The store's name")

    def append(user, value, with_=None, when=None):
        """Append ``value``; Deferred fires with the new item's id once durable.

        ``when`` defaults to now (``time.time()``). Within one user's items of
        a store, ``when`` never goes back: an item appended with an earlier
        ``when`` than the user's newest item is stored with the newest one's
        (a clock stepped back, an import out of order). So insertion order is
        time order too, as MAM's results must be chronological, and a query
        bounded in time can find its first and last item through the time
        index alone instead of scanning the archive.
        """

    def query(user, with_=None, start=None, end=None, after=None, before=None,
              limit=None, reverse=False, max_bytes=None, ids=None):
        """Deferred firing with a list of :class:`ArchiveItem` in insertion order.

        ``start``/``end`` bound ``when`` (inclusive); ``after``/``before`` are item
        ids (exclusive). With ``reverse`` the *last* ``limit`` matching items are
        returned (still listed oldest first), as MAM paging backwards needs.
        ``ids`` (an iterable of ids) keeps only the items with those ids, the
        other filters still applying (XEP-0313's ``ids`` field); ids that name
        no item of the user are ignored. Every id argument must be well formed
        (as :meth:`append` returns them): ValueError otherwise, raised at once.

        ``max_bytes`` bounds the list by size as ``limit`` does by count: it
        ends with the item whose value takes the total of
        :attr:`ArchiveItem.size` to ``max_bytes`` or beyond. A reader of
        large values so holds less than ``max_bytes`` plus one item at a time
        and always makes progress; and a list whose total is below
        ``max_bytes`` and whose length is below ``limit`` is everything that
        matches (no further query needed to know it).
        """

    def count(user, with_=None, start=None, end=None, ids=None):
        """Deferred firing with the number of items of the user that match
        the filters, which mean what they mean to :meth:`query` (a MAM
        result set's total, whatever page of it is asked for)."""

    def size(user, with_=None):
        """Deferred firing with the bytes the user's values take in storage:
        the sum of their :func:`value_size` (0 when there are none)."""

    def delete(user, ids=None):
        """Delete the given ids (all the user's items if None); fires with the count."""

    def get(user, id):
        """Deferred firing with the user's :class:`ArchiveItem` ``id``, or None.

        One item by id without a query: what a reply, a correction or a
        retraction (XEP-0425) needs to find the message it names.
        """

    def replace(user, id, value):
        """Swap the value of the user's item ``id``, keeping its id, ``when``
        and ``with_`` (so its place in every query stays the same); Deferred
        fires with True once durable, or False if there is no such item.

        A moderated message becomes a tombstone this way (XEP-0425): clients
        that page over it later see the tombstone where the message was.
        """

    def expire(before, user=None):
        """Delete the items whose ``when`` is earlier than ``before`` (a POSIX
        timestamp), of ``user`` or, if None, of every user; Deferred fires with
        the number deleted once durable. Retention runs this periodically.
        """

    def users():
        """Deferred firing with the sorted users that have at least one item."""


class IStorage(Interface):
    """A storage backend: opens named stores, owns the connection."""

    def start():
        """Open the database and create the schema; returns a Deferred."""

    def stop():
        """Flush and close; returns a Deferred."""

    def keyvalue(name):
        """The :class:`IKeyValueStore` called ``name`` (same object per name)."""

    def map(name):
        """The :class:`IMapStore` called ``name``."""

    def archive(name):
        """The :class:`IArchiveStore` called ``name``."""

    def purge_user(user):
        """Delete everything stored for ``user`` in every store (account removal)."""
