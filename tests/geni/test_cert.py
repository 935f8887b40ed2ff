"""GIDs, identities and the trust store: what is minted, and which chains are refused."""

from __future__ import annotations

import stat
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from tests.geni.fixtures import NOW, YEAR, Federation, authority_urn, raw_certificate

from primogeni.geni.cert import Gid, Identity, TrustStore, create_root, issue, new_key
from primogeni.geni.codes import GeniCode
from primogeni.geni.errors import CertificateError
from primogeni.geni.urn import Urn, user_urn


def _untrusted(store: TrustStore, gid: Gid, now: datetime = NOW) -> CertificateError:
    with pytest.raises(CertificateError) as info:
        store.verify(gid, now)
    assert info.value.code == GeniCode.CREDENTIAL_SIGNER_UNTRUSTED
    return info.value


def test_root_is_a_self_signed_ca(fed: Federation) -> None:
    gid = fed.root.gid
    assert gid.urn == Urn("primo", "authority", "root")
    assert gid.is_ca and gid.chain == ()
    assert gid.cert.issuer == gid.cert.subject
    constraints = gid.cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = gid.cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and usage.digital_signature
    assert gid.cert.signature_hash_algorithm is not None
    assert gid.cert.signature_hash_algorithm.name == "sha256"
    assert gid.cert.public_key().key_size == 2048  # type: ignore[union-attr]


def test_user_gid_fields(fed: Federation) -> None:
    gid = fed.alice.gid
    assert gid.urn == user_urn("primo", "alice")
    assert isinstance(gid.uuid, uuid.UUID) and gid.uuid.version == 4
    assert gid.email == "alice@example.org"
    assert not gid.is_ca
    assert gid.chain == (fed.ma.gid.cert, fed.root.gid.cert)
    names = gid.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    uris = names.get_values_for_type(x509.UniformResourceIdentifier)
    assert uris[0] == "urn:publicid:IDN+primo+user+alice" and uris[1].startswith("urn:uuid:")
    assert names.get_values_for_type(x509.RFC822Name) == ["alice@example.org"]
    assert gid.cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "alice"
    ski = gid.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = gid.cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ma_ski = fed.ma.gid.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski.digest and aki.key_identifier == ma_ski.digest
    usage = gid.cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign


def test_server_names_in_san(fed: Federation) -> None:
    gid = issue(
        fed.root, authority_urn("ch"), now=NOW, lifetime=YEAR, ca=True,
        dns_names=["localhost"], ip_addresses=["127.0.0.1"], public_key=new_key().public_key(),
    )  # fmt: skip
    names = gid.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert isinstance(gid, Gid) and gid.chain == (fed.root.gid.cert,)


def test_pem_and_der_round_trip(fed: Federation) -> None:
    gid = fed.alice.gid
    again = Gid.from_pem(gid.pem())
    assert again == gid
    leaf_only = Gid.from_pem(gid.pem(with_chain=False).encode())
    assert leaf_only.chain == () and leaf_only.urn == gid.urn
    der = gid.cert.public_bytes(serialization.Encoding.DER)
    assert Gid.from_der(der).cert == gid.cert


def test_same_key(fed: Federation) -> None:
    assert fed.alice.gid.same_key(Gid.from_pem(fed.alice.gid.pem(with_chain=False)))
    assert not fed.alice.gid.same_key(fed.alice_twin.gid)  # same URN, other key
    assert not fed.alice.gid.same_key(fed.bob.gid)


def test_malformed_certificates_are_badargs(fed: Federation) -> None:
    with pytest.raises(CertificateError, match="not a PEM certificate") as info:
        Gid.from_pem("hello")
    assert info.value.code == GeniCode.BADARGS
    with pytest.raises(CertificateError, match="not a DER certificate"):
        Gid.from_der(b"\x30\x03abc")
    plain = (
        x509.CertificateBuilder()
        .subject_name(fed.root.gid.cert.subject)
        .issuer_name(fed.root.gid.cert.subject)
        .public_key(fed.root.key.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + YEAR)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("example.org")]), critical=False)
        .sign(fed.root.key, hashes.SHA256())
    )
    with pytest.raises(CertificateError, match="exactly one urn:publicid URI"):
        Gid.from_certificate(plain)


def test_identity_save_and_load(fed: Federation, tmp_path: Path) -> None:
    cert_path, key_path = tmp_path / "alice.pem", tmp_path / "alice.key"
    fed.alice.save(cert_path, key_path)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert cert_path.read_text().count("BEGIN CERTIFICATE") == 3  # user + MA + root
    assert "BEGIN RSA PRIVATE KEY" in key_path.read_text()
    loaded = Identity.load(cert_path, key_path)
    assert loaded.gid == fed.alice.gid
    assert loaded.key_pem() == fed.alice.key_pem()


def test_save_tightens_an_existing_key_file(fed: Federation, tmp_path: Path) -> None:
    key_path = tmp_path / "bob.key"
    key_path.write_text("old")
    key_path.chmod(0o644)
    fed.bob.save(tmp_path / "bob.pem", key_path)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


def test_load_refuses_a_key_of_someone_else(fed: Federation, tmp_path: Path) -> None:
    fed.alice.save(tmp_path / "alice.pem", tmp_path / "alice.key")
    fed.bob.save(tmp_path / "bob.pem", tmp_path / "bob.key")
    with pytest.raises(CertificateError, match="does not hold the key"):
        Identity.load(tmp_path / "alice.pem", tmp_path / "bob.key")


