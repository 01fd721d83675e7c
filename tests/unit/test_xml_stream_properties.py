"""Property-based tests of the XML stream layer (issue 10).

Arbitrary splits and mutations of valid and invalid streams never crash a
session, and always end in stanzas or in the right RFC 6120 stream error:

* a valid stream (header, generated stanzas with attributes, nested children,
  escaped text, multi-byte characters, CDATA, CR LF, whitespace keep-alives)
  fed in any split, down to one byte a read, gives exactly the stanzas it gives
  when fed whole, and those are the stanzas that were written;
* a mutated stream (byte flips, truncation, comments, processing instructions,
  DTDs, entities, nesting beyond the limit, BOMs and UTF-16, invalid UTF-8,
  wrong root or namespace, data after the stream's end...) never raises out of
  ``dataReceived``; what comes out is stanzas only, or exactly one
  ``<stream:error/>`` whose condition fits (RFC 6120 §4.9.3) followed by
  ``</stream:stream>`` and ``loseConnection``; after it nothing is processed;
* the size limit counts the whole stanza, end tag included, in any split;
* the real :class:`~xmppd.c2s.session.C2SSession` (over an in-memory server,
  logged in with SASL PLAIN) gives the same transcript however its input is
  split, and survives the same mutations.

The stream layer runs over :class:`twisted.internet.testing.StringTransport`;
everything the server writes is parsed back with ElementTree.

The examples are derandomised so that CI always runs the same ones; set
``XMPPD_HYPOTHESIS_EXPLORE=1`` to explore new ones (and more of them).
"""

from __future__ import annotations

import base64
import os
import re
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, assume, event, given, note, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from xmppd.xml.stream import MAX_DEPTH, XMPPStream

NS_STREAMS = "http://etherx.jabber.org/streams"
NS_CLIENT = "jabber:client"
NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_XML = "http://www.w3.org/XML/1998/namespace"

#: The defined conditions of RFC 6120 §4.9.3.
RFC6120_CONDITIONS = frozenset({
    "bad-format", "bad-namespace-prefix", "conflict", "connection-timeout", "host-gone",
    "host-unknown", "improper-addressing", "internal-server-error", "invalid-from",
    "invalid-namespace", "invalid-xml", "not-authorized", "not-well-formed",
    "policy-violation", "remote-connection-failed", "reset", "resource-constraint",
    "restricted-xml", "see-other-host", "system-shutdown", "undefined-condition",
    "unsupported-encoding", "unsupported-feature", "unsupported-stanza-type",
    "unsupported-version",
})
#: What the XML layer itself may answer bad bytes with.
XML_LAYER = frozenset({
    "bad-format", "bad-namespace-prefix", "invalid-namespace", "invalid-xml",
    "not-well-formed", "policy-violation", "restricted-xml", "unsupported-encoding",
})
NOT_WELL_FORMED = frozenset({"not-well-formed"})
RESTRICTED = frozenset({"restricted-xml"})
#: Bad bytes in UTF-8: RFC 6120 §4.9.3.22 names them, and they break XML well-formedness.
BAD_ENCODING = frozenset({"not-well-formed", "unsupported-encoding"})
WRONG_ROOT = frozenset({"invalid-namespace", "bad-namespace-prefix"})

EXPLORE = bool(os.environ.get("XMPPD_HYPOTHESIS_EXPLORE"))


