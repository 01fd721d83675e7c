"""XEP-0077: in-band registration, password change and account removal."""

import pytest

from xmppd.testing import Harness
from xmppd.testing import result_of as fired, only
from xmppd.testing import result_of

REGISTER = "jabber:iq:register"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


OPEN = {"component:register": {"allow_registration": "true"}}


def error_condition(stanza):
    assert stanza["type"] == "error", stanza.toXml()
    error = next(c for c in stanza.elements() if c.name == "error")
    conditions = [c.name for c in error.elements() if c.uri == STANZAS and c.name != "text"]
    assert len(conditions) == 1, error.toXml()
    return conditions[0], error.getAttribute("type")


def register_iq(username=None, password=None, iq_id="r1", extra=""):
    fields = ""
    if username is not None:
        fields += f"<username>{username}</username>"
    if password is not None:
        fields += f"<password>{password}</password>"
    return f"<iq type='set' id='{iq_id}'><query xmlns='{REGISTER}'>{fields}{extra}</query></iq>"


def verify(h, user, password):
    return fired(h.server.accounts.verify_password(user, password))


def exists(h, user):
    return fired(h.server.accounts.exists(user))


# -- not logged in ------------------------------------------------------------------

def test_registration_is_disabled_by_default_form_gets_service_unavailable():
    h = Harness(["register"])
    c = h.connect()
    c.feed(f"<iq type='get' id='f1'><query xmlns='{REGISTER}'/></iq>")
    reply = only(c)
    assert reply["id"] == "f1"
    assert error_condition(reply) == ("service-unavailable", "cancel")
    assert c.stream_errors == []


def test_registration_disabled_by_default_set_gets_service_unavailable():
    h = Harness(["register"])
    c = h.connect()
    c.feed(register_iq("newbie", "longenough"))
    reply = only(c)
    assert reply["id"] == "r1"
    assert error_condition(reply)[0] == "service-unavailable"
    assert exists(h, "newbie@localhost") is False


def test_without_register_component_preauth_iq_is_refused():
    h = Harness(["disco"])
    c = h.connect()
    c.feed(f"<iq type='get' id='f1'><query xmlns='{REGISTER}'/></iq>")
    assert c.take() == []
    assert c.stream_errors == ["not-authorized"]


def test_registration_form_lists_username_and_password():
    h = Harness(["register"], options=OPEN)
    c = h.connect()
    c.feed(f"<iq type='get' id='f1'><query xmlns='{REGISTER}'/></iq>")
    reply = only(c)
    assert (reply["type"], reply["id"]) == ("result", "f1")
    query = next(reply.elements(REGISTER, "query"))
    names = [child.name for child in query.elements()]
    assert "username" in names and "password" in names
    assert "registered" not in names
    assert all(child.uri == REGISTER for child in query.elements())
def test_register_creates_the_account():
    h = Harness(["register"], options=OPEN)
    c = h.connect()
    c.feed(register_iq("newbie", "longenough"))
    reply = only(c)
    assert (reply["type"], reply["id"]) == ("result", "r1")
    assert verify(h, "newbie@localhost", "longenough") is True
    assert verify(h, "newbie@localhost", "wrong-password") is False
def test_register_existing_username_gets_conflict():
    h = Harness(["register"], options=OPEN)
    h.add_user("taken@localhost", "original")
    c = h.connect()
    c.feed(register_iq("taken", "longenough"))
    reply = only(c)
    assert reply["id"] == "r1"
    assert error_condition(reply) == ("conflict", "cancel")
    assert verify(h, "taken@localhost", "original") is True
def test_register_username_is_case_folded_before_the_conflict_check():
    h = Harness(["register"], options=OPEN)
    h.add_user("taken@localhost", "original")
    c = h.connect()
    c.feed(register_iq("TAKEN", "longenough"))
    assert error_condition(only(c))[0] == "conflict"


@pytest.mark.parametrize("username, password", [(None, "longenough"), ("newbie", None), (None, None),
                                                ("", "longenough")])
