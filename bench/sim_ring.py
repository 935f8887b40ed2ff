"""Ring benchmark: R routers in a ring (1 Gb/s, 1 ms), one host per router on a 1 Gb/s,
100 µs stub; R UDP CBR flows of 1 Mb/s, 1000-byte payloads, host i to a random other host
(Python's random.Random(1), the same draw as the ns-3 peer); 10 simulated seconds.

    .venv/bin/python bench/sim_ring.py [R ...] [--no-ns3] [--ns3-timeout 900]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_mb, run_child, run_ns3, timed_run
from primogeni.sim import Packets, Rate, Simulation, UdpCbr, ms, ring, s, us


def destinations(r: int, seed: int = 1) -> list[int]:
    rng = random.Random(seed)
    out = []
    for i in range(r):
        d = rng.randrange(r - 1)
        out.append(d + (d >= i))
    return out


def one(r: int) -> dict:
    net = ring(r, bandwidth=Rate.gbps(1), delay=ms(1), stub_bandwidth=Rate.gbps(1), stub_delay=us(100),
               queue=Packets(100))
    for i, d in enumerate(destinations(r)):
        net.add_flow(UdpCbr(src=f"h{i}", dst=f"h{d}", rate=Rate.mbps(1), size=1000, name=f"f{i}"))
    t0 = time.perf_counter()
    sim = Simulation(net, seed=1, sample_interval=s(1))  # checks, addresses, routes
    construct = time.perf_counter() - t0
    res, build, run = timed_run(sim, s(10))
    build += construct
    got = sum(f["received_packets"] for f in res.summary["flows"])
    return {"build_wall_s": build, "run_wall_s": run, "events": res.events, "packets_delivered": got,
            "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("r", nargs="*", type=int, default=[10, 100, 1000])
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-ns3", action="store_true")
    ap.add_argument("--ns3-timeout", type=float, default=900)
    a = ap.parse_args()
    if a.one:
        import json

        print(json.dumps(one(a.r[0])))
        return
    print("ring: R routers, R UDP CBR 1 Mb/s flows, 10 s simulated")
    print(f"{'R':>5} {'build s':>7} {'run s':>7} {'events':>10} {'ev/s':>8} {'pkt/s wall':>10} {'RSS MB':>7} | "
          f"{'ns3 global s':>12} {'ratio':>6} | {'ns3 nix s':>9} {'ratio':>6}")
    for r in a.r:
        res = run_child(Path(__file__), [str(r)], timeout=3600)
        if res is None:
            print(f"{r:>5} timed out")
            continue
        wall = res["run_wall_s"]
        line = (f"{r:>5} {res['build_wall_s']:>7.2f} {wall:>7.2f} {res['events']:>10} {res['events'] / wall:>8.0f} "
                f"{res['packets_delivered'] / wall:>10.0f} {res['peak_rss_mb']:>7.0f} |")
        if not a.no_ns3:
            for routing in ("global", "nix"):
                p = run_ns3(["ring", "--r", str(r), "--routing", routing], timeout=a.ns3_timeout)
                if p is None or "run_wall_s" not in p:
                    why = "n/a" if p is None else ("timeout" if "timeout" in p else "error")
                    line += f" {why:>12} {'':>6} |" if routing == "global" else f" {why:>9}"
                    continue
                pw = p["run_wall_s"]
                line += f" {pw:>12.2f} {pw / wall:>6.2f} |" if routing == "global" else f" {pw:>9.2f} {pw / wall:>6.2f}"
        print(line, flush=True)
    print("ratio = ns-3 Run() wall time / ours (> 1: we are faster)")


if __name__ == "__main__":
    main()
