"""DML (the SSFNet/PRIME Domain Modeling Language): parse text into a tree, then resolve it.

The work is split in two pure steps, with no I/O except in :func:`parse_files`/:func:`load`:

* :func:`parse` turns text into a tree of :class:`DmlList` and :class:`DmlAttr` exactly as
  written, reserved keys (``_find``, ``_extends``, ``_schema``) included.
* :func:`resolve` returns a new tree in which every ``_find`` is replaced by the attribute
  it names and every ``_extends`` by the attributes of the list it names. Resolved
  attributes keep the file and line where they were *written*, so a bad value found in a
  dictionary is reported at the dictionary.

Every error is a :class:`~primogeni.errors.DmlError` whose ``location`` is ``file:line``.
The grammar and the semantics of the reserved keys are described in ``docs/DML.md``.
"""

from __future__ import annotations

import gc
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import repeat
from typing import overload

from primogeni.errors import DmlError

__all__ = [
    "DmlAttr",
    "DmlList",
    "format_location",
    "load",
    "parse",
    "parse_files",
    "resolve",
]

FIND = "_find"
EXTENDS = "_extends"
SCHEMA = "_schema"
_REFERENCES = frozenset((FIND, EXTENDS))
_RESERVED = frozenset((FIND, EXTENDS, SCHEMA))

ROOT_PATH = "."

# One token per match. The skip prefix (whitespace, comments) is possessive so that a long
# run of blanks at the end of a file fails in linear time. Groups: 1 '[', 2 ']', 3 a quoted
# string, 4 a lone '"' (an unterminated string), 5 a bare word shaped like a key, 6 any other
# bare word; none at the end of the text.
_TOKEN = re.compile(
    r"""(?:\s++|\#[^\n]*+)*+
    (?: (\[) | (\]) | ("(?:[^"\\]++|\\.)*+") | (")
      | ([A-Za-z0-9_-]++)(?![^\s\[\]\#])
      | ([^\s\[\]\#"][^\s\[\]\#]*+)
      | \Z )""",
    re.DOTALL | re.VERBOSE,
)
_OPEN, _CLOSE, _STRING, _BAD_STRING, _KEY_WORD, _WORD = 1, 2, 3, 4, 5, 6

# Keys as PRIME's lexer takes them; '.' is not allowed since it separates the steps of a path.
_KEY = re.compile(r"[A-Za-z0-9_-]+")

_ESCAPE = re.compile(r"\\(?:([0-7]{1,3})|x([0-9A-Fa-f]{1,2})|(.))", re.DOTALL)
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "a": "\a"}


def format_location(file: str, line: int) -> str:
    """Render a source location the way every DML error reports it: ``file:line``."""
    return f"{file}:{line}"


@dataclass(frozen=True, slots=True)
class DmlAttr:
    """One ``key value`` pair; ``line`` is the line of the key in ``file``.

    ``value`` is a string for an atom (quotes removed, escapes decoded) or a :class:`DmlList`.
    """

    key: str
    value: str | DmlList
    file: str
    line: int

    @property
    def location(self) -> str:
        return format_location(self.file, self.line)

    def as_text(self) -> str:
        """The atom value; a :class:`DmlError` at this attribute if the value is a list."""
        if isinstance(self.value, DmlList):
            raise DmlError(f"'{self.key}' must be a value, not a list", self.key, self.location)
        return self.value

    def as_list(self) -> DmlList:
        """The list value; a :class:`DmlError` at this attribute if the value is an atom."""
        if not isinstance(self.value, DmlList):
            raise DmlError(
                f"'{self.key}' must be a list [ ... ], not the value {self.value!r}",
                self.key,
                self.location,
            )
        return self.value


