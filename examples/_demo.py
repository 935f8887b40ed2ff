"""What the demos share: running ``primo`` with a data directory, waiting for a server, stopping servers.

The demos import it from their own directory (``python examples/<demo>.py`` puts it on ``sys.path``).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PRIMO = [sys.executable, "-m", "primogeni.cli.main"]


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
