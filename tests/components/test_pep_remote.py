"""PEP notifications to remote contacts (federation): a remote resource whose
available presence reached an account from a contact subscribed to it, with
caps, is an implicit recipient like a local one. Remote stanzas are injected
with ``router.route``; what the server sends to other domains is caught on
the route table's default route (s2s)."""

import pytest
from twisted.internet import task

from xmppd.components.caps import digest, verification_string
from xmppd.components.pep import REMOTE_PER_CONTACT
from xmppd.testing import Harness, parse

PUBSUB = "http://jabber.org/protocol/pubsub"
EVENT = "http://jabber.org/protocol/pubsub#event"
DISCO = "http://jabber.org/protocol/disco#info"
TUNE = "http://jabber.org/protocol/tune"
NICK = "http://jabber.org/protocol/nick"
COMPONENTS = ["roster", "presence", "messaging", "blocking", "caps", "pep", "disco"]
DAVE = "dave@remote.example"


OPEN = ("<publish-options><x xmlns='jabber:x:data' type='submit'>"
        "<field var='FORM_TYPE' type='hidden'>"
        f"<value>{PUBSUB}#publish-options</value></field>"
        "<field var='pubsub#access_model'><value>open</value></field></x>"
        "</publish-options>")


def features_for(notify):
    return [DISCO] + [f"{n}+notify" for n in notify]


def ver_for(notify):
    return digest("sha-1", verification_string([("client", "pc", "", "T")],
                                               features_for(notify), []))


def caps(notify):
    return (f"<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' "
            f"node='https://example.org' ver='{ver_for(notify)}'/>")


def info(notify):
    return ("<identity category='client' type='pc' name='T'/>"
            + "".join(f"<feature var='{f}'/>" for f in features_for(notify)))


class World:
    def __init__(self, options=None):
        self.clock = task.Clock()
        self.h = Harness(COMPONENTS, clock=self.clock, options=options)
        self.router = self.h.router
        #: what left for other domains
        self.out = []
        self.router.routes.default = lambda stanza, to: self.out.append(stanza) or True

    def login(self, jid, notify=(TUNE,)):
        """A local session with caps (answering the caps query if one comes)."""
        session = self.h.login(jid, available=False)
        session.feed(f"<presence>{caps(notify)}</presence>")
        for query in [s for s in session.received if s.name == "iq" and s["type"] == "get"]:
            session.received.remove(query)
            session.feed(f"<iq type='result' id='{query['id']}' to='{query['from']}'>"
                         f"<query xmlns='{DISCO}'>{info(notify)}</query></iq>")
        session.take()
        return session

    def remote(self, xml):
        """A stanza from another server."""
        self.router.route(parse(xml))

    def befriend(self, session, contact=DAVE, mutual=True):
        """``session``'s account subscribes to remote ``contact`` (and, with
        ``mutual``, the contact to it)."""
        session.feed(f"<presence type='subscribe' to='{contact}'/>")
        self.remote(f"<presence type='subscribed' from='{contact}' to='{session.bare}'/>")
        if mutual:
            self.remote(f"<presence type='subscribe' from='{contact}' to='{session.bare}'/>")
            session.feed(f"<presence type='subscribed' to='{contact}'/>")
        session.take()
        self.out.clear()

    def online(self, full, to, notify=(TUNE,), answer=True, extra=""):
        """Available presence of remote ``full`` (caps asking for ``notify``)
        to ``to``; the caps queries it is sent are answered with ``answer``."""
        self.remote(f"<presence from='{full}' to='{to}'>{caps(notify) if notify is not None else ''}"
                    f"{extra}</presence>")
        queries = self.queries()
        if answer:
            for query in queries:
                self.answer(query, notify)
        return queries

    def queries(self):
        """The disco#info queries sent to other domains (taken)."""
        found = [s for s in self.out if s.name == "iq" and s.getAttribute("type") == "get"
                 and next(s.elements(DISCO, "query"), None) is not None]
        self.out = [s for s in self.out if s not in found]
        return found

    def answer(self, query, notify, to=None):
        node = query.firstChildElement()["node"]
        self.remote(f"<iq type='result' id='{query['id']}' from='{query['to']}' "
                    f"to='{to or query['from']}'><query xmlns='{DISCO}' node='{node}'>"
                    f"{info(notify)}</query></iq>")

    def events(self, node=TUNE):
        """The event messages of ``node`` sent to other domains, by recipient (taken)."""
        found = {}
        for stanza in self.out:
            event = next(stanza.elements(EVENT, "event"), None) if stanza.name == "message" \
                else None
            if event is not None and any(c.getAttribute("node") == node for c in event.elements()):
                found.setdefault(stanza["to"], []).append(stanza)
        self.out.clear()
        return found

    @staticmethod
    def publish(session, node=TUNE, options=""):
        session.feed(f"<iq type='set' id='pub'><pubsub xmlns='{PUBSUB}'><publish node='{node}'>"
                     f"<item id='current'><tune xmlns='{TUNE}'/></item></publish>{options}"
                     "</pubsub></iq>")
        [reply] = [s for s in session.take() if s.name == "iq" and s["id"] == "pub"]
        assert reply["type"] == "result", reply.toXml()


