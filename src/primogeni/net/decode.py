"""Decoding IPv4, ICMP, UDP and TCP headers from bytes (the other half of :mod:`packet`).

``decode_*`` parse bytes into immutable header values and raise
:class:`~primogeni.net.packet.PacketError` naming what is wrong. The values are NamedTuples:
built per captured packet, they cost a fifth of a frozen dataclass (measured). Captures may be
truncated: a decoder accepts fewer bytes than the header claims and then reports
``checksum_ok=None`` (not checkable) rather than ``False``.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import NamedTuple, TypeAlias

from primogeni.net.packet import (
    _ICMP,
    _IPV4,
    _TCP,
    _TCP_OPT_TS,
    _TCP_SACK_BLOCK,
    _UDP,
    ICMP_HEADER_LEN,
    IPV4_HEADER_LEN,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    TCP_HEADER_LEN,
    UDP_HEADER_LEN,
    Address,
    BytesLike,
    PacketError,
    _fold,
    _pseudo_total,
    _word_total,
    internet_checksum,
)

# --- decoded headers -----------------------------------------------------------------------


class IPv4Header(NamedTuple):
    """A decoded IPv4 header; ``payload`` is the captured part of the payload (maybe short).

    ``flags`` is the 3-bit field (2 = DF, 1 = MF); ``frag_offset`` is in 8-byte units.
    ``checksum_ok`` says whether the header checksum verifies.
    """

    header_len: int
    tos: int
    total_length: int
    ident: int
    flags: int
    frag_offset: int
    ttl: int
    proto: int
    checksum: int
    src: int
    dst: int
    options: bytes
    payload: bytes
    checksum_ok: bool

    @property
    def src_address(self) -> IPv4Address:
        return IPv4Address(self.src)

    @property
    def dst_address(self) -> IPv4Address:
        return IPv4Address(self.dst)

    @property
    def dont_fragment(self) -> bool:
        return bool(self.flags & 2)

    @property
    def more_fragments(self) -> bool:
        return bool(self.flags & 1)

    @property
    def truncated(self) -> bool:
        """True if fewer payload bytes were captured than ``total_length`` claims."""
        return self.header_len + len(self.payload) < self.total_length


class UdpHeader(NamedTuple):
    """A decoded UDP header; ``checksum_ok`` is None when not checkable.

    It is not checkable without the IPv4 addresses, when the datagram is truncated, or when the
    sender sent no checksum (0).
    """

    sport: int
    dport: int
    length: int
    checksum: int
    payload: bytes
    checksum_ok: bool | None


class TcpHeader(NamedTuple):
    """A decoded TCP header with its parsed options.

    ``options`` holds the raw option bytes (including any kind not parsed here).
    ``checksum_ok`` is None without the IPv4 addresses or when the segment is truncated.
    """

    sport: int
    dport: int
    seq: int
    ack: int
    header_len: int
    flags: int
    window: int
    checksum: int
    urgent: int
    options: bytes
    mss: int | None
    wscale: int | None
    sack_permitted: bool
    sacks: tuple[tuple[int, int], ...]
    timestamps: tuple[int, int] | None
    payload: bytes
    checksum_ok: bool | None


class IcmpHeader(NamedTuple):
    """A decoded ICMP header; ``rest`` is the 32-bit rest-of-header field.

    For errors ``payload`` is the quoted original (decode it with :func:`decode_ipv4`).
    ``checksum_ok`` is None when the message is truncated.
    """

    type: int
    code: int
    checksum: int
    rest: int
    payload: bytes
    checksum_ok: bool | None

    @property
    def ident(self) -> int:
        """The echo identifier."""
        return self.rest >> 16

    @property
    def seq(self) -> int:
        """The echo sequence number."""
        return self.rest & 0xFFFF

    @property
    def next_hop_mtu(self) -> int:
        """The next-hop MTU of a "fragmentation needed" error."""
        return self.rest & 0xFFFF


TransportHeader: TypeAlias = TcpHeader | UdpHeader | IcmpHeader


# --- decoders ------------------------------------------------------------------------------


def decode_ipv4(buf: BytesLike) -> IPv4Header:
    """Decode an IPv4 header. ``buf`` may stop short of ``total_length`` (truncated capture);
    bytes beyond ``total_length`` (link padding) are ignored."""
    if len(buf) < IPV4_HEADER_LEN:
        raise PacketError("ipv4", f"truncated: {len(buf)} bytes, a header needs 20")
    vihl, tos, total_length, ident, flags_frag, ttl, proto, checksum, src, dst = _IPV4.unpack_from(
        buf
    )
    if vihl >> 4 != 4:
        raise PacketError("ipv4", f"version is {vihl >> 4}, not 4")
    header_len = (vihl & 0x0F) * 4
    if header_len < IPV4_HEADER_LEN:
        raise PacketError("ipv4", f"header length {header_len} is less than 20")
    if len(buf) < header_len:
        raise PacketError("ipv4", f"truncated: {len(buf)} bytes, the header needs {header_len}")
    if total_length < header_len:
        raise PacketError(
            "ipv4", f"total length {total_length} is less than the header length {header_len}"
        )
    return IPv4Header(
        header_len,
        tos,
        total_length,
        ident,
        flags_frag >> 13,
        flags_frag & 0x1FFF,
        ttl,
        proto,
        checksum,
        src,
        dst,
        bytes(buf[IPV4_HEADER_LEN:header_len]),
        bytes(buf[header_len:total_length]),
        internet_checksum(buf[:header_len]) == 0,
    )


def decode_udp(buf: BytesLike, src: Address | None = None, dst: Address | None = None) -> UdpHeader:
    """Decode a UDP datagram; give the IPv4 ``src`` and ``dst`` to verify its checksum."""
    if len(buf) < UDP_HEADER_LEN:
        raise PacketError("udp", f"truncated: {len(buf)} bytes, a header needs 8")
    sport, dport, length, checksum = _UDP.unpack_from(buf)
    if length < UDP_HEADER_LEN:
        raise PacketError("udp", f"length field {length} is less than 8")
    checksum_ok: bool | None = None
    if checksum and src is not None and dst is not None and len(buf) >= length:
        total = _pseudo_total(int(src), int(dst), PROTO_UDP, length) + _word_total(buf[:length])
        checksum_ok = _fold(total) == 0
    return UdpHeader(sport, dport, length, checksum, bytes(buf[UDP_HEADER_LEN:length]), checksum_ok)


def _parse_tcp_options(
    options: bytes,
) -> tuple[int | None, int | None, bool, tuple[tuple[int, int], ...], tuple[int, int] | None]:
    mss: int | None = None
    wscale: int | None = None
    sack_permitted = False
    sacks: tuple[tuple[int, int], ...] = ()
    timestamps: tuple[int, int] | None = None
    i, end = 0, len(options)
    while i < end:
        kind = options[i]
        if kind == 0:  # end of option list
            break
        if kind == 1:  # no-operation
            i += 1
            continue
        if i + 1 >= end:
            raise PacketError("tcp", f"option kind {kind} at offset {i} has no length byte")
        size = options[i + 1]
        if size < 2 or i + size > end:
            raise PacketError("tcp", f"option kind {kind} at offset {i} has bad length {size}")
        if kind == 2:
            if size != 4:
                raise PacketError("tcp", f"MSS option has length {size}, not 4")
            mss = (options[i + 2] << 8) | options[i + 3]
        elif kind == 3:
            if size != 3:
                raise PacketError("tcp", f"window scale option has length {size}, not 3")
            wscale = options[i + 2]
        elif kind == 4:
            if size != 2:
                raise PacketError("tcp", f"SACK-permitted option has length {size}, not 2")
            sack_permitted = True
        elif kind == 5:
            if (size - 2) % 8 or size == 2:
                raise PacketError("tcp", f"SACK option has length {size}, not 2 + 8n")
            sacks = tuple(_TCP_SACK_BLOCK.iter_unpack(options[i + 2 : i + size]))
        elif kind == 8:
            if size != 10:
                raise PacketError("tcp", f"timestamps option has length {size}, not 10")
            _, _, tsval, tsecr = _TCP_OPT_TS.unpack_from(options, i)
            timestamps = (tsval, tsecr)
        i += size
    return mss, wscale, sack_permitted, sacks, timestamps


def decode_tcp(
    buf: BytesLike,
    src: Address | None = None,
    dst: Address | None = None,
    length: int | None = None,
) -> TcpHeader:
    """Decode a TCP segment; give the IPv4 ``src`` and ``dst`` to verify its checksum.

    ``length`` is the segment's true length (from the IPv4 header) when ``buf`` is a truncated
    capture; the checksum is then not checkable.
    """
    n = len(buf)
    if n < TCP_HEADER_LEN:
        raise PacketError("tcp", f"truncated: {n} bytes, a header needs 20")
    sport, dport, seq, ack, offset_flags, window, checksum, urgent = _TCP.unpack_from(buf)
    header_len = (offset_flags >> 12) * 4
    if header_len < TCP_HEADER_LEN:
        raise PacketError("tcp", f"data offset gives header length {header_len}, less than 20")
    if n < header_len:
        raise PacketError("tcp", f"truncated: {n} bytes, the header needs {header_len}")
    if length is None:
        length = n
    elif length < n:
        raise PacketError("tcp", f"length {length} is less than the {n} bytes given")
    options = bytes(buf[TCP_HEADER_LEN:header_len])
    if options:
        mss, wscale, sack_permitted, sacks, timestamps = _parse_tcp_options(options)
    else:
        mss, wscale, sack_permitted, sacks, timestamps = None, None, False, (), None
    checksum_ok: bool | None = None
    if src is not None and dst is not None and n == length:
        total = _pseudo_total(int(src), int(dst), PROTO_TCP, length) + _word_total(buf)
        checksum_ok = _fold(total) == 0
    return TcpHeader(
        sport,
        dport,
        seq,
        ack,
        header_len,
        offset_flags & 0xFF,
        window,
        checksum,
        urgent,
        options,
        mss,
        wscale,
        sack_permitted,
        sacks,
        timestamps,
        bytes(buf[header_len:]),
        checksum_ok,
    )


def decode_icmp(buf: BytesLike, length: int | None = None) -> IcmpHeader:
    """Decode an ICMP message; ``length`` is its true length when ``buf`` is truncated."""
    n = len(buf)
    if n < ICMP_HEADER_LEN:
        raise PacketError("icmp", f"truncated: {n} bytes, a header needs 8")
    if length is not None and length < n:
        raise PacketError("icmp", f"length {length} is less than the {n} bytes given")
    type_, code, checksum, rest = _ICMP.unpack_from(buf)
    checksum_ok = internet_checksum(buf) == 0 if length is None or length == n else None
    return IcmpHeader(type_, code, checksum, rest, bytes(buf[ICMP_HEADER_LEN:]), checksum_ok)


_MIN_TRANSPORT_LEN = {PROTO_TCP: TCP_HEADER_LEN, PROTO_UDP: UDP_HEADER_LEN, PROTO_ICMP: 8}


def decode_ip_packet(buf: BytesLike) -> tuple[IPv4Header, TransportHeader | None]:
    """Decode an IPv4 packet and its TCP, UDP or ICMP header, verifying every checksum.

    The transport header is None for other protocols, for fragments, and when the
    capture stops inside it.
    """
    ip = decode_ipv4(buf)
    minimum = _MIN_TRANSPORT_LEN.get(ip.proto)
    data = ip.payload
    if minimum is None or ip.frag_offset or ip.more_fragments or len(data) < minimum:
        return ip, None
    length = ip.total_length - ip.header_len
    if ip.proto == PROTO_TCP:
        if len(data) < (data[12] >> 4) * 4:
            return ip, None
        return ip, decode_tcp(data, ip.src, ip.dst, length)
    if ip.proto == PROTO_UDP:
        return ip, decode_udp(data, ip.src, ip.dst)
    return ip, decode_icmp(data, length)
