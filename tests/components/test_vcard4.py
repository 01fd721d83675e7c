"""XEP-0292 vCard4 over PEP and XEP-0398 avatar conversion: the pure
conversions first, then the component in the harness."""

import base64
import hashlib
import os
import struct
import zlib

import pytest

from xmppd import ns
from xmppd.components.vcard4 import (
    Avatar,
    avatar_from_pep,
    chosen_info,
    image_size,
    image_type,
    temp_from_vcard4,
    vcard4_from_temp,
    vcard_photo,
    with_photo,
)
from xmppd.testing import parse


def png(width: int, height: int) -> bytes:
    """A real (tiny, grey) PNG of that size."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def jpeg(width: int, height: int, sof: int = 0xC0) -> bytes:
    """The header of a JPEG: SOI, a JFIF APP0, a DHT, fill bytes, then the frame."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    dht = b"\xff\xc4" + struct.pack(">H", 5) + b"\x00\x00\x00"
    frame = bytes([0xFF, sof]) + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + dht + b"\xff\xff" + frame + b"\xff\xda\x00\x02" + os.urandom(64)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


# -- images -------------------------------------------------------------------------------

def test_image_size_reads_png_jpeg_gif_and_webp_headers():
    assert image_size(png(3, 2)) == (3, 2)
    assert image_size(jpeg(640, 480)) == (640, 480)
    assert image_size(jpeg(17, 9, sof=0xC2)) == (17, 9)  # progressive
    assert image_size(b"GIF89a" + struct.pack("<HH", 32, 16) + b"\x00" * 10) == (32, 16)
    vp8x = b"RIFF\x00\x00\x00\x00WEBPVP8X" + b"\x0a\x00\x00\x00" + b"\x00" * 4 \
        + (99).to_bytes(3, "little") + (49).to_bytes(3, "little")
    assert image_size(vp8x) == (100, 50)


@pytest.mark.parametrize("data", [b"", b"not an image", png(3, 2)[:20], jpeg(5, 5)[:30],
                                  b"\xff\xd8\xff\xda\x00\x02", b"\x00" + os.urandom(200),
                                  b"\xff\xd8\xff\xe0\xff\xff", b"GIF89a\x00\x00\x05\x00"])
def test_image_size_of_anything_else_is_none_never_an_exception(data):
    assert image_size(data) is None


def test_image_type_sniffs_the_magic_bytes():
    assert image_type(png(1, 1)) == "image/png"
    assert image_type(jpeg(1, 1)) == "image/jpeg"
    assert image_type(b"GIF87a....") == "image/gif"
    assert image_type(b"hello") is None


# -- vcard-temp PHOTO -> avatar -------------------------------------------------------------

def test_vcard_photo_is_the_last_binval_with_its_type():
    image = png(4, 4)
    vcard = parse(f"<vCard xmlns='vcard-temp'><PHOTO><EXTVAL>http://x</EXTVAL></PHOTO>"
                  f"<PHOTO><TYPE>image/x-custom</TYPE><BINVAL>\n{b64(image)[:20]}\n"
                  f"{b64(image)[20:]}</BINVAL></PHOTO></vCard>")
    avatar = vcard_photo(vcard)
    assert avatar == Avatar(image, "image/x-custom")
    assert avatar.id == sha1(image)


@pytest.mark.parametrize("photos", [
    "<PHOTO><BINVAL>{a}</BINVAL></PHOTO><PHOTO><BINVAL>{b}</BINVAL></PHOTO>",
    "<PHOTO><BINVAL>{a}</BINVAL></PHOTO><PHOTO><BINVAL/></PHOTO>",
    "<PHOTO><BINVAL>{a}</BINVAL></PHOTO><PHOTO><EXTVAL>http://x</EXTVAL></PHOTO>",
    "<PHOTO><BINVAL>{a}</BINVAL></PHOTO><PHOTO><BINVAL>%%</BINVAL></PHOTO>",
])
def test_vcard_photo_is_the_picture_whose_hash_presence_carries(photos):
    from xmppd.components.vcard import photo_hash
    vcard = parse("<vCard xmlns='vcard-temp'>" + photos.format(a=b64(png(1, 1)), b=b64(png(2, 2)))
                  + "</vCard>")
    avatar = vcard_photo(vcard)
    assert (avatar.id if avatar is not None else "") == photo_hash(vcard)


