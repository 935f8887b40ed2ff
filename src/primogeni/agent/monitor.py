"""What a physical node has and uses: CPU, load, memory and disk, read from ``/proc`` and ``statvfs``.

The node agent answers ``Monitor`` with :func:`node_usage` (this module) plus per-sliver cgroup
usage and per-interface counters (gathered by :class:`~primogeni.agent.realize.Realizer`, which
owns the kernel objects). CPU use is a rate, so :class:`CpuMeter` keeps the previous sample of
``/proc/stat`` and reports the busy share of the interval since the last call (since boot on the
first call). Sizes are bytes, CPU use is a percentage of the whole machine (all CPUs = 100).
The process readers at the end (start time, parents, namespaces) serve the realizer's tracking
of the commands and servers it starts in containers.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from primogeni.errors import EmuError

PROC = Path("/proc")


@dataclass(frozen=True)
class CpuSample:
    """Jiffies from the aggregate ``cpu`` line of ``/proc/stat``: busy (not idle/iowait) and total."""

    busy: int
    total: int


def read_cpu(proc: Path = PROC) -> CpuSample:
    """The machine's CPU time so far (``/proc/stat``), in clock ticks."""
    try:
        with open(proc / "stat", encoding="ascii") as f:
            first = f.readline().split()
    except OSError as exc:
        raise EmuError(f"cannot read CPU times: {exc}", str(proc / "stat")) from exc
    if not first or first[0] != "cpu":
        raise EmuError("no aggregate cpu line", str(proc / "stat"))
    # user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is already in user
    ticks = [int(v) for v in first[1:9]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    total = sum(ticks)
    return CpuSample(busy=total - idle, total=total)


class CpuMeter:
    """Busy share of all CPUs between successive :meth:`percent` calls (thread-safe)."""

    def __init__(self, proc: Path = PROC):
        self._proc = proc
        self._lock = threading.Lock()
        self._last = CpuSample(0, 0)

    def percent(self) -> float:
        now = read_cpu(self._proc)
        with self._lock:
            last, self._last = self._last, now
        total = now.total - last.total
        if total <= 0:
            return 0.0
        return round(100.0 * (now.busy - last.busy) / total, 1)


def read_meminfo(proc: Path = PROC) -> dict[str, int]:
    """``/proc/meminfo`` as bytes per field (``MemTotal``, ``MemAvailable`` …)."""
    found: dict[str, int] = {}
    try:
        with open(proc / "meminfo", encoding="ascii") as f:
            for line in f:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if not parts:
                    continue
                value = int(parts[0])
                found[key] = value * 1024 if len(parts) > 1 and parts[1] == "kB" else value
    except (OSError, ValueError) as exc:
        raise EmuError(f"cannot read memory information: {exc}", str(proc / "meminfo")) from exc
    return found


def read_loadavg(proc: Path = PROC) -> tuple[float, float, float]:
    """Load averages over 1, 5 and 15 minutes."""
    try:
        parts = (proc / "loadavg").read_text(encoding="ascii").split()
        return float(parts[0]), float(parts[1]), float(parts[2])
    except (OSError, ValueError, IndexError) as exc:
        raise EmuError(f"cannot read load averages: {exc}", str(proc / "loadavg")) from exc


def disk_usage(where: Path) -> tuple[int, int]:
    """``(total, free)`` bytes of the file system holding ``where`` (free = available to non-root)."""
    try:
        st = os.statvfs(where)
    except OSError as exc:
        raise EmuError(f"cannot stat its file system: {exc}", str(where)) from exc
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


def cpu_count() -> int:
    """CPUs this process may run on (what slivers on this node share)."""
    try:
        return len(os.sched_getaffinity(0))
    except OSError:
        return os.cpu_count() or 1


def node_usage(meter: CpuMeter, state_dir: Path, proc: Path = PROC) -> dict[str, Any]:
    """The node part of ``Monitor``: CPU %, load, memory and disk (bytes), CPU count."""
    mem = read_meminfo(proc)
    load1, load5, load15 = read_loadavg(proc)
    disk_total, disk_free = disk_usage(state_dir)
    total = mem.get("MemTotal", 0)
    return {
        "cpu_percent": meter.percent(),
        "load1": load1,
        "load5": load5,
        "load15": load15,
        "mem_total": total,
        "mem_available": mem.get("MemAvailable", mem.get("MemFree", 0)),
        "disk_total": disk_total,
        "disk_free": disk_free,
        "cpus": cpu_count(),
    }


# -- processes (for the realizer: commands it started, processes of a container) ------------------


def process_start(pid: int, proc: Path = PROC) -> int | None:
    """When the process started (clock ticks since boot), or ``None`` when it is gone.

    With the pid this identifies a process across pid reuse.
    """
    try:
        with open(proc / str(pid) / "stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: fields resume after the last ")"
    fields = text[text.rfind(")") + 2:].split()
    try:
        return int(fields[19])  # field 22 of proc(5), starttime
    except (IndexError, ValueError):
        return None


def parents(proc: Path = PROC) -> dict[int, int]:
    """``{pid: parent pid}`` of every process now."""
    found: dict[int, int] = {}
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            with open(proc / entry / "stat", encoding="ascii", errors="replace") as f:
                text = f.read()
            found[int(entry)] = int(text[text.rfind(")") + 2:].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return found


def descendants(pid: int, proc: Path = PROC) -> list[int]:
    """The children of ``pid``, their children, … (not ``pid`` itself), parents before children."""
    children: dict[int, list[int]] = {}
    for child, parent in parents(proc).items():
        children.setdefault(parent, []).append(child)
    found: list[int] = []
    todo = list(children.get(pid, ()))
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, ()))
    return found


def namespace_id(pid: int, kind: str, proc: Path = PROC) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of the process's namespace ``kind`` (``net``, ``pid`` …), or ``None``."""
    try:
        st = os.stat(proc / str(pid) / "ns" / kind)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def pids_in_namespace(ident: tuple[int, int], kind: str = "pid", proc: Path = PROC) -> list[int]:
    """Processes whose namespace ``kind`` is ``ident``, sorted."""
    found = []
    for entry in os.listdir(proc):
        if entry.isdigit() and namespace_id(int(entry), kind, proc) == ident:
            found.append(int(entry))
    return sorted(found)


__all__ = ["CpuMeter", "CpuSample", "cpu_count", "descendants", "disk_usage", "namespace_id", "node_usage",
           "parents", "pids_in_namespace", "process_start", "read_cpu", "read_loadavg", "read_meminfo"]
