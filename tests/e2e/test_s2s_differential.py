"""Differential test: what a remote *server* sees of xmppd's s2s port, against
Prosody 0.12's, stanza for stanza.

A raw s2s client (:mod:`raws2s`: python's ``ssl``, presenting a certificate
for ``raw.test`` from the federation's test CA when the script says so)
plays the same scripts against a real Prosody of a
:class:`federation.Federation` (``prosody.test``) and an xmppd beside it
(``xmppd.test``), each on its own address and port 5269, and compares what
each answered.

Both run what an Internet server runs, as far as their options match:
certificates from one CA both trust, encryption required, secure
authentication (Prosody's ``s2s_secure_auth``, xmppd's ``[s2s] secure_auth``:
only a certificate that verifies for a domain authenticates it, by SASL
EXTERNAL or by dialback), and dialback *on* (Prosody's mod_dialback, xmppd's
``[s2s] dialback``: the federation's "external" mode turns it off, which
would leave the dialback cases nothing to say).

The scripts (:data:`SCRIPTS`): the features before TLS and after it (with
and without a client certificate); a stream to a domain not served;
db:result before TLS; SASL EXTERNAL with a good certificate, with a wrong
authzid, with no certificate; a stanza before authentication; a stanza from
a domain that did not authenticate; db:verify of a key that is not the
server's; db:result claiming the server's own domain; an unknown top-level
element; garbage XML. All plays run at once (one connection each).

After each step, whatever the server sent is recorded until it falls quiet
or closes (silence is an answer too), as canonical lines: its stream header
(addresses, version, whether it has an id), each top-level element with
attributes sorted and prefixes of our own, the end of its stream, the
connection closing. Normalised away: the server's domain (``{server}``),
stream id values, the ``<text/>`` of errors; and in stream features, whose
differences :func:`test_stream_features` checks on what was really sent:
the order of the features, XEP-0220's ``<errors/>`` in the dialback feature,
XEP-0115 caps, and any feature offered beside a required STARTTLS; the
header's ``xml:lang``, which :func:`test_response_headers_carry_xml_lang`
checks.

Every script must give the same transcript on both, except those in
:data:`DIFFERENCES` (each says which server is right and why). Where xmppd
has to change, the test expecting the right answer is an
``xfail(strict=True)`` that fails only on xmppd's answer
(:class:`XmppdDiffers`), so it turns into a failure the day xmppd is fixed
(then drop the mark). The transcripts are written to :data:`TRANSCRIPTS`.
"""

from __future__ import annotations

import difflib
import ssl
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import pytest

from federation import PROSODY, S2S_PORT, XMPPD, Federation, FederationUnavailable
from rawxmpp import NS_SASL, NS_STREAM_ERRORS, NS_STREAMS, NS_TLS
from raws2s import NS_DB, NS_DB_FEATURE, NS_SERVER, RawS2S, mechanisms, s2s_header

RAW = "raw.test"  # the raw client's domain (its certificate is from the test CA)
ELSEWHERE = "nowhere.test"  # served by neither
COMPONENTS = "disco ping version presence messaging"
TRANSCRIPTS = "/tmp/s2s-differential-transcripts.txt"
SERVERS = ("prosody", "xmppd")

NS_CAPS = "http://jabber.org/protocol/caps"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
#: prefixes of the canonical form
PREFIXES = {NS_STREAMS: "stream", NS_TLS: "tls", NS_SASL: "sasl", NS_DB: "db",
            NS_DB_FEATURE: "dbf", NS_SERVER: "", NS_STREAM_ERRORS: "err", NS_CAPS: "caps",
            "urn:ietf:params:xml:ns:xmpp-stanzas": "stanza"}
#: after each step: wait up to this long for a first byte (silence is an
#: answer: Prosody stays silent for good where it is, see DIFFERENCES),
#: then until nothing more comes for this long
FIRST_WAIT, QUIET = 2.0, 0.25


class XmppdDiffers(AssertionError):
    """xmppd's answer is not the expected one (what the xfail marks expect)."""


@dataclass
class Target:
    """One server under test."""

    name: str
    domain: str
    ip: str
    ca_file: str


# -- canonical form -------------------------------------------------------------------------


