"""A whole testbed on this machine for the end-to-end substrate tests.

``testbed`` (module scope): a fresh authority, ``primo substrate up --nodes 3`` (three physical
nodes as namespaces, each with its own agent), ``primo ch`` and ``primo am --driver agents`` as
their own processes on the host's underlay address, a member, a project and an SSH key. At the
end every slice is deleted, the servers are stopped by their process ids, ``primo substrate down``
runs, and the test fails if any PrimoGENI namespace, device or agent is left.

Also helpers the substrate tests share: :func:`token` (a random name part) and :func:`run_all`
(cleanup steps that all run, whatever fails).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

PRIMO = [sys.executable, "-m", "primogeni.cli.main"]
HOST = "10.254.0.1"  # the host's address on the embedded underlay (primo substrate up's default)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the substrate needs root (namespaces, veths, nftables)")


def token(n: int = 5) -> str:
    """``n`` random lower-case letters and digits, to make names no concurrent test uses."""
    return "".join(random.choices(string.ascii_lowercase + string.digits, k=n))


def run_all(steps: Iterable[Callable[[], object]]) -> None:
    """Run every cleanup step, whatever failed before it; then fail naming what failed."""
    errors = []
    for step in steps:
        try:
            step()
        except Exception as exc:  # collected and reported below, after the other steps ran
            errors.append(exc)
    assert not errors, errors


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def primo(home: Path, *args: str, check: bool = True, timeout: float = 120,
          input: str | None = None) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([*PRIMO, *args, "--home", str(home)], capture_output=True, text=True, timeout=timeout,
                         input=input)
    if check and out.returncode != 0:
        raise AssertionError(f"primo {' '.join(args)} → {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def primo_exec(home: Path, slice_name: str, host: str, *argv: str, user: str | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess[str]:
    extra = ["--user", user] if user else []
    return subprocess.run([*PRIMO, "exec", slice_name, host, "--home", str(home), *extra, "--", *argv],
                          capture_output=True, text=True, timeout=timeout)


NODES = ("pc1", "pc2", "pc3", "pc4")  # the demo uses four


def leftovers() -> list[str]:
    """What this testbed makes, if it is on the machine: its namespaces and its root-namespace veth.

    Only these names: other PrimoGENI objects on the machine are not the testbed's business.
    """
    found = []
    netns = Path("/run/netns")
    if netns.is_dir():
        found += [f"netns {p.name}" for p in netns.iterdir()
                  if p.name == "primo-underlay" or any(p.name == f"primo-{n}" or p.name.startswith(f"primo-{n}-")
                                                       for n in NODES)]
    if Path("/sys/class/net/primo-ul0").exists():
        found.append("link primo-ul0")
    return found


@dataclass
class Testbed:
    __test__ = False  # not a test class

    home: Path
    servers: list[subprocess.Popen[str]] = field(default_factory=list)
    slices: list[str] = field(default_factory=list)

    def client(self) -> Any:
        from primogeni.client import ClientConfig, PrimoClient

        return PrimoClient(ClientConfig.load(self.home))

    def create(self, name: str, rspec: str) -> dict[str, Any]:
        """Create slice NAME and its slivers (allocate, provision, start); returns the manifest summary."""
        from primogeni.client import manifest_summary

        primo(self.home, "slice", "create", name, "--days", "1")
        self.slices.append(name)
        path = self.home / f"{name}.xml"
        path.write_text(rspec)
        primo(self.home, "create", name, str(path), timeout=180)
        with self.client() as c:
            return manifest_summary(c.describe(name)["geni_rspec"])

    def delete(self, name: str) -> None:
        primo(self.home, "delete", name, timeout=180)
        self.slices.remove(name)


def _wait_listening(host: str, port: int, proc: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}")
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"{what} did not listen on {host}:{port}")


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_agents(home: Path, nodes: int) -> None:
    """Until the AM advertises every node as available (the agents have registered)."""
    from primogeni.client import ClientConfig, PrimoClient

    deadline = time.monotonic() + 60
    rspec = ""
    while time.monotonic() < deadline:
        with PrimoClient(ClientConfig.load(home)) as c:
            rspec = c.list_resources(available=True)
        if rspec.count("<node ") >= nodes:
            return
        time.sleep(0.5)
    raise AssertionError(f"agents did not register with the AM within 60 s:\n{rspec}")


@pytest.fixture(scope="module")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    if os.geteuid() != 0:
        pytest.skip("the substrate needs root (namespaces, veths, nftables)")
    if leftovers():
        pytest.fail(f"a substrate is already up on this machine (`primo substrate down`, or `primo clean`): "
                    f"{leftovers()}")
    home = tmp_path_factory.mktemp("testbed") / "home"
    bed = Testbed(home)
    ch_port, am_port = free_port(), free_port()
    primo(home, "init", "--project", "exp", "--ch-port", str(ch_port), "--am-port", str(am_port),
          "--hostname", HOST, "--hostname", "127.0.0.1")
    try:
        primo(home, "substrate", "up", "--nodes", "3", "--capacity", "8", timeout=120)
        for name, port, extra in (("ch", ch_port, []), ("am", am_port, ["--driver", "agents"])):
            proc = subprocess.Popen([*PRIMO, name, "--home", str(home), "--host", HOST, *extra],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            bed.servers.append(proc)
            _wait_listening(HOST, port, proc, f"primo {name}")
        _wait_agents(home, 3)
        key = home / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        primo(home, "project", "create", "exp", "--description", "substrate tests")
        primo(home, "key", "add", str(key) + ".pub")
        yield bed
    finally:
        for name in list(bed.slices):
            primo(home, "delete", name, check=False, timeout=180)
        for proc in bed.servers:
            _stop(proc)
        down = primo(home, "substrate", "down", check=False, timeout=120)
        left = leftovers()
        shutil.rmtree(home.parent, ignore_errors=True)
        assert down.returncode == 0, down.stdout + down.stderr
        assert not left, f"left behind after substrate down: {left}"
