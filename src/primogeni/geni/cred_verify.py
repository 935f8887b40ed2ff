"""XML-DSig verification of a credential document (libxmlsec1, in-process).

:func:`verify_signatures` is the cryptographic step of :class:`primogeni.geni.cred.Verifier`:
given a parsed document and its ``<credential>`` elements by ``xml:id``, it checks that

* every ``xml:id`` in the document is unique (so an id cannot name a forged twin),
* each ``<Signature>`` has the one shape GENI uses — one ``Reference`` to ``#<credential id>``,
  only enveloped-signature / C14N transforms, RSA with SHA-1 or SHA-2, no ``Object`` — and that
  the element libxml2 resolves for that id is exactly the credential element we read,
* every credential element is covered by exactly one signature, and
* each signature verifies with the key of the leaf certificate in its ``KeyInfo/X509Data``.

It returns each credential's signer (leaf + chain, as a :class:`Gid`); chain trust and the
signer rules are the caller's business. Every failure is CREDENTIAL_INVALID.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping

import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree
from xmlsec import constants as xc

from primogeni.geni.cert import Gid
from primogeni.geni.cred_xml import DSIG_NS, XML_ID, invalid
from primogeni.geni.errors import CertificateError

_C14N_TRANSFORMS = (
    xc.TransformInclC14N,
    xc.TransformInclC14NWithComments,
    xc.TransformInclC14N11,
    xc.TransformInclC14N11WithComments,
    xc.TransformExclC14N,
    xc.TransformExclC14NWithComments,
)
_SIGNATURE_TRANSFORMS = (xc.TransformRsaSha1, xc.TransformRsaSha256, xc.TransformRsaSha384, xc.TransformRsaSha512)
_DIGEST_TRANSFORMS = (xc.TransformSha1, xc.TransformSha256, xc.TransformSha384, xc.TransformSha512)
# What libxmlsec1 may run at all (belt and braces behind the shape check below).
_ENABLED_REFERENCE = (xc.TransformEnveloped, *_C14N_TRANSFORMS, *_DIGEST_TRANSFORMS)
_ENABLED_SIGNATURE = (*_C14N_TRANSFORMS, *_SIGNATURE_TRANSFORMS)
_C14N = {t.href for t in _C14N_TRANSFORMS}
_SIGNATURE_METHODS = {t.href for t in _SIGNATURE_TRANSFORMS}
_DIGESTS = {t.href for t in _DIGEST_TRANSFORMS}
_TRANSFORMS = _C14N | {xc.TransformEnveloped.href}
_NCNAME = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]*$")
MAX_SIGNER_CERTS = 8


def _ds(name: str) -> str:
    return f"{{{DSIG_NS}}}{name}"


def check_unique_ids(root: etree._Element) -> None:
    """Refuse a document where two elements share an ``xml:id`` (the signature-wrapping trick)."""
    seen: set[str] = set()
    for elem in root.iter():
        value = elem.get(XML_ID) if isinstance(elem.tag, str) else None
        if value is None:
            continue
        if value in seen:
            raise invalid(f"xml:id {value!r} appears more than once")
        seen.add(value)


def _children(elem: etree._Element) -> list[etree._Element]:
    return [c for c in elem if isinstance(c.tag, str)]


def _one(elem: etree._Element, name: str, where: str) -> etree._Element:
    found = [c for c in _children(elem) if c.tag == _ds(name)]
    if len(found) != 1:
        raise invalid(f"{where} must have exactly one {name}, found {len(found)}")
    return found[0]


def _algorithm(elem: etree._Element, allowed: set[str], where: str) -> None:
    value = elem.get("Algorithm")
    if value not in allowed:
        raise invalid(f"{where} uses algorithm {value!r}, which is not accepted")


def _reference_id(signature: etree._Element, where: str) -> str:
    """Check the Signature's shape; return the id its one Reference points at."""
    allowed = {_ds("SignedInfo"), _ds("SignatureValue"), _ds("KeyInfo")}
    for child in _children(signature):
        if child.tag not in allowed:
            raise invalid(f"{where} holds an unexpected element {child.tag!s}")
    signed_info = _one(signature, "SignedInfo", where)
    _one(signature, "SignatureValue", where)
    _algorithm(_one(signed_info, "CanonicalizationMethod", where), _C14N, f"{where} CanonicalizationMethod")
    _algorithm(_one(signed_info, "SignatureMethod", where), _SIGNATURE_METHODS, f"{where} SignatureMethod")
    reference = _one(signed_info, "Reference", where)
    uri = reference.get("URI") or ""
    if not uri.startswith("#") or not _NCNAME.match(uri[1:]):
        raise invalid(f"{where} Reference URI {uri!r} must be '#' and a credential's xml:id")
    _algorithm(_one(reference, "DigestMethod", where), _DIGESTS, f"{where} DigestMethod")
    for transforms in (c for c in _children(reference) if c.tag == _ds("Transforms")):
        for transform in _children(transforms):
            if transform.tag != _ds("Transform") or _children(transform):
                raise invalid(f"{where} has a Transform this verifier does not accept")
            _algorithm(transform, _TRANSFORMS, f"{where} Transform")
    return uri[1:]