def qname(tag: str) -> str:
    if tag.startswith("{"):
        uri, local = tag[1:].split("}", 1)
        prefix = PREFIXES.get(uri, uri)
        return f"{prefix}:{local}" if prefix else local
    return tag


def _normalised_features(features: ET.Element) -> list[ET.Element]:
    """The features compared: in a set order; without those only one
    server offers by design (checked by :func:`test_stream_features`)."""
    children = list(features)
    if any(c.tag == f"{{{NS_TLS}}}starttls" and c.find(f"{{{NS_TLS}}}required") is not None
           for c in children):
        children = [c for c in children if c.tag == f"{{{NS_TLS}}}starttls"]
    return sorted((c for c in children if c.tag != f"{{{NS_CAPS}}}c"),
                  key=lambda c: qname(c.tag))


def canonical(element: ET.Element, domain: str) -> str:
    """``element`` as text to compare (see the module docstring)."""
    def walk(e: ET.Element, parent: ET.Element | None) -> str:
        if e.tag in (f"{{{NS_STREAM_ERRORS}}}text", f"{{{NS_SASL}}}text"):
            return ""
        if parent is not None and parent.tag == f"{{{NS_DB_FEATURE}}}dialback":
            return ""  # <errors/>
        children = _normalised_features(e) if e.tag == f"{{{NS_STREAMS}}}features" else list(e)
        attrs = "".join(f" {k}='{v.replace(domain, '{server}')}'"
                        for k, v in sorted(e.attrib.items()) if k != XML_LANG)
        inner = "".join(walk(c, e) for c in children)
        text = (e.text or "").strip().replace(domain, "{server}")
        name = qname(e.tag)
        return f"<{name}{attrs}>{text}{inner}</{name}>" if text or inner else f"<{name}{attrs}/>"
    return walk(element, None)


# -- playing a script -----------------------------------------------------------------------


@dataclass
class Play:
    """One script played against one server: what it answered."""

    target: Target
    raw: RawS2S | None = None
    #: the transcript: "> step" and the answer's canonical lines
    lines: list[str] = field(default_factory=list)
    #: step label → the <stream:features/> answering it, as sent
    features: dict[str, ET.Element] = field(default_factory=dict)
    #: the attributes of each of the server's stream headers
    headers: list[dict[str, str]] = field(default_factory=list)
    _header_seen: bool = False
    _end_seen: bool = False
    _closed_seen: bool = False

    # -- what a script does -----------------------------------------------------------

    def connect(self) -> None:
        self.raw = RawS2S.connect(self.target.ip, S2S_PORT, timeout=5)

    def header(self, label: str = "header", to: str | None = None) -> None:
        """A new stream header from raw.test (to the server's domain unless ``to``)."""
        self.raw._new_parser()
        self._header_seen = self._end_seen = False
        self.step(label, s2s_header(RAW, self.target.domain if to is None else to))

    def send(self, label: str, data: str) -> None:
        self.step(label, data.replace("{server}", self.target.domain))

    def starttls(self, certificate=None) -> None:
        """``<starttls/>``, and the TLS handshake if the server said proceed
        (its certificate verified with the test CA)."""
        self.step("starttls", f"<starttls xmlns='{NS_TLS}'/>")
        if self.lines[-1] != "  <tls:proceed/>":
            return
        try:
            self.raw.wrap_tls(self.target.domain, self.target.ca_file, certificate)
        except (ssl.SSLError, OSError) as e:
            self.lines.append(f"  (TLS handshake failed: {e})")
            return
        self.lines.append(f"  (TLS, {'a' if certificate else 'no'} client certificate)")

    # -- recording ----------------------------------------------------------------------

    def step(self, label: str, data: bytes | str) -> None:
        self.lines.append(f"> {label}")
        if self.raw.eof or not self.raw.try_send(data):
            self.lines.append("  (not sent: the connection is closed)")
            return
        self._settle()
        self._record(label)

    def _settle(self) -> None:
        """Wait for the answer: a first byte (up to :data:`FIRST_WAIT`),
        then until nothing comes for :data:`QUIET`, or the server closes."""
        raw = self.raw
        start = last = time.monotonic()
        before = count = len(raw.received)
        while not raw.eof:
            now = time.monotonic()
            if len(raw.received) != count:
                count, last = len(raw.received), now
            if now - start > 8 or (count == before and now - start >= FIRST_WAIT) \
                    or (count != before and now - last >= QUIET):
                return
            raw._recv(now + 0.05)

    def _record(self, label: str) -> None:
        raw = self.raw
        if raw.root is not None and not self._header_seen:
            self._header_seen = True
            attrs = dict(raw.root.attrib)
            self.headers.append(attrs)
            parts = [f"{k}={self._norm(attrs[k])}" for k in ("from", "to", "version")
                     if k in attrs]
            self.lines.append(f"  <stream:stream {' '.join(parts + ['id'] * ('id' in attrs))}>")
        for element in raw.stanzas:
            if element.tag == f"{{{NS_STREAMS}}}features":
                self.features[label] = element
            self.lines.append("  " + canonical(element, self.target.domain))
        raw.stanzas.clear()
        if raw.ended and not self._end_seen:
            self._end_seen = True
            self.lines.append("  </stream:stream>")
        if raw.parse_error is not None:
            self.lines.append(f"  (not XML: {raw.parse_error})")
            raw.parse_error = None
        if raw.eof and not self._closed_seen:
            self._closed_seen = True
            self.lines.append("  (closed)")

    def _norm(self, text: str) -> str:
        return text.replace(self.target.domain, "{server}")


