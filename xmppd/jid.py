"""JIDs (RFC 7622 via Twisted's stringprep profiles), with the limits a server needs.

Twisted's :func:`twisted.words.protocols.jabber.jid.internJID` caches without
bound and accepts parts of any length; a server parsing JIDs from untrusted
peers needs both bounded. Every JID that enters xmppd goes through
:func:`parse`, which raises :class:`InvalidJID` for anything RFC 7622 forbids.
"""

from __future__ import annotations

from functools import lru_cache

from twisted.words.protocols.jabber.jid import JID, InvalidFormat, parse as _parse

__all__ = ["JID", "InvalidJID", "parse", "parse_or_none"]

#: RFC 7622 §3.1: each part is at most 1023 octets once prepared.
MAX_PART_BYTES = 1023


class InvalidJID(ValueError):
    """The string is not a valid JID (bad characters, empty or overlong part)."""


@lru_cache(maxsize=8192)
def parse(text: str) -> JID:
    """Parse and prepare ``text`` into a :class:`JID`; cached, bounded.

    :raises InvalidJID: on an empty domain, an empty local part or resource
        where a separator is present, or a part longer than 1023 bytes.
    """
    if not text or len(text) > 3 * (MAX_PART_BYTES + 1):
        raise InvalidJID("empty or overlong JID")
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
    return JID(tuple=(user, host, resource))


def parse_or_none(text: str | None) -> JID | None:
    """Like :func:`parse` but return ``None`` for a missing or invalid JID."""
    if not text:
        return None
    try:
        return parse(text)
    except InvalidJID:
        return None
