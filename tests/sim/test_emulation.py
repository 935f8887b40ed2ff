"""Emulated hosts (primogeni.sim.emulation): real frames in, simulated packets that keep their
real bytes, real frames out. The emit callable appends to a list; the engine is driven with
Simulation.start/advance, so every time below is exact simulated time."""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address
from itertools import pairwise

import pytest

from primogeni.errors import ModelError
from primogeni.net.decode import decode_icmp, decode_ip_packet, decode_ipv4
from primogeni.net.gso import (
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VirtioNetHdr,
    complete_checksum,
    pseudo_header_sum,
)
from primogeni.net.packet import (
    ICMP_ECHO_REQUEST,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    TCP_ACK,
    TCP_PSH,
    TCP_RST,
    TCP_SYN,
    encode_icmp_echo,
    encode_ipv4,
    encode_tcp,
    encode_udp,
    internet_checksum,
)
from primogeni.net.units import Packets, Rate, ms, s, tx_ns, us
from primogeni.sim import Network, Simulation, UdpCbr
from primogeni.sim.dml.parser import parse, resolve
from primogeni.sim.dml.schema import network_from_dml
from primogeni.sim.emulation import ARP_RETRY, Emulation, gateway_mac

AMAC = bytes.fromhex("02aa00000001")
BMAC = bytes.fromhex("02bb00000002")
A, B = "top:a", "top:b"


@dataclass
class Frame:
    time: int
    host: str
    data: bytes
    gso: VirtioNetHdr | None

    @property
    def ip(self) -> bytes:
        return self.data[14:]


class Rig:
    """A simulation with an Emulation whose emitted frames are kept, and a way to send frames."""

    def __init__(self, net: Network, duration: int = s(10), **kw) -> None:
        self.net = net
        self.sim = Simulation(net, seed=3)
        self.frames: list[Frame] = []
        self.emu = Emulation(self.sim, self._emit, **kw)
        self.sim.start(duration)

    def _emit(self, host: str, frame: bytes, gso: VirtioNetHdr | None) -> None:
        self.frames.append(Frame(self.sim.engine.now, host, frame, gso))

    def addr(self, name: str) -> int:
        return int(self.net.lookup(name).addresses[0])

    def at(self, t: int) -> None:
        self.sim.advance(t)

    def send(self, host: str, ip: bytes, mac: bytes, gso: VirtioNetHdr | None = None) -> None:
        self.emu.ingress(host, self.emu.hosts[host].gateway_mac + mac + b"\x08\x00" + ip, gso)

    def arp(self, host: str, mac: bytes, target: int, op: int = 1, sender: int | None = None) -> None:
        h = self.emu.hosts[host]
        spa = h.addr if sender is None else sender
        body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, mac, spa.to_bytes(4, "big"),
                           bytes(6) if op == 1 else h.gateway_mac, target.to_bytes(4, "big"))
        dst = b"\xff" * 6 if op == 1 else h.gateway_mac
        self.emu.ingress(host, dst + mac + b"\x08\x06" + body)

    def hello(self) -> None:
        """Both real hosts ask for their gateway (the emulation learns their MACs)."""
        for host, mac in ((A, AMAC), (B, BMAC)):
            if host in self.emu.hosts:
                self.arp(host, mac, int(self.emu.hosts[host].gateway))
        self.frames.clear()

    def to(self, host: str) -> list[Frame]:
        return [f for f in self.frames if f.host == host]


def chain_net(routers: int = 5, bandwidth: Rate = Rate.mbps(100), delay: int = ms(1), **link) -> Network:
    """a (emulated) – r0 – … – r(k-1) – b (emulated)."""
    net = Network()
    prev = net.host("a", emulated=True)
    b = net.host("b", emulated=True)
    for i in range(routers):
        r = net.router(f"r{i}")
        net.link(prev, r, bandwidth=bandwidth, delay=delay, **link)
        prev = r
    net.link(prev, b, bandwidth=bandwidth, delay=delay, **link)
    return net


