"""Traffic descriptions: the flows a model asks for. Pure data; :mod:`primogeni.sim.apps` runs them.

Times are integer nanoseconds; time distributions (on/off periods, think times) are in
nanoseconds too; sizes are bytes. ``src`` and ``dst`` are hosts, interfaces, or names
relative to the net the flow is added to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from primogeni.net.units import Rate
from primogeni.sim.dist import Constant, Distribution, Exponential, Pareto
from primogeni.sim.proto.tcp import TcpConfig

if TYPE_CHECKING:
    from primogeni.sim.model import Interface, Node


@dataclass(kw_only=True, eq=False)
class Flow:
    """Common fields of every flow."""

    src: Node | Interface | str
    dst: Node | Interface | str
    start: int = 0
    stop: int | None = None  # ns; None = until the end of the run
    name: str | None = None
    location: str | None = None  # "file:line" for DML flows

    kind = "flow"

    def validate(self) -> str | None:
        """A reason the parameters are wrong, or None."""
        if self.start < 0:
            return "start must be >= 0"
        if self.stop is not None and self.stop <= self.start:
            return "stop must come after start"
        return None


@dataclass(kw_only=True, eq=False)
class TcpBulk(Flow):
    """A TCP bulk transfer (``size`` bytes, or unlimited) from src to dst."""

    size: int | None = None
    port: int = 5001
    tcp: TcpConfig = field(default_factory=TcpConfig)
    kind = "tcp_bulk"

    def validate(self) -> str | None:
        if self.size is not None and self.size <= 0:
            return "size must be > 0 bytes"
        return super().validate()


RESPONSE_SHAPE = 1.2  # the default Pareto shape of a request/response flow's response sizes


@dataclass(kw_only=True, eq=False)
class TcpRequestResponse(Flow):
    """HTTP-like: src (client) sends a request, dst (server) answers with a sized response.

    One persistent connection; after each response the client thinks, then asks again.
    """

    request_size: int = 300
    response_size: Distribution = field(default_factory=lambda: Pareto(100_000, RESPONSE_SHAPE))
    think: Distribution = field(default_factory=lambda: Exponential(500_000_000))
    requests: int | None = None  # None = until stop
    port: int = 80
    tcp: TcpConfig = field(default_factory=TcpConfig)
    kind = "tcp_reqresp"

    def validate(self) -> str | None:
        if self.request_size <= 0:
            return "request_size must be > 0 bytes"
        if self.requests is not None and self.requests <= 0:
            return "requests must be > 0"
        return super().validate()


@dataclass(kw_only=True, eq=False)
class _UdpAtRate(Flow):
    """Fields of the UDP sources that send fixed-size datagrams at ``rate`` (of IP packets)."""

    rate: Rate
    size: int = 1000  # payload bytes
    port: int = 9000

    def validate(self) -> str | None:
        if not 1 <= self.size <= 65507:
            return "size must be 1..65507 payload bytes"
        return super().validate()


@dataclass(kw_only=True, eq=False)
class UdpCbr(_UdpAtRate):
    """UDP at a constant bit rate (of IP packets) with fixed payload sizes."""

    kind = "udp_cbr"


@dataclass(kw_only=True, eq=False)
class UdpOnOff(_UdpAtRate):
    """UDP on/off source: sends at ``rate`` while on; on and off periods drawn (ns)."""

    on: Distribution = field(default_factory=lambda: Exponential(500_000_000))
    off: Distribution = field(default_factory=lambda: Exponential(500_000_000))
    kind = "udp_onoff"


@dataclass(kw_only=True, eq=False)
class Poisson(Flow):
    """UDP packets with exponential inter-arrival times (``rate`` packets per second on
    average) and sizes drawn from ``size`` (bytes of the whole IP packet, at least 28)."""

    rate: float
    size: Distribution = field(default_factory=lambda: Exponential(1000))
    port: int = 9001
    kind = "poisson"

    def validate(self) -> str | None:
        if self.rate <= 0:
            return "rate must be > 0 packets/s"
        return super().validate()


@dataclass(kw_only=True, eq=False)
class Ping(Flow):
    """ICMP echo requests every ``interval``; ``ttl`` below the path length makes a probe."""

    interval: int = 1_000_000_000
    count: int | None = None
    size: int = 56  # ICMP payload bytes
    ttl: int = 64
    kind = "ping"

    def validate(self) -> str | None:
        if self.interval <= 0:
            return "interval must be > 0"
        if not 1 <= self.ttl <= 255:
            return "ttl must be 1..255"
        return super().validate()


__all__ = [
    "Constant",
    "Flow",
    "Ping",
    "Poisson",
    "TcpBulk",
    "TcpRequestResponse",
    "UdpCbr",
    "UdpOnOff",
]
