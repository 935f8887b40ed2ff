"""Real-time mode: simulated time paced to the wall clock, multiplexed with file descriptors.

:class:`RealtimeLoop` drives an :class:`~primogeni.sim.engine.Engine` so that an event due at
simulated time ``t`` runs no earlier than wall time ``w0 + (t - t0) / ratio`` (``w0`` and ``t0``
are fixed when the first :meth:`RealtimeLoop.run` starts; ``ratio`` is simulated seconds per
wall second). The engine's own ``run`` stays the as-fast-as-possible hot path; this loop is
the policy on top, and it uses the engine's documented state only (``heap``, ``now``,
``events``, ``_stopped``).

Waiting: ``select()`` on an epoll descriptor (microsecond timeouts; ``epoll_wait`` itself
rounds up to milliseconds), then a short busy poll of the descriptors for the last ``spin``
nanoseconds. Measured on the 2-core VM: select alone wakes ~80-110 µs late at the median,
select plus a 200 µs spin ~1 µs late. The rare millisecond stalls left are the machine's
scheduling; on a CPU-starved machine spinning costs p99 (2 busy processes: p99 ~6 ms with the
spin, ~2.5 ms with ``spin=0``), so ``spin=0`` suits a shared host.

Lag: every event run is measured (wall time at dispatch minus its due wall time) into a
:class:`LagStats` (fixed decade buckets plus a log-linear histogram for percentiles, constant
memory). A lag at or above ``behind_threshold`` starts a *behind episode*, which ends at the
first event on time again; episodes are counted, timed, logged as warnings (logger
``primogeni.sim.realtime``, rate-limited) and reported by :meth:`RealtimeLoop.summary`. The
loop never re-bases its clock: once behind, it runs events back to back until it catches up.

External I/O: :meth:`RealtimeLoop.add_reader` registers a callback for a readable descriptor.
It is called with ``engine.now`` set to the simulated time of the current wall clock, clamped
so that time never runs backwards (not before the last event run, not past the next pending
event nor the end of the run), so it may schedule events at ``engine.now`` or later.
:meth:`RealtimeLoop.stop` and :meth:`RealtimeLoop.call_soon_threadsafe` may be called from any
thread or a signal handler: they wake the loop through an eventfd. Linux only (epoll, eventfd).
"""

from __future__ import annotations

import logging
import math
import os
import select
import signal
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from heapq import heappop
from time import monotonic_ns
from typing import Any, Protocol

from primogeni.net.units import ms, s, us
from primogeni.sim.engine import Engine

log = logging.getLogger("primogeni.sim.realtime")

#: Upper bounds (ns, exclusive) of the reported lag buckets; the last bucket is open.
LAG_BUCKETS = (us(10), us(100), ms(1), ms(10), ms(100))
LAG_LABELS = ("<10us", "<100us", "<1ms", "<10ms", "<100ms", ">=100ms")
_FINE = 64 * 8  # log-linear buckets: 8 per power of two (about 6 % resolution)


class FileLike(Protocol):
    def fileno(self) -> int: ...


def _fine_index(lag: int) -> int:
    if lag < 16:
        return lag
    b = lag.bit_length()
    return ((b - 4) << 3) + (lag >> (b - 4))


def _fine_bounds(i: int) -> tuple[int, int]:
    """Lowest and highest lag (ns) that land in fine bucket ``i``."""
    if i < 16:
        return i, i
    shift = (i >> 3) - 1
    top = (i & 7) + 8
    return top << shift, ((top + 1) << shift) - 1


def fmt_ns(ns: float) -> str:
    """A duration in ns for people: three digits in s, ms or µs."""
    if ns >= 1e9:
        return f"{ns / 1e9:.3g} s"
    if ns >= 1e6:
        return f"{ns / 1e6:.3g} ms"
    return f"{ns / 1e3:.3g} µs"


