"""agent.service over real TLS on 127.0.0.1: who may call, every method, registration, restart, run_agent."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import xmlrpc.client
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from primogeni.agent import service as service_module
from primogeni.agent.config import AGENT_PATH, AgentConfig, ConfigError
from primogeni.agent.realize_links import bridge_device, exp_device, sliver_netns
from primogeni.agent.service import AgentService, run_agent, xmlrpc_safe
from primogeni.agent.spec import LinkSpec, SliverSpec
from primogeni.agent.store import Store, VsysLink
from primogeni.emu import container, links, netns
from primogeni.emu import sys as esys
from primogeni.errors import EmuError
from primogeni.geni.cert import Gid, Identity, TrustStore, create_root, issue
from primogeni.geni.codes import GeniCode
from primogeni.geni.urn import Urn
from primogeni.rpc import RpcServer, client, envelope

NOW = datetime.now(UTC)
YEAR = timedelta(days=365)
SLICE = "urn:publicid:IDN+primo:p1+slice+s1"
SLICE2 = "urn:publicid:IDN+primo:p1+slice+s2"


@dataclass(frozen=True)
class Files:
    cert: Path
    key: Path

    @classmethod
    def save(cls, identity: Identity, directory: Path, name: str) -> Files:
        files = cls(directory / f"{name}.pem", directory / f"{name}.key")
        identity.save(files.cert, files.key)
        return files


@dataclass(frozen=True)
class Pki:
    trust_dir: Path
    trust: TrustStore
    agent: Files
    am: Files
    other_cm: Files
    user: Files


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    root = create_root(Urn.parse("urn:publicid:IDN+primo+authority+root"), now=NOW)

    def mint(urn: str, issuer: Identity = root, ca: bool = True) -> Identity:
        # Servers' certificates name 127.0.0.1, where the tests reach them.
        return issue(issuer, Urn.parse(urn), now=NOW, lifetime=YEAR, ca=ca, dns_names=("localhost",),
                     ip_addresses=("127.0.0.1",))

    user = mint("urn:publicid:IDN+primo+user+alice", issuer=mint("urn:publicid:IDN+primo+authority+ma"), ca=False)
    trust_dir = directory / "trusted_roots"
    trust_dir.mkdir()
    (trust_dir / "root.pem").write_text(root.gid.pem())
    return Pki(trust_dir, TrustStore.from_dir(trust_dir),
               Files.save(mint("urn:publicid:IDN+primo+node+pc1", ca=False), directory, "agent"),
               Files.save(mint("urn:publicid:IDN+primo+authority+cm"), directory, "am"),
               Files.save(mint("urn:publicid:IDN+primo:other+authority+cm"), directory, "other_cm"),
               Files.save(user, directory, "alice"))


class FakeRealizer:
    """Records every call; status follows what was ensured, started and stopped."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.states: dict[str, str] = {}
        self.fail: dict[str, Exception] = {}
        self.features = {"vxlan": True, "gretap": False, "netem": False}

    def _call(self, name: str, *args: Any, state: str | None = None) -> None:
        self.calls.append((name, *args))
        if name in self.fail:
            raise self.fail[name]
        if state == "gone":
            self.states.pop(args[0], None)
        elif state is not None:
            self.states[args[0]] = state

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def setup(self) -> None: self._call("setup")
    def ensure_sliver(self, spec: SliverSpec) -> None: self._call("ensure_sliver", spec.urn, state="ready")
    def remove_sliver(self, urn: str) -> None: self._call("remove_sliver", urn, state="gone")
    def ensure_link(self, spec: LinkSpec) -> None: self._call("ensure_link", spec.urn, state="ready")
    def remove_link(self, urn: str) -> None: self._call("remove_link", urn, state="gone")

    def remove_slivers(self, urns: Sequence[str]) -> None:
        self._call("remove_slivers", list(urns))
        for u in urns:
            self.states.pop(u, None)

    def remove_links(self, urns: Sequence[str]) -> None:
        self._call("remove_links", list(urns))
        for u in urns:
            self.states.pop(u, None)

    def set_link_state(self, urn: str, up: bool) -> None: self._call("set_link_state", urn, up)
    def start_sliver(self, urn: str) -> None: self._call("start_sliver", urn, state="ready")
    def stop_sliver(self, urn: str) -> None: self._call("stop_sliver", urn, state="stopped")
    def reboot(self, urn: str) -> None: self._call("reboot", urn)
    def teardown(self) -> None: self._call("teardown")
    def warnings(self, urn: str) -> list[str]: return []
    def status(self, urn: str) -> str | None: return self.states.get(urn)

    def run_command(self, urn: str, argv: Sequence[str]) -> int:
        self._call("run_command", urn, tuple(argv))
        return 77

    def stop_command(self, urn: str, argv: Sequence[str]) -> int:
        self._call("stop_command", urn, tuple(argv))
        return 1

    def vsys_setup_link(self, sliver_urn: str, label: str, remote: str, key: int) -> None:
        self._call("vsys_setup_link", sliver_urn, label, remote, key)

    def vsys_delete_link(self, sliver_urn: str, label: str) -> None:
        self._call("vsys_delete_link", sliver_urn, label)

    def reconcile(self) -> dict[str, list[str]]:
        self._call("reconcile")
        return {"removed": ["primob9"], "created": [], "kept": sorted(self.states)}

    def monitor(self) -> dict[str, Any]:
        self._call("monitor")
        return {"node": {"mem_total": 8 << 30, "cpus": 2}, "slivers": {},
                "interfaces": {"primo-ul": {"rx_bytes": 5 << 32, "rx_packets": 12}}}


