"""XEP-0292 vCard4 over PEP, and XEP-0398: a vcard-temp PHOTO and a
XEP-0084 avatar are the same picture.

xmppd keeps the vcard-temp an old client stores as it was sent
(:mod:`xmppd.components.vcard`), and the PEP nodes as clients publish them;
this component converts between them whenever one changes, as Prosody's
mod_vcard4 and mod_vcard_legacy (read for behaviour) make them agree:

- *vcard-temp → PEP* (on ``vcard-changed``, XEP-0398 §3.2): a PHOTO with
  an image is published to ``urn:xmpp:avatar:data`` (item id: the SHA-1 of
  the image), then ``urn:xmpp:avatar:metadata`` gets one ``<info/>`` with
  id, bytes, the PHOTO's TYPE (or the type the image's first bytes show),
  and width/height when the PNG, JPEG, GIF or WebP header says them; the
  metadata notification reaches the contacts whose caps ask for it. The
  same picture again publishes nothing. A vCard without a photo, when the
  account has an avatar, publishes XEP-0084's "avatar disabled" (an empty
  ``<metadata/>``; Prosody purges both nodes). The vCard's other fields
  become the vCard4 ``current`` of ``urn:xmpp:vcard4`` (Prosody's mapping),
  when it differs from the one there.
- *PEP → vcard-temp* (on ``pep-changed``, XEP-0398 §3.1): a metadata item
  names the picture — its first ``<info/>`` without an external URL — whose
  data item is looked up and checked against the id (the SHA-1 SHOULD
  match; data that does not converts nothing); it replaces the vCard's
  PHOTO, every other element kept, and ``vcard-changed`` is fired, so the
  XEP-0153 hash in presence follows (:mod:`xmppd.components.vcard_update`).
  Metadata with only a URL gives a PHOTO with that EXTVAL (as Prosody);
  empty metadata, or none left, removes the PHOTO. A vCard4 published to
  ``urn:xmpp:vcard4`` replaces the vcard-temp fields it speaks for (FN, N,
  NICKNAME, EMAIL, TEL, ADR, ORG, …) and keeps the rest (PHOTO, GEO, …).
- *No loops*: what this component writes is its own — the
  ``vcard-changed`` it fires and the items it publishes are recognised and
  not converted back; and a conversion that would change nothing (the same
  picture, the same vCard) writes nothing.
- *Nodes it creates* are ``open`` (Prosody's, and a vCard is public
  anyway; XEP-0398 §5 warns clients about it); existing nodes keep their
  configuration.
- *XEP-0292's iq* (Prosody's mod_vcard4): ``<vcard xmlns='urn:ietf:params:
  xml:ns:vcard-4.0'/>`` get to an account answers the vCard4 item
  (``item-not-found`` without one, ``forbidden`` when its access model
  keeps the requester out); a set publishes it as ``current``.
- *Discovery*: the account announces ``urn:ietf:params:xml:ns:vcard-4.0``
  and ``urn:xmpp:pep-vcard-conversion:0``.

A converted vCard that would exceed ``[component:vcard] max_size`` is not
written (logged); a photo too big for a PEP item is not published, and the
vCard4 still is. Conversions of one account run one at a time, in order.
Nothing is kept per account beyond conversions in progress.

This module's first half is the pure conversions (no I/O, unit-tested);
the second half is the component.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.words.xish import domish

from xmppd import ns
from xmppd.component import Component, handles
from xmppd.components.bookmarks import copy_element
from xmppd.components.pep import CHANGED as PEP_CHANGED
from xmppd.components.vcard import CHANGED as VCARD_CHANGED
from xmppd.components.vcard import VCardChanged
from xmppd.components.vcard import is_empty as is_empty_vcard
from xmppd.locks import KeyedLock
from xmppd.router.events import StanzaEvent
from xmppd.services.pubsub.core import PubSubError

# -- images ----------------------------------------------------------------------------

_PNG = b"\x89PNG\r\n\x1a\n"


def image_type(data: bytes) -> str | None:
    """The media type of an image, from its first bytes (None: unknown)."""
    if data.startswith(_PNG):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) in pixels read from a PNG, GIF, WebP or JPEG header,
    or None when the bytes are none of these or the header is cut short.
    Only headers are read: a JPEG is walked marker by marker up to its
    frame header, never decoded."""
    try:
        if data.startswith(_PNG):
            if data[12:16] != b"IHDR":
                return None
            width, height = struct.unpack(">II", data[16:24])
        elif data[:6] in (b"GIF87a", b"GIF89a"):
            width, height = struct.unpack("<HH", data[6:10])
        elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_size(data)
        elif data.startswith(b"\xff\xd8"):
            return _jpeg_size(data)
        else:
            return None
    except struct.error:
        return None
    return (width, height) if width and height else None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        return (width, height) if len(data) >= 30 else None
    if chunk == b"VP8L":
        if len(data) < 25 or data[20] != 0x2F:
            return None
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        if data[23:26] != b"\x9d\x01\x2a":
            return None
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


