"""The ProtoGENI SA and CH over real TLS: geni-lib's pgch1 client, and raw XML-RPC shaped like omni's."""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from primogeni.ch.service import ChService
from primogeni.geni.codes import GeniCode
from primogeni.geni.cred import Credential, Verifier
from primogeni.geni.urn import Urn
from primogeni.rpc import client

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # geni-lib imports pkg_resources
    from geni.minigcf import chapi2, pgch1

DAY = timedelta(days=1)
ALICE = "urn:publicid:IDN+primo+user+alice"
BOB = "urn:publicid:IDN+primo+user+bob"
P1 = "urn:publicid:IDN+primo+project+p1"
S1 = "urn:publicid:IDN+primo:p1+slice+exp1"
AM_URN = "urn:publicid:IDN+primo+authority+cm"


def ok(result: dict[str, Any]) -> Any:
    assert result["code"] == 0, result
    return result["value"]


def failed(result: dict[str, Any], code: GeniCode) -> str:
    assert isinstance(result["code"], int), result
    assert result["code"] == code, result
    return str(result["output"])


@pytest.fixture
def files(service: ChService) -> dict[str, tuple[str, str]]:
    a = service.authority
    out = {n: tuple(str(p) for p in a.user_files(n)) for n in ("alice", "bob", "carol")}
    out["am"] = (str(a.am_cert), str(a.am_key))
    return out  # type: ignore[return-value]


@pytest.fixture
def root(service: ChService) -> str:
    return str(service.authority.trust_dir / "primo-root.pem")


@pytest.fixture
def project(service: ChService) -> None:
    """p1, led by alice, with bob as a member (made through the SA itself)."""
    service.slices.create_project(ALICE, "p1", expires=service.slices.now() + 30 * DAY)
    service.slices.modify_project_membership(ALICE, P1, add=[(Urn.parse(BOB), "MEMBER")])


def proxy(files: dict[str, tuple[str, str]], who: str, url: str) -> Any:
    cert, key = files[who]
    return client(url, cert=Path(cert), key=Path(key))


def test_get_version(service: ChService, files, root):
    cert, key = files["alice"]
    sa = ok(pgch1.GetVersion(service.urls["pg_sa"], root, cert, key))
    ch = ok(pgch1.GetVersion(service.urls["pg_ch"], root, cert, key))
    assert sa["urn"] == "urn:publicid:IDN+primo+authority+sa" and ch["peers"] == {}
    assert ch["urn"] == "urn:publicid:IDN+primo+authority+ch"


