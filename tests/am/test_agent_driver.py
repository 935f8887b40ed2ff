"""The AM's agent driver against fake agents over real TLS: specs, release, errors, restarts, monitoring."""

from __future__ import annotations

import inspect
import ipaddress
import time

from lxml import etree
from sqlalchemy import func, select

from primogeni.am import agent_rpc
from primogeni.am.agent_driver import AgentDriver, host_name
from primogeni.am.models import DriverSliverRow, SubnetRow, VniRow
from primogeni.am.service import AmService
from primogeni.geni.codes import GeniCode
from primogeni.geni.rspec import validate

from .conftest import proxy
from .fake_agent import GENI3, AgentBed, FakeAgent, agent_bed, code, rspec, slice_urn
from .test_agent_compat import Node, real_agents

__all__ = ["agent_bed", "real_agents"]

RSPEC_NS = "{http://www.geni.net/resources/rspec/3}"
TRIANGLE = rspec({"h1": "pc1", "h2": "pc2", "h3": "pc1"}, {"lan": ["h1", "h2", "h3"], "wire": ["h1", "h3"]})


def count(service: AmService, table: type) -> int:
    with service.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(table)) or 0)


def manifest_of(value: dict) -> etree._Element:
    validate(value["geni_rspec"], "manifest")
    return etree.fromstring(value["geni_rspec"].encode())


def test_provision_sends_the_right_specs_to_the_right_agents(agent_bed: AgentBed) -> None:
    pc1, pc2, shared1 = (agent_bed.agents[n] for n in ("pc1", "pc2", "shared1"))
    value = agent_bed.create("tri", TRIANGLE)
    root = manifest_of(value)
    nodes = {n.get("client_id"): n for n in root.iter(f"{RSPEC_NS}node")}
    urns = {c: n.get("sliver_id") for c, n in nodes.items()}
    links = {lk.get("client_id"): lk for lk in root.iter(f"{RSPEC_NS}link")}
    vnis = {c: int(lk.get("vlantag")) for c, lk in links.items()}
    assert sorted(pc1.slivers) == sorted([urns["h1"], urns["h3"]]) and list(pc2.slivers) == [urns["h2"]]
    assert not shared1.calls  # nothing for the node the slice does not use

    h1, h2 = pc1.slivers[urns["h1"]], pc2.slivers[urns["h2"]]
    # ports: slot k of a node owns ssh_port_base + 10k … +9, and the manifest's login is the first
    assert h1.ports == (30000 + 10 * h1.slot, 30000 + 10 * h1.slot + 9)
    assert h2.ports == (30200 + 10 * h2.slot, 30200 + 10 * h2.slot + 9)
    login = nodes["h2"].find(f"{RSPEC_NS}services/{RSPEC_NS}login")
    assert login is not None and int(login.get("port")) == h2.ports[0] and login.get("username") == "alice"
    assert h1.hostname == "h1" and h1.slice_urn == slice_urn("tri") and h1.kind == "emulated-host"
    # memory: the sliver's slot's share of the node's 4 GiB over 8 slots; CPU is shared by weight, uncapped
    assert h1.memory_mb == 512 and h1.cpu_percent == 0
    assert [(g.user, g.keys) for g in h1.logins] == [("alice", ("ssh-ed25519 AAAAC3Nza alice@laptop",))]
    # interfaces: one per link, addressed from the pool, tied to their link slivers
    lan_net = ipaddress.IPv4Interface(h1.interfaces[0].address).network
    assert lan_net.subnet_of(ipaddress.IPv4Network("10.128.0.0/10")) and lan_net.prefixlen == 24
    assert [i.name for i in h1.interfaces] == ["eth1", "eth2"]
    assert {i.link for i in h1.interfaces} == {links["lan"].get("sliver_id"), links["wire"].get("sliver_id")}
    # the slice's hosts, its tunnel keys and the underlay addresses of its other nodes (vsys)
    hosts = dict(h1.hosts)
    assert sorted(hosts) == ["h1", "h2", "h3"] and hosts["h2"] == h2.interfaces[0].address.split("/")[0]
    assert sorted(h1.vsys_keys) == sorted(vnis.values()) == sorted(h2.vsys_keys)
    assert h1.vsys_peers == ("10.254.0.12",) and h2.vsys_peers == ("10.254.0.11",)
    # links: one ProvisionLink per node holding an end; members are that node's ends; remotes the others
    lan1, lan2 = pc1.links[links["lan"].get("sliver_id")], pc2.links[links["lan"].get("sliver_id")]
    assert sorted(lan1.members) == sorted([(urns["h1"], "eth1"), (urns["h3"], "eth1")])
    assert lan1.remotes == ("10.254.0.12",) and lan2.members == ((urns["h2"], "eth1"),)
    assert lan2.remotes == ("10.254.0.11",) and lan1.vni == lan2.vni == vnis["lan"]
    wire = pc1.links[links["wire"].get("sliver_id")]
    assert wire.remotes == () and links["wire"].get("sliver_id") not in pc2.links
    assert sorted(wire.members) == sorted([(urns["h1"], "eth2"), (urns["h3"], "eth2")])
    # one ProvisionMany per node: its slivers, then its ends of the links; then Start on their own node only
    ((slivers, ends),) = pc1.called("ProvisionMany")
    assert sorted(d["urn"] for d in slivers) == sorted([urns["h1"], urns["h3"]]) and len(ends) == 2
    assert len(pc2.called("ProvisionMany")) == 1 and not pc1.called("ProvisionSliver") + pc1.called("ProvisionLink")
    assert sorted(a[0] for a in pc1.called("Start")) == sorted([urns["h1"], urns["h3"]])
    assert pc2.called("Start") == [(urns["h2"],)]
    assert pc1.running == {urns["h1"], urns["h3"]}


