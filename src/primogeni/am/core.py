"""The aggregate manager's core: slivers, their state machine, accounting, expiry, recovery.

API handlers (v2, v3, ProtoGENI CM) check credentials and translate arguments; they call this
class with an authorised slice. Every call is one database transaction over the AM's state (the
one truth); a driver realises provisioned slivers.

State machine (AM API v3): a sliver is *allocated* (operational ``geni_pending_allocation``),
then *provisioned* (``geni_notready``), started (``geni_ready``) or stopped again
(``geni_notready``); it is *unallocated* once deleted or expired. Allocations expire after
``allocation_lifetime`` unless provisioned; nothing outlives its slice.

Crash safety: Provision first records its intent (``phase = "provisioning"``) and commits, then
asks the driver, then commits the result. :meth:`AggregateManager.recover` (run at start-up)
rolls back any provision that was cut short — the driver releases what it made and the slivers
are allocated again — so a restart never leaves a half-made sliver.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from primogeni.am.allocate import create_rows
from primogeni.am.driver import ResourceDriver, SliverPlan
from primogeni.am.inventory import Inventory
from primogeni.am.models import (
    ALLOCATED,
    FAILED,
    NOTREADY,
    PENDING,
    PROVISIONED,
    READY,
    UNALLOCATED,
    ClaimRow,
    LockRow,
    SliceRow,
    SliverRow,
    TicketRow,
)
from primogeni.am.placement import Usage, place
from primogeni.am.plans import plan_of, plans_of
from primogeni.am.policy import AdmitAll, Policy
from primogeni.am.virtual import Wired, wire
from primogeni.db import reader_factory
from primogeni.geni.codes import GeniCode
from primogeni.geni.errors import GeniError
from primogeni.geni.rspec import Request
from primogeni.geni.times import utcnow
from primogeni.geni.urn import Urn

log = logging.getLogger(__name__)

__all__ = ["ACTIONS", "ALLOCATED", "FAILED", "NOTREADY", "PENDING", "PROVISIONED", "READY", "UNALLOCATED",
           "AggregateManager", "Sliver"]

ACTIONS = ("geni_start", "geni_stop", "geni_restart")
# What a sliver row owns (deleted with it): loaded up front when many rows are deleted at once.
OWNED = (selectinload(SliverRow.claims), selectinload(SliverRow.vni), selectinload(SliverRow.subnet))


class _DryRun(Exception):
    """Raised inside a dry-run allocation so that its transaction rolls back."""


@dataclass(frozen=True)
class Sliver:
    """What a caller sees of one sliver."""

    urn: str
    slice_urn: str
    client_id: str
    kind: str
    component: str
    allocation: str
    operational: str
    expires: datetime
    error: str = ""


class AggregateManager:
    def __init__(self, sessions: sessionmaker[Session], inventory: Inventory, driver: ResourceDriver, *,
                 cm: Urn, clock: Callable[[], datetime] = utcnow, policy: Policy | None = None,
                 allocation_lifetime: timedelta = timedelta(minutes=10),
                 sliver_lifetime: timedelta = timedelta(days=7)):
        self.sessions = sessions
        bind = sessions.kw["bind"]
        self.readers = reader_factory(bind)  # read-only calls (status, usage, descriptions)
        # Bumped by every write transaction this process commits (descriptions cache on it).
        self.generation = 0
        event.listen(sessions, "after_commit", self._committed)
        self.inventory = inventory
        self.driver = driver
        self.cm = cm
        self.clock = clock
        self.policy: Policy = policy or AdmitAll()
        self.allocation_lifetime = allocation_lifetime
        self.sliver_lifetime = sliver_lifetime
        # Which physical nodes may take new slivers now (None: all); the agent registry sets it.
        self.offered: Callable[[], frozenset[str] | None] = lambda: None
        self.wire: Callable[[Request], Wired] = wire  # a request's model checked and wired (primogeni.am.virtual)
        with sessions.begin() as session:
            if session.get(LockRow, 1) is None:
                session.add(LockRow(id=1))

    # -- helpers -----------------------------------------------------------------------------

    def _committed(self, _session: Session) -> None:
        self.generation += 1

    def _lock(self, session: Session) -> None:
        """Serialise allocation-changing transactions (SQLite: BEGIN IMMEDIATE does it already)."""
        session.execute(select(LockRow).where(LockRow.id == 1).with_for_update())

    def sliver_urn(self) -> str:
        return str(Urn(self.cm.authority, "sliver", uuid.uuid4().hex[:16]))

    @staticmethod
    def _view(row: SliverRow) -> Sliver:
        return Sliver(row.urn, row.slice_urn, row.client_id, row.kind, row.component, row.allocation,
                      row.operational, row.expires, row.error)

    def _slivers(self, session: Session, slice_urn: str, urns: Sequence[str] | None, *,
                 owned: bool = False) -> list[SliverRow]:
        """The slice's slivers (those of ``urns``, in that order); ``owned`` loads their claims, tag and
        subnet in three queries (for deleting many: no lazy load per row)."""
        query = select(SliverRow).where(SliverRow.slice_urn == slice_urn).order_by(SliverRow.kind.desc(),
                                                                                  SliverRow.client_id)
        if owned:
            query = query.options(*OWNED)
        rows = list(session.scalars(query))
        if urns is None:
            return rows
        by_urn = {r.urn: r for r in rows}
        missing = [u for u in urns if u not in by_urn]
        if missing:
            raise GeniError(GeniCode.SEARCHFAILED, f"no sliver {missing[0]} in slice {slice_urn}")
        return [by_urn[u] for u in urns]

    def _usage(self, session: Session) -> Usage:
        slots: dict[str, set[int]] = {}
        for component, slot in session.execute(select(ClaimRow.component, ClaimRow.slot)):
            slots.setdefault(component, set()).add(slot)
        link_kbps = dict(session.execute(
            select(SliverRow.component, func.sum(SliverRow.bandwidth_kbps))
            .where(SliverRow.kind == "link", SliverRow.component != "").group_by(SliverRow.component)).all())
        return Usage({k: frozenset(v) for k, v in slots.items()}, {k: int(v or 0) for k, v in link_kbps.items()})

    def usage(self) -> Usage:
        with self.readers() as session:
            return self._usage(session)

    # -- allocation ----------------------------------------------------------------------------

    def allocate(self, slice_urn: str, owner_urn: str, slice_expires: datetime, request: Request,
                 request_xml: str, *, end_time: datetime | None = None, ticket_id: str | None = None,
                 fresh_slice: bool = False, replace_ticket: str | None = None, dry_run: bool = False) -> list[Sliver]:
        """Place the request and record allocated slivers (all or nothing).

        ``replace_ticket`` frees that ticket's allocated slivers in the same transaction (ProtoGENI
        UpdateTicket: if the new request does not fit, the old allocation stays). ``dry_run`` only
        checks that the request fits.
        """
        now = self.clock()
        if slice_expires <= now:
            raise GeniError(GeniCode.EXPIRED, f"slice {slice_urn} expired at {slice_expires:%Y-%m-%dT%H:%M:%SZ}")
        expires = min(now + self.allocation_lifetime, slice_expires)
        if end_time is not None:
            if end_time <= now:
                raise GeniError(GeniCode.BADARGS, "geni_end_time is in the past")
            expires = min(expires, end_time)
        wired = self.wire(request)  # the model checked and its emulated hosts wired, before any lock
        try:
            return self._allocate(slice_urn, owner_urn, slice_expires, wired.request, request_xml, expires, now,
                                  ticket_id, fresh_slice, replace_ticket, dry_run, wired.extras)
        except _DryRun:
            return []

    def _allocate(self, slice_urn: str, owner_urn: str, slice_expires: datetime, request: Request, request_xml: str,
                  expires: datetime, now: datetime, ticket_id: str | None, fresh_slice: bool,
                  replace_ticket: str | None, dry_run: bool, extras: dict[str, dict[str, Any]]) -> list[Sliver]:
        with self.sessions.begin() as session:
            self._lock(session)
            slice_row = self._slice_row(session, slice_urn, owner_urn, slice_expires, now)
            if replace_ticket is not None:
                for old in list(slice_row.slivers):
                    if old.ticket_id == replace_ticket and old.allocation == ALLOCATED:
                        self._release(session, old, [])
                session.flush()
                session.expire(slice_row, ["slivers"])
            existing = {r.client_id for r in slice_row.slivers}
            if fresh_slice and existing:
                raise GeniError(GeniCode.ALREADYEXISTS, f"slice {slice_urn} already has slivers here; "
                                                        "delete them first")
            clash = sorted(existing & {n.client_id for n in request.nodes} | existing & {
                link.client_id for link in request.links})
            if clash:
                raise GeniError(GeniCode.ALREADYEXISTS, f"slice {slice_urn} already has a sliver named {clash[0]!r}")
            held = sum(1 for r in slice_row.slivers if r.kind == "node")
            self.policy.authorize(slice_urn, owner_urn, request, held)
            node_places, link_places = place(request, self.inventory, self._usage(session), cm=self.cm,
                                             slice_nodes={r.component for r in slice_row.slivers if r.kind == "node"},
                                             offered=self.offered())
            if dry_run:
                raise _DryRun
            rows = create_rows(session, slice_row, request, node_places, link_places, inventory=self.inventory,
                               cm=self.cm, new_urn=self.sliver_urn, expires=expires, now=now, ticket_id=ticket_id,
                               extras=extras)
            slice_row.request_xml = request_xml
            session.flush()
            return [self._view(r) for r in rows]

    def _slice_row(self, session: Session, slice_urn: str, owner_urn: str, slice_expires: datetime,
                   now: datetime) -> SliceRow:
        row = session.get(SliceRow, slice_urn)
        if row is None:
            row = SliceRow(urn=slice_urn, owner_urn=owner_urn, expires=slice_expires, created=now)
            session.add(row)
        elif row.shutdown:
            raise GeniError(GeniCode.FORBIDDEN, f"slice {slice_urn} was shut down by an operator")
        else:
            row.expires = max(row.expires, slice_expires)
        return row

    # -- provisioning and operation --------------------------------------------------------------

    def provision(self, slice_urn: str, urns: Sequence[str] | None, users: Iterable[tuple[str, Sequence[str]]],
                  slice_expires: datetime, *, end_time: datetime | None = None) -> list[Sliver]:
        now = self.clock()
        expires = min(now + self.sliver_lifetime, slice_expires)
        if end_time is not None:
            if end_time <= now:
                raise GeniError(GeniCode.BADARGS, "geni_end_time is in the past")
            if end_time > slice_expires:
                raise GeniError(GeniCode.OUTOFRANGE, "geni_end_time is past the slice's expiration")
            expires = end_time
        user_list = [{"urn": u, "keys": list(keys)} for u, keys in users]
        with self.sessions.begin() as session:
            self._lock(session)
            self._check_live(session, slice_urn)
            rows = self._slivers(session, slice_urn, urns)
            if not rows:
                raise GeniError(GeniCode.SEARCHFAILED, f"slice {slice_urn} has no slivers here")
            todo = [r for r in rows if r.allocation == ALLOCATED]
            for r in todo:
                if r.expires <= now:
                    raise GeniError(GeniCode.EXPIRED, f"the allocation of {r.client_id!r} expired; allocate again")
                r.phase = "provisioning"
                r.expires = expires
                if r.kind == "node":
                    spec = json.loads(r.spec)
                    spec["users"] = user_list
                    r.spec = json.dumps(spec)
            plans = plans_of(session, todo)
        done: list[str] = []
        batch = getattr(self.driver, "provision_many", None)
        try:
            if batch is not None:
                done = [p.sliver_urn for p in plans]  # on failure, release all: releasing is idempotent
                batch(plans)
            else:
                for plan in plans:
                    self.driver.provision(plan)
                    done.append(plan.sliver_urn)
        except Exception as exc:
            log.exception("provision of %s failed; rolling back", slice_urn)
            self._driver_release(done)
            with self.sessions.begin() as session:
                for r in self._slivers(session, slice_urn, [p.sliver_urn for p in plans]):
                    r.phase = ""
                    r.error = f"provision failed: {exc.reason if isinstance(exc, GeniError) else exc}"
            reason = exc.reason if isinstance(exc, GeniError) else str(exc)
            raise GeniError(GeniCode.ERROR, f"provisioning failed and was rolled back: {reason}") from exc
        with self.sessions.begin() as session:
            rows = self._slivers(session, slice_urn, urns)
            for r in rows:
                if r.phase == "provisioning":
                    r.phase, r.allocation, r.operational, r.error = "", PROVISIONED, NOTREADY, ""
            return [self._view(r) for r in rows]

    def _check_live(self, session: Session, slice_urn: str) -> SliceRow:
        row = session.get(SliceRow, slice_urn)
        if row is None:
            raise GeniError(GeniCode.SEARCHFAILED, f"slice {slice_urn} has no slivers here")
        if row.shutdown:
            raise GeniError(GeniCode.FORBIDDEN, f"slice {slice_urn} was shut down by an operator")
        return row

    def plan(self, sliver_urn: str) -> SliverPlan:
        """The plan the driver gets (or got) for one sliver."""
        with self.readers() as session:
            row = session.get(SliverRow, sliver_urn)
            if row is None:
                raise GeniError(GeniCode.SEARCHFAILED, f"no sliver {sliver_urn} here")
            return plan_of(session, row)

    def operate(self, slice_urn: str, urns: Sequence[str] | None, action: str) -> list[Sliver]:
        if action not in ACTIONS:
            raise GeniError(GeniCode.UNSUPPORTED, f"operational action {action!r} is not supported "
                                                  f"(supported: {', '.join(ACTIONS)})")
        with self.sessions() as session:
            self._check_live(session, slice_urn)
            rows = self._slivers(session, slice_urn, urns)
            not_ready = [r.client_id for r in rows if r.allocation != PROVISIONED]
            if not_ready:
                raise GeniError(GeniCode.BADARGS, f"sliver {not_ready[0]!r} is not provisioned; provision it first")
            targets = [r.urn for r in rows]
        states: dict[str, str] = {}
        for urn in targets:
            try:
                if action in ("geni_stop", "geni_restart"):
                    self.driver.stop(urn)
                    states[urn] = NOTREADY
                if action in ("geni_start", "geni_restart"):
                    self.driver.start(urn)
                    states[urn] = READY
            except Exception as exc:
                log.exception("%s of %s failed", action, urn)
                states[urn] = FAILED
                self._set_error(urn, f"{action} failed: {exc}")
        with self.sessions.begin() as session:
            rows = self._slivers(session, slice_urn, targets)
            for r in rows:
                r.operational = states[r.urn]
            return [self._view(r) for r in rows]

    def _set_error(self, urn: str, message: str) -> None:
        with self.sessions.begin() as session:
            row = session.get(SliverRow, urn)
            if row is not None:
                row.error = message

    # -- status, renewal, deletion ----------------------------------------------------------------

    def status(self, slice_urn: str, urns: Sequence[str] | None = None) -> list[Sliver]:
        cols = (SliverRow.urn, SliverRow.slice_urn, SliverRow.client_id, SliverRow.kind, SliverRow.component,
                SliverRow.allocation, SliverRow.operational, SliverRow.expires, SliverRow.error)
        query = select(*cols).where(SliverRow.slice_urn == slice_urn).order_by(SliverRow.kind.desc(),
                                                                              SliverRow.client_id)
        with self.readers() as session:
            views = [Sliver(*row) for row in session.execute(query)]
        if urns is not None:
            by_urn = {v.urn: v for v in views}
            missing = [u for u in urns if u not in by_urn]
            if missing:
                raise GeniError(GeniCode.SEARCHFAILED, f"no sliver {missing[0]} in slice {slice_urn}")
            views = [by_urn[u] for u in urns]
        if not views:
            raise GeniError(GeniCode.SEARCHFAILED, f"slice {slice_urn} has no slivers here")
        return views

    def reconcile(self) -> list[str]:
        """Mark provisioned slivers the driver no longer holds as failed (run by the reaper loop).

        The database stays the one truth that Status reads; this pass brings news from the
        driver into it, so no client call waits on a driver.
        """
        with self.readers() as session:
            provisioned = set(session.scalars(select(SliverRow.urn).where(SliverRow.allocation == PROVISIONED,
                                                                          SliverRow.phase == "",
                                                                          SliverRow.operational != FAILED)))
        lost = sorted(provisioned - self.driver.held(provisioned)) if provisioned else []
        if lost:
            with self.sessions.begin() as session:
                for row in session.scalars(select(SliverRow).where(SliverRow.urn.in_(lost),
                                                                   SliverRow.allocation == PROVISIONED)):
                    row.operational = FAILED
                    row.error = "the resource driver no longer holds this sliver"
            log.warning("%d sliver(s) lost by the driver: %s", len(lost), ", ".join(lost))
        return lost

    def slice_urn_of(self, sliver_urn: str) -> str | None:
        with self.readers() as session:
            row = session.get(SliverRow, sliver_urn)
            return None if row is None else row.slice_urn

    def renew(self, slice_urn: str, urns: Sequence[str] | None, new_time: datetime, slice_expires: datetime, *,
              as_long_as_possible: bool = False) -> list[Sliver]:
        now = self.clock()
        if new_time <= now:
            raise GeniError(GeniCode.BADARGS, f"requested expiration {new_time:%Y-%m-%dT%H:%M:%SZ} is in the past")
        with self.sessions.begin() as session:
            slice_row = self._check_live(session, slice_urn)
            slice_row.expires = max(slice_row.expires, slice_expires)
            rows = self._slivers(session, slice_urn, urns)
            if not rows:
                raise GeniError(GeniCode.SEARCHFAILED, f"slice {slice_urn} has no slivers here")
            for r in rows:
                limit = slice_expires if r.allocation == PROVISIONED else min(slice_expires,
                                                                               now + self.allocation_lifetime)
                if r.expires <= now:
                    raise GeniError(GeniCode.EXPIRED, f"sliver {r.client_id!r} has already expired")
                if new_time > limit and not as_long_as_possible:
                    what = "the slice's expiration" if limit == slice_expires else "the allocation limit"
                    raise GeniError(GeniCode.OUTOFRANGE, f"cannot renew {r.client_id!r} to "
                                                         f"{new_time:%Y-%m-%dT%H:%M:%SZ}: past {what} "
                                                         f"{limit:%Y-%m-%dT%H:%M:%SZ}")
            for r in rows:
                limit = slice_expires if r.allocation == PROVISIONED else min(slice_expires,
                                                                               now + self.allocation_lifetime)
                r.expires = min(new_time, limit)
            return [self._view(r) for r in rows]

    def delete(self, slice_urn: str, urns: Sequence[str] | None) -> list[Sliver]:
        with self.sessions.begin() as session:
            self._lock(session)
            if session.get(SliceRow, slice_urn) is None:
                raise GeniError(GeniCode.SEARCHFAILED, f"slice {slice_urn} has no slivers here")
            rows = self._slivers(session, slice_urn, urns, owned=True)
            pending: list[str] = []
            with session.no_autoflush:
                gone = [self._release(session, r, pending) for r in rows]
        self._driver_release(pending)
        return gone

    def _release(self, session: Session, row: SliverRow, pending: list[str]) -> Sliver:
        """Delete the sliver's rows (freeing its slots and tag); the driver release goes on ``pending``.

        Driver calls happen after the transaction commits: a slow driver must not hold the
        database, and if we die in between, :meth:`recover` releases what the driver still holds.
        """
        if row.allocation == PROVISIONED or row.phase:
            pending.append(row.urn)
        view = Sliver(**{**self._view(row).__dict__, "allocation": UNALLOCATED, "operational": PENDING})
        session.delete(row)
        return view

    def _driver_release(self, urns: Iterable[str]) -> None:
        batch = getattr(self.driver, "release_many", None)
        if batch is not None:
            try:
                batch(list(urns))
            except GeniError as exc:  # the driver keeps what it could not release and retries (sweep)
                log.warning("driver could not release everything yet: %s", exc.reason)
            except Exception:  # as below
                log.exception("driver failed to release some slivers; recover() will retry")
            return
        for urn in urns:
            try:
                self.driver.release(urn)
            except Exception:  # recorded, and retried by recover(): the sliver is gone from our books
                log.exception("driver failed to release %s; recover() will retry", urn)

    def shutdown(self, slice_urn: str) -> None:
        """Stop every sliver of the slice and freeze it (an operator's emergency stop)."""
        with self.sessions.begin() as session:
            row = session.get(SliceRow, slice_urn)
            if row is None:
                raise GeniError(GeniCode.SEARCHFAILED, f"slice {slice_urn} has no slivers here")
            row.shutdown = True
            targets = [r.urn for r in row.slivers if r.allocation == PROVISIONED]
        for urn in targets:
            self.driver.stop(urn)
        with self.sessions.begin() as session:
            for r in self._slivers(session, slice_urn, targets):
                r.operational = NOTREADY

    # -- tickets (ProtoGENI CM v2) -----------------------------------------------------------------

    def add_ticket(self, ticket_id: str, slice_urn: str, owner_urn: str, redeem_before: datetime, xml: str) -> None:
        with self.sessions.begin() as session:
            session.add(TicketRow(id=ticket_id, slice_urn=slice_urn, owner_urn=owner_urn, status="open",
                                  redeem_before=redeem_before, xml=xml))

    def open_ticket(self, slice_urn: str) -> TicketRow | None:
        with self.readers() as session:
            return session.scalars(select(TicketRow).where(TicketRow.slice_urn == slice_urn,
                                                           TicketRow.status == "open")).first()

    def close_ticket(self, ticket_id: str, status: str, *, release: bool) -> list[str]:
        """Mark a ticket redeemed/released/stale; with ``release``, delete its still-allocated slivers."""
        with self.sessions.begin() as session:
            self._lock(session)
            ticket = session.get(TicketRow, ticket_id)
            if ticket is None:
                raise GeniError(GeniCode.SEARCHFAILED, f"no ticket {ticket_id}")
            ticket.status = status
            urns = list(session.scalars(select(SliverRow.urn).where(SliverRow.ticket_id == ticket_id)))
            if release:
                for row in session.scalars(select(SliverRow).where(SliverRow.ticket_id == ticket_id,
                                                                   SliverRow.allocation == ALLOCATED)):
                    self._release(session, row, [])
            return urns

    def ticket_slivers(self, ticket_id: str) -> list[str]:
        with self.readers() as session:
            return list(session.scalars(select(SliverRow.urn).where(SliverRow.ticket_id == ticket_id)))

    def aggregate_sliver(self, slice_urn: str) -> tuple[str, str]:
        """The slice's aggregate sliver URN here (ProtoGENI), and its GID PEM if one was issued."""
        with self.readers() as session:
            row = session.get(SliceRow, slice_urn)
            if row is None:
                raise GeniError(GeniCode.SEARCHFAILED, f"slice {slice_urn} has no slivers here")
            if row.agg_sliver_urn:
                return row.agg_sliver_urn, row.agg_sliver_gid
            digest = hashlib.sha256(slice_urn.encode()).hexdigest()[:16]
            return str(Urn(self.cm.authority, "sliver", f"agg-{digest}")), ""

    def set_aggregate_sliver(self, slice_urn: str, urn: str, pem: str) -> None:
        with self.sessions.begin() as session:
            row = session.get(SliceRow, slice_urn)
            if row is None:
                raise GeniError(GeniCode.SEARCHFAILED, f"slice {slice_urn} has no slivers here")
            row.agg_sliver_urn, row.agg_sliver_gid = urn, pem

    def slice_of_aggregate_sliver(self, urn: str) -> str | None:
        with self.readers() as session:
            return session.scalars(select(SliceRow.urn).where(SliceRow.agg_sliver_urn == urn)).first()

    # -- housekeeping ---------------------------------------------------------------------------------

    def reap(self) -> int:
        """Free every sliver past its expiry, stale tickets, and empty expired slices; returns slivers freed."""
        now = self.clock()
        freed = 0
        pending: list[str] = []
        with self.sessions.begin() as session:
            self._lock(session)
            expired = select(SliverRow).where(SliverRow.expires <= now, SliverRow.phase == "").options(*OWNED)
            for row in session.scalars(expired):
                log.info("reaping %s sliver %s (%s) of %s", row.allocation, row.urn, row.client_id, row.slice_urn)
                self._release(session, row, pending)
                freed += 1
            for ticket in session.scalars(select(TicketRow).where(TicketRow.status == "open",
                                                                  TicketRow.redeem_before <= now)):
                ticket.status = "stale"
            session.flush()
            for slice_row in session.scalars(select(SliceRow).where(SliceRow.expires <= now)):
                if not slice_row.slivers:
                    session.delete(slice_row)
        self._driver_release(pending)
        return freed

    def recover(self) -> list[str]:
        """Roll back provisions cut short by a crash, and release what the driver holds but we do not."""
        with self.sessions() as session:
            interrupted = list(session.scalars(select(SliverRow.urn).where(SliverRow.phase == "provisioning")))
        self._driver_release(interrupted)
        with self.sessions.begin() as session:
            for row in session.scalars(select(SliverRow).where(SliverRow.urn.in_(interrupted))):
                row.phase = ""
            known = set(session.scalars(select(SliverRow.urn).where(SliverRow.allocation == PROVISIONED)))
        orphans = self.driver.held() - known
        self._driver_release(sorted(orphans))
        rolled = interrupted + sorted(orphans)
        if rolled:
            log.warning("recovery rolled back %d sliver(s): %s", len(rolled), ", ".join(rolled))
        return rolled

    # -- descriptions ---------------------------------------------------------------------------------

    def rows_for_manifest(self, slice_urn: str, urns: Sequence[str] | None = None) -> tuple[
            list[dict[str, object]], str]:
        """Plain records of the slice's slivers (for the manifest writer) and the last request RSpec."""
        with self.readers() as session:
            slice_row = session.get(SliceRow, slice_urn)
            if slice_row is None:
                return [], ""
            rows = self._slivers(session, slice_urn, urns)
            records = []
            for r in rows:
                rec: dict[str, object] = {"urn": r.urn, "client_id": r.client_id, "kind": r.kind,
                                          "component": r.component, "sliver_type": r.sliver_type,
                                          "exclusive": r.exclusive, "allocation": r.allocation,
                                          "spec": json.loads(r.spec)}
                records.append(rec)
            return records, slice_row.request_xml
