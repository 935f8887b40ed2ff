"""Errors of the GENI layer, each carrying the GENI code a server returns for it.

Servers turn every :class:`GeniError` into the ``{code: {geni_code: ...}, value, output}``
envelope, never an XML-RPC Fault. The leaves also inherit the builtin meaning
(``CredentialError`` is a ``ValueError``).
"""

from __future__ import annotations

from typing import Any

from primogeni.errors import GeniError as _Base
from primogeni.geni.codes import GeniCode


class GeniError(_Base):
    """An expected failure of a GENI call: ``code`` (a :class:`GeniCode`) and ``reason``."""

    def __init__(self, code: int, message: str):
        self.code = GeniCode(code)
        self.reason = message
        super().__init__(f"{self.code.name}: {message}")


class UrnError(GeniError, ValueError):
    """A URN or a name inside one is malformed (code BADARGS)."""

    def __init__(self, message: str):
        super().__init__(GeniCode.BADARGS, message)


class CertificateError(GeniError, ValueError):
    """A certificate (GID) is malformed or does not chain to a trusted root."""


class CredentialError(GeniError, ValueError):
    """A credential is malformed, altered, expired, untrusted, or does not authorise the call."""


class RSpecError(GeniError, ValueError):
    """An RSpec is malformed, invalid against its schema, or asks for something we do not have."""


__all__ = ["CertificateError", "CredentialError", "GeniCode", "GeniError", "RSpecError", "UrnError"]


def need(value: object, kind: type | tuple[type, ...], what: str) -> Any:
    """``value`` when it is a ``kind``: an argument of a call, checked (MISSINGARGS when None,
    BADARGS when of another type, naming ``what``)."""
    if value is None:
        raise GeniError(GeniCode.MISSINGARGS, f"{what} is required")
    if not isinstance(value, kind):
        raise GeniError(GeniCode.BADARGS, f"{what} has the wrong type ({type(value).__name__})")
    return value
