"""Real Ethernet frames in and out of the simulator process: TAP devices and AF_PACKET sockets on veths.

An emulated host's experimental interface must hand its frames to the simulator (a single-threaded
process in its own namespace) and take frames back. Two kinds of endpoint do it, with one interface
(:class:`Endpoint`): ``fileno()`` for the simulator's poll loop, :meth:`Endpoint.recv_batch` (reads until
the kernel has nothing more, or ``limit`` frames), :meth:`Endpoint.send`, :attr:`Endpoint.counters`, and
:meth:`Endpoint.close`, which removes what the endpoint made.

- :class:`TapEndpoint` — a TAP device made in the simulator's namespace and moved into the host's, the
  simulator keeping its file descriptor: the host's interface *is* the TAP, no veth or bridge in between.
- :class:`PacketEndpoint` — an ``AF_PACKET`` raw socket bound to a device (the simulator's end of a veth
  pair whose other end is the host's interface, :meth:`PacketEndpoint.create`; or any device,
  :meth:`PacketEndpoint.bind`), with ``PACKET_QDISC_BYPASS`` and ``PACKET_IGNORE_OUTGOING``.

Both can carry a ``struct virtio_net_hdr`` (:class:`VnetHdr`) before each frame (``vnet=True``). Then the
host's kernel may hand over TCP super-frames of up to 64 KiB (TSO/GSO, one per ~44 segments) with a partial
checksum, and frames written back with their header are accepted as such by the receiving kernel. A
pure-Python forwarder moves at most 90,000-160,000 frames/s (0.9-1.6 Gb/s of 1514-byte frames) and the
simulator far fewer, so only super-frames reach gigabits.
``docs/IMMERSION.md`` ("Packet I/O") has the measurements and the default this project uses.

The checksum rule. A frame received with ``VIRTIO_NET_HDR_F_NEEDS_CSUM`` carries a *partial* transport
checksum (only the pseudo-header sum, at ``csum_start + csum_offset``). Forwarded unchanged with the same
header, the receiving kernel completes it (or treats it as verified). A caller that changes the frame
(TTL, addresses) must fix the IPv4 header checksum itself, and must leave the transport checksum partial
and the header as it was (a changed address changes the pseudo-header: add the difference to the partial
sum). A frame whose header is all zeros is complete; it is returned with ``None`` for its header.
An endpoint without the header (``vnet=False``) only ever sees complete frames, because the host's
interface is made to have no checksum or segmentation offload.

Frames are returned as ``bytes``, so they may be kept (queued in the simulator) for as long as needed. A
reused receive buffer handed out as memoryviews would be overwritten under frames still queued, and is
not faster where it matters (measured: 1.3 µs vs 1.6 µs per read of a 66-byte frame, 1.5 vs 1.9 µs at
1514 bytes; at 64 KiB a fresh ``bytes`` costs ~30 µs against ~7 µs, its pages being new, which is ~6 % of
a core at the ~2,000 super-frames/s of 1 Gb/s).
"""

from __future__ import annotations

import array
import errno
import fcntl
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from primogeni.emu import links, netlink
from primogeni.emu import netns as namespaces
from primogeni.emu import sys as esys
from primogeni.errors import EmuError, FeatureMissing
from primogeni.net.gso import (
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_LEN,
    VNET_HDR_STRUCT,
    VirtioNetHdr,
)

# -- struct virtio_net_hdr: one definition, in primogeni.net.gso (the simulator reads it too) --

VnetHdr = VirtioNetHdr
VNET_HDR_LEN = VIRTIO_NET_HDR_LEN
_ZERO_VNET = bytes(VNET_HDR_LEN)
_VNET = VNET_HDR_STRUCT


@dataclass(frozen=True)
class IoCounters:
    """What an endpoint moved (frame bytes, without the vnet header) and dropped when sending.

    ``drops``: frames the kernel refused for want of room (``EAGAIN``, ``ENOBUFS``) or because the device
    was down (``ENETDOWN``, ``EIO``), as a real NIC would lose them.
    """

    frames_in: int
    bytes_in: int
    frames_out: int
    bytes_out: int
    drops: int


Received = tuple[bytes, VnetHdr | None]

