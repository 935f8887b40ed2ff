"""Raw rtnetlink requests: the message and attribute encoding, and one request-reply exchange.

The agent's hot paths (devices in :mod:`primogeni.emu.links`, ingress redirects in
:mod:`primogeni.emu.patch`) encode their requests with ``struct`` and send them on a pyroute2
``IPRoute``'s own netlink socket: ~50 µs of Python per request instead of ~500 µs through pyroute2's
request machinery. :func:`talk` raises pyroute2's ``NetlinkError`` with the kernel's errno, like
pyroute2 itself, so callers handle both alike. An ``IPRoute`` must be used by one thread at a time.
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import os
import select
import struct
from collections.abc import Callable
from typing import Any

from pyroute2 import IPRoute  # type: ignore[import-untyped, unused-ignore]
from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped, unused-ignore]

from primogeni.errors import EmuError

NLM_F_REQUEST, NLM_F_ACK, NLM_F_ECHO = 0x1, 0x4, 0x8
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLMSG_ERROR, NLMSG_DONE = 2, 3

NLMSG = struct.Struct("=IHHII")
_seq = itertools.count(1 << 20)
_REPLY_TIMEOUT_MS = 10_000


def nla(kind: int, payload: bytes) -> bytes:
    """One attribute: length, type, payload, padding to 4 bytes."""
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def nla_str(kind: int, text: str) -> bytes:
    return nla(kind, text.encode() + b"\0")


def nla_u32(kind: int, value: int) -> bytes:
    return nla(kind, struct.pack("=I", value))


def nla_mac(kind: int, mac: str) -> bytes:
    raw = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    if len(raw) != 6:
        raise EmuError(f"{mac!r} is not a MAC address")
    return nla(kind, raw)


def nla_ip4(kind: int, address: str | ipaddress.IPv4Address) -> bytes:
    return nla(kind, ipaddress.IPv4Address(address).packed)


def talk(ipr: IPRoute, msg_type: int, flags: int, body: bytes) -> bytes | None:
    """Send one request on ``ipr``'s socket; its data reply (an echo, a ``get`` answer) or ``None``.

    Raises pyroute2's ``NetlinkError`` with the kernel's errno, like pyroute2 itself does.
    """
    fd = ipr.fileno()
    seq = next(_seq)
    os.write(fd, NLMSG.pack(NLMSG.size + len(body), msg_type, flags | NLM_F_REQUEST, seq, 0) + body)
    wants_ack = bool(flags & NLM_F_ACK)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    reply: bytes | None = None
    while True:
        if not poller.poll(_REPLY_TIMEOUT_MS):
            raise NetlinkError(errno.ETIMEDOUT, "no answer from the kernel")
        try:
            data = os.read(fd, 1 << 17)
        except BlockingIOError:
            continue
        offset = 0
        while offset + NLMSG.size <= len(data):
            length, mtype, _, mseq, _ = NLMSG.unpack_from(data, offset)
            if length < NLMSG.size:
                break
            message = data[offset:offset + length]
            offset += (length + 3) & ~3
            if mseq != seq:  # a stale answer to an abandoned request
                continue
            if mtype == NLMSG_ERROR:
                code = -struct.unpack_from("=i", message, NLMSG.size)[0]
                if code:
                    raise NetlinkError(code)
                return reply
            if mtype == NLMSG_DONE:
                return reply
            reply = message
            if not wants_ack:
                return reply


def fail(exc: NetlinkError | OSError, what: str, action: str) -> EmuError:
    """The ``EmuError`` for a refused request: what could not be done, the kernel's reason and errno."""
    code = exc.code if isinstance(exc, NetlinkError) else exc.errno
    text = os.strerror(code) if code else str(exc)
    return EmuError(f"cannot {action}: {text} (errno {code})", what)


def request(what: str, action: str, call: Callable[..., Any], *args: Any,
            ignore: tuple[int, ...] = (), **kwargs: Any) -> Any:
    """One netlink call; ``NetlinkError`` (or ``OSError``) becomes ``EmuError`` unless its errno is in
    ``ignore`` (then ``None``)."""
    try:
        return call(*args, **kwargs)
    except NetlinkError as exc:
        if int(exc.code) in ignore:
            return None
        raise fail(exc, what, action) from exc
    except OSError as exc:
        raise fail(exc, what, action) from exc


__all__ = ["NLMSG", "NLMSG_DONE", "NLMSG_ERROR", "NLM_F_ACK", "NLM_F_CREATE", "NLM_F_ECHO", "NLM_F_EXCL",
           "NLM_F_REPLACE", "NLM_F_REQUEST", "fail", "nla", "nla_ip4", "nla_mac", "nla_str", "nla_u32", "request",
           "talk"]
