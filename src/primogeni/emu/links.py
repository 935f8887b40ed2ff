"""Network devices through netlink: veth pairs, bridges, VXLAN and gretap tunnels, addresses, counters.

Every function takes a pyroute2 ``IPRoute`` first and acts in the namespace that ``IPRoute`` is bound
to (see :func:`primogeni.emu.netns.iproute`). Devices may be given by name or by index.

Speed: the agent builds hundreds of slivers per node, so the requests it makes per sliver (create
veth/bridge/vxlan, up/down, attach, isolate, address, route, delete, look up an index) are encoded
here with ``struct`` and sent on the ``IPRoute``'s own netlink socket, one request per call (the
kernel resolves ``IFLA_IFNAME`` itself, new devices are echoed back with their index, nothing dumps
all links to find one): ~50 µs of Python per request instead of ~500 µs through pyroute2's request
machinery. Reads that need parsing (counters, FDB, flags, addresses) go through pyroute2. An
``IPRoute`` must be used by one thread at a time.

Removals and additions are idempotent where the agent needs it (``delete``, ``add_address``, FDB
entries); creating a device that exists is an ``EmuError`` naming it, so name clashes show.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute  # type: ignore[import-untyped, unused-ignore]
from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped, unused-ignore]

from primogeni.emu import sys as esys
from primogeni.emu.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_ECHO, NLM_F_EXCL, NLM_F_REPLACE, NLMSG
from primogeni.emu.netlink import fail as _fail
from primogeni.emu.netlink import nla as _nla
from primogeni.emu.netlink import nla_ip4 as _nla_ip4
from primogeni.emu.netlink import nla_mac as _nla_mac
from primogeni.emu.netlink import nla_str as _nla_str
from primogeni.emu.netlink import nla_u32 as _nla_u32
from primogeni.emu.netlink import request as _request
from primogeni.emu.netlink import talk as _talk
from primogeni.errors import EmuError, FeatureMissing

IFF_UP = 0x1
ZERO_MAC = "00:00:00:00:00:00"
GRE_KEY = 0x2000  # the GRE "key present" flag as it appears on the wire (big endian)
Device = str | int  # an interface name or index


@dataclass(frozen=True)
class Counters:
    """Byte and packet counters of one interface, as the kernel counts them (IFLA_STATS64)."""

    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int
    rx_dropped: int
    tx_dropped: int


# -- raw rtnetlink -------------------------------------------------------------------------------

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 17, 18, 20, 24
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_LINKINFO, IFLA_NET_NS_FD = 1, 3, 4, 10, 18, 28
IFLA_GROUP = 27
IFLA_INFO_KIND, IFLA_INFO_DATA, IFLA_INFO_SLAVE_KIND, IFLA_INFO_SLAVE_DATA = 1, 2, 4, 5
VETH_INFO_PEER = 1
IFLA_BR_FORWARD_DELAY, IFLA_BR_STP_STATE = 1, 5
IFLA_BRPORT_ISOLATED = 33
IFLA_VXLAN_ID, IFLA_VXLAN_LINK, IFLA_VXLAN_LOCAL, IFLA_VXLAN_LEARNING, IFLA_VXLAN_PORT = 1, 3, 4, 7, 15
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_GATEWAY = 1, 5
RT_TABLE_MAIN, RTPROT_BOOT, RTN_UNICAST = 254, 3, 1

_IFINFO = struct.Struct("=BxHiII")
_IFADDR = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")


def _ifinfo(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return _IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, change)


def _reply_index(message: bytes | None) -> int | None:
    if message is None or len(message) < NLMSG.size + _IFINFO.size:
        return None
    return int(_IFINFO.unpack_from(message, NLMSG.size)[2])


def _name_attrs(name: Device) -> tuple[int, bytes]:
    """(ifinfomsg index, attributes) naming a device: its index, or its name for the kernel to resolve."""
    return (name, b"") if isinstance(name, int) else (0, _nla_str(IFLA_IFNAME, name))


def _setlink(ipr: IPRoute, name: Device, attrs: bytes = b"", flags: int = 0, change: int = 0) -> None:
    idx, naming = _name_attrs(name)
    _talk(ipr, RTM_NEWLINK, NLM_F_ACK, _ifinfo(idx, flags, change) + naming + attrs)


# -- looking devices up --------------------------------------------------------------------------

def index(ipr: IPRoute, name: Device) -> int | None:
    """The interface index of ``name``, or ``None`` when there is no such device (one request)."""
    if isinstance(name, int):
        return name
    reply = _request(name, "look up", _talk, ipr, RTM_GETLINK, 0, _ifinfo() + _nla_str(IFLA_IFNAME, name),
                     ignore=(errno.ENODEV,))
    return _reply_index(reply)


def index_of(ipr: IPRoute, name: Device) -> int:
    """The interface index of ``name``; ``EmuError`` naming it when there is no such device."""
    idx = index(ipr, name)
    if idx is None:
        raise EmuError("no such network device", str(name))
    return idx


def exists(ipr: IPRoute, name: Device) -> bool:
    """Whether the device is there (one request)."""
    idx, naming = _name_attrs(name)
    reply = _request(str(name), "look up", _talk, ipr, RTM_GETLINK, 0, _ifinfo(idx) + naming, ignore=(errno.ENODEV,))
    return reply is not None


def _get(ipr: IPRoute, name: Device) -> Any:
    """The device's link message parsed by pyroute2."""
    key = {"index": name} if isinstance(name, int) else {"ifname": name}
    msgs = _request(str(name), "read the device", ipr.link, "get", **key, ignore=(errno.ENODEV,))
    if not msgs:
        raise EmuError("no such network device", str(name))
    return msgs[0]


