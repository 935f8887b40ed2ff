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
from tests.emu.fixtures import ROOT_REASON, _skip_root_tests_unless_root, namespace_factory
from tests.immersion.support import Immerse

__all__ = ["_skip_root_tests_unless_root", "immerse", "namespaces"]


@pytest.fixture
def namespaces() -> Iterator[Callable[..., str]]:
    if os.geteuid() != 0:
        pytest.skip(ROOT_REASON)
    tag = secrets.token_hex(3)
    with namespace_factory(lambda label: f"primo-im{tag}-{label}") as make:
        yield make


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
