"""Events in the Emulab sense: take a link down or up, start or stop a command on a host, reboot it.

A client asks with AM API v3 ``PerformOperationalAction`` and one of the custom actions of
:data:`EVENT_ACTIONS` (``primo:link-down`` … ``primo:host-reboot``), options ``primo_at`` (RFC
3339; default now) and ``primo_command`` (argv list, for host start/stop), holding the slice
credential with the operate privilege. :meth:`EventQueue.schedule` stores one row per target
sliver in ``am_events`` (its id is the ``event_id`` agents see) and answers with the ids.

Delivery (:meth:`EventQueue.deliver_pending`, run right after the call and by the AM's reaper
each cycle) sends each pending event to the nodes concerned — a host event to its node, a link
event to every node with one of its ends — through the driver's ``deliver``. An answer
(``scheduled``, ``applied`` or ``duplicate``) marks it *delivered*; a failure leaves it *pending*
(``attempts`` + 1, ``last_error``) for the next pass; an event the agent refused, or whose
sliver is gone, is *failed*. Agents apply an id at most once, so retries are safe.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from primogeni.agent.spec import EventSpec, SpecError
from primogeni.am.common import parse_time
from primogeni.am.core import AggregateManager, Sliver
from primogeni.am.driver import EventRefused
from primogeni.am.models import PROVISIONED, EventRow, SliverRow
from primogeni.am.plans import plan_of
from primogeni.geni.codes import GeniCode
from primogeni.geni.errors import GeniError
from primogeni.geni.times import rfc3339

log = logging.getLogger(__name__)

EVENT_ACTIONS: dict[str, tuple[str, str]] = {
    "primo:link-down": ("link", "down"), "primo:link-up": ("link", "up"),
    "primo:host-start": ("host", "start"), "primo:host-stop": ("host", "stop"),
    "primo:host-reboot": ("host", "reboot"),
}
"""Custom operational action → (target kind, agent action)."""


@dataclass(frozen=True)
class Event:
    """What a caller sees of one stored event."""

    id: int
    slice_urn: str
    target: str
    kind: str
    action: str
    command: tuple[str, ...]
    at: datetime | None
    state: str
    attempts: int
    last_error: str

    def to_dict(self) -> dict[str, object]:
        return {"primo_event_id": self.id, "target": self.target, "kind": self.kind, "action": self.action,
                "command": list(self.command), "at": rfc3339(self.at) if self.at else "now", "state": self.state,
                "attempts": self.attempts, "last_error": self.last_error}


def _view(row: EventRow) -> Event:
    return Event(row.id, row.slice_urn, row.target, row.kind, row.action, tuple(json.loads(row.command)), row.at,
                 row.state, row.attempts, row.last_error)


def _command(value: object, action: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or not all(isinstance(a, str) for a in value):
        raise GeniError(GeniCode.BADARGS, "primo_command must be a list of strings (an argv)")
    if value and action not in ("start", "stop"):
        raise GeniError(GeniCode.BADARGS, "primo_command goes with primo:host-start and primo:host-stop only")
    return tuple(value)


class EventQueue:
    """Stores events and delivers them through ``am.driver`` (see the module docstring)."""

    def __init__(self, am: AggregateManager, *, clock: Callable[[], datetime] | None = None):
        self.am = am
        self.clock = clock or am.clock
        self._pass = threading.Lock()  # one delivery pass at a time

    def schedule(self, slice_urn: str, urns: Sequence[str] | None, action: str,
                 options: Mapping[str, object]) -> list[tuple[Sliver, Event]]:
        """Store one event per target sliver (all slivers of the right kind when ``urns`` is None)."""
        if action not in EVENT_ACTIONS:
            raise GeniError(GeniCode.UNSUPPORTED, f"operational action {action!r} is not an event "
                                                  f"(events: {', '.join(EVENT_ACTIONS)})")
        if getattr(self.am.driver, "deliver", None) is None:
            raise GeniError(GeniCode.UNSUPPORTED, "this aggregate's resource driver does not take events")
        kind, verb = EVENT_ACTIONS[action]
        at = None if options.get("primo_at") is None else parse_time(options["primo_at"], "primo_at")
        command = _command(options.get("primo_command"), verb)
        try:  # the agent's own rules (a command for start/stop), before anything is stored
            EventSpec(1, slice_urn, kind, "-", verb, command)
        except SpecError as exc:
            raise GeniError(GeniCode.BADARGS, f"{action}: {exc}") from None
        sliver_kind = "link" if kind == "link" else "node"
        now = self.clock()
        with self.am.sessions.begin() as session:
            self.am._check_live(session, slice_urn)
            targets = self.am._slivers(session, slice_urn, urns)
            if urns is None:
                targets = [r for r in targets if r.kind == sliver_kind]
                if not targets:
                    raise GeniError(GeniCode.BADARGS, f"{action}: slice {slice_urn} has no {sliver_kind} sliver")
            for r in targets:
                if r.kind != sliver_kind:
                    raise GeniError(GeniCode.BADARGS, f"{action} applies to {sliver_kind} slivers; {r.client_id!r} "
                                                      f"is a {r.kind}")
                if r.allocation != PROVISIONED:
                    raise GeniError(GeniCode.BADARGS, f"sliver {r.client_id!r} is not provisioned; provision it first")
            made = []
            for r in targets:
                event = EventRow(slice_urn=slice_urn, target=r.urn, kind=kind, action=verb,
                                 command=json.dumps(list(command)), at=at, state="pending", attempts=0,
                                 last_error="", created=now)
                session.add(event)
                made.append((r, event))
            session.flush()
            return [(AggregateManager._view(r), _view(e)) for r, e in made]

    def events(self, slice_urn: str | None = None, ids: Collection[int] | None = None) -> list[Event]:
        query = select(EventRow).order_by(EventRow.id)
        if slice_urn is not None:
            query = query.where(EventRow.slice_urn == slice_urn)
        if ids is not None:
            query = query.where(EventRow.id.in_(list(ids)))
        with self.am.readers() as session:
            return [_view(r) for r in session.scalars(query)]

    def _nodes(self, target: str) -> list[str] | None:
        """The physical nodes an event on ``target`` goes to; None when the sliver is gone."""
        with self.am.readers() as session:
            row = session.get(SliverRow, target)
            if row is None:
                return None
            if row.kind == "node":
                return [row.component]
            return sorted(set(plan_of(session, row).nodes))

    def deliver_pending(self, ids: Collection[int] | None = None) -> list[Event]:
        """One delivery pass over the pending events (those of ``ids`` only, when given)."""
        deliver = getattr(self.am.driver, "deliver", None)
        if deliver is None:
            return []
        with self._pass:
            pending = [e for e in self.events(ids=ids) if e.state == "pending"]
            for event in pending:
                self._deliver_one(deliver, event)
        return self.events(ids=[e.id for e in pending]) if pending else []

    def _deliver_one(self, deliver: Callable[[EventSpec, Collection[str]], str], event: Event) -> None:
        nodes = self._nodes(event.target)
        state, error, tried = "pending", "", 1
        if nodes is None:
            state, error, tried = "failed", "the target sliver no longer exists", 0
        else:
            spec = EventSpec(event.id, event.slice_urn, event.kind, event.target, event.action, event.command,
                             event.at.timestamp() if event.at else 0.0)
            try:
                answer = deliver(spec, nodes)
            except EventRefused as exc:
                state, error = "failed", exc.reason
            except GeniError as exc:
                error = exc.reason
                log.info("event %d (%s %s) not delivered yet: %s", event.id, event.kind, event.action, exc.reason)
            else:
                state = "delivered"
                log.info("event %d (%s %s on %s) delivered: %s", event.id, event.kind, event.action,
                         ", ".join(nodes), answer)
        with self.am.sessions.begin() as session:
            row = session.get(EventRow, event.id)
            if row is not None:
                row.state, row.attempts = state, row.attempts + tried
                row.last_error = error


__all__ = ["EVENT_ACTIONS", "Event", "EventQueue"]
