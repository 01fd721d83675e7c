"""Differential test: room archives (XEP-0313 to the room JID) against
Prosody 0.12's mod_muc with mod_muc_mam, stanza for stanza.

The same script is played with raw XML against a real ``twistd xmppd`` (its
``muc`` service, archive on by default) and a private Prosody with
``Component "conference.localhost" "muc"`` and ``modules_enabled =
{ "muc_mam" }`` (:mod:`prosody`): groupchat messages with the room's
stanza-id, the query form, a query of everything, RSM pages forwards and
backwards, flip-page, a count-only page, the ``ids``, ``after-id`` and
``before-id`` fields, a time range, a huge ``max``, bad input (unknown ids,
a wrong FORM_TYPE, a bad timestamp, a bad JID), the room's disco#info and
configuration form, archiving turned off and on (171, 170; a message not
stamped), a non-occupant reading an open room, a members-only room refusing
a non-member. A step that names an archive id takes it from that server's
own answer to "query everything".

Normalised before comparing: archive ids (each server's own: Prosody's are
UUIDs, xmppd's numbers) become labels in the order they first appear;
ids the servers make up at the top level, XEP-0203 stamps, occupant-id
values (labels), ``xml:lang``, attribute order, the order of a stanza's
payloads, of a muc#user ``<x/>``'s children and of an RSM ``<set/>``'s
(Prosody builds it from a Lua table: no order), of the fields of a result
form (room info), a missing ``to``. The
moderation features (xmppd has XEP-0425 on; Prosody's community module is
not in Debian's package) and the disco#info/#items features xmppd lists for
every entity are left out of room info; ``muc#roomconfig_maxusers`` (only
xmppd has it) out of the form. Every other step must match except those in
:data:`ALLOWED`, each with its reason (and each must still differ).
"""

from __future__ import annotations

import difflib
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import pytest

from conftest import PASSWORD
from prosody import ProsodyProcess, ProsodyUnavailable
from rawxmpp import login, settle

MUC = "conference.localhost"
ROOM = f"arch@{MUC}"
USERS = ("alice", "bob", "carol")
NS_MUC = "http://jabber.org/protocol/muc"
MUC_USER = NS_MUC + "#user"
MUC_OWNER = NS_MUC + "#owner"
ROOMCONFIG = NS_MUC + "#roomconfig"
MAM = "urn:xmpp:mam:2"
RSM = "http://jabber.org/protocol/rsm"
SID = "urn:xmpp:sid:0"
DELAY = "urn:xmpp:delay"
XDATA = "jabber:x:data"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
OCCUPANT_ID = "urn:xmpp:occupant-id:0"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

#: disco#info features only xmppd's rooms list: feature → why
INFO_EXTRAS = {
    "http://jabber.org/protocol/disco#info": "XEP-0030 §3.1: every entity answering "
    "disco#info lists it (as in test_muc_differential.py)",
    "http://jabber.org/protocol/disco#items": "as disco#info",
    "urn:xmpp:message-moderate:0": "xmppd has XEP-0425 moderation (Prosody's "
    "mod_muc_moderation is a community module, not in Debian's prosody package)",
    "urn:xmpp:message-moderate:1": "as message-moderate:0",
}
#: configuration form fields only xmppd offers: field → why
FORM_EXTRAS = {
    "muc#roomconfig_maxusers": "xmppd's occupant limit (see test_muc_differential.py)",
}


def join(nick: str, inner: str = "") -> str:
    return f"<presence to='{ROOM}/{nick}'><x xmlns='{NS_MUC}'>{inner}</x></presence>"


def say(body: str, sid: str) -> str:
    return f"<message type='groupchat' id='{sid}' to='{ROOM}'><body>{body}</body></message>"


def owner(type_: str, body: str = "", iq_id: str = "o") -> str:
    return (f"<iq type='{type_}' id='{iq_id}' to='{ROOM}'>"
            f"<query xmlns='{MUC_OWNER}'>{body}</query></iq>")


def config(**fields: str) -> str:
    body = "".join(f"<field var='muc#roomconfig_{k}'><value>{v}</value></field>"
                   for k, v in fields.items())
    return (f"<x xmlns='{XDATA}' type='submit'><field var='FORM_TYPE'><value>{ROOMCONFIG}"
            f"</value></field>{body}</x>")


def query(qid: str, form: str = "", rsm: str = "", extra: str = "", iq_id: str = "q") -> str:
    return (f"<iq type='set' id='{iq_id}' to='{ROOM}'><query xmlns='{MAM}' queryid='{qid}'>"
            f"{form}{rsm}{extra}</query></iq>")


