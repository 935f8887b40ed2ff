"""The realizer's process half: commands run in slivers, and each sliver's sshd.

:class:`ProcRealizer` is a base of :class:`~primogeni.agent.realize.Realizer` (which sets
``_children`` and ``_keys_ready``). Commands started by :meth:`ProcRealizer.run_command` are kept
in ``state_dir/commands/<slot>.json`` (pid, start time, argv, log), sshd's pid file in
``state_dir/sshd/<slot>.pid`` with a digest of what it was started with, so a restarted agent
finds them again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from primogeni.agent import monitor as mon
from primogeni.agent import realize_links as rl
from primogeni.agent.realize_links import LinkRealizer
from primogeni.agent.spec import SliverSpec
from primogeni.emu import container, sshd
from primogeni.errors import EmuError


class ProcRealizer(LinkRealizer):
    """Commands and sshd of slivers (see the module docstring)."""

    _children: dict[int, subprocess.Popen[Any]]  # commands we started (reaped when they end)
    _keys_ready: bool  # the node's sshd host keys exist
    run_dir: Path  # container pid files

    def _held(self, urn: str) -> SliverSpec:
        spec = self.store.get_sliver(urn)
        if spec is None:
            raise EmuError("no such sliver on this node", urn)
        return spec

    def run_command(self, urn: str, argv: Sequence[str]) -> int:
        """Start ``argv`` detached in the sliver (output to ``/tmp/primo-event-<n>.log`` inside); its host pid.

        It runs as the sliver's first login (the researcher who asked for it), or as ``nobody`` when
        the sliver has none: an event is the researcher's command, and must not get root on the node.
        """
        if not argv:
            raise EmuError("no command to run", urn)
        with self._locked(urn):
            spec = self._held(urn)
            c = container.attach(rl.sliver_netns(self.node, spec.slot), self.run_dir)
            if c is None:
                raise EmuError("the sliver's container is not running", urn)
            self._reap()
            record = self._commands(spec.slot)
            number = int(record.get("next", 1))
            log = f"/tmp/primo-event-{number}.log"
            # sh only redirects: the command's words are positional parameters, never parsed as shell text
            user = spec.logins[0].user if spec.logins else "nobody"
            proc = container.spawn(c, ["/bin/sh", "-c", 'exec "$@" >>"$0" 2>&1 </dev/null', log, *argv], user=user,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self._children[proc.pid] = proc
            record["next"] = number + 1
            record.setdefault("running", []).append(
                {"pid": proc.pid, "start": mon.process_start(proc.pid), "argv": list(argv), "log": log})
            _write_json(self._commands_file(spec.slot), record)
            return proc.pid

    def stop_command(self, urn: str, argv: Sequence[str]) -> int:
        """Kill what :meth:`run_command` started in the sliver with this argv; returns how many were running."""
        with self._locked(urn):
            spec = self._held(urn)
            self._reap()  # a command that ended is not counted
            record = self._commands(spec.slot)
            kept, stopped = [], 0
            for entry in record.get("running", []):
                alive = mon.process_start(entry["pid"]) == entry.get("start")
                if entry["argv"] != list(argv):
                    if alive:
                        kept.append(entry)
                    continue
                if alive:
                    for pid in [entry["pid"], *mon.descendants(entry["pid"])]:
                        _kill(pid)
                    stopped += 1
            record["running"] = kept
            _write_json(self._commands_file(spec.slot), record)
            return stopped

    def _commands_file(self, slot: int) -> Path: return self.state_dir / "commands" / f"{slot}.json"

    def _commands(self, slot: int) -> dict[str, Any]:
        return _read_json(self._commands_file(slot), "the commands started") or {}

    def _forget_commands(self, slot: int) -> None:
        """The container's processes are going: keep only the numbering of logs."""
        record = self._commands(slot)
        if record.get("running"):
            record["running"] = []
            _write_json(self._commands_file(slot), record)

    def _reap(self) -> None:
        for pid, proc in list(self._children.items()):
            if proc.poll() is not None:
                del self._children[pid]

    # -- sshd ------------------------------------------------------------------------------------------

    def _sshd_file(self, slot: int) -> Path: return self.state_dir / "sshd" / f"{slot}.pid"

    @property
    def sshd_dir(self) -> Path:
        """sshd's host keys and per-sliver configuration (:func:`primogeni.emu.sshd.conf_root`)."""
        return sshd.conf_root(self.node, self.state_dir)

    def _ensure_sshd(self, spec: SliverSpec, c: container.Container) -> None:
        """sshd on ``ctl0``:first port for the logins, when the sliver is started and has logins."""
        if not spec.logins or self.store.run_state(spec.urn) != "started":
            self._stop_sshd(spec.slot)
            return
        users = [(login.user, list(login.keys)) for login in spec.logins]
        digest = hashlib.sha256(json.dumps([spec.ports[0], users, c.pid]).encode()).hexdigest()[:16]
        running = self._sshd_running(spec.slot)
        if running is not None and running[1] == digest:
            return
        self._stop_sshd(spec.slot)
        key_dir = self.sshd_dir / "keys"
        if not self._keys_ready:
            sshd.host_keys(key_dir)
            self._keys_ready = True
        pid = sshd.start(c, address=str(self.ctl.address_of(spec.slot)), port=spec.ports[0],
                         users=[(user, tuple(keys)) for user, keys in users], key_dir=key_dir,
                         conf_dir=self.sshd_dir / str(spec.slot))
        _write_json(self._sshd_file(spec.slot), {"pid": pid, "start": mon.process_start(pid), "digest": digest})

    def _sshd_running(self, slot: int) -> tuple[int, str] | None:
        try:
            data = json.loads(self._sshd_file(slot).read_text())
            pid, start, digest = int(data["pid"]), data["start"], str(data["digest"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise EmuError(f"cannot read the sshd pid file: {exc}", str(self._sshd_file(slot))) from exc
        return (pid, digest) if mon.process_start(pid) == start else None

    def _stop_sshd(self, slot: int) -> None:
        running = self._sshd_running(slot)
        if running is not None:
            sshd.stop(running[0])
        self._sshd_file(slot).unlink(missing_ok=True)
        shutil.rmtree(self.sshd_dir / str(slot), ignore_errors=True)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _read_json(path: Path, what: str) -> dict[str, Any] | None:
    """The JSON object in ``path`` (a record this realizer wrote); None when there is none, EmuError
    naming ``what`` when it cannot be read or is not an object."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise EmuError(f"cannot read {what}: {exc}", str(path)) from exc
    if not isinstance(data, dict):
        raise EmuError(f"{what} is not a JSON object", str(path))
    return data


def _write_json(path: Path, value: Any) -> None:
    """Write atomically (temporary file, then rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(value, sort_keys=True))
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise EmuError(f"cannot write: {exc.strerror or exc}", str(path)) from exc


__all__ = ["ProcRealizer"]
