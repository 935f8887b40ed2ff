"""Safe XML in, tidy RSpec XML out: the pieces the request, advertisement and manifest code share.

Reading: :func:`parse_xml` is the only way untrusted bytes become a tree. It refuses documents
over :data:`MAX_RSPEC_BYTES` and any document with a DTD, and parses with entity resolution,
DTD loading and network access off (:mod:`primogeni.geni.xmlsafe`), so XXE and
entity-expansion bombs never get a chance.

Writing: :func:`rspec_element` makes the ``<rspec>`` root with our namespaces and schema
locations; element helpers write the parts that requests and manifests share (``<ip>``, link
properties, the ``<primo:model>`` extension); :func:`to_string` serialises.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from datetime import datetime

from lxml import etree

from primogeni.geni import times, xmlsafe
from primogeni.geni.errors import RSpecError
from primogeni.geni.rspec.model import (
    NS_PRIMO,
    NS_RSPEC,
    NS_XSI,
    LinkProperty,
    ManLink,
    ReqIp,
    ReqLink,
    VirtualModel,
    bad,
)

MAX_RSPEC_BYTES = 4 * 1024 * 1024
"""The largest RSpec we read (4 MiB, counted as UTF-8 bytes)."""

KINDS = ("advertisement", "request", "manifest")
SCHEMA_FILES = {"advertisement": "ad.xsd", "request": "request.xsd", "manifest": "manifest.xsd"}
"""RSpec kind → the top schema file, both in the GENI core and in our extension."""

GENERATED_BY = "PrimoGENI"

_XML_DECLARATION = re.compile(r"^\ufeff?\s*<\?xml\b[^>]*\?>")
_DTD_REFUSED = "the RSpec has a DOCTYPE: DTDs (and so entities) are refused"


def _refused(reason: xmlsafe.Refusal, detail: str) -> RSpecError:
    if reason is xmlsafe.Refusal.TOO_LARGE:
        return bad(f"the RSpec is {detail} bytes, over the {MAX_RSPEC_BYTES} byte (4 MiB) limit")
    if reason is xmlsafe.Refusal.EMPTY:
        return bad("the RSpec is empty")
    if reason is xmlsafe.Refusal.MALFORMED:
        return bad(f"the RSpec is not well-formed XML: {detail}")
    return bad(_DTD_REFUSED)


def parse_xml(data: str | bytes) -> etree._Element:
    """Parse untrusted XML into its root element, or raise RSpecError (BADARGS)."""
    if isinstance(data, str):
        raw = data.encode("utf-8", errors="surrogatepass")
        # lxml refuses str input that declares an encoding; the str is already decoded.
        payload: str | bytes = _XML_DECLARATION.sub("", data, count=1)
    elif isinstance(data, bytes | bytearray):
        raw = payload = bytes(data)
    else:
        raise bad(f"an RSpec must be a string, not {type(data).__name__}")
    # The DOCTYPE scan (of the prolog) is for a clear message; the check after parsing covers
    # other encodings. Comments and PIs are dropped: nothing we read is in them.
    return xmlsafe.parse(
        payload,
        raw,
        max_bytes=MAX_RSPEC_BYTES,
        remove_comments=True,
        declares_dtd=xmlsafe.doctype_in_prolog,
        refuse=_refused,
        refuse_empty=True,
    )


def local_name(element: etree._Element) -> tuple[str | None, str]:
    """``(namespace, local name)`` of an element."""
    q = etree.QName(element)
    return q.namespace, q.localname


def rspec_tag(name: str) -> str:
    """A GENI RSpec v3 element name in Clark notation."""
    return f"{{{NS_RSPEC}}}{name}"


def primo_tag(name: str) -> str:
    """A PrimoGENI extension element name in Clark notation."""
    return f"{{{NS_PRIMO}}}{name}"


def check_root(root: etree._Element, kind: str) -> None:
    """The root must be ``<rspec type=kind>`` in the GENI RSpec v3 namespace."""
    namespace, name = local_name(root)
    if name != "rspec":
        raise bad(f"the root element is <{name}>, not <rspec>")
    if namespace != NS_RSPEC:
        found = f"namespace {namespace!r}" if namespace else "no namespace"
        raise bad(f"<rspec> has {found}; expected the GENI RSpec v3 namespace {NS_RSPEC!r}")
    rtype = root.get("type")
    if rtype is None:
        raise bad(f"<rspec> has no type attribute; expected type={kind!r}")
    if rtype.strip() != kind:
        raise bad(f"the RSpec's type is {rtype!r}; expected {kind!r}")


def rfc3339(when: datetime) -> str:
    """A timezone-aware time as ``2026-11-21T16:40:04Z`` (UTC, whole seconds)."""
    try:
        return times.rfc3339(when)
    except ValueError as exc:
        raise bad(str(exc)) from None


def number(value: float) -> str:
    """A number as an attribute: ``5`` for 5.0, ``0.01`` as is."""
    if isinstance(value, int):
        return str(value)
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def rspec_element(kind: str, *, now: datetime | None = None, expires: datetime | None = None) -> etree._Element:
    """A fresh ``<rspec type=kind>`` root declaring the GENI, PrimoGENI and XSI namespaces."""
    xsd = SCHEMA_FILES[kind]
    root = etree.Element(rspec_tag("rspec"), nsmap={None: NS_RSPEC, "primo": NS_PRIMO, "xsi": NS_XSI})
    root.set(f"{{{NS_XSI}}}schemaLocation", f"{NS_RSPEC} {NS_RSPEC}/{xsd} {NS_PRIMO} {NS_PRIMO}/{xsd}")
    root.set("type", kind)
    if now is not None:
        root.set("generated", rfc3339(now))
        root.set("generated_by", GENERATED_BY)
    if expires is not None:
        root.set("expires", rfc3339(expires))
    return root


def sub(parent: etree._Element, tag: str, **attrs: str | None) -> etree._Element:
    """Append element ``tag`` to ``parent`` with the attributes that are not None."""
    element = etree.SubElement(parent, tag)
    for key, value in attrs.items():
        if value is not None:
            element.set(key, value)
    return element


def add_ip(parent: etree._Element, ip: ReqIp) -> etree._Element:
    return sub(parent, rspec_tag("ip"), address=str(ip.address), netmask=ip.netmask, type=ip.type)


def add_link_properties(
    link: etree._Element,
    client_id: str,
    interface_refs: Sequence[str],
    *,
    is_lan: bool,
    properties: Sequence[LinkProperty],
    capacity_kbps: int | None,
    latency_ms: float | None,
    packet_loss: float | None,
) -> None:
    """Write ``<property>`` elements: ``properties`` as given, else the link-wide values.

    Link-wide values become one property per direction between the two ends of a link, or
    one per member "into the LAN" (``dest_id`` = the LAN's client_id) for a LAN, as geni-lib
    writes them.
    """
    if not properties and (capacity_kbps, latency_ms, packet_loss) != (None, None, None):
        if is_lan:
            pairs = [(ref, client_id) for ref in interface_refs]
        else:
            pairs = list(itertools.permutations(interface_refs, 2))
        properties = [LinkProperty(s, d, capacity_kbps, latency_ms, packet_loss) for s, d in pairs]
    for p in properties:
        sub(
            link,
            rspec_tag("property"),
            source_id=p.source_id,
            dest_id=p.dest_id,
            capacity=None if p.capacity_kbps is None else str(p.capacity_kbps),
            latency=None if p.latency_ms is None else number(p.latency_ms),
            packet_loss=None if p.packet_loss is None else number(p.packet_loss),
        )


def add_link_details(element: etree._Element, link: ReqLink | ManLink) -> None:
    """Write what follows a ``<link>``'s interface refs: ``<link_type>``, then its properties."""
    if link.link_type is not None:
        sub(element, rspec_tag("link_type"), name=link.link_type)
    add_link_properties(
        element,
        link.client_id,
        link.interface_refs,
        is_lan=link.is_lan,
        properties=link.properties,
        capacity_kbps=link.capacity_kbps,
        latency_ms=link.latency_ms,
        packet_loss=link.packet_loss,
    )


def add_model(parent: etree._Element, model: VirtualModel) -> etree._Element:
    """Write the ``<primo:model>`` extension element: text (or url) first, then the maps."""
    element = sub(parent, primo_tag("model"), format=model.format, url=model.url)
    if model.text is not None and model.url is None:
        element.text = etree.CDATA(model.text) if _needs_cdata(model.text) else model.text
    for virtual, node in model.mapping:
        sub(element, primo_tag("map"), virtual=virtual, node=node)
    return element


def _needs_cdata(text: str) -> bool:
    # CDATA keeps Python and DML readable in the document; "]]>" cannot appear inside it.
    return "]]>" not in text and any(c in text for c in "<>&")


def to_string(root: etree._Element) -> str:
    """Serialise a document (no XML declaration, so the str parses anywhere)."""
    return etree.tostring(root, encoding="unicode", pretty_print=True)


__all__ = [
    "KINDS",
    "MAX_RSPEC_BYTES",
    "SCHEMA_FILES",
    "add_ip",
    "add_link_details",
    "add_link_properties",
    "add_model",
    "check_root",
    "local_name",
    "number",
    "parse_xml",
    "primo_tag",
    "rfc3339",
    "rspec_element",
    "rspec_tag",
    "sub",
]