def echo(src: int, dst: int, ident: int = 77, seq: int = 1, ttl: int = 64, data: bytes = b"0123456789" * 5) -> bytes:
    return encode_ipv4(src, dst, PROTO_ICMP, encode_icmp_echo(ICMP_ECHO_REQUEST, ident, seq, data), ttl=ttl, ident=seq)


def _same_but_ttl(sent: bytes, got: bytes, hops: int) -> None:
    assert len(got) == len(sent) and got[8] == sent[8] - hops
    assert got[:8] == sent[:8] and got[9] == sent[9] and got[12:] == sent[12:]
    assert decode_ipv4(got).checksum_ok


# --- ARP -------------------------------------------------------------------------------------


def test_arp_for_the_gateway_is_answered_at_once_with_the_gateway_mac():
    rig = Rig(chain_net(1))
    h = rig.emu.hosts[A]
    assert h.gateway_mac == gateway_mac(A) and h.gateway_mac[0] & 0x03 == 0x02  # unicast, local
    rig.at(ms(5))
    rig.arp(A, AMAC, int(h.gateway))
    (f,) = rig.frames
    assert f.time == ms(5) and f.gso is None
    assert f.data[:6] == AMAC and f.data[6:12] == h.gateway_mac and f.data[12:14] == b"\x08\x06"
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = struct.unpack("!HHBBH6s4s6s4s", f.data[14:42])
    assert (htype, ptype, hlen, plen, op) == (1, 0x0800, 6, 4, 2)
    assert sha == h.gateway_mac and IPv4Address(spa) == h.gateway and tha == AMAC and tpa == h.address.ip.packed
    assert h.mac == AMAC
    rig.arp(A, AMAC, h.addr)  # duplicate address detection for its own address: never answered
    rig.arp(A, AMAC, int(h.gateway) + 100)  # no such address on the link
    assert len(rig.frames) == 1
    assert rig.emu.summary()[A]["arp_answered"] == 1 and rig.emu.summary()[A]["mac"] == "02:aa:00:00:00:01"


def test_the_host_mac_is_resolved_by_arp_when_unknown():
    rig = Rig(chain_net(1))
    rig.arp(A, AMAC, int(rig.emu.hosts[A].gateway))
    rig.frames.clear()
    ping = echo(rig.addr("a"), rig.addr("b"))
    rig.send(A, ping, AMAC)
    rig.at(ms(10))
    (req,) = rig.to(B)  # b's MAC is unknown: an ARP request, not the packet
    hb = rig.emu.hosts[B]
    assert req.data[:6] == b"\xff" * 6 and req.data[12:14] == b"\x08\x06"
    assert req.data[14 + 24 : 14 + 28] == hb.address.ip.packed and req.data[14 + 14 : 14 + 18] == hb.gateway.packed
    rig.arp(B, BMAC, int(hb.gateway), op=2)  # the reply releases the waiting frame
    (_, got) = rig.to(B)
    assert got.data[:6] == BMAC and got.time == ms(10)
    _same_but_ttl(ping, got.ip, 1)
    # nobody answers: three tries one ARP_RETRY apart, then the frame is dropped
    rig2 = Rig(chain_net(1))
    rig2.send(A, ping, AMAC)
    rig2.at(s(5))
    reqs = rig2.to(B)
    assert [f.time - reqs[0].time for f in reqs] == [0, ARP_RETRY, 2 * ARP_RETRY]
    assert rig2.emu.summary()[B]["dropped"] == {"unresolved": 1}


# --- ping, traceroute, unreachable -----------------------------------------------------------


