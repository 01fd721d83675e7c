"""A slixmpp client for end-to-end tests that records every stanza it receives.

slixmpp does the real work — TLS, SASL, binding, its roster and plugins — and
the test asserts on what arrived over the socket, as XML, with ``expect``::

    alice = await IMClient.login(server, "alice@localhost/phone")
    await alice.online()
    push = await alice.expect(roster_push("bob@localhost", subscription="to"))

Subscription requests are left to the test (slixmpp would otherwise answer
them itself), so a test sees every step of a handshake.
"""

from __future__ import annotations

import asyncio
import ssl
import xml.etree.ElementTree as ET
from typing import Callable

import slixmpp

from conftest import PASSWORD

TIMEOUT = 10
CLIENT = "{jabber:client}"
ROSTER = "{jabber:iq:roster}"

Match = Callable[[ET.Element], bool]


class IMClient(slixmpp.ClientXMPP):
    """A slixmpp client whose incoming stanzas a test can wait for."""

    def __init__(self, jid: str, password: str = PASSWORD, plugins: tuple[str, ...] = ()):
        super().__init__(jid, password)
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the test server's certificate is self-signed
        self.ssl_context = context
        self.enable_direct_tls = False
        self.enable_plaintext = False
        self.auto_authorize = None  # subscription requests: the test answers them
        self.auto_subscribe = False
        for plugin in ("xep_0030", "xep_0199", *plugins):
            self.register_plugin(plugin)
        loop = asyncio.get_running_loop()
        self.started = loop.create_future()
        self.closed = loop.create_future()
        self.inbox: list[ET.Element] = []
        self._changed = asyncio.Condition()
        self.add_event_handler("session_start", lambda _: _settle(self.started, True))
        self.add_event_handler("failed_auth", lambda s: _settle(self.started, False))
        self.add_event_handler("disconnected", lambda r: _settle(self.closed, r))
        self.add_filter("in", self._record)

    @classmethod
    async def login(cls, server, jid: str, password: str = PASSWORD,
                    plugins: tuple[str, ...] = ()) -> IMClient:
        client = cls(jid, password, plugins)
        client.connect(server.client_host, server.client_port)  # tcp, or a bridge
        done, _ = await asyncio.wait([client.started], timeout=TIMEOUT)
        if not done or not client.started.result():
            client.abort()
            raise AssertionError(f"{jid} could not log in; server log:\n{server.log_tail()}")
        return client

    def _record(self, stanza):
        self.inbox.append(stanza.xml)
        asyncio.ensure_future(self._notify())
        return stanza

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- waiting for what arrives ---------------------------------------------------

    async def expect(self, match: Match, timeout: float = TIMEOUT) -> ET.Element:
        """The first received stanza that matches (removed from the inbox)."""
        async def found():
            async with self._changed:
                while True:
                    for i, element in enumerate(self.inbox):
                        if match(element):
                            return self.inbox.pop(i)
                    await self._changed.wait()
        try:
            return await asyncio.wait_for(found(), timeout)
        except asyncio.TimeoutError:
            got = "\n".join(ET.tostring(e, encoding="unicode") for e in self.inbox)
            raise AssertionError(f"{self.boundjid} never received {match.__doc__ or match}; "
                                 f"inbox:\n{got}") from None

    def received(self, match: Match) -> list[ET.Element]:
        """Every stanza received so far that matches (left in the inbox)."""
        return [e for e in self.inbox if match(e)]

    async def settle(self) -> None:
        """A round trip to the server and a short pause, for 'nothing arrived' checks."""
        await self.ping_server()
        await asyncio.sleep(0.3)

    # -- doing things -----------------------------------------------------------------

    async def ping_server(self):
        iq = self.Iq()
        iq["type"], iq["to"] = "get", self.boundjid.domain
        iq.enable("ping")
        return await iq.send(timeout=TIMEOUT)

    async def online(self, priority: int = 0, status: str | None = None) -> None:
        """Send presence, and wait until the server has processed it."""
        self.send_presence(ppriority=priority, pstatus=status)
        await self.expect(presence(self.boundjid.full, to=self.boundjid.full))

    async def fetch_roster(self, ver: str | None = None) -> ET.Element:
        """A roster get (which also makes this resource 'interested' in pushes)."""
        iq = self.Iq()
        iq["type"] = "get"
        query = ET.SubElement(iq.xml, ROSTER + "query")
        if ver is not None:
            query.set("ver", ver)
        reply = await iq.send(timeout=TIMEOUT)
        return reply.xml

    async def iq(self, type: str, payload: str, to: str | None = None) -> ET.Element:
        """Send an iq ``type`` carrying ``payload`` (XML text); the reply.

        An error reply raises slixmpp's ``IqError`` (its ``.iq`` is the stanza).
        """
        iq = self.Iq()
        iq["type"] = type
        if to:
            iq["to"] = to
        iq.xml.append(ET.fromstring(payload))
        reply = await iq.send(timeout=TIMEOUT)
        return reply.xml

    async def close(self) -> None:
        if not self.closed.done():
            try:
                await asyncio.wait_for(self.disconnect(wait=1), 3)
            except Exception:  # noqa: BLE001 - already gone is fine
                self.abort()


def _settle(future, value) -> None:
    if not future.done():
        future.set_result(value)


# -- matchers ------------------------------------------------------------------------

def bare(jid: str | None) -> str | None:
    return jid.split("/", 1)[0] if jid else jid


def presence(from_: str, type: str | None = None, to: str | None = None) -> Match:
    """A presence from ``from_`` (bare or full JID) of ``type`` (None: available)."""
    def match(e: ET.Element) -> bool:
        return (e.tag == CLIENT + "presence"
                and (e.get("from") == from_ or ("/" not in from_ and bare(e.get("from")) == from_))
                and e.get("type") == type
                and (to is None or e.get("to") == to))
    match.__doc__ = f"presence type={type} from {from_}" + (f" to {to}" if to else "")
    return match


def roster_push(jid: str, subscription: str | None = None, ask: str | None = "any") -> Match:
    """A roster push about ``jid`` (optionally with that subscription and ask)."""
    def match(e: ET.Element) -> bool:
        if e.tag != CLIENT + "iq" or e.get("type") != "set":
            return False
        item = e.find(f"{ROSTER}query/{ROSTER}item")
        return (item is not None and item.get("jid") == jid
                and (subscription is None or item.get("subscription") == subscription)
                and (ask == "any" or item.get("ask") == ask))
    match.__doc__ = f"roster push {jid} subscription={subscription} ask={ask}"
    return match


def message(from_: str | None = None, id: str | None = None, type: str | None = "any") -> Match:
    def match(e: ET.Element) -> bool:
        return (e.tag == CLIENT + "message"
                and (from_ is None or e.get("from") == from_
                     or ("/" not in from_ and bare(e.get("from")) == from_))
                and (id is None or e.get("id") == id)
                and (type == "any" or e.get("type") == type))
    match.__doc__ = f"message from {from_} id={id} type={type}"
    return match


async def close_all(*clients: IMClient) -> None:
    await asyncio.gather(*(c.close() for c in clients))
