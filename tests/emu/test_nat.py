"""ControlNet: the node's control bridge and the NAT of slivers' port ranges, checked with real traffic.

Topology (all in namespaces the test makes): a "node" with the control bridge and an underlay veth
``primo-ul`` (10.254.0.11/24) to a "client" (``primo-ulc``, 10.254.0.1/24, plus 10.99.0.1 standing
for an experimental address), and two slivers A (slot 0, ports 20000-20099) and B (slot 1, ports
20100-20199) on the bridge, their ports isolated, as the agent wires them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import select
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address

import pytest

from primogeni.emu import links, netns
from primogeni.emu import sys as esys
from primogeni.emu.nat import ControlNet
from primogeni.emu.nft import Nft
from primogeni.errors import EmuError

UNDERLAY_IP = "10.254.0.11"
CLIENT_IP = "10.254.0.1"
A_RANGE = (20000, 20099)
B_RANGE = (20100, 20199)


# -- sockets in namespaces (a socket stays in the namespace it was made in) ------------------------

def tcp_listen(ns: str, port: int, addr: str = "0.0.0.0") -> socket.socket:
    with esys.in_netns(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((addr, port))
    sock.listen(8)
    return sock


def tcp_connect(ns: str, addr: str, port: int, *, source_port: int = 0, timeout: float = 1.0) -> socket.socket:
    with esys.in_netns(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if source_port:
        sock.bind(("0.0.0.0", source_port))
    sock.settimeout(timeout)
    try:
        sock.connect((addr, port))
    except OSError:
        sock.close()
        raise
    return sock


def udp_socket(ns: str, port: int = 0, addr: str = "0.0.0.0") -> socket.socket:
    with esys.in_netns(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((addr, port))
    sock.settimeout(2.0)
    return sock


def pending(listeners: list[socket.socket], wait: float = 0.3) -> list[socket.socket]:
    """The listeners with a connection waiting to be accepted."""
    readable, _, _ = select.select(listeners, [], [], wait)
    return readable


def unreachable(ns: str, addr: str, port: int) -> bool:
    """True when a TCP connection from ``ns`` to addr:port fails (dropped, refused or unreachable)."""
    try:
        tcp_connect(ns, addr, port, timeout=0.5).close()
    except OSError:
        return True
    return False


@dataclass
class Site:
    node: str
    client: str
    a: str
    b: str
    cn: ControlNet


def add_sliver_plumbing(site_node: str, sliver_ns: str, slot: int, cn: ControlNet) -> None:
    """What the agent does for a sliver's control interface."""
    with netns.iproute(site_node) as ipr:
        idx = links.add_veth(ipr, f"primo{slot}c", "ctl0", peer_netns=sliver_ns, master=cn.bridge, up=True,
                             peer_index=2)
        links.set_isolated(ipr, idx)
    with netns.iproute(sliver_ns) as ipr:
        links.set_up(ipr, "lo")
        links.set_up(ipr, 2)
        links.add_address(ipr, 2, cn.interface_of(slot))
        links.add_default_route(ipr, cn.gateway())


@pytest.fixture
def site(netns_factory: Callable[..., str]) -> Iterator[Site]:
    node, client, a, b = (netns_factory(tag) for tag in ("node", "cli", "a", "b"))
    with netns.iproute(node) as ipr:
        links.add_veth(ipr, "primo-ul", "primo-ulc", peer_netns=client, up=True)
        links.add_address(ipr, "primo-ul", ipaddress.IPv4Interface(f"{UNDERLAY_IP}/24"))
        ipr.route("add", dst="10.99.0.0/24", gateway=CLIENT_IP)  # an "experimental" network behind the client
    with netns.iproute(client) as ipr:
        links.set_up(ipr, "lo")
        links.set_up(ipr, "primo-ulc")
        links.add_address(ipr, "primo-ulc", ipaddress.IPv4Interface(f"{CLIENT_IP}/24"))
        links.add_address(ipr, "primo-ulc", ipaddress.IPv4Interface("10.99.0.1/32"))
    cn = ControlNet(underlay_dev="primo-ul", underlay_ip=UNDERLAY_IP, netns=node)
    cn.setup()
    add_sliver_plumbing(node, a, 0, cn)
    add_sliver_plumbing(node, b, 1, cn)
    cn.add_sliver(0, *A_RANGE)
    cn.add_sliver(1, *B_RANGE)
    try:
        yield Site(node, client, a, b, cn)
    finally:
        cn.close()


