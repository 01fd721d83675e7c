"""XEP-0115 caps of remote resources (federation): learned through the same
verified cache as local sessions, asked over s2s from the account they
reached, held per account."""

import pytest
from twisted.internet import task

from xmppd import jid as jidlib
from xmppd.components.caps import CAPS_KNOWN, RemoteResource, digest, verification_string
from xmppd.testing import Harness, parse

DISCO = "http://jabber.org/protocol/disco#info"
NODE = "https://example.org/client"
FEATURES = [DISCO, "urn:xmpp:avatar:metadata+notify"]


def ver_of(features=FEATURES):
    return digest("sha-1", verification_string([("client", "pc", "", "T")], features, []))


def c(ver=None, hash_attr="hash='sha-1' "):
    return parse(f"<c xmlns='http://jabber.org/protocol/caps' {hash_attr}node='{NODE}' "
                 f"ver='{ver or ver_of()}'/>")


def info(features=FEATURES):
    return ("<identity category='client' type='pc' name='T'/>"
            + "".join(f"<feature var='{f}'/>" for f in features))


class World:
    def __init__(self):
        self.clock = task.Clock()
        self.h = Harness(["roster", "presence", "caps"], clock=self.clock)
        self.router = self.h.router
        self.caps = self.h.component("caps")
        self.known = []
        self.router.hook(CAPS_KNOWN, self.known.append)
        self.out = []
        self.router.routes.default = lambda stanza, to: self.out.append(stanza) or True

    def remote(self, full, account="alice@localhost"):
        return RemoteResource(jidlib.parse(full), account, self.router)

    def queries(self):
        found = [s for s in self.out if s.name == "iq" and s.getAttribute("type") == "get"]
        self.out = [s for s in self.out if s not in found]
        return found

    def answer(self, query, features=FEATURES):
        self.router.route(parse(
            f"<iq type='result' id='{query['id']}' from='{query['to']}' to='{query['from']}'>"
            f"<query xmlns='{DISCO}' node='{query.firstChildElement()['node']}'>"
            f"{info(features)}</query></iq>"))


@pytest.fixture
def w():
    return World()


def test_a_remote_resources_hash_is_asked_from_the_account_and_shared_with_local_sessions(w):
    dave = w.remote("dave@remote.example/phone")
    w.caps.claim(dave, c())
    [query] = w.queries()
    assert query["from"] == "alice@localhost" and query["to"] == "dave@remote.example/phone"
    assert query.firstChildElement()["node"] == f"{NODE}#{ver_of()}"
    bob = w.h.login("bob@localhost/pc", available=False)
    bob.feed(f"<presence>{c().toXml()}</presence>")
    assert [s for s in bob.received if s.name == "iq"] == []  # it waits for dave's answer
    w.answer(query)
    assert w.caps.features_of(dave) == frozenset(FEATURES)
    assert w.caps.features_of(bob) == frozenset(FEATURES)
    assert w.known == [dave, bob]


def test_a_hash_a_local_client_verified_is_known_for_a_remote_resource_at_once(w):
    bob = w.h.login("bob@localhost/pc", available=False)
    bob.feed(f"<presence>{c().toXml()}</presence>")
    [query] = [s for s in bob.received if s.name == "iq"]
    bob.feed(f"<iq type='result' id='{query['id']}' to='{query['from']}'>"
             f"<query xmlns='{DISCO}'>{info()}</query></iq>")
    dave = w.remote("dave@remote.example/phone")
    w.caps.claim(dave, c())
    assert w.queries() == []
    assert w.caps.features_of(dave) == frozenset(FEATURES)
    assert w.known == [bob, dave]


def test_a_wrong_answer_is_not_believed_and_a_late_one_lets_the_next_be_asked(w):
    dave, erin = w.remote("dave@remote.example/phone"), w.remote("erin@else.example/pc")
    w.caps.claim(dave, c())
    w.caps.claim(erin, c())
    [query] = w.queries()
    w.answer(query, [DISCO])  # does not hash to the ver
    [query] = w.queries()
    assert query["to"] == "erin@else.example/pc"
    w.clock.advance(w.caps.config["timeout"])
    assert w.queries() == []  # nobody else claims it
    assert w.caps.features_of(dave) is None and w.caps.features_of(erin) is None


def test_each_account_holds_its_own_remote_resource(w):
    for_alice = w.remote("dave@remote.example/phone", "alice@localhost")
    for_bob = w.remote("dave@remote.example/phone", "bob@localhost")
    w.caps.claim(for_alice, c())
    w.caps.claim(for_bob, c())
    [query] = w.queries()  # one query for the hash
    w.answer(query)
    w.caps.forget(for_alice)
    assert w.caps.features_of(for_alice) is None
    assert w.caps.features_of(for_bob) == frozenset(FEATURES)


def test_a_forgotten_remote_resource_is_not_learned_by_a_late_answer(w):
    dave = w.remote("dave@remote.example/phone")
    w.caps.claim(dave, c())
    [query] = w.queries()
    w.caps.forget(dave)
    w.answer(query)
    assert w.caps.features_of(dave) is None and w.known == []


def test_unverifiable_remote_caps_are_believed_for_that_remote_account_only(w):
    legacy = c(ver="1.0", hash_attr="")
    phone, laptop = w.remote("dave@remote.example/phone"), w.remote("dave@remote.example/laptop")
    w.caps.claim(phone, legacy)
    [query] = w.queries()
    w.answer(query)
    w.caps.claim(laptop, legacy)
    assert w.queries() == [] and w.caps.features_of(laptop) == frozenset(FEATURES)
    erin = w.remote("erin@remote.example/pc")
    w.caps.claim(erin, legacy)
    assert len(w.queries()) == 1 and w.caps.features_of(erin) is None


def test_a_remote_resource_routes_what_it_is_sent(w):
    dave = w.remote("dave@remote.example/phone")
    dave.send(parse("<message from='alice@localhost'><body>hi</body></message>"))
    [sent] = w.out
    assert sent["to"] == "dave@remote.example/phone" and sent.name == "message"
