"""Slivers made real: the GENI life cycle on four embedded physical nodes, as a researcher types it.

    python examples/substrate_demo.py [HOME]        (as root)

Makes a fresh authority in HOME (default: a temporary directory), brings up the embedded
substrate (``primo substrate up --nodes 4``: four physical nodes as network namespaces on a
private underlay bridge, each running ``primo agent``), starts ``primo ch`` and
``primo am --driver agents`` on the host's underlay address, and then, through the ``primo``
client: a project, an experiment, an SSH key; three hosts on three physical nodes joined by a LAN
(VXLAN between the nodes); ping and iperf3 between them (``primo exec``); an SSH login through
the sliver's NAT'd port; a link taken down and up by an event; the monitor figures; delete; and
``primo substrate down``. Everything it made is removed whatever happens; exits non-zero if a step
fails.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from _demo import PRIMO, embedded_testbed, manifest, primo, ssh_key, step

AUTH = "urn:publicid:IDN+primo+node+"
REQUEST = f"""<rspec xmlns="http://www.geni.net/resources/rspec/3" type="request">
  <node client_id="h1" component_id="{AUTH}pc1" exclusive="false"><sliver_type name="emulated-host"/>
    <interface client_id="h1:if0"/></node>
  <node client_id="h2" component_id="{AUTH}pc2" exclusive="false"><sliver_type name="emulated-host"/>
    <interface client_id="h2:if0"/></node>
  <node client_id="h3" component_id="{AUTH}pc3" exclusive="false"><sliver_type name="emulated-host"/>
    <interface client_id="h3:if0"/></node>
  <link client_id="lan0"><interface_ref client_id="h1:if0"/><interface_ref client_id="h2:if0"/>
    <interface_ref client_id="h3:if0"/></link>
</rspec>
"""


def main() -> None:
    with embedded_testbed(Path(sys.argv[1]) if len(sys.argv) > 1 else None, "substrate") as home:
        demo(home)


def demo(home: Path) -> None:
    primo(home, "substrate", "status")
    step("member, project, experiment, SSH key; what the aggregate offers")
    key = ssh_key(home)
    primo(home, "project", "create", "demo", "--description", "PrimoGENI substrate demo")
    primo(home, "slice", "create", "exp1", "--days", "1")
    primo(home, "key", "add", f"{key}.pub")
    primo(home, "resources")
    step("three hosts on three physical nodes, one LAN (VXLAN between the nodes)")
    (home / "lan.xml").write_text(REQUEST)
    primo(home, "create", "exp1", str(home / "lan.xml"))
    info = manifest(home, "exp1")
    nodes = {n["client_id"]: n for n in info["nodes"]}  # type: ignore[attr-defined]
    addr = {name: n["interfaces"][0]["addresses"][0].split("/")[0] for name, n in nodes.items()}
    step("ping across the LAN, from inside the slivers")
    for dst in ("h2", "h3"):
        primo(home, "exec", "exp1", "h1", "--", "ping", "-n", "-c", "3", "-i", "0.2", addr[dst])
    step("iperf3 (TCP) from h1 on pc1 to h2 on pc2, through the tunnel")
    server = subprocess.Popen([*PRIMO, "exec", "exp1", "h2", "--home", str(home), "--", "iperf3", "-s", "-1"])
    time.sleep(1)
    primo(home, "exec", "exp1", "h1", "--", "iperf3", "-c", addr["h2"], "-t", "3")
    server.wait(timeout=30)
    step("an SSH login through h3's NAT'd port, as the manifest says")
    login = nodes["h3"]["logins"][0]
    print(f"$ ssh -p {login['port']} {login['username']}@{login['hostname']} 'hostname; id -un'", flush=True)
    subprocess.run(["ssh", "-p", str(login["port"]), "-i", str(key), "-o", "StrictHostKeyChecking=no",
                    "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
                    f"{login['username']}@{login['hostname']}", "hostname; id -un"], check=True, timeout=60)
    step("an event takes the LAN down in 2 s; ping fails; another brings it up")
    primo(home, "event", "exp1", "link", "lan0", "down", "--at", "+2")
    time.sleep(2.5)
    lost = subprocess.run([*PRIMO, "exec", "exp1", "h1", "--home", str(home), "--", "ping", "-n", "-c", "2",
                           "-W", "1", addr["h2"]], capture_output=True, text=True)
    print(f"ping while down: exit {lost.returncode} ({'no answer' if lost.returncode else 'ANSWERED'})")
    if lost.returncode == 0:
        raise SystemExit("the link-down event did not take the link down")
    primo(home, "event", "exp1", "link", "lan0", "up")
    time.sleep(1)
    primo(home, "exec", "exp1", "h1", "--", "ping", "-n", "-c", "2", addr["h2"])
    step("status with the node agents' monitor figures")
    primo(home, "status", "exp1")
    step("delete the experiment; take the substrate down")
    primo(home, "delete", "exp1")
    print("\nsubstrate demo: done")


if __name__ == "__main__":
    main()
