"""Real-time mode (sim.realtime): pacing, lag figures, falling behind, descriptor I/O, stop, CLI.

These tests run against the real wall clock. Lower bounds are strict (an event that runs early
is a bug); upper bounds are loose, for a loaded 2-core CI machine.
"""

import itertools
import json
import logging
import math
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from primogeni.cli.main import main
from primogeni.sim import Network, Ping, Rate, Simulation, UdpCbr, ms, s, us
from primogeni.sim.engine import Engine
from primogeni.sim.realtime import LAG_LABELS, LagStats, RealtimeLoop

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SLACK = 0.5  # s: how late a whole run may end on a busy machine


def light_model() -> Network:
    net = Network()
    h1, h2, r = net.host("h1"), net.host("h2"), net.router("r")
    net.link(h1, r, bandwidth=Rate.mbps(100), delay=ms(1))
    net.link(r, h2, bandwidth=Rate.mbps(10), delay=ms(2))
    net.add_flow(Ping(src=h1, dst=h2, interval=ms(10), name="ping"))
    net.add_flow(UdpCbr(src=h2, dst=h1, rate=Rate.mbps(1), name="cbr"))
    return net


def paced_engine(times: list[int]) -> tuple[Engine, list[tuple[int, int]]]:
    """An engine whose events record (simulated time, wall time at dispatch)."""
    eng = Engine()
    seen: list[tuple[int, int]] = []
    for t in times:
        eng.schedule(t, lambda _: seen.append((eng.now, time.monotonic_ns())))
    return eng, seen


@pytest.mark.parametrize("ratio", [1.0, 2.0])
def test_events_never_run_early_and_the_run_lasts_duration_over_ratio(ratio):
    eng, seen = paced_engine([ms(10) * i for i in range(31)])
    loop = RealtimeLoop(eng, ratio)
    t0 = time.monotonic()
    loop.run(ms(300))
    wall = time.monotonic() - t0
    assert eng.now == ms(300) and len(seen) == 31
    for t, at in seen:
        assert at >= loop.wall_time(t), f"event at {t} ns ran {(loop.wall_time(t) - at) / 1e3:.0f} µs early"
    assert 0.3 / ratio <= wall < 0.3 / ratio + SLACK
    assert loop.wall_time(ms(300)) - loop.wall_time(0) == int(ms(300) / ratio)
    sm = loop.summary()
    assert sm["events"] == 31 and sm["ratio"] == ratio
    assert sum(sm["lag_histogram"].values()) == 31
    loop.close()


@pytest.mark.parametrize("ratio", [1.0, 2.0])
def test_simulation_paced_by_ratio(ratio):
    sim = Simulation(light_model(), seed=3)
    t0 = time.monotonic()
    res = sim.run(ms(300), realtime=ratio)
    wall = time.monotonic() - t0
    assert 0.3 / ratio <= wall < 0.3 / ratio + SLACK
    rt = res.summary["realtime"]
    assert rt["ratio"] == ratio and 0.3 / ratio <= rt["wall_s"] < 0.3 / ratio + SLACK
    assert rt["events"] == res.events > 0
    assert res.summary["duration_s"] == res.summary["planned_duration_s"] == 0.3
    assert res.summary["stopped_early"] is False
    assert res.flow("ping")["rtt_s"]["count"] >= 25  # one every 10 ms


def test_light_model_lags_little_and_keeps_up():
    # The default threshold is 1 ms; a shared, loaded CI machine deschedules a process for that
    # long now and then (measured here: 1 run in 30 saw a 15 ms stall), so this checks "kept up"
    # against 20 ms, the typical lag against 1 ms (measured: p50 ~1 µs), and measures up to
    # three times before failing.
    for _ in range(3):
        sim = Simulation(light_model(), seed=3)
        sim.realtime.behind_threshold = ms(20)
        res = sim.run(ms(300), realtime=1.0)
        rt = res.summary["realtime"]
        if rt["kept_up"] and rt["lag_s"]["p50"] < 1e-3:
            break
    assert rt["kept_up"] is True and rt["behind_episodes"] == 0 and rt["behind_s"] == 0.0
    assert rt["lag_s"]["p50"] < 1e-3
    assert rt["lag_s"]["max"] >= rt["lag_s"]["p99"] >= rt["lag_s"]["p50"] >= 0
    assert list(rt["lag_histogram"]) == list(LAG_LABELS)
    assert sum(rt["lag_histogram"].values()) == rt["events"]


def busy(ns: int) -> None:
    end = time.perf_counter_ns() + ns
    while time.perf_counter_ns() < end:
        pass


