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
from collections.abc import Callable, Iterator

import pytest
from tests.emu.fixtures import ROOT_REASON, _skip_root_tests_unless_root, namespace_factory

__all__ = ["_skip_root_tests_unless_root", "netns_factory"]


@pytest.fixture
def netns_factory() -> Iterator[Callable[..., str]]:
    """Make uniquely named ``primo-t…`` namespaces; all are emptied and removed at teardown."""
    if os.geteuid() != 0:
        pytest.skip(ROOT_REASON)
    with namespace_factory(lambda label: f"primo-t{secrets.token_hex(3)}" + (f"-{label}" if label else "")) as make:
        yield make
