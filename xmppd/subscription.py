"""The presence subscription state machine of RFC 6121 §3 and Appendix A.

The state of one contact in a user's roster is the subscription (``none``,
``to``, ``from``, ``both``) plus two flags: *pending out* (the user asked for
the contact's presence and waits) and *pending in* (the contact asked for the
user's and waits). Of the 16 combinations the RFC allows nine; the others
cannot arise (you do not wait for what you already have).

Two pure functions answer the two questions a server asks, and hold no I/O so
that the RFC's tables can be checked against them exhaustively:

- :func:`outbound`: the user sent a subscription stanza to the contact.
- :func:`inbound`: a subscription stanza from the contact reached the user.

Both return the new state and what to do with the stanza. The same code
serves a contact on this server and one on another (the caller only decides
how to route), so federation needs nothing new here.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["State", "Outcome", "outbound", "inbound", "STATES", "TYPES"]

TYPES = ("subscribe", "subscribed", "unsubscribe", "unsubscribed")


class State(NamedTuple):
    """One contact's subscription state as a user's roster records it."""

    subscription: str = "none"  #: none | to | from | both
    pending_out: bool = False
    pending_in: bool = False

    @property
    def to(self) -> bool:
        """The user receives the contact's presence."""
        return self.subscription in ("to", "both")

    @property
    def from_(self) -> bool:
        """The contact receives the user's presence."""
        return self.subscription in ("from", "both")

    def __str__(self) -> str:  # the RFC's own names, for messages and tests
        name = self.subscription.capitalize()
        pending = [w for w, on in (("Out", self.pending_out), ("In", self.pending_in)) if on]
        return name + (" + Pending " + "+".join(pending) if pending else "")


def _make(to: bool, from_: bool, pending_out: bool, pending_in: bool) -> State:
    subscription = {(False, False): "none", (True, False): "to",
                    (False, True): "from", (True, True): "both"}[(to, from_)]
    # Nobody waits for what they already have.
    return State(subscription, pending_out and not to, pending_in and not from_)


#: The nine states RFC 6121 Appendix A names.
STATES = tuple(State(*s) for s in (
    ("none", False, False), ("none", True, False), ("none", False, True), ("none", True, True),
    ("to", False, False), ("to", False, True),
    ("from", False, False), ("from", True, False),
    ("both", False, False),
))


class Outcome(NamedTuple):
    """What processing one subscription stanza decided."""

    state: State  #: the new state (may equal the old one)
    forward: bool  #: outbound: route the stanza on; inbound: deliver it to the user
    auto_reply: str | None = None  #: inbound: answer the contact with this type now
    pre_approved: bool = False  #: outbound: record a pre-approval (RFC 6121 §3.4)


def outbound(state: State, stype: str) -> Outcome:
    """The user sends ``stype`` to the contact (RFC 6121 Appendix A.2).

    Every outbound stanza is routed on except a ``subscribed`` with no request
    pending — a pre-approval, recorded and kept back (§3.4) — and an
    ``unsubscribed`` with nothing to cancel (§3.2.2).
    """
    to, from_, out, in_ = state.to, state.from_, state.pending_out, state.pending_in
    if stype == "subscribe":
        new = _make(to, from_, out or not to, in_)
    elif stype == "unsubscribe":
        new = _make(False, from_, False, in_)
    elif stype == "subscribed":
        if not in_:
            return Outcome(state, forward=False, pre_approved=not from_)
        new = _make(to, True, out, False)
    elif stype == "unsubscribed":
        if not from_ and not in_:
            # Nothing to cancel but perhaps a pre-approval (the caller drops it):
            # §3.2.2 says not to route it.
            return Outcome(state, forward=False)
        new = _make(to, False, out, False)
    else:
        raise ValueError(f"not a subscription type: {stype!r}")
    return Outcome(new, forward=True)


def inbound(state: State, stype: str, approved: bool = False) -> Outcome:
    """A ``stype`` stanza from the contact reaches the user (RFC 6121 Appendix A.3).

    The stanza is delivered to the user only when it changes the state. A
    ``subscribe`` from a contact who already has the user's presence is
    answered ``subscribed`` at once, as is one the user pre-approved.

    An ``unsubscribe`` is not answered ``unsubscribed`` automatically, though
    Table 7's footnote says SHOULD: as in Prosody, the user's client decides,
    and an automatic answer can cancel a new request crossing it in flight.
    """
    to, from_, out, in_ = state.to, state.from_, state.pending_out, state.pending_in
    if stype == "subscribe":
        if from_:
            return Outcome(state, forward=False, auto_reply="subscribed")
        if approved:
            return Outcome(_make(to, True, out, False), forward=False, auto_reply="subscribed")
        new = _make(to, from_, out, True)
    elif stype == "unsubscribe":
        new = _make(to, False, out, False)
    elif stype == "subscribed":
        new = _make(to or out, from_, False, in_) if out else state
    elif stype == "unsubscribed":
        new = _make(False, from_, False, in_)
    else:
        raise ValueError(f"not a subscription type: {stype!r}")
    return Outcome(new, forward=new != state)
