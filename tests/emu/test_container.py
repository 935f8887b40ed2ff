"""Containers: spec checks and argv shape (no root), then real containers on this kernel (root)."""

from __future__ import annotations

import ctypes
import os
import secrets
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from primogeni.emu import container, links, netns
from primogeni.emu.container import Container, ContainerSpec
from primogeni.errors import EmuError

Factory = Callable[..., tuple[ContainerSpec, Container]]


def _spec(run_dir: Path, **kwargs: object) -> ContainerSpec:
    name = f"primo-t{secrets.token_hex(3)}"
    fields: dict[str, object] = {"name": name, "hostname": "alpha", "run_dir": run_dir, **kwargs}
    return ContainerSpec(**fields)  # type: ignore[arg-type]


def test_etc_files_add_hosts_and_users(tmp_path: Path) -> None:
    spec = _spec(tmp_path, hosts=(("beta", "10.1.0.2"), ("gamma", "10.1.0.3")), users=(("alice", 20001),))
    files = container.etc_files(spec)
    assert "10.1.0.2\tbeta\n10.1.0.3\tgamma\n127.0.1.1\talpha\n" in files["hosts"]
    assert files["passwd"].startswith("root:")  # the host's entries stay
    assert files["passwd"].endswith("alice:x:20001:20001::/home/alice:/bin/bash\n")
    assert files["group"].endswith("alice:x:20001:\n")
    own = container.etc_files(_spec(tmp_path, hosts=(("alpha", "10.1.0.1"),)))["hosts"]
    assert "127.0.1.1" not in own  # its own name resolves to its own address


@pytest.mark.parametrize("bad", [
    {"name": "other-1"}, {"hostname": "a b"}, {"users": (("root", 5),)}, {"users": (("x:y", 5),)},
    {"users": (("bob", 0),)}, {"hosts": (("h", "10.0.0.1 evil"),)}, {"cpu_percent": 10},
])
def test_bad_specs_are_refused_before_anything_is_made(tmp_path: Path, bad: dict[str, object]) -> None:
    with pytest.raises(EmuError):
        container.create(ContainerSpec(**{"name": "primo-tbad", "hostname": "h", "run_dir": tmp_path, **bad}))  # type: ignore[arg-type]
    assert not (netns.NETNS_DIR / "primo-tbad").exists()


def test_exec_argv_enters_drops_capabilities_and_switches_user() -> None:
    c = Container("primo-tx", 4242, netns.path("primo-tx"))
    argv = container.exec_argv(c, ["id", "-u"], user="alice", cwd="/tmp")
    assert Path(argv[0]).name == "nsenter" and "--target=4242" in argv and "--wdns=/tmp" in argv
    for flag in ("--net", "--uts", "--ipc", "--mount", "--pid"):
        assert flag in argv
    dropped = "-sys_admin,-sys_module,-sys_ptrace,-sys_rawio,-sys_boot"
    assert f"--bounding-set={dropped}" in argv and f"--inh-caps={dropped}" in argv
    assert "--reuid=alice" in argv and "HOME=/home/alice" in argv and argv[-2:] == ["id", "-u"]
    assert "primo-join" not in argv  # no cgroup to join


# ---- the real kernel ----


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Factory]:
    """Create containers named primo-t<hex>; every one is destroyed at teardown, whatever happened."""
    if os.geteuid() != 0:
        pytest.skip("needs root (creates namespaces, mounts and cgroups)")
    made: list[ContainerSpec] = []

    def factory(**kwargs: object) -> tuple[ContainerSpec, Container]:
        spec = _spec(tmp_path, **kwargs)
        made.append(spec)
        return spec, container.create(spec)

    try:
        yield factory
    finally:
        for spec in made:
            container.destroy(spec.name, spec.run_dir)


def _out(c: Container, *argv: str, user: str | None = None) -> str:
    done = container.run(c, list(argv), user=user, timeout=30)
    assert done.returncode == 0, (argv, done.stderr)
    return done.stdout


@pytest.mark.root
def test_container_has_its_own_host_files_tmp_and_users(make: Factory) -> None:
    _, c = make(hosts=(("beta", "10.1.0.2"),), users=(("alice", 20001),))
    assert _out(c, "hostname").strip() == "alpha"
    assert "10.1.0.2\tbeta" in _out(c, "cat", "/etc/hosts")
    probe = f"/tmp/primo-probe-{secrets.token_hex(3)}"
    _out(c, "sh", "-c", f"echo inside > {probe}")
    assert not os.path.exists(probe) and _out(c, "cat", probe) == "inside\n"
    assert _out(c, "id", "-u", user="alice").strip() == "20001"
    assert _out(c, "sh", "-c", 'echo "$HOME $(id -un) $(stat -c %u /home/alice)"', user="alice").split() == [
        "/home/alice", "alice", "20001"]
    assert "/run/sshd" in _out(c, "ls", "-d", "/run/sshd")
    assert container.run(c, ["pwd"], user="alice", cwd="/home/alice").stdout == "/home/alice\n"


