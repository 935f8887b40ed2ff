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
   simulator is behind the wall clock). A signal that comes while the run is being prepared
   ends it as soon as it starts, with its results.
4. Write the results (``summary.json`` with its ``realtime`` and ``immersion`` blocks,
   ``flows.csv``, ``links.csv``, pcaps of ``capture``) to ``out``, and print a short report.

With ``--user UID[:GID]`` (the node agent's simulator sliver) the order changes so that the
model never runs with privileges: the model file is read and every endpoint opened as the
caller (root; a bound interface also loses IPv6, so that the simulator's side sends nothing of
its own), then the process drops to UID/GID for good (:func:`drop_privileges`), and only then
is the model loaded from the text read earlier (:func:`load_model_text`: a Python model's code
runs as UID), checked against the attachments (the endpoints are closed on any error), run,
and its results written as UID. ``--host`` needs root after the model is loaded (the host's
address comes from it), so it cannot be combined with ``--user``.

Whatever happens (error, signal), every TAP made here is closed on the way out, and the kernel
removes it with its addresses and routes; a SIGKILL does the same (the descriptors die with
the process).
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from primogeni.emu import netns as namespaces
from primogeni.emu.packetio import Endpoint, PacketEndpoint
from primogeni.errors import EmuError, ModelError, PrimoError
from primogeni.immersion.bridge import Immersion, emulated_hosts, host_path
from primogeni.immersion.hostside import DEFAULT_IFNAME, adopt_tap, check_ifname, configure_host, make_tap
from primogeni.net.units import ms, s
from primogeni.sim.loader import load_model, load_model_text, read_model
from primogeni.sim.model import Network
from primogeni.sim.realtime import attended, fmt_ns
from primogeni.sim.simulation import Results, Simulation

UNTIL_STOPPED = s(24 * 3600)  # the planned duration of a run given none: it ends on SIGTERM/SIGINT
# imported before dropping privileges: the interpreter's own files may not be readable by the user
# (a Python under /root, say); a Python model may use these
PRELOAD = ("__future__", "array", "bisect", "collections", "copy", "csv", "dataclasses", "decimal", "enum",
           "fractions", "functools", "hashlib", "heapq", "ipaddress", "itertools", "json", "math", "operator",
           "random", "re", "statistics", "string", "struct", "textwrap", "typing")
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


def parse_user(text: str) -> tuple[int, int]:
    """``--user UID[:GID]`` (numbers; GID defaults to UID) as ``(uid, gid)``; root is refused."""
    uid, sep, gid = text.partition(":")
    if not uid.isdigit() or (sep and not gid.isdigit()):
        raise ValueError(f"--user {text!r}: expected UID[:GID] as numbers, e.g. 20001:20001")
    ids = int(uid), int(gid) if sep else int(uid)
    if 0 in ids or max(ids) >= 2**32 - 1:
        raise ValueError(f"--user {text!r}: not a user to drop to (0 is root)")
    return ids


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
    user: tuple[int, int] | None = None  # (uid, gid) to drop to once the endpoints are open

    @property
    def paths(self) -> list[str]:
        return [h.path for h in self.hosts] + [b.path for b in self.binds] + [t.path for t in self.tap_fds]


def immerse(opts: Options, say: Say = print) -> Results:
    """Do it all (see the module's docstring); return the results. Errors are raised (``ModelError``
    before anything is made, or with ``user`` before the model is run; ``EmuError`` from the kernel),
    after everything made is removed."""
    if opts.ratio <= 0:
        raise ValueError("the ratio must be > 0")
    if opts.user is not None and opts.hosts:
        raise ValueError("--host cannot be combined with --user: the host is configured from the model, "
                         "after the privileges are dropped; attach it with --bind or --tap-fd")
    _check_unique(opts)
    with ExitStack() as stack:
        early = stack.enter_context(_signals_held())  # a stop asked for before the run: honoured when it starts
        if opts.user is None:
            sim = _simulation(load_model(opts.model, opts.params), opts)  # checked before the kernel is touched
            stack.enter_context(attended(sim.realtime.stop, _SayHandler(say), (signal.SIGTERM, signal.SIGINT)))
            attachments = _attach(opts, stack, say)
        else:
            text = read_model(opts.model)
            attachments = _attach(opts, stack, say)
            preload()
            drop_privileges(*opts.user)
            say(f"dropped privileges: uid {opts.user[0]} gid {opts.user[1]}")
            sim = _simulation(load_model_text(text, opts.model, opts.params), opts)
            stack.enter_context(attended(sim.realtime.stop, _SayHandler(say), (signal.SIGTERM, signal.SIGINT)))
        if early:
            sim.realtime.stop()  # the run ends at once, with its (empty) results
        network = sim.network
        imm = Immersion(sim, attachments, offload=opts.offload, split_threshold=opts.split_threshold)
        stack.callback(imm.close)
        for spec in opts.hosts:
            h = imm.emulation.hosts[host_path(network, spec.path)]
            configure_host(spec.netns, spec.ifname, h.address, h.gateway, network.prefix)
        duration = opts.duration if opts.duration is not None else UNTIL_STOPPED
        results = _run(sim, imm, duration, opts, say)
        imm.record(results)
        if opts.user is not None:
            results.summary["immersion"]["user"] = {"uid": os.getuid(), "gid": os.getgid()}
        if opts.out is not None:
            files = results.write(opts.out)
            say(f"wrote {', '.join(str(f) for f in files)}")
        for line in report(results.summary):
            say(line)
        return results
    raise AssertionError("unreachable")  # pragma: no cover  (mypy: ExitStack may swallow)


@contextmanager
def _signals_held() -> Iterator[list[int]]:
    """While the run is prepared: SIGTERM and SIGINT are noted (in the list yielded) rather than fatal,
    so that a stop asked for early still ends with results. Only in the main thread (where signals go)."""
    noted: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield noted
        return
    old = {sig: signal.signal(sig, lambda signum, _frame: noted.append(signum))
           for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield noted
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _simulation(network: Network, opts: Options) -> Simulation:
    """The model realized and checked, and checked against the attachments; the real-time loop set."""
    duration = opts.duration if opts.duration is not None else UNTIL_STOPPED
    interval = opts.interval or (ms(100) if duration <= s(3600) else s(1))
    sim = Simulation(network, seed=opts.seed, capture=opts.capture, sample_interval=interval)
    sim.check()
    emulated_hosts(network, opts.paths)  # every mismatch named before anything runs
    loop = sim.realtime
    loop.behind_threshold = opts.behind_threshold
    if opts.spin is not None:
        if opts.spin < 0:
            raise ValueError("spin must be >= 0 ns")
        loop.spin = opts.spin
    return sim


def _attach(opts: Options, stack: ExitStack, say: Say) -> dict[str, Endpoint]:
    """Every endpoint opened (TAPs made, sockets bound, descriptors adopted); each closed by ``stack``."""
    attachments: dict[str, Endpoint] = {}
    for k, spec in enumerate(opts.hosts):
        ep: Endpoint = make_tap(spec.netns, spec.ifname, index=k, vnet=opts.offload)
        stack.callback(ep.close)
        attachments[spec.path] = ep
    for b in opts.binds:
        ep = PacketEndpoint.bind(b.ifname, vnet=opts.offload)
        stack.callback(ep.close)
        attachments[b.path] = ep
        disable_ipv6(b.ifname, say)
    for t in opts.tap_fds:
        ep = adopt_tap(t.fd)
        stack.callback(ep.close)
        attachments[t.path] = ep
    return attachments


def disable_ipv6(ifname: str, say: Say = print) -> None:
    """No IPv6 on the bound interface ``ifname`` of this namespace: its side sends nothing of its own
    (router solicitations, DAD). Without the privilege to do so (CAP_NET_ADMIN), a warning."""
    if not os.path.isdir("/proc/sys/net/ipv6"):
        return  # this kernel has no IPv6
    try:
        namespaces.set_sysctl(None, f"net.ipv6.conf.{ifname}.disable_ipv6", "1")
    except EmuError as exc:
        if not isinstance(exc.__cause__, PermissionError):
            raise
        say(f"WARNING: cannot disable IPv6 on {ifname} (not permitted): its own IPv6 packets reach the host")


def preload() -> None:
    """Import what the run may need (the simulator's modules, :data:`PRELOAD`) while the interpreter's
    files are still readable: after :func:`drop_privileges` they may not be."""
    import primogeni.net
    import primogeni.sim

    for name in PRELOAD:
        importlib.import_module(name)
    for package in (primogeni.sim, primogeni.net):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if info.name != "primogeni.sim.plot":  # matplotlib: slow, and not used by a run
                importlib.import_module(info.name)


def drop_privileges(uid: int, gid: int) -> None:
    """Become ``uid``/``gid`` for good: no supplementary groups, real, effective and saved ids all set
    (so no capability is left), no new privileges through set-user-ID programs. Checked: root cannot be
    regained and no capability remains; ``EmuError`` otherwise."""
    where = f"uid {uid} gid {gid}"
    try:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        raise EmuError(f"cannot switch to the user: {exc.strerror} (needs root)", where) from exc
    _no_new_privs(where)
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        raise EmuError("root could be regained after dropping privileges", where)
    caps = {k: v.strip() for k, _, v in (line.partition(":") for line in Path("/proc/self/status").read_text()
                                           .splitlines()) if k in ("CapPrm", "CapEff", "CapAmb")}
    if (os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid) or os.getgroups()
            or any(int(v, 16) for v in caps.values())):
        raise EmuError(f"privileges remain after dropping them: {caps}, groups {os.getgroups()}", where)


def _no_new_privs(where: str) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise EmuError(f"cannot set no_new_privs: {os.strerror(ctypes.get_errno())}", where)


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
         user: str | None = None, say: Say = print, **options: Any) -> int:
    """``primo immerse``: parse the attachments, run, and map errors to exit codes (0 done; 1 the
    kernel refused or the run failed; 2 bad arguments or model). ``options``: the other fields
    of :class:`Options`."""
    try:
        opts = Options(model, tuple(parse_host(h) for h in hosts), tuple(parse_bind(b) for b in binds),
                       tuple(parse_tap_fd(t) for t in tap_fds), user=parse_user(user) if user else None, **options)
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
    except (PrimoError, OSError) as exc:  # OSError: e.g. the results directory is not writable
        say(f"error: {exc}")
        return 1
    except ValueError as exc:  # a bad option value (ratio, spin, duration)
        say(f"error: {exc}")
        return 2
    return 0


__all__ = ["PRELOAD", "UNTIL_STOPPED", "BindSpec", "HostSpec", "Options", "TapFdSpec", "disable_ipv6",
           "drop_privileges", "immerse", "load_model_text", "main", "parse_bind", "parse_host", "parse_tap_fd",
           "parse_user", "preload", "progress_line", "report"]
