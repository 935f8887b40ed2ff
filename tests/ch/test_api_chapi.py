"""The Common Federation API v2 over real TLS, driven by geni-lib's own chapi2 client and by ours.

The service runs on 127.0.0.1 (a free port) with members alice, bob and carol; geni-lib verifies
the server against our trust root. Hostile calls must get the right code and change nothing.
"""

from __future__ import annotations

import warnings
import xmlrpc.client
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from primogeni.ch.service import ChService
from primogeni.geni.cert import create_root, issue
from primogeni.geni.codes import GeniCode
from primogeni.geni.cred import USER_PRIVILEGES, Verifier, issue_credential
from primogeni.geni.urn import Urn
from primogeni.rpc import client

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # geni-lib imports pkg_resources
    from geni.aggregate.frameworks import CHAPI2Project
    from geni.minigcf import chapi2

DAY = timedelta(days=1)
P1 = "urn:publicid:IDN+primo+project+p1"
S1 = "urn:publicid:IDN+primo:p1+slice+exp1"


@dataclass
class User:
    """One member's files and the arguments geni-lib's functions take."""

    name: str
    cert: Path
    key: Path
    root: str

    @property
    def urn(self) -> str:
        return f"urn:publicid:IDN+primo+user+{self.name}"

    def call(self, fn: Any, url: str, *args: Any) -> dict[str, Any]:
        """A geni-lib minigcf call as this user, checking the server against our root."""
        return fn(url, self.root, str(self.cert), str(self.key), *args)

    def proxy(self, url: str) -> xmlrpc.client.ServerProxy:
        return client(url, cert=self.cert, key=self.key)


@pytest.fixture
def users(service: ChService) -> dict[str, User]:
    root = str(service.authority.trust_dir / "primo-root.pem")
    return {n: User(n, *service.authority.user_files(n), root) for n in ("alice", "bob", "carol")}


def ok(result: dict[str, Any]) -> Any:
    assert result["code"] == 0, result
    return result["value"]


def failed(result: dict[str, Any], code: GeniCode) -> str:
    assert isinstance(result["code"], int), result  # the clearinghouse APIs use integer codes
    assert result["code"] == code, result
    return str(result["output"])


def user_cred(svc: ChService, u: User) -> dict[str, str]:
    return ok(u.call(chapi2.get_credentials, svc.urls["ma"], [], u.urn))[0]


def naive(t: datetime) -> datetime:
    return t.replace(tzinfo=None)  # geni-lib formats naive UTC times


def test_get_version(service: ChService, users: dict[str, User]):
    alice = users["alice"]
    for name, urn, services in (
        ("ch", "urn:publicid:IDN+primo+authority+ch", ["SERVICE"]),
        ("ma", "urn:publicid:IDN+primo+authority+ma", ["MEMBER", "KEY"]),
        ("sa", "urn:publicid:IDN+primo+authority+sa", ["SLICE", "PROJECT", "SLICE_MEMBER", "PROJECT_MEMBER"]),
    ):
        v = ok(alice.call(chapi2.get_version, service.urls[name]))
        assert v["VERSION"] == "2" and v["URN"] == urn and v["SERVICES"] == services
        assert v["CREDENTIAL_TYPES"] == [{"type": "geni_sfa", "version": "3"}]
        assert isinstance(v["FIELDS"], dict)


