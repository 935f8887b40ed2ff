"""nftables from Python: libnftables (``libnftables.so.1``) in process, through ctypes.

:class:`Nft` holds one libnftables context. :meth:`Nft.run` takes nft syntax (one command or a
whole batch, applied as one transaction) and returns nft's text output; :meth:`Nft.json` takes
the JSON API (``{"nftables": [...]}``) and returns the parsed JSON answer. Failures raise
:class:`~primogeni.errors.EmuError` carrying nft's own error text.

With ``netns`` the context is created, and every command is run, with the calling thread
switched into that network namespace (:func:`primogeni.emu.sys.in_netns`): libnftables opens its
netlink socket when the context is created (and reopens it after some errors), so doing both
inside the namespace is correct whichever socket it uses. An instance is thread-safe (one lock).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json as jsonlib
import threading
from pathlib import Path
from typing import Any

from primogeni.emu import sys as esys
from primogeni.errors import EmuError, FeatureMissing

LIBRARY = "libnftables.so.1"
NFT_CTX_DEFAULT = 0
NFT_CTX_OUTPUT_HANDLE = 1 << 3
NFT_CTX_OUTPUT_JSON = 1 << 4
NFT_CTX_OUTPUT_ECHO = 1 << 5

_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()


def library() -> ctypes.CDLL:
    """The loaded libnftables, with argument types declared; ``FeatureMissing`` when absent."""
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        try:
            lib = ctypes.CDLL(LIBRARY, use_errno=True)
        except OSError:
            found = ctypes.util.find_library("nftables")
            if found is None:
                raise FeatureMissing("libnftables is not installed (Debian package libnftables1)",
                                     LIBRARY) from None
            lib = ctypes.CDLL(found, use_errno=True)
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_free.restype = None
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_ctx_output_set_flags.restype = None
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_output.restype = ctypes.c_int
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.restype = ctypes.c_int
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        _lib = lib
        return lib


def available() -> bool:
    """Whether libnftables can be loaded."""
    try:
        library()
    except FeatureMissing:
        return False
    return True


class Nft:
    """One libnftables context acting in ``netns`` (a name or path; ``None``: the caller's namespace)."""

    def __init__(self, netns: str | Path | None = None):
        self.netns = netns
        self._lib = library()
        self._lock = threading.Lock()
        self._ctx: int | None = None
        with esys.in_netns(self.netns):
            ctx = self._lib.nft_ctx_new(NFT_CTX_DEFAULT)
        if not ctx:
            raise EmuError("nft_ctx_new failed", self._what())
        self._ctx = ctx
        if self._lib.nft_ctx_buffer_output(ctx) != 0 or self._lib.nft_ctx_buffer_error(ctx) != 0:
            self.close()
            raise EmuError("cannot buffer libnftables output", self._what())

    def _what(self) -> str:
        return f"nftables in {self.netns}" if self.netns is not None else "nftables"

    def _run(self, text: str, flags: int) -> str:
        with self._lock:
            if self._ctx is None:
                raise EmuError("the libnftables context is closed", self._what())
            self._lib.nft_ctx_output_set_flags(self._ctx, flags)
            with esys.in_netns(self.netns):
                rc = self._lib.nft_run_cmd_from_buffer(self._ctx, text.encode())
            out = (self._lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode()
            err = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode()
        if rc != 0:
            first = text.strip().splitlines()[0][:200] if text.strip() else ""
            detail = err.strip() or f"error {rc} (command: {first})"
            raise EmuError(f"nft failed: {detail}", self._what())
        return out

    def run(self, text: str) -> str:
        """Run nft commands (nft syntax; several lines are one transaction); nft's text output."""
        return self._run(text, NFT_CTX_DEFAULT)

    def json(self, obj: dict[str, Any] | list[Any] | str) -> dict[str, Any]:
        """Run a JSON API request (``{"nftables": [...]}``); the parsed JSON answer (``{}`` if none)."""
        text = obj if isinstance(obj, str) else jsonlib.dumps(obj)
        return self._parse(self._run(text, NFT_CTX_OUTPUT_JSON))

    def _parse(self, out: str) -> dict[str, Any]:
        if not out.strip():
            return {}
        try:
            answer = jsonlib.loads(out)
        except ValueError as exc:
            raise EmuError(f"nft answered with something that is not JSON: {out[:200]!r}", self._what()) from exc
        if not isinstance(answer, dict):
            raise EmuError(f"nft answered with unexpected JSON: {out[:200]!r}", self._what())
        return answer

    def echo(self, text: str) -> list[dict[str, Any]]:
        """Run nft commands (one transaction) and return what they added, as JSON objects with handles.

        Each item is like ``{"add": {"rule": {..., "handle": 7}}}``; handles let a rule be deleted later.
        """
        answer = self._parse(self._run(text, NFT_CTX_OUTPUT_JSON | NFT_CTX_OUTPUT_ECHO | NFT_CTX_OUTPUT_HANDLE))
        return [item for item in answer.get("nftables", []) if "metainfo" not in item]

    def list_json(self, what: str) -> list[dict[str, Any]]:
        """``list WHAT`` (e.g. ``map inet primo ports``) as the JSON API objects, metainfo left out."""
        answer = self.json(f"list {what}")
        return [item for item in answer.get("nftables", []) if "metainfo" not in item]

    def close(self) -> None:
        with self._lock:
            if self._ctx is not None:
                self._lib.nft_ctx_free(self._ctx)
                self._ctx = None

    def __enter__(self) -> Nft:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if self._ctx is not None:
                self._lib.nft_ctx_free(self._ctx)
                self._ctx = None
        except AttributeError:  # __init__ failed before the context existed
            pass
