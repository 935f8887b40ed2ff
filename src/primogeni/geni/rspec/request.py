"""Request RSpecs: :func:`parse_request` reads one into a :class:`Request`, :func:`request_rspec` writes one.

Reading is strict about what PrimoGENI uses and lenient about everything else. Every
problem is an :class:`RSpecError` (BADARGS) whose message names the element (by client_id)
and what is wrong. Elements of other namespaces (emulab, jacks, tour, delay, … that geni-lib
and omni add) are skipped, as are core elements PrimoGENI does not use (``<services>``,
``<relation>``, ``<location>``, ``<component_hop>``). Our own namespace is checked strictly:
``<primo:model>`` may appear once, directly under ``<rspec>``, holding only ``<primo:map>``.

The document is read in three passes (nodes and their interfaces, then links, then the model)
because GENI allows the elements in any order; then it is validated against the request XSDs
(GENI core plus ours), which catches what the passes do not look at.
"""

from __future__ import annotations

import math

from lxml import etree

from primogeni.geni.errors import RSpecError, UrnError
from primogeni.geni.rspec.model import (
    DEFAULT_SLIVER_TYPE,
    MODEL_FORMATS,
    NS_PRIMO,
    NS_RSPEC,
    SLIVER_EMULATED_HOST,
    LinkProperty,
    ReqInterface,
    ReqIp,
    ReqLink,
    ReqNode,
    Request,
    VirtualModel,
    bad,
    check_link_values,
)
from primogeni.geni.rspec.validate import validate_element
from primogeni.geni.rspec.xmlio import (
    add_ip,
    add_link_details,
    add_model,
    check_root,
    local_name,
    parse_xml,
    primo_tag,
    rspec_element,
    rspec_tag,
    sub,
    to_string,
)
from primogeni.geni.urn import Urn


def parse_request(xml: str | bytes) -> Request:
    """Parse and check a request RSpec v3 (with the optional PrimoGENI extension)."""
    root = parse_xml(xml)
    check_root(root, "request")
    request = _Reader().read(root)
    validate_element(root, "request")
    return request


# -- reading ------------------------------------------------------------------------------------


def _children(element: etree._Element, namespace: str) -> list[tuple[str, etree._Element]]:
    """``(local name, child)`` for the child elements of ``element`` in ``namespace``."""
    out = []
    for child in element:
        if isinstance(child.tag, str):
            ns, name = local_name(child)
            if ns == namespace:
                out.append((name, child))
    return out


def _boolean(text: str | None, where: str) -> bool | None:
    if text is None:
        return None
    value = text.strip()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise bad(f"{where} must be true or false, not {text!r}")


def _urn(element: etree._Element, attribute: str, where: str) -> Urn | None:
    text = element.get(attribute)
    if text is None:
        return None
    try:
        return Urn.parse(text.strip())
    except UrnError as e:
        raise bad(f"{where}: bad {attribute}: {e.reason}") from None


