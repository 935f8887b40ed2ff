"""Local admission policy: consulted before anything is allocated; may refuse with REFUSED."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from primogeni.geni.codes import GeniCode
from primogeni.geni.errors import GeniError
from primogeni.geni.rspec import Request


class Policy(Protocol):
    """Local admission policy, consulted before anything is allocated."""

    def authorize(self, slice_urn: str, owner_urn: str, request: Request, held: int) -> None:
        """Raise ``GeniError(REFUSED, ...)`` to refuse; ``held`` counts the slice's node slivers now."""
        ...


class AdmitAll:
    def authorize(self, slice_urn: str, owner_urn: str, request: Request, held: int) -> None:
        return None


@dataclass(frozen=True)
class MaxNodesPerSlice:
    """A simple example policy: at most ``limit`` node slivers per slice."""

    limit: int

    def authorize(self, slice_urn: str, owner_urn: str, request: Request, held: int) -> None:
        if held + len(request.nodes) > self.limit:
            raise GeniError(GeniCode.REFUSED, f"local policy allows at most {self.limit} nodes per slice "
                                              f"(slice holds {held}, request adds {len(request.nodes)})")


__all__ = ["AdmitAll", "MaxNodesPerSlice", "Policy"]
