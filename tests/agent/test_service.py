"""agent.service over real TLS on 127.0.0.1: who may call, every method, registration, restart, run_agent."""


from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from tests.agent.service_support import (
    LINK,
    SLICE,
    SLICE2,
    FakeRealizer,
    Pki,
    Running,
    code,
    make_config,
    sliver,
    started,
    urn,
    wait_for,
)

from primogeni.agent import service as service_module
from primogeni.agent.config import AGENT_PATH
from primogeni.agent.names import vsys_dir
from primogeni.agent.service import run_agent, xmlrpc_safe
from primogeni.agent.spec import SliverSpec
from primogeni.agent.store import Store, VsysLink
from primogeni.errors import EmuError
from primogeni.geni.cert import Gid
from primogeni.geni.codes import GeniCode
from primogeni.rpc import RpcServer, envelope


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
    fifos = vsys_dir(agent.service.config.state_dir, 1)
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
    fifos = vsys_dir(agent.service.config.state_dir, 1)
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
        assert (vsys_dir(running.service.config.state_dir, 2) / "setup-link.in").exists()
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
    assert list((vsys_dir(agent.service.config.state_dir, 1)).glob("*.in")) == []
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
    with started(pki, tmp_path / "s", keep_vsys=True) as running:  # the FIFOs outlive the agent
        assert code(running.call("ProvisionSliver", sliver(1))) == 0
        assert code(running.call("ProvisionSliver", sliver(2))) == 0
    assert not {"remove_sliver", "teardown", "stop_sliver"} & set(running.realizer.names())

    with started(pki, tmp_path / "s") as again:
        assert again.realizer.names()[:2] == ["setup", "reconcile"]
        assert sorted(again.service.store.slivers()) == [urn(1), urn(2)]
        assert sorted(again.service.vsys.served()) == [urn(1), urn(2)]
        fifo = vsys_dir(tmp_path / "s", 2) / "list-links.in"
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
