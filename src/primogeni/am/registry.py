"""The agent registry: which node agents serve the AM's physical nodes, where, and whether they live.

Each node agent calls ``Register(info)`` at ``/primo/registry/1`` when it starts and then every
:data:`INTERVAL_S` seconds (its heartbeat), over mutual TLS with its own certificate
(``urn:publicid:IDN+<authority>+node+<name>``, issued under a root the AM trusts)::

    info = {node, kind, url, underlay, capacity, facts: {cpus, mem_total, disk_total, interfaces},
            features: {...}}

:class:`RegistryApi` is that route's handler: the caller must be a ``node`` of the AM's own
authority whose name is ``info["node"]``, and the node must be in the AM's inventory; the row in
``am_agents`` is then inserted or refreshed. :class:`Agents` is what the rest of the AM reads:
an agent is *alive* while its last registration is at most ``3 × interval`` old.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from primogeni.am.inventory import NODE_KINDS, Inventory
from primogeni.am.models import AgentRow
from primogeni.db import reader_factory
from primogeni.geni.cert import Gid
from primogeni.geni.codes import GeniCode
from primogeni.geni.errors import GeniError
from primogeni.geni.times import rfc3339, utcnow
from primogeni.geni.urn import Urn
from primogeni.rpc import envelope

log = logging.getLogger(__name__)

REGISTRY_PATH = "/primo/registry/1"
INTERVAL_S = 30.0
"""How often agents register (seconds); an agent silent for three intervals is not alive."""
_CACHE_S = 1.0  # how long a read of the table serves lookups (registrations in this process clear it)


@dataclass(frozen=True)
class AgentInfo:
    """One registered agent, as it last said."""

    name: str
    urn: str
    url: str
    underlay: str
    kind: str
    capacity: int
    facts: dict[str, Any] = field(default_factory=dict, compare=False)
    features: dict[str, Any] = field(default_factory=dict, compare=False)
    registered: datetime | None = None
    last_seen: datetime | None = None


class Agents:
    """The registry's table, read by the driver, placement and the advertisement."""

    def __init__(self, sessions: sessionmaker[Session], *, interval: float = INTERVAL_S,
                 clock: Callable[[], datetime] = utcnow):
        self._sessions = sessions
        self._readers = reader_factory(sessions.kw["bind"])
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, AgentInfo]] | None = None

    def _table(self) -> dict[str, AgentInfo]:
        with self._lock:
            cached = self._cached
        if cached is not None and time.monotonic() - cached[0] < _CACHE_S:
            return cached[1]
        read_at = time.monotonic()
        with self._readers() as session:
            table = {r.name: _info(r) for r in session.scalars(select(AgentRow))}
        with self._lock:
            self._cached = (read_at, table)
        return table

    def get(self, node: str) -> AgentInfo | None:
        return self._table().get(node)

    def url_of(self, node: str) -> str | None:
        info = self.get(node)
        return None if info is None else info.url

    def underlay_of(self, node: str) -> str | None:
        info = self.get(node)
        return None if info is None else info.underlay

    def alive(self, node: str) -> bool:
        """Registered, and seen within three registration intervals."""
        info = self.get(node)
        return info is not None and info.last_seen is not None and (
            self._clock() - info.last_seen <= timedelta(seconds=3 * self.interval))

    def all(self) -> list[AgentInfo]:
        return [info for _name, info in sorted(self._table().items())]

    def alive_nodes(self) -> frozenset[str]:
        return frozenset(info.name for info in self.all() if self.alive(info.name))

    def register(self, info: AgentInfo) -> AgentInfo:
        """Insert or refresh the agent's row; ``registered`` is kept from the first time."""
        now = self._clock()
        with self._sessions.begin() as session:
            row = session.get(AgentRow, info.name, with_for_update=True)
            if row is None:
                row = AgentRow(name=info.name, registered=now)
                session.add(row)
                log.info("agent %s registered at %s (underlay %s)", info.name, info.url, info.underlay)
            elif row.url != info.url or row.underlay != info.underlay:
                log.info("agent %s moved to %s (underlay %s)", info.name, info.url, info.underlay)
            row.urn, row.url, row.underlay, row.kind, row.capacity = (info.urn, info.url, info.underlay, info.kind,
                                                                     info.capacity)
            row.facts, row.features = json.dumps(info.facts), json.dumps(info.features)
            row.last_seen = now
            session.flush()
            saved = _info(row)
        with self._lock:
            self._cached = None
        return saved


