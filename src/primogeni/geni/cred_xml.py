"""The XML side of GENI credentials: the safe parser, element layout, times, and XML-DSig signing.

:mod:`primogeni.geni.cred` owns the meaning of a credential; this module owns its bytes:

* :func:`parse_document` — the only way credential XML enters the process: size-limited, no
  DOCTYPE, no entities, no network, no huge trees (:mod:`primogeni.geni.xmlsafe`);
* :func:`credential_element` / :func:`new_document` — the ``geni_sfa`` v3 layout (what
  geni-tools and ProtoGENI write), with an optional ``<parent>`` and ``<ticket>``;
* :func:`sign` — an enveloped XML-DSig ``<Signature xml:id="Sig_<ref>">`` over one
  ``<credential xml:id="<ref>">`` (C14N 2001, RSA-SHA1, SHA-1 digest, like the references),
  made in-process with libxmlsec1, its ``KeyInfo/X509Data`` holding the signer's chain.
"""

from __future__ import annotations

import base64
import functools
import secrets
from collections.abc import Iterable, Sequence
from copy import deepcopy
from dataclasses import dataclass
from datetime import datetime

import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree
from xmlsec import constants as xc

from primogeni.geni import xmlsafe
from primogeni.geni.cert import Gid, Identity
from primogeni.geni.codes import GeniCode
from primogeni.geni.errors import CertificateError, CredentialError, UrnError
from primogeni.geni.times import parse_rfc3339, rfc3339
from primogeni.geni.urn import Urn

DSIG_NS = "http://www.w3.org/2000/09/xmldsig#"
XML_NS = "http://www.w3.org/XML/1998/namespace"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
XML_ID = f"{{{XML_NS}}}id"
SCHEMA_LOCATION = "http://www.geni.net/resources/credential/2/credential.xsd"
MAX_BYTES = 1024 * 1024


def invalid(message: str) -> CredentialError:
    """A CREDENTIAL_INVALID error (malformed, altered, or not a kind we accept)."""
    return CredentialError(GeniCode.CREDENTIAL_INVALID, message)


def as_bytes(data: str | bytes) -> bytes:
    """The document's bytes (``str`` is encoded as UTF-8)."""
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    raise invalid(f"a credential must be XML text, not {type(data).__name__}")


def _refused(what: str, reason: xmlsafe.Refusal, detail: str) -> CredentialError:
    if reason is xmlsafe.Refusal.TOO_LARGE:
        return invalid(f"{what} is {detail} bytes; the limit is {MAX_BYTES} (1 MiB)")
    if reason is xmlsafe.Refusal.DTD_SEEN:
        return invalid(f"{what} contains a DOCTYPE or ENTITY declaration, which is not allowed")
    if reason is xmlsafe.Refusal.MALFORMED:
        return invalid(f"{what} is not well-formed XML: {detail}")
    return invalid(f"{what} contains a DOCTYPE, which is not allowed")


def parse_document(raw: bytes, what: str = "credential") -> etree._Element:
    """Parse untrusted XML safely; refuse DOCTYPEs, entity declarations and oversized input.

    Comments and PIs are kept, so that :func:`leaf_text` can refuse text a comment splits.
    """
    return xmlsafe.parse(
        raw,
        raw,
        max_bytes=MAX_BYTES,
        remove_comments=False,
        declares_dtd=xmlsafe.dtd_anywhere,
        refuse=functools.partial(_refused, what),
    )


format_time = rfc3339
"""RFC 3339 in UTC with a ``Z``, whole seconds; ValueError for a naive time."""


def parse_time(text: str, what: str) -> datetime:
    """An xs:dateTime / RFC 3339 time; one without a zone is taken as UTC."""
    try:
        return parse_rfc3339(text)
    except ValueError:
        raise invalid(f"{what} {text[:40]!r} is not an RFC 3339 time") from None


def new_ref_id() -> str:
    """A fresh ``xml:id`` for a credential: ``ref`` + 32 hex digits (unique across delegations)."""
    return f"ref{secrets.token_hex(16)}"


def leaf_text(elem: etree._Element, what: str) -> str:
    """The text of a field element, which must not contain elements, comments or PIs.

    Comments are refused because C14N drops them: text split by a comment would verify and yet
    read differently.
    """
    if len(elem):
        raise invalid(f"<{what}> must hold text only")
    return elem.text or ""


