"""``primogeni.sim.describe``: what a model is (emulated hosts, address space, elements, predicted paths,
traffic), read from the simulator's own objects without running it, and its command line."""

from __future__ import annotations

import json
import subprocess
import sys
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from primogeni.errors import ModelError
from primogeni.net.units import tx_ns
from primogeni.sim import Network, Ping, Poisson, Rate, TcpBulk, UdpCbr, UdpOnOff, ms, us
from primogeni.sim.describe import PING_IP_BYTES, check_description, describe, elements, main, ping_rtt_ns
from primogeni.sim.emulation import Emulation
from primogeni.sim.loader import load_model
from primogeni.sim.simulation import Simulation

ROOT = Path(__file__).resolve().parents[2]
CHAIN = ROOT / "tests" / "immersion" / "models" / "chain.py"
SLICE_DML = ROOT / "tests" / "immersion" / "models" / "slice.dml"

# h1 – r1 – r2 – h2 with a slow middle link, and a sub-net holding a simulated host
DML = """
Net [
  prefix 10.3.0.0/16
  host [ id h1 emulated true interface [ id 0 ] ]
  router [ id r1 interface [ id 0 ] interface [ id 1 ] interface [ id 2 ] ]
  router [ id r2 interface [ id 0 ] interface [ id 1 ] ]
  host [ id h2 emulated true interface [ id 0 ] ]
  Net [ id lan host [ id s interface [ id 0 ] ] ]
  link [ attach h1(0) attach r1(0) delay 0.001 bitrate 1e8 ]
  link [ attach r1(1) attach r2(0) delay 0.004 bitrate 1e7 ]
  link [ attach r2(1) attach h2(0) delay 0.001 bitrate 1e8 ]
  link [ attach r1(2) attach lan:s(0) delay 0.001 bitrate 1e9 ]
]
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "primogeni.sim.describe", *args], input=stdin, capture_output=True,
                          text=True, timeout=60)


def test_emulated_hosts_are_what_the_emulation_uses() -> None:
    desc = describe(load_model(CHAIN))
    emu = Emulation(Simulation(load_model(CHAIN)), lambda *a: None)
    assert [e["path"] for e in desc["emulated"]] == list(emu.hosts) == ["top:a", "top:b"]
    for e in desc["emulated"]:
        h = emu.hosts[e["path"]]
        assert (e["address"], e["gateway"], e["interface"]) == (str(h.address), str(h.gateway), h.port.path)
    assert desc["version"] == 1 and desc["name"] == "top" and desc["prefix"] == "10.0.0.0/8"
    assert check_description(json.loads(json.dumps(desc))) == desc  # JSON-safe and valid


def test_chain_rtt_is_the_immersion_tests_figure() -> None:
    """5 routers, 6 links of 5 ms at 100 Mb/s: the 60.08 ms ping RTT that tests/immersion holds ping to."""
    sim = Simulation(load_model(CHAIN))
    desc = describe(load_model(CHAIN))
    there = desc["paths"][0]
    assert (there["src"], there["dst"], there["reachable"]) == ("top:a", "top:b", True)
    expected_ns = sim.path_delay("top:a", "top:b", 84) + sim.path_delay("top:b", "top:a", 84)
    assert expected_ns == ping_rtt_ns(sim, "top:a", "top:b") == 2 * 6 * (ms(5) + tx_ns(84, 100_000_000))
    assert there["ping_rtt_s"] == expected_ns / 1e9 == pytest.approx(0.06008, abs=1e-5)
    assert there["routers"] == [f"top:r{i}" for i in range(5)] and there["links"] == 6
    assert there["one_way_delay_s"] == pytest.approx(0.030)
    # traceroute: each router answers from its interface toward the sender (what tests/immersion expects)
    hops = sim.trace(sim.nodes["top:a"], sim.nodes["top:b"].address)
    assert hops is not None
    assert there["traceroute"] == [str(IPv4Address(rx.addr)) for _, rx in hops[:-1]]
    back = desc["paths"][1]
    assert (back["src"], back["dst"]) == ("top:b", "top:a") and back["routers"] == there["routers"][::-1]


def test_rtt_and_bottleneck_by_hand_with_interface_overrides() -> None:
    """h1 –(10 Mb/s, 1 ms)– r –(1 Mb/s, 2 ms)– h2; r's side adds 0.5 ms latency, h2's side sends at 2 Mb/s."""
    net = Network(prefix="10.9.0.0/16")
    h1, h2, r = net.host("h1", emulated=True), net.host("h2", emulated=True), net.router("r")
    net.link(h1, r, bandwidth=Rate.mbps(10), delay=ms(1))
    net.link(r.interface(latency=us(500)), h2.interface(bandwidth=Rate.mbps(2)), bandwidth=Rate.mbps(1), delay=ms(2))
    desc = describe(net)
    there, back = desc["paths"]
    assert PING_IP_BYTES == 84
    forward = (67_200 + 1_000_000) + (672_000 + 2_500_000)  # 84 B at 10 Mb/s + 1 ms; at 1 Mb/s + 2 + 0.5 ms
    reverse = (336_000 + 2_000_000) + (67_200 + 1_000_000)  # 84 B at 2 Mb/s + 2 ms; at 10 Mb/s + 1 ms
    assert there["ping_rtt_s"] == back["ping_rtt_s"] == (forward + reverse) / 1e9
    assert there["one_way_delay_s"] == pytest.approx(0.0035) and back["one_way_delay_s"] == pytest.approx(0.003)
    assert (there["bottleneck"], there["bottleneck_bps"]) == ("top:r:eth1", 1_000_000)
    assert (back["bottleneck"], back["bottleneck_bps"]) == ("top:h2:eth0", 2_000_000)
    assert there["routers"] == ["top:r"] and there["links"] == 2 and there["loss"] == 0.0


def test_dml_model_elements_prefix_and_bottleneck() -> None:
    from primogeni.sim.dml.parser import parse, resolve
    from primogeni.sim.dml.schema import network_from_dml

    desc = describe(network_from_dml(resolve(parse(DML, "inline.dml"))))
    assert desc["prefix"] == "10.3.0.0/16"
    assert desc["elements"] == {"top": "net", "top:h1": "host", "top:r1": "router", "top:r2": "router",
                                "top:h2": "host", "top:lan": "net", "top:lan:s": "host"}
    assert [e["path"] for e in desc["emulated"]] == ["top:h1", "top:h2"]
    there = desc["paths"][0]
    assert (there["bottleneck"], there["bottleneck_bps"]) == ("top:r1:1", 10_000_000)
    assert there["routers"] == ["top:r1", "top:r2"]
    for e in desc["emulated"]:
        assert e["address"].startswith("10.3.")


def test_elements_cover_nested_nets_in_linear_walk() -> None:
    net = Network()
    sub = net.net("left")
    sub.host("h1")
    sub.net("deep").router("r9")
    net.router("r1")
    assert elements(net) == {"top": "net", "top:left": "net", "top:left:h1": "host", "top:left:deep": "net",
                             "top:left:deep:r9": "router", "top:r1": "router"}


def test_unreachable_pair_is_said_so() -> None:
    net = Network()
    a, b = net.host("a", emulated=True), net.host("b", emulated=True)
    net.link(a, net.router("r1"))
    net.link(b, net.router("r2"))  # two islands
    desc = describe(net)
    assert desc["paths"] == [{"src": "top:a", "dst": "top:b", "reachable": False, "unreachable": "there"},
                             {"src": "top:b", "dst": "top:a", "reachable": False, "unreachable": "there"}]
    assert check_description(desc) is not desc


def test_traffic_kinds_names_and_rates() -> None:
    net = Network()
    s1, s2, r = net.host("s1"), net.host("s2"), net.router("r")
    net.link(s1, r)
    net.link(r, s2)
    net.add_flow(UdpCbr(src=s1, dst="s2", rate=Rate.mbps(10), name="cbr"))
    net.add_flow(TcpBulk(src="s1", dst=s2, start=ms(500)))
    net.add_flow(Poisson(src=s1, dst=s2, rate=100.0))
    net.add_flow(UdpOnOff(src=s1, dst="s2:eth0", rate=Rate.mbps(4)))
    net.add_flow(Ping(src=s1, dst=s2, stop=ms(900)))
    rows = describe(net)["traffic"]
    assert [(t["name"], t["kind"], t["src"], t["dst"]) for t in rows] == [
        ("cbr", "udp_cbr", "top:s1", "top:s2"), ("flow1", "tcp_bulk", "top:s1", "top:s2"),
        ("flow2", "poisson", "top:s1", "top:s2"), ("flow3", "udp_onoff", "top:s1", "top:s2"),
        ("flow4", "ping", "top:s1", "top:s2")]
    assert rows[0]["rate_bps"] == 10_000_000 and "rate_bps" not in rows[1] and rows[1]["start_s"] == 0.5
    assert rows[2]["rate_pps"] == 100.0 and rows[2]["rate_bps"] == 100.0 * 1000 * 8  # mean size 1000 B
    assert rows[3]["rate_bps"] == 4_000_000 and rows[3]["mean_rate_bps"] == 2_000_000  # on and off 0.5 s each
    assert rows[4]["stop_s"] == 0.9 and rows[0]["stop_s"] is None
    # the names are those of the results
    results = Simulation(net).run(ms(10))
    assert [f["name"] for f in results.summary["flows"]] == [t["name"] for t in rows]


def test_model_errors_are_raised() -> None:
    net = Network()
    h = net.host("h", emulated=True)
    net.host("x")
    with pytest.raises(ModelError, match="exactly one interface"):
        describe(net)
    net2 = Network()
    h = net2.host("h", emulated=True)
    h.interface()
    with pytest.raises(ModelError, match="exactly one interface"):
        h.interface()  # a second interface on an emulated host is refused when it is made


@pytest.mark.parametrize("change", [
    lambda d: d.update(version=2),
    lambda d: d["emulated"][0].update(address="192.168.0.1/30"),
    lambda d: d["emulated"][0].update(gateway="10.0.0.200"),
    lambda d: d["emulated"][0].update(path="top:r0"),
    lambda d: d["elements"].update({"top:x": "link"}),
    lambda d: d["paths"][0].update(ping_rtt_s="fast"),
    lambda d: d["paths"][0].update(routers=["top:a"]),
    lambda d: d.update(prefix="not a prefix"),
])
def test_check_description_refuses_what_describe_never_makes(change: Any) -> None:
    desc = describe(load_model(CHAIN))
    check_description(desc)
    change(desc)
    with pytest.raises((ValueError, TypeError, KeyError)):
        check_description(desc)


# -- the command line --------------------------------------------------------------------------------------
def test_cli_dml_file_prints_json(tmp_path: Path) -> None:
    res = _run_cli(str(_write(tmp_path, "m.dml", DML)))
    assert res.returncode == 0, res.stderr
    desc = json.loads(res.stdout)
    assert desc["version"] == 1 and desc["prefix"] == "10.3.0.0/16" and len(desc["paths"]) == 2


def test_cli_broken_model_exits_2_with_the_message(tmp_path: Path) -> None:
    path = _write(tmp_path, "bad.dml", "Net [\n  host [ id 1 emulated true ]\n  link [ attach 1(0) attach 9(0) ]\n]\n")
    res = _run_cli(str(path))
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.startswith("error: ") and "bad.dml:3" in res.stderr, res.stderr


def test_cli_python_model_with_params_and_stdin(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--param", "routers=2", str(CHAIN)]) == 0
    desc = json.loads(capsys.readouterr().out)
    assert desc["paths"][0]["routers"] == ["top:r0", "top:r1"]
    # stdin needs --format; the DML parser gets the text as <stdin>
    res = _run_cli("--format", "dml", "-", stdin=SLICE_DML.read_text())
    assert res.returncode == 0 and json.loads(res.stdout)["prefix"] == "10.2.0.0/16"
    res = _run_cli("-", stdin=SLICE_DML.read_text())
    assert res.returncode == 2 and "give --format" in res.stderr
    res = _run_cli("--format", "python", "-", stdin="from primogeni.sim import Network\nnetwork = Network()\n")
    assert res.returncode == 0 and json.loads(res.stdout)["elements"] == {"top": "net"}


def test_cli_python_model_failures_are_model_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = {
        "raise ValueError('no such topology')\n": "model.py line 1: ValueError: no such topology",
        "import sys\nsys.exit(3)\n": "exited while loading (exit code 3)",
        "x = 1\n": "must define model() returning a Network",
        "def model(n: int = 1):\n    pass\n": "must define model() returning a Network",
    }
    for text, message in cases.items():
        assert main([str(_write(tmp_path, "model.py", text))]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, err
    assert main(["--param", "nope=1", str(CHAIN)]) == 2
    assert "no parameter 'nope'" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.py")]) == 2
    assert main(["--param", "noequals", str(CHAIN)]) == 2


def test_cli_model_prints_do_not_spoil_the_json(tmp_path: Path) -> None:
    text = "print('hello from the model')\n" + CHAIN.read_text()
    res = _run_cli("--format", "python", str(_write(tmp_path, "chain.txt", text)))
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["name"] == "top" and "hello from the model" in res.stderr
