"""Differential test: BOSH (XEP-0124, XEP-0206) against Prosody 0.12's
mod_bosh, request for request.

The same HTTP requests go to a real ``twistd xmppd`` and to a private
Prosody (Debian's, see :mod:`prosody`) with ``mod_bosh`` on an HTTP port and
``consider_bosh_secure`` (xmppd counts loopback as secure by itself), both
serving ``localhost`` with the same accounts. Compared: the session creation
response's attributes (which there are, and their values where the XEP
leaves the choice), the bodies of the stream restart and of terminate, and
the error conditions with their HTTP status codes. Session ids, and the
stream features' contents, differ by design and are left out.

Every comparison must match, except the pinned differences below
(:func:`pinned`): where Prosody departs from the XEPs (or RFC 9110) and xmppd
follows them. Each pin checks that both servers still answer as recorded, so
a pin that no longer holds fails too.
"""

from __future__ import annotations

import base64
import threading
import time
import uuid
import xml.etree.ElementTree as ET

import pytest

from boshclient import NS_HTTPBIND, NS_XBOSH, BoshClient, Response
from conftest import PASSWORD
from prosody import MODULES, ProsodyProcess, ProsodyUnavailable
from rawxmpp import NS_BIND, NS_CLIENT, NS_SASL, NS_STREAMS, q

USERS = ("alice@localhost", "bob@localhost")
PING = ("<iq xmlns='jabber:client' type='get' id='{}' to='localhost'>"
        "<ping xmlns='urn:xmpp:ping'/></iq>")
XMLNS = "{http://www.w3.org/2000/xmlns/}"


