"""agent.realize: specs → kernel on "nodes" made of namespaces (see conftest.py), and reconciliation."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from primogeni.agent.realize import Realizer
from primogeni.agent.realize_links import (
    DeviceName,
    del_address,
    joined,
    parse_cgroup,
    parse_device,
    parse_sliver_netns,
    stable_mac,
)
from primogeni.agent.spec import IfaceSpec, LinkSpec, LoginSpec, SliverSpec
from primogeni.agent.store import Store, VsysLink
from primogeni.emu import container, links, netns, patch, tc
from primogeni.emu import sys as esys
from primogeni.errors import EmuError, FeatureMissing

from .conftest import Node
from .conftest import ping as icmp_ping

SLICE = "urn:publicid:IDN+primo:p1+slice+s1"
LAN = "urn:publicid:IDN+primo+sliver+lan0"
ALICE_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice"


def host(slot: int, address: str | None = None, link: str | None = None, **extra: object) -> SliverSpec:
    interfaces = (IfaceSpec("eth1", f"02:00:00:00:{slot // 256:02x}:{slot % 256:02x}", address, link),) \
        if address else ()
    return SliverSpec(f"urn:publicid:IDN+primo+sliver+h{slot}", SLICE, f"h{slot}", slot,
                      (20000 + 10 * slot, 20009 + 10 * slot), interfaces=interfaces, **extra)  # type: ignore[arg-type]


def provision(node: Node, *specs: SliverSpec | LinkSpec) -> None:
    for spec in specs:
        if isinstance(spec, SliverSpec):
            node.store.put_sliver(spec)
            node.realizer.ensure_sliver(spec)
        else:
            node.store.put_link(spec)
            node.realizer.ensure_link(spec)


def release(node: Node, urn: str) -> None:
    if node.store.get_sliver(urn) is not None:
        node.realizer.remove_sliver(urn)
        node.store.drop_sliver(urn)
    else:
        node.realizer.remove_link(urn)
        node.store.drop_link(urn)


def ping(node: Node, slot: int, address: str, tries: int = 3) -> bool:
    """Whether an echo gets through; a fresh veth may drop packets until the kernel's link watch
    (up to 1 s) gives it its queue, hence a few tries."""
    return any(icmp_ping(f"primo-{node.name}-{slot}", address) for _ in range(tries))


def leftovers(node: Node) -> list[str]:
    """Every object of the node's slivers and links still in the kernel."""
    found = netns.names(f"primo-{node.name}-")
    with netns.iproute(node.netns) as ipr:
        found += [d for d in links.names(ipr, "primo") if parse_device(d) is not None]
    found += [f"nat slot {slot}" for slot in node.realizer.ctl.slivers()]
    found += container.cgroups().names(f"primo/{node.name}-")
    return found


def lan(node: Node, *slots: int, vni: int = 100, **extra: object) -> tuple[list[SliverSpec], LinkSpec]:
    hosts = [host(slot, f"10.77.0.{slot}/24", LAN) for slot in slots]
    link = LinkSpec(LAN, SLICE, vni, members=tuple((h.urn, "eth1") for h in hosts), **extra)  # type: ignore[arg-type]
    provision(node, *hosts, link)
    return hosts, link


# -- names (no kernel)


def test_kernel_names_parse_back() -> None:
    assert parse_device("primo12c") == DeviceName("ctl", 12)
    assert parse_device("primo3e0") == DeviceName("exp", 3, 0)
    assert parse_device("primo3ee") == DeviceName("exp", 3, 14)
    assert parse_device("primo99999t9") == DeviceName("vsys", 99999, 9)
    assert parse_device("primob16777215") == DeviceName("bridge", 16777215)
    assert parse_device("primox7") == DeviceName("vxlan", 7)
    assert parse_device("primog7") == DeviceName("gretap", 7)
    for other in ("primo-ctl", "primo-ul", "primo-ul3", "primo3ef", "primo3e", "primob", "eth0", "primo3x1"):
        assert parse_device(other) is None, other
    assert parse_sliver_netns("pc1", "primo-pc1-4") == 4
    assert parse_sliver_netns("pc1", "primo-pc10-4") is None
    assert parse_sliver_netns("pc1", "primo-pc1-x-4") is None
    assert parse_cgroup("pc1", "primo/pc1-4") == 4
    assert parse_cgroup("pc1", "primo/pc1") is None
    assert stable_mac("pc1", 3, "ctl0") == stable_mac("pc1", 3, "ctl0") != stable_mac("pc1", 4, "ctl0")
    assert int(stable_mac("pc1", 3, "ctl0")[:2], 16) & 0b11 == 0b10  # locally administered, unicast


