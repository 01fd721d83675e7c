"""XEP-0163 PEP: a pubsub service on every account's bare JID, notifications
filtered by the XEP-0115 caps of each resource, the last item on coming
online, access models read from the roster."""

import pytest
from twisted.internet import defer, task

from xmppd.components.caps import digest, verification_string
from xmppd.components.pep import CHANGED
from xmppd.testing import Harness, error_condition, parse, result_of

PUBSUB = "http://jabber.org/protocol/pubsub"
EVENT = "http://jabber.org/protocol/pubsub#event"
ERRORS = "http://jabber.org/protocol/pubsub#errors"
TUNE = "http://jabber.org/protocol/tune"
NICK = "http://jabber.org/protocol/nick"
DEVICES = "eu.siacs.conversations.axolotl.devicelist"
COMPONENTS = ["roster", "presence", "messaging", "blocking", "caps", "pep", "disco"]


class World:
    def __init__(self, **options):
        self.clock = task.Clock()
        self.h = Harness(COMPONENTS, clock=self.clock,
                         options={"component:pep": options} if options else None)
        self.pep = self.h.component("pep")
        self.changes = []
        self.h.router.hook(CHANGED, self.changes.append)

    def login(self, jid, notify=(), caps=True, settle=True):
        """A session that sends initial presence with caps asking for
        ``notify`` (answering the caps query if one comes); None: no caps."""
        session = self.h.login(jid, available=False)
        if caps:
            self.present(session, notify)
        for other in self.h.router.resources(session.bare).values():
            if settle or other is not session:
                other.take()  # the login settles: presence (and last items)
        return session

    def present(self, session, notify=()):
        features = ["http://jabber.org/protocol/disco#info"] + [f"{n}+notify" for n in notify]
        ver = digest("sha-1", verification_string([("client", "pc", "", "T")], features, []))
        session.feed(f"<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' "
                     f"node='https://example.org' ver='{ver}'/></presence>")
        for query in [s for s in session.received if s.name == "iq" and s["type"] == "get"]:
            session.received.remove(query)
            session.feed(f"<iq type='result' id='{query['id']}' to='{query['from']}'>"
                         "<query xmlns='http://jabber.org/protocol/disco#info'>"
                         "<identity category='client' type='pc' name='T'/>"
                         + "".join(f"<feature var='{f}'/>" for f in features)
                         + "</query></iq>")

    @staticmethod
    def friends(a, b):
        """Mutual presence subscription between two sessions' accounts."""
        a.feed(f"<presence type='subscribe' to='{b.bare}'/>")
        b.feed(f"<presence type='subscribed' to='{a.bare}'/>")
        b.feed(f"<presence type='subscribe' to='{a.bare}'/>")
        a.feed(f"<presence type='subscribed' to='{b.bare}'/>")
        a.take(), b.take()

    @staticmethod
    def publish(session, node=TUNE, item_id="current", payload=None, options="", to=""):
        payload = payload or f"<tune xmlns='{TUNE}'><title>Song</title></tune>"
        item = f"<item id='{item_id}'>{payload}</item>" if item_id else f"<item>{payload}</item>"
        to_attr = f" to='{to}'" if to else ""
        session.feed(f"<iq type='set' id='pub'{to_attr}><pubsub xmlns='{PUBSUB}'>"
                     f"<publish node='{node}'>{item}</publish>{options}</pubsub></iq>")
        return World.reply(session, "pub")

    @staticmethod
    def reply(session, iq_id):
        """The answer to iq ``iq_id`` (taken; everything else stays received)."""
        [reply] = [s for s in session.received if s.name == "iq" and s.getAttribute("id") == iq_id]
        session.received.remove(reply)
        return reply

    @staticmethod
    def items_of(session, owner, node=TUNE):
        session.feed(f"<iq type='get' id='items' to='{owner}'><pubsub xmlns='{PUBSUB}'>"
                     f"<items node='{node}'/></pubsub></iq>")
        return World.reply(session, "items")


def options_form(**fields):
    body = "".join(f"<field var='pubsub#{k}'><value>{v}</value></field>" for k, v in fields.items())
    return ("<publish-options><x xmlns='jabber:x:data' type='submit'>"
            "<field var='FORM_TYPE' type='hidden'>"
            "<value>http://jabber.org/protocol/pubsub#publish-options</value></field>"
            f"{body}</x></publish-options>")


