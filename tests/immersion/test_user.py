"""``primo immerse --user``: endpoints opened and the model read as root, then the run as an ordinary user.

Unit checks of the pieces (``parse_user``, ``load_model_text``, the refused combination) and one run
against the real kernel: two host namespaces on veths whose simulator ends are bound (``--bind``), the
simulator dropping to a uid of its own; ping has the model's RTT, the process runs as that uid without
capabilities, the bound ends lost IPv6, and the results are written as that uid.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.immersion.support import Immerse, median_rtt, model, ping

from primogeni.emu import links, netns
from primogeni.errors import ModelError
from primogeni.immersion.hostside import configure_host
from primogeni.immersion.run import HostSpec, Options, immerse, load_model_text, parse_user
from primogeni.sim import Simulation
from primogeni.sim.emulation import Emulation
from primogeni.sim.loader import load_model

Start = Callable[..., Immerse]
Namespaces = Callable[[str], str]


def test_parse_user() -> None:
    assert parse_user("20001") == (20001, 20001)
    assert parse_user("20001:20002") == (20001, 20002)
    for bad in ("0", "20001:0", "alice", "20001:", "-5", "20001:x"):
        with pytest.raises(ValueError):
            parse_user(bad)


def test_a_model_loads_from_its_text_as_from_its_file() -> None:
    for name, params in (("slice.dml", {}), ("chain.py", {"routers": "2", "delay_us": "100"})):
        text = Path(model(name)).read_text()
        from_text = Simulation(load_model_text(text, name, params))
        from_file = Simulation(load_model(model(name), params))
        from_text.check()
        from_file.check()
        assert sorted(from_text.nodes) == sorted(from_file.nodes)
        assert sorted(from_text.ports) == sorted(from_file.ports)
        hosts = [{p: (h.address, h.gateway) for p, h in Emulation(sim, lambda *_: None).hosts.items()}
                 for sim in (from_text, from_file)]
        assert hosts[0] == hosts[1] and len(hosts[0]) == 2
    with pytest.raises(ModelError, match="no parameter 'bogus'"):
        load_model_text(Path(model("chain.py")).read_text(), "chain.py", {"bogus": "1"})
    with pytest.raises(ModelError, match="take no parameters"):
        load_model_text("Net [ ]", "m.dml", {"x": "1"})
    with pytest.raises(ModelError, match=r"\.py or \.dml"):
        load_model_text("", "m.txt")
    with pytest.raises(ModelError, match="must define model"):
        load_model_text("x = 1\n", "m.py")


def test_user_and_host_cannot_be_combined() -> None:
    opts = Options(model("chain.py"), hosts=(HostSpec("top:a", "x"),), user=(20001, 20001))
    with pytest.raises(ValueError, match="--host cannot be combined with --user"):
        immerse(opts, say=lambda _: None)


@pytest.mark.root
def test_the_run_drops_to_the_user_after_opening_its_endpoints(namespaces: Namespaces, immerse: Start) -> None:
    sim_ns, a, b = namespaces("s"), namespaces("a"), namespaces("b")
    network = load_model(model("chain.py"), {"routers": "2", "delay_us": "1000"})
    hosts = Emulation(Simulation(network), lambda *_: None).hosts
    for path, ns, sim_end, host_end in (("top:a", a, "primosa", "primoha"), ("top:b", b, "primosb", "primohb")):
        with netns.iproute(sim_ns) as ipr:
            links.add_veth(ipr, sim_end, host_end, peer_netns=ns, mtu=1500)
            links.set_up(ipr, sim_end)
        with netns.iproute(ns) as ipr:
            links.set_up(ipr, host_end)
        configure_host(ns, host_end, hosts[path].address, hosts[path].gateway, network.prefix)
    uid = 61000 + secrets.randbelow(4000)  # a uid without a name: nobody else's
    top = Path(tempfile.mkdtemp(prefix="primo-imu-"))
    try:
        top.chmod(0o755)
        model_file = top / "chain.py"  # root's, 0600: only read before the drop
        # the model's own code must run as the user, never as root
        guard = f"import os\nif os.getresuid() != ({uid}, {uid}, {uid}):\n    raise SystemExit('model run as root')\n"
        model_file.write_text(guard + Path(model("chain.py")).read_text())
        model_file.chmod(0o600)
        out_dir = top / "out"
        out_dir.mkdir(mode=0o700)
        os.chown(out_dir, uid, uid)
        run = immerse(sim_ns, str(model_file), "-p", "routers=2", "-p", "delay_us=1000", "--bind",
                      "top:a=primosa", "--bind", "top:b=primosb", "--user", f"{uid}:{uid}", "--out",
                      str(out_dir / "results"), "--progress", "0")
        run.wait_running()
        status = Path(f"/proc/{run.proc.pid}/status").read_text()
        assert re.search(rf"^Uid:\s+{uid}\s+{uid}\s+{uid}\s+{uid}$", status, re.M), status
        assert re.search(rf"^Gid:\s+{uid}\s+{uid}\s+{uid}\s+{uid}$", status, re.M), status
        assert re.search(r"^Groups:\s*$", status, re.M) and re.search(r"^CapEff:\s+0+$", status, re.M)
        assert re.search(r"^CapPrm:\s+0+$", status, re.M) and re.search(r"^NoNewPrivs:\s+1$", status, re.M)
        for sim_end in ("primosa", "primosb"):
            assert netns.get_sysctl(sim_ns, f"net.ipv6.conf.{sim_end}.disable_ipv6") == "1"
        res = ping(a, str(hosts["top:b"].address.ip), count=15, interval=0.05)
        assert res.returncode == 0, res.stdout
        assert abs(median_rtt(res.stdout) - 6.0) < 1.0, res.stdout  # 3 links of 1 ms each way
        assert run.stop() == 0, run.log
        assert "dropped privileges: uid" in run.log
        summary = json.loads((out_dir / "results" / "summary.json").read_text())
        assert summary["immersion"]["user"] == {"uid": uid, "gid": uid}
        assert (out_dir / "results" / "summary.json").stat().st_uid == uid
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.root
def test_a_model_error_after_the_drop_closes_the_endpoints(namespaces: Namespaces, immerse: Start,
                                                           tmp_path: Path) -> None:
    sim_ns, a = namespaces("s"), namespaces("a")
    with netns.iproute(sim_ns) as ipr:
        links.add_veth(ipr, "primosa", "primoha", peer_netns=a, mtu=1500)
        links.set_up(ipr, "primosa")
    bad = tmp_path / "bad.dml"
    bad.write_text("Net [ host [ id 1 emulated true interface [ id 0 ] ] link [ attach 1(0) attach 9(0) ] ]\n")
    run = immerse(sim_ns, str(bad), "--bind", "top:1=primosa", "--user", "61000", "--progress", "0")
    assert run.wait(30) == 2, run.log
    assert "dropped privileges" in run.log and "error:" in run.log


@pytest.mark.root
def test_a_stop_asked_for_while_the_model_loads_ends_the_run_with_results(
        namespaces: Namespaces, immerse: Start, tmp_path: Path) -> None:
    """SIGTERM before the run starts (here while a slow Python model loads, after the drop) is not fatal:
    the run ends at once and writes its results."""
    sim_ns, a = namespaces("s"), namespaces("a")
    with netns.iproute(sim_ns) as ipr:
        links.add_veth(ipr, "primosa", "primoha", peer_netns=a, mtu=1500)
        links.set_up(ipr, "primosa")
    slow = tmp_path / "slow.py"
    slow.write_text("import time\nfrom primogeni.sim import Network\n\ndef model():\n    time.sleep(1.5)\n"
                    "    net = Network(prefix='10.9.0.0/16')\n    net.link(net.host('a', emulated=True), "
                    "net.router('r'))\n    return net\n")
    top = Path(tempfile.mkdtemp(prefix="primo-imu-"))  # not tmp_path: its parents are root's only
    try:
        top.chmod(0o755)
        os.chown(top, 61000, 61000)
        run = immerse(sim_ns, str(slow), "--bind", "top:a=primosa", "--user", "61000", "--out", str(top / "r"),
                      "--progress", "0")
        deadline = time.monotonic() + 20
        while not any(line.startswith("dropped privileges") for line in run.lines):
            assert run.proc.poll() is None and time.monotonic() < deadline, run.log
            time.sleep(0.02)
        run.proc.send_signal(signal.SIGTERM)
        assert run.wait(30) == 0, run.log
        assert "stopped at simulated 0.000 s" in run.log, run.log
        assert json.loads((top / "r" / "summary.json").read_text())["immersion"]["user"]["uid"] == 61000
    finally:
        shutil.rmtree(top, ignore_errors=True)
