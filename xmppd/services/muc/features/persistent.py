"""Persistent rooms: kept when the last occupant leaves, and in storage
(configuration, affiliations, reserved nicks, history) across restarts;
temporary rooms vanish with their last occupant (XEP-0045 §10.1)."""

from xmppd.services.muc.hooks import ConfigField, Feature, on


class Persistent(Feature):
    name = "persistent"
    fields = (
        ConfigField("persistent", "muc#roomconfig_persistentroom", "boolean",
                    "Persistent (room should remain even when it is empty)",
                    lambda c: c["default_persistent"], order=95,
                    desc="Rooms are automatically deleted when they are empty, unless this "
                         "option is enabled", omit_false=True),
    )

    def disco_features(self, room):
        return ["muc_persistent" if room.config.get("persistent") else "muc_temporary"]

    @on("room-empty")
    def keep(self, ev):
        return True if ev.room.config.get("persistent") else None

    @on("room-loaded")
    def loaded(self, ev):
        ev.room.state["stored"] = True

    @on("room-created", -100)
    def created(self, ev):
        """A room persistent from birth (default_persistent) is stored at once."""
        if ev.room.config.get("persistent"):
            self.service.save(ev.room)

    @on("config-changed", 100)
    def store(self, ev):
        """Before the other features write (history rows follow the room's record)."""
        self.service.save(ev.room)
        if not ev.room.config.get("persistent") and not ev.room.occupants:
            self.service.discard(ev.room)
