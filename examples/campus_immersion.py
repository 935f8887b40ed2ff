"""A campus for immersion: two emulated hosts on either side of 28 simulated routers with background traffic.

Four buildings hang off a ring of four core routers. Each building is a chain of three routers
(b<i>r0 at the core, b<i>r2 at the edge) with three department routers (b<i>d0..2) off its middle
router, each serving a simulated host (the second at 10 Mb/s, the others at 100 Mb/s). The
emulated host ``h1`` sits at the edge of building 0,
``h2`` at the edge of building 2. Building 2's uplink (core2–b2r0) is the bottleneck: 20 Mb/s,
5 ms. A simulated UDP flow of ``bg_mbps`` from building 1 to building 2 crosses it; simulated TCP
and pings run between buildings 1 and 3, and building 3 and 0, and do not.

    primo sim examples/campus_immersion.py --duration 5s      (the simulated traffic alone)
"""

from itertools import pairwise

from primogeni.sim import Network, Ping, Rate, TcpBulk, UdpCbr, ms


def model(bg_mbps: int = 10) -> Network:
    net = Network(prefix="10.20.0.0/16")
    core = [net.router(f"core{i}") for i in range(4)]
    for i in range(4):  # the ring
        net.link(core[i], core[(i + 1) % 4], bandwidth=Rate.mbps(1000), delay=ms(2), name=f"ring{i}")
    hosts = {}
    for b in range(4):
        chain = [net.router(f"b{b}r{k}") for k in range(3)]
        uplink = Rate.mbps(20) if b == 2 else Rate.mbps(1000)
        net.link(core[b], chain[0], bandwidth=uplink, delay=ms(5 if b == 2 else 1), name=f"uplink{b}")
        for x, y in pairwise(chain):
            net.link(x, y, bandwidth=Rate.mbps(1000), delay=ms(1))
        for d in range(3):
            dept = net.router(f"b{b}d{d}")
            net.link(chain[1], dept, bandwidth=Rate.mbps(100), delay=ms(1))
            host = hosts[(b, d)] = net.host(f"b{b}s{d}")
            net.link(dept, host, bandwidth=Rate.mbps(10 if d == 1 else 100), delay=ms(1))
        if b in (0, 2):
            h = net.host(f"h{b // 2 + 1}", emulated=True)
            net.link(chain[2], h, bandwidth=Rate.mbps(1000), delay=ms(1))
    if bg_mbps:
        net.add_flow(UdpCbr(src=hosts[(1, 0)], dst=hosts[(2, 0)], rate=Rate.mbps(bg_mbps), size=1172,
                            name="background"))
    net.add_flow(TcpBulk(src=hosts[(1, 1)], dst=hosts[(3, 1)], start=ms(100), name="tcp13"))
    net.add_flow(Ping(src=hosts[(3, 2)], dst=hosts[(0, 2)], interval=ms(200), name="ping30"))
    return net
