"""agent.service with the real realizer in node namespaces: provisioning, vsys from inside a container,
batches, a restarted agent process."""


from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
import sys
from typing import Any

import pytest
from tests.agent.service_support import (
    SLICE,
    Pki,
    code,
    make_config,
    sliver,
    started,
    urn,
    wait_for,
)

from primogeni.agent.config import AGENT_PATH
from primogeni.agent.names import vsys_dir, vsys_root
from primogeni.agent.realize_links import bridge_device, exp_device, sliver_netns
from primogeni.agent.spec import LinkSpec
from primogeni.agent.store import VsysLink
from primogeni.emu import container, links, netns
from primogeni.emu import sys as esys
from primogeni.rpc import client


@pytest.mark.root
def test_provisioning_and_vsys_against_the_kernel(pki: Pki, nodes: Any) -> None:
    """The real realizer in a node namespace: a sliver asks for a vsys link from inside its container."""
    (node,) = nodes(1)
    with started(pki, node.state_dir, node.realizer, node.store, node=node.name, underlay_ip=node.address) as running:
        answer = running.call("ProvisionSliver", sliver(1))
        assert answer["value"] == {"urn": urn(1), "state": "ready"}, answer
        name = sliver_netns(node.name, 1)
        c = container.attach(name, node.state_dir / "containers")
        assert c is not None

        def vsys(script: str, line: str) -> str:
            assert c is not None
            shell = f'echo "{line}" > /vsys/{script}.in; head -1 /vsys/{script}.out'
            done = container.run(c, ["/bin/sh", "-c", shell], timeout=10)
            assert done.returncode == 0, done.stderr
            return done.stdout.strip()

        assert vsys("setup-link", "setup-link l1 10.254.0.12 4097") == "OK l1"
        assert vsys("setup-link", "setup-link l2 10.254.0.12 4098") == "ERROR key 4098 is not one of this slice's keys"
        answer_text = vsys("setup-link", "setup-link l2 10.254.0.99 4097")
        assert answer_text == "ERROR remote 10.254.0.99 is not a node of this slice"
        assert vsys("list-links", "list-links") == "OK l1:10.254.0.12:4097"
        with netns.iproute(name) as ipr:
            assert links.exists(ipr, "l1")
            assert not links.exists(ipr, "l2")
        assert node.store.vsys_links(urn(1)) == [VsysLink("l1", "10.254.0.12", 4097)]
        assert running.call("Status", [])["value"] == {urn(1): "ready"}

        assert running.call("Release", urn(1))["value"] is True
        assert not netns.exists(name)
        assert node.store.slivers() == {}
        assert list((vsys_dir(node.state_dir, 1)).glob("*.in")) == []


@pytest.mark.root
def test_provision_many_and_release_many_against_the_kernel(pki: Pki, nodes: Any) -> None:
    """Three slivers and the LAN joining them in one call, then all released in one call."""
    (node,) = nodes(1)
    lan = LinkSpec("urn:publicid:IDN+primo+sliver+lan0", SLICE, 4096, tuple((urn(i), "eth1") for i in (1, 2, 3)), ())
    items = [sliver(i, interfaces=[{"name": "eth1", "mac": f"02:00:00:00:00:0{i}", "address": f"10.1.0.{i}/24",
                                    "link": lan.urn}]) for i in (1, 2, 3)]
    with started(pki, node.state_dir, node.realizer, node.store, node=node.name, underlay_ip=node.address) as running:
        answer = running.call("ProvisionMany", items, [lan.to_dict()])
        assert answer["value"] == {urn(1): "ready", urn(2): "ready", urn(3): "ready", lan.urn: "ready"}, answer
        with netns.iproute(node.netns) as ipr:
            assert [links.master_of(ipr, exp_device(i, 0)) for i in (1, 2, 3)] == [bridge_device(4096)] * 3
        answer = running.call("ReleaseMany", [lan.urn, urn(1), urn(2), urn(3)])
        assert set(answer["value"].values()) == {"released"}, answer
        assert not any(netns.exists(sliver_netns(node.name, i)) for i in (1, 2, 3))
        assert node.store.slivers() == {} and node.store.links() == {}
        node.realizer.settle()
        with netns.iproute(node.netns) as ipr:
            left = links.names(ipr, "primo")
            assert [d for d in left if d.startswith(("primob", "primo1", "primo2", "primo3"))] == []


@pytest.mark.root
def test_primo_agent_process_restarts_without_disturbing_slivers(pki: Pki, nodes: Any) -> None:
    """``run_agent`` in its own process in a node namespace, with its own realizer: SIGTERM, start again."""
    (node,) = nodes(1)
    port = 20000 + secrets.randbelow(30000)
    config = make_config(pki, node.state_dir.parent / f"{node.name}-agent", node=node.name,
                         underlay_ip=node.address, listen_port=port)
    path = config.save(node.state_dir.parent / f"{node.name}-agent.toml")
    log_file = node.state_dir.parent / f"{node.name}-agent.log"
    code_text = ("import sys; from primogeni.agent.config import AgentConfig; "
                 "from primogeni.agent.service import run_agent; sys.exit(run_agent(AgentConfig.load(sys.argv[1])))")

    def launch() -> subprocess.Popen[bytes]:
        with open(log_file, "ab") as log_out:
            return subprocess.Popen(["nsenter", f"--net=/run/netns/{node.netns}", sys.executable, "-c", code_text,
                                     str(path)], stdout=log_out, stderr=subprocess.STDOUT)

    def call(method: str, *args: Any) -> dict[str, Any]:
        with esys.in_netns(node.netns):  # the agent listens on 127.0.0.1 of the node namespace
            proxy = client(f"https://127.0.0.1:{port}{AGENT_PATH}", cert=pki.am.cert, key=pki.am.key,
                           trust=pki.trust, timeout=30)
            with proxy:
                answer: dict[str, Any] = getattr(proxy, method)(*args)
        return answer

    def serving(process: subprocess.Popen[bytes]) -> bool:
        assert process.poll() is None, log_file.read_text()
        try:
            return code(call("GetVersion")) == 0
        except OSError:  # not listening yet
            return False

    def terminate(process: subprocess.Popen[bytes]) -> int:
        process.send_signal(signal.SIGTERM)
        return process.wait(timeout=30)

    process = launch()
    try:
        assert wait_for(lambda: serving(process), 30), log_file.read_text()
        version = call("GetVersion")["value"]
        assert version["node"] == node.name and version["features"]["vxlan"] is True
        assert call("ProvisionSliver", sliver(1))["value"] == {"urn": urn(1), "state": "ready"}
        first = container.attach(sliver_netns(node.name, 1), config.state_dir / "containers")
        assert first is not None
        assert terminate(process) == 0, log_file.read_text()
        assert first.alive(), "stopping the agent must leave its slivers running"

        process = launch()
        assert wait_for(lambda: serving(process), 30), log_file.read_text()
        assert call("Status", [])["value"] == {urn(1): "ready"}
        again = container.attach(sliver_netns(node.name, 1), config.state_dir / "containers")
        assert again is not None and again.pid == first.pid  # the same container, not a new one
        assert call("Release", urn(1))["value"] is True
        assert not netns.exists(sliver_netns(node.name, 1))
        assert terminate(process) == 0, log_file.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        shutil.rmtree(vsys_root(config.state_dir), ignore_errors=True)  # the agent process's, on /dev/shm
