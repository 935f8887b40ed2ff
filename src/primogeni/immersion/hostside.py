"""The real hosts' side of an immersion: their TAPs, their addressing, and TAPs handed to us.

:func:`make_tap` makes a TAP in the simulator's namespace, moves it into the host's namespace
(:meth:`TapEndpoint.create <primogeni.emu.packetio.TapEndpoint.create>`) and renames it there to
the host's interface name (``eth1``): the device is born ``primo…`` so that a name left in
our namespace is always recognisable, and the host sees the name it expects.
:func:`configure_host` gives that interface the model's address and prefix and a route to the
model's address space via the simulated gateway. Both go with the TAP: the kernel removes a TAP
when its last descriptor closes, and its addresses and routes with it.

:func:`adopt_tap` wraps a TAP descriptor made by someone else (a parent process, e.g. the node
agent, made it for a container and passed it down): it asks the descriptor what it is
(``TUNGETIFF``) and needs no privilege at all.
"""

from __future__ import annotations

import array
import errno
import fcntl
import os
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped, unused-ignore]

from primogeni.emu import links
from primogeni.emu import netns as namespaces
from primogeni.emu.packetio import IFF_TAP, IFF_VNET_HDR, TUNSETVNETHDRSZ, VNET_HDR_LEN, TapEndpoint
from primogeni.errors import EmuError

TUNGETIFF = 0x800454D2
TUNGETVNETHDRSZ = 0x800454D7
DEFAULT_IFNAME = "eth1"
HOST_MTU = 1500
IFNAMSIZ = 15  # usable characters of an interface name


def tap_name(index: int, pid: int | None = None) -> str:
    """The name a TAP is born with: ``primo<pid hex>t<index>`` (unique on the machine while we live)."""
    name = f"primo{os.getpid() if pid is None else pid:x}t{index}"
    if len(name) > IFNAMSIZ:
        raise EmuError(f"too many TAPs for one process (index {index})", name)
    return name


def check_ifname(name: str) -> None:
    """A usable interface name (what the kernel's ``dev_valid_name`` accepts)."""
    if not name or len(name) > IFNAMSIZ or name in (".", "..") or any(c in name for c in "/: \t\n\0"):
        raise EmuError("not a valid interface name (1-15 characters, no '/', ':' or spaces)", repr(name))


def _where(name: str, ns: str | Path) -> str:
    return f"{name} in {ns}"


def make_tap(host_netns: str | Path, ifname: str = DEFAULT_IFNAME, *, index: int = 0, vnet: bool = True,
             mtu: int = HOST_MTU) -> TapEndpoint:
    """A TAP whose descriptor we keep and whose device is ``ifname`` in ``host_netns``, up, ``mtu``.

    ``vnet``: virtio-net headers and TSO (see :mod:`primogeni.emu.packetio`). ``index`` makes the
    name it is born with unique among this process's TAPs (:func:`tap_name`).
    """
    check_ifname(ifname)
    name = tap_name(index)
    ep = TapEndpoint.create(name, host_netns=host_netns, vnet=vnet, mtu=mtu)
    try:
        if ifname != name:
            with namespaces.iproute(host_netns) as ipr:
                if links.exists(ipr, ifname):
                    raise EmuError("the host has an interface of this name already", _where(ifname, host_netns))
                links.set_down(ipr, name)  # a device is renamed only while down
                try:
                    ipr.link("set", index=links.index(ipr, name), ifname=ifname)
                except NetlinkError as exc:
                    raise EmuError(f"cannot rename the TAP {name} to {ifname}: {os.strerror(int(exc.code))}",
                                   _where(name, host_netns)) from exc
                links.set_up(ipr, ifname)
            ep.name = ifname
    except BaseException:
        ep.close()
        raise
    return ep


def configure_host(host_netns: str | Path, ifname: str, address: IPv4Interface, gateway: IPv4Address,
                   space: IPv4Network | None) -> None:
    """Give ``ifname`` in ``host_netns`` the model's ``address`` (with its prefix), and a route to
    ``space`` (the model's address space) via ``gateway`` when the link's prefix does not cover it."""
    with namespaces.iproute(host_netns) as ipr:
        links.add_address(ipr, ifname, address)
        if space is None or space.subnet_of(address.network):
            return
        try:
            ipr.route("add", dst=str(space), gateway=str(gateway), oif=links.index(ipr, ifname))
        except NetlinkError as exc:
            code = int(exc.code)
            why = ("the host has a route to it already" if code == errno.EEXIST
                   else f"{os.strerror(code)} (errno {code})")
            raise EmuError(f"cannot add the route to {space} via {gateway}: {why}",
                           _where(ifname, host_netns)) from exc


def adopt_tap(fd: int) -> TapEndpoint:
    """An endpoint on the TAP descriptor ``fd`` (inherited; closed with the endpoint).

    Its device name and whether it carries virtio-net headers come from the descriptor; it is
    made non-blocking and not inheritable. Needs no privilege.
    """
    what = f"descriptor {fd}"
    try:
        os.fstat(fd)
    except OSError as exc:
        raise EmuError(f"not an open descriptor: {exc.strerror}", what) from exc
    ifreq = bytearray(40)
    try:
        fcntl.ioctl(fd, TUNGETIFF, ifreq)
    except OSError as exc:
        raise EmuError(f"not an attached TUN/TAP device: TUNGETIFF failed: {exc.strerror}", what) from exc
    name = bytes(ifreq[:16]).split(b"\0", 1)[0].decode(errors="replace")
    flags = int.from_bytes(ifreq[16:18], "little")
    if not flags & IFF_TAP:
        raise EmuError("a TUN device (IP packets), not a TAP (Ethernet frames)", f"{name} ({what})")
    vnet = bool(flags & IFF_VNET_HDR)
    if vnet:
        size = array.array("i", [0])
        try:
            fcntl.ioctl(fd, TUNGETVNETHDRSZ, size)
            if size[0] != VNET_HDR_LEN:
                fcntl.ioctl(fd, TUNSETVNETHDRSZ, array.array("i", [VNET_HDR_LEN]))
        except OSError as exc:
            raise EmuError(f"cannot use its vnet header: {exc.strerror}", f"{name} ({what})") from exc
    os.set_blocking(fd, False)
    os.set_inheritable(fd, False)
    return TapEndpoint(fd, name, None, vnet)


__all__ = ["DEFAULT_IFNAME", "HOST_MTU", "adopt_tap", "check_ifname", "configure_host", "make_tap", "tap_name"]
