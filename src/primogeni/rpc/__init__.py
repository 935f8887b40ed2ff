"""XML-RPC over HTTPS for the GENI services: the threaded server and the client transport.

:class:`RpcServer` serves several APIs (routes by URL path) on one port, requires a client
certificate chaining to a trusted root, limits request size, refuses DTDs, and answers every
expected error with the GENI envelope (:func:`envelope`, :func:`error_envelope`) — never an
XML-RPC Fault. :func:`client` is the matching proxy (client certificate, optional server check,
keep-alive).
"""

from primogeni.rpc.client import TlsTransport, client, client_context
from primogeni.rpc.envelope import AM_TYPE, envelope, error_envelope, marshal_response, parse_call
from primogeni.rpc.server import MAX_REQUEST_BYTES, Handler, RpcServer

__all__ = [
    "AM_TYPE",
    "MAX_REQUEST_BYTES",
    "Handler",
    "RpcServer",
    "TlsTransport",
    "client",
    "client_context",
    "envelope",
    "error_envelope",
    "marshal_response",
    "parse_call",
]
