"""Tests of ``primogeni.geni.rspec``: advertisement and manifest writing, request parsing, XSD validation.

Everything we write is validated against the RSpec v3 XSDs plus ours; advertisements and
manifests are also compared with golden files in ``tests/geni/data`` (regenerate them with
``PRIMO_REGEN_GOLDEN=1`` after a deliberate change, and read the diff). Requests come from
fixture files, from geni-lib's own builder (an unmodified GENI client library), and from
small inline documents for each error.
"""

from __future__ import annotations

import ipaddress
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from lxml import etree

import primogeni
from primogeni.geni.codes import GeniCode
from primogeni.geni.errors import RSpecError
from primogeni.geni.rspec import (
    MAX_RSPEC_BYTES,
    NS_PRIMO,
    NS_RSPEC,
    AdInterface,
    AdLink,
    AdNode,
    LinkProperty,
    Location,
    Login,
    ManInterface,
    ManLink,
    ManNode,
    ReqInterface,
    ReqIp,
    ReqLink,
    ReqNode,
    Request,
    VirtualModel,
    advertisement,
    manifest,
    parse_request,
    request_rspec,
    validate,
)
from primogeni.geni.rspec.validate import SCHEMA_DIR
from primogeni.geni.urn import Urn

DATA = Path(__file__).parent / "data"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)
CM = Urn("primo", "authority", "cm")
NS = {"r": NS_RSPEC, "primo": NS_PRIMO}
HEAD = f'<rspec xmlns="{NS_RSPEC}" xmlns:primo="{NS_PRIMO}" type="request">'


