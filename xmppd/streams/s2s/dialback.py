"""XEP-0220 server dialback: its keys and its elements.

A dialback key proves that a stream really comes from the server that is
authoritative for a domain: the receiving server asks that domain's server
(connecting to it through DNS, which an attacker on the incoming connection
does not control) whether the key is one it made. Keys are XEP-0185's:
HMAC-SHA256 over the receiving domain, the originating domain and the
receiving server's stream id, keyed with a secret of this process (new at
each start, as Prosody's; a key outlives no restart, and needs not to: a
verification follows its key within seconds). The key function is wokkel's
(:func:`wokkel.server.generateKey`), which implements XEP-0185 exactly.
"""

from __future__ import annotations

import hmac
import secrets

from twisted.words.xish import domish
from wokkel.server import generateKey

from xmppd import ns


class Keys:
    """Makes and checks this server's dialback keys."""

    def __init__(self, secret: str | None = None):
        self._secret = secret or secrets.token_hex(32)

    def make(self, receiving: str, originating: str, stream_id: str) -> str:
        return generateKey(self._secret, receiving, originating, stream_id)

    def check(self, key: str, receiving: str, originating: str, stream_id: str) -> bool:
        """Is ``key`` the one this server made for the stream? (constant time)"""
        expected = self.make(receiving, originating, stream_id)
        return hmac.compare_digest(expected.encode(), (key or "").strip().encode())


def element(name: str, from_: str, to: str, *, key: str | None = None,
            type_: str | None = None, id_: str | None = None,
            error: str | None = None) -> domish.Element:
    """A ``<db:result/>`` or ``<db:verify/>``."""
    e = domish.Element((ns.DIALBACK, name))
    e.defaultUri = ns.CLIENT  # the stream's content namespace, mapped at the edge
    e["from"], e["to"] = from_, to
    if id_ is not None:
        e["id"] = id_
    if type_ is not None:
        e["type"] = type_
    if key is not None:
        e.addContent(key)
    if error is not None:
        kind = "cancel" if error in ("item-not-found", "remote-server-not-found",
                                     "remote-server-timeout") else "auth"
        err = e.addChild(domish.Element((ns.CLIENT, "error")))  # jabber:server on the wire
        err["type"] = kind
        err.addElement((ns.STANZA_ERRORS, error))
    return e


def serialize(e: domish.Element) -> str:
    """A dialback element as written inside an s2s stream (prefix ``db``)."""
    return e.toXml(prefixes={ns.DIALBACK: "db", ns.STREAMS: "stream"},
                   defaultUri=ns.CLIENT, prefixesInScope=["db", "stream"])
