"""Sliver plans: what the resource driver is told, built from the AM's rows; and the addressing
the AM does for a slice (MAC addresses, link tags, experimental subnets, login names).

Pure functions over database rows; :mod:`primogeni.am.core` and :mod:`primogeni.am.allocate` call
them inside their transactions.

Addressing: every virtual link or LAN whose interfaces the request left unaddressed gets a subnet
of the configured pool (``[pool]`` in the inventory) that no other link holds (the
``am_subnets`` row is the proof); when the request addressed some interfaces of a link and they
share one network, the others are filled from that network instead.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
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
# Names a login must not take over inside a sliver (they exist in every /etc/passwd).
RESERVED_USERS = frozenset({"root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp",
                            "proxy", "www-data", "backup", "list", "irc", "gnats", "nobody", "sshd", "messagebus",
                            "systemd-network", "systemd-resolve", "_apt", "postgres"})
_NOT_UNIX = re.compile(r"[^a-z0-9_-]")


@dataclass
class _SliceFacts:
    """What every plan of one slice shares, read once per slice."""

    rows: list[SliverRow]
    specs: dict[str, dict[str, Any]]  # sliver URN → its spec
    iface: dict[str, tuple[str, str, str]]  # interface client_id → (node sliver URN, device name, component)
    hosts: tuple[tuple[str, str], ...]
    vnis: tuple[int, ...]
    components: tuple[str, ...]


def _facts(session: Session, slice_urn: str) -> _SliceFacts:
    rows = list(session.scalars(select(SliverRow).where(SliverRow.slice_urn == slice_urn)
                                .order_by(SliverRow.kind.desc(), SliverRow.client_id)))
    specs = {r.urn: json.loads(r.spec) for r in rows}
    iface: dict[str, tuple[str, str, str]] = {}
    hosts = []
    for r in rows:
        if r.kind != "node":
            continue
        first = None
        for i in specs[r.urn]["interfaces"]:
            iface[i["client_id"]] = (r.urn, i["name"], r.component)
            if first is None and i["address"]:
                first = i["address"]
        if first is not None:
            hosts.append((r.client_id, first))
    vnis = tuple(sorted(specs[r.urn]["vni"] for r in rows if r.kind == "link"))
    components = tuple(sorted({r.component for r in rows if r.kind == "node"}))
    return _SliceFacts(rows, specs, iface, tuple(hosts), vnis, components)


def plans_of(session: Session, rows: Sequence[SliverRow]) -> list[SliverPlan]:
    """The driver's plans for ``rows`` (slice-wide facts are read once per slice)."""
    cache: dict[str, _SliceFacts] = {}
    plans = []
    for row in rows:
        facts = cache.get(row.slice_urn)
        if facts is None:
            facts = cache[row.slice_urn] = _facts(session, row.slice_urn)
        plans.append(_plan(row, facts))
    return plans


def plan_of(session: Session, row: SliverRow) -> SliverPlan:
    """The driver's plan for one sliver, from its rows (the slice's node slivers give a link's ends)."""
    return plans_of(session, [row])[0]


def _plan(row: SliverRow, facts: _SliceFacts) -> SliverPlan:
    spec = facts.specs.get(row.urn) or json.loads(row.spec)
    if row.kind == "node":
        ifaces = tuple(PlannedInterface(i["client_id"], i["name"], i["mac"], i["address"], i["netmask"], i["link"])
                       for i in spec["interfaces"])
        logins: tuple[PlannedLogin, ...] = ()
        if row.sliver_type == "emulated-host":
            names = login_names([u["urn"] for u in spec["users"]])
            logins = tuple(PlannedLogin(name, spec["ssh_port"], tuple(u["keys"]))
                           for name, u in zip(names, spec["users"], strict=True))
        devices = {i["client_id"]: i["name"] for i in spec["interfaces"]}
        ports = tuple(spec["ports"]) if "ports" in spec else (spec["ssh_port"], spec["ssh_port"])
        return SliverPlan(row.slice_urn, row.urn, "node", row.client_id, row.component, row.sliver_type,
                          row.exclusive, tuple(sorted(c.slot for c in row.claims)), spec["hostname"], ifaces,
                          logins, model=spec.get("model"), ports=(int(ports[0]), int(ports[1])), hosts=facts.hosts,
                          routes=tuple((str(d), str(v)) for d, v in spec.get("routes", ())),
                          attach=tuple((str(p), devices[c]) for p, c in spec.get("attach", ())),
                          vsys_keys=facts.vnis, vsys_peers=tuple(c for c in facts.components if c != row.component))
    ends, nodes, names = [], [], []
    for ref in spec["interface_refs"]:
        found = facts.iface.get(ref)
        if found is not None:
            ends.append((found[0], ref))
            names.append(found[1])
            nodes.append(found[2])
    return SliverPlan(row.slice_urn, row.urn, "link", row.client_id, row.component, vni=spec["vni"],
                      endpoints=tuple(ends), capacity_kbps=spec["capacity_kbps"], latency_ms=spec["latency_ms"],
                      packet_loss=spec["packet_loss"], nodes=tuple(nodes), iface_names=tuple(names))


