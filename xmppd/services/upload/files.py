"""The uploaded files on disk, under ``<data_dir>/upload/`` and nowhere else.

A file is named by its slot id alone (32 random hex digits): what the
client called it is metadata, kept in storage and shown in URLs and in
``Content-Disposition``, and never becomes part of a path. Every path this
module makes goes through :func:`FileStore.path`, which takes only a
well-formed slot id, so no request can name a file outside the directory.

A body is written to a temporary file in the same directory, flushed to
disk, and renamed over the final name: a reader sees the whole file or no
file, and a crash leaves at most a ``<id>.<random>.part`` that the next start
removes. The secret the PUT tokens are made with lives here too
(``secret.key``, readable by the server's user only), so tokens handed out
before a restart still work after it.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import tempfile
from typing import IO, Callable, Iterable

from twisted.internet import defer, threads

#: A slot id: 128 random bits, as lowercase hex.
SLOT_ID = re.compile(r"\A[0-9a-f]{32}\Z")
#: What a crash in the middle of a write leaves behind.
PARTIAL = re.compile(r"\A[0-9a-f]{32}\..*\.part\Z")
SECRET_FILE = "secret.key"
#: Bytes copied per read while a body is written out.
CHUNK = 1 << 16


def new_slot_id() -> str:
    """A fresh, unguessable slot id."""
    return secrets.token_hex(16)


def is_slot_id(text: str) -> bool:
    return bool(SLOT_ID.match(text))


class FileStore:
    """The directory of uploaded files: paths, atomic writes, deletion."""

    #: How blocking file work runs (copying and syncing a body): in a thread,
    #: off the reactor. The component tests run it inline.
    run_blocking: Callable[..., defer.Deferred] = staticmethod(threads.deferToThread)

    def __init__(self, directory: str):
        self.directory = os.path.abspath(directory)

    def open(self) -> bytes:
        """Create the directory (private to the server's user) if missing,
        and return the token secret, made on first use."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        return self._secret()

    def _secret(self) -> bytes:
        filename = os.path.join(self.directory, SECRET_FILE)
        try:
            with open(filename, "rb") as f:
                secret = f.read().strip()
            if len(secret) >= 32:
                return secret
        except FileNotFoundError:
            pass
        # Written aside and linked into place, so that two processes starting
        # on one directory (tests) agree on one secret and none reads half.
        fd, temporary = tempfile.mkstemp(dir=self.directory, prefix="secret.", suffix=".tmp")
        try:
            os.write(fd, secrets.token_hex(32).encode("ascii"))
            os.fsync(fd)
            os.close(fd)
            try:
                os.link(temporary, filename)
            except FileExistsError:
                pass
        finally:
            os.unlink(temporary)
        with open(filename, "rb") as f:
            return f.read().strip()

    def path(self, slot_id: str) -> str:
        """The file of ``slot_id``; anything but a slot id is refused."""
        if not is_slot_id(slot_id):
            raise ValueError(f"not a slot id: {slot_id!r}")
        return os.path.join(self.directory, slot_id)

    def exists(self, slot_id: str) -> bool:
        return os.path.isfile(self.path(slot_id))

    def delete(self, slot_id: str) -> None:
        """Remove the file of ``slot_id`` (already gone is fine)."""
        try:
            os.unlink(self.path(slot_id))
        except FileNotFoundError:
            pass

    def write(self, slot_id: str, source: IO[bytes], size: int, mtime: float) -> defer.Deferred:
        """Copy ``source`` (from its start) to the file of ``slot_id``, off
        the reactor; fires with True once the file is in place and on disk,
        with False (and nothing left behind) if ``source`` does not hold
        exactly ``size`` bytes. ``mtime`` becomes the file's modification
        time (what ``Last-Modified`` says)."""
        final = self.path(slot_id)
        return self.run_blocking(self._write, final, slot_id, source, size, mtime)

    def _write(self, final: str, slot_id: str, source: IO[bytes], size: int,
               mtime: float) -> bool:
        fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=f"{slot_id}.", suffix=".part")
        try:
            written = 0
            source.seek(0)
            with os.fdopen(fd, "wb") as out:
                while written <= size:
                    chunk = source.read(CHUNK)
                    if not chunk:
                        break
                    written += len(chunk)
                    if written > size:
                        break
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if written != size:
                return False
            os.utime(temporary, (mtime, mtime))
            os.replace(temporary, final)
            temporary = ""
            self._sync_directory()
            return True
        finally:
            if temporary:
                try:
                    os.unlink(temporary)
                except FileNotFoundError:
                    pass

    def _sync_directory(self) -> None:
        """The rename itself survives a power loss only once the directory is synced."""
        try:
            fd = os.open(self.directory, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError as e:  # some file systems cannot sync a directory
            if e.errno not in (errno.EINVAL, errno.EBADF):
                raise
        finally:
            os.close(fd)

    def sweep(self, known: Iterable[str]) -> list[str]:
        """Remove what no slot accounts for: partial writes a crash left, and
        files whose slot is gone. Returns the names removed. Names that are
        not ours (the secret, anything an operator put here) are left alone."""
        keep = set(known)
        removed = []
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return removed
        for name in names:
            if (PARTIAL.match(name) or (SLOT_ID.match(name) and name not in keep)):
                try:
                    os.unlink(os.path.join(self.directory, name))
                    removed.append(name)
                except FileNotFoundError:
                    pass
        return removed
