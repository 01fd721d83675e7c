"""xmppd.embed: real wokkel handlers on an in-process session or component
domain, against the in-memory harness (every timer on a ``task.Clock``)."""

from __future__ import annotations

import pytest
from twisted.internet import defer, task
from twisted.python.failure import Failure
from twisted.words.protocols.jabber import error as jabber_error
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from wokkel import xmppim
from wokkel.subprotocols import XMPPHandler

from xmppd import embed, ns
from xmppd.testing import Harness, error_condition

COMPONENTS = ["disco", "roster", "presence", "messaging", "offline"]


class EchoBot(xmppim.MessageProtocol):
    """Answers chat messages; remembers what it saw and its stream's life."""

    def __init__(self, online: bool = True):
        super().__init__()
        self.online = online
        self.seen: list[domish.Element] = []
        self.events: list[str] = []
        self.lost: list[Failure] = []

    def connectionMade(self):
        self.events.append("made")

    def connectionInitialized(self):
        super().connectionInitialized()
        self.events.append("initialized")
        if self.online:
            self.send(xmppim.AvailablePresence())

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.events.append("lost")
        self.lost.append(reason)

    def onMessage(self, message):
        self.seen.append(message)
        if message.body is None or message.getAttribute("type") == "error":
            return
        reply = domish.Element((None, "message"))
        reply["to"], reply["type"] = message["from"], "chat"
        reply.addElement("body", content=f"echo: {message.body}")
        self.send(reply)


class Roster(xmppim.RosterClientProtocol):
    def __init__(self):
        super().__init__()
        self.pushes: list = []

    def setReceived(self, request):
        self.pushes.append(request.item)


class Presence(xmppim.PresenceClientProtocol):
    def __init__(self):
        super().__init__()
        self.subscribed: list[JID] = []
        self.available_from: list[JID] = []

    def subscribedReceived(self, entity):
        self.subscribed.append(entity)

    def availableReceived(self, entity, show=None, statuses=None, priority=0):
        self.available_from.append(entity)


def harness(options=None, components=COMPONENTS):
    clock = task.Clock()
    h = Harness(components, clock=clock, options=options)
    return h, clock


def outcome(d: defer.Deferred):
    results: list = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    return results[0]


def attached(h, clock, jid="bot@localhost/echo", *handlers, create=True, **kw):
    if create:
        h.add_user(jid.split("/")[0])
    bot = embed.attach(h.server, jid, *handlers, **kw)
    clock.advance(0)
    return bot


def one_turn(clock):
    """What the reactor's next turn runs of what is due now (``task.Clock``'s
    ``advance(0)`` would also run what those calls schedule for now)."""
    due = [(c, c.func, c.args, c.kw) for c in clock.getDelayedCalls()
           if c.getTime() <= clock.seconds()]
    for call, _, _, _ in due:
        call.cancel()
    for _, func, args, kw in due:
        func(*args, **kw)


def h_resources(server):
    return server.router.resources("bot@localhost")


def bodies(session) -> list[str]:
    return [str(e.body) for e in session.take() if e.name == "message" and e.body is not None]


# -- a local account --------------------------------------------------------------------


def test_echo_bot_answers_a_client_from_its_full_jid():
    h, clock = harness()
    bot_handler = EchoBot()
    bot = attached(h, clock, "bot@localhost/echo", bot_handler)
    assert outcome(bot.when_ready()) == JID("bot@localhost/echo")
    assert bot_handler.events == ["made", "initialized"]
    alice = h.login("alice@localhost/pc")
    alice.feed("<message to='bot@localhost' type='chat' id='m1'><body>hi</body></message>")
    assert alice.take() == []  # the bot reads on the clock's next turn, as from a socket
    clock.advance(0)
    [reply] = alice.take()
    assert reply["from"] == "bot@localhost/echo" and reply["to"] == "alice@localhost/pc"
    assert str(reply.body) == "echo: hi"


def test_handlers_get_elements_as_parsed_from_a_stream():
    h, clock = harness()
    bot_handler = EchoBot()
    attached(h, clock, "bot@localhost/echo", bot_handler)
    alice = h.login("alice@localhost/pc")
    alice.feed("<message to='bot@localhost/echo' type='chat'><body>x</body></message>")
    clock.advance(0)
    [seen] = bot_handler.seen
    assert seen.uri == ns.CLIENT and seen.body.uri == ns.CLIENT
    assert seen["from"] == "alice@localhost/pc"