def test_geni_lib_end_to_end(service: ChService, users: dict[str, User], clock):
    alice, bob = users["alice"], users["bob"]
    urls = service.urls
    # the user credential, from the MA, with an empty credential list
    cred = user_cred(service, alice)
    assert cred["geni_type"] == "geni_sfa" and cred["geni_version"] == "3"
    v = Verifier(service.authority.trust, clock=clock)
    alice_gid = service.members.member(alice.urn).gid
    checked = v.verify(cred["geni_value"], caller=alice_gid, target=Urn.parse(alice.urn), operation="resolve")
    assert {p.name for p in checked.privileges} == set(USER_PRIVILEGES)

    project_end = clock() + 30 * DAY
    created = ok(alice.call(chapi2.create_project, urls["sa"], [cred], "p1", naive(project_end), "first project"))
    assert created["PROJECT_URN"] == P1 and created["PROJECT_EXPIRATION"] == project_end.strftime("%Y-%m-%dT%H:%M:%SZ")
    projects = ok(alice.call(chapi2.lookup_projects, urls["sa"], [cred]))
    assert list(projects) == [P1]
    p = CHAPI2Project(projects[P1])
    assert p.urn == P1 and p.uid == created["PROJECT_UID"] and p.expired is False
    mine = ok(alice.call(chapi2.lookup_projects_for_member, urls["sa"], [cred], alice.urn))
    assert [(CHAPI2Project(x).urn, CHAPI2Project(x).role) for x in mine] == [(P1, "LEAD")]
    ok(alice.call(chapi2.lookup_projects, urls["sa"], [cred], P1))

    ok(alice.call(chapi2.modify_project_membership, urls["sa"], [cred], P1, [(bob.urn, "MEMBER")]))
    members = ok(alice.call(chapi2.lookup_project_members, urls["sa"], [cred], P1))
    assert {m["PROJECT_MEMBER"]: m["PROJECT_ROLE"] for m in members} == {alice.urn: "LEAD", bob.urn: "MEMBER"}

    s = ok(alice.call(chapi2.create_slice, urls["sa"], [cred], "exp1", P1, naive(clock() + 3 * DAY), "an experiment"))
    assert s["SLICE_URN"] == S1 and s["SLICE_PROJECT_URN"] == P1 and s["SLICE_EXPIRED"] is False
    assert s["SLICE_EXPIRATION"] == (clock() + 3 * DAY).strftime("%Y-%m-%dT%H:%M:%SZ")
    default = ok(alice.call(chapi2.create_slice, urls["sa"], [cred], "exp2", P1))
    assert datetime.fromisoformat(default["SLICE_EXPIRATION"]) == clock() + 7 * DAY
    found = ok(alice.call(chapi2.lookup_slices_for_project, urls["sa"], [cred], P1))
    assert sorted(found) == [S1, "urn:publicid:IDN+primo:p1+slice+exp2"]
    assert found[S1]["SLICE_UID"] == s["SLICE_UID"]
    for_me = ok(alice.call(chapi2.lookup_slices_for_member, urls["sa"], [cred], alice.urn))
    assert {x["SLICE_URN"]: x["SLICE_ROLE"] for x in for_me}[S1] == "LEAD"

    # the slice credential; then renew with [slice credential, user credential] as geni-lib does
    scred = ok(alice.call(chapi2.get_credentials, urls["sa"], [cred], S1))[0]
    checked = v.verify(scred["geni_value"], caller=alice_gid, target=Urn.parse(S1), operation="create")
    assert checked.expires == clock() + 3 * DAY
    new_end = (clock() + 10 * DAY).strftime(chapi2.DATE_FMT)
    renewed = ok(alice.call(chapi2.update_slice, urls["sa"], [scred, cred], S1, {"SLICE_EXPIRATION": new_end}))
    assert renewed["SLICE_EXPIRATION"] == new_end
    assert ok(alice.call(chapi2.lookup_slices_for_project, urls["sa"], [cred], P1))[S1]["SLICE_EXPIRATION"] == new_end

    ok(alice.call(chapi2.modify_slice_membership, urls["sa"], [cred], S1, [(bob.urn, "MEMBER")]))
    assert {m["SLICE_MEMBER"] for m in ok(alice.call(chapi2.lookup_slice_members, urls["sa"], [cred], S1))} == {
        alice.urn,
        bob.urn,
    }
    bob_cred = user_cred(service, bob)
    bob_scred = ok(bob.call(chapi2.get_credentials, urls["sa"], [bob_cred], S1))[0]["geni_value"]
    bob_gid = service.members.member(bob.urn).gid
    v.verify(bob_scred, caller=bob_gid, target=Urn.parse(S1), operation="provision")

    # keys and members
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0 alice@laptop"
    made = ok(alice.call(chapi2.create_key_info, urls["ma"], [cred], {"KEY_MEMBER": alice.urn, "KEY_PUBLIC": key}))
    keys = ok(alice.call(chapi2.lookup_key_info, urls["ma"], [cred], alice.urn))
    assert [k["KEY_PUBLIC"] for k in keys.values()] == [key] and made["KEY_ID"] in keys
    info = ok(alice.call(chapi2.lookup_member_info, urls["ma"], [cred], bob.urn))
    assert info[bob.urn]["MEMBER_USERNAME"] == "bob" and info[bob.urn]["MEMBER_EMAIL"] == "bob@example.org"


