"""Database engines and transactions shared by the clearinghouse and the aggregate manager.

Each service owns its own ``DeclarativeBase`` and tables; this module only decides how to
connect and how a transaction behaves, identically for both services:

* **SQLite** (the default: one file in the service's data directory). WAL journal, foreign keys
  on, a busy timeout, and every transaction opens with ``BEGIN IMMEDIATE`` (SQLAlchemy's
  documented pysqlite recipe: the driver's own BEGIN handling is turned off and the ``begin``
  event emits ours). A transaction therefore holds the database's single write lock from its
  first statement, so read-modify-write sequences — "is this node free? then give it to this
  slice" — run one after another, never interleaved.
* **PostgreSQL** by URL (``postgresql://`` is rewritten to the psycopg 3 driver). Connections
  are pre-pinged. Transactions run at the server's default isolation (READ COMMITTED); services
  serialise their read-modify-write sequences with ``SELECT … FOR UPDATE`` (``with_for_update()``,
  a no-op on SQLite where ``BEGIN IMMEDIATE`` already serialises) and unique constraints.

``make_engine`` connects once before returning, so a malformed URL or an unreachable server is
reported at start-up as a :class:`DbError` naming the URL (password redacted), not at the first
request. Errors raised inside :func:`transaction` are SQLAlchemy's own (``IntegrityError`` and
friends) so that services can tell a duplicate from an outage.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker

from primogeni.errors import PrimoError

#: How long a SQLite transaction waits for the write lock before failing ("database is locked").
SQLITE_BUSY_TIMEOUT_S = 30.0
#: How long connecting to a PostgreSQL server may take before make_engine gives up.
POSTGRES_CONNECT_TIMEOUT_S = 10

_POSTGRES_NAMES = ("postgresql", "postgres")


class DbError(PrimoError):
    """The database URL is malformed or unsupported, or the database cannot be reached.

    ``url`` is the URL with any password replaced by ``***``; ``reason`` says what is wrong.
    """

    def __init__(self, url: str, reason: str):
        self.url = url
        self.reason = reason
        super().__init__(f"database {url}: {reason}")


def redact(url: str | URL) -> str:
    """``url`` as text safe for logs: the password (in the authority or the query) becomes ``***``."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        text = str(url)
        text = re.sub(r"(//[^/:@]*):[^/@]*@", r"\1:***@", text)
        return re.sub(r"([?&]password=)[^&]*", r"\1***", text, flags=re.IGNORECASE)
    if any(key.lower() == "password" for key in parsed.query):
        parsed = parsed.update_query_dict(
            {key: "***" for key in parsed.query if key.lower() == "password"}
        )
    return parsed.render_as_string(hide_password=True)


def make_engine(url: str | None, *, default_sqlite: Path) -> Engine:
    """An engine for ``url``, or for the SQLite file ``default_sqlite`` when ``url`` is None.

    Accepts ``sqlite:///path`` and ``postgresql[+psycopg]://…`` (``postgres://`` too). Connects
    once to check; raises :class:`DbError` (naming the redacted URL) when the URL is malformed,
    names another database, or the database cannot be opened or reached.
    """
    if url is None:
        parsed = URL.create("sqlite", database=str(default_sqlite))
    else:
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise DbError(redact(url), f"malformed database URL ({exc})") from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite":
        if driver not in ("", "pysqlite"):
            raise DbError(redact(parsed), f"unsupported SQLite driver {driver!r} (use sqlite:///path)")
        engine = _sqlite_engine(parsed)
    elif backend in _POSTGRES_NAMES:
        if driver not in ("", "psycopg"):
            raise DbError(redact(parsed), f"unsupported PostgreSQL driver {driver!r} (use postgresql://)")
        engine = _postgres_engine(parsed)
    else:
        raise DbError(redact(parsed), f"unsupported database {backend!r} (use sqlite:///path or postgresql://)")
    _check(engine)
    return engine


_READ_ONLY = "primo_read_only"


def _sqlite_engine(url: URL) -> Engine:
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        raise DbError(redact(url), "SQLite needs a database file (sqlite:///path/to/file.db)")
    path = Path(database)
    if not path.parent.is_dir():
        raise DbError(redact(url), f"directory {path.parent} does not exist")
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the sqlite3 module (it would issue a deferred BEGIN, and none at
        # all before SELECT); the "begin" listener below issues ours.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Take the write lock at the start of every transaction: read-modify-write sequences
        # serialise, and no transaction fails half-way trying to upgrade a read lock. Sessions
        # from reader_factory() promise not to write and begin deferred (WAL readers never block).
        if connection.get_execution_options().get(_READ_ONLY):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _postgres_engine(url: URL) -> Engine:
    url = url.set(drivername="postgresql+psycopg")
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = POSTGRES_CONNECT_TIMEOUT_S
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def _check(engine: Engine) -> None:
    """Connect once so that configuration errors surface at start-up, naming the URL."""
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except (DBAPIError, NoSuchModuleError, ArgumentError) as exc:
        engine.dispose()
        cause = getattr(exc, "orig", None) or exc
        reason = " ".join(str(cause).split())
        raise DbError(redact(engine.url), f"cannot connect: {reason}") from exc


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to ``engine``; objects stay readable after commit (``expire_on_commit=False``)."""
    return sessionmaker(engine, expire_on_commit=False)


def reader_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for reading only: on SQLite they begin deferred, so readers run beside a writer.

    Nothing enforces the promise; use :func:`session_factory` for anything that writes.
    """
    return sessionmaker(engine.execution_options(**{_READ_ONLY: True}), expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session inside one transaction: committed when the block ends, rolled back if it raises.

    On SQLite the transaction holds the write lock from its first statement (``BEGIN IMMEDIATE``);
    on PostgreSQL lock the rows you will change with ``select(...).with_for_update()``.
    """
    with factory() as session, session.begin():
        yield session


__all__ = [
    "POSTGRES_CONNECT_TIMEOUT_S",
    "SQLITE_BUSY_TIMEOUT_S",
    "DbError",
    "make_engine",
    "reader_factory",
    "redact",
    "session_factory",
    "transaction",
]
