"""The aggregate's sandbox for researchers' models: what a model is, learnt without trusting it.

A request RSpec carries a model: DML text, or a Python script (arbitrary code). The aggregate
needs its description (:mod:`primogeni.sim.describe`) before it allocates anything, and never
loads a model in its own process. :func:`describe_model` writes the text into a fresh temporary
directory (0711; the file 0644) and runs ``sys.executable -m primogeni.sim.describe`` on it in a
child with a minimal environment, stdin ``/dev/null``, capped stdout and stderr, a wall-clock
deadline, and, set by the child before any model code runs:

* resource limits: address space ``memory_mb``, CPU time ``timeout`` + 1 s, file size 1 MiB,
  64 descriptors, no core dumps, one process (as ``nobody``: no fork, no threads);
* Landlock (Linux >= 5.13): it may read only the Python installation, our package, the system's
  shared libraries and its own directory; it may not write, create, remove or execute any file;
  with Landlock ABI 4+ it may not bind or connect TCP; with ABI 6+ it may not reach abstract
  Unix sockets or signal processes outside it;
* when the aggregate runs as root: a fresh network namespace (``unshare --net``: a loopback,
  down) and user ``nobody`` (65534/65534, no groups, no capabilities, ``no_new_privs``, via
  ``setpriv``).

Python models need all of it: without root, or without Landlock, they are refused (BADARGS);
DML, which is only parsed, runs with the limits and whatever else there is. What the sandbox does
not stop: a model uses up to its CPU, memory and time; as ``nobody`` it may connect to
world-writable *pathname* Unix sockets (``/dev/log``, D-Bus), which Landlock does not cover yet;
and a Python model runs in the describing interpreter, so the description and error text that
come back are its own word. They are checked for shape and address sanity
(:func:`~primogeni.sim.describe.check_description`); the aggregate still applies its own policy
(e.g. which address space a slice may have).

:func:`fetch_model` fetches a model given by URL (http/https only, size capped).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import IO, Any

from primogeni.geni.codes import GeniCode
from primogeni.geni.errors import GeniError
from primogeni.sim.describe import check_description

NOBODY = 65534
STDOUT_MAX = 64 * 2**20
STDERR_MAX = 64 * 2**10
FILE_MAX = 2**20
SANDBOX_FAILED = 3  # the child's exit code when it could not set its sandbox up
SYSTEM_READ = ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/etc/ld.so.cache")

# Run by the child's interpreter (-I -B -c) before anything of the model: limits, then Landlock,
# then the describe command. argv[1] is the JSON configuration made by describe_model.
_BOOTSTRAP = r"""
import ctypes, json, os, resource, runpy, stat, struct, sys
cfg = json.loads(sys.argv[1])
def fail(what):
    sys.stderr.write("sandbox: %s: %s\n" % (what, os.strerror(ctypes.get_errno())))
    sys.exit(3)
for name, value in cfg["limits"].items():
    resource.setrlimit(getattr(resource, name), (value, value))
libc, L = ctypes.CDLL(None, use_errno=True), ctypes.c_long
abi = libc.syscall(L(444), None, L(0), L(1))  # landlock_create_ruleset(NULL, 0, VERSION)
if abi < 1 and cfg["landlock"]:
    fail("this kernel has no Landlock")
if abi >= 1:
    fs = 0x1FFF | (0x2000 if abi >= 2 else 0) | (0x4000 if abi >= 3 else 0)  # every file right but ioctl
    attr = struct.pack("=QQQ", fs, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0)  # fs, net (TCP), scoped
    attr = attr[: 8 if abi < 4 else 16 if abi < 6 else 24]
    ruleset = libc.syscall(L(444), attr, L(len(attr)), L(0))
    if ruleset < 0:
        fail("landlock_create_ruleset")
    for path in sorted(set(cfg["read"] + sys.path + [sys.prefix, sys.base_prefix, sys.exec_prefix, os.getcwd()])):
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue  # absent, or not ours to read anyway
        access = 0x4 | (0x8 if stat.S_ISDIR(os.fstat(fd).st_mode) else 0)  # READ_FILE, READ_DIR
        if libc.syscall(L(445), L(ruleset), L(1), struct.pack("=Qi", access, fd), L(0)) < 0:
            fail("landlock_add_rule " + path)
        os.close(fd)
    if libc.prctl(38, L(1), L(0), L(0), L(0)) < 0 or libc.syscall(L(446), L(ruleset), L(0)) < 0:
        fail("landlock_restrict_self")
    os.close(ruleset)
