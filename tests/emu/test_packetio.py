"""Frame I/O for the simulator: virtio-net headers, TAP and AF_PACKET endpoints against the real kernel.

The kernel tests join two host namespaces A (10.61.0.1) and B (10.61.0.2) through a small Python
forwarder built on the module (a thread copying frames between the two endpoints, which live in a
third namespace S), then ping and run TCP through it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import select
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from primogeni.emu import links, netns, packetio
from primogeni.emu import sys as esys
from primogeni.emu.packetio import (
    VNET_HDR_LEN,
    Endpoint,
    PacketEndpoint,
    TapEndpoint,
    VnetHdr,
    set_tx_offload,
    tx_offload,
)
from primogeni.errors import EmuError, FeatureMissing
from primogeni.net.gso import (
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_HDR_GSO_UDP,
)

A_ADDR, B_ADDR = "10.61.0.1", "10.61.0.2"
KINDS = [("tap", False), ("tap", True), ("packet", False), ("packet", True)]
IDS = ["tap", "tap-vnet", "packet", "packet-vnet"]


# -- virtio_net_hdr (no kernel) ------------------------------------------------------------------

def test_vnet_hdr_packs_to_the_kernel_layout_and_back() -> None:
    hdr = VnetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 66, 1448, 34, 16)
    raw = hdr.pack()
    assert len(raw) == VNET_HDR_LEN
    # flags u8, gso_type u8, then hdr_len, gso_size, csum_start, csum_offset as native u16
    assert raw == bytes([1, 1]) + b"".join(v.to_bytes(2, sys.byteorder) for v in (66, 1448, 34, 16))
    assert VnetHdr.unpack(raw) == hdr
    assert VnetHdr.unpack(b"xyz" + raw, 3) == hdr
    assert hdr.is_gso and hdr.needs_csum
    assert VnetHdr().pack() == bytes(10) and not VnetHdr().is_gso and not VnetHdr().needs_csum
    assert VnetHdr(gso_type=VIRTIO_NET_HDR_GSO_TCPV6 | VIRTIO_NET_HDR_GSO_ECN).is_gso
    assert not VnetHdr(gso_type=VIRTIO_NET_HDR_GSO_NONE | VIRTIO_NET_HDR_GSO_ECN).is_gso


def _tcp4_frame(payload: int, options: int = 12) -> bytes:
    """Ethernet + IPv4 (20) + TCP with ``options`` bytes of options + ``payload`` bytes."""
    tcp = bytes(12) + bytes([((20 + options) // 4) << 4]) + bytes(7 + options)
    return bytes(12) + b"\x08\x00" + bytes([0x45]) + bytes(19) + tcp + bytes(payload)


def test_segments_count_the_headers_each_segment_repeats() -> None:
    frame = _tcp4_frame(10_000)  # 66 bytes of headers
    csum = VnetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 66, 1448, 34, 16)
    assert csum.segments(frame) == (7, len(frame) + 6 * 66)  # ceil(10000 / 1448) = 7
    assert csum._replace(flags=0).segments(frame) == (7, len(frame) + 6 * 66)  # headers found by parsing
    assert VnetHdr().segments(frame) == (1, len(frame))
    udp = bytes(12) + b"\x08\x00" + bytes([0x45]) + bytes(19) + bytes(8) + bytes(3000)
    assert VnetHdr(1, VIRTIO_NET_HDR_GSO_UDP, 42, 1000, 34, 6).segments(udp) == (3, len(udp) + 2 * 42)


def test_a_kernel_without_tun_is_a_missing_feature(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packetio, "TUN_PATH", "/nonexistent/primo-net-tun")
    with pytest.raises(FeatureMissing, match="primo-net-tun"):
        TapEndpoint.create("primotap")


def test_offloads_without_vnet_headers_are_refused() -> None:
    with pytest.raises(EmuError, match="primotap"):
        TapEndpoint.create("primotap", vnet=False, offload=True)


# -- kernel helpers ------------------------------------------------------------------------------

def _endpoints(kind: str, vnet: bool, sim: str, a: str, b: str) -> tuple[Endpoint, Endpoint]:
    """The hosts' interfaces ``primoha`` (in A) and ``primohb`` (in B), with addresses, and their endpoints."""
    made: list[Endpoint] = []
    try:
        for host, letter in ((a, "a"), (b, "b")):
            if kind == "tap":
                made.append(TapEndpoint.create(f"primoh{letter}", netns=sim, host_netns=host, vnet=vnet))
            else:
                made.append(PacketEndpoint.create(f"primos{letter}", f"primoh{letter}", netns=sim, host_netns=host,
                                                  vnet=vnet))
        for host, letter, addr in ((a, "a", A_ADDR), (b, "b", B_ADDR)):
            with netns.iproute(host) as ipr:
                links.add_address(ipr, f"primoh{letter}", ipaddress.IPv4Interface(f"{addr}/24"))
    except BaseException:
        for ep in made:
            ep.close()
        raise
    return made[0], made[1]


