"""ProtoGENI CM v2 (served at ``/protogeni/xmlrpc/cm/2.0`` and ``/protogeni/xmlrpc/cm``): the ticket flow.

The seed design's life cycle: ``GetTicket`` authorises a request under local policy and returns
a ticket signed by this CM (its resources are allocated and held until ``redeem_before``);
``UpdateTicket`` swaps the request (the old allocation stays if the new one does not fit);
``RedeemTicket`` provisions and starts the slivers and returns a sliver credential and the
manifest; ``ReleaseTicket`` gives the resources back. Every method takes one struct.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import timedelta

from primogeni.am.common import (
    Context,
    compress,
    parse_time,
    parse_urn,
    slice_expiry,
)
from primogeni.am.core import FAILED, PROVISIONED, READY
from primogeni.geni.cert import Gid, issue
from primogeni.geni.codes import GeniCode
from primogeni.geni.cred import SLICE_PRIVILEGES, Credential, Privilege, Ticket, issue_credential
from primogeni.geni.errors import GeniError, need
from primogeni.geni.rspec import parse_request
from primogeni.geni.times import rfc3339
from primogeni.geni.urn import Urn

REDEEM_WINDOW = timedelta(minutes=10)


class CmApiV2:
    def __init__(self, ctx: Context):
        self.ctx = ctx
        self._methods: dict[str, Callable[[Gid, Mapping[str, object]], object]] = {
            "GetVersion": self.get_version, "DiscoverResources": self.discover_resources,
            "GetTicket": self.get_ticket, "UpdateTicket": self.update_ticket, "RedeemTicket": self.redeem_ticket,
            "ReleaseTicket": self.release_ticket, "CreateSliver": self.create_sliver,
            "SliverStatus": self.sliver_status, "DeleteSliver": self.delete_sliver, "DeleteSlice": self.delete_slice,
            "RenewSlice": self.renew_slice, "Resolve": self.resolve, "Shutdown": self.shutdown,
        }

    def __call__(self, method: str, params: tuple[object, ...], caller: Gid) -> object:
        fn = self._methods.get(method)
        if fn is None:
            raise GeniError(GeniCode.NOT_IMPLEMENTED, f"ProtoGENI CM v2 has no method {method!r}")
        if len(params) > 1 or (params and not isinstance(params[0], dict)):
            raise GeniError(GeniCode.BADARGS, f"{method} takes one struct argument")
        args = params[0] if params else {}
        assert isinstance(args, dict)
        return {"code": 0, "value": fn(caller, args), "output": ""}

    @staticmethod
    def error_envelope(err: GeniError) -> dict[str, object]:
        """ProtoGENI answers carry the code as a plain integer."""
        return {"code": int(err.code), "value": 0, "output": err.reason}

    # -- helpers --------------------------------------------------------------------------------

    def _slice(self, args: Mapping[str, object], caller: Gid, operation: str) -> tuple[Urn, Credential]:
        urn = parse_urn(args.get("slice_urn"), "slice_urn", "slice")
        cred = self.ctx.check(args.get("credentials"), caller, urn, operation)
        return urn, cred

    def _ticket(self, args: Mapping[str, object], caller: Gid, slice_urn: Urn) -> tuple[Credential, str]:
        xml = str(need(args.get("ticket"), str, "ticket"))
        ticket = self.ctx.verifier.verify(xml, caller=caller, target=self.ctx.am.cm, operation=None, kind="ticket")
        open_row = self.ctx.am.open_ticket(str(slice_urn))
        if open_row is None or open_row.xml.strip() != xml.strip():
            raise GeniError(GeniCode.REFUSED, "stale ticket: it is not the slice's open ticket here "
                                              "(it was redeemed, released, replaced or has expired)")
        assert ticket.ticket is not None
        if ticket.ticket.redeem_before <= self.ctx.clock():
            deadline = rfc3339(ticket.ticket.redeem_before)
            raise GeniError(GeniCode.EXPIRED, f"ticket had to be redeemed before {deadline}")
        return ticket, open_row.id

    def _sign_ticket(self, caller: Gid, slice_urn: Urn, slice_cred: Credential, ticket_id: str,
                     rspec: str) -> tuple[str, str]:
        now = self.ctx.clock()
        redeem_before = min(now + REDEEM_WINDOW, slice_expiry(slice_cred))
        body = Ticket(can_delegate=True, redeem_before=redeem_before, rspec=rspec)
        cred = issue_credential(self.ctx.identity, caller, self.ctx.identity.gid, [], redeem_before, now=now,
                                kind="ticket", ticket=body)
        self.ctx.am.add_ticket(ticket_id, str(slice_urn), str(caller.urn), redeem_before, cred.xml)
        return cred.xml, ticket_id

    # -- methods ---------------------------------------------------------------------------------

    def get_version(self, caller: Gid, args: Mapping[str, object]) -> object:
        return {"api": 2, "urn": str(self.ctx.am.cm), "hrn": self.ctx.am.cm.authority, "url": self.ctx.urls.get("cm"),
                "interface": "registry", "code_tag": "primogeni-0.2",
                "geni_api_versions": {k: v for k, v in self.ctx.urls.items() if k in ("2", "3")},
                "ad_rspec_versions": [{"type": "GENI", "version": "3"}],
                "request_rspec_versions": [{"type": "GENI", "version": "3"}]}

    def discover_resources(self, caller: Gid, args: Mapping[str, object]) -> object:
        self.ctx.check(args.get("credentials"), caller, None, "listresources")
        rspec = self.ctx.advertise(bool(args.get("available", False)))
        return compress(rspec) if args.get("compress") else rspec

    def get_ticket(self, caller: Gid, args: Mapping[str, object]) -> object:
        slice_urn, cred = self._slice(args, caller, "getticket")
        if self.ctx.am.open_ticket(str(slice_urn)) is not None:
            raise GeniError(GeniCode.ALREADYEXISTS, "the slice already holds a ticket here; use UpdateTicket "
                                                    "or ReleaseTicket")
        request_xml = str(need(args.get("rspec"), str, "rspec"))
        request = parse_request(request_xml)
        ticket_id = uuid.uuid4().hex
        impotent = bool(args.get("impotent", False))
        self.ctx.am.allocate(str(slice_urn), str(caller.urn), slice_expiry(cred), request, request_xml,
                             ticket_id=ticket_id, dry_run=impotent, end_time=self.ctx.clock() + REDEEM_WINDOW)
        if impotent:  # a dry run: the request fits, nothing was reserved, and the ticket cannot be redeemed
            return request_xml
        xml, _ = self._sign_ticket(caller, slice_urn, cred, ticket_id, self.ctx.manifest(str(slice_urn), None))
        return xml

    def update_ticket(self, caller: Gid, args: Mapping[str, object]) -> object:
        slice_urn, cred = self._slice(args, caller, "getticket")
        _old, old_id = self._ticket(args, caller, slice_urn)
        request_xml = str(need(args.get("rspec"), str, "rspec"))
        request = parse_request(request_xml)
        new_id = uuid.uuid4().hex
        self.ctx.am.allocate(str(slice_urn), str(caller.urn), slice_expiry(cred), request, request_xml,
                             ticket_id=new_id, replace_ticket=old_id, end_time=self.ctx.clock() + REDEEM_WINDOW)
        self.ctx.am.close_ticket(old_id, "stale", release=False)
        xml, _ = self._sign_ticket(caller, slice_urn, cred, new_id, self.ctx.manifest(str(slice_urn), None))
        return xml

    def redeem_ticket(self, caller: Gid, args: Mapping[str, object]) -> object:
        slice_urn, cred = self._slice(args, caller, "redeemticket")
        _ticket, ticket_id = self._ticket(args, caller, slice_urn)
        urns = self.ctx.am.ticket_slivers(ticket_id)
        users = [(str(caller.urn), keys_of(args.get("keys")))]
        expires = slice_expiry(cred)
        self.ctx.am.provision(str(slice_urn), urns, users, expires)
        self.ctx.am.operate(str(slice_urn), urns, "geni_start")
        self.ctx.am.close_ticket(ticket_id, "redeemed", release=False)
        sliver_cred = self._sliver_credential(caller, slice_urn, expires)
        return [sliver_cred, self.ctx.manifest(str(slice_urn), None)]

    def _sliver_credential(self, caller: Gid, slice_urn: Urn, expires: object) -> str:
        now = self.ctx.clock()
        urn, pem = self.ctx.am.aggregate_sliver(str(slice_urn))
        if not pem:
            # Nobody signs as the sliver, so its GID carries the AM's public key (no key to keep).
            gid = issue(self.ctx.identity, Urn.parse(urn), now=now, lifetime=timedelta(days=365), ca=False,
                        public_key=self.ctx.identity.key.public_key())
            pem = gid.pem()
            self.ctx.am.set_aggregate_sliver(str(slice_urn), urn, pem)
        target = Gid.from_pem(pem)
        cred = issue_credential(self.ctx.identity, caller, target, [Privilege(p, True) for p in SLICE_PRIVILEGES],
                                expires, now=now)  # type: ignore[arg-type]
        return cred.xml

    def release_ticket(self, caller: Gid, args: Mapping[str, object]) -> object:
        slice_urn, _cred = self._slice(args, caller, "getticket")
        _ticket, ticket_id = self._ticket(args, caller, slice_urn)
        self.ctx.am.close_ticket(ticket_id, "released", release=True)
        return 0

    def create_sliver(self, caller: Gid, args: Mapping[str, object]) -> object:
        ticket = self.get_ticket(caller, args)
        if args.get("impotent"):
            return ticket
        try:
            return self.redeem_ticket(caller, {**args, "ticket": ticket})
        except GeniError:
            open_row = self.ctx.am.open_ticket(str(args.get("slice_urn")))
            if open_row is not None:
                self.ctx.am.close_ticket(open_row.id, "released", release=True)
            raise

    def sliver_status(self, caller: Gid, args: Mapping[str, object]) -> object:
        slice_urn, _cred = self._slice(args, caller, "status")
        found = self.ctx.am.status(str(slice_urn))
        details = {}
        for s in found:
            status = "ready" if s.operational == READY else "failed" if s.operational == FAILED else (
                "notready" if s.allocation == PROVISIONED else "mixed")
            details[s.urn] = {"status": status, "state": "started" if s.operational == READY else "stopped",
                              "error": s.error, "client_id": s.client_id, "component_urn": s.component}
        statuses = {d["status"] for d in details.values()}
        overall = "failed" if "failed" in statuses else statuses.pop() if len(statuses) == 1 else "mixed"
        states = {d["state"] for d in details.values()}
        return {"state": states.pop() if len(states) == 1 else "mixed", "status": overall, "details": details}

    def delete_sliver(self, caller: Gid, args: Mapping[str, object]) -> object:
        sliver = parse_urn(args.get("sliver_urn"), "sliver_urn", "sliver")
        slice_urn = self.ctx.am.slice_of_aggregate_sliver(str(sliver))
        if slice_urn is None:
            raise GeniError(GeniCode.SEARCHFAILED, f"no sliver {sliver} here")
        creds = args.get("credentials")
        try:
            self.ctx.check(creds, caller, sliver, "delete")
        except GeniError:
            self.ctx.check(creds, caller, Urn.parse(slice_urn), "delete")
        self.ctx.am.delete(slice_urn, None)
        return 0

    def delete_slice(self, caller: Gid, args: Mapping[str, object]) -> object:
        slice_urn, _cred = self._slice(args, caller, "delete")
        self.ctx.am.delete(str(slice_urn), None)
        open_row = self.ctx.am.open_ticket(str(slice_urn))
        if open_row is not None:
            self.ctx.am.close_ticket(open_row.id, "released", release=True)
        return 0

    def renew_slice(self, caller: Gid, args: Mapping[str, object]) -> object:
        slice_urn, cred = self._slice(args, caller, "renew")
        when = parse_time(args.get("expiration"), "expiration")
        self.ctx.am.renew(str(slice_urn), None, when, slice_expiry(cred))
        return 0

    def resolve(self, caller: Gid, args: Mapping[str, object]) -> object:
        urn = parse_urn(args.get("urn"), "urn")
        if urn.type == "node":
            self.ctx.check(args.get("credentials"), caller, None, "resolve")
            node = self.ctx.am.inventory.node(urn.name)
            if node is None or urn.authority != self.ctx.am.cm.authority:
                raise GeniError(GeniCode.SEARCHFAILED, f"no node {urn} here")
            return {"urn": str(urn), "hrn": node.name, "hostname": node.hostname, "kind": node.kind,
                    "capacity": node.capacity}
        if urn.type == "slice":
            slice_urn = urn
        elif urn.type == "sliver":
            owner = self.ctx.am.slice_of_aggregate_sliver(str(urn)) or self.ctx.am.slice_urn_of(str(urn))
            if owner is None:
                raise GeniError(GeniCode.SEARCHFAILED, f"no sliver {urn} here")
            slice_urn = Urn.parse(owner)
        else:
            raise GeniError(GeniCode.BADARGS, f"cannot resolve a {urn.type!r} URN here")
        self.ctx.check(args.get("credentials"), caller, slice_urn, "status")
        found = self.ctx.am.status(str(slice_urn))
        agg, _pem = self.ctx.am.aggregate_sliver(str(slice_urn))
        return {"urn": str(slice_urn), "sliver_urn": agg, "manifest": self.ctx.manifest(str(slice_urn), None),
                "slivers": {s.urn: s.client_id for s in found}}

    def shutdown(self, caller: Gid, args: Mapping[str, object]) -> object:
        slice_urn, _cred = self._slice(args, caller, "shutdown")
        self.ctx.am.shutdown(str(slice_urn))
        return 0


def keys_of(value: object) -> list[str]:
    """ProtoGENI ``keys``: ``[{type: "ssh", key}]`` or ``[{urn, keys: [...]}]`` → SSH public keys."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise GeniError(GeniCode.BADARGS, "keys must be a list")
    out: list[str] = []
    for item in value:
        if isinstance(item, dict) and isinstance(item.get("key"), str):
            out.append(item["key"])
        elif isinstance(item, dict) and isinstance(item.get("keys"), list):
            out.extend(k for k in item["keys"] if isinstance(k, str))
        elif isinstance(item, str):
            out.append(item)
        else:
            raise GeniError(GeniCode.BADARGS, "each keys entry must be {type, key} or {urn, keys}")
    return out
