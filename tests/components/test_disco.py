"""Service discovery: the server's identities and features (XEP-0030), collected
from the enabled components only; its entity capabilities (XEP-0115) and
contact addresses (XEP-0128, XEP-0157); and the disco#info and disco#items of
an account, answered to the user and to contacts allowed to see the user."""

import base64
import hashlib

import pytest

from xmppd import config as configlib
from xmppd.component import Component, Service, handles
from xmppd.components.disco import CAPS_NODE, caps_ver
from xmppd.subscription import State
from xmppd.testing import Harness, error_condition, only, result_of

INFO = "http://jabber.org/protocol/disco#info"
ITEMS = "http://jabber.org/protocol/disco#items"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


class GizmoComponent(Component):
    """A third-party component: only here to contribute a feature and an identity."""

    name = "gizmo"
    features = ["urn:example:gizmo"]
    identities = [("automation", "gizmo", "Gizmo")]

    @handles("iq-get/host/urn:example:gizmo:query")
    def query(self, event):
        return event.reply()


def disco_info(h, to="localhost", node=None):
    alice = h.login("alice@localhost/phone")
    node_attr = f" node='{node}'" if node else ""
    alice.feed(f"<iq type='get' id='d1' to='{to}'><query xmlns='{INFO}'{node_attr}/></iq>")
    (reply,) = alice.take()
    assert reply["id"] == "d1"
    assert reply["to"] == "alice@localhost/phone"
    return reply


def features_and_identities(reply):
    assert reply["type"] == "result", reply.toXml()
    query = next(reply.elements(INFO, "query"))
    features = [f["var"] for f in query.elements(INFO, "feature")]
    identities = [(i["category"], i["type"], i.getAttribute("name"))
                  for i in query.elements(INFO, "identity")]
    return features, identities


def test_disco_info_has_server_im_identity():
    _, identities = features_and_identities(disco_info(Harness(["disco"])))
    assert ("server", "im", "xmppd") in identities


def test_disco_info_lists_disco_features_themselves():
    features, _ = features_and_identities(disco_info(Harness(["disco"])))
    assert INFO in features and ITEMS in features
    assert len(features) == len(set(features))


def test_enabling_ping_adds_ping_feature_and_time_absent_omits_time():
    features, _ = features_and_identities(disco_info(Harness(["disco", "ping"])))
    assert "urn:xmpp:ping" in features
    assert "urn:xmpp:time" not in features
    assert "jabber:iq:version" not in features


def test_disco_features_come_only_from_enabled_components():
    features, _ = features_and_identities(disco_info(Harness(["disco", "time", "version"])))
    assert set(features) == {INFO, ITEMS, "urn:xmpp:time", "jabber:iq:version"}


def test_third_party_component_adds_its_feature_and_identity():
    features, identities = features_and_identities(disco_info(Harness(["disco", GizmoComponent])))
    assert "urn:example:gizmo" in features
    assert ("automation", "gizmo", "Gizmo") in identities
    assert ("server", "im", "xmppd") in identities


def test_disco_info_reply_comes_from_the_server():
    reply = disco_info(Harness(["disco"]))
    assert reply["from"] == "localhost"


def test_disco_info_with_node_gets_item_not_found():
    reply = disco_info(Harness(["disco"]), node="some-node")
    assert reply["type"] == "error"
    error = next(c for c in reply.elements() if c.name == "error")
    assert error["type"] == "cancel"
    assert next(error.elements(STANZAS, "item-not-found"), None) is not None


def test_disco_items_is_an_empty_result():
    h = Harness(["disco"])
    alice = h.login("alice@localhost/phone")
    alice.feed(f"<iq type='get' id='i1' to='localhost'><query xmlns='{ITEMS}'/></iq>")
    (reply,) = alice.take()
    assert (reply["type"], reply["id"], reply["from"]) == ("result", "i1", "localhost")
    query = next(reply.elements(ITEMS, "query"))
    assert list(query.elements()) == []


def test_disco_items_with_node_gets_item_not_found():
    h = Harness(["disco"])
    alice = h.login("alice@localhost/phone")
    alice.feed(f"<iq type='get' id='i2' to='localhost'><query xmlns='{ITEMS}' node='x'/></iq>")
    (reply,) = alice.take()
    assert reply["type"] == "error" and reply["id"] == "i2"
    error = next(c for c in reply.elements() if c.name == "error")
    assert next(error.elements(STANZAS, "item-not-found"), None) is not None