# -- the scripts (each gets the play and raw.test's certificate) ------------------------------

AUTH_EXTERNAL = f"<auth xmlns='{NS_SASL}' mechanism='EXTERNAL'>=</auth>"
MESSAGE = ("<message from='mallory@{from_}' to='alice@{{server}}' type='chat' id='m1'>"
           "<body>hi</body></message>")


def _secured(play: Play, cert) -> None:
    """Past STARTTLS (presenting ``cert`` if any), a new stream opened."""
    play.connect()
    play.header()
    play.starttls(cert)
    play.header("header after TLS")


def _authenticated(play: Play, cert) -> None:
    """Past SASL EXTERNAL as raw.test, a new stream opened."""
    _secured(play, cert)
    play.send("auth EXTERNAL", AUTH_EXTERNAL)
    play.header("header after SASL")


def features_before_tls(play: Play, cert) -> None:
    play.connect()
    play.header()


def features_after_tls_with_a_certificate(play: Play, cert) -> None:
    _secured(play, cert)


def features_after_tls_without_a_certificate(play: Play, cert) -> None:
    _secured(play, None)


def stream_to_a_domain_not_served(play: Play, cert) -> None:
    play.connect()
    play.header(f"header to {ELSEWHERE}", to=ELSEWHERE)


def db_result_before_tls(play: Play, cert) -> None:
    play.connect()
    play.header()
    play.send("db:result before TLS",
              f"<db:result from='{RAW}' to='{{server}}'>0123456789abcdef</db:result>")


def external_with_a_good_certificate(play: Play, cert) -> None:
    _authenticated(play, cert)


def external_with_a_wrong_authzid(play: Play, cert) -> None:
    _secured(play, cert)
    play.send("auth EXTERNAL authzid=other.test",  # base64 of other.test
              f"<auth xmlns='{NS_SASL}' mechanism='EXTERNAL'>b3RoZXIudGVzdA==</auth>")


def external_without_a_certificate(play: Play, cert) -> None:
    _secured(play, None)
    play.send("auth EXTERNAL", AUTH_EXTERNAL)


def stanza_before_authentication(play: Play, cert) -> None:
    _secured(play, cert)
    play.send("message before authentication", MESSAGE.format(from_=RAW))


def stanza_from_a_domain_not_authenticated(play: Play, cert) -> None:
    _authenticated(play, cert)
    play.send("message from evil.test", MESSAGE.format(from_="evil.test"))


def db_verify_with_a_bad_key(play: Play, cert) -> None:
    _secured(play, cert)
    play.send("db:verify of a key not the server's",
              f"<db:verify from='{RAW}' to='{{server}}' id='0f1e2d3c'>badkey</db:verify>")


def db_result_as_the_server_itself(play: Play, cert) -> None:
    _secured(play, cert)
    play.send("db:result from {server}",
              "<db:result from='{server}' to='{server}'>0123456789abcdef</db:result>")


