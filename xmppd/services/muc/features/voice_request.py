"""Voice requests (XEP-0045 §7.13, §8.6): a visitor submits the
``muc#request`` form to the room; every moderator gets it to approve; an
approved one (``muc#request_allow``) makes the visitor a participant."""

from twisted.words.xish import domish

from xmppd import ns
from xmppd.services.muc import forms
from xmppd.services.muc.hooks import Feature, MUCError, on


class VoiceRequest(Feature):
    name = "voice_request"

    def disco_features(self, room):
        return [ns.MUC_REQUEST]

    @on("message-to-room", 10)
    def request(self, ev):
        if ev.stanza.getAttribute("type") not in (None, "normal"):
            return None
        x = forms.find_form(ev.stanza)
        if x is None:
            return None
        fields = forms.read(x)
        if forms.form_type(fields) != ns.MUC_REQUEST:
            return None
        room, occupant = ev.room, ev.occupant
        if occupant is None:
            raise MUCError("not-acceptable", "cancel",
                           "You are not currently connected to this chat")
        if occupant.role == "moderator":
            self._decision(room, ev.real, fields)
        elif occupant.role == "visitor":
            self._ask(room, occupant, ev.real)
        return True

    def _ask(self, room, occupant, real):
        """The request, to every moderator (Prosody's form, type normal)."""
        message = domish.Element((ns.CLIENT, "message"))
        message["type"] = "normal"
        message["from"] = room.jid
        form = forms.form(ns.MUC_REQUEST, title="Voice Request")
        forms.add_field(form, "muc#jid", "jid-single", "User ID", real)
        forms.add_field(form, "muc#roomnick", "text-single", "Room nickname", occupant.nick)
        forms.add_field(form, "muc#role", "list-single", "Requested role", "participant",
                        [(r, "") for r in ("none", "visitor", "participant", "moderator")])
        forms.add_field(form, "muc#request_allow", "boolean", "Grant voice to this person?",
                        False)
        message.addChild(form)
        room.broadcast(message, only=[r for r, o in room.by_real.items()
                                      if o.role == "moderator"])

    def _decision(self, room, real, fields):
        """A moderator's answer: voice for the visitor named by ``muc#jid``."""
        try:
            allow = forms.boolean(fields.get("muc#request_allow", ["0"]), "muc#request_allow")
        except MUCError:
            return
        if not allow:
            return
        target = room.by_real.get((fields.get("muc#jid") or [""])[0])
        if target is None or target.role != "visitor":
            return
        room.set_role(real, target.nick, "participant", "Voice granted")
