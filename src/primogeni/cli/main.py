"""The ``primo`` command: one entry point with a sub-command per task."""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from primogeni.errors import PrimoError
from primogeni.net.units import parse_duration


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def _ratio(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """``--realtime RATIO``: a finite number > 0 (simulated seconds per wall second)."""
    if value is None:
        return None
    try:
        ratio = float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number (simulated seconds per wall second, "
                                 "e.g. 1 for real time, 0.5 for half speed)") from None
    if not math.isfinite(ratio) or ratio <= 0:
        raise click.BadParameter(f"{value!r}: the ratio must be a finite number > 0 (1 = real time)")
    return ratio


def _params(pairs: tuple[str, ...]) -> dict[str, str]:
    """``--param key=value`` options as a dict."""
    params = {}
    for kv in pairs:
        if "=" not in kv:
            raise click.BadParameter(f"{kv!r} is not key=value", param_hint="--param")
        k, v = kv.split("=", 1)
        params[k] = v
    return params


@click.group()
@click.version_option(package_name="primogeni")
def main() -> None:
    """PrimoGENI: build a model, request resources, deploy, run, watch, collect, tear down."""


def _si(x: float | None, unit: str) -> str:
    if x is None:
        return "-"
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {prefix}{unit}"
    if unit == "s":
        if abs(x) >= 1:
            return f"{x:.3g} s"
        if abs(x) >= 1e-3:
            return f"{x * 1e3:.3g} ms"
        if abs(x) >= 1e-6 or x == 0:
            return f"{x * 1e6:.3g} µs"
        return f"{x * 1e9:.3g} ns"
    return f"{x:.3g} {unit}"


def _flow_table(summary: dict[str, Any], limit: int) -> Table:
    t = Table(title="Flows", show_lines=False)
    for col in ("flow", "kind", "src → dst", "goodput", "loss", "delay p50", "delay p99", "rtt p50", "rtt p99"):
        t.add_column(col, justify="right" if col not in ("flow", "kind", "src → dst") else "left")
    for f in summary["flows"][:limit]:
        rtt = f.get("rtt_s") or {}
        owd = f.get("one_way_delay_s") or {}
        t.add_row(
            f["name"], f["kind"], f"{f['src']} → {f['dst']}",
            _si(f["goodput_bps"], "b/s") if f["kind"] != "ping" else "-",
            f"{f['loss_ratio'] * 100:.2f} %", _si(owd.get("p50"), "s"), _si(owd.get("p99"), "s"),
            _si(rtt.get("p50"), "s"), _si(rtt.get("p99"), "s"),
        )
    if len(summary["flows"]) > limit:
        t.caption = f"{len(summary['flows']) - limit} more flows in summary.json"
    return t


def _link_table(summary: dict[str, Any], limit: int) -> Table:
    t = Table(title="Busiest link directions")
    for col in ("interface", "bandwidth", "utilisation", "drops", "mean queue", "mean wait"):
        t.add_column(col, justify="left" if col == "interface" else "right")
    dirs = [d for link in summary["links"] for d in link["directions"]]
    dirs.sort(key=lambda d: (-d["utilisation"], d["interface"]))
    for d in dirs[:limit]:
        t.add_row(
            d["interface"], _si(d["bandwidth_bps"], "b/s"), f"{d['utilisation'] * 100:.1f} %",
            str(d["queue_drops"] + d["random_losses"]), f"{d['mean_queue_packets']:.2f} pkt",
            _si(d["mean_queueing_delay_s"], "s"),
        )
    return t


def _lag_table(rt: dict[str, Any]) -> Table:
    t = Table(title=f"Real time (ratio {rt['ratio']:g}: simulated s per wall s)")
    for col in ("events", "lag p50", "lag p99", "lag max", "lag mean", "behind", "time behind", "kept up"):
        t.add_column(col, justify="right")
    lag = rt["lag_s"]
    t.add_row(
        f"{rt['events']:,}", _si(lag["p50"], "s"), _si(lag["p99"], "s"), _si(lag["max"], "s"),
        _si(lag["mean"], "s"), f"{rt['behind_episodes']}×", _si(rt["behind_s"], "s"),
        "yes" if rt["kept_up"] else "[bold red]NO[/]",
    )
    hist = "  ".join(f"{k} {v:,}" for k, v in rt["lag_histogram"].items())
    t.caption = f"lag histogram (events): {hist}"
    return t


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--duration", "-d", default="10s", callback=_duration, help="Simulated time, e.g. 10s, 500ms.")
@click.option("--seed", default=1, type=int, show_default=True, help="Seed of every random generator.")
@click.option("--out", "-o", type=click.Path(file_okay=False), help="Write summary.json, CSV series, pcaps here.")
@click.option("--interval", default="100ms", callback=_duration, show_default=True, help="Time-series interval.")
@click.option("--capture", "-c", multiple=True, help="Write a pcap of this interface (e.g. top:h1:eth0).")
@click.option("--param", "-p", multiple=True, help="key=value passed to a Python model's model().")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON instead of tables.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--realtime", "-r", "realtime", default=None, callback=_ratio, metavar="RATIO",
              help="Pace the run to the wall clock: simulated seconds per wall second (1 = real time, "
              "0.5 = half speed, 2 = twice as fast). Ctrl-C ends it early, with results.")
