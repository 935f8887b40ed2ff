"""Software segmentation of TCP/IPv4 super-frames (TSO/GSO), and the header rewrites around it.

A kernel with TCP segmentation offload hands a device one IPv4/TCP packet of up to 64 KiB with
a ``virtio_net_hdr`` (:class:`VirtioNetHdr`) saying how to cut it: ``gso_type`` TCPV4 and
``gso_size`` = the MSS (payload bytes per segment). With the NEEDS_CSUM flag the TCP checksum is
*partial*: the field holds the folded pseudo-header sum and whoever sends the bytes completes it
over ``csum_start..`` (RFC 1071 sum, stored at ``csum_start + csum_offset``).

This module does what the device, or the kernel's own GSO (``tcp_gso_segment``), would do:

* :func:`segment_tcpv4` cuts a super-frame into MSS segments: IP total length, IP id
  (+1 per segment) and header checksum per segment; TCP sequence numbers advance by the MSS;
  FIN and PSH stay on the last segment only, CWR on the first only; each TCP checksum is
  either partial (for a receiver that takes NEEDS_CSUM) or complete.
* :func:`complete_checksum` completes a partial transport checksum in software.
* :func:`set_ttl` rewrites the TTL and fixes the header checksum incrementally (RFC 1624,
  equation 3), on a ``bytearray`` holding at least the first 12 bytes of the header.

Everything here is pure: bytes in, bytes out. Addresses are the header's own bytes.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from primogeni.net.packet import (
    IPV4_HEADER_LEN,
    PROTO_TCP,
    PROTO_UDP,
    TCP_CWR,
    TCP_FIN,
    TCP_HEADER_LEN,
    TCP_PSH,
    BytesLike,
    PacketError,
    _fold,
    _pseudo_total,
    _word_total,
    internet_checksum,
)

# virtio_net_hdr flags and GSO types (linux/virtio_net.h).
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_F_DATA_VALID = 2
VIRTIO_NET_HDR_GSO_NONE = 0
VIRTIO_NET_HDR_GSO_TCPV4 = 1
VIRTIO_NET_HDR_GSO_UDP = 3
VIRTIO_NET_HDR_GSO_TCPV6 = 4
VIRTIO_NET_HDR_GSO_UDP_L4 = 5
VIRTIO_NET_HDR_GSO_ECN = 0x80

TCP_CHECK_OFFSET = 16  # offset of the checksum in a TCP header
UDP_CHECK_OFFSET = 6

# native byte order: the legacy header that tun (IFF_VNET_HDR) and packet sockets (PACKET_VNET_HDR) use
VNET_HDR_STRUCT = struct.Struct("=BBHHHH")
_VNET = VNET_HDR_STRUCT
VIRTIO_NET_HDR_LEN = _VNET.size  # 10


class VirtioNetHdr(NamedTuple):
    """The 10-byte ``struct virtio_net_hdr`` that TAP (IFF_VNET_HDR) and AF_PACKET
    (PACKET_VNET_HDR) put before a frame. Offsets count from the start of the Ethernet frame."""

    flags: int = 0
    gso_type: int = VIRTIO_NET_HDR_GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0

    @property
    def needs_csum(self) -> bool:
        """The transport checksum is partial (to be completed from ``csum_start``)."""
        return bool(self.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM)

    @property
    def gso_kind(self) -> int:
        """``gso_type`` without the ECN bit."""
        return self.gso_type & ~VIRTIO_NET_HDR_GSO_ECN

    @property
    def is_gso(self) -> bool:
        """Whether the frame is a super-frame the kernel will cut into ``gso_size`` segments."""
        return self.gso_kind != VIRTIO_NET_HDR_GSO_NONE

    def pack(self) -> bytes:
        return _VNET.pack(self.flags, self.gso_type, self.hdr_len, self.gso_size, self.csum_start, self.csum_offset)

    @classmethod
    def unpack(cls, buf: BytesLike, offset: int = 0) -> VirtioNetHdr:
        """The header at ``buf[offset:offset + 10]``."""
        if len(buf) - offset < _VNET.size:
            raise PacketError("virtio_net_hdr", f"truncated: {len(buf) - offset} bytes, it needs {_VNET.size}")
        return cls(*_VNET.unpack_from(buf, offset))

    def segments(self, frame: BytesLike) -> tuple[int, int]:
        """``(segments, bytes on the wire)`` that the Ethernet ``frame`` stands for: each segment repeats the
        Ethernet, IP and TCP/UDP headers (what a simulated link must transmit). ``hdr_len`` is only a hint,
        so the headers are measured in the frame: the transport header starts at ``csum_start`` (or after
        the IP header)."""
        if not self.is_gso or not self.gso_size:
            return 1, len(frame)
        l4 = self.csum_start
        if not self.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
            l4 = 14 + ((frame[14] & 0x0F) * 4 if frame[12:14] == b"\x08\x00" else 40)
        udp = self.gso_kind == VIRTIO_NET_HDR_GSO_UDP
        headers = l4 + (8 if udp else (frame[l4 + 12] >> 4) * 4)
        count = max(1, -(-(len(frame) - headers) // self.gso_size))
        return count, len(frame) + (count - 1) * headers


# --- checksum arithmetic -----------------------------------------------------------------


def checksum_adjust(check: int, old: int, new: int) -> int:
    """The checksum after one 16-bit word changes from ``old`` to ``new`` (RFC 1624, eqn. 3:
    HC' = ~(~HC + ~m + m'))."""
    s = (~check & 0xFFFF) + (~old & 0xFFFF) + new
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def set_ttl(header: bytearray, ttl: int) -> None:
    """Set the TTL of the IPv4 header at the start of ``header`` (12 bytes or more) and fix its
    checksum incrementally."""
    if not 0 <= ttl <= 0xFF:
        raise PacketError("ipv4", f"TTL {ttl} is not in 0..255")
    old = (header[8] << 8) | header[9]
    new = (ttl << 8) | header[9]
    check = checksum_adjust((header[10] << 8) | header[11], old, new)
    header[8] = ttl
    header[10] = check >> 8
    header[11] = check & 0xFF


def pseudo_header_sum(src: int, dst: int, proto: int, length: int) -> int:
    """The partial checksum a NEEDS_CSUM packet carries: the folded (not complemented)
    pseudo-header sum, as Linux's ``~tcp_v4_check(len, saddr, daddr, 0)``."""
    return ~_fold(_pseudo_total(src, dst, proto, length)) & 0xFFFF


