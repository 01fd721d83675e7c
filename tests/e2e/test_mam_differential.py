"""Differential test: user archives against Prosody 0.12's mod_mam (on its
SQL storage with SQLite, as the benchmark runs it), query for query.

One scripted conversation — messages between three users (a forged
stanza-id among them, carbons on a second resource), then archive queries:
the whole archive, pages forwards and backwards, flip-page, the with,
start, end, before-id, after-id and ids filters, a huge and a zero max,
bad forms and unknown ids, the form, metadata, preferences and their
effect — is played with raw XML against a real ``twistd xmppd`` and a
private Prosody (:mod:`prosody`) with mod_mam and mod_carbons.

Compared per step and per client, as trees, every stanza each client
received. Normalised: archive ids (each server's ids are replaced by their
order of first appearance in the conversation, so the two must line up:
the same message has the same place in both), timestamps, ``xml:lang``,
attribute order and prefixes, the order of the children of ``<set/>`` (a
Lua table's order in Prosody) and of the preference lists. Ids that a step
needs from an earlier answer (the last id of a page, say) are taken from
each server's own answer.

Every step must match except those in :data:`ALLOWED`, each with its
reason, and each must still differ (a stale entry fails the test).
"""

from __future__ import annotations

import os
import re
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import PASSWORD
from prosody import ProsodyProcess, ProsodyUnavailable
from rawxmpp import login

USERS = ("alice", "bob", "carol")
MAM = "urn:xmpp:mam:2"
RSM = "http://jabber.org/protocol/rsm"
SID = "urn:xmpp:sid:0"
QUIET = 0.3
CLIENTS = {"alice": "alice/phone", "alice2": "alice/laptop", "bob": "bob/pc", "carol": "carol/pc"}


def chat(to: str, mid: str, body: str, extra: str = "") -> str:
    return f"<message to='{to}@localhost' id='{mid}' type='chat'><body>{body}</body>{extra}</message>"


def query(inner: str = "", qid: str = "x") -> str:
    return f"<iq type='set' id='q'><query xmlns='{MAM}' queryid='{qid}'>{inner}</query></iq>"


def form(*fields: tuple[str, str | list[str]], form_type: str = MAM) -> str:
    body = "".join(
        f"<field var='{var}'>"
        + "".join(f"<value>{v}</value>" for v in (value if isinstance(value, list) else [value]))
        + "</field>" for var, value in fields)
    return (f"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
            f"<value>{form_type}</value></field>{body}</x>")


def rsm(max_: str | None = None, before: str | None = None, after: str | None = None) -> str:
    parts = "" if max_ is None else f"<max>{max_}</max>"
    if after is not None:
        parts += f"<after>{after}</after>"
    if before is not None:
        parts += "<before/>" if before == "" else f"<before>{before}</before>"
    return f"<set xmlns='{RSM}'>{parts}</set>"


def prefs(default: str, always=(), never=()) -> str:
    lists = "".join(f"<{n}>{''.join(f'<jid>{j}</jid>' for j in js)}</{n}>"
                    for n, js in (("always", always), ("never", never)))
    return f"<iq type='set' id='q'><prefs xmlns='{MAM}' default='{default}'>{lists}</prefs></iq>"


