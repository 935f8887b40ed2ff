"""The discrete-event engine: a heap of ``(time_ns, seq, handler, arg)``.

Time is an integer number of nanoseconds. Events at the same time run in the order they were
scheduled (``seq`` breaks ties), so a run is deterministic. There is no global engine: each
:class:`Engine` is independent, and two may run in one process.

Cancellation is lazy: :meth:`Engine.cancel` marks a :class:`Timer` and the run loop skips it.
The hot path schedules plain ``handler(arg)`` calls and allocates one tuple per event.

:meth:`Engine.run` runs as fast as it can. Real-time pacing (and I/O) is a policy on top of the
same state, :class:`primogeni.sim.realtime.RealtimeLoop`, so this loop stays as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from heapq import heappop, heappush
from itertools import count
from typing import Any


class Timer:
    """A cancellable scheduled call, made by :meth:`Engine.timer`."""

    __slots__ = ("arg", "cancelled", "handler", "time")

    def __init__(self, time: int, handler: Callable[[Any], object], arg: Any) -> None:
        self.time = time
        self.handler = handler
        self.arg = arg
        self.cancelled = False

    def _fire(self, _: object) -> None:
        if not self.cancelled:
            self.cancelled = True
            self.handler(self.arg)


class Engine:
    """A deterministic event loop over integer-nanosecond time."""

    __slots__ = ("_stopped", "counter", "events", "heap", "now")

    def __init__(self) -> None:
        self.now = 0
        # Hot-path contract: model code may push ``(time, next(counter), handler, arg)``
        # onto ``heap`` directly (with time >= now) to save a call per event.
        self.heap: list[tuple[int, int, Callable[[Any], object], Any]] = []
        self.counter = count()
        self._stopped = False  # set by stop(); the real-time loop reads and sets it too
        self.events = 0  # events executed so far

    def schedule(self, time: int, handler: Callable[[Any], object], arg: Any = None) -> None:
        """Call ``handler(arg)`` at absolute ``time`` (ns); never earlier than now."""
        if time < self.now:
            raise ValueError(f"cannot schedule in the past: {time} < now {self.now}")
        heappush(self.heap, (time, next(self.counter), handler, arg))

    def timer(self, time: int, handler: Callable[[Any], object], arg: Any = None) -> Timer:
        """Like :meth:`schedule`, but returns a :class:`Timer` that can be cancelled."""
        t = Timer(time, handler, arg)
        self.schedule(time, t._fire, None)
        return t

    @staticmethod
    def cancel(timer: Timer) -> None:
        timer.cancelled = True

    def stop(self) -> None:
        """Make :meth:`run` return after the current event."""
        self._stopped = True

    @property
    def pending(self) -> int:
        return len(self.heap)

    def peek(self) -> int | None:
        """Time of the next event, or None when there is none."""
        return self.heap[0][0] if self.heap else None

    def step(self) -> bool:
        """Run one event; False when there was none."""
        if not self.heap:
            return False
        t, _, handler, arg = heappop(self.heap)
        self.now = t
        self.events += 1
        handler(arg)
        return True

    def run(self, until: int | None = None) -> None:
        """Run events in time order up to and including ``until`` (ns), then set now = until."""
        heap = self.heap
        pop = heappop
        self._stopped = False
        n = 0
        limit = until if until is not None else 1 << 62
        try:
            while heap:
                t, _, handler, arg = pop(heap)
                if t > limit:
                    heappush(heap, (t, _, handler, arg))
                    break
                self.now = t
                n += 1
                handler(arg)
                if self._stopped:
                    break
        finally:
            self.events += n
        if until is not None and not self._stopped and self.now < until:
            self.now = until
