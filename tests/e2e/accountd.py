"""Accounts for the end-to-end tests' servers, made by one long-lived process.

``xmppd adduser`` starts a Python and imports Twisted for every account
(about 0.6 s of CPU); the end-to-end tests create several hundred, which
cost minutes of CI. This process starts once per test session
(:meth:`conftest.XmppdProcess.addusers`) and makes each account as the admin
command does: the server's configuration, its storage, :class:`Accounts`.
(The admin command itself is tested in tests/test_admin.py.)

One request a line on stdin, ``<config path> TAB <jid> TAB <password>``;
one answer a line on stdout, in order: ``ok`` or ``error <why>``. It exits
when stdin closes.
"""

from __future__ import annotations

from twisted.internet import defer, reactor, stdio
from twisted.protocols.basic import LineReceiver

from xmppd import config as configlib
from xmppd.accounts import Accounts
from xmppd.storage import open_storage


@defer.inlineCallbacks
def create(config_path: str, jid: str, password: str):
    server = configlib.load(config_path).server
    storage = open_storage(server["storage"], base_dir=server["data_dir"],
                           synchronous=server["sqlite_synchronous"])
    yield storage.start()
    try:
        yield Accounts(storage, server["scram_iterations"]).create(jid, password)
    finally:
        yield storage.stop()


class Requests(LineReceiver):
    delimiter = b"\n"

    def connectionMade(self) -> None:
        self.done = defer.succeed(None)  # one account at a time, answers in order

    def lineReceived(self, line: bytes) -> None:
        request = line.decode("utf-8").split("\t")
        self.done.addCallback(lambda _: create(*request))
        self.done.addCallbacks(
            lambda _: self.sendLine(b"ok"),
            lambda failure: self.sendLine(
                f"error {' '.join(failure.getErrorMessage().split())}".encode("utf-8")))

    def connectionLost(self, reason=None) -> None:
        self.done.addBoth(lambda _: reactor.stop())


if __name__ == "__main__":
    stdio.StandardIO(Requests())
    reactor.run()
