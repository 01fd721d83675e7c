"""XMPP over BOSH (XEP-0124, XEP-0206) at ``/http-bind``, the path Prosody uses.

A BOSH client has no connection of its own: it POSTs ``<body/>`` wrappers,
each carrying zero or more stanzas, and the server answers each with a
``<body/>`` carrying what it has for the client. To push without polling the
server *holds* a request (``hold``, at most one, as Prosody) until it has
something to say or ``wait`` seconds passed; the client keeps one more in
flight (``requests`` = hold + 1) to send with. Each request has an ``rid``,
one more than the last; a ``sid`` names the session.

A BOSH session is an ordinary client session: the same
:class:`~xmppd.streams.negotiation.ClientSession` (features, SASL, bind,
stanza checks, ``[c2s] auth_timeout``, ``max_output_buffer``) as a TCP or
WebSocket client; :class:`BoshSession` is its framing, and turns requests
into the session's ``stream_opened`` / ``element_received`` /
``stream_closed`` and its output into responses. The session is created by
the first request (``stream_opened`` with its ``to`` and ``xmpp:version``),
restarted after SASL by the next request (``xmpp:restart='true'``, as the
client should send it), and closed by ``type='terminate'``.

As Prosody 0.12's mod_bosh answers, stanza for stanza
(``tests/e2e/test_bosh_differential.py`` checks it against a live one):

* the creation response carries ``sid``, ``wait`` (the client's, at most
  ``[http] bosh_max_wait``), ``inactivity``, ``polling``, ``requests``,
  ``hold``, ``ver``, ``from``, ``authid`` (the sid), ``secure='true'``,
  ``xmpp:version='1.0'`` and the stream features; every response is
  ``<body xmlns='…httpbind' xmlns:stream='…' sid='…'>`` with its stanzas, each
  declaring ``jabber:client``; ``Content-Type: text/xml; charset=utf-8``,
  status 200 (errors are terminal binding conditions in the body);
* an unknown ``sid`` is ``item-not-found`` (without the ``stream`` prefix, as
  every ``item-not-found``); a body that is not ``<body/>`` in the BOSH
  namespace is ``bad-request``; a creation request without ``to`` is
  ``improper-addressing``; one without a valid ``rid`` or ``wait`` is
  ``bad-request``; malformed XML in a known session's body is
  ``bad-request``;
* a request whose ``rid`` is one further than expected waits for the missing
  one, and both are processed in order; a ``rid`` seen already gets the
  response it had (the last ``requests`` responses are kept); a repeated
  ``rid`` still held takes over the held request;
* the first request after SASL's ``<success/>`` restarts the stream, with or
  without ``xmpp:restart``; the features come in its response;
* a stream error is ``condition='remote-stream-error'`` with the
  ``<stream:error/>`` inside; at a close, what waited for the client goes in
  the terminate body; a GET is a page saying what the endpoint is; CORS
  headers and preflights are the HTTP service's, as Prosody's route options.

Where the XEPs (or RFC 9110) are explicit and Prosody is not, we follow them
(the differential test pins each of these, with its reason):

* ``ver`` is ours (1.6) or the client's, whichever is lower (XEP-0124 §7.2;
  Prosody: 1.6 always); ``hold`` is the client's if smaller than one (§7.2:
  never more than asked), and ``requests`` one more;
* ``maxpause`` is announced and ``pause`` (§10) supported: the held requests
  are answered at once, and the session may be silent that long (at most
  :data:`MAX_PAUSE` seconds) instead of ``inactivity``;
* ``xmpp:restartlogic='true'`` is announced (XEP-0206 §4); stanzas in the
  restart request are ignored (§5: it should be empty; Prosody processes
  them);
* a ``to`` this server does not serve is ``host-unknown`` (§17.2; Prosody
  says ``improper-addressing``); ``from`` is the domain as served (Prosody
  echoes the ``to`` as written, and offers no features to ``LocalHost``);
* a body that is not XML at all is ``bad-request`` (Prosody:
  ``item-not-found``); a request of a session without ``rid`` is
  ``bad-request`` (Prosody: HTTP 500);
* a ``rid`` beyond the window (more than ``requests`` past the last one
  processed), or an old one whose response is no longer kept, ends the
  session with ``item-not-found``, and malformed XML with ``bad-request``
  (§17.2: terminal conditions; Prosody answers so but keeps the session);
* more new requests open at once than ``requests`` (one more for a pause or
  terminate) is ``policy-violation`` (§11; Prosody answers the held one and
  takes the third as out of its window); in a polling session
  (``hold='0'``), two empty requests closer than ``polling`` seconds whose
  first got nothing are ``policy-violation`` too (§12);
* a client's terminate is acknowledged on the oldest open request
  (``type='terminate'``), every other gets an empty body (§13; Prosody
  answers the terminate request with a second terminate body);
* a legacy client (no ``ver`` in its creation request) gets the HTTP errors
  400, 403 and 404 instead of ``bad-request``, ``policy-violation`` and
  ``item-not-found`` (§17.1-17.2; Prosody: 200 always);
* a method other than GET, HEAD, POST and OPTIONS is 405 with ``Allow``
  (RFC 9110 §15.5.6; Prosody: 404);
* ``[http] bosh_max_sessions`` bounds the sessions (Prosody has no bound); a
  new one beyond is refused ``remote-connection-failed``: the connection
  manager cannot open a stream to the server for it; a stanza over
  ``[server] max_stanza_size`` is the stream error ``policy-violation``, as
  over TCP.

A session ends when the client terminates it, on a terminal error, on a
stream error, or after ``[http] bosh_max_inactivity`` seconds without a
request (the XEP's inactivity: nothing is sent, a later request finds no
session). What was waiting for the client then goes where a TCP client's
would (its other resources, offline storage), through the session's
``undelivered``. A session closed while no request is held keeps its
terminate body for the client's next request, for ``inactivity`` seconds.

Backpressure, as over TCP (where a session that stops reading leaves the
client's bytes in its socket): output waits for the client's next request
(at most ``[c2s] max_output_buffer``; past a quarter of it, the session stops
reading from its client and from whoever fills it). A session that does not
read keeps the payloads of the requests it gets, in order, and hands them
over once it reads again; when they pass ``[http] bosh_max_input_buffer``
bytes, its next requests are left unread and unanswered (even past
``wait``: a request not read yet is not held), so a client that sends faster
than it (or its recipient) fetches waits, with nothing lost, instead of
being cut off; a recipient that never fetches ends at ``inactivity``, which
lets it go on. A request the client's own waiting output needs
as its carrier is read all the same (up to twice the bound). A response is
always written before anyone its buffer held back goes on, so what they send
goes out on a later response, in order.

Encryption: as for WebSocket (:func:`xmppd.http.websocket.client_origin`):
secure over HTTPS and from loopback, else not; no STARTTLS in BOSH.
"""

