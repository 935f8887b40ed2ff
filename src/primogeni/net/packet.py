"""IPv4, ICMP, UDP and TCP headers as real bytes, with correct checksums.

The simulator keeps packets as objects; this module is the wire boundary where they become
bytes (for pcap captures and for packets that leave through a TAP device) and where bytes
become headers again. It is sans-I/O and stdlib-only.

How the work divides:

* ``internet_checksum`` is the RFC 1071 sum. It uses ``int.from_bytes`` and one ``% 0xFFFF``:
  since ``2**16 == 1 (mod 0xFFFF)`` a big-endian integer is congruent to the sum of its 16-bit
  words, which is several times faster in CPython than summing a ``memoryview.cast("H")``.
* ``encode_*`` take plain ints (IPv4 addresses as ints; ``IPv4Address`` is accepted and
  converted) and return bytes. Header checksums are computed from the field values directly,
  so each header is packed once.
* A simulated packet may carry a synthetic payload that is never materialised: the encoders
  take ``payload_length`` (transport) or ``total_length`` (IPv4) larger than the bytes given,
  put the true length in the header, and take the missing payload as zeros for the checksum.
* Decoding, bytes back into headers, is in :mod:`primogeni.net.decode`.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address
from typing import TypeAlias

from primogeni.errors import PrimoError

BytesLike: TypeAlias = bytes | bytearray | memoryview
Address: TypeAlias = int | IPv4Address

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17

# ICMP types (RFC 792) and the codes we generate.
ICMP_ECHO_REPLY = 0
ICMP_DEST_UNREACHABLE = 3
ICMP_ECHO_REQUEST = 8
ICMP_TIME_EXCEEDED = 11
ICMP_PARAMETER_PROBLEM = 12
ICMP_NET_UNREACHABLE = 0  # codes of ICMP_DEST_UNREACHABLE
ICMP_HOST_UNREACHABLE = 1
ICMP_PROTOCOL_UNREACHABLE = 2
ICMP_PORT_UNREACHABLE = 3
ICMP_FRAGMENTATION_NEEDED = 4
ICMP_TTL_EXCEEDED = 0  # codes of ICMP_TIME_EXCEEDED
ICMP_REASSEMBLY_TIME_EXCEEDED = 1

# TCP flag bits (RFC 793, RFC 3168).
TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10
TCP_URG = 0x20
TCP_ECE = 0x40
TCP_CWR = 0x80

IPV4_HEADER_LEN = 20
UDP_HEADER_LEN = 8
TCP_HEADER_LEN = 20
ICMP_HEADER_LEN = 8
TCP_MAX_OPTIONS_LEN = 40
TCP_MAX_WSCALE = 14  # RFC 7323 section 2.3

_IPV4 = struct.Struct("!BBHHHBBHII")
_UDP = struct.Struct("!HHHH")
_TCP = struct.Struct("!HHIIHHHH")
_ICMP = struct.Struct("!BBHI")
_TCP_OPT_MSS = struct.Struct("!BBH")
_TCP_OPT_TS = struct.Struct("!BBII")
_TCP_SACK_BLOCK = struct.Struct("!II")

_DF = 0x4000
_MF = 0x2000


class PacketError(PrimoError, ValueError):
    """Bytes are not a valid header, or header fields cannot be encoded.

    ``protocol`` names the layer (``"ipv4"``, ``"tcp"``, ``"udp"``, ``"icmp"``) and ``reason``
    says what is wrong.
    """

    def __init__(self, protocol: str, reason: str):
        self.protocol = protocol
        self.reason = reason
        super().__init__(f"{protocol}: {reason}")


# --- checksum ------------------------------------------------------------------------------


def _fold(total: int) -> int:
    """The checksum (one's complement of the one's complement sum) of words adding to ``total``.

    ``total`` is any non-negative integer congruent to the sum of the 16-bit words mod 0xFFFF;
    it is zero only when every word is zero (the sum of no words is +0, checksum 0xFFFF).
    """
    s = total % 0xFFFF
    if s == 0 and total:
        return 0  # the one's complement sum is 0xFFFF ("-0")
    return 0xFFFF - s


def _word_total(data: BytesLike) -> int:
    """An integer congruent (mod 0xFFFF) to the 16-bit word sum of ``data``, zero-padded."""
    n = int.from_bytes(data, "big")
    return n << 8 if len(data) & 1 else n


def internet_checksum(data: BytesLike) -> int:
    """The RFC 1071 internet checksum of ``data`` (odd length is padded with a zero byte).

    Over a header that holds a correct checksum the result is 0.
    """
    return _fold(_word_total(data))


def _pseudo_total(src: int, dst: int, proto: int, length: int) -> int:
    return (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + proto + length


# --- encoders ------------------------------------------------------------------------------


def encode_ipv4(
    src: Address,
    dst: Address,
    proto: int,
    payload: BytesLike,
    ttl: int = 64,
    ident: int = 0,
    tos: int = 0,
    dont_fragment: bool = True,
    total_length: int | None = None,
) -> bytes:
    """An IPv4 packet (RFC 791): a 20-byte header without options, then ``payload``.

    ``total_length`` may exceed ``20 + len(payload)`` to describe a packet whose tail is not
    given (a truncated capture of a packet with a synthetic payload).
    """
    src = int(src)
    dst = int(dst)
    min_length = IPV4_HEADER_LEN + len(payload)
    if total_length is None:
        total_length = min_length
    elif total_length < min_length:
        raise PacketError(
            "ipv4", f"total_length {total_length} is less than the {min_length} bytes given"
        )
    if total_length > 0xFFFF:
        raise PacketError("ipv4", f"total_length {total_length} exceeds 65535")
    flags = _DF if dont_fragment else 0
    checksum = _fold(
        0x4500
        + tos
        + total_length
        + ident
        + flags
        + (ttl << 8)
        + proto
        + (src >> 16)
        + (src & 0xFFFF)
        + (dst >> 16)
        + (dst & 0xFFFF)
    )
    try:
        header = _IPV4.pack(0x45, tos, total_length, ident, flags, ttl, proto, checksum, src, dst)
    except struct.error as e:
        raise PacketError("ipv4", f"field out of range: {e}") from e
    return header + payload


def encode_udp(
    src: Address,
    dst: Address,
    sport: int,
    dport: int,
    payload: BytesLike,
    payload_length: int | None = None,
) -> bytes:
    """A UDP datagram (RFC 768) with its checksum over the IPv4 pseudo-header.

    ``payload_length`` may exceed ``len(payload)``: the length field says so and the missing
    bytes count as zeros for the checksum. A computed checksum of 0 is sent as 0xFFFF.
    """
    src = int(src)
    dst = int(dst)
    n = len(payload)
    if payload_length is None:
        payload_length = n
    elif payload_length < n:
        raise PacketError("udp", f"payload_length {payload_length} is less than the {n} given")
    length = UDP_HEADER_LEN + payload_length
    if length > 0xFFFF:
        raise PacketError("udp", f"length {length} exceeds 65535")
    checksum = _fold(
        _pseudo_total(src, dst, PROTO_UDP, length)
        + sport
        + dport
        + length
        + (_word_total(payload) if n else 0)
    )
    try:
        header = _UDP.pack(sport, dport, length, checksum or 0xFFFF)
    except struct.error as e:
        raise PacketError("udp", f"field out of range: {e}") from e
    return header + payload


def encode_tcp_options(
    mss: int | None = None,
    wscale: int | None = None,
    sack_permitted: bool = False,
    sacks: tuple[tuple[int, int], ...] | list[tuple[int, int]] | None = None,
    timestamps: tuple[int, int] | None = None,
) -> bytes:
    """TCP options in Linux's order and alignment, a multiple of 4 bytes long.

    MSS (kind 2), SACK-permitted (4) + timestamps (8), NOP + window scale (3), NOP NOP + SACK
    blocks (5, each ``(left, right)`` edge); NOPs align each option to 4 bytes.
    """
    parts: list[bytes] = []
    try:
        if mss is not None:
            parts.append(_TCP_OPT_MSS.pack(2, 4, mss))
        if timestamps is not None:
            parts.append(b"\x04\x02" if sack_permitted else b"\x01\x01")
            parts.append(_TCP_OPT_TS.pack(8, 10, timestamps[0], timestamps[1]))
        elif sack_permitted:
            parts.append(b"\x01\x01\x04\x02")
        if wscale is not None:
            if not 0 <= wscale <= TCP_MAX_WSCALE:
                raise PacketError("tcp", f"window scale {wscale} is not in 0..{TCP_MAX_WSCALE}")
            parts.append(bytes((1, 3, 3, wscale)))
        if sacks:
            parts.append(bytes((1, 1, 5, 2 + 8 * len(sacks))))
            parts.extend(_TCP_SACK_BLOCK.pack(left, right) for left, right in sacks)
    except struct.error as e:
        raise PacketError("tcp", f"option out of range: {e}") from e
    options = b"".join(parts)
    if len(options) > TCP_MAX_OPTIONS_LEN:
        raise PacketError(
            "tcp", f"options need {len(options)} bytes, more than {TCP_MAX_OPTIONS_LEN}"
        )
    return options


def encode_tcp(
    src: Address,
    dst: Address,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    payload: BytesLike = b"",
    payload_length: int | None = None,
    mss: int | None = None,
    wscale: int | None = None,
    sack_permitted: bool = False,
    sacks: tuple[tuple[int, int], ...] | list[tuple[int, int]] | None = None,
    timestamps: tuple[int, int] | None = None,
) -> bytes:
    """A TCP segment (RFC 793) with options and its checksum over the IPv4 pseudo-header.

    ``flags`` is an OR of ``TCP_FIN`` .. ``TCP_CWR``; ``window`` is the 16-bit field as sent
    (already scaled down). ``payload_length`` may exceed ``len(payload)``: the missing bytes
    count as zeros for the checksum (TCP has no length field; the IPv4 ``total_length`` of the
    enclosing packet carries it).
    """
    src = int(src)
    dst = int(dst)
    if mss is None and wscale is None and not sack_permitted and not sacks and timestamps is None:
        options = b""
    else:
        options = encode_tcp_options(mss, wscale, sack_permitted, sacks, timestamps)
    n = len(payload)
    if payload_length is None:
        payload_length = n
    elif payload_length < n:
        raise PacketError("tcp", f"payload_length {payload_length} is less than the {n} given")
    header_len = TCP_HEADER_LEN + len(options)
    length = header_len + payload_length
    if length > 0xFFFF:
        raise PacketError("tcp", f"segment length {length} exceeds 65535")
    if flags >> 8:
        raise PacketError("tcp", f"flags {flags:#x} do not fit in 8 bits")
    offset_flags = (header_len << 10) | flags  # data offset in 32-bit words, in the top 4 bits
    checksum = _fold(
        _pseudo_total(src, dst, PROTO_TCP, length)
        + sport
        + dport
        + (seq >> 16)
        + (seq & 0xFFFF)
        + (ack >> 16)
        + (ack & 0xFFFF)
        + offset_flags
        + window
        + (int.from_bytes(options, "big") if options else 0)
        + (_word_total(payload) if n else 0)
    )
    try:
        header = _TCP.pack(sport, dport, seq, ack, offset_flags, window, checksum, 0)
    except struct.error as e:
        raise PacketError("tcp", f"field out of range: {e}") from e
    return header + options + payload


def encode_icmp_echo(type_: int, ident: int, seq: int, payload: BytesLike = b"") -> bytes:
    """An ICMP echo request (type 8) or echo reply (type 0) message (RFC 792)."""
    if type_ not in (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY):
        raise PacketError("icmp", f"type {type_} is not an echo request (8) or reply (0)")
    if not (0 <= ident <= 0xFFFF and 0 <= seq <= 0xFFFF):
        raise PacketError("icmp", f"identifier {ident} or sequence {seq} is not in 0..65535")
    rest = (ident << 16) | seq
    checksum = _fold((type_ << 8) + ident + seq + (_word_total(payload) if payload else 0))
    return _ICMP.pack(type_, 0, checksum, rest) + payload


def encode_icmp_error(type_: int, code: int, original: BytesLike, next_hop_mtu: int = 0) -> bytes:
    """An ICMP error message quoting ``original``'s IPv4 header and first 8 payload bytes.

    ``type_`` is ``ICMP_DEST_UNREACHABLE`` (3) or ``ICMP_TIME_EXCEEDED`` (11). ``next_hop_mtu``
    fills the low 16 bits of the rest-of-header for "fragmentation needed" (RFC 1191).
    ``original`` may be a truncated capture, as long as it holds the IPv4 header.
    """
    if type_ not in (ICMP_DEST_UNREACHABLE, ICMP_TIME_EXCEEDED):
        raise PacketError("icmp", f"type {type_} is not destination unreachable or time exceeded")
    if not 0 <= code <= 0xFF:
        raise PacketError("icmp", f"code {code} is not in 0..255")
    if not 0 <= next_hop_mtu <= 0xFFFF:
        raise PacketError("icmp", f"next-hop MTU {next_hop_mtu} is not in 0..65535")
    if len(original) < IPV4_HEADER_LEN or original[0] >> 4 != 4:
        raise PacketError("icmp", "the quoted original is not an IPv4 packet")
    header_len = (original[0] & 0x0F) * 4
    if len(original) < header_len:
        raise PacketError(
            "icmp", f"the quoted original has {len(original)} bytes, its header needs {header_len}"
        )
    total_length = (original[2] << 8) | original[3]
    quote = bytes(original[: max(header_len, min(header_len + 8, total_length))])
    checksum = _fold((type_ << 8) + code + next_hop_mtu + _word_total(quote))
    return _ICMP.pack(type_, code, checksum, next_hop_mtu) + quote
