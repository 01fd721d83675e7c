"""Password-protected rooms (xmppd/services/muc/features/password.py):
XEP-0045 §7.2.6 (not-authorized without the right password), §10.2
(muc#roomconfig_roomsecret, muc#roomconfig_passwordprotectedroom) and the
muc_passwordprotected / muc_unsecured disco features."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from muc_harness_helpers import (  # noqa: E402
    codes, configure, create, error_type, join, make_harness, presences, room_jid, the_error,
    the_room)

from xmppd import ns  # noqa: E402

SECRET = "muc#roomconfig_roomsecret"


def locked_room():
    h = make_harness()
    alice = h.login("alice@localhost/r")
    create(alice, "vault", "Alice", {SECRET: "s3cret",
                                    "muc#roomconfig_passwordprotectedroom": True})
    return h, alice


def disco_features(session, room):
    session.feed(f"<iq type='get' id='d1' to='{room_jid(room)}'>"
                 f"<query xmlns='{ns.DISCO_INFO}'/></iq>")
    (reply,) = session.take()
    return {f["var"] for f in reply.firstChildElement().elements(ns.DISCO_INFO, "feature")}


def test_a_join_without_the_password_is_not_authorized_and_nobody_hears_of_it():
    h, alice = locked_room()
    bob = h.login("bob@localhost/r")
    got = join(bob, "vault", "Bob")
    assert the_error(got, "presence") == "not-authorized"
    assert error_type(got[0]) == "auth"
    assert alice.take() == []
    assert set(the_room(h, "vault").occupants) == {"Alice"}


def test_a_join_with_a_wrong_password_is_not_authorized():
    h, alice = locked_room()
    bob = h.login("bob@localhost/r")
    assert the_error(join(bob, "vault", "Bob", password="guess"), "presence") == \
        "not-authorized"


def test_a_join_with_the_password_enters():
    h, alice = locked_room()
    bob = h.login("bob@localhost/r")
    got = join(bob, "vault", "Bob", password="s3cret")
    assert "110" in codes(presences(got)[-1])


def test_a_password_protected_room_says_so_in_disco_and_an_open_one_says_unsecured():
    h, alice = locked_room()
    assert "muc_passwordprotected" in disco_features(alice, "vault")
    assert "muc_unsecured" not in disco_features(alice, "vault")
    configure(alice, "vault", {"muc#roomconfig_passwordprotectedroom": False})
    features = disco_features(alice, "vault")
    assert "muc_unsecured" in features and "muc_passwordprotected" not in features


def test_unchecking_password_protection_clears_the_password():
    h, alice = locked_room()
    configure(alice, "vault", {"muc#roomconfig_passwordprotectedroom": False})
    assert not the_room(h, "vault").config.get("password")
    bob = h.login("bob@localhost/r")
    assert "110" in codes(presences(join(bob, "vault", "Bob"))[-1])


def test_even_an_owner_needs_the_password_as_in_prosody():
    """Prosody's password.lib.lua checks every join, owners' too."""
    h, alice = locked_room()
    laptop = h.login("alice@localhost/laptop")
    assert the_error(join(laptop, "vault", "Alice2"), "presence") == "not-authorized"
    got = join(laptop, "vault", "Alice2", password="s3cret")
    assert "110" in codes(presences(got)[-1])


def test_the_password_in_the_creating_join_becomes_the_rooms_password():
    """As Prosody (muc-room-pre-create in password.lib.lua)."""
    h = make_harness()
    alice = h.login("alice@localhost/r")
    join(alice, "safe", "Alice", password="opensesame")
    from muc_harness_helpers import instant
    instant(alice, "safe")
    bob = h.login("bob@localhost/r")
    assert the_error(join(bob, "safe", "Bob"), "presence") == "not-authorized"
    assert "110" in codes(presences(join(bob, "safe", "Bob", password="opensesame"))[-1])
