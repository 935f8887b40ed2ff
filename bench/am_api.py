"""AM API throughput over TLS: GetVersion, ListResources and Status (credential-checked).

    .venv/bin/python bench/am_api.py [--seconds 5] [--clients 1 16]

Starts ``primo``'s AM in its own process (a fresh authority made by ``init_authority``, SQLite),
provisions one two-node slice, then drives each method from 1 and 16 concurrent clients (threads
in this process, one keep-alive TLS connection each) and prints calls/s with median and 99th-
percentile latency.

Peer, measured in the same run: the reference AM (geni-tools gcf) checks each credential by
running the ``xmlsec1`` program once per signature. The bench times exactly that —
``xmlsec1 --verify --trusted-pem ROOT`` on the same slice credential — and prints our
credential-checked calls/s as a ratio to the rate that check alone allows (1 / its time). The
``xmlsec1`` program is Debian's package ``xmlsec1`` (``make bench`` installs it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xmlrpc.client
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from primogeni.am.inventory import default_inventory_toml
from primogeni.ch.authority import Authority, init_authority
from primogeni.geni.cert import Identity, issue
from primogeni.geni.cred import SLICE_PRIVILEGES, Privilege, issue_credential
from primogeni.geni.urn import Urn
from primogeni.rpc import client

AM_MAIN = """
import sys
from pathlib import Path
from primogeni.am.service import AmService
s = AmService(Path(sys.argv[1]), reap_interval=3600, threads=32)
print(s.urls["3"], flush=True)
s.serve_forever()
"""
REQUEST = ("<rspec xmlns='http://www.geni.net/resources/rspec/3' type='request'>"
           "<node client_id='a'><sliver_type name='emulated-host'/><interface client_id='a:if0'/></node>"
           "<node client_id='b'><sliver_type name='emulated-host'/><interface client_id='b:if0'/></node>"
           "<link client_id='l'><interface_ref client_id='a:if0'/><interface_ref client_id='b:if0'/></link></rspec>")
GENI3 = {"type": "GENI", "version": "3"}


def setup(home: Path) -> tuple[Authority, str, str]:
    auth = init_authority(home, "primo", first_member=("alice", "alice@example.org"))
    (home / "am" / "inventory.toml").write_text(default_inventory_toml())
    now = datetime.now(UTC)
    alice = Identity.load(*auth.user_files("alice"))
    sa = Identity.load(home / "ch" / "sa.pem", home / "ch" / "sa.key")
    slice_gid = issue(sa, Urn("primo:bench", "slice", "exp"), now=now, lifetime=timedelta(days=30), ca=False,
                      public_key=sa.key.public_key())
    cred = issue_credential(sa, alice.gid, slice_gid, [Privilege(p, True) for p in SLICE_PRIVILEGES],
                            now + timedelta(days=7), now=now)
    ma = Identity.load(home / "ch" / "ma.pem", home / "ch" / "ma.key")
    ucred = issue_credential(ma, alice.gid, alice.gid, [Privilege(p, True) for p in ("refresh", "resolve", "info")],
                             now + timedelta(days=7), now=now)
    return auth, cred.xml, ucred.xml


def run(calls: Callable[[], Callable[[], object]], clients: int, seconds: float) -> tuple[float, float, float, int]:
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0]
    start = threading.Barrier(clients + 1)
    stop = threading.Event()

    def worker(i: int) -> None:
        call = calls()
        call()  # warm: TLS handshake and first request outside the timing
        start.wait()
        mine = latencies[i]
        while not stop.is_set():
            t0 = time.perf_counter()
            answer = call()
            mine.append(time.perf_counter() - t0)
            if not isinstance(answer, dict) or answer["code"]["geni_code"] != 0:
                errors[0] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    flat = sorted(x for per in latencies for x in per)
    p99 = flat[min(len(flat) - 1, int(0.99 * len(flat)))]
    return len(flat) / elapsed, statistics.median(flat) * 1e3, p99 * 1e3, errors[0]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def xmlsec1_check(home: Path, cred_xml: str, repeats: int = 20) -> float | None:
    """Median seconds for one reference-style check: the xmlsec1 program verifying the credential."""
    exe = shutil.which("xmlsec1")
    if exe is None:
        return None
    path = home / "cred.xml"
    path.write_text(cred_xml)
    root = next((home / "trusted_roots").glob("*.pem"))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = subprocess.run([exe, "--verify", "--node-id", "Sig_" + cred_xml.split('xml:id="', 1)[1].split('"')[0],
                              "--trusted-pem", str(root), "--enabled-reference-uris", "same-doc",
                              "--id-attr:xml:id", "credential", str(path)], capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if out.returncode != 0:
            print(f"xmlsec1 could not verify our credential: {out.stderr.strip()[:300]}")
            return None
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="primo-bench-"))
    proc = None
    try:
        auth, cred, ucred = setup(home)
        proc = subprocess.Popen([sys.executable, "-c", AM_MAIN, str(home)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        cert, key = auth.user_files("alice")
        slice_urn = "urn:publicid:IDN+primo:bench+slice+exp"
        creds = [{"geni_type": "geni_sfa", "geni_version": "3", "geni_value": cred}]
        ucreds = [{"geni_type": "geni_sfa", "geni_version": "3", "geni_value": ucred}]
        am = client(url, cert=cert, key=key)
        assert am.Allocate(slice_urn, creds, REQUEST, {})["code"]["geni_code"] == 0
        assert am.Provision([slice_urn], creds, {})["code"]["geni_code"] == 0

        def proxy() -> xmlrpc.client.ServerProxy:
            return client(url, cert=cert, key=key)

        methods: dict[str, Callable[[], Callable[[], object]]] = {
            "GetVersion": lambda: (lambda p: lambda: p.GetVersion({}))(proxy()),
            "ListResources": lambda: (lambda p: lambda: p.ListResources(ucreds, {"geni_rspec_version": GENI3}))(
                proxy()),
            "Status": lambda: (lambda p: lambda: p.Status([slice_urn], creds, {}))(proxy()),
        }
        ref = xmlsec1_check(home, cred)
        print(f"AM at {url}; {args.seconds:.0f} s per case; clients are threads in one process, one TLS "
              "keep-alive connection each")
        print(f"{'method':14} {'clients':>7} {'calls/s':>9} {'median ms':>10} {'p99 ms':>8} {'errors':>6} "
              f"{'AM CPU ms/call':>14}  vs ref")
        for name, make in methods.items():
            for n in args.clients:
                cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
                rate, med, p99, errs = run(make, n, args.seconds)
                calls = rate * (time.perf_counter() - t0)
                cpu = (cpu_seconds(proc.pid) - cpu0) / max(calls, 1) * 1e3
                versus = ""
                if ref is not None and name != "GetVersion":
                    versus = f"{rate * ref:6.1f}x"
                print(f"{name:14} {n:7d} {rate:9.0f} {med:10.2f} {p99:8.2f} {errs:6d} {cpu:14.2f}  {versus}")
        if ref is not None:
            print(f"reference-style credential check (xmlsec1 subprocess, same credential): {ref * 1e3:.1f} ms "
                  f"median → at most {1 / ref:.0f} credential-checked calls/s; 'vs ref' is our rate over that")
        else:
            print("xmlsec1 program not installed (Debian package xmlsec1): no reference figure")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
