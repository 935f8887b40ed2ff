"""The member authority: members and their files, user credentials, SSH keys (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import stat
import struct
from datetime import timedelta

import pytest

from primogeni.ch import Clearinghouse, parse_ssh_public_key
from primogeni.ch.authority import Authority, init_authority
from primogeni.geni.cert import Gid, Identity, issue
from primogeni.geni.codes import GeniCode
from primogeni.geni.cred import USER_PRIVILEGES, Verifier
from primogeni.geni.errors import GeniError
from primogeni.geni.urn import Urn


def ssh_key(kind: str = "ssh-ed25519", body: bytes = b"\x01" * 32, comment: str = "alice@laptop") -> str:
    blob = struct.pack(">I", len(kind)) + kind.encode() + struct.pack(">I", len(body)) + body
    return f"{kind} {base64.b64encode(blob).decode()} {comment}".strip()


def test_init_authority_layout(tmp_path):
    a = init_authority(tmp_path / "d", name="lab", hostnames=("localhost", "127.0.0.1", "ch.example.org"))
    d = tmp_path / "d"
    for f in ("trusted_roots/lab-root.pem", "ch/ma.pem", "ch/sa.pem", "ch/ch.pem", "am/am.pem", "users/alice.pem"):
        assert (d / f).is_file(), f
    for f in ("ch/ma.key", "ch/sa.key", "ch/ch.key", "ch/root.key", "am/am.key", "users/alice.key"):
        assert stat.S_IMODE((d / f).stat().st_mode) == 0o600, f
    assert a.ma.gid.urn == Urn("lab", "authority", "ma") and a.ma.gid.is_ca
    assert Identity.load(d / "am/am.pem", d / "am/am.key").gid.urn == Urn("lab", "authority", "cm")
    ch_cert = Gid.from_pem((d / "ch/ch.pem").read_bytes()).cert
    from cryptography import x509

    san = ch_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert "ch.example.org" in san.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    alice = Gid.from_pem((d / "users/alice.pem").read_bytes())
    assert alice.urn == Urn("lab", "user", "alice") and not alice.is_ca and alice.email == "alice@example.org"
    assert [c for c in alice.chain] == [a.ma.gid.cert]  # the file holds user + MA
    from datetime import UTC, datetime

    a.trust.verify(alice, datetime.now(UTC))
    with pytest.raises(GeniError) as e:
        init_authority(d, name="lab")
    assert e.value.code == GeniCode.ALREADYEXISTS


def test_create_member_writes_identity_and_records_it(ch: Clearinghouse, authority: Authority, clock):
    m = ch.members.create_member("alice", "alice@example.org", first_name="Alice", last_name="Liddell")
    assert m.urn == Urn("primo", "user", "alice")
    cert, key = authority.user_files("alice")
    ident = Identity.load(cert, key)
    assert ident.gid.same_key(m.gid) and str(ident.gid.uuid) == m.uuid
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    authority.trust.verify(m.gid, clock())
    assert ch.members.member(m.urn) == m
    assert ch.members.member(str(m.urn)).email == "alice@example.org"
    assert ch.members.member_by_name("alice").last_name == "Liddell"
    assert [x.username for x in ch.members.members()] == ["alice"]


def test_duplicate_and_bad_members_change_nothing(ch: Clearinghouse, authority: Authority):
    first = ch.members.create_member("alice", "alice@example.org")
    before = authority.user_files("alice")[0].read_bytes()
    with pytest.raises(GeniError) as e:
        ch.members.create_member("alice", "other@example.org")
    assert e.value.code == GeniCode.ALREADYEXISTS
    assert authority.user_files("alice")[0].read_bytes() == before
    for name, email in (("9lives", "x@example.org"), ("a b", "x@example.org"), ("bob", "not-an-email"), ("bob", "")):
        with pytest.raises(GeniError) as e:
            ch.members.create_member(name, email)
        assert e.value.code == GeniCode.BADARGS
    assert ch.members.members() == [first]
    assert not authority.user_files("bob")[0].exists()


def test_unknown_member_is_searchfailed(ch: Clearinghouse):
    with pytest.raises(GeniError) as e:
        ch.members.member("urn:publicid:IDN+primo+user+nobody")
    assert e.value.code == GeniCode.SEARCHFAILED
    with pytest.raises(GeniError) as e:
        ch.members.keys("urn:publicid:IDN+primo+user+nobody")
    assert e.value.code == GeniCode.SEARCHFAILED


def test_lookup_matches_every_criterion(ch: Clearinghouse):
    ch.members.create_member("alice", "alice@example.org", last_name="Smith")
    ch.members.create_member("bob", "bob@example.org", last_name="Smith")
    ch.members.create_member("carol", "carol@example.org", last_name="Jones")
    assert [m.username for m in ch.members.lookup(last_names=["Smith"])] == ["alice", "bob"]
    assert [m.username for m in ch.members.lookup(last_names=["Smith"], emails=["bob@example.org"])] == ["bob"]
    carol = ch.members.member_by_name("carol")
    assert ch.members.lookup(uids=[carol.uuid]) == [carol]
    assert ch.members.lookup(urns=["urn:publicid:IDN+primo+user+carol"]) == [carol]
    assert ch.members.lookup(usernames=["dave"]) == []


def test_user_credential_is_signed_by_the_ma(ch: Clearinghouse, authority: Authority, clock):
    m = ch.members.create_member("alice", "alice@example.org")
    cred = ch.members.user_credential(m.gid)
    v = Verifier(authority.trust, clock=clock)
    ok = v.verify(cred.xml, caller=m.gid, target=m.urn, operation="resolve")
    assert ok.owner_urn == ok.target_urn == m.urn
    assert {p.name for p in ok.privileges} == set(USER_PRIVILEGES)
    assert ok.expires == clock() + ch.members.credential_lifetime
    clock.advance(ch.members.credential_lifetime + timedelta(seconds=1))
    with pytest.raises(GeniError) as e:
        v.verify(cred.xml, caller=m.gid, target=m.urn, operation="resolve")
    assert e.value.code == GeniCode.CREDENTIAL_EXPIRED


def test_caller_must_hold_the_key_the_ma_issued(ch: Clearinghouse, authority: Authority, clock):
    m = ch.members.create_member("alice", "alice@example.org")
    assert ch.members.check_caller(m.gid) == m
    impostor = issue(authority.ma, m.urn, now=clock(), lifetime=timedelta(days=1), ca=False)
    with pytest.raises(GeniError) as e:
        ch.members.user_credential(impostor.gid)
    assert e.value.code == GeniCode.FORBIDDEN
    stranger = issue(authority.ma, Urn("primo", "user", "mallory"), now=clock(), lifetime=timedelta(days=1), ca=False)
    with pytest.raises(GeniError) as e:
        ch.members.user_credential(stranger.gid)
    assert e.value.code == GeniCode.FORBIDDEN


def test_ssh_keys(ch: Clearinghouse):
    alice = ch.members.create_member("alice", "alice@example.org")
    bob = ch.members.create_member("bob", "bob@example.org")
    k1 = ch.members.add_key(alice.urn, ssh_key(), "laptop")
    k2 = ch.members.add_key(alice.urn, ssh_key("ssh-rsa", b"\x00\x01\x00\x01" * 8, ""))
    ch.members.add_key(bob.urn, ssh_key(body=b"\x02" * 32))
    assert [k.id for k in ch.members.keys(alice.urn)] == [k1.id, k2.id]
    assert k1.key_type == "ssh-ed25519" and k1.description == "laptop" and k1.member_urn == alice.urn
    assert {k.member_urn for k in ch.members.keys_of()} == {alice.urn, bob.urn}
    assert len(ch.members.keys_of([str(bob.urn)])) == 1
    with pytest.raises(GeniError) as e:  # the same key again, whatever its comment
        ch.members.add_key(alice.urn, ssh_key(comment="again"))
    assert e.value.code == GeniCode.ALREADYEXISTS
    with pytest.raises(GeniError) as e:  # someone else's key id
        ch.members.delete_key(bob.urn, k1.id)
    assert e.value.code == GeniCode.SEARCHFAILED
    ch.members.delete_key(alice.urn, k1.id)
    assert [k.id for k in ch.members.keys(alice.urn)] == [k2.id]


@pytest.mark.parametrize(
    "line",
    [
        "",
        "ssh-rsa",
        "ssh-foo AAAAB3NzaC1yc2E= x",
        "ssh-rsa not*base64 x",
        ssh_key("ssh-ed25519").replace("ssh-ed25519 ", "ssh-rsa ", 1),  # blob says ed25519
        "ssh-ed25519 " + base64.b64encode(struct.pack(">I", 11) + b"ssh-ed25519").decode(),  # no key material
        ssh_key() + "\nssh-rsa AAAA",
    ],
)
def test_bad_ssh_keys_are_badargs(line):
    with pytest.raises(GeniError) as e:
        parse_ssh_public_key(line)
    assert e.value.code == GeniCode.BADARGS


def test_ssh_key_is_normalised():
    kind, line = parse_ssh_public_key("  " + ssh_key(comment="a  b") + "  ")
    assert kind == "ssh-ed25519" and line == ssh_key(comment="a  b")
