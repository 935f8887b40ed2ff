#!/usr/bin/env python3
"""ns-3 peer for the PrimoGENI benchmarks (run with the bench venv, not the project venv).

    .venv-bench/bin/python bench/ns3_peer.py dumbbell --n 10 [--tcp cubic|newreno] [--duration 10]
    .venv-bench/bin/python bench/ns3_peer.py ring --r 100 [--routing global|nix] [--seed 1] [--duration 10]

Builds the scenario in ns-3 (PyPI package ``ns3`` 3.44, cppyy bindings), runs it and prints
exactly ONE line of JSON on stdout. Everything ns-3/cling prints goes to stderr: file
descriptor 1 is pointed at stderr for the whole run and the JSON is written to a saved copy
of the original stdout.

No Python code runs per packet: the only per-packet hook is a small C++ counter on the
PacketSink "Rx" trace (JIT-compiled once with cppyy.cppdef); goodput comes from
PacketSink::GetTotalRx() after the run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import sys
import time

QUEUE_PKTS = 100  # drop-tail limit of every device queue; no queue disc on top
MSS = 1448  # TCP payload bytes per segment (TcpSocket::SegmentSize)
SOCK_BUF = 4 * 1024 * 1024  # TCP SndBufSize / RcvBufSize, large enough not to limit
UDP_PAYLOAD = 1000  # bytes per CBR datagram
UDP_RATE = 1_000_000  # bit/s per CBR flow


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ns3_peer.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="scenario", required=True)
    d = sub.add_parser("dumbbell", help="N TCP bulk flows over one 100 Mb/s, 10 ms bottleneck")
    d.add_argument("--n", type=int, required=True, help="number of sender/receiver pairs")
    d.add_argument("--tcp", choices=("cubic", "newreno"), default="cubic")
    d.add_argument("--duration", type=float, default=10.0, help="simulated seconds")
    r = sub.add_parser("ring", help="R routers in a ring, one host each, R UDP CBR flows")
    r.add_argument("--r", type=int, required=True, help="number of routers (and hosts)")
    r.add_argument("--duration", type=float, default=10.0, help="simulated seconds")
    r.add_argument("--seed", type=int, default=1, help="seed of random.Random for destinations")
    r.add_argument("--routing", choices=("global", "nix"), default="global")
    a = p.parse_args(argv)
    if a.scenario == "dumbbell" and a.n < 1:
        p.error("--n must be >= 1")
    if a.scenario == "ring" and a.r < 2:
        p.error("--r must be >= 2")
    return a


def _redirect_stdout() -> int:
    """Point fd 1 at stderr (C++ and cling print there too) and return a copy of the real stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    return saved


_CPP = r"""
#include "ns3/application.h"
#include "ns3/packet.h"
#include "ns3/address.h"
#include "ns3/callback.h"
#include <cstdint>
namespace primo_bench {
static uint64_t g_rx_packets = 0;
inline void RxCount(ns3::Ptr<const ns3::Packet>, const ns3::Address&) { ++g_rx_packets; }
inline bool HookSink(ns3::Ptr<ns3::Application> app) {
    return app->TraceConnectWithoutContext("Rx", ns3::MakeCallback(&RxCount));
}
inline uint64_t RxPackets() { return g_rx_packets; }
}
"""


def _p2p(ns, rate: str, delay: str):
    h = ns.PointToPointHelper()
    h.SetDeviceAttribute("DataRate", ns.StringValue(rate))
    h.SetChannelAttribute("Delay", ns.StringValue(delay))
    h.SetQueue("ns3::DropTailQueue<Packet>", "MaxSize", ns.StringValue(f"{QUEUE_PKTS}p"))
    return h


class _Addr:
    """Hands out one /24 per link: 10.a.b.0/24."""

    def __init__(self, ns):
        self.ns = ns
        self.k = 0
        self.h = ns.Ipv4AddressHelper()

    def assign(self, devs):
        a, b = divmod(self.k, 256)
        self.k += 1
        self.h.SetBase(self.ns.Ipv4Address(f"10.{a}.{b}.0"), self.ns.Ipv4Mask("255.255.255.0"))
        return self.h.Assign(devs)


