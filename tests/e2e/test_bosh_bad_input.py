"""Bad input at ``/http-bind`` against a real ``twistd xmppd``: bodies that
are not XML or not ``<body/>``, unknown sids, replayed and out-of-window rids,
too many requests at once, a stanza over ``[server] max_stanza_size`` and a
body over ``[http] max_body_size``. Each is refused cleanly (status 200 and a
terminal binding condition, or 413), and a bystander's BOSH session keeps
working throughout."""

from __future__ import annotations

import time
import uuid

import pytest

from boshclient import NS_HTTPBIND, BoshClient, login  # noqa: E402
from conftest import PASSWORD  # noqa: E402

MAX_BODY = 200_000


@pytest.fixture(scope="module")
def server(make_xmppd_module):
    srv = make_xmppd_module({"server": {"components": "disco ping roster presence messaging",
                                        "max_stanza_size": 16384},
                             "http": {"max_body_size": MAX_BODY}}, users=())
    deadline = time.monotonic() + 10
    while True:
        try:
            BoshClient(srv.host, srv.http_port).post_raw(b"", method="GET")
            return srv
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture(scope="module")
def bystander(server):
    jid = f"by{uuid.uuid4().hex[:6]}@localhost"
    server.addusers([jid])
    client = login(server.host, server.http_port, jid, PASSWORD, "by")
    yield client
    client.close()


def fresh(server) -> BoshClient:
    jid = f"u{uuid.uuid4().hex[:6]}@localhost"
    server.addusers([jid])
    return login(server.host, server.http_port, jid, PASSWORD, "web")


def alive(client: BoshClient) -> None:
    pong = client.iq("<ping xmlns='urn:xmpp:ping'/>", "get", "localhost")
    assert pong.get("type") == "result"


@pytest.mark.parametrize("data", [b"", b"hello", b"<body", b"\xff\xfe<\x00",
                                  b"<body xmlns='jabber:client'/>",
                                  f"<foo xmlns='{NS_HTTPBIND}' rid='1'/>".encode(),
                                  b"<!DOCTYPE body [<!ENTITY a 'b'>]><body/>"])
def test_a_request_that_is_not_a_bosh_body_is_bad_request(server, bystander, data):
    response = BoshClient(server.host, server.http_port).post_raw(data)
    assert response.status == 200 and response.terminal() == ("terminate", "bad-request")
    alive(bystander)


def test_an_unknown_sid_is_item_not_found(server, bystander):
    c = BoshClient(server.host, server.http_port)
    response = c.post_raw(f"<body xmlns='{NS_HTTPBIND}' sid='{uuid.uuid4()}' rid='7'/>")
    assert response.status == 200 and response.terminal() == ("terminate", "item-not-found")
    alive(bystander)


def test_a_replayed_rid_gets_the_same_response_and_nothing_twice(server, bystander):
    c = fresh(server)
    c.stop_polling()
    rid = c.send("<iq xmlns='jabber:client' type='get' id='once' to='localhost'>"
                 "<ping xmlns='urn:xmpp:ping'/></iq>")
    c.next_element(lambda e: e.get("id") == "once")
    c.send()  # the ping's request, held, is answered by the next one
    deadline = time.monotonic() + 10
    while rid not in dict(c.bodies) and time.monotonic() < deadline:
        time.sleep(0.02)
    first = dict(c.bodies)
    replay = c.post_raw(c.body("<iq xmlns='jabber:client' type='get' id='twice' "
                               "to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>", rid=rid))
    cached = [data for r, data in c.bodies if r == rid]
    assert replay.status == 200 and cached and replay.data == cached[0] == first[rid]
    assert b"twice" not in replay.data
    alive(bystander)


def test_an_rid_outside_the_window_ends_that_session_only(server, bystander):
    c = fresh(server)
    c.stop_polling()
    response = c.post_raw(c.body(rid=c.rid + 50))
    assert response.terminal() == ("terminate", "item-not-found")
    c.wait_terminated()  # the poll in flight learns it too
    again = c.post_raw(c.body(rid=c.rid + 1))
    assert again.terminal() == ("terminate", "item-not-found")  # no such session now
    alive(bystander)


def test_too_many_requests_at_once_is_policy_violation(server, bystander):
    c = fresh(server)
    c.stop_polling()
    # the client's poll is held; two more new rids ahead of it make three
    ahead = BoshClient(server.host, server.http_port)
    import threading
    results = {}

    def post(rid):
        results[rid] = ahead.post_raw(c.body(rid=rid), timeout=30)
    first = threading.Thread(target=post, args=(c.rid + 2,))
    first.start()
    time.sleep(0.5)
    third = c.post_raw(c.body(rid=c.rid + 3))
    first.join(10)
    assert third.terminal() == ("terminate", "policy-violation")
    assert results[c.rid + 2].terminal() == ("terminate", "policy-violation")
    alive(bystander)


def test_a_stanza_over_the_size_limit_is_a_policy_violation_stream_error(server, bystander):
    c = fresh(server)
    c.send("<message xmlns='jabber:client' to='nobody@localhost'><body>"
           + "x" * 20000 + "</body></message>")
    end = c.wait_terminated()
    assert end.get("condition") == "remote-stream-error"
    assert end.find("{http://etherx.jabber.org/streams}error/"
                    "{urn:ietf:params:xml:ns:xmpp-streams}policy-violation") is not None
    alive(bystander)


def test_a_body_over_max_body_size_is_413(server, bystander):
    c = fresh(server)
    c.stop_polling()
    huge = c.body("<message xmlns='jabber:client' to='nobody@localhost'><body>x</body>"
                  "</message>" * (MAX_BODY // 60), rid=c.rid + 1)
    assert len(huge) > MAX_BODY
    try:
        response = c.post_raw(huge)
        assert response.status == 413
    except (ConnectionError, OSError):
        pass  # refused and closed before the whole body was sent
    alive(bystander)