@pytest.fixture
def w():
    return World()


def test_a_remote_contacts_unknown_caps_are_asked_from_the_account_then_it_is_notified(w):
    carol = w.login("carol@localhost/pc")
    w.befriend(carol)
    [query] = w.online(f"{DAVE}/phone", "carol@localhost", notify=[TUNE, NICK], answer=False)
    assert query["from"] == "carol@localhost" and query["to"] == f"{DAVE}/phone"
    assert query.firstChildElement()["node"] == f"https://example.org#{ver_for([TUNE, NICK])}"
    w.publish(carol)
    assert w.events() == {}  # its caps are not known yet
    w.answer(query, [TUNE, NICK])
    assert list(w.events()) == [f"{DAVE}/phone"]  # the last item, now that it asks
    w.publish(carol)
    [note] = w.events()[f"{DAVE}/phone"]
    assert note["from"] == "carol@localhost" and note["type"] == "headline"


def test_a_hash_verified_here_is_not_asked_again_and_the_last_item_goes_at_once(w):
    carol = w.login("carol@localhost/pc")  # carol's client verified the hash
    w.befriend(carol)
    w.publish(carol)
    w.out.clear()
    assert w.online(f"{DAVE}/phone", "carol@localhost/pc") == []
    assert list(w.events()) == [f"{DAVE}/phone"]  # the last item, on coming online
    w.online(f"{DAVE}/phone", "carol@localhost")  # the same presence again: nothing
    assert w.events() == {}


def test_a_remote_resource_gets_only_the_nodes_its_caps_ask_for(w):
    carol = w.login("carol@localhost/pc")
    w.befriend(carol)
    w.online(f"{DAVE}/phone", "carol@localhost", notify=[NICK])
    w.publish(carol)
    assert w.events() == {}


def test_a_remote_contact_not_subscribed_to_the_account_is_not_tracked(w):
    carol = w.login("carol@localhost/pc")
    w.befriend(carol, mutual=False)  # carol sees dave; dave does not see carol
    assert w.online(f"{DAVE}/phone", "carol@localhost", notify=["urn:x:new"]) == []
    w.online(f"{DAVE}/phone", "carol@localhost")
    w.publish(carol, options=OPEN)
    assert w.events() == {}


def test_a_wrong_caps_answer_from_a_remote_resource_is_not_believed(w):
    carol = w.login("carol@localhost/pc")
    w.befriend(carol)
    [query] = w.online(f"{DAVE}/phone", "carol@localhost", notify=[NICK], answer=False)
    w.answer(query, [NICK, TUNE])  # not what the ver hashes
    w.publish(carol)
    assert w.events() == {}


