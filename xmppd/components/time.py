"""XEP-0202: the server's time, in UTC."""

import datetime

from twisted.words.xish import domish

from xmppd import ns
from xmppd.component import Component, handles


class TimeComponent(Component):
    name = "time"
    features = [ns.TIME]

    @handles(f"iq-get/host/{ns.TIME}:time")
    def time(self, event):
        now = datetime.datetime.now(datetime.timezone.utc)
        answer = domish.Element((ns.TIME, "time"))
        answer.addElement("tzo", content="Z")
        answer.addElement("utc", content=now.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z")
        return event.reply(answer)