def make_config(pki: Pki, state_dir: Path, **changes: Any) -> AgentConfig:
    config = AgentConfig(node="pc1", kind="cluster", state_dir=state_dir, cert=pki.agent.cert, key=pki.agent.key,
                         trust_dir=pki.trust_dir, listen_host="127.0.0.1", listen_port=0, underlay_dev="primo-ul",
                         underlay_ip="127.0.0.1")
    return replace(config, **changes)


def sliver(i: int, slice_urn: str = SLICE, **changes: Any) -> dict[str, Any]:
    spec = SliverSpec(f"urn:publicid:IDN+primo+sliver+h{i}", slice_urn, f"h{i}", i, (20000 + 10 * i, 20009 + 10 * i),
                      vsys_keys=(4097,), vsys_peers=("10.254.0.12",))
    return {**spec.to_dict(), **changes}


def urn(i: int) -> str:
    return f"urn:publicid:IDN+primo+sliver+h{i}"


LINK = LinkSpec("urn:publicid:IDN+primo+sliver+lan0", SLICE, 4096, ((urn(1), "eth1"),), ("10.254.0.12",))


@dataclass
class Running:
    service: AgentService
    realizer: Any  # a FakeRealizer, or the real one in the root test
    pki: Pki

    def proxy(self, who: Files | None = None) -> xmlrpc.client.ServerProxy:
        who = who or self.pki.am
        return client(self.service.server.url(AGENT_PATH), cert=who.cert, key=who.key, trust=self.pki.trust, timeout=10)

    def call(self, method: str, *args: Any, who: Files | None = None) -> dict[str, Any]:
        with self.proxy(who) as proxy:
            answer: dict[str, Any] = getattr(proxy, method)(*args)
        return answer


def code(answer: dict[str, Any]) -> int:
    return int(answer["code"]["geni_code"])


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


@contextmanager
def started(pki: Pki, state_dir: Path, realizer: Any = None, store: Store | None = None,
            **changes: Any) -> Iterator[Running]:
    """An agent serving on 127.0.0.1 (a FakeRealizer unless given one), stopped at the end whatever happens."""
    realizer = realizer if realizer is not None else FakeRealizer()
    service = AgentService(make_config(pki, state_dir, **changes), realizer=realizer, store=store)
    service.start()
    try:
        yield Running(service, realizer, pki)
    finally:
        service.stop()


@pytest.fixture
def agent(pki: Pki, tmp_path: Path) -> Iterator[Running]:
    with started(pki, tmp_path / "state") as running:
        yield running


def test_get_version(agent: Running) -> None:
    answer = agent.call("GetVersion")
    assert code(answer) == 0
    value = answer["value"]
    assert value["node"] == "pc1" and value["kind"] == "cluster" and value["capacity"] == 8
    assert value["url"] == agent.service.url == f"https://127.0.0.1:{agent.service.server.address[1]}{AGENT_PATH}"
    assert value["underlay"] == "127.0.0.1"
    assert value["features"] == {"vxlan": True, "gretap": False, "netem": False}
    facts = value["facts"]
    assert facts["cpus"] >= 1 and facts["mem_total"] > 1 << 20 and facts["disk_total"] > 1 << 20
    assert isinstance(facts["interfaces"], list)
    assert agent.realizer.names()[:2] == ["setup", "reconcile"]


def test_only_the_am_may_call(agent: Running) -> None:
    for method, args in (("GetVersion", ()), ("ProvisionSliver", (sliver(1),)), ("Release", (urn(1),)),
                         ("ProvisionMany", ([sliver(1)], [])), ("ReleaseMany", ([urn(1)],))):
        answer = agent.call(method, *args, who=agent.pki.user)
        assert code(answer) == GeniCode.FORBIDDEN, answer
        assert "urn:publicid:IDN+primo+user+alice" in answer["output"]
    assert agent.service.store.slivers() == {}
    assert "ensure_sliver" not in agent.realizer.names()
    # Without am_urn configured, any trusted …+authority+cm is the AM.
    assert code(agent.call("GetVersion", who=agent.pki.other_cm)) == 0