def test_the_bot_cannot_send_as_someone_else():
    h, clock = harness()
    bot_handler = EchoBot(online=False)
    attached(h, clock, "bot@localhost/echo", bot_handler)
    alice = h.login("alice@localhost/pc")
    forged = domish.Element((None, "message"))
    forged["to"], forged["from"] = "alice@localhost/pc", "bob@localhost/pc"
    forged.addElement("body", content="I am bob")
    with pytest.raises(ValueError, match="bob@localhost"):
        bot_handler.send(forged)
    clock.advance(0)
    assert alice.take() == []
    # A 'from' of its own bare JID is fine; no 'from' is stamped with the full JID.
    for sender in ("bot@localhost", None):
        ok = domish.Element((None, "message"))
        ok["to"] = "alice@localhost/pc"
        if sender:
            ok["from"] = sender
        ok.addElement("body", content="me")
        bot_handler.send(ok)
        [got] = alice.take()
        assert got["from"] == "bot@localhost/echo"
    assert h.router.resources("bot@localhost")  # still attached


def test_what_is_not_a_stanza_raises():
    h, clock = harness()
    bot_handler = EchoBot(online=False)
    attached(h, clock, "bot@localhost/echo", bot_handler)
    with pytest.raises(ValueError):
        bot_handler.send(domish.Element(("urn:xmpp:sm:3", "r")))
    with pytest.raises(ValueError):
        bot_handler.send("<message><body>unclosed")
    assert h.router.resources("bot@localhost")


def test_roster_get_round_trip_and_push():
    h, clock = harness()
    roster = Roster()
    attached(h, clock, "bot@localhost/echo", roster)
    d = roster.getRoster()
    assert not d.called  # the answer is read on the clock's next turn
    clock.advance(0)
    got = outcome(d)
    assert dict(got) == {}
    item = xmppim.RosterItem(JID("alice@localhost"), name="Alice")
    item.groups = {"Friends"}
    set_done = roster.setItem(item)
    clock.advance(0)
    assert outcome(set_done).getAttribute("type") == "result"
    assert [(i.entity, i.name) for i in roster.pushes] == [(JID("alice@localhost"), "Alice")]
    d = roster.getRoster()
    clock.advance(0)
    got = outcome(d)
    assert list(got) == [JID("alice@localhost")]
    assert got[JID("alice@localhost")].groups == {"Friends"}


def test_presence_available_and_subscription_with_a_client():
    h, clock = harness()
    presence, roster = Presence(), Roster()
    attached(h, clock, "bot@localhost/echo", presence, roster)
    alice = h.login("alice@localhost/pc")
    # RFC 6121 §3.1.6: the approval goes to "interested" resources, those
    # that asked for the roster.
    roster.getRoster()
    presence.available(priority=1)
    clock.advance(0)
    assert h.router.resources("bot@localhost")["echo"].available
    presence.subscribe(JID("alice@localhost"))
    [request] = [e for e in alice.take() if e.name == "presence"]
    assert request["type"] == "subscribe" and request["from"] == "bot@localhost"
    alice.feed("<presence to='bot@localhost' type='subscribed'/>")
    clock.advance(0)
    assert presence.subscribed == [JID("alice@localhost")]
    # Its own broadcast (RFC 6121 §4.2.2), then hers: subscribed to her now,
    # it gets her current presence.
    assert presence.available_from == [JID("bot@localhost/echo"), JID("alice@localhost/pc")]
    presence.unavailable()
    assert not h.router.resources("bot@localhost")["echo"].available


def test_messages_to_the_bare_jid_reach_the_available_bot():
    h, clock = harness()
    seen_jid: list = []

    class Bot(EchoBot):
        def connectionInitialized(self):
            seen_jid.append(self.parent.jid)  # wokkel handlers read the bound JID here
            super().connectionInitialized()

    attached(h, clock, "bot@localhost", Bot(online=True))  # no resource: the server picks one
    [resource] = h.router.resources("bot@localhost")
    assert resource and seen_jid == [JID(f"bot@localhost/{resource}")]
    alice = h.login("alice@localhost/pc")
    alice.feed("<message to='bot@localhost' type='chat'><body>bare</body></message>")
    clock.advance(0)
    [reply] = alice.take()
    assert reply["from"] == f"bot@localhost/{resource}" and str(reply.body) == "echo: bare"


def test_unhandled_iq_gets_service_unavailable_from_the_fallback_handler():
    h, clock = harness()
    attached(h, clock, "bot@localhost/echo", EchoBot(online=False))
    alice = h.login("alice@localhost/pc")
    alice.feed("<iq type='get' id='q' to='bot@localhost/echo'><query xmlns='urn:x:nobody'/></iq>")
    clock.advance(0)
    [answer] = alice.take()
    assert answer["id"] == "q" and error_condition(answer) == "service-unavailable"


