"""The Common Federation API v2 (the "CHAPI" of omni's ``chapi`` framework and geni-lib's ``chapi2``).

Three services, each a route of the clearinghouse's HTTPS server:

* **CH** (``/CH``): ``get_version``, ``lookup("SERVICE", [], {match, filter})`` listing our MA,
  SA and the registered aggregates, the v1 aliases ``lookup_aggregates``,
  ``lookup_member_authorities``, ``lookup_slice_authorities``, and ``get_trust_roots``;
* **MA** (``/MA``): ``get_version``, ``get_credentials(member_urn, creds, options)``,
  ``lookup("MEMBER"|"KEY", creds, options)``, ``create("KEY", creds, {fields})``,
  ``delete("KEY", key_id, creds, options)``;
* **SA** (``/SA``): ``get_version``, ``create("SLICE"|"PROJECT", creds, {fields})``,
  ``lookup(type, creds, {match, filter})``, ``update(type, urn, creds, {fields})``,
  ``get_credentials(slice_urn, creds, options)``, ``lookup_members(type, urn, creds, options)``,
  ``lookup_for_member(type, member_urn, creds, options)``, ``modify_membership(type, urn, creds,
  {members_to_add, members_to_remove, members_to_change})``.

Shapes follow what the clients read: ``lookup`` of MEMBER, KEY, SLICE and PROJECT answers a
struct keyed by URN (KEY: by ``KEY_ID``), ``lookup("SERVICE")`` a list; ``lookup_members`` and
``lookup_for_member`` lists; ``get_credentials`` ``[{geni_type: "geni_sfa", geni_version: "3",
geni_value}]``. Times go out as RFC 3339 strings and come in as any RFC 3339 / ISO 8601 time.

Every call but ``get_version``, ``lookup("SERVICE")`` and the MA's ``get_credentials`` for the
caller itself needs a valid user credential owned by the caller (calls on one slice also accept
a credential for that slice). Policy (who may do what) lives in the authorities.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import serialization

import primogeni
from primogeni.ch.authority import Clearinghouse
from primogeni.ch.calls import (
    Authenticator,
    ChRoute,
    arity,
    boolean,
    credential_texts,
    filtered,
    parse_time,
    rfc3339,
    struct,
    text,
    urn_arg,
)
from primogeni.ch.members import Member, SshKey
from primogeni.ch.registry import AGGREGATE_MANAGER, Aggregate
from primogeni.ch.slices import Project, Slice
from primogeni.geni.cert import Gid
from primogeni.geni.codes import GeniCode
from primogeni.geni.cred import Credential
from primogeni.geni.errors import GeniError
from primogeni.geni.urn import Urn

CH_PATH = "/CH"
MA_PATH = "/MA"
SA_PATH = "/SA"
API_VERSION = "2"
CREDENTIAL_TYPES = [{"type": "geni_sfa", "version": "3"}]
_IMPLEMENTATION = {"code_tag": primogeni.__version__, "code_url": "https://github.com/primogeni", "name": "PrimoGENI"}

_SERVICE_FIELDS = ("SERVICE_URN", "SERVICE_URL", "SERVICE_TYPE", "SERVICE_NAME")
_MEMBER_FIELDS = ("MEMBER_URN", "MEMBER_UID", "MEMBER_USERNAME", "MEMBER_EMAIL", "MEMBER_LASTNAME")
_KEY_FIELDS = ("KEY_MEMBER", "KEY_ID")
_SLICE_MATCH = ("SLICE_URN", "SLICE_UID", "SLICE_NAME", "SLICE_PROJECT_URN", "SLICE_EXPIRED")
_PROJECT_MATCH = ("PROJECT_URN", "PROJECT_UID", "PROJECT_NAME", "PROJECT_EXPIRED")
_SUPPLEMENTARY = {
    "_GENI_SLICE_OWNER": {"OBJECT": "SLICE", "TYPE": "URN", "CREATE": "NOT ALLOWED", "UPDATE": False, "MATCH": False},
    "_GENI_PROJECT_LEAD": {
        "OBJECT": "PROJECT",
        "TYPE": "URN",
        "CREATE": "NOT ALLOWED",
        "UPDATE": False,
        "MATCH": False,
    },
}


def _values(value: object, what: str) -> list[str]:
    """A match value: one string or a list of strings."""
    items = value if isinstance(value, list | tuple) else [value]
    if not items or not all(isinstance(v, str) for v in items):
        raise GeniError(GeniCode.BADARGS, f"match value for {what} must be a string or a list of strings")
    return [str(v) for v in items]


def _query(options: dict[str, Any], allowed: Sequence[str]) -> tuple[dict[str, Any], list[str] | None]:
    """``(match, filter)`` of a lookup's options; BADARGS for a field we cannot match on."""
    match = struct(options.get("match"), "options.match")
    for key in match:
        if key not in allowed:
            raise GeniError(GeniCode.BADARGS, f"cannot match on {key!r} (one of {', '.join(allowed)})")
    fields = options.get("filter")
    if fields is not None and (not isinstance(fields, list) or not all(isinstance(f, str) for f in fields)):
        raise GeniError(GeniCode.BADARGS, "options.filter must be a list of field names")
    return match, fields