#: JPEG start-of-frame markers (SOF0–SOF15 without DHT, JPG and DAC)
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # no length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header
            return None
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if marker in _SOF:
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return (width, height) if width and height else None
        i += 2 + length
    return None


# -- vcard-temp PHOTO <-> XEP-0084 avatar -----------------------------------------------

@dataclass(frozen=True)
class Avatar:
    """One image as both formats need it: XEP-0084's id is its SHA-1 (hex),
    which is also XEP-0153's hash of the vCard photo."""

    data: bytes
    type: str | None

    @property
    def id(self) -> str:
        return hashlib.sha1(self.data).hexdigest()

    def metadata(self) -> domish.Element:
        """The ``urn:xmpp:avatar:metadata`` payload: one ``<info/>`` with id,
        bytes, type, and width/height when the header says them."""
        metadata = domish.Element((ns.AVATAR_METADATA, "metadata"))
        info = metadata.addElement("info")
        info["bytes"] = str(len(self.data))
        info["id"] = self.id
        if self.type:
            info["type"] = self.type
        size = image_size(self.data)
        if size is not None:
            info["width"], info["height"] = str(size[0]), str(size[1])
        return metadata

    def photo(self) -> domish.Element:
        """The vcard-temp ``<PHOTO><TYPE/><BINVAL/></PHOTO>`` of the image."""
        photo = domish.Element((ns.VCARD, "PHOTO"))
        if self.type:
            photo.addElement("TYPE", content=self.type)
        photo.addElement("BINVAL", content=base64.b64encode(self.data).decode("ascii"))
        return photo

    def payload(self) -> domish.Element:
        """The ``urn:xmpp:avatar:data`` payload: the image in base64."""
        data = domish.Element((ns.AVATAR_DATA, "data"))
        data.addContent(base64.b64encode(self.data).decode("ascii"))
        return data


def decode_base64(text: str) -> bytes:
    """Base64 with whitespace and line breaks allowed (as vCards and
    XEP-0084 data carry it); anything else raises :class:`ValueError`."""
    compact = "".join(text.split())
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None


def vcard_photo(vcard: domish.Element | None) -> Avatar | None:
    """The avatar a vCard's photo is: the BINVAL of its last PHOTO that has
    one — the picture whose hash XEP-0153 puts in presence
    (:func:`xmppd.components.vcard.photo_bytes` chooses the same) — with
    the PHOTO's TYPE, or the type its first bytes show when it names none.
    None: no photo, or a BINVAL that is empty or not base64."""
    if vcard is None:
        return None
    found = None
    for photo in vcard.elements(ns.VCARD, "PHOTO"):
        binval = next(photo.elements(ns.VCARD, "BINVAL"), None)
        if binval is not None:
            found = photo, binval
    if found is None:
        return None
    photo, binval = found
    try:
        image = decode_base64(str(binval))
    except ValueError:
        return None
    if not image:
        return None
    declared = next(photo.elements(ns.VCARD, "TYPE"), None)
    kind = str(declared).strip() if declared is not None else ""
    return Avatar(image, kind or image_type(image))


