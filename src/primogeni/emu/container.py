"""A sliver's container: a forked process tree with its own network, mount, UTS, IPC and PID namespaces.

No runtime and no ``exec`` per container. On first use the agent forks a *forker*: a single-threaded
copy of itself that closes the agent's descriptors, blocks every signal (the agent's handlers never
run in it or its children), makes a template mount namespace (the host's without ``/run/netns``, so
no container pins another's network namespace) and serves requests over a socketpair. Per
container it calls ``unshare(CLONE_NEWPID)`` and forks PID 1, which
unshares its network namespace and binds it on ``/run/netns/<name>`` in the host's mount namespace
(on :func:`restart` it joins that one: moved-in interfaces survive a reboot) and sets ``lo`` up;
enters the template and unshares mount, UTS and IPC; sets the hostname; binds the vsys directory on
``/vsys``; *then* mounts private tmpfs on ``/tmp``, ``/home`` (users' homes), ``/run`` (with
``/run/sshd``) and ``/dev/shm``; writes ``hosts``, ``passwd`` and ``group`` into ``/run/primo/`` and
binds them over ``/etc`` (a new file on this host's disk costs ~1 ms); mounts ``/proc``; closes
every inherited descriptor; reports ``ok`` through a pipe; joins the cgroup (after reporting: the
first cgroup move after a quiet spell waits for an RCU grace period); and reaps orphans forever.
SIGKILL ends it, and the kernel then kills its whole PID namespace.

Why a forker: forking the big multi-threaded agent copies its page tables each time, and every
container then shares pages the agent keeps writing: that doubled time and memory per container.
The forker stays idle (in the agent's main network namespace) and reaps the PID 1s it forked.
Failures come back naming the step, raised as :class:`EmuError`; :func:`create` removes what it
made. The agent writes ``run_dir/<name>.pid`` (PID 1's host pid, the cgroup) for :func:`attach`.

Programs enter with ``nsenter`` and run without ``CAP_SYS_ADMIN`` & co
(:mod:`primogeni.emu.container_exec`, re-exported here: ``exec_argv``, ``spawn``, ``run``).
:func:`destroy_many` kills many containers before waiting for any (the kernel frees their
network namespaces in one batch).
Limits: the file system is the host's but for those mounts (no user namespace: root in a sliver is
root on files); host mounts made after the forker started are not seen inside; ``/vsys`` must
exist on the host (made here)."""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import functools
import gc
import os
import pickle
import select
import shutil
import signal
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from primogeni.emu import netns
from primogeni.emu import sys as esys
from primogeni.emu.cgroups import Cgroup, Cgroups
from primogeni.errors import EmuError, FeatureMissing

DROPPED_CAPS = ("sys_admin", "sys_module", "sys_ptrace", "sys_rawio", "sys_boot")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
VSYS_MOUNT = "/vsys"
READY_TIMEOUT_S = 10.0
KILL_TIMEOUT_S = 10.0

_IFREQ = "16sH14x"  # struct ifreq with ifr_flags
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
_MAXFD = os.sysconf("SC_OPEN_MAX")
_ALL_SIGNALS = frozenset(signal.valid_signals())
_RUN_FILES = "/run/primo"  # inside the container (its private /run)
_ETC = ("hosts", "passwd", "group")
_TMPFS = (("/tmp", "mode=1777"), ("/home", "mode=755"), ("/run", "mode=755"), ("/dev/shm", "mode=1777"))
_JOIN = 'while [ "$1" != -- ]; do echo 0 > "$1" || exit 125; shift; done; shift; exec "$@"'


@dataclass(frozen=True)
class ContainerSpec:
    name: str  # also the netns name: "primo-<node>-<slot>" -> /run/netns/<name>
    hostname: str
    run_dir: Path  # where the agent keeps <name>.pid (PID 1's host pid and the cgroup name)
    hosts: tuple[tuple[str, str], ...] = ()  # (hostname, address) lines for its /etc/hosts
    users: tuple[tuple[str, int], ...] = ()  # (login name, uid) added to /etc/passwd and /etc/group
    vsys_dir: Path | None = None  # bound at /vsys inside
    cgroup: str | None = None  # "primo/<x>", joined by every process of the container
    cpu_percent: int = 0  # percent of one core, 0 = no limit (needs cgroup)
    memory_mb: int = 0  # 0 = no limit (needs cgroup)


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
    """The host's ``/etc/passwd`` or ``/etc/group`` lines."""
    with contextlib.suppress(FileNotFoundError):
        return [line for line in Path(path).read_text().splitlines() if line.strip()]
    return []


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


