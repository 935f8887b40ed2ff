"""Cgroups: layout detection and the limit files (on fake trees), then real CPU and memory limits (root)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from primogeni.emu.cgroups import Cgroup, Cgroups, CgroupUsage, parse_mountinfo
from primogeni.errors import EmuError

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""


def test_parse_mountinfo_finds_v1_controllers_and_cgroup2() -> None:
    mounts = {str(m.path): m for m in parse_mountinfo(HYBRID)}
    assert mounts["/sys/fs/cgroup/cpu,cpuacct"].controllers == {"cpu", "cpuacct"}
    assert mounts["/sys/fs/cgroup/systemd"].controllers == frozenset()
    assert mounts["/sys/fs/cgroup/unified"].version == "v2"
    assert "/sys/fs/cgroup" not in mounts  # the tmpfs is not a cgroup mount


def test_detect_prefers_v2_only_with_cpu_and_memory(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("hugetlb pids\n")
    text = f"41 31 0:38 / {tmp_path} rw - cgroup2 cgroup2 rw\n" + HYBRID
    layout = Cgroups.detect(text)
    assert layout.version == "v1"
    assert layout.bases["cpu"] == layout.bases["cpuacct"] == Path("/sys/fs/cgroup/cpu,cpuacct")
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    assert Cgroups.detect(text).bases == {"": tmp_path}


def test_names_must_be_under_primo(tmp_path: Path) -> None:
    layout = Cgroups("v2", {"": tmp_path})
    for bad in ("other/x", "primo", "primo/../x", "primo//x"):
        with pytest.raises(EmuError):
            layout.create(bad)


def test_v2_limits_usage_and_kill_on_a_fake_tree(tmp_path: Path) -> None:
    (tmp_path / "cgroup.subtree_control").write_text("")
    layout = Cgroups("v2", {"": tmp_path})
    group = layout.create("primo/pc1-3", cpu_percent=20, memory_mb=64)
    d = tmp_path / "primo" / "pc1-3"
    assert (d / "cpu.max").read_text() == "20000 100000"
    assert (d / "memory.max").read_text() == str(64 << 20)
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+cpu +memory"
    assert (tmp_path / "primo" / "cgroup.subtree_control").read_text() == "+cpu +memory"
    group.set_limits()
    assert (d / "cpu.max").read_text() == "max 100000"
    assert (d / "memory.max").read_text() == "max"
    (d / "cpu.stat").write_text("usage_usec 1500\nuser_usec 1000\n")
    (d / "memory.current").write_text("4096\n")
    assert group.usage() == CgroupUsage(cpu_ns=1_500_000, memory_bytes=4096)
    (d / "cgroup.kill").write_text("")
    group.kill_all()
    assert (d / "cgroup.kill").read_text() == "1"
    assert group.procs_files == (str(d / "cgroup.procs"),)
    assert layout.names() == ["primo/pc1-3"] and layout.names("primo/pc2") == []
    assert layout.find("primo/nope") is None


def test_v1_limits_go_to_each_controller(tmp_path: Path) -> None:
    bases = {c: tmp_path / c for c in ("cpu", "cpuacct", "memory")}
    for base in bases.values():
        base.mkdir()
    group = Cgroups("v1", bases).create("primo/x", cpu_percent=150, memory_mb=1)
    assert (bases["cpu"] / "primo/x/cpu.cfs_quota_us").read_text() == "150000"
    assert (bases["cpu"] / "primo/x/cpu.cfs_period_us").read_text() == "100000"
    assert (bases["memory"] / "primo/x/memory.limit_in_bytes").read_text() == str(1 << 20)
    (bases["cpuacct"] / "primo/x/cpuacct.usage").write_text("123\n")
    (bases["memory"] / "primo/x/memory.usage_in_bytes").write_text("456\n")
    assert group.usage() == CgroupUsage(123, 456)
    assert len(group.procs_files) == 3


# ---- the real kernel ----


@pytest.fixture
def real() -> Iterator[tuple[Cgroups, list[Cgroup]]]:
    if os.geteuid() != 0:
        pytest.skip("needs root (creates cgroups)")
    layout = Cgroups.detect()
    made: list[Cgroup] = []
    try:
        yield layout, made
    finally:
        for group in made:
            group.remove()


def _name() -> str:
    return f"primo/primo-t{secrets.token_hex(3)}"


@pytest.mark.root
def test_detect_matches_this_machine(real: tuple[Cgroups, list[Cgroup]]) -> None:
    layout, _ = real
    if layout.version == "v1":
        assert {"cpu", "memory"} <= set(layout.bases)
    else:
        controllers = (layout.bases[""] / "cgroup.controllers").read_text().split()
        assert {"cpu", "memory"} <= set(controllers)


@pytest.mark.root
def test_cpu_limit_holds_a_busy_loop_to_its_share(real: tuple[Cgroups, list[Cgroup]]) -> None:
    layout, made = real
    group = layout.create(_name(), cpu_percent=20)
    made.append(group)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=lambda: group.add(os.getpid()))
    try:
        assert group.pids() == [busy.pid]
        time.sleep(0.2)  # settle into the quota
        before, start = group.usage().cpu_ns, time.monotonic()
        time.sleep(1.0)
        used = (group.usage().cpu_ns - before) / ((time.monotonic() - start) * 1e9)
    finally:
        busy.kill()
        busy.wait()
    assert 0.02 < used <= 0.25, f"the busy loop used {used:.0%} of a core under a 20 % limit"


@pytest.mark.root
def test_memory_limit_kills_a_process_that_exceeds_it(real: tuple[Cgroups, list[Cgroup]]) -> None:
    layout, made = real
    group = layout.create(_name(), memory_mb=48)
    made.append(group)
    if layout.version == "v1":
        assert int((group.dirs["memory"] / "memory.limit_in_bytes").read_text()) == 48 << 20
    else:
        assert int((group.dirs[""] / "memory.max").read_text()) == 48 << 20
    hog = subprocess.run([sys.executable, "-c", "x = b'x' * (200 << 20); print('survived')"],
                         preexec_fn=lambda: group.add(os.getpid()), capture_output=True, text=True, timeout=60)
    assert hog.returncode == -9 and "survived" not in hog.stdout


@pytest.mark.root
def test_remove_kills_members_and_leaves_no_directory(real: tuple[Cgroups, list[Cgroup]]) -> None:
    layout, made = real
    name = _name()
    group = layout.create(name, cpu_percent=50, memory_mb=64)
    made.append(group)
    sleeper = subprocess.Popen(["sleep", "60"], preexec_fn=lambda: group.add(os.getpid()))
    assert name in layout.names() and layout.find(name) is not None
    assert name in layout.names(name[:-2]) and layout.names(name + "x") == []
    member = layout.of_pid(sleeper.pid)
    assert member is not None and member.name == name and layout.of_pid(os.getpid()) is None
    nested = layout.create(f"{name}/inner")  # a group someone made inside: removed with it
    inner = subprocess.Popen(["sleep", "60"], preexec_fn=lambda: nested.add(os.getpid()))
    group.remove()
    assert sleeper.wait(timeout=10) == -9 and inner.wait(timeout=10) == -9
    assert not any(d.exists() for d in group.dirs.values())
    assert layout.find(name) is None and name not in layout.names()
    group.remove()  # idempotent