def golden(name: str, text: str) -> None:
    """Compare ``text`` with ``data/name``; write the file instead when PRIMO_REGEN_GOLDEN is set."""
    path = DATA / name
    if os.environ.get("PRIMO_REGEN_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


def bad_request(body: str) -> str:
    """The message of the RSpecError that parsing ``HEAD + body + </rspec>`` raises."""
    with pytest.raises(RSpecError) as info:
        parse_request(HEAD + body + "</rspec>")
    assert info.value.code == GeniCode.BADARGS
    return info.value.reason


def node_xml(client_id: str, *interfaces: str, sliver_type: str = "emulated-host") -> str:
    ifaces = "".join(f'<interface client_id="{i}"/>' for i in interfaces)
    return f'<node client_id="{client_id}"><sliver_type name="{sliver_type}"/>{ifaces}</node>'


TWO_HOSTS = node_xml("h1", "h1:if0") + node_xml("h2", "h2:if0")


# -- schemas ------------------------------------------------------------------------------------


def test_packaged_geni_schemas_are_verbatim_copies_of_the_shared_ones() -> None:
    shared = Path(primogeni.__file__).resolve().parents[2].parent / "shared" / "schemas" / "rspec3"
    if not shared.is_dir():
        pytest.skip(f"no shared schema folder at {shared} (an installed copy)")
    copies = sorted((SCHEMA_DIR / "geni3").glob("*.xsd"))
    assert {p.name for p in copies} == {
        "ad.xsd", "ad-common.xsd", "request.xsd", "request-common.xsd", "manifest.xsd",
        "manifest-request.xsd", "manifest-common.xsd", "any-extension-schema.xsd",
    }
    for copy in copies:
        assert copy.read_bytes() == (shared / copy.name).read_bytes(), copy.name


def test_validate_refuses_an_unknown_kind() -> None:
    with pytest.raises(RSpecError, match="unknown RSpec kind"):
        validate(HEAD + "</rspec>", "ticket")


def test_validation_rejects_a_manifest_link_without_vlantag() -> None:
    doc = (
        f'<rspec xmlns="{NS_RSPEC}" type="manifest"><node client_id="a"><interface client_id="a:0"/></node>'
        '<link client_id="l"><interface_ref client_id="a:0"/></link></rspec>'
    )
    with pytest.raises(RSpecError, match="vlantag"):
        validate(doc, "manifest")
    validate(doc.replace('<link client_id="l"', '<link client_id="l" vlantag="7"'), "manifest")


def test_validation_checks_our_elements_and_skips_foreign_ones() -> None:
    foreign = '<x:thing xmlns:x="urn:example:ext" whatever="1"><x:deep/></x:thing>'
    validate(HEAD + foreign + node_xml("h1") + "</rspec>", "request")
    with pytest.raises(RSpecError, match="format"):
        validate(HEAD + '<primo:model format="java">x</primo:model></rspec>', "request")
    ad = (
        f'<rspec xmlns="{NS_RSPEC}" xmlns:primo="{NS_PRIMO}" type="advertisement">'
        f'<node component_id="{CM}" component_manager_id="{CM}" exclusive="false">'
        '<primo:capacity slots="-1" available="0"/></node></rspec>'
    )
    with pytest.raises(RSpecError, match="slots"):
        validate(ad, "advertisement")


def test_validation_is_safe_to_share_between_threads() -> None:
    doc = (DATA / "request_full.xml").read_bytes()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                validate(doc, "request")
                with pytest.raises(RSpecError):
                    validate(doc.replace(b'type="request"', b'type="manifest"'), "request")
        except BaseException as e:  # collected and re-raised in the main thread
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


# -- advertisement ------------------------------------------------------------------------------


def ad_fixture() -> str:
    def iface(node: str, n: int) -> AdInterface:
        return AdInterface(Urn("primo", "interface", f"{node}:eth{n}"), f"eth{n}")

    nodes = [
        AdNode(
            Urn("primo", "node", "shared1"), CM, "shared1", "shared", capacity=8, available=5, exclusive=False,
            interfaces=(iface("shared1", 0),), location=Location("US", 25.7617, -80.1918),
        ),
        AdNode(
            Urn("primo", "node", "pc1"), CM, "pc1", "cluster", capacity=4, available=0, exclusive=True,
            interfaces=(iface("pc1", 0), iface("pc1", 1)),
        ),
        AdNode(
            Urn("primo", "node", "pc2"), CM, "pc2", "cluster", capacity=4, available=4, exclusive=True,
            sliver_types=("emulated-host",), interfaces=(iface("pc2", 0),),
        ),
    ]
    links = [
        AdLink(
            Urn("primo", "link", "pc1-pc2"), "pc1-pc2",
            (Urn("primo", "interface", "pc1:eth1"), Urn("primo", "interface", "pc2:eth0")),
            capacity_kbps=1_000_000, latency_ms=0.1, component_manager_id=CM,
        ),
        AdLink(
            Urn("primo", "link", "wan1"), "wan1",
            (Urn("primo", "interface", "shared1:eth0"), Urn("primo", "interface", "pc1:eth0")),
            capacity_kbps=100_000, latency_ms=12, link_type="vlan",
        ),
    ]
    return advertisement(nodes, links, now=NOW, expires=LATER)


def test_advertisement_validates_and_matches_the_golden_file() -> None:
    text = ad_fixture()
    validate(text, "advertisement")
    golden("advertisement.xml", text)


def test_advertisement_content() -> None:
    root = etree.fromstring(ad_fixture().encode())
    assert root.get("type") == "advertisement"
    assert root.get("generated") == "2026-01-02T03:04:05Z" and root.get("expires") == "2026-01-02T04:04:05Z"
    (shared,) = root.xpath("r:node[@component_name='shared1']", namespaces=NS)
    assert shared.get("component_id") == "urn:publicid:IDN+primo+node+shared1"
    assert shared.get("component_manager_id") == str(CM) and shared.get("exclusive") == "false"
    assert shared.xpath("r:hardware_type/@name", namespaces=NS) == ["primo-shared"]
    assert shared.xpath("r:sliver_type/@name", namespaces=NS) == ["emulated-host", "simulator"]
    assert shared.xpath("r:available/@now", namespaces=NS) == ["true"]
    assert shared.xpath("r:location/@country", namespaces=NS) == ["US"]
    (cap,) = shared.xpath("primo:capacity", namespaces=NS)
    assert (cap.get("slots"), cap.get("available")) == ("8", "5")
    (pc1,) = root.xpath("r:node[@component_name='pc1']", namespaces=NS)
    assert pc1.xpath("r:hardware_type/@name", namespaces=NS) == ["primo-cluster"]
    assert pc1.xpath("r:available/@now", namespaces=NS) == ["false"]
    assert pc1.xpath("r:interface/@component_id", namespaces=NS) == [
        "urn:publicid:IDN+primo+interface+pc1%3Aeth0", "urn:publicid:IDN+primo+interface+pc1%3Aeth1",
    ]
    (wan,) = root.xpath("r:link[@component_name='wan1']", namespaces=NS)
    props = wan.xpath("r:property", namespaces=NS)
    assert [(p.get("capacity"), p.get("latency")) for p in props] == [("100000", "12"), ("100000", "12")]
    assert props[0].get("source_id") == props[1].get("dest_id")
    assert wan.xpath("r:link_type/@name", namespaces=NS) == ["vlan"]


def test_advertisement_refuses_inconsistent_input() -> None:
    node = AdNode(Urn("primo", "node", "a"), CM, "a", "cluster", capacity=1, available=1, exclusive=False)
    with pytest.raises(RSpecError, match="used twice"):
        advertisement([node, node], now=NOW, expires=LATER)
    link = AdLink(
        Urn("primo", "link", "l"), "l", (Urn("primo", "interface", "x"), Urn("primo", "interface", "y")), 10, 1.0
    )
    with pytest.raises(RSpecError, match="which no node has"):
        advertisement([node], [link], now=NOW, expires=LATER)
    with pytest.raises(RSpecError, match="timezone-aware"):
        advertisement([node], now=datetime(2026, 1, 1), expires=LATER)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "desktop"}, "kind must be one of"),
        ({"capacity": 2, "available": 3}, "available"),
        ({"capacity": -1, "available": 0}, "available"),
        ({"sliver_types": ()}, "no sliver type"),
    ],
)
def test_ad_node_checks_its_values(kwargs: dict[str, object], message: str) -> None:
    values: dict[str, object] = {"kind": "cluster", "capacity": 2, "available": 1, "exclusive": False}
    values.update(kwargs)
    with pytest.raises(RSpecError, match=message):
        AdNode(Urn("primo", "node", "a"), CM, "a", **values)  # type: ignore[arg-type]


# -- manifest -----------------------------------------------------------------------------------

MODEL = VirtualModel("dml", text="Net [ id top host [ id h1 ] ]\n", mapping=(("top:h1", "h1"),))


