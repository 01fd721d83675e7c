"""xmppd federates with a real Prosody and a real ejabberd (Debian packages),
each serving its own domain on its own loopback address: xmppd finds them
through [s2s:routes], they find xmppd through their own resolvers (a stub DNS
server seen only in their private mount namespaces, tests/e2e/federation.py).

Once with SASL EXTERNAL (certificates from one test CA, dialback off
everywhere) and once with dialback (self-signed certificates,
``secure_auth`` off): slixmpp users on xmppd subscribe to users on Prosody
and on ejabberd, exchange presence and messages both ways, ping, ask
versions and fetch vCards across; a Prosody and an ejabberd user join a
room on xmppd, and an xmppd user joins one on Prosody. Every server's own
account of its links shows the mode's mechanism.
"""

from __future__ import annotations

import asyncio
import uuid
import xml.etree.ElementTree as ET

import pytest

pytest.importorskip("slixmpp")
import federation as fixtures  # noqa: E402
from federation import EJABBERD, MODES, PROSODY, XMPPD, wait_for  # noqa: E402
from slixclient import IMClient, close_all, message, presence, roster_push  # noqa: E402

EVENT = "{http://jabber.org/protocol/pubsub#event}"
PEP_PLUGINS = ("xep_0060", "xep_0115", "xep_0163", "xep_0084")

federation = fixtures.federation  # the module-scoped fixture, by its name here
pytestmark = pytest.mark.parametrize("federation", MODES, indirect=True)

COMPONENTS = "disco ping version time roster presence messaging offline vcard muc caps pep"
MUC = "http://jabber.org/protocol/muc"
MUC_USER = "http://jabber.org/protocol/muc#user"
MECHANISM = {"external": "SASL EXTERNAL", "dialback": "dialback"}
THEIR_MECHANISM = {"external": "EXTERNAL", "dialback": "dialback"}
REMOTES = (PROSODY, EJABBERD)


@pytest.fixture(scope="module")
def world(federation, make_xmppd_module):
    overrides = federation.xmppd_overrides()
    overrides["server"]["components"] = COMPONENTS
    xmppd = make_xmppd_module(overrides, users=[f"{u}@{XMPPD}" for u in ("alice", "bob")])
    return federation, xmppd


def run(world, coro):
    fed, xmppd = world
    try:
        return asyncio.run(asyncio.wait_for(coro, 90))
    except BaseException as failure:
        failure.add_note(f"--- xmppd:\n{xmppd.log_tail(40)}\n--- prosody:\n"
                         f"{fed.prosody.log_tail()}\n--- ejabberd:\n{fed.ejabberd.log_tail()}")
        raise


async def login(world, jid: str, plugins: tuple[str, ...] = ()) -> IMClient:
    fed, xmppd = world
    server = {XMPPD: xmppd, PROSODY: fed.prosody, EJABBERD: fed.ejabberd}[jid.split("@")[1]
                                                                           .split("/")[0]]
    client = await IMClient.login(server, jid, plugins=plugins)
    if "xep_0115" in plugins:
        await client.plugin["xep_0115"].update_caps(broadcast=False)
    await client.fetch_roster()
    client.send_presence()
    await client.expect(presence(client.boundjid.full))
    return client


