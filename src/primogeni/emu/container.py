"""A sliver's container: a forked process tree with its own network, mount, UTS, IPC and PID namespaces.

No runtime and no ``exec`` per container. On first use the agent forks a *forker*: a child that
closes the agent's descriptors, blocks every signal (the agent's handlers never run in it or its
children), joins the agent's main network namespace, makes a template mount namespace (the host's
without ``/run/netns``, so no container pins another's network namespace), then runs a fresh,
small interpreter (``exec``, :mod:`primogeni.emu.container_init`) that serves requests over a
socketpair. Per container it calls ``unshare(CLONE_NEWPID)`` and forks PID 1, which unshares its
network namespace and binds it on ``/run/netns/<name>`` (on :func:`restart` it joins that one:
moved-in interfaces survive a reboot), sets ``lo`` up and writes the spec's sysctls; enters the
template and unshares mount, UTS and IPC; sets the hostname; binds the vsys directory on
``/vsys``; *then* mounts private tmpfs on ``/tmp``, ``/home`` (users' homes), ``/run`` (with
``/run/sshd``) and ``/dev/shm``; writes ``hosts``, ``passwd`` and ``group`` into ``/run/primo/`` and
binds them over ``/etc``; mounts ``/proc``; closes every inherited descriptor; reports ``ok``
through a pipe; joins the cgroup (after reporting: the first cgroup move after a quiet spell waits
for an RCU grace period); and reaps orphans forever. SIGKILL ends it, and the kernel then kills
its whole PID namespace.

Why a small forker: forking the big multi-threaded agent copies its page tables each time (~1.5 ms
per container), and every container then shares pages the agent keeps writing. The forker stays
idle (in the agent's main network namespace) and reaps the PID 1s it forked. Failures come back
naming the step, raised as :class:`EmuError`; :func:`create` removes what it made. The agent
writes ``run_dir/<name>.pid`` (PID 1's host pid, the cgroup) for :func:`attach`.
:func:`create_many` asks for many containers in one request and yields each as it is ready, so
the caller works on one while the forker makes the next (two cores).

Programs enter with ``nsenter`` and run without ``CAP_SYS_ADMIN`` & co
(:mod:`primogeni.emu.container_exec`, re-exported here: ``exec_argv``, ``net_argv``, ``spawn``, ``run``).
:func:`destroy_many` kills many containers before waiting for any (the kernel frees their
network namespaces in one batch).
Limits: the file system is the host's but for those mounts (no user namespace: root in a sliver is
root on files); host mounts made after the forker started are not seen inside; ``/vsys`` must
exist on the host (made here)."""

from __future__ import annotations

import atexit
import contextlib
import errno
import functools
import gc
import os
import pickle
import select
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from primogeni.emu import container_init as _ci
from primogeni.emu import netns
from primogeni.emu import sys as esys
from primogeni.emu.cgroups import Cgroup, Cgroups
from primogeni.errors import EmuError, FeatureMissing

DROPPED_CAPS = ("sys_admin", "sys_module", "sys_ptrace", "sys_rawio", "sys_boot")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
VSYS_MOUNT = _ci.VSYS_MOUNT
READY_TIMEOUT_S = _ci.READY_TIMEOUT_S
KILL_TIMEOUT_S = 10.0
BATCH = 16  # containers asked of the forker in one request by create_many

_MAXFD = os.sysconf("SC_OPEN_MAX")
_ALL_SIGNALS = frozenset(signal.valid_signals())
_ETC = ("hosts", "passwd", "group")
# the lean forker: a fresh interpreter (no site, no environment) that loads only container_init
_LEAN = (sys.executable, "-I", "-S", "-c")
_SRC = str(Path(_ci.__file__).resolve().parents[2])  # the directory holding the primogeni package
_SERVE = ("import sys; sys.path.insert(0, {src!r}); from primogeni.emu.container_init import serve; "
          "serve({sock}, {mntns}, {pidns})")
_JOIN = 'while [ "$1" != -- ]; do echo 0 > "$1" || exit 125; shift; done; shift; exec "$@"'


