"""Credentials and tickets: issue → verify, the schemas, and every hostile case with its code."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from copy import deepcopy
from datetime import datetime, timedelta

import pytest
from lxml import etree
from tests.geni.fixtures import (
    NOW,
    YEAR,
    Clock,
    Federation,
    credential_schema,
    forge,
    slice_credential,
    user_credential,
)

from primogeni.geni.cert import issue
from primogeni.geni.codes import GeniCode
from primogeni.geni.cred import (
    OPERATION_PRIVILEGES,
    Credential,
    Privilege,
    Ticket,
    Verifier,
    delegate,
    issue_credential,
)
from primogeni.geni.cred_verify import check_unique_ids
from primogeni.geni.cred_xml import DSIG_NS, MAX_BYTES, XML_ID
from primogeni.geni.errors import CredentialError
from primogeni.geni.urn import Urn, user_urn

DS = f"{{{DSIG_NS}}}"
RSPEC = (
    '<rspec xmlns="http://www.geni.net/resources/rspec/3" type="request">'
    '<node client_id="pc1" exclusive="false"><sliver_type name="emulab-openvz"/></node></rspec>'
)


@pytest.fixture(scope="module")
def alice_cred(fed: Federation) -> Credential:
    return slice_credential(fed, fed.alice, fed.slice_a)


def _accept(verifier: Verifier, fed: Federation, xml: str | bytes, **call: object) -> Credential:
    args: dict[str, object] = {"caller": fed.alice.gid, "target": fed.slice_a.urn, "operation": "allocate"}
    args.update(call)
    return verifier.verify(xml, **args)  # type: ignore[arg-type]


def _refuse(verifier: Verifier, fed: Federation, xml: str | bytes, code: GeniCode, **call: object) -> str:
    with pytest.raises(CredentialError) as info:
        _accept(verifier, fed, xml, **call)
    assert info.value.code == code, info.value
    return info.value.reason


def _tree(xml: str) -> etree._Element:
    return etree.fromstring(xml.encode())


def _text(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


# --- issue and verify ----------------------------------------------------------------------


def test_issue_then_verify_slice_credential(fed: Federation, verifier: Verifier, alice_cred: Credential) -> None:
    cred = _accept(verifier, fed, alice_cred.xml)
    assert cred == alice_cred
    assert cred.type == "privilege"
    assert cred.owner_urn == user_urn("primo", "alice") and cred.owner_gid.same_key(fed.alice.gid)
    assert cred.target_urn == fed.slice_a.urn and cred.target_gid.same_key(fed.slice_a)
    assert [p.name for p in cred.privileges] == ["refresh", "embed", "bind", "control", "info"]
    assert all(p.can_delegate for p in cred.privileges)
    assert cred.expires == NOW + timedelta(days=7)
    assert cred.parent is None and cred.ticket is None
    assert re.fullmatch(r"ref[0-9a-f]{32}", cred.xml_id)
    assert cred.has_privilege("control") and not cred.has_privilege("resolve")


def test_document_shape_matches_the_references(alice_cred: Credential, fed: Federation) -> None:
    root = _tree(alice_cred.xml)
    assert root.tag == "signed-credential"
    xsi = "{http://www.w3.org/2001/XMLSchema-instance}noNamespaceSchemaLocation"
    assert root.get(xsi) == "http://www.geni.net/resources/credential/2/credential.xsd"
    credential = root[0]
    assert [c.tag for c in credential] == [
        "type", "serial", "owner_gid", "owner_urn", "target_gid", "target_urn", "uuid", "expires", "privileges",
    ]  # fmt: skip
    assert credential.findtext("owner_gid").count("BEGIN CERTIFICATE") == 1  # type: ignore[union-attr]
    assert credential.findtext("expires") == "2025-03-08T12:00:00Z"
    signature = root.find(f"signatures/{DS}Signature")
    assert signature is not None and signature.get(XML_ID) == f"Sig_{alice_cred.xml_id}"
    algorithms = [e.get("Algorithm") for e in signature.iter() if e.get("Algorithm")]
    assert algorithms == [
        "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
        "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
        "http://www.w3.org/2000/09/xmldsig#enveloped-signature",
        "http://www.w3.org/2000/09/xmldsig#sha1",
    ]
    assert signature.find(f"{DS}SignedInfo/{DS}Reference").get("URI") == f"#{alice_cred.xml_id}"  # type: ignore[union-attr]
    certs = signature.findall(f"{DS}KeyInfo/{DS}X509Data/{DS}X509Certificate")
    assert len(certs) == 2  # SA, then root
    sa_body = "".join(fed.sa.gid.pem(with_chain=False).splitlines()[1:-1])
    assert "".join((certs[0].text or "").split()) == sa_body


def test_user_credential(fed: Federation, verifier: Verifier) -> None:
    cred = user_credential(fed, fed.alice)
    _accept(verifier, fed, cred.xml, target=fed.alice.gid.urn, operation="resolve")
    _accept(verifier, fed, cred.xml.encode(), target=None, operation="getcredential")


@pytest.mark.parametrize("flavour", ["geni-v2", "protogeni"])
def test_every_emitted_document_validates(flavour: str, fed: Federation, alice_cred: Credential) -> None:
    schema = credential_schema(flavour)
    ticket = issue_credential(
        fed.cm, fed.alice.gid, fed.cm.gid, (), NOW + timedelta(hours=1), now=NOW, kind="ticket",
        ticket=Ticket(False, NOW + timedelta(minutes=10), RSPEC),
    )  # fmt: skip
    child = delegate(alice_cred, fed.alice, fed.bob.gid, ["info"], alice_cred.expires, now=NOW)
    for cred in (alice_cred, user_credential(fed, fed.bob), ticket, child, child.parent):
        assert cred is not None
        root = _tree(cred.xml)
        assert schema.validate(root), (flavour, schema.error_log)


def test_sha256_signatures_are_accepted(fed: Federation, verifier: Verifier) -> None:
    xml = forge(fed.sa, fed.alice.gid, fed.slice_a, [("*", False)], NOW + YEAR, sha256=True)
    assert "rsa-sha256" in xml
    _accept(verifier, fed, xml, operation="delete")


def test_signer_chain_in_any_order(fed: Federation, verifier: Verifier, alice_cred: Credential) -> None:
    root = _tree(alice_cred.xml)
    data = root.find(f"signatures/{DS}Signature/{DS}KeyInfo/{DS}X509Data")
    assert data is not None
    first = data[0]
    data.remove(first)
    data.append(first)
    _accept(verifier, fed, _text(root))


# --- operations and privileges -------------------------------------------------------------


def test_operation_table() -> None:
    assert set(OPERATION_PRIVILEGES) == {
        "listresources", "getversion", "resolve", "allocate", "provision", "create", "renew", "status",
        "describe", "delete", "operate", "shutdown", "getticket", "redeemticket", "getcredential",
        "createslice", "update",
    }  # fmt: skip
    assert OPERATION_PRIVILEGES["status"] == {"*", "info", "embed", "bind", "instantiate", "control"}
    assert OPERATION_PRIVILEGES["renew"] == {"*", "refresh", "embed", "bind", "instantiate"}
    assert OPERATION_PRIVILEGES["shutdown"] == {"*", "control", "embed", "bind", "instantiate"}
    assert "refresh" in OPERATION_PRIVILEGES["listresources"]
    assert "info" not in OPERATION_PRIVILEGES["allocate"]


def test_missing_privilege_is_forbidden(fed: Federation, verifier: Verifier) -> None:
    info_only = issue_credential(fed.sa, fed.alice.gid, fed.slice_a, ["info"], NOW + YEAR, now=NOW)
    _accept(verifier, fed, info_only.xml, operation="Status")
    _accept(verifier, fed, info_only.xml, operation=None)
    reason = _refuse(verifier, fed, info_only.xml, GeniCode.FORBIDDEN, operation="allocate")
    assert "allocate needs one of" in reason and "grants info" in reason
    _refuse(verifier, fed, info_only.xml, GeniCode.FORBIDDEN, operation="renew")
    with pytest.raises(ValueError, match="unknown operation"):
        _accept(verifier, fed, info_only.xml, operation="frobnicate")


def test_star_grants_everything(fed: Federation, verifier: Verifier) -> None:
    star = issue_credential(fed.sa, fed.alice.gid, fed.slice_a, ["*"], NOW + YEAR, now=NOW)
    assert star.has_privilege("anything")
    for operation in OPERATION_PRIVILEGES:
        _accept(verifier, fed, star.xml, operation=operation)


def test_caller_none_skips_the_owner_check(fed: Federation, verifier: Verifier, alice_cred: Credential) -> None:
    _accept(verifier, fed, alice_cred.xml, caller=None)


# --- hostile documents ---------------------------------------------------------------------


def test_changed_byte_in_expires(fed: Federation, verifier: Verifier, alice_cred: Credential) -> None:
    xml = alice_cred.xml.replace("<expires>2025-03-08", "<expires>2026-03-08")
    assert xml != alice_cred.xml
    assert "does not verify" in _refuse(verifier, fed, xml, GeniCode.CREDENTIAL_INVALID)


def test_changed_privilege_name(fed: Federation, verifier: Verifier) -> None:
    cred = issue_credential(fed.sa, fed.alice.gid, fed.slice_a, ["info"], NOW + YEAR, now=NOW)
    xml = cred.xml.replace("<name>info</name>", "<name>*</name>")
    assert "does not verify" in _refuse(verifier, fed, xml, GeniCode.CREDENTIAL_INVALID)


def test_inserted_element(fed: Federation, verifier: Verifier, alice_cred: Credential) -> None:
    xml = alice_cred.xml.replace("</privileges>", "</privileges><extensions><x/></extensions>")
    assert "does not verify" in _refuse(verifier, fed, xml, GeniCode.CREDENTIAL_INVALID)
    xml = alice_cred.xml.replace("</privileges>", "</privileges><bogus/>")
    assert "unexpected <bogus>" in _refuse(verifier, fed, xml, GeniCode.CREDENTIAL_INVALID)


def test_comment_splitting_a_signed_field(fed: Federation, verifier: Verifier, alice_cred: Credential) -> None:
    # C14N drops comments, so the signature still holds: the reader must not see "al" only.
    xml = alice_cred.xml.replace("+user+alice</owner_urn>", "+user+al<!---->ice</owner_urn>")
    assert xml != alice_cred.xml
    assert "must hold text only" in _refuse(verifier, fed, xml, GeniCode.CREDENTIAL_INVALID)


def _wrap(alice_cred: Credential, *, inside_extensions: bool, same_id: bool) -> bytes:
    root = _tree(alice_cred.xml)
    original = root[0]
    forged = deepcopy(original)
    privileges = forged.find("privileges")
    assert privileges is not None
    star = etree.SubElement(privileges, "privilege")
    etree.SubElement(star, "name").text = "*"
    etree.SubElement(star, "can_delegate").text = "true"
    if not same_id:
        forged.set(XML_ID, "refforged")
    root.replace(original, forged)
    if inside_extensions:
        etree.SubElement(forged, "extensions").append(original)  # after <privileges>: schema-valid
    else:
        etree.SubElement(root, "wrapper").append(original)
    return _text(root)


def test_signature_wrapping_with_duplicate_id(fed: Federation, verifier: Verifier, alice_cred: Credential) -> None:
    # The forged credential takes the signed one's id; the signed one hides in <extensions>.
    invalid = GeniCode.CREDENTIAL_INVALID
    reason = _refuse(verifier, fed, _wrap(alice_cred, inside_extensions=True, same_id=True), invalid)
    assert f"ID {alice_cred.xml_id} already defined" in reason  # libxml2 refuses it while parsing
    reason = _refuse(verifier, fed, _wrap(alice_cred, inside_extensions=False, same_id=True), invalid)
    assert "already defined" in reason


def test_duplicate_ids_are_refused_even_if_the_parser_let_them_through(alice_cred: Credential) -> None:
    root = _tree(alice_cred.xml)
    privileges = root[0].find("privileges")
    assert privileges is not None
    etree.SubElement(privileges, "privilege").set(XML_ID, alice_cred.xml_id)
    with pytest.raises(CredentialError, match="appears more than once"):
        check_unique_ids(root)


def test_signature_wrapping_under_extra_element(fed: Federation, verifier: Verifier, alice_cred: Credential) -> None:
    wrapped = _wrap(alice_cred, inside_extensions=False, same_id=False)
    reason = _refuse(verifier, fed, wrapped, GeniCode.CREDENTIAL_INVALID)
    assert "must hold <credential> then <signatures>" in reason


def test_signature_wrapping_with_fresh_id(fed: Federation, verifier: Verifier, alice_cred: Credential) -> None:
    wrapped = _wrap(alice_cred, inside_extensions=True, same_id=False)
    reason = _refuse(verifier, fed, wrapped, GeniCode.CREDENTIAL_INVALID)
    assert "which is not a credential of this document" in reason


def test_reference_must_point_at_a_credential(fed: Federation, verifier: Verifier, alice_cred: Credential) -> None:
    xml = alice_cred.xml.replace(f'URI="#{alice_cred.xml_id}"', 'URI="http://example.org/cred.xml"')
    assert "must be '#'" in _refuse(verifier, fed, xml, GeniCode.CREDENTIAL_INVALID)
    xml = alice_cred.xml.replace(f'URI="#{alice_cred.xml_id}"', 'URI=""')
    assert "must be '#'" in _refuse(verifier, fed, xml, GeniCode.CREDENTIAL_INVALID)


def test_only_known_transforms(fed: Federation, verifier: Verifier, alice_cred: Credential) -> None:
    xpath = '<Transform Algorithm="http://www.w3.org/TR/1999/REC-xpath-19991116"><XPath>false()</XPath></Transform>'
    xml = alice_cred.xml.replace("</Transforms>", xpath + "</Transforms>")
    assert "Transform" in _refuse(verifier, fed, xml, GeniCode.CREDENTIAL_INVALID)
    xml = alice_cred.xml.replace("xmldsig#rsa-sha1", "xmldsig#hmac-sha1")
    assert "SignatureMethod" in _refuse(verifier, fed, xml, GeniCode.CREDENTIAL_INVALID)


def test_unsigned_and_extra_signatures(fed: Federation, verifier: Verifier, alice_cred: Credential) -> None:
    root = _tree(alice_cred.xml)
    holder = root.find("signatures")
    assert holder is not None
    extra = deepcopy(holder[0])
    del extra.attrib[XML_ID]
    holder.append(extra)
    reason = _refuse(verifier, fed, _text(root), GeniCode.CREDENTIAL_INVALID)
    assert "1 credential(s) but 2 signature(s)" in reason
    root.remove(holder)
    assert "not signed" in _refuse(verifier, fed, _text(root), GeniCode.CREDENTIAL_INVALID)


def test_expired(fed: Federation, verifier: Verifier, clock: Clock, alice_cred: Credential) -> None:
    clock.now = alice_cred.expires
    _accept(verifier, fed, alice_cred.xml)  # the last second is still good
    clock.now = alice_cred.expires + timedelta(seconds=1)
    reason = _refuse(verifier, fed, alice_cred.xml, GeniCode.CREDENTIAL_EXPIRED)
    assert "expired at 2025-03-08T12:00:00Z" in reason


def test_signed_by_an_untrusted_ca(fed: Federation, verifier: Verifier) -> None:
    # The impostor's SA has our SA's very URN, but chains to a root we do not trust.
    cred = issue_credential(fed.evil_sa, fed.alice.gid, fed.slice_a, ["*"], NOW + YEAR, now=NOW)
    reason = _refuse(verifier, fed, cred.xml, GeniCode.CREDENTIAL_SIGNER_UNTRUSTED)
    assert "not issued by a trusted root" in reason


def test_signer_certificate_expired(fed: Federation, verifier: Verifier, clock: Clock) -> None:
    short_sa = issue(fed.root, Urn("primo", "authority", "sa2"), now=NOW, lifetime=timedelta(days=1), ca=True)
    cred = issue_credential(short_sa, fed.alice.gid, fed.slice_a, ["*"], NOW + timedelta(days=3), now=NOW)
    _accept(verifier, fed, cred.xml)
    clock.now = NOW + timedelta(days=2)
    assert "expired" in _refuse(verifier, fed, cred.xml, GeniCode.CREDENTIAL_SIGNER_UNTRUSTED)


def test_signed_by_a_user(fed: Federation, verifier: Verifier) -> None:
    cred = issue_credential(fed.alice, fed.alice.gid, fed.slice_a, ["*"], NOW + YEAR, now=NOW)
    reason = _refuse(verifier, fed, cred.xml, GeniCode.CREDENTIAL_SIGNER_UNTRUSTED)
    assert "not an authority (CA)" in reason


def test_signed_by_an_authority_of_another_federation(fed: Federation, verifier: Verifier) -> None:
    other_sa = issue(fed.root, Urn("other", "authority", "sa"), now=NOW, lifetime=YEAR, ca=True)
    cred = issue_credential(other_sa, fed.alice.gid, fed.slice_a, ["*"], NOW + YEAR, now=NOW)
    reason = _refuse(verifier, fed, cred.xml, GeniCode.CREDENTIAL_SIGNER_UNTRUSTED)
    assert "not an authority of 'primo'" in reason


def test_user_credential_used_as_slice_credential(fed: Federation, verifier: Verifier) -> None:
    cred = user_credential(fed, fed.alice)
    reason = _refuse(verifier, fed, cred.xml, GeniCode.CREDENTIAL_MISMATCH, operation="status")
    assert "a user credential was given where a credential for slice" in reason


def test_slice_a_credential_on_slice_b(fed: Federation, verifier: Verifier, alice_cred: Credential) -> None:
    reason = _refuse(verifier, fed, alice_cred.xml, GeniCode.CREDENTIAL_MISMATCH, target=fed.slice_b.urn)
    assert "exp-a" in reason and "exp-b" in reason


def test_owner_is_not_the_caller(fed: Federation, verifier: Verifier, alice_cred: Credential) -> None:
    reason = _refuse(verifier, fed, alice_cred.xml, GeniCode.CREDENTIAL_MISMATCH, caller=fed.bob.gid)
    assert "a different identity" in reason
    # Same URN, different key: a re-issued or forged certificate does not inherit the credential.
    reason = _refuse(verifier, fed, alice_cred.xml, GeniCode.CREDENTIAL_MISMATCH, caller=fed.alice_twin.gid)
    assert "a different key" in reason


@pytest.mark.parametrize("kind", ["abac", "speaksfor", "capability", "gadget"])
def test_unknown_credential_types(fed: Federation, verifier: Verifier, kind: str) -> None:
    xml = forge(fed.sa, fed.alice.gid, fed.slice_a, [("*", True)], NOW + YEAR, kind=kind)
    reason = _refuse(verifier, fed, xml, GeniCode.CREDENTIAL_INVALID)
    assert f"credential type {kind!r} is not accepted" in reason


def test_malformed_xml(fed: Federation, verifier: Verifier, alice_cred: Credential) -> None:
    assert "not well-formed" in _refuse(verifier, fed, "<signed-credential><credential>", GeniCode.CREDENTIAL_INVALID)
    assert "not well-formed" in _refuse(verifier, fed, alice_cred.xml[:-40], GeniCode.CREDENTIAL_INVALID)
    assert "not <signed-credential>" in _refuse(verifier, fed, "<credential/>", GeniCode.CREDENTIAL_INVALID)
    assert "must be XML text" in _refuse(verifier, fed, 42, GeniCode.CREDENTIAL_INVALID)  # type: ignore[arg-type]


XXE = """<?xml version="1.0"?>
<!DOCTYPE signed-credential [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<signed-credential><credential xml:id="ref0"><type>&xxe;</type></credential></signed-credential>
"""

_LEVELS = "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">\n' for i in range(1, 10))
LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n<!ENTITY lol0 "lol">\n'
    + _LEVELS
    + ']>\n<signed-credential><credential xml:id="ref0"><type>&lol9;</type></credential></signed-credential>'
)


def test_doctype_and_external_entity(fed: Federation, verifier: Verifier) -> None:
    reason = _refuse(verifier, fed, XXE, GeniCode.CREDENTIAL_INVALID)
    assert "DOCTYPE" in reason and "root:" not in reason


def test_doctype_hidden_in_utf16(fed: Federation, verifier: Verifier) -> None:
    data = XXE.replace('version="1.0"', 'version="1.0" encoding="UTF-16"').encode("utf-16")
    reason = _refuse(verifier, fed, data, GeniCode.CREDENTIAL_INVALID)
    assert "DOCTYPE" in reason and "root:" not in reason


def test_billion_laughs(fed: Federation, verifier: Verifier) -> None:
    assert "DOCTYPE" in _refuse(verifier, fed, LAUGHS, GeniCode.CREDENTIAL_INVALID)
    # In UTF-16 the byte scan cannot see it; libxml2's amplification limit or the DOCTYPE check does.
    reason = _refuse(verifier, fed, LAUGHS.encode("utf-16"), GeniCode.CREDENTIAL_INVALID)
    assert "amplification" in reason or "DOCTYPE" in reason


def test_oversized(fed: Federation, verifier: Verifier, alice_cred: Credential) -> None:
    padding = " " * (MAX_BYTES + 1 - len(alice_cred.xml.encode()))
    xml = alice_cred.xml.replace("<signatures>", padding + "<signatures>")
    assert len(xml.encode()) == MAX_BYTES + 1
    assert "the limit is 1048576" in _refuse(verifier, fed, xml, GeniCode.CREDENTIAL_INVALID)
    with pytest.raises(CredentialError, match="limit"):
        Credential.parse(xml)


# --- delegation ----------------------------------------------------------------------------


def test_delegation(fed: Federation, verifier: Verifier, alice_cred: Credential) -> None:
    child = delegate(alice_cred, fed.alice, fed.bob.gid, ["info", "control"], alice_cred.expires, now=NOW)
    assert child.parent is not None and child.parent.xml_id == alice_cred.xml_id
    assert child.owner_urn == fed.bob.gid.urn and child.target_urn == fed.slice_a.urn
    assert [(p.name, p.can_delegate) for p in child.privileges] == [("info", False), ("control", False)]
    got = _accept(verifier, fed, child.xml, caller=fed.bob.gid, operation="status")
    assert got.lineage == (child, child.parent)
    _refuse(verifier, fed, child.xml, GeniCode.FORBIDDEN, caller=fed.bob.gid, operation="allocate")
    _refuse(verifier, fed, child.xml, GeniCode.CREDENTIAL_MISMATCH, caller=fed.alice.gid, operation="status")
    # The parent travels as a stand-alone document that verifies on its own.
    _accept(verifier, fed, child.parent.xml, operation="status")
    root = _tree(child.xml)
    assert root.find("credential/parent/credential") is not None
    assert len(root.findall(f"signatures/{DS}Signature")) == 2


def test_two_level_delegation(fed: Federation, verifier: Verifier, alice_cred: Credential) -> None:
    carol = issue(fed.ma, user_urn("primo", "carol"), now=NOW, lifetime=YEAR, ca=False)
    to_bob = delegate(alice_cred, fed.alice, fed.bob.gid, ["info"], NOW + timedelta(days=2), now=NOW, delegatable=True)
    to_carol = delegate(to_bob, fed.bob, carol.gid, [Privilege("info", False)], NOW + timedelta(days=1), now=NOW)
    got = _accept(verifier, fed, to_carol.xml, caller=carol.gid, operation="describe")
    assert [c.owner_urn.name for c in got.lineage] == ["carol", "bob", "alice"]
    with pytest.raises(CredentialError, match="does not allow delegating"):
        delegate(to_carol, carol, fed.alice.gid, ["info"], NOW + timedelta(hours=1), now=NOW)


def test_delegation_that_outlives_its_parent(
    fed: Federation, verifier: Verifier, clock: Clock, alice_cred: Credential
) -> None:
    later = alice_cred.expires + timedelta(days=1)
    with pytest.raises(CredentialError, match="after its parent"):
        delegate(alice_cred, fed.alice, fed.bob.gid, ["info"], later, now=NOW)
    xml = forge(fed.alice, fed.bob.gid, fed.slice_a, [("info", False)], later, parent=alice_cred)
    reason = _refuse(verifier, fed, xml, GeniCode.CREDENTIAL_INVALID, caller=fed.bob.gid, operation="status")
    assert "after its parent" in reason
    # Once the parent has expired the child is refused as expired, whatever its own date says.
    clock.now = alice_cred.expires + timedelta(hours=1)
    reason = _refuse(verifier, fed, xml, GeniCode.CREDENTIAL_EXPIRED, caller=fed.bob.gid, operation="status")
    assert alice_cred.xml_id in reason


def test_delegation_that_adds_a_privilege(fed: Federation, verifier: Verifier) -> None:
    parent = issue_credential(fed.sa, fed.alice.gid, fed.slice_a, ["info"], NOW + YEAR, now=NOW)
    with pytest.raises(CredentialError, match="adds privilege 'control'"):
        delegate(parent, fed.alice, fed.bob.gid, ["info", "control"], NOW + YEAR, now=NOW)
    xml = forge(fed.alice, fed.bob.gid, fed.slice_a, [("info", False), ("control", False)], NOW + YEAR, parent=parent)
    reason = _refuse(verifier, fed, xml, GeniCode.CREDENTIAL_INVALID, caller=fed.bob.gid, operation="status")
    assert "adds privilege 'control'" in reason


def test_delegation_of_an_undelegatable_parent(fed: Federation, verifier: Verifier) -> None:
    parent = issue_credential(fed.sa, fed.alice.gid, fed.slice_a, ["info"], NOW + YEAR, now=NOW, delegatable=False)
    with pytest.raises(CredentialError, match="does not allow delegating privilege 'info'"):
        delegate(parent, fed.alice, fed.bob.gid, ["info"], NOW + YEAR, now=NOW)
    xml = forge(fed.alice, fed.bob.gid, fed.slice_a, [("info", False)], NOW + YEAR, parent=parent)
    reason = _refuse(verifier, fed, xml, GeniCode.CREDENTIAL_INVALID, caller=fed.bob.gid, operation="status")
    assert "does not allow delegating privilege 'info'" in reason


def test_delegation_signed_by_someone_else(fed: Federation, verifier: Verifier, alice_cred: Credential) -> None:
    with pytest.raises(CredentialError, match="only the parent's owner"):
        delegate(alice_cred, fed.bob, fed.bob.gid, ["info"], alice_cred.expires, now=NOW)
    xml = forge(fed.bob, fed.bob.gid, fed.slice_a, [("info", False)], alice_cred.expires, parent=alice_cred)
    reason = _refuse(verifier, fed, xml, GeniCode.CREDENTIAL_INVALID, caller=fed.bob.gid, operation="status")
    assert "not by its parent's owner" in reason
    # The twin holds alice's URN but not her key.
    xml = forge(fed.alice_twin, fed.bob.gid, fed.slice_a, [("info", False)], alice_cred.expires, parent=alice_cred)
    _refuse(verifier, fed, xml, GeniCode.CREDENTIAL_INVALID, caller=fed.bob.gid, operation="status")


def test_delegation_to_another_target(fed: Federation, verifier: Verifier, alice_cred: Credential) -> None:
    xml = forge(fed.alice, fed.bob.gid, fed.slice_b, [("info", False)], alice_cred.expires, parent=alice_cred)
    reason = _refuse(
        verifier, fed, xml, GeniCode.CREDENTIAL_INVALID, caller=fed.bob.gid, target=fed.slice_b.urn, operation="status"
    )
    assert "its parent" in reason


# --- tickets -------------------------------------------------------------------------------


def _ticket(fed: Federation, redeem_before: datetime | None = None) -> Credential:
    body = Ticket(False, redeem_before or NOW + timedelta(minutes=10), RSPEC)
    return issue_credential(
        fed.cm, fed.alice.gid, fed.cm.gid, (), NOW + timedelta(hours=1), now=NOW, kind="ticket", ticket=body
    )


def test_ticket_round_trip(fed: Federation, verifier: Verifier) -> None:
    ticket = _ticket(fed)
    assert ticket.type == "ticket" and ticket.privileges == ()
    assert ticket.ticket is not None
    assert ticket.ticket.redeem_before == NOW + timedelta(minutes=10)
    assert not ticket.ticket.can_delegate
    canonical = etree.tostring(etree.fromstring(ticket.ticket.rspec), method="c14n")
    assert canonical == etree.tostring(etree.fromstring(RSPEC), method="c14n")
    assert Credential.parse(ticket.xml) == ticket
    got = verifier.verify(ticket.xml, caller=fed.alice.gid, target=fed.cm.gid.urn, operation=None, kind="ticket")
    assert got == ticket
    root = _tree(ticket.xml)
    assert [c.tag for c in root.find("credential/ticket")] == [  # type: ignore[union-attr]
        "can_delegate", "redeem_before", "{http://www.geni.net/resources/rspec/3}rspec",
    ]  # fmt: skip


def test_ticket_kinds_do_not_mix(fed: Federation, verifier: Verifier, alice_cred: Credential) -> None:
    ticket = _ticket(fed)
    reason = _refuse(verifier, fed, ticket.xml, GeniCode.CREDENTIAL_INVALID, target=fed.cm.gid.urn)
    assert "'ticket' credential was given where a 'privilege'" in reason
    with pytest.raises(CredentialError) as info:
        verifier.verify(alice_cred.xml, caller=fed.alice.gid, target=None, operation=None, kind="ticket")
    assert info.value.code == GeniCode.CREDENTIAL_INVALID


def test_ticket_past_redeem_before(fed: Federation, verifier: Verifier, clock: Clock) -> None:
    ticket = _ticket(fed)
    clock.now = NOW + timedelta(minutes=11)
    with pytest.raises(CredentialError, match="redeemed before") as info:
        verifier.verify(ticket.xml, caller=fed.alice.gid, target=None, operation=None, kind="ticket")
    assert info.value.code == GeniCode.CREDENTIAL_EXPIRED


def test_tickets_cannot_be_delegated(fed: Federation) -> None:
    with pytest.raises(CredentialError, match="only privilege credentials"):
        delegate(_ticket(fed), fed.alice, fed.bob.gid, [], NOW + timedelta(minutes=5), now=NOW)


# --- parsing, issuing arguments, caching ---------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "fragment"),
    [
        ("<uuid>", "<uuid_x/><uuid>", "expected <uuid>, found <uuid_x>"),
        ("<owner_gid>-----BEGIN", "<owner_gid>xx-----BEGIN", "not a usable GENI certificate"),
        ("<can_delegate>true</can_delegate>", "<can_delegate>maybe</can_delegate>", "must be true or false"),
        ("+user+alice</owner_urn>", "+user+bob</owner_urn>", "does not match the certificate's URN"),
        ("<expires>2025-03-08T12:00:00Z", "<expires>next tuesday", "not an RFC 3339 time"),
        ("<expires>2025-03-08T12:00:00Z", "<expires>9999-12-31T23:59:59-01:00", "not an RFC 3339 time"),
    ],
)
def test_parse_reports_structure_problems(alice_cred: Credential, old: str, new: str, fragment: str) -> None:
    xml = alice_cred.xml.replace(old, new, 1)
    assert xml != alice_cred.xml
    with pytest.raises(CredentialError, match=re.escape(fragment)) as info:
        Credential.parse(xml)
    assert info.value.code == GeniCode.CREDENTIAL_INVALID


def test_parse_accepts_foreign_forms(alice_cred: Credential, fed: Federation) -> None:
    # ProtoGENI writes bare base64 GIDs; geni-tools writes times without a zone and no <owner_urn>.
    root = _tree(alice_cred.xml)
    owner = root.find("credential/owner_gid")
    assert owner is not None and owner.text is not None
    owner.text = "".join(owner.text.splitlines()[1:-1])
    root.find("credential/expires").text = "2025-03-08T12:00:00"  # type: ignore[union-attr]
    credential = root.find("credential")
    assert credential is not None
    credential.remove(credential.find("owner_urn"))  # type: ignore[arg-type]
    cred = Credential.parse(_text(root))
    assert cred.owner_urn == fed.alice.gid.urn and cred.expires == alice_cred.expires
    owner.text = fed.alice.gid.pem(with_chain=True)  # geni-tools puts the issuer chain here
    assert Credential.parse(_text(root)).owner_gid.chain == fed.alice.gid.chain


def test_issue_argument_checks(fed: Federation) -> None:
    with pytest.raises(ValueError, match="not after now"):
        issue_credential(fed.sa, fed.alice.gid, fed.slice_a, ["info"], NOW, now=NOW)
    with pytest.raises(ValueError, match="kind must be"):
        issue_credential(fed.sa, fed.alice.gid, fed.slice_a, ["info"], NOW + YEAR, now=NOW, kind="abac")
    with pytest.raises(ValueError, match="ticket body"):
        issue_credential(fed.cm, fed.alice.gid, fed.cm.gid, (), NOW + YEAR, now=NOW, kind="ticket")
    with pytest.raises(ValueError, match="timezone-aware"):
        issue_credential(fed.sa, fed.alice.gid, fed.slice_a, ["info"], datetime(2030, 1, 1), now=NOW)


def test_cache_never_skips_the_dynamic_checks(
    fed: Federation, verifier: Verifier, clock: Clock, alice_cred: Credential
) -> None:
    _accept(verifier, fed, alice_cred.xml)
    _refuse(verifier, fed, alice_cred.xml, GeniCode.CREDENTIAL_MISMATCH, caller=fed.bob.gid)
    _refuse(verifier, fed, alice_cred.xml, GeniCode.CREDENTIAL_MISMATCH, target=fed.slice_b.urn)
    clock.now = alice_cred.expires + timedelta(seconds=1)
    _refuse(verifier, fed, alice_cred.xml, GeniCode.CREDENTIAL_EXPIRED)
    bad = alice_cred.xml.replace("<name>info</name>", "<name>infx</name>")
    for _ in range(2):  # a rejection is cached too, and still raised
        _refuse(verifier, fed, bad, GeniCode.CREDENTIAL_INVALID)


def test_cache_is_bounded(fed: Federation, alice_cred: Credential) -> None:
    verifier = Verifier(fed.trust, clock=Clock(), cache_size=2)
    for cred in (alice_cred, user_credential(fed, fed.alice), user_credential(fed, fed.bob)):
        verifier.verify(cred.xml, caller=None, target=None, operation=None)
    assert len(verifier._cache) == 2


def test_verify_any(fed: Federation, verifier: Verifier, alice_cred: Credential) -> None:
    user = user_credential(fed, fed.alice)
    got = verifier.verify_any(
        ["<junk", user.xml, alice_cred.xml], caller=fed.alice.gid, target=fed.slice_a.urn, operation="allocate"
    )
    assert got == alice_cred
    with pytest.raises(CredentialError) as info:
        verifier.verify_any(["<junk", user.xml], caller=fed.alice.gid, target=fed.slice_a.urn, operation="allocate")
    assert info.value.code == GeniCode.CREDENTIAL_MISMATCH  # the one that came closest
    with pytest.raises(CredentialError, match="no credential") as info:
        verifier.verify_any([], caller=fed.alice.gid, target=fed.slice_a.urn, operation="allocate")
    assert info.value.code == GeniCode.CREDENTIAL_INVALID


def test_verifier_is_thread_safe(fed: Federation, alice_cred: Credential) -> None:
    verifier = Verifier(fed.trust, clock=Clock(), cache_size=2)
    docs = [alice_cred.xml, user_credential(fed, fed.alice).xml, user_credential(fed, fed.bob).xml] * 20

    def check(xml: str) -> str:
        return verifier.verify(xml, caller=None, target=None, operation=None).target_urn.name

    with ThreadPoolExecutor(max_workers=4) as pool:
        names = list(pool.map(check, docs))
    assert names == ["exp-a", "alice", "bob"] * 20
