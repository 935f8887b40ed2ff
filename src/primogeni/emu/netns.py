"""Named network namespaces (``/run/netns/NAME``, like ``ip netns``) without forking.

A namespace is made by a helper thread that unshares its network namespace and bind-mounts
``/proc/thread-self/ns/net`` onto ``/run/netns/NAME`` (``/run/netns`` is first made a shared bind
mount of itself, as iproute2 does), so the caller's own namespace never changes and no process is
forked: ~1 ms per namespace. The helper lives as long as the process (starting a thread per
namespace costs as much again) and returns to its home namespace after each one.

Acting inside a namespace:

- :func:`iproute` gives a pyroute2 ``IPRoute`` whose netlink socket was opened inside the namespace
  by the calling thread (no helper process); ``lazy=True`` defers building pyroute2's object. Use
  it only from the thread that created it: pyroute2 keeps sockets per thread, and a foreign thread
  gets a ``RuntimeError`` rather than a socket in the wrong namespace.
- :func:`run` / :func:`popen` start a program whose child joins the namespace before ``exec``.
- :func:`set_sysctl` / :func:`get_sysctl` reach ``/proc/sys/net`` as that namespace sees it.
"""

from __future__ import annotations

import errno
import os
import queue
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute  # type: ignore[import-untyped, unused-ignore]

from primogeni.emu import sys as esys
from primogeni.errors import EmuError

NETNS_DIR = esys.NETNS_DIR
NETLINK_ROUTE = 0
_SOCKET_BUFFER = 1 << 20  # bytes, send and receive buffers of each netlink socket

_dir_lock = threading.Lock()
_dir_ready = False


def path(name: str | Path) -> Path:
    """``/run/netns/NAME`` for a bare name; a path stays as it is."""
    return esys.netns_path(name)


def _check_name(name: str) -> None:
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise EmuError("not a valid namespace name", name or "''")


def _is_mount_point(target: Path) -> bool:
    """True when ``target`` is a bind-mounted namespace (its device differs from its directory's)."""
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return False
    return st.st_dev != os.stat(target.parent).st_dev


def _prepare_dir() -> None:
    """Make ``/run/netns`` exist and be a shared mount point (what iproute2 does), once per process."""
    global _dir_ready
    with _dir_lock:
        if _dir_ready:
            return
        NETNS_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        target = str(NETNS_DIR)
        try:
            esys.mount("none", target, None, esys.MS_SHARED | esys.MS_REC)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise EmuError(f"cannot make it a shared mount: {exc}", target) from exc
            # not a mount point yet: bind it onto itself, then make it shared
            try:
                esys.mount(target, target, None, esys.MS_BIND | esys.MS_REC)
                esys.mount("none", target, None, esys.MS_SHARED | esys.MS_REC)
            except OSError as exc2:
                raise EmuError(f"cannot bind-mount it onto itself: {exc2}", target) from exc2
        _dir_ready = True


def exists(name: str | Path) -> bool:
    """Whether ``/run/netns/NAME`` holds a namespace (a file that is a bind mount)."""
    return _is_mount_point(path(name))