from __future__ import annotations

import collections
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable
from xml.sax.saxutils import escape, quoteattr

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server as webserver
from twisted.words.xish import domish

from xmppd import ns
from xmppd.http.websocket import client_origin
from xmppd.streams.negotiation import ClientSession
from xmppd.xml.stream import HardenedElementStream, StreamProblem

if TYPE_CHECKING:
    from xmppd.server import XMPPServer

PATH = "/http-bind"
#: the BOSH version we answer with (Prosody's)
VERSION = "1.6"
#: requests held at once at most (Prosody's, fixed): ``requests`` is one more
MAX_HOLD = 1
#: the longest pause (XEP-0124 §10) a client may ask for, in seconds
MAX_PAUSE = 300
#: the largest rid (XEP-0124 §14.1: 2**53 - 1)
MAX_RID = (1 << 53) - 1

CONTENT_TYPE = b"text/xml; charset=utf-8"
#: what a legacy client (no 'ver' in its creation request) gets instead of
#: these terminal conditions: the HTTP errors they supersede (XEP-0124 §17.1)
LEGACY_STATUS = {"bad-request": 400, "policy-violation": 403, "item-not-found": 404}
#: the methods of the endpoint (any other is 405)
METHODS = (b"GET", b"HEAD", b"POST")

_PAGE = (b"<!DOCTYPE html><html><head><meta charset='utf-8'><title>XMPP over BOSH</title>"
         b"</head><body><p>This is xmppd's BOSH endpoint (XEP-0124, XEP-0206): point an "
         b"XMPP client's BOSH URL here.</p></body></html>")

_BODY_OPEN = f"<body xmlns='{ns.HTTPBIND}' xmlns:stream='{ns.STREAMS}'"


def register(server: XMPPServer) -> Callable[[], None]:
    """Mount the endpoint on the server's HTTP service (when ``bosh`` is
    among ``[http] endpoints``); returns the unmount function."""
    # A body holds a few stanzas at most: one of the largest allowed, and
    # room for its <body/> wrapper (it is parsed whole, before the session
    # is even looked up, so [http] max_body_size would be far too much).
    return server.http.add_route(PATH, BoshResource(server), endpoint="bosh",
                                 link_rel=ns.ALT_CONNECTIONS_XBOSH,
                                 max_body=server.config.server["max_stanza_size"] + 16384)


def terminate(condition: str | None = None, stream: bool = True, payload: str = "") -> bytes:
    """A ``<body type='terminate'/>`` with ``condition`` (Prosody leaves the
    ``stream`` prefix out of its ``item-not-found``)."""
    text = f"<body xmlns='{ns.HTTPBIND}' type='terminate'"
    if stream:
        text += f" xmlns:stream='{ns.STREAMS}'"
    if condition:
        text += f" condition='{condition}'"
    text += f">{payload}</body>" if payload else "/>"
    return text.encode("utf-8")


def stream_error_body(condition: str, text: str | None) -> bytes:
    """The terminate body of a stream error (XEP-0206 §8, as Prosody writes it)."""
    inner = f"<{condition} xmlns='{ns.STREAM_ERRORS}'/>"
    if text:
        inner += f"<text xmlns='{ns.STREAM_ERRORS}'>{escape(text)}</text>"
    return terminate("remote-stream-error", payload=f"<stream:error>{inner}</stream:error>")


# -- the request body ---------------------------------------------------------------------