def test_overload_is_reported_loudly_and_the_clock_is_not_rebased(caplog):
    # 31 events 1 ms apart that each take 4 ms: ~90 ms behind at the worst; then a light
    # event at 500 ms must run at its own wall time (the mapping was kept), not ~90 ms later
    # as it would if the clock had been re-based when the run caught up.
    eng = Engine()
    late: list[int] = []
    for i in range(31):
        eng.schedule(ms(1) * i, lambda _: busy(ms(4)))
    eng.schedule(ms(500), lambda _: late.append(time.monotonic_ns()))
    loop = RealtimeLoop(eng, 1.0)
    with caplog.at_level(logging.INFO, logger="primogeni.sim.realtime"):
        loop.run(ms(550))
    sm = loop.summary()
    assert sm["kept_up"] is False and loop.kept_up is False
    assert sm["behind_episodes"] >= 1
    assert 0.05 < sm["behind_s"] < 1.0
    assert sm["lag_s"]["max"] >= 0.08
    assert sm["lag_histogram"]["<100ms"] >= 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "primogeni.sim.realtime"]
    assert len(warnings) == 1, "rate-limited: at most one warning per second"
    assert "BEHIND" in warnings[0].getMessage() and "since simulated" in warnings[0].getMessage()
    assert any("caught up" in r.getMessage() for r in caplog.records)
    due = loop.wall_time(ms(500))
    assert due <= late[0] < due + ms(50)
    assert eng.now == ms(550)
    loop.close()


def test_reader_runs_at_the_wall_clock_time_and_schedules_events():
    # No simulated events at all: the loop must still wait, serve the descriptor and end on time.
    eng = Engine()
    loop = RealtimeLoop(eng, 2.0)
    a, b = socket.socketpair()
    a.setblocking(False)
    writes: list[int] = []
    reads: list[tuple[int, int]] = []  # (engine.now in the callback, wall time)
    ran: list[tuple[int, int]] = []  # events scheduled by the callback: (now, wall)

    def on_readable() -> None:
        a.recv(16)
        now = eng.now
        reads.append((now, time.monotonic_ns()))
        eng.schedule(now + ms(10), lambda _: ran.append((eng.now, time.monotonic_ns())))

    def writer() -> None:
        while loop.started_at is None:
            time.sleep(0.001)
        for off in (ms(30), ms(60), ms(90)):
            delay = (loop.started_at + off - time.monotonic_ns()) / 1e9
            if delay > 0:
                time.sleep(delay)
            writes.append(time.monotonic_ns())
            b.send(b"x")

    loop.add_reader(a, on_readable)
    th = threading.Thread(target=writer)
    th.start()
    try:
        t0 = time.monotonic()
        loop.run(ms(300))  # 300 ms simulated = 150 ms of wall time at ratio 2
        wall = time.monotonic() - t0
    finally:
        th.join()
        removed = loop.remove_reader(a)
        a.close()
        b.close()
    assert 0.15 <= wall < 0.15 + SLACK
    assert len(reads) == 3 and len(ran) == 3
    late = []
    for (now, _), w in zip(reads, writes, strict=True):
        expected = (w - loop.started_at) * 2  # simulated ns at the write's wall time
        assert expected <= now + us(10)  # never before the byte was written (rounding aside)
        late.append(now - expected)
    # Measured idle: ~0.1 ms. A loaded machine may delay one wake-up by a few ms.
    assert sorted(late)[1] < ms(10) and max(late) < ms(50), f"callbacks late by {late} simulated ns"
    for (t, at), (now, _) in zip(ran, reads, strict=True):
        assert t == now + ms(10) and at >= loop.wall_time(t)
    assert loop.summary()["io_callbacks"] == 3
    assert removed is True
    loop.close()


def test_remove_reader_stops_callbacks():
    eng = Engine()
    loop = RealtimeLoop(eng)
    r, w = socket.socketpair()
    calls = []
    loop.add_reader(r.fileno(), lambda: calls.append(r.recv(16)))
    w.send(b"a")
    loop.run(ms(20))
    assert calls == [b"a"]
    assert loop.remove_reader(r.fileno()) is True
    w.send(b"b")
    loop.run(ms(40))
    assert calls == [b"a"]
    r.close()
    w.close()
    loop.close()


def test_call_soon_threadsafe_runs_in_the_loop_thread():
    eng = Engine()
    loop = RealtimeLoop(eng)
    got: list[tuple[int, int]] = []
    timer = threading.Timer(0.05, loop.call_soon_threadsafe, [lambda: got.append((threading.get_ident(), eng.now))])
    timer.start()
    loop.run(ms(150))
    timer.join()
    assert len(got) == 1 and got[0][0] == threading.get_ident()
    assert ms(45) <= got[0][1] <= ms(150)
    loop.close()


