"""The embedded substrate: physical nodes as network namespaces on one machine (``primo substrate``).

``up`` makes, following the names of ``docs/SUBSTRATE.md``:

- netns ``primo-underlay`` holding bridge ``primo-ulbr`` (the private underlay LAN);
- in the root namespace, veth ``primo-ul0`` with the underlay's first host address (peer
  ``primo-ulh`` on the bridge). That address is the only thing put in the root namespace: no
  default route, no NAT, no forwarding change. The AM listens on it;
- per node ``pcI``: netns ``primo-pcI`` with ``lo`` up and veth ``primo-ul`` (address ``.10+I``;
  peer ``primo-ulI`` on the bridge), an agent certificate issued by the authority's root
  (``urn:publicid:IDN+<authority>+node+pcI``, IP SAN = its underlay address), an agent
  configuration, and a ``primo agent`` process inside the namespace.

It also writes ``am/inventory.toml`` (the nodes, as the AM sees them) and makes sure the AM's
certificate names the host's underlay address (TLS host names are checked both ways).

Files, under ``<home>/substrate/``: ``substrate.toml`` (the layout), and per node ``<name>/``
with ``agent.toml``, ``agent.pem``, ``agent.key``, ``agent.log``, ``agent.pid`` and the agent's
``state/``. ``up`` is idempotent (it makes what is missing and starts agents that are not running)
and a failed ``up`` removes what it made; ``down`` removes everything of the layout.

A ``tag`` (tests) gives a second substrate its own underlay namespace and root veth, so two can
coexist; node names come from ``node_prefix`` (``pc``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from primogeni.agent.config import AGENT_PATH, AgentConfig
from primogeni.agent.store import Store
from primogeni.ch.authority import Authority
from primogeni.client import ClientConfig, ClientConfigError
from primogeni.emu import container, links, netns
from primogeni.errors import EmuError
from primogeni.geni.cert import Gid, Identity, issue
from primogeni.geni.urn import Urn
from primogeni.substrate import clean

DEFAULT_UNDERLAY = "10.254.0.0/24"
DEFAULT_KINDS = ("cluster", "cluster", "shared", "shared")
DEFAULT_CAPACITY = {"cluster": 8, "shared": 16}
DEFAULT_AM_PORT = 12370
AGENT_PORT = 7800
SSH_PORT_BASE = 30000
PORTS_PER_SLIVER = 10
NODE_ADDRESS_OFFSET = 10  # node I has the underlay's host number 10 + I
AGENT_CERT_LIFETIME = timedelta(days=365)
UNDERLAY_BRIDGE = "primo-ulbr"
NODE_UNDERLAY_DEV = "primo-ul"
_TAG = re.compile(r"^[a-z0-9]{0,4}$")
_PREFIX = re.compile(r"^[a-z][a-z0-9]{0,7}$")


class SubstrateError(EmuError):
    """The embedded substrate cannot be made, found or removed as asked: says why."""


# -- the layout (pure) -------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """One physical node of the embedded substrate."""

    name: str
    index: int  # 1, 2, …: names the bridge port and the address
    kind: str
    capacity: int
    address: ipaddress.IPv4Interface  # on primo-ul inside the node's namespace

    @property
    def netns(self) -> str:
        return f"primo-{self.name}"

    @property
    def bridge_port(self) -> str:
        """The node's veth end on the underlay bridge (in the underlay namespace)."""
        return f"primo-ul{self.index}"


