"""Placement: map a request's nodes and links onto meta resources (pure; no database).

Given the inventory and what is in use, :func:`place` decides which physical node and which
slots each requested node gets, and which physical link carries each requested link, or raises
the GENI error a client expects: ``BADARGS`` for a request that names what does not exist,
``UNAVAILABLE`` when a named node is busy, ``INSUFFICIENT_NODES`` when there is not enough room,
``INSUFFICIENT_BANDWIDTH`` when a link does not fit. Unbound nodes go to the node with the most
free slots (ties by name), so placement is deterministic.

A shared node holds at most one sliver per slice (the PlanetLab rule), counting what the slice
already holds there; cluster nodes take several. Only ``offered`` nodes (those whose agent is
alive, when the AM drives agents) take new slivers.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from primogeni.am.inventory import Inventory, PhysicalLink
from primogeni.geni.codes import GeniCode
from primogeni.geni.errors import GeniError
from primogeni.geni.rspec import ReqLink, ReqNode, Request
from primogeni.geni.urn import Urn


@dataclass(frozen=True)
class NodePlacement:
    client_id: str
    component: str
    slots: tuple[int, ...]
    exclusive: bool


@dataclass(frozen=True)
class LinkPlacement:
    client_id: str
    physical_link: str  # "" when every end is on one physical node (a bridge inside it)
    bandwidth_kbps: int


@dataclass(frozen=True)
class Usage:
    """What is taken: slots per physical node, and reserved kbps per physical link."""

    slots: Mapping[str, frozenset[int]]
    link_kbps: Mapping[str, int]


def ours(node: ReqNode, cm: Urn) -> bool:
    return node.component_manager_id is None or node.component_manager_id == cm


@dataclass
class _State:
    """What placement tracks while it works through one request."""

    free: dict[str, set[int]]  # free slots per physical node
    slice_nodes: dict[str, str]  # shared node → who of this slice holds it ("" = an earlier allocation)
    offered: Collection[str] | None


def place(request: Request, inventory: Inventory, usage: Usage, *, cm: Urn, slice_nodes: Collection[str] = (),
          offered: Collection[str] | None = None) -> tuple[list[NodePlacement], list[LinkPlacement]]:
    """Place ``request``; ``slice_nodes``: physical nodes where the slice holds slivers already;
    ``offered``: the nodes that may take slivers now (None: all)."""
    nodes = [n for n in request.nodes if ours(n, cm)]
    if not nodes:
        raise GeniError(GeniCode.BADARGS, f"the request names no node for this aggregate ({cm})")
    free = {n.name: set(range(n.capacity)) - set(usage.slots.get(n.name, frozenset())) for n in inventory.nodes}
    state = _State(free, dict.fromkeys(slice_nodes, ""), offered)
    placed: dict[str, NodePlacement] = {}
    # Bound nodes first (they have no choice), then unbound ones, each in request order.
    for node in sorted(nodes, key=lambda n: n.component_id is None):
        placed[node.client_id] = _place_node(node, inventory, state, cm)
        phys = inventory.node(placed[node.client_id].component)
        if phys is not None and phys.kind == "shared":
            state.slice_nodes[phys.name] = node.client_id
    link_used = dict(usage.link_kbps)
    links = [_place_link(link, request, placed, inventory, link_used) for link in request.links
             if any(_owner(request, ref) in placed for ref in link.interface_refs)]
    return [placed[n.client_id] for n in nodes], links


def _place_node(node: ReqNode, inventory: Inventory, state: _State, cm: Urn) -> NodePlacement:
    exclusive = bool(node.exclusive)
    free = state.free
    if node.component_id is not None:
        if node.component_id.authority != cm.authority or node.component_id.type != "node":
            raise GeniError(GeniCode.BADARGS, f"node {node.client_id!r}: component_id {node.component_id} "
                                              f"is not a node of this aggregate")
        phys = inventory.node(node.component_id.name)
        if phys is None:
            raise GeniError(GeniCode.BADARGS, f"node {node.client_id!r}: no physical node {node.component_id.name!r}")
        _check_type(node, phys.name, phys.sliver_types)
        if exclusive and not phys.exclusive:
            raise GeniError(GeniCode.BADARGS, f"node {node.client_id!r}: {phys.name} is a shared node "
                                              "and cannot be given exclusively")
        if state.offered is not None and phys.name not in state.offered:
            raise GeniError(GeniCode.UNAVAILABLE, f"node {node.client_id!r}: {phys.name} is not available now "
                                                  "(its node agent has not registered or stopped reporting)")
        if phys.kind == "shared" and phys.name in state.slice_nodes:
            other = state.slice_nodes[phys.name]
            if other:
                raise GeniError(GeniCode.BADARGS, f"node {node.client_id!r}: {phys.name} is a shared node, which "
                                                  f"holds at most one sliver per slice, and {other!r} is bound there")
            raise GeniError(GeniCode.UNAVAILABLE, f"node {node.client_id!r}: the slice already has a sliver on shared "
                                                  f"node {phys.name} (at most one sliver per slice there)")
        need = phys.capacity if exclusive else 1
        if len(free[phys.name]) < need:
            what = "all its slots" if exclusive else "a slot"
            raise GeniError(GeniCode.UNAVAILABLE, f"node {node.client_id!r}: {phys.name} has not {what} free "
                                                  f"({len(free[phys.name])} of {phys.capacity} free)")
        return _take(node.client_id, phys.name, free, need, exclusive)
    candidates = [p for p in inventory.nodes if node.sliver_type in p.sliver_types
                  and (p.exclusive or not exclusive)
                  and len(free[p.name]) >= (p.capacity if exclusive else 1)
                  and (state.offered is None or p.name in state.offered)
                  and not (p.kind == "shared" and p.name in state.slice_nodes)]
    if not candidates:
        if not any(node.sliver_type in p.sliver_types for p in inventory.nodes):
            raise GeniError(GeniCode.BADARGS, f"node {node.client_id!r}: sliver type {node.sliver_type!r} is not "
                                              "offered here (see the advertisement)")
        what = "a whole free node" if exclusive else "a free slot"
        alive = "; only nodes with a live agent count" if state.offered is not None else ""
        raise GeniError(GeniCode.INSUFFICIENT_NODES, f"node {node.client_id!r}: no physical node has {what} "
                                                     f"for sliver type {node.sliver_type!r} (a shared node takes "
                                                     f"one sliver per slice{alive})")
    best = min(candidates, key=lambda p: (-len(free[p.name]), p.name))
    return _take(node.client_id, best.name, free, best.capacity if exclusive else 1, exclusive)


def _check_type(node: ReqNode, phys: str, types: tuple[str, ...]) -> None:
    if node.sliver_type not in types:
        raise GeniError(GeniCode.BADARGS, f"node {node.client_id!r}: sliver type {node.sliver_type!r} is not "
                                          f"offered on {phys} (offered: {', '.join(types)})")


def _take(client_id: str, component: str, free: dict[str, set[int]], count: int, exclusive: bool) -> NodePlacement:
    slots = tuple(sorted(free[component])[:count])
    free[component].difference_update(slots)
    return NodePlacement(client_id, component, slots, exclusive)


def _owner(request: Request, interface_ref: str) -> str | None:
    for node in request.nodes:
        if any(i.client_id == interface_ref for i in node.interfaces):
            return node.client_id
    return None


def _place_link(link: ReqLink, request: Request, placed: dict[str, NodePlacement], inventory: Inventory,
                link_used: dict[str, int]) -> LinkPlacement:
    owners = [_owner(request, ref) for ref in link.interface_refs]
    if any(o not in placed for o in owners):
        raise GeniError(GeniCode.UNSUPPORTED, f"link {link.client_id!r} reaches nodes of another aggregate; "
                                              "stitching between aggregates is not supported")
    components = sorted({placed[o].component for o in owners if o is not None})
    kbps = link.capacity_kbps or 0
    if len(components) == 1:
        return LinkPlacement(link.client_id, "", kbps)
    phys = _physical_link(components, inventory)
    if phys is None:
        raise GeniError(GeniCode.INSUFFICIENT_BANDWIDTH, f"link {link.client_id!r}: no physical link joins "
                                                         f"{', '.join(components)}")
    used = link_used.get(phys.name, 0)
    if used + kbps > phys.capacity_kbps:
        raise GeniError(GeniCode.INSUFFICIENT_BANDWIDTH, f"link {link.client_id!r} asks {kbps} kb/s; physical link "
                                                         f"{phys.name} has {phys.capacity_kbps - used} kb/s free")
    link_used[phys.name] = used + kbps
    return LinkPlacement(link.client_id, phys.name, kbps)


def _physical_link(components: list[str], inventory: Inventory) -> PhysicalLink | None:
    for link in inventory.links:
        ends = {node for node, _iface in link.endpoints}
        if set(components) <= ends:
            return link
    return None
