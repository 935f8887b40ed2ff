"""agent.store: round trips, persistence across Store objects, atomic writes, thread safety, speed."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from primogeni.agent.spec import EventSpec, IfaceSpec, LinkSpec, LoginSpec, SliverSpec
from primogeni.agent.store import Store, StoreError, VsysLink, file_name

SLICE = "urn:publicid:IDN+primo:p1+slice+s1"


def sliver(i: int = 1, **changes: object) -> SliverSpec:
    values: dict[str, object] = {
        "urn": f"urn:publicid:IDN+primo+sliver+{i}", "slice_urn": SLICE, "hostname": f"h{i}", "slot": i,
        "ports": (20000 + 10 * i, 20009 + 10 * i),
        "interfaces": (IfaceSpec("eth1", "02:00:00:00:00:01", "10.16.0.2/24", "urn:publicid:IDN+primo+sliver+l1"),),
        "logins": (LoginSpec("alice", ("ssh-ed25519 AAAA alice",)),), "hosts": (("h1", "10.16.0.2"),),
        "vsys_keys": (4097,), "vsys_peers": ("10.254.0.12",),
    }
    values.update(changes)
    return SliverSpec(**values)  # type: ignore[arg-type]


def link(vni: int = 4096) -> LinkSpec:
    return LinkSpec(f"urn:publicid:IDN+primo+sliver+l{vni}", SLICE, vni, ((sliver().urn, "eth1"),), ("10.254.0.12",),
                    capacity_kbps=1000)


def event(i: int, at: float = 0.0) -> EventSpec:
    return EventSpec(i, SLICE, "link", link().urn, "down", at=at)


def test_slivers_round_trip_and_survive_a_new_store(tmp_path: Path) -> None:
    store = Store(tmp_path)
    a, b = sliver(1), sliver(2, cpu_percent=50, memory_mb=256)
    store.put_sliver(a)
    store.put_sliver(b)
    assert store.get_sliver(a.urn) == a
    assert store.slivers() == {a.urn: a, b.urn: b}
    assert store.run_state(a.urn) == "started"
    store.set_run_state(b.urn, "stopped")

    again = Store(tmp_path)
    assert again.slivers() == {a.urn: a, b.urn: b}
    assert again.run_state(a.urn) == "started"
    assert again.run_state(b.urn) == "stopped"

    again.drop_sliver(a.urn)
    again.drop_sliver("urn:publicid:IDN+primo+sliver+unknown")  # an unknown URN is fine
    assert Store(tmp_path).slivers() == {b.urn: b}
    assert [p.name for p in (tmp_path / "slivers").iterdir()] == [file_name(b.urn)]


def test_replacing_a_sliver_keeps_its_run_state_and_vsys_links(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.put_sliver(sliver(1))
    store.set_run_state(sliver(1).urn, "stopped")
    store.put_vsys_link(sliver(1).urn, VsysLink("l1", "10.254.0.12", 4097))
    changed = sliver(1, memory_mb=512)
    store.put_sliver(changed)
    again = Store(tmp_path)
    assert again.get_sliver(changed.urn) == changed
    assert again.run_state(changed.urn) == "stopped"
    assert again.vsys_links(changed.urn) == [VsysLink("l1", "10.254.0.12", 4097)]


def test_unknown_slivers_and_bad_states(tmp_path: Path) -> None:
    store = Store(tmp_path)
    assert store.get_sliver("urn:x") is None
    with pytest.raises(StoreError, match="no such sliver"):
        store.run_state("urn:x")
    with pytest.raises(StoreError, match="no such sliver"):
        store.put_vsys_link("urn:x", VsysLink("l1", "10.0.0.1", 1))
    store.put_sliver(sliver(1))
    with pytest.raises(ValueError, match="run state"):
        store.set_run_state(sliver(1).urn, "paused")


def test_links_round_trip(tmp_path: Path) -> None:
    store = Store(tmp_path)
    one, two = link(4096), link(4097)
    store.put_link(one)
    store.put_link(two)
    assert Store(tmp_path).links() == {one.urn: one, two.urn: two}
    store.drop_link(one.urn)
    assert Store(tmp_path).get_link(one.urn) is None
    assert Store(tmp_path).get_link(two.urn) == two


def test_events_are_recorded_once_with_their_state(tmp_path: Path) -> None:
    store = Store(tmp_path)
    assert store.put_event(event(1, at=5.0))
    assert not store.put_event(event(1, at=9.0))  # known id: refused, nothing changes
    assert store.put_event(event(2, at=1.0))
    assert store.put_event(event(3, at=1.0))
    assert store.event_state(1) == "scheduled"
    assert store.event_state(99) is None
    store.set_event_state(3, "applying")
    store.set_event_state(2, "failed", "no such link")
    again = Store(tmp_path)
    assert again.get_event(1) == event(1, at=5.0)
    assert again.event_state(2) == "failed"
    assert again.event_detail(2) == "no such link"
    assert again.event_state(3) == "applying"
    assert again.pending_events() == [event(3, at=1.0), event(1, at=5.0)]  # by time, unfinished only
    assert not again.put_event(event(2))
    with pytest.raises(ValueError, match="event state"):
        again.set_event_state(1, "done")
    with pytest.raises(StoreError, match="no such event"):
        again.set_event_state(42, "applied")


def test_vsys_links(tmp_path: Path) -> None:
    store = Store(tmp_path)
    urn = sliver(1).urn
    store.put_sliver(sliver(1))
    store.put_vsys_link(urn, VsysLink("l1", "10.254.0.12", 4097))
    store.put_vsys_link(urn, VsysLink("l2", "10.254.0.13", 4098))
    assert Store(tmp_path).vsys_links(urn) == [VsysLink("l1", "10.254.0.12", 4097), VsysLink("l2", "10.254.0.13", 4098)]
    store.drop_vsys_link(urn, "l1")
    store.drop_vsys_link(urn, "nope")
    store.drop_vsys_link("urn:x", "l1")
    assert Store(tmp_path).vsys_links(urn) == [VsysLink("l2", "10.254.0.13", 4098)]
    store.drop_sliver(urn)
    assert Store(tmp_path).vsys_links(urn) == []


def test_a_write_cut_short_leaves_the_old_record(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.put_sliver(sliver(1))
    # What a crash between writing the temporary file and renaming it leaves behind.
    leftover = tmp_path / "slivers" / f".{file_name(sliver(1).urn)}.123.456.tmp"
    leftover.write_text('{"version": 1, "spec": {"urn": "half')
    again = Store(tmp_path)
    assert again.slivers() == {sliver(1).urn: sliver(1)}
    assert not leftover.exists()


def test_a_failed_write_changes_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path)
    name = file_name(sliver(2).urn)
    # A directory where the temporary file must go makes the write fail, even for root.
    (tmp_path / "slivers" / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp").mkdir()
    with pytest.raises(StoreError, match="cannot write"):
        store.put_sliver(sliver(2))
    assert store.get_sliver(sliver(2).urn) is None
    assert not (tmp_path / "slivers" / name).exists()


def test_a_corrupt_record_is_reported_with_its_file(tmp_path: Path) -> None:
    Store(tmp_path).put_sliver(sliver(1))
    path = tmp_path / "slivers" / file_name(sliver(1).urn)
    path.write_text("{not json")
    with pytest.raises(StoreError, match=str(path)):
        Store(tmp_path)
    data = {"version": 1, "spec": {**sliver(1).to_dict(), "slot": -3}, "run_state": "started"}
    path.write_text(json.dumps(data))
    with pytest.raises(StoreError, match="slot -3"):
        Store(tmp_path)
    path.write_text(json.dumps({"version": 99, "spec": {}}))
    with pytest.raises(StoreError, match="version 1"):
        Store(tmp_path)


def test_concurrent_writers(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.put_sliver(sliver(0))
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(20):
                store.put_sliver(sliver(1 + n * 100 + i))
                store.put_vsys_link(sliver(0).urn, VsysLink(f"t{n}x{i}", "10.254.0.12", 1 + n * 100 + i))
                store.put_event(event(n * 1000 + i))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    again = Store(tmp_path)
    assert len(again.slivers()) == 81
    assert len(again.vsys_links(sliver(0).urn)) == 80
    assert len(again.pending_events()) == 80


def test_loading_500_slivers_is_fast(tmp_path: Path) -> None:
    store = Store(tmp_path)
    specs = [sliver(i) for i in range(1, 501)]
    started = time.perf_counter()
    for spec in specs:
        store.put_sliver(spec)
    write = time.perf_counter() - started
    started = time.perf_counter()
    again = Store(tmp_path)
    load = time.perf_counter() - started
    started = time.perf_counter()
    for spec in specs:
        assert again.get_sliver(spec.urn) == spec
    lookups = time.perf_counter() - started
    assert len(again.slivers()) == 500
    # Measured ~0.1 s to write and ~0.05 s to load on the 2-core test machine; generous bounds.
    assert write < 2.0, write
    assert load < 1.0, load
    assert lookups < 0.1, lookups