def test_slice_life_with_geni_lib_and_omni_shapes(service: ChService, files, root, project, clock):
    cert, key = files["alice"]
    v = Verifier(service.authority.trust, clock=clock)
    alice_gid = service.members.member(ALICE).gid
    ucred = ok(pgch1.GetCredential(service.urls["pg_sa"], root, cert, key))
    assert isinstance(ucred, str)
    v.verify(ucred, caller=alice_gid, target=Urn.parse(ALICE), operation="resolve")

    # geni-lib registers by HRN <project>.<name>
    scred = ok(pgch1.Register(service.urls["pg_sa"], root, cert, key, ucred, "p1.exp1"))
    checked = v.verify(scred, caller=alice_gid, target=Urn.parse(S1), operation="create")
    assert checked.expires == clock() + 7 * DAY

    # omni's create_slice: Resolve (unknown → non-zero), then Register with the URN
    sa = proxy(files, "alice", service.urls["pg_sa"])
    s2 = "urn:publicid:IDN+primo:p1+slice+exp2"
    params = {"credential": ucred, "type": "Slice", "urn": s2}
    failed(sa.Resolve(params), GeniCode.SEARCHFAILED)
    v.verify(ok(sa.Register(params)), caller=alice_gid, target=Urn.parse(s2), operation="create")
    resolved = ok(sa.Resolve(params))
    assert resolved["urn"] == s2 and resolved["creator_urn"] == ALICE and resolved["hrn"] == "primo.p1.exp2"
    assert resolved["uuid"] == service.slices.slice(s2).uuid
    again = ok(sa.GetCredential(params))
    v.verify(again, caller=alice_gid, target=Urn.parse(s2), operation="create")
    by_uuid = ok(sa.GetCredential({"credential": ucred, "type": "Slice", "uuid": resolved["uuid"]}))
    assert Credential.parse(by_uuid).target_urn == Urn.parse(s2)

    user = ok(pgch1.Resolve(service.urls["pg_sa"], root, cert, key, ucred, ALICE, "User"))
    assert sorted(user["slices"]) == [S1, s2] and user["uid"] == "alice" and user["projects"] == [P1]
    assert ok(sa.Resolve({"credential": ucred, "type": "User", "hrn": "alice"}))["urn"] == ALICE

    # omni's renew: the slice credential and an ISO time
    new_end = clock() + 20 * DAY
    renewed = ok(sa.RenewSlice({"credential": again, "expiration": new_end.replace(tzinfo=None).isoformat()}))
    assert v.verify(renewed, caller=alice_gid, target=Urn.parse(s2), operation="renew").expires == new_end
    assert service.slices.slice(s2).expires == new_end

    # keys
    service.members.add_key(ALICE, "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAAQC7 alice@laptop")
    assert ok(sa.GetKeys({"credential": ucred})) == [
        {"type": "ssh", "key": "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAAQC7 alice@laptop"}
    ]

    # bind bob, who then gets his own slice credential
    assert ok(sa.BindToSlice({"credential": again, "urn": BOB})) is True
    bcert, bkey = files["bob"]
    bob_cred = ok(pgch1.GetCredential(service.urls["pg_sa"], root, bcert, bkey))
    bob_sa = proxy(files, "bob", service.urls["pg_sa"])
    bob_scred = ok(bob_sa.GetCredential({"credential": bob_cred, "type": "Slice", "urn": s2}))
    assert Credential.parse(bob_scred).owner_urn == Urn.parse(BOB)

    # remove: the name is free again, the slice is gone from Resolve
    assert ok(sa.Remove({"credential": ucred, "type": "Slice", "urn": s2})) is True
    failed(sa.Resolve(params), GeniCode.SEARCHFAILED)
    ok(sa.Register(params))


def test_pg_refusals_change_nothing(service: ChService, files, root, project, clock):
    cert, key = files["alice"]
    ucred = ok(pgch1.GetCredential(service.urls["pg_sa"], root, cert, key))
    sa = proxy(files, "alice", service.urls["pg_sa"])
    scred = ok(sa.Register({"credential": ucred, "type": "Slice", "urn": S1}))
    before = [(s.urn, s.uuid, s.expires) for s in service.slices.slices()]

    rule = failed(sa.Register({"credential": ucred, "type": "Slice", "urn": "urn:publicid:IDN+primo+slice+flat"}),
                  GeniCode.BADARGS)  # fmt: skip
    assert "primo:<project>" in rule
    failed(pgch1.Register(service.urls["pg_sa"], root, cert, key, ucred, "flat"), GeniCode.BADARGS)
    failed(sa.Register({"credential": ucred, "type": "Slice", "urn": "urn:publicid:IDN+other:p1+slice+x"}),
           GeniCode.BADARGS)  # fmt: skip
    failed(sa.Register({"credential": ucred, "type": "Slice", "urn": S1}), GeniCode.ALREADYEXISTS)
    failed(sa.Register({"credential": ucred, "type": "Slice", "urn": "urn:publicid:IDN+primo:p1+slice+no_good"}),
           GeniCode.BADARGS)  # fmt: skip
    failed(sa.Register({"type": "Slice", "urn": "urn:publicid:IDN+primo:p1+slice+nocred"}), GeniCode.FORBIDDEN)
    failed(sa.Register({"credential": ucred, "type": "Slice", "urn": "urn:publicid:IDN+primo:p9+slice+x"}),
           GeniCode.SEARCHFAILED)  # fmt: skip
    failed(sa.Register("not a struct"), GeniCode.BADARGS)
    failed(sa.Register(), GeniCode.BADARGS)
    # carol is in no project; bob is not in the slice; a user credential is no slice credential
    ccert, ckey = files["carol"]
    carol_cred = ok(pgch1.GetCredential(service.urls["pg_sa"], root, ccert, ckey))
    failed(pgch1.Register(service.urls["pg_sa"], root, ccert, ckey, carol_cred, "p1.exp9"), GeniCode.FORBIDDEN)
    failed(pgch1.Register(service.urls["pg_sa"], root, ccert, ckey, ucred, "p1.exp9"), GeniCode.CREDENTIAL_MISMATCH)
    bob_sa = proxy(files, "bob", service.urls["pg_sa"])
    bcert, bkey = files["bob"]
    bob_cred = ok(pgch1.GetCredential(service.urls["pg_sa"], root, bcert, bkey))
    failed(bob_sa.GetCredential({"credential": bob_cred, "type": "Slice", "urn": S1}), GeniCode.FORBIDDEN)
    failed(bob_sa.Resolve({"credential": bob_cred, "type": "Slice", "urn": S1}), GeniCode.FORBIDDEN)
    failed(bob_sa.RenewSlice({"credential": scred, "expiration": "2030-01-01T00:00:00Z"}), GeniCode.CREDENTIAL_MISMATCH)
    failed(sa.RenewSlice({"credential": ucred, "expiration": "2030-01-01T00:00:00Z"}), GeniCode.BADARGS)
    too_late = (clock() + 31 * DAY).strftime("%Y-%m-%dT%H:%M:%SZ")
    failed(sa.RenewSlice({"credential": scred, "expiration": too_late}), GeniCode.OUTOFRANGE)
    failed(sa.RenewSlice({"credential": scred, "expiration": "soon"}), GeniCode.BADARGS)
    failed(sa.RenewSlice({"credential": scred}), GeniCode.BADARGS)
    failed(sa.BindToSlice({"credential": scred, "urn": "urn:publicid:IDN+primo+user+carol"}), GeniCode.BADARGS)
    failed(sa.Resolve({"credential": ucred, "type": "Node", "urn": S1}), GeniCode.BADARGS)
    failed(sa.GetCredential({"credential": ucred, "type": "Slice", "urn": "urn:publicid:IDN+primo:p1+slice+nope"}),
           GeniCode.SEARCHFAILED)  # fmt: skip
    failed(sa.DeleteEverything({}), GeniCode.UNSUPPORTED)
    assert [(s.urn, s.uuid, s.expires) for s in service.slices.slices()] == before


