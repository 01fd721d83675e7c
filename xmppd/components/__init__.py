"""The built-in components, by the name the INI file uses for them."""

BUILTIN: dict[str, str] = {
    "disco": "xmppd.components.disco:DiscoComponent",
    "ping": "xmppd.components.ping:PingComponent",
    "version": "xmppd.components.version:VersionComponent",
    "time": "xmppd.components.time:TimeComponent",
    "presence": "xmppd.components.presence:PresenceComponent",
    "messaging": "xmppd.components.messaging:MessagingComponent",
    "register": "xmppd.components.register:RegisterComponent",
    "roster": "xmppd.components.roster:RosterComponent",
    "offline": "xmppd.components.offline:OfflineComponent",
    "blocking": "xmppd.components.blocking:BlockingComponent",
    "carbons": "xmppd.components.carbons:CarbonsComponent",
    "private": "xmppd.components.private:PrivateComponent",
    "last": "xmppd.components.last:LastActivityComponent",
    "vcard": "xmppd.components.vcard:VCardComponent",
    "vcard_update": "xmppd.components.vcard_update:VCardUpdateComponent",
    "extdisco": "xmppd.components.extdisco:ExternalServicesComponent",
}