@dataclass(frozen=True)
class ContainerSpec:
    name: str  # also the netns name: "primo-<node>-<slot>" -> /run/netns/<name>
    hostname: str
    run_dir: Path  # where the agent keeps <name>.pid (PID 1's host pid and the cgroup name)
    hosts: tuple[tuple[str, str], ...] = ()  # (hostname, address) lines for its /etc/hosts
    users: tuple[tuple[str, int], ...] = ()  # (login name, uid) added to /etc/passwd and /etc/group
    vsys_dir: Path | None = None  # bound at /vsys inside (made when missing)
    cgroup: str | None = None  # "primo/<x>", joined by every process of the container
    cpu_percent: int = 0  # percent of one core, 0 = no limit (needs cgroup)
    memory_mb: int = 0  # 0 = no limit (needs cgroup)
    sysctls: tuple[tuple[str, str], ...] = ()  # ("net.ipv4.ip_local_port_range", "30000 30009"): set by PID 1


@dataclass(frozen=True)
class Container:
    name: str
    pid: int  # host pid of the container's PID 1
    netns_path: Path
    cgroup: str | None = None
    netns_id: tuple[int, int] = (0, 0)  # (st_dev, st_ino) of its network namespace

    def alive(self) -> bool:
        """PID 1 still runs, and in this container's network namespace (not a reused pid)."""
        return _proc_netns(self.pid) == self.netns_id and _netns_id(self.netns_path) == self.netns_id


@functools.cache
def cgroups() -> Cgroups:
    """The machine's cgroup layout, detected once per process."""
    return Cgroups.detect()


@functools.cache
def _tool(name: str) -> str:
    found = shutil.which(name, path=DEFAULT_PATH)
    if found is None:
        raise FeatureMissing(f"{name} is not installed (Debian package util-linux)", what=name)
    return found


def _check_spec(spec: ContainerSpec) -> None:
    if not spec.name.startswith("primo") or "/" in spec.name or len(spec.name) > 64:
        raise EmuError("container names start with 'primo' and have no '/'", what=spec.name)
    if not spec.hostname or len(spec.hostname) > 64 or any(c in spec.hostname for c in " \t\n/:\0"):
        raise EmuError(f"bad hostname {spec.hostname!r}", what=spec.name)
    for user, uid in spec.users:
        if not user or user == "root" or any(c in user for c in ":\n/ \0") or not 0 < uid < 2**31:
            raise EmuError(f"bad user {user!r} (uid {uid})", what=spec.name)
    for name, address in spec.hosts:
        if not name or not address or any(c.isspace() or c == "#" for c in name + address):
            raise EmuError(f"bad hosts entry {name!r} {address!r}", what=spec.name)
    if (spec.cpu_percent or spec.memory_mb) and not spec.cgroup:
        raise EmuError("CPU or memory limits need a cgroup name", what=spec.name)


def _host_lines(path: str) -> list[str]:
    """The host's ``/etc/passwd`` or ``/etc/group`` lines (read again only when the file changed)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return []
    return list(_read_lines(path, st.st_mtime_ns, st.st_size, st.st_ino))


@functools.lru_cache(maxsize=8)
def _read_lines(path: str, *_version: int) -> tuple[str, ...]:
    with contextlib.suppress(FileNotFoundError):
        return tuple(line for line in Path(path).read_text().splitlines() if line.strip())
    return ()


def etc_files(spec: ContainerSpec) -> dict[str, str]:
    """The container's ``hosts``, ``passwd`` and ``group``: the host's entries plus its own."""
    names = {user for user, _ in spec.users}
    hosts = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    hosts += [f"{address}\t{name}" for name, address in spec.hosts]
    if spec.hostname not in {name for name, _ in spec.hosts}:
        hosts.append(f"127.0.1.1\t{spec.hostname}")
    passwd = [line for line in _host_lines("/etc/passwd") if line.split(":", 1)[0] not in names]
    passwd += [f"{user}:x:{uid}:{uid}::/home/{user}:/bin/bash" for user, uid in spec.users]
    group = [line for line in _host_lines("/etc/group") if line.split(":", 1)[0] not in names]
    group += [f"{user}:x:{uid}:" for user, uid in spec.users]
    return {kind: "\n".join(lines) + "\n" for kind, lines in zip(_ETC, (hosts, passwd, group), strict=True)}


def _pid_file(name: str, run_dir: Path) -> Path:
    return Path(run_dir) / f"{name}.pid"


def _read_pid_file(name: str, run_dir: Path) -> tuple[int | None, str | None]:
    """PID 1's host pid and the cgroup name from ``<name>.pid`` (None where missing)."""
    try:
        lines = [*_pid_file(name, run_dir).read_text().splitlines(), "", ""]
    except FileNotFoundError:
        return None, None
    return (int(lines[0]) if lines[0].strip().isdigit() else None), (lines[1].strip() or None)


