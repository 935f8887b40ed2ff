"""Wire-format tests for primogeni.net.packet: golden bytes, round trips, checksums, errors.

Golden vectors were checked by hand (the checksum arithmetic is in the comments), by tshark
(which reports their checksums good), and against the independent struct-and-loop reference
below.
"""

from __future__ import annotations

import random
import struct
from ipaddress import IPv4Address

import pytest

from primogeni.errors import PrimoError
from primogeni.net.decode import (
    IcmpHeader,
    TcpHeader,
    UdpHeader,
    decode_icmp,
    decode_ip_packet,
    decode_ipv4,
    decode_tcp,
    decode_udp,
)
from primogeni.net.packet import (
    ICMP_DEST_UNREACHABLE,
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    ICMP_FRAGMENTATION_NEEDED,
    ICMP_TIME_EXCEEDED,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    TCP_ACK,
    TCP_CWR,
    TCP_ECE,
    TCP_FIN,
    TCP_PSH,
    TCP_RST,
    TCP_SYN,
    TCP_URG,
    PacketError,
    encode_icmp_echo,
    encode_icmp_error,
    encode_ipv4,
    encode_tcp,
    encode_tcp_options,
    encode_udp,
    internet_checksum,
)

SRC = 0xC0A80001  # 192.168.0.1
DST = 0xC0A800C7  # 192.168.0.199


