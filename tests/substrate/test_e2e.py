"""The substrate end to end, as the issue's checks list them, on three embedded physical nodes.

Every step goes through the real parts: the ``primo`` client, the clearinghouse and the aggregate
(AM API v3 over TLS), the AM's agent driver, the node agents in their namespaces, containers,
veths, bridges, VXLAN tunnels and nftables. Traffic stays inside the namespaces the testbed made.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tests.substrate.bed import HOST, Testbed, needs_root, primo, primo_exec

pytestmark = [needs_root, pytest.mark.root, pytest.mark.slow]

AUTH = "urn:publicid:IDN+primo+node+"


def node(client_id: str, component: str, ifaces: list[tuple[str, str | None]]) -> str:
    out = [f'<node client_id="{client_id}" component_id="{AUTH}{component}" exclusive="false">'
           '<sliver_type name="emulated-host"/>']
    for name, address in ifaces:
        ip = f'<ip address="{address}" netmask="255.255.255.0" type="ipv4"/>' if address else ""
        out.append(f'<interface client_id="{client_id}:{name}">{ip}</interface>')
    out.append("</node>")
    return "".join(out)


def link(client_id: str, refs: list[str], capacity_kbps: int | None = None) -> str:
    props = ""
    if capacity_kbps:
        a, b = refs[0], refs[1]
        props = (f'<property source_id="{a}" dest_id="{b}" capacity="{capacity_kbps}"/>'
                 f'<property source_id="{b}" dest_id="{a}" capacity="{capacity_kbps}"/>')
    return (f'<link client_id="{client_id}">' + "".join(f'<interface_ref client_id="{r}"/>' for r in refs)
            + props + "</link>")


def rspec(*parts: str) -> str:
    return '<rspec xmlns="http://www.geni.net/resources/rspec/3" type="request">' + "".join(parts) + "</rspec>"


def addresses(summary: dict[str, Any]) -> dict[str, str]:
    """client_id of each host → its first experimental address."""
    out = {}
    for n in summary["nodes"]:
        for iface in n["interfaces"]:
            if iface["addresses"]:
                out.setdefault(n["client_id"], iface["addresses"][0].split("/")[0])
    return out


def ping(home: Path, slice_name: str, host: str, target: str, count: int = 2, wait: float = 1) -> bool:
    out = primo_exec(home, slice_name, host, "ping", "-n", "-c", str(count), "-W", str(wait), "-i", "0.2", target)
    return out.returncode == 0


LAN3 = rspec(node("h1", "pc1", [("if0", None)]), node("h2", "pc2", [("if0", None)]),
             node("h3", "pc3", [("if0", None)]), link("lan", ["h1:if0", "h2:if0", "h3:if0"]))


@pytest.fixture(scope="module")
def lan(testbed: Testbed) -> dict[str, Any]:
    """Slice A: three hosts on three physical nodes on one LAN."""
    return testbed.create("lan3", LAN3)


def test_lan_of_three_slivers_on_three_nodes_pings(testbed: Testbed, lan: dict[str, Any]) -> None:
    addr = addresses(lan)
    assert sorted(addr) == ["h1", "h2", "h3"]
    assert {n["component_id"].rsplit("+", 1)[1] for n in lan["nodes"]} == {"pc1", "pc2", "pc3"}
    for src, dst in (("h1", "h2"), ("h1", "h3"), ("h2", "h3"), ("h3", "h1")):
        assert ping(testbed.home, "lan3", src, addr[dst]), f"{src} cannot ping {dst} ({addr[dst]})"
    # /etc/hosts names the slice's hosts; the hostname is the client_id.
    out = primo_exec(testbed.home, "lan3", "h1", "sh", "-c", "hostname; cat /etc/hosts")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "h1"
    assert re.search(rf"^{re.escape(addr['h3'])}\s+h3\b", out.stdout, re.M), out.stdout


def test_tcp_across_nodes_through_vxlan(testbed: Testbed) -> None:
    summary = testbed.create("tcp2", rspec(node("a", "pc1", [("if0", "192.168.7.1")]),
                                           node("b", "pc2", [("if0", "192.168.7.2")]),
                                           link("wire", ["a:if0", "b:if0"])))
    assert addresses(summary) == {"a": "192.168.7.1", "b": "192.168.7.2"}
    server = subprocess.Popen([sys.executable, "-m", "primogeni.cli.main", "exec", "tcp2", "b", "--home",
                               str(testbed.home), "--", "iperf3", "-s", "-1", "-B", "192.168.7.2"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1.0)
        out = primo_exec(testbed.home, "tcp2", "a", "iperf3", "-c", "192.168.7.2", "-t", "2", "-J", timeout=60)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        result = json.loads(out.stdout)
        bps = result["end"]["sum_received"]["bits_per_second"]
        assert bps > 50e6, f"TCP over VXLAN reached only {bps / 1e6:.1f} Mb/s"
    finally:
        try:
            server.wait(timeout=15)  # iperf3 -s -1 ends after one test
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    # the tunnel really is VXLAN with the link's tag, on the underlay
    tag = summary["links"][0]["vlantag"]
    dev = subprocess.run(["ip", "-n", "primo-pc1", "-d", "link", "show", f"primox{tag}"], capture_output=True,
                         text=True)
    assert dev.returncode == 0 and f"vxlan id {tag}" in dev.stdout, dev.stdout + dev.stderr
    testbed.delete("tcp2")


def test_second_slice_gets_other_subnets_and_tags_and_cannot_reach_the_first(testbed: Testbed,
                                                                              lan: dict[str, Any]) -> None:
    other = testbed.create("other", LAN3)
    a, b = addresses(lan), addresses(other)
    subnets_a = {x.rsplit(".", 1)[0] for x in a.values()}
    subnets_b = {x.rsplit(".", 1)[0] for x in b.values()}
    assert not subnets_a & subnets_b, (a, b)
    assert lan["links"][0]["vlantag"] != other["links"][0]["vlantag"]
    assert ping(testbed.home, "other", "h1", b["h2"])  # its own LAN works
    for target in a.values():
        assert not ping(testbed.home, "other", "h1", target, count=1), f"slice 'other' reached slice 'lan3' at {target}"
    # even with an address in A's subnet, B's host is on another L2 network (another VNI)
    intruder = a["h1"].rsplit(".", 1)[0] + ".250"
    primo_exec(testbed.home, "other", "h1", "ip", "addr", "add", f"{intruder}/24", "dev", "eth1")
    assert not ping(testbed.home, "other", "h1", a["h2"], count=1)
    testbed.delete("other")


def test_ssh_through_the_natted_port_reaches_the_right_sliver(testbed: Testbed, lan: dict[str, Any]) -> None:
    key = testbed.home / "id_ed25519"
    for n in lan["nodes"]:
        assert n["logins"], n
        login = n["logins"][0]
        out = subprocess.run(["ssh", "-p", str(login["port"]), "-i", str(key), "-o", "StrictHostKeyChecking=no",
                              "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                              f"{login['username']}@{login['hostname']}",
                              "hostname; id -un; echo list-links > /vsys/list-links.in; "
                              "head -n 1 /vsys/list-links.out"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[:2] == [n["client_id"], login["username"]]
        assert lines[2].startswith("OK"), lines  # a login may use vsys too


def _vsys(home: Path, slice_name: str, host: str, script: str, *args: str) -> str:
    line = " ".join((script, *args))
    out = primo_exec(home, slice_name, host, "sh", "-c",
                     f"echo '{line}' > /vsys/{script}.in && head -n 1 /vsys/{script}.out", timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_vsys_setup_link_for_own_slice_and_refused_for_another_key(testbed: Testbed, lan: dict[str, Any]) -> None:
    other = testbed.create("vsysb", rspec(node("x", "pc1", [("if0", None)]), node("y", "pc2", [("if0", None)]),
                                          link("xy", ["x:if0", "y:if0"])))
    own_key = lan["links"][0]["vlantag"]
    foreign_key = other["links"][0]["vlantag"]
    pc2 = _underlay(testbed, "pc2")
    refused = _vsys(testbed.home, "lan3", "h1", "setup-link", "tun1", pc2, foreign_key)
    assert refused.startswith("ERROR"), refused
    assert "tun1" not in primo_exec(testbed.home, "lan3", "h1", "ip", "-o", "link").stdout
    ok = _vsys(testbed.home, "lan3", "h1", "setup-link", "tun1", pc2, own_key)
    assert ok.startswith("OK"), ok
    assert "tun1" in primo_exec(testbed.home, "lan3", "h1", "ip", "-o", "link").stdout
    assert "tun1" in _vsys(testbed.home, "lan3", "h1", "list-links")
    assert _vsys(testbed.home, "lan3", "h1", "delete-link", "tun1").startswith("OK")
    assert "tun1" not in primo_exec(testbed.home, "lan3", "h1", "ip", "-o", "link").stdout
    testbed.delete("vsysb")


def _underlay(testbed: Testbed, name: str) -> str:
    import tomllib

    return str(tomllib.loads((testbed.home / "substrate" / name / "agent.toml").read_text())["underlay_ip"])


def _agent_pid(testbed: Testbed, name: str) -> int:
    return int((testbed.home / "substrate" / name / "agent.pid").read_text().split()[0])


def test_killed_agent_comes_back_and_reconciles(testbed: Testbed, lan: dict[str, Any]) -> None:
    addr = addresses(lan)
    pid = _agent_pid(testbed, "pc2")
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    # the slivers live on without their agent
    assert ping(testbed.home, "lan3", "h1", addr["h2"])
    # something leaks while the agent is down: a stray device in the node namespace
    subprocess.run(["ip", "-n", "primo-pc2", "link", "add", "primo999e0", "type", "bridge"], check=True)
    primo(testbed.home, "substrate", "up", "--nodes", "3", "--capacity", "8")  # restarts the dead agent
    assert _agent_pid(testbed, "pc2") != pid
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        links = subprocess.run(["ip", "-n", "primo-pc2", "-o", "link"], capture_output=True, text=True).stdout
        if "primo999e0" not in links:
            break
        time.sleep(0.3)
    assert "primo999e0" not in links, "the restarted agent did not remove the leaked device"
    assert ping(testbed.home, "lan3", "h1", addr["h2"]) and ping(testbed.home, "lan3", "h2", addr["h3"])
    status = primo(testbed.home, "status", "lan3", "--json")
    assert "geni_failed" not in status.stdout


def test_event_takes_a_link_down_and_up_at_the_asked_time(testbed: Testbed, lan: dict[str, Any]) -> None:
    addr = addresses(lan)
    assert ping(testbed.home, "lan3", "h1", addr["h2"])
    before = time.time()
    primo(testbed.home, "event", "lan3", "link", "lan", "down", "--at", "+6")
    asked = time.time() + 6  # the event's time is at most this (the client computed it a little earlier)
    assert ping(testbed.home, "lan3", "h1", addr["h2"], count=1)  # not yet
    assert time.time() < before + 6, "the 'not yet' ping came too late to mean anything"
    while time.time() < asked + 0.5:
        time.sleep(0.1)
    assert not ping(testbed.home, "lan3", "h1", addr["h2"], count=1)
    primo(testbed.home, "event", "lan3", "link", "lan", "up")
    deadline = time.monotonic() + 10
    while not ping(testbed.home, "lan3", "h1", addr["h2"], count=1) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ping(testbed.home, "lan3", "h1", addr["h2"])


def test_delete_removes_the_slivers_from_the_nodes(testbed: Testbed) -> None:
    testbed.create("gone", rspec(node("g1", "pc1", [("if0", None)]), node("g2", "pc1", [("if0", None)]),
                                 link("gl", ["g1:if0", "g2:if0"])))
    before = _netns()
    assert sum(n.startswith("primo-pc1-") for n in before) >= 2
    testbed.delete("gone")
    after = _netns()
    assert len(before) - len(after) == 2, (before, after)


def _netns() -> set[str]:
    return {p.name for p in Path("/run/netns").iterdir() if p.name.startswith("primo")}


def test_status_shows_monitoring(testbed: Testbed, lan: dict[str, Any]) -> None:
    out = primo(testbed.home, "status", "lan3", "--json")
    data = json.loads(out.stdout)
    text = json.dumps(data)
    assert "primo_monitor" in text and "memory_bytes" in text, text[:2000]
    assert HOST  # the AM answered on the underlay address


def test_link_capacity_is_enforced_across_nodes(testbed: Testbed) -> None:
    testbed.create("shaped", rspec(node("a", "pc1", [("if0", "192.168.9.1")]),
                                   node("b", "pc2", [("if0", "192.168.9.2")]),
                                   link("slow", ["a:if0", "b:if0"], capacity_kbps=20000)))
    server = subprocess.Popen([sys.executable, "-m", "primogeni.cli.main", "exec", "shaped", "b", "--home",
                               str(testbed.home), "--", "iperf3", "-s", "-1", "-B", "192.168.9.2"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1.0)
        out = primo_exec(testbed.home, "shaped", "a", "iperf3", "-c", "192.168.9.2", "-t", "3", "-J", timeout=60)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        bps = json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"]
        assert 14e6 < bps < 22e6, f"a 20 Mb/s link carried {bps / 1e6:.1f} Mb/s"
    finally:
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    testbed.delete("shaped")
