"""XEP-0363 slot requests to the upload service, in the harness: what a slot
looks like, every refusal with the error Prosody 0.12's mod_http_file_share
sends for it (type, condition, text, and the file-too-large element), and
that a refused request stores nothing."""

from __future__ import annotations

import os
import re

import pytest
from twisted.internet import task

from upload_helpers import (UPLOAD_DOMAIN, make_harness, request, service, slot_of,
                            stanza_error, upload_bytes)
from xmppd import ns
from xmppd.testing import FakeSession, only, result_of

SLOT_URL = re.compile(r"\Ahttps://localhost:5281/upload/([0-9a-f]{32})/(.+)\Z")


@pytest.fixture
def clock():
    c = task.Clock()
    c.advance(1_000_000)
    return c


@pytest.fixture
def h(tmp_path, clock):
    return make_harness(tmp_path, clock, max_file_size=1000, daily_quota=2500)


@pytest.fixture
def alice(h):
    return h.login("alice@localhost/phone")


def stored_rows(h) -> dict:
    return result_of(service(h).store["upload"].items(""))


# -- slots -------------------------------------------------------------------------------

def test_slot_has_get_and_put_urls_and_the_authorization_header(h, alice):
    reply = request(alice, filename="cat.jpg", size=1000, content_type="image/jpeg")
    assert reply["from"] == UPLOAD_DOMAIN and reply["id"] == "slot1"
    slot = slot_of(reply)
    assert slot.get == slot.put  # as Prosody: one URL for both
    match = SLOT_URL.match(slot.put)
    assert match and match.group(2) == "cat.jpg"
    assert list(slot.headers) == ["Authorization"]
    assert slot.headers["Authorization"].startswith("Bearer ")
    upload = service(h).uploads[match.group(1)]
    assert service(h).token_valid(upload, slot.token)
    assert (upload.owner, upload.filename, upload.size, upload.type) == \
        ("alice@localhost", "cat.jpg", 1000, "image/jpeg")


def test_every_slot_has_its_own_id_and_token(h, alice):
    first, second = slot_of(request(alice, id="a")), slot_of(request(alice, id="b"))
    assert first.slot_id != second.slot_id and first.token != second.token
    # a slot's token is no good for another slot
    assert not service(h).token_valid(service(h).uploads[second.slot_id], first.token)


def test_the_filename_is_percent_encoded_in_the_url(alice):
    slot = slot_of(request(alice, filename="a b&é?#.txt", content_type="text/plain"))
    assert SLOT_URL.match(slot.put).group(2) == "a%20b%26%C3%A9%3F%23.txt"


def test_a_request_without_content_type_is_octet_stream(h, alice):
    slot = slot_of(request(alice, content_type=None))
    assert service(h).uploads[slot.slot_id].type == "application/octet-stream"


def test_a_zero_byte_file_gets_a_slot(alice):
    slot_of(request(alice, size=0))


def test_the_slot_is_stored_before_the_reply(h, alice):
    slot = slot_of(request(alice))
    row = stored_rows(h)[slot.slot_id]
    assert row["owner"] == "alice@localhost" and row["size"] == 1000 and row["done"] is False


def test_slots_survive_a_restart_of_the_service(h, alice):
    slot = slot_of(request(alice, size=5))
    assert upload_bytes(h, slot, b"hello")
    old = service(h)
    old.stopService()
    again = type(old)(h.server, h.config.component("upload"))
    again.startService()
    upload = again.lookup(slot.slot_id)
    assert upload is not None and upload.done and again.token_valid(upload, slot.token)
    with open(again.file_path(upload), "rb") as f:
        assert f.read() == b"hello"


# -- who may upload ----------------------------------------------------------------------

def test_an_account_of_another_server_is_forbidden(h):
    eve = FakeSession(h, "eve@elsewhere.example/x")
    h.router.bind(eve)
    assert stanza_error(request(eve)) == ("auth", "forbidden", None, [])
    assert stored_rows(h) == {}


def test_access_lists_who_may_upload(tmp_path, clock):
    h = make_harness(tmp_path, clock, access="bob@localhost elsewhere.example")
    alice, bob = h.login("alice@localhost/a"), h.login("bob@localhost/b")
    eve = FakeSession(h, "eve@elsewhere.example/x")
    h.router.bind(eve)
    assert stanza_error(request(alice))[:2] == ("auth", "forbidden")
    slot_of(request(bob))
    slot_of(request(eve))


# -- filename and size -------------------------------------------------------------------

@pytest.mark.parametrize("filename", ["a/b.txt", "/", "", ".", "..", "a\tb", "x" * 256, None])
def test_a_bad_filename_is_bad_request(h, alice, filename):
    assert stanza_error(request(alice, filename=filename)) == \
        ("modify", "bad-request", "Invalid filename", [])
    assert stored_rows(h) == {}


def test_a_long_filename_within_255_bytes_is_fine(alice):
    slot_of(request(alice, filename="é" * 127 + "a"))


