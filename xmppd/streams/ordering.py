"""In-order processing (RFC 6120 §10.1) and read backpressure, for any
stream whose stanzas the router handles: a client session
(:class:`~xmppd.streams.negotiation.ClientSession`) and an incoming s2s
stream (:class:`~xmppd.streams.s2s.inbound.InboundStream`).

A handler whose storage work has not finished holds the stream
(:meth:`OrderedInput.hold`, called by the router): stanzas read meanwhile
wait in an *inbox*, in order, and are processed once every hold is
released, so a later stanza never sees older state than an earlier one
wrote. Past :data:`MAX_INBOX` waiting stanzas, reading stops. Reading also
stops for as long as anyone asks (:meth:`OrderedInput.pause_reading` with
who asks: the inbox, a congested recipient, a rate limit), until each of
them resumes.
"""

from __future__ import annotations

import collections
from typing import Any

from twisted.internet import defer
from twisted.words.xish import domish

#: Stanzas read but not yet processed (waiting behind a handler's storage
#: work) beyond which the stream stops reading from its peer.
MAX_INBOX = 64

#: The marker in the inbox for what is not a stanza: the peer's closing tag.
END = object()


class OrderedInput:
    """The inbox, holds and pausers of one stream.

    A subclass provides ``closed``, ``close()``, ``_process(element)`` (one
    stanza, now), ``_stop_reading()`` and ``_start_reading()`` (its
    transport's), and may set ``_congested`` (its own output is backed up:
    the inbox waits too)."""

    _inbox: collections.deque | None = None
    _holds = 0
    _running = False
    #: who asked us to stop reading (made when first needed: an idle
    #: connection should cost little)
    _pausers: set[Any] | None = None
    _congested = False
    closed = False

    def hold(self, work: defer.Deferred) -> None:
        """Process the next stanza only once ``work`` (the storage work of
        a handler of an earlier one) has finished. The router calls this for
        every handler result that has not fired yet."""
        self._holds += 1
        if self._inbox is None:
            self._inbox = collections.deque()
        work.addBoth(self._released)

    def _released(self, result: Any) -> Any:
        self._holds -= 1
        if not self._holds:
            self._run_inbox()
        return result

    def element_received(self, element: domish.Element) -> None:
        if self._inbox is not None:
            self._inbox.append(element)
            if len(self._inbox) >= MAX_INBOX:
                self.pause_reading("inbox")
            return
        self._process(element)

    def stream_closed(self) -> None:
        if self._inbox is not None:
            self._inbox.append(END)
        else:
            self.close()

    def _run_inbox(self) -> None:
        """Process waiting stanzas in order until one holds the stream again
        (or our own output is congested: a peer that does not read its
        answers gets no more of them until it does)."""
        if self._running or self._inbox is None:
            return
        self._running = True
        try:
            inbox = self._inbox
            while inbox and not self._holds and not self._congested and not self.closed:
                element = inbox.popleft()
                if element is END:
                    self.close()
                    break
                self._process(element)
            if not self._holds and not self.closed and not inbox:
                self._inbox = None
                self.resume_reading("inbox")
        finally:
            self._running = False

    def pause_reading(self, by: Any) -> None:
        """Stop reading from the peer until every ``by`` that asked resumes."""
        if self.closed:
            return
        if not self._pausers:
            self._stop_reading()
            self._pausers = set()
        self._pausers.add(by)

    def resume_reading(self, by: Any) -> None:
        if not self._pausers or by not in self._pausers:
            return
        self._pausers.discard(by)
        if not self._pausers and not self.closed:
            self._start_reading()

    def _process(self, element: domish.Element) -> None:
        raise NotImplementedError

    def _stop_reading(self) -> None:
        raise NotImplementedError

    def _start_reading(self) -> None:
        raise NotImplementedError
