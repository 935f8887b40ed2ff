"""primogeni.rpc over real TLS on 127.0.0.1: identities, limits, envelopes, keep-alive, concurrency."""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
import threading
import time
import xmlrpc.client
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from primogeni.geni.cert import Gid, Identity, TrustStore, create_root, issue, new_key
from primogeni.geni.codes import GeniCode
from primogeni.geni.errors import GeniError
from primogeni.geni.urn import Urn
from primogeni.rpc import RpcServer, client, client_context, envelope, parse_call

NOW = datetime.now(UTC)
YEAR = timedelta(days=365)


@dataclass(frozen=True)
class Files:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    trust: TrustStore
    server: Files
    user: Files  # issued by the MA (an intermediate); the file holds user + MA
    stranger: Files  # a user of another, untrusted root
    nameless: Files  # trusted chain, but no GENI URN in the certificate
    user_urn: str


def _save(identity: Identity, directory: Path, name: str) -> Files:
    files = Files(directory / f"{name}.pem", directory / f"{name}.key")
    identity.save(files.cert, files.key)
    return files


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    root = create_root(Urn.parse("urn:publicid:IDN+primo+authority+root"), now=NOW)
    ma = issue(root, Urn.parse("urn:publicid:IDN+primo+authority+ma"), now=NOW, lifetime=YEAR, ca=True)
    server = issue(
        root, Urn.parse("urn:publicid:IDN+primo+authority+cm"), now=NOW, lifetime=YEAR, ca=True,
        dns_names=("localhost",), ip_addresses=("127.0.0.1",),
    )
    user = issue(ma, Urn.parse("urn:publicid:IDN+primo+user+alice"), now=NOW, lifetime=YEAR, ca=False)
    other_root = create_root(Urn.parse("urn:publicid:IDN+evil+authority+root"), now=NOW)
    stranger = issue(other_root, Urn.parse("urn:publicid:IDN+evil+user+mallory"), now=NOW, lifetime=YEAR, ca=False)
    assert len(user.gid.chain) == 2  # MA and root travel in the user's file
    return Pki(
        trust=TrustStore.from_certs([root.gid.cert]),
        server=_save(server, directory, "server"),
        user=_save(user, directory, "alice"),
        stranger=_save(stranger, directory, "mallory"),
        nameless=_nameless(ma, directory),
        user_urn=str(user.gid.urn),
    )


def _nameless(issuer: Identity, directory: Path) -> Files:
    """A certificate the trust roots accept but that carries no GENI URN."""
    key = new_key()
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "nobody")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.gid.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(hours=1))
        .not_valid_after(NOW + YEAR)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(issuer.key, hashes.SHA256())
    )
    pem = Gid(cert, (), issuer.gid.urn, None, None, False).pem() + issuer.gid.pem()
    files = Files(directory / "nameless.pem", directory / "nameless.key")
    files.cert.write_text(pem)
    files.key.write_text(Identity(issuer.gid, key).key_pem())
    return files


class Service:
    """A route handler recording what it saw."""

    methods = ("WhoAmI", "Echo", "Fail", "Boom", "Unsendable", "Sleep")

    def __init__(self) -> None:
        self.calls = 0
        self.active = 0
        self.peak = 0
        self.lock = threading.Lock()

    def __call__(self, method: str, params: tuple[Any, ...], caller: Gid) -> object:
        with self.lock:
            self.calls += 1
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            if method == "WhoAmI":
                return envelope(str(caller.urn))
            if method == "Echo":
                return envelope(list(params))
            if method == "Fail":
                raise GeniError(GeniCode.SEARCHFAILED, "no such slice")
            if method == "Boom":
                raise RuntimeError("kaboom: secret detail")
            if method == "Unsendable":
                return envelope(object())
            if method == "Sleep":
                time.sleep(float(params[0]))
                return envelope(True)
            raise AssertionError(f"server let {method!r} through")
        finally:
            with self.lock:
                self.active -= 1


class ProtoGeniService:
    """A route with ProtoGENI's integer-code envelopes and no ``methods`` list."""

    def __call__(self, method: str, params: tuple[Any, ...], caller: Gid) -> object:
        if method == "GetVersion":
            return {"code": 0, "value": {"api": 2}, "output": ""}
        raise GeniError(GeniCode.NOT_IMPLEMENTED, f"{method} is not implemented")

    def error_envelope(self, err: GeniError) -> object:
        return {"code": int(err.code), "value": 0, "output": err.reason}


@pytest.fixture
def service() -> Service:
    return Service()


