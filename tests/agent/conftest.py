"""Fixtures for agent tests: physical "nodes" as network namespaces on a private underlay.

``nodes(count)`` makes an underlay namespace ``primo-<tag>-u`` with bridge ``primo-ulbr`` (address
``10.254.0.1/24``, for clients on the underlay) and
``count`` node namespaces ``primo-<tag>n<i>``, each joined to the bridge by a veth ``primo-ul``
(address ``10.254.0.<11+i>/24``), and in each a :class:`~primogeni.agent.realize.Realizer`
built with the calling thread inside the node namespace (node name ``<tag>n<i>``, a real
:class:`~primogeni.agent.store.Store`; state in a directory under ``/var/tmp``, not ``/tmp``,
which containers replace with their own), set up. At teardown, whatever
happened, each realizer tears its node down, every process left in a namespace the fixture made
is killed (by pid), and the namespaces are removed. Tags are random, so tests running at the
same time never collide.

Tests marked ``@pytest.mark.root`` are skipped, saying why, when not run as root.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import socket
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.agent.service_support import NOW, YEAR, Files, Pki, Running, started
from tests.emu.fixtures import ROOT_REASON, _skip_root_tests_unless_root, kill_inside

from primogeni.agent.realize import Realizer
from primogeni.agent.store import Store
from primogeni.emu import container, links, netns
from primogeni.emu import sys as esys
from primogeni.errors import EmuError
from primogeni.geni.cert import Identity, TrustStore, create_root, issue
from primogeni.geni.urn import Urn

__all__ = ["Node", "_skip_root_tests_unless_root", "kill_inside", "nodes", "ping"]


@dataclass
class Node:
    name: str  # the agent's node name
    netns: str  # primo-<name>
    address: str  # underlay address
    underlay: str  # the underlay's namespace
    store: Store
    realizer: Realizer
    state_dir: Path


def ping(ns: str, address: str, timeout: float = 1.0) -> bool:
    """One ICMP echo from namespace ``ns`` to ``address`` (an unprivileged ping socket; no ping program)."""
    with esys.in_netns(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
    try:
        sock.settimeout(timeout)
        sock.sendto(struct.pack("!BBHHH", 8, 0, 0, 0, 1) + b"primo", (address, 0))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            data, peer = sock.recvfrom(256)
            if peer[0] == address and data[:1] == b"\0":  # an echo reply
                return True
    except OSError:  # timeout, unreachable
        return False
    finally:
        sock.close()
    return False


@pytest.fixture
def nodes() -> Iterator[Callable[[int], list[Node]]]:
    if os.geteuid() != 0:
        pytest.skip(ROOT_REASON)
    tag = f"a{secrets.token_hex(3)}"
    # not under /tmp: a container has its own /tmp, and its sshd reads its configuration from here
    top = Path(tempfile.mkdtemp(prefix=f"primo-{tag}-", dir="/var/tmp"))
    top.chmod(0o755)
    made_ns: list[str] = []
    made: list[Node] = []

    def make(count: int) -> list[Node]:
        underlay = f"primo-{tag}-u"
        netns.create(underlay)
        made_ns.append(underlay)
        with netns.iproute(underlay) as uipr:
            links.add_bridge(uipr, "primo-ulbr")
            links.add_address(uipr, "primo-ulbr", ipaddress.IPv4Interface("10.254.0.1/24"))  # a client there
        for i in range(count):
            name = f"{tag}n{i}"
            ns = f"primo-{name}"
            netns.create(ns)
            made_ns.append(ns)
            address = f"10.254.0.{11 + i}"
            with netns.iproute(underlay) as uipr:
                links.add_veth(uipr, f"primo-ul{i}", "primo-ul", peer_netns=ns, master="primo-ulbr", up=True)
            with netns.iproute(ns) as nipr:
                links.set_up(nipr, "lo")
                links.set_up(nipr, "primo-ul")
                links.add_address(nipr, "primo-ul", ipaddress.IPv4Interface(f"{address}/24"))
            state = top / name
            store = Store(state)
            with esys.in_netns(ns):
                realizer = Realizer(node=name, state_dir=state, underlay_dev="primo-ul", underlay_ip=address,
                                    store=store)
            node = Node(name, ns, address, underlay, store, realizer, state)
            made.append(node)
            realizer.setup()
        return made[-count:]

    try:
        yield make
    finally:
        failures = []
        for node in made:
            try:
                node.realizer.teardown()
            except EmuError as exc:  # reported after everything is cleaned
                failures.append(f"{node.name}: {exc}")
            node.realizer.close()
        for name in list(netns.names(f"primo-{tag}")):
            kill_inside(name)
            netns.remove(name)
        for path in netns.NETNS_DIR.glob(f"primo-{tag}*"):  # files a failed create left unmounted
            netns.remove(path.name)
        for name in reversed(made_ns):
            kill_inside(name)
            netns.remove(name)
        groups = container.cgroups()
        for name in sorted(groups.names(f"primo/{tag}"), key=lambda n: -n.count("/")):
            group = groups.find(name)
            if group is not None:
                group.remove()
        shutil.rmtree(top, ignore_errors=True)
        assert not failures, failures


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    root = create_root(Urn.parse("urn:publicid:IDN+primo+authority+root"), now=NOW)

    def mint(urn: str, issuer: Identity = root, ca: bool = True) -> Identity:
        # Servers' certificates name 127.0.0.1, where the tests reach them.
        return issue(issuer, Urn.parse(urn), now=NOW, lifetime=YEAR, ca=ca, dns_names=("localhost",),
                     ip_addresses=("127.0.0.1",))

    user = mint("urn:publicid:IDN+primo+user+alice", issuer=mint("urn:publicid:IDN+primo+authority+ma"), ca=False)
    trust_dir = directory / "trusted_roots"
    trust_dir.mkdir()
    (trust_dir / "root.pem").write_text(root.gid.pem())
    return Pki(trust_dir, TrustStore.from_dir(trust_dir),
               Files.save(mint("urn:publicid:IDN+primo+node+pc1", ca=False), directory, "agent"),
               Files.save(mint("urn:publicid:IDN+primo+authority+cm"), directory, "am"),
               Files.save(mint("urn:publicid:IDN+primo:other+authority+cm"), directory, "other_cm"),
               Files.save(user, directory, "alice"))


@pytest.fixture
def agent(pki: Pki, tmp_path: Path) -> Iterator[Running]:
    with started(pki, tmp_path / "state") as running:
        yield running
