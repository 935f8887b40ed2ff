"""Runtime hosts, routers and interfaces: the simulator's hot path.

A :class:`Port` is one interface's transmit side: a drop-tail queue feeding a transmitter of
fixed rate, then the propagation delay. It needs no event at the end of a transmission: the
departure time of every queued packet is known when it is queued (``busy_until``), so a packet
costs one event per hop, its arrival at the next node. The queue's occupancy is the number of
packets whose transmission has not finished by now (the ``dep`` deque of finish times).

Queue and link statistics follow from the same numbers: utilisation is the sum of
transmission times over the run; the mean queue length is the sum of waiting times over the
run (Little's law).

A :class:`SimNode` receives packets, delivers those addressed to it to its protocol handlers,
and forwards the rest (routers only) by longest-prefix match, decrementing the TTL and
answering with ICMP time-exceeded or destination-unreachable.

Real packets (emulated hosts' traffic, see :mod:`primogeni.sim.emulation`) are
:class:`WirePacket` s: ordinary packets for ports and forwarding, whose ``payload`` is the
real IPv4 bytes. A node hands those addressed to it, and the ICMP errors they cause, to its
:class:`WireStack`, which answers with real bytes; no simulated protocol sees them. A TCP
super-frame (TSO) is one WirePacket standing for ``segs`` segments: it travels through
:meth:`Port.send_super` and :meth:`SimNode.receive_super`, stays whole where that changes
nothing measurable, and is cut into its segments (ordinary WirePackets from then on) where
per-segment behaviour matters. Purely simulated packets never take those paths, so the fast
path stays as it was.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from heapq import heappush
from random import Random
from typing import TYPE_CHECKING, Any, Protocol

from primogeni.net.gso import segment_tcpv4, set_ttl
from primogeni.net.packet import (
    ICMP_DEST_UNREACHABLE,
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    ICMP_NET_UNREACHABLE,
    ICMP_PORT_UNREACHABLE,
    ICMP_TIME_EXCEEDED,
    ICMP_TTL_EXCEEDED,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
)
from primogeni.net.units import tx_ns
from primogeni.sim.engine import Engine

if TYPE_CHECKING:
    from primogeni.sim.measure import FlowStats, Tap
    from primogeni.sim.routing import Routing

DEFAULT_TTL = 64


class Packet:
    """An IPv4 packet in flight. ``size`` is the IP total length in bytes."""

    __slots__ = ("dst", "flow", "ident", "payload", "proto", "sent", "size", "src", "ttl")
    segs = 1  # packets it stands for (a WirePacket super-frame: its segments), counted where it drops

    def __init__(
        self, src: int, dst: int, proto: int, size: int, payload: Any, flow: FlowStats | None = None,
        ttl: int = DEFAULT_TTL,
    ) -> None:
        self.src = src
        self.dst = dst
        self.proto = proto
        self.size = size
        self.payload = payload
        self.flow = flow
        self.ttl = ttl
        self.ident = 0
        self.sent = 0


class WirePacket(Packet):
    """A real IPv4 packet in flight; ``payload`` is its bytes as the real host sent them.

    The bytes keep the TTL they were sent with: the current one is ``ttl``, written back (with
    the checksum fixed) only when the packet leaves (:meth:`ip_bytes`). ``partial`` says the
    TCP/UDP checksum is partial (the pseudo-header sum; NEEDS_CSUM). A TCP super-frame stands
    for ``segs`` > 1 segments of ``mss`` payload bytes; ``full`` is the IP size of a full
    segment and ``size`` the total of its segments' sizes (the bytes it occupies on links).
    """

    __slots__ = ("full", "gso_type", "mss", "partial", "segs")

    def __init__(
        self, src: int, dst: int, proto: int, size: int, payload: bytes, ttl: int, ident: int = 0,
        partial: bool = False, segs: int = 1, mss: int = 0, full: int = 0, gso_type: int = 0,
    ) -> None:
        super().__init__(src, dst, proto, size, payload, None, ttl)
        self.ident = ident
        self.partial = partial
        self.segs = segs
        self.mss = mss
        self.full = full
        self.gso_type = gso_type

    def ip_bytes(self, prefix: bytes = b"") -> bytes:
        """The real bytes with the current TTL and a valid header checksum, after ``prefix`` (an
        Ethernet header: the frame is then made in one copy)."""
        data: bytes = self.payload
        if data[8] == self.ttl:
            return prefix + data if prefix else data
        head = bytearray(data[:12])
        set_ttl(head, self.ttl)
        return b"".join((prefix, head, memoryview(data)[12:]))

    def segments(self) -> list[WirePacket]:
        """A super-frame's segments (real bytes, as GSO cuts them) as ordinary WirePackets."""
        out = []
        for data in segment_tcpv4(self.payload, self.mss, partial=self.partial):
            seg = WirePacket(self.src, self.dst, self.proto, len(data), data, self.ttl,
                             (data[4] << 8) | data[5], self.partial)
            seg.sent = self.sent
            out.append(seg)
        return out


