"""What the AM's three APIs share: credential checks, argument checks, time and sliver formats.

Each API module (``api_v2``, ``api_v3``, ``api_cm``) translates its wire shapes to calls on
:class:`primogeni.am.core.AggregateManager`; this module holds the parts they have in common so
that every API checks credentials the same way and reports the same codes.
"""

from __future__ import annotations

import base64
import inspect
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from primogeni.am.core import AggregateManager, Sliver
from primogeni.geni.cert import Gid, Identity
from primogeni.geni.codes import GeniCode
from primogeni.geni.cred import Credential, Verifier
from primogeni.geni.credlist import sfa_credentials
from primogeni.geni.errors import CredentialError, GeniError, UrnError
from primogeni.geni.rspec import NS_PRIMO, NS_RSPEC
from primogeni.geni.times import as_utc, parse_rfc3339, rfc3339
from primogeni.geni.urn import Urn

if TYPE_CHECKING:
    from primogeni.am.events import EventQueue


def parse_time(value: object, what: str) -> datetime:
    """RFC 3339 (with Z or an offset, with or without fraction), or an XML-RPC dateTime."""
    if isinstance(value, datetime):
        return as_utc(value)
    if hasattr(value, "value") and isinstance(value.value, str):  # xmlrpc.client.DateTime
        value = value.value
    if not isinstance(value, str) or not value.strip():
        raise GeniError(GeniCode.BADARGS, f"{what} must be an RFC 3339 time, got {value!r}")
    try:
        return parse_rfc3339(value)
    except ValueError:
        raise GeniError(GeniCode.BADARGS, f"{what} is not an RFC 3339 time: {value!r}") from None


def parse_urn(text: object, what: str, kind: str | None = None) -> Urn:
    if not isinstance(text, str):
        raise GeniError(GeniCode.BADARGS, f"{what} must be a URN string")
    try:
        urn = Urn.parse(text)
    except UrnError as exc:
        raise GeniError(GeniCode.BADARGS, f"{what}: {exc.reason}") from None
    if kind is not None and urn.type != kind:
        raise GeniError(GeniCode.BADARGS, f"{what} must be a {kind} URN, got {urn.type!r}")
    return urn


def options_of(value: object) -> Mapping[str, object]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise GeniError(GeniCode.BADARGS, "options must be a struct")
    return value


def compress(text: str) -> str:
    return base64.b64encode(zlib.compress(text.encode())).decode()


@dataclass
class Context:
    """Everything an API handler needs: the core, identities, the verifier, the URLs."""

    am: AggregateManager
    identity: Identity  # the AM's own (signs tickets and sliver credentials)
    verifier: Verifier
    urls: Mapping[str, str]  # API version → URL ("2", "3", "cm")
    clock: Callable[[], datetime]
    advertise: Callable[[bool], str]  # available_only → advertisement
    manifest: Callable[[str, Sequence[str] | None], str]  # slice URN, sliver URNs → manifest
    events: EventQueue | None = None  # PerformOperationalAction's primo:* events
    monitor: Callable[[Sequence[str]], dict[str, dict[str, Any]]] | None = None  # sliver URNs → figures

    def monitor_of(self, slivers: Sequence[Sliver]) -> dict[str, dict[str, Any]]:
        """Per provisioned sliver, what the driver measures (empty without a monitoring driver)."""
        urns = [s.urn for s in slivers if s.allocation == "geni_provisioned"]
        if self.monitor is None or not urns:
            return {}
        return {urn: wire_safe(v) for urn, v in self.monitor(urns).items()}

    def credential_values(self, creds: object) -> list[str]:
        """The SFA credential documents among ``creds``; CREDENTIAL_INVALID naming what was
        offered when none is usable."""
        if creds is None:
            raise GeniError(GeniCode.MISSINGARGS, "credentials are required")
        found = sfa_credentials(creds)
        if not found.values:
            offered = f" (offered: {', '.join(found.skipped)})" if found.skipped else ""
            raise CredentialError(GeniCode.CREDENTIAL_INVALID,
                                  f"no usable credential: only geni_sfa version 3 is accepted{offered}")
        return found.values

    def check(self, creds: object, caller: Gid, target: Urn | None, operation: str) -> Credential:
        values = self.credential_values(creds)
        return self.verifier.verify_any(values, caller=caller, target=target, operation=operation)