def test_subscriptions_presence_and_messages_cross_both_ways(world):
    fed, xmppd = world

    async def main():
        alice = await login(world, f"alice@{XMPPD}/pc")
        remotes = [await login(world, f"alice@{domain}/pc") for domain in REMOTES]
        try:
            for remote in remotes:
                them = remote.boundjid.bare
                # ours asks theirs, theirs approves and asks back, ours approves
                alice.send_presence(pto=them, ptype="subscribe")
                await remote.expect(presence(f"alice@{XMPPD}", "subscribe"), timeout=20)
                remote.send_presence(pto=f"alice@{XMPPD}", ptype="subscribed")
                await alice.expect(roster_push(them, subscription="to", ask=None))
                await alice.expect(presence(remote.boundjid.full))  # its presence, probed
                remote.send_presence(pto=f"alice@{XMPPD}", ptype="subscribe")
                await alice.expect(presence(them, "subscribe"))
                alice.send_presence(pto=them, ptype="subscribed")
                await remote.expect(presence(alice.boundjid.full), timeout=20)
                for sender, receiver in ((alice, remote), (remote, alice)):
                    body = f"hello {uuid.uuid4().hex}"
                    sender.send_message(mto=receiver.boundjid.full, mbody=body, mtype="chat")
                    got = await receiver.expect(message(sender.boundjid.full), timeout=20)
                    assert got.findtext("{jabber:client}body") == body
            # going offline reaches both contacts' servers
            alice.send_presence(ptype="unavailable")
            for remote in remotes:
                await remote.expect(presence(alice.boundjid.full, "unavailable"), timeout=20)
        finally:
            await close_all(alice, *remotes)

    run(world, main())
    mechanism = MECHANISM[fed.mode]
    log = xmppd.log_text()
    for domain in REMOTES:
        assert f"{XMPPD} authenticated to {domain} ({mechanism}" in log
        assert f"{domain} authenticated to {XMPPD} ({mechanism}" in log
    for server in (fed.prosody, fed.ejabberd):
        assert wait_for(lambda: {(d, m) for d, _, r, m in server.s2s_authentications()
                                 if r == XMPPD} >= {("incoming", THEIR_MECHANISM[fed.mode]),
                                                    ("outgoing", THEIR_MECHANISM[fed.mode])}), \
            server.s2s_authentications()


def test_pings_versions_and_vcards_cross(world):
    async def main():
        bob = await login(world, f"bob@{XMPPD}/pc")
        remotes = [await login(world, f"bob@{domain}/pc") for domain in REMOTES]
        try:
            await bob.iq("set", "<vCard xmlns='vcard-temp'><FN>Bob of xmppd</FN></vCard>")
            for remote in remotes:
                domain = remote.boundjid.domain
                # our user → their server and their user
                await bob.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to=domain)
                version = await bob.iq("get", "<query xmlns='jabber:iq:version'/>", to=domain)
                assert version.findtext("{jabber:iq:version}query/{jabber:iq:version}name")
                await bob.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to=remote.boundjid.full)
                await remote.iq("set", f"<vCard xmlns='vcard-temp'><FN>Bob of {domain}</FN>"
                                       f"</vCard>")
                card = await bob.iq("get", "<vCard xmlns='vcard-temp'/>", to=f"bob@{domain}")
                assert card.findtext("{vcard-temp}vCard/{vcard-temp}FN") == f"Bob of {domain}"
                # their user → our server and our user
                await remote.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to=XMPPD)
                ours = await remote.iq("get", "<query xmlns='jabber:iq:version'/>", to=XMPPD)
                assert ours.findtext("{jabber:iq:version}query/{jabber:iq:version}name") == "xmppd"
                card = await remote.iq("get", "<vCard xmlns='vcard-temp'/>", to=f"bob@{XMPPD}")
                assert card.findtext("{vcard-temp}vCard/{vcard-temp}FN") == "Bob of xmppd"
                info = await remote.iq("get", "<query xmlns='http://jabber.org/protocol/"
                                              "disco#info'/>", to=XMPPD)
                assert info.find(".//{http://jabber.org/protocol/disco#info}identity") is not None
        finally:
            await close_all(bob, *remotes)

    run(world, main())


def _join(client: IMClient, room_jid: str) -> None:
    join = client.make_presence(pto=room_jid)
    join.xml.append(ET.Element(f"{{{MUC}}}x"))
    join.send()


def _self_presence(room_jid: str):
    def match(e: ET.Element) -> bool:
        return e.tag == "{jabber:client}presence" and e.get("from") == room_jid \
            and any(s.get("code") == "110" for s in e.iter(f"{{{MUC_USER}}}status"))
    match.__doc__ = f"the self-presence of {room_jid}"
    return match