def test_delete_releases_on_every_node_and_frees_tags_and_subnets(agent_bed: AgentBed) -> None:
    pc1, pc2 = agent_bed.agents["pc1"], agent_bed.agents["pc2"]
    agent_bed.create("del", TRIANGLE)
    assert count(agent_bed.service, DriverSliverRow) == 5 and count(agent_bed.service, SubnetRow) == 2
    link_urns = set(pc1.links)
    answer = agent_bed.am().Delete([slice_urn("del")], agent_bed.cred("del"), {})
    assert code(answer) == 0, answer["output"]
    assert not pc1.slivers and not pc1.links and not pc2.slivers and not pc2.links
    ((gone,),) = pc1.called("ReleaseMany")  # one call per node: the links first, then the slivers they join
    assert len(gone) == 4 and set(gone[:2]) == link_urns and len(pc2.called("ReleaseMany")[0][0]) == 2
    assert not pc1.called("Release") and not pc2.called("Release")
    for table in (DriverSliverRow, SubnetRow, VniRow):
        assert count(agent_bed.service, table) == 0, table


def test_an_agent_error_names_the_node_and_leaves_the_am_consistent(agent_bed: AgentBed) -> None:
    pc1, pc2 = agent_bed.agents["pc1"], agent_bed.agents["pc2"]
    pc2.fail["ProvisionSliver"] = "out of disk space"
    am, cred = agent_bed.am(), agent_bed.cred("bad")
    assert code(am.Allocate(slice_urn("bad"), cred, TRIANGLE, {})) == 0
    answer = am.Provision([slice_urn("bad")], cred, {"geni_rspec_version": GENI3})
    assert code(answer) == GeniCode.ERROR
    assert "node pc2" in answer["output"] and "out of disk space" in answer["output"]
    status = am.Status([slice_urn("bad")], cred, {})["value"]["geni_slivers"]
    assert {s["geni_allocation_status"] for s in status} == {"geni_allocated"}
    assert not pc1.slivers and not pc1.links  # what pc1 had made was released again
    assert count(agent_bed.service, DriverSliverRow) == 0
    del pc2.fail["ProvisionSliver"]  # the node is fixed: the same allocation provisions now
    answer = am.Provision([slice_urn("bad")], cred, {"geni_rspec_version": GENI3})
    assert code(answer) == 0, answer["output"]
    assert len(pc1.slivers) == 2 and len(pc2.slivers) == 1