#: (step, client, stanza, what ends the step: ("iq",) or ("message", client, id))
SCRIPT = [
    ("chat 1", "alice", chat("bob", "m1", "one"), ("message", "bob", "m1")),
    ("chat 2", "alice", chat("bob", "m2", "two"), ("message", "bob", "m2")),
    ("chat 3 from carol", "carol", chat("bob", "m3", "three"), ("message", "bob", "m3")),
    ("reply", "bob", chat("alice", "m4", "four"), ("message", "alice", "m4")),
    ("origin-id", "alice", chat("bob", "m5", "five", f"<origin-id xmlns='{SID}' id='o5'/>"),
     ("message", "bob", "m5")),
    ("chat state only", "alice",
     "<message to='bob@localhost' id='m6' type='chat'>"
     "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
     ("message", "bob", "m6")),
    ("headline", "alice",
     "<message to='bob@localhost' id='m7' type='headline'><body>news</body></message>",
     ("message", "bob", "m7")),
    ("receipt", "carol", "<message to='bob@localhost' id='m8' type='chat'>"
     "<received xmlns='urn:xmpp:receipts' id='m3'/></message>", ("message", "bob", "m8")),
    ("no-store hint", "alice", chat("bob", "m9", "nine", "<no-store xmlns='urn:xmpp:hints'/>"),
     ("message", "bob", "m9")),
    ("enable carbons", "alice2",
     "<iq type='set' id='q'><enable xmlns='urn:xmpp:carbons:2'/></iq>", ("iq",)),
    ("chat with carbons", "alice", chat("bob", "m10", "ten"), ("message", "bob", "m10")),
    ("received with carbons", "carol", chat("alice", "m11", "eleven"),
     ("message", "alice", "m11")),
    ("the form", "bob", f"<iq type='get' id='q'><query xmlns='{MAM}'/></iq>", ("iq",)),
    ("whole archive", "bob", query(), ("iq",)),
    ("sender's archive", "alice", query(), ("iq",)),
    ("first page", "bob", query(rsm("2")), ("iq",)),
    ("next page", "bob", query(rsm("2", after="{first page.last}")), ("iq",)),
    ("last page", "bob", query(rsm("2", before="")), ("iq",)),
    ("page before", "bob", query(rsm("2", before="{last page.first}")), ("iq",)),
    ("flipped last page", "bob", query(rsm("3", before="") + f"<flip-page xmlns='{MAM}'/>"),
     ("iq",)),
    ("flipped first page", "bob", query(rsm("3") + f"<flip-page xmlns='{MAM}'/>"), ("iq",)),
    ("with carol", "bob", query(form(("with", "carol@localhost"))), ("iq",)),
    ("with a full JID", "bob", query(form(("with", "alice@localhost/phone"))), ("iq",)),
    ("time range", "bob",
     query(form(("start", "2000-01-01T00:00:00Z"), ("end", "2100-01-01T00:00:00Z"))), ("iq",)),
    ("future", "bob", query(form(("start", "2100-01-01T00:00:00Z"))), ("iq",)),
    ("reversed range", "bob",
     query(form(("start", "2100-01-01T00:00:00Z"), ("end", "2000-01-01T00:00:00Z"))), ("iq",)),
    ("after-id", "bob", query(form(("after-id", "{first page.last}"))), ("iq",)),
    ("before-id", "bob", query(form(("before-id", "{last page.first}"))), ("iq",)),
    ("between ids", "bob", query(form(("after-id", "{first page.first}"),
                                      ("before-id", "{last page.last}"))), ("iq",)),
    ("an RSM before wins over before-id", "bob",
     query(form(("before-id", "{first page.last}")) + rsm("1", before="")), ("iq",)),
    ("ids", "bob", query(form(("ids", ["{last page.last}", "{first page.first}"]))), ("iq",)),
    ("unknown ids", "bob", query(form(("ids", ["{first page.first}", "123456789"]))), ("iq",)),
    ("unknown after", "bob", query(rsm("5", after="123456789")), ("iq",)),
    ("unknown before", "bob", query(rsm("5", before="123456789")), ("iq",)),
    ("unknown after-id", "bob", query(form(("after-id", "123456789"))), ("iq",)),
    ("another user's id", "bob", query(rsm("5", after="{sender's archive.first}")), ("iq",)),
    ("zero max", "bob", query(rsm("0")), ("iq",)),
    ("huge max", "bob", query(rsm("1000000")), ("iq",)),
    ("max not a number", "bob", query(rsm("many")), ("iq",)),
    ("bad timestamp", "bob", query(form(("start", "yesterday"))), ("iq",)),
    ("bad with", "bob", query(form(("with", "a@@b"))), ("iq",)),
    ("another FORM_TYPE", "bob", query(form(("with", "carol@localhost"), form_type="urn:x")),
     ("iq",)),
    ("unknown field", "bob", query(form(("{urn:example}fulltext", "x"))), ("iq",)),
    ("metadata", "bob", f"<iq type='get' id='q'><metadata xmlns='{MAM}'/></iq>", ("iq",)),
    ("empty metadata", "carol", f"<iq type='get' id='q'><metadata xmlns='{MAM}'/></iq>",
     ("iq",)),
    ("another user's archive", "carol",
     f"<iq type='set' id='q' to='bob@localhost'><query xmlns='{MAM}'/></iq>", ("iq",)),
    ("default prefs", "bob", f"<iq type='get' id='q'><prefs xmlns='{MAM}'/></iq>", ("iq",)),
    ("set prefs", "bob", prefs("always", never=["carol@localhost"],
                               always=["alice@localhost"]), ("iq",)),
    ("prefs back", "bob", f"<iq type='get' id='q'><prefs xmlns='{MAM}'/></iq>", ("iq",)),
    ("never archived", "carol", chat("bob", "m12", "twelve"), ("message", "bob", "m12")),
    ("still archived", "alice", chat("bob", "m13", "thirteen"), ("message", "bob", "m13")),
    ("forged stanza-id", "alice",
     chat("bob", "m16", "sixteen", f"<stanza-id xmlns='{SID}' by='bob@localhost' id='forged'/>"
          f"<stanza-id xmlns='{SID}' by='alice@localhost' id='self-made'/>"),
     ("message", "bob", "m16")),
    ("archive after a forged id", "bob", query(rsm("1", before="")), ("iq",)),
    ("the forged message by its id", "bob",
     query(form(("ids", "{archive after a forged id.first}"))), ("iq",)),
    ("roster default", "bob", prefs("roster"), ("iq",)),
    ("not on the roster", "alice", chat("bob", "m14", "fourteen"), ("message", "bob", "m14")),
    ("prefs with a full JID", "bob", prefs("always", always=["alice@localhost/phone"]), ("iq",)),
    ("prefs with a bad default", "bob", prefs("sometimes"), ("iq",)),
    ("nothing archived since", "bob",
     query(form(("after-id", "{archive after a forged id.first}"))), ("iq",)),
    ("archived between", "bob",
     query(form(("after-id", "{whole archive.last}"),
                ("before-id", "{archive after a forged id.first}"))), ("iq",)),
    ("to oneself", "alice", chat("alice", "m15", "note"), ("message", "alice2", "m15")),
    ("own archive after a note to self", "alice", query(rsm("3", before="")), ("iq",)),
]

