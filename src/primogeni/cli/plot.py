"""``primo plot``: figures and a console table of a run's measurements.

Reads a results directory written by ``primo sim MODEL --out DIR`` or ``primo immerse ... --out
DIR``, writes ``links.<fmt>`` and ``flows.<fmt>`` (see :mod:`primogeni.sim.plot`), prints the busiest
interfaces as a table and the files written. Exit codes: 0 success; 2 bad arguments or a results
directory that cannot be read (``error: FILE:LINE: ...`` on stderr).

matplotlib is imported only when the command runs, so ``primo --help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from primogeni.errors import PrimoError


@click.command("plot")
@click.argument("results_dir", type=click.Path(path_type=Path))
@click.option("--out", "-o", "out", type=click.Path(path_type=Path),
              help="Write the figures here [default: RESULTS_DIR].")
@click.option("--top", "-n", default=8, type=int, show_default=True,
              help="Show this many of the busiest interfaces and flows.")
@click.option("--format", "-f", "fmt", default="png", show_default=True,
              type=click.Choice(["png", "svg"], case_sensitive=False), help="Figure format.")
def plot_command(results_dir: Path, out: Path | None, top: int, fmt: str) -> None:
    """Plot link utilisation and flow goodput over time from RESULTS_DIR (written by --out)."""
    from primogeni.sim.plot import plot_results, utilisation_table

    try:
        files = plot_results(results_dir, out, top=top, fmt=fmt)
        rows = utilisation_table(results_dir, top=top)
    except PrimoError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    table = Table(title="Busiest link directions")
    for col in ("interface", "mean utilisation", "peak utilisation", "drops"):
        table.add_column(col, justify="left" if col == "interface" else "right")
    for interface, mean, peak, drops in rows:
        table.add_row(interface, f"{mean:.1f} %", f"{peak:.1f} %", str(drops))
    con = Console(width=None if sys.stdout.isatty() else 160, highlight=False)
    con.print(table)
    for f in files:
        click.echo(f"wrote {f}")
