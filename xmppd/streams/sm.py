"""XEP-0198 stream management: acknowledgements, hibernation and resumption.

A client that enables stream management counts the stanzas it handled and
the server counts the stanzas it sent; each asks the other with ``<r/>`` and
answers with ``<a h='…'/>``. What the client has not acknowledged stays in a
queue (:class:`Acks`), so that

- when the connection drops (not a clean close: a lost network, a stalled
  socket), the session *hibernates*: it stays bound and routable, what
  arrives for it joins the queue, and for ``[c2s] resume_timeout`` seconds
  the client may ``<resume/>`` it on a new connection and get every stanza
  it missed exactly once (the queue, re-sent; stanzas the client handled are
  acknowledged by the ``h`` it resumes with);
- when it does not come back, or the session ends another way with stanzas
  unacknowledged, those go where stanzas for a closed session go
  (:meth:`Router.undelivered <xmppd.router.Router.undelivered>`): messages to
  the user's other resources or offline storage (a carbons-enabled resource
  that had its copy gets no second one), iq requests answered with an error,
  presence dropped. Nothing is lost, nothing is kept without bound.

Counters are modulo 2³² (§4: ``h`` wraps). Both ``urn:xmpp:sm:3`` and the
older ``:2`` are served, as Prosody does; an exchange keeps the namespace it
was enabled with.

As Prosody's mod_smacks: the features are offered once authenticated;
``<enable/>`` before bind fails with ``unexpected-request``; ``<r/>`` or
``<a/>`` on a stream that did not enable it ends the stream
(``unsupported-stanza-type``, an element nobody serves); ``<enabled/>``
carries an id and ``max`` when resumption was asked for; queued messages and
presences get a ``<delay/>`` stamped when queued (a resent one says when it
was first sent); after each burst of output one ``<r/>`` asks for an ack,
unless one is already outstanding; ``<a/>`` with an ``h`` above what was sent
ends the stream (``undefined-condition`` with XEP-0198's
``<handled-count-too-high/>``); a resumption of an unknown, expired or
someone else's session fails with ``item-not-found`` (with the last ``h``
for one that expired recently); a clean close sends a last ``<a/>``.

Where xmppd departs from Prosody 0.12 (both allowed by the XEP): a full
queue ends the session (``resource-constraint``) and re-routes what it held,
where Prosody drops the oldest stanzas and refuses a later resumption; and a
client's ``max`` shortens the hibernation (§5: the server MAY honour it),
where Prosody always announces its own.
"""

from __future__ import annotations

import base64
import collections
import os
from typing import TYPE_CHECKING, Any, Hashable

from twisted.internet import defer
from twisted.logger import Logger
from twisted.words.xish import domish

from xmppd import ns
from xmppd.xml.stream import StreamProblem, parse_element

if TYPE_CHECKING:
    from xmppd.server import XMPPServer
    from xmppd.streams.negotiation import ClientSession

__all__ = ["Acks", "StreamManagement", "Hibernated", "DETACHED"]

MOD = 1 << 32

#: resumption ids of sessions that ended, remembered (with their last h) so
#: a late resumption learns what was handled (``<failed h='…'/>``)
MAX_EXPIRED = 10000


def _stamp(seconds: float) -> str:
    import datetime
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc) \
        .strftime("%Y-%m-%dT%H:%M:%S.%fZ").replace(".000000Z", "Z")


