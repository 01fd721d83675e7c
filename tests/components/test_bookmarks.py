"""XEP-0402 bookmarks and their XEP-0048 compatibility (XEP-0411): the pure
conversions first, then the component in the harness."""

from collections import OrderedDict

import pytest

from xmppd import ns
from xmppd.components.bookmarks import (
    InvalidBookmark,
    bookmark_key,
    conference_from_legacy,
    conference_to_legacy,
    items_to_legacy,
    legacy_to_items,
    plan_sync,
)
from xmppd.testing import parse

LEGACY = ("<storage xmlns='storage:bookmarks'>"
          "<conference jid='Council@Chat.Example' name='Council &amp; co' autojoin='true'>"
          "<nick>Puck</nick><password>s3cret</password>"
          "<minimize xmlns='xmpp:gajim.org/bookmarks'>true</minimize></conference>"
          "<url name='Home' url='https://example.org/'/>"
          "<conference jid='orchard@chat.example' autojoin='0'/>"
          "</storage>")


def conference(xml: str):
    return parse(f"<conference xmlns='urn:xmpp:bookmarks:1'{xml}")


# -- XEP-0048 -> XEP-0402 ---------------------------------------------------------------

def test_each_legacy_conference_becomes_an_item_keyed_by_its_normalised_room_jid():
    items, rest = legacy_to_items(parse(LEGACY))
    assert list(items) == ["council@chat.example", "orchard@chat.example"]
    council = items["council@chat.example"]
    assert (council.uri, council.name) == (ns.BOOKMARKS2, "conference")
    assert council["name"] == "Council & co" and council["autojoin"] == "true"
    assert str(next(council.elements(ns.BOOKMARKS2, "nick"))) == "Puck"
    assert str(next(council.elements(ns.BOOKMARKS2, "password"))) == "s3cret"
    assert items["orchard@chat.example"].toXml() == \
        "<conference xmlns='urn:xmpp:bookmarks:1' autojoin='0'/>"


def test_unknown_children_of_a_legacy_conference_travel_in_extensions():
    items, _ = legacy_to_items(parse(LEGACY))
    (extensions,) = items["council@chat.example"].elements(ns.BOOKMARKS2, "extensions")
    (minimize,) = extensions.elements()
    assert (minimize.uri, minimize.name, str(minimize)) == \
        ("xmpp:gajim.org/bookmarks", "minimize", "true")


def test_url_bookmarks_and_unknown_elements_are_kept_apart_not_dropped():
    _, rest = legacy_to_items(parse(LEGACY))
    assert [(e.uri, e.name, e.getAttribute("url")) for e in rest] == \
        [(ns.BOOKMARKS, "url", "https://example.org/")]


def test_the_same_room_twice_keeps_the_last_in_its_place():
    items, _ = legacy_to_items(parse(
        "<storage xmlns='storage:bookmarks'><conference jid='a@c' name='one'/>"
        "<conference jid='b@c'/><conference jid='A@c' name='two'/></storage>"))
    assert list(items) == ["b@c", "a@c"]
    assert items["a@c"]["name"] == "two"


@pytest.mark.parametrize("bad", ["<conference name='x'/>", "<conference jid='a@b@c'/>",
                                 "<conference jid=''/>"])
def test_a_conference_without_a_valid_jid_is_refused_when_strict(bad):
    storage = parse(f"<storage xmlns='storage:bookmarks'>{bad}</storage>")
    with pytest.raises(InvalidBookmark):
        legacy_to_items(storage)
    items, rest = legacy_to_items(storage, strict=False)
    assert items == {} and [e.name for e in rest] == ["conference"]


# -- XEP-0402 -> XEP-0048 ---------------------------------------------------------------

