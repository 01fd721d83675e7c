"""The router: finds where a stanza goes and fires the event for it."""

from xmppd.router.domains import RouteTable
from xmppd.router.events import StanzaEvent, stanza_error
from xmppd.router.fanout import Fanout
from xmppd.router.iq import IQTimeout
from xmppd.router.router import Router
from xmppd.router.sessions import Session

__all__ = ["Fanout", "IQTimeout", "RouteTable", "Router", "Session", "StanzaEvent",
           "stanza_error"]
