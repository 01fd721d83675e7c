"""Service discovery end to end with slixmpp's own plugins: the server's
disco#info (XEP-0030) with its contact addresses (XEP-0128, XEP-0157), its
entity capabilities in the stream features verified by slixmpp's XEP-0115
plugin, accounts discovered by their user and by a contact, the STUN/TURN
servers and TURN credentials of XEP-0215, and a hosted service.

slixmpp has no XEP-0157 or XEP-0215 plugin: the contact form is read through
its XEP-0128 plugin, and the external services are raw iqs whose TURN
credentials the test checks against the shared secret itself.
"""

from __future__ import annotations

import asyncio
import base64
import calendar
import hashlib
import hmac
import time
import uuid
import xml.etree.ElementTree as ET

import pytest

pytest.importorskip("slixmpp")
from slixmpp.exceptions import IqError  # noqa: E402

from slixclient import IMClient, close_all, presence  # noqa: E402

pytestmark = pytest.mark.all_transports  # tcp, websocket, bosh (conftest)
CAPS_NODE = "https://github.com/xmppd/xmppd"
EXTDISCO = "urn:xmpp:extdisco:2"
TURN_SECRET = "e2e shared secret"
TURN_TTL = 600
SERVICES = "stun:turn.localhost turn:turn.localhost?transport=udp turns:turn.localhost:5349"
CONFIG = {
    "server": {"components": "disco ping version roster presence messaging extdisco echo",
               "admins": "boss@localhost"},
    "component:disco": {"abuse_addresses": "mailto:abuse@localhost",
                        "support_addresses": "xmpp:support@localhost https://localhost/help"},
    "component:extdisco": {"services": SERVICES, "turn_secret": TURN_SECRET,
                           "turn_ttl": TURN_TTL, "turn_user": "e2e"},
    "component:echo": {"class": "tests.e2e.echo_service:EchoService", "domain": "echo.localhost"},
}
PLUGINS = ("xep_0004", "xep_0128", "xep_0115")


@pytest.fixture(scope="module")
def server(make_xmppd_module):
    return make_xmppd_module(CONFIG, users=("boss@localhost",))


def run(coro, server=None):
    try:
        return asyncio.run(asyncio.wait_for(coro, 60))
    except BaseException as failure:
        if server is not None:
            failure.add_note(f"--- xmppd log tail ---\n{server.log_tail(60)}")
        raise


def people(server, *names):
    """Fresh accounts for one test: name → bare JID."""
    tag = uuid.uuid4().hex[:6]
    jids = {name: f"{name}{tag}@localhost" for name in names}
    server.addusers(jids.values())
    return jids


def identities(info):
    return {(c, t, n) for c, t, _lang, n in info["disco_info"]["identities"]}


# -- the server ---------------------------------------------------------------------------

def test_slixmpp_verifies_the_caps_in_the_stream_features(server):
    """slixmpp's XEP-0115 plugin takes the <c/> of the stream features, asks
    disco#info of node#ver and accepts ver only if its own hash matches."""
    async def main():
        client = await IMClient.login(server, "boss@localhost/caps", plugins=PLUGINS)
        try:
            features = next(e for e in client.inbox
                            if e.tag == "{http://etherx.jabber.org/streams}features"
                            and e.find("{urn:ietf:params:xml:ns:xmpp-bind}bind") is not None)
            c = features.find("{http://jabber.org/protocol/caps}c")
            assert (c.get("hash"), c.get("node")) == ("sha-1", CAPS_NODE)
            caps = client.plugin["xep_0115"]
            for _ in range(100):  # verification runs in the background after login
                verified = await caps.get_verstring("localhost")
                if verified:
                    break
                await asyncio.sleep(0.05)
            assert verified == c.get("ver")
            info = await caps.get_caps(jid="localhost")
            assert "urn:xmpp:extdisco:2" in info["features"]
            # and the same hash over what a plain disco#info answers
            plain = await client.plugin["xep_0030"].get_info(jid="localhost")
            assert caps.generate_verstring(plain["disco_info"], "sha-1") == c.get("ver")
        finally:
            await client.close()
    run(main(), server)


def test_server_info_has_the_enabled_features_and_the_contact_form(server):
    who = people(server, "alice")

    async def main():
        alice = await IMClient.login(server, who["alice"] + "/phone", plugins=PLUGINS)
        try:
            info = await alice.plugin["xep_0030"].get_info(jid="localhost")
            assert ("server", "im", "xmppd") in identities(info)
            features = set(info["disco_info"]["features"])
            assert {"http://jabber.org/protocol/disco#info",
                    "http://jabber.org/protocol/disco#items",
                    "urn:xmpp:ping", "jabber:iq:version", EXTDISCO} <= features
            assert "urn:xmppd:test:echo" not in features  # the hosted service's, not ours
            (form,) = [f for f in info["disco_info"]["substanzas"]
                       if f.name == "x" and f.namespace == "jabber:x:data"]
            assert form["values"] == {
                "FORM_TYPE": ["http://jabber.org/network/serverinfo"],
                "abuse-addresses": ["mailto:abuse@localhost"],
                "admin-addresses": ["xmpp:boss@localhost"],  # from [server] admins
                "support-addresses": ["xmpp:support@localhost", "https://localhost/help"],
            }
        finally:
            await alice.close()
    run(main(), server)


# -- accounts -----------------------------------------------------------------------------