def manifest_fixture(model: VirtualModel | None = MODEL) -> str:
    sliver = Urn("primo:proj1", "sliver", "42")
    h1_if0 = ManInterface(
        "h1:if0", Urn("primo:proj1", "sliver", "43"), Urn("primo", "interface", "pc1:eth1"), "02:00:00:00:00:01",
        ReqIp.parse("10.0.1.2", "255.255.255.0"),
    )
    sim_if0 = ManInterface("sim0:if0", Urn("primo:proj1", "sliver", "45"), None, "02:00:00:00:00:02")
    nodes = [
        ManNode(
            "h1", sliver, Urn("primo", "node", "pc1"), CM, "emulated-host", False, (h1_if0,),
            (Login("pc1.primo.example", 30022, "alice"), Login("pc1.primo.example", 30022, "bob")),
        ),
        ManNode("sim0", Urn("primo:proj1", "sliver", "44"), Urn("primo", "node", "pc2"), CM, "simulator", True,
                (sim_if0,)),
    ]
    links = [
        ManLink(
            "link0", Urn("primo:proj1", "sliver", "46"), "4097", ("h1:if0", "sim0:if0"),
            capacity_kbps=100_000, latency_ms=2.5, packet_loss=0.001, link_type="vlan",
        )
    ]
    return manifest(nodes, links, model=model, now=NOW, expires=LATER)


def test_manifest_validates_and_matches_the_golden_file() -> None:
    text = manifest_fixture()
    validate(text, "manifest")
    golden("manifest.xml", text)
    validate(manifest_fixture(VirtualModel("python", url="https://example.org/m.py")), "manifest")
    validate(manifest_fixture(None), "manifest")


def test_manifest_content() -> None:
    root = etree.fromstring(manifest_fixture().encode())
    assert root.get("type") == "manifest"
    (h1,) = root.xpath("r:node[@client_id='h1']", namespaces=NS)
    assert h1.get("sliver_id") == "urn:publicid:IDN+primo:proj1+sliver+42"
    assert h1.get("component_id") == "urn:publicid:IDN+primo+node+pc1"
    assert h1.xpath("r:sliver_type/@name", namespaces=NS) == ["emulated-host"]
    (iface,) = h1.xpath("r:interface", namespaces=NS)
    assert iface.get("mac_address") == "02:00:00:00:00:01"
    assert iface.get("sliver_id") == "urn:publicid:IDN+primo:proj1+sliver+43"
    (ip,) = iface.xpath("r:ip", namespaces=NS)
    assert (ip.get("address"), ip.get("netmask"), ip.get("type")) == ("10.0.1.2", "255.255.255.0", "ipv4")
    logins = h1.xpath("r:services/r:login", namespaces=NS)
    assert [(x.get("authentication"), x.get("hostname"), x.get("port"), x.get("username")) for x in logins] == [
        ("ssh-keys", "pc1.primo.example", "30022", "alice"), ("ssh-keys", "pc1.primo.example", "30022", "bob"),
    ]
    (link,) = root.xpath("r:link", namespaces=NS)
    assert link.get("vlantag") == "4097" and link.get("sliver_id") == "urn:publicid:IDN+primo:proj1+sliver+46"
    refs = link.xpath("r:interface_ref", namespaces=NS)
    assert [(r.get("client_id"), r.get("sliver_id")) for r in refs] == [
        ("h1:if0", "urn:publicid:IDN+primo:proj1+sliver+43"), ("sim0:if0", "urn:publicid:IDN+primo:proj1+sliver+45"),
    ]
    props = link.xpath("r:property", namespaces=NS)
    assert {(p.get("source_id"), p.get("dest_id")) for p in props} == {("h1:if0", "sim0:if0"), ("sim0:if0", "h1:if0")}
    assert {(p.get("capacity"), p.get("latency"), p.get("packet_loss")) for p in props} == {("100000", "2.5", "0.001")}
    (model,) = root.xpath("primo:model", namespaces=NS)
    assert model.get("format") == "dml" and model.text == MODEL.text
    assert [(m.get("virtual"), m.get("node")) for m in model] == [("top:h1", "h1")]


def test_manifest_refuses_inconsistent_input() -> None:
    node = ManNode("a", Urn("primo", "sliver", "1"), Urn("primo", "node", "n"), CM, "emulated-host", False)
    with pytest.raises(RSpecError, match="duplicate client_id"):
        manifest([node, node], now=NOW, expires=LATER)
    link = ManLink("l", Urn("primo", "sliver", "2"), "1", ("a:0",))
    with pytest.raises(RSpecError, match="which no node has"):
        manifest([node], [link], now=NOW, expires=LATER)
    with pytest.raises(RSpecError, match="port"):
        Login("h", 0, "u")


def test_lan_values_are_written_per_member_into_the_lan() -> None:
    node = ManNode(
        "a", Urn("primo", "sliver", "1"), Urn("primo", "node", "n"), CM, "emulated-host", False,
        tuple(ManInterface(f"a:{i}", Urn("primo", "sliver", f"i{i}"), None, f"02:00:00:00:00:0{i}") for i in range(3)),
    )
    lan = ManLink("lan0", Urn("primo", "sliver", "2"), "7", ("a:0", "a:1", "a:2"), capacity_kbps=1000)
    text = manifest([node], [lan], now=NOW, expires=LATER)
    validate(text, "manifest")
    props = etree.fromstring(text.encode()).xpath("//r:property", namespaces=NS)
    assert [(p.get("source_id"), p.get("dest_id"), p.get("capacity")) for p in props] == [
        ("a:0", "lan0", "1000"), ("a:1", "lan0", "1000"), ("a:2", "lan0", "1000"),
    ]