def test_aggregate_registers_itself_and_is_listed(service: ChService, files, root, clock):
    am = proxy(files, "am", service.urls["pg_ch"])
    am_pem = service.authority.am_cert.read_text()
    url = "https://127.0.0.1:12346/protogeni/xmlrpc/cm"
    assert ok(am.Register({"gid": am_pem, "url": url, "type": "CM"})) is True
    assert ok(am.Register({"gid": am_pem, "url": url, "type": "CM"})) is True  # again: replaces
    cert, key = files["alice"]
    ucred = ok(pgch1.GetCredential(service.urls["pg_sa"], root, cert, key))
    components = ok(pgch1.ListComponents(service.urls["pg_ch"], root, cert, key, ucred))
    assert len(components) == 1
    c = components[0]
    assert c["urn"] == AM_URN and c["url"] == url and c["hrn"] == "primo.cm" and "BEGIN CERTIFICATE" in c["gid"]
    ch = proxy(files, "alice", service.urls["pg_ch"])
    assert ok(ch.Resolve({"credential": ucred, "urn": AM_URN, "type": "Component"}))["url"] == url
    assert ok(ch.Resolve({"credential": ucred, "urn": ALICE, "type": "User"}))["uid"] == "alice"
    failed(ch.Resolve({"credential": ucred, "urn": "urn:publicid:IDN+x+authority+cm"}), GeniCode.SEARCHFAILED)
    aggs = ok(chapi2.lookup_aggregates(service.urls["ch"], root, cert, key))
    assert [(a["SERVICE_URN"], a["SERVICE_URL"]) for a in aggs] == [(AM_URN, url)]

    # a user may not register, nor an authority register someone else's certificate
    failed(ch.Register({"gid": am_pem, "url": url, "type": "CM"}), GeniCode.FORBIDDEN)
    sa_pem = service.authority.sa.gid.pem()
    failed(am.Register({"gid": sa_pem, "url": url, "type": "CM"}), GeniCode.FORBIDDEN)
    failed(am.Register({"gid": am_pem, "url": "http://127.0.0.1/cm", "type": "CM"}), GeniCode.BADARGS)
    failed(am.Register({"gid": am_pem, "url": url, "type": "Toaster"}), GeniCode.BADARGS)
    failed(am.Register({"gid": "junk", "url": url, "type": "CM"}), GeniCode.BADARGS)
    assert [a.url for a in service.registry.aggregates()] == [url]
    assert isinstance(service.registry.aggregate(AM_URN).registered, datetime)
