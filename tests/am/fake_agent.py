"""A fake node agent for the AM's tests: the real agent protocol over real TLS, state in memory.

:class:`FakeAgent` serves ``/primo/agent/1`` with :class:`primogeni.rpc.RpcServer` and a node
certificate issued by the test authority's root, records every call, keeps what it was told, and
can be told to fail a method (``fail["ProvisionSliver"] = "disk full"``; in a batch that fails each
sliver item) or to go away (:meth:`FakeAgent.stop`; a new one on the same port comes back). With
``batch=False`` it is an older agent without ``ProvisionMany``/``ReleaseMany`` (UNSUPPORTED). :meth:`FakeAgent.register`
calls the AM's registry with the node's own certificate, as ``primo agent`` does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import pytest

from primogeni.agent.spec import EventSpec, LinkSpec, SliverSpec
from primogeni.geni.cert import Gid, Identity, TrustStore, issue
from primogeni.geni.codes import GeniCode
from primogeni.geni.errors import GeniError
from primogeni.geni.urn import Urn
from primogeni.rpc import RpcServer, client, envelope

from .conftest import NOW, Federation

AM_URN = "urn:publicid:IDN+primo+authority+cm"
GIB = 1 << 30


class Authority(Protocol):
    """What a fake agent needs of the test authority: its root (signs node certificates) and a directory."""

    root: Identity
    base: Path


def node_identity(fed: Authority, name: str, authority: str = "primo") -> tuple[Path, Path]:
    """Certificate and key files of node ``name`` (issued by the authority's root), made once."""
    cert, key = fed.base / f"node-{authority}-{name}.pem", fed.base / f"node-{authority}-{name}.key"
    if not cert.exists():
        ident = issue(fed.root, Urn(authority, "node", name), now=NOW - timedelta(days=1),
                      lifetime=timedelta(days=365), ca=False, ip_addresses=["127.0.0.1"])
        assert isinstance(ident, Identity)
        ident.save(cert, key)
    return cert, key


@dataclass
class FakeAgent:
    """One fake physical node (see the module docstring)."""

    fed: Authority
    name: str
    underlay: str
    kind: str = "cluster"
    port: int = 0
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    slivers: dict[str, SliverSpec] = field(default_factory=dict)
    links: dict[str, LinkSpec] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)
    events: dict[int, EventSpec] = field(default_factory=dict)
    fail: dict[str, str] = field(default_factory=dict)
    batch: bool = True

    def __post_init__(self) -> None:
        self.methods = self.METHODS + (("ProvisionMany", "ReleaseMany") if self.batch else ())
        self.cert, self.key = node_identity(self.fed, self.name)
        self.trust = TrustStore.from_certs([self.fed.root.gid.cert])
        self._lock = threading.Lock()
        self.server = RpcServer({"/primo/agent/1": self}, identity_cert=self.cert, identity_key=self.key,
                                trust=self.trust, port=self.port)
        self.port = self.server.address[1]
        self.url = self.server.url("/primo/agent/1")
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def revive(self) -> FakeAgent:
        """A new agent process on the same port with the same state (an agent restart)."""
        self.stop()
        for _ in range(50):
            try:
                return FakeAgent(self.fed, self.name, self.underlay, self.kind, self.port, [], dict(self.slivers),
                                 dict(self.links), set(self.running), dict(self.events), {}, self.batch)
            except OSError:  # the port is still being released
                time.sleep(0.05)
        raise AssertionError(f"cannot listen on port {self.port} again")

    def info(self, **changes: Any) -> dict[str, Any]:
        return {"node": self.name, "kind": self.kind, "url": self.url, "underlay": self.underlay, "capacity": 8,
                "facts": {"cpus": 2, "mem_total": float(4 * GIB), "disk_total": float(100 * GIB),
                          "interfaces": [{"name": "primo-ul", "role": "underlay", "address": self.underlay}]},
                "features": {"vxlan": True, "gretap": False}, **changes}

    def register(self, registry_url: str, *, cert: tuple[Path, Path] | None = None, **changes: Any) -> dict[str, Any]:
        """``Register(info)`` on the AM with this node's certificate (or ``cert``); the raw answer."""
        c, k = cert or (self.cert, self.key)
        proxy = client(registry_url, cert=c, key=k, trust=self.trust)
        try:
            answer: dict[str, Any] = proxy.Register(self.info(**changes))
        finally:
            proxy("close")()
        return answer

    def called(self, method: str) -> list[tuple[Any, ...]]:
        return [args for m, args in self.calls if m == method]

    # -- the agent protocol

    METHODS = ("GetVersion", "ProvisionSliver", "ProvisionLink", "Start", "Stop", "Release", "Status", "Monitor",
               "Event")

    def __call__(self, method: str, params: tuple[Any, ...], caller: Gid) -> object:
        if str(caller.urn) != AM_URN:
            raise GeniError(GeniCode.FORBIDDEN, f"{caller.urn} may not call this node agent")
        with self._lock:
            self.calls.append((method, params))
            if method in self.fail:
                raise GeniError(GeniCode.ERROR, f"{method}: {self.fail[method]}")
            return envelope(getattr(self, "_" + method.lower())(*params))

    def _item(self, method: str, *args: Any) -> str:
        """One item of a batch: its state, or its error as ``"<CODE>: <reason>"`` (as the agent answers)."""
        try:
            if method in self.fail:
                raise GeniError(GeniCode.ERROR, f"{method}: {self.fail[method]}")
            answer = getattr(self, "_" + method.lower())(*args)
        except GeniError as exc:
            return f"{exc.code.name}: {exc.reason}"
        return str(answer["state"]) if isinstance(answer, dict) else "released"

    def _provisionmany(self, slivers: list[dict[str, Any]], links: list[dict[str, Any]]) -> dict[str, str]:
        answer = {str(d["urn"]): self._item("ProvisionSliver", d) for d in slivers}
        return answer | {str(d["urn"]): self._item("ProvisionLink", d) for d in links}

    def _releasemany(self, urns: list[str]) -> dict[str, str]:
        return {u: self._item("Release", u) for u in urns}

    def _getversion(self) -> dict[str, Any]:
        return {"node": self.name, "kind": self.kind, "underlay": self.underlay}

    def _provisionsliver(self, data: dict[str, Any]) -> dict[str, Any]:
        spec = SliverSpec.from_dict(data)
        self.slivers[spec.urn] = spec
        return {"urn": spec.urn, "state": "stopped"}

    def _provisionlink(self, data: dict[str, Any]) -> dict[str, Any]:
        spec = LinkSpec.from_dict(data)
        for urn, _name in spec.members:
            if urn not in self.slivers:
                raise GeniError(GeniCode.BADARGS, f"link {spec.urn}: member {urn} is not on {self.name}")
        self.links[spec.urn] = spec
        return {"urn": spec.urn, "state": "ready"}

    def _held(self, urn: str) -> None:
        if urn not in self.slivers:
            raise GeniError(GeniCode.SEARCHFAILED, f"no sliver {urn} on node {self.name}")

    def _start(self, urn: str) -> str:
        self._held(urn)
        self.running.add(urn)
        return "ready"

    def _stop(self, urn: str) -> str:
        self._held(urn)
        self.running.discard(urn)
        return "stopped"

    def _release(self, urn: str) -> bool:
        self.slivers.pop(urn, None)
        self.links.pop(urn, None)
        self.running.discard(urn)
        return True

    def _state(self, urn: str) -> str:
        return "ready" if urn in self.links or urn in self.running else "stopped"

    def _status(self, urns: list[str]) -> dict[str, str]:
        held = [*self.slivers, *self.links]
        return {u: self._state(u) for u in (held if not urns else [u for u in urns if u in held])}

    def _monitor(self) -> dict[str, Any]:
        node = {"cpu_percent": 12.5, "load1": 0.5, "load5": 0.4, "load15": 0.3, "mem_total": float(4 * GIB),
                "mem_available": float(3 * GIB), "disk_total": float(100 * GIB), "disk_free": float(60 * GIB),
                "cpus": 2}
        slivers = {u: {"cpu_ns": float(5_000_000_000 + s.slot), "memory_bytes": 1_048_576 * (s.slot + 1)}
                   for u, s in self.slivers.items()}
        ifaces = {f"primo{s.slot}e{k:x}": {"rx_bytes": 100 + k, "tx_bytes": float(3 * GIB), "rx_packets": 1,
                                           "tx_packets": 2}
                  for s in self.slivers.values() for k in range(len(s.interfaces))}
        return {"node": node, "slivers": slivers, "interfaces": ifaces}

    def _event(self, data: dict[str, Any]) -> dict[str, Any]:
        spec = EventSpec.from_dict(data)
        if spec.event_id in self.events:
            return {"event_id": spec.event_id, "state": "duplicate"}
        if spec.target not in self.slivers and spec.target not in self.links:
            return {"event_id": spec.event_id, "state": "failed", "detail": f"{spec.target} is not held here"}
        self.events[spec.event_id] = spec
        return {"event_id": spec.event_id, "state": "scheduled" if spec.at > time.time() else "applied"}


