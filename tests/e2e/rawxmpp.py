"""A deliberately dumb XMPP client over a raw socket, for end-to-end tests.

It sends exactly the bytes it is given (so tests can send garbage) and reads
the server's side of the stream with an incremental parser, collecting the
top-level elements (stanzas, features, stream errors) as they complete.
Every wait has a deadline; a timeout raises :class:`AssertionError` with what
was received so far, so a failing test says what the server actually did.

    c = RawClient.connect(server.host, server.port)
    features = c.open_stream()
    c.send(b"<message><body>not yet</body></message>")
    c.expect_stream_error("not-authorized")

:func:`login` does STARTTLS + SASL SCRAM-SHA-256 + bind and returns a bound client.
"""

from __future__ import annotations

import base64
import select
import socket
import ssl
import time
import uuid
import xml.etree.ElementTree as ET
from typing import Callable, Mapping

import scramp

NS_STREAMS = "http://etherx.jabber.org/streams"
NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
NS_STANZA_ERRORS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_CLIENT = "jabber:client"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"

DEFAULT_TIMEOUT = 10.0


def q(ns: str, name: str) -> str:
    """Clark notation, as ElementTree spells qualified names: ``{ns}name``."""
    return f"{{{ns}}}{name}"


def header(to: str | None = "localhost", version: str | None = "1.0",
           stream_ns: str = NS_STREAMS, content_ns: str | None = NS_CLIENT,
           xml_decl: bool = True) -> bytes:
    """A client stream header; every part can be left out or made wrong."""
    attrs = []
    if content_ns is not None:
        attrs.append(f"xmlns='{content_ns}'")
    attrs.append(f"xmlns:stream='{stream_ns}'")
    if to is not None:
        attrs.append(f"to='{to}'")
    if version is not None:
        attrs.append(f"version='{version}'")
    decl = "<?xml version='1.0'?>" if xml_decl else ""
    return f"{decl}<stream:stream {' '.join(attrs)}>".encode()