def test_stop_from_another_thread_ends_the_run_early_with_results():
    sim = Simulation(light_model(), seed=3)
    timer = threading.Timer(0.2, sim.realtime.stop)
    t0 = time.monotonic()
    timer.start()
    res = sim.run(s(5), progress=lambda now: None, realtime=1.0)
    wall = time.monotonic() - t0
    timer.join()
    assert 0.2 <= wall < 0.2 + SLACK
    assert sim.stopped
    sm = res.summary
    assert sm["stopped_early"] is True and sm["planned_duration_s"] == 5.0
    # The loop's clock starts a little after the timer, once the run is built.
    assert 0.15 <= sm["duration_s"] < 0.2 + SLACK and res.duration == sim.engine.now
    assert sm["realtime"]["wall_s"] < 0.2 + SLACK
    assert 15 <= res.flow("ping")["rtt_s"]["count"] <= sm["duration_s"] / 0.01 + 1
    cbr = res.flow("cbr")
    assert cbr["received_packets"] > 0 and cbr["goodput_bps"] == pytest.approx(1e6, rel=0.2)


def test_stop_from_a_signal_handler():
    sim = Simulation(light_model(), seed=3)
    old = signal.signal(signal.SIGALRM, lambda *_: sim.realtime.stop())
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        res = sim.run(s(3), realtime=1.0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert res.summary["stopped_early"] is True and 0.05 <= res.summary["duration_s"] < 0.1 + SLACK


def test_engine_stop_in_a_handler_ends_only_the_current_run():
    eng = Engine()
    seen = []
    eng.schedule(ms(5), lambda _: (seen.append(eng.now), eng.stop()))
    eng.schedule(ms(10), seen.append)
    loop = RealtimeLoop(eng)
    loop.run(ms(30))
    assert seen == [ms(5)] and eng.now == ms(5) and not loop.stopped
    loop.run(ms(30))
    assert seen == [ms(5), None] and eng.now == ms(30)
    loop.close()


def test_bad_ratios_and_misuse_are_refused():
    eng = Engine()
    for bad in (0, -1.0, math.nan, math.inf, "fast"):
        with pytest.raises(ValueError, match="ratio"):
            RealtimeLoop(eng, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ratio"):
        Simulation(light_model()).run(ms(10), realtime=0)
    loop = RealtimeLoop(eng)
    loop.run(ms(1))
    with pytest.raises(RuntimeError, match="fixed"):
        loop.ratio = 2.0
    loop.close()
    sim = Simulation(light_model())
    r, w = socket.socketpair()
    sim.realtime.add_reader(r, lambda: None)
    with pytest.raises(ValueError, match="realtime=RATIO"):
        sim.run(ms(10))
    r.close()
    w.close()


def test_lag_stats_percentiles_from_the_histogram():
    st = LagStats()
    values = [i * 997 for i in range(1, 10_001)]  # 1 µs .. 10 ms
    for v in values:
        st.add(v)
    assert st.count == len(values) and st.max == values[-1]
    assert st.mean == pytest.approx(sum(values) / len(values))
    for q in (50, 99):
        exact = values[math.ceil(len(values) * q / 100) - 1]
        assert st.percentile(q) == pytest.approx(exact, rel=0.07)
    bounds = [0, us(10), us(100), ms(1), ms(10), ms(100), math.inf]
    assert st.decades == [sum(lo <= v < hi for v in values) for lo, hi in itertools.pairwise(bounds)]
    assert math.isnan(LagStats().percentile(50))


def test_cli_realtime_flag_paces_and_reports(tmp_path):
    model = str(EXAMPLES / "dumbbell.py")
    t0 = time.monotonic()
    r = CliRunner().invoke(main, ["sim", model, "-d", "300ms", "-p", "n=1", "--json", "-q", "--realtime", "1"])
    wall = time.monotonic() - t0
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout[r.stdout.index("{"):])
    assert out["realtime"]["ratio"] == 1.0 and wall >= 0.3
    assert "Real time (ratio 1" in r.stderr and "lag histogram" in r.stderr
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    r = CliRunner().invoke(main, ["sim", model, "-d", "300ms", "-p", "n=1", "-q", "--realtime", "2",
                                  "-o", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "summary.json").read_text())["realtime"]["ratio"] == 2.0


def test_cli_run_that_falls_behind_says_so():
    # 200 ms of the ring at 100 times real time needs ~27 M events/s: it cannot keep up.
    r = CliRunner().invoke(main, ["sim", str(EXAMPLES / "ring.dml"), "-d", "200ms", "-q", "--json",
                                  "--realtime", "100"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout[r.stdout.index("{"):])
    assert out["realtime"]["kept_up"] is False and out["realtime"]["behind_episodes"] >= 1
    assert "could not keep up" in r.stderr and "BEHIND" in r.stderr


@pytest.mark.parametrize("bad", ["0", "-2", "abc", "nan", "inf"])
def test_cli_rejects_a_bad_ratio(bad):
    r = CliRunner().invoke(main, ["sim", str(EXAMPLES / "ring.dml"), "-q", "--realtime", bad])
    assert r.exit_code == 2
    assert "Invalid value for '--realtime'" in r.output and repr(bad) in r.output
    r = CliRunner().invoke(main, ["sim", str(EXAMPLES / "ring.dml"), "-q", "--realtime"])
    assert r.exit_code == 2 and "'--realtime' requires an argument" in r.output
