"""Dumbbell benchmark: N TCP bulk flows over a 100 Mb/s, 10 ms bottleneck, 10 simulated seconds.

Access links 1 Gb/s, 1 ms; drop-tail 100 packets everywhere; MSS 1448; flow i starts at
i·0.1/N s. Prints our wall time, events, events/s, packets delivered per wall second,
goodput, Jain's index and peak RSS; with ns-3 installed in .venv-bench (make bench-venv),
ns-3 (Cubic and NewReno) on the same scenario and the ratio of its Run() time to ours.

    .venv/bin/python bench/sim_dumbbell.py [N ...] [--no-ns3] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fmt, peak_rss_mb, run_child, run_ns3, timed_run
from primogeni.sim import Packets, Rate, Simulation, TcpBulk, TcpConfig, dumbbell, ms, s


def one(n: int) -> dict:
    net = dumbbell(n, access_bandwidth=Rate.gbps(1), access_delay=ms(1), bottleneck_bandwidth=Rate.mbps(100),
                   bottleneck_delay=ms(10), queue=Packets(100))
    cfg = TcpConfig(mss=1448)
    for i in range(n):
        net.add_flow(TcpBulk(src=f"s{i}", dst=f"d{i}", start=round(i * 0.1e9 / n), tcp=cfg, name=f"f{i}"))
    t0 = time.perf_counter()
    sim = Simulation(net, seed=1, sample_interval=s(1))  # checks, addresses, routes
    construct = time.perf_counter() - t0
    res, build, run = timed_run(sim, s(10))
    build += construct
    g = [res.flow(f"f{i}")["goodput_bps"] for i in range(n)]
    return {
        "build_wall_s": build,
        "run_wall_s": run,
        "events": res.events,
        "packets_delivered": res.summary["totals"]["packets_delivered"],
        "aggregate_goodput_bps": sum(g),
        "jain": res.summary["totals"]["tcp_bulk_jain"],
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="*", type=int, default=[1, 10, 100])
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-ns3", action="store_true")
    ap.add_argument("--repeat", type=int, default=1, help="runs per case; the median is printed")
    a = ap.parse_args()
    if a.one:
        import json

        print(json.dumps(one(a.n[0])))
        return
    print("dumbbell: N TCP flows, 100 Mb/s 10 ms bottleneck, 10 s simulated")
    hdr = (f"{'N':>4} {'wall s':>7} {'events':>9} {'ev/s':>8} {'pkt/s wall':>10} {'goodput Mb/s':>12} "
           f"{'jain':>5} {'RSS MB':>7} | {'ns3 cubic s':>11} {'Mb/s':>6} {'jain':>5} {'ratio':>6} | "
           f"{'ns3 newreno s':>13} {'Mb/s':>6} {'ratio':>6}")
    print(hdr)
    for n in a.n:
        runs = [run_child(Path(__file__), [str(n)], timeout=1800) for _ in range(a.repeat)]
        ok = [r for r in runs if r]
        if not ok:
            print(f"{n:>4} timed out")
            continue
        wall = statistics.median(r["run_wall_s"] for r in ok)
        r = ok[0]
        line = (f"{n:>4} {wall:>7.2f} {r['events']:>9} {r['events'] / wall:>8.0f} "
                f"{r['packets_delivered'] / wall:>10.0f} {r['aggregate_goodput_bps'] / 1e6:>12.1f} "
                f"{fmt(r['jain'], '.3f'):>5} {r['peak_rss_mb']:>7.0f} |")
        if not a.no_ns3:
            for tcp in ("cubic", "newreno"):
                peers = [run_ns3(["dumbbell", "--n", str(n), "--tcp", tcp], timeout=1800) for _ in range(a.repeat)]
                good = [p for p in peers if p and "run_wall_s" in p]
                if not good:
                    line += f" {'n/a':>11} {'':>6} {'':>5} {'':>6} |" if tcp == "cubic" else f" {'n/a':>13}"
                    continue
                pw = statistics.median(p["run_wall_s"] for p in good)
                p = good[0]
                if tcp == "cubic":
                    line += (f" {pw:>11.2f} {p['aggregate_goodput_bps'] / 1e6:>6.1f} {fmt(p['jain'], '.3f'):>5} "
                             f"{pw / wall:>6.2f} |")
                else:
                    line += f" {pw:>13.2f} {p['aggregate_goodput_bps'] / 1e6:>6.1f} {pw / wall:>6.2f}"
        print(line, flush=True)
    print("ratio = ns-3 Run() wall time / ours (> 1: we are faster)")


if __name__ == "__main__":
    main()