def _signer_certificates(signature: etree._Element, where: str) -> list[x509.Certificate]:
    certs: list[x509.Certificate] = []
    for key_info in (c for c in _children(signature) if c.tag == _ds("KeyInfo")):
        for data in (c for c in _children(key_info) if c.tag == _ds("X509Data")):
            for elem in (c for c in _children(data) if c.tag == _ds("X509Certificate")):
                try:
                    der = base64.b64decode("".join((elem.text or "").split()), validate=True)
                    certs.append(x509.load_der_x509_certificate(der))
                except (binascii.Error, ValueError) as err:
                    raise invalid(f"{where} has a malformed X509Certificate: {err}") from None
    if not certs:
        raise invalid(f"{where} has no KeyInfo/X509Data/X509Certificate naming its signer")
    if len(certs) > MAX_SIGNER_CERTS:
        raise invalid(f"{where} carries more than {MAX_SIGNER_CERTS} certificates")
    return certs


def _order_chain(certs: list[x509.Certificate]) -> tuple[x509.Certificate, list[x509.Certificate]]:
    """Leaf first, then each issuer by name; tolerate a KeyInfo that lists them in another order."""
    issued_by_other = {c.issuer for c in certs if c.issuer != c.subject}
    leaves = [c for c in certs if c.subject not in issued_by_other]
    leaf = certs[0] if certs[0] in leaves or not leaves else leaves[0]
    rest = [c for c in certs if c is not leaf]
    chain: list[x509.Certificate] = []
    current = leaf
    while rest:
        issuer = next((c for c in rest if c.subject == current.issuer), None)
        if issuer is None:
            break
        chain.append(issuer)
        rest.remove(issuer)
        current = issuer
    return leaf, chain + rest


def _signer(signature: etree._Element, where: str) -> Gid:
    leaf, chain = _order_chain(_signer_certificates(signature, where))
    try:
        return Gid.from_certificate(leaf, chain)
    except CertificateError as err:
        raise invalid(f"{where} signer: {err.reason}") from None


def _verify_one(signature: etree._Element, signer: Gid, where: str) -> None:
    context = xmlsec.SignatureContext()
    for transform in _ENABLED_REFERENCE:
        context.enable_reference_transform(transform)
    for transform in _ENABLED_SIGNATURE:
        context.enable_signature_transform(transform)
    der = signer.cert.public_bytes(serialization.Encoding.DER)
    try:
        context.key = xmlsec.Key.from_memory(der, xc.KeyDataFormatCertDer, None)
        context.verify(signature)
    except xmlsec.VerificationError:
        raise invalid(f"{where} does not verify: the signed credential was altered") from None
    except xmlsec.Error as err:
        raise invalid(f"{where} cannot be checked: {err}") from None


def verify_signatures(root: etree._Element, credentials: Mapping[str, etree._Element]) -> dict[str, Gid]:
    """Verify every signature of the document; return the signer of each credential id."""
    check_unique_ids(root)
    holder = root.find("signatures")
    if holder is None:
        raise invalid("credential is not signed (no <signatures>)")
    signatures = _children(holder)
    if any(s.tag != _ds("Signature") for s in signatures):
        raise invalid("<signatures> may hold only XML-DSig Signature elements")
    if len(signatures) != len(credentials):
        raise invalid(f"{len(credentials)} credential(s) but {len(signatures)} signature(s)")
    signers: dict[str, Gid] = {}
    for signature in signatures:
        where = f"signature {signature.get(XML_ID) or '(no id)'}"
        ref_id = _reference_id(signature, where)
        element = credentials.get(ref_id)
        if element is None:
            raise invalid(f"{where} references #{ref_id}, which is not a credential of this document")
        if ref_id in signers:
            raise invalid(f"credential {ref_id} is signed more than once")
        resolved = root.xpath("id($ref)", ref=ref_id)
        if not isinstance(resolved, list) or len(resolved) != 1 or resolved[0] is not element:
            raise invalid(f"{where}: #{ref_id} does not resolve to the credential element")
        signer = _signer(signature, where)
        _verify_one(signature, signer, where)
        signers[ref_id] = signer
    return signers


__all__ = ["check_unique_ids", "verify_signatures"]
