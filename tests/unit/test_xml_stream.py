"""HardenedElementStream: RFC 6120 §11 restricted XML, depth and size limits."""

import pytest

from xmppd.xml.stream import MAX_DEPTH, HardenedElementStream, StreamProblem

HEADER = (b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
          b"to='localhost' version='1.0'>")


class Collector:
    def __init__(self, max_stanza_size=4096):
        self.stream = HardenedElementStream(max_stanza_size)
        self.roots, self.stanzas, self.ended = [], [], False
        self.stream.DocumentStartEvent = self.roots.append
        self.stream.ElementEvent = self.stanzas.append
        self.stream.DocumentEndEvent = lambda: setattr(self, "ended", True)

    def feed(self, data: bytes):
        self.stream.parse(data)


def started(max_stanza_size=4096):
    c = Collector(max_stanza_size)
    c.feed(HEADER)
    assert len(c.roots) == 1
    return c


def problem(c, data):
    with pytest.raises(StreamProblem) as info:
        c.feed(data)
    return info.value.condition


def test_stanzas_are_delivered_as_elements():
    c = started()
    c.feed(b"<message to='bob@localhost' id='1'><body>hi</body></message><presence/>")
    assert [s.name for s in c.stanzas] == ["message", "presence"]
    assert c.stanzas[0].uri == "jabber:client"
    assert str(next(c.stanzas[0].elements("jabber:client", "body"))) == "hi"


def test_xml_declaration_is_allowed():
    c = Collector()
    c.feed(b"<?xml version='1.0' encoding='UTF-8'?>" + HEADER + b"<presence/>")
    assert len(c.roots) == 1 and len(c.stanzas) == 1


def test_stream_end_is_reported():
    c = started()
    c.feed(b"</stream:stream>")
    assert c.ended


@pytest.mark.parametrize("data", [
    b"<!DOCTYPE foo>",
    b"<!DOCTYPE foo [<!ENTITY x 'y'>]>",
    b"<!DOCTYPE lolz [<!ENTITY lol 'lol'><!ENTITY lol2 '&lol;&lol;&lol;'>]><lolz>&lol2;</lolz>",
    b"<!DOCTYPE foo SYSTEM 'file:///etc/passwd'>",
])
def test_doctype_and_entity_declarations_before_the_stream_are_restricted(data):
    c = Collector()
    assert problem(c, b"<?xml version='1.0'?>" + data) == "restricted-xml"


def test_comment_is_restricted():
    assert problem(started(), b"<message><!-- hidden --></message>") == "restricted-xml"


def test_comment_between_stanzas_is_restricted():
    assert problem(started(), b"<!-- between -->") == "restricted-xml"


def test_processing_instruction_is_restricted():
    assert problem(started(), b"<message><?php echo 1; ?></message>") == "restricted-xml"


def test_processing_instruction_before_the_stream_is_restricted():
    c = Collector()
    assert problem(c, b"<?xml-stylesheet href='x'?>" + HEADER) == "restricted-xml"


def test_undeclared_entity_reference_is_not_well_formed():
    assert problem(started(), b"<message>&foo;</message>") == "not-well-formed"


def test_predefined_entities_and_character_references_are_fine():
    c = started()
    c.feed(b"<message><body>&lt;&amp;&#233;</body></message>")
    assert str(next(c.stanzas[0].elements())) == "<&\u00e9"


def test_nesting_up_to_the_limit_is_accepted():
    c = started(1 << 20)
    inner = MAX_DEPTH - 1  # the stream root is level 1
    c.feed(b"<iq>" + b"<x>" * (inner - 1) + b"</x>" * (inner - 1) + b"</iq>")
    assert len(c.stanzas) == 1


def test_nesting_deeper_than_64_is_a_policy_violation():
    c = started(1 << 20)
    assert MAX_DEPTH == 64
    assert problem(c, b"<iq>" + b"<x>" * MAX_DEPTH) == "policy-violation"


def test_stanza_larger_than_max_in_one_chunk_is_a_policy_violation():
    c = started(1024)
    big = b"<message><body>" + b"a" * 2000 + b"</body></message>"
    assert problem(c, big) == "policy-violation"
    assert c.stanzas == []


def test_complete_stanza_larger_than_max_followed_by_more_data_is_a_policy_violation():
    c = started(1024)
    big = b"<message><body>" + b"a" * 2000 + b"</body></message><presence/>"
    assert problem(c, big) == "policy-violation"


def test_stanza_larger_than_max_across_chunks_is_a_policy_violation():
    c = started(1024)
    c.feed(b"<message><body>")
    with pytest.raises(StreamProblem) as info:
        for _ in range(20):
            c.feed(b"a" * 100)
    assert info.value.condition == "policy-violation"
    assert c.stanzas == []


def test_unfinished_stanza_is_caught_before_it_completes():
    c = started(1024)
    c.feed(b"<presence/>")  # the stream header is no longer counted once a stanza completed
    c.feed(b"<message><body>" + b"a" * 900)
    assert problem(c, b"a" * 200) == "policy-violation"
def test_stream_header_does_not_count_against_the_first_stanza():
    c = started(1024)
    c.feed(b"<message><body>" + b"a" * 900)  # 915 bytes, plus a 114-byte header before it
    c.feed(b"</body></message>")
    assert len(c.stanzas) == 1
def test_unfinished_stanza_starting_mid_read_is_counted_from_its_start():
    c = started(1024)
    c.feed(b"<presence/><message><body>" + b"a" * 1000)
    # 1015 bytes of <message> buffered; 100 more make it larger than the maximum
    assert problem(c, b"a" * 100) == "policy-violation"


def test_stanza_just_under_max_is_accepted():
    c = started(1024)
    stanza = b"<message><body>" + b"a" * 900 + b"</body></message>"
    assert len(stanza) < 1024
    c.feed(stanza)
    assert len(c.stanzas) == 1


def test_many_small_stanzas_in_one_chunk_exceeding_max_in_total_are_fine():
    c = started(1024)
    small = b"<message><body>" + b"a" * 50 + b"</body></message>"
    c.feed(small * 200)  # ~16 KB in one read
    assert len(c.stanzas) == 200


def test_many_small_stanzas_across_chunks_exceeding_max_in_total_are_fine():
    c = started(1024)
    small = b"<presence><status>" + b"s" * 100 + b"</status></presence>"
    for _ in range(100):
        c.feed(small)
    assert len(c.stanzas) == 100


def test_small_stanzas_split_across_chunk_boundaries_are_fine():
    c = started(1024)
    data = (b"<message><body>" + b"a" * 300 + b"</body></message>") * 50
    for i in range(0, len(data), 700):
        c.feed(data[i:i + 700])
    assert len(c.stanzas) == 50


@pytest.mark.parametrize("data", [
    b"<message><body></message>",
    b"<message id='1' id='2'/>",
    b"<message><</message>",
    b"<foo:bar/>",               # unbound prefix
    b"\xff\xfe<message/>",       # not UTF-8
])
def test_malformed_xml_is_not_well_formed(data):
    assert problem(started(), data) == "not-well-formed"


def test_stream_problem_carries_condition_and_text():
    e = StreamProblem("policy-violation", "too big")
    assert (e.condition, e.text) == ("policy-violation", "too big")
