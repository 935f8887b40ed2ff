"""The slice authority: projects, memberships, slices and slice credentials (SQLite and PostgreSQL).

Every refused call is checked to have changed nothing.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from primogeni.ch import Clearinghouse
from primogeni.ch.authority import Authority
from primogeni.geni.codes import GeniCode
from primogeni.geni.cred import SLICE_PRIVILEGES, Verifier
from primogeni.geni.errors import GeniError
from primogeni.geni.urn import Urn

ALICE = Urn("primo", "user", "alice")
BOB = Urn("primo", "user", "bob")
CAROL = Urn("primo", "user", "carol")
DAVE = Urn("primo", "user", "dave")
P1 = Urn("primo", "project", "p1")
S1 = Urn("primo:p1", "slice", "exp1")
DAY = timedelta(days=1)


def code(call, *args, **kwargs) -> GeniCode:
    with pytest.raises(GeniError) as e:
        call(*args, **kwargs)
    return e.value.code


@pytest.fixture
def house(ch: Clearinghouse) -> Clearinghouse:
    """alice leads p1 (30 days) with bob as MEMBER and carol as AUDITOR; dave is in no project."""
    for name in ("alice", "bob", "carol", "dave"):
        ch.members.create_member(name, f"{name}@example.org")
    ch.slices.create_project(ALICE, "p1", expires=ch.slices.now() + 30 * DAY, description="first")
    ch.slices.modify_project_membership(ALICE, P1, add=[(BOB, "MEMBER"), (CAROL, "AUDITOR")])
    return ch


def test_project_creation_and_limits(ch: Clearinghouse, clock):
    ch.members.create_member("alice", "alice@example.org")
    sa = ch.slices
    p = sa.create_project(ALICE, "p1", description="d")
    assert p.urn == P1 and p.lead_urn == ALICE and p.expires == clock() + sa.max_project_lifetime
    assert sa.project_members(P1)[0].role == "LEAD"
    assert code(sa.create_project, ALICE, "p1") == GeniCode.ALREADYEXISTS
    assert code(sa.create_project, ALICE, "p2", expires=clock() + sa.max_project_lifetime + DAY) == GeniCode.OUTOFRANGE
    assert code(sa.create_project, ALICE, "p2", expires=clock() - DAY) == GeniCode.OUTOFRANGE
    assert code(sa.create_project, ALICE, "bad name") == GeniCode.BADARGS
    assert code(sa.create_project, "urn:publicid:IDN+primo+user+nobody", "p3") == GeniCode.FORBIDDEN
    assert [x.name for x in sa.projects()] == ["p1"]
    assert sa.projects(expired=True) == [] and sa.projects(names=["p1"]) == [p]
    assert sa.projects(uids=[p.uuid]) == [p] and sa.projects(urns=[str(P1)]) == [p]
    assert code(sa.project, "urn:publicid:IDN+primo+project+nope") == GeniCode.SEARCHFAILED


def test_project_membership(house: Clearinghouse):
    sa = house.slices
    roles = {str(m.member_urn): m.role for m in sa.project_members(P1)}
    assert roles == {str(ALICE): "LEAD", str(BOB): "MEMBER", str(CAROL): "AUDITOR"}
    assert [(p.name, r) for p, r in sa.projects_for_member(BOB)] == [("p1", "MEMBER")]
    assert sa.projects_for_member(DAVE) == []
    assert code(sa.modify_project_membership, BOB, P1, add=[(DAVE, "MEMBER")]) == GeniCode.FORBIDDEN
    assert code(sa.modify_project_membership, ALICE, P1, add=[(BOB, "MEMBER")]) == GeniCode.ALREADYEXISTS
    assert code(sa.modify_project_membership, ALICE, P1, add=[(DAVE, "BOSS")]) == GeniCode.BADARGS
    assert code(sa.modify_project_membership, ALICE, P1, remove=[ALICE]) == GeniCode.BADARGS
    # all or nothing: dave's addition is undone by the bad second change
    assert code(sa.modify_project_membership, ALICE, P1, add=[(DAVE, "MEMBER")], remove=[DAVE, DAVE]) == (
        GeniCode.SEARCHFAILED
    )
    assert sa.role_in_project(DAVE, P1) is None
    sa.modify_project_membership(ALICE, P1, change=[(BOB, "ADMIN")])
    sa.modify_project_membership(BOB, P1, add=[(DAVE, "MEMBER")])  # an ADMIN manages members
    assert code(sa.modify_project_membership, BOB, P1, change=[(DAVE, "LEAD")]) == GeniCode.FORBIDDEN
    sa.modify_project_membership(ALICE, P1, change=[(BOB, "LEAD")])  # the LEAD hands over
    assert sa.project(P1).lead_urn == BOB and sa.role_in_project(ALICE, P1) == "ADMIN"
    sa.modify_project_membership(BOB, P1, remove=[DAVE])
    assert sa.role_in_project(DAVE, P1) is None


def test_slice_creation(house: Clearinghouse, authority: Authority, clock):
    sa = house.slices
    s = sa.create_slice(BOB, P1, "exp1", description="an experiment")
    assert s.urn == S1 and s.project_urn == P1 and s.owner_urn == BOB
    assert s.expires == clock() + sa.default_slice_lifetime and not s.expired(clock())
    assert s.gid.urn == S1 and not s.gid.is_ca and str(s.gid.uuid) == s.uuid
    authority.trust.verify(s.gid, clock())
    assert s.gid.chain[0] == authority.sa.gid.cert
    assert sa.slice(S1) == s and sa.slice(str(S1)).description == "an experiment"
    assert [m.role for m in sa.slice_members(S1)] == ["LEAD"]
    # a default expiration never passes the project's
    near = sa.create_project(ALICE, "p2", expires=clock() + 2 * DAY)
    assert sa.create_slice(ALICE, near.urn, "short").expires == near.expires


def test_slice_creation_refusals_change_nothing(house: Clearinghouse, clock):
    sa = house.slices
    assert code(sa.create_slice, DAVE, P1, "exp1") == GeniCode.FORBIDDEN  # not a project member
    assert code(sa.create_slice, CAROL, P1, "exp1") == GeniCode.FORBIDDEN  # an auditor
    assert code(sa.create_slice, BOB, P1, "bad_name!") == GeniCode.BADARGS
    assert code(sa.create_slice, BOB, P1, "x" * 20) == GeniCode.BADARGS
    assert code(sa.create_slice, BOB, P1, "exp1", expires=clock() + 31 * DAY) == GeniCode.OUTOFRANGE
    assert code(sa.create_slice, BOB, P1, "exp1", expires=clock() - DAY) == GeniCode.OUTOFRANGE
    assert code(sa.create_slice, BOB, "urn:publicid:IDN+primo+project+nope", "exp1") == GeniCode.SEARCHFAILED
    assert sa.slices() == []
    sa.create_slice(BOB, P1, "exp1")
    assert code(sa.create_slice, ALICE, P1, "exp1") == GeniCode.ALREADYEXISTS
    assert len(sa.slices()) == 1


def test_expired_project_takes_no_slices(house: Clearinghouse, clock):
    clock.advance(31 * DAY)
    assert house.slices.project(P1).expired(clock())
    assert code(house.slices.create_slice, ALICE, P1, "late") == GeniCode.EXPIRED


def test_name_is_free_again_after_expiry(house: Clearinghouse, clock):
    sa = house.slices
    old = sa.create_slice(BOB, P1, "exp1", expires=clock() + DAY)
    clock.advance(DAY + timedelta(seconds=1))
    assert sa.slice(S1).expired(clock())
    assert code(sa.slice_credential, house.members.member(BOB).gid, S1) == GeniCode.EXPIRED
    new = sa.create_slice(ALICE, P1, "exp1")
    assert new.urn == old.urn and new.uuid != old.uuid and not new.gid.same_key(old.gid)
    assert sa.slice(S1) == new  # the URN names the newest slice
    assert [s.uuid for s in sa.slices(urns=[S1])] == [new.uuid]


def test_renew(house: Clearinghouse, clock):
    sa = house.slices
    s = sa.create_slice(BOB, P1, "exp1")
    project_end = sa.project(P1).expires
    assert sa.renew_slice(BOB, S1, project_end).expires == project_end
    assert sa.renew_slice(ALICE, S1, clock() + 2 * DAY).expires == clock() + 2 * DAY  # project LEAD
    assert code(sa.renew_slice, BOB, S1, project_end + timedelta(seconds=1)) == GeniCode.OUTOFRANGE
    assert code(sa.renew_slice, BOB, S1, clock() - timedelta(seconds=1)) == GeniCode.OUTOFRANGE
    assert code(sa.renew_slice, CAROL, S1, clock() + 3 * DAY) == GeniCode.FORBIDDEN  # not a slice member
    assert code(sa.renew_slice, DAVE, S1, clock() + 3 * DAY) == GeniCode.FORBIDDEN
    assert sa.slice(S1).expires == clock() + 2 * DAY
    assert sa.update_slice(BOB, S1, description="renamed").description == "renamed"
    clock.advance(3 * DAY)
    assert code(sa.renew_slice, BOB, S1, clock() + DAY) == GeniCode.EXPIRED
    assert s.uuid == sa.slice(S1).uuid


def test_project_cannot_end_before_its_slices(house: Clearinghouse, clock):
    sa = house.slices
    sa.create_slice(BOB, P1, "exp1", expires=clock() + 10 * DAY)
    assert code(sa.update_project, ALICE, P1, expires=clock() + 5 * DAY) == GeniCode.OUTOFRANGE
    assert code(sa.update_project, BOB, P1, expires=clock() + 50 * DAY) == GeniCode.FORBIDDEN
    assert sa.update_project(ALICE, P1, expires=clock() + 50 * DAY, description="x").expires == clock() + 50 * DAY


def test_slice_credentials(house: Clearinghouse, authority: Authority, clock):
    sa = house.slices
    s = sa.create_slice(BOB, P1, "exp1")
    bob, alice, carol, dave = (house.members.member(u) for u in (BOB, ALICE, CAROL, DAVE))
    v = Verifier(authority.trust, clock=clock)
    cred = sa.slice_credential(bob.gid, S1)
    ok = v.verify(cred.xml, caller=bob.gid, target=S1, operation="create")
    assert ok.target_gid.same_key(s.gid) and ok.owner_urn == BOB and ok.expires == s.expires
    assert {p.name for p in ok.privileges} == set(SLICE_PRIVILEGES)
    # the project LEAD acts on every slice of the project
    v.verify(sa.slice_credential(alice.gid, S1).xml, caller=alice.gid, target=S1, operation="renew")
    assert code(sa.slice_credential, carol.gid, S1) == GeniCode.FORBIDDEN
    assert code(sa.slice_credential, dave.gid, S1) == GeniCode.FORBIDDEN
    sa.modify_slice_membership(BOB, S1, add=[(CAROL, "AUDITOR")])
    audit = v.verify(sa.slice_credential(carol.gid, S1).xml, caller=carol.gid, target=S1, operation="describe")
    assert [p.name for p in audit.privileges] == ["info"]
    with pytest.raises(GeniError) as e:
        v.verify(audit.xml, caller=carol.gid, target=S1, operation="create")
    assert e.value.code == GeniCode.FORBIDDEN


def test_slice_membership_and_visibility(house: Clearinghouse):
    sa = house.slices
    sa.create_slice(BOB, P1, "exp1")
    sa.create_project(DAVE, "p2")
    sa.create_slice(DAVE, "urn:publicid:IDN+primo+project+p2", "other")
    assert code(sa.modify_slice_membership, BOB, S1, add=[(DAVE, "MEMBER")]) == GeniCode.BADARGS  # not in p1
    assert code(sa.modify_slice_membership, BOB, S1, add=[(CAROL, "LEAD")]) == GeniCode.BADARGS
    assert code(sa.modify_slice_membership, CAROL, S1, add=[(CAROL, "MEMBER")]) == GeniCode.FORBIDDEN
    assert code(sa.modify_slice_membership, BOB, S1, remove=[BOB]) == GeniCode.BADARGS
    sa.modify_slice_membership(BOB, S1, add=[(CAROL, "MEMBER")])
    sa.modify_slice_membership(BOB, S1, change=[(CAROL, "OPERATOR")])
    assert {str(m.member_urn): m.role for m in sa.slice_members(S1)} == {str(BOB): "LEAD", str(CAROL): "OPERATOR"}
    assert [(str(s.urn), r) for s, r in sa.slices_for_member(CAROL)] == [(str(S1), "OPERATOR")]
    assert [s.name for s in sa.slices(visible_to=BOB)] == ["exp1"]
    assert [s.name for s in sa.slices(visible_to=DAVE)] == ["other"]
    assert [s.name for s in sa.slices(project_urns=[P1])] == ["exp1"]
    # removing carol from the project removes her from its slices
    sa.modify_project_membership(ALICE, P1, remove=[CAROL])
    assert sa.slices_for_member(CAROL) == [] and sa.role_in_slice(CAROL, S1) is None
    assert code(sa.modify_project_membership, ALICE, P1, remove=[BOB]) == GeniCode.BADARGS  # leads a live slice


def test_remove_slice(house: Clearinghouse, clock):
    sa = house.slices
    sa.create_slice(BOB, P1, "exp1")
    assert code(sa.remove_slice, CAROL, S1) == GeniCode.FORBIDDEN
    removed = sa.remove_slice(BOB, S1)
    assert removed.removed and removed.expired(clock())
    assert sa.slices() == []
    assert code(sa.remove_slice, BOB, S1) == GeniCode.EXPIRED
    assert sa.create_slice(BOB, P1, "exp1").uuid != removed.uuid


def test_concurrent_creations_of_one_name(house: Clearinghouse):
    sa = house.slices
    outcomes: list[object] = []
    start = threading.Barrier(4)

    def create(who: Urn) -> None:
        start.wait()
        try:
            outcomes.append(sa.create_slice(who, P1, "race").uuid)
        except GeniError as err:
            outcomes.append(err.code)

    threads = [threading.Thread(target=create, args=(u,)) for u in (ALICE, BOB, ALICE, BOB)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count(GeniCode.ALREADYEXISTS) == 3
    assert [s.name for s in sa.slices()] == ["race"]
