"""Kill the AM (SIGKILL) in the middle of a Provision; on restart the slice is whole or rolled back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import create_engine, func, select, text

from primogeni.am.models import PlanRow

from .conftest import proxy, v3
from .test_api_v3 import code

HERE = Path(__file__).parent
REQUEST = ("<rspec xmlns='http://www.geni.net/resources/rspec/3' type='request'>"
           + "".join(f"<node client_id='n{i}'><sliver_type name='emulated-host'/>"
                     f"<interface client_id='n{i}:if0'/></node>" for i in range(5))
           + "<link client_id='lan'>" + "".join(f"<interface_ref client_id='n{i}:if0'/>" for i in range(5))
           + "</link></rspec>")


def start_am(data: Path, db_url: str, delay: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, str(HERE / "run_am.py"), str(data), db_url, str(delay)],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    assert url.startswith("https://"), f"AM did not start (exit {proc.poll()})"
    return proc, url


def plans(db_url: str) -> int:
    engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            return conn.scalar(select(func.count()).select_from(PlanRow.__table__)) or 0
    finally:
        engine.dispose()


def test_kill_during_provision(federation, data_dir: Path, db_url: str) -> None:
    cred = federation.slice_cred("alice", "crash")
    slice_urn = "urn:publicid:IDN+primo:proj+slice+crash"
    proc, url = start_am(data_dir, db_url, delay=0.4)
    try:
        am = proxy(federation, url)
        assert code(am.Allocate(slice_urn, [v3(cred)], REQUEST, {})) == 0
        outcome: list[object] = []

        def provision() -> None:
            try:
                outcome.append(proxy(federation, url).Provision([slice_urn], [v3(cred)], {}))
            except Exception as exc:  # the connection dies with the AM
                outcome.append(exc)

        worker = threading.Thread(target=provision)
        worker.start()
        deadline = time.monotonic() + 30
        while plans(db_url) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert plans(db_url) >= 2, "provision never got going"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        worker.join(timeout=30)
        assert outcome and not isinstance(outcome[0], dict), "provision finished before the kill"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    proc, url = start_am(data_dir, db_url, delay=0.0)
    try:
        am = proxy(federation, url)
        slivers = am.Status([slice_urn], [v3(cred)], {})["value"]["geni_slivers"]
        assert len(slivers) == 6
        assert {s["geni_allocation_status"] for s in slivers} == {"geni_allocated"}  # cleanly rolled back
        assert plans(db_url) == 0  # nothing half-made is left in the driver
        answer = am.Provision([slice_urn], [v3(cred)], {})
        assert code(answer) == 0, answer["output"]
        assert {s["geni_allocation_status"] for s in answer["value"]["geni_slivers"]} == {"geni_provisioned"}
        assert plans(db_url) == 6
    finally:
        proc.terminate()
        proc.wait(timeout=10)