def test_an_answer_from_another_jid_is_not_taken(w):
    carol = w.login("carol@localhost/pc")
    w.befriend(carol)
    [query] = w.online(f"{DAVE}/phone", "carol@localhost", notify=[TUNE, NICK], answer=False)
    query["to"] = f"{DAVE}/other"  # the answer comes from there
    w.answer(query, [TUNE, NICK])
    w.publish(carol)
    assert w.events() == {}


def test_a_remote_resources_notifications_respect_the_access_model(w):
    carol = w.login("carol@localhost/pc")
    w.befriend(carol)
    w.online(f"{DAVE}/phone", "carol@localhost")
    whitelist = ("<publish-options><x xmlns='jabber:x:data' type='submit'>"
                 "<field var='FORM_TYPE' type='hidden'>"
                 f"<value>{PUBSUB}#publish-options</value></field>"
                 "<field var='pubsub#access_model'><value>whitelist</value></field></x>"
                 "</publish-options>")
    w.publish(carol, options=whitelist)
    assert w.events() == {}


def test_unavailable_forgets_a_remote_resource(w):
    carol = w.login("carol@localhost/pc")
    w.befriend(carol)
    w.online(f"{DAVE}/phone", "carol@localhost")
    w.online(f"{DAVE}/laptop", "carol@localhost")
    w.remote(f"<presence type='unavailable' from='{DAVE}/phone' to='carol@localhost'/>")
    w.publish(carol)
    assert list(w.events()) == [f"{DAVE}/laptop"]


@pytest.mark.parametrize("presence", [
    f"<presence type='error' from='{DAVE}' to='carol@localhost'>"
    "<error type='cancel'><remote-server-not-found "
    "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>",
    f"<presence type='unavailable' from='{DAVE}' to='carol@localhost'/>",
    f"<presence type='unsubscribe' from='{DAVE}' to='carol@localhost'/>",
])
def test_error_unavailable_from_the_bare_jid_and_unsubscribe_forget_all_its_resources(w, presence):
    carol = w.login("carol@localhost/pc")
    w.befriend(carol)
    w.online(f"{DAVE}/phone", "carol@localhost")
    w.online(f"{DAVE}/laptop", "carol@localhost")
    w.remote(presence)
    w.publish(carol, options=OPEN)  # one dave may read whatever his subscription
    assert w.events() == {}


def test_an_error_presence_from_one_resource_forgets_only_it(w):
    carol = w.login("carol@localhost/pc")
    w.befriend(carol)
    w.online(f"{DAVE}/phone", "carol@localhost")
    w.online(f"{DAVE}/laptop", "carol@localhost")
    w.remote(f"<presence type='error' from='{DAVE}/phone' to='carol@localhost'/>")
    w.publish(carol)
    assert list(w.events()) == [f"{DAVE}/laptop"]


def test_presence_without_caps_keeps_the_interest_and_tracks_nothing_new(w):
    carol = w.login("carol@localhost/pc")
    w.befriend(carol)
    w.online(f"{DAVE}/phone", "carol@localhost")
    w.online(f"{DAVE}/phone", "carol@localhost", notify=None, extra="<show>away</show>")
    w.online(f"{DAVE}/laptop", "carol@localhost", notify=None)
    w.publish(carol)
    assert list(w.events()) == [f"{DAVE}/phone"]


def test_a_contact_that_lost_the_subscription_is_forgotten_at_its_next_presence(w):
    carol = w.login("carol@localhost/pc")
    w.befriend(carol)
    w.online(f"{DAVE}/phone", "carol@localhost")
    carol.feed(f"<presence type='unsubscribed' to='{DAVE}'/>")  # carol cancels dave's
    w.out.clear()
    w.online(f"{DAVE}/phone", "carol@localhost")
    w.publish(carol, options=OPEN)
    assert w.events() == {}


def test_new_caps_of_a_remote_resource_bring_the_last_item_of_the_new_nodes(w):
    carol = w.login("carol@localhost/pc", notify=[TUNE, NICK])
    w.befriend(carol)
    w.publish(carol)
    w.online(f"{DAVE}/phone", "carol@localhost", notify=[NICK])
    assert w.events() == {}
    w.online(f"{DAVE}/phone", "carol@localhost", notify=[NICK, TUNE])
    assert list(w.events()) == [f"{DAVE}/phone"]


