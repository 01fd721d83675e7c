"""XEP-0352 client state indication: a client in the background is sent only
what matters until it is back in the foreground.

A client that is not being looked at (a phone with the app in the background)
sends ``<inactive xmlns='urn:xmpp:csi:0'/>``; from then on the server holds
the stanzas that can wait — presence updates, chat states, receipts and
markers, headlines — and writes them, in order, when something important
comes (a message with a body …), when the client sends ``<active/>``, or when
too many are held. The radio then wakes once for a batch, not once per
contact's status change.

As Prosody 0.12's mod_csi and mod_csi_simple (which its default config
enables):

- ``<csi xmlns='urn:xmpp:csi:0'/>`` is offered as a stream feature once the
  stream is authenticated, before and after bind, and ``<inactive/>`` /
  ``<active/>`` are accepted from then on (an unauthenticated stream never
  gets that far: the element closes it). Neither is answered. Any other
  element of the namespace closes the stream (``unsupported-stanza-type``).
- What is important (:func:`is_important`, Prosody's rules one for one): every
  iq; presence of a type other than available, ``unavailable`` and ``error``
  (subscription requests and answers); a message of type ``error``; a carbon
  of a message the user sent; a message, or the message inside a carbon of
  one received, with a ``<body/>``, a ``<subject/>`` (the last step of a MUC
  join), an XEP-0380 ``<encryption/>``, an invitation (XEP-0249 or a mediated
  XEP-0045 one), or an XEP-0353 Jingle message; one carrying a payload named
  in ``important_payloads``. A ``headline`` is never important. Every other
  message and presence update is held.
- Held stanzas carry an XEP-0203 ``<delay/>`` from the user's bare JID,
  stamped when held (iqs are never held). The stanza that ends the holding
  is written after what was held, unstamped.
- After a flush the session stays briefly in a *flushing* state: stanzas pass
  at once, so that the replies and acks that follow do not each wake the
  radio again; ``resume_inactive_delay`` seconds after its output has
  drained it holds again. A stanza the client itself sends while stanzas are
  held flushes them too (its radio is on anyway).
- At most ``queue_size`` stanzas are held; the next one flushes them.

Where xmppd departs from mod_csi_simple, deliberately (the issue asks for
it): presence updates are collapsed. Of the held presences from one full
JID only the newest is kept, in the place of its arrival (so a contact that
went away, came back and went away again costs one stanza, not three);
Prosody keeps and writes them all. Prosody also flushes on any byte the
client sends (XEP-0198 acks, whitespace); here only a stanza the client
sends counts.

A MUC message counts like any other: with a body it is important, so every
groupchat message flushes, as in mod_csi_simple (which has no test for
mentions of the user's nick; a mention is a message with a body and so is
important anyway).

Stream management (XEP-0198) counts what is written, after this filter: a
held stanza is not yet sent, so it is neither counted nor waiting for an
ack. When the connection drops and the session hibernates, what was held is
released into the stream management queue at once, and the session is
active again (XEP-0352 §5.2: the state is not restored when the stream is
resumed). A session resumed without being seen to hibernate (its client
came back on a new connection while the old one still seemed up) is made
active the same way on ``resource-resumed``: what was held is written to
the new connection, after the stanzas re-sent there.

When the session ends, what was held goes straight to
:meth:`Router.undelivered <xmppd.router.Router.undelivered>` (messages to
the user's other resources or offline storage; presence is dropped, as for
a resource that is gone), with stream management or without — never
written to the stream that is closing, nor put in the stream management
queue that is re-routed too (it would arrive twice). Only a session that
ends while hibernating (its framing writes nothing) gets them in its queue,
which stream management re-routes. Under stream management the held
stanzas are thus re-routed ahead of the older unacknowledged ones that
stream management re-routes just after (Prosody 0.12 holds bytes in the
connection, below its stream management queue, so its order there is the
queue's).

Ready-made text (a fanout's presence broadcast or groupchat message) is
classified without parsing where the start tag tells (presence, iq, and a
message's type); only a message that needs a look inside is parsed. Nothing
is logged per stanza; ``server.counters`` counts flushes by reason.
"""

from __future__ import annotations

import re
import weakref
from typing import Any
from xml.sax.saxutils import escape, unescape

from twisted.words.xish import domish

