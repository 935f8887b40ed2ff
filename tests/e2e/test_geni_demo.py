"""examples/geni_demo.py (what `make demo` runs after the simulator) runs end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_geni_demo_runs(tmp_path: Path) -> None:
    home = tmp_path / "home"
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "geni_demo.py"), str(home)],
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "GENI demo: done" in out.stdout
    assert "ssh -p 30" in out.stdout  # the manifest's logins
    assert (home / "am" / "am.sqlite").exists() and (home / "ch" / "ch.sqlite").exists()
