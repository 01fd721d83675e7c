"""xmppd.subscription against RFC 6121 Appendix A, row by row, plus properties.

The eight tables of RFC 6121 (March 2011) Appendix A.2 (Tables 2-5, outbound)
and A.3 (Tables 6-9, inbound) are transcribed below by hand, as literal data
keyed by the RFC's own state names, and not derived from the module under
test: a wrong row in ``xmppd/subscription.py`` cannot then hide behind a
helper it shares with its test. Every row is a test case.

The property tests then check what the tables imply without saying it: the
nine states are closed under every stanza, an inbound stanza reaches the user
exactly when it changes something, and two servers that each keep their own
half of one subscription (user U's record of contact C, C's record of U)
never disagree when every stanza they exchange arrives, in order.
"""

from collections import deque

import pytest
from hypothesis import given, settings, strategies as st

from xmppd.subscription import STATES, TYPES, Outcome, State, inbound, outbound

# -- RFC 6121 Appendix A.1: the nine states ------------------------------------------

#: The RFC's name of each state (A.1, items 1-9) and the State that stands for it.
#: Note item 4: RFC 6121 spells it "None + Pending Out+In"; "None + Pending Out/In"
#: is the older RFC 3921 §9 spelling.
RFC_STATES = {
    "None": State("none", pending_out=False, pending_in=False),
    "None + Pending Out": State("none", pending_out=True, pending_in=False),
    "None + Pending In": State("none", pending_out=False, pending_in=True),
    "None + Pending Out+In": State("none", pending_out=True, pending_in=True),
    "To": State("to", pending_out=False, pending_in=False),
    "To + Pending In": State("to", pending_out=False, pending_in=True),
    "From": State("from", pending_out=False, pending_in=False),
    "From + Pending Out": State("from", pending_out=True, pending_in=False),
    "Both": State("both", pending_out=False, pending_in=False),
}

MUST = "MUST"
MN = "M.N."  # MUST NOT
SN = "S.N."  # SHOULD NOT
NO_CHANGE = "no state change"
PRE_APPROVAL = "pre-approval"

# -- RFC 6121 Appendix A.2: outbound stanzas, EXISTING STATE: (ROUTE?, NEW STATE) -------

#: A.2.1, Table 2: Processing of outbound "subscribe" stanzas.
OUT_SUBSCRIBE = {
    "None": (MUST, "None + Pending Out"),
    "None + Pending Out": (MUST, NO_CHANGE),
    "None + Pending In": (MUST, "None + Pending Out+In"),
    "None + Pending Out+In": (MUST, NO_CHANGE),
    "To": (MUST, NO_CHANGE),
    "To + Pending In": (MUST, NO_CHANGE),
    "From": (MUST, "From + Pending Out"),
    "From + Pending Out": (MUST, NO_CHANGE),
    "Both": (MUST, NO_CHANGE),
}

#: A.2.2, Table 3: Processing of outbound "unsubscribe" stanzas.
OUT_UNSUBSCRIBE = {
    "None": (MUST, NO_CHANGE),
    "None + Pending Out": (MUST, "None"),
    "None + Pending In": (MUST, NO_CHANGE),
    "None + Pending Out+In": (MUST, "None + Pending In"),
    "To": (MUST, "None"),
    "To + Pending In": (MUST, "None + Pending In"),
    "From": (MUST, NO_CHANGE),
    "From + Pending Out": (MUST, "From"),
    "Both": (MUST, "From"),
}

#: A.2.3, Table 4: Processing of outbound "subscribed" stanzas
#: ([1] pre-approval: see Section 3.4).
OUT_SUBSCRIBED = {
    "None": (MN, PRE_APPROVAL),
    "None + Pending Out": (MN, PRE_APPROVAL),
    "None + Pending In": (MUST, "From"),
    "None + Pending Out+In": (MUST, "From + Pending Out"),
    "To": (MN, PRE_APPROVAL),
    "To + Pending In": (MUST, "Both"),
    "From": (MN, NO_CHANGE),
    "From + Pending Out": (MN, NO_CHANGE),
    "Both": (MN, NO_CHANGE),
}

#: A.2.4, Table 5: Processing of outbound "unsubscribed" stanzas
#: ([1] on the S.N. rows: can cancel a pre-approval, Section 3.4).
OUT_UNSUBSCRIBED = {
    "None": (SN, NO_CHANGE),
    "None + Pending Out": (SN, NO_CHANGE),
    "None + Pending In": (MUST, "None"),
    "None + Pending Out+In": (MUST, "None + Pending Out"),
    "To": (SN, NO_CHANGE),
    "To + Pending In": (MUST, "To"),
    "From": (MUST, "None"),
    "From + Pending Out": (MUST, "None + Pending Out"),
    "Both": (MUST, "To"),
}

