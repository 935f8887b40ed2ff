"""The member authority (MA): members, their identities, user credentials and SSH keys.

A member is created by an administrator (``primo ch add-member`` or :func:`init_authority`): the MA
issues the user's GID (RSA 2048, CA false, subjectAltName with the user URN, a UUID and the email),
writes ``users/<name>.pem`` (the user certificate followed by the MA certificate) and
``users/<name>.key`` (mode 0600), and records the member with its certificate in the database.

User credentials are signed by the MA: owner = target = the member's GID, privileges
``refresh, resolve, info``. They expire with the shorter of the configured lifetime and the
certificate's validity. Every method runs in one database transaction and changes nothing when
it raises.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from primogeni.ch.models import MemberRow, SshKeyRow
from primogeni.db import transaction
from primogeni.geni.cert import Gid, Identity, issue
from primogeni.geni.codes import GeniCode
from primogeni.geni.cred import USER_PRIVILEGES, Credential, issue_credential
from primogeni.geni.errors import GeniError
from primogeni.geni.times import utcnow
from primogeni.geni.urn import Urn, check_user_name, user_urn

Clock = Callable[[], datetime]

#: Key types accepted in ``authorized_keys`` lines (the type named inside the blob must agree).
SSH_KEY_TYPES = frozenset(
    {
        "ssh-rsa",
        "ssh-ed25519",
        "ssh-dss",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_MAX_KEY_TEXT = 16 * 1024
_MAX_NAME = 128


@dataclass(frozen=True)
class Member:
    """A member as the MA knows it."""

    urn: Urn
    username: str
    uuid: str
    email: str
    first_name: str
    last_name: str
    gid: Gid
    created: datetime


@dataclass(frozen=True)
class SshKey:
    """A member's public SSH key; ``id`` is the ``KEY_ID`` of the Federation API."""

    id: int
    member_urn: Urn
    key_type: str
    public_key: str
    description: str
    created: datetime