@dataclass(frozen=True)
class Layout:
    """What ``up`` makes: the underlay subnet, the nodes, and where the AM is reached."""

    underlay: ipaddress.IPv4Network
    nodes: tuple[Node, ...]
    am_port: int = DEFAULT_AM_PORT
    tag: str = ""

    @property
    def host(self) -> ipaddress.IPv4Interface:
        """The root namespace's address on the underlay (the first host address): the AM's."""
        return ipaddress.IPv4Interface(f"{self.underlay.network_address + 1}/{self.underlay.prefixlen}")

    @property
    def underlay_netns(self) -> str:
        return f"primo-underlay-{self.tag}" if self.tag else "primo-underlay"

    @property
    def root_veth(self) -> str:
        return f"primo-ul0{self.tag}"

    @property
    def host_peer(self) -> str:
        return f"primo-ulh{self.tag}"

    @property
    def registry_url(self) -> str:
        return f"https://{self.host.ip}:{self.am_port}/primo/registry/1"

    def node(self, name: str) -> Node | None:
        return next((n for n in self.nodes if n.name == name), None)

    def to_toml(self) -> str:
        lines = ["# the embedded substrate (primo substrate up writes it; primo substrate down reads it)",
                 f'underlay = "{self.underlay}"', f'host = "{self.host}"', f"am_port = {self.am_port}",
                 f'tag = "{self.tag}"', ""]
        for n in self.nodes:
            lines += ["[[node]]", f'name = "{n.name}"', f"index = {n.index}", f'kind = "{n.kind}"',
                      f"capacity = {n.capacity}", f'address = "{n.address}"', ""]
        return "\n".join(lines)

    @classmethod
    def from_toml(cls, text: str, where: str = "substrate.toml") -> Layout:
        try:
            data = tomllib.loads(text)
            nodes = tuple(Node(str(n["name"]), int(n["index"]), str(n["kind"]), int(n["capacity"]),
                               ipaddress.IPv4Interface(n["address"])) for n in data.get("node", []))
            return cls(ipaddress.IPv4Network(data["underlay"]), nodes, int(data.get("am_port", DEFAULT_AM_PORT)),
                       str(data.get("tag", "")))
        except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
            raise SubstrateError(f"cannot read the substrate layout: {exc}", where) from exc


def plan(nodes: int = 4, underlay: str = DEFAULT_UNDERLAY, kinds: tuple[str, ...] | None = None,
         capacity: int | None = None, *, am_port: int = DEFAULT_AM_PORT, tag: str = "",
         node_prefix: str = "pc") -> Layout:
    """The layout for ``nodes`` nodes on ``underlay``; ``kinds`` repeats its last entry when short."""
    if not 1 <= nodes <= 200:
        raise SubstrateError(f"--nodes {nodes}: choose 1 to 200 nodes")
    if not _TAG.match(tag):
        raise SubstrateError(f"tag {tag!r} must be at most 4 lower-case letters or digits")
    if not _PREFIX.match(node_prefix):
        raise SubstrateError(f"node prefix {node_prefix!r} must be 1-8 lower-case letters or digits")
    try:
        net = ipaddress.IPv4Network(underlay)
    except ValueError as exc:
        raise SubstrateError(f"--underlay {underlay!r} is not an IPv4 subnet: {exc}") from None
    last = net.network_address + NODE_ADDRESS_OFFSET + nodes
    if net.prefixlen > 30 or last >= net.broadcast_address:
        raise SubstrateError(f"underlay {net} has no room for {nodes} nodes (addresses .{NODE_ADDRESS_OFFSET + 1} "
                             f"to .{NODE_ADDRESS_OFFSET + nodes})")
    chosen = tuple(kinds) if kinds else DEFAULT_KINDS
    for kind in chosen:
        if kind not in DEFAULT_CAPACITY:
            raise SubstrateError(f"node kind {kind!r} is not one of {', '.join(DEFAULT_CAPACITY)}")
    if capacity is not None and capacity < 1:
        raise SubstrateError(f"--capacity {capacity}: a node needs at least one slot")
    made = []
    for i in range(1, nodes + 1):
        kind = chosen[min(i - 1, len(chosen) - 1)]
        made.append(Node(f"{node_prefix}{i}", i, kind, capacity or DEFAULT_CAPACITY[kind],
                         ipaddress.IPv4Interface(f"{net.network_address + NODE_ADDRESS_OFFSET + i}/{net.prefixlen}")))
    return Layout(net, tuple(made), am_port, tag)


def overlapping(underlay: ipaddress.IPv4Network,
                used: list[tuple[str, ipaddress.IPv4Network]]) -> list[str]:
    """What in ``used`` (description, network) overlaps ``underlay``; default routes do not count."""
    return [what for what, net in used if net.prefixlen > 0 and net.overlaps(underlay)]


# -- the substrate on disk and in the kernel --------------------------------------------------


@dataclass(frozen=True)
class NodeStatus:
    name: str
    kind: str
    address: str
    netns: bool
    agent_pid: int | None  # the running agent's pid, None when it is not running
    slivers: int


