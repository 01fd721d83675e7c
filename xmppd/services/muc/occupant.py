"""An occupant: one nick in one room, and the sessions joined under it.

Several resources of one account may join under the same nick
(multi-session nicks, as Prosody allows): they are one occupant to everyone
else, and each session gets what the occupant gets. The presence the room
broadcasts for the occupant is that of its first session still there.
"""

from __future__ import annotations

from typing import Any

from twisted.words.xish import domish

ROLES = ("none", "visitor", "participant", "moderator")
ROLE_RANK = {role: rank for rank, role in enumerate(ROLES)}
AFFILIATIONS = ("outcast", "none", "member", "admin", "owner")
AFFILIATION_RANK = {aff: rank - 1 for rank, aff in enumerate(AFFILIATIONS)}


class Occupant:
    """One nick in a room: its real account, role and sessions."""

    __slots__ = ("room_jid", "nick", "jid", "bare", "role", "sessions", "primary", "data")

    def __init__(self, room_jid: str, nick: str, bare: str, role: str):
        self.room_jid = room_jid
        self.nick = nick
        #: the occupant's room JID, ``room@service/nick``
        self.jid = f"{room_jid}/{nick}"
        #: the real bare JID of the account behind the nick
        self.bare = bare
        self.role = role
        #: real full JID → the last presence that session sent to the room
        self.sessions: dict[str, domish.Element] = {}
        #: the real full JID whose presence the room shows (the first)
        self.primary = ""
        #: per-feature state (rate windows …), dropped with the occupant
        self.data: dict[str, Any] = {}

    def rename(self, nick: str) -> None:
        self.nick = nick
        self.jid = f"{self.room_jid}/{nick}"

    def set_session(self, real: str, presence: domish.Element) -> None:
        """Record a session's latest presence; the first session stays the
        one whose presence the room shows (as Prosody)."""
        self.sessions[real] = presence
        if not self.primary or self.primary not in self.sessions:
            self.primary = real

    def drop_session(self, real: str) -> None:
        self.sessions.pop(real, None)
        if self.primary == real:
            self.primary = next(reversed(self.sessions), "") if self.sessions else ""

    @property
    def presence(self) -> domish.Element | None:
        return self.sessions.get(self.primary)

    def __repr__(self) -> str:
        return f"<Occupant {self.jid} {self.role} {len(self.sessions)} session(s)>"
