"""XEP-0060 over the in-memory harness: every operation of the pubsub service
on pubsub.localhost, each refusal with the error the XEP names, the event
notifications, service discovery, and account deletion."""

from __future__ import annotations

import pytest

from xmppd import ns
from xmppd.services.pubsub.service import PubSubService
from xmppd.testing import Harness, error_condition

SERVICE = "pubsub.localhost"
PUBSUB, OWNER, EVENT = ns.PUBSUB, ns.PUBSUB_OWNER, ns.PUBSUB_EVENT


@pytest.fixture
def h():
    harness = Harness(["disco", "presence", "messaging", "roster", PubSubService],
                      options={"server": {"admins": "root@localhost"},
                               "component:pubsub": {"max_payload_size": "200",
                                                    "max_nodes": "5",
                                                    "max_subscriptions": "3",
                                                    "max_items": "10"}})
    yield harness
    harness.stop()


def request(session, type_: str, body: str, owner: bool = False, to: str = SERVICE):
    """Send a <pubsub/> iq; the answer (a result or error) with its id."""
    uri = OWNER if owner else PUBSUB
    session.feed(f"<iq type='{type_}' id='req' to='{to}'>"
                 f"<pubsub xmlns='{uri}'>{body}</pubsub></iq>")
    answers = [s for s in session.received if s.name == "iq" and s.getAttribute("id") == "req"]
    assert len(answers) == 1, [s.toXml() for s in session.received]
    session.received.remove(answers[0])
    return answers[0]


def ok(reply):
    assert reply["type"] == "result", reply.toXml()
    return reply


def refused(reply) -> tuple[str, str, str | None]:
    """(error type, condition, pubsub#errors condition or None)."""
    condition = error_condition(reply)
    error = error_of(reply)
    app = next((c.name for c in error.elements() if c.uri == ns.PUBSUB_ERRORS), None)
    return error["type"], condition, app


def error_of(reply):
    return next(c for c in reply.elements() if c.name == "error")


def events(session) -> list:
    """The pubsub event messages the session received (taken)."""
    found = [s for s in session.take() if s.name == "message"
             and next(s.elements(EVENT, "event"), None) is not None]
    return found


def event_child(message):
    return next(next(message.elements(EVENT, "event")).elements())


def form(*fields: tuple[str, str], form_type: str = ns.PUBSUB_NODE_CONFIG) -> str:
    body = "".join(f"<field var='{var}'><value>{value}</value></field>" for var, value in fields)
    return (f"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
            f"<value>{form_type}</value></field>{body}</x>")


def create(session, node: str = "news", config: str = ""):
    configure = f"<configure>{config}</configure>" if config else ""
    return request(session, "set", f"<create node='{node}'/>{configure}")


def publish(session, node="news", item_id="i1", payload="<entry xmlns='urn:ex'>hi</entry>",
            extra=""):
    id_attr = f" id='{item_id}'" if item_id else ""
    return request(session, "set",
                   f"<publish node='{node}'><item{id_attr}>{payload}</item></publish>{extra}")


def subscribe(session, node="news", jid=None):
    jid = jid or session.jid.userhost()
    return request(session, "set", f"<subscribe node='{node}' jid='{jid}'/>")


def config_values(reply) -> dict:
    x = next(next(next(reply.elements(OWNER, "pubsub")).elements()).elements(ns.DATA_FORMS, "x"))
    return {f["var"]: [str(v) for v in f.elements(ns.DATA_FORMS, "value")]
            for f in x.elements(ns.DATA_FORMS, "field")}


# -- create (§8.1) -----------------------------------------------------------------

def test_create_with_a_name_answers_an_empty_result_and_the_creator_owns_it(h):
    alice = h.login("alice@localhost/pc")
    reply = ok(create(alice))
    assert not reply.children
    affs = ok(request(alice, "get", "<affiliations node='news'/>", owner=True))
    listed = [(a["jid"], a["affiliation"]) for a in next(affs.elements()).elements().__next__()
              .elements(OWNER, "affiliation")]
    assert listed == [("alice@localhost", "owner")]


def test_an_instant_node_gets_a_generated_name_in_the_result(h):
    alice = h.login("alice@localhost/pc")
    reply = ok(request(alice, "set", "<create/>"))
    made = next(next(reply.elements(PUBSUB, "pubsub")).elements(PUBSUB, "create"))["node"]
    assert made and made in h.component("pubsub").core.nodes


def test_creating_an_existing_node_is_a_conflict(h):
    alice = h.login("alice@localhost/pc")
    ok(create(alice))
    assert refused(create(alice)) == ("cancel", "conflict", None)


def test_create_and_configure_sets_the_configuration(h):
    alice = h.login("alice@localhost/pc")
    ok(create(alice, config=form(("pubsub#title", "News"), ("pubsub#max_items", "3"),
                                 ("pubsub#persist_items", "true"),
                                 ("pubsub#access_model", "whitelist"))))
    config = h.component("pubsub").core.nodes["news"].config
    assert (config["title"], config["max_items"], config["access_model"]) == (
        "News", 3, "whitelist")


