"""Iqs to an occupant's room JID (XEP-0045 §7.5 for iqs, XEP-0410).

A ping to one's own occupant JID is answered by the room itself (XEP-0410
self-ping: a client checks it is still joined without bothering its other
sessions); from a session that is not joined it is ``not-acceptable``.
Other iqs from an occupant go to the target occupant's session, from the
sender's room JID (vCard requests to the account), and the answer comes
back the same way; a non-occupant gets ``not-acceptable``."""

from twisted.words.xish import domish

from xmppd import ns
from xmppd.services.muc.hooks import Feature, MUCError, on

FORWARD_TIMEOUT = 30
#: iqs forwarded to occupants and not yet answered, per room and per sender
#: (each holds a place in the server's table of tracked iqs until answered)
ROOM_PENDING = 100
OCCUPANT_PENDING = 10


class OccupantIq(Feature):
    name = "occupant_iq"

    def disco_features(self, room):
        return [ns.MUC_SELF_PING]

    @on("iq-to-occupant")
    def handle(self, ev):
        event, room, sender = ev.event, ev.room, ev.occupant
        payload = event.payload
        if sender is None:
            raise MUCError("not-acceptable", "cancel",
                           "You are not currently connected to this chat")
        if sender.nick == ev.nick and payload.uri == ns.PING and event.type == "get":
            return event.reply()
        target = room.occupants.get(ev.nick)
        if target is None:
            raise MUCError("item-not-found", "cancel", "Recipient not in room")
        pending = room.state.get("forwarded_iqs", 0)
        mine = sender.data.get("forwarded_iqs", 0)
        if pending >= ROOM_PENDING or mine >= OCCUPANT_PENDING:
            raise MUCError("resource-constraint", "wait",
                           "Too many requests to occupants are waiting for answers")
        room.state["forwarded_iqs"] = pending + 1
        sender.data["forwarded_iqs"] = mine + 1
        request = domish.Element((ns.CLIENT, "iq"))
        request["type"] = event.type
        request["from"] = sender.jid
        request["to"] = target.bare if payload.uri == ns.VCARD else target.primary
        request.children = list(event.stanza.children)
        d = self.service.router.iq.request(request, FORWARD_TIMEOUT)

        def relay(answer):
            reply = domish.Element((ns.CLIENT, "iq"))
            reply["type"] = answer.getAttribute("type") or "result"
            if event.stanza.getAttribute("id") is not None:
                reply["id"] = event.stanza["id"]
            reply["from"] = target.jid
            reply["to"] = ev.real
            reply.children = list(answer.children)
            return reply

        def failed(failure):
            return event.error("recipient-unavailable", "wait")

        def settled(result):
            room.state["forwarded_iqs"] = max(0, room.state.get("forwarded_iqs", 1) - 1)
            sender.data["forwarded_iqs"] = max(0, sender.data.get("forwarded_iqs", 1) - 1)
            return result
        return d.addCallbacks(relay, failed).addBoth(settled)