def test_disco_info_on_own_bare_jid_shows_registered_account():
    reply = disco_info(Harness(["disco"]), to="alice@localhost")
    _, identities = features_and_identities(reply)
    assert identities == [("account", "registered", None)]
    assert reply["from"] == "alice@localhost"


def test_disco_not_enabled_gets_service_unavailable():
    reply = disco_info(Harness(["ping"]))
    assert reply["type"] == "error"
    error = next(c for c in reply.elements() if c.name == "error")
    assert next(error.elements(STANZAS, "service-unavailable"), None) is not None


# -- XEP-0115: the server's own entity capabilities -------------------------------------

CAPS = "http://jabber.org/protocol/caps"
DATA = "jabber:x:data"
SERVERINFO = "http://jabber.org/network/serverinfo"


def test_caps_ver_reproduces_the_simple_example_of_xep_0115():
    # XEP-0115 §5.2
    ver = caps_ver([("client", "pc", "", "Exodus 0.9.1")],
                   [CAPS, INFO, ITEMS, "http://jabber.org/protocol/muc"], [])
    assert ver == "QgayPKawpkPSDYmwT/WM94uAlu0="


def test_caps_ver_reproduces_the_complex_example_of_xep_0115_with_a_form():
    # XEP-0115 §5.3: two identities told apart by xml:lang, and a XEP-0128 form.
    ver = caps_ver(
        [("client", "pc", "en", "Psi 0.11"), ("client", "pc", "el", "Ψ 0.11")],
        [CAPS, INFO, ITEMS, "http://jabber.org/protocol/muc"],
        [("urn:xmpp:dataforms:softwareinfo",
          [("os", ["Mac"]), ("ip_version", ["ipv6", "ipv4"]), ("software", ["Psi"]),
           ("os_version", ["10.5.1"]), ("software_version", ["0.11"])])])
    assert ver == "q07IKJEyjvHSyhy//CH0CxmKi8w="


def recompute_ver(query):
    """XEP-0115 §5.1 over a disco#info <query/> as received (written apart from
    the component's own function: the test must not share its mistakes)."""
    parts = sorted("/".join([i["category"], i["type"], i.getAttribute((XML_NS, "lang")) or "",
                             i.getAttribute("name") or ""])
                   for i in query.elements(INFO, "identity"))
    text = "".join(p + "<" for p in parts)
    text += "".join(f + "<" for f in sorted(f["var"] for f in query.elements(INFO, "feature")))
    forms = []
    for x in query.elements(DATA, "x"):
        fields = {f["var"]: sorted(str(v) for v in f.elements(DATA, "value"))
                  for f in x.elements(DATA, "field")}
        form_type = fields.pop("FORM_TYPE")[0]
        forms.append(form_type + "<" + "".join(
            var + "<" + "".join(v + "<" for v in values) for var, values in sorted(fields.items())))
    text += "".join(sorted(forms))
    return base64.b64encode(hashlib.sha1(text.encode()).digest()).decode()


XML_NS = "http://www.w3.org/XML/1998/namespace"


def error_of(reply):
    return next(c for c in reply.elements() if c.name == "error")


def caps_feature(h, authenticated=True):
    session = h.login("alice@localhost/phone") if authenticated else h.connect()
    found = [e for e in h.server.stream_features(session) if (e.uri, e.name) == (CAPS, "c")]
    assert len(found) == 1, [e.toXml() for e in found]
    return found[0]


CONTACTS = {"component:disco": {"abuse_addresses": "mailto:abuse@example.org",
                                "support_addresses": "xmpp:support@localhost "
                                                     "https://example.org/help"}}


@pytest.mark.parametrize("options", [None, CONTACTS], ids=["plain", "with-contact-form"])
def test_stream_features_carry_caps_whose_ver_hashes_the_server_disco_info(options):
    h = Harness(["disco", "ping", "version", GizmoComponent], options=options)
    c = caps_feature(h)
    assert (c["hash"], c["node"]) == ("sha-1", CAPS_NODE)
    query = next(disco_info(h).elements(INFO, "query"))
    assert c["ver"] == recompute_ver(query)


def test_caps_are_offered_before_authentication_too_and_are_the_same():
    h = Harness(["disco", "ping"])
    assert caps_feature(h, authenticated=False)["ver"] == caps_feature(h)["ver"]


def test_caps_ver_changes_with_the_enabled_components():
    without, with_ping = Harness(["disco"]), Harness(["disco", "ping"])
    assert caps_feature(without)["ver"] != caps_feature(with_ping)["ver"]


