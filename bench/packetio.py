"""Packet I/O bench: real frames through a pure-Python forwarder, TAP versus AF_PACKET, with and without
virtio-net headers (TSO/GSO super-frames).

Two emulated-host namespaces A (10.N.0.1/24) and B (10.N.0.2/24) are joined either by a plain veth
(the baseline) or through a forwarder process: single-threaded, an epoll loop with batch reads, as the
simulator's real-time loop will be, copying frames between the two endpoints of
``primogeni.emu.packetio`` (created in a third, "simulator" namespace S). For each case it measures
iperf3 TCP A->B (``--seconds``, the first second omitted); ping A->B (median and 99th percentile of
``--pings`` pings 5 ms apart, and the median of as many 0.5 ms apart, which keep the CPUs awake); and,
during the iperf3 run, the forwarder's frames/s, its CPU share, and the mean frame size each way (above
1514 bytes: super-frames arrived). Then the Python cost of one read as ``bytes`` versus into a reused
buffer (memoryview), for three frame sizes.

    sudo .venv/bin/python bench/packetio.py [--seconds 3] [--pings 200] [--repeat 1] [--busy-poll] [--quick] [CASE ...]

CASE is any of: veth tap tap-vnet packet packet-vnet (default: all). Needs root; makes namespaces
``primo-pb<tag><i>-{a,b,s}`` and removes them (and kills only its own processes) even on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import random
import secrets
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _netbench import clean_up, iperf, percentile, ping
from primogeni.emu import links, netns
from primogeni.emu.packetio import Endpoint, PacketEndpoint, TapEndpoint

CASES = {
    "veth": "plain veth A<->B (no forwarder)",
    "tap": "TAP, no vnet header",
    "tap-vnet": "TAP, vnet header + TSO",
    "packet": "AF_PACKET on veth, no vnet header",
    "packet-vnet": "AF_PACKET on veth, vnet header",
}
HOST_A, HOST_B = "primoha", "primohb"  # the hosts' interfaces (in A and in B)
SIM_A, SIM_B = "primosa", "primosb"  # the simulator's veth ends (AF_PACKET cases, in S)
BATCH = 64


# -- the forwarder (its own process) ------------------------------------------------------------

def make_endpoints(case: str, sim: str, a: str, b: str) -> tuple[Endpoint, Endpoint]:
    vnet = case.endswith("-vnet")
    if case.startswith("tap"):
        ea: Endpoint = TapEndpoint.create(HOST_A, netns=sim, host_netns=a, vnet=vnet)
        try:
            return ea, TapEndpoint.create(HOST_B, netns=sim, host_netns=b, vnet=vnet)
        except BaseException:
            ea.close()
            raise
    ea = PacketEndpoint.create(SIM_A, HOST_A, netns=sim, host_netns=a, vnet=vnet)
    try:
        return ea, PacketEndpoint.create(SIM_B, HOST_B, netns=sim, host_netns=b, vnet=vnet)
    except BaseException:
        ea.close()
        raise


def forward(case: str, sim: str, a: str, b: str, busy_poll: bool = False) -> None:
    """Copy frames A<->B until stdin closes; answer each line on stdin with the counters as JSON.

    ``busy_poll``: never sleep (poll with timeout 0), which spares the wake-up of an idle CPU.
    """
    ea, eb = make_endpoints(case, sim, a, b)
    try:
        poller = select.epoll()
        pairs = {ea.fileno(): (ea, eb), eb.fileno(): (eb, ea)}
        for fd in pairs:
            poller.register(fd, select.EPOLLIN)
        poller.register(0, select.EPOLLIN)
        timeout = 0 if busy_poll else -1
        print("ready", flush=True)
        while True:
            for fd, _ in poller.poll(timeout):
                if fd == 0:
                    if not os.read(0, 4096):
                        return
                    cpu = os.times()
                    print(json.dumps({"t": time.monotonic(), "cpu": cpu.user + cpu.system,
                                      "a": ea.counters.__dict__, "b": eb.counters.__dict__}), flush=True)
                    continue
                src, dst = pairs[fd]
                send = dst.send
                for frame, vnet in src.recv_batch(BATCH):
                    send(frame, vnet)
    finally:
        ea.close()
        eb.close()


# -- measuring (the main process) ---------------------------------------------------------------

def address(subnet: int, host: int) -> ipaddress.IPv4Interface:
    return ipaddress.IPv4Interface(f"10.{subnet}.0.{host}/24")


def setup_hosts(case: str, a: str, b: str, subnet: int) -> None:
    if case == "veth":
        with netns.iproute(a) as ipr:
            links.add_veth(ipr, HOST_A, HOST_B, peer_netns=b, up=True)
        with netns.iproute(b) as ipr:
            links.set_up(ipr, HOST_B)
    for ns, dev, host in ((a, HOST_A, 1), (b, HOST_B, 2)):
        with netns.iproute(ns) as ipr:
            links.add_address(ipr, dev, address(subnet, host))


def stats(forwarder: subprocess.Popen[str]) -> dict[str, Any]:
    assert forwarder.stdin is not None and forwarder.stdout is not None
    forwarder.stdin.write("stats\n")
    forwarder.stdin.flush()
    return dict(json.loads(forwarder.stdout.readline()))


def run_case(case: str, tag: str, index: int, args: argparse.Namespace) -> dict[str, Any]:
    a, b, sim = (f"primo-pb{tag}{index}-{x}" for x in "abs")
    subnet = random.randrange(100, 200)
    dst = str(address(subnet, 2).ip)
    procs: list[subprocess.Popen[Any]] = []
    made: list[str] = []
    forwarder: subprocess.Popen[str] | None = None
    try:
        for ns in (a, b, sim):
            netns.create(ns)
            made.append(ns)
        if case != "veth":
            spin = ["--busy-poll"] if args.busy_poll else []
            forwarder = subprocess.Popen([sys.executable, __file__, *spin, "--forward", case, sim, a, b], text=True,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            procs.append(forwarder)
            assert forwarder.stdout is not None
            if forwarder.stdout.readline().strip() != "ready":
                raise RuntimeError(f"the {case} forwarder did not start")
        setup_hosts(case, a, b, subnet)
        ping(a, dst, 3)  # ARP, and the path works
        before = stats(forwarder) if forwarder else None
        gbps = iperf(a, b, dst, args.seconds, args.omit, procs)
        after = stats(forwarder) if forwarder else None
        rtts = ping(a, dst, args.pings)
        busy = ping(a, dst, args.pings, "0.0005")
        row: dict[str, Any] = {"case": case, "gbps": gbps, "rtts": rtts, "busy": busy}
        if before and after:
            dt = after["t"] - before["t"]
            d = {side: {k: after[side][k] - before[side][k] for k in after[side]} for side in "ab"}
            row["fps"] = (d["a"]["frames_in"] + d["b"]["frames_in"]) / dt
            row["cpu"] = (after["cpu"] - before["cpu"]) / dt
            row["size_ab"] = d["a"]["bytes_in"] / max(1, d["a"]["frames_in"])
            row["size_ba"] = d["b"]["bytes_in"] / max(1, d["b"]["frames_in"])
            row["drops"] = d["a"]["drops"] + d["b"]["drops"]
        return row
    finally:
        if forwarder is not None and forwarder.stdin is not None:
            forwarder.stdin.close()  # the forwarder closes its endpoints and exits
            with contextlib.suppress(subprocess.TimeoutExpired):
                forwarder.wait(timeout=5)
        clean_up(procs, made)


# -- reading as bytes or into a reused buffer ---------------------------------------------------

def recv_cost(sizes: tuple[int, ...] = (66, 1514, 65000)) -> dict[int, tuple[float, float]]:
    """µs per read of one datagram of each size: ``os.read`` (fresh bytes) vs ``recv_into`` a reused buffer."""
    found = {}
    for size in sizes:
        reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        with reader, writer:
            writer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
            reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            count = 100 if size > 10_000 else 1000
            payload = os.urandom(size)
            buf = bytearray(1 << 20)
            view = memoryview(buf)
            fd = reader.fileno()
            best = [1e9, 1e9]
            for _ in range(5):
                for way in (0, 1):
                    for _ in range(count):
                        writer.send(payload)
                    t0 = time.perf_counter()
                    if way == 0:
                        kept: list[Any] = [os.read(fd, 66560) for _ in range(count)]
                    else:
                        kept, off = [], 0
                        for _ in range(count):
                            if off + 66560 > len(buf):
                                off = 0
                            n = reader.recv_into(view[off:off + 66560])
                            kept.append(view[off:off + n])
                            off += n
                    best[way] = min(best[way], (time.perf_counter() - t0) / count * 1e6)
                    del kept
            found[size] = (best[0], best[1])
    return found


def combine(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from several rounds of a case: medians of the per-round figures, RTT statistics over all pings."""
    rtts = [r for row in rounds for r in row["rtts"]]
    busy = [r for row in rounds for r in row["busy"]]
    row: dict[str, Any] = {"median": statistics.median(rtts), "p99": percentile(rtts, 0.99),
                           "busy": statistics.median(busy)}
    for key in ("gbps", "fps", "cpu", "size_ab", "size_ba", "drops"):
        if key in rounds[0]:
            row[key] = statistics.median(r[key] for r in rounds)
    return row


