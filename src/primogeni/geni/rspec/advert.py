"""Advertisement RSpecs: what the aggregate offers, written from :class:`AdNode` and :class:`AdLink`.

One ``<node>`` per physical node with its hardware type (``primo-shared`` or
``primo-cluster``), the sliver types it can hold, ``<available now=…>``, its interfaces, an
optional ``<location>``, and the PrimoGENI ``<primo:capacity slots= available=>`` element;
one ``<link>`` per physical link between two advertised interfaces, with a property in each
direction. A node whose agent reports its load also gets ``<primo:usage cpus= cpu_percent= load1=
mem_total= mem_available= disk_free=>``. The values come from the aggregate's inventory and
agents; this module only writes them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from primogeni.geni.rspec.model import AdLink, AdNode, bad
from primogeni.geni.rspec.xmlio import number, primo_tag, rspec_element, rspec_tag, sub, to_string


def advertisement(
    nodes: Iterable[AdNode], links: Iterable[AdLink] = (), *, now: datetime, expires: datetime
) -> str:
    """An advertisement RSpec v3 document (``generated`` = ``now``, ``expires`` = ``expires``).

    Raises RSpecError if two nodes, interfaces or links share a component_id, or a link
    names an interface that no advertised node has.
    """
    root = rspec_element("advertisement", now=now, expires=expires)
    seen: set[str] = set()

    def claim(urn: object, what: str) -> str:
        text = str(urn)
        if text in seen:
            raise bad(f"advertisement: {what} component_id {text} is used twice")
        seen.add(text)
        return text

    interfaces: set[str] = set()
    for node in nodes:
        element = sub(
            root,
            rspec_tag("node"),
            component_id=claim(node.component_id, f"node {node.name!r}"),
            component_manager_id=str(node.component_manager_id),
            component_name=node.name,
            exclusive=str(node.exclusive).lower(),
        )
        sub(element, rspec_tag("hardware_type"), name=node.hardware_type)
        for sliver_type in node.sliver_types:
            sub(element, rspec_tag("sliver_type"), name=sliver_type)
        sub(element, rspec_tag("available"), now=str(node.available > 0).lower())
        if node.location is not None:
            loc = node.location
            sub(
                element,
                rspec_tag("location"),
                country=loc.country,
                latitude=None if loc.latitude is None else number(loc.latitude),
                longitude=None if loc.longitude is None else number(loc.longitude),
            )
        for interface in node.interfaces:
            sub(
                element,
                rspec_tag("interface"),
                component_id=claim(interface.component_id, f"interface {interface.name!r}"),
                component_name=interface.name,
            )
            interfaces.add(str(interface.component_id))
        sub(element, primo_tag("capacity"), slots=str(node.capacity), available=str(node.available))
        if node.usage is not None:
            u = node.usage
            sub(element, primo_tag("usage"), cpus=str(int(u.cpus)), cpu_percent=number(u.cpu_percent),
                load1=number(u.load1), mem_total=str(int(u.mem_total)), mem_available=str(int(u.mem_available)),
                disk_free=str(int(u.disk_free)))
    for link in links:
        element = sub(
            root, rspec_tag("link"), component_id=claim(link.component_id, f"link {link.name!r}"),
            component_name=link.name,
        )
        if link.component_manager_id is not None:
            sub(element, rspec_tag("component_manager"), name=str(link.component_manager_id))
        ends = [str(e) for e in link.endpoints]
        for end in ends:
            if end not in interfaces:
                raise bad(f"advertisement: link {link.name!r} names interface {end}, which no node has")
            sub(element, rspec_tag("interface_ref"), component_id=end)
        for source, dest in ((ends[0], ends[1]), (ends[1], ends[0])):
            sub(
                element,
                rspec_tag("property"),
                source_id=source,
                dest_id=dest,
                capacity=str(link.capacity_kbps),
                latency=number(link.latency_ms),
            )
        sub(element, rspec_tag("link_type"), name=link.link_type)
    return to_string(root)


__all__ = ["advertisement"]