def test_without_the_fallback_an_unhandled_iq_is_left_to_the_handlers():
    h, clock = harness()
    attached(h, clock, "bot@localhost/echo", EchoBot(online=False), fallback=False)
    alice = h.login("alice@localhost/pc")
    alice.feed("<iq type='get' id='q' to='bot@localhost/echo'><query xmlns='urn:x:nobody'/></iq>")
    clock.advance(0)
    assert alice.take() == []


def test_missing_account_fails_and_handlers_never_start():
    h, clock = harness()
    failures: list = []

    class Watching(embed.EmbeddedClient):
        def initializationFailed(self, reason):
            failures.append(reason)

    handler = EchoBot()
    bot = Watching(h.server, "ghost@localhost/x")
    handler.setHandlerParent(bot)
    bot.setServiceParent(h.server)
    clock.advance(0)
    result = outcome(bot.when_ready())
    assert isinstance(result, Failure) and result.check(embed.EmbedError)
    assert "no account" in result.getErrorMessage()
    assert [f.value for f in failures] == [result.value]  # wokkel's hook, told why
    assert handler.events == [] and bot.xmlstream is None
    assert h.router.resources("ghost@localhost") == {}


def test_attach_refuses_a_jid_outside_the_user_domains():
    h, _ = harness()
    with pytest.raises(ValueError):
        embed.attach(h.server, "bot@elsewhere.example/x")
    with pytest.raises(ValueError):
        embed.attach(h.server, "localhost")


def test_bind_respects_max_resources():
    h, clock = harness({"c2s": {"max_resources": "1"}})
    first = attached(h, clock, "bot@localhost/a", EchoBot(online=False))
    second = embed.attach(h.server, "bot@localhost/b", EchoBot(online=False))
    clock.advance(0)
    assert isinstance(outcome(first.when_ready()), JID)
    failed = outcome(second.when_ready())
    assert isinstance(failed, Failure) and "resource-constraint" in failed.getErrorMessage()
    assert list(h.router.resources("bot@localhost")) == ["a"]


def test_a_second_attach_of_the_same_resource_replaces_the_first():
    h, clock = harness()
    old_handler, new_handler = EchoBot(online=False), EchoBot(online=False)
    attached(h, clock, "bot@localhost/echo", old_handler)
    embed.attach(h.server, "bot@localhost/echo", new_handler)
    clock.advance(0)
    assert old_handler.events[-1] == "lost"
    assert old_handler.lost[0].check(jabber_error.StreamError)
    assert old_handler.lost[0].value.condition == "conflict"
    assert new_handler.events == ["made", "initialized"]
    alice = h.login("alice@localhost/pc")
    alice.feed("<message to='bot@localhost/echo' type='chat'><body>who</body></message>")
    clock.advance(0)
    assert bodies(alice) == ["echo: who"]
    assert old_handler.seen == [] and len(new_handler.seen) == 1


def test_detach_unbinds_and_contacts_see_the_bot_go_unavailable():
    h, clock = harness()
    h.add_user("bot@localhost")
    alice = h.login("alice@localhost/pc")
    # mutual subscription between alice and the bot's account
    bot_session = h.login("bot@localhost/setup")
    bot_session.feed("<presence to='alice@localhost' type='subscribe'/>")
    alice.feed("<presence to='bot@localhost' type='subscribed'/>")
    alice.feed("<presence to='bot@localhost' type='subscribe'/>")
    bot_session.feed("<presence to='alice@localhost' type='subscribed'/>")
    bot_session.logout()
    alice.take()
    unbound: list = []
    h.router.hook("resource-unbind", lambda s: unbound.append(s.jid.full()))
    bot_handler = EchoBot(online=True)
    bot = embed.attach(h.server, "bot@localhost/echo", bot_handler)
    clock.advance(0)
    online = [e for e in alice.take() if e.name == "presence"]
    assert [(p["from"], p.getAttribute("type")) for p in online] == [("bot@localhost/echo", None)]
    outcome(bot.detach())
    assert unbound == ["bot@localhost/echo"]
    gone = [e for e in alice.take() if e.name == "presence"]
    assert [(p["from"], p.getAttribute("type")) for p in gone] == \
        [("bot@localhost/echo", "unavailable")]
    assert bot_handler.events == ["made", "initialized", "lost"]
    assert bot.parent is None and h.router.resources("bot@localhost") == {}


