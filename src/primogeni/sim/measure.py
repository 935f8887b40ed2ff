"""Measurements: per-flow and per-link figures, time series, packet captures.

Figures are kept as counters on the hot path and turned into SI units (seconds, bit/s, bytes)
only when the run ends. Everything written is a pure function of the model and the seed, so
two runs with one seed give byte-identical files.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from primogeni.net import packet as wire
from primogeni.net.pcap import PcapWriter
from primogeni.sim.node import WirePacket

if TYPE_CHECKING:
    from primogeni.sim.node import Packet, Port


class FlowStats:
    """What one flow did. Applications and the network update it in place."""

    __slots__ = (
        "completed", "delays", "delivered", "drops", "dst", "extra", "kind", "name", "recv_bytes",
        "recv_packets", "responses", "retransmits", "rtts", "sent_bytes", "sent_packets", "src",
        "start", "started", "stop", "timeouts",
    )

    def __init__(self, name: str, kind: str, src: str, dst: str, start: int, stop: int) -> None:
        self.name = name
        self.kind = kind
        self.src = src
        self.dst = dst
        self.start = start
        self.stop = stop
        self.started: int | None = None
        self.completed: int | None = None
        self.sent_packets = 0
        self.sent_bytes = 0
        self.recv_packets = 0
        self.recv_bytes = 0
        self.delivered = 0  # application bytes delivered in order at the receiver
        self.drops = 0  # packets of this flow dropped anywhere (queues, loss, TTL, no route)
        self.retransmits = 0
        self.timeouts = 0
        self.delays: list[int] = []  # one-way delays, ns (UDP)
        self.rtts: list[int] = []  # round-trip times, ns (TCP samples, ping)
        self.responses: list[int] = []  # request/response times, ns
        self.extra: dict[str, Any] = {}

    def goodput(self, end: int) -> float:
        """Application bits per second over the flow's active time."""
        begin = self.started if self.started is not None else self.start
        finish = min(self.completed or end, self.stop, end)
        active = finish - begin
        return self.delivered * 8e9 / active if active > 0 else 0.0


