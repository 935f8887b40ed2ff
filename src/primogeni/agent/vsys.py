"""vsys: requests from inside a sliver to its node agent, through FIFOs (the PlanetLab way).

Each sliver's directory (``/dev/shm/primo-vsys/<agent>/<slot>/``, bound at ``/vsys`` in the container) holds a
FIFO pair per script: ``setup-link.in``/``.out``, ``delete-link.in``/``.out``,
``list-links.in``/``.out`` (mode 0600, the agent's user). A request is one line, ending in a
newline, written to ``NAME.in``; the answer is one line on ``NAME.out``::

    echo "setup-link l1 10.254.0.12 4097" > /vsys/setup-link.in; head -1 /vsys/setup-link.out
    OK l1

======================================  =================================================
``setup-link LABEL REMOTE KEY``         ``OK LABEL`` — an interface LABEL tunnelled to REMOTE
``delete-link LABEL``                   ``OK``
``list-links``                          ``OK label:remote:key label2:remote2:key2 …``
anything refused or failed              ``ERROR reason``
======================================  =================================================

The work divides in two. :func:`authorise` is pure: it parses one request line against the
sliver's spec (the agent's word, not the sliver's: keys from ``vsys_keys``, remotes from
``vsys_peers``) and the links it already has, and returns a :class:`SetupLink`,
:class:`DeleteLink`, :class:`ListLinks` or :class:`Refusal`. A refusal changes nothing.
:class:`VsysServer` is the I/O: one thread with a selector watches every ``.in`` FIFO (opened
``O_RDWR | O_NONBLOCK``, so a writer closing never gives EOF churn), carries accepted requests out
through the realizer and then the store, and writes the answer to the matching ``.out`` (also
held open read-write, so answers wait in the pipe until the sliver reads them).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import selectors
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from primogeni.agent.spec import SliverSpec
from primogeni.agent.store import Store, VsysLink
from primogeni.errors import EmuError, PrimoError

log = logging.getLogger(__name__)

SCRIPTS = ("setup-link", "delete-link", "list-links")
MAX_LINE = 256  # bytes of one request, newline excluded
MAX_LINKS = 15  # vsys links per sliver (host-side veths primo<slot>t0 … primo<slot>te)
MAX_KEY = (1 << 24) - 1  # tunnel keys are VXLAN VNIs
_ANSWER_MAX = 3000  # < PIPE_BUF, so an answer is written atomically
_READ_BUDGET = 64 * 1024  # bytes read from one FIFO per wake-up, so one sliver cannot starve the others
_LABEL_RE = re.compile(r"[a-z0-9_][a-z0-9_-]{0,14}")
_KEY_RE = re.compile(r"[0-9]{1,8}")
_ADDRESS_RE = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
_RESERVED_LABELS = ("lo", "ctl0")
_USAGE = {"setup-link": ("setup-link", "LABEL", "REMOTE", "KEY"), "delete-link": ("delete-link", "LABEL"),
          "list-links": ("list-links",)}


@dataclass(frozen=True)
class SetupLink:
    label: str
    remote: str
    key: int


@dataclass(frozen=True)
class DeleteLink:
    label: str


@dataclass(frozen=True)
class ListLinks:
    pass


@dataclass(frozen=True)
class Refusal:
    reason: str


Request = SetupLink | DeleteLink | ListLinks


def _show(token: str) -> str:
    """A client-chosen token, safe to repeat in a one-line answer or a log."""
    text = token if len(token) <= 32 else token[:32] + "…"
    return ascii(text)


def authorise(spec: SliverSpec, existing: Sequence[VsysLink], line: str | bytes, *,
              script: str | None = None) -> Request | Refusal:
    """Parse and authorise one request line of ``spec``'s sliver (see the module docstring).

    ``existing`` are the sliver's vsys links; ``script`` is the FIFO the line came through (its
    verb must match). Never raises for any input.
    """
    raw = line.encode("utf-8", "surrogateescape") if isinstance(line, str) else bytes(line)
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    if len(raw) > MAX_LINE:
        return Refusal(f"request longer than {MAX_LINE} bytes")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return Refusal("request must be ASCII")
    if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in text):
        return Refusal("request contains control characters")
    tokens = text.split()
    if not tokens:
        return Refusal("empty request")
    verb, args = tokens[0], tokens[1:]
    if verb not in SCRIPTS:
        return Refusal(f"unknown request {_show(verb)} (known: {', '.join(SCRIPTS)})")
    if script is not None and verb != script:
        return Refusal(f"{verb} requests go to {verb}.in, not {script}.in")
    if len(args) != len(_USAGE[verb]) - 1:
        return Refusal(f"usage: {' '.join(_USAGE[verb])}")
    if verb == "list-links":
        return ListLinks()
    labels = {link.label for link in existing}
    if verb == "delete-link":
        label = args[0]
        if label not in labels:
            return Refusal(f"no vsys link {_show(label)}")
        return DeleteLink(label)
    label, remote, key_text = args
    refusal = _check_label(spec, labels, label)
    if refusal is not None:
        return refusal
    if not _ADDRESS_RE.fullmatch(remote):
        return Refusal(f"remote {_show(remote)} is not an IPv4 address")
    try:
        address = ipaddress.IPv4Address(remote)
    except ValueError:
        return Refusal(f"remote {_show(remote)} is not an IPv4 address")
    if str(address) not in spec.vsys_peers:
        return Refusal(f"remote {address} is not a node of this slice")
    if not _KEY_RE.fullmatch(key_text):
        return Refusal(f"key {_show(key_text)} is not a decimal number")
    key = int(key_text)
    if not 1 <= key <= MAX_KEY:
        return Refusal(f"key {key} is out of range (1-{MAX_KEY})")
    if key not in spec.vsys_keys:
        return Refusal(f"key {key} is not one of this slice's keys")
    for link in existing:
        if link.key == key:
            return Refusal(f"key {key} is already used by vsys link {link.label}")
    if len(existing) >= MAX_LINKS:
        return Refusal(f"at most {MAX_LINKS} vsys links per sliver")
    return SetupLink(label, str(address), key)


def _check_label(spec: SliverSpec, labels: set[str], label: str) -> Refusal | None:
    if not _LABEL_RE.fullmatch(label):
        return Refusal(f"label {_show(label)} must be 1-15 of a-z, 0-9, '_' and '-' (not first)")
    if label in _RESERVED_LABELS or label.startswith("eth"):
        return Refusal(f"label {label} is reserved")
    if label in labels or label in {i.name for i in spec.interfaces}:
        return Refusal(f"label {label} is already in use")
    return None


def format_links(links: Sequence[VsysLink]) -> str:
    """The ``list-links`` answer."""
    return " ".join(["OK", *(f"{link.label}:{link.remote}:{link.key}" for link in links)])


class VsysBackend(Protocol):
    """The part of the realizer that vsys drives."""

    def vsys_setup_link(self, sliver_urn: str, label: str, remote: str, key: int) -> None: ...
    def vsys_delete_link(self, sliver_urn: str, label: str) -> None: ...


@dataclass(eq=False)
class _Channel:
    """One script of one sliver: its FIFO pair and the unfinished request bytes."""

    urn: str
    script: str
    in_path: Path
    out_path: Path
    in_fd: int
    out_fd: int
    buffer: bytearray = field(default_factory=bytearray)
    discarding: bool = False  # inside an over-long line: drop bytes until its newline


# Every user of the sliver may make requests (its logins as well as root): the FIFOs are reachable only
# through the sliver's own /vsys bind mount, since the agent keeps their parent directory root-only (0700).
FIFO_MODE = 0o666


def secure_tree(root: Path, mode: int = 0o700, what: str = "vsys") -> None:
    """Make ``root`` a directory of ours with ``mode`` (default root-only, 0700), and its parent when
    missing (0711), refusing either when it is a symlink or not ours: these trees live under
    world-writable or shared places (``/dev/shm``, ``/run``), where anyone could have put something in
    our place first. ``what`` names the tree in errors."""
    for step, step_mode in ((root.parent, 0o711), (root, mode)):
        try:
            os.mkdir(step, step_mode)
        except FileExistsError:
            pass
        except OSError as exc:
            raise EmuError(f"cannot make the {what} directory: {exc.strerror or exc}", str(step)) from None
        st = os.lstat(step)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            raise EmuError("is not a directory of ours (a symlink, or someone else's): refusing to use it",
                           str(step))
    os.chmod(root, mode)


def _open_fifo(path: Path) -> int:
    """Our FIFO at ``path`` (made, or remade if something else is there), open read-write, non-blocking."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    try:
        if st is not None and not stat.S_ISFIFO(st.st_mode):
            path.unlink()  # a file or symlink the sliver put in our place (a directory fails here)
            st = None
        if st is None:
            os.mkfifo(path, FIFO_MODE)
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise EmuError(f"cannot make the vsys FIFO: {exc.strerror or exc}", str(path)) from None
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            raise EmuError("is not a FIFO", str(path))
        os.fchown(fd, os.geteuid(), os.getegid())
        os.fchmod(fd, FIFO_MODE)
    except OSError as exc:
        os.close(fd)
        raise EmuError(f"cannot secure the vsys FIFO: {exc.strerror or exc}", str(path)) from None
    except EmuError:
        os.close(fd)
        raise
    return fd