def test_an_unreachable_agent_neither_fails_slivers_nor_loses_releases(agent_bed: AgentBed) -> None:
    value = agent_bed.create("down", rspec({"a": "pc1", "b": "pc2"}, {"ab": ["a", "b"]}))
    urns = {n.get("client_id"): n.get("sliver_id") for n in manifest_of(value).iter(f"{RSPEC_NS}node")}
    driver = agent_bed.service.driver
    assert isinstance(driver, AgentDriver)
    agent_bed.agents["pc2"].stop()
    assert agent_bed.service.am.reconcile() == []  # unknown is not lost
    assert driver.status(urns["b"]) == "failed" and driver.status(urns["a"]) == "ready"
    am, cred = agent_bed.am(), agent_bed.cred("down")
    answer = am.Status([slice_urn("down")], cred, {})["value"]["geni_slivers"]
    assert "geni_failed" not in {s["geni_operational_status"] for s in answer}
    assert code(am.Delete([slice_urn("down")], cred, {})) == 0  # the AM's books are clean at once
    assert not agent_bed.agents["pc1"].slivers
    assert count(agent_bed.service, DriverSliverRow) == 2  # b and the link still wait for pc2
    pc2 = agent_bed.revive("pc2")
    waiting = sorted([urns["b"], *pc2.links])
    assert sorted(driver.sweep()) == waiting
    assert not pc2.slivers and not pc2.links and count(agent_bed.service, DriverSliverRow) == 0


def test_a_sliver_the_agent_lost_is_marked_failed(agent_bed: AgentBed) -> None:
    value = agent_bed.create("lost", rspec({"a": "pc1"}))
    (urn,) = [n.get("sliver_id") for n in manifest_of(value).iter(f"{RSPEC_NS}node")]
    agent_bed.agents["pc1"].slivers.clear()  # e.g. the node was reinstalled
    assert agent_bed.service.am.reconcile() == [urn]
    status = agent_bed.am().Status([slice_urn("lost")], agent_bed.cred("lost"), {})["value"]["geni_slivers"]
    assert status[0]["geni_operational_status"] == "geni_failed"


def test_release_reaches_the_agents_after_an_am_restart(agent_bed: AgentBed, data_dir, tmp_path) -> None:
    agent_bed.create("restart", TRIANGLE)
    db = f"sqlite:///{tmp_path / 'am.sqlite'}"
    agent_bed.service.stop()
    agent_bed.service = AmService(data_dir, db_url=db, driver="agents", reap_interval=3600)
    agent_bed.service.start()
    answer = agent_bed.am().Delete([slice_urn("restart")], agent_bed.cred("restart"), {})
    assert code(answer) == 0, answer["output"]
    for name in ("pc1", "pc2"):
        assert not agent_bed.agents[name].slivers and not agent_bed.agents[name].links, name


def test_recover_releases_what_agents_hold_but_the_am_does_not(agent_bed: AgentBed) -> None:
    agent_bed.create("orphan", rspec({"a": "pc1"}))
    pc1 = agent_bed.agents["pc1"]
    stray = dict(pc1.slivers)
    agent_bed.am().Delete([slice_urn("orphan")], agent_bed.cred("orphan"), {})
    pc1.slivers.update(stray)  # the agent kept a sliver the AM no longer knows (say, an old database)
    assert agent_bed.service.am.recover() == sorted(stray)
    assert not pc1.slivers


def test_status_shows_what_the_agents_measure(agent_bed: AgentBed) -> None:
    value = agent_bed.create("mon", rspec({"a": "pc1", "b": "pc2"}, {"ab": ["a", "b"]}))
    urns = {n.get("client_id"): n.get("sliver_id") for n in manifest_of(value).iter(f"{RSPEC_NS}node")}
    am, cred = agent_bed.am(), agent_bed.cred("mon")
    slivers = {s["geni_sliver_urn"]: s for s in am.Status([slice_urn("mon")], cred, {})["value"]["geni_slivers"]}
    spec = agent_bed.agents["pc1"].slivers[urns["a"]]
    figures = slivers[urns["a"]]["primo_monitor"]
    assert figures["cpu_ns"] == 5_000_000_000 + spec.slot and figures["memory_bytes"] == 1_048_576 * (spec.slot + 1)
    # the node's end of the veth counts the other way round
    assert figures["interfaces"]["eth1"] == {"rx_bytes": float(3 << 30), "tx_bytes": 100, "rx_packets": 2,
                                             "tx_packets": 1}
    assert all("primo_monitor" not in s for u, s in slivers.items() if u not in urns.values())  # links
    # AM API v2 SliverStatus carries the same figures
    old = proxy(agent_bed.fed, agent_bed.service.urls["2"]).SliverStatus(slice_urn("mon"), cred, {})
    assert code(old) == 0
    assert all("primo_monitor" in r for r in old["value"]["geni_resources"] if r["geni_urn"] in urns.values())
    # the advertisement carries each node's load, and validates
    ad = am.ListResources([{"geni_type": "geni_sfa", "geni_version": "3",
                            "geni_value": agent_bed.fed.user_cred("alice").xml}], {"geni_rspec_version": GENI3})
    validate(ad["value"], "advertisement")
    root = etree.fromstring(ad["value"].encode())
    usage = root.find(f"{RSPEC_NS}node[@component_name='pc1']/{{http://www.primogeni.net/resources/rspec/ext/"
                      "primogeni/1}usage")
    assert usage is not None and usage.get("cpus") == "2" and usage.get("mem_total") == str(4 << 30)


