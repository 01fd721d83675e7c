"""XEP-0054: vcard-temp — each account's own vCard, readable by anyone, as
Prosody 0.12 answers it (its default vcard_legacy), kept as the client sent it."""

import base64
import os
import textwrap

import pytest
from twisted.internet import defer

from xmppd import ns
from xmppd.testing import Harness, error_condition, only, parse, result_of

VCARD = "vcard-temp"
ALICE_VCARD = ("<vCard xmlns='vcard-temp' prodid='-//HandGen//NONSGML vGen v1.0//EN'>"
               "<FN>Alice &amp; Co</FN><N><FAMILY>Liddell</FAMILY><GIVEN>Alice</GIVEN></N>"
               "<NICKNAME>al</NICKNAME><X-CUSTOM xmlns='urn:example:x'>kept</X-CUSTOM>"
               "</vCard>")


def harness(**options):
    return Harness(["vcard"], options={"component:vcard": options} if options else None)


def set_vcard(session, vcard=ALICE_VCARD, iq_id="s1", to=None):
    to_attr = f" to='{to}'" if to else ""
    session.feed(f"<iq type='set' id='{iq_id}'{to_attr}>{vcard}</iq>")
    return only(session)


def get_vcard(session, to=None, iq_id="g1"):
    to_attr = f" to='{to}'" if to else ""
    session.feed(f"<iq type='get' id='{iq_id}'{to_attr}><vCard xmlns='vcard-temp'/></iq>")
    return only(session)


def returned(reply):
    """The <vCard/> of a result."""
    assert reply["type"] == "result", reply.toXml()
    (vcard,) = list(reply.elements())
    assert (vcard.uri, vcard.name) == (VCARD, "vCard")
    return vcard


def stored(h, user="alice@localhost"):
    return result_of(h.component("vcard").store["vcard"].get(user))


def error_type(reply):
    return next(c for c in reply.elements() if c.name == "error")["type"]


def photo_vcard(image: bytes, wrap: int = 0) -> str:
    binval = base64.b64encode(image).decode()
    if wrap:
        binval = "\n" + "\n".join(textwrap.wrap(binval, wrap)) + "\n"
    return (f"<vCard xmlns='vcard-temp'><FN>Alice</FN><PHOTO><TYPE>image/png</TYPE>"
            f"<BINVAL>{binval}</BINVAL></PHOTO></vCard>")


# -- one's own vCard -------------------------------------------------------------

def test_set_answers_an_empty_result_and_get_returns_the_vcard_as_sent():
    h = harness()
    alice = h.login("alice@localhost/phone")
    reply = set_vcard(alice)
    assert (reply["type"], reply["id"], reply["to"]) == ("result", "s1", "alice@localhost/phone")
    assert list(reply.elements()) == []
    reply = get_vcard(alice)
    assert reply["id"] == "g1" and reply.getAttribute("from") is None
    vcard = returned(reply)
    assert vcard.toXml() == parse(ALICE_VCARD).toXml()
    assert str(next(vcard.elements(VCARD, "FN"))) == "Alice & Co"
    assert vcard["prodid"] == "-//HandGen//NONSGML vGen v1.0//EN"


def test_set_and_get_addressed_to_the_own_bare_jid_are_the_own_vcard():
    h = harness()
    alice = h.login("alice@localhost/phone")
    assert set_vcard(alice, to="alice@localhost")["type"] == "result"
    assert returned(get_vcard(alice, to="alice@localhost")).toXml() == parse(ALICE_VCARD).toXml()
    assert stored(h) == parse(ALICE_VCARD).toXml()


def test_a_new_set_replaces_the_whole_vcard():
    h = harness()
    alice = h.login("alice@localhost/phone")
    set_vcard(alice)
    set_vcard(alice, "<vCard xmlns='vcard-temp'><FN>Just Alice</FN></vCard>", "s2")
    vcard = returned(get_vcard(alice))
    assert [c.name for c in vcard.elements()] == ["FN"]


def test_another_resource_of_the_account_reads_what_one_set():
    h = harness()
    phone, laptop = h.login("alice@localhost/phone"), h.login("alice@localhost/laptop")
    set_vcard(phone)
    assert returned(get_vcard(laptop)).toXml() == parse(ALICE_VCARD).toXml()


def test_the_reply_comes_only_once_the_write_is_durable():
    h = harness()
    alice = h.login("alice@localhost/phone")
    store = h.component("vcard").store["vcard"]
    durable = defer.Deferred()
    real_set = store.set
    store.set = lambda user, value: durable.addCallback(lambda _: real_set(user, value))
    alice.feed(f"<iq type='set' id='s1'>{ALICE_VCARD}</iq>")
    assert alice.take() == []
    durable.callback(None)
    assert only(alice)["type"] == "result"


