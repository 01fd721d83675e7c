"""Discussion history (XEP-0045 §7.2.13-14), as Prosody's history.lib:
the messages worth keeping (a body, a XEP-0334 store hint, an encrypted
payload, a chat marker; never with no-store) are replayed to a session
that joins, with their XEP-0203 delay: as many as the room keeps
(``muc#roomconfig_historylength``, at most the service's ``max_history``),
by default ``muc#roomconfig_defaulthistorymessages``, and as few as the
joiner asks for (``maxstanzas``, ``maxchars`` — counted on the serialised
stanzas with the joiner's JID, as Prosody counts —, ``seconds``,
``since``). A persistent room's history is in storage and survives
restarts."""

from __future__ import annotations

import calendar
import time
from collections import deque

from twisted.words.xish import domish

from xmppd import ns
from xmppd.router.fanout import Fanout
from xmppd.services.muc.hooks import ConfigField, Feature, on
from xmppd.xml.stream import parse_element

_EME = "urn:xmpp:eme:0"
_MARKERS = "urn:xmpp:chat-markers:0"


def _stamp(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def _parse_stamp(text: str) -> float | None:
    text = text.strip()
    for fmt in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ"):
        try:
            return calendar.timegm(time.strptime(text, fmt))
        except ValueError:
            continue
    if len(text) > 6 and text[-6] in "+-":
        base = _parse_stamp(text[:-6] + "Z")
        if base is not None:
            sign = 1 if text[-6] == "+" else -1
            try:
                hours, minutes = int(text[-5:-3]), int(text[-2:])
            except ValueError:
                return None  # a malformed offset: as if there were no 'since'
            return base - sign * (hours * 3600 + minutes * 60)
    return None


class Entry:
    __slots__ = ("element", "when", "chars", "key", "fan")

    def __init__(self, element: domish.Element, when: float, key: str):
        self.element = element
        self.when = when
        self.key = key
        self.fan = Fanout(element)
        self.chars = len(element.toXml().replace(" xmlns='jabber:client'", "", 1))


class History(Feature):
    name = "history"
    fields = (
        ConfigField("history_length", "muc#roomconfig_historylength", "text-single",
                    "Maximum number of history messages returned by room",
                    lambda c: min(c["history_length"], c["max_history"]),
                    integer=True, minimum=0, maximum="max_history", order=65,
                    desc="Specify the maximum number of previous messages that should be sent "
                         "to users when they join the room", datatype="xs:integer"),
        ConfigField("default_history", "muc#roomconfig_defaulthistorymessages", "text-single",
                    "Default number of history messages returned by room",
                    lambda c: min(c["history_length"], c["max_history"]),
                    integer=True, minimum=0, maximum="max_history", order=64,
                    desc="Specify the number of previous messages sent to new users when they "
                         "join the room", datatype="xs:integer"),
    )

    def _buffer(self, room) -> deque:
        buffer = room.state.get("history")
        if buffer is None:
            buffer = room.state["history"] = deque()
            stored = room.state.pop("stored_history", None)
            if stored:
                for value, key in zip(*stored):
                    try:
                        element = parse_element(value["xml"])
                    except Exception:  # noqa: BLE001 - a damaged entry is skipped
                        continue
                    entry = Entry(element, value.get("when", 0), key)
                    buffer.append(entry)
                    room.state["history_bytes"] = room.state.get("history_bytes", 0) + \
                        entry.chars
                room.state["history_seq"] = max(
                    (int(k) for k in stored[1] if k.isdigit()), default=0)
        return buffer

    def _length(self, room) -> int:
        return max(0, min(room.config.get("history_length") or 0,
                          self.service.config["max_history"]))

    @on("room-loaded")
    def loaded(self, ev):
        self._buffer(ev.room)

    @staticmethod
    def historic(message: domish.Element) -> bool:
        """Worth replaying (Prosody's muc-message-is-historic)."""
        names = {(c.uri, c.name) for c in message.elements()}
        if (ns.HINTS, "no-store") in names or (ns.HINTS, "no-permanent-store") in names:
            return False
        if (ns.HINTS, "store") in names or any(n == "body" for _, n in names):
            return True
        return (_EME, "encryption") in names or any(u == _MARKERS for u, _ in names)

    @on("groupchat", -10)
    def record(self, ev):
        message = ev.message
        if not self.historic(message):
            return None
        room = ev.room
        length = self._length(room)
        buffer = self._buffer(room)
        if length == 0:
            return None
        now = self.service.clock.seconds()
        stored = domish.Element((ns.CLIENT, "message"))
        stored.attributes = dict(message.attributes)
        stored.children = list(message.children)
        delay = stored.addElement((ns.DELAY, "delay"))
        delay["from"] = room.jid
        delay["stamp"] = _stamp(now)
        seq = room.state.get("history_seq", 0) + 1
        room.state["history_seq"] = seq
        entry = Entry(stored, now, f"{seq:012d}")
        buffer.append(entry)
        room.state["history_bytes"] = room.state.get("history_bytes", 0) + entry.chars
        dropped = self._trim(room, buffer, length)
        if room.config.get("persistent") and self.service.roomstore is not None:
            if not room.state.get("stored"):
                self.service.save(room)
            self.service._write(room, self.service.roomstore.add_history(
                room.jid, entry.key, {"xml": stored.toXml(), "when": now}, dropped))
        return None

    def _trim(self, room, buffer, length):
        """Drop the oldest beyond the room's length and the service's bytes."""
        limit = self.service.config["max_history_bytes"]
        dropped = []
        while buffer and (len(buffer) > length or room.state.get("history_bytes", 0) > limit):
            entry = buffer.popleft()
            room.state["history_bytes"] = room.state.get("history_bytes", 0) - entry.chars
            dropped.append(entry.key)
        return dropped

    @on("config-changed")
    def resize(self, ev):
        room = ev.room
        buffer = self._buffer(room)
        dropped = self._trim(room, buffer, self._length(room))
        store = self.service.roomstore
        if store is None:
            return None
        if "persistent" in ev.changed and room.config.get("persistent"):
            # a room made persistent: its history so far goes to storage too
            for entry in buffer:
                self.service._write(room, store.add_history(
                    room.jid, entry.key, {"xml": entry.element.toXml(), "when": entry.when},
                    []))
        elif dropped and room.state.get("stored"):
            self.service._write(room, store.drop_history(room.jid, dropped))
        return None

    @on("joined", 20)
    def replay(self, ev):
        room = ev.room
        entries = list(self._buffer(room))
        if not entries:
            return None
        request = None
        if ev.x is not None:
            request = next(ev.x.elements(ns.MUC, "history"), None)
        entries = self._select(entries, request, len(ev.real),
                               ev.room.config.get("default_history"))
        for entry in entries:
            self.service.deliver(entry.fan, ev.real)
        return None

    def _select(self, entries, request, to_length, default):
        """Newest first, as long as every limit holds (Prosody's order)."""
        def number(name):
            value = request.getAttribute(name) if request is not None else None
            if value is None:
                return None
            try:
                return max(0, int(value))
            except ValueError:
                return None
        maxstanzas, maxchars, seconds = number("maxstanzas"), number("maxchars"), \
            number("seconds")
        since = request.getAttribute("since") if request is not None else None
        since = _parse_stamp(since) if since is not None else None
        if seconds is not None:
            cutoff = self.service.clock.seconds() - seconds
            since = cutoff if since is None else max(since, cutoff)
        if maxstanzas is None and maxchars is None and since is None:
            maxstanzas = default if default is not None else len(entries)
        count, chars = 0, 0
        for entry in reversed(entries):
            if maxchars is not None:
                chars += entry.chars + to_length
                if chars > maxchars:
                    break
            if since is not None and since > entry.when:
                break
            if maxstanzas is not None and count + 1 > maxstanzas:
                break
            count += 1
        return entries[len(entries) - count:] if count else []