def test_vcard_photo_without_type_is_sniffed_and_none_without_photo():
    image = jpeg(2, 2)
    assert vcard_photo(parse(f"<vCard xmlns='vcard-temp'><PHOTO><BINVAL>{b64(image)}</BINVAL>"
                             f"</PHOTO></vCard>")).type == "image/jpeg"
    assert vcard_photo(parse("<vCard xmlns='vcard-temp'><FN>x</FN></vCard>")) is None
    assert vcard_photo(parse("<vCard xmlns='vcard-temp'><PHOTO><BINVAL>%%%</BINVAL></PHOTO></vCard>")) is None
    assert vcard_photo(None) is None


def test_metadata_says_id_bytes_type_and_size_and_data_is_the_base64():
    image = png(7, 5)
    avatar = Avatar(image, "image/png")
    metadata = avatar.metadata()
    (info,) = metadata.elements(ns.AVATAR_METADATA, "info")
    assert dict(info.attributes) == {"bytes": str(len(image)), "id": sha1(image),
                                     "type": "image/png", "width": "7", "height": "5"}
    assert base64.b64decode(str(avatar.payload())) == image
    assert (avatar.payload().uri, avatar.payload().name) == (ns.AVATAR_DATA, "data")


def test_metadata_of_an_unreadable_image_leaves_width_and_height_out():
    (info,) = Avatar(b"raw bytes", None).metadata().elements()
    assert set(info.attributes) == {"bytes", "id"}


# -- avatar -> vcard-temp PHOTO ---------------------------------------------------------------

def metadata(*infos: str):
    return parse(f"<metadata xmlns='urn:xmpp:avatar:metadata'>{''.join(infos)}</metadata>")


def test_chosen_info_skips_external_urls():
    m = metadata("<info id='aa' url='https://x/a.png' type='image/png' bytes='1'/>",
                 "<info id='bb' type='image/png' bytes='1'/>")
    assert chosen_info(m)["id"] == "bb"
    assert chosen_info(metadata("<info id='aa' url='https://x' bytes='1'/>")) is None
    assert chosen_info(metadata()) is None


def test_avatar_from_pep_checks_the_hash_against_the_id():
    image = png(2, 2)
    info = chosen_info(metadata(f"<info id='{sha1(image)}' type='image/png' bytes='{len(image)}'/>"))
    data = parse(f"<data xmlns='urn:xmpp:avatar:data'>{b64(image)}</data>")
    assert avatar_from_pep(info, data) == Avatar(image, "image/png")
    wrong = parse(f"<data xmlns='urn:xmpp:avatar:data'>{b64(png(3, 3))}</data>")
    assert avatar_from_pep(info, wrong) is None
    assert avatar_from_pep(info, None) is None
    assert avatar_from_pep(info, parse("<data xmlns='urn:xmpp:avatar:data'>!!</data>")) is None


def test_with_photo_replaces_every_photo_in_place_and_keeps_the_rest():
    image = png(1, 1)
    vcard = parse("<vCard xmlns='vcard-temp' version='2.0'><FN>A</FN><PHOTO><EXTVAL>u</EXTVAL></PHOTO>"
                  "<NICKNAME>n</NICKNAME><PHOTO><BINVAL>AAAA</BINVAL></PHOTO>"
                  "<X xmlns='urn:example'>kept</X></vCard>")
    result = with_photo(vcard, Avatar(image, "image/png").photo())
    assert [c.name for c in result.elements()] == ["FN", "PHOTO", "NICKNAME", "X"]
    assert result["version"] == "2.0"
    assert vcard_photo(result) == Avatar(image, "image/png")
    removed = with_photo(vcard, None)
    assert [c.name for c in removed.elements()] == ["FN", "NICKNAME", "X"]
    fresh = with_photo(None, Avatar(image, None).photo())
    assert fresh.toXml() == f"<vCard xmlns='vcard-temp'><PHOTO><BINVAL>{b64(image)}</BINVAL></PHOTO></vCard>"
    assert len(list(vcard.elements())) == 5  # the original is untouched