def test_sshd_files_live_where_containers_see_them(tmp_path: Path) -> None:
    found = []
    for state in (tmp_path / "s", tmp_path / "t", Path("/var/lib/primo/agent/pc9")):
        r = Realizer(node="pc9", state_dir=state, underlay_dev="primo-ul", underlay_ip="10.254.0.19",
                     store=Store(tmp_path / "store"))
        try:
            found.append(r.sshd_dir)
        finally:
            r.close()
    # always under /var/lib/primo/sshd (containers see it, sshd can read it as the user), one per state dir
    assert {f.parent for f in found} == {Path("/var/lib/primo/sshd")} and len(set(found)) == 3
    assert all(f.name.startswith("pc9-") for f in found)


# -- slivers and links on one node


@pytest.mark.root
def test_two_slivers_on_a_link_ping_and_leave_nothing(nodes) -> None:
    (node,) = nodes(1)
    r = node.realizer
    (a, b), link = lan(node, 1, 2)
    assert ping(node, 1, "10.77.0.2")
    assert ping(node, 2, "172.30.0.1")  # the node, over the control network
    assert r.status(a.urn) == "ready" and r.status(LAN) == "ready"
    ns = f"primo-{node.name}-1"
    assert netns.get_sysctl(ns, "net.ipv4.ip_local_port_range").split() == ["20010", "20019"]
    assert netns.get_sysctl(ns, "net.ipv4.ping_group_range").split() == ["0", "2147483647"]
    with netns.iproute(ns) as sipr:
        assert links.addresses(sipr, "ctl0") == [ipaddress.IPv4Interface("172.30.0.3/16")]
        assert links.addresses(sipr, "eth1") == [ipaddress.IPv4Interface("10.77.0.1/24")]
        assert sipr.link("get", ifname="eth1")[0].get("IFLA_ADDRESS") == "02:00:00:00:00:01"
    with netns.iproute(node.netns) as ipr:  # two members on one node: a patch, no bridge
        assert joined(ipr, "primo1e0", "primo2e0") and links.master_of(ipr, "primo1e0") is None
        assert not links.exists(ipr, "primob100")
        assert links.master_of(ipr, "primo1c") == "primo-ctl" and links.is_isolated(ipr, "primo1c")
    assert set(r.ctl.slivers()) == {1, 2}
    r.ensure_sliver(a)  # idempotent
    r.ensure_link(link)
    assert ping(node, 1, "10.77.0.2")
    for urn in (a.urn, b.urn, LAN):
        release(node, urn)
    r.settle()
    assert leftovers(node) == []
    assert r.status(a.urn) is None and r.status(LAN) is None
    r.remove_sliver(a.urn)  # idempotent
    r.remove_link(LAN)


@pytest.mark.root
def test_ensure_slivers_makes_a_batch_keeps_what_runs_and_reports_failures(nodes) -> None:
    (node,) = nodes(1)
    r = node.realizer
    link = LinkSpec(LAN, SLICE, 100, members=tuple((f"urn:publicid:IDN+primo+sliver+h{i}", "eth1") for i in (1, 2, 3)))
    hosts = [host(i, f"10.77.0.{i}/24", LAN) for i in (1, 2, 3)]
    provision(node, hosts[0], link)  # one runs already: kept
    clash = dataclasses.replace(host(4), ports=hosts[1].ports)  # h2's port range: its NAT is refused
    for spec in (*hosts, clash):
        node.store.put_sliver(spec)
    with pytest.raises(EmuError, match=r"1 of 4 slivers failed.*overlaps"):
        r.ensure_slivers([*hosts, clash])
    assert [r.status(spec.urn) for spec in hosts] == ["ready"] * 3
    assert r.status(clash.urn) is None and not netns.exists(f"primo-{node.name}-4")
    assert ping(node, 3, "10.77.0.1") and ping(node, 2, "172.30.0.1")
    ns = f"primo-{node.name}-3"
    assert netns.get_sysctl(ns, "net.ipv4.ip_local_port_range").split() == ["20030", "20039"]
    assert netns.get_sysctl(ns, "net.ipv4.ping_group_range").split() == ["0", "2147483647"]
    with netns.iproute(node.netns) as ipr:
        assert links.master_of(ipr, "primo3e0") == "primob100"
        assert links.master_of(ipr, "primo3c") == "primo-ctl" and links.is_isolated(ipr, "primo3c")
    assert set(r.ctl.slivers()) == {1, 2, 3}
    node.store.drop_sliver(clash.urn)
    r.ensure_slivers(hosts)  # idempotent
    r.remove_slivers([spec.urn for spec in hosts])
    r.remove_links([LAN])
    for spec in hosts:
        node.store.drop_sliver(spec.urn)
    node.store.drop_link(LAN)
    r.settle()
    assert leftovers(node) == []