def test_an_empty_configure_on_create_means_the_defaults(h):
    alice = h.login("alice@localhost/pc")
    ok(request(alice, "set", "<create node='news'/><configure/>"))
    # the default of 20, capped by the fixture's max_items
    assert h.component("pubsub").core.nodes["news"].config["max_items"] == 10


@pytest.mark.parametrize("field, value, expected", [
    ("pubsub#bogus", "1", ("modify", "not-acceptable", None)),
    ("pubsub#persist_items", "maybe", ("modify", "bad-request", None)),
    ("pubsub#max_items", "lots", ("modify", "bad-request", None)),
    ("pubsub#max_items", "11", ("modify", "bad-request", None)),
    ("pubsub#max_items", "0", ("modify", "bad-request", None)),
    ("pubsub#publish_model", "everyone", ("modify", "bad-request", None)),
    ("pubsub#access_model", "presence", ("modify", "not-acceptable", None)),
    ("pubsub#node_type", "collection", ("cancel", "feature-not-implemented", "unsupported")),
])
def test_a_bad_configuration_on_create_is_refused_and_creates_nothing(h, field, value, expected):
    alice = h.login("alice@localhost/pc")
    reply = create(alice, config=form((field, value)))
    assert refused(reply) == expected
    assert "news" not in h.component("pubsub").core.nodes


def test_the_texts_of_form_errors_name_the_field(h):
    alice = h.login("alice@localhost/pc")
    reply = create(alice, config=form(("pubsub#persist_items", "maybe")))
    text = next(error_of(reply).elements(ns.STANZA_ERRORS, "text"))
    assert str(text) == "persist_items: Invalid boolean representation:maybe"
    reply = create(alice, config=form(("pubsub#bogus", "1")))
    text = next(error_of(reply).elements(ns.STANZA_ERRORS, "text"))
    assert str(text) == "Unknown field: pubsub#bogus"


def test_a_configure_without_a_form_is_a_bad_request(h):
    alice = h.login("alice@localhost/pc")
    reply = request(alice, "set",
                    "<create node='news'/><configure><junk xmlns='urn:x'/></configure>")
    assert refused(reply) == ("modify", "bad-request", None)


def test_only_admins_create_when_create_is_admins():
    h = Harness(["disco", PubSubService],
                options={"server": {"admins": "root@localhost"},
                         "component:pubsub": {"create": "admins"}})
    alice, root = h.login("alice@localhost/pc"), h.login("root@localhost/pc")
    assert refused(create(alice)) == ("auth", "forbidden", None)
    ok(create(root))
    h.stop()


def test_a_flood_of_creations_stops_at_max_nodes_and_publishing_goes_on(h):
    alice = h.login("alice@localhost/pc")
    for i in range(5):
        ok(create(alice, f"n{i}"))
    assert refused(create(alice, "n5")) == ("modify", "policy-violation", "max-nodes-exceeded")
    assert refused(request(alice, "set", "<create/>"))[1:] == ("policy-violation",
                                                               "max-nodes-exceeded")
    ok(publish(alice, "n0"))
    assert len(h.component("pubsub").core.nodes) == 5


# -- configure (§8.2, §8.3) ----------------------------------------------------------

def test_the_owner_gets_the_configuration_form_with_the_current_values(h):
    alice = h.login("alice@localhost/pc")
    ok(create(alice, config=form(("pubsub#title", "News"))))
    values = config_values(ok(request(alice, "get", "<configure node='news'/>", owner=True)))
    assert values["FORM_TYPE"] == [ns.PUBSUB_NODE_CONFIG]
    assert values["pubsub#title"] == ["News"]
    assert values["pubsub#max_items"] == ["10"]  # 20, capped by max_items
    assert values["pubsub#persist_items"] == ["1"]
    assert values["pubsub#access_model"] == ["open"]


def test_configuration_is_the_owners(h):
    alice, bob = h.login("alice@localhost/pc"), h.login("bob@localhost/pc")
    ok(create(alice))
    assert refused(request(bob, "get", "<configure node='news'/>", owner=True))[1] == "forbidden"
    reply = request(bob, "set", f"<configure node='news'>{form(('pubsub#title', 'x'))}</configure>",
                    owner=True)
    assert refused(reply)[1] == "forbidden"
    reply = request(alice, "get", "<configure/>", owner=True)
    assert refused(reply) == ("modify", "bad-request", "nodeid-required")
    reply = request(alice, "get", "<configure node='nope'/>", owner=True)
    assert refused(reply) == ("cancel", "item-not-found", None)


