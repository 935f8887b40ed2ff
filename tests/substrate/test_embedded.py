"""The embedded substrate (``primo substrate up/down/status``, ``substrate/embedded.py``).

Pure parts (the layout, the overlap rule, the inventory, the AM certificate) run anywhere. The
kernel tests run as root with their own names (a random tag and node prefix) and a free underlay
subnet, so they never collide with the default substrate or a colleague's test: one brings two
nodes up through ``primo substrate up``, asks each agent GetVersion over TLS as the AM, checks
that ``up`` again changes nothing and that an overlapping second substrate is refused, then
``primo substrate down`` and checks that nothing is left; another makes ``up`` fail and checks
that it removed what it made.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import random
import shutil
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from tests.substrate.bed import run_all, token

from primogeni.agent.spec import SliverSpec
from primogeni.am.inventory import load_inventory
from primogeni.ch.authority import Authority
from primogeni.cli.main import main
from primogeni.emu import links, netns
from primogeni.geni.cert import Gid, Identity, TrustStore
from primogeni.substrate import clean, embedded
from primogeni.substrate.embedded import Layout, Substrate, SubstrateError, overlapping, plan

root = pytest.mark.root
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the embedded substrate needs root (namespaces, veths)")


def _agent_missing() -> str | None:
    for module in ("primogeni.agent.service", "primogeni.agent.realize"):
        try:
            if importlib.util.find_spec(module) is None:
                return module
            __import__(module)
        except ImportError as exc:
            return f"{module} ({exc})"
    return None


# -- pure ----------------------------------------------------------------------------------------


def test_plan_names_addresses_and_kinds() -> None:
    layout = plan(5, "10.254.0.0/24", ("cluster", "shared"), None)
    assert [n.name for n in layout.nodes] == ["pc1", "pc2", "pc3", "pc4", "pc5"]
    assert [n.kind for n in layout.nodes] == ["cluster", "shared", "shared", "shared", "shared"]
    assert [n.capacity for n in layout.nodes] == [8, 16, 16, 16, 16]
    assert str(layout.nodes[0].address) == "10.254.0.11/24" and str(layout.nodes[4].address) == "10.254.0.15/24"
    assert str(layout.host) == "10.254.0.1/24"
    assert (layout.underlay_netns, layout.root_veth, layout.host_peer) == ("primo-underlay", "primo-ul0", "primo-ulh")
    assert (layout.nodes[1].netns, layout.nodes[1].bridge_port) == ("primo-pc2", "primo-ul2")
    assert layout.registry_url == "https://10.254.0.1:12370/primo/registry/1"
    tagged = plan(1, "10.9.0.0/24", capacity=3, tag="ab12", node_prefix="zz", am_port=4000)
    assert (tagged.underlay_netns, tagged.root_veth, tagged.nodes[0].netns) == ("primo-underlay-ab12", "primo-ul0ab12",
                                                                                 "primo-zz1")
    assert tagged.nodes[0].capacity == 3 and all(len(n) <= 15 for n in (tagged.root_veth, tagged.host_peer))


@pytest.mark.parametrize("args, message", [
    ((5, "10.0.0.0/28"), "no room"),
    ((0, "10.0.0.0/24"), "choose 1 to 200"),
    ((2, "10.0.0.300/24"), "not an IPv4 subnet"),
    ((2, "10.0.0.0/24", ("cluster", "big")), "not one of"),
])
def test_plan_refuses(args: tuple, message: str) -> None:
    with pytest.raises(SubstrateError, match=message):
        plan(*args)
    with pytest.raises(SubstrateError, match="tag"):
        plan(1, tag="TOO-LONG")


def test_overlap_rule_ignores_default_routes() -> None:
    net = ipaddress.IPv4Network("10.254.0.0/24")
    used = [("default", ipaddress.IPv4Network("0.0.0.0/0")), ("lan", ipaddress.IPv4Network("192.0.2.0/24")),
            ("wide", ipaddress.IPv4Network("10.0.0.0/8")), ("host", ipaddress.IPv4Network("10.254.0.7/32"))]
    assert overlapping(net, used) == ["wide", "host"]
    assert overlapping(ipaddress.IPv4Network("172.31.0.0/24"), used) == []


def test_layout_round_trips_and_inventory_loads(tmp_path: Path) -> None:
    layout = plan(3, "10.254.3.0/24", ("cluster", "shared"), None, tag="x1", am_port=4444)
    assert Layout.from_toml(layout.to_toml()) == layout
    file = tmp_path / "inventory.toml"
    file.write_text(embedded.inventory_toml(layout))
    inventory = load_inventory(file)
    assert [(n.name, n.kind, n.hostname, n.exclusive) for n in inventory.nodes] == [
        ("pc1", "cluster", "10.254.3.11", True), ("pc2", "shared", "10.254.3.12", False),
        ("pc3", "shared", "10.254.3.13", False)]
    assert all(n.ssh_port_base == 30000 for n in inventory.nodes)
    assert {node for node, _ in inventory.links[0].endpoints} == {"pc1", "pc2", "pc3"}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory made by ``primo init`` (keys are slow: one per module, copied per test)."""
    home = tmp_path_factory.mktemp("substrate") / "home"
    result = CliRunner().invoke(main, ["init", "--home", str(home)])
    assert result.exit_code == 0, result.output
    return home


