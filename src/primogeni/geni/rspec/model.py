"""The values an RSpec carries: advertisement, request and manifest content as frozen dataclasses.

Pure data, no XML: :mod:`.advert` and :mod:`.manifest` write these values as RSpec v3
documents, :mod:`.request` reads a request document into them. Units follow GENI RSpec v3:
link capacity in kbit/s (integers), latency in milliseconds, packet loss as a fraction in
[0, 1]. Constructors check their invariants and raise :class:`RSpecError` (BADARGS) naming the
element, so a value that exists is a valid one.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from primogeni.geni.codes import GeniCode
from primogeni.geni.errors import RSpecError
from primogeni.geni.urn import Urn

# -- names --------------------------------------------------------------------------------------

NS_RSPEC = "http://www.geni.net/resources/rspec/3"
"""The GENI RSpec v3 namespace (every core element)."""
NS_PRIMO = "http://www.primogeni.net/resources/rspec/ext/primogeni/1"
"""The PrimoGENI extension namespace (prefix ``primo``); see docs/RSPEC.md."""
NS_XSI = "http://www.w3.org/2001/XMLSchema-instance"

SLIVER_EMULATED_HOST = "emulated-host"
"""A container running real software; its packets may cross the simulated network."""
SLIVER_SIMULATOR = "simulator"
"""A real-time simulator instance (one partition of the virtual network)."""
SLIVER_TYPES = (SLIVER_EMULATED_HOST, SLIVER_SIMULATOR)
DEFAULT_SLIVER_TYPE = SLIVER_EMULATED_HOST
"""The sliver type of a request node that names none."""

HARDWARE_TYPES = {"shared": "primo-shared", "cluster": "primo-cluster"}
"""``AdNode.kind`` → advertised ``<hardware_type name>``: a shared wide-area node or a cluster node."""

MODEL_FORMATS = ("dml", "python")
"""Formats of the virtual network model (``primogeni.sim.loader`` reads both)."""


def bad(message: str) -> RSpecError:
    """The error for anything wrong in an RSpec or in the values given to write one."""
    return RSpecError(GeniCode.BADARGS, message)


def check_link_values(
    where: str, capacity_kbps: int | None, latency_ms: float | None, packet_loss: float | None
) -> None:
    """Check link parameters: capacity an int ≥ 0, latency finite ≥ 0, loss in [0, 1]."""
    if capacity_kbps is not None and (
        isinstance(capacity_kbps, bool) or not isinstance(capacity_kbps, int) or capacity_kbps < 0
    ):
        raise bad(f"{where}: capacity must be a whole number of kbps >= 0, not {capacity_kbps!r}")
    if latency_ms is not None and not (math.isfinite(latency_ms) and latency_ms >= 0):
        raise bad(f"{where}: latency must be a number of ms >= 0, not {latency_ms!r}")
    if packet_loss is not None and not (0.0 <= packet_loss <= 1.0):
        raise bad(f"{where}: packet_loss must be a fraction in [0, 1], not {packet_loss!r}")


# -- advertisement ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """Where a node is: ISO country code, optional latitude and longitude in degrees."""

    country: str
    latitude: float | None = None
    longitude: float | None = None

    def __post_init__(self) -> None:
        if not self.country:
            raise bad("location: country must not be empty")
        if self.latitude is not None and not -90.0 <= self.latitude <= 90.0:
            raise bad(f"location: latitude {self.latitude!r} is outside [-90, 90]")
        if self.longitude is not None and not -180.0 <= self.longitude <= 180.0:
            raise bad(f"location: longitude {self.longitude!r} is outside [-180, 180]")


@dataclass(frozen=True)
class AdInterface:
    """A physical interface of an advertised node; ``name`` is its component_name."""

    component_id: Urn
    name: str


@dataclass(frozen=True)
class NodeUsage:
    """What a physical node's agent last measured (``<primo:usage>``): sizes in bytes, CPU in % of all CPUs."""

    cpus: int
    cpu_percent: float
    load1: float
    mem_total: int
    mem_available: int
    disk_free: int

    def __post_init__(self) -> None:
        for name in ("cpus", "cpu_percent", "load1", "mem_total", "mem_available", "disk_free"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise bad(f"usage: {name} must be a number >= 0, not {value!r}")


@dataclass(frozen=True)
class AdNode:
    """A physical node the aggregate offers (a "meta resource")."""

    component_id: Urn
    component_manager_id: Urn
    name: str
    kind: str  # "shared" (wide-area shared node) or "cluster"; see HARDWARE_TYPES
    capacity: int  # sliver slots (containers, simulator instances) the node can hold
    available: int  # slots free now
    exclusive: bool  # whether it can be given to one slice exclusively
    sliver_types: tuple[str, ...] = SLIVER_TYPES
    interfaces: tuple[AdInterface, ...] = ()
    location: Location | None = None
    usage: NodeUsage | None = None  # the node's last measured load, when its agent reports it

    def __post_init__(self) -> None:
        where = f"node {self.name!r}"
        if self.kind not in HARDWARE_TYPES:
            raise bad(f"{where}: kind must be one of {sorted(HARDWARE_TYPES)}, not {self.kind!r}")
        if self.capacity < 0 or not 0 <= self.available <= self.capacity:
            raise bad(f"{where}: need 0 <= available ({self.available}) <= capacity ({self.capacity})")
        if not self.sliver_types:
            raise bad(f"{where}: advertises no sliver type")

    @property
    def hardware_type(self) -> str:
        return HARDWARE_TYPES[self.kind]


@dataclass(frozen=True)
class AdLink:
    """A physical link between two advertised interfaces (``endpoints`` are interface URNs)."""

    component_id: Urn
    name: str
    endpoints: tuple[Urn, Urn]
    capacity_kbps: int
    latency_ms: float
    link_type: str = "lan"  # "lan" or "vlan"
    component_manager_id: Urn | None = None

    def __post_init__(self) -> None:
        where = f"link {self.name!r}"
        if len(self.endpoints) != 2 or self.endpoints[0] == self.endpoints[1]:
            raise bad(f"{where}: needs two different endpoints")
        check_link_values(where, self.capacity_kbps, self.latency_ms, None)


# -- request ------------------------------------------------------------------------------------

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _netmask_prefix(netmask: str, version: int) -> int:
    """A netmask ("255.255.255.0", or a prefix length "24") as a prefix length."""
    bits = 32 if version == 4 else 128
    text = netmask.strip().removeprefix("/")
    if text.isdigit():
        prefix = int(text)
        if prefix > bits:
            raise ValueError(f"prefix length {prefix} is over {bits}")
        return prefix
    if version != 4:
        raise ValueError("an IPv6 netmask must be a prefix length")
    value = int(ipaddress.IPv4Address(text))
    prefix = bin(value).count("1")
    if value != (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF:
        raise ValueError("the mask's one bits are not contiguous")
    return prefix


@dataclass(frozen=True)
class ReqIp:
    """An address on an interface: ``address`` with an optional prefix length (from the netmask)."""

    address: IpAddress
    prefixlen: int | None = None

    def __post_init__(self) -> None:
        bits = 32 if self.address.version == 4 else 128
        if self.prefixlen is not None and not 0 <= self.prefixlen <= bits:
            raise bad(f"ip {self.address}: prefix length {self.prefixlen} is outside [0, {bits}]")

    @classmethod
    def parse(cls, address: str, netmask: str | None = None, type: str | None = None) -> ReqIp:
        """Read the attributes of ``<ip address= netmask= type=>``; RSpecError if any is wrong."""
        try:
            addr = ipaddress.ip_address(address.strip())
        except ValueError:
            raise bad(f"ip: {address!r} is not an IP address") from None
        if type is not None and type.strip().lower() != f"ipv{addr.version}":
            raise bad(f"ip {address}: type {type!r} does not match an IPv{addr.version} address")
        prefix = None
        if netmask is not None and netmask.strip():
            try:
                prefix = _netmask_prefix(netmask, addr.version)
            except ValueError as e:
                raise bad(f"ip {address}: bad netmask {netmask!r}: {e}") from None
        return cls(addr, prefix)

    @property
    def type(self) -> str:
        return f"ipv{self.address.version}"

    @property
    def netmask(self) -> str | None:
        """Dotted quad for IPv4, the prefix length for IPv6, None when no mask was given."""
        if self.prefixlen is None:
            return None
        if self.address.version == 4:
            return str(ipaddress.IPv4Network(f"0.0.0.0/{self.prefixlen}").netmask)
        return str(self.prefixlen)

    @property
    def interface(self) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | None:
        """Address and prefix together, or None when no mask was given."""
        if self.prefixlen is None:
            return None
        return ipaddress.ip_interface(f"{self.address}/{self.prefixlen}")


@dataclass(frozen=True)
class ReqInterface:
    """An interface a request node asks for; ``component_id`` binds it to a physical one."""

    client_id: str
    ip: ReqIp | None = None
    component_id: Urn | None = None


@dataclass(frozen=True)
class ReqNode:
    """A node of a request: a sliver of ``sliver_type``, optionally bound to a physical node."""

    client_id: str
    sliver_type: str = DEFAULT_SLIVER_TYPE
    exclusive: bool | None = None
    component_id: Urn | None = None
    component_manager_id: Urn | None = None
    interfaces: tuple[ReqInterface, ...] = ()
    hardware_type: str | None = None
    disk_image: str | None = None


@dataclass(frozen=True)
class LinkProperty:
    """One direction of a link: traffic from interface ``source_id`` toward ``dest_id``.

    ``dest_id`` is an interface of the same link, or (for LANs, as geni-lib writes them) the
    link's own client_id, meaning "from this member into the LAN".
    """

    source_id: str
    dest_id: str
    capacity_kbps: int | None = None
    latency_ms: float | None = None
    packet_loss: float | None = None

    def __post_init__(self) -> None:
        check_link_values(
            f"property {self.source_id} -> {self.dest_id}", self.capacity_kbps, self.latency_ms, self.packet_loss
        )


def _most_restrictive(properties: Sequence[LinkProperty]) -> tuple[int | None, float | None, float | None]:
    """The most restrictive value of each parameter over the properties that give it."""
    caps = [p.capacity_kbps for p in properties if p.capacity_kbps is not None]
    lats = [p.latency_ms for p in properties if p.latency_ms is not None]
    losses = [p.packet_loss for p in properties if p.packet_loss is not None]
    return (min(caps) if caps else None, max(lats) if lats else None, max(losses) if losses else None)


@dataclass(frozen=True)
class ReqLink:
    """A link (two interfaces) or LAN (more, or ``link_type`` "lan") between request interfaces.

    ``capacity_kbps``, ``latency_ms`` and ``packet_loss`` are the link-wide values; when the
    request gave different values per direction they are the most restrictive ones (least
    capacity, most latency, most loss), and ``properties`` keeps each direction as written.
    """

    client_id: str
    interface_refs: tuple[str, ...]
    link_type: str | None = None
    capacity_kbps: int | None = None
    latency_ms: float | None = None
    packet_loss: float | None = None
    properties: tuple[LinkProperty, ...] = ()

    def __post_init__(self) -> None:
        check_link_values(f"link {self.client_id!r}", self.capacity_kbps, self.latency_ms, self.packet_loss)

    @classmethod
    def from_properties(
        cls, client_id: str, interface_refs: tuple[str, ...], properties: tuple[LinkProperty, ...],
        link_type: str | None = None,
    ) -> ReqLink:
        """A link whose link-wide values are derived from its per-direction ``properties``."""
        cap, lat, loss = _most_restrictive(properties)
        return cls(client_id, interface_refs, link_type, cap, lat, loss, properties)

    @property
    def is_lan(self) -> bool:
        return self.link_type == "lan" or len(self.interface_refs) > 2


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise bad(f"<primo:model>: url {url!r} must be an absolute http or https URL")


@dataclass(frozen=True)
class VirtualModel:
    """The PrimoGENI extension: the slice's virtual network and where its pieces run.

    Exactly one of ``text`` (the model inline) and ``url`` (where to fetch it). ``mapping``
    pairs the hierarchical name of a model element ("top:net1:h1") with the client_id of
    the request node that realizes it; see docs/RSPEC.md.
    """

    format: str  # "dml" | "python"
    text: str | None = None
    url: str | None = None
    mapping: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.format not in MODEL_FORMATS:
            raise bad(f"<primo:model>: unknown format {self.format!r} (expected one of {', '.join(MODEL_FORMATS)})")
        has_text = self.text is not None and self.text.strip() != ""
        if has_text == (self.url is not None):
            raise bad("<primo:model>: give the model either inline as text or by url, " + (
                "not both" if has_text else "neither was given"))
        if self.url is not None:
            _check_url(self.url)
        seen: set[str] = set()
        for virtual, node in self.mapping:
            if not virtual or not node:
                raise bad("<primo:map>: virtual and node must not be empty")
            if virtual in seen:
                raise bad(f"<primo:map>: virtual element {virtual!r} is mapped twice")
            seen.add(virtual)


@dataclass(frozen=True)
class Request:
    """A parsed request RSpec."""

    nodes: tuple[ReqNode, ...]
    links: tuple[ReqLink, ...] = ()
    model: VirtualModel | None = None

    def node(self, client_id: str) -> ReqNode:
        """The node with this client_id (KeyError if none)."""
        for n in self.nodes:
            if n.client_id == client_id:
                return n
        raise KeyError(client_id)

    def link(self, client_id: str) -> ReqLink:
        """The link with this client_id (KeyError if none)."""
        for lk in self.links:
            if lk.client_id == client_id:
                return lk
        raise KeyError(client_id)


# -- manifest -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Login:
    """An ssh login to a sliver (``<login authentication="ssh-keys">``)."""

    hostname: str
    port: int
    username: str

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise bad(f"login {self.username}@{self.hostname}: port {self.port} is outside 1..65535")


@dataclass(frozen=True)
class ManInterface:
    """An interface as provisioned: its sliver URN, MAC address and address."""

    client_id: str
    sliver_id: Urn
    component_id: Urn | None
    mac: str
    ip: ReqIp | None = None


@dataclass(frozen=True)
class ManNode:
    """A node as provisioned (a sliver on physical node ``component_id``)."""

    client_id: str
    sliver_id: Urn
    component_id: Urn
    component_manager_id: Urn
    sliver_type: str
    exclusive: bool
    interfaces: tuple[ManInterface, ...] = ()
    logins: tuple[Login, ...] = ()


@dataclass(frozen=True)
class ManLink:
    """A link as provisioned; ``vlantag`` is required by the manifest schema (our VNI or tag)."""

    client_id: str
    sliver_id: Urn
    vlantag: str
    interface_refs: tuple[str, ...]
    capacity_kbps: int | None = None
    latency_ms: float | None = None
    packet_loss: float | None = None
    link_type: str | None = None
    properties: tuple[LinkProperty, ...] = ()

    def __post_init__(self) -> None:
        check_link_values(f"link {self.client_id!r}", self.capacity_kbps, self.latency_ms, self.packet_loss)

    @property
    def is_lan(self) -> bool:
        return self.link_type == "lan" or len(self.interface_refs) > 2


__all__ = [
    "DEFAULT_SLIVER_TYPE",
    "HARDWARE_TYPES",
    "MODEL_FORMATS",
    "NS_PRIMO",
    "NS_RSPEC",
    "NS_XSI",
    "SLIVER_EMULATED_HOST",
    "SLIVER_SIMULATOR",
    "SLIVER_TYPES",
    "AdInterface",
    "AdLink",
    "AdNode",
    "LinkProperty",
    "Location",
    "Login",
    "ManInterface",
    "ManLink",
    "ManNode",
    "NodeUsage",
    "ReqInterface",
    "ReqIp",
    "ReqLink",
    "ReqNode",
    "Request",
    "VirtualModel",
]
