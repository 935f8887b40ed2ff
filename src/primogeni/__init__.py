"""PrimoGENI: a GENI aggregate for network experiments that mix real software with simulated networks.

The package is layered (see docs/ARCHITECTURE.md): ``net`` holds values and wire formats,
``sim`` the packet-level simulator, ``cli`` the ``primo`` command.
"""

__version__ = "0.1.0"