def complete_checksum(ip: BytesLike, csum_start: int, csum_offset: int) -> bytes:
    """``ip`` with its partial transport checksum completed in software.

    ``csum_start`` is the offset of the transport header from the start of the IP packet and
    ``csum_offset`` that of the checksum inside it (16 for TCP, 6 for UDP). The field's partial
    value is summed with the rest, as a device does (``skb_checksum_help``).
    """
    total = (ip[2] << 8) | ip[3]
    at = csum_start + csum_offset
    if not IPV4_HEADER_LEN <= csum_start < total or at + 2 > total or total > len(ip):
        raise PacketError("ipv4", f"checksum offsets {csum_start}+{csum_offset} do not fit a {total}-byte packet")
    data = bytearray(ip[:total])
    check = _fold(_word_total(memoryview(data)[csum_start:]))
    if check == 0 and data[9] == PROTO_UDP:
        check = 0xFFFF  # a computed zero is sent as all ones (RFC 768)
    data[at] = check >> 8
    data[at + 1] = check & 0xFF
    return bytes(data)


# --- segmentation ------------------------------------------------------------------------


class TcpLayout(NamedTuple):
    """Where the parts of an IPv4/TCP packet are: header lengths and payload length."""

    ip_header_len: int
    tcp_header_len: int
    total_length: int

    @property
    def headers_len(self) -> int:
        return self.ip_header_len + self.tcp_header_len

    @property
    def payload_len(self) -> int:
        return self.total_length - self.ip_header_len - self.tcp_header_len


