"""Timing of packets over links and routers, ICMP, longest-prefix match."""

from ipaddress import IPv4Address, IPv4Network

from primogeni.sim import Network, Ping, Rate, Simulation, UdpCbr, chain, ms, s, us


def _tx(size: int, bps: int) -> int:
    return -((-size * 8_000_000_000) // bps)


def test_one_packet_over_one_link_arrives_at_size_over_bandwidth_plus_delay():
    net = Network()
    a, b = net.host("a"), net.host("b")
    net.link(a, b, bandwidth=Rate.mbps(100), delay=ms(3))
    # one 1000-byte payload (1028-byte IP packet): it is sent at t=0 and the flow stops at once
    net.add_flow(UdpCbr(src=a, dst=b, rate=Rate.mbps(1), size=1000, stop=1, name="one"))
    r = Simulation(net).run(s(1))
    f = r.flow("one")
    assert f["sent_packets"] == 1 and f["received_packets"] == 1
    expected = 1028 * 8 / 100e6 + 0.003  # 82.24 us + 3 ms
    assert f["one_way_delay_s"]["min"] == f["one_way_delay_s"]["max"]
    assert round(f["one_way_delay_s"]["min"] * 1e9) == round(expected * 1e9) == 3_082_240


def test_five_hops_add_up():
    rates = [Rate.mbps(100), Rate.mbps(10), Rate.gbps(1), Rate.mbps(50), Rate.mbps(200)]
    delays = [ms(1), ms(2), us(300), ms(4), us(50)]
    net = Network()
    nodes = [net.host("src")] + [net.router(f"r{i}") for i in range(4)] + [net.host("dst")]
    for i in range(5):
        net.link(nodes[i], nodes[i + 1], bandwidth=rates[i], delay=delays[i])
    net.add_flow(UdpCbr(src="src", dst="dst", rate=Rate.kbps(100), size=500, stop=1, name="one"))
    r = Simulation(net).run(s(1))
    expected = sum(_tx(528, rt.bps) + d for rt, d in zip(rates, delays, strict=True))
    assert round(r.flow("one")["one_way_delay_s"]["min"] * 1e9) == expected


def test_ping_across_five_hop_chain_reports_exactly_the_model_rtt():
    net = chain(4, bandwidth=Rate.mbps(100), delay=ms(2))  # h0 r0 r1 r2 r3 h1: 5 links
    net.add_flow(Ping(src="h0", dst="h1", interval=ms(100), count=10, name="ping"))
    sim = Simulation(net)
    model_rtt = 2 * sim.path_delay("top:h0", "top:h1", 84)  # 20 IP + 8 ICMP + 56 data
    assert model_rtt == 2 * 5 * (_tx(84, 100_000_000) + ms(2))
    r = sim.run(s(2))
    f = r.flow("ping")
    assert f["received_packets"] == 10
    assert round(f["rtt_s"]["min"] * 1e9) == model_rtt
    assert round(f["rtt_s"]["max"] * 1e9) == model_rtt


def test_ttl_limited_probe_gets_time_exceeded_from_the_right_router():
    net = chain(4, bandwidth=Rate.mbps(100), delay=ms(1))
    for ttl in (1, 2, 3):
        net.add_flow(Ping(src="h0", dst="h1", count=1, ttl=ttl, name=f"probe{ttl}"))
    sim = Simulation(net)
    r = sim.run(s(1))
    for ttl in (1, 2, 3):
        f = r.flow(f"probe{ttl}")
        assert f["received_packets"] == 0
        (err,) = f["icmp_errors"]
        assert err["type"] == 11 and err["code"] == 0
        router = net.lookup(f"r{ttl - 1}")
        assert IPv4Address(err["from"]) in router.addresses, (ttl, err)


def test_longest_prefix_match_prefers_the_more_specific_route():
    net = Network("top", "10.0.0.0/8")
    a, b, r = net.host("a"), net.host("b"), net.router("r")
    c = net.host("c")
    net.link(a, r, prefix="10.1.0.0/16")
    net.link(r, b, prefix="10.2.0.0/16")
    net.link(r, c, prefix="10.2.3.0/24")  # more specific, inside b's /16
    sim = Simulation(net)
    rt = sim.routing
    assert rt.match(int(IPv4Address("10.2.3.9"))).prefix == IPv4Network("10.2.3.0/24")
    assert rt.match(int(IPv4Address("10.2.4.9"))).prefix == IPv4Network("10.2.0.0/16")
    assert rt.match(int(IPv4Address("11.0.0.1"))) is None
    table = dict((str(p), (o, n)) for p, o, n in rt.table(sim.nodes["top:a"]))
    assert table["10.2.3.0/24"] == ("top:a:eth0", "top:r:eth0")


def test_routes_follow_shortest_paths_and_hosts_do_not_transit():
    net = Network()
    h1, h2 = net.host("h1"), net.host("h2")
    r1, r2, r3 = net.router("r1"), net.router("r2"), net.router("r3")
    net.link(h1, r1)
    net.link(r1, r2)
    net.link(r2, h2)
    net.link(r1, r3)
    net.link(r3, net.host("mh"))  # multi-homed host between r3 and r2 must not carry transit
    mh = net.lookup("mh")
    net.link(mh, r2)
    sim = Simulation(net)
    hops = sim.trace(sim.nodes["top:h1"], sim.nodes["top:h2"].address)
    assert [p.node.path for p, _ in hops] == ["top:h1", "top:r1", "top:r2"]


def test_unroutable_packets_are_answered_with_unreachable():
    net = Network()
    a, r = net.host("a"), net.router("r")
    net.link(a, r)
    sim = Simulation(net)
    assert sim.trace(sim.nodes["top:a"], int(IPv4Address("10.200.0.1"))) is None


def test_queue_limits_in_bytes_and_in_packets_drop_tail():
    from primogeni.sim import Bytes, Packets

    for queue in (Bytes(2500), Packets(2)):
        net = Network()
        a, b = net.host("a"), net.host("b")
        net.link(a, b, bandwidth=Rate.mbps(1), delay=ms(1), queue=queue)
        # 1000-byte IP packets every 80 us for 10 ms (125 packets) into a link serving one per 8 ms:
        # one in service + two waiting are accepted at once, and one more when the first leaves at 8 ms
        net.add_flow(UdpCbr(src=a, dst=b, rate=Rate.mbps(100), size=972, stop=ms(10), name="burst"))
        r = Simulation(net).run(s(1))
        f = r.flow("burst")
        assert (f["sent_packets"], f["received_packets"], f["dropped_packets"]) == (125, 4, 121), queue
        d = r.summary["links"][0]["directions"][0]
        assert d["queue_drops"] == 121


def test_random_loss_drops_the_given_fraction():
    net = Network()
    a, b = net.host("a"), net.host("b")
    net.link(a, b, bandwidth=Rate.mbps(100), delay=ms(1), loss=0.05)
    net.add_flow(UdpCbr(src=a, dst=b, rate=Rate.mbps(10), size=972, name="lossy"))
    f = Simulation(net, seed=4).run(s(20)).flow("lossy")
    assert abs(f["loss_ratio"] - 0.05) < 0.005
    assert f["received_packets"] + f["dropped_packets"] in (f["sent_packets"], f["sent_packets"] - 1)