# -- an AM driving fake agents ---------------------------------------------------------------------

AGENTS = (("pc1", "10.254.0.11", "cluster"), ("pc2", "10.254.0.12", "cluster"), ("shared1", "10.254.0.13", "shared"))
GENI3 = {"type": "GENI", "version": "3"}
USERS = [{"urn": "urn:publicid:IDN+primo+user+alice", "keys": ["ssh-ed25519 AAAAC3Nza alice@laptop"]}]


def slice_urn(name: str) -> str:
    return f"urn:publicid:IDN+primo:proj+slice+{name}"


def code(answer: dict[str, Any]) -> int:
    return int(answer["code"]["geni_code"])


def rspec(nodes: dict[str, str | None], links: dict[str, list[str]] | None = None) -> str:
    """A request: ``nodes`` client_id → bound physical node (or None), one interface per link it is on."""
    links = links or {}
    parts = []
    for n, comp in nodes.items():
        bound = f' component_id="urn:publicid:IDN+primo+node+{comp}"' if comp else ""
        ifaces = "".join(f'<interface client_id="{n}:{lk}"/>' for lk, members in links.items() if n in members)
        parts.append(f'<node client_id="{n}" exclusive="false"{bound}><sliver_type name="emulated-host"/>'
                     f"{ifaces}</node>")
    for lk, members in links.items():
        refs = "".join(f'<interface_ref client_id="{m}:{lk}"/>' for m in members)
        parts.append(f'<link client_id="{lk}">{refs}</link>')
    return '<rspec xmlns="http://www.geni.net/resources/rspec/3" type="request">' + "".join(parts) + "</rspec>"


