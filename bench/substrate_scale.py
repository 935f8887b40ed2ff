"""Substrate scale: create and delete N slivers (one link each) on one physical node and on four.

    .venv/bin/python bench/substrate_scale.py [10 100 500] [--nodes 1 4] [--shapes lan chain]
        [--via direct agent] [--placement blocks round-robin] [--no-mininet] [--mininet-timeout 900]

Shapes (the same for us and for Mininet):

* **lan**: N slivers on one LAN (one link with N members). Ours: one bridge ``primob<vni>`` with the N
  slivers' veths (on four nodes: one bridge per node plus a VXLAN device flooding to the other three).
  Mininet: one switch (a Linux bridge) with N hosts.
* **chain**: N slivers, link i joining sliver i and i+1 (N-1 two-member links). Ours: N-1 patches
  (two host-side veths redirecting to each other, no bridge; see ``primogeni.emu.patch``), 2(N-1)
  experimental veths. Mininet, matched exactly: N hosts and N-1 switches (Linux bridges), switch i
  linked to host i and host i+1.

On four nodes the slivers are placed either in **blocks** (sliver i on node i·4 // N: what a
topology-aware mapping does; a chain crosses nodes 3 times) or **round-robin** (sliver i on node
i mod 4: every chain link spans two nodes and becomes a bridge plus a VXLAN device on each side).

Each of our slivers is a whole container (network, mount, UTS, IPC and PID namespaces, a cgroup,
``/etc/hosts``, private ``/tmp``), plus a control veth with an address, a default route and NAT of its
port range (Mininet hosts have only a network namespace and a shell). Two ways to drive ours:

* ``direct``: a :class:`~primogeni.agent.realize.Realizer` per node, in a thread inside the node's
  namespace (store write, then ``ensure_sliver`` / ``ensure_link``; delete with the batch calls
  ``remove_links`` / ``remove_slivers``, then ``settle``, which waits until the kernel has deleted
  every device of theirs: the delete time is until the kernel objects are gone, and the time at
  which the removal calls returned is printed beside it);
* ``agent``: the embedded substrate (``primo agent`` per node) driven over XML-RPC with mutual TLS as
  the AM does it: one ``ProvisionMany`` per node with its slivers and links, then one ``ReleaseMany``
  per node with its links and slivers, one client thread per node (its delete time is until the last
  ``ReleaseMany`` returned: the kernel may still be freeing namespaces and deleting bridges in the
  background then).

Create and delete times are wall seconds for the whole topology; memory is the machine's
``MemTotal - MemAvailable`` after creation minus before (other work on the machine shows up in it).

Mininet (``apt-get install mininet bridge-utils``) runs with the system ``python3`` as its own
process inside a network namespace of ours (``primo-mn<tag>``), so its switches and their ports never
touch the root namespace; its host and switch names carry this run's tag. Its build is
``Mininet(topo, switch=LinuxBridge, controller=None)`` + ``start()``, its delete ``stop()``. It is
not allowed to change machine-wide limits (``Mininet.inited`` is set, skipping ``fixLimits``).
Afterwards only what this run made is removed: our namespace, and processes named ``mininet:<tag>…``.
Ratios are Mininet's time over ours (above 1: we are faster).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import random
import shutil
import signal
import string
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from primogeni.agent.spec import IfaceSpec, LinkSpec, SliverSpec
from primogeni.agent.store import Store
from primogeni.emu import netns
from primogeni.emu import sys as esys
from primogeni.substrate import clean, embedded
from primogeni.substrate.embedded import Layout, Node, Substrate, plan

SLICE = "urn:publicid:IDN+primo:bench+slice+scale"
MININET_PYTHON = "/usr/bin/python3"

MININET_SCRIPT = r"""
import json, resource, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(65536, hard), hard))  # this process only
from mininet.log import setLogLevel
from mininet.net import Mininet
from mininet.nodelib import LinuxBridge
from mininet.topo import Topo
Mininet.inited = True  # skip fixLimits(): it sets machine-wide sysctls (kernel.pty.max, fs.file-max, ...)
n, shape, tag = int(sys.argv[1]), sys.argv[2], sys.argv[3]

class Shape(Topo):
    def build(self):
        hosts = [self.addHost(f"{tag}h{i}") for i in range(1, n + 1)]
        if shape == "lan":
            s = self.addSwitch(f"{tag}s1")
            for h in hosts:
                self.addLink(h, s)
        else:
            for i in range(n - 1):
                s = self.addSwitch(f"{tag}s{i + 1}")
                self.addLink(hosts[i], s)
                self.addLink(hosts[i + 1], s)

