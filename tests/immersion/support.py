"""Helpers of the immersion tests: ``primo immerse`` processes, ping and its RTTs, model files.

:class:`Immerse` starts ``primo immerse ARGS`` inside the simulator's namespace (as the aggregate's
simulator sliver would run it); its lines (stderr) are collected by a thread.
"""

from __future__ import annotations

import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from primogeni.emu import links, netns

MODELS = os.path.join(os.path.dirname(__file__), "models")


def model(name: str) -> str:
    return os.path.join(MODELS, name)


class Immerse:
    """A ``primo immerse`` process and the lines it printed."""

    def __init__(self, sim_ns: str, args: tuple[str, ...], **popen: Any) -> None:
        argv = [sys.executable, "-m", "primogeni.cli.main", "immerse", *args]
        prefix = popen.pop("prefix", [])
        self.proc = netns.popen(sim_ns, [*prefix, *argv], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, **popen)
        self.lines: list[str] = []
        self._running = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("running "):
                self._running.set()
        self._running.set()

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_running(self, timeout: float = 30) -> None:
        """Until it says it runs (the hosts are attached and configured)."""
        self._running.wait(timeout)
        assert self.proc.poll() is None and any(x.startswith("running ") for x in self.lines), \
            f"primo immerse did not start:\n{self.log}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send ``sig`` and wait for the end; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait(timeout)

    def wait(self, timeout: float = 60) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(5)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def address(ns: str, ifname: str = "eth1") -> str:
    """The IPv4 address of ``ifname`` in ``ns`` (without its prefix)."""
    with netns.iproute(ns) as ipr:
        found = links.addresses(ipr, ifname)
    assert found, f"{ifname} in {ns} has no IPv4 address"
    return str(found[0].ip)


def ping(ns: str, dst: str, count: int = 1, interval: float = 0.2, ttl: int | None = None,
         timeout: float = 30) -> subprocess.CompletedProcess[str]:
    argv = ["ping", "-n", "-c", str(count), "-i", str(interval), "-W", "1"]
    if ttl is not None:
        argv += ["-t", str(ttl)]
    return netns.run(ns, [*argv, dst], capture_output=True, text=True, timeout=timeout)


def rtts(out: str) -> list[float]:
    """The RTTs (ms) of ping's reply lines."""
    return [float(m) for m in re.findall(r"time=([\d.]+) ms", out)]


def median_rtt(out: str) -> float:
    values = rtts(out)
    assert values, f"no replies:\n{out}"
    return statistics.median(values)


def wait_until(check: Callable[[], bool], timeout: float = 10, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
