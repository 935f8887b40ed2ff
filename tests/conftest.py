"""Fixtures shared by every test package: throwaway databases.

``postgres_url`` starts one PostgreSQL cluster per test session in a fresh temporary directory:
it listens only on a Unix socket in that directory (no TCP port), trusts local connections, and
is stopped (``pg_ctl stop -m immediate``) and deleted at the end of the session whatever happens.
Run as root, the server runs as the ``postgres`` OS user (PostgreSQL refuses to run as root).
Without PostgreSQL installed the tests that need it are skipped, saying so.

``db_url`` gives each test a fresh, empty database URL, once on SQLite and once on PostgreSQL,
so that service state tests run on both back ends.
"""

from __future__ import annotations

import glob
import os
import pwd
import random
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

_PG_USER = "postgres"
_PG_DATABASE = "primo"


def _postgres_bindir() -> Path | None:
    """Where initdb/pg_ctl/postgres live: ``pg_config --bindir``, else the newest Debian install."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=30)
            candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass

    def version(path: str) -> float:
        try:
            return float(Path(path).parent.name)
        except ValueError:
            return 0.0

    candidates += [Path(p).parent for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)]
    for directory in candidates:
        if all((directory / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return directory
    return None


class _Cluster:
    """A PostgreSQL cluster in ``root`` (data in ``root/data``, socket in ``root``)."""

    def __init__(self, bindir: Path, root: Path, port: int, run_as: str | None):
        self.bindir, self.root, self.port, self.run_as = bindir, root, port, run_as
        self.data = root / "data"
        self.log = root / "server.log"

    def run(self, tool: str, *args: str) -> None:
        argv = [str(self.bindir / tool), *args]
        if self.run_as is not None:
            argv = ["runuser", "-u", self.run_as, "--", *argv]
        result = subprocess.run(argv, cwd=self.root, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stderr.strip()}\n{log}")

    def start(self) -> None:
        self.run("initdb", "-D", str(self.data), "-U", _PG_USER, "-A", "trust", "-E", "UTF8", "--no-sync")
        options = (
            f"-c listen_addresses='' -c unix_socket_directories='{self.root}' -p {self.port} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self.run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log), "-o", options)

    def stop(self) -> None:
        if not (self.data / "postmaster.pid").exists():
            return
        try:
            self.run("pg_ctl", "stop", "-w", "-t", "30", "-m", "immediate", "-D", str(self.data))
        except (RuntimeError, OSError, subprocess.SubprocessError):
            self._kill_postmaster()

    def _kill_postmaster(self) -> None:
        """Last resort: the PID pg_ctl wrote (ours, in our own temporary directory)."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGQUIT)
        except (OSError, ValueError, IndexError):
            pass

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{_PG_USER}@/{database}?host={self.root}&port={self.port}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server (Unix socket only) with an empty database ``primo``."""
    bindir = _postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server is not installed (Debian package 'postgresql'; `make test` installs it)")
    try:
        import psycopg  # noqa: F401  (only to skip cleanly when the driver is missing)
    except ImportError:
        pytest.skip("psycopg (the PostgreSQL driver) is not installed")
    run_as: str | None = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(_PG_USER)
        except KeyError:
            pytest.skip(f"running as root but there is no {_PG_USER!r} OS user to run PostgreSQL as")
        run_as = _PG_USER
    root = Path(tempfile.mkdtemp(prefix="primo-pg-"))
    cluster = _Cluster(bindir, root, random.randint(20000, 60000), run_as)
    try:
        root.chmod(0o755)
        if run_as is not None:
            entry = pwd.getpwnam(run_as)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        cluster.start()
        _admin(cluster.url("postgres"), f'CREATE DATABASE "{_PG_DATABASE}"')
        yield cluster.url(_PG_DATABASE)
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def _admin(url: str, statement: str) -> None:
    """Run one statement outside a transaction (CREATE/DROP DATABASE need that)."""
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    query = dict(parsed.query)
    with psycopg.connect(
        dbname=parsed.database, user=parsed.username, host=str(query["host"]), port=str(query["port"]), autocommit=True
    ) as connection:
        connection.execute(statement.encode())


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh empty database for this test: an SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'primo.db'}"
        return
    base: str = request.getfixturevalue("postgres_url")
    name = f"primo_{uuid.uuid4().hex}"
    admin = base.replace(f"/{_PG_DATABASE}?", "/postgres?", 1)
    _admin(admin, f'CREATE DATABASE "{name}"')
    try:
        yield base.replace(f"/{_PG_DATABASE}?", f"/{name}?", 1)
    finally:
        _admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
