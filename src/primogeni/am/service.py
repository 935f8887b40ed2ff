"""``primo am``: the aggregate manager as a running service.

Wires the parts together from a data directory laid out by ``primo init``::

    DATA/trusted_roots/*.pem      roots whose members may call us
    DATA/am/am.pem, am.key        our identity (TLS server cert, ticket and sliver-credential signer)
    DATA/am/inventory.toml        the meta resources
    DATA/am/am.sqlite             state (unless a database URL is given)

and serves AM API v2 at ``/am/2.0``, v3 at ``/am/3.0``, and ProtoGENI CM v2 at
``/protogeni/xmlrpc/cm/2.0`` (and ``/protogeni/xmlrpc/cm``) on one HTTPS port. On start it
recovers from any crash (:meth:`AggregateManager.recover`); a reaper thread frees what expired.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from primogeni.am.api_cm import CmApiV2
from primogeni.am.api_v2 import AmApiV2
from primogeni.am.api_v3 import AmApiV3
from primogeni.am.common import Context
from primogeni.am.core import AggregateManager
from primogeni.am.describe import advertise, slice_manifest
from primogeni.am.driver import RecordingDriver, ResourceDriver
from primogeni.am.inventory import load_inventory
from primogeni.am.models import Base
from primogeni.am.policy import Policy
from primogeni.db import make_engine, redact, session_factory
from primogeni.geni.cert import Identity, TrustStore
from primogeni.geni.cred import Verifier
from primogeni.rpc import Handler, RpcServer

log = logging.getLogger(__name__)

PATHS = {"2": "/am/2.0", "3": "/am/3.0", "cm": "/protogeni/xmlrpc/cm/2.0"}


def _utcnow() -> datetime:
    return datetime.now(UTC)


class AmService:
    def __init__(self, data_dir: Path, *, db_url: str | None = None, host: str = "127.0.0.1", port: int = 0,
                 driver: Callable[[sessionmaker[Session]], ResourceDriver] | None = None,
                 driver_delay: float = 0.0, reap_interval: float = 10.0, policy: Policy | None = None,
                 clock: Callable[[], datetime] = _utcnow,
                 allocation_lifetime: timedelta = timedelta(minutes=10), threads: int = 16):
        self.data_dir = Path(data_dir)
        am_dir = self.data_dir / "am"
        self.identity = Identity.load(am_dir / "am.pem", am_dir / "am.key")
        self.trust = TrustStore.from_dir(self.data_dir / "trusted_roots")
        self.engine = make_engine(db_url, default_sqlite=am_dir / "am.sqlite")
        Base.metadata.create_all(self.engine)
        self.sessions = session_factory(self.engine)
        inventory = load_inventory(am_dir / "inventory.toml")
        self.driver = driver(self.sessions) if driver else RecordingDriver(self.sessions, delay=driver_delay,
                                                                           clock=clock)
        self.am = AggregateManager(self.sessions, inventory, self.driver, cm=self.identity.gid.urn, clock=clock,
                                   policy=policy, allocation_lifetime=allocation_lifetime)
        urls: dict[str, str] = {}
        self.ctx = Context(am=self.am, identity=self.identity, verifier=Verifier(self.trust, clock=clock), urls=urls,
                           clock=clock,
                           advertise=lambda available: advertise(self.am, clock(), available_only=available),
                           manifest=lambda slice_urn, urns: slice_manifest(self.am, slice_urn, urns, clock()))
        cm = CmApiV2(self.ctx)
        routes: dict[str, Handler] = {PATHS["2"]: AmApiV2(self.ctx), PATHS["3"]: AmApiV3(self.ctx), PATHS["cm"]: cm,
                  "/protogeni/xmlrpc/cm": cm}
        self.server = RpcServer(routes, identity_cert=am_dir / "am.pem", identity_key=am_dir / "am.key",
                                trust=self.trust, host=host, port=port, threads=threads)
        urls.update({k: self.server.url(p) for k, p in PATHS.items()})
        self.reap_interval = reap_interval
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        log.info("AM %s, state in %s", self.identity.gid.urn, redact(str(self.engine.url)))

    @property
    def urls(self) -> dict[str, str]:
        return dict(self.ctx.urls)

    def _reap_loop(self) -> None:
        while not self._stop.wait(self.reap_interval):
            try:
                freed = self.am.reap()
                if freed:
                    log.info("reaper freed %d expired sliver(s)", freed)
                self.am.reconcile()
            except Exception:  # the reaper must outlive a transient database error; it is logged
                log.exception("reaper pass failed")

    def _prepare(self) -> None:
        """Before serving: roll back what a crash cut short, free what expired, start the reaper."""
        self.am.recover()
        self.am.reap()
        self._reaper = threading.Thread(target=self._reap_loop, name="am-reaper", daemon=True)
        self._reaper.start()

    def start(self) -> None:
        self._prepare()
        self.server.start()

    def serve_forever(self) -> None:
        self._prepare()
        self.server.serve_forever()

    def stop(self) -> None:
        self._stop.set()
        self.server.stop()
        if self._reaper is not None:
            self._reaper.join(timeout=5)
        self.engine.dispose()

    def __enter__(self) -> AmService:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
