"""Figures of a run's measurements (`primogeni.sim.plot`) and the `primo plot` command.

One real run of examples/dumbbell.py (2 s simulated, written with `Results.write` exactly as
`primo sim --out` does) is shared by the module; every test that corrupts its files works on a copy.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from primogeni.cli.plot import plot_command
from primogeni.errors import SimError
from primogeni.net.units import s
from primogeni.sim.loader import load_model
from primogeni.sim.plot import ResultsError, plot_results, utilisation_table
from primogeni.sim.simulation import Simulation

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dumbbell")
    Simulation(load_model(EXAMPLES / "dumbbell.py"), seed=7).run(s(2)).write(out)
    return out


@pytest.fixture
def results(run_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the run's results, to corrupt."""
    d = tmp_path / "results"
    shutil.copytree(run_dir, d)
    return d


def _directions(run_dir: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    summary = json.loads((run_dir / "summary.json").read_text())
    return {d["interface"]: (link["name"], d) for link in summary["links"] for d in link["directions"]}


# -- figures --------------------------------------------------------------------------------------


def test_png_figures_of_links_and_flows(run_dir: Path, tmp_path: Path) -> None:
    files = plot_results(run_dir, tmp_path / "figs")
    assert files == [tmp_path / "figs" / "links.png", tmp_path / "figs" / "flows.png"]
    for f in files:
        data = f.read_bytes()
        assert data.startswith(PNG_MAGIC)
        assert len(data) > 10_000  # axes, eight labelled series and a legend, not a blank canvas
    # The default output directory is the results directory itself.
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    assert plot_results(copy) == [copy / "links.png", copy / "flows.png"]


def test_svg_figures_name_the_model_and_the_busiest_interfaces(run_dir: Path, tmp_path: Path) -> None:
    files = plot_results(run_dir, tmp_path, top=3, fmt="SVG")
    assert [f.name for f in files] == ["links.svg", "flows.svg"]
    import xml.etree.ElementTree as ET

    for f in files:
        assert f.stat().st_size > 10_000
        assert ET.parse(f).getroot().tag == "{http://www.w3.org/2000/svg}svg"
    links = files[0].read_text()
    # Text is drawn as glyph paths; matplotlib keeps each string as a comment beside it.
    assert "top: link utilisation, busiest 3 of 18 interfaces (15 not shown)" in links
    assert "top:r0:eth0" in links and "top:d3:eth0" not in links
    flows = files[1].read_text()
    assert "busiest 3 of 6 flows (3 not shown)" in flows
    assert "goodput (Mb/s)" in flows


def test_figures_are_byte_identical_across_calls(run_dir: Path, tmp_path: Path) -> None:
    for fmt in ("png", "svg"):
        a = plot_results(run_dir, tmp_path / "a", fmt=fmt)
        b = plot_results(run_dir, tmp_path / "b", fmt=fmt)
        assert [f.read_bytes() for f in a] == [f.read_bytes() for f in b]


def test_no_flow_samples_means_no_flow_figure(results: Path) -> None:
    (results / "flows.csv").write_text("time_s,flow,delivered_bytes,goodput_bps\n")
    assert plot_results(results) == [results / "links.png"]
    (results / "flows.csv").unlink()  # as good as empty: the links figure is what is asked for
    assert plot_results(results) == [results / "links.png"]


def test_without_summary_the_title_has_no_model(results: Path) -> None:
    (results / "summary.json").unlink()
    (links,) = [f for f in plot_results(results, fmt="svg") if f.name == "links.svg"]
    assert "<!-- link utilisation, busiest 8 of 18 interfaces (10 not shown) -->" in links.read_text()


# -- the table ------------------------------------------------------------------------------------


def test_table_ranks_the_bottleneck_first_and_agrees_with_the_summary(run_dir: Path) -> None:
    directions = _directions(run_dir)
    rows = utilisation_table(run_dir)
    assert len(rows) == 8
    busiest_in_summary = max(directions, key=lambda i: directions[i][1]["utilisation"])
    assert rows[0][0] == busiest_in_summary == "top:r0:eth0"
    assert directions[rows[0][0]][0] == "top:bottleneck"
    assert rows[0][1] > 50  # TCP keeps the 100 Mb/s bottleneck busy
    assert rows[0][3] == directions["top:r0:eth0"][1]["queue_drops"] + directions["top:r0:eth0"][1]["random_losses"]
    # 2 s is a whole number of 100 ms samples: the mean of the samples is the run's utilisation.
    for interface, mean, peak, drops in rows:
        d = directions[interface][1]
        assert mean == pytest.approx(d["utilisation"] * 100, abs=0.01)
        assert mean <= peak <= 100
        assert drops == d["queue_drops"] + d["random_losses"]
    means = [r[1] for r in rows]
    assert means == sorted(means, reverse=True)
    assert [r[0] for r in utilisation_table(run_dir, top=2)] == [r[0] for r in rows[:2]]
    assert len(utilisation_table(run_dir, top=100)) == len(directions) == 18


# -- bad input ------------------------------------------------------------------------------------


def _error(results_dir: Path, **kw: object) -> ResultsError:
    with pytest.raises(ResultsError) as e:
        plot_results(results_dir, **kw)  # type: ignore[arg-type]
    assert isinstance(e.value, SimError) and isinstance(e.value, ValueError)
    return e.value


def test_missing_or_wrong_results_directory(tmp_path: Path) -> None:
    e = _error(tmp_path / "nope")
    assert str(e) == f"{tmp_path / 'nope'}: no such results directory"
    f = tmp_path / "file"
    f.write_text("x")
    assert str(_error(f)) == f"{f}: not a directory"
    e = _error(tmp_path)
    assert e.path == tmp_path / "links.csv" and "missing" in str(e)
    with pytest.raises(ResultsError, match="no such results directory"):
        utilisation_table(tmp_path / "nope")


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("", None, "empty file"),
        ("time_s,interface,tx_bytes,utilisation,drops\n", None, "no samples"),
        ("time,interface,bytes\n0.1,a,1\n", 1, "expected the header time_s,interface,tx_bytes,utilisation,drops"),
        ("HEADER\n0.1,top:a,10,0.5,0\n0.1,top:b,10,0.5\n", 3, "expected 5 fields"),
        ("HEADER\n0.1,top:a,10,0.5,0\n0.2,top:a,10,half,0\n", 3, "utilisation 'half' is not a number"),
        ("HEADER\n0.1,top:a,10,nan,0\n", 2, "utilisation 'nan' must be finite"),
        ("HEADER\n0.1,top:a,10,-0.5,0\n", 2, "must be finite and >= 0"),
        ("HEADER\n0.1,top:a,10,1.5,0\n", 2, "utilisation '1.5' is above 1"),
        ("HEADER\n0.1,top:a,10.5,0.5,0\n", 2, "tx_bytes '10.5' is not an integer"),
        ("HEADER\nsoon,top:a,10,0.5,0\n", 2, "time_s 'soon' is not a number"),
        ("HEADER\n0.1,top:a,10,0.5,many\n", 2, "drops 'many' is not an integer"),
        ("HEADER\n0.1,,10,0.5,0\n", 2, "empty interface name"),
        ('HEADER\n0.1,"top:a"x,10,0.5,0\n', 2, "not valid CSV"),
    ],
)
def test_malformed_links_csv_names_the_file_and_line(results: Path, text: str, line: int | None, reason: str) -> None:
    path = results / "links.csv"
    path.write_text(text.replace("HEADER", "time_s,interface,tx_bytes,utilisation,drops"))
    for call in (lambda: plot_results(results), lambda: utilisation_table(results)):
        with pytest.raises(ResultsError) as e:
            call()
        assert e.value.path == path and e.value.line == line
        assert reason in e.value.reason
        assert str(e.value).startswith(f"{path}:{line}: " if line else f"{path}: ")
    assert not (results / "links.png").exists()