@pytest.mark.root
def test_pid_1_is_its_init_and_only_its_processes_are_seen(make: Factory) -> None:
    _, c = make()
    assert c.alive() and c.pid != os.getpid()
    listing = _out(c, "ps", "-e", "-o", "pid=,comm=").split("\n")
    pids = sorted(int(line.split()[0]) for line in listing if line.strip())
    assert pids[0] == 1 and len(pids) == 2, listing  # PID 1 and ps itself
    nspid = next(line for line in Path(f"/proc/{c.pid}/status").read_text().splitlines() if line.startswith("NSpid"))
    assert nspid.split()[1:] == [str(c.pid), "1"]  # the host's PID 1 of the container is its init


@pytest.mark.root
def test_network_namespace_is_separate_with_lo_up(make: Factory) -> None:
    _, c = make()
    names = [line.split(":")[1].strip() for line in _out(c, "ip", "-o", "link").splitlines()]
    assert names == ["lo"]
    assert "UP" in _out(c, "ip", "-o", "link", "show", "lo")
    assert os.stat(c.netns_path).st_ino != os.stat("/proc/self/ns/net").st_ino


@pytest.mark.root
def test_processes_cannot_mount_or_enter_namespaces(make: Factory) -> None:
    _, c = make()
    assert container.run(c, ["unshare", "-n", "true"], timeout=30).returncode != 0
    assert container.run(c, ["mount", "-t", "tmpfs", "x", "/mnt"], timeout=30).returncode != 0
    bounding = int(next(line for line in _out(c, "cat", "/proc/self/status").splitlines()
                        if line.startswith("CapBnd")).split()[1], 16)
    for bit in (16, 17, 19, 21, 22):  # sys_module, sys_rawio, sys_ptrace, sys_admin, sys_boot
        assert not bounding & (1 << bit)


@pytest.mark.root
def test_orphans_are_reaped_by_pid_1(make: Factory) -> None:
    _, c = make()
    _out(c, "sh", "-c", "sleep 0.2 & exit 0")  # the sleep is orphaned to PID 1
    time.sleep(0.6)
    states = _out(c, "ps", "-e", "-o", "stat=,comm=")
    assert "Z" not in "".join(line.split()[0] for line in states.splitlines() if line.strip()), states
    assert "sleep" not in states


@pytest.mark.root
def test_processes_join_the_cgroup_and_the_vsys_directory_is_bound(make: Factory, tmp_path: Path) -> None:
    vsys = tmp_path / "vsys"
    vsys.mkdir()
    (vsys / "hello").write_text("from vsys\n")
    spec, c = make(cgroup=f"primo/primo-t{secrets.token_hex(3)}", cpu_percent=50, memory_mb=256, vsys_dir=vsys)
    lines = _out(c, "cat", "/proc/self/cgroup").splitlines()
    assert any(line.endswith(f":/{spec.cgroup}") and "memory" in line for line in lines), lines
    assert _out(c, "cat", "/vsys/hello") == "from vsys\n"
    group = container.cgroups().find(spec.cgroup or "")
    assert group is not None
    deadline = time.monotonic() + 5
    while c.pid not in group.pids() and time.monotonic() < deadline:  # PID 1 joins after reporting ready
        time.sleep(0.01)
    assert c.pid in group.pids()


@pytest.mark.root
def test_attach_finds_a_container_after_an_agent_restart(make: Factory) -> None:
    made: list[tuple[ContainerSpec, Container]] = []
    creator = threading.Thread(target=lambda: made.append(make(hostname="threaded")))  # the agent is threaded
    creator.start()
    creator.join()
    spec, c = made[0]
    assert container.attach(spec.name, spec.run_dir) == c
    code = f"from primogeni.emu import container; c = container.attach({spec.name!r}, {str(spec.run_dir)!r}); " \
           "print(c.pid, c.alive())"
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert fresh.stdout.split() == [str(c.pid), "True"]
    assert container.attach("primo-tnone", spec.run_dir) is None


