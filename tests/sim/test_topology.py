from primogeni.sim import Simulation, campus, chain, dumbbell, ring, star


def test_shapes_have_the_expected_parts_and_are_connected():
    d = dumbbell(3)
    assert sorted(n.name for n in d.nodes()) == ["d0", "d1", "d2", "r0", "r1", "s0", "s1", "s2"]
    c = chain(5)
    assert len(list(c.all_links())) == 6
    rg = ring(6)
    assert len(list(rg.all_links())) == 12
    st = star(4)
    assert len(st.lookup("hub").interfaces) == 4
    for net, a, b in ((d, "s0", "d2"), (c, "h0", "h1"), (rg, "h0", "h3"), (st, "h0", "h3")):
        sim = Simulation(net)
        assert sim.trace(sim.nodes[f"top:{a}"], sim.nodes[f"top:{b}"].address) is not None


def test_campus_lan_and_departments():
    net = campus(departments=3, hosts_per_lan=5)
    sim = Simulation(net)
    lan = net.lookup("dept1").links[0]
    assert len(lan.interfaces) == 6
    hops = sim.trace(sim.nodes["campus:dept0:h1"], sim.nodes["campus:dept1:h4"].address)
    assert [p.node.name for p, _ in hops] == ["h1", "r", "core0", "core1", "r"]
