"""The client commands of ``primo``: keys, projects and slices at the clearinghouse; resources and
slivers at the aggregate. Each loads ``HOME/client.toml`` and calls :class:`~primogeni.client.PrimoClient`.

Slices are named ``project/name`` or ``name`` (in the default project). ``primo event`` sends
Emulab-style events (link down/up, host start/stop/reboot) to a slice's slivers by client_id;
``primo status`` also shows what the nodes measure when the aggregate reports it. ``--json`` prints what
the servers answered (slivers, records, a manifest's summary) for scripts; otherwise tables.
Errors and exit codes are those of :mod:`primogeni.cli.geni`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from primogeni.cli.geni import (
    F,
    fail,
    home_option,
    json_option,
    print_json,
    print_record,
    print_records,
    print_table,
    reports_errors,
)
from primogeni.client import (
    ClientConfig,
    PrimoClient,
    advertised_nodes,
    iter_slivers,
    manifest_summary,
    parse_time,
    rfc3339,
)

_RSPEC_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
_DAYS = click.FloatRange(min=0, min_open=True)
_SLICE_EXPIRES = "slice {SLICE_URN} expires {SLICE_EXPIRATION}"


def client_options(fn: F) -> F:
    """``--home`` and ``--json``, with errors reported as :mod:`primogeni.cli.geni` says: every command here."""
    return home_option(json_option(reports_errors(fn)))


def _client(home: Path) -> PrimoClient:
    """A client for HOME's configuration, closed when the command ends."""
    client = PrimoClient(ClientConfig.load(home))
    click.get_current_context().call_on_close(client.close)
    return client


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _until(days: float | None, until: str | None) -> datetime:
    """The time of ``--days N`` (from now) or ``--until TIME``: exactly one of them."""
    if (days is None) == (until is None):
        fail("give exactly one of --days N and --until TIME", 2)
    if until is not None:
        try:
            return parse_time(until)
        except ValueError:
            fail(f"--until {until!r} is not an RFC 3339 time (e.g. 2030-01-31T12:00:00Z)", 2)
    assert days is not None
    return _now() + timedelta(days=days)


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        fail(f"{path}: the {what} is not UTF-8 text", 2)


def _short(status: object) -> str:
    return str(status or "").removeprefix("geni_")


def _slivers_out(title: str, slice_urn: str, answer: Any, as_json: bool, **extra: Any) -> None:
    slivers = list(iter_slivers(answer))
    print_records({"slice": slice_urn, "slivers": slivers, **extra}, as_json,
                  title, ("sliver", "allocation", "operational", "expires", "error"),
                  ((s.get("geni_sliver_urn"), _short(s.get("geni_allocation_status")),
                    _short(s.get("geni_operational_status")), s.get("geni_expires"), s.get("geni_error"))
                   for s in slivers))


# -- keys ------------------------------------------------------------------------------------


@click.group("key")
def key() -> None:
    """Your SSH public keys at the member authority (they become your logins on slivers)."""


@key.command("add")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--description", help="What the key is [default: its comment, or the file name].")
@client_options
def key_add(file: Path, description: str | None, home: Path, as_json: bool) -> None:
    """Add the SSH public key in FILE (one OpenSSH line, e.g. ~/.ssh/id_ed25519.pub)."""
    from primogeni.ch.members import parse_ssh_public_key
    from primogeni.geni.errors import GeniError

    try:
        _, line = parse_ssh_public_key(_read_text(file, "SSH public key"))
    except GeniError as e:
        fail(f"{file}: {e.reason}", 2)
    parts = line.split(None, 2)
    record = _client(home).add_key(line, description or (parts[2] if len(parts) > 2 else file.name))
    print_record(record, as_json, "key {KEY_ID} ({KEY_TYPE}) added for {KEY_MEMBER}")


@key.command("list")
@client_options
def key_list(home: Path, as_json: bool) -> None:
    """Your SSH public keys."""
    keys = _client(home).keys()
    print_records(keys, as_json, "SSH keys", ("id", "type", "description", "key"),
                  ((k["KEY_ID"], k["KEY_TYPE"], k["KEY_DESCRIPTION"], k["KEY_PUBLIC"].split()[1][:24] + "…")
                   for k in keys))


# -- projects and slices -----------------------------------------------------------------------


@click.group("project")
def project() -> None:
    """Projects at the slice authority (the upper level of slice names)."""


