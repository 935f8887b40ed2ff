"""The realizer's node context and its link half: kernel names, bridges, tunnels, shaping, vsys links.

:class:`LinkRealizer` is the base of :class:`~primogeni.agent.realize.Realizer`. It holds what
every operation needs — the node namespace, one ``IPRoute`` per call (:meth:`_session`), a lock
per URN and the node lock — and realizes :class:`~primogeni.agent.spec.LinkSpec`: a bridge
``primob<vni>`` with the members' host-side veths, a tunnel ``primox<vni>`` (VXLAN, UDP 4789 from
the underlay address) with one all-zero FDB entry per remote node, tbf on both ends of each
member veth; and the vsys links slivers ask for (veth ``primo<slot>t<i>`` ↔ LABEL, labelled with
``ifalias`` = LABEL so it can be found again, on bridge ``primob<key>``).

Kernel names come from :mod:`primogeni.agent.names` (re-exported here for the realizer's modules).
Removed bridges and tunnels go to :class:`Reaper`, which deletes them in the background.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from pyroute2 import IPRoute  # type: ignore[import-untyped]
from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]

from primogeni.agent.names import (
    DeviceName,
    bridge_device,
    cgroup_name,
    ctl_device,
    exp_device,
    gretap_device,
    parse_cgroup,
    parse_device,
    parse_sliver_netns,
    sliver_netns,
    stable_mac,
    vsys_device,
    vsys_dir,
    vsys_root,
    vxlan_device,
)
from primogeni.agent.reaper import RETIRED_GROUP, Reaper
from primogeni.agent.spec import LinkSpec, SliverSpec
from primogeni.agent.store import VsysLink
from primogeni.emu import features as emu_features
from primogeni.emu import links, netns, patch, tc
from primogeni.emu import sys as esys
from primogeni.emu.nat import ControlNet
from primogeni.errors import EmuError, FeatureMissing

VXLAN_PORT = 4789
VXLAN_OVERHEAD = 50  # bytes: outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8
MAX_INTERFACES = 15  # experimental (and vsys) veths per sliver: index 0…e
REMOVE_WAIT_S = 5.0  # how long to wait for the kernel to drop what was removed

class SpecStore(Protocol):
    """What the realizer reads of the agent's store (:class:`primogeni.agent.store.Store`)."""

    def slivers(self) -> dict[str, SliverSpec]: ...
    def links(self) -> dict[str, LinkSpec]: ...
    def get_sliver(self, urn: str) -> SliverSpec | None: ...
    def get_link(self, urn: str) -> LinkSpec | None: ...
    def run_state(self, urn: str) -> str: ...
    def vsys_links(self, sliver_urn: str) -> list[VsysLink]: ...
    def vsys_keys(self) -> set[int]: ...
    def vsys_remotes(self, key: int, skip: tuple[str, str] | None = None) -> set[str] | None: ...


def link_info(ipr: IPRoute, name: str) -> Any:
    """The kernel's message for device ``name`` (one request), or ``None`` when there is none."""
    try:
        return ipr.link("get", ifname=name)[0]
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return None
        raise EmuError(f"cannot read the device: {os.strerror(exc.code)}", name) from exc


def set_alias(ipr: IPRoute, name: str, alias: str) -> None:
    """Label a device (``ifalias``)."""
    try:
        ipr.link("set", ifname=name, ifalias=alias)
    except NetlinkError as exc:
        raise EmuError(f"cannot set its alias to {alias!r}: {os.strerror(exc.code)}", name) from exc


def del_address(ipr: IPRoute, name: str, iface: ipaddress.IPv4Interface) -> None:
    idx = links.index(ipr, name)
    if idx is None:
        return
    try:
        ipr.addr("del", index=idx, address=str(iface.ip), prefixlen=iface.network.prefixlen)
    except NetlinkError as exc:
        if exc.code != errno.EADDRNOTAVAIL:
            raise EmuError(f"cannot remove address {iface}: {os.strerror(exc.code)}", name) from exc