def unknown_top_level_element(play: Play, cert) -> None:
    _authenticated(play, cert)
    play.send("unknown element", "<thing xmlns='urn:example:unknown'/>")


def garbage_xml(play: Play, cert) -> None:
    play.connect()
    play.header()
    play.send("garbage", "<<</>>&&")


SCRIPTS: dict[str, Callable[[Play, object], None]] = {f.__name__: f for f in (
    features_before_tls, features_after_tls_with_a_certificate,
    features_after_tls_without_a_certificate, stream_to_a_domain_not_served,
    db_result_before_tls, external_with_a_good_certificate, external_with_a_wrong_authzid,
    external_without_a_certificate, stanza_before_authentication,
    stanza_from_a_domain_not_authenticated, db_verify_with_a_bad_key,
    db_result_as_the_server_itself, unknown_top_level_element, garbage_xml)}

#: a line Prosody's transcript must have: the script does what it says
PROVES = {
    "features_before_tls": "<tls:starttls><tls:required/></tls:starttls>",
    "features_after_tls_with_a_certificate": "<sasl:mechanism>EXTERNAL</sasl:mechanism>",
    "features_after_tls_without_a_certificate": "(TLS, no client certificate)",
    "stream_to_a_domain_not_served": "<err:host-unknown/>",
    "db_result_before_tls": "> db:result before TLS",
    "external_with_a_good_certificate": "<sasl:success/>",
    "external_with_a_wrong_authzid": "<sasl:invalid-authzid/>",
    "external_without_a_certificate": "(TLS, no client certificate)",
    "stanza_before_authentication": "<sasl:mechanism>EXTERNAL</sasl:mechanism>",
    "stanza_from_a_domain_not_authenticated": "<sasl:success/>",
    "db_verify_with_a_bad_key": "type='invalid'",
    "db_result_as_the_server_itself": "(TLS, a client certificate)",
    "unknown_top_level_element": "<err:unsupported-stanza-type/>",
    "garbage_xml": "<err:not-well-formed/>",
}


# -- what differs, and who is right ------------------------------------------------------------


def stream_error(condition: str) -> list[str]:
    return [f"  <stream:error><err:{condition}/></stream:error>", "  </stream:stream>",
            "  (closed)"]


@dataclass(frozen=True)
class Difference:
    """From ``step`` on, each server answers its own way (the lines after
    the step's own); before it, the transcripts must be the same."""

    step: str
    prosody: list[str]
    xmppd: list[str]
    why: str
    #: set when xmppd must change: what (``xmppd`` is then the answer it should give)
    change: str | None = None


HEADER = "  <stream:stream from={server} to=raw.test version=1.0 id>"

#: xmppd must answer as Prosody: script → what to change (xfail until it does)
MUST_MATCH: dict[str, str] = {
    # none now: a stream whose certificate does not verify is refused at its
    # header under secure_auth, the host-unknown header has a 'from', as
    # Prosody's (it used to list those)
}