@project.command("create")
@click.argument("name")
@click.option("--days", type=_DAYS, default=90.0, show_default=True, help="Lifetime.")
@click.option("--description", default="", help="What the project is for.")
@client_options
def project_create(name: str, days: float, description: str, home: Path, as_json: bool) -> None:
    """Create project NAME, led by you."""
    from primogeni.geni.urn import check_project_name

    check_project_name(name)
    record = _client(home).create_project(name, _now() + timedelta(days=days), description)
    print_record(record, as_json, "project {PROJECT_URN} expires {PROJECT_EXPIRATION}")


@project.command("list")
@client_options
def project_list(home: Path, as_json: bool) -> None:
    """The projects you belong to."""
    records = _client(home).projects()
    print_records(records, as_json, "Projects", ("name", "role", "expires", "expired", "description"),
                  ((p["PROJECT_NAME"], p["PROJECT_ROLE"], p["PROJECT_EXPIRATION"], p["PROJECT_EXPIRED"],
                    p["PROJECT_DESCRIPTION"]) for p in records))


@click.group("slice")
def slice_() -> None:
    """Slices (experiments) at the slice authority."""


@slice_.command("create")
@click.argument("name")
@click.option("--project", help="Project of the slice [default: client.toml's].")
@click.option("--days", type=_DAYS, default=7.0, show_default=True, help="Lifetime.")
@click.option("--description", default="", help="What the experiment is.")
@client_options
def slice_create(name: str, project: str | None, days: float, description: str, home: Path, as_json: bool) -> None:
    """Create slice NAME (project/name, or name in --project or the default project)."""
    record = _client(home).create_slice(name, project=project, expires=_now() + timedelta(days=days),
                                        description=description)
    print_record(record, as_json, _SLICE_EXPIRES)


@slice_.command("renew")
@click.argument("name")
@click.option("--days", type=_DAYS, help="New expiration: this many days from now.")
@click.option("--until", metavar="TIME", help="New expiration, RFC 3339 (2030-01-31T12:00:00Z).")
@client_options
def slice_renew(name: str, days: float | None, until: str | None, home: Path, as_json: bool) -> None:
    """Move slice NAME's expiration (at the slice authority; `primo renew` renews slivers)."""
    record = _client(home).renew_slice(name, _until(days, until))
    print_record(record, as_json, _SLICE_EXPIRES)


@slice_.command("list")
@click.option("--project", help="Only slices of this project.")
@click.option("--all", "include_expired", is_flag=True, help="Include expired slices.")
@client_options
def slice_list(project: str | None, include_expired: bool, home: Path, as_json: bool) -> None:
    """The slices you can see."""
    records = _client(home).slices(project, include_expired=include_expired)
    print_records(records, as_json, "Slices", ("slice", "project", "expires", "expired", "description"),
                  ((s["SLICE_NAME"], s["SLICE_PROJECT_URN"].rsplit("+", 1)[-1], s["SLICE_EXPIRATION"],
                    s["SLICE_EXPIRED"], s["SLICE_DESCRIPTION"]) for s in records))


# -- the aggregate -----------------------------------------------------------------------------


@click.command("resources")
@click.option("--available", is_flag=True, help="Only nodes with free slots.")
@click.option("--xml", "as_xml", is_flag=True, help="Print the advertisement RSpec.")
@client_options
def resources(available: bool, as_xml: bool, home: Path, as_json: bool) -> None:
    """What the aggregate offers: its nodes, their kind, free slots and sliver types."""
    rspec = _client(home).list_resources(available=available)
    if as_xml:
        click.echo(rspec)
        return
    nodes = advertised_nodes(rspec)

    def load(n: dict[str, Any]) -> str:
        u = n.get("usage")
        return f"{u['cpu_percent']:.0f}% of {u['cpus']:.0f} CPUs, {_bytes(u['mem_available'])} free" if u else "-"

    print_records({"nodes": nodes}, as_json,
                  "Resources", ("node", "kind", "free/capacity", "exclusive", "sliver types", "load"),
                  ((n["name"], n["kind"], f"{n['available']}/{n['capacity']}", "yes" if n["exclusive"] else "no",
                    ", ".join(n["sliver_types"]), load(n)) for n in nodes))


@click.command("allocate")
@click.argument("slice_name", metavar="SLICE")
@click.argument("rspec_file", metavar="RSPECFILE", type=_RSPEC_FILE)
@client_options
def allocate(slice_name: str, rspec_file: Path, home: Path, as_json: bool) -> None:
    """Reserve the resources the request RSpec in RSPECFILE asks for (provision them soon)."""
    client = _client(home)
    answer = client.allocate(slice_name, _read_text(rspec_file, "RSpec"))
    _slivers_out("Allocated", str(client.slice_urn(slice_name)), answer, as_json)


