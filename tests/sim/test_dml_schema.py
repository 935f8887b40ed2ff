"""DML models: the examples load, and bad models fail at file:line naming the element."""

from pathlib import Path

import pytest

from primogeni.errors import ModelError
from primogeni.sim import Simulation, s
from primogeni.sim.dml.parser import parse, resolve
from primogeni.sim.dml.schema import network_from_dml
from primogeni.sim.loader import load_model

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

GOOD = """\
Net [
  host [ id 1 interface [ id 0 bitrate 1e8 latency 0.001 ] ]
  router [ id 2 interface [ id 0 ] interface [ id 1 ] ]
  host [ id 3 interface [ id 0 bitrate 1e7 ] ]
  link [ attach 1(0) attach 2(0) delay 0.01 ]
  link [ attach 2(1) attach 3(0) delay 0.002 ]
  traffic [ flow [ type ping name p src 1 dst 3 interval 0.5 count 3 ] ]
]
"""


def _net(text: str, name: str = "model.dml"):
    return network_from_dml(resolve(parse(text, name)))


def test_a_small_dml_model_builds_and_runs():
    net = _net(GOOD)
    assert {n.path for n in net.nodes()} == {"top:1", "top:2", "top:3"}
    iface = net.lookup("1:0")
    assert iface.bandwidth.bps == 100_000_000 and iface.latency == 1_000_000
    r = Simulation(net).run(s(2))
    f = r.flow("p")
    assert f["received_packets"] == 3
    # 84-byte echo: h1->r2 at 100 Mb/s + 10 ms + 1 ms latency; r2->h3 at 1 Gb/s default + 2 ms
    one_way = (84 * 8 * 10) + 11_000_000 + 672 + 2_000_000
    back = 672 + 2_000_000 + (84 * 8 * 1000 // 10) + 10_000_000
    assert round(f["rtt_s"]["min"] * 1e9) == one_way + back


@pytest.mark.parametrize("name", ["ring.dml", "campus.dml"])
def test_example_dml_models_check(name):
    net = load_model(EXAMPLES / name)
    Simulation(net).check()


def _error(text: str) -> ModelError:
    with pytest.raises(ModelError) as e:
        _net(text)
    return e.value


def test_unknown_attribute_names_file_line_and_element():
    e = _error("Net [\n  host [ id 1\n    colour blue\n  ]\n]\n")
    assert e.location == "model.dml:3"
    assert "colour" in str(e) and "top" in str(e)


def test_dangling_attach_is_reported_at_its_line():
    e = _error(
        "Net [\n host [ id 1 interface [ id 0 ] ]\n host [ id 2 interface [ id 0 ] ]\n"
        " link [ attach 1(0)\n   attach 9(0) ]\n]\n"
    )
    assert e.location == "model.dml:5" and "9(0)" in str(e)


def test_attach_to_missing_interface_is_reported():
    e = _error("Net [\n host [ id 1 interface [ id 0 ] ]\n host [ id 2 ]\n link [ attach 1(0) attach 2(4) ]\n]\n")
    assert e.location == "model.dml:4" and "no interface '4'" in str(e)


def test_duplicate_names_are_reported_at_the_second():
    e = _error("Net [\n host [ id 1 ]\n router [ id 1 ]\n]\n")
    assert e.location == "model.dml:3" and "duplicate" in str(e)


def test_address_outside_prefix_is_reported_at_the_interface():
    text = (
        "Net [ prefix 10.0.0.0/16\n host [ id 1 interface [ id 0 ip 10.0.0.1/30 ] ]\n"
        " host [ id 2 interface [ id 0 ip 10.9.0.2/30 ] ]\n link [ attach 1(0) attach 2(0) ]\n]\n"
    )
    with pytest.raises(ModelError) as e:
        Simulation(_net(text))
    assert e.value.location == "model.dml:3"
    assert "top:2:0" in str(e.value) and "outside" in str(e.value)


def test_unreachable_traffic_destination_fails_before_running():
    text = (
        "Net [\n host [ id 1 ] host [ id 2 ] host [ id 3 ] host [ id 4 ]\n"
        " link [ attach 1 attach 2 ]\n link [ attach 3 attach 4 ]\n"
        " traffic [\n  flow [ type tcp_bulk src 1 dst 4 ]\n ]\n]\n"
    )
    sim = Simulation(_net(text))
    with pytest.raises(ModelError) as e:
        sim.check()
    assert e.value.location == "model.dml:6" and "unreachable" in str(e.value)


def test_bad_flow_parameters_are_reported():
    e = _error("Net [ host [ id 1 ] traffic [ flow [ type udp_cbr src 1 dst 1 rate fast ] ] ]")
    assert "rate" in str(e) and e.location == "model.dml:1"
    e = _error("Net [\n host [ id 1 ]\n traffic [ flow [ type warp src 1 dst 1 ] ]\n]")
    assert "unknown flow type 'warp'" in str(e) and e.location == "model.dml:3"


def test_idrange_makes_copies():
    net = _net("Net [ host [ idrange [ from 1 to 5 ] interface [ id 0 ] ] ]")
    assert sorted(n.name for n in net.nodes()) == ["1", "2", "3", "4", "5"]


def test_reqresp_defaults_match_the_python_flow_and_the_docs():
    from primogeni.sim.dist import Pareto
    from primogeni.sim.traffic import TcpRequestResponse

    net = _net(GOOD.replace("traffic [ flow [ type ping name p src 1 dst 3 interval 0.5 count 3 ] ]",
                            "traffic [ flow [ type tcp_reqresp name w src 1 dst 3 requests 2 ] ]"))
    (flow,) = net.all_flows()
    python = TcpRequestResponse(src=None, dst=None, requests=2)  # type: ignore[arg-type]
    assert isinstance(flow.response_size, Pareto) and isinstance(python.response_size, Pareto)
    assert flow.response_size.shape == python.response_size.shape == 1.2  # docs/DML.md: response_shape (1.2)
