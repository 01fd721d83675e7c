"""XEP-0357 push notifications, as Prosody's community module mod_cloud_notify
sends them (the server side Conversations and Monal are tested against).

A client that cannot keep its connection (a phone the OS puts to sleep)
registers an *app server* with ``<enable xmlns='urn:xmpp:push:0'
jid='push.example' node='…'>`` (optionally with a ``jabber:x:data``
form, the publish options, usually the app's secret); ``<disable jid
node?/>`` removes it (every registration with that jid, or only the one
with that node). Registrations are kept per account in the ``push`` map
store, keyed by ``jid<node`` (mod_cloud_notify's push identifier), at most
``max_devices`` per account: a new one beyond that replaces the one
enabled longest ago. They survive restarts; the session that enabled one
holds it until it ends (``push_identifier`` on a Prosody session). The
account offers ``urn:xmpp:push:0`` in the disco#info of its bare JID.

Bad requests, as mod_cloud_notify: no ``jid`` is ``bad-request`` "Missing
jid"; the sender's own full JID is ``bad-request`` "JID must be different
from ours". A ``jid`` that is no JID at all is ``jid-malformed`` (Prosody
stores the string). A write that fails is ``internal-server-error``.

A notification is an iq set from the account's domain to the app server::

    <iq type='set' from='localhost' to='push.example' id='…'>
      <pubsub xmlns='http://jabber.org/protocol/pubsub'>
        <publish node='…'><item><notification xmlns='urn:xmpp:push:0'>
          <x xmlns='jabber:x:data' type='form'>
            <field type='hidden' var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field>
            <field type='text-single' var='message-count'><value>1</value></field>
            <field type='text-single' var='pending-subscription-count'/>
            <field type='jid-single' var='last-message-sender'/>
            <field type='text-single' var='last-message-body'><value>New Message!</value></field>
          </x></notification></item></publish>
        <publish-options><x xmlns='jabber:x:data' type='submit'>…</x></publish-options>
      </pubsub></iq>

``message-count`` is always 1 (the XEP does not say what to count);
``last-message-sender`` carries the stanza's ``from`` only with
``with_sender``; ``last-message-body`` the body only with ``with_body``
(both off: app servers are run by third parties), else ``important_body``
when the stanza is *important* (a message with a non-empty body, an
encrypted payload or a Jingle call proposal, not a headline, not a carbon of
one's own message, not a groupchat subject change), else no value (an iOS
app tells a silent push from one to show by it).

When, as mod_cloud_notify:

- a message goes to offline storage (``message/offline``): every
  registration of the account, before storage runs (this handler never takes
  the event);
- a session that enabled push hibernates (XEP-0198, ``resource-hibernated``):
  for what waits unacknowledged in its queue, at most one push for an
  important stanza and one for the others (a stanza pushed at an earlier
  hibernation of the session is not pushed again; sent once the reactor's
  turn is over, so that a session resumed in that same turn is not pushed
  for); then, while it hibernates, for the stanzas sent to it, gathered for
  :data:`BATCH_DELAY` seconds, again at most one push of each kind per
  batch. A hibernating session with push lasts ``max_hibernation``
  seconds instead of ``[c2s] resume_timeout`` until its first important
  push; from then the usual timeout runs (Prosody 0.12's watchdog swap);
- a message the user's archive kept (XEP-0313: it carries the account's
  ``<stanza-id/>``) reaches an account that has sessions: the registrations
  no current session holds (a device gone for good, which only learns of
  the message through the archive), and all of them for a call proposal
  (mod_cloud_notify's ``archive-message-added``).

A connected session is never pushed for. Offline storage and the archive
push a stanza at most once per registration between them (the hibernation
has its own rules, above, as in mod_cloud_notify). The app server's error
answers count against its registration unless of type ``wait``;
``max_errors`` of them in a row (a result resets the count) disable it.

Where xmppd departs from mod_cloud_notify, so that a registration (any JID
at all: the user's own resource that never answers, say) cannot fill the
router's table of iqs waiting for answers (:mod:`xmppd.router.iq`, which
every server request shares):

- a push nobody answers in ``timeout`` seconds counts as an error, as an
  error answer does (mod_cloud_notify sets no timeout: it waits for an
  answer for ever, and one that never comes counts for nothing);
- at most one push per registration waits for its answer; what is to be
  pushed meanwhile becomes one more push, sent when the answer (or the
  timeout) comes, for the latest stanza (the latest important one, if any:
  an app shows a push by it). mod_cloud_notify sends one per stanza;
- at most ``max_rate`` pushes a minute go out for one account (over all its
  registrations); beyond that they wait, gathered as above, until the
  minute allows (mod_cloud_notify has no bound);
- at most ``max_pending`` pushes wait for answers at once, server-wide;
  beyond it a push is not sent (and not counted against its registration).

The stanzas are mod_cloud_notify's; only when and how many differ.

Not done (mod_cloud_notify has them): pushes for a session whose acks are
merely late (``smacks-ack-delayed``), for MUC messages to an account with no
session, and the ``cloud_notify/*`` events other modules hook.
"""