def test_am_urn_pins_the_caller(pki: Pki, tmp_path: Path) -> None:
    with started(pki, tmp_path / "s", am_urn="urn:publicid:IDN+primo+authority+cm") as running:
        assert code(running.call("GetVersion")) == 0
        assert code(running.call("GetVersion", who=pki.other_cm)) == GeniCode.FORBIDDEN


def test_provision_a_sliver(agent: Running) -> None:
    answer = agent.call("ProvisionSliver", sliver(1))
    assert code(answer) == 0, answer
    assert answer["value"] == {"urn": urn(1), "state": "ready"}
    assert agent.service.store.get_sliver(urn(1)) == SliverSpec.from_dict(sliver(1))
    assert Store(agent.service.config.state_dir).get_sliver(urn(1)) is not None
    assert ("ensure_sliver", urn(1)) in agent.realizer.calls
    fifos = agent.service.config.state_dir / "vsys" / "1"
    assert sorted(p.name for p in fifos.iterdir())[:2] == ["delete-link.in", "delete-link.out"]
    # Again (the AM retrying, or changing the spec): same answer, one record.
    assert code(agent.call("ProvisionSliver", sliver(1, memory_mb=64))) == 0
    assert agent.service.store.get_sliver(urn(1)).memory_mb == 64  # type: ignore[union-attr]


@pytest.mark.parametrize("bad, field", [
    (sliver(1, slot=-1), "slot -1"),
    (sliver(1, ports=[80, 90]), "port range 80-90"),
    (sliver(1, hostname="bad host"), "hostname"),
    (sliver(1, color="blue"), "color"),
    ({k: v for k, v in sliver(1).items() if k != "slice_urn"}, "slice_urn"),
    (sliver(1, interfaces=[{"name": "eth1", "mac": "02:00:00:00:00:01", "address": "10.1.2.300/24"}]), "eth1"),
    ("not a struct", "sliver spec"),
])
def test_a_malformed_spec_is_badargs_and_changes_nothing(agent: Running, bad: Any, field: str) -> None:
    answer = agent.call("ProvisionSliver", bad)
    assert code(answer) == GeniCode.BADARGS, answer
    assert field in answer["output"]
    assert agent.service.store.slivers() == {}
    assert list((agent.service.config.state_dir / "slivers").iterdir()) == []
    assert "ensure_sliver" not in agent.realizer.names()


def test_conflicting_slivers_are_refused(pki: Pki, tmp_path: Path) -> None:
    with started(pki, tmp_path / "s", kind="shared") as running:
        assert code(running.call("ProvisionSliver", sliver(1))) == 0
        same_slot = sliver(2, slice_urn=SLICE2, slot=1)
        answer = running.call("ProvisionSliver", same_slot)
        assert code(answer) == GeniCode.BADARGS and "slot 1 is held by" in answer["output"]
        overlap = sliver(2, slice_urn=SLICE2, ports=[20015, 20030])
        answer = running.call("ProvisionSliver", overlap)
        assert code(answer) == GeniCode.BADARGS and "overlap" in answer["output"]
        answer = running.call("ProvisionSliver", sliver(2))  # the same slice again on a shared node
        assert code(answer) == GeniCode.REFUSED and "one per slice" in answer["output"]
        assert code(running.call("ProvisionSliver", sliver(2, slice_urn=SLICE2))) == 0
        assert sorted(running.service.store.slivers()) == [urn(1), urn(2)]


def test_links_start_stop_status(agent: Running) -> None:
    assert code(agent.call("ProvisionSliver", sliver(1))) == 0
    answer = agent.call("ProvisionLink", LINK.to_dict())
    assert answer["value"] == {"urn": LINK.urn, "state": "ready"}
    assert agent.service.store.get_link(LINK.urn) == LINK
    bad = agent.call("ProvisionLink", {**LINK.to_dict(), "vni": 0})
    assert code(bad) == GeniCode.BADARGS and "tunnel id 0" in bad["output"]

    assert agent.call("Stop", urn(1))["value"] == "stopped"
    assert agent.service.store.run_state(urn(1)) == "stopped"
    assert agent.call("Status", [])["value"] == {urn(1): "stopped", LINK.urn: "ready"}
    assert agent.call("Start", urn(1))["value"] == "ready"
    assert Store(agent.service.config.state_dir).run_state(urn(1)) == "started"
    assert agent.call("Status", [urn(1), "urn:publicid:IDN+primo+sliver+nope"])["value"] == {urn(1): "ready"}
    assert ("stop_sliver", urn(1)) in agent.realizer.calls and ("start_sliver", urn(1)) in agent.realizer.calls

    assert code(agent.call("Start", urn(9))) == GeniCode.SEARCHFAILED
    assert code(agent.call("Start", 42)) == GeniCode.BADARGS
    assert code(agent.call("Status", "all")) == GeniCode.BADARGS
    assert code(agent.call("Status", [1, 2])) == GeniCode.BADARGS
    assert code(agent.call("Start")) == GeniCode.BADARGS  # wrong number of arguments
    assert code(agent.call("Teardown")) == GeniCode.UNSUPPORTED