def create(name: str, *, exist_ok: bool = False) -> None:
    """Make the named namespace ``/run/netns/NAME``; the caller's namespace does not change.

    A stale file left without its mount (a crash between create and mount) is replaced.
    """
    _check_name(name)
    _prepare_dir()
    target = NETNS_DIR / name
    try:
        os.close(os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    except FileExistsError:
        if _is_mount_point(target):
            if exist_ok:
                return
            raise EmuError("network namespace exists already", name) from None
        # a leftover plain file: take it over
    except OSError as exc:
        raise EmuError(f"cannot create {target}: {exc}", name) from exc

    try:
        _maker.make(str(target))
    except OSError as exc:
        remove(target)  # the mount, if it was made, and the file
        raise EmuError(f"cannot create network namespace: {exc}", name) from exc


class _Job:
    __slots__ = ("done", "error", "target")

    def __init__(self, target: str):
        self.target = target
        self.done = threading.Event()
        self.error: OSError | None = OSError(errno.EIO, "the namespace helper thread failed")


class _Maker:
    """One long-lived helper thread that makes namespaces, so the caller's thread never changes namespace.

    For each request it unshares its own network namespace, bind-mounts it onto the target file and
    switches back to its home (the process's main namespace), so it never keeps a namespace alive.
    Starting a thread per namespace would cost about as much as the namespace itself.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def make(self, target: str) -> None:
        job = _Job(target)
        with self._lock:
            if self._thread is None:
                self._jobs = queue.SimpleQueue()
                self._thread = threading.Thread(target=self._serve, args=(self._jobs,), name="primo-netns",
                                                daemon=True)
                self._thread.start()
            self._jobs.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error

    def _serve(self, jobs: queue.SimpleQueue[_Job]) -> None:
        try:
            home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            esys.setns(home, esys.CLONE_NEWNET)
        except OSError:
            home = -1
        while home >= 0:
            job = jobs.get()
            try:
                at_home = self._make_one(job, home)
            finally:
                job.done.set()  # whatever happened: the caller must not wait forever
            if not at_home:
                break
        # no home, or stuck in a namespace we made: retire (the next request starts a new helper),
        # failing what is queued
        with self._lock:
            self._thread = None
            while not jobs.empty():
                job = jobs.get()
                job.error = OSError(errno.EIO, "the namespace helper thread could not return home")
                job.done.set()

    @staticmethod
    def _make_one(job: _Job, home: int) -> bool:
        """Make ``job``'s namespace; whether the thread is back in its home namespace afterwards."""
        try:
            esys.unshare(esys.CLONE_NEWNET)
            esys.mount("/proc/thread-self/ns/net", job.target, None, esys.MS_BIND)
            job.error = None
        except OSError as exc:
            job.error = exc
        try:
            esys.setns(home, esys.CLONE_NEWNET)
        except OSError as exc:
            job.error = job.error or exc
            return False
        return True

    def after_fork(self) -> None:
        """In a forked child the helper thread does not exist: start a new one when needed."""
        self._lock = threading.Lock()
        self._thread = None


_maker = _Maker()
os.register_at_fork(after_in_child=_maker.after_fork)


def remove(name: str | Path) -> None:
    """Unmount (lazily) and delete ``/run/netns/NAME``; nothing happens when it is not there.

    The namespace itself lives on while processes or sockets still use it.
    """
    target = path(name)
    try:
        esys.umount(str(target), esys.MNT_DETACH)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT):
            raise EmuError(f"cannot unmount: {exc}", str(target)) from exc
    try:
        target.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise EmuError(f"cannot delete: {exc}", str(target)) from exc


def names(prefix: str = "primo") -> list[str]:
    """Names of the namespaces in ``/run/netns`` that start with ``prefix``, sorted."""
    try:
        entries = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in entries if n.startswith(prefix) and _is_mount_point(NETNS_DIR / n))


def identity(name: str | Path) -> tuple[int, int]:
    """``(st_dev, st_ino)`` of the namespace: equal for every handle of the same namespace."""
    try:
        st = os.stat(path(name))
    except FileNotFoundError:
        raise EmuError("no such network namespace", str(name)) from None
    return st.st_dev, st.st_ino


def pids(name: str | Path) -> list[int]:
    """Processes whose network namespace is this one (their main thread's), sorted."""
    wanted = identity(name)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:  # gone meanwhile, or a kernel thread
            continue
        if (st.st_dev, st.st_ino) == wanted:
            found.append(int(entry))
    return sorted(found)


