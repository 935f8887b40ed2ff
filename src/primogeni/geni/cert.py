"""GENI identities (GIDs): X.509 certificates that carry a URN, and the authorities that issue them.

* :class:`Gid` is a parsed certificate: its URN, UUID and e-mail from ``subjectAltName``, whether
  it is a CA, and the issuer chain that travelled with it (a user file holds user + MA).
* :class:`Identity` is a GID plus its private key; :func:`create_root` and :func:`issue` mint
  them (RSA 2048, SHA-256).
* :class:`TrustStore` holds the trusted roots and checks a GID's chain to one of them at a given
  instant: signatures, validity dates, the CA flag of every issuer, and that a non-root issuer
  only issues names under its own top authority.

Nothing here reads a clock: every call that depends on time takes ``now``.
"""

from __future__ import annotations

import ipaddress
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import overload

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from primogeni.geni.codes import GeniCode
from primogeni.geni.errors import CertificateError, UrnError
from primogeni.geni.urn import Urn

KEY_BITS = 2048
ROOT_LIFETIME = timedelta(days=3650)
# Certificates start this long before ``now`` so that a peer whose clock lags still accepts them.
BACKDATE = timedelta(minutes=5)
MAX_CHAIN = 8
_CN_MAX = 64

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _bad(message: str) -> CertificateError:
    return CertificateError(GeniCode.BADARGS, message)


def _untrusted(message: str) -> CertificateError:
    return CertificateError(GeniCode.CREDENTIAL_SIGNER_UNTRUSTED, message)


def describe(cert: x509.Certificate) -> str:
    """A short name for messages: the certificate's subject DN."""
    return cert.subject.rfc4514_string() or f"serial {cert.serial_number}"


def _san_values(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise _bad(f"certificate {describe(cert)} has no subjectAltName") from None
    return san.get_values_for_type(x509.UniformResourceIdentifier), san.get_values_for_type(x509.RFC822Name)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


@dataclass(frozen=True)
class Gid:
    """A GENI identity certificate (leaf) and the issuer chain that came with it."""

    cert: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    urn: Urn
    uuid: uuid.UUID | None
    email: str | None
    is_ca: bool

    @classmethod
    def from_certificate(cls, cert: x509.Certificate, chain: Sequence[x509.Certificate] = ()) -> Gid:
        """Read URN, UUID and e-mail from the leaf's subjectAltName."""
        try:
            uris, emails = _san_values(cert)
            is_ca = _is_ca(cert)
        except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as err:
            raise _bad(f"certificate {describe(cert)} has malformed extensions: {err}") from None
        urns = [u for u in uris if u.lower().startswith("urn:publicid:")]
        if len(urns) != 1:
            raise _bad(f"certificate {describe(cert)} must carry exactly one urn:publicid URI, found {len(urns)}")
        try:
            urn = Urn.parse(urns[0])
        except UrnError as err:
            raise _bad(f"certificate {describe(cert)}: {err.reason}") from None
        uuids = [u for u in uris if u.lower().startswith("urn:uuid:")]
        try:
            ident = uuid.UUID(uuids[0][len("urn:uuid:") :]) if uuids else None
        except ValueError:
            raise _bad(f"certificate {describe(cert)} has a malformed urn:uuid {uuids[0]!r}") from None
        return cls(cert, tuple(chain), urn, ident, emails[0] if emails else None, is_ca)

    @classmethod
    def from_pem(cls, data: str | bytes) -> Gid:
        """The first certificate is the leaf; the others are its issuer chain, in file order."""
        raw = data.encode("ascii", "replace") if isinstance(data, str) else data
        try:
            certs = x509.load_pem_x509_certificates(raw)
        except ValueError as err:
            raise _bad(f"not a PEM certificate: {err}") from None
        return cls.from_certificate(certs[0], certs[1:])

    @classmethod
    def from_der(cls, der: bytes) -> Gid:
        """A single DER certificate (no chain)."""
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError as err:
            raise _bad(f"not a DER certificate: {err}") from None
        return cls.from_certificate(cert)

    def pem(self, with_chain: bool = True) -> str:
        """PEM text of the leaf, followed by its chain when ``with_chain``."""
        certs = (self.cert, *self.chain) if with_chain else (self.cert,)
        return "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certs)

    def public_key_der(self) -> bytes:
        """The SubjectPublicKeyInfo, DER: two GIDs hold the same key iff these bytes match."""
        return self.cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def same_key(self, other: Gid) -> bool:
        """Same URN and same public key (the certificates themselves may differ)."""
        return self.urn == other.urn and self.public_key_der() == other.public_key_der()


@dataclass(frozen=True)
class Identity:
    """A GID and its private key."""

    gid: Gid
    key: rsa.RSAPrivateKey

    def key_pem(self) -> str:
        """The private key, unencrypted PEM (``BEGIN RSA PRIVATE KEY``, what GENI tools read)."""
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        ).decode("ascii")

    def save(self, cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]) -> None:
        """Write the certificate (with chain) and the key; the key file is mode 0600."""
        Path(cert_path).write_text(self.gid.pem(with_chain=True), encoding="ascii")
        _write_private(Path(key_path), self.key_pem().encode("ascii"))

    @classmethod
    def load(cls, cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]) -> Identity:
        """Read a certificate file (leaf + chain) and its key; they must match."""
        gid = Gid.from_pem(Path(cert_path).read_bytes())
        try:
            key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
        except (ValueError, TypeError) as err:
            raise _bad(f"{key_path}: not an unencrypted PEM private key: {err}") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise _bad(f"{key_path}: not an RSA key")
        identity = cls(gid, key)
        if _spki(key.public_key()) != gid.public_key_der():
            raise _bad(f"{key_path} does not hold the key of {cert_path} ({gid.urn})")
        return identity


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


