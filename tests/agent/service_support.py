"""Shared helpers of the agent service tests: a PKI, a recording realizer, an agent on 127.0.0.1."""


from __future__ import annotations

import shutil
import time
import xmlrpc.client
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from primogeni.agent.config import AGENT_PATH, AgentConfig
from primogeni.agent.names import vsys_root
from primogeni.agent.service import AgentService
from primogeni.agent.spec import LinkSpec, SliverSpec
from primogeni.agent.store import Store
from primogeni.geni.cert import Identity, TrustStore
from primogeni.rpc import client

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
def started(pki: Pki, state_dir: Path, realizer: Any = None, store: Store | None = None, *, keep_vsys: bool = False,
            **changes: Any) -> Iterator[Running]:
    """An agent serving on 127.0.0.1 (a FakeRealizer unless given one), stopped at the end whatever happens;
    its vsys FIFOs go with it unless ``keep_vsys`` (a restart in the same test reuses them)."""
    realizer = realizer if realizer is not None else FakeRealizer()
    service = AgentService(make_config(pki, state_dir, **changes), realizer=realizer, store=store)
    service.start()
    try:
        yield Running(service, realizer, pki)
    finally:
        service.stop()
        if not keep_vsys:
            shutil.rmtree(vsys_root(state_dir), ignore_errors=True)  # the FIFOs' directories, on /dev/shm
