"""The node agent (``primo agent``): makes slivers real on one physical node.

It is told sliver, link and event specs by the aggregate manager over mutual TLS, keeps them as
its desired state on disk, and reconciles the kernel toward them (and back after a crash).
"""
