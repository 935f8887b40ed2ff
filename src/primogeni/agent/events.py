"""The event scheduler: Emulab-style events applied at their time, at most once, across restarts.

An event (:class:`~primogeni.agent.spec.EventSpec`) arrives from the AM with a unique id. A known id
is answered ``"duplicate"`` and nothing happens. A new one is stored as ``"scheduled"`` and, at its
time ``at`` (UNIX seconds; 0 or a past time means now), applied through the realizer:

========================  ==============================
``link L down`` / ``up``  ``set_link_state(L, False/True)``
``host H start CMD``      ``run_command(H, CMD)``
``host H stop CMD``       ``stop_command(H, CMD)``
``host H reboot``         ``reboot(H)``
========================  ==============================

Around the application the store records ``"applying"``, then ``"applied"`` or ``"failed"`` with
a detail. That record is what makes delivery at-most-once across an agent restart: on
:meth:`EventScheduler.start` the ``"scheduled"`` events are scheduled again; one found in
``"applying"`` was cut short by a crash — link up/down are idempotent and are applied again, but a
host start/stop/reboot may already have happened and is marked ``"failed"`` instead of risking a
second run.

Events due when they arrive are applied at once in the caller's thread (the AM gets ``"applied"``
or ``"failed"`` in its answer); later ones wait in a heap served by one timer thread, which sleeps
on a condition until the earliest is due. The clock is injectable: unit tests call
:meth:`EventScheduler.run_due` with a fake clock instead of starting the thread.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from primogeni.agent.spec import EventSpec
from primogeni.agent.store import Store, StoreError
from primogeni.errors import PrimoError

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted by agent restart"
# The timer thread wakes at least this often (seconds) to notice wall-clock steps.
_MAX_WAIT = 1.0


class EventTarget(Protocol):
    """The part of the realizer that events drive."""

    def set_link_state(self, urn: str, up: bool) -> None: ...
    def run_command(self, urn: str, argv: Sequence[str]) -> int: ...
    def stop_command(self, urn: str, argv: Sequence[str]) -> int: ...
    def reboot(self, urn: str) -> None: ...


class EventScheduler:
    """Stores, schedules and applies events (see the module docstring).

    ``clock`` returns UNIX seconds (``time.time`` by default).
    """

    def __init__(self, store: Store, realizer: EventTarget, *, clock: Callable[[], float] = time.time):
        self.store = store
        self.realizer = realizer
        self.clock = clock
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, EventSpec]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._recovered = False

    # -- intake

    def submit(self, spec: EventSpec) -> str:
        """Take an event from the AM: ``"duplicate"``, ``"scheduled"``, ``"applied"`` or ``"failed"``."""
        if not self.store.put_event(spec):
            log.info("event %d: duplicate (already %s)", spec.event_id, self.store.event_state(spec.event_id))
            return "duplicate"
        if spec.at <= self.clock():
            return self.apply(spec)
        self._push(spec)
        log.info("event %d: %s %s %s scheduled at %.3f", spec.event_id, spec.target_kind, spec.target, spec.action,
                 spec.at)
        return "scheduled"

    def _push(self, spec: EventSpec) -> None:
        with self._cond:
            heapq.heappush(self._heap, (spec.at, next(self._seq), spec))
            self._cond.notify()

    def recover(self) -> None:
        """Schedule again what the store holds unfinished (see the module docstring); done once."""
        with self._cond:
            if self._recovered:
                return
            self._recovered = True
        for spec in self.store.pending_events():
            state = self.store.event_state(spec.event_id)
            if state == "applying" and spec.target_kind != "link":
                log.warning("event %d (%s %s) was being applied when the agent stopped: not applied again",
                            spec.event_id, spec.target_kind, spec.action)
                self.store.set_event_state(spec.event_id, "failed", INTERRUPTED)
                continue
            self._push(spec)

    # -- application

    def apply(self, spec: EventSpec) -> str:
        """Apply one event now; record and return ``"applied"`` or ``"failed"``."""
        self.store.set_event_state(spec.event_id, "applying")
        try:
            detail = self._perform(spec)
        except (PrimoError, OSError, ValueError) as exc:
            log.warning("event %d: %s %s %s failed: %s", spec.event_id, spec.target_kind, spec.target, spec.action,
                        exc)
            self.store.set_event_state(spec.event_id, "failed", str(exc))
            return "failed"
        except Exception as exc:
            # A bug of ours or the realizer's: the event must not stay "applying" (it would be
            # treated as a crash on the next start); the traceback goes to the log.
            log.exception("event %d: internal error", spec.event_id)
            self.store.set_event_state(spec.event_id, "failed", f"internal error: {type(exc).__name__}: {exc}")
            return "failed"
        self.store.set_event_state(spec.event_id, "applied", detail)
        log.info("event %d: %s %s %s applied%s", spec.event_id, spec.target_kind, spec.target, spec.action,
                 f" ({detail})" if detail else "")
        return "applied"

    def _perform(self, spec: EventSpec) -> str:
        held = self.store.get_link(spec.target) if spec.target_kind == "link" else self.store.get_sliver(spec.target)
        if held is None:
            raise ValueError(f"no {spec.target_kind} {spec.target} on this node")
        if held.slice_urn != spec.slice_urn:
            raise ValueError(f"{spec.target_kind} {spec.target} belongs to another slice")
        if spec.target_kind == "link":
            self.realizer.set_link_state(spec.target, spec.action == "up")
            return ""
        if spec.action == "start":
            pid = self.realizer.run_command(spec.target, list(spec.command))
            return f"pid {pid}"
        if spec.action == "stop":
            count = self.realizer.stop_command(spec.target, list(spec.command))
            return f"{count} process(es) stopped"
        self.realizer.reboot(spec.target)
        return ""

    def next_due(self) -> float | None:
        """The time of the earliest scheduled event, or None."""
        with self._cond:
            return self._heap[0][0] if self._heap else None

    def run_due(self) -> int:
        """Apply every event due by ``clock()``, earliest first; how many were applied."""
        done = 0
        while True:
            with self._cond:
                if not self._heap or self._heap[0][0] > self.clock():
                    return done
                spec = heapq.heappop(self._heap)[2]
            self.apply(spec)
            done += 1

    # -- the timer thread

    def start(self) -> None:
        """Recover unfinished events and start the timer thread."""
        if self._thread is not None:
            raise RuntimeError("event scheduler already started")
        self.recover()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="agent-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the timer thread; events not yet due stay ``"scheduled"`` in the store."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self._thread = None

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping:
                    if self._heap:
                        wait = self._heap[0][0] - self.clock()
                        if wait <= 0:
                            break
                        self._cond.wait(min(wait, _MAX_WAIT))
                    else:
                        self._cond.wait(_MAX_WAIT)
                if self._stopping:
                    return
            try:
                self.run_due()
            except StoreError:
                # The state directory cannot be written. Applying without the "applying" record
                # would break at-most-once: the event stays as the store last saw it ("scheduled"
                # is taken up again at the next start, "applying" counts as interrupted).
                log.exception("cannot record an event's state")


__all__ = ["INTERRUPTED", "EventScheduler", "EventTarget"]