def client_tls_context() -> ssl.SSLContext:
    """TLS without verification: the test server's certificate is self-signed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def stream_error_condition(element: ET.Element) -> str | None:
    """The defined condition of a ``<stream:error/>`` (its non-text child), else None."""
    if element.tag != q(NS_STREAMS, "error"):
        return None
    conditions = [c.tag for c in element if c.tag != q(NS_STREAM_ERRORS, "text")]
    assert len(conditions) == 1, f"a stream error needs exactly one condition: {dump(element)}"
    assert conditions[0].startswith("{" + NS_STREAM_ERRORS + "}"), (
        f"stream error condition outside {NS_STREAM_ERRORS}: {dump(element)}")
    return conditions[0].split("}", 1)[1]


def stanza_error_condition(stanza: ET.Element) -> tuple[str | None, str | None]:
    """(error type, defined condition) of a stanza of type 'error'."""
    error = stanza.find(q(NS_CLIENT, "error"))
    assert error is not None, f"no <error/> child: {dump(stanza)}"
    conditions = [c.tag.split("}", 1)[1] for c in error
                  if c.tag.startswith("{" + NS_STANZA_ERRORS + "}") and not c.tag.endswith("}text")]
    assert len(conditions) == 1, f"a stanza error needs exactly one condition: {dump(stanza)}"
    return error.get("type"), conditions[0]


def dump(element: ET.Element) -> str:
    return ET.tostring(element, encoding="unicode")


class Negotiation:
    """SASL SCRAM, resource binding and iqs over any framing: what a test
    client needs of ``send(text)`` and ``next_stanza(match, timeout, what)``.
    TCP (:class:`RawClient`), WebSocket and BOSH test clients share it.
    ``NS_ATTR`` is put on every stanza sent (a framing whose messages are
    standalone documents must declare ``jabber:client`` on each)."""

    NS_ATTR = ""

    def sasl_scram(self, username: str, password: str, mechanism: str = "SCRAM-SHA-256") -> None:
        """SCRAM as an XMPP client does it: the authcid is the localpart
        (``alice@localhost`` is accepted and cut down to ``alice``)."""
        client = scramp.ScramClient([mechanism], username.split("@", 1)[0], password)
        first = base64.b64encode(client.get_client_first().encode()).decode()
        self.send(f"<auth xmlns='{NS_SASL}' mechanism='{mechanism}'>{first}</auth>")
        challenge = self.next_stanza(what="SASL challenge")
        assert challenge.tag == q(NS_SASL, "challenge"), dump(challenge)
        client.set_server_first(base64.b64decode(challenge.text or "").decode())
        final = base64.b64encode(client.get_client_final().encode()).decode()
        self.send(f"<response xmlns='{NS_SASL}'>{final}</response>")
        success = self.next_stanza(what="SASL success")
        assert success.tag == q(NS_SASL, "success"), dump(success)
        client.set_server_final(base64.b64decode(success.text or "").decode())

    def bind(self, resource: str | None = None) -> str:
        iq_id = "bind-" + uuid.uuid4().hex[:8]
        res = f"<resource>{resource}</resource>" if resource else ""
        self.send(f"<iq{self.NS_ATTR} type='set' id='{iq_id}'>"
                  f"<bind xmlns='{NS_BIND}'>{res}</bind></iq>")
        result = self.next_stanza(match=lambda s: s.get("id") == iq_id, what="bind result")
        assert result.get("type") == "result", dump(result)
        jid = result.findtext(f"{q(NS_BIND, 'bind')}/{q(NS_BIND, 'jid')}")
        assert jid, dump(result)
        self.jid = jid
        return jid

    def iq(self, payload: str, type: str = "get", to: str | None = None,
           iq_id: str | None = None, timeout: float | None = None) -> ET.Element:
        """Send an iq and return the answer with the same id."""
        iq_id = iq_id or "iq-" + uuid.uuid4().hex[:8]
        to_attr = f" to='{to}'" if to else ""
        self.send(f"<iq{self.NS_ATTR} type='{type}' id='{iq_id}'{to_attr}>{payload}</iq>")
        return self.next_stanza(match=lambda s: s.tag == q(NS_CLIENT, "iq")
                                and s.get("id") == iq_id, timeout=timeout,
                                what=f"iq answer id={iq_id}")


class RawClient(Negotiation):
    """One TCP (optionally TLS) connection and the server's XML stream on it."""

    def __init__(self, sock: socket.socket, timeout: float = DEFAULT_TIMEOUT):
        self.sock = sock
        self.timeout = timeout
        self.received = b""  # every byte received (after TLS: decrypted), for echo checks
        self.eof = False  # the server closed the connection
        self.reset_error: BaseException | None = None  # closed by RST / TLS error instead
        self.jid: str | None = None
        self._new_parser()

    # -- connecting ----------------------------------------------------------------

    @classmethod
    def connect(cls, host: str, port: int, direct_tls: bool = False,
                timeout: float = DEFAULT_TIMEOUT) -> "RawClient":
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if direct_tls:
            sock = client_tls_context().wrap_socket(sock, server_hostname="localhost")
        return cls(sock, timeout)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "RawClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the server's stream ---------------------------------------------------------

    def _new_parser(self) -> None:
        """Forget the current server stream; the next bytes start a new one."""
        self._parser = ET.XMLPullParser(events=("start", "end"))
        self._depth = 0
        self.root: ET.Element | None = None  # the server's stream header
        self.stanzas: list[ET.Element] = []  # top-level elements not yet taken
        self.ended = False  # the server sent </stream:stream>
        self.parse_error: Exception | None = None

    def _feed(self, data: bytes) -> None:
        self.received += data
        if self.parse_error is not None:
            return
        try:
            self._parser.feed(data)
            for event, element in self._parser.read_events():
                if event == "start":
                    self._depth += 1
                    if self._depth == 1:
                        self.root = element
                else:
                    if self._depth == 2:
                        self.stanzas.append(element)
                        self.root.remove(element)
                    elif self._depth == 1:
                        self.ended = True
                    self._depth -= 1
        except ET.ParseError as e:  # the server sent bad XML: record, let the test fail
            self.parse_error = e

    def _recv(self, deadline: float) -> None:
        """Receive once (up to the deadline); set :attr:`eof` when the peer closed."""
        if self.eof:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        pending = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()
        if not pending:
            # poll, not select: a test holding a thousand sockets has
            # descriptors beyond select()'s limit of 1024
            poller = select.poll()
            poller.register(self.sock, select.POLLIN | select.POLLERR | select.POLLHUP)
            if not poller.poll(remaining * 1000):
                return
        try:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            return
        except (ConnectionResetError, ssl.SSLError, OSError) as e:
            self.reset_error = e
            self.eof = True
            return
        if not data:
            self.eof = True
        else:
            self._feed(data)

    def describe(self) -> str:
        text = self.received[-3000:].decode("utf-8", "replace")
        return (f"eof={self.eof} reset={self.reset_error!r} ended={self.ended} "
                f"parse_error={self.parse_error} received (tail): {text!r}")

    def wait_for(self, predicate: Callable[[], bool], timeout: float | None = None,
                 what: str = "condition") -> None:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not predicate():
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out waiting for {what}; {self.describe()}")
            if self.eof:
                if predicate():
                    return
                raise AssertionError(f"connection closed while waiting for {what}; "
                                     f"{self.describe()}")
            self._recv(deadline)

    def poll(self) -> None:
        """Take whatever has arrived, without waiting."""
        self._recv(time.monotonic() + 0.001)

    def next_stanza(self, match: Callable[[ET.Element], bool] | None = None,
                    timeout: float | None = None, what: str | None = None) -> ET.Element:
        """The next top-level element (the first that ``match`` accepts, skipping others)."""
        def found() -> bool:
            if match is None:
                return bool(self.stanzas)
            return any(match(s) for s in self.stanzas)
        self.wait_for(found, timeout, what or "a stanza")
        for i, stanza in enumerate(self.stanzas):
            if match is None or match(stanza):
                del self.stanzas[: i + 1]
                return stanza
        raise AssertionError("unreachable")

    def wait_closed(self, timeout: float | None = None) -> None:
        """Wait until the server closed the TCP connection."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.eof:
            if time.monotonic() >= deadline:
                raise AssertionError(f"the server did not close the connection; {self.describe()}")
            self._recv(deadline)

    def expect_stream_error(self, condition: str, timeout: float | None = None) -> ET.Element:
        """Assert the next thing the server says is ``<stream:error><condition/>``,
        followed by ``</stream:stream>`` and the connection closing."""
        element = self.next_stanza(
            match=lambda s: s.tag == q(NS_STREAMS, "error"), timeout=timeout,
            what=f"<stream:error><{condition}/>")
        got = stream_error_condition(element)
        assert got == condition, f"expected stream error {condition}, got {got}: {dump(element)}"
        assert self.parse_error is None, self.describe()
        self.wait_for(lambda: self.ended or self.eof, timeout, "</stream:stream>")
        assert self.ended, f"no </stream:stream> after the stream error; {self.describe()}"
        self.wait_closed(timeout)
        return element

    # -- sending ---------------------------------------------------------------------

    def send(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def try_send(self, data: bytes | str) -> bool:
        """Send, but return False instead of raising if the server has hung up."""
        try:
            self.send(data)
            return True
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            return False

    # -- negotiation -----------------------------------------------------------------

    def open_stream(self, to: str = "localhost", timeout: float | None = None) -> ET.Element:
        """Send a valid header and return the server's ``<stream:features/>``."""
        self._new_parser()
        self.send(header(to))
        features = self.next_stanza(timeout=timeout, what="<stream:features/>")
        assert features.tag == q(NS_STREAMS, "features"), dump(features)
        assert self.root is not None and self.root.tag == q(NS_STREAMS, "stream")
        return features

    def starttls(self) -> None:
        self.send(f"<starttls xmlns='{NS_TLS}'/>")
        proceed = self.next_stanza(what="<proceed/>")
        assert proceed.tag == q(NS_TLS, "proceed"), dump(proceed)
        self.sock.settimeout(self.timeout)
        self.sock = client_tls_context().wrap_socket(self.sock, server_hostname="localhost")