from __future__ import annotations

import collections
import weakref
from dataclasses import asdict, dataclass
from typing import Any, Callable, NamedTuple

from twisted.internet import defer
from twisted.words.xish import domish

from xmppd import jid as jidlib
from xmppd import ns
from xmppd.component import Component, Option, handles
from xmppd.config import boolean, integer, string
from xmppd.locks import KeyedLock
from xmppd.router.events import StanzaEvent
from xmppd.router.iq import IQTimeout
from xmppd.xml.stream import StreamProblem, parse_element

__all__ = ["PushComponent", "Registration", "is_important", "is_urgent", "summary_form"]

#: Seconds the stanzas sent to a hibernating session are gathered before
#: they are pushed for (mod_cloud_notify's timer): a burst is one push.
BATCH_DELAY = 1.0

#: Seconds over which ``max_rate`` counts an account's pushes.
RATE_WINDOW = 60.0

_MOD = 1 << 32


@dataclass
class Registration:
    """One app server an account's client registered (XEP-0357 §5)."""

    jid: str
    node: str | None
    #: the publish options form, as XML text (None: none given)
    options: str | None
    timestamp: float
    #: the resource that enabled it (kept, as Prosody keeps it)
    resource: str | None = None

    @property
    def identifier(self) -> str:
        """mod_cloud_notify's push identifier: the store key."""
        return f"{self.jid}<{self.node or ''}"

    @classmethod
    def from_value(cls, value: dict[str, Any]) -> Registration:
        return cls(value["jid"], value.get("node"), value.get("options"),
                   float(value.get("timestamp", 0)), value.get("resource"))


class Summary(NamedTuple):
    """What a push says about a stanza (read when it is seen: the element
    may change once its handlers return)."""

    sender: str | None
    body: str | None
    important: bool


def _child(stanza: domish.Element, uri: str, name: str) -> domish.Element | None:
    for child in stanza.elements():
        if child.uri == uri and child.name == name:
            return child
    return None


def _body(stanza: domish.Element) -> str | None:
    body = _child(stanza, stanza.uri, "body")
    return None if body is None else str(body)


def is_important(stanza: domish.Element) -> bool:
    """Is ``stanza`` worth a visible notification (mod_cloud_notify's
    ``is_important``)? A message, its carbon unwrapped: not a headline, not a
    copy of one the user sent; encrypted (OMEMO, PGP, OX) or a Jingle call
    proposal: yes (its body says nothing); a groupchat subject: no; else
    when it has a non-empty body."""
    if stanza.name != "message":
        return False
    for carbon in stanza.elements():
        if carbon.uri != ns.CARBONS:
            continue
        forwarded = _child(carbon, ns.FORWARD, "forwarded")
        inner = forwarded is not None and _child(forwarded, ns.CLIENT, "message")
        if inner:
            if carbon.name == "sent":
                return False
            stanza = inner
        break
    stype = stanza.getAttribute("type")
    if stype == "headline":
        return False
    for uri, name in ((ns.OMEMO_LEGACY, "encrypted"), (ns.OMEMO_0, "encrypted"),
                      (ns.PGP_ENCRYPTED, "x"), (ns.OPENPGP, "openpgp"),
                      (ns.JINGLE_MESSAGE_0, "propose")):
        if _child(stanza, uri, name) is not None:
            return True
    if stype == "groupchat" and _child(stanza, stanza.uri, "subject") is not None:
        return False
    return bool(_body(stanza))


