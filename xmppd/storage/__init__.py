"""Storage: the interfaces components use, and :func:`open_storage` to pick a backend.

The backend is chosen by a URL in the configuration so that tests and throwaway
servers can run on ``memory:`` while real deployments use an SQLite file.
"""

from __future__ import annotations

import os

from xmppd.storage.interfaces import (
    ArchiveItem,
    IArchiveStore,
    IKeyValueStore,
    IMapStore,
    IStorage,
    encode_value,
    value_size,
)

__all__ = [
    "ArchiveItem",
    "IArchiveStore",
    "IKeyValueStore",
    "IMapStore",
    "IStorage",
    "encode_value",
    "open_storage",
    "storage_url_problem",
    "value_size",
]

_USAGE = "use memory:, sqlite:relative/path or sqlite:///absolute/path"


def _parse(url: str) -> tuple[str, str]:
    """Split ``url`` into (scheme, path), raising ValueError with a one-line reason.

    Parsing is separate from opening so configuration checks can report a bad
    URL without touching the file system.
    """
    scheme, colon, rest = url.partition(":")
    if not colon:
        raise ValueError(f"storage URL {url!r} has no scheme; {_USAGE}")
    if scheme == "memory":
        if rest:
            raise ValueError(f"storage URL {url!r}: memory: takes no path")
        return scheme, ""
    if scheme == "sqlite":
        if rest.startswith("//"):
            rest = rest[2:]
            if rest and not rest.startswith("/"):
                raise ValueError(f"storage URL {url!r} has a host part; {_USAGE}")
        if not rest or rest.endswith("/"):
            raise ValueError(f"storage URL {url!r} has no file name; {_USAGE}")
        return scheme, rest
    raise ValueError(f"storage URL {url!r} has unknown scheme {scheme!r}; {_USAGE}")


def storage_url_problem(url: str) -> str | None:
    """A one-line description of what is wrong with ``url``, or None if it is usable."""
    try:
        _parse(url)
    except ValueError as e:
        return str(e)
    return None


def open_storage(url: str, *, base_dir: str | None = None, synchronous: str = "normal") -> IStorage:
    """Create (but do not start) the backend ``url`` names.

    A relative SQLite path is resolved against ``base_dir`` (the server's
    data_dir), so the server and the admin command find the same file whatever
    their working directory. ``synchronous`` is SQLite's durability level.
    """
    scheme, path = _parse(url)
    if scheme == "memory":
        from xmppd.storage.memory import MemoryStorage

        return MemoryStorage()
    from xmppd.storage.sqlite import SQLiteStorage

    if base_dir is not None:
        path = os.path.join(base_dir, path)
    return SQLiteStorage(os.path.abspath(path), synchronous=synchronous)
