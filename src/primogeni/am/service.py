"""``primo am``: the aggregate manager as a running service.

Wires the parts together from a data directory laid out by ``primo init``::

    DATA/trusted_roots/*.pem      roots whose members may call us
    DATA/am/am.pem, am.key        our identity (TLS server cert, ticket and sliver-credential signer)
    DATA/am/inventory.toml        the meta resources
    DATA/am/am.sqlite             state (unless a database URL is given)

and serves AM API v2 at ``/am/2.0``, v3 at ``/am/3.0``, and ProtoGENI CM v2 at
``/protogeni/xmlrpc/cm/2.0`` (and ``/protogeni/xmlrpc/cm``) on one HTTPS port. On start it
recovers from any crash (:meth:`AggregateManager.recover`); a reaper thread frees what expired,
reconciles with the driver, delivers pending events and lets the driver retry unfinished work.

``driver="agents"`` runs the substrate: the agent registry at ``/primo/registry/1`` (node agents
register there) and :class:`~primogeni.am.agent_driver.AgentDriver`, which calls the agents with
the AM's certificate; only nodes whose agent is alive are offered. The default records plans in
the database (:class:`~primogeni.am.driver.RecordingDriver`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from primogeni.am.agent_driver import AgentDriver
from primogeni.am.api_cm import CmApiV2
from primogeni.am.api_v2 import AmApiV2
from primogeni.am.api_v3 import AmApiV3
from primogeni.am.common import Context
from primogeni.am.core import AggregateManager
from primogeni.am.describe import advertise, slice_manifest
from primogeni.am.driver import RecordingDriver, ResourceDriver
from primogeni.am.events import EventQueue
from primogeni.am.inventory import load_inventory
from primogeni.am.models import Base
from primogeni.am.policy import Policy
from primogeni.am.registry import REGISTRY_PATH, Agents, RegistryApi
from primogeni.db import make_engine, redact, session_factory
from primogeni.geni.cert import Identity, TrustStore
from primogeni.geni.cred import Verifier
from primogeni.geni.times import utcnow
from primogeni.rpc import Handler, RpcServer

log = logging.getLogger(__name__)

PATHS = {"2": "/am/2.0", "3": "/am/3.0", "cm": "/protogeni/xmlrpc/cm/2.0"}


class AmService:
    def __init__(self, data_dir: Path, *, db_url: str | None = None, host: str = "127.0.0.1", port: int = 0,
                 driver: Callable[[sessionmaker[Session]], ResourceDriver] | str | None = None,
                 driver_delay: float = 0.0, reap_interval: float = 10.0, policy: Policy | None = None,
                 clock: Callable[[], datetime] = utcnow,
                 allocation_lifetime: timedelta = timedelta(minutes=10), threads: int = 16):
        self.data_dir = Path(data_dir)
        am_dir = self.data_dir / "am"
        self.identity = Identity.load(am_dir / "am.pem", am_dir / "am.key")
        self.trust = TrustStore.from_dir(self.data_dir / "trusted_roots")
        self.engine = make_engine(db_url, default_sqlite=am_dir / "am.sqlite")
        Base.metadata.create_all(self.engine)
        self.sessions = session_factory(self.engine)
        inventory = load_inventory(am_dir / "inventory.toml")
        self.agents: Agents | None = None
        if driver == "agents":
            self.agents = Agents(self.sessions, clock=clock)
            self.driver: ResourceDriver = AgentDriver(self.sessions, self.agents, cert=am_dir / "am.pem",
                                                      key=am_dir / "am.key", trust=self.trust, clock=clock)
        elif driver is None or driver == "recording":
            self.driver = RecordingDriver(self.sessions, delay=driver_delay, clock=clock)
        elif callable(driver):
            self.driver = driver(self.sessions)
        else:
            raise ValueError(f"unknown driver {driver!r} (agents, recording, or a factory)")
        self.am = AggregateManager(self.sessions, inventory, self.driver, cm=self.identity.gid.urn, clock=clock,
                                   policy=policy, allocation_lifetime=allocation_lifetime)
        if self.agents is not None:
            self.am.offered = self.agents.alive_nodes
        self.events = EventQueue(self.am)
        urls: dict[str, str] = {}
        self.ctx = Context(am=self.am, identity=self.identity, verifier=Verifier(self.trust, clock=clock), urls=urls,
                           clock=clock,
                           advertise=lambda available: advertise(self.am, clock(), available_only=available),
                           manifest=lambda slice_urn, urns: slice_manifest(self.am, slice_urn, urns, clock()),
                           events=self.events, monitor=getattr(self.driver, "monitor", None))
        cm = CmApiV2(self.ctx)
        routes: dict[str, Handler] = {PATHS["2"]: AmApiV2(self.ctx), PATHS["3"]: AmApiV3(self.ctx), PATHS["cm"]: cm,
                                      "/protogeni/xmlrpc/cm": cm}
        if self.agents is not None:
            routes[REGISTRY_PATH] = RegistryApi(self.agents, inventory, self.identity.gid.urn)
        self.server = RpcServer(routes, identity_cert=am_dir / "am.pem", identity_key=am_dir / "am.key",
                                trust=self.trust, host=host, port=port, threads=threads)
        urls.update({k: self.server.url(p) for k, p in PATHS.items()})
        if self.agents is not None:
            urls["registry"] = self.server.url(REGISTRY_PATH)
        self.reap_interval = reap_interval
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        log.info("AM %s, state in %s", self.identity.gid.urn, redact(str(self.engine.url)))

    @property
    def urls(self) -> dict[str, str]:
        return dict(self.ctx.urls)

    def housekeeping(self) -> None:
        """One reaper pass: free what expired, reconcile, deliver pending events, let the driver retry."""
        freed = self.am.reap()
        if freed:
            log.info("reaper freed %d expired sliver(s)", freed)
        self.am.reconcile()
        self.events.deliver_pending()
        sweep = getattr(self.driver, "sweep", None)
        if sweep is not None:
            sweep()

    def _reap_loop(self) -> None:
        while not self._stop.wait(self.reap_interval):
            try:
                self.housekeeping()
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
        close = getattr(self.driver, "close", None)
        if close is not None:
            close()
        self.engine.dispose()

    def __enter__(self) -> AmService:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
