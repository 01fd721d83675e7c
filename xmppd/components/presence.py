"""RFC 6121 §3 and §4: presence subscriptions, broadcasts, probes and directed presence.

A session's own presence (a ``<presence/>`` without 'to') is broadcast to the
contacts subscribed to the user and to the user's own resources; the first one
(*initial presence*) also probes the contacts the user is subscribed to,
redelivers subscription requests still waiting for an answer, and fires
``presence/initial`` (offline messages hook it). When the session says
unavailable, or its connection just drops, unavailable presence goes to the
same people and to everyone it sent directed presence to.

Subscription stanzas are processed twice, as the RFC describes: *outbound*
at the sender's server (the ``pre-presence`` event: stamp the bare JID, update
the sender's roster) and *inbound* at the recipient's (``presence/bare``:
update the recipient's roster, deliver or answer). Both halves go through
:mod:`xmppd.subscription`, and the outbound half routes the stanza on without
knowing whether the contact is local — so the same code serves federation.

Where the RFC leaves the wire open, xmppd sends what Prosody 0.12 sends
(``tests/e2e/test_differential_prosody.py`` compares the two stanza for
stanza): a request from someone who may not see the user's presence is
acknowledged with unavailable from the user's bare JID; a request waiting for
an offline user is kept whole and delivered as it came; a session's presence
sent again later (to a prober, a new subscriber, after an unblock) carries an
XEP-0203 delay of when the server received it; answers and cancellations go
to the interested resources, before their roster push; the presence that
follows an approval waits until the contact's side has taken the approval in
(one inbound subscription stanza at a time per user). Where Prosody departs
from RFC 6121 (no unavailable on an inbound unsubscribe, §3.3.3; unavailable
after an unsubscribed instead of before it, §3.2.2), xmppd follows the RFC.

Broadcasts leave with the session as their origin, so they pass the same
``pre-presence`` hooks as what the client sends itself (a blocklist stops
them the same way).

Bounds. Every entity a session sent directed available presence to is
remembered until the session ends (§4.6.3 owes each an unavailable), so a
session may have at most ``max_directed`` of them; directed presence to a new
target beyond that is answered with a presence error ``resource-constraint``
(type *wait*: the place comes back when a directed presence ends) and is not
routed. Prosody keeps no such bound; real use is a few dozen targets (chat
rooms joined, a peer in a call), so the default of 1 000 stops only a client
that floods, whose targets each cost memory and an unavailable at logout.
Presence to a known target, directed unavailable, and presence to a
subscriber (never remembered) always pass. The subscription-request rate
window keeps one entry per user who sent a request within the window.
"""

from __future__ import annotations

import collections

from twisted.internet import defer
from twisted.words.xish import domish

from xmppd import jid as jidlib
from xmppd import ns, subscription
from xmppd.component import Component, Option, handles
from xmppd.components.offline import delay_stamp
from xmppd.components.roster import entry_size
from xmppd.config import integer
from xmppd.locks import KeyedLock
from xmppd.router.events import presence, readdressed, stanza_error
from xmppd.router.fanout import Fanout
from xmppd.xml.stream import parse_element

SUBSCRIPTION_TYPES = frozenset(subscription.TYPES)