class VsysServer:
    """Serves the vsys FIFOs of every sliver on the node (see the module docstring)."""

    def __init__(self, store: Store, realizer: VsysBackend):
        self.store = store
        self.realizer = realizer
        self._lock = threading.RLock()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._channels: dict[int, _Channel] = {}  # in_fd → channel
        self._dirs: dict[str, Path] = {}  # sliver URN → its vsys directory
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._closed = False

    # -- slivers

    def add_sliver(self, spec: SliverSpec, directory: str | os.PathLike[str]) -> None:
        """Make (or reuse) the sliver's FIFOs in ``directory`` and serve them; idempotent."""
        directory = Path(directory)
        with self._lock:
            if self._closed:
                raise EmuError("the vsys server is stopped", str(directory))
            if self._dirs.get(spec.urn) == directory:
                return
            if spec.urn in self._dirs:
                self.remove_sliver(spec.urn)
            try:
                # other slivers share the file system: only root may reach this sliver's FIFOs by path
                secure_tree(directory.parent)
                directory.mkdir(mode=0o755, exist_ok=True)
            except OSError as exc:
                raise EmuError(f"cannot make the vsys directory: {exc.strerror or exc}", str(directory)) from None
            made: list[_Channel] = []
            try:
                for script in SCRIPTS:
                    in_path, out_path = directory / f"{script}.in", directory / f"{script}.out"
                    in_fd = _open_fifo(in_path)
                    try:
                        out_fd = _open_fifo(out_path)
                    except EmuError:
                        os.close(in_fd)
                        raise
                    made.append(_Channel(spec.urn, script, in_path, out_path, in_fd, out_fd))
            except EmuError:
                for channel in made:
                    os.close(channel.in_fd)
                    os.close(channel.out_fd)
                raise
            for channel in made:
                self._selector.register(channel.in_fd, selectors.EVENT_READ, channel)
                self._channels[channel.in_fd] = channel
            self._dirs[spec.urn] = directory
        log.debug("vsys: serving %s in %s", spec.urn, directory)

    def remove_sliver(self, urn: str) -> None:
        """Stop serving the sliver and remove its FIFOs (not the directory); an unknown URN is fine."""
        with self._lock:
            self._dirs.pop(urn, None)
            for fd, channel in list(self._channels.items()):
                if channel.urn != urn:
                    continue
                self._close(channel)
                del self._channels[fd]
                for path in (channel.in_path, channel.out_path):
                    try:
                        path.unlink(missing_ok=True)
                    except OSError as exc:
                        raise EmuError(f"cannot remove the vsys FIFO: {exc.strerror or exc}", str(path)) from None

    def _close(self, channel: _Channel) -> None:
        self._selector.unregister(channel.in_fd)
        os.close(channel.in_fd)
        os.close(channel.out_fd)

    def served(self) -> dict[str, Path]:
        """Sliver URN → the directory whose FIFOs are served."""
        with self._lock:
            return dict(self._dirs)

    # -- requests

    def handle(self, urn: str, script: str, line: bytes) -> str:
        """Carry out one request line of sliver ``urn`` (from ``script``.in); the answer line."""
        with self._lock:
            spec = self.store.get_sliver(urn)
            if spec is None:
                return "ERROR no such sliver"
            request = authorise(spec, self.store.vsys_links(urn), line, script=script)
            if isinstance(request, Refusal):
                log.info("vsys %s: refused %s: %s", urn, script, request.reason)
                return f"ERROR {request.reason}"
            if isinstance(request, ListLinks):
                return format_links(self.store.vsys_links(urn))
            try:
                if isinstance(request, SetupLink):
                    self.realizer.vsys_setup_link(urn, request.label, request.remote, request.key)
                    self.store.put_vsys_link(urn, VsysLink(request.label, request.remote, request.key))
                    answer = f"OK {request.label}"
                else:
                    self.realizer.vsys_delete_link(urn, request.label)
                    self.store.drop_vsys_link(urn, request.label)
                    answer = "OK"
            except (PrimoError, OSError) as exc:
                log.warning("vsys %s: %s failed: %s", urn, request, exc)
                return f"ERROR {exc}"
            except Exception:
                # A bug of ours or the realizer's must not end the vsys thread; it goes to the log.
                log.exception("vsys %s: %s failed", urn, request)
                return "ERROR internal error (see the agent's log)"
            log.info("vsys %s: %s", urn, request)
            return answer

    def _read(self, channel: _Channel) -> None:
        budget = _READ_BUDGET
        while budget > 0:
            try:
                chunk = os.read(channel.in_fd, 4096)
            except BlockingIOError:
                return
            except OSError as exc:
                log.warning("vsys %s: cannot read %s: %s", channel.urn, channel.in_path, exc)
                return
            if not chunk:
                return
            budget -= len(chunk)
            channel.buffer += chunk
            while True:
                end = channel.buffer.find(b"\n")
                if end < 0:
                    if len(channel.buffer) > MAX_LINE:
                        channel.buffer.clear()
                        if not channel.discarding:
                            channel.discarding = True
                            self._answer(channel, f"ERROR request longer than {MAX_LINE} bytes")
                    break
                line = bytes(channel.buffer[:end])
                del channel.buffer[: end + 1]
                if channel.discarding:  # the tail of an over-long line, already answered
                    channel.discarding = False
                    continue
                self._answer(channel, self.handle(channel.urn, channel.script, line))

    def _answer(self, channel: _Channel, answer: str) -> None:
        text = "".join(c if " " <= c < "\x7f" else "?" for c in answer)[:_ANSWER_MAX]
        try:
            os.write(channel.out_fd, (text + "\n").encode("ascii"))
        except BlockingIOError:
            log.warning("vsys %s: %s is full (nobody reads the answers); answer dropped", channel.urn,
                        channel.out_path)
        except OSError as exc:
            log.warning("vsys %s: cannot write %s: %s", channel.urn, channel.out_path, exc)

    # -- the thread

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("vsys server already started")
        self._thread = threading.Thread(target=self._run, name="agent-vsys", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            ready = self._selector.select(timeout=1.0)
            with self._lock:
                if self._stopping:
                    return
                for key, _mask in ready:
                    if key.fd == self._wake_r:
                        self._drain_wake()
                        continue
                    channel = self._channels.get(key.fd)
                    if channel is not None and channel is key.data:  # not closed meanwhile
                        self._read(channel)

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def stop(self) -> None:
        """Stop the thread and close every FIFO; the FIFO files stay for the next agent."""
        with self._lock:
            if self._closed:
                return
            self._stopping = True
        with contextlib.suppress(BlockingIOError):  # a full pipe: the thread is being woken anyway
            os.write(self._wake_w, b"x")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        with self._lock:
            for channel in self._channels.values():
                self._close(channel)
            self._channels.clear()
            self._dirs.clear()
            self._selector.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._closed = True


__all__ = ["MAX_KEY", "MAX_LINE", "MAX_LINKS", "SCRIPTS", "DeleteLink", "ListLinks", "Refusal", "Request",
           "SetupLink", "VsysBackend", "VsysServer", "authorise", "format_links"]
