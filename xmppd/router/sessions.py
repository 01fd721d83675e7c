"""The session contract: all a component may know of a session.

Sessions will be of many kinds — a c2s stream over TCP (:mod:`xmppd.c2s`),
WebSocket and BOSH sessions, s2s links, external components, a proxy for a
client connected to another worker — and the router hands all of them to
components alike. So a component uses a session only through what
:class:`Session` names here, and never reaches into a session's other
attributes (its transport, its parser, its SASL state): what works with one
kind of session then works with all of them, and a test's fake session
(:class:`xmppd.testing.FakeSession`) is a complete one.

Components are given sessions as ``event.origin`` (the session a stanza came
from: None when the server made the stanza), by ``router.resources(bare)``
(the bound sessions of an account) and in the ``resource-bind`` and
``resource-unbind`` events.
"""

from __future__ import annotations

from typing import Any, Hashable, Protocol, runtime_checkable

from twisted.internet import defer
from twisted.words.xish import domish


@runtime_checkable
class Session(Protocol):
    """A client session, as the router and components see it.

    Identity (None until the stream has authenticated / bound):

    ``user``
        the authenticated account's bare JID text, set by SASL.
    ``jid``, ``bare``, ``resource``
        the bound full JID (a parsed JID), its bare JID text and resource.
    ``domain``
        the local domain the stream was opened to (a user domain).
    ``address``
        the client's network address (an IP text) for rate limits and logs;
        for a proxied session, the client's, not the proxy's.
    ``secure``
        whether the stream is encrypted (TLS) — stream features and
        registration depend on it.

    Presence state, kept by the presence component and read by others:

    ``available``
        the session has sent initial presence and not yet unavailable.
    ``priority``
        the priority of its last available presence (RFC 6121 §4.7.2.3).
    ``presence``
        its last available presence stanza, or None.
    ``presence_received``
        when the server received that presence (the clock's seconds), for
        the XEP-0203 delay on probe answers.

    Output:

    ``shape``
        what the stream writes stanzas as (its content namespace, say): two
        sessions of one shape get identical bytes for one stanza, which
        :class:`xmppd.router.fanout.Fanout` serialises once.
    """

    user: str | None
    jid: Any
    bare: str | None
    resource: str | None
    domain: str | None
    address: str
    secure: bool
    available: bool
    priority: int
    presence: domish.Element | None
    presence_received: float
    shape: Hashable

    def send(self, stanza: domish.Element | str) -> None:
        """Deliver a stanza (or its ready-made text, from :meth:`serialize`
        for this ``shape``). A session that can no longer write hands an
        element to :meth:`Router.undelivered <xmppd.router.Router.undelivered>`
        instead of dropping it."""

    def serialize(self, stanza: domish.Element) -> str:
        """The text :meth:`send` would write for ``stanza``."""

    def stream_error(self, condition: str, text: str | None = None) -> None:
        """End the session with an RFC 6120 §4.9 stream error (and unbind it)."""

    def hold(self, work: defer.Deferred) -> None:
        """Handle this session's next stanza only after ``work`` finishes
        (RFC 6120 §10.1 in-order processing)."""

    def drained(self) -> defer.Deferred:
        """Fires once the output sent so far has left the session's buffer:
        a producer of much output (offline messages, history) waits for it."""