def test_items_become_one_storage_with_the_item_id_as_jid():
    storage = items_to_legacy([
        ("council@chat.example", conference(" name='Council' autojoin='1'><nick>Puck</nick>"
                                            "<extensions><x xmlns='urn:example'/></extensions>"
                                            "</conference>")),
        ("orchard@chat.example", conference("/>")),
    ])
    assert storage.toXml() == (
        "<storage xmlns='storage:bookmarks'>"
        "<conference jid='council@chat.example' name='Council' autojoin='1'>"
        "<nick>Puck</nick><x xmlns='urn:example'/></conference>"
        "<conference jid='orchard@chat.example'/></storage>")


def test_a_payload_that_is_no_conference_still_gives_the_room():
    legacy = conference_to_legacy("room@chat.example", parse("<junk xmlns='urn:example'/>"))
    assert legacy.toXml() == "<conference xmlns='storage:bookmarks' jid='room@chat.example'/>"
    assert conference_to_legacy("r@c", None)["jid"] == "r@c"


def test_kept_children_come_back_after_the_conferences():
    items, rest = legacy_to_items(parse(LEGACY))
    storage = items_to_legacy(items.items(), rest)
    assert [c.name for c in storage.elements()] == ["conference", "conference", "url"]


def test_legacy_to_items_and_back_loses_nothing():
    original = parse(LEGACY)
    items, rest = legacy_to_items(original)
    again = items_to_legacy(items.items(), rest)
    items2, rest2 = legacy_to_items(again)
    assert [(k, v.toXml()) for k, v in items2.items()] == [(k, v.toXml()) for k, v in items.items()]
    assert [e.toXml() for e in rest2] == [e.toXml() for e in rest]
    # and conference by conference, attributes and children as they were
    first = next(again.elements(ns.BOOKMARKS, "conference"))
    assert first["jid"] == "council@chat.example" and first["name"] == "Council & co"
    assert [c.name for c in first.elements()] == ["nick", "password", "minimize"]


def test_conference_from_legacy_copies_children_rather_than_moving_them():
    legacy = parse(LEGACY)
    before = legacy.toXml()
    conference_from_legacy(next(legacy.elements(ns.BOOKMARKS, "conference")))
    assert legacy.toXml() == before


# -- what changed -------------------------------------------------------------------------

def test_bookmark_key_ignores_serialisation_but_not_content():
    a = conference(" name='N' autojoin='true'><nick>x</nick></conference>")
    b = parse("<b:conference xmlns:b='urn:xmpp:bookmarks:1' autojoin='true' name='N'>"
              "<b:nick>x</b:nick></b:conference>")
    assert bookmark_key(a) == bookmark_key(b)
    assert bookmark_key(a) != bookmark_key(conference(" name='N' autojoin='false'><nick>x</nick></conference>"))
    assert bookmark_key(a) != bookmark_key(conference(" name='N' autojoin='true'><nick>y</nick></conference>"))
    assert bookmark_key(parse("<other xmlns='urn:example'/>")) is None


def test_plan_sync_publishes_only_what_changed_and_retracts_only_when_replacing():
    same = conference(" name='same'/>")
    current = OrderedDict([("a@c", same), ("b@c", conference(" name='old'/>")),
                           ("gone@c", conference("/>")), ("junk@c", parse("<junk xmlns='x'/>"))])
    wanted = OrderedDict([("a@c", conference(" name='same'/>")), ("b@c", conference(" name='new'/>")),
                          ("junk@c", conference("/>")), ("new@c", conference("/>"))])
    publish, retract = plan_sync(current, wanted, replace=True)
    assert [room for room, _ in publish] == ["b@c", "junk@c", "new@c"]
    assert retract == ["gone@c"]
    publish, retract = plan_sync(current, wanted, replace=False)
    assert [room for room, _ in publish] == ["b@c", "junk@c", "new@c"] and retract == []


# =====================================================================================
# The component
# =====================================================================================

from twisted.internet import task  # noqa: E402

from xmppd.components.caps import digest, verification_string  # noqa: E402
from xmppd.components.pep import CHANGED  # noqa: E402
from xmppd.testing import Harness, error_condition, result_of  # noqa: E402