# -- vcard-temp <-> vCard4 ------------------------------------------------------------------

TEMP = ("<vCard xmlns='vcard-temp'><FN>Juliet Capulet</FN>"
        "<N><FAMILY>Capulet</FAMILY><GIVEN>Juliet</GIVEN></N><NICKNAME>Jule</NICKNAME>"
        "<BDAY>1996-07-13</BDAY><URL>https://capulet.lit/</URL>"
        "<EMAIL><INTERNET/><HOME/><USERID>juliet@capulet.lit</USERID></EMAIL>"
        "<TEL><WORK/><NUMBER>+1-555-0100</NUMBER></TEL>"
        "<ADR><HOME/><STREET>1 Balcony</STREET><LOCALITY>Verona</LOCALITY><CTRY>Italy</CTRY></ADR>"
        "<ORG><ORGNAME>House Capulet</ORGNAME></ORG><DESC>Star-crossed</DESC>"
        "<JABBERID>juliet@capulet.lit</JABBERID><TITLE>Heiress</TITLE>"
        "<PHOTO><TYPE>image/png</TYPE><BINVAL>AAAA</BINVAL></PHOTO>"
        "<GEO><LAT>45.4</LAT><LON>10.9</LON></GEO></vCard>")


def v4text(v4, prop, value="text"):
    return [str(next(p.elements(ns.VCARD4, value))) for p in v4.elements(ns.VCARD4, prop)]


def test_vcard4_from_temp_maps_what_vcard4_can_say():
    v4 = vcard4_from_temp(parse(TEMP))
    assert (v4.uri, v4.name) == (ns.VCARD4, "vcard")
    assert v4text(v4, "fn") == ["Juliet Capulet"]
    (n,) = v4.elements(ns.VCARD4, "n")
    assert str(next(n.elements(ns.VCARD4, "surname"))) == "Capulet"
    assert str(next(n.elements(ns.VCARD4, "given"))) == "Juliet"
    assert v4text(v4, "nickname") == ["Jule"]
    assert v4text(v4, "bday", "date") == ["1996-07-13"]
    assert v4text(v4, "url", "uri") == ["https://capulet.lit/"]
    assert v4text(v4, "email") == ["juliet@capulet.lit"]
    assert v4text(v4, "tel", "uri") == ["tel:+1-555-0100"]
    assert v4text(v4, "org") == ["House Capulet"]
    assert v4text(v4, "note") == ["Star-crossed"]
    assert v4text(v4, "impp", "uri") == ["xmpp:juliet@capulet.lit"]
    assert v4text(v4, "title") == ["Heiress"]
    (adr,) = v4.elements(ns.VCARD4, "adr")
    assert str(next(adr.elements(ns.VCARD4, "locality"))) == "Verona"
    email_type = next(next(next(v4.elements(ns.VCARD4, "email")).elements(ns.VCARD4, "parameters"))
                      .elements(ns.VCARD4, "type"))
    assert str(next(email_type.elements(ns.VCARD4, "text"))) == "home"
    assert "PHOTO" not in v4.toXml() and "photo" not in v4.toXml()


def test_an_empty_vcard_temp_still_gives_fn_and_n():
    v4 = vcard4_from_temp(None)
    assert [c.name for c in v4.elements()] == ["fn", "n"]


