"""AM API v3 over real TLS: the life cycle, every expected error as an envelope, hostile input."""

from __future__ import annotations

import base64
import zlib
from datetime import timedelta

import pytest
from lxml import etree

from primogeni.geni.codes import GeniCode
from primogeni.geni.rspec import validate

from .conftest import NOW, proxy, v3

REQUEST = """<rspec xmlns="http://www.geni.net/resources/rspec/3" type="request">
  <node client_id="h1" exclusive="false"><sliver_type name="emulated-host"/>
    <interface client_id="h1:if0"><ip address="192.168.1.1" netmask="255.255.255.0" type="ipv4"/></interface></node>
  <node client_id="h2" exclusive="false"><sliver_type name="emulated-host"/>
    <interface client_id="h2:if0"><ip address="192.168.1.2" netmask="255.255.255.0" type="ipv4"/></interface></node>
  <link client_id="l0"><interface_ref client_id="h1:if0"/><interface_ref client_id="h2:if0"/>
    <property source_id="h1:if0" dest_id="h2:if0" capacity="10000" latency="5"/>
    <property source_id="h2:if0" dest_id="h1:if0" capacity="10000" latency="5"/></link>
</rspec>"""
GENI3 = {"type": "GENI", "version": "3"}


def code(answer: dict) -> int:
    return answer["code"]["geni_code"]


def test_get_version(federation, am_service) -> None:
    answer = proxy(federation, am_service.urls["3"]).GetVersion({})
    assert code(answer) == 0 and answer["geni_api"] == 3
    value = answer["value"]
    assert value["geni_api_versions"] == {"2": am_service.urls["2"], "3": am_service.urls["3"]}
    assert value["geni_credential_types"] == [{"geni_type": "geni_sfa", "geni_version": "3"}]
    assert value["geni_request_rspec_versions"][0]["version"] == "3"
    assert proxy(federation, am_service.urls["2"]).GetVersion()["geni_api"] == 2


def test_list_resources_needs_a_valid_credential(federation, am_service) -> None:
    am = proxy(federation, am_service.urls["3"])
    ucred = federation.user_cred("alice")
    answer = am.ListResources([v3(ucred)], {"geni_rspec_version": GENI3})
    assert code(answer) == 0
    ad = answer["value"]
    validate(ad, "advertisement")
    root = etree.fromstring(ad.encode())
    assert len(root.findall("{http://www.geni.net/resources/rspec/3}node")) == 4
    packed = am.ListResources([v3(ucred)], {"geni_rspec_version": GENI3, "geni_compressed": True})["value"]
    assert zlib.decompress(base64.b64decode(packed)).decode() == ad
    # the reference AM's quirk: no credential at all must not pass
    assert code(am.ListResources([], {"geni_rspec_version": GENI3})) == GeniCode.CREDENTIAL_INVALID
    assert code(am.ListResources([v3(ucred)], {})) == GeniCode.BADARGS
    assert code(am.ListResources([v3(ucred)], {"geni_rspec_version": {"type": "GENI", "version": "2"}})) == \
        GeniCode.BADVERSION
    # someone else's credential
    assert code(proxy(federation, am_service.urls["3"], "bob").ListResources(
        [v3(ucred)], {"geni_rspec_version": GENI3})) == GeniCode.CREDENTIAL_MISMATCH


