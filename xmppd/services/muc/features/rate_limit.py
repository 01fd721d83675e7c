"""How fast one occupant may talk: ``message_rate`` stanzas per second with
a burst of ``message_burst`` (a token bucket on the service's clock), shared
by everything an occupant makes the room send to everyone or someone —
groupchat messages, presence updates, nick changes, private messages.
Beyond it ``<error type='wait'><policy-violation/></error>`` and the stanza
goes nowhere, as the mod_muc_limits Prosody deployments use answers."""

from xmppd.services.muc.hooks import Feature, MUCError, on


class RateLimit(Feature):
    name = "rate_limit"

    def _charge(self, occupant):
        config = self.service.config
        rate, burst = config["message_rate"], config["message_burst"]
        now = self.service.clock.seconds()
        tokens, then = occupant.data.get("rate", (float(burst), now))
        tokens = min(float(burst), tokens + (now - then) * rate)
        if tokens < 1:
            occupant.data["rate"] = (tokens, now)
            raise MUCError("policy-violation", "wait",
                           "The room is currently overactive, please try again later")
        occupant.data["rate"] = (tokens - 1, now)

    @on("pre-groupchat", 100)
    def groupchat(self, ev):
        self._charge(ev.occupant)

    @on("pre-presence-update", 100)
    def presence(self, ev):
        self._charge(ev.occupant)

    @on("pre-nick-change", 100)
    def nick(self, ev):
        self._charge(ev.occupant)

    @on("private-message", 100)
    def private(self, ev):
        self._charge(ev.occupant)