def tcp_layout(ip: BytesLike) -> TcpLayout:
    """The layout of an IPv4/TCP packet, checked enough to cut it safely."""
    if len(ip) < IPV4_HEADER_LEN or ip[0] >> 4 != 4:
        raise PacketError("gso", "not an IPv4 packet")
    ihl = (ip[0] & 0x0F) * 4
    total = (ip[2] << 8) | ip[3]
    if ip[9] != PROTO_TCP:
        raise PacketError("gso", f"protocol {ip[9]} is not TCP")
    if ihl < IPV4_HEADER_LEN or total > len(ip) or total < ihl + TCP_HEADER_LEN:
        raise PacketError("gso", f"bad lengths: header {ihl}, total {total}, {len(ip)} bytes given")
    if ((ip[6] << 8) | ip[7]) & 0x3FFF:
        raise PacketError("gso", "a fragment cannot be segmented")
    thl = (ip[ihl + 12] >> 4) * 4
    if thl < TCP_HEADER_LEN or ihl + thl > total:
        raise PacketError("gso", f"bad TCP header length {thl} in a {total}-byte packet")
    return TcpLayout(ihl, thl, total)


def segment_count(payload_len: int, mss: int) -> int:
    """Segments a payload of ``payload_len`` bytes makes at ``mss`` (one if it is empty)."""
    return max(1, -(-payload_len // mss))


def segment_tcpv4(ip: BytesLike, mss: int, *, partial: bool) -> list[bytes]:
    """Cut an IPv4/TCP super-frame into segments of at most ``mss`` payload bytes.

    ``partial`` True leaves each TCP checksum partial (the pseudo-header sum, for a NEEDS_CSUM
    receiver); False completes it. A packet whose payload fits in one segment comes back as
    one segment with its headers rewritten the same way.
    """
    if mss <= 0:
        raise PacketError("gso", f"MSS {mss} must be > 0")
    lay = tcp_layout(ip)
    ihl, thl, total = lay
    hl = ihl + thl
    payload_len = total - hl
    n = segment_count(payload_len, mss)
    view = memoryview(ip)
    iph = bytearray(view[:ihl])
    tcph = bytearray(view[ihl:hl])
    ident0 = (iph[4] << 8) | iph[5]
    seq0 = int.from_bytes(tcph[4:8], "big")
    flags0 = tcph[13]
    src = int.from_bytes(iph[12:16], "big")
    dst = int.from_bytes(iph[16:20], "big")
    iph[10] = iph[11] = 0
    tcph[16] = tcph[17] = 0
    out: list[bytes] = []
    for k in range(n):
        lo = hl + k * mss
        chunk = view[lo : min(lo + mss, total)]
        seglen = thl + len(chunk)
        tot = ihl + seglen
        ident = (ident0 + k) & 0xFFFF
        iph[2], iph[3] = tot >> 8, tot & 0xFF
        iph[4], iph[5] = ident >> 8, ident & 0xFF
        iph[10] = iph[11] = 0
        ipcheck = internet_checksum(iph)
        iph[10], iph[11] = ipcheck >> 8, ipcheck & 0xFF
        tcph[4:8] = ((seq0 + k * mss) & 0xFFFFFFFF).to_bytes(4, "big")
        flags = flags0
        if k < n - 1:
            flags &= ~(TCP_FIN | TCP_PSH)
        if k > 0:
            flags &= ~TCP_CWR
        tcph[13] = flags
        tcph[16] = tcph[17] = 0
        if partial:
            check = pseudo_header_sum(src, dst, PROTO_TCP, seglen)
        else:
            check = _fold(_pseudo_total(src, dst, PROTO_TCP, seglen) + _word_total(tcph) + _word_total(chunk))
        tcph[16], tcph[17] = check >> 8, check & 0xFF
        out.append(b"".join((iph, tcph, chunk)))
    return out
