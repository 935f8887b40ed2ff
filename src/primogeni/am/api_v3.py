"""GENI AM API v3 (served at ``/am/3.0``).

Every method checks its arguments and credentials, calls the core, and returns the value the
server wraps in the envelope; expected failures are :class:`GeniError` with their code.
"""

from __future__ import annotations

from collections.abc import Callable

from primogeni.am.common import (
    Context,
    call_method,
    check_rspec_version,
    compress,
    options_of,
    parse_time,
    parse_urn,
    rspec_versions,
    slice_expiry,
    slice_of,
    sliver_v3,
)
from primogeni.am.core import ACTIONS
from primogeni.am.events import EVENT_ACTIONS
from primogeni.am.virtual import RESULTS_ACTION, results
from primogeni.geni.cert import Gid
from primogeni.geni.codes import GeniCode
from primogeni.geni.errors import GeniError, need
from primogeni.geni.rspec import parse_request
from primogeni.rpc import envelope

API_VERSION = 3
CODE_VERSION = "primogeni-0.2"


class AmApiV3:
    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.methods: dict[str, Callable[..., object]] = {
            "GetVersion": self.get_version, "ListResources": self.list_resources, "Describe": self.describe,
            "Allocate": self.allocate, "Provision": self.provision, "Status": self.status,
            "PerformOperationalAction": self.perform_operational_action, "Renew": self.renew,
            "Delete": self.delete, "Shutdown": self.shutdown,
        }

    def __call__(self, method: str, params: tuple[object, ...], caller: Gid) -> object:
        return respond(call_method(self.methods, "AM API v3", method, params, caller))

    # GetVersion's envelope carries geni_api at the top level too; the server adds it for a
    # result of this shape.
    def get_version(self, caller: Gid, options: object = None) -> object:
        options_of(options)
        value = {
            "geni_api": API_VERSION,
            "geni_api_versions": {str(k): v for k, v in self.ctx.urls.items() if k in ("2", "3")},
            **rspec_versions(),
            "geni_credential_types": [{"geni_type": "geni_sfa", "geni_version": "3"}],
            "geni_single_allocation": 0,
            "geni_allocate": "geni_many",
            "geni_am_type": "primogeni",
            "geni_am_code": CODE_VERSION,
            "geni_am_urn": str(self.ctx.am.cm),
        }
        return GetVersionResult(value, API_VERSION)

    def list_resources(self, caller: Gid, creds: object, options: object = None) -> object:
        opts = options_of(options)
        self.ctx.check(creds, caller, None, "listresources")
        check_rspec_version(opts, required=True)
        if "geni_slice_urn" in opts:
            raise GeniError(GeniCode.BADARGS, "AM API v3 ListResources takes no geni_slice_urn; use Describe")
        rspec = self.ctx.advertise(bool(opts.get("geni_available", False)))
        return compress(rspec) if opts.get("geni_compressed") else rspec

    def describe(self, caller: Gid, urns: object, creds: object, options: object = None) -> object:
        opts = options_of(options)
        slice_urn, slivers = slice_of(self.ctx, urns)
        self.ctx.check(creds, caller, slice_urn, "describe")
        check_rspec_version(opts, required=False)
        found = self.ctx.am.status(str(slice_urn), slivers)
        rspec = self.ctx.manifest(str(slice_urn), slivers)
        return {"geni_rspec": compress(rspec) if opts.get("geni_compressed") else rspec,
                "geni_urn": str(slice_urn), "geni_slivers": [sliver_v3(s) for s in found]}

    def allocate(self, caller: Gid, slice_urn: object, creds: object, rspec: object, options: object = None) -> object:
        opts = options_of(options)
        urn = parse_urn(slice_urn, "slice_urn", "slice")
        cred = self.ctx.check(creds, caller, urn, "allocate")
        request_xml = str(need(rspec, str, "rspec"))
        request = parse_request(request_xml)
        end = parse_time(opts["geni_end_time"], "geni_end_time") if "geni_end_time" in opts else None
        made = self.ctx.am.allocate(str(urn), str(caller.urn), slice_expiry(cred), request, request_xml, end_time=end)
        return {"geni_rspec": self.ctx.manifest(str(urn), [s.urn for s in made]),
                "geni_slivers": [sliver_v3(s) for s in made]}

    def provision(self, caller: Gid, urns: object, creds: object, options: object = None) -> object:
        opts = options_of(options)
        slice_urn, slivers = slice_of(self.ctx, urns)
        cred = self.ctx.check(creds, caller, slice_urn, "provision")
        check_rspec_version(opts, required=False)
        users = users_of(opts.get("geni_users"), str(caller.urn))
        end = parse_time(opts["geni_end_time"], "geni_end_time") if "geni_end_time" in opts else None
        done = self.ctx.am.provision(str(slice_urn), slivers, users, slice_expiry(cred), end_time=end)
        return {"geni_rspec": self.ctx.manifest(str(slice_urn), slivers), "geni_slivers": [sliver_v3(s) for s in done]}

    def status(self, caller: Gid, urns: object, creds: object, options: object = None) -> object:
        options_of(options)
        slice_urn, slivers = slice_of(self.ctx, urns)
        self.ctx.check(creds, caller, slice_urn, "status")
        found = self.ctx.am.status(str(slice_urn), slivers)
        figures = self.ctx.monitor_of(found)
        return {"geni_urn": str(slice_urn),
                "geni_slivers": [{**sliver_v3(s), **({"primo_monitor": figures[s.urn]} if s.urn in figures else {})}
                                 for s in found]}

    def perform_operational_action(self, caller: Gid, urns: object, creds: object, action: object,
                                   options: object = None) -> object:
        opts = options_of(options)
        slice_urn, slivers = slice_of(self.ctx, urns)
        self.ctx.check(creds, caller, slice_urn, "operate")
        if not isinstance(action, str):
            raise GeniError(GeniCode.BADARGS, "action must be a string")
        if action in EVENT_ACTIONS and self.ctx.events is not None:
            made = self.ctx.events.schedule(str(slice_urn), slivers, action, opts)
            delivered = {e.id: e for e in self.ctx.events.deliver_pending([e.id for _s, e in made])}
            return [{**sliver_v3(s), "primo_event_id": e.id, "primo_event_state": delivered.get(e.id, e).state}
                    for s, e in made]
        if action == RESULTS_ACTION:  # what the slice's simulators measured (files, log, state)
            found = {s.urn: s for s in self.ctx.am.status(str(slice_urn), slivers)}
            return [{**sliver_v3(found[u]), "primo_client_id": found[u].client_id, "primo_results": r}
                    for u, r in results(self.ctx.am, str(slice_urn), slivers)]
        if action not in ACTIONS:
            known = (*ACTIONS, RESULTS_ACTION, *(EVENT_ACTIONS if self.ctx.events is not None else ()))
            raise GeniError(GeniCode.UNSUPPORTED, f"operational action {action!r} is not supported "
                                                  f"(supported: {', '.join(known)})")
        return [sliver_v3(s) for s in self.ctx.am.operate(str(slice_urn), slivers, action)]

    def renew(self, caller: Gid, urns: object, creds: object, when: object, options: object = None) -> object:
        opts = options_of(options)
        slice_urn, slivers = slice_of(self.ctx, urns)
        cred = self.ctx.check(creds, caller, slice_urn, "renew")
        new_time = parse_time(when, "expiration_time")
        done = self.ctx.am.renew(str(slice_urn), slivers, new_time, slice_expiry(cred),
                                 as_long_as_possible=bool(opts.get("geni_extend_alap", False)))
        return [sliver_v3(s) for s in done]

    def delete(self, caller: Gid, urns: object, creds: object, options: object = None) -> object:
        options_of(options)
        slice_urn, slivers = slice_of(self.ctx, urns)
        self.ctx.check(creds, caller, slice_urn, "delete")
        return [sliver_v3(s) for s in self.ctx.am.delete(str(slice_urn), slivers)]

    def shutdown(self, caller: Gid, slice_urn: object, creds: object, options: object = None) -> object:
        options_of(options)
        urn = parse_urn(slice_urn, "slice_urn", "slice")
        self.ctx.check(creds, caller, urn, "shutdown")
        self.ctx.am.shutdown(str(urn))
        return True


