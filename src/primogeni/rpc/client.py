"""The client side of the transport: an XML-RPC proxy over HTTPS with a client certificate.

What GENI tools (omni, geni-lib) do, on the standard library: the caller's certificate file
(which may hold the issuer chain after the leaf) and key authenticate it to the server. With a
trust store the server's certificate is verified against it, host name included (our server
certificates carry ``DNS:localhost`` and ``IP:127.0.0.1``); without one the server is not
verified, as geni-lib does. One persistent HTTP/1.1 connection per proxy carries every call, and
a connection the server closed while idle is reopened transparently (``xmlrpc.client``'s retry).
A proxy is not thread-safe: use one per thread.
"""

from __future__ import annotations

import http.client
import ssl
import urllib.parse
import xmlrpc.client
from pathlib import Path

from primogeni.geni.cert import TrustStore


class TlsTransport(xmlrpc.client.SafeTransport):
    """``SafeTransport`` with a connect/read timeout; keeps and reuses one connection per host.

    ``timeout`` may change between calls; it applies to the open connection too. Subclasses
    check more of the peer by overriding :meth:`new_connection`.
    """

    def __init__(self, context: ssl.SSLContext, timeout: float):
        super().__init__(use_builtin_types=True, context=context)
        self._context = context
        self.timeout = timeout

    def new_connection(self, host: str) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(host, None, context=self._context, timeout=self.timeout)

    def make_connection(self, host: tuple[str, dict[str, str]] | str) -> http.client.HTTPSConnection:
        cached_host, cached = self._connection
        if isinstance(cached, http.client.HTTPSConnection) and host == cached_host:
            cached.timeout = self.timeout
            if cached.sock is not None:
                cached.sock.settimeout(self.timeout)
            return cached
        chost, self._extra_headers, _x509 = self.get_host_info(host)
        connection = self.new_connection(chost)
        self._connection = host, connection
        return connection


def client_context(*, cert: Path, key: Path, trust: TrustStore | None = None,
                   check_hostname: bool = True) -> ssl.SSLContext:
    """The TLS context :func:`client` uses: our certificate chain, and the server checked iff ``trust``
    (its host name too unless ``check_hostname`` is false: a caller that identifies the peer otherwise)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    if trust is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.check_hostname = check_hostname
        context.load_verify_locations(cadata=trust.bundle_pem())
    return context


def client(
    url: str, *, cert: Path, key: Path, trust: TrustStore | None = None, timeout: float = 60.0
) -> xmlrpc.client.ServerProxy:
    """An XML-RPC proxy for ``url`` (``https://…``) that presents ``cert``/``key``.

    ``timeout`` (seconds) bounds connecting and each read. Values come back with built-in types
    (``bytes`` for base64, ``datetime`` for dateTime); ``None`` is allowed both ways.
    """
    if urllib.parse.urlsplit(url).scheme != "https":
        raise ValueError(f"GENI services are reached over https, not {url!r}")
    transport = TlsTransport(client_context(cert=cert, key=key, trust=trust), timeout)
    return xmlrpc.client.ServerProxy(url, transport=transport, allow_none=True, use_builtin_types=True)


__all__ = ["TlsTransport", "client", "client_context"]