def is_urgent(stanza: domish.Element) -> bool:
    """A call proposal (XEP-0353) is pushed to every registration at once."""
    return stanza.name == "message" and _child(stanza, ns.JINGLE_MESSAGE_0, "propose") is not None


def summarize(stanza: domish.Element) -> Summary:
    return Summary(stanza.getAttribute("from"), _body(stanza), is_important(stanza))


def summary_form(sender: str | None, body: str | None) -> domish.Element:
    """The ``urn:xmpp:push:summary`` form, every field of it as
    mod_cloud_notify's (those without a value empty)."""
    form = domish.Element((ns.DATA_FORMS, "x"))
    form["type"] = "form"
    for ftype, var, value in (("hidden", "FORM_TYPE", ns.PUSH_SUMMARY),
                              ("text-single", "message-count", "1"),
                              ("text-single", "pending-subscription-count", None),
                              ("jid-single", "last-message-sender", sender),
                              ("text-single", "last-message-body", body)):
        field = form.addElement("field")
        field["type"], field["var"] = ftype, var
        if value is not None:
            field.addElement("value", content=value)
    return form


def _latest(due: Summary | None, summary: Summary | None) -> Summary | None:
    """What one push says for two that were due: the later, unless only the
    earlier was important (the app would not show the push)."""
    if due is not None and due.important and (summary is None or not summary.important):
        return due
    return summary


class _Slot:
    """One registration's pushes: at most one waits for the app server's
    answer; what is due meanwhile (or beyond the account's rate) is one push,
    sent when it may."""

    __slots__ = ("registration", "busy", "due", "summary")

    def __init__(self, registration: Registration):
        self.registration = registration
        #: a push waits for its answer
        self.busy = False
        #: one more push is to go out (for ``summary``)
        self.due = False
        self.summary: Summary | None = None


class _Account:
    """When an account's last pushes went out (``max_rate``), and which of
    its registrations wait for the window to allow theirs."""

    __slots__ = ("sent", "timer", "waiting")

    def __init__(self, size: int):
        self.sent: collections.deque[float] = collections.deque(maxlen=size)
        self.timer: Any = None
        #: (user, identifier) of the slots waiting, in order (a dict as an ordered set)
        self.waiting: dict[tuple[str, str], None] = {}


class _Client:
    """A session that enabled push: its registration, and its hibernation."""

    __slots__ = ("user", "registration", "hibernating", "timer", "batch", "first_push",
                 "extended", "pushed", "observe", "start")

    def __init__(self, user: str, registration: Registration):
        self.user = user
        self.registration = registration
        self.hibernating = False
        #: the batch timer while stanzas wait for a push
        self.timer: Any = None
        #: the first stanza of each kind (important or not) of the batch
        self.batch: list[Summary] = []
        #: an important push went out in this hibernation
        self.first_push = False
        #: the hibernation timer runs ``max_hibernation`` (not yet restored)
        self.extended = False
        #: stream management counts of queued stanzas pushed at a hibernation
        self.pushed: set[int] = set()
        self.observe: Callable | None = None
        #: the call that pushes for the queue at the start of a hibernation
        self.start: Any = None