@pytest.fixture
def server(pki: Pki, service: Service) -> Iterator[RpcServer]:
    with RpcServer(
        {"/am/3.0": service, "/protogeni/xmlrpc/cm/2.0": ProtoGeniService()},
        identity_cert=pki.server.cert,
        identity_key=pki.server.key,
        trust=pki.trust,
        max_request_bytes=64 * 1024,
        handshake_timeout=2.0,
    ) as running:
        yield running


def _proxy(server: RpcServer, who: Files, pki: Pki, path: str = "/am/3.0") -> Any:
    """A proxy typed Any: answers are the handler's dicts, not the union xmlrpc.client declares."""
    return client(server.url(path), cert=who.cert, key=who.key, trust=pki.trust, timeout=10)


def _raw(server: RpcServer, who: Files, request: bytes) -> tuple[http.client.HTTPResponse, bytes, ssl.SSLSocket]:
    """Send raw bytes over TLS; return the parsed response, its body and the (open) socket."""
    context = client_context(cert=who.cert, key=who.key)
    sock = context.wrap_socket(socket.create_connection(server.address, timeout=10))
    sock.sendall(request)
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response, response.read(), sock


def _post(body: bytes, path: str = "/am/3.0", extra: str = "") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


def _code(body: bytes) -> tuple[int, str]:
    (answer,), _ = xmlrpc.client.loads(body)
    assert isinstance(answer, dict)
    return answer["code"]["geni_code"], answer["output"]


def _closed(sock: ssl.SSLSocket) -> bool:
    try:
        return sock.recv(1) == b""
    except (ConnectionError, ssl.SSLError):
        return True


# -- identity and TLS


def test_call_sees_callers_urn(server: RpcServer, pki: Pki) -> None:
    answer = _proxy(server, pki.user, pki).WhoAmI()
    code = {"geni_code": 0, "am_type": "primogeni", "am_code": 0}
    assert answer == {"code": code, "value": pki.user_urn, "output": ""}


def test_values_round_trip(server: RpcServer, pki: Pki) -> None:
    values = [None, 1, "ü", [1, 2], {"a": {"b": True}}, b"\x00bytes"]
    assert _proxy(server, pki.user, pki).Echo(*values)["value"] == values


def test_client_without_certificate_is_refused(server: RpcServer, pki: Pki) -> None:
    context = ssl.create_default_context(cadata=pki.trust.bundle_pem())
    with pytest.raises((ssl.SSLError, ConnectionError)):
        sock = context.wrap_socket(socket.create_connection(server.address, timeout=10), server_hostname="localhost")
        with sock:  # TLS 1.3: the refusal arrives after the client thinks the handshake is done
            sock.sendall(_post(xmlrpc.client.dumps((), "WhoAmI").encode()))
            http.client.HTTPResponse(sock).begin()


def test_untrusted_client_certificate_is_refused(server: RpcServer, pki: Pki, service: Service) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _proxy(server, pki.stranger, pki).WhoAmI()
    assert service.calls == 0


def test_certificate_without_urn_is_forbidden(server: RpcServer, pki: Pki, service: Service) -> None:
    answer = _proxy(server, pki.nameless, pki).WhoAmI()
    assert answer["code"]["geni_code"] == GeniCode.FORBIDDEN
    assert answer["output"].startswith("client certificate: ")
    assert service.calls == 0


def test_caller_gid_carries_the_verified_chain(pki: Pki, tmp_path: Path) -> None:
    seen: list[Gid] = []

    def handler(method: str, params: tuple[Any, ...], caller: Gid) -> object:
        seen.append(caller)
        return envelope(True)

    routes = {"/ch": handler}
    with RpcServer(routes, identity_cert=pki.server.cert, identity_key=pki.server.key, trust=pki.trust) as rpc:
        assert _proxy(rpc, pki.user, pki, "/ch").Anything()["value"] is True
    (caller,) = seen
    assert str(caller.urn) == pki.user_urn and not caller.is_ca
    assert [str(Gid.from_certificate(c).urn) for c in caller.chain] == [
        "urn:publicid:IDN+primo+authority+ma",
        "urn:publicid:IDN+primo+authority+root",
    ]


