"""XEP-0115: the server learns each session's features from its caps hash,
verified with one tracked disco#info query per unknown hash."""

import pytest
from twisted.internet import task

from xmppd.components.caps import CAPS_KNOWN, IllFormed, digest, parse_info, verification_string
from xmppd.components.disco import caps_ver
from xmppd.testing import Harness, parse

NODE = "https://example.org/client"
FEATURES = ["http://jabber.org/protocol/disco#info", "urn:xmpp:avatar:metadata+notify",
            "http://jabber.org/protocol/nick+notify"]
IDENTITY = ("client", "pc", "", "Test client")


def ver_of(features=FEATURES, identity=IDENTITY, algorithm="sha-1", forms=()):
    return digest(algorithm, verification_string([identity], features, forms))


def info(features=FEATURES, identity=IDENTITY, extra=""):
    category, type_, _, name = identity
    body = f"<identity category='{category}' type='{type_}' name='{name}'/>"
    body += "".join(f"<feature var='{f}'/>" for f in features)
    return body + extra


class World:
    def __init__(self, **options):
        self.clock = task.Clock()
        self.h = Harness(["roster", "presence", "caps"], clock=self.clock,
                         options={"component:caps": options} if options else None)
        self.caps = self.h.component("caps")
        self.known = []
        self.h.router.hook(CAPS_KNOWN, self.known.append)

    def login(self, jid):
        return self.h.login(jid, available=False)

    def present(self, session, ver=None, algorithm="sha-1", node=NODE, extra=""):
        ver = ver_of() if ver is None else ver
        hash_attr = f" hash='{algorithm}'" if algorithm else ""
        session.feed(f"<presence><c xmlns='http://jabber.org/protocol/caps'{hash_attr} "
                     f"node='{node}' ver='{ver}'{extra}/></presence>")

    @staticmethod
    def queries(session):
        """The disco#info queries ``session`` received (and keeps the rest)."""
        found = [s for s in session.received if s.name == "iq" and s.getAttribute("type") == "get"
                 and next(s.elements("http://jabber.org/protocol/disco#info", "query"), None)
                 is not None]
        session.received = [s for s in session.received if s not in found]
        return found

    @staticmethod
    def answer(session, query, body=None, type_="result"):
        body = info() if body is None else body
        session.feed(f"<iq type='{type_}' id='{query['id']}' to='{query['from']}'>"
                     f"<query xmlns='http://jabber.org/protocol/disco#info' "
                     f"node='{query.firstChildElement()['node']}'>{body}</query></iq>")


@pytest.fixture
def w():
    return World()


def test_the_verification_string_is_the_one_disco_hashes_the_server_with():
    identities = [("server", "im", "", "xmppd"), ("pubsub", "pep", "", "")]
    features = ["urn:xmpp:ping", "http://jabber.org/protocol/disco#info"]
    forms = [("http://jabber.org/network/serverinfo", [("admin-addresses", ["xmpp:a@b"])])]
    assert digest("sha-1", verification_string(identities, features, forms)) == \
        caps_ver(identities, features, forms)


def test_the_xep_0115_complex_example_hashes_to_its_published_ver():
    query = parse("""<query xmlns='http://jabber.org/protocol/disco#info'>
      <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>
      <identity xml:lang='el' category='client' name='Ψ 0.11' type='pc'/>
      <feature var='http://jabber.org/protocol/caps'/>
      <feature var='http://jabber.org/protocol/disco#info'/>
      <feature var='http://jabber.org/protocol/disco#items'/>
      <feature var='http://jabber.org/protocol/muc'/>
      <x xmlns='jabber:x:data' type='result'>
        <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>
        <field var='ip_version'><value>ipv4</value><value>ipv6</value></field>
        <field var='os'><value>Mac</value></field>
        <field var='os_version'><value>10.5.1</value></field>
        <field var='software'><value>Psi</value></field>
        <field var='software_version'><value>0.11</value></field>
      </x></query>""")
    assert digest("sha-1", verification_string(*parse_info(query))) == "q07IKJEyjvHSyhy//CH0CxmKi8w="


def test_an_unknown_hash_is_asked_of_the_client_and_its_features_become_known(w):
    alice = w.login("alice@localhost/pc")
    w.present(alice)
    [query] = w.queries(alice)
    assert query["from"] == "alice@localhost" and query["to"] == "alice@localhost/pc"
    assert query.firstChildElement()["node"] == f"{NODE}#{ver_of()}"
    assert w.caps.features_of(alice) is None
    w.answer(alice, query)
    assert w.caps.features_of(alice) == frozenset(FEATURES)
    assert w.known == [alice]


def test_a_known_hash_is_never_asked_again_at_the_next_login(w):
    alice = w.login("alice@localhost/pc")
    w.present(alice)
    w.answer(alice, w.queries(alice)[0])
    alice.logout()
    for jid in ("alice@localhost/laptop", "bob@localhost/phone"):
        session = w.login(jid)
        w.present(session)
        assert w.queries(session) == []
        assert w.caps.features_of(session) == frozenset(FEATURES)
    assert len(w.known) == 3


