"""The PrimoGENI DML schema: turns a resolved DML tree into a :class:`~primogeni.sim.model.Network`.

SSFNet conventions: nodes and nets have numeric ``id`` s (or ``idrange [ from A to B ]`` for
copies), interfaces are named by their ``id``, links ``attach`` interfaces by NHI address
(``2(0)`` is interface 0 of node 2; ``1:2(0)`` is the same inside sub-net 1), relative to the
net holding the link. Rates are bits per second, times seconds, buffers bytes. Unknown
attributes are errors, reported at their file and line. See docs/DML.md for the reference.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from ipaddress import IPv4Interface
from typing import Any

from primogeni.errors import ModelError
from primogeni.net.units import Bytes, Packets, Rate
from primogeni.sim.dist import Distribution, parse_distribution
from primogeni.sim.dml.parser import DmlAttr, DmlList
from primogeni.sim.model import Interface, Net, Network, Node
from primogeni.sim.proto.tcp import TcpConfig
from primogeni.sim.traffic import (
    RESPONSE_SHAPE,
    Flow,
    Ping,
    Poisson,
    TcpBulk,
    TcpRequestResponse,
    UdpCbr,
    UdpOnOff,
)

_NET_KEYS = {"id", "name", "idrange", "prefix", "ip", "Net", "host", "router", "link", "traffic", "_schema"}
_NODE_KEYS = {"id", "name", "idrange", "interface", "_schema"}
_HOST_KEYS = _NODE_KEYS | {"emulated"}
_IFACE_KEYS = {"id", "idrange", "bitrate", "latency", "buffer", "queue", "ip", "_schema"}
_LINK_KEYS = {"attach", "delay", "bitrate", "loss", "prefix", "cost", "buffer", "queue", "name", "_schema"}
_COMMON_FLOW = {"type", "name", "src", "dst", "start", "stop", "_schema"}
_TCP_KEYS = {"mss", "delayed_ack", "min_rto", "sack", "initial_cwnd", "rcv_buffer"}
_FLOW_KEYS: dict[str, set[str]] = {
    "tcp_bulk": _COMMON_FLOW | _TCP_KEYS | {"bytes", "port"},
    "tcp_reqresp": _COMMON_FLOW | _TCP_KEYS | {
        "request_bytes", "response_bytes", "response_dist", "response_shape",
        "think", "think_dist", "requests", "port",
    },
    "udp_cbr": _COMMON_FLOW | {"rate", "size", "port"},
    "udp_onoff": _COMMON_FLOW | {"rate", "size", "port", "on", "off", "dist", "shape"},
    "poisson": _COMMON_FLOW | {"rate", "size", "size_dist", "port"},
    "ping": _COMMON_FLOW | {"interval", "count", "size", "ttl"},
}
_NHI = re.compile(r"^(?P<path>[A-Za-z0-9_.\-]+(?::[A-Za-z0-9_.\-]+)*)(?:\((?P<iface>[A-Za-z0-9_.\-]+)\))?$")


def _err(attr: DmlAttr | DmlList, element: str, message: str) -> ModelError:
    return ModelError(message, element=element, location=attr.location)


def _check_keys(lst: DmlList, allowed: set[str], element: str, what: str) -> None:
    for a in lst:
        if a.key not in allowed:
            raise _err(a, element, f"unknown attribute {a.key!r} in {what} (allowed: {', '.join(sorted(allowed))})")


def _atom(lst: DmlList, key: str, element: str) -> DmlAttr | None:
    a = lst.find(key)
    if a is not None and isinstance(a.value, DmlList):
        raise _err(a, element, f"{key} must be a value, not a list")
    return a


def _num(lst: DmlList, key: str, element: str, conv: Callable[[str], Any] = float, default: Any = None) -> Any:
    a = _atom(lst, key, element)
    if a is None:
        return default
    assert isinstance(a.value, str)
    try:
        v = conv(a.value)
    except ValueError:
        raise _err(a, element, f"{key} {a.value!r} is not a valid {conv.__name__}") from None
    if isinstance(v, int | float) and v < 0:
        raise _err(a, element, f"{key} must not be negative")
    return v


def _int(text: str) -> int:
    f = float(text)
    if f != int(f):
        raise ValueError(text)
    return int(f)


def _bool(text: str) -> bool:
    t = text.lower()
    if t in ("true", "1", "yes", "on"):
        return True
    if t in ("false", "0", "no", "off"):
        return False
    raise ValueError(text)


_bool.__name__ = "boolean (true/false)"
_int.__name__ = "integer"


def _seconds(lst: DmlList, key: str, element: str, default: int | None = None) -> int | None:
    v = _num(lst, key, element)
    return default if v is None else round(v * 1e9)


def _ids(lst: DmlList, element: str, what: str) -> list[str]:
    """The names this element stands for: its id/name, or each id of its idrange."""
    rng = lst.find("idrange")
    if rng is not None:
        if not isinstance(rng.value, DmlList):
            raise _err(rng, element, "idrange must be a list [ from A to B ]")
        lo = _num(rng.value, "from", element, _int)
        hi = _num(rng.value, "to", element, _int)
        if lo is None or hi is None or hi < lo:
            raise _err(rng, element, "idrange needs 'from' <= 'to'")
        return [str(i) for i in range(lo, hi + 1)]
    name = lst.get("name")
    ident = lst.get("id")
    if name is None and ident is None:
        raise _err(lst, element, f"{what} needs an id (or a name)")
    return [name if name is not None else str(ident)]


def _queue(lst: DmlList, element: str) -> Packets | Bytes | None:
    b = _num(lst, "buffer", element, _int)
    q = _num(lst, "queue", element, _int)
    if b is not None and q is not None:
        raise _err(lst, element, "give either buffer (bytes) or queue (packets), not both")
    if b is not None:
        return Bytes(b) if b > 0 else None
    if q is not None:
        return Packets(q) if q > 0 else None
    return None


def _rate(lst: DmlList, key: str, element: str) -> Rate | None:
    v = _num(lst, key, element)
    if v is None:
        return None
    if v <= 0:
        raise _err(lst.find(key) or lst, element, f"{key} must be > 0")
    return Rate(round(v))


def _interfaces(node: Node, lst: DmlList) -> None:
    for a in lst.find_all("interface"):
        if not isinstance(a.value, DmlList):
            raise _err(a, node.path, "interface must be a list [ id N ... ]")
        il = a.value
        _check_keys(il, _IFACE_KEYS, node.path, "interface")
        for name in _ids(il, node.path, "interface"):
            ip = il.get("ip")
            addr = None
            if ip is not None:
                try:
                    addr = IPv4Interface(ip)
                except ValueError as e:
                    raise _err(il.find("ip") or il, f"{node.path}:{name}", f"bad ip {ip!r}: {e}") from None
            lat = _seconds(il, "latency", node.path, 0)
            node.interface(name, address=addr, bandwidth=_rate(il, "bitrate", node.path),
                           queue=_queue(il, node.path), latency=lat or 0, location=a.location)


def _build_net(net: Net, lst: DmlList) -> list[tuple[Net, DmlAttr]]:
    """Fill ``net`` from ``lst``; returns the traffic lists to read once every node exists."""
    _check_keys(lst, _NET_KEYS, net.path, "Net")
    traffic: list[tuple[Net, DmlAttr]] = []
    for a in lst:
        if a.key in ("Net", "host", "router", "link", "traffic") and not isinstance(a.value, DmlList):
            raise _err(a, net.path, f"{a.key} must be a list [ ... ]")
        if a.key == "Net":
            assert isinstance(a.value, DmlList)
            for name in _ids(a.value, net.path, "Net"):
                prefix = a.value.get("prefix") or a.value.get("ip")
                sub = net.net(name, prefix=prefix, location=a.location)
                traffic += _build_net(sub, a.value)
        elif a.key in ("host", "router"):
            assert isinstance(a.value, DmlList)
            _check_keys(a.value, _HOST_KEYS if a.key == "host" else _NODE_KEYS, net.path, a.key)
            emulated = bool(_num(a.value, "emulated", net.path, _bool, False))
            for name in _ids(a.value, net.path, a.key):
                node: Node = (net.host(name, a.location, emulated=emulated) if a.key == "host"
                              else net.router(name, a.location))
                _interfaces(node, a.value)
        elif a.key == "traffic":
            traffic.append((net, a))
    for a in lst.find_all("link"):
        _build_link(net, a)
    return traffic


def _resolve_nhi(net: Net, text: str, attr: DmlAttr) -> Interface:
    m = _NHI.match(text.strip())
    if not m:
        raise _err(attr, net.path, f"bad NHI address {text!r} (expected like 2(0) or 1:2(0))")
    target = net.lookup(m.group("path"))
    if not isinstance(target, Node):
        raise _err(attr, net.path, f"attach {text}: no host or router {m.group('path')!r} in {net.path}")
    if m.group("iface") is None:
        return target.free_interface()
    iface = target.find_interface(m.group("iface"))
    if iface is None:
        raise _err(attr, net.path, f"attach {text}: {target.path} has no interface {m.group('iface')!r}")
    return iface


def _build_link(net: Net, a: DmlAttr) -> None:
    assert isinstance(a.value, DmlList)
    ll = a.value
    _check_keys(ll, _LINK_KEYS, net.path, "link")
    ends = []
    for at in ll.find_all("attach"):
        if not isinstance(at.value, str):
            raise _err(at, net.path, "attach must be an NHI address like 1(0)")
        ends.append(_resolve_nhi(net, at.value, at))
    if len(ends) < 2:
        raise _err(a, net.path, f"a link needs at least two attach, has {len(ends)}")
    try:
        net.link(
            *ends,
            bandwidth=_rate(ll, "bitrate", net.path),
            delay=_seconds(ll, "delay", net.path, 0) or 0,
            queue=_queue(ll, net.path),
            loss=_num(ll, "loss", net.path, float, 0.0),
            prefix=ll.get("prefix"),
            cost=_num(ll, "cost", net.path, _int, 1),
            name=ll.get("name"),
            location=a.location,
        )
    except ModelError as e:
        if e.location is None:
            raise ModelError(e.reason, e.element, a.location) from None
        raise


def _dist(lst: DmlList, kind_key: str, mean: float, shape_key: str | None, element: str, default: str,
          shape_default: float | None = None) -> Distribution:
    kind = lst.get(kind_key, default)
    shape = _num(lst, shape_key, element, float, shape_default) if shape_key else None
    try:
        return parse_distribution(kind, mean, shape)
    except ValueError as e:
        raise _err(lst.find(kind_key) or lst, element, str(e)) from None


def _tcp_config(fl: DmlList, element: str) -> TcpConfig:
    kw: dict[str, Any] = {}
    if fl.find("mss"):
        kw["mss"] = _num(fl, "mss", element, _int)
    if fl.find("delayed_ack"):
        kw["delayed_ack"] = _num(fl, "delayed_ack", element, _bool)
    if fl.find("sack"):
        kw["sack"] = _num(fl, "sack", element, _bool)
    if fl.find("min_rto"):
        kw["min_rto"] = _seconds(fl, "min_rto", element)
    if fl.find("initial_cwnd"):
        kw["initial_cwnd"] = _num(fl, "initial_cwnd", element, _int)
    if fl.find("rcv_buffer"):
        kw["rcv_buffer"] = _num(fl, "rcv_buffer", element, _int)
    return TcpConfig(**kw)


def _build_flow(net: Net, a: DmlAttr) -> Flow:
    element = f"{net.path}:traffic"
    if not isinstance(a.value, DmlList):
        raise _err(a, element, "flow must be a list [ type ... ]")
    fl = a.value
    kind = fl.get("type")
    if kind is None:
        raise _err(a, element, f"flow needs a type ({', '.join(sorted(_FLOW_KEYS))})")
    if kind not in _FLOW_KEYS:
        raise _err(fl.find("type") or a, element, f"unknown flow type {kind!r} ({', '.join(sorted(_FLOW_KEYS))})")
    _check_keys(fl, _FLOW_KEYS[kind], element, f"{kind} flow")
    ends = {}
    for k in ("src", "dst"):
        at = _atom(fl, k, element)
        if at is None:
            raise _err(a, element, f"flow needs {k}")
        assert isinstance(at.value, str)
        m = _NHI.match(at.value.strip())
        if not m:
            raise _err(at, element, f"bad {k} {at.value!r} (expected like 2 or 1:2(0))")
        ends[k] = m.group("path") + (f":{m.group('iface')}" if m.group("iface") else "")
    common: dict[str, Any] = {
        "src": ends["src"],
        "dst": ends["dst"],
        "start": _seconds(fl, "start", element, 0),
        "stop": _seconds(fl, "stop", element),
        "name": fl.get("name"),
        "location": a.location,
    }
    if kind == "tcp_bulk":
        return TcpBulk(size=_num(fl, "bytes", element, _int), port=_num(fl, "port", element, _int, 5001),
                       tcp=_tcp_config(fl, element), **common)
    if kind == "tcp_reqresp":
        return TcpRequestResponse(
            request_size=_num(fl, "request_bytes", element, _int, 300),
            response_size=_dist(fl, "response_dist", _num(fl, "response_bytes", element, float, 100_000.0),
                                "response_shape", element, "pareto", RESPONSE_SHAPE),
            think=_dist(fl, "think_dist", _num(fl, "think", element, float, 0.5) * 1e9, None, element, "exponential"),
            requests=_num(fl, "requests", element, _int),
            port=_num(fl, "port", element, _int, 80),
            tcp=_tcp_config(fl, element),
            **common,
        )
    if kind in ("udp_cbr", "udp_onoff"):
        rate = _rate(fl, "rate", element)
        if rate is None:
            raise _err(a, element, f"{kind} needs rate (bits/s)")
        size = _num(fl, "size", element, _int, 1000)
        port = _num(fl, "port", element, _int, 9000)
        if kind == "udp_cbr":
            return UdpCbr(rate=rate, size=size, port=port, **common)
        on_mean = _num(fl, "on", element, float, 0.5) * 1e9
        off_mean = _num(fl, "off", element, float, 0.5) * 1e9
        return UdpOnOff(rate=rate, size=size, port=port,
                        on=_dist(fl, "dist", on_mean, "shape", element, "exponential"),
                        off=_dist(fl, "dist", off_mean, "shape", element, "exponential"), **common)
    if kind == "poisson":
        rate_pps = _num(fl, "rate", element)
        if rate_pps is None:
            raise _err(a, element, "poisson needs rate (packets/s)")
        return Poisson(rate=rate_pps, size=_dist(fl, "size_dist", _num(fl, "size", element, float, 1000.0), None,
                                                  element, "exponential"),
                       port=_num(fl, "port", element, _int, 9001), **common)
    return Ping(interval=_seconds(fl, "interval", element, 1_000_000_000) or 1, count=_num(fl, "count", element, _int),
                size=_num(fl, "size", element, _int, 56), ttl=_num(fl, "ttl", element, _int, 64), **common)


def network_from_dml(root: DmlList) -> Network:
    """Build the model described by the first top-level ``Net`` of a resolved DML tree."""
    top = root.find("Net")
    if top is None or not isinstance(top.value, DmlList):
        raise ModelError("no top-level 'Net [ ... ]' in the model", location=root.location)
    tl = top.value
    name = tl.get("name", "top")
    prefix = tl.get("prefix", tl.get("ip", "10.0.0.0/8"))
    net = Network(name, prefix, location=top.location)
    traffic = _build_net(net, tl)
    for owner, t in traffic:
        assert isinstance(t.value, DmlList)
        for a in t.value:
            if a.key == "_schema":
                continue
            if a.key != "flow":
                raise _err(a, f"{owner.path}:traffic", f"unknown attribute {a.key!r} in traffic (allowed: flow)")
            owner.add_flow(_build_flow(owner, a))
    return net
