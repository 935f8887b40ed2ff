"""The slice authority (SA): slices (experiments), their members and slice credentials.

Names have two levels. A project is ``urn:publicid:IDN+<auth>+project+<p>`` (projects and their
members are :class:`~primogeni.ch.projects.ProjectAuthority`, which :class:`SliceAuthority`
extends); a slice of it is ``urn:publicid:IDN+<auth>:<p>+slice+<name>``. Slice policy:

* Project members other than AUDITOR create slices. A slice expires ``default_slice_lifetime``
  after creation unless asked otherwise, never after its project and never in the past
  (OUTOFRANGE). A name is free again once the slice holding it has expired or been removed.
* A member's role in a slice is their slice membership; project LEADs and ADMINs act as ADMIN
  on every slice of their project. AUDITORs get credentials with ``info`` only.
* At creation the SA issues the slice's GID (the slice URN, CA false, signed by the SA); slice
  credentials name it as target, the caller as owner, and expire with the slice.

Every public method makes its changes in one transaction: it does everything or changes nothing.
Slice creation locks the project row, so two concurrent creations of one name cannot both win.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from primogeni.ch.models import MemberRow, ProjectMemberRow, ProjectRow, SliceMemberRow, SliceRow
from primogeni.ch.projects import (
    MANAGERS,
    PROJECT_ROLES,
    SLICE_ROLES,
    Membership,
    Project,
    ProjectAuthority,
    add_membership,
    canonical,
    check_description,
    format_time,
    live_slice,
    member_list,
    membership_row,
    seconds,
)
from primogeni.db import transaction
from primogeni.geni.cert import Gid, issue
from primogeni.geni.codes import GeniCode
from primogeni.geni.cred import SLICE_PRIVILEGES, Credential, issue_credential
from primogeni.geni.errors import GeniError
from primogeni.geni.urn import Urn, slice_urn

_AUDITOR_PRIVILEGES = ("info",)
#: Slice GIDs outlive any slice: a project lasts at most a year from any moment it is renewed.
SLICE_GID_LIFETIME = timedelta(days=5 * 365)


@dataclass(frozen=True)
class Slice:
    """One slice (a row: a reused name is a new slice with a new GID and UUID)."""

    urn: Urn
    name: str
    uuid: str
    project_urn: Urn
    owner_urn: Urn
    description: str
    created: datetime
    expires: datetime
    removed: bool
    gid: Gid

    def expired(self, now: datetime) -> bool:
        return self.removed or self.expires <= now


class SliceAuthority(ProjectAuthority):
    """Projects and slices of the local authority ``authority_name``, signed by ``sa``."""

    def create_slice(
        self,
        caller: Urn | str,
        project: Urn | str,
        name: str,
        *,
        expires: datetime | None = None,
        description: str = "",
    ) -> Slice:
        """Create slice ``name`` in ``project`` for ``caller`` (a project member, not AUDITOR).

        ALREADYEXISTS while an unexpired slice holds the name; OUTOFRANGE for an expiration in
        the past or after the project's; EXPIRED for an expired project.
        """
        description = check_description(description)
        urn = slice_urn(self.authority_name, canonical(project, "project").name, name)
        now = self.now()
        # Check first, then make the slice's key outside any transaction (so the write lock is
        # not held while RSA runs, and refused calls cost no key), then check again and insert.
        with transaction(self._sessions) as s:
            self._creatable(s, caller, project, urn, now, expires)
        ident = issue(self.sa, urn, now=now, lifetime=SLICE_GID_LIFETIME, ca=False)
        with transaction(self._sessions) as s:
            prow, who, expires = self._creatable(s, caller, project, urn, now, expires)
            row = SliceRow(
                urn=str(urn),
                name=name,
                uuid=str(ident.gid.uuid),
                project_id=prow.id,
                owner_id=who.id,
                description=description,
                cert_pem=ident.gid.pem(with_chain=True),
                created=now,
                expires=expires,
                removed=False,
            )
            s.add(row)
            s.flush()
            s.add(SliceMemberRow(slice_id=row.id, member_id=who.id, role="LEAD"))
            return _slice(row, prow.urn, who.urn)

    def _creatable(
        self, s: Session, caller: Urn | str, project: Urn | str, urn: Urn, now: datetime, expires: datetime | None
    ) -> tuple[ProjectRow, MemberRow, datetime]:
        """Why ``caller`` may not create slice ``urn`` now (raised), else its project, creator, expiry."""
        prow = self._project_row(s, project, lock=True)
        who = self._member_row(s, caller)
        self._require_project_role(s, prow, who, {"LEAD", "ADMIN", "MEMBER"}, "create slices in")
        if prow.expires <= now:
            raise GeniError(GeniCode.EXPIRED, f"project {prow.urn} expired at {format_time(prow.expires)}")
        if expires is None:
            expires = min(now + self.default_slice_lifetime, prow.expires)
        expires = self._slice_expiry(now, expires, prow)
        live = live_slice(s, prow.id, now, SliceRow.name == urn.name)
        if live is not None:
            raise GeniError(GeniCode.ALREADYEXISTS, f"slice {urn} already exists (expires {format_time(live.expires)})")
        return prow, who, expires

    def slice(self, urn: Urn | str) -> Slice:
        """The most recent slice with this URN (live or not); SEARCHFAILED if there is none."""
        with transaction(self._sessions) as s:
            row = self._slice_row(s, urn)
            return self._to_slice(s, row)

    def slices(
        self,
        *,
        urns: Iterable[Urn | str] | None = None,
        project_urns: Iterable[Urn | str] | None = None,
        names: Iterable[str] | None = None,
        uids: Iterable[str] | None = None,
        expired: bool | None = None,
        visible_to: Urn | str | None = None,
    ) -> list[Slice]:
        """The most recent slice of each URN matching every criterion, not removed.

        ``visible_to`` keeps the slices of projects the member belongs to and slices the member
        belongs to.
        """
        q = select(SliceRow).where(SliceRow.removed.is_(False)).order_by(SliceRow.urn, SliceRow.id)
        if urns is not None:
            q = q.where(SliceRow.urn.in_([str(canonical(u, "slice")) for u in urns]))
        if names is not None:
            q = q.where(SliceRow.name.in_(list(names)))
        if uids is not None:
            q = q.where(SliceRow.uuid.in_(list(uids)))
        now = self.now()
        with transaction(self._sessions) as s:
            if project_urns is not None:
                pids = select(ProjectRow.id).where(
                    ProjectRow.urn.in_([str(canonical(u, "project")) for u in project_urns])
                )
                q = q.where(SliceRow.project_id.in_(pids))
            if visible_to is not None:
                who = self._member_row(s, visible_to)
                in_projects = select(ProjectMemberRow.project_id).where(ProjectMemberRow.member_id == who.id)
                in_slices = select(SliceMemberRow.slice_id).where(SliceMemberRow.member_id == who.id)
                q = q.where(or_(SliceRow.project_id.in_(in_projects), SliceRow.id.in_(in_slices)))
            latest: dict[str, SliceRow] = {}
            for row in s.scalars(q):
                latest[row.urn] = row  # ordered by id: the last one wins
            out = [self._to_slice(s, row) for row in latest.values()]
        if expired is not None:
            out = [sl for sl in out if sl.expired(now) == expired]
        return out

    def renew_slice(self, caller: Urn | str, urn: Urn | str, expires: datetime) -> Slice:
        """Set a live slice's expiration (any role but AUDITOR); OUTOFRANGE past the project's."""
        return self.update_slice(caller, urn, expires=expires)

    def update_slice(
        self, caller: Urn | str, urn: Urn | str, *, expires: datetime | None = None, description: str | None = None
    ) -> Slice:
        """Change a live slice's expiration and/or description (any role but AUDITOR).

        The expiration must be in the future and not after the project's (OUTOFRANGE); an
        expired or removed slice cannot be changed (EXPIRED).
        """
        if description is not None:
            description = check_description(description)
        now = self.now()
        with transaction(self._sessions) as s:
            row, prow, who = self._slice_and_member(s, urn, caller, lock=True)
            self._require_slice_role(s, row, prow, who, {"LEAD", "ADMIN", "MEMBER", "OPERATOR"}, "change")
            if row.removed or row.expires <= now:
                raise GeniError(GeniCode.EXPIRED, f"slice {row.urn} expired at {format_time(row.expires)}")
            if expires is not None:
                row.expires = self._slice_expiry(now, expires, prow)
            if description is not None:
                row.description = description
            return self._to_slice(s, row)

    def remove_slice(self, caller: Urn | str, urn: Urn | str) -> Slice:
        """Retire a live slice now (its LEAD, or a project LEAD/ADMIN); the name becomes free."""
        now = self.now()
        with transaction(self._sessions) as s:
            row, prow, who = self._slice_and_member(s, urn, caller, lock=True)
            self._require_slice_role(s, row, prow, who, {"LEAD", "ADMIN"}, "remove")
            if row.removed or row.expires <= now:
                raise GeniError(GeniCode.EXPIRED, f"slice {row.urn} has already expired")
            row.removed = True
            row.expires = now
            return self._to_slice(s, row)

    def slice_members(self, urn: Urn | str) -> list[Membership]:
        """Members of the most recent slice with this URN and their roles."""
        with transaction(self._sessions) as s:
            row = self._slice_row(s, urn)
            return member_list(s, SliceMemberRow, SliceMemberRow.slice_id == row.id)

    def slices_for_member(self, member: Urn | str) -> list[tuple[Slice, str]]:
        """The slices ``member`` belongs to (not removed), with the member's role in each."""
        with transaction(self._sessions) as s:
            who = self._member_row(s, member)
            q = (
                select(SliceRow, SliceMemberRow.role)
                .join(SliceMemberRow, SliceMemberRow.slice_id == SliceRow.id)
                .where(SliceMemberRow.member_id == who.id, SliceRow.removed.is_(False))
                .order_by(SliceRow.urn, SliceRow.id)
            )
            latest: dict[str, tuple[SliceRow, str]] = {}
            for row, role in s.execute(q).all():
                latest[row.urn] = (row, role)
            return [(self._to_slice(s, row), role) for row, role in latest.values()]

    def modify_slice_membership(
        self,
        caller: Urn | str,
        urn: Urn | str,
        *,
        add: Sequence[tuple[Urn | str, str]] = (),
        remove: Sequence[Urn | str] = (),
        change: Sequence[tuple[Urn | str, str]] = (),
    ) -> None:
        """Add, remove or re-role members of a live slice (caller: slice LEAD or ADMIN).

        New members must belong to the slice's project; the slice LEAD stays as it is.
        """
        now = self.now()
        with transaction(self._sessions) as s:
            row, prow, who = self._slice_and_member(s, urn, caller, lock=True)
            self._require_slice_role(s, row, prow, who, MANAGERS, "change the members of")
            if row.removed or row.expires <= now:
                raise GeniError(GeniCode.EXPIRED, f"slice {row.urn} has expired")
            for member, role in add:
                m = self._member_in_role(s, member, role, SLICE_ROLES, "slice")
                if role == "LEAD":
                    raise GeniError(
                        GeniCode.BADARGS, "a slice has one LEAD, its creator; add ADMIN, MEMBER, OPERATOR or AUDITOR"
                    )
                if s.get(ProjectMemberRow, (prow.id, m.id)) is None:
                    raise GeniError(GeniCode.BADARGS, f"{m.urn} is not a member of project {prow.urn}")
                link = SliceMemberRow(slice_id=row.id, member_id=m.id, role=role)
                add_membership(s, link, (row.id, m.id), row.urn, m)
            for member, role in change:
                m = self._member_in_role(s, member, role, SLICE_ROLES, "slice")
                sm = membership_row(s, SliceMemberRow, (row.id, m.id), row.urn, m)
                if (sm.role == "LEAD") != (role == "LEAD"):
                    raise GeniError(GeniCode.BADARGS, "the slice LEAD is its creator and cannot change")
                sm.role = role
            for member in remove:
                m = self._member_row(s, member)
                sm = membership_row(s, SliceMemberRow, (row.id, m.id), row.urn, m)
                if sm.role == "LEAD":
                    raise GeniError(GeniCode.BADARGS, "the slice LEAD cannot be removed")
                s.delete(sm)
                s.flush()

    def slice_credential(self, owner: Gid, urn: Urn | str) -> Credential:
        """A credential on a live slice for ``owner`` (a slice member or project LEAD/ADMIN).

        Full slice privileges, ``info`` only for AUDITORs; expires with the slice.
        """
        now = self.now()
        with transaction(self._sessions) as s:
            row, prow, who = self._slice_and_member(s, urn, owner.urn)
            role = self._require_slice_role(s, row, prow, who, set(SLICE_ROLES), "get a credential for")
            if row.removed or row.expires <= now:
                raise GeniError(GeniCode.EXPIRED, f"slice {row.urn} expired at {format_time(row.expires)}")
            target = Gid.from_pem(row.cert_pem)
            expires = row.expires
        privileges = _AUDITOR_PRIVILEGES if role == "AUDITOR" else SLICE_PRIVILEGES
        return issue_credential(self.sa, owner, target, privileges, expires, now=now)

    def role_in_slice(self, member: Urn | str, urn: Urn | str) -> str | None:
        """The member's effective role in the slice (project LEAD/ADMIN count as ADMIN), or None."""
        with transaction(self._sessions) as s:
            row, prow, who = self._slice_and_member(s, urn, member)
            return self._slice_role(s, row, prow, who)

    @staticmethod
    def _slice_expiry(now: datetime, expires: datetime, prow: ProjectRow) -> datetime:
        expires = seconds(expires)
        if expires <= now:
            raise GeniError(GeniCode.OUTOFRANGE, f"slice expiration {format_time(expires)} is not in the future")
        if expires > prow.expires:
            raise GeniError(
                GeniCode.OUTOFRANGE,
                f"slice expiration {format_time(expires)} is after the expiration of project {prow.urn} "
                f"({format_time(prow.expires)})",
            )
        return expires

    @staticmethod
    def _slice_row(s: Session, urn: Urn | str, *, lock: bool = False) -> SliceRow:
        u = canonical(urn, "slice")
        q = select(SliceRow).where(SliceRow.urn == str(u)).order_by(SliceRow.id.desc()).limit(1)
        if lock:
            q = q.with_for_update()
        row = s.scalar(q)
        if row is None:
            raise GeniError(GeniCode.SEARCHFAILED, f"no slice {u}")
        return row

    def _slice_and_member(
        self, s: Session, urn: Urn | str, member: Urn | str, *, lock: bool = False
    ) -> tuple[SliceRow, ProjectRow, MemberRow]:
        """The most recent slice with this URN (locked with ``lock``), its project, and ``member``'s row."""
        row = self._slice_row(s, urn, lock=lock)
        prow = s.get(ProjectRow, row.project_id)
        assert prow is not None
        return row, prow, self._member_row(s, member)

    @staticmethod
    def _slice_role(s: Session, row: SliceRow, prow: ProjectRow, who: MemberRow) -> str | None:
        sm = s.get(SliceMemberRow, (row.id, who.id))
        pm = s.get(ProjectMemberRow, (prow.id, who.id))
        if pm is not None and pm.role in MANAGERS and (sm is None or sm.role not in MANAGERS):
            return "ADMIN"
        if sm is not None and pm is not None:
            return sm.role
        return None

    def _require_slice_role(
        self, s: Session, row: SliceRow, prow: ProjectRow, who: MemberRow, roles: Iterable[str], action: str
    ) -> str:
        role = self._slice_role(s, row, prow, who)
        if role is None:
            raise GeniError(GeniCode.FORBIDDEN, f"{who.urn} is not a member of slice {row.urn}")
        if role not in set(roles):
            raise GeniError(GeniCode.FORBIDDEN, f"a slice {role} may not {action} slice {row.urn}")
        return role

    def _to_slice(self, s: Session, row: SliceRow) -> Slice:
        prow = s.get(ProjectRow, row.project_id)
        assert prow is not None
        return _slice(row, prow.urn, self._urn_of(s, row.owner_id))


def _slice(row: SliceRow, project_urn_text: str, owner_urn: str) -> Slice:
    return Slice(
        urn=Urn.parse(row.urn),
        name=row.name,
        uuid=row.uuid,
        project_urn=Urn.parse(project_urn_text),
        owner_urn=Urn.parse(owner_urn),
        description=row.description,
        created=row.created,
        expires=row.expires,
        removed=row.removed,
        gid=Gid.from_pem(row.cert_pem),
    )


__all__ = [
    "PROJECT_ROLES",
    "SLICE_GID_LIFETIME",
    "SLICE_ROLES",
    "Membership",
    "Project",
    "Slice",
    "SliceAuthority",
]
