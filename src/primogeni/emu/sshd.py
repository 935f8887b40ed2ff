"""SSH into a sliver: one OpenSSH server per container, on the sliver's first control port.

The agent keeps, per sliver, a configuration directory ``conf_dir`` (``sshd_config``, ``keys/<user>``
with that login's authorized keys, ``sshd.log``) and, per node, host keys in ``key_dir``, made once
with ``ssh-keygen``. Both stay on the host's disk, outside the container's private ``/tmp``,
``/home``, ``/run`` and ``/dev/shm``, so that ``sshd`` (started inside the container with
:func:`primogeni.emu.container.spawn`) reads them. The server runs as ``sshd -D -e`` with
``UsePAM no`` (logins are plain ``/etc/passwd`` users of the container), public keys only,
``StrictModes no``, ``PidFile none``, only the slice's logins allowed; its privilege separation
directory is the container's ``/run/sshd``. ``sshd`` reads a login's key file as that user, so
every directory above ``keys/`` must be searchable by others (checked here).

:func:`start` returns the host pid of ``sshd`` itself once it listens; :func:`stop` ends it (after
checking that the pid still is an ``sshd``), which also ends the ``nsenter`` that started it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import os
import select
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from primogeni.emu import container, netns
from primogeni.emu.container import Container
from primogeni.errors import EmuError, FeatureMissing

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 3.0
PRIVATE_IN_CONTAINER = (Path("/tmp"), Path("/home"), Path("/run"), Path("/dev/shm"))

_starters: dict[int, subprocess.Popen[Any]] = {}  # sshd pid -> the nsenter that started it (to reap it)


def _program(name: str) -> str:
    found = shutil.which(name, path=container.DEFAULT_PATH)
    if found is None:
        raise FeatureMissing(f"{name} is not installed (Debian packages openssh-server, openssh-client)", what=name)
    return found


def host_keys(key_dir: Path, *, rsa: bool = False) -> list[Path]:
    """The node's sshd host keys in ``key_dir`` (ed25519, and RSA when asked: ~0.5 s), made once."""
    key_dir = Path(key_dir)
    key_dir.mkdir(parents=True, exist_ok=True)
    kinds = ["ed25519", *(["rsa"] if rsa else [])]
    keys = [key_dir / f"ssh_host_{kind}_key" for kind in kinds]
    with open(key_dir / ".lock", "w") as lock:  # agents sharing the directory make each key once
        fcntl.flock(lock, fcntl.LOCK_EX)
        for kind, key in zip(kinds, keys, strict=True):
            if key.exists() and key.with_suffix(".pub").exists():
                continue
            for stale in (key, key.with_suffix(".pub")):
                stale.unlink(missing_ok=True)
            made = subprocess.run([_program("ssh-keygen"), "-q", "-t", kind, "-N", "", "-C", "primo-sliver",
                                   "-f", str(key)], capture_output=True, text=True, timeout=60, check=False)
            if made.returncode != 0:
                raise EmuError(f"ssh-keygen -t {kind} failed: {made.stderr.strip()}", what=str(key))
    return keys


def config_text(*, address: str, port: int, host_keys: Sequence[Path], conf_dir: Path,
                users: Sequence[str]) -> str:
    """The ``sshd_config`` of one sliver's server."""
    lines = [
        f"Port {port}",
        f"ListenAddress {address}",
        *(f"HostKey {key}" for key in host_keys),
        "UsePAM no",
        "StrictModes no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        f"AuthorizedKeysFile {conf_dir}/keys/%u",
        "PermitRootLogin no",
        f"AllowUsers {' '.join(users)}" if users else "DenyUsers *",
        "PidFile none",
        "PrintMotd no",
        "PrintLastLog no",
        "X11Forwarding no",
        "Subsystem sftp internal-sftp",
    ]
    return "\n".join(lines) + "\n"


def _check_visible(path: Path, what: str) -> Path:
    """``path`` resolved, refused when the container would not see it (its private mounts)."""
    path = Path(path).resolve()
    for private in PRIVATE_IN_CONTAINER:
        if path == private or private in path.parents:
            raise EmuError(f"{what} {path} is under {private}, which a container replaces with its own", what=what)
    return path


