from ipaddress import IPv4Interface, IPv4Network

import pytest

from primogeni.errors import ModelError
from primogeni.sim import Network
from primogeni.sim.addressing import assign_addresses


def test_automatic_addresses_are_unique_and_inside_their_nets():
    net = Network("top", "10.0.0.0/16")
    a = net.net("a")
    b = net.net("b", prefix="10.0.128.0/20")
    ha, ra = a.host("h"), a.router("r")
    hb, rb = b.host("h"), b.router("r")
    a.link(ha, ra)
    b.link(hb, rb)
    net.link(ra, rb)
    assign_addresses(net)
    addrs = [i.address for n in net.nodes() for i in n.interfaces]
    assert all(isinstance(x, IPv4Interface) for x in addrs)
    assert len({x.ip for x in addrs}) == len(addrs)
    assert a.prefix is not None and a.prefix.subnet_of(IPv4Network("10.0.0.0/16"))
    assert ha.interfaces[0].address.ip in a.prefix
    assert hb.interfaces[0].address.ip in IPv4Network("10.0.128.0/20")
    assert not a.prefix.overlaps(IPv4Network("10.0.128.0/20"))
    # a point-to-point link gets a /30
    assert ha.interfaces[0].address.network.prefixlen == 30


def test_given_addresses_are_kept_and_others_filled_in():
    net = Network()
    h, r = net.host("h"), net.router("r")
    hi = h.interface(address="10.5.5.10/24")
    net.link(hi, r)
    assign_addresses(net)
    assert str(hi.address) == "10.5.5.10/24"
    assert r.interfaces[0].address.ip in IPv4Network("10.5.5.0/24")


def test_lan_gets_a_block_big_enough():
    net = Network()
    r = net.router("r")
    hosts = [net.host(f"h{i}") for i in range(10)]
    lk = net.link(r, *hosts)
    assign_addresses(net)
    assert lk.prefix.prefixlen == 28
    assert len({i.address.ip for i in lk.interfaces}) == 11


def test_address_outside_link_prefix_is_an_error_naming_the_interface():
    net = Network()
    h, r = net.host("h"), net.router("r")
    hi = h.interface(address="10.1.1.5/24")
    net.link(hi, r, prefix="10.2.0.0/24")
    with pytest.raises(ModelError) as e:
        assign_addresses(net)
    assert "top:h:eth0" in str(e.value) and "outside" in str(e.value)


def test_link_prefix_outside_net_prefix_is_an_error():
    net = Network("top", "10.0.0.0/16")
    h, r = net.host("h"), net.router("r")
    net.link(h, r, prefix="192.168.0.0/30")
    with pytest.raises(ModelError, match="outside its net's prefix"):
        assign_addresses(net)


def test_duplicate_given_address_is_an_error():
    net = Network()
    h1, h2, r = net.host("h1"), net.host("h2"), net.router("r")
    net.link(h1.interface(address="10.0.0.1/30"), r)
    net.link(h2.interface(address="10.0.0.1/30"), r)
    with pytest.raises(ModelError):
        assign_addresses(net)


def test_too_small_prefix_is_an_error():
    net = Network("top", "10.0.0.0/29")
    r = net.router("r")
    for i in range(4):
        net.link(net.host(f"h{i}"), r)
    with pytest.raises(ModelError, match="too small"):
        assign_addresses(net)
