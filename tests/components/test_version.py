"""XEP-0092: software version; the OS only when the operator allows it."""

import platform

import xmppd
from xmppd.testing import Harness

VERSION = "jabber:iq:version"


def ask_version(h):
    alice = h.login("alice@localhost/phone")
    alice.feed(f"<iq type='get' id='v1' to='localhost'><query xmlns='{VERSION}'/></iq>")
    received = alice.take()
    assert len(received) == 1
    reply = received[0]
    assert (reply["type"], reply["id"], reply["to"], reply["from"]) == (
        "result", "v1", "alice@localhost/phone", "localhost")
    query = next(reply.elements(VERSION, "query"))
    return {child.name: str(child) for child in query.elements()}


def test_version_reports_name_and_version():
    fields = ask_version(Harness(["version"]))
    assert fields["name"] == "xmppd"
    assert fields["version"] == xmppd.__version__
    assert fields["version"]


def test_version_hides_os_by_default():
    fields = ask_version(Harness(["version"]))
    assert "os" not in fields


def test_version_shows_os_when_show_os_is_true():
    fields = ask_version(Harness(["version"], options={"component:version": {"show_os": "true"}}))
    assert fields["os"] == f"{platform.system()} {platform.release()}"
    assert fields["name"] == "xmppd"