def test_configure_changes_the_node_and_notifies_when_notify_config_is_on(h):
    alice, bob = h.login("alice@localhost/pc"), h.login("bob@localhost/pc")
    ok(create(alice))
    ok(subscribe(bob))
    ok(request(alice, "set", f"<configure node='news'>{form(('pubsub#title', 'News'))}</configure>",
               owner=True))
    assert events(bob) == []
    ok(request(alice, "set", "<configure node='news'>"
               + form(("pubsub#notify_config", "1"), ("pubsub#title", "Daily")) + "</configure>",
               owner=True))
    [note] = events(bob)
    child = event_child(note)
    assert (child.name, child["node"]) == ("configuration", "news")
    values = {f["var"]: [str(v) for v in f.elements(ns.DATA_FORMS, "value")]
              for f in next(child.elements(ns.DATA_FORMS, "x")).elements(ns.DATA_FORMS, "field")}
    assert values["pubsub#title"] == ["Daily"]


def test_the_default_configuration_is_a_node_config_form(h):
    alice = h.login("alice@localhost/pc")
    values = config_values(ok(request(alice, "get", "<default/>", owner=True)))
    assert values["pubsub#max_items"] == ["10"]  # 20, capped by max_items
    assert values["pubsub#send_last_published_item"] == ["never"]


# -- publish (§7.1) -----------------------------------------------------------------

def test_publish_notifies_every_subscriber_with_one_message_and_answers_with_the_id(h):
    alice = h.login("alice@localhost/pc")
    bob, carol = h.login("bob@localhost/pc"), h.login("carol@localhost/pc")
    ok(create(alice))
    ok(subscribe(bob))
    ok(subscribe(carol))
    reply = ok(publish(alice))
    item = next(next(next(reply.elements(PUBSUB, "pubsub")).elements(PUBSUB, "publish"))
                .elements(PUBSUB, "item"))
    assert item["id"] == "i1"
    [to_bob], [to_carol] = events(bob), events(carol)
    assert to_bob["id"] == to_carol["id"]
    assert (to_bob["from"], to_bob["to"], to_bob["type"]) == (SERVICE, "bob@localhost", "headline")
    items = event_child(to_bob)
    assert (items.name, items["node"]) == ("items", "news")
    [published] = list(items.elements(EVENT, "item"))
    assert published["id"] == "i1" and not published.hasAttribute("publisher")
    payload = next(published.elements())
    assert (payload.uri, payload.name, str(payload)) == ("urn:ex", "entry", "hi")


def test_a_notification_is_serialised_once_for_all_subscribers(h, monkeypatch):
    from xmppd.testing import FakeSession
    alice = h.login("alice@localhost/pc")
    fans = [h.login(f"fan{i}@localhost/pc") for i in range(3)]
    ok(create(alice))
    for fan in fans:
        ok(subscribe(fan))
    texts_before = [fan.received_text for fan in fans]
    serialised = []
    real = FakeSession.serialize
    monkeypatch.setattr(FakeSession, "serialize",
                        lambda self, stanza: serialised.append(stanza.name) or real(self, stanza))
    ok(publish(alice))
    assert serialised == ["message"]
    for fan, before in zip(fans, texts_before):
        assert fan.received_text == before + 1  # ready-made text, not an element
        [note] = events(fan)
        assert note["to"] == fan.jid.userhost()


def test_an_item_id_is_made_when_the_publisher_gives_none(h):
    alice = h.login("alice@localhost/pc")
    ok(create(alice))
    reply = ok(publish(alice, item_id=None))
    made = next(next(next(reply.elements()).elements()).elements())["id"]
    assert made and made in h.component("pubsub").core.nodes["news"].items


def test_a_full_jid_subscription_is_notified_at_that_resource_only(h):
    alice = h.login("alice@localhost/pc")
    phone, laptop = h.login("bob@localhost/phone"), h.login("bob@localhost/laptop")
    ok(create(alice))
    ok(subscribe(phone, jid="bob@localhost/phone"))
    ok(publish(alice))
    [note] = events(phone)
    assert note["to"] == "bob@localhost/phone"
    assert events(laptop) == []


@pytest.mark.parametrize("body, expected", [
    ("<publish><item><entry xmlns='urn:ex'/></item></publish>",
     ("modify", "bad-request", "nodeid-required")),
    ("<publish node='news'/>", ("modify", "bad-request", "item-required")),
    ("<publish node='news'><item id='x'/></publish>",
     ("modify", "bad-request", "payload-required")),
    ("<publish node='news'><item id='x'><a xmlns='urn:ex'/><b xmlns='urn:ex'/></item></publish>",
     ("modify", "bad-request", "invalid-payload")),
    ("<publish node='news'><item id='x'><a xmlns='urn:ex'/></item>"
     "<item id='y'><a xmlns='urn:ex'/></item></publish>",
     ("modify", "bad-request", "invalid-payload")),
    ("<publish node='news'><item id='x' publisher='bob@localhost'><a xmlns='urn:ex'/></item>"
     "</publish>", ("auth", "forbidden", None)),
    ("<publish node='nope'><item id='x'><a xmlns='urn:ex'/></item></publish>",
     ("cancel", "item-not-found", None)),
    ("<publish node='news'><item id='x'><a xmlns='urn:ex'>" + "z" * 300 + "</a></item></publish>",
     ("modify", "not-acceptable", "payload-too-big")),
])
def test_a_bad_publication_is_refused_and_stores_nothing(h, body, expected):
    alice = h.login("alice@localhost/pc")
    ok(create(alice))
    assert refused(request(alice, "set", body)) == expected
    assert not h.component("pubsub").core.nodes["news"].items


