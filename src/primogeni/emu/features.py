"""What this machine can do for the substrate, found by trying it rather than by reading version numbers.

:func:`detect` makes a scratch namespace ``primo-probe-<pid>``, creates in it one device of each
kind (veth, VXLAN, gretap), one root qdisc of each kind (tbf, htb, netem, fq_codel), a patch
(ingress redirects, :mod:`primogeni.emu.patch`) and an nftables table, removes the namespace, and
looks for the programs the substrate runs (``shutil.which``) and the cgroup layout
(:meth:`primogeni.emu.cgroups.Cgroups.detect`). The result is cached per process.
:meth:`Features.missing` and :meth:`Features.describe` say what is unavailable and what that means
for experiments. Probing needs root (it makes a namespace).
"""

from __future__ import annotations

import os
import shutil
import threading
from dataclasses import asdict, dataclass, fields
from typing import Any

from pyroute2 import IPRoute  # type: ignore[import-untyped, unused-ignore]
from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped, unused-ignore]

from primogeni.emu import links, netns, patch
from primogeni.emu.cgroups import Cgroups
from primogeni.emu.nft import Nft
from primogeni.emu.tc import TC_H_ROOT
from primogeni.errors import EmuError

# feature -> what an experiment loses without it
CONSEQUENCES = {
    "vxlan": "links between physical nodes cannot be made (no VXLAN tunnels)",
    "gretap": "gretap tunnels are not available (VXLAN is used instead)",
    "tbf": "link bandwidth limits are not enforced",
    "htb": "bandwidth limits on interfaces shared by several links are not enforced",
    "netem": "link latency and loss are not emulated",
    "fq_codel": "fq_codel queues are not available (the default queue is used)",
    "nftables": "the control network cannot be set up (no NAT of sliver ports)",
    "cgroup_version": "CPU and memory limits of slivers are not enforced",
    "sshd": "slivers have no SSH server (logins through the sliver's port do not work)",
    "iperf3": "throughput checks with iperf3 cannot run",
    "nsenter": "`primo exec` cannot enter slivers",
    "redirect": "two-sliver links on one node are bridges (slower to delete) instead of patches",
}
PROGRAMS = {"sshd": ("sshd", "/usr/sbin/sshd"), "iperf3": ("iperf3",), "nsenter": ("nsenter",)}
# root qdiscs to try, with the parameters each needs (rate in bytes/s, latency in µs)
QDISCS: dict[str, dict[str, Any]] = {
    "tbf": {"rate": 125_000, "burst": 16_384, "latency": 50_000},
    "htb": {"default": 0x10},
    "netem": {"delay": 1_000},
    "fq_codel": {},
}


@dataclass(frozen=True)
class Features:
    """What the kernel and the machine offer. Program fields hold the program's path, or ``None``."""

    vxlan: bool
    gretap: bool
    tbf: bool
    htb: bool
    netem: bool
    fq_codel: bool
    nftables: bool
    cgroup_version: str | None  # "v1" | "v2" | None
    sshd: str | None
    iperf3: str | None
    nsenter: str | None
    redirect: bool = True  # tc ingress qdisc + u32 + mirred: two-member links as patches

    def missing(self) -> list[str]:
        """Names of the features this machine lacks, in field order."""
        return [f.name for f in fields(self) if not getattr(self, f.name)]

    def describe(self) -> str:
        """One line per feature: what is there, and for what is missing, what that means."""
        lines = []
        for f in fields(self):
            value = getattr(self, f.name)
            if not value:
                lines.append(f"{f.name}: missing — {CONSEQUENCES[f.name]}")
            elif value is True:
                lines.append(f"{f.name}: yes")
            else:
                lines.append(f"{f.name}: {value}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """Plain values (JSON and XML-RPC safe: ``None`` becomes ``""``) for the agent's GetVersion."""
        return {key: ("" if value is None else value) for key, value in asdict(self).items()}


_cached: Features | None = None
_lock = threading.Lock()


def detect(*, refresh: bool = False) -> Features:
    """Probe the machine (once per process; ``refresh`` probes again)."""
    global _cached
    with _lock:
        if _cached is None or refresh:
            _cached = _probe()
        return _cached


def _probe() -> Features:
    name = f"primo-probe-{os.getpid()}"
    netns.remove(name)  # a leftover of an earlier process with this pid
    netns.create(name)
    try:
        with netns.iproute(name) as ipr:
            links.add_veth(ipr, "primo-probe0", "primo-probe1", up=True)
            kernel: dict[str, Any] = {
                "vxlan": _can_create(ipr, links.add_vxlan, "primo-probex", 4242, local="127.0.0.1"),
                "gretap": _can_create(ipr, links.add_gretap, "primo-probeg", 4242, local="127.0.0.1",
                                      remote="127.0.0.2"),
            }
            for kind, params in QDISCS.items():
                kernel[kind] = _can_qdisc(ipr, "primo-probe0", kind, params)
            kernel["redirect"] = _can_create(ipr, patch.patch, "primo-probe0", "primo-probe1")
        kernel["nftables"] = _has_nftables(name)
    finally:
        netns.remove(name)
    programs: dict[str, Any] = {name: _which(*candidates) for name, candidates in PROGRAMS.items()}
    return Features(**kernel, cgroup_version=_cgroup_version(), **programs)


def _can_create(ipr: IPRoute, make: Any, *args: Any, **kwargs: Any) -> bool:
    try:
        make(ipr, *args, **kwargs)
    except EmuError:  # FeatureMissing (EOPNOTSUPP), or the kernel refusing the device some other way
        return False
    return True


def _can_qdisc(ipr: IPRoute, ifname: str, kind: str, params: dict[str, Any]) -> bool:
    idx = links.index(ipr, ifname)
    try:
        ipr.tc("add", kind, index=idx, handle=0x10000, **params)
    except NetlinkError:
        return False
    try:
        ipr.tc("del", index=idx, parent=TC_H_ROOT)
    except NetlinkError as exc:
        raise EmuError(f"cannot remove the probe {kind} qdisc: {exc}", ifname) from exc
    return True


def _has_nftables(ns: str) -> bool:
    try:
        with Nft(ns) as nft:
            nft.run("add table inet primo_probe\nadd chain inet primo_probe c "
                    "{ type nat hook postrouting priority srcnat; policy accept; }\n")
    except EmuError:  # FeatureMissing (no libnftables) included
        return False
    return True


def _cgroup_version() -> str | None:
    try:
        return Cgroups.detect().version
    except (EmuError, OSError):
        return None


def _which(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or (name if os.path.isabs(name) and os.access(name, os.X_OK) else None)
        if found:
            return found
    return None
