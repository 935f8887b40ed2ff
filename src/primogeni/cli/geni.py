"""The GENI commands of ``primo``: set-up, the two services, the administrator's, and the client's.

This module holds what every GENI command shares (``--home`` and ``--json``, error reporting
and exit codes, tables) and the local commands that work on a data directory:

* ``primo init`` makes an authority, the aggregate's inventory and the user's ``client.toml``;
* ``primo ch`` and ``primo am`` serve the clearinghouse and the aggregate in the foreground
  (the aggregate registers itself with the clearinghouse on start);
* ``primo member add|list`` manage members of the local authority.

The client commands (keys, projects, slices, resources and slivers) are in
:mod:`primogeni.cli.geni_client`. :func:`register` adds all of them to the ``primo`` group.

Exit codes: 0 success; 1 a server refused (``error: CODE: output``) or could not be reached
(the URL is named); 2 bad arguments, files or configuration.
"""

from __future__ import annotations

import functools
import json
import logging
import signal
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.table import Table

from primogeni.client import (
    CONFIG_FILE,
    ClientConfig,
    ClientConfigError,
    ClientError,
    ServiceUnreachable,
    register_aggregate,
    resolve_home,
    rfc3339,
)
from primogeni.db import DbError
from primogeni.errors import GeniError, PrimoError

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_CH_PORT = 12369
DEFAULT_AM_PORT = 12370


