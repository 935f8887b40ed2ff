"""The substrate commands of ``primo``: the embedded substrate, the node agent, housekeeping.

* ``primo substrate up|down|status`` make, remove and show the embedded substrate (physical
  nodes as network namespaces on this machine, each with its own ``primo agent``);
* ``primo agent --config FILE`` runs one node agent in the foreground;
* ``primo clean`` removes every PrimoGENI object on the machine (and only those);
* ``primo exec SLICE HOST -- CMD`` runs a command in a sliver of a local agent.

Exit codes: 0 success; 1 the operation failed (the kernel refused, an agent did not come up, no
such sliver); 2 bad arguments or files.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from primogeni.cli.geni import fail, home_option, json_option, print_json, print_table
from primogeni.errors import PrimoError


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        fail(f"{what} needs root (it makes network namespaces and devices)", 2)


@click.group("substrate")
def substrate() -> None:
    """The embedded substrate: physical nodes as network namespaces on this machine."""


@substrate.command("up")
@home_option
@click.option("--nodes", type=click.IntRange(1, 200), default=4, show_default=True, help="How many physical nodes.")
@click.option("--underlay", default="10.254.0.0/24", show_default=True, metavar="CIDR",
              help="The private underlay subnet (the host takes .1, node I takes .10+I).")
@click.option("--kinds", default="cluster,cluster,shared,shared", show_default=True, metavar="K,K,…",
              help="Node kinds in order (cluster or shared); the last repeats.")
@click.option("--capacity", type=click.IntRange(min=1), help="Slots per node [default: 8 cluster, 16 shared].")
@click.option("--am-port", type=click.IntRange(1, 65535), help="The AM's port [default: client.toml's, 12370].")
@click.option("--tag", default="", help="Suffix of the underlay's names, to run a second substrate (tests).")
@click.option("--node-prefix", default="pc", show_default=True, help="Node names are PREFIX1, PREFIX2, ….")
@click.option("--wait", type=click.FloatRange(min=1), default=30.0, show_default=True, metavar="SECONDS",
              help="How long to wait for each agent to listen.")
def substrate_up(home: Path, nodes: int, underlay: str, kinds: str, capacity: int | None, am_port: int | None,
                 tag: str, node_prefix: str, wait: float) -> None:
    """Make the embedded substrate of HOME and start its agents (idempotent)."""
    from primogeni.substrate.embedded import Substrate, plan

    _need_root("primo substrate up")
    sub = Substrate(home)
    try:
        layout = plan(nodes, underlay, tuple(k.strip() for k in kinds.split(",") if k.strip()), capacity,
                      am_port=am_port or sub.am_port(), tag=tag, node_prefix=node_prefix)
    except PrimoError as e:
        fail(str(e), 2)
    try:
        sub.up(layout, wait=wait, log=click.echo)
    except PrimoError as e:
        fail(str(e), 1)
    except OSError as e:
        fail(f"{e.filename or ''}: {e.strerror or e}" if e.filename else str(e), 1)
    click.echo(f"embedded substrate up: {len(layout.nodes)} nodes on {layout.underlay}, "
               f"host {layout.host} on {layout.root_veth}")
    for node in layout.nodes:
        click.echo(f"  {node.name:8} {node.kind:8} {node.address.ip!s:15} netns {node.netns}, "
                   f"agent https://{node.address.ip}:7800")
    click.echo(f"inventory written to {home / 'am' / 'inventory.toml'}")
    click.echo(f"next: primo am --home {home} --driver agents --host {layout.host.ip} --port {layout.am_port}")


@substrate.command("down")
@home_option
@click.option("--timeout", type=click.FloatRange(min=0), default=5.0, show_default=True, metavar="SECONDS",
              help="How long an agent gets to stop after SIGTERM before SIGKILL.")
@click.option("--purge", is_flag=True, help="Also delete HOME/substrate (agents' certificates and state).")
def substrate_down(home: Path, timeout: float, purge: bool) -> None:
    """Stop the agents and remove the embedded substrate of HOME."""
    from primogeni.substrate.embedded import Substrate

    _need_root("primo substrate down")
    sub = Substrate(home)
    if sub.layout() is None:
        click.echo(f"no embedded substrate is up for {home}")
        return
    try:
        removed = sub.down(timeout=timeout, purge=purge, log=click.echo)
    except PrimoError as e:
        fail(str(e), 1)
    for what in removed:
        click.echo(f"removed {what}")
    click.echo("embedded substrate down")


@substrate.command("status")
@home_option
@json_option
def substrate_status(home: Path, as_json: bool) -> None:
    """The embedded substrate's nodes, their agents and slivers."""
    from primogeni.substrate.embedded import AGENT_PORT, Substrate

    sub = Substrate(home)
    try:
        layout = sub.layout()
        nodes = sub.status()
    except PrimoError as e:
        fail(str(e), 2)
    if layout is None:
        if as_json:
            print_json({"up": False, "nodes": []})
        else:
            click.echo(f"no embedded substrate is up for {home}")
        return
    records = [{"name": n.name, "kind": n.kind, "address": n.address, "netns": n.netns,
                "agent_pid": n.agent_pid, "agent_url": f"https://{n.address.split('/')[0]}:{AGENT_PORT}",
                "slivers": n.slivers} for n in nodes]
    if as_json:
        print_json({"up": True, "underlay": str(layout.underlay), "host": str(layout.host),
                    "am_port": layout.am_port, "nodes": records})
        return
    print_table(f"Embedded substrate on {layout.underlay} (host {layout.host})",
                ("node", "kind", "underlay address", "netns", "agent", "slivers"),
                ((r["name"], r["kind"], r["address"], "yes" if r["netns"] else "MISSING",
                  f"pid {r['agent_pid']}" if r["agent_pid"] else "NOT RUNNING", r["slivers"]) for r in records))


