"""XEP-0012: Last Activity — server uptime, and when an offline user left.

The same query means three things by where it is sent (XEP-0012 §1, §7):

- to the server's domain (§5): how long the server has been running, as
  Prosody's mod_uptime answers it;
- to a user's bare JID (§3): how long ago the user logged out, with the status
  text of their last unavailable presence — or ``seconds='0'`` while the user
  has a connected resource (§3: "MUST ... contain an empty <query/> element
  whose 'seconds' attribute is set to a value of '0'");
- to a full JID (§4): the client's idle time, which only the client knows;
  the router delivers it to that session.

The bare and full forms tell whether the user is online, so both are answered
(or delivered) only to someone allowed to see the user's presence — the user
themselves, or a contact with a ``from`` or ``both`` subscription in the
user's roster — and everyone else gets ``forbidden`` (§3, §4, §8: no
"presence leak"). That is asked of the roster component; without one, only
the user may ask. A user blocking the requester (XEP-0191) is the blocking
component's business: it stops the query before it gets here.

Recording: the status text of each unavailable presence a session broadcasts
is remembered, and when a user's last session goes (logout or dropped
connection) ``{"when": <time>, "status": <text or None>}`` is written to the
key-value store ``lastactivity``, so it survives a restart. (Prosody keeps this
in memory only, and records every unavailable presence even while another
resource stays online; §3 defines the time as since the user "last logged
out", i.e. since the last session went.) A crash loses the logout of whoever
was online at the time: the previous record stays.

Where Prosody and XEP-0012 part ways:

- A user with a connected resource gets ``seconds='0'`` (§3's MUST), whoever
  asks, the user included; Prosody reports the time since the last
  unavailable presence instead.
- A user the requester may see but who has never logged out since this
  component was enabled: Prosody answers ``seconds='0'``, which §3 defines as
  "online now" — a false statement. xmppd answers ``service-unavailable``,
  the condition §4 gives an entity that has no activity to divulge (and what
  ejabberd answers). A requester not allowed to see the user gets
  ``forbidden`` whether or not the account exists, as in Prosody, so the
  answer tells nothing about the account.
- A full-JID query from someone not allowed to see the user's presence gets
  ``forbidden`` and is not delivered (§4: the server "MUST NOT deliver the
  IQ-get to an available resource but instead MUST return a <forbidden/>
  error"). An allowed one is delivered to the session, or answered
  ``service-unavailable`` if there is none (RFC 6121 §8.5.3.2.1).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.words.xish import domish

from xmppd import ns
from xmppd.component import Component, handles
from xmppd.router.events import StanzaEvent


def last_query(seconds: float, text: str | None = None) -> domish.Element:
    """The ``<query xmlns='jabber:iq:last' seconds='…'>`` of a result (§2)."""
    query = domish.Element((ns.LAST, "query"))
    query["seconds"] = str(max(0, int(seconds)))
    if text:
        query.addContent(text)
    return query


class LastActivityComponent(Component):
    """Server uptime and users' last logout (XEP-0012)."""

    name = "last"
    features = [ns.LAST]
    stores = {"lastactivity": "keyvalue"}

    def __init__(self, server, config: dict[str, Any]):
        super().__init__(server, config)
        #: users whose last unavailable presence is already recorded (not again at logout)
        self._recorded: set[str] = set()

    # -- the server (§5) ---------------------------------------------------------

    @handles(f"iq-get/host/{ns.LAST}:query")
    def uptime(self, event: StanzaEvent):
        return event.reply(last_query(self.clock.seconds() - self.server.started_at))

    # -- a user's bare JID (§3) --------------------------------------------------

    @handles(f"iq-get/self/{ns.LAST}:query")
    @handles(f"iq-get/bare/{ns.LAST}:query")
    @defer.inlineCallbacks
    def last_logout(self, event: StanzaEvent):
        user = event.to.userhost()
        allowed = yield self.may_see_presence(user, event.from_)
        if not allowed:
            return event.error("forbidden")
        if any(s.available for s in self.router.resources(user).values()):
            # §3: '0' means available now; a connected but unavailable
            # (invisible) client must not be given away.
            return event.reply(last_query(0))
        record = yield self.store["lastactivity"].get(user)
        if not record:
            return event.error("service-unavailable")
        return event.reply(last_query(self.clock.seconds() - record["when"], record.get("status")))

    # -- a user's full JID (§4) --------------------------------------------------

    @handles(f"iq-get/full/{ns.LAST}:query")
    def idle_time(self, event: StanzaEvent):
        user = event.to.userhost()
        requester = event.from_
        if requester is not None and requester.userhost() == user:
            return False  # one's own other resource: the router delivers it
        rosters = self.server.components.get("roster")
        if rosters is None or requester is None:
            return event.error("forbidden")
        roster = rosters.cached(user)
        if roster is not None:
            # The user is online (their roster is in memory): decide now and let
            # the router deliver, as it does any iq to a full JID.
            return False if roster.is_subscribed_from(requester.userhost()) \
                else event.error("forbidden")
        return rosters.load(user).addCallback(self._deliver_if_allowed, event)

    def _deliver_if_allowed(self, roster, event: StanzaEvent):
        if not roster.is_subscribed_from(event.from_.userhost()):
            return event.error("forbidden")
        session = self.router.resources(event.to.userhost()).get(event.to.resource)
        if session is None:
            return event.error("service-unavailable")
        self.router.deliver(event.stanza, session)
        return True

    # -- who may ask --------------------------------------------------------------

    def may_see_presence(self, user: str, requester: Any) -> defer.Deferred:
        """Deferred[bool]: may ``requester`` (a JID) see ``user``'s presence?

        The user may, and contacts with a ``from``/``both`` subscription
        (RFC 6121 §3); nobody else, and nobody but the user without a roster
        component.
        """
        if requester is None:
            return defer.succeed(False)
        bare = requester.userhost()
        if bare == user:
            return defer.succeed(True)
        rosters = self.server.components.get("roster")
        if rosters is None:
            return defer.succeed(False)
        return rosters.load(user).addCallback(lambda roster: roster.is_subscribed_from(bare))

    # -- recording ----------------------------------------------------------------

    @handles("presence/self", priority=10)
    def unavailable(self, event: StanzaEvent):
        """Record the moment the user's last available resource says unavailable
        (and its status text); the presence component (lower priority) still
        handles the stanza."""
        if event.stanza.getAttribute("to") is not None or event.from_ is None:
            return False
        bare = event.from_.userhost()
        if event.type is None:
            self._recorded.discard(bare)
        elif event.type == "unavailable":
            others = [s for s in self.router.resources(bare).values()
                      if s.available and s is not event.origin]
            if not others and getattr(event.origin, "available", False):
                status = next((str(c) for c in event.stanza.elements(ns.CLIENT, "status")), None)
                self._record(bare, status or None)
                self._recorded.add(bare)
        return False

    @handles("resource-unbind")
    def logged_out(self, session: Any):
        """The user's last session went: that is the logout §3 counts from,
        unless the user already said unavailable (recorded then, with its
        status). Fires after the router forgot the session."""
        bare = getattr(session, "bare", None)
        if not bare or self.router.resources(bare):
            return False
        if bare in self._recorded:
            self._recorded.discard(bare)
            return False
        self._record(bare, None)
        return False

    def _record(self, bare: str, status: str | None) -> None:
        self.store["lastactivity"].set(bare, {"when": self.clock.seconds(), "status": status}).addErrback(
            lambda f: self.log.failure("recording the last activity of {user}", f, user=bare))