def test_temp_from_vcard4_replaces_what_vcard4_says_and_keeps_the_rest():
    base = parse(TEMP)
    v4 = parse("<vcard xmlns='urn:ietf:params:xml:ns:vcard-4.0'><fn><text>Jules</text></fn>"
               "<n><surname>C</surname><given>J</given><additional/></n>"
               "<email><parameters><type><text>work</text></type></parameters><text>j@w.lit</text></email>"
               "<tel><uri>tel:123</uri></tel><impp><uri>xmpp:j@c.lit</uri></impp>"
               "<impp><uri>sip:j@c.lit</uri></impp><note><text>hi</text></note>"
               "<gender><sex>F</sex></gender></vcard>")
    temp = temp_from_vcard4(v4, base)
    names = [c.name for c in temp.elements()]
    assert names == ["FN", "N", "EMAIL", "TEL", "JABBERID", "NOTE", "PHOTO", "GEO"]
    assert str(next(temp.elements(ns.VCARD, "FN"))) == "Jules"
    email = next(temp.elements(ns.VCARD, "EMAIL"))
    assert [c.name for c in email.elements()] == ["USERID", "INTERNET", "WORK"]
    assert str(next(next(temp.elements(ns.VCARD, "TEL")).elements(ns.VCARD, "NUMBER"))) == "123"
    assert str(next(temp.elements(ns.VCARD, "JABBERID"))) == "j@c.lit"
    # the photo and GEO, which a vCard4 cannot carry here, are kept as stored
    assert next(temp.elements(ns.VCARD, "PHOTO")).toXml() == next(base.elements(ns.VCARD, "PHOTO")).toXml()


def test_temp_vcard4_temp_keeps_the_fields_both_know():
    once = temp_from_vcard4(vcard4_from_temp(parse(TEMP)), parse(TEMP))
    twice = temp_from_vcard4(vcard4_from_temp(once), once)
    assert once.toXml() == twice.toXml()
    for name in ("FN", "NICKNAME", "BDAY", "URL", "ORG", "JABBERID", "TITLE", "PHOTO", "GEO"):
        assert next(once.elements(ns.VCARD, name), None) is not None, name


# =====================================================================================
# The component
# =====================================================================================

from twisted.internet import task  # noqa: E402

from xmppd.components.caps import digest, verification_string  # noqa: E402
from xmppd.components.pep import CHANGED as PEP_CHANGED  # noqa: E402
from xmppd.components.vcard import CHANGED as VCARD_CHANGED  # noqa: E402
from xmppd.testing import Harness, error_condition, result_of  # noqa: E402

PUBSUB = "http://jabber.org/protocol/pubsub"
EVENT = "http://jabber.org/protocol/pubsub#event"
UPDATE = "vcard-temp:x:update"
COMPONENTS = ["roster", "presence", "messaging", "private", "vcard", "vcard_update", "caps",
              "pep", "disco", "vcard4"]