PUBSUB = "http://jabber.org/protocol/pubsub"
EVENT = "http://jabber.org/protocol/pubsub#event"
PRIVATE = "jabber:iq:private"
COMPONENTS = ["roster", "presence", "messaging", "private", "vcard", "caps", "pep", "disco",
              "bookmarks"]
OPTIONS = ("<publish-options><x xmlns='jabber:x:data' type='submit'>"
           "<field var='FORM_TYPE' type='hidden'>"
           "<value>http://jabber.org/protocol/pubsub#publish-options</value></field>"
           "<field var='pubsub#persist_items'><value>true</value></field>"
           "<field var='pubsub#max_items'><value>max</value></field>"
           "<field var='pubsub#send_last_published_item'><value>never</value></field>"
           "<field var='pubsub#access_model'><value>whitelist</value></field>"
           "</x></publish-options>")


class World:
    def __init__(self, components=COMPONENTS):
        self.h = Harness(components, clock=task.Clock())
        self.changes = []
        self.h.router.hook(CHANGED, self.changes.append)

    def login(self, jid, notify=()):
        """A session with initial presence whose caps ask for ``notify``
        (what the login itself delivered is discarded)."""
        session = self.h.login(jid, available=False)
        self.present(session, notify)
        for other in self.h.router.resources(session.bare).values():
            other.take()
        return session

    @staticmethod
    def present(session, notify=()):
        """Initial presence with caps asking for ``notify``, the caps query answered."""
        features = ["http://jabber.org/protocol/disco#info"] + [f"{n}+notify" for n in notify]
        ver = digest("sha-1", verification_string([("client", "pc", "", "T")], features, []))
        session.feed(f"<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' "
                     f"node='https://example.org' ver='{ver}'/></presence>")
        for query in [s for s in session.received if s.name == "iq" and s["type"] == "get"]:
            session.received.remove(query)
            session.feed(f"<iq type='result' id='{query['id']}' to='{query['from']}'>"
                         "<query xmlns='http://jabber.org/protocol/disco#info'>"
                         "<identity category='client' type='pc' name='T'/>"
                         + "".join(f"<feature var='{f}'/>" for f in features) + "</query></iq>")

    @staticmethod
    def iq(session, xml, iq_id):
        """Send iq ``xml`` (with id ``iq_id``) and take its answer; the rest stays."""
        session.feed(xml)
        [reply] = [s for s in session.received if s.name == "iq" and s.getAttribute("id") == iq_id]
        session.received.remove(reply)
        return reply

    def publish2(self, session, room, conference="<conference xmlns='urn:xmpp:bookmarks:1'/>",
                 options=OPTIONS):
        return self.iq(session, f"<iq type='set' id='p2'><pubsub xmlns='{PUBSUB}'>"
                                f"<publish node='urn:xmpp:bookmarks:1'><item id='{room}'>{conference}"
                                f"</item></publish>{options}</pubsub></iq>", "p2")

    def items2(self, session, to=""):
        to_attr = f" to='{to}'" if to else ""
        return self.iq(session, f"<iq type='get' id='i2'{to_attr}><pubsub xmlns='{PUBSUB}'>"
                                "<items node='urn:xmpp:bookmarks:1'/></pubsub></iq>", "i2")

    def private_set(self, session, payload):
        return self.iq(session, f"<iq type='set' id='ps'><query xmlns='{PRIVATE}'>{payload}</query></iq>",
                       "ps")

    def private_get(self, session, payload="<storage xmlns='storage:bookmarks'/>"):
        return self.iq(session, f"<iq type='get' id='pg'><query xmlns='{PRIVATE}'>{payload}</query></iq>",
                       "pg")

    def legacy_publish(self, session, storage):
        return self.iq(session, f"<iq type='set' id='lp'><pubsub xmlns='{PUBSUB}'>"
                                f"<publish node='storage:bookmarks'><item id='current'>{storage}</item>"
                                f"</publish></pubsub></iq>", "lp")

    def legacy_get(self, session):
        return self.iq(session, f"<iq type='get' id='lg'><pubsub xmlns='{PUBSUB}'>"
                                "<items node='storage:bookmarks'/></pubsub></iq>", "lg")

    def node(self, owner="alice@localhost", name=ns.BOOKMARKS2):
        service = result_of(self.h.component("pep").get_service(owner))
        return service.nodes.get(name)

    def private_stored(self, user="alice@localhost"):
        return result_of(self.h.component("private").store["private"].items(user))


