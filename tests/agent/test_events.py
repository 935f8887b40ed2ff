"""agent.events: idempotent delivery, timing (fake and real clock), restart semantics."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from primogeni.agent.events import INTERRUPTED, EventScheduler
from primogeni.agent.spec import EventSpec, LinkSpec, SliverSpec
from primogeni.agent.store import Store
from primogeni.errors import EmuError

SLICE = "urn:publicid:IDN+primo:p1+slice+s1"
OTHER_SLICE = "urn:publicid:IDN+primo:p1+slice+s2"
HOST = "urn:publicid:IDN+primo+sliver+h1"
LINK = "urn:publicid:IDN+primo+sliver+l1"


class FakeRealizer:
    """Records each call with the wall-clock time it happened."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.times: list[float] = []
        self.fail: BaseException | None = None
        self.lock = threading.Lock()

    def _record(self, *call: object) -> None:
        with self.lock:
            self.times.append(time.time())
            self.calls.append(call)
        if self.fail is not None:
            raise self.fail

    def set_link_state(self, urn: str, up: bool) -> None:
        self._record("link", urn, up)

    def run_command(self, urn: str, argv: Sequence[str]) -> int:
        self._record("run", urn, tuple(argv))
        return 4242

    def stop_command(self, urn: str, argv: Sequence[str]) -> int:
        self._record("stop", urn, tuple(argv))
        return 2

    def reboot(self, urn: str) -> None:
        self._record("reboot", urn)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def held(tmp_path: Path) -> Store:
    store = Store(tmp_path)
    store.put_sliver(SliverSpec(HOST, SLICE, "h1", 1, (20000, 20009)))
    store.put_link(LinkSpec(LINK, SLICE, 4096, ((HOST, "eth1"),)))
    return store


def link_event(i: int, action: str = "down", at: float = 0.0, slice_urn: str = SLICE) -> EventSpec:
    return EventSpec(i, slice_urn, "link", LINK, action, at=at)


def host_event(i: int, action: str, at: float = 0.0, command: tuple[str, ...] = ()) -> EventSpec:
    return EventSpec(i, SLICE, "host", HOST, action, command, at=at)


def test_an_event_due_now_is_applied_at_once(tmp_path: Path) -> None:
    store, realizer = held(tmp_path), FakeRealizer()
    scheduler = EventScheduler(store, realizer, clock=Clock())
    assert scheduler.submit(link_event(1, "down")) == "applied"
    assert scheduler.submit(link_event(2, "up", at=999.0)) == "applied"  # a past time means now
    assert realizer.calls == [("link", LINK, False), ("link", LINK, True)]
    assert store.event_state(1) == store.event_state(2) == "applied"


def test_a_known_id_is_a_duplicate_and_does_nothing(tmp_path: Path) -> None:
    store, realizer = held(tmp_path), FakeRealizer()
    clock = Clock()
    scheduler = EventScheduler(store, realizer, clock=clock)
    assert scheduler.submit(link_event(1)) == "applied"
    assert scheduler.submit(link_event(1)) == "duplicate"
    assert scheduler.submit(link_event(1, "up")) == "duplicate"  # the id decides, not the content
    assert scheduler.submit(link_event(2, at=2000.0)) == "scheduled"
    assert scheduler.submit(link_event(2, at=2000.0)) == "duplicate"
    clock.now = 2000.0
    assert scheduler.run_due() == 1
    assert realizer.calls == [("link", LINK, False), ("link", LINK, False)]
    # And after a restart: a new scheduler on the same store still knows both ids.
    again = EventScheduler(Store(tmp_path), realizer, clock=clock)
    assert again.submit(link_event(2)) == "duplicate"
    assert len(realizer.calls) == 2


def test_future_events_wait_for_their_time_in_order(tmp_path: Path) -> None:
    store, realizer = held(tmp_path), FakeRealizer()
    clock = Clock(1000.0)
    scheduler = EventScheduler(store, realizer, clock=clock)
    assert scheduler.submit(link_event(3, "up", at=1030.0)) == "scheduled"
    assert scheduler.submit(link_event(1, "down", at=1010.0)) == "scheduled"
    assert scheduler.submit(link_event(2, "up", at=1010.0)) == "scheduled"  # same time: arrival order
    assert scheduler.next_due() == 1010.0
    assert scheduler.run_due() == 0
    clock.now = 1009.999
    assert scheduler.run_due() == 0
    assert store.event_state(1) == "scheduled"
    clock.now = 1010.0
    assert scheduler.run_due() == 2
    assert realizer.calls == [("link", LINK, False), ("link", LINK, True)]
    clock.now = 1100.0
    assert scheduler.run_due() == 1
    assert scheduler.next_due() is None
    assert [store.event_state(i) for i in (1, 2, 3)] == ["applied"] * 3


