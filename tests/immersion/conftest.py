"""Fixtures for the immersion tests: throwaway namespaces, and ``primo immerse`` processes.

``namespaces(label)`` makes ``primo-im<tag>-<label>`` (the tag is random per test, so tests running
at the same time never collide); at teardown, whatever happened, every process left inside one is
killed (by pid) and the namespaces are removed.

``immerse(sim_ns, *args)`` starts ``primo immerse *args`` inside namespace ``sim_ns`` and returns a
:class:`~tests.immersion.support.Immerse`; at teardown, a run still alive is killed by pid.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.emu.fixtures import ROOT_REASON, _skip_root_tests_unless_root, kill_inside
from tests.immersion.support import Immerse

from primogeni.emu import netns

__all__ = ["_skip_root_tests_unless_root", "immerse", "namespaces"]


@pytest.fixture
def namespaces() -> Iterator[Callable[[str], str]]:
    if os.geteuid() != 0:
        pytest.skip(ROOT_REASON)
    tag = secrets.token_hex(3)
    made: list[str] = []

    def make(label: str) -> str:
        name = f"primo-im{tag}-{label}"
        netns.create(name)
        made.append(name)
        return name

    try:
        yield make
    finally:
        for name in reversed(made):
            kill_inside(name)
            netns.remove(name)


@pytest.fixture
def immerse() -> Iterator[Callable[..., Immerse]]:
    started: list[Immerse] = []

    def start(sim_ns: str, *args: str, **popen: Any) -> Immerse:
        run = Immerse(sim_ns, args, **popen)
        started.append(run)
        return run

    try:
        yield start
    finally:
        for run in started:
            run.kill()
