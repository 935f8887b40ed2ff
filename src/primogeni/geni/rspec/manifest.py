"""Manifest RSpecs: what a slice was given, written from :class:`ManNode` and :class:`ManLink`.

A manifest repeats the request's client_ids and adds what the aggregate decided: sliver and
component URNs, MAC and IP addresses, ssh logins under ``<services>``, and a ``vlantag`` on
every link (required by the manifest schema; ours is the link's VNI or VLAN tag). When the
request carried a ``<primo:model>``, the manifest echoes it (text or url, and the mapping).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from primogeni.geni.rspec.model import ManInterface, ManLink, ManNode, VirtualModel, bad
from primogeni.geni.rspec.xmlio import add_ip, add_link_details, add_model, rspec_element, rspec_tag, sub, to_string

LOGIN_AUTHENTICATION = "ssh-keys"


def manifest(
    nodes: Iterable[ManNode],
    links: Iterable[ManLink] = (),
    *,
    model: VirtualModel | None = None,
    now: datetime,
    expires: datetime,
) -> str:
    """A manifest RSpec v3 document for a slice's slivers at this aggregate.

    Raises RSpecError if client_ids repeat or a link names an interface no node has.
    """
    root = rspec_element("manifest", now=now, expires=expires)
    seen: set[str] = set()

    def claim(client_id: str, what: str) -> str:
        if client_id in seen:
            raise bad(f"manifest: duplicate client_id {client_id!r} ({what})")
        seen.add(client_id)
        return client_id

    interfaces: dict[str, ManInterface] = {}
    for node in nodes:
        element = sub(
            root,
            rspec_tag("node"),
            client_id=claim(node.client_id, "node"),
            component_id=str(node.component_id),
            component_manager_id=str(node.component_manager_id),
            sliver_id=str(node.sliver_id),
            exclusive=str(node.exclusive).lower(),
        )
        sub(element, rspec_tag("sliver_type"), name=node.sliver_type)
        for interface in node.interfaces:
            ie = sub(
                element,
                rspec_tag("interface"),
                client_id=claim(interface.client_id, f"interface of node {node.client_id!r}"),
                sliver_id=str(interface.sliver_id),
                component_id=None if interface.component_id is None else str(interface.component_id),
                mac_address=interface.mac,
            )
            if interface.ip is not None:
                add_ip(ie, interface.ip)
            interfaces[interface.client_id] = interface
        if node.logins:
            services = sub(element, rspec_tag("services"))
            for login in node.logins:
                sub(
                    services,
                    rspec_tag("login"),
                    authentication=LOGIN_AUTHENTICATION,
                    hostname=login.hostname,
                    port=str(login.port),
                    username=login.username,
                )
    for link in links:
        element = sub(
            root,
            rspec_tag("link"),
            client_id=claim(link.client_id, "link"),
            sliver_id=str(link.sliver_id),
            vlantag=link.vlantag,
        )
        for ref in link.interface_refs:
            end = interfaces.get(ref)
            if end is None:
                raise bad(f"manifest: link {link.client_id!r} names interface {ref!r}, which no node has")
            sub(
                element,
                rspec_tag("interface_ref"),
                client_id=ref,
                sliver_id=str(end.sliver_id),
                component_id=None if end.component_id is None else str(end.component_id),
            )
        add_link_details(element, link)
    if model is not None:
        add_model(root, model)
    return to_string(root)


__all__ = ["LOGIN_AUTHENTICATION", "manifest"]