def test_aggregates_are_listed(service: ChService, users: dict[str, User]):
    alice = users["alice"]
    assert ok(alice.call(chapi2.lookup_aggregates, service.urls["ch"])) == []
    am_pem = (service.authority.am_cert).read_text()
    service.registry.register(
        "urn:publicid:IDN+primo+authority+cm",
        "https://127.0.0.1:12346/am/3.0",
        am_pem,
        api_versions={"3": "https://127.0.0.1:12346/am/3.0"},
    )
    aggs = ok(alice.call(chapi2.lookup_aggregates, service.urls["ch"]))
    assert len(aggs) == 1
    agg = aggs[0]
    assert agg["SERVICE_URN"] == "urn:publicid:IDN+primo+authority+cm"
    assert agg["SERVICE_URL"] == "https://127.0.0.1:12346/am/3.0" and agg["SERVICE_TYPE"] == "AGGREGATE_MANAGER"
    assert agg["SERVICE_CERT"].startswith("-----BEGIN CERTIFICATE-----") and agg["SERVICE_NAME"]
    assert "SERVICE_DESCRIPTION" in agg
    # omni finds the SA and MA through the same call
    sas = ok(alice.call(chapi2.lookup_service_info, service.urls["ch"], [], "SLICE_AUTHORITY"))
    assert [s["SERVICE_URL"] for s in sas] == [service.urls["sa"]]
    ch = alice.proxy(service.urls["ch"])
    only = ok(ch.lookup("SERVICE", [], {"match": {"SERVICE_TYPE": ["MEMBER_AUTHORITY"]}, "filter": ["SERVICE_URL"]}))
    assert only == [{"SERVICE_URL": service.urls["ma"]}]
    assert [a["SERVICE_URN"] for a in ok(ch.lookup_aggregates({}))] == [agg["SERVICE_URN"]]
    assert ok(ch.get_trust_roots())[0].startswith("-----BEGIN CERTIFICATE-----")


def test_our_client_and_plain_string_credentials(service: ChService, users: dict[str, User], clock):
    alice = users["alice"]
    ma, sa = alice.proxy(service.urls["ma"]), alice.proxy(service.urls["sa"])
    cred = ok(ma.get_credentials(alice.urn, [], {}))[0]["geni_value"]
    project = ok(sa.create("PROJECT", [cred], {"fields": {"PROJECT_NAME": "p1", "PROJECT_DESCRIPTION": "d"}}))
    assert project["PROJECT_URN"] == P1
    end = (clock() + 2 * DAY).isoformat()  # "+00:00" rather than "Z": any RFC 3339 time
    made = ok(
        sa.create("SLICE", [cred], {"fields": {"SLICE_NAME": "exp1", "SLICE_PROJECT_URN": P1, "SLICE_EXPIRATION": end}})
    )
    assert made["SLICE_EXPIRATION"] == (clock() + 2 * DAY).strftime("%Y-%m-%dT%H:%M:%SZ")
    # omni's renew: a naive ISO time (UTC) and a match it does not need
    naive_end = naive(clock() + 4 * DAY).isoformat()
    ok(sa.update("SLICE", S1, [cred], {"fields": {"SLICE_EXPIRATION": naive_end}, "match": {"SLICE_URN": S1}}))
    found = ok(
        sa.lookup("SLICE", [cred], {"match": {"SLICE_URN": S1, "SLICE_EXPIRED": "f"}, "filter": ["SLICE_EXPIRATION"]})
    )
    assert found == {S1: {"SLICE_EXPIRATION": (clock() + 4 * DAY).strftime("%Y-%m-%dT%H:%M:%SZ")}}
    assert ok(sa.lookup("SLICE", [cred], {"match": {"SLICE_EXPIRED": True}})) == {}
    assert ok(sa.lookup_for_member("PROJECT", alice.urn, [cred], {}))[0]["PROJECT_ROLE"] == "LEAD"
    scred = ok(sa.get_credentials(S1, [cred], {}))[0]["geni_value"]
    # a slice credential alone is enough for calls on that slice (omni's needcred)
    ok(sa.update("SLICE", S1, [scred], {"fields": {"SLICE_DESCRIPTION": "renamed"}}))
    assert ok(sa.lookup_members("SLICE", S1, [scred], {}))[0]["SLICE_ROLE"] == "LEAD"
    key_id = ok(ma.create("KEY", [cred], {"fields": {"KEY_PUBLIC": "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAAQC7 x"}}))[
        "KEY_ID"
    ]
    assert ok(ma.delete("KEY", key_id, [cred], {})) is True
    assert ok(ma.lookup("KEY", [cred], {"match": {"KEY_MEMBER": alice.urn}})) == {}


