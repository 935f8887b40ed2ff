"""Unmodified geni-lib drives the whole life cycle against ``primo ch`` + ``primo am`` over real TLS.

geni-lib is used as its users use it: a ``Framework`` subclass names our clearinghouse (as its
own ``Portal`` and ``EmulabCH2`` classes do for theirs), a ``Context`` holds the user, its
``chapi2`` calls create the project and the slice and fetch credentials, its RSpec builder
writes the request, and its ``AMAPIv3`` / ``AMAPIv2`` calls allocate, provision, start, inspect,
renew and delete. Nothing of geni-lib is patched.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import geni.rspec.pg as pg
import pytest
from geni.aggregate.apis import AMAPIv2, AMAPIv3
from geni.aggregate.context import Context
from geni.aggregate.frameworks import CHAPI2, ClearinghouseError
from geni.aggregate.user import User
from lxml import etree

from primogeni.am.inventory import default_inventory_toml
from primogeni.am.service import AmService
from primogeni.ch.authority import Authority, init_authority
from primogeni.ch.service import ChService
from primogeni.geni.rspec import validate
from primogeni.rpc import client

RSPEC_NS = "{http://www.geni.net/resources/rspec/3}"


class PrimoFramework(CHAPI2):
    """How a geni-lib user points geni-lib at a Common Federation API v2 clearinghouse."""

    def __init__(self, base: str, authority: str):
        super().__init__("primo")
        self._authority = authority
        self._ch, self._ma, self._sa = f"{base}/CH", f"{base}/MA", f"{base}/SA"

    @property
    def projecturn(self) -> str:
        return self.projectNameToURN(self.project)

    def projectNameToURN(self, name: str) -> str:
        return f"urn:publicid:IDN+{self._authority}+project+{name}"

    def sliceNameToURN(self, name: str, project: str | None = None) -> str:
        return f"urn:publicid:IDN+{self._authority}:{project or self.project}+slice+{name}"

    # geni-lib 0.9.9 on Python 3 writes the credential it fetched to a file opened "wb+", so its
    # own CHAPI2 methods fail with any clearinghouse that returns the credential as an XML-RPC
    # string (as the Federation API says). A framework subclass encodes it; the call is still
    # geni-lib's chapi2.get_credentials.
    def getUserCredentials(self, owner_urn: str) -> bytes:
        return str(super().getUserCredentials(owner_urn)).encode()

    def getSliceCredentials(self, context: Context, slicename: str) -> bytes:
        return str(super().getSliceCredentials(context, slicename)).encode()


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Authority, ChService, AmService, Path]]:
    home = tmp_path_factory.mktemp("primo-home")
    auth = init_authority(home, "primo", first_member=("alice", "alice@example.org"))
    (home / "am" / "inventory.toml").write_text(default_inventory_toml())
    ch = ChService(home)
    am = AmService(home, reap_interval=3600)
    ch.start()
    am.start()
    try:
        # The AM registers itself with the clearinghouse over the wire, with its own certificate.
        reg = client(ch.urls["pg_ch"], cert=auth.am_cert, key=auth.am_key)
        answer = reg.Register({"gid": auth.am_cert.read_text(), "url": am.urls["3"], "type": "CM"})
        assert answer["code"] == 0, answer
        yield auth, ch, am, home
    finally:
        am.stop()
        ch.stop()


def test_life_cycle_with_genilib(services, tmp_path: Path) -> None:
    auth, ch, am, _home = services
    cert, key = auth.user_files("alice")
    base = ch.urls["ch"].rsplit("/", 1)[0]
    ctx = Context()
    ctx.datadir = str(tmp_path / "genilib")
    framework = PrimoFramework(base, "primo")
    framework.cert = str(cert)
    framework.key = str(key)
    ctx.cf = framework
    pubkey = tmp_path / "id_ed25519.pub"
    pubkey.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGenilibTestKeyOnly alice@laptop\n")
    user = User()
    user.name = "alice"
    user.urn = "urn:publicid:IDN+primo+user+alice"
    user.addKey(str(pubkey))
    ctx.addUser(user)

    # chapi2: the project and the experiment (slice) in it
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    framework.createProject(ctx, "netexp", expires, "geni-lib end-to-end")
    ctx.project = "netexp"
    assert [p.urn for p in framework.listProjects(ctx)] == ["urn:publicid:IDN+primo+project+netexp"]
    aggregates = framework.listAggregates(ctx)
    assert [a["SERVICE_URL"] for a in aggregates] == [am.urls["3"]]
    created = framework.createSlice(ctx, "exp1", exp=dt.datetime.now(dt.UTC) + dt.timedelta(days=5),
                                    desc="two hosts on a LAN")
    slice_urn = created["SLICE_URN"]
    assert slice_urn == "urn:publicid:IDN+primo:netexp+slice+exp1"
    assert slice_urn in [s["SLICE_URN"] for s in _as_list(framework.listSlices(ctx))]
    with pytest.raises(ClearinghouseError):  # slice names are unique within a project
        framework.createSlice(ctx, "exp1")

    # the RSpec builder writes the request
    request = pg.Request()
    lan = pg.LAN("lan0")
    for i in (1, 2):
        node = pg.Node(f"h{i}", "emulated-host")
        iface = node.addInterface(f"if{i}")
        iface.addAddress(pg.IPv4Address(f"10.1.1.{i}", "255.255.255.0"))
        lan.addInterface(iface)
        request.addResource(node)
    lan.bandwidth = 10_000
    request.addResource(lan)
    rspec = request.toXMLString(pretty_print=True, ucode=True)

    # AM API v2 advertisement through geni-lib
    ad = AMAPIv2.listresources(ctx, am.urls["2"], None)["value"]
    validate(ad, "advertisement")
    assert AMAPIv2.getversion(ctx, am.urls["2"])["geni_api_versions"]["3"] == am.urls["3"]

    # AM API v3 life cycle
    allocated = AMAPIv3.allocate(ctx, am.urls["3"], "exp1", rspec)["value"]
    assert {s["geni_allocation_status"] for s in allocated["geni_slivers"]} == {"geni_allocated"}
    users = [{"urn": user.urn, "keys": [pubkey.read_text().strip()]}]
    provisioned = AMAPIv3.provision(ctx, am.urls["3"], "exp1", options={"geni_users": users})["value"]
    manifest = provisioned["geni_rspec"]
    validate(manifest, "manifest")
    root = etree.fromstring(manifest.encode())
    logins = root.findall(f".//{RSPEC_NS}login")
    assert len(logins) == 2 and {x.get("username") for x in logins} == {"alice"}
    assert {ip.get("address") for ip in root.findall(f".//{RSPEC_NS}ip")} == {"10.1.1.1", "10.1.1.2"}
    started = AMAPIv3.poa(ctx, am.urls["3"], "exp1", "geni_start")
    assert {s["geni_operational_status"] for s in started} == {"geni_ready"}
    status = AMAPIv2.sliverstatus(ctx, am.urls["2"], "exp1")
    assert status["geni_status"] == "ready" and len(status["geni_resources"]) == 3

    # renew the slice at the clearinghouse, then the slivers at the AM (v2 call)
    framework.renewSlice(ctx, "exp1", dt.datetime.now(dt.UTC) + dt.timedelta(days=10))
    ctx._slicecreds.clear()  # geni-lib re-reads the slice credential from its cache file; drop it
    (Path(ctx.datadir) / "primo-netexp-exp1-scred.xml").unlink()
    assert AMAPIv2.renewsliver(ctx, am.urls["2"], "exp1",
                               dt.datetime.now(dt.UTC) + dt.timedelta(days=8)) is True

    deleted = AMAPIv3.delete(ctx, am.urls["3"], "exp1", [slice_urn])["value"]
    assert {s["geni_allocation_status"] for s in deleted} == {"geni_unallocated"}
    assert am.driver.held() == set()


def _as_list(value: object) -> list[dict]:
    if isinstance(value, dict):
        return list(value.values())
    assert isinstance(value, list)
    return value
