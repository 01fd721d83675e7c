"""RFC 6121 §8.5.2: messages addressed to a local bare JID.

chat and normal go to the available resource(s) of highest non-negative
priority; headline to every such resource; groupchat to a bare JID is an
error; an error is dropped. When nobody is available, a chat or normal
message is offered to ``message/offline`` (XEP-0160 storage hooks it); if
nobody takes it the sender gets service-unavailable.
"""

from xmppd.component import Component, handles


class MessagingComponent(Component):
    name = "messaging"

    @handles("message/bare", priority=-100)
    def to_bare(self, event):
        stype = event.type or "normal"
        if stype == "error":
            return True
        if stype == "groupchat":
            return event.error("service-unavailable")
        sessions = [s for s in self.router.resources(event.to.userhost()).values()
                    if s.available and s.priority >= 0]
        if stype != "headline" and sessions:
            top = max(s.priority for s in sessions)
            sessions = [s for s in sessions if s.priority == top]
        for session in sessions:
            session.send(event.stanza)
        if sessions or stype == "headline":
            return True
        if self.router.fire("message/offline", event):
            return True
        return event.error("service-unavailable")