def events(session, node=None):
    """The pubsub event messages ``session`` received (taking everything)."""
    found = []
    for stanza in session.take():
        if stanza.name != "message":
            continue
        event = next(stanza.elements(EVENT, "event"), None)
        if event is None:
            continue
        if node is None or any(c.getAttribute("node") == node for c in event.elements()):
            found.append(stanza)
    return found


def item_ids(message):
    event = next(message.elements(EVENT, "event"))
    return [i["id"] for items in event.elements(EVENT, "items") for i in items.elements(EVENT, "item")]


@pytest.fixture
def w():
    return World()


# -- publishing and who is notified ----------------------------------------------------

def test_a_publish_reaches_contacts_resources_that_asked_for_the_node_and_not_the_others(w):
    alice = w.login("alice@localhost/pc", [TUNE])
    bob = w.login("bob@localhost/pc", [TUNE])
    bob_phone = w.login("bob@localhost/phone", [NICK])  # no tune+notify
    w.friends(alice, bob)
    bob_phone.take()
    reply = w.publish(alice)
    assert reply["type"] == "result"
    [note] = events(bob, TUNE)
    assert note["from"] == "alice@localhost" and note["type"] == "headline"
    assert note["to"] == "bob@localhost/pc" and item_ids(note) == ["current"]
    assert events(bob_phone) == []
    [own] = events(alice, TUNE)  # the owner's own resource asked too
    assert own["to"] == "alice@localhost/pc"


def test_the_event_is_sent_before_the_publish_result_as_prosody_does(w):
    alice = w.login("alice@localhost/pc", [TUNE])
    alice.feed(f"<iq type='set' id='p'><pubsub xmlns='{PUBSUB}'><publish node='{TUNE}'>"
               f"<item id='1'><tune xmlns='{TUNE}'/></item></publish></pubsub></iq>")
    assert [s.name for s in alice.take()] == ["message", "iq"]


def test_a_resource_without_caps_gets_no_notification(w):
    alice = w.login("alice@localhost/pc", [TUNE])
    bob = w.h.login("bob@localhost/pc")  # presence without caps
    w.friends(alice, bob)
    w.publish(alice)
    assert events(bob) == []


def test_someone_without_a_presence_subscription_is_not_notified_and_may_not_read(w):
    alice = w.login("alice@localhost/pc", [TUNE])
    eve = w.login("eve@localhost/pc", [TUNE])
    eve.feed("<presence to='alice@localhost'/>")  # directed presence reaches alice
    w.publish(alice)
    assert events(eve) == []
    reply = w.items_of(eve, "alice@localhost")
    assert error_condition(reply) == "not-authorized"
    [error] = [c for c in reply.elements() if c.name == "error"]
    assert any(c.name == "presence-subscription-required" and c.uri == ERRORS
               for c in error.elements())


def test_a_strangers_directed_presence_does_not_make_it_a_recipient_of_open_nodes(w):
    # Prosody's mod_pep tracks only presence from accounts subscribed to the owner's
    alice = w.login("alice@localhost/pc", [DEVICES])
    eve = w.login("eve@localhost/pc", [DEVICES])
    eve.feed("<presence to='alice@localhost'/>")
    eve.take()
    w.publish(alice, node=DEVICES, payload=f"<list xmlns='{DEVICES}'/>",
              options=options_form(access_model="open"))
    assert events(eve) == []
    assert w.items_of(eve, "alice@localhost", DEVICES)["type"] == "result"  # it may read


def test_a_contacts_presence_makes_it_a_recipient_of_open_nodes(w):
    alice = w.login("alice@localhost/pc", [DEVICES])
    bob = w.login("bob@localhost/pc", [DEVICES])
    w.friends(alice, bob)
    w.publish(alice, node=DEVICES, payload=f"<list xmlns='{DEVICES}'/>",
              options=options_form(access_model="open"))
    assert [item_ids(m) for m in events(bob, DEVICES)] == [["current"]]


