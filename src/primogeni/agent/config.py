"""The node agent's configuration: one TOML file per physical node (``primo agent --config FILE``).

:class:`AgentConfig` is a frozen value checked on construction; :meth:`AgentConfig.load` reads the
file (relative paths are taken from the file's directory) and :meth:`AgentConfig.to_toml` writes
one back, so ``AgentConfig.load(f)`` of ``to_toml()`` gives the same value. Example::

    node = "pc1"
    kind = "shared"                      # or "cluster"
    state_dir = "/var/lib/primo/agent/pc1"
    cert = "agent.pem"                   # the agent's identity (…+node+pc1), issued by a trusted root
    key = "agent.key"
    trust_dir = "trusted_roots"          # *.pem: roots whose members may call the agent
    listen_host = "10.254.0.11"
    listen_port = 12400
    underlay_dev = "primo-ul"
    underlay_ip = "10.254.0.11"
    registry_url = "https://10.254.0.1:12369/primo/registry/1"
    am_urn = "urn:publicid:IDN+primo+authority+cm"
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
import urllib.parse
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

from primogeni.errors import PrimoError
from primogeni.geni.errors import UrnError
from primogeni.geni.urn import Urn

#: The path the agent serves its XML-RPC API on.
AGENT_PATH = "/primo/agent/1"
KINDS = ("shared", "cluster")
# The node name becomes part of kernel object names (namespace primo-<node>-<slot>, cgroup <node>-<slot>).
_NODE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


class ConfigError(PrimoError, ValueError):
    """The agent's configuration is wrong: names the file (when there is one) and the setting."""


@dataclass(frozen=True)
class AgentConfig:
    """Everything ``primo agent`` needs to run on one physical node (see the module docstring)."""

    node: str
    kind: str  # "shared" (a wide-area node: one sliver per slice) or "cluster"
    state_dir: Path
    cert: Path
    key: Path
    trust_dir: Path
    listen_host: str
    listen_port: int  # 0 picks a free port (tests); the registered URL then carries the bound one
    underlay_dev: str
    underlay_ip: str
    registry_url: str | None = None  # the AM's https://…/primo/registry/1; None = do not register
    am_urn: str | None = None  # the only caller allowed; None = any …+authority+cm from a trusted root
    advertise_url: str | None = None  # the URL the AM should call; default https://<underlay_ip>:<port>/primo/agent/1
    ctl_subnet: str = "172.30.0.0/16"
    experimental_pool: str = "10.0.0.0/8"
    capacity: int = 8  # slots
    register_interval: float = 30.0  # seconds between registrations (the heartbeat)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("state_dir", "cert", "key", "trust_dir") and not isinstance(value, Path):
                object.__setattr__(self, f.name, Path(value))
        if not isinstance(self.node, str) or not _NODE_RE.match(self.node):
            raise ConfigError(f"node {self.node!r} must be 1-32 of a-z, 0-9 and '-', starting with a letter or digit")
        if self.kind not in KINDS:
            raise ConfigError(f"kind {self.kind!r} must be one of {', '.join(KINDS)}")
        if not isinstance(self.listen_host, str) or not self.listen_host:
            raise ConfigError("listen_host must be a host name or address")
        if isinstance(self.listen_port, bool) or not isinstance(self.listen_port, int) \
                or not 0 <= self.listen_port <= 65535:
            raise ConfigError(f"listen_port {self.listen_port!r} must be an integer in 0-65535")
        if not isinstance(self.underlay_dev, str) or not _IFNAME_RE.match(self.underlay_dev):
            raise ConfigError(f"underlay_dev {self.underlay_dev!r} is not an interface name (≤ 15 characters)")
        try:
            ipaddress.IPv4Address(self.underlay_ip)
        except ValueError as exc:
            raise ConfigError(f"underlay_ip: {exc}") from None
        for name in ("ctl_subnet", "experimental_pool"):
            try:
                ipaddress.IPv4Network(getattr(self, name))
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc}") from None
        if ipaddress.IPv4Network(self.ctl_subnet).overlaps(ipaddress.IPv4Network(self.experimental_pool)):
            raise ConfigError(f"ctl_subnet {self.ctl_subnet} overlaps experimental_pool {self.experimental_pool}")
        for name in ("registry_url", "advertise_url"):
            value = getattr(self, name)
            if value is not None:
                _check_https(name, value)
        if self.am_urn is not None:
            try:
                Urn.parse(self.am_urn)
            except UrnError as exc:
                raise ConfigError(f"am_urn: {exc.reason}") from None
        if isinstance(self.capacity, bool) or not isinstance(self.capacity, int) or self.capacity < 1:
            raise ConfigError(f"capacity {self.capacity!r} must be a positive integer (slots)")
        if isinstance(self.register_interval, bool) or not isinstance(self.register_interval, int | float) \
                or not self.register_interval > 0:
            raise ConfigError(f"register_interval {self.register_interval!r} must be a positive number of seconds")

    def url(self, port: int | None = None) -> str:
        """The URL the AM should call: ``advertise_url``, else ``https://<underlay_ip>:<port>/primo/agent/1``.

        ``port`` is the port actually bound (it matters when ``listen_port`` is 0).
        """
        if self.advertise_url is not None:
            return self.advertise_url
        return f"https://{self.underlay_ip}:{self.listen_port if port is None else port}{AGENT_PATH}"

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: Path | None = None) -> AgentConfig:
        """From a TOML/JSON table; relative paths are taken from ``base`` (else the working directory)."""
        names = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError(f"unknown settings {unknown}")
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [n for n in required if n not in data]
        if missing:
            raise ConfigError(f"missing settings {missing}")
        values = dict(data)
        for name in ("node", "kind", "listen_host", "underlay_dev", "underlay_ip", "registry_url", "am_urn",
                     "advertise_url", "ctl_subnet", "experimental_pool", "state_dir", "cert", "key", "trust_dir"):
            if name in values and not isinstance(values[name], str):
                raise ConfigError(f"{name} must be a string, not {type(values[name]).__name__}")
        for name in ("state_dir", "cert", "key", "trust_dir"):
            path = Path(values[name]).expanduser()
            if not path.is_absolute():
                path = (base or Path.cwd()) / path
            values[name] = path
        return cls(**values)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AgentConfig:
        """Read a TOML file; :class:`ConfigError` naming the file and what is wrong."""
        file = Path(path)
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{file}: {exc}") from None
        try:
            return cls.from_dict(data, base=file.resolve().parent)
        except ConfigError as exc:
            raise ConfigError(f"{file}: {exc}") from None

    def to_toml(self) -> str:
        """The TOML text of this configuration (absolute paths; unset optional settings left out)."""
        lines = [f"# PrimoGENI node agent {self.node}"]
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, Path):
                value = str(value.absolute())
            lines.append(f"{f.name} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_toml` to ``path``."""
        file = Path(path)
        file.write_text(self.to_toml(), encoding="utf-8")
        return file


def _check_https(name: str, url: str) -> None:
    if not isinstance(url, str):
        raise ConfigError(f"{name} must be a string")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError as exc:
        raise ConfigError(f"{name} {url!r}: {exc}") from None
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(f"{name} {url!r} must be an https:// URL with a host")


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value)).replace("\x7f", "\\u007f")  # JSON strings are TOML basic strings


__all__ = ["AGENT_PATH", "KINDS", "AgentConfig", "ConfigError"]