del sys.argv[1]
runpy.run_module("primogeni.sim.describe", run_name="__main__", alter_sys=True)
"""


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 without Landlock."""
    libc = ctypes.CDLL(None, use_errno=True)
    abi = libc.syscall(ctypes.c_long(444), None, ctypes.c_long(0), ctypes.c_long(1))
    return max(int(abi), 0)


def _tool(name: str) -> str:
    path = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/bin:/bin:/usr/sbin:/sbin")
    if path is None:
        raise GeniError(GeniCode.ERROR, f"cannot sandbox the model: util-linux {name!r} is not installed")
    return path


def describe_model(fmt: str, text: str, *, params: Mapping[str, str] | None = None, timeout: float = 60.0,
                   memory_mb: int = 2048) -> dict[str, Any]:
    """The description (version 1, see :mod:`primogeni.sim.describe`) of a ``dml`` or ``python``
    model given as ``text``, learnt in the sandbox (see the module's docstring). Model errors,
    refusals and time-outs are :class:`GeniError` BADARGS; a broken sandbox or output, ERROR."""
    if fmt not in ("dml", "python"):
        raise GeniError(GeniCode.BADARGS, f"a model is 'dml' or 'python', not {fmt!r}")
    params = dict(params or {})
    for key in params:
        if not key.isidentifier():
            raise GeniError(GeniCode.BADARGS, f"model parameter name {key!r} is not an identifier")
    root = os.geteuid() == 0
    if fmt == "python" and not root:
        raise GeniError(GeniCode.BADARGS, "python models need the aggregate to run as root to sandbox them (a "
                                          "network namespace and user nobody); this one does not: use a DML model")
    if fmt == "python" and landlock_abi() < 1:
        raise GeniError(GeniCode.BADARGS, "python models need a kernel with Landlock (Linux 5.13 or later) to "
                                          "sandbox them; this aggregate's has none: use a DML model")
    tmp = tempfile.mkdtemp(prefix="primo-model-")
    try:
        os.chmod(tmp, 0o711)
        path = "model.dml" if fmt == "dml" else "model.py"  # in the child's cwd: errors name it so
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(os.path.join(tmp, path), flags, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(fd, 0o644)
            f.write(text)
        cpu = math.ceil(timeout) + 1  # a backstop: the wall-clock deadline comes first
        cfg = {"limits": {"RLIMIT_AS": memory_mb * 2**20, "RLIMIT_CPU": cpu, "RLIMIT_FSIZE": FILE_MAX,
                          "RLIMIT_NOFILE": 64, "RLIMIT_CORE": 0, "RLIMIT_NPROC": 1},
               "landlock": fmt == "python", "read": [*SYSTEM_READ, tmp]}
        argv = [sys.executable, "-I", "-B", "-c", _BOOTSTRAP, json.dumps(cfg), "--format", fmt]
        argv += [f"--param={k}={v}" for k, v in params.items()] + ["--", path]
        if root:
            _check_reachable(tmp)
            argv = [_tool("unshare"), "--net", "--", _tool("setpriv"), f"--reuid={NOBODY}", f"--regid={NOBODY}",
                    "--clear-groups", "--nnp", "--inh-caps=-all", "--bounding-set=-all", "--", *argv]
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "OPENBLAS_NUM_THREADS": "1",
               "OMP_NUM_THREADS": "1"}  # numerical libraries: no threads (the model may not start any)
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    cwd=tmp, env=env, start_new_session=True, close_fds=True)
        except OSError as exc:
            raise GeniError(GeniCode.ERROR, f"cannot start the model's sandbox ({argv[0]}): {exc}") from None
        out, err, why = _collect(proc, timeout)
    finally:
        shutil.rmtree(tmp)
    return _outcome(proc.returncode, out, err, why, timeout, cpu, memory_mb)


def _check_reachable(directory: str) -> None:
    """User nobody must be able to reach the model file: every directory above it searchable."""
    d = os.path.dirname(os.path.abspath(directory))
    while True:
        if not os.stat(d).st_mode & 0o001:
            raise GeniError(GeniCode.ERROR, f"cannot sandbox the model: user nobody cannot reach {directory} "
                                            f"({d} is not searchable by all); set TMPDIR to a directory it can")
        if d == "/":
            return
        d = os.path.dirname(d)