def respond(value: object) -> dict[str, object]:
    """The AM API envelope around a method's value (GetVersion also carries ``geni_api`` on top)."""
    if isinstance(value, GetVersionResult):
        answer = envelope(dict(value))
        answer["geni_api"] = value.geni_api
    else:
        answer = envelope(value)
    return answer


class GetVersionResult(dict[str, object]):
    """A GetVersion value: the server puts ``geni_api`` at the top of the envelope for it."""

    def __init__(self, value: dict[str, object], api: int):
        super().__init__(value)
        self.geni_api = api


def users_of(value: object, caller_urn: str) -> list[tuple[str, list[str]]]:
    """``geni_users`` / ``users``: ``[{urn, keys: [...]}]``; defaults to the caller with no keys."""
    if value is None:
        return [(caller_urn, [])]
    if not isinstance(value, list):
        raise GeniError(GeniCode.BADARGS, "geni_users must be a list of {urn, keys}")
    users: list[tuple[str, list[str]]] = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("urn"), str):
            raise GeniError(GeniCode.BADARGS, "each geni_users entry needs a urn")
        parse_urn(item["urn"], "geni_users[].urn", "user")
        keys = item.get("keys", [])
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise GeniError(GeniCode.BADARGS, "geni_users[].keys must be a list of strings")
        users.append((item["urn"], keys))
    return users or [(caller_urn, [])]