@pytest.mark.root
def test_batch_removal_leaves_nothing_and_keeps_a_shared_bridge(nodes) -> None:
    (node,) = nodes(1)
    r = node.realizer
    (a, b), _ = lan(node, 1, 2)
    other = LinkSpec(f"{LAN}-other", SLICE, 100, members=())  # the same VNI: its bridge stays
    c = host(3, "10.78.0.3/24", f"{LAN}-third")
    third = LinkSpec(f"{LAN}-third", SLICE, 101, members=((c.urn, "eth1"),))
    provision(node, other, c, third)
    r.remove_links([LAN, third.urn])
    for urn in (LAN, third.urn):
        node.store.drop_link(urn)
    r.settle()
    with netns.iproute(node.netns) as ipr:
        assert links.exists(ipr, "primob100") and not links.exists(ipr, "primob101")
    r.remove_slivers([a.urn, b.urn, c.urn, "urn:publicid:IDN+primo+sliver+unknown"])
    for spec in (a, b, c):
        node.store.drop_sliver(spec.urn)
    r.remove_links([other.urn])
    node.store.drop_link(other.urn)
    r.settle()
    assert leftovers(node) == []
    r.remove_slivers([a.urn])  # idempotent
    r.remove_links([LAN])


@pytest.mark.root
def test_link_first_then_slivers_and_changed_specs(nodes) -> None:
    (node,) = nodes(1)
    a, b = host(1, "10.77.0.1/24", LAN), host(2, "10.77.0.2/24", LAN)
    provision(node, LinkSpec(LAN, SLICE, 100, members=((a.urn, "eth1"), (b.urn, "eth1"))), a, b)
    assert ping(node, 1, "10.77.0.2")
    moved = SliverSpec(a.urn, SLICE, "h1", 1, (20010, 20019), interfaces=(
        IfaceSpec("eth1", "02:00:00:00:00:11", "10.77.0.11/24", LAN),))
    provision(node, moved)  # new MAC and address: the interface is made again
    assert ping(node, 2, "10.77.0.11")
    with netns.iproute(f"primo-{node.name}-1") as sipr:
        assert links.addresses(sipr, "eth1") == [ipaddress.IPv4Interface("10.77.0.11/24")]


@pytest.mark.root
def test_a_two_member_link_is_a_patch_and_a_bridge_when_it_must_be(nodes) -> None:
    (node,) = nodes(1)
    r = node.realizer
    _, link = lan(node, 1, 2)
    c = host(3, "10.77.0.3/24", LAN)
    wider = dataclasses.replace(link, members=(*link.members, (c.urn, "eth1")))
    provision(node, c, wider)  # a third member: a bridge with all three, the patch gone
    assert ping(node, 3, "10.77.0.1") and ping(node, 1, "10.77.0.2")
    with netns.iproute(node.netns) as ipr:
        assert [links.master_of(ipr, f"primo{i}e0") for i in (1, 2, 3)] == ["primob100"] * 3
        assert patch.redirect_of(ipr, "primo1e0") is None and patch.redirect_of(ipr, "primo2e0") is None
    provision(node, link)  # two again: patched, the bridge goes
    r.settle()
    assert ping(node, 1, "10.77.0.2") and not ping(node, 3, "10.77.0.1", tries=1)
    with netns.iproute(node.netns) as ipr:
        assert joined(ipr, "primo1e0", "primo2e0") and not links.exists(ipr, "primob100")
        assert links.master_of(ipr, "primo3e0") is None
    r.vsys_setup_link(c.urn, "tun0", "10.254.0.99", 100)  # a vsys link on the link's key needs the bridge
    node.store.put_vsys_link(c.urn, VsysLink("tun0", "10.254.0.99", 100))
    with netns.iproute(f"primo-{node.name}-3") as sipr:  # h3 reaches the LAN through tun0 now
        del_address(sipr, "eth1", ipaddress.IPv4Interface("10.77.0.3/24"))
        links.add_address(sipr, "tun0", ipaddress.IPv4Interface("10.77.0.33/24"))
    assert ping(node, 3, "10.77.0.2") and ping(node, 1, "10.77.0.2")
    assert r.status(LAN) == "ready"
    r.vsys_delete_link(c.urn, "tun0")
    node.store.drop_vsys_link(c.urn, "tun0")
    r.settle()
    with netns.iproute(node.netns) as ipr:
        assert joined(ipr, "primo1e0", "primo2e0") and not links.exists(ipr, "primob100")
        patch.unpatch(ipr, "primo2e0")  # lost (say, by hand): status says so, reconcile patches again
    assert r.status(LAN) == "failed"
    assert LAN in r.reconcile()["created"]
    assert r.status(LAN) == "ready" and ping(node, 2, "10.77.0.1")


