"""A simulator sliver's simulation run by the real agent and realizer in a node namespace.

One node holds a simulator sliver and two emulated hosts, each host's ``eth1`` patched to one of the
simulator's interfaces (links as the AM makes them), with the model's addresses and a route to the
model's address space. Through the agent's RPC: Start runs ``primo immerse`` in the simulator's
network namespace and cgroup, as the slice's simulation uid; ping between the hosts has the model's
RTT; Stop ends it with results (``Results``); a model that does not load fails with its error in the
log; results are read without following what the simulation planted; Release leaves nothing.
"""

from __future__ import annotations

import json
import os
import re
import time
import xmlrpc.client
from pathlib import Path
from typing import Any

import pytest
from tests.agent.service_support import SLICE, Pki, code, started
from tests.immersion.support import median_rtt, ping, rtts

from primogeni.agent import monitor as mon
from primogeni.agent.names import SIM_ROOT, cgroup_name, sim_dir, sliver_netns
from primogeni.agent.realize_sim import RESULTS_CAP, SIM_USER
from primogeni.agent.spec import IfaceSpec, LinkSpec, SliverSpec
from primogeni.emu import container, netns
from primogeni.geni.codes import GeniCode
from primogeni.immersion.run import load_model_text
from primogeni.sim import Simulation
from primogeni.sim.emulation import Emulation

# two emulated hosts either side of two routers; three links of 5 ms at 100 Mb/s
MODEL = """Net [
  prefix 10.77.0.0/16
  host [ id 1 emulated true interface [ id 0 ] ]
  router [ id 2 interface [ id 0 ] interface [ id 1 ] ]
  router [ id 3 interface [ id 0 ] interface [ id 1 ] ]
  host [ id 4 emulated true interface [ id 0 ] ]
  link [ attach 1(0) attach 2(0) delay 0.005 bitrate 1e8 ]
  link [ attach 2(1) attach 3(0) delay 0.005 bitrate 1e8 ]
  link [ attach 3(1) attach 4(0) delay 0.005 bitrate 1e8 ]
]
"""
BROKEN = "Net [ host [ id 1 emulated true interface [ id 0 ] ] link [ attach 1(0) attach 9(0) ] ]\n"
SIM, H1, H4 = (f"urn:publicid:IDN+primo+sliver+{n}" for n in ("sim", "h1", "h4"))
L1, L4 = "urn:publicid:IDN+primo+sliver+l1", "urn:publicid:IDN+primo+sliver+l4"


def _mac(i: int) -> str:
    return f"02:00:00:00:77:{i:02x}"


def _slivers(model: str = MODEL) -> tuple[list[SliverSpec], list[LinkSpec], Any]:
    """The simulator, the two hosts (addresses and routes as the model gives them) and their two links."""
    network = load_model_text(MODEL, "model.dml")
    hosts = Emulation(Simulation(network), lambda *_: None).hosts
    sim = SliverSpec(SIM, SLICE, "sim", 1, (30010, 30019), kind="simulator", model_format="dml", model=model,
                     interfaces=(IfaceSpec("eth1", _mac(1), None, L1), IfaceSpec("eth2", _mac(2), None, L4)),
                     attach=(("top:1", "eth1"), ("top:4", "eth2")))
    emulated = [SliverSpec(urn, SLICE, name, slot, (30000 + 10 * slot, 30009 + 10 * slot),
                           interfaces=(IfaceSpec("eth1", _mac(slot + 8), str(hosts[path].address), link),),
                           routes=((str(network.prefix), str(hosts[path].gateway)),))
                for urn, name, slot, path, link in ((H1, "h1", 2, "top:1", L1), (H4, "h4", 3, "top:4", L4))]
    links = [LinkSpec(L1, SLICE, 4801, ((H1, "eth1"), (SIM, "eth1"))),
             LinkSpec(L4, SLICE, 4802, ((H4, "eth1"), (SIM, "eth2")))]
    return [sim, *emulated], links, hosts


