"""The demos run end to end and leave nothing behind: `make demo` (immersion) and the substrate demo."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from tests.substrate.bed import leftovers, needs_root

ROOT = Path(__file__).resolve().parents[2]


@needs_root
@pytest.mark.root
@pytest.mark.slow
def test_substrate_demo_runs(tmp_path: Path) -> None:
    if leftovers():
        pytest.fail(f"a substrate is already up on this machine: {leftovers()}")
    home = tmp_path / "home"
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "substrate_demo.py"), str(home)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "substrate demo: done" in out.stdout
    assert "0% packet loss" in out.stdout  # ping across the LAN
    assert "iperf Done." in out.stdout
    assert "ping while down: exit 1 (no answer)" in out.stdout
    assert "\nh3\nalice\n" in out.stdout  # the SSH login reached h3 as alice
    assert not leftovers(), leftovers()


@needs_root
@pytest.mark.root
@pytest.mark.slow
def test_immersion_demo_runs(tmp_path: Path) -> None:
    """`make demo`'s main job: the model deployed, ping and iperf3 beside the prediction, results, plot."""
    if leftovers():
        pytest.fail(f"a substrate is already up on this machine: {leftovers()}")
    home, out_dir = tmp_path / "home", tmp_path / "results"
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "immersion_demo.py"), str(home), "--out",
                          str(out_dir)], capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "immersion demo: done" in out.stdout
    rtt = re.search(r"ping RTT h1 → h2 +measured +([\d.]+) ms +model +([\d.]+) ms", out.stdout)
    tcp = re.search(r"TCP throughput +measured +([\d.]+) Mb/s +model ≈ +([\d.]+) Mb/s", out.stdout)
    assert rtt and tcp, out.stdout[-3000:]
    assert abs(float(rtt[1]) - float(rtt[2])) < 2.0, rtt[0]
    assert 0.6 * float(tcp[2]) <= float(tcp[1]) <= 1.2 * float(tcp[2]), tcp[0]
    assert (out_dir / "sim" / "links.png").read_bytes()[:4] == b"\x89PNG"
    assert "model: 28 routers, 2 emulated hosts" in out.stdout
    assert not leftovers(), leftovers()
