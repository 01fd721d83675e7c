"""A tiny hosted service for end-to-end tests: a domain of its own that echoes
messages back, described in service discovery by the :class:`Service` base.

Enable it in a test server's INI file::

    [server]
    components = disco … echo
    [component:echo]
    class = tests.e2e.echo_service:EchoService
    domain = echo.localhost

The base class answers disco#info of ``echo.localhost`` from ``identities``
and ``features``; the server's disco#items lists it with its ``title``.
"""

from __future__ import annotations

from twisted.words.xish import domish

from xmppd import ns
from xmppd.component import Service, handles

#: The feature the service announces for its domain (a made-up namespace).
ECHO_FEATURE = "urn:xmppd:test:echo"


class EchoService(Service):
    """Sends every chat or normal message to its domain (or a JID under it)
    back to the sender, body unchanged, from the address it was sent to."""

    name = "echo"
    title = "Echo"
    identities = [("component", "generic", "Echo service")]
    features = [ECHO_FEATURE]

    @handles("message/host")
    @handles("message/bare")
    @handles("message/full")
    def echo(self, event):
        if event.type not in (None, "normal", "chat") or event.from_ is None:
            return True  # errors, groupchat, headlines: nothing to echo
        reply = domish.Element((ns.CLIENT, "message"))
        reply["to"], reply["from"] = event.from_.full(), event.to.full()
        reply["type"] = event.type or "normal"
        if event.stanza.getAttribute("id"):
            reply["id"] = event.stanza["id"]
        for body in event.stanza.elements(ns.CLIENT, "body"):
            reply.addElement("body", content=str(body))
        self.router.route(reply)
        return True