class World:
    def __init__(self, components=COMPONENTS, options=None):
        self.h = Harness(components, clock=task.Clock(), options=options)
        self.pep_changes = []
        self.vcard_changes = []
        self.h.router.hook(PEP_CHANGED, self.pep_changes.append)
        self.h.router.hook(VCARD_CHANGED, self.vcard_changes.append)

    def login(self, jid, notify=()):
        session = self.h.login(jid, available=False)
        features = ["http://jabber.org/protocol/disco#info"] + [f"{n}+notify" for n in notify]
        ver = digest("sha-1", verification_string([("client", "pc", "", "T")], features, []))
        session.feed(f"<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' "
                     f"node='https://example.org' ver='{ver}'/></presence>")
        for query in [s for s in session.received if s.name == "iq" and s["type"] == "get"]:
            session.received.remove(query)
            session.feed(f"<iq type='result' id='{query['id']}' to='{query['from']}'>"
                         "<query xmlns='http://jabber.org/protocol/disco#info'>"
                         "<identity category='client' type='pc' name='T'/>"
                         + "".join(f"<feature var='{f}'/>" for f in features) + "</query></iq>")
        for other in self.h.router.resources(session.bare).values():
            other.take()
        return session

    @staticmethod
    def friends(a, b):
        a.feed(f"<presence type='subscribe' to='{b.bare}'/>")
        b.feed(f"<presence type='subscribed' to='{a.bare}'/>")
        b.feed(f"<presence type='subscribe' to='{a.bare}'/>")
        a.feed(f"<presence type='subscribed' to='{b.bare}'/>")
        a.take(), b.take()

    @staticmethod
    def iq(session, xml, iq_id):
        session.feed(xml)
        [reply] = [s for s in session.received if s.name == "iq" and s.getAttribute("id") == iq_id]
        session.received.remove(reply)
        return reply

    def set_vcard(self, session, inner):
        reply = self.iq(session, f"<iq type='set' id='v'><vCard xmlns='vcard-temp'>{inner}</vCard></iq>", "v")
        assert reply["type"] == "result", reply.toXml()

    def get_vcard(self, session, to):
        reply = self.iq(session, f"<iq type='get' id='g' to='{to}'><vCard xmlns='vcard-temp'/></iq>", "g")
        assert reply["type"] == "result", reply.toXml()
        return reply.firstChildElement()

    def publish(self, session, node, item_id, payload):
        reply = self.iq(session, f"<iq type='set' id='p'><pubsub xmlns='{PUBSUB}'><publish node='{node}'>"
                                 f"<item id='{item_id}'>{payload}</item></publish></pubsub></iq>", "p")
        assert reply["type"] == "result", reply.toXml()

    def publish_avatar(self, session, image, type_="image/png"):
        self.publish(session, ns.AVATAR_DATA, sha1(image),
                     f"<data xmlns='urn:xmpp:avatar:data'>{b64(image)}</data>")
        self.publish(session, ns.AVATAR_METADATA, sha1(image),
                     f"<metadata xmlns='urn:xmpp:avatar:metadata'><info id='{sha1(image)}' "
                     f"bytes='{len(image)}' type='{type_}'/></metadata>")

    def node(self, name, owner="alice@localhost"):
        service = result_of(self.h.component("pep").get_service(owner))
        return service.nodes.get(name)

    def last_payload(self, name, owner="alice@localhost"):
        node = self.node(name, owner)
        if node is None or not node.items:
            return None
        return self.h.component("pep").payload(next(reversed(node.items.values())))

    def stored_vcard(self, user="alice@localhost"):
        return result_of(self.h.component("vcard").load(user))


def events(session, node):
    found = []
    for stanza in list(session.received):
        event = next(stanza.elements(EVENT, "event"), None) if stanza.name == "message" else None
        if event is not None and any(c.getAttribute("node") == node for c in event.elements()):
            session.received.remove(stanza)
            found.append(next(event.elements()))
    return found


@pytest.fixture
def w():
    return World()


# -- vcard-temp -> XEP-0084 --------------------------------------------------------------

def test_a_vcard_photo_set_by_an_old_client_reaches_a_contact_as_a_xep_0084_avatar(w):
    alice = w.login("alice@localhost/old")
    bob = w.login("bob@localhost/pc", notify=[ns.AVATAR_METADATA])
    w.friends(alice, bob)
    image = png(12, 8)
    w.set_vcard(alice, f"<FN>Alice</FN><PHOTO><TYPE>image/png</TYPE><BINVAL>{b64(image)}</BINVAL></PHOTO>")
    [items] = events(bob, ns.AVATAR_METADATA)
    [item] = items.elements(EVENT, "item")
    assert item["id"] == sha1(image)
    info = next(item.firstChildElement().elements(ns.AVATAR_METADATA, "info"))
    assert dict(info.attributes) == {"id": sha1(image), "bytes": str(len(image)), "type": "image/png",
                                     "width": "12", "height": "8"}
    # bob fetches the data by the id the metadata named
    reply = w.iq(bob, f"<iq type='get' id='d' to='alice@localhost'><pubsub xmlns='{PUBSUB}'>"
                      f"<items node='urn:xmpp:avatar:data'><item id='{sha1(image)}'/></items>"
                      "</pubsub></iq>", "d")
    assert reply["type"] == "result", reply.toXml()
    data = next(reply.firstChildElement().firstChildElement().elements()).firstChildElement()
    assert base64.b64decode(str(data)) == image


