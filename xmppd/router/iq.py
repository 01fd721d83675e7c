"""Outgoing iqs with tracked results: send a request, get a Deferred.

Components ask clients and servers things (a caps hash to verify, a MUC
self-ping, an s2s ping). :meth:`IQTracker.request` sends the iq and returns a
Deferred that fires with the ``result`` or ``error`` stanza that answers it,
or fails with :class:`IQTimeout`. An answer counts only if its id *and* the
JID it comes from match the request (RFC 6120 §8.2.3 has the responder
answer from the address it was asked at), so another entity that guesses an
id cannot answer in its place: its forged result is routed like any other
stanza (and, sent to a server address, dropped).

The router offers every incoming result and error to :meth:`IQTracker.match`
before anything else; the cost when nothing is pending is one truth test.
"""

from __future__ import annotations

import secrets
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.words.xish import domish

from xmppd import jid as jidlib

#: Seconds an answer may take by default (Prosody's s2s and caps queries use
#: about as long).
DEFAULT_TIMEOUT = 30.0
#: Requests waiting at once, server-wide; beyond it a request fails at once
#: rather than growing a table without bound.
MAX_PENDING = 10_000


class IQTimeout(Exception):
    """No answer came in time (or the request was refused: too many pending)."""


class IQTracker:
    """The table of iqs sent and not yet answered."""

    def __init__(self, router: Any, clock: IReactorTime, max_pending: int = MAX_PENDING):
        self.router = router
        self.clock = clock
        self.max_pending = max_pending
        #: (id, responder JID text, our JID text) → (Deferred, timer)
        self._pending: dict[tuple[str, str, str], tuple[defer.Deferred, Any]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def request(self, stanza: domish.Element, timeout: float = DEFAULT_TIMEOUT) -> defer.Deferred:
        """Route ``stanza`` (an iq get or set with 'to' and 'from') and return
        a Deferred for its answer. An id is made when it has none. Cancelling
        the Deferred forgets the request."""
        if stanza.getAttribute("type") not in ("get", "set"):
            raise ValueError("only an iq get or set has an answer to track")
        to, from_ = stanza.getAttribute("to"), stanza.getAttribute("from")
        if to is None or from_ is None:
            raise ValueError("a tracked iq needs 'to' and 'from'")
        for address in (to, from_):
            if jidlib.parse_or_none(address) is None:
                # its bounce could never be matched: fail now, not at the timeout
                raise ValueError(f"{address!r} is not a valid JID")
        if len(self._pending) >= self.max_pending:
            return defer.fail(IQTimeout(f"{self.max_pending} iqs are waiting for answers already"))
        if not stanza.getAttribute("id"):
            stanza["id"] = secrets.token_hex(8)
        key = (stanza["id"], _normal(to), _normal(from_))
        if key in self._pending:
            raise ValueError(f"iq {stanza['id']} to {to} is pending already")

        def cancelled(d: defer.Deferred) -> None:
            entry = self._pending.pop(key, None)
            if entry is not None and entry[1].active():
                entry[1].cancel()

        d: defer.Deferred = defer.Deferred(cancelled)
        timer = self.clock.callLater(timeout, self._expire, key, timeout)
        self._pending[key] = (d, timer)
        try:
            self.router.route(stanza)
        except BaseException:
            self._pending.pop(key, None)
            timer.cancel()
            raise
        return d

    def _expire(self, key: tuple[str, str, str], timeout: float) -> None:
        entry = self._pending.pop(key, None)
        if entry is not None:
            entry[0].errback(IQTimeout(f"no answer from {key[1]} to iq {key[0]} "
                                       f"within {timeout:g} s"))

    def match(self, stanza: domish.Element, from_: Any) -> bool:
        """Is ``stanza`` (a result or error) the answer to a request? Then
        fire its Deferred and return True: it goes nowhere else."""
        if not self._pending:
            return False
        sid, to = stanza.getAttribute("id"), stanza.getAttribute("to")
        if sid is None or to is None or from_ is None:
            return False
        entry = self._pending.pop((sid, from_.full(), _normal(to)), None)
        if entry is None:
            return False
        d, timer = entry
        if timer.active():
            timer.cancel()
        d.callback(stanza)
        return True


def _normal(text: str) -> str:
    """A JID as the router compares it (prepped), so case does not matter."""
    parsed = jidlib.parse_or_none(text)
    return parsed.full() if parsed is not None else text