def _netns_id(path: str | Path) -> tuple[int, int] | None:
    """(st_dev, st_ino) of a namespace (``/proc/PID/ns/net`` or a bind mount), else None."""
    try:
        st = os.stat(path)
        if st.st_dev == os.stat(os.path.dirname(path)).st_dev:
            return None
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _proc_netns(pid: int) -> tuple[int, int] | None:  # None also for a zombie
    return _netns_id(f"/proc/{pid}/ns/net")


def _forker(sock: int, agent: int) -> None:
    """The forked child's setup, before it execs the lean forker (:func:`container_init.serve`)."""
    code = 1
    try:
        gc.disable()  # nothing here needs it, and collections would copy the agent's pages
        signal.pthread_sigmask(signal.SIG_SETMASK, _ALL_SIGNALS)  # kept across exec: no handler runs there
        # the agent's main network namespace: never pin a (node) namespace the forking thread was in
        esys.setns(os.open(f"/proc/{agent}/ns/net", os.O_RDONLY), esys.CLONE_NEWNET)  # fd closed below
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, sock)
        os.closerange(sock + 1, _MAXFD)
        host = os.open("/proc/self/ns/mnt", os.O_RDONLY)
        esys.unshare(esys.CLONE_NEWNS)  # the template: private, without /run/netns
        esys.mount(None, "/", None, esys.MS_REC | esys.MS_PRIVATE)
        try:
            esys.umount(str(netns.NETNS_DIR), esys.MNT_DETACH)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: not a mount point
                raise
        mntns = os.open("/proc/self/ns/mnt", os.O_RDONLY)
        esys.setns(host, esys.CLONE_NEWNS)
        os.close(host)
        pidns = os.open("/proc/self/ns/pid", os.O_RDONLY)
        for fd in (sock, mntns, pidns):
            os.set_inheritable(fd, True)
        os.execv(_LEAN[0], [*_LEAN, _SERVE.format(src=_SRC, sock=sock, mntns=mntns, pidns=pidns)])
    except BaseException as exc:  # reported to the agent, then _exit
        with contextlib.suppress(OSError):
            os.write(sock, f"error {exc}".encode(errors="replace"))
    finally:
        os._exit(code)


