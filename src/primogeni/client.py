"""The PrimoGENI client library: what ``primo``'s client commands (and scripts) call.

:class:`ClientConfig` is the user's side of a testbed: who they are (authority, user name,
certificate and key), whom they trust (a directory of root certificates), where the
clearinghouse and the aggregate are, and a default project. It lives in ``HOME/client.toml``,
where HOME is ``--home``, else ``$PRIMO_HOME``, else ``~/.primo``.

:class:`PrimoClient` speaks the Common Federation API v2 to the clearinghouse (MA: user
credential, SSH keys; SA: projects, slices, slice credentials) and AM API v3 to the aggregate
(GetVersion, ListResources, Allocate, Provision, PerformOperationalAction — also for events —,
Status, Describe, Renew, Delete). Servers' TLS certificates are verified against the trust directory, host name
included. The user credential and slice credentials are cached in ``HOME/creds/`` (mode 0600)
and fetched again when within :data:`REFRESH_MARGIN` of expiry or when a call fails with
CREDENTIAL_EXPIRED. A non-zero envelope code raises :class:`ClientError` (the server's code
and output); a server that cannot be reached raises :class:`ServiceUnreachable`.

Slices are named ``project/name``, or ``name`` in the default project. Times are RFC 3339.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import ipaddress
import json
import os
import ssl
import tomllib
import xmlrpc.client
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from primogeni.errors import PrimoError
from primogeni.geni.cert import Gid, TrustStore
from primogeni.geni.codes import GeniCode
from primogeni.geni.cred import Credential
from primogeni.geni.errors import CredentialError, GeniError
from primogeni.geni.rspec import NS_PRIMO, NS_RSPEC
from primogeni.geni.rspec.xmlio import parse_xml
from primogeni.geni.times import parse_rfc3339 as parse_time
from primogeni.geni.times import rfc3339, utcnow
from primogeni.geni.urn import Urn, check_project_name, slice_urn
from primogeni.rpc import client as rpc_client

CONFIG_FILE = "client.toml"
#: A cached credential is fetched again when it expires sooner than this.
REFRESH_MARGIN = timedelta(hours=1)
GENI3 = {"type": "GENI", "version": "3"}
PG_CH_PATH = "/protogeni/xmlrpc/ch"
_SFA = {"geni_type": "geni_sfa", "geni_version": "3"}
T = TypeVar("T")


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    """``home``, else ``$PRIMO_HOME``, else ``~/.primo``."""
    if home is not None:
        return Path(home).expanduser()
    return Path(os.environ.get("PRIMO_HOME") or "~/.primo").expanduser()


# -- errors ------------------------------------------------------------------------------------


class ClientError(GeniError):
    """A server answered with a non-zero code: ``code`` (``raw_code`` if it is not a GeniCode),
    the server's ``output``, and the ``method`` called."""

    def __init__(self, code: int, output: str, *, method: str = ""):
        self.raw_code = int(code)
        self.output = output
        self.method = method
        known = self.raw_code in GeniCode._value2member_map_
        super().__init__(self.raw_code if known else GeniCode.ERROR, output if known else f"(code {code}) {output}")


class ClientConfigError(PrimoError, ValueError):
    """The client configuration is missing or wrong, or a name cannot be resolved with it."""


class ServiceUnreachable(PrimoError, ConnectionError):
    """A service could not be reached (refused, timed out, TLS failure): ``url`` and ``reason``."""

    def __init__(self, url: str, reason: str):
        self.url = url
        self.reason = reason
        super().__init__(f"cannot reach {url}: {reason}")


# -- configuration -----------------------------------------------------------------------------


def _toml_string(value: str) -> str:
    return json.dumps(value).replace("\x7f", "\\u007f")  # JSON strings are TOML basic strings


