"""XEP-0421 anonymous unique occupant identifiers: every presence and
groupchat message from an occupant carries an ``<occupant-id/>`` that is
the same for one account in one room (across nicks and sessions) and tells
nothing about the account. Any ``<occupant-id/>`` a client put in is
removed first, so none can be forged.

The id is an HMAC of the real bare JID under a per-room random salt kept
with the room (a persistent room's ids survive restarts)."""

import base64
import hashlib
import hmac
import os

from twisted.words.xish import domish

from xmppd import ns
from xmppd.services.muc.hooks import Feature, on


class OccupantId(Feature):
    name = "occupant_id"

    def disco_features(self, room):
        return [ns.OCCUPANT_ID]

    def _id(self, room, bare, occupant=None):
        if occupant is not None and "occupant_id" in occupant.data:
            return occupant.data["occupant_id"]
        salt = room.data.get("occupant_id_salt")
        if salt is None:
            salt = room.data["occupant_id_salt"] = base64.b64encode(os.urandom(16)).decode()
        digest = hmac.new(salt.encode(), bare.encode(), hashlib.sha256).digest()
        value = base64.b64encode(digest).decode()
        if occupant is not None:
            occupant.data["occupant_id"] = value
        return value

    def _stamp(self, room, stanza, occupant):
        stanza.children = [c for c in stanza.children
                           if not (isinstance(c, domish.Element) and c.uri == ns.OCCUPANT_ID)]
        tag = stanza.addElement((ns.OCCUPANT_ID, "occupant-id"))
        tag["id"] = self._id(room, occupant.bare, occupant)

    @on("build-presence")
    def presence(self, ev):
        self._stamp(ev.room, ev.presence, ev.occupant)

    @on("groupchat", 50)
    def message(self, ev):
        if ev.occupant is not None:
            self._stamp(ev.room, ev.message, ev.occupant)

    @on("private-message", 50)
    def private(self, ev):
        self._stamp(ev.room, ev.message, ev.occupant)
