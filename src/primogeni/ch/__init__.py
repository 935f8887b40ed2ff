"""The clearinghouse: member authority, slice authority (projects and experiments), aggregate registry.

* :mod:`~primogeni.ch.authority` — the data directory of a local authority
  (:func:`init_authority`, :class:`Authority`) and :class:`Clearinghouse`, the state the service
  and the administrator's commands share (:func:`add_member`, :func:`list_members`,
  :func:`register_aggregate`);
* :mod:`~primogeni.ch.members`, :mod:`~primogeni.ch.projects` and :mod:`~primogeni.ch.slices`
  (the slice authority), :mod:`~primogeni.ch.registry` — the authorities' policy and durable
  state (tables in :mod:`~primogeni.ch.models`);
* :mod:`~primogeni.ch.api_chapi` and :mod:`~primogeni.ch.api_pg` — the Common Federation API v2
  and the ProtoGENI SA/CH on the wire (shared plumbing in :mod:`~primogeni.ch.calls`);
* :mod:`~primogeni.ch.service` — :class:`ChService`, the HTTPS server carrying them all.
"""

from primogeni.ch.authority import (
    Authority,
    Clearinghouse,
    add_member,
    init_authority,
    list_aggregates,
    list_members,
    register_aggregate,
)
from primogeni.ch.members import Member, MemberAuthority, SshKey, parse_ssh_public_key
from primogeni.ch.projects import ProjectAuthority
from primogeni.ch.registry import AGGREGATE_MANAGER, Aggregate, Registry
from primogeni.ch.service import PATHS, ChService
from primogeni.ch.slices import PROJECT_ROLES, SLICE_ROLES, Membership, Project, Slice, SliceAuthority

__all__ = [
    "AGGREGATE_MANAGER",
    "PATHS",
    "PROJECT_ROLES",
    "SLICE_ROLES",
    "Aggregate",
    "Authority",
    "ChService",
    "Clearinghouse",
    "Member",
    "MemberAuthority",
    "Membership",
    "Project",
    "ProjectAuthority",
    "Registry",
    "Slice",
    "SliceAuthority",
    "SshKey",
    "add_member",
    "init_authority",
    "list_aggregates",
    "list_members",
    "parse_ssh_public_key",
    "register_aggregate",
]