class BadBody(Exception):
    """The request is not one ``<body/>`` of well-formed, allowed XML.

    ``root`` is the body's element when its start tag was read (its ``sid``
    then names the session that sent the rest), else None."""

    def __init__(self, problem: StreamProblem, root: domish.Element | None):
        super().__init__(problem.condition, problem.text)
        self.problem = problem
        self.root = root


@dataclass
class Body:
    """One request's ``<body/>``: its attributes and its payloads."""

    root: domish.Element
    children: list[domish.Element] = field(default_factory=list)
    #: the request's size in bytes (what its payloads cost while they wait)
    size: int = 0

    def get(self, name: str, uri: str | None = None) -> str | None:
        return self.root.attributes.get((uri, name) if uri else name)

    @property
    def empty(self) -> bool:
        return not self.children

    @property
    def terminate(self) -> bool:
        return self.get("type") == "terminate"

    @property
    def restart(self) -> bool:
        return (self.get("restart", ns.XBOSH) or "").lower() in ("true", "1")


def parse_body(data: bytes, max_stanza_size: int) -> Body:
    """Parse a request with the hardened parser of client streams (RFC 6120
    §11's restrictions, ``max_stanza_size`` per stanza, nesting depth): the
    ``<body/>`` is the stream's root, its children the stanzas. Children that
    inherit the BOSH namespace are ``jabber:client`` (XEP-0206 §3).

    :raises BadBody: for anything else.
    """
    parser = HardenedElementStream(max_stanza_size)
    found: dict[str, Any] = {"root": None, "ended": False}
    children: list[domish.Element] = []
    parser.DocumentStartEvent = lambda root: found.__setitem__("root", root)
    parser.ElementEvent = children.append
    parser.DocumentEndEvent = lambda: found.__setitem__("ended", True)
    try:
        parser.parse(data)
    except StreamProblem as e:
        raise BadBody(e, found["root"]) from None
    except domish.ParserError as e:
        raise BadBody(StreamProblem("policy-violation", str(e)), found["root"]) from None
    root = found["root"]
    if root is None or not found["ended"]:
        raise BadBody(StreamProblem("not-well-formed", "an incomplete <body/>"), root)
    if (root.uri, root.name) != (ns.HTTPBIND, "body"):
        raise BadBody(StreamProblem("invalid-namespace", "not a BOSH <body/>"), None)
    for child in children:
        _as_client(child)
    return Body(root, children, len(data))


def _as_client(element: domish.Element) -> None:
    """Elements in the BOSH namespace by inheritance are ``jabber:client``."""
    stack = [element]
    while stack:
        e = stack.pop()
        if e.uri == ns.HTTPBIND:
            e.uri = ns.CLIENT
        if e.defaultUri == ns.HTTPBIND:
            e.defaultUri = ns.CLIENT
        stack.extend(c for c in e.children if isinstance(c, domish.Element))


def _integer(text: str | None, maximum: int = MAX_RID) -> int | None:
    if text is None or not (text.strip().isascii() and text.strip().isdigit()):
        return None
    value = int(text)
    return value if value <= maximum else None


def _version(client: str | None) -> str:
    """XEP-0124 §7.2: ours, or the client's if lower (each number compared
    as an integer); ours when it names none we can read."""
    ours = tuple(int(n) for n in VERSION.split("."))
    major, _, minor = (client or "").strip().partition(".")
    if not (major.isascii() and minor.isascii() and major.isdigit() and minor.isdigit()):
        return VERSION
    theirs = (int(major), int(minor))
    return f"{theirs[0]}.{theirs[1]}" if theirs < ours else VERSION


# -- the HTTP side --------------------------------------------------------------------------