class Acks:
    """One session's counters and unacknowledged stanzas.

    ``queue`` holds ``(text, kind, when)`` for each stanza sent and not yet
    acknowledged, oldest first: the text as written (for the framing of
    ``shape``), its kind (message, presence, iq) and when it was sent.
    """

    __slots__ = ("xmlns", "id", "max", "handled", "sent", "queue", "awaiting", "last_requested",
                 "request_call", "hibernation", "shape")

    def __init__(self, xmlns: str, shape: Hashable):
        self.xmlns = xmlns
        #: the resumption id (None: not resumable)
        self.id: str | None = None
        #: seconds the session may hibernate
        self.max = 0
        #: stanzas of the client's handled (mod 2³²)
        self.handled = 0
        #: stanzas sent to the client (mod 2³²)
        self.sent = 0
        self.queue: collections.deque[tuple[str, str, float]] = collections.deque()
        #: an <r/> is outstanding
        self.awaiting = False
        #: the count the last <r/> asked about (no second <r/> for the same)
        self.last_requested = -1
        self.request_call = None
        #: the hibernation timer (None: not hibernating)
        self.hibernation = None
        self.shape = shape

    @property
    def acked(self) -> int:
        return (self.sent - len(self.queue)) % MOD

    def ack(self, h: int) -> bool:
        """The client handled ``h`` stanzas in all: drop those from the
        queue. False (nothing dropped) when ``h`` is more than was sent."""
        count = (h - self.acked) % MOD
        if count > len(self.queue):
            return False
        for _ in range(count):
            self.queue.popleft()
        return True


class Hibernated:
    """The framing of a session whose connection dropped: it writes nothing
    (stanzas wait in the stream management queue) and closes by ending the
    session for good."""

    starttls = False
    closed = False
    channel = "hibernating"

    def __init__(self, old: Any):
        self.address = old.address
        self.peer = old.peer
        self.secure = old.secure
        self.shape = old.shape
        self.domain = old.domain
        self._old = old
        self.session: ClientSession | None = None

    def serialize(self, element: domish.Element) -> str:
        return self._old.serialize(element)

    def send(self, element: Any) -> None:
        """Nothing to write to: the queue has it."""

    def open_stream(self) -> None:
        pass

    def restart(self) -> None:
        pass

    def start_tls(self) -> bool:
        return False

    def stream_error(self, condition: str, text: str | None = None) -> None:
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        session = self.session
        if session is not None:
            session.closing()
        self.closed = True
        if session is not None:
            session.ended()

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def drained(self) -> defer.Deferred:
        return defer.succeed(None)

    def bound(self) -> None:
        pass

    def waiting_for(self) -> str:
        return "resumption"


class _Detached:
    """What a framing a session left (on hibernation or resumption) carries
    from then on, and what a session that handed its connection to the one it
    resumed writes to: whatever either still reports is no one's business."""

    jid = user = bare = resource = sm = domain = None
    closed = True

    def __getattr__(self, name: str) -> Any:
        return _ignore


def _ignore(*_args: Any, **_kwargs: Any) -> None:
    return None


DETACHED = _Detached()


