"""The agent registry: who may register which node, what is stored, and when an agent counts as alive."""

from __future__ import annotations

from datetime import timedelta

from primogeni.am.models import AgentRow
from primogeni.am.registry import Agents
from primogeni.geni.codes import GeniCode

from .conftest import NOW
from .fake_agent import AgentBed, agent_bed, code, node_identity

__all__ = ["agent_bed"]


def test_a_node_certificate_registers_its_node(agent_bed: AgentBed) -> None:
    agents = agent_bed.service.agents
    assert agents is not None
    pc1 = agents.get("pc1")
    assert pc1 is not None
    assert pc1.url == agent_bed.agents["pc1"].url and pc1.underlay == "10.254.0.11"
    assert pc1.urn == "urn:publicid:IDN+primo+node+pc1" and pc1.kind == "cluster" and pc1.capacity == 8
    assert pc1.facts["cpus"] == 2 and pc1.facts["mem_total"] == 4 << 30 and pc1.features == {"vxlan": True,
                                                                                                "gretap": False}
    assert agents.alive("pc1") and not agents.alive("shared2") and agents.url_of("shared2") is None
    assert agents.alive_nodes() == {"pc1", "pc2", "shared1"}
    first = pc1.registered
    # a heartbeat refreshes the row (a new URL too) and keeps the first registration time
    answer = agent_bed.agents["pc1"].register(agent_bed.service.urls["registry"], url="https://127.0.0.1:1/primo/agent/1")
    assert code(answer) == 0 and answer["value"]["node"] == "pc1" and answer["value"]["interval"] == 30.0
    again = agents.get("pc1")
    assert again is not None and again.url == "https://127.0.0.1:1/primo/agent/1" and again.registered == first
    with agent_bed.service.sessions() as s:
        assert s.query(AgentRow).count() == 3


def test_who_may_register_what(agent_bed: AgentBed) -> None:
    registry = agent_bed.service.urls["registry"]
    pc1 = agent_bed.agents["pc1"]
    # a user's certificate
    answer = pc1.register(registry, cert=agent_bed.fed.files("alice"))
    assert code(answer) == GeniCode.FORBIDDEN and "user" in answer["output"]
    # another node's certificate naming pc1
    answer = pc1.register(registry, cert=node_identity(agent_bed.fed, "pc2"))
    assert code(answer) == GeniCode.FORBIDDEN and "pc1" in answer["output"] and "node+pc2" in answer["output"]
    # a node that is not in the inventory
    answer = pc1.register(registry, cert=node_identity(agent_bed.fed, "pc9"), node="pc9")
    assert code(answer) == GeniCode.FORBIDDEN and "inventory" in answer["output"]
    # a node of another authority under our root
    answer = pc1.register(registry, cert=node_identity(agent_bed.fed, "pc1", "elsewhere"))
    assert code(answer) == GeniCode.FORBIDDEN and "authority" in answer["output"]
    # malformed information
    for changes, word in (({"underlay": "nowhere"}, "underlay"), ({"url": "http://x/"}, "url"),
                          ({"kind": "mainframe"}, "kind"), ({"capacity": -1}, "capacity"),
                          ({"facts": "many"}, "facts")):
        answer = pc1.register(registry, **changes)
        assert code(answer) == GeniCode.BADARGS and word in answer["output"], changes
    assert agent_bed.service.agents is not None
    assert agent_bed.service.agents.url_of("pc1") == pc1.url  # nothing refused changed the row


def test_an_agent_is_alive_for_three_intervals(agent_bed: AgentBed) -> None:
    now = [NOW + timedelta(days=1)]
    agents = Agents(agent_bed.service.sessions, interval=30, clock=lambda: now[0])
    info = agent_bed.service.agents.get("pc1") if agent_bed.service.agents else None
    assert info is not None
    agents.register(info)
    now[0] += timedelta(seconds=89)
    assert agents.alive("pc1")
    now[0] += timedelta(seconds=2)
    assert not agents.alive("pc1") and "pc1" not in agents.alive_nodes()
    assert [a.name for a in agents.all()] == ["pc1", "pc2", "shared1"]
