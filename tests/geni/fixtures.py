"""Reusable builders for GENI tests: a test federation with a fixed clock, and forgeries.

Import from any test folder with ``from tests.geni.fixtures import ...`` (works under
``--import-mode=importlib``: pytest resolves ``tests`` from the rootdir). Nothing here reads the
real clock; everything is relative to :data:`NOW`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from lxml import etree

from primogeni.geni import cred_xml as cx
from primogeni.geni.cert import Gid, Identity, TrustStore, create_root, issue, new_key
from primogeni.geni.cred import Credential, Verifier, issue_credential
from primogeni.geni.urn import Urn, slice_urn, user_urn

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
AUTHORITY = "primo"
YEAR = timedelta(days=365)
REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED = REPO_ROOT.parent / "shared"
CREDENTIAL_SCHEMAS = SHARED / "schemas" / "credential"


@dataclass(frozen=True)
class Federation:
    """One authority ``primo`` (root, MA, SA, CM), two users, two slices, and an impostor root."""

    root: Identity
    ma: Identity
    sa: Identity
    cm: Identity
    alice: Identity
    bob: Identity
    alice_twin: Identity  # same URN as alice, different key
    slice_a: Gid
    slice_b: Gid
    evil_root: Identity  # claims the URN of primo's root, not trusted
    evil_sa: Identity

    @property
    def trust(self) -> TrustStore:
        return TrustStore.from_certs([self.root.gid.cert])


def authority_urn(name: str, authority: str = AUTHORITY) -> Urn:
    return Urn(authority, "authority", name)


def build_federation(now: datetime = NOW, authority: str = AUTHORITY) -> Federation:
    """Mint the whole test federation (about ten RSA keys: build it once per session)."""
    root = create_root(authority_urn("root", authority), now=now)
    ma = issue(root, authority_urn("ma", authority), now=now, lifetime=5 * YEAR, ca=True)
    sa = issue(root, authority_urn("sa", authority), now=now, lifetime=5 * YEAR, ca=True)
    cm = issue(root, authority_urn("cm", authority), now=now, lifetime=5 * YEAR, ca=True)
    alice = issue(ma, user_urn(authority, "alice"), now=now, lifetime=YEAR, ca=False, email="alice@example.org")
    bob = issue(ma, user_urn(authority, "bob"), now=now, lifetime=YEAR, ca=False)
    twin = issue(ma, user_urn(authority, "alice"), now=now, lifetime=YEAR, ca=False)
    slice_key = new_key().public_key()
    slice_a = issue(sa, slice_urn(authority, "proj1", "exp-a"), now=now, lifetime=YEAR, ca=False, public_key=slice_key)
    slice_b = issue(sa, slice_urn(authority, "proj1", "exp-b"), now=now, lifetime=YEAR, ca=False, public_key=slice_key)
    evil_root = create_root(authority_urn("root", authority), now=now)
    evil_sa = issue(evil_root, authority_urn("sa", authority), now=now, lifetime=5 * YEAR, ca=True)
    return Federation(root, ma, sa, cm, alice, bob, twin, slice_a, slice_b, evil_root, evil_sa)


class Clock:
    """A settable clock for verifiers: ``clock()`` returns :attr:`now`."""

    def __init__(self, now: datetime = NOW):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def make_verifier(federation: Federation, clock: Clock | None = None) -> Verifier:
    return Verifier(federation.trust, clock=clock or Clock())


def slice_credential(
    federation: Federation,
    user: Identity,
    slice_gid: Gid,
    *,
    now: datetime = NOW,
    lifetime: timedelta = timedelta(days=7),
) -> Credential:
    """What the SA gives a slice member: all slice privileges, delegatable."""
    privileges = ("refresh", "embed", "bind", "control", "info")
    return issue_credential(federation.sa, user.gid, slice_gid, privileges, now + lifetime, now=now)


def user_credential(federation: Federation, user: Identity, *, now: datetime = NOW) -> Credential:
    """What the MA gives a user about themselves."""
    privileges = ("refresh", "resolve", "info")
    return issue_credential(federation.ma, user.gid, user.gid, privileges, now + timedelta(days=30), now=now)


def forge(
    signer: Identity,
    owner: Gid,
    target: Gid,
    privileges: Sequence[tuple[str, bool]],
    expires: datetime,
    *,
    kind: str = "privilege",
    parent: Credential | None = None,
    sha256: bool = False,
) -> str:
    """Sign whatever we are told, with no rule checks (for hostile verifier tests)."""
    source = cx.parse_document(cx.as_bytes(parent.xml)) if parent is not None else None
    fields = cx.Fields(
        cx.new_ref_id(), kind, "1", owner, target, "", expires, list(privileges), None,
        cx.copy_element(source[0]) if source is not None else None,
    )  # fmt: skip
    holder = source.find("signatures") if source is not None else None
    signatures = list(holder) if holder is not None else []
    nsmap = dict(source.nsmap) if source is not None else None
    root = cx.new_document(cx.credential_element(fields), signatures, nsmap)
    cx.sign(root, fields.ref_id, signer, sha256=sha256)
    return cx.serialize(root)


def raw_certificate(
    issuer_key: rsa.RSAPrivateKey,
    issuer_cert: x509.Certificate,
    urn: Urn,
    *,
    now: datetime = NOW,
    ca: bool = False,
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A GENI-shaped certificate signed by any key, CA or not (for hostile chain tests)."""
    key = new_key()
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, f"{urn.type}.{urn.name}")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + YEAR)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(urn))]), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )
    return cert, key


def credential_schema(flavour: str) -> etree.XMLSchema:
    """The offline credential XSD: ``"geni-v2"`` or ``"protogeni"`` (loaded from its own folder)."""
    path = CREDENTIAL_SCHEMAS / flavour / "credential.xsd"
    return etree.XMLSchema(etree.parse(str(path)))
