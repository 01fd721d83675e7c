"""Mediated invitations (XEP-0045 §7.8.2) and their declines (§7.8.3).

An occupant asks the room to invite someone; the room sends the invitee
the invitation from itself, naming the inviter, with the room password if
it has one, a body for clients that show nothing else, and the XEP-0249
``<x xmlns='jabber:x:conference'/>``, as Prosody does. In a members-only
room an invitation from someone who may grant membership (admins, owners,
members when ``muc#roomconfig_allowinvites`` is on) makes the invitee a
member; others get ``forbidden``."""

from twisted.words.xish import domish

from xmppd import jid as jidlib
from xmppd import ns
from xmppd.services.muc.hooks import ConfigField, Feature, MUCError, on


class Invites(Feature):
    name = "invites"
    fields = (
        ConfigField("allow_invites", "muc#roomconfig_allowinvites", "boolean",
                    "Allow members to invite new members", lambda c: False),
    )

    @on("message-to-room", 20)
    def handle(self, ev):
        x = next(ev.stanza.elements(ns.MUC_USER, "x"), None)
        if x is None:
            return None
        invites = list(x.elements(ns.MUC_USER, "invite"))
        declines = list(x.elements(ns.MUC_USER, "decline"))
        if not invites and not declines:
            return None
        for invite in invites:
            self._invite(ev.room, ev.occupant, ev.real, invite)
        for decline in declines:
            self._decline(ev.room, ev.real, decline)
        return True

    def _invite(self, room, occupant, real, invite):
        if occupant is None:
            raise MUCError("not-acceptable", "cancel",
                           "You are not currently connected to this chat")
        to = jidlib.parse_or_none(invite.getAttribute("to"))
        if to is None:
            raise MUCError("jid-malformed", "modify")
        inviter = jidlib.parse(real).userhost()
        affiliation = room.affiliation(inviter)
        if room.config.get("members_only"):
            if affiliation in ("owner", "admin") or (
                    affiliation == "member" and room.config.get("allow_invites")):
                if room.affiliation(to.userhost()) == "none":
                    room.set_affiliation(None, to.userhost(), "member")
            else:
                raise MUCError("forbidden", "auth")
        reason = next((str(c) for c in invite.elements(ns.MUC_USER, "reason")), None)
        message = domish.Element((ns.CLIENT, "message"))
        message["from"] = room.jid
        message["to"] = to.full()
        x = message.addElement((ns.MUC_USER, "x"))
        out = x.addElement("invite")
        out["from"] = inviter
        if reason:
            out.addElement("reason", content=reason)
        cont = next(invite.elements(ns.MUC_USER, "continue"), None)
        if cont is not None:
            out.addChild(cont)
        if room.config.get("password"):
            x.addElement("password", content=room.config["password"])
        body = f"{inviter} invited you to the room {room.jid}"
        if reason:
            body += f" ({reason})"
        message.addElement("body", content=body)
        conference = message.addElement((ns.CONFERENCE, "x"))
        conference["jid"] = room.jid
        if reason:
            conference["reason"] = reason
        self.service.router.route(message)

    def _decline(self, room, real, decline):
        to = jidlib.parse_or_none(decline.getAttribute("to"))
        if to is None:
            raise MUCError("jid-malformed", "modify")
        message = domish.Element((ns.CLIENT, "message"))
        message["from"] = room.jid
        message["to"] = to.full()
        x = message.addElement((ns.MUC_USER, "x"))
        out = x.addElement("decline")
        out["from"] = jidlib.parse(real).userhost()
        for reason in decline.elements(ns.MUC_USER, "reason"):
            out.addElement("reason", content=str(reason))
        self.service.router.route(message)
