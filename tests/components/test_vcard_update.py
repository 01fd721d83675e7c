"""XEP-0153: the server puts the vCard photo's hash into users' available
presence, as Prosody 0.12's mod_vcard_legacy does."""

import base64
import hashlib
import os

from twisted.internet import defer

from xmppd.components.vcard import VCardChanged
from xmppd.testing import Harness, only, result_of

UPDATE = "vcard-temp:x:update"
COMPONENTS = ["roster", "presence", "vcard", "vcard_update"]


def world(components=COMPONENTS, **options):
    """alice (phone) and bob (pc), bob subscribed to alice's presence."""
    h = Harness(components, options={"component:vcard_update": options} if options else None)
    alice = h.login("alice@localhost/phone", available=False)
    bob = h.login("bob@localhost/pc")
    bob.feed("<presence type='subscribe' to='alice@localhost'/>")
    alice.feed("<presence type='subscribed' to='bob@localhost'/>")
    alice.take(), bob.take()
    return h, alice, bob


def set_photo(session, image: bytes | None, iq_id="v1"):
    photo = "" if image is None else \
        f"<PHOTO><TYPE>image/png</TYPE><BINVAL>{base64.b64encode(image).decode()}</BINVAL></PHOTO>"
    session.take()
    session.feed(f"<iq type='set' id='{iq_id}'><vCard xmlns='vcard-temp'><FN>A</FN>{photo}</vCard></iq>")
    reply = only(session)
    assert reply["type"] == "result", reply.toXml()


def presence_to(session, from_="alice@localhost/phone"):
    """The one available presence ``session`` received from ``from_``."""
    got = [s for s in session.take() if s.name == "presence" and s.getAttribute("from") == from_]
    assert len(got) == 1, [s.toXml() for s in got]
    return got[0]


def updates(presence):
    """[(photo text or None when absent) for each x:update] of a presence."""
    result = []
    for x in presence.elements(UPDATE, "x"):
        photo = next(x.elements(UPDATE, "photo"), None)
        result.append(None if photo is None else str(photo))
    return result


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


# -- what is added ----------------------------------------------------------------------

def test_available_presence_carries_the_sha1_of_the_photo_to_contacts_and_own_resources():
    h, alice, bob = world()
    image = os.urandom(3000)
    set_photo(alice, image)
    alice.feed("<presence><show>away</show></presence>")
    assert updates(presence_to(bob)) == [sha1(image)]
    assert updates(presence_to(alice)) == [sha1(image)]
    assert updates(alice.presence) == [sha1(image)]  # probes are answered with it too


def test_a_user_without_a_vcard_or_without_a_photo_advertises_an_empty_photo():
    h, alice, bob = world()
    alice.feed("<presence/>")
    assert updates(presence_to(bob)) == [""]
    set_photo(alice, None)
    alice.feed("<presence/>")
    assert updates(presence_to(bob)) == [""]


def test_a_photo_given_only_by_url_advertises_an_empty_photo():
    h, alice, bob = world()
    alice.feed("<iq type='set' id='v1'><vCard xmlns='vcard-temp'><PHOTO>"
               "<EXTVAL>https://example.org/a.png</EXTVAL></PHOTO></vCard></iq>")
    alice.take()
    alice.feed("<presence/>")
    assert updates(presence_to(bob)) == [""]


def test_the_last_photo_with_binval_counts_as_prosody_reads_it():
    h, alice, bob = world()
    first, second = os.urandom(10), os.urandom(12)
    alice.feed("<iq type='set' id='v1'><vCard xmlns='vcard-temp'>"
               f"<PHOTO><BINVAL>{base64.b64encode(first).decode()}</BINVAL></PHOTO>"
               f"<PHOTO><BINVAL>{base64.b64encode(second).decode()}</BINVAL></PHOTO>"
               "<PHOTO><EXTVAL>https://example.org/a.png</EXTVAL></PHOTO></vCard></iq>")
    alice.take()
    alice.feed("<presence/>")
    assert updates(presence_to(bob)) == [sha1(second)]


def test_directed_presence_carries_the_hash_and_unavailable_does_not():
    h, alice, bob = world()
    carol = h.login("carol@localhost/web")
    image = os.urandom(100)
    set_photo(alice, image)
    alice.feed("<presence to='carol@localhost/web'/>")
    assert updates(presence_to(carol)) == [sha1(image)]
    alice.feed("<presence type='unavailable' to='carol@localhost/web'/>")
    (gone,) = carol.take()
    assert gone["type"] == "unavailable" and updates(gone) == []


# -- what the client said itself --------------------------------------------------------------

def test_a_photo_the_client_gave_is_left_alone_empty_or_not():
    h, alice, bob = world()
    set_photo(alice, os.urandom(50))
    alice.feed("<presence><x xmlns='vcard-temp:x:update'><photo>abc</photo></x></presence>")
    assert updates(presence_to(bob)) == ["abc"]
    alice.feed("<presence><x xmlns='vcard-temp:x:update'><photo/></x></presence>")
    assert updates(presence_to(bob)) == [""]


def test_an_x_without_photo_gets_the_photo_added_to_it():
    h, alice, bob = world()
    image = os.urandom(50)
    set_photo(alice, image)
    alice.feed("<presence><x xmlns='vcard-temp:x:update'><nick>al</nick></x>"
               "<x xmlns='vcard-temp:x:update'/></presence>")
    got = presence_to(bob)
    assert updates(got) == [sha1(image), None]  # the first x, as Prosody
    first = next(got.elements(UPDATE, "x"))
    assert [c.name for c in first.elements()] == ["nick", "photo"]