@click.command("provision")
@click.argument("slice_name", metavar="SLICE")
@client_options
def provision(slice_name: str, home: Path, as_json: bool) -> None:
    """Provision SLICE's allocated slivers, with logins for your SSH keys."""
    client = _client(home)
    answer = client.provision(slice_name)
    _slivers_out("Provisioned", str(client.slice_urn(slice_name)), answer, as_json,
                 manifest=manifest_summary(answer["geni_rspec"]))


@click.command("create")
@click.argument("slice_name", metavar="SLICE")
@click.argument("rspec_file", metavar="RSPECFILE", type=_RSPEC_FILE)
@client_options
def create(slice_name: str, rspec_file: Path, home: Path, as_json: bool) -> None:
    """Allocate, provision and start what RSPECFILE asks for, in one go."""
    client = _client(home)
    answer = client.create(slice_name, _read_text(rspec_file, "RSpec"))
    summary = manifest_summary(answer["geni_rspec"])
    _slivers_out("Created", str(client.slice_urn(slice_name)), answer, as_json, manifest=summary)
    if not as_json:
        _manifest_tables(summary)


def _action(name: str, action: str, verb: str, help_text: str) -> click.Command:
    @click.command(name, help=help_text)
    @click.argument("slice_name", metavar="SLICE")
    @client_options
    def command(slice_name: str, home: Path, as_json: bool) -> None:
        client = _client(home)
        answer = client.perform_operational_action(slice_name, action)
        _slivers_out(verb, str(client.slice_urn(slice_name)), answer, as_json)

    return command


start = _action("start", "geni_start", "Started", "Start SLICE's provisioned slivers (geni_start).")
stop = _action("stop", "geni_stop", "Stopped", "Stop SLICE's provisioned slivers (geni_stop).")


def overall(slivers: list[dict[str, Any]]) -> str:
    """One word for a slice: the operational state all slivers share, or failed, or mixed."""
    states = {_short(s.get("geni_operational_status")) for s in slivers}
    if not states:
        return "empty"
    if "failed" in states:
        return "failed"
    return states.pop() if len(states) == 1 else "mixed"


@click.command("status")
@click.argument("slice_name", metavar="SLICE")
@client_options
def status(slice_name: str, home: Path, as_json: bool) -> None:
    """The state of SLICE's slivers at the aggregate, and what their nodes measure (CPU, memory, traffic)."""
    answer = _client(home).status(slice_name)
    slivers = list(iter_slivers(answer))
    word = overall(slivers)
    _slivers_out(f"{answer.get('geni_urn')}: {word}", str(answer.get("geni_urn")), answer, as_json, status=word)
    measured = [s for s in slivers if isinstance(s.get("primo_monitor"), dict)]
    if measured and not as_json:
        print_table("Monitor", ("sliver", "cpu", "memory", "interfaces (rx / tx)"),
                    ((s.get("geni_sliver_urn"), f"{float(s['primo_monitor'].get('cpu_ns', 0)) / 1e9:.2f} s",
                      _bytes(s["primo_monitor"].get("memory_bytes")), _traffic(s["primo_monitor"])) for s in measured))


def _bytes(value: object) -> str:
    if not isinstance(value, int | float):
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _traffic(figures: dict[str, Any]) -> str:
    interfaces = figures.get("interfaces") or {}
    return "\n".join(f"{name} {_bytes(c.get('rx_bytes'))} / {_bytes(c.get('tx_bytes'))}"
                     for name, c in sorted(interfaces.items()) if isinstance(c, dict))


def _manifest_tables(summary: dict[str, list[dict[str, Any]]]) -> None:
    def logins(n: dict[str, Any]) -> str:
        return "\n".join(f"ssh -p {x['port']} {x['username']}@{x['hostname']}" for x in n["logins"])

    def addresses(n: dict[str, Any]) -> str:
        return "\n".join(f"{i['client_id']} {a}" for i in n["interfaces"] for a in i["addresses"])

    print_table("Nodes", ("client_id", "sliver", "component", "login", "addresses"),
                ((n["client_id"], n["sliver_id"], n["component_id"].rsplit("+", 1)[-1], logins(n), addresses(n))
                 for n in summary["nodes"]))
    if summary["links"]:
        print_table("Links", ("client_id", "sliver", "vlan", "interfaces"),
                    ((lk["client_id"], lk["sliver_id"], lk["vlantag"], ", ".join(lk["interfaces"]))
                     for lk in summary["links"]))


