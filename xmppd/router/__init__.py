"""The router: finds where a stanza goes and fires the event for it."""

from xmppd.router.events import StanzaEvent, stanza_error
from xmppd.router.router import Router

__all__ = ["Router", "StanzaEvent", "stanza_error"]