def test_a_message_waiting_for_a_detaching_bot_goes_to_offline_storage():
    h, clock = harness()
    bot_handler = EchoBot(online=True)
    bot = attached(h, clock, "bot@localhost/echo", bot_handler)
    alice = h.login("alice@localhost/pc")
    alice.feed("<message to='bot@localhost/echo' type='chat' id='late'><body>late</body></message>")
    outcome(bot.detach())  # before the clock turns: the bot never read it
    clock.advance(0)
    assert bot_handler.seen == []
    later = h.login("bot@localhost/later", available=False)
    later.feed("<presence/>")
    assert "late" in [e.getAttribute("id") for e in later.take() if e.name == "message"]


def test_account_deletion_ends_the_bots_session():
    h, clock = harness()
    bot_handler = EchoBot(online=False)
    attached(h, clock, "bot@localhost/echo", bot_handler)
    outcome(h.server.delete_account("bot@localhost"))
    assert bot_handler.lost and bot_handler.lost[0].value.condition == "not-authorized"
    assert h.router.resources("bot@localhost") == {}


def test_attach_before_the_server_starts_attaches_at_start():
    from xmppd import config as configlib
    from xmppd.server import XMPPServer

    clock = task.Clock()
    config = configlib.from_dict({"server": {"domains": "localhost", "storage": "memory:",
                                             "data_dir": "/tmp/xmppd-harness",
                                             "components": "presence messaging"}})
    server = XMPPServer(config, listen=False, clock=clock)
    server.accounts.run_blocking = lambda f, *a: defer.maybeDeferred(f, *a)
    outcome(server.accounts.create("bot@localhost", "pw"))
    bot_handler = EchoBot(online=False)
    bot = embed.attach(server, "bot@localhost/echo", bot_handler)
    ready = bot.when_ready()
    assert not ready.called and bot_handler.events == []
    assert h_resources(server) == {}
    server.startService()
    clock.advance(0)
    assert outcome(ready) == JID("bot@localhost/echo")
    assert list(h_resources(server)) == ["echo"]
    outcome(defer.maybeDeferred(server.stopService))
    assert bot_handler.events[-1] == "lost"


def test_server_shutdown_ends_the_bot_with_system_shutdown():
    h, clock = harness()
    bot_handler = EchoBot(online=False)
    attached(h, clock, "bot@localhost/echo", bot_handler)
    d = defer.maybeDeferred(h.server.stopService)
    clock.advance(60)
    outcome(d)
    assert bot_handler.lost[0].value.condition == "system-shutdown"


def test_two_bots_talk_by_turns_not_by_recursion():
    h, clock = harness()
    a, b = EchoBot(online=False), EchoBot(online=False)
    attached(h, clock, "a@localhost/x", a)
    attached(h, clock, "b@localhost/x", b)
    start = domish.Element((None, "message"))
    start["to"], start["type"] = "b@localhost/x", "chat"
    start.addElement("body", content="ping")
    a.send(start)
    # Routed at once, read by b on a later turn: no handler runs inside
    # another's send, so two bots echoing each other take turns for ever
    # instead of recursing until the stack overflows.
    assert a.seen == [] and b.seen == []
    assert len(clock.getDelayedCalls()) == 1
    one_turn(clock)  # b reads
    assert [str(m.body) for m in b.seen] == ["ping"] and a.seen == []


def test_a_bot_talking_to_itself_takes_one_hop_per_turn():
    from twisted.internet import reactor

    h, _ = harness()
    clock = h.server.clock
    bot_handler = EchoBot(online=False)
    h.add_user("bot@localhost")
    embed.attach(h.server, "bot@localhost/echo", bot_handler)
    clock.advance(0)
    assert clock is not reactor
    start = domish.Element((None, "message"))
    start["to"], start["type"] = "bot@localhost/echo", "chat"
    start.addElement("body", content="me")
    bot_handler.send(start)
    one_turn(clock)
    assert [str(m.body) for m in bot_handler.seen] == ["me"]
    assert len(clock.getDelayedCalls()) == 1  # its answer to itself: the next turn


def test_iq_request_timeout_runs_on_the_servers_clock():
    h, clock = harness()
    handler = XMPPHandler()
    bot = attached(h, clock, "bot@localhost/echo", handler)
    h.login("alice@localhost/pc")  # never answers

    from wokkel.generic import Request

    class Ping(Request):
        def toElement(self):
            element = Request.toElement(self)
            element.addElement(("urn:xmpp:ping", "ping"))
            return element

    ping = Ping(recipient=JID("alice@localhost/pc"), stanzaType="get")
    ping.timeout = 5
    d = bot.request(ping)
    clock.advance(4)
    assert not d.called
    clock.advance(2)
    assert isinstance(outcome(d), Failure)


