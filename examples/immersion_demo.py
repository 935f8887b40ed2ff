"""Real software through a simulated network, deployed by the aggregate: the PrimoGENI demo.

    python examples/immersion_demo.py [HOME] [--out DIR]        (as root)

Makes a fresh authority in HOME (default: a temporary directory), brings up four embedded physical
nodes (``primo substrate up --nodes 4``), starts ``primo ch`` and ``primo am --driver agents``,
and then, through the ``primo`` client, as a researcher would:

1. a member, a project and an experiment (slice);
2. what the model (``examples/campus_immersion.py``: 28 routers, simulated background traffic,
   two emulated hosts) predicts between its emulated hosts;
3. a request with the model inline: emulated hosts h1 on pc1 and h2 on pc2, the simulator on
   pc3; ``primo create`` allocates, provisions (the aggregate wires h1 and h2 to the simulator)
   and starts it (the simulation runs in real time);
4. ``ping`` and ``iperf3`` between h1 and h2, inside their containers, beside the prediction;
5. ``primo stop`` (the simulation writes its measurements), ``primo results`` (fetched, with a
   plot of link utilisation, into DIR, default ``results/immersion``);
6. ``primo delete``, ``primo substrate down``.

Everything it made is removed whatever happens; exits non-zero if a step fails.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _demo import PRIMO, embedded_testbed, manifest, primo, ssh_key, step

AUTH = "urn:publicid:IDN+primo+node+"
MODEL = Path(__file__).with_name("campus_immersion.py")


def request(model_text: str) -> str:
    def node(name: str, pc: str, kind: str) -> str:
        return (f'  <node client_id="{name}" component_id="{AUTH}{pc}" exclusive="false">'
                f'<sliver_type name="{kind}"/></node>\n')

    return ('<rspec xmlns="http://www.geni.net/resources/rspec/3"\n'
            '       xmlns:primo="http://www.primogeni.net/resources/rspec/ext/primogeni/1" type="request">\n'
            + node("h1", "pc1", "emulated-host") + node("h2", "pc2", "emulated-host")
            + node("sim", "pc3", "simulator")
            + f'  <primo:model format="python"><![CDATA[{model_text}]]>\n'
            '    <primo:map virtual="top:h1" node="h1"/>\n    <primo:map virtual="top:h2" node="h2"/>\n'
            '    <primo:map virtual="top" node="sim"/>\n  </primo:model>\n</rspec>\n')


def prediction() -> dict[str, Any]:
    """What the model says about h1 → h2, from the describe the aggregate runs (in its sandbox)."""
    out = subprocess.run([sys.executable, "-m", "primogeni.sim.describe", str(MODEL)], capture_output=True,
                         text=True, check=True)
    facts = json.loads(out.stdout)
    path = next(p for p in facts["paths"] if p["src"] == "top:h1" and p["dst"] == "top:h2")
    background = sum(t.get("rate_bps", 0) for t in facts["traffic"] if t["name"] == "background")
    routers = sum(1 for kind in facts["elements"].values() if kind == "router")
    print(f"model: {routers} routers, {len(facts['emulated'])} emulated hosts "
          f"({', '.join(e['path'] + ' ' + e['address'] for e in facts['emulated'])}); "
          f"h1 → h2 crosses {len(path['routers'])} routers; ping RTT {path['ping_rtt_s'] * 1e3:.2f} ms; "
          f"bottleneck {path['bottleneck']} at {path['bottleneck_bps'] / 1e6:g} Mb/s, "
          f"{background / 1e6:g} Mb/s of it taken by simulated UDP", flush=True)
    return {"rtt_ms": path["ping_rtt_s"] * 1e3, "tcp_mbps": (path["bottleneck_bps"] - background) / 1e6,
            "bottleneck_mbps": path["bottleneck_bps"] / 1e6}


def address(info: dict[str, Any], name: str) -> str:
    node = next(n for n in info["nodes"] if n["client_id"] == name)
    return str(next(a for i in node["interfaces"] for a in i["addresses"])).split("/")[0]


def exec_in(home: Path, host: str, *argv: str, capture: bool = True) -> str:
    return primo(home, "exec", "exp1", host, "--", *argv, capture=capture)


def measure(home: Path, info: dict[str, Any]) -> dict[str, float]:
    target = address(info, "h2")
    deadline = time.monotonic() + 30  # the simulator attaches the hosts right after the start
    while subprocess.run([*PRIMO, "exec", "exp1", "h1", "--home", str(home), "--", "ping", "-n", "-c", "1", "-W",
                          "1", target], capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise SystemExit("h1 never reached h2 through the simulator")
    step("ping h2 from h1 (inside h1's container)")
    out = exec_in(home, "h1", "ping", "-n", "-c", "10", "-i", "0.2", target)
    print(out, end="", flush=True)
    rtt = statistics.median(float(x) for x in re.findall(r"time=([\d.]+) ms", out))
    step("iperf3: TCP from h1 to h2 for 8 s, beside the simulated background traffic")
    server = subprocess.Popen([*PRIMO, "exec", "exp1", "h2", "--home", str(home), "--", "iperf3", "-s", "-1"],
                              stdout=subprocess.DEVNULL)
    try:
        time.sleep(1)
        report = json.loads(exec_in(home, "h1", "iperf3", "-c", target, "-t", "8", "-O", "2", "-J"))
    finally:
        server.wait(timeout=30)
    for interval in report["intervals"]:
        s = interval["sum"]
        print(f"  {s['start']:4.1f}-{s['end']:4.1f} s  {s['bits_per_second'] / 1e6:6.2f} Mb/s"
              f"{'  (omitted: slow start)' if s.get('omitted') else ''}", flush=True)
    return {"rtt_ms": rtt, "tcp_mbps": report["end"]["sum_received"]["bits_per_second"] / 1e6}


def main() -> None:
    args = sys.argv[1:]
    out_dir = Path("results/immersion")
    if "--out" in args:
        k = args.index("--out")
        out_dir, args = Path(args[k + 1]), args[:k] + args[k + 2:]
    started = time.monotonic()
    with embedded_testbed(Path(args[0]) if args else None, "immersion") as home:
        demo(home, out_dir)
    print(f"\nimmersion demo: done in {time.monotonic() - started:.0f} s")


def demo(home: Path, out_dir: Path) -> None:
    step("a member (made by primo init), a project, an experiment, an SSH key")
    primo(home, "member", "list")
    key = ssh_key(home)
    primo(home, "project", "create", "demo", "--description", "PrimoGENI immersion demo")
    primo(home, "slice", "create", "exp1", "--days", "1")
    primo(home, "key", "add", f"{key}.pub")
    step(f"what the model predicts ({MODEL.name})")
    predicted = prediction()
    step("create: h1 on pc1 and h2 on pc2 (emulated hosts), the simulator on pc3, the model inline")
    (home / "immersion.xml").write_text(request(MODEL.read_text()))
    primo(home, "create", "exp1", str(home / "immersion.xml"))
    primo(home, "manifest", "exp1")
    measured = measure(home, manifest(home, "exp1"))
    step("stop the slice: the simulation writes its measurements; fetch them and plot link utilisation")
    primo(home, "stop", "exp1")
    primo(home, "results", "exp1", "--out", str(out_dir))
    summary = json.loads((out_dir / "sim" / "summary.json").read_text())
    rt = summary["realtime"]
    step("measured beside predicted")
    print(f"  ping RTT h1 → h2    measured {measured['rtt_ms']:7.2f} ms    model {predicted['rtt_ms']:7.2f} ms")
    print(f"  TCP throughput      measured {measured['tcp_mbps']:7.2f} Mb/s  model ≈ {predicted['tcp_mbps']:5.2f}"
          f" Mb/s ({predicted['bottleneck_mbps']:g} Mb/s bottleneck less the simulated UDP)")
    lag = rt["lag_s"]
    print(f"  real time: {rt['events']:,} events in {rt['wall_s']:.1f} s, lag p50 {lag['p50'] * 1e6:.1f} µs, "
          f"p99 {lag['p99'] * 1e6:.0f} µs, max {lag['max'] * 1e3:.2f} ms; "
          + ("kept up with the wall clock" if rt["kept_up"] else
             f"FELL BEHIND by {rt['behind_threshold_s'] * 1e3:g} ms or more {rt['behind_episodes']} times, "
             f"{rt['behind_s'] * 1e3:.0f} ms in all"), flush=True)
    print(f"  figures: {', '.join(str(p) for p in sorted((out_dir / 'sim').glob('*.png')))}", flush=True)
    step("delete the experiment; take the substrate down")
    primo(home, "delete", "exp1")


if __name__ == "__main__":
    main()