@pytest.mark.root
def test_link_down_stops_pings_and_up_restores_them(nodes) -> None:
    (node,) = nodes(1)
    lan(node, 1, 2)
    assert ping(node, 1, "10.77.0.2")
    node.realizer.set_link_state(LAN, False)
    with netns.iproute(f"primo-{node.name}-1") as sipr:
        links.set_up(sipr, "eth1")  # the sliver cannot undo it from its side
    assert not ping(node, 1, "10.77.0.2", tries=1)
    node.realizer.set_link_state(LAN, True)
    assert ping(node, 1, "10.77.0.2")


@pytest.mark.root
def test_shaping_and_what_cannot_be_done(nodes) -> None:
    (node,) = nodes(1)
    r = node.realizer
    _, link = lan(node, 1, 2, capacity_kbps=2000, latency_ms=5.0)
    with netns.iproute(node.netns) as ipr, netns.iproute(f"primo-{node.name}-1") as sipr:
        assert tc.rate_of(ipr, "primo1e0") == 2000 and tc.rate_of(sipr, "eth1") == 2000
        assert any("netem" in w for w in r.warnings(LAN))
        provision(node, LinkSpec(LAN, SLICE, 100, members=link.members))
        assert tc.rate_of(ipr, "primo1e0") is None and tc.rate_of(sipr, "eth1") is None
        assert r.warnings(LAN) == []
    gre = LinkSpec("urn:publicid:IDN+primo+sliver+gre", SLICE, 101, members=(), remotes=("10.254.0.99",),
                   tunnel="gretap")
    if not getattr(r.features, "gretap", False):
        with pytest.raises(FeatureMissing, match="gretap"):
            r.ensure_link(gre)


# -- across nodes


@pytest.mark.root
def test_links_across_nodes_over_vxlan_stay_apart_by_vni(nodes) -> None:
    a, b = nodes(2)
    l1, l2 = LAN, "urn:publicid:IDN+primo+sliver+lan1"
    h1, h2 = host(1, "10.77.0.1/24", l1), host(2, "10.77.0.2/24", l1)
    h3, h4 = host(3, "10.77.0.3/24", l2), host(4, "10.77.0.4/24", l2)  # the same subnet, another VNI
    provision(a, h1, h4, LinkSpec(l1, SLICE, 200, members=((h1.urn, "eth1"),), remotes=(b.address,)),
              LinkSpec(l2, SLICE, 201, members=((h4.urn, "eth1"),), remotes=(b.address,)))
    provision(b, h2, h3, LinkSpec(l1, SLICE, 200, members=((h2.urn, "eth1"),), remotes=(a.address,)),
              LinkSpec(l2, SLICE, 201, members=((h3.urn, "eth1"),), remotes=(a.address,)))
    assert ping(a, 1, "10.77.0.2")
    assert ping(b, 3, "10.77.0.4")
    assert not ping(b, 3, "10.77.0.1", tries=1)
    assert not ping(a, 4, "10.77.0.2", tries=1)
    with netns.iproute(a.netns) as ipr:
        assert links.fdb_remotes(ipr, "primox200") == {b.address}
    provision(a, LinkSpec(l1, SLICE, 200, members=((h1.urn, "eth1"),), remotes=("10.254.0.40",)))
    with netns.iproute(a.netns) as ipr:
        assert links.fdb_remotes(ipr, "primox200") == {"10.254.0.40"}  # the stale entry went


