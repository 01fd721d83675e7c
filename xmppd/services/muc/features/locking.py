"""New rooms stay locked until configured (XEP-0045 §10.1): while locked
only its owners may enter (others get ``item-not-found``, as if there were
no room), it is not listed, and it is destroyed when nobody configured it
within ``lock_timeout``. Submitting the owner form — the default one
(instant room) or a real one — unlocks it."""

from xmppd.services.muc.hooks import Feature, MUCError, on


class Locking(Feature):
    name = "locking"

    @on("room-created")
    def lock(self, ev):
        if not self.service.config["locking"]:
            return None
        room = ev.room
        room.data["locked"] = True
        room.state["lock_timer"] = self.service.clock.callLater(
            self.service.config["lock_timeout"], self._expire, room)
        return None

    def _expire(self, room):
        room.state.pop("lock_timer", None)
        if room.data.get("locked") and not room.destroyed:
            room.destroy()

    @on("pre-join", 100)
    def locked(self, ev):
        if ev.room.data.get("locked") and ev.affiliation != "owner":
            raise MUCError("item-not-found", "cancel", "This room is locked")
        return None

    @on("config-changed", 50)
    def unlock(self, ev):
        room = ev.room
        if room.data.pop("locked", None):
            timer = room.state.pop("lock_timer", None)
            if timer is not None and timer.active():
                timer.cancel()
        return None

    @on("room-discarded")
    def forget(self, ev):
        timer = ev.room.state.pop("lock_timer", None)
        if timer is not None and timer.active():
            timer.cancel()

    @on("room-listed", 100)
    def unlisted(self, ev):
        return False if ev.room.data.get("locked") else None
