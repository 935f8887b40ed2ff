"""The GENI return envelope and the safe parsing of XML-RPC request bodies.

Every GENI call answers ``{code: {geni_code, am_type, am_code}, value, output}``; an expected
error is such an envelope with a non-zero code, never an XML-RPC Fault. Handlers build their
own envelopes with :func:`envelope` (GetVersion adds a top-level ``geni_api``); the server
builds :func:`error_envelope` for every :class:`GeniError` and for the failures it finds itself.

:func:`parse_call` is the only place request bytes become Python values. It uses the standard
library's XML-RPC unmarshaller on an expat parser that refuses any document type declaration
or entity declaration: XML-RPC never needs a DTD, so this closes off external entities (XXE)
and entity expansion ("billion laughs") outright.
"""

from __future__ import annotations

import re
import xmlrpc.client
from typing import Any, NoReturn, cast
from xml.parsers import expat

from primogeni.geni.codes import GeniCode
from primogeni.geni.errors import GeniError

#: ``am_type`` in every envelope we produce.
AM_TYPE = "primogeni"

# Scanned before parsing; NUL bytes are refused too, since a UTF-16/32 body would hide a
# "<!DOCTYPE" from this byte-level scan.
_DTD_MARKUP = re.compile(rb"<!(?:doctype|entity)", re.IGNORECASE)


def envelope(value: object, *, code: int = GeniCode.SUCCESS, output: str = "") -> dict[str, Any]:
    """The GENI return struct: ``{code: {geni_code, am_type, am_code}, value, output}``."""
    return {
        "code": {"geni_code": int(code), "am_type": AM_TYPE, "am_code": int(code)},
        "value": value,
        "output": output,
    }


def error_envelope(err: GeniError) -> dict[str, Any]:
    """The envelope for an expected failure: its code, its reason as ``output``, value ``""``.

    ``""`` rather than nil follows the reference aggregate (geni-tools ``errorResult``).
    """
    return envelope("", code=err.code, output=err.reason)


class _Refused(Exception):
    """Raised from inside expat callbacks to abort parsing of forbidden markup."""


def _refuse(*_args: object) -> NoReturn:
    raise _Refused


def parse_call(body: bytes) -> tuple[str, tuple[Any, ...]]:
    """``(method name, params)`` of an XML-RPC ``methodCall`` body.

    base64 becomes ``bytes`` and dateTime.iso8601 a naive ``datetime`` (the unmarshaller's
    built-in types). Raises :class:`GeniError` with code BADARGS when the body carries a DTD or
    entity declaration, is not UTF-8/ASCII-compatible, is not well-formed, or is not a methodCall.
    """
    if _DTD_MARKUP.search(body):
        raise GeniError(GeniCode.BADARGS, "XML-RPC requests must not contain a DOCTYPE or ENTITY declaration")
    if b"\x00" in body:
        raise GeniError(GeniCode.BADARGS, "XML-RPC requests must be encoded in UTF-8")
    unmarshaller = xmlrpc.client.Unmarshaller(use_builtin_types=True)
    parser = expat.ParserCreate(None, None)
    parser.StartElementHandler = unmarshaller.start
    parser.EndElementHandler = unmarshaller.end
    parser.CharacterDataHandler = unmarshaller.data
    parser.buffer_text = True
    # Defence in depth behind the byte scan (which a declared single-byte encoding could evade).
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse
    parser.EntityDeclHandler = _refuse
    parser.ExternalEntityRefHandler = _refuse
    unmarshaller.xml(cast(str, None), None)  # as ExpatParser does: values arrive as str
    try:
        parser.Parse(body, True)
        params = unmarshaller.close()
        method = unmarshaller.getmethodname()
    except _Refused:
        raise GeniError(GeniCode.BADARGS, "XML-RPC requests must not contain a DOCTYPE or ENTITY declaration") from None
    except expat.ExpatError as exc:
        raise GeniError(GeniCode.BADARGS, f"request is not well-formed XML: {exc}") from None
    except (xmlrpc.client.Error, ValueError, TypeError, IndexError, KeyError, OverflowError) as exc:
        # What the stdlib unmarshaller raises on XML that is well-formed but not XML-RPC
        # (unbalanced <value>, a bad <int>, a methodResponse or fault, …).
        detail = f": {exc}" if str(exc) else ""
        raise GeniError(GeniCode.BADARGS, f"request is not a valid XML-RPC methodCall{detail}") from None
    if not isinstance(method, str) or not method:
        raise GeniError(GeniCode.BADARGS, "request is not an XML-RPC methodCall (no methodName)")
    return method, tuple(params)


def marshal_response(response: object) -> bytes:
    """The XML-RPC ``methodResponse`` body carrying ``response`` (nil allowed), UTF-8."""
    text = xmlrpc.client.dumps((cast(Any, response),), methodresponse=True, allow_none=True, encoding="utf-8")
    return text.encode("utf-8")


__all__ = ["AM_TYPE", "envelope", "error_envelope", "marshal_response", "parse_call"]