@dataclass(frozen=True)
class ClientConfig:
    """The user's configuration (``HOME/client.toml``); paths are absolute once loaded."""

    home: Path
    authority: str
    user: str
    cert: Path
    key: Path
    trust_dir: Path
    ch_url: str  # base URL of the clearinghouse: https://host:port
    am_url: str  # AM API v3 URL of the aggregate
    project: str | None = None

    @property
    def path(self) -> Path:
        return self.home / CONFIG_FILE

    @property
    def user_urn(self) -> Urn:
        return Urn(self.authority, "user", self.user)

    @property
    def creds_dir(self) -> Path:
        return self.home / "creds"

    def replace(self, **changes: Any) -> ClientConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def load(cls, home: str | os.PathLike[str] | None = None) -> ClientConfig:
        """Read ``HOME/client.toml``; ClientConfigError naming the file and what is wrong."""
        h = resolve_home(home)
        path = h / CONFIG_FILE
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ClientConfigError(f"{path} does not exist: run `primo init --home {h}` first") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ClientConfigError(f"{path}: {e}") from None
        required = ("authority", "user", "cert", "key", "trust_dir", "ch_url", "am_url")
        values: dict[str, Any] = {}
        for name in (*required, "project"):
            if name not in data:
                if name in required:
                    raise ClientConfigError(f"{path}: {name} is missing")
                continue
            if not isinstance(data[name], str):
                raise ClientConfigError(f"{path}: {name} must be a string")
            values[name] = data[name]
        for name in ("cert", "key", "trust_dir"):
            p = Path(values[name]).expanduser()
            values[name] = p if p.is_absolute() else h / p
        return cls(home=h, **values)

    def save(self) -> Path:
        """Write ``HOME/client.toml`` (paths inside HOME are written relative to it)."""

        def rel(p: Path) -> str:
            try:
                return str(p.relative_to(self.home))
            except ValueError:
                return str(p)

        lines = ["# PrimoGENI client configuration (primo init writes it; edit freely)"]
        for name, value in (("authority", self.authority), ("user", self.user), ("cert", rel(self.cert)),
                            ("key", rel(self.key)), ("trust_dir", rel(self.trust_dir)), ("ch_url", self.ch_url),
                            ("am_url", self.am_url), ("project", self.project)):
            if value is not None:
                lines.append(f"{name} = {_toml_string(value)}")
        self.home.mkdir(parents=True, exist_ok=True)
        self.path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return self.path


# -- RSpec summaries ---------------------------------------------------------------------------


def _rs(name: str) -> str:
    return f"{{{NS_RSPEC}}}{name}"


def advertised_nodes(xml: str) -> list[dict[str, Any]]:
    """The nodes of an advertisement: name, kind, capacity, free slots, sliver types, usage (agent's load), …"""
    nodes = []
    for node in parse_xml(xml).iter(_rs("node")):
        hardware = node.find(_rs("hardware_type"))
        capacity = node.find(f"{{{NS_PRIMO}}}capacity")
        usage = node.find(f"{{{NS_PRIMO}}}usage")
        kind = hardware.get("name", "") if hardware is not None else ""
        nodes.append({
            "name": node.get("component_name", ""),
            "component_id": node.get("component_id", ""),
            "kind": kind.removeprefix("primo-"),
            "exclusive": node.get("exclusive") == "true",
            "capacity": int(capacity.get("slots", "0")) if capacity is not None else None,
            "available": int(capacity.get("available", "0")) if capacity is not None else None,
            "sliver_types": [s.get("name", "") for s in node.findall(_rs("sliver_type"))],
            "usage": {k: float(v) for k, v in usage.attrib.items()} if usage is not None else None,
        })
    return nodes


def _address(ip: Any) -> str:
    address, netmask = ip.get("address", ""), ip.get("netmask")
    if netmask:
        try:
            return str(ipaddress.ip_interface(f"{address}/{netmask}"))
        except ValueError:
            pass
    return str(address)


def manifest_summary(xml: str) -> dict[str, list[dict[str, Any]]]:
    """The nodes (logins, interface addresses) and links of a manifest RSpec."""
    root = parse_xml(xml)
    nodes, links = [], []
    for node in root.iter(_rs("node")):
        sliver_type = node.find(_rs("sliver_type"))
        interfaces = [{"client_id": i.get("client_id", ""), "mac": i.get("mac_address", ""),
                       "addresses": [_address(ip) for ip in i.findall(_rs("ip"))]}
                      for i in node.findall(_rs("interface"))]
        logins = [{"hostname": x.get("hostname", ""), "port": int(x.get("port", "22")),
                   "username": x.get("username", "")} for x in node.iter(_rs("login"))]
        nodes.append({"client_id": node.get("client_id", ""), "sliver_id": node.get("sliver_id", ""),
                      "component_id": node.get("component_id", ""),
                      "sliver_type": sliver_type.get("name", "") if sliver_type is not None else "",
                      "interfaces": interfaces, "logins": logins})
    for link in root.iter(_rs("link")):
        links.append({"client_id": link.get("client_id", ""), "sliver_id": link.get("sliver_id", ""),
                      "vlantag": link.get("vlantag", ""),
                      "interfaces": [r.get("client_id", "") for r in link.findall(_rs("interface_ref"))]})
    return {"nodes": nodes, "links": links}


