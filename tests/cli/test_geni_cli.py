"""The GENI commands of ``primo`` and the client library behind them.

One authority is made per module with ``primo init`` (six RSA keys: the slow part) and copied
for each test that changes it. The life-cycle tests run the clearinghouse and the aggregate
in-process on 127.0.0.1 (free ports written into client.toml) and drive the commands with
``--json``; one test runs ``primo ch`` and ``primo am`` as processes and stops them with signals.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from primogeni.am.service import AmService
from primogeni.ch.service import ChService
from primogeni.cli.geni import _register
from primogeni.cli.main import main
from primogeni.client import ClientConfig, PrimoClient, register_aggregate
from primogeni.geni.cert import Identity, create_root
from primogeni.geni.cred import USER_PRIVILEGES, Credential, issue_credential
from primogeni.geni.rspec import validate
from primogeni.geni.urn import Urn

REQUEST = """<rspec xmlns="http://www.geni.net/resources/rspec/3" type="request">
  <node client_id="h1" exclusive="false"><sliver_type name="emulated-host"/>
    <interface client_id="h1:if0"><ip address="192.168.1.1" netmask="255.255.255.0" type="ipv4"/></interface></node>
  <node client_id="h2" exclusive="false"><sliver_type name="emulated-host"/>
    <interface client_id="h2:if0"><ip address="192.168.1.2" netmask="255.255.255.0" type="ipv4"/></interface></node>
  <link client_id="l0"><interface_ref client_id="h1:if0"/><interface_ref client_id="h2:if0"/></link>
</rspec>
"""


def primo(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def ok_json(*args: str | Path) -> Any:
    r = primo(*args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def refused(code: int, *args: str | Path) -> str:
    r = primo(*args)
    assert r.exit_code == code, r.output
    assert r.stderr.startswith("error: ") or "Error:" in r.stderr, r.output
    return r.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HOME made by ``primo init`` with default project ``demo``, to copy from."""
    home = tmp_path_factory.mktemp("template") / "home"
    r = primo("init", "--home", home, "--project", "demo", "--email", "alice@example.org")
    assert r.exit_code == 0, r.output
    return home


@pytest.fixture
def home(template: Path, tmp_path: Path) -> Path:
    shutil.copytree(template, tmp_path / "home")
    return tmp_path / "home"


@pytest.fixture(scope="module")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    path = tmp_path_factory.mktemp("ssh") / "id_ed25519.pub"
    path.write_text(f"{line} alice@laptop\n")
    return path


@dataclass
class Services:
    home: Path
    ch: ChService
    am: AmService