def test_the_publisher_attribute_may_be_the_publishers_own_jid(h):
    alice = h.login("alice@localhost/pc")
    ok(create(alice))
    ok(request(alice, "set", "<publish node='news'><item id='x' publisher='alice@localhost'>"
               "<a xmlns='urn:ex'/></item></publish>"))


def test_a_payload_of_another_namespace_than_the_nodes_type_is_invalid(h):
    alice = h.login("alice@localhost/pc")
    ok(create(alice, config=form(("pubsub#type", "urn:ex"))))
    reply = publish(alice, payload="<other xmlns='urn:other'/>")
    assert refused(reply) == ("modify", "bad-request", "invalid-payload")
    ok(publish(alice, payload="<entry xmlns='urn:ex'/>"))


def test_only_publishers_publish(h):
    alice, bob = h.login("alice@localhost/pc"), h.login("bob@localhost/pc")
    ok(create(alice))
    assert refused(publish(bob)) == ("auth", "forbidden", None)
    ok(request(alice, "set", "<affiliations node='news'>"
               "<affiliation jid='bob@localhost' affiliation='publisher'/></affiliations>",
               owner=True))
    ok(publish(bob))


def test_publish_options_are_preconditions_on_the_configuration(h):
    alice = h.login("alice@localhost/pc")
    ok(create(alice))
    options = ("<publish-options>" + form(("pubsub#access_model", "whitelist"),
                                          form_type=ns.PUBSUB_PUBLISH_OPTIONS)
               + "</publish-options>")
    reply = publish(alice, extra=options)
    assert refused(reply) == ("cancel", "conflict", "precondition-not-met")
    text = next(error_of(reply).elements(ns.STANZA_ERRORS, "text"))
    assert str(text) == "Field does not match: access_model"
    met = ("<publish-options>" + form(("pubsub#access_model", "open"),
                                      ("pubsub#persist_items", "1"),
                                      form_type=ns.PUBSUB_PUBLISH_OPTIONS) + "</publish-options>")
    ok(publish(alice, extra=met))
    unknown = ("<publish-options>" + form(("pubsub#whatever", "1"),
                                          form_type=ns.PUBSUB_PUBLISH_OPTIONS)
               + "</publish-options>")
    assert refused(publish(alice, item_id="i2", extra=unknown)) == (
        "cancel", "conflict", "precondition-not-met")
    assert list(h.component("pubsub").core.nodes["news"].items) == ["i1"]


def test_max_items_keeps_the_newest(h):
    alice = h.login("alice@localhost/pc")
    ok(create(alice, config=form(("pubsub#max_items", "2"))))
    for i in range(4):
        ok(publish(alice, item_id=f"i{i}"))
    assert list(h.component("pubsub").core.nodes["news"].items) == ["i2", "i3"]


# -- retract (§7.2) and purge (§8.5) -------------------------------------------------

def test_retract_with_notify_tells_subscribers_and_without_does_not(h):
    alice, bob = h.login("alice@localhost/pc"), h.login("bob@localhost/pc")
    ok(create(alice))
    ok(subscribe(bob))
    ok(publish(alice, item_id="a"))
    ok(publish(alice, item_id="b"))
    events(bob)
    ok(request(alice, "set", "<retract node='news' notify='true'><item id='a'/></retract>"))
    [note] = events(bob)
    items = event_child(note)
    assert [(c.name, c["id"]) for c in items.elements()] == [("retract", "a")]
    ok(request(alice, "set", "<retract node='news'><item id='b'/></retract>"))
    assert events(bob) == []
    assert not h.component("pubsub").core.nodes["news"].items


@pytest.mark.parametrize("body, expected", [
    ("<retract><item id='a'/></retract>", ("modify", "bad-request", "nodeid-required")),
    ("<retract node='news'/>", ("modify", "bad-request", "item-required")),
    ("<retract node='news'><item/></retract>", ("modify", "bad-request", "item-required")),
    ("<retract node='news'><item id='nope'/></retract>", ("cancel", "item-not-found", None)),
    ("<retract node='nope'><item id='a'/></retract>", ("cancel", "item-not-found", None)),
])
def test_a_bad_retraction_is_refused(h, body, expected):
    alice = h.login("alice@localhost/pc")
    ok(create(alice))
    ok(publish(alice, item_id="a"))
    assert refused(request(alice, "set", body)) == expected
    assert list(h.component("pubsub").core.nodes["news"].items) == ["a"]


