"""Deleting many network devices in one batch, from a background thread.

Deleting a bridge or tunnel waits 20–90 ms in the kernel (RCU grace periods, under the rtnl lock)
with almost no CPU; one ``RTM_DELLINK`` naming a device *group* deletes every device of the group
in one ``unregister_netdevice_many``, sharing those waits. :class:`Reaper` moves retired devices
into :data:`RETIRED_GROUP` and deletes the group a few ms later; :meth:`Reaper.hold` keeps it
from starting while a batch of devices is being retired (its requests would queue behind the
deletion's rtnl lock).
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections.abc import Iterator

from pyroute2 import IPRoute  # type: ignore[import-untyped]
from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]

from primogeni.emu import links, netns
from primogeni.emu import sys as esys
from primogeni.errors import EmuError

RETIRED_GROUP = 0x70726D6F  # device group of devices waiting for the reaper ("prmo")


def _group(ipr: IPRoute, name: str) -> int | None:
    """The device group of ``name``, or ``None`` when there is no such device."""
    try:
        return int(ipr.link("get", ifname=name)[0].get("IFLA_GROUP"))
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return None
        raise EmuError(f"cannot read the device: {os.strerror(exc.code)}", name) from exc


class Reaper:
    """Deletes retired devices of the node namespace from a background thread.

    Deleting a bridge or tunnel waits 20–90 ms in the kernel (RCU grace periods) with almost no
    CPU, and so does taking it down (~8 ms), so removals only move devices into device group
    :data:`RETIRED_GROUP` and return; one request then deletes the whole group, a few ms later.
    A retired name is free again once its device is gone (:meth:`wait`).
    """

    def __init__(self, netns_path: str):
        self._path = netns_path
        self._cond = threading.Condition()
        self._pending: set[str] = set()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._held = 0  # > 0: do not start a deletion (a batch is being retired)
        self.errors: list[str] = []  # deletions that failed (reconcile deletes the group again)

    def retire(self, ipr: IPRoute, name: str) -> bool:
        """Hand ``name`` over for deletion; ``False`` when there is no such device."""
        if not links.set_group(ipr, name, RETIRED_GROUP):
            return False
        with self._cond:
            self._pending.add(name)
            if self._thread is None or not self._thread.is_alive():
                self._stopping = False
                self._thread = threading.Thread(target=self._run, name="primo-reaper", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return True

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """No deletion starts inside (one that runs goes on): retire a batch, then it goes at once."""
        with self._cond:
            self._held += 1
        try:
            yield
        finally:
            with self._cond:
                self._held -= 1
                self._cond.notify_all()

    def wait(self, names: set[str] | None = None, timeout: float = 30.0) -> None:
        """Until the retired devices (those named, or all) are deleted."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending & names if names is not None else self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise EmuError(f"not deleted within {timeout} s: {sorted(self._pending)}", "retired devices")
                self._cond.wait(left)

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        with esys.in_netns(self._path):
            ipr = netns.iproute(None)
        try:
            while True:
                with self._cond:
                    while (not self._pending or self._held) and not self._stopping:
                        self._cond.wait()
                    if not self._pending:
                        return
                    batch = set(self._pending)
                try:
                    ipr.link("del", group=RETIRED_GROUP)
                    failed = None
                except NetlinkError as exc:
                    failed = None if exc.code == errno.ENODEV else os.strerror(exc.code)
                with self._cond:
                    if failed is not None:  # give up on these; reconcile deletes the group again
                        self.errors.append(f"deleting {sorted(batch)}: {failed}")
                        self._pending -= batch
                    self._pending = {name for name in self._pending  # still there, and still retired
                                     if _group(ipr, name) == RETIRED_GROUP}
                    self._cond.notify_all()
        finally:
            ipr.close()


__all__ = ["RETIRED_GROUP", "Reaper"]
