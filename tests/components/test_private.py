"""XEP-0049: private XML storage, each account's own and no one else's."""

from twisted.internet import defer

from xmppd.components.private import PrivateComponent
from xmppd.testing import Harness, error_condition, only, parse, result_of

PRIVATE = "jabber:iq:private"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
BOOKMARKS = ("<storage xmlns='storage:bookmarks'>"
             "<conference jid='room@muc.localhost' autojoin='true' name='R &amp; D'>"
             "<nick>alice</nick></conference></storage>")


def harness(**options):
    return Harness(["private"], options={"component:private": options} if options else None)


def set_private(session, payload, iq_id="s1", to=None):
    to_attr = f" to='{to}'" if to else ""
    session.feed(f"<iq type='set' id='{iq_id}'{to_attr}><query xmlns='{PRIVATE}'>{payload}</query></iq>")
    return only(session)


def get_private(session, payload, iq_id="g1", to=None):
    to_attr = f" to='{to}'" if to else ""
    session.feed(f"<iq type='get' id='{iq_id}'{to_attr}><query xmlns='{PRIVATE}'>{payload}</query></iq>")
    return only(session)


def returned(reply):
    """The elements inside the result's <query/>."""
    assert reply["type"] == "result", reply.toXml()
    (query,) = list(reply.elements())
    assert (query.uri, query.name) == (PRIVATE, "query")
    return list(query.elements())


def stored(h, user="alice@localhost"):
    return result_of(h.component("private").store["private"].items(user))


def error_type(reply):
    return next(c for c in reply.elements() if c.name == "error")["type"]


# -- store and retrieve ----------------------------------------------------------

def test_set_answers_an_empty_result_and_get_returns_the_element_as_stored():
    h = harness()
    alice = h.login("alice@localhost/phone")
    reply = set_private(alice, BOOKMARKS)
    assert (reply["type"], reply["id"], reply["to"]) == ("result", "s1", "alice@localhost/phone")
    assert list(reply.elements()) == []
    reply = get_private(alice, "<storage xmlns='storage:bookmarks'/>")
    assert reply["id"] == "g1"
    (element,) = returned(reply)
    assert element.toXml() == parse(BOOKMARKS).toXml()
    conference = next(element.elements("storage:bookmarks", "conference"))
    assert conference["name"] == "R & D"
    assert str(next(conference.elements("storage:bookmarks", "nick"))) == "alice"


def test_mixed_namespaces_attributes_and_text_survive_the_round_trip():
    h = harness()
    alice = h.login("alice@localhost/phone")
    payload = ("<prefs xmlns='urn:example:prefs' xmlns:x='urn:example:x' x:flag='1' "
               "xml:lang='en'><x:colour>blue &lt;ish&gt;</x:colour>"
               "<other xmlns='urn:example:other' a='&quot;q&quot;'/>tail</prefs>")
    set_private(alice, payload)
    (element,) = returned(get_private(alice, "<prefs xmlns='urn:example:prefs'/>"))
    assert element.toXml() == parse(payload).toXml()
    assert element[("urn:example:x", "flag")] == "1"
    assert str(next(element.elements("urn:example:x", "colour"))) == "blue <ish>"


def test_a_prefixed_element_is_stored_under_its_namespace_and_name():
    h = harness()
    alice = h.login("alice@localhost/phone")
    set_private(alice, "<p:storage xmlns:p='storage:bookmarks'><p:conference jid='r@m'/></p:storage>")
    (element,) = returned(get_private(alice, "<storage xmlns='storage:bookmarks'/>"))
    assert (element.uri, element.name) == ("storage:bookmarks", "storage")
    (conference,) = list(element.elements())
    assert (conference.uri, conference.name, conference["jid"]) == (
        "storage:bookmarks", "conference", "r@m")


def test_get_with_nothing_stored_returns_the_empty_requested_element():
    h = harness()
    alice = h.login("alice@localhost/phone")
    reply = get_private(alice, "<storage xmlns='storage:bookmarks' x='1'><junk/></storage>")
    (element,) = returned(reply)
    assert (element.uri, element.name) == ("storage:bookmarks", "storage")
    assert element.attributes == {} and element.children == []


def test_a_second_set_replaces_the_first():
    h = harness()
    alice = h.login("alice@localhost/phone")
    set_private(alice, "<notes xmlns='urn:example:notes'>one</notes>")
    set_private(alice, "<notes xmlns='urn:example:notes'>two</notes>", iq_id="s2")
    (element,) = returned(get_private(alice, "<notes xmlns='urn:example:notes'/>"))
    assert str(element) == "two"


