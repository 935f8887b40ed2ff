"""Emulated hosts inside the simulator: real Ethernet frames in, real frames out. Pure (no I/O).

An emulated host (``net.host("h1", emulated=True)``) is a real machine outside the process. Its
simulated node runs no protocol; an :class:`Emulation` attached to a built
:class:`~primogeni.sim.simulation.Simulation` stands in for the wire between the real host and
the simulated network, and for the simulated gateway the real host sees on it:

* :meth:`Emulation.ingress` takes a frame the real host sent (the I/O layer calls it at
  ``engine.now``). ARP requests for the gateway, or any simulated address on the host's link,
  are answered at once with the gateway's MAC (a stable, locally administered address derived
  from the host's name). An IPv4 frame becomes a :class:`~primogeni.sim.node.WirePacket` whose
  payload is the real IP bytes, sent on the host's simulated interface as if the node had sent
  it: it waits in that queue and crosses the link (delay, bandwidth, loss) like any packet, and
  shares every later queue with simulated traffic. Other frames are counted and dropped.
* A packet that reaches the host's node leaves through ``emit(host_path, frame, gso)``: its
  real bytes with the TTL the simulated routers left (header checksum fixed incrementally,
  RFC 1624) in an Ethernet header from the gateway's MAC to the host's (learned from its
  frames, or resolved by an ARP request of our own).
* Simulated nodes answer real packets with real bytes (:class:`WireResponder`): echo replies,
  ICMP time-exceeded and unreachable quoting the real header and 8 bytes (RFC 792), port
  unreachable for UDP, resets for TCP. So ``ping`` and ``traceroute`` see the routers.
* TCP super-frames (TSO, with ``virtio_net_hdr`` metadata) travel as one packet standing for
  its segments (:meth:`~primogeni.sim.node.Port.send_super`), and are cut into real segments
  (:mod:`primogeni.net.gso`) at the first port where per-segment behaviour shows: transmission
  longer than ``split_threshold``, a queue that would overflow, a loss draw, a capture. One that
  arrives whole leaves whole, with its metadata, so the receiving kernel takes it as one GRO'd
  packet (``offload=False``: every frame leaves segmented with complete checksums instead).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from functools import partial
from ipaddress import IPv4Address, IPv4Interface
from typing import TYPE_CHECKING, Any

from primogeni.net.gso import (
    TCP_CHECK_OFFSET,
    UDP_CHECK_OFFSET,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VirtioNetHdr,
    complete_checksum,
    segment_count,
    segment_tcpv4,
    tcp_layout,
)
from primogeni.net.packet import (
    ICMP_DEST_UNREACHABLE,
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    ICMP_PORT_UNREACHABLE,
    ICMP_PROTOCOL_UNREACHABLE,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    PacketError,
    encode_icmp_echo,
    encode_icmp_error,
    encode_ipv4,
    encode_tcp,
    internet_checksum,
)
from primogeni.net.units import s, us
from primogeni.sim.measure import packet_bytes
from primogeni.sim.node import DEFAULT_TTL, Packet, Port, SimNode, WirePacket

if TYPE_CHECKING:
    from primogeni.sim.simulation import Simulation

ETH_HEADER_LEN = 14
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
BROADCAST_MAC = b"\xff" * 6
ARP_REQUEST = 1
ARP_REPLY = 2
_ARP = struct.Struct("!HHBBH6s4s6s4s")
_CHECK_OFFSET = {PROTO_TCP: TCP_CHECK_OFFSET, PROTO_UDP: UDP_CHECK_OFFSET}

DEFAULT_SPLIT_THRESHOLD = us(60)  # a 64 KiB super-frame stays whole at 10 Gb/s, is cut at <= 8 Gb/s
ARP_RETRY = s(1)
ARP_TRIES = 3
PENDING_LIMIT = 64  # frames held per host while its MAC is being resolved

Emit = Callable[[str, bytes, VirtioNetHdr | None], None]


def gateway_mac(host_path: str) -> bytes:
    """The MAC of the simulated gateway side of an emulated host's link: stable across runs,
    unicast and locally administered."""
    mac = bytearray(hashlib.sha256(b"primogeni-gateway/" + host_path.encode()).digest()[:6])
    mac[0] = (mac[0] & 0xFC) | 0x02
    return bytes(mac)


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


class EmulatedHost:
    """What the emulation knows of one emulated host, and its counters."""

    def __init__(self, path: str, address: IPv4Interface, gateway: IPv4Address, node: SimNode, port: Port,
                 gateway_port: Port, answers: set[int]) -> None:
        self.path = path
        self.address = address  # the real host's IP and prefix (from the model)
        self.addr = int(address.ip)
        self.gateway = gateway  # the gateway's IP: the peer interface on its link
        self.gateway_mac = gateway_mac(path)
        self.mac: bytes | None = None  # the real host's MAC, once learned
        self.node = node
        self.port = port  # the host's simulated interface
        self.gateway_port = gateway_port
        self.answers = answers  # addresses ARP is answered for: every other one on the link
        self.offload = True  # frames may leave as super-frames or with partial checksums
        self.eth_ip = b""  # Ethernet header of IPv4 frames to the host, once its MAC is known
        self.pending: list[tuple[bytes, VirtioNetHdr | None]] = []
        self.arp_tries = 0
        self.frames_in = 0
        self.frames_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.arp_answered = 0
        self.dropped: dict[str, int] = {}

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def summary(self) -> dict[str, Any]:
        return {
            "address": str(self.address),
            "gateway": str(self.gateway),
            "gateway_mac": format_mac(self.gateway_mac),
            "mac": format_mac(self.mac) if self.mac is not None else None,
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "arp_answered": self.arp_answered,
            "dropped": dict(sorted(self.dropped.items())),
        }


class WireResponder:
    """How a simulated node answers real packets: as a host without services would (echo
    replies; UDP port unreachable; TCP reset; protocol unreachable), and ICMP errors that quote
    the real header as it arrived and the first 8 bytes of data (RFC 792). It never answers an
    ICMP error, a fragment, or a broadcast or multicast destination (RFC 1812, 4.3.2.7)."""

    def local(self, node: SimNode, pkt: WirePacket) -> None:
        data: bytes = pkt.payload
        if (data[6] & 0x3F) | data[7]:  # a fragment: simulated nodes do not reassemble
            return
        ihl = (data[0] & 0x0F) * 4
        total = (data[2] << 8) | data[3]
        proto = pkt.proto
        if proto == PROTO_ICMP:
            if total >= ihl + 8 and data[ihl] == ICMP_ECHO_REQUEST:
                ident = (data[ihl + 4] << 8) | data[ihl + 5]
                seq = (data[ihl + 6] << 8) | data[ihl + 7]
                body = encode_icmp_echo(ICMP_ECHO_REPLY, ident, seq, data[ihl + 8 : total])
                self.send(node, pkt.dst, pkt.src, PROTO_ICMP, body)
        elif proto == PROTO_UDP:
            self.error(node, pkt, ICMP_DEST_UNREACHABLE, ICMP_PORT_UNREACHABLE)
        elif proto == PROTO_TCP:
            tcp = data[ihl:total]
            if len(tcp) < 20 or tcp[13] & TCP_RST:
                return
            flags = tcp[13]
            if flags & TCP_ACK:  # RFC 793: <SEQ=SEG.ACK><CTL=RST>
                seq, ack, rflags = int.from_bytes(tcp[8:12], "big"), 0, TCP_RST
            else:  # <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>
                seglen = len(tcp) - (tcp[12] >> 4) * 4 + bool(flags & TCP_SYN) + bool(flags & TCP_FIN)
                seq, ack, rflags = 0, (int.from_bytes(tcp[4:8], "big") + seglen) & 0xFFFFFFFF, TCP_RST | TCP_ACK
            sport, dport = (tcp[0] << 8) | tcp[1], (tcp[2] << 8) | tcp[3]
            rst = encode_tcp(pkt.dst, pkt.src, dport, sport, seq, ack, rflags, 0)
            self.send(node, pkt.dst, pkt.src, PROTO_TCP, rst)
        else:
            self.error(node, pkt, ICMP_DEST_UNREACHABLE, ICMP_PROTOCOL_UNREACHABLE)

    def error(self, node: SimNode, pkt: WirePacket, type_: int, code: int) -> None:
        data: bytes = pkt.payload
        ihl = (data[0] & 0x0F) * 4
        if (data[6] & 0x1F) | data[7] or pkt.dst >> 28 == 0xE or pkt.dst == 0xFFFFFFFF:
            return
        if pkt.proto == PROTO_ICMP and len(data) > ihl and data[ihl] not in (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY):
            return
        body = encode_icmp_error(type_, code, quote(pkt))
        self.send(node, node.source_for(pkt.src), pkt.src, PROTO_ICMP, body)

    @staticmethod
    def send(node: SimNode, src: int, dst: int, proto: int, body: bytes) -> bool:
        """Originate a real packet at ``node``; False when there is no route."""
        ident = (node.ident + 1) & 0xFFFF  # the one output() gives it
        data = encode_ipv4(src, dst, proto, body, ttl=DEFAULT_TTL, ident=ident)
        return node.output(WirePacket(src, dst, proto, len(data), data, DEFAULT_TTL, ident))


def quote(pkt: WirePacket) -> bytes:
    """What an ICMP error about ``pkt`` quotes: its IP header as it arrived (current TTL; a
    super-frame's first segment) and the first 8 bytes of its data."""
    data: bytes = pkt.payload
    ihl = (data[0] & 0x0F) * 4
    head = bytearray(data[: ihl + 8])
    if pkt.segs > 1:
        head[2], head[3] = pkt.full >> 8, pkt.full & 0xFF
    head[8] = pkt.ttl
    head[10] = head[11] = 0
    check = internet_checksum(head[:ihl])
    head[10], head[11] = check >> 8, check & 0xFF
    return bytes(head)


class Emulation:
    """The emulated hosts of one simulation, and the frames they exchange with it.

    ``emit(host_path, frame, gso)`` is called (during the engine's events) with each frame for
    a real host; ``gso`` is None or the :class:`~primogeni.net.gso.VirtioNetHdr` to write with
    it (a whole super-frame, or a partial checksum). ``split_threshold`` (ns) is the longest
    transmission a super-frame may take at a port and stay whole; ``offload=False`` makes
    every emitted frame a plain one (segmented, complete checksums, ``gso`` None), for an I/O
    layer without virtio_net_hdr (``hosts[path].offload`` sets it per host).
    """

    def __init__(self, sim: Simulation, emit: Emit, *, split_threshold: int = DEFAULT_SPLIT_THRESHOLD,
                 offload: bool = True) -> None:
        if split_threshold < 0:
            raise ValueError("split_threshold must be >= 0 ns")
        self.sim = sim
        self.engine = sim.engine
        self.emit = emit
        self.split_threshold = split_threshold
        self.offload = offload
        self.hosts: dict[str, EmulatedHost] = {}
        emulated = sim.emulated
        responder = WireResponder()
        emulated_paths = {h.path for h in emulated}
        for path, node in sim.nodes.items():
            if path not in emulated_paths:
                node.wire = responder
        for port in sim.ports.values():
            port.split_ns = split_threshold
        for h in emulated:
            iface = h.interfaces[0]
            gw = h.gateway
            assert iface.address is not None and gw is not None and gw.address is not None and iface.link is not None
            answers = {int(i.address.ip) for i in iface.link.interfaces if i is not iface and i.address is not None}
            eh = EmulatedHost(h.path, iface.address, gw.address.ip, sim.nodes[h.path], sim.ports[iface.path],
                              sim.ports[gw.path], answers)
            eh.offload = offload
            eh.port.deliver = partial(self._egress, eh)
            eh.port.deliver_super = partial(self._egress, eh)
            self.hosts[h.path] = eh

    # -- frames from the real hosts ------------------------------------------------------
    def ingress(self, host_path: str, frame: bytes, gso: VirtioNetHdr | None = None) -> None:
        """Take a frame the real host ``host_path`` sent, at ``engine.now``.

        ``gso`` is its virtio_net_hdr metadata when the I/O layer has it (any object with the
        fields of :class:`~primogeni.net.gso.VirtioNetHdr`).
        """
        h = self.hosts.get(host_path)
        if h is None:
            raise KeyError(f"no emulated host {host_path!r} (have: {', '.join(self.hosts) or 'none'})")
        h.frames_in += 1
        h.bytes_in += len(frame)
        if len(frame) < ETH_HEADER_LEN:
            h.drop("short_frame")
            return
        ethertype = (frame[12] << 8) | frame[13]
        if ethertype == ETH_P_IP:
            if frame[0:6] != h.gateway_mac:
                h.drop("not_to_gateway")  # broadcast, multicast, or another station's
                return
            # The host's MAC is learnt from its own packets (or its ARP) only: bridges, tunnels and
            # the node's veths on the way send frames of their own (IPv6, IGMP) with theirs.
            src_mac = frame[6:12]
            if src_mac != h.mac and not src_mac[0] & 1 and int.from_bytes(frame[26:30], "big") == h.addr:
                self._learn(h, bytes(src_mac))
            self._ipv4_in(h, frame, gso)
        elif ethertype == ETH_P_ARP:
            self._arp_in(h, frame)
        else:
            h.drop("not_ipv4")

    def _ipv4_in(self, h: EmulatedHost, frame: bytes, gso: VirtioNetHdr | None) -> None:
        n = len(frame) - ETH_HEADER_LEN
        vihl = frame[14] if n > 0 else 0
        ihl = (vihl & 0x0F) * 4
        if vihl >> 4 != 4 or ihl < 20 or n < ihl:
            h.drop("bad_ip")
            return
        total = (frame[16] << 8) | frame[17]
        if total < ihl or total > n or internet_checksum(memoryview(frame)[14 : 14 + ihl]):
            h.drop("bad_ip")
            return
        ip = bytes(frame[14 : 14 + total])  # without link padding
        src = int.from_bytes(ip[12:16], "big")
        dst = int.from_bytes(ip[16:20], "big")
        if src != h.addr:
            h.drop("foreign_source")
            return
        if dst == h.addr or not ip[8]:
            h.drop("bad_ip")
            return
        proto = ip[9]
        partial_csum = False
        segs, mss, full, size, gso_type = 1, 0, 0, total, 0
        if gso is not None:
            try:
                if gso.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
                    start = gso.csum_start - ETH_HEADER_LEN
                    if start == ihl and gso.csum_offset == _CHECK_OFFSET.get(proto):
                        partial_csum = True  # carried partial, completed by the receiver
                    else:
                        ip = complete_checksum(ip, start, gso.csum_offset)
                kind = gso.gso_type & ~VIRTIO_NET_HDR_GSO_ECN
                if kind == VIRTIO_NET_HDR_GSO_TCPV4:
                    lay = tcp_layout(ip)
                    if gso.gso_size <= 0:
                        raise PacketError("gso", f"gso_size {gso.gso_size}")
                    segs = segment_count(lay.payload_len, gso.gso_size)
                    if segs > 1:
                        mss, full, gso_type = gso.gso_size, lay.headers_len + gso.gso_size, gso.gso_type
                        size = total + (segs - 1) * lay.headers_len
                elif kind != VIRTIO_NET_HDR_GSO_NONE:
                    h.drop("gso_unsupported")
                    return
            except PacketError:
                h.drop("bad_gso")
                return
        pkt = WirePacket(src, dst, proto, size, ip, ip[8], (ip[4] << 8) | ip[5], partial_csum, segs, mss, full,
                         gso_type)
        pkt.sent = self.engine.now
        node = h.node
        try:
            hop = node.fib[dst]
        except KeyError:
            hop = node.lookup(dst)
        if hop is None:  # the real host sends it to its gateway, which will find no route
            hop = (h.port, h.gateway_port)
        if segs > 1:
            hop[0].send_super(pkt, hop[1])
        else:
            hop[0].send(pkt, hop[1])

    # -- ARP -----------------------------------------------------------------------------
    def _arp_in(self, h: EmulatedHost, frame: bytes) -> None:
        if len(frame) < ETH_HEADER_LEN + _ARP.size:
            h.drop("bad_arp")
            return
        htype, ptype, hlen, plen, op, sha, spa, _, tpa = _ARP.unpack_from(frame, ETH_HEADER_LEN)
        if htype != 1 or ptype != ETH_P_IP or hlen != 6 or plen != 4:
            h.drop("bad_arp")
            return
        if int.from_bytes(spa, "big") == h.addr and sha != h.mac and not sha[0] & 1:
            self._learn(h, sha)
        if op == ARP_REQUEST and int.from_bytes(tpa, "big") in h.answers:
            reply = _ARP.pack(1, ETH_P_IP, 6, 4, ARP_REPLY, h.gateway_mac, tpa, sha, spa)
            h.arp_answered += 1
            self._send_frame(h, b"".join((sha, h.gateway_mac, b"\x08\x06", reply)), None)
        elif op != ARP_REPLY:
            h.drop("arp_not_for_gateway")

    def _learn(self, h: EmulatedHost, mac: bytes) -> None:
        h.mac = mac
        h.eth_ip = mac + h.gateway_mac + b"\x08\x00"
        h.arp_tries = 0
        pending, h.pending = h.pending, []
        for ip, gso in pending:
            self._emit_ip(h, ip, gso)

    def _arp_request(self, h: EmulatedHost) -> None:
        """Ask for the host's MAC; retried every ARP_RETRY, ARP_TRIES times, then the frames
        waiting for it are dropped."""
        if h.mac is not None:
            return
        if h.arp_tries >= ARP_TRIES:
            for _ in h.pending:
                h.drop("unresolved")
            h.pending = []
            h.arp_tries = 0
            return
        h.arp_tries += 1
        req = _ARP.pack(1, ETH_P_IP, 6, 4, ARP_REQUEST, h.gateway_mac, h.gateway.packed, bytes(6),
                        h.address.ip.packed)
        self._send_frame(h, b"".join((BROADCAST_MAC, h.gateway_mac, b"\x08\x06", req)), None)
        self.engine.schedule(self.engine.now + ARP_RETRY, self._arp_request, h)

    # -- frames to the real hosts --------------------------------------------------------
    def _egress(self, h: EmulatedHost, pkt: Packet) -> None:
        """A packet reached the emulated host's node: it leaves as a real frame."""
        if pkt.dst != h.addr:
            h.drop("not_for_host")
            return
        if pkt.__class__ is not WirePacket:
            self._emit_ip(h, packet_bytes(pkt), None)  # a simulated packet: encode it
            return
        assert isinstance(pkt, WirePacket)
        ihl = (pkt.payload[0] & 0x0F) * 4
        gso: VirtioNetHdr | None = None
        if pkt.segs > 1:
            if not h.offload:
                for seg in segment_tcpv4(pkt.ip_bytes(), pkt.mss, partial=False):
                    self._emit_ip(h, seg, None)
                return
            gso = VirtioNetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM if pkt.partial else 0, pkt.gso_type,
                               ETH_HEADER_LEN + pkt.full - pkt.mss, pkt.mss, ETH_HEADER_LEN + ihl, TCP_CHECK_OFFSET)
        elif pkt.partial:
            off = TCP_CHECK_OFFSET if pkt.proto == PROTO_TCP else UDP_CHECK_OFFSET
            if not h.offload:
                self._emit_ip(h, complete_checksum(pkt.ip_bytes(), ihl, off), None)
                return
            gso = VirtioNetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, 0, 0, ETH_HEADER_LEN + ihl, off)
        if h.mac is None:
            self._emit_ip(h, pkt.ip_bytes(), gso)
        else:  # the frame in one copy: Ethernet header and the real bytes
            self._send_frame(h, pkt.ip_bytes(h.eth_ip), gso)

    def _emit_ip(self, h: EmulatedHost, ip: bytes, gso: VirtioNetHdr | None) -> None:
        if h.mac is None:
            if len(h.pending) >= PENDING_LIMIT:
                h.drop("unresolved")
            else:
                h.pending.append((ip, gso))
            if h.arp_tries == 0:
                self._arp_request(h)
            return
        self._send_frame(h, b"".join((h.eth_ip, ip)), gso)

    def _send_frame(self, h: EmulatedHost, frame: bytes, gso: VirtioNetHdr | None) -> None:
        h.frames_out += 1
        h.bytes_out += len(frame)
        self.emit(h.path, frame, gso)

    # -- results -------------------------------------------------------------------------
    def summary(self) -> dict[str, dict[str, Any]]:
        """Per emulated host: addresses, MACs, frames and bytes in and out, ARP answers, drops."""
        return {path: h.summary() for path, h in self.hosts.items()}


__all__ = ["ARP_RETRY", "DEFAULT_SPLIT_THRESHOLD", "EmulatedHost", "Emulation", "WireResponder",
           "gateway_mac", "quote"]
