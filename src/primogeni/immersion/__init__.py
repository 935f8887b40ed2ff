"""Real-time network immersion: real hosts' frames through the simulated network.

:class:`Immersion` (``bridge``) attaches a simulation's emulated hosts to packet endpoints
(TAP or ``AF_PACKET``, :mod:`primogeni.emu.packetio`) and serves them from the simulator's
real-time loop; ``hostside`` makes the hosts' TAPs and addressing; ``run`` is ``primo immerse``.
This package sits above ``sim`` and ``emu`` (it imports both); nothing below imports it.
"""

from primogeni.immersion.bridge import DEFAULT_BATCH, Immersion, emulated_hosts, host_path
from primogeni.immersion.hostside import adopt_tap, configure_host, make_tap
from primogeni.immersion.run import Options, immerse

__all__ = ["DEFAULT_BATCH", "Immersion", "Options", "adopt_tap", "configure_host", "emulated_hosts", "host_path",
           "immerse", "make_tap"]