def test_disco_info_of_the_caps_node_answers_the_same_info_with_the_node():
    h = Harness(["disco", "ping"], options=CONTACTS)
    node = f"{CAPS_NODE}#{caps_feature(h)['ver']}"
    plain = next(disco_info(h).elements(INFO, "query"))
    reply = disco_info(h, node=node)
    assert reply["type"] == "result"
    query = next(reply.elements(INFO, "query"))
    assert query["node"] == node
    assert [c.toXml() for c in query.elements()] == [c.toXml() for c in plain.elements()]
    assert plain.getAttribute("node") is None


def test_disco_info_of_a_stale_caps_node_is_item_not_found_with_prosodys_text():
    h = Harness(["disco"])
    reply = disco_info(h, node=f"{CAPS_NODE}#AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    assert error_condition(reply) == "item-not-found"
    error = error_of(reply)
    assert error["type"] == "cancel"
    assert str(next(error.elements(STANZAS, "text"))) == "Node does not exist"


def test_identities_alike_in_category_and_type_are_listed_once_first_one_winning():
    class Twin(Component):
        name = "twin"
        identities = [("server", "im", "Another name")]

    _, identities = features_and_identities(disco_info(Harness(["disco", Twin])))
    assert identities == [("server", "im", "xmppd")]


# -- XEP-0128 / XEP-0157: contact addresses ------------------------------------------------

def contact_form(reply):
    forms = list(next(reply.elements(INFO, "query")).elements(DATA, "x"))
    if not forms:
        return None
    (form,) = forms
    assert form["type"] == "result"
    fields = {f["var"]: (f.getAttribute("type"), [str(v) for v in f.elements(DATA, "value")])
              for f in form.elements(DATA, "field")}
    assert fields.pop("FORM_TYPE") == ("hidden", [SERVERINFO])
    return fields


def test_no_contact_addresses_and_no_admins_means_no_form():
    assert contact_form(disco_info(Harness(["disco"]))) is None


def test_configured_contact_addresses_are_a_serverinfo_form_of_the_kinds_given():
    h = Harness(["disco"], options=CONTACTS)
    assert contact_form(disco_info(h)) == {
        "abuse-addresses": ("list-multi", ["mailto:abuse@example.org"]),
        "support-addresses": ("list-multi", ["xmpp:support@localhost",
                                             "https://example.org/help"]),
    }


def test_admin_addresses_default_to_the_server_admins_as_xmpp_uris():
    h = Harness(["disco"], options={"server": {"admins": "root@localhost boss@localhost"}})
    assert contact_form(disco_info(h)) == {
        "admin-addresses": ("list-multi", ["xmpp:boss@localhost", "xmpp:root@localhost"])}


def test_configured_admin_addresses_replace_the_server_admins():
    h = Harness(["disco"], options={
        "server": {"admins": "root@localhost"},
        "component:disco": {"admin_addresses": "mailto:ops@example.org"}})
    assert contact_form(disco_info(h)) == {
        "admin-addresses": ("list-multi", ["mailto:ops@example.org"])}


def test_a_contact_address_that_is_not_a_uri_is_refused_at_start_up():
    with pytest.raises(configlib.ConfigError) as raised:
        Harness(["disco"], options={"component:disco": {"abuse_addresses": "abuse@example.org"}})
    assert "[component:disco] abuse_addresses" in str(raised.value)
    assert "not a URI" in str(raised.value)


# -- accounts (XEP-0030 §3.1 on a bare JID) --------------------------------------------------

class Notebook(Component):
    """A third-party component whose feature is the account's, not the server's."""

    name = "notebook"
    account_features = ["urn:example:notebook"]


def ask(session, to=None, ns=INFO, node=None, iq_id="a1"):
    to_attr = f" to='{to}'" if to else ""
    node_attr = f" node='{node}'" if node else ""
    session.take()
    session.feed(f"<iq type='get' id='{iq_id}'{to_attr}><query xmlns='{ns}'{node_attr}/></iq>")
    return only(session)


def allow(h, user, contact, state="from"):
    """``contact`` gets subscription ``state`` in ``user``'s roster."""
    rc = h.component("roster")
    result_of(rc.apply(result_of(rc.load(user)), contact, State(state)))


def test_own_account_without_to_answers_from_the_bare_jid_with_account_features():
    h = Harness(["disco", "ping", Notebook])
    alice = h.login("alice@localhost/phone")
    reply = ask(alice)
    assert (reply["from"], reply["to"], reply["id"]) == (
        "alice@localhost", "alice@localhost/phone", "a1")
    features, identities = features_and_identities(reply)
    assert identities == [("account", "registered", None)]
    assert features == sorted([INFO, ITEMS, "urn:example:notebook"])


def test_account_features_are_not_the_servers_and_server_features_not_the_accounts():
    h = Harness(["disco", "ping", Notebook])
    server_features, _ = features_and_identities(disco_info(h))
    assert "urn:example:notebook" not in server_features
    account, _ = features_and_identities(disco_info(h, to="alice@localhost"))
    assert "urn:xmpp:ping" not in account


def test_an_admin_account_is_account_admin():
    h = Harness(["disco"], options={"server": {"admins": "alice@localhost"}})
    _, identities = features_and_identities(disco_info(h, to="alice@localhost"))
    assert identities == [("account", "admin", None)]


def test_a_contact_with_a_from_subscription_may_discover_the_account():
    h = Harness(["disco", "roster", "presence"])
    h.add_user("bob@localhost")
    allow(h, "bob@localhost", "alice@localhost", "from")
    alice = h.login("alice@localhost/phone")
    reply = ask(alice, "bob@localhost")
    assert (reply["from"], reply["to"]) == ("bob@localhost", "alice@localhost/phone")
    features, identities = features_and_identities(reply)
    assert identities == [("account", "registered", None)] and INFO in features
    items = ask(alice, "bob@localhost", ITEMS)
    assert items["type"] == "result" and list(next(items.elements(ITEMS, "query")).elements()) == []


@pytest.mark.parametrize("state", ["to", "none"])
def test_a_contact_without_a_from_subscription_gets_service_unavailable(state):
    h = Harness(["disco", "roster", "presence"])
    h.add_user("bob@localhost")
    allow(h, "bob@localhost", "alice@localhost", state)
    alice = h.login("alice@localhost/phone")
    for ns in (INFO, ITEMS):
        reply = ask(alice, "bob@localhost", ns)
        assert error_condition(reply) == "service-unavailable"
        assert error_of(reply)["type"] == "cancel"


def test_an_unknown_account_gets_the_same_answer_as_a_stranger():
    h = Harness(["disco", "roster", "presence"])
    allow(h, "ghost@localhost", "alice@localhost", "both")  # a roster left, no account
    alice = h.login("alice@localhost/phone")
    assert error_condition(ask(alice, "ghost@localhost")) == "service-unavailable"
    assert error_condition(ask(alice, "nobody@localhost", ITEMS)) == "service-unavailable"


def test_without_a_roster_component_only_the_user_discovers_the_account():
    h = Harness(["disco"])
    h.add_user("bob@localhost")
    alice = h.login("alice@localhost/phone")
    assert error_condition(ask(alice, "bob@localhost")) == "service-unavailable"
    assert ask(alice, "alice@localhost")["type"] == "result"


def test_an_account_node_is_item_not_found_for_the_allowed_and_hidden_from_others():
    h = Harness(["disco", "roster", "presence"])
    h.add_user("bob@localhost")
    alice = h.login("alice@localhost/phone")
    for ns in (INFO, ITEMS):
        own = ask(alice, None, ns, node="urn:xmpp:microblog:0")
        assert error_condition(own) == "item-not-found"
        assert error_condition(ask(alice, "bob@localhost", ns, node="x")) == "service-unavailable"


def test_own_account_items_are_empty():
    h = Harness(["disco"])
    alice = h.login("alice@localhost/phone")
    reply = ask(alice, "alice@localhost", ITEMS)
    assert (reply["type"], reply["from"]) == ("result", "alice@localhost")
    assert list(next(reply.elements(ITEMS, "query")).elements()) == []


# -- hosted services in the server's disco#items ---------------------------------------------

class Echo(Service):
    """A hosted service with a title: listed with its name."""

    name = "echo"
    title = "Echo service"
    identities = [("component", "generic", "Echo")]
    features = ["urn:example:echo"]


class Untitled(Service):
    """A hosted service without a title: listed without a name."""

    name = "untitled"


def test_server_items_list_hosted_services_by_domain_with_their_title():
    h = Harness(["disco", Untitled, Echo],
                options={"component:echo": {"domain": "echo.example.net"}})
    alice = h.login("alice@localhost/phone")
    reply = ask(alice, "localhost", ITEMS)
    items = [(i["jid"], i.getAttribute("name"))
             for i in next(reply.elements(ITEMS, "query")).elements(ITEMS, "item")]
    assert items == [("echo.example.net", "Echo service"), ("untitled.localhost", None)]


def test_hosted_services_features_and_identities_are_not_the_servers():
    features, identities = features_and_identities(disco_info(Harness(["disco", Echo])))
    assert "urn:example:echo" not in features
    assert ("component", "generic", "Echo") not in identities
