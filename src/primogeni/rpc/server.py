"""The XML-RPC over HTTPS server that carries every GENI API (AM v2/v3, ProtoGENI, CH/SA/MA).

How the work divides:

* one **accept thread** (``socketserver``'s loop) only accepts TCP connections and queues them;
* a **bounded pool** of worker threads each takes a connection, does the TLS handshake (with a
  deadline, so a slow or hostile client costs one worker for at most ``handshake_timeout`` and
  never blocks ``accept``), reads the caller's identity from the verified client certificate, and
  then serves HTTP/1.1 requests on it until the client closes, stays idle for ``idle_timeout``,
  or sends ``Connection: close``;
* per request, :class:`_RequestHandler` routes by path, enforces the size limit, parses the body
  with :func:`~primogeni.rpc.envelope.parse_call` (no DTDs), calls the route's :class:`Handler`
  and writes its answer. Every expected failure goes back as a GENI envelope inside an HTTP 200,
  never as an XML-RPC Fault; an unknown path is an HTTP 404.

TLS: TLS 1.2 or later, and a client certificate chaining to one of the trusted roots is required
(OpenSSL checks the chain, validity dates and CA flags during the handshake, using any
intermediates the client sends). The caller is the leaf as a :class:`Gid` whose ``chain`` is the
verified chain up to the root; it must also pass :meth:`TrustStore.verify` (an intermediate may
only issue names under its own top authority), else every call on the connection answers
FORBIDDEN.

A connection that has been served while other connections wait for a worker is closed after its
current response (``Connection: close``), so idle keep-alive clients cannot starve new ones.
"""

from __future__ import annotations

import contextlib
import http.server
import logging
import re
import socket
import socketserver
import ssl
import threading
import time
import urllib.parse
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from cryptography import x509

from primogeni.geni.cert import Gid, TrustStore
from primogeni.geni.codes import GeniCode
from primogeni.geni.errors import GeniError
from primogeni.rpc.envelope import envelope, error_envelope, marshal_response, parse_call

log = logging.getLogger("primogeni.rpc")

#: Default limit on a request body.
MAX_REQUEST_BYTES = 8 * 1024 * 1024
_INTERNAL_ERROR = "internal error (see server log)"
_LOG_TEXT_MAX = 80  # characters of a client-chosen string (method name) we repeat in logs/answers
_CONTENT_LENGTH = re.compile(r"[0-9]{1,18}")  # ASCII digits only; 18 digits is far beyond any limit
# After refusing a body, discard what the client is still sending for at most this long (and at
# most max_request_bytes) before closing, so that a client that writes its whole request before
# reading (xmlrpc.client does) gets the TOOBIG answer instead of a connection reset.
_LINGER_SECONDS = 2.0
_LINGER_CHUNK = 64 * 1024


@runtime_checkable
class Handler(Protocol):
    """One route's service: answers ``method(*params)`` for ``caller``.

    Returns the whole XML-RPC response value — normally :func:`envelope` of the result (GetVersion
    adds ``geni_api`` to it). Raises :class:`GeniError` for expected failures; the server sends
    the error envelope. Two optional attributes refine the contract:

    * ``methods: Collection[str]`` — the method names served; for any other name the server
      answers UNSUPPORTED without calling the handler (otherwise the handler raises
      ``GeniError(GeniCode.UNSUPPORTED, …)`` itself);
    * ``error_envelope(err: GeniError) -> object`` — the shape of error answers on this route
      (e.g. ProtoGENI's integer ``code``); the default is :func:`error_envelope`.
    """

    def __call__(self, method: str, params: tuple[Any, ...], caller: Gid) -> object: ...


def _clip(text: str) -> str:
    return text if len(text) <= _LOG_TEXT_MAX else text[:_LOG_TEXT_MAX] + "…"


def _server_context(cert: Path, key: Path, trust: TrustStore) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.load_cert_chain(str(cert), str(key))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=trust.bundle_pem())
    return context


@dataclass
class _Connection:
    """What a request handler knows about its TLS connection."""

    rpc: RpcServer
    caller: Gid | None  # None when the certificate is trusted but not a usable GENI identity
    caller_error: GeniError | None