def test_an_empty_vcard_deletes_the_stored_one():
    h = harness()
    alice = h.login("alice@localhost/phone")
    set_vcard(alice)
    assert set_vcard(alice, "<vCard xmlns='vcard-temp'/>", "s2")["type"] == "result"
    assert stored(h) is None
    assert returned(get_vcard(alice)).toXml() == "<vCard xmlns='vcard-temp'/>"


# -- everyone else's ----------------------------------------------------------------

def test_anyone_gets_a_users_vcard_from_the_bare_jid():
    h = harness()
    alice, bob = h.login("alice@localhost/phone"), h.login("bob@localhost/pc")
    set_vcard(alice)
    reply = get_vcard(bob, to="alice@localhost")
    assert (reply["from"], reply["to"]) == ("alice@localhost", "bob@localhost/pc")
    assert returned(reply).toXml() == parse(ALICE_VCARD).toXml()
    assert alice.take() == []  # the server answers; the user's clients are not asked


def test_an_account_without_a_vcard_answers_an_empty_vcard():
    # XEP-0054 §3.1 allows an error or an empty result; Prosody answers the latter.
    h = harness()
    bob = h.login("bob@localhost/pc")
    h.add_user("alice@localhost")
    vcard = returned(get_vcard(bob, to="alice@localhost"))
    assert vcard.toXml() == "<vCard xmlns='vcard-temp'/>"
    assert returned(get_vcard(bob)).toXml() == "<vCard xmlns='vcard-temp'/>"


def test_an_unknown_account_is_service_unavailable_a_known_one_without_vcard_empty():
    # RFC 6121 §8.5.1 for an iq to a bare JID without an account (Prosody's
    # vcard_legacy answers an empty vCard there; its mod_vcard an error).
    h = harness()
    bob = h.login("bob@localhost/pc")
    h.add_user("alice@localhost")
    unknown = get_vcard(bob, to="nobody@localhost")
    known = get_vcard(bob, to="alice@localhost", iq_id="g2")
    assert error_condition(unknown) == "service-unavailable"
    assert unknown["from"] == "nobody@localhost"
    assert known["type"] == "result"
    assert returned(known).toXml() == "<vCard xmlns='vcard-temp'/>"
    assert stored(h, "nobody@localhost") is None


def test_a_vcard_iq_to_a_full_jid_goes_to_that_client():
    h = harness()
    alice, bob = h.login("alice@localhost/phone"), h.login("bob@localhost/pc")
    bob.feed("<iq type='get' id='f1' to='alice@localhost/phone'><vCard xmlns='vcard-temp'/></iq>")
    delivered = only(alice)
    assert (delivered["id"], delivered["from"]) == ("f1", "bob@localhost/pc")
    assert bob.take() == []


# -- what is refused ------------------------------------------------------------------

def test_setting_someone_elses_vcard_is_refused_and_stores_nothing():
    # Prosody 0.12 (vcard_legacy): service-unavailable; its old mod_vcard: forbidden.
    h = harness()
    alice, bob = h.login("alice@localhost/phone"), h.login("bob@localhost/pc")
    set_vcard(alice)
    reply = set_vcard(bob, "<vCard xmlns='vcard-temp'><FN>Mallory</FN></vCard>", to="alice@localhost")
    assert error_condition(reply) == "service-unavailable" and error_type(reply) == "cancel"
    assert reply["from"] == "alice@localhost"
    assert stored(h) == parse(ALICE_VCARD).toXml()
    assert stored(h, "bob@localhost") is None
    assert alice.take() == []


@pytest.mark.parametrize("kind", ["get", "set"])
def test_the_server_has_no_vcard_of_its_own(kind):
    h = harness()
    alice = h.login("alice@localhost/phone")
    payload = "<vCard xmlns='vcard-temp'/>" if kind == "get" else ALICE_VCARD
    alice.feed(f"<iq type='{kind}' id='h1' to='localhost'>{payload}</iq>")
    reply = only(alice)
    assert error_condition(reply) == "service-unavailable" and error_type(reply) == "cancel"
    assert stored(h, "localhost") is None and stored(h, "") is None


def test_an_oversized_vcard_is_not_acceptable_and_the_stored_one_stays():
    h = harness(max_size="2048")
    alice = h.login("alice@localhost/phone")
    set_vcard(alice)
    big = photo_vcard(os.urandom(2048))
    reply = set_vcard(alice, big, "s2")
    assert error_condition(reply) == "not-acceptable" and error_type(reply) == "modify"
    assert not list(reply.elements(VCARD, "vCard")), "the oversized payload came back"
    assert stored(h) == parse(ALICE_VCARD).toXml()


