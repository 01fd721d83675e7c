"""A room's output in order while the room waits on storage.

A groupchat message in an archived room gets its ``<stanza-id/>`` from the
archive write (the item's id), so it can only leave once that write is
durable; a joiner's history may have to be read from the archive first.
Prosody blocks on its storage and so keeps a room's output in order for
free. Here the wait is a Deferred, and a :class:`Gates` keeps the order
instead: while a room waits, everything the room sends (every
:meth:`MUCService.deliver <xmppd.services.muc.service.MUCService.deliver>`
of a stanza from the room or one of its occupants) and every action a
feature puts in the room's order queues behind the wait, and goes out in
order once it is over. A room that waits on nothing is not slowed down at
all: with no gate, a delivery goes straight out.

An action that runs in its turn may itself wait (a history read started
by a join that waited): what it queues goes before everything queued
after it, so the order is the one the room would have had with a
blocking store.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

from twisted.logger import Logger

log = Logger()


class _Entry:
    __slots__ = ("action", "fan", "real", "pending", "result")

    def __init__(self, action: Callable[[Any], Any] | None = None, fan: Any = None,
                 real: str | None = None, pending: bool = False):
        self.action = action
        self.fan = fan
        self.real = real
        self.pending = pending
        self.result: Any = None


class _Gate:
    __slots__ = ("queue", "cursor", "open")

    def __init__(self) -> None:
        self.queue: deque[_Entry] = deque()
        #: while an entry runs: where what it queues goes (None: not running)
        self.cursor: int | None = None
        #: while an entry runs: whether its deliveries may go straight out
        #: (no wait queued by it yet)
        self.open = False


class Gates:
    """The rooms of a service whose output waits, by room JID."""

    def __init__(self, deliver: Callable[[Any, str], None]):
        #: the service's delivery (called again, from the gate, once a queued
        #: delivery's turn comes)
        self._deliver = deliver
        self._gates: dict[str, _Gate] = {}

    def __bool__(self) -> bool:
        return bool(self._gates)

    def waiting(self, room: str) -> bool:
        """Whether ``room``'s output is held (something it waits for is pending)."""
        return room in self._gates

    def hold_delivery(self, fan: Any, real: str) -> bool:
        """Queue a delivery of ``fan`` to ``real`` when its room's output waits
        (True); False: send it now. The room is the bare JID of the
        stanza's sender (every stanza a room sends is from it or an occupant)."""
        sender = fan.stanza.getAttribute("from") or ""
        gate = self._gates.get(sender.partition("/")[0])
        if gate is None or (gate.cursor is not None and gate.open):
            return False
        self._insert(gate, _Entry(fan=fan, real=real))
        return True

    def then(self, room: str, action: Callable[[Any], Any], wait: Any = None) -> None:
        """Run ``action(result)`` in ``room``'s output order: at once when the
        room waits on nothing (``result`` None), else in its turn. With
        ``wait`` (a Deferred), not before it fired: ``result`` is what it
        fired with (a Failure when it failed), and the room's later output
        waits for it."""
        gate = self._gates.get(room)
        if wait is None:
            if gate is None or (gate.cursor is not None and gate.open):
                self._run(action, None)
                return
            self._insert(gate, _Entry(action=action))
            return
        if gate is None:
            gate = self._gates[room] = _Gate()
        entry = _Entry(action=action, pending=True)
        self._insert(gate, entry)
        if gate.cursor is not None:
            gate.open = False  # the running entry's later output goes after this wait

        def fired(result: Any) -> None:
            entry.pending = False
            entry.result = result
            self._drain(room)
        wait.addBoth(fired)

    def _insert(self, gate: _Gate, entry: _Entry) -> None:
        if gate.cursor is None:
            gate.queue.append(entry)
        else:
            gate.queue.insert(gate.cursor, entry)
            gate.cursor += 1

    def _drain(self, room: str) -> None:
        gate = self._gates.get(room)
        if gate is None or gate.cursor is not None:
            return  # running already: the loop below carries on
        while gate.queue and not gate.queue[0].pending:
            entry = gate.queue.popleft()
            gate.cursor, gate.open = 0, True
            try:
                if entry.action is not None:
                    entry.action(entry.result)
                else:
                    self._deliver(entry.fan, entry.real)
            except Exception:  # noqa: BLE001 - one bug must not stop the room's output
                log.failure("muc: a held delivery or room action failed")
            finally:
                gate.cursor, gate.open = None, False
        if not gate.queue and self._gates.get(room) is gate:
            del self._gates[room]

    @staticmethod
    def _run(action: Callable[[Any], Any], result: Any) -> None:
        try:
            action(result)
        except Exception:  # noqa: BLE001 - one feature's bug must not stop the room
            log.failure("muc: a room action failed")
