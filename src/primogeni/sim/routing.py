"""Shortest-path routes and longest-prefix-match forwarding tables, computed on demand.

Every link is a subnet. A node's forwarding table maps each subnet to a next hop; a lookup takes
the longest prefix that matches the destination. Routes toward a subnet come from one
shortest-path tree rooted at the nodes attached to it (Dijkstra over link costs; breadth-first
when every cost is 1). Only routers carry transit traffic: a host never appears inside a path.

A tree is computed the first time some node needs a route toward its subnet, and kept, so a
model with thousands of subnets pays only for the destinations its traffic uses. The result is
the same as filling every table up front.
"""

from __future__ import annotations

from collections import deque
from heapq import heappop, heappush
from ipaddress import IPv4Network

from primogeni.sim.node import Port, SimNode


class Subnet:
    __slots__ = ("attached", "cost", "net", "owners", "plen", "prefix")

    def __init__(self, prefix: IPv4Network, cost: int) -> None:
        self.prefix = prefix
        self.net = int(prefix.network_address)
        self.plen = prefix.prefixlen
        self.cost = cost
        self.attached: list[Port] = []
        self.owners: dict[int, Port] = {}  # address -> the port that holds it


class Routing:
    """Forwarding state of one simulation."""

    def __init__(self, nodes: list[SimNode]) -> None:
        self.nodes = nodes
        self.subnets: list[Subnet] = []
        # prefix length -> {masked network -> subnet}; lengths longest first
        self._by_len: dict[int, dict[int, Subnet]] = {}
        self._lengths: list[int] = []
        # node -> [(neighbour, out port, neighbour's rx port, cost)]
        self.adj: dict[SimNode, list[tuple[SimNode, Port, Port, int]]] = {n: [] for n in nodes}
        self._trees: dict[int, dict[SimNode, tuple[Port, Port]]] = {}
        self._uniform = True

    def add_subnet(self, prefix: IPv4Network, ports: list[Port], cost: int) -> None:
        sn = Subnet(prefix, cost)
        sn.attached = ports
        for p in ports:
            sn.owners[p.addr] = p
        self.subnets.append(sn)
        self._by_len.setdefault(sn.plen, {})[sn.net] = sn
        self._lengths = sorted(self._by_len, reverse=True)
        if cost != 1:
            self._uniform = False
        for a in ports:
            for b in ports:
                if a is not b:
                    self.adj[a.node].append((b.node, a, b, cost))

    def match(self, dst: int) -> Subnet | None:
        """Longest-prefix match of ``dst`` over every subnet."""
        for plen in self._lengths:
            mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
            sn = self._by_len[plen].get(dst & mask)
            if sn is not None:
                return sn
        return None

    def next_hop(self, node: SimNode, dst: int) -> tuple[Port, Port] | None:
        """(out port, receiving port) for ``dst`` at ``node``, or None if unreachable."""
        sn = self.match(dst)
        if sn is None:
            return None
        for p in sn.attached:
            if p.node is node:  # directly connected: deliver to the owner of dst
                owner = sn.owners.get(dst)
                return (p, owner) if owner is not None else None
        return self.tree(sn).get(node)

    def tree(self, sn: Subnet) -> dict[SimNode, tuple[Port, Port]]:
        """Next hop toward ``sn`` for every node that can reach it."""
        key = id(sn)
        t = self._trees.get(key)
        if t is None:
            t = self._bfs(sn) if self._uniform else self._dijkstra(sn)
            self._trees[key] = t
        return t

    def _bfs(self, sn: Subnet) -> dict[SimNode, tuple[Port, Port]]:
        hops: dict[SimNode, tuple[Port, Port]] = {}
        seen = {p.node for p in sn.attached}
        frontier: deque[SimNode] = deque(p.node for p in sn.attached if p.node.forwards)
        adj = self.adj
        while frontier:
            v = frontier.popleft()
            for u, vport, uport, _ in adj[v]:
                if u not in seen:
                    seen.add(u)
                    hops[u] = (uport, vport)  # u sends on its port toward v's port
                    if u.forwards:
                        frontier.append(u)
        return hops

    def _dijkstra(self, sn: Subnet) -> dict[SimNode, tuple[Port, Port]]:
        hops: dict[SimNode, tuple[Port, Port]] = {}
        dist: dict[SimNode, int] = {}
        heap: list[tuple[int, int, SimNode]] = []
        order = 0
        for p in sn.attached:
            dist[p.node] = 0
            if p.node.forwards:
                heappush(heap, (0, order, p.node))
                order += 1
        done: set[SimNode] = set()
        adj = self.adj
        while heap:
            d, _, v = heappop(heap)
            if v in done:
                continue
            done.add(v)
            for u, vport, uport, cost in adj[v]:
                nd = d + cost
                if nd < dist.get(u, 1 << 60):
                    dist[u] = nd
                    hops[u] = (uport, vport)
                    if u.forwards:
                        order += 1
                        heappush(heap, (nd, order, u))
        return hops

    def table(self, node: SimNode) -> list[tuple[IPv4Network, str, str]]:
        """The node's full forwarding table: (prefix, out interface, next hop interface)."""
        rows = []
        for sn in self.subnets:
            direct = next((p for p in sn.attached if p.node is node), None)
            if direct is not None:
                rows.append((sn.prefix, direct.path, "connected"))
                continue
            hop = self.tree(sn).get(node)
            if hop is not None:
                rows.append((sn.prefix, hop[0].path, hop[1].path))
        return rows
