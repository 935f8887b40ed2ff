"""Projects: the upper level of the slice authority's two-level names, and their members.

A project is ``urn:publicid:IDN+<auth>+project+<p>``. Any member may create one and becomes its
LEAD; it expires at most ``max_project_lifetime`` from now (OUTOFRANGE otherwise); LEAD and ADMIN
manage its membership (roles LEAD, ADMIN, MEMBER, AUDITOR; there is one LEAD, and only the LEAD
hands the role on). :class:`ProjectAuthority` is the part of the slice authority
(:class:`~primogeni.ch.slices.SliceAuthority`) that deals with projects; it also holds the
helpers both levels share.

Every public method makes its changes in one transaction: it does everything or changes nothing.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.expression import ColumnElement

from primogeni.ch.models import MemberRow, ProjectMemberRow, ProjectRow, SliceMemberRow, SliceRow
from primogeni.db import transaction
from primogeni.geni.cert import Identity
from primogeni.geni.codes import GeniCode
from primogeni.geni.errors import GeniError
from primogeni.geni.times import rfc3339, utcnow
from primogeni.geni.urn import Urn, check_project_name, project_urn

Clock = Callable[[], datetime]

PROJECT_ROLES = ("LEAD", "ADMIN", "MEMBER", "AUDITOR")
SLICE_ROLES = ("LEAD", "ADMIN", "MEMBER", "OPERATOR", "AUDITOR")
#: Roles that manage members (and, in a project, act as ADMIN on every slice of it).
MANAGERS = frozenset({"LEAD", "ADMIN"})
MAX_DESCRIPTION = 4096


def seconds(t: datetime) -> datetime:
    """``t`` in UTC, truncated to whole seconds (what the wire carries); naive times are refused."""
    if t.tzinfo is None:
        raise ValueError("times given to the slice authority must be timezone-aware")
    return t.astimezone(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Project:
    """A project as the SA knows it."""

    urn: Urn
    name: str
    uuid: str
    description: str
    lead_urn: Urn
    created: datetime
    expires: datetime

    def expired(self, now: datetime) -> bool:
        return self.expires <= now


@dataclass(frozen=True)
class Membership:
    """A member's role in a project or a slice."""

    member_urn: Urn
    member_uuid: str
    role: str


def check_description(text: str) -> str:
    """A project or slice description; BADARGS if it is not a string or too long."""
    if not isinstance(text, str) or len(text) > MAX_DESCRIPTION:
        raise GeniError(GeniCode.BADARGS, f"a description must be a string of at most {MAX_DESCRIPTION} characters")
    return text


def canonical(urn: Urn | str, kind: str) -> Urn:
    """``urn`` parsed, and of type ``kind`` (BADARGS otherwise)."""
    u = urn if isinstance(urn, Urn) else Urn.parse(urn)
    if u.type != kind:
        raise GeniError(GeniCode.BADARGS, f"{u} is not a {kind} URN")
    return u


