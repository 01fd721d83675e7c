"""XEP-0030: identities and features, collected from the enabled components only."""

from xmppd.component import Component, handles
from xmppd.testing import Harness

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
