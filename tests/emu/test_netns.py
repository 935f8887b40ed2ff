"""Named network namespaces: creation without forking, IPRoute inside, programs inside, sysctls."""

from __future__ import annotations

import errno
import fcntl
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

from primogeni.emu import links, netns
from primogeni.emu import sys as esys
from primogeni.errors import EmuError

SIOCGSKNS = 0x894C  # ioctl: a file descriptor for the network namespace of a socket


def own_namespace() -> tuple[int, int]:
    st = os.stat("/proc/thread-self/ns/net")
    return st.st_dev, st.st_ino


def test_bad_names_are_refused_before_touching_anything() -> None:
    for name in ("", "a/b", "..", "x\0y"):
        with pytest.raises(EmuError):
            netns.create(name)


@pytest.mark.root
def test_create_list_and_remove(netns_factory: Callable[..., str]) -> None:
    name = netns_factory()
    assert netns.exists(name)
    assert name in netns.names("primo-t")
    assert netns.path(name) == netns.NETNS_DIR / name
    with pytest.raises(EmuError, match="exists already"):
        netns.create(name)
    netns.create(name, exist_ok=True)
    assert netns.identity(name) != own_namespace()
    netns.remove(name)
    netns.remove(name)
    assert not netns.exists(name)
    assert name not in netns.names("primo-t")
    with pytest.raises(EmuError):
        netns.pids(name)


@pytest.mark.root
def test_a_stale_file_without_a_mount_is_taken_over(netns_factory: Callable[..., str]) -> None:
    name = netns_factory()
    netns.remove(name)
    netns.NETNS_DIR.joinpath(name).touch()  # what a crash between open and mount leaves
    assert not netns.exists(name)
    netns.create(name)
    assert netns.exists(name)


@pytest.mark.root
def test_create_does_not_move_the_caller_and_takes_about_a_millisecond(netns_factory: Callable[..., str]) -> None:
    before = own_namespace()
    netns_factory()  # the first one may set /run/netns up
    start = time.perf_counter()
    made = [netns_factory() for _ in range(20)]
    per_namespace = (time.perf_counter() - start) / len(made)
    assert own_namespace() == before
    assert len({netns.identity(n) for n in made}) == len(made)  # all different namespaces
    assert per_namespace < 0.010, f"{per_namespace * 1000:.2f} ms per namespace"


@pytest.mark.root
def test_iproute_acts_inside_the_namespace(netns_factory: Callable[..., str]) -> None:
    name = netns_factory()
    with netns.iproute(name) as ipr:
        nsfd = fcntl.ioctl(ipr.fileno(), SIOCGSKNS)
        try:
            st = os.fstat(nsfd)
        finally:
            os.close(nsfd)
        assert (st.st_dev, st.st_ino) == netns.identity(name)
        links.add_veth(ipr, "primo-nsa", "primo-nsb")
    with netns.iproute(name) as ipr:
        assert links.names(ipr, "primo-ns") == ["primo-nsa", "primo-nsb"]
    with netns.iproute() as ipr:
        assert links.index(ipr, "primo-nsa") is None
    assert own_namespace() != netns.identity(name)


@pytest.mark.root
def test_an_iproute_refuses_other_threads_rather_than_acting_elsewhere(netns_factory: Callable[..., str]) -> None:
    name = netns_factory()
    errors: list[BaseException] = []
    with netns.iproute(name) as ipr:
        def use() -> None:
            try:
                ipr.link("dump")
            except RuntimeError as exc:
                errors.append(exc)

        worker = threading.Thread(target=use)
        worker.start()
        worker.join()
    assert len(errors) == 1


@pytest.mark.root
def test_programs_run_inside(netns_factory: Callable[..., str]) -> None:
    name = netns_factory()
    code = "import os; st = os.stat('/proc/self/ns/net'); print(st.st_dev, st.st_ino)"
    done = netns.run(name, [sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert tuple(int(x) for x in done.stdout.split()) == netns.identity(name)
    assert netns.pids(name) == []
    child = netns.popen(name, ["sleep", "30"], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while child.pid not in netns.pids(name) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert netns.pids(name) == [child.pid]
    finally:
        child.kill()
        child.wait()
    assert netns.pids(name) == []
    with pytest.raises(EmuError):
        netns.run("primo-t-no-such-namespace", ["true"])


@pytest.mark.root
def test_sysctls_are_per_namespace(netns_factory: Callable[..., str]) -> None:
    name = netns_factory()
    ours = netns.get_sysctl(None, "net.ipv4.ip_forward")
    netns.set_sysctl(name, "net.ipv4.ip_forward", "1")
    assert netns.get_sysctl(name, "net.ipv4.ip_forward") == "1"
    assert netns.get_sysctl(None, "net.ipv4.ip_forward") == ours
    inside = netns.run(name, ["cat", "/proc/sys/net/ipv4/ip_forward"], capture_output=True, text=True, check=True)
    assert inside.stdout.strip() == "1"
    with esys.in_netns(name):  # /proc/sys/net follows the thread, which in_netns switches
        assert os.stat("/proc/thread-self/ns/net").st_ino == netns.identity(name)[1]
        with open("/proc/sys/net/ipv4/ip_forward") as f:
            assert f.read().strip() == "1"
    with pytest.raises(EmuError):
        netns.set_sysctl(name, "net.ipv4.no_such_key", "1")
    with pytest.raises(EmuError):
        netns.set_sysctl(name, "../../etc/passwd", "x")


@pytest.mark.root
def test_the_helper_thread_is_replaced_when_it_cannot_go_home(
        netns_factory: Callable[..., str], monkeypatch: pytest.MonkeyPatch) -> None:
    netns_factory()  # the helper thread runs
    made = []

    def refuse(fd: int, nstype: int = 0) -> None:
        raise OSError(errno.EPERM, "setns: refused for the test")

    monkeypatch.setattr(esys, "setns", refuse)
    name = f"primo-t{os.getpid() % 100000}-home"
    try:
        with pytest.raises(EmuError, match="refused for the test"):
            netns.create(name)
        made.append(name)
        assert not netns.exists(name) and not netns.path(name).exists()
    finally:
        monkeypatch.undo()
        for leftover in made:
            netns.remove(leftover)
    before = own_namespace()
    assert netns.exists(netns_factory())  # a new helper serves
    assert own_namespace() == before