def test_echo_between_emulated_hosts_takes_exactly_the_model_delay_and_comes_back():
    rig = Rig(chain_net(5, bandwidth=Rate.mbps(100), delay=ms(2)))
    rig.hello()
    a, b = rig.addr("a"), rig.addr("b")
    req = echo(a, b)
    rig.at(ms(100))
    rig.send(A, req, AMAC)
    rig.at(ms(200))
    (got,) = rig.to(B)
    one_way = rig.sim.path_delay(A, B, len(req))
    assert one_way == 6 * (tx_ns(len(req), 100_000_000) + ms(2))
    assert got.time == ms(100) + one_way
    assert got.data[:6] == BMAC and got.data[6:12] == rig.emu.hosts[B].gateway_mac and got.gso is None
    _same_but_ttl(req, got.ip, 5)
    ip, icmp = decode_ip_packet(got.ip)
    assert ip.ttl == 59 and icmp.checksum_ok
    # b's kernel answers; the reply reaches a after the way back
    reply = encode_ipv4(b, a, PROTO_ICMP, encode_icmp_echo(0, icmp.ident, icmp.seq, icmp.payload), ttl=64)
    rig.send(B, reply, BMAC)
    rig.at(ms(300))
    (back,) = rig.to(A)
    assert back.time == ms(200) + rig.sim.path_delay(B, A, len(reply))
    _same_but_ttl(reply, back.ip, 5)
    sa, sb = rig.emu.summary()[A], rig.emu.summary()[B]
    # an ARP request and an IP packet each way, per host
    assert (sa["frames_in"], sa["frames_out"], sb["frames_in"], sb["frames_out"]) == (2, 2, 2, 2)
    assert sa["bytes_in"] == len(req) + 14 + 42 and sb["bytes_out"] == len(req) + 14 + 42


def test_ping_to_a_router_gets_a_valid_echo_reply():
    rig = Rig(chain_net(5, delay=ms(1)))
    rig.hello()
    r2 = rig.addr("r2")
    data = bytes(range(56))
    req = echo(rig.addr("a"), r2, ident=0x1234, seq=9, data=data)
    rig.send(A, req, AMAC)
    rig.at(s(1))
    (rep,) = rig.to(A)
    ip, icmp = decode_ip_packet(rep.ip)
    assert ip.checksum_ok and ip.src == r2 and ip.dst == rig.addr("a") and ip.ttl == 64 - 2
    assert (icmp.type, icmp.code, icmp.ident, icmp.seq, icmp.payload, icmp.checksum_ok) == (0, 0, 0x1234, 9, data, True)
    rtt = rig.sim.path_delay(A, "top:r2", len(req)) + rig.sim.path_delay("top:r2", A, len(req))
    assert rep.time == rtt


def _quoted(frame: Frame):
    ip, icmp = decode_ip_packet(frame.ip)
    assert ip.checksum_ok and icmp is not None and icmp.checksum_ok
    inner = decode_ipv4(icmp.payload)
    assert inner.checksum_ok
    return ip, icmp, inner


def test_udp_traceroute_sees_every_router_then_arrives():
    rig = Rig(chain_net(5))
    rig.hello()
    a, b = rig.addr("a"), rig.addr("b")
    for ttl in range(1, 7):
        probe = encode_ipv4(a, b, PROTO_UDP, encode_udp(a, b, 40000 + ttl, 33433 + ttl, bytes(32)), ttl=ttl, ident=ttl)
        rig.send(A, probe, AMAC)
        rig.at(rig.sim.engine.now + ms(100))
    errors = rig.to(A)
    assert len(errors) == 5
    for ttl, f in enumerate(errors, start=1):
        ip, icmp, inner = _quoted(f)
        router = rig.net.lookup(f"r{ttl - 1}")
        assert (icmp.type, icmp.code) == (11, 0) and IPv4Address(ip.src) in router.addresses
        assert ip.src == rig.sim.nodes[f"top:r{ttl - 1}"].source_for(a)
        assert inner.ttl == 1 and inner.src == a and inner.dst == b and inner.ident == ttl
        assert icmp.payload[20:24] == struct.pack("!HH", 40000 + ttl, 33433 + ttl)  # the first 8 bytes
    (arrived,) = rig.to(B)
    assert decode_ipv4(arrived.ip).ttl == 1 and decode_ipv4(arrived.ip).ident == 6


def test_icmp_traceroute_probe_gets_time_exceeded_quoting_the_echo():
    rig = Rig(chain_net(5))
    rig.hello()
    rig.send(A, echo(rig.addr("a"), rig.addr("b"), ident=0xBEEF, seq=3, ttl=3), AMAC)
    rig.at(s(1))
    (f,) = rig.to(A)
    ip, icmp, inner = _quoted(f)
    assert (icmp.type, icmp.code) == (11, 0) and IPv4Address(ip.src) in rig.net.lookup("r2").addresses
    assert inner.proto == PROTO_ICMP and icmp.payload[20:28] == encode_icmp_echo(8, 0xBEEF, 3, b"0123456789" * 5)[:8]