class ProjectAuthority:
    """Projects and their members (the project half of the slice authority)."""

    def __init__(
        self,
        authority_name: str,
        sa: Identity,
        sessions: sessionmaker[Session],
        *,
        clock: Clock = utcnow,
        max_project_lifetime: timedelta = timedelta(days=365),
        default_slice_lifetime: timedelta = timedelta(days=7),
    ):
        self.authority_name = authority_name
        self.sa = sa
        self._sessions = sessions
        self._clock = clock
        self.max_project_lifetime = max_project_lifetime
        self.default_slice_lifetime = default_slice_lifetime

    def now(self) -> datetime:
        """The authority's clock, in whole seconds."""
        return seconds(self._clock())

    def create_project(
        self, creator: Urn | str, name: str, *, expires: datetime | None = None, description: str = ""
    ) -> Project:
        """Create project ``name`` led by ``creator``; ALREADYEXISTS, OUTOFRANGE, BADARGS."""
        check_project_name(name)
        description = check_description(description)
        now = self.now()
        expires = self._project_expiry(now, expires)
        urn = project_urn(self.authority_name, name)
        with transaction(self._sessions) as s:
            lead = self._member_row(s, creator)
            if s.scalar(select(ProjectRow.id).where(ProjectRow.name == name)) is not None:
                raise GeniError(GeniCode.ALREADYEXISTS, f"project {name!r} already exists")
            row = ProjectRow(
                name=name,
                urn=str(urn),
                uuid=new_uuid(),
                description=description,
                lead_id=lead.id,
                created=now,
                expires=expires,
            )
            s.add(row)
            try:
                s.flush()
            except IntegrityError as e:
                raise GeniError(GeniCode.ALREADYEXISTS, f"project {name!r} already exists") from e
            s.add(ProjectMemberRow(project_id=row.id, member_id=lead.id, role="LEAD"))
            return _project(row, lead.urn)

    def project(self, urn: Urn | str) -> Project:
        """The project with this URN; SEARCHFAILED if there is none."""
        with transaction(self._sessions) as s:
            row = self._project_row(s, urn)
            return _project(row, self._urn_of(s, row.lead_id))

    def projects(
        self,
        *,
        urns: Iterable[Urn | str] | None = None,
        names: Iterable[str] | None = None,
        uids: Iterable[str] | None = None,
        expired: bool | None = None,
    ) -> list[Project]:
        """Projects matching every given criterion, by name."""
        q = (
            select(ProjectRow, MemberRow.urn)
            .join(MemberRow, MemberRow.id == ProjectRow.lead_id)
            .order_by(ProjectRow.name)
        )
        if urns is not None:
            q = q.where(ProjectRow.urn.in_([str(canonical(u, "project")) for u in urns]))
        if names is not None:
            q = q.where(ProjectRow.name.in_(list(names)))
        if uids is not None:
            q = q.where(ProjectRow.uuid.in_(list(uids)))
        now = self.now()
        if expired is True:
            q = q.where(ProjectRow.expires <= now)
        elif expired is False:
            q = q.where(ProjectRow.expires > now)
        with transaction(self._sessions) as s:
            return [_project(row, lead) for row, lead in s.execute(q).all()]

    def update_project(
        self, caller: Urn | str, urn: Urn | str, *, expires: datetime | None = None, description: str | None = None
    ) -> Project:
        """Change a project's expiration or description (LEAD or ADMIN only).

        The expiration obeys the same limits as at creation and may not fall before the
        expiration of any live slice of the project (OUTOFRANGE naming the slice).
        """
        now = self.now()
        with transaction(self._sessions) as s:
            row = self._project_row(s, urn, lock=True)
            who = self._member_row(s, caller)
            self._require_project_role(s, row, who, MANAGERS, "update project")
            if expires is not None:
                expires = self._project_expiry(now, expires)
                live = live_slice(s, row.id, expires)
                if live is not None:
                    raise GeniError(
                        GeniCode.OUTOFRANGE,
                        f"slice {live.urn} expires {format_time(live.expires)}, after the requested project expiration",
                    )
                row.expires = expires
            if description is not None:
                row.description = check_description(description)
            return _project(row, self._urn_of(s, row.lead_id))

    def project_members(self, urn: Urn | str) -> list[Membership]:
        """Members of a project with their roles (LEAD first)."""
        with transaction(self._sessions) as s:
            row = self._project_row(s, urn)
            return member_list(s, ProjectMemberRow, ProjectMemberRow.project_id == row.id)

    def projects_for_member(self, member: Urn | str, *, expired: bool | None = None) -> list[tuple[Project, str]]:
        """The projects ``member`` belongs to, with the member's role in each."""
        now = self.now()
        with transaction(self._sessions) as s:
            who = self._member_row(s, member)
            q = (
                select(ProjectRow, ProjectMemberRow.role)
                .join(ProjectMemberRow, ProjectMemberRow.project_id == ProjectRow.id)
                .where(ProjectMemberRow.member_id == who.id)
                .order_by(ProjectRow.name)
            )
            out = []
            for row, role in s.execute(q).all():
                p = _project(row, self._urn_of(s, row.lead_id))
                if expired is None or p.expired(now) == expired:
                    out.append((p, role))
            return out

    def modify_project_membership(
        self,
        caller: Urn | str,
        urn: Urn | str,
        *,
        add: Sequence[tuple[Urn | str, str]] = (),
        remove: Sequence[Urn | str] = (),
        change: Sequence[tuple[Urn | str, str]] = (),
    ) -> None:
        """Add, remove or re-role project members (caller: LEAD or ADMIN of the project).

        Only the LEAD makes someone else LEAD (the old LEAD becomes ADMIN); the LEAD cannot be
        removed; a member who owns a live slice of the project cannot be removed.
        """
        now = self.now()
        with transaction(self._sessions) as s:
            row = self._project_row(s, urn, lock=True)
            who = self._member_row(s, caller)
            caller_role = self._require_project_role(s, row, who, MANAGERS, "change the members of")
            for member, role in add:
                m = self._member_in_role(s, member, role, PROJECT_ROLES, "project")
                if role == "LEAD":
                    raise GeniError(
                        GeniCode.BADARGS, "add members as ADMIN, MEMBER or AUDITOR; change the LEAD instead"
                    )
                link = ProjectMemberRow(project_id=row.id, member_id=m.id, role=role)
                add_membership(s, link, (row.id, m.id), row.urn, m)
            for member, role in change:
                m = self._member_in_role(s, member, role, PROJECT_ROLES, "project")
                pm = membership_row(s, ProjectMemberRow, (row.id, m.id), row.urn, m)
                if pm.role == "LEAD" and role != "LEAD":
                    raise GeniError(GeniCode.BADARGS, "the LEAD's role changes only by making another member LEAD")
                if role == "LEAD" and pm.role != "LEAD":
                    if caller_role != "LEAD":
                        raise GeniError(GeniCode.FORBIDDEN, "only the project LEAD can hand the LEAD role on")
                    old = s.get(ProjectMemberRow, (row.id, row.lead_id))
                    if old is not None:
                        old.role = "ADMIN"
                    row.lead_id = m.id
                pm.role = role
            for member in remove:
                m = self._member_row(s, member)
                pm = membership_row(s, ProjectMemberRow, (row.id, m.id), row.urn, m)
                if pm.role == "LEAD":
                    raise GeniError(GeniCode.BADARGS, "the project LEAD cannot be removed")
                owned = live_slice(s, row.id, now, SliceRow.owner_id == m.id)
                if owned is not None:
                    raise GeniError(GeniCode.BADARGS, f"{m.urn} leads live slice {owned.urn}")
                slice_ids = select(SliceRow.id).where(SliceRow.project_id == row.id)
                s.execute(
                    delete(SliceMemberRow).where(
                        SliceMemberRow.member_id == m.id, SliceMemberRow.slice_id.in_(slice_ids)
                    )
                )
                s.delete(pm)
                s.flush()

    def role_in_project(self, member: Urn | str, urn: Urn | str) -> str | None:
        """The member's role in the project, or None."""
        with transaction(self._sessions) as s:
            row = self._project_row(s, urn)
            who = self._member_row(s, member)
            pm = s.get(ProjectMemberRow, (row.id, who.id))
            return None if pm is None else pm.role

    def _project_expiry(self, now: datetime, expires: datetime | None) -> datetime:
        limit = now + self.max_project_lifetime
        if expires is None:
            return limit
        expires = seconds(expires)
        if expires <= now:
            raise GeniError(GeniCode.OUTOFRANGE, f"project expiration {format_time(expires)} is not in the future")
        if expires > limit:
            raise GeniError(
                GeniCode.OUTOFRANGE,
                f"project expiration {format_time(expires)} is after {format_time(limit)} "
                f"(projects last at most {self.max_project_lifetime.days} days)",
            )
        return expires

    @staticmethod
    def _member_row(s: Session, urn: Urn | str) -> MemberRow:
        u = canonical(urn, "user")
        row = s.scalar(select(MemberRow).where(MemberRow.urn == str(u)))
        if row is None:
            raise GeniError(GeniCode.FORBIDDEN, f"{u} is not a member of this clearinghouse")
        return row

    def _member_in_role(self, s: Session, member: Urn | str, role: str, roles: Sequence[str], what: str) -> MemberRow:
        """The member to be given ``role`` in a project or slice; BADARGS unless it is one of ``roles``."""
        m = self._member_row(s, member)
        check_role(role, roles, what)
        return m

    @staticmethod
    def _project_row(s: Session, urn: Urn | str, *, lock: bool = False) -> ProjectRow:
        u = canonical(urn, "project")
        q = select(ProjectRow).where(ProjectRow.urn == str(u))
        if lock:
            q = q.with_for_update()
        row = s.scalar(q)
        if row is None:
            raise GeniError(GeniCode.SEARCHFAILED, f"no project {u}")
        return row

    @staticmethod
    def _require_project_role(s: Session, prow: ProjectRow, who: MemberRow, roles: Iterable[str], action: str) -> str:
        pm = s.get(ProjectMemberRow, (prow.id, who.id))
        if pm is None:
            raise GeniError(GeniCode.FORBIDDEN, f"{who.urn} is not a member of project {prow.urn}")
        if pm.role not in set(roles):
            raise GeniError(GeniCode.FORBIDDEN, f"a project {pm.role} may not {action} project {prow.urn}")
        return pm.role

    @staticmethod
    def _urn_of(s: Session, member_id: int) -> str:
        row = s.get(MemberRow, member_id)
        assert row is not None
        return row.urn


