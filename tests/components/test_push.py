"""XEP-0357 push notifications (the push component) on the in-memory harness:
registration as mod_cloud_notify answers it, the notification it sends, when
it sends one (offline storage, a hibernating XEP-0198 session, a message the
archive kept for a device that is gone) and when not (a connected client),
and what an app server's errors do."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.words.xish import domish

from xmppd import ns
from xmppd.components.push import BATCH_DELAY
from xmppd.testing import Harness, error_condition, only, result_of
from tests.streams.test_sm import SM, LosableFraming, enabled, login

APP = "push@localhost/app"
COMPONENTS = ["disco", "ping", "roster", "presence", "messaging", "offline", "carbons", "push"]
PUBLISH_OPTIONS = (f"<x xmlns='{ns.DATA_FORMS}' type='submit'>"
                   f"<field var='FORM_TYPE'><value>{ns.PUBSUB_PUBLISH_OPTIONS}</value></field>"
                   "<field var='secret'><value>s3cr3t</value></field></x>")


def harness(components=COMPONENTS, **push) -> tuple[Harness, Clock]:
    clock = Clock()
    options = {"c2s": {"resume_timeout": "300"}}
    if push:
        options["component:push"] = {k: str(v) for k, v in push.items()}
    h = Harness(components, clock=clock, options=options)
    for user in ("alice", "bob", "push"):
        h.add_user(f"{user}@localhost", "secret")
    return h, clock


def enable_xml(jid: str | None = APP, node: str | None = "n1", form: str = PUBLISH_OPTIONS,
               iq_id: str = "e1", to: str = "") -> str:
    attrs = (f" jid='{jid}'" if jid is not None else "") + \
        (f" node='{node}'" if node is not None else "")
    to_attr = f" to='{to}'" if to else ""
    return (f"<iq type='set' id='{iq_id}'{to_attr}>"
            f"<enable xmlns='{ns.PUSH}'{attrs}>{form}</enable></iq>")


def enable(session, **kwargs) -> domish.Element:
    session.feed(enable_xml(**kwargs))
    return only(session)


def stored(h: Harness, user: str = "alice@localhost") -> dict:
    return result_of(h.component("push").store["push"].items(user))


def pushes(app) -> list[domish.Element]:
    return [e for e in app.take() if e.name == "iq" and e.getAttribute("type") == "set"]


def fields(push: domish.Element) -> dict[str, tuple[str, str | None]]:
    [form] = [x for x in push.pubsub.publish.item.notification.elements()
              if x.uri == ns.DATA_FORMS and x.name == "x"]
    assert form.getAttribute("type") == "form"
    out = {}
    for field in form.elements():
        values = [str(v) for v in field.elements() if v.name == "value"]
        out[field["var"]] = (field["type"], values[0] if values else None)
    return out


def answer(app, push: domish.Element, error: str | None = None, etype: str = "cancel") -> None:
    if error is None:
        app.feed(f"<iq type='result' id='{push['id']}' to='{push['from']}'/>")
    else:
        app.feed(f"<iq type='error' id='{push['id']}' to='{push['from']}'>"
                 f"<error type='{etype}'><{error} xmlns='{ns.STANZA_ERRORS}'/></error></iq>")


# -- registering ---------------------------------------------------------------------


def test_enable_answers_result_and_stores_the_registration_with_its_options():
    h, _ = harness()
    alice = h.login("alice@localhost/phone")
    reply = enable(alice)
    assert reply["type"] == "result" and reply["id"] == "e1"
    [(key, value)] = stored(h).items()
    assert key == f"{APP}<n1"
    assert value["jid"] == APP and value["node"] == "n1" and value["resource"] == "phone"
    assert "s3cr3t" in value["options"]


def test_enable_without_jid_is_bad_request_and_stores_nothing():
    h, _ = harness()
    alice = h.login("alice@localhost/phone")
    reply = enable(alice, jid=None)
    assert error_condition(reply) == "bad-request"
    assert reply.error["type"] == "modify" and str(reply.error.text) == "Missing jid"
    assert stored(h) == {}


def test_enable_with_the_senders_own_jid_is_bad_request():
    h, _ = harness()
    alice = h.login("alice@localhost/phone")
    reply = enable(alice, jid="alice@localhost/phone")
    assert error_condition(reply) == "bad-request"
    assert str(reply.error.text) == "JID must be different from ours"
    assert stored(h) == {}


def test_enable_with_a_malformed_jid_is_jid_malformed():
    h, _ = harness()
    alice = h.login("alice@localhost/phone")
    assert error_condition(enable(alice, jid="@@bad@@")) == "jid-malformed"
    assert stored(h) == {}


def test_enable_at_another_accounts_jid_is_service_unavailable():
    h, _ = harness()
    alice = h.login("alice@localhost/phone")
    assert error_condition(enable(alice, to="bob@localhost")) == "service-unavailable"
    assert stored(h, "bob@localhost") == {} and stored(h) == {}


def test_the_account_offers_push_in_disco_info_of_its_bare_jid():
    h, _ = harness()
    alice = h.login("alice@localhost/phone")
    alice.feed(f"<iq type='get' id='d' to='alice@localhost'><query xmlns='{ns.DISCO_INFO}'/></iq>")
    features = {f["var"] for f in only(alice).query.elements() if f.name == "feature"}
    assert ns.PUSH in features


def test_disable_with_a_node_removes_that_registration_only():
    h, _ = harness()
    alice = h.login("alice@localhost/phone")
    enable(alice, node="n1")
    enable(alice, node="n2")
    alice.feed(f"<iq type='set' id='d1'><disable xmlns='{ns.PUSH}' jid='{APP}' node='n1'/></iq>")
    assert only(alice)["type"] == "result"
    assert set(stored(h)) == {f"{APP}<n2"}


def test_disable_without_a_node_removes_every_registration_of_the_jid():
    h, _ = harness()
    alice = h.login("alice@localhost/phone")
    enable(alice, node="n1")
    enable(alice, node="n2")
    enable(alice, jid="other.example", node="n3")
    alice.feed(f"<iq type='set' id='d1'><disable xmlns='{ns.PUSH}' jid='{APP}'/></iq>")
    assert only(alice)["type"] == "result"
    assert set(stored(h)) == {"other.example<n3"}


def test_disable_without_jid_is_bad_request():
    h, _ = harness()
    alice = h.login("alice@localhost/phone")
    enable(alice)
    alice.feed(f"<iq type='set' id='d1'><disable xmlns='{ns.PUSH}' node='n1'/></iq>")
    reply = only(alice)
    assert error_condition(reply) == "bad-request" and str(reply.error.text) == "Missing jid"
    assert set(stored(h)) == {f"{APP}<n1"}


def test_a_registration_beyond_max_devices_replaces_the_oldest():
    h, clock = harness(max_devices=2)
    alice = h.login("alice@localhost/phone")
    for node in ("n1", "n2", "n3"):
        enable(alice, node=node)
        clock.advance(1)
    assert set(stored(h)) == {f"{APP}<n2", f"{APP}<n3"}
    enable(alice, node="n2")  # enabled again: the newest now
    clock.advance(1)
    enable(alice, node="n4")
    assert set(stored(h)) == {f"{APP}<n2", f"{APP}<n4"}


# -- pushing for offline messages ------------------------------------------------------


def test_a_message_to_an_offline_account_is_pushed_as_mod_cloud_notify_and_still_stored():
    h, _ = harness()
    app = h.login(APP)
    alice = h.login("alice@localhost/phone")
    enable(alice)
    alice.logout()
    bob = h.login("bob@localhost/pc")
    bob.feed("<message to='alice@localhost' type='chat' id='m1'>"
             "<body>secret words</body></message>")
    [push] = pushes(app)
    assert push["from"] == "localhost" and push["to"] == APP and push.getAttribute("id")
    assert push.pubsub.uri == ns.PUBSUB
    assert push.pubsub.publish["node"] == "n1"
    assert push.pubsub.publish.item.notification.uri == ns.PUSH
    assert fields(push) == {
        "FORM_TYPE": ("hidden", ns.PUSH_SUMMARY),
        "message-count": ("text-single", "1"),
        "pending-subscription-count": ("text-single", None),
        "last-message-sender": ("jid-single", None),
        "last-message-body": ("text-single", "New Message!"),
    }
    [options] = [c for c in push.pubsub.elements() if c.name == "publish-options"]
    assert options.uri == ns.PUBSUB and "s3cr3t" in options.toXml()
    assert "secret words" not in push.toXml()
    assert bob.take() == []  # stored: no error for the sender
    [item] = result_of(h.component("offline").store["offline"].query("alice@localhost"))
    assert "secret words" in item.value


def test_with_body_and_with_sender_the_push_carries_them():
    h, _ = harness(with_body="true", with_sender="true")
    app = h.login(APP)
    alice = h.login("alice@localhost/phone")
    enable(alice)
    alice.logout()
    bob = h.login("bob@localhost/pc")
    bob.feed("<message to='alice@localhost' type='chat'><body>hello</body></message>")
    [push] = pushes(app)
    assert fields(push)["last-message-body"] == ("text-single", "hello")
    assert fields(push)["last-message-sender"] == ("jid-single", "bob@localhost/pc")


def test_an_unimportant_message_is_pushed_without_a_body():
    h, _ = harness()
    app = h.login(APP)
    alice = h.login("alice@localhost/phone")
    enable(alice)
    alice.logout()
    bob = h.login("bob@localhost/pc")
    bob.feed(f"<message to='alice@localhost' type='chat'><composing xmlns='{ns.CHATSTATES}'/>"
             "</message>")
    [push] = pushes(app)
    assert fields(push)["last-message-body"] == ("text-single", None)


def test_an_encrypted_message_without_a_body_is_important():
    h, _ = harness()
    app = h.login(APP)
    alice = h.login("alice@localhost/phone")
    enable(alice)
    alice.logout()
    bob = h.login("bob@localhost/pc")
    bob.feed(f"<message to='alice@localhost' type='chat'><encrypted xmlns='{ns.OMEMO_LEGACY}'>"
             "<payload>x</payload></encrypted></message>")
    [push] = pushes(app)
    assert fields(push)["last-message-body"] == ("text-single", "New Message!")


def test_every_registration_of_an_offline_account_is_pushed_once():
    h, _ = harness()
    app = h.login(APP)
    alice = h.login("alice@localhost/phone")
    enable(alice, node="phone")
    tablet = h.login("alice@localhost/tablet")
    enable(tablet, node="tablet")
    alice.logout()
    tablet.logout()
    bob = h.login("bob@localhost/pc")
    bob.feed("<message to='alice@localhost' type='chat'><body>hi</body></message>")
    assert sorted(p.pubsub.publish["node"] for p in pushes(app)) == ["phone", "tablet"]


def test_no_push_for_a_connected_available_client():
    h, _ = harness()
    app = h.login(APP)
    alice = h.login("alice@localhost/phone")
    enable(alice)
    bob = h.login("bob@localhost/pc")
    bob.feed("<message to='alice@localhost' type='chat'><body>hi</body></message>")
    bob.feed("<message to='alice@localhost/phone' type='chat'><body>hi again</body></message>")
    assert [str(m.body) for m in alice.take()] == ["hi", "hi again"]
    assert pushes(app) == []


def test_registrations_are_read_from_storage_when_not_in_memory():
    # (as after a restart: the memory cache is empty, the store is not)
    h, _ = harness()
    app = h.login(APP)
    alice = h.login("alice@localhost/phone")
    enable(alice)
    alice.logout()
    h.component("push")._cache.clear()
    bob = h.login("bob@localhost/pc")
    bob.feed("<message to='alice@localhost' type='chat'><body>hi</body></message>")
    assert len(pushes(app)) == 1


# -- the app server's answers ----------------------------------------------------------


def _offline_alice_with_push(h: Harness):
    app = h.login(APP)
    alice = h.login("alice@localhost/phone")
    enable(alice)
    alice.logout()
    return app, h.login("bob@localhost/pc")


def test_max_errors_in_a_row_from_the_app_server_disable_the_registration():
    h, _ = harness(max_errors=3)
    app, bob = _offline_alice_with_push(h)
    for i in range(3):
        assert stored(h), f"disabled after {i} errors"
        bob.feed(f"<message to='alice@localhost' type='chat'><body>m{i}</body></message>")
        [push] = pushes(app)
        answer(app, push, "item-not-found")
    assert stored(h) == {}
    bob.feed("<message to='alice@localhost' type='chat'><body>more</body></message>")
    assert pushes(app) == []


def test_wait_errors_do_not_count_and_a_result_resets_the_count():
    h, _ = harness(max_errors=2)
    app, bob = _offline_alice_with_push(h)
    for error, etype in (("item-not-found", "cancel"), ("resource-constraint", "wait"),
                         ("resource-constraint", "wait"), (None, ""),
                         ("item-not-found", "cancel")):
        bob.feed("<message to='alice@localhost' type='chat'><body>m</body></message>")
        [push] = pushes(app)
        answer(app, push, error, etype)
    assert set(stored(h)) == {f"{APP}<n1"}  # one error since the result
    bob.feed("<message to='alice@localhost' type='chat'><body>m</body></message>")
    answer(app, only(app), "item-not-found")
    assert stored(h) == {}


def test_an_app_server_that_is_not_there_counts_as_an_error():
    h, _ = harness(max_errors=1)
    app, bob = _offline_alice_with_push(h)
    app.logout()  # its full JID now bounces the push
    bob.feed("<message to='alice@localhost' type='chat'><body>m</body></message>")
    assert stored(h) == {}


def test_an_unanswered_push_counts_as_an_error():
    # (mod_cloud_notify waits for ever; here a registration that never
    # answers must not keep a slot of the router's iq table for good)
    h, clock = harness(max_errors=2, timeout=5)
    app, bob = _offline_alice_with_push(h)
    bob.feed("<message to='alice@localhost' type='chat'><body>m</body></message>")
    assert len(pushes(app)) == 1
    clock.advance(6)
    assert set(stored(h)) == {f"{APP}<n1"} and len(h.router.iq) == 0
    bob.feed("<message to='alice@localhost' type='chat'><body>m2</body></message>")
    assert len(pushes(app)) == 1
    clock.advance(6)
    assert stored(h) == {}  # two timeouts in a row: disabled
    bob.feed("<message to='alice@localhost' type='chat'><body>m3</body></message>")
    assert pushes(app) == [] and len(h.router.iq) == 0


def test_a_result_after_a_timeout_resets_the_count():
    h, clock = harness(max_errors=2, timeout=5)
    app, bob = _offline_alice_with_push(h)
    bob.feed("<message to='alice@localhost' type='chat'><body>m</body></message>")
    pushes(app)
    clock.advance(6)
    bob.feed("<message to='alice@localhost' type='chat'><body>m2</body></message>")
    answer(app, only(app))
    bob.feed("<message to='alice@localhost' type='chat'><body>m3</body></message>")
    pushes(app)
    clock.advance(6)
    assert set(stored(h)) == {f"{APP}<n1"}  # one timeout since the result


# -- bounds: what one account can make the server send ---------------------------------


def test_a_registration_has_one_push_waiting_for_its_answer_the_rest_is_one_more_after():
    # The reviewer's attack: an app server that never answers (the user's own
    # resource) and messages sent as fast as possible.
    h, clock = harness(with_body="true", timeout=30)
    app, bob = _offline_alice_with_push(h)
    for i in range(50):
        bob.feed(f"<message to='alice@localhost' type='chat'><body>m{i}</body></message>")
    [first] = pushes(app)
    assert fields(first)["last-message-body"] == ("text-single", "m0")
    assert len(h.router.iq) == 1
    answer(app, first)
    [second] = pushes(app)  # for everything that came meanwhile: the latest
    assert fields(second)["last-message-body"] == ("text-single", "m49")
    answer(app, second)
    assert pushes(app) == [] and len(h.router.iq) == 0
    assert not h.component("push")._slots


def test_registrations_at_ones_own_silent_resource_cannot_fill_the_servers_iq_table():
    # Mallory's attack: five registrations at a resource of his own that
    # never answers, and messages to himself as fast as he can (the archive
    # pushes to the registrations his connected session does not hold).
    h, clock = harness(COMPONENTS + ["mam"], timeout=5, max_errors=4)
    h.add_user("mallory@localhost", "secret")
    sink = h.login("mallory@localhost/sink")
    mallory = h.login("mallory@localhost/pc")
    for node in ("n1", "n2", "n3", "n4", "n5"):
        enable(mallory, jid="mallory@localhost/sink", node=node)
    for second in range(10):
        for i in range(70):
            mallory.feed(f"<message to='mallory@localhost' type='chat'><body>{i}</body></message>")
        clock.advance(1)
        assert len(h.router.iq) <= 4, second
    sink.take()
    mallory.take()
    for _ in range(2 * 5 + 1):  # every timeout counts: the registrations go
        mallory.feed("<message to='mallory@localhost' type='chat'><body>more</body></message>")
        clock.advance(1)
    assert set(stored(h, "mallory@localhost")) == {"mallory@localhost/sink<n5"}  # held
    assert len(h.router.iq) == 0


def test_the_push_gathered_while_one_waits_keeps_an_important_stanza():
    h, _ = harness()
    app, bob = _offline_alice_with_push(h)
    bob.feed("<message to='alice@localhost' type='chat'><body>first</body></message>")
    [first] = pushes(app)
    bob.feed("<message to='alice@localhost' type='chat'><body>important</body></message>")
    bob.feed(f"<message to='alice@localhost' type='chat'><paused xmlns='{ns.CHATSTATES}'/>"
             "</message>")
    answer(app, first)
    [second] = pushes(app)
    assert fields(second)["last-message-body"] == ("text-single", "New Message!")


def test_the_push_due_after_a_timeout_goes_out_then():
    h, clock = harness(timeout=5, max_errors=16)
    app, bob = _offline_alice_with_push(h)
    for i in range(3):
        bob.feed(f"<message to='alice@localhost' type='chat'><body>m{i}</body></message>")
    assert len(pushes(app)) == 1
    clock.advance(6)
    assert len(pushes(app)) == 1 and len(h.router.iq) == 1


def test_an_account_is_pushed_for_at_most_max_rate_times_a_minute_then_once_more():
    h, clock = harness(max_rate=3, with_body="true")
    app, bob = _offline_alice_with_push(h)
    for i in range(3):
        bob.feed(f"<message to='alice@localhost' type='chat'><body>m{i}</body></message>")
        answer(app, only(app))
        clock.advance(1)
    for i in range(3, 6):
        bob.feed(f"<message to='alice@localhost' type='chat'><body>m{i}</body></message>")
    assert pushes(app) == []  # three this minute already: they wait
    clock.advance(56)  # 60 s after the first
    assert pushes(app) == []
    clock.advance(1)
    [late] = pushes(app)
    assert fields(late)["last-message-body"] == ("text-single", "m5")
    answer(app, late)
    clock.advance(120)
    assert pushes(app) == []


def test_the_rate_counts_every_registration_of_the_account():
    h, clock = harness(max_rate=2)
    app = h.login(APP)
    alice = h.login("alice@localhost/phone")
    for node in ("n1", "n2", "n3"):
        enable(alice, node=node)
    alice.logout()
    bob = h.login("bob@localhost/pc")
    bob.feed("<message to='alice@localhost' type='chat'><body>hi</body></message>")
    sent = pushes(app)
    assert len(sent) == 2
    clock.advance(60)
    [third] = pushes(app)
    assert {p.pubsub.publish["node"] for p in sent + [third]} == {"n1", "n2", "n3"}


def test_pushes_beyond_max_pending_are_not_sent_and_not_counted():
    h, clock = harness(max_pending=1, max_errors=1)
    app = h.login(APP)
    for user in ("alice", "bob"):
        session = h.login(f"{user}@localhost/phone")
        enable(session)
        session.logout()
    sender = h.login("push@localhost/pc")
    sender.feed("<message to='alice@localhost' type='chat'><body>1</body></message>")
    sender.feed("<message to='bob@localhost' type='chat'><body>2</body></message>")
    [push] = pushes(app)
    assert push.pubsub.publish.item.notification is not None
    assert len(h.router.iq) == 1
    assert h.server.counters["push not sent (too many waiting for answers)"] == 1
    assert set(stored(h, "bob@localhost")) == {f"{APP}<n1"}  # not its fault


def test_a_deleted_account_forgets_its_registrations():
    h, _ = harness()
    alice = h.login("alice@localhost/phone")
    enable(alice)
    push = h.component("push")
    assert "alice@localhost" in push._cache
    result_of(h.router.notify("account-deleted", "alice@localhost"))
    assert "alice@localhost" not in push._cache and not push._clients


# -- hibernating sessions (XEP-0198) ---------------------------------------------------


def sm_client(h: Harness, clock: Clock, **enable_kwargs) -> LosableFraming:
    """alice/r over a fake framing, stream management on, push enabled."""
    framing, _ = enabled(h, clock)
    framing.say("<presence/>")
    clock.advance(0)
    framing.say(enable_xml(**enable_kwargs))
    clock.advance(0)
    replies = [e for e in framing.take() if e.name == "iq"]
    assert replies and replies[-1]["type"] == "result", [r.toXml() for r in replies]
    framing.say(f"<a xmlns='{SM}' h='{framing.session.sm.sent}'/>")  # all acknowledged
    return framing


def test_a_hibernating_session_is_pushed_for_what_it_had_not_acknowledged():
    h, clock = harness()
    app = h.login(APP)
    alice = sm_client(h, clock)
    bob = h.login("bob@localhost/pc")
    bob.feed("<message to='alice@localhost/r' type='chat'><body>one</body></message>")
    bob.feed("<message to='alice@localhost/r' type='chat'><body>two</body></message>")
    assert pushes(app) == []  # connected: no push
    alice.lose()
    clock.advance(0)
    [push] = pushes(app)  # one for both important stanzas
    assert push.pubsub.publish["node"] == "n1"
    assert fields(push)["last-message-body"] == ("text-single", "New Message!")


def test_hibernation_pushes_once_per_kind_of_stanza_waiting():
    h, clock = harness()
    app = h.login(APP)
    alice = sm_client(h, clock)
    bob = h.login("bob@localhost/pc")
    bob.feed(f"<message to='alice@localhost/r' type='chat'><active xmlns='{ns.CHATSTATES}'/>"
             "</message>")
    bob.feed("<message to='alice@localhost/r' type='chat'><body>one</body></message>")
    bob.feed("<message to='alice@localhost/r' type='chat'><body>two</body></message>")
    alice.lose()
    clock.advance(0)
    [first] = pushes(app)
    assert fields(first)["last-message-body"] == ("text-single", None)
    answer(app, first)  # one push waits for its answer at a time
    [second] = pushes(app)
    assert fields(second)["last-message-body"] == ("text-single", "New Message!")


def test_a_hibernating_session_with_nothing_waiting_is_not_pushed():
    h, clock = harness()
    app = h.login(APP)
    alice = sm_client(h, clock)
    alice.lose()
    clock.advance(BATCH_DELAY * 2)
    assert pushes(app) == []


def test_stanzas_sent_while_hibernating_are_pushed_once_per_batch():
    h, clock = harness()
    app = h.login(APP)
    alice = sm_client(h, clock)
    session = alice.session
    alice.lose()
    bob = h.login("bob@localhost/pc")
    for i in range(3):
        bob.feed(f"<message to='alice@localhost' type='chat'><body>m{i}</body></message>")
    assert pushes(app) == []  # gathered first
    clock.advance(BATCH_DELAY)
    [push] = pushes(app)
    assert fields(push)["last-message-body"] == ("text-single", "New Message!")
    answer(app, push)
    bob.feed("<message to='alice@localhost' type='chat'><body>later</body></message>")
    clock.advance(BATCH_DELAY)
    assert len(pushes(app)) == 1  # a new batch, a new push
    assert [k for _, k, _ in session.sm.queue] == ["message"] * 4  # all kept


def test_a_resumed_session_is_not_pushed_for_any_more():
    h, clock = harness()
    app = h.login(APP)
    alice = sm_client(h, clock)
    session = alice.session
    sm_id = session.sm.id
    alice.lose()
    bob = h.login("bob@localhost/pc")
    bob.feed("<message to='alice@localhost' type='chat'><body>away</body></message>")
    again = login(h)
    again.say(f"<resume xmlns='{SM}' previd='{sm_id}' h='{session.sm.acked}'/>")
    clock.advance(BATCH_DELAY)
    assert pushes(app) == []  # the batch went with the hibernation
    bob.feed("<message to='alice@localhost' type='chat'><body>back</body></message>")
    clock.advance(BATCH_DELAY)
    assert pushes(app) == []
    assert "back" in [str(m.body) for m in again.take() if m.name == "message"]


def test_a_stanza_pushed_at_one_hibernation_is_not_pushed_again_at_the_next():
    h, clock = harness()
    app = h.login(APP)
    alice = sm_client(h, clock)
    session = alice.session
    bob = h.login("bob@localhost/pc")
    bob.feed("<message to='alice@localhost/r' type='chat'><body>one</body></message>")
    alice.lose()
    clock.advance(0)
    assert len(pushes(app)) == 1
    again = login(h)
    again.say(f"<resume xmlns='{SM}' previd='{session.sm.id}' h='{session.sm.acked}'/>")
    assert again.session is session and session.framing is again
    again.take()
    again.lose()  # the client dies again before acknowledging "one"
    clock.advance(0)
    assert [k for _, k, _ in session.sm.queue] == ["message"]
    assert pushes(app) == []


def test_push_keeps_a_hibernating_session_until_its_first_important_push():
    h, clock = harness(max_hibernation=3600)
    app = h.login(APP)
    alice = sm_client(h, clock)
    session = alice.session
    alice.lose()
    timer = session.sm.hibernation
    assert timer.getTime() - clock.seconds() == 3600
    bob = h.login("bob@localhost/pc")
    bob.feed(f"<message to='alice@localhost' type='chat'><gone xmlns='{ns.CHATSTATES}'/>"
             "</message>")
    clock.advance(BATCH_DELAY)
    [push] = pushes(app)
    answer(app, push)
    assert timer.getTime() - clock.seconds() == 3600 - BATCH_DELAY  # not important
    bob.feed("<message to='alice@localhost' type='chat'><body>wake up</body></message>")
    clock.advance(BATCH_DELAY)
    assert len(pushes(app)) == 1
    assert timer.getTime() - clock.seconds() == 300  # [c2s] resume_timeout from now
    clock.advance(301)
    assert h.router.resources("alice@localhost").get("r") is None


def test_max_hibernation_zero_leaves_the_hibernation_as_it_is():
    h, clock = harness(max_hibernation=0)
    h.login(APP)
    alice = sm_client(h, clock)
    session = alice.session
    alice.lose()
    assert session.sm.hibernation.getTime() - clock.seconds() == 300


def test_a_session_without_push_hibernates_unpushed():
    h, clock = harness()
    app = h.login(APP)
    framing, _ = enabled(h, clock)
    session = framing.session
    bob = h.login("bob@localhost/pc")
    bob.feed("<message to='alice@localhost/r' type='chat'><body>one</body></message>")
    framing.lose()
    bob.feed("<message to='alice@localhost/r' type='chat'><body>two</body></message>")
    clock.advance(BATCH_DELAY)
    assert pushes(app) == []
    assert session.sm.hibernation.getTime() - clock.seconds() == 300 - BATCH_DELAY


def test_disabling_push_restores_the_usual_hibernation():
    h, clock = harness()
    h.login(APP)
    alice = sm_client(h, clock)
    session = alice.session
    phone = h.login("alice@localhost/other", available=False)
    alice.lose()
    assert session.sm.hibernation.getTime() - clock.seconds() == 259200
    phone.feed(f"<iq type='set' id='d'><disable xmlns='{ns.PUSH}' jid='{APP}'/></iq>")
    assert only(phone)["type"] == "result"
    assert session.sm.hibernation.getTime() - clock.seconds() == 300


def test_a_filter_that_holds_stanzas_does_not_hide_them_from_push():
    # (client state indication holds stanzas of an inactive client)
    h, clock = harness()
    app = h.login(APP)
    alice = sm_client(h, clock)
    held = []
    alice.session.add_send_filter(lambda stanza: held.append(stanza) or True)
    alice.lose()
    bob = h.login("bob@localhost/pc")
    bob.feed("<message to='alice@localhost' type='chat'><body>hi</body></message>")
    clock.advance(BATCH_DELAY)
    assert len(held) == 1 and len(pushes(app)) == 1


# -- messages the archive kept, for a device that is gone ----------------------------


def test_an_archived_message_is_pushed_to_registrations_no_session_holds():
    h, clock = harness(COMPONENTS + ["mam"])
    app = h.login(APP)
    phone = h.login("alice@localhost/phone")
    enable(phone, node="phone")
    laptop = h.login("alice@localhost/laptop")
    enable(laptop, node="laptop")
    phone.logout()
    bob = h.login("bob@localhost/pc")
    bob.feed("<message to='alice@localhost' type='chat' id='a1'><body>hi</body></message>")
    clock.advance(0)
    assert [str(m.body) for m in laptop.take() if m.name == "message"] == ["hi"]
    [push] = pushes(app)
    assert push.pubsub.publish["node"] == "phone"


def test_an_unarchived_message_to_an_account_with_sessions_is_not_pushed():
    h, clock = harness()
    app = h.login(APP)
    phone = h.login("alice@localhost/phone")
    enable(phone, node="phone")
    phone.logout()
    laptop = h.login("alice@localhost/laptop")
    bob = h.login("bob@localhost/pc")
    bob.feed("<message to='alice@localhost' type='chat'><body>hi</body></message>")
    assert [str(m.body) for m in laptop.take() if m.name == "message"] == ["hi"]
    assert pushes(app) == []


# -- a client that comes back at once ----------------------------------------------------


def _alice_with_an_unacknowledged_message(h: Harness, clock: Clock):
    app = h.login(APP)
    alice = sm_client(h, clock)
    bob = h.login("bob@localhost/pc")
    bob.feed("<message to='alice@localhost/r' type='chat'><body>one</body></message>")
    alice.take()
    return app, alice, bob


def test_a_session_resumed_in_the_same_turn_as_it_hibernated_is_not_pushed_for():
    # resource-hibernated, then resource-resumed before the reactor turns
    h, clock = harness()
    app, alice, bob = _alice_with_an_unacknowledged_message(h, clock)
    session = alice.session
    h.server.sm.hibernate(session)  # announced: push sees the hibernation
    assert h.component("push")._clients[session].hibernating
    again = login(h)
    again.say(f"<resume xmlns='{SM}' previd='{session.sm.id}' h='{session.sm.acked}'/>")
    assert session.framing is again
    clock.advance(BATCH_DELAY * 2)
    assert pushes(app) == []
    assert "one" in [str(m.body) for m in again.take() if m.name == "message"]


def test_a_resumption_while_the_old_connection_is_up_sends_no_push():
    h, clock = harness()
    app, alice, bob = _alice_with_an_unacknowledged_message(h, clock)
    session = alice.session
    again = login(h)
    again.say(f"<resume xmlns='{SM}' previd='{session.sm.id}' h='{session.sm.acked}'/>")
    assert session.framing is again
    bob.feed("<message to='alice@localhost/r' type='chat'><body>two</body></message>")
    clock.advance(BATCH_DELAY * 2)
    assert pushes(app) == []
    assert [str(m.body) for m in again.take() if m.name == "message"] == ["one", "two"]