class PushComponent(Component):
    """XEP-0357 push notifications to the app servers clients register."""

    name = "push"
    account_features = [ns.PUSH]
    options = [
        Option("with_body", boolean, "false",
               "send the message body to the app server (a third party)"),
        Option("with_sender", boolean, "false",
               "send the sender's JID to the app server"),
        Option("important_body", string, "New Message!",
               "the body sent for an important message when with_body is off "
               "(empty: none, every push alike)"),
        Option("max_devices", integer(1), "5", "registrations kept per account"),
        Option("max_errors", integer(1), "16",
               "error answers in a row that disable a registration"),
        Option("max_hibernation", integer(0), "259200",
               "seconds a hibernating session with push is kept until its first "
               "important push (0: [c2s] resume_timeout, as without push)"),
        Option("timeout", integer(1), "30",
               "seconds an app server has to answer a push (no answer counts as an error)"),
        Option("max_rate", integer(0), "60",
               "pushes a minute for one account, over all its app servers; beyond it "
               "they wait, gathered (0: no bound)"),
        Option("max_pending", integer(1), "1000",
               "pushes waiting for an answer at once, server-wide; beyond it a push "
               "is not sent"),
        Option("cache_size", integer(0), "1000",
               "accounts whose registrations are kept in memory"),
    ]
    stores = {"push": "map"}

    def __init__(self, server: Any, config: dict[str, Any]):
        super().__init__(server, config)
        self._locks = KeyedLock()
        #: sessions that enabled push
        self._clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        #: bare JID → its registrations by identifier (least recently used first)
        self._cache: collections.OrderedDict[str, dict[str, Registration]] = \
            collections.OrderedDict()
        #: (bare JID, identifier) → error answers since the last result
        self._errors: dict[tuple[str, str], int] = {}
        #: stanza → identifiers pushed for it (one push per registration)
        self._pushed: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        #: (bare JID, identifier) → its pushes waiting for an answer or due
        #: (only while one is; at most one waits per registration)
        self._slots: dict[tuple[str, str], _Slot] = {}
        #: pushes waiting for their answers (bounded by ``max_pending``)
        self._busy = 0
        #: bare JID → its recent pushes (``max_rate``), the least recently
        #: pushing account first; one idle for a window is dropped
        self._accounts: collections.OrderedDict[str, _Account] = collections.OrderedDict()

    def stopService(self) -> Any:
        for client in list(self._clients.values()):
            self._wake(client)
        for account in self._accounts.values():
            if account.timer is not None and account.timer.active():
                account.timer.cancel()
        self._accounts.clear()
        return super().stopService()

    # -- registrations ---------------------------------------------------------------

    def _registrations(self, user: str) -> defer.Deferred:
        cached = self._cache.get(user)
        if cached is not None:
            self._cache.move_to_end(user)
            return defer.succeed(cached)
        return self._locks.run(user, self._read, user)

    @defer.inlineCallbacks
    def _read(self, user: str):
        """The account's registrations (the caller holds its lock)."""
        cached = self._cache.get(user)
        if cached is not None:
            return cached
        values = yield self.store["push"].items(user)
        found: dict[str, Registration] = {}
        for key, value in values.items():
            try:
                found[key] = Registration.from_value(value)
            except (KeyError, TypeError, ValueError):
                self.log.warn("dropping a damaged push registration {key} of {user}",
                              key=key, user=user)
        self._remember(user, found)
        return found

    def _remember(self, user: str, registrations: dict[str, Registration]) -> None:
        size = self.config["cache_size"]
        if not size:
            return
        self._cache[user] = registrations
        self._cache.move_to_end(user)
        while len(self._cache) > size:
            self._cache.popitem(last=False)

    @handles(f"iq-set/self/{ns.PUSH}:enable")
    def enable(self, event: StanzaEvent):
        element = event.payload
        text = element.getAttribute("jid")
        if not text:
            return event.error("bad-request", type="modify", text="Missing jid")
        target = jidlib.parse_or_none(text)
        if target is None:
            return event.error("jid-malformed", type="modify", text="Invalid jid")
        if target.full() == event.from_.full():
            return event.error("bad-request", type="modify",
                               text="JID must be different from ours")
        form = _child(element, ns.DATA_FORMS, "x")
        registration = Registration(target.full(), element.getAttribute("node"),
                                    form.toXml() if form is not None else None,
                                    self.clock.seconds(), event.from_.resource)
        user = event.from_.userhost()
        return self._locks.run(user, self._enable, event, user, registration)

    @defer.inlineCallbacks
    def _enable(self, event: StanzaEvent, user: str, registration: Registration):
        current = dict((yield self._read(user)))
        key = registration.identifier
        current[key] = registration
        changes: dict[str, Any] = {key: asdict(registration)}
        while len(current) > self.config["max_devices"]:
            oldest = min((r for k, r in current.items() if k != key),
                         key=lambda r: r.timestamp)
            del current[oldest.identifier]
            changes[oldest.identifier] = None
        yield self.store["push"].set_many(user, changes)
        self._remember(user, current)
        gone = [k for k, v in changes.items() if v is None]
        if gone:
            self._forget(user, gone)
        for client in self._clients.values():  # the same app server re-registered
            if client.user == user and client.registration.identifier == key:
                client.registration = registration
        if event.origin is not None:
            client = self._clients.get(event.origin)
            if client is None:
                self._clients[event.origin] = _Client(user, registration)
            else:
                client.registration = registration
        self.log.info("push notifications enabled for {jid} ({key})",
                      jid=event.from_.full(), key=key)
        return event.reply()

    @handles(f"iq-set/self/{ns.PUSH}:disable")
    def disable(self, event: StanzaEvent):
        element = event.payload
        text = element.getAttribute("jid")
        if not text:
            return event.error("bad-request", type="modify", text="Missing jid")
        target = jidlib.parse_or_none(text)
        if target is None:
            return event.error("jid-malformed", type="modify", text="Invalid jid")
        user = event.from_.userhost()
        d = self._locks.run(user, self._remove, user, target.full(), element.getAttribute("node"))
        return d.addCallback(lambda _: event.reply())

    @defer.inlineCallbacks
    def _remove(self, user: str, jid: str, node: str | None = None,
                identifiers: list[str] | None = None):
        """Remove the registrations of ``jid`` (with ``node``, if given; or
        exactly ``identifiers``); the caller holds the account's lock."""
        current = dict((yield self._read(user)))
        doomed = [k for k, r in current.items() if r.jid == jid
                  and (node is None or r.node == node)
                  and (identifiers is None or k in identifiers)]
        if doomed:
            yield self.store["push"].set_many(user, {k: None for k in doomed})
            for key in doomed:
                del current[key]
            self._remember(user, current)
            self._forget(user, doomed)
            self.log.info("push notifications disabled for {user} ({keys})",
                          user=user, keys=", ".join(doomed))
        return doomed

    def _forget(self, user: str, identifiers: list[str]) -> None:
        """Registrations that are gone: no session holds them any more, and
        nothing due for them goes out."""
        for key in identifiers:
            self._errors.pop((user, key), None)
            self._slots.pop((user, key), None)
        for session, client in list(self._clients.items()):
            if client.user == user and client.registration.identifier in identifiers:
                self._wake(client, session)
                del self._clients[session]

    # -- pushing ---------------------------------------------------------------------

    def _push(self, user: str, registration: Registration, summary: Summary | None) -> bool:
        """Push for ``summary`` to ``registration``: now, or, while a push to
        it waits for its answer or for the account's rate, as the one more
        push due then. True when it went out or is due."""
        key = (user, registration.identifier)
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot(registration)
        else:
            slot.registration = registration
        if slot.busy or slot.due:
            slot.summary = _latest(slot.summary, summary) if slot.due else summary
            slot.due = True
            return True
        return self._send(key, slot, summary)

    def _send(self, key: tuple[str, str], slot: _Slot, summary: Summary | None) -> bool:
        """Send one notification unless the account's rate says wait (then
        it is due, and a timer sends it); True when it went out or is due."""
        user, registration = key[0], slot.registration
        tracker = self.router.iq
        if self._busy >= self.config["max_pending"] or len(tracker) >= tracker.max_pending:
            # Not the registration's fault: it is not counted against it.
            self.server.counters["push not sent (too many waiting for answers)"] += 1
            self.log.warn("push to {jid} for {user} not sent: {count} pushes wait for answers",
                          jid=registration.jid, user=user, count=self._busy)
            self._settle(key, slot)
            return False
        limit = self.config["max_rate"]
        account = None
        if limit:
            account = self._account(user, limit)
            now = self.clock.seconds()
            if len(account.sent) >= limit and now - account.sent[0] < RATE_WINDOW:
                slot.due, slot.summary = True, summary
                account.waiting[key] = None
                if account.timer is None:
                    account.timer = self.clock.callLater(account.sent[0] + RATE_WINDOW - now,
                                                         self._rate_allows, user)
                return True
        iq = domish.Element((ns.CLIENT, "iq"))
        iq["type"], iq["to"], iq["from"] = "set", registration.jid, user.partition("@")[2]
        pubsub = iq.addElement((ns.PUBSUB, "pubsub"))
        publish = pubsub.addElement("publish")
        if registration.node is not None:
            publish["node"] = registration.node
        notification = publish.addElement("item").addElement((ns.PUSH, "notification"))
        sender = body = None
        if summary is not None:
            if self.config["with_sender"]:
                sender = summary.sender
            if self.config["with_body"]:
                body = summary.body
            elif summary.important and self.config["important_body"]:
                body = self.config["important_body"]
        notification.addChild(summary_form(sender, body))
        if registration.options:
            try:
                options = parse_element(registration.options,
                                        max_size=len(registration.options) + 1024)
            except (ValueError, StreamProblem):
                self.log.warn("the publish options of {key} do not parse",
                              key=registration.identifier)
            else:
                pubsub.addElement("publish-options").addChild(options)
        try:
            d = tracker.request(iq, timeout=self.config["timeout"])
        except ValueError as problem:
            self.log.warn("cannot push to {jid}: {problem}", jid=registration.jid,
                          problem=problem)
            self._settle(key, slot)
            return False
        if account is not None:
            account.sent.append(self.clock.seconds())
        slot.busy = True
        self._busy += 1
        self.log.debug("sent {kind} push for {user} to {jid} ({node})",
                       kind="an important" if body else "a", user=user,
                       jid=registration.jid, node=registration.node)
        d.addCallbacks(self._answered, self._unanswered, callbackArgs=(user, registration),
                       errbackArgs=(user, registration))
        d.addErrback(lambda f: self.log.failure("push to {jid}", f, jid=registration.jid))
        d.addBoth(self._answer_came, key, slot)
        return True

    def _answer_came(self, _: Any, key: tuple[str, str], slot: _Slot) -> None:
        slot.busy = False
        self._busy -= 1
        self._settle(key, slot)

    def _settle(self, key: tuple[str, str], slot: _Slot) -> None:
        """Nothing waits for an answer: send what is due, else forget the slot."""
        if self._slots.get(key) is not slot:
            return  # the registration is gone (or was enabled anew)
        if slot.due:
            slot.due, summary, slot.summary = False, slot.summary, None
            self._send(key, slot, summary)
        elif not slot.busy:
            del self._slots[key]

    def _account(self, user: str, limit: int) -> _Account:
        accounts = self._accounts
        account = accounts.get(user)
        if account is None or account.sent.maxlen != limit:
            account = accounts[user] = _Account(limit)
        accounts.move_to_end(user)
        now = self.clock.seconds()
        while accounts:  # the accounts that pushed least recently, idle a window now
            first = next(iter(accounts.values()))
            if first is account or first.timer is not None or first.waiting \
                    or (first.sent and now - first.sent[-1] < RATE_WINDOW):
                break
            accounts.popitem(last=False)
        return account

    def _rate_allows(self, user: str) -> None:
        """The account's window moved on: send what waited, in order."""
        account = self._accounts.get(user)
        if account is None:
            return
        account.timer = None
        waiting, account.waiting = account.waiting, {}
        for key in waiting:
            slot = self._slots.get(key)
            if slot is not None and slot.due and not slot.busy:
                slot.due, summary, slot.summary = False, slot.summary, None
                self._send(key, slot, summary)

    def _answered(self, answer: domish.Element, user: str, registration: Registration) -> None:
        if answer.getAttribute("type") == "result":
            self._errors.pop((user, registration.identifier), None)
            return
        error = _child(answer, answer.uri, "error")
        etype = error.getAttribute("type") if error is not None else None
        condition = next((c.name for c in error.elements() if c.uri == ns.STANZA_ERRORS),
                         None) if error is not None else None
        if etype == "wait":
            self.log.debug("push to {jid}: {condition} (wait), not counted",
                           jid=registration.jid, condition=condition)
            return
        self._failed(user, registration, f"error {condition} ({etype})")

    def _unanswered(self, failure: Any, user: str, registration: Registration) -> None:
        if failure.check(IQTimeout):
            self._failed(user, registration, failure.getErrorMessage())
            return
        if failure.check(defer.CancelledError):
            return
        self.log.failure("push to {jid}", failure, jid=registration.jid)

    def _failed(self, user: str, registration: Registration, why: str) -> None:
        """An error answer, or none in time: ``max_errors`` in a row disable
        the registration."""
        key = (user, registration.identifier)
        count = self._errors[key] = self._errors.get(key, 0) + 1
        self.log.info("push to {jid} for {user}: {why}, {count} in a row",
                      jid=registration.jid, user=user, why=why, count=count)
        if count >= self.config["max_errors"]:
            self._errors.pop(key, None)
            self.log.warn("disabling push notifications {key} of {user} after {count} errors",
                          key=registration.identifier, user=user, count=count)
            self._locks.run(user, self._remove, user, registration.jid, None,
                            [registration.identifier]).addErrback(
                lambda f: self.log.failure("disabling {key}", f, key=registration.identifier))

    def _notify(self, user: str, stanza: domish.Element,
                choose: Callable[[dict[str, Registration]], dict[str, Registration]]) -> None:
        """Push for ``stanza`` to the registrations ``choose`` picks, each once."""
        summary = summarize(stanza)

        def send(registrations: dict[str, Registration]) -> None:
            pushed = self._pushed.setdefault(stanza, set())
            for key, registration in choose(registrations).items():
                if key not in pushed:
                    pushed.add(key)
                    self._push(user, registration, summary)
        self._registrations(user).addCallback(send).addErrback(
            lambda f: self.log.failure("push notifications for {user}", f, user=user))

    @handles("message/offline", priority=10)
    def offline(self, event: StanzaEvent) -> bool:
        """A message for an account with no available session: push to
        every registration (mod_cloud_notify's ``message/offline/handle``).
        Never takes the event: offline storage runs after."""
        if event.to is not None and event.to.user is not None:
            self._notify(event.to.userhost(), event.stanza, lambda regs: regs)
        return False

    @handles("message/bare", priority=20)
    @handles("message/full", priority=20)
    def archived(self, event: StanzaEvent) -> bool:
        """A message the account's archive kept (after the archive stamped
        it, before delivery), for an account with sessions: push to the
        registrations no session holds (all of them for a call)."""
        to, stanza = event.to, event.stanza
        if to is None or to.user is None:
            return False
        user = to.userhost()
        if not any(c.uri == ns.SID and c.name == "stanza-id" and c.getAttribute("by") == user
                   for c in stanza.elements()):
            return False
        resources = self.router.resources(user)
        if not resources or (event.name == "message/full" and to.resource not in resources):
            return False  # offline storage, or message/bare, sees it
        if is_urgent(stanza):
            self._notify(user, stanza, lambda regs: regs)
            return False
        live = {client.registration.identifier for session in resources.values()
                if (client := self._clients.get(session)) is not None}
        self._notify(user, stanza,
                     lambda regs: {k: r for k, r in regs.items() if k not in live})
        return False

    # -- hibernation (XEP-0198) ------------------------------------------------------

    @handles("resource-hibernated")
    def hibernated(self, session: Any) -> None:
        """The session's connection dropped and it waits to be resumed: push
        for what it has not acknowledged, watch what it is sent from now on,
        and keep it ``max_hibernation`` seconds."""
        client = self._clients.get(session)
        if client is None:
            return None
        client.hibernating, client.first_push, client.batch = True, False, []
        acks = getattr(session, "sm", None)
        timer = getattr(acks, "hibernation", None)
        longer = self.config["max_hibernation"]
        if timer is not None and timer.active() and longer > acks.max:
            timer.reset(longer)
            client.extended = True
        add_filter = getattr(session, "add_send_filter", None)
        if add_filter is not None:
            client.observe = lambda stanza: self._observe(session, client, stanza)
            add_filter(client.observe, first=True)
        if acks is None:
            return None
        queue = list(acks.queue)
        first = (acks.sent - len(queue)) % _MOD
        client.pushed = {seq for seq in client.pushed if (seq - first) % _MOD < len(queue)}
        due: list[tuple[int, Summary]] = []
        done: set[bool] = set()
        for index, (text, _kind, _when) in enumerate(queue):
            seq = (first + index) % _MOD
            if seq in client.pushed:
                continue
            element = _parse(text)
            if element is None:
                continue
            summary = summarize(element)
            if summary.important in done:
                continue
            done.add(summary.important)
            due.append((seq, summary))
            if len(done) == 2:
                break
        if due:
            # Sent once this turn of the reactor is over, not from within the
            # hibernation: a session resumed in the same turn (its client
            # came back on a new connection while the old one seemed up) was
            # never away, and is not pushed for.
            client.start = self.clock.callLater(0, self._push_queue, session, client, due)
        return None

    def _push_queue(self, session: Any, client: _Client, due: list[tuple[int, Summary]]) -> None:
        client.start = None
        if not client.hibernating or self._clients.get(session) is not client:
            return
        for seq, summary in due:
            if self._push_hibernated(session, client, summary):
                client.pushed.add(seq)

    def _observe(self, session: Any, client: _Client, stanza: domish.Element | str) -> bool:
        """A send filter of a hibernating session: notes the stanza for the
        next batch; never takes it."""
        if not client.hibernating or len(client.batch) == 2:
            return False
        element = stanza if isinstance(stanza, domish.Element) else _parse(stanza)
        if element is None:
            return False
        summary = summarize(element)
        if all(s.important != summary.important for s in client.batch):
            client.batch.append(summary)
        if client.timer is None:
            client.timer = self.clock.callLater(BATCH_DELAY, self._flush, session)
        return False

    def _flush(self, session: Any) -> None:
        client = self._clients.get(session)
        if client is None:
            return
        client.timer = None
        batch, client.batch = client.batch, []
        if client.hibernating:
            for summary in batch:
                self._push_hibernated(session, client, summary)

    def _push_hibernated(self, session: Any, client: _Client, summary: Summary) -> bool:
        if not self._push(client.user, client.registration, summary):
            return False
        if not client.first_push and (summary.important or not self.config["important_body"]):
            # The app was told of something worth showing: from now on the
            # session waits the usual time for its client to come back.
            client.first_push = True
            self._restore_timeout(session, client)
        return True

    def _restore_timeout(self, session: Any, client: _Client) -> None:
        if not client.extended:
            return
        client.extended = False
        acks = getattr(session, "sm", None)
        timer = getattr(acks, "hibernation", None)
        if timer is not None and timer.active():
            timer.reset(acks.max)

    def _wake(self, client: _Client, session: Any = None) -> None:
        """The session is no longer hibernating (or no longer pushed for):
        nothing gathered or about to be pushed for it goes out."""
        for call in (client.timer, client.start):
            if call is not None and call.active():
                call.cancel()
        client.timer = client.start = None
        client.batch = []
        if session is not None:
            if client.hibernating:
                self._restore_timeout(session, client)
            if client.observe is not None:
                remove = getattr(session, "remove_send_filter", None)
                if remove is not None:
                    remove(client.observe)
        client.observe = None
        client.hibernating = client.first_push = client.extended = False

    @handles("resource-resumed")
    def resumed(self, session: Any) -> None:
        client = self._clients.get(session)
        if client is not None:
            client.extended = False  # stream management cancelled its timer
            self._wake(client, session)
        return None

    @handles("resource-unbind")
    def unbound(self, session: Any) -> None:
        client = self._clients.pop(session, None)
        if client is not None:
            client.extended = False
            self._wake(client, session)
        return None

    @handles("account-deleted")
    def account_deleted(self, user: str) -> None:
        """The account's registrations were purged with its storage."""
        self._cache.pop(user, None)
        for key in [k for k in self._errors if k[0] == user]:
            del self._errors[key]
        for key in [k for k in self._slots if k[0] == user]:
            del self._slots[key]
        account = self._accounts.pop(user, None)
        if account is not None and account.timer is not None and account.timer.active():
            account.timer.cancel()
        for session, client in list(self._clients.items()):
            if client.user == user:
                self._wake(client, session)
                del self._clients[session]


def _parse(text: str) -> domish.Element | None:
    try:
        return parse_element(text, max_size=len(text) + 1024)
    except (ValueError, StreamProblem):
        return None
