"""The agent's kernel names (docs/SUBSTRATE.md): made and parsed in one place.

Pure functions, no kernel access: the realizer makes its devices, namespaces and cgroups with these
names and recognises exactly this node's objects by them at reconciliation; the AM's driver uses
them to read the agents' interface counters. Slots and VNIs are decimal, interface indexes one hex
digit. Others' devices (``primo-ctl``, the embedded underlay's ``primo-ul``) never match.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

_DEVICE_RE = re.compile(r"^primo(?:(?P<slot>[0-9]+)(?:(?P<ctl>c)|(?P<role>[et])(?P<index>[0-9a-e]))"
                        r"|(?P<link>[bxg])(?P<vni>[0-9]+))$")


# kernel names (docs/SUBSTRATE.md); slots and VNIs are decimal, interface indexes one hex digit
def sliver_netns(node: str, slot: int) -> str: return f"primo-{node}-{slot}"
def cgroup_name(node: str, slot: int) -> str: return f"primo/{node}-{slot}"
def ctl_device(slot: int) -> str: return f"primo{slot}c"
def exp_device(slot: int, index: int) -> str: return f"primo{slot}e{index:x}"
def vsys_device(slot: int, index: int) -> str: return f"primo{slot}t{index:x}"
def bridge_device(vni: int) -> str: return f"primob{vni}"
def vxlan_device(vni: int) -> str: return f"primox{vni}"
def gretap_device(vni: int) -> str: return f"primog{vni}"


VSYS_ROOT = Path("/dev/shm/primo-vsys")  # on tmpfs: a FIFO costs ~6 µs there, 0.1–1 ms on this ext4
SIM_ROOT = Path("/run/primo-sim")  # simulator slivers' models, logs and results


def agent_tag(state_dir: Path) -> str:
    """What names one agent's trees outside its state directory: a hash of that directory, so that two
    agents (two embedded substrates) never share one."""
    return hashlib.sha256(bytes(Path(state_dir).resolve())).hexdigest()[:12]


def vsys_root(state_dir: Path) -> Path:
    """The agent's vsys directories' parent (root-only, 0700)."""
    return VSYS_ROOT / agent_tag(state_dir)


def vsys_dir(state_dir: Path, slot: int) -> Path:
    """The sliver's vsys directory (bound at ``/vsys`` inside its container; the vsys server's FIFOs)."""
    return vsys_root(state_dir) / str(slot)


def sim_root(state_dir: Path) -> Path:
    """The agent's simulation directories' parent (root, 0711: a simulation's uid may pass, not list)."""
    return SIM_ROOT / agent_tag(state_dir)


def sim_dir(state_dir: Path, slot: int) -> Path:
    """A simulator sliver's directory (model, log, results)."""
    return sim_root(state_dir) / str(slot)


def stable_mac(*parts: object) -> str:
    """A locally administered unicast MAC derived from ``parts``: a remade interface keeps its MAC
    (so neighbours' ARP caches stay right)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


@dataclass(frozen=True)
class DeviceName:
    """A device of ours: ``role`` ctl/exp/vsys (``number`` is the slot) or bridge/vxlan/gretap (the VNI)."""

    role: str
    number: int
    index: int = 0


def parse_device(name: str) -> DeviceName | None:
    """What the device ``name`` is, when the realizer makes such devices; else ``None``."""
    found = _DEVICE_RE.match(name)
    if found is None:
        return None
    if found["link"]:
        return DeviceName({"b": "bridge", "x": "vxlan", "g": "gretap"}[found["link"]], int(found["vni"]))
    slot = int(found["slot"])
    if found["ctl"]:
        return DeviceName("ctl", slot)
    return DeviceName("exp" if found["role"] == "e" else "vsys", slot, int(found["index"], 16))


def parse_sliver_netns(node: str, name: str) -> int | None:
    """The slot of namespace ``primo-<node>-<slot>``, or ``None`` when it is not one of this node's."""
    return _slot_after(f"primo-{node}-", name)


def parse_cgroup(node: str, name: str) -> int | None:
    """The slot of cgroup ``primo/<node>-<slot>``, or ``None``."""
    return _slot_after(f"primo/{node}-", name)


def _slot_after(prefix: str, name: str) -> int | None:
    rest = name[len(prefix):] if name.startswith(prefix) else ""
    return int(rest) if rest.isdigit() else None
