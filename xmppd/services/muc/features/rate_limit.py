"""How fast one occupant may talk: ``message_rate`` groupchat messages per
second with a burst of ``message_burst`` (a token bucket on the service's
clock); beyond it ``<error type='wait'><policy-violation/></error>`` and
the message goes nowhere, as Prosody's mod_muc_limits answers."""

from xmppd.services.muc.hooks import Feature, MUCError, on


class RateLimit(Feature):
    name = "rate_limit"

    @on("pre-groupchat", 100)
    def limit(self, ev):
        config = self.service.config
        rate, burst = config["message_rate"], config["message_burst"]
        now = self.service.clock.seconds()
        tokens, then = ev.occupant.data.get("rate", (float(burst), now))
        tokens = min(float(burst), tokens + (now - then) * rate)
        if tokens < 1:
            ev.occupant.data["rate"] = (tokens, now)
            raise MUCError("policy-violation", "wait",
                           "The room is currently overactive, please try again later")
        ev.occupant.data["rate"] = (tokens - 1, now)
        return None
