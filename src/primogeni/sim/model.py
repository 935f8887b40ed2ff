"""Network models: a pure description of nets, hosts, routers, interfaces and links.

A model is plain data. Nothing here runs or touches the kernel; :mod:`primogeni.sim.simulation`
turns a validated model into the simulator's runtime objects. Names are hierarchical: the host
``h3`` in net ``campus1`` of the top net ``top`` is ``top:campus1:h3``.

Links carry the defaults for the interfaces they join (bandwidth, queue limit); an interface
may override them. The propagation delay of a hop is the link's delay plus the sending
interface's own latency (as in SSFNet, where interfaces have a ``latency``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import TYPE_CHECKING, Any

from primogeni.errors import ModelError
from primogeni.net.units import Bytes, Packets, Rate

if TYPE_CHECKING:
    from primogeni.sim.traffic import Flow

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")

DEFAULT_BANDWIDTH = Rate.gbps(1)
DEFAULT_QUEUE = Packets(100)


def _check_name(name: str, what: str, parent: Net | None, location: str | None) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        where = parent.path if parent is not None else None
        raise ModelError(
            f"bad {what} name {name!r}: use letters, digits, '_', '.', '-' (no ':')",
            element=where,
            location=location,
        )


class Element:
    """Something with a hierarchical name inside a :class:`Net`."""

    kind = "element"

    def __init__(self, name: str, parent: Net | None, location: str | None = None) -> None:
        _check_name(name, self.kind, parent, location)
        self.name = name
        self.parent = parent
        self.location = location  # "file:line" when it came from DML

    @property
    def path(self) -> str:
        if self.parent is None:
            return self.name
        return f"{self.parent.path}:{self.name}"

    def error(self, message: str) -> ModelError:
        return ModelError(message, element=self.path, location=self.location)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path}>"


class Interface:
    """A network interface of a node; joined to at most one :class:`Link`."""

    def __init__(
        self,
        node: Node,
        name: str,
        address: IPv4Interface | None = None,
        bandwidth: Rate | None = None,
        queue: Packets | Bytes | None = None,
        latency: int = 0,
        location: str | None = None,
        loss: float | None = None,
    ) -> None:
        _check_name(name, "interface", node.parent, location)
        self.loss = loss  # overrides the link's loss for packets this interface sends
        self.node = node
        self.name = name
        self.address = address
        self.bandwidth = bandwidth
        self.queue = queue
        self.latency = latency
        self.location = location
        self.link: Link | None = None

    @property
    def path(self) -> str:
        return f"{self.node.path}:{self.name}"

    def error(self, message: str) -> ModelError:
        return ModelError(message, element=self.path, location=self.location)

    def __repr__(self) -> str:
        return f"<Interface {self.path}>"


class Node(Element):
    """A host or router: a named thing with interfaces."""

    forwards = False
    emulated = False

    def __init__(self, name: str, parent: Net, location: str | None = None) -> None:
        super().__init__(name, parent, location)
        self.interfaces: list[Interface] = []

    @property
    def net(self) -> Net:
        assert self.parent is not None
        return self.parent

    def interface(
        self,
        name: str | None = None,
        *,
        address: str | IPv4Interface | None = None,
        bandwidth: Rate | None = None,
        queue: Packets | Bytes | None = None,
        latency: int = 0,
        loss: float | None = None,
        location: str | None = None,
    ) -> Interface:
        """Add an interface (named ``eth0``, ``eth1``… unless ``name`` is given)."""
        if name is None:
            name = f"eth{len(self.interfaces)}"
        if any(i.name == name for i in self.interfaces):
            raise ModelError(
                f"duplicate interface {name!r}", element=self.path, location=location or self.location
            )
        addr: IPv4Interface | None = None
        if address is not None:
            try:
                addr = address if isinstance(address, IPv4Interface) else IPv4Interface(address)
            except (ipaddress.AddressValueError, ipaddress.NetmaskValueError, ValueError) as e:
                raise ModelError(
                    f"bad address {address!r}: {e}", element=f"{self.path}:{name}", location=location
                ) from None
        if latency < 0:
            raise ModelError("latency must be >= 0", element=f"{self.path}:{name}", location=location)
        if loss is not None and not 0.0 <= loss < 1.0:
            raise ModelError(f"loss must be in [0, 1), not {loss!r}", element=f"{self.path}:{name}", location=location)
        iface = Interface(self, name, addr, bandwidth, queue, latency, location, loss)
        self.interfaces.append(iface)
        return iface

    def find_interface(self, name: str) -> Interface | None:
        for i in self.interfaces:
            if i.name == name:
                return i
        return None

    def free_interface(self) -> Interface:
        """The first interface not yet joined to a link, or a new one."""
        for i in self.interfaces:
            if i.link is None:
                return i
        return self.interface()

    @property
    def addresses(self) -> list[IPv4Address]:
        return [i.address.ip for i in self.interfaces if i.address is not None]


class Host(Node):
    """An end system: sources and sinks traffic, never forwards.

    An *emulated* host is a real machine outside the simulator (see
    :mod:`primogeni.sim.emulation`): its node runs no simulated protocol, no simulated flow
    may start or end at it, and it has exactly one interface, on a link whose other side
    holds its gateway (a router, or else a simulated host).
    """

    kind = "host"

    def __init__(self, name: str, parent: Net, location: str | None = None, emulated: bool = False) -> None:
        super().__init__(name, parent, location)
        self.emulated = emulated

    def interface(self, name: str | None = None, **kw: Any) -> Interface:
        if self.emulated and self.interfaces:
            raise ModelError(
                f"emulated host {self.path} must have exactly one interface (it has {self.interfaces[0].name})",
                element=self.path, location=kw.get("location") or self.location,
            )
        return super().interface(name, **kw)

    @property
    def gateway(self) -> Interface | None:
        """The interface an emulated host's packets go to first: on its link, a router's, or
        else a simulated host's; None if there is none."""
        if len(self.interfaces) != 1 or self.interfaces[0].link is None:
            return None
        peers = [i for i in self.interfaces[0].link.interfaces if i.node is not self]
        for i in peers:
            if isinstance(i.node, Router):
                return i
        for i in peers:
            if not i.node.emulated:
                return i
        return None


