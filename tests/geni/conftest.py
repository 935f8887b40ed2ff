"""Fixtures for the GENI tests: one test federation per session, a fresh verifier per test."""

from __future__ import annotations

import pytest
from tests.geni.fixtures import Clock, Federation, build_federation, make_verifier

from primogeni.geni.cred import Verifier


@pytest.fixture(scope="session")
def fed() -> Federation:
    return build_federation()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def verifier(fed: Federation, clock: Clock) -> Verifier:
    return make_verifier(fed, clock)