def test_sessions_claiming_the_same_unknown_hash_wait_for_one_query(w):
    alice, bob, carol = (w.login(j) for j in
                         ("alice@localhost/pc", "bob@localhost/pc", "carol@localhost/pc"))
    for session in (alice, bob, carol):
        w.present(session)
    [query] = w.queries(alice)
    assert w.queries(bob) == [] and w.queries(carol) == []
    w.answer(alice, query)
    assert all(w.caps.features_of(s) == frozenset(FEATURES) for s in (alice, bob, carol))
    assert w.known == [alice, bob, carol]


def test_an_answer_that_does_not_hash_to_the_ver_is_ignored_and_the_next_session_asked(w):
    alice, bob = w.login("alice@localhost/pc"), w.login("bob@localhost/pc")
    w.present(alice), w.present(bob)
    [query] = w.queries(alice)
    w.answer(alice, query, info(FEATURES + ["urn:xmpp:jingle:1"]))  # not what the ver says
    assert w.caps.features_of(alice) is None and w.known == []
    [second] = w.queries(bob)
    w.answer(bob, second)
    assert w.caps.features_of(bob) == frozenset(FEATURES)
    # what the ver means is known now, whoever told it
    assert w.caps.features_of(alice) == frozenset(FEATURES)
    carol = w.login("carol@localhost/pc")
    w.present(carol)
    assert w.queries(carol) == [] and w.caps.features_of(carol) == frozenset(FEATURES)


@pytest.mark.parametrize("body", [
    info(FEATURES + [FEATURES[0]]),  # a feature twice
    info() + "<identity category='client' type='pc' name='Test client'/>",  # an identity twice
])
def test_an_ill_formed_answer_is_not_believed_even_if_it_hashes_right(w, body):
    listed = parse(f"<query xmlns='http://jabber.org/protocol/disco#info'>{body}</query>")
    with pytest.raises(IllFormed):
        parse_info(listed)
    # the ver of the list as sent, duplicates included
    identities = [(i["category"], i["type"], "", i["name"]) for i in listed.elements(None, "identity")]
    features = [f["var"] for f in listed.elements(None, "feature")]
    ver = digest("sha-1", verification_string(identities, features, []))
    alice = w.login("alice@localhost/pc")
    w.present(alice, ver)
    w.answer(alice, w.queries(alice)[0], body)
    assert w.caps.features_of(alice) is None and w.known == []


def test_no_answer_times_out_and_the_next_session_is_asked(w):
    alice, bob = w.login("alice@localhost/pc"), w.login("bob@localhost/pc")
    w.present(alice), w.present(bob)
    w.queries(alice)
    w.clock.advance(29)
    assert w.queries(bob) == []
    w.clock.advance(2)
    [query] = w.queries(bob)
    w.answer(bob, query)
    assert w.caps.features_of(bob) == frozenset(FEATURES) and w.caps.features_of(alice) == frozenset(FEATURES)


def test_the_timeout_is_the_configured_one():
    w = World(timeout="5")
    alice, bob = w.login("alice@localhost/pc"), w.login("bob@localhost/pc")
    w.present(alice), w.present(bob)
    w.queries(alice)
    w.clock.advance(5.1)
    assert len(w.queries(bob)) == 1


def test_an_error_answer_leaves_the_caps_unknown(w):
    alice = w.login("alice@localhost/pc")
    w.present(alice)
    query = w.queries(alice)[0]
    alice.feed(f"<iq type='error' id='{query['id']}' to='alice@localhost'><error type='cancel'>"
               "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")
    assert w.caps.features_of(alice) is None and w.known == []


def test_a_forged_answer_from_another_session_is_not_taken(w):
    alice, mallory = w.login("alice@localhost/pc"), w.login("mallory@localhost/pc")
    w.present(alice)
    query = w.queries(alice)[0]
    # mallory knows the id and answers with features that hash right
    features = FEATURES + ["evil"]
    mallory.feed(f"<iq type='result' id='{query['id']}' to='alice@localhost'>"
                 f"<query xmlns='http://jabber.org/protocol/disco#info'>{info(features)}</query></iq>")
    assert w.caps.features_of(alice) is None
    w.answer(alice, query)
    assert w.caps.features_of(alice) == frozenset(FEATURES)


def test_presence_without_caps_keeps_them_and_unavailable_forgets_them(w):
    alice = w.login("alice@localhost/pc")
    w.present(alice)
    w.answer(alice, w.queries(alice)[0])
    alice.feed("<presence><show>away</show></presence>")
    assert w.caps.features_of(alice) == frozenset(FEATURES)
    assert w.known == [alice]  # nothing changed, nothing fired again
    alice.feed("<presence type='unavailable'/>")
    assert w.caps.features_of(alice) is None


def test_the_same_caps_again_fire_nothing_and_new_caps_fire_again(w):
    alice = w.login("alice@localhost/pc")
    w.present(alice)
    w.answer(alice, w.queries(alice)[0])
    w.present(alice)
    assert w.known == [alice] and w.queries(alice) == []
    other = FEATURES[:2]
    w.present(alice, ver_of(other))
    assert w.caps.features_of(alice) is None
    w.answer(alice, w.queries(alice)[0], info(other))
    assert w.caps.features_of(alice) == frozenset(other) and w.known == [alice, alice]