def test_the_size_limit_counts_the_serialised_vcard_and_admits_exactly_max_size():
    vcard = parse(photo_vcard(os.urandom(600)))
    size = len(vcard.toXml().encode("utf-8"))
    h = harness(max_size=str(size))
    alice = h.login("alice@localhost/phone")
    assert set_vcard(alice, vcard.toXml())["type"] == "result"
    h = harness(max_size=str(size - 1))
    alice = h.login("alice@localhost/phone")
    assert error_condition(set_vcard(alice, vcard.toXml())) == "not-acceptable"
    assert stored(h) is None


def test_max_size_zero_means_only_the_stanza_size_limits_it():
    h = harness(max_size="0")
    alice = h.login("alice@localhost/phone")
    big = photo_vcard(os.urandom(100_000))
    assert set_vcard(alice, big)["type"] == "result"
    assert stored(h) == parse(big).toXml()


def test_the_default_limit_is_64_kib():
    h = harness()
    assert h.component("vcard").config["max_size"] == 65536


def test_a_binval_that_is_not_base64_is_a_bad_request_and_stores_nothing():
    h = harness()
    alice = h.login("alice@localhost/phone")
    reply = set_vcard(alice, "<vCard xmlns='vcard-temp'><PHOTO><BINVAL>!!!notbase64</BINVAL>"
                             "</PHOTO></vCard>")
    assert error_condition(reply) == "bad-request" and error_type(reply) == "modify"
    assert stored(h) is None


# -- the photo, byte for byte ------------------------------------------------------------

@pytest.mark.parametrize("wrap", [0, 76])
def test_the_photo_comes_back_byte_exact(wrap):
    h = harness()
    alice, bob = h.login("alice@localhost/phone"), h.login("bob@localhost/pc")
    image = os.urandom(20_000)
    sent = photo_vcard(image, wrap)
    set_vcard(alice, sent)
    vcard = returned(get_vcard(bob, to="alice@localhost"))
    binval = str(next(next(vcard.elements(VCARD, "PHOTO")).elements(VCARD, "BINVAL")))
    assert binval == str(next(next(parse(sent).elements(VCARD, "PHOTO")).elements(VCARD, "BINVAL")))
    assert base64.b64decode("".join(binval.split())) == image


# -- service discovery, account deletion, the change event ---------------------------------

def test_vcard_temp_is_announced_for_the_server_and_for_accounts():
    h = Harness(["disco", "vcard"])
    assert ns.VCARD in h.server.disco_features()
    assert ns.VCARD in h.server.account_features()
    alice = h.login("alice@localhost/phone")
    alice.feed("<iq type='get' id='d1' to='localhost'>"
               "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    features = [f["var"] for f in next(only(alice).elements()).elements(ns.DISCO_INFO, "feature")]
    assert ns.VCARD in features


def test_a_deleted_account_leaves_no_vcard_behind():
    h = harness()
    alice, bob = h.login("alice@localhost/phone"), h.login("bob@localhost/pc")
    set_vcard(alice)
    result_of(h.server.accounts.delete("alice@localhost"))
    assert stored(h) is None
    assert error_condition(get_vcard(bob, to="alice@localhost")) == "service-unavailable"


def test_a_stored_change_fires_vcard_changed_after_the_write():
    h = harness()
    alice = h.login("alice@localhost/phone")
    seen = []
    h.router.hook("vcard-changed", lambda change: seen.append(
        (change.user, change.vcard and change.vcard.toXml(), stored(h))))
    set_vcard(alice)
    set_vcard(alice, "<vCard xmlns='vcard-temp'/>", "s2")
    assert seen == [("alice@localhost", parse(ALICE_VCARD).toXml(), parse(ALICE_VCARD).toXml()),
                    ("alice@localhost", None, None)]


def test_refused_sets_fire_no_change():
    h = harness(max_size="100")
    alice, bob = h.login("alice@localhost/phone"), h.login("bob@localhost/pc")
    seen = []
    h.router.hook("vcard-changed", seen.append)
    set_vcard(alice, photo_vcard(os.urandom(200)))
    set_vcard(bob, "<vCard xmlns='vcard-temp'><FN>x</FN></vCard>", to="alice@localhost")
    set_vcard(alice, "<vCard xmlns='vcard-temp'><PHOTO><BINVAL>%%%</BINVAL></PHOTO></vCard>")
    assert seen == []