def check_role(role: str, roles: Sequence[str], what: str) -> None:
    """BADARGS unless ``role`` is one of ``roles``."""
    if role not in roles:
        raise GeniError(GeniCode.BADARGS, f"unknown {what} role {role!r} (one of {', '.join(roles)})")


_Link = TypeVar("_Link", ProjectMemberRow, SliceMemberRow)


def membership_row(s: Session, table: type[_Link], key: tuple[int, int], target_urn: str, m: MemberRow) -> _Link:
    """``m``'s membership row of a project or slice (``key``: its id, the member's); SEARCHFAILED if none."""
    link = s.get(table, key)
    if link is None:
        raise GeniError(GeniCode.SEARCHFAILED, f"{m.urn} is not a member of {target_urn}")
    return link


def add_membership(
    s: Session, link: ProjectMemberRow | SliceMemberRow, key: tuple[int, int], target_urn: str, m: MemberRow
) -> None:
    """Add membership ``link`` (``key``: the project or slice id, the member's); ALREADYEXISTS if there is one."""
    if s.get(type(link), key) is not None:
        raise GeniError(GeniCode.ALREADYEXISTS, f"{m.urn} is already a member of {target_urn}")
    s.add(link)
    s.flush()


def live_slice(s: Session, project_id: int, after: datetime, *where: ColumnElement[bool]) -> SliceRow | None:
    """A slice of the project, not removed, that expires after ``after`` and matches ``where``."""
    return s.scalars(
        select(SliceRow).where(
            SliceRow.project_id == project_id, *where, SliceRow.removed.is_(False), SliceRow.expires > after
        )
    ).first()