# -- shared by every GENI command --------------------------------------------------------------


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def reports_errors(fn: F) -> F:
    """Map the client's and the services' errors to messages and exit codes (module docstring)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ClientError as e:
            fail(str(e), 1)
        except ServiceUnreachable as e:
            fail(str(e), 1)
        except (ClientConfigError, GeniError, DbError) as e:
            fail(str(e), 2)
        except OSError as e:  # a file named on the command line or in the configuration
            fail(f"{e.filename or ''}: {e.strerror or e}" if e.filename else str(e), 2)

    return wrapper  # type: ignore[return-value]


def home_option(fn: F) -> F:
    return click.option(
        "--home",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="PRIMO_HOME",
        default=lambda: str(resolve_home()),
        show_default="$PRIMO_HOME or ~/.primo",
        help="The data directory (authority, services' state, client.toml).",
    )(fn)


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of tables.")(fn)


def db_option(fn: F) -> F:
    return click.option("--db", "db_url", metavar="URL",
                        help="Database URL (default: SQLite in the data directory; postgresql://… for PostgreSQL).")(fn)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def print_record(data: Any, as_json: bool, text: str) -> None:
    """``data`` as JSON with ``--json``, else ``text`` with ``{key}`` filled in from ``data``."""
    if as_json:
        print_json(data)
    else:
        click.echo(text.format_map(data))


def print_records(data: Any, as_json: bool, title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """``data`` as JSON with ``--json``, else a table of ``rows`` (not read with ``--json``)."""
    if as_json:
        print_json(data)
    else:
        print_table(title, columns, rows)


def console() -> Console:
    return Console(width=None if sys.stdout.isatty() else 160, highlight=False)


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], *,
                caption: str | None = None) -> None:
    table = Table(title=title, caption=caption)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("-" if v is None or v == "" else str(v) for v in row))
    console().print(table)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# -- primo init --------------------------------------------------------------------------------


@click.command()
@home_option
@click.option("--authority", default="primo", show_default=True, help="Name of the new authority.")
@click.option("--user", default="alice", show_default=True, help="The first member, whom client.toml names.")
@click.option("--email", help="The first member's email address [default: USER@example.org].")
@click.option("--hostname", "hostnames", multiple=True, metavar="NAME",
              help="Host name or address the servers' certificates carry (repeat) [default: localhost, 127.0.0.1].")
@click.option("--ch-port", type=click.IntRange(1, 65535), default=DEFAULT_CH_PORT, show_default=True)
@click.option("--am-port", type=click.IntRange(1, 65535), default=DEFAULT_AM_PORT, show_default=True)
@click.option("--project", help="The default project of client commands.")
@db_option
@json_option
@reports_errors
def init(home: Path, authority: str, user: str, email: str | None, hostnames: tuple[str, ...], ch_port: int,
         am_port: int, project: str | None, db_url: str | None, as_json: bool) -> None:
    """Make a new authority in HOME, the aggregate's inventory, and the user's client.toml."""
    from primogeni.am.inventory import default_inventory_toml
    from primogeni.ch.authority import init_authority
    from primogeni.geni.urn import check_project_name

    roots = home / "trusted_roots"
    if (home / "ch" / "ma.pem").exists() or (roots.is_dir() and any(roots.glob("*-root.pem"))):
        fail(f"{home} already holds an authority; choose another --home", 2)
    if (home / CONFIG_FILE).exists():
        fail(f"{home / CONFIG_FILE} already exists; choose another --home", 2)
    if project is not None:
        check_project_name(project)
    hosts = hostnames or ("localhost", "127.0.0.1")
    made = init_authority(home, authority, hosts, (user, email or f"{user}@example.org"), db_url=db_url)
    inventory = home / "am" / "inventory.toml"
    if not inventory.exists():
        inventory.write_text(default_inventory_toml(hosts[0]), encoding="utf-8")
    cert, key = made.user_files(user)
    host = _url_host(hosts[0])
    config = ClientConfig(home=home, authority=authority, user=user, cert=cert, key=key, trust_dir=made.trust_dir,
                          ch_url=f"https://{host}:{ch_port}", am_url=f"https://{host}:{am_port}/am/3.0",
                          project=project)
    config.save()
    facts = {"home": str(home), "authority": authority, "user": str(config.user_urn), "cert": str(cert),
             "key": str(key), "trust_dir": str(made.trust_dir), "ch_url": config.ch_url, "am_url": config.am_url,
             "project": project, "client_config": str(config.path), "inventory": str(inventory)}
    if as_json:
        print_json(facts)
        return
    click.echo(f"authority {authority!r} made in {home}")
    for name, value in facts.items():
        click.echo(f"  {name:14} {'-' if value is None else value}")
    click.echo(f"next: `primo ch --home {home}` and `primo am --home {home}` (each in its own terminal)")


# -- primo ch / primo am -----------------------------------------------------------------------


def _default_port(home: Path, which: str, fallback: int) -> int:
    """The port of ch_url / am_url in HOME/client.toml, else ``fallback``."""
    try:
        url = getattr(ClientConfig.load(home), which)
        return urllib.parse.urlsplit(url).port or fallback
    except (ClientConfigError, ValueError):
        return fallback


def _serve(service: Any, what: str) -> None:
    """Start ``service`` and serve until SIGINT or SIGTERM, then stop it cleanly."""
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        service.start()
        click.echo("stop with Ctrl-C (SIGINT) or SIGTERM")
        while not stop.wait(0.5):
            pass
        click.echo(f"stopping the {what} …")
    finally:
        try:
            service.stop()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    click.echo(f"{what} stopped")


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@click.command("ch")
@home_option
@db_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (0: any free one) [default: client.toml's, 12369].")
@reports_errors
def ch_command(home: Path, db_url: str | None, host: str, port: int | None) -> None:
    """Serve the clearinghouse of HOME (Federation API v2 CH/MA/SA, ProtoGENI SA/CH) until stopped."""
    from primogeni.ch.service import ChService

    _logging()
    port = _default_port(home, "ch_url", DEFAULT_CH_PORT) if port is None else port
    try:
        service = ChService(home, db_url, host=host, port=port)
    except OSError as e:
        fail(f"cannot listen on {host}:{port}: {e.strerror or e}", 1)
    click.echo(f"clearinghouse {service.authority.ch_urn} on {service.url('')}")
    for name, url in service.urls.items():
        click.echo(f"  {name:6} {url}")
    _serve(service, "clearinghouse")


def _registration_url(service_url: str, host: str, home: Path) -> str:
    """The URL to register: our own, with a wildcard listen address replaced by client.toml's AM host."""
    if host not in ("0.0.0.0", "::", ""):
        return service_url
    try:
        public = urllib.parse.urlsplit(ClientConfig.load(home).am_url).hostname
    except ClientConfigError:
        return service_url
    parts = urllib.parse.urlsplit(service_url)
    return parts._replace(netloc=f"{_url_host(public or 'localhost')}:{parts.port}").geturl()