def test_a_publish_past_the_accounts_max_bytes_is_policy_violation():
    w = World(max_bytes="200")
    alice = w.login("alice@localhost/pc")
    big = f"<nick xmlns='{NICK}'>{'a' * 120}</nick>"
    assert w.publish(alice, node=NICK, payload=big)["type"] == "result"
    reply = w.publish(alice, node=DEVICES, payload=f"<list xmlns='{DEVICES}'>{'d' * 120}</list>")
    assert error_condition(reply) == "policy-violation"
    assert w.items_of(alice, "alice@localhost", DEVICES)["type"] == "error"  # not created
    # replacing the one item of a max_items=1 node frees its bytes first
    assert w.publish(alice, node=NICK, payload=big.replace("a", "b"))["type"] == "result"


def test_a_contact_reads_the_items_of_a_presence_node(w):
    alice = w.login("alice@localhost/pc")
    bob = w.login("bob@localhost/pc")
    w.friends(alice, bob)
    w.publish(alice)
    reply = w.items_of(bob, "alice@localhost")
    assert reply["type"] == "result"
    items = next(next(reply.elements(PUBSUB, "pubsub")).elements(PUBSUB, "items"))
    assert [i["id"] for i in items.elements(PUBSUB, "item")] == ["current"]


def test_publishing_to_someone_elses_pep_node_is_forbidden_and_stores_nothing(w):
    alice = w.login("alice@localhost/pc")
    bob = w.login("bob@localhost/pc")
    w.friends(alice, bob)
    reply = w.publish(bob, to="alice@localhost")
    assert error_condition(reply) == "forbidden"
    assert result_of(w.pep.get_service("alice@localhost")).nodes == {}


def test_a_node_is_created_on_first_publish_with_prosodys_pep_defaults(w):
    alice = w.login("alice@localhost/pc")
    w.publish(alice)
    node = result_of(w.pep.get_service("alice@localhost")).nodes[TUNE]
    assert node.config["access_model"] == "presence"
    assert node.config["max_items"] == 1
    assert node.config["send_last_published_item"] == "on_sub_and_presence"
    assert node.affiliations == {"alice@localhost": "owner"}


def test_a_node_keeps_one_item_by_default(w):
    alice = w.login("alice@localhost/pc")
    w.publish(alice, item_id="a")
    w.publish(alice, item_id="b")
    reply = w.items_of(alice, "alice@localhost")
    items = next(next(reply.elements(PUBSUB, "pubsub")).elements(PUBSUB, "items"))
    assert [i["id"] for i in items.elements(PUBSUB, "item")] == ["b"]


def test_a_retraction_with_notify_reaches_the_interested_resources(w):
    alice = w.login("alice@localhost/pc")
    bob = w.login("bob@localhost/pc", [TUNE])
    w.friends(alice, bob)
    w.publish(alice)
    events(bob)
    alice.feed(f"<iq type='set' id='r'><pubsub xmlns='{PUBSUB}'><retract node='{TUNE}' "
               "notify='true'><item id='current'/></retract></pubsub></iq>")
    [note] = events(bob)
    retract = next(next(next(note.elements(EVENT, "event")).elements(EVENT, "items"))
                   .elements(EVENT, "retract"))
    assert retract["id"] == "current"


# -- the last item on coming online ----------------------------------------------------

def test_a_resource_coming_online_gets_the_last_item_of_each_node_it_asks_for(w):
    alice = w.login("alice@localhost/pc")
    bob = w.login("bob@localhost/pc")
    w.friends(alice, bob)
    w.publish(alice, item_id="t1")
    w.publish(alice, NICK, "n1", f"<nick xmlns='{NICK}'>Alice</nick>")
    phone = w.login("bob@localhost/phone", [TUNE], settle=False)
    [note] = events(phone)
    assert note["to"] == "bob@localhost/phone" and item_ids(note) == ["t1"]


def test_the_last_item_waits_for_caps_that_are_not_known_yet(w):
    alice = w.login("alice@localhost/pc")
    bob = w.login("bob@localhost/pc")
    w.friends(alice, bob)
    w.publish(alice)
    phone = w.h.login("bob@localhost/phone", available=False)
    features = ["http://jabber.org/protocol/disco#info", f"{TUNE}+notify", "x-new"]
    ver = digest("sha-1", verification_string([("client", "pc", "", "T")], features, []))
    phone.feed(f"<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' "
               f"node='n' ver='{ver}'/></presence>")
    [query] = [s for s in phone.take() if s.name == "iq"]
    assert events(phone) == []
    phone.feed(f"<iq type='result' id='{query['id']}' to='{query['from']}'>"
               "<query xmlns='http://jabber.org/protocol/disco#info'>"
               "<identity category='client' type='pc' name='T'/>"
               + "".join(f"<feature var='{f}'/>" for f in features) + "</query></iq>")
    [note] = events(phone)
    assert item_ids(note) == ["current"]


