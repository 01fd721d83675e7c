"""Non-anonymous and semi-anonymous rooms (XEP-0045 §7.2.3-4): who sees
occupants' real JIDs. Status 100 in a non-anonymous room's self-presence,
172/173 when the setting changes (§10.2.1)."""

from xmppd.services.muc.hooks import ConfigField, Feature, on


class Whois(Feature):
    name = "whois"
    fields = (
        ConfigField("whois", "muc#roomconfig_whois", "list-single",
                    "Addresses (JIDs) of room occupants may be viewed by:",
                    lambda c: c["default_whois"],
                    options=(("moderators", "Moderators only"), ("anyone", "Anyone")), order=76, notice=None),
    )

    def disco_features(self, room):
        return ["muc_nonanonymous" if room.config.get("whois") == "anyone"
                else "muc_semianonymous"]

    @on("self-codes")
    def codes(self, ev):
        if ev.joined and ev.room.config.get("whois") == "anyone":
            ev.codes.add("100")

    @on("config-submitted")
    def changed(self, ev):
        if ev.values.get("whois") != ev.old.get("whois"):
            ev.codes.add("172" if ev.values.get("whois") == "anyone" else "173")
