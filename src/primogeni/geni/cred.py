"""Signed GENI credentials (``geni_sfa`` version 3) and ProtoGENI tickets, and their verifier.

A credential says: *owner* holds *privileges* over *target* until *expires*, signed by the
target's authority — or, when delegated, by the owner of the ``<parent>`` credential it embeds.
A ticket is the same document with type ``ticket`` and a ``<ticket>`` body (the RSpec a CM
promised), signed by the CM.

The work is split three ways:

* this module — the values (:class:`Credential`, :class:`Privilege`, :class:`Ticket`), reading a
  document's structure (:meth:`Credential.parse`), issuing and delegating, and the
  :class:`Verifier`, which applies the rules in a fixed order (see :meth:`Verifier.verify`);
* :mod:`primogeni.geni.cred_xml` — the safe parser, the XML layout and XML-DSig signing;
* :mod:`primogeni.geni.cred_verify` — XML-DSig verification and its anti-wrapping checks.

The verifier is sans-I/O apart from libxmlsec1: it takes document bytes and a clock and returns
a :class:`Credential` or raises :class:`CredentialError` with the GENI code a server returns.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from lxml import etree

from primogeni.geni import cred_xml as cx
from primogeni.geni.cert import Gid, Identity, TrustStore
from primogeni.geni.codes import GeniCode
from primogeni.geni.cred_verify import verify_signatures
from primogeni.geni.errors import CertificateError, CredentialError
from primogeni.geni.times import utcnow
from primogeni.geni.urn import Urn

SLICE_PRIVILEGES = ("refresh", "embed", "bind", "control", "info")
USER_PRIVILEGES = ("refresh", "resolve", "info")
KINDS = ("privilege", "ticket")
MAX_DELEGATION_DEPTH = 8

_READ = frozenset({"*", "info", "refresh", "resolve", "embed", "bind", "instantiate", "control"})
_LOOK = frozenset({"*", "info", "embed", "bind", "instantiate", "control"})
_MAKE = frozenset({"*", "embed", "bind", "instantiate"})
_RENEW = frozenset({"*", "refresh", "embed", "bind", "instantiate"})
_STOP = frozenset({"*", "control", "embed", "bind", "instantiate"})
OPERATION_PRIVILEGES: dict[str, frozenset[str]] = {
    **dict.fromkeys(("listresources", "getversion", "resolve", "getcredential"), _READ),
    **dict.fromkeys(("status", "describe"), _LOOK),
    **dict.fromkeys(("allocate", "provision", "create", "getticket", "redeemticket", "update", "createslice"), _MAKE),
    "renew": _RENEW,
    **dict.fromkeys(("delete", "shutdown", "operate"), _STOP),
}


@dataclass(frozen=True)
class Privilege:
    """One privilege and whether its holder may delegate it."""

    name: str
    can_delegate: bool


@dataclass(frozen=True)
class Ticket:
    """The ProtoGENI ticket body: the RSpec (XML text) a CM promised, redeemable until a time."""

    can_delegate: bool
    redeem_before: datetime
    rspec: str


@dataclass(frozen=True)
class Credential:
    """A parsed credential document (structure only until a :class:`Verifier` accepts it).

    ``xml`` is the whole signed document; for a ``parent`` it is a stand-alone document made of
    the parent's ``<credential>`` and the signatures over it and its own ancestors.
    """

    xml: str
    xml_id: str
    type: str
    owner_gid: Gid
    owner_urn: Urn
    target_gid: Gid
    target_urn: Urn
    uuid: str
    serial: str
    expires: datetime
    privileges: tuple[Privilege, ...]
    parent: Credential | None
    ticket: Ticket | None

    @classmethod
    def parse(cls, xml: str | bytes) -> Credential:
        """Read the document's structure with the safe parser; signatures are not checked."""
        return _read_document(cx.as_bytes(xml))[0]

    def has_privilege(self, name: str) -> bool:
        """Whether the credential grants ``name`` (``"*"`` grants everything)."""
        return any(p.name in ("*", name) for p in self.privileges)

    @property
    def lineage(self) -> tuple[Credential, ...]:
        """This credential, then its parent, grand-parent, … up to the undelegated one."""
        chain: list[Credential] = []
        current: Credential | None = self
        while current is not None:
            chain.append(current)
            current = current.parent
        return tuple(chain)


# --- reading -------------------------------------------------------------------------------