def test_release(agent: Running) -> None:
    assert code(agent.call("ProvisionSliver", sliver(1))) == 0
    assert code(agent.call("ProvisionLink", LINK.to_dict())) == 0
    agent.service.store.put_vsys_link(urn(1), VsysLink("l1", "10.254.0.12", 4097))
    fifos = agent.service.config.state_dir / "vsys" / "1"
    assert agent.call("Release", urn(1))["value"] is True
    names = agent.realizer.names()
    assert names.index("vsys_delete_link") < names.index("remove_sliver")
    assert ("vsys_delete_link", urn(1), "l1") in agent.realizer.calls
    assert agent.service.store.get_sliver(urn(1)) is None
    assert list(fifos.iterdir()) == []
    assert agent.call("Release", LINK.urn)["value"] is True
    assert ("remove_link", LINK.urn) in agent.realizer.calls
    assert Store(agent.service.config.state_dir).links() == {}
    before = len(agent.realizer.calls)
    assert agent.call("Release", "urn:publicid:IDN+primo+sliver+unknown")["value"] is True
    assert len(agent.realizer.calls) == before


def test_a_kernel_failure_is_an_error_with_its_reason(agent: Running) -> None:
    agent.realizer.fail["ensure_sliver"] = EmuError("cannot make the veth", "primo1c")
    answer = agent.call("ProvisionSliver", sliver(1))
    assert code(answer) == GeniCode.ERROR
    assert "primo1c: cannot make the veth" in answer["output"]
    agent.realizer.fail["remove_sliver"] = EmuError("busy", "primo-pc1-1")
    assert code(agent.call("Release", urn(1))) == GeniCode.ERROR
    assert agent.service.store.get_sliver(urn(1)) is not None  # kept, so that the AM can try again
    del agent.realizer.fail["remove_sliver"]
    agent.realizer.fail["monitor"] = RuntimeError("a bug")
    answer = agent.call("Monitor")
    assert code(answer) == GeniCode.SERVERERROR and "a bug" not in answer["output"]


class PickyRealizer(FakeRealizer):
    """Fails ``ensure_sliver`` for one URN only."""

    def __init__(self, bad: str) -> None:
        super().__init__()
        self.bad = bad

    def ensure_sliver(self, spec: SliverSpec) -> None:
        if spec.urn == self.bad:
            self.calls.append(("ensure_sliver", spec.urn))
            raise EmuError("cannot make the veth", f"primo{spec.slot}c")
        super().ensure_sliver(spec)


class BatchRealizer(PickyRealizer):
    """Makes slivers in one ``try_slivers`` call (as ``Realizer`` does), answering per sliver."""

    def try_slivers(self, specs: Sequence[SliverSpec]) -> dict[str, EmuError]:
        self.calls.append(("try_slivers", [spec.urn for spec in specs]))
        failed = {}
        for spec in specs:
            try:
                self.ensure_sliver(spec)
            except EmuError as exc:
                failed[spec.urn] = exc
        return failed


@pytest.mark.parametrize("realizer_class", [PickyRealizer, BatchRealizer])
def test_provision_many_stores_all_then_realizes_and_answers_per_item(pki: Pki, tmp_path: Path,
                                                                      realizer_class: type) -> None:
    link = replace(LINK, members=((urn(1), "eth1"), (urn(2), "eth1")))
    with started(pki, tmp_path / "s", realizer_class(urn(5)), kind="shared") as running:
        answer = running.call("ProvisionMany", [sliver(1), sliver(2, slice_urn=SLICE2)], [link.to_dict()])
        assert code(answer) == 0, answer
        assert answer["value"] == {urn(1): "ready", urn(2): "ready", LINK.urn: "ready"}
        assert sorted(running.service.store.slivers()) == [urn(1), urn(2)]
        assert running.service.store.get_link(LINK.urn) == link
        names = running.realizer.names()
        assert names.index("ensure_link") > max(i for i, n in enumerate(names) if n == "ensure_sliver")
        assert ("try_slivers" in names) == (realizer_class is BatchRealizer)  # one batch when the realizer has it
        assert (running.service.config.state_dir / "vsys" / "2" / "setup-link.in").exists()
        # refused and failed items are reported with their reason; the others still go
        items = [sliver(3, slot=1, slice_urn="urn:publicid:IDN+primo:p1+slice+s3"),  # slot held
                 sliver(4),  # the same slice again on a shared node
                 sliver(5, slice_urn="urn:publicid:IDN+primo:p1+slice+s5"),  # the kernel fails
                 sliver(6, slice_urn="urn:publicid:IDN+primo:p1+slice+s6"),
                 sliver(7, slot=6, slice_urn="urn:publicid:IDN+primo:p1+slice+s7")]  # slot 6 taken just above
        value = running.call("ProvisionMany", items, [])["value"]
        assert value[urn(3)].startswith("BADARGS: ") and "slot 1 is held by" in value[urn(3)]
        assert value[urn(4)].startswith("REFUSED: ") and "one per slice" in value[urn(4)]
        assert value[urn(5)] == "ERROR: ProvisionMany: primo5c: cannot make the veth"
        assert value[urn(6)] == "ready" and value[urn(7)].startswith("BADARGS: ")
        held = running.service.store.slivers()
        assert sorted(held) == [urn(1), urn(2), urn(5), urn(6)]  # urn(5) stays stored: reconcile retries
        # malformed: the whole call is BADARGS and nothing is stored
        for args, field in ((([sliver(8), sliver(9, slot=-1)], []), "slivers[1]"), (("x", []), "slivers"),
                            (([], [{**LINK.to_dict(), "vni": 0}]), "links[0]"), (([sliver(8)],), "arguments")):
            bad = running.call("ProvisionMany", *args)
            assert code(bad) == GeniCode.BADARGS and field in bad["output"], bad
        assert sorted(running.service.store.slivers()) == sorted(held)


