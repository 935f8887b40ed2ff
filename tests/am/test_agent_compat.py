"""The AM with the real node agent service (``primogeni.agent.service``), its kernel side replaced by a recorder.

Two :class:`AgentService` processes-in-threads register themselves over TLS, and the AM drives them
through AM API v3: provisioning, start, monitoring, an event, delete. What reaches the kernel side
is recorded, so this checks that the AM and the agents speak the same protocol without root.
"""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from primogeni.agent.config import AgentConfig
from primogeni.agent.names import vsys_root
from primogeni.agent.service import AgentService
from primogeni.agent.spec import LinkSpec, SliverSpec
from primogeni.am.service import AmService

from .conftest import NOW, Federation
from .fake_agent import AgentBed, code, node_identity, rspec, slice_urn


class Recorder:
    """The agent's kernel side, recorded: status follows what was ensured, started and stopped."""

    def __init__(self) -> None:
        self.features = {"vxlan": True, "gretap": False, "netem": False}
        self.calls: list[tuple[Any, ...]] = []
        self.specs: dict[str, SliverSpec | LinkSpec] = {}
        self.states: dict[str, str] = {}

    def _note(self, *call: Any) -> None:
        self.calls.append(call)

    def setup(self) -> None:
        self._note("setup")

    def ensure_sliver(self, spec: SliverSpec) -> None:
        self._note("ensure_sliver", spec.urn)
        self.specs[spec.urn] = spec
        self.states.setdefault(spec.urn, "stopped")

    def remove_sliver(self, urn: str) -> None:
        self._note("remove_sliver", urn)
        self.states.pop(urn, None)

    def ensure_link(self, spec: LinkSpec) -> None:
        self._note("ensure_link", spec.urn)
        self.specs[spec.urn] = spec
        self.states[spec.urn] = "ready"

    def remove_link(self, urn: str) -> None:
        self._note("remove_link", urn)
        self.states.pop(urn, None)

    def set_link_state(self, urn: str, up: bool) -> None:
        self._note("set_link_state", urn, up)

    def start_sliver(self, urn: str) -> None:
        self._note("start_sliver", urn)
        self.states[urn] = "ready"

    def stop_sliver(self, urn: str) -> None:
        self._note("stop_sliver", urn)
        self.states[urn] = "stopped"

    def reboot(self, urn: str) -> None:
        self._note("reboot", urn)

    def run_command(self, urn: str, argv: Sequence[str]) -> int:
        self._note("run_command", urn, tuple(argv))
        return 0

    def stop_command(self, urn: str, argv: Sequence[str]) -> int:
        self._note("stop_command", urn, tuple(argv))
        return 0

    def vsys_setup_link(self, sliver_urn: str, label: str, remote: str, key: int) -> None:
        self._note("vsys_setup_link", sliver_urn, label, remote, key)

    def vsys_delete_link(self, sliver_urn: str, label: str) -> None:
        self._note("vsys_delete_link", sliver_urn, label)

    def status(self, urn: str) -> str | None:
        return self.states.get(urn)

    def reconcile(self) -> dict[str, list[str]]:
        return {"removed": [], "created": [], "kept": sorted(self.states)}

    def monitor(self) -> dict[str, Any]:
        slivers = {u: {"cpu_ns": 7 << 32, "memory_bytes": 3 << 20} for u, s in self.specs.items()
                   if isinstance(s, SliverSpec)}
        ifaces = {f"primo{s.slot}e0": {"rx_bytes": 10, "tx_bytes": 5 << 32, "rx_packets": 1, "tx_packets": 2}
                  for s in self.specs.values() if isinstance(s, SliverSpec)}
        return {"node": {"cpu_percent": 3.5, "load1": 0.25, "load5": 0.2, "load15": 0.1, "mem_total": 8 << 30,
                         "mem_available": 6 << 30, "disk_total": 100 << 30, "disk_free": 50 << 30, "cpus": 2},
                "slivers": slivers, "interfaces": ifaces}

    def teardown(self) -> None:
        self._note("teardown")

    def warnings(self, urn: str) -> list[str]:
        return []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    service: AgentService
    recorder: Recorder


