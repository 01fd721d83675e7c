"""Protocol constants: every XML namespace xmppd speaks, in one place.

Components import their namespace from here rather than spelling the URI
inline, so a grep for a constant finds every place a protocol is handled.
"""

# RFC 6120: streams, TLS, SASL, binding, errors
STREAMS = "http://etherx.jabber.org/streams"
CLIENT = "jabber:client"
SERVER = "jabber:server"
# XEP-0220 server dialback: its elements, and the stream feature that says
# the peer does it (so a stream may use it after SASL was not offered)
DIALBACK = "jabber:server:dialback"
DIALBACK_FEATURE = "urn:xmpp:features:dialback"
# XEP-0114 external components
COMPONENT_ACCEPT = "jabber:component:accept"
TLS = "urn:ietf:params:xml:ns:xmpp-tls"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND = "urn:ietf:params:xml:ns:xmpp-bind"
SESSION = "urn:ietf:params:xml:ns:xmpp-session"  # RFC 3921, kept for old clients
STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
# XEP-0478 stream limits advertisement
STREAM_LIMITS = "urn:xmpp:stream-limits:0"
STANZA_ERRORS = "urn:ietf:params:xml:ns:xmpp-stanzas"
XML = "http://www.w3.org/XML/1998/namespace"
# RFC 7395 XMPP over WebSocket: the <open/> and <close/> of a framed stream
FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
# XEP-0124 BOSH: the <body/> wrapper; XEP-0206 XMPP over BOSH: its attributes
HTTPBIND = "http://jabber.org/protocol/httpbind"
XBOSH = "urn:xmpp:xbosh"

# XEP-0030 service discovery
DISCO_INFO = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
# XEP-0115 entity capabilities
CAPS = "http://jabber.org/protocol/caps"
# XEP-0157 contact addresses (the FORM_TYPE of a XEP-0128 extended disco#info form)
SERVERINFO = "http://jabber.org/network/serverinfo"
# XEP-0215 external service discovery (STUN/TURN); :1 kept for older clients
EXTDISCO = "urn:xmpp:extdisco:2"
EXTDISCO_1 = "urn:xmpp:extdisco:1"
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

# RFC 6121 roster, and its stream features
ROSTER = "jabber:iq:roster"
ROSTER_VERSIONING = "urn:xmpp:features:rosterver"  # XEP-0237
PRE_APPROVAL = "urn:xmpp:features:pre-approval"  # RFC 6121 §3.4
# XEP-0160 offline messages (a disco feature name, not a namespace)
OFFLINE = "msgoffline"
# XEP-0191 blocking command
BLOCKING = "urn:xmpp:blocking"
BLOCKING_ERRORS = "urn:xmpp:blocking:errors"
# XEP-0280 message carbons, XEP-0297 forwarding
CARBONS = "urn:xmpp:carbons:2"
FORWARD = "urn:xmpp:forward:0"
# XEP-0334 message processing hints
HINTS = "urn:xmpp:hints"
# XEP-0313 message archive management (and its extended queries: ids,
# before-id/after-id, metadata), XEP-0059 result set management, XEP-0359
# unique and stable stanza ids
MAM = "urn:xmpp:mam:2"
MAM_EXTENDED = "urn:xmpp:mam:2#extended"
RSM = "http://jabber.org/protocol/rsm"
SID = "urn:xmpp:sid:0"
# Payloads that make a bodiless message worth archiving (as Prosody's
# mod_mam judges): XEP-0184 receipts, XEP-0333 markers, XEP-0380 explicit
# encryption, XEP-0353 Jingle message initiation (both versions)
RECEIPTS = "urn:xmpp:receipts"
CHAT_MARKERS = "urn:xmpp:chat-markers:0"
EME = "urn:xmpp:eme:0"
JINGLE_MESSAGE_0 = "urn:xmpp:jingle-message:0"
JINGLE_MESSAGE_1 = "urn:xmpp:jingle-message:1"
# XEP-0172 user nickname
NICK = "http://jabber.org/protocol/nick"
# XEP-0085 chat states
CHATSTATES = "http://jabber.org/protocol/chatstates"
# XEP-0049 private XML storage
PRIVATE = "jabber:iq:private"
# XEP-0012 last activity
LAST = "jabber:iq:last"
# XEP-0054 vcard-temp, and XEP-0153 vCard-based avatars (the hash in presence)
VCARD = "vcard-temp"
VCARD_UPDATE = "vcard-temp:x:update"
# XEP-0292 vCard4 over PEP (the payload namespace, and the PEP node), and
# XEP-0398 conversion between a vcard-temp PHOTO and a XEP-0084 avatar
VCARD4 = "urn:ietf:params:xml:ns:vcard-4.0"
VCARD4_NODE = "urn:xmpp:vcard4"
PEP_VCARD_CONVERSION = "urn:xmpp:pep-vcard-conversion:0"
# XEP-0084 user avatar: the data node and the metadata node (also namespaces)
AVATAR_DATA = "urn:xmpp:avatar:data"
AVATAR_METADATA = "urn:xmpp:avatar:metadata"
# XEP-0048 bookmarks (private XML, and the legacy PEP node of the same name);
# XEP-0402 bookmarks (its node is its namespace), its compatibility features,
# the version-0 namespace Prosody refuses, and XEP-0411 bookmarks conversion
BOOKMARKS = "storage:bookmarks"
BOOKMARKS2 = "urn:xmpp:bookmarks:1"
BOOKMARKS2_COMPAT = "urn:xmpp:bookmarks:1#compat"
BOOKMARKS2_COMPAT_PEP = "urn:xmpp:bookmarks:1#compat-pep"
BOOKMARKS2_OLD = "urn:xmpp:bookmarks:0"
BOOKMARKS_CONVERSION = "urn:xmpp:bookmarks-conversion:0"
# XEP-0060 publish-subscribe: the request namespaces, events, errors, and the
# FORM_TYPEs of its data forms; XEP-0122 data form validation
PUBSUB = "http://jabber.org/protocol/pubsub"
PUBSUB_OWNER = "http://jabber.org/protocol/pubsub#owner"
PUBSUB_EVENT = "http://jabber.org/protocol/pubsub#event"
PUBSUB_ERRORS = "http://jabber.org/protocol/pubsub#errors"
PUBSUB_NODE_CONFIG = "http://jabber.org/protocol/pubsub#node_config"
PUBSUB_META_DATA = "http://jabber.org/protocol/pubsub#meta-data"
PUBSUB_PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
PUBSUB_SUBSCRIBE_OPTIONS = "http://jabber.org/protocol/pubsub#subscribe_options"
DATA_VALIDATE = "http://jabber.org/protocol/xdata-validate"

