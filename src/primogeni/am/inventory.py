"""The aggregate's meta resources: physical nodes and the links between them.

An inventory is plain data, read from a TOML file in the AM's data directory
(``am/inventory.toml``) or handed over by a resource driver. On one machine the physical nodes
are network namespaces on a private bridge; on a deployment they are machines running
``primo agent``. Either way the AM only sees this description.

A node is ``shared`` (a wide-area shared node: slivers from many slices side by side) or
``cluster`` (a cluster node, which may also be handed to one slice exclusively). ``capacity``
counts sliver slots (containers or simulator instances). Each slot owns a range of
``ports_per_sliver`` ports on the node's NAT'd control address, slot ``k`` from
``ssh_port_base + k * ports_per_sliver``; a sliver's SSH server answers on the first port of its
range. The ``[pool]`` table names the experimental address space the AM hands out, one subnet of
``prefixlen`` bits per virtual link (defaults: ``10.128.0.0/10``, ``/24``).
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from primogeni.geni.codes import GeniCode
from primogeni.geni.errors import GeniError

SLIVER_TYPES = ("emulated-host", "simulator")
NODE_KINDS = ("shared", "cluster")
DEFAULT_POOL = ipaddress.IPv4Network("10.128.0.0/10")
DEFAULT_PREFIXLEN = 24


class InventoryError(GeniError, ValueError):
    """The inventory file is wrong: names the node or link and what is wrong."""

    def __init__(self, message: str):
        super().__init__(GeniCode.ERROR, message)


@dataclass(frozen=True)
class PhysicalNode:
    name: str
    kind: str = "cluster"
    capacity: int = 8
    exclusive: bool = True
    hostname: str = "127.0.0.1"
    ssh_port_base: int = 30000
    interfaces: tuple[str, ...] = ("eth0",)
    sliver_types: tuple[str, ...] = SLIVER_TYPES
    location: tuple[str, str] | None = None
    ports_per_sliver: int = 10

    def ports(self, slots: tuple[int, ...]) -> tuple[int, int]:
        """The port range ``[lo, hi]`` of a sliver holding ``slots`` (from its first slot's to its last's)."""
        return (self.ssh_port_base + min(slots) * self.ports_per_sliver,
                self.ssh_port_base + (max(slots) + 1) * self.ports_per_sliver - 1)


@dataclass(frozen=True)
class PhysicalLink:
    name: str
    endpoints: tuple[tuple[str, str], ...]  # (node, interface) pairs: two for a wire, more for a LAN
    capacity_kbps: int = 1_000_000
    latency_ms: float = 0.1


@dataclass(frozen=True)
class Inventory:
    nodes: tuple[PhysicalNode, ...]
    links: tuple[PhysicalLink, ...] = ()
    pool: ipaddress.IPv4Network = DEFAULT_POOL  # experimental address space, one subnet per link
    prefixlen: int = DEFAULT_PREFIXLEN  # the size of each link's subnet
    _by_name: dict[str, PhysicalNode] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        seen: dict[str, PhysicalNode] = {}
        for node in self.nodes:
            _check_node(node)
            if node.name in seen:
                raise InventoryError(f"node {node.name!r} is listed twice")
            seen[node.name] = node
        self._by_name.update(seen)
        if not isinstance(self.pool, ipaddress.IPv4Network):
            raise InventoryError(f"pool {self.pool!r} must be an IPv4 network")
        if not self.pool.prefixlen <= self.prefixlen <= 30:
            raise InventoryError(f"pool: prefixlen {self.prefixlen} must lie between the pool's own "
                                 f"(/{self.pool.prefixlen}) and 30 (a subnet needs at least two hosts)")
        for link in self.links:
            for end_node, end_iface in link.endpoints:
                peer = seen.get(end_node)
                if peer is None:
                    raise InventoryError(f"link {link.name!r} names unknown node {end_node!r}")
                if end_iface not in peer.interfaces:
                    raise InventoryError(f"link {link.name!r}: node {end_node!r} has no interface {end_iface!r}")
            if len(link.endpoints) < 2:
                raise InventoryError(f"link {link.name!r} needs at least two endpoints")
            if link.capacity_kbps <= 0 or link.latency_ms < 0:
                raise InventoryError(f"link {link.name!r}: capacity must be > 0 and latency ≥ 0")

    def node(self, name: str) -> PhysicalNode | None:
        return self._by_name.get(name)


def _check_node(node: PhysicalNode) -> None:
    if not node.name or not node.name.replace("-", "").replace("_", "").isalnum():
        raise InventoryError(f"node name {node.name!r} must be letters, digits, '-' or '_'")
    if node.kind not in NODE_KINDS:
        raise InventoryError(f"node {node.name!r}: kind {node.kind!r} is not one of {', '.join(NODE_KINDS)}")
    if node.capacity < 1:
        raise InventoryError(f"node {node.name!r}: capacity must be at least 1 slot")
    if node.kind == "shared" and node.exclusive:
        raise InventoryError(f"node {node.name!r}: a shared node cannot be given exclusively")
    if isinstance(node.ports_per_sliver, bool) or not isinstance(node.ports_per_sliver, int) \
            or node.ports_per_sliver < 1:
        raise InventoryError(f"node {node.name!r}: ports_per_sliver must be a positive integer")
    last = node.ssh_port_base + node.capacity * node.ports_per_sliver - 1
    if not node.ssh_port_base >= 1024 or last > 65535:
        raise InventoryError(f"node {node.name!r}: ports {node.ssh_port_base}-{last} ({node.capacity} slots × "
                             f"{node.ports_per_sliver} ports) must lie within 1024-65535")
    unknown = set(node.sliver_types) - set(SLIVER_TYPES)
    if unknown:
        raise InventoryError(f"node {node.name!r}: unknown sliver types {sorted(unknown)}")


def load_inventory(path: Path) -> Inventory:
    """Read ``[[node]]`` and ``[[link]]`` tables and the ``[pool]`` table from a TOML file."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InventoryError(f"{path}: {exc}") from exc
    nodes = []
    for i, raw in enumerate(data.get("node", [])):
        try:
            raw = dict(raw)
            for key in ("interfaces", "sliver_types", "location"):
                if key in raw:
                    raw[key] = tuple(raw[key])
            nodes.append(PhysicalNode(**raw))
        except TypeError as exc:
            raise InventoryError(f"{path}: node #{i + 1}: {exc}") from exc
    links = []
    for i, raw in enumerate(data.get("link", [])):
        try:
            raw = dict(raw)
            ends = raw.pop("endpoints")
            pairs = tuple(tuple(e.split(":", 1)) for e in ends)
            if len(pairs) < 2 or any(len(p) != 2 for p in pairs):
                raise InventoryError(f"{path}: link #{i + 1}: endpoints must be 'node:interface' strings, at least two")
            links.append(PhysicalLink(endpoints=pairs, **raw))
        except (TypeError, KeyError) as exc:
            raise InventoryError(f"{path}: link #{i + 1}: {exc}") from exc
    if not nodes:
        raise InventoryError(f"{path}: the inventory lists no [[node]]")
    pool = data.get("pool", {})
    unknown = set(pool) - {"experimental", "prefixlen"} if isinstance(pool, dict) else set()
    if not isinstance(pool, dict) or unknown:
        raise InventoryError(f"{path}: [pool] takes experimental = \"a.b.c.d/len\" and prefixlen = N only")
    try:
        network = ipaddress.IPv4Network(pool.get("experimental", str(DEFAULT_POOL)))
    except (ValueError, TypeError) as exc:
        raise InventoryError(f"{path}: [pool] experimental: {exc}") from exc
    prefixlen = pool.get("prefixlen", DEFAULT_PREFIXLEN)
    if isinstance(prefixlen, bool) or not isinstance(prefixlen, int):
        raise InventoryError(f"{path}: [pool] prefixlen must be an integer")
    try:
        return Inventory(tuple(nodes), tuple(links), network, prefixlen)
    except InventoryError as exc:
        raise InventoryError(f"{path}: {exc.reason}") from exc


def default_inventory_toml(hostname: str = "127.0.0.1") -> str:
    """The inventory ``primo init`` writes: two cluster nodes and two shared nodes on one underlay LAN."""
    lines = []
    specs = [("pc1", "cluster", 8, True), ("pc2", "cluster", 8, True),
             ("shared1", "shared", 16, False), ("shared2", "shared", 16, False)]
    for i, (name, kind, cap, excl) in enumerate(specs):
        lines += [
            "[[node]]", f'name = "{name}"', f'kind = "{kind}"', f"capacity = {cap}",
            f"exclusive = {'true' if excl else 'false'}", f'hostname = "{hostname}"',
            f"ssh_port_base = {30000 + 200 * i}", "ports_per_sliver = 10", 'interfaces = ["eth0", "eth1"]', "",
        ]
    ends = ", ".join(f'"{name}:eth1"' for name, *_ in specs)
    lines += ["[[link]]", 'name = "underlay"', f"endpoints = [{ends}]",
              "capacity_kbps = 1000000", "latency_ms = 0.1", "",
              "[pool]", f'experimental = "{DEFAULT_POOL}"', f"prefixlen = {DEFAULT_PREFIXLEN}", ""]
    return "\n".join(lines)
