"""SASL mechanisms driven directly: PLAIN and SCRAM-SHA-1/-256 against memory storage."""

import base64
import re

import pytest
import scramp
from twisted.internet import defer

from xmppd.accounts import Accounts
from xmppd.c2s.sasl import PlainMechanism, ScramMechanism, Step, b64decode
from xmppd.storage.memory import MemoryStorage
from xmppd.testing import result_of as fired

DOMAIN = "localhost"
SCRAMS = ["SCRAM-SHA-256", "SCRAM-SHA-1"]


def make_accounts(iterations=4096, users=(("alice@localhost", "correct horse"),)):
    storage = MemoryStorage()
    fired(storage.start())
    accounts = Accounts(storage, iterations)
    accounts.run_blocking = lambda f, *a: defer.maybeDeferred(f, *a)  # as the harness does
    for user, password in users:
        fired(accounts.create(user, password))
    return accounts


@pytest.fixture
def accounts():
    return make_accounts()


def step(mech, data):
    result = fired(mech.step(data))
    assert isinstance(result, Step)
    return result


def outcome(result):
    return (result.kind, result.condition, result.text, result.user)


# -- PLAIN ----------------------------------------------------------------------------

def test_plain_success(accounts):
    mech = PlainMechanism(accounts, DOMAIN)
    result = step(mech, b"\0alice\0correct horse")
    assert result.kind == "success"
    assert result.user == "alice@localhost"
    assert result.condition is None


def test_plain_with_matching_authzid_succeeds(accounts):
    result = step(PlainMechanism(accounts, DOMAIN), b"alice@localhost\0alice\0correct horse")
    assert (result.kind, result.user) == ("success", "alice@localhost")


def test_plain_authcid_is_case_folded(accounts):
    result = step(PlainMechanism(accounts, DOMAIN), b"\0ALICE\0correct horse")
    assert (result.kind, result.user) == ("success", "alice@localhost")


def test_plain_without_initial_response_gets_empty_challenge(accounts):
    result = step(PlainMechanism(accounts, DOMAIN), None)
    assert (result.kind, result.data) == ("challenge", b"")


def test_plain_wrong_password_is_not_authorized(accounts):
    result = step(PlainMechanism(accounts, DOMAIN), b"\0alice\0wrong")
    assert (result.kind, result.condition, result.user) == ("failure", "not-authorized", None)


def test_plain_unknown_user_fails_like_wrong_password(accounts):
    wrong = step(PlainMechanism(accounts, DOMAIN), b"\0alice\0wrong")
    unknown = step(PlainMechanism(accounts, DOMAIN), b"\0mallory\0whatever")
    assert outcome(unknown) == outcome(wrong)


def test_plain_authzid_mismatch_is_invalid_authzid(accounts):
    result = step(PlainMechanism(accounts, DOMAIN), b"bob@localhost\0alice\0correct horse")
    assert (result.kind, result.condition) == ("failure", "invalid-authzid")


@pytest.mark.parametrize("data", [b"garbage", b"\0only-two", b"a\0b\0c\0d", b"\xff\xfe\0alice\0pw"])
def test_plain_garbage_is_malformed_request(accounts, data):
    result = step(PlainMechanism(accounts, DOMAIN), data)
    assert (result.kind, result.condition) == ("failure", "malformed-request")


@pytest.mark.parametrize("authcid", [b"alice@localhost", b"bad name", b"alice/res", b"", b"a@b..c"])
def test_plain_authcid_that_is_not_a_localpart_is_not_authorized(accounts, authcid):
    result = step(PlainMechanism(accounts, DOMAIN), b"\0" + authcid + b"\0correct horse")
    assert (result.kind, result.condition) == ("failure", "not-authorized")


# -- SCRAM ----------------------------------------------------------------------------

def scram_exchange(accounts, mechanism, username, password):
    """Run a whole exchange; returns (client, server-first step, final step)."""
    client = scramp.ScramClient([mechanism], username, password)
    mech = ScramMechanism(mechanism, accounts, DOMAIN)
    first = step(mech, client.get_client_first().encode())
    assert (first.kind, first.condition) == ("challenge", None), outcome(first)
    client.set_server_first(first.data.decode())
    final = step(mech, client.get_client_final().encode())
    return client, first, final


@pytest.mark.parametrize("mechanism", SCRAMS)
def test_scram_success(accounts, mechanism):
    client, _, final = scram_exchange(accounts, mechanism, "alice", "correct horse")
    assert final.kind == "success"
    assert final.user == "alice@localhost"
    client.set_server_final(final.data.decode())  # raises if the server signature is wrong


@pytest.mark.parametrize("mechanism", SCRAMS)
def test_scram_without_initial_response_gets_empty_challenge(accounts, mechanism):
    result = step(ScramMechanism(mechanism, accounts, DOMAIN), None)
    assert (result.kind, result.data) == ("challenge", b"")


