"""Server side SASL (RFC 6120 §6): SCRAM-SHA-256, SCRAM-SHA-1 and PLAIN.

SCRAM's arithmetic is `scramp`'s; what is ours is fetching the credentials
asynchronously. scramp asks for credentials synchronously from inside
``set_client_first``, so we read the username from the client-first message,
load the stored keys first, and hand scramp a function that returns them.
An unknown user gets random keys: the exchange runs to the end and fails
exactly like a wrong password, so SASL does not reveal which accounts exist.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass

import scramp
from twisted.internet import defer

from xmppd import jid as jidlib
from xmppd.accounts import Accounts


@dataclass
class Step:
    """One server answer: ``challenge`` (with data), ``success`` (with optional
    additional data and the authenticated bare JID) or ``failure`` (condition)."""

    kind: str
    data: bytes | None = None
    user: str | None = None
    condition: str | None = None
    text: str | None = None


#: Per-process secret from which unknown users' fake salts are derived, so that
#: asking twice about the same unknown user gives the same salt, as a real one would.
_FAKE_SALT_KEY = os.urandom(32)


def _fake_credentials(user: str, iterations: int):
    salt = hmac.new(_FAKE_SALT_KEY, user.encode("utf-8"), hashlib.sha256).digest()[:16]
    return (salt, os.urandom(32), os.urandom(32), iterations)


def _authzid_ok(authzid: str, user: str) -> bool:
    """An authorization identity is acceptable if absent or the user's own bare JID."""
    if not authzid:
        return True
    parsed = jidlib.parse_or_none(authzid)
    return parsed is not None and parsed.resource is None and parsed.userhost() == user


def failure(condition: str, text: str | None = None) -> Step:
    return Step("failure", condition=condition, text=text)


def _localpart(authcid: str, domain: str) -> str | None:
    """The prepared bare JID for a SASL authentication identity, or None."""
    try:
        parsed = jidlib.parse(f"{authcid}@{domain}")
    except jidlib.InvalidJID:
        return None
    if parsed.resource is not None or parsed.host != domain:
        return None
    return parsed.userhost()


class PlainMechanism:
    """RFC 4616 PLAIN; offered only over TLS."""

    def __init__(self, accounts: Accounts, domain: str):
        self.accounts = accounts
        self.domain = domain

    @defer.inlineCallbacks
    def step(self, data: bytes | None):
        if data is None:
            return Step("challenge", b"")
        try:
            authzid, authcid, password = data.decode("utf-8").split("\0")
        except (UnicodeDecodeError, ValueError):
            return failure("malformed-request")
        user = _localpart(authcid, self.domain)
        if user is None:
            return failure("not-authorized")
        if not _authzid_ok(authzid, user):
            return failure("invalid-authzid")
        if (yield self.accounts.verify_password(user, password)):
            return Step("success", user=user)
        return failure("not-authorized")


class ScramMechanism:
    """RFC 5802/7677 SCRAM without channel binding (the -PLUS variants are not offered)."""

    def __init__(self, name: str, accounts: Accounts, domain: str):
        self.name = name
        self.mechanism = scramp.ScramMechanism(name)
        self.accounts = accounts
        self.domain = domain
        self.server = None
        self.user: str | None = None

    @defer.inlineCallbacks
    def step(self, data: bytes | None):
        if data is None:
            return Step("challenge", b"")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return failure("malformed-request")
        if self.server is None:
            return (yield self._first(text))
        return self._final(text)

    @defer.inlineCallbacks
    def _first(self, text: str):
        parts = text.split(",", 2)
        if len(parts) != 3 or parts[0] not in ("n", "y"):
            return failure("malformed-request", "channel binding is not offered")
        attrs = dict(a.split("=", 1) for a in parts[2].split(",") if "=" in a)
        authcid = attrs.get("n", "").replace("=2C", ",").replace("=3D", "=")
        self.user = _localpart(authcid, self.domain)
        if self.user is None:
            return failure("not-authorized")
        authzid = parts[1][2:] if parts[1].startswith("a=") else parts[1]
        if not _authzid_ok(authzid.replace("=2C", ",").replace("=3D", "="), self.user):
            return failure("invalid-authzid")
        creds = yield self.accounts.credentials(self.user, self.name)
        if creds is None:
            creds = _fake_credentials(self.user, self.accounts.iterations)
        self.server = self.mechanism.make_server(lambda _username: creds)
        try:
            self.server.set_client_first(text)
            return Step("challenge", self.server.get_server_first().encode())
        except scramp.ScramException as e:
            return failure("malformed-request", str(e))

    def _final(self, text: str) -> Step:
        try:
            self.server.set_client_final(text)
        except scramp.ScramException:
            return failure("not-authorized")
        return Step("success", self.server.get_server_final().encode(), user=self.user)


def b64decode(text: str) -> bytes | None:
    """SASL payload decoding: ``=`` is an empty response; None on bad base64."""
    text = text.strip()
    if text == "=":
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        return None
