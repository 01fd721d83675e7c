"""Moderated rooms (XEP-0045 §8.3-8.5): a newcomer without affiliation
enters as a visitor, and visitors may not speak until a moderator gives
them voice (voice requests: :mod:`.voice_request`)."""

from xmppd.services.muc.hooks import ConfigField, Feature, on


class Moderated(Feature):
    name = "moderated"
    fields = (
        ConfigField("moderated", "muc#roomconfig_moderatedroom", "boolean",
                    "Moderated (require permission to speak)",
                    lambda c: c["default_moderated"], order=77,
                    desc="In moderated rooms occupants must be given permission to speak by a "
                         "room moderator", omit_false=True),
    )

    def disco_features(self, room):
        return ["muc_moderated" if room.config.get("moderated") else "muc_unmoderated"]

    @on("default-role")
    def visitor(self, ev):
        if ev.room.config.get("moderated") and ev.affiliation == "none":
            return "visitor"
        return None