def mam_form(*fields: tuple[str, list[str]], form_type: str = MAM) -> str:
    body = "".join(f"<field var='{var}'>" + "".join(f"<value>{v}</value>" for v in values)
                   + "</field>" for var, values in fields)
    return (f"<x xmlns='{XDATA}' type='submit'><field var='FORM_TYPE' type='hidden'>"
            f"<value>{form_type}</value></field>{body}</x>")


def rsm(max_: int | None = None, before: str | bool | None = None,
        after: str | None = None) -> str:
    parts = "" if max_ is None else f"<max>{max_}</max>"
    if before is True:
        parts += "<before/>"
    elif before is not None:
        parts += f"<before>{before}</before>"
    if after is not None:
        parts += f"<after>{after}</after>"
    return f"<set xmlns='{RSM}'>{parts}</set>"


@dataclass
class Step:
    """``actor`` sends ``xml`` (text, or made from the play's archive ids);
    the step waits for ``wait`` (default: the actor) to receive something,
    then for quiet."""

    name: str
    actor: str
    xml: str | Callable[[list[str]], str]
    wait: str | None = None


SCRIPT = [
    Step("alice creates the room", "alice", join("Alice")),
    Step("alice names the room", "alice", owner("set", config(roomname="Archive"))),
    *[Step(f"alice says m{i}", "alice", say(f"m{i}", f"a{i}")) for i in range(1, 6)],
    Step("bob joins (history with stanza-ids)", "bob", join("Bob")),
    Step("bob says b1", "bob", say("b1", "b1")),
    Step("bob says b2", "bob", say("b2", "b2")),
    Step("a forged stanza-id is dropped", "bob",
         f"<message type='groupchat' id='f1' to='{ROOM}'><body>forged</body>"
         f"<stanza-id xmlns='{SID}' by='{ROOM}' id='forged-id'/></message>"),
    Step("the query form", "bob",
         f"<iq type='get' id='f' to='{ROOM}'><query xmlns='{MAM}'/></iq>"),
    Step("query everything", "bob", query("all")),
    Step("a first page of three", "bob", query("p1", rsm=rsm(3))),
    Step("the page after the third", "bob", lambda ids: query("p2", rsm=rsm(3, after=ids[2]))),
    Step("the last page of two", "bob", query("l1", rsm=rsm(2, before=True))),
    Step("the page before the sixth", "bob", lambda ids: query("l2", rsm=rsm(2, before=ids[5]))),
    Step("the last page, flipped", "bob",
         query("fl", rsm=rsm(2, before=True), extra="<flip-page/>")),
    Step("a first page, flipped", "bob", query("ff", rsm=rsm(3), extra="<flip-page/>")),
    Step("a count-only page", "bob", query("c0", rsm=rsm(0))),
    Step("the ids field", "bob", lambda ids: query("ids", mam_form(("ids", [ids[4], ids[1]])))),
    Step("after-id and before-id", "bob",
         lambda ids: query("ab", mam_form(("after-id", [ids[0]]), ("before-id", [ids[3]])))),
    Step("with the occupant's JID", "bob", query("w", mam_form(("with", [f"{ROOM}/Bob"])))),
    Step("a time range", "bob", query("t", mam_form(("start", ["2000-01-01T00:00:00Z"]),
                                                     ("end", ["2100-01-01T00:00:00Z"])))),
    Step("a reversed time range", "bob", query("tr", mam_form(
        ("start", ["2100-01-01T00:00:00Z"]), ("end", ["2000-01-01T00:00:00Z"])))),
    Step("a huge max", "bob", query("h", rsm=rsm(100000))),
    Step("bad input: an unknown after id", "bob", query("u1", rsm=rsm(2, after="unknown-id"))),
    Step("bad input: an unknown before id, backwards", "bob",
         query("u2", rsm=rsm(2, before="unknown-id"))),
    Step("bad input: a wrong FORM_TYPE", "bob", query("bf", mam_form(form_type="urn:other"))),
    Step("bad input: a form without FORM_TYPE", "bob",
         query("nf", f"<x xmlns='{XDATA}' type='submit'/>")),
    Step("bad input: an invalid start", "bob", query("bs", mam_form(("start", ["soon"])))),
    Step("room info", "bob",
         f"<iq type='get' id='d' to='{ROOM}'><query xmlns='{DISCO_INFO}'/></iq>"),
    Step("the configuration form", "alice", owner("get")),
    Step("carol, never in the room, reads the last page", "carol",
         query("c", rsm=rsm(2, before=True))),
    Step("archiving off", "alice", owner("set", config(enablearchiving="0"))),
    Step("a message while archiving is off", "alice", say("unkept", "a9")),
    Step("the archive did not grow", "bob", query("n", rsm=rsm(0))),
    Step("room info without archiving", "bob",
         f"<iq type='get' id='d2' to='{ROOM}'><query xmlns='{DISCO_INFO}'/></iq>"),
    Step("archiving on again", "alice", owner("set", config(enablearchiving="1"))),
    Step("a configuration change without the field", "alice",
         owner("set", config(roomname="Archives"))),
    Step("bob leaves", "bob", f"<presence type='unavailable' to='{ROOM}/Bob'/>"),
    Step("members-only: the room becomes members-only", "alice",
         owner("set", config(membersonly="1"))),
    Step("members-only: a non-member may not read", "carol", query("mo")),
]