def test_unreachable_destinations_get_real_icmp_errors_and_tcp_a_reset():
    rig = Rig(chain_net(2))
    rig.hello()
    a = rig.addr("a")
    nowhere = int(IPv4Address("192.168.77.1"))
    rig.send(A, encode_ipv4(a, nowhere, PROTO_UDP, encode_udp(a, nowhere, 1, 2, b"x")), AMAC)
    r1 = rig.addr("r1")
    rig.send(A, encode_ipv4(a, r1, PROTO_UDP, encode_udp(a, r1, 3, 33434, b"y")), AMAC)
    rig.send(A, encode_ipv4(a, r1, PROTO_TCP, encode_tcp(a, r1, 45000, 22, 1000, 0, TCP_SYN, 64240, mss=1460)), AMAC)
    rig.at(s(1))
    net_unreach, port_unreach, rst = rig.to(A)
    ip, icmp, inner = _quoted(net_unreach)
    assert (icmp.type, icmp.code) == (3, 0) and ip.src == rig.sim.nodes["top:r0"].source_for(a) and inner.dst == nowhere
    ip, icmp, inner = _quoted(port_unreach)
    assert (icmp.type, icmp.code) == (3, 3) and ip.src == r1 and inner.ttl == 63
    ip, tcp = decode_ip_packet(rst.ip)
    assert ip.src == r1 and tcp.checksum_ok and tcp.flags == TCP_RST | TCP_ACK
    assert (tcp.sport, tcp.dport, tcp.ack) == (22, 45000, 1001)


def test_frames_that_are_not_for_the_gateway_are_counted_and_dropped():
    rig = Rig(chain_net(1))
    gw = rig.emu.hosts[A].gateway_mac
    good = echo(rig.addr("a"), rig.addr("b"))
    bad = bytearray(good)
    bad[10] ^= 0xFF
    rig.emu.ingress(A, gw + AMAC + b"\x86\xdd" + bytes(40))  # IPv6
    rig.emu.ingress(A, b"\xff" * 6 + AMAC + b"\x08\x00" + good)  # IPv4 broadcast
    rig.emu.ingress(A, gw + AMAC + b"\x08\x00" + bytes(bad))  # bad header checksum
    rig.emu.ingress(A, gw + AMAC + b"\x08\x00" + echo(rig.addr("b"), rig.addr("a")))  # spoofed source
    rig.emu.ingress(A, b"\x00" * 5)
    rig.at(s(1))
    assert not rig.to(B)
    assert rig.emu.summary()[A]["dropped"] == {
        "bad_ip": 1, "foreign_source": 1, "not_ipv4": 1, "not_to_gateway": 1, "short_frame": 1}
    assert rig.emu.summary()[A]["frames_in"] == 5


def test_the_host_mac_is_learnt_only_from_its_own_packets_or_arp():
    """Bridges, tunnels and veths on the way send frames of their own (IPv6, IGMP): their MACs are not the host's."""
    rig = Rig(chain_net(1))
    h = rig.emu.hosts[A]
    other = bytes.fromhex("822100000009")
    rig.emu.ingress(A, b"\x33\x33\x00\x00\x00\x02" + other + b"\x86\xdd" + bytes(40))  # IPv6 router solicitation
    rig.emu.ingress(A, h.gateway_mac + other + b"\x08\x00" + echo(rig.addr("b"), rig.addr("a")))  # not from a
    assert h.mac is None
    rig.send(A, echo(rig.addr("a"), rig.addr("b")), AMAC)
    assert h.mac == AMAC


# --- shared queues and bandwidth -------------------------------------------------------------


