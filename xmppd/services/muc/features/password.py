"""Password-protected rooms (XEP-0045 §7.2.6): a join without the right
``<password/>`` is ``not-authorized``, as Prosody's password.lib does. The
room is protected when it has a password (Prosody keeps no separate flag;
``muc#roomconfig_passwordprotectedroom`` = 0 clears it)."""

from xmppd import ns
from xmppd.services.muc.hooks import ConfigField, Feature, MUCError, on


class Password(Feature):
    name = "password"
    fields = (
        ConfigField("password", "muc#roomconfig_roomsecret", "text-private", "Password",
                    lambda c: ""),
    )

    def disco_features(self, room):
        return ["muc_passwordprotected" if room.config.get("password") else "muc_unsecured"]

    @on("pre-join", 20)
    def check(self, ev):
        secret = ev.room.config.get("password")
        if not secret or ev.occupant is not None or ev.affiliation == "owner":
            return None
        given = None
        if ev.x is not None:
            for child in ev.x.elements(ns.MUC, "password"):
                given = str(child)
        if given != secret:
            raise MUCError("not-authorized", "auth", "Incorrect password" if given else None)
        return None

    @on("config-submitted")
    def flag(self, ev):
        if ev.values.get("password_protected") is False:
            ev.values["password"] = ""
        ev.values.pop("password_protected", None)
