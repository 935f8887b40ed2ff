"""Experimental address pool, port ranges, the shared-node rule and what plans tell the driver (AM core, both DBs)."""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from primogeni.am.core import AggregateManager
from primogeni.am.driver import RecordingDriver
from primogeni.am.inventory import Inventory, InventoryError, PhysicalLink, PhysicalNode, load_inventory
from primogeni.am.models import Base, SliverRow, SubnetRow, VniRow
from primogeni.am.plans import login_names, unix_name
from primogeni.db import make_engine, session_factory
from primogeni.geni.codes import GeniCode
from primogeni.geni.errors import GeniError
from primogeni.geni.rspec import parse_request

from .test_core import CM, OWNER, SLICE_A, SLICE_B, T0, Clock

POOL = ipaddress.IPv4Network("10.128.0.0/10")


def inventory(pool: str = "10.128.0.0/10", prefixlen: int = 24) -> Inventory:
    return Inventory((PhysicalNode("pc1", "cluster", 4, True, ssh_port_base=30000, interfaces=("eth0",)),
                      PhysicalNode("pc2", "cluster", 4, True, ssh_port_base=31000, ports_per_sliver=20,
                                   interfaces=("eth0",)),
                      PhysicalNode("shared1", "shared", 4, False, ssh_port_base=32000, interfaces=("eth0",)),
                      PhysicalNode("shared2", "shared", 4, False, ssh_port_base=33000, interfaces=("eth0",))),
                     (PhysicalLink("underlay", tuple((n, "eth0") for n in ("pc1", "pc2", "shared1", "shared2"))),),
                     pool=ipaddress.IPv4Network(pool), prefixlen=prefixlen)


@pytest.fixture
def make_am(db_url: str, tmp_path: Path):
    engine = make_engine(db_url, default_sqlite=tmp_path / "unused.sqlite")
    Base.metadata.create_all(engine)
    sessions = session_factory(engine)

    def make(inv: Inventory) -> AggregateManager:
        clock = Clock()
        return AggregateManager(sessions, inv, RecordingDriver(sessions, clock=clock), cm=CM, clock=clock)

    yield make
    engine.dispose()


def lan(slice_urn: str, am: AggregateManager, nodes: dict[str, str | None], *, addresses: dict[str, str] | None = None,
        links: int = 1) -> list:
    """Allocate ``nodes`` (client_id → bound node or None) joined by ``links`` LANs."""
    addresses = addresses or {}
    parts = []
    for n, comp in nodes.items():
        bound = f' component_id="urn:publicid:IDN+primo+node+{comp}"' if comp else ""
        ifaces = "".join(
            f'<interface client_id="{n}:l{k}">'
            + (f'<ip address="{addresses[n]}" netmask="255.255.255.0" type="ipv4"/>' if n in addresses and k == 0
               else "") + "</interface>" for k in range(links))
        parts.append(f'<node client_id="{n}" exclusive="false"{bound}><sliver_type name="emulated-host"/>'
                     f"{ifaces}</node>")
    for k in range(links):
        refs = "".join(f'<interface_ref client_id="{n}:l{k}"/>' for n in nodes)
        parts.append(f'<link client_id="lan{k}">{refs}</link>')
    xml = '<rspec xmlns="http://www.geni.net/resources/rspec/3" type="request">' + "".join(parts) + "</rspec>"
    return am.allocate(slice_urn, OWNER, T0 + timedelta(days=3), parse_request(xml), xml)


def subnets(am: AggregateManager) -> dict[str, str]:
    with am.sessions() as s:
        return {r.subnet: r.slice_urn for r in s.scalars(select(SubnetRow))}


def addresses(am: AggregateManager, slice_urn: str) -> list[ipaddress.IPv4Interface]:
    out = []
    for s in am.status(slice_urn):
        if s.kind == "node":
            for i in am.plan(s.urn).interfaces:
                if i.address:
                    out.append(ipaddress.IPv4Interface(f"{i.address}/{i.netmask}"))
    return out