def test_a_stranger_cannot_retract(h):
    alice, bob = h.login("alice@localhost/pc"), h.login("bob@localhost/pc")
    ok(create(alice))
    ok(publish(alice, item_id="a"))
    reply = request(bob, "set", "<retract node='news'><item id='a'/></retract>")
    assert refused(reply) == ("auth", "forbidden", None)


def test_purge_empties_the_node_and_notifies(h):
    alice, bob = h.login("alice@localhost/pc"), h.login("bob@localhost/pc")
    ok(create(alice))
    ok(subscribe(bob))
    ok(publish(alice))
    events(bob)
    assert refused(request(bob, "set", "<purge node='news'/>", owner=True))[1] == "forbidden"
    ok(request(alice, "set", "<purge node='news'/>", owner=True))
    [note] = events(bob)
    assert (event_child(note).name, event_child(note)["node"]) == ("purge", "news")
    assert not h.component("pubsub").core.nodes["news"].items


# -- delete (§8.4) -------------------------------------------------------------------

def test_delete_with_a_redirect_tells_subscribers_where_to_go(h):
    alice, bob = h.login("alice@localhost/pc"), h.login("bob@localhost/pc")
    ok(create(alice))
    ok(subscribe(bob))
    assert refused(request(bob, "set", "<delete node='news'/>", owner=True))[1] == "forbidden"
    ok(request(alice, "set", "<delete node='news'><redirect uri='xmpp:pubsub.localhost?;node=new'/>"
               "</delete>", owner=True))
    [note] = events(bob)
    deleted = event_child(note)
    assert (deleted.name, deleted["node"]) == ("delete", "news")
    assert next(deleted.elements(EVENT, "redirect"))["uri"] == "xmpp:pubsub.localhost?;node=new"
    assert "news" not in h.component("pubsub").core.nodes
    reply = request(alice, "set", "<delete node='news'/>", owner=True)
    assert refused(reply) == ("cancel", "item-not-found", None)


# -- subscribe, unsubscribe (§6.1, §6.2) ---------------------------------------------

def test_subscribe_answers_the_subscription(h):
    alice, bob = h.login("alice@localhost/pc"), h.login("bob@localhost/pc")
    ok(create(alice))
    reply = ok(subscribe(bob))
    sub = next(next(reply.elements(PUBSUB, "pubsub")).elements(PUBSUB, "subscription"))
    assert (sub["node"], sub["jid"], sub["subscription"]) == ("news", "bob@localhost", "subscribed")


@pytest.mark.parametrize("body, expected", [
    ("<subscribe node='news' jid='alice@localhost'/>", ("modify", "bad-request", "invalid-jid")),
    ("<subscribe node='news'/>", ("modify", "bad-request", "invalid-jid")),
    ("<subscribe node='news' jid='@@'/>", ("modify", "bad-request", "invalid-jid")),
    ("<subscribe jid='bob@localhost'/>", ("modify", "bad-request", "nodeid-required")),
    ("<subscribe node='nope' jid='bob@localhost'/>", ("cancel", "item-not-found", None)),
    ("<subscribe node='news' jid='bob@localhost'/><options><x xmlns='jabber:x:data' "
     "type='submit'/></options>", ("cancel", "feature-not-implemented", "unsupported")),
])
def test_a_bad_subscription_request_is_refused(h, body, expected):
    alice, bob = h.login("alice@localhost/pc"), h.login("bob@localhost/pc")
    ok(create(alice))
    assert refused(request(bob, "set", body)) == expected
    assert h.component("pubsub").core.nodes["news"].subscriptions == {}


def test_an_outcast_may_not_subscribe_and_a_whitelist_is_closed(h):
    alice, bob = h.login("alice@localhost/pc"), h.login("bob@localhost/pc")
    ok(create(alice))
    ok(request(alice, "set", "<affiliations node='news'>"
               "<affiliation jid='bob@localhost' affiliation='outcast'/></affiliations>",
               owner=True))
    assert refused(subscribe(bob)) == ("auth", "forbidden", None)
    ok(create(alice, "closed", config=form(("pubsub#access_model", "whitelist"))))
    assert refused(subscribe(bob, "closed")) == ("cancel", "not-allowed", "closed-node")


def test_subscriptions_per_node_are_bounded(h):
    alice = h.login("alice@localhost/pc")
    ok(create(alice))
    for name in ("u1", "u2", "u3"):
        ok(subscribe(h.login(f"{name}@localhost/pc")))
    reply = subscribe(h.login("u4@localhost/pc"))
    assert refused(reply)[1:] == ("policy-violation", "too-many-subscriptions")


