"""xmppd: an XMPP server, and a framework for building one, on Twisted."""

__version__ = "0.1.0"