def _write_pid_file(spec: ContainerSpec, pid: int) -> None:
    path = _pid_file(spec.name, spec.run_dir)
    tmp = path.with_name(path.name + ".tmp")
    try:
        Path(spec.run_dir).mkdir(parents=True, exist_ok=True)
        tmp.write_text(f"{pid}\n{spec.cgroup or ''}\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise EmuError(f"writing {path}: {exc}", what=spec.name) from exc


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


@dataclass(frozen=True)
class _Plan:
    netns: str
    join: bool  # join the existing namespace (restart) instead of making one
    hostname: str
    procs: tuple[str, ...]  # cgroup.procs files to write "0" to
    vsys: str | None
    homes: tuple[tuple[str, int], ...]  # (/home/<user>, uid)
    etc: tuple[tuple[str, str], ...]  # (name, text) for /run/primo/<name>, bound on /etc/<name>


def _init(plan: _Plan, mntns: int, r: int, w: int) -> None:
    """PID 1 of the container; never returns."""
    step, code = "start", 1
    try:
        os.close(r)
        if plan.join:
            step = f"join netns {plan.netns}"
            fd = os.open(plan.netns, os.O_RDONLY)
            esys.setns(fd, esys.CLONE_NEWNET)
            os.close(fd)
        else:
            step = "unshare netns"
            esys.unshare(esys.CLONE_NEWNET)
            step = f"bind netns on {plan.netns}"
            esys.mount("/proc/self/ns/net", plan.netns, None, esys.MS_BIND)
            step = "set lo up"
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                got = fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, struct.pack(_IFREQ, b"lo", 0))
                flags = struct.unpack(_IFREQ, got)[1] | _IFF_UP
                fcntl.ioctl(sock.fileno(), _SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags))
        step = "enter the template mount namespace"
        esys.setns(mntns, esys.CLONE_NEWNS)
        step = "unshare mount/uts/ipc namespaces"
        esys.unshare(esys.CLONE_NEWNS | esys.CLONE_NEWUTS | esys.CLONE_NEWIPC)
        step = "sethostname"
        esys.sethostname(plan.hostname)
        if plan.vsys is not None:
            step = f"bind {plan.vsys} on {VSYS_MOUNT}"  # before /tmp and /run hide where it may live
            esys.mount(plan.vsys, VSYS_MOUNT, None, esys.MS_BIND)
        for target, options in _TMPFS:
            step = f"mount {target}"
            esys.mount("tmpfs", target, "tmpfs", esys.MS_NOSUID | esys.MS_NODEV, options)
        for home, uid in plan.homes:
            step = f"make {home}"
            os.mkdir(home, 0o755)
            os.chown(home, uid, uid)
        step = "make /run/sshd"  # sshd's privilege separation directory
        os.mkdir("/run/sshd", 0o755)
        os.mkdir(_RUN_FILES, 0o755)
        for kind, text in plan.etc:
            step = f"write /etc/{kind}"
            fd = os.open(f"{_RUN_FILES}/{kind}", os.O_WRONLY | os.O_CREAT, 0o644)
            os.write(fd, text.encode())
            os.close(fd)
            esys.mount(f"{_RUN_FILES}/{kind}", f"/etc/{kind}", None, esys.MS_BIND)
        step = "mount /proc"
        esys.mount("proc", "/proc", "proc", esys.MS_NOSUID | esys.MS_NODEV | esys.MS_NOEXEC)
        step = "close inherited descriptors"
        os.closerange(3, w)
        os.closerange(w + 1, _MAXFD)
        os.write(w, b"ok\n")
        os.close(w)
        step = ""
        for procs in plan.procs:  # failing, PID 1 exits: alive() turns False
            fd = os.open(procs, os.O_WRONLY)
            os.write(fd, b"0")
            os.close(fd)
        while True:  # reap orphans; SIGCHLD is blocked (like every signal) and waited for
            with contextlib.suppress(ChildProcessError):
                while os.waitpid(-1, os.WNOHANG)[0] > 0:
                    pass
            signal.sigwait({signal.SIGCHLD})
    except BaseException as exc:  # reported to the forker through the pipe, then _exit
        if step:
            try:
                os.write(w, f"error {step}: {exc}\n".encode(errors="replace"))
            except OSError:
                code = 2
    finally:
        os._exit(code)


