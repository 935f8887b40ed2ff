"""Model for the immersion tests and bench: emulated hosts a and b on either side of a chain of routers.

a – r0 – r1 – … – r(k-1) – b, every link ``mbps`` (or ``gbps``) with ``delay_us`` of propagation delay.
"""

from primogeni.sim import Network, Packets, Rate, us


def model(routers: int = 5, delay_us: int = 5000, mbps: int = 100, gbps: int = 0, prefix: str = "10.0.0.0/8",
          queue: int = 100) -> Network:
    net = Network(prefix=prefix)
    bandwidth = Rate.gbps(gbps) if gbps else Rate.mbps(mbps)
    prev = net.host("a", emulated=True)
    b = net.host("b", emulated=True)
    for i in range(routers):
        r = net.router(f"r{i}")
        net.link(prev, r, bandwidth=bandwidth, delay=us(delay_us), queue=Packets(queue))
        prev = r
    net.link(prev, b, bandwidth=bandwidth, delay=us(delay_us), queue=Packets(queue))
    return net