def test_nodes_without_a_live_agent_are_not_offered(agent_bed: AgentBed) -> None:
    am = agent_bed.am()
    ucred = [{"geni_type": "geni_sfa", "geni_version": "3", "geni_value": agent_bed.fed.user_cred("alice").xml}]
    ad = am.ListResources(ucred, {"geni_rspec_version": GENI3})["value"]
    root = etree.fromstring(ad.encode())
    available = {n.get("component_name"): n.find(f"{RSPEC_NS}available").get("now")
                 for n in root.iter(f"{RSPEC_NS}node")}
    assert available == {"pc1": "true", "pc2": "true", "shared1": "true", "shared2": "false"}
    answer = am.ListResources(ucred, {"geni_rspec_version": GENI3, "geni_available": True})
    assert code(answer) == 0, answer["output"]
    validate(answer["value"], "advertisement")
    only = etree.fromstring(answer["value"].encode())
    assert sorted(n.get("component_name") for n in only.iter(f"{RSPEC_NS}node")) == ["pc1", "pc2", "shared1"]
    assert "shared2" not in answer["value"]  # nor any link to it
    answer = am.Allocate(slice_urn("nope"), agent_bed.cred("nope"), rspec({"x": "shared2"}), {})
    assert code(answer) == GeniCode.UNAVAILABLE and "shared2" in answer["output"] and "agent" in answer["output"]
    # unbound nodes never land there either (a shared node takes one sliver per slice, so the fourth fails)
    answer = am.Allocate(slice_urn("many"), agent_bed.cred("many"),
                         rspec({"a": None, "b": None, "c": "shared1", "d": "shared1"}), {})
    assert code(answer) == GeniCode.BADARGS and "shared1" in answer["output"]


def test_host_names_are_valid() -> None:
    assert host_name("h1") == "h1" and host_name("node_0.a") == "node-0-a" and host_name("__") == "host"
    assert len(host_name("x" * 100)) == 63


def test_rpc_round_trip_and_parallel_provisioning(agent_bed: AgentBed) -> None:
    """Keep-alive TLS calls are cheap, and many slivers go out in parallel (figures printed)."""
    driver = agent_bed.service.driver
    assert isinstance(driver, AgentDriver)
    driver.call("pc1", "GetVersion")  # connect once
    n = 200
    started = time.perf_counter()
    for _ in range(n):
        driver.call("pc1", "GetVersion")
    rtt = (time.perf_counter() - started) / n
    nodes = {f"h{i}": ("pc1" if i % 2 else "pc2") for i in range(12)}
    started = time.perf_counter()
    agent_bed.create("big", rspec(nodes, {f"l{i}": [f"h{i}", f"h{i + 1}"] for i in range(0, 12, 2)}), start=False)
    took = time.perf_counter() - started
    print(f"\nagent RPC round trip over TLS keep-alive: {rtt * 1e3:.2f} ms; "
          f"Allocate+Provision of 12 slivers and 6 links: {took * 1e3:.0f} ms")
    assert rtt < 0.05
    assert len(agent_bed.agents["pc1"].slivers) == 6 and len(agent_bed.agents["pc2"].slivers) == 6


def test_an_agent_with_the_wrong_certificate_is_not_trusted(agent_bed: AgentBed) -> None:
    # pc2's agent answers at pc1's registered URL: the AM refuses to talk to it
    agent_bed.agents["pc1"].stop()
    impostor = FakeAgent(agent_bed.fed, "pc2", "10.254.0.11", port=agent_bed.agents["pc1"].port)
    try:
        driver = agent_bed.service.driver
        assert isinstance(driver, AgentDriver)
        answer = agent_bed.am().Allocate(slice_urn("imp"), agent_bed.cred("imp"), rspec({"a": "pc1"}), {})
        assert code(answer) == 0
        answer = agent_bed.am().Provision([slice_urn("imp")], agent_bed.cred("imp"), {})
        assert code(answer) == GeniCode.ERROR and "node pc1" in answer["output"]
        assert "node+pc2" in answer["output"] and not impostor.slivers
    finally:
        impostor.stop()