@pytest.fixture
def real_agents(federation: Federation, data_dir: Path, tmp_path: Path) -> Iterator[tuple[AgentBed, dict[str, Node]]]:
    am = AmService(data_dir, db_url=f"sqlite:///{tmp_path / 'am.sqlite'}", driver="agents", reap_interval=3600)
    am.start()
    nodes: dict[str, Node] = {}
    trust_dir = tmp_path / "roots"
    trust_dir.mkdir()
    (trust_dir / "root.pem").write_text(federation.root.gid.pem(with_chain=False))
    try:
        for name, underlay in (("pc1", "10.254.0.11"), ("pc2", "10.254.0.12")):
            cert, key = node_identity(federation, name)
            port = free_port()
            config = AgentConfig(node=name, kind="cluster", state_dir=tmp_path / name, cert=cert, key=key,
                                 trust_dir=trust_dir, listen_host="127.0.0.1", listen_port=port,
                                 underlay_dev="primo-ul", underlay_ip=underlay, registry_url=am.urls["registry"],
                                 am_urn=str(federation.am.gid.urn),
                                 advertise_url=f"https://127.0.0.1:{port}/primo/agent/1", register_interval=30.0)
            recorder = Recorder()
            nodes[name] = Node(AgentService(config, realizer=recorder), recorder)
            nodes[name].service.start()
        deadline = time.monotonic() + 20
        while not all(n.service.registrations for n in nodes.values()):
            assert time.monotonic() < deadline, "the agents did not register"
            time.sleep(0.05)
        yield AgentBed(federation, am, {}), nodes
    finally:
        for n in nodes.values():
            n.service.stop()
            shutil.rmtree(vsys_root(n.service.config.state_dir), ignore_errors=True)  # its FIFOs, on /dev/shm
        am.stop()


def test_the_am_drives_the_real_agent_service(real_agents: tuple[AgentBed, dict[str, Node]]) -> None:
    bed, nodes = real_agents
    assert bed.service.agents is not None and bed.service.agents.alive_nodes() == {"pc1", "pc2"}
    value = bed.create("compat", rspec({"a": "pc1", "b": "pc2"}, {"ab": ["a", "b"]}))
    assert "geni_failed" not in str(value["geni_slivers"])
    pc1, pc2 = nodes["pc1"].recorder, nodes["pc2"].recorder
    (a,) = [s for s in pc1.specs.values() if isinstance(s, SliverSpec)]
    (link,) = [s for s in pc2.specs.values() if isinstance(s, LinkSpec)]
    assert a.hostname == "a" and a.vsys_peers == ("10.254.0.12",) and link.remotes == ("10.254.0.11",)
    assert ("start_sliver", a.urn) in pc1.calls
    status = bed.am().Status([slice_urn("compat")], bed.cred("compat"), {})
    assert code(status) == 0, status["output"]
    slivers = {s["geni_sliver_urn"]: s for s in status["value"]["geni_slivers"]}
    assert {s["geni_operational_status"] for s in slivers.values()} == {"geni_ready"}
    figures = slivers[a.urn]["primo_monitor"]
    assert figures["cpu_ns"] == 7 << 32 and figures["interfaces"]["eth1"]["rx_bytes"] == 5 << 32
    assert bed.service.am.reconcile() == []
    at = NOW + timedelta(days=1)  # far ahead: the agent schedules it
    answer = bed.am().PerformOperationalAction([link.urn], bed.cred("compat"), "primo:link-down",
                                               {"primo_at": at.strftime("%Y-%m-%dT%H:%M:%SZ")})
    assert code(answer) == 0 and answer["value"][0]["primo_event_state"] == "delivered", answer
    answer = bed.am().PerformOperationalAction([a.urn], bed.cred("compat"), "primo:host-start",
                                               {"primo_command": ["true"]})
    assert answer["value"][0]["primo_event_state"] == "delivered", answer
    deadline = time.monotonic() + 10
    while ("run_command", a.urn, ("true",)) not in pc1.calls:
        assert time.monotonic() < deadline, pc1.calls
        time.sleep(0.05)
    assert code(bed.am().Delete([slice_urn("compat")], bed.cred("compat"), {})) == 0
    assert ("remove_sliver", a.urn) in pc1.calls and ("remove_link", link.urn) in pc2.calls
    assert nodes["pc1"].service.store.slivers() == {} and nodes["pc2"].service.store.links() == {}
