"""User accounts: SCRAM credentials in the ``accounts`` key-value store.

Passwords are never stored. For each SCRAM hash we keep what RFC 5802 §3 says a
server needs — salt, StoredKey, ServerKey, iteration count — which verifies
SCRAM logins without the password, and PLAIN logins (over TLS) by deriving the
keys again from the offered password. Key derivation is PBKDF2, deliberately
slow, so it runs in a thread and never on the reactor.
"""

from __future__ import annotations

import base64
import collections
import hmac

import scramp
from typing import Any

from twisted.internet import defer, threads

from xmppd import jid as jidlib
from xmppd.storage import IStorage

#: The SASL mechanisms we keep credentials for, strongest first.
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-1")

Credentials = tuple[bytes, bytes, bytes, int]  # salt, stored key, server key, iterations


class AccountError(Exception):
    """An account operation that cannot be done (exists already, no such user, bad name)."""


def normalize(user_jid: str) -> str:
    """The canonical bare JID of an account, or :class:`AccountError`."""
    try:
        parsed = jidlib.parse(user_jid)
    except jidlib.InvalidJID as e:
        raise AccountError(f"{user_jid!r} is not a valid JID: {e}") from None
    if parsed.user is None or parsed.resource is not None:
        raise AccountError(f"{user_jid!r} is not a bare user JID (user@domain)")
    return parsed.userhost()


def derive(password: str, iterations: int) -> dict[str, list]:
    """Salted SCRAM keys for every mechanism; the stored form of a password."""
    result = {}
    for mech in SCRAM_MECHANISMS:
        salt, stored, server, iters = scramp.ScramMechanism(mech).make_auth_info(
            password, iteration_count=iterations)
        result[mech] = [base64.b64encode(x).decode() for x in (salt, stored, server)] + [iters]
    return result


def _decode(entry: list) -> Credentials:
    salt, stored, server, iters = entry
    return (base64.b64decode(salt), base64.b64decode(stored), base64.b64decode(server), int(iters))


def _check_password(record: dict, password: str) -> bool:
    salt, stored, _server, iters = _decode(record[SCRAM_MECHANISMS[0]])
    _, candidate, _, _ = scramp.ScramMechanism(SCRAM_MECHANISMS[0]).make_auth_info(
        password, iteration_count=iters, salt=salt)
    return hmac.compare_digest(candidate, stored)


class Accounts:
    """Create, check, change and remove accounts; used by SASL, XEP-0077 and the admin command."""

    #: How key derivation is run off the reactor; the test harness runs it inline.
    run_blocking = staticmethod(threads.deferToThread)

    #: Deletions remembered, so that a stream that authenticated before its
    #: account was deleted cannot bind after (it has auth_timeout to do so).
    MAX_REVOKED = 10_000

    def __init__(self, storage: IStorage, iterations: int = 10000, clock: Any = None):
        self.storage = storage
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock
        #: bare JID → when its account was deleted, oldest first
        self.revoked: collections.OrderedDict[str, float] = collections.OrderedDict()
        self.store = storage.keyvalue("accounts")
        self.iterations = iterations
        #: Called with the bare JID after an account's rows are deleted; each
        #: may return a Deferred, waited for before :meth:`delete` fires. The
        #: server fires its ``account-deleted`` event from here.
        self.on_delete: list = []

    def exists(self, user_jid: str) -> defer.Deferred:
        d = self.store.get(user_jid)
        d.addCallback(lambda record: record is not None)
        return d

    def credentials(self, user_jid: str, mechanism: str) -> defer.Deferred:
        """Deferred firing with the :data:`Credentials` for a SCRAM mechanism, or None."""
        d = self.store.get(user_jid)
        d.addCallback(lambda record: _decode(record[mechanism]) if record and mechanism in record else None)
        return d

    @defer.inlineCallbacks
    def verify_password(self, user_jid: str, password: str):
        """Deferred firing with True if ``password`` is the account's password."""
        record = yield self.store.get(user_jid)
        if record is None:
            # Spend the same time as for a real account: timing must not tell
            # which accounts exist.
            yield self.run_blocking(scramp.ScramMechanism(SCRAM_MECHANISMS[0]).make_auth_info,
                                    password, self.iterations)
            return False
        ok = yield self.run_blocking(_check_password, record, password)
        return ok

    @defer.inlineCallbacks
    def create(self, user_jid: str, password: str):
        user_jid = normalize(user_jid)
        if not password:
            raise AccountError("the password is empty")
        if (yield self.exists(user_jid)):
            raise AccountError(f"{user_jid} exists already")
        record = yield self.run_blocking(derive, password, self.iterations)
        yield self.store.set(user_jid, record)
        return user_jid

    @defer.inlineCallbacks
    def set_password(self, user_jid: str, password: str):
        user_jid = normalize(user_jid)
        if not password:
            raise AccountError("the password is empty")
        if not (yield self.exists(user_jid)):
            raise AccountError(f"{user_jid} does not exist")
        record = yield self.run_blocking(derive, password, self.iterations)
        yield self.store.set(user_jid, record)

    @defer.inlineCallbacks
    def delete(self, user_jid: str):
        """Remove the account and everything stored for it (with no sessions
        to end: the admin command on a stopped server; the running server
        uses :meth:`XMPPServer.delete_account`)."""
        user_jid = normalize(user_jid)
        if not (yield self.exists(user_jid)):
            raise AccountError(f"{user_jid} does not exist")
        yield self.revoke(user_jid)
        yield self.purge(user_jid)

    def revoke(self, user_jid: str) -> defer.Deferred:
        """Delete the account's credentials: nobody logs in as it from now
        on, and a stream that authenticated before cannot bind (see
        :meth:`revoked_since`). Its data stays until :meth:`purge`."""
        self.revoked[user_jid] = self.clock.seconds()
        self.revoked.move_to_end(user_jid)
        while len(self.revoked) > self.MAX_REVOKED:
            self.revoked.popitem(last=False)
        return self.store.delete(user_jid)

    def revoked_since(self, user_jid: str, when: float) -> bool:
        """Was the account deleted at or after ``when`` (an authentication)?"""
        revoked = self.revoked.get(user_jid)
        return revoked is not None and revoked >= when

    @defer.inlineCallbacks
    def purge(self, user_jid: str):
        """Delete everything stored for the account, then tell every
        component (``on_delete``: the server's ``account-deleted`` event)."""
        yield self.storage.purge_user(user_jid)
        for forget in list(self.on_delete):
            yield forget(user_jid)
