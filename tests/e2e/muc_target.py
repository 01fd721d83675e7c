"""The server the multi-user chat end-to-end tests run against.

By default a real ``twistd xmppd`` with its ``muc`` service on
``conference.localhost``. With ``XMPPD_MUC_AGAINST=prosody`` in the
environment the same tests run against Debian's Prosody with its ``muc``
component on the same domain: a test that passes against both tests the
protocol (XEP-0045), not xmppd's reading of it. Tests that need what only
xmppd has (a restart with ``kill -9``, an xmppd option) ask for
:func:`require_xmppd`.

``make_muc_target(users=..., muc={...}, admins=...)`` is a module-scoped
factory: ``muc`` holds ``[component:muc]`` options of xmppd; for Prosody the
few with a Prosody equivalent are translated (:data:`PROSODY_OPTIONS`), and a
test giving one without an equivalent is skipped against Prosody.

Client libraries connect to ``target.client_port``: xmppd's c2s port, or the
bridge of a module that runs over WebSocket and BOSH too (conftest's
``all_transports``); Prosody is reached over TCP only (its tests over the
other transports are skipped).
"""

from __future__ import annotations

import os
from typing import Any, Iterable

import pytest

from conftest import PASSWORD, XmppdProcess
from prosody import ProsodyProcess, ProsodyUnavailable

MUC_DOMAIN = "conference.localhost"
DEFAULT_USERS = tuple(f"{u}@localhost" for u in
                      ("alice", "bob", "carol", "dave", "eve", "admin"))
AGAINST = os.environ.get("XMPPD_MUC_AGAINST", "xmppd")

#: xmppd ``[component:muc]`` option → (Prosody option, value translation)
PROSODY_OPTIONS = {
    "max_history": ("max_history_messages", str),
    "create": ("restrict_room_creation", lambda v: {"local": "false",
                                                    "admins": "true"}[v]),
}

#: the components every MUC test server runs (the shipped config's IM basics and muc)
XMPPD_COMPONENTS = ("disco ping presence messaging roster offline carbons blocking "
                    "vcard caps muc")


def require_xmppd(reason: str) -> None:
    """Skip the calling test against Prosody (``reason``: what only xmppd has)."""
    if AGAINST == "prosody":
        pytest.skip(f"xmppd only: {reason}")


class _ProsodyTarget:
    def __init__(self, process: ProsodyProcess):
        self.process = process
        self.host, self.port, self.domain = process.host, process.port, process.domain
        self.muc = MUC_DOMAIN
        self.name = "prosody"

    @property
    def client_port(self) -> int:
        transport = XmppdProcess.client_transport
        if transport != "tcp":
            pytest.skip(f"the Prosody target is reached over TCP only, not {transport}")
        return self.port

    def stop(self) -> None:
        self.process.stop()


class _XmppdTarget:
    def __init__(self, process: Any):
        self.process = process
        self.host, self.port, self.domain = process.host, process.port, process.domain
        self.muc = MUC_DOMAIN
        self.name = "xmppd"

    @property
    def client_port(self) -> int:
        """Where a client library connects (c2s, or the transport's bridge)."""
        return self.process.client_port

    def restart(self, kill: bool = False) -> None:
        """Stop (``kill``: SIGKILL, no clean shutdown) and start again, same data."""
        if kill:
            self.process.kill()
        else:
            self.process.stop()
        self.process.start()
        self.port = self.process.port


@pytest.fixture(scope="module")
def make_muc_target(make_xmppd_module):
    started: list[Any] = []

    def make(users: Iterable[str] = DEFAULT_USERS, muc: dict[str, Any] | None = None,
             admins: Iterable[str] = ("admin@localhost",), **sections: dict[str, Any]):
        users, muc, admins = list(users), dict(muc or {}), list(admins)
        if AGAINST == "prosody":
            lines = []
            for key, value in muc.items():
                if key not in PROSODY_OPTIONS:
                    pytest.skip(f"xmppd only: [component:muc] {key} has no Prosody equivalent")
                name, translate = PROSODY_OPTIONS[key]
                lines.append(f"{name} = {translate(value)}")
            process = ProsodyProcess(users, PASSWORD, components={MUC_DOMAIN: "muc"},
                                     component_options={MUC_DOMAIN: "\n".join(lines)},
                                     admins=admins)
            try:
                process.start()
            except ProsodyUnavailable as e:
                pytest.skip(f"Debian's prosody cannot be installed here: {e}")
            target = _ProsodyTarget(process)
            started.append(target)
            return target
        config = {"server": {"components": XMPPD_COMPONENTS, "admins": " ".join(admins)},
                  "component:muc": {"domain": MUC_DOMAIN, **muc}}
        for section, values in sections.items():
            config.setdefault(section.replace("__", ":"), {}).update(values)
        return _XmppdTarget(make_xmppd_module(config, users=users))

    yield make
    for target in started:
        target.stop()


@pytest.fixture(scope="module")
def muc_target(make_muc_target):
    """A MUC server with :data:`DEFAULT_USERS` (``admin@localhost`` a server admin)."""
    return make_muc_target()
