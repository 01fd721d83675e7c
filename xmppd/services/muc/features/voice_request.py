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
        if x.getAttribute("type") == "submit" and "muc#request_allow" in fields:
            return self._decision(room, occupant, ev.real, fields)
        if (fields.get("muc#role") or [""])[0] != "participant":
            raise MUCError("bad-request", "modify")
        if occupant.role != "visitor":
            return True  # nothing to grant
        message = domish.Element((ns.CLIENT, "message"))
        message["from"] = room.jid
        form = forms.form(ns.MUC_REQUEST, title="Voice request",
                          instructions="To approve this request for voice, select the "
                                       "\"Grant voice to this person?\" checkbox and click OK. "
                                       "To skip this request, click the cancel button.")
        forms.add_field(form, "muc#role", "list-single", "Requested role", "participant")
        forms.add_field(form, "muc#jid", "jid-single", "User ID", occupant.bare)
        forms.add_field(form, "muc#roomnick", "text-single", "Room Nickname", occupant.nick)
        forms.add_field(form, "muc#request_allow", "boolean",
                        "Grant voice to this person?", False)
        message.addChild(form)
        moderators = [real for real, o in room.by_real.items() if o.role == "moderator"]
        room.broadcast(message, only=moderators)
        return True

    def _decision(self, room, occupant, real, fields):
        if occupant.role != "moderator":
            raise MUCError("forbidden", "auth")
        if not forms.boolean(fields.get("muc#request_allow", ["0"]), "muc#request_allow"):
            return True
        nick = (fields.get("muc#roomnick") or [""])[0]
        target = room.occupants.get(nick)
        if target is not None and target.role == "visitor":
            room.set_role(real, nick, "participant")
        return True