def result(reply):
    assert reply["type"] == "result", reply.toXml()
    return reply


def storage_of_private(reply):
    (query,) = result(reply).elements()
    (storage,) = query.elements()
    assert (storage.uri, storage.name) == (ns.BOOKMARKS, "storage")
    return storage


def items_of(reply):
    """(id, payload) of the items of a pubsub items result."""
    (pubsub,) = result(reply).elements()
    (items,) = pubsub.elements(PUBSUB, "items")
    return [(i["id"], next(i.elements(), None)) for i in items.elements(PUBSUB, "item")]


def events(session, node):
    found = []
    for stanza in list(session.received):
        event = next(stanza.elements(EVENT, "event"), None) if stanza.name == "message" else None
        if event is not None and any(c.getAttribute("node") == node for c in event.elements()):
            session.received.remove(stanza)
            found.append(next(event.elements()))
    return found


@pytest.fixture
def w():
    return World()


def test_a_bookmark_published_with_xep_0402_is_read_from_private_xml(w):
    alice = w.login("alice@localhost/phone")
    result(w.publish2(alice, "council@chat.example",
                      "<conference xmlns='urn:xmpp:bookmarks:1' name='Council' autojoin='true'>"
                      "<nick>Puck</nick></conference>"))
    storage = storage_of_private(w.private_get(alice))
    assert storage.toXml() == ("<storage xmlns='storage:bookmarks'><conference "
                               "jid='council@chat.example' name='Council' autojoin='true'>"
                               "<nick>Puck</nick></conference></storage>")


def test_private_xml_of_an_account_without_bookmarks_is_an_empty_storage(w):
    alice = w.login("alice@localhost/phone")
    storage = storage_of_private(w.private_get(alice))
    assert list(storage.elements()) == []


def test_a_private_xml_set_becomes_xep_0402_items_in_a_whitelist_node(w):
    alice = w.login("alice@localhost/phone")
    result(w.private_set(alice, LEGACY))
    assert [room for room, _ in items_of(w.items2(alice))] == \
        ["council@chat.example", "orchard@chat.example"]
    node = w.node()
    assert node.config["access_model"] == "whitelist"
    assert node.config["max_items"] == "max"
    assert node.config["send_last_published_item"] == "never"
    # the rooms are in PEP, not in private storage, which keeps the url only
    stored = w.private_stored()
    assert list(stored) == ["{storage:bookmarks}storage"]
    assert "conference" not in stored["{storage:bookmarks}storage"]
    assert "https://example.org/" in stored["{storage:bookmarks}storage"]


def test_a_private_xml_get_returns_what_was_set_urls_and_extensions_included(w):
    alice = w.login("alice@localhost/phone")
    result(w.private_set(alice, LEGACY))
    storage = storage_of_private(w.private_get(alice))
    assert [(c.name, c.getAttribute("jid") or c.getAttribute("url")) for c in storage.elements()] == \
        [("conference", "council@chat.example"), ("conference", "orchard@chat.example"),
         ("url", "https://example.org/")]
    council = next(storage.elements())
    assert [c.name for c in council.elements()] == ["nick", "password", "minimize"]