def test_only_a_ca_issues(fed: Federation) -> None:
    with pytest.raises(CertificateError, match="not a CA"):
        issue(fed.alice, user_urn("primo", "carol"), now=NOW, lifetime=YEAR, ca=False)


def test_trust_store_from_dir(fed: Federation, tmp_path: Path) -> None:
    (tmp_path / "both.pem").write_text(fed.root.gid.pem() + fed.evil_root.gid.pem())
    (tmp_path / "ignored.txt").write_text("not a pem")
    store = TrustStore.from_dir(tmp_path)
    assert store.roots == (fed.root.gid.cert, fed.evil_root.gid.cert)
    assert store.bundle_pem().count("BEGIN CERTIFICATE") == 2
    store.verify(fed.alice.gid, NOW)
    (tmp_path / "bad.pem").write_text("garbage")
    with pytest.raises(CertificateError, match=r"bad\.pem"):
        TrustStore.from_dir(tmp_path)


def test_good_chains(fed: Federation) -> None:
    store = fed.trust
    store.verify(fed.alice.gid, NOW)  # user → MA → root
    store.verify(fed.sa.gid, NOW)  # SA → root
    store.verify(fed.root.gid, NOW)  # the root itself
    store.verify(fed.slice_a, NOW)
    store.verify(Gid.from_certificate(fed.alice.gid.cert, [fed.ma.gid.cert]), NOW)  # root left out
    store.verify(fed.alice.gid, NOW + YEAR - timedelta(seconds=1))


def test_untrusted_root(fed: Federation) -> None:
    # The impostor root claims the same URN as ours but holds another key.
    evil_user = issue(fed.evil_sa, user_urn("primo", "mallory"), now=NOW, lifetime=YEAR, ca=False)
    err = _untrusted(fed.trust, evil_user.gid)
    assert "not issued by a trusted root" in err.reason
    _untrusted(fed.trust, fed.evil_root.gid)


def test_chain_missing_its_intermediate(fed: Federation) -> None:
    err = _untrusted(fed.trust, Gid.from_certificate(fed.alice.gid.cert))
    assert "CN=alice" in err.reason


def test_expired_and_not_yet_valid(fed: Federation) -> None:
    err = _untrusted(fed.trust, fed.alice.gid, NOW + YEAR + timedelta(seconds=1))
    assert "CN=alice" in err.reason and "expired" in err.reason
    err = _untrusted(fed.trust, fed.alice.gid, NOW - timedelta(hours=1))
    assert "not valid before" in err.reason


def test_expired_issuer(fed: Federation) -> None:
    short_ma = issue(fed.root, authority_urn("ma2"), now=NOW, lifetime=timedelta(days=1), ca=True)
    user = issue(short_ma, user_urn("primo", "carol"), now=NOW, lifetime=timedelta(hours=12), ca=False)
    fed.trust.verify(user.gid, NOW)
    # A certificate outliving its issuer is refused once the issuer has expired.
    user2 = issue(short_ma, user_urn("primo", "dave"), now=NOW, lifetime=YEAR, ca=False)
    err = _untrusted(fed.trust, user2.gid, NOW + timedelta(days=2))
    assert "ma2" in err.reason and "expired" in err.reason


def test_issuer_that_is_not_a_ca(fed: Federation) -> None:
    cert, _ = raw_certificate(fed.alice.key, fed.alice.gid.cert, user_urn("primo", "carol"))
    gid = Gid.from_certificate(cert, (fed.alice.gid.cert, *fed.alice.gid.chain))
    err = _untrusted(fed.trust, gid)
    assert "is not a CA" in err.reason and "CN=alice" in err.reason


def test_issuer_of_another_authority(fed: Federation) -> None:
    foreign = issue(fed.sa, user_urn("other", "mallory"), now=NOW, lifetime=YEAR, ca=False)
    err = _untrusted(fed.trust, foreign.gid)
    assert "may only issue names under authority 'primo'" in err.reason


def test_a_root_may_issue_any_authority(fed: Federation) -> None:
    other_sa = issue(fed.root, Urn("other", "authority", "sa"), now=NOW, lifetime=YEAR, ca=True)
    fed.trust.verify(other_sa.gid, NOW)


def test_forged_signature_in_chain(fed: Federation) -> None:
    # A certificate naming the MA as issuer but signed by the impostor's SA key.
    cert, _ = raw_certificate(fed.evil_sa.key, fed.ma.gid.cert, user_urn("primo", "mallory"))
    gid = Gid.from_certificate(cert, (fed.ma.gid.cert, fed.root.gid.cert))
    err = _untrusted(fed.trust, gid)
    assert "is not signed by" in err.reason


def test_overlong_chain(fed: Federation) -> None:
    gid = Gid.from_certificate(fed.alice.gid.cert, (fed.ma.gid.cert,) * 9)
    assert "longer than" in _untrusted(fed.trust, gid).reason


def test_second_federation_trusted_side_by_side() -> None:
    other = create_root(Urn("other", "authority", "root"), now=NOW)
    user = issue(other, user_urn("other", "zed"), now=NOW, lifetime=YEAR, ca=False)
    store = TrustStore.from_certs([other.gid.cert])
    store.verify(user.gid, NOW)