#: Steps where xmppd and Prosody differ on purpose: step → why.
ALLOWED = {
    "unknown ids": "XEP-0313 §4.1.4: an id that is not in the archive is item-not-found; "
    "Prosody returns the ids it found",
    "max not a number": "XEP-0059 §2.1's max is a non-negative integer: bad-request; Prosody "
    "reads it as absent (a page of 20)",
    "unknown field": "XEP-0313 §4.1.5: an unknown field is feature-not-implemented; Prosody "
    "ignores it",
    "prefs with a full JID": "xmppd keeps a rule as its bare JID (rules match bare JIDs, as "
    "Prosody's lookup does); Prosody echoes the full JID, a rule that can never match",
    "prefs with a bad default": "a default that is not always, never or roster is bad-request "
    "and changes nothing; Prosody stores the rule without a default (archiving nothing) and "
    "answers <prefs/> without one",
    "forged stanza-id": "XEP-0359 §5: a stanza-id claiming to be by the archive (bob) is "
    "removed; Prosody 0.12 removes it from event.stanza but then stamps and delivers a clone of "
    "the message it had before, forged id included (mod_mam's message_handler)",
    "archive after a forged id": "as 'forged stanza-id': Prosody archived the forged id too",
    "the forged message by its id": "as 'archive after a forged id'",
    "unknown after": "RFC 6120 §8.3.3.7 (item-not-found SHOULD be cancel) and XEP-0313's "
    "example; Prosody answers type modify",
    "unknown before": "as 'unknown after'",
    "unknown after-id": "as 'unknown after'",
    "another user's id": "as 'unknown after' (an id of alice's archive is not in bob's)",
    "to oneself": "xmppd archives a message to oneself once (XEP-0313 §7: one copy per "
    "archive) and stamps the copies with that id; Prosody archives it as sent and again as "
    "received, stamping the delivered copy with the second",
    "own archive after a note to self": "the note to self is one item in xmppd, two in Prosody",
}