def used():
    info = dict(line.split(":", 1) for line in open("/proc/meminfo"))
    return (int(info["MemTotal"].split()[0]) - int(info["MemAvailable"].split()[0])) / 1024

setLogLevel("error")
m0 = used()
t0 = time.perf_counter()
net = Mininet(topo=Shape(), switch=LinuxBridge, controller=None, autoSetMacs=True)
net.start()
t1 = time.perf_counter()
m1 = used()
net.stop()
t2 = time.perf_counter()
print(json.dumps({"create_s": t1 - t0, "delete_s": t2 - t1, "mem_mb": m1 - m0}))
"""


def mem_used_mb() -> float:
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return (int(info["MemTotal"].split()[0]) - int(info["MemAvailable"].split()[0])) / 1024


def token(k: int = 4) -> str:
    return "".join(random.choices(string.ascii_lowercase, k=k))


# -- the topology as specs -----------------------------------------------------------------------


def specs(n: int, shape: str, layout: Layout, placement: str = "blocks"
          ) -> dict[str, tuple[list[SliverSpec], list[LinkSpec]]]:
    """Per node name: its slivers and its view of each link (local members, remote nodes)."""
    count = len(layout.nodes)
    if placement == "round-robin":
        place = {i: layout.nodes[i % count] for i in range(n)}
    else:
        place = {i: layout.nodes[i * count // n] for i in range(n)}
    if shape == "lan":
        link_members = {0: list(range(n))}
    else:
        link_members = {k: [k, k + 1] for k in range(n - 1)}
    ifaces: dict[int, list[IfaceSpec]] = {i: [] for i in range(n)}
    for k, members in link_members.items():
        net = (ipaddress.IPv4Network("10.16.0.0/16") if shape == "lan"
               else ipaddress.IPv4Network(f"{ipaddress.IPv4Address('10.128.0.0') + 4 * k}/30"))
        for j, i in enumerate(members):
            address = f"{net.network_address + j + 1}/{net.prefixlen}"
            mac = f"02:00:{k >> 8 & 255:02x}:{k & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"
            ifaces[i].append(IfaceSpec(f"eth{len(ifaces[i]) + 1}", mac, address, f"{SLICE}+link{k}"))
    out: dict[str, tuple[list[SliverSpec], list[LinkSpec]]] = {node.name: ([], []) for node in layout.nodes}
    for i in range(n):
        out[place[i].name][0].append(SliverSpec(
            urn=f"urn:publicid:IDN+primo+sliver+b{i}", slice_urn=SLICE, hostname=f"h{i}", slot=i,
            ports=(30000 + 10 * i, 30009 + 10 * i), interfaces=tuple(ifaces[i])))
    for k, members in link_members.items():
        holders = {place[i].name for i in members}
        for name in holders:
            local = [(f"urn:publicid:IDN+primo+sliver+b{i}", _iface_of(ifaces[i], k)) for i in members
                     if place[i].name == name]
            remotes = tuple(sorted(str(n_.address.ip) for n_ in layout.nodes if n_.name in holders - {name}))
            out[name][1].append(LinkSpec(urn=f"{SLICE}+link{k}", slice_urn=SLICE, vni=1000 + k,
                                         members=tuple(local), remotes=remotes))
    return out


def _iface_of(ifaces: list[IfaceSpec], k: int) -> str:
    return next(i.name for i in ifaces if i.link == f"{SLICE}+link{k}")


# -- ours: direct ---------------------------------------------------------------------------------


class NodeWorker:
    """A thread living in a node's namespace that runs a realizer there (jobs are run in order)."""

    def __init__(self, node: Node, state: Path):
        self.node, self.state = node, state
        self._pool = ThreadPoolExecutor(1, initializer=self._enter)
        self.realizer: Any = self.call(self._make)

    def _enter(self) -> None:
        """The pool's one thread joins the node's namespace for its whole life."""
        target = os.open(netns.path(self.node.netns), os.O_RDONLY)
        try:
            esys.setns(target, esys.CLONE_NEWNET)
        finally:
            os.close(target)

    def _make(self) -> Any:
        from primogeni.agent.realize import Realizer

        r = Realizer(node=self.node.name, state_dir=self.state, underlay_dev=embedded.NODE_UNDERLAY_DEV,
                     underlay_ip=str(self.node.address.ip), store=Store(self.state))
        r.setup()
        return r

    def call(self, fn: Callable[[], Any]) -> Any:
        return self._pool.submit(fn).result()

    def close(self) -> None:
        try:
            self.call(self.realizer.teardown)
            self.call(self.realizer.close)
        finally:
            self._pool.shutdown()