def older(bed: AgentBed, name: str) -> FakeAgent:
    """Replace ``name``'s agent by one without the batch methods (registered at a new URL)."""
    old = bed.agents[name]
    bed.agents[name] = FakeAgent(bed.fed, name, old.underlay, old.kind, batch=False)
    old.stop()
    answer = bed.agents[name].register(bed.service.urls["registry"])
    assert code(answer) == 0, answer["output"]
    return bed.agents[name]


def test_an_agent_without_batch_methods_gets_single_calls(agent_bed: AgentBed) -> None:
    pc1, pc2 = older(agent_bed, "pc1"), agent_bed.agents["pc2"]
    agent_bed.create("mixed", TRIANGLE)
    assert not pc1.called("ProvisionMany")  # its server answered UNSUPPORTED without calling it
    assert len(pc1.called("ProvisionSliver")) == 2 and len(pc1.called("ProvisionLink")) == 2
    methods = [m for m, _ in pc1.calls]
    assert methods.index("ProvisionLink") > max(i for i, m in enumerate(methods) if m == "ProvisionSliver")
    assert len(pc2.called("ProvisionMany")) == 1 and not pc2.called("ProvisionSliver")
    assert len(pc1.slivers) == 2 and len(pc2.slivers) == 1 and len(pc1.links) == 2
    link_urns = set(pc1.links)
    assert code(agent_bed.am().Delete([slice_urn("mixed")], agent_bed.cred("mixed"), {})) == 0
    released = [a[0] for a in pc1.called("Release")]
    assert len(released) == 4 and set(released[:2]) == link_urns  # links first, then slivers
    assert len(pc2.called("ReleaseMany")) == 1 and not pc2.called("Release")
    assert not pc1.slivers and not pc1.links and not pc2.slivers and count(agent_bed.service, DriverSliverRow) == 0
    # and an older agent's failure is still reported with its node and reason
    pc1.fail["ProvisionSliver"] = "out of disk space"
    am, cred = agent_bed.am(), agent_bed.cred("bad")
    assert code(am.Allocate(slice_urn("bad"), cred, TRIANGLE, {})) == 0
    answer = am.Provision([slice_urn("bad")], cred, {"geni_rspec_version": GENI3})
    assert code(answer) == GeniCode.ERROR and "node pc1" in answer["output"] and "out of disk" in answer["output"]
    assert not pc2.slivers and count(agent_bed.service, DriverSliverRow) == 0


def test_a_failed_release_item_waits_for_the_sweep(agent_bed: AgentBed) -> None:
    value = agent_bed.create("rel", rspec({"a": "pc1", "b": "pc2"}))
    urns = {n.get("client_id"): n.get("sliver_id") for n in manifest_of(value).iter(f"{RSPEC_NS}node")}
    pc1, pc2 = agent_bed.agents["pc1"], agent_bed.agents["pc2"]
    pc1.fail["Release"] = "device busy"  # each item of pc1's ReleaseMany fails
    assert code(agent_bed.am().Delete([slice_urn("rel")], agent_bed.cred("rel"), {})) == 0
    assert not pc2.slivers and list(pc1.slivers) == [urns["a"]]
    driver = agent_bed.service.driver
    assert isinstance(driver, AgentDriver) and driver.placed(urns["a"]) == ["pc1"] and not driver.placed(urns["b"])
    del pc1.fail["Release"]
    assert driver.sweep() == [urns["a"]] and not pc1.slivers