def test_register_with_missing_fields_gets_not_acceptable(username, password):
    h = Harness(["register"], options=OPEN)
    c = h.connect()
    c.feed(register_iq(username, password))
    reply = only(c)
    assert reply["id"] == "r1"
    assert error_condition(reply) == ("not-acceptable", "modify")
    assert fired(h.server.accounts.store.users()) == []
def test_register_with_short_password_gets_not_acceptable():
    h = Harness(["register"], options=OPEN)
    c = h.connect()
    c.feed(register_iq("newbie", "12345"))  # default minimum: 6
    reply = only(c)
    assert error_condition(reply) == ("not-acceptable", "modify")
    assert exists(h, "newbie@localhost") is False
    text = next(c for c in next(e for e in reply.elements() if e.name == "error").elements() if c.name == "text")
    assert "short" in str(text)
def test_min_password_length_is_configurable():
    h = Harness(["register"], options={"component:register": {
        "allow_registration": "true", "min_password_length": "10"}})
    c = h.connect()
    c.feed(register_iq("newbie", "ninechars", iq_id="a"))
    assert error_condition(only(c))[0] == "not-acceptable"
    c.feed(register_iq("newbie", "tenchars!!", iq_id="b"))
    assert only(c)["type"] == "result"
def test_register_with_invalid_username_gets_jid_malformed():
    h = Harness(["register"], options=OPEN)
    c = h.connect()
    c.feed(register_iq("bad@name", "longenough"))
    assert error_condition(only(c))[0] == "jid-malformed"
def test_registration_rate_limit_is_per_address():
    h = Harness(["register"], options=OPEN)  # default: 3 per 600 s
    first = h.connect("192.0.2.1")
    for i in range(3):
        first.feed(register_iq(f"user{i}", "longenough", iq_id=f"ok{i}"))
        assert only(first)["type"] == "result"
    first.feed(register_iq("user3", "longenough", iq_id="over"))
    reply = only(first)
    assert reply["id"] == "over"
    assert error_condition(reply) == ("resource-constraint", "wait")
    assert exists(h, "user3@localhost") is False

    # a fresh connection from the same address is still limited
    again = h.connect("192.0.2.1")
    again.feed(register_iq("user4", "longenough"))
    assert error_condition(only(again))[0] == "resource-constraint"

    other = h.connect("198.51.100.7")
    other.feed(register_iq("user5", "longenough", iq_id="elsewhere"))
    reply = only(other)
    assert (reply["type"], reply["id"]) == ("result", "elsewhere")
    assert verify(h, "user5@localhost", "longenough") is True
def test_rate_limit_is_configurable():
    h = Harness(["register"], options={"component:register": {
        "allow_registration": "true", "rate_limit": "1"}})
    c = h.connect()
    c.feed(register_iq("one", "longenough", iq_id="a"))
    assert only(c)["type"] == "result"
    c.feed(register_iq("two", "longenough", iq_id="b"))
    assert error_condition(only(c))[0] == "resource-constraint"


# -- logged in --------------------------------------------------------------------

@pytest.mark.parametrize("to_attr", ["", " to='localhost'"])
def test_logged_in_get_shows_registered_and_username(to_attr):
    h = Harness(["register"])
    alice = h.login("alice@localhost/phone")
    alice.feed(f"<iq type='get' id='g1'{to_attr}><query xmlns='{REGISTER}'/></iq>")
    reply = only(alice)
    assert (reply["type"], reply["id"], reply["to"]) == ("result", "g1", "alice@localhost/phone")
    query = next(reply.elements(REGISTER, "query"))
    assert next(query.elements(REGISTER, "registered"), None) is not None
    assert str(next(query.elements(REGISTER, "username"))) == "alice"
def test_logged_in_password_change_works_and_old_password_stops_verifying():
    h = Harness(["register"])
    alice = h.login("alice@localhost/phone")  # password "secret"
    assert verify(h, "alice@localhost", "secret") is True
    alice.feed(f"<iq type='set' id='c1'><query xmlns='{REGISTER}'>"
               "<username>alice</username><password>brand-new-pw</password></query></iq>")
    reply = only(alice)
    assert (reply["type"], reply["id"], reply["to"]) == ("result", "c1", "alice@localhost/phone")
    assert verify(h, "alice@localhost", "brand-new-pw") is True
    assert verify(h, "alice@localhost", "secret") is False
    assert alice.stream_errors == []