def _fields(options: dict[str, Any], allowed: Sequence[str], required: Sequence[str] = ()) -> dict[str, Any]:
    """The ``fields`` of a create or update; BADARGS for an unknown or missing field."""
    fields = struct(options.get("fields"), "options.fields")
    for key in fields:
        if key not in allowed:
            raise GeniError(GeniCode.BADARGS, f"field {key!r} cannot be set here (one of {', '.join(allowed)})")
    for key in required:
        if key not in fields:
            raise GeniError(GeniCode.BADARGS, f"field {key} is required")
    return fields


def _kind(value: object, allowed: Sequence[str]) -> str:
    kind = text(value, "object type", limit=64).upper()
    if kind not in allowed:
        raise GeniError(
            GeniCode.UNSUPPORTED, f"object type {kind!r} is not supported here (one of {', '.join(allowed)})"
        )
    return kind


def member_record(m: Member) -> dict[str, Any]:
    return {
        "MEMBER_URN": str(m.urn),
        "MEMBER_UID": m.uuid,
        "MEMBER_USERNAME": m.username,
        "MEMBER_EMAIL": m.email,
        "MEMBER_FIRSTNAME": m.first_name,
        "MEMBER_LASTNAME": m.last_name,
    }


def key_record(k: SshKey) -> dict[str, Any]:
    return {
        "KEY_ID": str(k.id),
        "KEY_MEMBER": str(k.member_urn),
        "KEY_TYPE": k.key_type,
        "KEY_PUBLIC": k.public_key,
        "KEY_DESCRIPTION": k.description,
    }


def slice_record(s: Slice, now: datetime) -> dict[str, Any]:
    return {
        "SLICE_URN": str(s.urn),
        "SLICE_UID": s.uuid,
        "SLICE_NAME": s.name,
        "SLICE_PROJECT_URN": str(s.project_urn),
        "SLICE_DESCRIPTION": s.description,
        "SLICE_CREATION": rfc3339(s.created),
        "SLICE_EXPIRATION": rfc3339(s.expires),
        "SLICE_EXPIRED": s.expired(now),
        "_GENI_SLICE_OWNER": str(s.owner_urn),
    }


def project_record(p: Project, now: datetime) -> dict[str, Any]:
    return {
        "PROJECT_URN": str(p.urn),
        "PROJECT_UID": p.uuid,
        "PROJECT_NAME": p.name,
        "PROJECT_DESCRIPTION": p.description,
        "PROJECT_CREATION": rfc3339(p.created),
        "PROJECT_EXPIRATION": rfc3339(p.expires),
        "PROJECT_EXPIRED": p.expired(now),
        "_GENI_PROJECT_LEAD": str(p.lead_urn),
    }


def credential_list(cred: Credential) -> list[dict[str, str]]:
    return [{"geni_type": "geni_sfa", "geni_version": "3", "geni_value": cred.xml}]