def reference_checksum(data: bytes) -> int:
    """RFC 1071 the slow, obvious way: add 16-bit words with end-around carry, complement."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for (word,) in struct.iter_unpack("!H", data):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def pseudo_header(src: int, dst: int, proto: int, length: int) -> bytes:
    return struct.pack("!IIBBH", src, dst, 0, proto, length)


# --- checksum ------------------------------------------------------------------------------


def test_checksum_of_rfc1071_example() -> None:
    # RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2; the checksum is ~ddf2.
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D


@pytest.mark.parametrize("size", [0, 1, 2, 3, 19, 20, 40, 41, 1479, 1480, 9000])
def test_checksum_agrees_with_reference(size: int) -> None:
    rng = random.Random(size)
    for _ in range(50):
        data = rng.randbytes(size)
        assert internet_checksum(data) == reference_checksum(data)
    for fill in (b"\x00", b"\xff"):
        assert internet_checksum(fill * size) == reference_checksum(fill * size)


def test_checksum_accepts_memoryview_and_bytearray() -> None:
    data = bytes(range(41))
    assert internet_checksum(memoryview(data)) == internet_checksum(bytearray(data))
    assert internet_checksum(memoryview(data)) == reference_checksum(data)


# --- IPv4 ----------------------------------------------------------------------------------


def test_ipv4_golden_header() -> None:
    # The well-known example header (Wikipedia, "IPv4 header checksum"): checksum b861.
    payload = bytes(0x73 - 20)
    packet = encode_ipv4(SRC, DST, PROTO_UDP, payload, ttl=64, ident=0)
    assert packet[:20] == bytes.fromhex("4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7")
    assert packet[20:] == payload
    assert internet_checksum(packet[:20]) == 0


def test_ipv4_fields_round_trip() -> None:
    packet = encode_ipv4(
        IPv4Address("10.1.2.3"),
        IPv4Address("10.4.5.6"),
        PROTO_TCP,
        b"abc",
        ttl=3,
        ident=0xBEEF,
        tos=0x10,
        dont_fragment=False,
    )
    ip = decode_ipv4(packet)
    assert ip.header_len == 20
    assert ip.total_length == 23
    assert (ip.ttl, ip.proto, ip.ident, ip.tos) == (3, PROTO_TCP, 0xBEEF, 0x10)
    assert ip.src_address == IPv4Address("10.1.2.3")
    assert ip.dst == int(IPv4Address("10.4.5.6"))
    assert not ip.dont_fragment and not ip.more_fragments and ip.frag_offset == 0
    assert ip.payload == b"abc"
    assert ip.checksum_ok and not ip.truncated
    assert decode_ipv4(encode_ipv4(SRC, DST, PROTO_TCP, b"")).dont_fragment


def test_ipv4_total_length_claims_more_than_given() -> None:
    packet = encode_ipv4(SRC, DST, PROTO_TCP, b"x" * 20, total_length=1500)
    assert len(packet) == 40
    assert struct.unpack_from("!H", packet, 2)[0] == 1500
    ip = decode_ipv4(packet)
    assert ip.total_length == 1500 and ip.truncated and ip.checksum_ok
    assert ip.payload == b"x" * 20


def test_ipv4_decode_ignores_link_padding() -> None:
    ip = decode_ipv4(encode_ipv4(SRC, DST, PROTO_UDP, b"ab") + b"\0" * 10)
    assert ip.payload == b"ab" and not ip.truncated


def test_ipv4_decode_options_and_bad_checksum() -> None:
    header = bytearray(encode_ipv4(SRC, DST, PROTO_UDP, b""))
    header[0] = 0x46  # header length 24: one 4-byte option (NOPs and end of list)
    header[2:4] = (24).to_bytes(2, "big")
    header[10:12] = b"\0\0"
    header += b"\x01\x01\x01\x00"
    header[10:12] = reference_checksum(bytes(header)).to_bytes(2, "big")
    ip = decode_ipv4(bytes(header))
    assert ip.header_len == 24 and ip.options == b"\x01\x01\x01\x00" and ip.checksum_ok
    header[8] -= 1  # a router decremented TTL without fixing the checksum
    assert not decode_ipv4(bytes(header)).checksum_ok


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"total_length": 10}, "less than"),
        ({"total_length": 70000}, "exceeds 65535"),
        ({"ttl": 256}, "out of range"),
        ({"ident": -1}, "out of range"),
    ],
)
def test_ipv4_encode_rejects_bad_fields(kwargs: dict[str, int], words: str) -> None:
    with pytest.raises(PacketError, match=words) as info:
        encode_ipv4(SRC, DST, PROTO_TCP, b"abc", **kwargs)  # type: ignore[arg-type]
    assert info.value.protocol == "ipv4"


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"\x45\x00", "truncated: 2 bytes"),
        (bytes.fromhex("65000014000040004006") + bytes(10), "version is 6"),
        (bytes.fromhex("44000014000040004006") + bytes(10), "header length 16"),
        (bytes.fromhex("4f000014000040004006") + bytes(10), "the header needs 60"),
        (bytes.fromhex("45000010000040004006") + bytes(10), "total length 16"),
    ],
)
def test_ipv4_decode_errors(data: bytes, words: str) -> None:
    with pytest.raises(PacketError, match=words) as info:
        decode_ipv4(data)
    assert isinstance(info.value, ValueError) and isinstance(info.value, PrimoError)
    assert str(info.value).startswith("ipv4: ")


# --- UDP -----------------------------------------------------------------------------------


def test_udp_golden_datagram() -> None:
    # pseudo c0a8+0001+c0a8+00c7+0011+000d, header 3039+8235+000d, "hello" 6865+6c6c+6f00:
    # 0x37882 folds to 0x7885, whose complement is 0x877a.
    datagram = encode_udp(SRC, DST, 12345, 33333, b"hello")
    assert datagram == bytes.fromhex("30398235000d877a68656c6c6f")
    assert reference_checksum(pseudo_header(SRC, DST, PROTO_UDP, 13) + datagram) == 0


def test_udp_round_trip() -> None:
    datagram = encode_udp(IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2"), 5, 7, b"xyz")
    udp = decode_udp(datagram, IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2"))
    assert udp == UdpHeader(5, 7, 11, udp.checksum, b"xyz", True)
    assert decode_udp(datagram).checksum_ok is None  # no addresses, nothing to check
    assert decode_udp(datagram, 0x0A000001, 0x0A000003).checksum_ok is False


def test_udp_synthetic_payload_counts_as_zeros() -> None:
    short = encode_udp(SRC, DST, 1000, 2000, b"ab", payload_length=1000)
    full = encode_udp(SRC, DST, 1000, 2000, b"ab" + bytes(998))
    assert short == full[:10]
    assert decode_udp(short, SRC, DST).checksum_ok is None  # truncated: not checkable
    assert decode_udp(short, SRC, DST).length == 1008


def test_udp_zero_checksum_is_sent_as_ffff() -> None:
    # A payload word equal to the checksum of the datagram without it makes the sum 0xffff.
    word = encode_udp(SRC, DST, 1, 2, b"\0\0")[6:8]
    datagram = encode_udp(SRC, DST, 1, 2, word)
    assert datagram[6:8] == b"\xff\xff"
    assert decode_udp(datagram, SRC, DST).checksum_ok is True


def test_udp_errors() -> None:
    with pytest.raises(PacketError, match="out of range"):
        encode_udp(SRC, DST, 70000, 1, b"")
    with pytest.raises(PacketError, match="exceeds 65535"):
        encode_udp(SRC, DST, 1, 1, b"", payload_length=65530)
    with pytest.raises(PacketError, match="less than the 3 given"):
        encode_udp(SRC, DST, 1, 1, b"abc", payload_length=2)
    with pytest.raises(PacketError, match="truncated: 4 bytes"):
        decode_udp(b"\0" * 4)
    with pytest.raises(PacketError, match="length field 7"):
        decode_udp(bytes.fromhex("0001000200070000"))


# --- TCP -----------------------------------------------------------------------------------

GOLDEN_SYN = bytes.fromhex(
    "9c400050"  # ports 40000 -> 80
    "01020304"  # seq
    "00000000"  # ack
    "a002faf0"  # data offset 10 (40 bytes), SYN, window 64240
    "e5f90000"  # checksum, urgent pointer
    "020405b4"  # MSS 1460
    "0402080a1122334400000000"  # SACK permitted, timestamps 0x11223344 / 0
    "01030307"  # NOP, window scale 7
)


def test_tcp_golden_syn_in_linux_option_layout() -> None:
    syn = encode_tcp(
        SRC,
        DST,
        40000,
        80,
        0x01020304,
        0,
        TCP_SYN,
        64240,
        mss=1460,
        wscale=7,
        sack_permitted=True,
        timestamps=(0x11223344, 0),
    )
    assert syn == GOLDEN_SYN
    assert reference_checksum(pseudo_header(SRC, DST, PROTO_TCP, len(syn)) + syn) == 0


def test_tcp_syn_round_trip() -> None:
    tcp = decode_tcp(GOLDEN_SYN, SRC, DST)
    assert (tcp.sport, tcp.dport, tcp.seq, tcp.ack) == (40000, 80, 0x01020304, 0)
    assert (tcp.header_len, tcp.flags, tcp.window, tcp.urgent) == (40, TCP_SYN, 64240, 0)
    assert (tcp.mss, tcp.wscale, tcp.sack_permitted) == (1460, 7, True)
    assert tcp.timestamps == (0x11223344, 0) and tcp.sacks == ()
    assert tcp.payload == b"" and tcp.checksum_ok is True


def test_tcp_golden_data_segment_with_reference_encoder() -> None:
    # Built independently with struct: header, then NOP NOP SACK(2 blocks), then payload.
    payload = b"hello, world!"  # odd length: the checksum pads with a zero byte
    options = bytes.fromhex("01010512") + struct.pack("!IIII", 100, 200, 300, 400)
    header = struct.pack("!HHIIBBHHH", 5001, 22, 7, 9, (20 + 20) << 2, 0x18, 512, 0, 0)
    segment = header + options + payload
    checksum = reference_checksum(pseudo_header(SRC, DST, PROTO_TCP, len(segment)) + segment)
    expected = segment[:16] + struct.pack("!H", checksum) + segment[18:]
    got = encode_tcp(
        SRC, DST, 5001, 22, 7, 9, TCP_PSH | TCP_ACK, 512, payload, sacks=[(100, 200), (300, 400)]
    )
    assert got == expected
    tcp = decode_tcp(got, SRC, DST)
    assert tcp.sacks == ((100, 200), (300, 400)) and tcp.payload == payload
    assert tcp.checksum_ok is True and tcp.mss is None and tcp.wscale is None


def test_tcp_synthetic_payload_counts_as_zeros() -> None:
    short = encode_tcp(SRC, DST, 1, 2, 3, 4, TCP_ACK, 100, b"ab", payload_length=1460)
    full = encode_tcp(SRC, DST, 1, 2, 3, 4, TCP_ACK, 100, b"ab" + bytes(1458))
    assert short == full[:22]
    tcp = decode_tcp(short, SRC, DST, length=20 + 1460)
    assert tcp.checksum_ok is None and tcp.payload == b"ab"


def test_tcp_flag_bits() -> None:
    flags = [TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK, TCP_URG, TCP_ECE, TCP_CWR]
    assert flags == [1 << i for i in range(8)]
    every = encode_tcp(SRC, DST, 1, 2, 0, 0, 0xFF, 0)
    assert every[13] == 0xFF and every[12] == 0x50
    assert decode_tcp(every, SRC, DST).flags == 0xFF


def test_tcp_option_alignment_and_limits() -> None:
    assert encode_tcp_options(sack_permitted=True) == bytes.fromhex("01010402")
    assert encode_tcp_options(wscale=0) == bytes.fromhex("01030300")
    assert encode_tcp_options() == b""
    four_blocks = encode_tcp_options(sacks=[(i, i + 1) for i in range(4)])
    assert len(four_blocks) == 36
    with pytest.raises(PacketError, match="more than 40"):
        encode_tcp_options(timestamps=(1, 2), sacks=[(i, i + 1) for i in range(4)])
    with pytest.raises(PacketError, match="window scale 15"):
        encode_tcp_options(wscale=15)
    with pytest.raises(PacketError, match="out of range"):
        encode_tcp_options(mss=70000)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"flags": 0x100}, "do not fit in 8 bits"),
        ({"seq": 1 << 32}, "out of range"),
        ({"window": 65536}, "out of range"),
        ({"sport": -1}, "out of range"),
        ({"payload_length": 65535}, "exceeds 65535"),
    ],
)
def test_tcp_encode_errors(kwargs: dict[str, int], words: str) -> None:
    args: dict[str, int] = {"sport": 1, "dport": 2, "seq": 0, "ack": 0, "flags": 0, "window": 0}
    args.update(kwargs)
    with pytest.raises(PacketError, match=words) as info:
        encode_tcp(SRC, DST, **args)  # type: ignore[arg-type]
    assert info.value.protocol == "tcp"


def _with_options(options: bytes) -> bytes:
    header = struct.pack("!HHIIBBHHH", 1, 2, 0, 0, (20 + len(options)) << 2, 0x02, 0, 0, 0)
    return header + options


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (bytes(19), "truncated: 19 bytes"),
        (struct.pack("!HHIIBBHHH", 1, 2, 0, 0, 4 << 4, 2, 0, 0, 0), "header length 16"),
        (_with_options(b"\x02\x04\x05\xb4")[:-1], "truncated: 23 bytes, the header needs 24"),
        (_with_options(b"\x01\x01\x01\x02"), "has no length byte"),
        (_with_options(b"\x02\x00\x00\x00"), "bad length 0"),
        (_with_options(b"\x02\x08\x00\x00"), "bad length 8"),
        (_with_options(b"\x02\x03\x00\x01"), "MSS option has length 3"),
        (_with_options(b"\x03\x04\x07\x00"), "window scale option has length 4"),
        (_with_options(b"\x04\x03\x00\x00"), "SACK-permitted option has length 3"),
        (_with_options(b"\x05\x04\x00\x00"), "SACK option has length 4"),
        (_with_options(b"\x08\x04\x00\x00"), "timestamps option has length 4"),
    ],
)
def test_tcp_decode_errors(data: bytes, words: str) -> None:
    with pytest.raises(PacketError, match=words) as info:
        decode_tcp(data)
    assert str(info.value).startswith("tcp: ")


def test_tcp_decode_skips_unknown_options_and_stops_at_end_of_list() -> None:
    # kind 30 (MPTCP) length 4, then end-of-list followed by garbage that must be ignored.
    tcp = decode_tcp(_with_options(b"\x1e\x04\xaa\xbb\x00\xff\xff\xff"))
    assert tcp.options == b"\x1e\x04\xaa\xbb\x00\xff\xff\xff" and tcp.mss is None


def test_tcp_bad_checksum_detected() -> None:
    segment = bytearray(GOLDEN_SYN)
    segment[4] ^= 0x01  # flip a bit of the sequence number
    assert decode_tcp(bytes(segment), SRC, DST).checksum_ok is False


# --- ICMP ----------------------------------------------------------------------------------


def test_icmp_echo_golden() -> None:
    # 0800+1234+0001 + "abcdefgh" words = 0x1abc9, folds to 0xabca, complement 0x5435.
    message = encode_icmp_echo(ICMP_ECHO_REQUEST, 0x1234, 1, b"abcdefgh")
    assert message == bytes.fromhex("0800543512340001") + b"abcdefgh"
    icmp = decode_icmp(message)
    assert icmp == IcmpHeader(8, 0, 0x5435, 0x12340001, b"abcdefgh", True)
    assert (icmp.ident, icmp.seq) == (0x1234, 1)


def test_icmp_echo_reply_and_errors() -> None:
    reply = encode_icmp_echo(ICMP_ECHO_REPLY, 7, 65535)
    assert decode_icmp(reply).type == ICMP_ECHO_REPLY
    assert internet_checksum(reply) == 0
    with pytest.raises(PacketError, match="type 3 is not an echo"):
        encode_icmp_echo(3, 1, 1)
    with pytest.raises(PacketError, match=r"not in 0\.\.65535"):
        encode_icmp_echo(ICMP_ECHO_REQUEST, 1 << 16, 1)
    with pytest.raises(PacketError, match="truncated: 7 bytes"):
        decode_icmp(reply[:7])
    corrupted = bytearray(reply)
    corrupted[4] ^= 0x80
    assert decode_icmp(bytes(corrupted)).checksum_ok is False


def test_icmp_time_exceeded_quotes_header_and_eight_bytes() -> None:
    segment = encode_tcp(SRC, DST, 40000, 80, 5, 6, TCP_ACK, 100, b"", payload_length=1460)
    original = encode_ipv4(SRC, DST, PROTO_TCP, segment, ttl=1, total_length=1500)
    message = encode_icmp_error(ICMP_TIME_EXCEEDED, 0, original)
    assert len(message) == 8 + 20 + 8
    assert message[:2] == b"\x0b\x00" and message[4:8] == bytes(4)
    assert message[8:] == original[:28]
    assert internet_checksum(message) == 0
    icmp = decode_icmp(message)
    assert icmp.checksum_ok is True and icmp.type == ICMP_TIME_EXCEEDED
    inner = decode_ipv4(icmp.payload)
    assert (inner.src, inner.dst, inner.ttl, inner.total_length) == (SRC, DST, 1, 1500)
    assert inner.payload[:4] == struct.pack("!HH", 40000, 80)


def test_icmp_fragmentation_needed_and_short_original() -> None:
    original = encode_ipv4(SRC, DST, PROTO_UDP, encode_udp(SRC, DST, 1, 2, b""))  # 28 bytes
    message = encode_icmp_error(
        ICMP_DEST_UNREACHABLE, ICMP_FRAGMENTATION_NEEDED, original + b"pad", next_hop_mtu=1400
    )
    icmp = decode_icmp(message)
    assert icmp.code == ICMP_FRAGMENTATION_NEEDED and icmp.next_hop_mtu == 1400
    assert icmp.payload == original  # link padding beyond total_length is not quoted
    tiny = encode_ipv4(SRC, DST, PROTO_UDP, b"abc")  # fewer than 8 payload bytes
    assert decode_icmp(encode_icmp_error(ICMP_DEST_UNREACHABLE, 3, tiny)).payload == tiny


def test_icmp_error_rejects_bad_input() -> None:
    with pytest.raises(PacketError, match="type 8 is not destination"):
        encode_icmp_error(ICMP_ECHO_REQUEST, 0, bytes(28))
    with pytest.raises(PacketError, match="not an IPv4 packet"):
        encode_icmp_error(ICMP_TIME_EXCEEDED, 0, bytes(28))
    with pytest.raises(PacketError, match="its header needs 24"):
        encode_icmp_error(ICMP_TIME_EXCEEDED, 0, b"\x46" + bytes(21))
    with pytest.raises(PacketError, match="next-hop MTU"):
        encode_icmp_error(ICMP_DEST_UNREACHABLE, 4, bytes(28), next_hop_mtu=-1)


# --- whole packets -------------------------------------------------------------------------


def test_decode_ip_packet_for_each_protocol() -> None:
    tcp_packet = encode_ipv4(SRC, DST, PROTO_TCP, GOLDEN_SYN)
    ip, tcp = decode_ip_packet(tcp_packet)
    assert ip.checksum_ok and isinstance(tcp, TcpHeader) and tcp.checksum_ok is True

    udp_packet = encode_ipv4(SRC, DST, PROTO_UDP, encode_udp(SRC, DST, 1, 2, b"x"))
    _, udp = decode_ip_packet(udp_packet)
    assert isinstance(udp, UdpHeader) and udp.checksum_ok is True

    icmp_packet = encode_ipv4(SRC, DST, PROTO_ICMP, encode_icmp_echo(ICMP_ECHO_REQUEST, 1, 2))
    _, icmp = decode_ip_packet(icmp_packet)
    assert isinstance(icmp, IcmpHeader) and icmp.checksum_ok is True

    assert decode_ip_packet(encode_ipv4(SRC, DST, 47, b"gre!"))[1] is None


def test_decode_ip_packet_truncated_capture() -> None:
    segment = encode_tcp(SRC, DST, 1, 2, 3, 4, TCP_ACK, 100, payload_length=1460, mss=1400)
    packet = encode_ipv4(SRC, DST, PROTO_TCP, segment, total_length=1500)
    ip, tcp = decode_ip_packet(packet)
    assert ip.truncated and ip.checksum_ok
    assert isinstance(tcp, TcpHeader) and tcp.checksum_ok is None and tcp.mss == 1400
    # The capture stops inside the TCP header (options): no transport header.
    assert decode_ip_packet(packet[:38])[1] is None
    assert decode_ip_packet(packet[:30])[1] is None
    echo = encode_ipv4(SRC, DST, PROTO_ICMP, encode_icmp_echo(ICMP_ECHO_REQUEST, 1, 2, b"12345"))
    _, icmp = decode_ip_packet(echo[:30])
    assert isinstance(icmp, IcmpHeader) and icmp.checksum_ok is None


def test_decode_ip_packet_leaves_fragments_alone() -> None:
    packet = bytearray(encode_ipv4(SRC, DST, PROTO_UDP, encode_udp(SRC, DST, 1, 2, b"x")))
    packet[6] |= 0x20  # more fragments
    assert decode_ip_packet(bytes(packet))[1] is None
