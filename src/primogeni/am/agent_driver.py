"""The AM's resource driver for the substrate: turns sliver plans into agent calls.

:class:`AgentDriver` implements :class:`~primogeni.am.driver.ResourceDriver` by talking to the node
agents (XML-RPC over mutual TLS at ``https://<underlay>:<port>/primo/agent/1``, with the AM's own
certificate). A node sliver becomes a ``SliverSpec`` for its physical node; a link a ``LinkSpec``
for every node that holds one of its ends (members: that node's ends; remotes: the other nodes'
underlay addresses). Provisioning sends each node its specs in one ``ProvisionMany`` (release:
one ``ReleaseMany``), big batches in chunks (:mod:`primogeni.am.agent_rpc`); an agent that answers
UNSUPPORTED gets the single calls (``ProvisionSliver``, ``ProvisionLink``, ``Release``). The
agent's certificate must carry the node's URN (``urn:publicid:IDN+<authority>+node+<name>``)
under a root the AM trusts.

Where each sliver and link went is written to ``am_driver_links`` *before* the agents are called,
so stop and release reach the right nodes after an AM restart or crash; a release an agent could
not take (it was down) stays there as ``releasing`` and :meth:`AgentDriver.sweep` (the reaper)
retries it. Calls to several agents run in parallel on a thread pool, each thread keeping one
keep-alive connection per agent.

What "held" means when an agent cannot be asked: its slivers **count as held** — unknown is not
lost — so the reconcile pass never fails a slice because an agent was briefly down; ``status``
answers ``"failed"`` for them (the driver cannot vouch for the sliver). Link slivers have no
start/stop of their own (a link is up once provisioned; events take it down and up).
"""

from __future__ import annotations

import dataclasses
import http.client
import ipaddress
import json
import logging
import re
import ssl
import threading
import time
import xmlrpc.client
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from primogeni.agent.names import exp_device
from primogeni.agent.spec import EventSpec, IfaceSpec, LinkSpec, LoginSpec, SliverSpec, SpecError
from primogeni.am.agent_rpc import BATCH_ITEM_S, RELEASE_ITEMS, AgentLacks, AgentTransport, AgentUnreachable, chunks
from primogeni.am.driver import EventRefused, SliverPlan
from primogeni.am.models import DriverSliverRow
from primogeni.am.registry import Agents
from primogeni.db import reader_factory
from primogeni.geni.cert import Gid, TrustStore
from primogeni.geni.codes import GeniCode
from primogeni.geni.errors import GeniError
from primogeni.geni.times import utcnow
from primogeni.geni.urn import Urn
from primogeni.rpc import client_context

log = logging.getLogger(__name__)

AGENT_PATH = "/primo/agent/1"
MONITOR_TTL_S = 5.0  # Monitor answers are reused for this long
PROVISIONED = frozenset({"ready", "stopped", "failed"})  # an item's answer that is a state, not an error
_HOSTNAME_BAD = re.compile(r"[^A-Za-z0-9-]")


def host_name(client_id: str) -> str:
    """A sliver's host name from its client_id: letters, digits and '-' only, ≤ 63 characters."""
    name = _HOSTNAME_BAD.sub("-", client_id).strip("-")[:63]
    return name or "host"


def _prefixlen(netmask: str | None) -> int:
    if not netmask:
        return 24  # an address given without a netmask: assume the usual /24
    return ipaddress.IPv4Network(f"0.0.0.0/{netmask}").prefixlen


