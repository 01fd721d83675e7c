"""Driving XEP-0045 multi-user chat from pytest with slixmpp's ``xep_0045``.

:class:`MUCClient` is the recording :class:`slixclient.IMClient` with the
``xep_0004`` and ``xep_0045`` plugins: joins, configuration, affiliations,
roles, subject, invitations and destruction go through the plugin's own API
(what a slixmpp-based client really sends), and the test asserts on the XML
that arrived over the socket. Where the plugin stops short (a join that is
refused — the plugin only notices errors that echo ``<x xmlns=muc>`` —, raw
admin lists with their reasons, probes, self-pings, registration) the client
sends the stanza itself.

Every client also keeps :attr:`MUCClient.log`, everything received in arrival
order and never consumed, so a test can check the order of what a join
delivered (occupants, self-presence, history, then the subject). A join
consumes from ``inbox`` what it delivered and any older presence from the
same occupant JID, so a later ``expect`` sees only what came after it.

The same helpers run against xmppd and against a real Prosody
(``XMPPD_MUC_AGAINST=prosody``); nothing here knows which is on the other end.
"""

from __future__ import annotations

import asyncio
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Iterable

from slixmpp import JID
from slixmpp.plugins.xep_0004 import Form

from conftest import PASSWORD
from slixclient import IMClient, Match

TIMEOUT = 10
CLIENT = "{jabber:client}"
MUC_NS = "http://jabber.org/protocol/muc"
MUC = "{%s}" % MUC_NS
USER = "{%s#user}" % MUC_NS
ADMIN = "{%s#admin}" % MUC_NS
OWNER = "{%s#owner}" % MUC_NS
DATA = "{jabber:x:data}"
DELAY = "{urn:xmpp:delay}"
STANZAS = "{urn:ietf:params:xml:ns:xmpp-stanzas}"
DISCO_INFO = "{http://jabber.org/protocol/disco#info}"
DISCO_ITEMS = "{http://jabber.org/protocol/disco#items}"
REGISTER = "{jabber:iq:register}"
ROOMCONFIG = MUC_NS + "#roomconfig"
PLUGINS = ("xep_0004", "xep_0045")


def run(coro, target) -> Any:
    """Run one test's scenario; on failure, add the server's log tail."""
    try:
        return asyncio.run(asyncio.wait_for(coro, 90))
    except BaseException as failure:
        tail = target.process.log_tail(60)
        failure.add_note(f"--- {target.name} log tail ---\n{tail}")
        raise


def new_room(target, slug: str) -> str:
    """A room JID no other test uses (module-scoped servers are shared)."""
    return f"{slug}-{uuid.uuid4().hex[:6]}@{target.muc}"


def occupant(room: str, nick: str) -> str:
    return f"{room}/{nick}"


def dump(element: ET.Element) -> str:
    return ET.tostring(element, encoding="unicode")


# -- reading what arrived --------------------------------------------------------------

def codes(stanza: ET.Element) -> set[int]:
    """The muc#user status codes of a presence or message."""
    x = stanza.find(USER + "x")
    if x is None:
        return set()
    return {int(s.get("code")) for s in x.findall(USER + "status")}


def item(stanza: ET.Element) -> dict[str, str | None]:
    """The muc#user <item/> of a presence: its attributes, 'reason' and 'actor'."""
    found = stanza.find(f"{USER}x/{USER}item")
    assert found is not None, f"no muc#user item in {dump(stanza)}"
    result: dict[str, str | None] = dict(found.attrib)
    result["reason"] = found.findtext(USER + "reason")
    actor = found.find(USER + "actor")
    result["actor"] = None if actor is None else (actor.get("nick") or actor.get("jid"))
    return result


def error_of(stanza: ET.Element) -> tuple[str | None, str | None]:
    """(error type, defined condition) of a stanza of type 'error'."""
    error = stanza.find(CLIENT + "error")
    assert error is not None, f"no <error/> in {dump(stanza)}"
    conditions = [c.tag[len(STANZAS):] for c in error
                  if c.tag.startswith(STANZAS) and c.tag != STANZAS + "text"]
    assert len(conditions) == 1, f"an error needs one defined condition: {dump(stanza)}"
    return error.get("type"), conditions[0]