def settle(clients: Mapping[str, RawClient], first: RawClient | None, what: str,
           quiet: float = 0.3, min_wait: float = 0.15, wait: float = 10.0) -> None:
    """Wait until ``first`` (if any) received something, then until nothing
    more arrives at any of ``clients`` for ``quiet`` seconds (never sooner
    than ``min_wait`` after the call, at most ``wait``): the end of one step
    of a differential script, whatever each server sends for it."""
    if first is not None:
        try:
            first.wait_for(lambda: bool(first.stanzas), timeout=wait, what=what)
        except AssertionError:
            if first.eof:
                raise
            # nothing came: that is the server's answer, compared like any other
    start = time.monotonic()
    last_change = start
    counts = {name: len(c.received) for name, c in clients.items()}
    while time.monotonic() < start + wait:
        for client in clients.values():
            client.poll()
        now_counts = {name: len(c.received) for name, c in clients.items()}
        now = time.monotonic()
        if now_counts != counts:
            counts, last_change = now_counts, now
        elif now - start >= min_wait and now - last_change >= quiet:
            return
        time.sleep(0.02)


def login(host: str, port: int, user: str, password: str, resource: str | None = None,
          domain: str = "localhost", timeout: float = DEFAULT_TIMEOUT) -> RawClient:
    """Connect, STARTTLS, SCRAM-SHA-256, bind: a client with :attr:`RawClient.jid` set."""
    client = RawClient.connect(host, port, timeout=timeout)
    try:
        client.open_stream(domain)
        client.starttls()
        client.open_stream(domain)
        client.sasl_scram(user, password)
        client.open_stream(domain)
        client.bind(resource)
    except BaseException:
        client.close()
        raise
    return client
