"""Sliver plans: what the resource driver is told, built from the AM's rows; and the addressing
the AM does for a slice (MAC addresses, link tags, addresses on unaddressed interfaces).

Pure functions over database rows; :mod:`primogeni.am.core` calls them inside its transactions.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from primogeni.am.driver import PlannedInterface, PlannedLogin, SliverPlan
from primogeni.am.models import SliverRow
from primogeni.geni.codes import GeniCode
from primogeni.geni.errors import GeniError
from primogeni.geni.urn import Urn

VNI_FIRST = 4096
VNI_LAST = (1 << 24) - 1


def plan_of(session: Session, row: SliverRow) -> SliverPlan:
    """The driver's plan for one sliver, from its rows (the slice's node slivers give a link's ends)."""
    spec = json.loads(row.spec)
    if row.kind == "node":
        ifaces = tuple(PlannedInterface(i["client_id"], i["name"], i["mac"], i["address"], i["netmask"], i["link"])
                       for i in spec["interfaces"])
        logins = tuple(PlannedLogin(Urn.parse(u["urn"]).name, spec["ssh_port"], tuple(u["keys"]))
                       for u in spec["users"]) if row.sliver_type == "emulated-host" else ()
        model = None
        if row.sliver_type == "simulator":
            model = model_of(row.slice.request_xml)
        return SliverPlan(row.slice_urn, row.urn, "node", row.client_id, row.component, row.sliver_type,
                          row.exclusive, tuple(sorted(c.slot for c in row.claims)), spec["hostname"], ifaces,
                          logins, model=model)
    ends = []
    for other in session.scalars(select(SliverRow).where(SliverRow.slice_urn == row.slice_urn,
                                                          SliverRow.kind == "node")):
        for i in json.loads(other.spec)["interfaces"]:
            if i["client_id"] in spec["interface_refs"]:
                ends.append((other.urn, i["client_id"]))
    return SliverPlan(row.slice_urn, row.urn, "link", row.client_id, row.component, vni=spec["vni"],
                      endpoints=tuple(ends), capacity_kbps=spec["capacity_kbps"], latency_ms=spec["latency_ms"],
                      packet_loss=spec["packet_loss"])


def mac_of(sliver_urn: str, client_id: str) -> str:
    digest = hashlib.sha256(f"{sliver_urn}/{client_id}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


def free_vni(used: set[int]) -> int:
    vni = VNI_FIRST
    while vni in used:
        vni += 1
    if vni > VNI_LAST:
        raise GeniError(GeniCode.VLAN_UNAVAILABLE, "no free link tag (VNI) left")
    return vni


def address_link(link_urn: str, vni: int, refs: Sequence[str], nodes: dict[str, SliverRow],
                  iface_urn: dict[str, str]) -> None:
    """Tie each interface to its link, and give unaddressed ones addresses in the link's /24."""
    subnet = ipaddress.IPv4Network((f"10.{(vni >> 8) & 255}.{vni & 255}.0", 24))
    by_urn = {r.urn: r for r in nodes.values()}
    taken: set[str] = set()
    specs: dict[str, dict[str, Any]] = {}
    for ref in refs:
        row = by_urn[iface_urn[ref]]
        specs.setdefault(row.urn, json.loads(row.spec))
    for spec in specs.values():
        for iface in spec["interfaces"]:
            if iface["client_id"] in refs and iface["address"]:
                taken.add(iface["address"])
    hosts = (str(h) for h in subnet.hosts() if str(h) not in taken)
    for ref in refs:
        spec = specs[iface_urn[ref]]
        for iface in spec["interfaces"]:
            if iface["client_id"] == ref:
                iface["link"] = link_urn
                if not iface["address"]:
                    iface["address"], iface["netmask"] = next(hosts), "255.255.255.0"
    for urn, spec in specs.items():
        by_urn[urn].spec = json.dumps(spec)


def model_of(request_xml: str) -> dict[str, object] | None:
    from primogeni.geni.rspec import parse_request

    if not request_xml:
        return None
    model = parse_request(request_xml).model
    if model is None:
        return None
    return {"format": model.format, "text": model.text, "url": model.url, "mapping": [list(m) for m in model.mapping]}
