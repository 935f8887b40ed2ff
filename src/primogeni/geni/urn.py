"""GENI URNs: ``urn:publicid:IDN+<authority>+<type>+<name>``, parsed into a frozen value.

A :class:`Urn` holds its three parts *unescaped*; :meth:`Urn.parse` undoes the GENI publicid
escapes and ``str(urn)`` applies them, so ``Urn.parse(str(u)) == u``. Sub-authorities join with
``":"`` in :attr:`Urn.authority` (``"primo:proj1"``) and stay ``":"`` on the wire; inside one
sub-authority, a type or a name the escapes apply in this order::

    %→%25  ;→%3B  +→%2B  space→+  #→%23  ?→%3F  '→%27  ::→;  :→%3A  /→%2F

The name rules PrimoGENI enforces when it *creates* names (slice, project, user) live here too;
parsing a foreign URN checks only its shape. Every failure is a :class:`UrnError` (BADARGS)
whose message names the offending part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from primogeni.geni.errors import UrnError

PREFIX = "urn:publicid:IDN+"

# Escapes of the GENI publicid transform, in the order they are applied.
_ESCAPES = {"%": "%25", ";": "%3B", "+": "%2B", " ": "+", "#": "%23", "?": "%3F", "'": "%27", ":": "%3A", "/": "%2F"}
_UNESCAPES = {code[1:].upper(): char for char, code in _ESCAPES.items() if code.startswith("%")}

_TYPE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_SUBAUTH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,127}$")
_SLICE_RE = re.compile(r"^[a-zA-Z0-9][-a-zA-Z0-9]{0,18}$")
_PROJECT_RE = re.compile(r"^[a-zA-Z0-9][-a-zA-Z0-9]{0,31}$")
_USER_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]{0,31}$")
_MAX_URN = 1024


def escape(text: str) -> str:
    """Apply the GENI publicid escapes to one URN part (a sub-authority, type or name)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("::", i):
            out.append(";")
            i += 2
            continue
        char = text[i]
        out.append(_ESCAPES.get(char, char))
        i += 1
    return "".join(out)


def unescape(text: str) -> str:
    """Undo :func:`escape` in one pass (``+`` is a space, ``;`` is ``::``, ``%XX`` as listed)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "+":
            out.append(" ")
        elif char == ";":
            out.append("::")
        elif char == "%":
            code = text[i + 1 : i + 3].upper()
            if code not in _UNESCAPES:
                raise UrnError(f"unknown escape {text[i : i + 3]!r} in {text!r}")
            out.append(_UNESCAPES[code])
            i += 3
            continue
        else:
            out.append(char)
        i += 1
    return "".join(out)


def _check_printable(what: str, value: str) -> None:
    if not value:
        raise UrnError(f"empty {what}")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise UrnError(f"{what} {value!r} contains a control character")


def _check_authority(authority: str) -> None:
    if not authority:
        raise UrnError("empty authority")
    for part in authority.split(":"):
        if not _SUBAUTH_RE.match(part):
            raise UrnError(
                f"sub-authority {part!r} of authority {authority!r} must be letters, digits, '.', '_', '~' or '-'"
            )


@dataclass(frozen=True)
class Urn:
    """A GENI URN, its parts unescaped; ``str()`` gives the escaped wire form."""

    authority: str
    type: str
    name: str

    def __post_init__(self) -> None:
        _check_authority(self.authority)
        if not _TYPE_RE.match(self.type):
            raise UrnError(f"URN type {self.type!r} must be a letter then letters, digits, '_' or '-'")
        _check_printable("URN name", self.name)

    @classmethod
    def parse(cls, text: str) -> Urn:
        """Parse ``urn:publicid:IDN+auth+type+name`` (prefix case-insensitive)."""
        if not isinstance(text, str):
            raise UrnError(f"URN must be a string, not {type(text).__name__}")
        if len(text) > _MAX_URN:
            raise UrnError(f"URN is {len(text)} characters long; the limit is {_MAX_URN}")
        if text[: len(PREFIX)].lower() != PREFIX.lower():
            raise UrnError(f"URN {text!r} does not start with {PREFIX!r}")
        parts = text[len(PREFIX) :].split("+", 2)
        if len(parts) != 3:
            raise UrnError(f"URN {text!r} needs authority, type and name separated by '+'")
        authority, kind, name = parts
        if not name:
            raise UrnError(f"URN {text!r} has an empty name")
        return cls(":".join(unescape(p) for p in authority.split(":")), unescape(kind), unescape(name))

    def __str__(self) -> str:
        authority = ":".join(escape(p) for p in self.authority.split(":"))
        return f"{PREFIX}{authority}+{escape(self.type)}+{escape(self.name)}"

    @property
    def top_authority(self) -> str:
        """The authority before the first ``":"`` (``"primo"`` for ``"primo:proj1"``)."""
        return self.authority.split(":", 1)[0]

    @property
    def project(self) -> str | None:
        """The sub-authority after the first ``":"`` (a slice's project), else ``None``."""
        parts = self.authority.split(":")
        return parts[1] if len(parts) > 1 else None


def check_slice_name(name: str) -> None:
    """Slice (experiment) names: a letter or digit, then up to 18 letters, digits or '-'."""
    if not isinstance(name, str) or not _SLICE_RE.match(name):
        raise UrnError(f"slice name {name!r} must match {_SLICE_RE.pattern}")


def check_project_name(name: str) -> None:
    """Project names: a letter or digit, then up to 31 letters, digits or '-'."""
    if not isinstance(name, str) or not _PROJECT_RE.match(name):
        raise UrnError(f"project name {name!r} must match {_PROJECT_RE.pattern}")


def check_user_name(name: str) -> None:
    """User names: a letter, then up to 31 letters, digits or '_' (they become login names)."""
    if not isinstance(name, str) or not _USER_RE.match(name):
        raise UrnError(f"user name {name!r} must match {_USER_RE.pattern}")


def slice_urn(authority: str, project: str, name: str) -> Urn:
    """``urn:publicid:IDN+<authority>:<project>+slice+<name>`` after checking both names."""
    _check_authority(authority)
    check_project_name(project)
    check_slice_name(name)
    return Urn(f"{authority}:{project}", "slice", name)


def project_urn(authority: str, project: str) -> Urn:
    """``urn:publicid:IDN+<authority>+project+<project>`` after checking the project name."""
    _check_authority(authority)
    check_project_name(project)
    return Urn(authority, "project", project)


def user_urn(authority: str, name: str) -> Urn:
    """``urn:publicid:IDN+<authority>+user+<name>`` after checking the user name."""
    _check_authority(authority)
    check_user_name(name)
    return Urn(authority, "user", name)


__all__ = [
    "PREFIX",
    "Urn",
    "check_project_name",
    "check_slice_name",
    "check_user_name",
    "escape",
    "project_urn",
    "slice_urn",
    "unescape",
    "user_urn",
]
