"""The rows of a new allocation: node slivers with their slots and port ranges, link slivers with
their VNI and experimental subnet, all added to the caller's transaction.

:meth:`primogeni.am.core.AggregateManager.allocate` decides (placement, policy) and calls
:func:`create_rows` inside its locked transaction, so the claims, VNIs and subnets it adds are
taken all together or not at all. The database's primary keys (``am_claims``, ``am_vnis``,
``am_subnets``) make double-booking impossible even if two AM processes race.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from primogeni.am.inventory import Inventory
from primogeni.am.models import ALLOCATED, PENDING, ClaimRow, SliceRow, SliverRow, SubnetRow, VniRow
from primogeni.am.placement import LinkPlacement, NodePlacement, ours
from primogeni.am.plans import address_link, free_subnets, free_vni, mac_of
from primogeni.geni.codes import GeniCode
from primogeni.geni.errors import GeniError
from primogeni.geni.rspec import Request
from primogeni.geni.urn import Urn


def create_rows(session: Session, slice_row: SliceRow, request: Request, node_places: list[NodePlacement],
                link_places: list[LinkPlacement], *, inventory: Inventory, cm: Urn, new_urn: Callable[[], str],
                expires: datetime, now: datetime, ticket_id: str | None,
                extras: dict[str, dict[str, Any]] | None = None) -> list[SliverRow]:
    """Add the allocated slivers' rows to ``session`` and return them (nodes first, then links).

    ``extras``: what a node's spec gains, by client_id (routes, a simulator's model; see
    :mod:`primogeni.am.virtual`)."""
    req_nodes = {n.client_id: n for n in request.nodes if ours(n, cm)}
    rows: list[SliverRow] = []
    iface_urn: dict[str, str] = {}
    for p in node_places:
        node = req_nodes[p.client_id]
        urn = new_urn()
        phys = inventory.node(p.component)
        assert phys is not None
        row = SliverRow(urn=urn, slice_urn=slice_row.urn, client_id=p.client_id, kind="node",
                        component=p.component, sliver_type=node.sliver_type, exclusive=p.exclusive,
                        allocation=ALLOCATED, operational=PENDING, expires=expires, created=now, ticket_id=ticket_id)
        ifaces = []
        for k, iface in enumerate(node.interfaces):
            iface_urn[iface.client_id] = urn
            ifaces.append({"client_id": iface.client_id, "name": f"eth{k + 1}", "mac": mac_of(urn, iface.client_id),
                           "address": str(iface.ip.address) if iface.ip else None,
                           "netmask": iface.ip.netmask if iface.ip else None, "link": None})
        lo, hi = phys.ports(p.slots)
        row.spec = json.dumps({"interfaces": ifaces, "hostname": phys.hostname, "ssh_port": lo, "ports": [lo, hi],
                               "users": [], **(extras or {}).get(p.client_id, {})})
        row.claims = [ClaimRow(component=p.component, slot=s) for s in p.slots]
        session.add(row)
        rows.append(row)
    used_vnis = set(session.scalars(select(VniRow.vni)))
    subnets = free_subnets(inventory.pool, inventory.prefixlen, set(session.scalars(select(SubnetRow.subnet))))

    def take() -> ipaddress.IPv4Network:
        subnet = next(subnets, None)
        if subnet is None:
            raise GeniError(GeniCode.UNAVAILABLE, f"the experimental address pool {inventory.pool} has no free "
                                                  f"/{inventory.prefixlen} subnet left for another link")
        return subnet

    req_links = {link.client_id: link for link in request.links}
    by_client = {r.client_id: r for r in rows}
    for lp in link_places:
        link = req_links[lp.client_id]
        vni = free_vni(used_vnis)
        used_vnis.add(vni)
        urn = new_urn()
        row = SliverRow(urn=urn, slice_urn=slice_row.urn, client_id=lp.client_id, kind="link",
                        component=lp.physical_link, allocation=ALLOCATED, operational=PENDING,
                        expires=expires, created=now, ticket_id=ticket_id, bandwidth_kbps=lp.bandwidth_kbps)
        row.vni = VniRow(vni=vni, sliver_urn=urn)
        pooled = address_link(urn, link.interface_refs, by_client, iface_urn, take)
        if pooled is not None:
            row.subnet = SubnetRow(subnet=str(pooled), sliver_urn=urn, slice_urn=slice_row.urn)
        row.spec = json.dumps({"interface_refs": list(link.interface_refs), "vni": vni,
                               "capacity_kbps": link.capacity_kbps, "latency_ms": link.latency_ms,
                               "packet_loss": link.packet_loss, "link_type": link.link_type,
                               "subnet": None if pooled is None else str(pooled)})
        session.add(row)
        rows.append(row)
    return rows
