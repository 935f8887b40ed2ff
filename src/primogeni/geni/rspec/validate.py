"""XSD validation of RSpecs against the GENI v3 core schemas plus the PrimoGENI extension schema.

The schemas ship as package data (``schemas/geni3/``: verbatim copies of the GENI core XSDs;
``schemas/primogeni/1/``: ours), so an installed aggregate needs nothing else. For each RSpec
kind one composite schema, built in memory, imports the GENI namespace from that kind's core
file and our namespace from our file of the same name; it is compiled once and cached.

Foreign extensions pass: the GENI core accepts elements and attributes of other namespaces
through lax wildcards, and the composite loads no other namespace, so emulab, jacks, tour and
other extension elements are skipped, not checked. Elements of our namespace are checked
wherever they appear. ``xsi:schemaLocation`` in a document is ignored: the schema is chosen
by the ``kind`` the caller names, and nothing is ever fetched from the network.
"""

from __future__ import annotations

import threading
from functools import cache
from pathlib import Path

from lxml import etree

from primogeni.geni.rspec.model import NS_PRIMO, NS_RSPEC, bad
from primogeni.geni.rspec.xmlio import KINDS, SCHEMA_FILES, parse_xml

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
"""Package data: ``geni3/`` (GENI RSpec v3 core) and ``primogeni/1/`` (our extension)."""

_MAX_REPORTED = 5  # schema errors quoted in one message


@cache
def _schema(kind: str) -> tuple[etree.XMLSchema, threading.Lock]:
    """The compiled composite schema for ``kind`` and the lock that serialises its use."""
    xsd = SCHEMA_FILES[kind]
    composite = f"""<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" elementFormDefault="qualified">
  <xs:import namespace="{NS_RSPEC}" schemaLocation="geni3/{xsd}"/>
  <xs:import namespace="{NS_PRIMO}" schemaLocation="primogeni/1/{xsd}"/>
</xs:schema>"""
    parser = etree.XMLParser(no_network=True, resolve_entities=False, load_dtd=False)
    # The base URL makes the relative schemaLocations resolve inside the package.
    document = etree.fromstring(composite.encode(), parser, base_url=(SCHEMA_DIR / "composite.xsd").as_uri())
    return etree.XMLSchema(document), threading.Lock()


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise bad(f"unknown RSpec kind {kind!r} (expected one of {', '.join(KINDS)})")


def validate_element(root: etree._Element, kind: str) -> None:
    """Validate an already parsed document; RSpecError (BADARGS) quoting the schema errors."""
    _check_kind(kind)
    schema, lock = _schema(kind)
    # One XMLSchema object keeps one error log: serialise its use across server threads.
    with lock:
        if schema.validate(root):
            return
        errors = [f"line {e.line}: {e.message}" for e in list(schema.error_log)[:_MAX_REPORTED]]
        more = len(schema.error_log) - len(errors)
    suffix = f" (and {more} more)" if more > 0 else ""
    raise bad(f"the {kind} RSpec does not validate against the RSpec v3 schemas: {'; '.join(errors)}{suffix}")


def validate(xml: str | bytes, kind: str) -> None:
    """Check that ``xml`` is a valid ``kind`` RSpec ("advertisement", "request" or "manifest").

    Parses safely (see :func:`.xmlio.parse_xml`) and validates against the GENI v3 core
    schema for ``kind`` together with the PrimoGENI extension schema; raises RSpecError
    (BADARGS) naming what is wrong.
    """
    _check_kind(kind)
    validate_element(parse_xml(xml), kind)


__all__ = ["SCHEMA_DIR", "validate", "validate_element"]