def test_host_events_drive_commands_and_reboot(tmp_path: Path) -> None:
    store, realizer = held(tmp_path), FakeRealizer()
    scheduler = EventScheduler(store, realizer, clock=Clock())
    assert scheduler.submit(host_event(1, "start", command=("iperf3", "-s"))) == "applied"
    assert store.event_detail(1) == "pid 4242"
    assert scheduler.submit(host_event(2, "stop", command=("iperf3", "-s"))) == "applied"
    assert store.event_detail(2) == "2 process(es) stopped"
    assert scheduler.submit(host_event(3, "reboot")) == "applied"
    assert realizer.calls == [("run", HOST, ("iperf3", "-s")), ("stop", HOST, ("iperf3", "-s")), ("reboot", HOST)]


def test_failures_are_recorded(tmp_path: Path) -> None:
    store, realizer = held(tmp_path), FakeRealizer()
    scheduler = EventScheduler(store, realizer, clock=Clock())
    unknown = EventSpec(1, SLICE, "link", "urn:publicid:IDN+primo+sliver+nolink", "down")
    assert scheduler.submit(unknown) == "failed"
    assert "no link" in store.event_detail(1)
    assert scheduler.submit(link_event(2, slice_urn=OTHER_SLICE)) == "failed"
    assert "another slice" in store.event_detail(2)
    assert realizer.calls == []
    realizer.fail = EmuError("cannot set the link down", "primob4096")
    assert scheduler.submit(link_event(3)) == "failed"
    assert store.event_detail(3) == "primob4096: cannot set the link down"
    realizer.fail = RuntimeError("a bug")
    assert scheduler.submit(link_event(4)) == "failed"
    assert store.event_detail(4) == "internal error: RuntimeError: a bug"
    assert scheduler.submit(link_event(4)) == "duplicate"  # a failed id is not tried again either


def test_restart_reschedules_and_never_repeats_host_actions(tmp_path: Path) -> None:
    store, realizer = held(tmp_path), FakeRealizer()
    clock = Clock(1000.0)
    # What the store holds when an agent died: events in every state.
    for spec in (link_event(1, at=1500.0), link_event(2, at=900.0), link_event(3, "up", at=950.0),
                 host_event(4, "start", at=950.0, command=("run",)), host_event(5, "reboot", at=950.0),
                 link_event(6, at=800.0)):
        assert store.put_event(spec)
    store.set_event_state(3, "applying")
    store.set_event_state(4, "applying")
    store.set_event_state(5, "applying")
    store.set_event_state(6, "applied")

    scheduler = EventScheduler(Store(tmp_path), realizer, clock=clock)
    scheduler.recover()
    scheduler.recover()  # only once
    after = Store(tmp_path)
    assert after.event_state(4) == after.event_state(5) == "failed"
    assert after.event_detail(4) == INTERRUPTED
    assert scheduler.run_due() == 2  # 2 (scheduled, overdue) and 3 (link, cut short: idempotent)
    assert realizer.calls == [("link", LINK, False), ("link", LINK, True)]
    assert scheduler.next_due() == 1500.0
    clock.now = 1500.0
    assert scheduler.run_due() == 1
    final = Store(tmp_path)
    assert [final.event_state(i) for i in range(1, 7)] == ["applied", "applied", "applied", "failed", "failed",
                                                            "applied"]
    assert all(c[0] == "link" for c in realizer.calls)


def test_the_timer_thread_applies_within_50_ms(tmp_path: Path) -> None:
    store, realizer = held(tmp_path), FakeRealizer()
    scheduler = EventScheduler(store, realizer)
    scheduler.start()
    try:
        base = time.time()
        # Submitted out of order: a later submission that is due earlier must wake the thread.
        offsets = [0.40, 0.15, 0.30, 0.20, 0.45]
        at = {i: base + off for i, off in enumerate(offsets, start=1)}
        for i, when in at.items():
            assert scheduler.submit(link_event(i, "down" if i % 2 else "up", at=when)) == "scheduled"
        deadline = time.time() + 5
        while len(realizer.calls) < len(at) and time.time() < deadline:
            time.sleep(0.01)
        assert len(realizer.calls) == len(at)
        ordered = sorted(at.values())
        lateness = [applied - due for applied, due in zip(realizer.times, ordered, strict=True)]
        assert all(-0.001 <= late < 0.050 for late in lateness), lateness
        assert all(store.event_state(i) == "applied" for i in at)
    finally:
        scheduler.stop()


def test_stop_keeps_future_events_for_the_next_agent(tmp_path: Path) -> None:
    store, realizer = held(tmp_path), FakeRealizer()
    scheduler = EventScheduler(store, realizer)
    scheduler.start()
    with pytest.raises(RuntimeError):
        scheduler.start()
    when = time.time() + 0.3
    assert scheduler.submit(link_event(1, at=when)) == "scheduled"
    scheduler.stop()
    assert realizer.calls == []
    assert Store(tmp_path).event_state(1) == "scheduled"

    again = EventScheduler(Store(tmp_path), realizer)
    again.start()
    try:
        deadline = time.time() + 5
        while not realizer.calls and time.time() < deadline:
            time.sleep(0.01)
        assert realizer.calls == [("link", LINK, False)]
        assert realizer.times[0] >= when
    finally:
        again.stop()