class Router(Node):
    """A node that forwards IPv4 packets by longest-prefix match."""

    kind = "router"
    forwards = True


class Link:
    """A point-to-point link (two interfaces) or a LAN (more than two)."""

    def __init__(
        self,
        net: Net,
        interfaces: list[Interface],
        bandwidth: Rate,
        delay: int,
        queue: Packets | Bytes,
        loss: float,
        prefix: IPv4Network | None,
        cost: int,
        name: str,
        location: str | None = None,
    ) -> None:
        self.net = net
        self.interfaces = interfaces
        self.bandwidth = bandwidth
        self.delay = delay
        self.queue = queue
        self.loss = loss
        self.prefix = prefix
        self.cost = cost
        self.name = name
        self.location = location

    @property
    def path(self) -> str:
        return f"{self.net.path}:{self.name}"

    def error(self, message: str) -> ModelError:
        return ModelError(message, element=self.path, location=self.location)

    def __repr__(self) -> str:
        ends = ",".join(i.path for i in self.interfaces)
        return f"<Link {self.path} {ends}>"


EndPoint = "Node | Interface | str"


class Net(Element):
    """A network: a named container of nets, hosts, routers, links and traffic."""

    kind = "net"

    def __init__(
        self,
        name: str,
        parent: Net | None = None,
        prefix: str | IPv4Network | None = None,
        location: str | None = None,
    ) -> None:
        super().__init__(name, parent, location)
        self.children: dict[str, Element] = {}
        self.links: list[Link] = []
        self.flows: list[Flow] = []
        self.prefix: IPv4Network | None = None
        if prefix is not None:
            try:
                self.prefix = prefix if isinstance(prefix, IPv4Network) else IPv4Network(prefix)
            except ValueError as e:
                raise self.error(f"bad prefix {prefix!r}: {e}") from None

    # -- building ------------------------------------------------------------------------
    def _add(self, child: Element) -> None:
        if child.name in self.children:
            raise ModelError(
                f"duplicate name {child.name!r} in net {self.path}",
                element=child.path,
                location=child.location,
            )
        self.children[child.name] = child

    def net(self, name: str, prefix: str | IPv4Network | None = None, location: str | None = None) -> Net:
        """Add a sub-net."""
        n = Net(name, self, prefix, location)
        self._add(n)
        return n

    def host(self, name: str, location: str | None = None, *, emulated: bool = False) -> Host:
        """Add a host; ``emulated`` makes it a real machine attached to the simulation."""
        h = Host(name, self, location, emulated)
        self._add(h)
        return h

    def router(self, name: str, location: str | None = None) -> Router:
        r = Router(name, self, location)
        self._add(r)
        return r

    def link(
        self,
        *ends: Node | Interface | str,
        bandwidth: Rate | None = None,
        delay: int = 0,
        queue: Packets | Bytes | None = None,
        loss: float = 0.0,
        prefix: str | IPv4Network | None = None,
        cost: int = 1,
        name: str | None = None,
        location: str | None = None,
    ) -> Link:
        """Join two interfaces (a point-to-point link) or more (a LAN).

        An end that is a node gets its first free interface (a new one if none is free); a
        string is a name relative to this net (``"h1"``, ``"campus:r2:eth1"``).
        """
        lname = name or f"link{len(self.links)}"
        where = f"{self.path}:{lname}"
        if len(ends) < 2:
            raise ModelError("a link needs at least two ends", element=where, location=location)
        if bandwidth is not None and not isinstance(bandwidth, Rate):
            raise ModelError(f"bandwidth must be a Rate, not {bandwidth!r}", element=where, location=location)
        if not isinstance(delay, int) or delay < 0:
            raise ModelError(f"delay must be integer ns >= 0, not {delay!r}", element=where, location=location)
        if not 0.0 <= loss < 1.0:
            raise ModelError(f"loss must be in [0, 1), not {loss!r}", element=where, location=location)
        if cost < 1:
            raise ModelError(f"cost must be >= 1, not {cost!r}", element=where, location=location)
        ifaces: list[Interface] = []
        for end in ends:
            iface = self._resolve_end(end, where, location)
            if iface.link is not None:
                raise ModelError(
                    f"interface {iface.path} is already attached to {iface.link.path}",
                    element=where,
                    location=location,
                )
            if iface in ifaces:
                raise ModelError(f"interface {iface.path} attached twice", element=where, location=location)
            ifaces.append(iface)
        pfx: IPv4Network | None = None
        if prefix is not None:
            try:
                pfx = prefix if isinstance(prefix, IPv4Network) else IPv4Network(prefix)
            except ValueError as e:
                raise ModelError(f"bad prefix {prefix!r}: {e}", element=where, location=location) from None
        lk = Link(
            self,
            ifaces,
            bandwidth or DEFAULT_BANDWIDTH,
            delay,
            queue or DEFAULT_QUEUE,
            loss,
            pfx,
            cost,
            lname,
            location,
        )
        if any(lk2.name == lname for lk2 in self.links):
            raise ModelError(f"duplicate link name {lname!r}", element=where, location=location)
        for i in ifaces:
            i.link = lk
        self.links.append(lk)
        return lk

    def add_flow(self, flow: Flow) -> Flow:
        """Attach a traffic flow (see :mod:`primogeni.sim.traffic`)."""
        self.flows.append(flow)
        return flow

    # -- lookup --------------------------------------------------------------------------
    def _resolve_end(self, end: Node | Interface | str, where: str, location: str | None) -> Interface:
        if isinstance(end, Interface):
            return end
        if isinstance(end, Node):
            return end.free_interface()
        if isinstance(end, str):
            found = self.lookup(end)
            if isinstance(found, Interface):
                return found
            if isinstance(found, Node):
                return found.free_interface()
            raise ModelError(f"no host, router or interface {end!r} in {self.path}", element=where, location=location)
        raise ModelError(f"a link end must be a node, interface or name, not {end!r}", element=where, location=location)

    def lookup(self, relpath: str) -> Element | Interface | None:
        """Find ``"a:b:c"`` relative to this net (the last step may be an interface)."""
        parts = relpath.split(":")
        cur: Any = self
        for i, p in enumerate(parts):
            if isinstance(cur, Net) and p in cur.children:
                cur = cur.children[p]
            elif isinstance(cur, Node) and i == len(parts) - 1:
                return cur.find_interface(p)
            else:
                return None
        return cur  # type: ignore[no-any-return]

    def walk(self) -> Iterator[Element]:
        """Every element below (and including) this net, depth first, in insertion order."""
        yield self
        for c in self.children.values():
            if isinstance(c, Net):
                yield from c.walk()
            else:
                yield c

    def nodes(self) -> Iterator[Node]:
        for e in self.walk():
            if isinstance(e, Node):
                yield e

    def all_links(self) -> Iterator[Link]:
        for e in self.walk():
            if isinstance(e, Net):
                yield from e.links

    def all_flows(self) -> Iterator[Flow]:
        for e in self.walk():
            if isinstance(e, Net):
                yield from e.flows