class PresenceComponent(Component):
    """Presence broadcast, probes, directed presence and subscriptions."""

    name = "presence"
    options = [
        Option("subscription_rate_limit", integer(1), "30",
               "subscription requests one user may send per subscription_rate_period"),
        Option("subscription_rate_period", integer(1), "60",
               "seconds of the subscription request rate window"),
        Option("max_directed", integer(1), "1000",
               "most entities one session may have sent directed presence to at a time; "
               "more get a resource-constraint error"),
    ]

    def __init__(self, server, config):
        super().__init__(server, config)
        #: full JID → JIDs it sent directed available presence to (RFC 6121 §4.6)
        self._directed: dict[str, set[str]] = {}
        #: bare JID → times of its subscription requests within the window,
        #: least recently active user first (so the expired are at the front)
        self._requests: collections.OrderedDict[str, collections.deque] = \
            collections.OrderedDict()
        #: inbound subscription stanzas, one at a time per recipient (bare JID)
        self._inbound_locks = KeyedLock()

    @property
    def rosters(self):
        return self.server.components.get("roster")

    def _roster(self, user: str) -> defer.Deferred:
        rosters = self.rosters
        return rosters.load(user) if rosters is not None else defer.succeed(None)

    # -- the session's own presence (RFC 6121 §4.2, §4.4, §4.5) ------------------------

    @handles("presence/self")
    def own_presence(self, event):
        session = event.origin
        if session is None or getattr(session, "jid", None) is None:
            return True
        if event.stanza.getAttribute("to") is not None:
            return self._to_own_bare(event)
        stype = event.type
        if stype is None:
            return self._available(session, event.stanza)
        if stype == "unavailable":
            return self._unavailable(session, event.stanza)
        return True  # subscription stanzas to oneself, errors: nothing to do

    def _to_own_bare(self, event):
        """Presence a client addressed to its own bare JID: a probe is answered with
        its other resources' presence; anything else is not meaningful, dropped."""
        if event.type == "probe":
            for other in self.router.resources(event.origin.bare).values():
                if other.available and other.presence is not None and other is not event.origin:
                    event.origin.send(readdressed(other.presence, event.origin.jid.full(),
                                                  other.jid.full()))
        return True

    def _available(self, session, stanza: domish.Element):
        initial = not session.available
        session.available = True
        session.presence = stanza
        session.presence_received = self.clock.seconds()  # for stamped_presence
        session.priority = _priority(stanza)
        d = self._roster(session.bare)
        d.addCallback(self._broadcast_available, session, stanza, initial)
        return d.addCallback(lambda _: True)

    def _broadcast_available(self, roster, session, stanza: domish.Element, initial: bool) -> None:
        full = session.jid.full()
        # One serialisation for the whole broadcast: each contact's copy
        # carries the fanout to whoever delivers it (see ``inbound``).
        fan = Fanout(stanza)
        if roster is not None:
            for contact in roster.subscribers():
                self.router.route(fan.copy(contact), session)
        # §4.2.2: the user's own resources, including the one that sent it.
        fan.send_all([other for other in self.router.resources(session.bare).values()
                      if other.available or other is session], address=True)
        if not initial:
            return
        for other in self.router.resources(session.bare).values():
            if other is not session and other.available and other.presence is not None:
                session.send(stamped_presence(other, full))  # with its delay, as Prosody
        if roster is not None:
            for contact in roster.subscriptions():
                # From the session, so the user's blocklist applies to probes too.
                self.router.route(presence(full, contact, "probe"), session)
            blocking = self.server.components.get("blocking")
            for item in roster.pending_requests():  # §3.1.3: requests wait for this
                if blocking is not None and blocking.is_blocked(session.bare,
                                                                jidlib.parse(item.jid)):
                    continue  # XEP-0191: nothing from a blocked JID reaches the user
                session.send(self._pending_request(item, session))
        self.router.fire("presence/initial", session)

    def _pending_request(self, item, session) -> domish.Element:
        request = None
        if item.pending_in:
            try:
                request = parse_element(item.pending_in)
            except ValueError:
                request = None
        if request is None:
            request = presence(item.jid, session.bare, "subscribe")
        request["to"] = session.bare
        return request

    def _unavailable(self, session, stanza: domish.Element):
        if not session.available:
            # Never broadcast, but it may have sent directed presence (to a
            # chat room, say): §4.6.3, those targets hear it end.
            full = session.jid.full()
            for target in self._directed.pop(full, ()):
                self.router.route(readdressed(stanza, target, full), session)
            return True
        session.available = False
        session.presence = None
        d = self._roster(session.bare)
        d.addCallback(self._broadcast_unavailable, session, stanza)
        return d.addCallback(lambda _: True)

    def _broadcast_unavailable(self, roster, session, stanza: domish.Element) -> None:
        full = session.jid.full()
        told = set()
        stanza["from"] = full
        fan = Fanout(stanza)
        if roster is not None:
            for contact in roster.subscribers():
                told.add(contact)
                self.router.route(fan.copy(contact), session)
        fan.send_all([other for other in self.router.resources(session.bare).values()
                      if other.available or other is session], address=True)
        # §4.6.3: everyone who got directed presence hears it ended.
        for target in self._directed.pop(full, ()):
            if target not in told and target.split("/", 1)[0] not in told:
                self.router.route(readdressed(stanza, target, full), session)

    @handles("account-deleted")
    def forget(self, user: str) -> None:
        """The account is gone: its subscription-request window with it."""
        self._requests.pop(user, None)

    @handles("resource-unbind")
    def gone(self, session):
        """A session closed or its connection dropped: RFC 6121 §4.5.2 says the
        server broadcasts unavailable presence on its behalf."""
        if getattr(session, "jid", None) is not None:
            stanza = presence(session.jid.full(), session.bare, "unavailable")
            del stanza.attributes["to"]
            result = self._unavailable(session, stanza)
            if isinstance(result, defer.Deferred):
                result.addErrback(lambda f: self.log.failure(
                    "unavailable presence for {jid}", f, jid=session.jid.full()))
        session.available = False
        return False

    # -- outbound: what a local client sends to someone (RFC 6121 §3, §4.6) ------------

    @handles("pre-presence")
    def outbound(self, event):
        if event.to is None or event.stanza.getAttribute("to") is None:
            return False
        stype = event.type
        if stype in SUBSCRIPTION_TYPES:
            return self._outbound_subscription(event, stype)
        if stype in (None, "unavailable") and not self._track_directed(event):
            limit = self.config["max_directed"]
            self.log.debug("{jid}: directed presence to {to} refused: {limit} targets already",
                           jid=event.origin.jid.full(), to=event.to.full(), limit=limit)
            return event.error("resource-constraint", "wait",
                               f"directed presence is limited to {limit} entities at a time")
        return False

    def _track_directed(self, event) -> bool:
        """Remember (or forget) a directed presence's target; False if it is a
        new target and the session already has ``max_directed`` of them."""
        session = event.origin
        target = event.to.full()
        bare = event.to.userhost()
        if bare == session.bare:
            return True
        rosters = self.rosters
        roster = rosters.cached(session.bare) if rosters is not None else None
        if roster is not None and roster.is_subscribed_from(bare):
            return True  # a subscriber hears the broadcasts anyway
        full = session.jid.full()
        targets = self._directed.get(full)
        if event.type is None:
            if targets is None:
                targets = self._directed[full] = set()
            elif target not in targets and len(targets) >= self.config["max_directed"]:
                return False
            targets.add(target)
        elif targets is not None:
            targets.discard(target)
        return True

    @defer.inlineCallbacks
    def _outbound_subscription(self, event, stype: str):
        session = event.origin
        user, contact = session.bare, event.to.userhost()
        if contact == user:
            return True
        if stype == "subscribe" and not self._allow_request(user):
            self.log.info("subscription request from {user} to {contact} refused: rate limit",
                          user=user, contact=contact)
            return event.error("resource-constraint", "wait",
                               "too many subscription requests; try again later")
        rosters = self.rosters
        if rosters is None:
            self.router.route(readdressed(event.stanza, contact, user))
            return True
        roster = yield rosters.load(user)
        if stype == "subscribe":
            item = roster.items.get(contact)
            refusal = rosters.refusal(roster, contact, item.weight() if item is not None
                                      else entry_size(contact))
            if refusal is not None:
                return event.error("not-allowed", text=f"your roster is full: {refusal}")
        before = roster.state(contact)
        outcome = subscription.outbound(before, stype)
        approved = True if outcome.pre_approved else (False if stype == "unsubscribed" else None)
        pushed = yield rosters.apply(roster, contact, outcome.state, approved=approved)
        if not pushed and stype in ("subscribe", "unsubscribe") and roster.get(contact):
            # As Prosody: a (un)subscribe is always answered with a push of
            # the item, also when it changed nothing (a request repeated).
            rosters.push(roster, [roster.get(contact)])
        if outcome.forward:
            if stype == "unsubscribed" and before.from_:
                # §3.2.2: the contact hears the user go away while still
                # subscribed, i.e. before the unsubscribed reaches it.
                self._send_unavailable(user, contact)
            # §3.1.2: stamped with the user's bare JID, addressed to the contact's.
            self.router.route(readdressed(event.stanza, contact, user))
            if stype == "subscribed":
                # §3.1.5: the new subscriber hears the user's current presence,
                # after its server took the approval in (a local contact's
                # inbound processing waits on storage).
                yield self._settled(contact)
                self._send_current_presence(user, contact)
        if stype == "subscribed" and outcome.state.to:
            # As Prosody: approving someone the user is subscribed to probes
            # them (their presence comes again, to the user's bare JID).
            self.router.route(presence(user, contact, "probe"), session)
        return True

    def _settled(self, user: str) -> defer.Deferred:
        """Fires once the inbound subscription stanzas now queued for ``user``
        are processed (at once for a user with none, or not local)."""
        return self._inbound_locks.run(user, lambda: None)

    def _allow_request(self, user: str) -> bool:
        """May ``user`` send another subscription request now (the rate limit)?

        Users are kept in the order of their latest request, so those whose
        window has passed are at the front and go in O(1) each: the record
        holds only users active within the window, at most
        ``subscription_rate_limit`` times each.
        """
        now = self.clock.seconds()
        cutoff = now - self.config["subscription_rate_period"]
        requests = self._requests
        while requests:
            oldest = next(iter(requests.values()))
            if oldest and oldest[-1] >= cutoff:
                break
            requests.popitem(last=False)
        recent = requests.get(user)
        if recent is None:
            recent = requests[user] = collections.deque()
        while recent and recent[0] < cutoff:
            recent.popleft()
        if len(recent) >= self.config["subscription_rate_limit"]:
            return False
        recent.append(now)
        requests.move_to_end(user)
        return True

    def _send_current_presence(self, user: str, contact: str) -> int:
        """Each available session's presence to ``contact``, with its delay
        stamp (:func:`stamped_presence`); how many were sent."""
        sent = 0
        for session in list(self.router.resources(user).values()):
            if session.available and session.presence is not None:
                self.router.route(stamped_presence(session, contact), session)
                sent += 1
        return sent

    def _send_unavailable(self, user: str, contact: str) -> None:
        for session in list(self.router.resources(user).values()):
            if session.available:
                self.router.route(presence(session.jid.full(), contact, "unavailable"), session)

    # -- inbound: presence addressed to a local user (RFC 6121 §3, §4.3, §4.6) ----------

    @handles("presence/bare")
    @handles("presence/full")
    def inbound(self, event):
        stype = event.type
        if stype in SUBSCRIPTION_TYPES:
            return self._inbound_subscription(event, stype)
        if stype == "probe":
            return self._probe(event)
        user = event.to.userhost()
        if stype in (None, "unavailable"):
            if event.to.resource is not None:
                session = self.router.resources(user).get(event.to.resource)
                if session is not None:
                    session.send(event.stanza)
            else:
                Fanout.of(event.stanza).send_all(
                    [session for session in self.router.resources(user).values()
                     if session.available], to=event.stanza.getAttribute("to"))
            return True
        if stype == "error" and event.to.resource is not None:
            session = self.router.resources(user).get(event.to.resource)
            if session is not None:
                session.send(event.stanza)
        return True

    def _inbound_subscription(self, event, stype: str):
        """A subscription stanza for a local user (RFC 6121 §3.1.3, §3.1.6,
        §3.2.3, §3.3.3), one at a time per user, so that whoever waits for
        the outcome (:meth:`_settled`) sees them all done in order."""
        if event.from_ is None:
            return True
        user = event.to.userhost()
        d = self._inbound_locks.run(user, self._process_inbound_subscription, event, stype)
        return d.addCallback(self._then)

    def _then(self, after) -> defer.Deferred | bool:
        """Run what an inbound subscription left to do once the contact's
        server has processed the answer it sent — outside the user's turn,
        so two users answering each other never wait on each other."""
        if after is None:
            return True
        contact, action = after
        return self._settled(contact).addCallback(lambda _: action()).addCallback(
            lambda _: True)

    @defer.inlineCallbacks
    def _process_inbound_subscription(self, event, stype: str):
        user, contact = event.to.userhost(), event.from_.userhost()
        rosters = self.rosters
        exists = yield self.server.accounts.exists(user)
        if not exists or rosters is None:
            if stype == "subscribe":  # §3.1.3: no such contact
                self.router.route(presence(user, contact, "unsubscribed"))
            return None
        roster = yield rosters.load(user)
        item = roster.items.get(contact)
        before = roster.state(contact)
        approved = bool(item and item.approved)
        outcome = subscription.inbound(before, stype, approved=approved)
        kept = None
        if stype == "subscribe" and outcome.state.pending_in and not before.pending_in:
            # The request waits in the roster until answered: it needs room.
            # A request already waiting is kept as it is, as in Prosody.
            kept = _kept_request(event.stanza, user, contact).toXml()
            size = entry_size(contact, item.name if item else None,
                              item.groups if item else (), kept)
            refusal = rosters.refusal(roster, contact, size)
            if refusal is not None:
                self.log.info("subscription request from {contact} to {user} refused: {why}",
                              contact=contact, user=user, why=refusal)
                self.router.route(stanza_error(event.stanza, "resource-constraint",
                                               text="the contact's roster is full"))
                return None
        if stype == "subscribe" and not before.from_ and not approved:
            # As Prosody's mod_presence: a request from someone who may not
            # see the user's presence is acknowledged at once, with
            # unavailable presence from the user's bare JID — before it is
            # stored or delivered, and also when it was waiting already.
            self.router.route(presence(user, contact, "unavailable"))
        pushed = yield rosters.apply(roster, contact, outcome.state, pending_stanza=kept,
                                     push=False)
        if outcome.forward:
            # A request goes to the available resources (§3.1.3), answers and
            # cancellations to the interested ones (§3.1.6, §3.2.3, §3.3.3) —
            # before the roster push that goes with them, as Prosody sends them.
            if stype == "subscribe":
                sessions = [s for s in self.router.resources(user).values() if s.available]
            else:
                sessions = rosters.interested(user)
            delivered = readdressed(event.stanza, user, contact)
            for session in sessions:
                session.send(delivered)
        if pushed:
            rosters.push(roster, [roster.items[contact]])
        if stype == "unsubscribe" and before.from_:
            self._send_unavailable(user, contact)  # §3.3.3
        if not outcome.auto_reply:
            return None
        self.router.route(presence(user, contact, outcome.auto_reply))
        if before.from_:
            # Subscribed already: as Prosody, the current presence follows
            # the answer, or unavailable from the bare JID if there is none.
            def present():
                if not self._send_current_presence(user, contact):
                    self.router.route(presence(user, contact, "unavailable"))
            return contact, present
        # A pre-approval was used (§3.4): the new subscriber gets the presence.
        return contact, lambda: self._send_current_presence(user, contact)

    @defer.inlineCallbacks
    def _probe(self, event):
        """§4.3.2: answer a probe with each available resource's presence, if the
        prober may see it; unsubscribed if it may not."""
        if event.from_ is None:
            return True
        user, prober = event.to.userhost(), event.from_
        prober_bare = prober.userhost()
        exists = yield self.server.accounts.exists(user)
        roster = (yield self._roster(user)) if exists else None
        allowed = prober_bare == user or (roster is not None and
                                          roster.is_subscribed_from(prober_bare))
        if not allowed:
            self.router.route(presence(user, prober_bare, "unsubscribed"))
            return True
        sessions = [s for s in self.router.resources(user).values()
                    if s.available and s.presence is not None]
        for session in sessions:
            # With the XEP-0203 delay of when it was sent, as Prosody answers.
            self.router.route(stamped_presence(session, prober.full()), session)
        if not sessions:
            self.router.route(presence(user, prober.full(), "unavailable"))
        return True