@pytest.mark.root
def test_destroy_leaves_no_namespace_process_cgroup_mount_or_file(make: Factory) -> None:
    spec, c = make(cgroup=f"primo/primo-t{secrets.token_hex(3)}", users=(("alice", 20001),))
    sleeper = container.spawn(c, ["sleep", "600"], user="alice")
    time.sleep(0.2)
    container.destroy(spec.name, spec.run_dir)
    assert sleeper.wait(timeout=10) != 0
    assert not os.path.exists(f"/proc/{c.pid}"), "PID 1 is gone and reaped"
    assert not c.alive() and container.attach(spec.name, spec.run_dir) is None
    assert not netns.path(spec.name).exists() and spec.name not in netns.names()
    assert container.cgroups().find(spec.cgroup or "") is None
    assert spec.name not in Path("/proc/self/mountinfo").read_text()
    assert list(spec.run_dir.glob(f"{spec.name}*")) == []
    container.destroy(spec.name, spec.run_dir)  # idempotent


@pytest.mark.root
def test_destroy_many_removes_every_container_and_is_idempotent(make: Factory) -> None:
    made = [make(name=f"primo-t{secrets.token_hex(4)}", cgroup=f"primo/primo-t{secrets.token_hex(3)}")
            for _ in range(3)]
    sleeper = container.spawn(made[0][1], ["sleep", "600"])
    spec0 = made[0][0]
    container.destroy_many([spec.name for spec, _ in made] + ["primo-t-never-made"], spec0.run_dir)
    assert sleeper.wait(timeout=10) != 0
    for spec, c in made:
        assert not os.path.exists(f"/proc/{c.pid}"), "PID 1 is gone and reaped"
        assert container.attach(spec.name, spec.run_dir) is None and spec.name not in netns.names()
        assert container.cgroups().find(spec.cgroup or "") is None
        assert list(spec.run_dir.glob(f"{spec.name}*")) == []
    container.destroy_many([spec.name for spec, _ in made], spec0.run_dir)  # idempotent


@pytest.mark.root
def test_restart_keeps_the_network_namespace_and_its_interfaces(make: Factory,
                                                               netns_factory: Callable[..., str]) -> None:
    spec, c = make(users=(("alice", 20001),))
    node = netns_factory("node")
    peer = f"eth{secrets.token_hex(2)}"
    with netns.iproute(node) as ipr:
        links.add_veth(ipr, f"primo{secrets.token_hex(3)}", peer, peer_netns=c.netns_path)
    sleeper = container.spawn(c, ["sleep", "600"])
    again = container.restart(spec)
    assert again.pid != c.pid and not c.alive() and again.alive()
    assert again.netns_id == c.netns_id
    assert sleeper.wait(timeout=10) != 0
    assert peer in _out(again, "ip", "-o", "link")
    assert _out(again, "hostname").strip() == "alpha" and _out(again, "id", "-u", user="alice").strip() == "20001"
    assert container.attach(spec.name, spec.run_dir) == again
    os.kill(again.pid, 9)  # PID 1 dies on its own: the agent then finds the namespace and restarts
    deadline = time.monotonic() + 5
    while again.alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert container.attach(spec.name, spec.run_dir) is None and netns.exists(spec.name)
    third = container.restart(spec)
    assert third.alive() and peer in _out(third, "ip", "-o", "link")


@pytest.mark.root
def test_threads_create_containers_at_the_same_time(make: Factory) -> None:
    made: list[Container] = []
    failed: list[BaseException] = []

    def one(i: int) -> None:
        try:
            made.append(make(hostname=f"host{i}")[1])
        except BaseException as exc:
            failed.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failed and len(made) == 4
    assert sorted(_out(c, "hostname").strip() for c in made) == ["host0", "host1", "host2", "host3"]
    assert len({c.netns_id for c in made}) == 4


PR_SET_CHILD_SUBREAPER = 36


