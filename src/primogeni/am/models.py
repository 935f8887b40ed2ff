"""The aggregate manager's durable state (SQLAlchemy): the one truth for slices and slivers.

Exclusivity is enforced by the database itself, not only by the allocator: a node sliver owns
rows in ``am_claims`` keyed by (component, slot) and a link sliver owns a row in ``am_vnis``
keyed by its VNI (and its experimental subnet in ``am_subnets``), so two slices can never hold the
same slot, tag or subnet, even if two AM processes raced past their checks. The agent registry
(``am_agents``), the agent driver's placement record (``am_driver_links``) and events
(``am_events``) live here too.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, Integer, String, Text, TypeDecorator
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Sliver states (AM API v3): allocation and operational.
ALLOCATED = "geni_allocated"
PROVISIONED = "geni_provisioned"
UNALLOCATED = "geni_unallocated"
PENDING = "geni_pending_allocation"
NOTREADY = "geni_notready"
READY = "geni_ready"
FAILED = "geni_failed"


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
    subnet: Mapped[SubnetRow | None] = relationship(cascade="all, delete-orphan")


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


class SubnetRow(Base):
    """The experimental subnet (from the configured pool) of one link sliver: no two links share one."""

    __tablename__ = "am_subnets"

    subnet: Mapped[str] = mapped_column(String(64), primary_key=True)  # "10.128.0.0/24"
    sliver_urn: Mapped[str] = mapped_column(ForeignKey("am_slivers.urn", ondelete="CASCADE"), unique=True)
    slice_urn: Mapped[str] = mapped_column(String(512), index=True)


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


class AgentRow(Base):
    """A node agent as it last registered (``Register`` at ``/primo/registry/1``)."""

    __tablename__ = "am_agents"

    name: Mapped[str] = mapped_column(String(256), primary_key=True)  # the physical node (inventory name)
    urn: Mapped[str] = mapped_column(String(512))
    url: Mapped[str] = mapped_column(String(1024))  # https://<underlay>:<port>/primo/agent/1
    underlay: Mapped[str] = mapped_column(String(64))  # the node's underlay IPv4 address
    kind: Mapped[str] = mapped_column(String(16))
    capacity: Mapped[int] = mapped_column(Integer)
    facts: Mapped[str] = mapped_column(Text, default="{}")  # JSON: cpus, mem_total, disk_total, interfaces
    features: Mapped[str] = mapped_column(Text, default="{}")  # JSON: what the node's kernel offers
    registered: Mapped[datetime] = mapped_column(UtcDateTime)  # first registration
    last_seen: Mapped[datetime] = mapped_column(UtcDateTime)


class DriverSliverRow(Base):
    """Where the agent driver put a sliver or link: the physical nodes to reach for stop/release.

    Written before the agents are called (so a crash in between still lets release reach them) and
    deleted once every node released it; ``state = "releasing"`` marks a release still to retry.
    """

    __tablename__ = "am_driver_links"

    urn: Mapped[str] = mapped_column(String(512), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))  # "node" | "link"
    slice_urn: Mapped[str] = mapped_column(String(512), index=True)
    nodes: Mapped[str] = mapped_column(Text)  # JSON list of physical node names
    detail: Mapped[str] = mapped_column(Text, default="{}")  # JSON: node slivers' slot and interface names
    state: Mapped[str] = mapped_column(String(16), default="held")  # held | releasing
    updated: Mapped[datetime] = mapped_column(UtcDateTime)


class EventRow(Base):
    """An Emulab-style event (link down/up, host start/stop/reboot); its id is the event_id agents see."""

    __tablename__ = "am_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    slice_urn: Mapped[str] = mapped_column(String(512), index=True)
    target: Mapped[str] = mapped_column(String(512))  # sliver URN of the link or host
    kind: Mapped[str] = mapped_column(String(8))  # "link" | "host"
    action: Mapped[str] = mapped_column(String(16))  # down | up | start | stop | reboot
    command: Mapped[str] = mapped_column(Text, default="[]")  # JSON argv (host start/stop)
    at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)  # None: now
    state: Mapped[str] = mapped_column(String(16), index=True)  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[datetime] = mapped_column(UtcDateTime)


class LockRow(Base):
    """A single row that allocation-changing transactions lock (SELECT … FOR UPDATE) on PostgreSQL."""

    __tablename__ = "am_lock"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
