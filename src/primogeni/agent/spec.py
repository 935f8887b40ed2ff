"""What an agent is told: sliver, link and event specifications (pure data, JSON-safe).

The AM's :class:`~primogeni.am.agent_driver.AgentDriver` turns its sliver plans into these and
sends them over the agent channel (XML-RPC structs); the agent stores them as its desired state
and reconciles the kernel toward them. Every field is a plain value so a spec round-trips through
XML-RPC and JSON unchanged: ``Spec.from_dict(spec.to_dict()) == spec``.

Names are the AM's: ``urn`` is the sliver URN, ``slice_urn`` the slice's. Kernel names are the
agent's business (derived from ``slot``, see ``docs/SUBSTRATE.md``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Self

from primogeni.errors import EmuError

SPEC_VERSION = 1


class SpecError(EmuError, ValueError):
    """A spec from the AM (or a vsys request) is malformed: names the field."""


class _Spec:
    """The wire form shared by the specs: :meth:`to_dict` and :meth:`from_dict` (which checks the
    field names, lets the subclass's ``_coerce`` turn lists back into tuples, and reports a
    malformed struct as :class:`SpecError` naming the kind)."""

    _kind: ClassVar[str] = ""  # "sliver" | "link" | "event", for messages
    __dataclass_fields__: ClassVar[dict[str, Any]]  # each subclass is a dataclass

    def to_dict(self) -> dict[str, Any]:
        plain: dict[str, Any] = _plain(asdict(self))
        return plain

    @staticmethod
    def _coerce(raw: dict[str, Any]) -> None:
        """Turn the plain values of ``raw`` (in place) into the field types."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        try:
            raw = _known(cls, data)
            cls._coerce(raw)
            return cls(**raw)
        except SpecError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise SpecError(f"malformed {cls._kind} spec: {exc!r}") from exc


@dataclass(frozen=True)
class IfaceSpec:
    """One experimental interface of a sliver (a veth; ``name`` inside the sliver, e.g. ``eth1``)."""

    name: str
    mac: str
    address: str | None = None  # "10.16.0.2/24" (IPv4 interface), or None for an unaddressed one
    link: str | None = None  # URN of the link sliver it joins


@dataclass(frozen=True)
class LoginSpec:
    user: str  # login name inside the sliver
    keys: tuple[str, ...] = ()  # OpenSSH public keys


@dataclass(frozen=True)
class SliverSpec(_Spec):
    """A container on this physical node."""

    _kind = "sliver"

    urn: str
    slice_urn: str
    hostname: str  # the sliver's client_id, also its hostname (UTS namespace)
    slot: int  # the first slot the AM gave it on this node; unique on the node, names kernel objects
    ports: tuple[int, int]  # the sliver's control port range [lo, hi] inclusive; ssh answers on lo
    interfaces: tuple[IfaceSpec, ...] = ()
    logins: tuple[LoginSpec, ...] = ()
    hosts: tuple[tuple[str, str], ...] = ()  # (hostname, address) of the slice's hosts, for /etc/hosts
    cpu_percent: int = 0  # CPU limit as a percentage of one core (0 = no limit)
    memory_mb: int = 0  # memory limit (0 = no limit)
    vsys_keys: tuple[int, ...] = ()  # tunnel keys (VNIs) this slice may use through vsys setup-link
    vsys_peers: tuple[str, ...] = ()  # underlay addresses of the physical nodes holding this slice
    kind: str = "emulated-host"  # the sliver type
    routes: tuple[tuple[str, str], ...] = ()  # (destination "10.0.0.0/16", gateway "10.0.1.1") set in the sliver
    # a simulator sliver: the model it runs in real time, and which emulated host of it each of
    # its interfaces carries ((host path "top:h1", interface name "eth1"))
    model_format: str = ""  # "dml" | "python" ("": no model)
    model: str = ""
    attach: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.urn or not self.slice_urn:
            raise SpecError("a sliver spec needs urn and slice_urn")
        self._check_sim()
        if not _is_hostname(self.hostname):
            raise SpecError(f"sliver {self.urn}: hostname {self.hostname!r} is not a valid host name")
        if not 0 <= self.slot < 100000:
            raise SpecError(f"sliver {self.urn}: slot {self.slot} is out of range")
        lo, hi = self.ports
        if not 1024 <= lo <= hi <= 65535:
            raise SpecError(f"sliver {self.urn}: port range {lo}-{hi} is not within 1024-65535")
        if len(self.interfaces) > 15:
            raise SpecError(f"sliver {self.urn}: at most 15 experimental interfaces")
        names = [i.name for i in self.interfaces]
        if len(set(names)) != len(names):
            raise SpecError(f"sliver {self.urn}: interface names repeat: {names}")
        for iface in self.interfaces:
            if not iface.name or len(iface.name) > 15 or "/" in iface.name or iface.name in ("lo", "ctl0"):
                raise SpecError(f"sliver {self.urn}: bad interface name {iface.name!r}")
            if iface.address is not None:
                try:
                    ipaddress.IPv4Interface(iface.address)
                except ValueError as exc:
                    raise SpecError(f"sliver {self.urn}: interface {iface.name}: {exc}") from exc
        for login in self.logins:
            if not _is_username(login.user):
                raise SpecError(f"sliver {self.urn}: login name {login.user!r} is not a valid user name")
        for dst, via in self.routes:
            try:
                ipaddress.IPv4Network(dst)
                ipaddress.IPv4Address(via)
            except ValueError as exc:
                raise SpecError(f"sliver {self.urn}: route to {dst} via {via}: {exc}") from exc

    def _check_sim(self) -> None:
        if self.model_format not in ("", "dml", "python"):
            raise SpecError(f"sliver {self.urn}: model format {self.model_format!r} is not dml or python")
        if (self.model_format == "") != (self.model == "") or (self.attach and not self.model):
            raise SpecError(f"sliver {self.urn}: a model needs its format, and attachments need a model")
        if self.model and self.kind != "simulator":
            raise SpecError(f"sliver {self.urn}: only a simulator sliver runs a model, not a {self.kind}")
        names = {i.name for i in self.interfaces}
        for path, ifname in self.attach:
            if not path or ifname not in names:
                raise SpecError(f"sliver {self.urn}: attachment {path!r} names no interface of it ({ifname!r})")

    @staticmethod
    def _coerce(raw: dict[str, Any]) -> None:
        raw["ports"] = tuple(raw["ports"])
        raw["interfaces"] = tuple(IfaceSpec(**_known(IfaceSpec, i)) for i in raw.get("interfaces", ()))
        raw["logins"] = tuple(LoginSpec(g["user"], tuple(g.get("keys", ()))) for g in raw.get("logins", ()))
        raw["hosts"] = tuple((str(h), str(a)) for h, a in raw.get("hosts", ()))
        raw["vsys_keys"] = tuple(int(k) for k in raw.get("vsys_keys", ()))
        raw["vsys_peers"] = tuple(str(p) for p in raw.get("vsys_peers", ()))
        raw["routes"] = tuple((str(d), str(v)) for d, v in raw.get("routes", ()))
        raw["attach"] = tuple((str(p), str(i)) for p, i in raw.get("attach", ()))