def _check_searchable(path: Path) -> None:
    """sshd opens ``keys/<user>`` as that user: each directory on the way must be searchable by others."""
    for directory in [path, *path.parents]:
        if not os.stat(directory).st_mode & stat.S_IXOTH:
            raise EmuError(f"{directory} is not searchable by others, so sshd cannot read the users' keys "
                           "(chmod o+x it)", what=str(path))


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    os.replace(tmp, path)


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _is_sshd(pid: int, sshd: str) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/exe") == os.path.realpath(sshd)
    except OSError:
        return False


def _log_tail(log: Path) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").strip().splitlines()[-5:])
    except OSError:
        return ""


def start(c: Container, *, address: str, port: int, users: Sequence[tuple[str, Sequence[str]]], key_dir: Path,
          conf_dir: Path) -> int:
    """Run ``sshd -D`` in the container, listening on ``address:port``; returns sshd's host pid.

    ``users`` are ``(login, [public key lines])``; the logins must exist in the container.
    """
    try:
        ipaddress.ip_address(address)
    except ValueError as exc:
        raise EmuError(f"not an IP address: {address!r}", what=c.name) from exc
    if not 0 < port < 65536:
        raise EmuError(f"bad port {port}", what=c.name)
    for login, _ in users:
        if not login or any(ch in login for ch in "/ \n:\0"):
            raise EmuError(f"bad login name {login!r}", what=c.name)
    conf_dir = _check_visible(conf_dir, "sshd configuration directory")
    keys = [_check_visible(key, "sshd host key") for key in host_keys(key_dir)]
    (conf_dir / "keys").mkdir(parents=True, exist_ok=True)
    conf_dir.chmod(0o755)
    (conf_dir / "keys").chmod(0o755)
    _check_searchable(conf_dir / "keys")
    for old in (conf_dir / "keys").iterdir():
        if old.name not in {login for login, _ in users}:
            old.unlink()
    for login, public in users:
        _write(conf_dir / "keys" / login, "".join(f"{line.strip()}\n" for line in public if line.strip()))
    config = conf_dir / "sshd_config"
    _write(config, config_text(address=address, port=port, host_keys=keys, conf_dir=conf_dir,
                               users=[login for login, _ in users]))
    sshd = _program("sshd")  # sshd re-executes itself, so it needs its absolute path
    log = conf_dir / "sshd.log"
    with open(log, "ab") as out:
        starter = container.spawn(c, [sshd, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                  stdout=out, stderr=out)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if starter.poll() is not None:
            raise EmuError(f"sshd exited ({starter.returncode}): {_log_tail(log)}", what=c.name)
        server = next((p for p in _children(starter.pid) if _is_sshd(p, sshd)), None)
        if server is not None and netns.tcp_listening(server, port):
            _starters[server] = starter
            return server
        time.sleep(0.01)
    starter.kill()
    starter.wait()
    raise EmuError(f"sshd did not listen on {address}:{port} within {START_TIMEOUT_S} s: {_log_tail(log)}",
                   what=c.name)


def stop(pid: int) -> None:
    """End the sshd ``pid`` (SIGTERM, then SIGKILL); nothing happens if it is not an sshd any more."""
    starter = _starters.pop(pid, None)
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        fd = -1
    try:
        if fd >= 0 and _is_sshd(pid, _program("sshd")):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(fd, sig)
                if select.select([fd], [], [], STOP_TIMEOUT_S)[0]:
                    break
    finally:
        if fd >= 0:
            os.close(fd)
        if starter is not None:  # the nsenter exits with its child
            try:
                starter.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                starter.kill()
                starter.wait()

ROOT = Path("/var/lib/primo/sshd")


def conf_root(node: str, state_dir: Path) -> Path:
    """Where a node agent keeps sshd's host keys and per-sliver configuration.

    Always under ``/var/lib/primo/sshd``: sshd reads a user's keys as that user, so every directory
    above them must be searchable by others, and containers must see them (their ``/tmp``, ``/home``
    and ``/run`` are their own). The name carries a hash of the agent's state directory, so two
    agents (two embedded substrates) never share one.
    """
    here = (Path(state_dir) / "sshd").resolve()
    return ROOT / f"{node}-{hashlib.sha256(bytes(here)).hexdigest()[:8]}"
