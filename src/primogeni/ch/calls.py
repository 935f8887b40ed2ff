"""What every clearinghouse API handler shares: envelopes, argument checks, times, and who calls.

Both clearinghouse APIs (the Common Federation API v2 and ProtoGENI's SA/CH) answer
``{code, value, output}`` with an *integer* ``code`` (omni and geni-lib compare it with 0 and
print it with ``%d``), unlike the AM API's ``code`` struct. :class:`ChRoute` is the route object
given to :class:`~primogeni.rpc.RpcServer`: it lists its methods (anything else is UNSUPPORTED)
and builds its own error envelopes.

:class:`Authenticator` turns the credentials of a call into the member making it: a valid user
credential owned by the TLS caller (or, for calls on one slice, a slice credential for that
slice owned by the caller), then the MA's check that the caller's certificate is the one it
issued. Credentials come either as XML strings or as ``{geni_type, geni_version, geni_value}``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError

from primogeni.ch.members import Member, MemberAuthority
from primogeni.geni.cert import Gid
from primogeni.geni.codes import GeniCode
from primogeni.geni.cred import Credential, Verifier
from primogeni.geni.credlist import sfa_credentials
from primogeni.geni.errors import CredentialError, GeniError
from primogeni.geni.times import as_utc, parse_rfc3339, rfc3339
from primogeni.geni.urn import Urn

#: ``geni_type`` values we accept (case-insensitive); other credential types are ignored.

log = logging.getLogger("primogeni.ch")

Method = Callable[[tuple[Any, ...], Gid], object]


def ch_envelope(value: object, *, code: int = GeniCode.SUCCESS, output: str = "") -> dict[str, Any]:
    """The clearinghouse answer ``{code: int, value, output}``."""
    return {"code": int(code), "value": value, "output": output}


class ChRoute:
    """A route of the RPC server: dispatches by method name to ``fn(params, caller)``."""

    def __init__(self, methods: Mapping[str, Method]):
        self._methods = dict(methods)
        self.methods = frozenset(self._methods)

    def __call__(self, method: str, params: tuple[Any, ...], caller: Gid) -> object:
        fn = self._methods.get(method)
        if fn is None:
            raise GeniError(GeniCode.UNSUPPORTED, f"unsupported method {method[:80]!r}")
        try:
            return ch_envelope(fn(params, caller))
        except (OperationalError, InterfaceError) as err:
            # The database is unreachable or gave up (lock timeout): nothing was committed.
            log.error("%s from %s: database error: %s", method[:80], caller.urn, err)
            raise GeniError(GeniCode.DBERROR, "database unavailable; nothing was changed, try again") from None

    @staticmethod
    def error_envelope(err: GeniError) -> dict[str, Any]:
        return ch_envelope("", code=err.code, output=err.reason)


# -- arguments ---------------------------------------------------------------------------------


def arity(params: tuple[Any, ...], low: int, high: int | None = None, *, usage: str) -> tuple[Any, ...]:
    """``params`` padded with None to ``high``; BADARGS with ``usage`` for a wrong count."""
    high = low if high is None else high
    if not low <= len(params) <= high:
        raise GeniError(GeniCode.BADARGS, f"expected {usage}, got {len(params)} argument(s)")
    return tuple(params) + (None,) * (high - len(params))


def text(value: object, what: str, *, limit: int = 4096) -> str:
    """A string argument; BADARGS otherwise."""
    if not isinstance(value, str):
        raise GeniError(GeniCode.BADARGS, f"{what} must be a string")
    if len(value) > limit:
        raise GeniError(GeniCode.BADARGS, f"{what} is longer than {limit} characters")
    return value


def urn_arg(value: object, what: str, kind: str | None = None) -> Urn:
    """A URN argument (of type ``kind`` when given); BADARGS otherwise."""
    urn = Urn.parse(text(value, what, limit=1024))
    if kind is not None and urn.type != kind:
        raise GeniError(GeniCode.BADARGS, f"{what} must be a {kind} URN, not {urn}")
    return urn


def struct(value: object, what: str) -> dict[str, Any]:
    """A struct argument (None counts as empty); BADARGS otherwise."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise GeniError(GeniCode.BADARGS, f"{what} must be a struct")
    return value


