"""XEP-0077: in-band registration, password change and account removal.

Registering new accounts is off by default (``allow_registration``) and, when
on, rate-limited per client address. Logged-in users can always change their
password or remove their account, as with Prosody's mod_register.
"""

import collections

from twisted.internet import defer
from twisted.words.xish import domish

from xmppd import ns
from xmppd.accounts import AccountError
from xmppd.component import Component, Option, handles
from xmppd.config import boolean, integer


def _field(query: domish.Element, name: str) -> str | None:
    child = next(query.elements(ns.REGISTER, name), None)
    return None if child is None else str(child)


class RegisterComponent(Component):
    name = "register"
    features = [ns.REGISTER]
    options = [
        Option("allow_registration", boolean, "false",
               "let anyone create an account in-band"),
        Option("rate_limit", integer(1), "3",
               "accounts one client address may register per rate_period"),
        Option("rate_period", integer(1), "600", "seconds of the registration rate window"),
        Option("min_password_length", integer(0), "6", "shortest password accepted"),
    ]

    def __init__(self, server, config):
        super().__init__(server, config)
        self._recent: dict[str, collections.deque] = {}

    def stream_features(self, session):
        if self.config["allow_registration"] and session.user is None and (
                session.secure or not self.server.config.c2s["require_encryption"]):
            return [domish.Element((ns.REGISTER_FEATURE, "register"))]
        return []

    # -- not logged in: registration --------------------------------------------

    @handles(f"iq-get/preauth/{ns.REGISTER}:query")
    def form(self, event):
        if not self.config["allow_registration"]:
            return event.error("service-unavailable")
        query = domish.Element((ns.REGISTER, "query"))
        query.addElement("instructions", content="Choose a username and password.")
        query.addElement("username")
        query.addElement("password")
        return event.reply(query)

    @handles(f"iq-set/preauth/{ns.REGISTER}:query")
    def register(self, event):
        session = event.origin
        if not self.config["allow_registration"]:
            return event.error("service-unavailable")
        if not session.secure and self.server.config.c2s["require_encryption"]:
            return event.error("policy-violation", text="encryption is required")
        username = _field(event.payload, "username")
        password = _field(event.payload, "password")
        if not username or not password:
            return event.error("not-acceptable", text="username and password are required")
        if len(password) < self.config["min_password_length"]:
            return event.error("not-acceptable", text="the password is too short")
        address = session.address
        if not self._allow(address):
            self.log.info("registration from {address} refused: rate limit", address=address)
            return event.error("resource-constraint", "wait", "too many registrations; try later")
        d = self.server.accounts.create(f"{username}@{session.domain}", password)

        def created(user):
            self.log.info("registered {user} from {address}", user=user, address=address)
            return event.reply()

        def failed(failure):
            failure.trap(AccountError)
            exists = "exists" in str(failure.value)
            return event.error("conflict" if exists else "jid-malformed", text=str(failure.value))
        return d.addCallbacks(created, failed)

    def _allow(self, address: str) -> bool:
        now = self.clock.seconds()
        for known in [a for a, r in self._recent.items() if r[-1] < now - self.config["rate_period"]]:
            del self._recent[known]  # forget addresses whose window has passed
        recent = self._recent.setdefault(address, collections.deque())
        while recent and recent[0] < now - self.config["rate_period"]:
            recent.popleft()
        if len(recent) >= self.config["rate_limit"]:
            return False
        recent.append(now)
        return True

    # -- logged in: password change, removal ------------------------------------

    @handles(f"iq-get/host/{ns.REGISTER}:query")
    @handles(f"iq-get/self/{ns.REGISTER}:query")
    def registered(self, event):
        if event.origin is None or event.from_ is None:
            return event.error("not-allowed")
        query = domish.Element((ns.REGISTER, "query"))
        query.addElement("registered")
        query.addElement("username", content=event.from_.user)
        query.addElement("password")
        return event.reply(query)

    @handles(f"iq-set/host/{ns.REGISTER}:query")
    @handles(f"iq-set/self/{ns.REGISTER}:query")
    @defer.inlineCallbacks
    def change(self, event):
        if event.origin is None or event.from_ is None or getattr(event.origin, "bare", None) is None:
            return event.error("not-allowed")
        user = event.from_.userhost()
        if next(event.payload.elements(ns.REGISTER, "remove"), None) is not None:
            # XEP-0077 §3.2: the answer first, then the sessions end.
            self.router.reply(event, event.reply())
            yield self.server.delete_account(user, "the account was removed")
            self.log.info("account {user} removed by its owner", user=user)
            return True
        username, password = _field(event.payload, "username"), _field(event.payload, "password")
        if username is not None and username != event.from_.user:
            return event.error("not-allowed", text="you can only change your own password")
        if not password or len(password) < self.config["min_password_length"]:
            return event.error("not-acceptable", text="a password of at least "
                               f"{self.config['min_password_length']} characters is required")
        yield self.server.accounts.set_password(user, password)
        self.log.info("password of {user} changed", user=user)
        return event.reply()
