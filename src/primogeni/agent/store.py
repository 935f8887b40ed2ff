"""The agent's desired state on disk: what the AM told it, so that a restarted agent knows it.

Layout under ``state_dir`` (one JSON file per object, named from a hash of its URN or id)::

    slivers/<sha>.json   {"version", "spec": SliverSpec, "run_state": "started"|"stopped", "vsys_links": [...]}
    links/<sha>.json     {"version", "spec": LinkSpec}
    events/<id>.json     {"version", "spec": EventSpec, "state": ..., "detail": ...}

Every write goes to a temporary file in the same directory and is renamed over the old one, so a
crash of the process leaves either the old or the new file, never a torn one (no fsync: this
protects against process crashes, not power loss). Everything is read once, when the store is
opened, into an in-memory cache; reads never touch the disk afterwards. All methods are
thread-safe (one lock).

vsys links live inside their sliver's record: they go when the sliver goes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from primogeni.agent.spec import EventSpec, LinkSpec, SliverSpec, SpecError
from primogeni.errors import EmuError

STORE_VERSION = 1
RUN_STATES = ("started", "stopped")
EVENT_STATES = ("scheduled", "applying", "applied", "failed")
_TMP_SUFFIX = ".tmp"


class StoreError(EmuError):
    """The state directory holds something unreadable, or an operation names an object not held."""


@dataclass(frozen=True)
class VsysLink:
    """A link a sliver made itself through vsys ``setup-link``: interface ``label`` tunnelled to ``remote``."""

    label: str
    remote: str
    key: int

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "remote": self.remote, "key": self.key}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VsysLink:
        return cls(str(data["label"]), str(data["remote"]), int(data["key"]))


@dataclass
class _Sliver:
    spec: SliverSpec
    run_state: str
    vsys: dict[str, VsysLink]  # label → link, in creation order


@dataclass
class _Event:
    spec: EventSpec
    state: str
    detail: str


def file_name(key: str) -> str:
    """The file name (without directory) of the record for ``key`` (a URN)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:40] + ".json"