def chosen_info(metadata: domish.Element) -> domish.Element | None:
    """The ``<info/>`` of a metadata payload that XEP-0398 §3.1 converts:
    the first that does not point to an external URL (None: there is none)."""
    for info in metadata.elements(ns.AVATAR_METADATA, "info"):
        if info.getAttribute("id") and not info.getAttribute("url"):
            return info
    return None


def avatar_from_pep(info: domish.Element, data: domish.Element | None) -> Avatar | None:
    """The avatar a metadata ``<info/>`` and its data payload describe, or
    None when the data is missing, not base64, or not the image the id names
    (XEP-0398 §3.1: the SHA-1 of the image SHOULD match the id; a mismatch
    converts nothing rather than spread a picture under a false hash)."""
    if data is None or (data.uri, data.name) != (ns.AVATAR_DATA, "data"):
        return None
    try:
        image = decode_base64(str(data))
    except ValueError:
        return None
    if not image or hashlib.sha1(image).hexdigest() != info.getAttribute("id", "").lower():
        return None
    return Avatar(image, info.getAttribute("type") or image_type(image))


def with_photo(vcard: domish.Element | None, photo: domish.Element | None) -> domish.Element:
    """A copy of ``vcard`` (an empty one when None) whose only PHOTO is
    ``photo`` (:meth:`Avatar.photo`), in place of the first one it had (at
    the end when it had none); ``photo`` None removes them all. Everything
    else of the vCard is kept as it was."""
    result = domish.Element((ns.VCARD, "vCard"))
    if vcard is not None:
        for name, value in vcard.attributes.items():
            result[name] = value
    placed = False
    for child in (vcard.children if vcard is not None else ()):
        if isinstance(child, domish.Element) and (child.uri, child.name) == (ns.VCARD, "PHOTO"):
            if photo is not None and not placed:
                result.addChild(photo)
                placed = True
            continue
        result.addChild(copy_element(child) if isinstance(child, domish.Element) else child)
    if photo is not None and not placed:
        result.addChild(photo)
    return result


# -- vcard-temp <-> vCard4 ---------------------------------------------------------------
#
# The mapping Prosody's mod_vcard_legacy makes (read for behaviour): vCard4
# properties with one value of a known type map to an upper-case vcard-temp
# element with that text; structured ones field by field.

#: vCard4 property -> the value element inside it, for one-text properties
_SIMPLE = {"nickname": "text", "title": "text", "role": "text", "categories": "text",
           "note": "text", "url": "uri", "bday": "date"}
_N = (("surname", "FAMILY"), ("given", "GIVEN"), ("additional", "MIDDLE"),
      ("prefix", "PREFIX"), ("suffix", "SUFFIX"))
_ADR = (("pobox", "POBOX"), ("ext", "EXTADD"), ("street", "STREET"),
        ("locality", "LOCALITY"), ("region", "REGION"), ("code", "PCODE"),
        ("country", "CTRY"))
#: vcard-temp elements a vCard4 speaks for (replaced when a vCard4 is merged in)
MAPPED = frozenset({"FN", "N", "EMAIL", "TEL", "ADR", "JABBERID", "ORG", "DESC",
                    *(name.upper() for name in _SIMPLE)})


def _text(element: domish.Element | None, uri: str, name: str) -> str | None:
    child = None if element is None else next(element.elements(uri, name), None)
    return None if child is None else str(child)


def _v4_type(prop: domish.Element) -> str | None:
    """The first ``parameters/type/text`` of a vCard4 property."""
    for parameters in prop.elements(ns.VCARD4, "parameters"):
        for type_ in parameters.elements(ns.VCARD4, "type"):
            text = _text(type_, ns.VCARD4, "text")
            if text:
                return text
    return None


def _add_v4_type(prop: domish.Element, old: domish.Element) -> None:
    for kind in ("HOME", "WORK"):
        if next(old.elements(ns.VCARD, kind), None) is not None:
            type_ = prop.addElement("parameters").addElement("type")
            type_.addElement("text", content=kind.lower())
            return


