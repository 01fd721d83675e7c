"""The room's name, description and language (XEP-0045 §10.2 fields)."""

from xmppd.services.muc.hooks import ConfigField, Feature, on


class RoomName(Feature):
    name = "name"
    fields = (
        ConfigField("name", "muc#roomconfig_roomname", "text-single", "Title",
                    lambda c: "", order=99),
        ConfigField("description", "muc#roomconfig_roomdesc", "text-single", "Description",
                    lambda c: "", order=98),
        ConfigField("lang", "muc#roomconfig_lang", "text-single", "Language tag for room (e.g. 'en', 'de', 'fr' etc.)",
                    lambda c: "", order=97),
    )

    @on("disco-info")
    def info(self, ev):
        room = ev.room
        ev.info["muc#roominfo_description"] = ("text-single", "Description",
                                               room.config.get("description", ""))
        if room.config.get("lang"):
            ev.info["muc#roominfo_lang"] = ("text-single", "Language tag for room",
                                            room.config["lang"])