def names(ipr: IPRoute, prefix: str = "primo") -> list[str]:
    """Names of the devices starting with ``prefix``, sorted (one dump)."""
    found = (link.get("ifname") for link in _request("links", "list devices", ipr.link, "dump"))
    return sorted(n for n in found if n and n.startswith(prefix))


# -- creating devices ----------------------------------------------------------------------------

def _newlink(ipr: IPRoute, name: str, kind: str, data: bytes, *, mac: str | None = None, mtu: int | None = None,
             master: Device | None = None, up: bool = False, extra: bytes = b"") -> int:
    """Create device ``name`` of ``kind`` (one request, echoed back); returns its index."""
    attrs = _nla_str(IFLA_IFNAME, name)
    if mac is not None:
        attrs += _nla_mac(IFLA_ADDRESS, mac)
    if mtu is not None:
        attrs += _nla_u32(IFLA_MTU, mtu)
    if master is not None:
        attrs += _nla_u32(IFLA_MASTER, index_of(ipr, master))
    linkinfo = _nla_str(IFLA_INFO_KIND, kind) + (_nla(IFLA_INFO_DATA, data) if data else b"")
    body = _ifinfo(0, IFF_UP if up else 0, IFF_UP if up else 0) + attrs + extra + _nla(IFLA_LINKINFO, linkinfo)
    try:
        reply = _talk(ipr, RTM_NEWLINK, NLM_F_ACK | NLM_F_ECHO | NLM_F_CREATE | NLM_F_EXCL, body)
    except NetlinkError as exc:
        code = int(exc.code)
        if code == errno.EOPNOTSUPP:
            raise FeatureMissing(f"this kernel cannot create {kind} devices ({os.strerror(code)})", name) from exc
        if code == errno.EEXIST:
            raise EmuError(f"a device of this name exists already (creating a {kind})", name) from exc
        raise _fail(exc, name, f"create the {kind} device") from exc
    except OSError as exc:
        raise _fail(exc, name, f"create the {kind} device") from exc
    idx = _reply_index(reply)
    return idx if idx else index_of(ipr, name)  # kernels before 6.3 do not echo new links