def vcard4_from_temp(vcard: domish.Element | None) -> domish.Element:
    """The ``<vcard xmlns='urn:ietf:params:xml:ns:vcard-4.0'>`` a vcard-temp
    says (XEP-0292 §4's mapping, as Prosody converts): FN, N, the one-text
    properties, EMAIL, TEL, ADR, ORG, DESC (as note) and JABBERID (as an
    ``xmpp:`` impp). The PHOTO is the avatar's business, not the vCard4's."""
    v4 = domish.Element((ns.VCARD4, "vcard"))
    v4.addElement("fn").addElement("text", content=_text(vcard, ns.VCARD, "FN") or "")
    old_n = None if vcard is None else next(vcard.elements(ns.VCARD, "N"), None)
    n = v4.addElement("n")
    for new, old in _N:
        n.addElement(new, content=_text(old_n, ns.VCARD, old) or "")
    for child in (() if vcard is None else vcard.elements()):
        if child.uri != ns.VCARD:
            continue
        name, text = child.name, str(child).strip()
        if name.lower() in _SIMPLE and name.isupper():
            if text:
                v4.addElement(name.lower()).addElement(_SIMPLE[name.lower()], content=text)
        elif name == "DESC":
            if text:
                v4.addElement("note").addElement("text", content=text)
        elif name == "EMAIL":
            userid = _text(child, ns.VCARD, "USERID")
            if userid:
                email = v4.addElement("email")
                email.addElement("text", content=userid)
                _add_v4_type(email, child)
        elif name == "TEL":
            number = _text(child, ns.VCARD, "NUMBER")
            if number:
                tel = v4.addElement("tel")
                tel.addElement("uri", content="tel:" + number)
                _add_v4_type(tel, child)
        elif name == "ADR":
            adr = v4.addElement("adr")
            for new, old in _ADR:
                adr.addElement(new, content=_text(child, ns.VCARD, old) or "")
            _add_v4_type(adr, child)
        elif name == "ORG":
            orgname = _text(child, ns.VCARD, "ORGNAME")
            if orgname:
                v4.addElement("org").addElement("text", content=orgname)
        elif name == "JABBERID":
            if text:
                v4.addElement("impp").addElement("uri", content="xmpp:" + text)
    return v4


def _add_temp_type(element: domish.Element, prop: domish.Element) -> None:
    kind = _v4_type(prop)
    if kind in ("home", "work"):
        element.addElement(kind.upper())


def temp_from_vcard4(v4: domish.Element, base: domish.Element | None = None) -> domish.Element:
    """The vcard-temp a vCard4 says, merged into ``base`` (the stored
    vcard-temp, or None): the elements a vCard4 speaks for (:data:`MAPPED`)
    are replaced by the vCard4's, every other element of ``base`` — PHOTO,
    LOGO, GEO, extensions — is kept, so an old client loses nothing a vCard4
    has no place for."""
    result = domish.Element((ns.VCARD, "vCard"))
    if base is not None:
        for name, value in base.attributes.items():
            result[name] = value
    fn = _text(next(v4.elements(ns.VCARD4, "fn"), None), ns.VCARD4, "text")
    if fn:
        result.addElement("FN", content=fn)
    n4 = next(v4.elements(ns.VCARD4, "n"), None)
    if n4 is not None and any(_text(n4, ns.VCARD4, new) for new, _ in _N):
        n = result.addElement("N")
        for new, old in _N:
            text = _text(n4, ns.VCARD4, new)
            if text:
                n.addElement(old, content=text)
    for prop in v4.elements():
        if prop.uri != ns.VCARD4:
            continue
        name = prop.name
        if name in _SIMPLE:
            text = _text(prop, ns.VCARD4, _SIMPLE[name])
            if text:
                result.addElement(name.upper(), content=text)
        elif name == "email":
            text = _text(prop, ns.VCARD4, "text")
            if text:
                email = result.addElement("EMAIL")
                email.addElement("USERID", content=text)
                email.addElement("INTERNET")
                _add_temp_type(email, prop)
        elif name == "tel":
            uri = _text(prop, ns.VCARD4, "uri")
            if uri:
                tel = result.addElement("TEL")
                tel.addElement("NUMBER", content=uri[4:] if uri.startswith("tel:") else uri)
                _add_temp_type(tel, prop)
        elif name == "adr":
            adr = result.addElement("ADR")
            for new, old in _ADR:
                text = _text(prop, ns.VCARD4, new)
                if text:
                    adr.addElement(old, content=text)
            _add_temp_type(adr, prop)
        elif name == "impp":
            uri = _text(prop, ns.VCARD4, "uri")
            if uri and uri.startswith("xmpp:"):
                result.addElement("JABBERID", content=uri[5:])
        elif name == "org":
            text = _text(prop, ns.VCARD4, "text")
            if text:
                result.addElement("ORG").addElement("ORGNAME", content=text)
    if base is not None:
        for child in base.elements():
            if child.uri == ns.VCARD and child.name in MAPPED:
                continue
            result.addChild(copy_element(child))
    return result