def _spki(key: rsa.RSAPublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _subject(urn: Urn) -> x509.Name:
    common = urn.name if urn.type == "user" else f"{urn.type}.{urn.name}"
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, urn.authority[:_CN_MAX]),
            x509.NameAttribute(NameOID.COMMON_NAME, common[:_CN_MAX]),
        ]
    )


def _key_usage(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=True,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _alt_names(
    urn: Urn, email: str | None, dns_names: Iterable[str], ip_addresses: Iterable[IpAddress]
) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(str(urn)),
        x509.UniformResourceIdentifier(f"urn:uuid:{uuid.uuid4()}"),
    ]
    if email:
        names.append(x509.RFC822Name(email))
    names.extend(x509.DNSName(d) for d in dns_names)
    names.extend(x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses)
    return x509.SubjectAlternativeName(names)


def _build(
    *,
    urn: Urn,
    public_key: rsa.RSAPublicKey,
    issuer_name: x509.Name,
    issuer_key: rsa.RSAPrivateKey,
    now: datetime,
    lifetime: timedelta,
    ca: bool,
    email: str | None,
    dns_names: Iterable[str],
    ip_addresses: Iterable[IpAddress],
) -> x509.Certificate:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    builder = (
        x509.CertificateBuilder()
        .subject_name(_subject(urn))
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(_key_usage(ca), critical=True)
        .add_extension(_alt_names(urn, email, dns_names, ip_addresses), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    )
    return builder.sign(issuer_key, hashes.SHA256())


def new_key() -> rsa.RSAPrivateKey:
    """A fresh RSA 2048 key."""
    return rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)


def create_root(
    urn: Urn, *, now: datetime, lifetime: timedelta = ROOT_LIFETIME, email: str | None = None
) -> Identity:
    """A self-signed CA (a federation's trust root)."""
    key = new_key()
    cert = _build(
        urn=urn,
        public_key=key.public_key(),
        issuer_name=_subject(urn),
        issuer_key=key,
        now=now,
        lifetime=lifetime,
        ca=True,
        email=email,
        dns_names=(),
        ip_addresses=(),
    )
    return Identity(Gid.from_certificate(cert), key)


@overload
def issue(
    issuer: Identity,
    urn: Urn,
    *,
    now: datetime,
    lifetime: timedelta,
    ca: bool,
    email: str | None = ...,
    dns_names: Iterable[str] = ...,
    ip_addresses: Iterable[IpAddress | str] = ...,
    public_key: None = ...,
) -> Identity: ...
@overload
def issue(
    issuer: Identity,
    urn: Urn,
    *,
    now: datetime,
    lifetime: timedelta,
    ca: bool,
    email: str | None = ...,
    dns_names: Iterable[str] = ...,
    ip_addresses: Iterable[IpAddress | str] = ...,
    public_key: rsa.RSAPublicKey,
) -> Gid: ...
def issue(
    issuer: Identity,
    urn: Urn,
    *,
    now: datetime,
    lifetime: timedelta,
    ca: bool,
    email: str | None = None,
    dns_names: Iterable[str] = (),
    ip_addresses: Iterable[IpAddress | str] = (),
    public_key: rsa.RSAPublicKey | None = None,
) -> Identity | Gid:
    """Issue a certificate for ``urn`` signed by ``issuer`` (which must be a CA).

    Generates the key and returns an :class:`Identity` unless ``public_key`` is given, then
    returns a :class:`Gid`. The new GID's chain is the issuer's certificate and its chain.
    """
    if not issuer.gid.is_ca:
        raise _bad(f"{issuer.gid.urn} is not a CA and cannot issue certificates")
    key: rsa.RSAPrivateKey | None = None
    if public_key is None:
        key = new_key()
        public_key = key.public_key()
    cert = _build(
        urn=urn,
        public_key=public_key,
        issuer_name=issuer.gid.cert.subject,
        issuer_key=issuer.key,
        now=now,
        lifetime=lifetime,
        ca=ca,
        email=email,
        dns_names=tuple(dns_names),
        ip_addresses=tuple(ipaddress.ip_address(a) for a in ip_addresses),
    )
    gid = Gid.from_certificate(cert, (issuer.gid.cert, *issuer.gid.chain))
    return Identity(gid, key) if key is not None else gid


