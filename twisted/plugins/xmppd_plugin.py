"""The ``twistd xmppd`` plugin.

Twisted imports every plugin module when it scans for plugins, so this module
imports nothing of xmppd until twistd actually runs it.
"""

import sys

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import implementer


class Options(usage.Options):
    optParameters = [
        ["config", "c", None,
         "the INI file (default: $XMPPD_CONFIG, ./etc/xmppd.ini, /etc/xmppd/xmppd.ini)"],
    ]

    def postOptions(self) -> None:
        from xmppd import config

        path = self["config"] or config.default_path()
        try:
            self.config = config.load(path)
        except config.ConfigError as e:
            sys.stderr.write(f"xmppd: {e}\n")
            raise SystemExit(2)


@implementer(IServiceMaker, IPlugin)
class XMPPDServiceMaker:
    tapname = "xmppd"
    description = "An XMPP server"
    options = Options

    def makeService(self, options: Options):
        from twisted.internet import reactor

        from xmppd.service import makeService, tune_garbage_collector

        # The process is ours (an application embedding the service is not
        # touched): tune the collector once everything has been imported.
        reactor.callWhenRunning(tune_garbage_collector)
        return makeService(options.config)


serviceMaker = XMPPDServiceMaker()