def test_federated_ma_cannot_issue_our_names(pki: Pki, service: Service, tmp_path: Path) -> None:
    """Both roots are trusted, but the other federation's MA may only name its own users."""
    other_root = create_root(Urn.parse("urn:publicid:IDN+fed+authority+root"), now=NOW)
    other_ma = issue(other_root, Urn.parse("urn:publicid:IDN+fed+authority+ma"), now=NOW, lifetime=YEAR, ca=True)
    forged = _save(issue(other_ma, Urn.parse(pki.user_urn), now=NOW, lifetime=YEAR, ca=False), tmp_path, "forged")
    honest = _save(
        issue(other_ma, Urn.parse("urn:publicid:IDN+fed+user+bob"), now=NOW, lifetime=YEAR, ca=False), tmp_path, "bob"
    )
    trust = TrustStore.from_certs([*pki.trust.roots, other_root.gid.cert])
    with RpcServer(
        {"/am/3.0": service}, identity_cert=pki.server.cert, identity_key=pki.server.key, trust=trust
    ) as rpc:
        answer = _proxy(rpc, forged, pki).WhoAmI()
        assert answer["code"]["geni_code"] == GeniCode.FORBIDDEN
        assert "fed" in answer["output"]
        assert _proxy(rpc, honest, pki).WhoAmI()["value"] == "urn:publicid:IDN+fed+user+bob"
    assert service.calls == 1


def test_client_checks_server_against_trust(server: RpcServer, pki: Pki, tmp_path: Path) -> None:
    other = create_root(Urn.parse("urn:publicid:IDN+other+authority+root"), now=NOW)
    with pytest.raises(ssl.SSLCertVerificationError):
        client(server.url("/am/3.0"), cert=pki.user.cert, key=pki.user.key,
               trust=TrustStore.from_certs([other.gid.cert])).WhoAmI()
    # Without a trust store the server is not checked (geni-lib's behaviour).
    unchecked: Any = client(server.url("/am/3.0"), cert=pki.user.cert, key=pki.user.key)
    assert unchecked.WhoAmI()["value"] == pki.user_urn


def test_slow_handshake_does_not_block_accept(server: RpcServer, pki: Pki) -> None:
    silent = [socket.create_connection(server.address) for _ in range(3)]  # never start TLS
    try:
        started = time.monotonic()
        assert _proxy(server, pki.user, pki).WhoAmI()["code"]["geni_code"] == 0
        assert time.monotonic() - started < 1.5
        silent[0].settimeout(10)
        assert silent[0].recv(1) == b""  # dropped after handshake_timeout (2 s)
    finally:
        for sock in silent:
            sock.close()


# -- request limits and parsing


def test_oversized_body_is_toobig_without_reading_it(server: RpcServer, pki: Pki) -> None:
    declared = 9 * 1024 * 1024
    head = f"POST /am/3.0 HTTP/1.1\r\nHost: localhost\r\nContent-Length: {declared}\r\n\r\n".encode()
    response, body, sock = _raw(server, pki.user, head + b"<methodCall>" + b" " * 1000)
    with sock:
        assert response.status == 200
        assert response.getheader("Connection") == "close"
        code, output = _code(body)
        assert code == GeniCode.TOOBIG
        assert str(declared) in output
        assert _closed(sock)


def test_oversized_call_from_xmlrpc_client(server: RpcServer, pki: Pki) -> None:
    proxy = _proxy(server, pki.user, pki)
    answer = proxy.Echo("x" * (100 * 1024))
    assert answer["code"]["geni_code"] == GeniCode.TOOBIG
    assert proxy.Echo("small")["value"] == ["small"]  # the proxy reconnects


def test_chunked_or_missing_length_is_toobig(server: RpcServer, pki: Pki) -> None:
    body = xmlrpc.client.dumps((), "WhoAmI").encode()
    chunked = (
        b"POST /am/3.0 HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
        + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    )
    response, answer, sock = _raw(server, pki.user, chunked)
    with sock:
        assert _code(answer)[0] == GeniCode.TOOBIG
        assert response.getheader("Connection") == "close"
    _, answer, sock = _raw(server, pki.user, b"POST /am/3.0 HTTP/1.1\r\nHost: localhost\r\n\r\n")
    with sock:
        assert _code(answer)[0] == GeniCode.TOOBIG


@pytest.mark.parametrize("length", ["-1", "12x", "\u00b2", "9" * 5000, "1, 1"])
def test_malformed_content_length_is_badargs(server: RpcServer, pki: Pki, length: str) -> None:
    request = f"POST /am/3.0 HTTP/1.1\r\nHost: localhost\r\nContent-Length: {length}\r\n\r\n<methodCall/>"
    response, answer, sock = _raw(server, pki.user, request.encode("latin-1"))
    with sock:
        assert _code(answer)[0] == GeniCode.BADARGS
        assert response.getheader("Connection") == "close"


