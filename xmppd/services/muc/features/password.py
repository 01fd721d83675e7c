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
                    lambda c: "", order=88),
    )

    def disco_features(self, room):
        return ["muc_passwordprotected" if room.config.get("password") else "muc_unsecured"]

    @staticmethod
    def _given(x):
        for child in x.elements(ns.MUC, "password"):
            return str(child) or None
        return None

    @on("pre-join", -20)
    def check(self, ev):
        secret = ev.room.config.get("password")
        if not secret or ev.occupant is not None or ev.x is None or ev.created:
            return None
        if self._given(ev.x) != secret:
            raise MUCError("not-authorized", "auth")
        return None

    @on("room-created")
    def from_join(self, ev):
        """A password in the creator's join becomes the room's (as Prosody)."""
        x = next(ev.stanza.elements(ns.MUC, "x"), None) if ev.stanza is not None else None
        if x is not None and self._given(x):
            ev.room.config["password"] = self._given(x)
        return None

    @on("config-submitted")
    def flag(self, ev):
        if ev.values.get("password_protected") is False:
            ev.values["password"] = ""
        ev.values.pop("password_protected", None)
