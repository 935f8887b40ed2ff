"""Helpers that build common shapes; they only call the model's own methods.

Each returns the :class:`Network` it built (or filled). Names are predictable so flows can be
attached by name: ``dumbbell`` has senders ``s0…``, receivers ``d0…`` and routers ``r0``/``r1``;
``chain`` has hosts ``h0``/``h1`` around routers ``r0…``; ``ring`` has routers ``r0…`` each with
a host ``h0…``; ``star`` has a router ``hub`` and hosts ``h0…``; ``campus`` is described below.
"""

from __future__ import annotations

from primogeni.net.units import Bytes, Packets, Rate, ms, us
from primogeni.sim.model import Net, Network, Node


def dumbbell(
    n: int,
    *,
    access_bandwidth: Rate = Rate.gbps(1),
    access_delay: int = ms(1),
    bottleneck_bandwidth: Rate = Rate.mbps(100),
    bottleneck_delay: int = ms(10),
    queue: Packets | Bytes = Packets(100),
    bottleneck_queue: Packets | Bytes | None = None,
    bottleneck_loss: float = 0.0,
    name: str = "top",
) -> Network:
    """``n`` senders on router r0, ``n`` receivers on router r1, one bottleneck r0–r1."""
    if n < 1:
        raise ValueError("a dumbbell needs at least one pair")
    net = Network(name)
    r0, r1 = net.router("r0"), net.router("r1")
    net.link(r0, r1, bandwidth=bottleneck_bandwidth, delay=bottleneck_delay,
             queue=bottleneck_queue or queue, loss=bottleneck_loss, name="bottleneck")
    for i in range(n):
        s, d = net.host(f"s{i}"), net.host(f"d{i}")
        net.link(s, r0, bandwidth=access_bandwidth, delay=access_delay, queue=queue, name=f"ls{i}")
        net.link(r1, d, bandwidth=access_bandwidth, delay=access_delay, queue=queue, name=f"ld{i}")
    return net


def chain(
    routers: int,
    *,
    bandwidth: Rate = Rate.gbps(1),
    delay: int = ms(1),
    queue: Packets | Bytes = Packets(100),
    loss: float = 0.0,
    name: str = "top",
) -> Network:
    """h0 – r0 – r1 – … – r(k-1) – h1: ``routers + 1`` links, all alike."""
    if routers < 0:
        raise ValueError("routers must be >= 0")
    net = Network(name)
    h0, h1 = net.host("h0"), net.host("h1")
    prev: Node = h0
    for i in range(routers):
        r = net.router(f"r{i}")
        net.link(prev, r, bandwidth=bandwidth, delay=delay, queue=queue, loss=loss, name=f"l{i}")
        prev = r
    net.link(prev, h1, bandwidth=bandwidth, delay=delay, queue=queue, loss=loss, name=f"l{routers}")
    return net


def ring(
    r: int,
    *,
    bandwidth: Rate = Rate.gbps(1),
    delay: int = ms(1),
    stub_bandwidth: Rate = Rate.gbps(1),
    stub_delay: int = us(100),
    queue: Packets | Bytes = Packets(100),
    name: str = "top",
) -> Network:
    """``r`` routers in a ring, each with one host h_i on a stub link."""
    if r < 3:
        raise ValueError("a ring needs at least 3 routers")
    net = Network(name)
    rs = [net.router(f"r{i}") for i in range(r)]
    for i in range(r):
        net.link(rs[i], rs[(i + 1) % r], bandwidth=bandwidth, delay=delay, queue=queue, name=f"ring{i}")
    for i in range(r):
        h = net.host(f"h{i}")
        net.link(h, rs[i], bandwidth=stub_bandwidth, delay=stub_delay, queue=queue, name=f"stub{i}")
    return net


def star(
    n: int,
    *,
    bandwidth: Rate = Rate.gbps(1),
    delay: int = ms(1),
    queue: Packets | Bytes = Packets(100),
    name: str = "top",
) -> Network:
    """``n`` hosts h0… each on its own link to router ``hub``."""
    if n < 1:
        raise ValueError("a star needs at least one host")
    net = Network(name)
    hub = net.router("hub")
    for i in range(n):
        net.link(net.host(f"h{i}"), hub, bandwidth=bandwidth, delay=delay, queue=queue, name=f"l{i}")
    return net


def campus(
    into: Net | None = None,
    *,
    departments: int = 4,
    hosts_per_lan: int = 4,
    core_bandwidth: Rate = Rate.gbps(1),
    lan_bandwidth: Rate = Rate.mbps(100),
    name: str = "campus",
) -> Net:
    """A campus in the spirit of SSFNet's baseline model: a core of two routers joined to a
    gateway, each department a net with a router and one LAN of hosts.

    Departments ``dept0…`` hang alternately off core routers ``core0``/``core1``; department
    i holds router ``r`` and hosts ``h0…`` on one LAN. Pass ``into`` to build inside an
    existing net (the campus becomes a sub-net named ``name``).
    """
    net: Net = Network(name) if into is None else into.net(name)
    gw = net.router("gw")
    cores = [net.router("core0"), net.router("core1")]
    net.link(cores[0], cores[1], bandwidth=core_bandwidth, delay=us(50), name="corelink")
    for c in cores:
        net.link(gw, c, bandwidth=core_bandwidth, delay=us(50), name=f"up{c.name}")
    for d in range(departments):
        dept = net.net(f"dept{d}")
        r = dept.router("r")
        net.link(r, cores[d % 2], bandwidth=core_bandwidth, delay=us(100), name=f"dl{d}")
        hosts = [dept.host(f"h{i}") for i in range(hosts_per_lan)]
        dept.link(r, *hosts, bandwidth=lan_bandwidth, delay=us(10), name="lan")
    return net
