"""Software segmentation (primogeni.net.gso): round trips, per-segment headers and checksums,
partial checksums completed, incremental TTL rewrite (RFC 1624), virtio_net_hdr."""

from __future__ import annotations

import random

import pytest

from primogeni.net.decode import decode_ip_packet, decode_ipv4
from primogeni.net.gso import (
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_LEN,
    VirtioNetHdr,
    checksum_adjust,
    complete_checksum,
    pseudo_header_sum,
    segment_count,
    segment_tcpv4,
    set_ttl,
    tcp_layout,
)
from primogeni.net.packet import (
    PROTO_TCP,
    PROTO_UDP,
    TCP_ACK,
    TCP_CWR,
    TCP_FIN,
    TCP_PSH,
    PacketError,
    encode_ipv4,
    encode_tcp,
    encode_udp,
    internet_checksum,
)

SRC, DST = 0x0A000001, 0x0A000106


def _super(payload: bytes, flags: int = TCP_ACK | TCP_PSH, seq: int = 1000, ident: int = 7,
           partial: bool = True) -> bytes:
    """A super-frame as a TSO kernel hands it over: timestamps option, valid IP checksum, and
    (partial) the pseudo-header sum of the whole length in the TCP checksum field."""
    tcp = bytearray(encode_tcp(SRC, DST, 40000, 5201, seq, 555, flags, 512, payload, timestamps=(11, 22)))
    if partial:
        check = pseudo_header_sum(SRC, DST, PROTO_TCP, len(tcp))
        tcp[16], tcp[17] = check >> 8, check & 0xFF
    return encode_ipv4(SRC, DST, PROTO_TCP, bytes(tcp), ttl=64, ident=ident)


@pytest.mark.parametrize("partial", [True, False])
def test_segments_reassemble_to_the_payload_with_valid_checksums(partial):
    payload = random.Random(3).randbytes(10_000)
    ip = _super(payload, flags=TCP_ACK | TCP_PSH | TCP_FIN | TCP_CWR, seq=0xFFFFF000)
    segs = segment_tcpv4(ip, 1448, partial=partial)
    assert len(segs) == segment_count(10_000, 1448) == 7
    data = b""
    for k, seg in enumerate(segs):
        hdr, tcp = decode_ip_packet(seg if not partial else complete_checksum(seg, 20, 16))
        assert hdr.checksum_ok and hdr.ident == 7 + k and hdr.ttl == 64 and hdr.total_length == len(seg)
        assert tcp is not None and tcp.checksum_ok
        assert tcp.seq == (0xFFFFF000 + k * 1448) & 0xFFFFFFFF  # wraps around 2**32
        assert tcp.timestamps == (11, 22) and tcp.ack == 555 and tcp.window == 512
        assert bool(tcp.flags & TCP_CWR) == (k == 0)
        assert bool(tcp.flags & (TCP_FIN | TCP_PSH)) == (k == len(segs) - 1)
        assert tcp.flags & (TCP_FIN | TCP_PSH) in (0, TCP_FIN | TCP_PSH) and tcp.flags & TCP_ACK
        assert len(tcp.payload) == (1448 if k < 6 else 10_000 - 6 * 1448)
        if partial:  # the field holds the pseudo-header sum of this segment's length
            assert int.from_bytes(seg[36:38], "big") == pseudo_header_sum(SRC, DST, PROTO_TCP, len(seg) - 20)
        data += tcp.payload
    assert data == payload


def test_a_payload_within_one_mss_comes_back_as_the_same_packet():
    payload = bytes(range(200))
    full = _super(payload, partial=False)
    assert segment_tcpv4(full, 1448, partial=False) == [full]
    assert segment_tcpv4(_super(payload), 1448, partial=True) == [_super(payload)]
    empty = _super(b"", flags=TCP_ACK)
    assert segment_tcpv4(empty, 1448, partial=False) == [_super(b"", flags=TCP_ACK, partial=False)]


