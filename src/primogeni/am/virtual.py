"""A request's virtual network: the model it carries, checked against the request and wired into it.

A request may carry a model (``<primo:model>``, DML or Python, inline or by URL) with emulated
hosts, a ``simulator`` node to run it, and one ``emulated-host`` node per emulated host
(``<primo:map virtual="top:h1" node="h1"/>``). Before anything is allocated, :func:`wire`

1. fetches the model when it is given by URL (:func:`primogeni.am.modelbox.fetch_model`), and
   learns what it holds in a sandbox (:func:`primogeni.am.modelbox.describe_model`): its
   elements, its emulated hosts with their addresses and simulated gateways, its address space;
2. checks the mapping: every ``virtual`` names an element of the model, a node realizing a host
   is an ``emulated-host`` and the host is emulated, every emulated host is realized by a node,
   and the slice has exactly one simulator (a model is one simulator instance for now);
3. wires each emulated host to the simulator: the request's link between the two when it has one,
   else a new interface on each and a link (``primo-<host>``). The host's interface gets the
   model's address (an address the request gave must be the model's); the simulator's interface
   has no address (it carries the host's frames into the simulator);
4. returns the spec additions the slivers need: each host a route to the model's address space via
   its simulated gateway, the simulator the model's text and which of its interfaces carries
   which emulated host (``attach``).

Every mistake is a ``GeniError`` BADARGS naming the element, node or link, before anything is
made. :func:`results` fetches what a slice's simulators measured (``PerformOperationalAction``
``primo:results``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from primogeni.am.modelbox import describe_model, fetch_model
from primogeni.am.models import PROVISIONED, SliverRow
from primogeni.geni.codes import GeniCode
from primogeni.geni.errors import GeniError
from primogeni.geni.rspec import Request
from primogeni.geni.rspec.model import SLIVER_EMULATED_HOST, SLIVER_SIMULATOR, ReqInterface, ReqIp, ReqLink, ReqNode

if TYPE_CHECKING:
    from primogeni.am.core import AggregateManager

RESULTS_ACTION = "primo:results"


@dataclass(frozen=True)
class Wired:
    """:func:`wire`'s answer: the request with its wires, and per node client_id what its spec gains."""

    request: Request
    extras: dict[str, dict[str, Any]]
    facts: dict[str, Any] | None = None


def _bad(message: str) -> GeniError:
    return GeniError(GeniCode.BADARGS, message)


def wire(request: Request, *, describe: Callable[[str, str], dict[str, Any]] = describe_model,
         fetch: Callable[[str], str] = fetch_model) -> Wired:
    """Check the request's model against it and wire its emulated hosts (see the module docstring)."""
    model = request.model
    if model is None:
        return Wired(request, {})
    sims = [n for n in request.nodes if n.sliver_type == SLIVER_SIMULATOR]
    if not sims:
        raise _bad("the request carries a <primo:model> but no node of sliver type simulator to run it")
    if len(sims) > 1:
        raise _bad(f"the request has {len(sims)} simulator nodes ({', '.join(n.client_id for n in sims)}); "
                   "a model runs on one simulator instance (parallel simulation is not supported yet)")
    sim = sims[0]
    text = model.text if model.text is not None else fetch(str(model.url))
    facts = describe(model.format, text)
    emulated = {e["path"]: e for e in facts["emulated"]}
    elements: dict[str, str] = facts["elements"]
    nodes = {n.client_id: n for n in request.nodes}
    realized: dict[str, str] = {}  # emulated host path → node client_id
    for virtual, node_id in model.mapping:
        node = nodes[node_id]  # the RSpec layer checked that the node exists
        kind = elements.get(virtual)
        if kind is None:
            raise _bad(f"<primo:map virtual={virtual!r}>: the model has no element {virtual!r} (name it by its "
                       f"full path from the top net, e.g. {facts['name']}:h1)")
        if node.sliver_type == SLIVER_EMULATED_HOST:
            if virtual not in emulated:
                what = "host that is not emulated (mark it emulated)" if kind == "host" else kind
                raise _bad(f"<primo:map virtual={virtual!r} node={node_id!r}>: an emulated-host node realizes an "
                           f"emulated host of the model, and {virtual} is a {what}")
            realized[virtual] = node_id
        elif node.sliver_type != SLIVER_SIMULATOR:
            raise _bad(f"<primo:map node={node_id!r}>: sliver type {node.sliver_type!r} cannot realize a model "
                       "element")
        elif node_id != sim.client_id:  # pragma: no cover (one simulator, checked above)
            raise _bad(f"<primo:map node={node_id!r}>: not the simulator")
    missing = [p for p in emulated if p not in realized]
    if missing:
        raise _bad(f"emulated host {missing[0]} of the model is realized by no node: add an emulated-host node "
                   f"and <primo:map virtual={missing[0]!r} node=...> (unrealized: {', '.join(missing)})")
    return _wire(request, sim, [(p, nodes[n], emulated[p]) for p, n in realized.items()], facts, model.format, text)


