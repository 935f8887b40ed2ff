"""What a model is, as plain JSON-safe data, without running it: ``python -m primogeni.sim.describe``.

The aggregate must learn a few facts about a researcher's model before it allocates anything:
its emulated hosts (the containers to make, with their addresses and simulated gateways), its
address space (what the hosts route to their gateway), the names of its elements (what a
``<primo:map virtual=...>`` may name) and what it predicts between the emulated hosts (for the
researcher to hold ``ping`` and ``iperf3`` against). :func:`describe` builds the model's
:class:`~primogeni.sim.simulation.Simulation` and checks it (every model error is raised), but
never runs it, and reads those facts from the simulator's own objects:

* the emulated hosts' addresses and gateways from an :class:`~primogeni.sim.emulation.Emulation`
  of the built simulation: exactly what ``primo immerse`` gives the real hosts;
* the paths from the simulator's forwarding (:meth:`Simulation.trace`: its routing tables and
  longest-prefix match), in both directions, so asymmetric routes are what they will be;
* the predicted ping RTT as ``Simulation.path_delay`` counts it: per hop, serialisation of the
  packet at the sending interface's rate plus the hop's propagation delay (the link's delay and
  the sending interface's latency), for a default ``ping`` (56 payload bytes: an 84-byte IPv4
  packet) out and back. Queueing, random loss and processing time are not in it.

The command line prints the description (version 1) on stdout. A model error is printed as
``error: <message>`` on stderr with exit code 2; any other failure exits 1. Python models are
arbitrary code: the aggregate runs this command only inside its sandbox
(:mod:`primogeni.am.modelbox`), never in its own process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import traceback
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

from primogeni.errors import ModelError
from primogeni.net.units import tx_ns
from primogeni.sim.emulation import Emulation
from primogeni.sim.loader import load_model_text
from primogeni.sim.model import Host, Interface, Net, Network, Node, Router
from primogeni.sim.node import Port, SimNode
from primogeni.sim.simulation import Simulation
from primogeni.sim.traffic import Flow, Poisson, UdpOnOff

VERSION = 1
PING_IP_BYTES = 84  # `ping` by default: 56 bytes of payload + 8 of ICMP header + 20 of IPv4 header
FORMATS = {".dml": "dml", ".py": "python"}
KINDS = frozenset({"net", "host", "router"})


def describe(network: Network, *, seed: int = 1) -> dict[str, Any]:
    """The description (version 1) of a loaded model: see the module's docstring and
    :func:`main`. Raises :class:`ModelError` for anything wrong with the model."""
    sim = Simulation(network, seed=seed)
    sim.check()
    emulation = Emulation(sim, _no_emit)
    emulated = []
    for path, h in emulation.hosts.items():
        emulated.append({"path": path, "address": str(h.address), "gateway": str(h.gateway),
                         "interface": h.port.path})
    paths = [_path(sim, src, dst) for src in emulation.hosts for dst in emulation.hosts if src != dst]
    return {
        "version": VERSION,
        "name": network.name,
        "prefix": str(network.prefix),
        "elements": elements(network),
        "emulated": emulated,
        "paths": paths,
        "traffic": _traffic(network),
    }


def _no_emit(path: str, frame: bytes, gso: object) -> None:
    raise AssertionError("a described model never runs")  # pragma: no cover


def elements(network: Network) -> dict[str, str]:
    """Every net, host and router by full path (``top:left:h1``) → ``net``, ``host`` or ``router``."""
    return {e.path: e.kind for e in network.walk() if isinstance(e, Net | Host | Router)}


def ping_rtt_ns(sim: Simulation, src: str, dst: str, size: int = PING_IP_BYTES) -> int:
    """The RTT (ns) the model gives ``size``-byte IPv4 packets from node ``src`` to node ``dst``
    and back, on an idle network: what ``ping`` should show (84 bytes: a default ``ping``)."""
    return sim.path_delay(src, dst, size) + sim.path_delay(dst, src, size)


def _hops_ns(hops: list[tuple[Port, Port]], size: int) -> int:
    return sum(tx_ns(size, out.bps) + out.delay for out, _ in hops)


def _path(sim: Simulation, src: str, dst: str) -> dict[str, Any]:
    """What the model predicts from emulated host ``src`` to emulated host ``dst``."""
    s_node, d_node = sim.nodes[src], sim.nodes[dst]
    saddr, daddr = s_node.address, d_node.address  # an emulated host has one interface
    there = sim.trace(s_node, daddr)
    back = sim.trace(d_node, saddr)
    if there is None or back is None:
        return {"src": src, "dst": dst, "reachable": False,
                "unreachable": "there" if there is None else "back"}
    routers: list[SimNode] = [rx.node for _, rx in there[:-1]]
    bottleneck = min(there, key=lambda hop: hop[0].bps)[0]  # the first of the slowest
    delivered = 1.0
    for out, _ in there:
        delivered *= 1.0 - out.loss
    return {
        "src": src,
        "dst": dst,
        "reachable": True,
        "routers": [r.path for r in routers],
        # what traceroute shows: the address each router's ICMP errors come from
        "traceroute": [str(IPv4Address(r.source_for(saddr))) for r in routers],
        "links": len(there),
        "one_way_delay_s": sum(out.delay for out, _ in there) / 1e9,
        "ping_rtt_s": (_hops_ns(there, PING_IP_BYTES) + _hops_ns(back, PING_IP_BYTES)) / 1e9,
        "bottleneck_bps": bottleneck.bps,
        "bottleneck": bottleneck.path,
        "loss": 1.0 - delivered,
    }


def _endpoint(end: Node | Interface | str, net: Net, network: Network) -> str:
    """The full path of the node a flow's ``src`` or ``dst`` names (as the simulator resolves it)."""
    target: object = end
    if isinstance(end, str):
        target = net.lookup(end) or network.lookup(end.removeprefix(network.name + ":"))
    if isinstance(target, Interface):
        target = target.node
    assert isinstance(target, Node), f"{end!r} was checked by Simulation.check"
    return target.path