def _fork_init(plan: _Plan, mntns: int, pidns: int) -> str:
    """In the forker: fork PID 1 into a new PID namespace; answers ``PID\\nREPORT``."""
    r, w = os.pipe()
    try:
        esys.unshare(esys.CLONE_NEWPID)  # for the forker's next child only
        try:
            pid = os.fork()
        finally:
            if os.getpid() != 1:
                esys.setns(pidns, esys.CLONE_NEWPID)
        if pid == 0:
            _init(plan, mntns, r, w)
        os.close(w)
        w = -1
        chunks, deadline = [], time.monotonic() + READY_TIMEOUT_S
        while True:  # until PID 1 closes its end
            if not select.select([r], [], [], max(0.0, deadline - time.monotonic()))[0]:
                chunks.append(b"error wait for PID 1: timed out\n")
                break
            data = os.read(r, 4096)
            if not data:
                break
            chunks.append(data)
        return f"{pid}\n" + b"".join(chunks).decode(errors="replace")
    except OSError as exc:
        return f"0\nerror fork PID 1: {exc}"
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def _forker(sock: int, agent: int) -> None:
    """The forker's life: set up, then answer ``("init", plan)`` and ``("reap", pid)`` until EOF."""
    code = 0
    try:
        gc.disable()  # nothing here needs it, and collections would copy the agent's pages
        signal.pthread_sigmask(signal.SIG_SETMASK, _ALL_SIGNALS)  # the agent's handlers must not run here
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
        os.write(sock, b"ready")
        while True:
            ready = select.select([sock], [], [], 1.0)[0]
            with contextlib.suppress(ChildProcessError):
                while os.waitpid(-1, os.WNOHANG)[0] > 0:  # PID 1s that died (killed, or failed)
                    pass
            if not ready:
                continue
            data = os.read(sock, 1 << 20)
            if not data:
                break  # the agent is gone
            kind, arg = pickle.loads(data)
            if kind == "init":
                os.write(sock, _fork_init(arg, mntns, pidns).encode())
            else:  # "reap" PID 1s (a pid or a list) that were seen to exit
                for pid in arg if isinstance(arg, list) else [arg]:
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, os.WNOHANG)
                os.write(sock, b"ok")
    except BaseException as exc:  # reported to the agent, then _exit
        code = 1
        with contextlib.suppress(OSError):
            os.write(sock, f"error {exc}".encode(errors="replace"))
    finally:
        os._exit(code)


class _Forker:
    """The agent's handle on its forker: started on first use, one request at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._pid = self._owner = 0  # _owner: the pid that started it (a forked agent needs its own)

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


def _start(spec: ContainerSpec, *, join: bool) -> Container:
    _check_spec(spec)
    target = netns.path(spec.name)
    group = cgroups().create(spec.cgroup, cpu_percent=spec.cpu_percent, memory_mb=spec.memory_mb) \
        if spec.cgroup else None
    if spec.vsys_dir is not None:
        os.makedirs(VSYS_MOUNT, exist_ok=True)
    if not join:
        netns._prepare_dir()
        try:
            os.close(os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
        except FileExistsError:
            if _netns_id(target) is not None:
                raise EmuError("a network namespace of this name exists already", what=spec.name) from None
    plan = _Plan(netns=str(target), join=join, hostname=spec.hostname,
                 procs=group.procs_files if group is not None else (),
                 vsys=str(spec.vsys_dir) if spec.vsys_dir is not None else None,
                 homes=tuple((f"/home/{user}", uid) for user, uid in spec.users), etc=tuple(etc_files(spec).items()))
    pid = 0
    try:
        answer = _forker_handle.call("init", plan) or ""
        head, _, report = answer.partition("\n")
        pid = int(head) if head.isdigit() else 0
        netns_id = _netns_id(target)
        if report.strip() != "ok":
            raise EmuError((report.strip() or "no report").splitlines()[-1].removeprefix("error "), what=spec.name)
        if netns_id is None or _proc_netns(pid) != netns_id:
            raise EmuError("PID 1 is not in the bound network namespace", what=spec.name)
        _write_pid_file(spec, pid)
        return Container(spec.name, pid, target, spec.cgroup, netns_id)
    except EmuError:  # undo what this call made
        if pid:
            _kill(pid, None)
        _pid_file(spec.name, spec.run_dir).unlink(missing_ok=True)
        if not join:
            netns.remove(target)
            if group is not None:
                group.remove()
        raise


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
        _forker_handle.call("reap", pid, start=False)


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
from primogeni.emu.container_exec import exec_argv, run, spawn  # noqa: E402

__all__ = ["Container", "ContainerSpec", "attach", "cgroups", "close_forker", "create", "destroy", "destroy_many",
           "etc_files", "exec_argv", "restart", "run", "spawn"]