# -- requests: fixtures -------------------------------------------------------------------------


def test_full_request_fixture() -> None:
    req = parse_request((DATA / "request_full.xml").read_bytes())
    assert [n.client_id for n in req.nodes] == ["h1", "h2", "sim0"]
    h1, h2, sim0 = req.nodes
    assert h1.sliver_type == "emulated-host" and h1.exclusive is False
    assert h1.component_id is None and h1.component_manager_id == CM
    assert h1.disk_image == "urn:publicid:IDN+primo+image+ubuntu22"
    assert [i.client_id for i in h1.interfaces] == ["h1:if0", "h1:if1"]
    assert h1.interfaces[0].ip == ReqIp(ipaddress.IPv4Address("10.0.1.2"), 24)
    assert h1.interfaces[1].ip is None
    assert h2.component_id == Urn("primo", "node", "pc2") and h2.hardware_type == "primo-cluster"
    assert h2.interfaces[0].component_id == Urn("primo", "interface", "pc2:eth1")
    assert h2.interfaces[0].ip is not None and h2.interfaces[0].ip.netmask == "255.255.255.0"
    assert sim0.sliver_type == "simulator" and sim0.exclusive is True
    link0, lan0 = req.links
    assert link0.interface_refs == ("h1:if0", "sim0:if0") and link0.link_type == "vlan" and not link0.is_lan
    # Directions differ: the link-wide values are the most restrictive, each direction is kept.
    assert (link0.capacity_kbps, link0.latency_ms, link0.packet_loss) == (50_000, 2.5, 0.001)
    assert link0.properties == (
        LinkProperty("h1:if0", "sim0:if0", 100_000, 2.0, 0.0), LinkProperty("sim0:if0", "h1:if0", 50_000, 2.5, 0.001),
    )
    assert lan0.is_lan and lan0.capacity_kbps == 1000 and lan0.latency_ms is None and lan0.packet_loss is None
    assert req.model is not None
    assert req.model.format == "dml" and req.model.url is None
    assert req.model.text is not None and req.model.text.startswith("\nNet [\n  id top\n")
    assert '"<" and "&"' in req.model.text
    assert req.model.mapping == (("top:h1", "h1"), ("top:h2", "h2"), ("top:left", "sim0"))
    assert req.node("h2") is h2 and req.link("lan0") is lan0
    with pytest.raises(KeyError):
        req.node("nope")


def test_omni_style_request_without_extension() -> None:
    req = parse_request((DATA / "request_omni.xml").read_text(encoding="utf-8"))
    assert [n.client_id for n in req.nodes] == ["left", "right"]
    assert req.nodes[1].component_id == Urn("primo", "node", "shared1")
    ip = req.nodes[0].interfaces[0].ip
    assert ip is not None and ip.interface == ipaddress.IPv4Interface("192.168.1.1/30")
    assert req.links[0].interface_refs == ("left:if0", "right:if0") and req.links[0].capacity_kbps is None
    assert req.model is None


def test_model_by_url() -> None:
    req = parse_request((DATA / "request_model_url.xml").read_bytes())
    assert req.model == VirtualModel("python", None, "https://example.org/models/campus.py", (("top", "sim0"),))
    assert req.nodes[0].interfaces == ()


def test_request_round_trips_through_request_rspec() -> None:
    for name in ("request_full.xml", "request_omni.xml", "request_model_url.xml"):
        req = parse_request((DATA / name).read_bytes())
        text = request_rspec(req)
        validate(text, "request")
        assert parse_request(text) == req, name


def test_request_rspec_writes_link_wide_values_per_direction() -> None:
    req = Request(
        (ReqNode("a", interfaces=(ReqInterface("a:0", ReqIp.parse("fd00::1", "64")),)), ReqNode("b", "simulator",
         interfaces=(ReqInterface("b:0"),))),
        (ReqLink("l", ("a:0", "b:0"), capacity_kbps=10, latency_ms=1.5, packet_loss=0.5),),
        VirtualModel("python", text="if x < 1 and y:\n    pass\n", mapping=(("top:a", "a"),)),
    )
    text = request_rspec(req)
    validate(text, "request")
    assert "<![CDATA[if x < 1" in text
    back = parse_request(text)
    assert back.nodes == req.nodes and back.model == req.model
    assert back.links[0].properties == (
        LinkProperty("a:0", "b:0", 10, 1.5, 0.5), LinkProperty("b:0", "a:0", 10, 1.5, 0.5),
    )
    assert back.links[0].capacity_kbps == 10 and back.links[0].latency_ms == 1.5 and back.links[0].packet_loss == 0.5


# -- requests: geni-lib -------------------------------------------------------------------------


class PrimoModel:
    """How a geni-lib user adds our extension: a resource object that writes ``<primo:model>``.

    The same class is shown in docs/RSPEC.md.
    """

    def __init__(self, fmt: str, text: str | None = None, url: str | None = None,
                 mapping: tuple[tuple[str, str], ...] = ()) -> None:
        import geni.namespaces as GNS  # type: ignore[import-untyped]

        self.namespaces = [GNS.Namespace("primo", NS_PRIMO)]
        self.fmt, self.text, self.url, self.mapping = fmt, text, url, mapping

    def _write(self, root: etree._Element) -> etree._Element:
        model = etree.SubElement(root, f"{{{NS_PRIMO}}}model", format=self.fmt)
        if self.url is not None:
            model.set("url", self.url)
        model.text = self.text
        for virtual, node in self.mapping:
            etree.SubElement(model, f"{{{NS_PRIMO}}}map", virtual=virtual, node=node)
        return model


