"""Immersion bench: real TCP and ping between two host namespaces, over a plain veth and through the
real-time simulator (``primo immerse``) over 1 and 5 simulated 10 Gb/s, 0-delay hops.

For each case it makes host namespaces A and B (and, for the simulator, a namespace S where
``primo immerse`` runs, attaching the model's emulated hosts a and b to TAPs it moves into A and B).
It measures, in three phases (for the simulator, one ``primo immerse`` run each, so that each has
its own lag figures): iperf3 TCP A->B flat out (``--seconds``, the first second omitted) with the
simulator's CPU share; iperf3 paced at ``--rate`` (1 Gb/s: does the simulator keep up at the
target?); ping A->B (``--pings`` pings 5 ms apart: median and 99th percentile; and as many 0.5 ms
apart, which keep the CPUs awake). For the simulator it prints the lag histogram of its real-time
loop in each phase (from the run's summary.json). The model is a chain a - r0 - ... - r(k-1) - b of
10 Gb/s links with no delay and 1000-packet queues (k = 1 or 5 routers: "hops" counts the simulated
routers, each of which decrements the TTL); the added latency is the ping RTT through the simulator,
less the model's own RTT (transmission times, ~0.07 µs per link each way), less the plain veth's.

    sudo .venv/bin/python bench/immersion.py [--seconds 5] [--rate 1G] [--pings 300] [--repeat 1] [--spin T]
                                             [--json FILE] [--profile [--profile-out DIR]] [CASE ...]

CASE is any of: veth sim1 sim5 (default: all). Needs root; makes namespaces ``primo-ib<tag><i>-{a,b,s}``
and removes them (and kills only its own processes) even on failure. ``--profile`` runs each
simulator under py-spy (raw stacks, ``DIR/<case>-<i>-<phase>.folded.txt``).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _netbench import clean_up, iperf, percentile, ping
from primogeni.emu import links, netns

LABELS = ("<10us", "<100us", "<1ms", "<10ms", "<100ms", ">=100ms")  # the real-time loop's lag buckets
CASES = {"veth": "plain veth A<->B", "sim1": "simulator, 1 hop (10 Gb/s, 0 delay)",
         "sim5": "simulator, 5 hops (10 Gb/s, 0 delay)"}
MODEL = '''"""Bench model: emulated a and b either side of a chain of routers, 10 Gb/s links, no delay."""
from primogeni.sim import Network, Packets, Rate


def model(routers: int = 5, queue: int = 1000) -> Network:
    net = Network()
    prev, b = net.host("a", emulated=True), net.host("b", emulated=True)
    for i in range(routers):
        r = net.router(f"r{i}")
        net.link(prev, r, bandwidth=Rate.gbps(10), delay=0, queue=Packets(queue))
        prev = r
    net.link(prev, b, bandwidth=Rate.gbps(10), delay=0, queue=Packets(queue))
    return net
'''


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def model_rtt_us(routers: int) -> float:
    from primogeni.sim import Simulation
    from primogeni.sim.loader import load_model

    with tempfile.TemporaryDirectory(prefix="primo-ib-") as d:
        path = Path(d) / "chain10g.py"
        path.write_text(MODEL)
        sim = Simulation(load_model(path, {"routers": str(routers)}))
    return (sim.path_delay("top:a", "top:b", 84) + sim.path_delay("top:b", "top:a", 84)) / 1000


class Simulator:
    """``primo immerse`` in namespace ``sim`` with hosts a and b attached to TAPs in namespaces A and B."""

    def __init__(self, sim: str, a: str, b: str, routers: int, out: Path, profile: Path | None,
                 spin: str | None = None) -> None:
        model = out / "chain10g.py"
        model.write_text(MODEL)
        argv = [sys.executable, "-m", "primogeni.cli.main", "immerse", str(model), "-p", f"routers={routers}",
                "--host", f"top:a={a}", "--host", f"top:b={b}", "--out", str(out / "results"), "--progress", "0"]
        if spin is not None:
            argv += ["--spin", spin]
        if profile is not None:
            spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            argv = [spy, "record", "--nonblocking", "-r", "250", "-f", "raw",
                    "-o", str(profile), "--", *argv]
        self.proc = netns.popen(sim, argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())
            if line.startswith("running "):
                break
        else:
            raise RuntimeError("primo immerse did not start:\n" + "\n".join(self.lines))
        self.pid = self._python_pid()
        self.out = out

    def _python_pid(self) -> int:
        """The simulator's own pid (under py-spy, its child)."""
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            children = []
        return int(children[0]) if children else self.proc.pid

    def stop(self) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGINT if self.pid != self.proc.pid else signal.SIGTERM)
        if self.pid != self.proc.pid:  # py-spy passes SIGINT on; make sure the simulator gets it
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
        assert self.proc.stderr is not None
        rest = self.proc.stderr.read()
        self.proc.wait(timeout=60)
        self.lines += rest.splitlines()
        return dict(json.loads((self.out / "results" / "summary.json").read_text()))