def _privileges(elem: etree._Element) -> tuple[Privilege, ...]:
    out: list[Privilege] = []
    for child in cx.element_children(elem, "privileges"):
        if child.tag != "privilege":
            raise cx.invalid(f"<privileges> holds <{child.tag!s}>")
        cursor = cx.Cursor(cx.element_children(child, "privilege"), "<privilege>")
        name = cursor.text("name").strip()
        can_delegate = cx.read_bool(cursor.text("can_delegate"), "can_delegate")
        cursor.done()
        if not name:
            raise cx.invalid("<privilege> has an empty <name>")
        out.append(Privilege(name, can_delegate))
    return tuple(out)


def _ticket(elem: etree._Element) -> Ticket:
    children = cx.element_children(elem, "ticket")
    cursor = cx.Cursor(children, "<ticket>")
    can_delegate = cx.read_bool(cursor.text("can_delegate"), "can_delegate")
    redeem_before = cx.parse_time(cursor.text("redeem_before"), "<redeem_before>")
    body = children[2:]
    if len(body) > 1:
        raise cx.invalid("<ticket> must hold at most one RSpec element")
    rspec = ""
    if body:
        element = cx.copy_element(body[0])
        etree.cleanup_namespaces(element)  # drop the credential's own xmlns:xsi
        rspec = etree.tostring(element, encoding="unicode", with_tail=False)
    return Ticket(can_delegate, redeem_before, rspec)


@dataclass(frozen=True)
class _Document:
    """What reading gives the verifier besides the credential: the elements by id."""

    root: etree._Element
    text: str  # the document as text (what the top credential's ``xml`` holds)
    credentials: dict[str, etree._Element]


def _read_credential(elem: etree._Element, doc: _Document, depth: int) -> Credential:
    if depth > MAX_DELEGATION_DEPTH:
        raise cx.invalid(f"delegation chain is deeper than {MAX_DELEGATION_DEPTH}")
    xml_id = elem.get(cx.XML_ID)
    if not xml_id:
        raise cx.invalid("<credential> has no xml:id")
    if xml_id in doc.credentials:
        raise cx.invalid(f"two credentials share xml:id {xml_id!r}")
    doc.credentials[xml_id] = elem
    where = f"credential {xml_id}"
    cursor = cx.Cursor(cx.element_children(elem, "credential"), where)
    kind = cursor.text("type").strip()
    if kind not in KINDS:
        raise cx.invalid(f"credential type {kind!r} is not accepted (only 'privilege' and 'ticket')")
    serial = cursor.text("serial")
    owner_gid = cx.read_gid(cursor.text("owner_gid"), "owner_gid")
    owner_urn = cx.read_urn(cursor.optional_text("owner_urn"), owner_gid, "owner_urn")
    target_gid = cx.read_gid(cursor.text("target_gid"), "target_gid")
    target_urn = cx.read_urn(cursor.optional_text("target_urn"), target_gid, "target_urn")
    ident = cursor.text("uuid").strip()
    expires = cx.parse_time(cursor.text("expires"), "<expires>")
    privileges: tuple[Privilege, ...] = ()
    ticket = None
    if kind == "ticket":
        ticket = _ticket(cursor.take("ticket"))
    else:
        privileges = _privileges(cursor.take("privileges"))
    while cursor.peek() == "extensions":
        cursor.take("extensions")
    parent = None
    if cursor.peek() == "parent":
        parent = _read_parent(cursor.take("parent"), doc, depth)
    cursor.done()
    xml = doc.text if depth == 0 else _standalone(elem, doc)
    return Credential(
        xml, xml_id, kind, owner_gid, owner_urn, target_gid, target_urn, ident, serial, expires,
        privileges, parent, ticket,
    )  # fmt: skip


def _read_parent(elem: etree._Element, doc: _Document, depth: int) -> Credential:
    children = cx.element_children(elem, "parent")
    if len(children) != 1 or children[0].tag != "credential":
        raise cx.invalid("<parent> must hold exactly one <credential>")
    return _read_credential(children[0], doc, depth + 1)


def _standalone(elem: etree._Element, doc: _Document) -> str:
    """A parent as its own signed document: its element plus the signatures over its subtree."""
    ids = {e.get(cx.XML_ID) for e in elem.iter("credential")}
    holder = doc.root.find("signatures")
    signatures = []
    for signature in holder if holder is not None else ():
        reference = signature.find(f"{{{cx.DSIG_NS}}}SignedInfo/{{{cx.DSIG_NS}}}Reference")
        if reference is not None and (reference.get("URI") or "")[1:] in ids:
            signatures.append(signature)
    root = cx.new_document(cx.copy_element(elem), signatures, nsmap=dict(doc.root.nsmap))
    return cx.serialize(root)