def test_subscription_options_are_not_supported(h):
    alice, bob = h.login("alice@localhost/pc"), h.login("bob@localhost/pc")
    ok(create(alice))
    ok(subscribe(bob))
    for type_, body in (("get", "<options node='news' jid='bob@localhost'/>"),
                        ("set", "<options node='news' jid='bob@localhost'>"
                                "<x xmlns='jabber:x:data' type='submit'/></options>"),
                        ("get", "<default/>")):
        reply = request(bob, type_, body)
        assert refused(reply) == ("cancel", "feature-not-implemented", "unsupported")
        unsupported = next(c for c in error_of(reply).elements() if c.uri == ns.PUBSUB_ERRORS)
        assert unsupported["feature"] == "subscription-options"


def test_the_last_item_follows_the_subscription_result_when_on_sub(h):
    alice, bob = h.login("alice@localhost/pc"), h.login("bob@localhost/pc")
    ok(create(alice, config=form(("pubsub#send_last_published_item", "on_sub"))))
    ok(publish(alice, item_id="old"))
    ok(publish(alice, item_id="new"))
    bob.feed(f"<iq type='set' id='s' to='{SERVICE}'><pubsub xmlns='{PUBSUB}'>"
             "<subscribe node='news' jid='bob@localhost'/></pubsub></iq>")
    received = bob.take()
    assert [s.name for s in received] == ["iq", "message"], [s.toXml() for s in received]
    items = event_child(received[1])
    assert [i["id"] for i in items.elements(EVENT, "item")] == ["new"]


def test_unsubscribe_ends_the_subscription_once(h):
    alice, bob = h.login("alice@localhost/pc"), h.login("bob@localhost/pc")
    ok(create(alice))
    ok(subscribe(bob))
    reply = ok(request(bob, "set", "<unsubscribe node='news' jid='bob@localhost'/>"))
    sub = next(next(reply.elements()).elements())
    assert (sub["jid"], sub["subscription"]) == ("bob@localhost", "none")
    reply = request(bob, "set", "<unsubscribe node='news' jid='bob@localhost'/>")
    assert refused(reply) == ("modify", "unexpected-request", "not-subscribed")
    ok(publish(alice))
    assert events(bob) == []


def test_unsubscribing_someone_else_is_forbidden(h):
    alice, bob, carol = (h.login(f"{n}@localhost/pc") for n in ("alice", "bob", "carol"))
    ok(create(alice))
    ok(subscribe(bob))
    reply = request(carol, "set", "<unsubscribe node='news' jid='bob@localhost'/>")
    assert refused(reply) == ("auth", "forbidden", None)


# -- items (§6.5) ------------------------------------------------------------------

def item_ids(reply) -> list[str]:
    items = next(next(reply.elements(PUBSUB, "pubsub")).elements(PUBSUB, "items"))
    return [i["id"] for i in items.elements(PUBSUB, "item")]


def test_items_all_the_newest_and_by_id(h):
    alice, bob = h.login("alice@localhost/pc"), h.login("bob@localhost/pc")
    ok(create(alice))
    for i in ("a", "b", "c"):
        ok(publish(alice, item_id=i, payload=f"<entry xmlns='urn:ex'>{i}</entry>"))
    reply = ok(request(bob, "get", "<items node='news'/>"))
    assert item_ids(reply) == ["a", "b", "c"]
    first = next(next(next(reply.elements()).elements()).elements())
    assert str(next(first.elements())) == "a"
    assert item_ids(ok(request(bob, "get", "<items node='news' max_items='2'/>"))) == ["b", "c"]
    assert item_ids(ok(request(bob, "get", "<items node='news'><item id='c'/><item id='zz'/>"
                                           "<item id='a'/></items>"))) == ["c", "a"]


@pytest.mark.parametrize("body, expected", [
    ("<items/>", ("modify", "bad-request", "nodeid-required")),
    ("<items node='nope'/>", ("cancel", "item-not-found", None)),
    ("<items node='news' max_items='many'/>", ("modify", "bad-request", None)),
    ("<items node='closed'/>", ("cancel", "not-allowed", "closed-node")),
])
def test_a_bad_items_request_is_refused(h, body, expected):
    alice, bob = h.login("alice@localhost/pc"), h.login("bob@localhost/pc")
    ok(create(alice))
    ok(create(alice, "closed", config=form(("pubsub#access_model", "whitelist"))))
    assert refused(request(bob, "get", body)) == expected


# -- an entity's subscriptions and affiliations (§5.6, §5.7) ---------------------------