def test_elements_are_told_apart_by_namespace_and_by_name():
    h = harness()
    alice = h.login("alice@localhost/phone")
    set_private(alice, "<a xmlns='urn:example:one'>1</a>")
    set_private(alice, "<a xmlns='urn:example:two'>2</a>", iq_id="s2")
    set_private(alice, "<b xmlns='urn:example:one'>3</b>", iq_id="s3")
    assert str(returned(get_private(alice, "<a xmlns='urn:example:one'/>"))[0]) == "1"
    assert str(returned(get_private(alice, "<a xmlns='urn:example:two'/>"))[0]) == "2"
    assert str(returned(get_private(alice, "<b xmlns='urn:example:one'/>"))[0]) == "3"
    assert len(stored(h)) == 3


def test_own_bare_jid_as_to_is_the_same_as_no_to():
    h = harness()
    alice = h.login("alice@localhost/phone")
    reply = set_private(alice, BOOKMARKS, to="alice@localhost")
    assert reply["type"] == "result"
    (element,) = returned(get_private(alice, "<storage xmlns='storage:bookmarks'/>"))
    assert element.toXml() == parse(BOOKMARKS).toXml()


def test_each_account_has_its_own_storage():
    h = harness()
    alice = h.login("alice@localhost/phone")
    bob = h.login("bob@localhost/pc")
    set_private(alice, BOOKMARKS)
    (element,) = returned(get_private(bob, "<storage xmlns='storage:bookmarks'/>"))
    assert element.children == []
    assert stored(h, "bob@localhost") == {}


def test_another_resource_of_the_account_sees_what_one_stored():
    h = harness()
    phone = h.login("alice@localhost/phone")
    laptop = h.login("alice@localhost/laptop")
    set_private(phone, BOOKMARKS)
    (element,) = returned(get_private(laptop, "<storage xmlns='storage:bookmarks'/>"))
    assert element.toXml() == parse(BOOKMARKS).toXml()


def test_storage_survives_a_restart_of_the_component():
    h = harness()
    alice = h.login("alice@localhost/phone")
    set_private(alice, BOOKMARKS)
    old = h.component("private")
    old.disownServiceParent()
    new = PrivateComponent(h.server, h.config.component("private"))
    new.setServiceParent(h.server)
    (element,) = returned(get_private(alice, "<storage xmlns='storage:bookmarks'/>"))
    assert element.toXml() == parse(BOOKMARKS).toXml()


# -- several elements (XEP-0049 §2.3) ----------------------------------------------

def test_a_set_may_store_several_elements_and_a_get_fetch_several_of_one_namespace():
    h = harness()
    alice = h.login("alice@localhost/phone")
    set_private(alice, "<a xmlns='urn:example:x'>1</a><b xmlns='urn:example:x'>2</b>"
                       "<c xmlns='urn:example:y'>3</c>")
    elements = returned(get_private(alice, "<a xmlns='urn:example:x'/><b xmlns='urn:example:x'/>"))
    assert [(e.name, str(e)) for e in elements] == [("a", "1"), ("b", "2")]
    assert str(returned(get_private(alice, "<c xmlns='urn:example:y'/>"))[0]) == "3"


def test_a_get_spanning_namespaces_is_a_bad_request():
    h = harness()
    alice = h.login("alice@localhost/phone")
    reply = get_private(alice, "<a xmlns='urn:example:x'/><c xmlns='urn:example:y'/>")
    assert error_condition(reply) == "bad-request"


def test_the_same_element_twice_in_a_set_is_refused_and_nothing_is_stored():
    h = harness()
    alice = h.login("alice@localhost/phone")
    set_private(alice, "<a xmlns='urn:example:x'>old</a>")
    reply = set_private(alice, "<b xmlns='urn:example:x'/><a xmlns='urn:example:x'>1</a>"
                               "<a xmlns='urn:example:x'>2</a>", iq_id="s2")
    assert error_condition(reply) == "bad-request"
    assert list(stored(h)) == ["{urn:example:x}a"]
    assert str(returned(get_private(alice, "<a xmlns='urn:example:x'/>"))[0]) == "old"


# -- malformed and refused requests ---------------------------------------------

def test_a_query_without_a_child_is_not_acceptable():
    h = harness()
    alice = h.login("alice@localhost/phone")
    for kind in ("get", "set"):
        alice.feed(f"<iq type='{kind}' id='e1'><query xmlns='{PRIVATE}'/></iq>")
        reply = only(alice)
        assert reply["id"] == "e1"
        assert error_condition(reply) == "not-acceptable"
        assert error_type(reply) == "modify"
        # the request's payload is not echoed, as in Prosody (RFC 6120 §8.3.1: MAY)
        assert next(reply.elements(PRIVATE, "query"), None) is None