def iproute(name: str | Path | None = None, *, lazy: bool = False) -> IPRoute:
    """An ``IPRoute`` acting in the namespace ``name`` (``None``: the calling thread's own).

    The netlink socket is opened by the calling thread while it is switched into the namespace;
    a socket stays in the namespace it was created in. Close it when done (``with iproute(...)``).
    ``lazy``: a :class:`LazyIPRoute`, whose pyroute2 half (~1 ms to build) is made only when
    something beyond the raw socket (what :mod:`primogeni.emu.links` encodes itself) is used.
    """
    import socket

    try:
        with esys.in_netns(name):
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
    except OSError as exc:
        raise EmuError(f"cannot open a netlink socket there: {exc}", str(name)) from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER)
        if lazy:
            sock.bind((0, 0))
            return LazyIPRoute(sock)
        return IPRoute(use_socket=sock)
    except BaseException:
        sock.close()
        raise


class LazyIPRoute:
    """A netlink socket that turns into a pyroute2 ``IPRoute`` on first use of anything but ``fileno``."""

    def __init__(self, sock: Any):
        self._sock = sock
        self._ipr: IPRoute | None = None

    def fileno(self) -> int:
        return int(self._sock.fileno())

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        if self._ipr is None:
            self._ipr = IPRoute(use_socket=self._sock)
        return getattr(self._ipr, attr)

    def close(self) -> None:
        (self._ipr if self._ipr is not None else self._sock).close()

    def __enter__(self) -> LazyIPRoute:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def open_fd(name: str | Path) -> Iterator[int]:
    """A descriptor of namespace ``name`` for the body (setns, IFLA_NET_NS_FD); ``EmuError`` when there
    is no such namespace."""
    try:
        fd = os.open(path(name), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise EmuError("no such network namespace", str(name)) from None
    try:
        yield fd
    finally:
        os.close(fd)


def _preexec(fd: int, then: Callable[[], Any] | None) -> Callable[[], None]:
    def enter() -> None:
        esys.setns(fd, esys.CLONE_NEWNET)
        if then is not None:
            then()

    return enter


def run(name: str | Path, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """``subprocess.run(argv, **kwargs)`` with the child inside the namespace (joined before exec)."""
    with open_fd(name) as fd:
        kwargs["preexec_fn"] = _preexec(fd, kwargs.get("preexec_fn"))
        return subprocess.run(argv, **kwargs)


def popen(name: str | Path, argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen(argv, **kwargs)`` with the child inside the namespace."""
    with open_fd(name) as fd:
        kwargs["preexec_fn"] = _preexec(fd, kwargs.get("preexec_fn"))
        return subprocess.Popen(argv, **kwargs)


def _sysctl_path(key: str) -> str:
    if not key or ".." in key or key.startswith(("/", ".")):
        raise EmuError("not a valid sysctl key", key or "''")
    return "/proc/sys/" + key.replace(".", "/")


def set_sysctl(name: str | Path | None, key: str, value: str) -> None:
    """Write a sysctl (``net.ipv4.ip_forward``) as the namespace ``name`` sees it (``None``: our own).

    ``/proc/sys/net`` answers for the network namespace of the thread that opens the file, so the
    calling thread opens it while switched into the namespace.
    """
    where = _sysctl_path(key)
    try:
        with esys.in_netns(name):
            fd = os.open(where, os.O_WRONLY)
            try:
                os.write(fd, str(value).encode())
            finally:
                os.close(fd)
    except OSError as exc:
        raise EmuError(f"cannot set {key}={value}: {exc}", str(name) if name else key) from exc


def get_sysctl(name: str | Path | None, key: str) -> str:
    """Read a sysctl as the namespace ``name`` sees it (stripped of the trailing newline)."""
    where = _sysctl_path(key)
    try:
        with esys.in_netns(name):
            fd = os.open(where, os.O_RDONLY)
            try:
                return os.read(fd, 4096).decode().strip()
            finally:
                os.close(fd)
    except OSError as exc:
        raise EmuError(f"cannot read {key}: {exc}", str(name) if name else key) from exc


def tcp_listening(pid: int, port: int) -> bool:
    """Whether process ``pid`` sees a TCP socket listening on ``port`` in its network namespace
    (``/proc/PID/net/tcp`` and ``tcp6``): how to wait for a server started in a namespace."""
    for table in ("tcp", "tcp6"):
        try:
            rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 3 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                return True
    return False
