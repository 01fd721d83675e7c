"""An XMPP client over BOSH (XEP-0124, XEP-0206) for end-to-end tests.

Neither slixmpp nor aioxmpp speaks BOSH, so this is a small client of our
own: :mod:`http.client` with one connection per request (as a browser's
parallel XHRs), a thread per request in flight, ElementTree for the bodies.
Like :mod:`tests.e2e.wsclient` it can also send exactly what it is given
(:meth:`BoshClient.post_raw`: garbage, chosen rids), and every wait has a
deadline whose failure says what the server did.

Once the session exists, the client keeps one empty request in flight
whenever none is (BOSH's long poll), at most ``requests`` at once, and takes
the responses' stanzas in rid order::

    c = BoshClient(server.host, server.http_port)
    features = c.create("localhost")
    c.sasl_scram("alice", "secret")
    c.restart()
    c.bind("web")

:func:`login` does all of that (SCRAM-SHA-256) and returns a bound client.
"""

from __future__ import annotations

import http.client
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from typing import Callable


from tests.e2e.rawxmpp import NS_CLIENT, NS_STREAMS, Negotiation, client_tls_context, dump, q

NS_HTTPBIND = "http://jabber.org/protocol/httpbind"
NS_XBOSH = "urn:xmpp:xbosh"
PATH = "/http-bind"
DEFAULT_TIMEOUT = 10.0
BODY = q(NS_HTTPBIND, "body")


class Response:
    """One HTTP response: status, headers (lower-case names), body bytes."""

    def __init__(self, status: int, headers: dict[str, str], data: bytes):
        self.status = status
        self.headers = headers
        self.data = data

    @property
    def body(self) -> ET.Element:
        return ET.fromstring(self.data)

    def terminal(self) -> tuple[str | None, str | None]:
        body = self.body
        return body.get("type"), body.get("condition")