def test_a_child_without_a_namespace_of_its_own_is_not_acceptable():
    h = harness()
    alice = h.login("alice@localhost/phone")
    reply = set_private(alice, "<prefs>x</prefs>")  # inherits jabber:iq:private
    assert error_condition(reply) == "not-acceptable"
    reply = get_private(alice, "<prefs xmlns=''/>")
    assert error_condition(reply) == "not-acceptable"
    assert stored(h) == {}


def test_reserved_namespaces_are_not_acceptable_for_get_and_set():
    h = harness()
    alice = h.login("alice@localhost/phone")
    for namespace in ("jabber:iq:roster", "jabber:iq:private", "jabber:x:data",
                      "http://jabber.org/protocol/muc", "vcard-temp"):
        reply = set_private(alice, f"<x xmlns='{namespace}'><FN>Hamlet</FN></x>")
        assert error_condition(reply) == "not-acceptable", namespace
        assert error_type(reply) == "modify"
        reply = get_private(alice, f"<x xmlns='{namespace}'/>")
        assert error_condition(reply) == "not-acceptable", namespace
    assert stored(h) == {}


def test_a_set_with_one_refused_element_stores_none_of_them():
    h = harness()
    alice = h.login("alice@localhost/phone")
    reply = set_private(alice, BOOKMARKS + "<vCard xmlns='vcard-temp'/>")
    assert error_condition(reply) == "not-acceptable"
    assert stored(h) == {}


def test_get_or_set_on_another_users_storage_is_forbidden_and_changes_nothing():
    h = harness()
    alice = h.login("alice@localhost/phone")
    macbeth = h.login("macbeth@localhost/castle")
    set_private(alice, BOOKMARKS)
    before = stored(h)
    reply = set_private(macbeth, "<storage xmlns='storage:bookmarks'/>", iq_id="x1",
                        to="alice@localhost")
    assert (reply["id"], reply["to"], reply["from"]) == ("x1", "macbeth@localhost/castle",
                                                         "alice@localhost")
    assert error_condition(reply) == "forbidden"
    assert error_type(reply) == "auth"
    reply = get_private(macbeth, "<storage xmlns='storage:bookmarks'/>", iq_id="x2",
                        to="alice@localhost")
    assert error_condition(reply) == "forbidden"
    # nothing of alice's was revealed in the error, nothing changed or written
    assert [c.name for c in reply.elements()] == ["error"]
    assert stored(h) == before
    assert stored(h, "macbeth@localhost") == {}
    assert alice.take() == []


def test_a_request_to_an_account_that_does_not_exist_is_forbidden_too():
    h = harness()
    macbeth = h.login("macbeth@localhost/castle")
    reply = get_private(macbeth, "<storage xmlns='storage:bookmarks'/>", to="nobody@localhost")
    assert error_condition(reply) == "forbidden"


def test_a_query_to_the_server_itself_is_not_served():
    h = harness()
    alice = h.login("alice@localhost/phone")
    reply = get_private(alice, "<storage xmlns='storage:bookmarks'/>", to="localhost")
    assert error_condition(reply) == "service-unavailable"


# -- deletion -------------------------------------------------------------------

def test_storing_an_empty_element_deletes_the_entry():
    h = harness()
    alice = h.login("alice@localhost/phone")
    set_private(alice, BOOKMARKS)
    reply = set_private(alice, "<storage xmlns='storage:bookmarks'> </storage>", iq_id="s2")
    assert reply["type"] == "result"
    assert stored(h) == {}
    (element,) = returned(get_private(alice, "<storage xmlns='storage:bookmarks'/>"))
    assert element.children == []


def test_an_element_with_only_attributes_is_kept():
    h = harness()
    alice = h.login("alice@localhost/phone")
    set_private(alice, "<delimiter xmlns='roster:delimiter' sep='::'/>")
    (element,) = returned(get_private(alice, "<delimiter xmlns='roster:delimiter'/>"))
    assert element["sep"] == "::"


# -- size limit -------------------------------------------------------------------

