"""A dumbbell: N TCP senders share a 100 Mb/s, 10 ms bottleneck with N receivers.

    primo sim examples/dumbbell.py --duration 10s --seed 7 -p n=4
"""

from primogeni.sim import Ping, Rate, TcpBulk, TcpConfig, UdpOnOff, dumbbell, ms, s


def model(n: int = 4) -> "Network":  # noqa: F821 - the name is only documentation here
    net = dumbbell(n, bottleneck_bandwidth=Rate.mbps(100), bottleneck_delay=ms(10))
    tcp = TcpConfig(mss=1448)
    for i in range(n):
        net.add_flow(TcpBulk(src=f"s{i}", dst=f"d{i}", start=ms(100) * i // n, tcp=tcp, name=f"tcp{i}"))
    # Bursty background UDP from the first sender and a ping that sees the queue build up.
    net.add_flow(UdpOnOff(src="s0", dst="d0", rate=Rate.mbps(10), start=s(1), name="onoff"))
    net.add_flow(Ping(src="s0", dst="d0", interval=ms(100), name="ping"))
    return net