def _traffic(network: Network) -> list[dict[str, Any]]:
    """The model's simulated flows, named as the results name them (``flowK`` when unnamed)."""
    out: list[dict[str, Any]] = []
    planned: list[tuple[Flow, Net]] = [(f, e) for e in network.walk() if isinstance(e, Net) for f in e.flows]
    for k, (flow, net) in enumerate(planned):
        row: dict[str, Any] = {
            "name": flow.name or f"flow{k}",
            "kind": flow.kind,
            "src": _endpoint(flow.src, net, network),
            "dst": _endpoint(flow.dst, net, network),
            "start_s": flow.start / 1e9,
            "stop_s": None if flow.stop is None else flow.stop / 1e9,
        }
        rate = getattr(flow, "rate", None)
        if isinstance(flow, Poisson):  # packets/s of sizes drawn: the mean bit rate
            row["rate_pps"] = flow.rate
            mean = getattr(flow.size, "mean", None)
            if isinstance(mean, int | float):
                row["rate_bps"] = flow.rate * mean * 8
        elif rate is not None:
            row["rate_bps"] = rate.bps  # IP bytes; an on/off source's rate while on
            if isinstance(flow, UdpOnOff):
                on, off = getattr(flow.on, "mean", None), getattr(flow.off, "mean", None)
                if isinstance(on, int | float) and isinstance(off, int | float) and on + off > 0:
                    row["mean_rate_bps"] = rate.bps * on / (on + off)
        out.append(row)
    return out


