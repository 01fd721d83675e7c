"""KeyedLock: one operation at a time per key, and no lock kept for idle keys."""

from twisted.internet import defer

from xmppd.locks import KeyedLock
from xmppd.testing import result_of


def test_operations_on_one_key_run_one_after_another_in_order():
    locks, log, gate = KeyedLock(), [], defer.Deferred()

    def first():
        log.append("first starts")
        return gate.addCallback(lambda _: log.append("first ends"))

    a = locks.run("alice", first)
    b = locks.run("alice", lambda: log.append("second"))
    assert log == ["first starts"]
    gate.callback(None)
    result_of(a), result_of(b)
    assert log == ["first starts", "first ends", "second"]


def test_other_keys_do_not_wait():
    locks, gate = KeyedLock(), defer.Deferred()
    locks.run("alice", lambda: gate)
    assert result_of(locks.run("bob", lambda: "done")) == "done"


def test_a_key_with_nothing_running_holds_no_lock():
    locks, gate = KeyedLock(), defer.Deferred()
    d = locks.run("alice", lambda: gate)
    assert len(locks) == 1
    gate.callback("ok")
    assert result_of(d) == "ok" and len(locks) == 0


def test_a_failure_reaches_the_caller_and_releases_the_key():
    locks, errors = KeyedLock(), []
    locks.run("alice", lambda: 1 / 0).addErrback(lambda f: errors.append(f.type))
    assert errors == [ZeroDivisionError]
    assert len(locks) == 0
    assert result_of(locks.run("alice", lambda: "next")) == "next"
