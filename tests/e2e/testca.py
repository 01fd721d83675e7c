"""Certificates for federation tests: a test CA and servers' certificates.

Server-to-server authentication (RFC 6120 §13.7.2, XEP-0178) trusts a
certificate when its chain leads to a CA the receiving server trusts and a
subjectAltName dNSName matches the sending domain; then SASL EXTERNAL can
replace dialback. So the interop tests need a CA of their own that every
server of the test is told to trust (``ca_file``), certificates from it for
each domain and its subdomains (``conference.<domain>``, and ``*.<domain>``
for any other service), and, for the dialback runs, certificates no server
trusts: self-signed ones, or from a CA that nobody was given.

XEP-0178 also names id-on-xmppAddr; Prosody and ejabberd accept a dNSName
alone, and that is what these certificates carry (``names`` gives more).

Keys are P-256 (fast to make, accepted by OpenSSL, LuaSec and Erlang's ssl).
A certificate is for both serverAuth and clientAuth: a server presents the
same certificate when it connects out to another server.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: how long the certificates are valid: a test run, and clock skew before it
VALIDITY = datetime.timedelta(days=7)
BACKDATE = datetime.timedelta(hours=1)


@dataclass(frozen=True)
class ServerCertificate:
    """PEM files of one server's certificate."""

    domain: str
    #: every dNSName of the certificate
    names: tuple[str, ...]
    #: the server's certificate alone
    cert: Path
    #: the private key (PKCS#8, unencrypted)
    key: Path
    #: the certificate followed by its issuer's (what a server sends)
    chain: Path
    #: chain and key in one file (ejabberd's ``certfiles``, xmppd's ``certificate``)
    combined: Path
    #: the CA that issued it (None: self-signed); no server is told to trust it
    #: unless the test hands it out
    ca_file: Path | None


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "xmppd tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def dns_names(domain: str, names: Iterable[str] = (), wildcard: bool = True) -> tuple[str, ...]:
    """``domain``, ``conference.<domain>``, ``*.<domain>`` (unless not
    ``wildcard``) and ``names``, without duplicates, in that order."""
    result = [domain, f"conference.{domain}"]
    if wildcard:
        result.append(f"*.{domain}")
    for name in names:
        if name not in result:
            result.append(name)
    return tuple(result)


def _leaf(subject_key: ec.EllipticCurvePrivateKey, names: tuple[str, ...],
          issuer: x509.Name, issuer_key: ec.EllipticCurvePrivateKey,
          issuer_cert: x509.Certificate | None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(_name(names[0]))
               .issuer_name(issuer)
               .public_key(subject_key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - BACKDATE)
               .not_valid_after(now + VALIDITY)
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                              critical=False)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False,
                                            key_agreement=True, key_cert_sign=False,
                                            crl_sign=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                     ExtendedKeyUsageOID.CLIENT_AUTH]),
                              critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key.public_key()),
                              critical=False))
    if issuer_cert is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key()),
            critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(directory: Path, domain: str, names: tuple[str, ...], cert: x509.Certificate,
           key: ec.EllipticCurvePrivateKey, issuer_cert: x509.Certificate | None,
           ca_file: Path | None) -> ServerCertificate:
    directory.mkdir(parents=True, exist_ok=True)
    paths = {kind: directory / f"{domain}.{kind}.pem" for kind in ("cert", "key", "chain", "combined")}
    chain = _pem(cert) + (_pem(issuer_cert) if issuer_cert is not None else b"")
    paths["cert"].write_bytes(_pem(cert))
    paths["key"].write_bytes(_key_pem(key))
    paths["key"].chmod(0o600)
    paths["chain"].write_bytes(chain)
    paths["combined"].write_bytes(chain + _key_pem(key))
    paths["combined"].chmod(0o600)
    return ServerCertificate(domain, names, ca_file=ca_file, **paths)


class TestCA:
    """A certificate authority for one test session; ``ca_file`` is what the
    servers that should trust it are given.

    ``TestCA(dir)`` for the trusted one; another ``TestCA(dir2, "untrusted
    CA")`` whose ``ca_file`` nobody gets issues certificates that fail
    verification as "unable to get local issuer certificate".
    """

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, directory: Path, name: str = "xmppd test CA"):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.name = name
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        subject = _name(name)
        self.cert = (x509.CertificateBuilder()
                     .subject_name(subject)
                     .issuer_name(subject)
                     .public_key(self._key.public_key())
                     .serial_number(x509.random_serial_number())
                     .not_valid_before(now - BACKDATE)
                     .not_valid_after(now + VALIDITY)
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                                  key_encipherment=False, data_encipherment=False,
                                                  key_agreement=False, key_cert_sign=True,
                                                  crl_sign=True, encipher_only=False,
                                                  decipher_only=False), critical=True)
                     .add_extension(x509.SubjectKeyIdentifier.from_public_key(
                         self._key.public_key()), critical=False)
                     .sign(self._key, hashes.SHA256()))
        self.ca_file = self.directory / "ca.pem"
        self.ca_file.write_bytes(_pem(self.cert))

    def issue(self, domain: str, names: Iterable[str] = (), *,
              wildcard: bool = True) -> ServerCertificate:
        """A certificate for ``domain`` (see :func:`dns_names` for its names)."""
        all_names = dns_names(domain, names, wildcard)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _leaf(key, all_names, self.cert.subject, self._key, self.cert)
        return _write(self.directory, domain, all_names, cert, key, self.cert, self.ca_file)


def self_signed(directory: Path, domain: str, names: Iterable[str] = (), *,
                wildcard: bool = True) -> ServerCertificate:
    """A self-signed certificate for ``domain``: right names, trusted by no
    one (Prosody calls it "self-signed"; dialback is what is left)."""
    all_names = dns_names(domain, names, wildcard)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _leaf(key, all_names, _name(all_names[0]), key, None)
    return _write(Path(directory), domain, all_names, cert, key, None, None)