# room for the largest GSO frame a kernel without BIG TCP makes (64 KiB of IP + Ethernet) and the header
RECV_SIZE = 65536 + 1024
DEFAULT_BUFFER = 8 << 20  # bytes, SO_RCVBUF and SO_SNDBUF of packet sockets
_DROP_ERRNOS = frozenset({errno.EAGAIN, errno.ENOBUFS, errno.ENETDOWN, errno.EIO})
_read = os.read
_write = os.write
_writev = os.writev


def _where(name: str, ns: str | Path | None) -> str:
    return f"{name} in {ns}" if ns is not None else name


def _check_name(name: str) -> None:
    """Devices we create carry the ``primo`` prefix and fit IFNAMSIZ."""
    if not name.startswith("primo") or len(name) > 15:
        raise EmuError("a device we create must start with 'primo' and have at most 15 characters", name)


class Endpoint:
    """Frames in and out of one interface; the common part of :class:`TapEndpoint` and :class:`PacketEndpoint`.

    ``name`` is the device the frames cross, in namespace ``netns`` (``None``: this process's). Reading and
    writing never block. Use from one thread.
    """

    kind = ""

    def __init__(self, fd: int, name: str, ns: str | Path | None, vnet: bool):
        self._fd = fd
        self.name = name
        self.netns = ns
        self.vnet = vnet
        self._frames_in = self._bytes_in = self._frames_out = self._bytes_out = self._drops = 0
        self._closed = False

    def fileno(self) -> int:
        return self._fd

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def counters(self) -> IoCounters:
        return IoCounters(self._frames_in, self._bytes_in, self._frames_out, self._bytes_out, self._drops)

    def _fail(self, exc: OSError, action: str) -> EmuError:
        return EmuError(f"cannot {action} ({self.kind}): {os.strerror(exc.errno or 0)} (errno {exc.errno})",
                        _where(self.name, self.netns))

    def recv_batch(self, limit: int = 64) -> list[Received]:
        """Up to ``limit`` frames waiting now (an empty list when there are none), with their vnet header.

        The header is ``None`` when the endpoint has none or when it is all zeros (a complete frame).
        """
        out: list[Received] = []
        fd = self._fd
        got = 0
        try:
            if self.vnet:
                zero = _ZERO_VNET
                make = VnetHdr._make
                unpack = _VNET.unpack_from
                while len(out) < limit:
                    data = _read(fd, RECV_SIZE)
                    frame = data[VNET_HDR_LEN:]
                    got += len(frame)
                    out.append((frame, None if data.startswith(zero) else make(unpack(data))))
            else:
                while len(out) < limit:
                    data = _read(fd, RECV_SIZE)
                    got += len(data)
                    out.append((data, None))
        except BlockingIOError:
            pass
        except OSError as exc:
            if exc.errno != errno.ENETDOWN:  # a packet socket reports its device going down once
                raise self._fail(exc, "read a frame") from exc
        self._frames_in += len(out)
        self._bytes_in += got
        return out

    def send(self, frame: bytes | bytearray | memoryview, vnet: VnetHdr | None = None) -> bool:
        """Write one frame (``vnet``: its header; ``None``, a complete frame); ``False`` when it was dropped.

        An endpoint without the header cannot send a frame that needs one (GSO, partial checksum): EmuError.
        """
        try:
            if self.vnet:
                _writev(self._fd, (_ZERO_VNET if vnet is None else _VNET.pack(*vnet), frame))
            else:
                if vnet is not None and (vnet.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM or vnet.is_gso):
                    raise EmuError(f"a frame with {vnet} cannot go out of an endpoint without vnet headers",
                                   _where(self.name, self.netns))
                _write(self._fd, frame)
        except OSError as exc:
            if exc.errno in _DROP_ERRNOS:
                self._drops += 1
                return False
            raise self._fail(exc, "write a frame") from exc
        self._frames_out += 1
        self._bytes_out += len(frame)
        return True

    def close(self) -> None:
        """Close the descriptor (and remove what this endpoint made); a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        os.close(self._fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd {self._fd}"
        return f"<{type(self).__name__} {_where(self.name, self.netns)} vnet={self.vnet} {state}>"


# -- TAP -----------------------------------------------------------------------------------------

TUN_PATH = "/dev/net/tun"
TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
_IFREQ = struct.Struct("16sH22x")  # struct ifreq: ifr_name, ifr_flags, the rest of the union


class TapEndpoint(Endpoint):
    """A TAP device whose frames this process reads and writes; the device is removed when it is closed."""

    kind = "tap"

    @classmethod
    def create(cls, name: str, *, netns: str | Path | None = None, host_netns: str | Path | None = None,
               vnet: bool = True, offload: bool | None = None, mac: str | None = None,
               mtu: int | None = None) -> TapEndpoint:
        """Make TAP ``name`` in ``netns`` (the simulator's; ``None``: ours), then move it to ``host_netns``.

        ``vnet``: frames carry a :class:`VnetHdr` (``IFF_VNET_HDR``, ``TUNSETVNETHDRSZ`` 10); ``offload``
        (default: ``vnet``) lets the host's kernel send TCP super-frames with partial checksums
        (``TUNSETOFFLOAD`` CSUM|TSO4|TSO6), which needs ``vnet``. The device is then given ``mac`` and
        ``mtu`` and brought up from the namespace it ends in (the host's interface is the TAP itself).
        """
        _check_name(name)
        offload = vnet if offload is None else offload
        if offload and not vnet:
            raise EmuError("TAP offloads need the vnet header (vnet=True)", name)
        try:
            with esys.in_netns(netns):
                fd = os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            if exc.filename == TUN_PATH:
                raise FeatureMissing("no TUN/TAP support (the device file is missing)", TUN_PATH) from exc
            raise EmuError("no such network namespace", str(netns)) from exc
        except OSError as exc:
            raise EmuError(f"cannot open {TUN_PATH}: {exc.strerror}", _where(name, netns)) from exc
        ep = cls(fd, name, netns, vnet)
        try:
            ep._setup(offload)
            if host_netns is not None:
                ep._move(host_netns)
            ep._configure(mac, mtu)
        except BaseException:
            ep.close()
            raise
        return ep

    def _ioctl(self, request: int, arg: int | bytes, action: str, missing: tuple[int, ...] = ()) -> None:
        try:
            fcntl.ioctl(self._fd, request, arg)
        except OSError as exc:
            if exc.errno in missing:
                raise FeatureMissing(f"the kernel cannot {action}: {exc.strerror}",
                                     _where(self.name, self.netns)) from exc
            raise self._fail(exc, action) from exc

    def _setup(self, offload: bool) -> None:
        flags = IFF_TAP | IFF_NO_PI | (IFF_VNET_HDR if self.vnet else 0)
        try:
            fcntl.ioctl(self._fd, TUNSETIFF, _IFREQ.pack(self.name.encode(), flags))
        except OSError as exc:
            if exc.errno in (errno.EBUSY, errno.EEXIST, errno.EINVAL):
                raise EmuError(f"cannot create the TAP: a device of this name exists already ({exc.strerror})",
                               _where(self.name, self.netns)) from exc
            raise self._fail(exc, "create the TAP") from exc
        if self.vnet:
            self._ioctl(TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN), "set the vnet header size",
                        (errno.EINVAL, errno.ENOTTY))
        if offload:
            self._ioctl(TUNSETOFFLOAD, TUN_OFFLOADS, "enable TAP checksum and TSO offloads",
                        (errno.EINVAL, errno.ENOTTY))

    def _move(self, host_netns: str | Path) -> None:
        with namespaces.open_fd(host_netns) as target, namespaces.iproute(self.netns) as ipr:
            idx = links.index(ipr, self.name)
            if idx is None:
                raise EmuError("the TAP vanished before it could be moved", _where(self.name, self.netns))
            netlink.request(_where(self.name, self.netns), f"move the TAP to {host_netns}", ipr.link, "set",
                            index=idx, net_ns_fd=target)
        self.netns = host_netns

    def _configure(self, mac: str | None, mtu: int | None) -> None:
        settings: dict[str, Any] = {"state": "up"}
        if mac is not None:
            settings["address"] = mac
        if mtu is not None:
            settings["mtu"] = mtu
        with namespaces.iproute(self.netns) as ipr:
            netlink.request(_where(self.name, self.netns), "set the TAP's address, MTU and state", ipr.link, "set",
                            ifname=self.name, **settings)


# -- AF_PACKET -----------------------------------------------------------------------------------

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_QDISC_BYPASS = 20
PACKET_IGNORE_OUTGOING = 23
PACKET_OUTGOING = 4  # sll_pkttype of a frame this host sent
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33  # not in Python 3.11's socket module


class PacketEndpoint(Endpoint):
    """An ``AF_PACKET`` raw socket on one device; :meth:`create` also makes the veth pair it sits on."""

    kind = "packet"

    def __init__(self, sock: socket.socket, name: str, ns: str | Path | None, vnet: bool, *,
                 filter_outgoing: bool, made: str | None):
        super().__init__(sock.fileno(), name, ns, vnet)
        self._sock = sock
        self._filter = filter_outgoing
        self._made = made  # the veth this endpoint created (deleted on close), or None

    @classmethod
    def bind(cls, name: str, *, netns: str | Path | None = None, vnet: bool = True,
             buffer: int = DEFAULT_BUFFER, filter_outgoing: bool | None = None) -> PacketEndpoint:
        """A socket bound to the existing device ``name`` in ``netns`` (created there); frames of every protocol.

        ``vnet``: ``PACKET_VNET_HDR``. ``buffer``: SO_RCVBUF and SO_SNDBUF in bytes (forced past the
        sysctl limits when we may). Frames the namespace itself sends out of the device are not read:
        ``PACKET_IGNORE_OUTGOING`` when the kernel has it, else (or with ``filter_outgoing=True``) by
        looking at each frame's packet type, which costs a little more per frame.
        """
        return cls._open(name, netns, vnet, buffer, filter_outgoing, made=None)

    @classmethod
    def create(cls, name: str, host_name: str, *, netns: str | Path | None = None,
               host_netns: str | Path | None = None, vnet: bool = True, mac: str | None = None,
               mtu: int | None = None, buffer: int = DEFAULT_BUFFER,
               filter_outgoing: bool | None = None) -> PacketEndpoint:
        """A veth pair ``name`` (in ``netns``, the simulator's; the socket is bound to it) / ``host_name``
        (in ``host_netns``, the host's interface, given ``mac``; both ends ``mtu``), both up.

        The simulator's end gets no IPv6 (so its namespace sends nothing out of it). Without ``vnet`` the
        host's end loses its checksum offload (and so TSO), so that only complete frames arrive. Closing the
        endpoint deletes the pair.
        """
        _check_name(name)
        _check_name(host_name)
        with namespaces.iproute(netns) as ipr:
            try:
                links.add_veth(ipr, name, host_name, peer_netns=host_netns, peer_mac=mac, mtu=mtu)
            except EmuError as exc:
                raise EmuError(f"cannot create the veth to {host_name}: {exc}", _where(name, netns)) from exc
        try:
            namespaces.set_sysctl(netns, f"net.ipv6.conf.{name}.disable_ipv6", "1")
            with namespaces.iproute(netns) as ipr:
                links.set_up(ipr, name)
            with namespaces.iproute(host_netns) as ipr:
                links.set_up(ipr, host_name)
            if not vnet:
                set_tx_offload(host_netns, host_name, False)
            return cls._open(name, netns, vnet, buffer, filter_outgoing, made=name)
        except BaseException:
            with namespaces.iproute(netns) as ipr:
                links.delete(ipr, name)
            raise

    @classmethod
    def _open(cls, name: str, ns: str | Path | None, vnet: bool, buffer: int, filter_outgoing: bool | None,
              made: str | None) -> PacketEndpoint:
        where = _where(name, ns)
        try:
            with esys.in_netns(ns):
                # protocol 0: nothing is queued before bind() names the device
                sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                                     0)
        except FileNotFoundError:
            raise EmuError("no such network namespace", str(ns)) from None
        except OSError as exc:
            raise EmuError(f"cannot open a packet socket: {exc.strerror}", where) from exc
        try:
            cls._options(sock, where, vnet, buffer)
            if filter_outgoing is None:
                try:
                    sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
                    filter_outgoing = False
                except OSError as exc:
                    if exc.errno != errno.ENOPROTOOPT:
                        raise EmuError(f"cannot ignore outgoing frames: {exc.strerror}", where) from exc
                    filter_outgoing = True
            try:
                sock.bind((name, ETH_P_ALL))
            except OSError as exc:
                if exc.errno == errno.ENODEV:
                    raise EmuError("no such network device", where) from exc
                raise EmuError(f"cannot bind a packet socket: {exc.strerror}", where) from exc
        except BaseException:
            sock.close()
            raise
        return cls(sock, name, ns, vnet, filter_outgoing=filter_outgoing, made=made)

    @staticmethod
    def _options(sock: socket.socket, where: str, vnet: bool, buffer: int) -> None:
        for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
            try:
                sock.setsockopt(socket.SOL_SOCKET, force, buffer)
            except PermissionError:
                sock.setsockopt(socket.SOL_SOCKET, plain, buffer)
        options = [(PACKET_QDISC_BYPASS, "bypass the qdisc")]
        if vnet:
            options.append((PACKET_VNET_HDR, "carry vnet headers"))
        for option, action in options:
            try:
                sock.setsockopt(SOL_PACKET, option, 1)
            except OSError as exc:
                if exc.errno == errno.ENOPROTOOPT:
                    raise FeatureMissing(f"packet sockets cannot {action} on this kernel", where) from exc
                raise EmuError(f"cannot make the packet socket {action}: {exc.strerror}", where) from exc

    def recv_batch(self, limit: int = 64) -> list[Received]:
        if not self._filter:
            return super().recv_batch(limit)
        out: list[Received] = []
        recvfrom = self._sock.recvfrom
        got = 0
        try:
            while len(out) < limit:
                data, address = recvfrom(RECV_SIZE)
                if address[2] == PACKET_OUTGOING:
                    continue
                if self.vnet:
                    header = None if data.startswith(_ZERO_VNET) else VnetHdr.unpack(data)
                    data = data[VNET_HDR_LEN:]
                else:
                    header = None
                got += len(data)
                out.append((data, header))
        except BlockingIOError:
            pass
        except OSError as exc:
            if exc.errno != errno.ENETDOWN:
                raise self._fail(exc, "read a frame") from exc
        self._frames_in += len(out)
        self._bytes_in += got
        return out

    @property
    def filters_outgoing(self) -> bool:
        """Whether outgoing frames are dropped here by their packet type (no ``PACKET_IGNORE_OUTGOING``)."""
        return self._filter

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._sock.close()
        if self._made is not None and (self.netns is None or namespaces.exists(self.netns)):  # else gone with it
            with namespaces.iproute(self.netns) as ipr:
                links.delete(ipr, self._made)  # takes the host's end with it


# -- helpers -------------------------------------------------------------------------------------


SIOCETHTOOL = 0x8946
ETHTOOL_GTXCSUM = 0x16
ETHTOOL_STXCSUM = 0x17
ETHTOOL_GTSO = 0x1E


def _ethtool(ns: str | Path | None, name: str, command: int, value: int = 0) -> int:
    """One legacy ``SIOCETHTOOL`` request with a ``struct ethtool_value``; the value the kernel returns."""
    value_buf = array.array("I", [command, value])  # struct ethtool_value {u32 cmd; u32 data;}
    ifreq = bytearray(struct.pack("16sP", name.encode(), value_buf.buffer_info()[0]).ljust(40, b"\0"))
    try:
        with esys.in_netns(ns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    except FileNotFoundError:
        raise EmuError("no such network namespace", str(ns)) from None
    with sock:
        try:
            fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                raise EmuError("no such network device", _where(name, ns)) from exc
            if exc.errno == errno.EOPNOTSUPP:
                raise FeatureMissing(f"the device has no ethtool command {command:#x}", _where(name, ns)) from exc
            raise EmuError(f"ethtool command {command:#x} failed: {exc.strerror}", _where(name, ns)) from exc
    return int(value_buf[1])


def set_tx_offload(ns: str | Path | None, name: str, on: bool) -> None:
    """Turn the device's transmit checksum offload on or off (off takes TSO with it: ``ethtool -K tx``)."""
    _ethtool(ns, name, ETHTOOL_STXCSUM, int(on))


def tx_offload(ns: str | Path | None, name: str) -> tuple[bool, bool]:
    """``(transmit checksum offload, TSO)`` of the device, as ``ethtool -k`` shows them."""
    return bool(_ethtool(ns, name, ETHTOOL_GTXCSUM)), bool(_ethtool(ns, name, ETHTOOL_GTSO))