class TrustStore:
    """The trusted roots, and the chain check every signer and TLS peer goes through."""

    def __init__(self, roots: Iterable[x509.Certificate]):
        self._roots = tuple(dict.fromkeys(roots))
        self._root_set = frozenset(self._roots)

    @classmethod
    def from_dir(cls, path: str | os.PathLike[str]) -> TrustStore:
        """Every ``*.pem`` file in ``path`` (each may hold several certificates)."""
        certs: list[x509.Certificate] = []
        for file in sorted(Path(path).glob("*.pem")):
            try:
                certs.extend(x509.load_pem_x509_certificates(file.read_bytes()))
            except ValueError as err:
                raise _bad(f"{file}: not a PEM certificate file: {err}") from None
        return cls(certs)

    @classmethod
    def from_certs(cls, certs: Iterable[x509.Certificate]) -> TrustStore:
        """A store holding exactly these roots."""
        return cls(certs)

    @property
    def roots(self) -> tuple[x509.Certificate, ...]:
        """The trusted certificates, in the order they were given."""
        return self._roots

    def bundle_pem(self) -> str:
        """All roots as one PEM text (for ``ssl.SSLContext.load_verify_locations(cadata=)``)."""
        return "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in self._roots)

    def verify(self, gid: Gid, now: datetime) -> None:
        """Check that ``gid`` chains to a root through ``gid.chain`` and is valid at ``now``.

        Raises :class:`CertificateError` (CREDENTIAL_SIGNER_UNTRUSTED) naming the certificate
        that failed.
        """
        if len(gid.chain) > MAX_CHAIN:
            raise _untrusted(f"chain of {gid.urn} is longer than {MAX_CHAIN} certificates")
        current, current_urn = gid.cert, gid.urn
        _check_dates(current, now)
        for position in range(len(gid.chain) + 1):
            if current in self._root_set:
                return
            root = self._issuing_root(current)
            if root is not None:
                _check_issuer(root, None, current, current_urn, now)
                return
            if position == len(gid.chain):
                break
            issuer = gid.chain[position]
            issuer_urn = _issuer_urn(issuer)
            _check_signed(current, issuer)
            _check_issuer(issuer, issuer_urn, current, current_urn, now)
            current, current_urn = issuer, issuer_urn
        raise _untrusted(f"{describe(current)} ({current_urn}) is not issued by a trusted root")

    def _issuing_root(self, cert: x509.Certificate) -> x509.Certificate | None:
        for root in self._roots:
            if root.subject != cert.issuer:
                continue
            try:
                cert.verify_directly_issued_by(root)
            except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
                continue
            return root
        return None


def _issuer_urn(issuer: x509.Certificate) -> Urn:
    try:
        return Gid.from_certificate(issuer).urn
    except CertificateError as err:
        raise _untrusted(f"issuer {describe(issuer)}: {err.reason}") from None


def _check_dates(cert: x509.Certificate, now: datetime) -> None:
    if now < cert.not_valid_before_utc:
        raise _untrusted(f"{describe(cert)} is not valid before {cert.not_valid_before_utc.isoformat()}")
    if now > cert.not_valid_after_utc:
        raise _untrusted(f"{describe(cert)} expired at {cert.not_valid_after_utc.isoformat()}")


def _check_signed(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        raise _untrusted(f"{describe(cert)} is not signed by {describe(issuer)}") from None


def _check_issuer(
    issuer: x509.Certificate, issuer_urn: Urn | None, cert: x509.Certificate, cert_urn: Urn, now: datetime
) -> None:
    """``issuer`` signed ``cert``: it must be a valid CA and (unless a root) of the same top authority."""
    _check_dates(issuer, now)
    if not _is_ca(issuer):
        raise _untrusted(f"{describe(issuer)} is not a CA but issued {describe(cert)} ({cert_urn})")
    if issuer_urn is not None and issuer_urn.top_authority != cert_urn.top_authority:
        raise _untrusted(
            f"{issuer_urn} may only issue names under authority {issuer_urn.top_authority!r}, not {cert_urn}"
        )


__all__ = ["Gid", "Identity", "TrustStore", "create_root", "describe", "issue", "new_key"]