@pytest.mark.parametrize(
    "body",
    [
        b'<?xml version="1.0"?><!DOCTYPE methodCall [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
        b"<methodCall><methodName>Echo</methodName><params><param><value>&b;</value></param></params></methodCall>",
        b'<?xml version="1.0"?>\n<!doctype methodCall SYSTEM "file:///etc/passwd"><methodCall/>',
        b"<methodCall><methodName>Echo</methodName><params/></methodCall><!EnTiTy x 'y'>",
        '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE x [<!ENTITY a "b">]><methodCall/>'.encode("utf-16"),
    ],
    ids=["billion-laughs", "xxe", "entity", "utf16-doctype"],
)
def test_dtd_is_badargs(server: RpcServer, pki: Pki, service: Service, body: bytes) -> None:
    response, answer, sock = _raw(server, pki.user, _post(body))
    with sock:
        assert response.status == 200
        assert _code(answer)[0] == GeniCode.BADARGS
    assert service.calls == 0


def test_parser_refuses_dtd_behind_the_byte_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    # Second layer: even if the byte scan missed a declaration, the expat parser refuses it.
    import importlib
    import re

    module = importlib.import_module("primogeni.rpc.envelope")  # the package re-exports the function
    monkeypatch.setattr(module, "_DTD_MARKUP", re.compile(rb"(?!)"))
    for body in (
        b'<!DOCTYPE m [<!ENTITY a "b">]><methodCall><methodName>a</methodName><params/></methodCall>',
        b'<!DOCTYPE m SYSTEM "http://example.invalid/x.dtd"><methodCall/>',
    ):
        with pytest.raises(GeniError, match="DOCTYPE") as info:
            parse_call(body)
        assert info.value.code == GeniCode.BADARGS


@pytest.mark.parametrize(
    "body",
    [
        b"this is not xml",
        b"<methodCall><methodName>Echo</methodName><params><param><value><int>x</int></value></param>",
        b"<methodCall><methodName>Echo</methodName><params><param><value><int>1" + b"1" * 5000
        + b"</int></value></param></params></methodCall>",
        xmlrpc.client.dumps(({"a": 1},), methodresponse=True).encode(),
        xmlrpc.client.dumps(xmlrpc.client.Fault(1, "x")).encode(),
        b"",
    ],
    ids=["garbage", "truncated", "huge-int", "response", "fault", "empty"],
)
def test_malformed_body_is_badargs(server: RpcServer, pki: Pki, service: Service, body: bytes) -> None:
    _, answer, sock = _raw(server, pki.user, _post(body))
    with sock:
        assert _code(answer)[0] == GeniCode.BADARGS
    assert service.calls == 0


def test_unknown_path_is_404(server: RpcServer, pki: Pki) -> None:
    with pytest.raises(xmlrpc.client.ProtocolError) as info:
        _proxy(server, pki.user, pki, "/nowhere").WhoAmI()
    assert info.value.errcode == 404


# -- dispatch and envelopes


def test_unknown_method_is_unsupported(server: RpcServer, pki: Pki, service: Service) -> None:
    answer = _proxy(server, pki.user, pki).NoSuchMethod({})
    assert answer["code"]["geni_code"] == GeniCode.UNSUPPORTED
    assert "NoSuchMethod" in answer["output"]
    assert service.calls == 0


def test_geni_error_becomes_envelope(server: RpcServer, pki: Pki) -> None:
    answer = _proxy(server, pki.user, pki).Fail()
    assert answer == {
        "code": {"geni_code": 12, "am_type": "primogeni", "am_code": 12},
        "value": "",
        "output": "no such slice",
    }


def test_route_may_shape_its_errors(server: RpcServer, pki: Pki) -> None:
    proxy = _proxy(server, pki.user, pki, "/protogeni/xmlrpc/cm/2.0")
    assert proxy.GetVersion({})["value"] == {"api": 2}
    assert proxy.Frobnicate({}) == {"code": 100, "value": 0, "output": "Frobnicate is not implemented"}


def test_unexpected_exception_is_servererror_and_logged(
    server: RpcServer, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="primogeni.rpc")
    proxy = _proxy(server, pki.user, pki)
    answer = proxy.Boom()
    assert answer["code"]["geni_code"] == GeniCode.SERVERERROR
    assert answer["output"] == "internal error (see server log)"
    assert "kaboom" not in str(answer)
    assert any(r.exc_info and "kaboom" in str(r.exc_info[1]) for r in caplog.records)
    assert proxy.Unsendable()["code"]["geni_code"] == GeniCode.SERVERERROR
    assert proxy.WhoAmI()["code"]["geni_code"] == 0  # still serving, same connection