def test_release_many_in_one_pass(agent: Running) -> None:
    assert code(agent.call("ProvisionMany", [sliver(1), sliver(2)], [LINK.to_dict()])) == 0
    agent.service.store.put_vsys_link(urn(1), VsysLink("l1", "10.254.0.12", 4097))
    unknown = "urn:publicid:IDN+primo+sliver+unknown"
    answer = agent.call("ReleaseMany", [urn(1), LINK.urn, urn(2), unknown])
    assert answer["value"] == {urn(1): "released", LINK.urn: "released", urn(2): "released", unknown: "released"}
    calls = agent.realizer.calls
    assert ("remove_links", [LINK.urn]) in calls and ("remove_slivers", [urn(1), urn(2)]) in calls
    names = agent.realizer.names()
    assert names.index("vsys_delete_link") < names.index("remove_links") < names.index("remove_slivers")
    assert "remove_sliver" not in names and "remove_link" not in names
    assert agent.service.store.slivers() == {} and Store(agent.service.config.state_dir).links() == {}
    assert list((agent.service.config.state_dir / "vsys" / "1").glob("*.in")) == []
    assert code(agent.call("ReleaseMany", [1])) == GeniCode.BADARGS
    assert code(agent.call("ReleaseMany", urn(1))) == GeniCode.BADARGS


def test_release_many_falls_back_to_one_by_one_and_keeps_what_failed(agent: Running) -> None:
    assert code(agent.call("ProvisionMany", [sliver(1), sliver(2)], [])) == 0
    agent.realizer.fail["remove_slivers"] = EmuError("busy", "primo-pc1-1")
    agent.realizer.fail["remove_sliver"] = EmuError("busy", "primo-pc1-1")
    value = agent.call("ReleaseMany", [urn(1), urn(2)])["value"]
    assert value == {urn(1): "ERROR: ReleaseMany: primo-pc1-1: busy", urn(2): "ERROR: ReleaseMany: primo-pc1-1: busy"}
    assert sorted(agent.service.store.slivers()) == [urn(1), urn(2)]  # kept, so that the AM can try again
    del agent.realizer.fail["remove_sliver"]
    assert agent.call("ReleaseMany", [urn(1), urn(2)])["value"] == {urn(1): "released", urn(2): "released"}
    assert [c for c in agent.realizer.calls if c[0] == "remove_sliver"][-2:] == [("remove_sliver", urn(1)),
                                                                               ("remove_sliver", urn(2))]
    assert agent.service.store.slivers() == {}


def test_monitor_reconcile_and_big_numbers(agent: Running) -> None:
    value = agent.call("Monitor")["value"]
    assert value["interfaces"]["primo-ul"]["rx_bytes"] == float(5 << 32)  # beyond XML-RPC's 32-bit int
    assert value["interfaces"]["primo-ul"]["rx_packets"] == 12
    assert agent.call("Reconcile")["value"] == {"removed": ["primob9"], "created": [], "kept": []}
    assert xmlrpc_safe({1: (2, 1 << 40, True, None)}) == {"1": [2, float(1 << 40), True, None]}


def test_events(agent: Running) -> None:
    assert code(agent.call("ProvisionLink", LINK.to_dict())) == 0
    down = {"event_id": 7, "slice_urn": SLICE, "target_kind": "link", "target": LINK.urn, "action": "down"}
    assert agent.call("Event", down)["value"] == {"event_id": 7, "state": "applied"}
    assert agent.call("Event", down)["value"] == {"event_id": 7, "state": "duplicate"}
    assert agent.realizer.calls.count(("set_link_state", LINK.urn, False)) == 1
    later = {**down, "event_id": 8, "action": "up", "at": time.time() + 0.2}
    assert agent.call("Event", later)["value"] == {"event_id": 8, "state": "scheduled"}
    assert wait_for(lambda: agent.service.store.event_state(8) == "applied")
    assert ("set_link_state", LINK.urn, True) in agent.realizer.calls
    host = {"event_id": 9, "slice_urn": SLICE, "target_kind": "host", "target": urn(5), "action": "start",
            "command": ["sleep", "1"]}
    answer = agent.call("Event", host)["value"]
    assert answer["state"] == "failed" and "no host" in answer["detail"]
    bad = agent.call("Event", {**down, "event_id": 10, "action": "sideways"})
    assert code(bad) == GeniCode.BADARGS and "sideways" in bad["output"]
    assert agent.service.store.event_state(10) is None