class BoshResource(resource.Resource):
    """``/http-bind``: POSTed bodies to their sessions, GET a page.

    Holds the sessions by ``sid`` (at most ``[http] bosh_max_sessions``)."""

    isLeaf = True
    log = Logger()

    def __init__(self, server: XMPPServer):
        super().__init__()
        self.xmpp = server  # (Resource.server is Twisted Web's)
        options = server.config.http
        self.max_inactivity: int = options["bosh_max_inactivity"]
        self.max_wait: int = options["bosh_max_wait"]
        self.max_polling: int = options["bosh_max_polling"]
        self.max_sessions: int = options["bosh_max_sessions"]
        self.max_input: int = options["bosh_max_input_buffer"]
        self.sessions: dict[str, BoshSession] = {}

    def render(self, request: webserver.Request) -> bytes | int:
        """GET, HEAD and POST (OPTIONS is the HTTP service's preflight); any
        other method is 405 with ``Allow`` (RFC 9110 §15.5.6)."""
        if request.method not in METHODS:
            request.setResponseCode(405)
            request.setHeader(b"allow", b"GET, HEAD, POST, OPTIONS")
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"BOSH: POST a <body/>\n"
        return super().render(request)

    def render_GET(self, request: webserver.Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return _PAGE

    def render_POST(self, request: webserver.Request) -> bytes | int:
        request.setHeader(b"content-type", CONTENT_TYPE)
        counters = self.xmpp.counters
        data = request.content.read()
        try:
            body = parse_body(data, self.xmpp.config.server["max_stanza_size"])
        except BadBody as e:
            root = e.root
            sid = root.getAttribute("sid") if root is not None \
                and (root.uri, root.name) == (ns.HTTPBIND, "body") else None
            session = self.sessions.get(sid) if sid else None
            if session is not None and not session.closed:
                # The rest of a known session's body was bad: a stream error,
                # as the same bytes over TCP would be.
                return session.bad_body(request, e.problem)
            counters["bosh bad request"] += 1
            self.log.debug("bosh {client}: not a BOSH body ({problem})",
                           client=_client(request), problem=e.problem.text)
            return terminate("bad-request")
        sid = body.get("sid")
        if sid is None:
            return self._create(request, body)
        session = self.sessions.get(sid)
        if session is None:
            counters["bosh unknown sid"] += 1
            self.log.debug("bosh {client}: unknown sid", client=_client(request))
            return terminate("item-not-found", stream=False)
        return session.request(request, body)

    def _create(self, request: webserver.Request, body: Body) -> bytes | int:
        """A session creation request (XEP-0124 §7.1, XEP-0206 §5)."""
        rid = _integer(body.get("rid"))
        wait = _integer(body.get("wait"))
        hold = _integer(body.get("hold") or str(MAX_HOLD))
        legacy = body.get("ver") is None
        if rid is None or wait is None or hold is None:
            if legacy:  # XEP-0124 §17.2: the HTTP error a legacy client understands
                request.setResponseCode(LEGACY_STATUS["bad-request"])
                return b""
            return terminate("bad-request")
        to = body.get("to")
        if not to:
            return terminate("improper-addressing")
        if to.lower().rstrip(".") not in self.xmpp.router.hosts:
            self.xmpp.counters["bosh host unknown"] += 1
            return terminate("host-unknown")
        if len(self.sessions) >= self.max_sessions:
            self.xmpp.counters["bosh sessions refused"] += 1
            self.log.warn("bosh: {count} sessions ([http] bosh_max_sessions): refusing a new one",
                          count=len(self.sessions))
            return terminate("remote-connection-failed")
        address, port, secure, channel = client_origin(request)
        session = BoshSession(self, rid, min(wait, self.max_wait), min(hold, MAX_HOLD),
                              address, port, secure, channel.replace("WebSocket", "BOSH"),
                              body.get("version", ns.XBOSH) or "1.0",
                              ver=_version(body.get("ver")), legacy=legacy)
        self.sessions[session.sid] = session
        self.xmpp.counters["bosh sessions"] += 1
        return session.created(request, body)

    def forget(self, session: BoshSession) -> None:
        if self.sessions.get(session.sid) is session:
            del self.sessions[session.sid]


def _client(request: webserver.Request) -> str:
    address = request.getClientAddress()
    return str(getattr(address, "host", None) or address)


# -- the framing -----------------------------------------------------------------------------


@dataclass(eq=False)
class _Held:
    """A processed request waiting for its response."""

    rid: int
    http: webserver.Request | None
    timer: IDelayedCall | None = None


class BoshSession:
    """One BOSH session: the framing of one :class:`ClientSession` (see the
    module docstring and :mod:`xmppd.streams.negotiation`)."""

    log = Logger()
    shape = (ns.CLIENT, "bosh")
    starttls = False
    _prefixes = {ns.STREAMS: "stream"}

    def __init__(self, owner: BoshResource, rid: int, wait: int, hold: int, address: str,
                 port: int | str, secure: bool, channel: str, version: str,
                 ver: str = VERSION, legacy: bool = False):
        server = owner.xmpp
        self.owner = owner
        self.server = server
        self.clock = server.clock
        self.sid = str(uuid.uuid4())
        self.address, self.peer = address, f"{address}:{port}"
        self.secure = secure
        self.channel = channel
        self.closed = False
        self.domain: str | None = None
        self.wait = wait
        self.hold = hold
        self.requests = hold + 1
        self.inactivity = owner.max_inactivity
        self.polling = owner.max_polling
        self.version = version  # XMPP's (xmpp:version), for the stream
        #: BOSH's, as answered (XEP-0124 §7.2), and whether the client gave none
        self.ver = ver
        self.legacy = legacy
        c2s = server.config.c2s
        self.max_output: int = c2s["max_output_buffer"]
        self.max_input = owner.max_input
        #: the rid of the last request processed (in order)
        self.rid = rid - 1
        #: requests received ahead of a missing one: rid → (HTTP request, body)
        self._pending: dict[int, tuple[webserver.Request, Body]] = {}
        #: processed requests waiting for output, oldest first
        self._held: collections.deque[_Held] = collections.deque()
        #: the last responses, by rid (for a client that lost one)
        self._responses: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        #: output not yet taken by a response: (bytes, stanza kind or None)
        self._buffer: list[tuple[bytes, str | None]] = []
        self._buffer_bytes = 0
        self._congested = False
        self._drain_waiters: list[defer.Deferred] | None = None
        #: the next response is the session creation response
        self._creating = True
        #: a request's payloads are being handed to the session: no response yet
        self._processing = False
        #: SASL succeeded: the next request restarts the stream
        self._restart_expected = False
        #: the session does not read (see pause_reading); what it would read waits
        #: in _input: (stream generation, kind, value, bytes it accounts for)
        self._paused = False
        self._input: collections.deque[tuple[int, str, Any, int]] = collections.deque()
        self._input_bytes = 0
        self._running = False  # _run is taking requests (it is not entered again)
        self._draining = False  # resume_reading is handing _input over
        self._generation = 0  # stream restarts so far (a restart voids older payloads)
        self._inactive: IDelayedCall | None = None
        self._pause: int | None = None  # the inactivity period a pause asked for
        #: the last empty request of a polling session, and whether its answer was empty
        self._last_poll: float | None = None
        self._last_answer_empty = False
        #: a closed session's terminate body (and HTTP status), for the client's next request
        self._final: bytes | None = None
        self._final_status = 200
        self.session = ClientSession(server, self)

    # -- requests ---------------------------------------------------------------------------

    def created(self, http: webserver.Request, body: Body) -> bytes | int:
        """The creation request: the session opens its stream (features go out
        in the creation response)."""
        self.log.info("bosh {peer} new session ({channel})", peer=self.peer, channel=self.channel)
        self.session.connected()
        self._pending[self.rid + 1] = (http, body)
        self._watch(http, self.rid + 1)
        self._run(opening=body)
        return webserver.NOT_DONE_YET

    def request(self, http: webserver.Request, body: Body) -> bytes | int:
        """A request of this session (``sid`` matched)."""
        if self.closed:
            # Closed while no request was held: the client learns how now.
            self.owner.forget(self)
            self._cancel_inactivity()
            if self._final_status != 200:
                http.setResponseCode(self._final_status)
            return self._final if self._final is not None else terminate()
        rid = _integer(body.get("rid"))
        if rid is None:
            return self._terminate("bad-request", http)
        self._cancel_inactivity()
        cached = self._responses.get(rid)
        if cached is not None:
            # XEP-0124 §14.3: a client that lost a response gets it again.
            self.server.counters["bosh response replayed"] += 1
            self._inactive_if_idle()
            return cached
        if rid <= self.rid:
            entry = next((e for e in self._held if e.rid == rid), None)
            if entry is None:
                return self._terminate("item-not-found", http)
            self._replace(entry.http)  # the same rid again: this one waits instead
            entry.http = http
            self._watch(http, rid)
            return webserver.NOT_DONE_YET
        if rid in self._pending:
            old, first = self._pending[rid]
            self._replace(old)
            self._pending[rid] = (http, first)  # (its payloads were the first's)
            self._watch(http, rid)
            return webserver.NOT_DONE_YET
        extra = 1 if body.terminate or body.get("pause") is not None else 0
        if len(self._held) + len(self._pending) >= self.requests + extra:
            self.server.counters["bosh too many requests"] += 1
            return self._terminate("policy-violation", http)
        if rid > self.rid + self.requests + extra:
            return self._terminate("item-not-found", http)
        self._pending[rid] = (http, body)
        self._watch(http, rid)
        self._run()
        return webserver.NOT_DONE_YET

    def bad_body(self, http: webserver.Request, problem: StreamProblem) -> bytes:
        """The body's start tag named this session, the rest was not allowed:
        a syntax error of the binding element is the terminal ``bad-request``
        (XEP-0124 §17.2, as Prosody answers it); a stanza over ``[server]
        max_stanza_size`` is the stream error ``policy-violation``, as over
        TCP."""
        self.server.counters["bosh bad request"] += 1
        if problem.condition != "policy-violation":
            self.log.info("bosh {peer}: bad XML in a request ({text})", peer=self.peer,
                          text=problem.text or problem.condition)
            return self._terminate("bad-request", http)
        self.stream_error(problem.condition, problem.text)
        final = self._final or stream_error_body(problem.condition, problem.text)
        self.owner.forget(self)
        self._cancel_inactivity()
        return final

    def _replace(self, http: webserver.Request | None) -> None:
        """A request the client sent again: the old one gets an empty body."""
        if http is not None and not _gone(http):
            _respond(http, self._wrap(b""))

    def _watch(self, http: webserver.Request, rid: int) -> None:
        http.notifyFinish().addErrback(self._lost, http, rid)

    def _lost(self, _failure: Failure, http: webserver.Request, rid: int) -> None:
        """A request's connection closed before its response: a held one is
        answered (empty) into the response cache, so that the client may
        send it again; an unprocessed one waits on, without a connection."""
        entry = next((e for e in self._held if e.rid == rid and e.http is http), None)
        if entry is not None:
            entry.http = None
            if not self.closed:
                self._answer(entry, b"")
                self._inactive_if_idle()
        elif self._pending.get(rid, (None,))[0] is http:
            self._pending[rid] = (None, self._pending[rid][1])
            if not self.closed:
                self._inactive_if_idle()

    def _run(self, opening: Body | None = None) -> None:
        """Process the requests that are next in rid order, as far as the
        session reads (see :meth:`_readable`)."""
        if self._running:
            return  # (re-entered from a request being processed: the loop goes on)
        self._running = True
        try:
            while not self.closed and (self.rid + 1) in self._pending:
                http, body = self._pending[self.rid + 1]
                if not self._readable(body):
                    break
                self.rid += 1
                del self._pending[self.rid]
                self._process(self.rid, http, body, opening)
                opening = None
        finally:
            self._running = False

    def _readable(self, body: Body) -> bool:
        """Whether the next request may be read now: its payloads join those
        the session has not taken yet (it reads nothing while its own output
        waits for the client, or a recipient's output waits for its client,
        or its handlers' storage work is behind).

        As over TCP, where the socket is not read, a request whose payloads
        would take that over ``[http] bosh_max_input_buffer`` bytes is left
        unread (unanswered: the client cannot send more than ``requests`` at
        once, so it waits) until the session has taken what waits. One
        exception: a request the client's own output waits for (it is
        congested and no request is held to carry it) is read all the same,
        since answering it is what lets the session read again; a client
        that has sent more than twice the bound by then is over its limit."""
        if not self._input or not body.children:
            return True
        if self._input_bytes + body.size <= self.max_input:
            return True
        if self._congested and not self._held:
            if self._input_bytes <= 2 * self.max_input:
                return True
            self.server.counters["bosh input overflow"] += 1
            self.stream_error("policy-violation", "too many stanzas waiting to be processed: "
                                                  "the client does not take its answers")
            return False
        self.server.counters["bosh request unread"] += 1
        return False

    def _process(self, rid: int, http: webserver.Request | None, body: Body,
                 opening: Body | None) -> None:
        now = self.clock.seconds()
        if self.hold == 0 and body.empty and opening is None and not body.terminate \
                and body.get("pause") is None and not body.restart:
            last, self._last_poll = self._last_poll, now
            if last is not None and self._last_answer_empty and now - last < self.polling:
                # XEP-0124 §12: polling faster than allowed.
                self.server.counters["bosh polling too fast"] += 1
                self._held.append(_Held(rid, http))
                self._terminate("policy-violation")
                return
        self._pause = None
        self._held.append(_Held(rid, http))
        pause = _integer(body.get("pause"), MAX_PAUSE * 1000)
        generation = self._generation
        entries: list[tuple[str, Any]] = []
        children = body.children
        if opening is not None:
            entries.append(("open", opening.get("to")))
        elif self._restart_expected:
            # XEP-0206 §5: the request after SASL's <success/> says
            # xmpp:restart='true', and its stanzas (it should carry none) are
            # ignored. Any other request restarts the stream all the same,
            # as Prosody has it (its stanzas then go on the new stream).
            self._restart_expected = False
            entries.append(("open", body.get("to")))
            if body.restart and children:
                self.server.counters["bosh stanzas in a restart ignored"] += 1
                children = []
        entries.extend(("element", child) for child in children)
        if body.terminate:
            entries.append(("close", None))
        # What the payloads cost while they wait is released with the last.
        size = body.size if children else 0
        outer, self._processing = self._processing, True
        try:
            for i, (kind, value) in enumerate(entries):
                self._deliver(generation, kind, value, size if i == len(entries) - 1 else 0)
        finally:
            self._processing = outer
        if self.closed:
            return
        if pause is not None:
            # XEP-0124 §10: every held request answered now (without payloads),
            # and the session may be silent this long.
            self._pause = min(pause, MAX_PAUSE)
            while self._held:
                self._answer(self._held[0], b"", cache=False)
            self._inactive_if_idle()
            return
        self._flush()
        for entry in self._held:
            if entry.timer is None:
                entry.timer = self.clock.callLater(self.wait, self._waited, entry)

    def _waited(self, entry: _Held) -> None:
        """``wait`` seconds without anything to send: an empty response."""
        entry.timer = None
        if entry in self._held and not self.closed:
            self._answer(entry)
            self._inactive_if_idle()

    # -- what the client sends, to the session ------------------------------------------------

    def _deliver(self, generation: int, kind: str, value: Any, size: int = 0) -> None:
        """To the session now, or after what waits (in order) while it does
        not read; ``size`` bytes are accounted until then."""
        if self._paused or self._input:
            self._input.append((generation, kind, value, size))
            self._input_bytes += size
            return
        self._hand(generation, kind, value)

    def _hand(self, generation: int, kind: str, value: Any) -> None:
        if self.closed:
            return
        session = self.session
        if kind == "open":
            session.stream_opened(value, self.version)
        elif generation != self._generation:
            return  # sent before the stream restarted (RFC 6120 §6.4.6)
        elif kind == "element":
            session.element_received(value)
        else:
            session.stream_closed()

    def pause_reading(self) -> None:
        """Take no more payloads from requests: they wait, and past the bound
        the requests themselves wait unread (see :meth:`_readable`)."""
        self._paused = True

    def resume_reading(self) -> None:
        """Hand over what waits, in order, then read the requests left
        unread. What the session sends meanwhile goes out together, on the
        oldest held request (as a request's payloads' answers do)."""
        self._paused = False
        if self._draining or self.closed:
            return  # (the loop below, further up the stack, goes on)
        self._draining = True
        outer, self._processing = self._processing, True
        try:
            waiting = self._input
            while waiting and not self._paused and not self.closed:
                generation, kind, value, size = waiting.popleft()
                self._input_bytes -= size
                self._hand(generation, kind, value)
        finally:
            self._processing = outer
            self._draining = False
        if self.closed or outer:
            return
        self._flush()
        self._run()

    # -- output -----------------------------------------------------------------------------

    def serialize(self, element: domish.Element) -> str:
        """Each element declares its namespace (``jabber:client`` for stanzas)
        and the ``stream`` prefix, as over WebSocket."""
        return element.toXml(prefixes=self._prefixes)

    def send(self, element: domish.Element | str) -> None:
        if self.closed:
            if not isinstance(element, str):
                self.session.undelivered(element.name, element)
            return
        if isinstance(element, str):
            data, kind = element.encode("utf-8"), None
        else:
            data, kind = self.serialize(element).encode("utf-8"), element.name
        self.server.reclaimer.account(len(data))
        self._buffer.append((data, kind))
        self._buffer_bytes += len(data)
        if self._buffer_bytes > self.max_output:
            self.server.counters["bosh output overflow"] += 1
            self.stream_error("policy-violation", "too much output waiting: the client does not "
                                                  "ask for it")
            return
        if self._buffer_bytes > self.max_output // 4:
            self._congested = True
            self.session.congested()
            if self._pending and not self._held and not (self._processing or self._draining):
                self._run()  # a request left unread may carry it (see _readable)
        self._flush()

    def _flush(self) -> None:
        """Answer the oldest held request with what waits, and any request
        held beyond ``hold`` (empty)."""
        if self._processing or self.closed:
            return
        if self._buffer and self._held:
            self._answer(self._held[0])
        while len(self._held) > self.hold and not self.closed:
            self._answer(self._held[0])
        self._inactive_if_idle()

    def _taken(self) -> None:
        """The buffer went out on a response: whoever waited for it goes on
        (the session reads again, producers of much output send the next
        batch). Called once the response is written, never while one is
        being made: what they send goes on a later response, in order."""
        if self.closed:
            return
        if self._congested:
            self._congested = False
            self.session.decongested()
        waiters, self._drain_waiters = self._drain_waiters, None
        for d in waiters or ():
            d.callback(None)

    def _wrap(self, payload: bytes) -> bytes:
        head = f"{_BODY_OPEN} sid='{self.sid}'"
        if self._creating:
            self._creating = False
            head += (f" wait='{self.wait}' inactivity='{self.inactivity}' "
                     f"polling='{self.polling}' requests='{self.requests}' hold='{self.hold}' "
                     f"maxpause='{MAX_PAUSE}' ver='{self.ver}' from={quoteattr(self.domain or '')} "
                     f"authid='{self.sid}' secure='true' xmlns:xmpp='{ns.XBOSH}' "
                     f"xmpp:version='1.0' xmpp:restartlogic='true'")
        return head.encode("utf-8") + (b">" + payload + b"</body>" if payload else b"/>")

    def _answer(self, entry: _Held, payload: bytes | None = None, cache: bool = True) -> None:
        """Respond to a held request (which leaves the held ones) with
        ``payload``, or with everything the buffer holds."""
        if entry.timer is not None and entry.timer.active():
            entry.timer.cancel()
        entry.timer = None
        try:
            self._held.remove(entry)
        except ValueError:
            pass
        taken = payload is None and bool(self._buffer)
        if payload is None:
            payload = b"".join(d for d, _ in self._buffer)
            self._buffer, self._buffer_bytes = [], 0
        body = self._wrap(payload)
        self._last_answer_empty = not payload
        if cache:
            self._responses[entry.rid] = body
            while len(self._responses) > self.requests:
                self._responses.popitem(last=False)
        if entry.http is not None:
            _respond(entry.http, body)
            entry.http = None
        if taken:
            self._taken()

    def drained(self) -> defer.Deferred:
        if not self._buffer or self.closed:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        if self._drain_waiters is None:
            self._drain_waiters = []
        self._drain_waiters.append(d)
        return d

    # -- the session's requests ------------------------------------------------------------

    def open_stream(self) -> None:
        """The creation response carries the stream's attributes (see
        :meth:`_wrap`); a restart's response is a plain body (XEP-0206 §5)."""

    def restart(self) -> None:
        self._restart_expected = True
        self._generation += 1

    def start_tls(self) -> bool:
        return False

    def bound(self) -> None:
        """Nothing to start: held requests are BOSH's keep-alive."""

    def waiting_for(self) -> str:
        return "a BOSH request"

    def stream_error(self, condition: str, text: str | None = None) -> None:
        if self.closed:
            return
        self.log.info("bosh {peer}: stream error {condition}: {text}", peer=self.peer,
                      condition=condition, text=text or "")
        self._end(stream_error_body(condition, text))

    def close(self) -> None:
        if self.closed:
            return
        if self.session.jid is not None:
            self.log.info("bosh {peer} closing ({who})", peer=self.peer,
                          who=self.session.jid.full())
        self._end(terminate(), graceful=True)

    def _terminate(self, condition: str, http: webserver.Request | None = None) -> bytes:
        """A terminal binding error (XEP-0124 §17.2): the session ends; every
        open request gets the error, and so does ``http`` (the request that
        caused it, not yet among them) as the return value. ``item-not-found``
        leaves the ``stream`` prefix out, as Prosody writes it. A legacy client
        gets the HTTP error the condition supersedes instead (§17.1)."""
        self.log.info("bosh {peer}: terminal error {condition}", peer=self.peer,
                      condition=condition)
        status = LEGACY_STATUS.get(condition) if self.legacy else None
        body = b"" if status else terminate(condition, stream=condition != "item-not-found")
        self._end(body, status=status or 200)
        self.owner.forget(self)
        self._cancel_inactivity()
        if http is not None and status:
            http.setResponseCode(status)
        return body

    def _end(self, final: bytes, lost: bool = False, status: int = 200,
             graceful: bool = False) -> None:
        """Close: unbind, what waits for the client to its other resources or
        storage, ``final`` (with HTTP ``status``) to every open request.
        ``lost``: the client went away (no request in time), which lets a
        stream management session hibernate instead (XEP-0198); it is then no
        longer this one's.

        ``graceful``: a close, not an error (the client's terminate, or the
        session closing its stream). As XEP-0124 §13 has it, the oldest open
        request then gets the terminate body and every other one an empty
        body; what waits in the buffer goes out in that terminate body (as
        Prosody sends it, and as a TCP stream writes what it has before its
        closing tag), if a request is open to carry it."""
        self.session.closing(lost=lost)
        session = self.session
        self.closed = True
        self._cancel_inactivity()
        buffered, self._buffer, self._buffer_bytes = self._buffer, [], 0
        self._congested = False
        for entry in self._held:
            if entry.timer is not None and entry.timer.active():
                entry.timer.cancel()
        open_ = [e.http for e in self._held if e.http is not None and not _gone(e.http)]
        open_ += [http for _rid, (http, _body) in sorted(self._pending.items())
                  if http is not None and not _gone(http)]
        self._held.clear()
        self._pending.clear()
        self._responses.clear()
        if graceful and open_:
            payload = b"".join(data for data, _kind in buffered)
            buffered = []
            if payload:
                final = (f"{_BODY_OPEN} sid='{self.sid}' type='terminate'>".encode("utf-8")
                         + payload + b"</body>")
            _respond(open_[0], final, status)
            for http in open_[1:]:
                _respond(http, self._empty(), status)
        else:
            for http in open_:
                _respond(http, final, status)
        for data, kind in buffered:
            if kind is not None:
                session.undelivered(kind, data)
        self._unread_messages()
        waiters, self._drain_waiters = self._drain_waiters, None
        for d in waiters or ():
            d.callback(None)
        if open_:
            self.owner.forget(self)
        else:
            # Nobody to tell now: the next request learns it, if it comes soon.
            self._final, self._final_status = final, status
            self._inactive = self.clock.callLater(self.inactivity, self.owner.forget, self)
        session.ended()

    def _empty(self) -> bytes:
        return f"{_BODY_OPEN} sid='{self.sid}'/>".encode("utf-8")

    def _unread_messages(self) -> None:
        """The session ends with payloads it never took: as over TCP (where
        they were read but not processed), the messages among them still go
        where they were sent; the rest (and the requests not read) are
        dropped. Called after :meth:`ClientSession.closing`, before
        :meth:`ClientSession.ended`."""
        waiting, self._input, self._input_bytes = self._input, collections.deque(), 0
        session = self.session
        for generation, kind, value, _size in waiting:
            if kind == "element" and generation == self._generation \
                    and session.jid is not None and value.name == "message" \
                    and value.uri == ns.CLIENT:
                session.element_received(value)

    # -- inactivity ---------------------------------------------------------------------------

    def _cancel_inactivity(self) -> None:
        if self._inactive is not None and self._inactive.active():
            self._inactive.cancel()
        self._inactive = None

    def _inactive_if_idle(self) -> None:
        """No request open: the client has ``inactivity`` seconds (or its
        pause) to send the next one."""
        # a request that came early (ahead of a missing rid) and whose
        # connection is gone keeps nothing open: it must not keep a session
        # whose client left alive for ever
        waiting = any(http is not None and not _gone(http) for http, _ in self._pending.values())
        if self.closed or self._held or waiting or self._inactive is not None:
            return
        period = self._pause if self._pause is not None else self.inactivity
        self._inactive = self.clock.callLater(period, self._timed_out, period)

    def _timed_out(self, period: int) -> None:
        """XEP-0124 §10: the client is gone; the session ends without a word
        (a later request finds no session)."""
        self._inactive = None
        if self.closed:
            return
        self.server.counters["bosh timed out"] += 1
        who = self.session.jid.full() if self.session.jid is not None else "unauthenticated"
        self.log.info("bosh {peer}: no request for {period} s ({who}): session ended",
                      peer=self.peer, period=period, who=who)
        self._end(terminate(), lost=True)
        self.owner.forget(self)
        self._cancel_inactivity()


def _gone(http: webserver.Request) -> bool:
    return bool(getattr(http, "_disconnected", False)) or bool(getattr(http, "finished", False))


def _respond(http: webserver.Request, body: bytes, status: int = 200) -> None:
    if _gone(http):
        return
    if status != 200:
        http.setResponseCode(status)
    http.setHeader(b"content-type", CONTENT_TYPE)
    http.setHeader(b"content-length", b"%d" % len(body))  # (not chunked, as Prosody)
    http.write(body)
    http.finish()