def _wire(request: Request, sim: ReqNode, hosts: Sequence[tuple[str, ReqNode, dict[str, Any]]],
          facts: dict[str, Any], fmt: str, text: str) -> Wired:
    taken = {n.client_id for n in request.nodes} | {i.client_id for n in request.nodes for i in n.interfaces}
    taken |= {link.client_id for link in request.links}

    def fresh(name: str) -> str:
        name, k = name, 2
        base = name
        while name in taken:
            name, k = f"{base}-{k}", k + 1
        taken.add(name)
        return name

    owner = {i.client_id: n.client_id for n in request.nodes for i in n.interfaces}
    links = list(request.links)
    changed: dict[str, list[ReqInterface]] = {n.client_id: list(n.interfaces) for n in request.nodes}
    prefix = ipaddress.IPv4Network(facts["prefix"])
    extras: dict[str, dict[str, Any]] = {}
    attach: list[list[str]] = []
    for path, host, info in hosts:
        address = ipaddress.IPv4Interface(info["address"])
        joins = [link for link in links if sorted(owner.get(r, "") for r in link.interface_refs)
                 == sorted((host.client_id, sim.client_id))]
        if len(joins) > 1:
            raise _bad(f"links {joins[0].client_id!r} and {joins[1].client_id!r} both join {host.client_id} to the "
                       f"simulator; {path} has one interface in the model")
        if joins:
            link = joins[0]
            host_if = next(r for r in link.interface_refs if owner[r] == host.client_id)
            sim_if = next(r for r in link.interface_refs if owner[r] == sim.client_id)
        else:
            host_if, sim_if = fresh(f"{host.client_id}:sim"), fresh(f"{sim.client_id}:{host.client_id}")
            changed[host.client_id].append(ReqInterface(host_if))
            changed[sim.client_id].append(ReqInterface(sim_if))
            links.append(ReqLink(fresh(f"primo-{host.client_id}"), (host_if, sim_if)))
        _address(changed[host.client_id], host_if, address, path)
        for iface in changed[sim.client_id]:
            if iface.client_id == sim_if and iface.ip is not None:
                raise _bad(f"interface {sim_if!r} of the simulator has an address ({iface.ip.address}); a simulator's "
                           "interface carries an emulated host's frames and has no address of its own")
        routes = [] if prefix.subnet_of(address.network) else [[str(prefix), info["gateway"]]]
        extras[host.client_id] = {"routes": routes, "virtual": path}
        attach.append([path, sim_if])
    extras[sim.client_id] = {"model": {"format": fmt, "text": text}, "attach": attach}
    nodes = tuple(dataclasses.replace(n, interfaces=tuple(changed[n.client_id])) for n in request.nodes)
    return Wired(dataclasses.replace(request, nodes=nodes, links=tuple(links)), extras, facts)


def _address(ifaces: list[ReqInterface], client_id: str, address: ipaddress.IPv4Interface, path: str) -> None:
    for k, iface in enumerate(ifaces):
        if iface.client_id != client_id:
            continue
        ip = iface.ip
        if ip is not None and (ip.address != address.ip or ip.prefixlen not in (None, address.network.prefixlen)):
            raise _bad(f"interface {client_id!r} asks for {ip.address}"
                       f"{'/' + str(ip.prefixlen) if ip.prefixlen is not None else ''}, but the model gives {path} "
                       f"{address}; leave the address out or give the model's")
        ifaces[k] = dataclasses.replace(iface, ip=ReqIp(address.ip, address.network.prefixlen))


def results(am: AggregateManager, slice_urn: str, urns: Sequence[str] | None) -> list[tuple[str, dict[str, Any]]]:
    """What each provisioned simulator sliver of the slice (of ``urns``, when given) has measured:
    ``[(sliver URN, the agent's answer)]`` (state, exit code, log tail, files)."""
    fetch = getattr(am.driver, "results", None)
    if fetch is None:
        raise GeniError(GeniCode.UNSUPPORTED, "this aggregate's resource driver runs no simulations")
    with am.readers() as session:
        query = select(SliverRow.urn, SliverRow.allocation).where(
            SliverRow.slice_urn == slice_urn, SliverRow.sliver_type == SLIVER_SIMULATOR)
        rows = [(u, a) for u, a in session.execute(query) if urns is None or u in urns]
    if not rows:
        raise GeniError(GeniCode.SEARCHFAILED, f"slice {slice_urn} has no simulator sliver here")
    out = []
    for urn, allocation in rows:
        if allocation != PROVISIONED:
            raise _bad(f"sliver {urn} is not provisioned; it has no results")
        out.append((urn, fetch(urn)))
    return out