def geni_lib_request(with_model: str | None = None) -> bytes:
    pg = pytest.importorskip("geni.rspec.pg")
    r = pg.Request()
    hosts = []
    for k in (1, 2, 3):
        n = pg.Node(f"h{k}", "emulated-host", exclusive=False if k == 2 else None)
        if k == 1:
            n.component_manager_id = str(CM)
            n.routable_control_ip = True  # an emulab extension element
        hosts.append(n)
    sim = pg.Node("sim0", "simulator", component_id=str(Urn("primo", "node", "pc1")), exclusive=True)
    i1 = hosts[0].addInterface("if0")
    i1.addAddress(pg.IPv4Address("10.0.0.1", "255.255.255.0"))
    i2 = sim.addInterface("if0")
    i2.addAddress(pg.IPv4Address("10.0.0.2", "255.255.255.0"))
    link = pg.Link("l0")
    link.addInterface(i1)
    link.addInterface(i2)
    link.bandwidth, link.latency, link.plr = 10_000, 5, 0.01
    link.best_effort = True  # more emulab extension elements
    link.disableMACLearning()
    lan = pg.LAN("lan0")
    for n in hosts:
        lan.addInterface(n.addInterface("if1"))
    lan.bandwidth = 1000
    for resource in (*hosts, sim, link, lan):
        r.addResource(resource)
    mapping = (("top:h1", "h1"), ("top:sub", "sim0"))
    if with_model == "resource":
        r.addResource(PrimoModel("dml", "Net [ id top ]", mapping=mapping))
    elif with_model == "raw":
        model = etree.Element(f"{{{NS_PRIMO}}}model", format="python", url="https://example.org/m.py",
                              nsmap={"primo": NS_PRIMO})
        for virtual, node in mapping:
            etree.SubElement(model, f"{{{NS_PRIMO}}}map", virtual=virtual, node=node)
        r.addRawElement(model)
    xml: bytes = r.toXMLString(pretty_print=True)
    return xml


def test_geni_lib_request_parses() -> None:
    xml = geni_lib_request()
    validate(xml, "request")
    req = parse_request(xml)
    assert [n.client_id for n in req.nodes] == ["h1", "h2", "h3", "sim0"]
    h1, h2, _h3, sim = req.nodes
    assert h1.component_manager_id == CM and h1.exclusive is None and h2.exclusive is False
    assert sim.sliver_type == "simulator" and sim.component_id == Urn("primo", "node", "pc1") and sim.exclusive
    assert [i.client_id for i in h1.interfaces] == ["h1:if0", "h1:if1"]
    assert h1.interfaces[0].ip == ReqIp.parse("10.0.0.1", "255.255.255.0", "ipv4")
    l0, lan0 = req.links
    assert l0.interface_refs == ("h1:if0", "sim0:if0") and l0.link_type is None
    assert (l0.capacity_kbps, l0.latency_ms, l0.packet_loss) == (10_000, 5.0, 0.01)
    assert len(l0.properties) == 2
    assert lan0.interface_refs == ("h1:if1", "h2:if1", "h3:if1") and lan0.link_type == "lan" and lan0.is_lan
    assert lan0.capacity_kbps == 1000
    assert {p.dest_id for p in lan0.properties} == {"lan0"}
    assert req.model is None


@pytest.mark.parametrize("how", ["resource", "raw"])
def test_geni_lib_request_with_our_extension(how: str) -> None:
    xml = geni_lib_request(how)
    validate(xml, "request")
    model = parse_request(xml).model
    assert model is not None and model.mapping == (("top:h1", "h1"), ("top:sub", "sim0"))
    if how == "resource":
        assert (model.format, model.text, model.url) == ("dml", "Net [ id top ]", None)
    else:
        assert (model.format, model.text, model.url) == ("python", None, "https://example.org/m.py")


