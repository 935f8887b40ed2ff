"""GENI AM API v2 (served at ``/am/2.0``): one-step CreateSliver on top of the same core.

v2 has no separate allocation: ``CreateSliver`` allocates, provisions and starts in one call and
rolls back everything if any step fails.
"""

from __future__ import annotations

from collections.abc import Callable

from primogeni.am.api_v3 import CODE_VERSION, GetVersionResult, respond, users_of
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
)
from primogeni.am.core import FAILED, PENDING, READY, Sliver
from primogeni.geni.cert import Gid
from primogeni.geni.errors import GeniError, need
from primogeni.geni.rspec import parse_request
from primogeni.geni.times import rfc3339

API_VERSION = 2


def v2_status(s: Sliver) -> str:
    if s.operational == READY:
        return "ready"
    if s.operational == FAILED:
        return "failed"
    if s.operational == PENDING:
        return "configuring"
    return "notready"


class AmApiV2:
    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.methods: dict[str, Callable[..., object]] = {
            "GetVersion": self.get_version, "ListResources": self.list_resources, "CreateSliver": self.create_sliver,
            "SliverStatus": self.sliver_status, "RenewSliver": self.renew_sliver, "DeleteSliver": self.delete_sliver,
            "Shutdown": self.shutdown,
        }

    def __call__(self, method: str, params: tuple[object, ...], caller: Gid) -> object:
        return respond(call_method(self.methods, "AM API v2", method, params, caller))

    def get_version(self, caller: Gid, options: object = None) -> object:
        options_of(options)
        return GetVersionResult({
            "geni_api": API_VERSION,
            "geni_api_versions": {str(k): v for k, v in self.ctx.urls.items() if k in ("2", "3")},
            **rspec_versions(),
            "geni_am_type": "primogeni",
            "geni_am_code": CODE_VERSION,
            "geni_am_urn": str(self.ctx.am.cm),
        }, API_VERSION)

    def list_resources(self, caller: Gid, creds: object, options: object = None) -> object:
        opts = options_of(options)
        check_rspec_version(opts, required=True)
        if "geni_slice_urn" in opts:
            urn = parse_urn(opts["geni_slice_urn"], "geni_slice_urn", "slice")
            self.ctx.check(creds, caller, urn, "describe")
            self.ctx.am.status(str(urn))
            rspec = self.ctx.manifest(str(urn), None)
        else:
            self.ctx.check(creds, caller, None, "listresources")
            rspec = self.ctx.advertise(bool(opts.get("geni_available", False)))
        return compress(rspec) if opts.get("geni_compressed") else rspec

    def create_sliver(self, caller: Gid, slice_urn: object, creds: object, rspec: object, users: object = None,
                      options: object = None) -> object:
        options_of(options)
        urn = parse_urn(slice_urn, "slice_urn", "slice")
        cred = self.ctx.check(creds, caller, urn, "create")
        request_xml = str(need(rspec, str, "rspec"))
        request = parse_request(request_xml)
        who = users_of(users, str(caller.urn))
        expires = slice_expiry(cred)
        made = self.ctx.am.allocate(str(urn), str(caller.urn), expires, request, request_xml, fresh_slice=True)
        urns = [s.urn for s in made]
        try:
            self.ctx.am.provision(str(urn), urns, who, expires)
            self.ctx.am.operate(str(urn), urns, "geni_start")
        except GeniError:
            self.ctx.am.delete(str(urn), urns)
            raise
        return self.ctx.manifest(str(urn), None)

    def sliver_status(self, caller: Gid, slice_urn: object, creds: object, options: object = None) -> object:
        options_of(options)
        urn = parse_urn(slice_urn, "slice_urn", "slice")
        self.ctx.check(creds, caller, urn, "status")
        found = self.ctx.am.status(str(urn))
        figures = self.ctx.monitor_of(found)
        states = {v2_status(s) for s in found}
        overall = "failed" if "failed" in states else "ready" if states == {"ready"} else (
            "configuring" if "configuring" in states else "notready")
        return {"geni_urn": str(urn), "geni_status": overall,
                "geni_expires": rfc3339(min(s.expires for s in found)),
                "geni_resources": [{"geni_urn": s.urn, "geni_status": v2_status(s), "geni_error": s.error,
                                    "geni_client_id": s.client_id,
                                    **({"primo_monitor": figures[s.urn]} if s.urn in figures else {})}
                                   for s in found]}

    def renew_sliver(self, caller: Gid, slice_urn: object, creds: object, when: object,
                     options: object = None) -> object:
        opts = options_of(options)
        urn = parse_urn(slice_urn, "slice_urn", "slice")
        cred = self.ctx.check(creds, caller, urn, "renew")
        self.ctx.am.renew(str(urn), None, parse_time(when, "expiration_time"), slice_expiry(cred),
                          as_long_as_possible=bool(opts.get("geni_extend_alap", False)))
        return True

    def delete_sliver(self, caller: Gid, slice_urn: object, creds: object, options: object = None) -> object:
        options_of(options)
        urn = parse_urn(slice_urn, "slice_urn", "slice")
        self.ctx.check(creds, caller, urn, "delete")
        self.ctx.am.delete(str(urn), None)
        return True

    def shutdown(self, caller: Gid, slice_urn: object, creds: object, options: object = None) -> object:
        options_of(options)
        urn = parse_urn(slice_urn, "slice_urn", "slice")
        self.ctx.check(creds, caller, urn, "shutdown")
        self.ctx.am.shutdown(str(urn))
        return True
