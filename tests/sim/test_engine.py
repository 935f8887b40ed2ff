from primogeni.sim.engine import Engine


def test_events_run_in_time_order_and_ties_by_scheduling_order():
    eng = Engine()
    seen = []
    eng.schedule(20, seen.append, "c")
    eng.schedule(10, seen.append, "a")
    eng.schedule(10, seen.append, "b")
    eng.run()
    assert seen == ["a", "b", "c"]
    assert eng.now == 20
    assert eng.events == 3


def test_run_until_stops_and_advances_clock():
    eng = Engine()
    seen = []
    for t in (5, 10, 15):
        eng.schedule(t, seen.append, t)
    eng.run(until=10)
    assert seen == [5, 10]
    assert eng.now == 10
    eng.run(until=100)
    assert seen == [5, 10, 15]
    assert eng.now == 100


def test_cancelled_timer_does_not_fire():
    eng = Engine()
    seen = []
    t = eng.timer(5, seen.append, "x")
    eng.timer(6, seen.append, "y")
    eng.cancel(t)
    eng.run()
    assert seen == ["y"]


def test_cannot_schedule_in_the_past():
    eng = Engine()
    eng.schedule(10, lambda _: None)
    eng.run()
    try:
        eng.schedule(5, lambda _: None)
    except ValueError as e:
        assert "past" in str(e)
    else:
        raise AssertionError("scheduling in the past was accepted")


def test_two_engines_are_independent():
    a, b = Engine(), Engine()
    out = []
    a.schedule(1, out.append, "a")
    b.schedule(2, out.append, "b")
    a.run()
    assert out == ["a"] and b.now == 0 and a.now == 1


def test_stop_ends_run_after_the_current_event_and_the_next_run_goes_on():
    eng = Engine()
    seen = []
    eng.schedule(5, lambda _: (seen.append(5), eng.stop()))
    eng.schedule(10, seen.append, 10)
    eng.run(until=20)
    assert seen == [5] and eng.now == 5 and eng.pending == 1
    eng.run(until=20)
    assert seen == [5, 10] and eng.now == 20
