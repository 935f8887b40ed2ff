"""The realizer: makes the kernel of one physical node match the specs the agent holds.

:class:`Realizer` turns a :class:`~primogeni.agent.spec.SliverSpec` into a container (network
namespace ``primo-<node>-<slot>``, cgroup ``primo/<node>-<slot>``) with its control veth
``primo<slot>c`` ↔ ``ctl0`` on the node's control bridge (address, default route, port isolation,
NAT of its port range, ``ip_local_port_range`` = that range), its experimental veths
``primo<slot>e<i>`` ↔ the spec's names on their links' bridges, and sshd for its logins. Links
and vsys links are a base class's (:mod:`primogeni.agent.realize_links`), commands and sshd
another's (:mod:`primogeni.agent.realize_procs`), a simulator sliver's simulation another's
(:mod:`primogeni.agent.realize_sim`). Every ``ensure_*`` and ``remove_*`` is
idempotent; :meth:`Realizer.remove_slivers` / :meth:`Realizer.remove_links` remove many at once
(the kernel then frees namespaces and deletes devices in batches); :meth:`Realizer.reconcile`
makes the kernel match the store after an agent restart or crash and reports what it did;
:meth:`Realizer.teardown` removes the node.

Namespaces and threads: the realizer acts in the *node* namespace, the one of the thread that
made it (a call from a thread elsewhere is switched into it for the call), with one node
``IPRoute`` per call and one ``IPRoute`` opened in a sliver's namespace for the configuration
inside it (no helper process). One lock per URN serialises work on a sliver or link; the node
lock guards shared objects (bridges, tunnels, the uid table), always taken after a URN lock.

On disk (``state_dir``) the realizer keeps only what outlives it: container pid files
(``containers/``), sshd pid files (``sshd/<slot>.pid``), the commands it started
(``commands/<slot>.json``), simulations (``simulations/<slot>.json``) and the node's login uids
(``uids.json``). Run state is the store's.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute  # type: ignore[import-untyped]
from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]

from primogeni.agent import monitor as mon
from primogeni.agent import realize_links as rl
from primogeni.agent.names import sim_root
from primogeni.agent.realize_links import SpecStore
from primogeni.agent.realize_procs import _kill, _write_json
from primogeni.agent.realize_sim import IPV6, SimRealizer
from primogeni.agent.spec import SliverSpec
from primogeni.agent.vsys import secure_tree
from primogeni.emu import container, links, netns
from primogeni.errors import EmuError

UID_BASE = 20000  # the first login's uid; uids are stable per node (uids.json)
PING_GROUPS = "0 2147483647"  # every group may use ICMP echo sockets (ping without privileges)


class Realizer(SimRealizer):
    """Specs → kernel on one node (see the module docstring and :class:`LinkRealizer`)."""

    def __init__(self, *, node: str, state_dir: Path, underlay_dev: str, underlay_ip: str, store: SpecStore,
                 ctl_subnet: str = "172.30.0.0/16", experimental_pool: str = "10.0.0.0/8", features: Any = None):
        super().__init__(node=node, state_dir=state_dir, underlay_dev=underlay_dev, underlay_ip=underlay_ip,
                         store=store, ctl_subnet=ctl_subnet, experimental_pool=experimental_pool, features=features)
        self.run_dir = self.state_dir / "containers"
        self._slots: dict[str, int] = {}  # sliver urn -> slot, of slivers this process made
        self._dying: dict[int, tuple[int, bool]] = {}  # removed slot -> (its interface count, had a ctl veth)
        self._ctl_index: int | None = None
        self._uids: dict[str, int] | None = None
        self._keys_ready = False
        self._children: dict[int, subprocess.Popen[Any]] = {}  # commands we started (reaped when they end)
        self._cpu = mon.CpuMeter()

    # -- node ------------------------------------------------------------------------------------------

    def setup(self) -> None:
        """The control network (bridge, NAT table, forwarding) and the state directories; idempotent."""
        with self._session() as ipr, self._node_lock:
            self._setup(ipr)

    def _setup(self, ipr: IPRoute) -> None:
        for sub in ("containers", "sshd", "commands"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        secure_tree(rl.vsys_root(self.state_dir))  # before any container binds a directory under it
        try:  # devices a reaper did not finish deleting (an earlier agent's)
            ipr.link("del", group=rl.RETIRED_GROUP)
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise EmuError(f"cannot delete retired devices: {os.strerror(exc.code)}", "device group") from exc
        self.ctl.setup()
        self._ctl_index = links.index(ipr, self.ctl.bridge)
        self._mtu = None

    def _ctl_bridge(self, ipr: IPRoute) -> int:
        with self._node_lock:
            if self._ctl_index is None:
                self._setup(ipr)
            assert self._ctl_index is not None
            return self._ctl_index

    def _uid(self, slice_urn: str, user: str) -> int:
        """The node's uid for login ``user`` of the slice: allocated once, kept in ``uids.json``."""
        with self._node_lock:
            path = self.state_dir / "uids.json"
            if self._uids is None:
                try:
                    self._uids = {str(k): int(v) for k, v in json.loads(path.read_text()).items()}
                except FileNotFoundError:
                    self._uids = {}
                except (OSError, ValueError, AttributeError) as exc:
                    raise EmuError(f"cannot read the uid table: {exc}", str(path)) from exc
            key = f"{slice_urn} {user}"
            uid = self._uids.get(key)
            if uid is None:
                uid = max(self._uids.values(), default=UID_BASE - 1) + 1
                self._uids[key] = uid
                _write_json(path, self._uids)
            return uid

    # -- slivers ---------------------------------------------------------------------------------------

    def ensure_sliver(self, spec: SliverSpec) -> None:
        """Make the sliver real, or repair what is missing of it (idempotent)."""
        with self._locked(spec.urn), self._session() as ipr:
            self._ensure_sliver(ipr, spec)

    def ensure_slivers(self, specs: Sequence[SliverSpec]) -> None:
        """:meth:`ensure_sliver` for many slivers (see :meth:`try_slivers`). Every sliver is tried;
        then an ``EmuError`` names how many failed (and the first)."""
        failures = self.try_slivers(specs)
        if failures:
            first = next(iter(failures.values()))
            raise EmuError(f"{len(failures)} of {len({spec.urn for spec in specs})} slivers failed; "
                           f"the first: {first}") from first

    def try_slivers(self, specs: Sequence[SliverSpec]) -> dict[str, EmuError]:
        """:meth:`ensure_sliver` for many slivers; returns ``{urn: error}`` of those that failed.
        Containers to be made are asked of the forker in batches and plumbed here while it makes the
        next ones (two cores), and their NAT goes in one transaction."""
        wanted = list({spec.urn: spec for spec in specs}.values())
        failures: dict[str, EmuError] = {}
        with self._session() as ipr, contextlib.ExitStack() as held:
            for urn in sorted(spec.urn for spec in wanted):  # sorted: two batches never wait for each other
                held.enter_context(self._locked(urn))
            ctl_bridge = self._ctl_bridge(ipr)
            new: list[SliverSpec] = []
            slots: set[int] = set()
            for spec in wanted:
                name = rl.sliver_netns(self.node, spec.slot)
                if (self._slots.get(spec.urn, spec.slot) == spec.slot and spec.slot not in slots
                        and container.attach(name, self.run_dir) is None and not netns.exists(name)):
                    slots.add(spec.slot)
                    self._settle_slot(ipr, spec.slot)
                    self._slots[spec.urn] = spec.slot
                    new.append(spec)
            plumbed: list[SliverSpec] = []
            made = container.create_many([self._container_spec(spec) for spec in new])
            with contextlib.closing(made):
                for spec, c in zip(new, made, strict=True):
                    try:
                        if isinstance(c, EmuError):
                            raise c
                        try:
                            self._plumb(ipr, spec, c, ctl_bridge, True, None, sysctls=False, nat=False)
                        except BaseException:
                            self._remove_slot(ipr, spec.slot, spec)
                            raise
                        plumbed.append(spec)
                    except EmuError as exc:
                        failures[spec.urn] = exc
            self._add_nat(ipr, plumbed, failures)
            for spec in wanted:
                if spec.slot not in slots or self._slots.get(spec.urn) != spec.slot:
                    try:
                        self._ensure_sliver(ipr, spec)
                    except EmuError as exc:
                        failures[spec.urn] = exc
        return failures

    def _add_nat(self, ipr: IPRoute, specs: list[SliverSpec], failures: dict[str, EmuError]) -> None:
        """NAT of just-made slivers in one transaction; if refused, one by one (a refused sliver is removed)."""
        try:
            self.ctl.add_slivers([(spec.slot, *spec.ports) for spec in specs])
            return
        except EmuError:
            pass
        for spec in specs:
            try:
                self.ctl.add_sliver(spec.slot, *spec.ports)
            except EmuError as exc:
                self._remove_slot(ipr, spec.slot, spec)
                failures[spec.urn] = exc

    def _container_spec(self, spec: SliverSpec) -> container.ContainerSpec:
        return container.ContainerSpec(
            name=rl.sliver_netns(self.node, spec.slot), hostname=spec.hostname, run_dir=self.run_dir, hosts=spec.hosts,
            users=tuple((login.user, self._uid(spec.slice_urn, login.user)) for login in spec.logins),
            vsys_dir=self._vsys_dir(spec.slot), cgroup=rl.cgroup_name(self.node, spec.slot),
            cpu_percent=spec.cpu_percent, memory_mb=spec.memory_mb, sysctls=self._sysctls(spec))

    @staticmethod
    def _sysctls(spec: SliverSpec) -> tuple[tuple[str, str], ...]:
        """The sliver's own sysctls: its port range for local ports, ICMP echo sockets for every group;
        no IPv6 in a simulator (its interfaces carry the emulated hosts' frames and nothing of its own)."""
        lo, hi = spec.ports
        quiet = (("net.ipv6.conf.all.disable_ipv6", "1"), ("net.ipv6.conf.default.disable_ipv6", "1"))
        return (("net.ipv4.ip_local_port_range", f"{lo} {hi}"), ("net.ipv4.ping_group_range", PING_GROUPS),
                *(quiet if spec.kind == "simulator" and IPV6.is_dir() else ()))

    def _vsys_dir(self, slot: int) -> Path: return rl.vsys_dir(self.state_dir, slot)

    def _ensure_sliver(self, ipr: IPRoute, spec: SliverSpec, present: set[str] | None = None) -> bool:
        """Whether anything had to be (re)made; ``present``: the node's device names, if just listed."""
        old = self._slots.get(spec.urn)
        if old is not None and old != spec.slot:
            self._remove_slot(ipr, old, None)
        self._settle_slot(ipr, spec.slot)  # removed just before: its names must be free again
        self._slots[spec.urn] = spec.slot
        name = rl.sliver_netns(self.node, spec.slot)
        ctl_bridge = self._ctl_bridge(ipr)
        cspec = self._container_spec(spec)
        c = container.attach(name, self.run_dir)
        fresh = made = c is None  # a new PID 1 set the sysctls and made the vsys directory
        if c is None:
            if netns.exists(name):  # PID 1 died; the namespace and its interfaces live on
                fresh = False
                self._forget_commands(spec.slot)
                c = container.restart(cspec)
            else:
                c = container.create(cspec)
        else:  # the limits may have changed: set them again (idempotent)
            self._vsys_dir(spec.slot).mkdir(parents=True, exist_ok=True)
            container.cgroups().create(rl.cgroup_name(self.node, spec.slot), cpu_percent=spec.cpu_percent,
                                       memory_mb=spec.memory_mb)
        try:
            made |= self._plumb(ipr, spec, c, ctl_bridge, fresh, present, sysctls=not made)
        except BaseException:
            if fresh:  # leave nothing half made; the store still holds the spec, so reconcile retries
                self._remove_slot(ipr, spec.slot, spec)
            raise
        return made

    def _plumb(self, ipr: IPRoute, spec: SliverSpec, c: container.Container, ctl_bridge: int, fresh: bool,
               present: set[str] | None, *, sysctls: bool = True, nat: bool = True) -> bool:
        """Interfaces, addresses, route, sysctls, NAT, shaping, vsys links and sshd of a running container.

        ``fresh``: its namespace was just made (nothing to check or undo); ``sysctls`` / ``nat``:
        whether to set those here (a new PID 1 set the sysctls; a batch adds NAT in one go)."""
        slot, name = spec.slot, rl.sliver_netns(self.node, spec.slot)
        mtu = self._exp_mtu(ipr)
        made = False
        with netns.iproute(name, lazy=True) as sipr:
            host = rl.ctl_device(slot)
            if fresh or not self._paired(ipr, sipr, host, "ctl0", None, present):
                if not fresh:
                    links.delete(sipr, "ctl0")
                self._add_veth(ipr, host, "ctl0", name, master=ctl_bridge,
                               peer_mac=rl.stable_mac(self.node, slot, "ctl0"))
                made = True
            else:
                links.set_master(ipr, host, ctl_bridge)
            links.set_isolated(ipr, host)
            wanted = [self.store.get_link(iface.link) if iface.link else None for iface in spec.interfaces]
            for i, (iface, link) in enumerate(zip(spec.interfaces, wanted, strict=True)):
                device = rl.exp_device(slot, i)
                patched = link is not None and self.patched(link)
                if fresh or not self._paired(ipr, sipr, device, iface.name, iface.mac, present):
                    if not fresh:
                        links.delete(ipr, device)
                        links.delete(sipr, iface.name)
                    self._add_veth(ipr, device, iface.name, name, peer_mac=iface.mac, mtu=mtu,
                                   master=self._bridge(ipr, link.vni) if link is not None and not patched else None)
                    if patched:
                        self._join(ipr, link, device, patched=True, fresh=True)
                    made = True
                else:
                    self._join(ipr, link, device, patched=patched, fresh=False)
            if not fresh:
                for i in range(len(spec.interfaces), rl.MAX_INTERFACES):
                    if present is None or rl.exp_device(slot, i) in present:
                        links.delete(ipr, rl.exp_device(slot, i))
            for ifname in ("lo", "ctl0", *(iface.name for iface in spec.interfaces)):
                if ifname != "lo" or not fresh:
                    links.set_up(sipr, ifname)
            links.add_address(sipr, "ctl0", self.ctl.interface_of(slot))
            links.add_default_route(sipr, self.ctl.gateway())
            for iface in spec.interfaces:
                address = ipaddress.IPv4Interface(iface.address) if iface.address else None
                if not fresh:
                    for old in links.addresses(sipr, iface.name):
                        if old != address:
                            rl.del_address(sipr, iface.name, old)
                if address is not None:
                    links.add_address(sipr, iface.name, address)
            for dst, via in spec.routes:  # the model's address space via the simulated gateway
                links.add_route(sipr, ipaddress.IPv4Network(dst), via)
            for i, (iface, link) in enumerate(zip(spec.interfaces, wanted, strict=True)):
                kbps = link.capacity_kbps if link is not None else 0
                if kbps > 0 or not fresh:
                    rl.shape(ipr, rl.exp_device(slot, i), kbps)
                    rl.shape(sipr, iface.name, kbps)
            if sysctls:
                for key, value in self._sysctls(spec):
                    netns.set_sysctl(name, key, value)
            if nat:
                self.ctl.add_sliver(slot, *spec.ports)
            vsys = self.store.vsys_links(spec.urn)
            if vsys or not fresh:
                existing = self._vsys_devices(ipr, slot, present)
                for label, device in list(existing.items()):
                    if label not in {v.label for v in vsys}:
                        links.delete(ipr, device)
                        del existing[label]
                for tunnel in vsys:
                    if tunnel.label in existing:
                        self._attach(ipr, existing[tunnel.label], tunnel.key)
                        self._add_remote(ipr, tunnel.key, tunnel.remote)
                    else:
                        self._vsys_add(ipr, sipr, spec, tunnel.label, tunnel.remote, tunnel.key, existing)
                        made = True
        self._ensure_sshd(spec, c)
        return made

    def _paired(self, ipr: IPRoute, sipr: IPRoute, host: str, inner: str, mac: str | None,
                present: set[str] | None) -> bool:
        """Whether veth ``host`` exists with its peer named ``inner`` (with MAC ``mac``) in the sliver."""
        if present is not None and host not in present:
            return False
        outside = rl.link_info(ipr, host)
        inside = rl.link_info(sipr, inner) if outside is not None else None
        if inside is None or outside.get("IFLA_LINK") != inside["index"]:
            return False
        return mac is None or str(inside.get("IFLA_ADDRESS", "")).lower() == mac.lower()

    def remove_sliver(self, urn: str) -> None:
        """Remove sshd, the container, its veths, NAT, cgroup and files (idempotent). The veths' host
        ends go when the kernel frees the namespace, a few ms later in a batch (waiting costs ~25 ms
        a sliver): :meth:`settle` waits for them, as does whatever needs their names again."""
        with self._locked(urn), self._session() as ipr:
            spec = self.store.get_sliver(urn)
            slot = spec.slot if spec is not None else self._slots.get(urn)
            if slot is not None:
                self._remove_slot(ipr, slot, spec)
            self._slots.pop(urn, None)

    def remove_slivers(self, urns: Sequence[str]) -> None:
        """:meth:`remove_sliver` for many slivers at once: every container is killed before any is
        waited for (the kernel frees their namespaces in one batch) and their NAT goes in one transaction."""
        with self._session() as ipr, contextlib.ExitStack() as held:
            for urn in sorted(set(urns)):  # sorted: two batches never wait for each other's locks
                held.enter_context(self._locked(urn))
            slots: dict[int, SliverSpec | None] = {}
            for urn in urns:
                spec = self.store.get_sliver(urn)
                slot = spec.slot if spec is not None else self._slots.get(urn)
                if slot is not None:
                    slots[slot] = spec
            self._remove_slots(ipr, slots)
            for urn in urns:
                self._slots.pop(urn, None)

    def _remove_slot(self, ipr: IPRoute, slot: int, spec: SliverSpec | None) -> None:
        self._remove_slots(ipr, {slot: spec})

    def _remove_slots(self, ipr: IPRoute, slots: dict[int, SliverSpec | None]) -> None:
        """sshd, commands, containers (killed together), cgroups, NAT (one transaction) and files of ``slots``
        (slot -> its spec, if known); their veths are left to the kernel, which frees them with the namespaces."""
        if not slots:
            return
        had_ctl = {slot: links.exists(ipr, rl.ctl_device(slot)) for slot in slots}
        for slot in slots:
            self._end_simulation(slot, 0, forget=True)  # before the container: it holds the namespace
            self._stop_sshd(slot)
            self._forget_commands(slot)
        container.destroy_many([rl.sliver_netns(self.node, slot) for slot in slots], self.run_dir)
        for slot in slots:
            group = container.cgroups().find(rl.cgroup_name(self.node, slot))
            if group is not None:
                group.remove()
        self.ctl.remove_slivers(slots)
        for slot, spec in slots.items():
            shutil.rmtree(self._vsys_dir(slot), ignore_errors=True)
            self._commands_file(slot).unlink(missing_ok=True)
            with self._node_lock:
                self._dying[slot] = (len(spec.interfaces) if spec is not None else rl.MAX_INTERFACES, had_ctl[slot])
            if not had_ctl[slot]:  # a broken sliver: nothing says when its namespace is freed; delete now
                self._settle_slot(ipr, slot, time.monotonic())

    def settle(self, timeout: float = rl.REMOVE_WAIT_S) -> None:
        """Wait until what was removed is gone from the kernel: removed slivers' veths (deleted after
        ``timeout`` if still there) and removed links' bridges and tunnels (the reaper's)."""
        with self._session() as ipr:
            deadline = time.monotonic() + timeout
            for slot in list(self._dying):
                self._settle_slot(ipr, slot, deadline)
        self.reaper.wait(timeout=max(deadline - time.monotonic(), 0) + 30)

    def _settle_slot(self, ipr: IPRoute, slot: int, deadline: float | None = None) -> None:
        """The host ends of a removed namespace's veths go together when the kernel frees it."""
        with self._node_lock:
            pending = self._dying.get(slot)
        if pending is None:
            return
        count, had_ctl = pending
        deadline = time.monotonic() + rl.REMOVE_WAIT_S if deadline is None else deadline
        while had_ctl and links.exists(ipr, rl.ctl_device(slot)) and time.monotonic() < deadline:
            time.sleep(0.002)
        if not had_ctl or links.exists(ipr, rl.ctl_device(slot)):  # kept alive by someone: delete them
            for device in (rl.ctl_device(slot), *(rl.exp_device(slot, i) for i in range(count)),
                           *(rl.vsys_device(slot, i) for i in range(rl.MAX_INTERFACES))):
                links.delete(ipr, device)
        with self._node_lock:
            self._dying.pop(slot, None)

    def status(self, urn: str) -> str | None:
        """``ready`` | ``stopped`` | ``failed`` for a sliver or link; ``None`` when the kernel has none of it."""
        with self._session() as ipr:
            link = self.store.get_link(urn)
            if link is not None and self.patched(link):  # ready once both ends exist and are patched
                ends = rl.patch_ends(ipr, self._members(link))
                return "ready" if ends is None or rl.joined(ipr, *ends) else "failed"
            if link is not None:
                if not links.exists(ipr, rl.bridge_device(link.vni)):
                    return "failed"
                tunnel = rl.gretap_device(link.vni) if link.tunnel == "gretap" else rl.vxlan_device(link.vni)
                if link.remotes and not links.exists(ipr, tunnel):
                    return "failed"
                return "ready"
            spec = self.store.get_sliver(urn)
            slot = spec.slot if spec is not None else self._slots.get(urn)
            if slot is None:
                return None
            name = rl.sliver_netns(self.node, slot)
            c = container.attach(name, self.run_dir)
            if c is None:
                return "failed" if netns.exists(name) else None
            if spec is None or not links.exists(ipr, rl.ctl_device(slot)):
                return "failed"
            return "stopped" if self.store.run_state(urn) == "stopped" else "ready"

    # -- run state, reboot, commands -------------------------------------------------------------------

    def start_sliver(self, urn: str) -> None:
        """(Re)start sshd; a container that died is made again; a simulator's simulation is started."""
        with self._locked(urn), self._session() as ipr:
            spec = self._held(urn)
            c = container.attach(rl.sliver_netns(self.node, spec.slot), self.run_dir)
            if c is None:
                self._ensure_sliver(ipr, spec)
            else:
                self._ensure_sshd(spec, c)
            self.start_simulation(spec)

    def stop_sliver(self, urn: str) -> None:
        """Kill the container's processes except its PID 1 (a simulation first stops on its own, writing its
        results); sshd stays down until started."""
        with self._locked(urn):
            spec = self._held(urn)
            self.stop_simulation(spec)
            self._stop_sshd(spec.slot)
            self._forget_commands(spec.slot)
            c = container.attach(rl.sliver_netns(self.node, spec.slot), self.run_dir)
            if c is None:
                return
            victims = set(mon.pids_in_namespace(mon.namespace_id(c.pid, "pid") or (0, 0)))
            group = container.cgroups().find(rl.cgroup_name(self.node, spec.slot))
            if group is not None:
                victims.update(group.pids())
            for pid in sorted(victims - {c.pid, os.getpid()}):
                _kill(pid)

    def reboot(self, urn: str) -> None:
        """A new PID 1 in the same namespace, then what lives inside again (addresses, route, sshd)."""
        with self._locked(urn), self._session() as ipr:
            spec = self._held(urn)
            self._stop_sshd(spec.slot)
            self._forget_commands(spec.slot)
            c = container.restart(self._container_spec(spec))
            self._plumb(ipr, spec, c, self._ctl_bridge(ipr), False, None, sysctls=False)

    # -- reconcile, teardown, monitor ------------------------------------------------------------------

    def reconcile(self) -> dict[str, list[str]]:
        """Make the kernel match the store: remove this node's objects it does not hold, make what is
        missing. Returns ``{"removed", "created", "kept", "failed"}`` lists (kernel object names for
        removals, URNs otherwise, ``"<urn>: <why>"`` for failures)."""
        report: dict[str, list[str]] = {"removed": [], "created": [], "kept": [], "failed": []}
        with self._session() as ipr:
            self.settle()
            with self._node_lock:
                self._setup(ipr)
                self._bridges.clear()
            slivers = self.store.slivers()
            wanted = {spec.slot: spec for spec in slivers.values()}
            vnis = {link.vni for link in self.store.links().values()}
            vnis |= self.store.vsys_keys()
            stale_ns = {slot: name for name in netns.names(f"primo-{self.node}-")
                        if (slot := rl.parse_sliver_netns(self.node, name)) is not None and slot not in wanted}
            self._remove_slots(ipr, dict.fromkeys(stale_ns))
            report["removed"] += [f"netns {name}" for name in stale_ns.values()]
            report["removed"] += [f"cgroup {name}" for name in self._remove_cgroups(set(wanted))]
            self.settle()  # the removed namespaces' veths are gone before devices are listed
            stale = sorted(set(self.ctl.slivers()) - set(wanted))
            self.ctl.remove_slivers(stale)
            report["removed"] += [f"nat slot {slot}" for slot in stale]
            present = set(links.names(ipr, "primo"))
            for device in sorted(present):
                parsed = rl.parse_device(device)
                if parsed is None:
                    continue
                if parsed.role in ("ctl", "exp", "vsys"):
                    spec = wanted.get(parsed.number)
                    gone = spec is None or (parsed.role == "exp" and parsed.index >= len(spec.interfaces))
                else:
                    gone = parsed.number not in vnis
                if gone and links.exists(ipr, device):
                    links.delete(ipr, device)
                    present.discard(device)
                    report["removed"].append(f"device {device}")
            for spec in slivers.values():
                self._reconcile_one(report, spec.urn, lambda s=spec: self._ensure_sliver(ipr, s, present))
            for link in self.store.links().values():
                self._reconcile_one(report, link.urn, lambda s=link: self._ensure_link(ipr, s, thorough=True))
        return report

    def _reconcile_one(self, report: dict[str, list[str]], urn: str, ensure: Any) -> None:
        with self._locked(urn):
            try:
                report["created" if ensure() else "kept"].append(urn)
            except EmuError as exc:
                report["failed"].append(f"{urn}: {exc}")

    def _remove_cgroups(self, keep: set[int]) -> list[str]:
        """Remove this node's cgroups but those of the slots in ``keep``; returns the names removed."""
        removed = []
        for name in container.cgroups().names(f"primo/{self.node}-"):
            slot = rl.parse_cgroup(self.node, name)
            group = container.cgroups().find(name) if slot is not None and slot not in keep else None
            if group is not None:
                group.remove()
                removed.append(name)
        return removed

    def teardown(self) -> None:
        """Remove everything of this node: slivers, devices, NAT table, control bridge, cgroups, files."""
        with self._session() as ipr, self._node_lock:
            self._end_simulations()
            slots = (rl.parse_sliver_netns(self.node, name) for name in netns.names(f"primo-{self.node}-"))
            self._remove_slots(ipr, {slot: None for slot in slots if slot is not None})
            self._remove_cgroups(set())
            self.settle()
            for device in links.names(ipr, "primo"):  # deleted in one batch: ~20-40 ms each one by one
                if rl.parse_device(device) is not None:
                    self.reaper.retire(ipr, device)
            self.reaper.wait()
            self.ctl.teardown()
            for directory in ("containers", "sshd", "commands", "simulations"):
                shutil.rmtree(self.state_dir / directory, ignore_errors=True)
            for tree in (self.sshd_dir, rl.vsys_root(self.state_dir), sim_root(self.state_dir)):
                shutil.rmtree(tree, ignore_errors=True)
            (self.state_dir / "uids.json").unlink(missing_ok=True)
            for table in (self._slots, self._vnis, self._bridges, self._warnings, self._shaped, self._patches):
                table.clear()
            self._uids = self._ctl_index = None

    def monitor(self) -> dict[str, Any]:
        """Node usage, per-sliver CPU and memory, per-device counters of this node's devices."""
        slivers: dict[str, Any] = {}
        for urn, spec in self.store.slivers().items():
            group = container.cgroups().find(rl.cgroup_name(self.node, spec.slot))
            if group is not None:
                usage = group.usage()
                slivers[urn] = {"cpu_ns": usage.cpu_ns, "memory_bytes": usage.memory_bytes}
        with self._session() as ipr:
            counters = links.counters(ipr, None)
        interfaces = {name: {"rx_bytes": c.rx_bytes, "tx_bytes": c.tx_bytes, "rx_packets": c.rx_packets,
                             "tx_packets": c.tx_packets}
                      for name, c in sorted(counters.items())
                      if rl.parse_device(name) is not None or name == self.ctl.bridge}
        return {"node": mon.node_usage(self._cpu, self.state_dir), "slivers": slivers, "interfaces": interfaces}


__all__ = ["PING_GROUPS", "UID_BASE", "Realizer"]
