"""Helpers of the agent's RPC face (:mod:`primogeni.agent.service`): XML-RPC shapes, argument checks,
per-item failures of batch calls, the node's facts, and a simulator sliver's results as the wire carries them."""

from __future__ import annotations

import logging
import socket
import xmlrpc.client
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from primogeni.agent import monitor
from primogeni.agent.spec import LinkSpec, SliverSpec, SpecError
from primogeni.geni.errors import GeniError, need

log = logging.getLogger("primogeni.agent.service")

_INT_MAX = (1 << 31) - 1  # XML-RPC <int> is 32 bits


def xmlrpc_safe(value: Any) -> Any:
    """``value`` in XML-RPC's shapes: tuples become lists, keys strings, and integers beyond 32
    bits (byte counters, memory sizes) doubles, which are exact up to 2**53."""
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return value
    if isinstance(value, int):
        return value if -_INT_MAX - 1 <= value <= _INT_MAX else float(value)
    if isinstance(value, Mapping):
        return {str(k): xmlrpc_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [xmlrpc_safe(v) for v in value]
    return value


def node_facts(state_dir: Path, underlay_dev: str, underlay_ip: str) -> dict[str, Any]:
    """What the AM advertises about this node: CPUs, memory and disk (bytes), interfaces.

    Interfaces are those of the agent's network namespace, without loopback and without the
    ``primo…`` devices the agent made itself (the underlay device is kept).
    """
    interfaces: list[dict[str, Any]] = []
    for _index, name in socket.if_nameindex():
        if name == underlay_dev:
            interfaces.append({"name": name, "role": "underlay", "address": underlay_ip})
        elif name != "lo" and not name.startswith("primo"):
            interfaces.append({"name": name, "role": "other"})
    return {
        "cpus": monitor.cpu_count(),
        "mem_total": monitor.read_meminfo().get("MemTotal", 0),
        "disk_total": monitor.disk_usage(state_dir)[0],
        "interfaces": interfaces,
    }


_Spec = TypeVar("_Spec", SliverSpec, LinkSpec)


def _parse(kind: type[_Spec], data: object, what: str) -> _Spec:
    """A batch item's spec; SpecError (BADARGS) naming the item when it is malformed."""
    try:
        return kind.from_dict(need(data, dict, what))
    except SpecError as exc:
        raise SpecError(f"{what}: {exc}") from None


def _failure(method: str, urn: str, exc: Exception) -> str:
    """A batch item's failure as its answer: ``"<GENI code name>: <reason>"``, and logged."""
    if isinstance(exc, GeniError):
        text = f"{exc.code.name}: {exc.reason}"
    elif isinstance(exc, SpecError):
        text = f"BADARGS: {exc}"
    else:
        text = f"ERROR: {method}: {exc}"
    log.warning("%s: %s: %s", method, urn, text)
    return text


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def results_wire(answer: Mapping[str, Any]) -> dict[str, Any]:
    """A simulation's report (``Realizer.simulation``) for XML-RPC: each file's bytes as ``Binary``
    (base64), the rest made XML-RPC-safe."""
    files = {str(name): xmlrpc.client.Binary(bytes(data)) for name, data in answer.get("files", {}).items()}
    value: dict[str, Any] = xmlrpc_safe({k: v for k, v in answer.items() if k != "files"})
    value["files"] = files
    return value


__all__ = ["node_facts", "results_wire", "xmlrpc_safe"]