@pytest.fixture(scope="module")
def testbed(template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """The clearinghouse and the aggregate of a copy of the template, on free ports."""
    home = tmp_path_factory.mktemp("testbed") / "home"
    shutil.copytree(template, home)
    ch = ChService(home)
    try:
        ch.start()
        am = AmService(home, reap_interval=3600)
        try:
            am.start()
            config = ClientConfig.load(home).replace(ch_url=ch.url(""), am_url=am.urls["3"])
            config.save()
            register_aggregate(config, home / "am" / "am.pem", home / "am" / "am.key", am.urls["3"])
            yield Services(home, ch, am)
        finally:
            am.stop()
    finally:
        ch.stop()


# -- local commands ----------------------------------------------------------------------------


def test_init_makes_authority_inventory_and_client_config(template: Path) -> None:
    for made in ("trusted_roots/primo-root.pem", "ch/ma.pem", "ch/sa.pem", "ch/ch.pem", "am/am.pem",
                 "am/inventory.toml", "users/alice.pem", "users/alice.key", "client.toml"):
        assert (template / made).is_file(), made
    assert (template / "users" / "alice.key").stat().st_mode & 0o077 == 0
    config = ClientConfig.load(template)
    assert (config.authority, config.user, config.project) == ("primo", "alice", "demo")
    assert config.cert == template / "users" / "alice.pem" and config.trust_dir == template / "trusted_roots"
    assert config.ch_url == "https://localhost:12369" and config.am_url == "https://localhost:12370/am/3.0"
    assert 'cert = "users/alice.pem"' in (template / "client.toml").read_text()  # relative: HOME can move


def test_init_refuses_an_existing_authority_and_bad_names(home: Path, tmp_path: Path) -> None:
    before = (home / "client.toml").read_text()
    assert "already holds an authority" in refused(2, "init", "--home", home)
    assert (home / "client.toml").read_text() == before
    assert "project name" in refused(2, "init", "--home", tmp_path / "a", "--project", "no_good")
    assert "authority name" in refused(2, "init", "--home", tmp_path / "b", "--authority", "a+b")
    assert "not a host name" in refused(2, "init", "--home", tmp_path / "c", "--hostname", "bad host!")
    assert not (tmp_path / "a").exists()


def test_member_add_and_list(home: Path) -> None:
    made = ok_json("member", "add", "bob", "--home", home)
    assert made["urn"] == "urn:publicid:IDN+primo+user+bob" and made["email"] == "bob@example.org"
    assert Path(made["cert"]).is_file() and Path(made["key"]).is_file()
    r = primo("member", "add", "carol", "--email", "carol@example.net", "--home", home)
    assert r.exit_code == 0 and str(home / "users" / "carol.pem") in r.output
    listed = ok_json("member", "list", "--home", home)
    assert [m["username"] for m in listed] == ["alice", "bob", "carol"]
    assert "ALREADYEXISTS" in refused(2, "member", "add", "bob", "--home", home)
    assert "not an initialised data directory" in refused(2, "member", "list", "--home", home / "nowhere")


def test_client_commands_need_a_configuration_and_good_arguments(home: Path, tmp_path: Path) -> None:
    assert "primo init" in refused(2, "slice", "list", "--home", tmp_path / "empty")
    assert "exactly one of --days" in refused(2, "renew", "exp1", "--home", home)
    assert "exactly one of --days" in refused(2, "slice", "renew", "exp1", "--days", "1", "--until",
                                              "2030-01-01T00:00:00Z", "--home", home)
    assert "RFC 3339" in refused(2, "renew", "exp1", "--until", "soon", "--home", home)
    assert "BADARGS" in refused(2, "status", "no_such!", "--home", home)
    assert "does not exist" in refused(2, "create", "exp1", tmp_path / "missing.xml", "--home", home)
    bad_key = tmp_path / "bad.pub"
    bad_key.write_text("ssh-rsa not-base64!\n")
    assert "bad.pub" in refused(2, "key", "add", bad_key, "--home", home)
    ClientConfig.load(home).replace(project=None).save()
    assert "names no project" in refused(2, "status", "exp1", "--home", home)


def test_an_unreachable_service_is_named(home: Path) -> None:
    port = free_port()
    ClientConfig.load(home).replace(ch_url=f"https://127.0.0.1:{port}", am_url=f"https://127.0.0.1:{port}/am/3.0").save()
    err = refused(1, "slice", "list", "--home", home)
    assert f"https://127.0.0.1:{port}/MA" in err and "refused" in err  # the user credential first


def test_aggregate_registration_failure_is_a_warning(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ClientConfig.load(home).replace(ch_url=f"https://127.0.0.1:{free_port()}").save()
    _register(home, "https://127.0.0.1:1/am/3.0")
    assert "warning: not registered" in capsys.readouterr().err


# -- against running services --------------------------------------------------------------------


def test_life_cycle(testbed: Services, ssh_key: Path, tmp_path: Path) -> None:
    h = ("--home", testbed.home)
    rspec = tmp_path / "request.xml"
    rspec.write_text(REQUEST)
    project = ok_json("project", "create", "lab", "--description", "the lab", *h)
    assert project["PROJECT_URN"] == "urn:publicid:IDN+primo+project+lab"
    assert {p["PROJECT_NAME"]: p["PROJECT_ROLE"] for p in ok_json("project", "list", *h)}["lab"] == "LEAD"
    created = ok_json("slice", "create", "lab/exp1", "--days", "3", *h)
    assert created["SLICE_URN"] == "urn:publicid:IDN+primo:lab+slice+exp1"
    key = ok_json("key", "add", ssh_key, *h)
    assert key["KEY_DESCRIPTION"] == "alice@laptop"
    assert key["KEY_ID"] in [k["KEY_ID"] for k in ok_json("key", "list", *h)]

    nodes = ok_json("resources", *h)["nodes"]
    assert {n["name"]: n["kind"] for n in nodes} == {"pc1": "cluster", "pc2": "cluster", "shared1": "shared",
                                                     "shared2": "shared"}
    assert all("emulated-host" in n["sliver_types"] for n in nodes)
    free = sum(n["available"] for n in nodes)

    made = ok_json("create", "lab/exp1", rspec, *h)
    assert made["slice"] == created["SLICE_URN"] and len(made["slivers"]) == 3
    assert {s["geni_operational_status"] for s in made["slivers"]} == {"geni_ready"}
    status = ok_json("status", "lab/exp1", *h)
    assert status["status"] == "ready" and len(status["slivers"]) == 3

    described = ok_json("manifest", "lab/exp1", *h)
    assert sorted(n["client_id"] for n in described["nodes"]) == ["h1", "h2"]
    for node in described["nodes"]:
        assert [(x["username"], x["hostname"]) for x in node["logins"]] == [("alice", "localhost")]
        assert node["logins"][0]["port"] >= 30000
    assert {a for n in described["nodes"] for i in n["interfaces"] for a in i["addresses"]} == {
        "192.168.1.1/24", "192.168.1.2/24"}
    assert [lk["interfaces"] for lk in described["links"]] == [["h1:if0", "h2:if0"]]
    validate(primo("manifest", "lab/exp1", "--xml", *h).stdout, "manifest")
    table = primo("manifest", "lab/exp1", *h)
    assert table.exit_code == 0 and "ssh -p" in table.stdout and "alice@localhost" in table.stdout
    assert sum(n["available"] for n in ok_json("resources", *h)["nodes"]) == free - 2

    until = datetime.now(UTC) + timedelta(days=2)
    for s in ok_json("renew", "lab/exp1", "--days", "2", *h)["slivers"]:
        assert abs(datetime.fromisoformat(s["geni_expires"]) - until) < timedelta(minutes=1)
    assert "OUTOFRANGE" in refused(1, "renew", "lab/exp1", "--days", "5", *h)  # past the slice's expiration
    assert "OUTOFRANGE" in refused(1, "slice", "renew", "lab/exp1", "--until", "2099-01-01T00:00:00Z", *h)
    later = ok_json("slice", "renew", "lab/exp1", "--days", "10", *h)
    assert datetime.fromisoformat(later["SLICE_EXPIRATION"]) > until + timedelta(days=7)
    ok_json("renew", "lab/exp1", "--days", "5", *h)  # the slice credential was fetched again

    gone = ok_json("delete", "lab/exp1", *h)
    assert {s["geni_allocation_status"] for s in gone["slivers"]} == {"geni_unallocated"}
    assert "SEARCHFAILED" in refused(1, "status", "lab/exp1", *h)
    listed = ok_json("slice", "list", "--project", "lab", *h)
    assert [(s["SLICE_URN"], s["SLICE_EXPIRED"]) for s in listed] == [(created["SLICE_URN"], False)]
    assert sum(n["available"] for n in ok_json("resources", *h)["nodes"]) == free


@pytest.fixture(scope="module")
def demo(testbed: Services) -> Services:
    """The testbed with project ``demo`` (client.toml's default project)."""
    ok_json("project", "create", "demo", "--home", testbed.home)
    return testbed


def test_step_by_step_and_operational_actions(demo: Services, tmp_path: Path) -> None:
    h = ("--home", demo.home)
    rspec = tmp_path / "request.xml"
    rspec.write_text(REQUEST)
    ok_json("slice", "create", "demo/exp2", *h)
    allocated = ok_json("allocate", "exp2", rspec, *h)
    assert {s["geni_allocation_status"] for s in allocated["slivers"]} == {"geni_allocated"}
    provisioned = ok_json("provision", "exp2", *h)
    assert {s["geni_operational_status"] for s in provisioned["slivers"]} == {"geni_notready"}
    assert len(provisioned["manifest"]["nodes"]) == 2
    assert ok_json("status", "exp2", *h)["status"] == "notready"
    assert {s["geni_operational_status"] for s in ok_json("start", "exp2", *h)["slivers"]} == {"geni_ready"}
    assert {s["geni_operational_status"] for s in ok_json("stop", "exp2", *h)["slivers"]} == {"geni_notready"}
    r = primo("status", "exp2", *h)
    assert r.exit_code == 0 and "notready" in r.stdout
    ok_json("delete", "exp2", *h)


def test_bad_requests_are_the_servers_errors(demo: Services, tmp_path: Path) -> None:
    h = ("--home", demo.home)
    ok_json("slice", "create", "exp3", *h)
    malformed = tmp_path / "bad.xml"
    malformed.write_text('<rspec xmlns="http://www.geni.net/resources/rspec/3" type="request"><node/></rspec>')
    assert refused(1, "create", "exp3", malformed, *h).startswith("error: BADARGS: ")
    not_xml = tmp_path / "worse.xml"
    not_xml.write_text("<rspec")
    assert "BADARGS" in refused(1, "allocate", "exp3", not_xml, *h)
    assert refused(2, "create", "exp3", tmp_path / "missing.xml", *h)
    assert "SEARCHFAILED" in refused(1, "status", "nosuch", *h)
    assert "SEARCHFAILED" in refused(1, "manifest", "nosuch", *h)
    assert "SEARCHFAILED" in refused(1, "slice", "renew", "nosuch", "--days", "1", *h)
    assert "ALREADYEXISTS" in refused(1, "slice", "create", "exp3", *h)


def test_credentials_are_cached_and_refreshed(testbed: Services) -> None:
    config = ClientConfig.load(testbed.home)
    cache = config.creds_dir / "user_alice.xml"
    with PrimoClient(config) as client:
        client.keys()
        first = cache.read_text()
        assert cache.stat().st_mode & 0o777 == 0o600 and config.creds_dir.stat().st_mode & 0o777 == 0o700
        client.keys()
        assert cache.read_text() == first  # reused

    # A credential within an hour of expiry is replaced before use.
    ma = Identity.load(testbed.home / "ch" / "ma.pem", testbed.home / "ch" / "ma.key")
    alice = client.gid
    now = datetime.now(UTC).replace(microsecond=0)
    soon = issue_credential(ma, alice, alice, USER_PRIVILEGES, now + timedelta(minutes=30), now=now)
    cache.write_text(soon.xml)
    with PrimoClient(config) as client:
        client.keys()
    assert Credential.parse(cache.read_text()).expires > now + timedelta(days=1)

    # One the server finds expired (the client's clock is behind) is fetched again after CREDENTIAL_EXPIRED.
    expired = issue_credential(ma, alice, alice, USER_PRIVILEGES, now - timedelta(days=1), now=now - timedelta(days=2))
    cache.write_text(expired.xml)
    with PrimoClient(config, clock=lambda: now - timedelta(days=3)) as client:
        assert isinstance(client.keys(), list)
    assert Credential.parse(cache.read_text()).expires > now


def test_an_unreachable_aggregate_is_named(testbed: Services, tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(testbed.home, home)
    url = f"https://127.0.0.1:{free_port()}/am/3.0"
    ClientConfig.load(home).replace(am_url=url).save()
    assert f"cannot reach {url}: connection refused" in refused(1, "resources", "--home", home)


def test_an_untrusted_server_is_refused(testbed: Services, tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(testbed.home, home, ignore=shutil.ignore_patterns("creds"))
    for pem in (home / "trusted_roots").glob("*.pem"):
        pem.unlink()
    other = create_root(Urn("elsewhere", "authority", "root"), now=datetime.now(UTC))
    (home / "trusted_roots" / "elsewhere-root.pem").write_text(other.gid.pem(with_chain=False))
    err = refused(1, "slice", "list", "--home", home)
    assert testbed.ch.url("/MA") in err and "not trusted" in err


# -- the services as processes ---------------------------------------------------------------------


class Process:
    """A ``primo`` command in a child process; its output lines arrive on a queue."""

    def __init__(self, *args: str | Path):
        code = "from primogeni.cli.main import main; main()"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        deadline = datetime.now() + timedelta(seconds=timeout)
        while datetime.now() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            if m := re.search(pattern, line):
                return m
        raise AssertionError(f"no {pattern!r} in:\n{''.join(self.seen)}")

    def stop(self, sig: int) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def test_ch_and_am_commands_serve_register_and_stop_cleanly(home: Path) -> None:
    ch = Process("ch", "--home", home, "--port", "0")
    am: Process | None = None
    try:
        ch_url = ch.wait_for(r"^clearinghouse \S+ on (https://127\.0\.0\.1:\d+)").group(1)
        ClientConfig.load(home).replace(ch_url=ch_url).save()
        am = Process("am", "--home", home, "--port", "0", "--driver-delay", "0.01")
        registered = am.wait_for(r"^registered (https://\S+/am/3\.0) with the clearinghouse").group(1)
        with PrimoClient(ClientConfig.load(home)) as client:
            assert [a["SERVICE_URL"] for a in client.aggregates()] == [registered]
        assert am.stop(signal.SIGTERM) == 0
        am.wait_for("aggregate manager stopped")
        assert ch.stop(signal.SIGINT) == 0
        ch.wait_for("clearinghouse stopped")
    finally:
        for p in (am, ch):
            if p is not None:
                p.kill()