#: Steps where xmppd and Prosody differ on purpose: step → why.
ALLOWED: dict[str, str] = {
    "with the occupant's JID": "Prosody's mod_muc_mam ignores 'with' (its archive uses the "
    "field for the stanza type) and returns every message; XEP-0313 §5.1.2 filters a MUC "
    "archive by the occupant JID, which xmppd does",
    "a time range": "xmppd's archive counts only without a time range (RSM <count/> is "
    "optional, XEP-0059 §2.6; counting a range means reading it); Prosody counts it",
    "a reversed time range": "as 'a time range': Prosody answers <count>0</count>, xmppd "
    "no count",
}


def _known_ids() -> set[str]:
    ids = set()
    for step in SCRIPT:
        if isinstance(step.xml, str):
            for part in step.xml.split("id='")[1:]:
                ids.add(part.split("'", 1)[0])
    return ids | {"p2", "l2", "ids", "ab", "q"}


KNOWN_IDS = _known_ids()


class Labels:
    """Server-made values (archive ids, occupant-ids) → labels in order of first sight."""

    def __init__(self) -> None:
        self.archive: dict[str, str] = {}
        self.occupant: dict[str, str] = {}

    def archive_id(self, value: str) -> str:
        return self.archive.setdefault(value, f"archive-{len(self.archive) + 1}")


def canonical(element: ET.Element, receiver: str, labels: Labels) -> str:
    def walk(e: ET.Element, top: bool) -> str:
        attrs = dict(e.attrib)
        attrs.pop(XML_LANG, None)
        if top:
            if attrs.get("id") not in KNOWN_IDS:
                attrs.pop("id", None)
            attrs.setdefault("to", receiver)
        if e.tag == f"{{{DELAY}}}delay" and "stamp" in attrs:
            attrs["stamp"] = "*"
        if e.tag in (f"{{{SID}}}stanza-id", f"{{{MAM}}}result") and "id" in attrs:
            attrs["id"] = labels.archive_id(attrs["id"])
        if e.tag == f"{{{OCCUPANT_ID}}}occupant-id" and "id" in attrs:
            attrs["id"] = labels.occupant.setdefault(attrs["id"],
                                                     f"occupant-{len(labels.occupant) + 1}")
        text = (e.text or "").strip()
        if e.tag in (f"{{{RSM}}}first", f"{{{RSM}}}last") and text:
            text = labels.archive_id(text)
        children = [c for c in e
                    if not (c.tag == f"{{{DISCO_INFO}}}feature" and c.get("var") in INFO_EXTRAS)
                    and not (c.tag == f"{{{XDATA}}}field" and c.get("var") in FORM_EXTRAS)]
        inner = [walk(c, False) for c in children]
        if top or e.tag in (f"{{{MUC_USER}}}x", f"{{{RSM}}}set", f"{{{DISCO_INFO}}}query") \
                or e.tag == f"{{{XDATA}}}field" \
                or (e.tag == f"{{{XDATA}}}x" and e.get("type") == "result"):
            inner.sort()
        attributes = " ".join(f"{k}={v!r}" for k, v in sorted(attrs.items()))
        return f"<{e.tag} {attributes}>{text}{''.join(inner)}</>"
    return walk(element, True)


@dataclass
class Play:
    server: str
    seen: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    raw: dict[str, dict[str, str]] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)


def play(server: str, host: str, port: int) -> Play:
    with ThreadPoolExecutor(len(USERS)) as pool:
        clients = dict(zip(USERS, pool.map(
            lambda u: login(host, port, f"{u}@localhost", PASSWORD, "r"), USERS)))
    result = Play(server)
    labels = Labels()
    try:
        for client in clients.values():
            client.send("<presence/>")
        settle(clients, None, "initial presence")
        for client in clients.values():
            client.stanzas.clear()
        for step in SCRIPT:
            xml = step.xml(result.ids) if callable(step.xml) else step.xml
            marks = {name: len(c.received) for name, c in clients.items()}
            clients[step.actor].send(xml)
            waiting = clients[step.wait or step.actor]
            settle(clients, waiting, f"an answer to {step.name!r}")
            result.seen[step.name], result.raw[step.name] = {}, {}
            for name, client in clients.items():
                if step.name == "query everything" and name == step.actor:
                    result.ids = [r.get("id") for s in client.stanzas
                                  for r in s.findall(f"{{{MAM}}}result")]
                if client.stanzas:
                    result.seen[step.name][name] = [
                        canonical(s, f"{name}@localhost/r", labels) for s in client.stanzas]
                raw = client.received[marks[name]:]
                if raw:
                    result.raw[step.name][name] = raw.decode("utf-8", "replace")
                client.stanzas.clear()
    finally:
        for client in clients.values():
            client.close()
    return result