@pytest.mark.root
def test_vsys_links_across_nodes(nodes) -> None:
    a, b = nodes(2)
    s1, s2 = host(1), host(2)
    provision(a, s1)
    provision(b, s2)
    for node, spec, peer, address in ((a, s1, b, "10.88.0.1/24"), (b, s2, a, "10.88.0.2/24")):
        node.realizer.vsys_setup_link(spec.urn, "tun0", peer.address, 300)
        node.store.put_vsys_link(spec.urn, VsysLink("tun0", peer.address, 300))
        with netns.iproute(f"primo-{node.name}-{spec.slot}") as sipr:
            links.add_address(sipr, "tun0", ipaddress.IPv4Interface(address))
    assert ping(a, 1, "10.88.0.2")
    with netns.iproute(b.netns) as ipr:
        links.delete(ipr, "primo2t0")  # lost (say, by hand): reconcile makes it again
    assert s2.urn in b.realizer.reconcile()["created"]
    with netns.iproute(f"primo-{b.name}-2") as sipr:
        links.add_address(sipr, "tun0", ipaddress.IPv4Interface("10.88.0.2/24"))
    assert ping(a, 1, "10.88.0.2")
    a.realizer.vsys_delete_link(s1.urn, "tun0")
    a.store.drop_vsys_link(s1.urn, "tun0")
    a.realizer.settle()  # bridges and tunnels are deleted in the background
    with netns.iproute(a.netns) as ipr:
        assert not any(links.exists(ipr, d) for d in ("primo1t0", "primob300", "primox300"))


# -- reconcile


