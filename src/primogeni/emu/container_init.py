"""The container forker's own program and each container's PID 1 (:mod:`primogeni.emu.container`).

The agent forks, the child sets itself up (the agent's main network namespace, descriptors, the
template mount namespace) and then ``exec``: a fresh interpreter that runs :func:`serve` with
only this module and :mod:`primogeni.emu.sys` loaded: forking that small process for each PID 1
costs ~0.3 ms, where forking a copy of the agent (its page tables, its many mapped pages) cost
~1.5-2 ms. Keep the imports here minimal (no pyroute2, no dataclasses).

Protocol over the SOCK_SEQPACKET socket, one pickled ``(kind, arg)`` per request:

- ``("init", [Plan, ...])``: fork PID 1 for each plan in order; one answer message per plan,
  sent as soon as that PID 1 reported (``"PID\\nok"`` or ``"PID\\nerror <step>: <reason>"``), so the
  agent can work on one container while the next is being made;
- ``("reap", [pid, ...])``: reap PID 1s the agent saw exit; answers ``"ok"``.

EOF on the socket (the agent closed it or died) ends the forker.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickle
import select
import signal
import socket
import struct
import time
from typing import NamedTuple

from primogeni.emu import sys as esys

VSYS_MOUNT = "/vsys"
READY_TIMEOUT_S = 10.0
RUN_FILES = "/run/primo"  # inside the container (its private /run)
TMPFS = (("/tmp", "mode=1777"), ("/home", "mode=755"), ("/run", "mode=755"), ("/dev/shm", "mode=1777"))

_IFREQ = "16sH14x"  # struct ifreq with ifr_flags
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
_MAXFD = os.sysconf("SC_OPEN_MAX")


class Plan(NamedTuple):
    """What PID 1 does, computed by the agent (PID 1 reads no agent state)."""

    netns: str  # /run/netns/<name>
    join: bool  # join the existing namespace (restart) instead of making one
    hostname: str
    procs: tuple[str, ...]  # cgroup.procs files to write "0" to
    vsys: str | None
    homes: tuple[tuple[str, int], ...]  # (/home/<user>, uid)
    etc: tuple[tuple[str, str], ...]  # (name, text) for /run/primo/<name>, bound on /etc/<name>
    sysctls: tuple[tuple[str, str], ...] = ()  # (/proc/sys/net/... path, value), written in its netns
    mkdirs: tuple[str, ...] = ()  # host directories to make first (its cgroup's, its vsys directory)
    writes: tuple[tuple[str, str], ...] = ()  # (host file, value) written then (the cgroup's limits)
    pid_file: str | None = None  # written by the forker: "<PID 1's host pid>\n<pid_note>\n"
    pid_note: str = ""


def _set_lo_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        got = fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, struct.pack(_IFREQ, b"lo", 0))
        flags = struct.unpack(_IFREQ, got)[1] | _IFF_UP
        fcntl.ioctl(sock.fileno(), _SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags))


def init(plan: Plan, mntns: int, r: int, w: int) -> None:
    """PID 1 of the container; never returns."""
    step, code = "start", 1
    try:
        os.close(r)
        for path in plan.mkdirs:  # here, not in the agent: a new directory costs ~0.5 ms on ext4
            step = f"make {path}"
            os.makedirs(path, exist_ok=True)
        for path, value in plan.writes:
            step = f"write {value} to {path}"
            fd = os.open(path, os.O_WRONLY)
            os.write(fd, value.encode())
            os.close(fd)
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
            _set_lo_up()
        for path, value in plan.sysctls:  # /proc/sys/net answers for the opener's network namespace
            step = f"set {path} to {value}"
            fd = os.open(path, os.O_WRONLY)
            os.write(fd, value.encode())
            os.close(fd)
        step = "enter the template mount namespace"
        esys.setns(mntns, esys.CLONE_NEWNS)
        step = "unshare mount/uts/ipc namespaces"
        esys.unshare(esys.CLONE_NEWNS | esys.CLONE_NEWUTS | esys.CLONE_NEWIPC)
        step = "sethostname"
        esys.sethostname(plan.hostname)
        if plan.vsys is not None:
            step = f"bind {plan.vsys} on {VSYS_MOUNT}"  # before /tmp and /run hide where it may live
            esys.mount(plan.vsys, VSYS_MOUNT, None, esys.MS_BIND)
        for target, options in TMPFS:
            step = f"mount {target}"
            esys.mount("tmpfs", target, "tmpfs", esys.MS_NOSUID | esys.MS_NODEV, options)
        for home, uid in plan.homes:
            step = f"make {home}"
            os.mkdir(home, 0o755)
            os.chown(home, uid, uid)
        step = "make /run/sshd"  # sshd's privilege separation directory
        os.mkdir("/run/sshd", 0o755)
        os.mkdir(RUN_FILES, 0o755)
        for kind, text in plan.etc:
            step = f"write /etc/{kind}"
            fd = os.open(f"{RUN_FILES}/{kind}", os.O_WRONLY | os.O_CREAT, 0o644)
            os.write(fd, text.encode())
            os.close(fd)
            esys.mount(f"{RUN_FILES}/{kind}", f"/etc/{kind}", None, esys.MS_BIND)
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


def fork_init(plan: Plan, mntns: int, pidns: int) -> str:
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
            init(plan, mntns, r, w)
        os.close(w)
        w = -1
        failed = ""
        if plan.pid_file is not None:  # while PID 1 sets up (the agent removes it if PID 1 fails)
            try:
                _write_atomically(plan.pid_file, f"{pid}\n{plan.pid_note}\n")
            except OSError as exc:
                failed = f"error write {plan.pid_file}: {exc}\n"
        chunks, deadline = [], time.monotonic() + READY_TIMEOUT_S
        while True:  # until PID 1 closes its end
            if not select.select([r], [], [], max(0.0, deadline - time.monotonic()))[0]:
                chunks.append(b"error wait for PID 1: timed out\n")
                break
            data = os.read(r, 4096)
            if not data:
                break
            chunks.append(data)
        report = b"".join(chunks).decode(errors="replace")
        return f"{pid}\n" + (failed if failed and report.strip() == "ok" else report)
    except OSError as exc:
        return f"0\nerror fork PID 1: {exc}"
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def _write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _reap_any() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:  # PID 1s that died (killed, or failed)
            pass


def serve(sock: int, mntns: int, pidns: int) -> None:
    """The forker's loop (every signal blocked, set up by its parent): answer requests until EOF."""
    code = 0
    try:
        os.write(sock, b"ready")
        while True:
            ready = select.select([sock], [], [], 1.0)[0]
            _reap_any()
            if not ready:
                continue
            data = os.read(sock, 1 << 20)
            if not data:
                break  # the agent is gone
            kind, arg = pickle.loads(data)
            if kind == "init":
                for plan in arg:
                    os.write(sock, fork_init(plan, mntns, pidns).encode())
            else:  # "reap" PID 1s that were seen to exit
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


__all__ = ["READY_TIMEOUT_S", "RUN_FILES", "TMPFS", "VSYS_MOUNT", "Plan", "fork_init", "init", "serve"]