def test_converted_avatar_nodes_are_open_as_the_vcard_is(w):
    alice = w.login("alice@localhost/old")
    w.set_vcard(alice, f"<PHOTO><BINVAL>{b64(png(1, 1))}</BINVAL></PHOTO>")
    assert w.node(ns.AVATAR_DATA).config["access_model"] == "open"
    assert w.node(ns.AVATAR_METADATA).config["access_model"] == "open"


def test_the_same_photo_again_publishes_no_new_avatar(w):
    alice = w.login("alice@localhost/old")
    image = png(2, 2)
    w.set_vcard(alice, f"<FN>A</FN><PHOTO><BINVAL>{b64(image)}</BINVAL></PHOTO>")
    before = len(w.pep_changes)
    w.set_vcard(alice, f"<FN>B</FN><PHOTO><BINVAL>{b64(image)}</BINVAL></PHOTO>")
    assert [c.node for c in w.pep_changes[before:]] == [ns.VCARD4_NODE]  # only the new FN


def test_a_vcard_without_photo_disables_the_avatar(w):
    alice = w.login("alice@localhost/old")
    bob = w.login("bob@localhost/pc", notify=[ns.AVATAR_METADATA])
    w.friends(alice, bob)
    w.set_vcard(alice, f"<PHOTO><BINVAL>{b64(png(1, 1))}</BINVAL></PHOTO>")
    events(bob, ns.AVATAR_METADATA)
    w.set_vcard(alice, "<FN>faceless</FN>")
    [items] = events(bob, ns.AVATAR_METADATA)
    metadata = next(items.elements(EVENT, "item")).firstChildElement()
    assert (metadata.uri, metadata.name, list(metadata.elements())) == (ns.AVATAR_METADATA, "metadata", [])


def test_a_vcard_set_is_converted_to_pep_once_and_never_written_back(w):
    alice = w.login("alice@localhost/old")
    image = png(3, 3)
    # DESC comes back from a vCard4 as NOTE: converting back would rewrite it
    vcard = (f"<FN>Alice</FN><DESC>about me</DESC>"
             f"<PHOTO><TYPE>image/png</TYPE><BINVAL>{b64(image)}</BINVAL></PHOTO>")
    w.set_vcard(alice, vcard)
    assert sorted(c.node for c in w.pep_changes) == sorted([ns.AVATAR_DATA, ns.AVATAR_METADATA,
                                                            ns.VCARD4_NODE])
    assert len(w.vcard_changes) == 1  # the client's own; nothing written back
    assert w.stored_vcard().toXml() == parse(f"<vCard xmlns='vcard-temp'>{vcard}</vCard>").toXml()


def test_a_photo_too_big_for_pep_still_gives_the_vcard4():
    w = World(options={"component:pep": {"max_payload_size": "1000"}})
    alice = w.login("alice@localhost/old")
    w.set_vcard(alice, f"<FN>Alice</FN><PHOTO><BINVAL>{b64(os.urandom(2000))}</BINVAL></PHOTO>")
    assert w.node(ns.AVATAR_DATA) is None and w.node(ns.AVATAR_METADATA) is None
    assert v4text(w.last_payload(ns.VCARD4_NODE), "fn") == ["Alice"]


# -- XEP-0084 -> vcard-temp --------------------------------------------------------------