# -- requests: errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("this is not xml", "not well-formed XML"),
        ("<rspec", "not well-formed XML"),
        ("   ", "empty"),
        (f'<request xmlns="{NS_RSPEC}" type="request"/>', "root element is <request>"),
        ('<rspec xmlns="http://www.protogeni.net/resources/rspec/2" type="request"/>', "namespace"),
        ('<rspec type="request"/>', "no namespace"),
        (f'<rspec xmlns="{NS_RSPEC}" type="manifest"/>', "type is 'manifest'; expected 'request'"),
        (f'<rspec xmlns="{NS_RSPEC}"/>', "no type attribute"),
    ],
)
def test_documents_that_are_not_requests(document: str, message: str) -> None:
    with pytest.raises(RSpecError, match=message) as info:
        parse_request(document)
    assert info.value.code == GeniCode.BADARGS
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('<node><sliver_type name="emulated-host"/></node>', "a <node> has no client_id"),
        ('<node client_id=" "/>', "a <node> has no client_id"),
        ('<node client_id="h1"><interface/></node>', "a <interface> of node 'h1' has no client_id"),
        (node_xml("h1") + node_xml("h1"), "duplicate client_id 'h1': used by a node and a node"),
        (node_xml("h1", "x") + node_xml("h2", "x"), "duplicate client_id 'x'"),
        (TWO_HOSTS + '<link client_id="h1"><interface_ref client_id="h1:if0"/></link>', "duplicate client_id 'h1'"),
        ('<node client_id="h1" exclusive="maybe"/>', "node 'h1': exclusive must be true or false"),
        ('<node client_id="h1" component_id="pc1"/>', "node 'h1': bad component_id"),
        ('<node client_id="h1"><sliver_type name="a"/><sliver_type name="b"/></node>', "more than one <sliver_type>"),
        ('<node client_id="h1"><sliver_type/></node>', "<sliver_type> has no name"),
        # links
        (TWO_HOSTS + '<link client_id="l"><interface_ref client_id="h3:if0"/></link>',
         "link 'l': interface_ref 'h3:if0' is not an interface of any node"),
        (TWO_HOSTS + '<link client_id="l"><interface_ref client_id="h1"/></link>', "'h1' is not an interface"),
        (TWO_HOSTS + '<link client_id="a"><interface_ref client_id="h1:if0"/></link>'
         '<link client_id="b"><interface_ref client_id="h1:if0"/></link>',
         "link 'b': interface 'h1:if0' is already used by link 'a'"),
        (TWO_HOSTS + '<link client_id="l"><interface_ref client_id="h1:if0"/><interface_ref client_id="h1:if0"/>'
         "</link>", "lists interface 'h1:if0' twice"),
        (TWO_HOSTS + '<link client_id="l"/>', "link 'l' has no <interface_ref>"),
        (TWO_HOSTS + '<link client_id="l"><interface_ref/></link>', "an <interface_ref> has no client_id"),
        (TWO_HOSTS + '<link client_id="l"><interface_ref client_id="h1:if0"/><link_type name="lan"/>'
         '<link_type name="vlan"/></link>', "more than one <link_type>"),
    ],
)
def test_bad_nodes_and_links(body: str, message: str) -> None:
    assert message in bad_request(body)


def link_with_property(**attrs: str) -> str:
    prop = "".join(f' {k}="{v}"' for k, v in attrs.items())
    return (
        TWO_HOSTS + '<link client_id="l"><interface_ref client_id="h1:if0"/><interface_ref client_id="h2:if0"/>'
        f"<property{prop}/></link>"
    )


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"source_id": "h1:if0", "dest_id": "h2:if0", "capacity": "-1"}, "capacity must be a whole number of kbps >="),
        ({"source_id": "h1:if0", "dest_id": "h2:if0", "capacity": "1.5"}, "capacity must be a whole number of kbps"),
        ({"source_id": "h1:if0", "dest_id": "h2:if0", "capacity": "fast"}, "capacity 'fast' is not a number"),
        ({"source_id": "h1:if0", "dest_id": "h2:if0", "capacity": "inf"}, "not a finite number"),
        ({"source_id": "h1:if0", "dest_id": "h2:if0", "latency": "-0.5"}, "latency must be a number of ms >= 0"),
        ({"source_id": "h1:if0", "dest_id": "h2:if0", "latency": "nan"}, "not a finite number"),
        ({"source_id": "h1:if0", "dest_id": "h2:if0", "packet_loss": "1.5"}, "packet_loss must be a fraction in [0,"),
        ({"source_id": "h1:if0", "dest_id": "h2:if0", "packet_loss": "-0.1"}, "packet_loss must be a fraction"),
        ({"source_id": "h1:if0"}, "needs source_id and dest_id"),
        ({"source_id": "h3:if0", "dest_id": "h2:if0"}, "source_id 'h3:if0' is not an interface of this link"),
        ({"source_id": "h1:if0", "dest_id": "zz"}, "dest_id 'zz' is neither an interface of this link nor the link"),
        ({"source_id": "h1:if0", "dest_id": "h1:if0"}, "source_id and dest_id are the same"),
    ],
)
def test_bad_link_properties(attrs: dict[str, str], message: str) -> None:
    reason = bad_request(link_with_property(**attrs))
    assert reason.startswith("link 'l': property ")
    assert message in reason


def test_two_properties_for_one_direction() -> None:
    body = link_with_property(source_id="h1:if0", dest_id="h2:if0").replace("</link>", "")
    body += '<property source_id="h1:if0" dest_id="h2:if0" capacity="5"/></link>'
    assert "two <property> elements from 'h1:if0' to 'h2:if0'" in bad_request(body)


def ip_node(*ips: str) -> str:
    return '<node client_id="h1"><interface client_id="h1:if0">' + "".join(ips) + "</interface></node>"


@pytest.mark.parametrize(
    ("ips", "message"),
    [
        (['<ip address="10.0.0.256" netmask="255.255.255.0"/>'], "'10.0.0.256' is not an IP address"),
        (['<ip address="10.0.0.1" netmask="255.0.255.0"/>'], "bad netmask '255.0.255.0'"),
        (['<ip address="10.0.0.1" netmask="33"/>'], "bad netmask '33'"),
        (['<ip address="10.0.0.1" netmask="ff"/>'], "bad netmask 'ff'"),
        (['<ip address="fd00::1" netmask="ffff::"/>'], "bad netmask"),
        (['<ip address="10.0.0.1" type="ipv6"/>'], "type 'ipv6' does not match an IPv4 address"),
        (['<ip netmask="255.0.0.0"/>'], "<ip> has no address"),
        (['<ip address="10.0.0.1"/>', '<ip address="10.0.0.2"/>'], "has 2 <ip> elements"),
    ],
)
def test_bad_addresses(ips: list[str], message: str) -> None:
    reason = bad_request(ip_node(*ips))
    assert reason.startswith("interface 'h1:if0' of node 'h1'")
    assert message in reason