# XEP-0363 HTTP file upload (slot requests, the file-too-large error)
HTTP_UPLOAD = "urn:xmpp:http:upload:0"

# XEP-0156 alternative connection methods: host-meta's XRD document (RFC
# 6415) and the link relations of the WebSocket and BOSH endpoints
XRD = "http://docs.oasis-open.org/ns/xri/xrd-1.0"
ALT_CONNECTIONS_WEBSOCKET = "urn:xmpp:alt-connections:websocket"
ALT_CONNECTIONS_XBOSH = "urn:xmpp:alt-connections:xbosh"

STANZA_KINDS = frozenset(("message", "presence", "iq"))

# XEP-0045 multi-user chat: the join element, the occupants' and the
# moderators' and owners' protocols, and the forms' FORM_TYPEs
MUC = "http://jabber.org/protocol/muc"
MUC_USER = "http://jabber.org/protocol/muc#user"
MUC_ADMIN = "http://jabber.org/protocol/muc#admin"
MUC_OWNER = "http://jabber.org/protocol/muc#owner"
MUC_ROOMCONFIG = "http://jabber.org/protocol/muc#roomconfig"
MUC_ROOMINFO = "http://jabber.org/protocol/muc#roominfo"
MUC_REGISTER = "http://jabber.org/protocol/muc#register"
MUC_REQUEST = "http://jabber.org/protocol/muc#request"
MUC_STABLE_ID = "http://jabber.org/protocol/muc#stable_id"
# XEP-0410 MUC self-ping (the feature of a room that answers it itself)
MUC_SELF_PING = "http://jabber.org/protocol/muc#self-ping-optimization"
# XEP-0421 anonymous unique occupant identifiers
OCCUPANT_ID = "urn:xmpp:occupant-id:0"
# XEP-0249 direct MUC invitations (added to mediated ones, as Prosody does)
CONFERENCE = "jabber:x:conference"
# XEP-0425 message moderation: v0.3 (moderate:1 with XEP-0424 retract:1) and
# v0.2 (moderate:0 inside a XEP-0422 fastening, retract:0), as Prosody's
# mod_muc_moderation speaks both
MODERATE = "urn:xmpp:message-moderate:1"
MODERATE_0 = "urn:xmpp:message-moderate:0"
RETRACT = "urn:xmpp:message-retract:1"
RETRACT_0 = "urn:xmpp:message-retract:0"
FASTEN = "urn:xmpp:fasten:0"

# XEP-0198 stream management (sm:3; sm:2 as Prosody still offers it)
SM3 = "urn:xmpp:sm:3"
SM2 = "urn:xmpp:sm:2"
SM_NAMESPACES = frozenset((SM3, SM2))
# XEP-0352 client state indication
CSI = "urn:xmpp:csi:0"

# XEP-0357 push notifications, and the FORM_TYPE of a notification's summary
PUSH = "urn:xmpp:push:0"
PUSH_SUMMARY = "urn:xmpp:push:summary"
# End-to-end encrypted payloads (a message carrying one is worth a push, as
# Prosody's mod_cloud_notify judges): OMEMO as Conversations first shipped
# it and urn:xmpp:omemo:0, XEP-0027 OpenPGP, XEP-0373 OpenPGP for XMPP
OMEMO_LEGACY = "eu.siacs.conversations.axolotl"
OMEMO_0 = "urn:xmpp:omemo:0"
PGP_ENCRYPTED = "jabber:x:encrypted"
OPENPGP = "urn:xmpp:openpgp:0"