class StreamManagement:
    """XEP-0198 for the server's client sessions: the element handlers, the
    resumption registry, hibernation and its end."""

    log = Logger()

    def __init__(self, server: XMPPServer):
        self.server = server
        self.clock = server.clock
        c2s = server.config.c2s
        self.resume_timeout: int = c2s["resume_timeout"]
        self.max_unacked: int = c2s["max_unacked"]
        #: resumption id → the session it resumes
        self.resumable: dict[str, ClientSession] = {}
        #: resumption ids of ended sessions → (user, last h)
        self.expired: collections.OrderedDict[str, tuple[str, int]] = collections.OrderedDict()

    # -- features ------------------------------------------------------------------

    def features(self) -> list[domish.Element]:
        """Offered on authenticated streams (before and after bind, as Prosody)."""
        out = []
        for xmlns in (ns.SM2, ns.SM3):
            sm = domish.Element((xmlns, "sm"))
            sm.addElement("optional")
            out.append(sm)
        return out

    # -- elements --------------------------------------------------------------------

    def element(self, session: ClientSession, element: domish.Element) -> None:
        name = element.name
        if name == "enable":
            self._enable(session, element)
        elif name == "resume":
            self._resume(session, element)
        elif name == "r":
            self._r(session)
        elif name == "a":
            self._a(session, element)
        else:
            session.stream_error("unsupported-stanza-type",
                                 f"unexpected <{name}/> in {element.uri}")

    @staticmethod
    def _failed(session: ClientSession, xmlns: str, condition: str,
                h: int | None = None, why: str | None = None) -> None:
        """``<failed/>`` with the condition only, as Prosody sends it (the
        reason, ``why``, goes to the log)."""
        failed = domish.Element((xmlns, "failed"))
        if h is not None:
            failed["h"] = str(h)
        failed.addElement((ns.STANZA_ERRORS, condition))
        if why:
            session.log.debug("c2s {peer}: stream management: {why}", peer=session.peer, why=why)
        session.framing.send(failed)

    def _enable(self, session: ClientSession, element: domish.Element) -> None:
        xmlns = element.uri
        if session.sm is not None:
            self._failed(session, xmlns, "unexpected-request",
                         why="Stream management is already enabled")
            return
        if session.jid is None:
            self._failed(session, xmlns, "unexpected-request",
                         why="Client must bind a resource before enabling stream management")
            return
        acks = session.sm = Acks(xmlns, session.framing.shape)
        enabled = domish.Element((xmlns, "enabled"))
        resume = element.getAttribute("resume")
        if resume in ("true", "1") and self.resume_timeout:
            acks.id = base64.urlsafe_b64encode(os.urandom(12)).decode()
            acks.max = self.resume_timeout
            wanted = _count(element.getAttribute("max"))
            if wanted is not None and 0 < wanted < acks.max:
                acks.max = int(wanted)  # §5: the client's preference, if shorter
            self.resumable[acks.id] = session
            enabled["id"] = acks.id
            enabled["resume"] = resume
            enabled["max"] = str(acks.max)
        session.framing.send(enabled)

    def _r(self, session: ClientSession) -> None:
        acks = session.sm
        if acks is None:
            # As Prosody: nobody handles it, and an unhandled stream-level
            # element ends the stream.
            session.stream_error("unsupported-stanza-type", "stream management is not enabled")
            return
        answer = domish.Element((acks.xmlns, "a"))
        answer["h"] = str(acks.handled)
        session.framing.send(answer)
        self.request_ack(session)

    def _a(self, session: ClientSession, element: domish.Element) -> None:
        acks = session.sm
        if acks is None:
            session.stream_error("unsupported-stanza-type", "stream management is not enabled")
            return
        acks.awaiting = False
        h = _count(element.getAttribute("h"))
        if h is None:
            session.stream_error("invalid-xml", "Missing or invalid 'h' attribute")
            return
        if not acks.ack(h):
            self.log.info("c2s {jid}: acknowledged {h} stanzas, {sent} were sent",
                          jid=session.jid.full(), h=h, sent=acks.sent)
            session.stream_error("undefined-condition",
                                 "Client acknowledged more stanzas than sent by server")
            return
        self.request_ack(session)

    # -- counting --------------------------------------------------------------------

    def write(self, session: ClientSession, stanza: domish.Element | str) -> None:
        """Queue one stanza for ``session`` and write it (unless hibernating)."""
        acks = session.sm
        framing = session.framing
        if isinstance(stanza, str):
            text = stanza
            kind = _kind(text)
        else:
            text = framing.serialize(stanza)
            kind = stanza.name
        if len(acks.queue) >= self.max_unacked:
            self.log.info("c2s {jid}: {count} stanzas unacknowledged: ending the session",
                          jid=session.jid.full() if session.jid else "?", count=len(acks.queue))
            # not resumable: what it holds goes elsewhere now
            self.resumable.pop(acks.id, None)
            acks.id = None
            session.stream_error("resource-constraint", "Too many unacknowledged stanzas")
            if kind is not None:
                session.router.undelivered(kind, text.encode("utf-8"), session)
            return
        acks.queue.append((text, kind, self.clock.seconds()))
        acks.sent = (acks.sent + 1) % MOD
        if acks.hibernation is None:
            framing.send(text)
            if acks.request_call is None and not acks.awaiting:
                acks.request_call = self.clock.callLater(0, self._request_now, session)

    def _request_now(self, session: ClientSession) -> None:
        acks = session.sm
        if acks is not None:
            acks.request_call = None
            self.request_ack(session)

    def request_ack(self, session: ClientSession) -> None:
        """One ``<r/>`` after a burst of output, unless one is outstanding or
        was sent for this very count already (no ack loops)."""
        acks = session.sm
        if acks is None or acks.awaiting or acks.hibernation is not None or session.closed:
            return
        if acks.queue and acks.sent != acks.last_requested:
            acks.awaiting = True
            acks.last_requested = acks.sent
            session.framing.send(domish.Element((acks.xmlns, "r")))

    def handled(self, session: ClientSession) -> None:
        acks = session.sm
        acks.handled = (acks.handled + 1) % MOD

    # -- hibernation -----------------------------------------------------------------

    def may_hibernate(self, session: ClientSession) -> bool:
        acks = session.sm
        return acks is not None and acks.id is not None and session.jid is not None \
            and not getattr(self.server, "stopping", False)

    def hibernate(self, session: ClientSession, announce: bool = True) -> None:
        """The connection dropped: keep the session for ``max`` seconds.
        ``announce``: tell components (``resource-hibernated``); not when the
        client is resuming it this very moment from a new connection."""
        acks = session.sm
        old = session.framing
        asleep = Hibernated(old)
        asleep.session = session
        old.session = DETACHED
        session.framing = asleep
        if acks.request_call is not None and acks.request_call.active():
            acks.request_call.cancel()
        acks.request_call = None
        acks.awaiting = False
        acks.hibernation = self.clock.callLater(acks.max, self._expired, session)
        self.log.info("c2s {jid} from {peer}: connection lost, hibernating for {max} s "
                      "({count} unacknowledged)", jid=session.jid.full(), peer=old.peer,
                      max=acks.max, count=len(acks.queue))
        if announce:
            session.router.fire("resource-hibernated", session)

    def _expired(self, session: ClientSession) -> None:
        acks = session.sm
        if acks is not None:
            acks.hibernation = None
            if acks.id is not None and self.resumable.get(acks.id) is session:
                # A late resumption learns what was handled (as Prosody: for
                # sessions that timed out hibernating, not ones closed).
                del self.resumable[acks.id]
                self.expired[acks.id] = (session.user or "", acks.handled)
                while len(self.expired) > MAX_EXPIRED:
                    self.expired.popitem(last=False)
        self.log.info("c2s {jid}: not resumed in time, ending the session",
                      jid=session.jid.full() if session.jid else "?")
        session.framing.close()

    def ended(self, session: ClientSession) -> None:
        """The session ends for good: forget its resumption (remembering its
        last h a while) and hand what the client did not acknowledge on."""
        acks = session.sm
        if acks is None:
            return
        session.sm = None
        if acks.hibernation is not None and acks.hibernation.active():
            acks.hibernation.cancel()
        acks.hibernation = None
        if acks.request_call is not None and acks.request_call.active():
            acks.request_call.cancel()
        if acks.id is not None and self.resumable.get(acks.id) is session:
            del self.resumable[acks.id]
        router = session.router
        for text, kind, _when in acks.queue:
            if kind in ("message", "iq"):
                router.undelivered(kind, text.encode("utf-8"), session)

    def final_ack(self, session: ClientSession) -> None:
        """A clean close: the client learns what was handled (XEP-0198 §4)."""
        acks = session.sm
        if acks is not None and acks.hibernation is None and not session.closed:
            answer = domish.Element((acks.xmlns, "a"))
            answer["h"] = str(acks.handled)
            session.framing.send(answer)

    # -- resumption ------------------------------------------------------------------

    def _resume(self, session: ClientSession, element: domish.Element) -> None:
        xmlns = element.uri
        if session.jid is not None:
            self._failed(session, xmlns, "unexpected-request",
                         why="Tried to resume after resource binding")
            return
        if session.sm is not None:
            self._failed(session, xmlns, "unexpected-request")
            return
        previd = element.getAttribute("previd") or ""
        old = self.resumable.get(previd)
        if old is not None and old.sm is None:  # ended meanwhile (never left behind)
            self.resumable.pop(previd, None)
            old = None
        if old is None or old.user != session.user or old.domain != session.domain:
            expired = self.expired.get(previd)
            if expired is not None and expired[0] == session.user:
                del self.expired[previd]
                self._failed(session, xmlns, "item-not-found", h=expired[1])
            else:
                self._failed(session, xmlns, "item-not-found")
            return
        h = _count(element.getAttribute("h"))
        acks = old.sm
        if h is None or not acks.ack(h):
            # §4: h beyond what was sent: the old session cannot be trusted
            # with; it ends (its queue goes where undelivered stanzas go).
            self._failed(session, xmlns, "undefined-condition", h=acks.handled,
                         why="Client acknowledged more stanzas than sent by server")
            old.framing.close()
            return
        if acks.hibernation is None:
            # Its connection is still up as far as we know (a half-dead TCP
            # link): it is the one the client gave up on.
            framing = old.framing
            self.hibernate(old, announce=False)
            framing.close()
        if acks.hibernation is not None and acks.hibernation.active():
            acks.hibernation.cancel()
        acks.hibernation = None
        new = session.framing
        session.adopted_by(old)
        old.adopt(new)
        resumed = domish.Element((xmlns, "resumed"))
        # Stanzas the old connection delivered that still wait behind a
        # handler's storage work are handled already as far as the client
        # is concerned: they will be, in order, and must not come twice.
        resumed["h"] = str((acks.handled + old.pending_stanzas()) % MOD)
        resumed["previd"] = previd
        new.send(resumed)
        reshape = acks.shape != new.shape
        acks.shape = new.shape
        if acks.queue:
            owner = old.jid.userhost()
            # All of it back in the queue before the first write: a write
            # that overflows the new connection ends the session, and its
            # end must find every stanza still unacknowledged.
            resend = [(self._resent(text, kind, when, owner, new, reshape), kind, when)
                      for text, kind, when in acks.queue]
            acks.queue.clear()
            acks.queue.extend(resend)
            for text, _kind, _when in resend:
                if new.closed or old.sm is not acks:
                    break
                new.send(text)
        self.log.info("c2s {jid} resumed from {peer} ({count} stanzas re-sent)",
                      jid=old.jid.full(), peer=new.peer, count=len(acks.queue))
        acks.awaiting = False
        acks.last_requested = -1
        self.request_ack(old)
        old.router.fire("resource-resumed", old)

    @staticmethod
    def _resent(text: str, kind: str | None, when: float, owner: str, framing: Any,
                reshape: bool) -> str:
        """A queued stanza as re-sent: with the ``<delay/>`` of when it was
        first sent (messages and presences that carry none, as Prosody),
        serialised for the new framing if it writes another shape."""
        if kind == "iq" and not reshape:
            return text
        try:
            element = parse_element(text, max_size=len(text) + 1024)
        except (ValueError, StreamProblem):
            return text
        if kind != "iq" and not any(c.uri == ns.DELAY and c.name == "delay"
                                    for c in element.elements()):
            delay = element.addElement((ns.DELAY, "delay"))
            delay["from"] = owner
            delay["stamp"] = _stamp(when)
        return framing.serialize(element)


def _count(value: str | None) -> int | None:
    if value is None or not (value.isascii() and value.isdigit()):
        return None
    number = int(value)
    return number if number < MOD else None


def _kind(text: str) -> str | None:
    """The stanza kind of a serialised stanza (its element name)."""
    end = 1
    length = len(text)
    while end < length and text[end] not in " />\t\r\n":
        end += 1
    name = text[1:end]
    name = name.rpartition(":")[2]
    return name if name in ns.STANZA_KINDS else None
