"""Room registration and reserved nicks (XEP-0045 §7.10, §7.12), as
Prosody's register.lib: an affiliated account (any account, with
``allow_unaffiliated_register``) registers a nick with the room
(``jabber:iq:register``, the ``muc#register`` form) and is a member from
then on; nobody else may enter or change to that nick (``conflict``). The
reserved nick is found with disco#info node ``x-roomuser-item``."""

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

    @on("pre-join", 0)
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

    def _allowed(self, room, bare):
        """Prosody's rule: outcasts never; the unaffiliated only with
        ``allow_unaffiliated_register``."""
        affiliation = room.affiliation(bare)
        if affiliation == "outcast":
            raise MUCError("forbidden", "auth")
        if affiliation == "none" and not self.service.config["allow_unaffiliated_register"]:
            raise MUCError("registration-required", "auth")
        return affiliation

    @on(f"iq/get/{ns.REGISTER}:query")
    def form(self, ev):
        room, bare = ev.room, jidlib.parse(ev.real).userhost()
        self._allowed(room, bare)
        query = domish.Element((ns.REGISTER, "query"))
        nick = room.affiliation_data.get(bare, {}).get("nick")
        if nick is not None:
            query.addElement("registered")
            query.addElement("username", content=nick)
            return ev.event.reply(query)
        x = forms.form(ns.MUC_REGISTER)
        forms.add_field(x, "muc#register_roomnick", "text-single", "Nickname", required=True)
        query.addChild(x)
        return ev.event.reply(query)

    @on(f"iq/set/{ns.REGISTER}:query")
    def submit(self, ev):
        room, bare = ev.room, jidlib.parse(ev.real).userhost()
        affiliation = self._allowed(room, bare)
        query = ev.event.payload
        if next(query.elements(ns.REGISTER, "remove"), None) is not None:
            # the membership goes; a higher affiliation stays (without the nick)
            keep = affiliation if affiliation not in ("member", "none") else "none"
            room.affiliation_data.get(bare, {}).pop("nick", None)
            if keep == "none":
                room.set_affiliation(None, bare, "none")
            else:
                self.service.save(room)
            return self.service.after_writes(room, ev.event.reply())
        x = forms.find_form(query)
        if x is None:
            raise MUCError("bad-request", "modify", "Missing dataform")
        fields = forms.read(x)
        if forms.form_type(fields) != ns.MUC_REGISTER:
            raise MUCError("bad-request", "modify", "Error in form")
        nick = (fields.get("muc#register_roomnick") or [""])[0]
        parsed = jidlib.parse_or_none(f"{room.jid}/{nick}") if nick else None
        if parsed is None or len(nick) > self.service.config["max_nick_length"]:
            raise MUCError("bad-request", "modify", "Invalid Nickname")
        nick = parsed.resource
        holder = self.reserved_by(room, nick)
        present = room.occupants.get(nick)
        if holder is not None and holder != bare or \
                present is not None and present.bare != bare:
            raise MUCError("conflict", "cancel")
        if room.affiliation_data.get(bare, {}).get("nick") != nick:
            room.set_affiliation(None, bare, affiliation if affiliation != "none" else "member",
                                 nick=nick)
        return self.service.after_writes(room, ev.event.reply())

    @on("disco-node/x-roomuser-item")
    def nick(self, ev):
        bare = ev.requester
        nick = ev.room.affiliation_data.get(bare, {}).get("nick")
        if nick:
            ev.identities.append(("conference", "text", nick))
        return True