def test_accounts_are_discovered_by_their_user_and_contacts_only(server):
    who = people(server, "alice", "bob", "carol")

    async def main():
        alice, bob, carol = [await IMClient.login(server, who[n] + "/r", plugins=PLUGINS)
                             for n in ("alice", "bob", "carol")]
        try:
            disco = {c: c.plugin["xep_0030"] for c in (alice, bob, carol)}
            own = await disco[alice].get_info(jid=who["alice"])
            assert own["from"] == who["alice"]
            assert identities(own) == {("account", "registered", None)}
            assert "http://jabber.org/protocol/disco#info" in own["disco_info"]["features"]
            items = await disco[alice].get_items(jid=who["alice"])
            assert items["disco_items"]["items"] == set()
            # bob subscribes to alice's presence, alice approves: bob may discover her.
            for client in (alice, bob):
                await client.fetch_roster()  # §3.1.6: approvals go to interested resources
                await client.online()
            bob.send_presence(pto=who["alice"], ptype="subscribe")
            await alice.expect(presence(who["bob"], "subscribe"))
            alice.send_presence(pto=who["bob"], ptype="subscribed")
            await bob.expect(presence(who["alice"], "subscribed"))
            theirs = await disco[bob].get_info(jid=who["alice"])
            assert identities(theirs) == {("account", "registered", None)}
            # alice may not discover bob (she has no subscription to him), nor carol either.
            for asker, target in ((alice, who["bob"]), (carol, who["alice"]),
                                  (carol, "nobody@localhost")):
                with pytest.raises(IqError) as raised:
                    await disco[asker].get_info(jid=target)
                assert raised.value.iq["error"]["condition"] == "service-unavailable"
                assert raised.value.iq["error"]["type"] == "cancel"
        finally:
            await close_all(alice, bob, carol)
    run(main(), server)


def test_an_admin_account_is_account_admin(server):
    async def main():
        boss = await IMClient.login(server, "boss@localhost/desk", plugins=PLUGINS)
        try:
            info = await boss.plugin["xep_0030"].get_info(jid="boss@localhost")
            assert identities(info) == {("account", "admin", None)}
        finally:
            await boss.close()
    run(main(), server)


# -- XEP-0215: STUN and TURN ---------------------------------------------------------------

def turn_password(username):
    digest = hmac.new(TURN_SECRET.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def listed(reply, name):
    (answer,) = list(reply)
    assert answer.tag == f"{{{EXTDISCO}}}{name}"
    return [dict(s.attrib) for s in answer.findall(f"{{{EXTDISCO}}}service")]


def test_external_services_from_the_ini_file_with_turn_credentials(server):
    who = people(server, "alice")

    async def main():
        alice = await IMClient.login(server, who["alice"] + "/phone")
        try:
            before = int(time.time())
            services = listed(await alice.iq("get", f"<services xmlns='{EXTDISCO}'/>", "localhost"),
                              "services")
            after = int(time.time())
            assert [(s["type"], s["host"], s["port"], s["transport"]) for s in services] == [
                ("stun", "turn.localhost", "3478", "udp"),
                ("turn", "turn.localhost", "3478", "udp"),
                ("turns", "turn.localhost", "5349", "tcp")]
            assert "password" not in services[0]
            for turn in services[1:]:
                expiry, _, user = turn["username"].partition(":")
                assert user == "e2e"
                assert before + TURN_TTL <= int(expiry) <= after + TURN_TTL
                assert turn["password"] == turn_password(turn["username"])
                assert calendar.timegm(time.strptime(turn["expires"], "%Y-%m-%dT%H:%M:%SZ")) \
                    == int(expiry)
                assert turn["restricted"] == "1"
            stun = listed(await alice.iq("get", f"<services xmlns='{EXTDISCO}' type='stun'/>",
                                         "localhost"), "services")
            assert [s["type"] for s in stun] == ["stun"]
            credentials = listed(await alice.iq(
                "get", f"<credentials xmlns='{EXTDISCO}'>"
                       "<service type='turns' host='turn.localhost'/></credentials>",
                "localhost"), "credentials")
            assert [(c["type"], c["port"]) for c in credentials] == [("turns", "5349")]
            assert credentials[0]["password"] == turn_password(credentials[0]["username"])
            with pytest.raises(IqError) as raised:
                await alice.iq("get", f"<credentials xmlns='{EXTDISCO}'><service type='turn'/>"
                                      "</credentials>", "localhost")
            assert raised.value.iq["error"]["condition"] == "bad-request"
        finally:
            await alice.close()
    run(main(), server)


# -- a hosted service ----------------------------------------------------------------------

def test_hosted_service_is_listed_and_describes_its_own_domain(server):
    who = people(server, "alice")

    async def main():
        alice = await IMClient.login(server, who["alice"] + "/phone", plugins=PLUGINS)
        try:
            disco = alice.plugin["xep_0030"]
            items = await disco.get_items(jid="localhost")
            assert ("echo.localhost", None, "Echo") in items["disco_items"]["items"]
            info = await disco.get_info(jid="echo.localhost")
            assert info["from"] == "echo.localhost"
            assert identities(info) == {("component", "generic", "Echo service")}
            assert "urn:xmppd:test:echo" in info["disco_info"]["features"]
            # and it is a service, not only a description: it echoes
            alice.send_message(mto="someone@echo.localhost", mbody="hello", mtype="chat")
            echoed = await alice.expect(lambda e: e.tag == "{jabber:client}message"
                                        and e.get("from") == "someone@echo.localhost")
            assert echoed.findtext("{jabber:client}body") == "hello"
        finally:
            await alice.close()
    run(main(), server)


def test_the_turn_secret_itself_never_goes_on_the_wire(server):
    """Only credentials derived from it do."""
    who = people(server, "alice")

    async def main():
        alice = await IMClient.login(server, who["alice"] + "/phone")
        try:
            reply = await alice.iq("get", f"<services xmlns='{EXTDISCO}'/>", "localhost")
            assert TURN_SECRET not in ET.tostring(reply, encoding="unicode")
        finally:
            await alice.close()
    run(main(), server)