class _Listener(socketserver.TCPServer):
    """Accepts connections and hands them to the owning :class:`RpcServer`'s pool."""

    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, rpc: RpcServer, host: str, port: int):
        self.rpc = rpc
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), http.server.BaseHTTPRequestHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.rpc._submit(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("error accepting a connection from %s", client_address)


class _RequestHandler(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive; POST carries one XML-RPC call (see the module docstring)."""

    protocol_version = "HTTP/1.1"
    server_version = "PrimoGENI"
    sys_version = ""
    disable_nagle_algorithm = True
    # Buffered writes: the status line, headers and body of an answer leave together (one TLS
    # record; no small segment for Nagle to hold back against the client's delayed ACK).
    # BaseHTTPRequestHandler flushes after every request.
    wbufsize = 64 * 1024

    def __init__(self, sock: ssl.SSLSocket, address: Any, listener: _Listener, conn: _Connection):
        self.conn = conn
        self.rpc = conn.rpc
        super().__init__(sock, address, listener)

    # -- logging: one line per call at INFO comes from _answer; the rest is debug detail

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s: %s", self.address_string(), format % args)

    # -- HTTP

    def handle_expect_100(self) -> bool:
        # Do not invite the body of a request that will be refused anyway.
        length = _content_length(self.headers.get_all("Content-Length"))
        if length is None or length > self.rpc.max_request_bytes:
            return True
        return super().handle_expect_100()

    def do_POST(self) -> None:
        started = time.perf_counter()
        path = urllib.parse.urlsplit(self.path).path
        handler = self.rpc.routes.get(path)
        if handler is None:
            self.send_error(404, "No GENI service at this path")
            return
        body = self._read_body(handler, path, started)
        if body is None:
            return
        method = "-"
        try:
            method, params = parse_call(body)
            response = self._call(handler, path, method, params)
        except GeniError as err:
            response = self._error(handler, err)
        except Exception:
            # A fault of ours while parsing: the traceback stays in our log, the client gets SERVERERROR.
            log.exception("%s: cannot handle a request", path)
            response = envelope("", code=GeniCode.SERVERERROR, output=_INTERNAL_ERROR)
        self._answer(handler, path, method, response, started)

    def _read_body(self, handler: Handler, path: str, started: float) -> bytes | None:
        """The request body, or None when an answer was already sent (or the client vanished)."""
        limit = self.rpc.max_request_bytes
        lengths = self.headers.get_all("Content-Length") or []
        length = _content_length(lengths)
        if "Transfer-Encoding" in self.headers or not lengths:
            err = GeniError(GeniCode.TOOBIG, "a Content-Length is required (chunked requests are refused)")
        elif length is None:
            err = GeniError(GeniCode.BADARGS, "malformed Content-Length")
        elif length > limit:
            err = GeniError(GeniCode.TOOBIG, f"request of {length} bytes exceeds the limit of {limit} bytes")
        else:
            err = None
        if err is not None:
            self._answer(handler, path, "-", self._error(handler, err), started, close=True)
            self._linger(min(length or limit, limit))
            return None
        assert length is not None
        body = self.rfile.read(length)
        if len(body) != length:  # the client closed mid-body
            self.close_connection = True
            return None
        return body

    def _linger(self, budget: int) -> None:
        """Read and drop up to ``budget`` bytes of a refused body (for ≤ _LINGER_SECONDS); keep nothing."""
        deadline = time.monotonic() + _LINGER_SECONDS
        while budget > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.connection.settimeout(remaining)
            try:
                chunk = self.rfile.read1(min(budget, _LINGER_CHUNK))
            except OSError:  # timed out, reset: the connection is closing anyway
                return
            if not chunk:
                return
            budget -= len(chunk)

    def _call(self, handler: Handler, path: str, method: str, params: tuple[Any, ...]) -> object:
        if self.conn.caller is None:
            assert self.conn.caller_error is not None
            raise self.conn.caller_error
        methods: Collection[str] | None = getattr(handler, "methods", None)
        if methods is not None and method not in methods:
            raise GeniError(GeniCode.UNSUPPORTED, f"unsupported method {_clip(method)!r}")
        try:
            return handler(method, params, self.conn.caller)
        except GeniError:
            raise
        except Exception:
            # Unexpected: the traceback stays in our log, the client gets SERVERERROR.
            log.exception("%s %s from %s failed", path, _clip(method), self.conn.caller.urn)
            return self._error(handler, GeniError(GeniCode.SERVERERROR, _INTERNAL_ERROR))

    @staticmethod
    def _error(handler: Handler, err: GeniError) -> object:
        build = getattr(handler, "error_envelope", None)
        return build(err) if build is not None else error_envelope(err)

    def _answer(
        self, handler: Handler, path: str, method: str, response: object, started: float, *, close: bool = False
    ) -> None:
        try:
            data = marshal_response(response)
        except (TypeError, ValueError, OverflowError):
            log.exception("%s %s: the handler's answer cannot be sent as XML-RPC", path, _clip(method))
            response = envelope("", code=GeniCode.SERVERERROR, output=_INTERNAL_ERROR)
            data = marshal_response(response)
        caller = self.conn.caller.urn if self.conn.caller is not None else "-"
        log.info(
            "%s %s caller=%s code=%s %.1fms",
            path, _clip(method), caller, _code_of(response), (time.perf_counter() - started) * 1e3,
        )
        # close_connection is already True when the client sent "Connection: close" (or HTTP/1.0).
        close = close or self.close_connection or self.rpc._should_close()
        self.send_response(200)
        self.send_header("Content-Type", "text/xml; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)


def _content_length(values: list[str] | None) -> int | None:
    """The one well-formed Content-Length among the header's values, else None."""
    if not values or len(values) != 1 or not _CONTENT_LENGTH.fullmatch(values[0].strip()):
        return None
    return int(values[0])


def _code_of(response: object) -> object:
    """The GENI code in an answer, for the log: struct (AM API) or integer (ProtoGENI) form."""
    if isinstance(response, dict):
        code = response.get("code")
        if isinstance(code, dict):
            return code.get("geni_code", "-")
        if isinstance(code, int):
            return code
    return "-"


class RpcServer:
    """XML-RPC over HTTPS with client certificates; see the module docstring.

    ``routes`` maps a URL path (``"/am/3.0"``) to its :class:`Handler`. Use as a context manager
    (``start`` on entry, ``stop`` on exit), or call :meth:`serve_forever` in the main thread and
    :meth:`stop` from another. Timeouts are in seconds.
    """

    def __init__(
        self,
        routes: Mapping[str, Handler],
        *,
        identity_cert: Path,
        identity_key: Path,
        trust: TrustStore,
        host: str = "127.0.0.1",
        port: int = 0,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        threads: int = 16,
        handshake_timeout: float = 10.0,
        idle_timeout: float = 60.0,
    ):
        for path in routes:
            if not path.startswith("/"):
                raise ValueError(f"route {path!r} must start with '/'")
        if threads < 1:
            raise ValueError("threads must be at least 1")
        self.routes: dict[str, Handler] = dict(routes)
        self.max_request_bytes = max_request_bytes
        self.threads = threads
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.max_waiting = 8 * threads  # connections accepted but waiting for a worker
        self._trust = trust
        self._context = _server_context(identity_cert, identity_key, trust)
        self._lock = threading.Lock()
        self._live: set[socket.socket] = set()  # accepted, not yet closed
        self._waiting = 0
        self._serving = False
        self._stopping = False
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rpc-worker")
        self._listener = _Listener(self, host, port)

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) actually bound (port 0 picks a free one)."""
        host, port = self._listener.server_address[:2]
        return str(host), int(port)

    def url(self, path: str) -> str:
        """``https://host:port/path`` for a route of this server."""
        host, port = self.address
        if ":" in host:
            host = f"[{host}]"
        return f"https://{host}:{port}{path}"

    def start(self) -> None:
        """Serve in a background thread; returns at once."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        self._thread = threading.Thread(target=self.serve_forever, name="rpc-accept", daemon=True)
        self._thread.start()

    def serve_forever(self) -> None:
        """Accept connections until :meth:`stop` is called (from another thread)."""
        with self._lock:
            if self._stopping:
                return
            self._serving = True
        self._listener.serve_forever(poll_interval=0.1)

    def stop(self) -> None:
        """Stop accepting, close the listening socket, end idle connections, wait for workers.

        Calls in progress finish and get their answers; idle keep-alive connections are closed.
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = self._stopping = True
            serving = self._serving
        if serving:
            self._listener.shutdown()
        self._listener.server_close()
        with self._lock:
            live = list(self._live)
        for sock in live:
            # Wake any worker blocked reading (handshake, idle keep-alive, a slow body) with EOF;
            # the write side stays open so a call in progress can still send its answer.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RD)
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            leftover = list(self._live)  # queued connections whose work was cancelled
            self._live.clear()
        for sock in leftover:
            sock.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> RpcServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- connection handling (worker threads)

    def _submit(self, sock: socket.socket, address: Any) -> None:
        with self._lock:
            refuse = self._stopping or self._waiting >= self.max_waiting
            if not refuse:
                self._waiting += 1
                self._live.add(sock)
        if refuse:
            log.warning("refusing connection from %s: %d connections already waiting", address[0], self.max_waiting)
            sock.close()
            return
        self._pool.submit(self._serve_connection, sock, address)

    def _should_close(self) -> bool:
        """Whether to close a keep-alive connection after this answer (stopping, or others wait)."""
        with self._lock:
            return self._stopping or self._waiting > 0

    def _serve_connection(self, sock: socket.socket, address: Any) -> None:
        with self._lock:
            self._waiting -= 1
        tls: ssl.SSLSocket | None = None
        try:
            if self._stopping:
                return
            sock.settimeout(self.handshake_timeout)
            tls = self._context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            with self._lock:
                self._live.discard(sock)
                self._live.add(tls)
                if self._stopping:  # stop() may have taken its snapshot before we registered
                    return
            try:
                tls.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                log.info("TLS handshake with %s failed: %s", address[0], exc)
                return
            tls.settimeout(self.idle_timeout)  # bounds each read: idle keep-alive, slow headers or body
            conn = self._identify(tls)
            _RequestHandler(tls, address, self._listener, conn)
        except OSError as exc:  # the client went away, timed out, or broke TLS mid-stream
            log.debug("connection from %s ended: %s", address[0], exc)
        except Exception:
            log.exception("connection from %s failed", address[0])
        finally:
            with self._lock:
                self._live.discard(sock)
                if tls is not None:
                    self._live.discard(tls)
            (tls or sock).close()

    def _identify(self, tls: ssl.SSLSocket) -> _Connection:
        """The caller's GID (leaf + verified chain), held to the trust store's full rules.

        OpenSSL has checked signatures, dates and CA flags; :meth:`TrustStore.verify` adds the
        GENI rule that an intermediate (an MA) only issues names under its own top authority,
        so that one federation's MA cannot present another's users.
        """
        try:
            chain = _verified_chain(tls)
            gid = Gid.from_der(chain[0])
            gid = Gid.from_certificate(gid.cert, [x509.load_der_x509_certificate(der) for der in chain[1:]])
            self._trust.verify(gid, datetime.now(UTC))
        except (GeniError, ValueError) as err:
            reason = err.reason if isinstance(err, GeniError) else str(err)
            log.info("client certificate refused: %s", reason)
            return _Connection(self, None, GeniError(GeniCode.FORBIDDEN, f"client certificate: {reason}"))
        return _Connection(self, gid, None)


def _verified_chain(tls: ssl.SSLSocket) -> list[bytes]:
    """DER certificates from the peer's leaf to the trusted root, as OpenSSL verified them."""
    public = getattr(tls, "get_verified_chain", None)  # Python 3.13+
    if public is not None:
        chain = [bytes(der) for der in public()]
    else:
        # Python 3.10-3.12 have the same call on the underlying _ssl object only.
        sslobj = getattr(tls, "_sslobj", None)
        private = getattr(sslobj, "get_verified_chain", None)
        if private is None:
            raise ValueError("this Python cannot report the verified certificate chain")
        chain = [cert.public_bytes(ssl._ssl.ENCODING_DER) for cert in private()]  # type: ignore[attr-defined]
    if not chain:
        raise ValueError("no client certificate")
    return chain


__all__ = ["MAX_REQUEST_BYTES", "Handler", "RpcServer"]