async def _unlock(owner: IMClient, room: str) -> None:
    """Accept the default configuration: a new room is locked until then
    (XEP-0045 §10.1.2, both servers' default)."""
    await owner.iq("set", "<query xmlns='http://jabber.org/protocol/muc#owner'>"
                          "<x xmlns='jabber:x:data' type='submit'/></query>", to=room)


def test_remote_users_join_a_room_here_and_ours_joins_one_on_prosody(world):
    fed, _ = world
    room = f"lounge-{fed.mode}@conference.{XMPPD}"
    theirs = f"cafe-{fed.mode}@{fed.prosody.muc_domain}"

    async def main():
        alice = await login(world, f"alice@{XMPPD}/muc")
        remotes = [await login(world, f"alice@{domain}/muc") for domain in REMOTES]
        try:
            _join(alice, f"{room}/ours")
            await alice.expect(_self_presence(f"{room}/ours"))
            await _unlock(alice, room)
            for remote in remotes:
                nick = remote.boundjid.domain.split(".")[0]
                _join(remote, f"{room}/{nick}")
                await remote.expect(_self_presence(f"{room}/{nick}"), timeout=20)
                await alice.expect(presence(f"{room}/{nick}"))
                remote.send_message(mto=room, mbody=f"hi from {nick}", mtype="groupchat")
                got = await alice.expect(message(f"{room}/{nick}", type="groupchat"))
                assert got.findtext("{jabber:client}body") == f"hi from {nick}"
                await remote.expect(message(f"{room}/{nick}", type="groupchat"))  # its echo
            # ours joins a room on Prosody; Prosody's user is there already
            prosody_user = remotes[0]
            _join(prosody_user, f"{theirs}/host")
            await prosody_user.expect(_self_presence(f"{theirs}/host"))
            await _unlock(prosody_user, theirs)
            _join(alice, f"{theirs}/visitor")
            await alice.expect(_self_presence(f"{theirs}/visitor"), timeout=20)
            alice.send_message(mto=theirs, mbody="hello Prosody's room", mtype="groupchat")
            got = await prosody_user.expect(message(f"{theirs}/visitor", type="groupchat"),
                                            timeout=20)
            assert got.findtext("{jabber:client}body") == "hello Prosody's room"
        finally:
            await close_all(alice, *remotes)

    run(world, main())


def test_pep_events_reach_prosody_and_ejabberd_contacts(world):
    """A PEP avatar published here reaches contacts on Prosody and ejabberd
    whose caps ask for it (xmppd asks their clients across the link)."""
    async def main():
        carol = await login(world, f"bob@{XMPPD}/pep", PEP_PLUGINS)
        remotes = [await login(world, f"bob@{domain}/pep", PEP_PLUGINS) for domain in REMOTES]
        try:
            for remote in remotes:
                them = remote.boundjid.bare
                for asker, contact in ((carol, remote), (remote, carol)):
                    asker.send_presence(pto=contact.boundjid.bare, ptype="subscribe")
                    await contact.expect(presence(asker.boundjid.bare, "subscribe"), timeout=20)
                    contact.send_presence(pto=asker.boundjid.bare, ptype="subscribed")
                await carol.expect(roster_push(them, subscription="both", ask=None), timeout=20)
                await remote.expect(presence(carol.boundjid.full), timeout=20)
            await carol.plugin["xep_0084"].publish_avatar_metadata([
                {"id": "cafe01", "type": "image/png", "bytes": 10}])
            for remote in remotes:
                def avatar(e):
                    items = e.find(f"{EVENT}event/{EVENT}items")
                    return e.get("from") == f"bob@{XMPPD}" and items is not None \
                        and items.get("node") == "urn:xmpp:avatar:metadata"
                note = await remote.expect(avatar, timeout=20)
                assert note.get("to") == remote.boundjid.full
        finally:
            await close_all(carol, *remotes)

    run(world, main())