# -- pure ------------------------------------------------------------------------------------------

def test_addresses_are_derived_from_the_slot() -> None:
    cn = ControlNet(underlay_dev="eth0", underlay_ip="192.0.2.1")
    assert cn.gateway() == IPv4Address("172.30.0.1")
    assert cn.address_of(0) == IPv4Address("172.30.0.2")
    assert cn.address_of(300) == IPv4Address("172.30.1.46")
    assert str(cn.interface_of(5)) == "172.30.0.7/16"
    with pytest.raises(EmuError):
        cn.address_of(65534)
    with pytest.raises(EmuError):
        cn.address_of(-1)
    with pytest.raises(EmuError, match="overlaps the experimental pool"):
        ControlNet(underlay_dev="eth0", underlay_ip="192.0.2.1", subnet="10.1.0.0/16")


# -- real traffic ----------------------------------------------------------------------------------

@pytest.mark.root
def test_inbound_ports_reach_the_sliver_that_owns_them(site: Site) -> None:
    a20000, a20150, a30000 = (tcp_listen(site.a, p) for p in (20000, 20150, 30000))
    b20150, b30000 = (tcp_listen(site.b, p) for p in (20150, 30000))
    everyone = [a20000, a20150, a30000, b20150, b30000]
    try:
        with tcp_connect(site.client, UNDERLAY_IP, 20000) as conn:
            assert pending(everyone) == [a20000]
            served, peer = a20000.accept()
            with served:
                assert peer[0] == CLIENT_IP  # DNAT only: the sliver sees who connects
                conn.sendall(b"ping")
                assert served.recv(4) == b"ping"
        with tcp_connect(site.client, UNDERLAY_IP, 20150):
            assert pending(everyone) == [b20150]  # in B's range: B, not A, although A listens too
            b20150.accept()[0].close()
        with pytest.raises(OSError):  # no sliver owns 30000: the node itself refuses
            tcp_connect(site.client, UNDERLAY_IP, 30000)
        assert pending(everyone, 0.2) == []

        with udp_socket(site.b, 20101) as receiver, udp_socket(site.client) as sender:
            sender.sendto(b"hello", (UNDERLAY_IP, 20101))
            data, peer = receiver.recvfrom(100)
            assert (data, peer[0]) == (b"hello", CLIENT_IP)
    finally:
        for sock in everyone:
            sock.close()


@pytest.mark.root
def test_outbound_traffic_leaves_with_the_node_address_and_a_port_in_range(site: Site) -> None:
    with tcp_listen(site.client, 9000, CLIENT_IP) as server:
        for source_port in (45000, 45001, 20150):  # outside A's range, and inside B's: all remapped
            with tcp_connect(site.a, CLIENT_IP, 9000, source_port=source_port):
                served, (peer_ip, peer_port) = server.accept()
                served.close()
                assert peer_ip == UNDERLAY_IP
                assert A_RANGE[0] <= peer_port <= A_RANGE[1]
        with tcp_connect(site.b, CLIENT_IP, 9000, source_port=45000):
            served, (peer_ip, peer_port) = server.accept()
            served.close()
            assert peer_ip == UNDERLAY_IP and B_RANGE[0] <= peer_port <= B_RANGE[1]
    with udp_socket(site.client, 9001, CLIENT_IP) as receiver, udp_socket(site.a, 45002) as sender:
        sender.sendto(b"out", (CLIENT_IP, 9001))
        data, (peer_ip, peer_port) = receiver.recvfrom(100)
        assert data == b"out" and peer_ip == UNDERLAY_IP and A_RANGE[0] <= peer_port <= A_RANGE[1]


@pytest.mark.root
def test_slivers_reach_neither_each_other_nor_the_experimental_pool(site: Site) -> None:
    b_addr = str(site.cn.address_of(1))
    with tcp_listen(site.b, 20100), tcp_listen(site.a, 20000), tcp_listen(site.client, 9000):
        # positive control: A reaches the client's underlay address, and B through its public port
        tcp_connect(site.a, CLIENT_IP, 9000).close()
        tcp_connect(site.client, UNDERLAY_IP, 20100).close()
        # on the bridge (port isolation)
        assert unreachable(site.a, b_addr, 20100)
        # through the node (nft drops forwarded control->control)
        with netns.iproute(site.a) as ipr:
            ipr.route("add", dst=f"{b_addr}/32", gateway=str(site.cn.gateway()))
        assert unreachable(site.a, b_addr, 20100)
        # a sliver's public port, from another sliver: not even that way
        assert unreachable(site.a, UNDERLAY_IP, 20100)
        # the experimental pool behind the node is dropped; the underlay subnet (also in 10/8) is not
        assert unreachable(site.a, "10.99.0.1", 9000)
        # straight to a control address from outside, not through the DNAT: dropped
        with netns.iproute(site.client) as ipr:
            ipr.route("add", dst=str(site.cn.subnet), gateway=UNDERLAY_IP)
        assert unreachable(site.client, str(site.cn.address_of(0)), 20000)
        tcp_connect(site.client, UNDERLAY_IP, 20000).close()