def _state(service: ChService) -> tuple[Any, ...]:
    sa = service.slices
    return (
        [(p.urn, p.expires, p.description) for p in sa.projects()],
        [(s.urn, s.uuid, s.expires, s.description) for s in sa.slices()],
        [(str(m.member_urn), m.role) for p in sa.projects() for m in sa.project_members(p.urn)],
        [(k.id, k.public_key) for k in service.members.keys_of()],
    )


def test_hostile_calls_get_the_right_codes_and_change_nothing(service: ChService, users: dict[str, User], clock):
    alice, bob, carol = users["alice"], users["bob"], users["carol"]
    urls = service.urls
    cred = user_cred(service, alice)
    bob_cred = user_cred(service, bob)
    ok(alice.call(chapi2.create_project, urls["sa"], [cred], "p1", naive(clock() + 30 * DAY)))
    ok(alice.call(chapi2.create_slice, urls["sa"], [cred], "exp1", P1))
    before = _state(service)
    sa = alice.proxy(urls["sa"])
    bob_sa = bob.proxy(urls["sa"])

    # credentials: none, someone else's, tampered, untrusted
    failed(alice.call(chapi2.lookup_projects, urls["sa"], []), GeniCode.FORBIDDEN)
    failed(alice.call(chapi2.create_slice, urls["sa"], [bob_cred], "exp2", P1), GeniCode.CREDENTIAL_MISMATCH)
    tampered = dict(cred, geni_value=cred["geni_value"].replace("<name>resolve</name>", "<name>control</name>"))
    failed(alice.call(chapi2.create_slice, urls["sa"], [tampered], "exp2", P1), GeniCode.CREDENTIAL_INVALID)
    now = clock()
    rogue_root = create_root(Urn("primo", "authority", "root"), now=now)
    rogue_ma = issue(rogue_root, Urn("primo", "authority", "ma"), now=now, lifetime=DAY, ca=True)
    alice_gid = service.members.member(alice.urn).gid
    forged = issue_credential(rogue_ma, alice_gid, alice_gid, USER_PRIVILEGES, now + DAY, now=now)
    failed(sa.create("SLICE", [forged.xml], {"fields": {"SLICE_NAME": "exp2", "SLICE_PROJECT_URN": P1}}),
           GeniCode.CREDENTIAL_SIGNER_UNTRUSTED)  # fmt: skip
    failed(sa.lookup("SLICE", "not a list", {}), GeniCode.BADARGS)

    # another user's user credential at the MA, and the MA refusing someone else's credential
    failed(bob.call(chapi2.get_credentials, urls["ma"], [], alice.urn), GeniCode.FORBIDDEN)

    # policy: not a project member, renew past the project, bad names, an AUDITOR
    failed(bob.call(chapi2.create_slice, urls["sa"], [bob_cred], "exp2", P1), GeniCode.FORBIDDEN)
    failed(bob.call(chapi2.get_credentials, urls["sa"], [bob_cred], S1), GeniCode.FORBIDDEN)
    too_late = (clock() + 31 * DAY).strftime(chapi2.DATE_FMT)
    failed(alice.call(chapi2.update_slice, urls["sa"], [cred], S1, {"SLICE_EXPIRATION": too_late}), GeniCode.OUTOFRANGE)
    past = (clock() - DAY).strftime(chapi2.DATE_FMT)
    failed(alice.call(chapi2.update_slice, urls["sa"], [cred], S1, {"SLICE_EXPIRATION": past}), GeniCode.OUTOFRANGE)
    failed(alice.call(chapi2.create_slice, urls["sa"], [cred], "bad_name!", P1), GeniCode.BADARGS)
    failed(alice.call(chapi2.create_slice, urls["sa"], [cred], "exp1", P1), GeniCode.ALREADYEXISTS)
    failed(alice.call(chapi2.create_project, urls["sa"], [cred], "p1", naive(clock() + DAY)), GeniCode.ALREADYEXISTS)
    failed(alice.call(chapi2.create_project, urls["sa"], [cred], "p9", naive(clock() + 400 * DAY)), GeniCode.OUTOFRANGE)
    failed(alice.call(chapi2.create_slice, urls["sa"], [cred], "x", "urn:publicid:IDN+primo+project+nope"),
           GeniCode.SEARCHFAILED)  # fmt: skip
    failed(bob.call(chapi2.modify_project_membership, urls["sa"], [bob_cred], P1, [(carol.urn, "ADMIN")]),
           GeniCode.FORBIDDEN)  # fmt: skip
    failed(bob_sa.update("SLICE", S1, [bob_cred], {"fields": {"SLICE_EXPIRATION": too_late}}), GeniCode.FORBIDDEN)
    failed(bob_sa.lookup_for_member("SLICE", alice.urn, [bob_cred], {}), GeniCode.FORBIDDEN)
    failed(bob_sa.lookup_members("PROJECT", P1, [bob_cred], {}), GeniCode.FORBIDDEN)

    # malformed arguments and options
    failed(sa.lookup("SLICE", [cred], "options"), GeniCode.BADARGS)
    failed(sa.lookup("SLICE", [cred], {"match": {"SLICE_COLOUR": "red"}}), GeniCode.BADARGS)
    failed(sa.lookup("SLICE", [cred], {"match": {"SLICE_URN": 7}}), GeniCode.BADARGS)
    failed(sa.lookup("SLICE", [cred], {"filter": "SLICE_URN"}), GeniCode.BADARGS)
    failed(sa.create("SLICE", [cred], {"fields": {"SLICE_NAME": "exp3"}}), GeniCode.BADARGS)
    failed(sa.create("SLICE", [cred], {"fields": {"SLICE_NAME": "exp3", "SLICE_PROJECT_URN": P1, "SLICE_URN": S1}}),
           GeniCode.BADARGS)  # fmt: skip
    failed(sa.create("SLICE", [cred], {"fields": {"SLICE_NAME": "exp3", "SLICE_PROJECT_URN": P1,
                                                  "SLICE_EXPIRATION": "next tuesday"}}), GeniCode.BADARGS)  # fmt: skip
    failed(sa.create("SLICE", [cred], {"fields": []}), GeniCode.BADARGS)
    failed(sa.create("SLICE", [cred]), GeniCode.BADARGS)
    failed(sa.update("SLICE", "not-a-urn", [cred], {}), GeniCode.BADARGS)
    failed(sa.update("SLICE", P1, [cred], {}), GeniCode.BADARGS)
    failed(sa.modify_membership("PROJECT", P1, [cred], {"members_to_add": [{"PROJECT_MEMBER": bob.urn}]}),
           GeniCode.BADARGS)  # fmt: skip
    failed(sa.modify_membership("PROJECT", P1, [cred], {"members_to_add": [{"PROJECT_MEMBER": bob.urn,
                                                                            "PROJECT_ROLE": "KING"}]}),
           GeniCode.BADARGS)  # fmt: skip
    failed(sa.create("SLIVER_INFO", [cred], {"fields": {}}), GeniCode.UNSUPPORTED)
    failed(sa.delete("SLICE", S1, [cred], {}), GeniCode.UNSUPPORTED)
    ma = alice.proxy(urls["ma"])
    failed(ma.create("KEY", [cred], {"fields": {"KEY_PUBLIC": "ssh-rsa !!!"}}), GeniCode.BADARGS)
    failed(ma.create("KEY", [cred], {"fields": {"KEY_PUBLIC": "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAAQC7",
                                                "KEY_MEMBER": bob.urn}}), GeniCode.FORBIDDEN)  # fmt: skip

    assert _state(service) == before

    # an expired user credential (the clock moves past its 30 days)
    clock.advance(31 * DAY)
    failed(alice.call(chapi2.lookup_projects, urls["sa"], [cred]), GeniCode.CREDENTIAL_EXPIRED)
    assert _state(service) == before