def test_an_avatar_published_via_pep_is_the_vcard_photo_and_the_presence_hash(w):
    alice = w.login("alice@localhost/modern")
    bob = w.login("bob@localhost/old")
    w.friends(alice, bob)
    w.set_vcard(alice, "<FN>Alice</FN><NICKNAME>al</NICKNAME>")
    image = png(5, 5)
    w.publish_avatar(alice, image)
    vcard = w.get_vcard(bob, "alice@localhost")
    assert vcard_photo(vcard) == Avatar(image, "image/png")
    assert [c.name for c in vcard.elements()] == ["FN", "NICKNAME", "PHOTO"]
    alice.feed("<presence/>")
    [presence] = [s for s in bob.take() if s.name == "presence"]
    x = next(presence.elements(UPDATE, "x"))
    assert str(next(x.elements(UPDATE, "photo"))) == sha1(image)


def test_an_avatar_from_pep_is_converted_once_and_not_published_back(w):
    alice = w.login("alice@localhost/modern")
    w.publish_avatar(alice, png(4, 4))
    assert [c.node for c in w.pep_changes] == [ns.AVATAR_DATA, ns.AVATAR_METADATA]  # the client's
    assert len(w.vcard_changes) == 1  # the conversion


def test_avatar_data_that_does_not_match_its_id_leaves_the_vcard_alone(w):
    alice = w.login("alice@localhost/modern")
    w.set_vcard(alice, "<FN>Alice</FN>")
    image, other = png(1, 1), png(2, 2)
    w.publish(alice, ns.AVATAR_DATA, sha1(image), f"<data xmlns='urn:xmpp:avatar:data'>{b64(other)}</data>")
    w.publish(alice, ns.AVATAR_METADATA, sha1(image),
              f"<metadata xmlns='urn:xmpp:avatar:metadata'><info id='{sha1(image)}' bytes='1' "
              "type='image/png'/></metadata>")
    assert vcard_photo(w.stored_vcard()) is None


def test_the_info_that_points_to_a_url_is_skipped_for_the_one_with_data(w):
    alice = w.login("alice@localhost/modern")
    image = png(6, 6)
    w.publish(alice, ns.AVATAR_DATA, sha1(image), f"<data xmlns='urn:xmpp:avatar:data'>{b64(image)}</data>")
    w.publish(alice, ns.AVATAR_METADATA, sha1(image),
              "<metadata xmlns='urn:xmpp:avatar:metadata'>"
              "<info id='ffff' bytes='9' type='image/gif' url='https://example.org/a.gif'/>"
              f"<info id='{sha1(image)}' bytes='{len(image)}' type='image/png'/></metadata>")
    assert vcard_photo(w.stored_vcard()) == Avatar(image, "image/png")


def test_metadata_with_only_a_url_becomes_an_extval_photo(w):
    alice = w.login("alice@localhost/modern")
    w.publish(alice, ns.AVATAR_METADATA, "ffff",
              "<metadata xmlns='urn:xmpp:avatar:metadata'>"
              "<info id='ffff' bytes='9' type='image/gif' url='https://example.org/a.gif'/></metadata>")
    photo = next(w.stored_vcard().elements(ns.VCARD, "PHOTO"))
    assert photo.toXml() == ("<PHOTO xmlns='vcard-temp'><TYPE>image/gif</TYPE>"
                             "<EXTVAL>https://example.org/a.gif</EXTVAL></PHOTO>")


def test_an_avatar_disabled_via_pep_removes_the_vcard_photo_and_keeps_the_rest(w):
    alice = w.login("alice@localhost/modern")
    w.set_vcard(alice, "<FN>Alice</FN>")
    w.publish_avatar(alice, png(2, 2))
    assert vcard_photo(w.stored_vcard()) is not None
    w.publish(alice, ns.AVATAR_METADATA, "none", "<metadata xmlns='urn:xmpp:avatar:metadata'/>")
    vcard = w.stored_vcard()
    assert [c.name for c in vcard.elements()] == ["FN"]