def test_ip_values() -> None:
    ip = ReqIp.parse(" 10.1.2.3 ", "255.255.240.0", "IPv4")
    assert (ip.type, ip.prefixlen, ip.netmask, str(ip.interface)) == ("ipv4", 20, "255.255.240.0", "10.1.2.3/20")
    v6 = ReqIp.parse("fd00::5", "/64")
    assert (v6.type, v6.netmask, v6.interface) == ("ipv6", "64", ipaddress.IPv6Interface("fd00::5/64"))
    bare = ReqIp.parse("10.0.0.1")
    assert bare.netmask is None and bare.interface is None
    assert ReqIp.parse("10.0.0.1", "0.0.0.0").prefixlen == 0


def model_doc(model: str, nodes: str = TWO_HOSTS + node_xml("sim0", sliver_type="simulator")) -> str:
    return nodes + model


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (model_doc('<primo:model format="dml" url="https://x.org/m.dml">Net [ ]</primo:model>'),
         "has both inline text and a url"),
        (model_doc('<primo:model format="dml"> <primo:map virtual="top:h1" node="h1"/> </primo:model>'),
         "has neither inline text nor a url"),
        (model_doc('<primo:model format="ns2">x</primo:model>'), "unknown format 'ns2'"),
        (model_doc("<primo:model>x</primo:model>"), "no format attribute"),
        (model_doc('<primo:model format="dml" url="file:///etc/passwd"/>'), "must be an absolute http or https URL"),
        (model_doc('<primo:model format="dml" url="models/m.dml"/>'), "absolute http or https URL"),
        (model_doc('<primo:model format="dml">x<primo:map virtual="top:h9" node="h9"/></primo:model>'),
         "<primo:map virtual='top:h9'>: node 'h9' is not a node of this request"),
        (model_doc('<primo:model format="dml">x<primo:map virtual="top:h1" node="h1:if0"/></primo:model>'),
         "node 'h1:if0' is not a node of this request"),
        (model_doc('<primo:model format="dml">x<primo:map virtual="top:h1"/></primo:model>'),
         "both virtual and node are required"),
        (model_doc('<primo:model format="dml">x<primo:map virtual="a" node="sim0"/>'
                   '<primo:map virtual="a" node="h1"/></primo:model>'), "virtual element 'a' is mapped twice"),
        (model_doc('<primo:model format="dml">x<primo:map virtual="top:a" node="h1"/>'
                   '<primo:map virtual="top:b" node="h1"/></primo:model>'),
         "emulated host 'h1' realizes one virtual host, but is mapped to both 'top:a' and 'top:b'"),
        (model_doc('<primo:model format="dml"><primo:map virtual="a" node="h1"/>Net [ ]</primo:model>'),
         "the model text must come before the <primo:map> elements"),
        (model_doc('<primo:model format="dml">x<other/></primo:model>'), "may hold only <primo:map> elements"),
        (model_doc('<primo:model format="dml">x</primo:model><primo:model format="dml">y</primo:model>'),
         "2 <primo:model> elements"),
        ('<node client_id="h1"><primo:model format="dml">x</primo:model></node>',
         "<primo:model> is not allowed under <node>"),
        ('<primo:map virtual="a" node="h1"/>' + node_xml("h1"), "<primo:map> is not allowed under <rspec>"),
        ('<node client_id="h1"><primo:capacity slots="1" available="1"/></node>',
         "unknown PrimoGENI element <primo:capacity> under <node>"),
        ('<node client_id="h1"><v:x xmlns:v="urn:vendor"><primo:model format="dml">x</primo:model></v:x></node>',
         "<primo:model> is not allowed under <x>"),
    ],
)
def test_bad_models(body: str, message: str) -> None:
    assert message in bad_request(body)


def test_model_maps_many_elements_to_one_simulator() -> None:
    body = model_doc('<primo:model format="dml">Net [ ]<primo:map virtual="top:a" node="sim0"/>'
                     '<primo:map virtual="top:b" node="sim0"/></primo:model>')
    req = parse_request(HEAD + body + "</rspec>")
    assert req.model is not None and req.model.mapping == (("top:a", "sim0"), ("top:b", "sim0"))


def test_virtual_model_checks_its_values() -> None:
    with pytest.raises(RSpecError, match="not both"):
        VirtualModel("dml", "x", "https://a.org/m")
    with pytest.raises(RSpecError, match="neither"):
        VirtualModel("dml", "  ")
    with pytest.raises(RSpecError, match="unknown format"):
        VirtualModel("c++", "x")
    with pytest.raises(RSpecError, match="mapped twice"):
        VirtualModel("dml", "x", mapping=(("a", "n1"), ("a", "n2")))


def test_schema_catches_what_the_reader_does_not_look_at() -> None:
    reason = bad_request(f'<node client_id="h1"><bogus/></node>{node_xml("h2")}')
    assert "does not validate against the RSpec v3 schemas" in reason and "bogus" in reason


