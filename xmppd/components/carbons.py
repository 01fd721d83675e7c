"""XEP-0280 (1.0.1): Message Carbons — every device sees both sides of a chat.

A client turns carbons on for its own session with ``<enable/>`` (§4) and off
with ``<disable/>`` (§5). From then on the server forwards to that session,
wrapped per XEP-0297:

* ``<sent/>`` copies of the eligible messages the user's *other* resources
  send, wherever they go (§8) — hooked on ``pre-message``, which sees every
  stanza a local client sends, local or remote destination;
* ``<received/>`` copies of eligible messages addressed to the user that the
  session did not get by the RFC 6121 §8.5.3 rules (§7) — hooked on
  ``message/full`` and ``message/bare`` ahead of normal delivery.

Which messages are eligible is §6.1 (see :func:`eligible`). The flag lives
with the session only (no storage): it is per login session by definition,
and a new session — even one replacing an old one under the same full JID —
starts with carbons off, as Prosody does.

A ``<private/>`` element is honoured but left in the message the recipient
gets: §9's interoperability note lifted the old requirement to strip it, as
letting the sender silently change delivery was judged a security risk
(Prosody still strips it on the receiving side; the XEP wins here).

Copies go straight to the target session (``router.deliver``), never through
routing: a carbon must not itself be carbon-copied, archived as a new message
or bounced back to the original sender (§10.3).
"""

from __future__ import annotations

from typing import Any, Iterable

from twisted.words.xish import domish

from xmppd import ns
from xmppd.component import Component, handles
from xmppd.components.messaging import bare_recipients
from xmppd.router.events import StanzaEvent

# Namespaces §6.1 names that xmppd/ns.py does not define yet (nothing else in
# the server speaks them); they belong there once a second user appears.
RECEIPTS = "urn:xmpp:receipts"  # XEP-0184
CHAT_MARKERS = "urn:xmpp:chat-markers:0"  # XEP-0333
MUC_USER = "http://jabber.org/protocol/muc#user"  # XEP-0045
CONFERENCE = "jabber:x:conference"  # XEP-0249 direct invitations

#: §6.1 "payload elements typically used in IM" make a bodiless message eligible.
_IM_PAYLOADS = frozenset((RECEIPTS, ns.CHATSTATES, CHAT_MARKERS))


def _children(stanza: domish.Element) -> Iterable[domish.Element]:
    return (c for c in stanza.children if isinstance(c, domish.Element))


def eligible(stanza: domish.Element, inbound: bool) -> bool:
    """Is ``stanza`` a message to carbon-copy (XEP-0280 §6.1)?

    ``inbound`` is True for a message addressed to the local user (a
    ``<received/>`` copy), False for one a local client sent (``<sent/>``).

    * never with ``<private/>`` (§6.1, §9) or the XEP-0334 ``<no-copy/>``
      hint (§9 asks senders to add both; either alone is honoured, as Prosody
      does);
    * never a message that itself carries a carbon (``<sent/>``/``<received/>``):
      the server's own carbons are delivered directly and never reach here, so
      such a message is a client-made wrapper — not instant messaging (§6),
      and copying it again only helps impersonation attacks on naive clients
      (§11, CVE-2017-5589);
    * never ``groupchat`` (§6.1 MUC rules) or ``headline`` (not IM, RFC 6121
      §5.2.2);
    * never an incoming MUC private message, recognised by its
      ``<x xmlns='…muc#user'/>`` — the room already copies it to every joined
      client (§6.1); an *outgoing* MUC PM is copied (§6.1), and a mediated
      invitation (muc#user ``<invite/>``) is copied either way (§6.1);
    * ``chat`` always; ``normal`` with a ``<body/>``, an IM payload (XEP-0184
      receipts, XEP-0085 chat states, XEP-0333 markers) or an invitation;
    * ``error`` only inbound from a bare JID: the bounce of a message the user
      sent to a contact's bare JID, which other devices saw as a ``<sent/>``
      copy (§6.1 "in response to an eligible message"; Prosody's heuristic,
      since the server does not track what it sent).
    """
    stype = stanza.getAttribute("type") or "normal"
    if stype in ("groupchat", "headline"):
        return False
    body = invite = muc_user = im_payload = False
    for child in _children(stanza):
        uri = child.uri
        if uri == ns.CARBONS and child.name in ("private", "sent", "received"):
            return False
        if uri == ns.HINTS and child.name == "no-copy":
            return False
        if child.name == "body" and uri in (ns.CLIENT, ns.SERVER):
            body = True
        elif uri in _IM_PAYLOADS:
            im_payload = True
        elif uri == CONFERENCE and child.name == "x":
            invite = True
        elif uri == MUC_USER and child.name == "x":
            muc_user = True
            if any(c.name == "invite" for c in _children(child)):
                invite = True
    if inbound and muc_user and not invite:
        return False
    if stype == "chat":
        return True
    if stype == "normal":
        return body or im_payload or invite
    if stype == "error":
        sender = stanza.getAttribute("from") or ""
        return inbound and "/" not in sender
    return False


