"""XEP-0054: vcard-temp — a user's vCard, kept by the server for anyone to read.

A user stores their vCard with ``<iq type='set'><vCard xmlns='vcard-temp'>…``
(no 'to', or their own bare JID) and anyone reads it with an ``iq-get`` to
the user's bare JID. A vCard iq to a *full* JID is for that client and is
delivered to it as any iq (the router's default).

Storage is one key-value store ``vcard``: per user, the ``<vCard/>`` element
serialised as XML text, exactly as the client sent it (every element, its
attributes, and the PHOTO's BINVAL byte for byte), parsed back through the
same restricted parser as the wire for each get. A set is acknowledged only
once the write is durable.

What is answered, where XEP-0054 leaves a choice, follows Prosody 0.12 as
it ships (``vcard4`` + ``vcard_legacy``; measured against a private
Prosody, stanza by stanza), except that the vCard comes back as it was
stored where Prosody converts it to vCard4 and back:

- *No vCard* (§3.1 allows an error or an empty result): an empty
  ``<vCard xmlns='vcard-temp'/>`` result.
- *An account that does not exist*: ``service-unavailable``, as RFC 6121
  §8.5.1 prescribes for an iq to a bare JID with no account (and as
  Prosody answers every other iq to such a JID). Here xmppd differs from
  Prosody's ``vcard_legacy``, which answers an empty vCard as if the
  account existed; its older ``mod_vcard`` answers ``item-not-found``.
- *A set to someone else's bare JID*, and *any vCard iq to the domain* (the
  server's own vCard): ``service-unavailable`` (cancel), as Prosody; nothing
  is stored. (``mod_vcard`` answers a get to the domain ``item-not-found``
  and a foreign set ``forbidden``.)
- *Size*: Prosody has no limit of its own beyond its stanza size. The
  ``max_size`` option (65 536 bytes of serialised vCard by default: room for
  a photo of about 48 KB) refuses a bigger vCard with ``not-acceptable``
  (modify) and keeps the stored one. The error does not echo the oversized
  payload back.
- *A PHOTO's BINVAL that is not base64* (whitespace and line breaks
  allowed, as Prosody's decoder allows them): ``bad-request``, nothing
  stored. Prosody fails inside its handler and never answers.
- *An empty vCard* deletes the stored one: a get answers the same empty
  element either way.

A stored change fires the ``vcard-changed`` event (every handler runs, as
for ``account-deleted``) with a :class:`VCardChanged`: the XEP-0153 avatar
hash (:mod:`xmppd.components.vcard_update`) follows it. Account deletion
needs nothing here: the ``vcard`` store's rows are purged with the account,
and nothing is kept in memory.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.words.xish import domish

from xmppd import ns
from xmppd.component import Component, Option, handles
from xmppd.config import integer
from xmppd.router.events import StanzaEvent
from xmppd.xml.stream import parse_element

#: Fired through :meth:`xmppd.router.Router.notify` after a vCard change is durable.
CHANGED = "vcard-changed"


@dataclass(frozen=True)
class VCardChanged:
    """What the ``vcard-changed`` event carries: whose vCard, and the new one
    (None once deleted)."""

    user: str
    vcard: domish.Element | None


def empty_vcard() -> domish.Element:
    return domish.Element((ns.VCARD, "vCard"))


def is_empty(vcard: domish.Element) -> bool:
    """No attributes, no child elements, no text but whitespace: nothing to keep."""
    if vcard.attributes:
        return False
    return not any(isinstance(c, domish.Element) or str(c).strip() for c in vcard.children)


def photo_bytes(vcard: domish.Element) -> bytes | None:
    """The decoded image of the vCard's photo, or None when it has none.

    The photo is the BINVAL of the last PHOTO that has one, as Prosody's
    mod_vcard_legacy reads it (a PHOTO with only an EXTVAL URL has no bytes
    the server can hash). Whitespace inside BINVAL is ignored; anything else
    that is not base64 raises :class:`ValueError`.
    """
    found = None
    for photo in vcard.elements(ns.VCARD, "PHOTO"):
        binval = next(photo.elements(ns.VCARD, "BINVAL"), None)
        if binval is not None:
            found = binval
    if found is None:
        return None
    text = "".join(str(found).split())
    if not text:
        return None
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the PHOTO's BINVAL is not base64") from None


def photo_hash(vcard: domish.Element | None) -> str:
    """The XEP-0153 avatar hash of ``vcard``: the SHA-1 (hex) of its photo's
    bytes, or "" when it has no photo (or no vCard at all). A BINVAL that is
    not base64 (stored before it was checked, or damaged) counts as no photo."""
    if vcard is None:
        return ""
    try:
        image = photo_bytes(vcard)
    except ValueError:
        return ""
    return hashlib.sha1(image).hexdigest() if image else ""


class VCardComponent(Component):
    """Each account's vCard (XEP-0054), readable by anyone."""

    name = "vcard"
    features = [ns.VCARD]
    # An account's bare JID answers vcard-temp gets too (the server for the user).
    account_features = [ns.VCARD]
    options = [
        Option("max_size", integer(0), "65536",
               "most bytes of one vCard, serialised as XML, photo included; a bigger "
               "one is refused with not-acceptable (0: no limit beyond the stanza size)"),
    ]
    stores = {"vcard": "keyvalue"}

    # -- reading (§3.1, §3.3) -------------------------------------------------------

    def load(self, user: str) -> defer.Deferred:
        """Deferred firing with ``user``'s stored vCard element, or None."""
        return self.store["vcard"].get(user).addCallback(_parse)

    @handles(f"iq-get/self/{ns.VCARD}:vCard")
    @handles(f"iq-get/bare/{ns.VCARD}:vCard")
    @defer.inlineCallbacks
    def get(self, event: StanzaEvent):
        user = event.to.userhost()
        converter = self.server.components.get("vcard4")
        if converter is not None:
            # XEP-0398: an avatar just published becomes the vCard's photo
            # after the publish was answered; a read waits for that
            yield converter.settled(user)
        vcard = yield self.load(user)
        if vcard is not None:
            return event.reply(vcard)
        if not (yield self.server.accounts.exists(user)):
            return event.error("service-unavailable")  # RFC 6121 §8.5.1
        return event.reply(empty_vcard())

    # -- the account's own vCard (§3.2) ---------------------------------------------

    @handles(f"iq-set/self/{ns.VCARD}:vCard")
    def set(self, event: StanzaEvent):
        vcard = event.payload
        try:
            photo_bytes(vcard)
        except ValueError as e:
            return event.error("bad-request", text=str(e))
        text = None if is_empty(vcard) else vcard.toXml()
        limit = self.config["max_size"]
        if limit and text is not None and len(text.encode("utf-8")) > limit:
            error = event.error("not-acceptable", "modify",
                                f"a vCard is limited to {limit} bytes")
            error.children = [c for c in error.children if c is not vcard]
            return error
        user = event.from_.userhost()
        d = self.store["vcard"].set(user, text)
        d.addCallback(self._stored, event, user, None if text is None else vcard)
        return d

    def _stored(self, _: Any, event: StanzaEvent, user: str, vcard: domish.Element | None):
        self.router.notify(CHANGED, VCardChanged(user, vcard))
        return event.reply()

    # -- what Prosody does not serve either --------------------------------------------

    @handles(f"iq-set/bare/{ns.VCARD}:vCard")
    @handles(f"iq-get/host/{ns.VCARD}:vCard")
    @handles(f"iq-set/host/{ns.VCARD}:vCard")
    def not_served(self, event: StanzaEvent):
        """Someone else's vCard cannot be set, and the server has none."""
        return event.error("service-unavailable")


def _parse(text: str | None) -> domish.Element | None:
    if text is None:
        return None
    # What was accepted under any max_size must load again, even after the
    # operator lowered it; a value that no longer parses is damage to report
    # (internal-server-error), not to hide behind an empty vCard.
    return parse_element(text, max_size=max(len(text.encode("utf-8")) + 1024, 1 << 20))