def boolean(value: object, what: str) -> bool:
    """A boolean, also spelled ``t``/``f``/``true``/``false`` (omni sends ``'f'``)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("t", "true", "1", "y", "yes"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("f", "false", "0", "n", "no"):
        return False
    raise GeniError(GeniCode.BADARGS, f"{what} must be a boolean")


def parse_time(value: object, what: str) -> datetime:
    """An RFC 3339 / ISO 8601 time (string or XML-RPC dateTime); no zone means UTC."""
    if isinstance(value, datetime):
        return as_utc(value)
    if isinstance(value, str) and 0 < len(value) <= 64:
        try:
            return parse_rfc3339(value)
        except ValueError:
            raise GeniError(GeniCode.BADARGS, f"{what} {value!r} is not an RFC 3339 time") from None
    raise GeniError(GeniCode.BADARGS, f"{what} must be an RFC 3339 time string")


def credential_texts(value: object) -> list[str]:
    """The SFA credentials of a call: XML strings, from strings or ``geni_value`` structs."""
    if value is None:
        return []
    return sfa_credentials(value).values


def one_credential(value: object, what: str = "credential") -> list[str]:
    """ProtoGENI's ``credential`` argument: one XML string (a list is accepted too; none is [])."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return credential_texts(value)
    raise GeniError(GeniCode.BADARGS, f"{what} must be a credential string")


def filtered(record: dict[str, Any], fields: Sequence[str] | None) -> dict[str, Any]:
    """``record`` restricted to ``fields`` (all of it when None)."""
    if fields is None:
        return record
    return {k: v for k, v in record.items() if k in fields}


# -- who calls ---------------------------------------------------------------------------------


class Authenticator:
    """Checks the credentials of a call and finds the calling member."""

    def __init__(self, verifier: Verifier, members: MemberAuthority):
        self.verifier = verifier
        self.members = members

    def credential(
        self, creds: Sequence[str], caller: Gid, *, slice_urn: Urn | None = None, operation: str = "resolve"
    ) -> Credential:
        """A credential from ``creds`` owned by ``caller``: the caller's user credential, or a
        credential for ``slice_urn`` (when given) that grants ``operation``.

        Raises the verifier's error (FORBIDDEN when no credential was given at all); with a slice,
        the error about the slice credential when one was offered.
        """
        if not creds:
            raise GeniError(GeniCode.FORBIDDEN, "this call needs your user credential (get it from the MA)")
        errors: list[CredentialError] = []
        attempts: list[tuple[Urn, str]] = [(caller.urn, "resolve")]
        if slice_urn is not None:
            attempts.append((slice_urn, operation))
        for target, op in attempts:
            try:
                return self.verifier.verify_any(creds, caller=caller, target=target, operation=op)
            except CredentialError as err:
                errors.append(err)
        if len(errors) > 1 and errors[0].code == GeniCode.CREDENTIAL_MISMATCH:
            raise errors[1]  # what was wrong with the slice credential, not that it is no user one
        raise errors[0]

    def member(
        self, creds: Sequence[str], caller: Gid, *, slice_urn: Urn | None = None, operation: str = "resolve"
    ) -> Member:
        """The calling member, after :meth:`credential`."""
        self.credential(creds, caller, slice_urn=slice_urn, operation=operation)
        return self.members.check_caller(caller)


__all__ = [
    "Authenticator",
    "ChRoute",
    "arity",
    "boolean",
    "ch_envelope",
    "credential_texts",
    "filtered",
    "one_credential",
    "parse_time",
    "rfc3339",
    "struct",
    "text",
    "urn_arg",
]
