"""xmppd.jid.parse: RFC 7622 preparation, empty and overlong parts, the bounded cache."""

import pytest
from hypothesis import example, given, settings, strategies as st

from twisted.words.protocols.jabber.jid import parse as twisted_parse

from xmppd import jid
from xmppd.jid import InvalidJID, _ascii_parts, parse, parse_or_none


@pytest.mark.parametrize("text, user, host, resource", [
    ("localhost", None, "localhost", None),
    ("alice@localhost", "alice", "localhost", None),
    ("alice@localhost/phone", "alice", "localhost", "phone"),
    ("localhost/resource", None, "localhost", "resource"),
    ("a@b/c/d", "a", "b", "c/d"),          # a resource may contain '/'
    ("a@b/c@d", "a", "b", "c@d"),          # ... and '@'
    ("alice@localhost./phone", "alice", "localhost", "phone"),  # trailing dot dropped
    ("alice@192.0.2.1", "alice", "192.0.2.1", None),
    ("héllo@éxample.com", "héllo", "éxample.com", None),
])
def test_valid_jids_parse_into_parts(text, user, host, resource):
    j = parse(text)
    assert (j.user, j.host, j.resource) == (user, host, resource)


@pytest.mark.parametrize("text", [
    "",                      # empty
    "@localhost",            # empty local part
    "alice@",                # empty domain
    "alice@localhost/",      # empty resource
    "localhost/",            # empty resource, no local part
    "/resource",             # empty domain
    "@",
    "a b@localhost",         # space in local part
    "a@b@c",                 # '@' in the domain
    "a\"b@localhost",        # nodeprep-prohibited character
    "alice@local host",
    "alice@-localhost",
    "alice@localhost/\x00",  # control character in resource
    ".",                     # empty labels
    "alice@local..host",
    "alice@.localhost",
])
def test_invalid_jids_raise_invalid_jid(text):
    with pytest.raises(InvalidJID):
        parse(text)


def test_invalid_jid_is_a_value_error():
    assert issubclass(InvalidJID, ValueError)


def test_parse_or_none_returns_none_for_missing_or_invalid():
    assert parse_or_none(None) is None
    assert parse_or_none("") is None
    assert parse_or_none("a b@localhost") is None
    assert parse_or_none("a@b..c") is None
    assert parse_or_none("alice@localhost").user == "alice"


def test_localpart_and_domain_are_case_folded_resource_is_not():
    j = parse("Alice@LocalHost/Phone")
    assert j.full() == "alice@localhost/Phone"
    assert j.userhost() == "alice@localhost"


def test_nodeprep_maps_sharp_s():
    assert parse("Straße@localhost").user == "strasse"


@pytest.mark.parametrize("where", ["user", "host", "resource"])
def test_part_of_1023_bytes_is_accepted(where):
    long = "a" * 1023
    text = {"user": f"{long}@localhost", "host": f"x@{long}", "resource": f"x@localhost/{long}"}[where]
    j = parse(text)
    assert len(getattr(j, where).encode()) == 1023


@pytest.mark.parametrize("where", ["user", "host", "resource"])
def test_part_of_1024_bytes_is_rejected(where):
    long = "a" * 1024
    text = {"user": f"{long}@localhost", "host": f"x@{long}", "resource": f"x@localhost/{long}"}[where]
    with pytest.raises(InvalidJID):
        parse(text)


def test_part_limit_counts_utf8_bytes_not_characters():
    assert len(parse("x@localhost/" + "é" * 511 + "a").resource.encode()) == 1023
    with pytest.raises(InvalidJID):
        parse("x@localhost/" + "é" * 512)  # 512 characters, 1024 bytes


def test_all_three_parts_at_the_limit_together_are_accepted():
    long = "a" * 1023
    j = parse(f"{long}@{long}/{long}")
    assert (len(j.user), len(j.host), len(j.resource)) == (1023, 1023, 1023)


def test_absurdly_long_text_is_rejected_without_preparation():
    with pytest.raises(InvalidJID):
        parse("a" * 10_000)


def test_cache_is_bounded():
    info = jid.parse.cache_info()
    assert info.maxsize is not None and 0 < info.maxsize <= 65536
    for i in range(info.maxsize + 100):
        parse(f"user{i}@cache-test.example")
    assert jid.parse.cache_info().currsize <= info.maxsize


def test_cache_returns_equal_jids():
    assert parse("bob@localhost/x") == parse("bob@localhost/x")


# -- properties ----------------------------------------------------------------------

label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12)
localpart = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zs"), blacklist_characters="@/\"&'<>:"),
    min_size=1, max_size=20)
resource = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20)
domain = st.lists(label, min_size=1, max_size=4).map(".".join)


@settings(max_examples=300, deadline=None)
@given(user=st.none() | localpart, host=domain, res=st.none() | resource)
def test_parse_round_trips_through_full(user, host, res):
    text = (f"{user}@" if user is not None else "") + host + (f"/{res}" if res is not None else "")
    try:
        j = parse(text)
    except InvalidJID:
        return  # stringprep refused it: fine, as long as it said so with InvalidJID
    again = parse(j.full())
    assert again == j
    assert again.full() == j.full()


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab.@/-é \x00", max_size=12))
@example("a@b..c")
@example(".")
@example("a@.")
def test_parse_either_returns_a_jid_or_raises_invalid_jid(text):
    try:
        j = parse(text)
    except InvalidJID:
        return
    assert j.host
    assert parse(j.full()) == j


# -- the ASCII fast path agrees with Twisted's stringprep --------------------------

_ASCII_PIECES = st.sampled_from(
    ["a", "Z", "0", "-", ".", "@", "/", " ", "\x00", "\x1f", "\x7f", "\"", "&", "'", ":", "<", ">",
     "_", "~", "example", "ORG", "localhost", "x-y", "-x", "x-", "..", "é", "!"])


@settings(max_examples=3000, deadline=None)
@given(st.lists(_ASCII_PIECES, min_size=1, max_size=12).map("".join))
def test_fast_path_agrees_with_stringprep(text):
    """Where the fast path answers, Twisted's full preparation gives the same parts."""
    fast = _ascii_parts(text)
    if fast is None:
        return
    try:
        slow = twisted_parse(text)
    except Exception as e:  # the fast path accepted what stringprep refuses
        raise AssertionError(f"{text!r}: fast {fast!r}, stringprep refuses: {e!r}")
    assert fast == tuple(slow), text


@pytest.mark.parametrize("text", ["alice@example.org", "Alice@Example.ORG/Phone 1",
                                  "example.org", "x@localhost/r/with/slashes", "a.b-c@d-e.f."])
def test_fast_path_takes_everyday_jids(text):
    parts = _ascii_parts(text)
    assert parts is not None
    assert parts == tuple(twisted_parse(text))  # what stringprep makes of it


def test_strings_are_computed_once():
    j = parse("alice@example.org/phone")
    assert j.full() is j.full() and j.userhost() is j.userhost()
    from twisted.words.protocols.jabber.jid import JID as TwistedJID
    plain = TwistedJID("alice@example.org/phone")
    assert j == plain and {j: 1}[plain] == 1
