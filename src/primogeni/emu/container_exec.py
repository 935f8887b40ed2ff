"""Running programs in a container (:mod:`primogeni.emu.container`, which re-exports these).

Programs enter with ``nsenter``, join the cgroup (a tiny ``sh`` inside) and run under ``setpriv``
without ``CAP_SYS_{ADMIN,MODULE,PTRACE,RAWIO,BOOT}``: they can neither mount nor enter namespaces.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from primogeni.errors import EmuError


def exec_argv(c: _c.Container, argv: Sequence[str], *, user: str | None = None, cwd: str | None = None) -> list[str]:
    """The argv that runs ``argv`` in the container: ``nsenter`` its namespaces, join its cgroup (a
    tiny ``sh``, as root, inside), drop capabilities with ``setpriv`` (and become ``user``), exec.

    ``--pdeathsig`` ties the program to that ``nsenter``: killing it (a timeout) kills the program.
    """
    if not argv:
        raise EmuError("nothing to run", what=c.name)
    out = [_c._tool("nsenter"), f"--target={c.pid}", "--net", "--uts", "--ipc", "--mount", "--pid"]
    if cwd is not None:
        out.append(f"--wdns={cwd}")
    out += ["--", *_join(c)]
    dropped = ",".join(f"-{cap}" for cap in _c.DROPPED_CAPS)
    out += [_c._tool("setpriv"), f"--bounding-set={dropped}", f"--inh-caps={dropped}", "--pdeathsig=KILL"]
    if user == "nobody":  # Debian has no group of that name: the numbers, and no groups at all
        out += ["--reuid=65534", "--regid=65534", "--clear-groups", "--",
                _c._tool("env"), "HOME=/", "USER=nobody", "LOGNAME=nobody"]
    elif user is not None:
        out += [f"--reuid={user}", f"--regid={user}", "--init-groups", "--",
                _c._tool("env"), f"HOME=/home/{user}", f"USER={user}", f"LOGNAME={user}"]
    else:
        out.append("--")
    return [*out, *argv]


def _join(c: _c.Container) -> list[str]:
    """The argv prefix that joins the container's cgroup (a tiny ``sh``) before it execs the rest."""
    if not c.cgroup:
        return []
    group = _c.cgroups().find(c.cgroup)
    if group is None:
        raise EmuError(f"its cgroup {c.cgroup} is gone", what=c.name)
    return ["/bin/sh", "-c", _c._JOIN, "primo-join", *group.procs_files, "--"]


def net_argv(c: _c.Container, argv: Sequence[str]) -> list[str]:
    """The argv that runs ``argv`` in the container's network namespace and cgroup only: the host's
    file system and PID namespace, and the caller's user and capabilities (for a service the node
    runs for the sliver, not for the sliver's users)."""
    if not argv:
        raise EmuError("nothing to run", what=c.name)
    return [_c._tool("nsenter"), f"--target={c.pid}", "--net", "--", *_join(c), *argv]


def _env(env: Mapping[str, str] | None) -> dict[str, str]:
    return dict(env) if env is not None else {"PATH": _c.DEFAULT_PATH, "HOME": "/root", "LANG": "C.UTF-8"}


def spawn(c: _c.Container, argv: Sequence[str], *, user: str | None = None, stdin: Any = None,
          stdout: Any = None, stderr: Any = None, env: Mapping[str, str] | None = None,
          cwd: str | None = None) -> subprocess.Popen[Any]:
    """Start ``argv`` in the container; the Popen's pid is ``nsenter``'s (killing it kills ``argv``).

    ``env`` defaults to a minimal environment (``PATH``, ``HOME``, ``LANG``), not the agent's.
    """
    try:
        return subprocess.Popen(exec_argv(c, argv, user=user, cwd=cwd), stdin=stdin, stdout=stdout,
                                stderr=stderr, env=_env(env))
    except OSError as exc:
        raise EmuError(f"cannot start {list(argv)}: {exc}", what=c.name) from exc


def run(c: _c.Container, argv: Sequence[str], *, user: str | None = None, timeout: float | None = None,
        input: str | None = None, env: Mapping[str, str] | None = None,
        cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in the container and wait; stdout and stderr are captured as text.

    On timeout the program is killed and ``subprocess.TimeoutExpired`` propagates.
    """
    try:
        return subprocess.run(exec_argv(c, argv, user=user, cwd=cwd), input=input, capture_output=True,
                              text=True, timeout=timeout, env=_env(env), check=False)
    except OSError as exc:
        raise EmuError(f"cannot run {list(argv)}: {exc}", what=c.name) from exc


# at the end: container.py imports this module at its own end (either may be imported first)
from primogeni.emu import container as _c  # noqa: E402

__all__ = ["exec_argv", "net_argv", "run", "spawn"]
