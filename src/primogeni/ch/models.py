"""The clearinghouse's durable state: SQLAlchemy tables with their own ``DeclarativeBase``.

One schema serves SQLite (the default file ``ch/ch.sqlite``) and PostgreSQL. Times are stored as
naive UTC (SQLite keeps no zone) and always come back as aware UTC datetimes (:class:`UtcDateTime`).
Certificates are stored as PEM text so that a restarted service issues credentials whose target
and owner GIDs are the very certificates it issued before.

Slices are not unique by URN: a name may be reused in a project once the earlier slice has expired
or been removed, so a slice URN names the most recent row with that URN.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime, stored naive in UTC so that SQLite and PostgreSQL agree."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


class ChBase(DeclarativeBase):
    """The clearinghouse's tables (created with ``ChBase.metadata.create_all``)."""


class MemberRow(ChBase):
    """A member of the local member authority; ``cert_pem`` is the user GID with the MA chain."""

    __tablename__ = "ch_members"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    urn: Mapped[str] = mapped_column(String(512), unique=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    email: Mapped[str] = mapped_column(String(320))
    first_name: Mapped[str] = mapped_column(String(128), default="")
    last_name: Mapped[str] = mapped_column(String(128), default="")
    cert_pem: Mapped[str] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(UtcDateTime)


class SshKeyRow(ChBase):
    """One public SSH key of a member (``KEY_ID`` on the wire is the row id)."""

    __tablename__ = "ch_ssh_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("ch_members.id", ondelete="CASCADE"), index=True)
    key_type: Mapped[str] = mapped_column(String(64))
    public_key: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(String(512), default="")
    created: Mapped[datetime] = mapped_column(UtcDateTime)


class ProjectRow(ChBase):
    """A project: the upper level of the two-level names; its expiration bounds its slices."""

    __tablename__ = "ch_projects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    urn: Mapped[str] = mapped_column(String(512), unique=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    lead_id: Mapped[int] = mapped_column(ForeignKey("ch_members.id"))
    created: Mapped[datetime] = mapped_column(UtcDateTime)
    expires: Mapped[datetime] = mapped_column(UtcDateTime)


class ProjectMemberRow(ChBase):
    """A member's role in a project (LEAD, ADMIN, MEMBER or AUDITOR)."""

    __tablename__ = "ch_project_members"
    project_id: Mapped[int] = mapped_column(ForeignKey("ch_projects.id", ondelete="CASCADE"), primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("ch_members.id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))


class SliceRow(ChBase):
    """A slice (experiment) of a project; ``cert_pem`` is the slice GID the SA issued."""

    __tablename__ = "ch_slices"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    urn: Mapped[str] = mapped_column(String(512), index=True)
    name: Mapped[str] = mapped_column(String(64))
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("ch_projects.id"))
    owner_id: Mapped[int] = mapped_column(ForeignKey("ch_members.id"))
    description: Mapped[str] = mapped_column(Text, default="")
    cert_pem: Mapped[str] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(UtcDateTime)
    expires: Mapped[datetime] = mapped_column(UtcDateTime)
    removed: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (Index("ix_ch_slices_project_name", "project_id", "name"),)


class SliceMemberRow(ChBase):
    """A member's role in a slice (LEAD, ADMIN, MEMBER, OPERATOR or AUDITOR)."""

    __tablename__ = "ch_slice_members"
    slice_id: Mapped[int] = mapped_column(ForeignKey("ch_slices.id", ondelete="CASCADE"), primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("ch_members.id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))


class AggregateRow(ChBase):
    """A registered aggregate manager; ``api_versions`` is JSON ``{version: url}``."""

    __tablename__ = "ch_aggregates"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    urn: Mapped[str] = mapped_column(String(512), unique=True)
    url: Mapped[str] = mapped_column(String(1024))
    cert_pem: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text, default="")
    kind: Mapped[str] = mapped_column(String(32))
    api_versions: Mapped[str] = mapped_column(Text, default="{}")
    registered: Mapped[datetime] = mapped_column(UtcDateTime)


__all__ = [
    "AggregateRow",
    "ChBase",
    "MemberRow",
    "ProjectMemberRow",
    "ProjectRow",
    "SliceMemberRow",
    "SliceRow",
    "SshKeyRow",
    "UtcDateTime",
]
