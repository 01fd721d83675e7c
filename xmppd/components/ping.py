"""XEP-0199: answer pings sent to the server and to an account's bare JID."""

from xmppd import ns
from xmppd.component import Component, handles


class PingComponent(Component):
    name = "ping"
    features = [ns.PING]

    @handles(f"iq-get/host/{ns.PING}:ping")
    @handles(f"iq-get/bare/{ns.PING}:ping")
    def pong(self, event):
        return event.reply()