class Network(Net):
    """The top net of a model. Its prefix (default ``10.0.0.0/8``) holds every address."""

    def __init__(self, name: str = "top", prefix: str | IPv4Network = "10.0.0.0/8", location: str | None = None):
        super().__init__(name, None, prefix, location)


def check_emulation(network: Network) -> list[Host]:
    """Check the rules for emulated hosts; return them (in model order).

    Each has exactly one interface, attached, with a gateway on its link; no flow starts or
    ends at one. Errors name the host or the flow (as :class:`Simulation` names flows).
    """
    hosts = [n for n in network.nodes() if isinstance(n, Host) and n.emulated]
    for h in hosts:
        if len(h.interfaces) != 1 or h.interfaces[0].link is None:
            raise h.error(f"emulated host {h.path} must have exactly one interface, attached to a link")
        if h.gateway is None:
            raise h.error(
                f"emulated host {h.path} has no gateway: its link {h.interfaces[0].link.path} "
                "joins no router or simulated host"
            )
    if not hosts:
        return hosts
    k = 0
    for net in network.walk():
        if not isinstance(net, Net):
            continue
        for flow in net.flows:
            where = flow.name or f"{net.path}:{flow.kind}{k}"
            k += 1
            for what, end in (("source", flow.src), ("destination", flow.dst)):
                target: object = end
                if isinstance(end, str):
                    target = net.lookup(end) or network.lookup(end.removeprefix(network.name + ":"))
                if isinstance(target, Interface):
                    target = target.node
                if isinstance(target, Host) and target.emulated:
                    raise ModelError(
                        f"flow {where}: its {what} {target.path} is an emulated host (a real machine: "
                        "run real software there instead of a simulated flow)",
                        element=where, location=flow.location,
                    )
    return hosts