def run_direct(n: int, shape: str, layout: Layout, work: Path, placement: str) -> dict[str, float]:
    per_node = specs(n, shape, layout, placement)
    workers: dict[str, NodeWorker] = {}
    returned: list[float] = []  # when each node's removal calls returned (before the kernel finished)
    try:
        for node in layout.nodes:
            workers[node.name] = NodeWorker(node, work / node.name)

        def create(name: str) -> None:
            w = workers[name]
            slivers, link_specs = per_node[name]

            def job() -> None:
                for s in slivers:
                    w.realizer.store.put_sliver(s)
                w.realizer.ensure_slivers(slivers)  # the batch call: containers pipelined with plumbing
                for link in link_specs:
                    w.realizer.store.put_link(link)
                    w.realizer.ensure_link(link)
            w.call(job)

        def delete(name: str) -> None:
            w = workers[name]
            slivers, link_specs = per_node[name]

            def job() -> None:
                w.realizer.remove_links([link.urn for link in link_specs])
                w.realizer.remove_slivers([s.urn for s in slivers])
                for link in link_specs:
                    w.realizer.store.drop_link(link.urn)
                for s in slivers:
                    w.realizer.store.drop_sliver(s.urn)
                returned.append(time.perf_counter())
                w.realizer.settle()  # until the kernel has deleted every device of theirs
            w.call(job)

        result = _timed(layout, create, delete)
        result["returned_s"] = max(returned) - result.pop("t1")
        return result
    finally:
        from primogeni.emu import container

        for w in workers.values():
            w.close()
        container.close_forker()  # it lives in a node namespace of this case, which goes now


# -- ours: agents over RPC ------------------------------------------------------------------------


def run_agents(n: int, shape: str, layout: Layout, home: Path, placement: str) -> dict[str, float]:
    from primogeni.geni.cert import TrustStore
    from primogeni.rpc import client

    per_node = specs(n, shape, layout, placement)
    trust = TrustStore.from_dir(home / "trusted_roots")
    local = threading.local()

    def proxy(node: Node) -> Any:
        if getattr(local, "node", None) != node.name:
            local.node = node.name
            local.proxy = client(f"https://{node.address.ip}:{embedded.AGENT_PORT}/primo/agent/1",
                                 cert=home / "am" / "am.pem", key=home / "am" / "am.key", trust=trust, timeout=600)
        return local.proxy

    def call(node: Node, method: str, *args: Any) -> None:
        answer = getattr(proxy(node), method)(*args)
        if answer["code"]["geni_code"] != 0:
            raise RuntimeError(f"{node.name} {method}: {answer['output']}")
        failed = {urn: state for urn, state in answer["value"].items() if state not in ("ready", "released")}
        if failed:
            raise RuntimeError(f"{node.name} {method}: {len(failed)} failed, e.g. {next(iter(failed.items()))}")

    nodes = {node.name: node for node in layout.nodes}

    def create(name: str) -> None:
        slivers, link_specs = per_node[name]
        call(nodes[name], "ProvisionMany", [s.to_dict() for s in slivers], [link.to_dict() for link in link_specs])

    def delete(name: str) -> None:
        slivers, link_specs = per_node[name]
        call(nodes[name], "ReleaseMany", [link.urn for link in link_specs] + [s.urn for s in slivers])

    return _timed(layout, create, delete)


def _timed(layout: Layout, create: Callable[[str], None], delete: Callable[[str], None]) -> dict[str, float]:
    names = [node.name for node in layout.nodes]
    with ThreadPoolExecutor(len(names)) as pool:
        m0 = mem_used_mb()
        t0 = time.perf_counter()
        list(pool.map(create, names))
        t1 = time.perf_counter()
        m1 = mem_used_mb()
        list(pool.map(delete, names))
        t2 = time.perf_counter()
    return {"create_s": t1 - t0, "delete_s": t2 - t1, "mem_mb": m1 - m0, "t1": t1}


def ours(n: int, shape: str, nodes: int, via: str, placement: str = "blocks") -> dict[str, float]:
    tag = token()
    underlay = _free_underlay()
    layout = plan(nodes, underlay, ("cluster",), capacity=max(n, 8), tag=tag, node_prefix=f"b{tag}")
    work = Path(tempfile.mkdtemp(prefix="primo-bench-"))
    try:
        if via == "direct":
            embedded.make_network(layout)
            return run_direct(n, shape, layout, work, placement)
        from primogeni.ch.authority import init_authority

        init_authority(work / "home", "primo", first_member=None)
        sub = Substrate(work / "home")
        try:
            sub.up(layout, wait=60)
            result = run_agents(n, shape, layout, work / "home", placement)
            result.pop("t1")
            return result
        finally:
            sub.down(timeout=10)
    finally:
        for node in layout.nodes:
            clean.remove_node_objects(node.name)
        embedded.remove_network(layout)
        shutil.rmtree(work, ignore_errors=True)


