"""Times on the GENI wire: RFC 3339 in UTC with a ``Z`` and whole seconds, read back leniently.

One place for what credentials, RSpecs, the clearinghouse, the aggregate manager and the client
all write and read. Callers turn a ``ValueError`` into their own error (CredentialError,
RSpecError, a GENI envelope).
"""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC (the default clock of every service)."""
    return datetime.now(UTC)


def rfc3339(when: datetime) -> str:
    """``2026-11-21T16:40:04Z``; ``when`` must be timezone-aware (ValueError otherwise)."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"time {when!r} must be timezone-aware")
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def as_utc(when: datetime) -> datetime:
    """An aware UTC time; a naive one is taken as UTC (XML-RPC dateTime values carry no zone)."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def parse_rfc3339(text: str) -> datetime:
    """An RFC 3339 / ISO 8601 time (``Z``, an offset, or no zone meaning UTC), as aware UTC.

    Also reads XML-RPC's compact ``20261121T16:40:04``. ValueError when it is none of these.
    """
    s = text.strip()
    if s[-1:] in ("z", "Z"):
        s = s[:-1] + "+00:00"
    try:
        return as_utc(datetime.fromisoformat(s))
    except (ValueError, OverflowError):
        pass
    try:
        return datetime.strptime(s, "%Y%m%dT%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"{text[:64]!r} is not an RFC 3339 time") from None


__all__ = ["as_utc", "parse_rfc3339", "rfc3339", "utcnow"]