def test_a_private_xml_set_notifies_only_what_changed(w):
    alice = w.login("alice@localhost/phone")
    modern = w.login("alice@localhost/pc", notify=[ns.BOOKMARKS2])
    result(w.private_set(alice, "<storage xmlns='storage:bookmarks'><conference jid='a@c' name='A'/>"
                                "<conference jid='b@c' name='B'/><conference jid='gone@c'/></storage>"))
    assert len(events(modern, ns.BOOKMARKS2)) == 3
    result(w.private_set(alice, "<storage xmlns='storage:bookmarks'><conference jid='a@c' name='A'/>"
                                "<conference jid='b@c' name='B2'/><conference jid='new@c'/></storage>"))
    seen = events(modern, ns.BOOKMARKS2)
    published = [i["id"] for e in seen for i in e.elements(EVENT, "item")]
    retracted = [r["id"] for e in seen for r in e.elements(EVENT, "retract")]
    assert sorted(published) == ["b@c", "new@c"]  # a@c unchanged: no notification
    assert retracted == ["gone@c"]
    assert [room for room, _ in items_of(w.items2(alice))] == ["a@c", "b@c", "new@c"]


def test_an_empty_private_xml_set_retracts_every_bookmark(w):
    alice = w.login("alice@localhost/phone")
    result(w.private_set(alice, LEGACY))
    result(w.private_set(alice, "<storage xmlns='storage:bookmarks'/>"))
    assert items_of(w.items2(alice)) == []
    assert w.private_stored() == {}


def test_a_conference_without_jid_is_refused_and_nothing_is_stored(w):
    alice = w.login("alice@localhost/phone")
    reply = w.private_set(alice, "<storage xmlns='storage:bookmarks'><conference jid='ok@c'/>"
                                 "<conference name='no jid'/></storage>")
    assert error_condition(reply) == "bad-request"
    assert w.node() is None and w.private_stored() == {}


def test_other_private_elements_in_the_same_set_are_stored_as_usual(w):
    alice = w.login("alice@localhost/phone")
    result(w.private_set(alice, "<storage xmlns='storage:bookmarks'><conference jid='a@c'/></storage>"
                                "<prefs xmlns='urn:example:prefs'>x</prefs>"))
    assert list(w.private_stored()) == ["{urn:example:prefs}prefs"]
    (prefs,) = result(w.private_get(alice, "<prefs xmlns='urn:example:prefs'/>")).firstChildElement().elements()
    assert str(prefs) == "x"
    assert [room for room, _ in items_of(w.items2(alice))] == ["a@c"]


def test_the_private_quota_still_applies_and_then_pep_is_untouched():
    w = World()
    w.h = Harness(COMPONENTS, clock=task.Clock(), options={"component:private": {"max_size": "60"}})
    alice = w.login("alice@localhost/phone")
    reply = w.private_set(alice, "<storage xmlns='storage:bookmarks'><conference jid='a@c'/>"
                                 "<url url='https://example.org/a/very/long/address/indeed'/></storage>")
    assert error_condition(reply) == "policy-violation"
    assert w.node() is None


def test_more_bookmarks_than_a_node_keeps_are_refused_whole():
    w = World()
    w.h = Harness(COMPONENTS, clock=task.Clock(), options={"component:pep": {"max_items": "2"}})
    alice = w.login("alice@localhost/phone")
    reply = w.private_set(alice, "<storage xmlns='storage:bookmarks'><conference jid='a@c'/>"
                                 "<conference jid='b@c'/><conference jid='c@c'/></storage>")
    assert error_condition(reply) == "policy-violation"
    assert w.node() is None and w.private_stored() == {}


def test_contacts_cannot_read_the_bookmarks(w):
    alice = w.login("alice@localhost/phone")
    bob = w.login("bob@localhost/pc", notify=[ns.BOOKMARKS2, ns.BOOKMARKS])
    bob.feed("<presence type='subscribe' to='alice@localhost'/>")
    alice.feed("<presence type='subscribed' to='bob@localhost'/>")
    alice.take(), bob.take()
    result(w.private_set(alice, LEGACY))
    assert events(bob, ns.BOOKMARKS2) == [] and events(bob, ns.BOOKMARKS) == []
    assert error_condition(w.items2(bob, to="alice@localhost")) in ("not-allowed", "forbidden")


# -- the legacy PEP node --------------------------------------------------------------

