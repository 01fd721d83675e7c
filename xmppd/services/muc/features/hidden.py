"""Public and hidden rooms: only public ones are listed in the service's
disco#items (XEP-0045 §6.3); a locked room is never listed."""

from xmppd.services.muc.hooks import ConfigField, Feature, on


class Hidden(Feature):
    name = "hidden"
    fields = (
        ConfigField("public", "muc#roomconfig_publicroom", "boolean",
                    "Include room information in public lists",
                    lambda c: c["default_public"], order=91,
                    desc="Enable this to allow people to find the room"),
    )

    def disco_features(self, room):
        return ["muc_public" if room.config.get("public") else "muc_hidden"]

    @on("room-listed")
    def listed(self, ev):
        return None if ev.room.config.get("public") else False
