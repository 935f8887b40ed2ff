"""agent.vsys: the pure request authorisation (hostile input included) and the real FIFO server."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from primogeni.agent.spec import IfaceSpec, SliverSpec
from primogeni.agent.store import Store, VsysLink
from primogeni.agent.vsys import (
    MAX_LINE,
    MAX_LINKS,
    SCRIPTS,
    DeleteLink,
    ListLinks,
    Refusal,
    SetupLink,
    VsysServer,
    authorise,
    format_links,
)
from primogeni.errors import EmuError

SLICE = "urn:publicid:IDN+primo:p1+slice+s1"
OTHER_SLICE = "urn:publicid:IDN+primo:p1+slice+s2"
URN = "urn:publicid:IDN+primo+sliver+h1"
PEER = "10.254.0.12"
KEY = 4097

SPEC = SliverSpec(URN, SLICE, "h1", 3, (20000, 20009),
                  interfaces=(IfaceSpec("exp0", "02:00:00:00:00:01", "10.16.0.2/24"),),
                  vsys_keys=(KEY, 4098, 70000), vsys_peers=(PEER, "10.254.0.13"))
L1 = VsysLink("l1", PEER, KEY)


def refused(result: object, fragment: str) -> None:
    assert isinstance(result, Refusal), result
    assert fragment in result.reason, result.reason
    assert "\n" not in result.reason and result.reason.isascii()


# -- the pure part


def test_accepted_requests() -> None:
    assert authorise(SPEC, [], f"setup-link l1 {PEER} {KEY}\n") == SetupLink("l1", PEER, KEY)
    assert authorise(SPEC, [], b"setup-link tun_2 10.254.0.13 70000\r\n") == SetupLink("tun_2", "10.254.0.13", 70000)
    assert authorise(SPEC, [], "  setup-link\tl1   10.254.0.12 4097  ") == SetupLink("l1", PEER, KEY)
    assert authorise(SPEC, [], f"setup-link {'a' * 15} {PEER} {KEY}") == SetupLink("a" * 15, PEER, KEY)
    assert authorise(SPEC, [L1], "delete-link l1\n") == DeleteLink("l1")
    assert authorise(SPEC, [L1], "list-links\n") == ListLinks()
    assert authorise(SPEC, [], "list-links", script="list-links") == ListLinks()
    assert authorise(SPEC, [L1], f"setup-link l2 {PEER} 4098") == SetupLink("l2", PEER, 4098)


def test_only_the_slices_keys_and_peers() -> None:
    refused(authorise(SPEC, [], f"setup-link l1 {PEER} 4099"), "not one of this slice's keys")
    refused(authorise(SPEC, [], "setup-link l1 10.254.0.99 4097"), "not a node of this slice")
    refused(authorise(SPEC, [L1], f"setup-link l2 10.254.0.13 {KEY}"), "already used by vsys link l1")
    # Another slice's sliver on the same node: its spec has other keys and peers.
    other = SliverSpec("urn:publicid:IDN+primo+sliver+h9", OTHER_SLICE, "h9", 4, (20010, 20019),
                       vsys_keys=(5001,), vsys_peers=(PEER,))
    refused(authorise(other, [], f"setup-link l1 {PEER} {KEY}"), "not one of this slice's keys")
    refused(authorise(SliverSpec("urn:publicid:IDN+primo+sliver+h8", OTHER_SLICE, "h8", 5, (20020, 20029)), [],
                      f"setup-link l1 {PEER} {KEY}"), "not a node of this slice")


@pytest.mark.parametrize("label, reason", [
    ("lo", "reserved"), ("ctl0", "reserved"), ("eth0", "reserved"), ("eth1", "reserved"), ("ethx", "reserved"),
    ("exp0", "already in use"), ("l1", "already in use"),
    ("a" * 16, "must be 1-15"), ("-x", "must be 1-15"), ("L1", "must be 1-15"), ("a.b", "must be 1-15"),
    ("a/b", "must be 1-15"), ("a:b", "must be 1-15"), ("..", "must be 1-15"), ("é", "must be ASCII"),
])
def test_bad_labels(label: str, reason: str) -> None:
    refused(authorise(SPEC, [L1], f"setup-link {label} {PEER} {KEY}"), reason)


@pytest.mark.parametrize("remote", [
    "10.254.0.012", "010.254.0.12", "10.254.0.256", "10.254.0", "10.254.0.12.1", "::1", "localhost",
    "10.254.0.12/24", "0x0afe000c", "167641100", "-10.254.0.12", "１0.254.0.12",
])
def test_bad_remotes(remote: str) -> None:
    result = authorise(SPEC, [], f"setup-link l1 {remote} {KEY}")
    assert isinstance(result, Refusal), result


@pytest.mark.parametrize("key, reason", [
    ("-4097", "not a decimal number"), ("+4097", "not a decimal number"), ("4097.0", "not a decimal number"),
    ("0x1001", "not a decimal number"), ("99999999999999999999", "not a decimal number"), ("1e3", "not a decimal"),
    ("0", "out of range"), ("16777216", "out of range"), ("99999999", "out of range"), ("٤٠٩٧", "must be ASCII"),
    ("04097", None), ("00004097", None),
])
def test_keys(key: str, reason: str | None) -> None:
    result = authorise(SPEC, [], f"setup-link l1 {PEER} {key}")
    if reason is None:  # leading zeros are still the same decimal number
        assert result == SetupLink("l1", PEER, KEY)
    else:
        refused(result, reason)


@pytest.mark.parametrize("line, reason", [
    ("", "empty request"), ("\n", "empty request"), ("   \t ", "empty request"),
    ("setup-link", "usage: setup-link LABEL REMOTE KEY"), (f"setup-link l1 {PEER}", "usage"),
    (f"setup-link l1 {PEER} {KEY} extra", "usage"), ("delete-link", "usage: delete-link LABEL"),
    ("delete-link l1 l2", "usage"), ("list-links all", "usage: list-links"),
    ("reboot", "unknown request 'reboot'"), ("SETUP-LINK l1 10.254.0.12 4097", "unknown request"),
    (f"setup-link l1 {PEER} {KEY}\x00", "control characters"), (f"setup-link l1\x00 {PEER} {KEY}", "control"),
    ("list-links\x1b[2J", "control characters"), ("list-links\x7f", "control characters"),
    (f"setup-link l1 {PEER} {KEY}\nlist-links", "control characters"),
    ("setup-link l1 10.254.0.12 4097 ☃", "must be ASCII"), ("delete-link ‮l1", "must be ASCII"),
    ("x" * (MAX_LINE + 1), "longer than"), ("list-links" + " " * MAX_LINE, "longer than"),
    ("delete-link nosuch", "no vsys link 'nosuch'"),
])
def test_malformed_requests(line: str, reason: str) -> None:
    refused(authorise(SPEC, [L1], line), reason)


def test_hostile_bytes_never_raise() -> None:
    for raw in (b"\xff\xfe", b"setup-link \xc3\x28 10.254.0.12 4097", b"\x00" * 300, bytes(range(256)),
                "setup-link l1 \udcff 1".encode("utf-8", "surrogateescape")):
        assert isinstance(authorise(SPEC, [], raw), Refusal)
    long_token = "delete-link " + "z" * 200
    result = authorise(SPEC, [], long_token)
    refused(result, "no vsys link")
    assert isinstance(result, Refusal) and len(result.reason) < 80  # hostile tokens are clipped


def test_the_verb_must_match_the_fifo() -> None:
    refused(authorise(SPEC, [L1], "delete-link l1", script="setup-link"), "go to delete-link.in")
    assert authorise(SPEC, [L1], "delete-link l1", script="delete-link") == DeleteLink("l1")


def test_at_most_15_links() -> None:
    keys = tuple(range(5000, 5000 + MAX_LINKS + 1))
    spec = SliverSpec(URN, SLICE, "h1", 3, (20000, 20009), vsys_keys=keys, vsys_peers=(PEER,))
    existing = [VsysLink(f"t{i}", PEER, keys[i]) for i in range(MAX_LINKS)]
    refused(authorise(spec, existing, f"setup-link t99 {PEER} {keys[-1]}"), f"at most {MAX_LINKS}")
    assert authorise(spec, existing[:-1], f"setup-link t99 {PEER} {keys[-1]}") == SetupLink("t99", PEER, keys[-1])


def test_format_links() -> None:
    assert format_links([]) == "OK"
    assert format_links([L1, VsysLink("l2", "10.254.0.13", 4098)]) == "OK l1:10.254.0.12:4097 l2:10.254.0.13:4098"


# -- the server, over real FIFOs


class FakeBackend:
    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.fail: Exception | None = None

    def vsys_setup_link(self, sliver_urn: str, label: str, remote: str, key: int) -> None:
        if self.fail is not None:
            raise self.fail
        self.calls.append(("setup", sliver_urn, label, remote, key))

    def vsys_delete_link(self, sliver_urn: str, label: str) -> None:
        if self.fail is not None:
            raise self.fail
        self.calls.append(("delete", sliver_urn, label))


def ask(directory: Path, script: str, line: str) -> str:
    """What a process in the sliver does: write the request, read one answer line."""
    result = subprocess.run(
        ["sh", "-c", f'printf "%s\\n" "$1" > "$2/{script}.in"; head -1 "$2/{script}.out"', "sh", line, str(directory)],
        capture_output=True, text=True, timeout=10, check=True,
    )
    return result.stdout.rstrip("\n")


Served = tuple[Store, FakeBackend, VsysServer, Path]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    store = Store(tmp_path / "state")
    store.put_sliver(SPEC)
    backend = FakeBackend()
    server = VsysServer(store, backend)
    directory = tmp_path / "state" / "vsys" / str(SPEC.slot)
    server.add_sliver(SPEC, directory)
    server.start()
    try:
        yield store, backend, server, directory
    finally:
        server.stop()


def test_fifos_serve_the_sliver_and_only_it(served: Served) -> None:
    _store, _backend, server, directory = served
    names = sorted(p.name for p in directory.iterdir())
    assert names == sorted(f"{s}.{end}" for s in SCRIPTS for end in ("in", "out"))
    for path in directory.iterdir():
        st = path.lstat()
        assert stat.S_ISFIFO(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o666  # any user of the sliver, through its /vsys mount
        assert st.st_uid == os.geteuid()
    assert stat.S_IMODE(directory.parent.stat().st_mode) == 0o700  # other slivers cannot reach it by path
    assert server.served() == {URN: directory}


def test_requests_through_real_fifos(served: Served) -> None:
    store, backend, _server, directory = served
    assert ask(directory, "list-links", "list-links") == "OK"
    assert ask(directory, "setup-link", f"setup-link l1 {PEER} {KEY}") == "OK l1"
    assert backend.calls == [("setup", URN, "l1", PEER, KEY)]
    assert store.vsys_links(URN) == [L1]
    assert ask(directory, "list-links", "list-links") == "OK l1:10.254.0.12:4097"
    # Refused: nothing changes, no realizer call, no store write.
    answer = ask(directory, "setup-link", f"setup-link l2 {PEER} 9999")
    assert answer == "ERROR key 9999 is not one of this slice's keys"
    assert ask(directory, "setup-link", f"setup-link l2 10.9.9.9 {KEY}").startswith("ERROR remote 10.9.9.9")
    assert ask(directory, "setup-link", "delete-link l1").startswith("ERROR delete-link requests go to")
    assert len(backend.calls) == 1
    assert Store(directory.parent.parent).vsys_links(URN) == [L1]
    assert ask(directory, "delete-link", "delete-link l1") == "OK"
    assert backend.calls[-1] == ("delete", URN, "l1")
    assert store.vsys_links(URN) == []
    assert ask(directory, "delete-link", "delete-link l1") == "ERROR no vsys link 'l1'"


def test_a_realizer_failure_is_an_error_and_stores_nothing(served: Served) -> None:
    store, backend, _server, directory = served
    backend.fail = EmuError("VXLAN device exists", "primox4097")
    assert ask(directory, "setup-link", f"setup-link l1 {PEER} {KEY}") == "ERROR primox4097: VXLAN device exists"
    assert store.vsys_links(URN) == []
    backend.fail = RuntimeError("bug\nwith a newline")
    assert ask(directory, "setup-link", f"setup-link l1 {PEER} {KEY}") == "ERROR internal error (see the agent's log)"
    backend.fail = None
    assert ask(directory, "setup-link", f"setup-link l1 {PEER} {KEY}") == "OK l1"  # the thread survived


def test_hostile_writers_do_not_hurt_the_server(served: Served) -> None:
    store, backend, _server, directory = served
    # An over-long line without a newline for a while, then its end: one error, then service as usual.
    with open(directory / "setup-link.in", "wb") as fifo:
        fifo.write(b"A" * 5000)
        fifo.flush()
        fifo.write(b"B" * 5000 + b"\n")
    with open(directory / "setup-link.out", "rb") as out:
        assert out.readline() == f"ERROR request longer than {MAX_LINE} bytes\n".encode()
    with open(directory / "list-links.in", "wb") as fifo:
        fifo.write(b"\x00\xff\xfe garbage\n")
    with open(directory / "list-links.out", "rb") as out:
        assert out.readline() == b"ERROR request must be ASCII\n"
    assert ask(directory, "list-links", "list-links") == "OK"
    assert ask(directory, "setup-link", f"setup-link l1 {PEER} {KEY}") == "OK l1"
    assert backend.calls == [("setup", URN, "l1", PEER, KEY)]
    assert store.vsys_links(URN) == [L1]


def test_two_requests_in_one_write_get_two_answers(served: Served) -> None:
    _store, _backend, _server, directory = served
    with open(directory / "list-links.in", "wb") as fifo:
        fifo.write(b"list-links\nlist-links extra\n")
    with open(directory / "list-links.out", "rb") as out:
        assert out.readline() == b"OK\n"
        assert out.readline() == b"ERROR usage: list-links\n"


def test_many_slivers_concurrently(tmp_path: Path) -> None:
    store = Store(tmp_path / "state")
    backend = FakeBackend()
    server = VsysServer(store, backend)
    specs = [SliverSpec(f"urn:publicid:IDN+primo+sliver+h{i}", SLICE, f"h{i}", i, (20000 + 10 * i, 20009 + 10 * i),
                        vsys_keys=(5000 + i,), vsys_peers=(PEER,)) for i in range(8)]
    dirs = {}
    for spec in specs:
        store.put_sliver(spec)
        dirs[spec.urn] = tmp_path / "state" / "vsys" / str(spec.slot)
        server.add_sliver(spec, dirs[spec.urn])
    server.start()
    answers: dict[str, str] = {}

    def one(spec: SliverSpec) -> None:
        answers[spec.urn] = ask(dirs[spec.urn], "setup-link", f"setup-link v{spec.slot} {PEER} {5000 + spec.slot}")

    try:
        threads = [threading.Thread(target=one, args=(s,)) for s in specs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert answers == {s.urn: f"OK v{s.slot}" for s in specs}
        assert all(store.vsys_links(s.urn) == [VsysLink(f"v{s.slot}", PEER, 5000 + s.slot)] for s in specs)
    finally:
        server.stop()


def test_remove_and_restart(tmp_path: Path) -> None:
    store = Store(tmp_path / "state")
    store.put_sliver(SPEC)
    directory = tmp_path / "state" / "vsys" / "3"
    server = VsysServer(store, FakeBackend())
    server.add_sliver(SPEC, directory)
    server.add_sliver(SPEC, directory)  # idempotent
    server.start()
    assert ask(directory, "list-links", "list-links") == "OK"
    server.stop()
    server.stop()
    assert len(list(directory.iterdir())) == 6  # a stopped agent leaves the FIFOs for the next one

    # Something the sliver put in place of a FIFO (a symlink to a host file) is replaced, not followed.
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (directory / "list-links.out").unlink()
    (directory / "list-links.out").symlink_to(victim)
    again = VsysServer(store, FakeBackend())
    again.add_sliver(SPEC, directory)
    again.start()
    try:
        assert ask(directory, "list-links", "list-links") == "OK"
        assert victim.read_text() == "precious"
        assert stat.S_ISFIFO((directory / "list-links.out").lstat().st_mode)
        again.remove_sliver(URN)
        again.remove_sliver(URN)
        assert list(directory.iterdir()) == []
        assert again.served() == {}
    finally:
        again.stop()
    with pytest.raises(EmuError, match="stopped"):
        again.add_sliver(SPEC, directory)


def test_a_released_sliver_gets_an_error(served: Served) -> None:
    store, backend, server, _directory = served
    store.drop_sliver(URN)
    assert server.handle(URN, "list-links", b"list-links") == "ERROR no such sliver"
    assert backend.calls == []


@pytest.mark.root  # chown to someone else
def test_a_vsys_tree_that_is_not_ours_is_refused(tmp_path: Path) -> None:
    """/dev/shm is world-writable: a symlink (or someone else's directory) where the tree goes is refused."""
    store = Store(tmp_path / "state")
    store.put_sliver(SPEC)
    server = VsysServer(store, FakeBackend())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "shm").mkdir()
    (tmp_path / "shm" / "agent").symlink_to(elsewhere)
    try:
        with pytest.raises(EmuError, match="not a directory of ours"):
            server.add_sliver(SPEC, tmp_path / "shm" / "agent" / str(SPEC.slot))
        assert list(elsewhere.iterdir()) == []  # nothing was made through the link
        foreign = tmp_path / "foreign"
        (foreign / "agent").mkdir(parents=True)
        os.chown(foreign / "agent", 65534, 65534)
        with pytest.raises(EmuError, match="not a directory of ours"):
            server.add_sliver(SPEC, foreign / "agent" / str(SPEC.slot))
        assert list((foreign / "agent").iterdir()) == []
        server.add_sliver(SPEC, tmp_path / "mine" / "agent" / str(SPEC.slot))  # a fresh tree: made root-only
        assert stat.S_IMODE(os.stat(tmp_path / "mine" / "agent").st_mode) == 0o700
    finally:
        server.stop()