def call_method(methods: Mapping[str, Callable[..., object]], api: str, method: str, params: tuple[object, ...],
                caller: Gid) -> object:
    """Call ``methods[method](caller, *params)``; an unknown name or a wrong argument count is an envelope.

    Arguments are bound before the call, so a TypeError raised inside a method stays a server
    error instead of being mistaken for the client's.
    """
    fn = methods.get(method)
    if fn is None:
        raise GeniError(GeniCode.UNSUPPORTED, f"{api} has no method {method!r}")
    try:
        inspect.signature(fn).bind(caller, *params)
    except TypeError:
        raise GeniError(GeniCode.BADARGS, f"{method}: wrong number of arguments ({len(params)})") from None
    return fn(caller, *params)


def slice_expiry(cred: Credential) -> datetime:
    """A slice lives as long as the credential chain says (a delegated one never outlives its parent)."""
    when = cred.expires
    parent = cred.parent
    while parent is not None:
        when = min(when, parent.expires)
        parent = parent.parent
    return when


def sliver_v3(s: Sliver) -> dict[str, object]:
    return {"geni_sliver_urn": s.urn, "geni_expires": rfc3339(s.expires), "geni_allocation_status": s.allocation,
            "geni_operational_status": s.operational, "geni_error": s.error}


def wire_safe(value: Any) -> Any:
    """``value`` with integers beyond XML-RPC's 32 bits as doubles (exact to 2**53): counters, sizes."""
    if isinstance(value, bool) or not isinstance(value, int | dict | list | tuple):
        return value
    if isinstance(value, int):
        return value if -(1 << 31) <= value < (1 << 31) else float(value)
    if isinstance(value, dict):
        return {str(k): wire_safe(v) for k, v in value.items()}
    return [wire_safe(v) for v in value]


def slice_of(ctx: Context, urns: object) -> tuple[Urn, list[str] | None]:
    """AM API v3 ``urns``: one slice URN, or sliver URNs of one slice → (slice, sliver URNs or None)."""
    if not isinstance(urns, list | tuple) or not urns:
        raise GeniError(GeniCode.BADARGS, "urns must be a non-empty list of a slice URN or sliver URNs")
    parsed = [parse_urn(u, "urns[]") for u in urns]
    slices = [u for u in parsed if u.type == "slice"]
    if slices:
        if len(parsed) != 1:
            raise GeniError(GeniCode.BADARGS, "give either one slice URN or sliver URNs, not both")
        return slices[0], None
    owners = set()
    for u in parsed:
        if u.type != "sliver":
            raise GeniError(GeniCode.BADARGS, f"{u} is neither a slice nor a sliver URN")
        owner = ctx.am.slice_urn_of(str(u))
        if owner is None:
            raise GeniError(GeniCode.SEARCHFAILED, f"no sliver {u} here")
        owners.add(owner)
    if len(owners) != 1:
        raise GeniError(GeniCode.BADARGS, "the sliver URNs belong to different slices")
    return Urn.parse(owners.pop()), [str(u) for u in parsed]


def check_rspec_version(options: Mapping[str, object], *, required: bool) -> None:
    version = options.get("geni_rspec_version")
    if version is None:
        if required:
            raise GeniError(GeniCode.BADARGS, "option geni_rspec_version is required (use {type: GENI, version: 3})")
        return
    if not isinstance(version, dict):
        raise GeniError(GeniCode.BADARGS, "geni_rspec_version must be a struct {type, version}")
    if str(version.get("type", "")).lower() not in ("geni", "protogeni") or str(version.get("version")) != "3":
        raise GeniError(GeniCode.BADVERSION, f"RSpec version {version.get('type')} {version.get('version')} "
                                             "is not supported (GENI 3 only)")


def rspec_versions() -> dict[str, object]:
    def one(kind: str) -> dict[str, object]:
        return {"type": "GENI", "version": "3", "schema": f"http://www.geni.net/resources/rspec/3/{kind}.xsd",
                "namespace": NS_RSPEC, "extensions": [NS_PRIMO]}

    return {"geni_request_rspec_versions": [one("request")], "geni_ad_rspec_versions": [one("ad")]}
