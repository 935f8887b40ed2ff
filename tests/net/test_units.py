import pytest

from primogeni.net.units import Packets, Rate, format_duration, ms, parse_duration, parse_rate, s, us


def test_time_helpers_are_integer_nanoseconds():
    assert ms(5) == 5_000_000 and us(100) == 100_000 and s(1.5) == 1_500_000_000
    assert isinstance(ms(0.1), int)


def test_rate_and_tx_time_round_up():
    r = Rate.mbps(100)
    assert r.bps == 100_000_000
    assert r.tx_time(1500) == 120_000
    assert Rate(3).tx_time(1) == 2_666_666_667


@pytest.mark.parametrize("text,ns", [("10s", 10**10), ("250ms", 250_000_000), ("100us", 100_000), ("2", 2 * 10**9)])
def test_parse_duration(text, ns):
    assert parse_duration(text) == ns


def test_parse_rate_and_errors():
    assert parse_rate("100Mbps") == Rate.mbps(100)
    assert parse_rate("1e8") == Rate(100_000_000)
    with pytest.raises(ValueError, match="not a rate"):
        parse_rate("fast")
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")
    with pytest.raises(ValueError):
        Rate(0)
    with pytest.raises(ValueError):
        Packets(0)
    assert format_duration(ms(3)) == "3 ms"
