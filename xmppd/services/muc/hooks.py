"""The room events, and the base class of a room feature.

A room fires named events at the points where a feature may step in (a
join about to happen, a message about to be broadcast, a configuration
form being built …), as Prosody's rooms fire ``muc-occupant-pre-join`` and
friends. Handlers run in priority order (highest first); the first that
returns something other than None ends the event, and that value is the
event's result. A handler refuses by raising :class:`MUCError`.

A feature is a :class:`Feature` subclass in :mod:`xmppd.services.muc.features`:
its ``@on`` methods are hooked for every room of the service, its
``fields`` join the owner's configuration form, and ``disco_features``
add to a room's disco#info. Adding a feature never touches the core.

The events (``ev`` attributes in brackets):

``room-created`` (room, creator, stanza)
    a room was just made by a first join (not a room loaded from storage)
``room-loaded`` (room)
    a stored room came back at start-up
``room-destroyed`` (room, reason, alternate)
``room-locked`` (room) → True while a new room waits for its configuration
``room-empty`` (room)
    the last occupant left; return True to keep the room
``pre-join`` (room, stanza, nick, real, bare, affiliation, x, occupant, created)
    ``occupant`` is the existing occupant for a second session of the same
    nick, else None; raise :class:`MUCError` to refuse
``default-role`` (room, affiliation) → the role of a new occupant
``self-codes`` (room, occupant, codes, joined)
    add XEP-0045 status codes to the self-presence (``codes`` is a set)
``presence-x`` (room, occupant, x, recipient_is_moderator)
    add to the muc#user ``<x/>`` of an occupant's presence
``presence-hidden`` (room, occupant, role) → True: the others do not see
    this occupant's presence (its role is not shown)
``build-presence`` (room, occupant, presence)
    add to the presence as broadcast (occupant-id)
``joined`` (room, occupant, real, stanza, created)
    after the self-presence: history, subject
``left`` (room, occupant)
``pre-nick-change`` (room, occupant, nick, real, stanza)
``pre-presence-update`` (room, occupant, stanza, real)
    an occupant's session sends new presence (raise to refuse it)
``pre-groupchat`` (room, occupant, stanza, real)
    return True when the feature dealt with it (a subject change)
``groupchat`` (room, occupant, message)
    the message as broadcast (from the occupant's room JID, no ``to``):
    features add to it (occupant-id) or keep it (history, archive); work
    that must wait (the archive write that gives the stanza-id) holds the
    room's output in order through ``service.gates`` (:mod:`.gate`)
``archiving`` (room) → True while the room's messages go to its archive
``get-history`` (room, to, maxstanzas, maxchars, since, length, buffered)
    a joiner's history, the limits as asked (``length``: the room's history
    length, ``buffered``: what the in-memory history holds): return a
    Deferred firing with the stanzas to send (oldest first), or None for
    the in-memory history (Prosody's muc-get-history)
``private-message`` (room, occupant, target, message)
``message-to-room`` (room, stanza, real, occupant)
    a non-groupchat message to the room's bare JID (invitations, voice
    requests); return True when handled
``iq/<type>/<ns>:<name>`` (room, event, real, occupant)
    an iq to the room's bare JID, by payload: return the reply
``config-form`` (room, form, actor)
``config-submitted`` (room, values, old, codes, actor, fields)
    validate (raise) or adjust the values parsed from a submitted form
    (``fields``: the submitted fields, var → values)
``config-changed`` (room, old, changed, codes)
``affiliation-changed`` (room, jid, old, new, actor, reason)
``disco-info`` (room, features, form, requester)
``disco-node/<node>`` (room, requester, identities)
    disco#info of a room node (``x-roomuser-item``): add identities, return
    True when the node exists
``room-listed`` (room, requester) → False to leave the room out of the
    service's disco#items (hidden, locked)
``room-discarded`` (room)
    the room is gone from the service (empty and temporary, or destroyed)
``iq-to-occupant`` (room, event, real, occupant, nick)
    an iq to an occupant's room JID: return the reply (or a Deferred of it)
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

__all__ = ["ConfigField", "Event", "Feature", "Hooks", "MUCError", "on"]


class MUCError(Exception):
    """A refusal: the stanza error the requester gets (RFC 6120 §8.3)."""

    def __init__(self, condition: str, type: str | None = None, text: str | None = None,
                 extra: Any = None, by: str | None = None):
        super().__init__(condition, text)
        self.condition = condition
        self.type = type
        self.text = text
        #: the ``by`` of the error (RFC 6120 §8.3.2): the room, or the service
        #: when None and the room does not exist
        self.by = by
        #: an application-specific child of <error/> (an element), if any
        self.extra = extra


class Event:
    """What a handler is told: the attributes the event's description lists."""

    def __init__(self, name: str, **data: Any):
        self.name = name
        self.__dict__.update(data)

    def __repr__(self) -> str:
        return f"<Event {self.name}>"