@pytest.mark.parametrize("mechanism", SCRAMS)
def test_scram_wrong_password_is_not_authorized(accounts, mechanism):
    _, _, final = scram_exchange(accounts, mechanism, "alice", "wrong")
    assert (final.kind, final.condition, final.user) == ("failure", "not-authorized", None)


@pytest.mark.parametrize("mechanism", SCRAMS)
def test_scram_unknown_user_fails_identically_at_the_final_step(accounts, mechanism):
    _, wrong_first, wrong = scram_exchange(accounts, mechanism, "alice", "wrong")
    _, unknown_first, unknown = scram_exchange(accounts, mechanism, "mallory", "whatever")
    # not earlier: the unknown user gets a normal-looking server-first message
    assert unknown_first.kind == wrong_first.kind == "challenge"
    assert re.fullmatch(rb"r=[^,]+,s=[A-Za-z0-9+/=]+,i=\d+", unknown_first.data)
    assert outcome(unknown) == outcome(wrong) == ("failure", "not-authorized", None, None)


def _iterations(server_first: bytes) -> int:
    return int(dict(a.split("=", 1) for a in server_first.decode().split(","))["i"])


def _salt(server_first: bytes) -> bytes:
    return base64.b64decode(dict(a.split("=", 1) for a in server_first.decode().split(","))["s"])


@pytest.mark.parametrize("mechanism", SCRAMS)
def test_scram_unknown_user_gets_the_same_iteration_count_as_real_accounts(mechanism):
    accounts = make_accounts(iterations=10000)
    _, real, _ = scram_exchange(accounts, mechanism, "alice", "wrong")
    _, fake, _ = scram_exchange(accounts, mechanism, "mallory", "whatever")
    assert _iterations(real.data) == 10000
    assert _iterations(fake.data) == _iterations(real.data)


@pytest.mark.parametrize("mechanism", SCRAMS)
def test_scram_unknown_user_gets_a_stable_salt(accounts, mechanism):
    _, real1, _ = scram_exchange(accounts, mechanism, "alice", "wrong")
    _, real2, _ = scram_exchange(accounts, mechanism, "alice", "wrong")
    assert _salt(real1.data) == _salt(real2.data)
    _, fake1, _ = scram_exchange(accounts, mechanism, "mallory", "x")
    _, fake2, _ = scram_exchange(accounts, mechanism, "mallory", "x")
    assert _salt(fake1.data) == _salt(fake2.data)


@pytest.mark.parametrize("mechanism", SCRAMS)
def test_scram_authzid_is_invalid_authzid(accounts, mechanism):
    client_first = scramp.ScramClient([mechanism], "alice", "x").get_client_first()
    with_authzid = client_first.replace("n,,", "n,a=bob@localhost,", 1)
    result = step(ScramMechanism(mechanism, accounts, DOMAIN), with_authzid.encode())
    assert (result.kind, result.condition) == ("failure", "invalid-authzid")


@pytest.mark.parametrize("mechanism", SCRAMS)
@pytest.mark.parametrize("data", [b"garbage", b"p=tls-unique,,n=alice,r=abc", b"\xff\xfe", b"n,,n=alice,r="])
def test_scram_garbage_first_message_is_malformed_request(accounts, mechanism, data):
    result = step(ScramMechanism(mechanism, accounts, DOMAIN), data)
    assert (result.kind, result.condition) == ("failure", "malformed-request")


@pytest.mark.parametrize("mechanism", SCRAMS)
def test_scram_garbage_final_message_fails(accounts, mechanism):
    client = scramp.ScramClient([mechanism], "alice", "correct horse")
    mech = ScramMechanism(mechanism, accounts, DOMAIN)
    step(mech, client.get_client_first().encode())
    result = step(mech, b"garbage")
    assert result.kind == "failure"
    assert result.user is None


@pytest.mark.parametrize("mechanism", SCRAMS)
def test_scram_server_checks_the_nonce(accounts, mechanism):
    client = scramp.ScramClient([mechanism], "alice", "correct horse")
    mech = ScramMechanism(mechanism, accounts, DOMAIN)
    first = step(mech, client.get_client_first().encode())
    client.set_server_first(first.data.decode())
    final = client.get_client_final()
    tampered = re.sub(r"r=([^,]+)", lambda m: "r=" + m.group(1)[:-1] + "X", final, count=1)
    result = step(mech, tampered.encode())
    assert (result.kind, result.user) == ("failure", None)


def test_scram_sha1_credentials_are_separate_from_sha256(accounts):
    sha1 = fired(accounts.credentials("alice@localhost", "SCRAM-SHA-1"))
    sha256 = fired(accounts.credentials("alice@localhost", "SCRAM-SHA-256"))
    assert len(sha1[1]) == 20 and len(sha256[1]) == 32


# -- base64 ---------------------------------------------------------------------------

def test_b64decode_handles_empty_response_and_rejects_bad_base64():
    assert b64decode("=") == b""
    assert b64decode(" AGFsaWNl ") == b"\0alice"
    assert b64decode("not base64!") is None