# -- the client --------------------------------------------------------------------------------


def _call(proxy: xmlrpc.client.ServerProxy, url: str, method: str, *args: Any) -> Any:
    """Call ``method`` and unwrap the GENI envelope (AM: code struct; CH: integer code)."""
    try:
        answer = getattr(proxy, method)(*args)
    except xmlrpc.client.Fault as f:
        raise ClientError(GeniCode.RPCERROR, f"XML-RPC fault {f.faultCode}: {f.faultString}", method=method) from None
    except xmlrpc.client.ProtocolError as e:
        raise ServiceUnreachable(url, f"HTTP {e.errcode} {e.errmsg}") from None
    except ssl.SSLCertVerificationError as e:
        raise ServiceUnreachable(url, f"its TLS certificate is not trusted ({e.verify_message})") from None
    except ConnectionRefusedError:
        raise ServiceUnreachable(url, "connection refused (is the service running?)") from None
    except (OSError, http.client.HTTPException) as e:
        raise ServiceUnreachable(url, str(e) or type(e).__name__) from None
    if not isinstance(answer, dict) or "code" not in answer:
        raise ClientError(GeniCode.RPCERROR, f"{url} answered {method} without a GENI envelope", method=method)
    code = answer["code"]
    if isinstance(code, dict):
        code = code.get("geni_code", GeniCode.ERROR)
    if not isinstance(code, int):
        raise ClientError(GeniCode.RPCERROR, f"{url} answered {method} with code {code!r}", method=method)
    if code != GeniCode.SUCCESS:
        raise ClientError(code, str(answer.get("output") or ""), method=method)
    return answer.get("value")


def _shape(value: Any, kind: type[T], method: str) -> T:
    """``value`` if it is a ``kind``; else the server answered something we cannot read."""
    if not isinstance(value, kind):
        raise ClientError(GeniCode.RPCERROR, f"{method} answered a {type(value).__name__}, not a {kind.__name__}",
                          method=method)
    return value


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


