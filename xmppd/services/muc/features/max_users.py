"""How many occupants a room takes (``muc#roomconfig_maxusers``, a
list-single of numbers as XEP-0045 §15.5.3 registers it, at most the
service's ``max_occupants``; any number in range is accepted): a join beyond is ``service-unavailable``
(XEP-0045 §7.2.10). Owners and admins may still enter, as Prosody lets them."""

from xmppd.services.muc.hooks import ConfigField, Feature, MUCError, on


class MaxUsers(Feature):
    name = "max_users"
    fields = (
        ConfigField("max_users", "muc#roomconfig_maxusers", "list-single",
                    "Maximum number of occupants", lambda c: c["max_occupants"],
                    integer=True, minimum=1, maximum="max_occupants", order=68),
    )

    @on("pre-join", -25)
    def full(self, ev):
        room = ev.room
        if ev.occupant is not None:
            return None
        limit = min(room.config.get("max_users") or self.service.config["max_occupants"],
                    self.service.config["max_occupants"])
        if len(room.occupants) >= limit and not (
                ev.affiliation in ("owner", "admin")
                and len(room.occupants) < self.service.config["max_occupants"]):
            raise MUCError("service-unavailable", "wait", "The room has reached its maximum "
                           "number of occupants")
        return None
