"""XEP-0049: Private XML Storage — arbitrary XML a user keeps on the server.

A client stores an element (bookmarks, roster notes, client preferences) with
``<iq type='set'><query xmlns='jabber:iq:private'>…</query></iq>`` and gets it
back by sending the empty element in an ``iq type='get'``. Only the account
itself may do either (XEP-0049 §2.3, §4).

Storage is one map store ``private``: per user, one entry per stored element,
keyed by the element's qualified name in Clark notation
(``{storage:bookmarks}storage``, as Prosody keys by name and namespace), whose
value is the element serialised as XML text. It is parsed back through the
same restricted parser as the wire (:func:`xmppd.xml.stream.parse_element`).
A set is written in one transaction and acknowledged only once durable.

Behaviour where XEP-0049 leaves a choice (it is a Historical spec documenting
jabberd 1.x usage):

- *No child, or a child without a namespace of its own*: ``not-acceptable``
  (modify). §2.3 says the server MUST answer "Not Acceptable" when no child
  with a proper namespace is included; its later "SHOULD return Bad Format" is
  not an RFC 6120 §8.3.3 stanza condition (only a stream one), so a valid
  condition wins.
- *Several children*: §2.3 lets a set (and a result) carry several elements,
  and forbids a get asking for more than one namespace. A set stores each
  element, all or none; a get may ask for several elements of one namespace.
  A get spanning namespaces, or a request naming the same element twice, is a
  ``bad-request``.
- *Reserved namespaces* (§2.3: ``jabber:*``, ``http://jabber.org/*``,
  ``vcard-temp``) are refused with ``not-acceptable``: the option the XEP
  allows, which keeps clients from mistaking this store for the real protocol
  (and ``jabber:iq:private`` inside itself means nothing).
- *Another user's data* (an iq to someone else's bare JID): ``forbidden``, the
  condition §2.3 prefers, with RFC 6120 §8.3.3.5's error type ``auth``.
- *Storing an empty element* (no attributes, no content) deletes the entry: a
  get of it answers the same empty element either way.
- *Size*: one stanza is already capped by ``[server] max_stanza_size``; the
  ``max_size`` option caps what one account stores in total (all elements
  together, as UTF-8 XML), so repeated sets under new names cannot fill the
  disk. Beyond it a set fails with ``policy-violation`` and changes nothing.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.words.xish import domish

from xmppd import ns
from xmppd.component import Component, Option, handles
from xmppd.config import integer
from xmppd.locks import KeyedLock
from xmppd.router.events import StanzaEvent
from xmppd.xml.stream import parse_element

#: Namespace prefixes XEP-0049 §2.3 calls reserved.
RESERVED_PREFIXES = ("jabber:", "http://jabber.org/")
RESERVED_NAMESPACES = frozenset(("vcard-temp",))


def storage_key(element: domish.Element) -> str:
    """The store key of a private element: its qualified name, ``{namespace}name``."""
    return f"{{{element.uri}}}{element.name}"


def is_reserved(namespace: str) -> bool:
    """Is ``namespace`` one XEP-0049 §2.3 reserves (and this server refuses)?"""
    return namespace in RESERVED_NAMESPACES or namespace.startswith(RESERVED_PREFIXES)


def is_empty(element: domish.Element) -> bool:
    """No attributes, no child elements, no text but whitespace: nothing to keep."""
    if element.attributes:
        return False
    for child in element.children:
        if isinstance(child, domish.Element) or str(child).strip():
            return False
    return True


class PrivateComponent(Component):
    """Private XML storage for each account (XEP-0049)."""

    name = "private"
    # XEP-0049 registers no disco feature; Prosody announces the namespace,
    # and clients that check for one look for exactly that.
    features = [ns.PRIVATE]
    options = [
        Option("max_size", integer(0), "1048576",
               "most bytes of private XML one account may store, all elements "
               "together (0: no limit beyond the stanza size)"),
    ]
    stores = {"private": "map"}

    def __init__(self, server, config: dict[str, Any]):
        super().__init__(server, config)
        #: per user: sets run one at a time, so the size check sees every write
        self._locks = KeyedLock()

    # -- another user's storage: refused (XEP-0049 §2.3, §4) --------------------

    @handles(f"iq-get/bare/{ns.PRIVATE}:query")
    @handles(f"iq-set/bare/{ns.PRIVATE}:query")
    def other_user(self, event: StanzaEvent):
        return event.error("forbidden")

    # -- the account's own storage ----------------------------------------------

    @handles(f"iq-get/self/{ns.PRIVATE}:query")
    def get(self, event: StanzaEvent):
        elements, problem = self._requested(event)
        if problem is not None:
            return problem
        if len({e.uri for e in elements}) > 1:
            # §2.3: "A client MUST NOT query for more than one namespace".
            return event.error("bad-request", text="one namespace per get")
        return self._read(event, elements)

    @defer.inlineCallbacks
    def _read(self, event: StanzaEvent, elements: list[domish.Element]):
        user = event.from_.userhost()
        answer = domish.Element((ns.PRIVATE, "query"))
        for requested in elements:
            text = yield self.store["private"].get(user, storage_key(requested))
            if text is None:
                answer.addChild(domish.Element((requested.uri, requested.name)))
            else:
                # A value that no longer parses is damage to report, not to hide
                # behind an empty answer the client would then overwrite.
                # What was accepted under any [server] max_stanza_size must load
                # again, even after the operator lowered it.
                size = len(text.encode("utf-8")) + 1024
                answer.addChild(parse_element(text, max_size=max(size, 1 << 20)))
        return event.reply(answer)

    @handles(f"iq-set/self/{ns.PRIVATE}:query")
    def set(self, event: StanzaEvent):
        elements, problem = self._requested(event)
        if problem is not None:
            return problem
        changes = {storage_key(e): None if is_empty(e) else e.toXml() for e in elements}
        user = event.from_.userhost()
        return self._locks.run(user, self._write, event, user, changes)

    @defer.inlineCallbacks
    def _write(self, event: StanzaEvent, user: str, changes: dict[str, str | None]):
        limit = self.config["max_size"]
        if limit:
            stored = yield self.store["private"].items(user)
            stored.update(changes)
            total = sum(len(text.encode("utf-8")) for text in stored.values() if text)
            if total > limit:
                return event.error("policy-violation", type="modify",
                                   text=f"private storage is limited to {limit} bytes per account")
        yield self.store["private"].set_many(user, changes)
        return event.reply()

    def _requested(self, event: StanzaEvent) -> tuple[list[domish.Element], domish.Element | None]:
        """The query's child elements, or the error a malformed query gets."""
        elements = [c for c in event.payload.children if isinstance(c, domish.Element)]
        if not elements:
            return [], event.error("not-acceptable", type="modify",
                                   text="the query needs the element to store or get")
        for element in elements:
            if not element.uri or element.uri == ns.PRIVATE:
                return [], event.error("not-acceptable", type="modify",
                                       text="the element needs a namespace of its own")
            if is_reserved(element.uri):
                return [], event.error("not-acceptable", type="modify",
                                       text=f"namespace {element.uri} is reserved")
        if len({storage_key(e) for e in elements}) != len(elements):
            return [], event.error("bad-request", text="the same element appears twice")
        return elements, None