from xmppd import ns
from xmppd.component import Component, Option, handles, stream_element
from xmppd.components.offline import delay_stamp
from xmppd.config import _BadValue, integer, words
from xmppd.router.events import StanzaEvent
from xmppd.xml.stream import StreamProblem, parse_element

__all__ = ["CSIComponent", "is_important", "payload_names"]

#: Namespaces a stanza's own children are in (parsed: jabber:client; built
#: by a component: often none).
_CONTENT = frozenset((None, "", ns.CLIENT, ns.SERVER))

#: An attribute of a start tag, as serialisers write it.
_ATTRIBUTE = re.compile(r"""([^\s=/>]+)\s*=\s*(?:'([^']*)'|"([^"]*)")""")

_ENTITIES = {"&apos;": "'", "&quot;": '"'}
_QUOTE = {"'": "&apos;", '"': "&quot;"}


def payload_names(text: str) -> list[tuple[str, str]]:
    """The ``important_payloads`` option: ``{namespace}name`` words, each a
    child element that makes a message important."""
    names = []
    for word in words(text):
        match = re.fullmatch(r"\{([^{}\s]+)\}([^{}\s/]+)", word)
        if match is None:
            raise _BadValue(f"expected {{namespace}}name, got {word!r}")
        names.append((match.group(1), match.group(2)))
    return names


def _child(element: domish.Element, name: str, uri: Any = None) -> domish.Element | None:
    """The first child element ``name`` in ``uri`` (None: the stanza's own
    content namespace)."""
    for child in element.elements():
        if child.name == name and (child.uri in _CONTENT if uri is None else child.uri == uri):
            return child
    return None


def _message_is_important(message: domish.Element,
                          payloads: list[tuple[str, str]] = ()) -> bool:
    if message.getAttribute("type") == "headline":
        return False  # ephemeral by definition
    if message.getAttribute("type") == "error":
        return True  # a delivery failure
    if _child(message, "sent", ns.CARBONS) is not None:
        return True  # the user wrote it on another device
    received = _child(message, "received", ns.CARBONS)
    if received is not None:
        forwarded = next((c for c in received.elements() if c.uri == ns.FORWARD), None)
        inner = _child(forwarded, "message") if forwarded is not None else None
        if inner is not None:
            message = inner
    for child in message.elements():
        uri, name = child.uri, child.name
        if uri in _CONTENT:
            if name in ("body", "subject"):
                return True  # a subject is the last step of a MUC join
        elif uri == ns.EME and name == "encryption":
            return True  # what it says cannot be known: assume it matters
        elif uri == ns.CONFERENCE and name == "x":
            return True
        elif uri == ns.MUC_USER and name == "x" and _child(child, "invite", ns.MUC_USER):
            return True
        elif uri in (ns.JINGLE_MESSAGE_0, ns.JINGLE_MESSAGE_1):
            return True  # a call
        elif (uri, name) in payloads:
            return True
    return False


def _start_tag(text: str) -> tuple[str, str, dict[str, str]] | None:
    """The element name (as written, with any prefix), the name without
    prefix and the attributes of a serialised stanza's start tag."""
    if not text.startswith("<"):
        return None
    end = text.find(">")
    if end < 0:
        return None
    head = text[1:end].rstrip("/")
    raw = head.split(None, 1)[0] if head.strip() else ""
    attributes = {}
    for key, single, double in _ATTRIBUTE.findall(head[len(raw):]):
        attributes[key] = unescape(single or double, _ENTITIES)
    return raw, raw.rpartition(":")[2], attributes


def is_important(stanza: domish.Element | str,
                 payloads: list[tuple[str, str]] = ()) -> bool:
    """Must ``stanza`` reach an inactive client now (mod_csi_simple's
    ``is_important``)? ``payloads``: ``(namespace, name)`` of further
    children that make a message important."""
    if isinstance(stanza, str):
        tag = _start_tag(stanza)
        if tag is None:
            return True
        _raw, name, attributes = tag
        stype = attributes.get("type")
        if name == "presence":
            return stype not in (None, "unavailable", "error")
        if name != "message":
            return True  # iqs, and whatever else this is
        if stype in ("headline", "error"):
            return stype == "error"
        try:
            element = parse_element(stanza, max_size=len(stanza) + 1024)
        except (ValueError, StreamProblem):
            return True
        return _message_is_important(element, payloads)
    if stanza.uri not in _CONTENT:
        return True  # not a stanza: a stream-level element
    if stanza.name == "presence":
        return stanza.getAttribute("type") not in (None, "unavailable", "error")
    if stanza.name == "message":
        return _message_is_important(stanza, payloads)
    return True


