"""Values and wire formats: units of time, rate and size; packet headers; pcap files.

This layer imports only the standard library.
"""

from primogeni.net.units import (
    Bytes,
    Packets,
    Rate,
    format_duration,
    ms,
    ns,
    parse_duration,
    parse_rate,
    s,
    us,
)

__all__ = [
    "Bytes",
    "Packets",
    "Rate",
    "format_duration",
    "ms",
    "ns",
    "parse_duration",
    "parse_rate",
    "s",
    "us",
]