DIFFERENCES: dict[str, Difference] = {
    "db_result_before_tls": Difference(
        "db:result before TLS", prosody=[], xmppd=stream_error("policy-violation"),
        why="xmppd is right: TLS is required and was not negotiated, dialback was not even "
        "offered yet (RFC 6120 §5.3.1); it refuses at once with the condition XEP-0220 "
        "§2.4.2 names for 'dialback before TLS'. Prosody processes it, makes an outgoing "
        "connection to raw.test to verify the key for an unencrypted stream, and never "
        "answers (its 'policy-violation' would come only after a successful verification)"),
    "stanza_before_authentication": Difference(
        "message before authentication", prosody=[], xmppd=stream_error("not-authorized"),
        why="xmppd is right: RFC 6120 §4.9.3.12: data before the stream is authenticated is "
        "<not-authorized/> (the receiving entity MUST NOT process it). Prosody drops the "
        "stanza silently (stanza_router: an unauthenticated s2sin session cannot send an "
        "error back)"),
    "stanza_from_a_domain_not_authenticated": Difference(
        "message from evil.test", prosody=stream_error("not-authorized"),
        xmppd=stream_error("invalid-from"),
        why="xmppd is right: RFC 6120 §4.9.3.9 defines <invalid-from/> for exactly this (a "
        "'from' that does not match a domain validated between the servers by SASL or "
        "dialback); Prosody's stanza_router closes with <not-authorized/>"),
    "db_verify_with_a_bad_key": Difference(
        "db:verify of a key not the server's",
        prosody=["  <db:verify from='{server}' id='0f1e2d3c' to='raw.test' type='invalid'>"
                 "badkey</db:verify>"],
        xmppd=["  <db:verify from='{server}' id='0f1e2d3c' to='raw.test' type='invalid'/>"],
        why="both answer invalid; Prosody echoes the key, xmppd sends the element as XEP-0220 "
        "§2.3 (Example 'Authoritative Server Informs Receiving Server that Key is Invalid') "
        "shows it, empty. Harmless: the key carries no answer and receivers ignore it"),
    "db_result_as_the_server_itself": Difference(
        "db:result from {server}", prosody=[], xmppd=stream_error("undefined-condition"),
        why="xmppd is right: a remote server claiming a domain served here is refused at once "
        "with the condition (and text) Prosody itself uses for it in mod_s2s make_authenticated "
        "('Attempt to authenticate as a host we serve'); Prosody's mod_dialback first routes a "
        "db:verify to its own domain, which mod_s2s drops ('a host we do serve?!'), and the "
        "stream never gets an answer"),
}


def _xfail(script: str):
    change = MUST_MATCH.get(script) or (DIFFERENCES[script].change
                                        if script in DIFFERENCES else None)
    if change is None:
        return script
    return pytest.param(script, marks=pytest.mark.xfail(raises=XmppdDiffers, strict=True,
                                                        reason=change))


# -- the servers, all scripts played against both --------------------------------------------


class _DialbackFederation(Federation):
    """The "external" federation (one trusted CA, secure auth) with
    Prosody's mod_dialback loaded, as in Prosody's default configuration."""

    def _prosody(self):
        prosody = super()._prosody()
        prosody.dialback = True
        return prosody


@dataclass
class Plays:
    """Every (script, server) played."""

    plays: dict[tuple[str, str], Play]
    federation: Federation
    xmppd: object

    def lines(self, script: str, server: str) -> list[str]:
        return self.plays[script, server].lines


@pytest.fixture(scope="module")
def plays(tmp_path_factory, make_xmppd_module) -> Plays:
    try:
        fed = _DialbackFederation(tmp_path_factory.mktemp("s2s-diff"), "external")
        fed.start(ejabberd=False)
    except FederationUnavailable as e:
        pytest.skip(f"federation fixtures unavailable: {e}")
    try:
        overrides = fed.xmppd_overrides()
        overrides["server"]["components"] = COMPONENTS
        overrides["s2s"]["dialback"] = "true"
        xmppd = make_xmppd_module(overrides, users=[f"alice@{XMPPD}"])
        cert = fed.ca.issue(RAW)
        targets = {"prosody": Target("prosody", PROSODY, fed.ip[PROSODY], str(fed.ca_file)),
                   "xmppd": Target("xmppd", XMPPD, fed.ip[XMPPD], str(fed.ca_file))}

        def play(job: tuple[str, str]) -> Play:
            script, server = job
            played = Play(targets[server])
            try:
                SCRIPTS[script](played, cert)
            except Exception as e:  # noqa: BLE001 - recorded; the test fails on it
                played.lines.append(f"  (script failed: {type(e).__name__}: {e})")
            finally:
                if played.raw is not None:
                    played.raw.close()
            return played

        jobs = [(script, server) for script in SCRIPTS for server in SERVERS]
        with ThreadPoolExecutor(len(jobs)) as pool:
            result = Plays(dict(zip(jobs, pool.map(play, jobs))), fed, xmppd)
        with open(TRANSCRIPTS, "w") as out:
            for script in SCRIPTS:
                for server in SERVERS:
                    out.write(f"== {script} [{server}]\n"
                              + "\n".join(result.lines(script, server)) + "\n")
        yield result
    finally:
        fed.stop()