@click.option("--behind-threshold", default="1ms", callback=_duration, show_default=True,
              help="Real time: an event this late or later counts as falling behind.")
def sim(model: str, duration: int, seed: int, out: str | None, interval: int, capture: tuple[str, ...],
        param: tuple[str, ...], as_json: bool, quiet: bool, realtime: float | None, behind_threshold: int) -> None:
    """Run MODEL (a .py or .dml file) in the simulator and report what happened.

    With --realtime, simulated time follows the wall clock; the lag of late events is reported
    and a run that fell behind says so."""
    from rich.logging import RichHandler

    from primogeni.sim.loader import load_model
    from primogeni.sim.realtime import attended
    from primogeni.sim.simulation import Simulation

    console = Console(stderr=True, highlight=False)
    try:
        network = load_model(model, _params(param))
        simulation = Simulation(network, seed=seed, capture=capture, sample_interval=interval)
        simulation.check()
    except PrimoError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    if behind_threshold <= 0:
        raise click.BadParameter("must be > 0, e.g. 1ms", param_hint="--behind-threshold")
    if realtime is not None:
        simulation.realtime.behind_threshold = behind_threshold
    t0 = time.perf_counter()
    with attended(simulation.realtime.stop, RichHandler(console=console, show_path=False, level=logging.WARNING)) \
            if realtime is not None else nullcontext():
        if quiet or (not console.is_terminal and as_json):
            results = simulation.run(duration, realtime=realtime)
        else:
            what = "simulating" if realtime is None else f"real time ×{realtime:g}"
            with Progress(TextColumn(what), BarColumn(), TextColumn("{task.fields[t]}"),
                          TimeElapsedColumn(), console=console, transient=False) as prog:
                task = prog.add_task("sim", total=duration, t="")
                results = simulation.run(
                    duration,
                    lambda now: prog.update(task, completed=now, t=f"{now / 1e9:.2f}/{duration / 1e9:g} s"),
                    realtime=realtime,
                )
    wall = time.perf_counter() - t0
    if out:
        files = results.write(out)
        console.print(f"wrote {', '.join(str(f) for f in files)}")
    if as_json:
        click.echo(json.dumps(results.summary, indent=2, sort_keys=True))
    else:
        con = Console(width=None if sys.stdout.isatty() else 160)
        con.print(_flow_table(results.summary, 30))
        con.print(_link_table(results.summary, 15))
    ran = results.duration
    console.print(
        f"{results.events} events in {wall:.2f} s wall ({results.events / wall:,.0f} events/s), "
        f"{ran / 1e9:g} s simulated (×{ran / 1e9 / wall:.2f} real time)"
    )
    if results.summary["stopped_early"]:
        console.print(f"[yellow]stopped early: {ran / 1e9:.3f} s of the planned {duration / 1e9:g} s simulated[/]")
    rt = results.summary.get("realtime")
    if rt is not None:
        console.print(_lag_table(rt))
        if not rt["kept_up"]:
            console.print(
                f"[bold red]WARNING: the simulator could not keep up with the wall clock: it fell behind "
                f"{rt['behind_episodes']} time(s) by {rt['behind_threshold_s'] * 1e3:g} ms or more, "
                f"{rt['behind_s']:.3f} s in total (worst lag {_si(rt['lag_s']['max'], 's')}). "
                f"Results that depend on timing against real hosts are suspect; try a smaller ratio.[/]"
            )


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--param", "-p", multiple=True, help="key=value passed to a Python model's model().")
def check(model: str, param: tuple[str, ...]) -> None:
    """Check MODEL without running it: addresses, routes, traffic endpoints."""
    from primogeni.sim.loader import load_model
    from primogeni.sim.simulation import Simulation

    try:
        sim_ = Simulation(load_model(model, _params(param)))
        sim_.check()
    except PrimoError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    flows = sum(1 for _ in sim_.network.all_flows())
    click.echo(f"{Path(model).name}: {len(sim_.nodes)} nodes, {len(sim_.ports)} interfaces, "
               f"{sum(1 for _ in sim_.network.all_links())} links, {flows} flows: ok")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--host", "hosts", multiple=True, metavar="HOST=NETNS[:IFNAME]",
              help="Attach emulated HOST (top:h1) to a TAP made here and moved into namespace NETNS as IFNAME "
              "(default eth1), with the model's address and a route to the model via its gateway.")