def test_the_accounts_last_session_leaving_forgets_its_remote_resources(w):
    carol = w.login("carol@localhost/pc")
    w.befriend(carol)
    w.online(f"{DAVE}/phone", "carol@localhost")
    carol.logout()
    carol = w.login("carol@localhost/pc")
    # its initial presence probed dave, whose answer has not come yet
    assert any(s.name == "presence" and s.getAttribute("type") == "probe" for s in w.out)
    w.out.clear()
    w.publish(carol)
    assert w.events() == {}
    w.online(f"{DAVE}/phone", "carol@localhost/pc")  # the probe's answer
    assert list(w.events()) == [f"{DAVE}/phone"]  # the last item


def test_presence_to_an_account_without_a_session_is_not_tracked(w):
    carol = w.login("carol@localhost/pc")
    w.befriend(carol)
    carol.logout()
    assert w.online(f"{DAVE}/phone", "carol@localhost", notify=["urn:x:new"]) == []
    carol = w.login("carol@localhost/pc")
    w.out.clear()
    w.publish(carol)
    assert w.events() == {}


def test_one_remote_contact_keeps_a_bounded_number_of_resources_oldest_heard_going_first(w):
    carol = w.login("carol@localhost/pc")
    w.befriend(carol)
    fulls = [f"{DAVE}/r{i}" for i in range(REMOTE_PER_CONTACT)]
    for full in fulls:
        w.online(full, "carol@localhost")
    w.online(fulls[0], "carol@localhost")  # heard from again: r1 is the oldest now
    w.online(f"{DAVE}/new", "carol@localhost")
    w.publish(carol)
    assert sorted(w.events()) == sorted([fulls[0]] + fulls[2:] + [f"{DAVE}/new"])


def test_an_account_keeps_at_most_three_remote_resources_per_roster_item():
    w = World({"component:roster": {"max_items": "2"}})
    carol = w.login("carol@localhost/pc")
    w.befriend(carol)
    w.befriend(carol, "erin@remote.example")
    fulls = [f"{DAVE}/r{i}" for i in range(4)] + [f"erin@remote.example/r{i}" for i in range(3)]
    for full in fulls:
        w.online(full, "carol@localhost")
    w.publish(carol)
    assert sorted(w.events()) == sorted(fulls[1:])


def test_two_accounts_hearing_one_remote_resource_share_the_query_and_each_notifies_it(w):
    carol, alice = w.login("carol@localhost/pc"), w.login("alice@localhost/pc")
    w.befriend(carol)
    w.befriend(alice)
    [query] = w.online(f"{DAVE}/phone", "carol@localhost", notify=["urn:x:new", TUNE],
                       answer=False)
    assert w.online(f"{DAVE}/phone", "alice@localhost", notify=["urn:x:new", TUNE],
                    answer=False) == []
    w.answer(query, ["urn:x:new", TUNE])
    w.publish(carol)
    assert list(w.events()) == [f"{DAVE}/phone"]
    # one account forgetting it leaves the other's
    w.remote(f"<presence type='unavailable' from='{DAVE}/phone' to='carol@localhost'/>")
    w.publish(alice)
    [note] = w.events()[f"{DAVE}/phone"]
    assert note["from"] == "alice@localhost"
    w.publish(carol)
    assert w.events() == {}


def test_an_account_deleted_forgets_its_remote_resources(w):
    carol = w.login("carol@localhost/pc")
    w.befriend(carol)
    w.online(f"{DAVE}/phone", "carol@localhost")
    pep = w.h.component("pep")
    assert "carol@localhost" in pep._remote
    w.router.notify("account-deleted", "carol@localhost")
    assert "carol@localhost" not in pep._remote
    assert f"{DAVE}/phone" not in pep._recipients.get("carol@localhost", {})
