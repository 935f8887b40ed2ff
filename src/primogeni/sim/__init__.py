"""The packet-level network simulator.

Describe a network (:class:`Network`, or a DML file through :func:`load_model`), attach
traffic, then run it::

    from primogeni.sim import Network, Simulation, TcpBulk, Rate, ms, s

    net = Network()
    h1, h2, r = net.host("h1"), net.host("h2"), net.router("r")
    net.link(h1, r, bandwidth=Rate.mbps(100), delay=ms(5))
    net.link(r, h2, bandwidth=Rate.mbps(10), delay=ms(5))
    net.add_flow(TcpBulk(src=h1, dst=h2))
    results = Simulation(net, seed=7).run(s(10))
    print(results.flow("flow0")["goodput_bps"])

Modules: ``engine`` (the event loop), ``model`` (descriptions), ``addressing``, ``routing``,
``node`` (runtime forwarding, the hot path), ``proto.tcp`` (sans-I/O TCP), ``traffic``
(flow descriptions), ``apps`` (flow runtimes), ``measure``, ``simulation``, ``topology``
(helpers), ``dml`` (the DML language), ``loader`` (models from files).
"""

from primogeni.net.units import Bytes, Packets, Rate, ms, ns, s, us
from primogeni.sim.dist import Constant, Exponential, Pareto, Uniform
from primogeni.sim.emulation import Emulation
from primogeni.sim.engine import Engine
from primogeni.sim.model import Host, Interface, Link, Net, Network, Router
from primogeni.sim.proto.tcp import TcpConfig
from primogeni.sim.simulation import Results, Simulation
from primogeni.sim.topology import campus, chain, dumbbell, ring, star
from primogeni.sim.traffic import (
    Flow,
    Ping,
    Poisson,
    TcpBulk,
    TcpRequestResponse,
    UdpCbr,
    UdpOnOff,
)

__all__ = [
    "Bytes",
    "Constant",
    "Emulation",
    "Engine",
    "Exponential",
    "Flow",
    "Host",
    "Interface",
    "Link",
    "Net",
    "Network",
    "Packets",
    "Pareto",
    "Ping",
    "Poisson",
    "Rate",
    "Results",
    "Router",
    "Simulation",
    "TcpBulk",
    "TcpConfig",
    "TcpRequestResponse",
    "UdpCbr",
    "UdpOnOff",
    "Uniform",
    "campus",
    "chain",
    "dumbbell",
    "ms",
    "ns",
    "ring",
    "s",
    "star",
    "us",
]
