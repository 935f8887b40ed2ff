"""The credentials argument of a GENI call, as every API sends it.

AM API v3 and the Federation API send ``[{geni_type, geni_version, geni_value}]``; AM API v2
and ProtoGENI send plain XML strings; geni-lib sends ``geni_value`` as XML-RPC base64 (bytes).
:func:`sfa_credentials` returns the SFA credential documents among them and says what else was
offered, so each API can word its own refusal.
"""

from __future__ import annotations

from dataclasses import dataclass

from primogeni.geni.codes import GeniCode
from primogeni.geni.errors import GeniError

SFA_TYPES = frozenset({"geni_sfa", "sfa"})
SFA_VERSIONS = frozenset({"2", "3"})
MAX_CREDENTIALS = 32


@dataclass(frozen=True)
class SfaCredentials:
    values: list[str]  # the credential documents we can verify
    skipped: list[str]  # descriptions of structs of other types or versions


def sfa_credentials(value: object) -> SfaCredentials:
    """Split a call's credentials; BADARGS when the argument is not a list of strings or structs."""
    if not isinstance(value, list | tuple):
        raise GeniError(GeniCode.BADARGS, "credentials must be a list")
    if len(value) > MAX_CREDENTIALS:
        raise GeniError(GeniCode.BADARGS, f"at most {MAX_CREDENTIALS} credentials per call")
    values: list[str] = []
    skipped: list[str] = []
    for item in value:
        if isinstance(item, str):
            values.append(item)
            continue
        if not isinstance(item, dict):
            raise GeniError(GeniCode.BADARGS, "each credential must be a string or a geni_type/geni_value struct")
        kind, version, xml = item.get("geni_type"), item.get("geni_version"), item.get("geni_value")
        if isinstance(xml, bytes):
            xml = xml.decode("utf-8", "replace")
        if not isinstance(kind, str) or not isinstance(xml, str):
            raise GeniError(GeniCode.BADARGS, "a credential struct needs string geni_type and geni_value")
        if kind.lower() in SFA_TYPES and (version is None or str(version) in SFA_VERSIONS):
            values.append(xml)
        else:
            skipped.append(f"{kind!r} version {str(version)!r}")
    return SfaCredentials(values, skipped)


__all__ = ["MAX_CREDENTIALS", "SFA_TYPES", "SfaCredentials", "sfa_credentials"]
