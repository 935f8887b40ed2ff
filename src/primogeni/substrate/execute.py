"""``primo exec SLICE HOST -- CMD``: run a command inside a sliver held by an agent on this machine.

The sliver is found in the local agents' desired state: every agent configuration given (by
default ``<home>/substrate/*/agent.toml``, the embedded substrate's) names a node and a state
directory whose :class:`~primogeni.agent.store.Store` lists its slivers. ``SLICE`` is the slice's
name or URN, ``HOST`` the sliver's host name (its ``client_id``). The container is
``primo-<node>-<slot>`` with its run files in ``<state>/containers/`` (the realizer's layout).

:func:`exec_in_sliver` replaces this process with ``nsenter … setpriv … CMD`` after joining the
sliver's cgroup, so the command's stdin, stdout, stderr and exit status are the caller's.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from primogeni.agent.config import AgentConfig, ConfigError
from primogeni.agent.realize_links import sliver_netns
from primogeni.agent.store import Store, StoreError
from primogeni.emu import container
from primogeni.errors import EmuError
from primogeni.geni.errors import UrnError
from primogeni.geni.urn import Urn


class ExecError(EmuError):
    """No such slice or host here, several match, or the sliver's container is not running."""


@dataclass(frozen=True)
class Target:
    """Where a sliver lives: its node's agent configuration and its slot there."""

    config: AgentConfig
    sliver_urn: str
    slice_urn: str
    hostname: str
    slot: int

    @property
    def container_name(self) -> str:
        return sliver_netns(self.config.node, self.slot)

    @property
    def run_dir(self) -> Path:
        """Where the realizer keeps the container's pid file."""
        return self.config.state_dir / "containers"


def agent_configs(home: Path, configs: Iterable[Path] = ()) -> list[AgentConfig]:
    """The configurations named, else those of the embedded substrate of ``home``."""
    files = list(configs) or sorted((Path(home) / "substrate").glob("*/agent.toml"))
    found = []
    for file in files:
        try:
            found.append(AgentConfig.load(file))
        except ConfigError as exc:
            raise ExecError(f"cannot read an agent configuration: {exc}", str(file)) from exc
    return found


def slice_matches(wanted: str, slice_urn: str) -> bool:
    """``wanted`` is the slice's URN (compared as URNs) or its name."""
    try:
        urn = Urn.parse(slice_urn)
    except UrnError:
        return wanted == slice_urn
    if wanted.startswith("urn:"):
        try:
            return Urn.parse(wanted) == urn
        except UrnError:
            return False
    return urn.name == wanted


def find_sliver(home: Path, slice_name: str, host: str, configs: Iterable[Path] = ()) -> Target:
    """The one sliver of slice ``slice_name`` named ``host`` among the local agents' slivers."""
    agents = agent_configs(home, configs)
    if not agents:
        raise ExecError(f"no local agent: no {Path(home) / 'substrate'}/*/agent.toml (is the substrate up?) "
                        "and no --config given")
    hits: list[Target] = []
    slices: set[str] = set()
    for config in agents:
        if not config.state_dir.is_dir():
            continue
        try:
            slivers = Store(config.state_dir).slivers()
        except StoreError as exc:
            raise ExecError(f"cannot read agent {config.node}'s state: {exc}", str(config.state_dir)) from exc
        for urn, spec in slivers.items():
            if slice_matches(slice_name, spec.slice_urn):
                slices.add(spec.slice_urn)
                if spec.hostname == host:
                    hits.append(Target(config, urn, spec.slice_urn, spec.hostname, spec.slot))
    if not slices:
        raise ExecError(f"no slice {slice_name!r} has slivers on the local agents "
                        f"({', '.join(c.node for c in agents)})")
    if not hits:
        raise ExecError(f"slice {slice_name!r} has no host {host!r} on the local agents")
    if len(hits) > 1:
        where = "; ".join(f"{t.sliver_urn} on {t.config.node}" for t in hits)
        raise ExecError(f"{len(hits)} slivers match {slice_name!r} {host!r}: {where}; name the slice by URN")
    return hits[0]


def command(target: Target, argv: Sequence[str], *, user: str | None = None) -> tuple[list[str], tuple[str, ...]]:
    """The argv that runs ``argv`` in the target's container, and the cgroup files to join first."""
    c = container.attach(target.container_name, target.run_dir)
    if c is None:
        raise ExecError(f"the container of {target.hostname} ({target.sliver_urn}) is not running "
                        f"(stopped, or its agent has not made it yet)", target.container_name)
    procs: tuple[str, ...] = ()
    if c.cgroup:
        group = container.cgroups().find(c.cgroup)
        if group is not None:
            procs = group.procs_files
    return container.exec_argv(c, list(argv), user=user), procs


def exec_in_sliver(home: Path, slice_name: str, host: str, argv: Sequence[str], *, user: str | None = None,
                   configs: Iterable[Path] = ()) -> NoReturn:
    """Replace this process with ``argv`` running in the sliver (stdio and exit status pass through)."""
    target = find_sliver(home, slice_name, host, configs)
    full, procs = command(target, argv, user=user)
    for procs_file in procs:  # join the sliver's cgroup, as container.spawn does for the agent
        try:
            with open(procs_file, "w") as f:
                f.write("0")
        except OSError as exc:
            raise ExecError(f"cannot join the sliver's cgroup: {exc.strerror}", procs_file) from exc
    env = {"PATH": container.DEFAULT_PATH, "HOME": "/root" if user is None else f"/home/{user}",
           "LANG": "C.UTF-8", "TERM": os.environ.get("TERM", "dumb")}
    try:
        os.execve(full[0], full, env)
    except OSError as exc:
        raise ExecError(f"cannot run {full[0]}: {exc.strerror}", target.container_name) from exc


__all__ = ["ExecError", "Target", "agent_configs", "command", "exec_in_sliver", "find_sliver", "slice_matches"]
