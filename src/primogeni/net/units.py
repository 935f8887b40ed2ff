"""Units: time is an integer number of nanoseconds, rates are :class:`Rate`, sizes are typed.

``ms(5)`` is 5 000 000 (ns). Public signatures take these, never float seconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NS_PER_S = 1_000_000_000


def ns(x: float) -> int:
    """Nanoseconds."""
    return round(x)


def us(x: float) -> int:
    """Microseconds, as integer nanoseconds."""
    return round(x * 1_000)


def ms(x: float) -> int:
    """Milliseconds, as integer nanoseconds."""
    return round(x * 1_000_000)


def s(x: float) -> int:
    """Seconds, as integer nanoseconds."""
    return round(x * NS_PER_S)


def tx_ns(nbytes: int, bps: int) -> int:
    """Nanoseconds to serialise ``nbytes`` at ``bps`` bits per second, rounded up.

    The simulator's hot path (``sim.node.Port``) inlines this same expression.
    """
    return -((-nbytes * 8 * NS_PER_S) // bps)


@dataclass(frozen=True, order=True)
class Rate:
    """A data rate in bits per second (an integer)."""

    bps: int

    def __post_init__(self) -> None:
        if self.bps <= 0:
            raise ValueError(f"a rate must be positive, not {self.bps} b/s")

    @classmethod
    def kbps(cls, x: float) -> Rate:
        return cls(round(x * 1e3))

    @classmethod
    def mbps(cls, x: float) -> Rate:
        return cls(round(x * 1e6))

    @classmethod
    def gbps(cls, x: float) -> Rate:
        return cls(round(x * 1e9))

    def tx_time(self, nbytes: int) -> int:
        """Nanoseconds to serialise ``nbytes`` at this rate, rounded up."""
        return tx_ns(nbytes, self.bps)

    def __str__(self) -> str:
        for unit, scale in (("Gb/s", 1e9), ("Mb/s", 1e6), ("kb/s", 1e3)):
            if self.bps >= scale:
                return f"{self.bps / scale:g} {unit}"
        return f"{self.bps} b/s"


@dataclass(frozen=True)
class Packets:
    """A queue limit counted in packets (not counting the one being transmitted)."""

    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"a queue limit must be at least 1 packet, not {self.count}")


@dataclass(frozen=True)
class Bytes:
    """A queue limit counted in bytes (not counting the packet being transmitted)."""

    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"a queue limit must be at least 1 byte, not {self.count}")


_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ns|us|µs|ms|s|m|min|h)?\s*$")
_DUR_SCALE = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": NS_PER_S,
    None: NS_PER_S,
    "m": 60 * NS_PER_S,
    "min": 60 * NS_PER_S,
    "h": 3600 * NS_PER_S,
}


def parse_duration(text: str) -> int:
    """Parse ``"10s"``, ``"250ms"``, ``"1.5"`` (seconds) into integer nanoseconds."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"not a duration: {text!r} (try 10s, 250ms, 100us)")
    return round(float(m.group(1)) * _DUR_SCALE[m.group(2)])


_RATE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([kKmMgG]?)(?:bps|b/s|bit/s)?\s*$")
_RATE_SCALE = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}


def parse_rate(text: str) -> Rate:
    """Parse ``"100Mbps"``, ``"1e8"`` (b/s), ``"10 Mb/s"`` into a :class:`Rate`."""
    m = _RATE.match(text)
    if not m:
        raise ValueError(f"not a rate: {text!r} (try 100Mbps, 1Gbps, 1e8)")
    return Rate(round(float(m.group(1)) * _RATE_SCALE[m.group(2).lower()]))


def format_duration(t_ns: int) -> str:
    """A short human form of a duration in nanoseconds."""
    a = abs(t_ns)
    if a >= NS_PER_S:
        return f"{t_ns / NS_PER_S:g} s"
    if a >= 1_000_000:
        return f"{t_ns / 1e6:g} ms"
    if a >= 1_000:
        return f"{t_ns / 1e3:g} us"
    return f"{t_ns} ns"