def bottleneck_net(bottleneck: Rate = Rate.mbps(20), access: Rate = Rate.gbps(1), queue=Packets(100),
                   background: bool = False) -> Network:
    """a – r0 ==bottleneck== r1 – b, and simulated hosts s – r0, r1 – d."""
    net = Network()
    a, b = net.host("a", emulated=True), net.host("b", emulated=True)
    r0, r1 = net.router("r0"), net.router("r1")
    net.link(a, r0, bandwidth=access, delay=us(100))
    net.link(r0, r1, bandwidth=bottleneck, delay=ms(5), queue=queue, name="bottleneck")
    net.link(r1, b, bandwidth=access, delay=us(100))
    sim_s, sim_d = net.host("s"), net.host("d")
    net.link(sim_s, r0, bandwidth=access)
    net.link(r1, sim_d, bandwidth=access)
    if background:
        net.add_flow(UdpCbr(src="s", dst="d", rate=Rate.mbps(40), size=972, stop=ms(10), name="bg"))
    return net


def _tcp_stream(a: int, b: int, count: int, mss: int = 1460) -> list[bytes]:
    return [encode_ipv4(a, b, PROTO_TCP, encode_tcp(a, b, 40000, 5201, 1 + k * mss, 1, TCP_ACK, 500, bytes(mss)),
                        ident=k) for k in range(count)]


def test_a_real_tcp_stream_leaves_a_20mbps_bottleneck_at_20mbps():
    rig = Rig(bottleneck_net())
    rig.hello()
    segs = _tcp_stream(rig.addr("a"), rig.addr("b"), 60)
    for seg in segs:  # back to back: the 1 Gb/s access link spaces them, r0 queues them
        rig.send(A, seg, AMAC)
    rig.at(s(1))
    got = rig.to(B)
    assert len(got) == 60
    gaps = {g.time - f.time for f, g in pairwise(got)}
    assert gaps == {tx_ns(1500, 20_000_000)} == {600_000}
    assert 59 * 1500 * 8 * 1e9 / (got[-1].time - got[0].time) == 20e6
    for sent, f in zip(segs, got, strict=True):
        _same_but_ttl(sent, f.ip, 2)
    port = rig.sim.ports["top:r0:eth1"]
    assert port.tx_packets == 60 and port.tx_bytes == 60 * 1500 and port.drops == 0


def test_simulated_background_traffic_delays_the_emulated_packets():
    delays = []
    for background in (False, True):
        rig = Rig(bottleneck_net(background=background))
        rig.hello()
        rig.at(ms(9))
        ping = echo(rig.addr("a"), rig.addr("b"))
        rig.send(A, ping, AMAC)
        rig.at(s(1))
        (f,) = rig.to(B)
        delays.append(f.time - ms(9))
        assert rig.sim.ports["top:r0:eth1"].tx_packets == (1 if not background else 1 + rig.sim.flows[0].sent_packets
                                                           - rig.sim.ports["top:r0:eth1"].drops)
    assert delays[0] == rig.sim.path_delay(A, B, len(ping))
    # 40 Mb/s for 9 ms into 20 Mb/s: ~22 packets of 1000 bytes wait ahead of it (0.4 ms each)
    assert delays[1] - delays[0] > ms(8)


# --- super-frames (TSO) ----------------------------------------------------------------------


def _super(a: int, b: int, payload: bytes, seq: int = 1000) -> tuple[bytes, VirtioNetHdr]:
    """A TSO super-frame as a kernel hands it over (partial checksum, virtio_net_hdr)."""
    tcp = bytearray(encode_tcp(a, b, 40000, 5201, seq, 1, TCP_ACK | TCP_PSH, 500, payload, timestamps=(5, 6)))
    check = pseudo_header_sum(a, b, PROTO_TCP, len(tcp))
    tcp[16], tcp[17] = check >> 8, check & 0xFF
    ip = encode_ipv4(a, b, PROTO_TCP, bytes(tcp), ident=100)
    return ip, VirtioNetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 14 + 52, 1448, 14 + 20, 16)