def test_a_set_beyond_max_size_is_a_policy_violation_and_keeps_the_old_data():
    h = harness(max_size="200")
    alice = h.login("alice@localhost/phone")
    set_private(alice, "<notes xmlns='urn:example:notes'>short</notes>")
    before = stored(h)
    reply = set_private(alice, f"<notes xmlns='urn:example:notes'>{'x' * 300}</notes>", iq_id="s2")
    assert error_condition(reply) == "policy-violation"
    assert error_type(reply) == "modify"
    assert stored(h) == before
    assert str(returned(get_private(alice, "<notes xmlns='urn:example:notes'/>"))[0]) == "short"


def test_max_size_counts_all_elements_of_the_account_but_a_replaced_one_only_once():
    h = harness(max_size="200")
    alice = h.login("alice@localhost/phone")
    body = "y" * 100  # each element is about 140 bytes of XML
    assert set_private(alice, f"<a xmlns='urn:example:x'>{body}</a>")["type"] == "result"
    # replacing it with the same size fits; adding a second does not
    assert set_private(alice, f"<a xmlns='urn:example:x'>{body}</a>", iq_id="s2")["type"] == "result"
    reply = set_private(alice, f"<b xmlns='urn:example:x'>{body}</b>", iq_id="s3")
    assert error_condition(reply) == "policy-violation"
    assert list(stored(h)) == ["{urn:example:x}a"]
    # another account has its own allowance
    bob = h.login("bob@localhost/pc")
    assert set_private(bob, f"<b xmlns='urn:example:x'>{body}</b>")["type"] == "result"


def test_max_size_zero_means_no_limit_of_our_own():
    h = harness(max_size="0")
    alice = h.login("alice@localhost/phone")
    reply = set_private(alice, f"<notes xmlns='urn:example:notes'>{'z' * 5000}</notes>")
    assert reply["type"] == "result"


def test_the_default_max_size_is_one_mebibyte():
    h = harness()
    assert h.component("private").config["max_size"] == 1048576


# -- durability and failures ---------------------------------------------------------

class _HeldStore:
    """Wraps a map store; set_many is held until the test releases it."""

    def __init__(self, store):
        self.store = store
        self.held = []

    def __getattr__(self, name):
        return getattr(self.store, name)

    def set_many(self, user, items):
        d = defer.Deferred()
        self.held.append((d, user, items))
        return d

    def release(self):
        for d, user, items in self.held:
            self.store.set_many(user, items).chainDeferred(d)
        self.held = []


def test_the_result_is_sent_only_once_the_write_is_durable():
    h = harness()
    alice = h.login("alice@localhost/phone")
    component = h.component("private")
    held = component.store["private"] = _HeldStore(component.store["private"])
    alice.feed(f"<iq type='set' id='d1'><query xmlns='{PRIVATE}'>{BOOKMARKS}</query></iq>")
    assert alice.take() == []
    assert result_of(held.store.items("alice@localhost")) == {}
    held.release()
    reply = only(alice)
    assert (reply["type"], reply["id"]) == ("result", "d1")
    assert list(result_of(held.store.items("alice@localhost"))) == ["{storage:bookmarks}storage"]


def test_a_failed_write_is_an_internal_server_error():
    h = harness()
    alice = h.login("alice@localhost/phone")
    component = h.component("private")

    class Broken:
        def items(self, user):
            return defer.succeed({})

        def set_many(self, user, items):
            return defer.fail(OSError("disk full"))

    component.store["private"] = Broken()
    reply = set_private(alice, BOOKMARKS)
    assert error_condition(reply) == "internal-server-error"


def test_a_damaged_stored_value_is_reported_not_hidden():
    h = harness()
    alice = h.login("alice@localhost/phone")
    store = h.component("private").store["private"]
    result_of(store.set("alice@localhost", "{storage:bookmarks}storage", "<storage"))
    reply = get_private(alice, "<storage xmlns='storage:bookmarks'/>")
    assert error_condition(reply) == "internal-server-error"


def test_a_stored_element_larger_than_the_parsers_default_still_loads():
    h = harness(max_size="0")
    alice = h.login("alice@localhost/phone")
    big = f"<notes xmlns='urn:example:notes'>{'n' * (2 << 20)}</notes>"
    store = h.component("private").store["private"]
    result_of(store.set("alice@localhost", "{urn:example:notes}notes", big))
    (element,) = returned(get_private(alice, "<notes xmlns='urn:example:notes'/>"))
    assert len(str(element)) == 2 << 20


def test_disco_announces_private_storage():
    h = Harness(["disco", "private"])
    alice = h.login("alice@localhost/phone")
    alice.feed("<iq type='get' id='d1' to='localhost'>"
               "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    query = next(only(alice).elements())
    assert PRIVATE in [f["var"] for f in query.elements() if f.name == "feature"]