def test_one_log_line_per_call(server: RpcServer, pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="primogeni.rpc")
    _proxy(server, pki.user, pki).WhoAmI()
    lines = [r.getMessage() for r in caplog.records if r.name == "primogeni.rpc" and r.levelno == logging.INFO]
    assert len(lines) == 1
    assert "/am/3.0 WhoAmI" in lines[0] and pki.user_urn in lines[0] and "code=0" in lines[0]


# -- connections


def test_keep_alive_serves_100_calls_on_one_connection(server: RpcServer, pki: Pki, service: Service) -> None:
    handshakes = 0
    identify = server._identify

    def counting(tls: ssl.SSLSocket) -> Any:
        nonlocal handshakes
        handshakes += 1
        return identify(tls)

    server._identify = counting  # type: ignore[method-assign]
    proxy = _proxy(server, pki.user, pki)
    for i in range(100):
        assert proxy.Echo(i)["value"] == [i]
    assert handshakes == 1
    assert service.calls == 100


def test_connection_close_is_honoured(server: RpcServer, pki: Pki) -> None:
    request = _post(xmlrpc.client.dumps((), "WhoAmI").encode(), extra="Connection: close\r\n")
    response, answer, sock = _raw(server, pki.user, request)
    with sock:
        assert _code(answer)[0] == 0
        assert response.getheader("Connection") == "close"
        assert _closed(sock)


def test_sixteen_concurrent_clients(server: RpcServer, pki: Pki, service: Service) -> None:
    clients, calls = 16, 10
    barrier = threading.Barrier(clients)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            proxy = _proxy(server, pki.user, pki)
            barrier.wait()
            assert proxy.Sleep(0.05)["value"] is True
            for i in range(calls):
                assert proxy.Echo(i)["value"] == [i]
        except BaseException as exc:  # reported in the test thread
            failures.append(exc)

    threads = [threading.Thread(target=run) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert service.calls == clients * (calls + 1)
    assert service.peak > 1  # really concurrent


def test_stop_closes_idle_connections_promptly(pki: Pki, service: Service) -> None:
    rpc = RpcServer({"/am/3.0": service}, identity_cert=pki.server.cert, identity_key=pki.server.key, trust=pki.trust)
    rpc.start()
    proxy = _proxy(rpc, pki.user, pki)
    assert proxy.WhoAmI()["code"]["geni_code"] == 0  # leaves an idle keep-alive connection
    started = time.monotonic()
    rpc.stop()
    assert time.monotonic() - started < 2
    with pytest.raises(OSError):
        socket.create_connection(rpc.address, timeout=2).close()
    rpc.stop()  # idempotent


def test_stop_lets_a_call_in_progress_answer(pki: Pki, service: Service) -> None:
    rpc = RpcServer({"/am/3.0": service}, identity_cert=pki.server.cert, identity_key=pki.server.key, trust=pki.trust)
    rpc.start()
    result: list[object] = []
    caller = threading.Thread(target=lambda: result.append(_proxy(rpc, pki.user, pki).Sleep(0.5)))
    caller.start()
    while service.active == 0:
        time.sleep(0.01)
    rpc.stop()
    caller.join()
    assert result and result[0]["value"] is True  # type: ignore[index]


def test_routes_must_be_paths(pki: Pki, service: Service) -> None:
    with pytest.raises(ValueError):
        RpcServer({"am": service}, identity_cert=pki.server.cert, identity_key=pki.server.key, trust=pki.trust)


def test_client_requires_https(pki: Pki) -> None:
    with pytest.raises(ValueError):
        client("http://127.0.0.1:1/am/3.0", cert=pki.user.cert, key=pki.user.key)


def test_keep_alive_clients_cannot_starve_others(pki: Pki, service: Service) -> None:
    """4 clients on 2 workers, each keeping its proxy (and connection) open to the end."""
    rpc = RpcServer(
        {"/am/3.0": service}, identity_cert=pki.server.cert, identity_key=pki.server.key, trust=pki.trust, threads=2
    )
    clients = 4
    done = threading.Barrier(clients + 1, timeout=20)
    failures: list[BaseException] = []

    def run() -> None:
        proxy = _proxy(rpc, pki.user, pki)
        try:
            for i in range(20):
                assert proxy.Echo(i)["value"] == [i]
        except BaseException as exc:  # reported in the test thread
            failures.append(exc)
        done.wait()  # proxies stay alive until every client has finished

    with rpc:
        threads = [threading.Thread(target=run) for _ in range(clients)]
        for thread in threads:
            thread.start()
        done.wait()
        for thread in threads:
            thread.join()
    assert failures == []
    assert service.calls == clients * 20
