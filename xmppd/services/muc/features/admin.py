"""The moderators' and admins' protocol (XEP-0045 §8-9, ``muc#admin``):
kick, voice and moderator grants by nick and role; bans, memberships and
admin/owner grants by JID and affiliation; and the lists of both.

The permission rules are the core's (:meth:`Room.set_role
<xmppd.services.muc.room.Room.set_role>`, :meth:`Room.set_affiliation
<xmppd.services.muc.room.Room.set_affiliation>`). A request with several
items is checked whole before any is applied; the answer comes once the
changes are durable."""

from twisted.words.xish import domish

from xmppd import jid as jidlib
from xmppd import ns
from xmppd.services.muc.hooks import Feature, MUCError, on
from xmppd.services.muc.occupant import AFFILIATIONS, ROLES


def _reason(item):
    for child in item.elements():
        if child.name == "reason":
            return str(child)
    return None


class AdminProtocol(Feature):
    name = "admin"

    @on(f"iq/get/{ns.MUC_ADMIN}:query")
    def lists(self, ev):
        room, event = ev.room, ev.event
        bare = jidlib.parse(ev.real).userhost()
        items = list(event.payload.elements(ns.MUC_ADMIN, "item"))
        if len(items) != 1:
            raise MUCError("bad-request", "modify")
        item = items[0]
        query = domish.Element((ns.MUC_ADMIN, "query"))
        affiliation, role = item.getAttribute("affiliation"), item.getAttribute("role")
        if affiliation is not None:
            if affiliation not in AFFILIATIONS or affiliation == "none":
                raise MUCError("bad-request", "modify")
            if room.affiliation(bare) not in ("owner", "admin"):
                raise MUCError("forbidden", "auth")
            for jid in sorted(j for j, a in room.affiliations.items() if a == affiliation):
                out = query.addElement("item")
                out["affiliation"], out["jid"] = affiliation, jid
                data = room.affiliation_data.get(jid, {})
                if data.get("nick"):
                    out["nick"] = data["nick"]
                if data.get("reason"):
                    out.addElement("reason", content=data["reason"])
            return event.reply(query)
        if role is not None:
            if role not in ROLES or role == "none":
                raise MUCError("bad-request", "modify")
            if not room.is_moderator(ev.occupant):
                raise MUCError("forbidden", "auth")
            for occupant in room.occupants.values():
                if occupant.role == role:
                    out = query.addElement("item")
                    out["role"], out["nick"] = role, occupant.nick
                    out["affiliation"] = room.affiliation(occupant.bare)
                    out["jid"] = occupant.primary
            return event.reply(query)
        raise MUCError("bad-request", "modify")

    @on(f"iq/set/{ns.MUC_ADMIN}:query")
    def change(self, ev):
        room, event = ev.room, ev.event
        actor_bare = jidlib.parse(ev.real).userhost()
        items = list(event.payload.elements(ns.MUC_ADMIN, "item"))
        if not items:
            raise MUCError("bad-request", "modify")
        changes = []
        for item in items:
            affiliation, role = item.getAttribute("affiliation"), item.getAttribute("role")
            reason = _reason(item)
            if affiliation is not None:
                if affiliation not in AFFILIATIONS:
                    raise MUCError("bad-request", "modify")
                target = item.getAttribute("jid")
                if target is not None:
                    parsed = jidlib.parse_or_none(target)
                    if parsed is None:
                        raise MUCError("jid-malformed", "modify")
                    target = parsed.userhost()
                else:
                    occupant = room.occupants.get(item.getAttribute("nick") or "")
                    if occupant is None:
                        raise MUCError("bad-request", "modify")
                    target = occupant.bare
                self._check_affiliation(room, actor_bare, target, affiliation)
                changes.append(("affiliation", target, affiliation, reason))
            elif role is not None:
                if role not in ROLES:
                    raise MUCError("bad-request", "modify")
                nick = item.getAttribute("nick")
                if nick is None:
                    raise MUCError("bad-request", "modify")
                if ev.occupant is None:
                    raise MUCError("forbidden", "auth")
                changes.append(("role", nick, role, reason))
            else:
                raise MUCError("bad-request", "modify")
        for kind, target, value, reason in changes:
            if kind == "affiliation":
                room.set_affiliation(actor_bare, target, value, reason)
            else:
                room.set_role(ev.occupant, target, value, reason)
        return self.service.after_writes(room, event.reply())

    def _check_affiliation(self, room, actor, target, affiliation):
        """The core checks again as it applies; this is so that nothing of a
        request is applied when one of its items is refused."""
        mine = room.affiliation(actor)
        old = room.affiliations.get(target, "none")
        if mine not in ("owner", "admin"):
            raise MUCError("forbidden", "auth")
        if mine == "admin" and ("owner" in (old, affiliation) or "admin" in (old, affiliation)):
            raise MUCError("not-allowed", "cancel")
        if old == "owner" and affiliation != "owner" and room.owners() == [target]:
            raise MUCError("conflict", "cancel", "Cannot remove the last owner")
