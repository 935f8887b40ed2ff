"""Patches: two host-side veths joined by ingress redirects, against the real kernel."""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Callable

import pytest
from tests.emu.fixtures import iperf_mbps

from primogeni.emu import links, netns, patch, tc
from primogeni.errors import EmuError


def _hosts(netns_factory: Callable[..., str]) -> tuple[str, str, str]:
    """A node namespace with veths ``primo-pa`` / ``primo-pb`` whose peers are eth0 of two host namespaces
    (10.79.0.1 and 10.79.0.2); nothing joins them yet."""
    node, left, right = netns_factory("node"), netns_factory("a"), netns_factory("b")
    with netns.iproute(node) as ipr:
        for device, host, address in (("primo-pa", left, "10.79.0.1/24"), ("primo-pb", right, "10.79.0.2/24")):
            links.add_veth(ipr, device, "eth0", peer_netns=host, up=True)
            with netns.iproute(host) as hipr:
                links.set_up(hipr, "eth0")
                links.add_address(hipr, "eth0", ipaddress.IPv4Interface(address))
    return node, left, right


def _ping(ns: str, address: str, tries: int = 1) -> bool:
    """Whether ``address`` answers one of ``tries`` pings (a first one may wait for ARP on a busy machine)."""
    return any(netns.run(ns, ["ping", "-c", "1", "-W", "1", address], stdout=subprocess.DEVNULL).returncode == 0
               for _ in range(tries))


@pytest.mark.root
def test_a_patch_carries_frames_both_ways_and_goes_when_undone(netns_factory: Callable[..., str]) -> None:
    node, left, right = _hosts(netns_factory)
    assert not _ping(left, "10.79.0.2")
    with netns.iproute(node) as ipr:
        assert patch.redirect_of(ipr, "primo-pa") is None
        patch.patch(ipr, "primo-pa", "primo-pb")
        patch.patch(ipr, "primo-pa", "primo-pb")  # again: replaced, not doubled
        assert patch.redirect_of(ipr, "primo-pa") == links.index(ipr, "primo-pb")
        assert patch.redirect_of(ipr, "primo-pb") == links.index(ipr, "primo-pa")
        filters = ipr.get_filters(index=links.index(ipr, "primo-pa"), parent=patch.INGRESS_HANDLE)
        assert [f["handle"] for f in filters].count(patch.PATCH_HANDLE) == 1
    assert _ping(left, "10.79.0.2", 3) and _ping(right, "10.79.0.1", 3)
    with netns.iproute(node) as ipr:
        links.set_down(ipr, "primo-pb")  # a member down: nothing passes
        assert not _ping(left, "10.79.0.2")
        links.set_up(ipr, "primo-pb")
        assert _ping(left, "10.79.0.2", 3)
        patch.unpatch(ipr, "primo-pa")
        patch.unpatch(ipr, "primo-pa")  # idempotent
        assert patch.redirect_of(ipr, "primo-pa") is None
    assert not _ping(left, "10.79.0.2")


@pytest.mark.root
def test_redirected_frames_leave_through_the_targets_shaper(netns_factory: Callable[..., str]) -> None:
    node, left, right = _hosts(netns_factory)
    with netns.iproute(node) as ipr:
        patch.patch(ipr, "primo-pa", "primo-pb")
        tc.shape(ipr, "primo-pb", 8_000)  # egress toward right: 8 Mbit/s
    mbps = iperf_mbps(left, right, "10.79.0.2", 2, omit=1)
    assert mbps <= 8 * 1.15, f"{mbps:.1f} Mbit/s through a patch whose target is shaped to 8 Mbit/s"
    assert mbps >= 8 * 0.5, f"{mbps:.1f} Mbit/s: the patch barely carried TCP"


@pytest.mark.root
def test_patching_a_missing_device_names_it(netns_factory: Callable[..., str]) -> None:
    node = netns_factory()
    with netns.iproute(node) as ipr:
        links.add_veth(ipr, "primo-px", "primo-py", up=True)
        with pytest.raises(EmuError, match="primo-none"):
            patch.patch(ipr, "primo-px", "primo-none")
        with pytest.raises(EmuError, match="primo-none"):
            patch.redirect_of(ipr, "primo-none")
        patch.unpatch(ipr, "primo-none")  # nothing to undo
        assert patch.redirect_of(ipr, "primo-px") is None