@pytest.mark.root
def test_slivers_are_read_back_from_the_kernel_and_changes_are_idempotent(site: Site) -> None:
    cn = site.cn
    expected = {0: (cn.address_of(0), *A_RANGE), 1: (cn.address_of(1), *B_RANGE)}
    assert cn.slivers() == expected
    cn.setup()  # again: the slivers stay
    cn.add_sliver(0, *A_RANGE)
    fresh = ControlNet(underlay_dev="primo-ul", underlay_ip=UNDERLAY_IP, netns=site.node)
    try:
        assert fresh.slivers() == expected  # a new agent finds them in the kernel
        with pytest.raises(EmuError, match="overlaps"):
            fresh.add_sliver(2, 20050, 20060)
        fresh.add_sliver(1, 20300, 20399)  # a new range replaces the old one
        assert cn.slivers()[1] == (cn.address_of(1), 20300, 20399)
        with tcp_listen(site.b, 20300), tcp_listen(site.b, 20150):
            tcp_connect(site.client, UNDERLAY_IP, 20300).close()
            with pytest.raises(OSError):
                tcp_connect(site.client, UNDERLAY_IP, 20150)
        cn.remove_sliver(0)  # cn did not see fresh's change; removing must still work
        cn.remove_sliver(0)
        cn.remove_sliver(7)
        assert set(fresh.slivers()) == {1}
        with tcp_listen(site.a, 20000), pytest.raises(OSError):
            tcp_connect(site.client, UNDERLAY_IP, 20000)
    finally:
        fresh.close()
    cn.teardown()
    cn.teardown()
    assert cn.slivers() == {}
    with netns.iproute(site.node) as ipr:
        assert not links.exists(ipr, cn.bridge)
    with Nft(site.node) as nft:
        assert "primo" not in nft.run("list tables")


@pytest.mark.root
def test_five_hundred_slivers_are_added_quickly(netns_factory: Callable[..., str]) -> None:
    node = netns_factory("nat")
    with netns.iproute(node) as ipr:
        links.add_veth(ipr, "primo-ul", "primo-ulx", up=True)
        links.add_address(ipr, "primo-ul", ipaddress.IPv4Interface(f"{UNDERLAY_IP}/24"))
    with contextlib.closing(ControlNet(underlay_dev="primo-ul", underlay_ip=UNDERLAY_IP, netns=node)) as cn:
        cn.setup()
        items = [(slot, 20000 + 10 * slot, 20009 + 10 * slot) for slot in range(500)]
        start = time.perf_counter()
        cn.add_slivers(items)
        batch = time.perf_counter() - start
        assert len(cn.slivers()) == 500
        start = time.perf_counter()
        cn.remove_slivers(range(500))
        removal = time.perf_counter() - start
        start = time.perf_counter()
        for item in items:
            cn.add_sliver(*item)
        one_by_one = time.perf_counter() - start
        assert len(cn.slivers()) == 500
        start = time.perf_counter()
        for slot in range(500):
            cn.remove_sliver(slot)
        removal_one_by_one = time.perf_counter() - start
        assert cn.slivers() == {}
        print(f"\n500 slivers: batch add {batch * 1000:.0f} ms ({batch * 2:.2f} ms/sliver), batch removal "
              f"{removal * 1000:.0f} ms; one by one: add {one_by_one:.2f} s ({one_by_one * 2:.2f} ms/sliver), "
              f"removal {removal_one_by_one:.2f} s ({removal_one_by_one * 2:.2f} ms/sliver)")
        assert batch < 1.0
        assert one_by_one < 3.0  # ~0.3-0.5 s on an idle machine; generous for a loaded CI box
        assert removal_one_by_one < 5.0