def unix_name(name: str) -> str:
    """A login name for a user URN's name: lower case, ``[a-z0-9_-]``, a letter first, ≤ 32, not a system user.

    ``alice`` stays ``alice``; ``Bob.Smith`` becomes ``bob_smith``; ``root`` becomes ``u_root``.
    """
    text = _NOT_UNIX.sub("_", name.lower())
    if not text or not text[0].isalpha() or text in RESERVED_USERS:
        text = f"u_{text}"
    return text[:32]


def login_names(user_urns: Sequence[str]) -> list[str]:
    """Login names for the users of a sliver, in order; a name taken twice after mangling gets a number."""
    out: list[str] = []
    for urn in user_urns:
        base = unix_name(Urn.parse(urn).name)
        name, k = base, 2
        while name in out:
            suffix = str(k)
            name, k = base[:32 - len(suffix)] + suffix, k + 1
        out.append(name)
    return out


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


def free_subnets(pool: ipaddress.IPv4Network, prefixlen: int, used: set[str]) -> Iterator[ipaddress.IPv4Network]:
    """The pool's subnets of ``prefixlen`` bits that nobody holds, in address order."""
    return (net for net in pool.subnets(new_prefix=prefixlen) if str(net) not in used)


def address_link(link_urn: str, refs: Sequence[str], nodes: dict[str, SliverRow], iface_urn: dict[str, str],
                 take: Callable[[], ipaddress.IPv4Network]) -> ipaddress.IPv4Network | None:
    """Tie each interface to its link and address the unaddressed ones; returns the pool subnet taken, if any.

    ``take()`` hands out the next free subnet of the pool; it is called only when some interface
    needs an address and the addressed ones do not name one common network.
    """
    by_urn = {r.urn: r for r in nodes.values()}
    specs: dict[str, dict[str, Any]] = {}
    for ref in refs:
        row = by_urn[iface_urn[ref]]
        specs.setdefault(row.urn, json.loads(row.spec))
    mine = [i for spec in specs.values() for i in spec["interfaces"] if i["client_id"] in refs]
    taken = {i["address"] for i in mine if i["address"]}
    given = {ipaddress.IPv4Interface(f"{i['address']}/{i['netmask']}").network for i in mine
             if i["address"] and i["netmask"] and ipaddress.ip_address(i["address"]).version == 4}
    # a simulator's interface that carries an emulated host's frames (am.virtual) has no address of its own
    frames = {c for spec in specs.values() for _path, c in spec.get("attach", ())}
    todo = [i for i in mine if not i["address"] and i["client_id"] not in frames]
    pooled: ipaddress.IPv4Network | None = None
    if todo:
        if len(given) == 1:
            subnet = given.pop()
        else:
            subnet = pooled = take()
        hosts = (str(h) for h in subnet.hosts() if str(h) not in taken)
        for iface in todo:
            address = next(hosts, None)
            if address is None:
                raise GeniError(GeniCode.BADARGS, f"link {link_urn}: {len(mine)} interfaces do not fit in "
                                                  f"{subnet} ({subnet.num_addresses - 2} host addresses)")
            iface["address"], iface["netmask"] = address, str(subnet.netmask)
    for iface in mine:
        iface["link"] = link_urn
    for urn, spec in specs.items():
        by_urn[urn].spec = json.dumps(spec)
    return pooled
