"""The event a handler receives, and the stanza-building helpers it needs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from twisted.words.protocols.jabber.error import STANZA_CONDITIONS
from twisted.words.xish import domish

from xmppd import ns

if TYPE_CHECKING:
    from twisted.words.protocols.jabber.jid import JID

    from xmppd.router.router import Router


def stanza_error(stanza: domish.Element, condition: str, type: str | None = None,
                 text: str | None = None) -> domish.Element:
    """The error reply to ``stanza`` (RFC 6120 §8.3): to/from swapped and
    the ``<error/>`` with ``condition``. The original payload is not echoed
    (§8.3.1 leaves it to us): as Prosody's error replies, and a refused
    oversized stanza is not sent back whole."""
    reply = domish.Element((ns.CLIENT, stanza.name))
    for ours, theirs in (("to", "from"), ("from", "to"), ("id", "id")):
        value = stanza.getAttribute(theirs)
        if value is not None:
            reply[ours] = value
    reply["type"] = "error"
    error = reply.addElement("error")
    error["type"] = type or STANZA_CONDITIONS.get(condition, {}).get("type", "cancel")
    error.addElement((ns.STANZA_ERRORS, condition))
    if text:
        error.addElement((ns.STANZA_ERRORS, "text"), content=text)
    return reply


def iq_result(stanza: domish.Element, child: domish.Element | None = None) -> domish.Element:
    """An ``<iq type='result'/>`` answering ``stanza``, optionally with a payload."""
    reply = domish.Element((ns.CLIENT, "iq"))
    reply["type"] = "result"
    if stanza.hasAttribute("id"):
        reply["id"] = stanza["id"]
    if stanza.hasAttribute("from"):
        reply["to"] = stanza["from"]
    if stanza.hasAttribute("to"):
        reply["from"] = stanza["to"]
    if child is not None:
        reply.addChild(child)
    return reply


def presence(from_: str, to: str, stype: str | None = None) -> domish.Element:
    """A bare ``<presence/>`` the server sends on someone's behalf."""
    element = domish.Element((ns.CLIENT, "presence"))
    element["from"], element["to"] = from_, to
    if stype is not None:
        element["type"] = stype
    return element


def disco_info(identities: Iterable[tuple[str, str, str]], features: Iterable[str],
               node: str | None = None,
               extra: Iterable[domish.Element] = ()) -> domish.Element:
    """An XEP-0030 disco#info ``<query/>``: identities as (category, type,
    name) (an empty name is left out), features, then ``extra`` children
    (XEP-0128 forms)."""
    query = domish.Element((ns.DISCO_INFO, "query"))
    if node is not None:
        query["node"] = node
    for category, type_, name in identities:
        identity = query.addElement("identity")
        identity["category"], identity["type"] = category, type_
        if name:
            identity["name"] = name
    for feature in features:
        query.addElement("feature")["var"] = feature
    for child in extra:
        query.addChild(child)
    return query


def readdressed(stanza: domish.Element, to: str, from_: str | None = None) -> domish.Element:
    """A copy of ``stanza`` addressed elsewhere; the payload elements are shared,
    not copied (adding a child to one copy does not change the others)."""
    copy = domish.Element((stanza.uri, stanza.name), stanza.defaultUri)
    copy.attributes = dict(stanza.attributes)
    copy.children = list(stanza.children)
    copy["to"] = to
    if from_ is not None:
        copy["from"] = from_
    return copy


class StanzaEvent:
    """One stanza on its way through the router, as handlers see it.

    ``to`` and ``from_`` are parsed JIDs (``to`` is None when the stanza had no
    ``to``); ``origin`` is the session it came from (None when the server made it).
    ``payload`` is the iq's single child element, for iq get/set events.
    """

    __slots__ = ("stanza", "origin", "router", "to", "from_", "payload", "name")

    def __init__(self, stanza: domish.Element, origin: Any, router: Router,
                 to: JID | None, from_: JID | None, payload: domish.Element | None = None):
        self.stanza = stanza
        self.origin = origin
        self.router = router
        self.to = to
        self.from_ = from_
        self.payload = payload
        self.name = ""

    @property
    def kind(self) -> str:
        return self.stanza.name

    @property
    def type(self) -> str | None:
        return self.stanza.getAttribute("type")

    def reply(self, child: domish.Element | None = None) -> domish.Element:
        """The iq result answering this event's stanza (return it from a handler)."""
        return iq_result(self.stanza, child)

    def error(self, condition: str, type: str | None = None, text: str | None = None) -> domish.Element:
        """The error reply to this event's stanza (return it from a handler)."""
        return stanza_error(self.stanza, condition, type, text)
