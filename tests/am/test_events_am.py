"""Events through AM API v3 PerformOperationalAction: storage, delivery to the right agents, retries, refusals."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from lxml import etree

from primogeni.am.driver import RecordingDriver
from primogeni.geni.codes import GeniCode
from primogeni.geni.times import rfc3339

from .conftest import proxy, v3
from .fake_agent import GENI3, USERS, AgentBed, agent_bed, code, rspec, slice_urn

__all__ = ["agent_bed"]

RSPEC_NS = "{http://www.geni.net/resources/rspec/3}"


def slivers(bed: AgentBed, name: str) -> dict[str, str]:
    """client_id → sliver URN of slice ``name``, from its manifest."""
    answer = bed.am().Describe([slice_urn(name)], bed.cred(name), {"geni_rspec_version": GENI3})
    root = etree.fromstring(answer["value"]["geni_rspec"].encode())
    return {e.get("client_id"): e.get("sliver_id") for e in root.iter(f"{RSPEC_NS}node", f"{RSPEC_NS}link")}


def poa(bed: AgentBed, name: str, urns: list[str], action: str, user: str = "alice", **options: object) -> dict:
    answer: dict = bed.am(user).PerformOperationalAction(urns, bed.cred(name), action, options)
    return answer


def test_a_link_event_goes_to_every_node_of_the_link(agent_bed: AgentBed) -> None:
    agent_bed.create("ev", rspec({"a": "pc1", "b": "pc2", "c": "pc2"}, {"ab": ["a", "b"]}))
    urn = slivers(agent_bed, "ev")
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=60)
    answer = poa(agent_bed, "ev", [urn["ab"]], "primo:link-down", primo_at=rfc3339(at))
    assert code(answer) == 0, answer["output"]
    (entry,) = answer["value"]
    assert entry["geni_sliver_urn"] == urn["ab"] and entry["primo_event_state"] == "delivered"
    event_id = entry["primo_event_id"]
    for node in ("pc1", "pc2"):
        spec = agent_bed.agents[node].events[event_id]
        assert (spec.target_kind, spec.target, spec.action, spec.at) == ("link", urn["ab"], "down", at.timestamp())
        assert spec.slice_urn == slice_urn("ev")
    assert not agent_bed.agents["shared1"].calls
    # a host event goes to the host's node only; "now" is at = 0
    answer = poa(agent_bed, "ev", [urn["c"]], "primo:host-start", primo_command=["sh", "-c", "echo hi"])
    assert code(answer) == 0, answer["output"]
    (entry,) = answer["value"]
    spec = agent_bed.agents["pc2"].events[entry["primo_event_id"]]
    assert (spec.target_kind, spec.action, spec.command, spec.at) == ("host", "start", ("sh", "-c", "echo hi"), 0.0)
    assert entry["primo_event_id"] not in agent_bed.agents["pc1"].events
    (stored,) = agent_bed.service.events.events(ids=[event_id])
    assert stored.state == "delivered" and stored.attempts == 1 and stored.last_error == ""


def test_a_failed_delivery_is_retried_and_applied_once(agent_bed: AgentBed) -> None:
    agent_bed.create("retry", rspec({"a": "pc1", "b": "pc2"}, {"ab": ["a", "b"]}))
    urn = slivers(agent_bed, "retry")
    pc1, pc2 = agent_bed.agents["pc1"], agent_bed.agents["pc2"]
    pc2.fail["Event"] = "scheduler busy"
    answer = poa(agent_bed, "retry", [slice_urn("retry")], "primo:link-up")  # the slice: all its links
    assert code(answer) == 0, answer["output"]
    (entry,) = answer["value"]
    assert entry["geni_sliver_urn"] == urn["ab"] and entry["primo_event_state"] == "pending"
    (stored,) = agent_bed.service.events.events(ids=[entry["primo_event_id"]])
    assert stored.attempts == 1 and "node pc2" in stored.last_error and "scheduler busy" in stored.last_error
    del pc2.fail["Event"]
    agent_bed.service.housekeeping()  # the reaper's pass
    (stored,) = agent_bed.service.events.events(ids=[entry["primo_event_id"]])
    assert stored.state == "delivered" and stored.attempts == 2
    assert entry["primo_event_id"] in pc2.events
    assert len([a for a in pc1.called("Event") if a[0]["event_id"] == entry["primo_event_id"]]) == 2  # 2nd: duplicate
    # across an agent restart: it is down when asked, and gets the event once it is back
    pc2.stop()
    answer = poa(agent_bed, "retry", [urn["b"]], "primo:host-reboot")
    (entry,) = answer["value"]
    assert entry["primo_event_state"] == "pending"
    agent_bed.service.housekeeping()
    assert agent_bed.service.events.events(ids=[entry["primo_event_id"]])[0].state == "pending"
    pc2 = agent_bed.revive("pc2")
    agent_bed.service.housekeeping()
    (stored,) = agent_bed.service.events.events(ids=[entry["primo_event_id"]])
    assert stored.state == "delivered" and stored.attempts == 3
    assert pc2.events[entry["primo_event_id"]].action == "reboot"


def test_an_event_the_agent_refuses_fails_for_good(agent_bed: AgentBed) -> None:
    agent_bed.create("refuse", rspec({"a": "pc1"}))
    urn = slivers(agent_bed, "refuse")
    agent_bed.agents["pc1"].slivers.clear()  # the agent does not hold the host any more
    answer = poa(agent_bed, "refuse", [urn["a"]], "primo:host-stop", primo_command=["pkill", "iperf3"])
    (entry,) = answer["value"]
    assert entry["primo_event_state"] == "failed"
    (stored,) = agent_bed.service.events.events(ids=[entry["primo_event_id"]])
    assert "not held" in stored.last_error
    agent_bed.service.housekeeping()  # not retried
    assert len(agent_bed.agents["pc1"].called("Event")) == 1


def test_bad_event_requests_are_refused_and_store_nothing(agent_bed: AgentBed) -> None:
    agent_bed.create("bad", rspec({"a": "pc1", "b": "pc1"}, {"ab": ["a", "b"]}))
    urn = slivers(agent_bed, "bad")
    cases = [
        ([urn["a"]], "primo:host-start", {}, GeniCode.BADARGS, "command"),
        ([urn["ab"]], "primo:host-reboot", {}, GeniCode.BADARGS, "node slivers"),
        ([urn["a"]], "primo:link-down", {}, GeniCode.BADARGS, "link slivers"),
        ([urn["a"]], "primo:host-reboot", {"primo_at": "tomorrow"}, GeniCode.BADARGS, "primo_at"),
        ([urn["a"]], "primo:host-reboot", {"primo_command": ["x"]}, GeniCode.BADARGS, "primo_command"),
        ([urn["a"]], "primo:explode", {}, GeniCode.UNSUPPORTED, "primo:link-down"),
    ]
    for urns, action, options, want, word in cases:
        answer = poa(agent_bed, "bad", urns, action, **options)
        assert code(answer) == want and word in answer["output"], (action, options, answer["output"])
    # the operate privilege on this slice is needed: bob cannot use alice's credential
    answer = poa(agent_bed, "bad", [urn["a"]], "primo:host-reboot", user="bob")
    assert code(answer) == GeniCode.CREDENTIAL_MISMATCH
    assert agent_bed.service.events.events() == []
    assert not agent_bed.agents["pc1"].called("Event")


def test_events_on_a_recording_am_are_recorded(federation, am_service) -> None:
    am = proxy(federation, am_service.urls["3"])
    cred = [v3(federation.slice_cred("alice", "rec"))]
    request = rspec({"a": None, "b": None}, {"ab": ["a", "b"]})
    assert code(am.Allocate(slice_urn("rec"), cred, request, {})) == 0
    answer = am.Provision([slice_urn("rec")], cred, {"geni_users": USERS})
    assert code(answer) == 0
    link = [s["geni_sliver_urn"] for s in answer["value"]["geni_slivers"]
            if am_service.am.plan(s["geni_sliver_urn"]).kind == "link"]
    started = time.time()
    answer = am.PerformOperationalAction(link, cred, "primo:link-down", {})
    assert code(answer) == 0, answer["output"]
    assert answer["value"][0]["primo_event_state"] == "delivered"
    driver = am_service.driver
    assert isinstance(driver, RecordingDriver)
    ((spec, nodes),) = driver.events
    assert spec.target == link[0] and spec.action == "down" and spec.at == 0.0 and len(nodes) == 2
    assert time.time() - started < 5