def _number(text: str | None, where: str, what: str) -> float | None:
    if text is None or not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        raise bad(f"{where}: {what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise bad(f"{where}: {what} {text!r} is not a finite number")
    return value


def _capacity(text: str | None, where: str) -> int | None:
    value = _number(text, where, "capacity")
    if value is None:
        return None
    if value != int(value):
        raise bad(f"{where}: capacity must be a whole number of kbps, not {text!r}")
    return int(value)


class _Reader:
    """One pass over one document; remembers client_ids to check references."""

    def __init__(self) -> None:
        self.client_ids: dict[str, str] = {}  # client_id -> "node" | "interface" | "link"
        self.nodes: dict[str, ReqNode] = {}
        self.interface_node: dict[str, str] = {}  # interface client_id -> node client_id
        self.used_by: dict[str, str] = {}  # interface client_id -> link client_id

    def read(self, root: etree._Element) -> Request:
        self._check_primo_elements(root)
        elements = _children(root, NS_RSPEC)
        for name, element in elements:
            if name == "node":
                node = self._node(element)
                self.nodes[node.client_id] = node
        links = [self._link(element) for name, element in elements if name == "link"]
        models = [element for name, element in _children(root, NS_PRIMO) if name == "model"]
        if len(models) > 1:
            raise bad(f"the request has {len(models)} <primo:model> elements; at most one is allowed")
        model = self._model(models[0]) if models else None
        return Request(tuple(self.nodes.values()), tuple(links), model)

    def _claim(self, element: etree._Element, what: str, context: str) -> str:
        client_id = element.get("client_id")
        if client_id is None or not client_id.strip():
            raise bad(f"a <{what}>{context} has no client_id")
        if client_id in self.client_ids:
            raise bad(f"duplicate client_id {client_id!r}: used by a {self.client_ids[client_id]} and a {what}")
        self.client_ids[client_id] = what
        return client_id

    @staticmethod
    def _check_primo_elements(root: etree._Element) -> None:
        """Our namespace is ours: only ``<rspec>/<primo:model>/<primo:map>`` may use it."""
        for element in root.iter(primo_tag("*")):
            parent = element.getparent()
            assert parent is not None  # the root is <rspec>, checked before
            name = local_name(element)[1]
            if name == "model" and parent is root:
                continue
            if name == "map" and parent.tag == primo_tag("model"):
                continue
            where = local_name(parent)[1]
            if name in ("model", "map"):
                raise bad(f"<primo:{name}> is not allowed under <{where}>")
            raise bad(f"unknown PrimoGENI element <primo:{name}> under <{where}>")

    def _node(self, element: etree._Element) -> ReqNode:
        client_id = self._claim(element, "node", "")
        where = f"node {client_id!r}"
        exclusive = _boolean(element.get("exclusive"), f"{where}: exclusive")
        component_id = _urn(element, "component_id", where)
        component_manager_id = _urn(element, "component_manager_id", where)
        sliver_type: str | None = None
        disk_image: str | None = None
        hardware_type: str | None = None
        interfaces: list[ReqInterface] = []
        for name, child in _children(element, NS_RSPEC):
            if name == "sliver_type":
                if sliver_type is not None:
                    raise bad(f"{where} has more than one <sliver_type>")
                sliver_type = (child.get("name") or "").strip()
                if not sliver_type:
                    raise bad(f"{where}: <sliver_type> has no name")
                images = [c for n, c in _children(child, NS_RSPEC) if n == "disk_image"]
                if len(images) > 1:
                    raise bad(f"{where}: more than one <disk_image>")
                if images:
                    disk_image = images[0].get("name")
            elif name == "hardware_type":
                if hardware_type is not None:
                    raise bad(f"{where} has more than one <hardware_type>")
                hardware_type = child.get("name")
            elif name == "interface":
                interfaces.append(self._interface(child, client_id))
        return ReqNode(
            client_id,
            sliver_type or DEFAULT_SLIVER_TYPE,
            exclusive,
            component_id,
            component_manager_id,
            tuple(interfaces),
            hardware_type,
            disk_image,
        )

    def _interface(self, element: etree._Element, node: str) -> ReqInterface:
        client_id = self._claim(element, "interface", f" of node {node!r}")
        where = f"interface {client_id!r} of node {node!r}"
        self.interface_node[client_id] = node
        ips = [child for name, child in _children(element, NS_RSPEC) if name == "ip"]
        if len(ips) > 1:
            raise bad(f"{where} has {len(ips)} <ip> elements; PrimoGENI gives an interface one address")
        ip = None
        if ips:
            address = ips[0].get("address")
            if address is None:
                raise bad(f"{where}: <ip> has no address")
            try:
                ip = ReqIp.parse(address, ips[0].get("netmask"), ips[0].get("type"))
            except RSpecError as e:
                raise bad(f"{where}: {e.reason}") from None
        return ReqInterface(client_id, ip, _urn(element, "component_id", where))

    def _link(self, element: etree._Element) -> ReqLink:
        client_id = self._claim(element, "link", "")
        where = f"link {client_id!r}"
        refs: list[str] = []
        link_type: str | None = None
        property_elements = []
        for name, child in _children(element, NS_RSPEC):
            if name == "interface_ref":
                refs.append(self._interface_ref(child, client_id, refs))
            elif name == "link_type":
                if link_type is not None:
                    raise bad(f"{where} has more than one <link_type>")
                link_type = (child.get("name") or "").strip()
                if not link_type:
                    raise bad(f"{where}: <link_type> has no name")
            elif name == "property":
                property_elements.append(child)
        if not refs:
            raise bad(f"{where} has no <interface_ref>")
        properties = [self._property(child, client_id, refs) for child in property_elements]
        seen: set[tuple[str, str]] = set()
        for p in properties:
            if (p.source_id, p.dest_id) in seen:
                raise bad(f"{where}: two <property> elements from {p.source_id!r} to {p.dest_id!r}")
            seen.add((p.source_id, p.dest_id))
        return ReqLink.from_properties(client_id, tuple(refs), tuple(properties), link_type)

    def _interface_ref(self, element: etree._Element, link: str, refs: list[str]) -> str:
        where = f"link {link!r}"
        ref = element.get("client_id")
        if ref is None or not ref.strip():
            raise bad(f"{where}: an <interface_ref> has no client_id")
        if ref not in self.interface_node:
            raise bad(f"{where}: interface_ref {ref!r} is not an interface of any node")
        if ref in refs:
            raise bad(f"{where} lists interface {ref!r} twice")
        if ref in self.used_by:
            raise bad(f"{where}: interface {ref!r} is already used by link {self.used_by[ref]!r}")
        self.used_by[ref] = link
        return ref

    @staticmethod
    def _property(element: etree._Element, link: str, refs: list[str]) -> LinkProperty:
        source, dest = element.get("source_id"), element.get("dest_id")
        where = f"link {link!r}: property {source} -> {dest}"
        if not source or not dest:
            raise bad(f"{where}: <property> needs source_id and dest_id")
        if source not in refs:
            raise bad(f"{where}: source_id {source!r} is not an interface of this link")
        if dest not in refs and dest != link:
            raise bad(f"{where}: dest_id {dest!r} is neither an interface of this link nor the link itself")
        if source == dest:
            raise bad(f"{where}: source_id and dest_id are the same")
        capacity = _capacity(element.get("capacity"), where)
        latency = _number(element.get("latency"), where, "latency")
        loss = _number(element.get("packet_loss"), where, "packet_loss")
        check_link_values(where, capacity, latency, loss)
        return LinkProperty(source, dest, capacity, latency, loss)

    def _model(self, element: etree._Element) -> VirtualModel:
        fmt = element.get("format")
        if fmt is None:
            raise bad("<primo:model> has no format attribute (dml or python)")
        if fmt.strip() not in MODEL_FORMATS:
            raise bad(f"<primo:model>: unknown format {fmt!r} (expected one of {', '.join(MODEL_FORMATS)})")
        url = element.get("url")
        # The model text is the character data before the first <primo:map>; the maps follow it.
        text = element.text or ""
        if any((child.tail or "").strip() for child in element):
            raise bad("<primo:model>: the model text must come before the <primo:map> elements")
        has_text = text.strip() != ""
        if has_text and url is not None:
            raise bad("<primo:model> has both inline text and a url; give one")
        if not has_text and url is None:
            raise bad("<primo:model> has neither inline text nor a url; give one")
        mapping: list[tuple[str, str]] = []
        realized_by: dict[str, str] = {}  # emulated-host node -> the virtual host it realizes
        virtuals: set[str] = set()
        for child in element:
            if not isinstance(child.tag, str):
                continue
            if child.tag != primo_tag("map"):
                raise bad(f"<primo:model> may hold only <primo:map> elements, not <{local_name(child)[1]}>")
            virtual, node = child.get("virtual"), child.get("node")
            if not virtual or not node:
                raise bad(f"<primo:map virtual={virtual!r} node={node!r}>: both virtual and node are required")
            if virtual in virtuals:
                raise bad(f"<primo:map>: virtual element {virtual!r} is mapped twice")
            virtuals.add(virtual)
            target = self.nodes.get(node)
            if target is None:
                raise bad(f"<primo:map virtual={virtual!r}>: node {node!r} is not a node of this request")
            if target.sliver_type == SLIVER_EMULATED_HOST:
                if node in realized_by:
                    raise bad(
                        f"<primo:map>: emulated host {node!r} realizes one virtual host, "
                        f"but is mapped to both {realized_by[node]!r} and {virtual!r}"
                    )
                realized_by[node] = virtual
            mapping.append((virtual, node))
        return VirtualModel(fmt.strip(), text if has_text else None, url.strip() if url else None, tuple(mapping))


# -- writing ------------------------------------------------------------------------------------


def request_rspec(request: Request) -> str:
    """Write ``request`` as a request RSpec v3 document (with our extension if it has a model)."""
    root = rspec_element("request")
    for node in request.nodes:
        element = sub(
            root,
            rspec_tag("node"),
            client_id=node.client_id,
            component_id=None if node.component_id is None else str(node.component_id),
            component_manager_id=None if node.component_manager_id is None else str(node.component_manager_id),
            exclusive=None if node.exclusive is None else str(node.exclusive).lower(),
        )
        sliver = sub(element, rspec_tag("sliver_type"), name=node.sliver_type)
        if node.disk_image is not None:
            sub(sliver, rspec_tag("disk_image"), name=node.disk_image)
        if node.hardware_type is not None:
            sub(element, rspec_tag("hardware_type"), name=node.hardware_type)
        for interface in node.interfaces:
            ie = sub(
                element,
                rspec_tag("interface"),
                client_id=interface.client_id,
                component_id=None if interface.component_id is None else str(interface.component_id),
            )
            if interface.ip is not None:
                add_ip(ie, interface.ip)
    for link in request.links:
        element = sub(root, rspec_tag("link"), client_id=link.client_id)
        for ref in link.interface_refs:
            sub(element, rspec_tag("interface_ref"), client_id=ref)
        add_link_details(element, link)
    if request.model is not None:
        add_model(root, request.model)
    return to_string(root)


__all__ = ["parse_request", "request_rspec"]
