"""XEP-0092: the server's software name and version (and, if allowed, its OS)."""

import platform

from twisted.words.xish import domish

import xmppd
from xmppd import ns
from xmppd.component import Component, Option, handles
from xmppd.config import boolean


class VersionComponent(Component):
    name = "version"
    features = [ns.VERSION]
    options = [Option("show_os", boolean, "false",
                      "include the operating system in answers (off: less to tell attackers)")]

    @handles(f"iq-get/host/{ns.VERSION}:query")
    def version(self, event):
        query = domish.Element((ns.VERSION, "query"))
        query.addElement("name", content="xmppd")
        query.addElement("version", content=xmppd.__version__)
        if self.config["show_os"]:
            query.addElement("os", content=f"{platform.system()} {platform.release()}")
        return event.reply(query)