@dataclass
class AgentBed:
    fed: Federation
    service: Any  # AmService
    agents: dict[str, FakeAgent]

    def am(self, user: str = "alice") -> Any:
        from .conftest import proxy

        return proxy(self.fed, self.service.urls["3"], user)

    def cred(self, name: str, user: str = "alice") -> list[dict[str, str]]:
        from .conftest import v3

        return [v3(self.fed.slice_cred(user, name))]

    def create(self, name: str, request: str, *, start: bool = True) -> dict[str, Any]:
        """Allocate and provision (and start) slice ``name``; the Provision answer's value."""
        am, cred = self.am(), self.cred(name)
        answer = am.Allocate(slice_urn(name), cred, request, {})
        assert code(answer) == 0, answer["output"]
        answer = am.Provision([slice_urn(name)], cred, {"geni_users": USERS, "geni_rspec_version": GENI3})
        assert code(answer) == 0, answer["output"]
        if start:
            started = am.PerformOperationalAction([slice_urn(name)], cred, "geni_start", {})
            assert code(started) == 0, started["output"]
        value: dict[str, Any] = answer["value"]
        return value

    def revive(self, name: str) -> FakeAgent:
        self.agents[name] = self.agents[name].revive()
        return self.agents[name]


@pytest.fixture
def agent_bed(federation: Federation, data_dir: Path, tmp_path: Path) -> Iterator[AgentBed]:
    """An AM with ``--driver agents`` on SQLite and three registered fake agents (pc1, pc2, shared1)."""
    from primogeni.am.service import AmService

    service = AmService(data_dir, db_url=f"sqlite:///{tmp_path / 'am.sqlite'}", driver="agents", reap_interval=3600)
    service.start()
    bed = AgentBed(federation, service, {})
    try:
        for name, underlay, kind in AGENTS:
            bed.agents[name] = FakeAgent(federation, name, underlay, kind)
            answer = bed.agents[name].register(service.urls["registry"])
            assert code(answer) == 0, answer["output"]
        yield bed
    finally:
        for agent in bed.agents.values():
            agent.stop()
        service.stop()
