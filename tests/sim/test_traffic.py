"""Traffic generators produce what they promise."""

import random

import pytest

from primogeni.sim import (
    Constant,
    Exponential,
    Network,
    Pareto,
    Rate,
    Simulation,
    TcpBulk,
    TcpRequestResponse,
    UdpCbr,
    UdpOnOff,
    ms,
    s,
)
from primogeni.sim.traffic import Ping


def _pair(bw: Rate | None = None):
    bw = bw or Rate.mbps(100)
    net = Network()
    a, r, b = net.host("a"), net.router("r"), net.host("b")
    net.link(a, r, bandwidth=bw, delay=ms(5))
    net.link(r, b, bandwidth=bw, delay=ms(5))
    return net


def test_cbr_sends_at_its_rate():
    net = _pair()
    net.add_flow(UdpCbr(src="a", dst="b", rate=Rate.mbps(2), size=972, name="cbr"))  # 1000-byte IP packets
    f = Simulation(net).run(s(10)).flow("cbr")
    assert f["sent_packets"] == 2500  # 2 Mb/s / 8000 bits, one every 4 ms, for 10 s
    assert f["received_packets"] == 2498  # the last two (sent at 9.992 s, 9.996 s) need 10.16 ms
    assert f["loss_ratio"] == 0


def test_onoff_average_rate_is_rate_times_duty_cycle():
    net = _pair()
    net.add_flow(UdpOnOff(src="a", dst="b", rate=Rate.mbps(8), size=972, on=Exponential(ms(200)),
                          off=Exponential(ms(600)), name="oo"))
    f = Simulation(net, seed=3).run(s(200)).flow("oo")
    mean_rate = f["sent_packets"] * 1000 * 8 / 200
    assert mean_rate == pytest.approx(8e6 * 0.25, rel=0.1)


def test_pareto_has_its_mean():
    rng = random.Random(1)
    d = Pareto(1000.0, 2.5)
    xs = [d.sample(rng) for _ in range(200_000)]
    assert sum(xs) / len(xs) == pytest.approx(1000, rel=0.03)
    assert min(xs) >= d.scale


def test_request_response_completes_requests_with_sane_times():
    net = _pair(Rate.mbps(10))
    net.add_flow(TcpRequestResponse(src="a", dst="b", response_size=Constant(50_000), think=Constant(ms(100)),
                                    requests=5, name="web"))
    f = Simulation(net).run(s(10)).flow("web")
    assert f["responses"] == 5 and f["requests"] == 5
    assert f["response_time_s"]["count"] == 5
    # at least handshake-free request RTT (20 ms) plus 50 kB at 10 Mb/s (40 ms)
    assert f["response_time_s"]["min"] > 0.06


def test_sized_tcp_transfer_completes_and_reports_completion():
    net = _pair()
    net.add_flow(TcpBulk(src="a", dst="b", size=1_000_000, name="file"))
    f = Simulation(net).run(s(5)).flow("file")
    assert f["delivered_bytes"] == 1_000_000
    assert f["completed_s"] is not None and f["completed_s"] < 1


def test_flow_stop_time_is_respected():
    net = _pair()
    net.add_flow(UdpCbr(src="a", dst="b", rate=Rate.mbps(1), size=972, stop=s(1), name="short"))
    net.add_flow(Ping(src="a", dst="b", interval=ms(100), start=s(2), stop=s(3), name="p"))
    r = Simulation(net).run(s(5))
    assert r.flow("short")["sent_packets"] == 125
    assert r.flow("p")["sent_packets"] == 10


def test_bad_flow_parameters_fail_before_running():
    from primogeni.errors import ModelError

    net = _pair()
    net.add_flow(UdpCbr(src="a", dst="b", rate=Rate.mbps(1), size=0, name="bad"))
    with pytest.raises(ModelError, match="bad: size"):
        Simulation(net).check()
    net = _pair()
    net.add_flow(UdpCbr(src="a", dst="nowhere", rate=Rate.mbps(1), name="lost"))
    with pytest.raises(ModelError, match="nowhere"):
        Simulation(net).check()