@dataclass(frozen=True, slots=True, repr=False)
class DmlList:
    """An ordered list of attributes: the root of a file or a ``[ ... ]`` value.

    Keys repeat (several ``host``), and order among same-key attributes is kept. ``line`` is
    the line of the opening ``[`` (1 for a root); ``path`` is the dotted key path where the
    list was written (``.`` for a root, ``.Net.host`` for any host of the top ``Net``).
    """

    attrs: tuple[DmlAttr, ...]
    file: str
    line: int
    path: str = ROOT_PATH

    def __repr__(self) -> str:
        return f"DmlList({self.path}, {len(self.attrs)} attributes, {self.location})"

    def __iter__(self) -> Iterator[DmlAttr]:
        return iter(self.attrs)

    def __len__(self) -> int:
        return len(self.attrs)

    @property
    def location(self) -> str:
        return format_location(self.file, self.line)

    def find(self, key: str) -> DmlAttr | None:
        """The first attribute with ``key``, or ``None``."""
        for attr in self.attrs:
            if attr.key == key:
                return attr
        return None

    def find_all(self, key: str) -> list[DmlAttr]:
        """Every attribute with ``key``, in order."""
        return [attr for attr in self.attrs if attr.key == key]

    @overload
    def get(self, key: str) -> str | None: ...
    @overload
    def get(self, key: str, default: str) -> str: ...
    def get(self, key: str, default: str | None = None) -> str | None:
        """The atom value of the first attribute with ``key``, else ``default``.

        A :class:`DmlError` at that attribute if its value is a list.
        """
        attr = self.find(key)
        return default if attr is None else attr.as_text()

    def keys(self) -> list[str]:
        """The distinct keys, in order of first appearance."""
        return list(dict.fromkeys(attr.key for attr in self.attrs))


def _child_path(parent: str, key: str) -> str:
    return f".{key}" if parent == ROOT_PATH else f"{parent}.{key}"


def _decode_escape(m: re.Match[str]) -> str:
    octal, hexa, other = m.groups()
    if octal is not None:
        return chr(int(octal, 8))
    if hexa is not None:
        return chr(int(hexa, 16))
    return _SIMPLE_ESCAPES.get(other, other)


def _unquote(token: str) -> str:
    body = token[1:-1]
    return _ESCAPE.sub(_decode_escape, body) if "\\" in body else body


class _Frame:
    """A list being parsed: where its ``[`` stood and the attributes read so far."""

    __slots__ = ("attrs", "key", "key_line", "line", "path")

    def __init__(self, key: str, key_line: int, line: int, path: str) -> None:
        self.key = key
        self.key_line = key_line
        self.line = line
        self.path = path
        self.attrs: list[DmlAttr] = []


def parse(text: str, filename: str = "<string>") -> DmlList:
    """Parse DML text into its tree as written (no reference is followed).

    Raises :class:`DmlError` with ``location`` set for every syntax error.
    """
    with _gc_paused():
        return _parse(text, filename)