def _wait_state(running: Any, want: set[str], timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        value: dict[str, Any] = running.call("Results", SIM)["value"]
        if value["state"] in want or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def _wait_log(realizer: Any, text: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        log: str = realizer.simulation(SIM)["log"]
        if text in log or time.monotonic() > deadline:
            return log
        time.sleep(0.05)


@pytest.mark.root
def test_a_simulator_sliver_runs_stops_reports_and_goes(pki: Pki, nodes: Any) -> None:
    (node,) = nodes(1)
    slivers, links, hosts = _slivers()
    network = load_model_text(MODEL, "model.dml")
    expected = (Simulation(network).path_delay("top:1", "top:4", 84)
                + Simulation(network).path_delay("top:4", "top:1", 84)) / 1e6
    assert expected == pytest.approx(30.04, abs=0.01)
    with started(pki, node.state_dir, node.realizer, node.store, node=node.name, underlay_ip=node.address) as running:
        answer = running.call("ProvisionMany", [s.to_dict() for s in slivers], [link.to_dict() for link in links])
        assert set(answer["value"].values()) == {"ready"}, answer
        assert running.call("Results", SIM)["value"] == {"state": "idle", "log": "", "files": {}, "omitted": []}
        assert code(running.call("Results", H1)) == GeniCode.BADARGS
        assert code(running.call("Results", "urn:publicid:IDN+primo+sliver+nope")) == GeniCode.SEARCHFAILED
        sim_ns = sliver_netns(node.name, 1)
        assert netns.get_sysctl(sim_ns, "net.ipv6.conf.eth1.disable_ipv6") == "1"  # the simulator's own sysctls

        # Start: primo immerse in the sliver's netns and cgroup, as the slice's simulation uid
        assert running.call("Start", SIM)["value"] == "ready"
        log = _wait_log(node.realizer, "running ")
        assert "running model.dml in real time" in log, log
        record = node.realizer._sim_record(1)
        pid = record["pid"]
        uid = node.realizer._uid(SLICE, SIM_USER)
        status = Path(f"/proc/{pid}/status").read_text()
        assert re.search(rf"^Uid:\s+{uid}\s+{uid}\s+{uid}\s+{uid}$", status, re.M), status
        assert re.search(r"^CapEff:\s+0+$", status, re.M), status
        c = container.attach(sim_ns, node.state_dir / "containers")
        assert c is not None
        assert mon.namespace_id(pid, "net") == mon.namespace_id(c.pid, "net")
        assert mon.namespace_id(pid, "mnt") == mon.namespace_id(os.getpid(), "mnt")  # not the container's
        group = container.cgroups().find(cgroup_name(node.name, 1))
        assert group is not None and pid in group.pids()
        assert node.realizer.start_simulation(node.store.get_sliver(SIM)) == pid  # running: left alone
        assert running.call("Results", SIM)["value"]["state"] == "running"

        out = ping(sliver_netns(node.name, 2), str(hosts["top:4"].address.ip), count=20, interval=0.05).stdout
        got = median_rtt(out)
        assert abs(got - expected) < 1.0, f"median RTT {got} ms, the model's {expected} ms:\n{out}"
        assert len(rtts(out)) >= 19, out

        # Stop: SIGTERM, and the results are written
        assert running.call("Stop", SIM)["value"] == "stopped"
        assert mon.process_start(pid) is None
        value = running.call("Results", SIM)["value"]
        assert value["state"] == "done" and value["exit_code"] == 0, value["log"]
        assert {"summary.json", "flows.csv", "links.csv"} <= set(value["files"]) and value["omitted"] == []
        assert all(isinstance(data, bytes) for data in value["files"].values())
        assert json.loads(value["files"]["summary.json"])["immersion"]["user"] == {"uid": uid, "gid": uid}
        assert "stopped at simulated" in value["log"]

        # the results directory is the simulation's: what it plants there is not followed
        results = sim_dir(node.state_dir, 1) / "results"
        (results / "passwd").symlink_to("/etc/passwd")
        (results / "etc").symlink_to("/etc")
        os.mkfifo(results / "fifo")
        (results / "roots").write_text("not the simulation's\n")
        big = results / "big.pcap"
        with open(big, "wb") as f:
            f.truncate(RESULTS_CAP + 1)
        sub = results / "sub"
        sub.mkdir()
        (sub / "note.txt").write_text("kept\n")
        (sub / "shadow").symlink_to("/etc/shadow")
        for path in (big, sub, sub / "note.txt"):
            os.chown(path, uid, uid)
        value = node.realizer.simulation(SIM)
        assert set(value["files"]) == {"summary.json", "flows.csv", "links.csv", "sub/note.txt"}
        assert set(value["omitted"]) == {"passwd", "etc", "fifo", "roots", "big.pcap", "sub/shadow"}
        assert value["files"]["sub/note.txt"] == b"kept\n"
        assert not any(b"root:" in data for data in value["files"].values())

        # a model that does not load: failed, the reason in the log; the earlier results are gone
        node.store.put_sliver(SliverSpec.from_dict({**slivers[0].to_dict(), "model": BROKEN}))
        assert running.call("Start", SIM)["value"] == "ready"
        value = _wait_state(running, {"done", "failed"})
        assert value["state"] == "failed" and value["exit_code"] == 2, value
        assert "error:" in value["log"] and "dropped privileges" in value["log"], value["log"]
        assert value["files"] == {}

        # Release while it runs: no process, no directory, no record
        node.store.put_sliver(slivers[0])
        assert running.call("Start", SIM)["value"] == "ready"
        _wait_log(node.realizer, "running ")
        pid = node.realizer._sim_record(1)["pid"]
        answer = running.call("ReleaseMany", [L1, L4, SIM, H1, H4])
        assert set(answer["value"].values()) == {"released"}, answer
        assert mon.process_start(pid) is None
        assert not sim_dir(node.state_dir, 1).exists()
        assert not (node.state_dir / "simulations" / "1.json").exists()
        assert not netns.exists(sim_ns)


def test_results_travel_as_base64() -> None:
    """The wire form: each file is a base64 <value> that the AM's client (use_builtin_types) reads as bytes."""
    from primogeni.agent.service_util import results_wire

    wire = results_wire({"state": "done", "exit_code": 0, "log": "ok", "files": {"a.bin": b"\0\xff"}, "omitted": []})
    text = xmlrpc.client.dumps((wire,), methodresponse=True)
    assert "<base64>" in text
    (back,), _ = xmlrpc.client.loads(text, use_builtin_types=True)
    assert back["files"] == {"a.bin": b"\0\xff"} and back["exit_code"] == 0


@pytest.mark.root
def test_teardown_stops_the_simulation_and_removes_its_tree(nodes: Any) -> None:
    (node,) = nodes(1)
    slivers, links, _ = _slivers()
    for spec in slivers:
        node.store.put_sliver(spec)
    node.realizer.ensure_slivers(slivers)
    for link in links:
        node.store.put_link(link)
        node.realizer.ensure_link(link)
    node.realizer.start_sliver(SIM)
    _wait_log(node.realizer, "running ")
    pid = node.realizer._sim_record(1)["pid"]
    node.realizer.teardown()
    assert mon.process_start(pid) is None
    assert not sim_dir(node.state_dir, 1).parent.exists()
    assert not (node.state_dir / "simulations").exists()


def test_substrate_down_and_clean_know_the_simulations_tree(tmp_path: Path) -> None:
    from primogeni.substrate import clean

    trees = dict(clean.agent_trees("pc1", tmp_path))
    assert trees["simulations"] == sim_dir(tmp_path, 0).parent and trees["simulations"].parent == SIM_ROOT
