"""Mediated invitations (XEP-0045 §7.8.2) and their declines (§7.8.3), as
Prosody sends them.

An occupant (a visitor may not) asks the room to invite someone; the room
sends the invitee a copy of the request from itself, naming the inviter's
real JID, with the room password if it has one, a body for clients that
show nothing else, and the XEP-0249 ``<x xmlns='jabber:x:conference'/>``.
In a members-only room only admins and owners may invite — and members
when the room allows (Prosody's ``roomconfig_allowmemberinvites``) — and
the invitee becomes a member.

Both are routed as any message is (a decline to an occupant's room JID to
each of its sessions, as Prosody's route_to_occupant): the recipient's own
server archives them (XEP-0313, an invitation is worth keeping) and gives
them its stanza-id; what the room copied from the sender carries no
stanza-id claiming that archive."""

from twisted.words.xish import domish

from xmppd import jid as jidlib
from xmppd import ns
from xmppd.services.muc.hooks import ConfigField, Feature, MUCError, on
from xmppd.services.muc.occupant import AFFILIATION_RANK, ROLE_RANK

ALLOW_MEMBER_INVITES = "{http://prosody.im/protocol/muc}roomconfig_allowmemberinvites"


def _text(parent, name):
    for child in parent.elements():
        if child.name == name:
            return str(child)
    return None


def _copy_without_muc(room, stanza, to):
    """The room's copy of an invitation or decline: the sender's other
    children kept (as Prosody's filter_muc_x), its MUC elements and what
    only this server may say (:meth:`Room.forged
    <xmppd.services.muc.room.Room.forged>`: a stanza-id the recipient would
    take for its archive's) left out."""
    message = domish.Element((ns.CLIENT, "message"))
    for key, value in stanza.attributes.items():
        if key not in ("from", "to"):
            message[key] = value
    message["from"], message["to"] = room.jid, to
    message.children = [c for c in stanza.children
                        if not (isinstance(c, domish.Element) and c.uri in (ns.MUC, ns.MUC_USER))
                        and not room.forged(c)]
    return message


class Invites(Feature):
    name = "invites"
    fields = (
        ConfigField("allow_member_invites", ALLOW_MEMBER_INVITES, "boolean",
                    "Allow members to invite new members", lambda c: False, order=86, omit_false=True),
    )

    @on("disco-info")
    def info(self, ev):
        room = ev.room
        members_only = bool(room.config.get("members_only"))
        allow = bool(room.config.get("allow_member_invites"))
        ev.info[ALLOW_MEMBER_INVITES] = ("boolean", "Allow members to invite new members", allow)
        ev.info["muc#roomconfig_allowinvites"] = ("boolean", "Allow users to invite other users",
                                                  not members_only or allow)

    @on("message-to-room", 20)
    def handle(self, ev):
        if ev.stanza.getAttribute("type") not in (None, "normal"):
            return None
        x = next(ev.stanza.elements(ns.MUC_USER, "x"), None)
        if x is None:
            return None
        payload = next(x.elements(), None)
        if payload is not None and payload.name == "invite" and payload.getAttribute("to"):
            self._invite(ev.room, ev.occupant, ev.real, ev.stanza, payload)
        elif payload is not None and payload.name == "decline" and payload.getAttribute("to"):
            self._decline(ev.room, ev.real, ev.stanza, payload)
        else:
            raise MUCError("bad-request", "cancel")
        return True

    def _invite(self, room, occupant, real, stanza, invite):
        to = jidlib.parse_or_none(invite.getAttribute("to"))
        if to is None:
            raise MUCError("jid-malformed", "cancel")
        inviter = jidlib.parse(real).userhost()
        affiliation = room.affiliation(inviter)
        role = occupant.role if occupant is not None else room.default_role(affiliation)
        if ROLE_RANK[role] <= ROLE_RANK["visitor"]:
            raise MUCError("forbidden", "auth")
        if room.config.get("members_only"):
            needed = "member" if room.config.get("allow_member_invites") else "admin"
            if AFFILIATION_RANK[affiliation] < AFFILIATION_RANK[needed]:
                raise MUCError("forbidden", "auth")
        reason = _text(invite, "reason")
        message = _copy_without_muc(room, stanza, to.full())
        x = message.addElement((ns.MUC_USER, "x"))
        out = x.addElement("invite")
        out["from"] = real
        if room.config.get("whois") != "anyone" and occupant is not None and \
                room.default_role(room.affiliation(to.userhost())) != "moderator":
            # a semi-anonymous room names the inviter by its room JID to
            # someone who will not see real JIDs (as Prosody's whois.lib)
            out["from"] = occupant.jid
        out.addElement("reason", content=reason or "")
        if room.config.get("password"):
            x.addElement("password", content=room.config["password"])
        conference = message.addElement((ns.CONFERENCE, "x"), content=reason or "")
        conference["jid"] = room.jid
        if _text(message, "body") is None:
            message.addElement("body", content=f"{real} invited you to the room {room.jid}"
                               + (f" ({reason})" if reason else ""))
        if room.config.get("members_only") and room.affiliation(to.userhost()) == "none":
            room.set_affiliation(None, to.userhost(), "member", f"Invited by {real}")
        self.service.router.route(message)

    def _decline(self, room, real, stanza, decline):
        to = jidlib.parse_or_none(decline.getAttribute("to"))
        if to is None:
            raise MUCError("jid-malformed", "cancel")
        reason = _text(decline, "reason")
        message = _copy_without_muc(room, stanza, to.full())
        x = message.addElement((ns.MUC_USER, "x"))
        out = x.addElement("decline")
        out["from"] = real
        out.addElement("reason", content=reason or "")
        if _text(message, "body") is None:
            message.addElement("body", content=f"{real} declined your invite to the room "
                               f"{room.jid}" + (f" ({reason})" if reason else ""))
        target = room.occupants.get(to.resource) if to.userhost() == room.jid else None
        if target is not None:
            room.route_to_occupant(target, message)
        else:
            self.service.router.route(message)
