"""TCP over simulated networks: utilisation, fairness, and the Mathis et al. law."""

import math

import pytest

from primogeni.sim import (
    Network,
    Packets,
    Rate,
    Simulation,
    TcpBulk,
    TcpConfig,
    dumbbell,
    ms,
    s,
)


def _bottleneck(n: int, queue: int, **tcp):
    # access 100 Mb/s, 1 ms; bottleneck 10 Mb/s, 8 ms => base RTT 20 ms
    net = dumbbell(n, access_bandwidth=Rate.mbps(100), access_delay=ms(1),
                   bottleneck_bandwidth=Rate.mbps(10), bottleneck_delay=ms(8),
                   bottleneck_queue=Packets(queue))
    cfg = TcpConfig(mss=1448, **tcp)
    for i in range(n):
        net.add_flow(TcpBulk(src=f"s{i}", dst=f"d{i}", start=ms(10) * i, tcp=cfg, name=f"f{i}"))
    return net


def test_one_flow_fills_a_10mbps_20ms_bottleneck_with_a_bdp_buffer():
    bdp_packets = math.ceil(10e6 * 0.020 / 8 / 1500)  # 17
    r = Simulation(_bottleneck(1, bdp_packets), seed=1).run(s(30))
    bott = next(lk for lk in r.summary["links"] if lk["name"] == "top:bottleneck")
    util = bott["directions"][0]["utilisation"]
    goodput = r.flow("f0")["goodput_bps"]
    assert util >= 0.90, util
    assert goodput >= 0.90 * 10e6 * 1448 / 1500, goodput


def test_ten_flows_share_the_bottleneck_fairly():
    r = Simulation(_bottleneck(10, 60), seed=3).run(s(60))
    g = [r.flow(f"f{i}")["goodput_bps"] for i in range(10)]
    jain = sum(g) ** 2 / (10 * sum(x * x for x in g))
    assert jain >= 0.9, (jain, g)
    assert sum(g) >= 0.9 * 10e6 * 1448 / 1500


@pytest.mark.slow
@pytest.mark.parametrize("p", [0.001, 0.005, 0.01, 0.02])
def test_throughput_under_random_loss_follows_mathis(p):
    mss = 1448
    net = Network()
    a, r, b = net.host("a"), net.router("r"), net.host("b")
    # 100 ms RTT, 100 Mb/s, loss only on the data direction (r -> b)
    net.link(a, r, bandwidth=Rate.mbps(100), delay=ms(25), queue=Packets(1000))
    ri = r.interface(loss=p)
    net.link(ri, b, bandwidth=Rate.mbps(100), delay=ms(25), queue=Packets(1000))
    cfg = TcpConfig(mss=mss, delayed_ack=False, sack=False)
    net.add_flow(TcpBulk(src=a, dst=b, tcp=cfg, name="f"))
    duration = s(400)
    res = Simulation(net, seed=11).run(duration)
    got = res.flow("f")["goodput_bps"]
    rtt = res.flow("f")["rtt_s"]["mean"]
    predicted = mss * 8 / rtt * 1.22 / math.sqrt(p)
    assert abs(got / predicted - 1) <= 0.25, (p, got, predicted, rtt)