class AgentDriver:
    """The substrate's :class:`~primogeni.am.driver.ResourceDriver` (see the module docstring).

    ``cert``/``key`` are the AM's identity (agents accept only it); ``trust`` holds the roots agents'
    certificates chain to. ``timeout`` (seconds) bounds each call that changes something; probes
    (Status, Monitor) use ``probe_timeout``. Every call runs on a pool of ``workers`` threads, each keeping one
    keep-alive connection per agent, so an agent never sees more than ``workers`` connections from
    the AM (keep it below the agent server's thread count, 16 by default: idle keep-alive
    connections hold a server thread each).
    """

    def __init__(self, sessions: sessionmaker[Session], agents: Agents, *, cert: Path, key: Path, trust: TrustStore,
                 timeout: float = 60.0, probe_timeout: float = 10.0, workers: int = 8, authority: str | None = None,
                 clock: Callable[[], datetime] = utcnow):
        self._sessions = sessions
        self._readers = reader_factory(sessions.kw["bind"])
        self.agents = agents
        # agents are nodes of the AM's own authority (their registration was checked against it)
        self.authority = authority or Gid.from_pem(Path(cert).read_bytes()).urn.authority
        self.timeout = timeout
        self.probe_timeout = probe_timeout
        self._clock = clock
        # the peer is identified by its node URN (AgentTransport), not its host name
        self._context = client_context(cert=cert, key=key, trust=trust, check_hostname=False)
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="agent-rpc")
        self._monitor_lock = threading.Lock()
        self._monitor: dict[str, tuple[float, dict[str, Any]]] = {}
        self._seen: dict[str, set[str]] = {}  # URN → nodes whose Status reported it (for orphans)
        # the last slice's host list, named and on the wire (plans of one slice share one tuple)
        self._hosts_named: tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]] | None = None
        self._slice_wire: tuple[tuple[tuple[str, str], ...], tuple[int, ...], list[list[str]], list[int]] | None = None

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    # -- calling agents ------------------------------------------------------------------------

    def _proxy(self, node: str, url: str, timeout: float) -> xmlrpc.client.ServerProxy:
        """This pool thread's proxy for ``node`` (one keep-alive connection), set to ``timeout``."""
        proxies: dict[str, tuple[str, xmlrpc.client.ServerProxy, AgentTransport]] = (
            self._local.__dict__.setdefault("proxies", {}))
        found = proxies.get(node)
        if found is None or found[0] != url:
            if found is not None:
                found[1]("close")()
            transport = AgentTransport(self._context, timeout, str(Urn(self.authority, "node", node)))
            found = (url, xmlrpc.client.ServerProxy(url, transport=transport, allow_none=True, use_builtin_types=True),
                     transport)
            proxies[node] = found
        found[2].timeout = timeout
        return found[1]

    def _open(self, node: str) -> bool:
        """Whether this thread holds an open connection to ``node`` (kept alive from an earlier call)."""
        found = self._local.__dict__.get("proxies", {}).get(node)
        connection = found[2]._connection[1] if found is not None else None
        return isinstance(connection, http.client.HTTPConnection) and connection.sock is not None

    def _drop(self, node: str) -> None:
        found = self._local.__dict__.get("proxies", {}).pop(node, None)
        if found is not None:
            found[1]("close")()

    def _call_here(self, node: str, method: str, args: tuple[Any, ...], probe: bool,
                   timeout: float | None = None) -> Any:
        url = self.agents.url_of(node)
        if url is None:
            raise AgentUnreachable(node, "no agent has registered for it")
        for attempt in (1, 2):
            proxy = self._proxy(node, url, timeout or (self.probe_timeout if probe else self.timeout))
            reused = self._open(node)
            try:
                answer = getattr(proxy, method)(*args)
                break
            except (OSError, http.client.HTTPException, xmlrpc.client.ProtocolError, ssl.SSLError) as exc:
                self._drop(node)
                # A kept-alive connection the agent dropped (it restarted): once more on a fresh one
                # (every agent call is idempotent). A failure on a fresh connection is the answer.
                if not reused or attempt == 2 or isinstance(exc, TimeoutError):
                    raise AgentUnreachable(node, f"{method}: {exc}") from None
            except xmlrpc.client.Fault as exc:
                raise GeniError(GeniCode.ERROR, f"node {node}: {method}: XML-RPC fault {exc.faultString}") from None
        code = answer.get("code") if isinstance(answer, dict) else None
        if isinstance(code, dict):
            code = code.get("geni_code")
        if not isinstance(code, int):
            raise GeniError(GeniCode.ERROR, f"node {node}: {method} answered without a GENI envelope")
        if code == GeniCode.UNSUPPORTED:
            raise AgentLacks(node, method, str(answer.get("output", "")))
        if code != 0:
            raise GeniError(GeniCode.ERROR, f"node {node}: {answer.get('output') or f'{method} answered code {code}'}")
        return answer.get("value")

    def call(self, node: str, method: str, *args: Any, probe: bool = False) -> Any:
        """``method(*args)`` on ``node``'s agent; its value, or GeniError "node N: …" (AgentUnreachable)."""
        return self._pool.submit(self._call_here, node, method, args, probe).result()

    def _each(self, calls: Sequence[tuple[str, str, tuple[Any, ...]]], *, probe: bool = False,
              timeout: float | None = None) -> list[Any]:
        """Run ``(node, method, args)`` calls in parallel; each result or the GeniError it raised, in order."""
        def one(call: tuple[str, str, tuple[Any, ...]]) -> Any:
            node, method, args = call
            try:
                return self._call_here(node, method, args, probe, timeout)
            except GeniError as exc:
                return exc

        return list(self._pool.map(one, calls))

    def _many(self, method: str, calls: Sequence[tuple[str, tuple[Any, ...], Sequence[str]]], done: Collection[str]
              ) -> tuple[dict[tuple[str, str], GeniError], set[str]]:
        """Batch calls ``(node, args, urns)`` of ``method`` in parallel: the items that failed, by node
        and URN (an answer not in ``done``, or the whole call's error), and the nodes lacking ``method``."""
        longest = max((len(urns) for _n, _a, urns in calls), default=0)
        results = self._each([(n, method, a) for n, a, _u in calls], timeout=self.timeout + BATCH_ITEM_S * longest)
        failed: dict[tuple[str, str], GeniError] = {}
        lacking: set[str] = set()
        for (node, _args, urns), result in zip(calls, results, strict=True):
            if isinstance(result, AgentLacks):
                lacking.add(node)
                continue
            for urn in urns:
                answer = result.get(urn) if isinstance(result, dict) else None
                if isinstance(result, GeniError):
                    failed[node, urn] = result
                elif answer not in done:
                    failed[node, urn] = GeniError(GeniCode.ERROR, f"node {node}: {urn}: {answer or 'not answered'}")
        return failed, lacking

    @staticmethod
    def _raise_first(results: Iterable[Any]) -> None:
        errors = [r for r in results if isinstance(r, GeniError)]
        if errors:
            if len(errors) > 1:
                log.warning("%d agent calls failed; first: %s", len(errors), errors[0].reason)
            raise errors[0]

    # -- records ---------------------------------------------------------------------------------

    def _record(self, entries: Sequence[tuple[str, str, str, list[str], dict[str, Any]]]) -> None:
        now = self._clock()
        with self._sessions.begin() as session:
            found = {r.urn: r for r in session.scalars(select(DriverSliverRow).where(
                DriverSliverRow.urn.in_([e[0] for e in entries])))} if entries else {}
            for urn, kind, slice_urn, nodes, detail in entries:
                row = found.get(urn)
                if row is None:
                    row = DriverSliverRow(urn=urn)
                    session.add(row)
                row.kind, row.slice_urn, row.nodes, row.detail = kind, slice_urn, json.dumps(nodes), json.dumps(detail)
                row.state, row.updated = "held", now

    def _records(self, urns: Collection[str] | None = None) -> dict[str, DriverSliverRow]:
        query = select(DriverSliverRow)
        if urns is not None:
            if not urns:
                return {}
            query = query.where(DriverSliverRow.urn.in_(list(urns)))
        with self._readers() as session:
            rows = list(session.scalars(query))
            for row in rows:
                session.expunge(row)
        return {r.urn: r for r in rows}

    @staticmethod
    def nodes_of(row: DriverSliverRow) -> list[str]:
        return list(json.loads(row.nodes))

    def placed(self, urn: str) -> list[str]:
        """The physical nodes the driver put ``urn`` on (empty when it holds nothing for it)."""
        row = self._records([urn]).get(urn)
        return [] if row is None else self.nodes_of(row)

    # -- specs -----------------------------------------------------------------------------------

    def _underlay(self, node: str) -> str:
        address = self.agents.underlay_of(node)
        if address is None:
            raise GeniError(GeniCode.ERROR, f"node {node}: no agent has registered for it")
        return address

    def sliver_spec(self, plan: SliverPlan) -> SliverSpec:
        """The agent's spec of a node sliver plan; GeniError naming node and sliver if it cannot be one."""
        where = f"node {plan.component}: sliver {plan.client_id!r}"
        if plan.ports is None or not plan.slots:
            raise GeniError(GeniCode.ERROR, f"{where}: the plan has no slot or port range")
        peers = tuple(a for a in (self.agents.underlay_of(n) for n in plan.vsys_peers) if a is not None)
        model = plan.model or {}
        try:
            ifaces = tuple(IfaceSpec(i.name, i.mac, f"{i.address}/{_prefixlen(i.netmask)}" if i.address else None,
                                     i.link_sliver) for i in plan.interfaces)
            return SliverSpec(urn=plan.sliver_urn, slice_urn=plan.slice_urn, hostname=host_name(plan.client_id),
                              slot=plan.slots[0], ports=plan.ports, interfaces=ifaces,
                              logins=tuple(LoginSpec(x.username, x.keys) for x in plan.logins),
                              hosts=self._hosts(plan.hosts), vsys_keys=plan.vsys_keys,
                              vsys_peers=peers, kind=plan.sliver_type or "emulated-host",
                              memory_mb=self._memory_share(plan), routes=plan.routes,
                              model_format=str(model.get("format", "")), model=str(model.get("text", "")),
                              attach=plan.attach)
        except (SpecError, ValueError) as exc:
            raise GeniError(GeniCode.ERROR, f"{where}: {exc}") from None

    def _memory_share(self, plan: SliverPlan) -> int:
        """The sliver's memory limit: its slots' share of the node's memory (0 when the agent did not say).

        CPU gets no hard cap: every sliver has its own cgroup with the default weight, so the
        kernel's scheduler shares the node's CPUs fairly among busy slivers and lends idle time out
        (PlanetLab's fair share); a cap would waste idle cores.
        """
        info = self.agents.get(plan.component)
        if info is None or not info.capacity:
            return 0
        try:
            total = float(info.facts.get("mem_total", 0))
        except (TypeError, ValueError):
            return 0
        return int(total / 2**20 * len(plan.slots) / info.capacity)

    def wire(self, spec: SliverSpec) -> dict[str, Any]:
        """``spec.to_dict()``, with the slice's host list and tunnel keys converted once per slice.

        (Every sliver of a slice lists every host and every key of it: converting those lists for each
        sliver made provisioning quadratic in the slice's size.)
        """
        cached = self._slice_wire
        if cached is None or cached[0] is not spec.hosts or cached[1] is not spec.vsys_keys:
            cached = self._slice_wire = (spec.hosts, spec.vsys_keys, [[h, a] for h, a in spec.hosts],
                                         list(spec.vsys_keys))
        data = dataclasses.replace(spec, hosts=(), vsys_keys=()).to_dict()
        data["hosts"], data["vsys_keys"] = cached[2], cached[3]
        return data

    def _hosts(self, hosts: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        """``hosts`` with valid host names; the same tuple object for the same plan tuple (see :meth:`wire`)."""
        cached = self._hosts_named
        if cached is None or cached[0] is not hosts:
            cached = self._hosts_named = (hosts, tuple((host_name(h), a) for h, a in hosts))
        return cached[1]

    def link_specs(self, plan: SliverPlan) -> dict[str, LinkSpec]:
        """The link's spec for each physical node that holds one of its ends."""
        nodes = sorted(set(plan.nodes))
        underlays = {n: self._underlay(n) for n in nodes}
        specs = {}
        for node in nodes:
            members = tuple((urn, name) for (urn, _cid), n, name in zip(plan.endpoints, plan.nodes, plan.iface_names,
                                                                         strict=True) if n == node)
            try:
                specs[node] = LinkSpec(urn=plan.sliver_urn, slice_urn=plan.slice_urn, vni=int(plan.vni or 0),
                                       members=members, remotes=tuple(underlays[n] for n in nodes if n != node),
                                       capacity_kbps=int(plan.capacity_kbps or 0),
                                       latency_ms=float(plan.latency_ms or 0.0),
                                       packet_loss=float(plan.packet_loss or 0.0))
            except (SpecError, ValueError) as exc:
                raise GeniError(GeniCode.ERROR, f"node {node}: link {plan.client_id!r}: {exc}") from None
        return specs

    # -- the ResourceDriver protocol ---------------------------------------------------------------

    def provision(self, plan: SliverPlan) -> None:
        self.provision_many([plan])

    def provision_many(self, plans: Sequence[SliverPlan]) -> None:
        """Per node one ``ProvisionMany`` (its slivers, then its ends of the links), the nodes in parallel
        (a big batch in chunks: the slivers', then the links'); an agent without it gets
        ``ProvisionSliver`` calls, then ``ProvisionLink`` calls, in parallel. The first failure is raised."""
        node_plans = [p for p in plans if p.kind == "node"]
        link_plans = [p for p in plans if p.kind == "link"]
        for node in sorted({p.component for p in node_plans} | {n for p in link_plans for n in p.nodes}):
            if self.agents.url_of(node) is None:
                raise AgentUnreachable(node, "no agent has registered for it")
        sliver_specs = [(p.component, self.sliver_spec(p)) for p in node_plans]
        link_specs = [(p, self.link_specs(p)) for p in link_plans]
        self._record([(p.sliver_urn, "node", p.slice_urn, [p.component],
                       {"slot": p.slots[0], "interfaces": [i.name for i in p.interfaces]}) for p in node_plans]
                     + [(p.sliver_urn, "link", p.slice_urn, sorted(specs), {}) for p, specs in link_specs])
        by_node: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
        for node, spec in sliver_specs:
            by_node.setdefault(node, ([], []))[0].append(self.wire(spec))
        for _plan, specs in link_specs:
            for node, link in specs.items():
                by_node.setdefault(node, ([], []))[1].append(link.to_dict())
        rounds: tuple[list[Any], list[Any]] = ([], [])
        for node, (slivers, links) in by_node.items():
            if len(chunks(slivers + links)) == 1:
                rounds[0].append((node, (slivers, links), [i["urn"] for i in slivers + links]))
            else:  # the links' members must be made first
                rounds[0].extend((node, (c, []), [i["urn"] for i in c]) for c in chunks(slivers))
                rounds[1].extend((node, ([], c), [i["urn"] for i in c]) for c in chunks(links))
        failed, lacking = self._many("ProvisionMany", rounds[0], PROVISIONED)
        more, also = self._many("ProvisionMany", [c for c in rounds[1] if c[0] not in lacking], PROVISIONED)
        errors, lacking = [*failed.values(), *more.values()], lacking | also
        for k, method in enumerate(("ProvisionSliver", "ProvisionLink")):  # agents without ProvisionMany
            results = self._each([(n, method, (item,)) for n in sorted(lacking) for item in by_node[n][k]])
            errors += [r for r in results if isinstance(r, GeniError)]
            if errors:
                break
        self._raise_first(errors)

    def _node_sliver(self, urn: str) -> DriverSliverRow | None:
        row = self._records([urn]).get(urn)
        if row is None:
            raise GeniError(GeniCode.SEARCHFAILED, f"the agent driver holds no sliver {urn}")
        return row if row.kind == "node" else None

    def start(self, sliver_urn: str) -> None:
        row = self._node_sliver(sliver_urn)
        if row is not None:
            self._raise_first(self._each([(n, "Start", (sliver_urn,)) for n in self.nodes_of(row)]))

    def stop(self, sliver_urn: str) -> None:
        row = self._node_sliver(sliver_urn)
        if row is not None:
            self._raise_first(self._each([(n, "Stop", (sliver_urn,)) for n in self.nodes_of(row)]))

    def results(self, sliver_urn: str) -> dict[str, Any]:
        """What the simulation of a simulator sliver has measured, from its node's agent (``Results``):
        ``{state, exit_code?, log, files: {name: bytes}, omitted}``."""
        row = self._node_sliver(sliver_urn)
        if row is None:
            raise GeniError(GeniCode.BADARGS, f"{sliver_urn} is a link; only simulator slivers have results")
        answer: dict[str, Any] = self.call(self.nodes_of(row)[0], "Results", sliver_urn)
        return answer

    def release(self, sliver_urn: str) -> None:
        self.release_many([sliver_urn])

    def release_many(self, urns: Sequence[str]) -> None:
        """Release on every node that holds each URN; what fails stays ``releasing`` for :meth:`sweep`.

        Nodes whose agent is not alive are not called (no connection timeouts on a dead node);
        their releases wait for the agent's return.
        """
        if not urns:
            return
        records = self._records(urns)
        where = {u: self.nodes_of(r) for u, r in records.items()}
        for urn in urns:
            if urn not in where and self._seen.get(urn):
                where[urn] = sorted(self._seen[urn])  # an orphan only an agent's Status told us about
        with self._sessions.begin() as session:
            session.execute(update(DriverSliverRow).where(DriverSliverRow.urn.in_(list(records)))
                            .values(state="releasing", updated=self._clock()))
        alive = {n for nodes in where.values() for n in nodes if self.agents.alive(n)}
        by_node: dict[str, list[str]] = {}
        for links_first in (True, False):  # the reverse of provisioning: links, then the slivers they join
            for urn, nodes in where.items():
                if (urn in records and records[urn].kind == "link") == links_first:
                    for node in nodes:
                        if node in alive:
                            by_node.setdefault(node, []).append(urn)
        failed, lacking = self._many("ReleaseMany", [(node, (c,), c) for node, urns in by_node.items()
                                                     for c in chunks(urns, RELEASE_ITEMS)], {"released"})
        left: dict[str, list[str]] = {urn: [n for n in nodes if n not in alive] for urn, nodes in where.items()}
        for node, urn in failed:
            left[urn].append(node)
        results: list[Any] = list(failed.values())
        for links_first in (True, False):  # agents without ReleaseMany: one Release per URN
            calls = [(n, "Release", (u,)) for n in sorted(lacking) for u in by_node[n]
                     if (u in records and records[u].kind == "link") == links_first]
            for (node, _m, (urn,)), result in zip(calls, self._each(calls), strict=True):
                if isinstance(result, GeniError):
                    left[urn].append(node)
                    results.append(result)
        with self._sessions.begin() as session:
            done = [urn for urn, nodes in left.items() if not nodes]
            for urn in left:
                self._seen.pop(urn, None)
            for k in range(0, len(done), 500):
                session.execute(delete(DriverSliverRow).where(DriverSliverRow.urn.in_(done[k:k + 500])))
            for urn, nodes in left.items():
                if not nodes:
                    continue
                held = session.get(DriverSliverRow, urn)
                if held is not None:
                    held.nodes = json.dumps(nodes)
                else:
                    session.add(DriverSliverRow(urn=urn, kind="node", slice_urn="", nodes=json.dumps(nodes),
                                                state="releasing", updated=self._clock()))
        self._raise_first(results)
        waiting = sorted({n for nodes in left.values() for n in nodes} - alive)
        if waiting:
            raise AgentUnreachable(", ".join(waiting), "its agent is not alive; the release waits for its return")

    def sweep(self) -> list[str]:
        """Retry the releases agents could not take before; returns the URNs now fully released."""
        with self._readers() as session:
            pending = list(session.scalars(select(DriverSliverRow.urn).where(DriverSliverRow.state == "releasing")))
        if not pending:
            return []
        try:
            self.release_many(pending)
        except GeniError as exc:
            log.info("releases still pending: %s", exc.reason)
        still = self._records(pending)
        return [u for u in pending if u not in still]

    def status(self, sliver_urn: str) -> str | None:
        row = self._records([sliver_urn]).get(sliver_urn)
        if row is None or row.state == "releasing":
            return None
        states = []
        for result in self._each([(n, "Status", ([sliver_urn],)) for n in self.nodes_of(row)], probe=True):
            if isinstance(result, GeniError):
                states.append("failed")  # cannot be asked: the driver cannot vouch for it
            elif isinstance(result, dict) and sliver_urn in result:
                states.append(str(result[sliver_urn]))
            else:
                return None
        if "failed" in states:
            return "failed"
        return "ready" if states and all(s == "ready" for s in states) else "stopped"

    def held(self, among: Collection[str] | None = None) -> set[str]:
        """What the agents hold (Status), plus whatever sits on agents that cannot be asked now."""
        records = self._records(None if among is None else among)
        if among is None:
            nodes = sorted({a.name for a in self.agents.all()} | {n for r in records.values()
                                                                   for n in self.nodes_of(r)})
            asked: dict[str, list[str]] = {n: [] for n in nodes}
        else:
            asked = {}
            for urn in among:
                row = records.get(urn)
                targets = self.nodes_of(row) if row is not None else [a.name for a in self.agents.all()]
                for node in targets:
                    asked.setdefault(node, []).append(urn)
        reachable: dict[str, set[str]] = {}
        callable_nodes = [n for n in asked if self.agents.alive(n)]
        results = self._each([(n, "Status", (asked[n],)) for n in callable_nodes], probe=True)
        for node, result in zip(callable_nodes, results, strict=True):
            if isinstance(result, GeniError):
                log.info("held: %s", result.reason)
            elif isinstance(result, dict):
                reachable[node] = {str(u) for u in result}
        out: set[str] = set()
        for node, urns in reachable.items():
            for urn in urns:
                self._seen.setdefault(urn, set()).add(node)
            out |= urns
        for urn, row in records.items():
            nodes = self.nodes_of(row)
            if all(n not in reachable or urn in reachable[n] for n in nodes):
                out.add(urn)  # held everywhere it can be asked (unknown is not lost)
            elif row.kind == "link":
                out.discard(urn)  # a link missing on one of its nodes is broken
        return out if among is None else out & set(among)

    # -- events and monitoring -------------------------------------------------------------------

    def deliver(self, event: EventSpec, nodes: Collection[str]) -> str:
        """Send ``event`` to every node in ``nodes``; ``"failed"`` (with the agent's detail raised) or
        the agents' answer (``scheduled``, ``applied``, ``duplicate``)."""
        results = self._each([(n, "Event", (event.to_dict(),)) for n in sorted(nodes)])
        self._raise_first(results)
        states = [str(r.get("state", "")) if isinstance(r, dict) else "" for r in results]
        for node, r in zip(sorted(nodes), results, strict=True):
            if isinstance(r, dict) and r.get("state") == "failed":
                raise EventRefused(f"node {node}: event {event.event_id} failed: {r.get('detail', '')}")
        return states[0] if len(set(states)) == 1 else ",".join(states)

    def _monitor_of(self, nodes: Collection[str]) -> dict[str, dict[str, Any]]:
        """Each node's last Monitor answer (at most MONITOR_TTL_S old); nodes that cannot answer are left out."""
        now = time.monotonic()
        with self._monitor_lock:
            fresh = {n: v for n, (t, v) in self._monitor.items() if n in nodes and now - t < MONITOR_TTL_S}
        todo = [n for n in nodes if n not in fresh and self.agents.alive(n)]
        for node, result in zip(todo, self._each([(n, "Monitor", ()) for n in todo], probe=True), strict=True):
            if isinstance(result, dict):
                fresh[node] = result
                with self._monitor_lock:
                    self._monitor[node] = (time.monotonic(), result)
            else:
                log.info("monitor: %s", getattr(result, "reason", result))
        return fresh

    def node_usage(self) -> dict[str, dict[str, Any]]:
        """Per physical node: cpus, cpu_percent, load, memory and disk figures from its agent."""
        answers = self._monitor_of([a.name for a in self.agents.all()])
        return {n: dict(v.get("node") or {}) for n, v in answers.items()}

    def monitor(self, urns: Collection[str]) -> dict[str, dict[str, Any]]:
        """Per node sliver: cpu_ns, memory_bytes and its interfaces' counters (as the sliver sees them)."""
        records = {u: r for u, r in self._records(urns).items() if r.kind == "node" and r.state == "held"}
        answers = self._monitor_of({n for r in records.values() for n in self.nodes_of(r)})
        out: dict[str, dict[str, Any]] = {}
        for urn, row in records.items():
            answer = answers.get(self.nodes_of(row)[0])
            if answer is None:
                continue
            usage = dict((answer.get("slivers") or {}).get(urn) or {})
            if not usage:
                continue
            detail = json.loads(row.detail or "{}")
            counters = usage.pop("interfaces", None) or {}
            devices = answer.get("interfaces") or {}
            for k, name in enumerate(detail.get("interfaces", [])):
                host_side = devices.get(exp_device(int(detail.get("slot", 0)), k))
                if name not in counters and isinstance(host_side, dict):
                    # the node's end of the veth: what it received, the sliver sent
                    counters[name] = {"rx_bytes": host_side.get("tx_bytes", 0),
                                      "tx_bytes": host_side.get("rx_bytes", 0),
                                      "rx_packets": host_side.get("tx_packets", 0),
                                      "tx_packets": host_side.get("rx_packets", 0)}
            out[urn] = {**usage, "interfaces": counters}
        return out


__all__ = ["AGENT_PATH", "AgentDriver", "AgentUnreachable", "host_name"]