class Substrate:
    """The embedded substrate of one data directory."""

    def __init__(self, home: Path):
        self.home = Path(home)
        self.dir = self.home / "substrate"
        self.layout_file = self.dir / "substrate.toml"

    # -- files --
    def node_dir(self, name: str) -> Path:
        return self.dir / name

    def config_file(self, name: str) -> Path:
        return self.node_dir(name) / "agent.toml"

    def pid_file(self, name: str) -> Path:
        return self.node_dir(name) / "agent.pid"

    def state_dir(self, name: str) -> Path:
        return self.node_dir(name) / "state"

    def layout(self) -> Layout | None:
        """The layout of the substrate that is up (or was: ``down`` removes the file), else None."""
        try:
            return Layout.from_toml(self.layout_file.read_text(encoding="utf-8"), str(self.layout_file))
        except FileNotFoundError:
            return None

    def am_port(self) -> int:
        """The AM's port in client.toml's am_url (the one ``primo am`` uses by default)."""
        try:
            from urllib.parse import urlsplit

            return urlsplit(ClientConfig.load(self.home).am_url).port or DEFAULT_AM_PORT
        except (ClientConfigError, ValueError):
            return DEFAULT_AM_PORT

    # -- up --
    def up(self, layout: Layout, *, wait: float = 30.0, log: Callable[[str], None] = lambda s: None) -> Layout:
        """Make ``layout`` real (idempotent); on failure remove what this call made and raise."""
        current = self.layout()
        if current is not None and current != layout:
            raise SubstrateError(f"a different embedded substrate is up ({len(current.nodes)} nodes on "
                                 f"{current.underlay}); run `primo substrate down` first", str(self.layout_file))
        authority = Authority.load(self.home)  # refuses a directory `primo init` did not make
        self._check_free(layout, ours=current is not None)
        undo: list[Callable[[], None]] = []
        try:
            make_network(layout, undo)
            self._write_files(layout, authority, undo, log)
            started = [node for node in layout.nodes if self._start_agent(node, undo)]
            for node in started:
                self._wait_agent(node, deadline=time.monotonic() + wait)
                log(f"agent {node.name} listens on https://{node.address.ip}:{AGENT_PORT}")
        except BaseException:
            for step in reversed(undo):
                try:
                    step()
                except (EmuError, OSError) as exc:
                    log(f"warning: undoing a failed `up`: {exc}")
            raise
        return layout

    def _check_free(self, layout: Layout, *, ours: bool) -> None:
        """Refuse an underlay the root namespace already uses, and names another substrate holds.

        ``ours``: this data directory's substrate is (or was) up with ``layout``, so the objects of
        its names are its own and its root veth's address does not count as a clash.
        """
        used = _root_networks(exclude=layout.root_veth if ours else "")
        clash = overlapping(layout.underlay, used)
        if clash:
            raise SubstrateError(f"underlay {layout.underlay} overlaps what the root namespace already has: "
                                 f"{'; '.join(clash)}; choose another --underlay")
        if ours:
            return
        with _root_ipr() as ipr:
            taken = [layout.root_veth] if links.exists(ipr, layout.root_veth) else []
        taken += [n for n in (layout.underlay_netns, *(n.netns for n in layout.nodes)) if netns.exists(n)]
        if taken:
            raise SubstrateError(f"{', '.join(taken)} exist(s) but this data directory's substrate did not make "
                                 "them (another data directory's substrate, or a crash: `primo clean`; "
                                 "or use --tag and --node-prefix)", str(self.home))

    def _write_files(self, layout: Layout, authority: Authority, undo: list[Callable[[], None]],
                     log: Callable[[str], None]) -> None:
        fresh = not self.dir.exists()
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        if fresh:
            undo.append(lambda: shutil.rmtree(self.dir, ignore_errors=True))
        root = Identity.load(authority.trust_dir / f"{authority.name}-root.pem", self.home / "ch" / "root.key")
        if ensure_am_address(authority, root, str(layout.host.ip)):
            log(f"re-issued {authority.am_cert} to name {layout.host.ip} as well")
        am_urn = Gid.from_pem(authority.am_cert.read_bytes()).urn
        for node in layout.nodes:
            self.node_dir(node.name).mkdir(exist_ok=True)
            self.state_dir(node.name).mkdir(exist_ok=True)
            cert, key = self.node_dir(node.name) / "agent.pem", self.node_dir(node.name) / "agent.key"
            if not _cert_fits(cert, key, authority.name, node):
                agent = issue(root, Urn(authority.name, "node", node.name), now=datetime.now(UTC),
                              lifetime=AGENT_CERT_LIFETIME, ca=False, ip_addresses=[node.address.ip])
                agent.save(cert, key)
            config = AgentConfig(
                node=node.name, kind=node.kind, state_dir=self.state_dir(node.name), cert=cert, key=key,
                trust_dir=authority.trust_dir, listen_host=str(node.address.ip), listen_port=AGENT_PORT,
                underlay_dev=NODE_UNDERLAY_DEV, underlay_ip=str(node.address.ip), registry_url=layout.registry_url,
                am_urn=str(am_urn), advertise_url=f"https://{node.address.ip}:{AGENT_PORT}{AGENT_PATH}",
                capacity=node.capacity)
            self.config_file(node.name).write_text(config.to_toml(), encoding="utf-8")
        inventory = self.home / "am" / "inventory.toml"
        saved = inventory.with_name("inventory.toml.pre-substrate")
        if inventory.exists() and not saved.exists():
            shutil.copy2(inventory, saved)
        before = inventory.read_text(encoding="utf-8") if inventory.exists() else None
        inventory.write_text(inventory_toml(layout), encoding="utf-8")
        if before is not None:
            undo.append(lambda: _ignore(inventory.write_text(before, encoding="utf-8")))
        self.layout_file.write_text(layout.to_toml(), encoding="utf-8")

    def agent_pid(self, name: str) -> int | None:
        """The pid of node ``name``'s running agent (checked against its command line), else None."""
        return clean.running_agent(self.pid_file(name), self.config_file(name))

    def _start_agent(self, node: Node, undo: list[Callable[[], None]]) -> bool:
        if self.agent_pid(node.name) is not None:
            return False
        argv = agent_argv(self.config_file(node.name))
        with open(self.node_dir(node.name) / "agent.log", "ab") as out:
            proc = netns.popen(node.netns, argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                               start_new_session=True, cwd=self.node_dir(node.name))
        self.pid_file(node.name).write_text(f"{proc.pid}\n", encoding="ascii")
        undo.append(lambda: _ignore(self.stop_agent(node.name)))
        return True

    def _wait_agent(self, node: Node, deadline: float) -> None:
        """Until the agent accepts TCP connections on its address (it died or the time ran out: raise)."""
        while True:
            if self.agent_pid(node.name) is None:
                raise SubstrateError(f"the agent exited at start; the end of {self.node_dir(node.name)}/agent.log:\n"
                                     f"{_tail(self.node_dir(node.name) / 'agent.log')}", node.name)
            try:
                with socket.create_connection((str(node.address.ip), AGENT_PORT), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise SubstrateError(f"the agent does not listen on {node.address.ip}:{AGENT_PORT}; the end of "
                                         f"agent.log:\n{_tail(self.node_dir(node.name) / 'agent.log')}",
                                         node.name) from None
                time.sleep(0.1)

    # -- down --
    def stop_agent(self, name: str, timeout: float = 5.0) -> int | None:
        """SIGTERM node ``name``'s agent, SIGKILL after ``timeout`` s; the pid stopped, if one ran."""
        pid = self.agent_pid(name)
        if pid is not None:
            clean.stop_process(pid, timeout)
        self.pid_file(name).unlink(missing_ok=True)
        return pid

    def down(self, *, timeout: float = 5.0, purge: bool = False,
             log: Callable[[str], None] = lambda s: None) -> list[str]:
        """Stop the agents and remove every kernel object of the layout; what was removed."""
        layout = self.layout()
        removed: list[str] = []
        if layout is None:
            return removed
        for node in layout.nodes:
            pid = self.stop_agent(node.name, timeout)
            if pid is not None:
                removed.append(f"agent {node.name} (pid {pid})")
        for node in layout.nodes:
            removed += _destroy_containers(self.state_dir(node.name) / "containers")
            removed += clean.remove_node_objects(node.name, log=log)
            _remove_runtime_files(self.state_dir(node.name))
            for what, tree in clean.agent_trees(node.name, self.state_dir(node.name)):
                if tree.is_dir():
                    shutil.rmtree(tree, ignore_errors=True)
                    removed.append(f"{what} {tree}")
        removed += remove_network(layout)
        if purge:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            self.layout_file.unlink(missing_ok=True)
        return removed

    # -- status --
    def status(self) -> list[NodeStatus]:
        layout = self.layout()
        if layout is None:
            return []
        result = []
        for node in layout.nodes:
            try:
                slivers = len(Store(self.state_dir(node.name)).slivers())
            except (OSError, ValueError, EmuError):
                slivers = 0
            result.append(NodeStatus(node.name, node.kind, str(node.address), netns.exists(node.netns),
                                     self.agent_pid(node.name), slivers))
        return result


# -- the network alone (also the benchmark's) ---------------------------------------------------


def make_network(layout: Layout, undo: list[Callable[[], None]] | None = None) -> None:
    """The underlay and the node namespaces of ``layout`` (what is missing of them); no files, no agents.

    Each object made is undone by a step appended to ``undo`` (run them in reverse to take it back).
    """
    steps: list[Callable[[], None]] = [] if undo is None else undo
    _make_underlay(layout, steps)
    for node in layout.nodes:
        _make_node(layout, node, steps)


def remove_network(layout: Layout) -> list[str]:
    """Remove the node namespaces (with whatever runs in them), the root veth and the underlay namespace."""
    removed = []
    for node in layout.nodes:
        if netns.exists(node.netns):
            clean.remove_netns(node.netns)
            removed.append(f"netns {node.netns}")
    with _root_ipr() as ipr:
        if links.exists(ipr, layout.root_veth):
            links.delete(ipr, layout.root_veth)
            removed.append(f"link {layout.root_veth}")
    if netns.exists(layout.underlay_netns):
        clean.remove_netns(layout.underlay_netns)
        removed.append(f"netns {layout.underlay_netns}")
    return removed


def _make_underlay(layout: Layout, undo: list[Callable[[], None]]) -> None:
    ns = layout.underlay_netns
    if not netns.exists(ns):
        netns.create(ns)
        undo.append(lambda: clean.remove_netns(ns))
    with netns.iproute(ns) as ipr:
        links.set_up(ipr, "lo")
        if not links.exists(ipr, UNDERLAY_BRIDGE):
            links.add_bridge(ipr, UNDERLAY_BRIDGE)
    with _root_ipr() as ipr:
        if not links.exists(ipr, layout.root_veth):
            links.add_veth(ipr, layout.root_veth, layout.host_peer, peer_netns=ns)
            undo.append(lambda: _delete_root_link(layout.root_veth))
            _disable_ipv6(None, layout.root_veth)
        links.add_address(ipr, layout.root_veth, layout.host)
        links.set_up(ipr, layout.root_veth)
    with netns.iproute(ns) as ipr:
        links.set_master(ipr, layout.host_peer, UNDERLAY_BRIDGE)
        links.set_up(ipr, layout.host_peer)


def _make_node(layout: Layout, node: Node, undo: list[Callable[[], None]]) -> None:
    if not netns.exists(node.netns):
        netns.create(node.netns)
        undo.append(lambda: clean.remove_netns(node.netns))
    with netns.iproute(layout.underlay_netns) as ipr:
        if not links.exists(ipr, node.bridge_port):
            links.add_veth(ipr, node.bridge_port, NODE_UNDERLAY_DEV, peer_netns=node.netns,
                           master=UNDERLAY_BRIDGE, up=True)
    with netns.iproute(node.netns) as ipr:
        links.set_up(ipr, "lo")
        links.add_address(ipr, NODE_UNDERLAY_DEV, node.address)
        links.set_up(ipr, NODE_UNDERLAY_DEV)


# -- helpers -----------------------------------------------------------------------------------


def agent_argv(config: Path) -> list[str]:
    """How an agent is started: this interpreter running ``primo agent --config FILE``."""
    return [sys.executable, "-m", "primogeni.cli.main", "agent", "--config", str(config)]


def inventory_toml(layout: Layout) -> str:
    """``am/inventory.toml`` for the layout: its nodes (by underlay address) on one underlay link."""
    lines = ["# the embedded substrate's nodes (written by primo substrate up)"]
    for n in layout.nodes:
        lines += ["[[node]]", f'name = "{n.name}"', f'kind = "{n.kind}"', f"capacity = {n.capacity}",
                  f"exclusive = {'true' if n.kind == 'cluster' else 'false'}", f'hostname = "{n.address.ip}"',
                  f"ssh_port_base = {SSH_PORT_BASE}", f"ports_per_sliver = {PORTS_PER_SLIVER}",
                  'interfaces = ["eth0"]', ""]
    if len(layout.nodes) > 1:
        ends = ", ".join(json.dumps(f"{n.name}:eth0") for n in layout.nodes)
        lines += ["[[link]]", 'name = "underlay"', f"endpoints = [{ends}]", "capacity_kbps = 1000000",
                  "latency_ms = 0.1", ""]
    return "\n".join(lines)


def ensure_am_address(authority: Authority, root: Identity, address: str) -> bool:
    """Re-issue ``am/am.pem`` (same key, URN and names, plus IP ``address``) unless it names it; True if re-issued."""
    am = Identity.load(authority.am_cert, authority.am_key)
    dns, ips = _san_names(am.gid)
    wanted = ipaddress.ip_address(address)
    if wanted in ips:
        return False
    now = datetime.now(UTC)
    lifetime = max(am.gid.cert.not_valid_after_utc - now, timedelta(days=1))
    gid = issue(root, am.gid.urn, now=now, lifetime=lifetime, ca=am.gid.is_ca, dns_names=dns,
                ip_addresses=[*ips, wanted], public_key=am.key.public_key())
    authority.am_cert.write_text(gid.pem(with_chain=True), encoding="ascii")
    return True


def _san_names(gid: Gid) -> tuple[list[str], list[Any]]:
    from cryptography import x509

    try:
        san = gid.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    return list(san.get_values_for_type(x509.DNSName)), list(san.get_values_for_type(x509.IPAddress))


def _cert_fits(cert: Path, key: Path, authority: str, node: Node) -> bool:
    """Whether an agent certificate exists for this node's URN and address, still valid for a day."""
    if not cert.exists() or not key.exists():
        return False
    try:
        gid = Identity.load(cert, key).gid
    except (OSError, ValueError):
        return False
    _dns, ips = _san_names(gid)
    return (gid.urn == Urn(authority, "node", node.name) and node.address.ip in ips
            and gid.cert.not_valid_after_utc > datetime.now(UTC) + timedelta(days=1))


def _root_ipr() -> Any:
    return netns.iproute(None)


def _root_networks(exclude: str) -> list[tuple[str, ipaddress.IPv4Network]]:
    """IPv4 routes (every table) and addresses of the root namespace, except those on device ``exclude``."""
    used: list[tuple[str, ipaddress.IPv4Network]] = []
    with _root_ipr() as ipr:
        skip = links.index(ipr, exclude)
        for route in ipr.route("dump", family=socket.AF_INET):
            if route.get("RTA_OIF") == skip and skip is not None:
                continue
            dst = route.get("RTA_DST")
            if dst is None:
                continue
            net = ipaddress.IPv4Network(f"{dst}/{route['dst_len']}", strict=False)
            used.append((f"route {net} (table {route.get('RTA_TABLE')})", net))
        for addr in ipr.addr("dump", family=socket.AF_INET):
            if addr["index"] == skip:
                continue
            iface = ipaddress.IPv4Interface(f"{addr.get('IFA_ADDRESS')}/{addr['prefixlen']}")
            used.append((f"address {iface} (device {addr.get('IFA_LABEL')})", iface.network))
    return used


def _disable_ipv6(ns: str | None, dev: str) -> None:
    """No IPv6 on our veth (no link-local address, no router solicitations); absent IPv6 is fine."""
    with contextlib.suppress(EmuError):
        netns.set_sysctl(ns, f"net.ipv6.conf.{dev}.disable_ipv6", "1")


def _delete_root_link(name: str) -> None:
    with _root_ipr() as ipr:
        links.delete(ipr, name)


def _destroy_containers(run_dir: Path) -> list[str]:
    """Destroy the containers whose pid files the node's realizer left (``<state>/containers/*.pid``),
    all in one batch: every PID 1 is killed before any is waited for, so the kernel frees their
    namespaces together (the node's links go with the node namespace, removed after)."""
    names = [f.name.removesuffix(".pid") for f in sorted(run_dir.glob("primo-*.pid"))] if run_dir.is_dir() else []
    if names:
        container.destroy_many(names, run_dir)
    return [f"container {name}" for name in names]


def _remove_runtime_files(state: Path) -> None:
    """What only makes sense while the agent runs (pid files, started commands); the desired state stays."""
    for pattern in ("containers/*.pid", "sshd/*.pid", "commands/*.json", "simulations/*.json"):
        for f in state.glob(pattern):
            f.unlink(missing_ok=True)


def _ignore(value: object) -> None:
    return None


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


__all__ = ["AGENT_PORT", "DEFAULT_UNDERLAY", "Layout", "Node", "NodeStatus", "Substrate", "SubstrateError",
           "agent_argv", "ensure_am_address", "inventory_toml", "make_network", "overlapping", "plan",
           "remove_network"]
