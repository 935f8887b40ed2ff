"""Helpers shared by the kernel-plumbing and agent test fixtures (``tests/emu/conftest.py``,
``tests/agent/conftest.py``): skipping root tests when not root, and emptying a test's namespace.

Import from any test folder with ``from tests.emu.fixtures import ...``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import pytest

from primogeni.emu import netns
from primogeni.errors import EmuError

ROOT_REASON = ("needs root (creates network namespaces, containers, cgroups); run the tests as root, "
               "e.g. `sudo make test`")


@pytest.fixture(autouse=True)
def _skip_root_tests_unless_root(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("root") is not None and os.geteuid() != 0:
        pytest.skip(ROOT_REASON)


def _is_forker(pid: int) -> bool:
    """emu.container's forker: our child running our program (it lives in whichever namespace first used it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            parent = int(f.read().rsplit(")", 1)[1].split()[1])
        with open(f"/proc/{pid}/cmdline", "rb") as f, open("/proc/self/cmdline", "rb") as g:
            return parent == os.getpid() and f.read() == g.read()
    except (OSError, ValueError, IndexError):
        return False


def kill_inside(name: str) -> None:
    """SIGKILL the processes in namespace ``name`` (they are the test's; never ourselves or our
    container forker) and wait briefly for them."""
    try:
        victims = [pid for pid in netns.pids(name) if pid != os.getpid() and not _is_forker(pid)]
    except EmuError:  # the namespace is gone already
        return
    for pid in victims:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2
    while victims and time.monotonic() < deadline:
        victims = [pid for pid in victims if os.path.exists(f"/proc/{pid}")]
        if victims:
            time.sleep(0.01)


def iperf_mbps(client: str, server_ns: str, server_ip: str, seconds: int, omit: int = 0, port: int = 5301) -> float:
    """TCP throughput from namespace ``client`` to ``server_ip`` in ``server_ns`` measured by iperf3, in
    Mbit/s (the first ``omit`` seconds not counted); skips the test when iperf3 is not installed."""
    iperf = shutil.which("iperf3")
    if iperf is None:
        pytest.skip("iperf3 is not installed")
    server = netns.popen(server_ns, [iperf, "-s", "-1", "-B", server_ip, "-p", str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not netns.tcp_listening(server.pid, port):
            assert server.poll() is None and time.monotonic() < deadline, "the iperf3 server did not start"
            time.sleep(0.01)
        run = netns.run(client, [iperf, "-c", server_ip, "-p", str(port), "-t", str(seconds), "-O", str(omit), "-J"],
                        capture_output=True, text=True, timeout=30)
        result = json.loads(run.stdout)
        assert run.returncode == 0 and "error" not in result, f"iperf3 failed: {run.stdout[-500:]}"
        return float(result["end"]["sum_received"]["bits_per_second"]) / 1e6
    finally:
        server.kill()
        server.wait()


@contextmanager
def namespace_factory(name_of: Callable[[str], str]) -> Iterator[Callable[..., str]]:
    """``make(label="")`` creates namespace ``name_of(label)`` and returns its name; on exit, whatever
    happened, every process still inside one is killed (by pid) and the namespaces are removed."""
    made: list[str] = []

    def make(label: str = "") -> str:
        name = name_of(label)
        netns.create(name)
        made.append(name)
        return name

    try:
        yield make
    finally:
        for name in reversed(made):
            kill_inside(name)
            netns.remove(name)
