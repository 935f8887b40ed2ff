"""agent.monitor: /proc readers against fixed files, and once against this machine's /proc."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from primogeni.agent import monitor
from primogeni.errors import EmuError

STAT = "cpu  100 5 50 800 40 3 2 0 7 0\ncpu0 50 2 25 400 20 1 1 0 3 0\nintr 1 2 3\n"
MEMINFO = "MemTotal:       24684096 kB\nMemFree:        23721180 kB\nMemAvailable:   24020476 kB\nHugePages_Total: 0\n"


def fake_proc(root: Path, stat: str = STAT) -> Path:
    root.mkdir(exist_ok=True)
    (root / "stat").write_text(stat)
    (root / "meminfo").write_text(MEMINFO)
    (root / "loadavg").write_text("0.45 0.25 0.55 2/109 28121\n")
    return root


def test_cpu_sample_counts_idle_and_iowait_as_not_busy(tmp_path: Path) -> None:
    sample = monitor.read_cpu(fake_proc(tmp_path))
    assert sample.total == 100 + 5 + 50 + 800 + 40 + 3 + 2 + 0
    assert sample.busy == sample.total - 840


def test_cpu_meter_reports_the_interval_since_the_last_call(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path)
    meter = monitor.CpuMeter(proc)
    assert meter.percent() == round(100 * 160 / 1000, 1)  # first call: since boot
    assert meter.percent() == 0.0  # nothing happened in between
    (proc / "stat").write_text("cpu  130 5 50 870 40 3 2 0 7 0\n")  # +30 busy, +70 idle
    assert meter.percent() == 30.0


def test_meminfo_loadavg_and_bad_files(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path)
    mem = monitor.read_meminfo(proc)
    assert mem["MemTotal"] == 24684096 * 1024 and mem["HugePages_Total"] == 0
    assert monitor.read_loadavg(proc) == (0.45, 0.25, 0.55)
    (proc / "loadavg").write_text("garbage\n")
    with pytest.raises(EmuError, match="loadavg"):
        monitor.read_loadavg(proc)
    with pytest.raises(EmuError, match="stat"):
        monitor.read_cpu(fake_proc(tmp_path / "other", stat="intr 1 2\n"))


def test_node_usage_has_every_field(tmp_path: Path) -> None:
    usage = monitor.node_usage(monitor.CpuMeter(fake_proc(tmp_path / "proc")), tmp_path, tmp_path / "proc")
    assert usage["mem_total"] == 24684096 * 1024 and usage["mem_available"] == 24020476 * 1024
    assert usage["load15"] == 0.55 and usage["cpus"] >= 1
    assert usage["disk_total"] >= usage["disk_free"] > 0
    assert 0 <= usage["cpu_percent"] <= 100


def test_real_proc_and_processes() -> None:
    usage = monitor.node_usage(monitor.CpuMeter(), Path("/"))
    assert usage["mem_total"] > 0 and usage["cpus"] == len(os.sched_getaffinity(0))
    child = subprocess.Popen(["sh", "-c", "sleep 30 & wait"])
    try:
        start = monitor.process_start(child.pid)
        assert start is not None and start == monitor.process_start(child.pid)
        assert monitor.parents()[child.pid] == os.getpid()
        deadline = time.monotonic() + 5
        while not monitor.descendants(child.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(monitor.descendants(child.pid)) == 1
        assert child.pid in monitor.pids_in_namespace(monitor.namespace_id(os.getpid(), "pid") or (0, 0))
    finally:
        for pid in [*monitor.descendants(child.pid), child.pid]:
            os.kill(pid, 9)
        child.wait()
    assert monitor.process_start(child.pid) is None
