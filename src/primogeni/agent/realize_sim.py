"""The realizer's simulation half: a simulator sliver's ``primo immerse`` run, started, stopped and read.

A simulator sliver (``SliverSpec.kind == "simulator"``) holds a model (``model_format``, ``model``)
and says which of its interfaces carries which emulated host (``attach``): the AM patches each
emulated host's experimental interface to one of them. :class:`SimRealizer` (a base of
:class:`~primogeni.agent.realize.Realizer`) runs ``primo immerse MODEL --bind PATH=IFNAME …`` for it:

* after IPv6 is turned off on the node's side of its links (the node's own IPv6 chatter would
  reach the simulator as if the emulated host had sent it);
* in the sliver's **network namespace only** (``nsenter --net``), not its mount namespace (the
  agent's Python may live under ``/tmp``, which is private in a container), joined to the sliver's
  cgroup (its limits apply), in a session of its own (a signal to the agent's terminal does not
  reach it), with a minimal environment and ``python -I`` (no current directory or ``PYTHON*``
  variables on its import path);
* started as root, which ``primo immerse --user`` needs to read the model and bind its sockets; it
  then drops to the slice's simulation uid (``uids.json``, login name ``primo-sim``) before it loads
  the model, so a Python model's code never runs as root;
* with its files in a private directory (names are the agent's; see docs/SUBSTRATE.md):

  ``/run/primo-sim/``                                    root, 0711
  ``/run/primo-sim/<12 hex of sha256(state dir)>/``      root, 0711 (one per agent)
  ``…/<slot>/``                                          the simulation uid, 0700, made anew at each start:
  ``model.dml`` or ``model.py`` (root, 0600: read before the drop), ``immerse.log`` (its output, opened by
  the agent), ``results/`` (written by the simulation as its uid);

* its pid and start time in ``state_dir/simulations/<slot>.json`` (with its exit code once known),
  so that a restarted agent finds it.

:meth:`SimRealizer.stop_simulation` sends SIGTERM (``primo immerse`` then writes its results) and
SIGKILL after a timeout. :meth:`SimRealizer.simulation` reports the state, the log's tail and the
results. The results directory is the simulation uid's, so it is read without trusting it:
directory descriptors, ``O_NOFOLLOW``, regular files owned by that uid only, at most 32 MiB in
all (the largest files are left out and named).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from primogeni.agent import monitor as mon
from primogeni.agent import realize_links as rl
from primogeni.agent.names import sim_dir, sim_root
from primogeni.agent.realize_procs import ProcRealizer, _read_json, _write_json
from primogeni.agent.spec import SliverSpec
from primogeni.agent.vsys import secure_tree
from primogeni.emu import container, links, netns
from primogeni.errors import EmuError

SIM_USER = "primo-sim"  # the login name whose uid (per slice, uids.json) the simulation runs as
CLI_MODULE = "primogeni.cli.main"  # the ``primo`` command, run as ``python -m``
LOG_NAME = "immerse.log"
RESULTS = "results"
MODEL_NAMES = {"dml": "model.dml", "python": "model.py"}
LOG_TAIL = 64 * 1024  # bytes of the log's end that simulation() returns
RESULTS_CAP = 32 * 1024 * 1024  # bytes of results files that simulation() returns at most
MAX_FILES = 256  # results files read at most (the others are omitted)
MAX_DEPTH = 8
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
PROGRESS_S = 10  # seconds between immerse's progress lines in its log
IPV6 = Path("/proc/sys/net/ipv6")
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")  # not allowed in XML 1.0
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+,=@:-]{0,254}$")


class SimRealizer(ProcRealizer):
    """Simulator slivers' simulations (see the module docstring)."""

    _uid: Callable[[str, str], int]  # Realizer's: a slice's login name -> the node's uid for it (uids.json)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._sims: dict[int, subprocess.Popen[bytes]] = {}  # slot -> the run we started (we reap it)

    def _sim_file(self, slot: int) -> Path: return self.state_dir / "simulations" / f"{slot}.json"

    # -- start, stop ---------------------------------------------------------------------------------

    def start_simulation(self, spec: SliverSpec) -> int | None:
        """Start the sliver's model in real time (see the module docstring); its pid. Idempotent: a run
        still going is left alone. ``None`` for a sliver that is not a simulator with a model."""
        if spec.kind != "simulator" or not spec.model:
            return None
        with self._locked(spec.urn):
            record = self._sim_record(spec.slot)
            if record is not None and self._sim_running(spec.slot, record):
                return int(record["pid"])
            c = container.attach(rl.sliver_netns(self.node, spec.slot), self.run_dir)
            if c is None:
                raise EmuError("the sliver's container is not running", spec.urn)
            uid = self._uid(spec.slice_urn, SIM_USER)
            self._quiet_links(spec)
            self._sims.pop(spec.slot, None)
            self._sim_file(spec.slot).unlink(missing_ok=True)  # the last run's: its files go now
            here = sim_dir(self.state_dir, spec.slot)
            model = here / MODEL_NAMES[spec.model_format]
            binds = [arg for path, ifname in spec.attach for arg in ("--bind", f"{path}={ifname}")]
            immerse = [sys.executable, "-I", "-m", CLI_MODULE, "immerse", str(model), *binds, "--out",
                       str(here / RESULTS), "--user", f"{uid}:{uid}", "--progress", str(PROGRESS_S)]
            argv = container.net_argv(c, immerse)
            slot_fd = self._fresh_sim_dir(spec.slot, uid)
            try:
                _create(slot_fd, model.name, spec.model.encode(), 0o600)
                log_fd = _open_new(slot_fd, LOG_NAME, 0o644)
            finally:
                os.close(slot_fd)
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd, cwd="/",
                                        env={"PATH": container.DEFAULT_PATH, "LANG": "C.UTF-8"},
                                        start_new_session=True)
            except OSError as exc:
                raise EmuError(f"cannot start the simulation: {exc}", spec.urn) from exc
            finally:
                os.close(log_fd)
            self._sims[spec.slot] = proc
            _write_json(self._sim_file(spec.slot),
                        {"pid": proc.pid, "start": mon.process_start(proc.pid), "urn": spec.urn})
            return proc.pid

    def _quiet_links(self, spec: SliverSpec) -> None:
        """No IPv6 on the node's side of the simulator's links (its veths; the bridge and tunnel of a link
        that is not a patch): what the node's own stack sends there (router solicitations, MLD) reaches
        the simulator's interface as if the emulated host had sent it."""
        if not IPV6.is_dir():
            return  # this kernel has no IPv6
        with self._session() as ipr:
            for i, iface in enumerate(spec.interfaces):
                devices = [rl.exp_device(spec.slot, i)]
                link = self.store.get_link(iface.link) if iface.link else None
                if link is not None and not self.patched(link):
                    devices += [rl.bridge_device(link.vni), rl.vxlan_device(link.vni)]
                for device in devices:
                    if links.exists(ipr, device):
                        netns.set_sysctl(None, f"net.ipv6.conf.{device}.disable_ipv6", "1")

    def stop_simulation(self, spec: SliverSpec, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM the sliver's simulation (it writes its results) and wait; SIGKILL after ``timeout`` s.
        Nothing to do when none runs."""
        with self._locked(spec.urn):
            self._end_simulation(spec.slot, timeout)

    def _end_simulation(self, slot: int, timeout: float, *, forget: bool = False) -> None:
        """Stop slot ``slot``'s simulation (SIGTERM, or SIGKILL at once when ``timeout`` is 0); ``forget``:
        then remove its record and directory (the sliver goes)."""
        try:
            record = self._sim_record(slot)
        except EmuError:
            if not forget:
                raise
            record = None  # unreadable: removed below (its process is in the sliver's cgroup, killed with it)
        if record is not None and self._sim_running(slot, record):
            pid = int(record["pid"])
            for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
                if wait <= 0:
                    continue
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
                deadline = time.monotonic() + wait
                while self._sim_running(slot, record) and time.monotonic() < deadline:
                    time.sleep(0.01)
                if not self._sim_running(slot, record):
                    break
        if forget:
            self._sims.pop(slot, None)
            self._sim_file(slot).unlink(missing_ok=True)
            shutil.rmtree(sim_dir(self.state_dir, slot), ignore_errors=True)

    def _end_simulations(self) -> None:
        """Kill every simulation this agent's records name, and remove their records and directories."""
        for path in sorted((self.state_dir / "simulations").glob("*.json")):
            if path.stem.isdigit():
                self._end_simulation(int(path.stem), 0, forget=True)

    def _sim_record(self, slot: int) -> dict[str, Any] | None:
        data = _read_json(self._sim_file(slot), "the simulation's record")
        if data is None:
            return None
        if not isinstance(data.get("pid"), int):
            raise EmuError("the simulation's record is malformed", str(self._sim_file(slot)))
        return data

    def _sim_running(self, slot: int, record: dict[str, Any]) -> bool:
        """Whether the run ``record`` names still runs; once it ended, its exit code (when we are its
        parent) goes into the record."""
        proc = self._sims.get(slot)
        if proc is not None and proc.pid == record["pid"]:
            code = proc.poll()
            if code is None:
                return True
            del self._sims[slot]
            if record.get("exit_code") is None:
                record["exit_code"] = code
                _write_json(self._sim_file(slot), record)
            return False
        pid = int(record["pid"])
        return mon.process_start(pid) == record.get("start") and _state_of(pid) not in ("Z", "X", None)

    def _fresh_sim_dir(self, slot: int, uid: int) -> int:
        """An empty directory for slot ``slot`` (what an earlier run left is removed), owned by ``uid``,
        0700; its descriptor."""
        root = sim_root(self.state_dir)
        secure_tree(root, 0o711, "simulation")  # a simulation's uid may pass, not list
        parent = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        name = str(slot)
        try:
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(name, dir_fd=parent)  # descriptor-based: never follows a link planted in it
            os.mkdir(name, 0o700, dir_fd=parent)
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            os.fchown(fd, uid, uid)
            os.fchmod(fd, 0o700)
            return fd
        except OSError as exc:
            raise EmuError(f"cannot make the simulation's directory: {exc.strerror or exc}", str(root / name)) from exc
        finally:
            os.close(parent)

    # -- what it did ---------------------------------------------------------------------------------

    def simulation(self, urn: str) -> dict[str, Any]:
        """``{"state": "idle"|"running"|"done"|"failed", "exit_code" (when ended and known), "log" (the
        end of its output, text), "files": {relative name: bytes}, "omitted": [names]}`` of a simulator
        sliver. A run the agent did not start itself (it was restarted meanwhile) has no known exit
        code: it counts as done when it wrote ``summary.json``."""
        spec = self._held(urn)
        if spec.kind != "simulator":
            raise EmuError(f"a {spec.kind} sliver runs no simulation", urn)
        with self._locked(urn):
            answer: dict[str, Any] = {"state": "idle", "log": "", "files": {}, "omitted": []}
            record = self._sim_record(spec.slot)
            if record is None:
                return answer
            running = self._sim_running(spec.slot, record)
            try:
                slot_fd = os.open(sim_dir(self.state_dir, spec.slot),
                                  os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                slot_fd = -1
            except OSError as exc:
                raise EmuError(f"cannot open the simulation's directory: {exc.strerror}", urn) from exc
            try:
                if slot_fd >= 0:
                    answer["log"] = _xml_text(_tail(slot_fd, LOG_NAME, None, LOG_TAIL))
                    answer["files"], answer["omitted"] = read_results(slot_fd, os.fstat(slot_fd).st_uid)
            finally:
                if slot_fd >= 0:
                    os.close(slot_fd)
            code = record.get("exit_code")
            if running:
                answer["state"] = "running"
            elif code is not None:
                answer["state"], answer["exit_code"] = ("done" if code == 0 else "failed"), int(code)
            else:
                answer["state"] = "done" if "summary.json" in answer["files"] else "failed"
            return answer


def read_results(slot_fd: int, owner: int) -> tuple[dict[str, bytes], list[str]]:
    """The files under ``results/`` of the directory ``slot_fd``: regular files owned by ``owner`` only,
    found and read through directory descriptors without following any link; at most
    :data:`RESULTS_CAP` bytes in all (the largest are omitted) and :data:`MAX_FILES` files. Returns
    ``(files, omitted)``: what is not returned is named in ``omitted`` (links, other kinds, others'
    files, unsafe names as escaped text, files over the cap)."""
    found: list[tuple[int, str]] = []  # (size, relative name)
    omitted: list[str] = []
    _walk(slot_fd, RESULTS, "", owner, 0, found, omitted)
    found.sort()
    files: dict[str, bytes] = {}
    total = 0
    for size, rel in found:
        if total + size > RESULTS_CAP or len(files) >= MAX_FILES:
            omitted.append(rel)
            continue
        data = _read_rel(slot_fd, f"{RESULTS}/{rel}", owner, size)
        if data is None:
            omitted.append(rel)
            continue
        files[rel] = data
        total += len(data)
    return files, sorted(omitted)


def _walk(parent: int, name: str, rel: str, owner: int, depth: int, found: list[tuple[int, str]],
          omitted: list[str]) -> None:
    """Add the regular files below ``name`` (a directory in ``parent``) to ``found``."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    except OSError:  # absent, a link, not a directory
        if rel:
            omitted.append(rel)
        return
    try:
        if os.fstat(fd).st_uid != owner:
            if rel:
                omitted.append(rel)
            return
        with os.scandir(fd) as entries:
            names = sorted(entry.name for entry in entries)
        for entry in names:
            sub = f"{rel}/{entry}" if rel else entry
            if not _SAFE_NAME.match(entry):
                omitted.append(ascii(sub))
                continue
            try:
                st = os.stat(entry, dir_fd=fd, follow_symlinks=False)
            except OSError:
                continue  # gone meanwhile
            if stat.S_ISDIR(st.st_mode) and depth < MAX_DEPTH:
                _walk(fd, entry, sub, owner, depth + 1, found, omitted)
            elif stat.S_ISREG(st.st_mode) and st.st_uid == owner:
                found.append((st.st_size, sub))
            else:
                omitted.append(sub)
    finally:
        os.close(fd)


def _open_regular(dir_fd: int, rel: str, owner: int | None) -> int | None:
    """``rel`` (``a/b/c``) below ``dir_fd`` opened for reading, each step without following links, when it
    is a regular file (owned by ``owner``, unless ``None``); else ``None``."""
    parts = rel.split("/")
    fd = os.dup(dir_fd)
    try:
        for part in parts[:-1]:
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = nxt
        leaf = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    st = os.fstat(leaf)
    if not stat.S_ISREG(st.st_mode) or (owner is not None and st.st_uid != owner):
        os.close(leaf)
        return None
    return leaf


def _read_rel(dir_fd: int, rel: str, owner: int, limit: int) -> bytes | None:
    fd = _open_regular(dir_fd, rel, owner)
    if fd is None:
        return None
    try:
        chunks, left = [], limit
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _tail(dir_fd: int, name: str, owner: int | None, size: int) -> bytes:
    """The last ``size`` bytes of the regular file ``name`` in ``dir_fd`` (empty when there is none)."""
    fd = _open_regular(dir_fd, name, owner)
    if fd is None:
        return b""
    try:
        end = os.fstat(fd).st_size
        os.lseek(fd, max(end - size, 0), os.SEEK_SET)
        return os.read(fd, size)
    except OSError:
        return b""
    finally:
        os.close(fd)


def _xml_text(data: bytes) -> str:
    """Bytes as text that XML-RPC can carry (undecodable bytes and characters XML forbids → U+FFFD)."""
    return _XML_BAD.sub("\ufffd", data.decode("utf-8", errors="replace"))


def _create(dir_fd: int, name: str, data: bytes, mode: int) -> None:
    fd = _open_new(dir_fd, name, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except OSError as exc:
        raise EmuError(f"cannot write the simulation's {name}: {exc.strerror}", name) from exc
    finally:
        os.close(fd)


def _open_new(dir_fd: int, name: str, mode: int) -> int:
    """A new file ``name`` in ``dir_fd`` (never an existing one, nor through a link), for writing."""
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    except OSError as exc:
        raise EmuError(f"cannot create the simulation's {name}: {exc.strerror}", name) from exc
    os.fchmod(fd, mode)
    return fd


def _state_of(pid: int) -> str | None:
    """The process's state letter (``R``, ``S``, ``Z`` …), or ``None`` when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    return fields[0] if fields else None


__all__ = ["IPV6", "SIM_USER", "SimRealizer", "read_results"]