def element_children(elem: etree._Element, what: str) -> list[etree._Element]:
    """The element children of ``elem`` (comments skipped); stray text is refused."""
    stray = [t.strip() for t in (elem.text, *(c.tail for c in elem)) if t and t.strip()]
    if stray:
        raise invalid(f"<{what}> holds stray text {stray[0][:40]!r}")
    out: list[etree._Element] = []
    for child in elem:
        if isinstance(child.tag, str):
            out.append(child)
    return out


class Cursor:
    """Walks a ``<credential>``'s children in schema order."""

    def __init__(self, children: list[etree._Element], where: str):
        self._children = children
        self._at = 0
        self._where = where

    def peek(self) -> str | None:
        """The tag of the next child, or None at the end."""
        return str(self._children[self._at].tag) if self._at < len(self._children) else None

    def take(self, tag: str) -> etree._Element:
        """The next child, which must be ``<tag>``."""
        if self.peek() != tag:
            found = self.peek()
            raise invalid(f"{self._where}: expected <{tag}>, found {f'<{found}>' if found else 'nothing'}")
        self._at += 1
        return self._children[self._at - 1]

    def text(self, tag: str) -> str:
        """The text of the next child, which must be a text-only ``<tag>``."""
        return leaf_text(self.take(tag), tag)

    def optional_text(self, tag: str) -> str | None:
        """Like :meth:`text` when the next child is ``<tag>``, else None."""
        return self.text(tag) if self.peek() == tag else None

    def done(self) -> None:
        """Refuse anything left over."""
        if self.peek() is not None:
            raise invalid(f"{self._where}: unexpected <{self.peek()}>")


def read_bool(text: str, what: str) -> bool:
    """An xs:boolean (``true``/``false``/``1``/``0``)."""
    value = text.strip()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise invalid(f"<{what}> must be true or false, not {value!r}")


def read_urn(text: str | None, gid: Gid, what: str) -> Urn:
    """An optional ``<owner_urn>``/``<target_urn>``, which must name the certificate's URN."""
    if text is None:
        return gid.urn
    try:
        urn = Urn.parse(text.strip())
    except UrnError as err:
        raise invalid(f"<{what}>: {err.reason}") from None
    if urn != gid.urn:
        raise invalid(f"<{what}> {urn} does not match the certificate's URN {gid.urn}")
    return urn


def gid_text(gid: Gid) -> str:
    """The leaf certificate as PEM (no chain), as geni-tools writes ``owner_gid``/``target_gid``."""
    return gid.pem(with_chain=False)


def read_gid(text: str, what: str) -> Gid:
    """A GID from PEM (leaf first, optional chain) or from bare base64 DER (ProtoGENI style)."""
    stripped = text.strip()
    try:
        if stripped.startswith("-----BEGIN"):
            return Gid.from_pem(stripped)
        return Gid.from_der(base64.b64decode("".join(stripped.split()), validate=True))
    except (CertificateError, ValueError) as err:
        reason = err.reason if isinstance(err, CertificateError) else str(err)
        raise invalid(f"<{what}> is not a usable GENI certificate: {reason}") from None


@dataclass(frozen=True)
class Fields:
    """Everything written into one ``<credential>`` element."""

    ref_id: str
    type: str
    serial: str
    owner: Gid
    target: Gid
    uuid: str
    expires: datetime
    privileges: Sequence[tuple[str, bool]]
    ticket: tuple[bool, datetime, str] | None = None  # (can_delegate, redeem_before, rspec XML)
    parent: etree._Element | None = None  # the parent's <credential>, copied as is