def address(ns: str, dev: str) -> str:
    with netns.iproute(ns) as ipr:
        return str(links.addresses(ipr, dev)[0].ip)


def iperf_phase(a: str, b: str, dst: str, seconds: int, rate: str | None, procs: list[subprocess.Popen[Any]],
                sim: Simulator | None) -> tuple[float, float | None]:
    """iperf3 A->B (Gb/s) and the simulator's CPU share meanwhile."""
    cpu0, t0 = (cpu_seconds(sim.pid), time.monotonic()) if sim else (0.0, 0.0)
    gbps = iperf(a, b, dst, seconds, 1, procs, rate)
    cpu = (cpu_seconds(sim.pid) - cpu0) / (time.monotonic() - t0) if sim else None
    return gbps, cpu


def run_case(case: str, tag: str, index: int, args: argparse.Namespace) -> dict[str, Any]:
    """One round of one case: for the simulator, three runs of ``primo immerse`` (one per phase:
    iperf3 flat out, iperf3 paced at ``--rate``, pings), so that each has its own lag figures."""
    a, b, s = (f"primo-ib{tag}{index}-{x}" for x in "abs")
    procs: list[subprocess.Popen[Any]] = []
    made: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="primo-ib-"))
    row: dict[str, Any] = {"case": case}
    try:
        for ns in (a, b, s):
            netns.create(ns)
            made.append(ns)
        if case == "veth":
            with netns.iproute(a) as ipr:
                links.add_veth(ipr, "primoba", "primobb", peer_netns=b, up=True)
                links.add_address(ipr, "primoba", ipaddress.IPv4Interface("10.77.0.1/24"))
            with netns.iproute(b) as ipr:
                links.set_up(ipr, "primobb")
                links.add_address(ipr, "primobb", ipaddress.IPv4Interface("10.77.0.2/24"))
            ping(a, "10.77.0.2", 3)
            row["gbps"], row["cpu"] = iperf_phase(a, b, "10.77.0.2", args.seconds, None, procs, None)
            row["rtts"] = ping(a, "10.77.0.2", args.pings)
            row["busy"] = ping(a, "10.77.0.2", args.pings, "0.0005")
            return row
        routers = int(case.removeprefix("sim"))
        row["model_rtt_us"] = model_rtt_us(routers)
        for phase in ("max", "paced", "ping"):
            profile = args.profile_out / f"{case}-{index}-{phase}.folded.txt" if args.profile else None
            out = tmp / phase
            out.mkdir()
            sim = Simulator(s, a, b, routers, out, profile, args.spin)
            procs.append(sim.proc)
            dst = address(b, "eth1")
            ping(a, dst, 3)  # ARP, and the path works
            if phase == "max":
                row["gbps"], row["cpu"] = iperf_phase(a, b, dst, args.seconds, None, procs, sim)
            elif phase == "paced":
                row["paced_gbps"], row["paced_cpu"] = iperf_phase(a, b, dst, args.seconds, args.rate, procs, sim)
            else:
                row["rtts"] = ping(a, dst, args.pings)
                row["busy"] = ping(a, dst, args.pings, "0.0005")
            summary = sim.stop()
            row[f"realtime_{phase}"] = summary["realtime"]
            row[f"immersion_{phase}"] = summary["immersion"]["totals"]
        return row
    finally:
        clean_up(procs, made)
        shutil.rmtree(tmp, ignore_errors=True)