@contextmanager
def _relay(ea: Endpoint, eb: Endpoint) -> Iterator[list[tuple[int, VnetHdr | None, bytes]]]:
    """Copy frames both ways in a thread; yields what came from A: (size, header, first 128 bytes)."""
    stop = threading.Event()
    from_a: list[tuple[int, VnetHdr | None, bytes]] = []
    failures: list[BaseException] = []

    def loop() -> None:
        try:
            poller = select.epoll()
            pairs = {ea.fileno(): (ea, eb), eb.fileno(): (eb, ea)}
            for fd in pairs:
                poller.register(fd, select.EPOLLIN)
            while not stop.is_set():
                for fd, _ in poller.poll(0.02):
                    src, dst = pairs[fd]
                    for frame, vnet in src.recv_batch(64):
                        if src is ea:
                            from_a.append((len(frame), vnet, frame[:128]))
                        dst.send(frame, vnet)
            poller.close()
        except BaseException as exc:  # reported by the test thread
            failures.append(exc)

    thread = threading.Thread(target=loop, name="primo-test-relay", daemon=True)
    thread.start()
    try:
        yield from_a
    finally:
        stop.set()
        thread.join(5)
    assert not failures, failures


def _ping(ns: str, dst: str, count: int = 3) -> subprocess.CompletedProcess[str]:
    return netns.run(ns, ["ping", "-n", "-c", str(count), "-i", "0.05", "-W", "2", dst], capture_output=True,
                     text=True, timeout=30)


def _tcp(a: str, b: str, size: int) -> None:
    """``size`` random bytes over TCP from A to B, checked by hash on arrival."""
    data = os.urandom(size)
    with esys.in_netns(b):
        server = socket.socket()
    with esys.in_netns(a):
        client = socket.socket()
    with server, client:
        server.bind((B_ADDR, 5400))
        server.listen(1)
        server.settimeout(10)
        client.settimeout(10)
        sender = threading.Thread(target=lambda: (client.connect((B_ADDR, 5400)), client.sendall(data),
                                                  client.shutdown(socket.SHUT_WR)), daemon=True)
        sender.start()
        conn, _ = server.accept()
        digest, got = hashlib.sha256(), 0
        with conn:
            conn.settimeout(10)
            while chunk := conn.recv(1 << 20):
                digest.update(chunk)
                got += len(chunk)
        sender.join(10)
    assert got == size and digest.digest() == hashlib.sha256(data).digest()


# -- through the kernel --------------------------------------------------------------------------

@pytest.mark.root
@pytest.mark.parametrize(("kind", "vnet"), KINDS, ids=IDS)
def test_ping_goes_both_ways_through_a_forwarder(netns_factory: Callable[..., str], kind: str, vnet: bool) -> None:
    sim, a, b = netns_factory("s"), netns_factory("a"), netns_factory("b")
    ea, eb = _endpoints(kind, vnet, sim, a, b)
    with ea, eb:
        with _relay(ea, eb):
            assert _ping(a, B_ADDR).returncode == 0
            assert _ping(b, A_ADDR).returncode == 0
        for ep in (ea, eb):
            c = ep.counters
            assert c.frames_in >= 7 and c.frames_out >= 7 and c.bytes_in >= 7 * 42 and c.drops == 0  # ARP + 6 ICMP
        assert ea.counters.frames_in == eb.counters.frames_out and eb.counters.frames_in == ea.counters.frames_out