def _parse(text: str, filename: str) -> DmlList:
    root = _Frame("", 0, 1, ROOT_PATH)
    stack = [root]
    top = root
    key: str | None = None  # a key read and waiting for its value
    key_line = 0
    line = 1
    pos = 0  # line counts newlines in text[:pos]
    count = text.count

    for m in _TOKEN.finditer(text):
        kind = m.lastindex
        start = m.start(kind) if kind else m.end()
        line += count("\n", pos, start)
        pos = start
        if key is None:
            if kind == _KEY_WORD:
                key = m.group(_KEY_WORD)
                key_line = line
            elif kind == _WORD:
                raise DmlError(
                    f"{m.group(_WORD)!r} is not a valid key (keys are letters, digits, '_' "
                    "and '-')",
                    top.path,
                    format_location(filename, line),
                )
            elif kind == _CLOSE:
                if top is root:
                    raise DmlError("']' has no matching '['", None, format_location(filename, line))
                stack.pop()
                value = DmlList(tuple(top.attrs), filename, top.line, top.path)
                done = top
                top = stack[-1]
                top.attrs.append(DmlAttr(done.key, value, filename, done.key_line))
            elif kind == _OPEN:
                raise DmlError(
                    "'[' has no key before it", top.path, format_location(filename, line)
                )
            elif kind == _STRING:
                raise DmlError(
                    f"expected a key, found the quoted string {m.group(_STRING)}",
                    top.path,
                    format_location(filename, line),
                )
            elif kind == _BAD_STRING:
                raise _unterminated_string(filename, line, top.path)
            else:  # end of text
                break
        elif kind in (_KEY_WORD, _WORD):
            top.attrs.append(DmlAttr(key, m.group(kind), filename, key_line))
            key = None
        elif kind == _STRING:
            top.attrs.append(DmlAttr(key, _unquote(m.group(_STRING)), filename, key_line))
            key = None
        elif kind == _OPEN:
            top = _Frame(key, key_line, line, _child_path(top.path, key))
            stack.append(top)
            key = None
        elif kind == _BAD_STRING:
            raise _unterminated_string(filename, line, _child_path(top.path, key))
        else:  # ']' or the end of text right after a key
            raise DmlError(
                f"key '{key}' has no value",
                _child_path(top.path, key),
                format_location(filename, key_line),
            )

    if top is not root:
        raise DmlError(
            f"'[' of '{top.key}' is never closed (missing ']')",
            top.path,
            format_location(filename, top.line),
        )
    return DmlList(tuple(root.attrs), filename, 1, ROOT_PATH)


def _unterminated_string(filename: str, line: int, path: str) -> DmlError:
    return DmlError("string is never closed (missing '\"')", path, format_location(filename, line))


PathLike = str | os.PathLike[str]


