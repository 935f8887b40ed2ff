"""Models from files: a ``.dml`` file (SSFNet/PRIME DML) or a ``.py`` file.

A Python model file defines ``model(**params) -> Network`` (parameters come from the command
line as strings, e.g. ``primo sim dumbbell.py -p n=10``) or a module-level ``network``.
"""

from __future__ import annotations

import inspect
import runpy
from collections.abc import Mapping
from pathlib import Path

from primogeni.errors import ModelError
from primogeni.sim.dml.parser import load as load_dml
from primogeni.sim.dml.schema import network_from_dml
from primogeni.sim.model import Network


def _convert(text: str, default: object, name: str, where: str) -> object:
    """A command-line string as the type of the parameter's default (str if none)."""
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        raise ModelError(f"parameter {name}={text!r} of {where} must be a {type(default).__name__}") from None
    return text


def load_model(path: str | Path, params: Mapping[str, str] | None = None) -> Network:
    """Load the network a ``.py`` or ``.dml`` model file describes."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"no model file {str(p)!r}")
    params = dict(params or {})
    if p.suffix == ".dml":
        if params:
            raise ModelError(f"DML models take no parameters (got {', '.join(params)})", location=str(p))
        return network_from_dml(load_dml(str(p)))
    if p.suffix != ".py":
        raise ModelError(f"a model is a .py or .dml file, not {p.name!r}")
    ns = runpy.run_path(str(p), run_name="__primo_model__")
    fn = ns.get("model")
    if callable(fn):
        sig = inspect.signature(fn)
        kwargs = {}
        for k, v in params.items():
            if k not in sig.parameters:
                raise ModelError(f"model() of {p.name} has no parameter {k!r} (it takes: {', '.join(sig.parameters)})")
            kwargs[k] = _convert(v, sig.parameters[k].default, k, p.name)
        net = fn(**kwargs)
    else:
        if params:
            raise ModelError(f"{p.name} defines no model() to take parameters")
        net = ns.get("network")
    if not isinstance(net, Network):
        raise ModelError(f"{p.name} must define model() returning a Network, or a module-level 'network'")
    return net