class WireStack(Protocol):
    """What answers real packets at a simulated node (:mod:`primogeni.sim.emulation` has one)."""

    def local(self, node: SimNode, pkt: WirePacket) -> None:
        """``pkt`` is addressed to ``node``."""

    def error(self, node: SimNode, pkt: WirePacket, type_: int, code: int) -> None:
        """``node`` answers ``pkt`` with an ICMP error."""


class UdpDatagram:
    """A UDP datagram; ``seq`` and ``sent`` are the measuring application's own header."""

    __slots__ = ("data", "dport", "length", "sent", "seq", "sport")

    def __init__(self, sport: int, dport: int, length: int, seq: int, sent: int, data: bytes | None = None):
        self.sport = sport
        self.dport = dport
        self.length = length  # payload bytes
        self.seq = seq
        self.sent = sent
        self.data = data


class IcmpMessage:
    """An ICMP message. Echo: ``ident``/``seq``; errors: ``original`` is the offending packet."""

    __slots__ = ("code", "ident", "length", "original", "sent", "seq", "type")

    def __init__(
        self, type_: int, code: int, ident: int = 0, seq: int = 0, length: int = 8,
        sent: int = 0, original: Packet | None = None,
    ) -> None:
        self.type = type_
        self.code = code
        self.ident = ident
        self.seq = seq
        self.length = length  # ICMP bytes (header + data)
        self.sent = sent
        self.original = original