def parse_files(paths: PathLike | Sequence[PathLike]) -> DmlList:
    """Parse one or several files and merge their top-level attributes, in order, as one root.

    This is how PRIME and SSFNet take ``model.dml dictionary.dml``. Each attribute keeps the
    name of its own file; the root's ``file`` is the first file.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    if not paths:
        raise DmlError("no DML file given")
    roots = [parse(_read(path), os.fspath(path)) for path in paths]
    if len(roots) == 1:
        return roots[0]
    attrs = tuple(attr for root in roots for attr in root.attrs)
    return DmlList(attrs, roots[0].file, 1, ROOT_PATH)


def _read(path: PathLike) -> str:
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise DmlError(f"not UTF-8 text ({e.reason} at byte {e.start})", None, name) from e
    except OSError as e:
        raise DmlError(f"cannot read DML file: {e.strerror or e}", None, name) from e


def load(paths: PathLike | Sequence[PathLike]) -> DmlList:
    """Parse one or several files (see :func:`parse_files`) and :func:`resolve` the result."""
    return resolve(parse_files(paths))


def resolve(root: DmlList) -> DmlList:
    """Expand every ``_find`` and ``_extends`` of ``root``; return the new tree.

    In each list, the attributes written there come first, in order; then, for each
    ``_find`` and ``_extends`` in order, the attribute found (``_find``) or the attributes of
    the list found (``_extends``, itself resolved, recursively). So ``find`` sees local
    attributes before inherited ones. Subtrees without references are returned as they are
    (the tree is immutable), and a list inherited by many is resolved once and shared.
    """
    with _gc_paused():
        try:
            return _Resolver(root).resolve_list(root, None)
        except RecursionError as e:
            raise DmlError(
                "lists nested too deeply, or references chained too long, to resolve",
                root.path,
                root.location,
            ) from e


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause CPython's cyclic garbage collector while a large tree is built.

    DML trees are tuples of frozen objects and hold no cycles, so nothing is left behind;
    without the pause, the collector walks the growing tree again and again, and parsing a
    20 000-host model gets several times slower.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class _Index:
    """One list, split once: local attributes by key, and its references in order."""

    __slots__ = ("by_key", "refs")

    def __init__(self, lst: DmlList) -> None:
        self.refs: list[DmlAttr] = []
        self.by_key: dict[str, list[DmlAttr]] = {}
        for attr in lst.attrs:
            if attr.key in _REFERENCES:
                self.refs.append(attr)
            else:
                self.by_key.setdefault(attr.key, []).append(attr)


# The references being followed, innermost last, to report cycles.
_Chain = tuple[DmlAttr, ...]
# An attribute a list holds after resolution, with the reference that brought it (or None).
_Entry = tuple[DmlAttr, DmlAttr | None]


class _Resolver:
    """Follows references lazily, memoizing every result by the identity of raw objects.

    Paths are resolved on the *expanded* view of each list (so a path may go through an
    ``_extends`` or a ``_find``); relative paths start at the list holding the reference.
    """

    def __init__(self, root: DmlList) -> None:
        self.root = root
        self.indexes: dict[int, _Index] = {}
        self.targets: dict[int, DmlAttr] = {}  # id(reference) -> attribute it names
        # (id(start list), path) -> what the path names; only walks that skipped no
        # reference are kept, since a skip depends on which reference is being followed.
        self.walks: dict[tuple[int, str], DmlAttr | None] = {}
        self.skips = 0
        self.entries: dict[int, list[_Entry]] = {}
        self.resolved: dict[int, DmlList] = {}
        self.active: set[int] = set()  # lists being resolved now

    def index(self, lst: DmlList) -> _Index:
        idx = self.indexes.get(id(lst))
        if idx is None:
            idx = self.indexes[id(lst)] = _Index(lst)
        return idx

    # -- following one reference --------------------------------------------------------

    def target(self, ref: DmlAttr, holder: DmlList, chain: _Chain) -> DmlAttr:
        """The attribute ``ref`` (a ``_find`` or ``_extends`` written in ``holder``) names."""
        found = self.targets.get(id(ref))
        if found is not None:
            return found
        where = ref.location
        if isinstance(ref.value, DmlList):
            raise DmlError(f"'{ref.key}' takes a key path, not a list", holder.path, where)
        absolute, keys = _split_path(ref, holder.path)
        start = self.root if absolute else holder
        inner = _follow(ref, chain)
        cache_key = (id(start), ref.value)
        if cache_key in self.walks:
            found = self.walks[cache_key]
        else:
            skips = self.skips
            found = self.walk(start, keys, inner)
            if self.skips == skips:
                self.walks[cache_key] = found
        if found is None:
            raise DmlError(
                f"{ref.key} {ref.value}: {self.explain_missing(start, keys, inner)}",
                holder.path,
                where,
            )
        if ref.key == EXTENDS and not isinstance(found.value, DmlList):
            raise DmlError(
                f"_extends {ref.value}: names the value {found.value!r} written at "
                f"{found.location}, not a list",
                holder.path,
                where,
            )
        self.targets[id(ref)] = found
        return found

    def candidates(self, lst: DmlList, key: str, chain: _Chain) -> Iterator[DmlAttr]:
        """Attributes of the expanded ``lst`` with ``key``, in resolved order, lazily."""
        idx = self.index(lst)
        yield from idx.by_key.get(key, ())
        for ref in idx.refs:
            if chain and ref is chain[-1]:
                self.skips += 1
                continue  # a reference never names itself, nor anything through itself
            found = self.target(ref, lst, chain)
            if ref.key == FIND:
                if found.key == key:
                    yield found
            else:
                assert isinstance(found.value, DmlList)
                yield from self.candidates(found.value, key, _follow(ref, chain))

    def walk(self, lst: DmlList, keys: Sequence[str], chain: _Chain) -> DmlAttr | None:
        """The first attribute at ``keys`` below ``lst``, depth first (as PRIME searches)."""
        last = len(keys) == 1
        for attr in self.candidates(lst, keys[0], chain):
            if last:
                return attr
            if isinstance(attr.value, DmlList):
                found = self.walk(attr.value, keys[1:], chain)
                if found is not None:
                    return found
        return None

    def explain_missing(self, start: DmlList, keys: Sequence[str], chain: _Chain) -> str:
        """Say which step of a path failed, following the first match at each step."""
        lst, here = start, f"{start.path} (at {start.location})"
        for i, key in enumerate(keys):
            attr = next(self.candidates(lst, key, chain), None)
            if attr is None:
                return f"nothing found: {here} has no '{key}'"
            if i + 1 < len(keys):
                if not isinstance(attr.value, DmlList):
                    return f"nothing found: '{key}' at {attr.location} is a value, not a list"
                lst, here = attr.value, f"'{key}' at {attr.location}"
        return "nothing found"

    # -- resolving whole lists ----------------------------------------------------------

    def level(self, lst: DmlList, chain: _Chain) -> list[_Entry]:
        """The attributes ``lst`` holds once its own references are expanded (one level)."""
        done = self.entries.get(id(lst))
        if done is not None:
            return done
        out: list[_Entry] = [(attr, None) for attr in lst.attrs if attr.key not in _REFERENCES]
        for ref in lst.attrs:
            if ref.key not in _REFERENCES:
                continue
            found = self.target(ref, lst, chain)
            if ref.key == FIND:
                out.append((found, ref))
            else:
                assert isinstance(found.value, DmlList)
                inherited = self.level(found.value, _follow(ref, chain))
                out.extend((attr, via or ref) for attr, via in inherited)
        self.entries[id(lst)] = out
        return out

    def resolve_list(self, lst: DmlList, via: DmlAttr | None) -> DmlList:
        done = self.resolved.get(id(lst))
        if done is not None:
            return done
        if id(lst) in self.active:
            raise _containment_cycle(lst, via)
        self.active.add(id(lst))
        attrs: list[DmlAttr] = []
        entries: Iterable[_Entry]
        if _REFERENCES.isdisjoint([attr.key for attr in lst.attrs]):
            entries, changed = zip(lst.attrs, repeat(None)), False
        else:
            entries, changed = self.level(lst, ()), True
        for attr, ref in entries:
            value = attr.value
            if isinstance(value, DmlList):
                new = self.resolve_list(value, ref or via)
                if new is not value:
                    attr = DmlAttr(attr.key, new, attr.file, attr.line)
                    changed = True
            attrs.append(attr)
        self.active.discard(id(lst))
        result = DmlList(tuple(attrs), lst.file, lst.line, lst.path) if changed else lst
        self.resolved[id(lst)] = result
        return result


def _follow(ref: DmlAttr, chain: _Chain) -> _Chain:
    """``chain`` with ``ref`` appended; a :class:`DmlError` if ``ref`` is already on it."""
    for i, seen in enumerate(chain):
        if seen is ref:
            steps = " -> ".join(f"{r.key} {r.value} ({r.location})" for r in (*chain[i:], ref))
            raise DmlError(f"reference cycle: {steps}", None, ref.location)
    return (*chain, ref)


def _containment_cycle(lst: DmlList, via: DmlAttr | None) -> DmlError:
    if via is None:  # cannot happen for a parsed tree, which has no shared lists
        return DmlError("list contains itself", lst.path, lst.location)
    return DmlError(
        f"reference cycle: {via.key} {via.value!s} makes {lst.path} contain itself",
        lst.path,
        via.location,
    )


def _split_path(ref: DmlAttr, holder: str) -> tuple[bool, list[str]]:
    """``(absolute, keys)`` of the key path that ``ref`` names."""
    text = ref.value
    assert isinstance(text, str)
    absolute = text.startswith(".")
    keys = (text[1:] if absolute else text).split(".")
    for key in keys:
        problem = None
        if not key:
            problem = "has an empty step" if text != "." else "names the root, not an attribute"
        elif key in _RESERVED:
            problem = f"has the reserved key '{key}' as a step"
        elif _KEY.fullmatch(key) is None:
            problem = f"has the invalid step {key!r}"
        if problem:
            raise DmlError(f"{ref.key} {text}: the key path {problem}", holder, ref.location)
    return absolute, keys