# -- RFC 6121 Appendix A.3: inbound stanzas, EXISTING STATE: (DELIVER?, NEW STATE,
#    auto-reply the footnotes ask for) -------------------------------------------------

#: A.3.1, Table 6: Processing of inbound "subscribe" stanzas
#: ([2] Server SHOULD auto-reply with "subscribed").
IN_SUBSCRIBE = {
    "None": (MUST, "None + Pending In", None),
    "None + Pending Out": (MUST, "None + Pending Out+In", None),
    "None + Pending In": (SN, NO_CHANGE, None),
    "None + Pending Out+In": (SN, NO_CHANGE, None),
    "To": (MUST, "To + Pending In", None),
    "To + Pending In": (SN, NO_CHANGE, None),
    "From": (SN, NO_CHANGE, "subscribed"),
    "From + Pending Out": (SN, NO_CHANGE, "subscribed"),
    "Both": (SN, NO_CHANGE, "subscribed"),
}

#: A.3.2, Table 7: Processing of inbound "unsubscribe" stanzas
#: ([1] Server SHOULD auto-reply with "unsubscribed").
IN_UNSUBSCRIBE = {
    "None": (SN, NO_CHANGE, None),
    "None + Pending Out": (SN, NO_CHANGE, None),
    "None + Pending In": (MUST, "None", "unsubscribed"),
    "None + Pending Out+In": (MUST, "None + Pending Out", "unsubscribed"),
    "To": (SN, NO_CHANGE, None),
    "To + Pending In": (MUST, "To", "unsubscribed"),
    "From": (MUST, "None", "unsubscribed"),
    "From + Pending Out": (MUST, "None + Pending Out", "unsubscribed"),
    "Both": (MUST, "To", "unsubscribed"),
}

#: A.3.3, Table 8: Processing of inbound "subscribed" stanzas.
IN_SUBSCRIBED = {
    "None": (SN, NO_CHANGE, None),
    "None + Pending Out": (MUST, "To", None),
    "None + Pending In": (SN, NO_CHANGE, None),
    "None + Pending Out+In": (MUST, "To + Pending In", None),
    "To": (SN, NO_CHANGE, None),
    "To + Pending In": (SN, NO_CHANGE, None),
    "From": (SN, NO_CHANGE, None),
    "From + Pending Out": (MUST, "Both", None),
    "Both": (SN, NO_CHANGE, None),
}

#: A.3.4, Table 9: Processing of inbound "unsubscribed" stanzas.
IN_UNSUBSCRIBED = {
    "None": (SN, NO_CHANGE, None),
    "None + Pending Out": (MUST, "None", None),
    "None + Pending In": (SN, NO_CHANGE, None),
    "None + Pending Out+In": (MUST, "None + Pending In", None),
    "To": (MUST, "None", None),
    "To + Pending In": (MUST, "None + Pending In", None),
    "From": (SN, NO_CHANGE, None),
    "From + Pending Out": (MUST, "From", None),
    "Both": (MUST, "From", None),
}

OUTBOUND_TABLES = {
    "subscribe": ("A.2.1", OUT_SUBSCRIBE),
    "unsubscribe": ("A.2.2", OUT_UNSUBSCRIBE),
    "subscribed": ("A.2.3", OUT_SUBSCRIBED),
    "unsubscribed": ("A.2.4", OUT_UNSUBSCRIBED),
}
INBOUND_TABLES = {
    "subscribe": ("A.3.1", IN_SUBSCRIBE),
    "unsubscribe": ("A.3.2", IN_UNSUBSCRIBE),
    "subscribed": ("A.3.3", IN_SUBSCRIBED),
    "unsubscribed": ("A.3.4", IN_UNSUBSCRIBED),
}


def _expected(existing: str, new: str) -> State:
    return RFC_STATES[existing] if new in (NO_CHANGE, PRE_APPROVAL) else RFC_STATES[new]


def _rows(tables, marks=None):
    """One pytest.param per row, named after its RFC section and state."""
    marks = marks or {}
    for stype, (section, table) in tables.items():
        for existing, row in table.items():
            yield pytest.param(stype, existing, *row, id=f"{section} {stype} {existing!r}",
                               marks=marks.get((stype, existing), ()))


# -- the outbound tables --------------------------------------------------------------

