"""Devices through netlink: what the kernel reports after each call, and traffic where it matters."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable

import pytest

from primogeni.emu import links, netns
from primogeni.emu import sys as esys
from primogeni.errors import EmuError, FeatureMissing

pytestmark = pytest.mark.root
IFACE = ipaddress.IPv4Interface


def udp_gets_through(src_ns: str, dst_ns: str, dst_addr: str, port: int = 7000, wait: float = 0.5) -> bool:
    """Send a few datagrams from ``src_ns`` to ``dst_addr``:``port`` in ``dst_ns``; whether one arrives."""
    with esys.in_netns(dst_ns):
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with esys.in_netns(src_ns):
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with receiver, sender:
        receiver.bind((dst_addr, port))
        receiver.settimeout(wait)
        for _ in range(3):  # the first ones may wait for ARP
            sender.sendto(b"x", (dst_addr, port))
            try:
                receiver.recvfrom(10)
                return True
            except TimeoutError:
                continue
    return False


def host_on(bridge_ns: str, bridge: str, host_ns: str, port_name: str, address: str) -> int:
    """A veth from ``bridge`` to ``host_ns`` (``eth0`` there, with ``address``); the port's index."""
    with netns.iproute(bridge_ns) as ipr:
        idx = links.add_veth(ipr, port_name, "eth0", peer_netns=host_ns, master=bridge, up=True, peer_index=2)
    with netns.iproute(host_ns) as ipr:
        links.set_up(ipr, 2)
        links.add_address(ipr, 2, IFACE(address))
    return idx


def test_veth_into_another_namespace_in_one_request(netns_factory: Callable[..., str]) -> None:
    node, sliver = netns_factory("node"), netns_factory("sliver")
    with netns.iproute(node) as ipr:
        bridge = links.add_bridge(ipr, "primo-tbr")
        idx = links.add_veth(ipr, "primo0e0", "eth1", peer_netns=sliver, mac="02:00:00:00:01:01",
                             peer_mac="02:00:00:00:02:02", mtu=1400, master="primo-tbr", up=True, peer_index=2)
        assert idx == links.index(ipr, "primo0e0")
        assert links.master_of(ipr, "primo0e0") == "primo-tbr"
        assert links.master_of(ipr, bridge) is None
        assert links.is_up(ipr, idx)
        link = ipr.link("get", index=idx)[0]
        assert (link.get("IFLA_ADDRESS"), link.get("IFLA_MTU")) == ("02:00:00:00:01:01", 1400)
        assert not links.exists(ipr, "eth1")  # the peer is not here
    with netns.iproute(sliver) as ipr:
        assert links.index(ipr, "eth1") == 2
        peer = ipr.link("get", index=2)[0]
        assert (peer.get("IFLA_ADDRESS"), peer.get("IFLA_MTU")) == ("02:00:00:00:02:02", 1400)
        assert not links.is_up(ipr, "eth1")


def test_bridge_has_no_stp_and_no_forward_delay(netns_factory: Callable[..., str]) -> None:
    with netns.iproute(netns_factory()) as ipr:
        idx = links.add_bridge(ipr, "primo-tbr", mtu=1450)
        link = ipr.link("get", index=idx)[0]
        data = link.get(("linkinfo", "data"))
        assert data.get("IFLA_BR_STP_STATE") == 0
        assert data.get("IFLA_BR_FORWARD_DELAY") == 0
        assert link.get("IFLA_MTU") == 1450
        assert links.is_up(ipr, "primo-tbr")
        with pytest.raises(EmuError, match="primo-tbr"):
            links.add_bridge(ipr, "primo-tbr")


