"""The aggregate manager: meta resources, slivers and their life cycle, AM API v2/v3, ProtoGENI CM v2.

``core`` holds the state machine and accounting over the database (``models``); ``placement``
maps requests onto the ``inventory``; ``driver`` is the interface through which slivers become
real; ``api_v2``, ``api_v3`` and ``api_cm`` speak the wire protocols; ``service`` runs it all.
"""

from primogeni.am.core import AggregateManager, Sliver
from primogeni.am.driver import RecordingDriver, ResourceDriver, SliverPlan
from primogeni.am.inventory import Inventory, PhysicalLink, PhysicalNode, load_inventory
from primogeni.am.policy import AdmitAll, MaxNodesPerSlice, Policy

__all__ = [
    "AdmitAll", "AggregateManager", "Inventory", "MaxNodesPerSlice", "PhysicalLink", "PhysicalNode", "Policy",
    "RecordingDriver", "ResourceDriver", "Sliver", "SliverPlan", "load_inventory",
]
