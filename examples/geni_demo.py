"""The GENI life cycle end to end on one machine, as a researcher types it.

    python examples/geni_demo.py [HOME]

Makes a fresh authority in HOME (default: a temporary directory), starts ``primo ch`` and
``primo am`` as their own processes on free 127.0.0.1 ports, then runs the ``primo`` client:
project, slice, SSH key, resources, create (allocate + provision + start), status, manifest,
renew, delete. Stops both servers (by their process ids) whatever happens. Exits non-zero if any
step fails.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _demo import PRIMO, free_port, primo, stop, wait_for

REQUEST = """<rspec xmlns="http://www.geni.net/resources/rspec/3" type="request">
  <node client_id="h1" exclusive="false"><sliver_type name="emulated-host"/>
    <interface client_id="h1:if0"><ip address="192.168.1.1" netmask="255.255.255.0" type="ipv4"/></interface></node>
  <node client_id="h2" exclusive="false"><sliver_type name="emulated-host"/>
    <interface client_id="h2:if0"><ip address="192.168.1.2" netmask="255.255.255.0" type="ipv4"/></interface></node>
  <link client_id="l0"><interface_ref client_id="h1:if0"/><interface_ref client_id="h2:if0"/>
    <property source_id="h1:if0" dest_id="h2:if0" capacity="10000" latency="5"/>
    <property source_id="h2:if0" dest_id="h1:if0" capacity="10000" latency="5"/></link>
</rspec>
"""


def public_key() -> str:
    """A fresh SSH public key (OpenSSH format) for the demo's logins."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    raw = Ed25519PrivateKey.generate().public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                                 serialization.PublicFormat.OpenSSH)
    return raw.decode() + " alice@demo\n"


def main() -> None:
    home = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="primo-demo-"))
    made = len(sys.argv) <= 1
    servers: list[subprocess.Popen[bytes]] = []
    try:
        ch_port, am_port = free_port(), free_port()
        primo(home, "init", "--project", "demo", "--ch-port", str(ch_port), "--am-port", str(am_port))
        for name, port in (("ch", ch_port), ("am", am_port)):
            proc = subprocess.Popen([*PRIMO, name, "--home", str(home)])
            servers.append(proc)
            wait_for(port, proc, f"primo {name}")
        time.sleep(0.5)  # the AM registers with the CH right after it starts listening
        (home / "demo_key.pub").write_text(public_key())
        (home / "two-hosts.xml").write_text(REQUEST)
        primo(home, "project", "create", "demo", "--description", "PrimoGENI demo")
        primo(home, "slice", "create", "exp1", "--days", "7")
        primo(home, "key", "add", str(home / "demo_key.pub"))
        primo(home, "resources")
        primo(home, "create", "exp1", str(home / "two-hosts.xml"))
        primo(home, "status", "exp1")
        primo(home, "manifest", "exp1")
        primo(home, "renew", "exp1", "--days", "3")
        primo(home, "delete", "exp1")
        primo(home, "slice", "list")
        print("\nGENI demo: done")
    finally:
        stop(servers)
        if made:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
