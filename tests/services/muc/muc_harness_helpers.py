"""Shared helpers of the MUC harness tests (tests/services/muc/test_muc_*.py):
an in-memory server with the MUC service on conference.localhost, and the
few stanzas every test sends (join, configure, admin items) written once.

Imported by the test modules with their directory on sys.path, as
tests/services/pubsub_core_fakes.py is (test modules have no package)."""

from __future__ import annotations

from typing import Any, Iterable

from twisted.internet import task
from twisted.words.xish import domish

from xmppd import ns
from xmppd.testing import FakeSession, Harness, error_condition

MUC_DOMAIN = "conference.localhost"
COMPONENTS = ["presence", "messaging", "disco", "muc"]


def make_harness(clock: task.Clock | None = None, server: dict[str, Any] | None = None,
                 **muc_options: Any) -> Harness:
    """A server with presence, messaging, disco and the MUC service; ``muc_options``
    go to ``[component:muc]``, ``server`` to ``[server]``. New rooms are public
    here unless a test says otherwise (the shipped default, as Prosody's, is
    hidden), so that listing is easy to check."""
    muc_options.setdefault("default_public", True)
    options: dict[str, dict[str, Any]] = {
        "component:muc": {k: str(v).lower() if isinstance(v, bool) else str(v)
                          for k, v in muc_options.items()}}
    if server:
        options["server"] = dict(server)
    return Harness(COMPONENTS, clock=clock if clock is not None else task.Clock(),
                   options=options)


def room_jid(room: str) -> str:
    return f"{room}@{MUC_DOMAIN}"


def join(session: FakeSession, room: str, nick: str, password: str | None = None,
         history: str | None = None, extra: str = "", muc_x: bool = True) -> list[domish.Element]:
    """Send a join presence (with ``<x xmlns='…muc'/>``); returns what arrived."""
    inner = ""
    if password is not None:
        inner += f"<password>{password}</password>"
    if history is not None:
        inner += history
    x = f"<x xmlns='{ns.MUC}'>{inner}</x>" if muc_x else ""
    session.feed(f"<presence to='{room_jid(room)}/{nick}'>{x}{extra}</presence>")
    return session.take()


def leave(session: FakeSession, room: str, nick: str, status: str | None = None) -> list:
    body = f"<status>{status}</status>" if status else ""
    session.feed(f"<presence type='unavailable' to='{room_jid(room)}/{nick}'>{body}</presence>")
    return session.take()


def owner_set(session: FakeSession, room: str, inner: str, iq_id: str = "own1") -> domish.Element:
    session.feed(f"<iq type='set' id='{iq_id}' to='{room_jid(room)}'>"
                 f"<query xmlns='{ns.MUC_OWNER}'>{inner}</query></iq>")
    return iq_reply(session, iq_id)


def config_form(fields: dict[str, Any] | None = None, form_type: bool = True) -> str:
    """A submitted muc#roomconfig form with ``fields`` (bools as 1/0, lists as
    several values)."""
    parts = []
    if form_type:
        parts.append(f"<field var='FORM_TYPE'><value>{ns.MUC_ROOMCONFIG}</value></field>")
    for var, value in (fields or {}).items():
        values = value if isinstance(value, (list, tuple)) else [value]
        text = "".join(
            f"<value>{('1' if v else '0') if isinstance(v, bool) else v}</value>" for v in values)
        parts.append(f"<field var='{var}'>{text}</field>")
    return f"<x xmlns='{ns.DATA_FORMS}' type='submit'>{''.join(parts)}</x>"


def configure(session: FakeSession, room: str, fields: dict[str, Any] | None = None,
              iq_id: str = "cfg1") -> domish.Element:
    """Submit the owner configuration form; returns the iq answer (other stanzas
    the session got meanwhile are dropped)."""
    return owner_set(session, room, config_form(fields), iq_id)


def instant(session: FakeSession, room: str, iq_id: str = "inst1") -> domish.Element:
    """Accept the default configuration (XEP-0045 §10.1.2: an empty submitted form)."""
    return owner_set(session, room, f"<x xmlns='{ns.DATA_FORMS}' type='submit'/>", iq_id)