def add_veth(ipr: IPRoute, name: str, peer: str, *, peer_netns: str | Path | None = None,
             peer_mac: str | None = None, mac: str | None = None, mtu: int | None = None,
             master: Device | None = None, up: bool = False, peer_index: int | None = None) -> int:
    """A veth pair ``name`` (here) / ``peer`` (in ``peer_netns``, or here); returns ``name``'s index.

    One netlink request: the peer is created directly inside ``peer_netns`` (IFLA_NET_NS_FD in the
    peer's info). ``master`` attaches ``name`` to a bridge and ``up`` brings it up in the same
    request. ``peer_index`` asks for the peer's interface index (in a fresh namespace, where only
    ``lo`` = 1 exists, 2 is free), so later requests in that namespace need no lookup. The peer
    starts down: the kernel cannot open a veth end before the pair is complete (``ENOTCONN``), so
    bring it up with an ``IPRoute`` in its namespace.
    """
    peer_attrs = _nla_str(IFLA_IFNAME, peer)
    if peer_mac is not None:
        peer_attrs += _nla_mac(IFLA_ADDRESS, peer_mac)
    if mtu is not None:
        peer_attrs += _nla_u32(IFLA_MTU, mtu)
    fd: int | None = None
    if peer_netns is not None:
        try:
            fd = os.open(esys.netns_path(peer_netns), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise EmuError("no such network namespace", str(peer_netns)) from None
        peer_attrs += _nla_u32(IFLA_NET_NS_FD, fd)
    try:
        data = _nla(VETH_INFO_PEER, _ifinfo(peer_index or 0) + peer_attrs)
        return _newlink(ipr, name, "veth", data, mac=mac, mtu=mtu, master=master, up=up)
    finally:
        if fd is not None:
            os.close(fd)


def add_bridge(ipr: IPRoute, name: str, *, mtu: int | None = None) -> int:
    """A bridge without STP and with forward delay 0, brought up; returns its index."""
    data = _nla_u32(IFLA_BR_STP_STATE, 0) + _nla_u32(IFLA_BR_FORWARD_DELAY, 0)
    return _newlink(ipr, name, "bridge", data, mtu=mtu, up=True)


def add_vxlan(ipr: IPRoute, name: str, vni: int, *, local: str, dev: Device | None = None, port: int = 4789,
              mtu: int | None = None, master: Device | None = None, up: bool = True) -> int:
    """A VXLAN device, brought up (learning on, no multicast group: remotes are all-zero FDB entries).

    ``local`` is the underlay address the tunnel sends from; ``dev`` the underlay device.
    """
    if not 0 < vni < (1 << 24):
        raise EmuError(f"VXLAN id {vni} is outside 1..16777215", name)
    data = (_nla_u32(IFLA_VXLAN_ID, vni) + _nla_ip4(IFLA_VXLAN_LOCAL, local)
            + _nla(IFLA_VXLAN_PORT, struct.pack(">H", port)) + _nla(IFLA_VXLAN_LEARNING, b"\1"))
    if dev is not None:
        data += _nla_u32(IFLA_VXLAN_LINK, index_of(ipr, dev))
    return _newlink(ipr, name, "vxlan", data, mtu=mtu, master=master, up=up)


def add_gretap(ipr: IPRoute, name: str, key: int, *, local: str, remote: str, mtu: int | None = None,
               master: Device | None = None, up: bool = True) -> int:
    """A gretap device with ``key`` both ways, brought up; ``FeatureMissing`` when the kernel has no gretap."""
    opts: dict[str, Any] = {"gre_local": str(local), "gre_remote": str(remote), "gre_ikey": key, "gre_okey": key,
                            "gre_iflags": GRE_KEY, "gre_oflags": GRE_KEY}
    if mtu is not None:
        opts["mtu"] = mtu
    if master is not None:
        opts["master"] = index_of(ipr, master)
    if up:
        opts.update(flags=IFF_UP, change=IFF_UP)
    try:
        ipr.link("add", ifname=name, kind="gretap", **opts)
    except NetlinkError as exc:
        if int(exc.code) == errno.EOPNOTSUPP:
            raise FeatureMissing("this kernel cannot create gretap devices (GRE is not built)", name) from exc
        if int(exc.code) == errno.EEXIST:
            raise EmuError("a device of this name exists already (creating a gretap)", name) from exc
        raise _fail(exc, name, "create the gretap device") from exc
    return index_of(ipr, name)


def delete(ipr: IPRoute, name: Device) -> None:
    """Remove the device (a veth takes its peer with it); nothing happens when it is not there."""
    idx, naming = _name_attrs(name)
    _request(str(name), "delete the device", _talk, ipr, RTM_DELLINK, NLM_F_ACK, _ifinfo(idx) + naming,
             ignore=(errno.ENODEV,))


# -- changing devices ----------------------------------------------------------------------------

def set_up(ipr: IPRoute, name: Device) -> None:
    _request(str(name), "bring the device up", _setlink, ipr, name, flags=IFF_UP, change=IFF_UP)


def set_group(ipr: IPRoute, name: Device, group: int) -> bool:
    """Move the device into device ``group`` (one request); ``False`` when there is no such device."""
    try:
        _setlink(ipr, name, _nla_u32(IFLA_GROUP, group))
    except NetlinkError as exc:
        if int(exc.code) == errno.ENODEV:
            return False
        raise _fail(exc, str(name), f"move the device to group {group}") from exc
    return True


def set_down(ipr: IPRoute, name: Device) -> None:
    _request(str(name), "bring the device down", _setlink, ipr, name, flags=0, change=IFF_UP)


def is_up(ipr: IPRoute, name: Device) -> bool:
    """Whether the device is administratively up (IFF_UP)."""
    return bool(_get(ipr, name)["flags"] & IFF_UP)


def set_master(ipr: IPRoute, name: Device, bridge: Device | None) -> None:
    """Attach the device to ``bridge`` (``None``: detach it from its bridge)."""
    master = 0 if bridge is None else index_of(ipr, bridge)
    _request(str(name), f"attach the device to {bridge}", _setlink, ipr, name, _nla_u32(IFLA_MASTER, master))


def master_of(ipr: IPRoute, name: Device) -> str | None:
    """The name of the bridge the device is attached to, or ``None``."""
    master = _get(ipr, name).get("IFLA_MASTER")
    if not master:
        return None
    return str(_get(ipr, int(master)).get("IFLA_IFNAME"))


def set_isolated(ipr: IPRoute, name: Device, on: bool = True) -> None:
    """Set the bridge port flag ``isolated``: isolated ports reach only non-isolated ones."""
    slave = _nla_str(IFLA_INFO_SLAVE_KIND, "bridge") + _nla(IFLA_INFO_SLAVE_DATA,
                                                            _nla(IFLA_BRPORT_ISOLATED, bytes([int(on)])))
    _request(str(name), "set the bridge port isolation", _setlink, ipr, name, _nla(IFLA_LINKINFO, slave))


def is_isolated(ipr: IPRoute, name: Device) -> bool:
    """Whether the bridge port flag ``isolated`` is set (``False`` for a device that is no port)."""
    info = _get(ipr, name).get("IFLA_LINKINFO")
    data = info.get("IFLA_INFO_SLAVE_DATA") if info is not None else None
    return bool(data is not None and data.get("IFLA_BRPORT_ISOLATED"))


# -- addresses and routes ------------------------------------------------------------------------

def add_address(ipr: IPRoute, name: Device, iface: ipaddress.IPv4Interface) -> None:
    """Give the device the address ``iface`` (address and prefix); nothing happens when it has it."""
    iface = ipaddress.IPv4Interface(iface)
    idx = index_of(ipr, name)
    body = (_IFADDR.pack(socket.AF_INET, iface.network.prefixlen, 0, 0, idx)
            + _nla_ip4(IFA_LOCAL, iface.ip) + _nla_ip4(IFA_ADDRESS, iface.ip))
    _request(str(name), f"add address {iface}", _talk, ipr, RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body,
             ignore=(errno.EEXIST,))


def addresses(ipr: IPRoute, name: Device) -> list[ipaddress.IPv4Interface]:
    """The IPv4 addresses of the device."""
    idx = index_of(ipr, name)
    msgs = _request(str(name), "list addresses", ipr.addr, "dump", index=idx, family=socket.AF_INET)
    return [ipaddress.IPv4Interface(f"{m.get('IFA_ADDRESS')}/{m['prefixlen']}") for m in msgs if m["index"] == idx]


def add_default_route(ipr: IPRoute, gateway: str | ipaddress.IPv4Address) -> None:
    """Set the default route via ``gateway`` (replacing any other); meant for sliver namespaces."""
    add_route(ipr, ipaddress.IPv4Network("0.0.0.0/0"), gateway)


def add_route(ipr: IPRoute, dst: ipaddress.IPv4Network, gateway: str | ipaddress.IPv4Address) -> None:
    """Set the route to ``dst`` via ``gateway`` (replacing one to the same ``dst``)."""
    body = (_RTMSG.pack(socket.AF_INET, dst.prefixlen, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, 0, RTN_UNICAST, 0)
            + (_nla_ip4(RTA_DST, dst.network_address) if dst.prefixlen else b"") + _nla_ip4(RTA_GATEWAY, gateway))
    _request(str(dst), f"route via {gateway}", _talk, ipr, RTM_NEWROUTE,
             NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, body)


# -- VXLAN flood lists ---------------------------------------------------------------------------

def fdb_add_remote(ipr: IPRoute, dev: Device, remote: str) -> None:
    """Flood to ``remote`` over the VXLAN device: an all-zero FDB entry (head-end replication)."""
    _request(str(dev), f"add the flood entry to {remote}", ipr.fdb, "append", ifindex=index_of(ipr, dev),
             lladdr=ZERO_MAC, dst=str(remote), ignore=(errno.EEXIST,))


def fdb_del_remote(ipr: IPRoute, dev: Device, remote: str) -> None:
    """Stop flooding to ``remote``; nothing happens when there is no such entry."""
    _request(str(dev), f"delete the flood entry to {remote}", ipr.fdb, "del", ifindex=index_of(ipr, dev),
             lladdr=ZERO_MAC, dst=str(remote), ignore=(errno.ENOENT,))


def fdb_remotes(ipr: IPRoute, dev: Device) -> set[str]:
    """The remotes the VXLAN device floods to (its all-zero FDB entries)."""
    idx = index_of(ipr, dev)
    found = set()
    for msg in _request(str(dev), "list FDB entries", ipr.fdb, "dump", ifindex=idx):
        if msg["ifindex"] == idx and msg.get("NDA_LLADDR") == ZERO_MAC and msg.get("NDA_DST"):
            found.add(str(msg.get("NDA_DST")))
    return found


# -- counters ------------------------------------------------------------------------------------

def _counters(msg: Any) -> Counters:
    stats = msg.get("IFLA_STATS64") or msg.get("IFLA_STATS")
    if stats is None:
        raise EmuError("the kernel reported no counters", str(msg.get("IFLA_IFNAME")))
    return Counters(rx_bytes=stats["rx_bytes"], tx_bytes=stats["tx_bytes"], rx_packets=stats["rx_packets"],
                    tx_packets=stats["tx_packets"], rx_dropped=stats["rx_dropped"], tx_dropped=stats["tx_dropped"])


def counters(ipr: IPRoute, names: Iterable[str] | None = None) -> dict[str, Counters]:
    """Counters of the named devices (missing ones are left out), or of every device for ``None``.

    A few names cost one request each; many names, or all, one dump.
    """
    wanted = None if names is None else list(names)
    result: dict[str, Counters] = {}
    if wanted is not None and len(wanted) <= 8:
        for name in wanted:
            msgs = _request(name, "read counters", ipr.link, "get", ifname=name, ignore=(errno.ENODEV,))
            if msgs:
                result[name] = _counters(msgs[0])
        return result
    keep = None if wanted is None else set(wanted)
    for msg in _request("links", "read counters", ipr.link, "dump"):
        name = msg.get("IFLA_IFNAME")
        if keep is None or name in keep:
            result[name] = _counters(msg)
    return result