def _explain(plays: Plays, script: str) -> str:
    diff = difflib.unified_diff(plays.lines(script, "prosody"), plays.lines(script, "xmppd"),
                                "prosody", "xmppd", lineterm="", n=20)
    return (f"{script}:\n" + "\n".join(diff) + f"\n--- xmppd log:\n{plays.xmppd.log_tail(15)}"
            f"\n--- prosody log:\n{plays.federation.prosody.log_tail(15)}")


# -- the tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("script", [_xfail(s) for s in SCRIPTS])
def test_the_s2s_script_matches_prosody(plays, script):
    prosody, xmppd = plays.lines(script, "prosody"), plays.lines(script, "xmppd")
    for lines in (prosody, xmppd):
        assert not any("(script failed" in line for line in lines), _explain(plays, script)
    assert any(PROVES[script] in line for line in prosody), _explain(plays, script)
    difference = DIFFERENCES.get(script)
    if difference is None:
        if prosody != xmppd:
            raise XmppdDiffers(_explain(plays, script))
        return
    step = f"> {difference.step}"
    assert step in prosody and step in xmppd, _explain(plays, script)
    at = prosody.index(step)
    assert prosody[:at] == xmppd[:xmppd.index(step)], _explain(plays, script)
    assert prosody[at + 1:] == difference.prosody, _explain(plays, script)
    if xmppd[at + 1:] != difference.xmppd:
        raise XmppdDiffers(_explain(plays, script))


def _children(features: ET.Element) -> list[str]:
    return sorted(qname(c.tag) for c in features)


def test_stream_features(plays):
    """The feature differences the transcripts normalise away, as sent."""
    def features(script: str, server: str, step: str) -> ET.Element:
        found = plays.plays[script, server].features.get(step)
        assert found is not None, _explain(plays, script)
        return found

    # Before TLS both require it. Prosody offers dialback beside it; xmppd
    # only STARTTLS, as RFC 6120 §5.3.1 says (SHOULD NOT advertise any other
    # feature while TLS is mandatory-to-negotiate): xmppd is right.
    before = {s: features("features_before_tls", s, "header") for s in SERVERS}
    for server in SERVERS:
        starttls = before[server].find(f"{{{NS_TLS}}}starttls")
        assert starttls is not None and starttls.find(f"{{{NS_TLS}}}required") is not None
    assert _children(before["prosody"]) == ["dbf:dialback", "tls:starttls"]
    assert _children(before["xmppd"]) == ["tls:starttls"]

    # After TLS with a certificate for raw.test: EXTERNAL and dialback on
    # both. xmppd's dialback feature has XEP-0220 §2.4.2's <errors/> (it
    # sends dialback errors, so it MUST say so); Prosody 0.12 sends none.
    after = {s: features("features_after_tls_with_a_certificate", s, "header after TLS")
             for s in SERVERS}
    for server in SERVERS:
        assert mechanisms(after[server]) == ["EXTERNAL"]
        assert _children(after[server]) == ["dbf:dialback", "sasl:mechanisms"]
    errors = {s: after[s].find(f"{{{NS_DB_FEATURE}}}dialback/{{{NS_DB_FEATURE}}}errors")
              for s in SERVERS}
    assert errors["xmppd"] is not None and errors["prosody"] is None

    # After SASL: dialback (for more domains, XEP-0220 §2.6). Prosody adds
    # its XEP-0115 caps (harmless: nothing in s2s depends on them).
    authed = {s: features("external_with_a_good_certificate", s, "header after SASL")
              for s in SERVERS}
    assert _children(authed["prosody"]) == ["caps:c", "dbf:dialback"]
    assert _children(authed["xmppd"]) == ["dbf:dialback"]


def test_response_headers_carry_xml_lang(plays):
    """RFC 6120 §4.7.4: the response stream header MUST have an xml:lang."""
    for server in SERVERS:
        headers = [h for script in SCRIPTS for h in plays.plays[script, server].headers]
        assert headers
        missing = [h for h in headers if XML_LANG not in h]
        if missing and server == "prosody":
            raise AssertionError(f"Prosody sent headers without xml:lang: {missing}")
        if missing:
            raise XmppdDiffers(f"xmppd sent {len(missing)} headers without xml:lang: "
                               f"{missing[:2]}")