def joined(ipr: IPRoute, a: str, b: str) -> bool:
    """Whether devices ``a`` and ``b`` are patched to each other (both redirects in place)."""
    ia, ib = links.index(ipr, a), links.index(ipr, b)
    return ia is not None and ib is not None and patch.redirect_of(ipr, ia) == ib and patch.redirect_of(ipr, ib) == ia


def patch_ends(ipr: IPRoute, members: Sequence[tuple[SliverSpec, int]]) -> tuple[str, str] | None:
    """The host-side veths of a patched link's two members, or ``None`` until both exist."""
    ends = [exp_device(sliver.slot, index) for sliver, index in members]
    if len(ends) != 2 or not all(links.exists(ipr, end) for end in ends):
        return None
    return ends[0], ends[1]


def shape(ipr: IPRoute, device: str, kbps: int) -> None:
    """tbf at ``kbps`` on the device's egress; ``0`` removes any shaping there.

    No read-back first: reading qdiscs is a dump of every device's, dearer than setting.
    """
    if kbps > 0:
        tc.shape(ipr, device, kbps)
    else:
        tc.clear(ipr, device)


class LinkRealizer:
    """Node context and link operations; see the module docstring. Subclassed by ``Realizer``."""

    def __init__(self, *, node: str, state_dir: Path, underlay_dev: str, underlay_ip: str, store: SpecStore,
                 ctl_subnet: str = "172.30.0.0/16", experimental_pool: str = "10.0.0.0/8", features: Any = None):
        self.node, self.state_dir, self.store, self._features = node, Path(state_dir), store, features
        self.underlay_dev, self.underlay_ip = underlay_dev, underlay_ip
        self.ctl = ControlNet(underlay_dev=underlay_dev, underlay_ip=underlay_ip, subnet=ctl_subnet,
                              experimental_pool=experimental_pool)
        self._node_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        st = os.fstat(self._node_fd)
        self._node_id = (st.st_dev, st.st_ino)
        self._owner = threading.get_ident()
        self._owner_ipr: IPRoute | None = None
        self._tls = threading.local()
        self._guard = threading.Lock()
        self._locks: dict[str, threading.RLock] = {}
        self._node_lock = threading.RLock()
        self._warnings: dict[str, list[str]] = {}
        self._bridges: dict[int, int] = {}  # vni -> ifindex of primob<vni>, as this process saw it
        self._vnis: dict[str, int] = {}  # link urn -> vni, of links this process made
        self._shaped: set[str] = set()  # link urns this process shaped
        self._patches: dict[str, tuple[str, str]] = {}  # link urn -> the two devices this process patched
        self._mtu: int | None = None
        self.reaper = Reaper(f"/proc/self/fd/{self._node_fd}")

    # -- context -----------------------------------------------------------------------------------

    @property
    def features(self) -> Any:
        """What this kernel offers (``emu.features.detect()``, probed once, in the node namespace)."""
        if self._features is None:
            with self._session():
                self._features = emu_features.detect()
        return self._features

    @contextlib.contextmanager
    def _session(self) -> Iterator[IPRoute]:
        """The node ``IPRoute`` for this call, with the calling thread in the node namespace."""
        current = getattr(self._tls, "ipr", None)
        if current is not None:
            yield current
            return
        st = os.stat("/proc/thread-self/ns/net")
        here = (st.st_dev, st.st_ino) == self._node_id
        with contextlib.nullcontext() if here else esys.in_netns(f"/proc/self/fd/{self._node_fd}"):
            owner = here and threading.get_ident() == self._owner
            if owner and self._owner_ipr is not None:
                ipr = self._owner_ipr
            else:
                ipr = netns.iproute(None)
                if owner:
                    self._owner_ipr = ipr
            self._tls.ipr = ipr
            try:
                yield ipr
            finally:
                self._tls.ipr = None
                if ipr is not self._owner_ipr:
                    ipr.close()

    def _locked(self, urn: str) -> threading.RLock:
        """The lock serialising work on ``urn``."""
        with self._guard:
            return self._locks.setdefault(urn, threading.RLock())

    def close(self) -> None:
        """Stop the reaper (after it deleted what was retired) and release the realizer's descriptors."""
        self.reaper.close()
        if self._owner_ipr is not None and threading.get_ident() == self._owner:
            self._owner_ipr.close()
            self._owner_ipr = None
        self.ctl.close()
        if self._node_fd >= 0:
            os.close(self._node_fd)
            self._node_fd = -1

    def warnings(self, urn: str) -> list[str]:
        """What could not be done as asked for ``urn`` without failing it (latency without netem …)."""
        return list(self._warnings.get(urn, ()))

    def _exp_mtu(self, ipr: IPRoute) -> int:
        """MTU of experimental veths: what still fits a VXLAN frame on the underlay."""
        if self._mtu is None:
            info = link_info(ipr, self.underlay_dev)
            if info is None:
                raise EmuError("the underlay device does not exist", self.underlay_dev)
            self._mtu = int(info.get("IFLA_MTU")) - VXLAN_OVERHEAD
        return self._mtu

    def _add_veth(self, ipr: IPRoute, host: str, peer: str, ns: str, **opts: Any) -> None:
        """A veth ``host`` (up) ↔ ``peer`` in namespace ``ns``; a leftover ``host`` is replaced."""
        try:
            links.add_veth(ipr, host, peer, peer_netns=ns, up=True, **opts)
        except EmuError:
            if not links.exists(ipr, host):
                raise
            links.delete(ipr, host)  # e.g. of a namespace the kernel has not finished removing
            links.add_veth(ipr, host, peer, peer_netns=ns, up=True, **opts)

    # -- bridges and tunnels (node lock) -------------------------------------------------------------

    def _bridge(self, ipr: IPRoute, vni: int) -> int:
        """The index of ``primob<vni>``, made (up, no STP) when missing."""
        with self._node_lock:
            known = self._bridges.get(vni)
            if known is not None:
                return known
            self.reaper.wait({bridge_device(vni)})
            idx = links.index(ipr, bridge_device(vni))
            if idx is None:
                idx = links.add_bridge(ipr, bridge_device(vni))
            self._bridges[vni] = idx
            return idx

    def _attach(self, ipr: IPRoute, device: str, vni: int | None) -> None:
        """Make ``device`` a port of ``primob<vni>`` (``None``: of no bridge)."""
        if vni is None:
            links.set_master(ipr, device, None)
            return
        try:
            links.set_master(ipr, device, self._bridge(ipr, vni))
        except EmuError:
            if not links.exists(ipr, device):
                raise
            with self._node_lock:  # the cached index was stale (the bridge was removed meanwhile)
                self._bridges.pop(vni, None)
                links.set_master(ipr, device, self._bridge(ipr, vni))

    def _remove_bridge(self, ipr: IPRoute, vni: int) -> list[str]:
        """Retire ``vni``'s tunnels and bridge (the reaper deletes them); returns the names that were there."""
        with self._node_lock:
            self._bridges.pop(vni, None)
            return [name for name in (vxlan_device(vni), gretap_device(vni), bridge_device(vni))
                    if self.reaper.retire(ipr, name)]

    def _ensure_tunnel(self, ipr: IPRoute, spec: LinkSpec, keep: set[str]) -> None:
        """``spec``'s tunnel on its bridge, flooding to its remotes (and to ``keep``, which is not pruned)."""
        vni, wanted = spec.vni, set(spec.remotes)
        with self._node_lock:
            bridge = self._bridge(ipr, vni)
            if spec.tunnel == "gretap":
                name = gretap_device(vni)
                if len(wanted) != 1 or keep - wanted:
                    raise EmuError("a gretap tunnel reaches exactly one remote node; use vxlan", name)
                links.delete(ipr, vxlan_device(vni))
                links.delete(ipr, name)  # its remote is fixed when it is made
                links.add_gretap(ipr, name, vni, local=self.underlay_ip, remote=next(iter(wanted)), master=bridge)
                return
            name = vxlan_device(vni)
            links.delete(ipr, gretap_device(vni))
            self.reaper.wait({name})  # a VNI is one device's until that is deleted
            if not links.exists(ipr, name):
                if not getattr(self.features, "vxlan", True):
                    raise FeatureMissing("this kernel has no VXLAN: no links across nodes", name)
                links.add_vxlan(ipr, name, vni, local=self.underlay_ip, dev=self.underlay_dev, port=VXLAN_PORT,
                                master=bridge)
                present: set[str] = set()
            else:
                links.set_master(ipr, name, bridge)
                present = links.fdb_remotes(ipr, name)
            for remote in sorted(wanted - present):
                links.fdb_add_remote(ipr, name, remote)
            for remote in sorted(present - wanted - keep):
                links.fdb_del_remote(ipr, name, remote)

    # -- links ---------------------------------------------------------------------------------------

    def ensure_link(self, spec: LinkSpec) -> None:
        """Bridge, tunnel, members and shaping of a link (idempotent)."""
        with self._locked(spec.urn), self._session() as ipr:
            self._ensure_link(ipr, spec, thorough=spec.urn in self._shaped)

    def _ensure_link(self, ipr: IPRoute, spec: LinkSpec, *, thorough: bool) -> bool:
        """Returns whether the bridge had to be made. ``thorough``: also undo shaping no longer asked."""
        if spec.tunnel == "gretap" and spec.remotes and not getattr(self.features, "gretap", False):
            raise FeatureMissing("this kernel has no gretap (GRE): use the vxlan tunnel kind", spec.urn)
        old = self._vnis.get(spec.urn)
        if old is not None and old != spec.vni:
            self._release_vni(ipr, old, link=spec.urn)
        self._vnis[spec.urn] = spec.vni
        notes = []
        if spec.latency_ms > 0 or spec.packet_loss > 0:
            notes.append(f"latency {spec.latency_ms} ms / loss {spec.packet_loss} not applied: "
                         + ("this kernel has no netem" if not getattr(self.features, "netem", False)
                            else "the agent does not drive netem"))
        self._warnings[spec.urn] = notes
        members = self._members(spec, notes)
        if self.patched(spec):
            made = self._ensure_patch(ipr, spec, members, thorough=thorough)
        else:
            made = self._ensure_bridged(ipr, spec, members, thorough=thorough)
        if spec.capacity_kbps > 0 or thorough:
            for sliver, index in members:
                if links.exists(ipr, exp_device(sliver.slot, index)):
                    self._shape_member(ipr, sliver, index, spec.capacity_kbps)
        (self._shaped.add if spec.capacity_kbps > 0 else self._shaped.discard)(spec.urn)
        return made

    def patched(self, spec: LinkSpec, vsys_skip: tuple[str, str] | None = None) -> bool:
        """Whether the link is a patch (two members here, no tunnel, no vsys link on its VNI) rather
        than a bridge; ``vsys_skip``: a vsys link (sliver urn, label) being removed, left out."""
        return (not spec.remotes and len(spec.members) == 2 and getattr(self.features, "redirect", True)
                and self.store.vsys_remotes(spec.vni, vsys_skip) is None)

    def _ensure_patch(self, ipr: IPRoute, spec: LinkSpec, members: list[tuple[SliverSpec, int]], *,
                      thorough: bool) -> bool:
        """The two members' host-side veths redirect to each other (see :mod:`primogeni.emu.patch`); a
        bridge or tunnel the link had goes. Returns whether the patch had to be made."""
        if spec.vni in self._bridges or (thorough and links.exists(ipr, bridge_device(spec.vni))):
            for sliver, index in members:
                if links.exists(ipr, exp_device(sliver.slot, index)):
                    links.set_master(ipr, exp_device(sliver.slot, index), None)
            self._remove_bridge(ipr, spec.vni)
        pair = patch_ends(ipr, members)
        if pair is None:
            self._patches.pop(spec.urn, None)
            return False  # a member is not made yet: ensure_sliver patches when it is
        made = not joined(ipr, *pair) if thorough else self._patches.get(spec.urn) != pair
        if made:
            patch.patch(ipr, *pair)
        self._patches[spec.urn] = pair
        return made

    def _ensure_bridged(self, ipr: IPRoute, spec: LinkSpec, members: list[tuple[SliverSpec, int]], *,
                        thorough: bool) -> bool:
        """Bridge ``primob<vni>`` with the members and the tunnel. Returns whether the bridge had to be made."""
        with self._node_lock:
            made = spec.vni not in self._bridges and links.index(ipr, bridge_device(spec.vni)) is None
            self._bridge(ipr, spec.vni)
        if spec.remotes:
            self._ensure_tunnel(ipr, spec, self.store.vsys_remotes(spec.vni) or set())
        else:  # no tunnel, unless vsys links need it (the store is scanned only when there is one)
            tunnels = [name for name in (vxlan_device(spec.vni), gretap_device(spec.vni)) if links.exists(ipr, name)]
            if tunnels and self.store.vsys_remotes(spec.vni) is None:
                with self._node_lock:
                    for name in tunnels:
                        links.delete(ipr, name)
        unpatch = thorough or spec.urn in self._patches
        self._patches.pop(spec.urn, None)
        for sliver, index in members:
            device = exp_device(sliver.slot, index)
            if unpatch:
                patch.unpatch(ipr, device)
            try:
                self._attach(ipr, device, spec.vni)
            except EmuError:
                if links.exists(ipr, device):
                    raise
                continue  # the sliver is not made yet: ensure_sliver attaches it
        return made

    def _join(self, ipr: IPRoute, link: LinkSpec | None, device: str, *, patched: bool, fresh: bool) -> None:
        """Put a member's host-side veth ``device`` (just made when ``fresh``) on its link: patched to
        the other member once that exists (``patched``: the link is a patch), or on the link's bridge;
        ``None``: on no link."""
        if link is not None and patched:
            if fresh:  # the other member's redirect pointed at the device this one replaces
                self._patches.pop(link.urn, None)
            else:
                links.set_master(ipr, device, None)
            self._ensure_patch(ipr, link, self._members(link), thorough=False)
            return
        if link is not None and link.urn in self._patches:
            patch.unpatch(ipr, device)
        self._attach(ipr, device, link.vni if link is not None else None)

    def _members(self, spec: LinkSpec, missing: list[str] | None = None) -> list[tuple[SliverSpec, int]]:
        """``(sliver spec, interface index)`` of the link's members the store holds (others noted in ``missing``)."""
        found = []
        for sliver_urn, ifname in spec.members:
            sliver = self.store.get_sliver(sliver_urn)
            if sliver is None:
                continue
            for index, iface in enumerate(sliver.interfaces):
                if iface.name == ifname:
                    found.append((sliver, index))
                    break
            else:
                if missing is not None:
                    missing.append(f"member {sliver_urn} has no interface {ifname}")
        return found

    def _shape_member(self, ipr: IPRoute, sliver: SliverSpec, index: int, kbps: int) -> None:
        """tbf on both ends of a member veth: host side egress and, inside the sliver, egress."""
        shape(ipr, exp_device(sliver.slot, index), kbps)
        with netns.iproute(sliver_netns(self.node, sliver.slot)) as sipr:
            shape(sipr, sliver.interfaces[index].name, kbps)

    def remove_link(self, urn: str) -> None:
        """Remove the link's bridge and tunnel and its members' shaping (idempotent)."""
        self.remove_links([urn])

    def remove_links(self, urns: Sequence[str]) -> None:
        """Remove links' bridges and tunnels (those no other link or vsys link uses) and their members'
        shaping (idempotent): the store is read once, and the bridges and tunnels are all retired
        before the reaper deletes them (in one batch)."""
        gone = frozenset(urns)
        with self._session() as ipr, self.reaper.hold():
            held = {spec.vni for spec in self.store.links().values() if spec.urn not in gone}
            held |= self.store.vsys_keys()
            for urn in urns:
                with self._locked(urn):
                    spec = self.store.get_link(urn)
                    vni = spec.vni if spec is not None else self._vnis.get(urn)
                    if vni is None:
                        continue
                    if spec is not None and (spec.capacity_kbps > 0 or urn in self._shaped):
                        for sliver, index in self._members(spec):
                            if links.exists(ipr, exp_device(sliver.slot, index)):
                                self._shape_member(ipr, sliver, index, 0)
                    for device in self._patches.pop(urn, ()):
                        patch.unpatch(ipr, device)
                    if vni in held:  # shared with a link or vsys link that stays
                        self._release_vni(ipr, vni, link=urn, gone=gone)
                    else:
                        self._remove_bridge(ipr, vni)
                    self._vnis.pop(urn, None)
                    self._warnings.pop(urn, None)
                    self._shaped.discard(urn)

    def _release_vni(self, ipr: IPRoute, vni: int, *, link: str | None = None,
                     vsys: tuple[str, str] | None = None, gone: frozenset[str] = frozenset()) -> None:
        """Link ``link`` (and links ``gone``) or vsys link ``vsys`` (sliver urn, label) left ``vni``:
        remove its bridge when nothing else uses it, else flood only to the remotes still needed."""
        others = [spec for spec in self.store.links().values() if spec.vni == vni and spec.urn != link
                  and spec.urn not in gone]
        keep = self.store.vsys_remotes(vni, vsys)
        if not others and keep is None:
            self._remove_bridge(ipr, vni)
            return
        wanted = (keep or set()).union(*(spec.remotes for spec in others))
        with self._node_lock:
            name = vxlan_device(vni)
            if links.exists(ipr, name):
                for remote in links.fdb_remotes(ipr, name) - wanted:
                    links.fdb_del_remote(ipr, name, remote)

    def set_link_state(self, urn: str, up: bool) -> None:
        """Take the link down or up: its members' host-side veths and its tunnel (slivers cannot undo it)."""
        with self._locked(urn), self._session() as ipr:
            spec = self.store.get_link(urn)
            if spec is None:
                raise EmuError("no such link on this node", urn)
            devices = [exp_device(sliver.slot, index) for sliver, index in self._members(spec)]
            devices += [name for name in (vxlan_device(spec.vni), gretap_device(spec.vni)) if links.exists(ipr, name)]
            for device in devices:
                (links.set_up if up else links.set_down)(ipr, device)

    # -- vsys links ------------------------------------------------------------------------------------

    def vsys_setup_link(self, sliver_urn: str, label: str, remote: str, key: int) -> None:
        """Give the sliver an interface ``label`` on bridge ``primob<key>``, tunnelled to ``remote``.

        Mechanism only: the vsys server has authorised the request.
        """
        with self._locked(sliver_urn), self._session() as ipr:
            spec = self.store.get_sliver(sliver_urn)
            if spec is None:
                raise EmuError("no such sliver on this node", sliver_urn)
            existing = self._vsys_devices(ipr, spec.slot, None)
            if label in existing:
                self._attach(ipr, existing[label], key)
                self._add_remote(ipr, key, remote)
                return
            with netns.iproute(sliver_netns(self.node, spec.slot)) as sipr:
                self._vsys_add(ipr, sipr, spec, label, remote, key, existing)
            for link in self.store.links().values():  # a patched link on this key becomes a bridge
                if link.vni == key and link.urn in self._patches:
                    self._ensure_bridged(ipr, link, self._members(link), thorough=True)

    def _vsys_devices(self, ipr: IPRoute, slot: int, present: set[str] | None) -> dict[str, str]:
        """``{label: host device}`` of the sliver's vsys veths (a device without a label: ``"\\0" + name``)."""
        found = {}
        for index in range(MAX_INTERFACES):
            device = vsys_device(slot, index)
            if present is not None and device not in present:
                continue
            info = link_info(ipr, device)
            if info is not None:
                found[info.get("IFLA_IFALIAS") or "\0" + device] = device
        return found

    def _vsys_add(self, ipr: IPRoute, sipr: IPRoute, spec: SliverSpec, label: str, remote: str, key: int,
                  existing: dict[str, str]) -> None:
        if label in ("lo", "ctl0") or any(iface.name == label for iface in spec.interfaces):
            raise EmuError(f"the sliver has an interface {label!r} already", spec.urn)
        used = {int(device[-1], 16) for device in existing.values()}
        free = next((i for i in range(MAX_INTERFACES) if i not in used), None)
        if free is None:
            raise EmuError(f"at most {MAX_INTERFACES} vsys links per sliver", spec.urn)
        device = vsys_device(spec.slot, free)
        self._add_veth(ipr, device, label, sliver_netns(self.node, spec.slot), master=self._bridge(ipr, key),
                       mtu=self._exp_mtu(ipr), peer_mac=stable_mac(self.node, spec.slot, label))
        set_alias(ipr, device, label)
        links.set_up(sipr, label)
        self._add_remote(ipr, key, remote)
        existing[label] = device

    def _add_remote(self, ipr: IPRoute, vni: int, remote: str) -> None:
        """``vni``'s VXLAN (made when missing) floods to ``remote`` too."""
        with self._node_lock:
            name = vxlan_device(vni)
            self.reaper.wait({name})
            if not links.exists(ipr, name):
                links.add_vxlan(ipr, name, vni, local=self.underlay_ip, dev=self.underlay_dev, port=VXLAN_PORT,
                                master=self._bridge(ipr, vni))
            links.fdb_add_remote(ipr, name, remote)

    def vsys_delete_link(self, sliver_urn: str, label: str) -> None:
        """Remove the sliver's vsys interface ``label``, and its bridge or flood entry when unused (idempotent)."""
        with self._locked(sliver_urn), self._session() as ipr:
            spec = self.store.get_sliver(sliver_urn)
            if spec is None:
                return
            device = self._vsys_devices(ipr, spec.slot, None).get(label)
            if device is not None:
                links.delete(ipr, device)
            link = next((v for v in self.store.vsys_links(sliver_urn) if v.label == label), None)
            if link is not None:
                self._release_vni(ipr, link.key, vsys=(sliver_urn, label))
                for other in self.store.links().values():  # back to a patch when it can be one again
                    if other.vni == link.key and self.patched(other, (sliver_urn, label)):
                        self._ensure_patch(ipr, other, self._members(other), thorough=True)


__all__ = ["MAX_INTERFACES", "REMOVE_WAIT_S", "RETIRED_GROUP", "VXLAN_OVERHEAD", "VXLAN_PORT", "DeviceName",
           "LinkRealizer", "Reaper", "SpecStore", "bridge_device", "cgroup_name", "ctl_device", "del_address",
           "exp_device", "gretap_device", "joined", "link_info", "parse_cgroup", "parse_device", "parse_sliver_netns",
           "patch_ends", "set_alias", "shape", "sliver_netns", "stable_mac", "vsys_device", "vsys_dir", "vsys_root",
           "vxlan_device"]