def test_malformed_flows_csv_and_summary_name_the_file_and_line(results: Path) -> None:
    flows = results / "flows.csv"
    lines = flows.read_text().splitlines()
    lines[4] = lines[4].rsplit(",", 1)[0] + ",fast"
    flows.write_text("\n".join(lines) + "\n")
    e = _error(results)
    assert (e.path, e.line) == (flows, 5) and "goodput_bps 'fast' is not a number" in str(e)
    flows.write_bytes(b"time_s,flow,delivered_bytes,goodput_bps\n0.1,\xff\xfe,1,2\n")
    assert "not text" in str(_error(results))

    flows.write_text("time_s,flow,delivered_bytes,goodput_bps\n")
    summary = results / "summary.json"
    summary.write_text('{\n  "model": "top",\n  "seed": \n}\n')
    e = _error(results)
    assert (e.path, e.line) == (summary, 4) and "not valid JSON" in str(e)
    summary.write_text("[1, 2]\n")
    assert "expected a JSON object" in str(_error(results))


def test_bad_format_or_top_is_refused_before_writing(results: Path, tmp_path: Path) -> None:
    assert "unknown figure format 'pdf': use one of png, svg" in str(_error(results, out_dir=tmp_path / "o", fmt="pdf"))
    for top in (0, -3):
        assert f"top must be an integer >= 1, not {top}" in str(_error(results, out_dir=tmp_path / "o", top=top))
        with pytest.raises(ResultsError, match="top must be"):
            utilisation_table(results, top=top)
    assert not (tmp_path / "o").exists()


