"""``primogeni.am.modelbox``: models described in the sandbox (limits, Landlock, and as root a fresh network
namespace and user nobody), hostile models stopped, the temporary directory always removed; models fetched
by URL from a local HTTP server."""

from __future__ import annotations

import http.server
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from primogeni.am import modelbox
from primogeni.am.modelbox import describe_model, fetch_model
from primogeni.geni.codes import GeniCode
from primogeni.geni.errors import GeniError

ROOT = Path(__file__).resolve().parents[2]
CHAIN = (ROOT / "tests" / "immersion" / "models" / "chain.py").read_text()
SLICE_DML = (ROOT / "tests" / "immersion" / "models" / "slice.dml").read_text()
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the Python sandbox (a network namespace "
                                                          "and user nobody) is made only by root")
needs_landlock = pytest.mark.skipif(modelbox.landlock_abi() < 1, reason="this kernel has no Landlock")


def _hostile(code: str) -> str:
    """The chain model, with ``code`` run first (at load time)."""
    return code + "\n" + CHAIN


@pytest.fixture(autouse=True)
def temp_dirs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every temporary directory describe_model makes; each must be gone when the test ends."""
    made: list[str] = []
    real = tempfile.mkdtemp

    def spy(*args: object, **kwargs: object) -> str:
        path = real(*args, **kwargs)  # type: ignore[call-overload]
        made.append(path)
        return str(path)

    monkeypatch.setattr(tempfile, "mkdtemp", spy)
    yield made
    assert [p for p in made if os.path.exists(p)] == []


def _error(fmt: str, text: str, **kw: object) -> GeniError:
    with pytest.raises(GeniError) as info:
        describe_model(fmt, text, **kw)  # type: ignore[arg-type]
    return info.value


def test_dml_model_is_described(temp_dirs: list[str]) -> None:
    desc = describe_model("dml", SLICE_DML)
    assert desc["prefix"] == "10.2.0.0/16" and [e["path"] for e in desc["emulated"]] == ["top:1", "top:3"]
    assert desc["paths"][0]["ping_rtt_s"] > 0 and len(temp_dirs) == 1


def test_dml_model_error_is_badargs_with_the_message() -> None:
    err = _error("dml", "Net [\n  host [ id 1 ]\n  link [ attach 1(0) attach 2(0) ]\n]\n")
    assert err.code == GeniCode.BADARGS and err.reason.startswith("model: model.dml:3"), err.reason


def test_bad_arguments_are_refused_before_anything_runs(temp_dirs: list[str]) -> None:
    assert _error("ns2", "x").code == GeniCode.BADARGS
    assert "not an identifier" in _error("python", CHAIN, params={"a=b": "1"}).reason
    assert temp_dirs == []


def test_non_root_refuses_python_but_describes_dml(monkeypatch: pytest.MonkeyPatch, temp_dirs: list[str]) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    err = _error("python", CHAIN)
    assert err.code == GeniCode.BADARGS and "python models need the aggregate to run as root" in err.reason
    assert "DML" in err.reason and temp_dirs == []
    assert describe_model("dml", SLICE_DML)["name"] == "top"  # limits (and Landlock if any), no namespace


@needs_root
@needs_landlock
@pytest.mark.root
def test_python_model_with_params_runs_as_nobody_in_an_empty_network_namespace() -> None:
    desc = describe_model("python", CHAIN, params={"routers": "3", "delay_us": "1000"})
    assert desc["paths"][0]["routers"] == ["top:r0", "top:r1", "top:r2"]
    assert desc["paths"][0]["one_way_delay_s"] == pytest.approx(0.004)
    probe = ("import os, socket\nfrom primogeni.errors import ModelError\n"
             "raise ModelError(f'uid={os.getuid()} gid={os.getgid()} groups={os.getgroups()} "
             "links={[n for _, n in socket.if_nameindex()]} dir={oct(os.stat(\".\").st_mode)} "
             "file={oct(os.stat(\"model.py\").st_mode)}')\n")
    err = _error("python", probe)
    assert err.code == GeniCode.BADARGS
    assert "uid=65534 gid=65534 groups=[] links=['lo'] dir=0o40711 file=0o100644" in err.reason, err.reason


@needs_root
@needs_landlock
@pytest.mark.root
def test_python_model_cannot_reach_the_network() -> None:
    tcp = socket.create_server(("127.0.0.1", 0))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    try:
        tport, uport = tcp.getsockname()[1], udp.getsockname()[1]
        tried = ("import socket\n"
                 f"for f in (lambda: socket.create_connection(('127.0.0.1', {tport}), timeout=2),\n"
                 "          lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(\n"
                 f"              b'x', ('127.0.0.1', {uport}))):\n"
                 "    try:\n        f()\n    except OSError as e:\n        print('refused:', e)\n")
        desc = describe_model("python", _hostile(tried))  # the model caught its errors: described all the same
        assert desc["name"] == "top"
        for s in (tcp, udp):
            s.settimeout(0.3)
        with pytest.raises(TimeoutError):
            tcp.accept()
        with pytest.raises(TimeoutError):
            udp.recvfrom(16)
    finally:
        tcp.close()
        udp.close()


@needs_root
@needs_landlock
@pytest.mark.root
def test_python_model_cannot_write_read_or_run_files_nor_fork() -> None:
    name = f"primo-modelbox-{os.getpid()}-{time.monotonic_ns()}"
    targets = [Path(tempfile.gettempdir()) / name, Path("/var/tmp") / name]
    for code in (f"open('../{name}', 'w').write('x')", f"open('/tmp/{name}', 'w').write('x')",
                 f"open('/var/tmp/{name}', 'w').write('x')", f"import os\nos.mkdir('/tmp/{name}')"):
        err = _error("python", _hostile(code))
        assert err.code == GeniCode.BADARGS and "PermissionError" in err.reason, err.reason
        assert not any(t.exists() for t in targets)
    err = _error("python", _hostile("open('/etc/passwd').read()"))
    assert "PermissionError" in err.reason and "/etc/passwd" in err.reason
    err = _error("python", _hostile(f"import os\nos.execv('/bin/sh', ['sh', '-c', 'touch /tmp/{name}'])"))
    assert "PermissionError" in err.reason and not targets[0].exists()
    err = _error("python", _hostile("import os\nos.fork()"))
    assert "BlockingIOError" in err.reason
    err = _error("python", _hostile("import os, signal\nos.kill(1, signal.SIGTERM)"))
    assert "PermissionError" in err.reason


@needs_root
@needs_landlock
@pytest.mark.root
def test_python_model_that_never_ends_is_stopped_in_time() -> None:
    start = time.monotonic()
    err = _error("python", "while True:\n    pass\n", timeout=3)
    took = time.monotonic() - start
    assert err.code == GeniCode.BADARGS and "took longer than 3 s to load" in err.reason, err.reason
    assert took < 5, took


@needs_root
@needs_landlock
@pytest.mark.root
def test_python_model_that_wants_8_gib_fails_clearly() -> None:
    err = _error("python", _hostile("x = bytearray(8 * 2**30)"), memory_mb=512)
    assert err.code == GeniCode.BADARGS and "out of memory" in err.reason and "512 MiB" in err.reason, err.reason


@needs_root
@needs_landlock
@pytest.mark.root
def test_python_model_that_forges_its_output_is_an_error() -> None:
    err = _error("python", "import os\nos.write(1, b'{\"version\": 1}')\nos._exit(0)\n")
    assert err.code == GeniCode.ERROR and "malformed" in err.reason
    err = _error("python", "import os\nos.write(1, b'not json')\nos._exit(0)\n")
    assert err.code == GeniCode.ERROR and "malformed" in err.reason


# -- fetch_model ---------------------------------------------------------------------------------------------
class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        routes: dict[str, tuple[int, dict[str, str], bytes]] = {
            "/model.dml": (200, {}, SLICE_DML.encode()),
            "/big": (200, {}, b"#" * 5000),
            "/big-unsized": (200, {"Connection": "close"}, b"#" * 5000),
            "/latin1": (200, {}, "Net [ name caf\xe9 ]".encode("latin-1")),
            "/to-file": (302, {"Location": "file:///etc/passwd"}, b""),
            "/to-ftp": (302, {"Location": "ftp://127.0.0.1/model.dml"}, b""),
            "/to-model": (302, {"Location": "/model.dml"}, b""),
        }
        code, headers, body = routes.get(self.path, (404, {}, b"no"))
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        if self.path != "/big-unsized":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _fetch_error(url: str, **kw: object) -> str:
    with pytest.raises(GeniError) as info:
        fetch_model(url, **kw)  # type: ignore[arg-type]
    assert info.value.code == GeniCode.BADARGS and url in info.value.reason
    return info.value.reason


def test_fetch_model(server: str) -> None:
    assert fetch_model(f"{server}/model.dml") == SLICE_DML
    assert fetch_model(f"{server}/to-model") == SLICE_DML  # a redirect to http is followed
    assert "more than the 4096" in _fetch_error(f"{server}/big", max_bytes=4096)
    assert "more than the 4096" in _fetch_error(f"{server}/big-unsized", max_bytes=4096)
    assert fetch_model(f"{server}/big", max_bytes=5000) == "#" * 5000
    assert "HTTP 404" in _fetch_error(f"{server}/nothing")
    assert "not UTF-8" in _fetch_error(f"{server}/latin1")
    assert "not allowed" in _fetch_error(f"{server}/to-file")  # urllib's own refusal
    assert "not http or https" in _fetch_error(f"{server}/to-ftp")  # which lets ftp through: ours does not
    for url in ("file:///etc/passwd", "ftp://127.0.0.1/model.dml", "/etc/passwd"):
        assert "only http and https" in _fetch_error(url)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert "refused" in _fetch_error(f"http://127.0.0.1:{port}/model.dml").lower()
