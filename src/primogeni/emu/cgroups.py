"""CPU and memory limits for slivers through cgroups, v2 when the machine offers it, else v1.

:class:`Cgroups` is the machine's layout, found once with :meth:`Cgroups.detect`: cgroup v2 when a
cgroup2 mount has both the ``cpu`` and ``memory`` controllers, otherwise the v1 hierarchies (one
mount per controller). A :class:`Cgroup` is one sliver's group, named ``primo/<x>``: under v1 it
is a directory of that name in each of the ``cpu``, ``cpuacct``, ``memory`` and ``pids``
hierarchies that are mounted; under v2 one directory below the cgroup2 root.

Limits: ``cpu_percent`` is a share of one core (v1 ``cpu.cfs_quota_us`` over a 100 ms
``cpu.cfs_period_us``; v2 ``cpu.max``), ``memory_mb`` a hard limit (v1 ``memory.limit_in_bytes``;
v2 ``memory.max``); 0 means no limit. Usage is cumulative CPU time in ns and current memory in
bytes. :meth:`Cgroup.procs_files` are the files a process writes ``0`` to in order to join, and
:meth:`Cgroup.limit_writes` the writes that set limits; the container module has forked children
do them (:meth:`Cgroups.group` gives the paths without touching the disk), so they are computed up front.

Groups live at the root of each hierarchy (``/sys/fs/cgroup/<controller>/primo/...``), not below
the agent's own cgroup, so that any process (a restarted agent, ``primo clean``) finds them.
Moving a process into a v1 group waits for an RCU grace period when no other move happened just
before (the kernel's ``cgroup_threadgroup_rwsem``), a few ms: callers keep moves off hot paths.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from primogeni.errors import EmuError, FeatureMissing

PREFIX = "primo"
CPU_PERIOD_US = 100_000
V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids")
_REMOVE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class CgroupUsage:
    cpu_ns: int  # cumulative CPU time of every process that ran in the group
    memory_bytes: int  # memory charged to the group now


@dataclass(frozen=True)
class Mount:
    """One cgroup mount from ``/proc/self/mountinfo``: where, which version, which v1 controllers."""

    path: Path
    version: str  # "v1" | "v2"
    controllers: frozenset[str]  # v1 only: the super options naming controllers (e.g. {"cpu", "cpuacct"})


def parse_mountinfo(text: str) -> list[Mount]:
    """The cgroup and cgroup2 mounts listed in a ``/proc/<pid>/mountinfo`` text."""
    mounts: list[Mount] = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if len(fields) < sep + 4:
            continue
        point = Path(fields[4].replace("\\040", " "))
        fstype, options = fields[sep + 1], fields[sep + 3].split(",")
        if fstype == "cgroup2":
            mounts.append(Mount(point, "v2", frozenset()))
        elif fstype == "cgroup":
            mounts.append(Mount(point, "v1", frozenset(o for o in options if o in V1_CONTROLLERS)))
    return mounts


def _check_name(name: str) -> str:
    parts = name.split("/")
    if parts[0] != PREFIX or len(parts) < 2 or any(p in ("", ".", "..") for p in parts):
        raise EmuError(f"cgroup name must look like {PREFIX}/<x>", what=name)
    return name


def _write(path: Path, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as exc:
        raise EmuError(f"writing {value!r} to {path}: {exc.strerror or exc}", what=str(path.parent)) from exc


class Cgroup:
    """One group (``primo/<x>``): its directory in each hierarchy (v1) or its one directory (v2)."""

    def __init__(self, name: str, version: str, dirs: Mapping[str, Path]):
        self.name = name
        self.version = version
        self.dirs = dict(dirs)  # v1: controller -> directory; v2: {"": directory}

    def __repr__(self) -> str:
        return f"Cgroup({self.name!r}, {self.version})"

    @property
    def procs_files(self) -> tuple[str, ...]:
        """The ``cgroup.procs`` files a process writes to (once per distinct hierarchy) to join."""
        return tuple(str(d / "cgroup.procs") for d in self.distinct_dirs)

    def _dir(self, *controllers: str) -> Path:
        if self.version == "v2":
            return self.dirs[""]
        for controller in controllers:
            if controller in self.dirs:
                return self.dirs[controller]
        raise FeatureMissing(f"no v1 hierarchy for {'/'.join(controllers)}", what=self.name)

    def add(self, pid: int) -> None:
        for procs in self.procs_files:
            _write(Path(procs), str(pid))

    @property
    def distinct_dirs(self) -> tuple[Path, ...]:
        """The group's directories, each once (v1 controllers may share a hierarchy)."""
        return tuple(dict.fromkeys(self.dirs.values()))

    def limit_writes(self, *, cpu_percent: int = 0, memory_mb: int = 0) -> list[tuple[Path, str]]:
        """The (file, value) writes that set these limits, in order (0 = no limit); nothing is written.

        :meth:`set_limits` does them; the container module hands them to a forked PID 1 instead.
        """
        if cpu_percent < 0 or memory_mb < 0:
            raise EmuError(f"negative limit (cpu {cpu_percent} %, memory {memory_mb} MB)", what=self.name)
        if self.version == "v2":
            d = self.dirs[""]
            quota = str(cpu_percent * CPU_PERIOD_US // 100) if cpu_percent else "max"
            return [(d / "cpu.max", f"{quota} {CPU_PERIOD_US}"),
                    (d / "memory.max", str(memory_mb << 20) if memory_mb else "max")]
        writes = []
        if "cpu" in self.dirs:
            quota = str(cpu_percent * CPU_PERIOD_US // 100) if cpu_percent else "-1"
            writes += [(self.dirs["cpu"] / "cpu.cfs_period_us", str(CPU_PERIOD_US)),
                       (self.dirs["cpu"] / "cpu.cfs_quota_us", quota)]
        elif cpu_percent:
            raise FeatureMissing("no cpu controller for a CPU limit", what=self.name)
        if "memory" in self.dirs:
            writes.append((self.dirs["memory"] / "memory.limit_in_bytes", str(memory_mb << 20) if memory_mb else "-1"))
        elif memory_mb:
            raise FeatureMissing("no memory controller for a memory limit", what=self.name)
        return writes

    def set_limits(self, *, cpu_percent: int = 0, memory_mb: int = 0) -> None:
        for path, value in self.limit_writes(cpu_percent=cpu_percent, memory_mb=memory_mb):
            _write(path, value)

    def usage(self) -> CgroupUsage:
        try:
            if self.version == "v2":
                d = self.dirs[""]
                stat = dict(line.split() for line in (d / "cpu.stat").read_text().splitlines() if line.strip())
                return CgroupUsage(int(stat["usage_usec"]) * 1000, int((d / "memory.current").read_text()))
            cpu = int((self._dir("cpuacct") / "cpuacct.usage").read_text())
            memory = int((self._dir("memory") / "memory.usage_in_bytes").read_text())
            return CgroupUsage(cpu, memory)
        except (OSError, KeyError, ValueError) as exc:
            raise EmuError(f"reading usage: {exc}", what=self.name) from exc

    def pids(self) -> list[int]:
        """Host pids of every process in the group."""
        try:
            text = (self._dir("pids", "cpu", "memory", "cpuacct") / "cgroup.procs").read_text()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise EmuError(f"listing processes: {exc.strerror}", what=self.name) from exc
        return [int(p) for p in text.split()]

    def exists(self) -> bool:
        return any(d.is_dir() for d in self.dirs.values())

    def kill_all(self) -> None:
        """SIGKILL every process in the group (``cgroup.kill`` on v2), again while new ones appear."""
        if self.version == "v2" and (self.dirs[""] / "cgroup.kill").exists():
            _write(self.dirs[""] / "cgroup.kill", "1")
            return
        procs = self._dir("pids", "cpu", "memory", "cpuacct") / "cgroup.procs"
        for _ in range(100):
            if not _kill_listed(procs, self.name):
                return
            time.sleep(0.001)

    def remove(self, timeout: float = _REMOVE_TIMEOUT_S) -> None:
        """Remove the group's directories (idempotent); processes still in it are killed first."""
        deadline = time.monotonic() + timeout
        for d in set(self.dirs.values()):
            self._rmdir(d, deadline)

    def _rmdir(self, path: Path, deadline: float) -> None:
        """rmdir, first the child groups, killing and waiting while (dying) processes keep it busy."""
        while True:
            try:
                os.rmdir(path)
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise EmuError(f"removing {path}: {exc.strerror}", what=self.name) from exc
            with os.scandir(path) as entries:
                children = [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
            for child in children:
                self._rmdir(child, deadline)
            if not children:
                _kill_listed(path / "cgroup.procs", self.name)
                time.sleep(0.002)


def _kill_listed(procs: Path, name: str) -> bool:
    """SIGKILL the processes a ``cgroup.procs`` file lists; whether there were any."""
    try:
        pids = [int(p) for p in procs.read_text().split()]
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise EmuError(f"listing processes: {exc.strerror}", what=name) from exc
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return bool(pids)


class Cgroups:
    """The machine's cgroup layout: where ``primo/...`` groups live, and which version."""

    def __init__(self, version: str, bases: Mapping[str, Path]):
        if version not in ("v1", "v2"):
            raise ValueError(f"cgroup version {version!r}")
        self.version = version
        self.bases = dict(bases)  # v1: controller -> hierarchy root; v2: {"": cgroup2 root}

    def __repr__(self) -> str:
        return f"Cgroups({self.version}, {sorted(str(p) for p in set(self.bases.values()))})"

    @classmethod
    def detect(cls, mountinfo: str | None = None) -> Cgroups:
        """v2 when a cgroup2 mount has ``cpu`` and ``memory`` available, else the v1 hierarchies."""
        if mountinfo is None:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        mounts = parse_mountinfo(mountinfo)
        for mount in mounts:
            if mount.version == "v2":
                try:
                    available = set((mount.path / "cgroup.controllers").read_text().split())
                except OSError:
                    continue
                if {"cpu", "memory"} <= available:
                    return cls("v2", {"": mount.path})
        bases = {c: m.path for m in mounts if m.version == "v1" for c in m.controllers}
        if not bases:
            raise FeatureMissing("no usable cgroup hierarchy (neither cgroup2 with cpu+memory nor v1)")
        return cls("v1", bases)

    def _dirs(self, name: str) -> dict[str, Path]:
        return {c: base / name for c, base in self.bases.items()}

    def create(self, name: str, *, cpu_percent: int = 0, memory_mb: int = 0) -> Cgroup:
        """Make (or keep) the group and set its limits; idempotent."""
        group = self.group(name)
        if self.version == "v2":
            self._enable_v2_controllers(name)
        for d in group.distinct_dirs:
            try:
                d.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise EmuError(f"creating {d}: {exc.strerror}", what=name) from exc
        group.set_limits(cpu_percent=cpu_percent, memory_mb=memory_mb)
        return group

    def _enable_v2_controllers(self, name: str) -> None:
        """Delegate cpu and memory from the root down to the group's parent (``cgroup.subtree_control``)."""
        root = self.bases[""]
        parts = name.split("/")
        level = root
        for part in ["", *parts[:-1]]:
            level = level / part if part else level
            if part:
                level.mkdir(exist_ok=True)
            control = level / "cgroup.subtree_control"
            enabled = set(control.read_text().split()) if control.exists() else set()
            missing = {"cpu", "memory"} - enabled
            if missing:
                _write(control, " ".join(f"+{c}" for c in sorted(missing)))

    def group(self, name: str) -> Cgroup:
        """The handle of group ``name`` (its paths), whether or not it exists; nothing is made."""
        return Cgroup(_check_name(name), self.version, self._dirs(name))

    def find(self, name: str) -> Cgroup | None:
        group = self.group(name)
        return group if group.exists() else None

    def names(self, prefix: str = PREFIX) -> list[str]:
        """Names of existing groups below ``primo/`` (in any hierarchy) that start with ``prefix``."""
        found: set[str] = set()

        def walk(path: Path, name: str) -> None:
            with contextlib.suppress(FileNotFoundError), os.scandir(path) as entries:
                for entry in entries:
                    if not entry.is_dir(follow_symlinks=False):
                        continue
                    child = f"{name}/{entry.name}"
                    if child.startswith(prefix):
                        found.add(child)
                    elif not prefix.startswith(child + "/"):
                        continue
                    walk(Path(entry.path), child)

        for base in set(self.bases.values()):
            walk(base / PREFIX, PREFIX)
        return sorted(found)

    def of_pid(self, pid: int) -> Cgroup | None:
        """The ``primo/...`` group a process is in (from ``/proc/PID/cgroup``), if any."""
        try:
            text = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            return None
        return self._group_from_proc(text)

    def _group_from_proc(self, text: str) -> Cgroup | None:
        for line in text.splitlines():
            _, controllers, path = line.split(":", 2)
            wanted = (self.version == "v2" and controllers == "") or (self.version == "v1" and bool(
                set(controllers.split(",")) & set(self.bases)
            ))
            if wanted and path.startswith(f"/{PREFIX}/"):
                return self.find(path[1:])
        return None

