"""A simulation: realizes a model on a fresh engine, runs it, and collects the results.

``Simulation(network, seed=7).run(s(10))`` checks and addresses the model, builds the runtime
nodes, ports, routes and applications (every error is raised here, before anything runs),
then runs the engine. Each simulation owns its engine, its random generators and its results:
nothing is global, so several can live in one process.

Random generators are per entity (link, node, flow), seeded from the simulation's seed and
the entity's hierarchical name, so adding a flow does not change the random draws of another.

``run(duration, realtime=1.0)`` paces the run to the wall clock through :attr:`Simulation.realtime`
(a :class:`~primogeni.sim.realtime.RealtimeLoop`; add I/O readers to it before running). A
real-time run may be ended early by ``sim.realtime.stop()`` from another thread or a signal
handler: :meth:`Simulation.finish` then reports the time actually run.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable, Iterable
from pathlib import Path
from random import Random
from typing import Any

from primogeni.errors import ModelError
from primogeni.net.units import Bytes, ms, tx_ns
from primogeni.sim.addressing import assign_addresses
from primogeni.sim.apps import APPS, App
from primogeni.sim.engine import Engine
from primogeni.sim.measure import (
    FlowStats,
    Tap,
    TimeSeries,
    clean_nan,
    flow_summary,
    jain,
    link_summary,
    write_json,
)
from primogeni.sim.model import Interface, Net, Network, Node, check_emulation
from primogeni.sim.node import Port, SimNode
from primogeni.sim.realtime import RealtimeLoop
from primogeni.sim.routing import Routing
from primogeni.sim.traffic import Flow


def entity_rng(seed: int, name: str) -> Random:
    """A generator seeded by (seed, name), stable across runs and Python versions."""
    h = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return Random(int.from_bytes(h[:8], "big"))


class Simulation:
    """One run of one model."""

    def __init__(
        self,
        network: Network,
        *,
        seed: int = 1,
        capture: Iterable[str] = (),
        sample_interval: int = ms(100),
        snaplen: int = 128,
    ) -> None:
        if not isinstance(network, Network):
            raise ModelError(f"a simulation needs a Network, not {type(network).__name__}")
        if sample_interval <= 0:
            raise ValueError("sample_interval must be > 0 ns")
        self.network = network
        self.seed = seed
        self.sample_interval = sample_interval
        self.engine = Engine()
        assign_addresses(network)
        # emulated hosts (checked: one interface, a gateway, no simulated flow at them)
        self.emulated = check_emulation(network)
        self.nodes: dict[str, SimNode] = {}
        self.ports: dict[str, Port] = {}
        self._build_nodes()
        self.routing = Routing(list(self.nodes.values()))
        for n in self.nodes.values():
            n.routing = self.routing
        self._build_links()
        self.apps: list[App] = []
        self.flows: list[FlowStats] = []
        self._planned: list[tuple[Flow, Net]] = [
            (f, e) for e in network.walk() if isinstance(e, Net) for f in e.flows
        ]
        self.taps: dict[str, Tap] = {}
        for name in capture:
            port = self.ports.get(name)
            if port is None:
                raise ModelError(f"cannot capture: no interface {name!r} (use a full name like top:h1:eth0)")
            port.tap = Tap(name, snaplen)
            self.taps[name] = port.tap
        if self.taps:  # a capture sees packets arriving from any port: all take the full path
            for p in self.ports.values():
                p.plain = False
        self._ran = False
        self._realtime: RealtimeLoop | None = None
        self.paced = False  # True for a real-time run

    # -- building ------------------------------------------------------------------------
    def _build_nodes(self) -> None:
        for node in self.network.nodes():
            sn = SimNode(node.path, node.name, node.forwards, self.engine, entity_rng(self.seed, node.path))
            self.nodes[node.path] = sn

    def _build_links(self) -> None:
        for link in self.network.all_links():
            assert link.prefix is not None
            ports = []
            for iface in link.interfaces:
                assert iface.address is not None
                node = self.nodes[iface.node.path]
                q = iface.queue or link.queue
                bw = iface.bandwidth or link.bandwidth
                port = Port(
                    node, iface.name, iface.path, int(iface.address.ip), link.prefix.prefixlen,
                    bw.bps, link.delay + iface.latency, q.count, isinstance(q, Bytes),
                    link.loss if iface.loss is None else iface.loss,
                    entity_rng(self.seed, iface.path), self.engine, link.path,
                )
                node.ports.append(port)
                node.addrs.add(port.addr)
                self.ports[iface.path] = port
                ports.append(port)
            self.routing.add_subnet(link.prefix, ports, link.cost)

    def _endpoint(self, end: object, net: Net, what: str, flow: Flow) -> tuple[SimNode, int]:
        where = flow.name or f"{net.path}:{flow.kind}"
        target: object = end
        if isinstance(end, str):
            target = net.lookup(end) or self.network.lookup(end.removeprefix(self.network.name + ":"))
        if isinstance(target, Interface):
            if target.address is None:
                raise ModelError(f"{what} interface {target.path} has no address (no link)", where, flow.location)
            return self.nodes[target.node.path], int(target.address.ip)
        if isinstance(target, Node):
            if not target.addresses:
                raise ModelError(f"{what} {target.path} has no attached interface", where, flow.location)
            return self.nodes[target.path], int(target.addresses[0])
        raise ModelError(f"{what} {end!r} is not a host, router or interface of {net.path}", where, flow.location)

    def trace(self, src: SimNode, daddr: int) -> list[tuple[Port, Port]] | None:
        """The hops a packet from ``src`` to ``daddr`` takes, or None if it cannot arrive."""
        hops: list[tuple[Port, Port]] = []
        node = src
        for _ in range(len(self.nodes) + 1):
            if daddr in node.addrs:
                return hops
            if hops and not node.forwards:
                return None
            hop = node.fib.get(daddr) or node.lookup(daddr)
            if hop is None:
                return None
            hops.append(hop)
            node = hop[1].node
        return None

    def path_delay(self, src: str, dst: str, size: int) -> int:
        """One-way latency (ns) of a ``size``-byte packet from node ``src`` to node ``dst``
        on an idle network: per hop, transmission plus propagation."""
        s_node = self.nodes[src]
        d_node = self.nodes[dst]
        hops = self.trace(s_node, d_node.address)
        if hops is None:
            raise ModelError(f"{dst} is unreachable from {src}")
        return sum(tx_ns(size, p.bps) + p.delay for p, _ in hops)

    def _build_apps(self, end: int) -> None:
        for k, (flow, net) in enumerate(self._planned):
            where = flow.name or f"{net.path}:{flow.kind}{k}"
            reason = flow.validate()
            if reason:
                raise ModelError(reason, where, flow.location)
            src, _ = self._endpoint(flow.src, net, "source", flow)
            dst, daddr = self._endpoint(flow.dst, net, "destination", flow)
            saddr = src.source_for(daddr)
            if self.trace(src, daddr) is None:
                raise ModelError(
                    f"destination {dst.path} ({ipaddress.IPv4Address(daddr)}) is unreachable from {src.path}",
                    where,
                    flow.location,
                )
            if flow.kind != "ping" and self.trace(dst, saddr) is None:
                raise ModelError(f"{src.path} is unreachable from {dst.path} (no return path)", where, flow.location)
            stop = min(flow.stop, end) if flow.stop is not None else end
            stats = FlowStats(flow.name or f"flow{k}", flow.kind, src.path, dst.path, flow.start, stop)
            app = APPS[type(flow)](flow, stats, src, dst, saddr, daddr, self.engine, entity_rng(self.seed, where), end)
            self.apps.append(app)
            self.flows.append(stats)

    def check(self) -> None:
        """Validate everything, including traffic, without running (errors name the element)."""
        self._build_apps(1)
        self.apps.clear()
        self.flows.clear()

    # -- running -------------------------------------------------------------------------
    @property
    def realtime(self) -> RealtimeLoop:
        """The real-time driver (made on first use, ratio 1.0): add readers to it before a
        real-time run; its ``stop()`` ends such a run early."""
        if self._realtime is None:
            self._realtime = RealtimeLoop(self.engine)
        return self._realtime

    @property
    def stopped(self) -> bool:
        """True when a real-time run was stopped before its end."""
        return self._realtime is not None and self._realtime.stopped

    def run(self, duration: int, progress: Callable[[int], None] | None = None, *,
            realtime: float | None = None) -> Results:
        """Run for ``duration`` ns of simulated time and return the results; with ``realtime``
        (simulated seconds per wall second, 1.0 = real time), paced to the wall clock."""
        self.start(duration, realtime=realtime)
        if progress is None:
            self.advance(duration)
        else:
            step = max(duration // 200, 1)
            now = 0
            while now < duration and not self.stopped:
                now = min(now + step, duration)
                self.advance(now)
                progress(self.engine.now)
        return self.finish()

    def start(self, duration: int, *, realtime: float | None = None) -> None:
        """Prepare a run of ``duration`` ns; then :meth:`advance` and :meth:`finish` it.
        ``realtime``: pace it to the wall clock at this ratio (see :attr:`realtime`)."""
        if self._ran:
            raise RuntimeError("a Simulation runs once; make a new one")
        if duration <= 0:
            raise ValueError("duration must be > 0 ns")
        if realtime is not None:
            self.realtime.ratio = realtime  # checks it: a finite number > 0
        elif self._realtime is not None and self._realtime.has_readers:
            raise ValueError("the real-time driver has I/O readers: run with realtime=RATIO")
        self.paced = realtime is not None
        self._ran = True
        self.duration = duration
        self._build_apps(duration)
        for app in self.apps:
            if app.flow.start < duration:
                app.start()
        ports = list(self.ports.values())
        self._series = TimeSeries(self.sample_interval, self.flows, ports, [a.delivered_now for a in self.apps])
        t = self.sample_interval
        while t <= duration:
            self.engine.schedule(t, self._series.sample, t)
            t += self.sample_interval

    def advance(self, until: int) -> None:
        """Run events up to ``until`` ns (at most the run's duration); in a real-time run, return
        when the wall clock reaches it (or at once when stopped)."""
        if self.paced:
            assert self._realtime is not None
            self._realtime.run(min(until, self.duration))
        else:
            self.engine.run(until=min(until, self.duration))

    def finish(self) -> Results:
        """Run to the end if needed (not after a stop), settle every flow, and return the
        results, for the time actually run."""
        if self.engine.now < self.duration and not self.stopped:
            self.advance(self.duration)
        end = self.engine.now if self.stopped else self.duration
        for app in self.apps:
            if app.began:
                app.finish(end)
        results = Results(self, end, self._series)
        if self._realtime is not None:
            self._realtime.close()
        return results


class Results:
    """What a run produced: ``summary`` (a JSON-ready dict), time series, captures."""

    def __init__(self, sim: Simulation, duration: int, series: TimeSeries) -> None:
        self.duration = duration
        self.events = sim.engine.events
        self.series = series
        self.taps = sim.taps
        flows = [flow_summary(f, duration) for f in sim.flows]
        links: list[dict[str, Any]] = []
        for link in sim.network.all_links():
            links.append({
                "name": link.path,
                "prefix": str(link.prefix),
                "delay_s": link.delay / 1e9,
                "directions": [link_summary(sim.ports[i.path], duration) for i in link.interfaces],
            })
        goodputs = [f["goodput_bps"] for f in flows if f["kind"] in ("tcp_bulk",)]
        self.summary: dict[str, Any] = clean_nan({
            "model": sim.network.name,
            "seed": sim.seed,
            "duration_s": duration / 1e9,
            "planned_duration_s": sim.duration / 1e9,
            "stopped_early": duration < sim.duration,
            "events": sim.engine.events,
            "flows": flows,
            "links": links,
            "totals": {
                "tcp_bulk_goodput_bps": sum(goodputs),
                "tcp_bulk_jain": jain(goodputs) if goodputs else None,
                "flows": len(flows),
                "nodes": len(sim.nodes),
                "packets_delivered": sum(n.delivered for n in sim.nodes.values()),
                "links": len(links),
            },
        })
        if sim.paced:
            self.summary["realtime"] = clean_nan(sim.realtime.summary())

    def flow(self, name: str) -> dict[str, Any]:
        for f in self.summary["flows"]:
            if f["name"] == name:
                return dict(f)
        raise KeyError(name)

    def write(self, out: str | Path) -> list[Path]:
        """Write summary.json, flows.csv, links.csv and the captures into ``out``."""
        d = Path(out)
        d.mkdir(parents=True, exist_ok=True)
        write_json(d / "summary.json", self.summary)
        self.series.write(d)
        files = [d / "summary.json", d / "flows.csv", d / "links.csv"]
        for name, tap in self.taps.items():
            fn = d / (name.replace(":", "_") + ".pcap")
            tap.write(fn)
            files.append(fn)
        return files