def test_a_super_frame_crossing_10gbps_stays_whole_and_leaves_with_its_metadata():
    rig = Rig(chain_net(3, bandwidth=Rate.gbps(10), delay=us(10)))
    rig.hello()
    payload = random.Random(1).randbytes(40_000)
    ip, gso = _super(rig.addr("a"), rig.addr("b"), payload)
    rig.send(A, ip, AMAC, gso)
    rig.at(s(1))
    (f,) = rig.to(B)
    _same_but_ttl(ip, f.ip, 3)
    n = 28  # ceil(40000 / 1448)
    assert f.gso == VirtioNetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 14 + 52, 1448, 34, 16)
    per_hop = (n - 1) * tx_ns(52 + 1448, 10_000_000_000) + tx_ns(52 + 40_000 - 27 * 1448, 10_000_000_000) + us(10)
    assert f.time == 4 * per_hop
    for port in ("top:a:eth0", "top:r0:eth1", "top:r1:eth1", "top:r2:eth1"):  # counted as its segments
        assert rig.sim.ports[port].tx_packets == n and rig.sim.ports[port].tx_bytes == len(ip) + 27 * 52


def _check_segments(frames: list[Frame], payload: bytes, partial: bool, total: int | None = None) -> None:
    """Each frame is segment k of the super-frame (of ``total`` segments) with valid bytes."""
    last = (total or len(frames)) - 1
    data = b""
    for k, f in enumerate(frames):
        seg = f.ip
        if partial:
            assert f.gso == VirtioNetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, 0, 0, 34, 16)
            seg = complete_checksum(seg, 20, 16)
        else:
            assert f.gso is None
        hdr, tcp = decode_ip_packet(seg)
        assert hdr.checksum_ok and tcp.checksum_ok and hdr.ident == 100 + k and hdr.ttl == 62
        assert tcp.seq == 1000 + 1448 * k and tcp.timestamps == (5, 6)
        assert bool(tcp.flags & TCP_PSH) == (k == last)
        data += tcp.payload
    assert data == payload


@pytest.mark.parametrize("offload", [True, False])
def test_a_super_frame_is_cut_at_a_20mbps_link_into_correct_segments(offload):
    rig = Rig(bottleneck_net(access=Rate.gbps(10)), offload=offload)
    rig.hello()
    payload = random.Random(2).randbytes(20_000)
    ip, gso = _super(rig.addr("a"), rig.addr("b"), payload)
    rig.send(A, ip, AMAC, gso)
    rig.at(s(1))
    got = rig.to(B)
    assert len(got) == 14
    _check_segments(got, payload, partial=offload)
    gaps = [g.time - f.time for f, g in pairwise(got)]
    # the bottleneck spaces them as 1500-byte packets (the last one is shorter)
    last = 52 + 20_000 - 13 * 1448
    assert set(gaps[:-1]) == {tx_ns(1500, 20_000_000)}
    assert gaps[-1] == tx_ns(last, 20_000_000) + tx_ns(last, 10**10) - tx_ns(1500, 10**10)
    assert rig.sim.ports["top:a:eth0"].tx_packets == 14 and rig.sim.ports["top:r0:eth1"].tx_packets == 14


def test_queue_overflow_drops_whole_segments():
    rig = Rig(bottleneck_net(access=Rate.gbps(10), queue=Packets(5)))
    rig.hello()
    payload = random.Random(4).randbytes(28 * 1448)
    ip, gso = _super(rig.addr("a"), rig.addr("b"), payload)
    rig.send(A, ip, AMAC, gso)
    rig.at(s(1))
    got = rig.to(B)
    assert len(got) == 6 and rig.sim.ports["top:r0:eth1"].drops == 22  # one in service, five waiting
    _check_segments(got, payload[: 6 * 1448], partial=True, total=28)


def test_a_queue_counts_a_whole_super_frame_as_its_segments():
    net = Network()
    a, b, r = net.host("a", emulated=True), net.host("b", emulated=True), net.router("r")
    net.link(a, r, bandwidth=Rate.gbps(10), queue=Packets(10))
    net.link(r, b, bandwidth=Rate.gbps(10))
    rig = Rig(net)
    rig.hello()
    ip, gso = _super(rig.addr("a"), rig.addr("b"), bytes(28 * 1448))
    rig.send(A, ip, AMAC, gso)  # 28 segments do not fit in 1 + 10: cut, 17 dropped
    small, gso2 = _super(rig.addr("a"), rig.addr("b"), bytes(8 * 1448), seq=99)
    rig.at(ms(1))
    rig.send(A, small, AMAC, gso2)  # 8 segments fit: whole
    rig.at(s(1))
    assert rig.sim.ports["top:a:eth0"].drops == 17
    got = rig.to(B)
    assert len(got) == 11 + 1 and got[-1].gso is not None and got[-1].gso.gso_size == 1448
    assert rig.sim.ports["top:a:eth0"].tx_packets == 11 + 8


