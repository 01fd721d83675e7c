"""Rooms in storage: what a persistent room needs to survive ``kill -9``.

Three stores, written through (a request that changed a room is answered
once its write is durable):

``muc_rooms`` (key-value, keyed by the room's bare JID)
    ``{"config": …, "affiliations": …, "affiliation_data": …, "data": …}``:
    configuration, affiliations with their reasons and reserved nicks, and
    the features' persistent state (subject, occupant-id salt, …);
``muc_history`` (map, keyed by the room's bare JID, then a sequence number)
    the discussion history, one entry per message, trimmed to the room's
    history length as it goes (not kept for a room whose archive is on:
    the archive is its history then);
``muc_archive`` (archive, by the room's bare JID)
    the room's message archive (XEP-0313), written by
    :mod:`.features.mam`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

ROOMS = "muc_rooms"
HISTORY = "muc_history"
#: the rooms' archives (XEP-0313), by room JID: features/mam.py
ARCHIVE = "muc_archive"
STORES = {ROOMS: "keyvalue", HISTORY: "map", ARCHIVE: "archive"}


def room_record(room: Any) -> dict[str, Any]:
    return {
        "config": dict(room.config),
        "affiliations": dict(room.affiliations),
        "affiliation_data": {k: dict(v) for k, v in room.affiliation_data.items()},
        "data": dict(room.data),
    }


class RoomStore:
    """Reads and writes rooms and their history (both stores in order: the
    storage runs writes in the order they are issued)."""

    def __init__(self, rooms: Any, history: Any):
        self.rooms = rooms
        self.history = history

    @defer.inlineCallbacks
    def load(self):
        """Every stored room: ``{jid: (record, [history entries in order])}``."""
        found: dict[str, tuple[dict, list]] = {}
        jids = yield self.rooms.users()
        for jid in jids:
            record = yield self.rooms.get(jid)
            if not record:
                continue
            entries = yield self.history.items(jid)
            ordered = [entries[k] for k in sorted(entries)]
            found[jid] = (record, ordered, sorted(entries))
        return found

    def save(self, room: Any) -> defer.Deferred:
        return self.rooms.set(room.jid, room_record(room))

    def delete(self, jid: str) -> defer.Deferred:
        return defer.gatherResults([self.history.clear(jid), self.rooms.delete(jid)],
                                   consumeErrors=True)

    def add_history(self, jid: str, key: str, entry: dict[str, Any],
                    drop: list[str]) -> defer.Deferred:
        if drop:
            return self.history.set_many(jid, {key: entry, **{k: None for k in drop}})
        return self.history.set(jid, key, entry)

    def drop_history(self, jid: str, keys: list[str]) -> defer.Deferred:
        if not keys:
            return defer.succeed(None)
        return self.history.set_many(jid, {k: None for k in keys})