def test_two_slices_never_share_a_subnet_or_a_vni_and_delete_frees_both(make_am) -> None:
    am = make_am(inventory())
    lan(SLICE_A, am, {"a1": None, "a2": None, "a3": None}, links=2)
    lan(SLICE_B, am, {"b1": None, "b2": None})
    held = subnets(am)
    assert len(held) == 3 and set(held.values()) == {SLICE_A, SLICE_B}
    assert all(ipaddress.IPv4Network(n).subnet_of(POOL) and n.endswith("/24") for n in held)
    nets_a = {a.network for a in addresses(am, SLICE_A)}
    nets_b = {a.network for a in addresses(am, SLICE_B)}
    assert len(nets_a) == 2 and len(nets_b) == 1 and not nets_a & nets_b
    with am.sessions() as s:
        vnis = list(s.scalars(select(VniRow.vni)))
    assert len(vnis) == len(set(vnis)) == 3
    am.delete(SLICE_A, None)
    assert set(subnets(am).values()) == {SLICE_B}
    with am.sessions() as s:
        assert s.scalar(select(func.count()).select_from(VniRow)) == 1
    lan(SLICE_A, am, {"c1": None, "c2": None})  # a freed subnet is handed out again
    assert sorted(subnets(am)) == ["10.128.0.0/24", "10.128.2.0/24"]


def test_exhausted_pool_is_a_clear_error_and_allocates_nothing(make_am) -> None:
    am = make_am(inventory("10.200.0.0/30", 30))
    lan(SLICE_A, am, {"a1": None, "a2": None})  # the pool's one /30
    with am.sessions() as s:
        before = s.scalar(select(func.count()).select_from(SliverRow))
    with pytest.raises(GeniError) as e:
        lan(SLICE_B, am, {"b1": None, "b2": None})
    assert e.value.code == GeniCode.UNAVAILABLE and "10.200.0.0/30" in e.value.reason
    with am.sessions() as s:
        assert s.scalar(select(func.count()).select_from(SliverRow)) == before
        assert s.scalar(select(func.count()).select_from(VniRow)) == 1
    # three hosts do not fit a /30 either: refused, and still nothing taken
    am.delete(SLICE_A, None)
    with pytest.raises(GeniError) as e:
        lan(SLICE_B, am, {"b1": None, "b2": None, "b3": None})
    assert e.value.code == GeniCode.BADARGS and "do not fit" in e.value.reason
    assert subnets(am) == {}


def test_the_reaper_frees_subnets(make_am) -> None:
    am = make_am(inventory())
    lan(SLICE_A, am, {"a1": None, "a2": None})
    am.clock.now = T0 + timedelta(minutes=11)  # the allocation lapses
    assert am.reap() == 3
    assert subnets(am) == {}


def test_addressed_links_keep_their_network(make_am) -> None:
    am = make_am(inventory())
    lan(SLICE_A, am, {"a1": None, "a2": None, "a3": None}, addresses={"a1": "192.168.5.1", "a2": "192.168.5.2"})
    got = sorted(str(a) for a in addresses(am, SLICE_A))
    assert got == ["192.168.5.1/24", "192.168.5.2/24", "192.168.5.3/24"]
    assert subnets(am) == {}  # nothing taken from the pool


def test_port_ranges_follow_the_slots(make_am) -> None:
    am = make_am(inventory())
    made = lan(SLICE_A, am, {"a": "pc1", "b": "pc1", "c": "pc2"})
    plans = {s.client_id: am.plan(s.urn) for s in made if s.kind == "node"}
    assert plans["a"].ports == (30000, 30009) and plans["b"].ports == (30010, 30019)
    assert plans["c"].ports == (31000, 31019)  # pc2 gives 20 ports per sliver
    excl = '<rspec xmlns="http://www.geni.net/resources/rspec/3" type="request"><node client_id="x" ' \
           'exclusive="true" component_id="urn:publicid:IDN+primo+node+pc2"><sliver_type name="emulated-host"/>' \
           '</node></rspec>'
    with pytest.raises(GeniError):  # pc2 has a sliver: not exclusively available
        am.allocate(SLICE_B, OWNER, T0 + timedelta(days=3), parse_request(excl), excl)
    am.delete(SLICE_A, None)
    (x,) = am.allocate(SLICE_B, OWNER, T0 + timedelta(days=3), parse_request(excl), excl)
    assert am.plan(x.urn).ports == (31000, 31079)  # every slot's range