def test_unwritable_output_is_a_clear_error(results: Path) -> None:
    blocker = results / "blocker"
    blocker.write_text("a file where the output directory should be")
    e = _error(results, out_dir=blocker / "figs")
    assert e.path == blocker / "figs" and "cannot make the output directory" in str(e)


# -- primo plot -----------------------------------------------------------------------------------


def test_cli_writes_figures_and_prints_the_busiest_links(run_dir: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(plot_command, [str(run_dir), "--out", str(tmp_path), "--top", "3", "--format", "svg"])
    assert r.exit_code == 0, r.output
    assert "Busiest link directions" in r.stdout
    table = r.stdout[: r.stdout.index("wrote")]
    assert table.index("top:r0:eth0") < table.index("top:s0:eth0")
    assert table.count("top:") == 3
    mean = utilisation_table(run_dir, top=1)[0][1]
    assert f"{mean:.1f} %" in table
    assert f"wrote {tmp_path / 'links.svg'}" in r.stdout and f"wrote {tmp_path / 'flows.svg'}" in r.stdout
    assert (tmp_path / "links.svg").stat().st_size > 10_000
    assert r.stderr == ""


def test_cli_errors_exit_2(results: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(plot_command, [str(tmp_path / "nope")])
    assert r.exit_code == 2
    assert r.stderr == f"error: {tmp_path / 'nope'}: no such results directory\n"
    r = runner.invoke(plot_command, [str(results), "--top", "0"])
    assert r.exit_code == 2 and r.stderr.startswith("error: top must be an integer >= 1")
    (results / "links.csv").write_text("time_s,interface,tx_bytes,utilisation,drops\n0.1,top:a,x,0.1,0\n")
    r = runner.invoke(plot_command, [str(results)])
    assert r.exit_code == 2
    assert r.stderr == f"error: {results / 'links.csv'}:2: tx_bytes 'x' is not an integer\n"
    assert r.stdout == ""
    r = runner.invoke(plot_command, [str(results), "--format", "pdf"])
    assert r.exit_code == 2 and "'pdf' is not one of" in r.stderr