def examples(n: int) -> settings:
    return settings(max_examples=n * 10 if EXPLORE else n, deadline=None,
                    derandomize=not EXPLORE, database=None, print_blob=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


# -- generated streams ------------------------------------------------------------------------
#
# A stream is generated as a tree, then written out by an Emitter that also
# records what a parser must deliver (a model of each stanza), where each
# stanza ends, and the offsets where markup may be inserted (with the depth
# of the open elements there, the stream root being depth 1).

@dataclass
class Text:
    written: str  # as it goes on the wire
    logical: str  # what a parser makes of it


@dataclass
class Attr:
    written_name: str
    key: object  # as domish keys it: "name" or (namespace, name)
    written_value: str  # escaped for its quote
    logical: str
    quote: str


@dataclass
class Node:
    name: str
    ns_mode: str  # inherit | default | prefix | same (xmlns repeating the inherited one)
    uri: str = ""
    prefix: str = ""
    attrs: list = field(default_factory=list)
    spaces: list = field(default_factory=list)
    children: list = field(default_factory=list)  # Node | Text
    selfclose: bool = True


@dataclass
class Stream:
    data: bytes
    models: list  # what the parser must deliver, in order
    ends: list  # byte offset just after each stanza
    safe: list  # (offset, depth): markup may be inserted here
    header_start: int
    header_end: int
    closed_at: int | None  # offset after </stream:stream>, if the stream ends


def _is_xml_char(c: str) -> bool:
    o = ord(c)
    return o in (0x9, 0xA, 0xD) or 0x20 <= o <= 0xD7FF or 0xE000 <= o <= 0xFFFD or o >= 0x10000


xml_chars = st.one_of(
    st.characters(codec="utf-8", min_codepoint=0x20).filter(_is_xml_char),
    st.sampled_from("\t\n<>&'\"]é€中ß\u0301\U0001F600\U00010348"),  # escapes, 2/3/4-byte UTF-8
)


@st.composite
def char_run(draw) -> Text:
    written, logical = [], []
    for c, how in draw(st.lists(st.tuples(xml_chars, st.sampled_from(["raw", "raw", "dec", "hex"])),
                                min_size=1, max_size=12)):
        logical.append(c)
        if how == "dec" or c == "\r":
            written.append(f"&#{ord(c)};")
        elif how == "hex":
            written.append(f"&#x{ord(c):X};")
        else:
            written.append({"&": "&amp;", "<": "&lt;", ">": "&gt;"}.get(c, c))
    return Text("".join(written), "".join(logical))


named_entity = st.sampled_from([Text("&amp;", "&"), Text("&lt;", "<"), Text("&gt;", ">"),
                                Text("&quot;", '"'), Text("&apos;", "'")])
cdata = st.text(xml_chars.filter(lambda c: c != "\r"), max_size=10).filter(
    lambda s: "]]>" not in s and not s.endswith("]") and not s.endswith("]]")).map(
    lambda s: Text(f"<![CDATA[{s}]]>", s))
newline = st.sampled_from([Text("\r\n", "\n"), Text("\n", "\n")])
text_piece = st.one_of(char_run(), char_run(), named_entity, cdata, newline)


@st.composite
def attr_value(draw, quote: str) -> tuple[str, str]:
    written, logical = [], []
    for c, charref in draw(st.lists(st.tuples(xml_chars, st.booleans()), max_size=10)):
        logical.append(c)
        if charref or c in "\t\n\r":
            written.append(f"&#{ord(c)};")
        else:
            written.append({"&": "&amp;", "<": "&lt;", quote: "&apos;" if quote == "'" else "&quot;"}
                           .get(c, c))
    return "".join(written), "".join(logical)


names = st.one_of(
    st.from_regex(r"[a-z_][a-z0-9._-]{0,7}", fullmatch=True).filter(
        lambda n: not n.lower().startswith("xml")),
    st.sampled_from(["body", "x", "query", "café", "名前", "Ünï"]),
)
spaces = st.sampled_from([" ", " ", "  ", "\n", "\t", "\r\n "])


@st.composite
def attributes(draw, fixed=()) -> tuple[list, list]:
    """Attributes: ``fixed`` (name, logical value) pairs first, then random ones."""
    result, keys = [], set()
    for name, value in fixed:
        quote = draw(st.sampled_from("'\""))
        result.append(Attr(name, name, value, value, quote))
        keys.add(name)
    for name in draw(st.lists(names, max_size=3)):
        key = name
        if name in ("from", "to", "id", "type"):  # only as ``fixed`` ones
            continue
        if draw(st.integers(0, 9)) == 0:
            name, key = "xml:lang", (NS_XML, "lang")
        if key in keys:
            continue
        keys.add(key)
        quote = draw(st.sampled_from("'\""))
        written, logical = draw(attr_value(quote))
        result.append(Attr(name, key, written, logical, quote))
    return result, [draw(spaces) for _ in result]


@st.composite
def element(draw, depth: int) -> Node:
    mode = draw(st.sampled_from(["inherit", "inherit", "default", "prefix"]))
    node = Node(draw(names), mode)
    if mode != "inherit":
        node.uri = draw(st.sampled_from(["urn:x", "urn:y:ß", "jabber:x:data", "http://e.org/ns#1"]))
        node.prefix = draw(st.sampled_from(["p", "q1", "ns"]))
    node.attrs, node.spaces = draw(attributes())
    if depth > 0:
        node.children = draw(st.lists(st.one_of(text_piece, element(depth - 1)), max_size=4))
    node.selfclose = not node.children and draw(st.booleans())
    return node


@st.composite
def stanza(draw, kinds=("message", "presence", "iq"), fixed=None, max_depth: int = 3) -> Node:
    name = draw(st.sampled_from(kinds))
    node = Node(name, draw(st.sampled_from(["inherit", "inherit", "same"])))
    if fixed is None:
        fixed = []
        for attr, values in (("id", st.from_regex(r"[A-Za-z0-9-]{1,8}", fullmatch=True)),
                             ("type", st.sampled_from(["get", "set", "chat", "normal", "error"])),
                             ("to", st.sampled_from(["bob@localhost", "localhost", "a@b/c"]))):
            if draw(st.booleans()):
                fixed.append((attr, draw(values)))
    node.attrs, node.spaces = draw(attributes(fixed))
    node.children = draw(st.lists(st.one_of(text_piece, element(max_depth)), max_size=4))
    node.selfclose = not node.children and draw(st.booleans())
    return node


keepalive = st.sampled_from([" ", "\n", "\r\n", "\t", "   \n"])

HEADER_ATTRS = [("xmlns", NS_CLIENT), ("xmlns:stream", NS_STREAMS), ("to", "localhost"),
                ("version", "1.0")]


@st.composite
def header(draw, attrs=HEADER_ATTRS, root="stream:stream") -> str:
    attrs = list(attrs)
    if draw(st.booleans()):
        attrs.append(("xml:lang", "en"))
    attrs = draw(st.permutations(attrs))
    parts = [f"{draw(spaces)}{name}={q}{value}{q}" for (name, value), q in
             zip(attrs, draw(st.lists(st.sampled_from("'\""), min_size=len(attrs),
                                      max_size=len(attrs))))]
    return f"<{root}{''.join(parts)}{draw(st.sampled_from(['', ' ', chr(10)]))}>"


declarations = st.sampled_from(["", "", "<?xml version='1.0'?>", '<?xml version="1.0" encoding="UTF-8"?>',
                                "<?xml version='1.0' encoding='utf-8'?>\n"])


class Emitter:
    def __init__(self):
        self.buf = bytearray()
        self.safe: list[tuple[int, int]] = []

    def write(self, s: str) -> None:
        self.buf += s.encode("utf-8")

    def node(self, node: Node, default_ns: str, depth: int) -> tuple:
        """Write ``node`` at ``depth`` (a stanza is at 2); return its model."""
        qname, uri, child_default, decl = node.name, default_ns, default_ns, ""
        if node.ns_mode == "default":
            uri = child_default = node.uri
            decl = f" xmlns='{node.uri}'"
        elif node.ns_mode == "prefix":
            qname, uri = f"{node.prefix}:{node.name}", node.uri
            decl = f" xmlns:{node.prefix}='{node.uri}'"
        elif node.ns_mode == "same":
            decl = f" xmlns='{default_ns}'"
        self.write(f"<{qname}{decl}")
        for attr, space in zip(node.attrs, node.spaces):
            self.write(f"{space}{attr.written_name}={attr.quote}{attr.written_value}{attr.quote}")
        children: list = []
        if node.selfclose:
            self.write("/>")
        else:
            self.write(">")
            self.safe.append((len(self.buf), depth))
            for child in node.children:
                if isinstance(child, Text):
                    self.write(child.written)
                    children.append(child.logical)
                else:
                    children.append(self.node(child, child_default, depth + 1))
                self.safe.append((len(self.buf), depth))
            self.write(f"</{qname}>")
        return (uri, node.name, frozenset((a.key, a.logical) for a in node.attrs),
                _merge_text(children))


def _merge_text(children: list) -> tuple:
    merged: list = []
    for child in children:
        if isinstance(child, str):
            if not child:
                continue
            if merged and isinstance(merged[-1], str):
                merged[-1] += child
                continue
        merged.append(child)
    return tuple(merged)


def build_stream(decl: str, head: str, items: list, close: bool) -> Stream:
    e = Emitter()
    e.write(decl)
    header_start = len(e.buf)
    e.write(head)
    header_end = len(e.buf)
    e.safe.append((header_end, 1))
    models, ends = [], []
    for item in items:
        if isinstance(item, str):
            e.write(item)
        else:
            models.append(e.node(item, NS_CLIENT, 2))
            ends.append(len(e.buf))
        e.safe.append((len(e.buf), 1))
    closed_at = None
    if close:
        e.write("</stream:stream>")
        closed_at = len(e.buf)
    return Stream(bytes(e.buf), models, ends, e.safe, header_start, header_end, closed_at)


@st.composite
def streams(draw, max_items: int = 6, stanzas=None, close=None, lead=()) -> Stream:
    items = list(lead) + draw(st.lists(st.one_of(stanzas if stanzas is not None else stanza(), keepalive),
                                         max_size=max_items))
    return build_stream(draw(declarations), draw(header()), items,
                        draw(st.booleans()) if close is None else close)


@st.composite
def splits(draw, data: bytes) -> list[bytes]:
    """``data`` cut into reads: anywhere, often many, sometimes one byte each."""
    if len(data) <= 1:
        return [data]
    how = draw(st.sampled_from(["cuts", "cuts", "bytes", "small"]))
    if how == "bytes" and len(data) <= 800:
        cuts = list(range(1, len(data)))
    elif how in ("small", "bytes"):
        size = draw(st.integers(1 if how == "small" else 2, 7))
        cuts = list(range(size, len(data), size))
    else:
        cuts = sorted(draw(st.sets(st.integers(1, len(data) - 1), max_size=min(40, len(data) - 1))))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def model(element) -> tuple:
    """The model of a parsed domish element (compare with Emitter.node's)."""
    children = [c if isinstance(c, str) else model(c) for c in element.children]
    return (element.uri, element.name, frozenset(element.attributes.items()),
            _merge_text(children))


# -- running a stream -------------------------------------------------------------------------

class Recorder(XMPPStream):
    """The stream layer alone: answers the header as the session does, keeps stanzas."""

    def __init__(self, max_stanza_size: int):
        super().__init__(max_stanza_size)
        self.stanzas: list = []
        self.late: list[str] = []  # stanzas delivered after the stream was closed

    def streamStarted(self, root) -> None:
        self.send_header("localhost")

    def stanzaReceived(self, element) -> None:
        if self.closed or b"<stream:error" in self.transport.value():
            self.late.append(element.toXml())
        self.stanzas.append(element)


@dataclass
class Outcome:
    headers: int  # stream headers written: one per stream (a restart after TLS or SASL adds one)
    children: list  # top-level elements written, as ElementTree elements, all streams together
    ended: bool  # </stream:stream> written
    errors: list  # the <stream:error/> children
    raw: bytes


#: Every header the server writes starts so (see XMPPStream.send_header).
HEADER_START = b"<?xml version='1.0'?><stream:stream "


def parse_output(raw: bytes) -> Outcome:
    """What the server wrote: per stream one header, then elements; the last one
    maybe closed. Fails (ParseError) on anything else, such as a broken error."""
    parts = raw.split(HEADER_START)
    assert parts[0] == b"", raw  # nothing before the first header
    headers, ended, children = len(parts) - 1, False, []
    for number, part in enumerate(parts[1:], 1):
        parser = ET.XMLPullParser(events=("start", "end"))
        parser.feed(HEADER_START + part)
        depth = 0
        for event, elem in parser.read_events():
            if event == "start":
                depth += 1
                if depth == 1:
                    assert elem.tag == f"{{{NS_STREAMS}}}stream", raw
            else:
                depth -= 1
                if depth == 1:
                    children.append(elem)
                elif depth == 0:
                    assert number == headers, raw  # only the last stream is closed
                    ended = True
    errors = [c for c in children if c.tag == f"{{{NS_STREAMS}}}error"]
    return Outcome(headers, children, ended, errors, raw)


def error_condition(error) -> str:
    conditions = [c.tag.split("}")[1] for c in error
                  if c.tag.startswith(f"{{{NS_STREAM_ERRORS}}}") and c.tag != f"{{{NS_STREAM_ERRORS}}}text"]
    assert len(conditions) == 1, ET.tostring(error)
    return conditions[0]


@contextmanager
def no_logged_failures():
    """Fail if anything logged a traceback (an error a handler swallowed)."""
    failures = []

    def observer(event):
        if "log_failure" in event:
            failures.append(event["log_failure"].getTraceback())
    globalLogPublisher.addObserver(observer)
    try:
        yield
    finally:
        globalLogPublisher.removeObserver(observer)
    assert not failures, failures[0]


@dataclass
class Run:
    proto: XMPPStream
    transport: StringTransport
    out: Outcome
    error: str | None

    @property
    def stanzas(self) -> list:
        return [s.toXml() for s in self.proto.stanzas]

    @property
    def models(self) -> list:
        return [model(s) for s in self.proto.stanzas]


def feed(proto: XMPPStream, chunks: list[bytes]) -> Run:
    """Connect ``proto`` to a StringTransport, feed it ``chunks``, check the outcome,
    then drop the connection (which cancels the stream's timers)."""
    transport = StringTransport()
    with no_logged_failures():
        proto.makeConnection(transport)
        try:
            for chunk in chunks:
                proto.dataReceived(chunk)  # any exception out of here is a crash
            written = transport.value()
            # After a stream error or the end of the stream nothing more is processed.
            if proto.closed:
                count = len(getattr(proto, "stanzas", ()))
                proto.dataReceived(b"<presence/><message><body>more</body></message>")
                proto.dataReceived(b"</stream:stream>\xff<<")
                assert transport.value() == written
                assert len(getattr(proto, "stanzas", ())) == count
            out = parse_output(written)
            run = Run(proto, transport, out, check_outcome(proto, transport, out))
        finally:
            proto.connectionLost(Failure(ConnectionDone()))
    return run


def check_outcome(proto: XMPPStream, transport: StringTransport, out: Outcome) -> str | None:
    """The invariant of every run; returns the stream error condition, if any."""
    assert len(out.errors) <= 1, out.raw
    assert not getattr(proto, "late", None), proto.late
    if out.errors:
        condition = error_condition(out.errors[0])
        assert condition in RFC6120_CONDITIONS
        assert out.children[-1] is out.errors[0], out.raw  # nothing after the error
        assert out.headers >= 1 and out.ended, out.raw  # header, error, </stream:stream>
        assert out.raw.endswith(b"</stream:error></stream:stream>"), out.raw
        assert proto.closed and transport.disconnecting
        return condition
    if out.ended:  # the peer ended its stream: we end ours
        assert out.raw.endswith(b"</stream:stream>")
        assert proto.closed and transport.disconnecting
    else:
        assert not proto.closed and not transport.disconnecting, out.raw
    return None


def run_stream(chunks: list[bytes], max_stanza_size: int = 1 << 20) -> Run:
    run = feed(Recorder(max_stanza_size), chunks)
    assert run.out.headers <= 1, run.out.raw  # no restarts on this stream
    assert all(c.tag == f"{{{NS_STREAMS}}}error" for c in run.out.children), run.out.raw
    return run


def delivered_before(stream: Stream, offset: int) -> list:
    """The models of the stanzas complete in ``stream.data[:offset]``."""
    return [m for m, end in zip(stream.models, stream.ends) if end <= offset]


# -- valid streams ----------------------------------------------------------------------------

@examples(120)
@given(stream=streams(), data=st.data())
def test_any_split_of_a_valid_stream_gives_the_same_stanzas(stream, data):
    whole = run_stream([stream.data])
    assert whole.error is None
    assert whole.models == stream.models
    assert whole.out.headers == 1 and whole.out.ended == (stream.closed_at is not None)

    chunks = data.draw(splits(stream.data), label="chunks")
    split = run_stream(chunks)
    assert split.error is None
    assert split.stanzas == whole.stanzas  # the same serialisations
    assert split.models == stream.models
    assert split.out.raw.replace(split.proto.stream_id.encode(), b"ID") == \
        whole.out.raw.replace(whole.proto.stream_id.encode(), b"ID")


@examples(40)
@given(stream=streams(max_items=3, close=False))
def test_one_byte_reads_of_a_valid_stream(stream):
    run = run_stream([stream.data[i:i + 1] for i in range(len(stream.data))])
    assert run.error is None and not run.out.ended
    assert run.models == stream.models


@pytest.mark.parametrize("text", ["é", "€", "中文", "\U0001F600", "a\U00010348b", "ß\r\nü"])
def test_multibyte_characters_split_at_every_byte(text):
    body = text.encode()
    data = (b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
            b"to='localhost' version='1.0'><message><body>" + body + b"</body></message>")
    start = data.index(body)
    for cut in range(start, start + len(body) + 1):
        run = run_stream([data[:cut], data[cut:]])
        assert run.error is None
        assert [str(next(s.elements())) for s in run.proto.stanzas] == [text.replace("\r\n", "\n")]


# -- mutated streams --------------------------------------------------------------------------

@dataclass
class Case:
    """A mutated stream, and what the stream layer must make of it."""

    kind: str
    data: bytes
    conditions: frozenset  # the acceptable stream errors
    must_fail: bool = True  # False: stanzas only is acceptable too
    before: list | None = None  # exactly these stanzas arrive (before any error)
    same_in_any_split: bool = True  # the outcome does not depend on the reads


def insert(stream: Stream, offset: int, what: bytes) -> bytes:
    return stream.data[:offset] + what + stream.data[offset:]


def unclosed(stream: Stream) -> Stream:
    """``stream`` without its closing tag (so a fault after it is still read)."""
    if stream.closed_at is None:
        return stream
    return Stream(stream.data[:-len(b"</stream:stream>")], stream.models, stream.ends,
                  stream.safe, stream.header_start, stream.header_end, None)


comment_text = st.lists(st.sampled_from(["a", "b", " ", "<", ">", "&", "é", "-a"]), max_size=8).map("".join)
pi_target = names.filter(lambda n: ":" not in n)


@st.composite
def mutations(draw, lead=()) -> Case:
    """A generated stream (starting with the ``lead`` stanzas), damaged one way;
    the faults inside the stream are placed after the ``lead`` stanzas."""
    stream = draw(streams(max_items=5, lead=lead))
    floor = stream.ends[len(lead) - 1] if lead else 0
    kind = draw(st.sampled_from([
        "flip", "flip", "truncate", "comment", "pi", "pi-prolog", "comment-prolog", "doctype-prolog",
        "doctype-inside", "entity", "nesting", "bom", "utf-16", "invalid-utf8", "bad-char",
        "wrong-root", "after-end", "utf8-bom", "declaration-inside", "unbound-prefix", "junk-text",
    ]))
    data = stream.data
    if kind == "flip":
        data = bytearray(data)
        for _ in range(draw(st.integers(1, 3))):
            data[draw(st.integers(min(floor, len(data) - 1), len(data) - 1))] = draw(st.integers(0, 255))
        return Case(kind, bytes(data), XML_LAYER, must_fail=False, same_in_any_split=False)
    if kind == "truncate":
        cut = draw(st.integers(floor, len(data)))
        return Case(kind, data[:cut], frozenset(), must_fail=False, before=delivered_before(stream, cut))
    if kind in ("comment-prolog", "pi-prolog", "doctype-prolog"):
        markup = {"comment-prolog": f"<!--{draw(comment_text)}-->",
                  "pi-prolog": f"<?{draw(pi_target)} x?>",
                  "doctype-prolog": draw(st.sampled_from([
                      "<!DOCTYPE stream:stream>", "<!DOCTYPE s [<!ENTITY x 'y'>]>",
                      "<!DOCTYPE s SYSTEM 'file:///etc/passwd'>",
                      "<!DOCTYPE s [<!ENTITY a 'a'><!ENTITY b '&a;&a;&a;'>]>"]))}[kind]
        return Case(kind, insert(stream, stream.header_start, markup.encode()), RESTRICTED, before=[])
    # the remaining faults go after the stream header, inside the stream
    stream = unclosed(stream)
    offset, depth = draw(st.sampled_from([(o, d) for o, d in stream.safe if o >= floor]))
    before = delivered_before(stream, offset)
    if kind == "comment":
        return Case(kind, insert(stream, offset, f"<!--{draw(comment_text)}-->".encode()),
                    RESTRICTED, before=before)
    if kind == "pi":
        return Case(kind, insert(stream, offset, f"<?{draw(pi_target)} data?>".encode()),
                    RESTRICTED, before=before)
    if kind == "declaration-inside":
        return Case(kind, insert(stream, offset, b"<?xml version='1.0'?>"),
                    NOT_WELL_FORMED | RESTRICTED, before=before)
    if kind == "doctype-inside":
        return Case(kind, insert(stream, offset, b"<!DOCTYPE x [<!ENTITY e 'boom'>]>"),
                    NOT_WELL_FORMED | RESTRICTED, before=before)
    if kind == "entity":
        name = draw(names.filter(lambda n: n not in ("amp", "lt", "gt", "quot", "apos")
                                 and ":" not in n))
        return Case(kind, insert(stream, offset, f"&{name};".encode()),
                    NOT_WELL_FORMED | RESTRICTED, before=before)
    if kind == "nesting":
        extra = draw(st.integers(1, 5))
        levels = MAX_DEPTH - depth + extra  # opened here: depth + levels > MAX_DEPTH
        nest = b"<d>" * levels + b"</d>" * levels
        return Case(kind, insert(stream, offset, nest), frozenset({"policy-violation"}), before=before)
    if kind == "invalid-utf8":
        bad = draw(st.sampled_from([b"\xff", b"\xfe", b"\x80", b"\xc3(", b"\xc0\xaf", b"\xe0\x80\xaf",
                                    b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80",
                                    b"\xe2\x82", b"\xf0\x9f\x98"]))
        return Case(kind, insert(stream, offset, bad + b"a<x/>"), BAD_ENCODING, before=before)
    if kind == "bad-char":
        bad = draw(st.sampled_from([b"&#0;", b"&#x1;", b"\x01", b"\x00", b"&#xFFFE;", b"&#xD800;",
                                    b"\x1b", b"&#x110000;"]))
        return Case(kind, insert(stream, offset, bad), NOT_WELL_FORMED | BAD_ENCODING, before=before)
    if kind == "unbound-prefix":
        return Case(kind, insert(stream, offset, b"<nope:x/>"),
                    NOT_WELL_FORMED | frozenset({"bad-namespace-prefix"}), before=before)
    if kind == "junk-text":
        # '<' alone, a stray end tag, an unterminated attribute
        junk = draw(st.sampled_from([b"<", b"</nope>", b"<a b='c>", b"<a b=c/>", b"<a a='1' a='2'/>",
                                     b"]]>", b"</>", b"<a></b>", b"<1a/>"]))
        if junk in (b"<", b"<a b='c>"):  # incomplete: an error once more arrives
            junk += b"<!-- --><</><"
        if junk == b"]]>" and depth == 1:
            junk = b"]]><x"  # between stanzas text is ignored, not parsed as content
        return Case(kind, insert(stream, offset, junk),
                    NOT_WELL_FORMED | RESTRICTED, before=before)
    if kind == "after-end":
        second = draw(st.sampled_from([
            b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
            b"to='localhost' version='1.0'><presence/>",
            b"<presence/>", b"junk", b"\xff\xfe", b"<!-- c -->", b"</stream:stream>"]))
        data = stream.data + b"</stream:stream>" + second
        return Case(kind, data, frozenset(), must_fail=False, before=list(stream.models))
    # Anything but UTF-8 is refused; unsupported-encoding fits best, and since these
    # bytes are not UTF-8 either, not-well-formed fits too (which one may depend on
    # the reads).
    if kind == "bom":
        bom = draw(st.sampled_from([b"\xfe\xff", b"\xff\xfe", b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00"]))
        return Case(kind, bom + stream.data, BAD_ENCODING, before=[], same_in_any_split=False)
    if kind == "utf-16":
        codec = draw(st.sampled_from(["utf-16", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]))
        return Case(kind, stream.data.decode("utf-8").encode(codec), BAD_ENCODING, before=[],
                    same_in_any_split=False)
    if kind == "utf8-bom":  # allowed by XML; accepted or refused, but alike in any split
        return Case(kind, b"\xef\xbb\xbf" + stream.data, BAD_ENCODING, must_fail=False)
    if kind == "wrong-root":
        attrs, root = draw(st.sampled_from([
            ([("xmlns", "jabber:server"), ("xmlns:stream", NS_STREAMS)], "stream:stream"),
            ([("xmlns", "urn:nope"), ("xmlns:stream", NS_STREAMS)], "stream:stream"),
            ([("xmlns", NS_CLIENT), ("xmlns:stream", "urn:wrong")], "stream:stream"),
            ([("xmlns", NS_CLIENT), ("xmlns:stream", NS_STREAMS)], "stream:features"),
            ([("xmlns", NS_CLIENT), ("xmlns:stream", NS_STREAMS)], "stream:streams"),
            ([("xmlns", NS_CLIENT)], "stream"),
            ([("xmlns:stream", NS_STREAMS)], "stream:stream"),
            ([("xmlns", NS_CLIENT)], "message"),
            ([("xmlns", NS_STREAMS)], "stream"),
        ]))
        head = draw(header(attrs + [("to", "localhost"), ("version", "1.0")], root=root))
        data = stream.data[:stream.header_start] + head.encode() + stream.data[stream.header_end:]
        return Case(kind, data, WRONG_ROOT, before=[])
    raise AssertionError(kind)


def check_case(case: Case, run: Run) -> None:
    if run.error is not None:
        assert run.error in case.conditions, (case.kind, run.error, run.out.raw)
    else:
        assert not case.must_fail, (case.kind, run.out.raw)
    if case.before is not None:
        assert run.models == case.before


@examples(250)
@given(case=mutations(), data=st.data())
def test_mutated_streams_end_in_stanzas_or_the_right_stream_error(case, data):
    note(f"{case.kind}: {case.data!r}")
    whole = run_stream([case.data])
    check_case(case, whole)
    chunks = data.draw(splits(case.data), label="chunks")
    split = run_stream(chunks)
    event(f"{case.kind}: {split.error or 'stanzas only'}")
    check_case(case, split)
    if case.same_in_any_split:
        assert (split.error, split.stanzas) == (whole.error, whole.stanzas)


@pytest.mark.parametrize("codec, first_read", [("utf-16-le", None), ("utf-16", 1), ("utf-16-be", 1)])
def test_utf16_stream_is_refused(codec, first_read):
    # utf-16-le without a BOM starts with '<' and no NUL; "utf-16" starts with the BOM FF FE
    data = ("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
            "to='localhost' version='1.0'><presence/>").encode(codec)
    if codec == "utf-16-be":
        data = b"\xfe\xff" + data
    chunks = [data] if first_read is None else [data[:first_read], data[first_read:]]
    run = run_stream(chunks)
    assert run.error in BAD_ENCODING
    assert run.stanzas == []


# -- the size limit ---------------------------------------------------------------------------

LIMIT = 1024  # the smallest max_stanza_size the configuration allows


@st.composite
def sized_stream(draw, delta_range: tuple[int, int]):
    """A stream with one stanza of exactly LIMIT + delta bytes (end tag included), padded
    in its text or in an attribute, between small stanzas; its index among the stanzas."""
    small = stanza(max_depth=0).filter(lambda n: len(build_stream("", "", [n], False).data) < 300)
    before = draw(st.lists(st.one_of(small, keepalive), max_size=3))
    after = draw(st.lists(st.one_of(small, keepalive), max_size=2))
    big = draw(stanza(max_depth=1))
    big.selfclose = False
    pad_in_attribute = draw(st.booleans())
    pad = Attr("pad", "pad", "", "", "'") if pad_in_attribute else Text("", "")
    if pad_in_attribute:
        big.attrs.append(pad)
        big.spaces.append(" ")
    else:
        big.children.append(pad)
    size = len(build_stream("", "", [big], False).data)
    target = LIMIT + draw(st.integers(*delta_range))
    assume(size <= target)
    filler = draw(st.sampled_from(["a", "é", "€", "\U0001F600"]))
    width = len(filler.encode())
    count, rest = divmod(target - size, width)
    padding = filler * count + "b" * rest
    if pad_in_attribute:
        pad.written_value = pad.logical = padding
    else:
        pad.written = pad.logical = padding
    stream = build_stream(draw(declarations), draw(header()), before + [big] + after, False)
    index = sum(1 for item in before if not isinstance(item, str))
    start, end = stream.ends[index] - target, stream.ends[index]
    assert end - start == target and stream.data[start:start + 1] == b"<"
    return stream, index


@examples(80)
@given(case=sized_stream((-60, 0)), data=st.data())
def test_a_stanza_within_the_size_limit_passes_in_any_split(case, data):
    stream, index = case
    for chunks in ([stream.data], data.draw(splits(stream.data), label="chunks")):
        run = run_stream(chunks, LIMIT)
        assert run.error is None, ([len(c) for c in chunks], run.out.raw)
        assert run.models == stream.models


@examples(80)
@given(case=sized_stream((1, 40)), data=st.data())
def test_a_stanza_over_the_size_limit_is_refused_in_any_split(case, data):
    stream, index = case
    for chunks in ([stream.data], data.draw(splits(stream.data), label="chunks")):
        run = run_stream(chunks, LIMIT)
        assert run.error == "policy-violation", ([len(c) for c in chunks], run.out.raw)
        assert run.models == stream.models[:index]  # the ones before it, not it, not after


@examples(40)
@given(case=sized_stream((60, 3000)), data=st.data())
def test_a_stanza_far_over_the_size_limit_is_refused_in_any_split(case, data):
    """Over the limit by more than any end tag: refused today as well."""
    stream, index = case
    for chunks in ([stream.data], data.draw(splits(stream.data), label="chunks")):
        run = run_stream(chunks, LIMIT)
        assert run.error == "policy-violation", ([len(c) for c in chunks], run.out.raw)
        assert run.models == stream.models[:index]


HEAD = (b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
        b"to='localhost' version='1.0'>")


@pytest.mark.parametrize("after", [
    b" " * LIMIT + b"<presence/>",  # whitespace keep-alives, then a stanza
    b"<message a='" + b"a" * (LIMIT - 15) + b"'/>",  # a stanza of exactly the limit
], ids=["keep-alives", "stanza-at-limit"])
def test_a_self_closing_stanza_is_measured_to_its_own_end(after):
    run = run_stream([HEAD + b"<presence/>" + after], LIMIT)
    assert run.error is None
    assert [s.name for s in run.proto.stanzas] == ["presence", after.strip()[1:9].strip(b" /").decode()]


# -- the real client session ------------------------------------------------------------------

USER, PASSWORD, RESOURCE = "prop@localhost", "secret", "fuzz"
FULL_JID = f"{USER}/{RESOURCE}"


@pytest.fixture(scope="module")
def harness():
    from xmppd.testing import Harness

    h = Harness(["disco", "ping"], options={"c2s": {"allow_plain": "true"}})
    h.add_user(USER, PASSWORD)
    yield h
    h.stop()


def session_run(harness, phases: list[list[bytes]]) -> Run:
    """A C2SSession (direct TLS, so PLAIN is offered) fed ``phases`` of reads."""
    from xmppd.c2s.session import C2SSession

    session = C2SSession(harness.server, direct_tls=True)
    return feed(session, [chunk for phase in phases for chunk in phase])


def login_phases(stream: Stream) -> tuple[bytes, bytes]:
    """Header and SASL PLAIN; then the restarted stream: header, bind, ``stream``'s stanzas.

    The restart is a read boundary: what follows ``<auth/>`` in the same read
    belongs to the old stream and is discarded (RFC 6120 §6.4.6)."""
    auth = base64.b64encode(f"\0{USER.split('@')[0]}\0{PASSWORD}".encode()).decode()
    first = (stream.data[:stream.header_end] +
             f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{auth}</auth>".encode())
    bind = (f"<iq type='set' id='bind'><bind xmlns='{NS_BIND}'><resource>{RESOURCE}</resource>"
            f"</bind></iq>").encode()
    second = stream.data[:stream.header_end] + bind + stream.data[stream.header_end:]
    return first, second


def normalised(run: Run) -> bytes:
    return re.sub(rb"id='[0-9a-f]{32}'", b"id='ID'", run.out.raw)


to_self = st.builds(lambda i: [("to", FULL_JID), ("id", f"m{i}"), ("type", "chat")],
                    st.integers(0, 10 ** 6))
ping = st.just([("to", "localhost"), ("type", "get"), ("id", "ping")])


@st.composite
def session_stanzas(draw):
    """Messages to the session itself (they come back) and iqs to the server."""
    kind = draw(st.sampled_from(["message", "message", "iq"]))
    if kind == "message":
        return draw(stanza(kinds=("message",), fixed=draw(to_self), max_depth=2))
    node = draw(stanza(kinds=("iq",), fixed=draw(ping), max_depth=0))
    node.children = [Node("ping", "default", uri="urn:xmpp:ping")]
    node.selfclose = False
    return node


@examples(40)
@given(stream=streams(max_items=5, stanzas=session_stanzas(), close=False), data=st.data())
def test_session_transcript_does_not_depend_on_the_reads(harness, stream, data):
    first, second = login_phases(stream)
    whole = session_run(harness, [[first], [second]])
    assert whole.error is None, whole.out.raw
    names = [c.tag for c in whole.out.children]
    assert f"{{{NS_SASL}}}success" in names, whole.out.raw
    sent = [m for m in stream.models if m[1] == "message"]
    echoed = [c for c in whole.out.children if c.tag == f"{{{NS_CLIENT}}}message"]
    assert [dict(m[2])["id"] for m in sent] == [c.get("id") for c in echoed]
    assert all(c.get("from") == FULL_JID for c in echoed)
    pongs = [c for c in whole.out.children if c.tag == f"{{{NS_CLIENT}}}iq" and c.get("id") == "ping"]
    assert len(pongs) == sum(1 for m in stream.models if m[1] == "iq")
    assert all(p.get("type") == "result" for p in pongs)

    split = session_run(harness, [data.draw(splits(first), label="first reads"),
                                  data.draw(splits(second), label="second reads")])
    assert normalised(split) == normalised(whole)


BIND = Node("iq", "inherit", attrs=[Attr("type", "type", "set", "set", "'"),
                                   Attr("id", "id", "bind", "bind", "'")], spaces=[" ", " "],
            children=[Node("bind", "default", uri=NS_BIND, selfclose=False, children=[
                Node("resource", "inherit", selfclose=False, children=[Text(RESOURCE, RESOURCE)])])],
            selfclose=False)


@examples(100)
@given(bound=st.booleans(), data=st.data())
def test_session_survives_mutated_streams(harness, bound, data):
    """The real session, before authentication or bound: never an exception, one
    stream error at most, with a defined condition that fits what was sent."""
    phases = []
    if bound:
        # log in over an intact stream; the mutated one is the restarted stream,
        # and starts with the bind request
        first, _ = login_phases(build_stream("", data.draw(header()), [], False))
        phases.append([first])
    case = data.draw(mutations(lead=[BIND] if bound else []), label="case")
    note(f"{case.kind}: {case.data!r}")
    phases.append(data.draw(splits(case.data), label="reads"))
    run = session_run(harness, phases)
    event(f"{'bound' if f'<jid>{FULL_JID}</jid>'.encode() in run.out.raw else 'not bound'}: "
          f"{run.error or 'no stream error'}")
    if bound and case.kind == "after-end":
        assert f"<jid>{FULL_JID}</jid>".encode() in run.out.raw, run.out.raw
    if run.error is not None:
        # stream-level faults, or what the session refuses (stanzas before login,
        # a 'from' it does not own, a non-stanza element...)
        session_level = {"not-authorized", "unsupported-stanza-type", "invalid-from",
                         "host-unknown", "policy-violation", "unsupported-version"}
        assert run.error in case.conditions | session_level, (case.kind, run.error, run.out.raw)