@pytest.mark.root
def test_reconcile_remakes_a_dead_container(nodes) -> None:
    (node,) = nodes(1)
    (a, b), _ = lan(node, 1, 2)
    c = container.attach(f"primo-{node.name}-1", node.realizer.run_dir)
    assert c is not None
    os.kill(c.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while c.alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert node.realizer.status(a.urn) == "failed"
    with esys.in_netns(node.netns):  # a restarted agent: a new realizer over the same store
        fresh = Realizer(node=node.name, state_dir=node.state_dir, underlay_dev="primo-ul",
                         underlay_ip=node.address, store=node.store)
    try:
        report = fresh.reconcile()
    finally:
        fresh.close()
    assert a.urn in report["created"] and b.urn in report["kept"] and LAN in report["kept"]
    assert report["removed"] == [] and report["failed"] == []
    assert node.realizer.status(a.urn) == "ready"
    assert ping(node, 1, "10.77.0.2")


@pytest.mark.root
def test_reconcile_removes_what_the_store_does_not_hold(nodes) -> None:
    (node,) = nodes(1)
    r = node.realizer
    (a, b), _ = lan(node, 1, 2)
    stray = host(7, "10.77.0.7/24", LAN)
    provision(node, stray)
    node.store.drop_sliver(stray.urn)
    with netns.iproute(node.netns) as ipr:
        links.add_veth(ipr, "primo99e0", "primo-leak")
        links.add_bridge(ipr, "primob999")
    report = r.reconcile()
    assert f"netns primo-{node.name}-7" in report["removed"]
    assert {"device primo99e0", "device primob999"} <= set(report["removed"])
    assert set(report["kept"]) == {a.urn, b.urn, LAN}
    assert not netns.exists(f"primo-{node.name}-7") and 7 not in r.ctl.slivers()
    assert container.cgroups().find(f"primo/{node.name}-7") is None
    with netns.iproute(node.netns) as ipr:
        assert not any(links.exists(ipr, d) for d in ("primo7c", "primo7e0", "primo99e0", "primob999"))
    assert ping(node, 1, "10.77.0.2")


# -- run state, reboot, commands


@pytest.mark.root
def test_commands_stop_start_and_reboot(nodes) -> None:
    (node,) = nodes(1)
    r = node.realizer
    (a, _), _ = lan(node, 1, 2)
    pid = r.run_command(a.urn, ["sleep", "300"])
    assert os.path.exists(f"/proc/{pid}")
    assert r.stop_command(a.urn, ["sleep", "300"]) == 1
    assert _gone(pid)
    assert r.stop_command(a.urn, ["sleep", "300"]) == 0
    r.run_command(a.urn, ["sh", "-c", "echo hello from $(hostname) as $(id -un)"])
    c = container.attach(f"primo-{node.name}-1", r.run_dir)
    assert c is not None
    # an event's command is the researcher's: never root (no login here, so nobody)
    assert _wait(lambda: "hello from h1 as nobody" in container.run(c, ["cat", "/tmp/primo-event-2.log"]).stdout)
    pid = r.run_command(a.urn, ["sleep", "301"])
    node.store.set_run_state(a.urn, "stopped")
    r.stop_sliver(a.urn)
    assert _gone(pid) and c.alive()
    assert r.status(a.urn) == "stopped"
    node.store.set_run_state(a.urn, "started")
    r.start_sliver(a.urn)
    assert r.status(a.urn) == "ready"
    r.reboot(a.urn)
    again = container.attach(f"primo-{node.name}-1", r.run_dir)
    assert again is not None and again.pid != c.pid and not c.alive()
    assert ping(node, 1, "10.77.0.2") and ping(node, 1, "172.30.0.1")


def _wait(check, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


def _gone(pid: int) -> bool:
    def dead() -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True
    return _wait(dead)


# -- sshd, threads, monitor, teardown


@pytest.mark.root
def test_sshd_answers_on_the_first_port_through_the_nat(nodes, tmp_path: Path) -> None:
    (node,) = nodes(1)
    r = node.realizer
    spec = host(1, logins=(LoginSpec("alice", (ALICE_KEY,)),))
    provision(node, spec)
    assert _wait(lambda: _banner(node.netns, "172.30.0.3", 20010).startswith(b"SSH-"))
    assert _banner(node.underlay, node.address, 20010).startswith(b"SSH-")  # from the underlay
    node.store.set_run_state(spec.urn, "stopped")
    r.stop_sliver(spec.urn)
    assert _wait(lambda: _banner(node.netns, "172.30.0.3", 20010) == b"")
    node.store.set_run_state(spec.urn, "started")
    r.start_sliver(spec.urn)
    assert _wait(lambda: _banner(node.netns, "172.30.0.3", 20010).startswith(b"SSH-"))


def _banner(ns: str, address: str, port: int) -> bytes:
    with esys.in_netns(ns):
        sock = socket.socket()
    try:
        sock.settimeout(2)
        sock.connect((address, port))
        return sock.recv(64)
    except OSError:
        return b""
    finally:
        sock.close()


@pytest.mark.root
def test_calls_from_other_threads_act_in_the_node_namespace(nodes) -> None:
    (node,) = nodes(1)
    hosts = [host(slot, f"10.77.0.{slot}/24", LAN) for slot in (1, 2)]
    errors: list[BaseException] = []

    def worker(spec: SliverSpec) -> None:
        try:
            provision(node, spec)
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(spec,)) for spec in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    provision(node, LinkSpec(LAN, SLICE, 100, members=tuple((h.urn, "eth1") for h in hosts)))
    assert ping(node, 1, "10.77.0.2")
    assert "primo1c" not in {name for _, name in socket.if_nameindex()}  # nothing landed in our own namespace


@pytest.mark.root
def test_monitor_and_teardown(nodes) -> None:
    (node,) = nodes(1)
    r = node.realizer
    (a, b), _ = lan(node, 1, 2)
    assert ping(node, 1, "10.77.0.2")
    report = r.monitor()
    assert {"cpu_percent", "load1", "load5", "load15", "mem_total", "mem_available", "disk_total", "disk_free",
            "cpus"} <= set(report["node"])
    assert report["node"]["mem_total"] >= report["node"]["mem_available"] > 0
    assert set(report["slivers"]) == {a.urn, b.urn}
    assert report["slivers"][a.urn]["memory_bytes"] >= 0 and report["slivers"][a.urn]["cpu_ns"] >= 0
    assert report["interfaces"]["primo1e0"]["tx_packets"] > 0
    assert {"primo1c", "primo2e0", "primo-ctl"} <= set(report["interfaces"])
    r.teardown()
    assert leftovers(node) == []
    with netns.iproute(node.netns) as ipr:
        assert not links.exists(ipr, "primo-ctl") and links.exists(ipr, "primo-ul")


@pytest.mark.root
def test_errors_name_the_object(nodes) -> None:
    (node,) = nodes(1)
    with pytest.raises(EmuError, match="no such sliver"):
        node.realizer.reboot("urn:publicid:IDN+primo+sliver+nobody")
    with pytest.raises(EmuError, match="no such link"):
        node.realizer.set_link_state("urn:publicid:IDN+primo+sliver+nolink", False)
    assert node.realizer.status("urn:publicid:IDN+primo+sliver+nobody") is None
