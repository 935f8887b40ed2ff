"""Immersion deployed by the aggregate, end to end on three embedded physical nodes (issue 5).

A request carries a model with two emulated hosts; the aggregate learns the model in its sandbox,
wires each emulated host (a container on pc1, pc2) to the simulator sliver (a container on pc3)
over VXLAN, and the agent on pc3 runs ``primo immerse`` when the slice is started. Real ping and
iperf3 between the containers then see the simulated network; stop makes the simulation write
its results, ``primo results`` fetches them, and delete leaves nothing behind.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tests.immersion.support import model
from tests.substrate.bed import PRIMO, Testbed, needs_root, primo, primo_exec

pytestmark = [needs_root, pytest.mark.root, pytest.mark.slow]

AUTH = "urn:publicid:IDN+primo+node+"

# emulated a and b, simulated s1 and s2 sharing a 20 Mb/s bottleneck r1-r2 behind 5 routers in all
PY_MODEL = '''
from primogeni.sim import Network, Rate, UdpCbr, ms

def model():
    net = Network(prefix="10.50.0.0/16")
    a, b = net.host("a", emulated=True), net.host("b", emulated=True)
    s1, s2 = net.host("s1"), net.host("s2")
    r = [net.router(f"r{i}") for i in range(5)]
    net.link(a, r[0], bandwidth=Rate.gbps(1), delay=ms(1))
    net.link(s1, r[1], bandwidth=Rate.gbps(1), delay=ms(1))
    for x, y in zip(r, r[1:]):
        net.link(x, y, bandwidth=Rate.mbps(20) if x.name == "r2" else Rate.gbps(1), delay=ms(2))
    net.link(r[4], b, bandwidth=Rate.gbps(1), delay=ms(1))
    net.link(r[3], s2, bandwidth=Rate.gbps(1), delay=ms(1))
    net.add_flow(UdpCbr(src=s1, dst=s2, rate=Rate.mbps(10), size=1172, start=ms(0), name="background"))
    return net
'''

DML_MODEL = Path(model("pair.dml")).read_text()


def request(fmt: str, text: str) -> str:
    def node(name: str, pc: str, kind: str) -> str:
        return (f'<node client_id="{name}" component_id="{AUTH}{pc}" exclusive="false">'
                f'<sliver_type name="{kind}"/></node>')

    return ('<rspec xmlns="http://www.geni.net/resources/rspec/3" '
            'xmlns:primo="http://www.primogeni.net/resources/rspec/ext/primogeni/1" type="request">'
            + node("a", "pc1", "emulated-host") + node("b", "pc2", "emulated-host") + node("sim", "pc3", "simulator")
            + f'<primo:model format="{fmt}"><![CDATA[{text}]]>'
            '<primo:map virtual="top:a" node="a"/><primo:map virtual="top:b" node="b"/>'
            '<primo:map virtual="top" node="sim"/></primo:model></rspec>')


def predicted(fmt: str, text: str, tmp: Path) -> dict[str, Any]:
    """What the model predicts, from the same describe the aggregate runs."""
    path = tmp / f"model.{'py' if fmt == 'python' else 'dml'}"
    path.write_text(text)
    out = subprocess.run([sys.executable, "-m", "primogeni.sim.describe", str(path)], capture_output=True, text=True,
                         check=True)
    facts: dict[str, Any] = json.loads(out.stdout)
    return facts


def address(summary: dict[str, Any], name: str) -> str:
    node = next(n for n in summary["nodes"] if n["client_id"] == name)
    return str(next(a for i in node["interfaces"] for a in i["addresses"])).split("/")[0]


def rtts(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"time=([\d.]+) ms", text)]


def wait_for_ping(home: Path, slice_name: str, host: str, target: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if primo_exec(home, slice_name, host, "ping", "-n", "-c", "1", "-W", "1", target).returncode == 0:
            return
        time.sleep(0.5)
    raise AssertionError(f"{host} never reached {target} through the simulator")


@pytest.fixture(scope="module")
def deployed(testbed: Testbed, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    summary = testbed.create("imm1", request("python", PY_MODEL))
    facts = predicted("python", PY_MODEL, tmp_path_factory.mktemp("facts"))
    return {"summary": summary, "facts": facts}


def test_the_manifest_lists_the_emulated_hosts_with_the_models_addresses_and_logins(deployed: dict[str, Any]) -> None:
    summary, facts = deployed["summary"], deployed["facts"]
    given = {e["path"]: e["address"] for e in facts["emulated"]}
    nodes = {n["client_id"]: n for n in summary["nodes"]}
    for name in ("a", "b"):
        assert [a for i in nodes[name]["interfaces"] for a in i["addresses"]] == [given[f"top:{name}"]]
        assert nodes[name]["logins"] and nodes[name]["logins"][0]["port"] > 0
    assert nodes["sim"]["sliver_type"] == "simulator"
    assert all(not i["addresses"] for i in nodes["sim"]["interfaces"])
    assert {link["client_id"] for link in summary["links"]} == {"primo-a", "primo-b"}


def test_ping_between_emulated_hosts_shows_the_models_rtt(testbed: Testbed, deployed: dict[str, Any]) -> None:
    summary, facts = deployed["summary"], deployed["facts"]
    target = address(summary, "b")
    wait_for_ping(testbed.home, "imm1", "a", target)
    out = primo_exec(testbed.home, "imm1", "a", "ping", "-n", "-c", "10", "-i", "0.1", target)
    assert out.returncode == 0, out.stdout + out.stderr
    want = next(p for p in facts["paths"] if p["src"] == "top:a" and p["dst"] == "top:b")["ping_rtt_s"] * 1e3
    got = statistics.median(rtts(out.stdout))
    assert abs(got - want) < 1.0, f"median RTT {got:.2f} ms, the model says {want:.2f} ms\n{out.stdout}"


def test_iperf3_shares_the_simulated_bottleneck_with_simulated_traffic(testbed: Testbed,
                                                                         deployed: dict[str, Any]) -> None:
    target = address(deployed["summary"], "b")
    server = subprocess.Popen([*PRIMO, "exec", "imm1", "b", "--home", str(testbed.home), "--", "iperf3", "-s", "-1"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1.0)
        out = primo_exec(testbed.home, "imm1", "a", "iperf3", "-c", target, "-t", "4", "-O", "1", "-J", timeout=60)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr
        mbps = json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6
    finally:
        server.wait(timeout=30)
    # 20 Mb/s bottleneck, 10 Mb/s of unresponsive simulated UDP: the emulated TCP flow gets the rest
    assert 0.30 * 20 <= mbps <= 0.60 * 20, f"{mbps:.2f} Mb/s"


def test_another_slices_emulated_hosts_are_unreachable(testbed: Testbed, deployed: dict[str, Any]) -> None:
    other = testbed.create("imm2", request("dml", DML_MODEL))
    try:
        a2, b2 = address(other, "a"), address(other, "b")
        wait_for_ping(testbed.home, "imm2", "a", b2)
        for target in (address(deployed["summary"], "b"), address(deployed["summary"], "a")):
            lost = primo_exec(testbed.home, "imm2", "a", "ping", "-n", "-c", "2", "-W", "1", target)
            assert lost.returncode != 0, lost.stdout
        lost = primo_exec(testbed.home, "imm1", "a", "ping", "-n", "-c", "2", "-W", "1", b2)
        assert lost.returncode != 0, lost.stdout
        assert a2.startswith("10.60.")
    finally:
        testbed.delete("imm2")


def test_a_bad_model_is_refused_at_allocate_and_nothing_is_made(testbed: Testbed) -> None:
    broken = request("dml", DML_MODEL.replace("attach r(1)", "attach nowhere(1)"))
    primo(testbed.home, "slice", "create", "immbad", "--days", "1")
    path = testbed.home / "bad.xml"
    path.write_text(broken)
    out = primo(testbed.home, "allocate", "immbad", str(path), check=False)
    assert out.returncode != 0 and "nowhere" in out.stdout + out.stderr, out.stdout + out.stderr
    status = primo(testbed.home, "status", "immbad", "--json", check=False)
    assert "geni_sliver_urn" not in status.stdout


def test_stop_writes_results_and_primo_results_fetches_and_plots_them(testbed: Testbed, deployed: dict[str, Any],
                                                                      tmp_path: Path) -> None:
    primo(testbed.home, "stop", "imm1", timeout=120)
    out = primo(testbed.home, "results", "imm1", "--out", str(tmp_path), "--json", timeout=120)
    report = json.loads(out.stdout)
    assert [r["name"] for r in report] == ["sim"] and report[0]["state"] == "done", out.stdout
    where = tmp_path / "sim"
    summary = json.loads((where / "summary.json").read_text())
    assert summary["immersion"]["hosts"]["top:a"]["frames_in"] > 100
    assert summary["realtime"]["events"] > 0
    assert (where / "links.csv").stat().st_size > 0 and (where / "links.png").read_bytes()[:4] == b"\x89PNG"


def test_delete_leaves_nothing_behind(testbed: Testbed, deployed: dict[str, Any]) -> None:
    testbed.delete("imm1")
    left = [p for p in Path("/run/primo-sim").glob("*/*")] if Path("/run/primo-sim").exists() else []
    assert not left, left
    procs = subprocess.run(["pgrep", "-af", "primogeni.cli.main immerse"], capture_output=True, text=True).stdout
    assert str(testbed.home) not in procs and "immerse" not in procs, procs