@dataclass(frozen=True)
class LinkSpec(_Spec):
    """A virtual link or LAN as seen by one physical node: its local members and the remote nodes.

    The agent makes a bridge for it, attaches the members' host-side veths, and, when ``remotes``
    is not empty, a tunnel (VXLAN id ``vni``) with head-end replication to every remote.
    """

    _kind = "link"

    urn: str
    slice_urn: str
    vni: int
    members: tuple[tuple[str, str], ...]  # (sliver URN, interface name inside that sliver) on this node
    remotes: tuple[str, ...] = ()  # underlay addresses of the other physical nodes on this link
    capacity_kbps: int = 0  # 0 = not shaped
    latency_ms: float = 0.0
    packet_loss: float = 0.0
    tunnel: str = "vxlan"  # "vxlan" or "gretap"

    def __post_init__(self) -> None:
        if not 1 <= self.vni < (1 << 24):
            raise SpecError(f"link {self.urn}: tunnel id {self.vni} is not a 24-bit VNI")
        if self.tunnel not in ("vxlan", "gretap"):
            raise SpecError(f"link {self.urn}: unknown tunnel kind {self.tunnel!r}")
        for remote in self.remotes:
            try:
                ipaddress.IPv4Address(remote)
            except ValueError as exc:
                raise SpecError(f"link {self.urn}: remote {remote!r}: {exc}") from exc
        if self.capacity_kbps < 0 or self.latency_ms < 0 or not 0 <= self.packet_loss <= 1:
            raise SpecError(f"link {self.urn}: capacity, latency and loss must be ≥ 0 (loss ≤ 1)")

    @staticmethod
    def _coerce(raw: dict[str, Any]) -> None:
        raw["members"] = tuple((str(s), str(i)) for s, i in raw.get("members", ()))
        raw["remotes"] = tuple(str(r) for r in raw.get("remotes", ()))


EVENT_ACTIONS = {"link": ("down", "up"), "host": ("start", "stop", "reboot")}


@dataclass(frozen=True)
class EventSpec(_Spec):
    """An Emulab-style event: ``link L down|up``, ``host H start|stop CMD``, ``host H reboot``.

    ``event_id`` is unique per AM and makes delivery idempotent: an agent applies an id at most
    once, however often the AM retries. ``at`` is a UNIX time in seconds (0 = now).
    """

    _kind = "event"

    event_id: int
    slice_urn: str
    target_kind: str  # "link" | "host"
    target: str  # sliver URN of the link or host
    action: str
    command: tuple[str, ...] = ()  # argv for host start/stop
    at: float = 0.0

    def __post_init__(self) -> None:
        actions = EVENT_ACTIONS.get(self.target_kind)
        if actions is None:
            raise SpecError(f"event {self.event_id}: target kind {self.target_kind!r} is not link or host")
        if self.action not in actions:
            raise SpecError(f"event {self.event_id}: {self.target_kind} events are {', '.join(actions)}, "
                            f"not {self.action!r}")
        if self.action in ("start", "stop") and not self.command:
            raise SpecError(f"event {self.event_id}: host {self.action} needs a command")

    @staticmethod
    def _coerce(raw: dict[str, Any]) -> None:
        raw["command"] = tuple(str(c) for c in raw.get("command", ()))
        raw["event_id"] = int(raw["event_id"])
        raw["at"] = float(raw.get("at", 0.0))


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise SpecError(f"{cls.__name__}: expected a struct, got {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise SpecError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
    return dict(data)


def _plain(value: Any) -> Any:
    """Tuples → lists, drop ``None`` (XML-RPC has no nil by default): JSON- and XML-RPC-safe."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _is_hostname(name: str) -> bool:
    return 0 < len(name) <= 63 and all(c.isalnum() or c == "-" for c in name) and not name.startswith("-")


def _is_username(name: str) -> bool:
    return (0 < len(name) <= 32 and name[0].isalpha() and name == name.lower()
            and all(c.isascii() and (c.isalnum() or c in "-_") for c in name))


__all__ = ["EVENT_ACTIONS", "SPEC_VERSION", "EventSpec", "IfaceSpec", "LinkSpec", "LoginSpec", "SliverSpec",
           "SpecError"]
