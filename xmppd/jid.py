"""JIDs (RFC 7622 via Twisted's stringprep profiles), with the limits a server needs.

Twisted's :func:`twisted.words.protocols.jabber.jid.internJID` caches without
bound and accepts parts of any length; a server parsing JIDs from untrusted
peers needs both bounded. Every JID that enters xmppd goes through
:func:`parse`, which raises :class:`InvalidJID` for anything RFC 7622 forbids.
"""

from __future__ import annotations

import re
from functools import lru_cache

from twisted.words.protocols.jabber.jid import JID as _TwistedJID
from twisted.words.protocols.jabber.jid import InvalidFormat, parse as _parse

__all__ = ["JID", "InvalidJID", "parse", "parse_or_none"]

#: RFC 7622 §3.1: each part is at most 1023 octets once prepared.
MAX_PART_BYTES = 1023


class InvalidJID(ValueError):
    """The string is not a valid JID (bad characters, empty or overlong part)."""


class JID(_TwistedJID):
    """Twisted's JID, made from parts that are already prepared (Twisted's own
    constructor would run stringprep over them again), with its string forms
    computed once: the router asks for them on every stanza."""

    def __init__(self, user: str | None, host: str, resource: str | None):
        self.user, self.host, self.resource = user, host, resource
        self._full = self._userhost = None

    def userhost(self) -> str:
        if self._userhost is None:
            self._userhost = super().userhost()
        return self._userhost

    def full(self) -> str:
        if self._full is None:
            self._full = super().full()
        return self._full

    def userhostJID(self) -> JID:
        return parse(self.userhost())

    __hash__ = _TwistedJID.__hash__


#: RFC 3454 C.2.1 (ASCII controls) plus what Nodeprep (RFC 7622 App. A.5)
#: prohibits in local parts: space and ``"&'/:<>@``.
_NODE_PROHIBITED = re.compile(r"[\x00-\x20\x7f\"&'/:<>@]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: A plain LDH host name (letters, digits, inner hyphens; optional final dot).
_LDH_HOST = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*"
                       r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.?", re.I)


def _ascii_parts(text: str) -> tuple[str | None, str, str | None] | None:
    """The prepared parts of an everyday ASCII JID, or None to take the full path.

    For ASCII, the stringprep profiles reduce to: Nodeprep lower-cases and
    forbids controls, space and ``"&'/:<>@``; Resourceprep forbids controls;
    Nameprep lower-cases an LDH name. Anything else (non-ASCII, a character
    that would be refused, an empty part) goes through Twisted's stringprep,
    which then decides; a property test checks the two agree.
    """
    if not text.isascii():
        return None
    slash = text.find("/")
    if slash >= 0:
        bare, resource = text[:slash], text[slash + 1:]
        if not resource or _CONTROL.search(resource):
            return None
    else:
        bare, resource = text, None
    at = bare.find("@")
    if at >= 0:
        user, host = bare[:at], bare[at + 1:]
        if not user or _NODE_PROHIBITED.search(user):
            return None
        user = user.lower()
    else:
        user, host = None, bare
    if not _LDH_HOST.fullmatch(host):
        return None
    return user, host.lower(), resource


@lru_cache(maxsize=8192)
def parse(text: str) -> JID:
    """Parse and prepare ``text`` into a :class:`JID`; cached, bounded.

    :raises InvalidJID: on an empty domain, an empty local part or resource
        where a separator is present, or a part longer than 1023 bytes.
    """
    if not text or len(text) > 3 * (MAX_PART_BYTES + 1):
        raise InvalidJID("empty or overlong JID")
    parts = _ascii_parts(text)
    if parts is not None:
        user, host, resource = parts
    else:
        try:
            user, host, resource = _parse(text)
        except InvalidFormat as e:
            raise InvalidJID(str(e) or "invalid JID") from None
        except (UnicodeError, ValueError, IndexError):  # stringprep on empty labels and the like
            raise InvalidJID("invalid JID") from None
    for part in (user, host, resource):
        if part is not None and len(part.encode("utf-8")) > MAX_PART_BYTES:
            raise InvalidJID("JID part longer than 1023 bytes")
    slash = text.find("/")
    at = text.find("@", 0, slash if slash >= 0 else len(text))
    if not host or (at >= 0 and not user) or (slash >= 0 and not resource):
        raise InvalidJID("empty JID part")
    if host.endswith("."):
        host = host[:-1]
    return JID(user, host, resource)


def parse_or_none(text: str | None) -> JID | None:
    """Like :func:`parse` but return ``None`` for a missing or invalid JID."""
    if not text:
        return None
    try:
        return parse(text)
    except InvalidJID:
        return None