def test_the_legacy_pep_node_answers_the_xep_0402_bookmarks_as_item_current(w):
    alice = w.login("alice@localhost/phone")
    assert error_condition(w.legacy_get(alice)) == "item-not-found"  # as Prosody
    result(w.publish2(alice, "council@chat.example",
                      "<conference xmlns='urn:xmpp:bookmarks:1' name='Council'/>"))
    [(item_id, storage)] = items_of(w.legacy_get(alice))
    assert item_id == "current"
    assert storage.toXml() == ("<storage xmlns='storage:bookmarks'><conference "
                               "jid='council@chat.example' name='Council'/></storage>")


def test_a_legacy_pep_publish_becomes_xep_0402_items_with_an_empty_result(w):
    alice = w.login("alice@localhost/phone")
    reply = result(w.legacy_publish(alice, LEGACY))
    assert list(reply.elements()) == []  # Prosody answers an empty result
    assert [room for room, _ in items_of(w.items2(alice))] == \
        ["council@chat.example", "orchard@chat.example"]
    assert w.node(name=ns.BOOKMARKS) is None  # nothing kept in the legacy node itself
    # and private XML sees the same list
    storage = storage_of_private(w.private_get(alice))
    assert [c.getAttribute("jid") for c in storage.elements()] == \
        ["council@chat.example", "orchard@chat.example", None]


def test_a_legacy_publish_without_storage_is_a_bad_request(w):
    alice = w.login("alice@localhost/phone")
    reply = w.legacy_publish(alice, "<other xmlns='urn:example'/>")
    assert error_condition(reply) == "bad-request"
    assert w.node() is None and w.node(name=ns.BOOKMARKS) is None


def test_a_publish_to_the_bookmarks_0_node_is_not_allowed(w):
    alice = w.login("alice@localhost/phone")
    reply = w.iq(alice, f"<iq type='set' id='old'><pubsub xmlns='{PUBSUB}'>"
                        "<publish node='urn:xmpp:bookmarks:0'><item id='r@c'>"
                        "<conference xmlns='urn:xmpp:bookmarks:0'/></item></publish></pubsub></iq>", "old")
    assert error_condition(reply) == "not-allowed"
    assert w.node(name="urn:xmpp:bookmarks:0") is None


def test_legacy_pep_clients_are_told_the_whole_list_on_every_xep_0402_change(w):
    alice = w.login("alice@localhost/phone")
    legacy = w.login("alice@localhost/old", notify=[ns.BOOKMARKS])
    result(w.publish2(alice, "a@c", "<conference xmlns='urn:xmpp:bookmarks:1' name='A'/>"))
    [items] = events(legacy, ns.BOOKMARKS)
    [item] = items.elements(EVENT, "item")
    assert item["id"] == "current"
    assert [c["jid"] for c in item.firstChildElement().elements()] == ["a@c"]
    w.iq(alice, f"<iq type='set' id='r'><pubsub xmlns='{PUBSUB}'><retract node='urn:xmpp:bookmarks:1' "
                "notify='true'><item id='a@c'/></retract></pubsub></iq>", "r")
    [items] = events(legacy, ns.BOOKMARKS)
    assert list(next(items.elements(EVENT, "item")).firstChildElement().elements()) == []


def test_a_legacy_set_of_many_rooms_notifies_legacy_clients_once(w):
    alice = w.login("alice@localhost/phone")
    legacy = w.login("alice@localhost/old", notify=[ns.BOOKMARKS])
    result(w.private_set(alice, LEGACY))
    assert len(events(legacy, ns.BOOKMARKS)) == 1


def test_a_legacy_client_coming_online_gets_the_list(w):
    alice = w.login("alice@localhost/phone")
    result(w.publish2(alice, "a@c"))
    legacy = w.h.login("alice@localhost/old", available=False)
    w.present(legacy, [ns.BOOKMARKS])  # caps new to the server: learned after the presence
    [items] = events(legacy, ns.BOOKMARKS)
    assert [c["jid"] for c in next(items.elements(EVENT, "item")).firstChildElement().elements()] \
        == ["a@c"]
    assert events(alice, ns.BOOKMARKS) == []  # its caps do not ask for it


