"""``primo clean``: remove every PrimoGENI object on this machine, and only those.

What counts as ours is decided by name (everything we make starts with ``primo``) and, for
processes, by where they run or what they are:

1. agents: processes whose command line is ``… primo agent --config FILE`` (the ``primo`` script,
   or ``python -m primogeni.cli.main``): SIGTERM, then SIGKILL after a grace period;
2. processes inside ``primo-*`` network namespaces (slivers, sshd, agents of the embedded
   substrate): SIGKILL;
3. nftables tables named ``primo*`` in the root namespace (a real machine's agent keeps ``inet
   primo`` there; the embedded substrate's tables live and die in node namespaces);
4. root-namespace links named ``primo*`` (``primo-ul0``; a real machine's bridges and veths);
5. network namespaces ``/run/netns/primo-*`` (their devices are deleted first, so nothing lingers
   while the kernel frees the namespace);
6. cgroups ``primo/*`` in every v1 hierarchy and in the cgroup2 tree (and ``primo`` itself once empty);
7. mounts at or under ``/vsys`` in this mount namespace, then ``/vsys`` itself when it is empty;
8. the agents' trees ``/var/lib/primo/sshd``, ``/dev/shm/primo-vsys`` and ``/run/primo-sim``
   (simulator slivers' models, logs and results) (everything only);
9. stale ``agent.pid`` files of the data directories we know.

:func:`find` lists those objects (a dry run), :func:`remove` removes a list, :func:`clean` does
both. A :class:`Scope` narrows what is matched (tests use it to clean only what they made).
The process helpers here (:func:`stop_process`, :func:`running_agent`) are shared with
:mod:`primogeni.substrate.embedded`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from primogeni.agent.names import SIM_ROOT, VSYS_ROOT, sim_root, vsys_root
from primogeni.emu import cgroups as cg
from primogeni.emu import links, netns, sshd
from primogeni.emu import sys as esys
from primogeni.errors import EmuError

AGENT_MODULE = "primogeni.cli.main"
STOP_TIMEOUT = 5.0  # seconds an agent gets between SIGTERM and SIGKILL


# -- processes -------------------------------------------------------------------------------


def argv_of(pid: int) -> list[str] | None:
    """The command line of ``pid`` (None when it is gone or a kernel thread)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]] or None


def agent_config_of(argv: list[str]) -> str | None:
    """The ``--config`` of a ``primo agent`` command line, else None (not an agent)."""
    for i, arg in enumerate(argv[:-1]):
        if (os.path.basename(arg) == "primo" or arg == AGENT_MODULE) and argv[i + 1] == "agent":
            rest = argv[i + 2:]
            for j, opt in enumerate(rest):
                if opt == "--config" and j + 1 < len(rest):
                    return rest[j + 1]
                if opt.startswith("--config="):
                    return opt.split("=", 1)[1]
            return None
    return None


def _resolve(pid: int, path: str) -> Path:
    if os.path.isabs(path):
        return Path(path)
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")) / path
    except OSError:
        return Path(path)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not; one that is our child is reaped here)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def agents(under: Path | None = None) -> dict[int, Path]:
    """Running ``primo agent`` processes: pid → config file (only configs below ``under`` if given)."""
    found = {}
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        pid = int(entry)
        argv = argv_of(pid)
        config = agent_config_of(argv) if argv else None
        if config is None or not alive(pid):
            continue
        path = _resolve(pid, config)
        if under is not None and not path.is_relative_to(under):
            continue
        found[pid] = path
    return found


