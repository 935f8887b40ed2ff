"""Safe parsing of untrusted XML: the one recipe the RSpec and credential readers share.

:func:`parse` refuses oversized input and DTDs before parsing, parses with entity resolution,
DTD loading, network access and huge trees off (a per-thread cached :func:`parser`), and checks
the parsed document for a DTD again (an encoding the byte scan cannot read). So XXE and
entity-expansion bombs never get a chance.

Each caller keeps its own limit, its own error type and its own messages: it passes ``refuse``,
which turns a :class:`Refusal` into the caller's error. :mod:`.rspec.xmlio` and :mod:`.cred_xml`
are the callers.
"""

from __future__ import annotations

import enum
import re
import threading
from collections.abc import Callable

from lxml import etree

_PROLOG_ITEM = re.compile(rb"\s*(?:<\?.*?\?>|<!--.*?-->)", re.DOTALL)
_DTD_DECLARATION = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_local = threading.local()


class Refusal(enum.Enum):
    """Why :func:`parse` refused a document; ``detail`` (a str) says more where noted."""

    TOO_LARGE = "too large"  # detail: the size in bytes
    EMPTY = "empty"  # only with refuse_empty
    DTD_SEEN = "DTD seen"  # found by the byte scan before parsing
    MALFORMED = "malformed"  # detail: lxml's message
    DTD_PARSED = "DTD parsed"  # found in the parsed document


def parser(*, remove_comments: bool) -> etree.XMLParser:
    """The calling thread's safe parser; ``remove_comments`` drops comments and PIs too."""
    # lxml parsers must not be used by two threads at once: one per thread (and setting).
    name = "parser_without_comments" if remove_comments else "parser"
    cached: etree.XMLParser | None = getattr(_local, name, None)
    if cached is None:
        cached = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            remove_comments=remove_comments,
            remove_pis=remove_comments,
        )
        setattr(_local, name, cached)
    return cached


def doctype_in_prolog(raw: bytes) -> bool:
    """Whether an ASCII-compatible document declares a DOCTYPE in its prolog."""
    pos = 3 if raw.startswith(b"\xef\xbb\xbf") else 0
    while (match := _PROLOG_ITEM.match(raw, pos)) is not None:
        pos = match.end()
    return raw[pos:].lstrip().startswith(b"<!DOCTYPE")


def dtd_anywhere(raw: bytes) -> bool:
    """Whether ``<!DOCTYPE`` or ``<!ENTITY`` (any case) appears anywhere in the bytes."""
    return _DTD_DECLARATION.search(raw) is not None


def has_dtd(root: etree._Element) -> bool:
    """Whether the parsed document carries a DOCTYPE (internal or external subset)."""
    docinfo = root.getroottree().docinfo
    return bool(docinfo.doctype) or docinfo.internalDTD is not None or docinfo.externalDTD is not None


def parse(
    payload: str | bytes,
    raw: bytes,
    *,
    max_bytes: int,
    remove_comments: bool,
    declares_dtd: Callable[[bytes], bool],
    refuse: Callable[[Refusal, str], Exception],
    refuse_empty: bool = False,
) -> etree._Element:
    """Parse ``payload`` (whose bytes are ``raw``) safely into its root, or raise ``refuse(…)``.

    The checks run in this order: size, emptiness (with ``refuse_empty``), ``declares_dtd(raw)``,
    well-formedness, and a DTD in the parsed document.
    """
    if len(raw) > max_bytes:
        raise refuse(Refusal.TOO_LARGE, str(len(raw)))
    if refuse_empty and not raw.strip():
        raise refuse(Refusal.EMPTY, "")
    if declares_dtd(raw):
        raise refuse(Refusal.DTD_SEEN, "")
    try:
        root = etree.fromstring(payload, parser(remove_comments=remove_comments))
    except etree.XMLSyntaxError as e:
        raise refuse(Refusal.MALFORMED, str(e)) from None
    if has_dtd(root):
        raise refuse(Refusal.DTD_PARSED, "")
    return root


__all__ = ["Refusal", "doctype_in_prolog", "dtd_anywhere", "has_dtd", "parse", "parser"]