class LagStats:
    """Lags (ns) of the events a real-time run dispatched, in constant memory."""

    __slots__ = ("count", "decades", "fine", "max", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0
        self.max = 0
        self.decades = [0] * len(LAG_LABELS)  # counts per LAG_BUCKETS decade
        self.fine = [0] * _FINE  # log-linear, for percentiles

    def add(self, lag: int) -> None:
        """Record one lag (ns, >= 0). The run loop inlines this; it is here for clarity and tests."""
        self.count += 1
        self.total += lag
        self.max = max(self.max, lag)
        self.decades[_decade(lag)] += 1
        self.fine[min(_fine_index(lag), _FINE - 1)] += 1

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (ns) from the histogram: the middle of its bucket, at most max."""
        if self.count == 0:
            return math.nan
        rank = max(1, math.ceil(self.count * q / 100))
        seen = 0
        for i, c in enumerate(self.fine):
            seen += c
            if seen >= rank:
                lo, hi = _fine_bounds(i)
                return min((lo + hi) / 2, self.max)
        return float(self.max)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    def summary(self) -> dict[str, Any]:
        """Seconds: mean, p50, p99, max; and the decade histogram (event counts)."""
        nan = self.count == 0
        return {
            "lag_s": {
                "mean": None if nan else self.mean / 1e9,
                "p50": None if nan else self.percentile(50) / 1e9,
                "p99": None if nan else self.percentile(99) / 1e9,
                "max": None if nan else self.max / 1e9,
            },
            "lag_histogram": dict(zip(LAG_LABELS, self.decades, strict=True)),
        }


def _decade(lag: int) -> int:
    for i, bound in enumerate(LAG_BUCKETS):
        if lag < bound:
            return i
    return len(LAG_BUCKETS)


class RealtimeLoop:
    """Runs an engine's events at their wall-clock times and dispatches descriptor I/O."""

    def __init__(
        self,
        engine: Engine,
        ratio: float = 1.0,
        *,
        behind_threshold: int = ms(1),
        spin: int = us(200),
        io_poll: int = us(500),
        warn_interval: int = s(1),
    ) -> None:
        """``ratio``: simulated seconds per wall second. ``behind_threshold`` (ns): a lag at or
        above it starts a behind episode. ``spin`` (ns): busy-poll this long before an event
        instead of sleeping (0: never). ``io_poll`` (ns): while running events back to back,
        poll the descriptors at least this often. ``warn_interval`` (ns): at most one warning
        this often."""
        if behind_threshold <= 0:
            raise ValueError(f"behind_threshold must be > 0 ns, not {behind_threshold}")
        if spin < 0 or io_poll <= 0 or warn_interval < 0:
            raise ValueError("spin must be >= 0, io_poll > 0 and warn_interval >= 0 ns")
        self.engine = engine
        self._ratio = _check_ratio(ratio)
        self.behind_threshold = behind_threshold
        self.spin = spin
        self.io_poll = io_poll
        self.warn_interval = warn_interval
        self.lag = LagStats()
        self.behind_episodes = 0
        self.io_callbacks = 0
        self._behind_ns = 0
        self._behind_since: int | None = None  # wall ns the current episode began
        self._behind_counted = 0  # wall ns up to which the open episode is in _behind_ns
        self._behind_sim = 0  # simulated time of the event that began it
        self._episode_max = 0
        self._next_warn = 0  # wall ns before which no warning is logged
        self._unwarned = 0  # episodes begun since the last warning, not warned about
        self._w0: int | None = None
        self._t0 = 0
        self._until = 0
        self._last_wall: int | None = None
        self._stop = False
        self._closed = False
        self._readers: dict[int, Callable[[], object]] = {}
        self._soon: deque[Callable[[], object]] = deque()
        self._ep = select.epoll()
        self._epl = [self._ep.fileno()]
        self._use_select = self._ep.fileno() < 1024  # FD_SETSIZE
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._ep.register(self._wake, select.EPOLLIN)
        self._release = weakref.finalize(self, _release, self._ep, self._wake)  # if never closed

    # -- configuration and mapping -----------------------------------------------------------
    @property
    def ratio(self) -> float:
        """Simulated seconds per wall second; settable until the first run starts."""
        return self._ratio

    @ratio.setter
    def ratio(self, value: float) -> None:
        if self._w0 is not None:
            raise RuntimeError("the ratio of a real-time loop is fixed once it has run")
        self._ratio = _check_ratio(value)

    @property
    def started_at(self) -> int | None:
        """Wall time (``time.monotonic_ns``) at which simulated time ``t0`` was due; None before a run."""
        return self._w0

    def wall_time(self, t: int) -> int:
        """The wall time (monotonic ns) at which simulated time ``t`` (ns) is due."""
        if self._w0 is None:
            raise RuntimeError("the real-time loop has not started")
        return self._w0 + int((t - self._t0) / self._ratio)

    def sim_time(self, wall: int | None = None) -> int:
        """The simulated time (ns) of wall time ``wall`` (default: now), unclamped."""
        if self._w0 is None:
            raise RuntimeError("the real-time loop has not started")
        return self._t0 + int(((monotonic_ns() if wall is None else wall) - self._w0) * self._ratio)

    @property
    def stopped(self) -> bool:
        """True once :meth:`stop` was called: every later :meth:`run` returns at once."""
        return self._stop

    @property
    def kept_up(self) -> bool:
        return self.behind_episodes == 0

    @property
    def has_readers(self) -> bool:
        return bool(self._readers)

    # -- I/O and threads -------------------------------------------------------------------
    def add_reader(self, fd: int | FileLike, callback: Callable[[], object]) -> None:
        """Call ``callback()`` whenever ``fd`` is readable (level-triggered) during a run."""
        n = fd if isinstance(fd, int) else fd.fileno()
        if n in self._readers:
            self._readers[n] = callback
            return
        self._ep.register(n, select.EPOLLIN)
        self._readers[n] = callback

    def remove_reader(self, fd: int | FileLike) -> bool:
        """Stop watching ``fd``; False if it was not watched."""
        n = fd if isinstance(fd, int) else fd.fileno()
        if self._readers.pop(n, None) is None:
            return False
        if not self._closed:
            with suppress(OSError):  # closed first: the kernel already forgot it
                self._ep.unregister(n)
        return True

    def call_soon_threadsafe(self, fn: Callable[[], object]) -> None:
        """Run ``fn()`` in the loop's thread soon (with ``engine.now`` set as for I/O)."""
        self._soon.append(fn)
        self._wakeup()

    def stop(self) -> None:
        """End the run after the current event (thread- and signal-safe); later runs return at once."""
        self._stop = True
        self.engine._stopped = True
        self._wakeup()

    def _wakeup(self) -> None:
        if not self._closed:
            os.eventfd_write(self._wake, 1)

    def close(self) -> None:
        """Release the epoll and eventfd descriptors (not the readers' own)."""
        if not self._closed:
            self._closed = True
            self._release()

    # -- the loop ------------------------------------------------------------------------
    def run(self, until: int) -> None:
        """Run events up to and including simulated time ``until`` (ns) at their wall times,
        serving I/O meanwhile; return when the wall clock reaches ``until`` (then
        ``engine.now == until``) or when stopped (then ``engine.now`` is the time reached)."""
        eng = self.engine
        if self._closed:
            raise RuntimeError("the real-time loop is closed")
        if until < eng.now:
            raise ValueError(f"cannot run until {until} ns: now is {eng.now} ns")
        if self._w0 is None:
            self._w0 = monotonic_ns()
            self._t0 = eng.now
        self._until = until
        eng._stopped = False  # before reading _stop: a stop() racing with this line is never lost
        if self._stop:
            eng._stopped = True
            return
        heap = eng.heap
        pop = heappop
        clock = monotonic_ns
        w0, t0, ratio = self._w0, self._t0, self._ratio
        unit = ratio == 1.0
        base = w0 - t0  # due wall time of t at ratio 1: t + base
        end_wall = w0 + int((until - t0) / ratio)
        thr = self.behind_threshold
        lag_stats = self.lag
        fine = lag_stats.fine
        decades = lag_stats.decades
        n = on_time = total = 0
        lag_max = lag_stats.max
        behind = self._behind_since is not None
        ep_max = self._episode_max
        next_warn = self._next_warn
        next_poll = clock() + self.io_poll
        io_poll = self.io_poll
        wait = self._wait
        try:
            while not eng._stopped:
                if heap and (ev := heap[0])[0] <= until:
                    t, _, handler, arg = ev
                    due = t + base if unit else w0 + int((t - t0) / ratio)
                    wall = clock()
                    lag = wall - due
                    if lag < 0:
                        if behind:
                            self._episode_max = ep_max
                            self._caught_up(wall)
                            behind = False
                        wait(due)
                        continue
                    pop(heap)
                    eng.now = t
                    n += 1
                    handler(arg)
                    total += lag
                    if lag > lag_max:
                        lag_max = lag
                    if lag < 16:
                        fine[lag] += 1
                    else:
                        b = lag.bit_length()
                        fine[((b - 4) << 3) + (lag >> (b - 4))] += 1
                    if lag < 10_000:  # the LAG_BUCKETS decades, inlined
                        on_time += 1
                    elif lag < 100_000:
                        decades[1] += 1
                    elif lag < 1_000_000:
                        decades[2] += 1
                    elif lag < 10_000_000:
                        decades[3] += 1
                    elif lag < 100_000_000:
                        decades[4] += 1
                    else:
                        decades[5] += 1
                    if lag >= thr:
                        if not behind:
                            self._begin_behind(lag, t, wall)
                            behind = True
                            ep_max = lag
                        elif lag > ep_max:
                            ep_max = lag
                        if wall >= next_warn:
                            next_warn = self._warn(lag, t, wall)
                    elif behind:
                        self._episode_max = ep_max
                        self._caught_up(wall)
                        behind = False
                    if wall >= next_poll:
                        next_poll = wall + io_poll
                        ready = self._ep.poll(0)
                        if ready:
                            self._dispatch(ready)
                else:
                    wall = clock()
                    if wall >= end_wall:
                        break
                    if behind:
                        self._episode_max = ep_max
                        self._caught_up(wall)
                        behind = False
                    wait(end_wall)
        finally:
            self._episode_max = ep_max
            self._next_warn = next_warn
            lag_stats.count += n
            lag_stats.total += total
            lag_stats.max = lag_max
            decades[0] += on_time
            eng.events += n
            wall = clock()
            self._last_wall = wall
            if self._behind_since is not None:  # the episode stays open; count its time so far
                self._behind_ns += wall - self._behind_counted
                self._behind_counted = wall
        if self._stop:
            eng.now = self._io_now(clock())
        elif not eng._stopped and eng.now < until:
            eng.now = until

    def _wait(self, due: int) -> None:
        """Wait for wall time ``due`` (monotonic ns) or I/O, whichever comes first; serve the I/O."""
        rem = due - monotonic_ns()
        spin = self.spin
        if rem > spin:
            sleep = rem - spin
            if self._use_select:
                r, _, _ = select.select(self._epl, [], [], sleep / 1e9)
                ready = self._ep.poll(0) if r else None
            else:  # epoll_wait counts whole ms: sleep the whole ms, busy-poll the rest
                ready = self._ep.poll((sleep // 1_000_000) / 1000)
            if ready:
                self._dispatch(ready)
            return
        poll = self._ep.poll
        while monotonic_ns() < due:
            ready = poll(0)
            if ready:
                self._dispatch(ready)
                return

    def _io_now(self, wall: int) -> int:
        eng = self.engine
        t = self._t0 + int((wall - self._w0) * self._ratio) if self._w0 is not None else eng.now
        if eng.heap and eng.heap[0][0] < t:
            t = eng.heap[0][0]
        return max(min(t, self._until), eng.now)

    def _dispatch(self, ready: list[tuple[int, int]]) -> None:
        eng = self.engine
        eng.now = self._io_now(monotonic_ns())
        for fd, _ in ready:
            if fd == self._wake:
                with suppress(BlockingIOError):  # another wake-up already drained it
                    os.eventfd_read(self._wake)
                while self._soon:
                    self.io_callbacks += 1
                    self._soon.popleft()()
                continue
            cb = self._readers.get(fd)
            if cb is not None:
                self.io_callbacks += 1
                cb()
            else:  # removed by an earlier callback of this batch, or a stale registration
                with suppress(OSError):
                    self._ep.unregister(fd)

    # -- falling behind ----------------------------------------------------------------------
    def _begin_behind(self, lag: int, t: int, wall: int) -> None:
        self.behind_episodes += 1
        self._unwarned += 1
        self._behind_since = wall - (lag - self.behind_threshold)  # when the lag crossed it
        self._behind_counted = self._behind_since
        self._behind_sim = t

    def _warn(self, lag: int, t: int, wall: int) -> int:
        """Log that the run is behind; returns the wall time before which not to warn again."""
        since = wall - (self._behind_since if self._behind_since is not None else wall)
        more = f"; {self._unwarned - 1} more episode(s) since the last warning" if self._unwarned > 1 else ""
        self._unwarned = 0
        log.warning(
            "real-time simulation is BEHIND the wall clock by %s at simulated time %.6f s "
            "(behind since simulated %.6f s, for %s of wall time; ratio %g, threshold %s%s)",
            fmt_ns(lag), t / 1e9, self._behind_sim / 1e9, fmt_ns(since), self._ratio,
            fmt_ns(self.behind_threshold), more,
        )
        self._next_warn = wall + self.warn_interval
        return self._next_warn

    def _caught_up(self, wall: int) -> None:
        assert self._behind_since is not None
        spent = wall - self._behind_since
        self._behind_ns += wall - self._behind_counted
        self._behind_since = None
        log.info("real-time simulation caught up after %s behind (worst lag %s)",
                 fmt_ns(spent), fmt_ns(self._episode_max))

    # -- results -------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """What the real-time run did: ratio, kept_up, lag figures, behind episodes, wall time."""
        wall_s = (self._last_wall - self._w0) / 1e9 if self._w0 is not None and self._last_wall else 0.0
        d: dict[str, Any] = {
            "ratio": self._ratio,
            "kept_up": self.kept_up,
            "events": self.lag.count,
            "wall_s": wall_s,
            "behind_threshold_s": self.behind_threshold / 1e9,
            "behind_episodes": self.behind_episodes,
            "behind_s": self._behind_ns / 1e9,
            "io_callbacks": self.io_callbacks,
        }
        d.update(self.lag.summary())
        return d


def _release(ep: select.epoll, wake: int) -> None:
    ep.close()
    os.close(wake)


@contextmanager
def attended(stop: Callable[[], None], handler: logging.Handler,
             signals: tuple[signal.Signals, ...] = (signal.SIGINT,)) -> Iterator[None]:
    """While a run lasts: the loop's warnings (falling behind) go to ``handler`` (the logger raised to
    WARNING if it is quieter), and ``signals`` call ``stop`` (the run ends early, with results) instead
    of their handlers; signals only from the main thread."""
    logger = logging.getLogger(__name__)
    logger.addHandler(handler)
    old_level = logger.level
    if logger.getEffectiveLevel() > logging.WARNING:
        logger.setLevel(logging.WARNING)
    main_thread = threading.current_thread() is threading.main_thread()
    old = {sig: signal.getsignal(sig) for sig in signals} if main_thread else {}
    for sig in old:
        signal.signal(sig, lambda *_: stop())
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def _check_ratio(ratio: float) -> float:
    try:
        r = float(ratio)
    except (TypeError, ValueError):
        raise ValueError(f"real-time ratio must be a number, not {ratio!r}") from None
    if not math.isfinite(r) or r <= 0:
        raise ValueError(f"real-time ratio must be a finite number > 0 (simulated s per wall s), not {ratio!r}")
    return r
