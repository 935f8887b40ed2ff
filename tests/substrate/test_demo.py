"""examples/substrate_demo.py (what `make demo` runs last) runs end to end and leaves nothing behind."""

from __future__ import annotations

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
