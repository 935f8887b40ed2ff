"""``primo results SLICE``: fetch what a slice's simulators measured, write it locally, plot it.

The aggregate answers ``PerformOperationalAction(primo:results)`` with, per simulator sliver, the
simulation's state (``idle``/``running``/``done``/``failed``), its exit code, the tail of its log,
and its result files (``summary.json``, ``links.csv``, ``flows.csv``, captures). They are written
under ``--out`` (default ``results/<slice>``) in one directory per simulator sliver, named after
its client_id; a name that is not a plain relative path is refused (the client trusts no server
with its file system). Then link utilisation and goodput are plotted there
(:func:`primogeni.sim.plot.plot_results`) unless ``--no-plot``.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

import click

from primogeni.cli.geni import fail, print_json, print_table
from primogeni.cli.geni_client import _client, client_options

ACTION = "primo:results"
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_name(name: object) -> PurePosixPath:
    """A result file's name as a relative path of plain parts; ValueError for anything else."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ValueError(f"bad result file name {name!r}")
    path = PurePosixPath(name)
    if path.is_absolute() or any(part in ("", ".", "..") for part in path.parts):
        raise ValueError(f"result file name {name!r} is not a plain relative path")
    return path


def write_results(out: Path, name: str, answer: dict[str, Any]) -> list[Path]:
    """Write one simulator's files under ``out/name``; returns the paths written."""
    where = out / _SAFE.sub("_", name)
    written = []
    files = answer.get("files") or {}
    if not isinstance(files, dict):
        raise ValueError("the answer's files are not a struct")
    for fname, data in sorted(files.items()):
        rel = safe_name(fname)
        if not isinstance(data, bytes | bytearray):
            raise ValueError(f"result file {fname!r} is not binary data")
        target = where / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(bytes(data))
        written.append(target)
    if answer.get("log"):
        where.mkdir(parents=True, exist_ok=True)
        (where / "simulator.log").write_text(str(answer["log"]))
    return written


@click.command("results")
@click.argument("slice_name", metavar="SLICE")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path),
              help="Where to write them (default: results/SLICE).")
@click.option("--plot/--no-plot", default=True, show_default=True, help="Plot link utilisation and goodput.")
@client_options
def results(slice_name: str, out: Path | None, plot: bool, home: Path, as_json: bool) -> None:
    """Fetch what SLICE's simulators measured: state, log, result files; plot link utilisation."""
    client = _client(home)
    answer = client.perform_operational_action(slice_name, ACTION)
    out = out or Path("results") / _SAFE.sub("_", slice_name)
    report: list[dict[str, Any]] = []
    for item in answer:
        got = item.get("primo_results") if isinstance(item, dict) else None
        if not isinstance(got, dict):
            continue
        urn = str(item.get("geni_sliver_urn"))
        name = str(item.get("primo_client_id") or urn.rsplit("+", 1)[-1])
        try:
            written = write_results(out, name, got)
        except (ValueError, OSError) as exc:
            fail(f"{name}: cannot write its results: {exc}", 1)
        figures = (_plot(out / _SAFE.sub("_", name), table=not as_json)
                   if plot and any(p.name == "links.csv" for p in written) else [])
        report.append({"sliver": urn, "name": name, "state": got.get("state"), "exit_code": got.get("exit_code"),
                       "files": [str(p) for p in written], "figures": [str(p) for p in figures],
                       "omitted": list(got.get("omitted") or [])})
        if got.get("state") == "failed" and not as_json:
            click.echo(f"{name}: the simulation FAILED (exit {got.get('exit_code')}); its log ends:\n"
                       + "\n".join(str(got.get("log", "")).splitlines()[-15:]), err=True)
    if not report:
        fail(f"slice {slice_name} has no simulator results", 1)
    if as_json:
        print_json(report)
        return
    print_table(f"Results of {slice_name} (in {out})", ("simulator", "state", "files", "figures"),
                ((r["name"], r["state"], "\n".join(r["files"]) or "-", "\n".join(r["figures"]) or "-")
                 for r in report))


def _plot(where: Path, *, table: bool) -> list[Path]:
    from primogeni.errors import PrimoError
    from primogeni.sim.plot import plot_results, utilisation_table

    try:
        figures = plot_results(where)
        rows = utilisation_table(where)
    except PrimoError as exc:
        click.echo(f"cannot plot {where}: {exc}", err=True)
        return []
    if table:
        print_table(f"Busiest simulated links ({where.name})", ("interface", "mean", "peak", "drops"),
                    ((i, f"{m:.1f} %", f"{p:.1f} %", str(d)) for i, m, p, d in rows))
    return figures


COMMANDS = (results,)