def test_life_cycle(federation, am_service) -> None:
    am = proxy(federation, am_service.urls["3"])
    cred = federation.slice_cred("alice", "exp1")
    slice_urn = "urn:publicid:IDN+primo:proj+slice+exp1"
    answer = am.Allocate(slice_urn, [v3(cred)], REQUEST, {})
    assert code(answer) == 0, answer["output"]
    slivers = answer["value"]["geni_slivers"]
    assert len(slivers) == 3
    assert {s["geni_allocation_status"] for s in slivers} == {"geni_allocated"}
    validate(answer["value"]["geni_rspec"], "manifest")

    users = [{"urn": "urn:publicid:IDN+primo+user+alice", "keys": ["ssh-ed25519 AAAAC3Nza alice@laptop"]}]
    answer = am.Provision([slice_urn], [v3(cred)], {"geni_users": users, "geni_rspec_version": GENI3})
    assert code(answer) == 0, answer["output"]
    manifest = answer["value"]["geni_rspec"]
    validate(manifest, "manifest")
    root = etree.fromstring(manifest.encode())
    ns = {"r": "http://www.geni.net/resources/rspec/3"}
    logins = root.findall(".//r:node/r:services/r:login", ns)
    assert len(logins) == 2 and {login.get("username") for login in logins} == {"alice"}
    assert all(int(login.get("port")) >= 30000 for login in logins)
    assert root.find(".//r:link", ns).get("vlantag") == "4096"
    ips = {ip.get("address") for ip in root.findall(".//r:interface/r:ip", ns)}
    assert ips == {"192.168.1.1", "192.168.1.2"}

    answer = am.PerformOperationalAction([slice_urn], [v3(cred)], "geni_start", {})
    assert code(answer) == 0 and {s["geni_operational_status"] for s in answer["value"]} == {"geni_ready"}
    answer = am.PerformOperationalAction([slice_urn], [v3(cred)], "geni_fly", {})
    assert code(answer) == GeniCode.UNSUPPORTED  # an envelope, not a Fault
    status = am.Status([slice_urn], [v3(cred)], {})["value"]
    assert status["geni_urn"] == slice_urn and len(status["geni_slivers"]) == 3
    described = am.Describe([slice_urn], [v3(cred)], {})["value"]
    assert described["geni_urn"] == slice_urn

    new_time = (NOW + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    renewed = am.Renew([slice_urn], [v3(cred)], new_time, {})
    assert code(renewed) == 0 and {s["geni_expires"] for s in renewed["value"]} == {new_time}
    too_late = (NOW + timedelta(days=8)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert code(am.Renew([slice_urn], [v3(cred)], too_late, {})) == GeniCode.OUTOFRANGE

    one = slivers[0]["geni_sliver_urn"]
    assert code(am.Status([one], [v3(cred)], {})) == 0
    deleted = am.Delete([slice_urn], [v3(cred)], {})
    assert code(deleted) == 0 and {s["geni_allocation_status"] for s in deleted["value"]} == {"geni_unallocated"}
    assert code(am.Status([slice_urn], [v3(cred)], {})) == GeniCode.SEARCHFAILED
    assert am_service.driver.held() == set()


def state(am_service) -> tuple:
    usage = am_service.am.usage()
    return (sorted((k, sorted(v)) for k, v in usage.slots.items()), sorted(am_service.driver.held()))


def test_hostile_credentials_change_nothing(federation, am_service) -> None:
    am = proxy(federation, am_service.urls["3"])
    good = federation.slice_cred("alice", "exp2")
    slice_urn = "urn:publicid:IDN+primo:proj+slice+exp2"
    before = state(am_service)

    def refused(creds, expect: int, urn: str = slice_urn, who=am) -> None:
        answer = who.Allocate(urn, creds, REQUEST, {})
        assert code(answer) == expect, answer["output"]
        assert state(am_service) == before

    flipped = good.xml.replace("<name>control</name>", "<name>contrul</name>")
    assert flipped != good.xml
    refused([v3(flipped)], GeniCode.CREDENTIAL_INVALID)
    inserted = good.xml.replace("</privileges>", "<privilege><name>*</name><can_delegate>true</can_delegate>"
                                                 "</privilege></privileges>")
    refused([v3(inserted)], GeniCode.CREDENTIAL_INVALID)
    refused([v3(federation.slice_cred("alice", "exp2", expires=NOW - timedelta(minutes=1)))],
            GeniCode.CREDENTIAL_EXPIRED)
    untrusted_sa = federation.other_root
    refused([v3(federation.slice_cred("alice", "exp2", signer=untrusted_sa))], GeniCode.CREDENTIAL_SIGNER_UNTRUSTED)
    refused([v3(federation.user_cred("alice"))], GeniCode.CREDENTIAL_MISMATCH)  # user cred as slice cred
    refused([v3(federation.slice_cred("alice", "other"))], GeniCode.CREDENTIAL_MISMATCH)  # slice A's on slice B
    refused([v3(good)], GeniCode.CREDENTIAL_MISMATCH, who=proxy(federation, am_service.urls["3"], "bob"))
    refused([{"geni_type": "abac", "geni_version": "1", "geni_value": good.xml}], GeniCode.CREDENTIAL_INVALID)
    refused(["<not-xml"], GeniCode.CREDENTIAL_INVALID)
    xxe = ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
           '<signed-credential>&e;</signed-credential>')
    refused([v3(xxe)], GeniCode.CREDENTIAL_INVALID)
    # and the good one still works
    assert code(am.Allocate(slice_urn, [v3(good)], REQUEST, {})) == 0


@pytest.mark.parametrize("rspec, expect", [
    ("<rspec", GeniCode.BADARGS),
    ('<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
     '<rspec xmlns="http://www.geni.net/resources/rspec/3" type="request">&b;</rspec>', GeniCode.BADARGS),
    (REQUEST.replace('type="request"', 'type="manifest"'), GeniCode.BADARGS),
    (REQUEST.replace('<interface_ref client_id="h2:if0"/>', '<interface_ref client_id="nosuch"/>'), GeniCode.BADARGS),
    (REQUEST.replace("emulated-host", "raw-pc"), GeniCode.BADARGS),
    ("<rspec xmlns='http://www.geni.net/resources/rspec/3' type='request'>"
     + "".join(f"<node client_id='n{i}'><sliver_type name='emulated-host'/></node>" for i in range(60))
     + "</rspec>", GeniCode.INSUFFICIENT_NODES),
])
def test_bad_requests_change_nothing(federation, am_service, rspec: str, expect: int) -> None:
    am = proxy(federation, am_service.urls["3"])
    before = state(am_service)
    answer = am.Allocate("urn:publicid:IDN+primo:proj+slice+exp3", [v3(federation.slice_cred("alice", "exp3"))],
                         rspec, {})
    assert code(answer) == expect, answer["output"]
    assert answer["output"]
    assert state(am_service) == before


def test_wrong_arguments_are_envelopes(federation, am_service) -> None:
    am = proxy(federation, am_service.urls["3"])
    assert code(am.Allocate("not-a-urn", [], REQUEST, {})) == GeniCode.BADARGS
    assert code(am.Status([], [], {})) == GeniCode.BADARGS
    assert code(am.Status(["urn:publicid:IDN+primo+sliver+nosuch"], [], {})) == GeniCode.SEARCHFAILED
    assert code(am.Allocate("urn:publicid:IDN+primo:proj+slice+x")) == GeniCode.BADARGS
    assert code(am.NoSuchMethod()) == GeniCode.UNSUPPORTED


def test_oversized_request_is_refused(federation, am_service) -> None:
    am = proxy(federation, am_service.urls["3"])
    before = state(am_service)
    padding = "<!-- " + "x" * (8 * 1024 * 1024 + 1000) + " -->"
    answer = am.Allocate("urn:publicid:IDN+primo:proj+slice+big", [v3(federation.slice_cred("alice", "big"))],
                         REQUEST + padding, {})
    assert code(answer) == GeniCode.TOOBIG
    assert state(am_service) == before


def test_advertisement_follows_allocations_at_once(federation, am_service) -> None:
    am = proxy(federation, am_service.urls["3"])
    ucred = [v3(federation.user_cred("alice"))]

    def free() -> int:
        ad = etree.fromstring(am.ListResources(ucred, {"geni_rspec_version": GENI3})["value"].encode())
        ns = "{http://www.primogeni.net/resources/rspec/ext/primogeni/1}"
        return sum(int(c.get("available")) for c in ad.iter(f"{ns}capacity"))

    before = free()
    answer = am.Allocate("urn:publicid:IDN+primo:proj+slice+adv", [v3(federation.slice_cred("alice", "adv"))],
                         REQUEST, {})
    assert code(answer) == 0
    assert free() == before - 2  # the cached advertisement is not served after our own change
    am.Delete(["urn:publicid:IDN+primo:proj+slice+adv"], [v3(federation.slice_cred("alice", "adv"))], {})
    assert free() == before
