"""Hosted service domains and user domains in one process: each stanza reaches
only the handlers of the domain it is addressed to; the route table."""

import pytest

from xmppd import ns
from xmppd.component import Component, Service, handles
from xmppd.config import ConfigError
from xmppd.testing import Harness, error_condition, only


class Recorder:
    """What each handler saw: (handler owner, event name, stanza id)."""

    seen: list = []


class RoomsService(Service):
    name = "rooms"
    subdomain = "conference"
    title = "Chat rooms"
    identities = [("conference", "text", "Chat rooms")]
    features = ["http://jabber.org/protocol/muc"]

    @handles("message/bare")
    @handles("message/full")
    @handles("presence/full")
    def stanza(self, event):
        Recorder.seen.append((self.name, event.name, event.stanza.getAttribute("id")))
        return True

    @handles("iq-get/host/urn:example:q:query")
    def query(self, event):
        Recorder.seen.append((self.name, event.name, event.stanza.getAttribute("id")))
        return event.reply()

    @handles("account-deleted")
    def forget(self, user):
        Recorder.seen.append((self.name, "account-deleted", user))


class NodesService(RoomsService):
    name = "nodes"
    subdomain = "pubsub"
    title = ""
    identities = [("pubsub", "service", "")]
    features = ["http://jabber.org/protocol/pubsub"]


class UserFeature(Component):
    name = "userfeature"

    @handles("message/bare")
    @handles("iq-get/host/urn:example:q:query")
    def stanza(self, event):
        Recorder.seen.append((self.name, event.name, event.stanza.getAttribute("id")))
        return event.reply() if event.kind == "iq" else True

    @handles("account-deleted")
    def forget(self, user):
        Recorder.seen.append((self.name, "account-deleted", user))


@pytest.fixture
def h():
    Recorder.seen = []
    harness = Harness(["disco", RoomsService, NodesService, UserFeature],
                      options={"server": {"domains": "a.example b.example"},
                               "component:nodes": {"domain": "nodes.b.example"}})
    yield harness
    harness.stop()


def test_a_service_sees_only_stanzas_to_its_domain(h):
    alice = h.login("alice@a.example/pc")
    alice.feed("<message id='1' to='room@conference.a.example'/>")
    alice.feed("<message id='2' to='room@conference.a.example/nick'/>")
    alice.feed("<message id='3' to='node@nodes.b.example'/>")
    alice.feed("<message id='4' to='bob@b.example'/>")
    alice.feed("<message id='5' to='carol@a.example'/>")
    assert Recorder.seen == [("rooms", "message/bare", "1"), ("rooms", "message/full", "2"),
                             ("nodes", "message/bare", "3"),
                             ("userfeature", "message/bare", "4"),
                             ("userfeature", "message/bare", "5")]


def test_the_same_event_name_reaches_the_handler_of_the_addressed_domain_only(h):
    alice = h.login("alice@b.example/pc")
    for n, to in enumerate(("conference.a.example", "nodes.b.example", "a.example", "b.example")):
        alice.feed(f"<iq type='get' id='q{n}' to='{to}'><query xmlns='urn:example:q'/></iq>")
    assert Recorder.seen == [("rooms", "iq-get/host/urn:example:q:query", "q0"),
                             ("nodes", "iq-get/host/urn:example:q:query", "q1"),
                             ("userfeature", "iq-get/host/urn:example:q:query", "q2"),
                             ("userfeature", "iq-get/host/urn:example:q:query", "q3")]
    assert [r["type"] for r in alice.take()] == ["result"] * 4


def test_the_default_service_domain_is_its_subdomain_of_the_first_user_domain(h):
    assert sorted(h.server.hosted) == ["conference.a.example", "nodes.b.example"]
    assert h.component("rooms").domain == "conference.a.example"


def test_disco_info_of_a_service_is_the_services_not_the_servers(h):
    alice = h.login("alice@a.example/pc")
    alice.feed(f"<iq type='get' id='d' to='conference.a.example'><query xmlns='{ns.DISCO_INFO}'/></iq>")
    query = only(alice).firstChildElement()
    identities = [(i["category"], i["type"]) for i in query.elements(ns.DISCO_INFO, "identity")]
    features = {f["var"] for f in query.elements(ns.DISCO_INFO, "feature")}
    assert identities == [("conference", "text")]
    assert "http://jabber.org/protocol/muc" in features
    assert "http://jabber.org/protocol/pubsub" not in features
    # ... and the server's own disco#info does not claim the services' features
    alice.feed(f"<iq type='get' id='s' to='a.example'><query xmlns='{ns.DISCO_INFO}'/></iq>")
    query = only(alice).firstChildElement()
    identities = [(i["category"], i["type"]) for i in query.elements(ns.DISCO_INFO, "identity")]
    features = {f["var"] for f in query.elements(ns.DISCO_INFO, "feature")}
    assert ("conference", "text") not in identities and ("server", "im") in identities
    assert "http://jabber.org/protocol/muc" not in features


