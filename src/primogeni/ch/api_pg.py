"""The ProtoGENI slice authority and clearinghouse APIs (omni's ``pg`` framework, geni-lib ``pgch1``).

Every method takes one struct (or nothing) and answers ``{code, value, output}`` with an integer
code. Served at ``/protogeni/xmlrpc/sa`` and ``/protogeni/xmlrpc/ch``:

* SA: ``GetVersion``; ``GetCredential()`` → the caller's user credential, ``GetCredential({urn |
  uuid, type: "Slice", credential})`` → a slice credential; ``Resolve({urn | hrn | uuid, type,
  credential})`` for a User or a live Slice; ``Register({credential, urn | hrn, type: "Slice"})``
  → the new slice's credential; ``Remove``; ``GetKeys({credential})`` → ``[{type: "ssh", key}]``;
  ``RenewSlice({credential: slice credential, expiration})`` → a fresh slice credential;
  ``BindToSlice({credential: slice credential, urn: user})``.
* CH: ``GetVersion``; ``ListComponents({credential})`` → ``[{gid, hrn, url, urn}]``;
  ``Resolve({urn, type, credential})`` for a registered aggregate (or a user or slice); and
  ``Register({gid, url, type})`` — an aggregate registering itself with its authority certificate.

ProtoGENI's slice names have one level; ours have two. A slice registered here lives in the
project named by its URN's sub-authority (``urn:publicid:IDN+primo:<project>+slice+<name>``, what
omni's ``pg`` framework builds when configured with authority ``primo:<project>``), or by an
HRN ``<project>.<name>`` / ``<authority>.<project>.<name>``.
"""

from __future__ import annotations

from typing import Any

import primogeni
from primogeni.ch.authority import Clearinghouse
from primogeni.ch.calls import Authenticator, ChRoute, arity, one_credential, parse_time, rfc3339, struct, text, urn_arg
from primogeni.ch.members import Member
from primogeni.ch.registry import Aggregate
from primogeni.ch.slices import Slice
from primogeni.geni.cert import Gid
from primogeni.geni.codes import GeniCode
from primogeni.geni.cred import Credential
from primogeni.geni.errors import GeniError
from primogeni.geni.urn import Urn, check_project_name, check_slice_name, project_urn

PG_SA_PATH = "/protogeni/xmlrpc/sa"
PG_CH_PATH = "/protogeni/xmlrpc/ch"
PG_API_VERSION = "1.01"


def _args(params: tuple[Any, ...], usage: str, *, optional: bool = False) -> dict[str, Any]:
    """The single struct argument (``optional``: none at all counts as ``{}``)."""
    (value,) = arity(params, 0 if optional else 1, 1, usage=usage)
    if value is None and not optional:
        raise GeniError(GeniCode.BADARGS, f"expected {usage}")
    return struct(value, "the argument")


def _type(args: dict[str, Any], default: str | None = None) -> str:
    value = args.get("type", default)
    if value is None:
        raise GeniError(GeniCode.BADARGS, "type is required (Slice or User)")
    return text(value, "type", limit=32).lower()