def test_device_state_changes_and_idempotent_removal(netns_factory: Callable[..., str]) -> None:
    with netns.iproute(netns_factory()) as ipr:
        links.add_bridge(ipr, "primo-tbr")
        idx = links.add_veth(ipr, "primo-ta", "primo-tb")
        assert links.names(ipr, "primo-t") == ["primo-ta", "primo-tb", "primo-tbr"]
        assert links.exists(ipr, "primo-tb") and links.exists(ipr, idx)
        links.set_up(ipr, "primo-ta")
        assert links.is_up(ipr, idx)
        links.set_down(ipr, idx)
        assert not links.is_up(ipr, "primo-ta")
        links.set_master(ipr, "primo-ta", "primo-tbr")
        assert links.master_of(ipr, idx) == "primo-tbr"
        links.set_master(ipr, idx, None)
        assert links.master_of(ipr, "primo-ta") is None
        links.delete(ipr, "primo-ta")  # takes its peer along
        links.delete(ipr, "primo-ta")
        links.delete(ipr, idx)
        assert links.index(ipr, "primo-tb") is None
        assert not links.exists(ipr, idx)
        with pytest.raises(EmuError, match="primo-none"):
            links.set_up(ipr, "primo-none")
        with pytest.raises(EmuError, match="primo-none"):
            links.set_master(ipr, "primo-tbr", "primo-none")
        with pytest.raises(EmuError, match="no-such-namespace"):
            links.add_veth(ipr, "primo-tc", "primo-td", peer_netns="primo-t-no-such-namespace")


def test_addresses_and_default_route(netns_factory: Callable[..., str]) -> None:
    with netns.iproute(netns_factory()) as ipr:
        links.add_veth(ipr, "primo-ta", "primo-tb", up=True)
        links.add_address(ipr, "primo-ta", IFACE("172.30.0.5/16"))
        links.add_address(ipr, "primo-ta", IFACE("172.30.0.5/16"))
        links.add_address(ipr, "primo-ta", IFACE("192.0.2.1/24"))
        assert sorted(links.addresses(ipr, "primo-ta")) == [IFACE("172.30.0.5/16"), IFACE("192.0.2.1/24")]
        links.add_default_route(ipr, "172.30.0.1")
        links.add_default_route(ipr, "192.0.2.254")  # replaces
        defaults = [r for r in ipr.route("dump", family=socket.AF_INET)
                    if r["dst_len"] == 0 and r.get("RTA_TABLE") == 254]
        assert [r.get("RTA_GATEWAY") for r in defaults] == ["192.0.2.254"]


def test_counters_count_real_packets(netns_factory: Callable[..., str]) -> None:
    left, right = netns_factory("l"), netns_factory("r")
    with netns.iproute(left) as ipr:
        links.add_veth(ipr, "primo-tl", "primo-tr", peer_netns=right, up=True)
        links.add_address(ipr, "primo-tl", IFACE("10.88.0.1/24"))
    with netns.iproute(right) as ipr:
        links.set_up(ipr, "primo-tr")
        links.add_address(ipr, "primo-tr", IFACE("10.88.0.2/24"))
    with netns.iproute(left) as ipr:
        before = links.counters(ipr, ["primo-tl", "primo-nothere"])["primo-tl"]
    assert udp_gets_through(left, right, "10.88.0.2")
    with netns.iproute(left) as ipr:
        after = links.counters(ipr, ["primo-tl", "primo-nothere"])
        everything = links.counters(ipr)
    assert set(after) == {"primo-tl"}
    assert after["primo-tl"].tx_packets > before.tx_packets
    assert after["primo-tl"].tx_bytes > before.tx_bytes
    assert set(everything) == {"lo", "primo-tl"}
    with netns.iproute(right) as ipr:
        assert links.counters(ipr, ["primo-tr"])["primo-tr"].rx_packets >= 1


def test_isolated_bridge_ports_reach_only_the_others(netns_factory: Callable[..., str]) -> None:
    node, a, b, c = (netns_factory(x) for x in ("node", "a", "b", "c"))
    with netns.iproute(node) as ipr:
        links.add_bridge(ipr, "primo-tbr")
    port_a = host_on(node, "primo-tbr", a, "primo-ta", "10.66.0.1/24")
    host_on(node, "primo-tbr", b, "primo-tb", "10.66.0.2/24")
    host_on(node, "primo-tbr", c, "primo-tc", "10.66.0.3/24")
    assert udp_gets_through(a, b, "10.66.0.2")  # not yet isolated
    with netns.iproute(node) as ipr:
        links.set_isolated(ipr, port_a)
        links.set_isolated(ipr, "primo-tb")
        assert links.is_isolated(ipr, "primo-ta") and not links.is_isolated(ipr, "primo-tc")
        assert not links.is_isolated(ipr, "primo-tbr")
    assert not udp_gets_through(a, b, "10.66.0.2", port=7001)
    assert udp_gets_through(a, c, "10.66.0.3", port=7002)  # c is not isolated
    with netns.iproute(node) as ipr:
        links.set_isolated(ipr, "primo-tb", False)
    assert udp_gets_through(a, b, "10.66.0.2", port=7003)


