"""RFC 6121 §4: a session's own presence (available, priority).

What the rest of the server needs to know about a resource — is it available,
with which priority — comes from the presence the client broadcasts (a
presence without 'to'). Message delivery to a bare JID depends on it.
"""

from xmppd import ns
from xmppd.component import Component, handles


class PresenceComponent(Component):
    name = "presence"

    @handles("presence/self")
    def own_presence(self, event):
        session = event.origin
        if session is None or event.stanza.getAttribute("to") is not None:
            return False
        stype = event.type
        if stype is None:
            session.available = True
            session.presence = event.stanza
            try:
                priority = int(str(next(event.stanza.elements(ns.CLIENT, "priority"), "0")).strip() or 0)
            except ValueError:
                priority = 0
            session.priority = max(-128, min(127, priority))
        elif stype == "unavailable":
            session.available = False
            session.presence = None
        return True

    @handles("resource-unbind")
    def gone(self, session):
        session.available = False
        return False