def _read_document(raw: bytes) -> tuple[Credential, _Document]:
    root = cx.parse_document(raw)
    if root.tag != "signed-credential":
        raise cx.invalid(f"root element is <{root.tag!s}>, not <signed-credential>")
    children = cx.element_children(root, "signed-credential")
    tags = [c.tag for c in children]
    if tags not in (["credential"], ["credential", "signatures"]):
        raise cx.invalid(f"<signed-credential> must hold <credential> then <signatures>, not {tags}")
    try:
        text = raw.decode("utf-8")  # keep the caller's exact text: it is what was signed
    except UnicodeDecodeError:
        text = cx.serialize(root)
    doc = _Document(root, text, {})
    return _read_credential(children[0], doc, 0), doc


# --- issuing -------------------------------------------------------------------------------


def _privilege_list(privileges: Iterable[str | Privilege], delegatable: bool) -> tuple[Privilege, ...]:
    out = tuple(p if isinstance(p, Privilege) else Privilege(p, delegatable) for p in privileges)
    for p in out:
        if not p.name or p.name != p.name.strip():
            raise ValueError(f"privilege name {p.name!r} is empty or padded")
    return out


def _check_times(expires: datetime, now: datetime) -> None:
    if expires.tzinfo is None or now.tzinfo is None:
        raise ValueError("expires and now must be timezone-aware")
    if expires <= now:
        raise ValueError(f"expires {expires.isoformat()} is not after now {now.isoformat()}")


def _compose(
    signer: Identity,
    fields: cx.Fields,
    signatures: Sequence[etree._Element] = (),
    nsmap: dict[str | None, str] | None = None,
) -> Credential:
    root = cx.new_document(cx.credential_element(fields), signatures, nsmap)
    cx.sign(root, fields.ref_id, signer)
    return Credential.parse(cx.serialize(root))


def issue_credential(
    signer: Identity,
    owner: Gid,
    target: Gid,
    privileges: Iterable[str | Privilege],
    expires: datetime,
    *,
    now: datetime,
    kind: str = "privilege",
    ticket: Ticket | None = None,
    delegatable: bool = True,
) -> Credential:
    """Issue and sign an undelegated credential (a privilege set, or a ticket with ``kind="ticket"``).

    ``signer`` should be the target's authority (a CA of the same top authority): the verifier
    refuses anything else. Plain-string privileges get ``can_delegate=delegatable``.
    """
    _check_times(expires, now)
    privs = _privilege_list(privileges, delegatable)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    if (kind == "ticket") != (ticket is not None):
        raise ValueError("a ticket body is required for kind='ticket' and only then")
    if kind == "ticket" and privs:
        raise ValueError("a ticket carries no privileges")
    body = None if ticket is None else (ticket.can_delegate, ticket.redeem_before, ticket.rspec)
    fields = cx.Fields(
        cx.new_ref_id(), kind, str(secrets.randbits(63)), owner, target, str(uuid.uuid4()), expires,
        [(p.name, p.can_delegate) for p in privs], body,
    )  # fmt: skip
    return _compose(signer, fields)


def delegate(
    parent: Credential,
    signer: Identity,
    new_owner: Gid,
    privileges: Iterable[str | Privilege],
    expires: datetime,
    *,
    now: datetime,
    delegatable: bool = False,
) -> Credential:
    """Delegate some of ``parent``'s privileges to ``new_owner``; ``signer`` must own ``parent``.

    Refuses (CREDENTIAL_INVALID) what a verifier would refuse: a signer other than the parent's
    owner, a lifetime beyond the parent's, or a privilege the parent lacks or may not delegate.
    """
    _check_times(expires, now)
    privs = _privilege_list(privileges, delegatable)
    if parent.type != "privilege":
        raise cx.invalid("only privilege credentials can be delegated")
    if not signer.gid.same_key(parent.owner_gid):
        raise cx.invalid(f"only the parent's owner {parent.owner_urn} may delegate it, not {signer.gid.urn}")
    problem = _delegation_problem(parent, privs, expires)
    if problem:
        raise cx.invalid(problem)
    source = cx.parse_document(cx.as_bytes(parent.xml))
    holder = source.find("signatures")
    fields = cx.Fields(
        cx.new_ref_id(), "privilege", str(secrets.randbits(63)), new_owner, parent.target_gid, str(uuid.uuid4()),
        expires, [(p.name, p.can_delegate) for p in privs], None, cx.copy_element(source[0]),
    )  # fmt: skip
    return _compose(signer, fields, list(holder) if holder is not None else [], dict(source.nsmap))