class PrimoClient:
    """The clearinghouse and the aggregate of one :class:`ClientConfig`, as one user.

    Not thread-safe (one persistent connection per service); use one per thread.
    """

    def __init__(self, config: ClientConfig, *, timeout: float = 60.0,
                 clock: Callable[[], datetime] = utcnow):
        self.config = config
        self.timeout = timeout
        self.clock = clock
        self._proxies: dict[str, xmlrpc.client.ServerProxy] = {}
        self._trust: TrustStore | None = None
        self._gid: Gid | None = None

    def close(self) -> None:
        """Close the connections to the services (a later call opens them again)."""
        proxies, self._proxies = self._proxies, {}
        for proxy in proxies.values():
            proxy("close")()

    def __enter__(self) -> PrimoClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------------

    def _identity_files(self) -> tuple[Path, Path]:
        for p in (self.config.cert, self.config.key):
            if not p.is_file():
                raise ClientConfigError(f"{p} does not exist (cert/key in {self.config.path})")
        return self.config.cert, self.config.key

    @property
    def trust(self) -> TrustStore:
        if self._trust is None:
            store = TrustStore.from_dir(self.config.trust_dir)
            if not store.roots:
                raise ClientConfigError(f"no trusted root certificates (*.pem) in {self.config.trust_dir}")
            self._trust = store
        return self._trust

    @property
    def gid(self) -> Gid:
        """The user's certificate."""
        if self._gid is None:
            self._gid = Gid.from_pem(self._identity_files()[0].read_bytes())
        return self._gid

    def _rpc(self, url: str, method: str, *args: Any) -> Any:
        proxy = self._proxies.get(url)
        if proxy is None:
            cert, key = self._identity_files()
            try:
                proxy = rpc_client(url, cert=cert, key=key, trust=self.trust, timeout=self.timeout)
            except (ValueError, ssl.SSLError) as e:
                raise ClientConfigError(f"cannot use {url} with {cert}: {e}") from None
            self._proxies[url] = proxy
        return _call(proxy, url, method, *args)

    def _ch(self, service: str) -> str:
        return self.config.ch_url.rstrip("/") + f"/{service}"

    # -- credentials -------------------------------------------------------------------------

    def _cache_file(self, target: Urn | None) -> Path:
        if target is None:
            return self.config.creds_dir / f"user_{self.config.user}.xml"
        return self.config.creds_dir / f"slice_{target.project}_{target.name}.xml"

    def _cached(self, target: Urn | None) -> str | None:
        try:
            xml = self._cache_file(target).read_text(encoding="utf-8")
            cred = Credential.parse(xml)
        except (OSError, UnicodeDecodeError, CredentialError):
            return None
        wanted = self.config.user_urn if target is None else target
        if cred.target_urn != wanted or not cred.owner_gid.same_key(self.gid):
            return None
        return xml if cred.expires - self.clock() > REFRESH_MARGIN else None

    def forget(self, target: Urn | None = None) -> None:
        """Drop the cached credential for ``target`` (a slice URN; None: the user credential)."""
        self._cache_file(target).unlink(missing_ok=True)

    @staticmethod
    def _sfa_value(value: Any, method: str) -> str:
        for c in value if isinstance(value, list) else []:
            if isinstance(c, dict) and str(c.get("geni_type", "")).lower() == "geni_sfa":
                return str(c["geni_value"])
        raise ClientError(GeniCode.ERROR, "the answer holds no geni_sfa credential", method=method)

    def user_credential(self) -> str:
        """The user credential (MA ``get_credentials``), cached."""
        xml = self._cached(None)
        if xml is None:
            value = self._rpc(self._ch("MA"), "get_credentials", str(self.config.user_urn), [], {})
            xml = self._sfa_value(value, "get_credentials")
            _write_private(self._cache_file(None), xml)
        return xml

    def slice_credential(self, target: Urn) -> str:
        """A credential for slice ``target`` (SA ``get_credentials``), cached."""
        xml = self._cached(target)
        if xml is None:
            value = self._rpc(self._ch("SA"), "get_credentials", str(target), self._user_creds(), {})
            xml = self._sfa_value(value, "get_credentials")
            _write_private(self._cache_file(target), xml)
        return xml

    def _user_creds(self) -> list[dict[str, str]]:
        return [{**_SFA, "geni_value": self.user_credential()}]

    def _retrying(self, fn: Callable[[list[dict[str, str]]], T], target: Urn | None = None) -> T:
        """``fn(credentials)``, once more with fresh credentials if it fails with CREDENTIAL_EXPIRED."""

        def creds() -> list[dict[str, str]]:
            return [{**_SFA, "geni_value": self.slice_credential(target) if target else self.user_credential()}]

        try:
            return fn(creds())
        except ClientError as e:
            if e.code != GeniCode.CREDENTIAL_EXPIRED:
                raise
        self.forget(None)
        if target is not None:
            self.forget(target)
        return fn(creds())

    # -- names -------------------------------------------------------------------------------

    def slice_urn(self, name: str, project: str | None = None) -> Urn:
        """``project/name`` or ``name`` (in ``project``, else the default project) as a slice URN."""
        if "/" in name:
            in_name, name = name.split("/", 1)
            if project is not None and project != in_name:
                raise ClientConfigError(f"slice {in_name}/{name} is not in project {project!r}")
            project = in_name
        project = project or self.config.project
        if not project:
            raise ClientConfigError(f"slice {name!r} names no project: write PROJECT/{name}, give --project, "
                                    f"or set a default project in {self.config.path}")
        return slice_urn(self.config.authority, project, name)

    def project_urn(self, name: str | None = None) -> Urn:
        name = name or self.config.project
        if not name:
            raise ClientConfigError(f"no project given and no default project in {self.config.path}")
        check_project_name(name)
        return Urn(self.config.authority, "project", name)

    # -- clearinghouse -----------------------------------------------------------------------

    def aggregates(self) -> list[dict[str, Any]]:
        """The aggregates the clearinghouse knows (CH ``lookup("SERVICE")``)."""
        services = self._rpc(self._ch("CH"), "lookup", "SERVICE", [], {})
        return [s for s in services if s.get("SERVICE_TYPE") == "AGGREGATE_MANAGER"]

    def add_key(self, public_key: str, description: str = "") -> dict[str, Any]:
        fields = {"KEY_MEMBER": str(self.config.user_urn), "KEY_PUBLIC": public_key.strip(),
                  "KEY_DESCRIPTION": description}
        return self._retrying(lambda c: self._rpc(self._ch("MA"), "create", "KEY", c, {"fields": fields}))

    def keys(self) -> list[dict[str, Any]]:
        """The user's SSH public keys at the MA."""
        options = {"match": {"KEY_MEMBER": [str(self.config.user_urn)]}}
        found = self._retrying(lambda c: self._rpc(self._ch("MA"), "lookup", "KEY", c, options))
        return sorted(found.values(), key=lambda k: int(k["KEY_ID"]))

    def create_project(self, name: str, expires: datetime, description: str = "") -> dict[str, Any]:
        fields = {"PROJECT_NAME": name, "PROJECT_EXPIRATION": rfc3339(expires), "PROJECT_DESCRIPTION": description}
        return _shape(self._retrying(lambda c: self._rpc(self._ch("SA"), "create", "PROJECT", c, {"fields": fields})),
                      dict, "create")

    def projects(self) -> list[dict[str, Any]]:
        """The projects the user belongs to, with ``PROJECT_ROLE``."""
        me = str(self.config.user_urn)
        mine = self._retrying(lambda c: self._rpc(self._ch("SA"), "lookup_for_member", "PROJECT", me, c, {}))
        if not mine:
            return []
        roles = {p["PROJECT_URN"]: p["PROJECT_ROLE"] for p in mine}
        options = {"match": {"PROJECT_URN": sorted(roles)}}
        found = self._retrying(lambda c: self._rpc(self._ch("SA"), "lookup", "PROJECT", c, options))
        return [{**p, "PROJECT_ROLE": roles.get(urn, "")} for urn, p in sorted(found.items())]

    def create_slice(self, name: str, *, project: str | None = None, expires: datetime | None = None,
                     description: str = "") -> dict[str, Any]:
        urn = self.slice_urn(name, project)
        fields: dict[str, str] = {"SLICE_NAME": urn.name, "SLICE_PROJECT_URN": str(self.project_urn(urn.project)),
                                  "SLICE_DESCRIPTION": description}
        if expires is not None:
            fields["SLICE_EXPIRATION"] = rfc3339(expires)
        self.forget(urn)
        return _shape(self._retrying(lambda c: self._rpc(self._ch("SA"), "create", "SLICE", c, {"fields": fields})),
                      dict, "create")

    def renew_slice(self, name: str, expires: datetime) -> dict[str, Any]:
        urn = self.slice_urn(name)
        fields = {"SLICE_EXPIRATION": rfc3339(expires)}
        answer = self._retrying(lambda c: self._rpc(self._ch("SA"), "update", "SLICE", str(urn), c,
                                                    {"fields": fields}))
        self.forget(urn)  # slice credentials expire with the slice
        return _shape(answer, dict, "update")

    def slices(self, project: str | None = None, *, include_expired: bool = False) -> list[dict[str, Any]]:
        """The slices the user can see (in ``project`` when given), live ones unless asked."""
        match: dict[str, Any] = {} if include_expired else {"SLICE_EXPIRED": False}
        if project is not None:
            match["SLICE_PROJECT_URN"] = [str(self.project_urn(project))]
        found = self._retrying(lambda c: self._rpc(self._ch("SA"), "lookup", "SLICE", c, {"match": match}))
        return [found[u] for u in sorted(found)]

    def ssh_users(self) -> list[dict[str, Any]]:
        """``geni_users`` for Provision: the user with their SSH keys at the MA."""
        return [{"urn": str(self.config.user_urn), "keys": [k["KEY_PUBLIC"] for k in self.keys()]}]

    # -- aggregate (AM API v3) ---------------------------------------------------------------

    def get_version(self) -> dict[str, Any]:
        return _shape(self._rpc(self.config.am_url, "GetVersion", {}), dict, "GetVersion")

    def list_resources(self, *, available: bool = False) -> str:
        """The advertisement RSpec (only nodes with free slots when ``available``)."""
        options = {"geni_rspec_version": GENI3, "geni_available": available}
        return _shape(self._retrying(lambda c: self._rpc(self.config.am_url, "ListResources", c, options)), str,
                      "ListResources")

    def _am(self, target: Urn, method: str, *args: Any, urns: list[str] | None = None) -> Any:
        """An AM API v3 call on ``urns`` (default: the whole slice) with the slice credential."""
        names = urns or [str(target)]
        return self._retrying(lambda c: self._rpc(self.config.am_url, method, names, c, *args), target)

    def allocate(self, name: str, rspec: str) -> dict[str, Any]:
        urn = self.slice_urn(name)
        answer = self._retrying(lambda c: self._rpc(self.config.am_url, "Allocate", str(urn), c, rspec, {}), urn)
        return _shape(answer, dict, "Allocate")

    def provision(self, name: str, urns: list[str] | None = None) -> dict[str, Any]:
        """Provision the slice's allocated slivers, with the user's SSH keys for logins."""
        options = {"geni_rspec_version": GENI3, "geni_users": self.ssh_users()}
        return _shape(self._am(self.slice_urn(name), "Provision", options, urns=urns), dict, "Provision")

    def perform_operational_action(self, name: str, action: str, urns: list[str] | None = None,
                                   options: dict[str, Any] | None = None) -> list[Any]:
        """``geni_start``/``geni_stop``/…, or an event (``primo:link-down`` …, ``options`` primo_at, primo_command)."""
        answer = self._am(self.slice_urn(name), "PerformOperationalAction", action, options or {}, urns=urns)
        return _shape(answer, list, "PerformOperationalAction")

    def status(self, name: str) -> dict[str, Any]:
        return _shape(self._am(self.slice_urn(name), "Status", {}), dict, "Status")

    def describe(self, name: str) -> dict[str, Any]:
        return _shape(self._am(self.slice_urn(name), "Describe", {"geni_rspec_version": GENI3}), dict, "Describe")

    def renew(self, name: str, expires: datetime) -> list[Any]:
        return _shape(self._am(self.slice_urn(name), "Renew", rfc3339(expires), {}), list, "Renew")

    def delete(self, name: str, urns: list[str] | None = None) -> list[Any]:
        return _shape(self._am(self.slice_urn(name), "Delete", {}, urns=urns), list, "Delete")

    def create(self, name: str, rspec: str) -> dict[str, Any]:
        """Allocate, provision and start: ``{geni_rspec (manifest), geni_slivers}``.

        If provisioning fails, the new allocation is deleted again before the error is raised.
        """
        allocated = self.allocate(name, rspec)
        urns = [s["geni_sliver_urn"] for s in allocated["geni_slivers"]]
        try:
            provisioned = self.provision(name, urns)
        except ClientError:
            with contextlib.suppress(ClientError, ServiceUnreachable):
                self.delete(name, urns)  # else the allocation expires on its own
            raise
        started = self.perform_operational_action(name, "geni_start", urns)
        return {"geni_rspec": provisioned["geni_rspec"], "geni_slivers": started}