def _free_underlay() -> str:
    used = embedded._root_networks(exclude="")
    for _ in range(200):
        net = ipaddress.IPv4Network(f"10.253.{random.randint(0, 255)}.0/24")
        if not embedded.overlapping(net, used):
            return str(net)
    raise SystemExit("no free 10.253.x.0/24 underlay for the bench")


# -- Mininet ----------------------------------------------------------------------------------------


def mininet_available() -> bool:
    if not Path(MININET_PYTHON).exists():
        return False
    probe = subprocess.run([MININET_PYTHON, "-c", "import mininet.net, mininet.nodelib"], capture_output=True)
    return probe.returncode == 0 and shutil.which("brctl") is not None and shutil.which("mnexec") is not None


def mininet(n: int, shape: str, timeout: float) -> dict[str, Any]:
    tag = token()
    where = f"primo-mn{tag}"
    netns.create(where)
    proc: subprocess.Popen[str] | None = None
    try:
        with netns.iproute(where) as ipr:
            from primogeni.emu import links

            links.set_up(ipr, "lo")
        proc = netns.popen(where, [MININET_PYTHON, "-c", MININET_SCRIPT, str(n), shape, tag], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
        if proc.returncode != 0:
            return {"error": (err.strip().splitlines() or ["failed"])[-1]}
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        _kill_mininet_hosts(tag)
        clean.remove_netns(where)


def _kill_mininet_hosts(tag: str) -> None:
    """Mininet's host shells of this run (``bash … mininet:<tag>h…``): they live in namespaces of their own."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            argv = clean.argv_of(int(entry)) or []
            if any(a.startswith(f"mininet:{tag}") for a in argv):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry), signal.SIGKILL)


# -- report ---------------------------------------------------------------------------------------


def row(label: str, n: int, r: dict[str, Any]) -> str:
    if "error" in r:
        return f"  {label:34} {r['error']}"
    return (f"  {label:34} create {r['create_s']:8.2f} s ({r['create_s'] / n * 1e3:7.2f} ms/sliver)   "
            f"delete {r['delete_s']:7.2f} s ({r['delete_s'] / n * 1e3:6.2f} ms/sliver)   "
            f"memory {r['mem_mb']:8.1f} MB ({r['mem_mb'] / n:5.2f} MB/sliver)"
            + (f"   (removal calls returned after {r['returned_s']:.2f} s)" if "returned_s" in r else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[10, 100, 500])
    parser.add_argument("--nodes", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--shapes", nargs="+", choices=["lan", "chain"], default=["lan", "chain"])
    parser.add_argument("--via", nargs="+", choices=["direct", "agent"], default=["direct", "agent"])
    parser.add_argument("--placement", nargs="+", choices=["blocks", "round-robin"], default=["blocks"],
                        help="how slivers are spread over several nodes (default: blocks)")
    parser.add_argument("--no-mininet", action="store_true")
    parser.add_argument("--mininet-timeout", type=float, default=900.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the substrate bench needs root (namespaces, veths, cgroups)")
    with_mininet = not args.no_mininet and mininet_available()
    if not args.no_mininet and not with_mininet:
        print("Mininet not found (apt-get install mininet bridge-utils): ours only")
    for n in args.sizes:
        for shape in args.shapes:
            print(f"N = {n}, {shape} ({'one LAN of N' if shape == 'lan' else 'chain of N, N-1 links'})", flush=True)
            results: dict[str, dict[str, Any]] = {}
            for nodes in args.nodes:
                for via in args.via:
                    for placement in args.placement if nodes > 1 else ["blocks"]:
                        label = f"ours {via}, {nodes} node{'s' if nodes > 1 else ''}" + (
                            f" {placement}" if nodes > 1 else "")
                        try:
                            results[label] = ours(n, shape, nodes, via, placement)
                        except Exception as exc:  # a bench reports a failed case and goes on
                            results[label] = {"error": f"{type(exc).__name__}: {exc}"}
                        print(row(label, n, results[label]), flush=True)
            if with_mininet:
                results["mininet"] = mininet(n, shape, args.mininet_timeout)
                print(row("Mininet (LinuxBridge)", n, results["mininet"]), flush=True)
                ref = results["mininet"]
                if "error" not in ref:
                    for label, r in results.items():
                        if label != "mininet" and "error" not in r:
                            print(f"  {'Mininet / ' + label:40} create ×{ref['create_s'] / r['create_s']:.1f}   "
                                  f"delete ×{ref['delete_s'] / r['delete_s']:.1f}")
            print(flush=True)


if __name__ == "__main__":
    main()