class PgApi:
    """The ProtoGENI SA and CH over one :class:`Clearinghouse`."""

    def __init__(self, ch: Clearinghouse, auth: Authenticator):
        self.ch = ch
        self.auth = auth
        self._name = ch.authority.name

    def routes(self) -> dict[str, ChRoute]:
        """``{path: route}`` for the SA and the CH."""
        return {
            PG_SA_PATH: ChRoute(
                {
                    "GetVersion": self.sa_get_version,
                    "GetCredential": self.sa_get_credential,
                    "Resolve": self.sa_resolve,
                    "Register": self.sa_register,
                    "Remove": self.sa_remove,
                    "GetKeys": self.sa_get_keys,
                    "RenewSlice": self.sa_renew_slice,
                    "BindToSlice": self.sa_bind_to_slice,
                }
            ),
            PG_CH_PATH: ChRoute(
                {
                    "GetVersion": self.ch_get_version,
                    "ListComponents": self.ch_list_components,
                    "Resolve": self.ch_resolve,
                    "Register": self.ch_register,
                }
            ),
        }

    # -- names -----------------------------------------------------------------------------------

    def slice_urn_of(self, args: dict[str, Any]) -> Urn:
        """The slice a call names by ``urn`` or ``hrn``, checked against our two-level names."""
        if args.get("urn") is not None:
            urn = urn_arg(args["urn"], "urn", "slice")
            if urn.top_authority != self._name:
                raise GeniError(
                    GeniCode.BADARGS, f"{urn} belongs to authority {urn.top_authority!r}, not {self._name!r}"
                )
            parts = urn.authority.split(":")
            if len(parts) != 2:
                raise GeniError(
                    GeniCode.BADARGS,
                    f"slice URNs here name their project: urn:publicid:IDN+{self._name}:<project>+slice+<name> "
                    f"(configure the client's authority as '{self._name}:<project>'), not {urn}",
                )
            check_project_name(parts[1])
            check_slice_name(urn.name)
            return urn
        if args.get("hrn") is not None:
            parts = text(args["hrn"], "hrn", limit=256).split(".")
            if len(parts) == 3 and parts[0] == self._name:
                parts = parts[1:]
            if len(parts) != 2:
                raise GeniError(
                    GeniCode.BADARGS,
                    f"a slice HRN here is <project>.<name> or {self._name}.<project>.<name>, not {args['hrn']!r}",
                )
            check_project_name(parts[0])
            check_slice_name(parts[1])
            return Urn(f"{self._name}:{parts[0]}", "slice", parts[1])
        raise GeniError(GeniCode.BADARGS, "name the slice with urn or hrn")

    def _live_slice(self, args: dict[str, Any]) -> Slice:
        """The live slice named by ``urn``, ``hrn`` or ``uuid``; SEARCHFAILED if none."""
        if args.get("uuid") is not None and args.get("urn") is None and args.get("hrn") is None:
            found = self.ch.slices.slices(uids=[text(args["uuid"], "uuid", limit=64)], expired=False)
            if not found:
                raise GeniError(GeniCode.SEARCHFAILED, f"no live slice with uuid {args['uuid']}")
            return found[0]
        urn = self.slice_urn_of(args)
        sl = self.ch.slices.slice(urn)
        if sl.expired(self.ch.slices.now()):
            raise GeniError(GeniCode.SEARCHFAILED, f"slice {urn} has expired")
        return sl

    def _member_of(self, args: dict[str, Any]) -> Member:
        if args.get("urn") is not None:
            return self.ch.members.member(urn_arg(args["urn"], "urn", "user"))
        if args.get("uuid") is not None:
            found = self.ch.members.lookup(uids=[text(args["uuid"], "uuid", limit=64)])
            if not found:
                raise GeniError(GeniCode.SEARCHFAILED, f"no member with uuid {args['uuid']}")
            return found[0]
        if args.get("hrn") is not None:
            hrn = text(args["hrn"], "hrn", limit=256)
            if hrn.startswith("urn:"):
                return self.ch.members.member(urn_arg(hrn, "hrn", "user"))
            return self.ch.members.member_by_name(hrn.removeprefix(f"{self._name}."))
        raise GeniError(GeniCode.BADARGS, "name the user with urn, hrn or uuid")

    def _user_record(self, m: Member) -> dict[str, Any]:
        now = self.ch.slices.now()
        live = [str(s.urn) for s, _ in self.ch.slices.slices_for_member(m.urn) if not s.expired(now)]
        return {
            "uid": m.username,
            "hrn": f"{self._name}.{m.username}",
            "urn": str(m.urn),
            "uuid": m.uuid,
            "email": m.email,
            "name": " ".join(p for p in (m.first_name, m.last_name) if p) or m.username,
            "gid": m.gid.pem(with_chain=True),
            "slices": live,
            "projects": [str(p.urn) for p, _ in self.ch.slices.projects_for_member(m.urn, expired=False)],
        }

    def _slice_record(self, s: Slice) -> dict[str, Any]:
        owner = self.ch.members.member(s.owner_urn)
        return {
            "urn": str(s.urn),
            "hrn": f"{self._name}.{s.urn.project}.{s.name}",
            "uuid": s.uuid,
            "creator_urn": str(s.owner_urn),
            "creator_uuid": owner.uuid,
            "gid": s.gid.pem(with_chain=True),
            "expires": rfc3339(s.expires),
            "project_urn": str(s.project_urn),
            "component_managers": [],
        }

    # -- SA --------------------------------------------------------------------------------------

    def sa_get_version(self, params: tuple[Any, ...], caller: Gid) -> object:
        _args(params, "GetVersion()", optional=True)
        return {
            "api": PG_API_VERSION,
            "urn": str(Urn(self._name, "authority", "sa")),
            "implementation": "PrimoGENI",
            "code_tag": primogeni.__version__,
        }

    def sa_get_credential(self, params: tuple[Any, ...], caller: Gid) -> object:
        args = _args(params, "GetCredential([{urn, type, credential}])", optional=True)
        if not any(args.get(k) is not None for k in ("urn", "hrn", "uuid")):
            return self.ch.members.user_credential(caller).xml
        kind = _type(args, "slice")
        if kind != "slice":
            raise GeniError(GeniCode.BADARGS, f"GetCredential gives user or slice credentials, not {kind!r} ones")
        if args.get("credential") is None:
            raise GeniError(GeniCode.FORBIDDEN, "a slice credential needs your user credential as 'credential'")
        sl = self._live_slice(args)
        member = self.auth.member(
            one_credential(args["credential"]), caller, slice_urn=sl.urn, operation="getcredential"
        )
        return self.ch.slices.slice_credential(member.gid, sl.urn).xml

    def sa_resolve(self, params: tuple[Any, ...], caller: Gid) -> object:
        args = _args(params, "Resolve({urn|hrn|uuid, type, credential})")
        kind = _type(args)
        creds = one_credential(args.get("credential"))
        if kind == "user":
            self.auth.member(creds, caller)
            return self._user_record(self._member_of(args))
        if kind != "slice":
            raise GeniError(GeniCode.BADARGS, f"the SA resolves User and Slice, not {args.get('type')!r}")
        member = self.auth.member(creds, caller)
        sl = self._live_slice(args)
        if self.ch.slices.role_in_slice(member.urn, sl.urn) is None:
            raise GeniError(GeniCode.FORBIDDEN, f"{member.urn} is not a member of slice {sl.urn}")
        return self._slice_record(sl)

    def sa_register(self, params: tuple[Any, ...], caller: Gid) -> object:
        args = _args(params, "Register({credential, urn|hrn, type: Slice})")
        kind = _type(args, "slice")
        if kind != "slice":
            raise GeniError(GeniCode.BADARGS, f"the SA registers slices, not {args.get('type')!r}")
        urn = self.slice_urn_of(args)
        expires = parse_time(args["expiration"], "expiration") if args.get("expiration") is not None else None
        member = self.auth.member(one_credential(args.get("credential")), caller)
        assert urn.project is not None
        sa = self.ch.slices
        sl = sa.create_slice(member.urn, project_urn(self._name, urn.project), urn.name, expires=expires)
        return sa.slice_credential(member.gid, sl.urn).xml

    def sa_remove(self, params: tuple[Any, ...], caller: Gid) -> object:
        args = _args(params, "Remove({credential, urn|hrn, type: Slice})")
        kind = _type(args, "slice")
        if kind != "slice":
            raise GeniError(GeniCode.BADARGS, f"the SA removes slices, not {args.get('type')!r}")
        urn = self.slice_urn_of(args)
        member = self.auth.member(one_credential(args.get("credential")), caller, slice_urn=urn, operation="delete")
        self.ch.slices.remove_slice(member.urn, urn)
        return True

    def sa_get_keys(self, params: tuple[Any, ...], caller: Gid) -> object:
        args = _args(params, "GetKeys({credential})")
        member = self.auth.member(one_credential(args.get("credential")), caller)
        return [{"type": "ssh", "key": k.public_key} for k in self.ch.members.keys(member.urn)]

    def _slice_of_credential(self, args: dict[str, Any], caller: Gid, operation: str) -> tuple[Member, Urn]:
        """The caller and the slice a call acts on: named by ``slice_urn``/``urn`` or by the
        slice credential itself (ProtoGENI's RenewSlice and BindToSlice name it only that way).
        """
        creds = one_credential(args.get("credential"))
        named = args.get("slice_urn")
        if named is not None:
            urn = urn_arg(named, "slice_urn", "slice")
        else:
            urn = self._credential_target(creds)
        member = self.auth.member(creds, caller, slice_urn=urn, operation=operation)
        return member, urn

    def _credential_target(self, creds: list[str]) -> Urn:
        for xml in creds:
            try:
                target = Credential.parse(xml).target_urn
            except GeniError:
                continue
            if target.type == "slice":
                return target
        raise GeniError(GeniCode.BADARGS, "credential must be a slice credential (or name the slice with slice_urn)")

    def sa_renew_slice(self, params: tuple[Any, ...], caller: Gid) -> object:
        args = _args(params, "RenewSlice({credential, expiration})")
        if args.get("expiration") is None:
            raise GeniError(GeniCode.BADARGS, "expiration is required")
        expires = parse_time(args["expiration"], "expiration")
        member, urn = self._slice_of_credential(args, caller, "renew")
        sa = self.ch.slices
        sa.renew_slice(member.urn, urn, expires)
        return sa.slice_credential(member.gid, urn).xml

    def sa_bind_to_slice(self, params: tuple[Any, ...], caller: Gid) -> object:
        args = _args(params, "BindToSlice({credential, urn})")
        user = urn_arg(args.get("urn"), "urn", "user")
        member, urn = self._slice_of_credential(args, caller, "update")
        self.ch.slices.modify_slice_membership(member.urn, urn, add=[(user, "MEMBER")])
        return True

    # -- CH --------------------------------------------------------------------------------------

    def ch_get_version(self, params: tuple[Any, ...], caller: Gid) -> object:
        _args(params, "GetVersion()", optional=True)
        return {
            "api": PG_API_VERSION,
            "urn": str(self.ch.authority.ch_urn),
            "implementation": "PrimoGENI",
            "code_tag": primogeni.__version__,
            "peers": {},
        }

    @staticmethod
    def _component(agg: Aggregate) -> dict[str, Any]:
        return {"gid": agg.cert_pem, "hrn": agg.hrn, "url": agg.url, "urn": str(agg.urn)}

    def ch_list_components(self, params: tuple[Any, ...], caller: Gid) -> object:
        args = _args(params, "ListComponents({credential})")
        self.auth.member(one_credential(args.get("credential")), caller)
        return [self._component(a) for a in self.ch.registry.aggregates()]

    def ch_resolve(self, params: tuple[Any, ...], caller: Gid) -> object:
        args = _args(params, "Resolve({urn, type, credential})")
        kind = _type(args, "component")
        if kind in ("user", "slice"):
            return self.sa_resolve(params, caller)
        self.auth.member(one_credential(args.get("credential")), caller)
        if args.get("urn") is not None:
            return self._component(self.ch.registry.aggregate(urn_arg(args["urn"], "urn")))
        if args.get("hrn") is not None:
            hrn = text(args["hrn"], "hrn", limit=256)
            for agg in self.ch.registry.aggregates():
                if agg.hrn == hrn:
                    return self._component(agg)
            raise GeniError(GeniCode.SEARCHFAILED, f"no aggregate {hrn!r}")
        raise GeniError(GeniCode.BADARGS, "name the aggregate with urn or hrn")

    def ch_register(self, params: tuple[Any, ...], caller: Gid) -> object:
        args = _args(params, "Register({gid, url, type})")
        kind = text(args.get("type", "CM"), "type", limit=32)
        gid = text(args.get("gid"), "gid", limit=65536)
        url = text(args.get("url"), "url", limit=1024)
        self.ch.registry.register_caller(caller, gid, url, kind)
        return True


__all__ = ["PG_API_VERSION", "PG_CH_PATH", "PG_SA_PATH", "PgApi"]
