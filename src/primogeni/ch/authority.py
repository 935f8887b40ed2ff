"""The local authority: the data directory ``primo init`` makes and the services load.

Layout (docs/GENI.md, "Authorities and identities"), for authority name ``primo``::

    trusted_roots/primo-root.pem   urn:publicid:IDN+primo+authority+root   self-signed CA
    ch/root.key                    the root's key (kept so an administrator can issue more)
    ch/ma.pem, ch/ma.key           urn:publicid:IDN+primo+authority+ma     CA, by root
    ch/sa.pem, ch/sa.key           urn:publicid:IDN+primo+authority+sa     CA, by root
    ch/ch.pem, ch/ch.key           urn:publicid:IDN+primo+authority+ch     CA, by root (TLS)
    am/am.pem, am/am.key           urn:publicid:IDN+primo+authority+cm     CA, by root (TLS)
    users/<name>.pem, .key         urn:publicid:IDN+primo+user+<name>      by ma (user + ma)
    ch/ch.sqlite                   the clearinghouse database (unless a URL names another)

The server certificates (``ch``, ``am``) also carry the configured host names and addresses so
that clients can check the host they connect to. Key files are mode 0600, and the ``ch`` and
``am`` directories 0700.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from primogeni.ch.members import Member, MemberAuthority
from primogeni.ch.models import ChBase
from primogeni.ch.registry import Aggregate, Registry
from primogeni.ch.slices import SliceAuthority
from primogeni.db import make_engine, session_factory
from primogeni.geni.cert import Gid, Identity, TrustStore, create_root, issue
from primogeni.geni.codes import GeniCode
from primogeni.geni.errors import GeniError
from primogeni.geni.times import utcnow
from primogeni.geni.urn import Urn

ROOT_LIFETIME = timedelta(days=3650)
#: Authority certificates (ma, sa, ch, am) end a day before the root, so they never outlive it.
AUTHORITY_LIFETIME = ROOT_LIFETIME - timedelta(days=1)
_AUTHORITY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$")


@dataclass(frozen=True)
class Authority:
    """The identities of a local authority, loaded from its data directory."""

    data_dir: Path
    name: str
    root: Gid
    ma: Identity
    sa: Identity
    trust: TrustStore

    @classmethod
    def load(cls, data_dir: str | os.PathLike[str]) -> Authority:
        """Read ``ch/ma.*``, ``ch/sa.*`` and ``trusted_roots/`` of an initialised data directory."""
        d = Path(data_dir)
        if not (d / "ch" / "ma.pem").is_file():
            raise GeniError(GeniCode.SEARCHFAILED, f"{d} is not an initialised data directory (no ch/ma.pem)")
        ma = Identity.load(d / "ch" / "ma.pem", d / "ch" / "ma.key")
        sa = Identity.load(d / "ch" / "sa.pem", d / "ch" / "sa.key")
        name = ma.gid.urn.top_authority
        root = Gid.from_pem((d / "trusted_roots" / f"{name}-root.pem").read_bytes())
        return cls(d, name, root, ma, sa, TrustStore.from_dir(d / "trusted_roots"))

    @property
    def ch_cert(self) -> Path:
        """The clearinghouse's TLS certificate."""
        return self.data_dir / "ch" / "ch.pem"

    @property
    def ch_key(self) -> Path:
        return self.data_dir / "ch" / "ch.key"

    @property
    def ch_urn(self) -> Urn:
        return Urn(self.name, "authority", "ch")

    @property
    def am_cert(self) -> Path:
        """The aggregate manager's certificate (URN ``+authority+cm``)."""
        return self.data_dir / "am" / "am.pem"

    @property
    def am_key(self) -> Path:
        return self.data_dir / "am" / "am.key"

    @property
    def users_dir(self) -> Path:
        return self.data_dir / "users"

    @property
    def trust_dir(self) -> Path:
        return self.data_dir / "trusted_roots"

    @property
    def default_database(self) -> Path:
        """The SQLite file used when no database URL is given."""
        return self.data_dir / "ch" / "ch.sqlite"

    def user_files(self, username: str) -> tuple[Path, Path]:
        """``(certificate, key)`` paths of a member created here."""
        return self.users_dir / f"{username}.pem", self.users_dir / f"{username}.key"