def running_agent(pid_file: Path, config: Path) -> int | None:
    """The pid in ``pid_file`` if that process is alive and is ``primo agent --config CONFIG``."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    argv = argv_of(pid)
    running = agent_config_of(argv) if argv else None
    if running is None or not alive(pid):
        return None
    return pid if _resolve(pid, running) == config.absolute() else None


def stop_process(pid: int, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM ``pid``; SIGKILL when it still runs after ``timeout`` s; return once it is gone."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not alive(pid):
                return
            time.sleep(0.02)
    raise EmuError("survived SIGKILL", f"process {pid}")


def kill_netns_processes(name: str, timeout: float = 5.0) -> list[int]:
    """SIGKILL every process in network namespace ``name``; wait until none is left."""
    if not netns.exists(name):
        return []
    killed: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        pids = [p for p in netns.pids(name) if p != os.getpid() and alive(p)]
        if not pids:
            return killed
        if time.monotonic() > deadline:
            raise EmuError(f"processes {pids} survive SIGKILL", name)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            if pid not in killed:
                killed.append(pid)
        time.sleep(0.01)


def netns_entries(prefix: str) -> list[str]:
    """Names in ``/run/netns`` starting with ``prefix``: namespaces, and files a crash left unmounted."""
    try:
        return sorted(n for n in os.listdir(netns.NETNS_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def remove_netns(name: str) -> None:
    """Kill what runs in namespace ``name``, delete its devices (synchronously), unmount and unlink it."""
    if netns.exists(name):
        kill_netns_processes(name)
        with netns.iproute(name) as ipr:
            for dev in links.names(ipr, ""):
                if dev != "lo":
                    links.delete(ipr, dev)
    netns.remove(name)


# -- cgroups -----------------------------------------------------------------------------------


def _hierarchies() -> list[cg.Cgroups]:
    """Every place a ``primo/…`` group can be: the v1 hierarchies and the cgroup2 tree, whichever exist."""
    mounts = cg.parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    found = []
    v1 = {c: m.path for m in mounts if m.version == "v1" for c in m.controllers}
    if v1:
        found.append(cg.Cgroups("v1", v1))
    found += [cg.Cgroups("v2", {"": m.path}) for m in mounts if m.version == "v2"]
    return found


def _group_names(hierarchy: cg.Cgroups, prefix: str) -> list[str]:
    """``hierarchy.names(prefix)``, again when a group vanished while it was being listed (agents remove them)."""
    for _ in range(20):
        try:
            return hierarchy.names(prefix)
        except FileNotFoundError:
            time.sleep(0.01)
    return hierarchy.names(prefix)


def remove_groups(hierarchy: cg.Cgroups, prefix: str) -> list[str]:
    """Remove the groups whose names start with ``prefix`` (deepest first, processes killed); their names."""
    removed = []
    for name in sorted(_group_names(hierarchy, prefix), key=lambda n: -n.count("/")):
        group = hierarchy.find(name)
        if group is not None:
            group.remove()
            removed.append(name)
    return removed


def agent_trees(node: str, state_dir: Path) -> list[tuple[str, Path]]:
    """The directory trees an agent keeps outside its state directory, named for a report: its sshd
    files, its vsys FIFOs, its simulations (``substrate down`` removes them with the node)."""
    return [("sshd files", sshd.conf_root(node, state_dir)), ("vsys FIFOs", vsys_root(state_dir)),
            ("simulations", sim_root(state_dir))]


def remove_node_objects(node: str, log: Callable[[str], None] = lambda s: None) -> list[str]:
    """Remove node ``node``'s slivers: netns ``primo-<node>-*`` (and their processes), cgroups ``primo/<node>-*``."""
    removed = []
    for name in netns_entries(f"primo-{node}-"):
        remove_netns(name)
        removed.append(f"netns {name}")
    for hierarchy in _hierarchies():
        for name in remove_groups(hierarchy, f"{cg.PREFIX}/{node}-"):
            removed.append(f"cgroup {name} ({hierarchy.version})")
    return removed


# -- finding and removing everything ----------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """What :func:`find` matches; the defaults are everything PrimoGENI makes."""

    prefix: str = "primo"  # namespaces, root-namespace links, nftables tables
    cgroup_prefix: str = f"{cg.PREFIX}/"  # groups below primo/ (the default also removes primo/ once empty)
    agents_under: Path | None = None  # only agents whose --config is below this directory (None: any)
    vsys: Path | None = Path("/vsys")  # where slivers' vsys directories are mounted (None: skip)
    homes: tuple[Path, ...] = ()  # data directories whose stale agent.pid files go
    tables_netns: str | None = None  # where to look for nftables tables (None: the root namespace)

    @property
    def everything(self) -> bool:
        return self.cgroup_prefix == f"{cg.PREFIX}/"


@dataclass(frozen=True)
class Item:
    """One object :func:`find` found; ``str(item)`` names it for the report."""

    kind: str  # agent | process | nft | link | netns | cgroup | mount | dir | tree | pidfile
    name: str
    pid: int = 0
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.name}" + (f" ({self.detail})" if self.detail else "")


def _mounts_under(root: Path) -> list[Path]:
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = Path(line.split()[4].encode().decode("unicode_escape"))
        if point == root or point.is_relative_to(root):
            found.append(point)
    return sorted(set(found), key=lambda p: -len(p.parts))


def _tables(scope: Scope) -> list[Item]:
    from primogeni.emu.nft import Nft, available

    if not available() or (scope.tables_netns is not None and not netns.exists(scope.tables_netns)):
        return []
    with Nft(scope.tables_netns) as nft:
        listed = nft.list_json("tables")
    found = []
    for entry in listed:
        table = entry.get("table", {})
        if str(table.get("name", "")).startswith(scope.prefix):
            found.append(Item("nft", f"{table['family']} {table['name']}",
                              detail=f"in {scope.tables_netns}" if scope.tables_netns else "root namespace"))
    return found


