"""The immersion bridge without a kernel device: endpoints on Unix SOCK_SEQPACKET socket pairs (one
message per frame, like a TAP without vnet headers), a real-time loop, and frames written and read by
the test as the real hosts would; the runner's argument checks and error codes."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from ipaddress import IPv4Address

import pytest
from click.testing import CliRunner
from tests.immersion.support import model

from primogeni.cli.main import main as primo
from primogeni.emu.packetio import Endpoint
from primogeni.errors import EmuError, ModelError
from primogeni.immersion import Immersion, adopt_tap
from primogeni.immersion.run import main as run_main
from primogeni.immersion.run import parse_bind, parse_host, parse_tap_fd
from primogeni.net.decode import decode_ip_packet
from primogeni.net.packet import ICMP_ECHO_REQUEST, PROTO_ICMP, encode_icmp_echo, encode_ipv4
from primogeni.net.units import Rate, ms
from primogeni.sim import Network, Simulation
from primogeni.sim.emulation import gateway_mac

AMAC, BMAC = bytes.fromhex("02aa00000001"), bytes.fromhex("02bb00000002")


def chain(routers: int = 2) -> Network:
    net = Network()
    prev, b = net.host("a", emulated=True), net.host("b", emulated=True)
    net.host("c")  # a simulated host, not emulated
    net.link(net.lookup("c"), net.router("rc"))  # type: ignore[arg-type]
    for i in range(routers):
        r = net.router(f"r{i}")
        net.link(prev, r, bandwidth=Rate.mbps(100), delay=ms(1))
        prev = r
    net.link(prev, b, bandwidth=Rate.mbps(100), delay=ms(1))
    net.link(net.lookup("rc"), net.lookup("r0"))  # type: ignore[arg-type]
    return net


class Pair:
    """An endpoint (the simulator's side) and the socket the test plays the real host with."""

    def __init__(self, name: str, vnet: bool = False) -> None:
        ours, self.host = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        fd = ours.detach()
        os.set_blocking(fd, False)
        self.endpoint = Endpoint(fd, name, None, vnet)
        self.host.setblocking(False)

    def received(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.host.recv(70000))
            except BlockingIOError:
                return out

    def close(self) -> None:
        self.endpoint.close()
        self.host.close()


@pytest.fixture
def pairs() -> Iterator[dict[str, Pair]]:
    made = {"top:a": Pair("fa"), "top:b": Pair("fb")}
    try:
        yield made
    finally:
        for p in made.values():
            p.close()


def arp_request(mac: bytes, sender: IPv4Address, target: IPv4Address) -> bytes:
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, sender.packed, bytes(6), target.packed)
    return b"\xff" * 6 + mac + b"\x08\x06" + body


def test_frames_cross_the_simulated_network_and_the_counters_reach_the_results(pairs: dict[str, Pair]) -> None:
    net = chain()
    sim = Simulation(net, seed=2)
    imm = Immersion(sim, {k: p.endpoint for k, p in pairs.items()})
    ha, hb = imm.emulation.hosts["top:a"], imm.emulation.hosts["top:b"]
    pairs["top:a"].host.send(arp_request(AMAC, ha.address.ip, ha.gateway))
    pairs["top:b"].host.send(arp_request(BMAC, hb.address.ip, hb.gateway))
    ip = encode_ipv4(ha.addr, hb.addr, PROTO_ICMP, encode_icmp_echo(ICMP_ECHO_REQUEST, 7, 1, b"x" * 56), ttl=64)
    pairs["top:a"].host.send(gateway_mac("top:a") + AMAC + b"\x08\x00" + ip)
    results = imm.run(ms(150), ratio=1.0)
    imm.close()
    (arp_a,) = pairs["top:a"].received()
    assert arp_a[:6] == AMAC and arp_a[12:14] == b"\x08\x06" and arp_a[22:28] == gateway_mac("top:a")
    arp_b, echo = pairs["top:b"].received()
    assert arp_b[12:14] == b"\x08\x06"
    assert echo[:6] == BMAC and echo[6:12] == gateway_mac("top:b") and echo[12:14] == b"\x08\x00"
    hdr, icmp = decode_ip_packet(echo[14:])
    assert hdr.ttl == 62 and hdr.checksum_ok and icmp.seq == 1 and echo[14 + 20 :] == ip[20:]  # 2 routers
    block = results.summary["immersion"]
    a, b = block["hosts"]["top:a"], block["hosts"]["top:b"]
    assert (a["frames_in"], a["frames_out"], b["frames_in"], b["frames_out"]) == (2, 1, 1, 2)
    assert a["endpoint"] == {"kind": "", "device": "fa", "netns": None, "vnet": False, "frames_in": 2,
                             "bytes_in": 42 + 14 + len(ip), "frames_out": 1, "bytes_out": 42, "send_drops": 0}
    assert a["offload"] is False and a["mac"] == "02:aa:00:00:00:01"
    assert block["totals"]["frames_in"] == 3 and block["totals"]["frames_out"] == 3
    assert results.summary["realtime"]["io_callbacks"] >= 2 and results.summary["duration_s"] == pytest.approx(0.15)


