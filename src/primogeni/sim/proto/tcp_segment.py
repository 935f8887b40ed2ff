"""TCP values on the wire: flag bits, the :class:`Segment` record and :class:`TcpConfig`.

A :class:`Segment` is what a :class:`~primogeni.sim.proto.tcp.TcpConnection` emits and accepts.
It is a plain ``__slots__`` record because the simulator makes one per packet. Sequence and
acknowledgment numbers are the 32-bit wire values; the window is the 16-bit wire field, before
window scaling. Payload bytes are optional: a simulation may carry only ``length``.

Option sizes follow Linux's encoding (see :func:`primogeni.net.packet.encode_tcp_options`):
each option present takes 4 bytes after NOP padding; SACK takes ``4 + 8 * blocks``.
"""

from __future__ import annotations

from dataclasses import dataclass

from primogeni.errors import SimError

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

SEQ_MASK = 0xFFFF_FFFF  # sequence numbers are modulo 2**32
MAX_SACK_BLOCKS = 4  # what fits in 40 option bytes without timestamps (RFC 2018)

SackBlocks = tuple[tuple[int, int], ...]


class TcpError(SimError, ValueError):
    """A TCP endpoint was misused (bad configuration, send after close, ...)."""


class Segment:
    """One TCP segment: header fields, SYN options, SACK blocks and the payload size."""

    __slots__ = (
        "ack",
        "data",
        "dport",
        "flags",
        "length",
        "mss",
        "sack_permitted",
        "sacks",
        "seq",
        "sport",
        "window",
        "wscale",
    )

    def __init__(
        self,
        sport: int,
        dport: int,
        seq: int,
        ack: int,
        flags: int,
        window: int,
        length: int = 0,
        data: bytes | None = None,
        mss: int | None = None,
        wscale: int | None = None,
        sack_permitted: bool = False,
        sacks: SackBlocks | None = None,
    ) -> None:
        self.sport = sport
        self.dport = dport
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.window = window
        self.length = length
        self.data = data
        self.mss = mss
        self.wscale = wscale
        self.sack_permitted = sack_permitted
        self.sacks = sacks

    def header_len(self) -> int:
        """TCP header bytes: 20 plus options, each padded to 4 bytes as Linux lays them out."""
        n = 20
        if self.sacks:
            n += 4 + 8 * len(self.sacks)
        if self.mss is not None:
            n += 4
        if self.wscale is not None:
            n += 4
        if self.sack_permitted:
            n += 4
        return n

    def __repr__(self) -> str:
        names = "".join(
            c for bit, c in ((SYN, "S"), (FIN, "F"), (RST, "R"), (PSH, "P"), (ACK, ".")) if self.flags & bit
        )
        extra = f" sack={self.sacks}" if self.sacks else ""
        return (
            f"Segment({self.sport}>{self.dport} [{names}] seq={self.seq} ack={self.ack} "
            f"win={self.window} len={self.length}{extra})"
        )


@dataclass(frozen=True)
class TcpConfig:
    """Parameters of one TCP endpoint. Times are integer nanoseconds, sizes bytes."""

    mss: int = 1460  # payload bytes per segment we offer and use
    initial_cwnd: int = 10  # segments (RFC 6928)
    rcv_buffer: int = 4 * 1024 * 1024  # the advertised window derives from its free space
    window_scale: bool = True  # RFC 7323
    sack: bool = True  # RFC 2018 blocks + RFC 6675 recovery; NewReno (RFC 6582) otherwise
    delayed_ack: bool = True  # RFC 1122 / RFC 5681 section 4.2
    delack_timeout: int = 40_000_000
    min_rto: int = 1_000_000_000  # RFC 6298 (2.4)
    initial_rto: int = 1_000_000_000
    max_rto: int = 60_000_000_000
    limited_transmit: bool = True  # RFC 3042
    time_wait: int = 1_000_000_000  # 2*MSL, short for simulation
    max_retries: int = 12  # consecutive RTOs before the connection is abandoned

    def __post_init__(self) -> None:
        if not 1 <= self.mss <= 65495:
            raise TcpError(f"mss {self.mss} is not in 1..65495")
        if self.initial_cwnd < 1 or self.rcv_buffer < 1:
            raise TcpError("initial_cwnd and rcv_buffer must be positive")
        if not 0 < self.min_rto <= self.max_rto or self.initial_rto <= 0:
            raise TcpError("need 0 < min_rto <= max_rto and initial_rto > 0")