class ChapiApi:
    """The three Federation API services over one :class:`Clearinghouse`.

    ``url_of(path)`` gives the public URL of one of our routes (known once the server is bound).
    """

    def __init__(self, ch: Clearinghouse, auth: Authenticator, url_of: Callable[[str], str]):
        self.ch = ch
        self.auth = auth
        self.url_of = url_of
        a = ch.authority
        self._ma_urn = Urn(a.name, "authority", "ma")
        self._sa_urn = Urn(a.name, "authority", "sa")

    def routes(self) -> dict[str, ChRoute]:
        """``{path: route}`` for the CH, MA and SA services."""
        return {
            CH_PATH: ChRoute(
                {
                    "get_version": self.ch_get_version,
                    "lookup": self.ch_lookup,
                    "lookup_aggregates": self.ch_lookup_aggregates,
                    "lookup_member_authorities": self.ch_lookup_member_authorities,
                    "lookup_slice_authorities": self.ch_lookup_slice_authorities,
                    "get_trust_roots": self.ch_get_trust_roots,
                }
            ),
            MA_PATH: ChRoute(
                {
                    "get_version": self.ma_get_version,
                    "get_credentials": self.ma_get_credentials,
                    "lookup": self.ma_lookup,
                    "create": self.ma_create,
                    "delete": self.ma_delete,
                }
            ),
            SA_PATH: ChRoute(
                {
                    "get_version": self.sa_get_version,
                    "create": self.sa_create,
                    "lookup": self.sa_lookup,
                    "update": self.sa_update,
                    "get_credentials": self.sa_get_credentials,
                    "lookup_members": self.sa_lookup_members,
                    "lookup_for_member": self.sa_lookup_for_member,
                    "modify_membership": self.sa_modify_membership,
                }
            ),
        }

    def _version(self, urn: Urn, services: list[str], fields: dict[str, Any]) -> dict[str, Any]:
        return {
            "VERSION": API_VERSION,
            "URN": str(urn),
            "IMPLEMENTATION": dict(_IMPLEMENTATION),
            "SERVICES": services,
            "CREDENTIAL_TYPES": list(CREDENTIAL_TYPES),
            "ROLES": ["LEAD", "ADMIN", "MEMBER", "OPERATOR", "AUDITOR"],
            "FIELDS": fields,
        }

    # -- CH --------------------------------------------------------------------------------------

    def ch_get_version(self, params: tuple[Any, ...], caller: Gid) -> object:
        arity(params, 0, 1, usage="get_version([options])")
        version = self._version(self.ch.authority.ch_urn, ["SERVICE"], {})
        version["API_VERSIONS"] = {API_VERSION: self.url_of(CH_PATH)}
        return version

    def services(self) -> list[dict[str, Any]]:
        """Every service we tell clients about: our MA and SA, then the registered aggregates."""
        a = self.ch.authority
        out = [
            {
                "SERVICE_URN": str(self._ma_urn),
                "SERVICE_URL": self.url_of(MA_PATH),
                "SERVICE_CERT": a.ma.gid.pem(with_chain=False),
                "SERVICE_NAME": f"{a.name} MA",
                "SERVICE_TYPE": "MEMBER_AUTHORITY",
                "SERVICE_DESCRIPTION": f"Member authority of {a.name}",
            },
            {
                "SERVICE_URN": str(self._sa_urn),
                "SERVICE_URL": self.url_of(SA_PATH),
                "SERVICE_CERT": a.sa.gid.pem(with_chain=False),
                "SERVICE_NAME": f"{a.name} SA",
                "SERVICE_TYPE": "SLICE_AUTHORITY",
                "SERVICE_DESCRIPTION": f"Slice authority of {a.name}",
            },
        ]
        out.extend(_aggregate_service(agg) for agg in self.ch.registry.aggregates())
        return out

    def _services(self, options: dict[str, Any], service_type: str | None = None) -> list[dict[str, Any]]:
        match, fields = _query(options, _SERVICE_FIELDS)
        if service_type is not None:
            match = {**match, "SERVICE_TYPE": service_type}
        wanted = {k: set(_values(v, k)) for k, v in match.items()}
        found = [s for s in self.services() if all(s[k] in vals for k, vals in wanted.items())]
        return [filtered(s, fields) for s in found]

    def ch_lookup(self, params: tuple[Any, ...], caller: Gid) -> object:
        kind, _creds, options = arity(params, 2, 3, usage="lookup(type, credentials, options)")
        _kind(kind, ["SERVICE"])
        credential_texts(_creds)  # shape only: anyone may read the service registry
        return self._services(struct(options, "options"))

    def ch_lookup_aggregates(self, params: tuple[Any, ...], caller: Gid) -> object:
        (options,) = arity(params, 0, 1, usage="lookup_aggregates([options])")
        return self._services(struct(options, "options"), AGGREGATE_MANAGER)

    def ch_lookup_member_authorities(self, params: tuple[Any, ...], caller: Gid) -> object:
        (options,) = arity(params, 0, 1, usage="lookup_member_authorities([options])")
        return self._services(struct(options, "options"), "MEMBER_AUTHORITY")

    def ch_lookup_slice_authorities(self, params: tuple[Any, ...], caller: Gid) -> object:
        (options,) = arity(params, 0, 1, usage="lookup_slice_authorities([options])")
        return self._services(struct(options, "options"), "SLICE_AUTHORITY")

    def ch_get_trust_roots(self, params: tuple[Any, ...], caller: Gid) -> object:
        arity(params, 0, 1, usage="get_trust_roots([options])")
        return [c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in self.ch.authority.trust.roots]

    # -- MA --------------------------------------------------------------------------------------

    def ma_get_version(self, params: tuple[Any, ...], caller: Gid) -> object:
        arity(params, 0, 1, usage="get_version([options])")
        return self._version(self._ma_urn, ["MEMBER", "KEY"], {})

    def ma_get_credentials(self, params: tuple[Any, ...], caller: Gid) -> object:
        member_urn, creds, options = arity(params, 1, 3, usage="get_credentials(member_urn, credentials, options)")
        urn = urn_arg(member_urn, "member URN", "user")
        credential_texts(creds)
        struct(options, "options")
        if urn != caller.urn:
            raise GeniError(GeniCode.FORBIDDEN, f"{caller.urn} may get only its own user credential, not {urn}'s")
        return credential_list(self.ch.members.user_credential(caller))

    def ma_lookup(self, params: tuple[Any, ...], caller: Gid) -> object:
        kind, creds, options = arity(params, 3, usage="lookup(type, credentials, options)")
        kind = _kind(kind, ["MEMBER", "KEY"])
        opts = struct(options, "options")
        self.auth.member(credential_texts(creds), caller)
        if kind == "MEMBER":
            match, fields = _query(opts, _MEMBER_FIELDS)
            sel = {k: _values(v, k) for k, v in match.items()}
            members = self.ch.members.lookup(
                urns=sel.get("MEMBER_URN"),
                uids=sel.get("MEMBER_UID"),
                usernames=sel.get("MEMBER_USERNAME"),
                emails=sel.get("MEMBER_EMAIL"),
                last_names=sel.get("MEMBER_LASTNAME"),
            )
            return {str(m.urn): filtered(member_record(m), fields) for m in members}
        match, fields = _query(opts, _KEY_FIELDS)
        member_urns = _values(match["KEY_MEMBER"], "KEY_MEMBER") if "KEY_MEMBER" in match else None
        keys = self.ch.members.keys_of(member_urns)
        if "KEY_ID" in match:
            ids = set(_values(match["KEY_ID"], "KEY_ID"))
            keys = [k for k in keys if str(k.id) in ids]
        return {str(k.id): filtered(key_record(k), fields) for k in keys}

    def ma_create(self, params: tuple[Any, ...], caller: Gid) -> object:
        kind, creds, options = arity(params, 3, usage="create(type, credentials, options)")
        _kind(kind, ["KEY"])
        fields = _fields(
            struct(options, "options"), ("KEY_MEMBER", "KEY_PUBLIC", "KEY_DESCRIPTION", "KEY_TYPE"), ("KEY_PUBLIC",)
        )
        member = self.auth.member(credential_texts(creds), caller)
        owner = urn_arg(fields.get("KEY_MEMBER", str(member.urn)), "KEY_MEMBER", "user")
        if owner != member.urn:
            raise GeniError(GeniCode.FORBIDDEN, f"{member.urn} may add keys only to itself, not to {owner}")
        public = text(fields["KEY_PUBLIC"], "KEY_PUBLIC", limit=16384)
        if "KEY_TYPE" in fields and text(fields["KEY_TYPE"], "KEY_TYPE") != public.split(None, 1)[0]:
            raise GeniError(GeniCode.BADARGS, "KEY_TYPE does not match the type of KEY_PUBLIC")
        description = text(fields.get("KEY_DESCRIPTION", ""), "KEY_DESCRIPTION", limit=512)
        return key_record(self.ch.members.add_key(member.urn, public, description))

    def ma_delete(self, params: tuple[Any, ...], caller: Gid) -> object:
        kind, key_id, creds, options = arity(params, 4, usage="delete(type, key_id, credentials, options)")
        _kind(kind, ["KEY"])
        struct(options, "options")
        ident = key_id if isinstance(key_id, int) else text(key_id, "KEY_ID", limit=32)
        try:
            number = int(ident)
        except ValueError:
            raise GeniError(GeniCode.BADARGS, f"KEY_ID {key_id!r} is not a key id") from None
        member = self.auth.member(credential_texts(creds), caller)
        self.ch.members.delete_key(member.urn, number)
        return True

    # -- SA --------------------------------------------------------------------------------------

    def sa_get_version(self, params: tuple[Any, ...], caller: Gid) -> object:
        arity(params, 0, 1, usage="get_version([options])")
        return self._version(self._sa_urn, ["SLICE", "PROJECT", "SLICE_MEMBER", "PROJECT_MEMBER"], dict(_SUPPLEMENTARY))

    def sa_create(self, params: tuple[Any, ...], caller: Gid) -> object:
        kind, creds, options = arity(params, 3, usage="create(type, credentials, options)")
        kind = _kind(kind, ["SLICE", "PROJECT"])
        opts = struct(options, "options")
        sa = self.ch.slices
        if kind == "SLICE":
            fields = _fields(
                opts,
                ("SLICE_NAME", "SLICE_PROJECT_URN", "SLICE_EXPIRATION", "SLICE_DESCRIPTION"),
                ("SLICE_NAME", "SLICE_PROJECT_URN"),
            )
            name = text(fields["SLICE_NAME"], "SLICE_NAME", limit=64)
            project = urn_arg(fields["SLICE_PROJECT_URN"], "SLICE_PROJECT_URN", "project")
            expires = _optional_time(fields, "SLICE_EXPIRATION")
            description = text(fields.get("SLICE_DESCRIPTION", ""), "SLICE_DESCRIPTION")
            member = self.auth.member(credential_texts(creds), caller)
            created = sa.create_slice(member.urn, project, name, expires=expires, description=description)
            return slice_record(created, sa.now())
        fields = _fields(opts, ("PROJECT_NAME", "PROJECT_EXPIRATION", "PROJECT_DESCRIPTION"), ("PROJECT_NAME",))
        name = text(fields["PROJECT_NAME"], "PROJECT_NAME", limit=64)
        expires = _optional_time(fields, "PROJECT_EXPIRATION")
        description = text(fields.get("PROJECT_DESCRIPTION", ""), "PROJECT_DESCRIPTION")
        member = self.auth.member(credential_texts(creds), caller)
        project_ = sa.create_project(member.urn, name, expires=expires, description=description)
        return project_record(project_, sa.now())

    def sa_lookup(self, params: tuple[Any, ...], caller: Gid) -> object:
        kind, creds, options = arity(params, 3, usage="lookup(type, credentials, options)")
        kind = _kind(kind, ["SLICE", "PROJECT"])
        opts = struct(options, "options")
        sa = self.ch.slices
        if kind == "SLICE":
            match, fields = _query(opts, _SLICE_MATCH)
            member = self.auth.member(credential_texts(creds), caller)
            sel = {k: _values(v, k) for k, v in match.items() if k != "SLICE_EXPIRED"}
            expired = boolean(match["SLICE_EXPIRED"], "SLICE_EXPIRED") if "SLICE_EXPIRED" in match else None
            slices = sa.slices(
                urns=sel.get("SLICE_URN"),
                uids=sel.get("SLICE_UID"),
                names=sel.get("SLICE_NAME"),
                project_urns=sel.get("SLICE_PROJECT_URN"),
                expired=expired,
                visible_to=member.urn,
            )
            now = sa.now()
            return {str(s.urn): filtered(slice_record(s, now), fields) for s in slices}
        match, fields = _query(opts, _PROJECT_MATCH)
        self.auth.member(credential_texts(creds), caller)
        sel = {k: _values(v, k) for k, v in match.items() if k != "PROJECT_EXPIRED"}
        expired = boolean(match["PROJECT_EXPIRED"], "PROJECT_EXPIRED") if "PROJECT_EXPIRED" in match else None
        projects = sa.projects(
            urns=sel.get("PROJECT_URN"), uids=sel.get("PROJECT_UID"), names=sel.get("PROJECT_NAME"), expired=expired
        )
        now = sa.now()
        return {str(p.urn): filtered(project_record(p, now), fields) for p in projects}

    def sa_update(self, params: tuple[Any, ...], caller: Gid) -> object:
        kind, target, creds, options = arity(params, 4, usage="update(type, urn, credentials, options)")
        kind = _kind(kind, ["SLICE", "PROJECT"])
        opts = struct(options, "options")
        sa = self.ch.slices
        if kind == "SLICE":
            urn = urn_arg(target, "slice URN", "slice")
            fields = _fields(opts, ("SLICE_EXPIRATION", "SLICE_DESCRIPTION"))
            expires = _optional_time(fields, "SLICE_EXPIRATION")
            description = (
                text(fields["SLICE_DESCRIPTION"], "SLICE_DESCRIPTION") if "SLICE_DESCRIPTION" in fields else None
            )
            member = self.auth.member(credential_texts(creds), caller, slice_urn=urn, operation="renew")
            updated = sa.update_slice(member.urn, urn, expires=expires, description=description)
            return slice_record(updated, sa.now())
        urn = urn_arg(target, "project URN", "project")
        fields = _fields(opts, ("PROJECT_EXPIRATION", "PROJECT_DESCRIPTION"))
        expires = _optional_time(fields, "PROJECT_EXPIRATION")
        description = (
            text(fields["PROJECT_DESCRIPTION"], "PROJECT_DESCRIPTION") if "PROJECT_DESCRIPTION" in fields else None
        )
        member = self.auth.member(credential_texts(creds), caller)
        updated_project = sa.update_project(member.urn, urn, expires=expires, description=description)
        return project_record(updated_project, sa.now())

    def sa_get_credentials(self, params: tuple[Any, ...], caller: Gid) -> object:
        target, creds, options = arity(params, 2, 3, usage="get_credentials(slice_urn, credentials, options)")
        urn = urn_arg(target, "slice URN", "slice")
        struct(options, "options")
        member = self.auth.member(credential_texts(creds), caller, slice_urn=urn, operation="getcredential")
        return credential_list(self.ch.slices.slice_credential(member.gid, urn))

    def sa_lookup_members(self, params: tuple[Any, ...], caller: Gid) -> object:
        kind, target, creds, options = arity(params, 3, 4, usage="lookup_members(type, urn, credentials, options)")
        kind = _kind(kind, ["SLICE", "PROJECT"])
        struct(options, "options")
        sa = self.ch.slices
        if kind == "SLICE":
            urn = urn_arg(target, "slice URN", "slice")
            member = self.auth.member(credential_texts(creds), caller, slice_urn=urn)
            if sa.role_in_slice(member.urn, urn) is None:
                raise GeniError(GeniCode.FORBIDDEN, f"{member.urn} is not a member of slice {urn}")
            return [
                {"SLICE_MEMBER": str(m.member_urn), "SLICE_ROLE": m.role, "SLICE_MEMBER_UID": m.member_uuid}
                for m in sa.slice_members(urn)
            ]
        urn = urn_arg(target, "project URN", "project")
        member = self.auth.member(credential_texts(creds), caller)
        if sa.role_in_project(member.urn, urn) is None:
            raise GeniError(GeniCode.FORBIDDEN, f"{member.urn} is not a member of project {urn}")
        return [
            {"PROJECT_MEMBER": str(m.member_urn), "PROJECT_ROLE": m.role, "PROJECT_MEMBER_UID": m.member_uuid}
            for m in sa.project_members(urn)
        ]

    def sa_lookup_for_member(self, params: tuple[Any, ...], caller: Gid) -> object:
        kind, target, creds, options = arity(
            params, 3, 4, usage="lookup_for_member(type, member_urn, credentials, options)"
        )
        kind = _kind(kind, ["SLICE", "PROJECT"])
        who = urn_arg(target, "member URN", "user")
        opts = struct(options, "options")
        member = self.auth.member(credential_texts(creds), caller)
        if who != member.urn:
            raise GeniError(GeniCode.FORBIDDEN, f"{member.urn} may look up only its own slices and projects")
        sa = self.ch.slices
        now = sa.now()
        if kind == "SLICE":
            match, _ = _query(opts, ("SLICE_EXPIRED",))
            expired = boolean(match["SLICE_EXPIRED"], "SLICE_EXPIRED") if "SLICE_EXPIRED" in match else None
            return [
                {"SLICE_URN": str(s.urn), "SLICE_ROLE": role, "EXPIRED": s.expired(now)}
                for s, role in sa.slices_for_member(who)
                if expired is None or s.expired(now) == expired
            ]
        match, _ = _query(opts, ("PROJECT_EXPIRED",))
        expired = boolean(match["PROJECT_EXPIRED"], "PROJECT_EXPIRED") if "PROJECT_EXPIRED" in match else None
        return [
            {"PROJECT_URN": str(p.urn), "PROJECT_UID": p.uuid, "PROJECT_ROLE": role, "EXPIRED": p.expired(now)}
            for p, role in sa.projects_for_member(who, expired=expired)
        ]

    def sa_modify_membership(self, params: tuple[Any, ...], caller: Gid) -> object:
        kind, target, creds, options = arity(params, 4, usage="modify_membership(type, urn, credentials, options)")
        kind = _kind(kind, ["SLICE", "PROJECT"])
        opts = struct(options, "options")
        prefix = kind  # SLICE_MEMBER/SLICE_ROLE or PROJECT_MEMBER/PROJECT_ROLE
        add = _member_roles(opts.get("members_to_add"), prefix, "members_to_add")
        change = _member_roles(opts.get("members_to_change"), prefix, "members_to_change")
        remove_raw = opts.get("members_to_remove") or []
        if not isinstance(remove_raw, list):
            raise GeniError(GeniCode.BADARGS, "members_to_remove must be a list of member URNs")
        remove = [
            urn_arg(r.get(f"{prefix}_MEMBER") if isinstance(r, dict) else r, "members_to_remove entry", "user")
            for r in remove_raw
        ]
        sa = self.ch.slices
        if kind == "SLICE":
            urn = urn_arg(target, "slice URN", "slice")
            member = self.auth.member(credential_texts(creds), caller, slice_urn=urn, operation="update")
            sa.modify_slice_membership(member.urn, urn, add=add, remove=remove, change=change)
        else:
            urn = urn_arg(target, "project URN", "project")
            member = self.auth.member(credential_texts(creds), caller)
            sa.modify_project_membership(member.urn, urn, add=add, remove=remove, change=change)
        return True