def _delayed(text: str, raw_name: str, delay: str) -> str:
    """``text`` (one serialised stanza) with ``delay`` as its last child."""
    text = text.rstrip()
    if text.find(">") == len(text) - 1:  # an empty element: <presence …/>
        return f"{text[:-2].rstrip()}>{delay}</{raw_name}>"
    close = text.rfind("</")
    return text[:close] + delay + text[close:]


class _Client:
    """One session's client state while it is not plain active: what is held
    and whether it is holding. It is the session's send filter; it refers
    to the session weakly (the session refers to it)."""

    __slots__ = ("component", "session", "owner", "state", "held", "serial", "resume",
                 "__weakref__")

    def __init__(self, component: CSIComponent, session: Any):
        self.component = component
        self.session = weakref.ref(session)
        #: the user's bare JID: whose delay stamps these are
        self.owner: str = session.user
        #: "inactive" (holding) or "flushing" (passing, holding again soon)
        self.state = "inactive"
        #: what is held, in order: a presence keyed by its sender (a newer
        #: one takes its key, and its place at the end), the rest by number
        self.held: dict[Any, tuple[str, str]] = {}
        self.serial = 0
        #: the timer that makes a flushing session hold again
        self.resume = None

    def __call__(self, stanza: domish.Element | str) -> bool:
        """The send filter: True when the stanza was taken (held)."""
        if self.state != "inactive":
            return False
        session = self.session()
        if session is None:
            return False
        component = self.component
        if len(self.held) >= component.queue_size:
            self.flush(session, "queue full")
            return False
        if is_important(stanza, component.payloads):
            self.flush(session, "important")
            return False
        text = stanza if isinstance(stanza, str) else session.serialize(stanza)
        raw, kind, attributes = _start_tag(text)
        sender = attributes.get("from")
        delay = (f"<delay xmlns='{ns.DELAY}' from='{escape(self.owner, _QUOTE)}' "
                 f"stamp='{delay_stamp(component.clock.seconds())}'/>")
        entry = (_delayed(text, raw, delay), kind)
        if kind == "presence" and sender is not None:
            key: Any = ("presence", sender)
            self.held.pop(key, None)  # the newest, at the place of its arrival
        else:
            key = self.serial
            self.serial += 1
        self.held[key] = entry
        return True

    def take(self) -> list[tuple[str, str]]:
        held, self.held = self.held, {}
        return list(held.values())

    def flush(self, session: Any, reason: str) -> None:
        """Write what is held, in order, and pass what comes for a while
        (until ``resume_inactive_delay`` seconds after the output drained)."""
        self.component.server.counters[f"csi flush ({reason})"] += 1
        self.state = "flushing"
        release(session, self.take())
        if self.resume is None:
            session.drained().addCallbacks(self._drained, lambda _: None)

    def _drained(self, _: Any = None) -> None:
        if self.state == "flushing" and self.resume is None:
            self.resume = self.component.clock.callLater(
                self.component.config["resume_inactive_delay"], self._hold_again)

    def _hold_again(self) -> None:
        self.resume = None
        if self.state == "flushing":
            self.state = "inactive"

    def stop(self) -> None:
        if self.resume is not None and self.resume.active():
            self.resume.cancel()
        self.resume = None
        self.state = "active"


def release(session: Any, held: list[tuple[str, str]]) -> None:
    """Write held stanzas to ``session`` past the filters, in order; once it
    has closed, they go where stanzas for a closed session go."""
    router = session.router
    for text, kind in held:
        if session.closed:
            router.undelivered(kind, text.encode("utf-8"), session)
        else:
            session.write_now(text)


