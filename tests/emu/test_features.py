"""Feature detection: what it reports must match what the kernel and the tools really do."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable

import pytest

from primogeni.emu import features, links, netns
from primogeni.errors import FeatureMissing

SAMPLE = features.Features(vxlan=True, gretap=False, tbf=True, htb=True, netem=False, fq_codel=False,
                           nftables=True, cgroup_version=None, sshd="/usr/sbin/sshd", iperf3=None,
                           nsenter="/usr/bin/nsenter")


def test_missing_and_describe_say_what_is_lost() -> None:
    assert SAMPLE.missing() == ["gretap", "netem", "fq_codel", "cgroup_version", "iperf3"]
    text = SAMPLE.describe()
    assert "netem: missing — link latency and loss are not emulated" in text
    assert "cgroup_version: missing — CPU and memory limits of slivers are not enforced" in text
    assert "vxlan: yes" in text and "sshd: /usr/sbin/sshd" in text
    assert SAMPLE.as_dict()["iperf3"] == "" and SAMPLE.as_dict()["vxlan"] is True


def _tc_accepts(ns: str, *qdisc: str) -> bool:
    """Whether the ``tc`` program can put this root qdisc on a fresh veth in ``ns`` (an independent check)."""
    tc = shutil.which("tc")
    if tc is None:
        pytest.skip("the tc program (iproute2) is not installed")
    with netns.iproute(ns) as ipr:
        links.delete(ipr, "primo-fa")
        links.add_veth(ipr, "primo-fa", "primo-fb", up=True)
    done = netns.run(ns, [tc, "qdisc", "add", "dev", "primo-fa", "root", *qdisc], capture_output=True)
    return done.returncode == 0


@pytest.mark.root
def test_detection_matches_the_kernel(netns_factory: Callable[..., str]) -> None:
    found = features.detect(refresh=True)
    assert features.detect() is found  # cached
    assert not netns.exists(f"primo-probe-{os.getpid()}")  # the scratch namespace is gone
    ns = netns_factory()
    assert found.netem == _tc_accepts(ns, "netem", "delay", "1ms")
    assert found.fq_codel == _tc_accepts(ns, "fq_codel")
    assert found.tbf == _tc_accepts(ns, "tbf", "rate", "1mbit", "burst", "16k", "latency", "50ms")
    assert found.htb == _tc_accepts(ns, "htb", "default", "10")
    with netns.iproute(ns) as ipr:
        try:
            links.add_gretap(ipr, "primo-fg", 1, local="10.254.0.1", remote="10.254.0.2")
            gretap = True
        except FeatureMissing:
            gretap = False
        try:
            links.add_vxlan(ipr, "primo-fx", 1, local="10.254.0.1")
            vxlan = True
        except FeatureMissing:
            vxlan = False
    assert (found.gretap, found.vxlan) == (gretap, vxlan)
    filtered = netns.run(ns, ["tc", "qdisc", "add", "dev", "lo", "ingress"], capture_output=True).returncode == 0 \
        and netns.run(ns, ["tc", "filter", "add", "dev", "lo", "parent", "ffff:", "u32", "match", "u32", "0", "0",
                           "action", "mirred", "egress", "redirect", "dev", "lo"], capture_output=True).returncode == 0
    assert found.redirect == filtered  # iproute2's tc agrees that a patch can be made
    nft = shutil.which("nft")
    if nft is not None:
        made = netns.run(ns, [nft, "add table inet primo_f"], capture_output=True)
        assert found.nftables == (made.returncode == 0)
    assert found.iperf3 == shutil.which("iperf3")
    assert found.nsenter == shutil.which("nsenter")
    assert found.sshd is None or os.access(found.sshd, os.X_OK)
    if os.path.exists("/usr/sbin/sshd"):
        assert found.sshd is not None
    assert found.cgroup_version in ("v1", "v2", None)
    for name in found.missing():
        assert f"{name}: missing" in found.describe()


@pytest.mark.root
def test_probing_is_quick() -> None:
    start = time.perf_counter()
    features.detect(refresh=True)
    assert time.perf_counter() - start < 2.0
