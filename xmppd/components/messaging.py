"""RFC 6121 §8.5.2: messages addressed to a local bare JID.

chat and normal go to the available resource(s) of highest non-negative
priority; headline to every such resource; groupchat to a bare JID is an
error; an error is dropped. When nobody is available, a chat or normal
message is offered to ``message/offline`` (XEP-0160 storage hooks it); if
nobody takes it the sender gets service-unavailable.

A message a session accepted but closed before writing (the client sent its
closing tag, stopped reading, or its connection dropped) is undelivered, not
lost: it is routed again, and now finds the resource gone (RFC 6121
§8.5.3.2.1: sent to the full JID, it is treated as sent to the bare JID), so
the user's available resources get it, or offline storage, or the sender an
error. A resource that already had it (an equal priority, a carbon copy) may
see it twice: who had it is not known any more when the session closes (a
resource may have come or gone since), and a duplicate with the same id is
better than a loss.
"""

from typing import Any, Iterable

from xmppd.component import Component, handles
from xmppd.router.fanout import Fanout


def bare_recipients(sessions: Iterable[Any], stype: str) -> list[Any]:
    """Which of a user's sessions get a message of type ``stype`` sent to the
    bare JID (RFC 6121 §8.5.2.1): the available ones of non-negative priority;
    all of them for a headline, else only those of the highest priority.
    Carbons asks the same question to know who already has the message."""
    eligible = [s for s in sessions if s.available and s.priority >= 0]
    if stype != "headline" and eligible:
        top = max(s.priority for s in eligible)
        return [s for s in eligible if s.priority == top]
    return eligible


class MessagingComponent(Component):
    """Delivery of messages addressed to a local user's bare JID."""

    name = "messaging"

    @handles("message/bare", priority=-100)
    def to_bare(self, event):
        stype = event.type or "normal"
        if stype == "error":
            return True
        if stype == "groupchat":
            return event.error("service-unavailable")
        sessions = bare_recipients(self.router.resources(event.to.userhost()).values(), stype)
        if stype == "headline":
            # A headline is never re-routed (see ``undelivered``), so it may go
            # as text: a broadcast's copy (a pubsub notification) is then
            # serialised once for all its recipients.
            Fanout.of(event.stanza).send_all(sessions, to=event.stanza.getAttribute("to"))
        else:
            for session in sessions:
                session.send(event.stanza)
        if sessions or stype == "headline":
            return True
        if self.router.fire("message/offline", event):
            return True
        return event.error("service-unavailable")

    @handles("message/undelivered", priority=-100)
    def undelivered(self, event):
        stype = event.type or "normal"
        if stype not in ("normal", "chat") or event.to is None:
            return True  # headline, groupchat: as for an unavailable resource, dropped
        self.router.route(event.stanza)
        return True