@pytest.mark.parametrize("stype, existing, route, new", list(_rows(OUTBOUND_TABLES)))
def test_outbound_stanza_moves_to_the_state_of_rfc_6121_appendix_a2(stype, existing, route, new):
    outcome = outbound(RFC_STATES[existing], stype)
    assert isinstance(outcome, Outcome)
    assert outcome.state == _expected(existing, new)
    assert outcome.auto_reply is None  # only inbound processing answers for the user


@pytest.mark.parametrize("stype, existing, route, new", list(_rows(OUTBOUND_TABLES)))
def test_outbound_stanza_is_routed_as_rfc_6121_appendix_a2_says(stype, existing, route, new):
    """ROUTE? MUST means forwarded; M.N. and S.N. mean kept back."""
    assert outbound(RFC_STATES[existing], stype).forward is (route == MUST)


@pytest.mark.parametrize("stype, existing, route, new", list(_rows(OUTBOUND_TABLES)))
def test_only_table_4_pre_approval_rows_record_a_pre_approval(stype, existing, route, new):
    assert outbound(RFC_STATES[existing], stype).pre_approved is (new == PRE_APPROVAL)


# -- the inbound tables ---------------------------------------------------------------

@pytest.mark.parametrize("stype, existing, deliver, new, reply", list(_rows(INBOUND_TABLES)))
def test_inbound_stanza_moves_to_the_state_of_rfc_6121_appendix_a3(stype, existing, deliver,
                                                                   new, reply):
    assert inbound(RFC_STATES[existing], stype).state == _expected(existing, new)


@pytest.mark.parametrize("stype, existing, deliver, new, reply", list(_rows(INBOUND_TABLES)))
def test_inbound_stanza_is_delivered_as_rfc_6121_appendix_a3_says(stype, existing, deliver,
                                                                  new, reply):
    """DELIVER? MUST means delivered to the user; S.N. means not."""
    assert inbound(RFC_STATES[existing], stype).forward is (deliver == MUST)


@pytest.mark.parametrize("stype, existing, deliver, new, reply", list(_rows(INBOUND_TABLES)))
def test_inbound_stanza_is_auto_answered_as_rfc_6121_appendix_a3_footnotes_say(
        stype, existing, deliver, new, reply):
    outcome = inbound(RFC_STATES[existing], stype)
    if stype == "unsubscribe":
        # A deliberate departure from Table 7's footnote [1] (a SHOULD), as in
        # Prosody: see inbound()'s docstring. The client answers, not the server.
        reply = None
    assert outcome.auto_reply == reply
    assert outcome.pre_approved is False  # pre-approval is an outbound matter


# -- pre-approval, RFC 6121 §3.4 ------------------------------------------------------

@pytest.mark.parametrize("existing", ["None", "None + Pending Out", "To"])
def test_outbound_subscribed_with_no_request_pending_is_a_pre_approval_kept_back(existing):
    """§3.4.2 item 3: note the pre-approval, MUST NOT route the stanza, and the
    subscription itself does not change until the contact asks."""
    state = RFC_STATES[existing]
    assert outbound(state, "subscribed") == Outcome(state, forward=False, pre_approved=True)


@pytest.mark.parametrize("existing", ["Both", "From", "From + Pending Out"])
def test_outbound_subscribed_to_a_subscriber_is_silently_ignored(existing):
    """§3.4.2 item 1: the contact already has the user's presence, so there is
    nothing to approve in advance either."""
    state = RFC_STATES[existing]
    assert outbound(state, "subscribed") == Outcome(state, forward=False, pre_approved=False)


@pytest.mark.parametrize("existing, new", [
    ("None", "From"),                              # A.3.1 Table 6 footnote [1]
    ("None + Pending Out", "From + Pending Out"),  # §3.4.2: the contact now has it
    ("To", "Both"),
])
def test_pre_approved_inbound_subscribe_is_answered_subscribed_not_delivered(existing, new):
    """§3.4.2 (last paragraph): with 'approved' set the server MUST NOT deliver the
    subscribe but MUST answer 'subscribed' for the user, who thereby grants it."""
    outcome = inbound(RFC_STATES[existing], "subscribe", approved=True)
    assert outcome == Outcome(RFC_STATES[new], forward=False, auto_reply="subscribed")


@pytest.mark.parametrize("existing", ["From", "From + Pending Out", "Both"])
def test_pre_approval_changes_nothing_for_a_contact_already_subscribed(existing):
    """§3.1.3 rule 2: the existing subscription is the reason to auto-reply."""
    state = RFC_STATES[existing]
    assert inbound(state, "subscribe", approved=True) == Outcome(
        state, forward=False, auto_reply="subscribed")