def member_list(
    s: Session, table: type[ProjectMemberRow] | type[SliceMemberRow], where: ColumnElement[bool]
) -> list[Membership]:
    """The members of ``table``'s rows that match ``where`` (one project or slice), by role."""
    q = select(MemberRow.urn, MemberRow.uuid, table.role).join(MemberRow, MemberRow.id == table.member_id).where(where)
    return memberships(s.execute(q).all())


def _project(row: ProjectRow, lead_urn: str) -> Project:
    return Project(
        urn=Urn.parse(row.urn),
        name=row.name,
        uuid=row.uuid,
        description=row.description,
        lead_urn=Urn.parse(lead_urn),
        created=row.created,
        expires=row.expires,
    )


def memberships(rows: Iterable[tuple[str, str, str]]) -> list[Membership]:
    """Memberships sorted by role (LEAD first), then URN."""
    order = {r: i for i, r in enumerate(SLICE_ROLES)}
    out = [Membership(Urn.parse(u), uid, role) for u, uid, role in rows]
    return sorted(out, key=lambda m: (order.get(m.role, 99), str(m.member_urn)))


def new_uuid() -> str:
    """A random UUID as text."""
    return str(uuidlib.uuid4())


format_time = rfc3339


__all__ = ["MANAGERS", "PROJECT_ROLES", "SLICE_ROLES", "Membership", "Project", "ProjectAuthority"]