def _delegation_problem(parent: Credential, privileges: Sequence[Privilege], expires: datetime) -> str | None:
    """Why a child with these privileges and expiry may not hang under ``parent`` (or None)."""
    if expires > parent.expires:
        return (
            f"delegated credential expires {cx.format_time(expires)}, "
            f"after its parent ({cx.format_time(parent.expires)})"
        )
    for privilege in privileges:
        granting = [p for p in parent.privileges if p.name in ("*", privilege.name)]
        if privilege.name == "*":
            granting = [p for p in parent.privileges if p.name == "*"]
        if not granting:
            return f"delegated credential adds privilege {privilege.name!r}, which its parent lacks"
        if not any(p.can_delegate for p in granting):
            return f"parent credential does not allow delegating privilege {privilege.name!r}"
    return None


# --- verifying -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Checked:
    """The cached, time-independent outcome of reading and signature-checking one document."""

    credential: Credential
    signers: tuple[Gid, ...]  # aligned with credential.lineage
    signer_error: str | None  # the undelegated credential's signer is not its target's authority
    delegation_error: str | None  # a delegation rule is broken


@dataclass(frozen=True)
class _Rejected:
    reason: str  # CREDENTIAL_INVALID


_RANK = {
    GeniCode.CREDENTIAL_INVALID: 0,
    GeniCode.CREDENTIAL_SIGNER_UNTRUSTED: 1,
    GeniCode.CREDENTIAL_EXPIRED: 2,
    GeniCode.CREDENTIAL_MISMATCH: 3,
    GeniCode.FORBIDDEN: 4,
}