def stamped_presence(session, to: str) -> domish.Element:
    """``session``'s current presence addressed to ``to``, with an XEP-0203
    ``<delay/>`` from the user's domain stamped when the server received it.

    Prosody stamps a session's presence so once it has broadcast it, and
    every later copy of it carries the stamp: the answer to a probe, the
    presence a new subscriber gets, the presence sent again after an unblock.
    A client learns how long the contact has been in that state.
    """
    copy = readdressed(session.presence, to, session.jid.full())
    delay = copy.addElement((ns.DELAY, "delay"))
    delay["from"] = session.jid.host
    delay["stamp"] = delay_stamp(session.presence_received)
    return copy


def _kept_request(stanza: domish.Element, user: str, contact: str) -> domish.Element:
    """A subscribe to keep until the user answers it: the whole stanza as it
    came — its id and every child a client put in it (a status, an XEP-0172
    nick, an XEP-0379 pre-authentication token …) — from the contact's bare
    JID to the user's, as Prosody keeps it. Its size counts against the
    roster's ``max_size`` (:func:`entry_size`), so a request too big for the
    room left is refused rather than trimmed."""
    return readdressed(stanza, user, contact)


def _priority(stanza: domish.Element) -> int:
    """The presence's ``<priority/>``, clamped to a signed byte; 0 if absent or bad."""
    element = next(stanza.elements(ns.CLIENT, "priority"), None)
    try:
        value = int(str(element).strip() or 0) if element is not None else 0
    except ValueError:
        value = 0
    return max(-128, min(127, value))

