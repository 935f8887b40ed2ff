"""Figures of a run's measurements: link utilisation and flow goodput over simulated time.

A results directory (written by ``primo sim MODEL --out DIR`` or ``primo immerse ... --out DIR``)
holds ``links.csv`` and ``flows.csv``, the time series of :class:`primogeni.sim.measure.TimeSeries`:
one row per interface (or flow) per sampling interval, each row the figure of the interval that
*ends* at ``time_s``. This module reads them back strictly (every malformed row is an error that
names the file and line), ranks interfaces by mean utilisation and flows by mean goodput, and
draws them with matplotlib's object API (``Figure`` + the Agg canvas: no pyplot, no backend
switch, no global state). The figures are step plots, since a sample is a mean over its interval.

:func:`plot_results` writes the figures; :func:`utilisation_table` gives the same ranking as rows
for a console table (``primo plot`` prints both).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from primogeni.errors import SimError

FORMATS = ("png", "svg")
LINK_COLUMNS = ("time_s", "interface", "tx_bytes", "utilisation", "drops")
FLOW_COLUMNS = ("time_s", "flow", "delivered_bytes", "goodput_bps")
# A sample's utilisation is busy time over the interval, written with 6 significant digits:
# anything beyond this tolerance above 1 cannot come from a run.
_UTILISATION_SLACK = 1e-3


class ResultsError(SimError, ValueError):
    """A results directory or one of its files cannot be read: names the file and line.

    ``path`` is the file (or directory) at fault, ``line`` the 1-based line of the file when one
    line is at fault, else ``None``; ``reason`` is the message without them.
    """

    def __init__(self, message: str, path: Path | None = None, line: int | None = None) -> None:
        self.path = path
        self.line = line
        self.reason = message
        where = f"{path}:{line}" if path is not None and line is not None else str(path) if path is not None else ""
        super().__init__(f"{where}: {message}" if where else message)


@dataclass
class Series:
    """The samples of one interface or flow, in file order."""

    name: str
    times: list[float] = field(default_factory=list)  # s, end of each sampling interval
    values: list[float] = field(default_factory=list)  # utilisation (0..1) or goodput (bit/s)
    drops: int = 0  # interfaces: the cumulative drop counter's last value

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    @property
    def peak(self) -> float:
        return max(self.values)


def _rows(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, list[str]]]:
    """The data rows of a CSV file with exactly ``columns``, with their line numbers."""
    try:
        with open(path, newline="") as fh:
            reader = csv.reader(fh, strict=True)
            try:
                header = next(reader, None)
                if header is None:
                    raise ResultsError(f"empty file (expected a header {','.join(columns)})", path)
                if tuple(header) != columns:
                    raise ResultsError(f"expected the header {','.join(columns)}, found {','.join(header)}",
                                       path, 1)
                for row in reader:  # reader.line_num: the last physical line of the row
                    if not row:
                        continue
                    if len(row) != len(columns):
                        raise ResultsError(f"expected {len(columns)} fields ({','.join(columns)}), "
                                           f"found {len(row)}", path, reader.line_num)
                    yield reader.line_num, row
            except csv.Error as e:
                raise ResultsError(f"not valid CSV: {e}", path, reader.line_num) from None
    except FileNotFoundError:
        raise ResultsError("missing: not a results directory written by `primo sim --out`?", path) from None
    except OSError as e:
        raise ResultsError(f"cannot read: {e.strerror or e}", path) from None
    except UnicodeDecodeError as e:
        raise ResultsError(f"not text: {e.reason} at byte {e.start}", path) from None


def _number(text: str, what: str, path: Path, line: int, *, integer: bool = False) -> float:
    try:
        value = float(int(text)) if integer else float(text)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ResultsError(f"{what} {text!r} is not {kind}", path, line) from None
    if not math.isfinite(value) or value < 0:
        raise ResultsError(f"{what} {text!r} must be finite and >= 0", path, line)
    return value


def read_links(results_dir: Path) -> dict[str, Series]:
    """``links.csv`` of ``results_dir``: one series of utilisation (0..1) per interface, in file order."""
    path = _results_dir(results_dir) / "links.csv"
    series: dict[str, Series] = {}
    for line, (time_s, interface, tx_bytes, utilisation, drops) in _rows(path, LINK_COLUMNS):
        if not interface:
            raise ResultsError("empty interface name", path, line)
        t = _number(time_s, "time_s", path, line)
        _number(tx_bytes, "tx_bytes", path, line, integer=True)
        u = _number(utilisation, "utilisation", path, line)
        if u > 1 + _UTILISATION_SLACK:
            raise ResultsError(f"utilisation {utilisation!r} is above 1 (a fraction of the interval)", path, line)
        s = series.setdefault(interface, Series(interface))
        s.times.append(t)
        s.values.append(min(u, 1.0))
        s.drops = max(s.drops, int(_number(drops, "drops", path, line, integer=True)))
    if not series:
        raise ResultsError("no samples (was the run shorter than one sampling interval?)", path)
    return series


def read_flows(results_dir: Path) -> dict[str, Series]:
    """``flows.csv`` of ``results_dir``: one series of goodput (bit/s) per flow; empty when the file
    has no samples or is missing (the utilisation of links does not need it)."""
    path = _results_dir(results_dir) / "flows.csv"
    series: dict[str, Series] = {}
    if not path.exists():
        return series
    for line, (time_s, flow, delivered, goodput) in _rows(path, FLOW_COLUMNS):
        if not flow:
            raise ResultsError("empty flow name", path, line)
        t = _number(time_s, "time_s", path, line)
        _number(delivered, "delivered_bytes", path, line, integer=True)
        g = _number(goodput, "goodput_bps", path, line)
        s = series.setdefault(flow, Series(flow))
        s.times.append(t)
        s.values.append(g)
    return series


def model_name(results_dir: Path) -> str | None:
    """The model's name from ``summary.json``, or ``None`` when there is no summary."""
    path = _results_dir(results_dir) / "summary.json"
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise ResultsError(f"cannot read: {e}", path) from None
    try:
        summary = json.loads(text)
    except json.JSONDecodeError as e:
        raise ResultsError(f"not valid JSON: {e.msg} (column {e.colno})", path, e.lineno) from None
    if not isinstance(summary, dict):
        raise ResultsError("not a summary: expected a JSON object", path, 1)
    name = summary.get("model")
    return name if isinstance(name, str) and name else None


