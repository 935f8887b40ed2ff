"""Patches: two devices joined without a bridge, each one's received frames sent out of the other.

A link with exactly two members on one node needs no bridge: an ``ingress`` qdisc on each member's
host-side veth with one match-all ``u32`` filter whose ``mirred`` action redirects every frame to the
egress of the other member (``tc filter … action mirred egress redirect dev PEER``). Frames still
leave through the peer's root qdisc, so tbf shaping applies as on a bridge; device counters, up/down
and carrier work as before. What it saves is the bridge itself: this kernel spends 16–40 ms deleting
each bridge (RCU grace periods under the rtnl lock, even in a batch), while a patch goes with its
devices, and a bridge hop costs more than a redirect on the data path.

Requests are encoded here (see :mod:`primogeni.emu.netlink`): a patch is four requests, ~50 µs each
of Python. :func:`redirect_of` reads a device's redirect back (through pyroute2: it parses a dump).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from typing import Any

from pyroute2 import IPRoute  # type: ignore[import-untyped, unused-ignore]
from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped, unused-ignore]

from primogeni.emu import links
from primogeni.emu.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, fail, nla, nla_str, talk
from primogeni.errors import EmuError, FeatureMissing

RTM_NEWQDISC, RTM_DELQDISC, RTM_NEWTFILTER = 36, 37, 44
TCA_KIND, TCA_OPTIONS = 1, 2
TC_H_INGRESS = 0xFFFFFFF1
INGRESS_HANDLE = 0xFFFF0000  # ffff:
TCA_U32_SEL, TCA_U32_ACT = 5, 7
TC_U32_TERMINAL = 1
TCA_ACT_KIND, TCA_ACT_OPTIONS = 1, 2
TCA_MIRRED_PARMS = 2
TC_ACT_STOLEN = 4
TCA_EGRESS_REDIR = 1
ETH_P_ALL = 0x0003
PATCH_PRIO = 1
PATCH_HANDLE = 0x80000800  # u32 800::800, fixed so that a second patch replaces the first

_TCMSG = struct.Struct("=BxxxiIII")
_U32_SEL = struct.Struct("=BBBxHHhhI")
_U32_KEY = struct.Struct("=IIii")
_MIRRED = struct.Struct("=IIiiiiI")


def _tcmsg(index: int, handle: int, parent: int, info: int = 0) -> bytes:
    return _TCMSG.pack(socket.AF_UNSPEC, index, handle, parent, info)


def _fail(exc: NetlinkError, device: links.Device, action: str) -> EmuError:
    code = int(exc.code)
    if code in (errno.ENOENT, errno.EOPNOTSUPP):
        return FeatureMissing(f"cannot {action}: this kernel lacks the ingress qdisc, u32 or mirred "
                              f"({os.strerror(code)})", str(device))
    return fail(exc, str(device), action)


def _filter_body(index: int, target: int) -> bytes:
    """A match-all u32 filter on ``index``'s ingress whose one action redirects to ``target``'s egress."""
    selector = _U32_SEL.pack(TC_U32_TERMINAL, 0, 1, 0, 0, 0, 0, 0) + _U32_KEY.pack(0, 0, 0, 0)
    mirred = _MIRRED.pack(0, 0, TC_ACT_STOLEN, 0, 0, TCA_EGRESS_REDIR, target)
    action = nla(1, nla_str(TCA_ACT_KIND, "mirred") + nla(TCA_ACT_OPTIONS, nla(TCA_MIRRED_PARMS, mirred)))
    options = nla(TCA_U32_SEL, selector) + nla(TCA_U32_ACT, action)
    info = (PATCH_PRIO << 16) | socket.htons(ETH_P_ALL)
    return _tcmsg(index, PATCH_HANDLE, INGRESS_HANDLE, info) + nla_str(TCA_KIND, "u32") + nla(TCA_OPTIONS, options)


def _redirect(ipr: IPRoute, idx: int, to: int, device: links.Device, target: links.Device) -> None:
    try:
        talk(ipr, RTM_NEWQDISC, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
             _tcmsg(idx, INGRESS_HANDLE, TC_H_INGRESS) + nla_str(TCA_KIND, "ingress"))
    except NetlinkError as exc:
        if int(exc.code) != errno.EEXIST:
            raise _fail(exc, device, "add the ingress qdisc") from exc
    try:
        talk(ipr, RTM_NEWTFILTER, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, _filter_body(idx, to))
    except NetlinkError as exc:
        raise _fail(exc, device, f"redirect its frames to device {target}") from exc


def redirect(ipr: IPRoute, device: links.Device, target: links.Device) -> None:
    """Send every frame ``device`` receives out of ``target`` (replacing an earlier redirect)."""
    _redirect(ipr, links.index_of(ipr, device), links.index_of(ipr, target), device, target)


def patch(ipr: IPRoute, a: links.Device, b: links.Device) -> None:
    """Join ``a`` and ``b``: what either receives leaves through the other (two look-ups, four requests)."""
    ia, ib = links.index_of(ipr, a), links.index_of(ipr, b)
    _redirect(ipr, ia, ib, a, b)
    _redirect(ipr, ib, ia, b, a)


def unpatch(ipr: IPRoute, device: links.Device) -> None:
    """Remove ``device``'s ingress qdisc and so its redirect; nothing happens when there is none."""
    idx = links.index(ipr, device)
    if idx is None:
        return
    try:
        talk(ipr, RTM_DELQDISC, NLM_F_ACK, _tcmsg(idx, INGRESS_HANDLE, TC_H_INGRESS))
    except NetlinkError as exc:
        if int(exc.code) not in (errno.ENOENT, errno.EINVAL):
            raise _fail(exc, device, "remove the ingress qdisc") from exc


def _mirred_target(message: Any) -> int | None:
    options = message.get_attr("TCA_OPTIONS")
    actions = options.get_attr("TCA_U32_ACT") if options is not None else None
    for action in (actions.get("attrs", []) if actions is not None else []):
        body = action[1]
        if body.get_attr("TCA_ACT_KIND") != "mirred":
            continue
        parms = body.get_attr("TCA_ACT_OPTIONS").get_attr("TCA_MIRRED_PARMS")
        if parms.get("eaction") == TCA_EGRESS_REDIR:
            return int(parms.get("ifindex"))
    return None


def redirect_of(ipr: IPRoute, device: links.Device) -> int | None:
    """The index of the device ``device``'s frames are redirected to, or ``None`` when they are not."""
    idx = links.index_of(ipr, device)
    try:
        filters = ipr.get_filters(index=idx, parent=INGRESS_HANDLE)
    except NetlinkError as exc:
        if int(exc.code) in (errno.ENOENT, errno.EINVAL):
            return None
        raise _fail(exc, device, "read its ingress filters") from exc
    for message in filters:
        if message.get_attr("TCA_KIND") == "u32" and message.get_attr("TCA_OPTIONS") is not None:
            target = _mirred_target(message)
            if target is not None:
                return target
    return None


__all__ = ["patch", "redirect", "redirect_of", "unpatch"]