def _split_hosts(hostnames: Sequence[str]) -> tuple[list[str], list[str]]:
    dns: list[str] = []
    ips: list[str] = []
    for host in hostnames:
        try:
            ips.append(str(ipaddress.ip_address(host)))
        except ValueError:
            if not re.match(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$", host):
                raise GeniError(GeniCode.BADARGS, f"not a host name or address: {host!r}") from None
            dns.append(host)
    return dns, ips


def init_authority(
    data_dir: str | os.PathLike[str],
    name: str = "primo",
    hostnames: Sequence[str] = ("localhost", "127.0.0.1"),
    first_member: tuple[str, str] | None = ("alice", "alice@example.org"),
    now: datetime | None = None,
    *,
    db_url: str | None = None,
) -> Authority:
    """Create a new authority in ``data_dir`` (the layout in the module docstring).

    ``first_member`` is ``(username, email)`` of a member created right away (None for none);
    it is recorded in the database ``db_url`` (default ``ch/ch.sqlite``). Refuses
    (ALREADYEXISTS) a directory that already holds an authority.
    """
    if not _AUTHORITY_NAME.match(name) or ":" in name:
        raise GeniError(GeniCode.BADARGS, f"authority name {name!r} must be letters, digits, '.' or '-'")
    now = now or utcnow()
    d = Path(data_dir)
    if (d / "ch" / "ma.pem").exists() or (d / "trusted_roots" / f"{name}-root.pem").exists():
        raise GeniError(GeniCode.ALREADYEXISTS, f"{d} already holds an authority")
    dns, ips = _split_hosts(hostnames)
    for sub, mode in (("trusted_roots", 0o755), ("ch", 0o700), ("am", 0o700), ("users", 0o700)):
        (d / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(d / sub, mode)

    root = create_root(Urn(name, "authority", "root"), now=now, lifetime=ROOT_LIFETIME)
    (d / "trusted_roots" / f"{name}-root.pem").write_text(root.gid.pem(with_chain=False), encoding="ascii")
    fd = os.open(d / "ch" / "root.key", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(root.key_pem())

    def authority_cert(kind: str, path: Path, *, server: bool) -> Identity:
        ident = issue(
            root,
            Urn(name, "authority", kind),
            now=now,
            lifetime=AUTHORITY_LIFETIME,
            ca=True,
            dns_names=dns if server else (),
            ip_addresses=ips if server else (),
        )
        ident.save(path.with_suffix(".pem"), path.with_suffix(".key"))
        return ident

    authority_cert("ma", d / "ch" / "ma", server=False)
    authority_cert("sa", d / "ch" / "sa", server=False)
    authority_cert("ch", d / "ch" / "ch", server=True)
    authority_cert("cm", d / "am" / "am", server=True)

    authority = Authority.load(d)
    if first_member is not None:
        username, email = first_member
        add_member(d, username, email, db_url=db_url, now=now)
    return authority


class Clearinghouse:
    """The clearinghouse's state: an authority, its database, and the MA, SA and registry over it.

    What the service and the administrator's commands share; it opens no socket. Creates the
    tables on first use.
    """

    def __init__(
        self,
        authority: Authority,
        engine: Engine,
        *,
        clock: Callable[[], datetime] = utcnow,
        max_project_lifetime: timedelta = timedelta(days=365),
        default_slice_lifetime: timedelta = timedelta(days=7),
        user_credential_lifetime: timedelta = timedelta(days=30),
    ):
        self.authority = authority
        self.engine = engine
        ChBase.metadata.create_all(engine)
        sessions = session_factory(engine)
        self.members = MemberAuthority(
            authority.name,
            authority.ma,
            authority.users_dir,
            sessions,
            clock=clock,
            credential_lifetime=user_credential_lifetime,
        )
        self.slices = SliceAuthority(
            authority.name,
            authority.sa,
            sessions,
            clock=clock,
            max_project_lifetime=max_project_lifetime,
            default_slice_lifetime=default_slice_lifetime,
        )
        self.registry = Registry(sessions, authority.trust, clock=clock)

    @classmethod
    def open(cls, data_dir: str | os.PathLike[str], db_url: str | None = None, **options: Any) -> Clearinghouse:
        """Load the authority in ``data_dir`` and connect to ``db_url`` (default ``ch/ch.sqlite``)."""
        authority = Authority.load(data_dir)
        engine = make_engine(db_url, default_sqlite=authority.default_database)
        try:
            return cls(authority, engine, **options)
        except BaseException:
            engine.dispose()
            raise

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    def __enter__(self) -> Clearinghouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def add_member(
    data_dir: str | os.PathLike[str],
    username: str,
    email: str,
    *,
    first_name: str = "",
    last_name: str = "",
    db_url: str | None = None,
    now: datetime | None = None,
) -> Member:
    """Create a member (``primo ch add-member``): writes ``users/<name>.{pem,key}``."""
    options: dict[str, Any] = {} if now is None else {"clock": lambda: now}
    with Clearinghouse.open(data_dir, db_url, **options) as ch:
        return ch.members.create_member(username, email, first_name=first_name, last_name=last_name)


def list_members(data_dir: str | os.PathLike[str], *, db_url: str | None = None) -> list[Member]:
    """Every member, by user name (``primo ch members``)."""
    with Clearinghouse.open(data_dir, db_url) as ch:
        return ch.members.members()


def register_aggregate(
    data_dir: str | os.PathLike[str],
    urn: str,
    url: str,
    cert_pem: str,
    *,
    name: str | None = None,
    description: str = "",
    api_versions: Mapping[str, str] | None = None,
    db_url: str | None = None,
) -> Aggregate:
    """Register (or re-register) an aggregate manager (``primo ch register-aggregate``)."""
    with Clearinghouse.open(data_dir, db_url) as ch:
        return ch.registry.register(urn, url, cert_pem, name=name, description=description, api_versions=api_versions)


def list_aggregates(data_dir: str | os.PathLike[str], *, db_url: str | None = None) -> list[Aggregate]:
    """Every registered aggregate, by URN."""
    with Clearinghouse.open(data_dir, db_url) as ch:
        return ch.registry.aggregates()


__all__ = [
    "AUTHORITY_LIFETIME",
    "ROOT_LIFETIME",
    "Authority",
    "Clearinghouse",
    "add_member",
    "init_authority",
    "list_aggregates",
    "list_members",
    "register_aggregate",
]
