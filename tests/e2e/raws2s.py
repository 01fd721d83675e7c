"""A deliberately dumb server-to-server stream over a raw socket, for tests.

:class:`RawClient` speaks for a client; :class:`RawS2S` speaks for a remote
*server*: a ``jabber:server`` header declaring the dialback prefix, STARTTLS
with python's :mod:`ssl` (optionally presenting a certificate, as a real
server does, RFC 6120 §13.7.2) and SASL EXTERNAL (XEP-0178). It sends
exactly what it is given beyond that, so tests can send what no real server
would, and reads the other server's side like :class:`RawClient`::

    s2s = RawS2S.connect(ip, 5269)
    features = s2s.open("raw.test", "prosody.test")
    s2s.starttls("prosody.test", ca_file=ca, certificate=cert)
    features = s2s.open("raw.test", "prosody.test")
    answer = s2s.sasl_external("raw.test")       # <success/> or <failure/>

The differential (:mod:`test_s2s_differential`) plays the same scripts with
it against xmppd and Prosody.
"""

from __future__ import annotations

import base64
import ssl
import xml.etree.ElementTree as ET
from pathlib import Path

from rawxmpp import NS_SASL, NS_STREAMS, NS_TLS, RawClient, dump, q

NS_SERVER = "jabber:server"
NS_DB = "jabber:server:dialback"
NS_DB_FEATURE = "urn:xmpp:features:dialback"


def s2s_header(from_: str | None, to: str | None, version: str | None = "1.0") -> bytes:
    """An s2s stream header (each address may be left out)."""
    attrs = [f"xmlns='{NS_SERVER}'", f"xmlns:db='{NS_DB}'", f"xmlns:stream='{NS_STREAMS}'"]
    attrs += [f"{name}='{value}'" for name, value in
              (("from", from_), ("to", to), ("version", version)) if value is not None]
    return f"<?xml version='1.0'?><stream:stream {' '.join(attrs)}>".encode()


class RawS2S(RawClient):
    """One connection to a server's s2s port, as a remote server makes it."""

    def open(self, from_: str | None, to: str | None) -> ET.Element:
        """A (new) stream header; the server's ``<stream:features/>``."""
        self.send_header(from_, to)
        features = self.next_stanza(what="<stream:features/>")
        assert features.tag == q(NS_STREAMS, "features"), dump(features)
        return features

    def send_header(self, from_: str | None, to: str | None) -> None:
        """A new stream header, and forget the server's previous stream."""
        self._new_parser()
        self.send(s2s_header(from_, to))

    def starttls(self, server_name: str, ca_file: str | Path | None = None,
                 certificate=None) -> None:
        """STARTTLS, then the TLS handshake. The server's certificate is
        verified for ``server_name`` when ``ca_file`` is given; ``certificate``
        (a :class:`testca.ServerCertificate`) is presented when asked for."""
        self.send(f"<starttls xmlns='{NS_TLS}'/>")
        proceed = self.next_stanza(what="<proceed/>")
        assert proceed.tag == q(NS_TLS, "proceed"), dump(proceed)
        self.wrap_tls(server_name, ca_file, certificate)

    def wrap_tls(self, server_name: str, ca_file: str | Path | None = None,
                 certificate=None) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if ca_file is not None:
            context.load_verify_locations(str(ca_file))
        else:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if certificate is not None:
            context.load_cert_chain(str(certificate.chain), str(certificate.key))
        self.sock.settimeout(self.timeout)
        self.sock = context.wrap_socket(self.sock, server_hostname=server_name)

    def sasl_external(self, authzid: str | None = None) -> ET.Element:
        """``<auth mechanism='EXTERNAL'>`` (authzid None: the empty response
        ``=``); the server's answer (``<success/>`` or ``<failure/>``)."""
        text = base64.b64encode(authzid.encode()).decode() if authzid else "="
        self.send(f"<auth xmlns='{NS_SASL}' mechanism='EXTERNAL'>{text}</auth>")
        return self.next_stanza(what="SASL EXTERNAL answer")


def mechanisms(features: ET.Element) -> list[str]:
    """The SASL mechanisms ``<stream:features/>`` offers."""
    return [m.text or "" for m in features.iter(q(NS_SASL, "mechanism"))]
