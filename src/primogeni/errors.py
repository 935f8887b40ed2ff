"""The one error hierarchy of PrimoGENI.

Every error we raise on purpose derives from :class:`PrimoError`; the leaves also inherit the
builtin exception whose meaning they carry (``ModelError`` is a ``ValueError``), so callers can
catch either. Errors carry structured fields, not only a message.
"""

from __future__ import annotations


class PrimoError(Exception):
    """Base of every error PrimoGENI raises on purpose."""


class SimError(PrimoError):
    """An error of the simulator."""


class ModelError(SimError, ValueError):
    """A network model is wrong: names the element and, for DML, the file and line.

    ``element`` is the hierarchical name (or DML path) of the offending element;
    ``location`` is ``file:line`` when the model came from DML, else ``None``.
    """

    def __init__(self, message: str, element: str | None = None, location: str | None = None):
        self.element = element
        self.location = location
        self.reason = message
        parts = []
        if location:
            parts.append(location)
        if element:
            parts.append(element)
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class DmlError(ModelError):
    """A DML file cannot be parsed or resolved (syntax, bad reference)."""


class EmuError(PrimoError):
    """An error of the kernel plumbing (namespaces, links, tunnels, NAT, containers).

    ``what`` names the kernel object (a namespace, device, table or container) when there is one.
    """

    def __init__(self, message: str, what: str | None = None):
        self.what = what
        super().__init__(f"{what}: {message}" if what else message)


class FeatureMissing(EmuError):
    """This kernel or machine lacks a feature (GRE, netem, cgroup controller, a program) we were asked to use."""


class GeniError(PrimoError):
    """An error of the GENI control framework; leaves live in :mod:`primogeni.geni.errors`."""