# -- a new photo ----------------------------------------------------------------------------

def test_a_new_photo_changes_the_hash_of_the_next_presence_without_a_rebroadcast():
    h, alice, bob = world()
    old, new = os.urandom(40), os.urandom(41)
    set_photo(alice, old)
    alice.feed("<presence/>")
    assert updates(presence_to(bob)) == [sha1(old)]
    set_photo(alice, new, "v2")
    assert bob.take() == []  # Prosody sends nothing either: the client sends presence
    alice.feed("<presence/>")
    assert updates(presence_to(bob)) == [sha1(new)]
    set_photo(alice, None, "v3")
    alice.feed("<presence/>")
    assert updates(presence_to(bob)) == [""]


def test_a_change_made_by_another_resource_reaches_this_ones_presence():
    h, alice, bob = world()
    alice.feed("<presence/>")
    presence_to(bob)
    laptop = h.login("alice@localhost/laptop")
    image = os.urandom(77)
    set_photo(laptop, image)
    alice.feed("<presence/>")
    assert updates(presence_to(bob)) == [sha1(image)]


# -- the cache ---------------------------------------------------------------------------

def counting_reads(h):
    store = h.component("vcard").store["vcard"]
    reads = []
    real_get = store.get

    def get(user):
        reads.append(user)
        return real_get(user)
    store.get = get
    return reads


def test_the_hash_is_read_from_storage_once_then_kept():
    h, alice, bob = world()
    set_photo(alice, os.urandom(10))
    component = h.component("vcard_update")
    component._hashes.clear()
    reads = counting_reads(h)
    for _ in range(3):
        alice.feed("<presence/>")
    assert reads == ["alice@localhost"]


def test_the_cache_is_bounded_least_recently_used_first():
    h, alice, bob = world(cache_size="2")
    component = h.component("vcard_update")
    carol, dave = h.login("carol@localhost/a"), h.login("dave@localhost/a")
    for session in (alice, bob, carol, dave):
        session.feed("<presence/>")
    assert list(component._hashes) == ["carol@localhost", "dave@localhost"]
    reads = counting_reads(h)
    carol.feed("<presence/>")
    alice.feed("<presence/>")
    assert reads == ["alice@localhost"]
    assert list(component._hashes) == ["carol@localhost", "alice@localhost"]


def test_a_deleted_account_is_forgotten():
    h, alice, bob = world()
    set_photo(alice, os.urandom(10))
    alice.feed("<presence/>")
    component = h.component("vcard_update")
    assert "alice@localhost" in component._hashes
    result_of(h.server.accounts.delete("alice@localhost"))
    assert "alice@localhost" not in component._hashes
    # an account made again under the name starts without the old photo
    again = h.login("alice@localhost/new")
    again.feed("<presence/>")
    assert updates(presence_to(again, "alice@localhost/new")) == [""]


# -- waiting for storage -------------------------------------------------------------------

def slow_reads(h):
    """Make vCard reads wait: returns the list of (user, Deferred) to fire."""
    store = h.component("vcard").store["vcard"]
    waiting = []
    real_get = store.get

    def get(user):
        d = defer.Deferred()
        waiting.append((user, d))
        return d.addCallback(lambda _: real_get(user))
    store.get = get
    return waiting


def test_presence_waits_for_the_stored_hash_and_the_session_is_held():
    h, alice, bob = world()
    image = os.urandom(10)
    set_photo(alice, image)
    h.component("vcard_update")._hashes.clear()
    waiting = slow_reads(h)
    held = []
    alice.hold = held.append
    alice.feed("<presence/>")
    assert bob.take() == [] and alice.available is False
    assert len(held) == 1 and held[0] is not None  # the next stanza waits for the read
    (_, read), = waiting
    read.callback(None)
    assert updates(presence_to(bob)) == [sha1(image)]
    assert alice.available is True


def test_a_read_that_began_before_a_change_does_not_overwrite_it():
    h, alice, bob = world()
    old = os.urandom(10)
    set_photo(alice, old)
    component = h.component("vcard_update")
    component._hashes.clear()
    waiting = slow_reads(h)
    stale = component.photo_hash("alice@localhost")
    component.vcard_changed(VCardChanged("alice@localhost", None))
    store = h.component("vcard").store["vcard"]
    del store.get  # back to the real read, which still has the old vCard
    waiting[0][1].callback(None)
    assert result_of(stale) == sha1(old)
    assert component._hashes["alice@localhost"] == ""


def test_a_session_that_ends_while_its_presence_waits_sends_nothing():
    h, alice, bob = world()
    set_photo(alice, os.urandom(10))
    h.component("vcard_update")._hashes.clear()
    waiting = slow_reads(h)
    alice.feed("<presence/>")
    alice.logout()
    bob.take()
    waiting[0][1].callback(None)
    assert bob.take() == []
    assert alice.available is False


def test_presence_goes_on_without_a_hash_when_storage_fails():
    h, alice, bob = world()
    h.component("vcard_update")._hashes.clear()
    waiting = slow_reads(h)
    alice.feed("<presence/>")
    waiting[0][1].errback(RuntimeError("disk on fire"))
    assert updates(presence_to(bob)) == []  # not a false "no avatar"
    assert "alice@localhost" not in h.component("vcard_update")._hashes
    alice.feed("<presence/>")  # the next presence tries again
    waiting[1][1].callback(None)
    assert updates(presence_to(bob)) == [""]


def test_without_the_vcard_component_presence_is_left_as_sent():
    h, alice, bob = world(["roster", "presence", "vcard_update"])
    alice.feed("<presence/>")
    assert updates(presence_to(bob)) == []
