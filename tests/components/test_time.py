"""XEP-0202: the server's time in UTC."""

import datetime

from xmppd.testing import Harness

TIME = "urn:xmpp:time"


def test_time_reports_utc_close_to_now_and_tzo():
    h = Harness(["time"])
    alice = h.login("alice@localhost/phone")
    before = datetime.datetime.now(datetime.timezone.utc)
    alice.feed(f"<iq type='get' id='t1' to='localhost'><time xmlns='{TIME}'/></iq>")
    after = datetime.datetime.now(datetime.timezone.utc)
    (reply,) = alice.take()
    assert (reply["type"], reply["id"], reply["to"], reply["from"]) == (
        "result", "t1", "alice@localhost/phone", "localhost")
    answer = next(reply.elements(TIME, "time"))
    tzo = str(next(answer.elements(TIME, "tzo")))
    utc = str(next(answer.elements(TIME, "utc")))
    assert tzo in ("Z", "+00:00")
    # XEP-0082 DateTime, UTC, with a 'Z' suffix
    assert utc.endswith("Z")
    when = datetime.datetime.fromisoformat(utc[:-1]).replace(tzinfo=datetime.timezone.utc)
    slack = datetime.timedelta(seconds=1)
    assert before - slack <= when <= after + slack


def test_time_is_not_answered_when_the_component_is_not_enabled():
    h = Harness(["ping"])
    alice = h.login("alice@localhost/phone")
    alice.feed(f"<iq type='get' id='t2' to='localhost'><time xmlns='{TIME}'/></iq>")
    (reply,) = alice.take()
    assert reply["type"] == "error" and reply["id"] == "t2"
    error = next(c for c in reply.elements() if c.name == "error")
    stanzas = "urn:ietf:params:xml:ns:xmpp-stanzas"
    assert next(error.elements(stanzas, "service-unavailable"), None) is not None
