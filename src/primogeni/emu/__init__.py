"""Kernel plumbing: network namespaces, veths, bridges, tunnels, traffic control, nftables, containers.

The low level maps one to one onto the kernel (pyroute2's ``IPRoute`` for netlink, libnftables for
nftables, raw system calls for namespaces); the substrate's node agent builds slivers from it.
Everything this package creates is named with a ``primo`` prefix so ``primo clean`` can find it.
"""
