"""The immersion bridge: real frames from packet endpoints into a real-time simulation, and back.

Three parts meet here, each built elsewhere:

* :class:`~primogeni.sim.emulation.Emulation` (pure) turns a real host's frames into simulated
  packets that keep their bytes, and hands frames for a real host to an ``emit`` callback;
* :class:`~primogeni.emu.packetio.Endpoint` (TAP, or ``AF_PACKET`` on an existing device) moves
  the frames to and from the kernel;
* :class:`~primogeni.sim.realtime.RealtimeLoop` (``sim.realtime``) paces the simulation to the
  wall clock and calls a reader when a descriptor is readable, with ``engine.now`` set to the
  simulated time of that moment.

:class:`Immersion` joins them: ``emit`` writes to the host's endpoint, and each endpoint's
descriptor is a reader whose callback drains at most ``batch`` frames into
:meth:`Emulation.ingress <primogeni.sim.emulation.Emulation.ingress>` (the poll is
level-triggered, so a busy endpoint is served again after the others had their turn). An
endpoint without virtio-net headers makes its host's frames leave segmented with complete
checksums (``offload`` off for that host). Nothing is configured in the hosts' namespaces here;
:mod:`primogeni.immersion.run` does the host side.

Use::

    sim = Simulation(network, seed=1)
    imm = Immersion(sim, {"top:h1": tap1, "top:h2": tap2})
    results = imm.run(s(60), ratio=1.0)     # results.summary["immersion"] holds the counters
    imm.close()                             # the caller closes its endpoints
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from primogeni.emu.packetio import Endpoint
from primogeni.errors import EmuError, ModelError
from primogeni.net.gso import VirtioNetHdr
from primogeni.sim.emulation import Emulation
from primogeni.sim.measure import clean_nan
from primogeni.sim.model import Host, Network, check_emulation
from primogeni.sim.simulation import Results, Simulation

DEFAULT_BATCH = 64  # frames read from one endpoint per wake-up


def host_path(network: Network, name: str) -> str:
    """The full path (``top:h1``) of a host named ``name`` (full, or relative to the top net)."""
    prefix = network.name + ":"
    return name if name.startswith(prefix) else prefix + name


def emulated_hosts(network: Network, names: Iterable[str]) -> dict[str, Host]:
    """Check that ``names`` name the model's emulated hosts, each once and all of them; return
    them by full path, in the order given. Every mismatch is a :class:`ModelError` naming the host."""
    emulated = {h.path: h for h in check_emulation(network)}
    found: dict[str, Host] = {}
    for name in names:
        path = host_path(network, name)
        if path in found:
            raise ModelError("attached twice", element=path)
        host = emulated.get(path)
        if host is None:
            target = network.lookup(path.removeprefix(network.name + ":"))
            if isinstance(target, Host):
                raise ModelError(f"host {path} is not emulated: mark it emulated=True in a Python model, or "
                                 "`emulated true` in DML, to attach a real host to it", element=path)
            have = ", ".join(emulated) or "none"
            if target is not None and not isinstance(target, Network):
                raise ModelError(f"{path} is a {type(target).__name__.lower()}, not a host: only emulated hosts "
                                 f"take real hosts (the model's: {have})", element=path)
            raise ModelError(f"the model has no host {path} to attach to (its emulated hosts: {have})",
                             element=path)
        found[path] = host
    missing = [p for p in emulated if p not in found]
    if missing:
        raise ModelError(f"emulated host {missing[0]} has no attachment: every emulated host needs a real host "
                         f"(unattached: {', '.join(missing)})", element=missing[0])
    return found


class Immersion:
    """Emulated hosts of ``sim`` attached to packet endpoints (``attachments``: host path → endpoint).

    ``offload``: super-frames and partial checksums may leave toward hosts whose endpoint has
    vnet headers (always off for the others). ``split_threshold`` (ns): see
    :class:`~primogeni.sim.emulation.Emulation` (None: its default). ``batch``: frames read per
    endpoint per wake-up. The endpoints stay the caller's: :meth:`close` only stops watching them.
    """

    def __init__(self, sim: Simulation, attachments: Mapping[str, Endpoint], *, offload: bool = True,
                 split_threshold: int | None = None, batch: int = DEFAULT_BATCH) -> None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1 frame, not {batch}")
        hosts = emulated_hosts(sim.network, list(attachments))
        self.endpoints: dict[str, Endpoint] = {}
        fds: dict[int, str] = {}
        for name, ep in attachments.items():
            path = host_path(sim.network, name)
            if ep.closed:
                raise EmuError(f"the endpoint of {path} is closed", repr(ep))
            if ep.fileno() in fds:
                raise EmuError(f"{fds[ep.fileno()]} and {path} are given the same endpoint", repr(ep))
            fds[ep.fileno()] = path
            self.endpoints[path] = ep
        self.sim = sim
        self.batch = batch
        self.offload = offload
        sends = {path: ep.send for path, ep in self.endpoints.items()}

        def emit(path: str, frame: bytes, gso: VirtioNetHdr | None) -> None:
            sends[path](frame, gso)

        kw: dict[str, Any] = {} if split_threshold is None else {"split_threshold": split_threshold}
        self.emulation = Emulation(sim, emit, offload=offload, **kw)
        for path, ep in self.endpoints.items():
            if not ep.vnet:
                self.emulation.hosts[path].offload = False
        self.hosts = hosts
        #: per host, the callback the real-time loop calls when its endpoint is readable
        self.readers = {path: self._reader(path, ep) for path, ep in self.endpoints.items()}
        self._watched: list[int] = []
        loop = sim.realtime
        try:
            for path, ep in self.endpoints.items():
                loop.add_reader(ep.fileno(), self.readers[path])
                self._watched.append(ep.fileno())
        except BaseException:
            self.close()
            raise

    def _reader(self, path: str, ep: Endpoint) -> Callable[[], None]:
        recv = ep.recv_batch
        ingress = self.emulation.ingress
        limit = self.batch

        def drain() -> None:
            for frame, gso in recv(limit):
                ingress(path, frame, gso)

        return drain

    # -- running -------------------------------------------------------------------------
    def run(self, duration: int, *, ratio: float = 1.0, progress: Callable[[int], None] | None = None) -> Results:
        """Run the simulation in real time (``ratio`` simulated s per wall s) for ``duration`` ns,
        or until ``sim.realtime.stop()``; the results carry :meth:`summary` as ``"immersion"``."""
        results = self.sim.run(duration, progress, realtime=ratio)
        self.record(results)
        return results

    def record(self, results: Results) -> None:
        """Put :meth:`summary` into ``results.summary["immersion"]`` (written with the results)."""
        results.summary["immersion"] = clean_nan(self.summary())

    def close(self) -> None:
        """Stop watching the endpoints (they stay open: their owner closes them)."""
        loop = self.sim.realtime
        while self._watched:
            loop.remove_reader(self._watched.pop())

    # -- results -------------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        """Totals over the endpoints: frames and bytes in and out, send drops."""
        total = {"frames_in": 0, "bytes_in": 0, "frames_out": 0, "bytes_out": 0, "drops": 0}
        for ep in self.endpoints.values():
            c = ep.counters
            total["frames_in"] += c.frames_in
            total["bytes_in"] += c.bytes_in
            total["frames_out"] += c.frames_out
            total["bytes_out"] += c.bytes_out
            total["drops"] += c.drops
        return total

    def summary(self) -> dict[str, Any]:
        """Settings, totals, and per host what the emulation did (addresses, MACs, frames, ARP, drops)
        with what its endpoint moved (``endpoint``: kind, device, namespace, vnet, counters)."""
        hosts: dict[str, Any] = {}
        for path, h in self.emulation.summary().items():
            ep = self.endpoints[path]
            c = ep.counters
            hosts[path] = dict(h, offload=self.emulation.hosts[path].offload, endpoint={
                "kind": ep.kind,
                "device": ep.name,
                "netns": None if ep.netns is None else str(ep.netns),
                "vnet": ep.vnet,
                "frames_in": c.frames_in,
                "bytes_in": c.bytes_in,
                "frames_out": c.frames_out,
                "bytes_out": c.bytes_out,
                "send_drops": c.drops,
            })
        return {
            "offload": self.offload,
            "split_threshold_s": self.emulation.split_threshold / 1e9,
            "batch": self.batch,
            "totals": self.counters(),
            "hosts": hosts,
        }


__all__ = ["DEFAULT_BATCH", "Immersion", "emulated_hosts", "host_path"]
