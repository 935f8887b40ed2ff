"""The AM checks a request's model against it and wires its emulated hosts to the simulator (am.virtual)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from tests.immersion.support import model

from primogeni.am import virtual
from primogeni.am.models import SliverRow
from primogeni.am.plans import plans_of
from primogeni.geni.codes import GeniCode
from primogeni.geni.errors import GeniError
from primogeni.geni.rspec import parse_request

from .test_core import OWNER, SLICE_A, T0, am, counts  # noqa: F401  (am is a fixture)

FACTS: dict[str, Any] = {
    "version": 1, "name": "top", "prefix": "10.0.0.0/16",
    "elements": {"top": "net", "top:h1": "host", "top:h2": "host", "top:r1": "router", "top:h3": "host",
                 "top:core": "net"},
    "emulated": [{"path": "top:h1", "address": "10.0.1.2/24", "gateway": "10.0.1.1"},
                 {"path": "top:h2", "address": "10.0.2.2/24", "gateway": "10.0.2.1"}],
    "paths": [], "traffic": [],
}
DML = "Net [ id top ]"  # the fake describe ignores it


def fake_describe(fmt: str, text: str) -> dict[str, Any]:
    assert fmt == "dml" and text.strip() == DML
    return FACTS


def rspec(maps: str, *, extra: str = "", sims: int = 1, h1_if: str = "") -> str:
    nodes = "".join(f'<node client_id="sim{k}"><sliver_type name="simulator"/></node>' for k in range(sims))
    return f"""<rspec xmlns="http://www.geni.net/resources/rspec/3"
      xmlns:primo="http://www.primogeni.net/resources/rspec/ext/primogeni/1" type="request">
  <node client_id="h1"><sliver_type name="emulated-host"/>{h1_if}</node>
  <node client_id="h2"><sliver_type name="emulated-host"/></node>
  {nodes}{extra}
  <primo:model format="dml"><![CDATA[{DML}]]>{maps}</primo:model>