def test_big_batches_are_cut_into_chunks(agent_bed: AgentBed, monkeypatch) -> None:
    monkeypatch.setattr(agent_rpc, "BATCH_ITEMS", 4)
    nodes = {f"h{i}": ("pc1" if i % 2 else "pc2") for i in range(12)}
    agent_bed.create("chunks", rspec(nodes, {f"l{i}": [f"h{i}", f"h{i + 1}"] for i in range(0, 12, 2)}), start=False)
    pc1 = agent_bed.agents["pc1"]
    calls = pc1.called("ProvisionMany")  # 6 slivers in chunks of 4 and 2, then the 6 links' ends in 4 and 2
    assert sorted((len(s), len(lk)) for s, lk in calls) == [(0, 2), (0, 4), (2, 0), (4, 0)]
    assert [len(lk) for _s, lk in calls][-2:] != [0, 0] and len(pc1.slivers) == 6 and len(pc1.links) == 6
    # the byte budget: a slice's big host list shared by its specs is counted in every item
    hosts = [[f"h{i}", f"10.0.{i // 256}.{i % 256}"] for i in range(1000)]
    items = [{"urn": f"u{k}", "hosts": hosts} for k in range(10)]
    size = agent_rpc.wire_size(items[0], {})
    assert size > 1000 * 100
    monkeypatch.setattr(agent_rpc, "BATCH_BYTES", 3 * size)
    assert [len(c) for c in agent_rpc.chunks(items)] == [3, 3, 3, 1]
    import xmlrpc.client

    assert len(xmlrpc.client.dumps((items[:3],))) < 3 * size  # the estimate is an upper bound


def test_the_real_agent_service_takes_one_batch_per_node(real_agents: tuple[AgentBed, dict[str, Node]]) -> None:
    bed, nodes = real_agents
    seen: list[tuple[str, str]] = []
    for name, node in nodes.items():
        methods = node.service.api._methods
        for method, fn in list(methods.items()):
            def counted(*args, _fn=fn, _key=(name, method)):  # type: ignore[no-untyped-def]
                seen.append(_key)
                return _fn(*args)
            counted.__signature__ = inspect.signature(fn)  # type: ignore[attr-defined]
            methods[method] = counted
    bed.create("batch", rspec({"a": "pc1", "b": "pc2", "c": "pc1"}, {"abc": ["a", "b", "c"]}), start=False)
    provisions = sorted(m for m in seen if m[1].startswith("Provision"))
    assert provisions == [("pc1", "ProvisionMany"), ("pc2", "ProvisionMany")]
    assert len(nodes["pc1"].service.store.slivers()) == 2 and len(nodes["pc2"].service.store.links()) == 1
    assert code(bed.am().Delete([slice_urn("batch")], bed.cred("batch"), {})) == 0
    assert sorted(m for m in seen if m[1].startswith("Release")) == [("pc1", "ReleaseMany"), ("pc2", "ReleaseMany")]
    assert all(n.service.store.slivers() == {} and n.service.store.links() == {} for n in nodes.values())
    assert nodes["pc2"].recorder.calls[-1][0] == "remove_sliver"  # a realizer without remove_slivers: one by one


def test_rpc_cost_per_sliver_batched_and_single(agent_bed: AgentBed) -> None:
    """Calls and time to provision and delete 16 slivers (both nodes full) and 8 links (figures printed)."""
    nodes = {f"h{i}": ("pc1" if i % 2 else "pc2") for i in range(16)}
    request = rspec(nodes, {f"l{i}": [f"h{i}", f"h{i + 1}"] for i in range(0, 16, 2)})
    figures = {}
    for mode in ("batched", "single"):
        if mode == "single":
            older(agent_bed, "pc1"), older(agent_bed, "pc2")
        agents = [agent_bed.agents["pc1"], agent_bed.agents["pc2"]]
        started = time.perf_counter()
        agent_bed.create(mode, request, start=False)
        made = time.perf_counter() - started
        provision_calls = sum(len(a.calls) for a in agents)
        started = time.perf_counter()
        assert code(agent_bed.am().Delete([slice_urn(mode)], agent_bed.cred(mode), {})) == 0
        gone = time.perf_counter() - started
        figures[mode] = (provision_calls, sum(len(a.calls) for a in agents) - provision_calls, made, gone)
        assert not any(a.slivers or a.links for a in agents)
    print("\n16 slivers + 8 links on 2 fake agents: " + "; ".join(
        f"{m}: {p} provision calls ({p / 16:.2f}/sliver), {r} release calls, Provision {t * 1e3:.0f} ms, "
        f"Delete {d * 1e3:.0f} ms" for m, (p, r, t, d) in figures.items()))
    assert figures["batched"][:2] == (2, 2)  # the single mode also had one UNSUPPORTED answer per node and batch
    assert figures["single"][:2] == (16 + 16, 16 + 16)  # links span both nodes