def fmt(row: dict[str, Any], key: str, spec: str) -> str:
    return format(row[key], spec) if key in row else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cases", nargs="*", metavar="CASE", help=" ".join(CASES) + " (default: all)")
    ap.add_argument("--seconds", type=int, default=3, help="iperf3 measured seconds (default 3)")
    ap.add_argument("--pings", type=int, default=200, help="pings per case (default 200)")
    ap.add_argument("--repeat", type=int, default=1, help="rounds over all cases, interleaved (default 1)")
    ap.add_argument("--quick", action="store_true", help="1 s of iperf3, none omitted, 50 pings")
    ap.add_argument("--busy-poll", action="store_true",
                    help="the forwarder never sleeps (polls with timeout 0): no wake-up latency, a whole core")
    ap.add_argument("--forward", nargs=4, metavar=("CASE", "SIM", "A", "B"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.forward:
        forward(*args.forward, busy_poll=args.busy_poll)
        return
    if os.geteuid() != 0:
        sys.exit("needs root (makes network namespaces)")
    if shutil.which("iperf3") is None:
        sys.exit("needs iperf3")
    args.omit = 1
    if args.quick:
        args.seconds, args.omit, args.pings = 1, 0, 50
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # run the clean-up
    tag = secrets.token_hex(2)
    cases = args.cases or list(CASES)
    if set(cases) - set(CASES):
        sys.exit(f"unknown case {sorted(set(cases) - set(CASES))}; cases are {' '.join(CASES)}")
    print(f"iperf3 TCP A->B {args.seconds} s (-O {args.omit}); ping A->B x{args.pings} at 5 ms; "
          f"forwarder: 1 Python thread, epoll{' busy-polling' if args.busy_poll else ''}, batches of {BATCH}")
    print(f"{'':<44} {'ping 5 ms apart':-^28} {'0.5 ms apart':-^17}")
    print(f"{'case':<36} {'Gb/s':>6} {'med µs':>11} {'p99 µs':>7} {'added µs':>8} {'med µs':>7} {'added µs':>8} | "
          f"{'fwd frames/s':>12} {'CPU':>4} {'A->B B/frame':>12} {'B->A B/frame':>12} {'drops':>6}")
    rows: dict[str, list[dict[str, Any]]] = {case: [] for case in cases}
    for round_ in range(args.repeat):  # interleaved, so that other load on the machine spreads over all cases
        for index, case in enumerate(cases):
            rows[case].append(run_case(case, tag, round_ * len(cases) + index, args))
    base = combine(rows["veth"]) if "veth" in rows else None
    for case in cases:
        row = combine(rows[case])
        if base is not None and case != "veth":
            added = f"{row['median'] - base['median']:8.0f} {row['busy']:7.0f} {row['busy'] - base['busy']:8.0f}"
        else:
            added = f"{'-':>8} {row['busy']:7.0f} {'-':>8}"
        cpu = f"{row['cpu']:4.0%}" if "cpu" in row else f"{'-':>4}"
        print(f"{CASES[case]:<36} {row['gbps']:6.2f} {row['median']:11.0f} {row['p99']:7.0f} {added} | "
              f"{fmt(row, 'fps', '12.0f'):>12} {cpu} {fmt(row, 'size_ab', '12.0f'):>12} "
              f"{fmt(row, 'size_ba', '12.0f'):>12} {fmt(row, 'drops', '6.0f'):>6}", flush=True)
    if args.repeat > 1:
        print(f"(over {args.repeat} interleaved rounds: Gb/s and forwarder figures are medians of the rounds, "
              f"RTTs are pooled; Gb/s of each round: "
              + "; ".join(f"{c} " + " ".join(f"{r['gbps']:.2f}" for r in rows[c]) for c in cases) + ")")
    print("\nPython cost of one read (µs): fresh bytes (os.read) vs recv_into a reused buffer + memoryview")
    for size, (fresh, reused) in recv_cost().items():
        print(f"  {size:>6} B frame: bytes {fresh:5.2f}   memoryview {reused:5.2f}")


if __name__ == "__main__":
    main()