def _no_qdisc(ns, all_devs) -> None:
    """Remove the root queue disc Ipv4AddressHelper::Assign installed (fq_codel by default).

    Afterwards the only queue on each device is its 100-packet DropTailQueue.
    """
    tch = ns.TrafficControlHelper()
    for devs in all_devs:
        tch.Uninstall(devs)


def build_dumbbell(ns, a: argparse.Namespace):
    n = a.n
    ns.Config.SetDefault("ns3::TcpSocket::SegmentSize", ns.UintegerValue(MSS))
    ns.Config.SetDefault("ns3::TcpSocket::SndBufSize", ns.UintegerValue(SOCK_BUF))
    ns.Config.SetDefault("ns3::TcpSocket::RcvBufSize", ns.UintegerValue(SOCK_BUF))
    tcp = {"cubic": "ns3::TcpCubic", "newreno": "ns3::TcpNewReno"}[a.tcp]
    ns.Config.SetDefault("ns3::TcpL4Protocol::SocketType", ns.TypeIdValue(ns.TypeId.LookupByName(tcp)))

    senders, receivers, routers = ns.NodeContainer(), ns.NodeContainer(), ns.NodeContainer()
    senders.Create(n)
    receivers.Create(n)
    routers.Create(2)
    stack = ns.InternetStackHelper()
    stack.Install(senders)
    stack.Install(receivers)
    stack.Install(routers)

    access = _p2p(ns, "1Gbps", "1ms")
    bottleneck = _p2p(ns, "100Mbps", "10ms")
    addr = _Addr(ns)
    all_devs = []
    rx_ifaces = []
    d = bottleneck.Install(routers.Get(0), routers.Get(1))
    addr.assign(d)
    all_devs.append(d)
    for i in range(n):
        d = access.Install(senders.Get(i), routers.Get(0))
        addr.assign(d)
        all_devs.append(d)
        d = access.Install(receivers.Get(i), routers.Get(1))
        rx_ifaces.append(addr.assign(d))
        all_devs.append(d)
    _no_qdisc(ns, all_devs)
    ns.Ipv4GlobalRoutingHelper.PopulateRoutingTables()

    sinks, starts = [], []
    port = 5000
    for i in range(n):
        sink_h = ns.PacketSinkHelper(
            "ns3::TcpSocketFactory", ns.InetSocketAddress(ns.Ipv4Address.GetAny(), port).ConvertTo()
        )
        sapps = sink_h.Install(receivers.Get(i))
        sapps.Start(ns.Seconds(0.0))
        sapps.Stop(ns.Seconds(a.duration))
        sink = sapps.Get(0)
        ns.cppyy.gbl.primo_bench.HookSink(sink)
        sinks.append(ns.DynamicCast[ns.PacketSink](sink))
        start = i * 0.1 / n
        starts.append(start)
        bulk = ns.BulkSendHelper(
            "ns3::TcpSocketFactory", ns.InetSocketAddress(rx_ifaces[i].GetAddress(0), port).ConvertTo()
        )
        bulk.SetAttribute("MaxBytes", ns.UintegerValue(0))
        bulk.SetAttribute("SendSize", ns.UintegerValue(MSS))
        capps = bulk.Install(senders.Get(i))
        capps.Start(ns.Seconds(start))
        capps.Stop(ns.Seconds(a.duration))
    return sinks, starts, "tcp"


