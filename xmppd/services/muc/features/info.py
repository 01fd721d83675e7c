"""Room discovery (XEP-0045 §6.4-6.5): disco#info with the room's
identity, the features every feature module adds (``muc_public``,
``muc_passwordprotected`` …) and the ``muc#roominfo`` form; disco#items
lists the occupants to those who may know them (XEP-0045 §6.5). A locked room is unknown
to anyone but its owners (``item-not-found``)."""

from twisted.words.xish import domish

from xmppd import jid as jidlib
from xmppd import ns
from xmppd.router.events import disco_info
from xmppd.services.muc import forms
from xmppd.services.muc.hooks import Feature, MUCError, on


class RoomInfo(Feature):
    name = "info"

    def _visible(self, room, requester):
        if room.affiliation(requester) != "owner" and \
                self.service.hooks.fire("room-locked", room=room):
            raise MUCError("item-not-found", "cancel", by=self.service.domain)

    @on(f"iq/get/{ns.DISCO_INFO}:query")
    def info(self, ev):
        room, event = ev.room, ev.event
        requester = jidlib.parse(ev.real).userhost()
        self._visible(room, requester)
        node = event.payload.getAttribute("node")
        if node:
            identities = []
            if not self.service.hooks.fire(f"disco-node/{node}", room=room,
                                           requester=requester, identities=identities):
                raise MUCError("item-not-found", "cancel")
            return event.reply(disco_info(identities, [ns.DISCO_INFO], node))
        features = {ns.MUC, ns.MUC_STABLE_ID, ns.DISCO_INFO, ns.DISCO_ITEMS}
        for feature in self.service.features_on:
            features.update(feature.disco_features(room))
        info: dict = {}
        self.service.hooks.fire("disco-info", room=room, features=features, info=info,
                                requester=requester)
        name = room.config.get("name") or room.name
        form = forms.form(ns.MUC_ROOMINFO, type="result")
        for var, (ftype, label, value) in info.items():
            forms.add_field(form, var, ftype, label, value)
        query = disco_info([("conference", "text", name)], sorted(features), extra=[form])
        return event.reply(query)

    @on(f"iq/get/{ns.DISCO_ITEMS}:query")
    def items(self, ev):
        room, event = ev.room, ev.event
        requester = jidlib.parse(ev.real).userhost()
        self._visible(room, requester)
        query = domish.Element((ns.DISCO_ITEMS, "query"))
        if ev.occupant is not None or (room.config.get("public")
                                       and room.config.get("whois") == "anyone"):
            # XEP-0045 §6.5: the occupants' room JIDs, to those who may know
            # them (its occupants; anyone, for a public non-anonymous room).
            # Prosody 0.12 always answers an empty list.
            for occupant in room.occupants.values():
                item = query.addElement("item")
                item["jid"] = occupant.jid
        return event.reply(query)