def register_aggregate(config: ClientConfig, cert: Path, key: Path, url: str, *, kind: str = "AM",
                       timeout: float = 30.0) -> None:
    """Register the aggregate at ``url`` with the clearinghouse of ``config`` (ProtoGENI CH
    ``Register``), authenticated with the aggregate's own certificate ``cert``/``key``."""
    ch = config.ch_url.rstrip("/") + PG_CH_PATH
    trust = TrustStore.from_dir(config.trust_dir)
    proxy = rpc_client(ch, cert=cert, key=key, trust=trust, timeout=timeout)
    try:
        _call(proxy, ch, "Register", {"gid": cert.read_text(encoding="ascii"), "url": url, "type": kind})
    finally:
        proxy("close")()


def iter_slivers(answer: Any) -> Iterator[dict[str, Any]]:
    """The sliver structs of an AM v3 answer (a struct with ``geni_slivers``, or a list)."""
    slivers = answer.get("geni_slivers", []) if isinstance(answer, dict) else answer
    for s in slivers or []:
        if isinstance(s, dict):
            yield s


__all__ = [
    "CONFIG_FILE",
    "GENI3",
    "REFRESH_MARGIN",
    "ClientConfig",
    "ClientConfigError",
    "ClientError",
    "PrimoClient",
    "ServiceUnreachable",
    "advertised_nodes",
    "iter_slivers",
    "manifest_summary",
    "parse_time",
    "register_aggregate",
    "resolve_home",
    "rfc3339",
]