def test_presence_again_does_not_send_the_last_item_again_but_after_unavailable_it_does(w):
    alice = w.login("alice@localhost/pc")
    w.publish(alice)
    bob = w.login("bob@localhost/pc", [TUNE])
    w.friends(alice, bob)
    events(bob)
    w.present(bob, [TUNE])
    assert events(bob) == []
    bob.feed("<presence type='unavailable'/>")
    w.present(bob, [TUNE])
    assert len(events(bob, TUNE)) == 1


def test_caps_that_come_to_ask_for_a_node_bring_its_last_item(w):
    alice = w.login("alice@localhost/pc")
    bob = w.login("bob@localhost/pc", [NICK])
    w.friends(alice, bob)
    w.publish(alice)
    events(bob)
    w.present(bob, [NICK, TUNE])
    [note] = events(bob)
    assert item_ids(note) == ["current"]


def test_the_owners_own_new_resource_gets_its_last_items(w):
    alice = w.login("alice@localhost/pc")
    w.publish(alice)
    laptop = w.login("alice@localhost/laptop", [TUNE], settle=False)
    assert len(events(laptop, TUNE)) == 1


# -- access models ------------------------------------------------------------------------

def test_an_open_node_from_publish_options_is_read_by_anyone(w):
    alice = w.login("alice@localhost/pc")
    stranger = w.login("eve@localhost/pc")
    devices = "<list xmlns='eu.siacs.conversations.axolotl'><device id='42'/></list>"
    reply = w.publish(alice, DEVICES, "current", devices, options_form(access_model="open"))
    assert reply["type"] == "result"
    reply = w.items_of(stranger, "alice@localhost", DEVICES)
    assert reply["type"] == "result"
    assert "device id='42'" in reply.toXml().replace('"', "'")


def test_a_whitelist_node_is_the_owners_alone(w):
    alice = w.login("alice@localhost/pc", ["private"])
    bob = w.login("bob@localhost/pc", ["private"])
    w.friends(alice, bob)
    w.publish(alice, "private", "1", "<secret xmlns='x'/>", options_form(access_model="whitelist"))
    assert events(bob) == [] and len(events(alice)) == 1
    reply = w.items_of(bob, "alice@localhost", "private")
    assert error_condition(reply) == "not-allowed"
    reply = w.items_of(alice, "alice@localhost", "private")
    assert reply["type"] == "result"


def test_a_roster_node_is_read_by_contacts_in_the_allowed_groups(w):
    alice = w.login("alice@localhost/pc")
    bob = w.login("bob@localhost/pc")
    carol = w.login("carol@localhost/pc")
    w.friends(alice, bob), w.friends(alice, carol)
    alice.feed("<iq type='set' id='g'><query xmlns='jabber:iq:roster'>"
               "<item jid='bob@localhost'><group>Friends</group></item></query></iq>")
    alice.take()
    options = ("<publish-options><x xmlns='jabber:x:data' type='submit'>"
               "<field var='FORM_TYPE' type='hidden'>"
               "<value>http://jabber.org/protocol/pubsub#publish-options</value></field>"
               "<field var='pubsub#access_model'><value>roster</value></field>"
               "<field var='pubsub#roster_groups_allowed'><value>Friends</value></field>"
               "</x></publish-options>")
    assert w.publish(alice, options=options)["type"] == "result"
    assert w.items_of(bob, "alice@localhost")["type"] == "result"
    assert error_condition(w.items_of(carol, "alice@localhost")) == "not-authorized"


def test_a_contact_who_loses_the_subscription_is_not_notified_any_more(w):
    alice = w.login("alice@localhost/pc")
    bob = w.login("bob@localhost/pc", [TUNE])
    w.friends(alice, bob)
    alice.feed("<presence type='unsubscribed' to='bob@localhost'/>")
    bob.take()
    w.publish(alice)
    assert events(bob) == []


