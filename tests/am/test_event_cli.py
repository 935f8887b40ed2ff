"""``primo event``, ``primo status`` and ``primo resources`` against an AM driving fake agents (in-process).

A ``primo init`` home, its clearinghouse and an aggregate with ``driver="agents"`` on free ports,
and two fake agents whose node certificates the home's root issues; the commands run through
click's runner with ``--json`` where the test reads values.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from primogeni.am.service import AmService
from primogeni.ch.service import ChService
from primogeni.cli.main import main
from primogeni.client import ClientConfig
from primogeni.geni.cert import Identity

from .fake_agent import FakeAgent, code, rspec


def primo(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


@dataclass
class HomeAuthority:
    root: Identity
    base: Path


@dataclass
class Bed:
    home: Path
    agents: dict[str, FakeAgent]
    am: AmService

    def ok(self, *args: str | Path) -> Any:
        r = primo(*args, "--home", self.home, "--json")
        assert r.exit_code == 0, r.output
        return json.loads(r.stdout)


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    home = tmp_path_factory.mktemp("events") / "home"
    r = primo("init", "--home", home, "--project", "demo")
    assert r.exit_code == 0, r.output
    auth = HomeAuthority(Identity.load(home / "trusted_roots" / "primo-root.pem", home / "ch" / "root.key"),
                         home.parent)
    ch = ChService(home)
    ch.start()
    am = AmService(home, driver="agents", reap_interval=3600)
    am.start()
    agents: dict[str, FakeAgent] = {}
    try:
        ClientConfig.load(home).replace(ch_url=ch.url(""), am_url=am.urls["3"]).save()
        for name, underlay in (("pc1", "10.254.0.11"), ("pc2", "10.254.0.12")):
            agents[name] = FakeAgent(auth, name, underlay)  # type: ignore[arg-type]
            assert code(agents[name].register(am.urls["registry"])) == 0
        b = Bed(home, agents, am)
        b.ok("project", "create", "demo")
        b.ok("slice", "create", "exp")
        request = home.parent / "request.xml"
        request.write_text(rspec({"h1": "pc1", "h2": "pc2"}, {"lan": ["h1", "h2"]}))
        b.ok("create", "exp", request)
        yield b
    finally:
        for agent in agents.values():
            agent.stop()
        am.stop()
        ch.stop()


def test_link_events_now_and_later(bed: Bed) -> None:
    before = time.time()
    answer = bed.ok("event", "exp", "link", "lan", "down", "--at", "+30")
    (entry,) = answer["events"]
    assert entry["primo_event_state"] == "delivered"
    for agent in bed.agents.values():
        spec = agent.events[entry["primo_event_id"]]
        assert spec.action == "down" and spec.target_kind == "link" and before + 29 <= spec.at <= time.time() + 31
    (entry,) = bed.ok("event", "exp", "link", "lan", "up")["events"]
    assert bed.agents["pc1"].events[entry["primo_event_id"]].at == 0.0
    r = primo("event", "exp", "link", "lan", "up", "--home", bed.home)
    assert r.exit_code == 0 and "delivered" in r.stdout


def test_host_events_carry_their_command(bed: Bed) -> None:
    r = primo("event", "exp", "host", "h2", "start", "--home", bed.home, "--json", "--", "iperf3", "-s", "-D")
    assert r.exit_code == 0, r.output
    (entry,) = json.loads(r.stdout)["events"]
    spec = bed.agents["pc2"].events[entry["primo_event_id"]]
    assert spec.command == ("iperf3", "-s", "-D") and spec.action == "start"
    (entry,) = bed.ok("event", "exp", "host", "h1", "reboot")["events"]
    assert bed.agents["pc1"].events[entry["primo_event_id"]].action == "reboot"


@pytest.mark.parametrize(("args", "word"), [
    (("host", "nosuch", "reboot"), "h1, h2"),
    (("link", "lan", "start"), "down, up"),
    (("host", "h1", "stop"), "needs a command"),
    (("host", "h1", "reboot", "--", "ls"), "takes no command"),
    (("link", "lan", "down", "--at", "yesterday"), "RFC 3339"),
])
def test_bad_event_commands(bed: Bed, args: tuple[str, ...], word: str) -> None:
    r = primo("event", "exp", *args[:3], "--home", bed.home, *args[3:])
    assert r.exit_code == 2 and word in r.stderr, r.output


def test_status_and_resources_show_what_the_agents_measure(bed: Bed) -> None:
    data = bed.ok("status", "exp")
    figures = [s["primo_monitor"] for s in data["slivers"] if "primo_monitor" in s]
    assert len(figures) == 2 and all("memory_bytes" in f and "eth1" in f["interfaces"] for f in figures)
    r = primo("status", "exp", "--home", bed.home)
    assert r.exit_code == 0 and "Monitor" in r.stdout and "eth1 3.0 GiB / 100 B" in r.stdout, r.stdout
    nodes = {n["name"]: n for n in bed.ok("resources")["nodes"]}
    assert nodes["pc1"]["usage"]["cpus"] == 2 and nodes["shared1"]["usage"] is None
    assert nodes["shared1"]["available"] == 0  # no agent
    r = primo("resources", "--home", bed.home)
    assert r.exit_code == 0 and "12% of 2 CPUs" in r.stdout, r.stdout