def create(session: FakeSession, room: str, nick: str,
           fields: dict[str, Any] | None = None) -> list[domish.Element]:
    """Create a room by joining it, then unlock it (instant, or configured with
    ``fields``). Returns the stanzas of the join."""
    got = join(session, room, nick)
    reply = configure(session, room, fields) if fields else instant(session, room)
    assert reply.getAttribute("type") == "result", reply.toXml()
    session.take()
    return got


def iq_reply(session: FakeSession, iq_id: str) -> domish.Element:
    """The iq answer with ``iq_id`` among what ``session`` got (the rest is dropped)."""
    got = session.take()
    answers = [e for e in got if e.name == "iq" and e.getAttribute("id") == iq_id]
    assert len(answers) == 1, [e.toXml() for e in got]
    return answers[0]


def admin_set(session: FakeSession, room: str, items: str, iq_id: str = "adm1",
              keep: bool = False) -> domish.Element:
    """A muc#admin set with ``items``; returns the answer. With ``keep`` the other
    stanzas the session received stay in its mailbox (put back in order)."""
    session.feed(f"<iq type='set' id='{iq_id}' to='{room_jid(room)}'>"
                 f"<query xmlns='{ns.MUC_ADMIN}'>{items}</query></iq>")
    got = session.take()
    answers = [e for e in got if e.name == "iq" and e.getAttribute("id") == iq_id]
    assert len(answers) == 1, [e.toXml() for e in got]
    if keep:
        session.received[:0] = [e for e in got if e is not answers[0]]
    return answers[0]


def admin_get(session: FakeSession, room: str, item: str, iq_id: str = "adml") -> domish.Element:
    session.feed(f"<iq type='get' id='{iq_id}' to='{room_jid(room)}'>"
                 f"<query xmlns='{ns.MUC_ADMIN}'>{item}</query></iq>")
    return iq_reply(session, iq_id)


def say(session: FakeSession, room: str, body: str, msg_id: str | None = None) -> None:
    id_attr = f" id='{msg_id}'" if msg_id else ""
    session.feed(f"<message type='groupchat' to='{room_jid(room)}'{id_attr}>"
                 f"<body>{body}</body></message>")


def muc_x(stanza: domish.Element) -> domish.Element | None:
    return next(stanza.elements(ns.MUC_USER, "x"), None)


def codes(stanza: domish.Element) -> set[str]:
    """The muc#user status codes of a presence or message."""
    x = muc_x(stanza)
    if x is None:
        return set()
    return {s["code"] for s in x.elements(ns.MUC_USER, "status")}


def item(stanza: domish.Element) -> domish.Element:
    x = muc_x(stanza)
    assert x is not None, stanza.toXml()
    return next(x.elements(ns.MUC_USER, "item"))


def presences(stanzas: Iterable[domish.Element], sender: str | None = None) -> list:
    out = [s for s in stanzas if s.name == "presence"]
    if sender is not None:
        out = [s for s in out if s.getAttribute("from") == sender]
    return out


def messages(stanzas: Iterable[domish.Element]) -> list:
    return [s for s in stanzas if s.name == "message"]


def bodies(stanzas: Iterable[domish.Element]) -> list[str]:
    out = []
    for s in stanzas:
        if s.name == "message":
            body = next((c for c in s.elements() if c.name == "body"), None)
            if body is not None:
                out.append(str(body))
    return out


def the_error(stanzas: list[domish.Element], name: str | None = None) -> str:
    """The condition of the one error stanza in ``stanzas``."""
    errors = [s for s in stanzas if s.getAttribute("type") == "error"
              and (name is None or s.name == name)]
    assert len(errors) == 1, [s.toXml() for s in stanzas]
    return error_condition(errors[0])


def error_type(stanza: domish.Element) -> str:
    return next(c for c in stanza.elements() if c.name == "error")["type"]


def service(h: Harness):
    return h.component("muc")


def the_room(h: Harness, room: str):
    return service(h).rooms.get(room_jid(room))