def check_description(desc: Any) -> dict[str, Any]:
    """``desc`` if it has the shape of a version-1 description with consistent names and addresses
    (each emulated host a host of the model, in its prefix, its gateway on its subnet), else
    ValueError (or TypeError, KeyError, AttributeError). For a description from untrusted hands."""
    def need(cond: object, what: str) -> None:
        if not cond:
            raise ValueError(what)

    need(isinstance(desc, dict) and desc.get("version") == VERSION, f"not a version-{VERSION} description")
    need(isinstance(desc["name"], str), "name")
    prefix = IPv4Network(desc["prefix"])
    elements = desc["elements"]
    need(isinstance(elements, dict) and all(isinstance(k, str) and v in KINDS for k, v in elements.items()),
         "elements must map names to net, host or router")
    hosts: set[str] = set()
    for h in desc["emulated"]:
        need(isinstance(h, dict) and elements.get(h["path"]) == "host", f"emulated {h!r} is not a host of the model")
        address, gateway = IPv4Interface(h["address"]), IPv4Address(h["gateway"])
        need(address.ip in prefix, f"{h['path']}: address {address} is outside the model's prefix {prefix}")
        need(gateway in address.network and gateway != address.ip,
             f"{h['path']}: gateway {gateway} is not another address of its subnet {address.network}")
        hosts.add(h["path"])
    for p in desc["paths"]:
        need(p["src"] in hosts and p["dst"] in hosts and isinstance(p["reachable"], bool), "paths: src, dst")
        if p["reachable"]:
            need(all(elements.get(r) == "router" for r in p["routers"]), "paths: routers")
            need(all(isinstance(p[k], int | float) and p[k] >= 0 for k in
                     ("links", "one_way_delay_s", "ping_rtt_s", "bottleneck_bps", "loss")), "paths: figures")
    for t in desc["traffic"]:
        need(all(isinstance(t[k], str) for k in ("name", "kind", "src", "dst")), "traffic")
    return dict(desc)


# -- the command line ----------------------------------------------------------------------------
class _Usage(Exception):
    pass


def _load(fmt: str, source: str, params: dict[str, str]) -> Network:
    """Load the model (:func:`~primogeni.sim.loader.load_model_text`, named as a file of its format).
    Anything a Python model's own code raises is the model's error."""
    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    suffix = ".dml" if fmt == "dml" else ".py"
    name = source if Path(source).suffix == suffix else f"{'<stdin>' if source == '-' else source}{suffix}"
    try:
        with contextlib.redirect_stdout(sys.stderr):  # the model's prints must not spoil the JSON
            return load_model_text(text, name, params)
    except (ModelError, MemoryError, RecursionError):
        raise
    except SystemExit as exc:
        raise ModelError(f"{Path(name).name} exited while loading (exit code {exc.code})") from None
    except Exception as exc:  # the model's own code failed: tell where, in its file
        where = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == name]
        at = f"{Path(name).name} line {where[-1].lineno}: " if where else f"{Path(name).name}: "
        raise ModelError(f"{at}{type(exc).__name__}: {exc}") from None


def _format(args: argparse.Namespace) -> str:
    if args.format:
        return str(args.format)
    fmt = FORMATS.get(Path(args.file).suffix) if args.file != "-" else None
    if fmt is None:
        raise _Usage(f"cannot tell the format of {args.file!r}: give --format dml or --format python")
    return fmt


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m primogeni.sim.describe [--format dml|python] [--param K=V ...] [--seed N] FILE``
    (``-``: standard input): the description as JSON on stdout. Exit codes: 0 done; 2 a model
    error (or bad arguments), printed as ``error: <message>`` on stderr; 1 anything else."""
    ap = argparse.ArgumentParser(prog="python -m primogeni.sim.describe", description=__doc__.splitlines()[0])
    ap.add_argument("--format", choices=sorted(set(FORMATS.values())))
    ap.add_argument("--param", "-p", action="append", default=[], metavar="K=V", help="a model() parameter")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("file", metavar="FILE", help="the model (.dml or .py), or - for standard input")
    args = ap.parse_args(argv)
    try:
        params: dict[str, str] = {}
        for p in args.param:
            key, sep, value = p.partition("=")
            if not sep or not key:
                raise _Usage(f"--param {p!r}: expected K=V")
            params[key] = value
        network = _load(_format(args), args.file, params)
        text = json.dumps(describe(network, seed=args.seed), separators=(",", ":"))
    except (ModelError, _Usage) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the model file (not the model's code: that is a ModelError above)
        print(f"error: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except UnicodeDecodeError as exc:
        print(f"error: {args.file} is not UTF-8 text ({exc.reason} at byte {exc.start})", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory while loading the model", file=sys.stderr)
        return 2
    except RecursionError:
        print("error: the model nests or recurses too deeply", file=sys.stderr)
        return 2
    except Exception as exc:  # a failure of ours, not the model's: say so, with the traceback
        traceback.print_exc()
        print(f"error: internal: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    return 0


__all__ = ["PING_IP_BYTES", "VERSION", "check_description", "describe", "elements", "main", "ping_rtt_ns"]

if __name__ == "__main__":
    sys.exit(main())
