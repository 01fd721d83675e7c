"""The control socket: the ``xmppd`` admin command reaching a running server.

Some admin commands must happen inside the running server, not only in its
storage: deleting an account has to end its sessions and make every
component forget what it holds of it in memory (the ``account-deleted``
event), or a cached roster would outlive the rows ``xmppd deluser`` removed.
So a running server listens on a UNIX socket in its data directory
(``data_dir/xmppd.sock``, mode 0600: only the user xmppd runs as, and root,
may connect), as Prosody's admin shell does; the admin command tries it
first and works on the storage directly when no server answers.

The protocol is one line each way: ``deluser alice@localhost`` →
``ok deleted alice@localhost and all its data`` or ``error <reason>``.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver
from twisted.internet.protocol import Factory

from xmppd.accounts import AccountError, normalize

SOCKET_NAME = "xmppd.sock"
#: seconds the admin command waits for the server's answer
CLIENT_TIMEOUT = 30.0


def socket_path(data_dir: str) -> str:
    return os.path.join(data_dir, SOCKET_NAME)


class ControlProtocol(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 4096
    log = Logger()

    def __init__(self, server: Any):
        self.server = server

    def lineReceived(self, line: bytes) -> None:
        command, _, argument = line.decode("utf-8", "replace").strip().partition(" ")
        handler = getattr(self, f"do_{command}", None)
        if handler is None:
            self._answer(f"error unknown command {command!r}")
            return
        d = defer.maybeDeferred(handler, argument.strip())
        d.addCallbacks(lambda text: self._answer(f"ok {text}"), self._failed)

    def _failed(self, failure: Any) -> None:
        if not failure.check(AccountError):
            self.log.failure("control command failed", failure)
        self._answer(f"error {failure.getErrorMessage()}")

    def _answer(self, text: str) -> None:
        self.sendLine(" ".join(text.split()).encode("utf-8"))
        self.transport.loseConnection()

    def do_ping(self, argument: str) -> str:
        return "pong"

    @defer.inlineCallbacks
    def do_deluser(self, argument: str):
        user = normalize(argument)
        yield self.server.delete_account(user)
        self.log.info("account {user} deleted by the admin command", user=user)
        return f"deleted {user} and all its data"


class ControlFactory(Factory):
    def __init__(self, server: Any):
        self.server = server

    def buildProtocol(self, addr: Any) -> ControlProtocol:
        return ControlProtocol(self.server)


class ControlError(Exception):
    """Something listens on the control socket but does not answer."""


def listen(server: Any, reactor: Any) -> Any:
    """Listen on the data directory's control socket (a stale one, left by a
    server killed with -9, is replaced; a live one means another server
    runs on this data directory, which is refused)."""
    path = socket_path(server.config.server["data_dir"])
    if os.path.exists(path):
        try:
            alive = ask(path, "ping", timeout=2.0) is not None
        except ControlError:
            alive = True
        if alive:
            raise SystemExit(f"xmppd: another xmppd runs on {os.path.dirname(path)} "
                             f"(it listens on {path})")
        os.unlink(path)
    # Twisted makes the socket 0600 right after binding it; the data
    # directory is the server's own (never a shared one), so that instant
    # does not let anyone else in. (A process-wide umask here would also
    # apply to the files other threads create meanwhile.)
    try:
        return reactor.listenUNIX(path, ControlFactory(server), mode=0o600)
    except (CannotListenError, OSError) as e:
        cause = getattr(e, "socketError", e)
        if isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE:
            raise SystemExit(f"xmppd: another xmppd runs on {os.path.dirname(path)} "
                             f"(it listens on {path})") from None
        # A path too long for a UNIX socket (about 100 bytes), a file system
        # without sockets: the server runs, the admin command works on the
        # storage alone (a deleted account's sessions live on until logout).
        Logger().warn("no control socket at {path} ({error}): `xmppd deluser` will not "
                      "reach this server", path=path, error=e)
        return None


def ask(path: str, line: str, timeout: float = CLIENT_TIMEOUT) -> str | None:
    """Send one command to a running server; its answer line, or None when
    no server listens there."""
    if not os.path.exists(path):
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(line.encode("utf-8") + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except (ConnectionRefusedError, FileNotFoundError):
        return None  # a socket file left by a server that is gone
    except OSError as e:  # a hung server (timeout), a path too long …
        raise ControlError(f"the server at {path} did not answer: {e}") from None
    return data.decode("utf-8", "replace").strip()