def form_values(form: ET.Element) -> dict[str, list[str]]:
    """var → values of a jabber:x:data form element."""
    return {f.get("var"): [v.text or "" for v in f.findall(DATA + "value")]
            for f in form.findall(DATA + "field") if f.get("var")}


def form_of(stanza: ET.Element, form_type: str) -> ET.Element | None:
    """The data form of that FORM_TYPE anywhere in the stanza."""
    for form in stanza.iter(DATA + "x"):
        if form_values(form).get("FORM_TYPE") == [form_type]:
            return form
    return None


def bare(jid: str | None) -> str | None:
    return jid.split("/", 1)[0] if jid else jid


# -- matchers ---------------------------------------------------------------------------

def muc_presence(from_: str, type: str | None = None, with_codes: Iterable[int] = (),
                 without_codes: Iterable[int] = (), **item_attrs: str) -> Match:
    """A presence from occupant JID ``from_`` of ``type`` (None: available)
    carrying a muc#user <x/> with at least ``with_codes``, none of
    ``without_codes``, and an <item/> with ``item_attrs`` (role=, affiliation=…)."""
    wanted, unwanted = set(with_codes), set(without_codes)

    def match(e: ET.Element) -> bool:
        if not (e.tag == CLIENT + "presence" and e.get("from") == from_
                and e.get("type") == type and e.find(USER + "x") is not None
                and wanted <= codes(e) and not (unwanted & codes(e))):
            return False
        found = e.find(f"{USER}x/{USER}item")
        return all(found is not None and found.get(k) == v for k, v in item_attrs.items())
    match.__doc__ = (f"muc presence type={type} from {from_} with codes {sorted(wanted)}"
                     f" without {sorted(unwanted)} item {item_attrs}")
    return match


def status_message(room: str, code: int) -> Match:
    """A message from the room itself carrying muc#user status ``code`` (§10.2.1)."""
    def match(e: ET.Element) -> bool:
        return e.tag == CLIENT + "message" and e.get("from") == room and code in codes(e)
    match.__doc__ = f"a message from {room} with status {code}"
    return match


def presence_error(from_: str) -> Match:
    def match(e: ET.Element) -> bool:
        return e.tag == CLIENT + "presence" and e.get("type") == "error" and e.get("from") == from_
    match.__doc__ = f"presence error from {from_}"
    return match


def groupchat(from_: str, body: str | None = None) -> Match:
    """A groupchat message from ``from_`` (occupant JID, or the room for
    room-made messages) with that body (None: any, even none)."""
    def match(e: ET.Element) -> bool:
        return (e.tag == CLIENT + "message" and e.get("type") == "groupchat"
                and e.get("from") == from_
                and (body is None or e.findtext(CLIENT + "body") == body))
    match.__doc__ = f"groupchat message from {from_} body={body!r}"
    return match


def subject_message(room: str) -> Match:
    """A subject message: groupchat from the room or one of its occupants,
    with <subject/> and no <body/> (§7.2.15)."""
    def match(e: ET.Element) -> bool:
        return (e.tag == CLIENT + "message" and e.get("type") == "groupchat"
                and bare(e.get("from")) == room and e.find(CLIENT + "subject") is not None
                and e.find(CLIENT + "body") is None)
    match.__doc__ = f"subject message from {room}"
    return match


def message_from(from_: str, type: str | None = "any", body: str | None = None) -> Match:
    def match(e: ET.Element) -> bool:
        return (e.tag == CLIENT + "message" and e.get("from") == from_
                and (type == "any" or e.get("type") == type)
                and (body is None or e.findtext(CLIENT + "body") == body))
    match.__doc__ = f"message type={type} from {from_} body={body!r}"
    return match


# -- the client -------------------------------------------------------------------------