def _us(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def _lag(rt: dict[str, Any]) -> str:
    lag = rt["lag_s"]
    return (f"p50 {lag['p50'] * 1e6:.0f} µs, p99 {lag['p99'] * 1e6:.0f} µs, max {lag['max'] * 1e3:.1f} ms; "
            f"behind {rt['behind_episodes']}× ({rt['behind_s'] * 1e3:.0f} ms)")


def print_tables(rows: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    base = rows.get("veth")
    base_med = statistics.median(x for row in base for x in row["rtts"]) if base else None
    base_busy = statistics.median(x for row in base for x in row["busy"]) if base else None
    spin = f"primo immerse --spin {args.spin}; " if args.spin else ""
    print(f"\n{spin}load average {os.getloadavg()[0]:.2f}; iperf3 {args.seconds} s (+1 s omitted), {args.pings} pings "
          f"per figure, {args.repeat} round(s); Gb/s are medians over the rounds (each round in brackets)\n")
    print("| case | iperf3 Gb/s | simulator CPU | iperf3 -b " + args.rate + " Gb/s | simulator CPU "
          "| ping med µs (5 ms apart) | p99 µs | added med µs | ping med µs (0.5 ms apart) | added µs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for case, got in rows.items():
        def med(key: str, rows: list[dict[str, Any]] = got) -> float | None:
            values = [row[key] for row in rows if row.get(key) is not None]
            return statistics.median(values) if values else None

        gbps, paced, cpu, pcpu = med("gbps"), med("paced_gbps"), med("cpu"), med("paced_cpu")
        rtts = [x for row in got for x in row["rtts"]]
        busy = [x for row in got for x in row["busy"]]
        rtt_med, busy_med = statistics.median(rtts), statistics.median(busy)
        model = got[0].get("model_rtt_us", 0.0)
        sim = case != "veth"
        added = rtt_med - model - base_med if base_med is not None and sim else None
        added_busy = busy_med - model - base_busy if base_busy is not None and sim else None
        rounds = " / ".join(f"{row['gbps']:.2f}" for row in got)
        print(f"| {CASES[case]} | {gbps:.2f} ({rounds}) | {'-' if cpu is None else f'{cpu * 100:.0f} %'} | "
              f"{'-' if paced is None else f'{paced:.2f}'} | {'-' if pcpu is None else f'{pcpu * 100:.0f} %'} | "
              f"{_us(rtt_med)} | {_us(percentile(rtts, 0.99))} | {_us(added)} | {_us(busy_med)} | "
              f"{_us(added_busy)} |")
    print("\nThe simulator's real-time loop, per phase (lag: how late events ran; behind: episodes >= 1 ms):\n")
    print("| case, round | phase | events | frames in/s | lag | " + " | ".join(LABELS) + " |")
    print("|---|---|---|---|---|" + "---|" * len(LABELS))
    names = {"max": "iperf3 flat out", "paced": f"iperf3 -b {args.rate}", "ping": "pings"}
    for case, got in rows.items():
        for k, row in enumerate(got):
            for phase, name in names.items():
                rt = row.get(f"realtime_{phase}")
                if rt is None:
                    continue
                fps = row[f"immersion_{phase}"]["frames_in"] / max(rt["wall_s"], 1e-9)
                hist = " | ".join(f"{rt['lag_histogram'][label]:,}" for label in LABELS)
                print(f"| {CASES[case]}, {k + 1} | {name} | {rt['events']:,} | {fps:,.0f} | {_lag(rt)} | {hist} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="*", metavar="CASE", help=f"any of {', '.join(CASES)} (default: all)")
    parser.add_argument("--seconds", type=int, default=5, help="iperf3 seconds counted (one more is omitted)")
    parser.add_argument("--rate", default="1G", help="iperf3 -b of the paced phase")
    parser.add_argument("--pings", type=int, default=300)
    parser.add_argument("--spin", help="primo immerse --spin (busy-poll before events; e.g. 1h: always)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of every case, interleaved")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--profile", action="store_true", help="run the simulator under py-spy (raw stacks)")
    parser.add_argument("--profile-out", type=Path, default=Path("."))
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/immersion.py needs root (it makes network namespaces and TAPs)")
    for tool in ("iperf3", "ping"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed")
    cases = args.cases or list(CASES)
    for case in cases:
        if case not in CASES:
            sys.exit(f"no case {case!r} (have: {', '.join(CASES)})")
    tag = secrets.token_hex(2)
    rows: dict[str, list[dict[str, Any]]] = {c: [] for c in cases}
    for r in range(args.repeat):
        for i, case in enumerate(cases):
            print(f"round {r + 1}/{args.repeat}: {CASES[case]} ...", file=sys.stderr, flush=True)
            rows[case].append(run_case(case, tag, r * len(cases) + i, args))
    print_tables(rows, args)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