def test_plans_carry_hosts_vsys_keys_and_peers(make_am) -> None:
    am = make_am(inventory())
    made = lan(SLICE_A, am, {"a": "pc1", "b": "pc2", "c": "shared1"}, links=2)
    am.provision(SLICE_A, None, [(OWNER, ["ssh-ed25519 AAAA"]), ("urn:publicid:IDN+primo+user+Root", [])],
                 T0 + timedelta(days=3))
    plans = {s.client_id: am.plan(s.urn) for s in made}
    a = plans["a"]
    assert sorted(h for h, _ in a.hosts) == ["a", "b", "c"]
    assert dict(a.hosts)["b"] == plans["b"].interfaces[0].address
    assert sorted(a.vsys_keys) == sorted([plans["lan0"].vni, plans["lan1"].vni])
    assert a.vsys_peers == ("pc2", "shared1") and plans["c"].vsys_peers == ("pc1", "pc2")
    assert [x.username for x in a.logins] == ["alice", "u_root"]
    link = plans["lan0"]
    assert link.nodes == ("pc1", "pc2", "shared1") and link.iface_names == ("eth1", "eth1", "eth1")
    assert [e[0] for e in link.endpoints] == [plans[c].sliver_urn for c in ("a", "b", "c")]


def test_shared_nodes_hold_one_sliver_per_slice(make_am) -> None:
    am = make_am(inventory())
    with pytest.raises(GeniError) as e:  # two bound to the same shared node in one request
        lan(SLICE_A, am, {"a": "shared1", "b": "shared1"})
    assert e.value.code == GeniCode.BADARGS and "shared1" in e.value.reason and "one sliver per slice" in e.value.reason
    lan(SLICE_A, am, {"a": "shared1"}, links=0)
    with pytest.raises(GeniError) as e:  # and one bound there later
        lan(SLICE_A, am, {"b": "shared1"}, links=0)
    assert e.value.code == GeniCode.UNAVAILABLE and "already has a sliver on shared node shared1" in e.value.reason
    lan(SLICE_B, am, {"x": "shared1"}, links=0)  # another slice may
    # unbound nodes skip the shared nodes the slice is on; cluster nodes take several
    made = lan(SLICE_A, am, {f"u{i}": None for i in range(9)}, links=0)
    where = sorted(s.component for s in made)
    assert where.count("shared1") == 0 and where.count("shared2") == 1
    assert where.count("pc1") == 4 and where.count("pc2") == 4


def test_only_offered_nodes_take_slivers(make_am) -> None:
    am = make_am(inventory())
    am.offered = lambda: frozenset({"pc2"})
    made = lan(SLICE_A, am, {"a": None, "b": None}, links=0)
    assert {s.component for s in made} == {"pc2"}
    with pytest.raises(GeniError) as e:
        lan(SLICE_A, am, {"c": "pc1"}, links=0)
    assert e.value.code == GeniCode.UNAVAILABLE and "agent" in e.value.reason


def test_inventory_checks_ports_and_pool(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="65535"):
        Inventory((PhysicalNode("big", capacity=100, ssh_port_base=65000),))
    with pytest.raises(InventoryError, match="prefixlen"):
        inventory("10.0.0.0/24", 16)
    path = tmp_path / "inventory.toml"
    path.write_text('[[node]]\nname = "pc1"\n\n[pool]\nexperimental = "10.64.0.0/16"\nprefixlen = 28\n')
    inv = load_inventory(path)
    assert inv.pool == ipaddress.IPv4Network("10.64.0.0/16") and inv.prefixlen == 28
    path.write_text('[[node]]\nname = "pc1"\n\n[pool]\nexperimental = "10.64.0.1/16"\n')
    with pytest.raises(InventoryError, match="pool"):
        load_inventory(path)


def test_login_names_are_unix_names() -> None:
    assert unix_name("alice") == "alice" and unix_name("Bob.Smith") == "bob_smith"
    assert unix_name("root") == "u_root" and unix_name("9lives") == "u_9lives" and len(unix_name("x" * 40)) == 32
    assert login_names(["urn:publicid:IDN+primo+user+a.b", "urn:publicid:IDN+other+user+a_b"]) == ["a_b", "a_b2"]
