"""Discussion history (XEP-0045 §7.2.13-14), as Prosody's history.lib:
the messages worth keeping (a body, a XEP-0334 store hint, an encrypted
payload, a chat marker; never with no-store) are replayed to a session
that joins, with their XEP-0203 delay: as many as the room keeps
(``muc#roomconfig_historylength``, at most the service's ``max_history``),
by default ``muc#roomconfig_defaulthistorymessages``, and as few as the
joiner asks for (``maxstanzas``, ``maxchars`` — counted on the serialised
stanzas with the joiner's JID, as Prosody counts —, ``seconds``,
``since``). A persistent room's history is in storage and survives
restarts.

With the room archive (:mod:`.mam`) on, the archive is the history's
durable copy: the in-memory history is then not written to storage (and a
stored one is dropped), and a joiner who is to get more than the memory
holds (after a restart, say) gets it from the archive, as Prosody 0.12's
mod_muc_mam answers muc-get-history. History goes out in the room's order
(:mod:`..gate`): a message whose archive write is pending is in the
history of who joins meanwhile, with its stanza-id."""

from __future__ import annotations

import calendar
import time
from collections import deque

from twisted.python.failure import Failure
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


def historic(message: domish.Element, room_jid: str | None = None) -> bool:
    """Worth keeping (Prosody's muc-message-is-historic): a moderation
    notice from the room itself (a XEP-0422 ``apply-to``, as
    mod_muc_moderation marks it); nothing hinted no-store; a store hint, a
    body, an encrypted payload or a chat marker."""
    names = {(c.uri, c.name) for c in message.elements()}
    if room_jid is not None and (ns.FASTEN, "apply-to") in names and \
            message.getAttribute("from") == room_jid:
        return True
    if (ns.HINTS, "no-store") in names or (ns.HINTS, "no-permanent-store") in names:
        return False
    if (ns.HINTS, "store") in names or any(n == "body" for _, n in names):
        return True
    return (_EME, "encryption") in names or any(u == _MARKERS for u, _ in names)


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

    def _archived(self, room) -> bool:
        """The room's archive keeps its messages (then it is the history's
        durable copy)."""
        return self.service.hooks.fire("archiving", room=room) is True

    def _buffer(self, room) -> deque:
        buffer = room.state.get("history")
        if buffer is None:
            buffer = room.state["history"] = deque()
            stored = room.state.pop("stored_history", None)
            if stored and self._archived(room) and self.service.roomstore is not None:
                # rows of the time before the archive: served from memory this
                # once, but gone from storage, so that after the next restart
                # they cannot shadow the archive's newer messages
                self.service._write(room, self.service.roomstore.drop_history(
                    room.jid, list(stored[1])))
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

    historic = staticmethod(historic)

    @on("groupchat", -10)
    def record(self, ev):
        message = ev.message
        room = ev.room
        if not historic(message, room.jid):
            return None
        self._buffer(room)
        if self._length(room) == 0:
            return None
        now = self.service.clock.seconds()
        # in the room's order: after the archive gave the message its stanza-id
        self.service.gates.then(room.jid, lambda _: self._keep(room, message, now))
        return None

    def _keep(self, room, message: domish.Element, now: float) -> None:
        length = self._length(room)
        buffer = self._buffer(room)
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
        if room.config.get("persistent") and self.service.roomstore is not None \
                and not self._archived(room):
            if not room.state.get("stored"):
                self.service.save(room)
            self.service._write(room, self.service.roomstore.add_history(
                room.jid, entry.key, {"xml": stored.toXml(), "when": now}, dropped))

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
        archived = self._archived(room)
        if room.config.get("persistent") and not archived and (
                "persistent" in ev.changed or "archiving" in ev.changed):
            # a room made persistent (or no longer archived): its history so
            # far goes to storage too
            for entry in buffer:
                self.service._write(room, store.add_history(
                    room.jid, entry.key, {"xml": entry.element.toXml(), "when": entry.when},
                    []))
        elif archived and "archiving" in ev.changed and room.state.get("stored"):
            # archived from now on: the archive is the durable history
            self.service._write(room, store.drop_history(
                room.jid, dropped + [entry.key for entry in buffer]))
        elif dropped and room.state.get("stored") and not archived:
            self.service._write(room, store.drop_history(room.jid, dropped))
        return None

    @on("joined", 20)
    def replay(self, ev):
        room, real = ev.room, ev.real
        request = None
        if ev.x is not None:
            request = next(ev.x.elements(ns.MUC, "history"), None)
        # in the room's order: a message still waiting for its archive write
        # is history for this joiner
        self.service.gates.then(room.jid, lambda _: self._replay(room, real, request))
        return None

    def _replay(self, room, real: str, request) -> None:
        entries = list(self._buffer(room))
        maxstanzas, maxchars, since = self._limits(request)
        if maxstanzas is None and maxchars is None and since is None:
            maxstanzas = room.config.get("default_history")
        archived = self.service.hooks.fire(
            "get-history", room=room, to=real, maxstanzas=maxstanzas, maxchars=maxchars,
            since=since, length=self._length(room), buffered=len(entries))
        if archived is not None:
            def send(result) -> None:
                if isinstance(result, Failure):
                    self.service.log.failure("muc: reading {room}'s history failed", result,
                                             room=room.jid)
                    self._send(room, real, entries, maxstanzas, maxchars, since)
                    return
                for element in result:
                    self.service.deliver(Fanout(element), real)
            self.service.gates.then(room.jid, send, wait=archived)
            return
        self._send(room, real, entries, maxstanzas, maxchars, since)

    def _send(self, room, real, entries, maxstanzas, maxchars, since) -> None:
        for entry in self._select(entries, maxstanzas, maxchars, since, len(real)):
            self.service.deliver(entry.fan, real)

    def _limits(self, request):
        """The joiner's ``<history/>`` (XEP-0045 §7.2.14): maxstanzas,
        maxchars and since (``seconds`` folded in), each None when not asked."""
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
        return maxstanzas, maxchars, since

    @staticmethod
    def _select(entries, maxstanzas, maxchars, since, to_length):
        """Newest first, as long as every limit holds (Prosody's order)."""
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