@pytest.mark.parametrize("size", ["-1", "1.5", "abc", "", None, "1e3", " 5", "٣"])
def test_a_size_that_is_not_a_whole_number_is_bad_request(h, alice, size):
    assert stanza_error(request(alice, size=size)) == \
        ("modify", "bad-request", "File size must be positive integer", [])
    assert stored_rows(h) == {}


@pytest.mark.parametrize("size", ["1001", "9" * 40])
def test_a_file_over_max_file_size_is_file_too_large_with_the_limit(h, alice, size):
    type_, condition, text, extra = stanza_error(request(alice, size=size))
    assert (type_, condition, text) == ("modify", "not-acceptable", "File too large")
    assert len(extra) == 1
    assert extra[0].toXml() == (f"<file-too-large xmlns='{ns.HTTP_UPLOAD}'>"
                                "<max-file-size>1000</max-file-size></file-too-large>")
    assert stored_rows(h) == {}


def test_a_file_of_exactly_max_file_size_is_fine(alice):
    slot_of(request(alice, size=1000))


# -- content types -----------------------------------------------------------------------

def test_allowed_content_types_refuse_the_others_with_not_acceptable(tmp_path, clock):
    h = make_harness(tmp_path, clock, allowed_content_types="text/plain image/*")
    alice = h.login("alice@localhost/a")
    slot_of(request(alice, content_type="text/plain", id="1"))
    slot_of(request(alice, content_type="image/png", id="2"))
    slot_of(request(alice, content_type="Image/PNG; foo=bar", id="3"))
    for refused in ("application/zip", "text/html", None):
        assert stanza_error(request(alice, content_type=refused)) == \
            ("modify", "not-acceptable", "File type not allowed", [])


def test_blocked_content_types_are_refused_with_not_acceptable(tmp_path, clock):
    h = make_harness(tmp_path, clock, blocked_content_types="text/html application/*")
    alice = h.login("alice@localhost/a")
    slot_of(request(alice, content_type="text/plain"))
    for refused in ("text/html", "TEXT/HTML; charset=utf-8", "application/zip", None):
        assert stanza_error(request(alice, content_type=refused)) == \
            ("modify", "not-acceptable", "File type not allowed", [])


@pytest.mark.parametrize("content_type", ["text", "text/plain\nX-Evil: 1", "a b/c", "/x",
                                          "text/" + "x" * 300])
def test_a_content_type_that_is_not_a_media_type_is_bad_request(h, alice, content_type):
    assert stanza_error(request(alice, content_type=content_type)) == \
        ("modify", "bad-request", "Invalid content type", [])


# -- quotas ------------------------------------------------------------------------------

def test_the_daily_quota_counts_the_last_24_hours_of_slots(h, alice, clock):
    slot_of(request(alice, size=1000, id="1"))
    slot_of(request(alice, size=1000, id="2"))
    assert stanza_error(request(alice, size=1000, id="3")) == \
        ("wait", "resource-constraint", "Daily quota reached", [])
    slot_of(request(alice, size=500, id="4"))  # exactly the quota
    assert stanza_error(request(alice, size=1, id="5"))[2] == "Daily quota reached"
    # others have their own quota
    slot_of(request(h.login("bob@localhost/b"), size=1000))


def test_the_daily_quota_frees_up_after_a_day(tmp_path, clock):
    h = make_harness(tmp_path, clock, max_file_size=1000, daily_quota=1000,
                     expire_after=10 * 86400)
    alice = h.login("alice@localhost/a")
    slot = slot_of(request(alice, size=1000))
    assert upload_bytes(h, slot, b"x" * 1000)
    assert stanza_error(request(alice, size=1))[2] == "Daily quota reached"
    clock.advance(86400 + 1)
    slot_of(request(alice, size=1000))


def test_quota_bounds_the_bytes_one_account_holds(tmp_path, clock):
    h = make_harness(tmp_path, clock, max_file_size=1000, quota=1500, expire_after=0)
    alice = h.login("alice@localhost/a")
    slot = slot_of(request(alice, size=1000))
    assert upload_bytes(h, slot, b"x" * 1000)
    clock.advance(2 * 86400)  # the daily quota has forgotten it; the file is still held
    assert stanza_error(request(alice, size=501)) == \
        ("wait", "resource-constraint", "Quota reached", [])
    slot_of(request(alice, size=500))


def test_max_files_bounds_the_files_one_account_holds(tmp_path, clock):
    h = make_harness(tmp_path, clock, max_files=2)
    alice = h.login("alice@localhost/a")
    slot_of(request(alice, size=0, id="1"))
    slot_of(request(alice, size=0, id="2"))
    assert stanza_error(request(alice, size=0, id="3")) == \
        ("wait", "resource-constraint", "Too many files", [])
    slot_of(request(h.login("bob@localhost/b"), size=0))