def percentile(sorted_values: list[int] | list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    n = len(sorted_values)
    if n == 0:
        return math.nan
    pos = (n - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return sorted_values[lo] * (1 - frac) + sorted_values[hi] * frac


def _dist(values_ns: list[int]) -> dict[str, float] | None:
    if not values_ns:
        return None
    v = sorted(values_ns)
    return {
        "count": len(v),
        "min": v[0] / 1e9,
        "mean": sum(v) / len(v) / 1e9,
        "p50": percentile(v, 50) / 1e9,
        "p90": percentile(v, 90) / 1e9,
        "p99": percentile(v, 99) / 1e9,
        "max": v[-1] / 1e9,
    }


def jain(values: list[float]) -> float:
    """Jain's fairness index (1 = perfectly fair)."""
    if not values:
        return math.nan
    s = sum(values)
    sq = sum(x * x for x in values)
    return s * s / (len(values) * sq) if sq > 0 else 1.0


def flow_summary(st: FlowStats, end: int) -> dict[str, Any]:
    sent = st.sent_packets
    d: dict[str, Any] = {
        "name": st.name,
        "kind": st.kind,
        "src": st.src,
        "dst": st.dst,
        "start_s": st.start / 1e9,
        "goodput_bps": st.goodput(end),
        "delivered_bytes": st.delivered,
        "sent_packets": sent,
        "received_packets": st.recv_packets,
        "dropped_packets": st.drops,
        "loss_ratio": st.drops / sent if sent else 0.0,
        "retransmits": st.retransmits,
        "timeouts": st.timeouts,
        "rtt_s": _dist(st.rtts),
        "one_way_delay_s": _dist(st.delays),
        "response_time_s": _dist(st.responses),
        "completed_s": st.completed / 1e9 if st.completed is not None else None,
    }
    d.update(st.extra)
    return d


def link_summary(port: Port, end: int) -> dict[str, Any]:
    """Figures of one direction of a link: the transmit side of ``port``."""
    busy = port.busy_ns - max(0, port.busy_until - end)
    return {
        "interface": port.path,
        "link": port.link,
        "bandwidth_bps": port.bps,
        "tx_packets": port.tx_packets,
        "tx_bytes": port.tx_bytes,
        "utilisation": busy / end if end else 0.0,
        "queue_drops": port.drops,
        "random_losses": port.lost,
        "mean_queue_packets": port.wait_ns / end if end else 0.0,
        "mean_queueing_delay_s": port.wait_ns / port.tx_packets / 1e9 if port.tx_packets else 0.0,
    }


class TimeSeries:
    """Samples cumulative counters every ``interval`` ns; written as CSV at the end."""

    def __init__(
        self, interval: int, flows: list[FlowStats], ports: list[Port], delivered: list[Callable[[], int]]
    ) -> None:
        self.interval = interval
        self.flows = flows
        self.ports = ports
        self.delivered = delivered  # per flow: application bytes delivered so far
        self.flow_rows: list[tuple[int, int, int]] = []  # (time, flow index, delivered)
        self.link_rows: list[tuple[int, int, int, int, int]] = []  # (time, port, bytes, busy, drops)

    def sample(self, now: int) -> None:
        for i, delivered in enumerate(self.delivered):
            self.flow_rows.append((now, i, delivered()))
        for j, p in enumerate(self.ports):
            busy = p.busy_ns - max(0, p.busy_until - now)
            self.link_rows.append((now, j, p.tx_bytes, busy, p.drops + p.lost))

    def write(self, out: Path) -> None:
        iv = self.interval
        with open(out / "flows.csv", "w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(["time_s", "flow", "delivered_bytes", "goodput_bps"])
            last: dict[int, int] = {}
            for t, i, b in self.flow_rows:
                prev = last.get(i, 0)
                last[i] = b
                w.writerow([f"{t / 1e9:.9g}", self.flows[i].name, b, f"{(b - prev) * 8e9 / iv:.6g}"])
        with open(out / "links.csv", "w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(["time_s", "interface", "tx_bytes", "utilisation", "drops"])
            lastb: dict[int, int] = {}
            for t, j, txb, busy, drops in self.link_rows:
                prevb = lastb.get(j, 0)
                lastb[j] = busy
                w.writerow([f"{t / 1e9:.9g}", self.ports[j].path, txb, f"{(busy - prevb) / iv:.6g}", drops])


class Tap:
    """Captures the packets leaving and arriving at one interface; written as pcap."""

    __slots__ = ("path", "records", "snaplen")

    def __init__(self, path: str, snaplen: int = 128) -> None:
        self.path = path
        self.snaplen = snaplen
        self.records: list[tuple[int, int, bytes, int]] = []

    def record(self, time: int, pkt: Packet) -> None:
        data = packet_bytes(pkt)
        self.records.append((time, len(self.records), data[: self.snaplen], pkt.size))

    def write(self, filename: Path) -> int:
        self.records.sort()
        with PcapWriter(filename, snaplen=self.snaplen) as w:
            for t, _, data, orig in self.records:
                w.write(t, data, orig)
        return len(self.records)


def packet_bytes(pkt: Packet) -> bytes:
    """The real IPv4 bytes of a packet: a real one's own (with its current TTL), a simulated one's
    encoded (payload zeros where the simulation has none)."""
    if pkt.__class__ is WirePacket:
        assert isinstance(pkt, WirePacket)
        return pkt.ip_bytes()
    p = pkt.payload
    if pkt.proto == wire.PROTO_TCP:
        body = wire.encode_tcp(
            pkt.src, pkt.dst, p.sport, p.dport, p.seq, p.ack, p.flags, p.window,
            payload=p.data or b"", payload_length=p.length, mss=p.mss, wscale=p.wscale,
            sack_permitted=p.sack_permitted, sacks=p.sacks,
        )
    elif pkt.proto == wire.PROTO_UDP:
        body = wire.encode_udp(pkt.src, pkt.dst, p.sport, p.dport, p.data or b"", payload_length=p.length)
    elif pkt.proto == wire.PROTO_ICMP:
        if p.type in (wire.ICMP_ECHO_REQUEST, wire.ICMP_ECHO_REPLY):
            body = wire.encode_icmp_echo(p.type, p.ident, p.seq, bytes(p.length - 8))
        else:
            body = wire.encode_icmp_error(p.type, p.code, packet_bytes(p.original)[:28])
    else:
        body = b""
    return wire.encode_ipv4(pkt.src, pkt.dst, pkt.proto, body, ttl=pkt.ttl, ident=pkt.ident, total_length=pkt.size)


def write_json(path: Path, data: Any) -> None:
    with open(path, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, allow_nan=False, default=_json_default)
        fh.write("\n")


def _json_default(o: Any) -> Any:
    raise TypeError(f"not JSON serialisable: {o!r}")


def clean_nan(d: Any) -> Any:
    """Replace NaN with None so the JSON stays standard."""
    if isinstance(d, float) and math.isnan(d):
        return None
    if isinstance(d, dict):
        return {k: clean_nan(v) for k, v in d.items()}
    if isinstance(d, list):
        return [clean_nan(v) for v in d]
    return d
