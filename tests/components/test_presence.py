"""RFC 6121 §4: a session's own broadcast presence sets its availability and priority."""

import pytest

from xmppd.testing import Harness, only



def fresh():
    h = Harness(["presence"])
    alice = h.login("alice@localhost/phone", available=False)
    return h, alice


def test_session_starts_unavailable_before_initial_presence():
    _, alice = fresh()
    assert alice.available is False


def test_initial_presence_marks_session_available():
    _, alice = fresh()
    alice.feed("<presence/>")
    assert alice.available is True
    assert alice.priority == 0
    assert alice.presence is not None and alice.presence.name == "presence"
    # RFC 6121 §4.2.2: the broadcast includes the resource that sent it.
    echo = only(alice)
    assert echo.name == "presence" and echo.getAttribute("from") == "alice@localhost/phone"
    assert echo.getAttribute("to") == "alice@localhost/phone"
def test_initial_presence_sets_priority():
    _, alice = fresh()
    alice.feed("<presence><priority>5</priority></presence>")
    assert alice.available is True
    assert alice.priority == 5
def test_negative_priority_is_kept():
    _, alice = fresh()
    alice.feed("<presence><priority>-3</priority></presence>")
    assert alice.priority == -3
def test_harness_login_priority_reaches_the_session():
    h = Harness(["presence"])
    alice = h.login("alice@localhost/phone", priority=7)
    assert alice.available and alice.priority == 7
@pytest.mark.parametrize("given, expected", [("1000", 127), ("-1000", -128), ("127", 127), ("-128", -128)])
def test_priority_is_clamped_to_a_signed_byte(given, expected):
    _, alice = fresh()
    alice.feed(f"<presence><priority>{given}</priority></presence>")
    assert alice.priority == expected


def test_non_numeric_priority_counts_as_zero():
    _, alice = fresh()
    alice.feed("<presence><priority>high</priority></presence>")
    assert alice.available is True
    assert alice.priority == 0


def test_unavailable_presence_clears_availability():
    _, alice = fresh()
    alice.feed("<presence/>")
    alice.feed("<presence type='unavailable'/>")
    assert alice.available is False
    assert alice.presence is None


def test_directed_presence_does_not_change_own_availability():
    h, alice = fresh()
    alice.feed("<presence to='alice@localhost'/>")
    assert alice.available is False


def test_logout_marks_session_unavailable():
    h = Harness(["presence"])
    alice = h.login("alice@localhost/phone")
    assert alice.available is True
    alice.logout()
    assert alice.available is False
    assert h.router.resources("alice@localhost") == {}