def test_an_unhandled_iq_to_a_service_is_service_unavailable_from_the_service(h):
    alice = h.login("alice@a.example/pc")
    alice.feed("<iq type='get' id='u' to='room@conference.a.example/nick'>"
               "<query xmlns='urn:example:other'/></iq>")
    reply = only(alice)
    assert error_condition(reply) == "service-unavailable"
    assert reply["from"] == "room@conference.a.example/nick"


def test_an_unhandled_message_to_a_service_jid_bounces(h):
    alice = h.login("alice@a.example/pc")
    alice.feed("<message id='m' to='nodes.b.example'><body>hi</body></message>")
    assert error_condition(only(alice)) == "service-unavailable"


def test_account_deletion_reaches_every_component_and_service(h):
    h.add_user("dave@a.example")
    h.server.accounts.delete("dave@a.example")
    assert sorted(Recorder.seen) == [("nodes", "account-deleted", "dave@a.example"),
                                     ("rooms", "account-deleted", "dave@a.example"),
                                     ("userfeature", "account-deleted", "dave@a.example")]


def test_a_service_stopped_serves_its_domain_no_more(h):
    alice = h.login("alice@a.example/pc")
    h.component("rooms").stopService()
    alice.feed("<message id='m' to='room@conference.a.example'><body>x</body></message>")
    assert Recorder.seen == []
    assert error_condition(only(alice)) == "remote-server-not-found"


def test_a_service_on_a_user_domain_is_refused_at_start_up():
    with pytest.raises(ConfigError, match="is a user domain"):
        Harness([RoomsService], options={"component:rooms": {"domain": "localhost"}})


def test_two_services_on_one_domain_are_refused_at_start_up():
    with pytest.raises(ConfigError, match="served already"):
        Harness([RoomsService, NodesService],
                 options={"component:nodes": {"domain": "conference.localhost"}})


# -- the route table ------------------------------------------------------------------


def test_an_exact_route_wins_over_the_default_route():
    h = Harness([])
    alice = h.login("alice@localhost/pc")
    exact, default = [], []
    h.router.routes.default = lambda stanza, to: default.append(stanza["id"]) or True
    remove = h.router.routes.add("component.example", lambda s, to: exact.append(s["id"]) or True)
    alice.feed("<message id='1' to='x@component.example'/>")
    alice.feed("<message id='2' to='x@elsewhere.example'/>")
    remove()
    alice.feed("<message id='3' to='x@component.example'/>")
    assert exact == ["1"] and default == ["2", "3"]


def test_a_domain_without_a_route_is_remote_server_not_found():
    h = Harness([])
    alice = h.login("alice@localhost/pc")
    alice.feed("<message id='1' to='x@nowhere.example'><body>x</body></message>")
    assert error_condition(only(alice)) == "remote-server-not-found"


def test_a_route_that_refuses_the_stanza_is_remote_server_not_found():
    h = Harness([])
    alice = h.login("alice@localhost/pc")
    h.router.routes.add("down.example", lambda stanza, to: False)
    alice.feed("<iq type='get' id='1' to='down.example'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert error_condition(only(alice)) == "remote-server-not-found"


def test_a_stopped_service_is_not_listed_in_the_servers_disco_items(h):
    alice = h.login("alice@a.example/pc")
    h.component("rooms").stopService()
    alice.feed(f"<iq type='get' id='i' to='a.example'><query xmlns='{ns.DISCO_ITEMS}'/></iq>")
    listed = [i["jid"] for i in only(alice).firstChildElement().elements()]
    assert listed == ["nodes.b.example"]


def test_a_service_cannot_hook_events_only_user_domains_have():
    class Confused(RoomsService):
        name = "confused"

        @handles("inbound/bare")
        def never(self, event):
            return True

    with pytest.raises(ValueError, match="event of user domains"):
        Harness([Confused])


def test_is_admin_normalises_what_it_is_given():
    h = Harness([], options={"server": {"admins": "Admin@LocalHost"}})
    assert h.server.is_admin("admin@localhost/phone")
    assert h.server.is_admin("ADMIN@localhost")
    assert not h.server.is_admin("other@localhost") and not h.server.is_admin(None)


def test_disco_of_a_service_domain_nobody_serves_is_remote_server_not_found(h):
    alice = h.login("alice@a.example/pc")
    alice.feed(f"<iq type='get' id='x' to='nothere.a.example'><query xmlns='{ns.DISCO_INFO}'/></iq>")
    reply = only(alice)
    assert error_condition(reply) == "remote-server-not-found"
    assert reply["from"] == "nothere.a.example"