def _collect(proc: subprocess.Popen[bytes], timeout: float) -> tuple[bytes, bytes, str | None]:
    """Read the child's stdout and stderr (capped) until it ends, for at most ``timeout`` s, then
    make sure it is gone. Returns (stdout, stderr, None | "timeout" | "overflow")."""
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.fileno(), proc.stderr.fileno()
    bufs, caps = {out: bytearray(), err: bytearray()}, {out: STDOUT_MAX, err: STDERR_MAX}
    deadline = time.monotonic() + timeout
    why: str | None = None
    with selectors.DefaultSelector() as sel:
        for fd in bufs:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        try:
            while why is None and sel.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    why = "timeout"
                for key, _ in sel.select(max(left, 0)):
                    chunk, buf = os.read(key.fd, 1 << 16), bufs[key.fd]
                    if not chunk:
                        sel.unregister(key.fd)
                    elif key.fd == out and len(buf) + len(chunk) > STDOUT_MAX:
                        why = "overflow"
                    else:
                        buf += chunk[: caps[key.fd] - len(buf)]  # stderr: its start, the rest dropped
            if why is None:
                proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            why = "timeout"
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # its own session: the child and anything it made
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()
    return bytes(bufs[out]), bytes(bufs[err]), why


def _outcome(rc: int, out: bytes, err: bytes, why: str | None, timeout: float, cpu: int,
             memory_mb: int) -> dict[str, Any]:
    errtext = err.decode("utf-8", "replace")
    lines = errtext.strip().splitlines()
    errors = [ln[len("error: "):] for ln in lines if ln.startswith("error: ")]
    message = (errors[-1] if errors else lines[-1] if lines else "")[:2000]
    if why == "timeout":
        raise GeniError(GeniCode.BADARGS, f"the model took longer than {timeout:g} s to load (it was stopped); "
                                          "make it smaller or simpler")
    if why == "overflow":
        raise GeniError(GeniCode.ERROR, f"the model's description is larger than {STDOUT_MAX >> 20} MiB")
    if rc == -signal.SIGXCPU:
        raise GeniError(GeniCode.BADARGS, f"the model used more than {cpu} s of CPU time to load (it was stopped)")
    if rc < 0:
        raise GeniError(GeniCode.BADARGS, f"the model's process died of {signal.Signals(-rc).name} while loading "
                                          f"(its limits: {memory_mb} MiB, {cpu} s of CPU): {message}")
    if rc == 2:
        hint = f" (the aggregate allows {memory_mb} MiB)" if "out of memory" in message else ""
        raise GeniError(GeniCode.BADARGS, f"model: {message or 'refused'}{hint}")
    if rc == SANDBOX_FAILED:
        raise GeniError(GeniCode.ERROR, f"cannot sandbox the model: {errtext.strip()[-2000:]}")
    if rc != 0:
        raise GeniError(GeniCode.ERROR, f"describing the model failed (exit code {rc}): {message}")
    try:
        return check_description(json.loads(out))
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise GeniError(GeniCode.ERROR, f"the model's description is malformed: {exc}") from None


class _SameScheme(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str,
                         headers: Any, newurl: str) -> urllib.request.Request | None:
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            raise urllib.error.URLError(f"redirected to {newurl!r}, which is not http or https")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch_model(url: str, *, max_bytes: int = 4 * 2**20, timeout: float = 10.0) -> str:
    """The text of the model at ``url`` (http or https; redirects only to http or https; at most
    ``max_bytes``; UTF-8). Every failure is a :class:`GeniError` BADARGS naming the URL."""
    def bad(what: str) -> GeniError:
        return GeniError(GeniCode.BADARGS, f"cannot fetch the model from {url}: {what}")

    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise bad("only http and https URLs are fetched")
    opener = urllib.request.build_opener(_SameScheme)
    try:
        with opener.open(urllib.request.Request(url, headers={"User-Agent": "primogeni-am"}), timeout=timeout) as r:
            length = r.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise bad(f"it is {int(length)} bytes, more than the {max_bytes} allowed")
            data: bytes = r.read(max_bytes + 1)  # one byte more tells a model that is too big
    except urllib.error.HTTPError as exc:
        exc.close()
        raise bad(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise bad(str(exc.reason)) from None
    except (OSError, ValueError) as exc:  # timeouts, resets, malformed URLs and responses
        raise bad(str(exc) or type(exc).__name__) from None
    if len(data) > max_bytes:
        raise bad(f"it is more than the {max_bytes} bytes allowed")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None


__all__ = ["describe_model", "fetch_model", "landlock_abi"]
