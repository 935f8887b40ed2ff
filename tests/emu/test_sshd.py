"""sshd in a sliver: its configuration (no root), then a real login from another namespace (root)."""

from __future__ import annotations

import ipaddress
import os
import random
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from primogeni.emu import container, links, netns, sshd
from primogeni.errors import EmuError


def test_config_has_the_required_settings() -> None:
    text = sshd.config_text(address="172.30.0.5", port=30000, host_keys=[Path("/k/ssh_host_ed25519_key")],
                            conf_dir=Path("/var/lib/primo/ssh/3"), users=["alice", "bob"])
    for line in ("Port 30000", "ListenAddress 172.30.0.5", "HostKey /k/ssh_host_ed25519_key", "UsePAM no",
                 "StrictModes no", "PasswordAuthentication no", "PidFile none", "AllowUsers alice bob",
                 "AuthorizedKeysFile /var/lib/primo/ssh/3/keys/%u"):
        assert line in text.splitlines()


def test_files_a_container_cannot_see_are_refused(tmp_path: Path) -> None:
    c = container.Container("primo-tx", 1, netns.path("primo-tx"))
    with pytest.raises(EmuError, match="under /tmp"):
        sshd.start(c, address="10.0.0.1", port=2222, users=[], key_dir=Path("/var/tmp"), conf_dir=Path("/tmp/x"))
    with pytest.raises(EmuError, match="IP address"):
        sshd.start(c, address="node1", port=2222, users=[], key_dir=tmp_path, conf_dir=Path("/var/tmp/x"))


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A directory outside /tmp (containers have their own /tmp), searchable by the sliver's users."""
    path = Path(tempfile.mkdtemp(prefix="primo-t", dir="/var/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_host_keys_are_made_once(state_dir: Path) -> None:
    keys = sshd.host_keys(state_dir / "keys")
    assert [k.name for k in keys] == ["ssh_host_ed25519_key"]
    first = keys[0].read_bytes()
    assert sshd.host_keys(state_dir / "keys")[0].read_bytes() == first
    assert keys[0].stat().st_mode & 0o077 == 0


@pytest.mark.root
def test_ssh_login_reaches_the_container_as_its_user(state_dir: Path, netns_factory: Callable[..., str],
                                                     tmp_path: Path) -> None:
    spec = container.ContainerSpec(f"primo-t{secrets.token_hex(3)}", "sliverhost", tmp_path,
                                   users=(("alice", 20001),))
    c = container.create(spec)
    pid = 0
    try:
        client = netns_factory("cli")
        net = ipaddress.IPv4Network(f"10.{random.randint(100, 250)}.{random.randint(0, 255)}.0/30")
        here, there = (ipaddress.IPv4Interface(f"{a}/30") for a in list(net.hosts())[:2])
        outside = f"primo{secrets.token_hex(3)}"
        with netns.iproute(client) as ipr:
            links.add_veth(ipr, outside, "ctl0", peer_netns=c.netns_path, up=True)
            links.add_address(ipr, outside, here)
        with netns.iproute(c.netns_path) as ipr:
            links.set_up(ipr, "ctl0")
            links.add_address(ipr, "ctl0", there)
        key = state_dir / "alice_key"
        other = state_dir / "other_key"
        for path in (key, other):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30)
        port = random.randint(20000, 60000)
        pid = sshd.start(c, address=str(there.ip), port=port, users=[("alice", [key.with_suffix(".pub").read_text()])],
                         key_dir=state_dir / "hostkeys", conf_dir=state_dir / "conf")
        assert os.readlink(f"/proc/{pid}/exe").endswith("sshd")

        def ssh(identity: Path) -> subprocess.CompletedProcess[str]:
            argv = ["nsenter", f"--net={netns.path(client)}", "ssh", "-p", str(port), "-i", str(identity),
                    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
                    "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", f"alice@{there.ip}", "hostname; id -u"]
            return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)

        done = ssh(key)
        assert done.returncode == 0, done.stderr + (state_dir / "conf" / "sshd.log").read_text()
        assert done.stdout.split() == ["sliverhost", "20001"]
        assert ssh(other).returncode != 0  # a key that is not alice's
        sshd.stop(pid)
        assert not os.path.exists(f"/proc/{pid}") or not os.readlink(f"/proc/{pid}/exe").endswith("sshd")
        pid = 0
    finally:
        if pid:
            sshd.stop(pid)
        container.destroy(spec.name, spec.run_dir)