def test_a_wake_up_reads_at_most_a_batch_from_one_endpoint(pairs: dict[str, Pair]) -> None:
    sim = Simulation(chain(1))
    imm = Immersion(sim, {k: p.endpoint for k, p in pairs.items()}, batch=64)
    ha = imm.emulation.hosts["top:a"]
    for _ in range(150):
        pairs["top:a"].host.send(arp_request(AMAC, ha.address.ip, ha.gateway))
    seen = []
    for _ in range(4):
        imm.readers["top:a"]()
        seen.append(pairs["top:a"].endpoint.counters.frames_in)
    assert seen == [64, 128, 150, 150]
    assert len(pairs["top:a"].received()) == 150 and imm.emulation.hosts["top:a"].arp_answered == 150
    imm.close()


def test_hosts_whose_endpoint_has_no_vnet_header_get_plain_frames() -> None:
    p, q = Pair("fa", vnet=True), Pair("fb", vnet=False)
    try:
        imm = Immersion(Simulation(chain(1)), {"top:a": p.endpoint, "b": q.endpoint})  # relative names too
        assert imm.emulation.hosts["top:a"].offload and not imm.emulation.hosts["top:b"].offload
        imm = Immersion(Simulation(chain(1)), {"top:a": p.endpoint, "b": q.endpoint}, offload=False)
        assert not imm.emulation.hosts["top:a"].offload and imm.summary()["offload"] is False
    finally:
        p.close()
        q.close()


def test_attachments_must_match_the_emulated_hosts(pairs: dict[str, Pair]) -> None:
    a, b = pairs["top:a"].endpoint, pairs["top:b"].endpoint
    with pytest.raises(ModelError, match=r"top:c is not emulated.*emulated true") as exc:
        Immersion(Simulation(chain()), {"top:a": a, "top:b": b, "top:c": b})
    assert exc.value.element == "top:c"
    with pytest.raises(ModelError, match=r"no host top:zz .*emulated hosts: top:a, top:b"):
        Immersion(Simulation(chain()), {"top:a": a, "top:b": b, "top:zz": b})
    with pytest.raises(ModelError, match=r"emulated host top:b has no attachment") as exc:
        Immersion(Simulation(chain()), {"top:a": a})
    assert exc.value.element == "top:b"
    with pytest.raises(ModelError, match="attached twice"):
        Immersion(Simulation(chain()), {"top:a": a, "a": b})
    plain = Network()
    plain.link(plain.host("x"), plain.host("y"))
    with pytest.raises(ModelError, match=r"no host top:zz .*emulated hosts: none"):
        Immersion(Simulation(plain), {"top:zz": a})
    with pytest.raises(ModelError, match=r"top:r0 is a router, not a host"):
        Immersion(Simulation(chain()), {"top:a": a, "top:b": b, "top:r0": b})
    with pytest.raises(EmuError, match="top:a and top:b are given the same endpoint"):
        Immersion(Simulation(chain()), {"top:a": a, "top:b": a})
    a.close()
    with pytest.raises(EmuError, match="endpoint of top:a is closed"):
        Immersion(Simulation(chain()), {"top:a": a, "top:b": b})


def test_attachment_arguments_are_parsed_and_checked() -> None:
    assert parse_host("top:h1=primo-x") == parse_host("top:h1=primo-x:eth1")
    assert parse_host("top:h1=/proc/1/ns/net:veth0").netns == "/proc/1/ns/net"
    assert parse_bind("top:h2=primo-sub1").ifname == "primo-sub1"
    assert parse_tap_fd("top:h3=7").fd == 7
    for bad, err in (("top:h1", ValueError), ("top:h1=", ValueError), ("=ns", ValueError),
                     ("top:h1=ns:bad/name", EmuError), ("top:h1=ns:waytoolonganame0", EmuError)):
        with pytest.raises(err):
            parse_host(bad)
    with pytest.raises(ValueError, match="not a descriptor"):
        parse_tap_fd("top:h1=three")


def test_the_runner_names_what_is_wrong_with_exit_code_2() -> None:
    said: list[str] = []
    assert run_main(model("chain.py"), say=said.append) == 2
    assert "no real host to attach" in said[-1]
    assert run_main(model("chain.py"), hosts=("top:a=primo-nowhere",), say=said.append) == 2
    assert "emulated host top:b has no attachment" in said[-1]
    assert run_main(model("chain.py"), hosts=("top:a=ns", "top:r0=ns:eth2"), say=said.append) == 2
    assert "top:r0 is a router, not a host" in said[-1]
    assert run_main(model("missing.py"), hosts=("top:a=ns",), say=said.append) == 2
    assert "no model file" in said[-1]
    result = CliRunner().invoke(primo, ["immerse", model("chain.py"), "--host", "top:a"])
    assert result.exit_code == 2 and "HOST=NETNS[:IFNAME]" in result.output


def test_an_inherited_descriptor_must_be_a_tap() -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(EmuError, match=f"descriptor {r}: not an attached TUN/TAP device"):
            adopt_tap(r)
        said: list[str] = []
        code = run_main(model("chain.py"), tap_fds=(f"top:a={r}", f"top:b={w}"), say=said.append)
        assert code == 1 and "not an attached TUN/TAP device" in said[-1]
    finally:
        os.close(r)
        os.close(w)
    with pytest.raises(EmuError, match="not an open descriptor"):
        adopt_tap(r)