@pytest.mark.parametrize("stype", ["subscribed", "unsubscribe", "unsubscribed"])
@pytest.mark.parametrize("existing", list(RFC_STATES))
def test_approval_flag_only_matters_for_inbound_subscribe(stype, existing):
    state = RFC_STATES[existing]
    assert inbound(state, stype, approved=True) == inbound(state, stype)


@pytest.mark.parametrize("stype", ["probe", "available", "", "SUBSCRIBE"])
def test_a_type_that_is_not_a_subscription_type_is_refused(stype):
    with pytest.raises(ValueError):
        outbound(State(), stype)
    with pytest.raises(ValueError):
        inbound(State(), stype)


# -- names ----------------------------------------------------------------------------

def test_the_nine_states_are_exactly_those_of_rfc_6121_appendix_a1():
    assert len(STATES) == len(set(STATES)) == 9
    assert set(STATES) == set(RFC_STATES.values())
    assert State() == RFC_STATES["None"]  # an unknown contact counts as "None" (A.1 note)


def test_the_four_types_are_the_subscription_types_of_appendix_a():
    assert sorted(TYPES) == sorted(OUTBOUND_TABLES) == sorted(INBOUND_TABLES)


@pytest.mark.parametrize("name, state", [
    pytest.param(name, state, id=name) for name, state in RFC_STATES.items()
])
def test_str_of_a_state_is_its_rfc_6121_name(name, state):
    assert str(state) == name


@pytest.mark.parametrize("name, state", list(RFC_STATES.items()), ids=list(RFC_STATES))
def test_to_and_from_flags_follow_the_subscription(name, state):
    """A.1: "To" and "Both" receive the contact's presence; "From" and "Both"
    send the user's."""
    assert state.to is name.startswith(("To", "Both"))
    assert state.from_ is name.startswith(("From", "Both"))


# -- properties -----------------------------------------------------------------------

states = st.sampled_from(STATES)
types = st.sampled_from(TYPES)
#: One stanza as one server sees it: ("out", type, _) the user sent it, ("in", type,
#: approved) it came from the contact, with or without a pre-approval on record.
stanzas = st.tuples(st.sampled_from(["out", "in"]), types, st.booleans())


def _apply(state: State, stanza) -> Outcome:
    direction, stype, approved = stanza
    if direction == "out":
        return outbound(state, stype)
    return inbound(state, stype, approved=approved)


def test_every_state_is_reachable_from_none_and_no_tenth_state_is():
    """Exhaustive closure from "None" under all four types both ways (with and
    without a pre-approval): Appendix A's nine states, no more, no fewer."""
    seen, todo = {State()}, [State()]
    while todo:
        state = todo.pop()
        for stype in TYPES:
            for outcome in (outbound(state, stype), inbound(state, stype),
                            inbound(state, stype, approved=True)):
                if outcome.state not in seen:
                    seen.add(outcome.state)
                    todo.append(outcome.state)
    assert seen == set(STATES)


@given(states, st.lists(stanzas, max_size=40))
@settings(max_examples=300, deadline=None)
def test_any_sequence_of_stanzas_stays_within_the_nine_states(start, sequence):
    state = start
    for stanza in sequence:
        state = _apply(state, stanza).state
        assert state in STATES, (start, sequence, state)


@given(states, types, st.booleans())
@settings(deadline=None)
def test_inbound_stanza_is_delivered_iff_it_changes_the_state_unless_answered(
        state, stype, approved):
    """A.3.2-A.3.4 prose: "(because there is no state change) SHOULD NOT deliver";
    a stanza the server answers itself (A.3.1 [1], [2], §3.4) is not delivered
    even when the answer changes the state."""
    outcome = inbound(state, stype, approved=approved)
    if outcome.auto_reply is None:
        assert outcome.forward is (outcome.state != state)
    else:
        assert outcome.forward is False
        assert (stype, outcome.auto_reply) == ("subscribe", "subscribed")
        assert outcome.state.from_  # answering "subscribed" grants the subscription


@given(states, types)
@settings(deadline=None)
def test_outbound_stanza_is_routed_unless_it_is_a_subscribed_nobody_asked_for(state, stype):
    """A.2: every row routes (MUST) except Table 4's M.N. rows, which are exactly
    those without a pending inbound request, and Table 5's S.N. rows, those
    with nothing to cancel."""
    outcome = outbound(state, stype)
    kept_back = stype in ("subscribed", "unsubscribed") and not state.pending_in \
        and not (stype == "unsubscribed" and state.from_)
    assert outcome.forward is not kept_back
    assert not (kept_back and outcome.state != state)


# -- two servers, one subscription ----------------------------------------------------