@pytest.mark.root
@pytest.mark.parametrize(("kind", "vnet"), KINDS, ids=IDS)
def test_tcp_through_a_forwarder_gets_super_frames_only_with_vnet_headers(
        netns_factory: Callable[..., str], kind: str, vnet: bool) -> None:
    sim, a, b = netns_factory("s"), netns_factory("a"), netns_factory("b")
    ea, eb = _endpoints(kind, vnet, sim, a, b)
    with ea, eb:
        with _relay(ea, eb) as from_a:
            assert _ping(a, B_ADDR, 1).returncode == 0
            _tcp(a, b, 8 << 20)
        # without vnet headers the host must send complete frames: no checksum offload, hence no TSO
        assert tx_offload(a, "primoha") == (vnet, vnet)
    largest = max(size for size, _, _ in from_a)
    supers = [(size, hdr, head) for size, hdr, head in from_a if hdr is not None and hdr.is_gso]
    if not vnet:
        assert largest <= 1514 and not supers
        return
    assert largest > 1514 and supers
    size, hdr, head = max(supers, key=lambda s: s[0])
    assert hdr is not None and hdr.gso_type & ~VIRTIO_NET_HDR_GSO_ECN == VIRTIO_NET_HDR_GSO_TCPV4
    assert hdr.needs_csum and hdr.csum_start == 34 and hdr.csum_offset == 16  # TCP checksum after 14 + 20 bytes
    count, wire = hdr.segments(head + bytes(size - len(head)))
    headers = 34 + (head[34 + 12] >> 4) * 4
    assert count == -(-(size - headers) // hdr.gso_size) > 1 and wire == size + (count - 1) * headers


@pytest.mark.root
def test_a_tap_moves_into_the_host_with_its_settings_and_goes_away_on_close(
        netns_factory: Callable[..., str]) -> None:
    sim, host = netns_factory("s"), netns_factory("h")
    ep = TapEndpoint.create("primotap", netns=sim, host_netns=host, mac="02:00:00:61:00:01", mtu=1400)
    fd = ep.fileno()
    assert ep.netns == host and ep.vnet
    with netns.iproute(sim) as ipr:
        assert not links.exists(ipr, "primotap")
    with netns.iproute(host) as ipr:
        link = ipr.link("get", ifname="primotap")[0]
        assert (link.get("IFLA_ADDRESS"), link.get("IFLA_MTU")) == ("02:00:00:61:00:01", 1400)
        assert links.is_up(ipr, "primotap")
    assert tx_offload(host, "primotap") == (True, True)  # TUNSETOFFLOAD: CSUM and TSO
    ep.close()
    ep.close()  # a second close does nothing
    assert ep.closed
    with pytest.raises(OSError):
        os.fstat(fd)
    with netns.iproute(host) as ipr:
        assert not links.exists(ipr, "primotap")
    # without offloads the host's kernel must checksum and segment itself
    with TapEndpoint.create("primotap", netns=sim, host_netns=host, vnet=False):
        assert tx_offload(host, "primotap") == (False, False)


@pytest.mark.root
def test_a_packet_endpoint_removes_its_veth_on_close(netns_factory: Callable[..., str]) -> None:
    sim, host = netns_factory("s"), netns_factory("h")
    ep = PacketEndpoint.create("primosx", "primohx", netns=sim, host_netns=host, mac="02:00:00:61:00:02", mtu=9000)
    fd = ep.fileno()
    with netns.iproute(host) as ipr:
        link = ipr.link("get", ifname="primohx")[0]
        assert (link.get("IFLA_ADDRESS"), link.get("IFLA_MTU")) == ("02:00:00:61:00:02", 9000)
    assert netns.get_sysctl(sim, "net.ipv6.conf.primosx.disable_ipv6") == "1"
    ep.close()
    assert ep.closed
    with pytest.raises(OSError):
        os.fstat(fd)
    for ns, dev in ((sim, "primosx"), (host, "primohx")):
        with netns.iproute(ns) as ipr:
            assert not links.exists(ipr, dev)


@pytest.mark.root
@pytest.mark.parametrize("filter_outgoing", [None, True], ids=["kernel", "by-packet-type"])
def test_a_bound_packet_socket_reads_only_incoming_frames(netns_factory: Callable[..., str],
                                                         filter_outgoing: bool | None) -> None:
    """S itself pings A out of the bound device: the endpoint sees A's replies, never S's requests."""
    sim, host = netns_factory("s"), netns_factory("h")
    with netns.iproute(sim) as ipr:
        links.add_veth(ipr, "primosy", "primohy", peer_netns=host, mac="02:00:00:00:00:05",
                       peer_mac="02:00:00:00:00:06", up=True)
        links.add_address(ipr, "primosy", ipaddress.IPv4Interface("10.62.0.1/24"))
    with netns.iproute(host) as ipr:
        links.set_up(ipr, "primohy")
        links.add_address(ipr, "primohy", ipaddress.IPv4Interface("10.62.0.2/24"))
    with PacketEndpoint.bind("primosy", netns=sim, vnet=False, filter_outgoing=filter_outgoing) as ep:
        assert ep.filters_outgoing == bool(filter_outgoing)  # this kernel has PACKET_IGNORE_OUTGOING
        assert _ping(sim, "10.62.0.2").returncode == 0
        frames = ep.recv_batch(1000)
    sources = {frame[6:12].hex(":") for frame, _ in frames}
    assert sources == {"02:00:00:00:00:06"} and len(frames) >= 4  # ARP reply and 3 echo replies (maybe an ARP query)
    with netns.iproute(sim) as ipr:
        assert links.exists(ipr, "primosy")  # bind() made nothing, so close() removed nothing


@pytest.mark.root
def test_frames_sent_to_a_downed_device_are_counted_as_drops(netns_factory: Callable[..., str]) -> None:
    sim, host = netns_factory("s"), netns_factory("h")
    frame = bytes.fromhex("ffffffffffff020000000001" "0800") + bytes(46)
    with TapEndpoint.create("primotap", netns=sim, host_netns=host) as tap, \
            PacketEndpoint.create("primosz", "primohz", netns=sim, host_netns=host, vnet=False) as pkt:
        with netns.iproute(host) as ipr:
            links.set_down(ipr, "primotap")
        with netns.iproute(sim) as ipr:
            links.set_down(ipr, "primosz")
        for ep in (tap, pkt):
            assert ep.send(frame) is False
            assert ep.counters.drops == 1 and ep.counters.frames_out == 0
        # a frame that needs its vnet header cannot leave an endpoint without one
        with pytest.raises(EmuError, match="primosz"):
            pkt.send(frame, VnetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 54, 1448, 34, 16))