@pytest.fixture
def home(template: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "home"
    shutil.copytree(template, copy)
    return copy


def test_am_certificate_gains_the_underlay_address(home: Path) -> None:
    authority = Authority.load(home)
    before = Identity.load(authority.am_cert, authority.am_key)
    root_id = Identity.load(authority.trust_dir / "primo-root.pem", home / "ch" / "root.key")
    assert embedded.ensure_am_address(authority, root_id, "10.254.0.1") is True
    after = Identity.load(authority.am_cert, authority.am_key)  # same key: load checks they match
    assert after.gid.urn == before.gid.urn and after.gid.same_key(before.gid)
    _dns, ips = embedded._san_names(after.gid)
    assert ipaddress.ip_address("10.254.0.1") in ips and ipaddress.ip_address("127.0.0.1") in ips
    TrustStore.from_dir(authority.trust_dir).verify(after.gid, datetime.now(UTC))
    assert embedded.ensure_am_address(authority, root_id, "10.254.0.1") is False


# -- the kernel ----------------------------------------------------------------------------------


def _free_underlay() -> str:
    used = embedded._root_networks(exclude="")
    for _ in range(100):
        net = ipaddress.IPv4Network(f"10.254.{random.randint(100, 250)}.0/24")
        if not overlapping(net, used):
            return str(net)
    raise AssertionError("no free 10.254.x.0/24 for the test")


def _leftovers(layout: Layout, home: Path) -> list[str]:
    found = [n for n in (layout.underlay_netns, *(n.netns for n in layout.nodes)) if netns.exists(n)]
    found += [n for n in netns.names("primo-") if any(n.startswith(f"{x.netns}-") for x in layout.nodes)]
    with netns.iproute(None) as ipr:
        found += [n for n in links.names(ipr, "primo") if n in (layout.root_veth,)]
    found += [f"agent {pid}" for pid in clean.agents(under=home)]
    return found


@pytest.fixture
def tagged(home: Path) -> Iterator[tuple[Path, Layout]]:
    """A layout of our own names; whatever happens, its objects are removed at the end."""
    if os.geteuid() != 0:
        pytest.skip("the embedded substrate needs root (namespaces, veths)")
    layout = plan(2, _free_underlay(), tag=token(4), node_prefix="t" + token(3))
    try:
        yield home, layout
    finally:  # every step runs, whatever failed before it
        steps: list[Callable[[], object]] = [lambda: Substrate(home).down(timeout=2.0)]
        steps += [lambda p=p: clean.stop_process(p, 1.0) for p in clean.agents(under=home)]  # type: ignore[misc]
        steps += [lambda n=n: clean.remove_node_objects(n.name) for n in layout.nodes]  # type: ignore[misc]
        steps.append(lambda: embedded.remove_network(layout))
        run_all(steps)


def _cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@root
@needs_root
def test_up_status_down_leaves_nothing(tagged: tuple[Path, Layout]) -> None:
    missing = _agent_missing()
    if missing:
        pytest.skip(f"the node agent is not importable yet: {missing}")
    home, layout = tagged
    out = _cli("substrate", "up", "--home", str(home), "--nodes", "2", "--underlay", str(layout.underlay),
               "--tag", layout.tag, "--node-prefix", layout.nodes[0].name[:-1], "--wait", "30")
    assert f"--driver agents --host {layout.host.ip}" in out
    sub = Substrate(home)
    assert sub.layout() is not None and sub.layout().nodes == layout.nodes  # type: ignore[union-attr]
    with netns.iproute(None) as ipr:
        assert links.addresses(ipr, layout.root_veth) == [layout.host]
    pids = {n.name: sub.agent_pid(n.name) for n in layout.nodes}
    assert all(pids.values()), pids

    # every agent answers GetVersion over TLS to the AM's identity (host names checked)
    from primogeni.rpc import client

    for node in layout.nodes:
        proxy = client(f"https://{node.address.ip}:{embedded.AGENT_PORT}/primo/agent/1", cert=home / "am" / "am.pem",
                       key=home / "am" / "am.key", trust=TrustStore.from_dir(home / "trusted_roots"), timeout=20)
        answer = proxy.GetVersion()
        assert answer["code"]["geni_code"] == 0, answer
        assert answer["value"]["node"] == node.name
        agent_gid = Gid.from_pem((home / "substrate" / node.name / "agent.pem").read_bytes())
        assert str(agent_gid.urn) == f"urn:publicid:IDN+primo+node+{node.name}"
        # two slivers in one call (down removes them in one batch per node)
        specs = [SliverSpec(f"urn:publicid:IDN+primo+sliver+{node.name}s{k}", f"urn:publicid:IDN+primo:p+slice+s{k}",
                            f"h{k}", k, (30000 + 10 * k, 30009 + 10 * k)).to_dict() for k in (0, 1)]
        answer = proxy.ProvisionMany(specs, [])
        assert set(answer["value"].values()) == {"ready"}, answer
        assert all(netns.exists(f"{node.netns}-{k}") for k in (0, 1))

    # up again: nothing changes, the same agents run
    _cli("substrate", "up", "--home", str(home), "--nodes", "2", "--underlay", str(layout.underlay),
         "--tag", layout.tag, "--node-prefix", layout.nodes[0].name[:-1])
    assert {n.name: sub.agent_pid(n.name) for n in layout.nodes} == pids
    status = _cli("substrate", "status", "--home", str(home), "--json")
    assert f'"agent_pid": {pids[layout.nodes[0].name]}' in status

    # a second substrate on an overlapping underlay is refused before it makes anything
    other_home = home.parent / "other"
    shutil.copytree(home, other_home, ignore=shutil.ignore_patterns("substrate"))
    half = ipaddress.IPv4Network(f"{layout.underlay.network_address}/25")
    other = plan(1, str(half), tag=token(4), node_prefix="u" + token(3))
    with pytest.raises(SubstrateError, match="overlaps"):
        Substrate(other_home).up(other)
    assert not netns.exists(other.underlay_netns) and not netns.exists(other.nodes[0].netns)
    # … and so is one that would take over the first one's names
    same_names = plan(2, _free_underlay(), tag=layout.tag, node_prefix=layout.nodes[0].name[:-1])
    with pytest.raises(SubstrateError, match="did not make"):
        Substrate(other_home).up(same_names)
    assert {n.name: sub.agent_pid(n.name) for n in layout.nodes} == pids

    out = _cli("substrate", "down", "--home", str(home))
    assert "embedded substrate down" in out
    assert all(f"removed container {n.netns}-{k}\n" in out for n in layout.nodes for k in (0, 1)), out
    assert _leftovers(layout, home) == []
    assert sub.layout() is None


@root
@needs_root
def test_failed_up_removes_what_it_made(tagged: tuple[Path, Layout], monkeypatch: pytest.MonkeyPatch) -> None:
    home, layout = tagged
    inventory = (home / "am" / "inventory.toml").read_text()
    monkeypatch.setattr(embedded, "agent_argv", lambda config: [sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(SubstrateError, match="exited at start"):
        Substrate(home).up(layout, wait=5)
    assert _leftovers(layout, home) == []
    assert not (home / "substrate").exists()
    assert (home / "am" / "inventory.toml").read_text() == inventory
