"""Shared bench plumbing: run one case in a fresh process (for its own peak RSS), call the
ns-3 peer from its bench-only venv, print tables. Not part of the package."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NS3_PYTHON = ROOT / ".venv-bench" / "bin" / "python"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(script: Path, args: list[str], timeout: float) -> dict | None:
    """Run ``script --one ARGS`` in a new interpreter; its last stdout line is JSON."""
    try:
        out = subprocess.run([sys.executable, str(script), "--one", *args], capture_output=True, text=True,
                             timeout=timeout, check=True).stdout
    except subprocess.TimeoutExpired:
        return None
    return json.loads(out.strip().splitlines()[-1])


def run_ns3(args: list[str], timeout: float) -> dict | None:
    """The ns-3 peer's JSON for one scenario, or None when ns-3 is absent or too slow."""
    if not NS3_PYTHON.exists():
        return None
    try:
        p = subprocess.run([str(NS3_PYTHON), str(ROOT / "bench" / "ns3_peer.py"), *args], capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"timeout": timeout}
    if p.returncode != 0:
        return {"error": p.stderr.strip().splitlines()[-1:] or ["failed"]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def timed_run(sim: Any, duration: int) -> tuple[Any, float, float]:
    """Run a Simulation; returns (results, build seconds, run seconds)."""
    t0 = time.perf_counter()
    sim.start(duration)
    t1 = time.perf_counter()
    sim.advance(duration)
    t2 = time.perf_counter()
    return sim.finish(), t1 - t0, t2 - t1


def fmt(x: float | None, spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)