def test_vxlan_carries_a_lan_between_two_nodes(netns_factory: Callable[..., str]) -> None:
    n1, n2, h1, h2 = (netns_factory(x) for x in ("n1", "n2", "h1", "h2"))
    with netns.iproute(n1) as ipr:
        links.add_veth(ipr, "primo-ul", "primo-ul", peer_netns=n2, up=True)
        links.add_address(ipr, "primo-ul", IFACE("10.254.9.1/24"))
    with netns.iproute(n2) as ipr:
        links.set_up(ipr, "primo-ul")
        links.add_address(ipr, "primo-ul", IFACE("10.254.9.2/24"))
    sides = ((n1, "10.254.9.1", "10.254.9.2", h1, "10.50.0.1/24"), (n2, "10.254.9.2", "10.254.9.1", h2, "10.50.0.2/24"))
    for node, local, _, host, address in sides:
        with netns.iproute(node) as ipr:
            links.add_bridge(ipr, "primob77")
            idx = links.add_vxlan(ipr, "primox77", 77, local=local, dev="primo-ul", master="primob77")
            data = ipr.link("get", index=idx)[0].get(("linkinfo", "data"))
            assert (data.get("IFLA_VXLAN_ID"), data.get("IFLA_VXLAN_LOCAL"), data.get("IFLA_VXLAN_PORT"),
                    data.get("IFLA_VXLAN_LEARNING")) == (77, local, 4789, 1)
            assert links.is_up(ipr, idx) and links.master_of(ipr, idx) == "primob77"
            assert links.fdb_remotes(ipr, idx) == set()
        host_on(node, "primob77", host, "primo0e0", address)
    assert not udp_gets_through(h1, h2, "10.50.0.2", wait=0.2)  # no remote yet: nothing crosses
    for node, _, remote, _, _ in sides:
        with netns.iproute(node) as ipr:
            links.fdb_add_remote(ipr, "primox77", remote)
            links.fdb_add_remote(ipr, "primox77", remote)
            links.fdb_add_remote(ipr, "primox77", "10.254.9.99")
            assert links.fdb_remotes(ipr, "primox77") == {remote, "10.254.9.99"}
            links.fdb_del_remote(ipr, "primox77", "10.254.9.99")
            links.fdb_del_remote(ipr, "primox77", "10.254.9.99")
            assert links.fdb_remotes(ipr, "primox77") == {remote}
    assert udp_gets_through(h1, h2, "10.50.0.2", port=7001)
    assert udp_gets_through(h2, h1, "10.50.0.1", port=7002)


def test_gretap_is_made_or_reported_missing(netns_factory: Callable[..., str]) -> None:
    with netns.iproute(netns_factory()) as ipr:
        try:
            idx = links.add_gretap(ipr, "primog5", 5, local="10.254.0.1", remote="10.254.0.2")
        except FeatureMissing as exc:
            assert "gretap" in str(exc) and exc.what == "primog5"
            assert not links.exists(ipr, "primog5")
        else:
            assert links.index(ipr, "primog5") == idx


def test_building_slivers_takes_a_few_milliseconds_each(netns_factory: Callable[..., str]) -> None:
    """What the agent does per sliver's control interface: namespace, veth, isolation, address, route."""
    node = netns_factory("node")
    count = 100
    with netns.iproute(node) as ipr:
        bridge = links.add_bridge(ipr, "primo-ctl")
        start = time.perf_counter()
        for slot in range(count):
            sliver = netns_factory(str(slot))
            port = links.add_veth(ipr, f"primo{slot}c", "ctl0", peer_netns=sliver, master=bridge, up=True,
                                  peer_index=2)
            links.set_isolated(ipr, port)
            with netns.iproute(sliver) as inside:
                links.set_up(inside, 1)
                links.set_up(inside, 2)
                links.add_address(inside, 2, IFACE(f"172.30.{(slot + 2) // 256}.{(slot + 2) % 256}/16"))
                links.add_default_route(inside, "172.30.0.1")
        per_sliver = (time.perf_counter() - start) / count
    print(f"\n{per_sliver * 1000:.2f} ms per sliver (namespace, veth, isolation, address, route)")
    assert per_sliver < 0.015
