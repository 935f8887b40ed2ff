"""The aggregate manager's durable state (SQLAlchemy): the one truth for slices and slivers.

Exclusivity is enforced by the database itself, not only by the allocator: a node sliver owns
rows in ``am_claims`` keyed by (component, slot) and a link sliver owns a row in ``am_vnis``
keyed by its VNI, so two slices can never hold the same slot or tag, even if two AM processes
raced past their checks.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, Integer, String, Text, TypeDecorator
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime stored; use aware UTC times")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class SliceRow(Base):
    __tablename__ = "am_slices"

    urn: Mapped[str] = mapped_column(String(512), primary_key=True)
    owner_urn: Mapped[str] = mapped_column(String(512))
    expires: Mapped[datetime] = mapped_column(UtcDateTime)  # the slice's own expiry (from its credential)
    shutdown: Mapped[bool] = mapped_column(Boolean, default=False)
    request_xml: Mapped[str] = mapped_column(Text, default="")  # the last request RSpec (for the manifest)
    # ProtoGENI CM v2: the slice's aggregate sliver (what a sliver credential targets), once redeemed
    agg_sliver_urn: Mapped[str | None] = mapped_column(String(512), nullable=True, unique=True)
    agg_sliver_gid: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[datetime] = mapped_column(UtcDateTime)

    slivers: Mapped[list[SliverRow]] = relationship(back_populates="slice", cascade="all, delete-orphan")


class SliverRow(Base):
    __tablename__ = "am_slivers"

    urn: Mapped[str] = mapped_column(String(512), primary_key=True)
    slice_urn: Mapped[str] = mapped_column(ForeignKey("am_slices.urn", ondelete="CASCADE"), index=True)
    client_id: Mapped[str] = mapped_column(String(256))
    kind: Mapped[str] = mapped_column(String(8))  # "node" | "link"
    component: Mapped[str] = mapped_column(String(256), default="")  # physical node (nodes) or link
    sliver_type: Mapped[str] = mapped_column(String(64), default="")
    exclusive: Mapped[bool] = mapped_column(Boolean, default=False)
    allocation: Mapped[str] = mapped_column(String(32))  # geni_allocated | geni_provisioned
    operational: Mapped[str] = mapped_column(String(32))
    phase: Mapped[str] = mapped_column(String(16), default="")  # "" | "provisioning" (intent log)
    expires: Mapped[datetime] = mapped_column(UtcDateTime)
    error: Mapped[str] = mapped_column(Text, default="")
    spec: Mapped[str] = mapped_column(Text, default="{}")  # JSON: interfaces, addresses, logins, link ends
    bandwidth_kbps: Mapped[int] = mapped_column(Integer, default=0)  # reserved on the physical link
    ticket_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    created: Mapped[datetime] = mapped_column(UtcDateTime)

    slice: Mapped[SliceRow] = relationship(back_populates="slivers")
    claims: Mapped[list[ClaimRow]] = relationship(cascade="all, delete-orphan")
    vni: Mapped[VniRow | None] = relationship(cascade="all, delete-orphan")


class ClaimRow(Base):
    """One sliver slot on one physical node; an exclusive sliver claims every slot."""

    __tablename__ = "am_claims"

    component: Mapped[str] = mapped_column(String(256), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)
    sliver_urn: Mapped[str] = mapped_column(ForeignKey("am_slivers.urn", ondelete="CASCADE"), index=True)


class VniRow(Base):
    """The L2 segment tag (VXLAN VNI, reported as the manifest's vlantag) of one link sliver."""

    __tablename__ = "am_vnis"

    vni: Mapped[int] = mapped_column(Integer, primary_key=True)
    sliver_urn: Mapped[str] = mapped_column(ForeignKey("am_slivers.urn", ondelete="CASCADE"), unique=True)


class TicketRow(Base):
    """A ProtoGENI CM v2 ticket: the slice's open ticket holds its allocated slivers."""

    __tablename__ = "am_tickets"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    slice_urn: Mapped[str] = mapped_column(String(512), index=True)
    owner_urn: Mapped[str] = mapped_column(String(512))
    status: Mapped[str] = mapped_column(String(16))  # open | redeemed | released | stale
    redeem_before: Mapped[datetime] = mapped_column(UtcDateTime)
    xml: Mapped[str] = mapped_column(Text)


class PlanRow(Base):
    """What the recording driver was told to make real (one row per sliver)."""

    __tablename__ = "am_driver_plans"

    sliver_urn: Mapped[str] = mapped_column(String(512), primary_key=True)
    plan: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))  # provisioned | started | stopped
    updated: Mapped[datetime] = mapped_column(UtcDateTime)


class LockRow(Base):
    """A single row that allocation-changing transactions lock (SELECT … FOR UPDATE) on PostgreSQL."""

    __tablename__ = "am_lock"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