def test_foreign_extensions_and_unused_core_elements_are_skipped() -> None:
    body = (
        '<e:anything xmlns:e="http://www.protogeni.net/resources/rspec/ext/emulab/1"><e:x/></e:anything>'
        '<node client_id="h1" xmlns:v="urn:vendor" v:flavour="large"><sliver_type name="emulated-host">'
        '<v:cores n="2"/></sliver_type><location country="US"/><services><login authentication="ssh-keys"/>'
        '</services><v:deep><v:deeper/></v:deep></node>'
    )
    req = parse_request(HEAD + body + "</rspec>")
    assert req == Request((ReqNode("h1", "emulated-host"),))


def test_default_sliver_type() -> None:
    assert parse_request(HEAD + '<node client_id="h1"/></rspec>').nodes[0].sliver_type == "emulated-host"


# -- safe parsing -------------------------------------------------------------------------------

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<rspec xmlns="http://www.geni.net/resources/rspec/3" type="request"><node client_id="&lol9;"/></rspec>"""

XXE = """<?xml version="1.0"?>
<!DOCTYPE rspec [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>
<rspec xmlns="http://www.geni.net/resources/rspec/3" type="request"><node client_id="&xxe;"/></rspec>"""


@pytest.mark.parametrize(
    "document",
    [
        BILLION_LAUGHS,
        XXE,
        XXE.replace("file:///etc/passwd", "http://127.0.0.1:9/x"),
        f'<!-- hi --><!DOCTYPE rspec><rspec xmlns="{NS_RSPEC}" type="request"/>',
        f'<!DOCTYPE rspec SYSTEM "http://example.org/x.dtd"><rspec xmlns="{NS_RSPEC}" type="request"/>',
    ],
)
def test_doctype_is_refused(document: str) -> None:
    for data in (document, document.encode()):
        with pytest.raises(RSpecError, match="DOCTYPE: DTDs"):
            parse_request(data)
        with pytest.raises(RSpecError, match="DOCTYPE: DTDs"):
            validate(data, "request")


def test_doctype_in_another_encoding_is_refused_too() -> None:
    with pytest.raises(RSpecError):
        parse_request(BILLION_LAUGHS.replace('version="1.0"', 'version="1.0" encoding="UTF-16"').encode("utf-16"))


def test_size_limit() -> None:
    padding = "<!--" + "x" * MAX_RSPEC_BYTES + "-->"
    with pytest.raises(RSpecError, match="over the 4194304 byte"):
        parse_request(HEAD + padding + "</rspec>")
    with pytest.raises(RSpecError, match="over the 4194304 byte"):
        parse_request((HEAD + padding + "</rspec>").encode())
    just_fits = HEAD + node_xml("h1") + "</rspec>"
    just_fits = just_fits.replace("</rspec>", " " * (MAX_RSPEC_BYTES - len(just_fits)) + "</rspec>")
    assert len(just_fits.encode()) == MAX_RSPEC_BYTES
    assert parse_request(just_fits).nodes[0].client_id == "h1"
    with pytest.raises(RSpecError, match="over the 4194304 byte"):
        parse_request(just_fits + " ")


def test_encodings_and_declarations() -> None:
    doc = f"<?xml version='1.0' encoding='ISO-8859-1'?>{HEAD}<node client_id='h\u00e9'/></rspec>"
    assert parse_request(doc).nodes[0].client_id == "h\u00e9"  # a str: the declaration is moot
    assert parse_request(doc.encode("iso-8859-1")).nodes[0].client_id == "h\u00e9"
    assert parse_request("\ufeff" + HEAD + node_xml("h1") + "</rspec>").nodes[0].client_id == "h1"
    with pytest.raises(RSpecError, match="must be a string"):
        parse_request(42)  # type: ignore[arg-type]


def test_comments_and_processing_instructions_do_not_split_the_model_text() -> None:
    body = node_xml("h1") + '<primo:model format="dml">Net [<!-- note --> id 0 <?pi x?>]</primo:model>'
    model = parse_request(HEAD + body + "</rspec>").model
    assert model is not None and model.text == "Net [ id 0 ]"


# -- docs/RSPEC.md ------------------------------------------------------------------------------


def doc_blocks(language: str) -> list[str]:
    """The fenced ``language`` code blocks of docs/RSPEC.md."""
    doc = Path(primogeni.__file__).resolve().parents[2] / "docs" / "RSPEC.md"
    if not doc.is_file():
        pytest.skip(f"no {doc} (an installed copy)")
    blocks: list[str] = []
    current: list[str] | None = None
    for line in doc.read_text(encoding="utf-8").splitlines():
        if current is None and line == f"```{language}":
            current = []
        elif current is not None and line == "```":
            blocks.append("\n".join(current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def test_the_documented_request_examples_parse() -> None:
    requests = [b for b in doc_blocks("xml") if 'type="request"' in b]
    assert requests
    for block in requests:
        req = parse_request(block)
        assert req.model is not None and req.model.mapping == (("top:h1", "h1"), ("top:left", "sim0"))


def test_the_documented_geni_lib_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("geni.rspec.pg")
    (example,) = [b for b in doc_blocks("python") if "geni.rspec.pg" in b]
    exec(compile(example, "docs/RSPEC.md", "exec"), {})
    req = parse_request(capsys.readouterr().out)
    assert [n.client_id for n in req.nodes] == ["h1", "sim0"]
    assert req.model is not None and req.model.mapping == (("top:h1", "h1"),)