class Hooks:
    """Handlers by event name, in priority order (highest first)."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[tuple[int, int, Callable]]] = {}
        self._seq = itertools.count()

    def hook(self, name: str, handler: Callable[[Event], Any], priority: int = 0) -> Callable:
        entry = (-priority, next(self._seq), handler)
        bisect.insort(self._handlers.setdefault(name, []), entry, key=lambda e: e[:2])

        def unhook() -> None:
            handlers = self._handlers.get(name, [])
            if entry in handlers:
                handlers.remove(entry)
        return unhook

    def fire(self, name: str, **data: Any) -> Any:
        """Run the handlers of ``name`` until one returns something (that is
        the result; None when none did). :class:`MUCError` goes to the caller."""
        handlers = self._handlers.get(name)
        if not handlers:
            return None
        event = Event(name, **data)
        for _, _, handler in list(handlers):
            result = handler(event)
            if result is not None:
                return result
        return None

    def has(self, name: str) -> bool:
        return bool(self._handlers.get(name))


def on(name: str, priority: int = 0) -> Callable:
    """Mark a :class:`Feature` method as the handler of room event ``name``."""
    def mark(method: Callable) -> Callable:
        method.__dict__.setdefault("_muc_events", []).append((name, priority))
        return method
    return mark


@dataclass(frozen=True)
class ConfigField:
    """One field of the owner's configuration form (XEP-0045 §10.2), kept in
    ``room.config[key]``.

    ``default(service_config)`` gives a new room's value; ``options`` are
    (value, label) pairs of a list-single field; ``minimum``/``maximum``
    bound an integer (``maximum`` may name a service option)."""

    key: str
    var: str
    type: str
    label: str
    default: Callable[[dict[str, Any]], Any] = lambda config: None
    options: tuple[tuple[str, str], ...] = ()
    integer: bool = False
    minimum: int = 0
    maximum: str | int | None = None
    #: where the field goes in the form: higher first (Prosody's hook
    #: priorities, so the form reads as Prosody's does, under its headings)
    order: int = 0
    #: the status code occupants are told when the field changes (XEP-0045
    #: §10.2.1: 104), or None when the feature says it itself (172/173)
    notice: str | None = "104"
    #: the field's XEP-0004 <desc/>
    desc: str = ""
    #: an XEP-0122 datatype (xs:integer …) to announce
    datatype: str = ""
    #: show no value when false (Prosody keeps such settings unset)
    omit_false: bool = False


class Feature:
    """A room feature: hooks on the room events, configuration fields and
    disco features. Instantiated once per service with it."""

    #: the feature's name (its module's)
    name: ClassVar[str] = ""
    #: fields it adds to the owner's configuration form, in order
    fields: ClassVar[tuple[ConfigField, ...]] = ()

    def __init__(self, service: Any):
        self.service = service
        self.unhooks: list[Callable] = []
        for attr in dir(type(self)):
            method = getattr(type(self), attr, None)
            for name, priority in getattr(method, "_muc_events", ()):
                self.unhooks.append(service.hooks.hook(name, getattr(self, attr), priority))

    def disco_features(self, room: Any) -> list[str]:
        """XEP-0045 §6.4 features this feature adds to the room's disco#info."""
        return []

    def close(self) -> None:
        for unhook in self.unhooks:
            unhook()
        self.unhooks.clear()
