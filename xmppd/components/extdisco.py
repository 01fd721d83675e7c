"""XEP-0215: External Service Discovery — the STUN and TURN servers clients
should use for calls (Jingle audio/video, WebRTC), with TURN credentials.

The operator lists the servers in ``[component:extdisco] services`` as the
URIs WebRTC configurations already use (RFC 7064 ``stun:``/``stuns:``,
RFC 7065 ``turn:``/``turns:``)::

    services = stun:turn.example.org turn:turn.example.org?transport=udp
               turns:turn.example.org:5349?transport=tcp
    turn_secret = the static-auth-secret of coturn

A ``turn``/``turns`` service gets time-limited credentials when
``turn_secret`` is set, by the scheme coturn (``use-auth-secret``) and
Prosody's mod_turn_external share (the "TURN REST API" draft): the username
is the Unix time the credentials expire (``turn_ttl`` seconds from now),
``:<turn_user>`` appended when that is set, and the password is
``base64(HMAC-SHA1(secret, username))``; the TURN server checks it with the
same secret and no other exchange. Those services carry ``username``,
``password``, ``expires`` and ``restricted='1'``.

Behaviour where XEP-0215 leaves a choice, as Prosody 0.12's
mod_external_services does:

- *Who may ask*: only a logged-in local user; anyone else (a remote server's
  user, once there is s2s) gets ``forbidden`` (auth) — credentials for the
  operator's TURN server are for its own users.
- *Services query* (``<services/>``, optionally ``type='turn'``): every
  configured service of that type, credentials included for the restricted
  ones, so one round trip is enough (what Conversations relies on).
- *Credentials query* (``<credentials><service type=… host=… [port=…]/>``):
  the restricted services matching each requested type and host (and port,
  if given); a requested service without ``type`` or ``host`` makes the query
  a ``bad-request`` (modify); one matching nothing is simply left out (an
  empty ``<credentials/>`` if none match).
- *Both namespaces*: ``urn:xmpp:extdisco:2`` and, for clients still on
  version 0.6 of the XEP, ``urn:xmpp:extdisco:1``, each answered in the
  namespace it was asked in.
- Defaults as Prosody's mod_turn_external: port 3478 (5349 for ``stuns``/
  ``turns``, RFC 7064/7065), credentials valid for a day.

Nothing is stored: credentials are computed per request from the clock.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import re
from dataclasses import dataclass

from twisted.words.xish import domish

from xmppd import config as configlib
from xmppd import ns
from xmppd.component import Component, Option, handles
from xmppd.router.events import StanzaEvent

#: RFC 7064/7065 default ports by URI scheme.
DEFAULT_PORTS = {"stun": 3478, "turn": 3478, "stuns": 5349, "turns": 5349}
#: The transport a URI without ``?transport=`` means (RFC 7065 §3).
DEFAULT_TRANSPORTS = {"stun": "udp", "turn": "udp", "stuns": "tcp", "turns": "tcp"}

_URI = re.compile(r"""^(?P<scheme>stuns?|turns?):
                      (?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)
                      (?::(?P<port>[0-9]{1,5}))?
                      (?:\?transport=(?P<transport>udp|tcp))?$""", re.X | re.I)


@dataclass(frozen=True)
class ExternalService:
    """One STUN/TURN server as XEP-0215 describes it."""

    type: str
    host: str
    port: int
    transport: str

    @property
    def relay(self) -> bool:
        """Is it a TURN relay (which takes credentials)?"""
        return self.type in ("turn", "turns")


def services(text: str) -> list[ExternalService]:
    """An option type: STUN/TURN URIs separated by spaces, commas or newlines."""
    found = []
    for uri in configlib.words(text):
        match = _URI.match(uri)
        if match is None:
            raise configlib._BadValue(
                f"{uri!r} is not a STUN or TURN URI (e.g. turn:turn.example.org:3478"
                "?transport=udp, stun:turn.example.org, turns:turn.example.org:5349)")
        scheme = match["scheme"].lower()
        port = int(match["port"]) if match["port"] else DEFAULT_PORTS[scheme]
        if not 1 <= port <= 65535:
            raise configlib._BadValue(f"{uri!r}: port {port} is out of range")
        found.append(ExternalService(scheme, match["host"].strip("[]").lower(), port,
                                     (match["transport"] or DEFAULT_TRANSPORTS[scheme]).lower()))
    return found


def turn_credentials(secret: str, expires: int, user: str = "") -> tuple[str, str]:
    """TURN REST API credentials: (username, password) valid until ``expires``
    (Unix time), which a TURN server sharing ``secret`` accepts."""
    username = f"{expires}:{user}" if user else str(expires)
    digest = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def _datetime(seconds: int) -> str:
    """XEP-0082 DateTime (UTC, whole seconds)."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class ExternalServicesComponent(Component):
    """XEP-0215: STUN/TURN servers, with TURN credentials, for local users."""

    name = "extdisco"
    features = [ns.EXTDISCO, ns.EXTDISCO_1]
    options = [
        Option("services", services, "",
               "STUN/TURN servers to announce, as stun:/stuns:/turn:/turns: URIs "
               "(host[:port][?transport=udp|tcp])"),
        Option("turn_secret", configlib.string, "",
               "secret shared with the TURN server (coturn static-auth-secret): turn/turns "
               "services get time-limited credentials; empty: none"),
        Option("turn_ttl", configlib.integer(60), "86400",
               "seconds the TURN credentials are valid for"),
        Option("turn_user", configlib.string, "",
               "name appended to the credentials' username (<expiry>:<name>); empty: none"),
    ]

    # -- handlers --------------------------------------------------------------------

    @handles(f"iq-get/host/{ns.EXTDISCO}:services")
    @handles(f"iq-get/host/{ns.EXTDISCO_1}:services")
    def services_query(self, event: StanzaEvent):
        if not self._local_user(event):
            return event.error("forbidden", type="auth")
        wanted = event.payload.getAttribute("type")
        chosen = [s for s in self.config["services"] if wanted is None or s.type == wanted]
        return event.reply(self._answer(event.payload, chosen))

    @handles(f"iq-get/host/{ns.EXTDISCO}:credentials")
    @handles(f"iq-get/host/{ns.EXTDISCO_1}:credentials")
    def credentials_query(self, event: StanzaEvent):
        if not self._local_user(event):
            return event.error("forbidden", type="auth")
        requested: set[tuple[str, str, int | None]] = set()
        for child in event.payload.elements(event.payload.uri, "service"):
            stype, host, port = (child.getAttribute(a) for a in ("type", "host", "port"))
            if not stype or not host:
                return event.error("bad-request", type="modify",
                                   text="The 'type' and 'host' attributes are required.")
            if port is not None and not (port.isascii() and port.isdigit()):
                return event.error("bad-request", type="modify",
                                   text=f"'{port}' is not a port number")
            requested.add((stype, host.lower(), int(port) if port is not None else None))
        chosen = [s for s in self.config["services"] if self._restricted(s) and (
            (s.type, s.host, s.port) in requested or (s.type, s.host, None) in requested)]
        return event.reply(self._answer(event.payload, chosen))

    # -- answers ---------------------------------------------------------------------

    def _local_user(self, event: StanzaEvent) -> bool:
        """Did the iq come from a session a local user logged in on?"""
        user = getattr(event.origin, "user", None)
        return user is not None and event.from_ is not None and event.from_.userhost() == user

    def _restricted(self, service: ExternalService) -> bool:
        """Does ``service`` come with credentials (a relay, and a secret to make them)?"""
        return service.relay and bool(self.config["turn_secret"])

    def _answer(self, request: domish.Element, chosen: list[ExternalService]) -> domish.Element:
        """``<services/>`` or ``<credentials/>`` (as asked, in the namespace
        asked) listing ``chosen``, with fresh credentials where due."""
        answer = domish.Element((request.uri, request.name))
        secret = self.config["turn_secret"]
        expires = int(self.clock.seconds()) + self.config["turn_ttl"]
        for service in chosen:
            element = answer.addElement("service")
            element["type"], element["host"] = service.type, service.host
            element["port"], element["transport"] = str(service.port), service.transport
            if self._restricted(service):
                element["username"], element["password"] = turn_credentials(
                    secret, expires, self.config["turn_user"])
                element["expires"] = _datetime(expires)
                element["restricted"] = "1"
        return answer