class Port:
    """Transmit side of an interface: queue, transmitter, propagation delay, random loss."""

    __slots__ = (
        "addr",
        "bps",
        "busy_ns",
        "busy_until",
        "byte_limit",
        "counter",
        "delay",
        "deliver",
        "deliver_super",
        "dep",
        "dep_bytes",
        "drops",
        "engine",
        "heap",
        "link",
        "loss",
        "lost",
        "name",
        "node",
        "path",
        "plain",
        "plen",
        "qbytes",
        "qlimit",
        "rng",
        "split_ns",
        "tap",
        "tx_bytes",
        "tx_packets",
        "wait_ns",
    )

    def __init__(
        self, node: SimNode, name: str, path: str, addr: int, plen: int, bps: int, delay: int,
        qlimit: int, byte_limit: bool, loss: float, rng: Random, engine: Engine, link: str,
    ) -> None:
        self.node = node
        self.name = name
        self.path = path
        self.link = link
        self.addr = addr
        self.plen = plen
        self.bps = bps
        self.delay = delay
        self.qlimit = qlimit  # waiting packets (or bytes), not counting the one in service
        self.byte_limit = byte_limit
        self.loss = loss
        self.rng = rng
        self.engine = engine
        self.heap = engine.heap
        self.counter = engine.counter
        self.deliver: Callable[[Packet], None] = node.receive
        self.deliver_super: Callable[[WirePacket], None] = node.receive_super
        self.split_ns = 0  # a super-frame whose transmission takes longer is cut (set by an Emulation)
        self.dep: deque[int] = deque()  # finish times of packets queued or in service
        self.dep_bytes: deque[int] = deque()  # their sizes (byte-limited queues only)
        self.qbytes = 0
        self.busy_until = 0
        self.tap: Tap | None = None
        # True while send() may take the fast path (set False for loss, byte limits, captures)
        self.plain = not byte_limit and not loss
        self.tx_packets = 0
        self.tx_bytes = 0
        self.drops = 0
        self.lost = 0
        self.busy_ns = 0
        self.wait_ns = 0

    def send(self, pkt: Packet, rx: Port) -> None:
        """Queue ``pkt`` for transmission to ``rx`` (the receiving interface)."""
        now = self.engine.now
        if not self.plain:
            self._send_full(pkt, rx, now)
            return
        # Fast path: packet-limited queue, no loss, no capture.
        dep = self.dep
        start = self.busy_until
        if start <= now:  # idle: every queued packet has left
            if dep:
                dep.clear()
            start = now
        else:
            while dep[0] <= now:  # dep is not empty: its last entry is busy_until > now
                dep.popleft()
            if len(dep) > self.qlimit:
                self._drop(pkt)
                return
            self.wait_ns += start - now
        size = pkt.size
        tx = -((-size * 8_000_000_000) // self.bps)  # net.units.tx_ns, inlined
        finish = start + tx
        self.busy_until = finish
        dep.append(finish)
        self.busy_ns += tx
        self.tx_packets += 1
        self.tx_bytes += size
        heappush(self.heap, (finish + self.delay, next(self.counter), rx.deliver, pkt))

    def _drop(self, pkt: Packet) -> None:
        self.drops += 1
        if pkt.flow is not None:
            pkt.flow.drops += 1

    def _send_full(self, pkt: Packet, rx: Port, now: int) -> None:
        """The general path: byte-limited queues, random loss, captures."""
        dep = self.dep
        if self.byte_limit:
            db = self.dep_bytes
            while dep and dep[0] <= now:
                dep.popleft()
                self.qbytes -= db.popleft()
            # bytes waiting = all queued minus the one in service
            if dep and self.qbytes - db[0] + pkt.size > self.qlimit:
                self._drop(pkt)
                return
            db.append(pkt.size)
            self.qbytes += pkt.size
        else:
            while dep and dep[0] <= now:
                dep.popleft()
            if len(dep) > self.qlimit:
                self._drop(pkt)
                return
        start = self.busy_until
        if start < now:
            start = now
        else:
            self.wait_ns += start - now
        tx = tx_ns(pkt.size, self.bps)
        finish = start + tx
        self.busy_until = finish
        dep.append(finish)
        self.busy_ns += tx
        self.tx_packets += 1
        self.tx_bytes += pkt.size
        if self.tap is not None:
            self.tap.record(start, pkt)
        if self.loss and self.rng.random() < self.loss:
            self.lost += 1
            if pkt.flow is not None:
                pkt.flow.drops += 1
            return
        arrival = finish + self.delay
        if rx.tap is not None:
            rx.tap.record(arrival, pkt)
        heappush(self.heap, (arrival, next(self.counter), rx.deliver, pkt))

    def send_super(self, pkt: WirePacket, rx: Port) -> None:
        """Queue a TCP super-frame (``pkt.segs`` segments) for transmission to ``rx``.

        It stays whole when that changes nothing measurable here: its transmission takes at
        most ``split_ns``, every segment would be admitted by the drop-tail queue, and there is
        no random loss draw nor capture. Whole, it counts as its segments (queue occupancy,
        transmission times, counters) and arrives at once, when its last segment would. Else it
        is cut and each segment is sent as an ordinary packet.
        """
        n = pkt.segs
        bps = self.bps
        full = pkt.full
        last = pkt.size - (n - 1) * full
        tx_full = -((-full * 8_000_000_000) // bps)
        tx_last = -((-last * 8_000_000_000) // bps)
        tx = (n - 1) * tx_full + tx_last
        if tx > self.split_ns or self.loss or self.tap is not None or rx.tap is not None or not self._admits(pkt):
            for seg in pkt.segments():
                self.send(seg, rx)
            return
        now = self.engine.now
        dep = self.dep
        t = self.busy_until
        if t < now:
            t = now
        wait = 0
        for k in range(n):
            wait += t - now
            t += tx_full if k < n - 1 else tx_last
            dep.append(t)
        if self.byte_limit:
            self.dep_bytes.extend([full] * (n - 1))
            self.dep_bytes.append(last)
            self.qbytes += pkt.size
        self.busy_until = t
        self.wait_ns += wait
        self.busy_ns += tx
        self.tx_packets += n
        self.tx_bytes += pkt.size
        heappush(self.heap, (t + self.delay, next(self.counter), rx.deliver_super, pkt))

    def _admits(self, pkt: WirePacket) -> bool:
        """Whether the drop-tail queue would admit every segment of ``pkt``, sent one by one now."""
        now = self.engine.now
        dep = self.dep
        n = pkt.segs
        if not self.byte_limit:
            while dep and dep[0] <= now:
                dep.popleft()
            return len(dep) + n - 1 <= self.qlimit
        db = self.dep_bytes
        while dep and dep[0] <= now:
            dep.popleft()
            self.qbytes -= db.popleft()
        queued = self.qbytes
        head = db[0] if dep else -1  # the size of the packet in service
        for k in range(n):
            size = pkt.full if k < n - 1 else pkt.size - (n - 1) * pkt.full
            if head >= 0 and queued - head + size > self.qlimit:
                return False
            queued += size
            if head < 0:
                head = size
        return True

    def queue_length(self) -> int:
        """Packets waiting or in service now."""
        now = self.engine.now
        return sum(1 for t in self.dep if t > now)


class SimNode:
    """A runtime host or router."""

    __slots__ = (
        "addrs",
        "delivered",
        "engine",
        "fib",
        "forwards",
        "icmp_handlers",
        "ident",
        "name",
        "next_port",
        "no_route",
        "not_for_me",
        "path",
        "ports",
        "rng",
        "routing",
        "tcp",
        "tcp_listen",
        "ttl_expired",
        "udp",
        "wire",
    )

    def __init__(self, path: str, name: str, forwards: bool, engine: Engine, rng: Random) -> None:
        self.path = path
        self.name = name
        self.forwards = forwards
        self.engine = engine
        self.rng = rng
        self.ports: list[Port] = []
        self.addrs: set[int] = set()
        self.fib: dict[int, tuple[Port, Port] | None] = {}  # cache: destination -> (out, rx)
        self.routing: Routing | None = None
        self.tcp: dict[tuple[int, int, int], Any] = {}  # (lport, raddr, rport) -> agent
        self.tcp_listen: dict[int, Callable[[Packet], None]] = {}
        self.udp: dict[int, Callable[[Packet], None]] = {}
        self.icmp_handlers: dict[int, Callable[[Packet], None]] = {}  # echo ident -> handler
        self.wire: WireStack | None = None  # answers real packets (set by an Emulation)
        self.ident = 0
        self.next_port = 49152
        self.ttl_expired = 0
        self.no_route = 0
        self.not_for_me = 0
        self.delivered = 0  # packets delivered to this node's own protocols

    @property
    def address(self) -> int:
        """The node's first address (for packets it originates without a better choice)."""
        return self.ports[0].addr

    def ephemeral_port(self) -> int:
        p = self.next_port
        self.next_port = 49152 if p >= 65535 else p + 1
        return p

    # -- forwarding ----------------------------------------------------------------------
    def receive(self, pkt: Packet) -> None:
        dst = pkt.dst
        if dst in self.addrs:
            self.local(pkt)
            return
        if not self.forwards:
            self.not_for_me += 1
            return
        ttl = pkt.ttl - 1
        if ttl <= 0:
            self.ttl_expired += pkt.segs
            if pkt.flow is not None:
                pkt.flow.drops += 1
            self.icmp_error(pkt, ICMP_TIME_EXCEEDED, ICMP_TTL_EXCEEDED)
            return
        pkt.ttl = ttl
        try:
            hop = self.fib[dst]
        except KeyError:
            hop = self.lookup(dst)
        if hop is None:
            self.no_route += pkt.segs
            if pkt.flow is not None:
                pkt.flow.drops += 1
            self.icmp_error(pkt, ICMP_DEST_UNREACHABLE, ICMP_NET_UNREACHABLE)
            return
        hop[0].send(pkt, hop[1])

    def receive_super(self, pkt: WirePacket) -> None:
        """:meth:`receive` for a TCP super-frame: forwarded whole (``send_super``); anything else
        (local, not for us, TTL expired, no route) as :meth:`receive` does it."""
        dst = pkt.dst
        hop = None
        if self.forwards and pkt.ttl > 1 and dst not in self.addrs:
            hop = self.fib.get(dst) or self.lookup(dst)
        if hop is None:
            self.receive(pkt)
            return
        pkt.ttl -= 1
        hop[0].send_super(pkt, hop[1])

    def output(self, pkt: Packet) -> bool:
        """Send a packet this node originates; False when there is no route."""
        try:
            hop = self.fib[pkt.dst]
        except KeyError:
            hop = self.lookup(pkt.dst)
        if hop is None:
            self.no_route += 1
            return False
        self.ident = (self.ident + 1) & 0xFFFF
        pkt.ident = self.ident
        pkt.sent = self.engine.now
        if pkt.dst in self.addrs:  # to itself: loopback, no link
            self.engine.schedule(self.engine.now, self.local, pkt)
            return True
        hop[0].send(pkt, hop[1])
        return True

    def lookup(self, dst: int) -> tuple[Port, Port] | None:
        assert self.routing is not None
        hop = self.routing.next_hop(self, dst)
        self.fib[dst] = hop
        return hop

    def source_for(self, dst: int) -> int:
        """The address of the interface this node would use to reach ``dst``."""
        hop = self.fib.get(dst) or self.lookup(dst)
        return hop[0].addr if hop is not None else self.address

    # -- local delivery ------------------------------------------------------------------
    def local(self, pkt: Packet) -> None:
        self.delivered += 1
        if pkt.__class__ is WirePacket:
            if self.wire is not None:
                self.wire.local(self, pkt)
            return
        proto = pkt.proto
        if proto == PROTO_TCP:
            seg = pkt.payload
            agent = self.tcp.get((seg.dport, pkt.src, seg.sport))
            if agent is not None:
                agent.segment(pkt)
                return
            listener = self.tcp_listen.get(seg.dport)
            if listener is not None:
                listener(pkt)
            return
        if proto == PROTO_UDP:
            handler = self.udp.get(pkt.payload.dport)
            if handler is not None:
                handler(pkt)
            else:
                self.icmp_error(pkt, ICMP_DEST_UNREACHABLE, ICMP_PORT_UNREACHABLE)
            return
        if proto == PROTO_ICMP:
            msg = pkt.payload
            if msg.type == ICMP_ECHO_REQUEST:
                reply = IcmpMessage(ICMP_ECHO_REPLY, 0, msg.ident, msg.seq, msg.length, msg.sent)
                self.output(Packet(pkt.dst, pkt.src, PROTO_ICMP, pkt.size, reply, pkt.flow))
                return
            if msg.type == ICMP_ECHO_REPLY:
                h = self.icmp_handlers.get(msg.ident)
            else:
                orig = msg.original
                h = None
                if orig is not None and orig.proto == PROTO_ICMP:
                    h = self.icmp_handlers.get(orig.payload.ident)
            if h is not None:
                h(pkt)

    def icmp_error(self, pkt: Packet, type_: int, code: int) -> None:
        """Answer ``pkt`` with an ICMP error (never about another ICMP error)."""
        if pkt.__class__ is WirePacket:
            if self.wire is not None:
                self.wire.error(self, pkt, type_, code)
            return
        if pkt.proto == PROTO_ICMP and pkt.payload.type not in (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY):
            return
        # RFC 792: the original IP header and the first 8 bytes of its data.
        msg = IcmpMessage(type_, code, length=8 + 28, original=pkt)
        src = self.source_for(pkt.src)
        self.output(Packet(src, pkt.src, PROTO_ICMP, 20 + msg.length, msg, None))

    def __repr__(self) -> str:
        return f"<SimNode {self.path}>"