class Side:
    """One server's record of the other party: the State plus the 'approved'
    flag of §3.4, kept the way xmppd's roster keeps it (set by a pre-approval,
    cleared by an outbound 'unsubscribed' per §3.2.2 item 2, and, if
    ``consume_approval``, used up once the subscription it allowed exists —
    §3.4.2's implementation note leaves that choice to the server)."""

    def __init__(self, name: str, consume_approval: bool):
        self.name, self.consume_approval = name, consume_approval
        self.state, self.approved = State(), False

    def settle(self) -> None:
        if self.consume_approval and self.state.from_:
            self.approved = False


def _exchange(sender: Side, receiver: Side, stype: str) -> None:
    """``sender``'s client sends ``stype``: its server applies A.2, and a routed
    stanza, then every auto-reply it causes, reaches the other server in order
    and is applied there (A.3). An auto-reply is the server's own stanza, already
    accounted for in the replier's inbound Outcome, so it goes straight to the
    other side's inbound processing: running it through outbound() again would
    find the request it answers gone and keep it back."""
    outcome = outbound(sender.state, stype)
    sender.state = outcome.state
    if outcome.pre_approved:
        sender.approved = True
    elif stype == "unsubscribed":
        sender.approved = False
    sender.settle()
    if not outcome.forward:
        return
    wire = deque([(receiver, sender, stype)])
    while wire:
        to, from_, stanza_type = wire.popleft()
        result = inbound(to.state, stanza_type, approved=to.approved)
        to.state = result.state
        to.settle()
        if result.auto_reply:
            wire.append((from_, to, result.auto_reply))


def _disagreements(u: Side, c: Side) -> list:
    checks = {
        "U.to == C.from_": (u.state.to, c.state.from_),
        "U.from_ == C.to": (u.state.from_, c.state.to),
        "U.pending_out == C.pending_in": (u.state.pending_out, c.state.pending_in),
        "U.pending_in == C.pending_out": (u.state.pending_in, c.state.pending_out),
    }
    return [name for name, (left, right) in checks.items() if left != right]


actions = st.lists(st.tuples(st.sampled_from("UC"), types), max_size=40)


@given(actions, st.booleans())
@settings(max_examples=1000, deadline=None)
def test_two_servers_never_disagree_when_every_stanza_arrives_in_order(script, consume):
    """After every step U's record of C mirrors C's record of U: U receives C's
    presence iff C sends it (to/from), and a request waits on both sides or on
    neither (pending out/in). Nothing is lost or reordered."""
    u, c = Side("U", consume), Side("C", consume)
    for step, (who, stype) in enumerate(script):
        sender, receiver = (u, c) if who == "U" else (c, u)
        _exchange(sender, receiver, stype)
        assert u.state in STATES and c.state in STATES
        wrong = _disagreements(u, c)
        assert not wrong, (f"after {script[:step + 1]}: U has {u.state}, C has {c.state}; "
                           f"broken: {wrong}")


@pytest.mark.parametrize("script, u_state, c_state", [
    # §3.1: request, approval, and the reverse: mutual subscription.
    ([("U", "subscribe"), ("C", "subscribed"), ("C", "subscribe"), ("U", "subscribed")],
     "Both", "Both"),
    # §3.4: C pre-approves, so U's request is answered by C's server alone.
    ([("C", "subscribed"), ("U", "subscribe")], "To", "From"),
    # §3.2: C cancels what it granted; §3.3: U unsubscribes from what it had.
    ([("U", "subscribe"), ("C", "subscribed"), ("C", "unsubscribed")], "None", "None"),
    ([("U", "subscribe"), ("C", "subscribed"), ("U", "unsubscribe")], "None", "None"),
    # §3.1.4: a denied request leaves nothing pending on either side.
    ([("U", "subscribe"), ("C", "unsubscribed")], "None", "None"),
    # A.3.1 [2]: re-asking for a subscription one has is answered, not shown.
    ([("U", "subscribe"), ("C", "subscribed"), ("U", "subscribe")], "To", "From"),
    # §3.4 implementation note: "unsubscribed" withdraws a pre-approval.
    ([("C", "subscribed"), ("C", "unsubscribed"), ("U", "subscribe")],
     "None + Pending Out", "None + Pending In"),
])
def test_worked_examples_of_rfc_6121_section_3_end_in_mirrored_states(script, u_state,
                                                                       c_state):
    u, c = Side("U", True), Side("C", True)
    for who, stype in script:
        _exchange(*((u, c) if who == "U" else (c, u)), stype)
    assert (str(u.state), str(c.state)) == (u_state, c_state)
    assert (u.state, c.state) == (RFC_STATES[u_state], RFC_STATES[c_state])
