"""Fixtures for kernel plumbing tests: throwaway network namespaces, and skipping root tests when not root.

``netns_factory(label="")`` makes a namespace named ``primo-t<6 hex>[-label]`` (unique, so tests
running at the same time never collide) and returns its name; at teardown, whatever happened, every
process still inside a namespace it made is killed (by pid) and the namespace is removed, which
takes its devices, routes and nftables with it.

Tests marked ``@pytest.mark.root`` are skipped, saying why, when not run as root.
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import suppress

import pytest

from primogeni.emu import netns
from primogeni.errors import EmuError

ROOT_REASON = "needs root (creates network namespaces); run the tests as root, e.g. `sudo make test`"


@pytest.fixture(autouse=True)
def _skip_root_tests_unless_root(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("root") is not None and os.geteuid() != 0:
        pytest.skip(ROOT_REASON)


def _kill_inside(name: str) -> None:
    """SIGKILL the processes in namespace ``name`` (they are the test's) and wait briefly for them."""
    try:
        victims = [pid for pid in netns.pids(name) if pid != os.getpid()]
    except EmuError:  # the namespace is gone already
        return
    for pid in victims:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2
    while victims and time.monotonic() < deadline:
        victims = [pid for pid in victims if os.path.exists(f"/proc/{pid}")]
        if victims:
            time.sleep(0.01)


@pytest.fixture
def netns_factory() -> Iterator[Callable[..., str]]:
    """Make uniquely named ``primo-t…`` namespaces; all are emptied and removed at teardown."""
    if os.geteuid() != 0:
        pytest.skip(ROOT_REASON)
    made: list[str] = []

    def make(label: str = "") -> str:
        name = f"primo-t{secrets.token_hex(3)}" + (f"-{label}" if label else "")
        netns.create(name)
        made.append(name)
        return name

    try:
        yield make
    finally:
        for name in reversed(made):
            _kill_inside(name)
            netns.remove(name)
