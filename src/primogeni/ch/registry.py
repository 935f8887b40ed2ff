"""The aggregate registry: which aggregate managers this clearinghouse tells clients about.

An aggregate is registered two ways: by an administrator in Python (:meth:`Registry.register`,
what ``primo ch register-aggregate`` calls), or over the wire by the aggregate itself through the
ProtoGENI CH ``Register`` call (:meth:`Registry.register_caller`), where the TLS caller must be an
authority certificate (CA, URN type ``authority``) that chains to our trust roots and is the very
certificate being registered. Registering a URN again replaces its URL and certificate.

Clients read the registry through the Federation API's ``lookup("SERVICE", ...)`` and the
ProtoGENI CH's ``ListComponents``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from primogeni.ch.models import AggregateRow
from primogeni.db import transaction
from primogeni.geni.cert import Gid, TrustStore
from primogeni.geni.codes import GeniCode
from primogeni.geni.errors import GeniError
from primogeni.geni.times import utcnow
from primogeni.geni.urn import Urn

Clock = Callable[[], datetime]

#: The Federation API's SERVICE_TYPE of an aggregate manager.
AGGREGATE_MANAGER = "AGGREGATE_MANAGER"
#: ``type`` values an aggregate may give to the ProtoGENI CH ``Register`` call.
PG_REGISTER_TYPES = frozenset({"CM", "AM", "Aggregate", "AGGREGATE_MANAGER", "Component"})
_MAX_URL = 1024


@dataclass(frozen=True)
class Aggregate:
    """A registered aggregate manager; ``api_versions`` maps an API version to its URL."""

    urn: Urn
    url: str
    cert_pem: str
    name: str
    description: str
    kind: str
    registered: datetime
    api_versions: Mapping[str, str] = field(default_factory=dict)

    @property
    def gid(self) -> Gid:
        return Gid.from_pem(self.cert_pem)

    @property
    def hrn(self) -> str:
        """The ProtoGENI human-readable name: ``<authority>.<name>``."""
        return f"{self.urn.authority}.{self.urn.name}"


def check_url(url: str) -> str:
    """An ``https://host[:port]/path`` URL, else ``GeniError(BADARGS)``."""
    if not isinstance(url, str) or len(url) > _MAX_URL or any(c.isspace() for c in url):
        raise GeniError(GeniCode.BADARGS, f"not a URL: {url!r}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as e:
        raise GeniError(GeniCode.BADARGS, f"not a URL: {url!r} ({e})") from e
    if parts.scheme != "https" or not parts.hostname:
        raise GeniError(GeniCode.BADARGS, f"an aggregate URL must be https://host[:port]/path, not {url!r}")
    return url


class Registry:
    """Registered aggregates, checked against ``trust``."""

    def __init__(self, sessions: sessionmaker[Session], trust: TrustStore, *, clock: Clock = utcnow):
        self._sessions = sessions
        self.trust = trust
        self._clock = clock

    def register(
        self,
        urn: Urn | str,
        url: str,
        cert_pem: str,
        *,
        name: str | None = None,
        description: str = "",
        api_versions: Mapping[str, str] | None = None,
        verify: bool = True,
    ) -> Aggregate:
        """Register (or re-register) an aggregate manager.

        ``cert_pem`` is the aggregate's certificate (its chain may follow); its URN must be
        ``urn``; with ``verify`` it must chain to our trust roots (CertificateError otherwise).
        """
        u = urn if isinstance(urn, Urn) else Urn.parse(urn)
        check_url(url)
        if not isinstance(cert_pem, str):
            raise GeniError(GeniCode.BADARGS, "the aggregate certificate must be PEM text")
        gid = Gid.from_pem(cert_pem)  # CertificateError (BADARGS) naming what is wrong
        if gid.urn != u:
            raise GeniError(GeniCode.BADARGS, f"the certificate is for {gid.urn}, not {u}")
        now = self._clock()
        if verify:
            self.trust.verify(gid, now)
        versions = dict(api_versions or {})
        for version, vurl in versions.items():
            if not isinstance(version, str):
                raise GeniError(GeniCode.BADARGS, "API versions must be strings")
            check_url(vurl)
        if name is None:
            name = f"{u.authority}-{u.name}"
        if not isinstance(name, str) or not name or len(name) > 128:
            raise GeniError(GeniCode.BADARGS, "an aggregate name must be 1 to 128 characters")
        with transaction(self._sessions) as s:
            row = s.scalar(select(AggregateRow).where(AggregateRow.urn == str(u)).with_for_update())
            if row is None:
                row = AggregateRow(urn=str(u))
                s.add(row)
            row.url = url
            row.cert_pem = gid.pem(with_chain=True)
            row.name = name
            row.description = description
            row.kind = AGGREGATE_MANAGER
            row.api_versions = json.dumps(versions, sort_keys=True)
            row.registered = now
            s.flush()
            return _aggregate(row)

    def register_caller(self, caller: Gid, gid_pem: str, url: str, kind: str = "CM") -> Aggregate:
        """The ProtoGENI CH ``Register``: an aggregate registers itself.

        FORBIDDEN unless the caller is an authority (CA, URN type ``authority``) and ``gid_pem``
        is the caller's own certificate; BADARGS for an unknown ``kind`` or a bad URL.
        """
        if kind not in PG_REGISTER_TYPES:
            raise GeniError(
                GeniCode.BADARGS, f"cannot register a {kind!r} (one of {', '.join(sorted(PG_REGISTER_TYPES))})"
            )
        if not caller.is_ca or caller.urn.type != "authority":
            raise GeniError(
                GeniCode.FORBIDDEN, f"only an aggregate's authority certificate may register it, not {caller.urn}"
            )
        if not isinstance(gid_pem, str):
            raise GeniError(GeniCode.BADARGS, "gid must be a PEM certificate string")
        gid = Gid.from_pem(gid_pem)
        if not gid.same_key(caller):
            raise GeniError(GeniCode.FORBIDDEN, f"{caller.urn} may register only itself, not {gid.urn}")
        versions = {"pg": url} if kind == "CM" else {}
        return self.register(gid.urn, url, gid_pem, api_versions=versions)

    def unregister(self, urn: Urn | str) -> None:
        """Forget an aggregate; SEARCHFAILED if it is not registered."""
        u = urn if isinstance(urn, Urn) else Urn.parse(urn)
        with transaction(self._sessions) as s:
            row = s.scalar(select(AggregateRow).where(AggregateRow.urn == str(u)))
            if row is None:
                raise GeniError(GeniCode.SEARCHFAILED, f"no aggregate {u}")
            s.delete(row)

    def aggregate(self, urn: Urn | str) -> Aggregate:
        """The aggregate with this URN; SEARCHFAILED if it is not registered."""
        u = urn if isinstance(urn, Urn) else Urn.parse(urn)
        with transaction(self._sessions) as s:
            row = s.scalar(select(AggregateRow).where(AggregateRow.urn == str(u)))
            if row is None:
                raise GeniError(GeniCode.SEARCHFAILED, f"no aggregate {u}")
            return _aggregate(row)

    def aggregates(self, *, urns: Iterable[str] | None = None, urls: Iterable[str] | None = None) -> list[Aggregate]:
        """Registered aggregates matching the given URNs and URLs, by URN."""
        q = select(AggregateRow).order_by(AggregateRow.urn)
        if urns is not None:
            q = q.where(AggregateRow.urn.in_([str(Urn.parse(u)) for u in urns]))
        if urls is not None:
            q = q.where(AggregateRow.url.in_(list(urls)))
        with transaction(self._sessions) as s:
            return [_aggregate(r) for r in s.scalars(q)]


def _aggregate(row: AggregateRow) -> Aggregate:
    return Aggregate(
        urn=Urn.parse(row.urn),
        url=row.url,
        cert_pem=row.cert_pem,
        name=row.name,
        description=row.description,
        kind=row.kind,
        registered=row.registered,
        api_versions=json.loads(row.api_versions or "{}"),
    )


__all__ = ["AGGREGATE_MANAGER", "PG_REGISTER_TYPES", "Aggregate", "Registry", "check_url"]