class Registry:
    """A stand-in for the AM's registry route: fails the first ``failures`` calls, records the rest."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.seen = threading.Event()

    def __call__(self, method: str, params: tuple[Any, ...], caller: Gid) -> object:
        self.calls.append((str(caller.urn), params))
        if len(self.calls) <= self.failures:
            return envelope("", code=GeniCode.BUSY, output="not yet")
        self.seen.set()
        return envelope(True)


@pytest.fixture
def registry(pki: Pki) -> Iterator[tuple[RpcServer, Registry]]:
    route = Registry(failures=1)
    server = RpcServer({"/primo/registry/1": route}, identity_cert=pki.am.cert, identity_key=pki.am.key,
                       trust=pki.trust)
    server.start()
    try:
        yield server, route
    finally:
        server.stop()


def test_registration_retries_then_beats(pki: Pki, tmp_path: Path, registry: tuple[RpcServer, Registry],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    server, route = registry
    monkeypatch.setattr(service_module, "RETRY_INTERVAL", 0.05)
    with started(pki, tmp_path / "s", registry_url=server.url("/primo/registry/1"), register_interval=0.2) as running:
        service = running.service
        assert route.seen.wait(5)
        assert wait_for(lambda: service.registrations >= 2)  # the heartbeat
        caller, params = route.calls[-1]
        assert caller == "urn:publicid:IDN+primo+node+pc1"
        (info,) = params
        assert info["node"] == "pc1" and info["kind"] == "cluster" and info["url"] == service.url
        assert info["underlay"] == "127.0.0.1" and info["capacity"] == 8
        assert info["facts"]["cpus"] >= 1 and info["features"]["vxlan"] is True
    count = len(route.calls)
    time.sleep(0.3)
    assert len(route.calls) == count  # stopped means stopped


def test_registration_survives_an_absent_registry(pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_module, "RETRY_INTERVAL", 0.05)
    with socket.socket() as s:  # a port nobody listens on (bound, then closed)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with started(pki, tmp_path / "s", registry_url=f"https://127.0.0.1:{port}/primo/registry/1") as running:
        time.sleep(0.3)
        assert running.service.registrations == 0
        assert code(running.call("GetVersion")) == 0  # the agent serves all the same


def test_a_restart_leaves_slivers_and_reconciles(pki: Pki, tmp_path: Path) -> None:
    with started(pki, tmp_path / "s") as running:
        assert code(running.call("ProvisionSliver", sliver(1))) == 0
        assert code(running.call("ProvisionSliver", sliver(2))) == 0
    assert not {"remove_sliver", "teardown", "stop_sliver"} & set(running.realizer.names())

    with started(pki, tmp_path / "s") as again:
        assert again.realizer.names()[:2] == ["setup", "reconcile"]
        assert sorted(again.service.store.slivers()) == [urn(1), urn(2)]
        assert sorted(again.service.vsys.served()) == [urn(1), urn(2)]
        fifo = tmp_path / "s" / "vsys" / "2" / "list-links.in"
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # succeeds only if the agent holds it open for reading
        os.close(fd)


def test_run_agent_stops_on_sigterm(pki: Pki, tmp_path: Path, registry: tuple[RpcServer, Registry],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    server, route = registry
    monkeypatch.setattr(service_module, "RETRY_INTERVAL", 0.05)
    config = make_config(pki, tmp_path / "s", registry_url=server.url("/primo/registry/1"))

    def terminate() -> None:
        route.seen.wait(10)  # the agent is up once it has registered
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=terminate)
    killer.start()
    before = signal.getsignal(signal.SIGTERM)
    assert run_agent(config, realizer=FakeRealizer()) == 0
    killer.join()
    assert route.seen.is_set()
    assert signal.getsignal(signal.SIGTERM) is before


def test_run_agent_reports_a_bad_start(pki: Pki, tmp_path: Path) -> None:
    empty = tmp_path / "no-roots"
    empty.mkdir()
    assert run_agent(make_config(pki, tmp_path / "s", trust_dir=empty), realizer=FakeRealizer()) == 1


@pytest.mark.root
def test_provisioning_and_vsys_against_the_kernel(pki: Pki, nodes: Any) -> None:
    """The real realizer in a node namespace: a sliver asks for a vsys link from inside its container."""
    (node,) = nodes(1)
    with started(pki, node.state_dir, node.realizer, node.store, node=node.name, underlay_ip=node.address) as running:
        answer = running.call("ProvisionSliver", sliver(1))
        assert answer["value"] == {"urn": urn(1), "state": "ready"}, answer
        name = sliver_netns(node.name, 1)
        c = container.attach(name, node.state_dir / "containers")
        assert c is not None

        def vsys(script: str, line: str) -> str:
            assert c is not None
            shell = f'echo "{line}" > /vsys/{script}.in; head -1 /vsys/{script}.out'
            done = container.run(c, ["/bin/sh", "-c", shell], timeout=10)
            assert done.returncode == 0, done.stderr
            return done.stdout.strip()

        assert vsys("setup-link", "setup-link l1 10.254.0.12 4097") == "OK l1"
        assert vsys("setup-link", "setup-link l2 10.254.0.12 4098") == "ERROR key 4098 is not one of this slice's keys"
        answer_text = vsys("setup-link", "setup-link l2 10.254.0.99 4097")
        assert answer_text == "ERROR remote 10.254.0.99 is not a node of this slice"
        assert vsys("list-links", "list-links") == "OK l1:10.254.0.12:4097"
        with netns.iproute(name) as ipr:
            assert links.exists(ipr, "l1")
            assert not links.exists(ipr, "l2")
        assert node.store.vsys_links(urn(1)) == [VsysLink("l1", "10.254.0.12", 4097)]
        assert running.call("Status", [])["value"] == {urn(1): "ready"}

        assert running.call("Release", urn(1))["value"] is True
        assert not netns.exists(name)
        assert node.store.slivers() == {}
        assert list((node.state_dir / "vsys" / "1").glob("*.in")) == []


@pytest.mark.root
def test_provision_many_and_release_many_against_the_kernel(pki: Pki, nodes: Any) -> None:
    """Three slivers and the LAN joining them in one call, then all released in one call."""
    (node,) = nodes(1)
    lan = LinkSpec("urn:publicid:IDN+primo+sliver+lan0", SLICE, 4096, tuple((urn(i), "eth1") for i in (1, 2, 3)), ())
    items = [sliver(i, interfaces=[{"name": "eth1", "mac": f"02:00:00:00:00:0{i}", "address": f"10.1.0.{i}/24",
                                    "link": lan.urn}]) for i in (1, 2, 3)]
    with started(pki, node.state_dir, node.realizer, node.store, node=node.name, underlay_ip=node.address) as running:
        answer = running.call("ProvisionMany", items, [lan.to_dict()])
        assert answer["value"] == {urn(1): "ready", urn(2): "ready", urn(3): "ready", lan.urn: "ready"}, answer
        with netns.iproute(node.netns) as ipr:
            assert [links.master_of(ipr, exp_device(i, 0)) for i in (1, 2, 3)] == [bridge_device(4096)] * 3
        answer = running.call("ReleaseMany", [lan.urn, urn(1), urn(2), urn(3)])
        assert set(answer["value"].values()) == {"released"}, answer
        assert not any(netns.exists(sliver_netns(node.name, i)) for i in (1, 2, 3))
        assert node.store.slivers() == {} and node.store.links() == {}
        node.realizer.settle()
        with netns.iproute(node.netns) as ipr:
            left = links.names(ipr, "primo")
            assert [d for d in left if d.startswith(("primob", "primo1", "primo2", "primo3"))] == []


@pytest.mark.root
def test_primo_agent_process_restarts_without_disturbing_slivers(pki: Pki, nodes: Any) -> None:
    """``run_agent`` in its own process in a node namespace, with its own realizer: SIGTERM, start again."""
    (node,) = nodes(1)
    port = 20000 + secrets.randbelow(30000)
    config = make_config(pki, node.state_dir.parent / f"{node.name}-agent", node=node.name,
                         underlay_ip=node.address, listen_port=port)
    path = config.save(node.state_dir.parent / f"{node.name}-agent.toml")
    log_file = node.state_dir.parent / f"{node.name}-agent.log"
    code_text = ("import sys; from primogeni.agent.config import AgentConfig; "
                 "from primogeni.agent.service import run_agent; sys.exit(run_agent(AgentConfig.load(sys.argv[1])))")

    def launch() -> subprocess.Popen[bytes]:
        with open(log_file, "ab") as log_out:
            return subprocess.Popen(["nsenter", f"--net=/run/netns/{node.netns}", sys.executable, "-c", code_text,
                                     str(path)], stdout=log_out, stderr=subprocess.STDOUT)

    def call(method: str, *args: Any) -> dict[str, Any]:
        with esys.in_netns(node.netns):  # the agent listens on 127.0.0.1 of the node namespace
            proxy = client(f"https://127.0.0.1:{port}{AGENT_PATH}", cert=pki.am.cert, key=pki.am.key,
                           trust=pki.trust, timeout=30)
            with proxy:
                answer: dict[str, Any] = getattr(proxy, method)(*args)
        return answer

    def serving(process: subprocess.Popen[bytes]) -> bool:
        assert process.poll() is None, log_file.read_text()
        try:
            return code(call("GetVersion")) == 0
        except OSError:  # not listening yet
            return False

    def terminate(process: subprocess.Popen[bytes]) -> int:
        process.send_signal(signal.SIGTERM)
        return process.wait(timeout=30)

    process = launch()
    try:
        assert wait_for(lambda: serving(process), 30), log_file.read_text()
        version = call("GetVersion")["value"]
        assert version["node"] == node.name and version["features"]["vxlan"] is True
        assert call("ProvisionSliver", sliver(1))["value"] == {"urn": urn(1), "state": "ready"}
        first = container.attach(sliver_netns(node.name, 1), config.state_dir / "containers")
        assert first is not None
        assert terminate(process) == 0, log_file.read_text()
        assert first.alive(), "stopping the agent must leave its slivers running"

        process = launch()
        assert wait_for(lambda: serving(process), 30), log_file.read_text()
        assert call("Status", [])["value"] == {urn(1): "ready"}
        again = container.attach(sliver_netns(node.name, 1), config.state_dir / "containers")
        assert again is not None and again.pid == first.pid  # the same container, not a new one
        assert call("Release", urn(1))["value"] is True
        assert not netns.exists(sliver_netns(node.name, 1))
        assert terminate(process) == 0, log_file.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


# -- the configuration file (agent.config)


def test_config_round_trips_through_toml(pki: Pki, tmp_path: Path) -> None:
    config = make_config(pki, tmp_path / "state", listen_port=12400, registry_url="https://10.254.0.1:12369/primo/registry/1",
                         am_urn="urn:publicid:IDN+primo+authority+cm", capacity=16, register_interval=5.5)
    path = config.save(tmp_path / "agent.toml")
    assert AgentConfig.load(path) == config
    assert config.url() == "https://127.0.0.1:12400/primo/agent/1"
    assert replace(config, advertise_url="https://pc1.example:1/x").url() == "https://pc1.example:1/x"


def test_config_relative_paths_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "pc2.toml"
    path.parent.mkdir()
    path.write_text('node = "pc2"\nkind = "shared"\nstate_dir = "state"\ncert = "pc2.pem"\nkey = "pc2.key"\n'
                    'trust_dir = "/etc/primo/roots"\nlisten_host = "0.0.0.0"\nlisten_port = 12400\n'
                    'underlay_dev = "eth0"\nunderlay_ip = "192.0.2.7"\n')
    config = AgentConfig.load(path)
    assert config.state_dir == tmp_path / "conf" / "state"
    assert config.cert == tmp_path / "conf" / "pc2.pem"
    assert config.trust_dir == Path("/etc/primo/roots")
    assert (config.registry_url, config.am_urn, config.capacity, config.register_interval) == (None, None, 8, 30.0)
    assert (config.ctl_subnet, config.experimental_pool) == ("172.30.0.0/16", "10.0.0.0/8")
    assert config.url() == "https://192.0.2.7:12400/primo/agent/1"


@pytest.mark.parametrize("change, message", [
    ({"node": "PC 1"}, "node 'PC 1'"), ({"kind": "lab"}, "kind 'lab'"), ({"listen_port": 70000}, "listen_port"),
    ({"underlay_dev": "a-very-long-interface"}, "underlay_dev"), ({"underlay_ip": "10.0.0.300"}, "underlay_ip"),
    ({"ctl_subnet": "172.30.0.1/16"}, "ctl_subnet"), ({"experimental_pool": "172.30.5.0/24"}, "overlaps"),
    ({"registry_url": "http://am/primo/registry/1"}, "registry_url"), ({"am_urn": "cm"}, "am_urn"),
    ({"capacity": 0}, "capacity"), ({"register_interval": -1}, "register_interval"),
    ({"advertise_url": "https://:99999/"}, "advertise_url"),
])
def test_config_is_checked(pki: Pki, tmp_path: Path, change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_config(pki, tmp_path, **change)


@pytest.mark.parametrize("text, message", [
    (None, r"bad\.toml: .*No such file"), ("node = \n", r"bad\.toml: Invalid value"),
    ('node = "pc1"\n', r"bad\.toml: missing settings \['kind'"),
    ('node = "pc1"\ncolour = "red"\n', r"bad\.toml: unknown settings \['colour'\]"),
    ('node = 3\nkind = "shared"\nstate_dir = "s"\ncert = "c"\nkey = "k"\ntrust_dir = "t"\nlisten_host = "h"\n'
     'listen_port = 1\nunderlay_dev = "d"\nunderlay_ip = "10.0.0.1"\n', "node must be a string"),
])
def test_config_file_errors_name_the_file(tmp_path: Path, text: str | None, message: str) -> None:
    path = tmp_path / "bad.toml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        AgentConfig.load(path)
