"""Model for the immersion tests: emulated a and b, simulated s1 and s2, sharing a 20 Mb/s bottleneck r0–r1.

    a ─┐              ┌─ b
       r0 ══ 20 Mb/s ══ r1          access links 1 Gb/s, 1 ms; bottleneck 5 ms, 100-packet queue
    s1 ┘              └─ s2

``bg_mbps`` > 0 adds a simulated UDP constant-bit-rate flow s1 → s2 of that many Mb/s (IP bytes).
"""

from primogeni.sim import Network, Rate, UdpCbr, ms


def model(bg_mbps: int = 0) -> Network:
    net = Network()
    a, b = net.host("a", emulated=True), net.host("b", emulated=True)
    s1, s2 = net.host("s1"), net.host("s2")
    r0, r1 = net.router("r0"), net.router("r1")
    for left, right in ((a, r0), (s1, r0), (r1, b), (r1, s2)):
        net.link(left, right, bandwidth=Rate.gbps(1), delay=ms(1))
    net.link(r0, r1, bandwidth=Rate.mbps(20), delay=ms(5), name="bottleneck")
    if bg_mbps:
        net.add_flow(UdpCbr(src=s1, dst=s2, rate=Rate.mbps(bg_mbps), size=1172, name="background"))
    return net
