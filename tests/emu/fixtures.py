"""Helpers shared by the kernel-plumbing and agent test fixtures (``tests/emu/conftest.py``,
``tests/agent/conftest.py``): skipping root tests when not root, and emptying a test's namespace.

Import from any test folder with ``from tests.emu.fixtures import ...``.
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import suppress

import pytest

from primogeni.emu import netns
from primogeni.errors import EmuError

ROOT_REASON = ("needs root (creates network namespaces, containers, cgroups); run the tests as root, "
               "e.g. `sudo make test`")


@pytest.fixture(autouse=True)
def _skip_root_tests_unless_root(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("root") is not None and os.geteuid() != 0:
        pytest.skip(ROOT_REASON)


def _is_forker(pid: int) -> bool:
    """emu.container's forker: our child running our program (it lives in whichever namespace first used it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            parent = int(f.read().rsplit(")", 1)[1].split()[1])
        with open(f"/proc/{pid}/cmdline", "rb") as f, open("/proc/self/cmdline", "rb") as g:
            return parent == os.getpid() and f.read() == g.read()
    except (OSError, ValueError, IndexError):
        return False


def kill_inside(name: str) -> None:
    """SIGKILL the processes in namespace ``name`` (they are the test's; never ourselves or our
    container forker) and wait briefly for them."""
    try:
        victims = [pid for pid in netns.pids(name) if pid != os.getpid() and not _is_forker(pid)]
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
