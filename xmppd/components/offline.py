"""XEP-0160: offline message storage, delivered at the next initial presence.

When a chat or normal message reaches a user with no available resource of
non-negative priority, the messaging component offers it to
``message/offline`` (RFC 6121 §8.5.2.2.1). This component keeps it in the
``offline`` archive store, as the stanza's XML text, and hands it to the next
resource that sends initial presence with a non-negative priority (XEP-0160
§2), each message marked with an XEP-0203 ``<delay/>`` whose stamp is the time
it was stored.

Durability: a message counts as stored only once the archive's ``append``
Deferred has fired (a committed write), and stored messages are deleted only
after they were handed to the session, so a ``kill -9`` at any point loses
nothing; at worst a message is delivered twice.

Each user with stored messages has a small in-memory record (does the account
exist, how many messages and how many bytes are stored), read from storage the
first time (messages arriving meanwhile wait for it, in order) and trusted for
:data:`STATE_TTL` seconds. With it, the quota check is a comparison on the
reactor thread and a message's ``append`` is submitted at once: a burst of
messages becomes one batch of writes for the storage worker instead of three
round trips each. Storage runs work in submission order, so a message stored
while a delivery is starting is either part of that delivery (its query was
submitted later) or still in storage afterwards, never lost and never sent
twice.

Quotas: at most ``max_messages`` messages and ``max_size`` bytes per account
(bytes as stored, :func:`xmppd.storage.value_size`; the record counts them as
messages are stored and delivered, and reads the archive's ``size`` when it
is loaded). A message that would pass either is refused with
``service-unavailable``, as XEP-0160 §2 says of a full store; a count alone let
400 messages of 250 KB each fill 100 MB per account.

Delivery holds a bounded amount: messages are read in batches of at most
:attr:`OfflineComponent.batch` messages and about
:attr:`OfflineComponent.batch_bytes` bytes, and each message is handed to the
session only once the session's output has drained (``session.drained()``),
so a client that reads slowly slows the delivery instead of piling the whole
queue into its output buffer (where it would also pass the buffer's bound and
cost the client its connection).
"""

from __future__ import annotations

import time
import weakref
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.words.xish import domish

from xmppd import jid as jidlib
from xmppd import ns
from xmppd.component import Component, Option, handles
from xmppd.config import integer
from xmppd.locks import KeyedLock
from xmppd.router.events import StanzaEvent
from xmppd.storage import value_size
from xmppd.xml.stream import parse_element

#: Message types XEP-0160 §3 says SHOULD be stored; headline, groupchat and
#: error SHOULD NOT (the messaging component never offers them anyway).
STORED_TYPES = frozenset((None, "normal", "chat"))

#: The text XEP-0160 §2 (Example 3) puts in the delay element.
DELAY_TEXT = "Offline Storage"

#: What the sender reads when the recipient's storage is full.
FULL_TEXT = "The recipient's offline message storage is full"

#: Seconds a user's cached record (the account exists, N messages stored) is
#: trusted before it is read from storage again: an account created by the
#: admin command (in another process) is noticed within this time. Deletion
#: reaches the running server itself (``account-deleted``), so it is at once.
STATE_TTL = 60.0


class _Loading:
    """Messages waiting while a user's record is read, and deliveries waiting
    for those messages to be submitted."""

    __slots__ = ("pending", "waiters")

    def __init__(self) -> None:
        self.pending: list = []
        self.waiters: list[defer.Deferred] = []


class _Queue:
    """What the component knows of one user's stored messages."""

    __slots__ = ("count", "size", "loaded", "refused")

    def __init__(self, count: int, size: int, loaded: float):
        self.count = count
        self.size = size  #: bytes, as the archive's ``size`` counts them
        self.loaded = loaded
        self.refused = 0  #: messages refused since the storage was last found full


