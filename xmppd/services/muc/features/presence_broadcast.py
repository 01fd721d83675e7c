"""Which occupants' presence the room shows (Prosody's presence_broadcast,
``muc#roomconfig_presencebroadcast``): occupants whose role is not listed
are in the room without the others seeing them come, change or go (their
own sessions still see themselves). By default every role is shown."""

from xmppd.services.muc.hooks import ConfigField, Feature, MUCError, on

ROLES = ("none", "visitor", "participant", "moderator")


class PresenceBroadcast(Feature):
    name = "presence_broadcast"
    fields = (
        ConfigField("presence_broadcast", "muc#roomconfig_presencebroadcast", "list-multi",
                    "Only show participants with roles:",
                    lambda c: ["visitor", "participant", "moderator"],
                    options=tuple((r, r) for r in ROLES), order=63),
    )

    @on("presence-hidden")
    def hidden(self, ev):
        shown = ev.room.config.get("presence_broadcast")
        if shown is None:
            return None
        return True if (ev.role or "none") not in shown else None

    @on("config-submitted")
    def valid(self, ev):
        roles = ev.values.get("presence_broadcast")
        if roles is not None and any(r not in ROLES for r in roles):
            raise MUCError("bad-request", "modify",
                           "Invalid value for muc#roomconfig_presencebroadcast")
        return None