def _clone(element: domish.Element) -> domish.Element:
    """A deep copy of ``element`` in ``jabber:client``, for a ``<forwarded/>``.

    The original keeps travelling to its recipient, so it cannot be re-parented
    into the wrapper; a message that came over s2s is in ``jabber:server``,
    but what a client reads is ``jabber:client`` (RFC 6120 §4.8.2).
    """
    def client(uri: str | None) -> str | None:
        return ns.CLIENT if uri == ns.SERVER else uri

    copy = domish.Element((client(element.uri), element.name), client(element.defaultUri),
                          dict(element.attributes), dict(element.localPrefixes))
    for child in element.children:
        copy.addChild(_clone(child) if isinstance(child, domish.Element) else child)
    return copy


class CarbonsComponent(Component):
    """XEP-0280 Message Carbons for local users' sessions."""

    name = "carbons"
    features = [ns.CARBONS]

    def __init__(self, server: Any, config: dict[str, Any]):
        super().__init__(server, config)
        #: full JID → the session that enabled carbons. The session is kept,
        #: not just its JID, because a replaced session (same resource bound
        #: again) is never unbound and must not pass its flag to its successor.
        self._enabled: dict[str, Any] = {}

    # -- the flag (§4, §5) ----------------------------------------------------------

    def is_enabled(self, session: Any) -> bool:
        """Did ``session`` enable carbons (for CSI, push or MAM to consult)?"""
        jid = getattr(session, "jid", None)
        return jid is not None and self._enabled.get(jid.full()) is session

    @handles(f"iq-set/self/{ns.CARBONS}:enable")
    def enable(self, event: StanzaEvent) -> domish.Element:
        """§4: switch carbons on for the sending session; enabling twice is
        no error (§10.1)."""
        self._enabled[event.origin.jid.full()] = event.origin
        return event.reply()

    @handles(f"iq-set/self/{ns.CARBONS}:disable")
    def disable(self, event: StanzaEvent) -> domish.Element:
        """§5: switch carbons off; disabling twice is no error (§10.1)."""
        full = event.origin.jid.full()
        if self._enabled.get(full) is event.origin:
            del self._enabled[full]
        return event.reply()

    @handles("resource-bind")
    def bound(self, session: Any) -> bool:
        """A new session starts with carbons off, even under a reused full JID
        (the session it replaced was never unbound)."""
        self._enabled.pop(session.jid.full(), None)
        return False

    @handles("resource-unbind")
    def unbound(self, session: Any) -> bool:
        full = session.jid.full()
        if self._enabled.get(full) is session:
            del self._enabled[full]
        return False

    def _enabled_sessions(self, bare: str) -> list[Any]:
        return [s for s in self.router.resources(bare).values() if self.is_enabled(s)]

    # -- who gets the original (RFC 6121 §8.5) --------------------------------------

    def _addressees(self, event: StanzaEvent) -> list[Any]:
        """The local sessions normal routing hands ``event``'s message to.

        A bound full JID gets it; an unbound one, or the bare JID, means the
        available resources of highest non-negative priority for chat and
        normal (RFC 6121 §8.5.2.1.1, §8.5.3.2.1): the messaging component's
        own rule, :func:`~xmppd.components.messaging.bare_recipients`.
        """
        to = event.to
        resources = self.router.resources(to.userhost())
        if to.resource is not None and to.resource in resources:
            return [resources[to.resource]]
        stype = event.type or "normal"
        if stype not in ("chat", "normal"):
            return []
        return bare_recipients(resources.values(), stype)

    # -- sent copies (§8) ------------------------------------------------------------

    @handles("pre-message", priority=-10)
    def sent(self, event: StanzaEvent) -> bool:
        """§8: copy a message a local client sends to the sender's other
        carbons-enabled resources, whether or not the sender enabled carbons.

        Runs after default-priority ``pre-message`` handlers so a message that
        policy (the blocklist) stops is never copied. A message to the user's
        own account skips the resources that get the original by routing: §7
        forbids copying to those, and each device gets one copy only.
        """
        sender = event.origin
        targets = [s for s in self._enabled_sessions(sender.bare) if s is not sender]
        if not targets or not eligible(event.stanza, inbound=False):
            return False
        to = event.to
        if to is not None and to.user is not None and to.userhost() == sender.bare:
            addressed = self._addressees(event)
            targets = [s for s in targets if s not in addressed]
        self._copy("sent", event.stanza, sender.bare, targets)
        return False

    # -- received copies (§7) --------------------------------------------------------

    @handles("message/full", priority=10)
    def received_full(self, event: StanzaEvent) -> bool:
        """§7: a message to a bound full JID is copied to the recipient's other
        carbons-enabled resources. If the resource is gone the router fires
        ``message/bare`` for it next (RFC 6121 §8.5.3.2.1), which copies
        then — nothing here, or some devices would get two copies."""
        to = event.to
        if to.resource not in self.router.resources(to.userhost()):
            return False
        return self._received(event)

    @handles("message/bare", priority=10)
    def received_bare(self, event: StanzaEvent) -> bool:
        """§7: copy to the carbons-enabled resources that routing to the bare
        JID will not reach (lower or negative priority, not available yet)."""
        return self._received(event)

    def _received(self, event: StanzaEvent) -> bool:
        bare = event.to.userhost()
        origin = event.origin
        if origin is not None and getattr(origin, "bare", None) == bare:
            # From one of the user's own resources: §8 sent copies already
            # reached every other enabled resource.
            return False
        targets = self._enabled_sessions(bare)
        if not targets or not eligible(event.stanza, inbound=True):
            return False
        addressed = self._addressees(event)
        if not addressed and (event.type or "normal") in ("chat", "normal"):
            return False  # nobody gets it now: offline storage keeps it (XEP-0160), one copy
        self._copy("received", event.stanza, bare,
                   [s for s in targets if s not in addressed and s is not origin])
        return False

    @handles("message/undelivered", priority=10)
    def undelivered(self, event: StanzaEvent) -> bool:
        """A carbon copy a closing session never wrote goes nowhere else: the
        message it copies was delivered where it was sent. And a message the
        user's carbons-enabled resources got (directly or as their copy) is
        not routed to them a second time when it is in the user's archive
        (it carries the archive's ``<stanza-id/>``): a phone whose session
        ended with messages unacknowledged (XEP-0198) finds them there, its
        other devices already have them. Not archived, it is routed again
        (a duplicate is better than a loss: a resource may have enabled
        carbons after the message passed)."""
        stanza = event.stanza
        if any(child.uri == ns.CARBONS for child in _children(stanza)):
            return True
        to = event.to
        if to is None or not eligible(stanza, inbound=True):
            return False
        bare = to.userhost()
        archived = any(child.uri == ns.SID and child.name == "stanza-id"
                       and child.getAttribute("by") == bare for child in _children(stanza))
        return archived and any(s.available for s in self._enabled_sessions(bare))

    # -- the wrapper (§7, §8) --------------------------------------------------------

    def _copy(self, direction: str, stanza: domish.Element, bare: str,
              targets: list[Any]) -> None:
        """Wrap ``stanza`` for each target: 'from' the user's bare JID (MUST),
        'to' the target's full JID, the original 'type' kept (SHOULD), and the
        message unchanged inside ``<forwarded/>`` (XEP-0297)."""
        stype = stanza.getAttribute("type")
        for session in targets:
            carbon = domish.Element((ns.CLIENT, "message"))
            carbon["from"] = bare
            carbon["to"] = session.jid.full()
            if stype is not None:
                carbon["type"] = stype
            forwarded = carbon.addElement((ns.CARBONS, direction)).addElement(
                (ns.FORWARD, "forwarded"))
            forwarded.addChild(_clone(stanza))
            self.router.deliver(carbon, session)
