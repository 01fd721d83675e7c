"""300 occupants in one room on conference.localhost, over real sockets: every
groupchat message reaches every occupant exactly once and in the order it
was sent (issue 13's fanout check).

One speaker (its own account) creates an instant room and sends 50
messages; 299 silent occupants listen. The silent ones are raw clients
(tests/e2e/rawxmpp.py) driven from a thread pool — 300 full client libraries
would measure the library, not the server: 30 accounts with 10 resources
each, every resource in the room under a nick of its own (XEP-0045 lets one
bare JID hold several nicks). Runs against xmppd (< 90 s) and, with
``XMPPD_MUC_AGAINST=prosody``, against Prosody's mod_muc.
"""

from __future__ import annotations

import time
import uuid
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import PASSWORD
from muc_target import make_muc_target  # noqa: F401  (the fixture)
from rawxmpp import NS_CLIENT, RawClient, dump, login, q

MUC = "http://jabber.org/protocol/muc"
MUC_USER = MUC + "#user"
MUC_OWNER = MUC + "#owner"
ACCOUNTS, RESOURCES = 30, 10
SILENT = 299  # + the speaker = 300 occupants
MESSAGES = 50
#: xmppd's default [component:muc] message_rate is 10 per second per occupant
#: (burst 20): the speaker stays just under it, as a well-behaved client would
SEND_INTERVAL = 0.105
DEADLINE = 90.0
WAIT = 30.0  # per client, for everything it should get


@pytest.fixture(scope="module")
def target(make_muc_target):
    users = [f"fan{a}@localhost" for a in range(ACCOUNTS)] + ["speaker@localhost"]
    return make_muc_target(users=users)


def join_presence(room: str, nick: str) -> str:
    """A join without history (XEP-0045 §7.2.14: maxstanzas='0')."""
    return (f"<presence to='{room}/{nick}'><x xmlns='{MUC}'>"
            f"<history maxstanzas='0'/></x></presence>")


def status_codes(stanza: ET.Element) -> set[str]:
    return {s.get("code") for s in stanza.findall(f"{q(MUC_USER, 'x')}/{q(MUC_USER, 'status')}")}


def is_self_presence(stanza: ET.Element, occupant_jid: str) -> bool:
    return (stanza.tag == q(NS_CLIENT, "presence") and stanza.get("from") == occupant_jid
            and stanza.get("type") is None and "110" in status_codes(stanza))


def join(client: RawClient, room: str, nick: str) -> ET.Element:
    """Enter the room; return the self-presence (an error presence fails the test)."""
    occupant = f"{room}/{nick}"
    client.send(join_presence(room, nick))
    client.wait_for(lambda: any(is_self_presence(s, occupant) or
                                (s.get("from") == occupant and s.get("type") == "error")
                                for s in client.stanzas), WAIT, f"self-presence in {occupant}")
    answer = next(s for s in client.stanzas if s.get("from") == occupant
                  and (s.get("type") == "error" or is_self_presence(s, occupant)))
    assert answer.get("type") is None, f"{client.jid} could not join: {dump(answer)}"
    return answer


def said(client: RawClient, speaker: str) -> list[str]:
    """The ids of the groupchat messages from ``speaker`` this client received,
    in arrival order (addressed to this very session)."""
    return [s.get("id") for s in client.stanzas
            if s.tag == q(NS_CLIENT, "message") and s.get("type") == "groupchat"
            and s.get("from") == speaker and s.get("to") == client.jid
            and s.find(q(NS_CLIENT, "body")) is not None]


def test_every_message_reaches_each_of_300_occupants_once_and_in_order(target):
    started = time.monotonic()
    room = f"fanout-{uuid.uuid4().hex[:6]}@{target.muc}"
    speaker_jid = f"{room}/speaker"
    expected = [f"m{k}" for k in range(MESSAGES)]
    listeners: list[RawClient] = []
    speaker = login(target.host, target.port, "speaker@localhost", PASSWORD, "sp", timeout=WAIT)
    try:
        created = join(speaker, room, "speaker")
        assert "201" in status_codes(created), dump(created)
        accepted = speaker.iq(f"<query xmlns='{MUC_OWNER}'>"
                              "<x xmlns='jabber:x:data' type='submit'/></query>",
                              type="set", to=room)
        assert accepted.get("type") == "result", dump(accepted)

        def enter(index: int) -> RawClient:
            account, resource = divmod(index, RESOURCES)
            client = login(target.host, target.port, f"fan{account}@localhost", PASSWORD,
                           f"r{resource}", timeout=WAIT)
            try:
                join(client, room, f"fan{index:03d}")
            except BaseException:
                client.close()
                raise
            return client

        with ThreadPoolExecutor(32) as pool:
            futures = [pool.submit(enter, i) for i in range(SILENT)]
        # every client that got in is kept (and closed at the end) before failing
        failures = [f.exception() for f in futures if f.exception() is not None]
        listeners.extend(f.result() for f in futures if f.exception() is None)
        if failures:
            raise failures[0]
        joined_at = time.monotonic()

        # the speaker saw all 299 arrive
        nicks = {f"{room}/fan{i:03d}" for i in range(SILENT)}
        speaker.wait_for(lambda: nicks <= {s.get("from") for s in speaker.stanzas
                                           if s.tag == q(NS_CLIENT, "presence")
                                           and s.get("type") is None},
                         WAIT, "presence of all 299 other occupants")
        info = speaker.iq("<query xmlns='http://jabber.org/protocol/disco#info'/>", to=room)
        occupants = info.find(".//{jabber:x:data}field[@var='muc#roominfo_occupants']/"
                              "{jabber:x:data}value")
        assert occupants is not None and occupants.text == str(SILENT + 1), dump(info)

        for k in range(MESSAGES):
            speaker.send(f"<message to='{room}' type='groupchat' id='m{k}'>"
                         f"<body>message {k}</body></message>")
            time.sleep(SEND_INTERVAL)
        sent_at = time.monotonic()

        def received(client: RawClient) -> list[str]:
            client.wait_for(lambda: len(said(client, speaker_jid)) >= MESSAGES, WAIT,
                            f"{MESSAGES} messages at {client.jid}")
            return said(client, speaker_jid)

        with ThreadPoolExecutor(32) as pool:
            list(pool.map(received, listeners + [speaker]))
        time.sleep(0.5)  # a duplicate or a straggler has arrived by now
        wrong = {}
        for client in listeners + [speaker]:
            client.poll()
            ids = said(client, speaker_jid)
            if ids != expected:
                wrong[client.jid] = ids
            errors = [dump(s) for s in client.stanzas if s.get("type") == "error"]
            assert not errors, (client.jid, errors[:3])
        assert not wrong, f"{len(wrong)} occupants got the wrong sequence, e.g. " \
                          f"{next(iter(wrong.items()))}"
        elapsed = time.monotonic() - started
        assert elapsed < DEADLINE, (
            f"took {elapsed:.1f}s (joins {joined_at - started:.1f}s, sending "
            f"{sent_at - joined_at:.1f}s, delivery {time.monotonic() - sent_at:.1f}s)")
    finally:
        speaker.close()
        for client in listeners:
            client.close()
