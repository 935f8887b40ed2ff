"""A restarted clearinghouse loses nothing: state, identities, and credentials issued before."""

from __future__ import annotations

import warnings
from datetime import timedelta
from pathlib import Path

from primogeni.ch import add_member, list_aggregates, list_members, register_aggregate
from primogeni.ch.service import ChService
from primogeni.geni.cred import Verifier
from primogeni.geni.urn import Urn

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # geni-lib imports pkg_resources
    from geni.minigcf import chapi2, pgch1

DAY = timedelta(days=1)
ALICE = Urn("primo", "user", "alice")
BOB = Urn("primo", "user", "bob")
P1 = Urn("primo", "project", "p1")
S1 = Urn("primo:p1", "slice", "exp1")
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0 alice@laptop"


def test_restart_keeps_everything(data_dir: Path, db_url: str, clock):
    first = ChService(data_dir, db_url, clock=clock)
    try:
        first.start()
        alice = first.members.create_member("alice", "alice@example.org", first_name="Alice")
        first.members.create_member("bob", "bob@example.org")
        first.members.add_key(ALICE, KEY)
        root = str(first.authority.trust_dir / "primo-root.pem")
        cert, key = (str(p) for p in first.authority.user_files("alice"))
        ucred = chapi2.get_credentials(first.urls["ma"], root, cert, key, [], str(ALICE))["value"][0]
        assert chapi2.create_project(first.urls["sa"], root, cert, key, [ucred], "p1", (clock() + 30 * DAY).replace(
            tzinfo=None))["code"] == 0  # fmt: skip
        first.slices.modify_project_membership(ALICE, P1, add=[(BOB, "MEMBER")])
        made = chapi2.create_slice(first.urls["sa"], root, cert, key, [ucred], "exp1", str(P1))["value"]
        scred = chapi2.get_credentials(first.urls["sa"], root, cert, key, [ucred], str(S1))["value"][0]["geni_value"]
        first.registry.register(
            "urn:publicid:IDN+primo+authority+cm", "https://127.0.0.1:1/am/3.0", first.authority.am_cert.read_text()
        )
        slice_gid = first.slices.slice(S1).gid
    finally:
        first.stop()

    second = ChService(data_dir, db_url, clock=clock)
    try:
        second.start()
        assert [m.username for m in second.members.members()] == ["alice", "bob"]
        assert second.members.member(ALICE) == alice
        assert [k.public_key for k in second.members.keys(ALICE)] == [KEY]
        assert {str(m.member_urn): m.role for m in second.slices.project_members(P1)} == {
            str(ALICE): "LEAD",
            str(BOB): "MEMBER",
        }
        s = second.slices.slice(S1)
        assert s.uuid == made["SLICE_UID"] and s.gid.same_key(slice_gid)
        assert [a.urn for a in second.registry.aggregates()] == [Urn("primo", "authority", "cm")]

        # credentials from before the restart still verify, and are accepted over the wire
        v = Verifier(second.authority.trust, clock=clock)
        v.verify(ucred["geni_value"], caller=alice.gid, target=ALICE, operation="resolve")
        v.verify(scred, caller=alice.gid, target=S1, operation="create")
        root = str(second.authority.trust_dir / "primo-root.pem")
        cert, key = (str(p) for p in second.authority.user_files("alice"))
        found = chapi2.lookup_slices_for_project(second.urls["sa"], root, cert, key, [ucred], str(P1))["value"]
        assert found[str(S1)]["SLICE_UID"] == made["SLICE_UID"]
        end = (clock() + 9 * DAY).strftime(chapi2.DATE_FMT)
        pg = pgch1.GetCredential(second.urls["pg_sa"], root, cert, key)
        assert pg["code"] == 0
        renewed = chapi2.update_slice(second.urls["sa"], root, cert, key, [scred], str(S1), {"SLICE_EXPIRATION": end})
        assert renewed["code"] == 0, renewed
        # a new slice credential names the same slice GID
        new = second.slices.slice_credential(alice.gid, S1)
        assert new.target_gid.same_key(slice_gid)
    finally:
        second.stop()


def test_admin_functions_use_the_default_sqlite_file(data_dir: Path):
    m = add_member(data_dir, "alice", "alice@example.org", first_name="Alice", last_name="Liddell")
    assert (data_dir / "ch" / "ch.sqlite").is_file()
    assert (data_dir / "users" / "alice.pem").is_file()
    am = (data_dir / "am" / "am.pem").read_text()
    register_aggregate(data_dir, "urn:publicid:IDN+primo+authority+cm", "https://127.0.0.1:1/am/3.0", am, name="local")
    assert list_members(data_dir) == [m]
    assert [(a.name, a.url) for a in list_aggregates(data_dir)] == [("local", "https://127.0.0.1:1/am/3.0")]
    with ChService(data_dir) as svc:  # the service finds them in the same file
        assert svc.members.member(m.urn) == m
        assert svc.registry.aggregates()[0].name == "local"