@pytest.mark.root
def test_a_container_outlives_the_process_that_created_it(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    spec = _spec(tmp_path)
    script = textwrap.dedent(f"""
        from pathlib import Path
        from primogeni.emu import container
        c = container.create(container.ContainerSpec({spec.name!r}, "orphan", Path({str(tmp_path)!r})))
        print(c.pid, container._forker_handle._pid, flush=True)
    """)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # so we can reap what the creator leaves behind
    pid = forker = 0
    try:
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
        pid, forker = (int(x) for x in out.stdout.split())
        c = container.attach(spec.name, tmp_path)
        assert c is not None and c.pid == pid and c.alive()
        assert _out(c, "hostname").strip() == "orphan"
    finally:
        container.destroy(spec.name, tmp_path)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        for child in (pid, forker):  # both were re-parented to us
            if child:
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    try:
                        if os.waitpid(child, os.WNOHANG)[0]:
                            break
                    except ChildProcessError:
                        break
                    time.sleep(0.01)
    assert not os.path.exists(f"/proc/{pid}")


@pytest.mark.root
def test_a_failed_create_names_the_step_and_leaves_nothing(make: Factory, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    spec = _spec(tmp_path, vsys_dir=tmp_path / "file" / "vsys", cgroup=f"primo/primo-t{secrets.token_hex(3)}")
    try:
        with pytest.raises(EmuError, match=r"make .*/file/vsys"):
            container.create(spec)
        assert not netns.path(spec.name).exists()
        assert container.cgroups().find(spec.cgroup or "") is None
        assert list(tmp_path.glob(f"{spec.name}*")) == []
    finally:
        container.destroy(spec.name, spec.run_dir)


@pytest.mark.root
def test_the_forker_never_pins_the_namespace_of_the_thread_that_started_it(
        make: Factory, netns_factory: Callable[..., str]) -> None:
    from primogeni.emu import sys as esys

    node = netns_factory("node")
    container.close_forker()  # the next create starts a new one, from a thread inside ``node``
    made: list[Container] = []

    def inside_node() -> None:
        with esys.in_netns(node):
            made.append(make()[1])

    worker = threading.Thread(target=inside_node)
    worker.start()
    worker.join()
    assert made and made[0].alive()
    forker = container._forker_handle._pid
    assert forker and forker not in netns.pids(node)


@pytest.mark.root
def test_a_killed_forker_is_replaced_and_destroy_still_works(make: Factory) -> None:
    spec, c = make()
    forker = container._forker_handle._pid
    os.kill(forker, 9)
    deadline = time.monotonic() + 5
    while Path(f"/proc/{forker}/stat").read_text().split()[2] != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    container.destroy(spec.name, spec.run_dir)  # PID 1 is init's now; nothing fails
    assert not c.alive() and not netns.path(spec.name).exists()
    _, again = make()  # a new forker
    assert again.alive() and container._forker_handle._pid != forker


@pytest.mark.root
def test_create_many_yields_each_container_in_order_and_a_failure_in_place(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    (tmp_path / "file").write_text("not a directory")
    group = f"primo/primo-t{secrets.token_hex(3)}"
    specs = [_spec(tmp_path, hostname="one", vsys_dir=tmp_path / "v1", cgroup=group,
                   sysctls=(("net.ipv4.ip_local_port_range", "31000 31009"),)),
             _spec(tmp_path, hostname="two", vsys_dir=tmp_path / "file" / "v2"),
             _spec(tmp_path, hostname="three", sysctls=(("net.ipv4.ping_group_range", "0 2147483647"),))]
    try:
        made = list(container.create_many(specs))
        assert [type(m) for m in made] == [Container, EmuError, Container]
        one, failed, three = made
        assert isinstance(one, Container) and isinstance(three, Container) and isinstance(failed, EmuError)
        assert "two" not in str(failed) and specs[1].name in str(failed)
        assert not netns.path(specs[1].name).exists() and not (tmp_path / f"{specs[1].name}.pid").exists()
        assert _out(one, "hostname").strip() == "one" and _out(three, "hostname").strip() == "three"
        assert _out(one, "cat", "/proc/sys/net/ipv4/ip_local_port_range").split() == ["31000", "31009"]
        assert _out(three, "cat", "/proc/sys/net/ipv4/ping_group_range").split() == ["0", "2147483647"]
        assert (tmp_path / "v1").is_dir()  # made by PID 1
        assert container.attach(specs[0].name, tmp_path) == one  # the forker wrote the pid file
        assert one.pid in container.cgroups().find(group).pids()  # type: ignore[union-attr]
        other = _spec(tmp_path)
        assert container.create(other).alive()  # the forker serves single requests again
        specs.append(other)
    finally:
        container.destroy_many([spec.name for spec in specs], tmp_path)
    assert container.cgroups().find(group) is None


@pytest.mark.root
def test_create_many_closed_midway_removes_the_containers_not_taken(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    specs = [_spec(tmp_path, hostname=f"h{i}") for i in range(3)]
    after = _spec(tmp_path, hostname="after")
    try:
        stream = container.create_many(specs)
        first = next(stream)
        stream.close()
        assert isinstance(first, Container) and first.alive()
        assert [netns.path(spec.name).exists() for spec in specs] == [True, False, False]
        assert container.create(after).alive()  # the forker is free again
    finally:
        container.destroy_many([spec.name for spec in [*specs, after]], tmp_path)