def test_a_legacy_set_puts_a_misconfigured_node_back_to_the_xep_0402_options(w):
    alice = w.login("alice@localhost/phone")
    result(w.publish2(alice, "a@c", options=""))  # PEP defaults: presence, one item
    assert w.node().config["access_model"] == "presence"
    result(w.private_set(alice, "<storage xmlns='storage:bookmarks'><conference jid='a@c'/>"
                                "<conference jid='b@c'/></storage>"))
    assert w.node().config["access_model"] == "whitelist"
    assert [room for room, _ in items_of(w.items2(alice))] == ["a@c", "b@c"]


# -- migration at login ------------------------------------------------------------------

def test_bookmarks_left_in_private_xml_move_to_xep_0402_at_login(w):
    private = w.h.component("private").store["private"]
    result_of(private.set("alice@localhost", "{storage:bookmarks}storage", LEGACY))
    alice = w.login("alice@localhost/phone")
    assert [room for room, _ in items_of(w.items2(alice))] == \
        ["council@chat.example", "orchard@chat.example"]
    stored = w.private_stored()["{storage:bookmarks}storage"]
    assert "conference" not in stored and "url" in stored
    # a second login finds nothing more to move and changes nothing
    before = len(w.changes)
    w.login("alice@localhost/pc")
    assert [c for c in w.changes[before:] if c.node == ns.BOOKMARKS2] == []


def test_the_migration_never_removes_what_xep_0402_clients_added(w):
    alice = w.login("alice@localhost/phone")
    result(w.publish2(alice, "modern@c"))
    private = w.h.component("private").store["private"]
    result_of(private.set("alice@localhost", "{storage:bookmarks}storage",
                          "<storage xmlns='storage:bookmarks'><conference jid='old@c'/></storage>"))
    w.login("alice@localhost/pc")
    assert [room for room, _ in items_of(w.items2(alice))] == ["modern@c", "old@c"]
    assert w.private_stored() == {}


def test_a_legacy_pep_node_left_from_before_is_migrated_and_deleted(w):
    pep = w.h.component("pep")
    w.h.add_user("alice@localhost")
    result_of(pep.publish("alice@localhost", ns.BOOKMARKS, "current", parse(LEGACY)))
    assert w.node(name=ns.BOOKMARKS) is not None
    alice = w.login("alice@localhost/phone")
    assert [room for room, _ in items_of(w.items2(alice))] == \
        ["council@chat.example", "orchard@chat.example"]
    assert w.node(name=ns.BOOKMARKS) is None
    assert "url" in w.private_stored()["{storage:bookmarks}storage"]


# -- discovery, accounts -------------------------------------------------------------------

def test_the_account_announces_the_compatibility_features(w):
    alice = w.login("alice@localhost/phone")
    reply = w.iq(alice, "<iq type='get' id='d' to='alice@localhost'>"
                        "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>", "d")
    features = {f["var"] for f in result(reply).firstChildElement().elements(ns.DISCO_INFO, "feature")}
    assert {ns.BOOKMARKS2_COMPAT, ns.BOOKMARKS2_COMPAT_PEP, ns.BOOKMARKS_CONVERSION} <= features


def test_without_pep_private_xml_keeps_bookmarks_itself():
    w = World(["private", "bookmarks"])
    alice = w.h.login("alice@localhost/phone")
    result(w.private_set(alice, LEGACY))
    assert "conference" in w.private_stored()["{storage:bookmarks}storage"]


def test_a_second_legacy_resource_with_caps_known_already_gets_the_list_once(w):
    alice = w.login("alice@localhost/phone")
    result(w.publish2(alice, "a@c"))
    w.login("alice@localhost/old", notify=[ns.BOOKMARKS])  # the server learns these caps
    again = w.h.login("alice@localhost/old2", available=False)
    w.present(again, [ns.BOOKMARKS])  # known caps: no query this time
    assert len(events(again, ns.BOOKMARKS)) == 1
