"""The agent's TOML configuration: round trip, defaults, checks, file errors."""


from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from tests.agent.service_support import (
    Pki,
    make_config,
)

from primogeni.agent.config import AgentConfig, ConfigError


def test_config_round_trips_through_toml(pki: Pki, tmp_path: Path) -> None:
    config = make_config(pki, tmp_path / "state", listen_port=12400, registry_url="https://10.254.0.1:12369/primo/registry/1",
                         am_urn="urn:publicid:IDN+primo+authority+cm", capacity=16, register_interval=5.5)
    path = config.save(tmp_path / "agent.toml")
    assert AgentConfig.load(path) == config
    assert config.url() == "https://127.0.0.1:12400/primo/agent/1"
    assert replace(config, advertise_url="https://pc1.example:1/x").url() == "https://pc1.example:1/x"


def test_config_relative_paths_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "pc2.toml"
    path.parent.mkdir()
    path.write_text('node = "pc2"\nkind = "shared"\nstate_dir = "state"\ncert = "pc2.pem"\nkey = "pc2.key"\n'
                    'trust_dir = "/etc/primo/roots"\nlisten_host = "0.0.0.0"\nlisten_port = 12400\n'
                    'underlay_dev = "eth0"\nunderlay_ip = "192.0.2.7"\n')
    config = AgentConfig.load(path)
    assert config.state_dir == tmp_path / "conf" / "state"
    assert config.cert == tmp_path / "conf" / "pc2.pem"
    assert config.trust_dir == Path("/etc/primo/roots")
    assert (config.registry_url, config.am_urn, config.capacity, config.register_interval) == (None, None, 8, 30.0)
    assert (config.ctl_subnet, config.experimental_pool) == ("172.30.0.0/16", "10.0.0.0/8")
    assert config.url() == "https://192.0.2.7:12400/primo/agent/1"


@pytest.mark.parametrize("change, message", [
    ({"node": "PC 1"}, "node 'PC 1'"), ({"kind": "lab"}, "kind 'lab'"), ({"listen_port": 70000}, "listen_port"),
    ({"underlay_dev": "a-very-long-interface"}, "underlay_dev"), ({"underlay_ip": "10.0.0.300"}, "underlay_ip"),
    ({"ctl_subnet": "172.30.0.1/16"}, "ctl_subnet"), ({"experimental_pool": "172.30.5.0/24"}, "overlaps"),
    ({"registry_url": "http://am/primo/registry/1"}, "registry_url"), ({"am_urn": "cm"}, "am_urn"),
    ({"capacity": 0}, "capacity"), ({"register_interval": -1}, "register_interval"),
    ({"advertise_url": "https://:99999/"}, "advertise_url"),
])
def test_config_is_checked(pki: Pki, tmp_path: Path, change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_config(pki, tmp_path, **change)


@pytest.mark.parametrize("text, message", [
    (None, r"bad\.toml: .*No such file"), ("node = \n", r"bad\.toml: Invalid value"),
    ('node = "pc1"\n', r"bad\.toml: missing settings \['kind'"),
    ('node = "pc1"\ncolour = "red"\n', r"bad\.toml: unknown settings \['colour'\]"),
    ('node = 3\nkind = "shared"\nstate_dir = "s"\ncert = "c"\nkey = "k"\ntrust_dir = "t"\nlisten_host = "h"\n'
     'listen_port = 1\nunderlay_dev = "d"\nunderlay_ip = "10.0.0.1"\n', "node must be a string"),
])
def test_config_file_errors_name_the_file(tmp_path: Path, text: str | None, message: str) -> None:
    path = tmp_path / "bad.toml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        AgentConfig.load(path)
