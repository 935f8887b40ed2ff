"""Models from files: a ``.dml`` file (SSFNet/PRIME DML) or a ``.py`` file.

A Python model file defines ``model(**params) -> Network`` (parameters come from the command
line as strings, e.g. ``primo sim dumbbell.py -p n=10``) or a module-level ``network``.
"""

from __future__ import annotations

import builtins
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from primogeni.errors import ModelError
from primogeni.sim.dml.parser import parse as parse_dml
from primogeni.sim.dml.parser import resolve as resolve_dml
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


def read_model(path: str | Path) -> str:
    """A model file's text (UTF-8); ModelError naming the file when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as exc:
        raise ModelError(f"model file {str(path)!r} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ModelError(f"cannot read model file {str(path)!r}: {exc.strerror or exc}") from None


def load_model(path: str | Path, params: Mapping[str, str] | None = None) -> Network:
    """Load the network a ``.py`` or ``.dml`` model file describes."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"no model file {str(p)!r}")
    return load_model_text(read_model(p), str(p), params)


def load_model_text(text: str, name: str, params: Mapping[str, str] | None = None) -> Network:
    """The network the model text ``text`` describes, read as if from a file named ``name`` (whose
    suffix, ``.dml`` or ``.py``, gives the format; messages name it); writes nothing. A Python model's
    code runs here, in this process (``primo immerse --user`` reads the text, then drops privileges)."""
    shown = Path(name).name
    params = dict(params or {})
    suffix = Path(name).suffix
    if suffix == ".dml":
        if params:
            raise ModelError(f"DML models take no parameters (got {', '.join(params)})", location=name)
        return network_from_dml(resolve_dml(parse_dml(text, name)))
    if suffix != ".py":
        raise ModelError(f"a model is a .py or .dml file, not {shown!r}")
    ns: dict[str, Any] = {"__name__": "__primo_model__", "__file__": name, "__builtins__": builtins}
    exec(compile(text, name, "exec"), ns)
    fn = ns.get("model")
    if callable(fn):
        signature = inspect.signature(fn)
        kwargs = {}
        for k, v in params.items():
            if k not in signature.parameters:
                raise ModelError(f"model() of {shown} has no parameter {k!r} "
                                 f"(it takes: {', '.join(signature.parameters)})")
            kwargs[k] = _convert(v, signature.parameters[k].default, k, shown)
        net = fn(**kwargs)
    else:
        if params:
            raise ModelError(f"{shown} defines no model() to take parameters")
        net = ns.get("network")
    if not isinstance(net, Network):
        raise ModelError(f"{shown} must define model() returning a Network, or a module-level 'network'")
    return net