class BoshClient(Negotiation):
    """One BOSH session (or the attempt at one)."""

    NS_ATTR = f" xmlns='{NS_CLIENT}'"  # each message is a document of its own

    def __init__(self, host: str, port: int, path: str = PATH, tls: bool = False,
                 timeout: float = DEFAULT_TIMEOUT, rid: int | None = None):
        self.host, self.port, self.path, self.tls = host, port, path, tls
        self.timeout = timeout
        self.rid = rid if rid is not None else 1_000_000 + uuid.uuid4().int % 1_000_000
        self.sid: str | None = None
        self.requests = 1
        self.jid: str | None = None
        self.created: ET.Element | None = None
        #: the terminate body that ended the session (None while it lives)
        self.terminated: ET.Element | None = None
        self.elements: list[ET.Element] = []  # stanzas not yet taken, in rid order
        self.bodies: list[tuple[int, bytes]] = []  # every response, (rid, bytes), as taken
        self.errors: list[str] = []
        self._cond = threading.Condition()
        self._inflight = 0
        self._responses: dict[int, bytes] = {}
        self._next = 0  # the next rid whose response is taken
        self._polling = False

    # -- HTTP ------------------------------------------------------------------------

    def connection(self) -> http.client.HTTPConnection:
        if self.tls:
            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                               context=client_tls_context())
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def post_raw(self, data: bytes | str, method: str = "POST",
                 headers: dict[str, str] | None = None,
                 timeout: float | None = None) -> Response:
        """One request on a new connection, exactly ``data``; its response."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        conn = self.connection()
        if timeout is not None:
            conn.timeout = timeout
        try:
            conn.request(method, self.path, body=data if method != "GET" else None,
                         headers={"Content-Type": "text/xml; charset=utf-8", **(headers or {})})
            answer = conn.getresponse()
            return Response(answer.status, {k.lower(): v for k, v in answer.getheaders()},
                            answer.read())
        finally:
            conn.close()

    def body(self, *payloads: str, rid: int | None = None, **attrs: str) -> str:
        """A ``<body/>`` of this session (``xmpp_restart='true'`` →
        ``xmpp:restart``)."""
        extra = "".join(f" {k.replace('xmpp_', 'xmpp:')}='{v}'" for k, v in attrs.items())
        if any(k.startswith("xmpp_") for k in attrs):
            extra += f" xmlns:xmpp='{NS_XBOSH}'"
        return (f"<body xmlns='{NS_HTTPBIND}' sid='{self.sid}' rid='{rid}'{extra}>"
                f"{''.join(payloads)}</body>")

    # -- the session -----------------------------------------------------------------

    def create(self, to: str = "localhost", wait: int = 20, hold: int = 1) -> ET.Element:
        """The session creation request; returns the stream features (checks
        the creation response's attributes) and starts the long poll."""
        response = self.post_raw(
            f"<body xmlns='{NS_HTTPBIND}' rid='{self.rid}' to='{to}' wait='{wait}' hold='{hold}' "
            f"ver='1.6' xml:lang='en' xmpp:version='1.0' xmlns:xmpp='{NS_XBOSH}'/>")
        assert response.status == 200, response.data
        body = response.body
        assert body.get("type") != "terminate", response.data
        self.created = body
        self.sid = body.get("sid")
        self.requests = int(body.get("requests", "1"))
        self._next = self.rid + 1
        features = body.find(q(NS_STREAMS, "features"))
        assert features is not None, response.data
        self._polling = True
        self._pump()
        return features

    def _pump(self) -> None:
        """Keep one request in flight (called with or without the lock)."""
        with self._cond:
            if self._polling and self._inflight == 0 and self.terminated is None:
                self._start_locked(())

    def send(self, *payloads: str, **attrs: str) -> int:
        """A request carrying ``payloads`` (waits until one more may be sent);
        returns its rid."""
        deadline = time.monotonic() + self.timeout
        with self._cond:
            while self._inflight >= self.requests and self.terminated is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no request slot free; {self.describe()}")
                self._cond.wait(remaining)
            if self.terminated is not None:
                raise AssertionError(f"the session is over; {self.describe()}")
            return self._start_locked(payloads, **attrs)

    def _start_locked(self, payloads, **attrs) -> int:
        self.rid += 1
        rid = self.rid
        data = self.body(*payloads, rid=rid, **attrs)
        self._inflight += 1
        threading.Thread(target=self._run, args=(rid, data), daemon=True).start()
        return rid

    def _run(self, rid: int, data: str) -> None:
        try:
            response = self.post_raw(data, timeout=self.timeout + 130)
            text = response.data if response.status == 200 else None
            if text is None:
                self.errors.append(f"rid {rid}: HTTP {response.status}")
        except Exception as e:  # the test sees it in describe()
            self.errors.append(f"rid {rid}: {e!r}")
            text = None
        with self._cond:
            self._inflight -= 1
            self._responses[rid] = text or b""
            while self._next in self._responses:
                got = self._responses.pop(self._next)
                self.bodies.append((self._next, got))
                self._next += 1
                if not got:
                    continue
                body = ET.fromstring(got)
                self.elements.extend(body)
                if body.get("type") == "terminate":
                    self.terminated = body
            self._cond.notify_all()
        self._pump()

    def describe(self) -> str:
        return (f"sid={self.sid} rid={self.rid} inflight={self._inflight} "
                f"terminated={dump(self.terminated) if self.terminated is not None else None} "
                f"errors={self.errors[-3:]} last bodies={[b for _, b in self.bodies[-4:]]!r}")

    def next_element(self, match: Callable[[ET.Element], bool] | None = None,
                     timeout: float | None = None, what: str = "a stanza") -> ET.Element:
        """The next stanza (the first that ``match`` accepts, skipping others)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        with self._cond:
            while True:
                for i, element in enumerate(self.elements):
                    if match is None or match(element):
                        del self.elements[: i + 1]
                        return element
                if self.terminated is not None:
                    raise AssertionError(f"session terminated waiting for {what}; "
                                         f"{self.describe()}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out waiting for {what}; {self.describe()}")
                self._cond.wait(remaining)


    #: what :class:`Negotiation` waits with
    next_stanza = next_element

    def wait_terminated(self, timeout: float | None = None) -> ET.Element:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        with self._cond:
            while self.terminated is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"not terminated; {self.describe()}")
                self._cond.wait(remaining)
            return self.terminated

    def stop_polling(self) -> None:
        with self._cond:
            self._polling = False

    # -- negotiation -----------------------------------------------------------------

    def restart(self, to: str = "localhost") -> ET.Element:
        """XEP-0206 §5: ``xmpp:restart='true'``; returns the new features."""
        self.send(to=to, xmpp_restart="true")
        features = self.next_element(lambda e: e.tag == q(NS_STREAMS, "features"),
                                     what="<stream:features/> after the restart")
        return features

    def terminate(self, *payloads: str) -> ET.Element:
        """``type='terminate'``: the server answers with a terminate body."""
        self.send(*payloads, type="terminate")
        return self.wait_terminated()

    def close(self) -> None:
        """Stop polling (the requests in flight end with their wait)."""
        self.stop_polling()


def login(host: str, port: int, user: str, password: str, resource: str | None = None,
          domain: str = "localhost", tls: bool = False,
          timeout: float = DEFAULT_TIMEOUT) -> BoshClient:
    """Create the session, SCRAM-SHA-256, restart, bind: a client with
    :attr:`BoshClient.jid` set."""
    client = BoshClient(host, port, tls=tls, timeout=timeout)
    try:
        client.create(domain)
        client.sasl_scram(user, password)
        client.restart(domain)
        client.bind(resource)
    except BaseException:
        client.close()
        raise
    return client