def test_a_contact_the_owner_blocks_is_not_notified(w):
    alice = w.login("alice@localhost/pc")
    bob = w.login("bob@localhost/pc", [TUNE])
    w.friends(alice, bob)
    alice.feed("<iq type='set' id='b'><block xmlns='urn:xmpp:blocking'>"
               "<item jid='bob@localhost'/></block></iq>")
    bob.take()
    w.publish(alice)
    assert events(bob) == []


# -- explicit subscriptions ------------------------------------------------------------

def test_an_explicit_subscriber_of_an_open_node_is_notified_at_its_jid(w):
    alice = w.login("alice@localhost/pc")
    w.publish(alice, options=options_form(access_model="open"))
    eve = w.login("eve@localhost/pc")
    eve.feed(f"<iq type='set' id='s' to='alice@localhost'><pubsub xmlns='{PUBSUB}'>"
             f"<subscribe node='{TUNE}' jid='eve@localhost'/></pubsub></iq>")
    reply = World.reply(eve, "s")
    assert reply["type"] == "result", reply.toXml()
    events(eve)  # the last item, on subscribing
    w.publish(alice, item_id="2")
    [note] = events(eve)
    assert item_ids(note) == ["2"] and note["to"] == "eve@localhost"


# -- what others see -----------------------------------------------------------------

def test_event_items_name_their_publisher_and_retrieved_items_only_with_itemreply(w):
    alice = w.login("alice@localhost/pc", [TUNE, NICK])
    w.publish(alice)
    [note] = events(alice)
    item = next(next(next(note.elements(EVENT, "event")).elements()).elements())
    assert item["publisher"] == "alice@localhost"
    retrieved = w.items_of(alice, "alice@localhost")
    assert "publisher" not in retrieved.toXml()
    w.publish(alice, NICK, "n", f"<nick xmlns='{NICK}'>A</nick>", options_form(itemreply="publisher"))
    events(alice)
    retrieved = w.items_of(alice, "alice@localhost", NICK)
    assert "publisher='alice@localhost'" in retrieved.toXml().replace('"', "'")


