"""The clearinghouse service: one HTTPS server carrying every clearinghouse API.

:class:`ChService` loads the authority in a data directory (made by
:func:`~primogeni.ch.authority.init_authority`), opens its database (``ch/ch.sqlite`` unless a
URL names another, e.g. PostgreSQL), and serves, with the ``ch`` certificate and client
certificates required::

    /CH                    Common Federation API v2 clearinghouse (service registry)
    /MA                    Common Federation API v2 member authority
    /SA                    Common Federation API v2 slice authority
    /protogeni/xmlrpc/sa   ProtoGENI slice authority
    /protogeni/xmlrpc/ch   ProtoGENI clearinghouse

All state is in the database and the data directory: a new service on the same directory and
database carries on where a stopped one left off.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime, timedelta

from primogeni.ch.api_chapi import CH_PATH, MA_PATH, SA_PATH, ChapiApi
from primogeni.ch.api_pg import PG_CH_PATH, PG_SA_PATH, PgApi
from primogeni.ch.authority import Authority, Clearinghouse
from primogeni.ch.calls import Authenticator
from primogeni.ch.members import MemberAuthority
from primogeni.ch.registry import Registry
from primogeni.ch.slices import SliceAuthority
from primogeni.geni.cred import Verifier
from primogeni.geni.times import utcnow
from primogeni.rpc import RpcServer

#: The routes a ChService serves, by short name.
PATHS = {"ch": CH_PATH, "ma": MA_PATH, "sa": SA_PATH, "pg_sa": PG_SA_PATH, "pg_ch": PG_CH_PATH}


class ChService:
    """The clearinghouse of the authority in ``data_dir``, served on ``host:port`` (0: any port).

    Use as a context manager (start, then stop and close the database), or call :meth:`start`
    / :meth:`serve_forever` and :meth:`stop`.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        db_url: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], datetime] = utcnow,
        max_project_lifetime: timedelta = timedelta(days=365),
        default_slice_lifetime: timedelta = timedelta(days=7),
        user_credential_lifetime: timedelta = timedelta(days=30),
        threads: int = 16,
    ):
        self.clearinghouse = Clearinghouse.open(
            data_dir,
            db_url,
            clock=clock,
            max_project_lifetime=max_project_lifetime,
            default_slice_lifetime=default_slice_lifetime,
            user_credential_lifetime=user_credential_lifetime,
        )
        try:
            authority = self.clearinghouse.authority
            self.verifier = Verifier(authority.trust, clock=clock)
            auth = Authenticator(self.verifier, self.clearinghouse.members)
            routes = {
                **ChapiApi(self.clearinghouse, auth, self.url).routes(),
                **PgApi(self.clearinghouse, auth).routes(),
            }
            self.server = RpcServer(
                routes,
                identity_cert=authority.ch_cert,
                identity_key=authority.ch_key,
                trust=authority.trust,
                host=host,
                port=port,
                threads=threads,
            )
        except BaseException:
            self.clearinghouse.close()
            raise

    @property
    def authority(self) -> Authority:
        return self.clearinghouse.authority

    @property
    def members(self) -> MemberAuthority:
        return self.clearinghouse.members

    @property
    def slices(self) -> SliceAuthority:
        return self.clearinghouse.slices

    @property
    def registry(self) -> Registry:
        return self.clearinghouse.registry

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address

    def url(self, path: str) -> str:
        """``https://host:port<path>`` of one of our routes."""
        return self.server.url(path)

    @property
    def urls(self) -> dict[str, str]:
        """Every route's URL by short name (``ch``, ``ma``, ``sa``, ``pg_sa``, ``pg_ch``)."""
        return {name: self.url(path) for name, path in PATHS.items()}

    def start(self) -> None:
        """Serve in background threads."""
        self.server.start()

    def serve_forever(self) -> None:
        """Serve in this thread until :meth:`stop` is called from another."""
        self.server.serve_forever()

    def stop(self) -> None:
        """Stop serving (calls in progress finish) and close the database."""
        try:
            self.server.stop()
        finally:
            self.clearinghouse.close()

    def __enter__(self) -> ChService:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["PATHS", "ChService"]
