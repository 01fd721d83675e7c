"""Serialise once for a fanout."""

from xmppd import ns
from xmppd.router.fanout import Fanout
from xmppd.testing import Harness, parse, result_of


class CountingSession:
    """Just enough session for a fanout: a shape, a serialiser that counts, a mailbox."""

    serialised = 0

    def __init__(self, full, shape=ns.CLIENT):
        from xmppd import jid
        self.jid = jid.parse(full)
        self.shape = shape
        self.texts = []

    def serialize(self, stanza):
        CountingSession.serialised += 1
        return stanza.toXml(defaultUri=self.shape)

    def send(self, text):
        self.texts.append(text)


def test_one_serialisation_for_a_fanout_to_100_sessions_each_addressed():
    CountingSession.serialised = 0
    sessions = [CountingSession(f"u{n}@localhost/r") for n in range(100)]
    stanza = parse("<presence from='alice@localhost/pc'><show>away</show>"
                   "<status>it's &lt;late&gt;</status></presence>")
    fan = Fanout(stanza)
    assert fan.send_all(sessions, address=True) == 100
    assert CountingSession.serialised == 1 and fan.serialisations == 1
    for session in sessions:
        [text] = session.texts
        got = parse(text)
        assert got["to"] == session.jid.full()
        assert got["from"] == "alice@localhost/pc"
        assert str(next(got.elements(ns.CLIENT, "status"))) == "it's <late>"
    assert stanza.getAttribute("to") is None  # the original is left as it was


def test_one_serialisation_per_output_shape():
    CountingSession.serialised = 0
    sessions = [CountingSession("a@localhost/r"), CountingSession("b@localhost/r"),
                CountingSession("c@example.org/r", shape=ns.SERVER)]
    Fanout(parse("<message from='x@localhost' to='room@localhost'><body>b</body></message>")
           ).send_all(sessions)
    assert CountingSession.serialised == 2
    # an s2s stream declares jabber:client content explicitly; a c2s one need not
    assert "xmlns='jabber:client'" in sessions[2].texts[0]
    assert "xmlns" not in sessions[0].texts[0]
    assert all("to='room@localhost'" in s.texts[0] for s in sessions)


def test_a_to_with_quotes_is_escaped():
    session = CountingSession("a@localhost/r")
    Fanout(parse("<presence/>")).send(session, to="o'brien@localhost/x&y")
    assert parse(session.texts[0])["to"] == "o'brien@localhost/x&y"


def test_self_closing_and_empty_stanzas_are_spliced_right():
    session = CountingSession("a@localhost/r")
    fan = Fanout(parse("<presence/>"))
    fan.send(session, to="b@localhost")
    assert parse(session.texts[0])["to"] == "b@localhost"


def test_a_presence_broadcast_to_many_resources_is_serialised_once():
    h = Harness(["presence", "roster"], options={"c2s": {"max_resources": "0"}})
    sessions = [h.login(f"alice@localhost/r{n}") for n in range(100)]
    for session in sessions:
        session.received_text = 0
    sessions[0].feed("<presence><show>dnd</show></presence>")
    texts = [s.received_text for s in sessions]
    received = [s.take() for s in sessions]
    assert texts == [1] * 100  # each got ready-made text, not an element
    for session, [got] in zip(sessions, received):
        assert got["to"] == session.jid.full() and got["from"] == "alice@localhost/r0"


def test_presence_from_a_contact_reaches_every_resource_as_one_serialisation():
    h = Harness(["presence", "roster"])
    bob = [h.login(f"bob@localhost/r{n}") for n in range(5)]
    alice = h.login("alice@localhost/pc")
    for s in bob:
        s.take()
        s.received_text = 0
    alice.feed("<presence to='bob@localhost'><show>chat</show></presence>")
    assert [s.received_text for s in bob] == [1] * 5
    assert all(only_one["from"] == "alice@localhost/pc" for s in bob for only_one in s.take())


def test_a_broadcast_to_100_contacts_is_serialised_once():
    h = Harness(["presence", "roster"])
    contacts = [h.login(f"c{n}@localhost/pc") for n in range(100)]
    alice = h.login("alice@localhost/pc", available=False)
    roster = h.component("roster")
    for c in contacts:  # mutual subscriptions, written directly
        from xmppd.subscription import State
        r = result_of(roster.load("alice@localhost"))
        result_of(roster.apply(r, c.bare, State("both")))
        r = result_of(roster.load(c.bare))
        result_of(roster.apply(r, "alice@localhost", State("both")))
        c.take()
    calls = []
    original = type(alice).serialize
    type(alice).serialize = lambda self, stanza: calls.append(stanza.name) or original(self, stanza)
    try:
        alice.feed("<presence><status>hello</status></presence>")
    finally:
        type(alice).serialize = original
    got = [c.take() for c in contacts]
    presences = [[p for p in g if p.getAttribute("from") == "alice@localhost/pc"] for g in got]
    assert all(len(p) == 1 and p[0]["to"] == "c%d@localhost" % n for n, p in enumerate(presences))
    assert calls.count("presence") == 1, calls


def test_a_copy_changed_after_it_was_made_is_serialised_anew():
    fan = Fanout(parse("<presence from='a@localhost/r'><show>away</show></presence>"))
    copy = fan.copy("b@localhost")
    assert Fanout.of(copy) is fan
    copy.addElement("x")
    assert Fanout.of(copy) is not fan
    other = fan.copy("c@localhost")
    other["type"] = "unavailable"
    assert Fanout.of(other) is not fan