def test_disco_items_of_an_account_lists_the_nodes_the_requester_may_see(w):
    alice = w.login("alice@localhost/pc")
    bob = w.login("bob@localhost/pc")
    w.friends(alice, bob)
    w.publish(alice)
    w.publish(alice, "private", "1", "<p xmlns='x'/>", options_form(access_model="whitelist"))
    for session, expected in ((bob, [TUNE]), (alice, [TUNE, "private"])):
        session.feed("<iq type='get' id='d' to='alice@localhost'>"
                     "<query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
        [reply] = session.take()
        assert reply["from"] == "alice@localhost"
        assert sorted(i["node"] for i in reply.firstChildElement().elements()) == expected
        assert all(i["jid"] == "alice@localhost" for i in reply.firstChildElement().elements())


def test_disco_info_of_an_account_has_the_pep_identity_and_features(w):
    alice = w.login("alice@localhost/pc")
    alice.feed("<iq type='get' id='d'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    reply = World.reply(alice, "d")
    query = reply.firstChildElement()
    identities = {(i["category"], i["type"]) for i in query.elements() if i.name == "identity"}
    assert ("pubsub", "pep") in identities and ("account", "registered") in identities
    features = {f["var"] for f in query.elements() if f.name == "feature"}
    for feature in (PUBSUB, f"{PUBSUB}#publish", f"{PUBSUB}#publish-options",
                    f"{PUBSUB}#auto-create", f"{PUBSUB}#auto-subscribe",
                    f"{PUBSUB}#filtered-notifications", f"{PUBSUB}#access-whitelist",
                    f"{PUBSUB}#last-published"):
        assert feature in features


def test_a_request_to_an_account_that_does_not_exist_is_forbidden_as_in_prosody(w):
    alice = w.login("alice@localhost/pc")
    reply = w.items_of(alice, "nobody@localhost")
    assert error_condition(reply) == "forbidden"


# -- limits ------------------------------------------------------------------------------

def test_more_nodes_than_max_nodes_are_refused_while_existing_ones_take_items():
    w = World(max_nodes="2")
    alice = w.login("alice@localhost/pc")
    assert w.publish(alice, "n1")["type"] == "result"
    assert w.publish(alice, "n2")["type"] == "result"
    reply = w.publish(alice, "n3")
    assert error_condition(reply) == "policy-violation"
    assert "max-nodes-exceeded" in reply.toXml()
    assert w.publish(alice, "n1", "again")["type"] == "result"


def test_a_payload_over_max_payload_size_is_refused_and_nothing_stored():
    w = World(max_payload_size="100")
    alice = w.login("alice@localhost/pc")
    reply = w.publish(alice, payload=f"<tune xmlns='{TUNE}'><title>{'x' * 200}</title></tune>")
    assert error_condition(reply) == "not-acceptable" and "payload-too-big" in reply.toXml()
    assert result_of(w.pep.get_service("alice@localhost")).nodes == {}


def test_max_items_beyond_the_ceiling_is_refused():
    w = World(max_items="5")
    alice = w.login("alice@localhost/pc")
    reply = w.publish(alice, options=options_form(max_items="6"))
    assert reply["type"] == "error"
    assert w.publish(alice, options=options_form(max_items="max"))["type"] == "result"
    node = result_of(w.pep.get_service("alice@localhost")).nodes[TUNE]
    assert w.pep.limits.max_items == 5 and node.config["max_items"] == "max"


# -- memory and storage ------------------------------------------------------------------

def test_a_service_evicted_from_memory_is_read_back_with_its_items():
    w = World(cache_size="0")
    alice = w.login("alice@localhost/pc")
    w.publish(alice)
    alice.logout()
    assert "alice@localhost" not in w.pep._online and "alice@localhost" not in w.pep._cache
    bob = w.login("bob@localhost/pc")
    w.friends(bob, w.h.login("alice@localhost/pc"))
    reply = w.items_of(bob, "alice@localhost")
    assert reply["type"] == "result" and "Song" in reply.toXml()


def test_an_account_deleted_loses_its_nodes_and_its_subscriptions_elsewhere(w):
    alice = w.login("alice@localhost/pc")
    w.publish(alice, options=options_form(access_model="open"))
    eve = w.login("eve@localhost/pc")
    w.publish(eve)
    eve.feed(f"<iq type='set' id='s' to='alice@localhost'><pubsub xmlns='{PUBSUB}'>"
             f"<subscribe node='{TUNE}' jid='eve@localhost'/></pubsub></iq>")
    assert World.reply(eve, "s")["type"] == "result"
    assert result_of(w.pep.get_service("alice@localhost")).nodes[TUNE].subscriptions
    result_of(w.h.server.delete_account("eve@localhost"))
    node = result_of(w.pep.get_service("alice@localhost")).nodes[TUNE]
    assert node.subscriptions == {}
    assert "eve@localhost" not in w.pep._online and "eve@localhost" not in w.pep._cache
    w.h.add_user("eve@localhost")
    assert result_of(w.pep.get_service("eve@localhost")).nodes == {}


# -- the API of other components -------------------------------------------------------

def test_a_publish_through_the_api_notifies_and_fires_pep_changed(w):
    alice = w.login("alice@localhost/pc", [NICK])
    item = result_of(w.pep.publish("alice@localhost", NICK, "current",
                                   parse(f"<nick xmlns='{NICK}'>Al</nick>")))
    assert item.id == "current"
    [note] = events(alice)
    assert item_ids(note) == ["current"]
    assert [(c.owner, c.node, c.kind) for c in w.changes] == [("alice@localhost", NICK, "items")]
    [stored] = result_of(w.pep.items("alice@localhost", NICK))
    assert str(w.pep.payload(stored)) == "Al"


def test_a_clients_publish_fires_pep_changed_with_its_full_jid(w):
    alice = w.login("alice@localhost/pc")
    w.publish(alice)
    [change] = w.changes
    assert change.actor == "alice@localhost/pc" and change.items[0].id == "current"


def test_disco_of_a_node_gives_its_identity_and_meta_data_and_its_items(w):
    alice = w.login("alice@localhost/pc")
    bob = w.login("bob@localhost/pc")
    w.friends(alice, bob)
    w.publish(alice)
    bob.feed(f"<iq type='get' id='i' to='alice@localhost'>"
             f"<query xmlns='http://jabber.org/protocol/disco#info' node='{TUNE}'/></iq>")
    reply = World.reply(bob, "i")
    assert reply["type"] == "result" and reply["from"] == "alice@localhost"
    query = reply.firstChildElement()
    assert [(i["category"], i["type"]) for i in query.elements() if i.name == "identity"] == \
        [("pubsub", "leaf")]
    assert "pubsub#meta-data" in query.toXml()
    bob.feed(f"<iq type='get' id='j' to='alice@localhost'>"
             f"<query xmlns='http://jabber.org/protocol/disco#items' node='{TUNE}'/></iq>")
    items = World.reply(bob, "j").firstChildElement()
    assert [(i["jid"], i["name"]) for i in items.elements()] == [("alice@localhost", "current")]
    bob.feed("<iq type='get' id='k' to='alice@localhost'>"
             "<query xmlns='http://jabber.org/protocol/disco#info' node='nothing-here'/></iq>")
    assert error_condition(World.reply(bob, "k")) == "item-not-found"


def test_disco_of_a_node_the_requester_may_not_see_tells_nothing(w):
    alice = w.login("alice@localhost/pc")
    bob = w.login("bob@localhost/pc")
    w.friends(alice, bob)
    w.publish(alice, "private", "1", "<p xmlns='x'/>", options_form(access_model="whitelist"))
    bob.feed("<iq type='get' id='i' to='alice@localhost'>"
             "<query xmlns='http://jabber.org/protocol/disco#info' node='private'/></iq>")
    assert error_condition(World.reply(bob, "i")) == "item-not-found"


def test_deleting_a_node_tells_the_interested_resources_unless_notify_delete_is_off(w):
    alice = w.login("alice@localhost/pc")
    bob = w.login("bob@localhost/pc", [TUNE, NICK])
    w.friends(alice, bob)
    w.publish(alice)
    w.publish(alice, NICK, "n", f"<nick xmlns='{NICK}'>A</nick>", options_form(notify_delete="false"))
    events(bob)
    for node in (TUNE, NICK):
        alice.feed(f"<iq type='set' id='del'><pubsub xmlns='{PUBSUB}#owner'>"
                   f"<delete node='{node}'/></pubsub></iq>")
        assert World.reply(alice, "del")["type"] == "result"
    [note] = events(bob)
    delete = next(next(note.elements(EVENT, "event")).elements(EVENT, "delete"))
    assert delete["node"] == TUNE


def test_new_caps_being_verified_keep_the_old_interest_and_resend_nothing_twice(w):
    alice = w.login("alice@localhost/pc")
    bob = w.login("bob@localhost/pc", [TUNE])
    w.friends(alice, bob)
    w.publish(alice)
    w.publish(alice, NICK, "n", f"<nick xmlns='{NICK}'>A</nick>")
    events(bob)
    features = ["http://jabber.org/protocol/disco#info", f"{TUNE}+notify", f"{NICK}+notify"]
    ver = digest("sha-1", verification_string([("client", "pc", "", "T")], features, []))
    bob.feed(f"<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' "
             f"node='n' ver='{ver}'/></presence>")
    [query] = [s for s in bob.received if s.name == "iq" and s["type"] == "get"]
    bob.received.remove(query)
    w.publish(alice, item_id="while-asking")  # the old caps asked for tune: still sent
    assert [item_ids(n) for n in events(bob, TUNE)] == [["while-asking"]]
    bob.feed(f"<iq type='result' id='{query['id']}' to='{query['from']}'>"
             "<query xmlns='http://jabber.org/protocol/disco#info'>"
             "<identity category='client' type='pc' name='T'/>"
             + "".join(f"<feature var='{f}'/>" for f in features) + "</query></iq>")
    got = events(bob)
    assert [item_ids(n) for n in got] == [["n"]]  # only the newly asked node's last item


def test_a_resource_gone_while_the_owners_roster_loaded_is_not_kept_as_recipient():
    w = World()
    alice = w.login("alice@localhost/pc", [TUNE])
    bob = w.login("bob@localhost/pc", [TUNE])
    w.friends(alice, bob)
    pending = defer.Deferred()
    w.pep._with_roster = lambda owner, service: pending  # the roster read still under way
    gone = w.h.login("bob@localhost/tmp", available=False)
    w.present(gone, [TUNE])
    gone.logout()
    pending.callback(None)
    assert [full for owner in w.pep._recipients.values() for full in owner
            if full == "bob@localhost/tmp"] == []
