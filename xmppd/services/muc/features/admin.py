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
from xmppd.services.muc.occupant import AFFILIATION_RANK, ROLE_RANK


def _reason(item):
    for child in item.elements():
        if child.name == "reason":
            return str(child)
    return None


class AdminProtocol(Feature):
    name = "admin"

    @on(f"iq/get/{ns.MUC_ADMIN}:query")
    def lists(self, ev):
        """The list of one affiliation (admins and owners, each for its own
        rank and below; members of a non-anonymous members-only room may see
        it too, as in Prosody) or of one role (moderators)."""
        room, event = ev.room, ev.event
        bare = jidlib.parse(ev.real).userhost()
        item = next(event.payload.elements(ns.MUC_ADMIN, "item"), None)
        if item is None:
            raise MUCError("bad-request", "cancel")
        query = domish.Element((ns.MUC_ADMIN, "query"))
        affiliation, role = item.getAttribute("affiliation"), item.getAttribute("role")
        mine = room.affiliation(bare)
        if affiliation is not None and role is None and affiliation in AFFILIATION_RANK:
            rank = AFFILIATION_RANK[mine]
            if not (rank >= AFFILIATION_RANK["admin"] and rank >= AFFILIATION_RANK[affiliation]
                    or room.config.get("members_only") and room.config.get("whois") == "anyone"
                    and rank >= AFFILIATION_RANK["member"]):
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
        if role is not None and affiliation is None and role in ROLE_RANK:
            own_role = ev.occupant.role if ev.occupant is not None else room.default_role(mine)
            if ROLE_RANK[own_role] < ROLE_RANK["moderator"]:
                raise MUCError("forbidden", "auth")
            for occupant in room.occupants.values():
                if occupant.role == role:
                    for real in occupant.sessions:
                        out = query.addElement("item")
                        out["affiliation"] = room.affiliation(occupant.bare)
                        out["role"], out["jid"], out["nick"] = role, real, occupant.nick
            return event.reply(query)
        raise MUCError("bad-request", "cancel")

    @on(f"iq/set/{ns.MUC_ADMIN}:query")
    def change(self, ev):
        """Each item as Prosody reads it (a nick with an affiliation names an
        occupant, or reserves that nick with the JID; a JID with a role names
        the occupant); all are checked before any is applied."""
        room, event = ev.room, ev.event
        items = list(event.payload.elements(ns.MUC_ADMIN, "item"))
        if not items:
            raise MUCError("bad-request", "cancel")
        changes = [self._read(room, item) for item in items]
        for kind, target, value, reason, nick in changes:
            if kind == "affiliation":
                room.may_set_affiliation(ev.real, target, value)
            else:
                occupant = room.occupants.get(target)
                if occupant is None:
                    raise MUCError("item-not-found", "modify")
                room.may_set_role(ev.real, occupant, value)
        for kind, target, value, reason, nick in changes:
            # each was allowed on the room as it was; an earlier item may have
            # made a later one moot (a ban, then a role for the same nick)
            try:
                if kind == "affiliation":
                    if nick is not None:
                        holder = room.occupants.get(nick)
                        if holder is not None and holder.bare != target:
                            room.set_role(None, nick, "none", "This nickname is reserved")
                    room.set_affiliation(ev.real, target, value, reason, nick=nick)
                elif target in room.occupants:
                    room.set_role(ev.real, target, value, reason)
            except MUCError as error:
                if error.condition != "item-not-found":
                    raise
        return self.service.after_writes(room, event.reply())

    def _read(self, room, item):
        jid, nick = item.getAttribute("jid"), item.getAttribute("nick")
        affiliation, role = item.getAttribute("affiliation"), item.getAttribute("role")
        reason = _reason(item)
        if jid is not None:
            parsed = jidlib.parse_or_none(jid)
            if parsed is None:
                raise MUCError("jid-malformed", "modify")
            if parsed.resource is not None:
                raise MUCError("jid-malformed", "modify", "Bare JID expected, got full JID")
            jid = parsed.full()
        if nick is not None:
            parsed = jidlib.parse_or_none(f"{room.jid}/{nick}")
            if parsed is None:
                raise MUCError("jid-malformed", "modify", "invalid nickname")
            nick = parsed.resource
        if jid is None and nick is not None:
            occupant = room.occupants.get(nick)
            if occupant is not None:
                jid = occupant.bare
        elif role is not None and nick is None and jid is not None:
            occupant = next((o for o in room.occupants.values() if o.bare == jid), None)
            if occupant is not None:
                nick = occupant.nick
        if affiliation is not None and jid is not None and role is None:
            if affiliation not in AFFILIATION_RANK:
                raise MUCError("not-acceptable", "modify")
            return ("affiliation", jid, affiliation, reason,
                    nick if item.getAttribute("jid") is not None else None)
        if role is not None and nick is not None and affiliation is None:
            if role not in ROLE_RANK:
                raise MUCError("not-acceptable", "modify")
            return ("role", nick, role, reason, None)
        raise MUCError("bad-request", "cancel")