</rspec>"""


MAPS = '<primo:map virtual="top:h1" node="h1"/><primo:map virtual="top:h2" node="h2"/>'


def wired(xml: str) -> virtual.Wired:
    return virtual.wire(parse_request(xml), describe=fake_describe)


def test_emulated_hosts_are_wired_to_the_simulator() -> None:
    w = wired(rspec(MAPS + '<primo:map virtual="top:core" node="sim0"/>'))
    links = {link.client_id: link.interface_refs for link in w.request.links}
    assert links == {"primo-h1": ("h1:sim", "sim0:h1"), "primo-h2": ("h2:sim", "sim0:h2")}
    h1 = w.request.node("h1")
    assert [(i.client_id, str(i.ip.address), i.ip.prefixlen) for i in h1.interfaces if i.ip] == [
        ("h1:sim", "10.0.1.2", 24)]
    assert all(i.ip is None for i in w.request.node("sim0").interfaces)
    assert w.extras["h1"] == {"routes": [["10.0.0.0/16", "10.0.1.1"]], "virtual": "top:h1"}
    assert w.extras["sim0"] == {"model": {"format": "dml", "text": DML},
                                "attach": [["top:h1", "sim0:h1"], ["top:h2", "sim0:h2"]]}


def test_a_link_the_request_gives_is_used_and_its_address_checked() -> None:
    iface = '<interface client_id="h1:if0"/>'
    sim_link = ('<link client_id="mine"><interface_ref client_id="h1:if0"/>'
                '<interface_ref client_id="sim0:if0"/></link>')
    xml = rspec(MAPS, h1_if=iface, extra=sim_link).replace(
        '<node client_id="sim0"><sliver_type name="simulator"/></node>',
        '<node client_id="sim0"><sliver_type name="simulator"/><interface client_id="sim0:if0"/></node>')
    w = wired(xml)
    assert {link.client_id for link in w.request.links} == {"mine", "primo-h2"}
    assert str(w.request.node("h1").interfaces[0].ip.address) == "10.0.1.2"
    assert w.extras["sim0"]["attach"][0] == ["top:h1", "sim0:if0"]
    wrong = xml.replace('<interface client_id="h1:if0"/>',
                        '<interface client_id="h1:if0"><ip address="10.9.9.9" netmask="255.255.255.0"/></interface>')
    with pytest.raises(GeniError, match=r"asks for 10\.9\.9\.9.*model gives top:h1 10\.0\.1\.2/24"):
        wired(wrong)


@pytest.mark.parametrize(("xml", "message"), [
    (rspec('<primo:map virtual="top:h1" node="h1"/>'), "emulated host top:h2 of the model is realized by no node"),
    (rspec(MAPS.replace("top:h2", "top:nope")), "the model has no element 'top:nope'"),
    (rspec(MAPS.replace("top:h2", "top:h3")), "top:h3 is a host that is not emulated"),
    (rspec(MAPS.replace("top:h2", "top:r1")), "top:r1 is a router"),
    (rspec(MAPS, sims=0), "no node of sliver type simulator"),
    (rspec(MAPS, sims=2), "a model runs on one simulator instance"),
])
def test_mistakes_are_named(xml: str, message: str) -> None:
    with pytest.raises(GeniError, match=message) as info:
        wired(xml)
    assert info.value.code == GeniCode.BADARGS


def test_the_aggregate_allocates_the_wires_and_plans_them(am) -> None:  # noqa: F811
    am.wire = lambda request: virtual.wire(request, describe=fake_describe)
    xml = rspec(MAPS)
    made = am.allocate(SLICE_A, OWNER, T0.replace(year=2027), parse_request(xml), xml)
    assert sorted(s.client_id for s in made) == ["h1", "h2", "primo-h1", "primo-h2", "sim0"]
    with am.sessions() as session:
        rows = list(session.scalars(select(SliverRow).where(SliverRow.slice_urn == SLICE_A)))
        plans = {p.client_id: p for p in plans_of(session, rows)}
        sim_spec = json.loads(next(r for r in rows if r.client_id == "sim0").spec)
    assert [i["address"] for i in sim_spec["interfaces"]] == [None, None]  # not filled from the hosts' subnets
    assert plans["h1"].routes == (("10.0.0.0/16", "10.0.1.1"),)
    assert [(i.address, i.netmask) for i in plans["h1"].interfaces] == [("10.0.1.2", "255.255.255.0")]
    assert plans["sim0"].attach == (("top:h1", "eth1"), ("top:h2", "eth2"))
    assert plans["sim0"].model == {"format": "dml", "text": DML}
    assert plans["primo-h1"].kind == "link"


def test_a_bad_model_changes_nothing(am) -> None:  # noqa: F811
    before = counts(am)
    xml = rspec(MAPS.replace("top:h2", "top:nope"))
    am.wire = lambda request: virtual.wire(request, describe=fake_describe)
    with pytest.raises(GeniError):
        am.allocate(SLICE_A, OWNER, T0.replace(year=2027), parse_request(xml), xml)
    assert counts(am) == before


REAL_DML = Path(model("pair.dml")).read_text()


def test_a_real_dml_model_is_described_in_the_sandbox_and_wired() -> None:
    xml = (rspec(MAPS.replace("top:h1", "top:a").replace("top:h2", "top:b"))
           .replace(f"<![CDATA[{DML}]]>", f"<![CDATA[{REAL_DML}]]>"))
    w = virtual.wire(parse_request(xml))
    assert w.facts is not None and w.facts["prefix"] == "10.60.0.0/16"
    addresses = {n.client_id: [str(i.ip.address) for i in n.interfaces if i.ip] for n in w.request.nodes}
    want = {e["path"]: e["address"].split("/")[0] for e in w.facts["emulated"]}
    assert addresses == {"h1": [want["top:a"]], "h2": [want["top:b"]], "sim0": []}
    assert w.extras["h1"]["routes"] == [["10.60.0.0/16", w.facts["emulated"][0]["gateway"]]]
    broken = xml.replace("attach r(1)", "attach nowhere(1)")
    with pytest.raises(GeniError, match=r"model: .*nowhere") as info:
        virtual.wire(parse_request(broken))
    assert info.value.code == GeniCode.BADARGS