def test_exact_multiple_of_mss_and_ip_options():
    payload = bytes(3 * 1000)
    tcp = encode_tcp(SRC, DST, 1, 2, 0, 0, TCP_ACK, 100, payload)
    options = bytes([0x94, 4, 0, 0])  # router alert: a 24-byte IP header
    hdr = bytearray(encode_ipv4(SRC, DST, PROTO_TCP, b"", ident=0xFFFF)[:20])
    hdr[0] = 0x46
    total = 24 + len(tcp)
    hdr[2:4] = total.to_bytes(2, "big")
    hdr[10:12] = b"\0\0"
    head = bytes(hdr) + options
    head = head[:10] + internet_checksum(head).to_bytes(2, "big") + head[12:]
    segs = segment_tcpv4(head + tcp, 1000, partial=False)
    assert [len(x) for x in segs] == [24 + 20 + 1000] * 3
    ids = [decode_ipv4(x).ident for x in segs]
    assert ids == [0xFFFF, 0, 1]  # the IP id wraps
    for x in segs:
        ip, t = decode_ip_packet(x)
        assert ip.checksum_ok and ip.options == options and t is not None and t.checksum_ok


def test_complete_checksum_of_a_partial_udp_datagram():
    udp = bytearray(encode_udp(SRC, DST, 5000, 53, b"hello world!"))
    good = bytes(udp)
    check = pseudo_header_sum(SRC, DST, PROTO_UDP, len(udp))
    udp[6], udp[7] = check >> 8, check & 0xFF
    ip = encode_ipv4(SRC, DST, PROTO_UDP, bytes(udp))
    assert complete_checksum(ip, 20, 6)[20:] == good


def test_checksum_adjust_is_rfc1624_equation_3():
    # RFC 1624 section 4: HC = 0xDD2F, m = 0x5555 -> m' = 0x3285 gives HC' = 0x0000 (not 0xFFFF)
    assert checksum_adjust(0xDD2F, 0x5555, 0x3285) == 0x0000


def test_set_ttl_matches_a_full_recomputation():
    rng = random.Random(5)
    for _ in range(300):
        ip = bytearray(encode_ipv4(rng.getrandbits(32), rng.getrandbits(32), rng.randrange(256), b"",
                                   ttl=rng.randrange(1, 256), ident=rng.getrandbits(16), tos=rng.randrange(256)))
        ttl = rng.randrange(256)
        set_ttl(ip, ttl)
        assert ip[8] == ttl and internet_checksum(ip) == 0
    head = bytearray(encode_ipv4(SRC, DST, PROTO_TCP, b"")[:12])  # 12 bytes are enough
    set_ttl(head, 3)
    assert head[8] == 3
    with pytest.raises(PacketError):
        set_ttl(head, 256)


def test_errors_name_what_is_wrong():
    with pytest.raises(PacketError, match="not TCP"):
        segment_tcpv4(encode_ipv4(SRC, DST, PROTO_UDP, encode_udp(SRC, DST, 1, 2, b"x")), 100, partial=False)
    with pytest.raises(PacketError, match="MSS"):
        segment_tcpv4(_super(b"abc"), 0, partial=True)
    frag = bytearray(_super(b"abc"))
    frag[6] |= 0x20  # more fragments
    with pytest.raises(PacketError, match="fragment"):
        tcp_layout(frag)
    with pytest.raises(PacketError, match="lengths"):
        tcp_layout(_super(b"abcdef")[:50])


def test_virtio_net_hdr_packs_as_the_kernel_struct():
    h = VirtioNetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN, 66, 1448, 34, 16)
    raw = h.pack()
    assert len(raw) == VIRTIO_NET_HDR_LEN == 10
    assert raw == bytes([1, 0x81, 66, 0, 0xA8, 0x05, 34, 0, 16, 0])
    assert VirtioNetHdr.unpack(raw) == h and h.needs_csum and h.gso_kind == VIRTIO_NET_HDR_GSO_TCPV4
    with pytest.raises(PacketError):
        VirtioNetHdr.unpack(raw[:9])
