"""Classic libpcap capture files with nanosecond timestamps.

:class:`PcapWriter` writes what the simulator and the emulation bridge capture; readers
(``tshark``, ``tcpdump``, :func:`read_pcap`) read it back. Records carry raw IPv4 packets
(``LINKTYPE_RAW``, 101: the first nibble says IPv4) and may be truncated: a simulated packet
whose payload is synthetic is written as its headers with its true original length, which
``caplen < origlen`` expresses exactly as a snaplen-limited capture would.

Files are written little-endian with magic ``0xa1b23c4d`` (nanosecond resolution); the reader
accepts either byte order and microsecond files too. Format: the libpcap file format draft
(draft-ietf-opsawg-pcap).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from types import TracebackType
from typing import IO, NamedTuple, TypeAlias

from primogeni.errors import PrimoError

LINKTYPE_RAW = 101  # raw IPv4 or IPv6, told apart by the version nibble
LINKTYPE_IPV4 = 228  # raw IPv4 only
PCAP_MAGIC_NS = 0xA1B23C4D
PCAP_MAGIC_US = 0xA1B2C3D4
DEFAULT_SNAPLEN = 65535

_FILE_HEADER = struct.Struct("<IHHiIII")  # magic, major, minor, thiszone, sigfigs, snaplen, link
_RECORD_HEADER = struct.Struct("<IIII")  # ts_sec, ts_frac, caplen, origlen
_NS_PER_S = 1_000_000_000

PathOrFile: TypeAlias = str | os.PathLike[str] | IO[bytes]


class PcapError(PrimoError, ValueError):
    """A pcap file is not valid, or a record cannot be written; ``path`` names the file."""

    def __init__(self, message: str, path: str | None = None):
        self.path = path
        self.reason = message
        super().__init__(f"{path}: {message}" if path else message)


def _open(target: PathOrFile, mode: str) -> tuple[IO[bytes], bool, str | None]:
    """(file, whether we opened it and must close it, its path if known) for a path or a file."""
    if isinstance(target, str | os.PathLike):
        return open(target, mode), True, os.fspath(target)  # closed by the owner's close()
    name = getattr(target, "name", None)
    return target, False, name if isinstance(name, str) else None


class PcapRecord(NamedTuple):
    """One captured packet: time in integer nanoseconds, the captured bytes, the true length."""

    time_ns: int
    data: bytes
    orig_len: int


class PcapWriter:
    """Writes a pcap file record by record.

    ``target`` is a path (opened, and closed by :meth:`close`) or a binary file open for
    writing (left open). ``data`` longer than ``snaplen`` is truncated, keeping its length.
    """

    def __init__(
        self,
        target: PathOrFile,
        snaplen: int = DEFAULT_SNAPLEN,
        linktype: int = LINKTYPE_RAW,
    ):
        if not 0 < snaplen <= 0xFFFFFFFF:
            raise PcapError(f"snaplen {snaplen} is not a positive 32-bit number")
        self.snaplen = snaplen
        self.linktype = linktype
        self._file, self._owns_file, self.path = _open(target, "wb")
        self._closed = False
        self._file.write(_FILE_HEADER.pack(PCAP_MAGIC_NS, 2, 4, 0, 0, snaplen, linktype))

    def write(
        self, time_ns: int, data: bytes | bytearray | memoryview, orig_len: int | None = None
    ) -> None:
        """Write one record at ``time_ns`` (integer nanoseconds since the epoch, >= 0).

        ``orig_len`` is the packet's true length when ``data`` is only its start (defaults to
        ``len(data)``); it may not be less than ``len(data)``.
        """
        if self._closed:
            raise PcapError("write to a closed PcapWriter", self.path)
        n = len(data)
        if orig_len is None:
            orig_len = n
        elif orig_len < n:
            raise PcapError(f"orig_len {orig_len} is less than the {n} bytes given", self.path)
        if time_ns < 0:
            raise PcapError(f"time {time_ns} ns is before the epoch", self.path)
        seconds, nanos = divmod(time_ns, _NS_PER_S)
        if seconds > 0xFFFFFFFF or orig_len > 0xFFFFFFFF:
            raise PcapError(f"time {time_ns} ns or length {orig_len} does not fit", self.path)
        if n > self.snaplen:
            data = data[: self.snaplen]
            n = self.snaplen
        self._file.write(_RECORD_HEADER.pack(seconds, nanos, n, orig_len))
        self._file.write(data)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        """Flush, and close the file if this writer opened it. Closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        if self._owns_file:
            self._file.close()
        else:
            self._file.flush()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class PcapReader:
    """Reads a classic pcap file (either byte order, micro- or nanosecond timestamps).

    Iterating yields :class:`PcapRecord` with times in nanoseconds. ``linktype``, ``snaplen``
    and ``nanosecond`` describe the file.
    """

    def __init__(self, source: PathOrFile):
        self._file, self._owns_file, self.path = _open(source, "rb")
        header = self._file.read(_FILE_HEADER.size)
        if len(header) < _FILE_HEADER.size:
            self.close()
            raise PcapError(f"truncated file header ({len(header)} of 24 bytes)", self.path)
        magic_le = int.from_bytes(header[:4], "little")
        magic_be = int.from_bytes(header[:4], "big")
        if magic_le in (PCAP_MAGIC_NS, PCAP_MAGIC_US):
            order, magic = "<", magic_le
        elif magic_be in (PCAP_MAGIC_NS, PCAP_MAGIC_US):
            order, magic = ">", magic_be
        else:
            self.close()
            raise PcapError(f"not a pcap file (magic {magic_le:#010x})", self.path)
        _, self.version_major, self.version_minor, _, _, self.snaplen, self.linktype = (
            struct.unpack(order + _FILE_HEADER.format[1:], header)
        )
        self.nanosecond = magic == PCAP_MAGIC_NS
        self._record = struct.Struct(order + _RECORD_HEADER.format[1:])

    def __iter__(self) -> Iterator[PcapRecord]:
        size = self._record.size
        scale = 1 if self.nanosecond else 1000
        read = self._file.read
        while True:
            header = read(size)
            if not header:
                return
            if len(header) < size:
                raise PcapError(f"truncated record header ({len(header)} bytes)", self.path)
            seconds, frac, caplen, orig_len = self._record.unpack(header)
            data = read(caplen)
            if len(data) < caplen:
                raise PcapError(
                    f"truncated record: {len(data)} of {caplen} captured bytes", self.path
                )
            yield PcapRecord(seconds * _NS_PER_S + frac * scale, data, orig_len)

    def close(self) -> None:
        if self._owns_file:
            self._file.close()

    def __enter__(self) -> PcapReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def read_pcap(source: PathOrFile) -> Iterator[PcapRecord]:
    """Yield the records of a pcap file (a path or a binary file): ``(time_ns, data, orig_len)``."""
    with PcapReader(source) as reader:
        yield from reader
