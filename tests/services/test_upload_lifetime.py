"""How long slots and files live, in the harness on a task.Clock: an unused
slot is forgotten after its deadline, a file at expire_after, a deleted
account's files at once; and what a restart finds on disk is reconciled
with what the storage says."""

from __future__ import annotations

import io

import pytest
from twisted.internet import task

from upload_helpers import make_harness, request, service, slot_of, upload_bytes
from xmppd.testing import result_of


@pytest.fixture
def clock():
    c = task.Clock()
    c.advance(1_000_000)
    return c


def rows(h) -> dict:
    return result_of(service(h).store["upload"].items(""))


def test_a_file_is_deleted_at_expire_after_and_its_slot_forgotten(tmp_path, clock):
    h = make_harness(tmp_path, clock, expire_after=3600)
    alice = h.login("alice@localhost/a")
    slot = slot_of(request(alice, size=5))
    assert upload_bytes(h, slot, b"hello")
    path = tmp_path / "upload" / slot.slot_id
    assert path.read_bytes() == b"hello"
    clock.advance(3599)
    assert service(h).lookup(slot.slot_id) is not None and path.exists()
    clock.advance(1)
    assert service(h).lookup(slot.slot_id) is None
    assert not path.exists() and rows(h) == {}


def test_expire_after_zero_keeps_files(tmp_path, clock):
    h = make_harness(tmp_path, clock, expire_after=0)
    alice = h.login("alice@localhost/a")
    slot = slot_of(request(alice, size=5))
    assert upload_bytes(h, slot, b"hello")
    clock.advance(365 * 86400)
    assert service(h).lookup(slot.slot_id).done
    assert (tmp_path / "upload" / slot.slot_id).exists()


def test_an_unused_slot_is_forgotten_after_its_deadline_and_frees_the_quota(tmp_path, clock):
    h = make_harness(tmp_path, clock, slot_timeout=300, max_files=1)
    alice = h.login("alice@localhost/a")
    slot = slot_of(request(alice, size=5))
    clock.advance(300)
    upload = service(h).lookup(slot.slot_id)
    assert upload is not None  # past its deadline (a PUT gets 410), still known
    assert request(alice, size=5)["type"] == "error"
    clock.advance(300)
    assert service(h).lookup(slot.slot_id) is None and rows(h) == {}
    slot_of(request(alice, size=5))


def test_a_used_slot_outlives_its_deadline(tmp_path, clock):
    h = make_harness(tmp_path, clock, slot_timeout=300, expire_after=3600)
    alice = h.login("alice@localhost/a")
    slot = slot_of(request(alice, size=5))
    assert upload_bytes(h, slot, b"hello")
    clock.advance(1000)
    assert service(h).lookup(slot.slot_id).done


def test_a_body_of_the_wrong_size_stores_nothing(tmp_path, clock):
    h = make_harness(tmp_path, clock)
    alice = h.login("alice@localhost/a")
    slot = slot_of(request(alice, size=5))
    for body in (b"hell", b"hello!"):
        assert not upload_bytes(h, slot, body)
    assert sorted(p.name for p in (tmp_path / "upload").iterdir()) == ["secret.key"]
    assert not service(h).uploads[slot.slot_id].done


def test_account_deletion_removes_its_files_and_slots(tmp_path, clock):
    h = make_harness(tmp_path, clock, expire_after=0)
    alice, bob = h.login("alice@localhost/a"), h.login("bob@localhost/b")
    done = slot_of(request(alice, size=5, id="1"))
    assert upload_bytes(h, done, b"hello")
    pending = slot_of(request(alice, size=5, id="2"))
    kept = slot_of(request(bob, size=3, id="3"))
    assert upload_bytes(h, kept, b"bob")
    result_of(h.server._account_deleted("alice@localhost"))
    for slot in (done, pending):
        assert service(h).lookup(slot.slot_id) is None
        assert not (tmp_path / "upload" / slot.slot_id).exists()
    assert list(rows(h)) == [kept.slot_id]
    assert (tmp_path / "upload" / kept.slot_id).read_bytes() == b"bob"
    assert "alice@localhost" not in service(h).owned


