"""The AM's side of the agent channel: the TLS transport, its errors, and how batches are cut.

:class:`AgentTransport` keeps one keep-alive connection per agent and checks that the peer's
certificate carries the node's URN (not its host name). :class:`AgentUnreachable` and
:class:`AgentLacks` (an agent answering UNSUPPORTED: an older one, without the batch methods) are
what :class:`~primogeni.am.agent_driver.AgentDriver` raises or falls back on. :func:`chunks` cuts
a node's items into ``ProvisionMany``/``ReleaseMany`` calls small enough for the agent's request
limit (``rpc.server.MAX_REQUEST_BYTES``) and its timeout.
"""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Sequence
from typing import Any

from primogeni.geni.cert import Gid
from primogeni.geni.codes import GeniCode
from primogeni.geni.errors import GeniError
from primogeni.rpc import TlsTransport

BATCH_ITEMS = 100  # at most this many items per ProvisionMany call (chunks of one node go in parallel)
RELEASE_ITEMS = 500  # … per ReleaseMany call
BATCH_BYTES = 4 << 20  # about this many bytes of XML-RPC per batch call at most (agents take up to 8 MiB)
BATCH_ITEM_S = 1.0  # a batch call's timeout: the driver's ``timeout`` plus this per item


class AgentUnreachable(GeniError):
    """An agent could not be reached (refused, timed out, TLS or identity failure): ``node``."""

    def __init__(self, node: str, reason: str):
        self.node = node
        super().__init__(GeniCode.ERROR, f"node {node}: agent unreachable: {reason}")


class AgentLacks(GeniError):
    """The agent answered UNSUPPORTED for ``method`` (an older agent, e.g. one without the batch methods)."""

    def __init__(self, node: str, method: str, output: str):
        self.node, self.method = node, method
        super().__init__(GeniCode.ERROR, f"node {node}: {output or f'{method} is not supported'}")


def wire_size(value: Any, memo: dict[int, int]) -> int:
    """About (at most) how many bytes ``value`` takes in XML-RPC; list sizes memoised by identity
    (a slice's host list is one list shared by all its slivers' specs)."""
    if isinstance(value, str):
        return 60 + len(value.encode())
    if isinstance(value, dict):
        return 60 + sum(40 + len(k) + wire_size(v, memo) for k, v in value.items())
    if isinstance(value, list | tuple):
        if id(value) not in memo:
            memo[id(value)] = 60 + sum(wire_size(v, memo) for v in value)
        return memo[id(value)]
    return 60


def chunks(items: Sequence[Any], limit: int | None = None) -> list[list[Any]]:
    """``items`` in order, cut into batch calls of at most ``limit`` (BATCH_ITEMS) items and about BATCH_BYTES."""
    limit = limit or BATCH_ITEMS
    out: list[list[Any]] = []
    size, memo = 0, dict[int, int]()
    for item in items:
        cost = wire_size(item, memo)
        if not out or len(out[-1]) >= limit or size + cost > BATCH_BYTES:
            out.append([])
            size = 0
        out[-1].append(item)
        size += cost
    return out


class CheckedConnection(http.client.HTTPSConnection):
    """An HTTPS connection that also checks the peer certificate's URN (not its host name)."""

    def __init__(self, host: str, *, context: ssl.SSLContext, timeout: float, expected: str):
        super().__init__(host, context=context, timeout=timeout)
        self.expected = expected

    def connect(self) -> None:
        super().connect()
        assert isinstance(self.sock, ssl.SSLSocket)
        der = self.sock.getpeercert(binary_form=True)
        urn = str(Gid.from_der(der).urn) if der else "(no certificate)"
        if urn != self.expected:
            self.sock.close()
            raise ssl.SSLError(f"the server's certificate is {urn}, not {self.expected}")


class AgentTransport(TlsTransport):
    """Keeps one connection; verifies the chain against our roots and the peer's node URN.

    ``timeout`` may change between calls (probes are shorter); it applies to the open connection too.
    """

    def __init__(self, context: ssl.SSLContext, timeout: float, expected: str):
        super().__init__(context, timeout)
        self._expected = expected

    def new_connection(self, host: str) -> http.client.HTTPSConnection:
        return CheckedConnection(host, context=self._context, timeout=self.timeout, expected=self._expected)


__all__ = ["BATCH_BYTES", "BATCH_ITEMS", "BATCH_ITEM_S", "RELEASE_ITEMS", "AgentLacks", "AgentTransport",
           "AgentUnreachable", "CheckedConnection", "chunks", "wire_size"]