@click.command("manifest")
@click.argument("slice_name", metavar="SLICE")
@click.option("--xml", "as_xml", is_flag=True, help="Print the manifest RSpec.")
@client_options
def manifest(slice_name: str, as_xml: bool, home: Path, as_json: bool) -> None:
    """What SLICE was given: slivers, components, logins and addresses."""
    answer = _client(home).describe(slice_name)
    if as_xml:
        click.echo(answer["geni_rspec"])
        return
    summary = manifest_summary(answer["geni_rspec"])
    if as_json:
        print_json({"slice": answer.get("geni_urn"), "slivers": list(iter_slivers(answer)), **summary})
        return
    _manifest_tables(summary)


@click.command("renew")
@click.argument("slice_name", metavar="SLICE")
@click.option("--days", type=_DAYS, help="New expiration: this many days from now.")
@click.option("--until", metavar="TIME", help="New expiration, RFC 3339 (2030-01-31T12:00:00Z).")
@client_options
def renew(slice_name: str, days: float | None, until: str | None, home: Path, as_json: bool) -> None:
    """Move the expiration of SLICE's slivers (never past the slice's: see `primo slice renew`)."""
    when = _until(days, until)
    client = _client(home)
    answer = client.renew(slice_name, when)
    _slivers_out(f"Renewed until {rfc3339(when)}", str(client.slice_urn(slice_name)), answer, as_json)


_EVENTS = {"link": ("down", "up"), "host": ("start", "stop", "reboot")}


def _event_time(at: str | None) -> str | None:
    """``--at``: RFC 3339, or ``+SECONDS`` from now; None for now."""
    if at is None:
        return None
    if at.startswith("+"):
        try:
            return rfc3339(datetime.now(UTC) + timedelta(seconds=float(at[1:])))
        except ValueError:
            fail(f"--at {at!r}: +SECONDS must be a number", 2)
    try:
        return rfc3339(parse_time(at))
    except ValueError:
        fail(f"--at {at!r} is neither an RFC 3339 time (2030-01-31T12:00:00Z) nor +SECONDS", 2)


@click.command("event")
@click.argument("slice_name", metavar="SLICE")
@click.argument("kind", type=click.Choice(sorted(_EVENTS)))
@click.argument("name", metavar="NAME")
@click.argument("action", type=click.Choice(["down", "up", "start", "stop", "reboot"]))
@click.argument("command", nargs=-1, metavar="[-- CMD...]")
@click.option("--at", "at", metavar="TIME", help="When: RFC 3339, or +SECONDS from now [default: now].")
@client_options
def event(slice_name: str, kind: str, name: str, action: str, command: tuple[str, ...], at: str | None,
          home: Path, as_json: bool) -> None:
    """Send an event to SLICE's link or host NAME (its client_id).

    \b
    primo event SLICE link NAME down|up [--at TIME]
    primo event SLICE host NAME start|stop [--at TIME] -- CMD ARG...
    primo event SLICE host NAME reboot [--at TIME]
    """
    if action not in _EVENTS[kind]:
        fail(f"a {kind} event is one of {', '.join(_EVENTS[kind])}, not {action!r}", 2)
    if action in ("start", "stop") and not command:
        fail(f"host {action} needs a command: primo event SLICE host NAME {action} -- CMD ARG...", 2)
    if command and action not in ("start", "stop"):
        fail(f"{kind} {action} takes no command", 2)
    when = _event_time(at)
    client = _client(home)
    summary = manifest_summary(client.describe(slice_name)["geni_rspec"])
    known = {e["client_id"]: e["sliver_id"] for e in summary["nodes" if kind == "host" else "links"]}
    if name not in known:
        fail(f"slice {slice_name} has no {kind} {name!r} (it has: {', '.join(sorted(known)) or 'none'})", 2)
    options: dict[str, Any] = {"primo_command": list(command)} if command else {}
    if when is not None:
        options["primo_at"] = when
    answer = client.perform_operational_action(slice_name, f"primo:{kind}-{action}", [known[name]], options)
    print_records({"slice": str(client.slice_urn(slice_name)), "events": answer}, as_json,
                  f"{kind} {name} {action} at {when or 'now'}", ("sliver", "event", "state"),
                  ((s.get("geni_sliver_urn"), s.get("primo_event_id"), s.get("primo_event_state"))
                   for s in answer))


@click.command("delete")
@click.argument("slice_name", metavar="SLICE")
@client_options
def delete(slice_name: str, home: Path, as_json: bool) -> None:
    """Release all of SLICE's slivers at the aggregate."""
    client = _client(home)
    answer = client.delete(slice_name)
    _slivers_out("Deleted", str(client.slice_urn(slice_name)), answer, as_json)


COMMANDS = (key, project, slice_, resources, allocate, provision, create, start, stop, status, manifest, renew,
            delete, event)