def test_split_threshold_is_configurable():
    rig = Rig(chain_net(1, bandwidth=Rate.gbps(10), delay=0), split_threshold=0)
    rig.hello()
    ip, gso = _super(rig.addr("a"), rig.addr("b"), bytes(4 * 1448))
    rig.send(A, ip, AMAC, gso)
    rig.at(s(1))
    assert len(rig.to(B)) == 4


# --- model errors ----------------------------------------------------------------------------


def test_bad_models_are_errors_naming_the_host_or_flow():
    net = Network()
    h, r1, r2 = net.host("h", emulated=True), net.router("r1"), net.router("r2")
    net.link(h, r1)
    with pytest.raises(ModelError, match="emulated host top:h must have exactly one interface") as e:
        net.link(h, r2)
    assert e.value.element == "top:h"

    net = chain_net(1)
    net.add_flow(UdpCbr(src="r0", dst="b", rate=Rate.mbps(1), name="bad"))
    with pytest.raises(ModelError, match="flow bad: its destination top:b is an emulated host"):
        Simulation(net)  # checked when the simulation is built, with or without an Emulation

    net = Network()
    x, y = net.host("x", emulated=True), net.host("y", emulated=True)
    net.link(x, y)
    with pytest.raises(ModelError, match="emulated host top:x has no gateway"):
        Simulation(net)

    net = Network()
    net.host("lonely", emulated=True)
    net.link(net.host("p"), net.router("q"))
    with pytest.raises(ModelError, match="top:lonely must have exactly one interface, attached"):
        Simulation(net)


def _dml(text: str, name: str) -> Network:
    return network_from_dml(resolve(parse(text, name)))


def test_dml_emulated_attribute():
    text = """Net [
      host [ id 1 emulated true interface [ id 0 ] ]
      router [ id 2 interface [ id 0 ] interface [ id 1 ] ]
      host [ id 3 interface [ id 0 ] ]
      link [ attach 1(0) attach 2(0) ]
      link [ attach 2(1) attach 3(0) ]
    ]"""
    net = _dml(text, "m.dml")
    assert net.lookup("1").emulated and not net.lookup("3").emulated
    rig = Rig(net)
    assert list(rig.emu.hosts) == ["top:1"]
    with pytest.raises(ModelError, match="unknown attribute 'emulated'"):
        _dml("Net [ router [ id 2 emulated true ] ]", "m.dml")
    with pytest.raises(ModelError, match="emulated"):
        _dml("Net [ host [ id 2 emulated maybe ] ]", "m.dml")


def test_a_router_answers_nothing_for_icmp_errors_it_receives():
    rig = Rig(chain_net(1))
    rig.hello()
    a, r0 = rig.addr("a"), rig.addr("r0")
    err = encode_ipv4(a, r0, PROTO_ICMP, bytes([3, 3, 0xFC, 0xFC]) + bytes(4))
    rig.send(A, err, AMAC)
    rig.at(s(1))
    assert not rig.to(A) and decode_icmp(err[20:]).type == 3


def test_a_super_frame_whose_ttl_runs_out_gets_one_error_quoting_its_first_segment():
    rig = Rig(chain_net(3, bandwidth=Rate.gbps(10), delay=us(10)))
    rig.hello()
    ip, gso = _super(rig.addr("a"), rig.addr("b"), bytes(10 * 1448))
    ip = bytearray(ip)
    ip[8] = 2
    ip[10:12] = b"\0\0"
    ip[10:12] = internet_checksum(ip[:20]).to_bytes(2, "big")
    rig.send(A, bytes(ip), AMAC, gso)
    rig.at(s(1))
    (f,) = rig.to(A)
    outer, icmp, inner = _quoted(f)
    assert (icmp.type, icmp.code) == (11, 0) and IPv4Address(outer.src) in rig.net.lookup("r1").addresses
    assert inner.ttl == 1 and inner.total_length == 20 + 32 + 1448 and inner.ident == 100
    assert rig.sim.nodes["top:r1"].ttl_expired == 10 and not rig.to(B)


