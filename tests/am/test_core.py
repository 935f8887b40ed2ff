"""The AM core on a real database (SQLite and PostgreSQL): state machine, accounting, expiry, recovery."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from primogeni.am.core import AggregateManager
from primogeni.am.driver import RecordingDriver
from primogeni.am.inventory import Inventory, PhysicalLink, PhysicalNode
from primogeni.am.models import Base, ClaimRow, PlanRow, SliverRow, VniRow
from primogeni.am.policy import MaxNodesPerSlice
from primogeni.db import make_engine, session_factory
from primogeni.geni.codes import GeniCode
from primogeni.geni.errors import GeniError
from primogeni.geni.rspec import parse_request
from primogeni.geni.urn import Urn

CM = Urn("primo", "authority", "cm")
T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
SLICE_A = "urn:publicid:IDN+primo:proj+slice+a"
SLICE_B = "urn:publicid:IDN+primo:proj+slice+b"
OWNER = "urn:publicid:IDN+primo+user+alice"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def inventory() -> Inventory:
    return Inventory(
        (PhysicalNode("pc1", "cluster", 4, True, ssh_port_base=30000, interfaces=("eth0", "eth1")),
         PhysicalNode("pc2", "cluster", 4, True, ssh_port_base=30100, interfaces=("eth0", "eth1")),
         PhysicalNode("shared1", "shared", 2, False, ssh_port_base=30200, interfaces=("eth0", "eth1"))),
        (PhysicalLink("underlay", (("pc1", "eth1"), ("pc2", "eth1"), ("shared1", "eth1")), 100_000, 0.1),),
    )


def request(*nodes: str, exclusive: bool = False, link: bool = True, capacity: int | None = None,
            bound: dict[str, str] | None = None, sliver_type: str = "emulated-host") -> tuple[str, object]:
    parts = []
    for n in nodes:
        comp = f' component_id="urn:publicid:IDN+primo+node+{bound[n]}"' if bound and n in bound else ""
        parts.append(f'<node client_id="{n}" exclusive="{str(exclusive).lower()}"{comp}>'
                     f'<sliver_type name="{sliver_type}"/><interface client_id="{n}:if0"/></node>')
    if link and len(nodes) > 1:
        refs = "".join(f'<interface_ref client_id="{n}:if0"/>' for n in nodes)
        prop = ""
        if capacity is not None:
            prop = (f'<property source_id="{nodes[0]}:if0" dest_id="{nodes[1]}:if0" capacity="{capacity}"/>'
                    f'<property source_id="{nodes[1]}:if0" dest_id="{nodes[0]}:if0" capacity="{capacity}"/>')
        parts.append(f'<link client_id="lan0">{refs}{prop}<link_type name="lan"/></link>')
    xml = ('<rspec xmlns="http://www.geni.net/resources/rspec/3" type="request">' + "".join(parts) + "</rspec>")
    return xml, parse_request(xml)


@pytest.fixture
def am(db_url: str, tmp_path):
    engine = make_engine(db_url, default_sqlite=tmp_path / "unused.sqlite")
    Base.metadata.create_all(engine)
    sessions = session_factory(engine)
    clock = Clock()
    manager = AggregateManager(sessions, inventory(), RecordingDriver(sessions, clock=clock), cm=CM, clock=clock)
    yield manager
    engine.dispose()


def counts(am: AggregateManager) -> tuple[int, int, int, int]:
    with am.sessions() as s:
        return tuple(s.scalar(select(func.count()).select_from(t)) for t in (SliverRow, ClaimRow, VniRow, PlanRow))


def allocate(am: AggregateManager, slice_urn: str, *nodes: str, **kw: object) -> list:
    xml, req = request(*nodes, **kw)  # type: ignore[arg-type]
    return am.allocate(slice_urn, OWNER, T0 + timedelta(days=3), req, xml)  # type: ignore[arg-type]


def test_life_cycle(am: AggregateManager) -> None:
    made = allocate(am, SLICE_A, "h1", "h2")
    fresh = ("geni_allocated", "geni_pending_allocation")
    assert [(s.kind, s.allocation, s.operational) for s in made] == [("node", *fresh)] * 2 + [("link", *fresh)]
    assert all(s.expires == T0 + timedelta(minutes=10) for s in made)
    # unbound nodes go where most slots are free: pc1 then pc2 (ties by name)
    assert sorted(s.component for s in made if s.kind == "node") == ["pc1", "pc2"]
    done = am.provision(SLICE_A, None, [(OWNER, ["ssh-ed25519 AAAA alice"])], T0 + timedelta(days=3))
    assert {(s.allocation, s.operational) for s in done} == {("geni_provisioned", "geni_notready")}
    assert all(s.expires == T0 + timedelta(days=3) for s in done)  # capped by the slice
    plan = am.driver.plan(made[0].urn)  # type: ignore[attr-defined]
    assert plan["logins"][0]["username"] == "alice" and plan["logins"][0]["keys"] == ["ssh-ed25519 AAAA alice"]
    assert plan["interfaces"][0]["address"] == "10.128.0.1"  # the first /24 of the pool 10.128.0.0/10
    link_plan = am.driver.plan(made[2].urn)  # type: ignore[attr-defined]
    assert link_plan["vni"] == 4096 and len(link_plan["endpoints"]) == 2
    started = am.operate(SLICE_A, None, "geni_start")
    assert {s.operational for s in started} == {"geni_ready"}
    stopped = am.operate(SLICE_A, [made[0].urn], "geni_stop")
    assert [s.operational for s in stopped] == ["geni_notready"]
    gone = am.delete(SLICE_A, None)
    assert {s.allocation for s in gone} == {"geni_unallocated"}
    assert counts(am) == (0, 0, 0, 0)


def test_unknown_action_and_unprovisioned(am: AggregateManager) -> None:
    allocate(am, SLICE_A, "h1")
    with pytest.raises(GeniError) as e:
        am.operate(SLICE_A, None, "geni_explode")
    assert e.value.code == GeniCode.UNSUPPORTED
    with pytest.raises(GeniError) as e:
        am.operate(SLICE_A, None, "geni_start")
    assert e.value.code == GeniCode.BADARGS and "not provisioned" in e.value.reason


def test_request_that_does_not_fit_allocates_nothing(am: AggregateManager) -> None:
    allocate(am, SLICE_A, "h1", exclusive=True)  # takes all 4 slots of pc1
    before = counts(am)
    with pytest.raises(GeniError) as e:  # pc1 busy; pc2 is the only other exclusive-capable node
        allocate(am, SLICE_B, "x1", "x2", exclusive=True)
    assert e.value.code == GeniCode.INSUFFICIENT_NODES
    assert counts(am) == before
    with pytest.raises(GeniError) as e:  # a bound request for the busy node
        allocate(am, SLICE_B, "x1", bound={"x1": "pc1"})
    assert e.value.code == GeniCode.UNAVAILABLE and "pc1" in e.value.reason
    with pytest.raises(GeniError) as e:
        allocate(am, SLICE_B, "x1", bound={"x1": "nosuch"})
    assert e.value.code == GeniCode.BADARGS and "nosuch" in e.value.reason
    with pytest.raises(GeniError) as e:  # shared nodes cannot be exclusive
        allocate(am, SLICE_B, "x1", exclusive=True, bound={"x1": "shared1"})
    assert e.value.code == GeniCode.BADARGS
    with pytest.raises(GeniError) as e:
        allocate(am, SLICE_B, "x1", sliver_type="raw-pc")
    assert e.value.code == GeniCode.BADARGS and "raw-pc" in e.value.reason
    assert counts(am) == before


def test_capacity_is_counted_in_slots(am: AggregateManager) -> None:
    # 4 + 4 + 2 = 10 slots in all; a shared node takes one sliver per slice
    allocate(am, SLICE_A, *[f"h{i}" for i in range(9)], link=False)
    allocate(am, SLICE_B, "h9", link=False)
    with pytest.raises(GeniError) as e:
        allocate(am, "urn:publicid:IDN+primo:proj+slice+c", "one-more")
    assert e.value.code == GeniCode.INSUFFICIENT_NODES
    assert am.usage().slots == {"pc1": frozenset(range(4)), "pc2": frozenset(range(4)), "shared1": frozenset({0, 1})}


def test_link_bandwidth_is_accounted(am: AggregateManager) -> None:
    allocate(am, SLICE_A, "h1", "h2", capacity=60_000, bound={"h1": "pc1", "h2": "pc2"})
    with pytest.raises(GeniError) as e:
        allocate(am, SLICE_B, "x1", "x2", capacity=60_000, bound={"x1": "pc1", "x2": "pc2"})
    assert e.value.code == GeniCode.INSUFFICIENT_BANDWIDTH and "40000 kb/s free" in e.value.reason
    allocate(am, SLICE_B, "x1", "x2", capacity=40_000, bound={"x1": "pc1", "x2": "pc2"})


def test_client_id_clash_and_policy(am: AggregateManager) -> None:
    allocate(am, SLICE_A, "h1")
    with pytest.raises(GeniError) as e:
        allocate(am, SLICE_A, "h1")
    assert e.value.code == GeniCode.ALREADYEXISTS
    am.policy = MaxNodesPerSlice(2)
    allocate(am, SLICE_A, "h2")
    with pytest.raises(GeniError) as e:
        allocate(am, SLICE_A, "h3")
    assert e.value.code == GeniCode.REFUSED and "at most 2" in e.value.reason


def test_renew_limits(am: AggregateManager) -> None:
    allocate(am, SLICE_A, "h1")
    slice_end = T0 + timedelta(days=3)
    with pytest.raises(GeniError) as e:  # an allocation may not be renewed past its lifetime
        am.renew(SLICE_A, None, T0 + timedelta(hours=1), slice_end)
    assert e.value.code == GeniCode.OUTOFRANGE
    am.provision(SLICE_A, None, [(OWNER, [])], slice_end)
    with pytest.raises(GeniError) as e:
        am.renew(SLICE_A, None, slice_end + timedelta(seconds=1), slice_end)
    assert e.value.code == GeniCode.OUTOFRANGE and "slice's expiration" in e.value.reason
    with pytest.raises(GeniError) as e:
        am.renew(SLICE_A, None, T0 - timedelta(seconds=1), slice_end)
    assert e.value.code == GeniCode.BADARGS
    got = am.renew(SLICE_A, None, slice_end + timedelta(days=1), slice_end, as_long_as_possible=True)
    assert {s.expires for s in got} == {slice_end}


def test_reaper_frees_expired_allocations_and_slivers(am: AggregateManager) -> None:
    clock: Clock = am.clock  # type: ignore[assignment]
    allocate(am, SLICE_A, "h1", "h2")
    allocate(am, SLICE_B, "x1")
    am.provision(SLICE_B, None, [(OWNER, [])], T0 + timedelta(hours=2))
    clock.now = T0 + timedelta(minutes=11)  # A's allocation lapsed; B is provisioned until T0+2h
    assert am.reap() == 3
    assert counts(am) == (1, 1, 0, 1)
    clock.now = T0 + timedelta(hours=2)
    assert am.reap() == 1
    assert counts(am) == (0, 0, 0, 0)


def test_recover_rolls_back_an_interrupted_provision(am: AggregateManager) -> None:
    made = allocate(am, SLICE_A, "h1", "h2")
    with am.sessions.begin() as s:  # as if the AM died after recording intent and one driver call
        for row in s.scalars(select(SliverRow)):
            row.phase = "provisioning"
    am.driver.provision(am.plan(made[0].urn))
    assert am.driver.held() == {made[0].urn}
    rolled = am.recover()
    assert made[0].urn in rolled
    assert am.driver.held() == set()
    assert {s.allocation for s in am.status(SLICE_A)} == {"geni_allocated"}
    am.provision(SLICE_A, None, [(OWNER, [])], T0 + timedelta(days=1))  # and it can be provisioned again


def test_concurrent_requests_never_share_an_exclusive_node(am: AggregateManager) -> None:
    results: list[object] = []
    barrier = threading.Barrier(8)

    def worker(i: int) -> None:
        xml, req = request("h", exclusive=True, bound={"h": "pc1"})
        barrier.wait()
        try:
            am.allocate(f"urn:publicid:IDN+primo:proj+slice+s{i}", OWNER, T0 + timedelta(days=1), req, xml)  # type: ignore[arg-type]
            results.append("ok")
        except GeniError as exc:
            results.append(exc.code)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 1
    assert results.count(GeniCode.UNAVAILABLE) == 7
    with am.sessions() as s:
        assert s.scalar(select(func.count()).select_from(ClaimRow)) == 4


def test_reconcile_marks_what_the_driver_lost(am: AggregateManager) -> None:
    made = allocate(am, SLICE_A, "h1", "h2", link=False)
    am.provision(SLICE_A, None, [(OWNER, [])], T0 + timedelta(days=1))
    assert am.reconcile() == []
    am.driver.release(made[0].urn)  # behind the AM's back: a node died, an agent was wiped
    assert am.reconcile() == [made[0].urn]
    by_urn = {s.urn: s for s in am.status(SLICE_A)}
    assert by_urn[made[0].urn].operational == "geni_failed" and "no longer holds" in by_urn[made[0].urn].error
    assert by_urn[made[1].urn].operational == "geni_notready"