@pytest.fixture(scope="module")
def plays(make_xmppd_module) -> dict[str, Play]:
    prosody = ProsodyProcess([f"{u}@localhost" for u in USERS], PASSWORD,
                             components={MUC: "muc"},
                             component_options={MUC: 'modules_enabled = { "muc_mam" }'})
    try:
        prosody.start()
    except ProsodyUnavailable as e:
        pytest.skip(f"Debian's prosody cannot be installed here: {e}")
    try:
        xmppd = make_xmppd_module(
            {"server": {"components": "disco ping presence messaging roster muc"},
             "component:muc": {"domain": MUC}},
            users=[f"{u}@localhost" for u in USERS])
        with ThreadPoolExecutor(2) as pool:
            theirs = pool.submit(play, "prosody", prosody.host, prosody.port)
            ours = pool.submit(play, "xmppd", xmppd.host, xmppd.port)
            return {"prosody": theirs.result(), "xmppd": ours.result()}
    finally:
        prosody.stop()


def _any(stanzas: list[str] | None, *needles: str) -> bool:
    return any(all(n in s for n in needles) for s in stanzas or [])


def test_the_archive_script_runs_against_prosody(plays):
    """The script does what its step names say (on Prosody's side), so the
    comparison compares the protocol."""
    p = plays["prosody"]
    seen = p.seen
    assert len(p.ids) == 8, p.raw["query everything"]
    assert _any(seen["alice says m1"]["alice"], f"{{{SID}}}stanza-id")
    assert _any(seen["bob joins (history with stanza-ids)"]["bob"], "m5", f"{{{SID}}}stanza-id")
    assert not _any(seen["a forged stanza-id is dropped"]["alice"], "forged-id")
    assert sum(1 for s in seen["query everything"]["bob"] if "}result" in s) == 8
    assert _any(seen["query everything"]["bob"], "complete='true'")
    assert not _any(seen["a first page of three"]["bob"], "complete=")
    assert _any(seen["bad input: an unknown after id"]["bob"], "item-not-found")
    assert _any(seen["bad input: a wrong FORM_TYPE"]["bob"], "bad-request")
    assert _any(seen["room info"]["bob"], "urn:xmpp:mam:2")
    assert _any(seen["the configuration form"]["alice"], "muc#roomconfig_enablearchiving")
    assert _any(seen["archiving off"]["bob"], "code='171'")
    assert not _any(seen["a message while archiving is off"]["bob"], f"{{{SID}}}stanza-id")
    assert _any(seen["archiving on again"]["bob"], "code='170'")
    assert _any(seen["members-only: a non-member may not read"]["carol"], "forbidden")


def _explain(ours: list[str] | None, theirs: list[str] | None) -> str:
    def lines(stanzas: list[str] | None) -> list[str]:
        if stanzas is None:
            return ["(nothing)"]
        out = []
        for number, stanza in enumerate(stanzas, 1):
            out.append(f"--- stanza {number}")
            out.extend(stanza.replace("><", ">\n<").splitlines())
        return out
    diff = difflib.unified_diff(lines(theirs), lines(ours), "prosody", "xmppd", lineterm="", n=2)
    return "\n".join("      " + line for line in diff)


def test_the_room_archive_matches_prosody(plays):
    ours, theirs = plays["xmppd"], plays["prosody"]
    report, stale = [], []
    for step in SCRIPT:
        a, b = ours.seen[step.name], theirs.seen[step.name]
        if step.name in ALLOWED:
            if a == b:
                stale.append(step.name)
            continue
        if a != b:
            whos = sorted(set(a) | set(b), key=USERS.index)
            report.append(f"step {step.name!r}:\n" + "".join(
                f"  {who}:\n{_explain(a.get(who), b.get(who))}\n"
                for who in whos if a.get(who) != b.get(who)))
    for var in INFO_EXTRAS:
        if f"var='{var}'" not in ours.raw["room info"].get("bob", "") \
                or f"var='{var}'" in theirs.raw["room info"].get("bob", ""):
            stale.append(f"room feature {var}")
    assert not report, "xmppd and Prosody differ:\n" + "\n".join(report)
    assert not stale, f"allowed differences that no longer occur: {stale}"
