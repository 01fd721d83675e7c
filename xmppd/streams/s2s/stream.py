"""What incoming and outgoing s2s streams share: the ``jabber:server``
header with its ``db`` prefix, the edge mapping of stanzas, and the one
output path (serialised once, by :func:`xmppd.streams.edge.serialize`)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from twisted.words.xish import domish

from xmppd import ns
from xmppd.streams import edge
from xmppd.streams.s2s import dialback
from xmppd.xml.stream import XMPPStream

if TYPE_CHECKING:
    from xmppd.streams.s2s.links import S2S


class S2SStream(XMPPStream):
    """An XML stream between two servers (RFC 6120), one direction of a link."""

    namespace = ns.SERVER
    _prefixes = {ns.STREAMS: "stream", ns.DIALBACK: "db"}
    #: "in" or "out", for log lines
    direction = "?"

    def __init__(self, s2s: S2S):
        config = s2s.server.config
        c2s = config.c2s
        super().__init__(config.server["max_stanza_size"], clock=s2s.server.clock,
                         max_output=config.s2s["max_output_buffer"],
                         send_timeout=c2s["send_timeout"], close_timeout=c2s["close_timeout"],
                         traffic=s2s.server.reclaimer.account)
        self.s2s = s2s
        self.server = s2s.server
        self.secure = False
        #: (local domain, remote domain) of the stream's header
        self.local: str | None = None
        self.remote: str | None = None

    # -- output ----------------------------------------------------------------------

    def write_header(self, from_: str | None, to: str | None, id_: bool) -> None:
        """``<stream:stream>`` with the dialback prefix declared (XEP-0220
        §2.1: a server that does dialback declares it, and Prosody and
        ejabberd look for it)."""
        attrs = ""
        if from_:
            attrs += f" from='{from_}'"
        if to:
            attrs += f" to='{to}'"
        if id_:
            self.stream_id = uuid.uuid4().hex
            attrs += f" id='{self.stream_id}'"
        self.transport.write(
            (f"<?xml version='1.0'?><stream:stream xmlns='{ns.SERVER}' "
             f"xmlns:stream='{ns.STREAMS}' xmlns:db='{ns.DIALBACK}'{attrs} version='1.0' "
             f"xml:lang='en'>"
             ).encode("utf-8"))
        self.header_sent = True

    def send_header(self, domain: str | None, version: bool = True) -> None:
        # The header written before an early stream error.
        self.write_header(domain or self.local, self.remote, id_=not self.stream_id)

    @property
    def shape(self) -> str:
        return ns.SERVER

    def serialize(self, element: domish.Element) -> str:
        if element.uri == ns.DIALBACK:
            return dialback.serialize(element)
        return edge.serialize(element)

    # -- input -----------------------------------------------------------------------

    @staticmethod
    def is_stanza(element: domish.Element) -> bool:
        return element.uri == ns.SERVER and element.name in ("message", "presence", "iq")

    @staticmethod
    def inside(element: domish.Element) -> domish.Element:
        """The stanza as the rest of the server sees it (``jabber:client``)."""
        return edge.to_client(element, ns.SERVER)

    def peer_error(self, element: domish.Element) -> bool:
        """The peer's ``<stream:error/>``: logged with its condition and text,
        and the stream closed (RFC 6120 §4.9.1.1: no answer but our closing
        tag). True when ``element`` was one."""
        if element.uri != ns.STREAMS or element.name != "error":
            return False
        condition = next((c.name for c in element.elements() if c.uri == ns.STREAM_ERRORS
                          and c.name != "text"), "undefined-condition")
        text = next((str(c) for c in element.elements(ns.STREAM_ERRORS, "text")), "")
        self.log.warn("s2s{direction} {peer}: stream error from {remote}: {condition} {text}",
                      direction=self.direction, peer=self.peer, remote=self.remote or "?",
                      condition=condition, text=text)
        self.peer_condition = condition
        self.close()
        return True

    def describe(self) -> str:
        return f"s2s{self.direction} {self.peer} ({self.local or '?'} {'<-' if self.direction == 'in' else '->'} {self.remote or '?'})"

    def log_info(self, text: str, **kw: Any) -> None:
        self.log.info("{stream}: " + text, stream=self.describe(), **kw)
