"""``primo clean`` (``substrate/clean.py``): finds every kind of PrimoGENI object, removes them, and only them.

The kernel test makes one object of each kind with names of its own (``primo-t<random>``): a
namespace with a process in it, an nftables table (inside that namespace: tests never touch the
root namespace's nftables), a root-namespace veth, cgroups in the v1 hierarchies and in the
cgroup2 tree, a fake agent process, a mount on a vsys directory and a stale agent pid file, plus
a namespace that is not ours (``cleantest-<random>``). A dry run with the default scope must list
ours and not the other; a real run scoped to our names must remove ours and leave the other.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.substrate import bed

from primogeni.emu import cgroups as cg
from primogeni.emu import links, netns
from primogeni.emu import sys as esys
from primogeni.emu.nft import Nft
from primogeni.substrate import clean
from primogeni.substrate.clean import Item, Scope

root = pytest.mark.root
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="primo clean acts on namespaces, links and cgroups (root)")


@pytest.mark.parametrize("argv, config", [
    (["/usr/bin/python3", "-m", "primogeni.cli.main", "agent", "--config", "/x/agent.toml"], "/x/agent.toml"),
    (["/venv/bin/python", "/venv/bin/primo", "agent", "--config=/y.toml"], "/y.toml"),
    (["primo", "agent", "--config", "rel.toml", "--verbose"], "rel.toml"),
    (["primo", "am", "--config", "/x.toml"], None),  # not an agent
    (["python3", "primo-agent.py", "agent", "--config", "/x.toml"], None),  # not our program
    (["vim", "primo", "agent"], None),  # no --config: not a running agent
    (["bash", "-c", "primo agent --config /x.toml"], None),  # a shell line, not the agent itself
])
def test_agent_command_lines(argv: list[str], config: str | None) -> None:
    assert clean.agent_config_of(argv) == config


def test_items_name_themselves() -> None:
    assert str(Item("netns", "primo-pc1")) == "netns primo-pc1"
    assert str(Item("agent", "/h/agent.toml", 42, "pid 42")) == "agent /h/agent.toml (pid 42)"
    assert Item("cgroup", "primo/a-1", detail="v1") != Item("cgroup", "primo/a-1", detail="v2")


@root
@needs_root
def test_cli_dry_run_lists_and_changes_nothing(tmp_path: Path) -> None:
    name = f"primo-t{bed.token()}"
    netns.create(name)
    try:
        out = subprocess.run([sys.executable, "-m", "primogeni.cli.main", "clean", "--dry-run", "--json", "--home",
                              str(tmp_path)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        listed = json.loads(out.stdout)
        assert {"kind": "netns", "name": name, "detail": ""} in listed
        for item in listed:  # everything listed is ours by name or place
            if item["kind"] == "process":
                assert " in primo" in item["detail"], item
            elif item["kind"] == "nft":
                assert item["name"].split()[1].startswith("primo"), item
            elif item["kind"] in ("link", "netns", "cgroup"):
                assert item["name"].startswith("primo") or item["name"].endswith("/primo"), item
        assert netns.exists(name)
    finally:
        netns.remove(name)


@pytest.fixture
def objects(tmp_path: Path) -> Iterator[dict[str, object]]:
    """One object of each kind, named ``primo-t<token>`` (and one that is not ours); all removed at the end."""
    if os.geteuid() != 0:
        pytest.skip("primo clean acts on namespaces, links and cgroups (root)")
    token = bed.token()
    ours = f"primo-t{token}"
    foreign = f"cleantest-{token}"
    procs: list[subprocess.Popen[bytes]] = []
    hierarchies = clean._hierarchies()
    made_tops: list[Path] = []
    vsys = tmp_path / "vsys"
    try:
        netns.create(ours)
        netns.create(foreign)
        procs.append(netns.popen(ours, ["sleep", "60"]))
        with Nft(ours) as nft:
            nft.run(f"add table inet {ours}")
        with netns.iproute(None) as ipr:
            links.add_veth(ipr, f"{ours}a", f"{ours}b")
        for hierarchy in hierarchies:
            for base in set(hierarchy.bases.values()):
                top = base / cg.PREFIX
                if not top.exists():
                    made_tops.append(top)
            if hierarchy.version == "v1":
                hierarchy.create(f"{cg.PREFIX}/t{token}-1")
            else:  # the cgroup2 tree may have no controllers to delegate: a bare directory is a group
                (hierarchy.bases[""] / cg.PREFIX / f"t{token}-1").mkdir(parents=True)
            assert hierarchy.find(f"{cg.PREFIX}/t{token}-1") is not None
        config = tmp_path / "agents" / "agent.toml"
        config.parent.mkdir()
        config.write_text("# not read\n")
        fake = tmp_path / "bin" / "primo"
        fake.parent.mkdir()
        fake.write_text("import time\ntime.sleep(60)\n")
        procs.append(subprocess.Popen([sys.executable, str(fake), "agent", "--config", str(config)]))
        vsys.mkdir()
        esys.mount("tmpfs", str(vsys), "tmpfs", 0, "size=64k")  # as a sliver's vsys bind would be
        stale = tmp_path / "home" / "substrate" / "pcx" / "agent.pid"
        stale.parent.mkdir(parents=True)
        stale.write_text("999999999\n")
        time.sleep(0.2)  # the fake agent has exec'd python and shows its command line
        yield {"token": token, "ours": ours, "foreign": foreign, "procs": procs, "vsys": vsys, "stale": stale,
               "config": config, "home": tmp_path / "home", "agents": tmp_path / "agents"}
    finally:  # every step runs, whatever failed before it
        steps = [lambda: _kill(procs)]
        steps += [lambda n=n: clean.remove_netns(n) for n in (ours, foreign)]  # type: ignore[misc]
        steps.append(lambda: _delete_link(f"{ours}a"))
        steps += [lambda h=h: clean.remove_groups(h, f"{cg.PREFIX}/t{token}-") for h in hierarchies]  # type: ignore[misc]
        steps += [lambda t=t: _rmdir_if_empty(t) for t in made_tops]  # type: ignore[misc]
        steps.append(lambda: _unmount(vsys))
        bed.run_all(steps)


def _kill(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()


def _delete_link(name: str) -> None:
    with netns.iproute(None) as ipr:
        links.delete(ipr, name)


def _rmdir_if_empty(path: Path) -> None:
    with contextlib.suppress(OSError):  # not empty: a colleague's test uses it now
        os.rmdir(path)


def _unmount(path: Path) -> None:
    while path.is_mount():
        esys.umount(str(path), esys.MNT_DETACH)


def _scope(o: dict[str, object]) -> Scope:
    return Scope(prefix=str(o["ours"]), cgroup_prefix=f"{cg.PREFIX}/t{o['token']}-", agents_under=o["agents"],
                 vsys=o["vsys"], homes=(o["home"],), tables_netns=str(o["ours"]))  # type: ignore[arg-type]


@root
@needs_root
def test_dry_run_lists_ours_and_not_others(objects: dict[str, object]) -> None:
    ours, foreign = str(objects["ours"]), str(objects["foreign"])
    everything = {str(i) for i in clean.find(Scope())}  # the default scope: lists, changes nothing
    assert f"netns {ours}" in everything
    assert f"link {ours}a (root namespace)" in everything
    assert not any(foreign in line for line in everything)
    found = clean.find(_scope(objects))
    kinds = {i.kind for i in found}
    assert kinds == {"agent", "process", "nft", "link", "netns", "cgroup", "mount", "dir", "pidfile"}, found
    assert netns.exists(ours) and netns.exists(foreign)  # nothing removed
    assert next(i for i in found if i.kind == "nft").name == f"inet {ours}"


@root
@needs_root
def test_clean_removes_ours_only(objects: dict[str, object]) -> None:
    ours, foreign, token = str(objects["ours"]), str(objects["foreign"]), objects["token"]
    procs: list[subprocess.Popen[bytes]] = objects["procs"]  # type: ignore[assignment]
    log: list[str] = []
    removed = clean.clean(_scope(objects), log=log.append)
    assert {i.kind for i in removed} >= {"agent", "process", "nft", "link", "netns", "cgroup", "mount", "dir",
                                         "pidfile"}, (removed, log)
    assert not any(line.startswith("warning") for line in log), log
    assert all(p.poll() is not None for p in procs)  # the process in the namespace and the agent
    assert any(line.startswith("removed agent") for line in log), log
    assert not netns.exists(ours)
    with netns.iproute(None) as ipr:
        assert links.names(ipr, ours) == []
    for hierarchy in clean._hierarchies():
        assert hierarchy.names(f"{cg.PREFIX}/t{token}-") == []
    assert not Path(objects["vsys"]).exists()  # type: ignore[arg-type]
    assert not Path(objects["stale"]).exists()  # type: ignore[arg-type]
    assert netns.exists(foreign)  # not ours: still there
    assert clean.find(_scope(objects)) == []
