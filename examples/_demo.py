"""What the demos share: running ``primo`` with a data directory, waiting for a server, stopping servers.

The demos import it from their own directory (``python examples/<demo>.py`` puts it on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PRIMO = [sys.executable, "-m", "primogeni.cli.main"]
HOST = "10.254.0.1"  # the host's address on the embedded underlay (primo substrate up's default)


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def primo(home: Path, *args: str, capture: bool = False) -> str:
    """Run ``primo ARGS --home HOME`` (options before a ``--``); its output when ``capture``; exit on failure."""
    print(f"$ primo {' '.join(args)}", flush=True)
    cut = args.index("--") if "--" in args else len(args)  # options go before a command's own arguments
    out = subprocess.run([*PRIMO, *args[:cut], "--home", str(home), *args[cut:]], text=True, check=False,
                         capture_output=capture)
    if out.returncode != 0:
        raise SystemExit(f"primo {' '.join(args)} failed ({out.returncode})\n{out.stdout or ''}{out.stderr or ''}")
    return out.stdout or ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(port: int, proc: subprocess.Popen[bytes], what: str, host: str = "127.0.0.1") -> None:
    """Until ``host:port`` accepts connections; exits if ``proc`` ends first or after 30 s."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"{what} did not listen on {host}:{port}")


def stop(servers: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to every server still running, then wait (SIGKILL after 15 s)."""
    for proc in servers:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in servers:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for_agents(home: Path, nodes: int) -> None:
    """Until the aggregate offers ``nodes`` physical nodes (their agents have registered); exits after 60 s."""
    from primogeni.client import ClientConfig, PrimoClient

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with PrimoClient(ClientConfig.load(home)) as c:
            if c.list_resources(available=True).count("<node ") >= nodes:
                return
        time.sleep(0.5)
    raise SystemExit("the agents did not register with the aggregate within 60 s")


def manifest(home: Path, slice_name: str) -> dict[str, Any]:
    """``primo manifest SLICE --json``: the slice's nodes (interfaces, logins) and links."""
    return dict(json.loads(primo(home, "manifest", slice_name, "--json", capture=True)))


@contextmanager
def embedded_testbed(home: Path | None, what: str, nodes: int = 4) -> Iterator[Path]:
    """A fresh authority in ``home`` (a temporary directory, removed at the end, when None), ``nodes``
    embedded physical nodes (``primo substrate up``), ``primo ch`` and ``primo am --driver agents`` on
    the underlay address, their agents registered; yields the home. Whatever happens, the servers are
    stopped by their process ids and the substrate taken down. ``what`` names the demo (root check)."""
    if os.geteuid() != 0:
        raise SystemExit(f"the {what} demo needs root (network namespaces, veths, nftables)")
    made = home is None
    home = home or Path(tempfile.mkdtemp(prefix=f"primo-{what}-"))
    servers: list[subprocess.Popen[bytes]] = []
    substrate = False
    try:
        step(f"a fresh authority, and {nodes} physical nodes as namespaces on a private underlay")
        ch_port, am_port = free_port(), free_port()
        primo(home, "init", "--project", "demo", "--ch-port", str(ch_port), "--am-port", str(am_port),
              "--hostname", HOST, "--hostname", "127.0.0.1")
        substrate = True
        primo(home, "substrate", "up", "--nodes", str(nodes))
        step("the clearinghouse and the aggregate (driving the node agents)")
        for name, port, extra in (("ch", ch_port, []), ("am", am_port, ["--driver", "agents"])):
            proc = subprocess.Popen([*PRIMO, name, "--home", str(home), "--host", HOST, *extra])
            servers.append(proc)
            wait_for(port, proc, f"primo {name}", HOST)
        wait_for_agents(home, nodes)
        yield home
    finally:
        stop(servers)
        if substrate:
            subprocess.run([*PRIMO, "substrate", "down", "--home", str(home)], check=False)
        if made:
            shutil.rmtree(home, ignore_errors=True)


def ssh_key(home: Path) -> Path:
    """A fresh ed25519 key pair in ``home`` (no passphrase); the private key's path (``.pub`` beside it)."""
    key = home / "id_demo"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key
