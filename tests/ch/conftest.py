"""Fixtures of the clearinghouse tests: an authority, a controllable clock, the service.

Making an authority costs six RSA keys, so one is made per session and copied into each test's
``tmp_path``. Members are created per test, in that test's database (``db_url`` runs each state
test on SQLite and on PostgreSQL).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from primogeni.ch import Clearinghouse, init_authority
from primogeni.ch.authority import Authority
from primogeni.ch.service import ChService
from primogeni.db import make_engine


class Clock:
    """A clock that stands still unless advanced (starts at the real time, whole seconds)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture(scope="session")
def authority_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory made by init_authority (no member yet), to copy from."""
    d = tmp_path_factory.mktemp("authority") / "data"
    init_authority(d, first_member=None)
    return d


@pytest.fixture
def data_dir(authority_template: Path, tmp_path: Path) -> Path:
    d = tmp_path / "data"
    shutil.copytree(authority_template, d)
    return d


@pytest.fixture
def authority(data_dir: Path) -> Authority:
    return Authority.load(data_dir)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ch(data_dir: Path, db_url: str, clock: Clock) -> Iterator[Clearinghouse]:
    """The clearinghouse state (no server) on this test's database."""
    authority = Authority.load(data_dir)
    house = Clearinghouse(authority, make_engine(db_url, default_sqlite=authority.default_database), clock=clock)
    try:
        yield house
    finally:
        house.close()


@pytest.fixture
def service(data_dir: Path, db_url: str, clock: Clock) -> Iterator[ChService]:
    """The clearinghouse served on 127.0.0.1 (a free port) with members alice, bob and carol."""
    svc = ChService(data_dir, db_url, clock=clock)
    try:
        for name in ("alice", "bob", "carol"):
            svc.members.create_member(name, f"{name}@example.org", first_name=name.title(), last_name="Tester")
        svc.start()
        yield svc
    finally:
        svc.stop()