def test_an_avatar_too_big_for_the_vcard_leaves_it_alone():
    w = World(options={"component:vcard": {"max_size": "200"}})
    alice = w.login("alice@localhost/modern")
    w.set_vcard(alice, "<FN>Alice</FN>")
    w.publish_avatar(alice, png(40, 40) + os.urandom(300))
    assert vcard_photo(w.stored_vcard()) is None


# -- vCard4 -------------------------------------------------------------------------

def test_a_vcard_temp_set_publishes_its_vcard4(w):
    alice = w.login("alice@localhost/old")
    w.set_vcard(alice, "<FN>Alice</FN><NICKNAME>al</NICKNAME>")
    v4 = w.last_payload(ns.VCARD4_NODE)
    assert (v4.uri, v4.name) == (ns.VCARD4, "vcard")
    assert v4text(v4, "fn") == ["Alice"] and v4text(v4, "nickname") == ["al"]


def test_a_vcard4_set_by_iq_is_read_back_and_seen_by_old_clients(w):
    alice = w.login("alice@localhost/modern")
    w.set_vcard(alice, f"<FN>Old</FN><PHOTO><BINVAL>{b64(png(1, 1))}</BINVAL></PHOTO>")
    reply = w.iq(alice, "<iq type='set' id='s4'><vcard xmlns='urn:ietf:params:xml:ns:vcard-4.0'>"
                        "<fn><text>New Name</text></fn><note><text>hi</text></note></vcard></iq>", "s4")
    assert reply["type"] == "result", reply.toXml()
    reply = w.iq(alice, "<iq type='get' id='g4'><vcard xmlns='urn:ietf:params:xml:ns:vcard-4.0'/></iq>",
                 "g4")
    assert v4text(reply.firstChildElement(), "fn") == ["New Name"]
    vcard = w.stored_vcard()
    assert str(next(vcard.elements(ns.VCARD, "FN"))) == "New Name"
    assert str(next(vcard.elements(ns.VCARD, "NOTE"))) == "hi"
    assert vcard_photo(vcard) is not None  # the photo is kept


def test_a_vcard4_published_by_a_client_is_not_overwritten_by_its_own_conversion(w):
    alice = w.login("alice@localhost/modern")
    payload = ("<vcard xmlns='urn:ietf:params:xml:ns:vcard-4.0'><fn><text>A</text></fn>"
               "<gender><sex><text>F</text></sex></gender></vcard>")
    w.publish(alice, ns.VCARD4_NODE, "current", payload)
    assert w.last_payload(ns.VCARD4_NODE).toXml() == parse(payload).toXml()
    assert str(next(w.stored_vcard().elements(ns.VCARD, "FN"))) == "A"


def test_a_vcard4_get_answers_item_not_found_or_forbidden_as_prosody(w):
    alice = w.login("alice@localhost/modern")
    stranger = w.login("eve@localhost/x")
    get = "<iq type='get' id='g4' to='alice@localhost'><vcard xmlns='urn:ietf:params:xml:ns:vcard-4.0'/></iq>"
    assert error_condition(w.iq(stranger, get, "g4")) == "item-not-found"
    w.iq(alice, "<iq type='set' id='s4'><vcard xmlns='urn:ietf:params:xml:ns:vcard-4.0'>"
                "<fn><text>A</text></fn></vcard></iq>", "s4")  # PEP defaults: presence access
    assert error_condition(w.iq(stranger, get, "g4")) == "forbidden"
    bob = w.login("bob@localhost/pc")
    w.friends(alice, bob)
    reply = w.iq(bob, get, "g4")
    assert reply["type"] == "result" and v4text(reply.firstChildElement(), "fn") == ["A"]


def test_the_account_announces_vcard4_and_the_conversion(w):
    alice = w.login("alice@localhost/modern")
    reply = w.iq(alice, "<iq type='get' id='d' to='alice@localhost'>"
                        "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>", "d")
    features = {f["var"] for f in reply.firstChildElement().elements(ns.DISCO_INFO, "feature")}
    assert {ns.VCARD4, ns.PEP_VCARD_CONVERSION} <= features
