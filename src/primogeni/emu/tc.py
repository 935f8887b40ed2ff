"""Bandwidth limits on interfaces: a tbf root qdisc, or htb with one default class, through netlink.

Rates are in kbit/s (1 kbit = 1000 bit). :func:`shape` replaces whatever root qdisc the interface had
with a token bucket (tbf): the rate, a burst (by default 10 ms worth of traffic, at least 16 KiB, so
that timer granularity and GSO packets do not cut the rate) and a queue bounded by ``latency_ms``.
:func:`shape_htb` does the same with htb (root ``1:``, one class ``1:10`` that all traffic falls
into), the form to extend when several links share one interface. :func:`rate_of` reads the rate
back from the kernel. Latency and loss need netem, which this kernel lacks (see ``features``).
"""

from __future__ import annotations

import errno
from typing import Any

from pyroute2 import IPRoute  # type: ignore[import-untyped, unused-ignore]
from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped, unused-ignore]

from primogeni.emu import links
from primogeni.errors import EmuError, FeatureMissing

TC_H_ROOT = 0xFFFFFFFF
ROOT_HANDLE = 0x10000  # 1:
HTB_CLASS = 0x10010  # 1:10, htb's default class
HTB_DEFAULT_MINOR = 0x10
MIN_BURST_BYTES = 16 * 1024
BURST_SECONDS = 0.010


def _bytes_per_second(rate_kbps: int) -> int:
    if not isinstance(rate_kbps, int) or rate_kbps <= 0:
        raise EmuError(f"a rate must be a positive number of kbit/s, not {rate_kbps!r}")
    return rate_kbps * 1000 // 8


def default_burst(rate_kbps: int) -> int:
    """The burst used when none is given: 10 ms worth of traffic, at least 16 KiB."""
    return max(int(_bytes_per_second(rate_kbps) * BURST_SECONDS), MIN_BURST_BYTES)


def _tc(ipr: IPRoute, ifname: str, action: str, *args: Any, **kwargs: Any) -> Any:
    try:
        return ipr.tc(*args, **kwargs)
    except NetlinkError as exc:
        code = int(exc.code)
        if code in (errno.ENOENT, errno.EOPNOTSUPP) and args and args[0] in ("replace", "add") and len(args) > 1:
            raise FeatureMissing(f"cannot {action}: this kernel has no {args[1]} qdisc ({exc})", ifname) from exc
        raise EmuError(f"cannot {action}: {exc}", ifname) from exc


def shape(ipr: IPRoute, ifname: str, rate_kbps: int, *, burst_bytes: int | None = None,
          latency_ms: float = 50) -> None:
    """Limit what ``ifname`` sends to ``rate_kbps`` with a tbf root qdisc (replacing the old root qdisc)."""
    rate = _bytes_per_second(rate_kbps)
    burst = burst_bytes if burst_bytes is not None else default_burst(rate_kbps)
    if burst <= 0 or latency_ms <= 0:
        raise EmuError(f"burst ({burst}) and latency ({latency_ms} ms) must be positive", ifname)
    idx = links.index_of(ipr, ifname)
    clear(ipr, ifname)
    _tc(ipr, ifname, f"shape to {rate_kbps} kbit/s", "add", "tbf", index=idx, handle=ROOT_HANDLE, rate=rate,
        burst=burst, latency=int(latency_ms * 1000))


def shape_htb(ipr: IPRoute, ifname: str, rate_kbps: int) -> None:
    """Limit ``ifname`` to ``rate_kbps`` with htb: root ``1:`` whose default class ``1:10`` has that rate."""
    rate = _bytes_per_second(rate_kbps)
    idx = links.index_of(ipr, ifname)
    clear(ipr, ifname)
    _tc(ipr, ifname, "add the htb root qdisc", "add", "htb", index=idx, handle=ROOT_HANDLE,
        default=HTB_DEFAULT_MINOR)
    burst = default_burst(rate_kbps)
    _tc(ipr, ifname, f"add an htb class of {rate_kbps} kbit/s", "add-class", "htb", index=idx, handle=HTB_CLASS,
        parent=ROOT_HANDLE, rate=rate, ceil=rate, burst=burst, cburst=burst)


def clear(ipr: IPRoute, ifname: str) -> None:
    """Remove the root qdisc (back to the default); nothing happens when there is none of ours."""
    idx = links.index_of(ipr, ifname)
    try:
        ipr.tc("del", index=idx, parent=TC_H_ROOT)
    except NetlinkError as exc:
        if int(exc.code) not in (errno.ENOENT, errno.EINVAL):
            raise EmuError(f"cannot remove the root qdisc: {exc}", ifname) from exc


def _root_qdisc(ipr: IPRoute, idx: int, ifname: str) -> Any:
    try:
        qdiscs = ipr.get_qdiscs(index=idx)
    except NetlinkError as exc:
        raise EmuError(f"cannot read the qdiscs: {exc}", ifname) from exc
    for qdisc in qdiscs:
        if qdisc["index"] == idx and qdisc["parent"] == TC_H_ROOT:
            return qdisc
    return None


def rate_of(ipr: IPRoute, ifname: str) -> int | None:
    """The rate (kbit/s) the root qdisc limits ``ifname`` to, read from the kernel; ``None`` if unshaped."""
    idx = links.index_of(ipr, ifname)
    root = _root_qdisc(ipr, idx, ifname)
    if root is None:
        return None
    kind = root.get_attr("TCA_KIND")
    if kind == "tbf":
        parms = root.get_nested("TCA_OPTIONS", "TCA_TBF_PARMS")
        return round(int(parms["rate"]) * 8 / 1000) if parms else None
    if kind == "htb":
        try:
            classes = ipr.get_classes(index=idx)
        except NetlinkError as exc:
            raise EmuError(f"cannot read the htb classes: {exc}", ifname) from exc
        for cls in classes:
            if cls["handle"] == HTB_CLASS:
                parms = cls.get_nested("TCA_OPTIONS", "TCA_HTB_PARMS")
                rate64 = cls.get_nested("TCA_OPTIONS", "TCA_HTB_RATE64")
                rate = int(rate64) if rate64 else int(parms["rate"])
                return round(rate * 8 / 1000)
    return None