def hand_on(session: Any, held: list[tuple[str, str]]) -> None:
    """The session is ending: its held stanzas go where stanzas for a closed
    session go, once. A stream that is closing is not written to (a clean
    close has sent its last ``<a/>``), and under stream management
    :meth:`~xmppd.streams.negotiation.ClientSession.write_now` would both
    write and queue them, and the queue is re-routed too. A hibernating
    session writes nothing: its queue takes them (and stream management
    re-routes it as the session ends)."""
    hibernating = getattr(session.framing, "channel", None) == "hibernating"
    router = session.router
    for text, kind in held:
        if hibernating and session.sm is not None and not session.closed:
            session.write_now(text)
        else:
            router.undelivered(kind, text.encode("utf-8"), session)


class CSIComponent(Component):
    """Client state indication (XEP-0352), as mod_csi_simple does it."""

    name = "csi"
    options = [
        Option("queue_size", integer(1), "256",
               "most stanzas held for one inactive session; the next one writes them all"),
        Option("resume_inactive_delay", integer(0), "5",
               "seconds after a flush (once written) before an inactive session holds again"),
        Option("important_payloads", payload_names, "",
               "more message payloads that must reach an inactive client at once, "
               "as {namespace}name words"),
    ]

    def __init__(self, server, config: dict[str, Any]):
        super().__init__(server, config)
        self.queue_size: int = config["queue_size"]
        self.payloads: list[tuple[str, str]] = config["important_payloads"]
        #: sessions that are inactive or flushing (a session that ends
        #: without ever binding is forgotten with it)
        self._clients: weakref.WeakKeyDictionary[Any, _Client] = weakref.WeakKeyDictionary()

    def stream_features(self, session: Any) -> list[domish.Element]:
        if session.user is None:
            return []
        return [domish.Element((ns.CSI, "csi"))]

    def state(self, session: Any) -> str:
        """``"active"``, ``"inactive"`` (holding) or ``"flushing"`` (an
        inactive session passing stanzas for a moment after a flush)."""
        client = self._clients.get(session)
        return "active" if client is None else client.state

    # -- the client's state ----------------------------------------------------------

    @stream_element(ns.CSI, "inactive")
    def inactive(self, session: Any, element: domish.Element) -> None:
        client = self._clients.get(session)
        if client is None:
            client = self._clients[session] = _Client(self, session)
            session.add_send_filter(client)
        elif client.resume is not None:
            client.resume.cancel()
            client.resume = None
        client.state = "inactive"

    @stream_element(ns.CSI, "active")
    def active(self, session: Any, element: domish.Element) -> None:
        client = self._forget(session)
        if client is not None:
            release(session, client.take())

    def _forget(self, session: Any) -> _Client | None:
        client = self._clients.pop(session, None)
        if client is not None:
            session.remove_send_filter(client)
            client.stop()
        return client

    # -- the client's own stanzas: it is awake ---------------------------------------

    @handles("pre-message", priority=1000)
    @handles("pre-presence", priority=1000)
    @handles("pre-iq", priority=1000)
    def client_activity(self, event: StanzaEvent) -> None:
        if not self._clients:
            return None
        try:
            client = self._clients.get(event.origin)
        except TypeError:  # not a session this component could know
            return None
        if client is not None and client.state == "inactive" and client.held:
            client.flush(event.origin, "client activity")
        return None

    # -- the session's life ------------------------------------------------------------

    @handles("resource-hibernated", priority=100)
    def hibernated(self, session: Any) -> None:
        """The connection dropped: what was held joins the stream management
        queue now (the client gets it on resumption, or it is re-routed), and
        the resumed stream starts active (XEP-0352 §5.2)."""
        client = self._forget(session)
        if client is not None:
            release(session, client.take())
        return None

    @handles("resource-resumed", priority=100)
    def resumed(self, session: Any) -> None:
        """Resumed on a new connection without a ``resource-hibernated``
        first (the old one still seemed up): active again (XEP-0352 §5.2),
        and what was held is written after the stanzas re-sent."""
        client = self._forget(session)
        if client is not None:
            release(session, client.take())
        return None

    @handles("resource-unbind", priority=100)
    def unbound(self, session: Any) -> None:
        """The session ends: nothing held may be lost, nor arrive twice (see
        the module docstring)."""
        client = self._forget(session)
        if client is not None:
            hand_on(session, client.take())
        return None

    @handles("account-deleted")
    def account_deleted(self, bare: str) -> None:
        """The account's sessions are closing: forget their state (what
        they held is for no one now)."""
        for session, client in list(self._clients.items()):
            if client.owner == bare:
                self._clients.pop(session, None)
                client.stop()
        return None