#: Steps whose answers must carry stanza-ids (a check that normalising did not
#: compare two empty things).
STAMPED = ("chat 1", "origin-id", "receipt", "chat with carbons")


class MAMProsody(ProsodyProcess):
    """The private Prosody with mod_mam and mod_carbons, its archive in SQLite
    (mod_storage_sql), everything else in its internal files."""

    def _prepare(self) -> None:
        super()._prepare()
        config = self.dir / "prosody.cfg.lua"
        text = config.read_text()
        text = text.replace('storage = "internal"',
                            'default_storage = "internal"\nstorage = { archive = "sql" }\n'
                            f'sql = {{ driver = "SQLite3", database = "{self.dir}/archive.sqlite" }}')
        config.write_text(text)


def _sqlite_driver_present() -> bool:
    return any(os.path.exists(f"/usr/lib/x86_64-linux-gnu/lua/{v}/dbi/sqlite3.so")
               or os.path.exists(f"/usr/lib/x86_64-linux-gnu/lua/{v}/dbdsqlite3.so")
               for v in ("5.1", "5.2", "5.3", "5.4")) or os.path.exists(
        "/usr/share/doc/lua-dbi-sqlite3")


@pytest.fixture(scope="module")
def prosody_mam():
    if not _sqlite_driver_present():
        pytest.skip("Prosody's SQL storage needs Debian's lua-dbi-sqlite3 "
                    "(apt-get install -y lua-dbi-sqlite3)")
    modules = ("roster", "saslauth", "tls", "disco", "ping", "mam", "carbons")
    server = MAMProsody([f"{u}@localhost" for u in USERS], PASSWORD, modules)
    try:
        server.start()
    except ProsodyUnavailable as e:
        pytest.skip(f"Debian's prosody cannot be installed here: {e}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def xmppd_mam(make_xmppd_module):
    return make_xmppd_module(
        {"server": {"components": "disco ping roster presence messaging offline carbons mam"}},
        users=[f"{u}@localhost" for u in USERS])


class Ids:
    """Archive ids seen so far, as their order of first appearance."""

    def __init__(self) -> None:
        self.order: dict[str, str] = {}

    def __call__(self, value: str) -> str:
        return self.order.setdefault(value, f"#{len(self.order) + 1}")


_ID_ATTRS = {(f"{{{SID}}}stanza-id", "id"), (f"{{{MAM}}}result", "id"),
             (f"{{{MAM}}}start", "id"), (f"{{{MAM}}}end", "id")}


def canonical(element: ET.Element, ids: Ids) -> str:
    def walk(e: ET.Element) -> str:
        attrs = dict(e.attrib)
        attrs.pop("{http://www.w3.org/XML/1998/namespace}lang", None)
        for key in list(attrs):
            if (e.tag, key) in _ID_ATTRS and attrs[key] not in ("forged", "self-made"):
                attrs[key] = ids(attrs[key])
            if key in ("stamp", "timestamp"):
                attrs[key] = "*"
        text = (e.text or "").strip()
        if e.tag in (f"{{{RSM}}}first", f"{{{RSM}}}last"):
            text = ids(text)
        inner = [walk(c) for c in e]
        if e.tag in (f"{{{RSM}}}set", f"{{{MAM}}}always", f"{{{MAM}}}never"):
            inner.sort()
        attributes = " ".join(f"{k}={v!r}" for k, v in sorted(attrs.items()))
        return f"<{e.tag} {attributes}>{text}{''.join(inner)}</>"
    return walk(element)


def _captured(stanzas: list[ET.Element]) -> dict[str, str]:
    """What later steps may refer to: a page's first and last id."""
    got = {}
    for s in stanzas:
        first = s.find(f"{{{MAM}}}fin/{{{RSM}}}set/{{{RSM}}}first")
        last = s.find(f"{{{MAM}}}fin/{{{RSM}}}set/{{{RSM}}}last")
        if first is not None:
            got["first"], got["last"] = first.text, last.text
    return got


def play(host: str, port: int) -> dict[str, dict[str, list[str]]]:
    with ThreadPoolExecutor(len(CLIENTS)) as pool:
        clients = dict(zip(CLIENTS, pool.map(
            lambda c: login(host, port, CLIENTS[c].split("/")[0] + "@localhost", PASSWORD,
                            CLIENTS[c].split("/")[1]), CLIENTS)))
    ids = Ids()
    refs: dict[str, str] = {}
    seen: dict[str, dict[str, list[str]]] = {}
    try:
        for client in clients.values():
            client.send("<presence/>")
        time.sleep(QUIET)
        for client in clients.values():
            client.poll()
            client.stanzas.clear()
        for name, who, xml, until in SCRIPT:
            xml = re.sub(r"\{([^{}]+\.(?:first|last))\}", lambda m: refs[m.group(1)], xml)
            clients[who].send(xml)
            if until[0] == "iq":
                waiter = clients[who]
                waiter.wait_for(lambda: any(s.tag == "{jabber:client}iq" and s.get("id") == "q"
                                            for s in waiter.stanzas), what=f"the answer to {name!r}")
            else:
                waiter = clients[until[1]]
                waiter.wait_for(lambda: any(s.get("id") == until[2] for s in waiter.stanzas),
                                what=f"message {until[2]}")
            time.sleep(QUIET)
            seen[name] = {}
            for other, client in clients.items():
                client.poll()
                if other == who:
                    refs.update({f"{name}.{k}": v for k, v in _captured(client.stanzas).items()})
                seen[name][other] = [canonical(s, ids) for s in client.stanzas
                                     if s.tag != "{jabber:client}presence"]
                client.stanzas.clear()
    finally:
        for client in clients.values():
            client.close()
    return seen


def test_the_archive_conversation_matches_prosody(xmppd_mam, prosody_mam):
    with ThreadPoolExecutor(2) as pool:
        ours = pool.submit(play, xmppd_mam.host, xmppd_mam.port)
        theirs = pool.submit(play, prosody_mam.host, prosody_mam.port)
        ours, theirs = ours.result(), theirs.result()
    report, stale = [], []
    for name, _, _, _ in SCRIPT:
        differ = ours[name] != theirs[name]
        if name in ALLOWED:
            if not differ:
                stale.append(name)
            continue
        if differ:
            report.append(f"step {name!r}:\n" + "".join(
                f"  {who}:\n    xmppd:   {ours[name][who]}\n    prosody: {theirs[name][who]}\n"
                for who in CLIENTS if ours[name][who] != theirs[name][who]))
    assert not report, "xmppd and Prosody differ:\n" + "\n".join(report)
    assert not stale, f"allowed differences that no longer occur: {stale}"
    for name in STAMPED:
        assert any(f"{SID}}}stanza-id" in s for who in CLIENTS for s in ours[name][who]), name
    # m1-m5, the receipt, m10: not the chat state, the headline, the no-store message
    assert sum(f"{MAM}}}result" in s for s in ours["whole archive"]["bob"]) == 7