@pytest.fixture(scope="module")
def prosody():
    server = ProsodyProcess(USERS, PASSWORD, (*MODULES, "bosh"), http=True,
                            global_options="consider_bosh_secure = true")
    try:
        server.start()
    except ProsodyUnavailable as e:
        pytest.skip(f"Debian's prosody cannot be installed here: {e}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def xmppd(make_xmppd_module):
    return make_xmppd_module({"server": {"components": "disco ping roster presence messaging"}},
                             users=USERS)


@pytest.fixture(scope="module")
def servers(xmppd, prosody) -> dict[str, int]:
    """Each server's HTTP port, xmppd first."""
    return {"xmppd": xmppd.http_port, "prosody": prosody.http_port}


def both(servers: dict[str, int], observe) -> tuple:
    """``observe(port)`` against each server: (xmppd's, Prosody's)."""
    return observe(servers["xmppd"]), observe(servers["prosody"])


def pinned(ours, theirs, *, xmppd, prosody, why: str) -> None:
    """A difference kept on purpose: each server still answers as pinned."""
    assert ours != theirs, f"no longer different ({why}): both {ours!r}"
    assert (ours, theirs) == (xmppd, prosody), why


# -- a raw BOSH session -----------------------------------------------------------


class Session:
    """Requests exactly as written, each on a connection of its own, in rid
    order; :meth:`start` leaves one open (held) while others are sent."""

    def __init__(self, port: int):
        self.client = BoshClient("127.0.0.1", port)
        self.rid = 1_000_000 + uuid.uuid4().int % 1_000_000
        self.sid: str | None = None

    def body(self, payload: str = "", rid: int | None = None, **attrs: str) -> str:
        if rid is None:
            self.rid += 1
            rid = self.rid
        extra = "".join(f" {k.replace('xmpp_', 'xmpp:')}='{v}'" for k, v in attrs.items())
        if any(k.startswith("xmpp_") for k in attrs):
            extra += f" xmlns:xmpp='{NS_XBOSH}'"
        return f"<body xmlns='{NS_HTTPBIND}' sid='{self.sid}' rid='{rid}'{extra}>{payload}</body>"

    def raw(self, data: str | bytes, **kw) -> Response:
        return self.client.post_raw(data, **kw)

    def post(self, payload: str = "", rid: int | None = None, **attrs: str) -> Response:
        return self.raw(self.body(payload, rid, **attrs))

    def start(self, payload: str = "", rid: int | None = None, **attrs: str) -> "Pending":
        return Pending(self.client, self.body(payload, rid, **attrs))

    def create(self, wait: str = "60", hold: str = "1", ver: str | None = "1.6",
               to: str = "localhost", **extra: str) -> Response:
        attrs = {"rid": str(self.rid), "to": to, "wait": wait, "hold": hold, "ver": ver,
                 "xml:lang": "en", **extra}
        text = " ".join(f"{k}='{v}'" for k, v in attrs.items() if v is not None)
        response = self.raw(f"<body xmlns='{NS_HTTPBIND}' {text} xmpp:version='1.0' "
                            f"xmlns:xmpp='{NS_XBOSH}'/>")
        if response.data.strip():
            self.sid = response.body.get("sid")
        return response

    def authenticate(self, user: str = "alice") -> None:
        token = base64.b64encode(f"\0{user}\0{PASSWORD}".encode()).decode()
        [success] = list(self.post(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")
                         .body)
        assert success.tag == q(NS_SASL, "success"), ET.tostring(success)

    def login(self, user: str = "alice", resource: str | None = None, **create) -> None:
        """Create, PLAIN, restart, bind: nothing held afterwards."""
        assert self.create(**create).body.get("type") is None
        self.authenticate(user)
        [features] = list(self.post(to="localhost", xmpp_restart="true").body)
        assert features.find(q(NS_BIND, "bind")) is not None
        resource = resource or uuid.uuid4().hex[:8]
        [result] = list(self.post(f"<iq xmlns='jabber:client' type='set' id='bind'><bind "
                                  f"xmlns='{NS_BIND}'><resource>{resource}</resource></bind></iq>")
                        .body)
        assert result.get("type") == "result", ET.tostring(result)

    def alive(self) -> bool:
        """Whether the session still answers a ping (in a new request)."""
        response = self.post(PING.format("alive"))
        return any(e.get("id") == "alive" and e.get("type") == "result" for e in response.body)

    def ended(self) -> bool:
        """Whether the next request finds the session gone (an answer that
        does not come within a few seconds is not that)."""
        pending = self.start(PING.format("ended?"))
        if pending.held(3.0):
            return False
        return pending.response.terminal() == ("terminate", "item-not-found")

    def available(self) -> None:
        """Initial presence (its echo comes back in the same response)."""
        self.post("<presence xmlns='jabber:client'/>")


class Pending:
    """A request sent on its own thread: its response, or None while held."""

    def __init__(self, client: BoshClient, data: str):
        self.response: Response | None = None
        self.sent = time.monotonic()
        self.took: float | None = None
        self._thread = threading.Thread(target=self._run, args=(client, data), daemon=True)
        self._thread.start()
        time.sleep(0.2)  # on its way before the next one (rid order on arrival)

    def _run(self, client: BoshClient, data: str) -> None:
        try:
            self.response = client.post_raw(data, timeout=70)
        except OSError:
            return
        self.took = time.monotonic() - self.sent

    def result(self, timeout: float = 10.0) -> Response:
        self._thread.join(timeout)
        assert self.response is not None, "no response"
        return self.response

    def held(self, seconds: float = 1.0) -> bool:
        self._thread.join(seconds)
        return self.response is None


def shape(response: Response, sid: str | None = None) -> tuple:
    """What is compared of a response: the status, and the body's attributes
    (namespace declarations included; the sid as ``<sid>``), children's tags."""
    if not response.data.strip():
        return response.status, None
    body = response.body
    attrs = {k: ("<sid>" if sid and v == sid else v) for k, v in body.attrib.items()}
    # ElementTree drops xmlns declarations: read the prefixes from the text
    head = response.data[:response.data.find(b">")].decode()
    attrs["xmlns:stream"] = "declared" if "xmlns:stream=" in head else None
    return response.status, attrs, [child.tag for child in body]


def created(response: Response) -> dict[str, str]:
    """The creation response's attributes, sid and authid checked and left out."""
    body = response.body
    assert response.status == 200 and body.get("type") is None, response.data
    attrs = dict(body.attrib)
    sid = attrs.pop("sid")
    assert len(sid) == 36 and attrs.pop("authid") == sid
    assert body.find(q(NS_STREAMS, "features")) is not None
    return attrs


XBOSH = f"{{{NS_XBOSH}}}"
#: What xmppd announces beyond Prosody: XEP-0124 §7.2 wants 'maxpause' from
#: a connection manager that supports pause (xmppd does, Prosody does not),
#: XEP-0206 §4 wants 'xmpp:restartlogic' from one that supports restarts
#: (Prosody restarts streams without announcing it).
ONLY_XMPPD = {"maxpause": "300", f"{XBOSH}restartlogic": "true"}


# -- session creation ---------------------------------------------------------------


def test_the_creation_response_has_prosodys_attributes_and_values(servers):
    ours, theirs = both(servers, lambda port: created(Session(port).create()))
    assert theirs == {"wait": "60", "inactivity": "60", "polling": "5", "requests": "2",
                      "hold": "1", "ver": "1.6", "from": "localhost", "secure": "true",
                      f"{XBOSH}version": "1.0"}
    assert {k: v for k, v in ours.items() if k not in ONLY_XMPPD} == theirs
    pinned({k: ours[k] for k in ONLY_XMPPD}, {k: theirs.get(k) for k in ONLY_XMPPD},
           xmppd=ONLY_XMPPD, prosody=dict.fromkeys(ONLY_XMPPD),
           why="XEP-0124 §7.2 maxpause and XEP-0206 §4 restartlogic, Prosody has neither")


@pytest.mark.parametrize("asked, keys", [
    ({"wait": "300"}, ("wait",)),           # at most bosh_max_wait (120 in both)
    ({"wait": "0"}, ("wait",)),
    ({"hold": "5"}, ("hold", "requests")),  # one held at most, in both
    ({"hold": None}, ("hold", "requests")),
])
def test_the_creation_response_bounds_what_the_client_asked_as_prosody(servers, asked, keys):
    ours, theirs = both(servers, lambda port: created(Session(port).create(**asked)))
    assert {k: ours[k] for k in keys} == {k: theirs[k] for k in keys}


def test_a_client_asking_for_no_hold_gets_none_unlike_prosody(servers):
    ours, theirs = both(servers, lambda port: (lambda a: (a["hold"], a["requests"]))(
        created(Session(port).create(hold="0"))))
    pinned(ours, theirs, xmppd=("0", "1"), prosody=("1", "2"),
           why="XEP-0124 §7.2: 'hold' MUST NOT be greater than the client's; Prosody's is "
               "always 1")


def test_ver_is_the_lower_of_the_two_unlike_prosody(servers):
    ours, theirs = both(servers, lambda port: created(Session(port).create(ver="1.5"))["ver"])
    pinned(ours, theirs, xmppd="1.5", prosody="1.6",
           why="XEP-0124 §7.2: ours or the client's version, whichever is lower")


def test_from_is_the_domain_served_unlike_prosody(servers):
    def observe(port):
        body = Session(port).create(to="LocalHost").body
        mechanisms = body.findall(f"{q(NS_STREAMS, 'features')}/{q(NS_SASL, 'mechanisms')}")
        return body.get("from"), bool(mechanisms)
    pinned(*both(servers, observe), xmppd=("localhost", True), prosody=("LocalHost", False),
           why="domains are case-insensitive (RFC 7622 §3.2): xmppd answers for the domain it "
               "serves; Prosody echoes the 'to' as written and then finds no features for it")


@pytest.mark.parametrize("asked", [
    {"to": None},                 # improper-addressing in both
    {"wait": None},               # bad-request in both from here on
    {"wait": "1.5"},
    {"wait": "-1"},
    {"rid": "x"},
    {"rid": None},
])
def test_a_bad_creation_request_gets_prosodys_condition(servers, asked):
    def observe(port):
        s = Session(port)
        if "rid" in asked:
            rid = asked["rid"]
            text = f" rid='{rid}'" if rid is not None else ""
            return shape(s.raw(f"<body xmlns='{NS_HTTPBIND}'{text} to='localhost' wait='60' "
                               "ver='1.6'/>"))
        return shape(s.create(**asked))
    ours, theirs = both(servers, observe)
    assert ours == theirs
    assert theirs[1]["type"] == "terminate"


def test_a_domain_not_served_is_host_unknown_unlike_prosody(servers):
    ours, theirs = both(servers, lambda port: Session(port).create(to="elsewhere.example")
                        .body.get("condition"))
    pinned(ours, theirs, xmppd="host-unknown", prosody="improper-addressing",
           why="XEP-0124 §17.2: host-unknown is a 'to' unknown to the connection manager; "
               "improper-addressing is a missing 'to'")


def test_a_legacy_client_gets_http_errors_unlike_prosody(servers):
    ours, theirs = both(servers, lambda port: shape(Session(port).create(ver=None, wait=None)))
    pinned(ours[0], theirs[0], xmppd=400, prosody=200,
           why="XEP-0124 §17.1-17.2: a client without 'ver' gets HTTP 400 for bad-request")


# -- requests that are not a session's -----------------------------------------------


def test_an_unknown_sid_is_item_not_found_as_prosody(servers):
    ours, theirs = both(servers, lambda port: shape(BoshClient("127.0.0.1", port).post_raw(
        f"<body xmlns='{NS_HTTPBIND}' sid='{uuid.uuid4()}' rid='7'/>")))
    assert ours == theirs == (200, {"type": "terminate", "condition": "item-not-found",
                                    "xmlns:stream": None}, [])


@pytest.mark.parametrize("data", [b"<body xmlns='jabber:client'/>",
                                  f"<foo xmlns='{NS_HTTPBIND}' rid='1'/>".encode(),
                                  b"<!DOCTYPE body [<!ENTITY a 'b'>]><body/>"])
def test_xml_that_is_not_a_bosh_body_is_bad_request_as_prosody(servers, data):
    ours, theirs = both(servers, lambda port: shape(BoshClient("127.0.0.1", port).post_raw(data)))
    assert ours == theirs == (200, {"type": "terminate", "condition": "bad-request",
                                    "xmlns:stream": "declared"}, [])


@pytest.mark.parametrize("data", [b"", b"hello", b"<body", b"\xff\xfe<\x00"])
def test_a_body_that_is_not_xml_is_bad_request_unlike_prosody(servers, data):
    ours, theirs = both(servers, lambda port: BoshClient("127.0.0.1", port).post_raw(data)
                        .terminal())
    pinned(ours, theirs, xmppd=("terminate", "bad-request"),
           prosody=("terminate", "item-not-found"),
           why="XEP-0124 §17.2: a syntax error is bad-request; item-not-found is an unknown "
               "sid or rid (Prosody finds no sid and says so)")


def test_a_get_is_a_page_as_prosody(servers):
    def observe(port):
        response = BoshClient("127.0.0.1", port).post_raw(b"", method="GET")
        return response.status, response.headers["content-type"]
    ours, theirs = both(servers, observe)
    assert ours == theirs == (200, "text/html; charset=utf-8")


def test_another_method_is_405_unlike_prosody(servers):
    ours, theirs = both(servers, lambda port: BoshClient("127.0.0.1", port)
                        .post_raw(b"x", method="PUT").status)
    pinned(ours, theirs, xmppd=405, prosody=404,
           why="RFC 9110 §15.5.6: a method the resource does not support is 405 (with "
               "Allow); the resource exists")


def test_cross_origin_responses_name_the_origin_as_prosody(servers):
    def observe(port):
        s = Session(port)
        response = s.raw(f"<body xmlns='{NS_HTTPBIND}' rid='1' to='localhost' wait='60' "
                         "ver='1.6'/>", headers={"Origin": "https://web.example"})
        return response.headers.get("access-control-allow-origin")
    ours, theirs = both(servers, observe)
    assert ours == theirs == "https://web.example"


# -- restart and terminate --------------------------------------------------------------


def test_the_restart_response_is_a_plain_body_with_the_features_as_prosody(servers):
    def observe(port):
        s = Session(port)
        s.create()
        s.authenticate()
        response = s.post(to="localhost", xmpp_restart="true")
        features = response.body.find(q(NS_STREAMS, "features"))
        return shape(response, s.sid), features.find(q(NS_BIND, "bind")) is not None
    ours, theirs = both(servers, observe)
    assert ours == theirs
    assert theirs == ((200, {"sid": "<sid>", "xmlns:stream": "declared"},
                       [q(NS_STREAMS, "features")]), True)


def test_any_request_after_success_restarts_the_stream_as_prosody(servers):
    """Prosody restarts on the next request whether or not it says
    xmpp:restart (the client must say it, XEP-0206 §5; what a server does
    otherwise is left open)."""
    def observe(port):
        s = Session(port)
        s.create()
        s.authenticate()
        return [child.tag for child in s.post().body]
    ours, theirs = both(servers, observe)
    assert ours == theirs == [q(NS_STREAMS, "features")]


def test_a_stanza_in_the_restart_request_is_ignored_unlike_prosody(servers):
    def observe(port):
        s = Session(port)
        s.create()
        s.authenticate()
        response = s.post(PING.format("inside"), to="localhost", xmpp_restart="true")
        return [child.tag for child in response.body]
    pinned(*both(servers, observe), xmppd=[q(NS_STREAMS, "features")],
           prosody=[q(NS_STREAMS, "features"), q(NS_CLIENT, "iq")],
           why="XEP-0206 §5: the restart request should be empty, a stanza in it ignored")


def test_terminate_alone_is_answered_as_prosody(servers):
    """The unavailable presence's echo comes in the terminate body."""
    def observe(port):
        s = Session(port)
        s.login()
        s.available()
        response = s.post("<presence xmlns='jabber:client' type='unavailable'/>",
                          type="terminate")
        after = s.post()
        return shape(response, s.sid), after.terminal()
    ours, theirs = both(servers, observe)
    assert ours == theirs
    assert theirs[0] == (200, {"type": "terminate", "sid": "<sid>", "xmlns:stream": "declared"},
                         [q(NS_CLIENT, "presence")])
    assert theirs[1] == ("terminate", "item-not-found")


def test_terminate_with_a_request_held_is_acknowledged_on_the_oldest_unlike_prosody(servers):
    def observe(port):
        s = Session(port)
        s.login()
        poll = s.start()
        response = s.post(type="terminate")
        return poll.result().body.get("type"), response.body.get("type")
    pinned(*both(servers, observe), xmppd=("terminate", None),
           prosody=("terminate", "terminate"),
           why="XEP-0124 §13: the oldest open request gets type='terminate', the others "
               "(the terminate request among them) an empty body")


# -- errors within a session ------------------------------------------------------------


def test_a_replayed_rid_gets_the_same_response_as_prosody(servers):
    def observe(port):
        s = Session(port)
        s.login()
        first = s.post(PING.format("once"))
        again = s.post(PING.format("twice"), rid=s.rid)
        return again.data == first.data, b"twice" in again.data
    ours, theirs = both(servers, observe)
    assert ours == theirs == (True, False)


def test_an_rid_beyond_the_window_is_item_not_found_as_prosody(servers):
    def observe(port):
        s = Session(port)
        s.login()
        return shape(s.post(rid=s.rid + 50))
    ours, theirs = both(servers, observe)
    assert ours == theirs == (200, {"type": "terminate", "condition": "item-not-found",
                                    "xmlns:stream": None}, [])


def test_an_rid_beyond_the_window_ends_the_session_unlike_prosody(servers):
    def observe(port):
        s = Session(port)
        s.login()
        s.post(rid=s.rid + 50)
        return s.ended()
    pinned(*both(servers, observe), xmppd=True, prosody=False,
           why="XEP-0124 §17.2: item-not-found is a terminal condition")


def test_too_many_requests_at_once_is_policy_violation_unlike_prosody(servers):
    def observe(port):
        s = Session(port)
        s.login()
        held = s.start()
        s.start(rid=s.rid + 2)  # the one between is missing: both wait
        third = s.post(rid=s.rid + 3)
        terminated = not held.held(2.0) and held.response.terminal()[0] == "terminate"
        return third.terminal(), terminated
    pinned(*both(servers, observe), xmppd=(("terminate", "policy-violation"), True),
           prosody=(("terminate", "item-not-found"), False),
           why="XEP-0124 §11: more simultaneous requests than 'requests' is "
               "policy-violation, a terminal condition; Prosody takes the third as out of "
               "its window and keeps the session")


def test_a_request_without_rid_is_bad_request_unlike_prosody(servers):
    def observe(port):
        s = Session(port)
        s.login()
        response = s.raw(f"<body xmlns='{NS_HTTPBIND}' sid='{s.sid}'/>")
        return response.status, response.terminal() if response.status == 200 else None
    pinned(*both(servers, observe), xmppd=(200, ("terminate", "bad-request")),
           prosody=(500, None),
           why="XEP-0124 §17.2: bad-request; Prosody's handler fails on the missing rid")


def test_malformed_xml_in_a_session_is_bad_request_as_prosody(servers):
    def observe(port):
        s = Session(port)
        s.login()
        s.rid += 1
        return shape(s.raw(f"<body xmlns='{NS_HTTPBIND}' sid='{s.sid}' rid='{s.rid}'>"
                           "<message><body>x</message></body>"))
    ours, theirs = both(servers, observe)
    assert ours == theirs == (200, {"type": "terminate", "condition": "bad-request",
                                    "xmlns:stream": "declared"}, [])


def test_malformed_xml_in_a_session_ends_it_unlike_prosody(servers):
    def observe(port):
        s = Session(port)
        s.login()
        s.rid += 1
        s.raw(f"<body xmlns='{NS_HTTPBIND}' sid='{s.sid}' rid='{s.rid}'><message></x></body>")
        return s.ended()
    pinned(*both(servers, observe), xmppd=True, prosody=False,
           why="XEP-0124 §17.2: bad-request is a terminal condition")


def test_polling_too_fast_is_policy_violation_unlike_prosody(servers):
    def observe(port):
        s = Session(port)
        s.create(wait="0", hold="0")
        s.post()
        return s.post().terminal()
    pinned(*both(servers, observe), xmppd=("terminate", "policy-violation"),
           prosody=(None, None),
           why="XEP-0124 §12: two empty requests of a polling session closer than 'polling' "
               "seconds are policy-violation; Prosody has no polling sessions")


def test_a_pause_is_answered_at_once_unlike_prosody(servers):
    def observe(port):
        s = Session(port)
        s.login(wait="3")
        pause = s.start(pause="30")
        response = pause.result()
        return response.body.get("type"), pause.took < 2.0
    pinned(*both(servers, observe), xmppd=(None, True), prosody=(None, False),
           why="XEP-0124 §10: a pause request is answered at once (Prosody ignores 'pause' "
               "and holds it for 'wait')")
