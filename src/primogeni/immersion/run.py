"""What ``primo immerse`` does: real hosts attached to a model's emulated hosts, run in real time.

``primo immerse MODEL --host top:h1=NETNS[:IFNAME] --bind top:h2=IFNAME --tap-fd top:h3=FD ...``

1. Load the model (``.py`` or ``.dml``) and check it, and check the attachments against its
   emulated hosts, before anything is made.
2. Attach each emulated host:

   * ``--host PATH=NETNS[:IFNAME]``: a TAP made here and moved into namespace NETNS (a name
     under ``/run/netns`` or a path) as IFNAME (default ``eth1``), given the model's address
     and prefix, MTU 1500, and a route to the model's address space (the top net's prefix) via
     the host's simulated gateway (:mod:`primogeni.immersion.hostside`). Needs root.
   * ``--bind PATH=IFNAME``: an ``AF_PACKET`` socket on an existing interface of this
     namespace (the emulated host is elsewhere, reached over a substrate link); nothing is
     configured on the host. Needs CAP_NET_RAW.
   * ``--tap-fd PATH=FD``: a TAP descriptor inherited from a parent (the node agent makes TAPs
     for containers); nothing is configured. Needs no privilege.

3. Run in real time (``ratio``) for ``duration``, or until SIGTERM or SIGINT, printing a
   progress line every few seconds, and the real-time loop's warnings as they come (loud: the
   simulator is behind the wall clock).
4. Write the results (``summary.json`` with its ``realtime`` and ``immersion`` blocks,
   ``flows.csv``, ``links.csv``, pcaps of ``capture``) to ``out``, and print a short report.

Whatever happens (error, signal), every TAP made here is closed on the way out, and the kernel
removes it with its addresses and routes; a SIGKILL does the same (the descriptors die with
the process).
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from primogeni.emu.packetio import Endpoint, PacketEndpoint
from primogeni.errors import EmuError, ModelError, PrimoError
from primogeni.immersion.bridge import Immersion, emulated_hosts, host_path
from primogeni.immersion.hostside import DEFAULT_IFNAME, adopt_tap, check_ifname, configure_host, make_tap
from primogeni.net.units import ms, s
from primogeni.sim.loader import load_model
from primogeni.sim.realtime import attended, fmt_ns
from primogeni.sim.simulation import Results, Simulation

UNTIL_STOPPED = s(24 * 3600)  # the planned duration of a run given none: it ends on SIGTERM/SIGINT
Say = Callable[[str], None]


@dataclass(frozen=True)
class HostSpec:
    """``--host PATH=NETNS[:IFNAME]``."""

    path: str
    netns: str
    ifname: str = DEFAULT_IFNAME


@dataclass(frozen=True)
class BindSpec:
    """``--bind PATH=IFNAME``."""

    path: str
    ifname: str


@dataclass(frozen=True)
class TapFdSpec:
    """``--tap-fd PATH=FD``."""

    path: str
    fd: int


def _split(text: str, option: str, form: str) -> tuple[str, str]:
    path, sep, rest = text.partition("=")
    if not sep or not path or not rest:
        raise ValueError(f"{option} {text!r}: expected {form}")
    return path, rest


def parse_host(text: str) -> HostSpec:
    path, rest = _split(text, "--host", "HOST=NETNS[:IFNAME], e.g. top:h1=primo-h1:eth1")
    ns, _, ifname = rest.partition(":")
    if not ns:
        raise ValueError(f"--host {text!r}: no namespace")
    ifname = ifname or DEFAULT_IFNAME
    check_ifname(ifname)
    return HostSpec(path, ns, ifname)


def parse_bind(text: str) -> BindSpec:
    path, ifname = _split(text, "--bind", "HOST=IFNAME, e.g. top:h2=primo-sub1")
    check_ifname(ifname)
    return BindSpec(path, ifname)


def parse_tap_fd(text: str) -> TapFdSpec:
    path, fd = _split(text, "--tap-fd", "HOST=FD, e.g. top:h1=3")
    if not fd.isdigit():
        raise ValueError(f"--tap-fd {text!r}: {fd!r} is not a descriptor number")
    return TapFdSpec(path, int(fd))


@dataclass
class Options:
    """Everything ``primo immerse`` takes (times in ns)."""

    model: str
    hosts: tuple[HostSpec, ...] = ()
    binds: tuple[BindSpec, ...] = ()
    tap_fds: tuple[TapFdSpec, ...] = ()
    params: Mapping[str, str] = field(default_factory=dict)
    duration: int | None = None  # None: until SIGTERM/SIGINT (at most UNTIL_STOPPED)
    ratio: float = 1.0
    out: str | Path | None = None
    seed: int = 1
    capture: tuple[str, ...] = ()
    offload: bool = True
    interval: int | None = None  # time-series interval; None: 100 ms, or 1 s for an open-ended run
    behind_threshold: int = ms(1)
    split_threshold: int | None = None
    spin: int | None = None  # busy-poll this long before each event (None: the loop's default, 200 µs)
    progress: float = 5.0  # wall seconds between progress lines; 0: none

    @property
    def paths(self) -> list[str]:
        return [h.path for h in self.hosts] + [b.path for b in self.binds] + [t.path for t in self.tap_fds]


def immerse(opts: Options, say: Say = print) -> Results:
    """Do it all (see the module's docstring); return the results. Errors are raised (``ModelError``
    before anything is made, ``EmuError`` from the kernel), after everything made is removed."""
    if opts.ratio <= 0:
        raise ValueError("the ratio must be > 0")
    network = load_model(opts.model, opts.params)
    duration = opts.duration if opts.duration is not None else UNTIL_STOPPED
    interval = opts.interval or (ms(100) if duration <= s(3600) else s(1))
    sim = Simulation(network, seed=opts.seed, capture=opts.capture, sample_interval=interval)
    sim.check()
    emulated_hosts(network, opts.paths)  # every mismatch named before the kernel is touched
    _check_unique(opts)
    loop = sim.realtime
    loop.behind_threshold = opts.behind_threshold
    if opts.spin is not None:
        if opts.spin < 0:
            raise ValueError("spin must be >= 0 ns")
        loop.spin = opts.spin
    with ExitStack() as stack:
        stack.enter_context(attended(loop.stop, _SayHandler(say), (signal.SIGTERM, signal.SIGINT)))
        attachments: dict[str, Endpoint] = {}
        for k, spec in enumerate(opts.hosts):
            ep: Endpoint = make_tap(spec.netns, spec.ifname, index=k, vnet=opts.offload)
            stack.callback(ep.close)
            attachments[spec.path] = ep
        for b in opts.binds:
            ep = PacketEndpoint.bind(b.ifname, vnet=opts.offload)
            stack.callback(ep.close)
            attachments[b.path] = ep
        for t in opts.tap_fds:
            ep = adopt_tap(t.fd)
            stack.callback(ep.close)
            attachments[t.path] = ep
        imm = Immersion(sim, attachments, offload=opts.offload, split_threshold=opts.split_threshold)
        stack.callback(imm.close)
        for spec in opts.hosts:
            h = imm.emulation.hosts[host_path(network, spec.path)]
            configure_host(spec.netns, spec.ifname, h.address, h.gateway, network.prefix)
        results = _run(sim, imm, duration, opts, say)
        imm.record(results)
        if opts.out is not None:
            files = results.write(opts.out)
            say(f"wrote {', '.join(str(f) for f in files)}")
        for line in report(results.summary):
            say(line)
        return results
    raise AssertionError("unreachable")  # pragma: no cover  (mypy: ExitStack may swallow)


def _check_unique(opts: Options) -> None:
    seen: set[tuple[str, str]] = set()
    for spec in opts.hosts:
        key = (spec.netns, spec.ifname)
        if key in seen:
            raise EmuError("two hosts are given the same interface", f"{spec.ifname} in {spec.netns}")
        seen.add(key)
    fds = [t.fd for t in opts.tap_fds]
    if len(set(fds)) != len(fds):
        raise EmuError("the same TAP descriptor is given for two hosts", "--tap-fd")


def _run(sim: Simulation, imm: Immersion, duration: int, opts: Options, say: Say) -> Results:
    sim.start(duration, realtime=opts.ratio)
    say(_ready(imm, opts, duration))  # the hosts are attached and configured: the clock starts now
    step = max(ms(1), int(s(1) * opts.ratio / 5))  # ~0.2 s of wall time
    every = opts.progress
    next_line = time.monotonic() + every
    now = 0
    while now < duration and not sim.stopped:
        now = min(now + step, duration)
        sim.advance(now)
        if every > 0 and time.monotonic() >= next_line:
            next_line = time.monotonic() + every
            say(progress_line(sim, imm))
    results = sim.finish()
    if sim.stopped:
        say(f"stopped at simulated {results.duration / 1e9:.3f} s")
    return results


def _fmt_s(x: float | None) -> str:
    return "-" if x is None else fmt_ns(x * 1e9)


def progress_line(sim: Simulation, imm: Immersion) -> str:
    loop = sim.realtime
    c = imm.counters()
    lag = loop.lag
    behind = f"BEHIND {loop.behind_episodes}×" if loop.behind_episodes else "kept up"
    return (f"t={sim.engine.now / 1e9:.1f} s: in {c['frames_in']:,} frames {c['bytes_in'] / 1e6:,.1f} MB, "
            f"out {c['frames_out']:,} frames {c['bytes_out'] / 1e6:,.1f} MB, send drops {c['drops']}; "
            f"lag p50 {_fmt_s(lag.percentile(50) / 1e9 if lag.count else None)} "
            f"p99 {_fmt_s(lag.percentile(99) / 1e9 if lag.count else None)} "
            f"max {_fmt_s(lag.max / 1e9 if lag.count else None)}; {behind}")


def _ready(imm: Immersion, opts: Options, duration: int) -> str:
    parts = []
    where = {**{h.path: f"{h.ifname} in {h.netns}" for h in opts.hosts},
             **{b.path: f"bound to {b.ifname}" for b in opts.binds},
             **{t.path: f"TAP fd {t.fd}" for t in opts.tap_fds}}
    for spec_path, text in where.items():
        path = host_path(imm.sim.network, spec_path)
        h = imm.emulation.hosts[path]
        parts.append(f"{path} {h.address} via {h.gateway} ({text}, {imm.endpoints[path].name})")
    until = f"for {duration / 1e9:g} s" if opts.duration is not None else "until SIGTERM/SIGINT"
    return (f"running {Path(opts.model).name} in real time (ratio {opts.ratio:g}) {until}: "
            + "; ".join(parts))


def report(summary: Mapping[str, Any]) -> list[str]:
    """Lines that say what the run did: per host, frames each way and drops; the real-time lag."""
    lines = []
    imm = summary.get("immersion", {})
    for path, h in imm.get("hosts", {}).items():
        ep = h["endpoint"]
        dropped = ", ".join(f"{k} {v}" for k, v in h["dropped"].items()) or "none"
        lines.append(f"{path} ({h['address']}): from the host {h['frames_in']:,} frames {h['bytes_in']:,} B, "
                     f"to it {h['frames_out']:,} frames {h['bytes_out']:,} B; dropped: {dropped}; "
                     f"send drops {ep['send_drops']}")
    rt = summary.get("realtime")
    if rt is not None:
        lag = rt["lag_s"]
        hist = "  ".join(f"{k} {v:,}" for k, v in rt["lag_histogram"].items())
        lines.append(f"real time: {rt['events']:,} events, lag p50 {_fmt_s(lag['p50'])} p99 {_fmt_s(lag['p99'])} "
                     f"max {_fmt_s(lag['max'])}; histogram: {hist}")
        if not rt["kept_up"]:
            lines.append(f"WARNING: THE SIMULATOR COULD NOT KEEP UP with the wall clock: it fell behind "
                         f"{rt['behind_episodes']} time(s) by {_fmt_s(rt['behind_threshold_s'])} or more, "
                         f"{rt['behind_s']:.3f} s in total (worst lag {_fmt_s(lag['max'])}). What the real hosts "
                         "measured (delays, rates) is suspect; try a smaller model, less traffic or a smaller ratio.")
    return lines


class _SayHandler(logging.Handler):
    def __init__(self, say: Say) -> None:
        super().__init__(logging.WARNING)
        self.say = say

    def emit(self, record: logging.LogRecord) -> None:
        self.say(f"WARNING: {record.getMessage()}")


def main(model: str, *, hosts: tuple[str, ...] = (), binds: tuple[str, ...] = (), tap_fds: tuple[str, ...] = (),
         say: Say = print, **options: Any) -> int:
    """``primo immerse``: parse the attachments, run, and map errors to exit codes (0 done; 1 the
    kernel refused or the run failed; 2 bad arguments or model). ``options``: the other fields
    of :class:`Options`."""
    try:
        opts = Options(model, tuple(parse_host(h) for h in hosts), tuple(parse_bind(b) for b in binds),
                       tuple(parse_tap_fd(t) for t in tap_fds), **options)
        if not opts.paths:
            raise ValueError("no real host to attach: give --host, --bind or --tap-fd for each emulated host")
    except (ValueError, EmuError) as exc:
        say(f"error: {exc}")
        return 2
    try:
        immerse(opts, say)
    except ModelError as exc:
        say(f"error: {exc}")
        return 2
    except PrimoError as exc:
        say(f"error: {exc}")
        return 1
    except ValueError as exc:  # a bad option value (ratio, spin, duration)
        say(f"error: {exc}")
        return 2
    return 0


__all__ = ["UNTIL_STOPPED", "BindSpec", "HostSpec", "Options", "TapFdSpec", "immerse", "main", "parse_bind",
           "parse_host", "parse_tap_fd", "progress_line", "report"]
