"""AM API v2 and the ProtoGENI CM v2 ticket flow, over real TLS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lxml import etree

from primogeni.geni.codes import GeniCode
from primogeni.geni.cred import Credential
from primogeni.geni.rspec import validate

from .conftest import NOW, proxy
from .test_api_v3 import REQUEST, state

SMALL = """<rspec xmlns="http://www.geni.net/resources/rspec/3" type="request">
  <node client_id="solo"><sliver_type name="simulator"/></node></rspec>"""


def test_v2_life_cycle(federation, am_service) -> None:
    am = proxy(federation, am_service.urls["2"])
    cred = federation.slice_cred("alice", "v2exp").xml
    slice_urn = "urn:publicid:IDN+primo:proj+slice+v2exp"
    ad = am.ListResources([federation.user_cred("alice").xml], {"geni_rspec_version": {"type": "GENI",
                                                                                       "version": "3"}})
    assert ad["code"]["geni_code"] == 0
    users = [{"urn": "urn:publicid:IDN+primo+user+alice", "keys": ["ssh-rsa AAAAB3 alice"]}]
    answer = am.CreateSliver(slice_urn, [cred], REQUEST, users, {})
    assert answer["code"]["geni_code"] == 0, answer["output"]
    validate(answer["value"], "manifest")
    again = am.CreateSliver(slice_urn, [cred], REQUEST, users, {})
    assert again["code"]["geni_code"] == GeniCode.ALREADYEXISTS
    status = am.SliverStatus(slice_urn, [cred], {})["value"]
    assert status["geni_status"] == "ready" and len(status["geni_resources"]) == 3
    manifest = am.ListResources([cred], {"geni_rspec_version": {"type": "GENI", "version": "3"},
                                         "geni_slice_urn": slice_urn})["value"]
    validate(manifest, "manifest")
    when = (NOW + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert am.RenewSliver(slice_urn, [cred], when, {})["value"] is True
    assert am.DeleteSliver(slice_urn, [cred], {})["value"] is True
    assert am.SliverStatus(slice_urn, [cred], {})["code"]["geni_code"] == GeniCode.SEARCHFAILED
    assert am_service.driver.held() == set()


def test_v2_create_that_does_not_fit_leaves_nothing(federation, am_service) -> None:
    am = proxy(federation, am_service.urls["2"])
    before = state(am_service)
    big = ("<rspec xmlns='http://www.geni.net/resources/rspec/3' type='request'>"
           + "".join(f"<node client_id='n{i}' exclusive='true'><sliver_type name='emulated-host'/></node>"
                     for i in range(3)) + "</rspec>")  # only two nodes can be exclusive
    answer = am.CreateSliver("urn:publicid:IDN+primo:proj+slice+big", [federation.slice_cred("alice", "big").xml],
                             big, [], {})
    assert answer["code"]["geni_code"] == GeniCode.INSUFFICIENT_NODES
    assert state(am_service) == before


def pg(answer: dict) -> object:
    assert answer["code"] == 0, answer
    return answer["value"]


def test_ticket_flow(federation, am_service) -> None:
    cm = proxy(federation, am_service.urls["cm"])
    slice_urn = "urn:publicid:IDN+primo:proj+slice+pgexp"
    cred = federation.slice_cred("alice", "pgexp").xml
    assert pg(cm.GetVersion({}))["api"] == 2
    ad = pg(cm.DiscoverResources({"credentials": [federation.user_cred("alice").xml], "available": True}))
    validate(ad, "advertisement")

    asked = datetime.now(UTC)
    ticket = pg(cm.GetTicket({"slice_urn": slice_urn, "rspec": REQUEST, "credentials": [cred]}))
    parsed = Credential.parse(ticket)
    assert parsed.type == "ticket" and parsed.owner_urn == federation.users["alice"].gid.urn
    assert parsed.target_urn == federation.am.gid.urn
    # redeemable for the AM's 10 minutes from when it was asked (seconds are cut: 1 s of slack)
    assert parsed.ticket is not None
    assert asked + timedelta(minutes=10) - timedelta(seconds=1) <= parsed.ticket.redeem_before
    assert parsed.ticket.redeem_before <= datetime.now(UTC) + timedelta(minutes=10, seconds=1)
    assert cm.GetTicket({"slice_urn": slice_urn, "rspec": REQUEST, "credentials": [cred]})["code"] == \
        GeniCode.ALREADYEXISTS
    held = state(am_service)
    assert sum(len(v) for _k, v in held[0]) == 2  # two slots reserved by the ticket

    # UpdateTicket with a request that does not fit keeps the old reservation
    huge = REQUEST.replace('exclusive="false"', 'exclusive="true"', 2).replace(
        '<node client_id="h2"', '<node client_id="h3" exclusive="true"><sliver_type name="emulated-host"/></node>'
                                '<node client_id="h2"', 1)
    bad = cm.UpdateTicket({"slice_urn": slice_urn, "ticket": ticket, "rspec": huge, "credentials": [cred]})
    assert bad["code"] == GeniCode.INSUFFICIENT_NODES
    assert state(am_service) == held
    ticket2 = pg(cm.UpdateTicket({"slice_urn": slice_urn, "ticket": ticket, "rspec": SMALL, "credentials": [cred]}))
    assert sum(len(v) for _k, v in state(am_service)[0]) == 1
    stale = cm.RedeemTicket({"slice_urn": slice_urn, "ticket": ticket, "credentials": [cred]})
    assert stale["code"] == GeniCode.REFUSED and "stale" in stale["output"]
    # someone else cannot redeem alice's ticket
    bob = proxy(federation, am_service.urls["cm"], "bob")
    assert bob.RedeemTicket({"slice_urn": slice_urn, "ticket": ticket2, "credentials": [cred]})["code"] in (
        GeniCode.CREDENTIAL_MISMATCH,)

    sliver_cred, manifest = pg(cm.RedeemTicket({"slice_urn": slice_urn, "ticket": ticket2, "credentials": [cred],
                                                "keys": [{"type": "ssh", "key": "ssh-rsa AAAA alice"}]}))
    validate(manifest, "manifest")
    sc = Credential.parse(sliver_cred)
    assert sc.target_urn.type == "sliver" and sc.owner_urn == federation.users["alice"].gid.urn
    status = pg(cm.SliverStatus({"slice_urn": slice_urn, "credentials": [cred]}))
    assert status["status"] == "ready" and status["state"] == "started"
    resolved = pg(cm.Resolve({"urn": slice_urn, "credentials": [cred]}))
    assert resolved["sliver_urn"] == str(sc.target_urn)
    when = (NOW + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert cm.RenewSlice({"slice_urn": slice_urn, "expiration": when, "credentials": [cred]})["code"] == 0
    # DeleteSliver with the sliver credential the CM gave us
    assert cm.DeleteSliver({"sliver_urn": str(sc.target_urn), "credentials": [sliver_cred]})["code"] == 0
    assert state(am_service) == ([], [])


def test_release_ticket_frees_everything(federation, am_service) -> None:
    cm = proxy(federation, am_service.urls["cm"])
    slice_urn = "urn:publicid:IDN+primo:proj+slice+rel"
    cred = federation.slice_cred("alice", "rel").xml
    before = state(am_service)
    ticket = pg(cm.GetTicket({"slice_urn": slice_urn, "rspec": REQUEST, "credentials": [cred]}))
    assert state(am_service) != before
    assert cm.ReleaseTicket({"slice_urn": slice_urn, "ticket": ticket, "credentials": [cred]})["code"] == 0
    assert state(am_service) == before
    # an impotent GetTicket checks the fit and reserves nothing
    pg(cm.GetTicket({"slice_urn": slice_urn, "rspec": REQUEST, "credentials": [cred], "impotent": 1}))
    assert state(am_service) == before
    # CreateSliver = GetTicket + RedeemTicket
    _sliver_cred, manifest = pg(cm.CreateSliver({"slice_urn": slice_urn, "rspec": REQUEST, "credentials": [cred]}))
    nodes = etree.fromstring(manifest.encode()).findall("{http://www.geni.net/resources/rspec/3}node")
    assert len(nodes) == 2
    assert cm.Shutdown({"slice_urn": slice_urn, "credentials": [cred]})["code"] == 0
    assert cm.GetTicket({"slice_urn": slice_urn, "rspec": SMALL, "credentials": [cred]})["code"] == \
        GeniCode.FORBIDDEN
    assert cm.DeleteSlice({"slice_urn": slice_urn, "credentials": [cred]})["code"] == 0
    assert cm.NoSuch({})["code"] == GeniCode.NOT_IMPLEMENTED
    assert cm.GetTicket("not a struct")["code"] == GeniCode.BADARGS
