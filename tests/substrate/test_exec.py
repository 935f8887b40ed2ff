"""``primo exec SLICE HOST -- CMD`` (``substrate/execute.py``).

Finding the sliver is tested on agent state directories written with the agent's own
:class:`~primogeni.agent.store.Store`. The kernel test makes a real container the way the
realizer names it (``primo-<node>-<slot>``, pid file in ``<state>/containers``, cgroup
``primo/<node>-<slot>``) and runs ``primo exec`` as a separate process: the command's output,
error output and exit status must come through, it must run in the sliver (its hostname, its
cgroup) and as the login asked for.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.substrate.bed import token

from primogeni.agent.config import AgentConfig
from primogeni.agent.spec import LoginSpec, SliverSpec
from primogeni.agent.store import Store
from primogeni.emu import container
from primogeni.substrate.execute import ExecError, command, find_sliver, slice_matches

PRIMO = [sys.executable, "-m", "primogeni.cli.main"]
SLICE = "urn:publicid:IDN+primo:exp+slice+demo"


def _node(home: Path, name: str, slivers: list[SliverSpec]) -> AgentConfig:
    """An agent configuration in HOME/substrate/NAME/agent.toml whose store holds ``slivers``."""
    where = home / "substrate" / name
    where.mkdir(parents=True)
    config = AgentConfig(node=name, kind="cluster", state_dir=where / "state", cert=where / "agent.pem",
                         key=where / "agent.key", trust_dir=home / "trusted_roots", listen_host="127.0.0.1",
                         listen_port=0, underlay_dev="lo", underlay_ip="127.0.0.1")
    config.save(where / "agent.toml")
    store = Store(config.state_dir)
    for spec in slivers:
        store.put_sliver(spec)
    return config


def _sliver(host: str, slot: int, slice_urn: str = SLICE, logins: tuple[LoginSpec, ...] = ()) -> SliverSpec:
    return SliverSpec(urn=f"urn:publicid:IDN+primo+sliver+{host}{slot}", slice_urn=slice_urn, hostname=host,
                      slot=slot, ports=(30000 + 10 * slot, 30009 + 10 * slot), logins=logins)


def test_slice_by_name_or_urn() -> None:
    assert slice_matches("demo", SLICE)
    assert slice_matches(SLICE, SLICE)
    assert slice_matches("urn:publicid:IDN+primo:exp+slice+demo", SLICE)
    assert not slice_matches("other", SLICE)
    assert not slice_matches("urn:publicid:IDN+primo:other+slice+demo", SLICE)


def test_finds_the_one_sliver(tmp_path: Path) -> None:
    _node(tmp_path, "pc1", [_sliver("h1", 1), _sliver("h2", 2)])
    _node(tmp_path, "pc2", [_sliver("h3", 1), _sliver("h1", 2, "urn:publicid:IDN+primo:exp+slice+other")])
    target = find_sliver(tmp_path, "demo", "h3")
    assert (target.config.node, target.slot, target.container_name) == ("pc2", 1, "primo-pc2-1")
    assert target.run_dir == tmp_path / "substrate" / "pc2" / "state" / "containers"
    assert find_sliver(tmp_path, "other", "h1").config.node == "pc2"
    assert find_sliver(tmp_path, SLICE, "h1").config.node == "pc1"
    with pytest.raises(ExecError, match="no slice 'nope'"):
        find_sliver(tmp_path, "nope", "h1")
    with pytest.raises(ExecError, match="has no host 'h9'"):
        find_sliver(tmp_path, "demo", "h9")
    only = tmp_path / "substrate" / "pc1" / "agent.toml"
    with pytest.raises(ExecError, match="has no host 'h3'"):
        find_sliver(tmp_path, "demo", "h3", configs=[only])
    with pytest.raises(ExecError, match="no local agent"):
        find_sliver(tmp_path / "empty", "demo", "h1")


def test_ambiguous_names_are_refused(tmp_path: Path) -> None:
    _node(tmp_path, "pc1", [_sliver("h1", 1)])
    _node(tmp_path, "pc2", [_sliver("h1", 1, "urn:publicid:IDN+primo:other+slice+demo")])
    with pytest.raises(ExecError, match="2 slivers match"):
        find_sliver(tmp_path, "demo", "h1")
    assert find_sliver(tmp_path, "urn:publicid:IDN+primo:other+slice+demo", "h1").config.node == "pc2"


def test_a_sliver_without_a_container_is_not_running(tmp_path: Path) -> None:
    _node(tmp_path, "pc1", [_sliver("h1", 1)])
    with pytest.raises(ExecError, match="is not running"):
        command(find_sliver(tmp_path, "demo", "h1"), ["true"])


def test_cli_reports_what_is_missing(tmp_path: Path) -> None:
    _node(tmp_path, "pc1", [_sliver("h1", 1)])
    out = subprocess.run([*PRIMO, "exec", "--home", str(tmp_path), "demo", "h7", "--", "true"], capture_output=True,
                         text=True, timeout=60)
    if os.geteuid() != 0:
        assert out.returncode == 2 and "needs root" in out.stderr
        return
    assert out.returncode == 1 and "has no host 'h7'" in out.stderr, out


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Path, str, int]]:
    """A node ``t<token>`` whose store holds sliver h1 (slot 3, login alice) with a running container."""
    if os.geteuid() != 0:
        pytest.skip("containers need root")
    node = "t" + token()
    config = _node(tmp_path, node, [_sliver("h1", 3, logins=(LoginSpec("alice"),))])
    run_dir = config.state_dir / "containers"
    spec = container.ContainerSpec(name=f"primo-{node}-3", hostname="h1", run_dir=run_dir,
                                   users=(("alice", 20001),), cgroup=f"primo/{node}-3")
    container.create(spec)
    try:
        yield tmp_path, node, 3
    finally:
        container.destroy(spec.name, run_dir)
        container.close_forker()


@pytest.mark.root
def test_exec_runs_in_the_sliver(running: tuple[Path, str, int]) -> None:
    home, node, slot = running
    script = "hostname; id -un; grep -c 'primo/" + node + f"-{slot}' /proc/self/cgroup; echo oops >&2; exit 3"
    out = subprocess.run([*PRIMO, "exec", "--home", str(home), "demo", "h1", "--", "sh", "-c", script],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 3, out
    hostname, user, in_cgroup = out.stdout.split()
    assert (hostname, user) == ("h1", "root") and int(in_cgroup) >= 1
    assert out.stderr == "oops\n"
    out = subprocess.run([*PRIMO, "exec", "--home", str(home), "--user", "alice", SLICE, "h1", "--", "id", "-un"],
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout) == (0, "alice\n"), out
    out = subprocess.run([*PRIMO, "exec", "--home", str(home), "demo", "h1", "--", "cat"], input="through stdin",
                         capture_output=True, text=True, timeout=60)
    assert out.stdout == "through stdin"