@pytest.mark.root
def test_missing_devices_and_namespaces_are_named(netns_factory: Callable[..., str]) -> None:
    sim = netns_factory("s")
    gone = f"{sim}-gone"
    with pytest.raises(EmuError, match=gone):
        TapEndpoint.create("primotap", netns=gone)
    with pytest.raises(EmuError, match=gone):
        TapEndpoint.create("primotap", netns=sim, host_netns=gone)
    with netns.iproute(sim) as ipr:
        assert not links.exists(ipr, "primotap")  # the TAP made before the failed move is gone
    with pytest.raises(EmuError, match=gone):
        PacketEndpoint.bind("primosx", netns=gone)
    with pytest.raises(EmuError, match=f"primo-none in {sim}"):
        PacketEndpoint.bind("primo-none", netns=sim)
    with pytest.raises(EmuError, match="primo-none"):
        set_tx_offload(sim, "primo-none", False)
    with pytest.raises(EmuError, match="eth7"):
        TapEndpoint.create("eth7", netns=sim)  # we make only primo-prefixed devices
    with TapEndpoint.create("primotap", netns=sim), pytest.raises(EmuError, match=r"primotap.*exists"):
        TapEndpoint.create("primotap", netns=sim)
    with pytest.raises(EmuError, match="primosx"):
        PacketEndpoint.create("primosx", "primohx", netns=sim, host_netns=gone)
    with netns.iproute(sim) as ipr:
        assert links.names(ipr) == []
