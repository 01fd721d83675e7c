"""Members-only rooms (XEP-0045 §7.2.7, §9.3): only members, admins and
owners may enter (others: ``registration-required``). An occupant who
loses membership is removed with status 321; when a room becomes
members-only, the non-members present are removed with 322."""

from xmppd.services.muc.hooks import ConfigField, Feature, MUCError, on

_MEMBERS = ("member", "admin", "owner")


class MembersOnly(Feature):
    name = "members_only"
    fields = (
        ConfigField("members_only", "muc#roomconfig_membersonly", "boolean",
                    "Only allow members to join", lambda c: c["default_members_only"], order=87,
                    desc="Enable this to only allow access for room owners, admins and members",
                    omit_false=True),
    )

    def disco_features(self, room):
        return ["muc_membersonly" if room.config.get("members_only") else "muc_open"]

    @on("default-role", 10)
    def no_role(self, ev):
        """A non-member has no place here: losing membership removes (321)."""
        if ev.room.config.get("members_only") and ev.affiliation not in _MEMBERS:
            return "none"
        return None

    @on("pre-join", -5)
    def check(self, ev):
        if ev.room.config.get("members_only") and ev.affiliation not in _MEMBERS:
            raise MUCError("registration-required", "auth")
        return None

    @on("config-changed")
    def became(self, ev):
        room = ev.room
        if "members_only" not in ev.changed or not room.config.get("members_only"):
            return None
        for occupant in list(room.occupants.values()):
            if room.affiliation(occupant.bare) not in _MEMBERS:
                room.remove(occupant, codes=["322"])
        return None