def test_logged_in_password_change_without_username_works():
    h = Harness(["register"])
    alice = h.login("alice@localhost/phone")
    alice.feed(f"<iq type='set' id='c2'><query xmlns='{REGISTER}'>"
               "<password>brand-new-pw</password></query></iq>")
    assert only(alice)["type"] == "result"
    assert verify(h, "alice@localhost", "brand-new-pw") is True
def test_changing_someone_elses_password_gets_not_allowed():
    h = Harness(["register"])
    alice = h.login("alice@localhost/phone")
    h.add_user("bob@localhost", "bobs-password")
    alice.feed(f"<iq type='set' id='c3'><query xmlns='{REGISTER}'>"
               "<username>bob</username><password>hijacked!!</password></query></iq>")
    reply = only(alice)
    assert reply["id"] == "c3"
    assert error_condition(reply) == ("not-allowed", "cancel")
    assert verify(h, "bob@localhost", "bobs-password") is True
    assert verify(h, "alice@localhost", "secret") is True


def test_password_change_to_a_short_password_gets_not_acceptable():
    h = Harness(["register"])
    alice = h.login("alice@localhost/phone")
    alice.feed(f"<iq type='set' id='c4'><query xmlns='{REGISTER}'>"
               "<username>alice</username><password>abc</password></query></iq>")
    assert error_condition(only(alice)) == ("not-acceptable", "modify")
    assert verify(h, "alice@localhost", "secret") is True
def test_remove_deletes_account_replies_result_and_kicks_all_sessions():
    h = Harness(["register"])
    phone = h.login("alice@localhost/phone")
    laptop = h.login("alice@localhost/laptop")
    bob = h.login("bob@localhost/pc")
    phone.feed(f"<iq type='set' id='rm'><query xmlns='{REGISTER}'><remove/></query></iq>")
    reply = only(phone)
    assert (reply["type"], reply["id"], reply["to"]) == ("result", "rm", "alice@localhost/phone")
    assert exists(h, "alice@localhost") is False
    assert verify(h, "alice@localhost", "secret") is False
    assert phone.stream_errors == ["not-authorized"]
    assert laptop.stream_errors == ["not-authorized"]
    assert h.router.resources("alice@localhost") == {}
    assert bob.stream_errors == [] and "bob@localhost" in h.router.sessions
    assert exists(h, "bob@localhost") is True


def test_removal_waits_for_earlier_work_only_not_for_itself():
    """The removal lets work pending when it began finish before purging
    (it may be a write of the account's), but not work that started after —
    its own handler's included, or it would wait for itself until the
    drain time-out."""
    from twisted.internet import defer, task

    from xmppd.component import Component, handles

    class Slow(Component):
        name = "slow"

        @handles("iq-set/host/urn:example:slow:q")
        def slow(self, event):
            d = defer.Deferred()
            self.clock.callLater(3, d.callback, event.reply())
            return d

    clock = task.Clock()
    h = Harness(["register", Slow], clock=clock)
    purged = []
    h.router.hook("account-deleted", lambda user: purged.append((user, clock.seconds())))
    bob, alice = h.login("bob@localhost/pc"), h.login("alice@localhost/phone")
    alice.feed(f"<iq type='set' id='rm'><query xmlns='{REGISTER}'><remove/></query></iq>")
    assert purged == [("alice@localhost", 0)]
    bob.feed("<iq type='set' id='s' to='localhost'><q xmlns='urn:example:slow'/></iq>")
    carol = h.login("carol@localhost/pc")
    carol.feed(f"<iq type='set' id='rm2'><query xmlns='{REGISTER}'><remove/></query></iq>")
    # no login as carol from now on, though her rows wait for bob's work
    assert not result_of(h.server.accounts.verify_password("carol@localhost", "secret"))
    clock.advance(2.9)
    assert len(purged) == 1
    clock.advance(0.1)
    assert purged[1] == ("carol@localhost", 3)
