"""New rooms stay locked until configured (XEP-0045 §10.1), as Prosody's
lock.lib does it: a room created with the MUC join element is locked; while
it is, nobody but its creator's first session enters (``item-not-found``,
as if there were no room — checked before anything else, so no other
answer gives the room away, where Prosody checks it last) and it is not
listed. Submitting the owner form —
the default one (an instant room) or a real one — unlocks it, and so does
``lock_timeout`` passing. Cancelling the configuration of a locked room
destroys it (§10.1.3; Prosody only answers)."""

from xmppd.services.muc.hooks import Feature, MUCError, on


class Locking(Feature):
    name = "locking"

    def locked(self, room) -> bool:
        until = room.data.get("locked")
        if until is None:
            return False
        if self.service.clock.seconds() < until:
            return True
        room.data.pop("locked", None)
        return False

    @on("room-created")
    def lock(self, ev):
        if self.service.config["locking"]:
            ev.room.data["locked"] = self.service.clock.seconds() + \
                self.service.config["lock_timeout"]
        return None

    @on("pre-join", 1000)
    def refuse(self, ev):
        if not ev.created and self.locked(ev.room):
            raise MUCError("item-not-found", "cancel", by=self.service.domain)
        return None

    @on("config-submitted", -1)
    def unlock(self, ev):
        ev.room.data.pop("locked", None)
        return None

    @on("room-listed", 100)
    def unlisted(self, ev):
        return False if self.locked(ev.room) else None

    @on("room-locked")
    def is_locked(self, ev):
        return True if self.locked(ev.room) else None