def ring_destinations(r: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    out = []
    for i in range(r):
        dst = rng.randrange(r - 1)
        dst += dst >= i
        out.append(dst)
    return out


def build_ring(ns, a: argparse.Namespace):
    r = a.r
    routers, hosts = ns.NodeContainer(), ns.NodeContainer()
    routers.Create(r)
    hosts.Create(r)
    stack = ns.InternetStackHelper()
    if a.routing == "nix":
        nix = ns.Ipv4NixVectorHelper()
        stack.SetRoutingHelper(nix)
    stack.Install(routers)
    stack.Install(hosts)

    ring = _p2p(ns, "1Gbps", "1ms")
    stub = _p2p(ns, "1Gbps", "100us")
    addr = _Addr(ns)
    all_devs = []
    n_ring_links = r if r > 2 else 1  # two routers: one link, not two parallel ones
    for i in range(n_ring_links):
        d = ring.Install(routers.Get(i), routers.Get((i + 1) % r))
        addr.assign(d)
        all_devs.append(d)
    host_if = []
    for i in range(r):
        d = stub.Install(hosts.Get(i), routers.Get(i))
        host_if.append(addr.assign(d))
        all_devs.append(d)
    _no_qdisc(ns, all_devs)
    if a.routing == "global":
        ns.Ipv4GlobalRoutingHelper.PopulateRoutingTables()

    dsts = ring_destinations(r, a.seed)
    interval = UDP_PAYLOAD * 8 / UDP_RATE  # 8 ms
    sinks, starts = [], []
    port = 9
    for i in range(r):
        sink_h = ns.PacketSinkHelper(
            "ns3::UdpSocketFactory", ns.InetSocketAddress(ns.Ipv4Address.GetAny(), port + i).ConvertTo()
        )
        sapps = sink_h.Install(hosts.Get(dsts[i]))
        sapps.Start(ns.Seconds(0.0))
        sapps.Stop(ns.Seconds(a.duration))
        sink = sapps.Get(0)
        ns.cppyy.gbl.primo_bench.HookSink(sink)
        sinks.append(ns.DynamicCast[ns.PacketSink](sink))
        starts.append(0.0)
        client = ns.UdpClientHelper(host_if[dsts[i]].GetAddress(0).ConvertTo(), port + i)
        client.SetAttribute("MaxPackets", ns.UintegerValue(0))  # 0 = unlimited
        client.SetAttribute("Interval", ns.TimeValue(ns.Seconds(interval)))
        client.SetAttribute("PacketSize", ns.UintegerValue(UDP_PAYLOAD))
        capps = client.Install(hosts.Get(i))
        capps.Start(ns.Seconds(0.0))
        capps.Stop(ns.Seconds(a.duration))
    return sinks, starts, "udp"


def jain(xs: list[float]) -> float | None:
    s2 = sum(x * x for x in xs)
    return (sum(xs) ** 2) / (len(xs) * s2) if xs and s2 > 0 else None


def main(argv: list[str] | None = None) -> int:
    a = _parse(sys.argv[1:] if argv is None else argv)
    out_fd = _redirect_stdout()

    from ns import ns

    ns.cppyy.cppdef(_CPP)
    ns.RngSeedManager.SetSeed(1)
    ns.RngSeedManager.SetRun(a.seed if a.scenario == "ring" else 1)

    t0 = time.perf_counter()
    sinks, starts, proto = (build_dumbbell if a.scenario == "dumbbell" else build_ring)(ns, a)
    ns.Simulator.Stop(ns.Seconds(a.duration))
    build_wall = time.perf_counter() - t0
    print(f"ns3_peer: built in {build_wall:.2f} s, running", file=sys.stderr, flush=True)

    c0, t0 = time.process_time(), time.perf_counter()
    ns.Simulator.Run()
    run_wall = time.perf_counter() - t0
    run_cpu = time.process_time() - c0

    events = int(ns.Simulator.GetEventCount())
    rx_bytes = [int(s.GetTotalRx()) for s in sinks]
    flows = [b * 8 / (a.duration - st) for b, st in zip(rx_bytes, starts, strict=True)]
    if proto == "udp":
        packets = int(ns.cppyy.gbl.primo_bench.RxPackets())
    else:  # bulk TCP sends full MSS segments: in-order data segments handed to the sink
        packets = sum(math.ceil(b / MSS) for b in rx_bytes)
    ns.Simulator.Destroy()

    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    result = {
        "simulator": "ns-3",
        "ns3_version": "3.44",
        "scenario": a.scenario,
        "params": {k: v for k, v in vars(a).items() if k != "scenario"},
        "run_wall_s": round(run_wall, 4),
        "run_cpu_s": round(run_cpu, 4),
        "build_wall_s": round(build_wall, 4),
        "events": events,
        "sim_seconds": a.duration,
        "flows": [round(f, 1) for f in flows],
        "aggregate_goodput_bps": round(sum(flows), 1),
        "jain": None if jain(flows) is None else round(jain(flows), 4),
        "packets_delivered": packets,
        "rx_bytes": sum(rx_bytes),
        "sink_rx_calls": int(ns.cppyy.gbl.primo_bench.RxPackets()),
        "peak_rss_mb": round(rss_kb / 1024, 1),
    }
    os.write(out_fd, (json.dumps(result) + "\n").encode())
    os.close(out_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
