"""Content namespaces at the edge (design §11.9).

Inside the server every stanza is in ``jabber:client``, whatever stream it came
from, so one handler serves a stanza from a local client, a remote server
(``jabber:server``) or an external component (``jabber:component:accept``).
The streams that are not client streams map at their edge, and only there:

- :func:`to_client` on what they read: the stanza and every descendant in
  the stream's content namespace (``<body/>``, ``<error/>``, ``<status/>`` …)
  move to ``jabber:client``; payloads in other namespaces are untouched.
- :func:`serialize` on what they write: elements in ``jabber:client`` are
  written without a namespace declaration, so that, inside a stream whose
  default namespace is the stream's own, the peer reads them in that one.
"""

from __future__ import annotations

from twisted.words.xish import domish

from xmppd import ns

_PREFIXES = {ns.STREAMS: "stream"}


def to_client(element: domish.Element, uri: str) -> domish.Element:
    """Move ``element`` and its descendants in ``uri`` to ``jabber:client``,
    in place; returns ``element``."""
    stack = [element]
    while stack:
        node = stack.pop()
        if node.uri != uri:
            continue  # a payload: its children are in its own namespace (or say so)
        node.uri = ns.CLIENT
        if node.defaultUri == uri:
            node.defaultUri = ns.CLIENT
        stack.extend(c for c in node.children if isinstance(c, domish.Element))
    return element


def serialize(element: domish.Element) -> str:
    """``element`` as a non-client stream writes it: ``jabber:client`` as the
    default namespace in scope, so it is declared nowhere."""
    return element.toXml(prefixes=_PREFIXES, defaultUri=ns.CLIENT, prefixesInScope=["stream"])