def delay_stamp(when: float) -> str:
    """An XEP-0082 DateTime in UTC (``2002-09-10T23:08:25Z``), as XEP-0203 wants."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def _hint(stanza: domish.Element, name: str) -> bool:
    """Does ``stanza`` carry the XEP-0334 hint ``name``?"""
    return any(child.uri == ns.HINTS and child.name == name for child in stanza.elements())


def chat_state_only(stanza: domish.Element) -> bool:
    """True for a "standalone" XEP-0085 notification: a chat state and nothing a
    person would read (hints and ``<thread/>`` are bookkeeping, not content)."""
    state = False
    for child in stanza.elements():
        if child.uri == ns.CHATSTATES:
            state = True
        elif child.uri == ns.HINTS or (child.uri == ns.CLIENT and child.name == "thread"):
            continue
        else:
            return False
    return state


def worth_storing(stanza: domish.Element) -> bool:
    """Whether a chat/normal message for an offline user goes into storage.

    - XEP-0334 §4.2: ``<no-store/>`` forbids even temporary storage "for later
      delivery to an offline client". ``<no-permanent-store/>`` does not: §3
      says such a sender "may be happy for it to be stored temporarily as a
      normal part of delivery (e.g. if the recipient is offline at the time of
      sending)", so those are stored (archives like MAM are what it rules out).
    - XEP-0160 §3: chat messages that contain only XEP-0085 chat state
      notifications SHOULD NOT be stored offline — a "composing" read hours
      later is noise.
    - XEP-0334 §4.4: ``<store/>`` asks for storage a message would not otherwise
      get, so it overrides the chat-state rule (not ``<no-store/>``).
    """
    if _hint(stanza, "no-store"):
        return False
    if chat_state_only(stanza):
        return _hint(stanza, "store")
    return True


class OfflineComponent(Component):
    """XEP-0160 offline messages: stored per user up to a quota, delivered once."""

    name = "offline"
    features = [ns.OFFLINE]
    options = [
        Option("max_messages", integer(1), "1000",
               "offline messages kept per user; beyond that senders get service-unavailable"),
        Option("max_size", integer(0), "10485760",
               "bytes of offline messages kept per user, all together; beyond that senders "
               "get service-unavailable (0: no limit beyond max_messages)"),
    ]
    stores = {"offline": "archive"}

    #: Most messages read from the store per query while delivering.
    batch = 500
    #: Bytes read from the store per query while delivering: a batch ends with
    #: the message that reaches it, so a queue of large stanzas is never all in
    #: memory at once (a batch is at most this plus one message).
    batch_bytes = 256 * 1024

    def __init__(self, server: Any, config: dict[str, Any]):
        super().__init__(server, config)
        #: bare JID → the lock its storage operations queue on (dropped when idle)
        self._locks = KeyedLock()
        #: sessions whose delivery is under way, so a repeated event is ignored
        self._delivering: weakref.WeakSet = weakref.WeakSet()
        #: bare JID → its record, for users whose account is known to exist
        self._queues: dict[str, _Queue] = {}
        #: Users who may have stored messages (bare JID → messages submitted
        #: for them so far). Only this server stores offline messages, so once
        #: the users with stored messages have been read at start
        #: (``_waiting_known``), a login of anyone else needs no storage query.
        self._waiting: dict[str, int] = {}
        self._waiting_known = False
        #: bare JID → messages waiting for its record to be read
        self._loading: dict[str, _Loading] = {}

    def startService(self) -> None:
        super().startService()
        self._waiting_known = False
        ready = getattr(self.server, "storage_ready", None) or defer.succeed(None)
        ready.addCallback(self._storage_ready)

    def _storage_ready(self, result: Any) -> Any:
        # Not chained into storage_ready: other components wait on it too.
        def loaded(users: list[str]) -> None:
            for user in users:
                self._waiting.setdefault(user, 0)
            self._waiting_known = True
            self.log.info("{count} users have offline messages waiting", count=len(users))
        self.store["offline"].users().addCallbacks(loaded, lambda f: self.log.failure(
            "cannot list the users with offline messages; every login will look", f))
        return result

    # -- storing -------------------------------------------------------------------

    @handles("message/offline", priority=-100, ordered=False)
    def store_message(self, event: StanzaEvent):
        """Take a message for a user who has no available resource.

        ``ordered=False``: the sender's next stanza need not wait for the
        write. Appends are queued in arrival order before this returns (and
        the storage runs them in that order), which is all RFC 6120 §10.1 asks
        of messages to one contact; waiting would cap a sender at one
        message per commit.

        Runs last (priority -100) so that components that only want to observe
        the event (push notifications, an archive) see it first.
        """
        if event.type not in STORED_TYPES or event.to is None:
            return False
        user = event.to.userhost()
        # Read now: the element may be changed by others once we return.
        text = event.stanza.toXml()
        keep = worth_storing(event.stanza)
        sender = event.from_.userhost() if event.from_ is not None else None
        # Counted before anything else, so a login from now on looks in storage.
        self._waiting[user] = self._waiting.get(user, 0) + 1
        queue = self._queues.get(user)
        if user not in self._loading and queue is not None \
                and self.clock.seconds() - queue.loaded < STATE_TTL:
            result = self._append(event, user, text, keep, sender, queue)
        else:
            # The record is being read: wait for it, in arrival order.
            result = defer.Deferred()
            loading = self._loading.get(user)
            first = loading is None
            if first:
                loading = self._loading[user] = _Loading()
            loading.pending.append((event, text, keep, sender, result))
            if first:  # after queueing: a storage that answers at once is done now
                self._load(user)
        if isinstance(result, defer.Deferred):
            result.addErrback(self._store_failed, event, user)
        return result

    def _load(self, user: str) -> None:
        """Read the user's record: does the account exist (RFC 6121 §8.5.1), how
        many messages are stored. Messages that arrive meanwhile wait for it."""
        def exists(found: bool):
            if not found:
                return None
            store = self.store["offline"]
            reads = defer.gatherResults([store.count(user), store.size(user)], consumeErrors=True)
            reads.addErrback(lambda failure: failure.value.subFailure)  # the error itself
            return reads.addCallback(lambda got: _Queue(got[0], got[1], self.clock.seconds()))
        self.server.accounts.exists(user).addCallback(exists).addBoth(self._loaded, user)

    def _loaded(self, result: Any, user: str) -> None:
        loading = self._loading.pop(user)
        if isinstance(result, _Queue):
            self._queues[user] = result
        else:
            self._queues.pop(user, None)
            if result is None:
                self._waiting.pop(user, None)  # or made-up names would fill it
        # One after the other, in a loop: each append is submitted in order.
        for event, text, keep, sender, d in loading.pending:
            if isinstance(result, Failure):
                d.errback(result)
            elif result is None:
                d.callback(event.error("service-unavailable"))
            else:
                outcome = self._append(event, user, text, keep, sender, result)
                if isinstance(outcome, defer.Deferred):
                    outcome.chainDeferred(d)
                else:
                    d.callback(outcome)
        for waiter in loading.waiters:
            waiter.callback(None)

    def _append(self, event: StanzaEvent, user: str, text: str, keep: bool, sender: str | None,
                queue: _Queue):
        if not keep:
            # Dropped without an error: an error here (and only here) would tell
            # any sender, subscribed or not, that the user is offline (RFC 6121
            # §8.5.2.2.1 makes store-or-bounce a SHOULD for chat and normal).
            return True
        size = value_size(text)
        limit, max_size = self.config["max_messages"], self.config["max_size"]
        if queue.count >= limit or (max_size and queue.size + size > max_size):
            # XEP-0160 §2: a full offline queue is answered service-unavailable.
            # Logged for the first refusal and then every 1000th, not per
            # message: a flood would otherwise write a log line per stanza.
            if not queue.refused % 1000:
                self.log.info("offline storage of {user} is full ({count} messages, {size} "
                              "bytes; limits {limit} and {max_size}): refused a message of "
                              "{length} bytes from {sender} ({refused} refused before it)",
                              user=user, count=queue.count, size=queue.size, limit=limit,
                              max_size=max_size or "none", length=size, sender=sender,
                              refused=queue.refused)
            queue.refused += 1
            return event.error("service-unavailable", text=FULL_TEXT)
        queue.refused = 0
        queue.count += 1
        queue.size += size

        def failed(failure):
            queue.count -= 1
            queue.size -= size
            return failure
        return self.store["offline"].append(user, text, with_=sender,
                                                 when=self.clock.seconds()).addCallbacks(
            lambda _: True, failed)

    def _store_failed(self, failure, event: StanzaEvent, user: str):
        """The message is not stored: say so rather than let it vanish."""
        self.log.failure("cannot store an offline message for {user}", failure=failure, user=user)
        return event.error("internal-server-error")

    # -- delivering ----------------------------------------------------------------

    @handles("presence/initial", priority=-100)
    def initial_presence(self, session: Any) -> bool:
        """XEP-0160 §2: deliver stored messages to the resource that sent initial
        presence, if its priority is non-negative (a negative priority means
        "never send me messages addressed to my bare JID", RFC 6121 §4.7.2.3).

        Always returns False: other components act on initial presence too.
        """
        if not getattr(session, "available", False) or session.priority < 0:
            return False
        if session in self._delivering:
            return False
        if self._waiting_known and session.bare not in self._waiting:
            return False  # nothing stored: no need to ask the storage
        self._delivering.add(session)
        d = self._locks.run(session.bare, self._deliver, session)
        d.addErrback(lambda failure: self.log.failure(
            "cannot deliver offline messages to {jid}", failure=failure, jid=session.jid.full()))
        d.addBoth(lambda _: self._delivering.discard(session))
        return False

    def _blocked(self, user: str, sender: str | None) -> bool:
        blocking = self.server.components.get("blocking")
        if blocking is None or not sender:
            return False
        parsed = jidlib.parse_or_none(sender)
        return parsed is not None and blocking.is_blocked(user, parsed)

    @defer.inlineCallbacks
    def _deliver(self, session: Any):
        store = self.store["offline"]
        user, host = session.bare, session.jid.host
        loading = self._loading.get(user)
        if loading is not None:  # messages on their way into storage come too
            waiter: defer.Deferred = defer.Deferred()
            loading.waiters.append(waiter)
            yield waiter
        delivered = 0
        after = None
        deletes: list[defer.Deferred] = []
        complete = False
        while True:
            submitted = self._waiting.get(user)
            items = yield store.query(user, after=after, limit=self.batch,
                                      max_bytes=self.batch_bytes)
            if not items:
                complete = True
                break
            sent = []
            for item in items:
                drained = session.drained()
                if not drained.called:
                    # The client has not read what it was given yet: the next
                    # message waits here, not in its output buffer.
                    yield drained
                if not self._still_there(session):
                    break
                try:
                    stanza = parse_element(item.value)
                except Exception:
                    # Written by us, so this is damage; keeping it would block the
                    # queue for good.
                    self.log.failure("dropping a damaged offline message {id} of {user}",
                                     id=item.id, user=user)
                else:
                    if self._blocked(user, item.with_):
                        sent.append(item.id)  # XEP-0191: blocked since it was stored
                        continue
                    delay = stanza.addElement((ns.DELAY, "delay"), content=DELAY_TEXT)
                    delay["from"] = host
                    delay["stamp"] = delay_stamp(item.when)
                    self.router.deliver(stanza, session)
                    delivered += 1
                sent.append(item.id)
            if sent:
                # Only now: what was handed over goes, nothing else. The next
                # query need not wait for it: storage runs both in order.
                size = sum(item.size for item in items[:len(sent)])  # sent: a prefix
                deletes.append(store.delete(user, sent).addCallback(self._deleted, user, size))
            if len(sent) < len(items):
                break
            if len(items) < self.batch and sum(item.size for item in items) < self.batch_bytes:
                complete = True  # short of both bounds: that was everything
                break
            after = items[-1].id
        if deletes:
            # Every one of them, failed or not, before the lock is let go.
            outcomes = yield defer.DeferredList(deletes, consumeErrors=True)
            for ok, failure in outcomes:
                if not ok:
                    self.log.failure("deleting delivered offline messages of {user}",
                                     failure, user=user)
        if complete and self._waiting.get(user) == submitted:
            # Everything stored before the last query went out, and nothing was
            # stored since: this user's next login needs no query.
            self._waiting.pop(user, None)
        if delivered:
            self.log.info("delivered {count} offline message(s) to {jid}",
                          count=delivered, jid=session.jid.full())

    @handles("account-deleted")
    def _forget(self, user: str) -> None:
        """The account is gone (its storage purged): what we knew is wrong now."""
        self._queues.pop(user, None)
        self._waiting.pop(user, None)

    def _deleted(self, count: int, user: str, size: int) -> None:
        queue = self._queues.get(user)
        if queue is not None:
            queue.count = max(0, queue.count - count)
            queue.size = max(0, queue.size - size)
            if not queue.count:
                del self._queues[user]  # the next message reads storage again

    def _still_there(self, session: Any) -> bool:
        """Is ``session`` still the bound, available resource it was? (It may
        have gone while the store was being read; then the rest waits.)"""
        return bool(session.available) and \
            self.router.resources(session.bare).get(session.resource) is session
