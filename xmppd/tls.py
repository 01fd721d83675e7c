"""TLS: the server's certificate, its TLS context, and self-signed certificates.

A fresh install has no certificate, and TLS is required by default, so on first
start xmppd makes a self-signed certificate for its domains in
``data_dir/certs/`` (as Prosody's ``prosodyctl cert generate`` would) and logs
that clients will need to accept it. A certificate the operator configured is
never generated: a missing one is a configuration error.
"""

from __future__ import annotations

import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet import ssl


#: XEP-0368's ALPN protocol name for client connections.
ALPN_XMPP_CLIENT = b"xmpp-client"


def generate_self_signed(domains: list[str], filename: str, days: int = 365) -> None:
    """Write a self-signed certificate and its key (one PEM file, mode 0600)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    san = [x509.DNSName(d) for d in domains]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    os.makedirs(os.path.dirname(filename) or ".", exist_ok=True)
    data = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(filename + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(filename + ".tmp", filename)


def pem_problem(filename: str, key: bool = True) -> str | None:
    """A one-line description of what is wrong with a PEM file, or None if usable."""
    try:
        with open(filename, "rb") as f:
            data = f.read()
    except OSError as e:
        return f"cannot read {filename}: {e.strerror}"
    if key:
        try:
            serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            return f"{filename} holds no usable unencrypted private key"
    else:
        try:
            cert = x509.load_pem_x509_certificate(data)
        except ValueError:
            return f"{filename} holds no PEM certificate"
        if cert.not_valid_after_utc < datetime.datetime.now(datetime.timezone.utc):
            return f"certificate in {filename} expired on {cert.not_valid_after_utc:%Y-%m-%d}"
    return None


def ca_file_problem(filename: str) -> str | None:
    """What is wrong with a PEM file of trusted certificates, or None."""
    try:
        with open(filename, "rb") as f:
            certs = x509.load_pem_x509_certificates(f.read())
    except OSError as e:
        return f"cannot read {filename}: {e.strerror}"
    except ValueError:
        return f"{filename} holds no PEM certificate"
    if not certs:
        return f"{filename} holds no PEM certificate"
    return None


def certificate_domains(filename: str) -> list[str]:
    """The DNS names a certificate covers (subjectAltName, else the common name)."""
    with open(filename, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        return [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def default_certificate_path(data_dir: str) -> str:
    return os.path.join(data_dir, "certs", "xmppd.pem")


def context_factory(certificate: str, private_key: str = "") -> ssl.CertificateOptions:
    """Server TLS options: TLS 1.2 or newer, the certificate chain from the PEM file."""
    with open(certificate, "rb") as f:
        cert_pem = f.read()
    key_pem = cert_pem
    if private_key:
        with open(private_key, "rb") as f:
            key_pem = f.read()
    certs = x509.load_pem_x509_certificates(cert_pem)
    pkey = serialization.load_pem_private_key(key_pem, password=None)
    from OpenSSL import crypto

    options = ssl.CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(pkey),
        certificate=crypto.X509.from_cryptography(certs[0]),
        extraCertChain=[crypto.X509.from_cryptography(c) for c in certs[1:]],
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )
    context = options.getContext()
    # XEP-0368 clients offer ALPN "xmpp-client". Twisted's own ALPN callback
    # answers an empty protocol when nothing matches, which OpenSSL turns into a
    # handshake failure; ours agrees to xmpp-client or declines ALPN politely.
    context.set_alpn_select_callback(_select_alpn)
    _economical(context)
    return options


def _economical(context: SSL.Context) -> None:
    """What an idle TLS connection keeps, kept small.

    ``MODE_RELEASE_BUFFERS``: OpenSSL frees a connection's record buffers
    (about 17 KiB each way) whenever they are empty, instead of keeping them for
    the connection's lifetime. Twisted's ``CertificateOptions`` sets it today;
    it is set here too so that xmppd does not depend on that default: without
    it every idle client costs about 23 KiB more (bench/RESULTS.rst). What is
    left, about 24 KiB per connection, is OpenSSL's own connection state, which
    no setting reached through pyOpenSSL changes.

    The session cache stays off (Twisted's default, ``enableSessions=False``):
    with it, the server would keep every session for resumption; xmppd offers
    none.
    """
    context.set_mode(SSL.MODE_RELEASE_BUFFERS)
    context.set_session_cache_mode(SSL.SESS_CACHE_OFF)


def _select_alpn(_connection, offered: list[bytes]) -> bytes:
    if ALPN_XMPP_CLIENT in offered:
        return ALPN_XMPP_CLIENT
    return SSL.NO_OVERLAPPING_PROTOCOLS