def test_a_file_written_for_a_slot_deleted_meanwhile_is_not_kept(tmp_path, clock):
    h = make_harness(tmp_path, clock)
    alice = h.login("alice@localhost/a")
    slot = slot_of(request(alice, size=5))
    upload = service(h).uploads[slot.slot_id]
    service(h).files.run_blocking = lambda f, *a: task.deferLater(clock, 1, f, *a)
    d = service(h).store_file(upload, io.BytesIO(b"hello"))
    result_of(h.server._account_deleted("alice@localhost"))
    clock.advance(1)
    assert result_of(d) is False
    assert not (tmp_path / "upload" / slot.slot_id).exists()


def restart(h):
    old = service(h)
    old.stopService()
    new = type(old)(h.server, h.config.component("upload"))
    new.startService()
    h.server.components["upload"] = new
    return new


def test_a_restart_removes_partial_writes_and_files_no_slot_knows(tmp_path, clock):
    h = make_harness(tmp_path, clock)
    alice = h.login("alice@localhost/a")
    slot = slot_of(request(alice, size=5))
    assert upload_bytes(h, slot, b"hello")
    directory = tmp_path / "upload"
    (directory / f"{slot.slot_id}.abc123.part").write_bytes(b"hel")
    (directory / ("0" * 32)).write_bytes(b"orphan")
    (directory / "README").write_text("an operator's note")
    restart(h)
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        ["secret.key", slot.slot_id, "README"])


def test_a_restart_finishes_an_upload_whose_row_was_not_updated(tmp_path, clock):
    """A crash after the file's rename and before its row said so: the
    file is there, so the upload happened."""
    h = make_harness(tmp_path, clock)
    alice = h.login("alice@localhost/a")
    slot = slot_of(request(alice, size=5))
    (tmp_path / "upload" / slot.slot_id).write_bytes(b"hello")
    new = restart(h)
    assert new.lookup(slot.slot_id).done and rows(h)[slot.slot_id]["done"] is True


def test_a_restart_forgets_a_file_that_is_missing(tmp_path, clock):
    h = make_harness(tmp_path, clock)
    alice = h.login("alice@localhost/a")
    slot = slot_of(request(alice, size=5))
    assert upload_bytes(h, slot, b"hello")
    (tmp_path / "upload" / slot.slot_id).unlink()
    new = restart(h)
    assert new.lookup(slot.slot_id) is None and rows(h) == {}


def test_a_restart_expires_what_expired_while_down(tmp_path, clock):
    h = make_harness(tmp_path, clock, expire_after=3600)
    alice = h.login("alice@localhost/a")
    slot = slot_of(request(alice, size=5))
    assert upload_bytes(h, slot, b"hello")
    old = service(h)
    old.stopService()
    clock.advance(7200)
    new = type(old)(h.server, h.config.component("upload"))
    new.startService()
    assert new.lookup(slot.slot_id) is None and rows(h) == {}
    assert not (tmp_path / "upload" / slot.slot_id).exists()


def test_a_slot_whose_write_failed_after_its_deadline_is_still_forgotten(tmp_path, clock):
    h = make_harness(tmp_path, clock, slot_timeout=300)
    alice = h.login("alice@localhost/a")
    slot = slot_of(request(alice, size=5))
    upload = service(h).uploads[slot.slot_id]
    service(h).files.run_blocking = lambda f, *a: task.deferLater(clock, 700, f, *a)
    d = service(h).store_file(upload, io.BytesIO(b"hell"))
    clock.advance(650)  # the drop is due while the body is being written: not yet
    assert slot.slot_id in service(h).uploads
    clock.advance(50)
    assert result_of(d) is False
    clock.advance(0)
    assert service(h).lookup(slot.slot_id) is None and rows(h) == {}
