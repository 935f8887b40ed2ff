"""Tests for primogeni.net.pcap: exact file bytes, round trips, errors, and tshark reading it."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from primogeni.errors import PrimoError
from primogeni.net.packet import (
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    ICMP_TIME_EXCEEDED,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    TCP_ACK,
    TCP_PSH,
    TCP_SYN,
    encode_icmp_echo,
    encode_icmp_error,
    encode_ipv4,
    encode_tcp,
    encode_udp,
)
from primogeni.net.pcap import (
    LINKTYPE_IPV4,
    LINKTYPE_RAW,
    PcapError,
    PcapReader,
    PcapRecord,
    PcapWriter,
    read_pcap,
)

FILE_HEADER = struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 101)


def test_file_and_record_bytes_are_exact() -> None:
    out = io.BytesIO()
    with PcapWriter(out) as writer:
        writer.write(3_000_000_007, b"\x45abc")
        writer.write(4_500_000_000, b"\x45" * 10, orig_len=1500)
    expected = (
        FILE_HEADER
        + struct.pack("<IIII", 3, 7, 4, 4)
        + b"\x45abc"
        + struct.pack("<IIII", 4, 500_000_000, 10, 1500)
        + b"\x45" * 10
    )
    assert out.getvalue() == expected
    assert not out.closed  # a file we were given is left open


def test_round_trip_through_a_path(tmp_path: Path) -> None:
    path = tmp_path / "x.pcap"
    packets = [(0, b"\x45" * 20, 20), (1, b"\x45" * 40, 1500), (10**18, b"\x45" * 5, 5)]
    with PcapWriter(path) as writer:
        for time_ns, data, orig_len in packets:
            writer.write(time_ns, data, orig_len)
    assert list(read_pcap(path)) == [PcapRecord(*p) for p in packets]
    assert list(read_pcap(str(path)))[1].orig_len == 1500
    with PcapReader(path) as reader:
        assert (reader.linktype, reader.snaplen, reader.nanosecond) == (LINKTYPE_RAW, 65535, True)


def test_snaplen_truncates_and_keeps_original_length() -> None:
    out = io.BytesIO()
    writer = PcapWriter(out, snaplen=64, linktype=LINKTYPE_IPV4)
    writer.write(5, bytes(100))
    writer.write(6, bytes(30), orig_len=1000)
    writer.close()
    writer.close()  # harmless
    out.seek(0)
    reader = PcapReader(out)
    assert (reader.linktype, reader.snaplen) == (LINKTYPE_IPV4, 64)
    assert list(reader) == [PcapRecord(5, bytes(64), 100), PcapRecord(6, bytes(30), 1000)]


@pytest.mark.parametrize("order", ["<", ">"])
def test_reader_accepts_either_byte_order_and_microseconds(order: str) -> None:
    data = struct.pack(order + "IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)
    data += struct.pack(order + "IIII", 12, 345678, 3, 60) + b"abc"
    reader = PcapReader(io.BytesIO(data))
    assert not reader.nanosecond and reader.linktype == 1
    assert list(reader) == [PcapRecord(12_345_678_000, b"abc", 60)]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"\xd4\xc3", "truncated file header"),
        (b"\x0a\x0d\x0d\x0a" + bytes(20), "not a pcap file"),
        (FILE_HEADER + bytes(7), "truncated record header"),
        (FILE_HEADER + struct.pack("<IIII", 0, 0, 10, 10) + bytes(4), "4 of 10 captured bytes"),
    ],
)
def test_reader_errors(data: bytes, words: str) -> None:
    with pytest.raises(PcapError, match=words) as info:
        list(read_pcap(io.BytesIO(data)))
    assert isinstance(info.value, ValueError) and isinstance(info.value, PrimoError)


def test_writer_errors(tmp_path: Path) -> None:
    with pytest.raises(PcapError, match="snaplen 0"):
        PcapWriter(io.BytesIO(), snaplen=0)
    path = tmp_path / "e.pcap"
    writer = PcapWriter(path)
    with pytest.raises(PcapError, match="orig_len 3 is less than the 4 bytes") as info:
        writer.write(0, b"abcd", orig_len=3)
    assert info.value.path == str(path)
    with pytest.raises(PcapError, match="before the epoch"):
        writer.write(-1, b"abcd")
    writer.close()
    with pytest.raises(PcapError, match="closed"):
        writer.write(0, b"abcd")


# --- the real thing: tshark reads what we write --------------------------------------------

A = 0x0A000001  # 10.0.0.1
B = 0x0A000002  # 10.0.0.2
R = 0x0A0000FE  # 10.0.0.254, a router


def _write_capture(path: Path) -> None:
    with PcapWriter(path) as writer:
        syn = encode_tcp(
            A, B, 40000, 80, 1000, 0, TCP_SYN, 64240,
            mss=1460, wscale=7, sack_permitted=True, timestamps=(11, 0),
        )  # fmt: skip
        writer.write(1_000_000_001, encode_ipv4(A, B, PROTO_TCP, syn, ident=1))
        # A full-size data segment whose payload is synthetic: headers only, true length 1500.
        data = encode_tcp(
            A, B, 40000, 80, 1001, 5001, TCP_PSH | TCP_ACK, 502,
            payload_length=1436, timestamps=(12, 99), sacks=[(7000, 8000)],
        )  # fmt: skip
        packet = encode_ipv4(A, B, PROTO_TCP, data, ident=2, total_length=1500)
        writer.write(2_000_000_002, packet, orig_len=1500)
        udp = encode_udp(A, B, 40001, 33333, b"hello, udp")
        writer.write(3_000_000_003, encode_ipv4(A, B, PROTO_UDP, udp, ident=3))
        echo = encode_icmp_echo(ICMP_ECHO_REQUEST, 0x77, 1, b"ping" * 8)
        writer.write(4_000_000_004, encode_ipv4(A, B, PROTO_ICMP, echo, ident=4))
        reply = encode_icmp_echo(ICMP_ECHO_REPLY, 0x77, 1, b"ping" * 8)
        writer.write(5_000_000_005, encode_ipv4(B, A, PROTO_ICMP, reply, ident=5))
        expired = encode_icmp_error(ICMP_TIME_EXCEEDED, 0, packet)
        writer.write(6_000_000_006, encode_ipv4(R, A, PROTO_ICMP, expired, dont_fragment=False))


def _tshark(path: Path, *args: str) -> list[list[str]]:
    tshark = shutil.which("tshark")
    assert tshark is not None
    argv = [tshark, "-n", "-r", str(path)]
    argv += ["-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE"]
    argv += ["-o", "udp.check_checksum:TRUE", "-o", "tcp.relative_sequence_numbers:FALSE"]
    run = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=60, check=True)
    return [line.split("\t") for line in run.stdout.splitlines()]


FIELDS = [
    "frame.time_epoch", "frame.len", "frame.cap_len",
    "ip.src", "ip.dst", "ip.proto", "ip.checksum.status",
    "tcp.flags", "tcp.options.mss_val", "tcp.options.wscale.shift", "tcp.options.sack_le",
    "tcp.options.timestamp.tsval", "tcp.len", "tcp.checksum.status",
    "udp.dstport", "udp.length", "udp.checksum.status",
    "icmp.type", "icmp.code", "icmp.ident", "icmp.checksum.status",
]  # fmt: skip

# tshark's checksum status: 1 good, 2 unverified (the segment is not all captured); 0 is bad.
EXPECTED = [
    ["1.000000001", "60", "60", "10.0.0.1", "10.0.0.2", "6", "1",
     "0x0002", "1460", "7", "", "11", "0", "1", "", "", "", "", "", "", ""],
    ["2.000000002", "1500", "64", "10.0.0.1", "10.0.0.2", "6", "1",
     "0x0018", "", "", "7000", "12", "1436", "2", "", "", "", "", "", "", ""],
    ["3.000000003", "38", "38", "10.0.0.1", "10.0.0.2", "17", "1",
     "", "", "", "", "", "", "", "33333", "18", "1", "", "", "", ""],
    ["4.000000004", "60", "60", "10.0.0.1", "10.0.0.2", "1", "1",
     "", "", "", "", "", "", "", "", "", "", "8", "0", "119", "1"],
    ["5.000000005", "60", "60", "10.0.0.2", "10.0.0.1", "1", "1",
     "", "", "", "", "", "", "", "", "", "", "0", "0", "119", "1"],
    ["6.000000006", "56", "56", "10.0.0.254", "10.0.0.1", "1", "1",
     "", "", "", "", "", "", "", "", "", "", "11", "0", "", "1"],
]  # fmt: skip


def test_tshark_decodes_what_we_write(tmp_path: Path) -> None:
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed (`make test` installs it)")
    path = tmp_path / "capture.pcap"
    _write_capture(path)
    fields = [arg for name in FIELDS for arg in ("-e", name)]
    rows = _tshark(path, "-T", "fields", "-E", "occurrence=f", *fields)
    assert rows == EXPECTED
    # The SYN's options, in order: MSS, SACK permitted, timestamps, NOP, window scale.
    kinds = _tshark(path, "-Y", "frame.number == 1", "-T", "fields", "-e", "tcp.option_kind")
    assert kinds == [["2,4,8,1,3"]]
    # The time-exceeded message quotes the truncated segment's IPv4 header and ports.
    quoted = ["ip.src", "ip.ttl", "ip.len", "tcp.srcport", "tcp.dstport"]
    inner = _tshark(
        path, "-Y", "frame.number == 6", "-T", "fields", "-E", "occurrence=l",
        *[arg for name in quoted for arg in ("-e", name)],
    )  # fmt: skip
    assert inner == [["10.0.0.1", "64", "1500", "40000", "80"]]
    # Nothing is malformed and no checksum is bad.
    assert _tshark(path, "-Y", "_ws.malformed || _ws.expert.severity == error") == []