def test_an_entity_lists_its_subscriptions_and_affiliations(h):
    alice, bob = h.login("alice@localhost/pc"), h.login("bob@localhost/pc")
    ok(create(alice, "a"))
    ok(create(alice, "b"))
    ok(subscribe(bob, "a"))
    ok(subscribe(bob, "b", jid="bob@localhost/pc"))
    reply = ok(request(bob, "get", "<subscriptions/>"))
    subs = next(next(reply.elements()).elements())
    assert sorted((s["node"], s["jid"], s["subscription"]) for s in subs.elements()) == [
        ("a", "bob@localhost", "subscribed"), ("b", "bob@localhost/pc", "subscribed")]
    reply = ok(request(bob, "get", "<subscriptions node='a'/>"))
    assert [s["node"] for s in next(next(reply.elements()).elements()).elements()] == ["a"]
    reply = ok(request(alice, "get", "<affiliations/>"))
    affs = next(next(reply.elements()).elements())
    assert sorted((a["node"], a["affiliation"]) for a in affs.elements()) == [
        ("a", "owner"), ("b", "owner")]
    reply = ok(request(bob, "get", "<affiliations/>"))
    assert list(next(next(reply.elements()).elements()).elements()) == []


# -- owners manage subscriptions and affiliations (§8.8, §8.9) ------------------------

def test_the_owner_lists_and_changes_subscriptions_and_the_subscriber_is_told(h):
    alice, bob, carol = (h.login(f"{n}@localhost/pc") for n in ("alice", "bob", "carol"))
    ok(create(alice))
    ok(subscribe(bob))
    reply = ok(request(alice, "get", "<subscriptions node='news'/>", owner=True))
    subs = next(next(reply.elements()).elements())
    assert subs["node"] == "news"
    assert [(s["jid"], s["subscription"]) for s in subs.elements()] == [
        ("bob@localhost", "subscribed")]
    reply = request(bob, "get", "<subscriptions node='news'/>", owner=True)
    assert refused(reply)[1] == "forbidden"
    ok(request(alice, "set", "<subscriptions node='news'>"
               "<subscription jid='bob@localhost' subscription='none'/>"
               "<subscription jid='carol@localhost' subscription='subscribed'/>"
               "</subscriptions>", owner=True))
    [told] = events(bob)
    sub = event_child(told)
    assert (sub.name, sub["node"], sub["jid"], sub["subscription"]) == (
        "subscription", "news", "bob@localhost", "none")
    assert [event_child(m)["subscription"] for m in events(carol)] == ["subscribed"]
    assert h.component("pubsub").core.nodes["news"].subscriptions == {
        "carol@localhost": "subscribed"}


def test_the_owner_lists_and_changes_affiliations(h):
    alice, bob = h.login("alice@localhost/pc"), h.login("bob@localhost/pc")
    ok(create(alice))
    ok(request(alice, "set", "<affiliations node='news'>"
               "<affiliation jid='bob@localhost/pc' affiliation='publisher'/></affiliations>",
               owner=True))
    reply = ok(request(alice, "get", "<affiliations node='news'/>", owner=True))
    affs = next(next(reply.elements()).elements())
    assert sorted((a["jid"], a["affiliation"]) for a in affs.elements()) == [
        ("alice@localhost", "owner"), ("bob@localhost", "publisher")]
    reply = request(bob, "set", "<affiliations node='news'>"
                    "<affiliation jid='bob@localhost' affiliation='owner'/></affiliations>",
                    owner=True)
    assert refused(reply) == ("auth", "forbidden", None)
    reply = request(alice, "set", "<affiliations node='news'>"
                    "<affiliation jid='bob@localhost' affiliation='king'/></affiliations>",
                    owner=True)
    assert refused(reply)[1] == "bad-request"
    reply = request(alice, "set", "<affiliations node='news'>"
                    "<affiliation jid='alice@localhost' affiliation='none'/></affiliations>",
                    owner=True)
    assert refused(reply)[1] == "not-acceptable"
    assert h.component("pubsub").core.nodes["news"].affiliations == {
        "alice@localhost": "owner", "bob@localhost": "publisher"}


def test_server_admins_own_every_node(h):
    alice, root = h.login("alice@localhost/pc"), h.login("root@localhost/pc")
    ok(create(alice))
    ok(request(root, "set", "<purge node='news'/>", owner=True))
    ok(request(root, "set", "<delete node='news'/>", owner=True))


# -- requests the service does not know ----------------------------------------------

def test_an_empty_pubsub_is_a_bad_request_and_an_unknown_action_unavailable(h):
    alice = h.login("alice@localhost/pc")
    assert refused(request(alice, "set", "")) == ("cancel", "bad-request", None)
    assert refused(request(alice, "set", "<frob node='x'/>"))[1] == "service-unavailable"
    assert refused(request(alice, "get", "<publish node='x'/>"))[1] == "service-unavailable"


# -- service discovery (§5) ----------------------------------------------------------