def _sub(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    elem = etree.SubElement(parent, tag)
    if text is not None:
        elem.text = text
    return elem


def _bool(value: bool) -> str:
    return "true" if value else "false"


def credential_element(fields: Fields) -> etree._Element:
    """Build ``<credential xml:id=…>`` in the schema's order."""
    cred = etree.Element("credential")
    cred.set(XML_ID, fields.ref_id)
    _sub(cred, "type", fields.type)
    _sub(cred, "serial", fields.serial)
    _sub(cred, "owner_gid", gid_text(fields.owner))
    _sub(cred, "owner_urn", str(fields.owner.urn))
    _sub(cred, "target_gid", gid_text(fields.target))
    _sub(cred, "target_urn", str(fields.target.urn))
    _sub(cred, "uuid", fields.uuid)
    _sub(cred, "expires", format_time(fields.expires))
    if fields.ticket is not None:
        _ticket_element(cred, *fields.ticket)
    else:
        privileges = _sub(cred, "privileges")
        for name, can_delegate in fields.privileges:
            privilege = _sub(privileges, "privilege")
            _sub(privilege, "name", name)
            _sub(privilege, "can_delegate", _bool(can_delegate))
    if fields.parent is not None:
        _sub(cred, "parent").append(fields.parent)
    return cred


def _ticket_element(cred: etree._Element, can_delegate: bool, redeem_before: datetime, rspec: str) -> None:
    ticket = _sub(cred, "ticket")
    _sub(ticket, "can_delegate", _bool(can_delegate))
    _sub(ticket, "redeem_before", format_time(redeem_before))
    if rspec.strip():
        ticket.append(parse_document(as_bytes(rspec), "ticket RSpec"))


def new_document(
    credential: etree._Element, signatures: Iterable[etree._Element] = (), nsmap: dict[str | None, str] | None = None
) -> etree._Element:
    """``<signed-credential>`` holding ``credential`` and a ``<signatures>`` with copies of ``signatures``.

    ``nsmap`` adds namespace declarations to the root: a delegated credential repeats its
    parent's, so that the parent's inclusive-C14N digest stays the same.
    """
    namespaces: dict[str | None, str] = dict(nsmap or {})
    namespaces.setdefault("xsi", XSI_NS)
    root = etree.Element("signed-credential", nsmap=namespaces)
    root.set(f"{{{XSI_NS}}}noNamespaceSchemaLocation", SCHEMA_LOCATION)
    root.append(credential)
    holder = _sub(root, "signatures")
    for signature in signatures:
        holder.append(copy_element(signature))
    return root


def copy_element(elem: etree._Element) -> etree._Element:
    """A deep copy that can be placed in another document."""
    return deepcopy(elem)


def _cert_base64(cert: x509.Certificate) -> str:
    der = cert.public_bytes(serialization.Encoding.DER)
    text = base64.b64encode(der).decode("ascii")
    return "\n".join(text[i : i + 64] for i in range(0, len(text), 64))


def sign(root: etree._Element, ref_id: str, signer: Identity, *, sha256: bool = False) -> etree._Element:
    """Append to ``root``'s ``<signatures>`` an enveloped signature over ``#ref_id`` and return it.

    RSA-SHA1 with a SHA-1 digest is what geni-tools and ProtoGENI write and expect; ``sha256``
    makes an RSA-SHA256 / SHA-256 signature instead (verifiers accept both).
    """
    holder = root.find("signatures")
    if holder is None:
        raise ValueError("document has no <signatures> element")
    method, digest = (xc.TransformRsaSha256, xc.TransformSha256) if sha256 else (xc.TransformRsaSha1, xc.TransformSha1)
    signature = xmlsec.template.create(root, xc.TransformInclC14N, method, ns=None)
    signature.set(XML_ID, f"Sig_{ref_id}")
    holder.append(signature)
    reference = xmlsec.template.add_reference(signature, digest, uri=f"#{ref_id}")
    xmlsec.template.add_transform(reference, xc.TransformEnveloped)
    x509_data = xmlsec.template.add_x509_data(xmlsec.template.ensure_key_info(signature))
    signed = next((e for e in root.iter("credential") if e.get(XML_ID) == ref_id), None)
    if signed is None:
        raise ValueError(f"document has no <credential xml:id={ref_id!r}>")
    context = xmlsec.SignatureContext()
    # An element built apart and then attached is missing from the document's ID table.
    context.register_id(signed, "id", XML_NS)
    context.key = xmlsec.Key.from_memory(signer.key_pem(), xc.KeyDataFormatPem, None)
    try:
        context.sign(signature)
    except xmlsec.Error as err:
        raise invalid(f"signing {ref_id} failed: {err}") from err
    # KeyInfo is outside SignedInfo: the chain is written after signing, leaf first.
    for cert in (signer.gid.cert, *signer.gid.chain):
        etree.SubElement(x509_data, f"{{{DSIG_NS}}}X509Certificate").text = _cert_base64(cert)
    return signature


def serialize(root: etree._Element) -> str:
    """The document as text with an XML declaration (what goes on the wire)."""
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + etree.tostring(root, encoding="unicode")


__all__ = [
    "DSIG_NS",
    "MAX_BYTES",
    "SCHEMA_LOCATION",
    "XML_ID",
    "XML_NS",
    "XSI_NS",
    "Cursor",
    "Fields",
    "as_bytes",
    "copy_element",
    "credential_element",
    "element_children",
    "format_time",
    "gid_text",
    "invalid",
    "leaf_text",
    "new_document",
    "new_ref_id",
    "parse_document",
    "parse_time",
    "read_bool",
    "read_gid",
    "read_urn",
    "serialize",
    "sign",
]
