"""The aggregate manager: meta resources, slivers and their life cycle, AM API v2/v3, ProtoGENI CM v2.

``core`` holds the state machine and accounting over the database (``models``); ``placement``
maps requests onto the ``inventory`` and ``allocate`` records what it decided; ``driver`` is the
interface through which slivers become real (``agent_driver`` drives the substrate's node agents,
which announce themselves to the ``registry``); ``events`` stores and delivers Emulab-style
events; ``api_v2``, ``api_v3`` and ``api_cm`` speak the wire protocols; ``service`` runs it all.
"""

from primogeni.am.agent_driver import AgentDriver
from primogeni.am.core import AggregateManager, Sliver
from primogeni.am.driver import RecordingDriver, ResourceDriver, SliverPlan
from primogeni.am.events import EVENT_ACTIONS, EventQueue
from primogeni.am.inventory import Inventory, PhysicalLink, PhysicalNode, load_inventory
from primogeni.am.policy import AdmitAll, MaxNodesPerSlice, Policy
from primogeni.am.registry import Agents, RegistryApi

__all__ = [
    "EVENT_ACTIONS", "AdmitAll", "AgentDriver", "Agents", "AggregateManager", "EventQueue", "Inventory",
    "MaxNodesPerSlice", "PhysicalLink", "PhysicalNode", "Policy", "RecordingDriver", "RegistryApi", "ResourceDriver",
    "Sliver", "SliverPlan", "load_inventory",
]