class Store:
    """Desired state of one agent (see the module docstring)."""

    def __init__(self, state_dir: str | os.PathLike[str]):
        self.state_dir = Path(state_dir)
        self._lock = threading.RLock()
        self._dirs = {name: self.state_dir / name for name in ("slivers", "links", "events")}
        for directory in self._dirs.values():
            directory.mkdir(parents=True, exist_ok=True)
        self._slivers: dict[str, _Sliver] = {}
        self._links: dict[str, LinkSpec] = {}
        self._events: dict[int, _Event] = {}
        self._load()

    # -- loading (once)

    def _records(self, kind: str) -> list[tuple[Path, dict[str, Any]]]:
        found = []
        for path in sorted(self._dirs[kind].iterdir()):
            if path.name.endswith(_TMP_SUFFIX):
                path.unlink(missing_ok=True)  # a write cut short by a crash; the old file is intact
                continue
            if not path.name.endswith(".json"):
                continue
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                raise StoreError(f"cannot read agent state: {exc}", str(path)) from None
            if not isinstance(data, dict) or data.get("version") != STORE_VERSION or "spec" not in data:
                raise StoreError(f"not an agent state record of version {STORE_VERSION}", str(path))
            found.append((path, data))
        return found

    def _load(self) -> None:
        for path, data in self._records("slivers"):
            try:
                spec = SliverSpec.from_dict(data["spec"])
                run_state = data.get("run_state", "started")
                if run_state not in RUN_STATES:
                    raise SpecError(f"run_state {run_state!r}")
                links = [VsysLink.from_dict(v) for v in data.get("vsys_links", [])]
            except (SpecError, KeyError, TypeError, ValueError) as exc:
                raise StoreError(f"malformed sliver record: {exc}", str(path)) from None
            self._slivers[spec.urn] = _Sliver(spec, run_state, {v.label: v for v in links})
        for path, data in self._records("links"):
            try:
                link = LinkSpec.from_dict(data["spec"])
            except SpecError as exc:
                raise StoreError(f"malformed link record: {exc}", str(path)) from None
            self._links[link.urn] = link
        for path, data in self._records("events"):
            try:
                event = EventSpec.from_dict(data["spec"])
                state = data["state"]
                if state not in EVENT_STATES:
                    raise SpecError(f"state {state!r}")
                detail = str(data.get("detail", ""))
            except (SpecError, KeyError, TypeError) as exc:
                raise StoreError(f"malformed event record: {exc}", str(path)) from None
            self._events[event.event_id] = _Event(event, state, detail)

    # -- writing

    def _write(self, kind: str, name: str, record: dict[str, Any]) -> None:
        path = self._dirs[kind] / name
        tmp = path.with_name(f".{name}.{os.getpid()}.{threading.get_ident()}{_TMP_SUFFIX}")
        try:
            tmp.write_text(json.dumps({"version": STORE_VERSION, **record}, sort_keys=True), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):  # the error that matters is the one being raised
                tmp.unlink(missing_ok=True)
            raise StoreError(f"cannot write agent state: {exc.strerror or exc}", str(path)) from None

    def _remove(self, kind: str, name: str) -> None:
        path = self._dirs[kind] / name
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot remove agent state: {exc.strerror or exc}", str(path)) from None

    def _write_sliver(self, record: _Sliver) -> None:
        self._write("slivers", file_name(record.spec.urn), {
            "spec": record.spec.to_dict(), "run_state": record.run_state,
            "vsys_links": [v.to_dict() for v in record.vsys.values()],
        })

    def _sliver(self, urn: str) -> _Sliver:
        record = self._slivers.get(urn)
        if record is None:
            raise StoreError("no such sliver here", urn)
        return record

    # -- slivers

    def put_sliver(self, spec: SliverSpec) -> None:
        """Store (or replace) a sliver's spec; a replaced sliver keeps its run state and vsys links.

        A new sliver's run state is ``"started"``.
        """
        with self._lock:
            old = self._slivers.get(spec.urn)
            record = _Sliver(spec, old.run_state, dict(old.vsys)) if old else _Sliver(spec, "started", {})
            self._write_sliver(record)
            self._slivers[spec.urn] = record

    def get_sliver(self, urn: str) -> SliverSpec | None:
        with self._lock:
            record = self._slivers.get(urn)
            return record.spec if record else None

    def drop_sliver(self, urn: str) -> None:
        """Forget a sliver (with its run state and vsys links); an unknown URN is fine."""
        with self._lock:
            if urn in self._slivers:
                self._remove("slivers", file_name(urn))
                del self._slivers[urn]

    def slivers(self) -> dict[str, SliverSpec]:
        with self._lock:
            return {urn: record.spec for urn, record in self._slivers.items()}

    def run_state(self, urn: str) -> str:
        """``"started"`` or ``"stopped"``: whether the AM wants the sliver's container running."""
        with self._lock:
            return self._sliver(urn).run_state

    def set_run_state(self, urn: str, state: str) -> None:
        if state not in RUN_STATES:
            raise ValueError(f"run state {state!r} is not one of {RUN_STATES}")
        with self._lock:
            old = self._sliver(urn)
            if old.run_state == state:
                return
            record = _Sliver(old.spec, state, old.vsys)
            self._write_sliver(record)
            self._slivers[urn] = record

    # -- links

    def put_link(self, spec: LinkSpec) -> None:
        with self._lock:
            self._write("links", file_name(spec.urn), {"spec": spec.to_dict()})
            self._links[spec.urn] = spec

    def get_link(self, urn: str) -> LinkSpec | None:
        with self._lock:
            return self._links.get(urn)

    def drop_link(self, urn: str) -> None:
        with self._lock:
            if urn in self._links:
                self._remove("links", file_name(urn))
                del self._links[urn]

    def links(self) -> dict[str, LinkSpec]:
        with self._lock:
            return dict(self._links)

    # -- events

    def put_event(self, spec: EventSpec) -> bool:
        """Record a new event as ``"scheduled"``; False (and nothing written) when its id is known."""
        with self._lock:
            if spec.event_id in self._events:
                return False
            record = _Event(spec, "scheduled", "")
            self._write_event(record)
            self._events[spec.event_id] = record
            return True

    def _write_event(self, record: _Event) -> None:
        self._write("events", f"{record.spec.event_id}.json",
                    {"spec": record.spec.to_dict(), "state": record.state, "detail": record.detail})

    def get_event(self, event_id: int) -> EventSpec | None:
        with self._lock:
            record = self._events.get(event_id)
            return record.spec if record else None

    def event_state(self, event_id: int) -> str | None:
        with self._lock:
            record = self._events.get(event_id)
            return record.state if record else None

    def event_detail(self, event_id: int) -> str:
        """What happened when the event was applied (``""`` if nothing to say or unknown)."""
        with self._lock:
            record = self._events.get(event_id)
            return record.detail if record else ""

    def set_event_state(self, event_id: int, state: str, detail: str = "") -> None:
        if state not in EVENT_STATES:
            raise ValueError(f"event state {state!r} is not one of {EVENT_STATES}")
        with self._lock:
            old = self._events.get(event_id)
            if old is None:
                raise StoreError("no such event here", f"event {event_id}")
            record = _Event(old.spec, state, detail)
            self._write_event(record)
            self._events[event_id] = record

    def pending_events(self) -> list[EventSpec]:
        """Events not finished (``"scheduled"`` or ``"applying"``), by time then id."""
        with self._lock:
            pending = [r.spec for r in self._events.values() if r.state in ("scheduled", "applying")]
        return sorted(pending, key=lambda e: (e.at, e.event_id))

    # -- vsys links

    def put_vsys_link(self, sliver_urn: str, link: VsysLink) -> None:
        """Record (or replace, by label) a vsys link of a held sliver."""
        with self._lock:
            old = self._sliver(sliver_urn)
            record = _Sliver(old.spec, old.run_state, {**old.vsys, link.label: link})
            self._write_sliver(record)
            self._slivers[sliver_urn] = record

    def drop_vsys_link(self, sliver_urn: str, label: str) -> None:
        """Forget a vsys link; an unknown sliver or label is fine."""
        with self._lock:
            old = self._slivers.get(sliver_urn)
            if old is None or label not in old.vsys:
                return
            record = _Sliver(old.spec, old.run_state, {k: v for k, v in old.vsys.items() if k != label})
            self._write_sliver(record)
            self._slivers[sliver_urn] = record

    def vsys_links(self, sliver_urn: str) -> list[VsysLink]:
        """The sliver's vsys links in creation order (empty for an unknown sliver)."""
        with self._lock:
            record = self._slivers.get(sliver_urn)
            return list(record.vsys.values()) if record else []

    def vsys_keys(self) -> set[int]:
        """The keys every sliver's vsys links use."""
        with self._lock:
            return {link.key for record in self._slivers.values() for link in record.vsys.values()}

    def vsys_remotes(self, key: int, skip: tuple[str, str] | None = None) -> set[str] | None:
        """The remotes of the vsys links with ``key`` (``skip``: one (sliver urn, label) left out);
        ``None`` when no vsys link uses ``key``. One pass under the lock."""
        with self._lock:
            found = [link.remote for urn, record in self._slivers.items() for link in record.vsys.values()
                     if link.key == key and (urn, link.label) != skip]
        return set(found) if found else None


__all__ = ["EVENT_STATES", "RUN_STATES", "STORE_VERSION", "Store", "StoreError", "VsysLink", "file_name"]