class _Forker:
    """The agent's handle on its forker: started on first use, one request at a time (a stream of
    ``init`` answers counts as one request: :meth:`stream`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._pid = self._owner = 0  # _owner: the pid that started it (a forked agent needs its own)
        self._streaming = 0  # the thread that holds the lock for a stream of answers

    def _start(self) -> socket.socket:
        netns._prepare_dir()  # /run/netns must be a shared mount before the template copies it
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        agent = os.getpid()
        pid = os.fork()
        if pid == 0:
            _forker(theirs.fileno(), agent)
        theirs.close()
        if not self._owner:
            atexit.register(self.close, wait=False)
        self._sock, self._pid, self._owner = mine, pid, os.getpid()
        answer = self._receive(mine)
        if answer != "ready":
            self._close()
            raise EmuError(f"the container forker did not start: {answer}")
        return mine

    @staticmethod
    def _receive(sock: socket.socket) -> str:
        if not select.select([sock], [], [], READY_TIMEOUT_S + 5)[0]:
            raise EmuError("the container forker does not answer")
        data = sock.recv(1 << 16)
        if not data:
            raise EmuError("the container forker died")
        return data.decode(errors="replace")

    def _usable(self) -> socket.socket | None:
        """The socket to a live forker of this process, if there is one (a killed one is reaped)."""
        if self._sock is None or self._owner != os.getpid():
            return None
        with contextlib.suppress(ChildProcessError):
            if not os.waitpid(self._pid, os.WNOHANG)[0]:
                return self._sock
        self._sock.close()
        self._sock, self._pid, self._owner = None, 0, 0
        return None

    def call(self, kind: str, arg: Any, *, start: bool = True) -> str | None:
        if self._streaming == threading.get_ident():  # this thread is inside its own stream
            if kind == "reap":
                return None  # the forker reaps every exited child at its next wake-up anyway
            raise EmuError("the container forker is busy with this thread's batch")
        with self._lock:
            sock = self._usable()
            if sock is None:
                if not start:
                    return None
                sock = self._start()
            try:
                sock.send(pickle.dumps((kind, arg)))
                return self._receive(sock)
            except (OSError, EmuError):
                self._close()
                raise

    def stream(self, plans: list[_ci.Plan]) -> Iterator[str]:
        """Ask for many PID 1s in one request; yields each answer as it comes (the forker goes on
        with the next meanwhile). Holds the forker until every answer was taken: consume it all."""
        with self._lock:
            sock = self._usable() or self._start()
            self._streaming = threading.get_ident()
            try:
                sock.send(pickle.dumps(("init", plans)))
                for _ in plans:
                    yield self._receive(sock)
            except (OSError, EmuError):
                self._close()
                raise
            finally:
                self._streaming = 0

    def _close(self) -> None:
        if self._sock is not None and self._owner == os.getpid():
            self._sock.close()
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self._pid, 0)  # it exits on EOF
        self._sock, self._pid, self._owner = None, 0, 0

    def close(self, wait: bool = True) -> None:
        """Stop the forker (it also stops when the agent exits); the containers live on."""
        if self._lock.acquire(blocking=wait):  # at exit, a stuck daemon thread may hold it: skip
            try:
                self._close()
            finally:
                self._lock.release()


_forker_handle = _Forker()
close_forker = _forker_handle.close


@dataclass(frozen=True)
class _Prepared:
    spec: ContainerSpec
    join: bool
    group: Cgroup | None
    plan: _ci.Plan


def _prepare(spec: ContainerSpec, *, join: bool) -> _Prepared:
    """The agent's part before PID 1: checks, the namespace's mount point, the plan. PID 1 makes
    the vsys directory and (cgroup v1) the cgroup, the forker writes the pid file: on the forker's
    core, since each new directory or file costs ~0.5 ms on this host's disk."""
    _check_spec(spec)
    target = netns.path(spec.name)
    sysctls = tuple((netns._sysctl_path(key), str(value)) for key, value in spec.sysctls)
    layout = cgroups()
    mkdirs: tuple[str, ...] = ()
    writes: tuple[tuple[str, str], ...] = ()
    if not spec.cgroup:
        group = None
    elif layout.version == "v1" and not (spec.cpu_percent or spec.memory_mb):  # what Cgroups.create does
        group = layout.group(spec.cgroup)  # no limits, set again in case the group was left from before
        mkdirs = tuple(str(d) for d in group.distinct_dirs)
        writes = tuple((str(path), value) for path, value in group.limit_writes())
    else:
        group = layout.create(spec.cgroup, cpu_percent=spec.cpu_percent, memory_mb=spec.memory_mb)
    if spec.vsys_dir is not None:
        mkdirs += (str(spec.vsys_dir),)
    try:
        Path(spec.run_dir).mkdir(parents=True, exist_ok=True)
        if spec.vsys_dir is not None:
            os.makedirs(VSYS_MOUNT, exist_ok=True)
        if not join:
            netns._prepare_dir()
            try:
                os.close(os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
            except FileExistsError:
                if _netns_id(target) is not None:
                    raise EmuError("a network namespace of this name exists already", what=spec.name) from None
    except OSError as exc:
        raise EmuError(f"cannot prepare: {exc}", what=spec.name) from exc
    plan = _ci.Plan(netns=str(target), join=join, hostname=spec.hostname,
                    procs=group.procs_files if group is not None else (),
                    vsys=str(spec.vsys_dir) if spec.vsys_dir is not None else None,
                    homes=tuple((f"/home/{user}", uid) for user, uid in spec.users),
                    etc=tuple(etc_files(spec).items()), sysctls=sysctls, mkdirs=mkdirs, writes=writes,
                    pid_file=str(_pid_file(spec.name, spec.run_dir)), pid_note=spec.cgroup or "")
    return _Prepared(spec, join, group, plan)


def _finish(prep: _Prepared, answer: str | None) -> Container:
    """Check the forker's answer and write the pid file; on failure undo what was made and raise."""
    spec, target = prep.spec, Path(prep.plan.netns)
    pid = 0
    try:
        if answer is None:
            raise EmuError("the container forker failed before this container", what=spec.name)
        head, _, report = answer.partition("\n")
        pid = int(head) if head.isdigit() else 0
        netns_id = _netns_id(target)
        if report.strip() != "ok":
            raise EmuError((report.strip() or "no report").splitlines()[-1].removeprefix("error "), what=spec.name)
        if netns_id is None or _proc_netns(pid) != netns_id:
            raise EmuError("PID 1 is not in the bound network namespace", what=spec.name)
        return Container(spec.name, pid, target, spec.cgroup, netns_id)
    except EmuError:  # undo what this call made
        if pid:
            _kill(pid, None)
        elif answer is None and _netns_id(target) is not None:  # a PID 1 the forker may have made
            for other in netns.pids(target):
                if other != os.getpid():
                    _kill(other, None)
        _pid_file(spec.name, spec.run_dir).unlink(missing_ok=True)
        if not prep.join:
            netns.remove(target)
            if prep.group is not None:
                prep.group.remove()
        raise


def _start(spec: ContainerSpec, *, join: bool) -> Container:
    prep = _prepare(spec, join=join)
    try:
        answer = _forker_handle.call("init", [prep.plan])
    except (OSError, EmuError):
        with contextlib.suppress(EmuError):
            _finish(prep, None)  # undo
        raise
    return _finish(prep, answer)


def create_many(specs: Sequence[ContainerSpec]) -> Generator[Container | EmuError, None, None]:
    """:func:`create` for many containers, yielded in order as each becomes ready (an
    :class:`EmuError` in place of one that failed, its leftovers removed). The forker makes the
    next containers while the caller works on the one yielded (two cores). Consume it to the end
    (or close it): it holds the forker meanwhile, for at most :data:`BATCH` containers at a time."""
    for first in range(0, len(specs), BATCH):
        prepared: list[_Prepared | EmuError] = []
        for spec in specs[first:first + BATCH]:
            try:
                prepared.append(_prepare(spec, join=False))
            except EmuError as exc:
                prepared.append(exc)
        plans = [p.plan for p in prepared if isinstance(p, _Prepared)]
        answers = _forker_handle.stream(plans) if plans else iter(())
        pending = [p for p in prepared if isinstance(p, _Prepared)]
        try:
            for p in prepared:
                if isinstance(p, EmuError):
                    yield p
                    continue
                pending.pop(0)
                try:
                    answer = next(answers, None)
                except EmuError:
                    answer = None
                try:
                    yield _finish(p, answer)
                except EmuError as exc:
                    yield exc
        finally:  # abandoned midway: take the remaining answers and undo those containers
            for p in pending:
                try:
                    answer = next(answers, None)
                except EmuError:
                    answer = None
                with contextlib.suppress(EmuError):
                    _finish(p, answer)
                    destroy(p.spec.name, p.spec.run_dir)
            if hasattr(answers, "close"):
                answers.close()


def _kill(pid: int, netns_id: tuple[int, int] | None, timeout: float = KILL_TIMEOUT_S) -> None:
    """SIGKILL ``pid`` (if ``netns_id`` is given, only while it is in that namespace), wait, reap."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        if netns_id is not None and _proc_netns(pid) != netns_id:
            return  # a zombie, or the pid now belongs to someone else
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        if not select.select([fd], [], [], timeout)[0]:  # a pidfd is readable once the process exited
            raise EmuError(f"process {pid} did not die within {timeout} s")
    finally:
        os.close(fd)
    with contextlib.suppress(EmuError):  # a PID 1 of an earlier agent (or forker) is init's to reap
        _forker_handle.call("reap", [pid], start=False)


def _stop(name: str, run_dir: Path) -> Cgroup | None:
    """Kill PID 1 (ending its PID namespace) and everything else of the container; returns its cgroup."""
    pid, cgroup = _read_pid_file(name, run_dir)
    target = netns.path(name)
    ident = _netns_id(target)
    if pid is not None and ident is not None and _proc_netns(pid) == ident:
        _kill(pid, ident)
    elif ident is not None:  # PID 1 unknown: whatever runs in the namespace (never ourselves)
        for other in netns.pids(target):
            if other != os.getpid():
                _kill(other, ident)
    group = cgroups().find(cgroup) if cgroup else None
    if group is not None:  # e.g. nsenter processes, which are outside the PID namespace
        group.kill_all()
    return group


def create(spec: ContainerSpec) -> Container:
    """Make the container (its network namespace included) and return once its PID 1 is ready."""
    return _start(spec, join=False)


def attach(name: str, run_dir: Path) -> Container | None:
    """The running container ``name`` (from its pid file), or None when it does not run."""
    pid, cgroup = _read_pid_file(name, run_dir)
    target = netns.path(name)
    ident = _netns_id(target)
    if pid is None or ident is None or _proc_netns(pid) != ident:
        return None
    return Container(name, pid, target, cgroup, ident)


def destroy(name: str, run_dir: Path) -> None:
    """Remove the container: processes, cgroup, network namespace mount and pid file (idempotent)."""
    group = _stop(name, run_dir)
    if group is not None:
        group.remove()
    netns.remove(name)
    _pid_file(name, run_dir).unlink(missing_ok=True)


def destroy_many(names: Sequence[str], run_dir: Path) -> None:
    """:func:`destroy` for many containers (idempotent): every PID 1 gets SIGKILL before any is
    waited for, so the kernel tears their namespaces down together (one batch of cleanup)."""
    killed: dict[str, tuple[int, int, str | None]] = {}  # name -> (pid, pidfd, cgroup)
    try:
        for name in names:
            pid, cgroup = _read_pid_file(name, run_dir)
            ident = _netns_id(netns.path(name))
            if pid is None or ident is None:
                continue
            with contextlib.suppress(ProcessLookupError):
                fd = os.pidfd_open(pid)
                if _proc_netns(pid) != ident:  # a zombie, or a reused pid
                    os.close(fd)
                    continue
                killed[name] = (pid, fd, cgroup)
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
        deadline = time.monotonic() + KILL_TIMEOUT_S
        for name, (pid, fd, _) in killed.items():  # a pidfd is readable once the process exited
            if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise EmuError(f"process {pid} did not die within {KILL_TIMEOUT_S} s", what=name)
    finally:
        for _, fd, _ in killed.values():
            os.close(fd)
    with contextlib.suppress(EmuError):
        _forker_handle.call("reap", [pid for pid, _, _ in killed.values()], start=False)
    for name in names:
        if name not in killed:  # PID 1 unknown or dead: the one-by-one way (it searches /proc)
            destroy(name, run_dir)
            continue
        cgroup = killed[name][2]
        group = cgroups().find(cgroup) if cgroup else None
        if group is not None:  # e.g. nsenter processes, which are outside the PID namespace
            group.kill_all()
            group.remove()
        netns.remove(name)
        _pid_file(name, run_dir).unlink(missing_ok=True)


def restart(spec: ContainerSpec) -> Container:
    """Reboot: kill every process and PID 1, then a new PID 1 in the *same* network namespace."""
    old = _stop(spec.name, spec.run_dir)
    if old is not None and old.name != spec.cgroup:
        old.remove()
    return _start(spec, join=_netns_id(netns.path(spec.name)) is not None)


# programs in a container: emu/container_exec.py (re-exported here; it uses the names above)
from primogeni.emu.container_exec import exec_argv, net_argv, run, spawn  # noqa: E402

__all__ = ["Container", "ContainerSpec", "attach", "cgroups", "close_forker", "create", "create_many", "destroy",
           "destroy_many", "etc_files", "exec_argv", "net_argv", "restart", "run", "spawn"]
