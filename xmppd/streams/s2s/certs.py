"""TLS for server-to-server streams, and what a peer's certificate proves.

Both ends of an s2s stream present a certificate (RFC 6120 §13.7.2): the
receiving server asks the initiating one for its own (``VERIFY_PEER`` with a
callback that accepts anything, so the handshake never fails on it), and the
verdict is made afterwards, here, because what a certificate proves depends
on the domain the stream claims — known only from the stream header:

- :func:`verify` checks the chain against ``[s2s] ca_file`` (else the
  system's authorities), its dates, and the domain with ``service_identity``
  (RFC 6125 DNS-ID, wildcards in the left-most label; XEP-0178's
  id-on-xmppAddr is not looked at: public CAs do not issue it);
- the result is a :class:`Verdict`: ``trusted`` (SASL EXTERNAL may be offered,
  dialback may be short-cut, XEP-0344) or why not, for the log line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from OpenSSL import SSL, crypto
from twisted.internet.interfaces import (IOpenSSLClientConnectionCreator,
                                         IOpenSSLServerConnectionCreator)
from zope.interface import implementer

from xmppd import tls


@dataclass(frozen=True)
class Verdict:
    """What a peer's certificate proves about one domain."""

    trusted: bool
    #: why it is not trusted ("no certificate", "certificate verify failed: …")
    reason: str = ""


NO_CERTIFICATE = Verdict(False, "no certificate")


def _accept_any(_conn, _cert, _errno, _depth, _ok) -> bool:
    return True


def _trust_store(ca_file: str) -> crypto.X509Store:
    store = crypto.X509Store()
    if ca_file:
        store.load_locations(ca_file)
        return store
    import ssl

    paths = ssl.get_default_verify_paths()
    for cafile, capath in ((paths.cafile, None), (None, paths.capath)):
        try:
            if cafile or capath:
                store.load_locations(cafile, capath)
        except crypto.Error:
            pass  # not on this system
    return store


class S2STLS:
    """The TLS contexts of s2s streams and the verdict on peers' certificates.

    One per server: built from ``[server] certificate`` (the same one clients
    see) and ``[s2s] ca_file``.
    """

    def __init__(self, certificate: str, private_key: str, ca_file: str):
        self.ca_file = ca_file
        self._store = _trust_store(ca_file)
        options = tls.context_factory(certificate, private_key)
        # Two contexts, built once: ALPN and the session cache as for clients,
        # and the peer's certificate asked for (never required).
        self._server = options.getContext()
        self._server.set_verify(SSL.VERIFY_PEER, _accept_any)
        self._server.set_alpn_select_callback(_select_alpn)
        client = tls.context_factory(certificate, private_key)
        self._client = client.getContext()
        self._client.set_verify(SSL.VERIFY_PEER, _accept_any)
        self._client.set_alpn_protos([b"xmpp-server"])
        self.server_options = _FixedContext(self._server)

    def client_creator(self, domain: str) -> "_ClientCreator":
        """Client-side TLS toward ``domain`` (its name as SNI, so a server
        hosting many domains shows the right certificate)."""
        return _ClientCreator(self._client, domain)

    def verify(self, transport: Any, domain: str | None) -> Verdict:
        """Does the certificate ``transport``'s peer showed prove ``domain``?"""
        if domain is None:
            return Verdict(False, "the stream names no domain")
        connection = _tls_connection(transport)
        if connection is None:
            return Verdict(False, "no TLS")
        cert = connection.get_peer_certificate()
        if cert is None:
            return NO_CERTIFICATE
        chain = connection.get_peer_cert_chain() or []
        try:
            crypto.X509StoreContext(self._store, cert, [c for c in chain if c is not cert]
                                    ).verify_certificate()
        except crypto.X509StoreContextError as e:
            return Verdict(False, f"certificate verify failed: {e}")
        from service_identity import VerificationError, CertificateError
        from service_identity.cryptography import verify_certificate_hostname

        try:
            verify_certificate_hostname(cert.to_cryptography(), domain)
        except (VerificationError, CertificateError, ValueError) as e:
            # ValueError: not a DNS name at all (an IP literal)
            return Verdict(False, f"the certificate is not for {domain}: {e}")
        return Verdict(True)


def _tls_connection(transport: Any) -> SSL.Connection | None:
    """The pyOpenSSL connection under a Twisted transport (STARTTLS or a TLS
    port), or None when it is not encrypted."""
    for candidate in (transport, getattr(transport, "protocol", None)):
        conn = getattr(candidate, "_tlsConnection", None)
        if conn is not None:
            return conn
    get_handle = getattr(transport, "getHandle", None)
    handle = get_handle() if get_handle is not None else None
    return handle if isinstance(handle, SSL.Connection) else None


def _select_alpn(_connection, offered: list[bytes]) -> bytes:
    """XEP-0368: a server connecting with direct TLS offers ``xmpp-server``."""
    return b"xmpp-server" if b"xmpp-server" in offered else SSL.NO_OVERLAPPING_PROTOCOLS


@implementer(IOpenSSLServerConnectionCreator)
class _FixedContext:
    """Server-side TLS connections from one prepared context."""

    def __init__(self, context: SSL.Context):
        self._context = context

    def getContext(self) -> SSL.Context:
        return self._context

    def serverConnectionForTLS(self, tls_protocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tls_protocol)
        return connection


@implementer(IOpenSSLClientConnectionCreator)
class _ClientCreator:
    def __init__(self, context: SSL.Context, domain: str):
        self._context = context
        self._domain = domain

    def getContext(self) -> SSL.Context:  # for startTLS, which asks the context
        return self._context

    def clientConnectionForTLS(self, tls_protocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        connection.set_connect_state()
        try:
            connection.set_tlsext_host_name(self._domain.encode("idna"))
        except (UnicodeError, ValueError):
            pass
        connection.set_app_data(tls_protocol)
        return connection