def busiest(series: dict[str, Series], top: int) -> list[Series]:
    """The ``top`` series of highest mean, highest first; ties by name."""
    _check_top(top)
    return sorted(series.values(), key=lambda s: (-s.mean, s.name))[:top]


def utilisation_table(results_dir: Path, *, top: int = 8) -> list[tuple[str, float, float, int]]:
    """(interface, mean %, peak %, drops) of the ``top`` busiest interfaces, busiest first."""
    _check_top(top)
    return [(s.name, s.mean * 100, s.peak * 100, s.drops) for s in busiest(read_links(Path(results_dir)), top)]


def plot_results(results_dir: Path, out_dir: Path | None = None, *, top: int = 8, fmt: str = "png") -> list[Path]:
    """Write ``links.<fmt>`` (utilisation of the ``top`` busiest interfaces) and, when flows were
    sampled, ``flows.<fmt>`` (goodput of the ``top`` busiest flows) into ``out_dir`` (default:
    ``results_dir``). Returns the files written."""
    _check_top(top)
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise ResultsError(f"unknown figure format {fmt!r}: use one of {', '.join(FORMATS)}")
    results_dir = Path(results_dir)
    links = read_links(results_dir)
    flows = read_flows(results_dir)
    model = model_name(results_dir)
    out = Path(out_dir) if out_dir is not None else results_dir
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ResultsError(f"cannot make the output directory: {e.strerror or e}", out) from None
    prefix = f"{model}: " if model else ""

    written = [out / f"links.{fmt}"]
    shown = busiest(links, top)
    _draw(
        shown, written[0], fmt, scale=100.0, ylabel="utilisation (%)", ylim=(0.0, 105.0),
        title=f"{prefix}link utilisation, busiest {len(shown)} of {len(links)} interfaces"
        + (f" ({len(links) - len(shown)} not shown)" if len(links) > len(shown) else ""),
    )
    if flows:
        shown = busiest(flows, top)
        written.append(out / f"flows.{fmt}")
        _draw(
            shown, written[1], fmt, scale=1e-6, ylabel="goodput (Mb/s)", ylim=None,
            title=f"{prefix}flow goodput, busiest {len(shown)} of {len(flows)} flows"
            + (f" ({len(flows) - len(shown)} not shown)" if len(flows) > len(shown) else ""),
        )
    return written


def _draw(shown: list[Series], path: Path, fmt: str, *, scale: float, ylabel: str,
          ylim: tuple[float, float] | None, title: str) -> None:
    fig = Figure(figsize=(10, 5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    end = 0.0
    for s in shown:
        times = np.asarray(s.times, dtype=float)
        values = np.asarray(s.values, dtype=float) * scale
        # Each sample covers the interval ending at its time: hold it back to the previous sample
        # (the first one back to 0 s, where every run starts).
        if times[0] > 0:
            times = np.concatenate(([0.0], times))
            values = np.concatenate((values[:1], values))
        ax.step(times, values, where="pre", label=s.name, linewidth=1.2)
        end = max(end, float(times[-1]))
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel(ylabel)
    ax.set_xlim(0.0, end if end > 0 else None)
    if ylim is not None:
        ax.set_ylim(*ylim)
    else:
        ax.set_ylim(bottom=0.0)
    ax.set_title(title, fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    # Without a date and with a fixed id salt, one run's figures are byte-identical every time.
    metadata: dict[str, str | None] = {"Date": None} if fmt == "svg" else {"Software": None}
    try:
        with matplotlib.rc_context({"svg.hashsalt": "primogeni"}):
            fig.savefig(path, format=fmt, metadata=metadata)
    except OSError as e:
        raise ResultsError(f"cannot write the figure: {e.strerror or e}", path) from None


def _results_dir(results_dir: Path) -> Path:
    d = Path(results_dir)
    if not d.is_dir():
        what = "not a directory" if d.exists() else "no such results directory"
        raise ResultsError(what, d)
    return d


def _check_top(top: int) -> None:
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ResultsError(f"top must be an integer >= 1, not {top!r}")