@pytest.mark.parametrize("option,value,size", [("global_quota", "1500", 600),
                                               ("global_max_files", "2", 1)])
def test_the_global_bounds_refuse_everyone(tmp_path, clock, option, value, size):
    h = make_harness(tmp_path, clock, **{option: value})
    alice, bob = h.login("alice@localhost/a"), h.login("bob@localhost/b")
    slot_of(request(alice, size=size, id="1"))
    slot_of(request(bob, size=size, id="2"))
    assert stanza_error(request(bob, size=size, id="3")) == \
        ("wait", "resource-constraint", "Server global storage quota reached", [])


def test_the_checks_come_in_prosodys_order(tmp_path, clock):
    """Each refusal wins over those Prosody checks after it."""
    h = make_harness(tmp_path, clock, max_file_size=10, daily_quota=10,
                     allowed_content_types="text/plain")
    alice = h.login("alice@localhost/a")
    slot_of(request(alice, size=10, content_type="text/plain", id="fill"))
    # bad filename before bad size, bad size before the limit, ...
    assert stanza_error(request(alice, filename="a/b", size="x"))[2] == "Invalid filename"
    assert stanza_error(request(alice, size="x"))[2] == "File size must be positive integer"
    assert stanza_error(request(alice, size=11, content_type="x/y"))[2] == "File too large"
    assert stanza_error(request(alice, size=1, content_type="x/y"))[2] == "Daily quota reached"


# -- addressing --------------------------------------------------------------------------

def test_a_slot_request_of_type_set_is_service_unavailable(h, alice):
    assert stanza_error(request(alice, type="set"))[:2] == ("cancel", "service-unavailable")
    assert stored_rows(h) == {}


def test_a_slot_request_to_a_jid_under_the_service_is_service_unavailable(alice):
    reply = request(alice, to=f"someone@{UPLOAD_DOMAIN}")
    assert stanza_error(reply)[:2] == ("cancel", "service-unavailable")


def test_without_the_http_service_slot_requests_are_service_unavailable(tmp_path, clock):
    h = make_harness(tmp_path, clock, http=False)
    alice = h.login("alice@localhost/a")
    assert stanza_error(request(alice))[:2] == ("cancel", "service-unavailable")
    assert stored_rows(h) == {}


def test_with_the_upload_endpoint_off_slot_requests_are_service_unavailable(tmp_path, clock):
    h = make_harness(tmp_path, clock, endpoints="websocket bosh")
    alice = h.login("alice@localhost/a")
    assert stanza_error(request(alice))[:2] == ("cancel", "service-unavailable")
    assert stored_rows(h) == {}


# -- disco -------------------------------------------------------------------------------

def test_disco_info_is_store_file_with_the_max_file_size_form(alice):
    alice.feed(f"<iq type='get' id='d' to='{UPLOAD_DOMAIN}'>"
               f"<query xmlns='{ns.DISCO_INFO}'/></iq>")
    query = next(only(alice).elements(ns.DISCO_INFO, "query"))
    identities = [(i["category"], i["type"], i.getAttribute("name"))
                  for i in query.elements(ns.DISCO_INFO, "identity")]
    assert identities == [("store", "file", "HTTP File Upload")]
    features = {f["var"] for f in query.elements(ns.DISCO_INFO, "feature")}
    assert features == {ns.HTTP_UPLOAD, ns.DISCO_INFO, ns.DISCO_ITEMS}
    (form,) = list(query.elements(ns.DATA_FORMS, "x"))
    assert form["type"] == "result"
    fields = {f["var"]: (f["type"], [str(v) for v in f.elements(ns.DATA_FORMS, "value")])
              for f in form.elements(ns.DATA_FORMS, "field")}
    assert fields == {"FORM_TYPE": ("hidden", [ns.HTTP_UPLOAD]),
                      "max-file-size": ("text-single", ["1000"])}


def test_disco_info_of_a_node_is_item_not_found(alice):
    alice.feed(f"<iq type='get' id='d' to='{UPLOAD_DOMAIN}'>"
               f"<query xmlns='{ns.DISCO_INFO}' node='x'/></iq>")
    assert stanza_error(only(alice)) == ("cancel", "item-not-found", "Node does not exist", [])


def test_the_server_lists_the_upload_service_in_disco_items(alice):
    alice.feed(f"<iq type='get' id='d' to='localhost'><query xmlns='{ns.DISCO_ITEMS}'/></iq>")
    items = [(i["jid"], i.getAttribute("name"))
             for i in only(alice).firstChildElement().elements(ns.DISCO_ITEMS, "item")]
    assert (UPLOAD_DOMAIN, "HTTP File Upload") in items


def test_the_secret_is_kept_in_the_upload_directory(h, tmp_path):
    key = tmp_path / "upload" / "secret.key"
    assert key.read_bytes() == service(h).secret and len(service(h).secret) >= 32
    assert os.stat(tmp_path / "upload").st_mode & 0o077 == 0
