"""An in-memory harness for testing components without a socket.

Build a server with the components under test, log in fake users, feed them
stanzas as XML text, and look at what each session received::

    from xmppd.testing import Harness

    def test_ping():
        h = Harness(["ping"])
        alice = h.login("alice@localhost/phone")
        alice.feed("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        reply = alice.received.pop()
        assert reply["type"] == "result" and reply["id"] == "p1"

Storage is the in-memory backend and password hashing runs inline, so
everything a handler does has happened when ``feed`` returns.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Iterable

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.words.xish import domish

from xmppd import config as configlib
from xmppd import jid as jidlib
from xmppd import ns
from xmppd.server import XMPPServer
from xmppd.xml.stream import parse_element

__all__ = ["Harness", "FakeSession", "parse", "result_of", "error_condition", "only"]


def result_of(d: defer.Deferred) -> Any:
    """The result of a Deferred that has already fired (raise its failure)."""
    results: list = []
    d.addBoth(results.append)
    if not results:
        raise AssertionError(f"{d!r} has not fired")
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def error_condition(stanza: domish.Element) -> str:
    """The one defined condition of an error stanza (``service-unavailable``...);
    fails the test if ``stanza`` is not an error with exactly one condition."""
    assert stanza.getAttribute("type") == "error", stanza.toXml()
    error = next(c for c in stanza.elements() if c.name == "error")
    conditions = [c.name for c in error.elements()
                  if c.uri == ns.STANZA_ERRORS and c.name != "text"]
    assert len(conditions) == 1, error.toXml()
    return conditions[0]


def only(session: FakeSession) -> domish.Element:
    """The one stanza ``session`` received since the last look; fails otherwise."""
    received = session.take()
    assert len(received) == 1, [e.toXml() for e in received]
    return received[0]


def parse(xml: str) -> domish.Element:
    """Parse one stanza written as text (default namespace ``jabber:client``)."""
    return parse_element(xml)


class FakeSession:
    """A client session without a stream: what the router needs, plus a mailbox."""

    def __init__(self, harness: Harness, full_jid: str | None = None, address: str = "127.0.0.1"):
        self.harness = harness
        self.router = harness.router
        self.address = address
        self.peer = f"{address}:0"
        self.secure = True
        self.domain = harness.domain
        self.shape = ns.CLIENT
        self.received: list[domish.Element] = []
        self.stream_errors: list[str] = []
        #: how many stanzas arrived as ready-made text (a fanout's)
        self.received_text = 0
        self.priority = 0
        self.available = False
        self.presence = None
        self.presence_received = 0.0
        self.jid = self.bare = self.resource = self.user = None
        if full_jid is not None:
            self.jid = jidlib.parse(full_jid)
            self.bare, self.resource, self.user = self.jid.userhost(), self.jid.resource, self.jid.userhost()
            self.domain = self.jid.host

    # what the router calls
    def send(self, stanza: domish.Element | str) -> None:
        if isinstance(stanza, str):
            self.received_text += 1
            stanza = parse(stanza)
        self.received.append(stanza)

    def serialize(self, stanza: domish.Element) -> str:
        return stanza.toXml(defaultUri=ns.CLIENT)

    def drained(self) -> defer.Deferred:
        """Fires when the session's unsent output is written (at once: a fake
        session never falls behind)."""
        return defer.succeed(None)

    def hold(self, work: defer.Deferred) -> None:
        """Process this session's next stanza only after ``work`` (the harness
        feeds stanzas one by one, so there is nothing to hold back)."""

    def stream_error(self, condition: str, text: str | None = None) -> None:
        self.stream_errors.append(condition)
        if self.jid is not None and self.router.unbind(self):
            self.harness.server.session_closed(self)

    # what a test calls
    def feed(self, stanza: str | domish.Element) -> None:
        """Send a stanza from this session, as the c2s session would (``from`` stamped)."""
        element = parse(stanza) if isinstance(stanza, str) else stanza
        if self.jid is None:
            if not self.router.route_preauth(element, self):
                self.stream_errors.append("not-authorized")
            return
        element["from"] = self.jid.full()
        self.router.route(element, self)

    def take(self) -> list[domish.Element]:
        """Everything received since the last call."""
        received, self.received = self.received, []
        return received

    def logout(self) -> None:
        if self.router.unbind(self):
            self.harness.server.session_closed(self)


class Harness:
    """A server in memory: the named components, the memory store, no listeners."""

    def __init__(self, components: Iterable[str | type] = ("disco",), domain: str = "localhost",
                 options: dict[str, dict[str, Any]] | None = None, clock: Any = None):
        """``clock``: the server's timers run on it (a ``task.Clock`` in tests of
        time-outs; the reactor by default)."""
        names = []
        classes: dict[str, type] = {}
        sections: dict[str, dict[str, Any]] = {}
        for component in components:
            if isinstance(component, str):
                names.append(component)
            else:
                names.append(component.name)
                classes[component.name] = component
        for section, values in (options or {}).items():
            sections.setdefault(section, {}).update(values)
        server = sections.setdefault("server", {})
        server.setdefault("domains", domain)
        server.setdefault("storage", "memory:")
        # memory storage writes nothing; one shared directory satisfies validation
        server.setdefault("data_dir", os.path.join(tempfile.gettempdir(), "xmppd-harness"))
        server.setdefault("scram_iterations", "4096")
        server["components"] = " ".join(names)
        self.domain = domain
        self.config = configlib.from_dict(sections, name="<harness>", classes=classes)
        self.server = XMPPServer(self.config, listen=False, clock=clock)
        self.server.accounts.run_blocking = lambda f, *a: defer.maybeDeferred(f, *a)
        self.router = self.server.router
        self.server.startService()

    def component(self, name: str):
        return self.server.components[name]

    def add_user(self, bare: str, password: str = "secret") -> None:
        self.server.accounts.create(bare, password)

    def connect(self, address: str = "127.0.0.1") -> FakeSession:
        """An unauthenticated session (for pre-authentication features)."""
        return FakeSession(self, None, address)

    def login(self, full_jid: str, available: bool = True, priority: int = 0,
              create: bool = True) -> FakeSession:
        """A bound session (the account is created if missing), available by default.

        With ``available`` the session sends initial presence; what that
        broadcast delivered to the user's own sessions is discarded, so tests
        see only what happens after the login.
        """
        session = FakeSession(self, full_jid)
        if create:
            self.server.accounts.create(session.bare, "secret").addErrback(lambda f: None)
        old = self.router.bind(session)
        if old is not None:
            self.server.session_closed(old)
            old.stream_error("conflict")
        self.server.session_bound(session)
        if available:
            session.feed(f"<presence><priority>{priority}</priority></presence>")
            # The login settles: the broadcast of this initial presence to the
            # user's own sessions is not what a test wants to look at.
            for other in self.router.resources(session.bare).values():
                other.take()
            session.take()
            # Without a presence component nobody tracks it: set it directly.
            session.available, session.priority = True, priority
        return session

    def stop(self) -> None:
        self.server.stopService()
