"""XEP-0357 push notifications end to end, against a real ``twistd xmppd``.

The app server is a slixmpp client logged in as ``push@localhost/app``
(XEP-0357 lets any JID be one) that answers every notification with a
result. alice's phone is slixmpp with ``xep_0198`` through the relay the test
cuts (as tests/e2e/test_sm_slixmpp.py): while connected it gets no push;
once its connection drops and its session hibernates, a message to it is
pushed. A client that logged out is pushed for the message that goes to
offline storage, also after a restart of the server (the registration is
stored), and the message still waits for it."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from cutproxy import CutProxy
from slixclient import CLIENT, IMClient, TIMEOUT, close_all
from test_sm_slixmpp import bodies, sm_login, until

COMPONENTS = "disco ping version time roster presence messaging offline carbons push"
USERS = ("alice@localhost", "bob@localhost", "push@localhost")
APP = "push@localhost/app"
PUSH = "{urn:xmpp:push:0}"
PUBSUB = "{http://jabber.org/protocol/pubsub}"
DATA = "{jabber:x:data}"
ENABLE = ("<enable xmlns='urn:xmpp:push:0' jid='push@localhost/app' node='alice-node'>"
          "<x xmlns='jabber:x:data' type='submit'>"
          "<field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options"
          "</value></field><field var='secret'><value>app-secret</value></field></x></enable>")


async def app_server(server) -> IMClient:
    """push@localhost/app, answering each notification with a result."""
    app = await IMClient.login(server, APP)

    def answer(iq):
        if iq["type"] == "set":
            iq.reply(clear=True).send()
    app.register_handler(Callback("push notification", MatchXPath(
        f"{CLIENT}iq/{PUBSUB}pubsub"), answer))
    return app


def notifications(app: IMClient) -> list[ET.Element]:
    return [e for e in app.inbox
            if e.tag == CLIENT + "iq" and e.get("type") == "set"
            and e.find(f"{PUBSUB}pubsub/{PUBSUB}publish/{PUBSUB}item/{PUSH}notification")
            is not None]


def important(app: IMClient) -> list[ET.Element]:
    return [p for p in notifications(app) if summary(p)["last-message-body"]]


def summary(push: ET.Element) -> dict[str, str | None]:
    form = push.find(f"{PUBSUB}pubsub/{PUBSUB}publish/{PUBSUB}item/{PUSH}notification/{DATA}x")
    assert form is not None and form.get("type") == "form"
    return {f.get("var"): f.findtext(DATA + "value") for f in form.findall(DATA + "field")}


def check(push: ET.Element) -> None:
    """A notification as mod_cloud_notify sends it, without the message."""
    assert push.get("from") == "localhost" and push.get("to") == APP
    assert push.find(f"{PUBSUB}pubsub/{PUBSUB}publish").get("node") == "alice-node"
    fields = summary(push)
    assert fields["FORM_TYPE"] == "urn:xmpp:push:summary"
    assert fields["message-count"] == "1"
    assert fields["last-message-body"] == "New Message!"
    assert fields["last-message-sender"] is None
    options = push.find(f"{PUBSUB}pubsub/{PUBSUB}publish-options/{DATA}x")
    assert options is not None and "app-secret" in ET.tostring(options, encoding="unicode")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


def test_a_hibernated_session_is_pushed_for_and_a_connected_one_is_not(make_xmppd):
    run(_test_a_hibernated_session_is_pushed_for_and_a_connected_one_is_not(make_xmppd))


async def _test_a_hibernated_session_is_pushed_for_and_a_connected_one_is_not(make_xmppd):
    server = make_xmppd(server={"components": COMPONENTS}, c2s={"resume_timeout": 30},
                        users=USERS)
    proxy = await CutProxy.start(server.host, server.port)
    app = await app_server(server)
    alice = await sm_login(server, proxy, "alice@localhost/phone")
    bob = await IMClient.login(server, "bob@localhost/pc")
    try:
        await alice.online()
        reply = await alice.iq("set", ENABLE)
        assert reply.get("type") == "result"
        bob.send_message(mto="alice@localhost", mbody="while connected", mtype="chat")
        await until(lambda: bodies(alice) == ["while connected"], what="the first message")
        await alice.settle()
        await app.settle()
        assert notifications(app) == []  # connected and active: no push

        lost = asyncio.get_running_loop().create_future()
        alice.add_event_handler("disconnected", lambda _: lost.done() or lost.set_result(True))
        proxy.cut()
        await asyncio.wait_for(lost, TIMEOUT)
        await until(lambda: "hibernating" in server.log_text(), what="the hibernation")
        bob.send_message(mto="alice@localhost", mbody="while away", mtype="chat")
        # (what the phone had not acknowledged when the link went may have
        # had a push of its own, without a body: presence, a ping's result)
        await until(lambda: important(app), what="a push for the hibernated session")
        [push] = important(app)
        check(push)
        assert "while away" not in ET.tostring(push, encoding="unicode")

        # the phone wakes up, resumes and finds the message
        resumed = asyncio.get_running_loop().create_future()
        alice.add_event_handler("session_resumed",
                                lambda _: resumed.done() or resumed.set_result(True))
        alice.connect(proxy.host, proxy.port)
        await asyncio.wait_for(resumed, TIMEOUT)
        await until(lambda: "while away" in bodies(alice), what="the message after resuming")
        await app.settle()
        pushed = len(notifications(app))
        bob.send_message(mto="alice@localhost", mbody="connected again", mtype="chat")
        await until(lambda: "connected again" in bodies(alice), what="a message after resuming")
        await app.settle()
        assert len(notifications(app)) == pushed  # resumed: no push
    finally:
        await close_all(alice, bob, app)
        await proxy.close()


def test_a_client_gone_offline_is_pushed_for_a_stored_message_also_after_a_restart(make_xmppd):
    run(_test_a_client_gone_offline_is_pushed_for_a_stored_message_also_after_a_restart(
        make_xmppd))


async def _test_a_client_gone_offline_is_pushed_for_a_stored_message_also_after_a_restart(
        make_xmppd):
    server = make_xmppd(server={"components": COMPONENTS}, users=USERS)
    alice = await IMClient.login(server, "alice@localhost/phone")
    await alice.online()
    reply = await alice.iq("set", ENABLE)
    assert reply.get("type") == "result"
    await alice.close()

    app = await app_server(server)
    bob = await IMClient.login(server, "bob@localhost/pc")
    try:
        bob.send_message(mto="alice@localhost", mbody="first", mtype="chat")
        await until(lambda: notifications(app), what="a push for the offline message")
        check(notifications(app)[0])
    finally:
        await close_all(app, bob)

    server.restart()
    app = await app_server(server)
    bob = await IMClient.login(server, "bob@localhost/pc")
    try:
        bob.send_message(mto="alice@localhost", mbody="second", mtype="chat")
        await until(lambda: notifications(app), what="a push after the restart")
        [push] = notifications(app)
        check(push)
        await bob.settle()
        assert not [e for e in bob.inbox if e.get("type") == "error"]
    finally:
        await close_all(app, bob)

    again = await IMClient.login(server, "alice@localhost/phone")
    try:
        await again.online()
        await until(lambda: len(bodies(again)) >= 2, what="the offline messages")
        assert bodies(again) == ["first", "second"]
    finally:
        await again.close()
