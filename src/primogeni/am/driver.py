"""The resource-driver interface: how the AM makes slivers real on its meta resources.

The AM decides (placement, accounting, state); a driver realises. A :class:`SliverPlan` is plain
data — everything a node agent needs to build one sliver — and the driver calls are
idempotent, so the AM can replay them after a crash. The node agents of the substrate implement
this same interface; :class:`RecordingDriver` records plans in the AM's database, which is
what the control-framework tests use and what an AM without a substrate runs on.

Beyond the protocol a driver may offer (the AM looks for them): ``provision_many(plans)`` and
``release_many(urns)`` (batches, e.g. in parallel), ``deliver(event, nodes)`` (events),
``monitor(urns)`` (per-sliver figures), ``node_usage()`` (per physical node figures) and
``sweep()`` (retry what could not be finished, run by the reaper).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from primogeni.agent.spec import EventSpec
from primogeni.am.models import PlanRow
from primogeni.db import reader_factory
from primogeni.geni.codes import GeniCode
from primogeni.geni.errors import GeniError
from primogeni.geni.times import utcnow


@dataclass(frozen=True)
class PlannedInterface:
    client_id: str
    name: str  # device name inside the sliver (eth1, eth2, ...)
    mac: str
    address: str | None
    netmask: str | None
    link_sliver: str | None  # URN of the link sliver this interface belongs to


@dataclass(frozen=True)
class PlannedLogin:
    username: str
    port: int
    keys: tuple[str, ...]


@dataclass(frozen=True)
class SliverPlan:
    slice_urn: str
    sliver_urn: str
    kind: str  # "node" | "link"
    client_id: str
    component: str  # physical node (node slivers); physical link or "" (link slivers)
    sliver_type: str = ""
    exclusive: bool = False
    slots: tuple[int, ...] = ()
    hostname: str = ""
    interfaces: tuple[PlannedInterface, ...] = ()
    logins: tuple[PlannedLogin, ...] = ()
    vni: int | None = None
    endpoints: tuple[tuple[str, str], ...] = ()  # link: (node sliver URN, interface client_id)
    capacity_kbps: int | None = None
    latency_ms: float | None = None
    packet_loss: float | None = None
    model: dict[str, object] | None = field(default=None)  # simulator slivers: the model ({format, text})
    attach: tuple[tuple[str, str], ...] = ()  # simulator slivers: (emulated host path, its interface's name)
    routes: tuple[tuple[str, str], ...] = ()  # node slivers: (destination prefix, gateway), e.g. to a model
    # node slivers: the control port range [lo, hi] (ssh on lo), the slice's hosts (client_id →
    # first experimental address), its link VNIs and the physical nodes of its node slivers (vsys)
    ports: tuple[int, int] | None = None
    hosts: tuple[tuple[str, str], ...] = ()
    vsys_keys: tuple[int, ...] = ()
    vsys_peers: tuple[str, ...] = ()
    # link slivers, aligned with ``endpoints``: the physical node and the interface's device name
    nodes: tuple[str, ...] = ()
    iface_names: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


class EventRefused(GeniError):
    """A driver took an event but it cannot be applied (a bad command, a sliver the node does not hold):
    the event fails for good instead of being retried."""

    def __init__(self, message: str):
        super().__init__(GeniCode.ERROR, message)


class ResourceDriver(Protocol):
    """What realises slivers. Every call is idempotent; ``release`` of an unknown sliver is a no-op."""

    def provision(self, plan: SliverPlan) -> None: ...

    def start(self, sliver_urn: str) -> None: ...

    def stop(self, sliver_urn: str) -> None: ...

    def release(self, sliver_urn: str) -> None: ...

    def status(self, sliver_urn: str) -> str | None:
        """``"ready"``, ``"stopped"``, ``"failed"``, or ``None`` when the driver holds nothing for it."""
        ...

    def held(self, among: Collection[str] | None = None) -> set[str]:
        """URNs of the slivers the driver holds now: all of them (reconciliation after a restart),
        or those of ``among`` (status checks)."""
        ...


class RecordingDriver:
    """Records plans in the AM database (table ``am_driver_plans``) instead of touching a kernel.

    ``delay`` (seconds per provision) models slow realisation; the restart test uses it to kill
    the AM in the middle of a provision.
    """

    def __init__(self, sessions: sessionmaker[Session], *, delay: float = 0.0,
                 clock: Callable[[], datetime] = utcnow):
        self._sessions = sessions
        self._readers = reader_factory(sessions.kw["bind"])
        self._delay = delay
        self._clock = clock
        self.events: list[tuple[EventSpec, tuple[str, ...]]] = []  # delivered events and their nodes

    def _set(self, sliver_urn: str, state: str, plan: SliverPlan | None = None) -> None:
        with self._sessions.begin() as session:
            row = session.get(PlanRow, sliver_urn)
            if row is None:
                if plan is None:
                    raise KeyError(f"driver holds no sliver {sliver_urn}")
                session.add(PlanRow(sliver_urn=sliver_urn, plan=plan.to_json(), state=state, updated=self._clock()))
            else:
                if plan is not None:
                    row.plan = plan.to_json()
                row.state = state
                row.updated = self._clock()

    def provision(self, plan: SliverPlan) -> None:
        if self._delay:
            time.sleep(self._delay)
        self._set(plan.sliver_urn, "provisioned", plan)

    def start(self, sliver_urn: str) -> None:
        self._set(sliver_urn, "started")

    def stop(self, sliver_urn: str) -> None:
        self._set(sliver_urn, "stopped")

    def release(self, sliver_urn: str) -> None:
        with self._sessions.begin() as session:
            session.execute(delete(PlanRow).where(PlanRow.sliver_urn == sliver_urn))

    def status(self, sliver_urn: str) -> str | None:
        with self._readers() as session:
            row = session.get(PlanRow, sliver_urn)
            if row is None:
                return None
            return {"provisioned": "stopped", "started": "ready", "stopped": "stopped"}[row.state]

    def held(self, among: Collection[str] | None = None) -> set[str]:
        query = select(PlanRow.sliver_urn)
        if among is not None:
            if not among:
                return set()
            query = query.where(PlanRow.sliver_urn.in_(list(among)))
        with self._readers() as session:
            return set(session.scalars(query))

    def deliver(self, event: EventSpec, nodes: Collection[str]) -> str:
        """Record an event (kept in ``events``, in this process only); always ``"applied"``."""
        self.events.append((event, tuple(nodes)))
        return "applied"

    def plan(self, sliver_urn: str) -> dict[str, object] | None:
        """The recorded plan of one sliver (tests and ``primo am`` diagnostics)."""
        with self._readers() as session:
            row = session.get(PlanRow, sliver_urn)
            return None if row is None else json.loads(row.plan)