def parse_ssh_public_key(text: str) -> tuple[str, str]:
    """Check one OpenSSH public key line; return ``(key_type, normalised line)``.

    Accepts ``<type> <base64> [comment]`` where the type is one of :data:`SSH_KEY_TYPES` and the
    base64 blob decodes to a key whose embedded type string is the same. Raises
    ``GeniError(BADARGS)`` naming what is wrong.
    """
    if not isinstance(text, str) or not text.strip():
        raise GeniError(GeniCode.BADARGS, "an SSH public key must be a non-empty string")
    if len(text) > _MAX_KEY_TEXT:
        raise GeniError(GeniCode.BADARGS, "SSH public key is too long")
    line = text.strip()
    if "\n" in line or "\r" in line:
        raise GeniError(GeniCode.BADARGS, "an SSH public key must be a single line")
    parts = line.split(None, 2)
    if len(parts) < 2:
        raise GeniError(GeniCode.BADARGS, "SSH public key must be '<type> <base64> [comment]'")
    key_type, blob_text = parts[0], parts[1]
    if key_type not in SSH_KEY_TYPES:
        raise GeniError(GeniCode.BADARGS, f"unsupported SSH key type {key_type!r}")
    try:
        blob = base64.b64decode(blob_text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise GeniError(GeniCode.BADARGS, "SSH public key data is not base64") from e
    if len(blob) < 4:
        raise GeniError(GeniCode.BADARGS, "SSH public key data is truncated")
    (n,) = struct.unpack(">I", blob[:4])
    if n > len(blob) - 4 or blob[4 : 4 + n].decode("ascii", "replace") != key_type:
        raise GeniError(GeniCode.BADARGS, f"SSH public key data does not hold a {key_type} key")
    if len(blob) <= 4 + n:
        raise GeniError(GeniCode.BADARGS, "SSH public key data holds no key material")
    return key_type, " ".join(parts)


def _check_text(value: str, what: str, *, limit: int = _MAX_NAME) -> str:
    if not isinstance(value, str):
        raise GeniError(GeniCode.BADARGS, f"{what} must be a string")
    if len(value) > limit or any(ord(c) < 32 for c in value):
        raise GeniError(GeniCode.BADARGS, f"{what} is too long or holds control characters")
    return value.strip()


class MemberAuthority:
    """Members, user credentials and SSH keys of the local authority ``authority_name``."""

    def __init__(
        self,
        authority_name: str,
        ma: Identity,
        users_dir: Path,
        sessions: sessionmaker[Session],
        *,
        clock: Clock = utcnow,
        user_lifetime: timedelta = timedelta(days=365),
        credential_lifetime: timedelta = timedelta(days=30),
    ):
        self.authority_name = authority_name
        self.ma = ma
        self.users_dir = Path(users_dir)
        self._sessions = sessions
        self._clock = clock
        self.user_lifetime = user_lifetime
        self.credential_lifetime = credential_lifetime

    # -- members ---------------------------------------------------------------------------------

    def create_member(self, username: str, email: str, *, first_name: str = "", last_name: str = "") -> Member:
        """Create a member: issue the GID and key, write ``users/<name>.{pem,key}``, record it.

        ``ALREADYEXISTS`` if the user name is taken; ``BADARGS`` for a bad name or email.
        """
        check_user_name(username)
        email = _check_text(email, "email", limit=320)
        if not _EMAIL.match(email):
            raise GeniError(GeniCode.BADARGS, f"not an email address: {email!r}")
        first_name = _check_text(first_name, "first name")
        last_name = _check_text(last_name, "last name")
        urn = user_urn(self.authority_name, username)
        now = self._clock()
        cert_path = self.users_dir / f"{username}.pem"
        key_path = self.users_dir / f"{username}.key"
        # The key is made outside the transaction, so the write lock is not held while RSA runs.
        ident = issue(self.ma, urn, now=now, lifetime=self.user_lifetime, ca=False, email=email)
        # The user's file holds the user certificate and the MA's (docs/GENI.md), not the root.
        ident = Identity(replace(ident.gid, chain=(self.ma.gid.cert,)), ident.key)
        with transaction(self._sessions) as s:
            if s.scalar(select(MemberRow.id).where(MemberRow.username == username)) is not None:
                raise GeniError(GeniCode.ALREADYEXISTS, f"member {username!r} already exists")
            row = MemberRow(
                username=username,
                urn=str(urn),
                uuid=str(ident.gid.uuid),
                email=email,
                first_name=first_name,
                last_name=last_name,
                cert_pem=ident.gid.pem(with_chain=True),
                created=now,
            )
            s.add(row)
            try:
                s.flush()
            except IntegrityError as e:
                raise GeniError(GeniCode.ALREADYEXISTS, f"member {username!r} already exists") from e
            self.users_dir.mkdir(parents=True, exist_ok=True)
            try:
                ident.save(cert_path, key_path)
            except OSError as e:
                raise GeniError(GeniCode.SERVERERROR, f"cannot write {cert_path}: {e}") from e
            member = self._member(row)
        return member

    def member(self, urn: Urn | str) -> Member:
        """The member with this URN; ``SEARCHFAILED`` if there is none."""
        with transaction(self._sessions) as s:
            return self._member(self._row(s, urn))

    def member_by_name(self, username: str) -> Member:
        """The member with this user name; ``SEARCHFAILED`` if there is none."""
        with transaction(self._sessions) as s:
            row = s.scalar(select(MemberRow).where(MemberRow.username == username))
            if row is None:
                raise GeniError(GeniCode.SEARCHFAILED, f"no member named {username!r}")
            return self._member(row)

    def members(self) -> list[Member]:
        """Every member, by user name."""
        with transaction(self._sessions) as s:
            return [self._member(r) for r in s.scalars(select(MemberRow).order_by(MemberRow.username))]

    def lookup(
        self,
        *,
        urns: Iterable[str] | None = None,
        usernames: Iterable[str] | None = None,
        uids: Iterable[str] | None = None,
        emails: Iterable[str] | None = None,
        last_names: Iterable[str] | None = None,
    ) -> list[Member]:
        """Members matching every given criterion (each a set of acceptable values)."""
        q = select(MemberRow).order_by(MemberRow.username)
        if urns is not None:
            q = q.where(MemberRow.urn.in_([_canonical_urn(u) for u in urns]))
        if usernames is not None:
            q = q.where(MemberRow.username.in_(list(usernames)))
        if uids is not None:
            q = q.where(MemberRow.uuid.in_(list(uids)))
        if emails is not None:
            q = q.where(MemberRow.email.in_(list(emails)))
        if last_names is not None:
            q = q.where(MemberRow.last_name.in_(list(last_names)))
        with transaction(self._sessions) as s:
            return [self._member(r) for r in s.scalars(q)]

    def check_caller(self, caller: Gid) -> Member:
        """The member the TLS caller is: same URN and same public key as the GID the MA issued.

        ``FORBIDDEN`` for a caller that is not a member of this authority or presents another key.
        """
        with transaction(self._sessions) as s:
            row = s.scalar(select(MemberRow).where(MemberRow.urn == str(caller.urn)))
            if row is None:
                raise GeniError(GeniCode.FORBIDDEN, f"{caller.urn} is not a member of authority {self.authority_name}")
            member = self._member(row)
        if not member.gid.same_key(caller):
            raise GeniError(GeniCode.FORBIDDEN, f"{caller.urn} presented a certificate this MA did not issue")
        return member

    def user_credential(self, caller: Gid) -> Credential:
        """A fresh user credential for the caller, signed by the MA."""
        member = self.check_caller(caller)
        now = self._clock()
        expires = min(now + self.credential_lifetime, member.gid.cert.not_valid_after_utc)
        if expires <= now:
            raise GeniError(GeniCode.EXPIRED, f"the certificate of {member.urn} has expired")
        return issue_credential(self.ma, member.gid, member.gid, USER_PRIVILEGES, expires, now=now)

    # -- SSH keys --------------------------------------------------------------------------------

    def add_key(self, member_urn: Urn | str, public_key: str, description: str = "") -> SshKey:
        """Record a public SSH key for a member; ``ALREADYEXISTS`` if the member has it already."""
        key_type, line = parse_ssh_public_key(public_key)
        description = _check_text(description, "key description", limit=512)
        with transaction(self._sessions) as s:
            member = self._row(s, member_urn)
            blob = line.split()[1]
            for existing in s.scalars(select(SshKeyRow).where(SshKeyRow.member_id == member.id)):
                if existing.public_key.split()[1] == blob:
                    raise GeniError(GeniCode.ALREADYEXISTS, f"{member.urn} already has this key (KEY_ID {existing.id})")
            row = SshKeyRow(
                member_id=member.id, key_type=key_type, public_key=line, description=description, created=self._clock()
            )
            s.add(row)
            s.flush()
            return _key(row, member.urn)

    def keys(self, member_urn: Urn | str) -> list[SshKey]:
        """A member's public SSH keys, oldest first; ``SEARCHFAILED`` for an unknown member."""
        with transaction(self._sessions) as s:
            member = self._row(s, member_urn)
            rows = s.scalars(select(SshKeyRow).where(SshKeyRow.member_id == member.id).order_by(SshKeyRow.id))
            return [_key(r, member.urn) for r in rows]

    def keys_of(self, member_urns: Iterable[str] | None = None) -> list[SshKey]:
        """Public SSH keys of the given members (of every member when ``None``)."""
        q = select(SshKeyRow, MemberRow.urn).join(MemberRow, MemberRow.id == SshKeyRow.member_id).order_by(SshKeyRow.id)
        if member_urns is not None:
            q = q.where(MemberRow.urn.in_([_canonical_urn(u) for u in member_urns]))
        with transaction(self._sessions) as s:
            return [_key(k, urn) for k, urn in s.execute(q).all()]

    def delete_key(self, member_urn: Urn | str, key_id: int) -> None:
        """Delete one of a member's keys; ``SEARCHFAILED`` if the member has no such key."""
        with transaction(self._sessions) as s:
            member = self._row(s, member_urn)
            row = s.get(SshKeyRow, key_id)
            if row is None or row.member_id != member.id:
                raise GeniError(GeniCode.SEARCHFAILED, f"{member.urn} has no key {key_id}")
            s.delete(row)

    # -- helpers ---------------------------------------------------------------------------------

    def _row(self, s: Session, urn: Urn | str) -> MemberRow:
        row = s.scalar(select(MemberRow).where(MemberRow.urn == _canonical_urn(urn)))
        if row is None:
            raise GeniError(GeniCode.SEARCHFAILED, f"no member {urn}")
        return row

    @staticmethod
    def _member(row: MemberRow) -> Member:
        return Member(
            urn=Urn.parse(row.urn),
            username=row.username,
            uuid=row.uuid,
            email=row.email,
            first_name=row.first_name,
            last_name=row.last_name,
            gid=Gid.from_pem(row.cert_pem),
            created=row.created,
        )


def _canonical_urn(urn: Urn | str) -> str:
    """The stored spelling of a URN (parsed and re-written, so escapes compare equal)."""
    if isinstance(urn, Urn):
        return str(urn)
    return str(Urn.parse(urn))


def _key(row: SshKeyRow, member_urn: Urn | str) -> SshKey:
    return SshKey(
        id=row.id,
        member_urn=member_urn if isinstance(member_urn, Urn) else Urn.parse(member_urn),
        key_type=row.key_type,
        public_key=row.public_key,
        description=row.description,
        created=row.created,
    )


__all__ = ["SSH_KEY_TYPES", "Member", "MemberAuthority", "SshKey", "parse_ssh_public_key"]