@click.option("--bind", "binds", multiple=True, metavar="HOST=IFNAME",
              help="Attach HOST to the existing interface IFNAME of this namespace (AF_PACKET); nothing configured.")
@click.option("--tap-fd", "tap_fds", multiple=True, metavar="HOST=FD",
              help="Attach HOST to an inherited, open TAP descriptor FD (works unprivileged).")
@click.option("--duration", "-d", default=None, callback=_duration, help="Simulated time (default: until SIGTERM).")
@click.option("--ratio", default="1", callback=_ratio, show_default=True, help="Simulated s per wall s.")
@click.option("--out", "-o", type=click.Path(file_okay=False), help="Write summary.json, CSV series, pcaps here.")
@click.option("--seed", default=1, type=int, show_default=True, help="Seed of every random generator.")
@click.option("--capture", "-c", multiple=True, help="Write a pcap of this simulated interface (top:r1:if0).")
@click.option("--param", "-p", multiple=True, help="key=value passed to a Python model's model().")
@click.option("--no-offload", is_flag=True, help="No virtio-net headers: plain, complete frames only.")
@click.option("--interval", default=None, callback=_duration, help="Time-series interval (default 100ms).")
@click.option("--behind-threshold", default="1ms", callback=_duration, show_default=True,
              help="An event this late or later counts as falling behind (and is warned about).")
@click.option("--spin", default=None, callback=_duration,
              help="Busy-poll this long before each event (default 200us; 0 never; e.g. 1h: always, a whole core).")
@click.option("--progress", default=5.0, type=float, show_default=True, help="Seconds between progress lines.")
@click.option("--user", default=None, metavar="UID[:GID]",
              help="Read the model and open every endpoint as the caller (root), then drop to this user and group "
              "(GID: UID by default) for good before the model is loaded and run. Not with --host.")
def immerse(model: str, hosts: tuple[str, ...], binds: tuple[str, ...], tap_fds: tuple[str, ...],
            duration: int | None, ratio: float, out: str | None, seed: int, capture: tuple[str, ...],
            param: tuple[str, ...], no_offload: bool, interval: int | None, behind_threshold: int,
            spin: int | None, progress: float, user: str | None) -> None:
    """Run MODEL in real time with real hosts attached to its emulated hosts (see docs/IMMERSION.md).

    Ends after --duration, or on SIGTERM/SIGINT; writes results to --out; removes what it made."""
    from primogeni.immersion.run import main as run_immerse

    sys.exit(run_immerse(model, hosts=hosts, binds=binds, tap_fds=tap_fds, user=user,
                         say=lambda m: click.echo(m, err=True),
                         params=_params(param), duration=duration, ratio=ratio, out=out, seed=seed,
                         capture=capture, offload=not no_offload, interval=interval,
                         behind_threshold=behind_threshold, spin=spin, progress=progress))


from primogeni.cli.geni import register as _register_geni  # noqa: E402  (after `main` exists)

_register_geni(main)

from primogeni.cli.substrate import register as _register_substrate  # noqa: E402

_register_substrate(main)

from primogeni.cli.plot import plot_command  # noqa: E402
from primogeni.cli.results import COMMANDS as _RESULTS  # noqa: E402

for _command in (plot_command, *_RESULTS):
    main.add_command(_command)

if __name__ == "__main__":  # python -m primogeni.cli.main
    main()
