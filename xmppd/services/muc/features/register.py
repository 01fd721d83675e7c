"""Room registration and reserved nicks (XEP-0045 §7.10, §7.12): an
account registers a nick with the room (``jabber:iq:register``, the
``muc#register`` form) and becomes a member; nobody else may then enter
or change to that nick (``conflict``). The reserved nick is found with
disco#info node ``x-roomuser-item``."""

from twisted.words.xish import domish

from xmppd import jid as jidlib
from xmppd import ns
from xmppd.services.muc import forms
from xmppd.services.muc.hooks import Feature, MUCError, on


class Registration(Feature):
    name = "register"

    def disco_features(self, room):
        return [ns.REGISTER]

    def reserved_by(self, room, nick):
        for bare, data in room.affiliation_data.items():
            if data.get("nick") == nick:
                return bare
        return None

    @on("pre-join", 30)
    def reserved(self, ev):
        owner = self.reserved_by(ev.room, ev.nick)
        if owner is not None and owner != ev.bare:
            raise MUCError("conflict", "cancel", "That nickname is reserved")
        return None

    @on("pre-nick-change", 30)
    def reserved_change(self, ev):
        owner = self.reserved_by(ev.room, ev.nick)
        if owner is not None and owner != ev.occupant.bare:
            raise MUCError("conflict", "cancel", "That nickname is reserved")
        return None

    @on(f"iq/get/{ns.REGISTER}:query")
    def form(self, ev):
        room, bare = ev.room, jidlib.parse(ev.real).userhost()
        affiliation = room.affiliation(bare)
        if affiliation == "outcast":
            raise MUCError("forbidden", "auth")
        query = domish.Element((ns.REGISTER, "query"))
        nick = room.affiliation_data.get(bare, {}).get("nick")
        if nick is not None:
            query.addElement("registered")
            query.addElement("username", content=nick)
            return ev.event.reply(query)
        if room.config.get("members_only") and affiliation == "none":
            raise MUCError("registration-required", "auth")
        query.addElement("instructions", content="Please fill in the form to register a "
                         "nickname in this room")
        x = forms.form(ns.MUC_REGISTER, title="Room registration")
        forms.add_field(x, "muc#register_roomnick", "text-single", "Desired nickname",
                        required=True)
        query.addChild(x)
        return ev.event.reply(query)

    @on(f"iq/set/{ns.REGISTER}:query")
    def submit(self, ev):
        room, bare = ev.room, jidlib.parse(ev.real).userhost()
        affiliation = room.affiliation(bare)
        if affiliation == "outcast":
            raise MUCError("forbidden", "auth")
        query = ev.event.payload
        if next(query.elements(ns.REGISTER, "remove"), None) is not None:
            if room.affiliations.get(bare) == "member":
                room.set_affiliation(None, bare, "none")
            else:
                room.affiliation_data.get(bare, {}).pop("nick", None)
                self.service.save(room)
            return self.service.after_writes(room, ev.event.reply())
        x = forms.find_form(query)
        if x is None or x.getAttribute("type") != "submit":
            raise MUCError("bad-request", "modify")
        fields = forms.read(x)
        if forms.form_type(fields) not in (ns.MUC_REGISTER, None):
            raise MUCError("bad-request", "modify")
        nick = (fields.get("muc#register_roomnick") or [""])[0].strip()
        if not nick or jidlib.parse_or_none(f"{room.jid}/{nick}") is None or \
                len(nick) > self.service.config["max_nick_length"]:
            raise MUCError("not-acceptable", "modify", "Invalid nickname")
        if room.config.get("members_only") and affiliation == "none":
            raise MUCError("registration-required", "auth")
        nick = jidlib.parse(f"{room.jid}/{nick}").resource
        holder = self.reserved_by(room, nick)
        if holder is not None and holder != bare:
            raise MUCError("conflict", "cancel", "That nickname is already reserved")
        occupant = room.occupants.get(nick)
        if occupant is not None and occupant.bare != bare:
            raise MUCError("conflict", "cancel", "That nickname is in use")
        if room.affiliations.get(bare) is None:
            room.set_affiliation(None, bare, "member", nick=nick)
        else:
            room.affiliation_data.setdefault(bare, {})["nick"] = nick
            self.service.save(room)
        return self.service.after_writes(room, ev.event.reply())

    @on("disco-node/x-roomuser-item")
    def nick(self, ev):
        bare = ev.requester
        nick = ev.room.affiliation_data.get(bare, {}).get("nick")
        if nick:
            ev.identities.append(("conference", "text", nick))
        return True