# =====================================================================================
# PART 2: the component
# =====================================================================================

#: Configuration of the nodes this component creates for an account that has
#: none yet: open, as Prosody's mod_vcard_legacy makes them (a vCard is
#: public to anyone who asks; the avatar a vCard gave is no more private).
#: An existing node keeps its configuration.
CREATE_OPEN: dict[str, Any] = {"access_model": "open"}
#: The item id of the one vCard4 (XEP-0292 §3; Prosody's too).
CURRENT = "current"


class VCard4Component(Component):
    """vCard4 over PEP (XEP-0292) and the vcard-temp ↔ avatar conversion (XEP-0398)."""

    name = "vcard4"
    account_features = [ns.VCARD4, ns.PEP_VCARD_CONVERSION]

    def __init__(self, server, config: dict[str, Any]):
        super().__init__(server, config)
        #: per account: one conversion at a time, in the order the changes came
        self._locks = KeyedLock()
        #: accounts whose ``vcard-changed`` this component is firing itself
        self._converting: set[str] = set()
        #: (owner, node, item id, payload text) of items this component is
        #: publishing: their ``pep-changed`` is its own echo (an entry lives
        #: while its publish is under way)
        self._publishing: set[tuple[str, str, str, str]] = set()

    def startService(self) -> None:
        super().startService()
        for needed in ("pep", "vcard"):
            if self.server.components.get(needed) is None:
                self.log.warn("vcard4 is enabled without the {needed} component: "
                              "no vCard/avatar conversion", needed=needed)

    @property
    def pep(self) -> Any:
        return self.server.components.get("pep")

    @property
    def vcards(self) -> Any:
        return self.server.components.get("vcard")

    # -- XEP-0292 §3: the vCard4 by iq (Prosody's mod_vcard4) ---------------------------

    @handles(f"iq-get/self/{ns.VCARD4}:vcard")
    @handles(f"iq-get/bare/{ns.VCARD4}:vcard")
    def get(self, event: StanzaEvent) -> Any:
        """The account's vCard4: the item ``current`` of its node, if the
        requester may see the node (``forbidden`` otherwise), else
        ``item-not-found``."""
        pep = self.pep
        if pep is None:
            return False
        owner = event.to.userhost()
        requester = event.from_.full()

        def answer(service: Any) -> domish.Element:
            node = service.nodes.get(ns.VCARD4_NODE) if service is not None else None
            if node is None or not node.items:
                return event.error("item-not-found")
            if not service.may_see(requester, node):
                return event.error("forbidden", "auth")
            payload = pep.payload(service.last_item(ns.VCARD4_NODE))
            if payload is None:
                return event.error("item-not-found")
            return event.reply(payload)
        return pep.get_service(owner).addCallback(answer)

    @handles(f"iq-set/self/{ns.VCARD4}:vcard")
    def set(self, event: StanzaEvent) -> Any:
        """Publish the account's vCard4 as the item ``current`` (created with
        PEP's defaults, as Prosody's mod_vcard4 publishes it)."""
        pep = self.pep
        if pep is None:
            return False
        owner = event.from_.userhost()
        d = pep.publish(owner, ns.VCARD4_NODE, CURRENT, event.payload)
        d.addCallback(lambda _: event.reply())
        d.addErrback(self._refused, event)
        return d

    @staticmethod
    def _refused(failure: Failure, event: StanzaEvent) -> domish.Element:
        failure.trap(PubSubError)
        error = failure.value
        return event.error(error.condition, error.type, error.text)

    # -- vcard-temp → PEP ------------------------------------------------------------

    @handles(VCARD_CHANGED)
    def vcard_changed(self, change: VCardChanged) -> None:
        """An old client set its vCard: its photo becomes the XEP-0084
        avatar (XEP-0398 §3.2: data first, then metadata, whose
        notification reaches the contacts), its fields the vCard4."""
        if change.user in self._converting or self.pep is None:
            return  # this component's own write (from PEP): nothing to convert back
        d = self._locks.run(change.user, self._from_vcard, change.user, change.vcard)
        d.addErrback(lambda f: self.log.failure("converting the vCard of {user} to PEP", f,
                                                user=change.user))

    @defer.inlineCallbacks
    def _from_vcard(self, user: str, vcard: domish.Element | None):
        service = yield self.pep.get_service(user)
        if service is None:
            return
        for convert in (self._avatar_from_vcard, self._vcard4_from_vcard):
            try:
                yield convert(service, user, vcard)
            except PubSubError as e:  # a PEP limit: the other half may still go
                self.log.warn("converting the vCard of {user} to PEP: {error!r}",
                              user=user, error=e)

    @defer.inlineCallbacks
    def _avatar_from_vcard(self, service: Any, user: str, vcard: domish.Element | None):
        avatar = vcard_photo(vcard)
        current = self._current_avatar_id(service)
        if avatar is not None and avatar.id != current:
            yield self._publish(service, user, ns.AVATAR_DATA, avatar.id, avatar.payload())
            yield self._publish(service, user, ns.AVATAR_METADATA, avatar.id, avatar.metadata())
        elif avatar is None and current:
            # No photo any more: XEP-0084's "avatar disabled", an empty
            # metadata item (Prosody purges both nodes instead).
            yield self._publish(service, user, ns.AVATAR_METADATA, None,
                                domish.Element((ns.AVATAR_METADATA, "metadata")))

    @defer.inlineCallbacks
    def _vcard4_from_vcard(self, service: Any, user: str, vcard: domish.Element | None):
        last = service.last_item(ns.VCARD4_NODE)
        if vcard is None and last is None:
            return  # no vCard of either kind
        v4 = vcard4_from_temp(vcard)
        stored = self.pep.payload(last) if last is not None else None
        if stored is None or stored.toXml() != v4.toXml():
            yield self._publish(service, user, ns.VCARD4_NODE, CURRENT, v4)

    def _current_avatar_id(self, service: Any) -> str | None:
        """The id the account's avatar metadata names now ("" for an avatar
        disabled, None for no metadata at all)."""
        last = service.last_item(ns.AVATAR_METADATA)
        metadata = self.pep.payload(last) if last is not None else None
        if metadata is None:
            return None
        info = chosen_info(metadata)
        return info["id"].lower() if info is not None else ""

    @defer.inlineCallbacks
    def _publish(self, service: Any, owner: str, node: str, item_id: str | None,
                 payload: domish.Element):
        """Publish as the account, noting the item as this component's own
        (its ``pep-changed`` is not converted back); a new node is open."""
        options = None if node in service.nodes else dict(CREATE_OPEN)
        key = (owner, node, item_id, payload.toXml())
        self._publishing.add(key)
        try:
            yield self.pep.publish(owner, node, item_id, payload, options)
        finally:
            self._publishing.discard(key)

    def settled(self, user: str) -> defer.Deferred:
        """Fires once every conversion of ``user``'s profile queued so far is
        done (a vCard read right after an avatar publish sees the photo)."""
        return self._locks.run(user, lambda: None)

    # -- PEP → vcard-temp ---------------------------------------------------------------

    @handles(PEP_CHANGED)
    def pep_changed(self, change: Any) -> None:
        """A change of the avatar metadata (XEP-0398 §3.1) or of the vCard4
        node: the stored vcard-temp follows."""
        if change.node not in (ns.AVATAR_METADATA, ns.VCARD4_NODE) or self.vcards is None:
            return
        if change.kind == "items" and any(
                (change.owner, change.node, item.id, item.payload) in self._publishing
                or (change.owner, change.node, None, item.payload) in self._publishing
                for item in change.items):
            return  # this component's own publication
        if change.node == ns.VCARD4_NODE and change.kind != "items":
            return  # a vCard4 withdrawn leaves the vcard-temp as it is
        d = self._locks.run(change.owner, self._to_vcard, change.owner, change.node)
        d.addErrback(lambda f: self.log.failure("converting PEP of {user} to its vCard", f,
                                                user=change.owner))

    @defer.inlineCallbacks
    def _to_vcard(self, user: str, node_name: str):
        pep = self.pep
        service = yield pep.get_service(user)
        vcards = self.vcards
        if service is None or vcards is None:
            return
        stored = yield vcards.load(user)
        last = service.last_item(node_name)
        payload = pep.payload(last) if last is not None else None
        if node_name == ns.VCARD4_NODE:
            if payload is None or (payload.uri, payload.name) != (ns.VCARD4, "vcard"):
                return
            wanted = temp_from_vcard4(payload, stored)
        else:
            wanted = self._photo_from_pep(service, payload, stored)
            if wanted is None:
                return
        if stored is not None and wanted.toXml() == stored.toXml():
            return
        if stored is None and is_empty_vcard(wanted):
            return
        yield self._store_vcard(user, wanted)

    def _photo_from_pep(self, service: Any, metadata: domish.Element | None,
                        stored: domish.Element | None) -> domish.Element | None:
        """The vcard-temp with the photo the avatar metadata names (None:
        nothing to change). No metadata, or metadata without ``<info/>``:
        the avatar is gone, and so is the PHOTO. An info with only an
        external URL: a PHOTO with that EXTVAL (as Prosody). Data missing or
        not matching its id: nothing converted."""
        if metadata is None or (metadata.uri, metadata.name) != (ns.AVATAR_METADATA, "metadata") \
                or next(metadata.elements(ns.AVATAR_METADATA, "info"), None) is None:
            if stored is None or next(stored.elements(ns.VCARD, "PHOTO"), None) is None:
                return None
            return with_photo(stored, None)
        info = chosen_info(metadata)
        if info is None:
            first = next(metadata.elements(ns.AVATAR_METADATA, "info"))
            if not first.getAttribute("url"):
                return None
            photo = domish.Element((ns.VCARD, "PHOTO"))
            if first.getAttribute("type"):
                photo.addElement("TYPE", content=first["type"])
            photo.addElement("EXTVAL", content=first["url"])
            return with_photo(stored, photo)
        wanted_id = info["id"].lower()
        if vcard_photo(stored) is not None and vcard_photo(stored).id == wanted_id:
            return None  # the vCard shows that picture already
        node = service.nodes.get(ns.AVATAR_DATA)
        item = node.items.get(info["id"]) if node is not None else None
        avatar = avatar_from_pep(info, self.pep.payload(item) if item is not None else None)
        if avatar is None:
            self.log.info("avatar {id} of {user}: no matching data, vCard left as it is",
                          id=info["id"], user=service.jid)
            return None
        return with_photo(stored, avatar.photo())

    @defer.inlineCallbacks
    def _store_vcard(self, user: str, vcard: domish.Element):
        """Store the converted vCard as the vcard component would, and fire
        ``vcard-changed`` (the XEP-0153 hash follows) — marked as this
        component's own, so it is not converted back."""
        vcards = self.vcards
        text = vcard.toXml()
        limit = vcards.config.get("max_size") or 0
        if limit and len(text.encode("utf-8")) > limit:
            self.log.warn("the vCard of {user} would exceed [component:vcard] max_size with "
                          "the converted profile: left as it is", user=user)
            return
        yield vcards.store["vcard"].set(user, text)
        self._converting.add(user)
        try:
            self.router.notify(VCARD_CHANGED, VCardChanged(user, vcard))
        finally:
            self._converting.discard(user)

    @handles("account-deleted")
    def forget(self, user: str) -> None:
        self._converting.discard(user)
        self._publishing = {key for key in self._publishing if key[0] != user}
