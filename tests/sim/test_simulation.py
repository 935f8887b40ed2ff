"""Whole runs: determinism, independence, results files, captures, queueing theory."""

import filecmp
import shutil
import subprocess

import pytest

from primogeni.sim import (
    Exponential,
    Network,
    Packets,
    Poisson,
    Rate,
    Simulation,
    TcpBulk,
    TcpConfig,
    UdpOnOff,
    dumbbell,
    ms,
    s,
)


def _model():
    net = dumbbell(3, bottleneck_bandwidth=Rate.mbps(20), bottleneck_delay=ms(5))
    for i in range(3):
        net.add_flow(TcpBulk(src=f"s{i}", dst=f"d{i}", start=ms(50) * i, name=f"t{i}", tcp=TcpConfig(mss=1448)))
    net.add_flow(UdpOnOff(src="s0", dst="d1", rate=Rate.mbps(5), name="bursty"))
    return net


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path):
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        Simulation(_model(), seed=seed, capture=["top:r0:eth0"]).run(s(3)).write(tmp_path / name)
    files = ["summary.json", "flows.csv", "links.csv", "top_r0_eth0.pcap"]
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / "b", files, shallow=False)
    assert match == files, (mismatch, errors)
    assert not filecmp.cmp(tmp_path / "a" / "summary.json", tmp_path / "c" / "summary.json", shallow=False)


def test_two_simulations_in_one_process_do_not_interfere():
    alone = Simulation(_model(), seed=5).run(s(2)).summary
    a = Simulation(_model(), seed=5)
    b = Simulation(_model(), seed=9)
    a.start(s(2))
    b.start(s(2))
    for t in range(1, 21):  # interleave the two engines
        a.advance(ms(100) * t)
        b.advance(ms(100) * t)
    res_a = a.finish()
    b.finish()
    assert res_a.summary["flows"] == alone["flows"]


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_poisson_queue_matches_mm1(rho):
    bw = 10_000_000
    mean_size = 1000  # bytes
    mu = bw / (mean_size * 8)
    lam = rho * mu
    net = Network()
    a, b = net.host("a"), net.host("b")
    net.link(a, b, bandwidth=Rate(bw), delay=ms(1), queue=Packets(10**9))
    net.add_flow(Poisson(src=a, dst=b, rate=lam, size=Exponential(mean_size), name="p"))
    r = Simulation(net, seed=21).run(s(2000 if rho > 0.6 else 600))
    d = next(x for x in r.summary["links"][0]["directions"] if x["interface"] == "top:a:eth0")
    wq = rho / (mu - lam)
    assert abs(d["mean_queueing_delay_s"] / wq - 1) <= 0.05, (d["mean_queueing_delay_s"], wq)
    assert abs(d["utilisation"] / rho - 1) <= 0.02


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed (make test installs it)")
def test_capture_is_read_by_tshark_as_real_packets(tmp_path):
    net = _model()
    from primogeni.sim import Ping

    net.add_flow(Ping(src="s0", dst="d0", interval=ms(200), name="ping"))
    r = Simulation(net, seed=1, capture=["top:s0:eth0"]).run(s(1))
    r.write(tmp_path)
    pcap = tmp_path / "top_s0_eth0.pcap"
    out = subprocess.run(
        ["tshark", "-r", str(pcap), "-T", "fields", "-e", "ip.proto", "-e", "tcp.flags.syn",
         "-e", "icmp.type", "-e", "ip.checksum.status", "-o", "ip.check_checksum:TRUE"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    protos = {line.split("\t")[0] for line in out}
    assert {"6", "17", "1"} <= protos
    assert any(line.split("\t")[1] == "1" for line in out if line.startswith("6"))  # a SYN
    assert any(line.split("\t")[2] == "8" for line in out if line.startswith("1"))  # echo request
    # ip.checksum.status: 1 = good (0 would be bad)
    assert all(line.split("\t")[3] == "1" for line in out), out[:5]
    assert len(out) == len(r.taps["top:s0:eth0"].records)
