"""Bandwidth shaping: the qdiscs the kernel reports, and the rate a real TCP flow (iperf3) gets."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest
from tests.emu.fixtures import iperf_mbps

from primogeni.emu import links, netns, tc
from primogeni.errors import EmuError


def test_default_burst_is_ten_milliseconds_of_traffic_but_at_least_16_kib() -> None:
    assert tc.default_burst(20_000) == 25_000
    assert tc.default_burst(1_000) == 16 * 1024
    with pytest.raises(EmuError):
        tc.default_burst(0)


def _pair(netns_factory: Callable[..., str]) -> tuple[str, str]:
    """Two namespaces joined by a veth: 10.77.0.1 (``primo-tx``) and 10.77.0.2 (``primo-rx``)."""
    left, right = netns_factory("tx"), netns_factory("rx")
    with netns.iproute(left) as ipr:
        links.add_veth(ipr, "primo-tx", "primo-rx", peer_netns=right, up=True)
        links.add_address(ipr, "primo-tx", ipaddress.IPv4Interface("10.77.0.1/24"))
    with netns.iproute(right) as ipr:
        links.set_up(ipr, "primo-rx")
        links.add_address(ipr, "primo-rx", ipaddress.IPv4Interface("10.77.0.2/24"))
    return left, right


def _assert_shaped(left: str, right: str, rate_mbps: float, qdisc: str) -> None:
    """A TCP flow gets ``rate_mbps`` within 15 %, slow start left out.

    A shaper can only ever slow a flow down, and a busy machine can only slow it further (a descheduled iperf3
    sends nothing for a while), so a measurement above the band fails at once, one below it is taken again, up
    to three times: a shaper that is too slow still fails every time.
    """
    seen = []
    for _ in range(3):
        measured = iperf_mbps(left, right, "10.77.0.2", 3, omit=1)
        seen.append(round(measured, 1))
        assert measured <= rate_mbps * 1.15, f"{measured:.1f} Mbit/s through a {rate_mbps:g} Mbit/s {qdisc}"
        if measured >= rate_mbps * 0.85:
            return
    pytest.fail(f"{seen} Mbit/s through a {rate_mbps:g} Mbit/s {qdisc}")


@pytest.mark.root
def test_tbf_limits_a_tcp_flow_to_the_rate(netns_factory: Callable[..., str]) -> None:
    left, right = _pair(netns_factory)
    with netns.iproute(left) as ipr:
        assert tc.rate_of(ipr, "primo-tx") is None
        tc.shape(ipr, "primo-tx", 20_000)
        assert tc.rate_of(ipr, "primo-tx") == 20_000
    _assert_shaped(left, right, 20, "tbf")
    with netns.iproute(left) as ipr:
        tc.clear(ipr, "primo-tx")
        tc.clear(ipr, "primo-tx")
        assert tc.rate_of(ipr, "primo-tx") is None
    assert iperf_mbps(left, right, "10.77.0.2", 1) > 40  # and without it the veth is far faster


@pytest.mark.root
def test_htb_limits_a_tcp_flow_to_the_rate(netns_factory: Callable[..., str]) -> None:
    left, right = _pair(netns_factory)
    with netns.iproute(left) as ipr:
        tc.shape_htb(ipr, "primo-tx", 10_000)
        assert tc.rate_of(ipr, "primo-tx") == 10_000
        tc.shape(ipr, "primo-tx", 30_000)  # one root qdisc replaces the other
        assert tc.rate_of(ipr, "primo-tx") == 30_000
        tc.shape_htb(ipr, "primo-tx", 10_000)
    _assert_shaped(left, right, 10, "htb class")


@pytest.mark.root
def test_shaping_a_missing_device_names_it(netns_factory: Callable[..., str]) -> None:
    ns = netns_factory()
    with netns.iproute(ns) as ipr:
        with pytest.raises(EmuError, match="primo-none"):
            tc.shape(ipr, "primo-none", 1000)
        with pytest.raises(EmuError):
            tc.rate_of(ipr, "primo-none")