def find(scope: Scope = Scope()) -> list[Item]:
    """Every object :func:`remove` would remove, in that order."""
    running = sorted(agents(scope.agents_under).items())
    items = [Item("agent", str(config), pid, f"pid {pid}") for pid, config in running]
    namespaces = netns_entries(scope.prefix)
    agent_pids = {i.pid for i in items}
    for name in namespaces:
        try:
            inside = netns.pids(name)
        except EmuError:  # removed meanwhile (by its agent, say)
            continue
        for pid in inside:
            if pid not in agent_pids and pid != os.getpid() and alive(pid):
                argv = argv_of(pid) or ["?"]
                items.append(Item("process", str(pid), pid, f"{os.path.basename(argv[0])} in {name}"))
    items += _tables(scope)
    with netns.iproute(None) as ipr:
        items += [Item("link", name, detail="root namespace") for name in links.names(ipr, scope.prefix)]
    items += [Item("netns", name, detail="" if netns.exists(name) else "stale file") for name in namespaces]
    for hierarchy in _hierarchies():
        names = _group_names(hierarchy, scope.cgroup_prefix)
        items += [Item("cgroup", name, detail=hierarchy.version) for name in names]
        if scope.everything:
            tops = {base / cg.PREFIX for base in hierarchy.bases.values()}
            items += [Item("cgroup", str(top), detail="top") for top in sorted(tops) if top.is_dir()]
    if scope.vsys is not None:
        items += [Item("mount", str(point)) for point in _mounts_under(scope.vsys)]
        if scope.vsys.is_dir():
            items.append(Item("dir", str(scope.vsys), detail="if empty"))
    if scope.everything and sshd.ROOT.is_dir():
        items.append(Item("tree", str(sshd.ROOT), detail="agents' sshd keys and configuration"))
    if scope.everything and VSYS_ROOT.is_dir() and not VSYS_ROOT.is_symlink():
        items.append(Item("tree", str(VSYS_ROOT), detail="agents' vsys FIFOs"))
    if scope.everything and SIM_ROOT.is_dir() and not SIM_ROOT.is_symlink():
        items.append(Item("tree", str(SIM_ROOT), detail="agents' simulations: models, logs, results"))
    for home in scope.homes:
        for pid_file in sorted((home / "substrate").glob("*/agent.pid")):
            holder = running_agent(pid_file, pid_file.with_name("agent.toml"))
            if holder is None or holder in agent_pids:  # stale, or its agent goes now
                items.append(Item("pidfile", str(pid_file)))
    return _dedupe(items)


def _dedupe(items: list[Item]) -> list[Item]:
    return list(dict.fromkeys(items))


def remove(items: Iterable[Item], log: Callable[[str], None] = lambda s: None) -> list[Item]:
    """Remove ``items`` (as :func:`find` lists them); the ones actually removed.

    A failure is reported through ``log`` and the rest still goes; nothing not listed is touched.
    """
    done: list[Item] = []
    hierarchies = {h.version: h for h in _hierarchies()}
    todo = list(items)
    for item in [i for i in todo if i.kind == "agent"]:  # SIGTERM all first: they stop in parallel
        _signal(item.pid, signal.SIGTERM)
    for item in todo:
        try:
            if _remove_one(item, hierarchies):
                done.append(item)
                log(f"removed {item}")
        except (EmuError, OSError) as exc:
            log(f"warning: cannot remove {item}: {exc}")
    return done


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _remove_one(item: Item, hierarchies: dict[str, cg.Cgroups]) -> bool:
    if item.kind == "agent":
        if not alive(item.pid):
            return True
        stop_process(item.pid)
        return True
    if item.kind == "process":
        _signal(item.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while alive(item.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        return not alive(item.pid)
    if item.kind == "nft":
        from primogeni.emu.nft import Nft

        netns_name = None if item.detail == "root namespace" else item.detail.removeprefix("in ")
        with Nft(netns_name) as nft:
            nft.run(f"delete table {item.name}")
        return True
    if item.kind == "link":
        with netns.iproute(None) as ipr:
            if not links.exists(ipr, item.name):
                return False  # went with its veth peer
            links.delete(ipr, item.name)
        return True
    if item.kind == "netns":
        remove_netns(item.name)
        return True
    if item.kind == "cgroup":
        if item.detail == "top":
            try:
                os.rmdir(item.name)
            except OSError as exc:
                if exc.errno in (errno.ENOENT,):
                    return False
                raise EmuError(f"cannot remove: {exc.strerror}", item.name) from exc
            return True
        group = hierarchies[item.detail].find(item.name)
        if group is None:
            return False  # a child of a group removed before it
        group.remove()
        return True
    if item.kind == "mount":
        esys.umount(item.name, esys.MNT_DETACH)
        return True
    if item.kind == "tree":
        shutil.rmtree(item.name)
        return True
    if item.kind == "dir":
        try:
            os.rmdir(item.name)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT, errno.EBUSY):
                return False  # not empty: not only ours
            raise
        return True
    if item.kind == "pidfile":
        Path(item.name).unlink(missing_ok=True)
        return True
    raise EmuError(f"unknown kind {item.kind!r}", item.name)


def clean(scope: Scope = Scope(), *, dry_run: bool = False,
          log: Callable[[str], None] = lambda s: None) -> list[Item]:
    """Find and (unless ``dry_run``) remove; what was found (dry run) or removed."""
    items = find(scope)
    if dry_run:
        return items
    return remove(items, log)


__all__ = ["Item", "Scope", "agent_config_of", "agent_trees", "agents", "alive", "argv_of", "clean", "find",
           "kill_netns_processes", "netns_entries", "remove", "remove_groups", "remove_netns", "remove_node_objects",
           "running_agent", "stop_process"]