@click.command("agent")
@click.option("--config", "config_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The agent's configuration (TOML).")
def agent_command(config_file: Path) -> None:
    """Run the node agent of one physical node in the foreground until SIGINT or SIGTERM."""
    from primogeni.agent.config import AgentConfig
    from primogeni.agent.service import run_agent

    try:
        config = AgentConfig.load(config_file)
    except PrimoError as e:
        fail(str(e), 2)
    sys.exit(run_agent(config))


@click.command("clean")
@home_option
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@json_option
def clean_command(home: Path, dry_run: bool, as_json: bool) -> None:
    """Remove every PrimoGENI object on this machine: agents, slivers, namespaces, links, tables, cgroups."""
    from primogeni.client import resolve_home
    from primogeni.substrate.clean import Scope, clean

    if not dry_run:
        _need_root("primo clean")
    homes = tuple(dict.fromkeys(p for p in (home, resolve_home(None), Path("~/.primo").expanduser()) if p.is_dir()))
    items = clean(Scope(homes=homes), dry_run=dry_run,
                  log=lambda s: click.echo(s, err=True) if s.startswith("warning") else None)
    if as_json:
        print_json([{"kind": i.kind, "name": i.name, "detail": i.detail} for i in items])
        return
    for item in items:
        click.echo(f"{'would remove' if dry_run else 'removed'} {item}")
    click.echo(f"{len(items)} objects {'found' if dry_run else 'removed'}" if items else "nothing to clean")


@click.command("exec", context_settings={"ignore_unknown_options": True})
@home_option
@click.option("--user", "-u", help="Run as this login of the sliver [default: root].")
@click.option("--config", "configs", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="An agent configuration to search (repeat) [default: HOME/substrate/*/agent.toml].")
@click.argument("slice_name", metavar="SLICE")
@click.argument("host")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_command(home: Path, user: str | None, configs: tuple[Path, ...], slice_name: str, host: str,
                 command: tuple[str, ...]) -> None:
    """Run COMMAND in the sliver HOST of slice SLICE (a name or URN): `primo exec S h1 -- ip addr`."""
    from primogeni.substrate.execute import ExecError, exec_in_sliver

    _need_root("primo exec")
    argv = list(command[1:] if command and command[0] == "--" else command)
    if not argv:
        fail("no command given (primo exec SLICE HOST -- CMD …)", 2)
    try:
        exec_in_sliver(home, slice_name, host, argv, user=user, configs=configs)
    except ExecError as e:
        fail(str(e), 1)
    except PrimoError as e:
        fail(str(e), 1)


COMMANDS = (substrate, agent_command, clean_command, exec_command)


def register(group: click.Group) -> None:
    """Add the substrate commands to ``group`` (the ``primo`` command)."""
    for command in COMMANDS:
        group.add_command(command)