def _optional_time(fields: dict[str, Any], key: str) -> datetime | None:
    return parse_time(fields[key], key) if key in fields else None


def _member_roles(value: object, prefix: str, what: str) -> list[tuple[Urn, str]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise GeniError(GeniCode.BADARGS, f"{what} must be a list of {{{prefix}_MEMBER, {prefix}_ROLE}} structs")
    out = []
    for item in value:
        entry = struct(item, f"{what} entry")
        urn = urn_arg(entry.get(f"{prefix}_MEMBER"), f"{what} {prefix}_MEMBER", "user")
        role = text(entry.get(f"{prefix}_ROLE"), f"{what} {prefix}_ROLE", limit=16).upper()
        out.append((urn, role))
    return out


def _aggregate_service(agg: Aggregate) -> dict[str, Any]:
    return {
        "SERVICE_URN": str(agg.urn),
        "SERVICE_URL": agg.url,
        "SERVICE_CERT": agg.cert_pem,
        "SERVICE_NAME": agg.name,
        "SERVICE_TYPE": AGGREGATE_MANAGER,
        "SERVICE_DESCRIPTION": agg.description,
    }


__all__ = [
    "API_VERSION",
    "CH_PATH",
    "MA_PATH",
    "SA_PATH",
    "ChapiApi",
    "credential_list",
    "key_record",
    "member_record",
    "project_record",
    "slice_record",
]