class Verifier:
    """Checks credentials against a trust store, caching the signature work by document hash."""

    def __init__(
        self,
        trust: TrustStore,
        *,
        clock: Callable[[], datetime] = utcnow,
        cache_size: int = 4096,
    ):
        self._trust = trust
        self._clock = clock
        self._cache_size = cache_size
        self._cache: OrderedDict[bytes, _Checked | _Rejected] = OrderedDict()
        self._lock = threading.Lock()

    def verify(
        self,
        xml: str | bytes,
        *,
        caller: Gid | None,
        target: Urn | None,
        operation: str | None,
        kind: str = "privilege",
    ) -> Credential:
        """Accept the credential for this call or raise :class:`CredentialError`.

        In order: malformed, unknown type or a bad signature → CREDENTIAL_INVALID; a signer not
        chaining to a trusted root, or an undelegated credential not signed by its target's
        authority → CREDENTIAL_SIGNER_UNTRUSTED; expired (any level, or a ticket past
        redeem_before) → CREDENTIAL_EXPIRED; owner ≠ ``caller`` (URN and key; ``None`` skips
        this, for internal use) or target ≠ ``target`` → CREDENTIAL_MISMATCH; none of the
        privileges ``operation`` needs → FORBIDDEN (tickets carry no privileges: the operation is
        not checked for them); a broken delegation rule → CREDENTIAL_INVALID.
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        checked = self._checked(cx.as_bytes(xml))
        credential = checked.credential
        if credential.type != kind:
            raise cx.invalid(f"a {credential.type!r} credential was given where a {kind!r} credential is needed")
        now = self._clock()
        self._check_signers(checked, now)
        _check_expiry(credential, now)
        _check_parties(credential, caller, target)
        if kind == "privilege":
            _check_operation(credential, operation)
        if checked.delegation_error:
            raise cx.invalid(checked.delegation_error)
        return credential

    def verify_any(
        self,
        creds: Sequence[str | bytes],
        *,
        caller: Gid | None,
        target: Urn | None,
        operation: str | None,
        kind: str = "privilege",
    ) -> Credential:
        """The first credential that passes; otherwise the error of the one that came closest."""
        best: CredentialError | None = None
        for xml in creds:
            try:
                return self.verify(xml, caller=caller, target=target, operation=operation, kind=kind)
            except CredentialError as err:
                if best is None or _RANK.get(err.code, 0) > _RANK.get(best.code, 0):
                    best = err
        if best is None:
            raise cx.invalid("no credential was given")
        raise best

    def _checked(self, raw: bytes) -> _Checked:
        key = hashlib.sha256(raw).digest()
        with self._lock:
            entry = self._cache.get(key)
            if entry is not None:
                self._cache.move_to_end(key)
        if entry is None:
            entry = _check_document(raw)
            with self._lock:
                self._cache[key] = entry
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        if isinstance(entry, _Rejected):
            raise cx.invalid(entry.reason)
        return entry

    def _check_signers(self, checked: _Checked, now: datetime) -> None:
        for credential, signer in zip(checked.credential.lineage, checked.signers, strict=True):
            try:
                self._trust.verify(signer, now)
            except CertificateError as err:
                raise CredentialError(
                    GeniCode.CREDENTIAL_SIGNER_UNTRUSTED,
                    f"signer {signer.urn} of credential {credential.xml_id} is not trusted: {err.reason}",
                ) from None
        if checked.signer_error:
            raise CredentialError(GeniCode.CREDENTIAL_SIGNER_UNTRUSTED, checked.signer_error)


def _check_document(raw: bytes) -> _Checked | _Rejected:
    """Read, verify every signature, and work out the static signer and delegation verdicts."""
    try:
        credential, doc = _read_document(raw)
        signers_by_id = verify_signatures(doc.root, doc.credentials)
    except CredentialError as err:
        return _Rejected(err.reason)
    lineage = credential.lineage
    signers = tuple(signers_by_id[c.xml_id] for c in lineage)
    root_problem = _root_signer_problem(lineage[-1], signers[-1])
    return _Checked(credential, signers, root_problem, _lineage_problem(lineage, signers))


def _root_signer_problem(credential: Credential, signer: Gid) -> str | None:
    if not signer.is_ca:
        return f"credential {credential.xml_id} is signed by {signer.urn}, which is not an authority (CA)"
    if signer.urn.top_authority != credential.target_urn.top_authority:
        return (
            f"credential {credential.xml_id} for {credential.target_urn} is signed by {signer.urn}, "
            f"which is not an authority of {credential.target_urn.top_authority!r}"
        )
    return None


def _lineage_problem(lineage: Sequence[Credential], signers: Sequence[Gid]) -> str | None:
    for child, parent, signer in zip(lineage, lineage[1:], signers, strict=False):
        if child.type != "privilege" or parent.type != "privilege":
            return f"credential {child.xml_id}: only privilege credentials can be delegated"
        if not signer.same_key(parent.owner_gid):
            return f"credential {child.xml_id} is signed by {signer.urn}, not by its parent's owner {parent.owner_urn}"
        if child.target_urn != parent.target_urn or not child.target_gid.same_key(parent.target_gid):
            return f"credential {child.xml_id} targets {child.target_urn}, its parent {parent.target_urn}"
        problem = _delegation_problem(parent, child.privileges, child.expires)
        if problem:
            return f"credential {child.xml_id}: {problem}"
    return None


def _check_expiry(credential: Credential, now: datetime) -> None:
    for level in credential.lineage:
        if now > level.expires:
            raise CredentialError(
                GeniCode.CREDENTIAL_EXPIRED, f"credential {level.xml_id} expired at {cx.format_time(level.expires)}"
            )
        if level.ticket is not None and now > level.ticket.redeem_before:
            raise CredentialError(
                GeniCode.CREDENTIAL_EXPIRED,
                f"ticket {level.xml_id} had to be redeemed before {cx.format_time(level.ticket.redeem_before)}",
            )


def _check_parties(credential: Credential, caller: Gid | None, target: Urn | None) -> None:
    if caller is not None and not caller.same_key(credential.owner_gid):
        detail = "a different key" if caller.urn == credential.owner_urn else "a different identity"
        raise CredentialError(
            GeniCode.CREDENTIAL_MISMATCH,
            f"credential belongs to {credential.owner_urn}; the caller {caller.urn} has {detail}",
        )
    if target is not None and credential.target_urn != target:
        if target.type == "slice" and credential.target_urn.type != "slice":
            kind = credential.target_urn.type
            message = f"a {kind} credential was given where a credential for slice {target} is needed"
        else:
            message = f"credential is for {credential.target_urn}, not {target}"
        raise CredentialError(GeniCode.CREDENTIAL_MISMATCH, message)


def _check_operation(credential: Credential, operation: str | None) -> None:
    if operation is None:
        return
    needed = OPERATION_PRIVILEGES.get(operation.lower())
    if needed is None:
        raise ValueError(f"unknown operation {operation!r}")
    if not any(p.name in needed for p in credential.privileges):
        names = ", ".join(p.name for p in credential.privileges) or "none"
        raise CredentialError(
            GeniCode.FORBIDDEN,
            f"{operation} needs one of {', '.join(sorted(needed))}; the credential grants {names}",
        )


__all__ = [
    "KINDS",
    "OPERATION_PRIVILEGES",
    "SLICE_PRIVILEGES",
    "USER_PRIVILEGES",
    "Credential",
    "Privilege",
    "Ticket",
    "Verifier",
    "delegate",
    "issue_credential",
]
