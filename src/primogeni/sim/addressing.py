"""Automatic IPv4 addressing of a model, and the checks on addresses that were given.

Every link (or LAN) is one subnet. A link's subnet is, in order of preference: its ``prefix``;
the network of the addresses given to its interfaces; or a block allocated from its net's
prefix. A net without a prefix gets a block from its parent, sized to hold everything
inside it. Blocks are aligned powers of two, allocated largest first, skipping every prefix
that was given explicitly anywhere in the model. Interfaces without an address get the first
free host address of their link's subnet.

The result is written into the model (``Net.prefix``, ``Link.prefix``, ``Interface.address``),
so assigning is idempotent: a second call finds everything assigned and only checks.
"""

from __future__ import annotations

import bisect
from ipaddress import IPv4Interface, IPv4Network

from primogeni.errors import ModelError
from primogeni.sim.model import Link, Net, Network


def _pow2(n: int) -> int:
    p = 1
    while p < n:
        p <<= 1
    return p


def _link_size(link: Link) -> int:
    # Usable addresses exclude the network and broadcast address: a /30 for two ends.
    return max(4, _pow2(len(link.interfaces) + 2))


class _Reserved:
    """Sorted, non-overlapping [start, end) intervals of address space already taken."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.owners: list[str] = []

    def overlap(self, start: int, end: int) -> int | None:
        """Index of an interval overlapping [start, end), or None."""
        i = bisect.bisect_right(self.starts, start) - 1
        for j in (i, i + 1):
            if 0 <= j < len(self.starts) and self.starts[j] < end and start < self.ends[j]:
                return j
        return None

    def add(self, start: int, end: int, owner: str) -> None:
        i = bisect.bisect_left(self.starts, start)
        self.starts.insert(i, start)
        self.ends.insert(i, end)
        self.owners.insert(i, owner)


def _infer_link_prefixes(net: Network) -> None:
    for link in net.all_links():
        given = [i for i in link.interfaces if i.address is not None]
        if link.prefix is None and given:
            first = given[0].address
            assert first is not None
            link.prefix = first.network
            if link.prefix.prefixlen > 30 and len(link.interfaces) > 1:
                raise link.error(f"address {first} leaves no room for {len(link.interfaces)} interfaces")
        if link.prefix is None:
            continue
        for i in given:
            assert i.address is not None
            if i.address.ip not in link.prefix:
                raise i.error(f"address {i.address.ip} is outside its link's prefix {link.prefix}")
            if i.address.network != link.prefix:
                i.address = IPv4Interface(f"{i.address.ip}/{link.prefix.prefixlen}")
        usable = link.prefix.num_addresses - (2 if link.prefix.prefixlen < 31 else 0)
        if usable < len(link.interfaces):
            raise link.error(f"prefix {link.prefix} holds too few addresses for {len(link.interfaces)} interfaces")


def _explicit_ancestor(net: Net) -> Net:
    cur: Net | None = net.parent
    while cur is not None and cur.prefix is None:
        cur = cur.parent
    assert cur is not None  # the top net always has a prefix
    return cur


def _reserve_fixed(top: Network) -> _Reserved:
    """Check given prefixes nest and do not overlap; reserve them."""
    reserved = _Reserved()
    fixed_links = []
    for e in top.walk():
        if not isinstance(e, Net):
            continue
        if e is not top and e.prefix is not None:
            anc = _explicit_ancestor(e)
            assert anc.prefix is not None
            if not e.prefix.subnet_of(anc.prefix):
                raise e.error(f"prefix {e.prefix} is outside its enclosing prefix {anc.prefix} ({anc.path})")
        for link in e.links:
            if link.prefix is None:
                continue
            anc = e if e.prefix is not None else _explicit_ancestor(e)
            assert anc.prefix is not None
            if not link.prefix.subnet_of(anc.prefix):
                raise link.error(f"prefix {link.prefix} is outside its net's prefix {anc.prefix} ({anc.path})")
            fixed_links.append(link)
    # Largest first: a given prefix nested in another given one is a more specific route
    # (allowed, longest-prefix match picks it); the same prefix twice is an error.
    fixed_links.sort(key=lambda lk: (lk.prefix.prefixlen, int(lk.prefix.network_address)))  # type: ignore[union-attr]
    seen: dict[IPv4Network, str] = {}
    for link in fixed_links:
        assert link.prefix is not None
        if link.prefix in seen:
            raise link.error(f"prefix {link.prefix} is also the prefix of {seen[link.prefix]}")
        seen[link.prefix] = link.path
        s, t = int(link.prefix.network_address), int(link.prefix.broadcast_address) + 1
        if reserved.overlap(s, t) is None:
            reserved.add(s, t, link.path)
    return reserved


def _need(net: Net, sizes: dict[int, int]) -> int:
    """Address space an auto-prefixed net needs (fixed items excluded)."""
    total = 0
    for c in net.children.values():
        if isinstance(c, Net) and c.prefix is None:
            total += _need(c, sizes)
    for link in net.links:
        if link.prefix is None:
            total += _link_size(link)
    size = max(4, _pow2(total))
    sizes[id(net)] = size
    return size


def _allocate(net: Net, reserved: _Reserved, fixed_nets: list[tuple[int, int]], sizes: dict[int, int]) -> None:
    assert net.prefix is not None
    base = int(net.prefix.network_address)
    end = int(net.prefix.broadcast_address) + 1
    # Nets with a given prefix are obstacles, except this net and those that contain it.
    obstacles = [(s, t) for s, t in fixed_nets if not (s <= base and end <= t)]
    items: list[tuple[int, int, Net | Link]] = []
    order = 0
    for c in net.children.values():
        if isinstance(c, Net) and c.prefix is None:
            items.append((sizes[id(c)], order, c))
            order += 1
    for link in net.links:
        if link.prefix is None:
            items.append((_link_size(link), order, link))
            order += 1
    items.sort(key=lambda t: (-t[0], t[1]))
    ptr = base
    for size, _, item in items:
        while True:
            ptr = (ptr + size - 1) // size * size
            if ptr + size > end:
                raise net.error(f"prefix {net.prefix} is too small for its {len(items)} subnets and links")
            j = reserved.overlap(ptr, ptr + size)
            if j is not None:
                ptr = reserved.ends[j]
                continue
            hit = next((t for s, t in obstacles if s < ptr + size and ptr < t), None)
            if hit is None:
                break
            ptr = hit
        plen = 32 - (size.bit_length() - 1)
        pfx = IPv4Network((ptr, plen))
        item.prefix = pfx
        if isinstance(item, Link):
            reserved.add(ptr, ptr + size, item.path)
        ptr += size
    for c in net.children.values():
        if isinstance(c, Net):
            _allocate(c, reserved, fixed_nets, sizes)


def _assign_interfaces(top: Network) -> None:
    owner: dict[int, str] = {}
    for link in top.all_links():
        assert link.prefix is not None
        pfx = link.prefix
        taken = {int(i.address.ip) for i in link.interfaces if i.address is not None}
        first = int(pfx.network_address) + (1 if pfx.prefixlen < 31 else 0)
        nxt = first
        for i in link.interfaces:
            if i.address is None:
                while nxt in taken:
                    nxt += 1
                i.address = IPv4Interface((nxt, pfx.prefixlen))
                taken.add(nxt)
            ip = int(i.address.ip)
            if pfx.prefixlen < 31 and ip in (int(pfx.network_address), int(pfx.broadcast_address)):
                raise i.error(f"address {i.address.ip} is the network or broadcast address of {pfx}")
            if ip in owner:
                raise i.error(f"address {i.address.ip} is also given to {owner[ip]}")
            owner[ip] = i.path
    for node in top.nodes():
        for i in node.interfaces:
            if i.link is None and i.address is not None:
                raise i.error("interface has an address but is attached to no link")


def assign_addresses(top: Network) -> None:
    """Give every net, link and interface of ``top`` an address; check the given ones."""
    _infer_link_prefixes(top)
    reserved = _reserve_fixed(top)
    sizes: dict[int, int] = {}
    # Sub-nets with a given prefix allocate inside it; auto ones inside their parent.
    _need(top, sizes)
    for e in top.walk():
        if isinstance(e, Net) and e.prefix is not None and e is not top:
            _need(e, sizes)
    fixed_nets = [
        (int(e.prefix.network_address), int(e.prefix.broadcast_address) + 1)
        for e in top.walk()
        if isinstance(e, Net) and e is not top and e.prefix is not None
    ]
    _allocate(top, reserved, fixed_nets, sizes)
    _assign_interfaces(top)


__all__ = ["ModelError", "assign_addresses"]
