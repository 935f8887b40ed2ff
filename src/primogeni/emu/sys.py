"""Raw Linux system calls the standard library lacks on Python 3.11: unshare, setns, mount, sethostname.

Thin ctypes wrappers that raise :class:`OSError` with the errno and the call's name. Namespaces are
per *thread* for ``setns``/``unshare`` of the network namespace, so :func:`in_netns` switches only
the calling thread and always switches back.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MNT_DETACH = 2

NETNS_DIR = Path("/run/netns")

_libc = ctypes.CDLL(None, use_errno=True)
_unshare = _libc.unshare
_setns = _libc.setns
_mount = _libc.mount
_umount2 = _libc.umount2
_sethostname = _libc.sethostname


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_setns(fd, nstype), "setns")


def mount(source: str | None, target: str, fstype: str | None = None, flags: int = 0, data: str | None = None) -> None:
    _check(_mount(source.encode() if source else None, target.encode(), fstype.encode() if fstype else None,
                  flags, data.encode() if data else None), f"mount {target}")


def umount(target: str, flags: int = 0) -> None:
    _check(_umount2(target.encode(), flags), f"umount {target}")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_sethostname(raw, len(raw)), "sethostname")


def netns_path(name_or_path: str | Path) -> Path:
    """``/run/netns/NAME`` for a bare name; a path stays as it is."""
    text = str(name_or_path)
    return Path(text) if "/" in text else NETNS_DIR / text


@contextmanager
def in_netns(name_or_path: str | Path | None) -> Iterator[None]:
    """Run the body with the *calling thread* in another network namespace, then switch back
    (``None``: in the thread's own, switching nothing).

    Sockets (netlink ones included) created in the body stay in that namespace after the switch
    back, which is how we get an ``IPRoute`` inside a sliver without forking a helper process.
    """
    if name_or_path is None:
        yield
        return
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(netns_path(name_or_path), os.O_RDONLY)
        try:
            setns(target, CLONE_NEWNET)
        finally:
            os.close(target)
        try:
            yield
        finally:
            setns(home, CLONE_NEWNET)
    finally:
        os.close(home)