def test_on_a_lan_arp_is_answered_for_every_simulated_address_and_a_simulated_host_answers_ping():
    net = Network()
    a, b = net.host("a", emulated=True), net.host("b", emulated=True)
    sim_host, r = net.host("s"), net.router("r")
    net.link(a, sim_host, r, bandwidth=Rate.mbps(100), delay=ms(1))  # a LAN: r is the gateway
    net.link(r, b, bandwidth=Rate.mbps(100), delay=ms(1))
    rig = Rig(net)
    h = rig.emu.hosts[A]
    assert h.gateway == IPv4Address(rig.addr("r"))
    rig.arp(A, AMAC, rig.addr("s"))
    (reply,) = rig.frames
    assert reply.data[14 + 14 : 14 + 18] == IPv4Address(rig.addr("s")).packed and reply.data[6:12] == h.gateway_mac
    rig.frames.clear()
    req = echo(rig.addr("a"), rig.addr("s"))
    rig.send(A, req, AMAC)
    rig.at(s(1))
    (rep,) = rig.to(A)
    ip, icmp = decode_ip_packet(rep.ip)
    assert ip.src == rig.addr("s") and ip.ttl == 64 and icmp.type == 0 and icmp.checksum_ok
    assert rep.time == 2 * (tx_ns(len(req), 100_000_000) + ms(1))
    with pytest.raises(ValueError):
        Emulation(Simulation(chain_net(1)), lambda *x: None, split_threshold=-1)
    with pytest.raises(KeyError, match="no emulated host 'top:zz'"):
        rig.emu.ingress("top:zz", b"")


def test_random_loss_draws_per_segment():
    rig = Rig(chain_net(1, bandwidth=Rate.gbps(10), delay=us(5), loss=0.3))
    rig.hello()
    payload = random.Random(6).randbytes(40 * 1448)
    ip, gso = _super(rig.addr("a"), rig.addr("b"), payload)
    rig.send(A, ip, AMAC, gso)
    rig.at(s(1))
    got = rig.to(B)
    first, second = rig.sim.ports["top:a:eth0"], rig.sim.ports["top:r0:eth1"]
    assert first.tx_packets == 40 and 0 < first.lost < 40  # cut at the first lossy port
    assert len(got) == 40 - first.lost - second.lost and all(f.gso.gso_type == 0 for f in got)
    by_seq = {decode_ip_packet(complete_checksum(f.ip, 20, 16))[1].seq: f for f in got}
    for seq, f in by_seq.items():
        k = (seq - 1000) // 1448
        tcp = decode_ip_packet(complete_checksum(f.ip, 20, 16))[1]
        assert tcp.checksum_ok and tcp.payload == payload[k * 1448 : (k + 1) * 1448]


def test_captures_record_real_packets_as_they_cross(tmp_path):
    net = chain_net(2)
    sim = Simulation(net, capture=["top:r0:eth1"])
    frames: list[bytes] = []
    emu = Emulation(sim, lambda h, f, g: frames.append(f))
    sim.start(s(1))
    a, b = int(net.lookup("a").addresses[0]), int(net.lookup("b").addresses[0])
    emu.ingress(A, emu.hosts[A].gateway_mac + AMAC + b"\x08\x00" + echo(a, b))
    sim.advance(s(1))
    (rec,) = sim.taps["top:r0:eth1"].records
    ip, icmp = decode_ip_packet(rec[2])
    assert ip.ttl == 63 and ip.checksum_ok and icmp.checksum_ok and ip.src == a
    res = sim.finish()
    (pcap,) = [f for f in res.write(tmp_path) if f.suffix == ".pcap"]
    assert pcap.stat().st_size > 24