@dataclass
class Joined:
    """What a successful join delivered (slixmpp's ``join_muc_wait`` result, as XML)."""
    presence: ET.Element
    subject: ET.Element
    occupants: list[ET.Element] = field(default_factory=list)
    history: list[ET.Element] = field(default_factory=list)

    @property
    def codes(self) -> set[int]:
        return codes(self.presence)

    @property
    def item(self) -> dict[str, str | None]:
        return item(self.presence)


class MUCClient(IMClient):
    """A recording slixmpp client with the XEP-0045 plugin."""

    def __init__(self, jid: str, password: str = PASSWORD, plugins: tuple[str, ...] = ()):
        super().__init__(jid, password, plugins)
        #: everything received, in arrival order (``inbox`` is consumed by expect)
        self.log: list[ET.Element] = []

    def _record(self, stanza):
        self.log.append(stanza.xml)
        return super()._record(stanza)

    @classmethod
    async def connect_to(cls, target, jid: str, online: bool = True) -> "MUCClient":
        """Log in to the MUC target (xmppd or Prosody) and send initial presence."""
        client = cls(jid, PASSWORD, PLUGINS)
        client.connect(target.host, target.client_port)  # tcp, or a bridge
        done, _ = await asyncio.wait([client.started], timeout=TIMEOUT)
        if not done or not client.started.result():
            client.abort()
            raise AssertionError(f"{jid} could not log in to {target.name}")
        if online:
            await client.online()
        return client

    async def online(self, priority: int = 0, status: str | None = None) -> None:
        """Initial presence, and wait for the server's echo of it (Prosody's
        echo carries no 'to', xmppd's does: either will do)."""
        self.send_presence(ppriority=priority, pstatus=status)

        def echo(e: ET.Element) -> bool:
            return (e.tag == CLIENT + "presence" and e.get("from") == self.boundjid.full
                    and e.get("type") is None)
        echo.__doc__ = "the echo of our initial presence"
        await self.expect(echo)

    @property
    def muc(self):
        return self.plugin["xep_0045"]

    # -- entering -------------------------------------------------------------------

    async def join(self, room: str, nick: str, **options) -> Joined:
        """Join with the plugin's ``join_muc_wait`` (password=, maxstanzas=,
        maxchars=, seconds=, since=, presence_options=): self-presence, then
        the subject, which §7.2.15 makes the last thing of every join."""
        self._forget_presences_from(occupant(room, nick))
        presence, subject, occupants, history = await self.muc.join_muc_wait(
            JID(room), nick, timeout=TIMEOUT, **options)
        joined = Joined(presence.xml, subject.xml, [p.xml for p in occupants],
                        [m.xml for m in history])
        # what the join delivered is consumed: later expects see only what follows
        self._consume([joined.presence, joined.subject, *joined.occupants, *joined.history])
        return joined

    def _consume(self, elements: list[ET.Element]) -> None:
        gone = {dump(e) for e in elements}
        self.inbox[:] = [e for e in self.inbox if dump(e) not in gone]

    def _forget_presences_from(self, jid: str) -> None:
        """Drop earlier presences from ``jid`` still in the inbox, so a new
        join's answer cannot be mistaken for an old one."""
        self.inbox[:] = [e for e in self.inbox
                         if not (e.tag == CLIENT + "presence" and e.get("from") == jid)]

    async def try_join(self, room: str, nick: str, password: str | None = None,
                       **history) -> ET.Element:
        """Send the plugin's join stanza; the self-presence or the error presence."""
        stanza = self.muc.make_join_stanza(JID(room), nick, password=password, **history)
        to = occupant(room, nick)
        self._forget_presences_from(to)
        stanza.send()

        def answer(e: ET.Element) -> bool:
            return (e.tag == CLIENT + "presence" and e.get("from") == to
                    and (e.get("type") == "error" or 110 in codes(e)))
        answer.__doc__ = f"self-presence or error presence from {to}"
        return await self.expect(answer)

    async def join_error(self, room: str, nick: str, password: str | None = None,
                         **history) -> tuple[str | None, str | None]:
        """A join the room must refuse: (error type, condition)."""
        answer = await self.try_join(room, nick, password, **history)
        assert answer.get("type") == "error", f"the join was accepted: {dump(answer)}"
        return error_of(answer)

    async def create(self, room: str, nick: str, config: dict[str, Any] | None = None,
                     ) -> Joined:
        """Create a room: join (201), then configure it with ``config`` through the
        owner form (§10.1.3), or accept it as an instant room (§10.1.2)."""
        joined = await self.join(room, nick)
        assert {110, 201} <= joined.codes, f"not a new room: {dump(joined.presence)}"
        if config:
            await self.configure(room, config)
        else:
            await self.accept_instant(room)
        return joined

    async def accept_instant(self, room: str) -> None:
        """§10.1.2: an empty submitted form accepts the default configuration."""
        await self.muc.set_room_config(JID(room), Form(), timeout=TIMEOUT)

    async def configure(self, room: str, config: dict[str, Any]) -> Form:
        """Fetch the owner form, submit ``config`` (short names get the
        muc#roomconfig_ prefix; booleans become 1/0); the fetched form."""
        fetched = await self.muc.get_room_config(JID(room), timeout=TIMEOUT)
        await self.muc.set_room_config(JID(room), submit_form(ROOMCONFIG, config),
                                       timeout=TIMEOUT)
        return fetched

    # -- talking --------------------------------------------------------------------

    def say(self, room: str, body: str, subject: str | None = None) -> str:
        """A groupchat message with an id of ours; the id."""
        message = self.make_message(mto=room, mbody=body, msubject=subject, mtype="groupchat")
        message["id"] = "m-" + uuid.uuid4().hex[:10]
        message.send()
        return message["id"]

    async def say_and_wait(self, room: str, nick: str, body: str) -> str:
        """Say it and wait for the room's reflection (the message is then in history)."""
        id = self.say(room, body)
        await self.expect(groupchat(occupant(room, nick), body))
        return id

    async def admin_list(self, room: str, **attributes: str) -> list[ET.Element]:
        """A muc#admin get for one affiliation or role: the <item/> elements."""
        attrs = " ".join(f"{k}='{v}'" for k, v in attributes.items())
        reply = await self.iq("get", f"<query xmlns='{MUC_NS}#admin'><item {attrs}/></query>",
                              to=room)
        return reply.findall(f"{ADMIN}query/{ADMIN}item")

    async def disco_info(self, jid: str, node: str | None = None) -> ET.Element:
        node_attr = f" node='{node}'" if node else ""
        reply = await self.iq("get", "<query xmlns='http://jabber.org/protocol/disco#info'"
                                     f"{node_attr}/>", to=jid)
        return reply.find(DISCO_INFO + "query")

    async def disco_items(self, jid: str) -> list[str]:
        reply = await self.iq("get", "<query xmlns='http://jabber.org/protocol/disco#items'/>",
                              to=jid)
        return [i.get("jid") for i in reply.findall(f"{DISCO_ITEMS}query/{DISCO_ITEMS}item")]

    def arrival(self, element: ET.Element) -> int:
        """Where ``element`` came in the order of arrival."""
        text = dump(element)
        return next(i for i, e in enumerate(self.log) if e is element or dump(e) == text)


def submit_form(form_type: str, values: dict[str, Any], prefix: str | None = None) -> Form:
    """A submit form of ``form_type``; keys without '#' get ``prefix`` (by
    default the muc#roomconfig_ one)."""
    prefix = prefix if prefix is not None else "muc#roomconfig_"
    form = Form()
    form["type"] = "submit"
    form.add_field(var="FORM_TYPE", ftype="hidden", value=form_type)
    for var, value in values.items():
        if isinstance(value, bool):
            value = "1" if value else "0"
        form.add_field(var=var if "#" in var else prefix + var, value=str(value))
    return form


async def connect_all(target, *jids: str) -> list[MUCClient]:
    return list(await asyncio.gather(*(MUCClient.connect_to(target, j) for j in jids)))


async def close_all(*clients: MUCClient) -> None:
    await asyncio.gather(*(c.close() for c in clients))

