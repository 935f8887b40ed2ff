"""The node's control network: bridge ``primo-ctl`` and the nftables rules that NAT slivers' port ranges.

Each sliver has a control address on the bridge's subnet (``address_of(slot)``: host number
``slot + 2``; the node is host 1, the gateway) and owns a range of ports ``lo..hi`` on the node's
underlay address. Table ``inet primo``:

- ``prerouting`` and ``output`` (nat): TCP/UDP to ``underlay_ip`` jumps through the chains
  ``dnat_0`` … ``dnat_31``; a sliver's rule there (in ``dnat_<slot % 32>``) DNATs its port range to
  its control address, same port;
- ``postrouting`` (nat): control-subnet traffic leaving via the underlay device jumps through
  ``snat_0`` … ``snat_31``, where a sliver's two rules (TCP, UDP) SNAT it to ``underlay_ip`` with a
  source port in its range; anything else from the control subnet is SNAT'd to the address alone;
- ``forward`` (filter) drops control→control traffic (slivers are also isolated on the bridge with
  ``links.set_isolated``), control→experimental pool traffic (the underlay's own subnet excepted,
  since the embedded underlay 10.254.0.0/24 lies inside the default pool 10/8), and new connections
  towards the bridge that were not DNAT'd (so nothing outside a sliver's range reaches it);
  ``input`` drops control→pool traffic addressed to the node itself.

Why rules in 32 fixed chains, rather than set elements or chains per sliver: libnftables 1.0.6
reads every set element of the ruleset before each command (a map of 500 slivers made each add
cost ~5 ms), and reads all chains before adding a rule (a chain pair per sliver made each add cost
~2 ms at 500 slivers, and put 1000 hooks on every new connection of the node). With a fixed set of
chains an add costs ~0.5 ms whatever the table holds. Each rule carries the comment ``primo
slot=N ports=LO-HI``: :meth:`ControlNet.slivers` reads the slivers back from the kernel by it, and
removal finds the rules' handles by it, listing only the sliver's two chains when the handles are
not known yet. What the kernel holds is cached (read once, then kept up to date by our own
transactions); a transaction that fails because the kernel differs re-reads it and retries once.
NAT chains run only for a connection's first packet.
The veths (``primo<slot>c`` / ``ctl0``) are the agent's, not this module's.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any

from primogeni.emu import links, netns
from primogeni.emu.nft import Nft
from primogeni.errors import EmuError

TABLE = "inet primo"
SHARDS = 32
_COMMENT = re.compile(r"^primo slot=(\d+) ports=(\d+)-(\d+)$")
SliverRange = tuple[IPv4Address, int, int]
Handles = list[tuple[str, int]]  # (chain, rule handle)


class ControlNet:
    """The control network of one node (in namespace ``netns``; ``None``: the caller's)."""

    def __init__(self, *, underlay_dev: str, underlay_ip: str, subnet: str = "172.30.0.0/16",
                 bridge: str = "primo-ctl", experimental_pool: str = "10.0.0.0/8", netns: str | None = None):
        self.underlay_dev = underlay_dev
        self.underlay_ip = IPv4Address(underlay_ip)
        self.subnet = IPv4Network(subnet)
        self.bridge = bridge
        self.experimental_pool = IPv4Network(experimental_pool)
        self.netns = netns
        if self.subnet.num_addresses < 4:
            raise EmuError(f"control subnet {subnet} is too small", bridge)
        if self.subnet.overlaps(self.experimental_pool):
            raise EmuError(f"control subnet {subnet} overlaps the experimental pool {experimental_pool}", bridge)
        self._nft: Nft | None = None
        self._lock = threading.Lock()
        self._known: dict[int, tuple[int, int]] | None = None  # slot -> range, as the kernel has it
        self._handles: dict[int, Handles] = {}  # slot -> its rules, when known

    # -- addresses (pure) ------------------------------------------------------------------------

    def gateway(self) -> IPv4Address:
        """The node's address on the control bridge (the subnet's first host)."""
        return self.subnet.network_address + 1

    def address_of(self, slot: int) -> IPv4Address:
        """The control address of the sliver in ``slot``: subnet host number ``slot + 2``."""
        if slot < 0 or slot + 2 >= self.subnet.num_addresses - 1:
            raise EmuError(f"slot {slot} does not fit the control subnet {self.subnet}", self.bridge)
        return self.subnet.network_address + slot + 2

    def interface_of(self, slot: int) -> IPv4Interface:
        """The sliver's ``ctl0`` address with the subnet's prefix (what the agent puts on ``ctl0``)."""
        return IPv4Interface(f"{self.address_of(slot)}/{self.subnet.prefixlen}")

    # -- the bridge and the table ----------------------------------------------------------------

    @property
    def nft(self) -> Nft:
        if self._nft is None:
            self._nft = Nft(self.netns)
        return self._nft

    def _underlay_net(self) -> IPv4Network:
        """The underlay subnet (exempt from the pool drop), from the underlay device's addresses."""
        with netns.iproute(self.netns) as ipr:
            if links.index(ipr, self.underlay_dev) is None:
                raise EmuError("the underlay device does not exist", self.underlay_dev)
            for iface in links.addresses(ipr, self.underlay_dev):
                if iface.ip == self.underlay_ip:
                    return iface.network
        return IPv4Network(f"{self.underlay_ip}/32")

    def setup(self) -> None:
        """Make the bridge, its gateway address, forwarding and the table (idempotent; keeps slivers).

        Slivers' rules name the underlay address they were added with: after changing it, add them again.
        """
        with netns.iproute(self.netns) as ipr:
            if links.index(ipr, self.bridge) is None:
                links.add_bridge(ipr, self.bridge)
            else:
                links.set_up(ipr, self.bridge)
            links.add_address(ipr, self.bridge, IPv4Interface(f"{self.gateway()}/{self.subnet.prefixlen}"))
        netns.set_sysctl(self.netns, "net.ipv4.ip_forward", "1")
        with self._lock:
            self.nft.run(self._ruleset())
            self._known = None

    def _ruleset(self) -> str:
        """The table and its fixed chains (flushed and refilled); the shard chains keep the slivers' rules."""
        br, ul, uip = self.bridge, self.underlay_dev, self.underlay_ip
        ctl, pool, ulnet = self.subnet, self.experimental_pool, self._underlay_net()
        to_dnat = [f"ip daddr {uip} meta l4proto {{ tcp, udp }} jump dnat_{k}" for k in range(SHARDS)]
        fixed = {
            "prerouting": ("type nat hook prerouting priority dstnat; policy accept;", to_dnat),
            "output": ("type nat hook output priority -100; policy accept;", to_dnat),
            "postrouting": ("type nat hook postrouting priority srcnat; policy accept;",
                            [f'oifname "{ul}" ip saddr {ctl} jump snat_{k}' for k in range(SHARDS)]
                            + [f'oifname "{ul}" ip saddr {ctl} snat ip to {uip}']),
            "forward": ("type filter hook forward priority filter; policy accept;", [
                f'iifname "{br}" oifname "{br}" drop',
                f'iifname "{br}" ip daddr != {ulnet} ip daddr {pool} drop',
                f'oifname "{br}" ct state new ct status & dnat != dnat drop']),
            "input": ("type filter hook input priority filter; policy accept;", [
                f'iifname "{br}" ip daddr != {ulnet} ip daddr {pool} drop']),
        }
        lines = [f"add table {TABLE}"]
        lines += [f"add chain {TABLE} {kind}_{k}" for k in range(SHARDS) for kind in ("dnat", "snat")]
        for chain, (spec, body) in fixed.items():
            lines.append(f"add chain {TABLE} {chain} {{ {spec} }}")
            lines.append(f"flush chain {TABLE} {chain}")
            lines.extend(f"add rule {TABLE} {chain} {rule}" for rule in body)
        return "\n".join(lines) + "\n"

    def teardown(self) -> None:
        """Remove the table and the bridge (idempotent)."""
        with self._lock:
            self.nft.run(f"add table {TABLE}\ndelete table {TABLE}\n")
            self._known, self._handles = {}, {}
        with netns.iproute(self.netns) as ipr:
            links.delete(ipr, self.bridge)

    def close(self) -> None:
        if self._nft is not None:
            self._nft.close()
            self._nft = None

    # -- slivers ---------------------------------------------------------------------------------

    def _add_lines(self, slot: int, lo: int, hi: int) -> list[str]:
        addr, uip, k = self.address_of(slot), self.underlay_ip, slot % SHARDS
        note = f'comment "primo slot={slot} ports={lo}-{hi}"'
        # @th,16,16 is the destination port of TCP and UDP alike (the jump checked the protocol)
        return [f"add rule {TABLE} dnat_{k} @th,16,16 {lo}-{hi} dnat ip to {addr} {note}"] + [
            f"add rule {TABLE} snat_{k} meta l4proto {proto} ip saddr {addr} snat ip to {uip}:{lo}-{hi} {note}"
            for proto in ("tcp", "udp")]

    def _delete_lines(self, slots: Iterable[int]) -> list[str]:
        """Delete the slivers' rules, learning the handles of those not known yet from their chains."""
        slots = list(slots)
        for shard in {slot % SHARDS for slot in slots if slot not in self._handles}:
            self._learn_shard(shard)
        return [f"delete rule {TABLE} {chain} handle {handle}"
                for slot in slots for chain, handle in self._handles.get(slot, [])]

    def add_sliver(self, slot: int, lo: int, hi: int) -> None:
        """Forward ``underlay_ip:lo..hi`` to the sliver in ``slot`` and SNAT it into that range (idempotent)."""
        self.add_slivers([(slot, lo, hi)])

    def add_slivers(self, items: Iterable[tuple[int, int, int]]) -> None:
        """Add many slivers ``(slot, lo, hi)`` in one transaction (idempotent; a changed range replaces the old)."""
        wanted = {slot: (lo, hi) for slot, lo, hi in items}
        for slot, (lo, hi) in wanted.items():
            if not 1 <= lo <= hi <= 65535:
                raise EmuError(f"port range {lo}-{hi} of slot {slot} is not within 1-65535", self.bridge)
            self.address_of(slot)
        with self._lock:
            for attempt in (0, 1):
                known = self._known_slivers()
                self._check_overlaps(wanted, known)
                changes = {slot: rng for slot, rng in wanted.items() if known.get(slot) != rng}
                if not changes:
                    return
                lines = self._delete_lines(slot for slot in changes if slot in known)
                lines += [line for slot, (lo, hi) in sorted(changes.items()) for line in self._add_lines(slot, lo, hi)]
                if self._commit(lines, attempt):
                    known.update(changes)
                    for slot in changes:
                        self._handles.pop(slot, None)  # the new rules' handles are learnt when needed
                    return

    def _commit(self, lines: list[str], attempt: int) -> bool:
        """Run one transaction; on failure forget the cache (and raise on the second attempt)."""
        try:
            self.nft.run("\n".join(lines) + "\n")
        except EmuError:
            self._known, self._handles = None, {}
            if attempt:
                raise
            return False
        return True

    def _check_overlaps(self, wanted: dict[int, tuple[int, int]], known: dict[int, tuple[int, int]]) -> None:
        ordered = sorted((lo, hi, slot) for slot, (lo, hi) in (known | wanted).items())
        for (lo1, hi1, slot1), (lo2, hi2, slot2) in itertools.pairwise(ordered):
            if lo2 <= hi1:
                raise EmuError(f"port range {lo2}-{hi2} of slot {slot2} overlaps {lo1}-{hi1} of slot {slot1}",
                               self.bridge)

    def remove_sliver(self, slot: int) -> None:
        """Remove the sliver's NAT (idempotent)."""
        self.remove_slivers([slot])

    def remove_slivers(self, slots: Iterable[int]) -> None:
        """Remove many slivers' NAT in one transaction (idempotent)."""
        wanted = set(slots)
        with self._lock:
            if self._known is not None and not wanted <= self._known.keys():
                self._known = None  # a sliver we do not know of: ask the kernel (another process may have added it)
            for attempt in (0, 1):
                known = self._known_slivers()
                present = sorted(wanted & known.keys())
                if not present:
                    return
                if self._commit(self._delete_lines(present), attempt):
                    for slot in present:
                        known.pop(slot, None)
                        self._handles.pop(slot, None)
                    return

    def slivers(self) -> dict[int, SliverRange]:
        """``{slot: (control address, lo, hi)}`` as the kernel has them."""
        with self._lock:
            self._known = None
            return {slot: (self.address_of(slot), lo, hi) for slot, (lo, hi) in sorted(self._known_slivers().items())}

    def _known_slivers(self) -> dict[int, tuple[int, int]]:
        if self._known is None:
            found: dict[int, tuple[int, int]] = {}
            handles: dict[int, Handles] = {}
            try:
                items = self.nft.list_json(f"table {TABLE}")
            except EmuError as exc:
                if "No such file or directory" not in str(exc):
                    raise
                items = []
            for item in items:
                self._remember(found, handles, item.get("rule"))
            self._known, self._handles = found, handles
        return self._known

    def _learn_shard(self, shard: int) -> None:
        """Read the handles of every sliver rule in one shard's two chains."""
        found: dict[int, tuple[int, int]] = {}
        handles: dict[int, Handles] = {}
        for chain in (f"dnat_{shard}", f"snat_{shard}"):
            for item in self.nft.list_json(f"chain {TABLE} {chain}"):
                self._remember(found, handles, item.get("rule"))
        for slot in [s for s in self._handles if s % SHARDS == shard]:
            del self._handles[slot]
        self._handles.update(handles)

    @staticmethod
    def _remember(found: dict[int, tuple[int, int]], handles: dict[int, Handles], rule: dict[str, Any] | None) -> None:
        """Record a sliver rule (known by its comment) and its handle."""
        if not rule:
            return
        match = _COMMENT.match(str(rule.get("comment", "")))
        if match is None:
            return
        slot, lo, hi = (int(g) for g in match.groups())
        found.setdefault(slot, (lo, hi))
        handles.setdefault(slot, []).append((str(rule["chain"]), int(rule["handle"])))
