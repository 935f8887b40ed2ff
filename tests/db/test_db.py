"""primogeni.db on SQLite and PostgreSQL: engine set-up, transactions, serialised writes, errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, ForeignKey, Integer, String, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from primogeni.db import DbError, make_engine, redact, session_factory, transaction


class Base(DeclarativeBase):
    pass


class Counter(Base):
    __tablename__ = "counter"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(Integer)


class Owner(Base):
    __tablename__ = "owner"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)


class Item(Base):
    __tablename__ = "item"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("owner.id"))


@pytest.fixture
def engine(db_url: str, tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(db_url, default_sqlite=tmp_path / "unused.db")
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


def test_default_is_sqlite_file_with_wal_and_foreign_keys(tmp_path: Path) -> None:
    engine = make_engine(None, default_sqlite=tmp_path / "am.db")
    try:
        assert engine.dialect.name == "sqlite"
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert (tmp_path / "am.db").exists()
    finally:
        engine.dispose()


def test_sqlite_transactions_begin_immediate(tmp_path: Path) -> None:
    engine = make_engine(None, default_sqlite=tmp_path / "am.db")
    statements: list[str] = []

    from sqlalchemy import event

    @event.listens_for(engine, "before_cursor_execute")
    def record(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    try:
        with transaction(session_factory(engine)) as session:
            session.execute(text("SELECT 1"))
        assert statements[:2] == ["BEGIN IMMEDIATE", "SELECT 1"]
    finally:
        engine.dispose()


def test_transaction_commits_and_rolls_back(engine: Engine) -> None:
    factory = session_factory(engine)
    with transaction(factory) as session:
        session.add(Counter(id=1, value=5))
    with pytest.raises(RuntimeError), transaction(factory) as session:
        session.get(Counter, 1).value = 99  # type: ignore[union-attr]
        session.flush()
        raise RuntimeError("boom")
    with transaction(factory) as session:
        counter = session.get(Counter, 1)
        assert counter is not None and counter.value == 5
    assert counter.value == 5  # still readable after commit (expire_on_commit=False)


def test_constraints_are_enforced(engine: Engine) -> None:
    factory = session_factory(engine)
    with transaction(factory) as session:
        session.add(Owner(id=1, name="alice"))
    with pytest.raises(IntegrityError), transaction(factory) as session:
        session.add(Owner(id=2, name="alice"))  # unique
    with pytest.raises(IntegrityError), transaction(factory) as session:
        session.add(Item(id=1, owner_id=42))  # foreign key (SQLite too: foreign_keys=ON)


def test_concurrent_read_modify_write_is_serialised(engine: Engine) -> None:
    """8 threads each read the counter, pause, and write it back +1: no update may be lost."""
    factory = session_factory(engine)
    with transaction(factory) as session:
        session.add(Counter(id=1, value=0))
    threads, rounds = 8, 25
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work() -> None:
        try:
            start.wait()
            for _ in range(rounds):
                with transaction(factory) as session:
                    # FOR UPDATE locks the row on PostgreSQL; SQLite ignores it and relies on
                    # BEGIN IMMEDIATE. Either way the read below sees the latest committed value.
                    value = session.execute(select(Counter.value).where(Counter.id == 1).with_for_update()).scalar_one()
                    time.sleep(0.001)  # widen the window a lost update would need
                    session.get(Counter, 1).value = value + 1  # type: ignore[union-attr]
        except BaseException as exc:  # reported below, in the test thread
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    with transaction(factory) as session:
        assert session.get(Counter, 1).value == threads * rounds  # type: ignore[union-attr]


def test_postgresql_scheme_uses_psycopg(postgres_url: str, tmp_path: Path) -> None:
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    engine = make_engine(plain, default_sqlite=tmp_path / "unused.db")
    try:
        assert engine.url.drivername == "postgresql+psycopg"
        assert engine.pool._pre_ping
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("not a url", "malformed database URL"),
        ("mysql://root:hunter2@localhost/db", "unsupported database 'mysql'"),
        ("postgresql+psycopg2://u@localhost/db", "unsupported PostgreSQL driver"),
        ("sqlite:///:memory:", "needs a database file"),
        ("sqlite:////nonexistent-dir/x/am.db", "does not exist"),
    ],
)
def test_bad_urls_raise_db_error(url: str, expected: str, tmp_path: Path) -> None:
    with pytest.raises(DbError) as info:
        make_engine(url, default_sqlite=tmp_path / "unused.db")
    assert expected in str(info.value)
    assert "hunter2" not in str(info.value)


def test_unreachable_server_names_the_redacted_url(tmp_path: Path) -> None:
    url = f"postgresql://alice:s3cret@/primo?host={tmp_path}&port=5999"
    with pytest.raises(DbError) as info:
        make_engine(url, default_sqlite=tmp_path / "unused.db")
    message = str(info.value)
    assert "cannot connect" in message
    assert "alice:***@" in message and "s3cret" not in message
    assert info.value.url == redact(url.replace("postgresql://", "postgresql+psycopg://"))


def test_unreachable_tcp_server(tmp_path: Path) -> None:
    with pytest.raises(DbError, match="cannot connect"):
        make_engine("postgresql://u:pw@127.0.0.1:1/db", default_sqlite=tmp_path / "unused.db")


def test_redact() -> None:
    assert redact("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert "pw" not in redact("postgresql://u@h/db?password=pw")
    assert redact("sqlite:////var/lib/primo/am.db") == "sqlite:////var/lib/primo/am.db"
    assert "pw" not in redact("::garbage//u:pw@host")
