"""Measuring between two network namespaces with real tools, for the benches: iperf3 and ping.

Run as root; the namespaces are the caller's. Bench scripts import this with their own directory on
``sys.path`` (``from _netbench import iperf, ping, percentile``).
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from primogeni.emu import netns

PORT = 5201


def iperf(a: str, b: str, dst: str, seconds: int, omit: int, procs: list[subprocess.Popen[Any]],
          rate: str | None = None, port: int = PORT) -> float:
    """TCP A->B in Gbit/s (iperf3's receiver figure); ``rate``: iperf3 -b (paced)."""
    server = netns.popen(b, ["iperf3", "-s", "-1", "-B", dst, "-p", str(port)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    procs.append(server)
    deadline = time.monotonic() + 10
    while not netns.tcp_listening(server.pid, port):
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the iperf3 server did not start")
        time.sleep(0.01)
    pace = ["-b", rate] if rate else []
    run = netns.run(a, ["iperf3", "-c", dst, "-p", str(port), "-t", str(seconds), "-O", str(omit), "-J", *pace],
                    capture_output=True, text=True, timeout=seconds + omit + 30)
    server.wait(timeout=10)
    result = json.loads(run.stdout)
    if run.returncode != 0 or "error" in result:
        raise RuntimeError(f"iperf3 failed: {result.get('error', run.stderr)}")
    return float(result["end"]["sum_received"]["bits_per_second"]) / 1e9


def ping(a: str, dst: str, count: int, interval: str = "0.005") -> list[float]:
    """RTTs in µs of ``count`` pings ``interval`` seconds apart."""
    run = netns.run(a, ["ping", "-n", "-c", str(count), "-i", interval, "-W", "1", dst], capture_output=True,
                    text=True, timeout=count * 0.01 + 30)
    rtts = [float(line.rsplit("time=", 1)[1].split()[0]) * 1000 for line in run.stdout.splitlines() if "time=" in line]
    if not rtts:
        raise RuntimeError(f"no ping answered: {run.stdout[-300:]} {run.stderr[-300:]}")
    return rtts


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def clean_up(procs: list[subprocess.Popen[Any]], namespaces: list[str]) -> None:
    """Kill what a case started (by pid) that still runs, then remove its namespaces, newest first."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for ns in reversed(namespaces):
        netns.remove(ns)