def disco(session, kind: str, node: str | None = None):
    node_attr = f" node='{node}'" if node else ""
    session.feed(f"<iq type='get' id='d' to='{SERVICE}'>"
                 f"<query xmlns='http://jabber.org/protocol/disco#{kind}'{node_attr}/></iq>")
    [reply] = [s for s in session.take() if s.getAttribute("id") == "d"]
    return reply


def test_the_service_is_a_pubsub_service_with_prosodys_features(h):
    alice = h.login("alice@localhost/pc")
    query = next(ok(disco(alice, "info")).elements())
    assert [(i["category"], i["type"]) for i in query.elements(ns.DISCO_INFO, "identity")] == [
        ("pubsub", "service")]
    features = {f["var"] for f in query.elements(ns.DISCO_INFO, "feature")}
    for name in ("create-nodes", "instant-nodes", "create-and-configure", "publish",
                 "publish-options", "retract-items", "delete-items", "purge-nodes",
                 "delete-nodes", "retrieve-items", "retrieve-subscriptions", "subscribe",
                 "config-node", "config-node-max", "meta-data", "modify-affiliations",
                 "persistent-items", "access-open", "retrieve-default", "item-ids",
                 "member-affiliation", "outcast-affiliation",
                 "publisher-affiliation"):
        assert f"{PUBSUB}#{name}" in features, name
    assert PUBSUB in features
    assert f"{PUBSUB}#subscription-options" not in features
    # one item per publish (more are refused): multi-items is not claimed
    assert f"{PUBSUB}#multi-items" not in features
    assert f"{PUBSUB}#auto-create" not in features


def test_the_server_lists_the_service(h):
    alice = h.login("alice@localhost/pc")
    alice.feed("<iq type='get' id='s' to='localhost'>"
               "<query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
    [reply] = alice.take()
    assert ("pubsub.localhost", "Publish-Subscribe") in [
        (i["jid"], i.getAttribute("name")) for i in next(reply.elements()).elements()]


def test_a_nodes_info_has_its_meta_data_and_title(h):
    alice, bob = h.login("alice@localhost/pc"), h.login("bob@localhost/pc")
    ok(create(alice, config=form(("pubsub#title", "News"))))
    query = next(ok(disco(bob, "info", "news")).elements())
    assert query["node"] == "news"
    assert [(i["category"], i["type"]) for i in query.elements(ns.DISCO_INFO, "identity")] == [
        ("pubsub", "leaf")]
    x = next(query.elements(ns.DATA_FORMS, "x"))
    values = {f["var"]: [str(v) for v in f.elements(ns.DATA_FORMS, "value")]
              for f in x.elements(ns.DATA_FORMS, "field")}
    assert values["FORM_TYPE"] == [ns.PUBSUB_META_DATA]
    assert values["pubsub#title"] == ["News"]
    assert values["pubsub#access_model"] == ["open"]
    assert values["pubsub#description"] == []
    assert error_condition(disco(bob, "info", "nope")) == "item-not-found"


def test_disco_items_lists_the_nodes_the_requester_may_see_and_a_nodes_items(h):
    alice, bob = h.login("alice@localhost/pc"), h.login("bob@localhost/pc")
    ok(create(alice, config=form(("pubsub#title", "News"))))
    ok(create(alice, "secret", config=form(("pubsub#access_model", "whitelist"))))
    ok(publish(alice, item_id="a"))
    ok(publish(alice, item_id="b"))
    listed = [(i["jid"], i["node"], i.getAttribute("name"))
              for i in next(ok(disco(bob, "items")).elements()).elements()]
    assert listed == [(SERVICE, "news", "News")]
    listed = [i["node"] for i in next(ok(disco(alice, "items")).elements()).elements()]
    assert listed == ["news", "secret"]
    query = next(ok(disco(bob, "items", "news")).elements())
    assert [(i["jid"], i["name"]) for i in query.elements()] == [(SERVICE, "b"), (SERVICE, "a")]
    assert error_condition(disco(bob, "items", "secret")) == "item-not-found"
    assert error_condition(disco(bob, "info", "secret")) == "item-not-found"


# -- accounts ------------------------------------------------------------------------

def test_a_deleted_account_loses_its_subscriptions_and_affiliations(h):
    alice, bob = h.login("alice@localhost/pc"), h.login("bob@localhost/pc")
    ok(create(alice, "alices"))
    ok(create(alice, "shared"))
    ok(request(alice, "set", "<affiliations node='shared'>"
               "<affiliation jid='bob@localhost' affiliation='owner'/></affiliations>", owner=True))
    ok(subscribe(bob, "alices"))
    ok(subscribe(alice, "shared", jid="alice@localhost/pc"))
    h.router.notify("account-deleted", "alice@localhost")
    core = h.component("pubsub").core
    assert "alices" not in core.nodes  # alice alone owned it
    assert core.nodes["shared"].affiliations == {"bob@localhost": "owner"}
    assert core.nodes["shared"].subscriptions == {}
    ok(publish(bob, "shared"))