# -- a component domain ------------------------------------------------------------------


class ComponentEcho(XMPPHandler):
    """Echoes messages back from the address they were sent to."""

    def __init__(self):
        super().__init__()
        self.seen: list[domish.Element] = []

    def connectionInitialized(self):
        self.xmlstream.addObserver("/message", self.on_message)

    def on_message(self, message):
        self.seen.append(message)
        if message.getAttribute("type") == "error":
            return
        reply = domish.Element((None, "message"))
        reply["to"], reply["from"] = message["from"], message["to"]
        reply.addElement("body", content=f"echo: {message.body}")
        self.send(reply)


def test_component_domain_bot_answers_for_its_domain_and_jids_under_it():
    h, clock = harness()
    echo = ComponentEcho()
    component = embed.attach_component(h.server, "bot.localhost", echo)
    clock.advance(0)
    assert outcome(component.when_ready()) == JID("bot.localhost")
    alice = h.login("alice@localhost/pc")
    for to in ("bot.localhost", "room@bot.localhost", "room@bot.localhost/nick"):
        alice.feed(f"<message to='{to}' type='chat'><body>{to}</body></message>")
        clock.advance(0)
        [reply] = alice.take()
        assert reply["from"] == to and str(reply.body) == f"echo: {to}"
    assert all(m.uri == ns.CLIENT for m in echo.seen)


def test_component_stanzas_are_addressed_as_prosody_does():
    h, clock = harness()
    echo = ComponentEcho()
    embed.attach_component(h.server, "bot.localhost", echo)
    clock.advance(0)
    alice = h.login("alice@localhost/pc")
    unstamped = domish.Element((ns.COMPONENT_ACCEPT, "message"))
    unstamped["to"] = "alice@localhost/pc"
    unstamped.addElement("body", content="hello")
    echo.send(unstamped)
    [got] = alice.take()
    assert got["from"] == "bot.localhost" and str(got.body) == "hello"
    foreign = domish.Element((None, "message"))
    foreign["to"], foreign["from"] = "alice@localhost/pc", "admin@localhost"
    with pytest.raises(ValueError):
        echo.send(foreign)
    nowhere = domish.Element((None, "iq"))
    nowhere["type"], nowhere["id"] = "get", "n1"
    nowhere.addElement(("urn:xmpp:ping", "ping"))
    errors: list = []
    echo.xmlstream.addObserver("/iq[@type='error']", errors.append)
    echo.send(nowhere)
    clock.advance(0)
    assert [error_condition(e) for e in errors] == ["bad-request"]
    assert alice.take() == []


def test_component_domain_must_be_free():
    h, clock = harness(components=["disco", "muc"])
    with pytest.raises(ValueError):
        embed.attach_component(h.server, "localhost")
    with pytest.raises(ValueError):
        embed.attach_component(h.server, "conference.localhost")
    embed.attach_component(h.server, "bot.localhost")
    with pytest.raises(ValueError):
        embed.attach_component(h.server, "bot.localhost")


def test_component_domain_is_in_the_servers_disco_items_while_attached():
    h, clock = harness(components=["disco"])
    component = embed.attach_component(h.server, "bot.localhost")
    clock.advance(0)
    alice = h.login("alice@localhost/pc", available=False)
    query = "<iq type='get' id='i' to='localhost'><query xmlns='{}'/></iq>".format(ns.DISCO_ITEMS)
    alice.feed(query)
    [items] = alice.take()
    assert "bot.localhost" in [i["jid"] for i in items.firstChildElement().elements()]
    outcome(component.detach())
    alice.feed(query)
    [items] = alice.take()
    assert "bot.localhost" not in [i["jid"] for i in items.firstChildElement().elements()]


def test_detached_component_domain_is_unrouted_and_its_waiting_stanzas_bounced():
    h, clock = harness()
    echo = ComponentEcho()
    component = embed.attach_component(h.server, "bot.localhost", echo)
    clock.advance(0)
    alice = h.login("alice@localhost/pc")
    alice.feed("<message to='bot.localhost' type='chat' id='w'><body>wait</body></message>")
    outcome(component.detach())
    clock.advance(0)
    assert echo.seen == []
    [bounce] = alice.take()
    assert bounce["id"] == "w" and error_condition(bounce) == "remote-server-timeout"
    assert "bot.localhost" not in h.router.routes.domains()
    alice.feed("<message to='bot.localhost' type='chat' id='x'><body>gone</body></message>")
    [bounce] = alice.take()
    assert error_condition(bounce) == "remote-server-not-found"
