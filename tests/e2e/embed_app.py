"""A Twisted application that embeds xmppd and runs wokkel bots in its process
(the README's "Bots in the same process"), for tests/e2e/test_embed_slixmpp.py.

Run with ``EMBED_APP_INI=/path/xmppd.ini twistd -ny embed_app.py``: the
server listens as configured; ``bot@localhost/echo`` (the account must exist)
and the domain ``echo-bot.localhost`` answer chat messages with "echo: …",
and each logs ``embedded … ready`` once its handlers run.
"""

import os

from twisted.application import service
from twisted.logger import Logger
from twisted.words.xish import domish
from wokkel.xmppim import AvailablePresence, MessageProtocol

from xmppd import embed
from xmppd.service import makeService

log = Logger(namespace="embed_app")


class EchoBot(MessageProtocol):
    """Answers chat messages from the address they were sent to."""

    def __init__(self, presence: bool):
        super().__init__()
        self.presence = presence

    def connectionInitialized(self):
        super().connectionInitialized()
        if self.presence:
            self.send(AvailablePresence())

    def onMessage(self, message):
        if message.getAttribute("type") == "chat" and message.body:
            reply = domish.Element((None, "message"))
            reply["to"], reply["from"] = message["from"], message["to"]
            reply["type"] = "chat"
            reply.addElement("body", content=f"echo: {message.body}")
            self.send(reply)


def announce(jid, what):
    log.info("embedded {what} ready: {jid}", what=what, jid=jid.full())


def failed(failure, what):
    log.failure("embedded {what} failed", failure, what=what)


application = service.Application("xmppd with wokkel bots")
xmpp = makeService(os.environ["EMBED_APP_INI"])
xmpp.setServiceParent(application)

bot = embed.attach(xmpp, "bot@localhost/echo", EchoBot(presence=True))
bot.when_ready().addCallbacks(announce, failed, ("bot",), None, ("bot",))
component = embed.attach_component(xmpp, "echo-bot.localhost", EchoBot(presence=False))
component.when_ready().addCallbacks(announce, failed, ("component",), None, ("component",))