def _info(row: AgentRow) -> AgentInfo:
    return AgentInfo(row.name, row.urn, row.url, row.underlay, row.kind, row.capacity, json.loads(row.facts),
                     json.loads(row.features), row.registered, row.last_seen)


class RegistryApi:
    """The ``/primo/registry/1`` route: ``Register(info)`` from node agents (module docstring)."""

    methods = ("Register",)

    def __init__(self, agents: Agents, inventory: Inventory, cm: Urn):
        self.agents = agents
        self.inventory = inventory
        self.cm = cm

    def __call__(self, method: str, params: tuple[Any, ...], caller: Gid) -> object:
        if method != "Register":
            raise GeniError(GeniCode.UNSUPPORTED, f"the agent registry has no method {method!r}")
        if len(params) != 1:
            raise GeniError(GeniCode.BADARGS, f"Register takes one struct (info), not {len(params)} arguments")
        saved = self.agents.register(self.check(params[0], caller))
        return envelope({"node": saved.name, "interval": self.agents.interval, "am": str(self.cm),
                         "registered": rfc3339(saved.registered) if saved.registered else ""})

    def check(self, info: object, caller: Gid) -> AgentInfo:
        """The registration ``info`` from ``caller``, checked; FORBIDDEN or BADARGS naming what is wrong."""
        urn = caller.urn
        if urn.type != "node":
            raise GeniError(GeniCode.FORBIDDEN, f"only node agents register here; the caller {urn} is a {urn.type!r}")
        if urn.authority != self.cm.authority:
            raise GeniError(GeniCode.FORBIDDEN, f"the caller {urn} is not a node of this aggregate's authority "
                                                f"{self.cm.authority!r}")
        if not isinstance(info, dict):
            raise GeniError(GeniCode.BADARGS, "Register: info must be a struct")
        node = info.get("node")
        if not isinstance(node, str) or not node:
            raise GeniError(GeniCode.BADARGS, "Register: info.node must be the node's name")
        if node != urn.name:
            raise GeniError(GeniCode.FORBIDDEN, f"the certificate of {urn} cannot register node {node!r}")
        phys = self.inventory.node(node)
        if phys is None:
            raise GeniError(GeniCode.FORBIDDEN, f"node {node!r} is not in this aggregate's inventory")
        url = info.get("url")
        parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme != "https" or not parts.hostname:
            raise GeniError(GeniCode.BADARGS, f"Register: info.url {url!r} must be an https:// URL")
        underlay = info.get("underlay")
        try:
            ipaddress.IPv4Address(underlay)
        except (ValueError, TypeError):
            raise GeniError(GeniCode.BADARGS, f"Register: info.underlay {underlay!r} is not an IPv4 address") from None
        kind = info.get("kind", phys.kind)
        if kind not in NODE_KINDS:
            raise GeniError(GeniCode.BADARGS, f"Register: info.kind {kind!r} is not one of {', '.join(NODE_KINDS)}")
        if kind != phys.kind:
            log.warning("agent %s says it is a %s node; the inventory says %s (the inventory wins)", node, kind,
                        phys.kind)
        capacity = info.get("capacity", phys.capacity)
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise GeniError(GeniCode.BADARGS, f"Register: info.capacity {capacity!r} must be a whole number of slots")
        facts, features = info.get("facts", {}), info.get("features", {})
        if not isinstance(facts, dict) or not isinstance(features, dict):
            raise GeniError(GeniCode.BADARGS, "Register: info.facts and info.features must be structs")
        try:
            json.dumps([facts, features])
        except (TypeError, ValueError) as exc:
            raise GeniError(GeniCode.BADARGS, f"Register: facts/features are not plain values: {exc}") from None
        return AgentInfo(node, str(urn), str(url), str(underlay), str(kind), capacity, facts, features)


__all__ = ["INTERVAL_S", "REGISTRY_PATH", "AgentInfo", "Agents", "RegistryApi"]
