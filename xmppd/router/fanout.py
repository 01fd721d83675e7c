"""Serialise once for a fanout: one stanza, many sessions.

A presence broadcast, a PEP notification or a MUC message goes to many
sessions, and serialising the same element for each is most of the cost of
a large fanout. :class:`Fanout` serialises the stanza once per *output
shape* — what the receiving stream writes it as (its content namespace:
``jabber:client`` for a client stream, ``jabber:server`` for s2s), see
:attr:`Session.shape <xmppd.router.sessions.Session.shape>` — and, when
each copy is addressed to its own recipient, splices the ``to`` into those
bytes instead of serialising again. Sessions get ready-made text through
``send(str)``.

What cannot be recalled from bytes: a session that closes before writing
them drops them (a string carries no stanza kind to re-route). That is what
happens to presence and groupchat anyway (RFC 6121 §8.5.3.2.1); a
per-recipient message that must not be lost goes through the router.
"""

from __future__ import annotations

from typing import Any, Iterable

from twisted.words.xish import domish

from xmppd.router.events import readdressed


def _quote(value: str) -> str:
    return (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("'", "&apos;").replace('"', "&quot;"))


class Fanout:
    """One stanza prepared for many recipients.

    ``stanza`` is not modified and must not change while the fanout is in
    use (the serialisations are cached)."""

    __slots__ = ("stanza", "_attributes", "_bodies", "serialisations")

    def __init__(self, stanza: domish.Element):
        self.stanza = stanza
        #: the attributes every unchanged copy has (its own 'to' aside)
        self._attributes = dict(stanza.attributes, to=None)
        #: shape → the serialisation without 'to', split after the tag name
        self._bodies: dict[Any, tuple[str, str]] = {}
        #: how many times the stanza was serialised (one per shape)
        self.serialisations = 0

    def text(self, session: Any, to: str | None = None) -> str:
        """The stanza as ``session`` writes it, addressed to ``to`` (the
        stanza's own 'to' when None)."""
        shape = session.shape
        body = self._bodies.get(shape)
        if body is None:
            stanza = self.stanza
            had_to = stanza.attributes.pop("to", None)
            try:
                text = session.serialize(stanza)
            finally:
                if had_to is not None:
                    stanza.attributes["to"] = had_to
            self.serialisations += 1
            cut = 1 + len(text[1:].split(None, 1)[0].split(">", 1)[0].split("/", 1)[0])
            body = self._bodies[shape] = (text[:cut], text[cut:])
        if to is None:
            to = self.stanza.getAttribute("to")
            if to is None:
                return body[0] + body[1]
        return f"{body[0]} to='{_quote(to)}'{body[1]}"

    def copy(self, to: str) -> domish.Element:
        """A copy of the stanza addressed to ``to``, to route like any other
        (a broadcast to contacts passes their blocklists and s2s); a handler
        that delivers it finds this fanout again with :meth:`of`, so the
        bytes are made once for all the copies."""
        copy = readdressed(self.stanza, to)
        copy.fanout = self
        return copy

    @classmethod
    def of(cls, stanza: domish.Element) -> Fanout:
        """The fanout ``stanza`` was copied from, if the copy is unchanged
        since (same attributes but 'to', the same children); else a new one."""
        fan = getattr(stanza, "fanout", None)
        if fan is not None and stanza.children == fan.stanza.children \
                and dict(stanza.attributes, to=None) == fan._attributes:
            return fan
        return cls(stanza)

    def send(self, session: Any, to: str | None = None) -> None:
        """Write the stanza to ``session`` (addressed to ``to``, if given)."""
        session.send(self.text(session, to))

    def send_all(self, sessions: Iterable[Any], address: bool = False,
                 to: str | None = None) -> int:
        """Write the stanza to every session, addressed to ``to`` (the
        stanza's own 'to' when None), or with ``address`` each copy to that
        session's full JID (a broadcast to one's own resources). Returns how
        many were sent."""
        count = 0
        for session in sessions:
            self.send(session, session.jid.full() if address else to)
            count += 1
        return count
