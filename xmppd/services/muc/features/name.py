"""The room's name, description and language (XEP-0045 §10.2 fields)."""

from xmppd import ns
from xmppd.services.muc.hooks import ConfigField, Feature, on


class RoomName(Feature):
    name = "name"
    fields = (
        ConfigField("name", "muc#roomconfig_roomname", "text-single", "Title",
                    lambda c: None, order=99),
        ConfigField("description", "muc#roomconfig_roomdesc", "text-single", "Description",
                    lambda c: "", order=98,
                    desc="A brief description of the room"),
        ConfigField("lang", "muc#roomconfig_lang", "text-single", "Language tag for room (e.g. 'en', 'de', 'fr' etc.)",
                    lambda c: "", order=97,
                    desc="Indicate the primary language spoken in this room", datatype="xs:language"),
    )

    @on("room-created")
    def language(self, ev):
        """The room speaks its creator's language (the join's xml:lang; the
        stream's default, English, otherwise), as Prosody's language.lib."""
        lang = ev.stanza.getAttribute((ns.XML, "lang")) if ev.stanza is not None else None
        ev.room.config["lang"] = lang or "en"

    @on("disco-info", 100)
    def info(self, ev):
        room = ev.room
        ev.info["muc#roominfo_description"] = ("text-single", "Description",
                                               room.config.get("description") or "")
        ev.info["muc#roominfo_occupants"] = ("text-single", "Number of occupants",
                                             str(len(room.occupants)))
        ev.info["muc#roominfo_lang"] = ("text-single", None, room.config.get("lang") or "")
        ev.info["muc#roomconfig_roomname"] = ("text-single", "Title",
                                              room.config.get("name") or None)