def test_caps_claimed_while_a_query_to_the_session_is_out_are_asked_after_it(w):
    alice = w.login("alice@localhost/pc")
    w.present(alice)
    first = w.queries(alice)[0]
    other = FEATURES[:2]
    w.present(alice, ver_of(other))
    assert w.queries(alice) == []  # one query at a time per session
    w.answer(alice, first)  # the old caps: cached for others, not alice's any more
    assert w.caps.features_of(alice) is None
    [second] = w.queries(alice)
    w.answer(alice, second, info(other))
    assert w.caps.features_of(alice) == frozenset(other)
    bob = w.login("bob@localhost/pc")
    w.present(bob)
    assert w.caps.features_of(bob) == frozenset(FEATURES)


def test_a_session_gone_forgets_its_caps_and_a_new_one_with_its_jid_starts_afresh(w):
    alice = w.login("alice@localhost/pc")
    w.present(alice)
    w.answer(alice, w.queries(alice)[0])
    alice.logout()
    assert w.caps.features_of(alice) is None
    again = w.login("alice@localhost/pc")
    assert w.caps.features_of(again) is None


def test_a_sha_256_hash_is_verified_and_shared_too(w):
    ver = ver_of(algorithm="sha-256")
    alice, bob = w.login("alice@localhost/pc"), w.login("bob@localhost/pc")
    w.present(alice, ver, "sha-256"), w.present(bob, ver, "sha-256")
    w.answer(alice, w.queries(alice)[0])
    assert w.caps.features_of(bob) == frozenset(FEATURES) and w.queries(bob) == []


def test_legacy_caps_are_believed_but_only_for_the_same_account(w):
    alice = w.login("alice@localhost/pc")
    w.present(alice, "1.0", algorithm=None, extra=" ext='voice'")
    query = w.queries(alice)[0]
    assert query.firstChildElement()["node"] == f"{NODE}#1.0"
    w.answer(alice, query, info(["anything+notify"]))
    assert w.caps.features_of(alice) == frozenset(["anything+notify"])
    laptop = w.login("alice@localhost/laptop")
    w.present(laptop, "1.0", algorithm=None, extra=" ext='voice'")
    assert w.queries(laptop) == [] and w.caps.features_of(laptop) == frozenset(["anything+notify"])
    bob = w.login("bob@localhost/pc")
    w.present(bob, "1.0", algorithm=None, extra=" ext='voice'")
    assert len(w.queries(bob)) == 1  # another account: its own answer counts
    assert w.caps.features_of(bob) is None


def test_an_unsupported_hash_function_is_believed_for_that_account_only(w):
    alice, bob = w.login("alice@localhost/pc"), w.login("bob@localhost/pc")
    w.present(alice, "whatever", "md5"), w.present(bob, "whatever", "md5")
    assert len(w.queries(alice)) == 1 and len(w.queries(bob)) == 1


def test_the_cache_keeps_the_configured_number_of_hashes():
    w = World(cache_size="2")
    sets = [FEATURES[:1], FEATURES[:2], FEATURES]
    for i, features in enumerate(sets):
        session = w.login(f"u{i}@localhost/pc")
        w.present(session, ver_of(features))
        w.answer(session, w.queries(session)[0], info(features))
    first = w.login("late@localhost/a")
    w.present(first, ver_of(sets[0]))
    assert len(w.queries(first)) == 1  # the oldest was dropped
    last = w.login("late@localhost/b")
    w.present(last, ver_of(sets[2]))
    assert w.queries(last) == []


def test_one_user_cycling_unverifiable_caps_never_evicts_verified_hashes():
    w = World(cache_size="20")  # unverifiable answers get a tenth of it: 2
    verified = w.login("alice@localhost/pc")
    w.present(verified, ver_of())
    w.answer(verified, w.queries(verified)[0])
    mallory = w.login("mallory@localhost/pc")
    for n in range(25):  # more than the whole cache
        w.present(mallory, f"v{n}", algorithm=None)
        w.answer(mallory, w.queries(mallory)[-1], info([f"x{n}+notify"]))
    late = w.login("bob@localhost/pc")
    w.present(late, ver_of())
    assert w.queries(late) == [] and w.caps.features_of(late) == frozenset(FEATURES)
    assert len(w.caps._unverified) == 2


def test_an_answer_with_too_many_features_is_not_believed():
    w = World(max_features="2")
    alice = w.login("alice@localhost/pc")
    w.present(alice)
    w.answer(alice, w.queries(alice)[0])
    assert w.caps.features_of(alice) is None


def test_directed_presence_with_caps_is_not_the_sessions_caps(w):
    alice = w.login("alice@localhost/pc")
    alice.feed(f"<presence to='room@conference.example'><c xmlns='http://jabber.org/protocol/caps' "
               f"hash='sha-1' node='{NODE}' ver='{ver_of()}'/></presence>")
    assert w.queries(alice) == []
