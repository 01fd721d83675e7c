"""Protocol constants: every XML namespace xmppd speaks, in one place.

Components import their namespace from here rather than spelling the URI
inline, so a grep for a constant finds every place a protocol is handled.
"""

# RFC 6120: streams, TLS, SASL, binding, errors
STREAMS = "http://etherx.jabber.org/streams"
CLIENT = "jabber:client"
SERVER = "jabber:server"
TLS = "urn:ietf:params:xml:ns:xmpp-tls"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND = "urn:ietf:params:xml:ns:xmpp-bind"
SESSION = "urn:ietf:params:xml:ns:xmpp-session"  # RFC 3921, kept for old clients
STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
STANZA_ERRORS = "urn:ietf:params:xml:ns:xmpp-stanzas"
XML = "http://www.w3.org/XML/1998/namespace"

# XEP-0030 service discovery
DISCO_INFO = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
# XEP-0199 ping
PING = "urn:xmpp:ping"
# XEP-0092 software version
VERSION = "jabber:iq:version"
# XEP-0202 entity time
TIME = "urn:xmpp:time"
# XEP-0077 in-band registration
REGISTER = "jabber:iq:register"
REGISTER_FEATURE = "http://jabber.org/features/iq-register"
# XEP-0004 data forms
DATA_FORMS = "jabber:x:data"
# XEP-0203 delayed delivery
DELAY = "urn:xmpp:delay"

STANZA_KINDS = frozenset(("message", "presence", "iq"))
