"""The `primo sim` and `primo check` commands, on every example."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from primogeni.cli.main import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


# Every network model in examples/ (the *_demo.py scripts have their own tests under tests/e2e and tests/substrate).
MODELS = sorted(p.name for p in EXAMPLES.iterdir() if p.suffix in (".py", ".dml") and not p.name.endswith("_demo.py"))


@pytest.mark.parametrize("example", MODELS)
def test_every_example_runs_and_writes_results(example, tmp_path):
    r = CliRunner().invoke(main, ["sim", str(EXAMPLES / example), "--duration", "2s", "--out", str(tmp_path), "-q"])
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["flows"], "an example without traffic"
    assert any(f["delivered_bytes"] > 0 or f["received_packets"] > 0 for f in summary["flows"])
    assert (tmp_path / "flows.csv").read_text().startswith("time_s,flow,")
    assert (tmp_path / "links.csv").read_text().startswith("time_s,interface,")


def test_json_output_and_capture(tmp_path):
    r = CliRunner().invoke(main, ["sim", str(EXAMPLES / "dumbbell.py"), "-d", "500ms", "--json", "-q", "-p", "n=2",
                                  "-c", "top:s0:eth0", "-o", str(tmp_path)])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout[r.stdout.index("{"):])
    assert out["duration_s"] == 0.5
    assert len([f for f in out["flows"] if f["kind"] == "tcp_bulk"]) == 2
    assert (tmp_path / "top_s0_eth0.pcap").stat().st_size > 24


def test_bad_model_is_a_clear_error_with_exit_2(tmp_path):
    bad = tmp_path / "bad.dml"
    bad.write_text("Net [\n host [ id 1 interface [ id 0 ] ]\n link [ attach 1(0) attach 7(0) ]\n]\n")
    r = CliRunner().invoke(main, ["sim", str(bad), "-q"])
    assert r.exit_code == 2
    assert "bad.dml:3" in r.output and "7(0)" in r.output
    assert not (tmp_path / "summary.json").exists()


def test_bad_arguments_are_refused():
    r = CliRunner().invoke(main, ["sim", str(EXAMPLES / "ring.dml"), "--duration", "soon"])
    assert r.exit_code == 2 and "not a duration" in r.output
    r = CliRunner().invoke(main, ["sim", str(EXAMPLES / "dumbbell.py"), "-p", "colour=red"])
    assert r.exit_code == 2 and "no parameter 'colour'" in r.output
    r = CliRunner().invoke(main, ["sim", "missing.dml"])
    assert r.exit_code == 2 and "no model file" in r.output


def test_check_reports_counts():
    r = CliRunner().invoke(main, ["check", str(EXAMPLES / "campus.dml")])
    assert r.exit_code == 0, r.output
    assert "ok" in r.output


def test_model_parameters_are_typed():
    r = CliRunner().invoke(main, ["sim", str(EXAMPLES / "dumbbell.py"), "-p", "n=two", "-q"])
    assert r.exit_code == 2 and "n='two'" in r.output and "int" in r.output