def _register(home: Path, url: str) -> None:
    """Register the aggregate with client.toml's clearinghouse; a failure is only a warning."""
    try:
        config = ClientConfig.load(home)
        register_aggregate(config, home / "am" / "am.pem", home / "am" / "am.key", url)
    except (PrimoError, OSError, ValueError) as e:
        click.echo(f"warning: not registered with the clearinghouse: {e}", err=True)
        return
    click.echo(f"registered {url} with the clearinghouse at {config.ch_url}")


@click.command("am")
@home_option
@db_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (0: any free one) [default: client.toml's, 12370].")
@click.option("--driver-delay", type=click.FloatRange(min=0), default=0.0, show_default=True, metavar="SECONDS",
              help="Make every sliver's provisioning take this long (for restart tests).")
@click.option("--register/--no-register", default=True, show_default=True,
              help="Register with the clearinghouse named in client.toml on start.")
@click.option("--driver", type=click.Choice(["recording", "agents"]), default="recording", show_default=True,
              help="recording: keep sliver plans in the database; agents: drive the substrate's node agents "
                   "(they register at /primo/registry/1).")
@reports_errors
def am_command(home: Path, db_url: str | None, host: str, port: int | None, driver_delay: float,
               register: bool, driver: str) -> None:
    """Serve the aggregate manager of HOME (AM API v2 and v3, ProtoGENI CM v2) until stopped."""
    from primogeni.am.service import AmService

    _logging()
    for needed in (home / "am" / "am.pem", home / "am" / "am.key", home / "am" / "inventory.toml"):
        if not needed.is_file():
            fail(f"{needed} does not exist: run `primo init --home {home}` first", 2)
    port = _default_port(home, "am_url", DEFAULT_AM_PORT) if port is None else port
    try:
        service = AmService(home, db_url=db_url, host=host, port=port, driver_delay=driver_delay, driver=driver)
    except OSError as e:
        fail(f"cannot listen on {host}:{port}: {e.strerror or e}", 1)
    click.echo(f"aggregate {service.identity.gid.urn}")
    for version, url in service.urls.items():
        label = {"cm": "ProtoGENI CM", "registry": "agent registry"}.get(version, f"AM API v{version}")
        click.echo(f"  {label:14} {url}")
    if register:
        _register(home, _registration_url(service.urls["3"], host, home))
    _serve(service, "aggregate manager")


# -- primo member ------------------------------------------------------------------------------


@click.group("member")
def member() -> None:
    """Members of the local authority (administrator's commands, on the data directory)."""


@member.command("add")
@click.argument("name")
@click.option("--email", help="Email address [default: NAME@example.org].")
@home_option
@db_option
@json_option
@reports_errors
def member_add(name: str, email: str | None, home: Path, db_url: str | None, as_json: bool) -> None:
    """Create member NAME: a certificate and key in HOME/users/."""
    from primogeni.ch.authority import Authority, add_member

    made = add_member(home, name, email or f"{name}@example.org", db_url=db_url)
    cert, key = Authority.load(home).user_files(name)
    record = {"urn": str(made.urn), "username": made.username, "email": made.email, "cert": str(cert),
              "key": str(key)}
    print_record(record, as_json, "member {urn}\n  certificate {cert}\n  key         {key}")


@member.command("list")
@home_option
@db_option
@json_option
@reports_errors
def member_list(home: Path, db_url: str | None, as_json: bool) -> None:
    """Every member of the local authority."""
    from primogeni.ch.authority import list_members

    records = [{"urn": str(m.urn), "username": m.username, "email": m.email, "created": rfc3339(m.created)}
               for m in list_members(home, db_url=db_url)]
    print_records(records, as_json, "Members", ("user", "URN", "email", "created"),
                  ((r["username"], r["urn"], r["email"], r["created"]) for r in records))


def register(group: click.Group) -> None:
    """Add every GENI command to ``group`` (the ``primo`` command)."""
    from primogeni.cli import geni_client

    for command in (init, ch_command, am_command, member, *geni_client.COMMANDS):
        group.add_command(command)
