"""XEP-0030: what this server is and does, collected from the enabled components."""

from twisted.words.xish import domish

from xmppd import ns
from xmppd.component import Component, handles


class DiscoComponent(Component):
    name = "disco"
    features = [ns.DISCO_INFO, ns.DISCO_ITEMS]
    identities = [("server", "im", "xmppd")]

    @handles(f"iq-get/host/{ns.DISCO_INFO}:query")
    def info(self, event):
        node = event.payload.getAttribute("node")
        if node:
            return event.error("item-not-found")
        query = domish.Element((ns.DISCO_INFO, "query"))
        for category, type_, name in self.server.disco_identities():
            identity = query.addElement("identity")
            identity["category"], identity["type"] = category, type_
            if name:
                identity["name"] = name
        for feature in self.server.disco_features():
            query.addElement("feature")["var"] = feature
        return event.reply(query)

    @handles(f"iq-get/host/{ns.DISCO_ITEMS}:query")
    def items(self, event):
        if event.payload.getAttribute("node"):
            return event.error("item-not-found")
        return event.reply(domish.Element((ns.DISCO_ITEMS, "query")))

    @handles(f"iq-get/self/{ns.DISCO_INFO}:query")
    def account_info(self, event):
        """A client asking about its own account (XEP-0030 §3.1 on a bare JID)."""
        query = domish.Element((ns.DISCO_INFO, "query"))
        identity = query.addElement("identity")
        identity["category"], identity["type"] = "account", "registered"
        return event.reply(query)

    @handles(f"iq-get/self/{ns.DISCO_ITEMS}:query")
    def account_items(self, event):
        return event.reply(domish.Element((ns.DISCO_ITEMS, "query")))
