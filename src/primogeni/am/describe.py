"""Descriptions the AM hands out: the advertisement of its meta resources and slice manifests.

Both are built from the inventory and the database records, as plain RSpec values
(:mod:`primogeni.geni.rspec`), then written as XML by that module. When the AM drives node
agents, nodes whose agent is not alive are advertised as not available, and each node carries
its agent's last measured load (``<primo:usage>``, refreshed at most every few seconds).
"""

from __future__ import annotations

import ipaddress
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from primogeni.am.core import AggregateManager
from primogeni.am.placement import Usage
from primogeni.am.plans import login_names
from primogeni.geni.rspec import (
    AdInterface,
    AdLink,
    AdNode,
    Login,
    ManInterface,
    ManLink,
    ManNode,
    NodeUsage,
    ReqIp,
    advertisement,
    manifest,
    parse_request,
)
from primogeni.geni.urn import Urn

# Per AM: (minute, available_only, slots in use) → advertisement text; and, per AM and
# available_only, the last answer with the AM's write generation and when occupancy was read.
_AD_CACHE: weakref.WeakKeyDictionary[AggregateManager, dict[tuple[object, ...], str]] = weakref.WeakKeyDictionary()
_AD_LAST: weakref.WeakKeyDictionary[AggregateManager, dict[bool, tuple[int, float, datetime, str]]] = (
    weakref.WeakKeyDictionary())
_AD_CACHE_LOCK = threading.Lock()
AD_FRESH_S = 1.0
"""How long an advertisement may be served without reading occupancy again, unless this process
changed it. (Another AM process sharing the database is seen within this delay.)"""


def advertise(am: AggregateManager, now: datetime, *, available_only: bool = False) -> str:
    """The advertisement; rebuilt when what is in use changes, and at least once a minute."""
    minute = now.replace(second=0, microsecond=0)
    generation = am.generation
    with _AD_CACHE_LOCK:
        last = _AD_LAST.setdefault(am, {}).get(available_only)
    if last is not None and last[0] == generation and last[2] == minute and time.monotonic() - last[1] < AD_FRESH_S:
        return last[3]
    read_at = time.monotonic()
    usage = am.usage()
    offered = am.offered()
    loads = _loads(am)
    key = (minute, available_only, tuple(sorted((k, tuple(sorted(v))) for k, v in usage.slots.items())),
           None if offered is None else tuple(sorted(offered)), tuple(sorted(loads.items())))
    with _AD_CACHE_LOCK:
        cache = _AD_CACHE.setdefault(am, {})
        text = cache.get(key)
    if text is None:
        text = _advertise(am, usage, minute, available_only, offered, loads)
        with _AD_CACHE_LOCK:
            if len(cache) > 64:
                cache.clear()
            cache[key] = text
    with _AD_CACHE_LOCK:
        _AD_LAST[am][available_only] = (generation, read_at, minute, text)
    return text


def _loads(am: AggregateManager) -> dict[str, NodeUsage]:
    """Each node's last measured load from the driver (``node_usage``), when it has one."""
    measure = getattr(am.driver, "node_usage", None)
    if measure is None:
        return {}
    out = {}
    for name, figures in measure().items():
        usage = _node_usage(figures)
        if usage is not None:
            out[name] = usage
    return out


def _node_usage(f: Mapping[str, Any]) -> NodeUsage | None:
    try:
        return NodeUsage(int(f["cpus"]), round(float(f["cpu_percent"]), 1), round(float(f["load1"]), 2),
                         int(f["mem_total"]), int(f["mem_available"]), int(f["disk_free"]))
    except (KeyError, TypeError, ValueError):
        return None


def _advertise(am: AggregateManager, usage: Usage, now: datetime, available_only: bool,
               offered: frozenset[str] | None = None, loads: Mapping[str, NodeUsage] | None = None) -> str:
    auth = am.cm.authority
    nodes = []
    for n in am.inventory.nodes:
        free = n.capacity - len(usage.slots.get(n.name, frozenset()))
        if offered is not None and n.name not in offered:
            free = 0  # its agent is not alive: nothing can be placed there now
        if available_only and free == 0:
            continue
        ifaces = tuple(AdInterface(Urn(auth, "interface", f"{n.name}:{i}"), i) for i in n.interfaces)
        nodes.append(AdNode(Urn(auth, "node", n.name), am.cm, n.name, n.kind, n.capacity, free, n.exclusive,
                            tuple(n.sliver_types), ifaces, usage=(loads or {}).get(n.name)))
    links = []
    for link in am.inventory.links:
        ends = [Urn(auth, "interface", f"{node}:{iface}") for node, iface in link.endpoints]
        # RSpec links join two interfaces; an underlay LAN is advertised as one link per pair.
        shown = {n.name for n in nodes}
        for a in range(len(ends)):
            for b in range(a + 1, len(ends)):
                if not {link.endpoints[a][0], link.endpoints[b][0]} <= shown:
                    continue  # an end left out of the advertisement (geni_available: nothing free there)
                name = link.name if len(ends) == 2 else f"{link.name}:{link.endpoints[a][0]}-{link.endpoints[b][0]}"
                links.append(AdLink(Urn(auth, "link", name), name, (ends[a], ends[b]), link.capacity_kbps,
                                    link.latency_ms, "lan" if len(ends) > 2 else "vlan", am.cm))
    return advertisement(nodes, links, now=now, expires=now + timedelta(hours=1))


def slice_manifest(am: AggregateManager, slice_urn: str, urns: Sequence[str] | None, now: datetime) -> str:
    records, request_xml = am.rows_for_manifest(slice_urn, urns)
    auth = am.cm.authority
    nodes, links = [], []
    for rec in records:
        spec = rec["spec"]
        assert isinstance(spec, dict)
        sliver_id = Urn.parse(str(rec["urn"]))
        if rec["kind"] == "node":
            phys = am.inventory.node(str(rec["component"]))
            # the physical interface experimental traffic leaves by: the node's last one (its underlay)
            phys_iface = phys.interfaces[-1] if phys is not None and phys.interfaces else "eth0"
            ifaces = []
            for i in spec["interfaces"]:
                ip = None
                if i["address"]:
                    prefix = ipaddress.IPv4Network(f"0.0.0.0/{i['netmask']}").prefixlen if i["netmask"] else None
                    ip = ReqIp(ipaddress.ip_address(i["address"]), prefix)
                ifaces.append(ManInterface(i["client_id"], Urn(auth, "sliver", f"{sliver_id.name}:{i['name']}"),
                                           Urn(auth, "interface", f"{rec['component']}:{phys_iface}"), i["mac"], ip))
            logins = tuple(Login(spec["hostname"], spec["ssh_port"], name)
                           for name in login_names([u["urn"] for u in spec["users"]])
                           ) if rec["sliver_type"] == "emulated-host" else ()
            nodes.append(ManNode(str(rec["client_id"]), sliver_id, Urn(auth, "node", str(rec["component"])), am.cm,
                                 str(rec["sliver_type"]), bool(rec["exclusive"]), tuple(ifaces), logins))
        else:
            links.append(ManLink(str(rec["client_id"]), sliver_id, str(spec["vni"]), tuple(spec["interface_refs"]),
                                 spec["capacity_kbps"], spec["latency_ms"], spec["packet_loss"], spec["link_type"]))
    model = parse_request(request_xml).model if request_xml else None
    expires = now + timedelta(days=1)
    return manifest(nodes, links, model=model, now=now, expires=expires)
